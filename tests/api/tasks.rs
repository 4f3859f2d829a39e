use serde_json::{Value, json};
use test_support::{Backend, assert_problem, spawn_app};

on_every_backend!(
    a_created_task_can_be_read_back,
    an_empty_service_lists_an_empty_array,
    renaming_changes_only_the_name,
    a_deleted_task_is_gone,
    unknown_ids_are_not_found_on_every_verb,
    names_of_255_multibyte_characters_are_stored_intact,
);

async fn a_created_task_can_be_read_back(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app.post_task(&json!({ "name": "Write the migration" })).await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().expect("ASCII").to_owned();
    let created: Value = response.json().await.expect("JSON");
    let id = created["id"].as_str().expect("id");
    assert_eq!(location, format!("/tasks/{id}"));
    assert_eq!(created["name"], "Write the migration");
    let fetched: Value = app.get(&location).await.json().await.expect("JSON");
    assert_eq!(fetched, created);
    let listed: Value = app.get("/tasks").await.json().await.expect("JSON");
    assert_eq!(listed, json!([created]));
    assert_eq!(app.database.count_tasks().await, 1);
}

async fn an_empty_service_lists_an_empty_array(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app.get("/tasks").await;

    assert_eq!(response.status(), 200);
    assert!(response.headers().get("link").is_none());
    assert_eq!(response.json::<Value>().await.expect("JSON"), json!([]));
}

async fn renaming_changes_only_the_name(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.create_task("before").await;
    let other = app.create_task("untouched").await;

    let response = app.put_task(&id, &json!({ "name": "after" })).await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.expect("JSON"),
        json!({ "id": id, "name": "after" })
    );
    let fetched: Value = app.get(&format!("/tasks/{id}")).await.json().await.expect("JSON");
    assert_eq!(fetched["name"], "after");
    let untouched: Value = app.get(&format!("/tasks/{other}")).await.json().await.expect("JSON");
    assert_eq!(untouched["name"], "untouched");
}

async fn a_deleted_task_is_gone(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.create_task("short-lived").await;

    let response = app.delete_task(&id).await;

    assert_eq!(response.status(), 204);
    assert_problem(app.get(&format!("/tasks/{id}")).await, 404, "task_not_found").await;
    assert_problem(app.delete_task(&id).await, 404, "task_not_found").await;
    assert_eq!(app.database.count_tasks().await, 0);
}

async fn unknown_ids_are_not_found_on_every_verb(backend: Backend) {
    let app = spawn_app(backend).await;
    let unknown = uuid::Uuid::now_v7().to_string();

    let body = assert_problem(app.get(&format!("/tasks/{unknown}")).await, 404, "task_not_found").await;
    assert!(body["detail"].as_str().expect("detail").contains(&unknown));
    assert_problem(
        app.put_task(&unknown, &json!({ "name": "x" })).await,
        404,
        "task_not_found",
    )
    .await;
    assert_problem(app.delete_task(&unknown).await, 404, "task_not_found").await;
    assert_eq!(app.database.count_tasks().await, 0);
}

async fn names_of_255_multibyte_characters_are_stored_intact(backend: Backend) {
    let app = spawn_app(backend).await;
    for name in ["é".repeat(255), "🦀".repeat(255), "日本語".repeat(85)] {
        let id = app.create_task(&name).await;

        let fetched: Value = app.get(&format!("/tasks/{id}")).await.json().await.expect("JSON");

        assert_eq!(fetched["name"], name.as_str());
    }
}
