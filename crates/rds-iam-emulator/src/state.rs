//! What every client connection to an endpoint shares, whichever protocol it speaks: the TLS identity, the
//! endpoint's token verifier, the upstream's `rds_iam` role and the counts. The protocol front ends depend on this
//! module and the server on them, never the other way round.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::iam_role::IamRole;
use crate::rate::RateLimit;
use crate::sigv4::{TokenKind, Verifier};
use crate::stats::{EndpointCounters, Refusal};

/// How many log-ins the emulator has accepted and refused since it started: a valid token for a user that is not an
/// IAM user, or over the rate of authentications, counts as refused.
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

/// What every connection to one endpoint needs to authenticate its client: the TLS identity, the endpoint's
/// verifier, who the IAM users are, the counters, and how long the client may take.
pub(crate) struct Shared {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) verifier: Verifier,
    pub(crate) iam_role: IamRole,
    pub(crate) counts: Arc<AuthCounts>,
    /// The endpoint's own.
    pub(crate) stats: Arc<EndpointCounters>,
    /// From accepting the connection to the upstream session being open.
    pub(crate) handshake_timeout: Duration,
    /// With `--occ-conflict-rate`, the share of commits answered with a conflict instead; `None` relays bytes as
    /// they are.
    pub(crate) conflicts: Option<Arc<ConflictInjector>>,
}

/// Aurora DSQL's optimistic concurrency, imitated: a share of the commits and autocommit writes a session sends are
/// answered with SQLSTATE OC000 instead of being carried out, and counted.
#[derive(Debug)]
pub struct ConflictInjector {
    /// The share, as the bits of an `f64`, so that a test can change it while sessions run.
    rate: AtomicU64,
    injected: AtomicU64,
}

impl ConflictInjector {
    /// Conflicts for `rate` (0 to 1) of the commits.
    #[must_use]
    pub fn new(rate: f64) -> Self {
        Self {
            rate: AtomicU64::new(rate.to_bits()),
            injected: AtomicU64::new(0),
        }
    }

    /// Conflicts for `rate` (0 to 1) of the commits from now on, in every session.
    pub fn set_rate(&self, rate: f64) {
        self.rate.store(rate.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// Draws whether this commit conflicts, counting it when it does.
    pub(crate) fn conflicts(&self) -> bool {
        let conflict = fastrand::f64() < f64::from_bits(self.rate.load(Ordering::Relaxed));
        if conflict {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        conflict
    }

    /// How many commits have been answered with a conflict so far.
    #[must_use]
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }
}

/// An authenticated client and its open session on the upstream server, ready to be relayed.
pub(crate) struct Session {
    pub(crate) client: TlsStream<TcpStream>,
    pub(crate) upstream: TcpStream,
    pub(crate) relay: Relay,
}

/// How a session's bytes are relayed.
#[derive(Debug, Clone)]
pub(crate) enum Relay {
    /// As they are, both ways.
    Bytes,
    /// A MySQL session on a reader, whose read-only errors are turned into Aurora MySQL's.
    MySqlReader,
    /// A PostgreSQL session read message by message, whose commits may be answered with DSQL's conflict.
    PostgresConflicts(Arc<ConflictInjector>),
}

/// What became of a log-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accepted,
    /// The token, the policy, or a user that is not an IAM user: refused with the engine's authentication failure.
    Refused,
    /// A valid token over the instance's rate of authentications: refused with RDS's throttling message.
    Throttled,
}

impl Shared {
    /// Whether `user` may log in with `token` as its password: the token is valid for it, the instance's rate of
    /// authentications (`limit`) allows one more, and, for RDS, it is an IAM user (it has been granted `rds_iam` on
    /// the upstream; DSQL has no such role: every role logs in with a token, and one the upstream lacks is refused
    /// there). Counts and logs the outcome and why, never the token itself.
    pub(crate) async fn authenticate(
        &self,
        token: &str,
        user: &str,
        peer: SocketAddr,
        limit: Option<&RateLimit>,
    ) -> Verdict {
        let verified = match self.verifier.verify(token, user, SystemTime::now()) {
            Ok(verified) => verified,
            Err(rejection) => {
                self.refuse(Refusal::Unauthorized);
                tracing::warn!(%peer, user, reason = %rejection, "token refused");
                return Verdict::Refused;
            }
        };
        let access_key_id = verified.access_key_id;
        if limit.is_some_and(|limit| !limit.try_acquire(tokio::time::Instant::now())) {
            self.refuse(Refusal::Throttled);
            tracing::warn!(%peer, user, access_key_id, "refused: too many authentications per second (--max-auth-per-sec)");
            return Verdict::Throttled;
        }
        if self.verifier.kind() == TokenKind::Dsql {
            self.counts.accepted.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, user, access_key_id, "DSQL token accepted");
            return Verdict::Accepted;
        }
        match self.iam_role.is_granted_to(user).await {
            Ok(true) => {
                self.counts.accepted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, user, access_key_id, "token accepted");
                return Verdict::Accepted;
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
        self.refuse(Refusal::Unauthorized);
        Verdict::Refused
    }

    fn refuse(&self, refusal: Refusal) {
        self.counts.refused.fetch_add(1, Ordering::Relaxed);
        self.stats.refused(refusal);
    }
}
