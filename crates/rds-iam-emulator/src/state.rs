//! What every client connection shares, whichever protocol it speaks: the TLS identity, the token verifier, the
//! upstream's `rds_iam` role and the counts. The protocol front ends depend on this module and the server on them,
//! never the other way round.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::iam_role::IamRole;
use crate::sigv4::Verifier;

/// How many log-ins the emulator has accepted and refused since it started: a valid token for a user that is not an
/// IAM user counts as refused.
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

/// What every connection needs to authenticate its client: the TLS identity, the verifier, who the IAM users are, the
/// counters, and how long the client may take.
pub(crate) struct Shared {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) verifier: Verifier,
    pub(crate) iam_role: IamRole,
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
    /// Whether `user` may log in with `token` as its password: the token is valid for it, and it is an IAM user (it
    /// has been granted `rds_iam` on the upstream). Counts and logs the outcome and why, never the token itself.
    pub(crate) async fn authenticate(&self, token: &str, user: &str, peer: SocketAddr) -> bool {
        let verified = match self.verifier.verify(token, user, SystemTime::now()) {
            Ok(verified) => verified,
            Err(rejection) => {
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, user, reason = %rejection, "token refused");
                return false;
            }
        };
        let access_key_id = verified.access_key_id;
        match self.iam_role.is_granted_to(user).await {
            Ok(true) => {
                self.counts.accepted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, user, access_key_id, "token accepted");
                return true;
            }
            Ok(false) => tracing::warn!(
                %peer,
                user,
                access_key_id,
                "refused: a valid token, but the user is not an IAM user (it needs GRANT rds_iam on the upstream)"
            ),
            // A check that cannot be made lets nobody in.
            Err(error) => tracing::error!(
                %peer,
                user,
                access_key_id,
                %error,
                "refused: cannot ask the upstream whether the user has been granted rds_iam"
            ),
        }
        self.counts.refused.fetch_add(1, Ordering::Relaxed);
        false
    }
}
