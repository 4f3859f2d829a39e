//! RDS IAM database authentication: tokens signed by the AWS SDK with whatever credentials the process has, renewed in
//! the background before they expire, and handed to the pool for every new connection.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config as TokenConfig};
use aws_sdk_rds::config::Region;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::SecretString;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::settings::{AssumeRole, IamSettings};

/// Characters RFC 3986 leaves unencoded; everything else in a user name is percent-encoded, because the SDK copies the
/// name into the URL it signs as it is, where `@`, `+`, `&` or a space would change its meaning.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error(
        "no AWS region for IAM tokens: set APP__DATABASE__IAM__REGION, use an RDS host name \
         (name.id.region.rds.amazonaws.com), or set AWS_REGION"
    )]
    NoRegion,
    #[error("invalid IAM token settings: {0}")]
    Config(String),
    #[error(
        "cannot sign an IAM token for {target}: {reason} (AWS credentials come from the SDK's default chain: \
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, SSO, web identity, ECS or EC2 instance roles)"
    )]
    Sign { target: String, reason: String },
}

/// The endpoint and user a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl std::fmt::Display for TokenTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

/// The SDK's default configuration (credential chain, `AWS_ENDPOINT_URL`, ...), in `region` when it is known.
pub async fn load_aws_config(region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    loader.load().await
}

/// The AWS region in an RDS endpoint name: `db.cluster-abc.eu-west-1.rds.amazonaws.com`,
/// `db.proxy-abc.us-east-1.rds.amazonaws.com`, `db.abc.cn-north-1.rds.amazonaws.com.cn`.
#[must_use]
pub fn region_from_host(host: &str) -> Option<&str> {
    let labels: Vec<&str> = host.split('.').collect();
    let rds = labels
        .windows(2)
        .position(|pair| pair[0].eq_ignore_ascii_case("rds") && pair[1].eq_ignore_ascii_case("amazonaws"))?;
    let region = *labels.get(rds.checked_sub(1)?)?;
    let looks_like_region = region.contains('-') && region.ends_with(|c: char| c.is_ascii_digit());
    (rds >= 2 && looks_like_region).then_some(region)
}

/// One signed token and when it stops being accepted.
#[derive(Clone)]
pub struct IamToken {
    value: SecretString,
    issued_at: Instant,
    expires_at: Instant,
}

impl std::fmt::Debug for IamToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamToken")
            .field("value", &"[REDACTED]")
            .field("age", &self.issued_at.elapsed())
            .field("expires_in", &self.expires_in())
            .finish()
    }
}

impl IamToken {
    /// The password to present.
    #[must_use]
    pub fn secret(&self) -> &SecretString {
        &self.value
    }

    /// Time left before the server refuses this token; `None` once it has expired.
    #[must_use]
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_at
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }
}

/// Signs tokens for one database user at one endpoint.
#[derive(Debug)]
pub struct IamTokenSource {
    generator: AuthTokenGenerator,
    sdk_config: SdkConfig,
    region: Region,
    target: TokenTarget,
    lifetime: Duration,
}

impl IamTokenSource {
    /// Resolves the region (`region`, then the host name, then the AWS region chain) and loads the default
    /// credential chain, unless `sdk_config` is given. Tokens are signed to live `lifetime` (at most 15 minutes).
    pub async fn new(
        target: TokenTarget,
        region: Option<String>,
        lifetime: Duration,
        sdk_config: Option<SdkConfig>,
    ) -> Result<Self, IamError> {
        let known_region = region.or_else(|| region_from_host(&target.host).map(str::to_owned));
        let sdk_config = match sdk_config {
            Some(config) => config,
            None => load_aws_config(known_region.as_deref()).await,
        };
        let region = known_region
            .map(Region::new)
            .or_else(|| sdk_config.region().cloned())
            .ok_or(IamError::NoRegion)?;
        let generator = AuthTokenGenerator::new(
            TokenConfig::builder()
                .hostname(target.host.clone())
                .port(u64::from(target.port))
                .username(utf8_percent_encode(&target.user, QUERY_VALUE).to_string())
                .region(region.clone())
                .expires_in(lifetime.as_secs())
                .build()
                .map_err(|error| IamError::Config(error.to_string()))?,
        );
        Ok(Self {
            generator,
            sdk_config,
            region,
            target,
            lifetime,
        })
    }

    /// Signs with `role`'s temporary credentials from now on, assumed with the credentials configured so far (STS in
    /// the token's region, at `AWS_ENDPOINT_URL` when set). Every token is signed with freshly assumed credentials,
    /// so they cannot expire under a token, and a withdrawn trust shows at the next renewal rather than an hour later.
    pub async fn assuming(mut self, role: &AssumeRole) -> Self {
        let mut builder = AssumeRoleProvider::builder(&role.arn)
            .session_name(&role.session_name)
            .region(self.region.clone())
            .configure(&self.sdk_config);
        if let Some(external_id) = &role.external_id {
            builder = builder.external_id(external_id);
        }
        let provider = builder.build().await;
        tracing::info!(
            role = role.arn,
            "IAM tokens are signed with the assumed role's credentials"
        );
        self.sdk_config = self
            .sdk_config
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        self
    }

    #[must_use]
    pub fn target(&self) -> &TokenTarget {
        &self.target
    }

    /// Signs a fresh token (no network call unless the credentials themselves must be fetched or renewed).
    pub async fn generate(&self) -> Result<IamToken, IamError> {
        // X-Amz-Date has whole seconds, and servers count the lifetime from it: the token expires up to a second
        // before `now + lifetime`, so count from the start of the current second.
        let into_second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since_epoch| Duration::from_nanos(u64::from(since_epoch.subsec_nanos())))
            .unwrap_or_default();
        let issued_at = Instant::now().checked_sub(into_second).unwrap_or_else(Instant::now);
        let token = self
            .generator
            .auth_token(&self.sdk_config)
            .await
            .map_err(|error| IamError::Sign {
                target: self.target.to_string(),
                reason: error_chain(error.as_ref()),
            })?;
        Ok(IamToken {
            value: SecretString::from(token.as_str()),
            issued_at,
            expires_at: issued_at + self.lifetime,
        })
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// When to renew tokens and how to retry when renewing fails.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// Renew once this share of a token's lifetime has passed (minus jitter).
    pub refresh_fraction: f64,
    /// Up to this share of the lifetime is taken off at random, so a fleet does not renew in step.
    pub jitter_fraction: f64,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl RefreshPolicy {
    #[must_use]
    pub fn from_settings(settings: &IamSettings) -> Self {
        Self {
            refresh_fraction: f64::from(settings.refresh_percent) / 100.0,
            jitter_fraction: 0.05,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(settings.retry_max_secs.max(1)),
        }
    }

    fn delay_before_refresh(&self, lifetime: Duration) -> Duration {
        let jitter = lifetime.mul_f64(self.jitter_fraction * random_fraction());
        lifetime.mul_f64(self.refresh_fraction).saturating_sub(jitter)
    }
}

/// A number in [0, 1) that differs between processes and calls; jitter needs nothing stronger.
fn random_fraction() -> f64 {
    let bits = RandomState::new().hash_one(std::time::SystemTime::now());
    // 53 random bits make an evenly spread f64 in [0, 1).
    (bits >> 11) as f64 / (1_u64 << 53) as f64
}

/// Counters and the state of the current token, for logs, metrics and readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStatus {
    pub expires_in: Option<Duration>,
    pub age: Duration,
    pub refreshes: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

type TokenListener = Box<dyn Fn(&IamToken) + Send + Sync>;

struct Shared {
    source: IamTokenSource,
    current: RwLock<Arc<IamToken>>,
    generation: AtomicU64,
    refreshes: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// One signing at a time: concurrent callers of `refresh_now` share the result of the one in progress.
    signing: tokio::sync::Mutex<()>,
    on_token: TokenListener,
}

/// Keeps a valid token at hand: signs the first one before anything connects, renews it in the background at the
/// configured share of its lifetime, keeps serving the last good token while renewing fails, and renews at once on
/// request (after the server refused a token).
pub struct TokenRefresher {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TokenRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRefresher")
            .field("target", &self.shared.source.target)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl TokenRefresher {
    /// Signs the first token (failing if that is impossible), passes it to `on_token`, and starts renewing.
    pub async fn start(
        source: IamTokenSource,
        policy: RefreshPolicy,
        on_token: impl Fn(&IamToken) + Send + Sync + 'static,
    ) -> Result<Self, IamError> {
        let first = source.generate().await?;
        on_token(&first);
        tracing::info!(target = %source.target, expires_in = ?first.expires_in(), "first IAM token signed");
        let shared = Arc::new(Shared {
            source,
            current: RwLock::new(Arc::new(first)),
            generation: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            signing: tokio::sync::Mutex::new(()),
            on_token: Box::new(on_token),
        });
        let task = tokio::spawn(renew_forever(Arc::clone(&shared), policy));
        Ok(Self { shared, task })
    }

    /// The token in force: a read lock and a reference count, nothing more.
    #[must_use]
    pub fn current(&self) -> Arc<IamToken> {
        self.shared.current()
    }

    /// Renews now, unless another renewal finished while this call waited for its turn.
    pub async fn refresh_now(&self) -> Result<(), IamError> {
        let seen = self.shared.generation.load(Ordering::Acquire);
        self.shared.refresh(Some(seen)).await
    }

    #[must_use]
    pub fn status(&self) -> TokenStatus {
        let current = self.current();
        TokenStatus {
            expires_in: current.expires_in(),
            age: current.issued_at.elapsed(),
            refreshes: self.shared.refreshes.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
            last_error: self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

impl Drop for TokenRefresher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn current(&self) -> Arc<IamToken> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Signs and installs a new token. With `unless_newer_than`, returns at once if a token newer than that
    /// generation was installed while this call waited.
    async fn refresh(&self, unless_newer_than: Option<u64>) -> Result<(), IamError> {
        let _turn = self.signing.lock().await;
        if unless_newer_than.is_some_and(|seen| self.generation.load(Ordering::Acquire) != seen) {
            return Ok(());
        }
        match self.source.generate().await {
            Ok(token) => {
                (self.on_token)(&token);
                let previous_age = self.current().issued_at.elapsed();
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(token);
                self.generation.fetch_add(1, Ordering::AcqRel);
                let refreshes = self.refreshes.fetch_add(1, Ordering::Relaxed) + 1;
                *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = None;
                tracing::info!(target = %self.source.target, refreshes, ?previous_age, "IAM token renewed");
                Ok(())
            }
            Err(error) => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                let current = self.current();
                tracing::warn!(
                    %error,
                    failures,
                    current_token_expires_in = ?current.expires_in(),
                    "renewing the IAM token failed; the last good token stays in use"
                );
                *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
                Err(error)
            }
        }
    }
}

async fn renew_forever(shared: Arc<Shared>, policy: RefreshPolicy) {
    loop {
        let token = shared.current();
        let lifetime = token.expires_at - token.issued_at;
        tokio::time::sleep_until(token.issued_at + policy.delay_before_refresh(lifetime)).await;
        let mut pause = policy.retry_min;
        while shared.refresh(None).await.is_err() {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(policy.retry_max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_read_from_rds_host_names() {
        let cases = [
            (
                "tasks.cluster-c9di9qmu8xqw.eu-west-1.rds.amazonaws.com",
                Some("eu-west-1"),
            ),
            (
                "tasks.cluster-ro-c9di9qmu8xqw.us-east-2.rds.amazonaws.com",
                Some("us-east-2"),
            ),
            (
                "instance-1.c9di9qmu8xqw.ap-southeast-2.rds.amazonaws.com",
                Some("ap-southeast-2"),
            ),
            (
                "tasks-proxy.proxy-c9di9qmu8xqw.us-west-2.rds.amazonaws.com",
                Some("us-west-2"),
            ),
            ("db.c9di9qmu8xqw.cn-north-1.rds.amazonaws.com.cn", Some("cn-north-1")),
            ("db.c9di9qmu8xqw.us-gov-west-1.rds.amazonaws.com", Some("us-gov-west-1")),
            ("localhost", None),
            ("127.0.0.1", None),
            ("rds.amazonaws.com", None),
            ("db.example.com", None),
        ];
        for (host, region) in cases {
            assert_eq!(region_from_host(host), region, "{host}");
        }
    }

    #[test]
    fn renewal_happens_before_expiry_with_bounded_jitter() {
        let policy = RefreshPolicy {
            refresh_fraction: 0.8,
            jitter_fraction: 0.05,
            retry_min: Duration::from_millis(1),
            retry_max: Duration::from_secs(1),
        };
        let lifetime = Duration::from_secs(900);
        for _ in 0..1000 {
            let delay = policy.delay_before_refresh(lifetime);
            assert!(
                delay <= Duration::from_secs(720) && delay >= Duration::from_secs(675),
                "{delay:?}"
            );
        }
    }
}
