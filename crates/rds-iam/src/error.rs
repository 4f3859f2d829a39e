//! What can go wrong, as enums to match on. Messages name this crate's settings; each keeps its cause as
//! `source()`, so print the whole chain once, where the error is reported.

use crate::credential::TokenTarget;

/// A boxed cause from the AWS SDK or another credential source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why no credential could be had: a token that could not be signed, a secret that could not be fetched or does not
/// hold what a connection needs. The message says which; the cause is the source.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CredentialError {
    message: String,
    #[source]
    source: BoxError,
}

impl CredentialError {
    /// A failure described by `message` (what could not be had, and from where), caused by `source`.
    pub fn new(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            message: message.into(),
            source: source.into(),
        }
    }

    /// No IAM token could be signed for `target`.
    pub(crate) fn signing(target: &TokenTarget, source: impl Into<BoxError>) -> Self {
        Self::new(
            format!(
                "cannot sign an IAM token for {target} (AWS credentials come from the SDK's default chain: \
                 AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, SSO, web identity, ECS or EC2 \
                 instance roles)"
            ),
            source,
        )
    }
}

/// Why an IAM-authenticated pool could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No region was given, none is in the host name, and the AWS region chain has none.
    #[error(
        "no AWS region to sign IAM tokens for: set the region (IamPoolBuilder::region, or `region` in IamSettings), \
         use an RDS or DSQL host name (name.id.region.rds.amazonaws.com, cluster.dsql.region.on.aws), or set \
         AWS_REGION"
    )]
    NoRegion,
    /// A setting has a value that cannot work.
    #[error("`{setting}` {problem}")]
    InvalidSetting {
        /// The setting's name, as in [`crate::IamSettings`] (or `secret_id`, a secret's name or ARN).
        setting: &'static str,
        /// What is wrong with it and how to fix it.
        problem: String,
    },
    /// Credentials could travel without TLS: [`crate::TlsMode::Disable`], or [`crate::TlsMode::Prefer`], which
    /// falls back to no TLS when the server, or whoever answers in its place, declines it.
    #[error(
        "credentials (IAM tokens, passwords) must not travel without TLS (TlsMode::Disable, or Prefer, which falls back to none): use \
         TlsMode::VerifyFull (the default), or allow_without_tls for a local experiment"
    )]
    TlsRequired,
    /// Credentials would go to a server whose certificate or host name is not checked.
    #[error(
        "credentials (IAM tokens, passwords) must only be sent to a verified server, and TlsMode::{mode:?} does not check its certificate or \
         its name: use TlsMode::VerifyFull (the default), or allow_weaker_tls on purpose"
    )]
    TlsUnverified {
        /// The mode that was asked for.
        mode: crate::TlsMode,
    },
    /// The first credential could not be had: a token not signed, a secret not fetched.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The first connection was refused or failed.
    #[error("cannot connect to {endpoint}")]
    Connect {
        /// Where the pool connected: `host:port` (the tunnel's, when there is one).
        endpoint: String,
        #[source]
        source: sqlx::Error,
    },
    /// A MySQL server asked for the token in clear text while TLS was not required.
    #[error(
        "cannot connect to {endpoint}: the server asks for the IAM token in clear text (mysql_clear_password), which \
         is only sent over TLS; use TlsMode::VerifyFull (the default), VerifyCa or Require"
    )]
    CleartextNeedsTls {
        /// Where the pool connected.
        endpoint: String,
    },
    /// Looking up the endpoint of a cluster or instance failed.
    #[cfg(feature = "discovery")]
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
}
