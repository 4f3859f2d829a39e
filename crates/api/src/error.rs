//! The one place where failures become HTTP answers: every error is an RFC 9457 `application/problem+json` body with
//! the right status, and nothing from inside the service (SQL, driver messages) ever reaches the client.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use domain::{DomainError, TaskIdError, TaskNameError};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error response.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

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
    #[error("the {name} header must be {expected}")]
    InvalidHeader { name: &'static str, expected: &'static str },
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

/// How one kind of failure is answered. [`ApiError::answer`] holds every rule, so a status, its code, the header
/// it calls for and what the client may read are decided together.
struct Answer {
    status: StatusCode,
    code: &'static str,
    /// A header the status calls for: `Allow` with 405 (RFC 9110), `Retry-After` when retrying soon may succeed.
    header: Option<(HeaderName, &'static str)>,
    /// What the client reads in place of the error's own message, when that message is not for outsiders.
    detail: Option<&'static str>,
}

impl Answer {
    const fn new(status: StatusCode, code: &'static str) -> Self {
        Self {
            status,
            code,
            header: None,
            detail: None,
        }
    }

    fn header(self, name: HeaderName, value: &'static str) -> Self {
        Self {
            header: Some((name, value)),
            ..self
        }
    }

    fn detail(self, detail: &'static str) -> Self {
        Self {
            detail: Some(detail),
            ..self
        }
    }
}

impl ApiError {
    /// The one table from failures to answers.
    fn answer(&self) -> Answer {
        match self {
            Self::MalformedBody(_) => Answer::new(StatusCode::BAD_REQUEST, "malformed_body"),
            Self::InvalidQuery(_) => Answer::new(StatusCode::BAD_REQUEST, "invalid_query"),
            Self::InvalidHeader { .. } => Answer::new(StatusCode::BAD_REQUEST, "invalid_header"),
            Self::InvalidId(_) => Answer::new(StatusCode::BAD_REQUEST, "invalid_id"),
            Self::PayloadTooLarge { .. } => Answer::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType => Answer::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::InvalidName(_) => Answer::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_name"),
            Self::Domain(DomainError::NotFound(_)) => Answer::new(StatusCode::NOT_FOUND, "task_not_found"),
            Self::Domain(DomainError::AlreadyExists(_)) => Answer::new(StatusCode::CONFLICT, "task_exists"),
            // Server-side failures get a fixed sentence: their causes are for the logs only.
            Self::Domain(DomainError::Unavailable(_)) => {
                Answer::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
                    .header(header::RETRY_AFTER, "1")
                    .detail("the database cannot be reached at the moment; retry later")
            }
            Self::Domain(DomainError::Storage(_)) => Answer::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
                .detail("the request could not be completed"),
            Self::TokenExpired { .. } => Answer::new(StatusCode::SERVICE_UNAVAILABLE, "iam_token_expired"),
            Self::RouteNotFound => Answer::new(StatusCode::NOT_FOUND, "route_not_found"),
            Self::MethodNotAllowed { allow } => {
                Answer::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").header(header::ALLOW, allow)
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.answer().status
    }

    fn error_response(&self) -> HttpResponse {
        let answer = self.answer();
        match self {
            Self::TokenExpired { last_error } => {
                tracing::error!(
                    last_error = last_error.as_deref().unwrap_or("none"),
                    "not ready: IAM token expired"
                );
            }
            _ if answer.status.is_server_error() => {
                tracing::error!(error = %rds_iam::error_chain(self), "request failed")
            }
            // At INFO, so that probing and broken clients show in the logs without paging anyone.
            _ => tracing::info!(
                status = answer.status.as_u16(),
                code = answer.code,
                detail = %self,
                "request refused"
            ),
        }
        let problem = Problem {
            problem_type: "about:blank",
            title: answer.status.canonical_reason().unwrap_or("Error"),
            status: answer.status.as_u16(),
            detail: answer.detail.map_or_else(|| self.to_string(), str::to_owned),
            code: answer.code,
        };
        let mut response = HttpResponse::build(answer.status);
        response.content_type(PROBLEM_JSON);
        if let Some((name, value)) = answer.header {
            response.insert_header((name, HeaderValue::from_static(value)));
        }
        match serde_json::to_vec(&problem) {
            Ok(body) => response.body(body),
            Err(_) => response.finish(),
        }
    }
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
