use serde_json::json;
use test_support::{Backend, assert_problem, spawn_app};

on_every_backend!(
    invalid_names_are_unprocessable_and_nothing_is_written,
    malformed_json_is_a_bad_request,
    wrong_content_type_is_unsupported,
    oversized_bodies_are_refused_before_parsing,
    ids_that_are_not_uuids_are_bad_requests,
    an_invalid_rename_leaves_the_task_unchanged,
    unknown_paths_and_methods_get_problems,
);

async fn invalid_names_are_unprocessable_and_nothing_is_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let invalid = [
        json!({ "name": "" }),
        json!({ "name": "   " }),
        json!({ "name": "nul\u{0}byte" }),
        json!({ "name": "line\nbreak" }),
        json!({ "name": "a".repeat(256) }),
        json!({ "name": "é".repeat(256) }),
    ];
    for body in &invalid {
        let problem = assert_problem(app.post_task(body).await, 422, "invalid_name").await;
        assert!(!problem.detail.is_empty());
    }
    assert_eq!(app.database.count_tasks().await, 0);
}

async fn malformed_json_is_a_bad_request(backend: Backend) {
    let app = spawn_app(backend).await;
    let malformed = [
        r#"{"name": 5}"#,
        r#"{"name": null}"#,
        r#"{"name": ["a"]}"#,
        r#"{"nom": "a"}"#,
        r#"{"name": "a"} trailing"#,
        r#"{"name": "a""#,
        "",
        "[]",
        "\u{0}",
    ];
    for body in malformed {
        let response = app.post_raw("/tasks", "application/json", body).await;
        let problem = assert_problem(response, 400, "malformed_body").await;
        let detail = problem.detail;
        assert!(!detail.contains("sqlx") && !detail.contains("SQL"), "{detail}");
    }
    assert_eq!(app.database.count_tasks().await, 0);
}

async fn wrong_content_type_is_unsupported(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app.post_raw("/tasks", "text/plain", r#"{"name": "a"}"#).await;
    assert_problem(response, 415, "unsupported_media_type").await;
    let response = app
        .request(reqwest::Method::POST, "/tasks")
        .body(r#"{"name": "a"}"#)
        .send()
        .await
        .expect("answered");
    assert_problem(response, 415, "unsupported_media_type").await;
    assert_eq!(app.database.count_tasks().await, 0);

    let id = app.create_task("kept").await;
    let response = app
        .request(reqwest::Method::PUT, &format!("/tasks/{id}"))
        .header("content-type", "text/plain")
        .body(r#"{"name": "b"}"#)
        .send()
        .await
        .expect("answered");
    assert_problem(response, 415, "unsupported_media_type").await;
    assert_eq!(app.database.task_name(id).await.as_deref(), Some("kept"));
}

async fn oversized_bodies_are_refused_before_parsing(backend: Backend) {
    let app = spawn_app(backend).await;
    let huge = format!(r#"{{"name": "{}"}}"#, "a".repeat(tasks_api::BODY_LIMIT));

    assert_problem(
        app.post_raw("/tasks", "application/json", huge.clone()).await,
        413,
        "payload_too_large",
    )
    .await;
    // Without a Content-Length the limit must still hold while the body streams in.
    let chunks = futures_util::stream::iter(
        huge.into_bytes()
            .chunks(1024)
            .map(<[u8]>::to_vec)
            .map(Ok::<_, std::io::Error>)
            .collect::<Vec<_>>(),
    );
    let response = app
        .request(reqwest::Method::POST, "/tasks")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("answered");
    assert_problem(response, 413, "payload_too_large").await;

    assert_eq!(app.database.count_tasks().await, 0);
}

async fn ids_that_are_not_uuids_are_bad_requests(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.create_task("kept").await;

    for bad in ["not-a-uuid", "123", "%00", &"f".repeat(2000)] {
        assert_problem(app.get(&format!("/tasks/{bad}")).await, 400, "invalid_id").await;
        assert_problem(app.put_task(bad, &json!({ "name": "x" })).await, 400, "invalid_id").await;
        assert_problem(app.delete_task(bad).await, 400, "invalid_id").await;
    }
    assert_problem(app.get("/tasks?after=nope").await, 400, "invalid_id").await;
    assert_eq!(app.database.count_tasks().await, 1);
    assert_eq!(app.database.task_name(id).await.as_deref(), Some("kept"));
}

async fn an_invalid_rename_leaves_the_task_unchanged(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.create_task("original").await;

    assert_problem(
        app.put_task(id, &json!({ "name": "bad\u{0}" })).await,
        422,
        "invalid_name",
    )
    .await;
    assert_problem(app.put_task(id, &json!({ "name": 1 })).await, 400, "malformed_body").await;

    assert_eq!(app.database.task_name(id).await.as_deref(), Some("original"));
    assert_eq!(app.read_task(id).await.name, "original");
}

async fn unknown_paths_and_methods_get_problems(backend: Backend) {
    let app = spawn_app(backend).await;

    assert_problem(app.get("/nowhere").await, 404, "route_not_found").await;
    assert_problem(app.get("/health").await, 404, "route_not_found").await;
    let task = format!("/tasks/{}", uuid::Uuid::now_v7());
    // Every path the service has, API and documentation alike, with a method it does not serve there.
    let not_allowed = [
        ("PATCH", "/tasks", "GET, HEAD, POST"),
        ("POST", task.as_str(), "GET, HEAD, PUT, DELETE"),
        ("TRACE", "/health/live", "GET, HEAD"),
        ("TRACE", "/metrics", "GET, HEAD"),
        ("TRACE", "/openapi.json", "GET, HEAD"),
        ("OPTIONS", "/health/ready", "GET, HEAD"),
        ("DELETE", "/openapi.json", "GET, HEAD"),
        ("POST", "/docs", "GET, HEAD"),
        ("PUT", "/docs/", "GET, HEAD"),
    ];
    for (method, path, allow) in not_allowed {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let response = app.request(method.clone(), path).send().await.expect("answered");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        assert_problem(response, 405, "method_not_allowed").await;
    }
}

/// `{"name": "inflated"}`, gzipped.
const GZIPPED_TASK: [u8; 40] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xab, 0x56, 0xca, 0x4b, 0xcc, 0x4d, 0x55, 0xb2, 0x52,
    0x50, 0xca, 0xcc, 0x4b, 0xcb, 0x49, 0x2c, 0x49, 0x4d, 0x51, 0xaa, 0x05, 0x00, 0x25, 0xcc, 0xb4, 0xda, 0x14, 0x00,
    0x00, 0x00,
];

#[tokio::test]
async fn request_bodies_are_never_inflated() {
    // Were gzip bodies inflated, a small one could grow far past the body limit before that limit applied.
    let app = spawn_app(Backend::Sqlite).await;

    let response = app
        .request(reqwest::Method::POST, "/tasks")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(GZIPPED_TASK.to_vec())
        .send()
        .await
        .expect("answered");

    assert_problem(response, 400, "malformed_body").await;
    assert_eq!(app.database.count_tasks().await, 0);
}
