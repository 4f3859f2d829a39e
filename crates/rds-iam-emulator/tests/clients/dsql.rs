//! The emulator in Aurora DSQL mode with a real client: sqlx over TLS verify-full with DSQL tokens from
//! `aws-sdk-dsql`'s generator, and optimistic-concurrency conflicts injected into real PostgreSQL sessions.

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_dsql::auth_token::{AuthTokenGenerator, Config};
use rds_iam_emulator::testing::{EmulatorOptions, TestEmulator};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::support::{ACCESS_KEY_ID, Engine, SECRET_ACCESS_KEY, iam_user, start};

/// A `DbConnect` token for the emulator's host (its listen address, without the port), from the AWS SDK.
async fn dsql_token() -> String {
    let aws = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "tests"))
        .load()
        .await;
    let config = Config::builder().hostname("127.0.0.1").build().expect("a token target");
    AuthTokenGenerator::new(config)
        .db_connect_auth_token(&aws)
        .await
        .expect("a token")
        .to_string()
}

async fn connect(emulator: &TestEmulator, user: &str, database: &str) -> PgConnection {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(emulator.address.port())
        .username(user)
        .password(&dsql_token().await)
        .database(database)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(emulator.ca_pem())
        .connect()
        .await
        .expect("a DbConnect token logs a custom role in")
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .map(|code| code.into_owned())
}

/// At a conflict rate of 1, an autocommit INSERT and an explicit transaction's COMMIT are both answered with OC000,
/// nothing of either is stored, and the session goes on, outside any transaction, as DSQL's does.
#[tokio::test]
async fn conflicting_writes_and_commits_store_nothing_and_leave_the_session_usable() {
    let emulator = start(
        Engine::Postgres,
        EmulatorOptions {
            dsql: true,
            occ_conflict_rate: 1.0,
            ..EmulatorOptions::default()
        },
    )
    .await;
    let user = iam_user(&emulator).await;
    let database = format!("emulator_dsql_{}", std::process::id());
    emulator
        .administer(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await;
    emulator
        .administer(&format!("CREATE DATABASE {database} OWNER {user}"))
        .await;
    let mut session = connect(&emulator, user, &database).await;
    sqlx::raw_sql("CREATE TABLE tasks (id int PRIMARY KEY)")
        .execute(&mut session)
        .await
        .expect("DDL is no write the emulator answers for");

    let autocommit = sqlx::query("INSERT INTO tasks VALUES ($1)")
        .bind(1)
        .execute(&mut session)
        .await
        .expect_err("a conflict");
    assert_eq!(sqlstate(&autocommit).as_deref(), Some("OC000"), "{autocommit}");

    let mut transaction = session.begin().await.expect("BEGIN");
    sqlx::query("INSERT INTO tasks VALUES ($1)")
        .bind(2)
        .execute(&mut *transaction)
        .await
        .expect("inside a transaction, DSQL decides at the commit");
    let commit = transaction.commit().await.expect_err("a conflict at COMMIT");
    assert_eq!(sqlstate(&commit).as_deref(), Some("OC000"), "{commit}");
    assert_eq!(emulator.conflicts_injected(), 2);

    emulator.set_conflict_rate(0.0);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&mut session)
        .await
        .expect("the session goes on");
    assert_eq!(stored, 0, "neither write was carried out");
    sqlx::query("INSERT INTO tasks VALUES ($1)")
        .bind(3)
        .execute(&mut session)
        .await
        .expect("without conflicts, writes go through");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&mut session)
        .await
        .expect("a count");
    assert_eq!(stored, 1);

    session.close().await.expect("close");
    emulator
        .administer(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .await;
}

/// An RDS token is no DSQL token: the emulator in DSQL mode refuses it, with RDS's words for a refused password.
#[tokio::test]
async fn an_rds_token_does_not_log_in_to_dsql_mode() {
    let emulator = start(
        Engine::Postgres,
        EmulatorOptions {
            dsql: true,
            ..EmulatorOptions::default()
        },
    )
    .await;
    let user = iam_user(&emulator).await;
    let rds_token = crate::support::token(&emulator, user).await;
    let refused = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(emulator.address.port())
        .username(user)
        .password(&rds_token)
        .database("postgres")
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(emulator.ca_pem())
        .connect()
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&refused).as_deref(), Some("28P01"), "{refused}");
    assert_eq!(emulator.counts.refused(), 1);
}
