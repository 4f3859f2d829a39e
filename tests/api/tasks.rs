use serde_json::json;
use test_support::{Backend, TaskBody, assert_problem, spawn_app};

on_every_backend!(
    a_created_task_can_be_read_back,
    an_empty_service_lists_an_empty_array,
    renaming_changes_only_the_name,
    a_deleted_task_is_gone,
    unknown_ids_are_not_found_on_every_verb,
    names_of_255_multibyte_characters_are_stored_intact,
    return_minimal_answers_the_bare_id_as_the_original_did,
);

async fn a_created_task_can_be_read_back(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app.post_task(&json!({ "name": "Write the migration" })).await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().expect("ASCII").to_owned();
    let created: TaskBody = response.json().await.expect("a task");
    assert_eq!(location, format!("/tasks/{}", created.id));
    assert_eq!(created.name, "Write the migration");
    assert_eq!(
        app.database.task_name(created.id).await.as_deref(),
        Some("Write the migration")
    );
    assert_eq!(app.read_task(created.id).await, created);
    let listed: Vec<TaskBody> = app.get("/tasks").await.json().await.expect("tasks");
    assert_eq!(listed, [created]);
    assert_eq!(app.database.count_tasks().await, 1);
}

async fn an_empty_service_lists_an_empty_array(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app.get("/tasks").await;

    assert_eq!(response.status(), 200);
    assert!(response.headers().get("link").is_none());
    assert_eq!(response.json::<Vec<TaskBody>>().await.expect("tasks"), []);
}

async fn renaming_changes_only_the_name(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.create_task("before").await;
    let other = app.create_task("untouched").await;

    let response = app.put_task(id, &json!({ "name": "after" })).await;

    assert_eq!(response.status(), 200);
    let renamed: TaskBody = response.json().await.expect("a task");
    assert_eq!(
        renamed,
        TaskBody {
            id,
            name: "after".to_owned()
        }
    );
    assert_eq!(app.database.task_name(id).await.as_deref(), Some("after"));
    assert_eq!(app.database.task_name(other).await.as_deref(), Some("untouched"));
    assert_eq!(app.read_task(id).await, renamed);
}

async fn a_deleted_task_is_gone(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.create_task("short-lived").await;

    let response = app.delete_task(id).await;

    assert_eq!(response.status(), 204);
    assert_eq!(app.database.task_name(id).await, None);
    assert_problem(app.get(&format!("/tasks/{id}")).await, 404, "task_not_found").await;
    assert_problem(app.delete_task(id).await, 404, "task_not_found").await;
    assert_eq!(app.database.count_tasks().await, 0);
}

async fn unknown_ids_are_not_found_on_every_verb(backend: Backend) {
    let app = spawn_app(backend).await;
    let unknown = uuid::Uuid::now_v7();

    let problem = assert_problem(app.get(&format!("/tasks/{unknown}")).await, 404, "task_not_found").await;
    assert!(problem.detail.contains(&unknown.to_string()), "{problem:?}");
    assert_problem(
        app.put_task(unknown, &json!({ "name": "x" })).await,
        404,
        "task_not_found",
    )
    .await;
    assert_problem(app.delete_task(unknown).await, 404, "task_not_found").await;
    assert_eq!(app.database.count_tasks().await, 0);
}

async fn names_of_255_multibyte_characters_are_stored_intact(backend: Backend) {
    let app = spawn_app(backend).await;
    for name in ["é".repeat(255), "🦀".repeat(255), "日本語".repeat(85)] {
        let id = app.create_task(&name).await;

        assert_eq!(app.database.task_name(id).await, Some(name.clone()));
        assert_eq!(app.read_task(id).await.name, name);
    }
}

async fn return_minimal_answers_the_bare_id_as_the_original_did(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app
        .request(reqwest::Method::POST, "/tasks")
        .header("prefer", "return=minimal")
        .json(&json!({ "name": "Write the migration" }))
        .send()
        .await
        .expect("answered");

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["preference-applied"], "return=minimal");
    let location = response.headers()["location"].to_str().expect("ASCII").to_owned();
    let body = response.text().await.expect("a body");
    let id: uuid::Uuid = serde_json::from_str(&body).expect("a JSON string holding a UUID");
    assert_eq!(body, format!("\"{id}\""));
    assert_eq!(location, format!("/tasks/{id}"));
    assert_eq!(app.read_task(id).await.name, "Write the migration");
}

#[tokio::test]
async fn head_answers_the_headers_of_get_without_its_body() {
    let app = spawn_app(Backend::Sqlite).await;
    let id = app.create_task("first").await;
    app.create_task("second").await;

    for path in [
        "/tasks?limit=1".to_owned(),
        format!("/tasks/{id}"),
        "/health/live".to_owned(),
        "/openapi.json".to_owned(),
    ] {
        let get = app.get(&path).await;
        let head = app
            .request(reqwest::Method::HEAD, &path)
            .send()
            .await
            .expect("answered");

        assert_eq!(head.status(), 200, "{path}");
        for header in ["content-type", "content-length", "link"] {
            assert_eq!(head.headers().get(header), get.headers().get(header), "{path} {header}");
        }
        assert!(head.bytes().await.expect("no body").is_empty(), "{path}");
    }
}
