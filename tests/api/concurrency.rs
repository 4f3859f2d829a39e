use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use test_support::{Backend, Scrape, Stack, TaskBody, TestDatabase, spawn_app};

on_every_backend!(five_hundred_concurrent_posts_all_land_as_distinct_rows);

async fn five_hundred_concurrent_posts_all_land_as_distinct_rows(backend: Backend) {
    let app = spawn_app(backend).await;

    let responses = join_all((0..500).map(|index| {
        let body = json!({ "name": format!("concurrent {index}") });
        let app = &app;
        async move {
            let response = app.post_task(&body).await;
            assert_eq!(response.status(), 201, "POST {index}");
            response.json::<TaskBody>().await.expect("a task")
        }
    }))
    .await;

    let ids: HashSet<uuid::Uuid> = responses.iter().map(|task| task.id).collect();
    let names: HashSet<&str> = responses.iter().map(|task| task.name.as_str()).collect();
    assert_eq!(ids.len(), 500);
    assert_eq!(names.len(), 500);
    // Each under its own id, though many went in the same INSERT.
    let answered: HashMap<uuid::Uuid, String> = responses.into_iter().map(|task| (task.id, task.name)).collect();
    assert_eq!(app.database.stored_tasks().await, answered);
}

const OPERATIONS: &str = r#"db_operations_total{pool="writer"}"#;

/// Creations that come while every connection is busy go to the database together: fewer INSERTs than requests, and
/// each task stored under its own id and name. The table is locked meanwhile, so that the first creations hold both
/// of the pool's connections until the others have come.
#[tokio::test]
async fn creations_that_wait_for_a_connection_are_inserted_together() {
    let stack = Stack::over(TestDatabase::create(Backend::Postgres).await);
    let app = Arc::new(stack.launch(&[("APP__DATABASE__MAX_CONNECTIONS", "2")]).await);
    let before = Scrape::of(&app).await.value(OPERATIONS);
    let mut lock = app.database.connect().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE tasks IN EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .expect("the table locked");

    let posts: Vec<_> = (0..40)
        .map(|index| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let response = app.post_task(&json!({ "name": format!("together {index}") })).await;
                assert_eq!(response.status(), 201, "POST {index}");
                response.json::<TaskBody>().await.expect("a task")
            })
        })
        .collect();
    let blocked = format!(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'",
        app.database.name()
    );
    for _ in 0..100 {
        if app.database.scalar(blocked.as_str()).await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.database.scalar(blocked).await,
        2,
        "both connections wait for the lock"
    );
    // Long enough for the other requests, sent at once, to reach the service and wait for a batch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::raw_sql("COMMIT")
        .execute(&mut lock)
        .await
        .expect("the table unlocked");

    let mut answered = HashMap::new();
    for post in posts {
        let task = post.await.expect("the request ran");
        answered.insert(task.id, task.name);
    }
    assert_eq!(app.database.stored_tasks().await, answered);
    let operations = Scrape::of(&app).await.value(OPERATIONS) - before;
    // The first few batches, held by the lock (a connection's worth a worker, at most), and about three of up to 16
    // for the others, which waited: not one an item.
    assert!(
        operations <= 10.0,
        "40 creations in {operations} operations: those that waited went together"
    );
}
