//! The IAM side of the suite: the RDS IAM emulator in front of the local PostgreSQL or MariaDB, and AWS
//! configurations whose credentials the emulator knows (or, on purpose, does not).

use std::ops::Deref;
use std::path::PathBuf;

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use rds_iam_emulator::credentials::CredentialStore;
use rds_iam_emulator::testing;
pub use rds_iam_emulator::testing::EmulatorOptions;

use crate::Backend;

pub const ACCESS_KEY_ID: &str = "AKIATASKSTESTKEY0001";
pub const SECRET_ACCESS_KEY: &str = "tasks/test+secret=never-to-be-logged";
/// A second secret for the same key id: signing with it must be refused.
pub const OTHER_SECRET_ACCESS_KEY: &str = "a/different+secret=also-never-logged";
pub const REGION: &str = "us-east-1";
/// The database user the suite logs in as through the emulator unless a test makes one of its own: an IAM user
/// (granted `rds_iam`, as `tasks-api admin provision-db-user` does on RDS) that owns every IAM test's database.
pub const IAM_USER: &str = "tasks_iam_tests";
/// The role the suite logs in as through the emulator in Aurora DSQL mode: `admin`, which every DSQL cluster has and
/// whose tokens are `DbConnectAdmin` tokens. It owns every DSQL test's database.
pub const DSQL_ROLE: &str = "admin";

/// The suite's emulator: the crate's harness in front of a backend's server, knowing [`ACCESS_KEY_ID`]. Everything
/// else (`address`, `counts`, `sts`, `issued`, `ca_pem()`, `url(..)`) is the harness's, through `Deref`.
#[derive(Debug)]
pub struct TestEmulator(testing::TestEmulator);

/// The administrator URL of the server behind an IAM backend: the local PostgreSQL or MariaDB, or the ones
/// `TEST_DATABASE_URL` and `TEST_MYSQL_URL` name.
fn upstream_admin(backend: Backend) -> url::Url {
    let admin = match backend {
        Backend::PostgresIam | Backend::PostgresDsql => test_servers::postgres(),
        Backend::MariaDbIam => test_servers::mariadb(),
        Backend::Sqlite | Backend::Postgres | Backend::MariaDb | Backend::PostgresSecrets | Backend::MariaDbSecrets => {
            panic!("{backend:?} has no emulator")
        }
    };
    url::Url::parse(&admin).expect("the test database URL is a URL")
}

/// The only credentials the suite's emulators know.
fn known_credentials() -> CredentialStore {
    let mut credentials = CredentialStore::default();
    credentials.insert(ACCESS_KEY_ID.to_owned(), SECRET_ACCESS_KEY.to_owned(), None);
    credentials
}

impl TestEmulator {
    /// Starts an emulator on `127.0.0.1:0`, in front of `backend`'s server, that knows [`ACCESS_KEY_ID`] with
    /// [`SECRET_ACCESS_KEY`], and makes [`IAM_USER`] an IAM user there; for [`Backend::PostgresDsql`], one in DSQL
    /// mode, with the role [`DSQL_ROLE`].
    pub async fn start(backend: Backend, options: EmulatorOptions) -> Self {
        Self::start_on(upstream_admin(backend), backend, options).await
    }

    /// Like [`TestEmulator::start`], in front of the server that `upstream` administers (a cluster of the test's own).
    pub async fn start_on(upstream: url::Url, backend: Backend, options: EmulatorOptions) -> Self {
        let dsql = backend == Backend::PostgresDsql;
        let options = EmulatorOptions { dsql, ..options };
        let emulator = testing::TestEmulator::start(upstream, known_credentials(), options).await;
        if dsql {
            // Tests running at once may each create it: losing that race is no failure.
            emulator
                .administer(&format!(
                    "DO $$ BEGIN CREATE ROLE {DSQL_ROLE} LOGIN; \
                     EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
                ))
                .await;
        } else {
            emulator.create_iam_user(IAM_USER).await;
        }
        Self(emulator)
    }
}

impl Deref for TestEmulator {
    type Target = testing::TestEmulator;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The suite's Aurora-style cluster (instances `a` and `b`, a cluster endpoint and a reader endpoint) in front of a
/// backend's server, knowing the same key as [`TestEmulator`], with [`IAM_USER`] made an IAM user there.
#[derive(Debug)]
pub struct TestCluster(testing::TestCluster);

impl TestCluster {
    pub async fn start(backend: Backend, options: EmulatorOptions) -> Self {
        let cluster = testing::TestCluster::start(upstream_admin(backend), known_credentials(), options).await;
        cluster.create_iam_user(IAM_USER).await;
        Self(cluster)
    }
}

impl Deref for TestCluster {
    type Target = testing::TestCluster;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The settings that have the service log in with IAM tokens at `url`, one of `emulator`'s endpoints (its
/// [`url`](testing::TestEmulator::url) for the main one, a cluster's cluster endpoint), trusting its certificate
/// authority.
#[must_use]
pub fn settings_through(emulator: &testing::TestEmulator, url: String) -> [(&'static str, String); 3] {
    [
        ("APP__DATABASE__URL", url),
        ("APP__DATABASE__AUTH", "iam".into()),
        ("APP__DATABASE__TLS__ROOT_CERT", emulator.ca_pem().display().to_string()),
    ]
}

/// An AWS configuration with static credentials and the test region, as the SDK's loader builds it.
pub async fn aws_config(access_key_id: &str, secret_access_key: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "tasks-tests",
        ))
        .load()
        .await
}

/// AWS credentials from a `credential_process` in a profile file, as a developer's `~/.aws/config` would give them,
/// that the test can cut off and restore, like an SSO session that expires and is renewed, or a metadata service
/// that breaks and comes back. Its files are removed when it is dropped.
#[derive(Debug)]
pub struct CredentialOutage {
    directory: PathBuf,
    /// The process fails while this file exists.
    flag: PathBuf,
}

impl Default for CredentialOutage {
    fn default() -> Self {
        let directory = std::env::temp_dir().join(format!("tasks-profile-{}", uuid::Uuid::new_v4().simple()));
        let flag = directory.join("outage");
        Self { directory, flag }
    }
}

impl CredentialOutage {
    /// From now on, the credential process fails.
    pub fn begin(&self) {
        std::fs::write(&self.flag, "").expect("begin the outage");
    }

    /// From now on, the credential process gives credentials again.
    pub fn end(&self) {
        std::fs::remove_file(&self.flag).expect("end the outage");
    }

    /// An AWS configuration whose credentials come from the process.
    pub async fn aws_config(&self) -> SdkConfig {
        let (directory, outage) = (&self.directory, &self.flag);
        std::fs::create_dir_all(directory).expect("profile directory");
        let script = directory.join("credentials.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 [ -e '{outage}' ] && {{ echo 'credential source unavailable' >&2; exit 1; }}\n\
                 expiration=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)\n\
                 printf '{{\"Version\": 1, \"AccessKeyId\": \"%s\", \"SecretAccessKey\": \"%s\", \"Expiration\": \"%s\"}}' \
                 '{ACCESS_KEY_ID}' '{SECRET_ACCESS_KEY}' \"$expiration\"\n",
                outage = outage.display()
            ),
        )
        .expect("write the credential process");
        let config = directory.join("config");
        std::fs::write(
            &config,
            format!("[profile tasks-test]\ncredential_process = sh {}\n", script.display()),
        )
        .expect("write the profile file");
        let profiles = EnvConfigFiles::builder()
            .with_file(EnvConfigFileKind::Config, &config)
            .build();
        // The profile provider alone, not the whole default chain: when the process fails, nothing may fall through
        // to the instance metadata service, which does not exist here.
        let credentials = ProfileFileCredentialsProvider::builder()
            .profile_files(profiles)
            .profile_name("tasks-test")
            .build();
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(credentials)
            .load()
            .await
    }
}

impl Drop for CredentialOutage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// A port forward to a server, as an SSH or SSM tunnel gives one: on `127.0.0.2`, a loopback address that no
/// certificate of the emulator names, as RDS's certificates do not name a tunnel's `127.0.0.1`. It forwards until
/// dropped.
#[derive(Debug)]
pub struct PortForward {
    pub address: std::net::SocketAddr,
    forwarding: tokio::task::JoinHandle<()>,
}

impl PortForward {
    pub async fn to(server: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .expect("a port on 127.0.0.2 (Linux routes all of 127.0.0.0/8 to the loopback interface)");
        let address = listener.local_addr().expect("its address");
        let forwarding = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(server).await {
                        // Either side closing ends the forward, as it ends a tunnel's channel.
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { address, forwarding }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.forwarding.abort();
    }
}
