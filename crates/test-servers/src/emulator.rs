//! moto and LocalStack: where each is expected, how to tell that it answers, and bringing it up when nothing does.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::OnceCell;

use crate::keeper::StateDir;
use crate::python;

/// An AWS API emulator the suites talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulator {
    /// moto in server mode: RDS, STS and IAM.
    Moto,
    /// LocalStack's free edition: STS and IAM (it has no RDS).
    LocalStack,
}

/// How [`Emulator::ensure`] found the emulator answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This call started it.
    Started,
    /// It was answering already, or another process was starting it.
    Found,
}

impl fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Started => "started",
            Self::Found => "found",
        })
    }
}

/// Use of an emulator that no other test on this machine has at the same time, until dropped: for tests that reset
/// moto. A lock file rather than a mutex, because cargo runs a test binary's tests as threads of one process and
/// nextest runs each in a process of its own.
#[derive(Debug)]
pub struct Exclusive {
    _lock: std::fs::File,
}

/// Why an emulator could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} is {endpoint:?}, which is not an http URL with a host and a port", .emulator.variable())]
    Endpoint { emulator: Emulator, endpoint: String },
    #[error(
        "nothing answers at {endpoint} ({}), and the tests start {emulator} only at 127.0.0.1 or localhost",
        .emulator.variable()
    )]
    NotLocal {
        emulator: Emulator,
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{emulator} needs Python {}.{} or newer, and none was found (tried {tried}). Install one: \
         `pyenv install {0}.{1}` or `uv python install {0}.{1}` (which puts python{0}.{1} in ~/.local/bin); or \
         start {emulator} yourself at {endpoint} ({})",
        .minimum.0, .minimum.1, .emulator.variable()
    )]
    NoPython {
        emulator: Emulator,
        minimum: (u32, u32),
        tried: String,
        endpoint: String,
    },
    #[error("installing {emulator} failed; the end of {}:\n{tail}", .log.display())]
    Install {
        emulator: Emulator,
        log: PathBuf,
        tail: String,
    },
    #[error("{emulator}'s keeper exited ({status}) before {endpoint} answered\n{logs}")]
    KeeperExited {
        emulator: Emulator,
        endpoint: String,
        status: ExitStatus,
        logs: String,
    },
    #[error("{emulator} did not get ready at {endpoint} within {} s; it last said: {last}\n{logs}", .waited.as_secs())]
    NotReady {
        emulator: Emulator,
        endpoint: String,
        waited: Duration,
        last: String,
        logs: String,
    },
}

impl Error {
    /// The error and its causes, as a panic message shows them.
    #[must_use]
    pub fn report(&self) -> String {
        let mut report = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            report.push_str(&format!(": {error}"));
            cause = error.source();
        }
        report
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// What a probe of an endpoint found.
enum Probe {
    Ready,
    /// Something answers, but not (yet) as a ready emulator: what it said.
    Answering(String),
    /// Nothing listens there.
    Absent(reqwest::Error),
}

/// moto's endpoint for this test process, brought up if nothing answers at `AWS_ENDPOINT_URL`.
///
/// # Panics
/// When it cannot be brought up, with why and the server's log; every later call panics the same way at once.
pub async fn moto() -> String {
    static MOTO: OnceCell<Result<String, String>> = OnceCell::const_new();
    shared(Emulator::Moto, &MOTO).await
}

/// LocalStack's endpoint for this test process, brought up if nothing answers at `TEST_LOCALSTACK_URL`.
///
/// # Panics
/// As [`moto`] does.
pub async fn localstack() -> String {
    static LOCALSTACK: OnceCell<Result<String, String>> = OnceCell::const_new();
    shared(Emulator::LocalStack, &LOCALSTACK).await
}

/// Brings `emulator` up once per process. A failure is kept too: the tests after the first fail at once rather
/// than each waiting for a start that cannot succeed.
async fn shared(emulator: Emulator, cell: &'static OnceCell<Result<String, String>>) -> String {
    let endpoint = cell
        .get_or_init(|| async {
            let endpoint = emulator.configured_endpoint();
            match emulator.ensure(&endpoint).await {
                Ok(_) => Ok(endpoint),
                Err(error) => Err(error.report()),
            }
        })
        .await;
    match endpoint {
        Ok(endpoint) => endpoint.clone(),
        Err(report) => panic!("{report}"),
    }
}

impl fmt::Display for Emulator {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Moto => "moto",
            Self::LocalStack => "LocalStack",
        })
    }
}

impl Emulator {
    /// The environment variable that says where the tests expect it.
    #[must_use]
    pub fn variable(self) -> &'static str {
        match self {
            Self::Moto => "AWS_ENDPOINT_URL",
            Self::LocalStack => "TEST_LOCALSTACK_URL",
        }
    }

    /// The endpoint its [`Emulator::variable`] names, or the emulator's usual one.
    #[must_use]
    pub fn configured_endpoint(self) -> String {
        std::env::var(self.variable()).unwrap_or_else(|_| {
            match self {
                Self::Moto => "http://127.0.0.1:5000",
                Self::LocalStack => "http://127.0.0.1:4566",
            }
            .to_owned()
        })
    }

    /// A name for files and directories.
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            Self::Moto => "moto",
            Self::LocalStack => "localstack",
        }
    }

    /// What to install into its virtualenv.
    pub(crate) fn requirements(self) -> &'static str {
        match self {
            Self::Moto => include_str!("../python/moto-requirements.txt"),
            Self::LocalStack => include_str!("../python/localstack-requirements.txt"),
        }
    }

    /// The oldest Python its pinned versions run on.
    pub(crate) fn minimum_python(self) -> (u32, u32) {
        match self {
            Self::Moto => (3, 9),
            Self::LocalStack => (3, 13),
        }
    }

    /// How long it may take from its start to its first ready answer: moto needs about 2 s, LocalStack 3 to 40 s
    /// depending on the machine's load; both bounds leave room for a busy CI machine.
    fn start_timeout(self) -> Duration {
        match self {
            Self::Moto => Duration::from_secs(60),
            Self::LocalStack => Duration::from_secs(180),
        }
    }

    /// The command that runs it from `venv` on `port` of 127.0.0.1, with the empty directory `files` for its files,
    /// and the environment it needs on top of `PATH` and `HOME`.
    pub(crate) fn server_command(
        self,
        venv: &Path,
        port: u16,
        files: &Path,
    ) -> (Vec<OsString>, Vec<(&'static str, OsString)>) {
        match self {
            Self::Moto => {
                let command = [venv.join("bin/moto_server").into_os_string()]
                    .into_iter()
                    .chain(["-H", "127.0.0.1", "-p", &port.to_string()].map(OsString::from))
                    .collect();
                (command, Vec::new())
            }
            Self::LocalStack => {
                let command = [
                    venv.join("bin/python").into(),
                    "-m".into(),
                    "localstack.runtime.main".into(),
                ];
                let environment = vec![
                    ("GATEWAY_LISTEN", format!("127.0.0.1:{port}").into()),
                    // Twisted, LocalStack's default server, listens on every interface whatever GATEWAY_LISTEN says.
                    ("GATEWAY_SERVER", "hypercorn".into()),
                    ("SERVICES", "sts,iam,secretsmanager".into()),
                    // No internet, and no DNS server of ours on port 53: no certificate download, no analytics.
                    ("DNS_ADDRESS", "0".into()),
                    ("SKIP_SSL_CERT_DOWNLOAD", "1".into()),
                    ("DISABLE_EVENTS", "1".into()),
                    // Its files, which it would otherwise keep in its package directory and /tmp/localstack, shared
                    // with any other LocalStack of the machine.
                    ("FILESYSTEM_ROOT", files.join("filesystem").into()),
                    ("LOCALSTACK_VOLUME_DIR", files.join("volume").into()),
                ];
                (command.into(), environment)
            }
        }
    }

    /// Makes sure it answers at `endpoint`, starting it there (installing it first if need be) when nothing does.
    /// Either way this process counts as one of its users until it exits, so that a server started by the tests
    /// stays up as long as this process may use it.
    ///
    /// # Errors
    /// When `endpoint` is not an http URL, when nothing answers at an endpoint not on this machine, and when it
    /// cannot be installed or started, or does not get ready in time.
    pub async fn ensure(self, endpoint: &str) -> Result<Outcome, Error> {
        let (host, port) = self.host_and_port(endpoint)?;
        let state = StateDir::new(self, port)?;
        // A user before the first probe: a keeper that sees no users stops its server under the same lock.
        blocking({
            let state = state.clone();
            move || state.join()
        })
        .await?;
        match self.probe(endpoint).await {
            Probe::Ready => return Ok(Outcome::Found),
            Probe::Absent(source) if !matches!(host.as_str(), "127.0.0.1" | "localhost") => {
                return Err(Error::NotLocal {
                    emulator: self,
                    endpoint: endpoint.to_owned(),
                    source,
                });
            }
            Probe::Absent(_) | Probe::Answering(_) => {}
        }
        // Held until the server is ready: processes that found it absent or starting wait here, then find it ready.
        let _starting = blocking({
            let state = state.clone();
            move || state.lock("start.lock")
        })
        .await?;
        match self.probe(endpoint).await {
            Probe::Ready => Ok(Outcome::Found),
            // Someone else's server, still starting.
            Probe::Answering(_) => self
                .wait_until_ready(endpoint, &state, None)
                .await
                .map(|()| Outcome::Found),
            Probe::Absent(_) => {
                let venv = blocking({
                    let endpoint = endpoint.to_owned();
                    move || python::install(self, &endpoint)
                })
                .await?;
                let mut keeper = state.start_keeper(self, &venv, port)?;
                self.wait_until_ready(endpoint, &state, Some(&mut keeper))
                    .await
                    .map(|()| Outcome::Started)
            }
        }
    }

    /// Waits until no other test uses the emulator at `endpoint` exclusively, then has it so until the result is
    /// dropped.
    ///
    /// # Errors
    /// When `endpoint` is not an http URL, and when the lock file cannot be made or locked.
    pub async fn exclusive(self, endpoint: &str) -> Result<Exclusive, Error> {
        let (_, port) = self.host_and_port(endpoint)?;
        let state = StateDir::new(self, port)?;
        let lock = blocking(move || state.lock("exclusive.lock")).await?;
        Ok(Exclusive { _lock: lock })
    }

    fn host_and_port(self, endpoint: &str) -> Result<(String, u16), Error> {
        let invalid = || Error::Endpoint {
            emulator: self,
            endpoint: endpoint.to_owned(),
        };
        let url = url::Url::parse(endpoint).map_err(|_| invalid())?;
        match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => Ok((host.to_owned(), port)),
            _ => Err(invalid()),
        }
    }

    async fn probe(self, endpoint: &str) -> Probe {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client without TLS settings builds");
        let path = match self {
            Self::Moto => "moto-api/",
            Self::LocalStack => "_localstack/health",
        };
        let response = client
            .get(format!("{}/{path}", endpoint.trim_end_matches('/')))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) if error.is_connect() => return Probe::Absent(error),
            Err(error) => return Probe::Answering(error.to_string()),
        };
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let ready = status.is_success()
            && match self {
                Self::Moto => true,
                Self::LocalStack => serde_json::from_str::<Value>(&body).is_ok_and(|health| {
                    ["sts", "iam"]
                        .iter()
                        .all(|service| matches!(health["services"][service].as_str(), Some("available" | "running")))
                }),
            };
        if ready {
            Probe::Ready
        } else {
            Probe::Answering(format!("{status}: {body}"))
        }
    }

    /// Waits for a ready answer at `endpoint` from a server that is starting, watching `keeper` when this process
    /// started it. Without a keeper, the server's logs shown on failure are those of the keeper that last ran there,
    /// if any.
    async fn wait_until_ready(
        self,
        endpoint: &str,
        state: &StateDir,
        mut keeper: Option<&mut Child>,
    ) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let last = match self.probe(endpoint).await {
                Probe::Ready => return Ok(()),
                Probe::Answering(answer) => answer,
                Probe::Absent(error) => format!("nothing: {error}"),
            };
            if let Some(keeper) = &mut keeper {
                let exited = keeper
                    .try_wait()
                    .map_err(Error::io(format!("watching {self}'s keeper")))?;
                if let Some(status) = exited {
                    return Err(Error::KeeperExited {
                        emulator: self,
                        endpoint: endpoint.to_owned(),
                        status,
                        logs: state.logs(),
                    });
                }
            }
            if started.elapsed() >= self.start_timeout() {
                return Err(Error::NotReady {
                    emulator: self,
                    endpoint: endpoint.to_owned(),
                    waited: started.elapsed(),
                    last,
                    logs: state.logs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Runs `work`, which waits for locks or installs, off the test's runtime thread.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
}
