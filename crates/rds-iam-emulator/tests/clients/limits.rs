//! What a client may cost the emulator: how long it may take to authenticate.

use std::time::{Duration, Instant};

use rds_iam_emulator::testing::EmulatorOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self, Engine};

/// A PostgreSQL SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn quick_handshakes() -> EmulatorOptions {
    EmulatorOptions {
        handshake_timeout: Duration::from_secs(1),
        ..EmulatorOptions::default()
    }
}

/// Connects, sends `first`, then stalls; returns what the emulator sent before it hung up, and when it did.
async fn stall(address: std::net::SocketAddr, first: &[u8]) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut socket = TcpStream::connect(address).await.expect("connects");
    socket.write_all(first).await.expect("sends");
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut received))
        .await
        .expect("the emulator hangs up on a stalled handshake")
        .expect("reads");
    (received, started.elapsed())
}

async fn stalled_handshakes_are_cut_off_but_sessions_may_outlive_the_timeout(engine: Engine) {
    let emulator = support::start(engine, quick_handshakes()).await;

    // Silent, or stopping before TLS: PostgreSQL clients speak first, MySQL clients answer the server's greeting.
    let stalls: &[&[u8]] = match engine {
        Engine::Postgres => &[&[], &SSL_REQUEST],
        Engine::MariaDb => &[&[]],
    };
    for first in stalls {
        let (_, after) = stall(emulator.address, first).await;
        assert!(after >= Duration::from_millis(900), "cut off after {after:?}");
    }

    let admin = support::admin(&emulator);
    let token = support::token(&emulator, &admin).await;
    let sleep = match engine {
        Engine::Postgres => "SELECT pg_sleep(1.5), 'done'",
        Engine::MariaDb => "SELECT SLEEP(1.5), 'done'",
    };
    let output = support::client(engine, &emulator, &admin, &token, sleep).await;
    assert!(
        output.as_deref().is_ok_and(|output| output.ends_with("done")),
        "{output:?}"
    );
}

#[tokio::test]
async fn stalled_postgres_handshakes_are_cut_off_but_sessions_may_outlive_the_timeout() {
    stalled_handshakes_are_cut_off_but_sessions_may_outlive_the_timeout(Engine::Postgres).await;
}

#[tokio::test]
async fn stalled_mysql_handshakes_are_cut_off_but_sessions_may_outlive_the_timeout() {
    stalled_handshakes_are_cut_off_but_sessions_may_outlive_the_timeout(Engine::MariaDb).await;
}
