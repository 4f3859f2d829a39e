//! The one place where failures become HTTP answers: every error is an RFC 9457 `application/problem+json` body with
//! the right status, and nothing from inside the service (SQL, driver messages) ever reaches the client.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use domain::{DomainError, TaskIdError, TaskNameError};
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem detail.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status code says what kind of problem this is.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub problem_type: &'static str,
    /// The status code's reason phrase.
    #[schema(example = "Unprocessable Entity")]
    pub title: &'static str,
    #[schema(example = 422)]
    pub status: u16,
    /// What was wrong with this request, for a person.
    #[schema(example = "the name has 256 characters; at most 255 are allowed")]
    pub detail: String,
    /// A stable, machine-readable name for the problem.
    #[schema(example = "invalid_name")]
    pub code: &'static str,
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("the request body is not valid JSON of the expected shape: {0}")]
    MalformedBody(String),
    #[error("the query string is not valid: {0}")]
    InvalidQuery(String),
    #[error(transparent)]
    InvalidId(#[from] TaskIdError),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be sent as application/json")]
    UnsupportedMediaType,
    #[error(transparent)]
    InvalidName(#[from] TaskNameError),
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("the IAM database token has expired and could not be renewed")]
    TokenExpired { last_error: Option<String> },
    #[error("there is nothing at this path")]
    RouteNotFound,
    #[error("this resource answers only to {allow}")]
    MethodNotAllowed { allow: &'static str },
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            Self::MalformedBody(_) => "malformed_body",
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidId(_) => "invalid_id",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidName(_) => "invalid_name",
            Self::Domain(DomainError::NotFound(_)) => "task_not_found",
            Self::Domain(DomainError::AlreadyExists(_)) => "task_exists",
            Self::Domain(DomainError::Unavailable(_)) => "database_unavailable",
            Self::Domain(DomainError::Storage(_)) => "internal_error",
            Self::TokenExpired { .. } => "iam_token_expired",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
        }
    }

    /// What the client is told. Server-side failures get a fixed sentence: their causes are for the logs only.
    fn detail(&self) -> String {
        match self {
            Self::Domain(DomainError::Unavailable(_)) => {
                "the database cannot be reached at the moment; retry later".to_owned()
            }
            Self::Domain(DomainError::Storage(_)) => "the request could not be completed".to_owned(),
            other => other.to_string(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MalformedBody(_) | Self::InvalidQuery(_) | Self::InvalidId(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidName(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Domain(DomainError::NotFound(_)) | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::Domain(DomainError::AlreadyExists(_)) => StatusCode::CONFLICT,
            Self::Domain(DomainError::Unavailable(_)) | Self::TokenExpired { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Domain(DomainError::Storage(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            Self::TokenExpired { last_error } => {
                tracing::error!(
                    last_error = last_error.as_deref().unwrap_or("none"),
                    "not ready: IAM token expired"
                );
            }
            _ if status.is_server_error() => tracing::error!(error = %chain(self), "request failed"),
            _ => {}
        }
        let problem = Problem {
            problem_type: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.detail(),
            code: self.code(),
        };
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        match self {
            Self::MethodNotAllowed { allow } => {
                response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            Self::Domain(DomainError::Unavailable(_)) => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            _ => {}
        }
        match serde_json::to_vec(&problem) {
            Ok(body) => response.body(body),
            Err(_) => response.finish(),
        }
    }
}

/// An error and all its causes on one line, for the log.
fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(line, ": {cause}");
        source = cause.source();
    }
    line
}

/// The JSON extractor's failures, sorted into 400, 413 and 415.
pub(crate) fn json_error(error: actix_web::error::JsonPayloadError, limit: usize) -> ApiError {
    use actix_web::error::JsonPayloadError;
    match error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge { limit }
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(error) => ApiError::MalformedBody(error.to_string()),
        other => ApiError::MalformedBody(other.to_string()),
    }
}
