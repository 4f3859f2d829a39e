//! What the suites count on, with real moto on ports of these tests' own: brought up when nothing answers, once for
//! the processes that need it together, and gone, server and keeper, once they have all ended, however they end.
//! Each user is the crate's program (`test-servers moto`), a process of its own as a test binary would be.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use test_servers::Emulator;

/// A process using moto at an endpoint until it is ended.
struct User {
    child: Child,
}

impl User {
    fn spawn(endpoint: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_test-servers"))
            .args(["moto", "--endpoint", endpoint])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("test-servers runs");
        Self { child }
    }

    /// Waits until moto answers for this user, and says whether the user started it or found it.
    fn outcome(&mut self) -> String {
        let mut line = String::new();
        let stdout = self.child.stdout.as_mut().expect("piped");
        BufReader::new(stdout).read_line(&mut line).expect("read its output");
        if line.is_empty() {
            let mut errors = String::new();
            let stderr = self.child.stderr.as_mut().expect("piped");
            stderr.read_to_string(&mut errors).expect("read its errors");
            panic!("the user could not bring moto up: {errors}");
        }
        line.split_whitespace().next().expect("an outcome").to_owned()
    }

    /// Ends the user as a finished test process ends.
    fn end(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("the user ends");
        assert!(status.success(), "the user ended with {status}");
    }

    /// Ends the user as `kill -9` would.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

/// A port nothing listens on at the moment, below Linux's ephemeral range (32768 and up): one the system hands out
/// could be handed to another process's socket before moto binds it.
fn free_port() -> u16 {
    loop {
        let random = RandomState::new().build_hasher().finish();
        let port = 20_000 + u16::try_from(random % 12_000).expect("below 12000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A process whose command line runs moto's server at a port: the server, or its keeper (which names the server's
/// command in its own).
#[derive(Debug)]
struct Process {
    pid: u32,
    keeper: bool,
}

fn processes(port: u16) -> Vec<Process> {
    let port = port.to_string();
    fs::read_dir("/proc")
        .expect("/proc lists the processes")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let command_line = fs::read(entry.path().join("cmdline")).ok()?;
            let arguments: Vec<String> = command_line
                .split(|byte| *byte == 0)
                .map(|argument| String::from_utf8_lossy(argument).into_owned())
                .collect();
            let runs_moto = arguments.iter().any(|argument| argument.ends_with("/moto_server"))
                && arguments.windows(2).any(|pair| pair[0] == "-p" && pair[1] == port);
            runs_moto.then(|| Process {
                pid,
                keeper: arguments.iter().any(|argument| argument.ends_with("/keeper.py")),
            })
        })
        .collect()
}

/// Waits, boundedly, until no process of moto at `port` remains and nothing listens there; then removes the files
/// the crate keeps for that port (`tasks-test-servers/moto-<port>` in the system's temporary directory), which
/// nothing uses any more, since these tests take a new port each time.
fn assert_gone(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !processes(port).is_empty() || listening(port) {
        assert!(
            Instant::now() < deadline,
            "left behind at port {port}: {:?}, listening: {}",
            processes(port),
            listening(port)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    forget(port);
}

fn forget(port: u16) {
    let state = std::env::temp_dir()
        .join("tasks-test-servers")
        .join(format!("moto-{port}"));
    fs::remove_dir_all(&state).unwrap_or_else(|error| panic!("removing {}: {error}", state.display()));
}

#[test]
fn moto_is_started_once_for_the_processes_that_need_it_and_stopped_after_the_last() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut first = User::spawn(&endpoint);
    let mut second = User::spawn(&endpoint);

    let mut outcomes = [first.outcome(), second.outcome()];
    outcomes.sort();

    assert_eq!(outcomes, ["found", "started"], "one started it, the other found it");
    let running = processes(port);
    assert_eq!(
        running.iter().filter(|process| !process.keeper).count(),
        1,
        "one server: {running:?}"
    );
    assert_eq!(
        running.iter().filter(|process| process.keeper).count(),
        1,
        "one keeper: {running:?}"
    );
    first.end();
    assert!(listening(port), "still up for the second user");
    assert_eq!(processes(port).len(), 2);
    second.end();
    assert_gone(port);
}

#[test]
fn a_user_killed_with_sigkill_leaves_nothing_behind() {
    let port = free_port();
    let mut user = User::spawn(&format!("http://127.0.0.1:{port}"));
    assert_eq!(user.outcome(), "started");

    user.kill();

    assert_gone(port);
}

#[test]
fn the_server_dies_with_its_keeper() {
    let port = free_port();
    let mut user = User::spawn(&format!("http://127.0.0.1:{port}"));
    assert_eq!(user.outcome(), "started");
    let keeper = processes(port)
        .into_iter()
        .find(|process| process.keeper)
        .expect("a keeper");

    let killed = Command::new("kill")
        .args(["-KILL", &keeper.pid.to_string()])
        .status()
        .expect("kill runs");

    assert!(killed.success());
    assert_gone(port);
    user.end();
}

#[test]
fn a_server_someone_else_started_is_used_as_is_and_left_running() {
    // Installs moto (if no test has yet) through a user of a port of its own, then runs moto from that install, as
    // a developer would by hand.
    let install_port = free_port();
    let mut installer = User::spawn(&format!("http://127.0.0.1:{install_port}"));
    installer.outcome();
    installer.end();
    assert_gone(install_port);
    let port = free_port();
    let target = PathBuf::from(env!("CARGO_BIN_EXE_test-servers"))
        .ancestors()
        .find(|directory| directory.join("CACHEDIR.TAG").is_file())
        .expect("the target directory")
        .to_owned();
    let mut theirs = Command::new(target.join("test-servers/moto/bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !listening(port) {
        assert!(Instant::now() < deadline, "moto_server did not listen");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut user = User::spawn(&format!("http://127.0.0.1:{port}"));

    let outcome = user.outcome();
    user.end();

    assert_eq!(outcome, "found");
    assert!(
        processes(port).iter().all(|process| !process.keeper),
        "no keeper, so nothing that would stop it"
    );
    assert!(theirs.try_wait().expect("its status").is_none(), "still running");
    theirs.kill().expect("stop it");
    let _ = theirs.wait();
    assert_gone(port);
}

#[tokio::test]
async fn a_second_exclusive_user_waits_until_the_first_is_done() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let first = Emulator::Moto.exclusive(&endpoint).await.expect("exclusive use");

    let second = tokio::spawn(async move { Emulator::Moto.exclusive(&endpoint).await.map(drop) });
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(!second.is_finished(), "the second waits while the first holds it");
    drop(first);
    second.await.expect("no panic").expect("then it has its turn");
    forget(port);
}
