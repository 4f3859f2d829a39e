//! Accepting clients, authenticating them with their token, and relaying their session to the upstream server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use url::Url;

use crate::credentials::CredentialStore;
use crate::iam_role::{IamRole, IamRoleError};
use crate::mysql::{self, MySqlUpstream};
use crate::policy::Authorization;
use crate::postgres;
use crate::sigv4::Verifier;
use crate::state::{AuthCounts, Session, Shared};
use crate::sts::{IssuedLog, StsPassThrough, StsTap};
use crate::tls;

/// How the emulator is set up.
#[derive(Clone)]
pub struct Options {
    pub listen: SocketAddr,
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
    /// The `host:port` tokens must be signed for; the address actually listened on when `None`.
    pub endpoint: Option<String>,
    pub max_token_age: Duration,
    /// An STS pass-through: temporary credentials issued through it are accepted too, bound to their session tokens.
    pub sts: Option<StsPassThrough>,
    /// How long a client may take to present itself: a database client from connecting until its upstream session
    /// is open (TLS, start-up, token), an STS client to send its request's headers, and again its body.
    pub handshake_timeout: Duration,
    /// How many database connections may be open at once, authenticating or relaying; clients beyond it are refused
    /// in their protocol's words for a full server.
    pub max_connections: usize,
    /// Who may connect as which database user; any known key as any user when `None`.
    pub authorization: Option<Authorization>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            listen,
            upstream,
            region,
            credentials,
            tls_dir,
            endpoint,
            max_token_age,
            sts,
            handshake_timeout,
            max_connections,
            authorization,
        } = self;
        f.debug_struct("Options")
            .field("listen", listen)
            .field("upstream", &redacted(upstream).as_str())
            .field("region", region)
            .field("credentials", credentials)
            .field("tls_dir", tls_dir)
            .field("endpoint", endpoint)
            .field("max_token_age", max_token_age)
            .field("sts", sts)
            .field("handshake_timeout", handshake_timeout)
            .field("max_connections", max_connections)
            .field("authorization", authorization)
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
}

/// A bound emulator, ready to serve.
pub struct Emulator {
    listener: TcpListener,
    local_addr: SocketAddr,
    ca_pem_path: PathBuf,
    shared: Arc<Shared>,
    upstream: Arc<Upstream>,
    sts: Option<StsTap>,
    max_connections: usize,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("local_addr", &self.local_addr)
            .field("endpoint", &self.shared.verifier.endpoint())
            .field("upstream", &self.upstream.address())
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Binds the listening socket and creates the TLS identity (writing `ca.pem`).
    pub async fn bind(options: Options) -> Result<Self, StartError> {
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|source| StartError::Listen {
                address: options.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
            address: options.listen,
            source,
        })?;
        let upstream = Upstream::parse(&options.upstream)?;
        // At start, so that users can be granted the role before the first of them logs in.
        let iam_role = match &upstream {
            Upstream::Postgres { .. } => IamRole::postgres(&options.upstream).await?,
            Upstream::MySql(_) => IamRole::mysql(&options.upstream).await?,
        };
        let endpoint = options.endpoint.unwrap_or_else(|| local_addr.to_string());
        let endpoint_host = endpoint.rsplit_once(':').map_or(endpoint.as_str(), |(host, _)| host);
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            local_addr.ip().to_string(),
        ];
        names.push(endpoint_host.trim_start_matches('[').trim_end_matches(']').to_owned());
        names.sort();
        names.dedup();
        let tls = tls::create(&names, &options.tls_dir)?;
        let verifier = Verifier::new(options.credentials, &options.region, &endpoint, options.max_token_age);
        let verifier = match options.authorization {
            Some(authorization) => verifier.authorizing(authorization),
            None => verifier,
        };
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
        Ok(Self {
            listener,
            local_addr,
            ca_pem_path: tls.ca_pem_path,
            shared: Arc::new(Shared {
                acceptor: tls.acceptor,
                verifier,
                iam_role,
                counts: Arc::default(),
                handshake_timeout: options.handshake_timeout,
            }),
            upstream: Arc::new(upstream),
            sts,
            max_connections: options.max_connections,
        })
    }

    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The CA certificate clients verify the emulator with.
    #[must_use]
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// The `host:port` tokens must be signed for.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        self.shared.verifier.endpoint()
    }

    /// Counters that stay readable while [`Emulator::run`] owns the emulator.
    #[must_use]
    pub fn counts(&self) -> Arc<AuthCounts> {
        Arc::clone(&self.shared.counts)
    }

    /// The upstream's `rds_iam` role, through the emulator's own connections.
    #[cfg(feature = "testing")]
    pub(crate) fn iam_role(&self) -> IamRole {
        self.shared.iam_role.clone()
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

    /// Serves clients (and the STS pass-through) until the task is dropped.
    pub async fn run(mut self) {
        match self.sts.take() {
            Some(tap) => {
                tokio::join!(self.serve_clients(), tap.run());
            }
            None => self.serve_clients().await,
        }
    }

    async fn serve_clients(self) {
        tracing::info!(
            listen = %self.local_addr,
            endpoint = self.shared.verifier.endpoint(),
            upstream = self.upstream.address(),
            ca = %self.ca_pem_path.display(),
            "RDS IAM emulator ready"
        );
        // Semaphore::new panics above MAX_PERMITS, which is more than a process can have sockets anyway.
        let slots = Arc::new(Semaphore::new(self.max_connections.min(Semaphore::MAX_PERMITS)));
        loop {
            match self.listener.accept().await {
                Ok((socket, peer)) => {
                    let shared = Arc::clone(&self.shared);
                    let upstream = Arc::clone(&self.upstream);
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        tracing::warn!(%peer, limit = self.max_connections, "refused: too many connections");
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, upstream.refuse_busy(socket)).await;
                        });
                        continue;
                    };
                    tokio::spawn(async move {
                        if let Err(error) = serve(&shared, &upstream, socket).await {
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

async fn serve(shared: &Shared, upstream: &Upstream, socket: TcpStream) -> std::io::Result<()> {
    let peer = socket.peer_addr()?;
    socket.set_nodelay(true)?;
    let handshake = async {
        match upstream {
            Upstream::Postgres { address } => postgres::handshake(shared, address, socket, peer).await,
            Upstream::MySql(upstream) => mysql::handshake(shared, upstream, socket, peer).await,
        }
    };
    // A client that stalls before its session opens (or an upstream that does) would otherwise hold a connection
    // for ever; once the session is open, it may idle as long as the upstream lets it.
    match tokio::time::timeout(shared.handshake_timeout, handshake).await {
        Ok(Ok(Some(Session {
            mut client,
            mut upstream,
        }))) => tokio::io::copy_bidirectional(&mut client, &mut upstream)
            .await
            .map(drop),
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
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: upstream.parse().expect("a URL"),
            region: "us-east-1".to_owned(),
            credentials: CredentialStore::default(),
            tls_dir: std::env::temp_dir(),
            endpoint: None,
            max_token_age: Duration::from_secs(900),
            sts: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            authorization: None,
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
