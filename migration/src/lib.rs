//! The tasks schema, one migration at a time. Migrations name their tables and columns themselves instead of importing
//! the entities, so regenerating `entity/` can never rewrite history.
//!
//! Every migration must also run on Aurora DSQL: no sequences or `SERIAL` (ids are made by the service), indexes with
//! `CREATE INDEX ASYNC`, one DDL statement per transaction and no DML beside it. So each migration says
//! `use_transaction() -> Some(false)`, which keeps sea-orm-migration from wrapping it and its `seaql_migrations` row in
//! one transaction, and a migration with several statements runs each in its own (`manager.begin()`).

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
