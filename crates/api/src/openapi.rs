//! The OpenAPI 3.1 description of the service, generated from the handlers themselves.

use utoipa::OpenApi;

use crate::routes::{health, tasks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tasks API",
        description = "Tasks stored in PostgreSQL or SQLite. Every error is an RFC 9457 application/problem+json body."
    ),
    paths(
        tasks::list_tasks,
        tasks::create_task,
        tasks::get_task,
        tasks::rename_task,
        tasks::delete_task,
        health::live,
        health::ready
    ),
    tags((name = "tasks", description = "Create, read, rename and delete tasks"), (name = "health", description = "Probes"))
)]
pub(crate) struct ApiDoc;
