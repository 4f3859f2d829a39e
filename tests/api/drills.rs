//! Fault drills: the service under a load of 16 clients, each creating a task, reading it back, renaming it, reading
//! it again and deleting every other one, while the database's sessions are killed or its server restarts. They
//! count failed requests, acknowledged writes missing from the database (deletions included) and reads of the wrong
//! row, and never time anything.

use std::sync::Arc;
use std::time::Duration;

use test_support::drills::{Load, ScratchPostgres, Tally};
use test_support::{Backend, Stack, TestDatabase, spawn_app};

const CLIENTS: usize = 16;

backend_tests!(postgres, Postgres; every_session_killed_every_second_fails_no_request);
backend_tests!(mariadb, MariaDb; every_session_killed_every_second_fails_no_request);
on_iam_backends!(every_session_killed_every_second_fails_no_request);

/// Every session of the service ended once a second, four times over: idle pooled connections die unnoticed and
/// busy ones die under their statement. Each failed statement runs once more on a fresh connection.
async fn every_session_killed_every_second_fails_no_request(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut admin = app.database.admin_connection().await;
    let load = Load::start(&app.address, CLIENTS);

    let mut ended = 0;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ended += app.database.end_sessions(&mut admin).await;
    }
    let tally = load.finish().await;

    assert!(ended >= 4, "the drill must end sessions, and ended {ended}");
    assert_nothing_lost(&app.database, &tally).await;
}

/// `pg_ctl restart -m fast` under load, on a cluster of the test's own: every session is ended and for a moment
/// nothing accepts connections. Requests wait for the server within the acquire time-out instead of failing.
#[tokio::test]
async fn a_postgres_fast_restart_fails_no_request() {
    let cluster = Arc::new(ScratchPostgres::start());
    let database = TestDatabase::create_on(Backend::Postgres, cluster.admin_url(), "tasks_drill_").await;
    let stack = Stack::over(database);
    let settings = stack.settings(&[]);
    let app = match stack.start(settings, None).await {
        Ok(app) => app,
        Err((error, _)) => panic!("the application must start: {error}"),
    };
    let load = Load::start(&app.address, CLIENTS);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarting = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || restarting.restart_fast())
        .await
        .expect("the restart runs");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.finish().await;

    assert_nothing_lost(&app.database, &tally).await;
}

/// No request failed, no read returned another task, every acknowledged write is stored with its last name, and
/// every acknowledged deletion is gone.
pub(crate) async fn assert_nothing_lost(database: &TestDatabase, tally: &Tally) {
    assert!(
        tally.failures.is_empty(),
        "{} of {} requests failed, first ones:\n{}",
        tally.failures.len(),
        tally.requests,
        tally.failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(tally.wrong_reads, 0);
    let stored = database.stored_tasks().await;
    let lost: Vec<_> = tally
        .acknowledged
        .iter()
        .filter(|(id, name)| stored.get(id) != Some(name))
        .collect();
    assert!(lost.is_empty(), "{} acknowledged writes missing: {lost:?}", lost.len());
    let undeleted: Vec<_> = tally.deleted.iter().filter(|id| stored.contains_key(id)).collect();
    assert!(
        undeleted.is_empty(),
        "{} acknowledged deletions undone: {undeleted:?}",
        undeleted.len()
    );
    assert!(
        tally.acknowledged.len() >= CLIENTS,
        "the load made progress: {} writes",
        tally.acknowledged.len()
    );
}
