//! `SeaORM` entities for the tasks schema, kept in the shape `sea-orm-cli generate entity` writes so that they can be
//! regenerated from a migrated database at any time. Business rules live in the `domain` crate, not here.

pub mod prelude;

pub mod tasks;
