//! SeaORM over an IAM pool (the `sea-orm` feature).

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::pool::IamPool;
use crate::refresher::TokenRefresher;

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

    /// The refresher behind the pool: the token's status, and
    /// [`TokenRefresher::retry_once_on_auth_failure`] to retry an operation once with a renewed token when the server
    /// refused the connection's.
    #[must_use]
    pub fn refresher(&self) -> &Arc<TokenRefresher> {
        &self.refresher
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
