//! The HTTP contract of the task routes, served from memory: statuses, headers and problem bodies, with no database.
//! The app is built as the server builds it, from [`tasks::configure`] and [`route_not_found`]; the suite in
//! `tests/api` runs the real server against real databases.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderName};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::from_fn;
use actix_web::test::{self, TestRequest};
use actix_web::{App, web};
use domain::{Consistency, DomainError, Page, PageRequest, Task, TaskId, TaskName, TaskRepository};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{head_as_get, route_not_found, tasks};
use crate::BODY_LIMIT;
use crate::error::PROBLEM_JSON;

/// Tasks in a map ordered by id, keeping the repository contract as the SeaORM repository does.
#[derive(Debug, Default)]
struct InMemory(Mutex<BTreeMap<TaskId, TaskName>>);

impl InMemory {
    fn tasks(&self) -> MutexGuard<'_, BTreeMap<TaskId, TaskName>> {
        // A test that panicked while holding the lock has failed already; the map itself is still whole.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores tasks named `names` directly, and returns their ids in the same order.
    fn seed<const N: usize>(&self, names: [&str; N]) -> [TaskId; N] {
        let mut tasks = self.tasks();
        names.map(|name| {
            let task = Task::new(TaskName::parse(name).expect("a valid name"));
            tasks.insert(task.id, task.name);
            task.id
        })
    }

    /// The name stored for `id`, read directly rather than through the routes.
    fn stored(&self, id: TaskId) -> Option<String> {
        self.tasks().get(&id).map(|name| name.as_str().to_owned())
    }
}

impl TaskRepository for InMemory {
    async fn create(&self, task: &Task) -> Result<(), DomainError> {
        let mut tasks = self.tasks();
        if tasks.contains_key(&task.id) {
            return Err(DomainError::AlreadyExists(task.id));
        }
        tasks.insert(task.id, task.name.clone());
        Ok(())
    }

    async fn get(&self, id: TaskId, _: Consistency) -> Result<Task, DomainError> {
        let name = self.tasks().get(&id).cloned().ok_or(DomainError::NotFound(id))?;
        Ok(Task { id, name })
    }

    async fn list(&self, request: PageRequest, _: Consistency) -> Result<Page, DomainError> {
        let limit = usize::from(request.limit.get());
        let after = request.after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut tasks: Vec<Task> = self
            .tasks()
            .range((after, Bound::Unbounded))
            .take(limit + 1)
            .map(|(id, name)| Task {
                id: *id,
                name: name.clone(),
            })
            .collect();
        let next_after = if tasks.len() > limit {
            tasks.truncate(limit);
            tasks.last().map(|task| task.id)
        } else {
            None
        };
        Ok(Page { tasks, next_after })
    }

    async fn rename(&self, id: TaskId, name: TaskName) -> Result<Task, DomainError> {
        let mut tasks = self.tasks();
        let stored = tasks.get_mut(&id).ok_or(DomainError::NotFound(id))?;
        stored.clone_from(&name);
        Ok(Task { id, name })
    }

    async fn delete(&self, id: TaskId) -> Result<(), DomainError> {
        self.tasks().remove(&id).map(drop).ok_or(DomainError::NotFound(id))
    }
}

/// A store that fails every call the same way, as a database that is down or broken does.
#[derive(Debug)]
struct Failing(fn() -> DomainError);

impl TaskRepository for Failing {
    async fn create(&self, _: &Task) -> Result<(), DomainError> {
        Err((self.0)())
    }

    async fn get(&self, _: TaskId, _: Consistency) -> Result<Task, DomainError> {
        Err((self.0)())
    }

    async fn list(&self, _: PageRequest, _: Consistency) -> Result<Page, DomainError> {
        Err((self.0)())
    }

    async fn rename(&self, _: TaskId, _: TaskName) -> Result<Task, DomainError> {
        Err((self.0)())
    }

    async fn delete(&self, _: TaskId) -> Result<(), DomainError> {
        Err((self.0)())
    }
}

/// A task as the API shows it.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskBody {
    id: Uuid,
    name: String,
}

impl TaskBody {
    fn new(id: TaskId, name: &str) -> Self {
        Self {
            id: *id.as_uuid(),
            name: name.to_owned(),
        }
    }
}

/// An RFC 9457 problem as the API sends it; unknown fields are refused, so nothing else can slip into one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProblemBody {
    #[serde(rename = "type")]
    problem_type: String,
    title: String,
    status: u16,
    detail: String,
    code: String,
}

/// Sends `request` to the routes as the server configures them, over `repository`.
async fn send<R: TaskRepository>(repository: &web::Data<R>, request: TestRequest) -> ServiceResponse {
    let app = test::init_service(
        App::new()
            .wrap(from_fn(head_as_get))
            .app_data(repository.clone())
            .configure(tasks::configure::<R>)
            .default_service(web::to(route_not_found)),
    )
    .await;
    test::call_service(&app, request.to_request()).await
}

/// Asserts that `response` is a problem with `status` and `code`, and returns it.
async fn problem(response: ServiceResponse, status: StatusCode, code: &str) -> ProblemBody {
    assert_eq!(response.status(), status);
    assert_eq!(header_value(&response, header::CONTENT_TYPE), PROBLEM_JSON);
    let problem: ProblemBody = test::read_body_json(response).await;
    assert_eq!(problem.code, code, "{problem:?}");
    assert_eq!(problem.status, status.as_u16());
    assert_eq!(problem.problem_type, "about:blank");
    assert_eq!(Some(problem.title.as_str()), status.canonical_reason());
    problem
}

/// The value of header `name`, which the test expects to be there.
fn header_value(response: &ServiceResponse, name: HeaderName) -> &str {
    let value = response.headers().get(&name);
    value
        .unwrap_or_else(|| panic!("a {name} header"))
        .to_str()
        .expect("ASCII")
}

fn task_path(id: impl std::fmt::Display) -> String {
    format!("/tasks/{id}")
}

fn post_json(body: &serde_json::Value) -> TestRequest {
    TestRequest::post().uri("/tasks").set_json(body)
}

fn put_json(id: impl std::fmt::Display, body: &serde_json::Value) -> TestRequest {
    TestRequest::put().uri(&task_path(id)).set_json(body)
}

fn store() -> web::Data<InMemory> {
    web::Data::new(InMemory::default())
}

#[actix_web::test]
async fn creating_answers_201_with_the_location_and_the_task() {
    let store = store();

    let response = send(&store, post_json(&json!({ "name": "Write the migration" }))).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let location = header_value(&response, header::LOCATION).to_owned();
    let created: TaskBody = test::read_body_json(response).await;
    assert_eq!(location, task_path(created.id));
    assert_eq!(created.name, "Write the migration");
    let id = TaskId::from_uuid(created.id);
    assert_eq!(store.stored(id).as_deref(), Some("Write the migration"));
}

/// `POST /tasks` of a valid task, with these `Prefer` headers.
fn post_preferring(preferences: &[&str]) -> TestRequest {
    let request = post_json(&json!({ "name": "Write the migration" }));
    preferences.iter().fold(request, |request, preference| {
        request.append_header(("prefer", *preference))
    })
}

#[actix_web::test]
async fn return_minimal_answers_as_the_original_did_with_the_bare_id() {
    let store = store();

    let response = send(&store, post_preferring(&["return=minimal"])).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_value(&response, header::CONTENT_TYPE), "application/json");
    assert_eq!(
        header_value(&response, HeaderName::from_static("preference-applied")),
        "return=minimal"
    );
    let location = header_value(&response, header::LOCATION).to_owned();
    let id: Uuid = test::read_body_json(response).await;
    assert_eq!(location, task_path(id));
    assert_eq!(
        store.stored(TaskId::from_uuid(id)).as_deref(),
        Some("Write the migration")
    );
}

#[actix_web::test]
async fn the_first_return_preference_counts_in_any_case_and_others_are_ignored() {
    let minimal = [
        &["respond-async, RETURN = \"minimal\"; foo=bar"][..],
        &["handling=lenient", "return=minimal", "return=representation"],
    ];
    let full = [
        &[][..],
        &["return=representation, return=minimal"],
        &["return=minimalist"],
        &["handling=strict; return=minimal"],
        &["wait=10"],
    ];

    for (preferences, status) in [(&minimal[..], StatusCode::OK), (&full[..], StatusCode::CREATED)] {
        for preference in preferences {
            let response = send(&store(), post_preferring(preference)).await;
            assert_eq!(response.status(), status, "{preference:?}");
            let applied = response.headers().get("preference-applied");
            assert_eq!(applied.is_some(), status == StatusCode::OK, "{preference:?}");
        }
    }
}

#[actix_web::test]
async fn a_task_is_read_by_id_and_other_ids_are_not_found_or_bad() {
    let store = store();
    let [id] = store.seed(["kept"]);

    let response = send(&store, TestRequest::get().uri(&task_path(id))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let task: TaskBody = test::read_body_json(response).await;
    assert_eq!(task, TaskBody::new(id, "kept"));

    let unknown = TaskId::generate();
    let response = send(&store, TestRequest::get().uri(&task_path(unknown))).await;
    let not_found = problem(response, StatusCode::NOT_FOUND, "task_not_found").await;
    assert!(not_found.detail.contains(&unknown.to_string()), "{not_found:?}");
    let response = send(&store, TestRequest::get().uri("/tasks/not-a-uuid")).await;
    problem(response, StatusCode::BAD_REQUEST, "invalid_id").await;
}

#[actix_web::test]
async fn renaming_answers_the_renamed_task_and_refusals_change_nothing() {
    let store = store();
    let [id, other] = store.seed(["before", "untouched"]);

    let response = send(&store, put_json(id, &json!({ "name": "after" }))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let renamed: TaskBody = test::read_body_json(response).await;
    assert_eq!(renamed, TaskBody::new(id, "after"));
    assert_eq!(store.stored(id).as_deref(), Some("after"));
    assert_eq!(store.stored(other).as_deref(), Some("untouched"));

    let unknown = TaskId::generate();
    let response = send(&store, put_json(unknown, &json!({ "name": "x" }))).await;
    problem(response, StatusCode::NOT_FOUND, "task_not_found").await;
    let response = send(&store, put_json(id, &json!({ "name": "bad\u{0}" }))).await;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_name").await;
    let response = send(&store, put_json("not-a-uuid", &json!({ "name": "x" }))).await;
    problem(response, StatusCode::BAD_REQUEST, "invalid_id").await;
    let response = send(&store, put_json(id, &json!({ "name": 1 }))).await;
    problem(response, StatusCode::BAD_REQUEST, "malformed_body").await;
    let as_text = TestRequest::put()
        .uri(&task_path(id))
        .insert_header((header::CONTENT_TYPE, "text/plain"))
        .set_payload(r#"{"name": "x"}"#);
    problem(
        send(&store, as_text).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_eq!(store.stored(id).as_deref(), Some("after"));
}

#[actix_web::test]
async fn deleting_answers_204_once_and_404_after() {
    let store = store();
    let [id] = store.seed(["short-lived"]);

    let response = send(&store, TestRequest::delete().uri(&task_path(id))).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(test::read_body(response).await.is_empty());
    assert_eq!(store.stored(id), None);

    let response = send(&store, TestRequest::delete().uri(&task_path(id))).await;
    problem(response, StatusCode::NOT_FOUND, "task_not_found").await;
}

#[actix_web::test]
async fn pages_link_to_the_next_until_the_last() {
    let store = store();
    let ids = store.seed(["first", "second", "third"]);

    let response = send(&store, TestRequest::get().uri("/tasks?limit=2")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let next = format!("/tasks?limit=2&after={}", ids[1]);
    assert_eq!(header_value(&response, header::LINK), format!("<{next}>; rel=\"next\""));
    let page: Vec<TaskBody> = test::read_body_json(response).await;
    assert_eq!(
        page.iter().map(|task| task.name.as_str()).collect::<Vec<_>>(),
        ["first", "second"]
    );

    let response = send(&store, TestRequest::get().uri(&next)).await;
    assert!(response.headers().get(header::LINK).is_none());
    let last: Vec<TaskBody> = test::read_body_json(response).await;
    assert_eq!(last, [TaskBody::new(ids[2], "third")]);
}

#[actix_web::test]
async fn page_limits_outside_one_to_a_thousand_and_bad_cursors_are_bad_requests() {
    let store = store();

    for limit in ["0", "1001", "-1", "ten"] {
        let response = send(&store, TestRequest::get().uri(&format!("/tasks?limit={limit}"))).await;
        problem(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
    let response = send(&store, TestRequest::get().uri("/tasks?after=nope")).await;
    problem(response, StatusCode::BAD_REQUEST, "invalid_id").await;
    let response = send(&store, TestRequest::get().uri("/tasks?limit=1000")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[actix_web::test]
async fn bodies_over_the_limit_are_refused_and_nothing_is_stored() {
    let store = store();
    let huge = format!(r#"{{"name": "{}"}}"#, "a".repeat(BODY_LIMIT));
    let request = TestRequest::post()
        .uri("/tasks")
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(huge);

    let refused = problem(
        send(&store, request).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;

    assert!(refused.detail.contains(&BODY_LIMIT.to_string()), "{refused:?}");
    assert!(store.tasks().is_empty());
}

#[actix_web::test]
async fn other_methods_are_not_allowed_and_say_which_are() {
    let store = store();
    let others = ["PATCH", "TRACE", "OPTIONS", "QUERY"].map(|method| Method::from_bytes(method.as_bytes()));

    for method in others {
        let method = method.expect("a method");
        let on_collection = TestRequest::default().method(method.clone()).uri("/tasks");
        let on_task = TestRequest::default()
            .method(method.clone())
            .uri(&task_path(TaskId::generate()));
        let on_bad_id = TestRequest::post().uri("/tasks/not-a-uuid");
        for (request, allow) in [
            (on_collection, "GET, HEAD, POST"),
            (on_task, "GET, HEAD, PUT, DELETE"),
            (on_bad_id, "GET, HEAD, PUT, DELETE"),
        ] {
            let response = send(&store, request).await;
            assert_eq!(header_value(&response, header::ALLOW), allow, "{method}");
            problem(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
        }
    }
}

#[actix_web::test]
async fn head_is_served_wherever_get_is() {
    let store = store();
    let [id, _] = store.seed(["first", "second"]);

    let response = send(
        &store,
        TestRequest::default().method(Method::HEAD).uri("/tasks?limit=1"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_value(&response, header::LINK),
        format!("</tasks?limit=1&after={id}>; rel=\"next\"")
    );
    let response = send(&store, TestRequest::default().method(Method::HEAD).uri(&task_path(id))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(
        &store,
        TestRequest::default()
            .method(Method::HEAD)
            .uri(&task_path(TaskId::generate())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn unknown_paths_are_not_found() {
    let response = send(&store(), TestRequest::get().uri("/nowhere")).await;

    problem(response, StatusCode::NOT_FOUND, "route_not_found").await;
}

#[actix_web::test]
async fn an_unreachable_store_is_unavailable_and_asks_for_a_retry() {
    let store = web::Data::new(Failing(|| {
        DomainError::Unavailable("connection to db.internal:5432 refused".into())
    }));

    let response = send(&store, TestRequest::get().uri(&task_path(TaskId::generate()))).await;

    assert_eq!(header_value(&response, header::RETRY_AFTER), "1");
    let unavailable = problem(response, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable").await;
    assert!(!unavailable.detail.contains("db.internal"), "{unavailable:?}");
}

/// Log output kept in memory, to see what the service logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[actix_web::test]
async fn a_failing_store_is_an_internal_error_whose_cause_is_logged_once_and_never_sent() {
    let store = web::Data::new(Failing(|| {
        DomainError::Storage("relation \"tasks\" does not exist".into())
    }));
    let log = Captured::default();
    let writer = log.clone();
    // Only this thread, which runs the whole request under `actix_web::test`, logs here.
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );

    let response = send(&store, post_json(&json!({ "name": "lost" }))).await;

    assert!(response.headers().get(header::RETRY_AFTER).is_none());
    let failed = problem(response, StatusCode::INTERNAL_SERVER_ERROR, "internal_error").await;
    assert_eq!(failed.detail, "the request could not be completed");
    let log = String::from_utf8(log.0.lock().unwrap_or_else(PoisonError::into_inner).clone()).expect("UTF-8");
    assert_eq!(
        log.matches("the task store failed: relation \"tasks\" does not exist")
            .count(),
        1,
        "{log}"
    );
}
