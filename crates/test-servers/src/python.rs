//! The emulators' virtualenvs: a Python new enough, and the pinned requirements installed from PyPI.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::emulator::{Emulator, Error};
use crate::keeper::tail;

/// `emulator`'s virtualenv, installed first if it is missing or was made from other requirements. One process at a
/// time installs; the others wait, then find it installed. `endpoint` is for the advice when no Python will do.
pub(crate) fn install(emulator: Emulator, endpoint: &str) -> Result<PathBuf, Error> {
    let cache = cache_dir();
    let io = |what: &str, path: &Path| Error::io(format!("{what} {}", path.display()));
    fs::create_dir_all(&cache).map_err(io("creating", &cache))?;
    let name = emulator.file_name();
    let lock_path = cache.join(format!("{name}.lock"));
    let lock = File::create(&lock_path).map_err(io("creating", &lock_path))?;
    lock.lock().map_err(io("locking", &lock_path))?;

    let venv = cache.join(name);
    let installed = venv.join("installed-requirements.txt");
    if fs::read_to_string(&installed).is_ok_and(|text| text == emulator.requirements()) {
        return Ok(venv);
    }
    let python = find(emulator.minimum_python()).map_err(|tried| Error::NoPython {
        emulator,
        minimum: emulator.minimum_python(),
        tried,
        endpoint: endpoint.to_owned(),
    })?;
    let requirements = cache.join(format!("{name}-requirements.txt"));
    fs::write(&requirements, emulator.requirements()).map_err(io("writing", &requirements))?;
    let log = cache.join(format!("{name}-install.log"));
    let output = File::create(&log).map_err(io("creating", &log))?;
    match fs::remove_dir_all(&venv) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io("removing", &venv)(error)),
        _ => {}
    }
    let mut make_venv = Command::new(python);
    make_venv.arg("-m").arg("venv").arg(&venv);
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--disable-pip-version-check", "--no-input", "-r"])
        .arg(&requirements);
    for step in [&mut make_venv, &mut pip] {
        let clone = || output.try_clone().map_err(io("opening", &log));
        let status = step
            .stdin(Stdio::null())
            .stdout(clone()?)
            .stderr(clone()?)
            .status()
            .map_err(Error::io(format!("running {step:?}")))?;
        if !status.success() {
            return Err(Error::Install {
                emulator,
                tail: tail(&log),
                log,
            });
        }
    }
    // Last, so that an install cut short is made again next time.
    fs::write(&installed, emulator.requirements()).map_err(io("writing", &installed))?;
    Ok(venv)
}

/// `target/test-servers`: the target directory is the nearest one above the running executable that holds cargo's
/// CACHEDIR.TAG, so that `cargo clean` removes the installs with the rest of the build. Outside a cargo build, a
/// directory in the system's temporary directory.
fn cache_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|executable| {
            executable
                .ancestors()
                .find(|directory| directory.join("CACHEDIR.TAG").is_file())
                .map(|target| target.join("test-servers"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("tasks-test-servers").join("cache"))
}

/// The first Python of at least version `minimum` among those on `PATH` and pyenv's, or the list of those tried.
fn find(minimum: (u32, u32)) -> Result<PathBuf, String> {
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".pyenv")));
    let mut pyenv_versions: Vec<PathBuf> = pyenv
        .and_then(|root| fs::read_dir(root.join("versions")).ok())
        .into_iter()
        .flatten()
        .filter_map(|entry| Some(entry.ok()?.path().join("bin/python3")))
        .collect();
    pyenv_versions.sort();
    let candidates = ["python3", "python3.14", "python3.13"]
        .into_iter()
        .map(PathBuf::from)
        .chain(pyenv_versions);
    let mut tried = Vec::new();
    for candidate in candidates {
        let new_enough = Command::new(&candidate)
            .arg("-c")
            .arg(format!("import sys; sys.exit(sys.version_info < {minimum:?})"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if new_enough {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    Err(tried.join(", "))
}
