//! The binary's log, which names why each log-in was refused, with client text in it: a token whose `Action` holds a
//! line break must not write a line of its own.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::support::{Engine, credentials_file};

#[tokio::test]
async fn client_text_in_a_refusal_cannot_forge_a_log_line() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let credentials = credentials_file(directory.path());
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut emulator = Command::new(env!("CARGO_BIN_EXE_rds-iam-emulator"))
        .args([
            "--listen",
            &listen,
            "--upstream",
            Engine::Postgres.upstream().as_str(),
            "--credentials",
        ])
        .arg(&credentials)
        .arg("--tls-dir")
        .arg(directory.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the emulator runs");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&listen).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the emulator never listened on {listen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let forged = "2026-01-01T00:00:00.000000Z  INFO rds_iam_emulator: log-in accepted";
    let token = format!(
        "{listen}/?Action=connect%0A{}&DBUser=postgres&X-Amz-Algorithm=AWS4-HMAC-SHA256",
        forged.replace(' ', "%20").replace(':', "%3A")
    );
    let refused = Command::new("psql")
        .args(["-X", "-c", "SELECT 1"])
        .arg(format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require connect_timeout=10"
        ))
        .env("PGPASSWORD", &token)
        .output()
        .await
        .expect("psql is installed");
    assert!(!refused.status.success(), "a malformed token must be refused");

    emulator.start_kill().expect("stop the emulator");
    let mut log = String::new();
    for stream in [
        emulator
            .stdout
            .take()
            .map(|out| Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin>),
        emulator
            .stderr
            .take()
            .map(|err| Box::new(err) as Box<dyn tokio::io::AsyncRead + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let mut stream = stream;
        stream.read_to_string(&mut log).await.expect("the emulator's output");
    }
    let refusal: Vec<&str> = log.lines().filter(|line| line.contains("log-in accepted")).collect();
    assert_eq!(refusal.len(), 1, "the forged text stays on the refusal's line:\n{log}");
    assert!(
        refusal[0].contains(r"connect\n2026-01-01") && !refusal[0].starts_with("2026-01-01T00:00:00.000000Z"),
        "{log}"
    );
}
