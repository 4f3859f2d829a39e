//! The HTTP-level suite: every test starts the real service on a real socket with a database of its own, and runs
//! on SQLite, on PostgreSQL, on MariaDB, and on PostgreSQL through the RDS IAM emulator with IAM tokens and TLS
//! verify-full.

/// Generates, for each named `async fn(Backend)`, one test per way of running the service.
macro_rules! on_every_backend {
    ($($test:ident),+ $(,)?) => {
        on_every_backend!(@in sqlite, Sqlite; $($test),+);
        on_every_backend!(@in postgres, Postgres; $($test),+);
        on_every_backend!(@in mariadb, MariaDb; $($test),+);
        on_every_backend!(@in postgres_iam, PostgresIam; $($test),+);
    };
    (@in $module:ident, $backend:ident; $($test:ident),+) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(test_support::Backend::$backend).await;
                }
            )+
        }
    };
}

mod concurrency;
mod docs;
mod errors;
mod health;
mod iam;
mod migrations;
mod pagination;
mod tasks;
