//! The tasks schema, one migration at a time. Migrations name their tables and columns themselves instead of importing
//! the entities, so regenerating `entity/` can never rewrite history.

pub use sea_orm_migration::prelude::*;

mod m20250101_000001_create_tasks;

/// Every migration, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20250101_000001_create_tasks::Migration)]
    }
}
