//! Helpers for the integration suite: start the real service on a random port with a database of its own (and, for
//! IAM, an RDS IAM emulator of its own; for Secrets Manager, a secret and a database user of its own), and talk to it
//! over HTTP the way a client would.

pub mod aws;
mod database;
pub mod drills;
pub mod iam;
mod logs;
mod metrics;
pub mod secrets;

use std::fmt::Display;
use std::path::Path;
use std::sync::LazyLock;

use aws::AwsApi;
use aws_config::SdkConfig;
use reqwest::{Client, Method, RequestBuilder, Response};
use serde::Deserialize;
use serde_json::Value;
use tasks_api::settings::{LogFormat, LogSettings};
use tasks_api::startup::ServerHandle;
use tasks_api::{Application, Settings, StartupError, telemetry};
use uuid::Uuid;

pub use database::{Backend, TestDatabase};
pub use iam::{EmulatorOptions, TestEmulator};
pub use logs::{LogCapture, assert_no_secrets_logged};
pub use metrics::Scrape;
pub use secrets::SecretLogin;

/// The password configured for the password-mode PostgreSQL tests. The local server trusts connections and never
/// asks for it; it is there so the log scan can prove it is never written out.
pub const STATIC_PASSWORD: &str = "static-password-never-logged";

/// One subscriber for the whole test process, at debug level so the secret scan sees what an operator debugging
/// the service would see.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    let settings = LogSettings {
        format: LogFormat::Pretty,
        level: "debug,hyper=info,hyper_util=info,h2=info,rustls=info,actix_server=info,mio=info".to_owned(),
    };
    telemetry::init(telemetry::subscriber(&settings, logs::ScanningWriter));
});

/// What a test runs the service against: its database and, for IAM, its emulator, or, for Secrets Manager, its
/// secret and the database user that the secret holds (dropped after the database).
#[derive(Debug)]
pub struct Stack {
    pub database: TestDatabase,
    pub emulator: Option<TestEmulator>,
    pub login: Option<SecretLogin>,
}

impl Stack {
    /// A fresh database of `backend`, behind a default emulator for the IAM backends.
    pub async fn new(backend: Backend) -> Self {
        Self::with_emulator(backend, EmulatorOptions::default()).await
    }

    /// A stack over a database the test made itself (on a server of its own, say), without an emulator.
    #[must_use]
    pub fn over(database: TestDatabase) -> Self {
        LazyLock::force(&TRACING);
        Self {
            database,
            emulator: None,
            login: None,
        }
    }

    /// A stack over `database`, of a Secrets Manager backend, that the service logs in to as a new user whose
    /// password and whereabouts a new secret in `api` holds.
    pub async fn over_with_secret(database: TestDatabase, api: AwsApi) -> Self {
        let login = SecretLogin::create(&database, api).await;
        Self {
            login: Some(login),
            ..Self::over(database)
        }
    }

    pub async fn with_emulator(backend: Backend, options: EmulatorOptions) -> Self {
        LazyLock::force(&TRACING);
        // The emulator first: it makes the IAM user that the database is created for.
        let emulator = if backend.uses_iam() {
            Some(TestEmulator::start(backend, options).await)
        } else {
            None
        };
        let database = TestDatabase::create(backend).await;
        if backend.uses_secrets() {
            // LocalStack, where each test has an account of its own: the suite's tests need not take turns.
            return Self::over_with_secret(database, AwsApi::LocalStack).await;
        }
        Self {
            database,
            emulator,
            login: None,
        }
    }

    /// The emulator, for tests that know they asked for one.
    #[must_use]
    pub fn emulator(&self) -> &TestEmulator {
        self.emulator.as_ref().expect("this stack has an emulator")
    }

    /// The settings that point the service at this stack, then `overrides` (environment variable, value).
    #[must_use]
    pub fn settings(&self, overrides: &[(&str, &str)]) -> Settings {
        let mut variables: Vec<(String, String)> = vec![
            ("APP__SERVER__PORT".into(), "0".into()),
            ("APP__SERVER__WORKERS".into(), "2".into()),
        ];
        match (self.database.backend(), &self.emulator, &self.login) {
            (Backend::PostgresIam | Backend::MariaDbIam, Some(emulator), _) => {
                let url = emulator.url(iam::IAM_USER, self.database.name());
                variables.extend(iam::settings_through(emulator, url).map(|(name, value)| (name.to_owned(), value)));
            }
            (Backend::PostgresDsql, Some(emulator), _) => variables.extend([
                // The emulator's address as the endpoint: the region then comes from the AWS configuration.
                (
                    "APP__DATABASE__URL".into(),
                    emulator.url(iam::DSQL_ROLE, self.database.name()),
                ),
                ("APP__DATABASE__AUTH".into(), "dsql".into()),
                (
                    "APP__DATABASE__TLS__ROOT_CERT".into(),
                    emulator.ca_pem().display().to_string(),
                ),
            ]),
            (backend @ (Backend::PostgresSecrets | Backend::MariaDbSecrets), _, Some(login)) => variables.extend([
                // The engine alone: the secret says where the database is.
                (
                    "APP__DATABASE__URL".into(),
                    if backend == Backend::PostgresSecrets {
                        "postgres://"
                    } else {
                        "mysql://"
                    }
                    .into(),
                ),
                ("APP__DATABASE__AUTH".into(), "secrets-manager".into()),
                ("APP__DATABASE__SECRET_ID".into(), login.secret.arn.clone()),
                // The local servers have no certificate to verify (MariaDB no TLS at all): a choice made by name.
                ("APP__DATABASE__TLS__MODE".into(), "disable".into()),
            ]),
            (Backend::Postgres, _, _) => variables.extend([
                ("APP__DATABASE__URL".into(), self.database.url().to_owned()),
                ("APP__DATABASE__PASSWORD".into(), STATIC_PASSWORD.into()),
            ]),
            _ => variables.push(("APP__DATABASE__URL".into(), self.database.url().to_owned())),
        }
        variables.extend(
            overrides
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        Settings::load_from(Path::new("/nonexistent"), variables).expect("test settings load")
    }

    /// For the IAM backends, an AWS configuration whose credentials the emulator knows; for Secrets Manager, one
    /// for the account that holds the secret; `None` for the others.
    pub async fn known_aws(&self) -> Option<SdkConfig> {
        if self.database.backend().uses_iam() {
            Some(iam::aws_config(iam::ACCESS_KEY_ID, iam::SECRET_ACCESS_KEY).await)
        } else if let Some(login) = &self.login {
            Some(login.manager.sdk_config().await)
        } else {
            None
        }
    }

    /// Starts the service with this stack's settings and `overrides` (environment variable, value), failing the
    /// test when it does not start.
    pub async fn launch(self, overrides: &[(&str, &str)]) -> TestApp {
        let settings = self.settings(overrides);
        match self.start(settings, None).await {
            Ok(app) => app,
            Err((error, _)) => panic!("the application must start: {error}"),
        }
    }

    /// Starts the service with `settings` and, for IAM, `aws` (the known test credentials when `None`).
    pub async fn start(self, settings: Settings, aws: Option<SdkConfig>) -> Result<TestApp, (StartupError, Self)> {
        let aws = match aws {
            Some(aws) => Some(aws),
            None => self.known_aws().await,
        };
        let application = match Application::build_with_aws(settings, aws).await {
            Ok(application) => application,
            Err(error) => return Err((error, self)),
        };
        let address = format!("http://127.0.0.1:{}", application.port());
        let handle = application.handle();
        tokio::spawn(application.run_until_stopped());
        Ok(TestApp {
            address,
            database: self.database,
            emulator: self.emulator,
            login: self.login,
            client: Client::builder().build().expect("an HTTP client"),
            handle,
        })
    }
}

/// A running service and what it runs on; all of it goes away when this is dropped.
#[derive(Debug)]
pub struct TestApp {
    pub address: String,
    pub database: TestDatabase,
    pub emulator: Option<TestEmulator>,
    pub login: Option<SecretLogin>,
    client: Client,
    handle: ServerHandle,
}

/// Starts the service on `127.0.0.1:0` over a fresh, migrated database of `backend`.
pub async fn spawn_app(backend: Backend) -> TestApp {
    let stack = Stack::new(backend).await;
    let settings = stack.settings(&[]);
    match stack.start(settings, None).await {
        Ok(app) => app,
        Err((error, _)) => panic!("the application must start: {error}"),
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
    pub async fn create_task(&self, name: &str) -> Uuid {
        let response = self.post_task(&serde_json::json!({ "name": name })).await;
        assert_eq!(response.status(), 201, "creating {name:?}");
        response.json::<TaskBody>().await.expect("a task").id
    }

    /// `GET /tasks/{id}`, failing the test unless it answers 200 with a task.
    pub async fn read_task(&self, id: impl Display) -> TaskBody {
        let response = self.get(&format!("/tasks/{id}")).await;
        assert_eq!(response.status(), 200, "reading task {id}");
        response.json().await.expect("a task")
    }

    /// `GET /health/ready`, failing the test unless the service is ready.
    pub async fn readiness(&self) -> Readiness {
        let response = self.get("/health/ready").await;
        assert_eq!(response.status(), 200, "ready");
        response.json().await.expect("a readiness report")
    }

    /// `id` is whatever the path segment should read, UUID or not.
    pub async fn put_task(&self, id: impl Display, body: &Value) -> Response {
        self.request(Method::PUT, &format!("/tasks/{id}"))
            .json(body)
            .send()
            .await
            .expect("PUT is answered")
    }

    pub async fn delete_task(&self, id: impl Display) -> Response {
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
        // Stop accepting at once; the database and emulator are dropped right after, by their own Drop.
        drop(self.handle.stop(false));
        if !std::thread::panicking() {
            assert_no_secrets_logged();
        }
    }
}

/// A task as the service shows it. Unknown fields are refused, so a field that leaks into the JSON fails the test.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskBody {
    pub id: Uuid,
    pub name: String,
}

/// An RFC 9457 problem as the service sends it, with nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProblemBody {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
}

/// What `GET /health/ready` reports when the service is ready.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    pub status: String,
    /// `writer` or `reader`: what the database server reached can do.
    pub role: String,
    /// Present with IAM authentication only.
    pub iam_token: Option<IamTokenReport>,
}

/// The IAM token's state in a readiness report.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamTokenReport {
    pub expires_in_secs: u64,
    pub age_secs: u64,
    pub refreshes: u64,
    pub failures: u64,
}

/// Asserts that `response` is an RFC 9457 problem with `status` and `code`, and returns its body.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> ProblemBody {
    assert_eq!(response.status(), status, "status of {}", response.url());
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let problem: ProblemBody = response.json().await.expect("a problem body");
    assert_eq!(problem.status, status);
    assert_eq!(problem.code, code, "{problem:?}");
    assert_eq!(problem.problem_type, "about:blank");
    assert!(!problem.title.is_empty(), "{problem:?}");
    problem
}
