//! The MySQL front end's order of work: the client is authenticated before the upstream is asked for anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rds_iam_emulator::testing::EmulatorOptions;
use tokio::net::{TcpListener, TcpStream};

use crate::support::{self, Engine};

/// A TCP forwarder to `target` that counts the connections opened through it.
async fn counting_forwarder(target: String) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address");
    let opened = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&opened);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let target = target.clone();
            tokio::spawn(async move {
                let mut outbound = TcpStream::connect(target).await.expect("the upstream listens");
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (address, opened)
}

#[tokio::test]
async fn clients_are_authenticated_before_any_upstream_connection_is_opened_for_them() {
    let mut upstream = Engine::MariaDb.upstream();
    let server = format!(
        "{}:{}",
        upstream.host_str().expect("a host"),
        upstream.port().unwrap_or(3306)
    );
    let (forwarder, opened) = counting_forwarder(server).await;
    upstream.set_port(Some(forwarder.port())).expect("a port");
    upstream.set_host(Some("127.0.0.1")).expect("a host");
    let emulator = support::start_in_front_of(upstream, EmulatorOptions::default()).await;
    let user = support::iam_user(&emulator).await;
    // The emulator's own connection, which it keeps to ask who has been granted rds_iam.
    let own = opened.load(Ordering::SeqCst);

    for _ in 0..5 {
        let refused = support::client(Engine::MariaDb, &emulator, user, "not-a-token", "SELECT 1")
            .await
            .expect_err("refused");
        assert!(refused.contains("Access denied"), "{refused}");
    }
    // Once, and only once, the upstream's greeting is read to greet clients with.
    assert_eq!(opened.load(Ordering::SeqCst), own + 1);

    let token = support::token(&emulator, user).await;
    let output = support::client(Engine::MariaDb, &emulator, user, &token, "status; SELECT VERSION()")
        .await
        .expect("a valid token");
    // The session's; the membership check used the emulator's own connection.
    assert_eq!(opened.load(Ordering::SeqCst), own + 2);
    // The client was greeted with the server's own version: the one the server reports in the session.
    let version = output.lines().last().expect("the version");
    let greeted_with = output
        .lines()
        .find(|line| line.starts_with("Server version:"))
        .expect("the client's status");
    assert!(greeted_with.contains(version), "{output}");
}
