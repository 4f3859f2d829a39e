//! The `rds-iam` crate's examples, run as a user would run them, against the RDS IAM emulator in front of PostgreSQL
//! and MariaDB: each must log in with a token and print the user it is connected as.

use std::path::PathBuf;

use test_support::iam::{ACCESS_KEY_ID, IAM_USER, REGION, SECRET_ACCESS_KEY};
use test_support::{Backend, EmulatorOptions, TestEmulator};

/// Where cargo put an example of the workspace: `target/debug/examples/NAME`, beside `deps/` where this test runs.
fn example(name: &str) -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test --workspace` builds the examples (or `cargo build -p rds-iam --all-features \
         --examples`)",
        path.display()
    );
    path
}

/// Runs example `name` against an emulator of `backend` and returns what it printed.
async fn run_example(name: &str, backend: Backend) -> (String, TestEmulator) {
    let emulator = TestEmulator::start(backend, EmulatorOptions::default()).await;
    let home = std::env::temp_dir().join(format!("rds-iam-example-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&home).expect("a home directory");
    // Databases every user may connect to.
    let database = match backend {
        Backend::MariaDbIam => "information_schema",
        _ => "postgres",
    };
    let output = tokio::process::Command::new(example(name))
        .env_clear()
        .env("HOME", &home)
        .env("DATABASE_URL", emulator.url(IAM_USER, database))
        .env("RDS_IAM_ROOT_CERT", emulator.ca_pem())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .expect("the example runs");
    let _ = std::fs::remove_dir_all(&home);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name} failed: {stderr}");
    (
        String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned(),
        emulator,
    )
}

/// The user an example reports: PostgreSQL's `current_user`, or MySQL's `user@host` account.
fn logged_in_as(printed: &str) -> &str {
    printed.split('@').next().unwrap_or_default()
}

async fn assert_example_logs_in(name: &str, backend: Backend) {
    let (printed, emulator) = run_example(name, backend).await;
    assert_eq!(logged_in_as(&printed), IAM_USER, "{name} printed {printed:?}");
    assert!(emulator.counts.accepted() >= 1, "the emulator verified a token");
    assert_eq!(emulator.counts.refused(), 0);
}

#[tokio::test]
async fn sqlx_postgres_example_connects_with_a_token() {
    assert_example_logs_in("sqlx_postgres", Backend::PostgresIam).await;
}

#[tokio::test]
async fn sqlx_mysql_example_connects_with_a_token() {
    assert_example_logs_in("sqlx_mysql", Backend::MariaDbIam).await;
}

#[tokio::test]
async fn sea_orm_example_connects_to_either_engine_with_a_token() {
    assert_example_logs_in("sea_orm", Backend::PostgresIam).await;
    assert_example_logs_in("sea_orm", Backend::MariaDbIam).await;
}
