//! Where credentials come from: the [`CredentialSource`] seam, and its implementation that signs RDS IAM tokens,
//! [`RdsTokenSigner`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config as TokenConfig};
use aws_sdk_rds::config::Region;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::SecretString;
use tokio::time::Instant;

use crate::credential::{Credential, IamToken, TokenTarget};
use crate::error::{CredentialError, Error};
use crate::region::region_from_host;
use crate::settings::{AssumeRole, TokenLifetime};

/// A future a [`CredentialSource`] returns.
pub type CredentialFuture<'a> = Pin<Box<dyn Future<Output = Result<Credential, CredentialError>> + Send + 'a>>;

/// Where a pool's credentials come from: [`RdsTokenSigner`] signs IAM tokens with AWS credentials,
/// `SecretsManagerSource` (feature `secrets-manager`) fetches a password from Secrets Manager, and a test double or
/// another token service can plug in the same way.
///
/// The [`TokenRefresher`](crate::TokenRefresher) calls it when a credential is due, never on the request path, and
/// never twice at once. `Display` says what it provides, for logs: `IAM tokens for app@db.example:5432`.
pub trait CredentialSource: fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// A fresh credential. A token's expiry is capped at the signing credentials' own, when they have one.
    fn fetch(&self) -> CredentialFuture<'_>;
}

impl<S: CredentialSource + ?Sized> CredentialSource for Box<S> {
    fn fetch(&self) -> CredentialFuture<'_> {
        (**self).fetch()
    }
}

/// Characters RFC 3986 leaves unencoded; everything else in a user name is percent-encoded, because the SDK copies the
/// name into the URL it signs as it is, where `@`, `+`, `&` or a space would change its meaning.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The SDK's default configuration (credential chain, `AWS_ENDPOINT_URL`, ...), in `region` when it is known.
pub async fn load_aws_config(region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    loader.load().await
}

/// Signs RDS IAM tokens (`rds-db:connect`) with `aws-sdk-rds`'s generator and whatever credentials the AWS
/// configuration resolves: environment, profiles (SSO, `role_arn`, `credential_process`), web identity, ECS, EC2.
#[derive(Debug)]
pub struct RdsTokenSigner {
    sdk_config: SdkConfig,
    region: Region,
    target: TokenTarget,
    lifetime: TokenLifetime,
}

impl RdsTokenSigner {
    /// Resolves the region (`region`, then the host name, then the AWS region chain) and loads the default
    /// credential chain, unless `sdk_config` is given.
    pub async fn new(
        target: TokenTarget,
        region: Option<String>,
        lifetime: TokenLifetime,
        sdk_config: Option<SdkConfig>,
    ) -> Result<Self, Error> {
        let (sdk_config, region) = resolve_region(&target.host, region, sdk_config).await?;
        Ok(Self {
            sdk_config,
            region,
            target,
            lifetime,
        })
    }

    /// Signs with `role`'s temporary credentials from now on, assumed with the credentials configured so far (STS in
    /// the token's region, at `AWS_ENDPOINT_URL_STS` or `AWS_ENDPOINT_URL` when set). Each token is signed with
    /// freshly assumed credentials, so a withdrawn trust shows at the next renewal rather than an hour later.
    pub async fn assuming(mut self, role: &AssumeRole) -> Self {
        let mut builder = AssumeRoleProvider::builder(role.arn.as_str())
            .session_name(role.session_name.as_str())
            .region(self.region.clone())
            .configure(&self.sdk_config);
        if let Some(external_id) = &role.external_id {
            builder = builder.external_id(external_id);
        }
        let provider = builder.build().await;
        tracing::info!(role = %role.arn, "IAM tokens are signed with the assumed role's credentials");
        self.sdk_config = self
            .sdk_config
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        self
    }

    /// The region tokens are signed for.
    #[must_use]
    pub fn region(&self) -> &str {
        self.region.as_ref()
    }

    /// The endpoint and user tokens are signed for.
    #[must_use]
    pub fn target(&self) -> &TokenTarget {
        &self.target
    }

    /// Signs a fresh token: resolves the credentials (no network call unless they must be fetched or renewed) and
    /// signs locally.
    pub async fn sign(&self) -> Result<IamToken, CredentialError> {
        let issued_at = start_of_second();
        let fail = |source| CredentialError::signing(&self.target, source);
        let (credentials, credentials_expire_in) = signing_credentials(&self.sdk_config).await.map_err(fail)?;
        let config = TokenConfig::builder()
            .hostname(self.target.host.clone())
            .port(u64::from(self.target.port))
            .username(utf8_percent_encode(&self.target.user, QUERY_VALUE).to_string())
            .region(self.region.clone())
            .expires_in(self.lifetime.get().as_secs())
            .credentials(credentials)
            .build()
            .map_err(fail)?;
        let token = AuthTokenGenerator::new(config)
            .auth_token(&self.sdk_config)
            .await
            .map_err(fail)?;
        Ok(capped_token(
            token.as_str(),
            issued_at,
            self.lifetime,
            credentials_expire_in,
        ))
    }
}

/// The SDK configuration to sign with and the region to sign for: `region`, else the one in `host`'s name, else the
/// configuration's (loaded from the default chain when `sdk_config` is `None`). Never a default region.
pub(crate) async fn resolve_region(
    host: &str,
    region: Option<String>,
    sdk_config: Option<SdkConfig>,
) -> Result<(SdkConfig, Region), Error> {
    let known_region = region.or_else(|| region_from_host(host).map(str::to_owned));
    let sdk_config = match sdk_config {
        Some(config) => config,
        None => load_aws_config(known_region.as_deref()).await,
    };
    let region = known_region
        .map(Region::new)
        .or_else(|| sdk_config.region().cloned())
        .ok_or(Error::NoRegion)?;
    Ok((sdk_config, region))
}

/// When a token signed now counts as issued: X-Amz-Date has whole seconds, and servers count the lifetime from it,
/// so the token expires up to a second before `now + lifetime`; count from the start of the current second.
pub(crate) fn start_of_second() -> Instant {
    let into_second = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|since_epoch| Duration::from_nanos(u64::from(since_epoch.subsec_nanos())))
        .unwrap_or_default();
    Instant::now().checked_sub(into_second).unwrap_or_else(Instant::now)
}

/// The credentials to sign with, and how long they have left when they expire. Resolved before signing rather than
/// inside the SDK's generator, so that their expiry is known and caps the token's.
pub(crate) async fn signing_credentials(
    sdk_config: &SdkConfig,
) -> Result<(Credentials, Option<Duration>), crate::error::BoxError> {
    let provider = sdk_config
        .credentials_provider()
        .ok_or("no credentials provider is configured")?;
    let credentials = provider.provide_credentials().await?;
    let expire_in = credentials
        .expiry()
        .map(|expiry| expiry.duration_since(SystemTime::now()).unwrap_or_default());
    Ok((credentials, expire_in))
}

/// A signed token as a [`Credential`], expiring after `lifetime` or when the credentials that signed it do.
pub(crate) fn capped_token(
    token: &str,
    issued_at: Instant,
    lifetime: TokenLifetime,
    credentials_expire_in: Option<Duration>,
) -> IamToken {
    let token = IamToken::token(SecretString::from(token), issued_at, lifetime.get());
    match credentials_expire_in {
        Some(left) => token.valid_until_at_most(Instant::now() + left),
        None => token,
    }
}

impl fmt::Display for RdsTokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IAM tokens for {}", self.target)
    }
}

impl CredentialSource for RdsTokenSigner {
    fn fetch(&self) -> CredentialFuture<'_> {
        Box::pin(RdsTokenSigner::sign(self))
    }
}
