//! Cluster mode with sqlx, whose errors carry the codes a service decides on: the reader's read-only sessions, a
//! failover's downtime, swap and stale DNS, the rate of authentications, and the statistics. Each drill waits for
//! the state it checks (polling the statistics) and asserts states and counts, never how long anything took.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use rds_iam_emulator::testing::{EmulatorOptions, TestCluster, TestEmulator};
use rds_iam_emulator::{FailoverPhase, FailoverStarted, Refusals, Stats};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions};

use crate::support::{self, Engine};

on_both_engines!(
    readers_refuse_writes_as_aurora_readers_do,
    a_failover_refuses_connections_then_swaps_the_roles_behind_stale_dns,
    authentications_beyond_the_rate_are_refused_in_rds_words,
);

/// Long enough for a loaded machine to make its checks within each spell.
const DOWNTIME: Duration = Duration::from_secs(6);
const STALE_DNS: Duration = Duration::from_secs(6);

/// A session through one of the cluster's endpoints.
enum Session {
    Postgres(PgConnection),
    MariaDb(MySqlConnection),
}

impl Session {
    async fn execute(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        let sql = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()));
        match self {
            Self::Postgres(connection) => sql.execute(connection).await.map(drop),
            Self::MariaDb(connection) => sql.execute(connection).await.map(drop),
        }
    }
}

/// Logs in as `user` through the endpoint named `endpoint`, with a token signed for its address, verifying the
/// emulator's certificate.
async fn connect(engine: Engine, cluster: &TestEmulator, endpoint: &str, user: &str) -> Result<Session, sqlx::Error> {
    let address = cluster.endpoint_address(endpoint);
    let token = support::token_for(&address.to_string(), user).await;
    connect_with(engine, cluster, endpoint, user, &token).await
}

async fn connect_with(
    engine: Engine,
    cluster: &TestEmulator,
    endpoint: &str,
    user: &str,
    token: &str,
) -> Result<Session, sqlx::Error> {
    let address = cluster.endpoint_address(endpoint);
    match engine {
        Engine::Postgres => PgConnectOptions::new()
            .host(&address.ip().to_string())
            .port(address.port())
            .username(user)
            .password(token)
            .database("postgres")
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert(cluster.ca_pem())
            .connect()
            .await
            .map(Session::Postgres),
        Engine::MariaDb => MySqlConnectOptions::new()
            .host(&address.ip().to_string())
            .port(address.port())
            .username(user)
            .password(token)
            .ssl_mode(MySqlSslMode::VerifyIdentity)
            .ssl_ca(cluster.ca_pem())
            .enable_cleartext_plugin(true)
            .connect()
            .await
            .map(Session::MariaDb),
    }
}

/// The SQLSTATE, the MySQL error number (0 on PostgreSQL) and the message of a database's error.
fn database_error(error: &sqlx::Error) -> (String, u16, String) {
    let Some(database) = error.as_database_error() else {
        panic!("not an error from the database: {error}");
    };
    let number = database
        .try_downcast_ref::<MySqlDatabaseError>()
        .map_or(0, MySqlDatabaseError::number);
    (
        database.code().unwrap_or_default().into_owned(),
        number,
        database.message().to_owned(),
    )
}

/// A statement that writes, which the IAM user may run on the writer. PostgreSQL: a temporary table, which every
/// user may create and a read-only transaction may not. MariaDB lets read-only transactions write temporary tables,
/// so a table of a database of the test's own, dropped by the returned statement.
async fn a_write(engine: Engine, cluster: &TestEmulator, user: &str) -> (String, Option<String>) {
    match engine {
        Engine::Postgres => ("CREATE TEMPORARY TABLE writes (x INT)".to_owned(), None),
        Engine::MariaDb => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_nanos();
            let database = format!("emulator_cluster_{nanos:x}");
            cluster
                .administer(&format!(
                    "CREATE DATABASE {database}; CREATE TABLE {database}.writes (x INT); \
                     GRANT INSERT ON {database}.* TO '{user}'@'%'"
                ))
                .await;
            (
                format!("INSERT INTO {database}.writes VALUES (1)"),
                Some(format!("DROP DATABASE {database}")),
            )
        }
    }
}

/// What an Aurora reader answers a write with: PostgreSQL's 25006, Aurora MySQL's 1290.
fn assert_refused_as_read_only(engine: Engine, error: &sqlx::Error) {
    let (code, number, message) = database_error(error);
    match engine {
        Engine::Postgres => assert_eq!(code, "25006", "{message}"),
        Engine::MariaDb => {
            assert_eq!((number, code.as_str()), (1290, "HY000"), "{message}");
            assert!(message.contains("--read-only option"), "{message}");
        }
    }
}

/// What a restarting instance answers a connection with.
fn assert_starting_up(engine: Engine, error: &sqlx::Error) {
    let (code, number, message) = database_error(error);
    match engine {
        Engine::Postgres => assert_eq!(
            (code.as_str(), message.as_str()),
            ("57P03", "the database system is starting up")
        ),
        Engine::MariaDb => assert_eq!((number, code.as_str()), (1053, "08S01"), "{message}"),
    }
}

/// The statistics once `settled` holds of them; the emulator counts a session just after its client has it.
async fn stats_once(cluster: &TestEmulator, settled: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = cluster.stats();
        if settled(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the statistics never settled: {stats:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn phase(stats: &Stats) -> Option<FailoverPhase> {
    stats.failover.as_ref().map(|failover| failover.phase)
}

fn endpoint<'a>(stats: &'a Stats, name: &str) -> &'a rds_iam_emulator::EndpointStats {
    stats
        .endpoints
        .iter()
        .find(|endpoint| endpoint.endpoint.name == name)
        .unwrap_or_else(|| panic!("no endpoint {name}"))
}

/// Where each endpoint relays now, and whether its sessions are read-only: cluster, reader, a, b.
fn routes(stats: &Stats) -> Vec<(&str, Option<&str>, bool)> {
    ["cluster", "reader", "a", "b"]
        .map(|name| {
            let endpoint = endpoint(stats, name);
            (name, endpoint.relays_to.as_deref(), endpoint.read_only)
        })
        .to_vec()
}

async fn start(engine: Engine, options: EmulatorOptions) -> (TestCluster, &'static str) {
    let cluster = support::start_cluster(engine, options).await;
    let user = support::iam_user(&cluster).await;
    (cluster, user)
}

async fn readers_refuse_writes_as_aurora_readers_do(engine: Engine) {
    let (cluster, user) = start(engine, EmulatorOptions::default()).await;
    let (write, cleanup) = a_write(engine, &cluster, user).await;

    let mut sessions = Vec::new();
    for writer in ["cluster", "a"] {
        let mut session = connect(engine, &cluster, writer, user)
            .await
            .expect("the writer lets in");
        session.execute(&write).await.expect("the writer takes writes");
        sessions.push(session);
    }
    for reader in ["reader", "b"] {
        let mut session = connect(engine, &cluster, reader, user).await.expect("a reader lets in");
        session.execute("SELECT 1").await.expect("a reader takes reads");
        let refused = session.execute(&write).await.expect_err("a reader refuses writes");
        assert_refused_as_read_only(engine, &refused);
        sessions.push(session);
    }

    let stats = stats_once(&cluster, |stats| stats.sessions_open == 4).await;
    assert_eq!(
        routes(&stats),
        [
            ("cluster", Some("a"), false),
            ("reader", Some("b"), true),
            ("a", Some("a"), false),
            ("b", Some("b"), true)
        ]
    );
    for endpoint in &stats.endpoints {
        assert_eq!((endpoint.connections, endpoint.sessions_opened), (1, 1), "{endpoint:?}");
    }
    let open: Vec<u64> = stats.instances.iter().map(|instance| instance.sessions_open).collect();
    assert_eq!(open, [2, 2]);
    assert_eq!((stats.tokens_verified, stats.logins_accepted), (4, 4));
    if let Some(cleanup) = cleanup {
        cluster.administer(&cleanup).await;
    }
}

async fn a_failover_refuses_connections_then_swaps_the_roles_behind_stale_dns(engine: Engine) {
    let (cluster, user) = start(engine, EmulatorOptions::default()).await;
    let (write, cleanup) = a_write(engine, &cluster, user).await;
    let mut on_the_writer = connect(engine, &cluster, "cluster", user).await.expect("lets in");
    let mut on_the_reader = connect(engine, &cluster, "reader", user).await.expect("lets in");
    stats_once(&cluster, |stats| stats.sessions_open == 2).await;

    let started = cluster.failover(DOWNTIME, STALE_DNS);

    assert_eq!(
        started,
        FailoverStarted {
            old_writer: "a".to_owned(),
            new_writer: "b".to_owned(),
            downtime_ms: 6000,
            stale_dns_ms: 6000,
        }
    );
    // Down: every session closed, and every endpoint refuses with the engine's start-up error.
    stats_once(&cluster, |stats| stats.sessions_open == 0).await;
    for session in [&mut on_the_writer, &mut on_the_reader] {
        let closed = session.execute("SELECT 1").await.expect_err("the failover closed it");
        assert!(closed.as_database_error().is_none(), "closed, not refused: {closed}");
    }
    for endpoint in ["cluster", "reader", "a", "b"] {
        let refused = connect(engine, &cluster, endpoint, user)
            .await
            .err()
            .unwrap_or_else(|| panic!("{endpoint} let a client in while the instances restart"));
        assert_starting_up(engine, &refused);
    }
    let stats = cluster.stats();
    assert_eq!(
        phase(&stats),
        Some(FailoverPhase::Down),
        "the checks outlasted the downtime"
    );
    assert_eq!(stats.writer, "a");
    assert!(stats.instances.iter().all(|instance| !instance.available));
    assert!(routes(&stats).iter().all(|(_, relays_to, _)| relays_to.is_none()));
    for endpoint in &stats.endpoints {
        let starting_up = Refusals {
            starting_up: 1,
            ..Refusals::default()
        };
        assert_eq!(endpoint.refused, starting_up, "{}", endpoint.endpoint.name);
    }

    // Stale DNS: b is the writer, but the cluster endpoint still reaches a, now read-only.
    let stats = stats_once(&cluster, |stats| phase(stats) != Some(FailoverPhase::Down)).await;
    assert_eq!(phase(&stats), Some(FailoverPhase::StaleDns));
    assert_eq!((stats.writer.as_str(), stats.reader.as_deref()), ("b", Some("a")));
    assert_eq!(
        routes(&stats),
        [
            ("cluster", Some("a"), true),
            ("reader", Some("a"), true),
            ("a", Some("a"), true),
            ("b", Some("b"), false)
        ]
    );
    let mut stale = connect(engine, &cluster, "cluster", user).await.expect("lets in");
    let refused = stale.execute(&write).await.expect_err("the old writer is a reader now");
    assert_refused_as_read_only(engine, &refused);
    let mut promoted = connect(engine, &cluster, "b", user).await.expect("lets in");
    promoted.execute(&write).await.expect("the new writer takes writes");
    assert_eq!(
        phase(&cluster.stats()),
        Some(FailoverPhase::StaleDns),
        "the checks outlasted the stale-DNS spell"
    );

    // Settled: the cluster endpoint reaches the new writer; the session opened on the stale name stays read-only.
    let stats = stats_once(&cluster, |stats| stats.failover.is_none()).await;
    assert_eq!(endpoint(&stats, "cluster").relays_to.as_deref(), Some("b"));
    let mut fresh = connect(engine, &cluster, "cluster", user).await.expect("lets in");
    fresh
        .execute(&write)
        .await
        .expect("the cluster endpoint reaches the new writer");
    let refused = stale.execute(&write).await.expect_err("still on the old writer");
    assert_refused_as_read_only(engine, &refused);
    if let Some(cleanup) = cleanup {
        cluster.administer(&cleanup).await;
    }
}

async fn authentications_beyond_the_rate_are_refused_in_rds_words(engine: Engine) {
    const ATTEMPTS: usize = 5;
    let options = EmulatorOptions {
        max_auth_per_sec: Some(1.try_into().expect("not zero")),
        ..EmulatorOptions::default()
    };
    let (cluster, user) = start(engine, options).await;
    let token = support::token_for(&cluster.address.to_string(), user).await;

    // At once, so that they fall within one second on any machine.
    let attempts = join_all((0..ATTEMPTS).map(|_| connect_with(engine, &cluster, "cluster", user, &token))).await;

    let throttled: Vec<sqlx::Error> = attempts.into_iter().filter_map(Result::err).collect();
    let accepted = ATTEMPTS - throttled.len();
    assert!(
        accepted >= 1 && !throttled.is_empty(),
        "{accepted} accepted of {ATTEMPTS}"
    );
    for error in &throttled {
        let (code, number, message) = database_error(error);
        match engine {
            Engine::Postgres => assert_eq!(
                (code.as_str(), message.as_str()),
                (
                    "53300",
                    "The IAM authentication failed because of too many competing requests."
                )
            ),
            Engine::MariaDb => assert_eq!(
                (number, code.as_str(), message.as_str()),
                (1040, "HY000", "IAM authentication rate limit exceeded")
            ),
        }
    }
    let stats = stats_once(&cluster, |stats| stats.sessions_open == accepted as u64).await;
    let cluster_endpoint = endpoint(&stats, "cluster");
    assert_eq!(
        (cluster_endpoint.sessions_opened, cluster_endpoint.refused.throttled),
        (accepted as u64, throttled.len() as u64)
    );
    assert_eq!(
        (stats.tokens_verified, stats.logins_accepted),
        (ATTEMPTS as u64, accepted as u64)
    );
}

#[tokio::test]
async fn statistics_count_connections_refusals_and_their_peak_rate() {
    let (cluster, user) = start(Engine::Postgres, EmulatorOptions::default()).await;

    let refused = connect_with(Engine::Postgres, &cluster, "reader", user, "not-a-token")
        .await
        .err()
        .expect("not a token");
    let sessions = join_all((0..3).map(|_| connect(Engine::Postgres, &cluster, "cluster", user))).await;

    assert_eq!(database_error(&refused).0, "28P01");
    assert!(sessions.iter().all(Result::is_ok));
    let stats = stats_once(&cluster, |stats| stats.sessions_open == 3).await;
    let (cluster_endpoint, reader) = (endpoint(&stats, "cluster"), endpoint(&stats, "reader"));
    assert_eq!((cluster_endpoint.connections, cluster_endpoint.sessions_opened), (3, 3));
    assert_eq!((reader.connections, reader.sessions_opened), (1, 0));
    assert_eq!(
        reader.refused,
        Refusals {
            unauthorized: 1,
            ..Refusals::default()
        }
    );
    // Each connection is one of some second's new connections; the peak over all endpoints is at least any one's.
    assert!((1..=3).contains(&cluster_endpoint.peak_new_connections_per_sec));
    assert!((cluster_endpoint.peak_new_connections_per_sec..=4).contains(&stats.peak_new_connections_per_sec));
    assert_eq!((stats.tokens_verified, stats.logins_accepted), (4, 3));
}

#[tokio::test]
async fn the_control_api_fails_over_and_reports_over_http() {
    let (cluster, _) = start(Engine::Postgres, EmulatorOptions::default()).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", cluster.control_url());

    let stats = http.get(url("/stats")).send().await.expect("answers");
    assert_eq!(stats.status(), 200);
    let stats: Stats = serde_json::from_str(&stats.text().await.expect("a body")).expect("statistics");
    assert_eq!(stats, cluster.stats());
    let names: Vec<&str> = stats
        .endpoints
        .iter()
        .map(|endpoint| endpoint.endpoint.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b", "cluster", "reader"]);

    for (method, path, status, allow) in [
        (reqwest::Method::GET, "/", 404, None),
        (reqwest::Method::GET, "/failover", 405, Some("POST")),
        (reqwest::Method::POST, "/stats", 405, Some("GET")),
        (reqwest::Method::POST, "/failover?downtime=100", 400, None),
        (
            reqwest::Method::POST,
            "/failover?downtime_ms=100&downtime_ms=200",
            400,
            None,
        ),
        (reqwest::Method::POST, "/failover?stale_dns_ms=3600001", 400, None),
    ] {
        let answer = http.request(method.clone(), url(path)).send().await.expect("answers");
        assert_eq!(answer.status(), status, "{method} {path}");
        assert_eq!(
            answer.headers().get("allow").map(|allow| allow.to_str().expect("text")),
            allow,
            "{method} {path}"
        );
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
        let problem: serde_json::Value = serde_json::from_str(&answer.text().await.expect("a body")).expect("JSON");
        assert_eq!(problem["status"], status, "{problem}");
    }
    assert_eq!(cluster.stats().failover, None, "no refused request started a failover");

    let started = http
        .post(url("/failover?downtime_ms=60000&stale_dns_ms=1000"))
        .send()
        .await
        .expect("answers");
    assert_eq!(started.status(), 200);
    let started: FailoverStarted = serde_json::from_str(&started.text().await.expect("a body")).expect("JSON");
    assert_eq!((started.old_writer.as_str(), started.new_writer.as_str()), ("a", "b"));
    let again = http.post(url("/failover")).send().await.expect("answers");
    assert_eq!(again.status(), 409);
    assert_eq!(phase(&cluster.stats()), Some(FailoverPhase::Down));
}

#[tokio::test]
async fn a_proxy_endpoint_name_is_signed_for_and_certified() {
    const PROXY: &str = "tasks.proxy-abcdefghijkl.us-east-1.rds.amazonaws.com:5432";
    let options = EmulatorOptions {
        endpoint: Some(PROXY.to_owned()),
        ..EmulatorOptions::default()
    };
    let emulator = support::start(Engine::Postgres, options).await;
    let user = support::iam_user(&emulator).await;
    let token = support::token_for(PROXY, user).await;

    // psql connects to the emulator's address but verifies the certificate against the proxy's name, as a client
    // reaching the proxy through a tunnel does.
    let (host, _) = PROXY.rsplit_once(':').expect("host:port");
    let connection = format!(
        "host={host} hostaddr={} port={} user={user} dbname=postgres sslmode=verify-full sslrootcert={} \
         connect_timeout=10",
        emulator.address.ip(),
        emulator.address.port(),
        emulator.ca_pem().display()
    );
    let output = tokio::process::Command::new("psql")
        .args(["-X", "-A", "-t", "-c", "SELECT 1", &connection])
        .env("PGPASSWORD", &token)
        .kill_on_drop(true)
        .output()
        .await
        .expect("psql is installed");

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "1");
    let signed_for_the_address = support::token(&emulator, user).await;
    let refused = support::client(Engine::Postgres, &emulator, user, &signed_for_the_address, "SELECT 1").await;
    assert!(refused.is_err(), "a token must name the proxy");
}

#[tokio::test]
async fn the_binary_serves_a_cluster_from_its_flags() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let credentials = support::credentials_file(directory.path());
    // A port that was free a moment ago, for the control API: the test must know where to ask.
    let control = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let _emulator = tokio::process::Command::new(env!("CARGO_BIN_EXE_rds-iam-emulator"))
        .args(["--upstream", Engine::Postgres.upstream().as_str(), "--credentials"])
        .arg(&credentials)
        .arg("--tls-dir")
        .arg(directory.path())
        .args([
            "--instance",
            "a=127.0.0.1:0",
            "--instance",
            "b=127.0.0.1:0@tasks-b.xyz.us-east-1.rds.amazonaws.com:5432",
            "--cluster-listen",
            "127.0.0.1:0@tasks.cluster-xyz.us-east-1.rds.amazonaws.com:5432",
            "--reader-listen",
            "127.0.0.1:0",
            "--max-auth-per-sec",
            "200",
            "--control-listen",
            &control.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the emulator runs");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let stats: Stats = loop {
        if let Ok(answer) = reqwest::get(format!("http://{control}/stats")).await {
            break serde_json::from_str(&answer.text().await.expect("a body")).expect("statistics");
        }
        assert!(tokio::time::Instant::now() < deadline, "the control API never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let signing_names: Vec<(&str, &str)> = stats
        .endpoints
        .iter()
        .map(|endpoint| (endpoint.endpoint.name.as_str(), endpoint.endpoint.signing_name.as_str()))
        .collect();
    let a = endpoint(&stats, "a").endpoint.listen.to_string();
    let reader = endpoint(&stats, "reader").endpoint.listen.to_string();
    assert_eq!(
        signing_names,
        [
            ("a", a.as_str()),
            ("b", "tasks-b.xyz.us-east-1.rds.amazonaws.com:5432"),
            ("cluster", "tasks.cluster-xyz.us-east-1.rds.amazonaws.com:5432"),
            ("reader", reader.as_str()),
        ]
    );
    assert_eq!((stats.writer.as_str(), stats.reader.as_deref()), ("a", Some("b")));
}

#[test]
fn cluster_flags_that_do_not_fit_are_refused() {
    for (arguments, named) in [
        (
            &["--instance", "a=127.0.0.1:0", "--instance", "b=127.0.0.1:0"][..],
            &["--listen", "--instance"][..],
        ),
        (
            &["--cluster-listen", "127.0.0.1:0"],
            &["--cluster-listen", "--instance"],
        ),
        (&["--instance", "a=localhost:1"], &["--instance", "localhost:1"]),
        (&["--max-auth-per-sec", "0"], &["--max-auth-per-sec"]),
    ] {
        let messages = support::run_refused(arguments);
        for flag in named {
            assert!(messages.contains(flag), "{arguments:?}: {messages}");
        }
    }
}
