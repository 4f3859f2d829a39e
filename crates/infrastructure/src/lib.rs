//! Everything the tasks service needs from the outside world at run time: its database settings, its database pool
//! (with a password, or through `rds-iam` with IAM tokens or a Secrets Manager secret), and the SeaORM implementation of the domain's [`domain::TaskRepository`].

mod batches;
mod connections;
mod database;
mod repository;
pub mod settings;
mod turnover;

pub use aws_config::SdkConfig;
pub use connections::{Lease, ServerRole};
pub use database::{Database, DatabaseError, MigrationState, PoolStatus, Retries};
pub use repository::SeaOrmTaskRepository;
pub use settings::{
    Auth, DatabaseBackend, DatabaseSettings, DatabaseUrl, DsqlSettings, PoolSettings, ReaderEndpoint,
    SecretsManagerSettings, TlsSettings,
};
