//! The emulator's small HTTP/1 servers, the STS pass-through and the control API: an accept loop that serves each
//! connection in a task of its own.

use std::convert::Infallible;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// Answers every request on `listener` with `respond`, for ever. `server` names the server in log lines.
pub(crate) async fn serve<R, F>(listener: &TcpListener, server: &'static str, read_timeout: Duration, respond: R)
where
    R: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(error) => {
                tracing::warn!(%error, server, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let respond = respond.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            // A client that trickles its headers would otherwise hold its connection for ever.
            if let Err(error) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(read_timeout)
                .serve_connection(TokioIo::new(socket), service)
                .await
            {
                tracing::debug!(%error, server, "connection ended with an error");
            }
        });
    }
}
