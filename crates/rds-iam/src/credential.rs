//! What a new connection presents to log in: an IAM token, or a password with the user it belongs to; and the
//! endpoint and user a token is signed for.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

/// The endpoint and database user a token is signed for.
///
/// The host and port are the ones the server is known by (the RDS endpoint), which through a tunnel or proxy are not
/// the ones connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTarget {
    /// The endpoint's host name, such as `tasks.cluster-c9di9qmu8xqw.eu-west-1.rds.amazonaws.com`.
    pub host: String,
    /// The endpoint's port.
    pub port: u16,
    /// The database user, as the server knows it (not percent-encoded).
    pub user: String,
}

impl fmt::Display for TokenTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

/// What new connections present as their password, and when it is due for replacement: an IAM token, which the
/// server refuses once it expires, or a password (from Secrets Manager, say), which works until someone changes it
/// and is fetched again on an interval.
///
/// `Debug` never shows the secret.
#[derive(Clone)]
pub struct Credential {
    user: Option<String>,
    secret: SecretString,
    issued_at: Instant,
    renewal: Renewal,
}

/// An IAM token: a [`Credential`] that expires, presented as the password of the user it was signed for.
pub type IamToken = Credential;

/// When a credential is due for replacement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Renewal {
    /// Refused by the server from `expires_at` on: a token signed to live `lifetime`, perhaps cut short by the
    /// credentials it was signed with.
    Expires { lifetime: Duration, expires_at: Instant },
    /// Valid until it is changed on the server, so fetched again every so often.
    Every(Duration),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Credential");
        debug
            .field("user", &self.user)
            .field("secret", &"[REDACTED]")
            .field("age", &self.age());
        match self.renewal {
            Renewal::Expires { .. } => debug.field("expires_in", &self.expires_in()),
            Renewal::Every(interval) => debug.field("renew_every", &interval),
        };
        debug.finish()
    }
}

impl Credential {
    /// A token signed at `issued_at` that the server accepts for `lifetime` (its `X-Amz-Expires`), for the user it
    /// names.
    #[must_use]
    pub fn token(value: SecretString, issued_at: Instant, lifetime: Duration) -> Self {
        Self {
            user: None,
            secret: value,
            issued_at,
            renewal: Renewal::Expires {
                lifetime,
                expires_at: issued_at + lifetime,
            },
        }
    }

    /// `user`'s password, fetched at `fetched_at`, to be fetched again `renew_every` later: the server accepts it
    /// until it is changed there, which is when its source (a rotated secret) has a new one.
    #[must_use]
    pub fn password(
        user: impl Into<String>,
        password: SecretString,
        fetched_at: Instant,
        renew_every: Duration,
    ) -> Self {
        Self {
            user: Some(user.into()),
            secret: password,
            issued_at: fetched_at,
            renewal: Renewal::Every(renew_every),
        }
    }

    /// The same token, refused from `deadline` on if that comes before its own expiry; a password is unchanged.
    ///
    /// A token signed with temporary credentials stops working when they expire, whatever `X-Amz-Expires` says, so
    /// signers cap a token's life at its credentials' expiry.
    #[must_use]
    pub fn valid_until_at_most(mut self, deadline: Instant) -> Self {
        if let Renewal::Expires { expires_at, .. } = &mut self.renewal {
            *expires_at = (*expires_at).min(deadline);
        }
        self
    }

    /// The password to present.
    #[must_use]
    pub fn secret(&self) -> &SecretString {
        &self.secret
    }

    /// The user to log in as, when the credential names one (a secret's user, which rotation may change); `None` for
    /// a token, which is for the user the connect options name.
    #[must_use]
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// When it was signed or fetched.
    #[must_use]
    pub fn issued_at(&self) -> Instant {
        self.issued_at
    }

    /// When the server stops accepting it; `None` for a password, which has no expiry of its own.
    #[must_use]
    pub fn expires_at(&self) -> Option<Instant> {
        match self.renewal {
            Renewal::Expires { expires_at, .. } => Some(expires_at),
            Renewal::Every(_) => None,
        }
    }

    /// How long ago it was signed or fetched.
    #[must_use]
    pub fn age(&self) -> Duration {
        self.issued_at.elapsed()
    }

    /// Time left before the server refuses it: `None` once it has expired, [`Duration::MAX`] for a password, which
    /// does not expire by time.
    #[must_use]
    pub fn expires_in(&self) -> Option<Duration> {
        match self.expires_at() {
            Some(expires_at) => expires_at
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero()),
            None => Some(Duration::MAX),
        }
    }

    pub(crate) fn renewal(&self) -> Renewal {
        self.renewal
    }

    /// Whether both log in the same way: the same user and secret.
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.user == other.user && self.secret.expose_secret() == other.secret.expose_secret()
    }
}
