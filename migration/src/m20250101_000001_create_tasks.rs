use sea_orm_migration::{prelude::*, schema::*};

/// The table of the original service, unchanged: `tasks(id UUID PRIMARY KEY, name VARCHAR(255) NOT NULL)`, so a
/// database shared with it keeps working in both directions.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
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
