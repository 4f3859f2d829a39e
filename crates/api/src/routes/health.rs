//! Probes for orchestrators: `live` says the process answers, `ready` that it can also reach its database.

use actix_web::{HttpResponse, web};
use domain::DomainError;
use infrastructure::{Database, ServerRole};
use serde::Serialize;
use utoipa::ToSchema;

use super::method_not_allowed;
use crate::error::ApiError;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    for (path, probe) in [
        ("/health/live", web::get().to(live)),
        ("/health/ready", web::get().to(ready)),
    ] {
        config.service(
            web::resource(path)
                .route(probe)
                .default_service(web::to(method_not_allowed("GET, HEAD"))),
        );
    }
}

/// What `live` answers.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Live {
    #[schema(pattern = "^up$")]
    status: &'static str,
}

/// What `ready` answers.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ready {
    #[schema(pattern = "^ready$")]
    status: &'static str,
    /// Whether the database server reached takes writes. `reader` on a writer's endpoint means it is an old writer
    /// that a failover demoted, still reached through a cached DNS answer: writes are retried until they reach the
    /// new writer.
    role: Role,
    /// Only with IAM authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    iam_token: Option<IamToken>,
}

/// What the database server reached can do.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    Writer,
    Reader,
}

/// The IAM token in force and how its renewals went.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IamToken {
    /// Seconds until it expires.
    expires_in_secs: u64,
    /// Seconds since it was signed.
    age_secs: u64,
    /// Renewals that succeeded since the start.
    refreshes: u64,
    /// Renewals that failed since the start.
    failures: u64,
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "Up", body = Live)))]
pub(crate) async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Live { status: "up" })
}

/// The service can reach its database and, with IAM authentication, holds a token the server still accepts.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready; with IAM, the token's remaining life and renewal counters", body = Ready),
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
    let role = database
        .role()
        .await
        .map_err(|error| DomainError::Unavailable(Box::new(error)))?;
    let iam_token = token.map(|status| IamToken {
        expires_in_secs: status.expires_in.map_or(0, |left| left.as_secs()),
        age_secs: status.age.as_secs(),
        refreshes: status.refreshes,
        failures: status.failures,
    });
    Ok(HttpResponse::Ok().json(Ready {
        status: "ready",
        role: match role {
            ServerRole::Writer => Role::Writer,
            ServerRole::Reader => Role::Reader,
        },
        iam_token,
    }))
}
