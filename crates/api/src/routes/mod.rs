pub(crate) mod health;
pub(crate) mod tasks;

use actix_web::HttpResponse;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

use crate::error::ApiError;

/// The answer for a path the service does not serve.
pub(crate) async fn route_not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

/// The answer for a method a resource does not serve, with the `Allow` header RFC 9110 asks for.
pub(crate) fn method_not_allowed(
    allow: &'static str,
) -> impl Fn() -> std::future::Ready<Result<HttpResponse, ApiError>> + Clone + 'static {
    move || std::future::ready(Err(ApiError::MethodNotAllowed { allow }))
}

/// Serves HEAD wherever GET is served, as RFC 9110 (section 9.3.2) asks of every server: the request is routed as a
/// GET, and actix-web's HTTP/1 encoder, which knows the request was a HEAD, sends the GET's headers without its body.
/// Wrapped inside the request logger, so that logs still say HEAD.
pub(crate) async fn head_as_get<B: MessageBody>(
    mut request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    if request.method() == Method::HEAD {
        request.head_mut().method = Method::GET;
    }
    next.call(request).await
}

#[cfg(test)]
mod tests;
