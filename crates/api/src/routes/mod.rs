pub(crate) mod health;
pub(crate) mod tasks;

use actix_web::HttpResponse;

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

#[cfg(test)]
mod tests;
