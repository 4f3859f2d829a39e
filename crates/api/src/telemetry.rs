//! Log set-up: human-readable lines by default, JSON lines on request, and the request id of `tracing-actix-web` on
//! every line written while a request is served.

use std::io::IsTerminal;

use crate::settings::{LogFormat, LogSettings};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use tracing::{Span, Subscriber};
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};
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
                    .with_ansi(std::io::stdout().is_terminal())
                    .with_writer(sink),
            ),
        ),
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

/// The root span of every request (method, route, client, `request_id`, ...) plus one access-log line for each
/// successful response; failed ones are already logged, with their cause, by the default builder.
#[derive(Debug)]
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        DefaultRootSpanBuilder::on_request_start(request)
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
