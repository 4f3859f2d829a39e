//! The emulator as its users meet it: `psql` and the `mariadb` client over real sockets, with tokens from the AWS
//! SDK's own signer, in front of the local PostgreSQL (`TEST_DATABASE_URL`) and MariaDB (`TEST_MYSQL_URL`).

/// Generates, for each named `async fn(Engine)`, one test per engine: `postgres::name` and `mariadb::name`.
macro_rules! on_both_engines {
    ($($test:ident),+ $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(crate::support::Engine::Postgres).await;
                }
            )+
        }
        mod mariadb {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(crate::support::Engine::MariaDb).await;
                }
            )+
        }
    };
}

mod cluster;
mod dsql;
mod harness;
mod iam_users;
mod limits;
mod logging;
mod mysql;
mod policy;
mod secrets;
mod support;
mod tokens;
