//! `GET /metrics`: the service's figures in the Prometheus text format (see `docs/metrics.md`).
//!
//! Each [`Metrics`] has a registry of its own rather than a process-wide one, so that applications sharing a process
//! (the test suite starts many) keep their figures apart. Requests are counted by a middleware as they are answered;
//! the pool's, the retries' and the IAM token's figures are read from the [`Database`] when the endpoint is scraped,
//! so the request path pays nothing for them.

use std::borrow::Cow;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use infrastructure::Database;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::routes::method_not_allowed;

/// The `route` of a request that matched no route (the default service answered it), so that arbitrary paths add
/// one series, not one each. The same word the request's log span uses.
const UNMATCHED: &str = "default";

/// Upper bounds of the latency buckets, in seconds: from half a millisecond (a read on a warm connection) to ten
/// seconds (beyond the pool's acquire time-out).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `pool` labels of the writer's pool and of the reader's, when there is one.
const WRITER_POOL: &str = "writer";
const READER_POOL: &str = "reader";

/// One application's registry, served by [`configure`]'s route.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: RequestMetrics,
}

impl Metrics {
    /// A registry with the request series and the figures of the pools and tokens of `writer` and `reader`.
    pub(crate) fn new(writer: &Database, reader: Option<&Database>) -> Self {
        let mut registry = Registry::default();
        let requests = RequestMetrics::default();
        requests.register(&mut registry);
        let pools = std::iter::once((WRITER_POOL, writer))
            .chain(reader.map(|reader| (READER_POOL, reader)))
            .map(|(pool, database)| (pool, database.clone()))
            .collect();
        registry.register_collector(Box::new(DatabaseFigures { pools }));
        Self { registry, requests }
    }

    /// The middleware that counts and times every request, for `App::wrap`.
    pub(crate) fn middleware(&self) -> RequestMetrics {
        self.requests.clone()
    }
}

/// `GET /metrics`; other methods are answered 405 with a problem body, as on `/tasks`.
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/metrics")
            .route(web::get().to(scrape))
            .default_service(web::to(method_not_allowed("GET, HEAD"))),
    );
}

async fn scrape(metrics: web::Data<Metrics>) -> HttpResponse {
    let mut body = String::with_capacity(8 * 1024);
    match prometheus_text::encode(&mut body, &metrics.registry) {
        Ok(()) => HttpResponse::Ok()
            .content_type(prometheus_text::CONTENT_TYPE)
            .body(body),
        // Writing to a String cannot fail and every value here is in range, so this is not expected; a scraper only
        // needs to see that the scrape failed.
        Err(error) => {
            tracing::error!(%error, "the metrics could not be encoded");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// The labels of both request series. The route is the template (`/tasks/{id}`), never the path, and the method
/// one of a fixed set, so that clients cannot make series without end.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Cow<'static, str>,
    method: &'static str,
    status: u16,
}

/// Requests by route, method and status, and their latency: the middleware that records them (see
/// [`Metrics::middleware`]). Clones share the series.
#[derive(Debug, Clone)]
pub(crate) struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    /// The same labels as the counter, so that the label set built once per request serves both lookups.
    durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
        }
    }
}

impl RequestMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from receiving a request to having its response ready, by route template, method and status",
            Unit::Seconds,
            self.durations.clone(),
        );
    }

    fn record(&self, labels: &RequestLabels, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64();
        self.requests.get_or_create(labels).inc();
        self.durations.get_or_create(labels).observe(elapsed);
    }
}

/// The method as a label: the standard ones as they are, anything else as `other`.
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequestMetrics
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RecordRequests<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RecordRequests {
            service,
            metrics: Rc::new(self.clone()),
        }))
    }
}

/// [`RequestMetrics`] in front of one worker's service.
#[derive(Debug)]
pub(crate) struct RecordRequests<S> {
    service: S,
    /// Shared by the worker's requests without an atomic count: a worker runs on one thread.
    metrics: Rc<RequestMetrics>,
}

impl<S, B> Service<ServiceRequest> for RecordRequests<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Recorded<S::Future>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let method = method_label(request.method());
        Recorded {
            response: self.service.call(request),
            started: Instant::now(),
            method,
            metrics: Rc::clone(&self.metrics),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being answered; recorded once its response is ready. A future of its own rather than a boxed one:
    /// no allocation per request.
    #[derive(Debug)]
    pub(crate) struct Recorded<F> {
        #[pin]
        response: F,
        started: Instant,
        method: &'static str,
        metrics: Rc<RequestMetrics>,
    }
}

impl<F, B> Future for Recorded<F>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = std::task::ready!(this.response.poll(context));
        let (route, status) = match &outcome {
            // After routing, actix finds the template of the matched resource by index, without matching again.
            Ok(response) => (
                response
                    .request()
                    .match_pattern()
                    .map_or(Cow::Borrowed(UNMATCHED), Cow::Owned),
                response.status(),
            ),
            // Handlers' errors arrive as responses; only a middleware's error comes this way, without its request.
            Err(error) => (Cow::Borrowed(UNMATCHED), error.as_response_error().status_code()),
        };
        let labels = RequestLabels {
            route,
            method: this.method,
            status: status.as_u16(),
        };
        this.metrics.record(&labels, *this.started);
        Poll::Ready(outcome)
    }
}

/// The pools', the retries' and the IAM tokens' figures, read from the databases at each scrape: every series of a
/// metric together, one per pool.
#[derive(Debug)]
struct DatabaseFigures {
    /// Each pool with its `pool` label.
    pools: Vec<(&'static str, Database)>,
}

impl Collector for DatabaseFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let statuses: Vec<_> = self
            .pools
            .iter()
            .map(|(pool, database)| (*pool, database.pool_status()))
            .collect();
        series(
            &mut encoder,
            "db_pool_connections",
            "Open connections of the pool: in_use (running a statement, or being opened or checked) or idle (in the \
             pool or kept between statements).",
            statuses.iter().flat_map(|(pool, status)| {
                [
                    ([("pool", *pool), ("state", "in_use")], ConstGauge::new(status.in_use)),
                    ([("pool", *pool), ("state", "idle")], ConstGauge::new(status.idle)),
                ]
            }),
        )?;
        series(
            &mut encoder,
            "db_pool_waiting",
            "Statements waiting for a connection.",
            statuses
                .iter()
                .map(|(pool, status)| ([("pool", *pool)], ConstGauge::new(status.waiting))),
        )?;
        series(
            &mut encoder,
            "db_pool_connections_opened",
            "New connections (log-ins) the pool has made.",
            statuses
                .iter()
                .map(|(pool, status)| ([("pool", *pool)], ConstCounter::new(status.opened))),
        )?;
        series(
            &mut encoder,
            "db_operations",
            "Database operations the pool has run (each once, however often it was retried).",
            statuses
                .iter()
                .map(|(pool, status)| ([("pool", *pool)], ConstCounter::new(status.operations))),
        )?;
        series(
            &mut encoder,
            "db_retries",
            "Database operations run again, by the cause of the failed attempt.",
            self.pools.iter().flat_map(|(pool, database)| {
                let retries = database.retries();
                [
                    ("connection_lost", retries.connection_lost),
                    ("auth_failure", retries.auth_failure),
                    ("read_only", retries.read_only),
                    ("throttled", retries.throttled),
                    ("serialization_conflict", retries.serialization_conflict),
                ]
                .map(|(cause, count)| ([("pool", *pool), ("cause", cause)], ConstCounter::new(count)))
            }),
        )?;
        // With a password there is no token, and no series.
        let tokens: Vec<_> = self
            .pools
            .iter()
            .filter_map(|(pool, database)| Some((*pool, database.token_status()?)))
            .collect();
        series(
            &mut encoder,
            "db_iam_token_expiry_seconds",
            "Seconds left on the IAM token in force; 0 once it has expired.",
            tokens.iter().map(|(pool, token)| {
                (
                    [("pool", *pool)],
                    ConstGauge::new(token.expires_in.map_or(0.0, |left| left.as_secs_f64())),
                )
            }),
        )?;
        series(
            &mut encoder,
            "db_iam_token_renewals",
            "IAM token renewals that succeeded.",
            tokens
                .iter()
                .map(|(pool, token)| ([("pool", *pool)], ConstCounter::new(token.refreshes))),
        )?;
        series(
            &mut encoder,
            "db_iam_token_renewal_failures",
            "IAM token renewals that failed.",
            tokens
                .iter()
                .map(|(pool, token)| ([("pool", *pool)], ConstCounter::new(token.failures))),
        )
    }
}

/// One metric, its help and its series, each a label set and a value of the same type; nothing when there are no
/// series. Unlike the registry's own metrics, a collector's help is written as given: each ends with a full stop, as
/// theirs do.
fn series<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut values = values.into_iter().peekable();
    let Some((_, first)) = values.peek() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, value) in values {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::test::{self, TestRequest};
    use actix_web::{App, HttpResponse, web};

    use super::*;

    /// What the registry of `requests` says, in the text format.
    fn scraped(requests: &RequestMetrics) -> String {
        let mut registry = Registry::default();
        requests.register(&mut registry);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).expect("encodes");
        text
    }

    #[actix_web::test]
    async fn requests_are_labelled_by_route_template_bounded_method_and_status() {
        let requests = RequestMetrics::default();
        let app = test::init_service(
            App::new()
                .wrap(requests.clone())
                .route("/things/{id}", web::get().to(HttpResponse::Ok))
                .route("/things/{id}", web::delete().to(HttpResponse::NoContent))
                .default_service(web::to(HttpResponse::NotFound)),
        )
        .await;

        for (method, path) in [
            (Method::GET, "/things/1"),
            (Method::GET, "/things/2"),
            (Method::DELETE, "/things/3"),
            (Method::GET, "/elsewhere/1"),
            (Method::GET, "/elsewhere/2"),
            (Method::from_bytes(b"BREW").expect("a method"), "/elsewhere/3"),
        ] {
            test::call_service(&app, TestRequest::default().method(method).uri(path).to_request()).await;
        }

        let text = scraped(&requests);
        for line in [
            r#"http_requests_total{route="/things/{id}",method="GET",status="200"} 2"#,
            r#"http_requests_total{route="/things/{id}",method="DELETE",status="204"} 1"#,
            r#"http_requests_total{route="default",method="GET",status="404"} 2"#,
            r#"http_requests_total{route="default",method="other",status="404"} 1"#,
            r#"http_request_duration_seconds_count{route="/things/{id}",method="GET",status="200"} 2"#,
            r#"http_request_duration_seconds_bucket{route="default",method="other",status="404",le="+Inf"} 1"#,
        ] {
            assert!(text.lines().any(|scraped| scraped == line), "no {line} in:\n{text}");
        }
        assert!(!text.contains("/things/1") && !text.contains("BREW"), "{text}");
        assert!(
            text.contains("# TYPE http_request_duration_seconds histogram"),
            "{text}"
        );
    }

    #[actix_web::test]
    async fn a_middleware_error_is_counted_with_its_status() {
        let requests = RequestMetrics::default();
        let app = test::init_service(
            App::new()
                .wrap_fn(|_, _| async {
                    Err::<ServiceResponse, _>(actix_web::error::ErrorServiceUnavailable("refused"))
                })
                // Registered last, so outermost, as in the server.
                .wrap(requests.clone())
                .route("/things", web::get().to(HttpResponse::Ok)),
        )
        .await;

        let response = test::try_call_service(&app, TestRequest::get().uri("/things").to_request()).await;

        let status = response.err().map(|error| error.as_response_error().status_code());
        assert_eq!(status, Some(StatusCode::SERVICE_UNAVAILABLE));
        let text = scraped(&requests);
        let line = r#"http_requests_total{route="default",method="GET",status="503"} 1"#;
        assert!(text.lines().any(|scraped| scraped == line), "no {line} in:\n{text}");
    }
}
