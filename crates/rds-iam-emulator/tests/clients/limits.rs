//! What a client may cost the emulator: how long it may take to authenticate, how many may be connected at once.

use std::time::{Duration, Instant};

use rds_iam_emulator::testing::EmulatorOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self, Engine};

on_both_engines!(
    stalled_handshakes_are_cut_off_but_sessions_may_outlive_the_timeout,
    beyond_the_connection_limit_clients_are_refused_as_by_a_full_server,
);

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

    let user = support::iam_user(&emulator).await;
    let token = support::token(&emulator, user).await;
    let sleep = match engine {
        Engine::Postgres => "SELECT pg_sleep(1.5), 'done'",
        Engine::MariaDb => "SELECT SLEEP(1.5), 'done'",
    };
    let output = support::client(engine, &emulator, user, &token, sleep).await;
    assert!(
        output.as_deref().is_ok_and(|output| output.ends_with("done")),
        "{output:?}"
    );
}

/// Connects and goes as far as the emulator's first answer (the greeting, or its yes to TLS), then waits: from then
/// on, the connection holds one of the emulator's slots.
async fn hold_a_connection(engine: Engine, address: std::net::SocketAddr) -> TcpStream {
    let mut socket = TcpStream::connect(address).await.expect("connects");
    if engine == Engine::Postgres {
        socket.write_all(&SSL_REQUEST).await.expect("sends");
    }
    let mut first = [0; 1];
    socket.read_exact(&mut first).await.expect("the emulator answers");
    socket
}

async fn beyond_the_connection_limit_clients_are_refused_as_by_a_full_server(engine: Engine) {
    let emulator = support::start(
        engine,
        EmulatorOptions {
            max_connections: 1,
            ..EmulatorOptions::default()
        },
    )
    .await;
    let user = support::iam_user(&emulator).await;
    let token = support::token(&emulator, user).await;
    let holder = hold_a_connection(engine, emulator.address).await;

    let refused = support::client(engine, &emulator, user, &token, "SELECT 1")
        .await
        .expect_err("no slot is free");
    let full = match engine {
        Engine::Postgres => "server sent an error response during SSL exchange",
        Engine::MariaDb => "1040 - Too many connections",
    };
    assert!(refused.contains(full), "{refused}");
    assert_eq!(emulator.stats().endpoints[0].refused.too_many_connections, 1);

    drop(holder);
    let freed_by = Instant::now() + Duration::from_secs(2);
    loop {
        match support::client(engine, &emulator, user, &token, "SELECT 1").await {
            Ok(output) => break assert_eq!(output, "1"),
            Err(error) => assert!(Instant::now() < freed_by, "the slot is not freed: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
