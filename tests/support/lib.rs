//! Helpers for the integration suite: start the real service on a random port with a database of its own, and talk to
//! it over HTTP the way a client would.

mod database;

use std::path::Path;
use std::sync::LazyLock;

use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;
use tasks_api::startup::ServerHandle;
use tasks_api::{Application, Settings, telemetry};

pub use database::{Backend, TestDatabase};

/// Logs go to stdout when `TEST_LOG` is set, nowhere otherwise.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    let settings = Settings::load_from(Path::new("/nonexistent"), std::iter::empty())
        .expect("built-in defaults load")
        .log;
    if std::env::var_os("TEST_LOG").is_some() {
        telemetry::init(telemetry::subscriber(&settings, std::io::stdout));
    } else {
        telemetry::init(telemetry::subscriber(&settings, std::io::sink));
    }
});

/// A running service and the database behind it; both go away when this is dropped.
#[derive(Debug)]
pub struct TestApp {
    pub address: String,
    pub database: TestDatabase,
    client: Client,
    handle: ServerHandle,
}

/// Starts the service on `127.0.0.1:0` over a fresh, migrated database of `backend`.
pub async fn spawn_app(backend: Backend) -> TestApp {
    LazyLock::force(&TRACING);
    let database = TestDatabase::create(backend).await;
    let variables = [
        ("APP__SERVER__PORT", "0".to_owned()),
        ("APP__SERVER__WORKERS", "2".to_owned()),
        ("APP__DATABASE__URL", database.url().to_owned()),
    ]
    .map(|(name, value)| (name.to_owned(), value));
    let settings = Settings::load_from(Path::new("/nonexistent"), variables).expect("test settings load");
    let application = Application::build(settings).await.expect("the application starts");
    let address = format!("http://127.0.0.1:{}", application.port());
    let handle = application.handle();
    tokio::spawn(application.run_until_stopped());
    TestApp {
        address,
        database,
        client: Client::builder().build().expect("an HTTP client"),
        handle,
    }
}

impl TestApp {
    /// A request to `path` on the service, to be completed by the caller.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.address))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.expect("GET is answered")
    }

    pub async fn post_task(&self, body: &Value) -> Response {
        self.request(Method::POST, "/tasks")
            .json(body)
            .send()
            .await
            .expect("POST /tasks is answered")
    }

    /// Creates a task named `name` and returns its id, failing the test if the service refuses.
    pub async fn create_task(&self, name: &str) -> String {
        let response = self.post_task(&serde_json::json!({ "name": name })).await;
        assert_eq!(response.status(), 201, "creating {name:?}");
        let body: Value = response.json().await.expect("a JSON task");
        body["id"].as_str().expect("an id").to_owned()
    }

    pub async fn put_task(&self, id: &str, body: &Value) -> Response {
        self.request(Method::PUT, &format!("/tasks/{id}"))
            .json(body)
            .send()
            .await
            .expect("PUT is answered")
    }

    pub async fn delete_task(&self, id: &str) -> Response {
        self.request(Method::DELETE, &format!("/tasks/{id}"))
            .send()
            .await
            .expect("DELETE is answered")
    }

    /// A request body sent as is, with the given content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: impl Into<reqwest::Body>) -> Response {
        self.request(Method::POST, path)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST is answered")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop accepting at once; the database is dropped right after, by its own Drop.
        drop(self.handle.stop(false));
    }
}

/// Asserts that `response` is an RFC 9457 problem with `status` and `code`, and returns its body.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "status of {}", response.url());
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body: Value = response.json().await.expect("a JSON problem body");
    assert_eq!(body["status"], status);
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["type"], "about:blank");
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
    body
}
