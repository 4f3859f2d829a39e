//! Keeping a valid token at hand: signed before anything connects, renewed in the background before it expires,
//! the last good one kept while renewal fails, and renewed at once when a server refuses it.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::classify::Classify;
use crate::error::SignError;
use crate::signer::TokenSigner;
use crate::token::IamToken;

/// When to renew tokens and how to retry when renewing fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshPolicy {
    /// Renew once this share of a token's lifetime has passed (minus jitter). Default 0.8.
    pub refresh_fraction: f64,
    /// Up to this share of the lifetime is taken off at random, so a fleet does not renew in step. Default 0.05.
    pub jitter_fraction: f64,
    /// Renew at least this long before the signing credentials expire (the AWS JDBC wrapper's 30 s), when they
    /// expire before the token would. Never more than the time left after `refresh_fraction`.
    pub credentials_margin: Duration,
    /// The first pause after a failed renewal; it doubles after each further failure. Default 200 ms.
    pub retry_min: Duration,
    /// The longest pause between two attempts. Default 30 s.
    pub retry_max: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_fraction: 0.8,
            jitter_fraction: 0.05,
            credentials_margin: Duration::from_secs(30),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
        }
    }
}

impl RefreshPolicy {
    /// When `token` is due for renewal: at the configured share of its lifetime less a random jitter, or a margin
    /// before it expires when its credentials cut it short, whichever is first; never sooner than `retry_min`.
    fn renewal_due(&self, token: &IamToken) -> Instant {
        let lifetime = token.lifetime();
        let jitter = lifetime.mul_f64(self.jitter_fraction * fastrand::f64());
        let by_share = token.issued_at() + lifetime.mul_f64(self.refresh_fraction).saturating_sub(jitter);
        let margin = self
            .credentials_margin
            .min(lifetime.mul_f64(1.0 - self.refresh_fraction));
        let by_expiry = token.expires_at().checked_sub(margin).unwrap_or(token.issued_at());
        by_share.min(by_expiry).max(token.issued_at() + self.retry_min)
    }
}

/// The current token's state and the renewal counters, for logs, metrics and readiness probes; see
/// [`TokenRefresher::status`]. Fields may be added, so it cannot be built outside this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenStatus {
    /// Time left on the token in force; `None` once it has expired (renewal keeps failing).
    pub expires_in: Option<Duration>,
    /// How long ago it was signed.
    pub age: Duration,
    /// Renewals that succeeded.
    pub refreshes: u64,
    /// Renewals that failed.
    pub failures: u64,
    /// The last renewal's error, until a renewal succeeds.
    pub last_error: Option<String>,
}

/// Called with every new token, before it becomes current: installs it where new connections will find it.
pub type TokenListener = Box<dyn Fn(&IamToken) + Send + Sync>;

struct Shared {
    signer: Box<dyn TokenSigner>,
    current: RwLock<Arc<IamToken>>,
    /// Bumped by every installed token, so that callers who waited for a renewal can tell one happened.
    generation: AtomicU64,
    refreshes: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// One signing at a time: concurrent callers of `refresh_now` share the result of the one in progress.
    signing: tokio::sync::Mutex<()>,
    on_token: TokenListener,
}

/// Keeps a valid token at hand for one endpoint and user.
///
/// [`TokenRefresher::start`] signs the first token before anything connects (so a missing credential or region stops
/// a service at start), then a background task renews it at [`RefreshPolicy::refresh_fraction`] of its lifetime,
/// with jitter. When renewing fails it retries with capped exponential back-off and keeps serving the last good
/// token until that expires. [`TokenRefresher::refresh_now`] renews at once, for when a server refused a token.
/// Reading the current token takes a read lock and an `Arc` clone; signing never happens on the caller's path.
///
/// Dropping the refresher stops the background task.
pub struct TokenRefresher {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for TokenRefresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRefresher")
            .field("target", self.shared.signer.target())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl TokenRefresher {
    /// Signs the first token (failing if that is impossible), passes it to `on_token`, and starts renewing in the
    /// background; every renewed token is passed to `on_token` too.
    pub async fn start(
        signer: impl TokenSigner,
        policy: RefreshPolicy,
        on_token: impl Fn(&IamToken) + Send + Sync + 'static,
    ) -> Result<Self, SignError> {
        let first = signer.sign().await?;
        on_token(&first);
        Ok(Self::with_first_token(signer, first, policy, on_token))
    }

    /// Starts renewing after `first`, which the caller signed with `signer` and has already put to use.
    pub(crate) fn with_first_token(
        signer: impl TokenSigner,
        first: IamToken,
        policy: RefreshPolicy,
        on_token: impl Fn(&IamToken) + Send + Sync + 'static,
    ) -> Self {
        tracing::info!(target = %signer.target(), expires_in = ?first.expires_in(), "first IAM token signed");
        let shared = Arc::new(Shared {
            signer: Box::new(signer),
            current: RwLock::new(Arc::new(first)),
            generation: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            signing: tokio::sync::Mutex::new(()),
            on_token: Box::new(on_token),
        });
        let task = tokio::spawn(renew_forever(Arc::clone(&shared), policy));
        Self { shared, task }
    }

    /// The token in force.
    #[must_use]
    pub fn current(&self) -> Arc<IamToken> {
        self.shared.current()
    }

    /// Renews now, unless another renewal finished while this call waited for its turn: many callers that saw the
    /// same refused token cause one signing, not one each.
    pub async fn refresh_now(&self) -> Result<(), SignError> {
        let seen = self.shared.generation.load(Ordering::Acquire);
        self.shared.refresh(Some(seen)).await
    }

    /// Runs one database operation; when it fails because the server refused a new connection's credentials (an
    /// expired or revoked token), renews the token at once and runs it once more, as the AWS JDBC wrapper does.
    ///
    /// Safe for any operation: a refused connection fails before a statement is sent, so the first attempt had no
    /// effect.
    pub async fn retry_once_on_auth_failure<T, E, F, Fut>(&self, operation: F) -> Result<T, E>
    where
        E: Classify + std::error::Error + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match operation().await {
            Err(error) if error.is_auth_failure() => {
                tracing::warn!(
                    error = %crate::error_chain(&error),
                    "the server refused a new connection's token; renewing it and retrying once"
                );
                if let Err(renewal) = self.refresh_now().await {
                    tracing::warn!(
                        error = %crate::error_chain(&renewal),
                        "could not renew the token for the retry"
                    );
                }
                operation().await
            }
            result => result,
        }
    }

    /// The token in force and the renewal counters, at this moment. Cheap enough for every metrics scrape (a read
    /// lock, a few atomic loads, and a copy of the last error when there is one), and tied to no metrics library:
    /// export what it says with whichever your service uses.
    ///
    /// ```no_run
    /// # fn export(refresher: &rds_iam::TokenRefresher) {
    /// let status = refresher.status();
    /// // A gauge: seconds left on the token in force, 0 once renewal has failed for so long that it expired.
    /// let expiry_seconds = status.expires_in.map_or(0.0, |left| left.as_secs_f64());
    /// // Two counters, never reset while the refresher runs.
    /// let (renewals, failures) = (status.refreshes, status.failures);
    /// println!("token expires in {expiry_seconds:.0} s; {renewals} renewals, {failures} failed");
    /// # }
    /// ```
    #[must_use]
    pub fn status(&self) -> TokenStatus {
        let current = self.current();
        TokenStatus {
            expires_in: current.expires_in(),
            age: current.age(),
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
    async fn refresh(&self, unless_newer_than: Option<u64>) -> Result<(), SignError> {
        let _turn = self.signing.lock().await;
        if unless_newer_than.is_some_and(|seen| self.generation.load(Ordering::Acquire) != seen) {
            return Ok(());
        }
        match self.signer.sign().await {
            Ok(token) => {
                (self.on_token)(&token);
                let previous_age = self.current().age();
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(token);
                self.generation.fetch_add(1, Ordering::AcqRel);
                let refreshes = self.refreshes.fetch_add(1, Ordering::Relaxed) + 1;
                *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = None;
                tracing::info!(target = %self.signer.target(), refreshes, ?previous_age, "IAM token renewed");
                Ok(())
            }
            Err(error) => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                let message = crate::error_chain(&error);
                tracing::warn!(
                    error = %message,
                    failures,
                    current_token_expires_in = ?self.current().expires_in(),
                    "renewing the IAM token failed; the last good token stays in use"
                );
                *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
                Err(error)
            }
        }
    }
}

async fn renew_forever(shared: Arc<Shared>, policy: RefreshPolicy) {
    loop {
        tokio::time::sleep_until(policy.renewal_due(&shared.current())).await;
        let mut pause = policy.retry_min;
        while shared.refresh(None).await.is_err() {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(policy.retry_max);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The refresher on a paused clock, with a signer that records when it was called and fails on demand.

    use std::collections::VecDeque;
    use std::sync::Mutex;

    use secrecy::{ExposeSecret, SecretString};

    use super::*;
    use crate::token::TokenTarget;

    /// What the fake signer does on one call.
    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        /// A token living this long, its credentials expiring after `credentials` when given.
        Token {
            lifetime: Duration,
            credentials: Option<Duration>,
        },
        Fail,
    }

    #[derive(Debug)]
    struct FakeSigner {
        target: TokenTarget,
        /// Outcomes in order; the last one repeats.
        script: Mutex<VecDeque<Outcome>>,
        calls: Arc<Mutex<Vec<Instant>>>,
        /// How long signing takes.
        delay: Duration,
    }

    impl FakeSigner {
        fn new(script: impl IntoIterator<Item = Outcome>) -> (Self, Arc<Mutex<Vec<Instant>>>) {
            let calls = Arc::new(Mutex::new(Vec::new()));
            let signer = Self {
                target: TokenTarget {
                    host: "db.example".to_owned(),
                    port: 5432,
                    user: "app".to_owned(),
                },
                script: Mutex::new(script.into_iter().collect()),
                calls: Arc::clone(&calls),
                delay: Duration::ZERO,
            };
            (signer, calls)
        }
    }

    impl TokenSigner for FakeSigner {
        fn target(&self) -> &TokenTarget {
            &self.target
        }

        fn sign(&self) -> crate::signer::SignFuture<'_> {
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                let outcome = {
                    let mut script = self.script.lock().unwrap();
                    if script.len() > 1 {
                        script.pop_front()
                    } else {
                        script.front().copied()
                    }
                };
                let mut calls = self.calls.lock().unwrap();
                calls.push(Instant::now());
                match outcome.expect("a scripted outcome") {
                    Outcome::Token { lifetime, credentials } => {
                        let token = IamToken::new(
                            SecretString::from(format!("token-{}", calls.len())),
                            Instant::now(),
                            lifetime,
                        );
                        Ok(match credentials {
                            Some(left) => token.valid_until_at_most(Instant::now() + left),
                            None => token,
                        })
                    }
                    Outcome::Fail => Err(SignError::new(&self.target, "the credential source is unavailable")),
                }
            })
        }
    }

    const TOKEN: Outcome = Outcome::Token {
        lifetime: Duration::from_secs(100),
        credentials: None,
    };

    fn policy() -> RefreshPolicy {
        RefreshPolicy {
            retry_max: Duration::from_secs(5),
            ..RefreshPolicy::default()
        }
    }

    /// The instants of the signer's calls, relative to the first.
    fn offsets(calls: &Mutex<Vec<Instant>>) -> Vec<Duration> {
        let calls = calls.lock().unwrap();
        calls.iter().map(|call| *call - calls[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn renews_at_the_configured_share_of_the_lifetime_less_at_most_the_jitter() {
        let (signer, calls) = FakeSigner::new([TOKEN]);
        let installed = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&installed);
        let refresher = TokenRefresher::start(signer, policy(), move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .await
        .unwrap();

        tokio::time::sleep(Duration::from_secs(100 * 10)).await;

        let offsets = offsets(&calls);
        assert!(offsets.len() >= 11, "{offsets:?}");
        // 80 s into each 100 s token, minus up to 5 s of jitter.
        for pair in offsets.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_secs(75) && gap <= Duration::from_secs(80),
                "{offsets:?}"
            );
        }
        let distinct: std::collections::HashSet<_> = offsets.windows(2).map(|pair| pair[1] - pair[0]).collect();
        assert!(distinct.len() > 1, "the jitter varies: {offsets:?}");
        assert_eq!(
            installed.load(Ordering::Relaxed),
            offsets.len() as u64,
            "every token was installed"
        );
        assert_eq!(refresher.status().refreshes, offsets.len() as u64 - 1);
        assert_eq!(refresher.status().failures, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn many_callers_asking_at_once_cause_one_signing() {
        let (mut signer, calls) = FakeSigner::new([TOKEN]);
        signer.delay = Duration::from_secs(1);
        let refresher = Arc::new(TokenRefresher::start(signer, policy(), |_| {}).await.unwrap());
        let first = refresher.current();

        let callers: Vec<_> = (0..50)
            .map(|_| {
                let refresher = Arc::clone(&refresher);
                tokio::spawn(async move { refresher.refresh_now().await })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap().unwrap();
        }

        assert_eq!(calls.lock().unwrap().len(), 2, "the first token and one renewal");
        assert_ne!(
            refresher.current().secret().expose_secret(),
            first.secret().expose_secret()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_renewals_back_off_exponentially_up_to_the_cap_and_keep_the_last_good_token() {
        let (signer, calls) = FakeSigner::new([TOKEN, Outcome::Fail]);
        let refresher = TokenRefresher::start(signer, policy(), |_| {}).await.unwrap();
        let good = refresher.current();

        tokio::time::sleep(Duration::from_secs(99)).await;

        let status = refresher.status();
        assert_eq!(
            refresher.current().secret().expose_secret(),
            good.secret().expose_secret(),
            "still the last good token"
        );
        assert!(status.expires_in.is_some_and(|left| left <= Duration::from_secs(1)));
        assert!(status.failures > 5, "{status:?}");
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|error| error.contains("credential source")),
            "{status:?}"
        );
        let offsets = offsets(&calls);
        let gaps: Vec<Duration> = offsets[1..].windows(2).map(|pair| pair[1] - pair[0]).collect();
        let expected: Vec<Duration> = [200, 400, 800, 1600, 3200, 5000, 5000]
            .map(Duration::from_millis)
            .to_vec();
        assert_eq!(gaps[..expected.len()], expected[..], "{gaps:?}");

        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(refresher.status().expires_in, None, "expired once its time was up");
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_lives_no_longer_than_its_credentials_and_is_renewed_before_they_expire() {
        let short_credentials = Outcome::Token {
            lifetime: Duration::from_secs(900),
            credentials: Some(Duration::from_secs(120)),
        };
        let (signer, calls) = FakeSigner::new([short_credentials, TOKEN]);
        let refresher = TokenRefresher::start(signer, policy(), |_| {}).await.unwrap();

        assert_eq!(refresher.status().expires_in, Some(Duration::from_secs(120)));
        tokio::time::sleep(Duration::from_secs(95)).await;

        // 30 s before the credentials expire, not 720 s into the token's nominal 900.
        assert_eq!(offsets(&calls), [Duration::ZERO, Duration::from_secs(90)]);
        assert_eq!(refresher.status().refreshes, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_token_must_be_signed_for_the_refresher_to_start() {
        let (signer, _) = FakeSigner::new([Outcome::Fail]);
        let error = TokenRefresher::start(signer, policy(), |_| {}).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cannot sign an IAM token for app@db.example:5432"),
            "{error}"
        );
    }
}
