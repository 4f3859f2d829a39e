//! `/tasks`: create, read, rename, delete, and list in keyset-paginated pages.

use std::future::{Ready, ready};

use actix_web::error::JsonPayloadError;
use actix_web::http::header::{self, ContentType, HeaderMap, HeaderName};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use domain::{Consistency, PageLimit, PageRequest, Task, TaskId, TaskName, TaskRepository};
use serde::{Deserialize, Serialize};
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::method_not_allowed;
use crate::BODY_LIMIT;
use crate::error::{ApiError, json_error};

/// The `/tasks` routes over the repository `R` (the app supplies it as `web::Data<R>`), and how their bodies and query
/// strings are read: JSON of at most [`BODY_LIMIT`] bytes, with every way of failing to parse answered as a problem
/// like any other error. Those reading rules are app data, so they hold for the whole app this configures.
pub(crate) fn configure<R: TaskRepository>(config: &mut web::ServiceConfig) {
    config
        .app_data(
            web::JsonConfig::default()
                .limit(BODY_LIMIT)
                .error_handler(|error, _| json_error(error, BODY_LIMIT).into()),
        )
        .app_data(
            web::QueryConfig::default().error_handler(|error, _| ApiError::InvalidQuery(error.to_string()).into()),
        )
        .service(
            web::resource("/tasks")
                .route(web::get().to(list_tasks::<R>))
                .route(web::post().to(create_task::<R>))
                .default_service(web::to(method_not_allowed("GET, HEAD, POST"))),
        )
        .service(
            web::resource("/tasks/{id}")
                .route(web::get().to(get_task::<R>))
                .route(web::put().to(rename_task::<R>))
                .route(web::delete().to(delete_task::<R>))
                .default_service(web::to(method_not_allowed("GET, HEAD, PUT, DELETE"))),
        );
}

/// What a client sends to create or rename a task.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct TaskPayload {
    #[schema(schema_with = task_name_schema)]
    pub(crate) name: String,
}

/// A task as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TaskResource {
    pub(crate) id: Uuid,
    /// Names read back obey the same rules: those stored before the rules existed are repaired on the way out.
    #[schema(schema_with = task_name_schema)]
    pub(crate) name: String,
}

/// A task's name as [`TaskName::parse`] accepts it, stated with the domain's own limits so that the two cannot drift.
fn task_name_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(TaskName::MAX_CHARS))
        .pattern(Some(TaskName::PATTERN))
        .description(Some(format!(
            "1 to {max} characters (Unicode code points, so {max} emoji fit), not only white space, and no control \
             characters (Unicode category Cc, such as NUL, tab or line feed).",
            max = TaskName::MAX_CHARS
        )))
        .examples(["Write the migration"])
        .build()
}

impl TaskResource {
    /// The bytes of one task in a JSON array besides its name: `{"id":"<36>","name":""}` and a comma.
    const JSON_OVERHEAD: usize = r#"{"id":"","name":""},"#.len() + 36;
}

impl From<Task> for TaskResource {
    fn from(task: Task) -> Self {
        Self {
            id: *task.id.as_uuid(),
            name: task.name.into_inner(),
        }
    }
}

/// The query string of `GET /tasks`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    #[param(schema_with = page_limit_schema)]
    limit: Option<u64>,
    /// Return the tasks whose id follows this one: the `after` of the previous page's `Link: rel="next"`.
    // A string here, parsed in the handler, so that a bad one is answered `invalid_id` as in a path.
    #[param(value_type = Option<Uuid>)]
    after: Option<String>,
}

/// `limit` as [`PageLimit::new`] accepts it.
fn page_limit_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(PageLimit::MAX))
        .default(Some(PageLimit::DEFAULT.get().into()))
        .description(Some(format!(
            "Tasks per page, 1 to {} (default {}).",
            PageLimit::MAX,
            PageLimit::DEFAULT.get()
        )))
        .build()
}

/// The `{id}` segment of a task's path, parsed without copying it.
pub(crate) struct TaskIdParam(TaskId);

impl FromRequest for TaskIdParam {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let raw = request.match_info().get("id").unwrap_or_default();
        ready(raw.parse().map(Self).map_err(ApiError::from))
    }
}

/// The request header that says how fresh a read must be.
const CONSISTENCY: HeaderName = HeaderName::from_static("consistency");

/// A read's `Consistency` header: `eventual` (the default) lets it be served by a reader, which may lag a moment
/// behind the writer; `strong` sends it to the writer, for a client that reads back what it has just written.
pub(crate) struct ReadConsistency(Consistency);

impl FromRequest for ReadConsistency {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let mut values = request.headers().get_all(CONSISTENCY);
        let consistency = match (values.next().map(|value| value.to_str().map(str::trim)), values.next()) {
            (None, _) => Ok(Consistency::Eventual),
            (Some(Ok(value)), None) if value.eq_ignore_ascii_case("eventual") => Ok(Consistency::Eventual),
            (Some(Ok(value)), None) if value.eq_ignore_ascii_case("strong") => Ok(Consistency::Strong),
            _ => Err(ApiError::InvalidHeader {
                name: "Consistency",
                expected: "`strong` or `eventual`, once",
            }),
        };
        ready(consistency.map(Self))
    }
}

/// The header as the OpenAPI document declares it, wherever a read takes it.
impl IntoParams for ReadConsistency {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let values = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["strong", "eventual"]))
            .default(Some("eventual".into()));
        vec![
            ParameterBuilder::new()
                .name("Consistency")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "`strong`: read from the writer, seeing every write acknowledged before the request; `eventual` \
                     (the default): from the reader endpoint when one is configured, which may lag a moment behind.",
                ))
                .schema(Some(values))
                .build(),
        ]
    }
}

/// List tasks in id order, one page at a time.
///
/// Ids are time-ordered, so this is also creation order. When more tasks follow, the response carries
/// `Link: </tasks?limit=..&after=..>; rel="next"`.
#[utoipa::path(
    get,
    path = "/tasks",
    tag = "tasks",
    params(ListQuery, ReadConsistency),
    responses(
        (status = 200, description = "One page of tasks", body = [TaskResource],
            headers(("Link" = String, description = "RFC 8288 link to the next page, when there is one"))),
        (status = 400, description = "Bad limit, after or Consistency"),
        (status = 500, description = "The database failed"),
        (status = 503, description = "Database unreachable"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn list_tasks<R: TaskRepository>(
    repository: web::Data<R>,
    query: web::Query<ListQuery>,
    consistency: ReadConsistency,
) -> Result<HttpResponse, ApiError> {
    let ListQuery { limit, after } = query.into_inner();
    let limit = match limit {
        Some(limit) => PageLimit::new(limit).map_err(|error| ApiError::InvalidQuery(error.to_string()))?,
        None => PageLimit::DEFAULT,
    };
    let after = after.as_deref().map(str::parse::<TaskId>).transpose()?;
    let page = repository.list(PageRequest { limit, after }, consistency.0).await?;
    let mut response = HttpResponse::Ok();
    if let Some(next) = page.next_after {
        response.insert_header((
            header::LINK,
            format!("</tasks?limit={}&after={next}>; rel=\"next\"", limit.get()),
        ));
    }
    let tasks: Vec<TaskResource> = page.tasks.into_iter().map(TaskResource::from).collect();
    // Written into one buffer of the page's size, which is exact unless a name needs escaping, instead of one that
    // grows by doubling from 128 bytes: a page of 50 tasks is about 3 KiB.
    let size = 2 + tasks
        .iter()
        .map(|task| TaskResource::JSON_OVERHEAD + task.name.len())
        .sum::<usize>();
    let mut body = Vec::with_capacity(size);
    match serde_json::to_writer(&mut body, &tasks) {
        Ok(()) => Ok(response.content_type(ContentType::json()).body(body)),
        // Cannot happen (memory takes every write, and these types always serialise): answered as actix's `json` would.
        Err(error) => Ok(HttpResponse::from_error(JsonPayloadError::Serialize(error))),
    }
}

/// The request header of RFC 7240.
const PREFER: HeaderName = HeaderName::from_static("prefer");

/// The response header of RFC 7240 that says which preference was honoured.
const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// Whether the request's `Prefer` headers ask for `return=minimal`. As RFC 7240 says, names and values are
/// case-insensitive, the first `return` counts, and preferences or values the service does not know are ignored.
/// Preferences are split at every comma, quoted or not: RFC 7240's own take no value that holds one, so only an
/// unknown preference with a quoted comma in its value can be misread.
fn prefers_minimal(headers: &HeaderMap) -> bool {
    headers
        .get_all(PREFER)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|preference| {
            // Parameters after `;` qualify a preference; `return` takes none, so they are dropped.
            let preference = preference.split(';').next()?;
            let (name, value) = preference.split_once('=').unwrap_or((preference, ""));
            name.trim().eq_ignore_ascii_case("return").then_some(value)
        })
        .next()
        .is_some_and(|value| value.trim().trim_matches('"').eq_ignore_ascii_case("minimal"))
}

/// Create a task.
///
/// The answer is 201 with the task and its `Location`. With `Prefer: return=minimal` (RFC 7240) it is what the
/// original .NET service answered instead: 200 with the bare id as a JSON string, plus `Location` and
/// `Preference-Applied: return=minimal`.
#[utoipa::path(
    post,
    path = "/tasks",
    tag = "tasks",
    params(("Prefer" = Option<String>, Header,
        description = "`return=minimal` asks for the original .NET service's answer: 200 and the bare id. \
                       Other preferences are ignored.",
        example = "return=minimal")),
    request_body = TaskPayload,
    responses(
        (status = 201, description = "Created", body = TaskResource,
            headers(("Location" = String, description = "/tasks/{id} of the new task")),
            links(
                ("GetTask" = (operation_id = "get_task", parameters(("id" = "$response.body#/id")))),
                ("RenameTask" = (operation_id = "rename_task", parameters(("id" = "$response.body#/id")))),
                ("DeleteTask" = (operation_id = "delete_task", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 200, description = "Created, answered as `Prefer: return=minimal` asked: the new task's id",
            body = Uuid, content_type = "application/json",
            headers(
                ("Location" = String, description = "/tasks/{id} of the new task"),
                ("Preference-Applied" = String, description = "`return=minimal`"),
            ),
            links(
                ("GetTask" = (operation_id = "get_task", parameters(("id" = "$response.body")))),
                ("RenameTask" = (operation_id = "rename_task", parameters(("id" = "$response.body")))),
                ("DeleteTask" = (operation_id = "delete_task", parameters(("id" = "$response.body")))),
            )),
        (status = 400, description = "Malformed JSON, or a name that is not a string"),
        (status = 409, description = "The id generated for the task is taken (ids are UUID v7: practically never)"),
        (status = 413, description = "Body over 16 KiB"),
        (status = 415, description = "Not application/json"),
        (status = 422, description = "Invalid name"),
        (status = 500, description = "The database failed"),
        (status = 503, description = "Database unreachable"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn create_task<R: TaskRepository>(
    request: HttpRequest,
    repository: web::Data<R>,
    payload: web::Json<TaskPayload>,
) -> Result<HttpResponse, ApiError> {
    let task = Task::new(TaskName::parse(payload.into_inner().name)?);
    repository.create(&task).await?;
    let location = (header::LOCATION, format!("/tasks/{}", task.id));
    if prefers_minimal(request.headers()) {
        return Ok(HttpResponse::Ok()
            .insert_header(location)
            .insert_header((PREFERENCE_APPLIED, "return=minimal"))
            .json(task.id.as_uuid()));
    }
    Ok(HttpResponse::Created()
        .insert_header(location)
        .json(TaskResource::from(task)))
}

/// Get one task.
#[utoipa::path(
    get,
    path = "/tasks/{id}",
    tag = "tasks",
    params(("id" = Uuid, Path, description = "The task's id"), ReadConsistency),
    responses(
        (status = 200, description = "The task", body = TaskResource),
        (status = 400, description = "Not a UUID, or a bad Consistency"),
        (status = 404, description = "No such task"),
        (status = 500, description = "The database failed"),
        (status = 503, description = "Database unreachable"),
    )
)]
#[tracing::instrument(skip_all, fields(task.id = %id.0))]
pub(crate) async fn get_task<R: TaskRepository>(
    repository: web::Data<R>,
    id: TaskIdParam,
    consistency: ReadConsistency,
) -> Result<HttpResponse, ApiError> {
    let task = repository.get(id.0, consistency.0).await?;
    Ok(HttpResponse::Ok().json(TaskResource::from(task)))
}

/// Rename a task.
#[utoipa::path(
    put,
    path = "/tasks/{id}",
    tag = "tasks",
    params(("id" = Uuid, Path, description = "The task's id")),
    request_body = TaskPayload,
    responses(
        (status = 200, description = "The renamed task", body = TaskResource),
        (status = 400, description = "Not a UUID, malformed JSON, or a name that is not a string"),
        (status = 404, description = "No such task"),
        (status = 413, description = "Body over 16 KiB"),
        (status = 415, description = "Not application/json"),
        (status = 422, description = "Invalid name"),
        (status = 500, description = "The database failed"),
        (status = 503, description = "Database unreachable"),
    )
)]
#[tracing::instrument(skip_all, fields(task.id = %id.0))]
pub(crate) async fn rename_task<R: TaskRepository>(
    repository: web::Data<R>,
    id: TaskIdParam,
    payload: web::Json<TaskPayload>,
) -> Result<HttpResponse, ApiError> {
    let name = TaskName::parse(payload.into_inner().name)?;
    let task = repository.rename(id.0, name).await?;
    Ok(HttpResponse::Ok().json(TaskResource::from(task)))
}

/// Delete a task.
#[utoipa::path(
    delete,
    path = "/tasks/{id}",
    tag = "tasks",
    params(("id" = Uuid, Path, description = "The task's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not a UUID"),
        (status = 404, description = "No such task"),
        (status = 500, description = "The database failed"),
        (status = 503, description = "Database unreachable"),
    )
)]
#[tracing::instrument(skip_all, fields(task.id = %id.0))]
pub(crate) async fn delete_task<R: TaskRepository>(
    repository: web::Data<R>,
    id: TaskIdParam,
) -> Result<HttpResponse, ApiError> {
    repository.delete(id.0).await?;
    Ok(HttpResponse::NoContent().finish())
}
