//! What reaches the service's logs: never a secret, however it was configured; one line per event, whatever the
//! client sends; and the client's own address unless a trusted proxy reports it.

use std::path::Path;

use tasks_api::Settings;
use test_support::{Backend, LogCapture, STATIC_PASSWORD, Stack, assert_no_secrets_logged, assert_problem, spawn_app};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

#[tokio::test]
async fn a_password_in_the_url_query_string_is_never_logged() {
    let stack = Stack::new(Backend::Postgres).await;
    // The local server trusts the connection and never asks for the password: only where it ends up matters.
    let url = format!("{}?password={STATIC_PASSWORD}", stack.database.url());
    let variables = [("APP__SERVER__PORT", "0"), ("APP__DATABASE__URL", url.as_str())]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
    let settings = Settings::load_from(Path::new("/nonexistent"), variables).expect("settings load");
    let connect_lines = LogCapture::containing(stack.database.name());

    let app = stack
        .start(settings, None)
        .await
        .map_err(|(error, _)| error)
        .expect("starts");
    app.create_task("with a password from the query string").await;

    // The URL is logged, as the connect span's field, so a password left in it would have been caught.
    let events = connect_lines.events();
    assert!(
        events.iter().any(|event| event.contains("connect to database")),
        "{events:?}"
    );
    assert_no_secrets_logged();
}

/// Sends `request` as written, bytes that a well-behaved client would refuse to send included, and returns the answer.
async fn send_raw(app: &test_support::TestApp, request: &[u8]) -> String {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connects");
    stream.write_all(request).await.expect("sent");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("answered");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn client_text_cannot_forge_log_lines() {
    let app = spawn_app(Backend::Sqlite).await;
    let marker = Uuid::new_v4().simple().to_string();
    let lines = LogCapture::containing(marker.as_str());

    // Percent-decoded, this id carries a line break and a line of its own into the error that is logged.
    let response = app
        .get(&format!(
            "/tasks/{marker}%0A2026-01-01T00:00:00.000000Z%20INFO%20forged"
        ))
        .await;
    // A header value cannot carry a line break at all: actix refuses a folded header before anything is logged.
    let folded = send_raw(
        &app,
        format!(
            "GET /health/live?{marker} HTTP/1.1\r\nHost: x\r\nUser-Agent: a\r\n INFO forged\r\nConnection: \
             close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;

    assert_problem(response, 400, "invalid_id").await;
    assert!(folded.starts_with("HTTP/1.1 400"), "{folded}");
    let events = lines.events();
    assert!(!events.is_empty(), "the refused id is logged");
    for event in &events {
        assert_eq!(event.matches('\n').count(), 1, "one line per event: {event}");
    }
}

#[tokio::test]
async fn the_client_address_is_the_socket_peer_unless_a_proxy_in_front_is_trusted() {
    for (trusted, client) in [("false", "127.0.0.1"), ("true", "203.0.113.8")] {
        let stack = Stack::new(Backend::Sqlite).await;
        let settings = stack.settings(&[("APP__SERVER__TRUST_FORWARDED_FOR", trusted)]);
        let app = stack
            .start(settings, None)
            .await
            .map_err(|(error, _)| error)
            .expect("starts");
        let path = format!("/health/live?probe={}", Uuid::new_v4().simple());
        let lines = LogCapture::containing(path.as_str());

        let response = app
            .request(reqwest::Method::GET, &path)
            .header("forwarded", "for=203.0.113.8")
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .await
            .expect("answered");

        assert_eq!(response.status(), 200);
        let events = lines.events();
        let served = events
            .iter()
            .find(|event| event.contains("request served"))
            .expect("the request is logged");
        assert!(
            served.contains(&format!("http.client_ip={client} ")),
            "trusted {trusted}: {served}"
        );
    }
}

#[tokio::test]
async fn client_errors_are_logged_once_at_info_with_their_problem_code() {
    let app = spawn_app(Backend::Sqlite).await;
    let marker = Uuid::new_v4().simple().to_string();
    let lines = LogCapture::containing(marker.as_str());

    let refusals = [
        (app.get(&format!("/tasks/not-{marker}")).await, 400, "invalid_id"),
        (app.get(&format!("/nowhere/{marker}")).await, 404, "route_not_found"),
        (
            app.request(reqwest::Method::PATCH, &format!("/tasks/{marker}"))
                .send()
                .await
                .expect("answered"),
            405,
            "method_not_allowed",
        ),
    ];

    for (response, status, code) in refusals {
        assert_problem(response, status, code).await;
    }
    let events = lines.events();
    for (status, code) in [
        (400, "invalid_id"),
        (404, "route_not_found"),
        (405, "method_not_allowed"),
    ] {
        let logged: Vec<&String> = events
            .iter()
            .filter(|event| event.contains(&format!("code=\"{code}\"")))
            .collect();
        assert_eq!(logged.len(), 1, "{code}: {events:?}");
        assert!(
            logged[0].contains(" INFO ") && logged[0].contains(&format!("status={status} ")),
            "{code}: {logged:?}"
        );
    }
    assert_eq!(events.len(), 3, "nothing else, at WARN or otherwise: {events:?}");
}

#[tokio::test]
async fn a_failed_request_is_logged_once_at_error_with_its_cause_chain_on_one_line() {
    let app = spawn_app(Backend::Postgres).await;
    let id = Uuid::now_v7();
    let lines = LogCapture::containing(id.to_string());
    app.database.take_down().await;

    assert_problem(app.get(&format!("/tasks/{id}")).await, 503, "database_unavailable").await;

    let events = lines.events();
    let errors: Vec<&String> = events.iter().filter(|event| event.contains(" ERROR ")).collect();
    assert_eq!(errors.len(), 1, "{events:?}");
    assert!(
        errors[0].contains("request failed error=the task store is unavailable: "),
        "{errors:?}"
    );
    // The causes' Display texts, not a Debug tree of the error values.
    assert!(
        !errors[0].contains("Conn(") && !errors[0].contains("SqlxError("),
        "{errors:?}"
    );
}
