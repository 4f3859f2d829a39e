//! The IAM side of the suite: the RDS IAM emulator in front of the local PostgreSQL or MariaDB, and AWS
//! configurations whose credentials the emulator knows (or, on purpose, does not).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use rds_iam_emulator::credentials::CredentialStore;
use rds_iam_emulator::{AuthCounts, Emulator, IssuedLog, Options, StsPassThrough};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::Backend;
use crate::database::{mysql_admin_url, postgres_admin_url};

pub const ACCESS_KEY_ID: &str = "AKIATASKSTESTKEY0001";
pub const SECRET_ACCESS_KEY: &str = "tasks/test+secret=never-to-be-logged";
/// A second secret for the same key id: signing with it must be refused.
pub const OTHER_SECRET_ACCESS_KEY: &str = "a/different+secret=also-never-logged";
pub const REGION: &str = "us-east-1";

/// How a test wants its emulator.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    pub region: String,
    /// The `host:port` tokens must name; the listen address when `None`.
    pub endpoint: Option<String>,
    pub max_token_age: Duration,
    /// The STS that the emulator's STS pass-through forwards to; the emulator accepts the credentials it issues.
    pub sts_upstream: Option<String>,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            region: REGION.to_owned(),
            endpoint: None,
            max_token_age: Duration::from_secs(900),
            sts_upstream: None,
        }
    }
}

/// A running emulator with a TLS directory of its own; stops when dropped.
#[derive(Debug)]
pub struct TestEmulator {
    pub address: SocketAddr,
    pub ca_pem: PathBuf,
    /// Tokens accepted and refused so far.
    pub counts: Arc<AuthCounts>,
    /// The STS pass-through's URL, when the emulator has one.
    pub sts: Option<String>,
    /// The temporary credentials learned through the STS pass-through.
    pub issued: Arc<IssuedLog>,
    /// The upstream server's administrator URL, whose user the suite logs in as.
    upstream_admin: url::Url,
    directory: PathBuf,
    task: JoinHandle<()>,
}

/// The administrator URL of the server behind an IAM backend: the local PostgreSQL or MariaDB, or the ones
/// `TEST_DATABASE_URL` and `TEST_MYSQL_URL` name.
fn upstream_admin(backend: Backend) -> url::Url {
    let admin = match backend {
        Backend::PostgresIam => postgres_admin_url(),
        Backend::MariaDbIam => mysql_admin_url(),
        Backend::Sqlite | Backend::Postgres | Backend::MariaDb => panic!("{backend:?} has no emulator"),
    };
    url::Url::parse(&admin).expect("the test database URL is a URL")
}

impl TestEmulator {
    /// Starts an emulator on `127.0.0.1:0`, in front of `backend`'s server, that knows [`ACCESS_KEY_ID`] with
    /// [`SECRET_ACCESS_KEY`].
    pub async fn start(backend: Backend, options: EmulatorOptions) -> Self {
        let upstream_admin = upstream_admin(backend);
        let mut upstream = upstream_admin.clone();
        upstream.set_path("");
        let directory = std::env::temp_dir().join(format!("tasks-emulator-{}", Uuid::new_v4().simple()));
        let credentials = CredentialStore::parse(&format!(
            "[default]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {SECRET_ACCESS_KEY}\n"
        ))
        .expect("INI");
        let emulator = Emulator::bind(Options {
            listen: "127.0.0.1:0".parse().expect("an address"),
            upstream,
            region: options.region,
            credentials,
            tls_dir: directory.clone(),
            endpoint: options.endpoint,
            max_token_age: options.max_token_age,
            sts: options.sts_upstream.map(|upstream| StsPassThrough {
                listen: "127.0.0.1:0".parse().expect("an address"),
                upstream: upstream.parse().expect("the STS upstream's URL"),
            }),
        })
        .await
        .expect("the emulator starts");
        Self {
            address: emulator.local_addr(),
            ca_pem: emulator.ca_pem_path().to_owned(),
            counts: emulator.counts(),
            sts: emulator.sts_addr().map(|address| format!("http://{address}")),
            issued: emulator.issued(),
            upstream_admin,
            directory,
            task: tokio::spawn(emulator.run()),
        }
    }

    /// The URL the service connects to: the emulator, as `user`, for `database`.
    #[must_use]
    pub fn url(&self, user: &str, database: &str) -> String {
        let user: String = url::form_urlencoded::byte_serialize(user.as_bytes()).collect();
        // form encoding writes spaces as `+`, which a URL's user part would read literally.
        format!(
            "{}://{}@{}/{database}",
            self.upstream_admin.scheme(),
            user.replace('+', "%20"),
            self.address
        )
    }

    /// The upstream's administrator, whom the suite logs in as unless a test makes a user of its own.
    #[must_use]
    pub fn admin_user(&self) -> &str {
        self.upstream_admin.username()
    }

    #[must_use]
    pub fn ca_pem(&self) -> &Path {
        &self.ca_pem
    }
}

impl Drop for TestEmulator {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
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

/// An AWS configuration that takes its credentials from a `credential_process` in a profile file, as a developer's
/// `~/.aws/config` would; the process fails while `outage` exists, like an expired SSO session or a broken IMDS.
pub async fn aws_config_with_credential_process(directory: &Path, outage: &Path) -> SdkConfig {
    std::fs::create_dir_all(directory).expect("profile directory");
    let script = directory.join("credentials.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             [ -e '{outage}' ] && {{ echo 'credential source unavailable' >&2; exit 1; }}\n\
             expiration=$(date -u -d '+1 second' +%Y-%m-%dT%H:%M:%SZ)\n\
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
    // The profile provider alone, not the whole default chain: when the process fails, nothing may fall through to
    // the instance metadata service, which does not exist here.
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
