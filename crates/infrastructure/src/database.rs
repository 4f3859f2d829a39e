//! Opening the connection pool, checking that it is alive, and running migrations through it.

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_config::SdkConfig;
use migration::{Migrator, MigratorTrait};
use sea_orm::{DatabaseConnection, DbErr, RuntimeErr, SqlxMySqlConnector, SqlxPostgresConnector, SqlxSqliteConnector};
use secrecy::ExposeSecret;
use sqlx::Connection;
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::pool::{Pool, PoolOptions};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

use crate::discovery::{DiscoveryError, discover};
use crate::iam::{IamError, IamTokenSource, RefreshPolicy, TokenRefresher, TokenStatus, TokenTarget, load_aws_config};
use crate::settings::{AuthMode, DatabaseBackend, DatabaseSettings, TlsMode};

/// Why the database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "cannot connect to {url}: the server asks for the IAM token in clear text (mysql_clear_password), which the \
         service only sends over TLS; set database.tls.mode (APP__DATABASE__TLS__MODE) to verify-full, verify-ca or \
         require"
    )]
    CleartextNeedsTls { url: String },
    #[error("database.url `{url}` is not usable: {source}")]
    Options {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration failed: {0}")]
    Migration(#[source] DbErr),
    #[error(transparent)]
    Iam(#[from] IamError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

/// One migration and whether it has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
}

/// The service's handle on its database: a pool of connections shared by every worker, and, with IAM
/// authentication, the refresher that keeps the pool supplied with valid tokens.
#[derive(Debug, Clone)]
pub struct Database {
    connection: DatabaseConnection,
    refresher: Option<Arc<TokenRefresher>>,
}

impl Database {
    /// Opens the pool and proves it works by opening its first connection, so that a wrong host, password, token or
    /// database name stops the service at start with the driver's own explanation. IAM credentials come from the
    /// AWS SDK's default chain.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, DatabaseError> {
        Self::connect_with_aws(settings, None).await
    }

    /// Like [`Database::connect`], with the AWS configuration (credentials, region) given by the caller, for
    /// applications that already load one.
    #[tracing::instrument(name = "connect to database", skip_all, fields(url = %settings.url, auth = ?settings.auth))]
    pub async fn connect_with_aws(settings: &DatabaseSettings, aws: Option<SdkConfig>) -> Result<Self, DatabaseError> {
        let connect_error = |source| connect_error(settings, source);
        let (connection, refresher) = match (settings.backend(), settings.auth) {
            (DatabaseBackend::Postgres, AuthMode::Password) => {
                let options = with_password(postgres_options(settings)?, settings, PgConnectOptions::password);
                let pool = pool_options(settings)
                    .connect_with(options)
                    .await
                    .map_err(connect_error)?;
                (SqlxPostgresConnector::from_sqlx_postgres_pool(pool), None)
            }
            (DatabaseBackend::Postgres, AuthMode::Iam) => {
                let (pool, refresher) = connect_with_iam(settings, aws, postgres_options(settings)?).await?;
                (
                    SqlxPostgresConnector::from_sqlx_postgres_pool(pool),
                    Some(Arc::new(refresher)),
                )
            }
            (DatabaseBackend::MySql, AuthMode::Iam) => {
                let (pool, refresher) = connect_with_iam(settings, aws, mysql_options(settings)?).await?;
                (
                    SqlxMySqlConnector::from_sqlx_mysql_pool(pool),
                    Some(Arc::new(refresher)),
                )
            }
            (DatabaseBackend::MySql, AuthMode::Password) => {
                let options = with_password(mysql_options(settings)?, settings, MySqlConnectOptions::password);
                let pool = pool_options(settings)
                    .connect_with(options)
                    .await
                    .map_err(connect_error)?;
                (SqlxMySqlConnector::from_sqlx_mysql_pool(pool), None)
            }
            (DatabaseBackend::Sqlite, _) => {
                let pool = pool_options(settings)
                    .connect_with(sqlite_options(settings)?)
                    .await
                    .map_err(connect_error)?;
                (SqlxSqliteConnector::from_sqlx_sqlite_pool(pool), None)
            }
        };
        tracing::info!(backend = ?settings.backend(), "database pool open");
        Ok(Self { connection, refresher })
    }

    /// Runs one database operation; when it fails because the server refused a new connection's credentials (an
    /// expired or revoked IAM token), renews the token at once and runs it once more, as the AWS JDBC wrapper does.
    /// The operation must not have had any effect when its connection was refused, which holds for every statement:
    /// the failure happens before it is sent.
    pub async fn run<T, F, Fut>(&self, operation: F) -> Result<T, DbErr>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, DbErr>>,
    {
        match (operation().await, &self.refresher) {
            (Err(error), Some(refresher)) if is_authentication_failure(&error) => {
                tracing::warn!(%error, "the server refused a new connection's token; renewing it and retrying once");
                if let Err(renewal) = refresher.refresh_now().await {
                    tracing::warn!(error = %renewal, "could not renew the token for the retry");
                }
                operation().await
            }
            (result, _) => result,
        }
    }

    /// The IAM token's state, when IAM authentication is in use.
    #[must_use]
    pub fn token_status(&self) -> Option<TokenStatus> {
        self.refresher.as_ref().map(|refresher| refresher.status())
    }

    #[must_use]
    pub fn connection(&self) -> &DatabaseConnection {
        &self.connection
    }

    /// Round-trips to the server: the readiness probe.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.run(|| self.connection.ping()).await
    }

    /// Applies pending migrations, or at most `steps` of them.
    pub async fn migrate_up(&self, steps: Option<u32>) -> Result<(), DatabaseError> {
        Migrator::up(&self.connection, steps)
            .await
            .map_err(DatabaseError::Migration)
    }

    /// Reverts the last `steps` migrations (one when `None`).
    pub async fn migrate_down(&self, steps: Option<u32>) -> Result<(), DatabaseError> {
        Migrator::down(&self.connection, Some(steps.unwrap_or(1)))
            .await
            .map_err(DatabaseError::Migration)
    }

    /// Every known migration, oldest first, and whether it has been applied.
    pub async fn migration_status(&self) -> Result<Vec<MigrationState>, DatabaseError> {
        let pending = Migrator::get_pending_migrations(&self.connection)
            .await
            .map_err(DatabaseError::Migration)?;
        let pending: Vec<&str> = pending.iter().map(|migration| migration.name()).collect();
        Ok(Migrator::migrations()
            .iter()
            .map(|migration| MigrationState {
                name: migration.name().to_owned(),
                applied: !pending.contains(&migration.name()),
            })
            .collect())
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(self) {
        if let Err(error) = self.connection.close().await {
            tracing::warn!(%error, "closing the database pool failed");
        }
    }
}

/// A connection used this recently is known to be alive; older idle ones are pinged before they are handed out.
/// HikariCP makes the same trade (its `aliveBypassWindowMs`): a ping on every checkout would double the round trips
/// of a busy service, and no ping at all would hand out connections the server closed while they sat idle.
const RECENTLY_USED: Duration = Duration::from_millis(500);

/// Pool options with the lifetime and idle limits enforced at checkout and return rather than by sqlx's background
/// reaper: in sqlx 0.9.0 that reaper can read an underflowed idle count and spin forever without yielding, taking its
/// runtime thread down with it (sqlx issue 3645, fixed upstream after 0.9.0). Under churn that is not rare: the
/// token-rotation test, whose connections live 3 seconds, hit it. Idle connections are therefore closed when next
/// checked out rather than on a timer.
fn pool_options<DB: sqlx::Database>(settings: &DatabaseSettings) -> PoolOptions<DB> {
    let max_lifetime = settings.max_lifetime();
    let idle_timeout = settings.idle_timeout();
    PoolOptions::new()
        .max_lifetime(None)
        .idle_timeout(None)
        .test_before_acquire(false)
        .before_acquire(move |connection: &mut DB::Connection, metadata| {
            Box::pin(async move {
                if metadata.age >= max_lifetime || metadata.idle_for >= idle_timeout {
                    // `false` makes the pool close this connection and hand out another one.
                    return Ok(false);
                }
                if metadata.idle_for > RECENTLY_USED {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .after_release(move |_, metadata| Box::pin(async move { Ok(metadata.age < max_lifetime) }))
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout())
}

/// What a driver's connection is configured with.
type ConnectOptionsOf<DB> = <<DB as sqlx::Database>::Connection as Connection>::Options;

fn connect_error(settings: &DatabaseSettings, source: sqlx::Error) -> DatabaseError {
    let url = settings.url.to_string();
    // sqlx's own text for a switch to mysql_clear_password it was not allowed to follow; it says nothing of the fix.
    if matches!(&source, sqlx::Error::Protocol(message) if message.contains("mysql_cleartext_plugin disabled")) {
        return DatabaseError::CleartextNeedsTls { url };
    }
    DatabaseError::Connect { url, source }
}

/// What IAM authentication needs from a driver's connect options.
trait IamConnectOptions: Clone + Send + Sync + 'static {
    fn address(&self) -> (String, u16);
    fn at(self, host: &str, port: u16) -> Self;
    fn with_token(self, token: &str) -> Self;
}

/// Both drivers spell these the same way, but share no trait that has them.
macro_rules! iam_connect_options {
    ($($options:ty),+) => {
        $(
            impl IamConnectOptions for $options {
                fn address(&self) -> (String, u16) {
                    (self.get_host().to_owned(), self.get_port())
                }

                fn at(self, host: &str, port: u16) -> Self {
                    self.host(host).port(port)
                }

                fn with_token(self, token: &str) -> Self {
                    self.password(token)
                }
            }
        )+
    };
}

iam_connect_options!(PgConnectOptions, MySqlConnectOptions);

/// Signs the first token, opens the pool with it, and has every later token installed as the password of the
/// connections the pool opens from then on (`Pool::set_connect_options`); open connections keep running, as on RDS.
///
/// With a cluster or instance id, the endpoint comes from RDS (`DescribeDBClusters`/`DescribeDBInstances`) rather
/// than from the URL. Through a tunnel the pool connects to the tunnel, while tokens still name the endpoint.
async fn connect_with_iam<DB: sqlx::Database>(
    settings: &DatabaseSettings,
    mut aws: Option<SdkConfig>,
    mut base: ConnectOptionsOf<DB>,
) -> Result<(Pool<DB>, TokenRefresher), DatabaseError>
where
    ConnectOptionsOf<DB>: IamConnectOptions,
{
    let (mut host, mut port) = base.address();
    if let Some(resource) = settings.iam.resource() {
        let config = match aws {
            Some(config) => config,
            None => load_aws_config(settings.iam.region.as_deref()).await,
        };
        let endpoint = discover(&config, &resource).await?;
        aws = Some(config);
        tracing::info!(%resource, host = endpoint.host, port = endpoint.port, "database endpoint discovered");
        base = base.at(&endpoint.host, endpoint.port);
        (host, port) = (endpoint.host, endpoint.port);
    }
    if let Some((tunnel_host, tunnel_port)) = settings.iam.tunnel() {
        base = base.at(tunnel_host, tunnel_port);
    }
    let target = TokenTarget {
        host: settings.iam.signing_host.clone().unwrap_or(host),
        port: settings.iam.signing_port.unwrap_or(port),
        user: percent_encoding::percent_decode_str(settings.url.as_url().username())
            .decode_utf8_lossy()
            .into_owned(),
    };
    let lifetime = Duration::from_secs(settings.iam.token_lifetime_secs);
    let mut source = IamTokenSource::new(target, settings.iam.region.clone(), lifetime, aws).await?;
    if let Some(role) = settings.iam.assume_role() {
        source = source.assuming(&role).await;
    }
    let pool_cell: Arc<OnceLock<Pool<DB>>> = Arc::new(OnceLock::new());
    let installer = {
        let pool_cell = Arc::clone(&pool_cell);
        let base = base.clone();
        move |token: &crate::iam::IamToken| {
            if let Some(pool) = pool_cell.get() {
                pool.set_connect_options(base.clone().with_token(token.secret().expose_secret()));
            }
        }
    };
    let refresher = TokenRefresher::start(source, RefreshPolicy::from_settings(&settings.iam), installer).await?;
    let first = refresher.current();
    let pool = pool_options(settings)
        .connect_with(base.clone().with_token(first.secret().expose_secret()))
        .await
        .map_err(|source| connect_error(settings, source))?;
    let _ = pool_cell.set(pool.clone());
    // A renewal between reading `first` and filling the cell would otherwise be lost.
    pool.set_connect_options(base.with_token(refresher.current().secret().expose_secret()));
    Ok((pool, refresher))
}

/// The driver options from the URL and the TLS settings, without any password.
fn postgres_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, DatabaseError> {
    let options: PgConnectOptions = options_from_url(settings)?;
    warn_unless_fully_verified(settings);
    let options = options.ssl_mode(match settings.tls_mode() {
        TlsMode::Disable => PgSslMode::Disable,
        TlsMode::Prefer => PgSslMode::Prefer,
        TlsMode::Require => PgSslMode::Require,
        TlsMode::VerifyCa => PgSslMode::VerifyCa,
        TlsMode::VerifyFull => PgSslMode::VerifyFull,
    });
    let options = match &settings.tls.root_cert {
        Some(path) => options.ssl_root_cert(path),
        None => options,
    };
    Ok(options.application_name("tasks-api"))
}

fn warn_unless_fully_verified(settings: &DatabaseSettings) {
    let mode = settings.tls_mode();
    if settings.auth == AuthMode::Iam && mode != TlsMode::VerifyFull {
        tracing::warn!(
            ?mode,
            "IAM tokens are sent without full certificate and host name verification; use database.tls.mode = \
             verify-full outside local experiments"
        );
    }
}

/// SQLSTATE class 28, invalid authorization: the server refused the credentials of a new connection.
fn is_authentication_failure(error: &DbErr) -> bool {
    let (DbErr::Conn(RuntimeErr::SqlxError(error))
    | DbErr::Exec(RuntimeErr::SqlxError(error))
    | DbErr::Query(RuntimeErr::SqlxError(error))) = error
    else {
        return false;
    };
    matches!(error.as_ref(), sqlx::Error::Database(error) if error.code().is_some_and(|code| code.starts_with("28")))
}

/// The driver's options parsed from `database.url`.
fn options_from_url<O: FromStr<Err = sqlx::Error>>(settings: &DatabaseSettings) -> Result<O, DatabaseError> {
    O::from_str(settings.url.as_url().as_str()).map_err(|source| DatabaseError::Options {
        url: settings.url.to_string(),
        source,
    })
}

/// The configured static password, if any, set with the driver's own setter.
fn with_password<O>(options: O, settings: &DatabaseSettings, set: impl FnOnce(O, &str) -> O) -> O {
    match settings.password() {
        Some(password) => set(options, password.expose_secret()),
        None => options,
    }
}

/// The driver options from the URL and the TLS settings, without any password; with IAM, the cleartext plugin the
/// token is sent with.
fn mysql_options(settings: &DatabaseSettings) -> Result<MySqlConnectOptions, DatabaseError> {
    let options: MySqlConnectOptions = options_from_url(settings)?;
    warn_unless_fully_verified(settings);
    let mode = settings.tls_mode();
    // IAM tokens travel in clear text inside the TLS session, so the plugin is allowed only when TLS is required.
    let cleartext_token =
        settings.auth == AuthMode::Iam && matches!(mode, TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull);
    let options = options
        .enable_cleartext_plugin(cleartext_token)
        .ssl_mode(match mode {
            TlsMode::Disable => MySqlSslMode::Disabled,
            TlsMode::Prefer => MySqlSslMode::Preferred,
            TlsMode::Require => MySqlSslMode::Required,
            TlsMode::VerifyCa => MySqlSslMode::VerifyCa,
            TlsMode::VerifyFull => MySqlSslMode::VerifyIdentity,
        })
        // 4-byte UTF-8 on the connection too, or emoji are mangled before they reach the utf8mb4 column.
        .charset("utf8mb4");
    Ok(match &settings.tls.root_cert {
        Some(path) => options.ssl_ca(path),
        None => options,
    })
}

fn sqlite_options(settings: &DatabaseSettings) -> Result<SqliteConnectOptions, DatabaseError> {
    let options: SqliteConnectOptions = options_from_url(settings)?;
    // WAL lets readers proceed while one connection writes; the busy timeout makes concurrent writers queue for the
    // lock instead of failing with SQLITE_BUSY.
    Ok(options
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(settings.acquire_timeout())
        .foreign_keys(true))
}
