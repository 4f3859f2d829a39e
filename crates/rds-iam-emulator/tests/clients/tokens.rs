//! Tokens RDS refuses however well they are signed.

use aws_credential_types::Credentials;
use rds_iam_emulator::testing::EmulatorOptions;

use crate::support::{self, ACCESS_KEY_ID, Engine, SECRET_ACCESS_KEY, refusal};

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
