//! Driving a running emulator: [`Control`] starts failovers and reads the statistics in-process, and the control
//! API (`--control-listen`) offers the same over HTTP:
//!
//! - `POST /failover?downtime_ms=N&stale_dns_ms=M` starts a failover (both default to 0): 200 with what it does, 409
//!   while another one's downtime lasts, 400 for a parameter it does not know or cannot read.
//! - `GET /stats` answers with [`Stats`] as JSON.
//!
//! Other paths get 404 and other methods 405; errors are RFC 9457 problem details.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::cluster::{Cluster, FailoverError, FailoverStarted};
use crate::http;
use crate::rate::PeakRate;
use crate::state::AuthCounts;
use crate::stats::{EndpointView, Stats};

/// A handle on a running emulator, cloned freely: it starts failovers and reads the statistics.
#[derive(Debug, Clone)]
pub struct Control(Arc<Sources>);

#[derive(Debug)]
struct Sources {
    cluster: Arc<Cluster>,
    endpoints: Vec<EndpointView>,
    counts: Arc<AuthCounts>,
    all_new_connections: Arc<PeakRate>,
}

impl Control {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        endpoints: Vec<EndpointView>,
        counts: Arc<AuthCounts>,
        all_new_connections: Arc<PeakRate>,
    ) -> Self {
        Self(Arc::new(Sources {
            cluster,
            endpoints,
            counts,
            all_new_connections,
        }))
    }

    /// Starts a failover now: every session closes, every endpoint refuses new connections for `downtime`, then
    /// the writer and the reader swap roles (a single instance only restarts), and for `stale_dns` more the cluster
    /// endpoint still relays to the old writer.
    ///
    /// # Errors
    ///
    /// While an earlier failover's downtime lasts, and for spells over [`crate::MAX_FAILOVER_SPELL`].
    pub fn fail_over(&self, downtime: Duration, stale_dns: Duration) -> Result<FailoverStarted, FailoverError> {
        let started = self.0.cluster.fail_over(downtime, stale_dns)?;
        tracing::warn!(
            old_writer = started.old_writer,
            new_writer = started.new_writer,
            downtime_ms = started.downtime_ms,
            stale_dns_ms = started.stale_dns_ms,
            "failover: every session closed; the instances restart"
        );
        Ok(started)
    }

    /// The counts so far and the state now.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let sources = &self.0;
        Stats::collect(
            &sources.cluster,
            &sources.endpoints,
            &sources.counts,
            &sources.all_new_connections,
        )
    }
}

/// The control API, bound and ready to serve.
#[derive(Debug)]
pub(crate) struct ControlServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    control: Control,
    /// How long a client may take to send its request's headers.
    read_timeout: Duration,
}

impl ControlServer {
    pub(crate) async fn bind(listen: SocketAddr, control: Control, read_timeout: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        Ok(Self {
            local_addr: listener.local_addr()?,
            listener,
            control,
            read_timeout,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(crate) async fn run(self) {
        tracing::info!(listen = %self.local_addr, "control API ready");
        let control = self.control;
        http::serve(&self.listener, "control API", self.read_timeout, move |request| {
            let response = respond(&control, &request);
            async move { response }
        })
        .await;
    }
}

fn respond(control: &Control, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method();
    match request.uri().path() {
        "/failover" if method == Method::POST => match spells(request.uri().query()) {
            Err(detail) => problem(StatusCode::BAD_REQUEST, detail),
            Ok((downtime, stale_dns)) => match control.fail_over(downtime, stale_dns) {
                Ok(started) => json(StatusCode::OK, &started),
                Err(error @ FailoverError::InProgress { .. }) => problem(StatusCode::CONFLICT, error.to_string()),
                Err(error @ FailoverError::TooLong) => problem(StatusCode::BAD_REQUEST, error.to_string()),
            },
        },
        "/stats" if method == Method::GET => json(StatusCode::OK, &control.stats()),
        "/failover" => not_allowed(Method::POST),
        "/stats" => not_allowed(Method::GET),
        path => problem(
            StatusCode::NOT_FOUND,
            format!("no `{path}` here: the control API serves POST /failover and GET /stats"),
        ),
    }
}

/// `downtime_ms` and `stale_dns_ms`, each at most once, 0 when absent.
fn spells(query: Option<&str>) -> Result<(Duration, Duration), String> {
    let mut downtime = None;
    let mut stale_dns = None;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let spell = match name.as_ref() {
            "downtime_ms" => &mut downtime,
            "stale_dns_ms" => &mut stale_dns,
            other => {
                return Err(format!(
                    "unknown parameter `{other}`: POST /failover takes downtime_ms and stale_dns_ms"
                ));
            }
        };
        if spell.is_some() {
            return Err(format!("{name} is given twice"));
        }
        let millis: u64 = value
            .parse()
            .map_err(|_| format!("{name} must be a whole number of milliseconds, not `{value}`"))?;
        *spell = Some(Duration::from_millis(millis));
    }
    Ok((downtime.unwrap_or_default(), stale_dns.unwrap_or_default()))
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    // The bodies are plain structs of strings and numbers, which always serialise.
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn problem(status: StatusCode, detail: String) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or_default(),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = json(status, &body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn not_allowed(allowed: Method) -> Response<Full<Bytes>> {
    let mut response = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("this path answers {allowed} only"),
    );
    if let Ok(allow) = HeaderValue::from_str(allowed.as_str()) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_spells_are_milliseconds_given_at_most_once() {
        let millis = Duration::from_millis;
        assert_eq!(spells(None), Ok((Duration::ZERO, Duration::ZERO)));
        assert_eq!(
            spells(Some("downtime_ms=2000&stale_dns_ms=3000")),
            Ok((millis(2000), millis(3000)))
        );
        assert_eq!(spells(Some("stale_dns_ms=5")), Ok((Duration::ZERO, millis(5))));

        for (query, complaint) in [
            ("downtime=2000", "unknown parameter `downtime`"),
            (
                "downtime_ms=2s",
                "downtime_ms must be a whole number of milliseconds, not `2s`",
            ),
            ("downtime_ms=-1", "not `-1`"),
            ("stale_dns_ms=1&stale_dns_ms=2", "stale_dns_ms is given twice"),
        ] {
            let error = spells(Some(query)).expect_err(query);
            assert!(error.contains(complaint), "{query}: {error}");
        }
    }
}
