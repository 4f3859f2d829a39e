//! The binary's log, which names why each log-in was refused, with client text in it: a token whose `Action` holds a
//! line break must not write a line of its own.

use crate::support::{Binary, Engine};

#[tokio::test]
async fn client_text_in_a_refusal_cannot_forge_a_log_line() {
    let emulator = Binary::start(Engine::Postgres).await;
    let forged = "2026-01-01T00:00:00.000000Z  INFO rds_iam_emulator: log-in accepted";
    let token = format!(
        "{}/?Action=connect%0A{}&DBUser=postgres&X-Amz-Algorithm=AWS4-HMAC-SHA256",
        emulator.listen,
        forged.replace(' ', "%20").replace(':', "%3A")
    );

    emulator.refuse("postgres", &token).await;

    let log = emulator.stop().await;
    let refusal: Vec<&str> = log.lines().filter(|line| line.contains("log-in accepted")).collect();
    assert_eq!(refusal.len(), 1, "the forged text stays on the refusal's line:\n{log}");
    assert!(
        refusal[0].contains(r"connect\n2026-01-01") && !refusal[0].starts_with("2026-01-01T00:00:00.000000Z"),
        "{log}"
    );
}
