//! A signed token, and the endpoint and user it is for.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
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

/// One signed token and when the server stops accepting it.
///
/// `Debug` never shows the token itself.
#[derive(Clone)]
pub struct IamToken {
    value: SecretString,
    issued_at: Instant,
    lifetime: Duration,
    expires_at: Instant,
}

impl fmt::Debug for IamToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamToken")
            .field("value", &"[REDACTED]")
            .field("age", &self.age())
            .field("expires_in", &self.expires_in())
            .finish()
    }
}

impl IamToken {
    /// A token signed at `issued_at` that the server accepts for `lifetime` (its `X-Amz-Expires`).
    #[must_use]
    pub fn new(value: SecretString, issued_at: Instant, lifetime: Duration) -> Self {
        Self {
            value,
            issued_at,
            lifetime,
            expires_at: issued_at + lifetime,
        }
    }

    /// The same token, refused from `deadline` on if that comes before its own expiry.
    ///
    /// A token signed with temporary credentials stops working when they expire, whatever `X-Amz-Expires` says, so
    /// signers cap a token's life at its credentials' expiry.
    #[must_use]
    pub fn valid_until_at_most(mut self, deadline: Instant) -> Self {
        self.expires_at = self.expires_at.min(deadline);
        self
    }

    /// The password to present.
    #[must_use]
    pub fn secret(&self) -> &SecretString {
        &self.value
    }

    /// When it was signed.
    #[must_use]
    pub fn issued_at(&self) -> Instant {
        self.issued_at
    }

    /// When the server stops accepting it.
    #[must_use]
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// The lifetime it was signed for, before any cap.
    #[must_use]
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// How long ago it was signed.
    #[must_use]
    pub fn age(&self) -> Duration {
        self.issued_at.elapsed()
    }

    /// Time left before the server refuses it; `None` once it has expired.
    #[must_use]
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_at
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }
}
