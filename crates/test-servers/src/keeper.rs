//! The files through which test processes share a server with the keeper that owns it (see `python/keeper.py`),
//! and the start of a keeper.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::emulator::{Emulator, Error};

/// What the keeper runs as, written next to its state so that `ps` shows what it is.
const KEEPER: &str = include_str!("../python/keeper.py");

/// How much of a log a failure shows.
const LOG_TAIL_BYTES: u64 = 4000;

/// Where the processes that use one emulator at one port meet: the lock of its users, the lock of its start, the
/// runs using it, its keeper and its logs. In the system's temporary directory rather than the build's, so that two
/// checkouts testing on one machine share the server at a port instead of stopping it under each other.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub(crate) fn new(emulator: Emulator, port: u16) -> Result<Self, Error> {
        let path = std::env::temp_dir()
            .join("tasks-test-servers")
            .join(format!("{}-{port}", emulator.file_name()));
        fs::create_dir_all(path.join("runs")).map_err(Error::io(format!("creating {}", path.display())))?;
        Ok(Self { path })
    }

    /// Counts this process among the server's users until it exits: a shared lock on `users`, which waits while a
    /// keeper that found no users stops its server; and the process that runs this one (cargo, nextest), so that
    /// the server stays up for that run's next test binary.
    pub(crate) fn join(&self) -> Result<(), Error> {
        let users = self.path.join("users");
        let file = File::options()
            .create(true)
            .append(true)
            .open(&users)
            .map_err(Error::io(format!("opening {}", users.display())))?;
        file.lock_shared()
            .map_err(Error::io(format!("locking {}", users.display())))?;
        // Held until the process exits, whichever way it does: the kernel then closes the file and releases the lock.
        std::mem::forget(file);
        let run = self
            .path
            .join("runs")
            .join(std::os::unix::process::parent_id().to_string());
        File::create(&run).map_err(Error::io(format!("creating {}", run.display())))?;
        Ok(())
    }

    /// The lock file `name`, locked exclusively: one process (and one open file) at a time holds it, and dropping
    /// the file releases it.
    pub(crate) fn lock(&self, name: &str) -> Result<File, Error> {
        let path = self.path.join(name);
        let file = File::create(&path).map_err(Error::io(format!("creating {}", path.display())))?;
        file.lock().map_err(Error::io(format!("locking {}", path.display())))?;
        Ok(file)
    }

    /// Starts a keeper that runs `emulator` from `venv` on `port`. It gets a process group of its own, so that a
    /// Ctrl-C or a kill of the test run's group leaves it to stop the server, and no environment of the test's but
    /// `PATH` and `HOME`.
    pub(crate) fn start_keeper(&self, emulator: Emulator, venv: &Path, port: u16) -> Result<Child, Error> {
        let io = |what: &str, path: &Path| Error::io(format!("{what} {}", path.display()));
        let script = self.path.join("keeper.py");
        fs::write(&script, KEEPER).map_err(io("writing", &script))?;
        // Fresh for each server: nothing of an earlier one's state leaks into this run.
        let files = self.path.join(emulator.file_name());
        match fs::remove_dir_all(&files) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io("removing", &files)(error)),
            _ => {}
        }
        fs::create_dir_all(&files).map_err(io("creating", &files))?;
        let log = self.path.join("keeper.log");
        let output = File::create(&log).map_err(io("creating", &log))?;
        let errors = output.try_clone().map_err(io("opening", &log))?;
        let (server, environment) = emulator.server_command(venv, port, &files);
        let mut command = Command::new(venv.join("bin/python"));
        command
            .arg(&script)
            .arg(&self.path)
            .args(server)
            .env_clear()
            .envs(
                ["PATH", "HOME"]
                    .into_iter()
                    .filter_map(|name| Some((name, std::env::var_os(name)?))),
            )
            .envs(environment)
            .current_dir(&self.path)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .process_group(0);
        command
            .spawn()
            .map_err(Error::io(format!("starting {emulator}'s keeper")))
    }

    /// The ends of the keeper's and the server's logs, for a failure to show.
    pub(crate) fn logs(&self) -> String {
        ["keeper.log", "server.log"]
            .iter()
            .map(|name| {
                let path = self.path.join(name);
                format!("--- the end of {} ---\n{}", path.display(), tail(&path))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The last few lines of the file at `path`, or why there are none.
pub(crate) fn tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|error| format!("({error})"))
}
