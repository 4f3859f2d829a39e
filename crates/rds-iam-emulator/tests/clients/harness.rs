//! `TestEmulator` itself: the URLs it gives, the directory it keeps, and its `Debug` output.

use rds_iam_emulator::testing::EmulatorOptions;

use crate::support::{self, Engine};

#[tokio::test]
async fn urls_encode_the_user_and_the_directory_goes_with_the_emulator() {
    let emulator = support::start(Engine::MariaDb, EmulatorOptions::default()).await;
    let directory = emulator.directory().to_owned();

    assert_eq!(
        emulator.url("tasks user+1@example:x/y", "tasks"),
        format!("mysql://tasks%20user%2B1%40example%3Ax%2Fy@{}/tasks", emulator.address)
    );
    assert!(emulator.ca_pem().starts_with(&directory) && emulator.ca_pem().exists());
    drop(emulator);
    assert!(!directory.exists());
}

#[tokio::test]
async fn debug_output_does_not_show_the_upstream_password() {
    // The local PostgreSQL trusts the emulator's connections: it never asks for this password.
    let mut upstream = Engine::Postgres.upstream();
    upstream.set_password(Some("upstream-secret")).expect("a password");
    let emulator = support::start_in_front_of(upstream.clone(), EmulatorOptions::default()).await;

    let debug = format!("{emulator:?}");
    assert!(!debug.contains("upstream-secret"), "{debug}");
    upstream.set_password(Some("***")).expect("a password");
    assert!(debug.contains(upstream.as_str()), "{debug}");
}
