//! Tokens RDS refuses however well they are signed.

use aws_credential_types::Credentials;
use rds_iam_emulator::testing::EmulatorOptions;

use crate::support::{self, ACCESS_KEY_ID, Binary, Engine, SECRET_ACCESS_KEY, refusal};

on_both_engines!(a_long_term_key_that_presents_a_session_token_is_refused);

async fn a_long_term_key_that_presents_a_session_token_is_refused(engine: Engine) {
    let emulator = support::start(engine, EmulatorOptions::default()).await;
    let user = support::iam_user(&emulator).await;
    let with_session_token = Credentials::new(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        Some("a-session-token-this-key-never-had".to_owned()),
        None,
        "tests",
    );
    let token = support::token_signed_with(&emulator, user, with_session_token).await;

    let refused = support::client(engine, &emulator, user, &token, "SELECT 1")
        .await
        .expect_err("refused");

    assert!(refused.contains(&refusal(engine, user)), "{refused}");
    assert_eq!(emulator.counts.refused(), 1);
    let token = support::token(&emulator, user).await;
    let output = support::client(engine, &emulator, user, &token, "SELECT 1").await;
    assert_eq!(output.as_deref(), Ok("1"), "the same key without a session token");
}

/// A token dated 31 November is refused for its date, through psql: not read as 1 December, nor let through to be
/// judged by its age. The binary's log says which part of the token was refused.
#[tokio::test]
async fn a_token_dated_on_a_day_that_does_not_exist_is_refused_for_its_date() {
    let emulator = Binary::start(Engine::Postgres).await;
    let token = |date: &str| {
        format!(
            "{}/?Action=connect&DBUser=postgres&X-Amz-Algorithm=AWS4-HMAC-SHA256&\
             X-Amz-Credential=AKIAEXAMPLE%2F{}%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date={date}&\
             X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature={}",
            emulator.listen,
            &date[..8],
            "0".repeat(64)
        )
    };

    emulator.refuse("postgres", &token("20261131T120000Z")).await;
    emulator.refuse("postgres", &token("20261130T120000Z")).await;

    let log = emulator.stop().await;
    let refusals: Vec<&str> = log.lines().filter(|line| line.contains("token refused")).collect();
    assert_eq!(refusals.len(), 2, "{log}");
    assert!(refusals[0].contains("X-Amz-Date `20261131T120000Z`"), "{log}");
    // The real day before passes the date check and is refused for something else.
    assert!(!refusals[1].contains("X-Amz-Date"), "{log}");
}
