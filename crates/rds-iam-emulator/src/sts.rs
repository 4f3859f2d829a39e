//! An STS pass-through. RDS accepts tokens signed with temporary credentials that AWS STS issued, because both are
//! AWS. An STS emulator (moto, LocalStack) cannot be asked for a secret it handed out, so the emulator stands between
//! the client and that STS instead: it forwards every request unchanged, and learns the credentials in each answer
//! before the client sees them. Any STS that speaks the AWS Query protocol works.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use url::Url;

use crate::sigv4::Verifier;

/// Where the pass-through listens and which STS it forwards to.
#[derive(Debug, Clone)]
pub struct StsPassThrough {
    pub listen: SocketAddr,
    /// The STS (or whole AWS emulator) to forward to, e.g. `http://127.0.0.1:4566`.
    pub upstream: Url,
}

/// A set of temporary credentials the emulator learned from an STS answer, and what was asked for, without the
/// secret or the session token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    pub access_key_id: String,
    /// The STS action, e.g. `AssumeRole` or `AssumeRoleWithWebIdentity`.
    pub action: String,
    pub role_arn: Option<String>,
    pub role_session_name: Option<String>,
    pub external_id: Option<String>,
}

/// Every set of credentials learned so far, oldest first; readable while the emulator runs.
#[derive(Debug, Default)]
pub struct IssuedLog(Mutex<Vec<IssuedCredentials>>);

impl IssuedLog {
    #[must_use]
    pub fn list(&self) -> Vec<IssuedCredentials> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn record(&self, issued: IssuedCredentials) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(issued);
    }
}

/// Headers that describe one hop of the connection, not the message, and so are not forwarded.
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::HOST,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
];

/// A bound pass-through, ready to serve.
#[derive(Debug)]
pub(crate) struct StsTap {
    listener: TcpListener,
    local_addr: SocketAddr,
    upstream: Url,
    client: reqwest::Client,
    verifier: Verifier,
    issued: Arc<IssuedLog>,
}

impl StsTap {
    pub(crate) async fn bind(options: StsPassThrough, verifier: Verifier) -> std::io::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(options.listen).await?;
        Ok(Self {
            local_addr: listener.local_addr()?,
            listener,
            upstream: options.upstream,
            client,
            verifier,
            issued: Arc::default(),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(crate) fn issued(&self) -> Arc<IssuedLog> {
        Arc::clone(&self.issued)
    }

    pub(crate) async fn run(self) {
        tracing::info!(listen = %self.local_addr, upstream = %self.upstream, "STS pass-through ready");
        let tap = Arc::new(self);
        loop {
            let socket = match tap.listener.accept().await {
                Ok((socket, _)) => socket,
                Err(error) => {
                    tracing::warn!(%error, "STS pass-through: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let tap = Arc::clone(&tap);
            tokio::spawn(async move {
                let service = service_fn(|request| {
                    let tap = Arc::clone(&tap);
                    async move { Ok::<_, Infallible>(tap.forward(request).await) }
                });
                if let Err(error) = http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await
                {
                    tracing::debug!(%error, "STS pass-through connection ended with an error");
                }
            });
        }
    }

    async fn forward(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        match self.try_forward(request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(upstream = %self.upstream, %error, "STS pass-through cannot reach its upstream");
                let mut response = Response::new(Full::new(Bytes::from(format!(
                    "the RDS IAM emulator's STS pass-through cannot reach {}: {error}",
                    self.upstream
                ))));
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                response
            }
        }
    }

    async fn try_forward(&self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, ForwardError> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map_err(ForwardError::Request)?.to_bytes();
        let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
        let url = self.upstream.join(path).map_err(ForwardError::Url)?;
        let answer = self
            .client
            .request(parts.method, url)
            .headers(end_to_end(parts.headers))
            .body(body.clone())
            .send()
            .await?;
        let status = answer.status();
        let headers = end_to_end(answer.headers().clone());
        let answer_body = answer.bytes().await?;
        if status.is_success() {
            self.learn(&body, &answer_body);
        }
        let mut response = Response::new(Full::new(answer_body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// Learns the credentials in a successful STS answer, if it carries any.
    fn learn(&self, request: &[u8], answer: &[u8]) {
        let Some(credentials) = std::str::from_utf8(answer)
            .ok()
            .and_then(|xml| element(xml, "Credentials"))
        else {
            return;
        };
        let (Some(access_key_id), Some(secret), Some(session_token)) = (
            element(credentials, "AccessKeyId"),
            element(credentials, "SecretAccessKey"),
            element(credentials, "SessionToken"),
        ) else {
            tracing::warn!("STS pass-through: an answer's Credentials lack a key id, secret or session token");
            return;
        };
        let parameters: Vec<_> = url::form_urlencoded::parse(request).collect();
        let parameter = |name: &str| {
            parameters
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone().into_owned())
        };
        let issued = IssuedCredentials {
            access_key_id: unescape(access_key_id),
            action: parameter("Action").unwrap_or_default(),
            role_arn: parameter("RoleArn"),
            role_session_name: parameter("RoleSessionName"),
            external_id: parameter("ExternalId"),
        };
        self.verifier.learn(
            issued.access_key_id.clone(),
            unescape(secret),
            Some(unescape(session_token)),
        );
        tracing::info!(
            access_key_id = issued.access_key_id,
            action = issued.action,
            role_arn = issued.role_arn,
            "learned temporary credentials from STS"
        );
        self.issued.record(issued);
    }
}

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("reading the request: {0}")]
    Request(hyper::Error),
    #[error("the request path: {0}")]
    Url(url::ParseError),
    #[error(transparent)]
    Upstream(#[from] reqwest::Error),
}

fn end_to_end(mut headers: HeaderMap<HeaderValue>) -> HeaderMap<HeaderValue> {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers
}

/// The text of the first `<name>` element in `xml`. STS answers are flat and unattributed where credentials are
/// concerned, which is all this needs to read.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let length = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + length].trim())
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{StsPassThrough, StsTap, element, unescape};
    use crate::credentials::CredentialStore;
    use crate::sigv4::Verifier;

    const ANSWER: &str = "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>\
        <Credentials>\n  <SessionToken>FQoG+ZXIv/YXdz=</SessionToken>\n  <SecretAccessKey>s3cr&amp;t</SecretAccessKey>\n\
        <AccessKeyId>ASIAEXAMPLE</AccessKeyId></Credentials><AssumedRoleUser><Arn>arn</Arn></AssumedRoleUser>\
        </AssumeRoleResult></AssumeRoleResponse>";

    #[test]
    fn credentials_are_read_from_an_sts_answer_in_any_order() {
        let credentials = element(ANSWER, "Credentials").expect("credentials");
        assert_eq!(element(credentials, "AccessKeyId"), Some("ASIAEXAMPLE"));
        assert_eq!(element(credentials, "SessionToken"), Some("FQoG+ZXIv/YXdz="));
        assert_eq!(
            element(credentials, "SecretAccessKey").map(unescape).as_deref(),
            Some("s3cr&t")
        );
    }

    #[test]
    fn an_answer_without_credentials_or_with_a_truncated_one_yields_nothing() {
        assert_eq!(element("<GetCallerIdentityResponse/>", "Credentials"), None);
        assert_eq!(element("<Credentials><AccessKeyId>ASIA", "Credentials"), None);
        assert_eq!(element("", "AccessKeyId"), None);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_bad_gateway_that_names_it() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let upstream = format!("http://{}", closed.local_addr().expect("an address"));
        drop(closed);
        let verifier = Verifier::new(
            CredentialStore::default(),
            "us-east-1",
            "localhost:5432",
            Duration::from_secs(900),
        );
        let options = StsPassThrough {
            listen: "127.0.0.1:0".parse().expect("an address"),
            upstream: upstream.parse().expect("a URL"),
        };
        let tap = StsTap::bind(options, verifier).await.expect("binds");
        let address = tap.local_addr();
        tokio::spawn(tap.run());

        let response = reqwest::Client::new()
            .post(format!("http://{address}/"))
            .body("Action=AssumeRole&Version=2011-06-15")
            .send()
            .await
            .expect("answered");

        assert_eq!(response.status(), 502);
        let text = response.text().await.expect("a body");
        assert!(text.contains(&upstream), "{text}");
    }
}
