//! Fault drills: a load that records what the service acknowledged and what it answered, to be checked against the
//! database once the fault is over; and a PostgreSQL cluster of the test's own, to restart without disturbing the
//! other tests' server.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::Client;
use serde_json::json;
use tempfile::TempDir;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::TaskBody;

/// What a load saw: every answer that was not a success, every write the service acknowledged, and reads that
/// came back with another task's data.
#[derive(Debug, Default)]
pub struct Tally {
    pub requests: usize,
    /// One line per failed request: what was asked and what came back.
    pub failures: Vec<String>,
    /// Tasks the service acknowledged and did not delete, with the name it last acknowledged for them.
    pub acknowledged: Vec<(Uuid, String)>,
    /// Tasks whose deletion the service acknowledged.
    pub deleted: Vec<Uuid>,
    pub wrong_reads: usize,
}

impl Tally {
    fn merge(&mut self, other: Self) {
        self.requests += other.requests;
        self.failures.extend(other.failures);
        self.acknowledged.extend(other.acknowledged);
        self.deleted.extend(other.deleted);
        self.wrong_reads += other.wrong_reads;
    }
}

/// Clients that each create a task, read it back, rename it and read it again, and delete every other one, over and
/// over, until stopped.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: JoinSet<Tally>,
}

impl Load {
    /// Starts `clients` clients against the service at `address`.
    #[must_use]
    pub fn start(address: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let http = Client::new();
        let mut set = JoinSet::new();
        for client in 0..clients {
            let (stop, http, address) = (Arc::clone(&stop), http.clone(), address.to_owned());
            set.spawn(async move {
                let mut tally = Tally::default();
                let mut round = 0_usize;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let name = format!("drill {client}-{round}");
                    if let Some(id) = write_then_read(&http, &address, &name, &mut tally).await {
                        rename_then_delete(&http, &address, id, &name, round.is_multiple_of(2), &mut tally).await;
                    }
                }
                tally
            });
        }
        Self { stop, clients: set }
    }

    /// Stops the clients after their current request and adds up what they saw.
    pub async fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        while let Some(tally) = self.clients.join_next().await {
            total.merge(tally.expect("a load client does not panic"));
        }
        total
    }
}

/// Creates a task and reads it back; its id once it was acknowledged.
async fn write_then_read(http: &Client, address: &str, name: &str, tally: &mut Tally) -> Option<Uuid> {
    tally.requests += 1;
    let created = http
        .post(format!("{address}/tasks"))
        .json(&json!({ "name": name }))
        .send()
        .await;
    let id = match created {
        Ok(response) if response.status() == 201 => match response.json::<TaskBody>().await {
            Ok(task) => task.id,
            Err(error) => {
                tally.failures.push(format!("POST {name:?}: unreadable 201: {error}"));
                return None;
            }
        },
        Ok(response) => {
            tally
                .failures
                .push(format!("POST {name:?}: {}", answer(response).await));
            return None;
        }
        Err(error) => {
            tally.failures.push(format!("POST {name:?}: {error}"));
            return None;
        }
    };
    tally.acknowledged.push((id, name.to_owned()));
    read(http, address, id, name, tally).await;
    Some(id)
}

/// Renames the task and reads it back, then, when `delete`, deletes it.
async fn rename_then_delete(http: &Client, address: &str, id: Uuid, name: &str, delete: bool, tally: &mut Tally) {
    let renamed = format!("{name} renamed");
    tally.requests += 1;
    match http
        .put(format!("{address}/tasks/{id}"))
        .json(&json!({ "name": renamed }))
        .send()
        .await
    {
        Ok(response) if response.status() == 200 => {
            if let Some(entry) = tally.acknowledged.iter_mut().find(|(task, _)| *task == id) {
                entry.1.clone_from(&renamed);
            }
        }
        Ok(response) => return tally.failures.push(format!("PUT {id}: {}", answer(response).await)),
        Err(error) => return tally.failures.push(format!("PUT {id}: {error}")),
    }
    read(http, address, id, &renamed, tally).await;
    if !delete {
        return;
    }
    tally.requests += 1;
    match http.delete(format!("{address}/tasks/{id}")).send().await {
        Ok(response) if response.status() == 204 => {
            tally.acknowledged.retain(|(task, _)| *task != id);
            tally.deleted.push(id);
        }
        Ok(response) => tally.failures.push(format!("DELETE {id}: {}", answer(response).await)),
        Err(error) => tally.failures.push(format!("DELETE {id}: {error}")),
    }
}

async fn answer(response: reqwest::Response) -> String {
    let status = response.status();
    format!("{status} {}", response.text().await.unwrap_or_default())
}

/// Reads the task back and checks it is the one written, with the name last acknowledged.
async fn read(http: &Client, address: &str, id: Uuid, name: &str, tally: &mut Tally) {
    tally.requests += 1;
    match http.get(format!("{address}/tasks/{id}")).send().await {
        Ok(response) if response.status() == 200 => match response.json::<TaskBody>().await {
            Ok(task) if task.id == id && task.name == name => {}
            Ok(task) => {
                tally.wrong_reads += 1;
                tally.failures.push(format!("GET {id}: another task's data: {task:?}"));
            }
            Err(error) => tally.failures.push(format!("GET {id}: unreadable 200: {error}")),
        },
        Ok(response) => tally.failures.push(format!("GET {id}: {}", answer(response).await)),
        Err(error) => tally.failures.push(format!("GET {id}: {error}")),
    }
}

/// A PostgreSQL cluster of the test's own, made with `initdb` in a temporary directory and listening on
/// 127.0.0.1 and a free port, with trust authentication. Stopped when dropped.
#[derive(Debug)]
pub struct ScratchPostgres {
    port: u16,
    data: PathBuf,
    // Removed after the server has stopped, by its own `Drop`.
    _directory: TempDir,
}

impl ScratchPostgres {
    /// Creates and starts the cluster, failing the test loudly when PostgreSQL's server programs are missing.
    #[must_use]
    pub fn start() -> Self {
        let directory = tempfile::Builder::new()
            .prefix("tasks-scratch-pg-")
            .tempdir()
            .expect("a temporary directory");
        let data = directory.path().join("data");
        // PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user.
        if is_root() {
            run(Command::new("chown").arg("postgres").arg(directory.path()));
        }
        run(pg_command("initdb")
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "--encoding=UTF8",
                "-D",
            ])
            .arg(&data));
        let port = free_port();
        let cluster = Self {
            port,
            data,
            _directory: directory,
        };
        cluster.pg_ctl(&["start", "-w", "-l"], Some(&cluster.data.join("server.log")));
        cluster
    }

    /// What the server has logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).expect("the server's log is readable")
    }

    /// The administrator's URL.
    #[must_use]
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// From now on, every user but the administrator must give its password over TCP (SCRAM), as on RDS.
    pub fn require_passwords(&self) {
        std::fs::write(
            self.data.join("pg_hba.conf"),
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        self.pg_ctl(&["reload"], None);
    }

    /// `pg_ctl restart -m fast`: every session is ended, the server shuts down and starts again; returns once it
    /// accepts connections.
    pub fn restart_fast(&self) {
        self.pg_ctl(
            &["restart", "-m", "fast", "-w", "-l"],
            Some(&self.data.join("server.log")),
        );
    }

    fn pg_ctl(&self, arguments: &[&str], log: Option<&Path>) {
        let mut command = pg_command("pg_ctl");
        command.args(arguments);
        if let Some(log) = log {
            command.arg(log);
        }
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.data.display()
        );
        run(command.arg("-D").arg(&self.data).arg("-o").arg(options));
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .output();
    }
}

/// Whether this process runs as root: `/proc/self` belongs to the process's user.
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// A PostgreSQL server program, from `TEST_PG_BINDIR` or Debian's newest `/usr/lib/postgresql/*/bin`, run as the
/// postgres user when this process is root.
fn pg_command(program: &str) -> Command {
    let bindir = std::env::var_os("TEST_PG_BINDIR").map_or_else(newest_debian_bindir, PathBuf::from);
    let path = bindir.join(program);
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

fn newest_debian_bindir() -> PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server programs (initdb, pg_ctl) must be installed, or TEST_PG_BINDIR set")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let version = versions.last().expect("a PostgreSQL version under /usr/lib/postgresql");
    PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"))
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?} cannot run: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
