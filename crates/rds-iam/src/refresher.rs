//! Keeping a valid credential at hand: had before anything connects, renewed in the background before it expires
//! (a token) or on an interval (a password), the last good one kept while renewal fails, and renewed at once when a
//! server refuses it.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::classify::Classify;
use crate::credential::{Credential, Renewal};
use crate::error::CredentialError;
use crate::signer::CredentialSource;

/// When to renew credentials and how to retry when renewing fails.
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
    /// After a server refused the credential in force, how long to keep fetching while the source still gives that
    /// same one (a password changed on the server before its secret was updated). Default 5 s. A token is replaced
    /// by the first signing, so this never delays one.
    pub refusal_patience: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_fraction: 0.8,
            jitter_fraction: 0.05,
            credentials_margin: Duration::from_secs(30),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            refusal_patience: Duration::from_secs(5),
        }
    }
}

impl RefreshPolicy {
    /// When `credential` is due for renewal; never sooner than `retry_min` after it was had.
    /// - A token: at the configured share of its lifetime less a random jitter, or a margin before it expires when
    ///   its credentials cut it short, whichever is first.
    /// - A password: its renewal interval less a random jitter of the same share of it.
    fn renewal_due(&self, credential: &Credential) -> Instant {
        let issued_at = credential.issued_at();
        let due = match credential.renewal() {
            Renewal::Expires { lifetime, expires_at } => {
                let jitter = lifetime.mul_f64(self.jitter_fraction * fastrand::f64());
                let by_share = issued_at + lifetime.mul_f64(self.refresh_fraction).saturating_sub(jitter);
                let margin = self
                    .credentials_margin
                    .min(lifetime.mul_f64(1.0 - self.refresh_fraction));
                let by_expiry = expires_at.checked_sub(margin).unwrap_or(issued_at);
                by_share.min(by_expiry)
            }
            Renewal::Every(interval) => {
                issued_at + interval.saturating_sub(interval.mul_f64(self.jitter_fraction * fastrand::f64()))
            }
        };
        due.max(issued_at + self.retry_min)
    }
}

/// The current credential's state and the renewal counters, for logs, metrics and readiness probes; see
/// [`TokenRefresher::status`]. Fields may be added, so it cannot be built outside this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenStatus {
    /// Time left on the credential in force: `None` once a token has expired (renewal keeps failing),
    /// [`Duration::MAX`] for a password, which does not expire by time.
    pub expires_in: Option<Duration>,
    /// How long ago it was signed or fetched.
    pub age: Duration,
    /// Renewals that succeeded.
    pub refreshes: u64,
    /// Renewals that failed.
    pub failures: u64,
    /// The last renewal's error, until a renewal succeeds.
    pub last_error: Option<String>,
}

/// Called with every new credential, before it becomes current: installs it where new connections will find it.
pub type TokenListener = Box<dyn Fn(&Credential) + Send + Sync>;

struct Shared {
    source: Box<dyn CredentialSource>,
    policy: RefreshPolicy,
    current: RwLock<Arc<Credential>>,
    /// Bumped by every installed token, so that callers who waited for a renewal can tell one happened.
    generation: AtomicU64,
    refreshes: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// One signing or fetch at a time: concurrent callers of `refresh_now` share the result of the one in progress.
    signing: tokio::sync::Mutex<()>,
    on_token: TokenListener,
}

/// Keeps a valid credential at hand for one endpoint: an IAM token, or a password from a secret.
///
/// [`TokenRefresher::start`] has the first credential from its source before anything connects (so a missing AWS
/// credential, region or secret stops a service at start), then a background task renews it: a token at
/// [`RefreshPolicy::refresh_fraction`] of its lifetime, a password on its source's interval, with jitter. When
/// renewing fails it retries with capped exponential back-off and keeps serving the last good credential (a token
/// until it expires). [`TokenRefresher::renew_after_refusal`] renews at once, for when a server refused the
/// credential. Reading the current one takes a read lock and an `Arc` clone; signing and fetching never happen on the
/// caller's path.
///
/// Dropping the refresher stops the background task.
pub struct TokenRefresher {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for TokenRefresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRefresher")
            .field("source", &self.shared.source.to_string())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl TokenRefresher {
    /// Has the first credential from `source` (failing if that is impossible), passes it to `on_token`, and starts
    /// renewing in the background; every renewed credential is passed to `on_token` too.
    pub async fn start(
        source: impl CredentialSource,
        policy: RefreshPolicy,
        on_token: impl Fn(&Credential) + Send + Sync + 'static,
    ) -> Result<Self, CredentialError> {
        let first = source.fetch().await?;
        on_token(&first);
        Ok(Self::with_first_token(source, first, policy, on_token))
    }

    /// Starts renewing after `first`, which the caller had from `source` and has already put to use.
    pub(crate) fn with_first_token(
        source: impl CredentialSource,
        first: Credential,
        policy: RefreshPolicy,
        on_token: impl Fn(&Credential) + Send + Sync + 'static,
    ) -> Self {
        tracing::info!(%source, credential = ?first, "first credential obtained");
        let shared = Arc::new(Shared {
            source: Box::new(source),
            policy,
            current: RwLock::new(Arc::new(first)),
            generation: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            signing: tokio::sync::Mutex::new(()),
            on_token: Box::new(on_token),
        });
        let task = tokio::spawn(renew_forever(Arc::clone(&shared)));
        Self { shared, task }
    }

    /// The credential in force.
    #[must_use]
    pub fn current(&self) -> Arc<Credential> {
        self.shared.current()
    }

    /// Renews now, unless another renewal finished while this call waited for its turn: many callers that saw the
    /// same refused credential cause one signing or fetch, not one each.
    pub async fn refresh_now(&self) -> Result<(), CredentialError> {
        let seen = self.shared.generation.load(Ordering::Acquire);
        self.shared.refresh(Some(seen)).await
    }

    /// Renews because a server refused the credential in force, and while the source still gives that same one,
    /// fetches again with the policy's back-off until it gives another or [`RefreshPolicy::refusal_patience`] runs
    /// out. Callers refused at once share each fetch.
    ///
    /// A password changed on the server before its secret is updated is refused until the secret catches up:
    /// Secrets Manager's own rotation sets the new password on the server a few seconds before it makes it the
    /// secret's current value, and a hand-made rotation has the same gap. A token is replaced by the first signing.
    /// Either way a credential had less than [`RefreshPolicy::retry_min`] ago is not asked for again before then.
    pub async fn renew_after_refusal(&self) -> Result<(), CredentialError> {
        let refused = self.current();
        let policy = self.shared.policy;
        let deadline = Instant::now() + policy.refusal_patience;
        let mut pause = policy.retry_min;
        let mut seen = self.shared.generation.load(Ordering::Acquire);
        loop {
            // A fetch that started less than `retry_min` ago (another refused caller's, as a rule), or that finished
            // while this caller waited for its turn, counts as this caller's own.
            if self.current().age() >= policy.retry_min {
                self.shared.refresh(Some(seen)).await?;
            }
            seen = self.shared.generation.load(Ordering::Acquire);
            if !self.current().same_as(&refused) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    source = %self.shared.source,
                    waited = ?policy.refusal_patience,
                    "the server refuses the credential in force, and its source still gives the same one"
                );
                return Ok(());
            }
            tokio::time::sleep_until((now + pause).min(deadline)).await;
            pause = (pause * 2).min(policy.retry_max);
        }
    }

    /// Runs one database operation; when it fails because the server refused a new connection's credentials (an
    /// expired or revoked token, a rotated password), renews the credential at once
    /// ([`TokenRefresher::renew_after_refusal`]) and runs the operation once more, as the AWS JDBC wrapper does.
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
                    "the server refused a new connection's credential; renewing it and retrying once"
                );
                if let Err(renewal) = self.renew_after_refusal().await {
                    tracing::warn!(
                        error = %crate::error_chain(&renewal),
                        "could not renew the credential for the retry"
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
    fn current(&self) -> Arc<Credential> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Has and installs a new credential. With `unless_newer_than`, returns at once if one newer than that
    /// generation was installed while this call waited.
    async fn refresh(&self, unless_newer_than: Option<u64>) -> Result<(), CredentialError> {
        let _turn = self.signing.lock().await;
        if unless_newer_than.is_some_and(|seen| self.generation.load(Ordering::Acquire) != seen) {
            return Ok(());
        }
        match self.source.fetch().await {
            Ok(token) => {
                (self.on_token)(&token);
                let previous_age = self.current().age();
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(token);
                self.generation.fetch_add(1, Ordering::AcqRel);
                let refreshes = self.refreshes.fetch_add(1, Ordering::Relaxed) + 1;
                *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = None;
                tracing::info!(source = %self.source, refreshes, ?previous_age, "credential renewed");
                Ok(())
            }
            Err(error) => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                let message = crate::error_chain(&error);
                tracing::warn!(
                    error = %message,
                    failures,
                    current = ?self.current(),
                    "renewing the credential failed; the last good one stays in use"
                );
                *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
                Err(error)
            }
        }
    }
}

async fn renew_forever(shared: Arc<Shared>) {
    let policy = shared.policy;
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
    //! The refresher on a paused clock, with a source that records when it was called and fails on demand.

    use std::collections::VecDeque;
    use std::sync::Mutex;

    use secrecy::{ExposeSecret, SecretString};

    use super::*;
    use crate::credential::TokenTarget;

    /// What the fake source does on one call.
    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        /// A token living this long, its credentials expiring after `credentials` when given.
        Token {
            lifetime: Duration,
            credentials: Option<Duration>,
        },
        /// A password for `user` (its secret the user name again), fetched again every 60 s.
        Password {
            user: &'static str,
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

    impl fmt::Display for FakeSigner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "test credentials for {}", self.target)
        }
    }

    impl CredentialSource for FakeSigner {
        fn fetch(&self) -> crate::signer::CredentialFuture<'_> {
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
                        let token = Credential::token(
                            SecretString::from(format!("token-{}", calls.len())),
                            Instant::now(),
                            lifetime,
                        );
                        Ok(match credentials {
                            Some(left) => token.valid_until_at_most(Instant::now() + left),
                            None => token,
                        })
                    }
                    Outcome::Password { user } => Ok(Credential::password(
                        user,
                        SecretString::from(user),
                        Instant::now(),
                        Duration::from_secs(60),
                    )),
                    Outcome::Fail => Err(CredentialError::signing(
                        &self.target,
                        "the credential source is unavailable",
                    )),
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

    #[tokio::test(start_paused = true)]
    async fn a_password_is_fetched_again_every_interval_less_at_most_the_jitter_and_never_expires() {
        let (signer, calls) = FakeSigner::new([Outcome::Password { user: "app" }]);
        let refresher = TokenRefresher::start(signer, policy(), |_| {}).await.unwrap();

        tokio::time::sleep(Duration::from_secs(60 * 10)).await;

        let offsets = offsets(&calls);
        assert!(offsets.len() >= 11, "{offsets:?}");
        // Every 60 s, minus up to 5 % of that.
        for pair in offsets.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_secs(57) && gap <= Duration::from_secs(60),
                "{offsets:?}"
            );
        }
        let status = refresher.status();
        assert_eq!(status.expires_in, Some(Duration::MAX), "{status:?}");
        assert_eq!(refresher.current().user(), Some("app"));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_refusal_the_source_is_asked_again_until_it_gives_another_credential() {
        // The secret still holds the refused password for two more fetches, then the rotated one.
        let (signer, calls) = FakeSigner::new([
            Outcome::Password { user: "app" },
            Outcome::Password { user: "app" },
            Outcome::Password { user: "app" },
            Outcome::Password { user: "app_clone" },
        ]);
        let refresher = Arc::new(TokenRefresher::start(signer, policy(), |_| {}).await.unwrap());

        let refused: Vec<_> = (0..20)
            .map(|_| {
                let refresher = Arc::clone(&refresher);
                tokio::spawn(async move { refresher.renew_after_refusal().await })
            })
            .collect();
        for caller in refused {
            caller.await.unwrap().unwrap();
        }

        assert_eq!(refresher.current().user(), Some("app_clone"));
        // The first fetch, then, for all twenty callers together, one fetch a pause: 200 ms, 400 ms, 800 ms.
        assert_eq!(
            offsets(&calls),
            [0, 200, 600, 1400].map(Duration::from_millis),
            "one fetch at a time, shared"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_credential_that_its_source_keeps_giving_is_given_up_on_after_the_patience() {
        let (signer, calls) = FakeSigner::new([Outcome::Password { user: "app" }]);
        let refresher = TokenRefresher::start(signer, policy(), |_| {}).await.unwrap();
        let started = Instant::now();

        refresher.renew_after_refusal().await.unwrap();

        assert_eq!(started.elapsed(), policy().refusal_patience);
        // Fetched at 0 (the first), 200, 600, 1400, 3000 and, cut short by the patience, 5000 ms.
        assert_eq!(
            offsets(&calls),
            [0, 200, 600, 1400, 3000, 5000].map(Duration::from_millis)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_token_is_replaced_by_one_signing() {
        let (signer, calls) = FakeSigner::new([TOKEN]);
        let refresher = TokenRefresher::start(signer, policy(), |_| {}).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;

        refresher.renew_after_refusal().await.unwrap();

        assert_eq!(offsets(&calls), [Duration::ZERO, Duration::from_secs(10)]);
    }
}
