//! Everything the tasks service needs from the outside world: its settings, its database pool, and the SeaORM
//! implementation of the domain's [`domain::TaskRepository`].

pub mod admin;
mod database;
pub mod discovery;
pub mod iam;
mod repository;
pub mod settings;

pub use aws_config::SdkConfig;
pub use database::{Database, DatabaseError, MigrationState};
pub use repository::SeaOrmTaskRepository;
pub use settings::{
    DatabaseBackend, DatabaseSettings, LogFormat, LogSettings, ServerSettings, Settings, SettingsError,
};
