//! IAM authentication through the RDS IAM emulator, on PostgreSQL and on MariaDB: what it refuses, and that token
//! rotation and credential outages never cost an acknowledged write.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rds_iam::{IamToken, RdsTokenSigner, TokenLifetime, TokenTarget};
use secrecy::ExposeSecret;
use serde_json::json;
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection};
use test_support::iam::{
    ACCESS_KEY_ID, CredentialOutage, IAM_USER, OTHER_SECRET_ACCESS_KEY, PortForward, REGION, SECRET_ACCESS_KEY,
    aws_config,
};
use test_support::{Backend, EmulatorOptions, LogCapture, Stack, TaskBody, TestEmulator, assert_problem};

on_iam_backends!(
    a_token_signed_with_the_wrong_secret_is_refused_and_nothing_is_written,
    without_credentials_the_service_refuses_to_start_and_says_where_they_come_from,
    without_a_region_the_service_refuses_to_start_and_says_how_to_set_one,
    a_token_for_another_region_is_refused,
    a_token_for_another_host_is_refused,
    iam_without_tls_is_refused_by_the_server_even_when_the_service_allows_it,
    tls_weakened_by_the_url_is_refused_unless_allowed_by_name_and_then_logged_at_start,
    the_signing_host_override_names_the_real_endpoint_through_a_tunnel_and_gives_the_region,
    through_a_tunnel_the_certificate_is_verified_for_the_endpoints_name_not_the_tunnels,
    tokens_for_another_user_or_past_their_age_are_refused,
    a_user_name_that_needs_percent_encoding_works_end_to_end,
    tokens_rotate_under_load_without_a_failed_request_or_a_lost_write,
    a_credential_outage_is_ridden_out_on_the_last_good_token_and_reported_once_it_expires,
);

/// What the server says when it refuses `user`'s token: RDS's own words for each engine.
fn refusal(backend: Backend, user: &str) -> String {
    match backend {
        Backend::MariaDbIam => format!("Access denied for user '{user}'"),
        _ => format!("PAM authentication failed for user \"{user}\""),
    }
}

/// The SQLSTATE of a refused token: 28P01 on PostgreSQL; MySQL's error 1045 carries 28000.
pub(crate) fn refusal_sqlstate(backend: Backend) -> &'static str {
    match backend {
        Backend::MariaDbIam => "28000",
        _ => "28P01",
    }
}

/// Starts the service on `stack` and expects the start to fail; returns the error text and the untouched stack.
pub(crate) async fn refused_start(
    stack: Stack,
    overrides: &[(&str, &str)],
    aws: Option<aws_config::SdkConfig>,
) -> (String, Stack) {
    let settings = stack.settings(overrides);
    match stack.start(settings, aws).await {
        Ok(_) => panic!("the service started although its token should be refused"),
        Err((error, stack)) => (rds_iam::error_chain(&error), stack),
    }
}

async fn a_token_signed_with_the_wrong_secret_is_refused_and_nothing_is_written(backend: Backend) {
    let stack = Stack::new(backend).await;
    let wrong = aws_config(ACCESS_KEY_ID, OTHER_SECRET_ACCESS_KEY).await;

    let (error, stack) = refused_start(stack, &[], Some(wrong)).await;

    assert!(error.contains(&refusal(backend, IAM_USER)), "{error}");
    assert_eq!(stack.database.count_tables().await, 0);
}

async fn without_credentials_the_service_refuses_to_start_and_says_where_they_come_from(backend: Backend) {
    let stack = Stack::new(backend).await;
    let no_credentials = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .no_credentials()
        .load()
        .await;

    let (error, stack) = refused_start(stack, &[], Some(no_credentials)).await;

    assert!(
        error.contains("cannot sign an IAM token") && error.contains("AWS_ACCESS_KEY_ID"),
        "{error}"
    );
    assert_eq!(stack.database.count_tables().await, 0);
}

async fn without_a_region_the_service_refuses_to_start_and_says_how_to_set_one(backend: Backend) {
    let stack = Stack::new(backend).await;
    // Built by hand: the SDK's loader would look for a region on the instance metadata service.
    let no_region = aws_config::SdkConfig::builder()
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
            aws_credential_types::Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "tests"),
        ))
        .build();

    let (error, _) = refused_start(stack, &[], Some(no_region)).await;

    assert!(
        error.contains("APP__DATABASE__IAM__REGION") && error.contains("AWS_REGION"),
        "{error}"
    );
}

async fn a_token_for_another_region_is_refused(backend: Backend) {
    let options = EmulatorOptions {
        region: "eu-west-1".to_owned(),
        ..EmulatorOptions::default()
    };
    let stack = Stack::with_emulator(backend, options).await;

    let (error, stack) = refused_start(stack, &[("APP__DATABASE__IAM__REGION", "us-east-1")], None).await;

    assert!(error.contains(&refusal(backend, IAM_USER)), "{error}");
    assert_eq!(stack.database.count_tables().await, 0);
}

async fn a_token_for_another_host_is_refused(backend: Backend) {
    let stack = Stack::new(backend).await;

    let (error, stack) = refused_start(
        stack,
        &[("APP__DATABASE__IAM__SIGNING_HOST", "elsewhere.example")],
        None,
    )
    .await;

    assert!(error.contains(&refusal(backend, IAM_USER)), "{error}");
    assert_eq!(stack.database.count_tables().await, 0);
}

async fn iam_without_tls_is_refused_by_the_server_even_when_the_service_allows_it(backend: Backend) {
    let stack = Stack::new(backend).await;
    let plaintext = [
        ("APP__DATABASE__TLS__MODE", "disable"),
        ("APP__DATABASE__IAM__ALLOW_WITHOUT_TLS", "true"),
    ];

    let (error, stack) = refused_start(stack, &plaintext, None).await;

    assert!(error.contains("requires an SSL connection"), "{error}");
    assert_eq!(stack.database.count_tables().await, 0);
}

async fn tls_weakened_by_the_url_is_refused_unless_allowed_by_name_and_then_logged_at_start(backend: Backend) {
    let stack = Stack::new(backend).await;
    let require = match backend {
        Backend::MariaDbIam => "ssl-mode=REQUIRED",
        _ => "sslmode=require",
    };
    let url = format!("{}?{require}", stack.emulator().url(IAM_USER, stack.database.name()));
    let start_lines = LogCapture::containing(stack.database.name());

    let (error, stack) = refused_start(stack, &[("APP__DATABASE__URL", url.as_str())], None).await;
    let counts = &stack.emulator().counts;
    assert_eq!(counts.accepted() + counts.refused(), 0, "no token reached the server");
    let settings = stack.settings(&[
        ("APP__DATABASE__URL", url.as_str()),
        ("APP__DATABASE__IAM__ALLOW_WEAKER_TLS", "true"),
    ]);
    let app = stack
        .start(settings, None)
        .await
        .map_err(|(error, _)| error)
        .expect("starts when allowed by name");

    assert!(
        error.contains("APP__DATABASE__IAM__ALLOW_WEAKER_TLS") && error.contains("Require"),
        "{error}"
    );
    let warnings: Vec<String> = start_lines
        .events()
        .into_iter()
        .filter(|event| event.contains("WARN") && event.contains("allow_weaker_tls"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("Require"), "{warnings:?}");
    app.create_task("over TLS that does not check the server").await;
}

async fn the_signing_host_override_names_the_real_endpoint_through_a_tunnel_and_gives_the_region(backend: Backend) {
    // The service connects to 127.0.0.1 (a tunnel), but the token must name the endpoint, a cluster's or an RDS
    // Proxy's, whose name also carries the region the token is signed for.
    for endpoint in [
        "tasks.cluster-c9di9qmu8xqw.eu-west-3.rds.amazonaws.com",
        "tasks-proxy.proxy-c9di9qmu8xqw.eu-west-3.rds.amazonaws.com",
    ] {
        let port = if backend == Backend::MariaDbIam { "3306" } else { "5432" };
        let options = EmulatorOptions {
            region: "eu-west-3".to_owned(),
            endpoint: Some(format!("{endpoint}:{port}")),
            ..EmulatorOptions::default()
        };
        let stack = Stack::with_emulator(backend, options).await;
        let settings = stack.settings(&[
            ("APP__DATABASE__IAM__SIGNING_HOST", endpoint),
            ("APP__DATABASE__IAM__SIGNING_PORT", port),
        ]);

        let app = stack
            .start(settings, None)
            .await
            .map_err(|(error, _)| error)
            .expect("starts");

        let id = app.create_task("through the tunnel").await;
        assert_eq!(app.read_task(id).await.name, "through the tunnel", "{endpoint}");
    }
}

/// Through a real port forward, whose address the server's certificate does not name, verify-full checks the
/// certificate for the endpoint the tunnel leads to: it passes for the endpoint's name, and fails for another name,
/// before any token is sent. Verify-ca, allowed by name, checks the chain, against the CA bundle alone.
async fn through_a_tunnel_the_certificate_is_verified_for_the_endpoints_name_not_the_tunnels(backend: Backend) {
    let endpoint = "tasks.cluster-c9di9qmu8xqw.eu-west-3.rds.amazonaws.com";
    let elsewhere = "tasks.cluster-9uq4vp6wqkgd.eu-west-3.rds.amazonaws.com";
    let port = if backend == Backend::MariaDbIam { "3306" } else { "5432" };
    for (signing_host, mode, verified) in [
        (endpoint, "verify-full", true),
        (elsewhere, "verify-full", false),
        (endpoint, "verify-ca", true),
    ] {
        let options = EmulatorOptions {
            region: "eu-west-3".to_owned(),
            endpoint: Some(format!("{endpoint}:{port}")),
            ..EmulatorOptions::default()
        };
        let stack = Stack::with_emulator(backend, options).await;
        let tunnel = PortForward::to(stack.emulator().address).await;
        let tunnel_address = tunnel.address.to_string();
        let overrides = [
            ("APP__DATABASE__IAM__TUNNEL", tunnel_address.as_str()),
            ("APP__DATABASE__IAM__SIGNING_HOST", signing_host),
            ("APP__DATABASE__IAM__SIGNING_PORT", port),
            ("APP__DATABASE__TLS__MODE", mode),
            ("APP__DATABASE__IAM__ALLOW_WEAKER_TLS", "true"),
        ];
        if verified {
            let app = stack.launch(&overrides).await;
            let id = app.create_task("verified through the tunnel").await;
            assert_eq!(app.read_task(id).await.name, "verified through the tunnel");
        } else {
            let (error, stack) = refused_start(stack, &overrides, None).await;
            assert!(
                error.contains(&format!("TLS to {tunnel_address} failed")) && error.contains("certificate"),
                "{error}"
            );
            let emulator = stack.emulator();
            assert_eq!(
                emulator.counts.accepted() + emulator.counts.refused(),
                0,
                "no token was sent: {error}"
            );
        }
    }
}

/// A token for `user` at the emulator's address, from the product's own generator.
async fn token_for(emulator: &TestEmulator, user: &str, lifetime: Duration) -> IamToken {
    let target = TokenTarget {
        host: emulator.address.ip().to_string(),
        port: emulator.address.port(),
        user: user.to_owned(),
    };
    sign(target, None, lifetime).await
}

/// A token for `target` signed for `region` (else the host's, else [`REGION`]) with the known key, by the product's
/// own generator.
pub(crate) async fn sign(target: TokenTarget, region: Option<&str>, lifetime: Duration) -> IamToken {
    let aws = aws_config(ACCESS_KEY_ID, SECRET_ACCESS_KEY).await;
    let lifetime = TokenLifetime::new(lifetime).expect("a lifetime RDS accepts");
    let signer = RdsTokenSigner::new(target, region.map(str::to_owned), lifetime, Some(aws))
        .await
        .expect("a token signer");
    signer.sign().await.expect("a token")
}

/// Logs in to the emulator as `user` with `token`, verifying its certificate and name, the way any client of the
/// engine would.
pub(crate) async fn log_in(
    backend: Backend,
    emulator: &TestEmulator,
    user: &str,
    token: &IamToken,
) -> Result<(), sqlx::Error> {
    let (host, port) = (emulator.address.ip().to_string(), emulator.address.port());
    let password = token.secret().expose_secret();
    match backend {
        Backend::MariaDbIam => {
            MySqlConnectOptions::new()
                .host(&host)
                .port(port)
                .username(user)
                .password(password)
                .ssl_mode(MySqlSslMode::VerifyIdentity)
                .ssl_ca(emulator.ca_pem())
                .enable_cleartext_plugin(true)
                .connect()
                .await?
                .close()
                .await
        }
        _ => {
            PgConnectOptions::new()
                .host(&host)
                .port(port)
                .username(user)
                .database("postgres")
                .password(password)
                .ssl_mode(PgSslMode::VerifyFull)
                .ssl_root_cert(emulator.ca_pem())
                .connect()
                .await?
                .close()
                .await
        }
    }
}

pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .map(|code| code.into_owned())
}

async fn tokens_for_another_user_or_past_their_age_are_refused(backend: Backend) {
    let emulator = TestEmulator::start(
        backend,
        EmulatorOptions {
            max_token_age: Duration::from_secs(3),
            ..EmulatorOptions::default()
        },
    )
    .await;
    let long = Duration::from_secs(900);

    log_in(
        backend,
        &emulator,
        IAM_USER,
        &token_for(&emulator, IAM_USER, long).await,
    )
    .await
    .expect("a fresh token for the right user");
    let error = log_in(
        backend,
        &emulator,
        IAM_USER,
        &token_for(&emulator, "someone_else", long).await,
    )
    .await
    .expect_err("wrong user");
    assert_eq!(sqlstate(&error).as_deref(), Some(refusal_sqlstate(backend)), "{error}");

    // A token that lives one second (its own X-Amz-Expires, below the emulator's maximum), used after two.
    let token = token_for(&emulator, IAM_USER, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let error = log_in(backend, &emulator, IAM_USER, &token).await.expect_err("expired");
    assert_eq!(sqlstate(&error).as_deref(), Some(refusal_sqlstate(backend)), "{error}");
    assert_eq!(emulator.counts.refused(), 2);
}

async fn a_user_name_that_needs_percent_encoding_works_end_to_end(backend: Backend) {
    let stack = Stack::new(backend).await;
    let user = "tasks user+1@example";
    let name = stack.database.name().to_owned();
    stack.emulator().create_iam_user(user).await;
    stack
        .database
        .execute(match backend {
            Backend::MariaDbIam => format!("GRANT ALL ON {name}.* TO '{user}'@'%';"),
            _ => format!("GRANT ALL ON DATABASE {name} TO \"{user}\"; GRANT ALL ON SCHEMA public TO \"{user}\";"),
        })
        .await;
    let url = stack.emulator().url(user, &name);
    let settings = stack.settings(&[("APP__DATABASE__URL", url.as_str())]);

    let app = stack
        .start(settings, None)
        .await
        .map_err(|(error, _)| error)
        .expect("starts");

    let id = app.create_task("as an awkwardly named user").await;
    assert_eq!(app.read_task(id).await.name, "as an awkwardly named user");
    let sessions_as_user = app
        .database
        .scalar(match backend {
            // MySQL tables have no owner; the service's open sessions show who it logged in as.
            Backend::MariaDbIam => {
                "SELECT COUNT(*) FROM information_schema.processlist WHERE user = 'tasks user+1@example'"
            }
            _ => "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'tasks' AND tableowner = 'tasks user+1@example'",
        })
        .await;
    assert!(sessions_as_user >= 1, "the service works as that user");
}

/// How long the rotation test drives load, in seconds: 60 unless `ROTATION_TEST_SECONDS` says otherwise.
fn rotation_seconds() -> u64 {
    std::env::var("ROTATION_TEST_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(60)
}

async fn tokens_rotate_under_load_without_a_failed_request_or_a_lost_write(backend: Backend) {
    let stack = Stack::with_emulator(
        backend,
        EmulatorOptions {
            max_token_age: Duration::from_secs(5),
            ..EmulatorOptions::default()
        },
    )
    .await;
    let settings = stack.settings(&[
        ("APP__DATABASE__IAM__TOKEN_LIFETIME_SECS", "5"),
        ("APP__DATABASE__MAX_LIFETIME_SECS", "3"),
        ("APP__DATABASE__MAX_CONNECTIONS", "8"),
    ]);
    let app = Arc::new(
        stack
            .start(settings, None)
            .await
            .map_err(|(error, _)| error)
            .expect("starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(rotation_seconds());
    let failures = Arc::new(AtomicU64::new(0));

    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (app, failures) = (Arc::clone(&app), Arc::clone(&failures));
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut sequence = 0;
                while Instant::now() < deadline {
                    sequence += 1;
                    let response = app
                        .post_task(&json!({ "name": format!("client {client} #{sequence}") }))
                        .await;
                    if response.status() != 201 {
                        failures.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let id = response.json::<TaskBody>().await.expect("a task").id;
                    if app.get(&format!("/tasks/{id}")).await.status() != 200 {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    acknowledged.push(id);
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = HashSet::new();
    for client in clients {
        acknowledged.extend(client.await.expect("client finished"));
    }

    assert_eq!(failures.load(Ordering::Relaxed), 0, "failed requests during rotation");
    assert!(
        acknowledged.len() > 100,
        "only {} writes in the whole run",
        acknowledged.len()
    );
    assert_eq!(
        app.database.count_tasks().await,
        i64::try_from(acknowledged.len()).expect("fits")
    );
    let token = app.readiness().await.iam_token.expect("an IAM token report");
    let refreshes = token.refreshes;
    assert!(
        refreshes >= rotation_seconds() / 5,
        "only {refreshes} renewals in {}s",
        rotation_seconds()
    );
    assert_eq!(token.failures, 0);
    // Connections were really replaced and so really presented renewed tokens: 8 connections living 3 s each make
    // about 8 × seconds / 3 log-ins; at least half of that, or lifetimes are not enforced.
    let counts = &app.emulator.as_ref().expect("an emulator").counts;
    let expected = 8 * rotation_seconds() / 6;
    assert!(
        counts.accepted() >= expected,
        "{} log-ins, expected {expected}",
        counts.accepted()
    );
    assert_eq!(counts.refused(), 0);
}

async fn a_credential_outage_is_ridden_out_on_the_last_good_token_and_reported_once_it_expires(backend: Backend) {
    let stack = Stack::new(backend).await;
    let outage = CredentialOutage::default();
    let aws = outage.aws_config().await;
    let settings = stack.settings(&[
        // Renewal is first tried half-way, about 5 s in, leaving another 5 s on the last good token.
        ("APP__DATABASE__IAM__TOKEN_LIFETIME_SECS", "10"),
        ("APP__DATABASE__IAM__REFRESH_PERCENT", "50"),
        ("APP__DATABASE__IAM__RETRY_MAX_SECS", "1"),
        ("APP__DATABASE__MAX_LIFETIME_SECS", "2"),
    ]);
    let app = stack
        .start(settings, Some(aws))
        .await
        .map_err(|(error, _)| error)
        .expect("starts");
    let token = app.readiness().await.iam_token.expect("an IAM token report");
    // Whole seconds, rounded down: the token may live up to a second longer than this, never shorter.
    let expires_in = Duration::from_secs(token.expires_in_secs);
    let token_expires = Instant::now() + expires_in;
    let before = app.create_task("before the outage").await;

    outage.begin();
    // Until the last good token expires, new connections (every 2 s) still get in with it.
    while Instant::now() + Duration::from_millis(700) < token_expires {
        app.create_task("during the outage").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let token = app.readiness().await.iam_token.expect("an IAM token report");
    assert!(token.failures > 0, "renewal was attempted and failed: {token:?}");

    tokio::time::sleep_until((token_expires + Duration::from_millis(1300)).into()).await;
    let problem = assert_problem(app.get("/health/ready").await, 503, "iam_token_expired").await;
    assert!(
        !problem.detail.contains("credential source"),
        "no internals: {problem:?}"
    );

    outage.end();
    let recovered_by = Instant::now() + Duration::from_secs(10);
    while app.get("/health/ready").await.status() != 200 {
        assert!(
            Instant::now() < recovered_by,
            "not ready again 10 s after the credentials came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = app.create_task("after the outage").await;
    for (id, name) in [(before, "before the outage"), (after, "after the outage")] {
        assert_eq!(app.read_task(id).await.name, name);
    }
}

#[tokio::test]
async fn cancel_requests_reach_the_upstream_server_through_the_emulator() {
    let emulator = TestEmulator::start(Backend::PostgresIam, EmulatorOptions::default()).await;
    let token = token_for(&emulator, IAM_USER, Duration::from_secs(900)).await;
    let connection = format!(
        "host={} port={} user={IAM_USER} dbname=postgres sslmode=verify-full sslrootcert={}",
        emulator.address.ip(),
        emulator.address.port(),
        emulator.ca_pem().display()
    );
    // psql turns SIGINT into a PostgreSQL cancel request on a new connection, as every libpq client does.
    let psql = tokio::process::Command::new("psql")
        .args([connection.as_str(), "-c", "SELECT pg_sleep(30)"])
        .env("PGPASSWORD", token.secret().expose_secret())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql (postgresql-client) is installed");
    let pid = psql.id().expect("running").to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();

    let signalled = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    let output = tokio::time::timeout(Duration::from_secs(10), psql.wait_with_output())
        .await
        .expect("psql stops soon after the cancel")
        .expect("psql output");

    assert!(signalled.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("canceling statement due to user request"), "{stderr}");
}

#[tokio::test]
async fn a_mysql_token_is_never_sent_without_required_tls_and_the_error_says_what_to_change() {
    let stack = Stack::new(Backend::MariaDbIam).await;

    // Prefer may go without TLS, so IAM allows it only with allow_without_tls; the driver must still keep the token.
    let prefer = [
        ("APP__DATABASE__TLS__MODE", "prefer"),
        ("APP__DATABASE__IAM__ALLOW_WITHOUT_TLS", "true"),
    ];
    let (error, stack) = refused_start(stack, &prefer, None).await;

    assert!(
        error.contains("mysql_clear_password") && error.contains("APP__DATABASE__TLS__MODE"),
        "{error}"
    );
    let counts = &stack.emulator().counts;
    assert_eq!(counts.accepted() + counts.refused(), 0, "no token reached the server");
    assert_eq!(stack.database.count_tables().await, 0);
}
