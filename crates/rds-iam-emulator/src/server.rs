//! Accepting clients, authenticating them with their token, and relaying their session to the upstream server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use url::Url;

use crate::credentials::CredentialStore;
use crate::protocol::{self, Initial};
use crate::sigv4::{Rejection, Verifier};
use crate::tls;

/// SQLSTATE `invalid_password`: what RDS answers for a token it does not accept.
const INVALID_PASSWORD: &str = "28P01";
/// SQLSTATE `invalid_authorization_specification`: refused before any password was asked for.
const INVALID_AUTHORIZATION: &str = "28000";

/// How the emulator is set up.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    /// The real server, `postgres://host:port`. Sessions open as the client's own user, so the upstream must let the
    /// emulator in without a password for those users (trust authentication for its address).
    pub upstream: Url,
    pub region: String,
    pub credentials: CredentialStore,
    pub tls_dir: PathBuf,
    /// The `host:port` tokens must be signed for; the address actually listened on when `None`.
    pub endpoint: Option<String>,
    pub max_token_age: Duration,
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("--upstream {0} must be postgres://host:port")]
    Upstream(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// How many tokens the emulator has accepted and refused since it started.
#[derive(Debug, Default)]
pub struct AuthCounts {
    accepted: AtomicU64,
    refused: AtomicU64,
}

impl AuthCounts {
    #[must_use]
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

struct Shared {
    counts: Arc<AuthCounts>,
    verifier: Verifier,
    upstream: String,
    acceptor: TlsAcceptor,
}

/// A bound emulator, ready to serve.
pub struct Emulator {
    listener: TcpListener,
    local_addr: SocketAddr,
    ca_pem_path: PathBuf,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("local_addr", &self.local_addr)
            .field("endpoint", &self.shared.verifier.endpoint())
            .field("upstream", &self.shared.upstream)
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
        let upstream = match (options.upstream.scheme(), options.upstream.host_str()) {
            ("postgres" | "postgresql", Some(host)) => {
                format!("{host}:{}", options.upstream.port().unwrap_or(5432))
            }
            _ => return Err(StartError::Upstream(options.upstream.to_string())),
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
        Ok(Self {
            listener,
            local_addr,
            ca_pem_path: tls.ca_pem_path,
            shared: Arc::new(Shared {
                counts: Arc::default(),
                verifier,
                upstream,
                acceptor: tls.acceptor,
            }),
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

    /// Serves clients until the task is dropped.
    pub async fn run(self) {
        tracing::info!(
            listen = %self.local_addr,
            endpoint = self.shared.verifier.endpoint(),
            upstream = self.shared.upstream,
            ca = %self.ca_pem_path.display(),
            "RDS IAM emulator ready"
        );
        loop {
            match self.listener.accept().await {
                Ok((socket, peer)) => {
                    let shared = Arc::clone(&self.shared);
                    tokio::spawn(async move {
                        if let Err(error) = serve(&shared, socket).await {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
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

async fn serve(shared: &Shared, mut socket: TcpStream) -> std::io::Result<()> {
    let peer = socket.peer_addr()?;
    loop {
        match protocol::read_initial(&mut socket).await? {
            Initial::GssEncRequest => socket.write_all(b"N").await?,
            Initial::SslRequest => {
                socket.write_all(b"S").await?;
                let mut tls = shared.acceptor.accept(socket).await?;
                return match protocol::read_initial(&mut tls).await? {
                    Initial::Startup(parameters) => authenticate_and_relay(shared, tls, parameters, peer).await,
                    Initial::Cancel(request) => forward_cancel(shared, &request).await,
                    Initial::SslRequest | Initial::GssEncRequest => Ok(()),
                };
            }
            Initial::Cancel(request) => return forward_cancel(shared, &request).await,
            Initial::Startup(parameters) => {
                let user = parameters.get("user").map_or("", String::as_str);
                tracing::warn!(%peer, user, "refused: the client did not use TLS");
                return protocol::send_fatal(
                    &mut socket,
                    INVALID_AUTHORIZATION,
                    &format!(
                        "IAM authentication for user \"{user}\" requires an SSL connection: connect with sslmode=verify-full"
                    ),
                )
                .await;
            }
        }
    }
}

async fn authenticate_and_relay<S>(
    shared: &Shared,
    mut client: S,
    parameters: std::collections::BTreeMap<String, String>,
    peer: SocketAddr,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(user) = parameters.get("user").cloned() else {
        return protocol::send_fatal(&mut client, INVALID_AUTHORIZATION, "no PostgreSQL user name specified").await;
    };
    let token = protocol::request_password(&mut client).await?;
    match shared.verifier.verify(&token, &user, SystemTime::now()) {
        Ok(verified) => {
            shared.counts.accepted.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, user, access_key_id = verified.access_key_id, "token accepted");
        }
        Err(rejection) => {
            shared.counts.refused.fetch_add(1, Ordering::Relaxed);
            log_rejection(peer, &user, &rejection);
            return protocol::send_fatal(
                &mut client,
                INVALID_PASSWORD,
                &format!("PAM authentication failed for user \"{user}\""),
            )
            .await;
        }
    }

    let mut upstream = match TcpStream::connect(&shared.upstream).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::error!(upstream = shared.upstream, %error, "upstream unreachable");
            return protocol::send_fatal(&mut client, "08006", "the upstream database server is unreachable").await;
        }
    };
    upstream.set_nodelay(true)?;
    upstream.write_all(&protocol::startup_message(&parameters)).await?;
    loop {
        let message = protocol::read_message(&mut upstream, 1 << 20).await?;
        match message.authentication_code() {
            Some(0) => {
                client.write_all(&message.to_bytes()).await?;
                break;
            }
            Some(code) => {
                tracing::error!(
                    user,
                    code,
                    "the upstream server asks for a password; give the emulator trust auth"
                );
                return protocol::send_fatal(
                    &mut client,
                    INVALID_AUTHORIZATION,
                    "the upstream server asked the emulator for a password; configure trust authentication for it",
                )
                .await;
            }
            // An error from upstream (unknown role or database, ...) is the client's to read, verbatim.
            None => {
                client.write_all(&message.to_bytes()).await?;
                if message.tag == b'E' {
                    return client.flush().await;
                }
            }
        }
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream)
        .await
        .map(drop)
}

/// Cancel requests carry the upstream's own process id and key (the client learnt them from the relayed
/// BackendKeyData), so they go to the upstream unchanged.
async fn forward_cancel(shared: &Shared, request: &[u8]) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(&shared.upstream).await?;
    upstream.write_all(request).await?;
    upstream.shutdown().await
}

fn log_rejection(peer: SocketAddr, user: &str, rejection: &Rejection) {
    tracing::warn!(%peer, user, reason = %rejection, "token refused");
}
