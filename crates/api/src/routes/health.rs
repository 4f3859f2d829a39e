//! Probes for orchestrators: `live` says the process answers, `ready` that it can also reach its database.

use actix_web::{HttpResponse, web};
use domain::DomainError;
use infrastructure::Database;
use serde_json::json;

use crate::error::{ApiError, Problem};

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready));
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "Up")))]
pub(crate) async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "up" }))
}

/// The service can reach its database.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready"),
        (status = 503, description = "Database unreachable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn ready(database: web::Data<Database>) -> Result<HttpResponse, ApiError> {
    database
        .ping()
        .await
        .map_err(|error| DomainError::Unavailable(Box::new(error)))?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}
