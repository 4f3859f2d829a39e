use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::json;
use test_support::{Backend, TaskBody, spawn_app};

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
    assert_eq!(app.database.count_tasks().await, 500);
}
