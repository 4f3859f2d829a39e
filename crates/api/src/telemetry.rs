//! Log set-up: human-readable lines by default, JSON lines on request, and the request id of `tracing-actix-web` on
//! every line written while a request is served. One event is one line whatever text its fields carry, and the
//! client's address is the socket's unless a trusted proxy is said to set `Forwarded`/`X-Forwarded-For`.

use std::io::IsTerminal;

use crate::settings::{LogFormat, LogSettings};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest};
use tracing::{Span, Subscriber};
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt};

/// A subscriber that writes to `sink`, filtered by `RUST_LOG` when set and by `log.level` otherwise.
pub fn subscriber<W>(settings: &LogSettings, sink: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let registry = tracing_subscriber::registry().with(filter);
    match settings.format {
        LogFormat::Pretty => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(log_fields::escaping())
                    .with_ansi(std::io::stdout().is_terminal())
                    .with_writer(sink),
            ),
        ),
        // JSON strings escape every control character already.
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(sink),
            ),
        ),
    }
}

/// Installs `subscriber` for the whole process; only the first call in a process has an effect.
pub fn init(subscriber: Box<dyn Subscriber + Send + Sync>) {
    // A second call (tests start many applications in one process) keeps the first subscriber, which is what we want.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Whether the `Forwarded`, `X-Forwarded-For` and `X-Forwarded-Host` headers come from a proxy the service trusts
/// (`server.trust_forwarded_for`): app data, read by [`RequestSpan`]. Any client can send them, so by default the
/// client's address is the socket's peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ForwardedHeaders {
    pub(crate) trusted: bool,
}

/// Whether the forwarding headers of `request` are to be believed (see [`ForwardedHeaders`]).
fn trusts_forwarding(request: &HttpRequest) -> bool {
    request
        .app_data::<ForwardedHeaders>()
        .is_some_and(|forwarded| forwarded.trusted)
}

/// The client's address: from the forwarding headers only when they are trusted, else the socket's peer.
fn client_ip(request: &HttpRequest) -> String {
    if trusts_forwarding(request) {
        return request
            .connection_info()
            .realip_remote_addr()
            .unwrap_or_default()
            .to_owned();
    }
    request
        .peer_addr()
        .map(|address| address.ip().to_string())
        .unwrap_or_default()
}

/// The host the client asked for: from the forwarding headers only when they are trusted, else `Host`.
fn host(request: &HttpRequest) -> String {
    if trusts_forwarding(request) {
        return request.connection_info().host().to_owned();
    }
    request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The root span of every request (method, route, client, `request_id`, ...) plus one access-log line for each
/// successful response; failed ones are logged where they are answered, by `ApiError`: client errors at INFO with
/// their problem code, server errors at ERROR with their cause.
#[derive(Debug)]
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    /// The default builder's span and fields, but for the client's address and host (see [`ForwardedHeaders`]),
    /// which it always takes from the forwarding headers.
    ///
    /// The fields are written as expressions inside the macro, which evaluates them only when the span is
    /// enabled: a filter that records no INFO span costs no strings built for each request.
    fn on_request_start(request: &ServiceRequest) -> Span {
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = request.match_pattern().as_deref().unwrap_or("default"),
            http.host = %host(request.request()),
            http.client_ip = %client_ip(request.request()),
            http.user_agent = %request
                .headers()
                .get(header::USER_AGENT)
                .and_then(|agent| agent.to_str().ok())
                .unwrap_or_default(),
            http.target = %request.uri().path_and_query().map_or("", |target| target.as_str()),
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            request_id = request.extensions().get::<RequestId>().copied().map(tracing::field::display),
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, actix_web::Error>) {
        if let Ok(response) = outcome
            && response.response().error().is_none()
        {
            span.in_scope(|| tracing::info!(status = response.status().as_u16(), "request served"));
        }
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, PoisonError};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'writer> MakeWriter<'writer> for Sink {
        type Writer = Self;

        fn make_writer(&'writer self) -> Self {
            self.clone()
        }
    }

    /// What one event carrying forged lines in its message and in span and event fields looks like in `format`.
    fn logged(format: LogFormat) -> String {
        let sink = Sink::default();
        let settings = LogSettings {
            format,
            level: "info".to_owned(),
        };
        let forged = "x\nINFO forged line\r\nand\u{2028}more";
        tracing::subscriber::with_default(subscriber(&settings, sink.clone()), || {
            tracing::info_span!("request", target = %forged, agent = forged).in_scope(|| {
                tracing::info!(detail = %forged, "refused: {forged}");
            });
        });
        let written = sink.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
        String::from_utf8(written).expect("UTF-8")
    }

    #[test]
    fn client_text_in_any_field_cannot_start_a_line_of_its_own() {
        let pretty = logged(LogFormat::Pretty);
        assert_eq!(pretty.matches('\n').count(), 1, "{pretty}");
        assert!(
            pretty.ends_with('\n') && !pretty.contains(['\r', '\u{2028}']),
            "{pretty}"
        );
        // Message, span field and event field, each escaped.
        assert_eq!(
            pretty.matches(r"x\nINFO forged line\r\nand\u{2028}more").count(),
            4,
            "{pretty}"
        );

        // JSON escapes line breaks in strings by itself (a raw U+2028 is valid JSON and ends no JSON line).
        let json = logged(LogFormat::Json);
        assert_eq!(json.matches('\n').count(), 1, "{json}");
        let event: serde_json::Value = serde_json::from_str(&json).expect("one JSON object");
        assert_eq!(
            event["span"]["target"], "x\nINFO forged line\r\nand\u{2028}more",
            "{json}"
        );
    }
}
