//! What every client connection shares, whichever protocol it speaks: the TLS identity, the token verifier and the
//! counts. The protocol front ends depend on this module and the server on them, never the other way round.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::sigv4::Verifier;

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

/// What every connection needs to authenticate its client: the TLS identity, the verifier, the counters, and how
/// long the client may take.
pub(crate) struct Shared {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) verifier: Verifier,
    pub(crate) counts: Arc<AuthCounts>,
    /// From accepting the connection to the upstream session being open.
    pub(crate) handshake_timeout: Duration,
}

/// An authenticated client and its open session on the upstream server, ready to be relayed.
pub(crate) struct Session {
    pub(crate) client: TlsStream<TcpStream>,
    pub(crate) upstream: TcpStream,
}

impl Shared {
    /// Verifies `token` as `user`'s password, counting and logging the outcome (never the token itself).
    pub(crate) fn check_token(&self, token: &str, user: &str, peer: SocketAddr) -> bool {
        match self.verifier.verify(token, user, SystemTime::now()) {
            Ok(verified) => {
                self.counts.accepted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, user, access_key_id = verified.access_key_id, "token accepted");
                true
            }
            Err(rejection) => {
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, user, reason = %rejection, "token refused");
                false
            }
        }
    }
}
