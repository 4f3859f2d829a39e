//! Opening the connection pool, checking that it is alive, and running migrations through it.

use std::str::FromStr;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{DatabaseConnection, DbErr, SqlxPostgresConnector, SqlxSqliteConnector};
use secrecy::ExposeSecret;
use sqlx::Connection;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

use crate::settings::{DatabaseBackend, DatabaseSettings};

/// Why the database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database.url `{url}` is not usable: {source}")]
    Options {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration failed: {0}")]
    Migration(#[source] DbErr),
}

/// One migration and whether it has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
}

/// The service's handle on its database: a pool of connections shared by every worker.
#[derive(Debug, Clone)]
pub struct Database {
    connection: DatabaseConnection,
}

impl Database {
    /// Opens the pool and proves it works by opening its first connection, so that a wrong host, password or
    /// database name stops the service at start with the driver's own explanation.
    #[tracing::instrument(name = "connect to database", skip_all, fields(url = %settings.url))]
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, DatabaseError> {
        let connect_error = |source| DatabaseError::Connect {
            url: settings.url.to_string(),
            source,
        };
        let connection = match settings.backend() {
            DatabaseBackend::Postgres => {
                let pool = pool_options(settings)
                    .connect_with(postgres_options(settings)?)
                    .await
                    .map_err(connect_error)?;
                SqlxPostgresConnector::from_sqlx_postgres_pool(pool)
            }
            DatabaseBackend::Sqlite => {
                let pool = pool_options(settings)
                    .connect_with(sqlite_options(settings)?)
                    .await
                    .map_err(connect_error)?;
                SqlxSqliteConnector::from_sqlx_sqlite_pool(pool)
            }
        };
        tracing::info!(backend = ?settings.backend(), "database pool open");
        Ok(Self { connection })
    }

    #[must_use]
    pub fn connection(&self) -> &DatabaseConnection {
        &self.connection
    }

    /// Round-trips to the server: the readiness probe.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.connection.ping().await
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

fn pool_options<DB: sqlx::Database>(settings: &DatabaseSettings) -> PoolOptions<DB> {
    PoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|connection: &mut DB::Connection, metadata| {
            Box::pin(async move {
                if metadata.idle_for > RECENTLY_USED {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout())
        .idle_timeout(settings.idle_timeout())
        .max_lifetime(settings.max_lifetime())
}

fn postgres_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, DatabaseError> {
    let options = PgConnectOptions::from_str(settings.url.as_url().as_str()).map_err(|source| {
        DatabaseError::Options {
            url: settings.url.to_string(),
            source,
        }
    })?;
    Ok(match settings.password() {
        Some(password) => options.password(password.expose_secret()),
        None => options,
    }
    .application_name("tasks-api"))
}

fn sqlite_options(settings: &DatabaseSettings) -> Result<SqliteConnectOptions, DatabaseError> {
    let options =
        SqliteConnectOptions::from_str(settings.url.as_url().as_str()).map_err(|source| {
            DatabaseError::Options {
                url: settings.url.to_string(),
                source,
            }
        })?;
    // WAL lets readers proceed while one connection writes; the busy timeout makes concurrent writers queue for the
    // lock instead of failing with SQLITE_BUSY.
    Ok(options
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(settings.acquire_timeout())
        .foreign_keys(true))
}
