//! Emulators in front of the local servers, tokens signed by the AWS SDK, and the command-line clients.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config};
use rds_iam_emulator::credentials::CredentialStore;
use rds_iam_emulator::testing::{EmulatorOptions, TestCluster, TestEmulator};
use tokio::process::Command;

/// The IAM user the tests log in as: granted `rds_iam`, as `tasks-api admin provision-db-user` grants it on RDS.
pub(crate) const IAM_USER: &str = "rds_iam_emulator_clients";

/// The long-term key the emulators know.
pub(crate) const ACCESS_KEY_ID: &str = "AKIAEMULATORCLIENTS1";
pub(crate) const SECRET_ACCESS_KEY: &str = "emulator/clients+secret";

/// The engines the emulator fronts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Postgres,
    MariaDb,
}

impl Engine {
    /// The administrator URL of the local server, which the emulator relays to.
    pub(crate) fn upstream(self) -> url::Url {
        let url = match self {
            Self::Postgres => test_servers::postgres(),
            Self::MariaDb => test_servers::mariadb(),
        };
        url.parse().expect("the test database URL is a URL")
    }
}

/// An emulator in front of `engine`'s local server that knows [`ACCESS_KEY_ID`].
pub(crate) async fn start(engine: Engine, options: EmulatorOptions) -> TestEmulator {
    start_in_front_of(engine.upstream(), options).await
}

/// An emulator in front of `upstream` that knows [`ACCESS_KEY_ID`].
pub(crate) async fn start_in_front_of(upstream: url::Url, options: EmulatorOptions) -> TestEmulator {
    TestEmulator::start(upstream, known_credentials(), options).await
}

/// A cluster in front of `engine`'s local server that knows [`ACCESS_KEY_ID`].
pub(crate) async fn start_cluster(engine: Engine, options: EmulatorOptions) -> TestCluster {
    TestCluster::start(engine.upstream(), known_credentials(), options).await
}

fn known_credentials() -> CredentialStore {
    let mut credentials = CredentialStore::default();
    credentials.insert(ACCESS_KEY_ID.to_owned(), SECRET_ACCESS_KEY.to_owned(), None);
    credentials
}

/// [`IAM_USER`], made an IAM user of `emulator`'s upstream if it is not one yet.
pub(crate) async fn iam_user(emulator: &TestEmulator) -> &'static str {
    emulator.create_iam_user(IAM_USER).await;
    IAM_USER
}

/// What the emulator says when it refuses `user`'s log-in: RDS's own words for each engine.
pub(crate) fn refusal(engine: Engine, user: &str) -> String {
    match engine {
        Engine::Postgres => format!("PAM authentication failed for user \"{user}\""),
        Engine::MariaDb => format!("Access denied for user '{user}'"),
    }
}

/// A token for `user` at `emulator`'s address, signed by the AWS SDK with the known long-term key.
pub(crate) async fn token(emulator: &TestEmulator, user: &str) -> String {
    token_for(&emulator.address.to_string(), user).await
}

/// A token for `user` at `endpoint` (`host:port`), signed by the AWS SDK with the known long-term key.
pub(crate) async fn token_for(endpoint: &str, user: &str) -> String {
    let credentials = Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "tests");
    sign(endpoint, user, credentials).await
}

/// A token for `user` at `emulator`'s address, signed by the AWS SDK with `credentials`.
pub(crate) async fn token_signed_with(emulator: &TestEmulator, user: &str, credentials: Credentials) -> String {
    sign(&emulator.address.to_string(), user, credentials).await
}

async fn sign(endpoint: &str, user: &str, credentials: Credentials) -> String {
    let (host, port) = endpoint.rsplit_once(':').expect("host:port");
    let aws = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials)
        .load()
        .await;
    let target = Config::builder()
        .hostname(host)
        .port(port.parse().expect("a port"))
        .username(user)
        .build()
        .expect("a token target");
    AuthTokenGenerator::new(target)
        .auth_token(&aws)
        .await
        .expect("a token")
        .to_string()
}

/// Runs `sql` with the engine's command-line client as `user` with `password`, verifying the emulator's certificate
/// and name: its output, or its error text.
pub(crate) async fn client(
    engine: Engine,
    emulator: &TestEmulator,
    user: &str,
    password: &str,
    sql: &str,
) -> Result<String, String> {
    let (host, port) = (emulator.address.ip().to_string(), emulator.address.port().to_string());
    let ca = emulator.ca_pem().display().to_string();
    let mut command = match engine {
        Engine::Postgres => {
            let connection = format!(
                "host={host} port={port} user={user} dbname=postgres sslmode=verify-full sslrootcert={ca} \
                 connect_timeout=10"
            );
            let mut psql = Command::new("psql");
            psql.args(["-X", "-A", "-t", "-c", sql, &connection])
                .env("PGPASSWORD", password);
            psql
        }
        Engine::MariaDb => {
            let mut mariadb = Command::new("mariadb");
            mariadb
                .args(["--no-defaults", "-h", &host, "-P", &port, "-u", user, "--ssl-ca", &ca])
                .args([
                    "--ssl-verify-server-cert",
                    "--connect-timeout=10",
                    "-N",
                    "-B",
                    "-e",
                    sql,
                ])
                .env("MYSQL_PWD", password);
            mariadb
        }
    };
    let output = tokio::time::timeout(Duration::from_secs(30), command.kill_on_drop(true).output())
        .await
        .expect("the client finishes")
        .expect("psql and mariadb are installed");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// Runs the binary with `arguments` after a valid `--credentials` and `--tls-dir`, expecting it to refuse to start;
/// returns everything it wrote.
pub(crate) fn run_refused(arguments: &[&str]) -> String {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let credentials = credentials_file(directory.path());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rds-iam-emulator"))
        .args(["--listen", "127.0.0.1:0", "--credentials"])
        .arg(&credentials)
        .arg("--tls-dir")
        .arg(directory.path())
        .args(arguments)
        .output()
        .expect("the emulator runs");
    assert!(!output.status.success(), "it must refuse {arguments:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Writes a `--credentials` file with one valid profile into `directory`, and returns its path.
pub(crate) fn credentials_file(directory: &std::path::Path) -> std::path::PathBuf {
    let credentials = directory.join("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = example/secret\n",
    )
    .expect("write credentials");
    credentials
}

/// The emulator's binary, listening on a free port of the loopback interface in front of `engine`'s local server with
/// one valid profile, for tests that read what it logs. Killed when dropped.
pub(crate) struct Binary {
    pub(crate) listen: String,
    process: tokio::process::Child,
    _directory: tempfile::TempDir,
}

impl Binary {
    pub(crate) async fn start(engine: Engine) -> Self {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let credentials = credentials_file(directory.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let process = Command::new(env!("CARGO_BIN_EXE_rds-iam-emulator"))
            .args([
                "--listen",
                &listen,
                "--upstream",
                engine.upstream().as_str(),
                "--credentials",
            ])
            .arg(&credentials)
            .arg("--tls-dir")
            .arg(directory.path())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the emulator runs");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&listen).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the emulator never listened on {listen}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            listen,
            process,
            _directory: directory,
        }
    }

    /// Presents `token` as `user`'s password with psql over TLS, which must be refused.
    pub(crate) async fn refuse(&self, user: &str, token: &str) {
        let (host, port) = self.listen.rsplit_once(':').expect("host:port");
        let refused = Command::new("psql")
            .args(["-X", "-c", "SELECT 1"])
            .arg(format!(
                "host={host} port={port} user={user} dbname=postgres sslmode=require connect_timeout=10"
            ))
            .env("PGPASSWORD", token)
            .output()
            .await
            .expect("psql is installed");
        assert!(!refused.status.success(), "the token must be refused");
    }

    /// Stops the emulator and returns everything it wrote.
    pub(crate) async fn stop(mut self) -> String {
        use tokio::io::AsyncReadExt;
        self.process.start_kill().expect("stop the emulator");
        let mut log = String::new();
        if let Some(mut stdout) = self.process.stdout.take() {
            stdout.read_to_string(&mut log).await.expect("the emulator's output");
        }
        if let Some(mut stderr) = self.process.stderr.take() {
            stderr.read_to_string(&mut log).await.expect("the emulator's output");
        }
        log
    }
}
