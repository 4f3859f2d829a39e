//! Accepting clients on every endpoint, authenticating them with their token, and relaying their session to the
//! upstream server through the instance their endpoint reaches.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use url::Url;

use crate::cluster::{Admission, Cluster, Placement, Route};
use crate::control::{Control, ControlServer};
use crate::credentials::CredentialStore;
use crate::iam_role::{IamRole, IamRoleError};
use crate::layout::{CLUSTER_ENDPOINT, EndpointSpec, Layout, READER_ENDPOINT, SINGLE_INSTANCE};
use crate::mysql::{self, MySqlUpstream};
use crate::policy::Authorization;
use crate::postgres;
use crate::rate::PeakRate;
use crate::sigv4::Verifier;
use crate::state::{AuthCounts, ConflictInjector, Relay, Session, Shared};
use crate::stats::{EndpointCounters, EndpointInfo, EndpointView, Refusal};
use crate::sts::{IssuedLog, StsPassThrough, StsTap};
use crate::tls;

/// How the emulator is set up.
#[derive(Clone)]
pub struct Options {
    /// The endpoints to serve: one, or an Aurora cluster's.
    pub layout: Layout,
    /// The real server: `postgres://[user[:password]@]host:port[/database]` or
    /// `mysql://[user[:password]@]host:port` (also `mariadb://`); the scheme chooses the protocol the emulator speaks.
    /// Sessions open as the client's own user, so the upstream must let the emulator in without a password for those
    /// users (PostgreSQL trust authentication; a MySQL user without a password, or the one whose password the URL
    /// gives). The URL's user (`postgres` or `root` when it names none) is the emulator's own: it creates the role
    /// `rds_iam` when absent and reads who has been granted it (see [`IamRoleError`] for what that takes).
    pub upstream: Url,
    pub region: String,
    pub credentials: CredentialStore,
    pub tls_dir: PathBuf,
    pub max_token_age: Duration,
    /// An STS pass-through: temporary credentials issued through it are accepted too, bound to their session tokens.
    pub sts: Option<StsPassThrough>,
    /// How long a client may take to present itself: a database client from connecting until its upstream session
    /// is open (TLS, start-up, token), an STS or control API client to send its request's headers, and again its
    /// body.
    pub handshake_timeout: Duration,
    /// How many database connections may be open at once, authenticating or relaying, over all endpoints; clients
    /// beyond it are refused in their protocol's words for a full server.
    pub max_connections: usize,
    /// Who may connect as which database user; any known key as any user when `None`.
    pub authorization: Option<Authorization>,
    /// How many log-ins with a valid token each instance takes in any one second; beyond it they are refused with
    /// RDS's throttling message. No limit when `None`.
    pub max_auth_per_sec: Option<NonZeroU32>,
    /// Where the control API (failovers, statistics) listens; nowhere when `None`.
    pub control_listen: Option<SocketAddr>,
    /// Aurora DSQL instead of RDS: tokens for the service `dsql`, `DbConnectAdmin` for the role `admin` and
    /// `DbConnect` for others, signed for the endpoint's host without its port; any role of the upstream may log in
    /// (there is no `rds_iam`). PostgreSQL upstreams only, one endpoint, no policies.
    pub dsql: bool,
    /// With `dsql`, the share (0 to 1) of commits and autocommit writes answered with DSQL's OC000 conflict instead
    /// of being carried out; none when 0.
    pub occ_conflict_rate: f64,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            layout,
            upstream,
            region,
            credentials,
            tls_dir,
            max_token_age,
            sts,
            handshake_timeout,
            max_connections,
            authorization,
            max_auth_per_sec,
            control_listen,
            dsql,
            occ_conflict_rate,
        } = self;
        f.debug_struct("Options")
            .field("layout", layout)
            .field("upstream", &redacted(upstream).as_str())
            .field("region", region)
            .field("credentials", credentials)
            .field("tls_dir", tls_dir)
            .field("max_token_age", max_token_age)
            .field("sts", sts)
            .field("handshake_timeout", handshake_timeout)
            .field("max_connections", max_connections)
            .field("authorization", authorization)
            .field("max_auth_per_sec", max_auth_per_sec)
            .field("control_listen", control_listen)
            .field("dsql", dsql)
            .field("occ_conflict_rate", occ_conflict_rate)
            .finish()
    }
}

/// `url` with its password, if it has one, masked: for `Debug` output and error messages.
pub(crate) fn redacted(url: &Url) -> Url {
    let mut url = url.clone();
    if url.password().is_some() {
        // Fails only for URLs that cannot have a password, and this one has one.
        let _ = url.set_password(Some("***"));
    }
    url
}

/// [`Options::handshake_timeout`] unless told otherwise: ample for a client on the same machine or network, short
/// enough that silent connections do not pile up.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// [`Options::max_connections`] unless told otherwise: PostgreSQL's own default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;

/// How long a client refused for the connection limit has to read why; such clients hold no connection slot, so
/// they are given little time.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("--upstream {0} must be postgres://host:port or mysql://[user[:password]@]host:port")]
    Upstream(String),
    #[error("cannot listen for STS on {address}: {source}")]
    StsListen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for the control API on {address} (--control-listen): {source}")]
    ControlListen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A DSQL option that cannot work as given.
    #[error("{0}")]
    Dsql(&'static str),
    #[error(transparent)]
    IamRole(#[from] IamRoleError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The server behind the emulator, and so the protocol the emulator speaks.
#[derive(Debug)]
enum Upstream {
    Postgres { address: String },
    MySql(MySqlUpstream),
}

impl Upstream {
    fn parse(url: &Url) -> Result<Self, StartError> {
        let invalid = || StartError::Upstream(redacted(url).to_string());
        let host = url.host_str().ok_or_else(invalid)?;
        match url.scheme() {
            "postgres" | "postgresql" => Ok(Self::Postgres {
                address: format!("{host}:{}", url.port().unwrap_or(5432)),
            }),
            "mysql" | "mariadb" => Ok(Self::MySql(MySqlUpstream::from_url(url, host))),
            _ => Err(invalid()),
        }
    }

    fn address(&self) -> &str {
        match self {
            Self::Postgres { address } => address,
            Self::MySql(upstream) => &upstream.address,
        }
    }

    /// Tells a client that the emulator is full, as the upstream's engine would.
    async fn refuse_busy(&self, socket: TcpStream) -> std::io::Result<()> {
        match self {
            Self::Postgres { .. } => postgres::refuse_busy(socket).await,
            Self::MySql(_) => mysql::refuse_busy(socket).await,
        }
    }

    /// Tells a client that the instance is restarting, as the upstream's engine would.
    async fn refuse_starting_up(&self, shared: &Shared, socket: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
        match self {
            Self::Postgres { .. } => postgres::refuse_starting_up(shared, socket, peer).await,
            Self::MySql(_) => mysql::refuse_starting_up(socket).await,
        }
    }
}

/// One endpoint, bound: what it is, its socket, where it relays, and what its connections share.
struct Endpoint {
    info: EndpointInfo,
    listener: TcpListener,
    route: Route,
    shared: Arc<Shared>,
}

/// A bound emulator, ready to serve.
pub struct Emulator {
    endpoints: Vec<Endpoint>,
    ca_pem_path: PathBuf,
    upstream: Arc<Upstream>,
    cluster: Arc<Cluster>,
    counts: Arc<AuthCounts>,
    control: Control,
    control_server: Option<ControlServer>,
    sts: Option<StsTap>,
    max_connections: usize,
    conflicts: Option<Arc<ConflictInjector>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("endpoints", &self.endpoints())
            .field("upstream", &self.upstream.address())
            .field("control_addr", &self.control_addr())
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Binds every listening socket and creates the TLS identity (writing `ca.pem`).
    pub async fn bind(options: Options) -> Result<Self, StartError> {
        let upstream = Upstream::parse(&options.upstream)?;
        check_dsql(&options, &upstream)?;
        let (instances, planned) = plan(options.layout);
        let mut bound = Vec::with_capacity(planned.len());
        for (name, spec, route) in planned {
            let listener = TcpListener::bind(spec.listen)
                .await
                .map_err(|source| StartError::Listen {
                    address: spec.listen,
                    source,
                })?;
            let listen = listener.local_addr().map_err(|source| StartError::Listen {
                address: spec.listen,
                source,
            })?;
            let signing_name = spec.signing_name.unwrap_or_else(|| listen.to_string());
            let info = EndpointInfo {
                name,
                listen,
                signing_name,
            };
            bound.push((info, listener, route));
        }
        // At start, so that users can be granted the role before the first of them logs in.
        let iam_role = match &upstream {
            Upstream::Postgres { .. } => IamRole::postgres(&options.upstream).await?,
            Upstream::MySql(_) => IamRole::mysql(&options.upstream).await?,
        };
        let tls = tls::create(
            &certificate_names(bound.iter().map(|(info, ..)| info)),
            &options.tls_dir,
        )?;
        let verifier = Verifier::new(
            options.credentials,
            &options.region,
            &bound[0].0.signing_name,
            options.max_token_age,
        );
        let verifier = match options.authorization {
            Some(authorization) => verifier.authorizing(authorization),
            None => verifier,
        };
        let verifier = if options.dsql { verifier.for_dsql() } else { verifier };
        let conflicts =
            (options.occ_conflict_rate > 0.0).then(|| Arc::new(ConflictInjector::new(options.occ_conflict_rate)));
        let sts = match options.sts {
            Some(sts) => {
                let address = sts.listen;
                let tap = StsTap::bind(sts, verifier.clone(), options.handshake_timeout)
                    .await
                    .map_err(|source| StartError::StsListen { address, source })?;
                Some(tap)
            }
            None => None,
        };

        let counts = Arc::new(AuthCounts::default());
        let all_new_connections = Arc::new(PeakRate::default());
        let cluster = Arc::new(Cluster::new(instances, options.max_auth_per_sec));
        let mut endpoints = Vec::with_capacity(bound.len());
        let mut views = Vec::with_capacity(bound.len());
        for (info, listener, route) in bound {
            let counters = Arc::new(EndpointCounters::new(Arc::clone(&all_new_connections)));
            let shared = Arc::new(Shared {
                acceptor: tls.acceptor.clone(),
                verifier: verifier.for_endpoint(if options.dsql {
                    host_of(&info.signing_name)
                } else {
                    &info.signing_name
                }),
                iam_role: iam_role.clone(),
                counts: Arc::clone(&counts),
                stats: Arc::clone(&counters),
                handshake_timeout: options.handshake_timeout,
                conflicts: conflicts.clone(),
            });
            views.push(EndpointView {
                info: info.clone(),
                route,
                counters,
            });
            endpoints.push(Endpoint {
                info,
                listener,
                route,
                shared,
            });
        }
        let control = Control::new(Arc::clone(&cluster), views, Arc::clone(&counts), all_new_connections);
        let control_server = match options.control_listen {
            Some(address) => Some(
                ControlServer::bind(address, control.clone(), options.handshake_timeout)
                    .await
                    .map_err(|source| StartError::ControlListen { address, source })?,
            ),
            None => None,
        };
        Ok(Self {
            endpoints,
            ca_pem_path: tls.ca_pem_path,
            upstream: Arc::new(upstream),
            cluster,
            counts,
            control,
            control_server,
            sts,
            max_connections: options.max_connections,
            conflicts,
        })
    }

    /// The OCC conflict injector, with [`Options::occ_conflict_rate`]: it counts the conflicts injected, and stays
    /// readable while [`Emulator::run`] owns the emulator.
    #[must_use]
    pub fn conflicts(&self) -> Option<Arc<ConflictInjector>> {
        self.conflicts.clone()
    }

    /// Where the first endpoint listens: in single-endpoint mode the only one, in cluster mode the first
    /// instance's (see [`Emulator::endpoints`] for all of them).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoints[0].info.listen
    }

    /// The `host:port` tokens for the first endpoint must be signed for.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoints[0].info.signing_name
    }

    /// Every endpoint: the instances' first (the writer's, then the reader's), then the cluster endpoint and the
    /// reader endpoint when there are such.
    #[must_use]
    pub fn endpoints(&self) -> Vec<EndpointInfo> {
        self.endpoints.iter().map(|endpoint| endpoint.info.clone()).collect()
    }

    /// The CA certificate clients verify the emulator with.
    #[must_use]
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// Counters that stay readable while [`Emulator::run`] owns the emulator.
    #[must_use]
    pub fn counts(&self) -> Arc<AuthCounts> {
        Arc::clone(&self.counts)
    }

    /// Failovers and statistics, usable while [`Emulator::run`] owns the emulator.
    #[must_use]
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Where the control API listens, when it does.
    #[must_use]
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_server.as_ref().map(ControlServer::local_addr)
    }

    /// The upstream's `rds_iam` role, through the emulator's own connections.
    #[cfg(feature = "testing")]
    pub(crate) fn iam_role(&self) -> IamRole {
        self.endpoints[0].shared.iam_role.clone()
    }

    /// Where the STS pass-through listens, when there is one.
    #[must_use]
    pub fn sts_addr(&self) -> Option<SocketAddr> {
        self.sts.as_ref().map(StsTap::local_addr)
    }

    /// The credentials learned through the STS pass-through, readable while [`Emulator::run`] owns the emulator.
    #[must_use]
    pub fn issued(&self) -> Arc<IssuedLog> {
        self.sts.as_ref().map_or_else(Arc::default, StsTap::issued)
    }

    /// Serves clients on every endpoint (and the STS pass-through, and the control API) until the task is dropped.
    pub async fn run(self) {
        tracing::info!(
            upstream = self.upstream.address(),
            ca = %self.ca_pem_path.display(),
            "RDS IAM emulator ready"
        );
        // Semaphore::new panics above MAX_PERMITS, which is more than a process can have sockets anyway.
        let slots = Arc::new(Semaphore::new(self.max_connections.min(Semaphore::MAX_PERMITS)));
        // Dropping the set, with this future, stops every task in it.
        let mut tasks = JoinSet::new();
        for endpoint in self.endpoints {
            let serving = Serving {
                upstream: Arc::clone(&self.upstream),
                cluster: Arc::clone(&self.cluster),
                slots: Arc::clone(&slots),
                max_connections: self.max_connections,
            };
            tasks.spawn(serving.serve(endpoint));
        }
        if let Some(tap) = self.sts {
            tasks.spawn(tap.run());
        }
        if let Some(control) = self.control_server {
            tasks.spawn(control.run());
        }
        while let Some(ended) = tasks.join_next().await {
            if let Err(error) = ended {
                tracing::error!(%error, "an emulator task failed");
            }
        }
    }
}

/// The instances' names, and each endpoint's name, address and route, in the order [`Emulator::endpoints`] gives.
fn plan(layout: Layout) -> (Vec<String>, Vec<(String, EndpointSpec, Route)>) {
    match layout {
        Layout::Single(spec) => (
            vec![SINGLE_INSTANCE.to_owned()],
            vec![(SINGLE_INSTANCE.to_owned(), spec, Route::Instance(0))],
        ),
        Layout::Cluster(layout) => {
            let names = layout
                .instances()
                .iter()
                .map(|instance| instance.name().to_owned())
                .collect();
            let mut endpoints: Vec<_> = layout
                .instances()
                .iter()
                .enumerate()
                .map(|(index, instance)| {
                    (
                        instance.name().to_owned(),
                        instance.endpoint.clone(),
                        Route::Instance(index),
                    )
                })
                .collect();
            endpoints.extend(
                layout
                    .cluster
                    .map(|spec| (CLUSTER_ENDPOINT.to_owned(), spec, Route::Writer)),
            );
            endpoints.extend(
                layout
                    .reader
                    .map(|spec| (READER_ENDPOINT.to_owned(), spec, Route::Reader)),
            );
            (names, endpoints)
        }
    }
}

/// What DSQL mode needs of the other options: a PostgreSQL upstream (DSQL speaks PostgreSQL's protocol), one
/// endpoint, no policies (which name `rds-db:connect`), and a conflict rate between 0 and 1, only with DSQL.
fn check_dsql(options: &Options, upstream: &Upstream) -> Result<(), StartError> {
    if !(0.0..=1.0).contains(&options.occ_conflict_rate) {
        return Err(StartError::Dsql("--occ-conflict-rate must be between 0 and 1"));
    }
    if !options.dsql {
        return if options.occ_conflict_rate > 0.0 {
            Err(StartError::Dsql(
                "--occ-conflict-rate imitates Aurora DSQL's optimistic concurrency: add --dsql",
            ))
        } else {
            Ok(())
        };
    }
    if !matches!(upstream, Upstream::Postgres { .. }) {
        return Err(StartError::Dsql(
            "--dsql needs a postgres:// upstream: DSQL is PostgreSQL-compatible",
        ));
    }
    if !matches!(options.layout, Layout::Single(_)) {
        return Err(StartError::Dsql(
            "--dsql serves one endpoint, as a DSQL cluster has: leave out --instance",
        ));
    }
    if options.authorization.is_some() {
        return Err(StartError::Dsql(
            "--policy checks rds-db:connect, which DSQL tokens are not for: leave it out with --dsql",
        ));
    }
    Ok(())
}

/// The host of a `host:port` signing name (IPv6 in brackets, left without them), or the name itself when it has no
/// port: DSQL tokens name a host alone.
fn host_of(signing_name: &str) -> &str {
    let host = match signing_name.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|byte| byte.is_ascii_digit()) && !host.is_empty() => host,
        _ => signing_name,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The names the certificate must cover: `localhost`, and every endpoint's address and signing host, so that a
/// client verifies the emulator by whichever name it signs its token for.
fn certificate_names<'a>(endpoints: impl Iterator<Item = &'a EndpointInfo>) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    for endpoint in endpoints {
        names.push(endpoint.listen.ip().to_string());
        let signing_name = endpoint.signing_name.as_str();
        names.push(host_of(signing_name).to_owned());
    }
    names.sort();
    names.dedup();
    names
}

/// What every endpoint's accept loop shares.
struct Serving {
    upstream: Arc<Upstream>,
    cluster: Arc<Cluster>,
    /// Connections open at once, over all endpoints.
    slots: Arc<Semaphore>,
    max_connections: usize,
}

impl Serving {
    async fn serve(self, endpoint: Endpoint) {
        tracing::info!(
            name = endpoint.info.name,
            listen = %endpoint.info.listen,
            endpoint = endpoint.info.signing_name,
            "endpoint ready"
        );
        let route = endpoint.route;
        loop {
            match endpoint.listener.accept().await {
                Ok((socket, peer)) => {
                    let shared = Arc::clone(&endpoint.shared);
                    shared.stats.connection_accepted();
                    let upstream = Arc::clone(&self.upstream);
                    let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                        shared.stats.refused(Refusal::TooManyConnections);
                        tracing::warn!(%peer, limit = self.max_connections, "refused: too many connections");
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, upstream.refuse_busy(socket)).await;
                        });
                        continue;
                    };
                    let cluster = Arc::clone(&self.cluster);
                    tokio::spawn(async move {
                        if let Err(error) = connect(&shared, &upstream, &cluster, route, socket, peer).await {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                        drop(slot);
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves one connection through the instance its endpoint reaches now, or refuses it while the instances restart;
/// a restart ends it, whatever it is doing.
async fn connect(
    shared: &Shared,
    upstream: &Upstream,
    cluster: &Cluster,
    route: Route,
    socket: TcpStream,
    peer: SocketAddr,
) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    match cluster.admit(route) {
        Admission::StartingUp => {
            shared.stats.refused(Refusal::StartingUp);
            tracing::warn!(%peer, "refused: the instance is restarting (failover)");
            let refusal = upstream.refuse_starting_up(shared, socket, peer);
            tokio::time::timeout(shared.handshake_timeout, refusal)
                .await
                .unwrap_or(Ok(()))
        }
        Admission::Open(placement, mut restart) => {
            tokio::select! {
                served = serve(shared, upstream, socket, peer, &placement) => served,
                () = restart.happened() => {
                    tracing::info!(%peer, instance = placement.instance_name(), "connection closed: failover");
                    Ok(())
                }
            }
        }
    }
}

async fn serve(
    shared: &Shared,
    upstream: &Upstream,
    socket: TcpStream,
    peer: SocketAddr,
    placement: &Placement<'_>,
) -> std::io::Result<()> {
    let handshake = async {
        match upstream {
            Upstream::Postgres { address } => postgres::handshake(shared, address, socket, peer, placement).await,
            Upstream::MySql(upstream) => mysql::handshake(shared, upstream, socket, peer, placement).await,
        }
    };
    // A client that stalls before its session opens (or an upstream that does) would otherwise hold a connection
    // for ever; once the session is open, it may idle as long as the upstream lets it.
    match tokio::time::timeout(shared.handshake_timeout, handshake).await {
        Ok(Ok(Some(Session {
            mut client,
            mut upstream,
            relay,
        }))) => {
            shared.stats.session_opened();
            let _open = placement.session_opened();
            tracing::debug!(
                %peer,
                instance = placement.instance_name(),
                read_only = placement.read_only(),
                "session open"
            );
            match relay {
                Relay::Bytes => tokio::io::copy_bidirectional(&mut client, &mut upstream)
                    .await
                    .map(drop),
                Relay::MySqlReader => mysql::relay_reader(client, upstream).await,
                Relay::PostgresConflicts(injector) => postgres::relay_with_conflicts(client, upstream, &injector).await,
            }
        }
        Ok(result) => result.map(drop),
        Err(_) => {
            tracing::warn!(
                %peer,
                timeout_secs = shared.handshake_timeout.as_secs_f64(),
                "handshake timed out; connection closed"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "upstream-pass%2Fword";

    fn options(upstream: &str) -> Options {
        Options {
            layout: Layout::Single(EndpointSpec::at(SocketAddr::from(([127, 0, 0, 1], 0)))),
            upstream: upstream.parse().expect("a URL"),
            region: "us-east-1".to_owned(),
            credentials: CredentialStore::default(),
            tls_dir: std::env::temp_dir(),
            max_token_age: Duration::from_secs(900),
            sts: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            authorization: None,
            max_auth_per_sec: None,
            control_listen: None,
            dsql: false,
            occ_conflict_rate: 0.0,
        }
    }

    /// Whether `text` shows the password, encoded or not.
    fn shows_password(text: &str) -> bool {
        text.contains(PASSWORD) || text.contains("upstream-pass/word")
    }

    #[test]
    fn the_upstream_password_appears_in_no_debug_output() {
        let options = options(&format!("mysql://root:{PASSWORD}@127.0.0.1:3306"));
        let upstream = Upstream::parse(&options.upstream).expect("a MySQL upstream");

        for debug in [format!("{options:?}"), format!("{upstream:?}")] {
            assert!(!shows_password(&debug), "{debug}");
            assert!(debug.contains("127.0.0.1:3306"), "{debug}");
        }
    }

    #[test]
    fn the_certificate_covers_every_endpoints_address_and_signing_host() {
        let endpoint = |name: &str, listen: &str, signing_name: &str| EndpointInfo {
            name: name.to_owned(),
            listen: listen.parse().expect("an address"),
            signing_name: signing_name.to_owned(),
        };
        let endpoints = [
            endpoint("a", "127.0.0.1:5441", "127.0.0.1:5441"),
            endpoint("b", "[::1]:5442", "[::1]:5442"),
            endpoint(
                "cluster",
                "10.0.0.7:5440",
                "tasks.cluster-xyz.us-east-1.rds.amazonaws.com:5432",
            ),
            endpoint(
                "reader",
                "127.0.0.1:5443",
                "tasks.cluster-ro-xyz.us-east-1.rds.amazonaws.com:5432",
            ),
        ];

        assert_eq!(
            certificate_names(endpoints.iter()),
            [
                "10.0.0.7",
                "127.0.0.1",
                "::1",
                "localhost",
                "tasks.cluster-ro-xyz.us-east-1.rds.amazonaws.com",
                "tasks.cluster-xyz.us-east-1.rds.amazonaws.com",
            ]
        );
    }

    #[test]
    fn dsql_tokens_are_checked_against_the_host_alone() {
        assert_eq!(
            host_of("kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws"),
            "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws"
        );
        assert_eq!(
            host_of("kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws:5432"),
            "kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws"
        );
        assert_eq!(host_of("127.0.0.1:5433"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5433"), "::1");
    }

    #[tokio::test]
    async fn dsql_options_that_cannot_work_are_refused_before_anything_is_bound() {
        let mysql = Options {
            dsql: true,
            ..options("mysql://root@127.0.0.1:3306")
        };
        assert!(matches!(Emulator::bind(mysql).await, Err(StartError::Dsql(_))));
        let without_dsql = Options {
            occ_conflict_rate: 0.1,
            ..options("postgres://postgres@127.0.0.1:5432")
        };
        assert!(matches!(Emulator::bind(without_dsql).await, Err(StartError::Dsql(_))));
        let beyond_one = Options {
            dsql: true,
            occ_conflict_rate: 1.5,
            ..options("postgres://postgres@127.0.0.1:5432")
        };
        assert!(matches!(Emulator::bind(beyond_one).await, Err(StartError::Dsql(_))));
    }

    #[tokio::test]
    async fn the_upstream_password_appears_in_no_error() {
        let error = Emulator::bind(options(&format!("ftp://root:{PASSWORD}@127.0.0.1:3306")))
            .await
            .expect_err("not an upstream the emulator speaks to");

        let text = format!("{error} {error:?}");
        assert!(!shows_password(&text), "{text}");
        assert!(text.contains("ftp://root:***@127.0.0.1:3306"), "{text}");
    }
}
