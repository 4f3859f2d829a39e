//! Probes for orchestrators: `live` says the process answers, `ready` that it can also reach its database.

use actix_web::{HttpResponse, web};
use domain::DomainError;
use infrastructure::Database;
use serde_json::json;

use crate::error::ApiError;

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

/// The service can reach its database and, with IAM authentication, holds a token the server still accepts.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready; with IAM, the token's remaining life and renewal counters"),
        (status = 503, description = "Database unreachable, or IAM token expired"),
    )
)]
pub(crate) async fn ready(database: web::Data<Database>) -> Result<HttpResponse, ApiError> {
    let token = database.token_status();
    if let Some(status) = &token
        && status.expires_in.is_none()
    {
        return Err(ApiError::TokenExpired {
            last_error: status.last_error.clone(),
        });
    }
    database
        .ping()
        .await
        .map_err(|error| DomainError::Unavailable(Box::new(error)))?;
    let body = match token {
        Some(status) => json!({
            "status": "ready",
            "iam_token": {
                "expires_in_secs": status.expires_in.map_or(0, |left| left.as_secs()),
                "age_secs": status.age.as_secs(),
                "refreshes": status.refreshes,
                "failures": status.failures,
            }
        }),
        None => json!({ "status": "ready" }),
    };
    Ok(HttpResponse::Ok().json(body))
}
