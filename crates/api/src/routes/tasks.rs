//! `/tasks`: create, read, rename, delete, and list in keyset-paginated pages.

use std::future::{Ready, ready};

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use domain::{PageLimit, PageRequest, Task, TaskId, TaskName, TaskRepository};
use serde::{Deserialize, Serialize};
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

/// List tasks in id order, one page at a time.
///
/// Ids are time-ordered, so this is also creation order. When more tasks follow, the response carries
/// `Link: </tasks?limit=..&after=..>; rel="next"`.
#[utoipa::path(
    get,
    path = "/tasks",
    tag = "tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of tasks", body = [TaskResource],
            headers(("Link" = String, description = "RFC 8288 link to the next page, when there is one"))),
        (status = 400, description = "Bad limit or after"),
        (status = 500, description = "The database failed"),
        (status = 503, description = "Database unreachable"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn list_tasks<R: TaskRepository>(
    repository: web::Data<R>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let ListQuery { limit, after } = query.into_inner();
    let limit = match limit {
        Some(limit) => PageLimit::new(limit).map_err(|error| ApiError::InvalidQuery(error.to_string()))?,
        None => PageLimit::DEFAULT,
    };
    let after = after.as_deref().map(str::parse::<TaskId>).transpose()?;
    let page = repository.list(PageRequest { limit, after }).await?;
    let mut response = HttpResponse::Ok();
    if let Some(next) = page.next_after {
        response.insert_header((
            header::LINK,
            format!("</tasks?limit={}&after={next}>; rel=\"next\"", limit.get()),
        ));
    }
    let tasks: Vec<TaskResource> = page.tasks.into_iter().map(TaskResource::from).collect();
    Ok(response.json(tasks))
}

/// Create a task.
#[utoipa::path(
    post,
    path = "/tasks",
    tag = "tasks",
    request_body = TaskPayload,
    responses(
        (status = 201, description = "Created", body = TaskResource,
            headers(("Location" = String, description = "/tasks/{id} of the new task")),
            links(
                ("GetTask" = (operation_id = "get_task", parameters(("id" = "$response.body#/id")))),
                ("RenameTask" = (operation_id = "rename_task", parameters(("id" = "$response.body#/id")))),
                ("DeleteTask" = (operation_id = "delete_task", parameters(("id" = "$response.body#/id")))),
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
    repository: web::Data<R>,
    payload: web::Json<TaskPayload>,
) -> Result<HttpResponse, ApiError> {
    let task = Task::new(TaskName::parse(payload.into_inner().name)?);
    repository.create(&task).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/tasks/{}", task.id)))
        .json(TaskResource::from(task)))
}

/// Get one task.
#[utoipa::path(
    get,
    path = "/tasks/{id}",
    tag = "tasks",
    params(("id" = Uuid, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task", body = TaskResource),
        (status = 400, description = "Not a UUID"),
        (status = 404, description = "No such task"),
        (status = 500, description = "The database failed"),
        (status = 503, description = "Database unreachable"),
    )
)]
#[tracing::instrument(skip_all, fields(task.id = %id.0))]
pub(crate) async fn get_task<R: TaskRepository>(
    repository: web::Data<R>,
    id: TaskIdParam,
) -> Result<HttpResponse, ApiError> {
    let task = repository.get(id.0).await?;
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
