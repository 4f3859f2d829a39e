use test_support::{Backend, assert_problem, spawn_app};

on_every_backend!(a_running_service_is_live_and_ready);

async fn a_running_service_is_live_and_ready(backend: Backend) {
    let app = spawn_app(backend).await;

    let live = app.get("/health/live").await;
    assert_eq!(live.status(), 200);
    let readiness = app.readiness().await;
    assert_eq!(readiness.status, "ready");
    assert_eq!(readiness.role, "writer");
}

/// Only a server database can go away while the service runs.
#[tokio::test]
async fn losing_the_database_makes_the_service_unready_and_requests_unavailable() {
    let app = spawn_app(Backend::Postgres).await;
    let id = app.create_task("before the outage").await;

    app.database.take_down().await;

    assert_problem(app.get("/health/ready").await, 503, "database_unavailable").await;
    assert_eq!(app.get("/health/live").await.status(), 200);
    let response = app.get(&format!("/tasks/{id}")).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let detail = assert_problem(response, 503, "database_unavailable").await.detail;
    assert!(
        !detail.contains("tasks_test_") && !detail.contains("does not exist"),
        "{detail}"
    );
    assert_problem(
        app.post_task(&serde_json::json!({ "name": "during" })).await,
        503,
        "database_unavailable",
    )
    .await;
}
