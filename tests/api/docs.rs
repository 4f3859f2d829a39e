use serde_json::Value;
use test_support::{Backend, spawn_app};

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app(Backend::Sqlite).await;

    let document: Value = app.get("/openapi.json").await.json().await.expect("JSON");

    assert!(document["openapi"].as_str().expect("version").starts_with("3.1"));
    for path in ["/tasks", "/tasks/{id}", "/health/live", "/health/ready"] {
        assert!(document["paths"][path].is_object(), "{path} is documented");
    }
    for verb in ["get", "put", "delete"] {
        assert!(
            document["paths"]["/tasks/{id}"][verb].is_object(),
            "{verb} /tasks/{{id}}"
        );
    }
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = spawn_app(Backend::Sqlite).await;

    let page = app.get("/docs").await;
    assert_eq!(page.url().path(), "/docs/", "/docs redirects to /docs/");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("HTML").contains("swagger-ui"));
    let script = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(script.status(), 200);
    assert!(script.bytes().await.expect("JS").len() > 100_000);
}
