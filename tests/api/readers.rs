//! A reader pool beside the writer's: eventual reads go to the reader, strong reads (`Consistency: strong`) and every
//! write to the writer, and reads fall back to the writer when the reader cannot be reached. Which pool served what
//! is read from `db_operations_total`, per pool.

use reqwest::Method;
use test_support::drills::ScratchPostgres;
use test_support::iam::{self, IAM_USER, TestCluster};
use test_support::{Backend, EmulatorOptions, Scrape, Stack, TestApp, TestDatabase, assert_problem};
use uuid::Uuid;

on_iam_backends!(
    eventual_reads_go_to_the_reader_and_strong_ones_and_writes_to_the_writer,
    readiness_says_whether_the_server_reached_takes_writes,
);

const WRITER_OPERATIONS: &str = r#"db_operations_total{pool="writer"}"#;
const READER_OPERATIONS: &str = r#"db_operations_total{pool="reader"}"#;

/// Operations each pool ran, writer then reader.
async fn operations(app: &TestApp) -> (f64, f64) {
    let scrape = Scrape::of(app).await;
    (scrape.value(WRITER_OPERATIONS), scrape.value(READER_OPERATIONS))
}

/// Reads `id` back, and the first page, with the `Consistency` header if one is given.
async fn read_back(app: &TestApp, id: Uuid, consistency: Option<&str>) {
    for path in [format!("/tasks/{id}"), "/tasks".to_owned()] {
        let mut request = app.request(Method::GET, &path);
        if let Some(consistency) = consistency {
            request = request.header("consistency", consistency);
        }
        let response = request.send().await.expect("GET is answered");
        assert_eq!(response.status(), 200, "GET {path} with {consistency:?}");
        assert!(response.text().await.expect("a body").contains(&id.to_string()));
    }
}

/// Through an Aurora-style cluster, with tokens signed for each endpoint: the cluster endpoint for the writer, the
/// reader endpoint for the reader (whose sessions are read-only).
async fn eventual_reads_go_to_the_reader_and_strong_ones_and_writes_to_the_writer(backend: Backend) {
    let cluster = TestCluster::start(backend, EmulatorOptions::default()).await;
    let stack = Stack::over(TestDatabase::create(backend).await);
    let database = stack.database.name().to_owned();
    let through = iam::settings_through(&cluster, cluster.url(IAM_USER, &database));
    let reader_url = cluster.reader_url(IAM_USER, &database);
    let mut overrides: Vec<(&str, &str)> = through.iter().map(|(name, value)| (*name, value.as_str())).collect();
    overrides.push(("APP__DATABASE__READER__URL", &reader_url));
    let app = stack.launch(&overrides).await;

    let before = operations(&app).await;
    let id = app.create_task("written to the writer").await;
    let written = operations(&app).await;
    assert_eq!(written, (before.0 + 1.0, before.1), "a write goes to the writer");

    read_back(&app, id, None).await;
    read_back(&app, id, Some("eventual")).await;
    let eventual = operations(&app).await;
    assert_eq!(
        eventual,
        (written.0, written.1 + 4.0),
        "eventual reads go to the reader"
    );

    read_back(&app, id, Some("Strong")).await;
    assert_eq!(
        operations(&app).await,
        (eventual.0 + 2.0, eventual.1),
        "strong reads go to the writer"
    );

    for bad in ["fresh", "strong, eventual"] {
        let response = app
            .request(Method::GET, &format!("/tasks/{id}"))
            .header("consistency", bad)
            .send()
            .await
            .expect("GET is answered");
        assert_problem(response, 400, "invalid_header").await;
    }
    let stats = cluster.stats();
    let reader = stats
        .endpoints
        .iter()
        .find(|endpoint| endpoint.endpoint.name == "reader")
        .expect("the reader endpoint's statistics");
    assert!(
        reader.sessions_opened > 0,
        "the reader pool logged in through the reader endpoint: {stats:?}"
    );
    // Readiness is the writer's.
    assert_eq!(app.readiness().await.role, "writer");
}

/// The reader is a PostgreSQL server of the test's own, stopped once the service runs: reads go to the writer
/// instead, none fails, and the writer served them.
#[tokio::test]
async fn reads_go_to_the_writer_when_the_reader_cannot_be_reached() {
    let replica = ScratchPostgres::start();
    let reader = TestDatabase::create_on(Backend::Postgres, replica.admin_url(), "tasks_reader_").await;
    reader.migrate().await;
    let reader_url = reader.url().to_owned();
    let app = Stack::new(Backend::Postgres)
        .await
        .launch(&[("APP__DATABASE__READER__URL", &reader_url)])
        .await;
    let id = app.create_task("on the writer only").await;

    // Its database first (which ends the reader's sessions), while the server is there to drop it; then the server.
    drop(reader);
    drop(replica);
    let before = operations(&app).await;
    for _ in 0..3 {
        read_back(&app, id, None).await;
    }
    let after = operations(&app).await;
    assert_eq!(after.0, before.0 + 6.0, "every read ran on the writer in the end");
}

/// Through an Aurora-style cluster's endpoints: the cluster endpoint leads to the writer, the reader endpoint to a
/// read-only instance, and readiness says which.
async fn readiness_says_whether_the_server_reached_takes_writes(backend: Backend) {
    let cluster = TestCluster::start(backend, EmulatorOptions::default()).await;
    for (reader, role) in [(false, "writer"), (true, "reader")] {
        let stack = Stack::over(TestDatabase::create(backend).await);
        let database = stack.database.name();
        let url = if reader {
            cluster.reader_url(IAM_USER, database)
        } else {
            cluster.url(IAM_USER, database)
        };
        let through = iam::settings_through(&cluster, url);
        let mut overrides: Vec<(&str, &str)> = through.iter().map(|(name, value)| (*name, value.as_str())).collect();
        // A reader cannot create the table.
        overrides.push(("APP__DATABASE__MIGRATE_ON_START", "false"));
        let app = stack.launch(&overrides).await;
        assert_eq!(app.readiness().await.role, role);
    }
}
