//! The HTTP-level suite: every test starts the real service on a real socket with a database of its own, and runs
//! on SQLite, on PostgreSQL, on MariaDB, on PostgreSQL and MariaDB through the RDS IAM emulator with IAM tokens and
//! TLS verify-full, on PostgreSQL and MariaDB as a user whose password a Secrets Manager secret holds, and on
//! PostgreSQL through the emulator in Aurora DSQL mode with DSQL tokens.

/// Generates, for each named `async fn(Backend)`, one test per way of running the service.
macro_rules! on_every_backend {
    ($($test:ident),+ $(,)?) => {
        backend_tests!(sqlite, Sqlite; $($test),+);
        backend_tests!(postgres, Postgres; $($test),+);
        backend_tests!(mariadb, MariaDb; $($test),+);
        on_iam_backends!($($test),+);
        on_secrets_backends!($($test),+);
        backend_tests!(postgres_dsql, PostgresDsql; $($test),+);
    };
}

/// Generates, for each named `async fn(Backend)`, one test per server behind the RDS IAM emulator.
macro_rules! on_iam_backends {
    ($($test:ident),+ $(,)?) => {
        backend_tests!(postgres_iam, PostgresIam; $($test),+);
        backend_tests!(mariadb_iam, MariaDbIam; $($test),+);
    };
}

/// Generates, for each named `async fn(Backend)`, one test per server logged in to with a secret from LocalStack.
macro_rules! on_secrets_backends {
    ($($test:ident),+ $(,)?) => {
        backend_tests!(postgres_secrets, PostgresSecrets; $($test),+);
        backend_tests!(mariadb_secrets, MariaDbSecrets; $($test),+);
    };
}

macro_rules! backend_tests {
    ($module:ident, $backend:ident; $($test:ident),+) => {
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

mod aws;
mod concurrency;
mod docs;
mod drills;
mod dsql;
mod errors;
mod examples;
mod health;
mod iam;
mod logging;
mod metrics;
mod migrations;
mod pagination;
mod provisioning;
mod readers;
mod secrets;
mod tasks;
