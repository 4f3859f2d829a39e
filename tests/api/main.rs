//! The HTTP-level suite: every test starts the real service on a real socket with a database of its own, and runs
//! once on SQLite and once on PostgreSQL.

/// Generates, for each named `async fn(Backend)`, one test per database engine.
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
    };
}

mod concurrency;
mod docs;
mod errors;
mod health;
mod migrations;
mod pagination;
mod tasks;
