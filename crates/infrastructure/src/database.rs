//! Opening the connection pool, with a password, with IAM tokens or with a Secrets Manager secret (both through
//! `rds-iam`), checking that it is alive, and running migrations through it.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::SdkConfig;
use migration::{Migrator, MigratorTrait};
use rds_iam::{
    Classify, DsqlAction, DsqlTokenSigner, ErrorClass, IamConnectOptions, IamPoolBuilder, IamSettings, RefreshPolicy,
    SecretsManagerSource, TlsMode, TokenRefresher, TokenStatus, error_chain,
};
use sea_orm::{DatabaseConnection, DbErr};
use secrecy::{ExposeSecret, SecretString};
use sqlx::Connection;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

use crate::connections::{self, Connections, Lease, Occupancy, RECENTLY_USED, ServerRole};
use crate::settings::{
    Auth, DatabaseBackend, DatabaseSettings, DatabaseUrl, DsqlSettings, PoolSettings, SecretsManagerSettings,
    TlsSettings, key_and_variable,
};
use crate::turnover::Turnover;

/// Why the database could not be opened or migrated. The text names the settings to change; the cause is the
/// error's source.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database.url `{url}` is not usable")]
    Options {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration failed")]
    Migration(#[source] DbErr),
    #[error("{}", iam_hint(.0))]
    Iam(#[source] rds_iam::Error),
    #[error("{}", secrets_manager_hint(.0))]
    SecretsManager(#[source] rds_iam::Error),
    #[error("{}", dsql_hint(.0))]
    Dsql(#[source] rds_iam::Error),
    /// The secret and the URL disagree on the engine, or neither says where the database is.
    #[error("{0}")]
    SecretMismatch(String),
}

/// What to change in this service's settings for each way IAM authentication can fail to start.
fn iam_hint(error: &rds_iam::Error) -> String {
    match error {
        rds_iam::Error::NoRegion => format!(
            "IAM authentication has no region: set {}",
            key_and_variable("database.iam.region")
        ),
        rds_iam::Error::TlsRequired => format!(
            "IAM authentication without guaranteed TLS (tls.mode disable or prefer, perhaps from the URL's sslmode): \
             set {} to verify-full, or {} = true for a local experiment",
            key_and_variable("database.tls.mode"),
            key_and_variable("database.iam.allow_without_tls")
        ),
        rds_iam::Error::TlsUnverified { mode } => format!(
            "IAM tokens would go to a server that is not fully verified (tls.mode {mode:?}, perhaps from the URL's \
             sslmode): set {} to verify-full, or {} = true on purpose",
            key_and_variable("database.tls.mode"),
            key_and_variable("database.iam.allow_weaker_tls")
        ),
        rds_iam::Error::CleartextNeedsTls { .. } => format!(
            "IAM tokens are only sent over TLS: set {} to verify-full, verify-ca or require",
            key_and_variable("database.tls.mode")
        ),
        rds_iam::Error::InvalidSetting { setting, .. } => {
            format!("IAM setting {}", key_and_variable(&format!("database.iam.{setting}")))
        }
        _ => "IAM authentication could not start".to_owned(),
    }
}

/// What to change in this service's settings for each way Aurora DSQL authentication can fail to start; as for RDS
/// tokens but for the region, which DSQL host names carry too.
fn dsql_hint(error: &rds_iam::Error) -> String {
    match error {
        rds_iam::Error::NoRegion => format!(
            "Aurora DSQL has no region to sign tokens for: set {}, or write the endpoint CLUSTER.dsql.REGION.on.aws \
             in {}",
            key_and_variable("database.iam.region"),
            key_and_variable("database.url")
        ),
        rds_iam::Error::Credential(_) | rds_iam::Error::Connect { .. } => {
            "cannot connect to Aurora DSQL with a DSQL token".to_owned()
        }
        other => iam_hint(other),
    }
}

/// What to change in this service's settings for each way logging in with a Secrets Manager secret can fail to
/// start; the cause (the secret's id, AWS's or the server's answer) follows in the error's source.
fn secrets_manager_hint(error: &rds_iam::Error) -> String {
    match error {
        rds_iam::Error::InvalidSetting { setting, .. } => {
            format!(
                "Secrets Manager setting {}",
                key_and_variable(&format!("database.{setting}"))
            )
        }
        rds_iam::Error::CleartextNeedsTls { .. } => format!(
            "the server asks for the password in clear text (mysql_clear_password), which is only sent over TLS: \
             set {} to verify-full, verify-ca or require",
            key_and_variable("database.tls.mode")
        ),
        _ => format!(
            "cannot log in with the secret that {} names",
            key_and_variable("database.secret_id")
        ),
    }
}

/// One migration and whether it has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
}

/// The pool at one moment, and how many connections it has opened since it was created: for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStatus {
    /// Connections running a statement, being checked before one, or being opened.
    pub in_use: u32,
    /// Open connections doing nothing: idle in the pool, or kept between statements.
    pub idle: u32,
    /// Statements waiting for a connection.
    pub waiting: u32,
    /// New connections (log-ins) since the pool was created.
    pub opened: u64,
    /// Operations run through [`Database::run`] since the pool was created (each counted once, however often it
    /// was retried): what this pool served, beside another pool.
    pub operations: u64,
}

/// How many times [`Database::run`] ran an operation again since the pool was created, by what made it do so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retries {
    /// After [`ErrorClass::ConnectionLost`]: twice at once, then after a back-off (a server restarting).
    pub connection_lost: u64,
    /// After [`ErrorClass::AuthFailure`], with a renewed IAM token or a secret fetched again.
    pub auth_failure: u64,
    /// After [`ErrorClass::ReadOnly`]: the server was not the writer (a failover), and every connection opened
    /// before was given up.
    pub read_only: u64,
    /// After [`ErrorClass::Throttled`]: log-ins came too fast for the server, which asked to back off.
    pub throttled: u64,
    /// After [`ErrorClass::SerializationConflict`] (Aurora DSQL's OC000 and OC001, or 40001), after a back-off.
    pub serialization_conflict: u64,
}

/// What the pool and [`Database::run`] count as they work, read by [`Database::pool_status`] and
/// [`Database::retries`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    opened: AtomicU64,
    operations: AtomicU64,
    connection_lost_retries: AtomicU64,
    auth_failure_retries: AtomicU64,
    read_only_retries: AtomicU64,
    throttled_retries: AtomicU64,
    serialization_conflict_retries: AtomicU64,
}

/// The service's handle on its database: a pool of connections shared by every worker (with the stack of
/// [`Connections`] in front of it that statements run on), and, with IAM or Secrets Manager authentication, the
/// refresher that keeps the pool supplied with valid tokens or the secret's current password.
#[derive(Debug, Clone)]
pub struct Database {
    connections: Arc<Connections>,
    /// SeaORM's own connection over the same pool, for migrations, which need its transactions; parked connections
    /// go back to the pool before each use, so that it has some to give.
    migrations: DatabaseConnection,
    refresher: Option<Arc<TokenRefresher>>,
    counters: Arc<Counters>,
    /// Whether the refresher's credentials are IAM tokens, whose expiry the readiness probe reports.
    tokens: bool,
    /// How long an operation may keep trying while the server is unavailable, throttles or is not the writer.
    patience: Duration,
}

impl Database {
    /// Opens the pool and proves it works by opening its first connection, so that a wrong host, password, token,
    /// secret or database name stops the service at start with the driver's own explanation. AWS credentials (for
    /// IAM and Secrets Manager) come from the AWS SDK's default chain.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, DatabaseError> {
        Self::connect_with_aws(settings, None).await
    }

    /// Like [`Database::connect`], with the AWS configuration (credentials, region) given by the caller, for
    /// applications that already load one.
    #[tracing::instrument(name = "connect to database", skip_all, fields(url = %settings.url, backend = ?settings.backend()))]
    pub async fn connect_with_aws(settings: &DatabaseSettings, aws: Option<SdkConfig>) -> Result<Self, DatabaseError> {
        let counters = Arc::new(Counters::default());
        let turnover = Arc::new(Turnover::new(&settings.pool));
        let database = match (settings.backend(), &settings.auth) {
            (DatabaseBackend::Postgres, Auth::Password(password)) => {
                let pool = connect_with_password::<sqlx::Postgres>(
                    settings,
                    pool_options(&settings.pool, &counters, &turnover),
                    postgres_options(&settings.url, settings)?,
                    password,
                )
                .await?;
                Self::over(pool, settings, None, counters, turnover)
            }
            (DatabaseBackend::MySql, Auth::Password(password)) => {
                let pool = connect_with_password::<sqlx::MySql>(
                    settings,
                    pool_options(&settings.pool, &counters, &turnover),
                    mysql_options(&settings.url, settings)?,
                    password,
                )
                .await?;
                Self::over(pool, settings, None, counters, turnover)
            }
            (DatabaseBackend::Postgres, Auth::Iam(iam)) => {
                let (pool, refresher) = Box::pin(connect_with_iam::<sqlx::Postgres>(
                    settings,
                    iam,
                    aws,
                    pool_options(&settings.pool, &counters, &turnover),
                    postgres_options(&settings.url, settings)?,
                ))
                .await?;
                Self::over(pool, settings, Some(refresher), counters, turnover)
            }
            (DatabaseBackend::MySql, Auth::Iam(iam)) => {
                let (pool, refresher) = Box::pin(connect_with_iam::<sqlx::MySql>(
                    settings,
                    iam,
                    aws,
                    pool_options(&settings.pool, &counters, &turnover),
                    mysql_options(&settings.url, settings)?,
                ))
                .await?;
                Self::over(pool, settings, Some(refresher), counters, turnover)
            }
            (DatabaseBackend::Postgres, Auth::Dsql(dsql)) => {
                let (pool, refresher) = Box::pin(connect_with_dsql(
                    settings,
                    dsql,
                    aws,
                    pool_options(&settings.pool, &counters, &turnover),
                    postgres_options(&settings.url, settings)?,
                ))
                .await?;
                Self::over(pool, settings, Some(refresher), counters, turnover)
            }
            // The settings refuse DSQL with any other scheme.
            (DatabaseBackend::MySql, Auth::Dsql(_)) => {
                return Err(DatabaseError::Dsql(rds_iam::Error::InvalidSetting {
                    setting: "url",
                    problem: "must be postgres:// for Aurora DSQL".to_owned(),
                }));
            }
            (DatabaseBackend::Postgres | DatabaseBackend::MySql, Auth::SecretsManager(secret)) => {
                Box::pin(Self::connect_with_secret(settings, secret, aws, counters, turnover)).await?
            }
            (DatabaseBackend::Sqlite, _) => {
                let pool = pool_options::<sqlx::Sqlite>(&settings.pool, &counters, &turnover)
                    .connect_with(sqlite_options(settings)?)
                    .await
                    .map_err(|source| connect_error(settings, source))?;
                Self::over(pool, settings, None, counters, turnover)
            }
        };
        tracing::info!(backend = ?settings.backend(), "database pool open");
        Ok(database)
    }

    fn over<DB: sqlx::Database>(
        pool: sqlx::Pool<DB>,
        settings: &DatabaseSettings,
        refresher: Option<Arc<TokenRefresher>>,
        counters: Arc<Counters>,
        turnover: Arc<Turnover>,
    ) -> Self
    where
        DatabaseConnection: From<sqlx::Pool<DB>>,
        Connections: From<(sqlx::Pool<DB>, Arc<Turnover>, PoolSettings)>,
    {
        Self {
            migrations: DatabaseConnection::from(pool.clone()),
            connections: Arc::new(Connections::from((pool, turnover, settings.pool))),
            refresher,
            counters,
            tokens: matches!(settings.auth, Auth::Iam(_) | Auth::Dsql(_)),
            patience: settings.pool.acquire_timeout,
        }
    }

    /// Opens a pool whose connections log in as the secret's user with its password. The secret is fetched first for
    /// what it says about the database (its engine, host, port and name, which fill in what the URL leaves out); the
    /// pool then fetches it again, so it starts with the newest value.
    async fn connect_with_secret(
        settings: &DatabaseSettings,
        secret: &SecretsManagerSettings,
        aws: Option<SdkConfig>,
        counters: Arc<Counters>,
        turnover: Arc<Turnover>,
    ) -> Result<Self, DatabaseError> {
        let source = SecretsManagerSource::new(secret.secret_id.clone(), aws)
            .await
            .map_err(DatabaseError::SecretsManager)?
            .renew_every(secret.refresh);
        let contents = source
            .fetch_secret()
            .await
            .map_err(|error| DatabaseError::SecretsManager(error.into()))?;
        let url = settings
            .url
            .completed_from(&contents, &secret.secret_id)
            .map_err(DatabaseError::SecretMismatch)?;
        Ok(match settings.backend() {
            DatabaseBackend::MySql => {
                let options = mysql_options(&url, settings)?;
                let pool_options = pool_options(&settings.pool, &counters, &turnover);
                let (pool, refresher) =
                    connect_with_source::<sqlx::MySql>(settings, pool_options, options, source).await?;
                Self::over(pool, settings, Some(refresher), counters, turnover)
            }
            // PostgreSQL: the settings refuse a sqlite:// URL with Secrets Manager.
            _ => {
                let options = postgres_options(&url, settings)?;
                let pool_options = pool_options(&settings.pool, &counters, &turnover);
                let (pool, refresher) =
                    connect_with_source::<sqlx::Postgres>(settings, pool_options, options, source).await?;
                Self::over(pool, settings, Some(refresher), counters, turnover)
            }
        })
    }

    /// Runs one database operation, giving it the [`Lease`] to run its statements on, and runs it again when an attempt
    /// failed in a way another one can fix:
    /// - its connection was lost ([`ErrorClass::ConnectionLost`]: closed, reset or terminated before a result came
    ///   back, typically a pooled connection the server closed while it sat idle). Every parked connection is
    ///   dropped, and the next attempt runs on connections proven alive just before. Up to [`LOST_CONNECTION_RETRIES`]
    ///   times: a connection proven alive can still be ended a moment later by the same restart or kill;
    /// - with IAM or Secrets Manager, the server refused a new connection's credentials: the token is renewed or
    ///   the secret fetched again (until it holds another password, for up to the acquire time-out: during a
    ///   rotation the password changes on the server first), and the operation runs once more;
    /// - it lost an optimistic-concurrency race ([`ErrorClass::SerializationConflict`]: Aurora DSQL's OC000 and OC001,
    ///   or 40001), so nothing of it was applied: it runs again after a jittered exponential back-off, up to
    ///   [`CONFLICT_RETRIES`] times, so that clients that collided do not collide again in step.
    /// - the server is not the writer ([`ErrorClass::ReadOnly`]: an Aurora failover made it a reader, and this
    ///   service reached it through a connection opened before, or a cluster endpoint whose DNS still names it). Every
    ///   connection opened before now is given up, and the operation runs again on new ones, which resolve the
    ///   endpoint again, until one reaches the new writer;
    /// - the server refused log-ins for coming too fast ([`ErrorClass::Throttled`]), or kept ending connections or
    ///   turning new ones away (a restart, a failover's downtime). The operation waits, with jittered exponential
    ///   back-off, and runs again.
    ///
    /// The last two go on for at most the pool's acquire time-out from the operation's start, as long as a request
    /// would wait for a free connection; then the failure is the caller's to answer (503 with `Retry-After`).
    ///
    /// Running an operation again must be harmless, and every operation of this service is: a refused connection ran
    /// nothing, nor did a statement a read-only server refused; ids are made by the service, so a repeated INSERT
    /// finds its own row (the repository treats that as success, see its `insert_one`); renames and
    /// deletes by id are idempotent; reads change nothing. Any other failure is the database's real state, and the
    /// caller answers it (503 when it is unavailable).
    pub async fn run<'d, T, F, Fut>(&'d self, operation: F) -> Result<T, DbErr>
    where
        F: Fn(Lease<'d>) -> Fut,
        Fut: Future<Output = Result<T, DbErr>>,
    {
        let started = tokio::time::Instant::now();
        self.counters.operations.fetch_add(1, Ordering::Relaxed);
        let mut failure = match operation(Lease::first(&self.connections)).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let first_cause = error_chain(&failure);
        let (mut retries, mut lost, mut renewed, mut conflicts) = (0, 0, false, 0);
        let mut pause = FIRST_PAUSE;
        loop {
            retries += 1;
            let counter = match (failure.class(), &self.refresher) {
                (ErrorClass::SerializationConflict, _) if conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    tokio::time::sleep(conflict_backoff(conflicts)).await;
                    &self.counters.serialization_conflict_retries
                }
                (ErrorClass::ConnectionLost, _) if lost < LOST_CONNECTION_RETRIES => {
                    lost += 1;
                    self.connections.discard_parked();
                    &self.counters.connection_lost_retries
                }
                (ErrorClass::AuthFailure, Some(refresher)) if !renewed => {
                    renewed = true;
                    if let Err(renewal) = refresher.renew_after_refusal().await {
                        tracing::warn!(error = %error_chain(&renewal), "could not renew the credential for a retry");
                    }
                    &self.counters.auth_failure_retries
                }
                (class @ (ErrorClass::ReadOnly | ErrorClass::Throttled | ErrorClass::ConnectionLost), _) => {
                    let wait = pause.mul_f64(0.5 + fastrand::f64());
                    if started.elapsed() + wait >= self.patience {
                        return Err(failure);
                    }
                    let counter = match class {
                        ErrorClass::ReadOnly => {
                            self.connections.evict_older();
                            &self.counters.read_only_retries
                        }
                        ErrorClass::Throttled => &self.counters.throttled_retries,
                        _ => &self.counters.connection_lost_retries,
                    };
                    tokio::time::sleep(wait).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    counter
                }
                _ => return Err(failure),
            };
            counter.fetch_add(1, Ordering::Relaxed);
            match operation(Lease::retry(&self.connections, lost > 0)).await {
                Ok(value) => {
                    tracing::warn!(cause = %first_cause, retries, "database operation retried and succeeded");
                    return Ok(value);
                }
                Err(error) => failure = error,
            }
        }
    }

    /// The IAM token's state, when IAM authentication is in use.
    #[must_use]
    pub fn token_status(&self) -> Option<TokenStatus> {
        self.refresher
            .as_ref()
            .filter(|_| self.tokens)
            .map(|refresher| refresher.status())
    }

    /// The pool's connections at this moment, and how many it has opened. Cheap enough for every scrape: a few
    /// atomic reads and one short lock.
    #[must_use]
    pub fn pool_status(&self) -> PoolStatus {
        let Occupancy { in_use, idle, waiting } = self.connections.occupancy();
        PoolStatus {
            in_use,
            idle,
            waiting,
            opened: self.counters.opened.load(Ordering::Relaxed),
            operations: self.counters.operations.load(Ordering::Relaxed),
        }
    }

    /// How long a statement waits for a connection, and an operation keeps retrying while the server is unavailable.
    #[must_use]
    pub fn acquire_timeout(&self) -> Duration {
        self.patience
    }

    /// The most connections the pool opens at once.
    #[must_use]
    pub fn max_connections(&self) -> u32 {
        self.connections.max_connections()
    }

    /// How many times [`Database::run`] ran an operation again, by cause.
    #[must_use]
    pub fn retries(&self) -> Retries {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Retries {
            connection_lost: read(&self.counters.connection_lost_retries),
            auth_failure: read(&self.counters.auth_failure_retries),
            read_only: read(&self.counters.read_only_retries),
            throttled: read(&self.counters.throttled_retries),
            serialization_conflict: read(&self.counters.serialization_conflict_retries),
        }
    }

    /// Asks the server whether it can write, which proves it answers: the readiness probe.
    pub async fn role(&self) -> Result<ServerRole, DbErr> {
        self.run(|lease| async move { lease.role().await }).await
    }

    /// Applies pending migrations, or at most `steps` of them.
    pub async fn migrate_up(&self, steps: Option<u32>) -> Result<(), DatabaseError> {
        self.connections.release_parked();
        Migrator::up(&self.migrations, steps)
            .await
            .map_err(DatabaseError::Migration)
    }

    /// Reverts the last `steps` migrations (one when `None`).
    pub async fn migrate_down(&self, steps: Option<u32>) -> Result<(), DatabaseError> {
        self.connections.release_parked();
        Migrator::down(&self.migrations, Some(steps.unwrap_or(1)))
            .await
            .map_err(DatabaseError::Migration)
    }

    /// Every known migration, oldest first, and whether it has been applied.
    pub async fn migration_status(&self) -> Result<Vec<MigrationState>, DatabaseError> {
        self.connections.release_parked();
        let pending = Migrator::get_pending_migrations(&self.migrations)
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

    /// Closes the connections opened so far, once they are idle: for the end of start-up, before serving.
    ///
    /// A connection's socket stays with the Tokio runtime of the thread that opened it, for the connection's life.
    /// Start-up runs on the main thread, which serves no requests: a worker using a connection opened there would be
    /// woken through the main thread on every answer from the server. (The first check and the migrations opened
    /// three, and under load the main thread woke for a fifth of all statements.) Closed now, the connections the
    /// workers need are opened by the workers themselves. With `database.min_connections` above 0 the pool keeps
    /// that many open from its own task on the main thread, whatever is closed here, so nothing is closed.
    ///
    /// Meant for when nothing uses the database: a connection still in use at the acquire time-out is left open,
    /// with a warning.
    pub async fn close_idle(&self) {
        self.connections.close_idle().await;
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(self) {
        self.connections.close().await;
    }
}

/// Pool options with the lifetime and idle limits enforced at checkout and return rather than by sqlx's background
/// reaper: in sqlx 0.9.0 that reaper can read an underflowed idle count and spin forever without yielding, taking its
/// runtime thread down with it (sqlx issue 3645, fixed upstream after 0.9.0). Under churn that is not rare: the
/// token-rotation test, whose connections live 3 seconds, hit it. Idle connections are therefore closed when next
/// checked out rather than on a timer.
///
/// Every connection the pool opens, whatever the backend or authentication, goes through `after_connect`, where it
/// is counted. Both hooks tell [`connections::note_age`] how old the connection they pass is: the connections kept
/// out of the pool between statements keep the same limits themselves.
///
/// A connection opened before a failover was noticed is closed when handed out or returned (see [`Turnover`]). The
/// pool opens a replacement at once for a connection `before_acquire` turns down, so that waits for a turn to open
/// one first; when the turn would come too late, the pool's own acquire time-out ends the wait, and no connection is
/// opened out of turn.
pub(crate) fn pool_options<DB: sqlx::Database>(
    settings: &PoolSettings,
    counters: &Arc<Counters>,
    turnover: &Arc<Turnover>,
) -> PoolOptions<DB> {
    let PoolSettings {
        idle_timeout,
        acquire_timeout,
        ..
    } = *settings;
    let counters = Arc::clone(counters);
    let (checking, releasing) = (Arc::clone(turnover), Arc::clone(turnover));
    PoolOptions::new()
        .after_connect(move |_, metadata| {
            counters.opened.fetch_add(1, Ordering::Relaxed);
            connections::note_age(metadata.age);
            Box::pin(std::future::ready(Ok(())))
        })
        .max_lifetime(None)
        .idle_timeout(None)
        .test_before_acquire(false)
        .before_acquire(move |connection: &mut DB::Connection, metadata| {
            connections::note_age(metadata.age);
            let turnover = Arc::clone(&checking);
            Box::pin(async move {
                let outcome = if turnover.is_spent(metadata.age) || metadata.idle_for >= idle_timeout {
                    // `false` makes the pool close this connection and hand out another one.
                    Ok(false)
                } else if metadata.idle_for > RECENTLY_USED {
                    connection.ping().await.map(|()| true)
                } else {
                    return Ok(true);
                };
                if !matches!(outcome, Ok(true)) {
                    let deadline = tokio::time::Instant::now() + acquire_timeout;
                    if !turnover.pace.wait_turn(deadline).await {
                        tokio::time::sleep_until(deadline).await;
                    }
                }
                outcome
            })
        })
        .after_release(move |_, metadata| {
            let keep = !releasing.is_spent(metadata.age);
            Box::pin(std::future::ready(Ok(keep)))
        })
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout)
}

/// How many times [`Database::run`] runs an operation again at once after its connection was lost; after that it
/// waits between attempts, as for an unavailable server.
const LOST_CONNECTION_RETRIES: u32 = 2;

/// The first wait of [`Database::run`]'s back-off (each wait is this, doubled for every earlier wait, times a random
/// factor from 0.5 to 1.5), and the longest: short enough that an operation goes on within about that of the
/// writer accepting connections again.
const FIRST_PAUSE: Duration = Duration::from_millis(25);
const MAX_PAUSE: Duration = Duration::from_millis(400);
/// How many times [`Database::run`] runs an operation again after optimistic-concurrency conflicts. Conflicts on
/// different rows are independent, so at DSQL's usual rates (a few percent of commits) ten in a row do not happen;
/// an operation that does meet them is fighting over one hot row, and is answered 503 to be retried by its client.
const CONFLICT_RETRIES: u32 = 10;

/// The pause before the `attempt`-th run after a conflict: exponential from 5 ms, capped at 500 ms, half of it
/// random ("equal jitter"), so that transactions that conflicted with each other are not retried in step.
fn conflict_backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(5)
        .saturating_mul(1 << attempt.saturating_sub(1).min(10))
        .min(Duration::from_millis(500));
    ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0)
}

/// What a driver's connection is configured with.
type ConnectOptionsOf<DB> = <<DB as sqlx::Database>::Connection as Connection>::Options;

fn connect_error(settings: &DatabaseSettings, source: sqlx::Error) -> DatabaseError {
    DatabaseError::Connect {
        url: settings.url.to_string(),
        source,
    }
}

/// Opens a pool that logs in with the configured static password, if any.
async fn connect_with_password<DB: sqlx::Database>(
    settings: &DatabaseSettings,
    pool_options: PoolOptions<DB>,
    options: ConnectOptionsOf<DB>,
    password: &Option<SecretString>,
) -> Result<sqlx::Pool<DB>, DatabaseError>
where
    ConnectOptionsOf<DB>: IamConnectOptions,
{
    // `with_token` is the driver's password setter; a static password goes in the same way.
    let options = match password {
        Some(password) => options.with_token(password.expose_secret()),
        None => options,
    };
    pool_options
        .connect_with(options)
        .await
        .map_err(|source| connect_error(settings, source))
}

/// Opens a pool whose connections log in with IAM tokens that `rds-iam` signs and renews. Callers box this future:
/// discovery, role assumption and the first connection nest deep enough to exceed the compiler's layout depth in
/// the binary's `main`, and a start-up path has no use for it inline.
async fn connect_with_iam<DB: sqlx::Database>(
    settings: &DatabaseSettings,
    iam: &IamSettings,
    aws: Option<SdkConfig>,
    pool_options: PoolOptions<DB>,
    options: ConnectOptionsOf<DB>,
) -> Result<(sqlx::Pool<DB>, Arc<TokenRefresher>), DatabaseError>
where
    ConnectOptionsOf<DB>: IamConnectOptions,
{
    let mut builder = secured(
        IamPoolBuilder::<DB>::new(options)
            .pool_options(pool_options)
            .settings(iam),
        &settings.tls,
    );
    if let Some(aws) = aws {
        builder = builder.sdk_config(aws);
    }
    let pool = builder.connect().await.map_err(DatabaseError::Iam)?;
    Ok(pool.into_parts())
}

/// Opens a pool whose connections log in to Aurora DSQL with DSQL tokens that `rds-iam` signs and the same refresher
/// renews: for the cluster's endpoint (from its id and region, or the URL's host), as the settings' role, in the
/// region from the settings, the host name or the AWS chain. Boxed by the caller, as `connect_with_iam` is.
async fn connect_with_dsql(
    settings: &DatabaseSettings,
    dsql: &DsqlSettings,
    aws: Option<SdkConfig>,
    pool_options: PoolOptions<sqlx::Postgres>,
    options: PgConnectOptions,
) -> Result<(sqlx::Pool<sqlx::Postgres>, Arc<TokenRefresher>), DatabaseError> {
    let iam = &dsql.iam;
    let aws = match aws {
        Some(aws) => aws,
        None => rds_iam::load_aws_config(iam.region.as_deref()).await,
    };
    let host = match &dsql.cluster_id {
        Some(cluster_id) => {
            let region = iam
                .region
                .clone()
                .or_else(|| aws.region().map(ToString::to_string))
                .ok_or(DatabaseError::Dsql(rds_iam::Error::NoRegion))?;
            cluster_id.host(&region)
        }
        None => options.get_host().to_owned(),
    };
    let signing_host = iam.signing_host.clone().unwrap_or_else(|| host.clone());
    let action = DsqlAction::for_role(&dsql.role);
    let signer = DsqlTokenSigner::new(signing_host, action, iam.region.clone(), iam.token_lifetime, Some(aws))
        .await
        .map_err(DatabaseError::Dsql)?;
    tracing::info!(%signer, region = signer.region(), "Aurora DSQL authentication");
    // DSQL has one database, `postgres`; without one in the URL, sqlx would ask for the role's name.
    let mut options = options.host(&host).username(&dsql.role);
    if settings.url.as_url().path().trim_start_matches('/').is_empty() {
        options = options.database("postgres");
    }
    if let Some(tunnel) = &iam.tunnel {
        options = options.host(&tunnel.host).port(tunnel.port);
    }
    let pool = secured(IamPoolBuilder::<sqlx::Postgres>::new(options), &settings.tls)
        .pool_options(pool_options)
        .allow_without_tls(iam.allow_without_tls)
        .allow_weaker_tls(iam.allow_weaker_tls)
        .refresh_policy(iam.refresh)
        .credential_source(signer)
        .connect()
        .await
        .map_err(DatabaseError::Dsql)?;
    Ok(pool.into_parts())
}

/// Opens a pool whose connections log in with the user and password of a Secrets Manager secret, fetched again on
/// its interval and at once when the server refuses them.
async fn connect_with_source<DB: sqlx::Database>(
    settings: &DatabaseSettings,
    pool_options: PoolOptions<DB>,
    options: ConnectOptionsOf<DB>,
    source: SecretsManagerSource,
) -> Result<(sqlx::Pool<DB>, Arc<TokenRefresher>), DatabaseError>
where
    ConnectOptionsOf<DB>: IamConnectOptions,
{
    // Weaker than verify-full only when `database.tls.mode` or the URL's sslmode says so, which is the operator's
    // choice, as with a static password: the password is not sent as it is (SCRAM, MySQL's native hashes) unless
    // the server asks for it in clear, which MySQL's cleartext plugin only answers over TLS. The builder logs it.
    let explicitly_weaker = settings.tls.mode != TlsMode::VerifyFull;
    let policy = RefreshPolicy {
        refusal_patience: settings.pool.acquire_timeout,
        ..RefreshPolicy::default()
    };
    let pool = secured(IamPoolBuilder::<DB>::new(options), &settings.tls)
        .pool_options(pool_options)
        .allow_without_tls(explicitly_weaker)
        .refresh_policy(policy)
        .credential_source(source)
        .connect()
        .await
        .map_err(DatabaseError::SecretsManager)?;
    Ok(pool.into_parts())
}

/// `builder` with the TLS settings. The builder sets them on the connections it opens, replacing what the options
/// carry; it checks that the mode is fit for credentials, and where it does the TLS itself (through a tunnel, or for
/// verify-ca), it trusts the CA bundle alone.
fn secured<DB: sqlx::Database>(builder: IamPoolBuilder<DB>, tls: &TlsSettings) -> IamPoolBuilder<DB>
where
    ConnectOptionsOf<DB>: IamConnectOptions,
{
    let builder = builder.tls_mode(tls.mode);
    match &tls.root_cert {
        Some(root_cert) => builder.root_cert(root_cert),
        None => builder,
    }
}

/// The driver options from `url` and the TLS settings, without any password.
fn postgres_options(url: &DatabaseUrl, settings: &DatabaseSettings) -> Result<PgConnectOptions, DatabaseError> {
    let options: PgConnectOptions = options_from_url(url)?;
    Ok(options
        .application_name("tasks-api")
        .with_tls(settings.tls.mode, settings.tls.root_cert.as_deref()))
}

/// The driver options from `url` and the TLS settings, without any password.
fn mysql_options(url: &DatabaseUrl, settings: &DatabaseSettings) -> Result<MySqlConnectOptions, DatabaseError> {
    let options: MySqlConnectOptions = options_from_url(url)?;
    // 4-byte UTF-8 on the connection too, or emoji are mangled before they reach the utf8mb4 column.
    Ok(options
        .charset("utf8mb4")
        .with_tls(settings.tls.mode, settings.tls.root_cert.as_deref()))
}

/// The driver's options parsed from a database URL.
fn options_from_url<O: FromStr<Err = sqlx::Error>>(url: &DatabaseUrl) -> Result<O, DatabaseError> {
    O::from_str(url.as_url().as_str()).map_err(|source| DatabaseError::Options {
        url: url.to_string(),
        source,
    })
}

fn sqlite_options(settings: &DatabaseSettings) -> Result<SqliteConnectOptions, DatabaseError> {
    let options: SqliteConnectOptions = options_from_url(&settings.url)?;
    // WAL lets readers proceed while one connection writes; the busy timeout makes concurrent writers queue for the
    // lock instead of failing with SQLITE_BUSY.
    Ok(options
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(settings.pool.acquire_timeout)
        .foreign_keys(true))
}
