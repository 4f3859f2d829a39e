//! An IAM-authenticated sqlx pool: the builder that sets it up and the pool that keeps itself supplied with tokens
//! (or with a password from another [`CredentialSource`], such as Secrets Manager).

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_config::SdkConfig;
use secrecy::ExposeSecret;
use sqlx::pool::{Pool, PoolOptions};

use crate::classify::Classify;
use crate::credential::{Credential, TokenTarget};
use crate::error::Error;
use crate::refresher::{RefreshPolicy, TokenRefresher, TokenStatus};
use crate::relay::{Check, Protocol, TlsRelay};
use crate::settings::{AssumeRole, DatabaseResource, HostPort, TokenLifetime};
use crate::signer::{CredentialSource, RdsTokenSigner};

/// What a driver's connection is configured with: `PgConnectOptions`, `MySqlConnectOptions`.
pub type ConnectOptionsOf<DB> = <<DB as sqlx::Database>::Connection as sqlx::Connection>::Options;

/// How the connection to the server is protected. IAM tokens are bearer credentials for up to 15 minutes, and a
/// password from a secret lasts until it is rotated, so the default is [`TlsMode::VerifyFull`]: encrypted,
/// certificate chain and host name checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize), serde(rename_all = "kebab-case"))]
pub enum TlsMode {
    /// No TLS: refused unless [`IamPoolBuilder::allow_without_tls`] says otherwise.
    Disable,
    /// TLS when the server offers it, none when it (or whoever answers in its place) declines: refused, like
    /// [`TlsMode::Disable`], unless [`IamPoolBuilder::allow_without_tls`] says otherwise.
    Prefer,
    /// TLS, without checking the certificate: refused unless [`IamPoolBuilder::allow_weaker_tls`] says otherwise.
    Require,
    /// TLS with the certificate chain checked, not the host name: refused unless
    /// [`IamPoolBuilder::allow_weaker_tls`] says otherwise.
    VerifyCa,
    /// TLS with the certificate chain and the host name checked (MySQL's `VERIFY_IDENTITY`).
    #[default]
    VerifyFull,
}

/// What IAM authentication needs from a driver's connect options. Implemented for `PgConnectOptions` (feature
/// `postgres`) and `MySqlConnectOptions` (feature `mysql`).
pub trait IamConnectOptions: sqlx::ConnectOptions + Clone + Send + Sync + 'static {
    /// The host and port the options connect to.
    fn address(&self) -> (String, u16);
    /// The database user.
    fn user(&self) -> String;
    /// The same options, connecting to `host:port`.
    #[must_use]
    fn at(self, host: &str, port: u16) -> Self;
    /// The same options, logging in as `user`.
    #[must_use]
    fn with_user(self, user: &str) -> Self;
    /// The same options, presenting `token` as the password.
    #[must_use]
    fn with_token(self, token: &str) -> Self;
    /// The same options with TLS set to `mode`, trusting `root_cert` when given.
    #[must_use]
    fn with_tls(self, mode: TlsMode, root_cert: Option<&Path>) -> Self;
    /// The same options, sending the token in clear text when the server asks for it that way (MySQL's
    /// `mysql_clear_password`, which RDS uses) only if `mode` requires TLS. PostgreSQL has nothing to set.
    #[must_use]
    fn with_cleartext_token_under(self, mode: TlsMode) -> Self;
    /// The protocol, for the crate's own TLS relay.
    #[doc(hidden)]
    fn protocol(&self) -> Protocol;
    /// The name of the Unix socket the driver looks for in a directory, for the crate's own TLS relay.
    #[doc(hidden)]
    fn socket_name(&self) -> String;
    /// The same options, connecting without TLS to the Unix socket at `path`, the crate's own TLS relay.
    #[doc(hidden)]
    #[must_use]
    fn through_socket(self, path: &Path) -> Self;
}

/// Both drivers spell these the same way, but share no trait that has them.
#[cfg(any(feature = "postgres", feature = "mysql"))]
macro_rules! endpoint_and_password {
    () => {
        fn address(&self) -> (String, u16) {
            (self.get_host().to_owned(), self.get_port())
        }

        fn user(&self) -> String {
            self.get_username().to_owned()
        }

        fn at(self, host: &str, port: u16) -> Self {
            self.host(host).port(port)
        }

        fn with_user(self, user: &str) -> Self {
            self.username(user)
        }

        fn with_token(self, token: &str) -> Self {
            self.password(token)
        }
    };
}

#[cfg(feature = "postgres")]
impl IamConnectOptions for sqlx::postgres::PgConnectOptions {
    endpoint_and_password!();

    fn protocol(&self) -> Protocol {
        Protocol::Postgres
    }

    /// libpq's naming, which sqlx follows: the socket's directory is given, and the port names the file in it.
    fn socket_name(&self) -> String {
        format!(".s.PGSQL.{}", self.get_port())
    }

    fn through_socket(self, path: &Path) -> Self {
        self.socket(path.parent().unwrap_or(path))
            .ssl_mode(sqlx::postgres::PgSslMode::Disable)
    }

    fn with_cleartext_token_under(self, _: TlsMode) -> Self {
        self
    }

    fn with_tls(self, mode: TlsMode, root_cert: Option<&Path>) -> Self {
        use sqlx::postgres::PgSslMode;
        let options = self.ssl_mode(match mode {
            TlsMode::Disable => PgSslMode::Disable,
            TlsMode::Prefer => PgSslMode::Prefer,
            TlsMode::Require => PgSslMode::Require,
            TlsMode::VerifyCa => PgSslMode::VerifyCa,
            TlsMode::VerifyFull => PgSslMode::VerifyFull,
        });
        match root_cert {
            Some(path) => options.ssl_root_cert(path),
            None => options,
        }
    }
}

#[cfg(feature = "mysql")]
impl IamConnectOptions for sqlx::mysql::MySqlConnectOptions {
    endpoint_and_password!();

    fn protocol(&self) -> Protocol {
        Protocol::MySql
    }

    fn socket_name(&self) -> String {
        "mysql.sock".to_owned()
    }

    fn through_socket(self, path: &Path) -> Self {
        self.socket(path).ssl_mode(sqlx::mysql::MySqlSslMode::Disabled)
    }

    /// RDS asks MySQL clients for the token with `mysql_clear_password`, so the token crosses the wire as typed.
    fn with_cleartext_token_under(self, mode: TlsMode) -> Self {
        self.enable_cleartext_plugin(matches!(
            mode,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull
        ))
    }

    fn with_tls(self, mode: TlsMode, root_cert: Option<&Path>) -> Self {
        use sqlx::mysql::MySqlSslMode;
        let options = self.ssl_mode(match mode {
            TlsMode::Disable => MySqlSslMode::Disabled,
            TlsMode::Prefer => MySqlSslMode::Preferred,
            TlsMode::Require => MySqlSslMode::Required,
            TlsMode::VerifyCa => MySqlSslMode::VerifyCa,
            TlsMode::VerifyFull => MySqlSslMode::VerifyIdentity,
        });
        match root_cert {
            Some(path) => options.ssl_ca(path),
            None => options,
        }
    }
}

/// Sets up an [`IamPool`]: where to connect, whom tokens are signed for, and how they are renewed.
///
/// Start from the driver's connect options (host, port, user, database); everything else has a default: the region
/// from the host name or the AWS region chain, 15-minute tokens renewed at 80 % of their life, TLS verify-full.
pub struct IamPoolBuilder<DB: sqlx::Database> {
    options: ConnectOptionsOf<DB>,
    pool_options: PoolOptions<DB>,
    region: Option<String>,
    signing_host: Option<String>,
    signing_port: Option<u16>,
    tunnel: Option<HostPort>,
    assume_role: Option<AssumeRole>,
    lifetime: TokenLifetime,
    policy: RefreshPolicy,
    tls_mode: TlsMode,
    root_cert: Option<PathBuf>,
    allow_without_tls: bool,
    allow_weaker_tls: bool,
    sdk_config: Option<SdkConfig>,
    source: Option<Box<dyn CredentialSource>>,
    resource: Option<DatabaseResource>,
}

impl<DB: sqlx::Database> fmt::Debug for IamPoolBuilder<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamPoolBuilder")
            .field("region", &self.region)
            .field("tunnel", &self.tunnel)
            .field("lifetime", &self.lifetime)
            .field("tls_mode", &self.tls_mode)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

impl<DB: sqlx::Database> IamPoolBuilder<DB>
where
    ConnectOptionsOf<DB>: IamConnectOptions,
{
    /// A builder for a pool connecting with `options`, whose user is the database user tokens are signed for. A
    /// password in them is ignored: the token replaces it.
    #[must_use]
    pub fn new(options: ConnectOptionsOf<DB>) -> Self {
        Self {
            options,
            pool_options: PoolOptions::new(),
            region: None,
            signing_host: None,
            signing_port: None,
            tunnel: None,
            assume_role: None,
            lifetime: TokenLifetime::default(),
            policy: RefreshPolicy::default(),
            tls_mode: TlsMode::default(),
            root_cert: None,
            allow_without_tls: false,
            allow_weaker_tls: false,
            sdk_config: None,
            source: None,
            resource: None,
        }
    }

    /// The pool's own options: size, timeouts, callbacks.
    #[must_use]
    pub fn pool_options(mut self, pool_options: PoolOptions<DB>) -> Self {
        self.pool_options = pool_options;
        self
    }

    /// The endpoint to connect to and sign for, replacing the connect options' host and port.
    #[must_use]
    pub fn endpoint(mut self, host: &str, port: u16) -> Self {
        self.options = self.options.at(host, port);
        self
    }

    /// The database user tokens are signed for and connections log in as.
    #[must_use]
    pub fn user(mut self, user: &str) -> Self {
        self.options = self.options.with_user(user);
        self
    }

    /// The region tokens are signed for; by default read from an RDS host name, else the AWS region chain.
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The host the token names, when it differs from the one connected to (a proxy or tunnel in front of RDS).
    #[must_use]
    pub fn signing_host(mut self, host: impl Into<String>) -> Self {
        self.signing_host = Some(host.into());
        self
    }

    /// The port the token names, likewise.
    #[must_use]
    pub fn signing_port(mut self, port: u16) -> Self {
        self.signing_port = Some(port);
        self
    }

    /// Connect to `tunnel` (an SSH or SSM port forward, a local proxy) while tokens still name the endpoint.
    ///
    /// Under [`TlsMode::VerifyFull`] the certificate is checked for the endpoint's name (the signing host), not the
    /// tunnel's: sqlx cannot do that, so the pool does the TLS itself, through a relay in the process that sqlx
    /// reaches by a Unix socket in a directory only this user can enter. Give the CA bundle with
    /// [`IamPoolBuilder::root_cert`], not in the connect options, which the relay does not read.
    #[must_use]
    pub fn tunnel(mut self, tunnel: HostPort) -> Self {
        self.tunnel = Some(tunnel);
        self
    }

    /// Sign with a role's temporary credentials, assumed through STS with the process's own.
    #[must_use]
    pub fn assume_role(mut self, role: AssumeRole) -> Self {
        self.assume_role = Some(role);
        self
    }

    /// How long each token is signed to live (15 minutes by default).
    #[must_use]
    pub fn token_lifetime(mut self, lifetime: TokenLifetime) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// When tokens are renewed and how failed renewals are retried.
    #[must_use]
    pub fn refresh_policy(mut self, policy: RefreshPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// TLS to the server; [`TlsMode::VerifyFull`] by default.
    #[must_use]
    pub fn tls_mode(mut self, mode: TlsMode) -> Self {
        self.tls_mode = mode;
        self
    }

    /// The CA certificates to trust, such as RDS's `global-bundle.pem`. Where the pool does the TLS itself (through
    /// a [tunnel](IamPoolBuilder::tunnel), and under [`TlsMode::VerifyCa`]), they are trusted alone; sqlx's own TLS,
    /// used otherwise, trusts them beside the public web roots and checks the host name.
    #[must_use]
    pub fn root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.root_cert = Some(path.into());
        self
    }

    /// Permit [`TlsMode::Disable`] and [`TlsMode::Prefer`], under which tokens may travel in clear, for local
    /// experiments only. Implies [`IamPoolBuilder::allow_weaker_tls`].
    #[must_use]
    pub fn allow_without_tls(mut self, allow: bool) -> Self {
        self.allow_without_tls = allow;
        self
    }

    /// Permit [`TlsMode::Require`] and [`TlsMode::VerifyCa`]: encrypted, but to a server whose certificate or name
    /// is not checked, so whoever can intercept the connection can collect tokens. For a server that cannot present
    /// a verifiable certificate; the pool logs a warning when it is built.
    #[must_use]
    pub fn allow_weaker_tls(mut self, allow: bool) -> Self {
        self.allow_weaker_tls = allow;
        self
    }

    /// The AWS configuration whose credentials sign tokens; the SDK's default chain when not given.
    #[must_use]
    pub fn sdk_config(mut self, config: SdkConfig) -> Self {
        self.sdk_config = Some(config);
        self
    }

    /// Credentials from `source` instead of IAM tokens from [`RdsTokenSigner`]: a password held in Secrets Manager
    /// (`SecretsManagerSource`, feature `secrets-manager`), another token service, or a test double. A credential
    /// that names a user (a secret's) logs in as that user, whatever the connect options say. The region, role,
    /// lifetime and AWS configuration settings are then not used; the TLS rules are the same.
    #[must_use]
    pub fn credential_source(mut self, source: impl CredentialSource) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Look the endpoint up from a cluster or instance identifier when the pool is built.
    #[cfg(feature = "discovery")]
    #[must_use]
    pub fn discover(mut self, resource: DatabaseResource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// Every setting in `settings`.
    #[cfg(feature = "serde")]
    #[must_use]
    pub fn settings(mut self, settings: &crate::IamSettings) -> Self {
        self.region.clone_from(&settings.region);
        self.signing_host.clone_from(&settings.signing_host);
        self.signing_port = settings.signing_port;
        self.tunnel.clone_from(&settings.tunnel);
        self.assume_role.clone_from(&settings.assume_role);
        self.lifetime = settings.token_lifetime;
        self.policy = settings.refresh;
        self.allow_without_tls = settings.allow_without_tls;
        self.allow_weaker_tls = settings.allow_weaker_tls;
        self.resource.clone_from(&settings.resource);
        self
    }

    /// Has the first credential (signs the first token) and creates the pool, which opens connections when they are
    /// first needed: a configuration or credential problem shows here, a server that refuses them at the first
    /// query. Use [`IamPoolBuilder::connect`] to find out at once.
    pub async fn build(self) -> Result<IamPool<DB>, Error> {
        // The one rule for what TLS credentials may travel over, whatever their source: verify-full, or a weaker mode
        // a setting names on purpose.
        let allowed_by = match self.tls_mode {
            TlsMode::VerifyFull => None,
            TlsMode::Disable | TlsMode::Prefer if self.allow_without_tls => Some("allow_without_tls"),
            TlsMode::Disable | TlsMode::Prefer => return Err(Error::TlsRequired),
            TlsMode::Require | TlsMode::VerifyCa if self.allow_weaker_tls => Some("allow_weaker_tls"),
            TlsMode::Require | TlsMode::VerifyCa if self.allow_without_tls => Some("allow_without_tls"),
            TlsMode::Require | TlsMode::VerifyCa => return Err(Error::TlsUnverified { mode: self.tls_mode }),
        };
        if let Some(allowed_by) = allowed_by {
            tracing::warn!(
                mode = ?self.tls_mode,
                allowed_by,
                "credentials are sent without full certificate and host name verification, as allowed by \
                 `{allowed_by}`; use TlsMode::VerifyFull outside local experiments"
            );
        }
        let mut options = self.options;
        let mut sdk_config = self.sdk_config;
        if let Some(resource) = &self.resource {
            let (endpoint, config) = discover_endpoint(resource, self.region.as_deref(), sdk_config).await?;
            options = options.at(&endpoint.0, endpoint.1);
            sdk_config = Some(config);
        }
        let (host, port) = options.address();
        let target = TokenTarget {
            host: self.signing_host.unwrap_or(host),
            port: self.signing_port.unwrap_or(port),
            user: options.user(),
        };
        // Where sqlx's TLS cannot check the certificate as asked, the pool's own relay does (see `relay`): through a
        // tunnel, for the endpoint's name rather than the tunnel's; with a CA bundle and no name to check, against
        // that bundle alone rather than the bundle and the web roots.
        let relay_check = match (self.tls_mode, &self.tunnel, &self.root_cert) {
            (TlsMode::VerifyFull, Some(_), _) => Some(Check::ChainAndName(target.host.clone())),
            (TlsMode::VerifyCa, Some(_), _) | (TlsMode::VerifyCa, None, Some(_)) => Some(Check::Chain),
            _ => None,
        };
        if let Some(tunnel) = &self.tunnel {
            options = options.at(&tunnel.host, tunnel.port);
        }
        let (options, relay) = match relay_check {
            Some(check) => {
                let relay = TlsRelay::start(
                    options.protocol(),
                    options.address(),
                    check,
                    self.root_cert.as_deref(),
                    &options.socket_name(),
                )?;
                (options.through_socket(relay.socket()), Some(Arc::new(relay)))
            }
            None => (options.with_tls(self.tls_mode, self.root_cert.as_deref()), None),
        };
        let options = options.with_cleartext_token_under(self.tls_mode);
        let source = match self.source {
            Some(source) => source,
            None => {
                let mut signer = RdsTokenSigner::new(target, self.region, self.lifetime, sdk_config).await?;
                if let Some(role) = &self.assume_role {
                    signer = signer.assuming(role).await;
                }
                Box::new(signer)
            }
        };
        let first = source.fetch().await?;
        let (host, port) = options.address();
        let pool = self.pool_options.connect_lazy_with(presenting(options.clone(), &first));
        // The refresher owns a handle on the pool, so each renewed credential is installed for the connections opened
        // from then on; open ones carry on, as RDS allows (a rotated password does not end the sessions it opened).
        // The relay, if there is one, lives as long as the options that lead to it.
        let installer = {
            let pool = pool.clone();
            move |credential: &Credential| {
                let _relay = &relay;
                pool.set_connect_options(presenting(options.clone(), credential));
            }
        };
        let refresher = TokenRefresher::with_first_token(source, first, self.policy, installer);
        Ok(IamPool {
            pool,
            refresher: Arc::new(refresher),
            endpoint: format!("{host}:{port}"),
        })
    }

    /// Like [`IamPoolBuilder::build`], then opens the first connection, so that a wrong host, token, user or
    /// database shows at once with the server's own explanation.
    pub async fn connect(self) -> Result<IamPool<DB>, Error> {
        let pool = self.build().await?;
        pool.pool.acquire().await.map_err(|source| pool.connect_error(source))?;
        Ok(pool)
    }
}

/// `options` logging in with `credential`: as its user when it names one (a secret's, which rotation may change), with
/// its secret as the password.
fn presenting<O: IamConnectOptions>(options: O, credential: &Credential) -> O {
    let options = match credential.user() {
        Some(user) => options.with_user(user),
        None => options,
    };
    options.with_token(credential.secret().expose_secret())
}

/// The endpoint RDS gives for `resource`, and the AWS configuration it was asked with.
#[cfg(feature = "discovery")]
async fn discover_endpoint(
    resource: &DatabaseResource,
    region: Option<&str>,
    sdk_config: Option<SdkConfig>,
) -> Result<((String, u16), SdkConfig), Error> {
    let config = match sdk_config {
        Some(config) => config,
        None => crate::signer::load_aws_config(region).await,
    };
    let endpoint = crate::discovery::discover(&config, resource).await?;
    tracing::info!(%resource, host = endpoint.host, port = endpoint.port, "database endpoint discovered");
    Ok(((endpoint.host, endpoint.port), config))
}

/// Without the `discovery` feature a resource can still come from [`crate::IamSettings`], and cannot be looked up.
#[cfg(not(feature = "discovery"))]
async fn discover_endpoint(
    resource: &DatabaseResource,
    _: Option<&str>,
    _: Option<SdkConfig>,
) -> Result<((String, u16), SdkConfig), Error> {
    Err(Error::InvalidSetting {
        setting: match resource {
            DatabaseResource::Cluster { .. } => "cluster_id",
            DatabaseResource::Instance { .. } => "instance_id",
        },
        problem: "needs rds-iam's `discovery` feature to look the endpoint up".to_owned(),
    })
}

/// A sqlx pool whose new connections authenticate with IAM tokens (or another source's credentials) kept fresh by a
/// [`TokenRefresher`].
///
/// Cheap to clone; clones share the pool and the refresher. Renewal stops when the last clone is dropped.
#[derive(Debug)]
pub struct IamPool<DB: sqlx::Database> {
    pool: Pool<DB>,
    refresher: Arc<TokenRefresher>,
    endpoint: String,
}

impl<DB: sqlx::Database> Clone for IamPool<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            refresher: Arc::clone(&self.refresher),
            endpoint: self.endpoint.clone(),
        }
    }
}

impl<DB: sqlx::Database> IamPool<DB>
where
    ConnectOptionsOf<DB>: IamConnectOptions,
{
    /// Starts a builder from the driver's connect options.
    #[must_use]
    pub fn builder(options: ConnectOptionsOf<DB>) -> IamPoolBuilder<DB> {
        IamPoolBuilder::new(options)
    }
}

impl<DB: sqlx::Database> IamPool<DB> {
    /// The sqlx pool, for queries.
    #[must_use]
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// The refresher behind the pool: the current credential, renewal on demand.
    #[must_use]
    pub fn refresher(&self) -> &Arc<TokenRefresher> {
        &self.refresher
    }

    /// The credential's state and the renewal counters.
    #[must_use]
    pub fn token_status(&self) -> TokenStatus {
        self.refresher.status()
    }

    /// The pool and its refresher, for wrapping in another client (as [`crate::IamDatabase`] does for SeaORM).
    /// Keep the refresher alive as long as the pool: dropping it stops renewal.
    #[must_use]
    pub fn into_parts(self) -> (Pool<DB>, Arc<TokenRefresher>) {
        (self.pool, self.refresher)
    }

    /// Runs `operation`, and once more with a renewed credential if the server refused the connection's; see
    /// [`TokenRefresher::retry_once_on_auth_failure`].
    pub async fn run<T, E, F, Fut>(&self, operation: F) -> Result<T, E>
    where
        E: Classify + std::error::Error + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.refresher.retry_once_on_auth_failure(operation).await
    }

    fn connect_error(&self, source: sqlx::Error) -> Error {
        let endpoint = self.endpoint.clone();
        // sqlx's own text for a switch to mysql_clear_password it was not allowed to follow; it says nothing of the
        // fix.
        if matches!(&source, sqlx::Error::Protocol(message) if message.contains("mysql_cleartext_plugin disabled")) {
            return Error::CleartextNeedsTls { endpoint };
        }
        Error::Connect { endpoint, source }
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use aws_credential_types::Credentials;
    use secrecy::ExposeSecret;
    use sqlx::postgres::PgConnectOptions;

    use super::*;

    /// Static credentials and a region: everything signing needs, with no network.
    async fn offline_aws() -> SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .credentials_provider(Credentials::new(
                "AKIAUNITTEST00000001",
                "unit/test/secret",
                None,
                None,
                "unit-test",
            ))
            .region(aws_config::Region::new("eu-west-1"))
            .load()
            .await
    }

    #[tokio::test]
    async fn tls_weaker_than_verify_full_is_refused_unless_a_setting_allows_it_by_name() {
        let options = PgConnectOptions::new().host("db.example").username("app");
        let aws = offline_aws().await;
        let build = |mode, allow_without_tls, allow_weaker_tls| {
            IamPool::<sqlx::Postgres>::builder(options.clone())
                .tls_mode(mode)
                .allow_without_tls(allow_without_tls)
                .allow_weaker_tls(allow_weaker_tls)
                .sdk_config(aws.clone())
                .build()
        };
        // (mode, allow_without_tls, allow_weaker_tls, built)
        let cases = [
            (TlsMode::VerifyFull, false, false, true),
            (TlsMode::VerifyCa, false, false, false),
            (TlsMode::Require, false, false, false),
            (TlsMode::VerifyCa, false, true, true),
            (TlsMode::Require, false, true, true),
            // Prefer falls back to no TLS when whoever answers declines it: allowing weaker TLS is not enough.
            (TlsMode::Prefer, false, true, false),
            (TlsMode::Disable, false, true, false),
            (TlsMode::Prefer, true, false, true),
            (TlsMode::Disable, true, false, true),
            (TlsMode::Require, true, false, true),
        ];
        for (mode, allow_without_tls, allow_weaker_tls, built) in cases {
            let result = build(mode, allow_without_tls, allow_weaker_tls).await;
            let case = format!("{mode:?}, allow_without_tls {allow_without_tls}, allow_weaker_tls {allow_weaker_tls}");
            match result {
                Ok(_) => assert!(built, "{case}: built"),
                Err(Error::TlsRequired) => {
                    assert!(!built && matches!(mode, TlsMode::Disable | TlsMode::Prefer), "{case}")
                }
                Err(Error::TlsUnverified { mode: refused }) => assert!(!built && refused == mode, "{case}"),
                Err(other) => panic!("{case}: {other}"),
            }
        }
    }

    #[tokio::test]
    async fn through_a_tunnel_the_pool_connects_to_the_tunnel_and_the_token_names_the_endpoint() {
        let options = PgConnectOptions::new()
            .host("tasks.cluster-abc.eu-west-1.rds.amazonaws.com")
            .port(5432)
            .username("db iam+user");
        let pool = IamPool::<sqlx::Postgres>::builder(options)
            .tunnel("127.0.0.1:15432".parse().expect("host:port"))
            .sdk_config(offline_aws().await)
            .build()
            .await
            .expect("a lazy pool");

        // sqlx connects in clear to the pool's TLS relay, which connects to the tunnel and checks the certificate
        // for the endpoint's name.
        let connect_to = pool.pool().connect_options();
        assert!(
            connect_to
                .get_socket()
                .is_some_and(|dir| dir.join(".s.PGSQL.15432").exists())
        );
        assert!(matches!(connect_to.get_ssl_mode(), sqlx::postgres::PgSslMode::Disable));
        assert_eq!(pool.endpoint, "127.0.0.1:15432");
        let token = pool.refresher().current();
        let token = token.secret().expose_secret();
        assert!(
            token.starts_with("tasks.cluster-abc.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=db"),
            "{token}"
        );
        assert!(token.contains("%2Feu-west-1%2Frds-db%2Faws4_request"), "{token}");
    }

    /// Gives a password for each user in turn, as an alternating-users rotation does.
    #[derive(Debug)]
    struct AlternatingUsers(std::sync::Mutex<std::collections::VecDeque<&'static str>>);

    impl fmt::Display for AlternatingUsers {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("alternating test users")
        }
    }

    impl CredentialSource for AlternatingUsers {
        fn fetch(&self) -> crate::signer::CredentialFuture<'_> {
            let user = self.0.lock().unwrap().pop_front().expect("a user to give");
            Box::pin(async move {
                Ok(Credential::password(
                    user,
                    secrecy::SecretString::from("password"),
                    tokio::time::Instant::now(),
                    std::time::Duration::from_secs(300),
                ))
            })
        }
    }

    #[tokio::test]
    async fn new_connections_log_in_as_the_user_a_credential_names_and_follow_it_when_it_changes() {
        let options = PgConnectOptions::new().host("db.example").username("from_the_options");
        let users = AlternatingUsers(std::sync::Mutex::new(["app", "app_clone"].into()));
        let pool = IamPool::<sqlx::Postgres>::builder(options)
            .credential_source(users)
            .build()
            .await
            .expect("a lazy pool");
        assert_eq!(pool.pool().connect_options().get_username(), "app");

        pool.refresher().refresh_now().await.expect("the second user");

        assert_eq!(pool.pool().connect_options().get_username(), "app_clone");
    }
}
