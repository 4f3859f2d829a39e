//! SeaORM over an IAM pool (the `sea-orm` feature).

use std::future::Future;
use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbErr};

use crate::pool::IamPool;
use crate::refresher::{TokenRefresher, TokenStatus};

/// A SeaORM [`DatabaseConnection`] whose pool authenticates with IAM tokens, together with the refresher that keeps
/// them fresh. Use [`IamDatabase::connection`] wherever SeaORM asks for a connection. Cheap to clone; renewal stops
/// when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct IamDatabase {
    connection: DatabaseConnection,
    refresher: Arc<TokenRefresher>,
}

impl IamDatabase {
    /// The connection to run SeaORM queries on.
    #[must_use]
    pub fn connection(&self) -> &DatabaseConnection {
        &self.connection
    }

    /// The refresher behind the pool.
    #[must_use]
    pub fn refresher(&self) -> &Arc<TokenRefresher> {
        &self.refresher
    }

    /// The token's state and the renewal counters.
    #[must_use]
    pub fn token_status(&self) -> TokenStatus {
        self.refresher.status()
    }

    /// Runs `operation`, and once more with a renewed token if the server refused the connection's token; see
    /// [`TokenRefresher::retry_once_on_auth_failure`].
    pub async fn run<T, F, Fut>(&self, operation: F) -> Result<T, DbErr>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, DbErr>>,
    {
        self.refresher.retry_once_on_auth_failure(operation).await
    }
}

#[cfg(feature = "postgres")]
impl From<IamPool<sqlx::Postgres>> for IamDatabase {
    fn from(pool: IamPool<sqlx::Postgres>) -> Self {
        let (pool, refresher) = pool.into_parts();
        Self {
            connection: sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool),
            refresher,
        }
    }
}

#[cfg(feature = "mysql")]
impl From<IamPool<sqlx::MySql>> for IamDatabase {
    fn from(pool: IamPool<sqlx::MySql>) -> Self {
        let (pool, refresher) = pool.into_parts();
        Self {
            connection: sea_orm::SqlxMySqlConnector::from_sqlx_mysql_pool(pool),
            refresher,
        }
    }
}
