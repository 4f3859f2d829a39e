//! The HTTP-level suite: every test starts the real service on a real socket with a database of its own, and runs
//! on SQLite, on PostgreSQL, on MariaDB, and on PostgreSQL through the RDS IAM emulator with IAM tokens and TLS
//! verify-full.

/// Generates, for each named `async fn(Backend)`, one test per way of running the service.
macro_rules! on_every_backend {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(test_support::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(test_support::Backend::Postgres).await;
                }
            )+
        }
        mod mariadb {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(test_support::Backend::MariaDb).await;
                }
            )+
        }
        mod postgres_iam {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(test_support::Backend::PostgresIam).await;
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
