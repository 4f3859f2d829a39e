use sea_orm_migration::{prelude::*, schema::*};

/// The table of the original service, unchanged: `tasks(id UUID PRIMARY KEY, name VARCHAR(255) NOT NULL)`, so a
/// database shared with it keeps working in both directions. Aurora DSQL takes it as it is: a client-made UUID key
/// needs no sequence, which DSQL lacks.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// Not in a transaction of the migrator's own, on any backend: on PostgreSQL it would otherwise wrap the DDL and
    /// its row in `seaql_migrations` in one transaction, which Aurora DSQL refuses (no DDL and DML together, and at
    /// most one DDL statement per transaction). The one statement is `IF NOT EXISTS`, so a run cut off between it
    /// and the bookkeeping finishes when run again.
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut table = Table::create()
            .table(Tasks::Table)
            .if_not_exists()
            .col(uuid(Tasks::Id).primary_key())
            .col(string_len(Tasks::Name, 255))
            .to_owned();
        // MySQL and MariaDB store the id as binary(16); the name needs 4-byte UTF-8 so 255 emoji fit, whatever the
        // server's default character set is.
        if manager.get_database_backend() == sea_orm::DbBackend::MySql {
            table.character_set("utf8mb4").collate("utf8mb4_unicode_ci");
        }
        manager.create_table(table).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Tasks::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Id,
    Name,
}
