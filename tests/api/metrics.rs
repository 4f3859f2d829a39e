//! `GET /metrics`: scraped before and after requests, a lock, a killed session and a credential outage, to see each
//! figure move as its cause happens. Waits are for a figure to reach a value, never for a time, except to outlast a
//! configured limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use sqlx::AssertSqlSafe;
use test_support::iam::{CredentialOutage, SECRET_ACCESS_KEY};
use test_support::{Backend, STATIC_PASSWORD, Scrape, Stack, TestApp, spawn_app};
use uuid::Uuid;

// Every test on every backend it applies to: SQLite has no sessions to end, and only IAM has a token.
backend_tests!(sqlite, Sqlite;
    requests_move_their_counters_and_every_pool_figure_is_served,
    a_connection_idle_or_old_enough_is_closed_and_the_next_request_opens_another
);
backend_tests!(postgres, Postgres;
    requests_move_their_counters_and_every_pool_figure_is_served,
    start_up_connections_are_closed_before_serving_and_the_first_request_opens_its_own,
    a_connection_idle_or_old_enough_is_closed_and_the_next_request_opens_another,
    a_locked_statement_is_in_use_the_next_waits_and_a_killed_session_is_retried_once
);
backend_tests!(mariadb, MariaDb;
    requests_move_their_counters_and_every_pool_figure_is_served,
    start_up_connections_are_closed_before_serving_and_the_first_request_opens_its_own,
    a_connection_idle_or_old_enough_is_closed_and_the_next_request_opens_another,
    a_locked_statement_is_in_use_the_next_waits_and_a_killed_session_is_retried_once
);
on_iam_backends!(
    requests_move_their_counters_and_every_pool_figure_is_served,
    a_locked_statement_is_in_use_the_next_waits_and_a_killed_session_is_retried_once,
    a_credential_outage_shows_as_failed_renewals_an_expired_token_and_refused_log_ins_retried,
);

/// Scrapes until `reached` holds of a scrape, and returns that scrape; fails the test after 20 s.
async fn scrape_until(app: &TestApp, what: &str, reached: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let scrape = Scrape::of(app).await;
        if reached(&scrape) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{}", scrape.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const IN_USE: &str = r#"db_pool_connections{pool="writer",state="in_use"}"#;
const IDLE: &str = r#"db_pool_connections{pool="writer",state="idle"}"#;
const WAITING: &str = r#"db_pool_waiting{pool="writer"}"#;
const OPENED: &str = r#"db_pool_connections_opened_total{pool="writer"}"#;
const CONNECTION_LOST: &str = r#"db_retries_total{pool="writer",cause="connection_lost"}"#;
const AUTH_FAILURE: &str = r#"db_retries_total{pool="writer",cause="auth_failure"}"#;
const TOKEN_EXPIRY: &str = r#"db_iam_token_expiry_seconds{pool="writer"}"#;
const RENEWALS: &str = r#"db_iam_token_renewals_total{pool="writer"}"#;
const RENEWAL_FAILURES: &str = r#"db_iam_token_renewal_failures_total{pool="writer"}"#;

async fn requests_move_their_counters_and_every_pool_figure_is_served(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = Scrape::of(&app).await;

    let id = app.create_task("counted").await;
    app.read_task(id).await;
    app.read_task(id).await;
    assert_eq!(app.get(&format!("/tasks/{}", Uuid::new_v4())).await.status(), 404);
    assert_eq!(app.get("/nowhere/at/all").await.status(), 404);
    let brew = Method::from_bytes(b"BREW").expect("a method");
    assert_eq!(
        app.request(brew, "/tasks").send().await.expect("answered").status(),
        405
    );
    let after = Scrape::of(&app).await;

    let moved = |series: &str| after.count(series) - before.count(series);
    for (series, requests) in [
        (r#"{route="/tasks",method="POST",status="201"}"#, 1.0),
        (r#"{route="/tasks/{id}",method="GET",status="200"}"#, 2.0),
        (r#"{route="/tasks/{id}",method="GET",status="404"}"#, 1.0),
        (r#"{route="default",method="GET",status="404"}"#, 1.0),
        (r#"{route="/tasks",method="other",status="405"}"#, 1.0),
        (r#"{route="/metrics",method="GET",status="200"}"#, 1.0),
    ] {
        assert_eq!(moved(&format!("http_requests_total{series}")), requests, "{series}");
        assert_eq!(
            moved(&format!("http_request_duration_seconds_count{series}")),
            requests,
            "{series}"
        );
        let labels = series.strip_suffix('}').expect("a label set");
        let le_inf = format!(r#"{labels},le="+Inf"}}"#);
        assert_eq!(
            moved(&format!("http_request_duration_seconds_bucket{le_inf}")),
            requests,
            "{series}"
        );
    }
    assert!(moved(r#"http_request_duration_seconds_sum{route="/tasks/{id}",method="GET",status="200"}"#) > 0.0);
    // Paths, methods and the database are never written out as they are.
    for raw in [&id.to_string(), "/nowhere", "BREW", app.database.name()] {
        assert!(!after.text.contains(raw), "{raw} in:\n{}", after.text);
    }

    assert!(after.value(OPENED) >= 1.0, "the migrations and requests logged in");
    assert!(after.value(IN_USE) + after.value(IDLE) >= 1.0, "{}", after.text);
    assert_eq!(after.value(WAITING), 0.0);
    assert_eq!(after.value(CONNECTION_LOST), 0.0);
    assert_eq!(after.value(AUTH_FAILURE), 0.0);
    if backend.uses_iam() {
        let expiry = after.value(TOKEN_EXPIRY);
        assert!(expiry > 0.0 && expiry <= 900.0, "{expiry}");
        assert_eq!(after.value(RENEWALS), 0.0);
        assert_eq!(after.value(RENEWAL_FAILURES), 0.0);
    } else {
        assert!(!after.text.contains("db_iam_token"), "{}", after.text);
    }
    for secret in [STATIC_PASSWORD, SECRET_ACCESS_KEY, "X-Amz"] {
        assert!(!after.text.contains(secret), "{}", after.text);
    }
}

/// The connections start-up opened (the first check, the migrations) are driven by the main thread's runtime, which
/// serves no requests: none is left open when the service starts serving, and the first request opens one of its own.
async fn start_up_connections_are_closed_before_serving_and_the_first_request_opens_its_own(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = Scrape::of(&app).await;
    assert!(before.value(OPENED) >= 1.0, "start-up opened none:\n{}", before.text);
    assert_eq!(
        (before.value(IN_USE), before.value(IDLE)),
        (0.0, 0.0),
        "{}",
        before.text
    );

    app.create_task("first").await;
    let after = Scrape::of(&app).await;
    assert_eq!(after.value(OPENED) - before.value(OPENED), 1.0, "{}", after.text);
    assert_eq!((after.value(IN_USE), after.value(IDLE)), (0.0, 1.0), "{}", after.text);
}

/// With one connection, kept out of the pool between statements: once it has been parked for the idle time-out, or
/// has lived for the maximum lifetime, the next request closes it and opens another, exactly one.
async fn a_connection_idle_or_old_enough_is_closed_and_the_next_request_opens_another(backend: Backend) {
    for limit in ["APP__DATABASE__IDLE_TIMEOUT_SECS", "APP__DATABASE__MAX_LIFETIME_SECS"] {
        let stack = Stack::new(backend).await;
        let settings = stack.settings(&[(limit, "2"), ("APP__DATABASE__MAX_CONNECTIONS", "1")]);
        let app = stack
            .start(settings, None)
            .await
            .map_err(|(error, _)| error)
            .expect("starts");
        let id = app.create_task("outlasted").await;
        app.read_task(id).await;
        let before = Scrape::of(&app).await;

        // Whichever the limit, the parked connection is past it: idle for longer, and older.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        app.read_task(id).await;
        let after = Scrape::of(&app).await;

        assert_eq!(
            after.value(OPENED) - before.value(OPENED),
            1.0,
            "{limit}:\n{}",
            after.text
        );
    }
}

/// With one connection: a read held up by a table lock keeps it in use and a second read waits for it; then every
/// session of the database is ended (the lock's with the service's), and the held-up read alone runs again.
async fn a_locked_statement_is_in_use_the_next_waits_and_a_killed_session_is_retried_once(backend: Backend) {
    let stack = Stack::new(backend).await;
    let settings = stack.settings(&[("APP__DATABASE__MAX_CONNECTIONS", "1")]);
    let app = Arc::new(
        stack
            .start(settings, None)
            .await
            .map_err(|(error, _)| error)
            .expect("starts"),
    );
    let id = app.create_task("behind a lock").await;
    let mut admin = app.database.admin_connection().await;
    let mut holder = app.database.connect().await;
    let lock = match backend {
        Backend::MariaDb | Backend::MariaDbIam => "LOCK TABLES tasks WRITE",
        _ => "BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE",
    };
    sqlx::raw_sql(AssertSqlSafe(lock))
        .execute(&mut holder)
        .await
        .expect("lock the table");
    let before = Scrape::of(&app).await;

    let reads: Vec<_> = (0..2)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { app.get(&format!("/tasks/{id}")).await.status() })
        })
        .collect();
    let blocked = scrape_until(&app, "one connection in use and one read waiting", |scrape| {
        scrape.value(IN_USE) == 1.0 && scrape.value(WAITING) == 1.0
    })
    .await;
    let ended = app.database.end_sessions(&mut admin).await;
    for read in reads {
        assert_eq!(read.await.expect("the read finishes"), 200);
    }
    let after = Scrape::of(&app).await;

    assert!(ended >= 2, "the service's session and the lock's were ended: {ended}");
    assert_eq!(blocked.value(IDLE), 0.0);
    assert_eq!(after.value(CONNECTION_LOST) - before.value(CONNECTION_LOST), 1.0);
    assert_eq!(after.value(AUTH_FAILURE), 0.0);
    assert!(
        after.value(OPENED) > before.value(OPENED),
        "a new connection replaced the killed one"
    );
    assert_eq!(after.value(WAITING), 0.0);
    let reads_served = r#"http_requests_total{route="/tasks/{id}",method="GET",status="200"}"#;
    assert_eq!(after.count(reads_served) - before.count(reads_served), 2.0);
}

/// Tokens of 6 s renewed half-way, connections of 1 s, and the credentials gone from the start: renewals fail, the
/// token expires, a log-in it is refused for is retried once after a renewal that fails too, and once the
/// credentials are back a renewal succeeds and the token has time left again.
async fn a_credential_outage_shows_as_failed_renewals_an_expired_token_and_refused_log_ins_retried(backend: Backend) {
    let stack = Stack::new(backend).await;
    let outage = CredentialOutage::default();
    let aws = outage.aws_config().await;
    let settings = stack.settings(&[
        ("APP__DATABASE__IAM__TOKEN_LIFETIME_SECS", "6"),
        ("APP__DATABASE__IAM__REFRESH_PERCENT", "50"),
        ("APP__DATABASE__IAM__RETRY_MAX_SECS", "1"),
        ("APP__DATABASE__MAX_LIFETIME_SECS", "1"),
    ]);
    let app = stack
        .start(settings, Some(aws))
        .await
        .map_err(|(error, _)| error)
        .expect("starts");
    let id = app.create_task("before the outage").await;
    let start = Scrape::of(&app).await;

    outage.begin();
    scrape_until(&app, "a failed renewal", |scrape| scrape.value(RENEWAL_FAILURES) >= 1.0).await;
    let expired = scrape_until(&app, "an expired token", |scrape| scrape.value(TOKEN_EXPIRY) == 0.0).await;
    // Connections opened before the token expired live one second more; then a read needs a log-in, refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.get(&format!("/tasks/{id}")).await.status() != 503 {
        assert!(
            Instant::now() < deadline,
            "reads still served 20 s after the token expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = Scrape::of(&app).await;
    outage.end();
    let recovered = scrape_until(&app, "a renewal after the outage", |scrape| {
        scrape.value(RENEWALS) >= 1.0
    })
    .await;

    assert!(
        start.value(TOKEN_EXPIRY) > 0.0 && start.value(TOKEN_EXPIRY) <= 6.0,
        "{}",
        start.text
    );
    assert_eq!(start.value(RENEWALS), 0.0);
    assert_eq!(expired.value(RENEWALS), 0.0, "no renewal during the outage");
    assert!(refused.value(AUTH_FAILURE) >= 1.0, "{}", refused.text);
    let unavailable = r#"http_requests_total{route="/tasks/{id}",method="GET",status="503"}"#;
    assert!(refused.count(unavailable) >= 1.0, "{}", refused.text);
    assert!(recovered.value(TOKEN_EXPIRY) > 0.0, "{}", recovered.text);
    assert_eq!(app.read_task(id).await.name, "before the outage");
}
