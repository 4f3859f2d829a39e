//! A harness for tests that need RDS IAM authentication in front of a real server (feature `testing`).
//!
//! [`TestEmulator::start`] runs an emulator on a free port of `127.0.0.1` with a TLS directory of its own, and drops
//! both with the value; [`TestCluster::start`] runs an Aurora-style cluster the same way, for failover drills:
//!
//! ```no_run
//! use rds_iam_emulator::credentials::CredentialStore;
//! use rds_iam_emulator::testing::{EmulatorOptions, TestEmulator};
//!
//! # async fn example() {
//! let mut credentials = CredentialStore::default();
//! credentials.insert("AKIAEXAMPLE".to_owned(), "example/secret".to_owned(), None);
//! let upstream = "postgres://postgres@127.0.0.1:5432".parse().expect("a URL");
//! let emulator = TestEmulator::start(upstream, credentials, EmulatorOptions::default()).await;
//! emulator.create_iam_user("db_iam_user").await;
//! // Connect to this URL with an IAM token as the password, verifying the server with `emulator.ca_pem()`.
//! let url = emulator.url("db_iam_user", "postgres");
//! # }
//! ```
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use rds_iam_emulator::credentials::CredentialStore;
//! use rds_iam_emulator::testing::{EmulatorOptions, TestCluster};
//!
//! # async fn example() {
//! # let credentials = CredentialStore::default();
//! let upstream = "postgres://postgres@127.0.0.1:5432".parse().expect("a URL");
//! let cluster = TestCluster::start(upstream, credentials, EmulatorOptions::default()).await;
//! let (writes, reads) = (cluster.url("db_iam_user", "postgres"), cluster.reader_url("db_iam_user", "postgres"));
//! // ... clients at work, then: sessions closed, 2 s refused, the roles swapped, 3 s of stale DNS.
//! cluster.failover(Duration::from_secs(2), Duration::from_secs(3));
//! assert_eq!(cluster.stats().endpoints[0].refused.starting_up, 0);
//! # }
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use url::Url;

use crate::credentials::CredentialStore;
use crate::iam_role::IamRole;
use crate::layout::{CLUSTER_ENDPOINT, READER_ENDPOINT};
use crate::policy::Authorization;
use crate::server::redacted;
use crate::sigv4::MAX_TOKEN_LIFETIME;
use crate::{
    AuthCounts, ClusterLayout, ConflictInjector, Control, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, Emulator,
    EndpointInfo, EndpointSpec, FailoverStarted, InstanceSpec, IssuedLog, Layout, Options, Stats, StsPassThrough,
};

/// How a test wants its emulator. The defaults are the emulator's own: region `us-east-1`, tokens signed for the
/// listen address, a maximum token age of 15 minutes, no STS pass-through, a handshake timeout of 10 seconds, at
/// most 100 connections, no policies (any known key may connect as any user), no limit on authentications per
/// second.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// The region tokens must be signed for.
    pub region: String,
    /// The `host:port` tokens must name; the listen address when `None`. A [`TestCluster`]'s endpoints always sign
    /// for their listen addresses, and refuse this.
    pub endpoint: Option<String>,
    /// Tokens older than this are refused, whatever their own lifetime.
    pub max_token_age: Duration,
    /// The STS that the emulator's STS pass-through forwards to; the emulator accepts the credentials it issues.
    pub sts_upstream: Option<String>,
    /// How long a client may take to present itself (see [`Options::handshake_timeout`]).
    pub handshake_timeout: Duration,
    /// How many database connections may be open at once (see [`Options::max_connections`]).
    pub max_connections: usize,
    /// Who may connect as which database user (see [`Options::authorization`]).
    pub authorization: Option<Authorization>,
    /// How many log-ins each instance takes per second (see [`Options::max_auth_per_sec`]).
    pub max_auth_per_sec: Option<NonZeroU32>,
    /// Aurora DSQL tokens instead of RDS's (see [`Options::dsql`]); `endpoint` is then the host they name.
    pub dsql: bool,
    /// With `dsql`, the share of commits answered with OC000 (see [`Options::occ_conflict_rate`]).
    pub occ_conflict_rate: f64,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            region: "us-east-1".to_owned(),
            endpoint: None,
            max_token_age: MAX_TOKEN_LIFETIME,
            sts_upstream: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            authorization: None,
            max_auth_per_sec: None,
            dsql: false,
            occ_conflict_rate: 0.0,
        }
    }
}

/// A running emulator with a temporary directory of its own; both go away when this is dropped.
pub struct TestEmulator {
    /// Where clients connect: the only endpoint, or a cluster's cluster endpoint.
    pub address: SocketAddr,
    /// Tokens accepted and refused so far.
    pub counts: Arc<AuthCounts>,
    /// The STS pass-through's URL, when the emulator has one: the STS endpoint to give clients.
    pub sts: Option<String>,
    /// The temporary credentials learned through the STS pass-through.
    pub issued: Arc<IssuedLog>,
    ca_pem: PathBuf,
    upstream: Url,
    iam_role: IamRole,
    endpoints: Vec<EndpointInfo>,
    control: Control,
    control_url: String,
    conflicts: Option<Arc<ConflictInjector>>,
    // Deleted by its own `Drop`, which runs after `TestEmulator::drop` has stopped the emulator.
    directory: TempDir,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TestEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEmulator")
            .field("address", &self.address)
            .field("counts", &self.counts)
            .field("sts", &self.sts)
            .field("issued", &self.issued)
            .field("ca_pem", &self.ca_pem)
            .field("upstream", &redacted(&self.upstream).as_str())
            .field("endpoints", &self.endpoints)
            .field("control_url", &self.control_url)
            .finish_non_exhaustive()
    }
}

/// What [`TestEmulator::url`] percent-encodes in a user name: all but RFC 3986's unreserved characters, so that `@`,
/// `:`, `/`, `+` and spaces stay part of the name.
const USER_NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

impl TestEmulator {
    /// Starts an emulator on `127.0.0.1:0` in front of `upstream` (see [`Options::upstream`]) that accepts tokens
    /// signed with `credentials`, on the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// When the emulator cannot start (the upstream cannot be reached, say) or `options.sts_upstream` is not a URL:
    /// in a test, that is the test's failure.
    pub async fn start(upstream: Url, credentials: CredentialStore, options: EmulatorOptions) -> Self {
        let layout = Layout::Single(EndpointSpec {
            listen: ANY_PORT,
            signing_name: options.endpoint.clone(),
        });
        Self::launch(layout, upstream, credentials, options).await
    }

    async fn launch(layout: Layout, upstream: Url, credentials: CredentialStore, options: EmulatorOptions) -> Self {
        let directory = tempfile::Builder::new()
            .prefix("rds-iam-emulator-")
            .tempdir()
            .expect("a temporary directory");
        let emulator = Emulator::bind(Options {
            layout,
            upstream: upstream.clone(),
            region: options.region,
            credentials,
            tls_dir: directory.path().to_owned(),
            max_token_age: options.max_token_age,
            sts: options.sts_upstream.map(|sts| StsPassThrough {
                listen: ANY_PORT,
                upstream: sts.parse().expect("the STS upstream's URL"),
            }),
            handshake_timeout: options.handshake_timeout,
            max_connections: options.max_connections,
            authorization: options.authorization,
            max_auth_per_sec: options.max_auth_per_sec,
            control_listen: Some(ANY_PORT),
            dsql: options.dsql,
            occ_conflict_rate: options.occ_conflict_rate,
        })
        .await
        .expect("the emulator starts");
        let endpoints = emulator.endpoints();
        let address = endpoints
            .iter()
            .find(|endpoint| endpoint.name == CLUSTER_ENDPOINT)
            .map_or(emulator.local_addr(), |endpoint| endpoint.listen);
        let control_addr = emulator.control_addr().expect("the control API listens");
        Self {
            address,
            counts: emulator.counts(),
            sts: emulator.sts_addr().map(|address| format!("http://{address}")),
            issued: emulator.issued(),
            ca_pem: emulator.ca_pem_path().to_owned(),
            upstream,
            iam_role: emulator.iam_role(),
            endpoints,
            control: emulator.control(),
            control_url: format!("http://{control_addr}"),
            conflicts: emulator.conflicts(),
            directory,
            task: tokio::spawn(emulator.run()),
        }
    }

    /// The CA certificate clients verify the emulator with (`sslrootcert`, `--ssl-ca`).
    #[must_use]
    pub fn ca_pem(&self) -> &Path {
        &self.ca_pem
    }

    /// The server behind the emulator, as given to [`TestEmulator::start`].
    #[must_use]
    pub fn upstream(&self) -> &Url {
        &self.upstream
    }

    /// Makes `user` an IAM user of the upstream, one the emulator lets in with a valid token: creates it unless it
    /// exists, without a password (PostgreSQL: a role with LOGIN; MySQL: `'user'@'%'`), and grants it `rds_iam`, as
    /// `tasks-api admin provision-db-user` does on RDS. Anything else it needs (a database, privileges) is the
    /// test's to grant.
    ///
    /// # Panics
    ///
    /// When `user` holds a quote, a backslash or a `$`, which the statements do not escape, or the upstream refuses.
    pub async fn create_iam_user(&self, user: &str) {
        assert!(
            !user.contains(['"', '\'', '\\', '$']),
            "{user:?}: test users are named without quotes, backslashes or $"
        );
        self.iam_role
            .create_member(user)
            .await
            .unwrap_or_else(|error| panic!("the upstream must let the emulator create IAM user {user:?}: {error}"));
    }

    /// Runs `statements` on the upstream with the emulator's own connection, as the upstream URL's user (in tests,
    /// the server's administrator), not through the emulator: to create a user, a database, a grant.
    ///
    /// # Panics
    ///
    /// When the upstream refuses.
    pub async fn administer(&self, statements: &str) {
        self.iam_role
            .execute(statements.to_owned())
            .await
            .unwrap_or_else(|error| panic!("the upstream must run {statements:?}: {error}"));
    }

    /// The emulator's temporary directory, which holds `ca.pem`. A test may keep its own files there (an AWS
    /// profile, a home directory); they go with the emulator.
    #[must_use]
    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    /// The URL that reaches `database` through the emulator as `user`, in the upstream's scheme.
    #[must_use]
    pub fn url(&self, user: &str, database: &str) -> String {
        self.url_at(self.address, user, database)
    }

    fn url_at(&self, address: SocketAddr, user: &str, database: &str) -> String {
        format!(
            "{}://{}@{address}/{database}",
            self.upstream.scheme(),
            utf8_percent_encode(user, USER_NAME)
        )
    }

    /// Every endpoint, with where it listens and the `host:port` its tokens are signed for.
    #[must_use]
    pub fn endpoints(&self) -> &[EndpointInfo] {
        &self.endpoints
    }

    /// Where the endpoint named `name` listens (`cluster`, `reader`, an instance's name, or `instance` for a
    /// single endpoint).
    ///
    /// # Panics
    ///
    /// When there is no such endpoint.
    #[must_use]
    pub fn endpoint_address(&self, name: &str) -> SocketAddr {
        self.endpoints
            .iter()
            .find(|endpoint| endpoint.name == name)
            .unwrap_or_else(|| panic!("no endpoint named {name:?} among {:?}", self.endpoints))
            .listen
    }

    /// Starts a failover now (see [`Control::fail_over`]); with a single endpoint, a restart.
    ///
    /// # Panics
    ///
    /// While an earlier failover's downtime lasts, or for spells over [`crate::MAX_FAILOVER_SPELL`].
    pub fn failover(&self, downtime: Duration, stale_dns: Duration) -> FailoverStarted {
        self.control
            .fail_over(downtime, stale_dns)
            .unwrap_or_else(|error| panic!("the failover must start: {error}"))
    }

    /// The emulator's counts and state now, as `GET /stats` answers them.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.control.stats()
    }

    /// How many commits and autocommit writes have been answered with an injected OC000 conflict so far.
    #[must_use]
    pub fn conflicts_injected(&self) -> u64 {
        self.conflicts.as_ref().map_or(0, |conflicts| conflicts.injected())
    }

    /// Changes the share of commits answered with a conflict, for sessions open and to come: a test can start the
    /// service (whose migrations are not retried) before conflicts begin.
    ///
    /// # Panics
    ///
    /// When the emulator was started without a conflict rate: its sessions are relayed as bytes, with nowhere to
    /// inject one.
    pub fn set_conflict_rate(&self, rate: f64) {
        self.conflicts
            .as_ref()
            .expect("an emulator started with occ_conflict_rate above 0")
            .set_rate(rate);
    }

    /// The control API's base URL (`POST {control_url}/failover`, `GET {control_url}/stats`).
    #[must_use]
    pub fn control_url(&self) -> &str {
        &self.control_url
    }
}

impl Drop for TestEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every test endpoint listens on a free port of the loopback interface.
const ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A running Aurora-style cluster: instances `a` (the writer at start) and `b` (the reader), a cluster endpoint
/// (which [`TestEmulator::address`] and [`TestEmulator::url`] give) and a reader endpoint, each on a free port, all
/// in front of the one upstream. It is a [`TestEmulator`] in all else: [`TestEmulator::failover`] and
/// [`TestEmulator::stats`] drive and watch it.
#[derive(Debug)]
pub struct TestCluster(TestEmulator);

impl TestCluster {
    /// The instances' names, the writer at start first.
    pub const INSTANCES: [&str; 2] = ["a", "b"];

    /// Starts a cluster in front of `upstream` that accepts tokens signed with `credentials`, on the current Tokio
    /// runtime.
    ///
    /// # Panics
    ///
    /// As [`TestEmulator::start`] does, and when `options.endpoint` is set: every endpoint signs for its own address.
    pub async fn start(upstream: Url, credentials: CredentialStore, options: EmulatorOptions) -> Self {
        assert!(
            options.endpoint.is_none(),
            "a test cluster's endpoints sign for their own addresses"
        );
        let instances = Self::INSTANCES
            .map(|name| InstanceSpec::new(name, EndpointSpec::at(ANY_PORT)).expect("a valid instance name"))
            .to_vec();
        let layout = ClusterLayout::new(
            instances,
            Some(EndpointSpec::at(ANY_PORT)),
            Some(EndpointSpec::at(ANY_PORT)),
        )
        .expect("two instances");
        Self(TestEmulator::launch(Layout::Cluster(Box::new(layout)), upstream, credentials, options).await)
    }

    /// The URL that reaches `database` through the reader endpoint as `user`.
    #[must_use]
    pub fn reader_url(&self, user: &str, database: &str) -> String {
        self.0.url_at(self.endpoint_address(READER_ENDPOINT), user, database)
    }

    /// The URL that reaches `database` through the endpoint of the instance named `instance` as `user`.
    #[must_use]
    pub fn instance_url(&self, instance: &str, user: &str, database: &str) -> String {
        self.0.url_at(self.endpoint_address(instance), user, database)
    }
}

impl Deref for TestCluster {
    type Target = TestEmulator;

    fn deref(&self) -> &TestEmulator {
        &self.0
    }
}
