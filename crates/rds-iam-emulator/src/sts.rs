//! An STS pass-through. RDS accepts tokens signed with temporary credentials that AWS STS issued, because both are
//! AWS. An STS emulator (moto, LocalStack) cannot be asked for a secret it handed out, so the emulator stands between
//! the client and that STS instead: it forwards every request to that STS's URL unchanged, and learns the credentials
//! in each answer before the client sees them. Any STS that speaks the AWS Query protocol works.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use tokio::net::TcpListener;
use url::Url;

use crate::credentials::TemporaryCredentials;
use crate::http;
use crate::sigv4::Verifier;
use crate::time;

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
    /// When STS said the credentials expire; tokens signed with them are refused from then on.
    pub expires_at: SystemTime,
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

/// STS requests are small: the largest, AssumeRoleWithWebIdentity, carries a JWT of a few KB and a session policy
/// of at most 2 KB.
const MAX_REQUEST_BODY: usize = 64 * 1024;

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
    /// How long a client may take to send its request's headers, and again its body.
    read_timeout: Duration,
}

impl StsTap {
    pub(crate) async fn bind(
        options: StsPassThrough,
        verifier: Verifier,
        read_timeout: Duration,
    ) -> std::io::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            // A redirect would lead away from the one upstream the pass-through may reach.
            .redirect(reqwest::redirect::Policy::none())
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
            read_timeout,
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
        let read_timeout = tap.read_timeout;
        let responder = Arc::clone(&tap);
        http::serve(&tap.listener, "STS pass-through", read_timeout, move |request| {
            let tap = Arc::clone(&responder);
            async move { tap.forward(request).await }
        })
        .await;
    }

    async fn forward(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        // STS answers at `/` only. Any other path is refused rather than joined onto the upstream URL, where a path
        // such as `//other-host/x` would name another host.
        if request.uri().path() != "/" {
            return plain(
                StatusCode::NOT_FOUND,
                "the RDS IAM emulator's STS pass-through serves only the path /".to_owned(),
            );
        }
        let (parts, body) = request.into_parts();
        let body = match tokio::time::timeout(self.read_timeout, Limited::new(body, MAX_REQUEST_BODY).collect()).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(error)) if error.is::<LengthLimitError>() => {
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("STS requests to the RDS IAM emulator are at most {MAX_REQUEST_BODY} bytes"),
                );
            }
            Ok(Err(error)) => return plain(StatusCode::BAD_REQUEST, format!("cannot read the request: {error}")),
            Err(_) => {
                return plain(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body came too slowly".to_owned(),
                );
            }
        };
        match self.try_forward(parts, body).await {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(upstream = %self.upstream, %error, "STS pass-through cannot reach its upstream");
                plain(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "the RDS IAM emulator's STS pass-through cannot reach {}: {error}",
                        self.upstream
                    ),
                )
            }
        }
    }

    async fn try_forward(&self, parts: Parts, body: Bytes) -> Result<Response<Full<Bytes>>, reqwest::Error> {
        // The configured URL itself; only the query (the Query protocol's GET form) comes from the client.
        let mut url = self.upstream.clone();
        url.set_query(parts.uri.query());
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
        let credentials = match issued_credentials(answer) {
            Ok(Some(credentials)) => credentials,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "STS pass-through: cannot read the credentials in an answer");
                return;
            }
        };
        let parameters: Vec<_> = url::form_urlencoded::parse(request).collect();
        let parameter = |name: &str| {
            parameters
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone().into_owned())
        };
        let Some(expires_at) = time::parse_extended(&credentials.expiration) else {
            tracing::warn!(
                access_key_id = credentials.access_key_id,
                expiration = credentials.expiration,
                "STS pass-through: the credentials in an answer have no readable Expiration; not learned"
            );
            return;
        };
        let issued = IssuedCredentials {
            access_key_id: credentials.access_key_id,
            action: parameter("Action").unwrap_or_default(),
            role_arn: parameter("RoleArn"),
            role_session_name: parameter("RoleSessionName"),
            external_id: parameter("ExternalId"),
            expires_at,
        };
        if !self.verifier.learn(TemporaryCredentials {
            access_key_id: issued.access_key_id.clone(),
            secret_access_key: credentials.secret_access_key,
            session_token: credentials.session_token,
            expires_at,
            role_arn: issued.role_arn.clone(),
        }) {
            tracing::warn!(
                access_key_id = issued.access_key_id,
                action = issued.action,
                "STS pass-through: an answer names a known access key with other credentials; kept the known ones"
            );
            return;
        }
        tracing::info!(
            access_key_id = issued.access_key_id,
            action = issued.action,
            role_arn = issued.role_arn,
            "learned temporary credentials from STS"
        );
        self.issued.record(issued);
    }
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
}

fn end_to_end(mut headers: HeaderMap<HeaderValue>) -> HeaderMap<HeaderValue> {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers
}

/// An STS answer in the AWS Query protocol: `<{Action}Response>` around `<{Action}Result>` and `<ResponseMetadata>`.
/// The actions that issue credentials (AssumeRole, AssumeRoleWithWebIdentity, GetSessionToken, ...) put them in the
/// result's `<Credentials>`; reading every child alike keeps the pass-through indifferent to the action's name.
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(rename = "$value", default)]
    parts: Vec<AnswerPart>,
}

#[derive(Debug, Deserialize)]
struct AnswerPart {
    #[serde(rename = "Credentials")]
    credentials: Option<Credentials>,
}

/// Temporary credentials as STS issues them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    /// ISO 8601, e.g. `2026-11-25T10:57:00.661023Z`.
    expiration: String,
}

/// The credentials a successful STS answer carries; `None` for actions that issue none (GetCallerIdentity, ...).
fn issued_credentials(answer: &[u8]) -> Result<Option<Credentials>, quick_xml::DeError> {
    let answer: Answer = quick_xml::de::from_reader(answer)?;
    Ok(answer.parts.into_iter().find_map(|part| part.credentials))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::credentials::CredentialStore;
    use crate::sigv4::fixtures::{BOTOCORE_SESSION_TOKEN, BOTOCORE_TOKEN, signed_at};
    use crate::sigv4::{MAX_TOKEN_LIFETIME, Rejection};

    /// moto's answer to AssumeRole (session token shortened).
    const MOTO_ASSUME_ROLE: &str = "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
        <AssumeRoleResult><Credentials><AccessKeyId>ASIARZPUZDIKGK7DVNHX</AccessKeyId>\
        <SecretAccessKey>Noy0gHFofRTbFvH+ETXJ+wKL5iMG/2sanxiE7iLY</SecretAccessKey>\
        <SessionToken>FQoGZXIvYXdzEBYaDbvF0W0Nq/jHNrXFOmZh61nHIfAui5AtGW082VOruw0AI5H5n2ZcgF9EAuCzS6aCbn2OQ9l8=</SessionToken>\
        <Expiration>2026-11-25T10:57:00.661023Z</Expiration></Credentials><AssumedRoleUser>\
        <AssumedRoleId>AROA3X42LBCD4F77K6EKD:tasks</AssumedRoleId><Arn>arn:aws:sts::123456789012:assumed-role/db/tasks</Arn>\
        </AssumedRoleUser><PackedPolicySize>6</PackedPolicySize></AssumeRoleResult><ResponseMetadata>\
        <RequestId>87FPGt0YlJxfFoz0pe36jrrh9nkwYmAapDYgcnvlogqKTjgeXhBg</RequestId></ResponseMetadata></AssumeRoleResponse>";

    /// moto's answer to AssumeRoleWithWebIdentity (session token shortened).
    const MOTO_WEB_IDENTITY: &str = "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
        <AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIARZPUZDIKOMT36O4D</AccessKeyId>\
        <SecretAccessKey>O4xIi7CLf3kCfZYcnrPLX9nWqTHe320q0kpjfg8A</SecretAccessKey>\
        <SessionToken>FQoGZXIvYXdzEBYaD6S92lYBAGhGTfPgHPjx2aZtp4WjWzEDKnsxpLYm0sPmPVCoIcrKODPz=</SessionToken>\
        <Expiration>2026-11-25T10:57:00.668661Z</Expiration></Credentials><AssumedRoleUser>\
        <AssumedRoleId>ARO123EXAMPLE123:tasks</AssumedRoleId><Arn>arn:aws:sts::123456789012:assumed-role/db/tasks</Arn>\
        </AssumedRoleUser><PackedPolicySize>6</PackedPolicySize></AssumeRoleWithWebIdentityResult><ResponseMetadata>\
        <RequestId>aHUYP1IGIze7T8gJj3wv1wCHGhEXB4zYqDnj5s6NH4fi8sJZnbvh</RequestId></ResponseMetadata>\
        </AssumeRoleWithWebIdentityResponse>";

    /// An AssumeRoleWithWebIdentity answer as LocalStack's serializer writes it (ElementTree, with an XML declaration
    /// and the metadata last), with a secret that needs entities.
    const LOCALSTACK_WEB_IDENTITY: &str = "<?xml version='1.0' encoding='utf-8'?>\n\
        <AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
        <AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIAQAAAAAAAGEXAMPLE</AccessKeyId>\
        <SecretAccessKey>s3cr&amp;t&lt;&gt;/+</SecretAccessKey><SessionToken>FQoGZXIvYXdzEBYaDLOCALSTACK=</SessionToken>\
        <Expiration>2026-11-25T10:57:00Z</Expiration></Credentials>\
        <SubjectFromWebIdentityToken>tasks-api</SubjectFromWebIdentityToken><AssumedRoleUser>\
        <AssumedRoleId>AROAQAAAAAAAEXAMPLE:tasks</AssumedRoleId><Arn>arn:aws:sts::000000000000:assumed-role/db/tasks</Arn>\
        </AssumedRoleUser><PackedPolicySize>6</PackedPolicySize></AssumeRoleWithWebIdentityResult>\
        <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>\
        </AssumeRoleWithWebIdentityResponse>";

    fn read(answer: &str) -> Option<(String, String, String)> {
        issued_credentials(answer.as_bytes())
            .expect("an STS answer")
            .map(|credentials| {
                (
                    credentials.access_key_id,
                    credentials.secret_access_key,
                    credentials.session_token,
                )
            })
    }

    #[test]
    fn credentials_are_read_from_the_answers_of_moto_and_localstack() {
        let (key, secret, token) = read(MOTO_ASSUME_ROLE).expect("credentials");
        assert_eq!(key, "ASIARZPUZDIKGK7DVNHX");
        assert_eq!(secret, "Noy0gHFofRTbFvH+ETXJ+wKL5iMG/2sanxiE7iLY");
        assert!(
            token.starts_with("FQoGZXIvYXdzEBYaDbvF0W0Nq/") && token.ends_with("l8="),
            "{token}"
        );

        let (key, secret, _) = read(MOTO_WEB_IDENTITY).expect("credentials");
        assert_eq!(key, "ASIARZPUZDIKOMT36O4D");
        assert_eq!(secret, "O4xIi7CLf3kCfZYcnrPLX9nWqTHe320q0kpjfg8A");

        assert_eq!(
            read(LOCALSTACK_WEB_IDENTITY),
            Some((
                "ASIAQAAAAAAAGEXAMPLE".to_owned(),
                "s3cr&t<>/+".to_owned(),
                "FQoGZXIvYXdzEBYaDLOCALSTACK=".to_owned()
            ))
        );
    }

    #[test]
    fn credentials_are_read_in_any_order_with_any_layout() {
        let answer = "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>\
            <Credentials>\n  <SessionToken>FQoG+ZXIv/YXdz=</SessionToken>\n  <SecretAccessKey>s3cr&amp;t&#43;</SecretAccessKey>\n\
            <AccessKeyId>ASIAEXAMPLE</AccessKeyId><Expiration>2026-11-25T10:57:00Z</Expiration></Credentials><AssumedRoleUser><Arn>arn</Arn></AssumedRoleUser>\
            </AssumeRoleResult></AssumeRoleResponse>";
        assert_eq!(
            read(answer),
            Some((
                "ASIAEXAMPLE".to_owned(),
                "s3cr&t+".to_owned(),
                "FQoG+ZXIv/YXdz=".to_owned()
            ))
        );
    }

    #[test]
    fn an_answer_without_credentials_yields_nothing_and_a_broken_one_is_an_error() {
        assert_eq!(read("<GetCallerIdentityResponse/>"), None);
        assert_eq!(
            read(
                "<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/x</Arn>\
                 </GetCallerIdentityResult></GetCallerIdentityResponse>"
            ),
            None
        );
        for broken in [
            "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIA",
            "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIA</AccessKeyId></Credentials>\
             </AssumeRoleResult></AssumeRoleResponse>",
            "",
        ] {
            assert!(issued_credentials(broken.as_bytes()).is_err(), "{broken}");
        }
    }

    /// An HTTP server standing in for an STS (or for a host the pass-through must never reach): it answers every
    /// request with one body and records each request's method and target.
    struct FakeServer {
        address: SocketAddr,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl FakeServer {
        async fn start(answer: &'static str) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
            let address = listener.local_addr().expect("an address");
            let requests = Arc::new(Mutex::new(Vec::new()));
            let seen = Arc::clone(&requests);
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let seen = Arc::clone(&seen);
                    let service = service_fn(move |request: Request<Incoming>| {
                        seen.lock()
                            .expect("not poisoned")
                            .push(format!("{} {}", request.method(), request.uri()));
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer)))) }
                    });
                    tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(socket), service));
                }
            });
            Self { address, requests }
        }

        fn url(&self) -> String {
            format!("http://{}/", self.address)
        }

        fn requests(&self) -> Vec<String> {
            self.requests.lock().expect("not poisoned").clone()
        }
    }

    /// A verifier that knows no key.
    fn verifier() -> Verifier {
        Verifier::new(
            CredentialStore::default(),
            "us-east-1",
            "localhost:5432",
            MAX_TOKEN_LIFETIME,
        )
    }

    /// The pass-throughs' read timeout in these tests.
    const READ_TIMEOUT: Duration = Duration::from_millis(500);

    /// Runs a pass-through to `upstream`; returns its URL and what it learns.
    async fn start_tap(upstream: &str, verifier: Verifier) -> (String, Arc<IssuedLog>) {
        let options = StsPassThrough {
            listen: "127.0.0.1:0".parse().expect("an address"),
            upstream: upstream.parse().expect("a URL"),
        };
        let tap = StsTap::bind(options, verifier, READ_TIMEOUT).await.expect("binds");
        let (url, issued) = (format!("http://{}", tap.local_addr()), tap.issued());
        tokio::spawn(tap.run());
        (url, issued)
    }

    /// Asks the pass-through at `tap` to assume a role, as the SDK does.
    async fn assume_role(tap: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{tap}/"))
            .body("Action=AssumeRole&Version=2011-06-15")
            .send()
            .await
            .expect("answered")
    }

    #[tokio::test]
    async fn requests_reach_only_the_configured_upstream_at_the_root_path() {
        let upstream = FakeServer::start("<GetCallerIdentityResponse/>").await;
        let elsewhere = FakeServer::start("<elsewhere/>").await;
        let (tap, _) = start_tap(&upstream.url(), verifier()).await;
        let client = reqwest::Client::new();

        // Joined onto the upstream URL, this path would be a URL of its own, on another host.
        let response = client
            .post(format!("{tap}//{}/x", elsewhere.address))
            .body("Action=GetCallerIdentity&Version=2011-06-15")
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 404);
        let response = client
            .get(format!("{tap}/?Action=GetCallerIdentity&Version=2011-06-15"))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 200);

        assert_eq!(elsewhere.requests(), Vec::<String>::new());
        assert_eq!(
            upstream.requests(),
            ["GET /?Action=GetCallerIdentity&Version=2011-06-15"]
        );
    }

    #[tokio::test]
    async fn an_answer_cannot_replace_the_secret_of_a_known_key() {
        const ATTACKER_ANSWER: &str = "<AssumeRoleResponse><AssumeRoleResult><Credentials>\
            <AccessKeyId>akid</AccessKeyId><SecretAccessKey>attacker</SecretAccessKey><SessionToken>t</SessionToken>\
            <Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>";
        let upstream = FakeServer::start(ATTACKER_ANSWER).await;
        let mut credentials = CredentialStore::default();
        credentials.insert("akid".to_owned(), "secret".to_owned(), None);
        let verifier = Verifier::new(
            credentials,
            "us-east-1",
            "prod-instance.us-east-1.rds.amazonaws.com:3306",
            MAX_TOKEN_LIFETIME,
        );
        let (tap, issued) = start_tap(&upstream.url(), verifier.clone()).await;

        let answer = assume_role(&tap).await;

        assert_eq!(
            answer.text().await.expect("a body"),
            ATTACKER_ANSWER,
            "relayed unchanged"
        );
        assert_eq!(issued.list(), []);
        assert_eq!(verifier.verify(BOTOCORE_TOKEN, "peccy", signed_at()).map(drop), Ok(()));
    }

    #[tokio::test]
    async fn learned_credentials_expire_when_sts_said_they_do() {
        // The credentials of BOTOCORE_SESSION_TOKEN, expiring five minutes after it was signed.
        const ANSWER: &str = "<AssumeRoleResponse><AssumeRoleResult><Credentials>\
            <AccessKeyId>AKIDEXAMPLE</AccessKeyId><SecretAccessKey>wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY</SecretAccessKey>\
            <SessionToken>FwoGZXIvYXdzEJr//////////wEaDFAKE/TOKEN+with/slashes=</SessionToken>\
            <Expiration>2024-08-26T22:05:00.000Z</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>";
        let upstream = FakeServer::start(ANSWER).await;
        let verifier = Verifier::new(
            CredentialStore::default(),
            "eu-west-3",
            "tasks.cluster-abc.eu-west-3.rds.amazonaws.com:5432",
            MAX_TOKEN_LIFETIME,
        );
        let (tap, issued) = start_tap(&upstream.url(), verifier.clone()).await;

        assume_role(&tap).await;

        let expiration = signed_at() + Duration::from_secs(300);
        assert_eq!(issued.list()[0].expires_at, expiration);
        let at = |instant| verifier.verify(BOTOCORE_SESSION_TOKEN, "db user+x@corp", instant);
        assert_eq!(
            at(expiration - Duration::from_secs(1)).map(|token| token.expires_at),
            Ok(expiration)
        );
        assert_eq!(
            at(expiration),
            Err(Rejection::CredentialsExpired("AKIDEXAMPLE".to_owned()))
        );
    }

    #[tokio::test]
    async fn oversized_request_bodies_are_refused_before_reaching_the_upstream() {
        let upstream = FakeServer::start("<AssumeRoleResponse/>").await;
        let (tap, _) = start_tap(&upstream.url(), verifier()).await;
        let client = reqwest::Client::new();
        let policy = "x".repeat(MAX_REQUEST_BODY);

        let response = client
            .post(format!("{tap}/"))
            .body(format!("Action=AssumeRole&Policy={policy}"))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 413);
        // Without a length announced up front, the limit applies as the body streams in.
        let chunks = futures_util::stream::iter(
            [b"Action=AssumeRole&Policy=".to_vec(), policy.into_bytes()].map(Ok::<_, std::io::Error>),
        );
        let response = client
            .post(format!("{tap}/"))
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 413);

        assert_eq!(upstream.requests(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn clients_that_send_their_request_too_slowly_are_cut_off() {
        let upstream = FakeServer::start("<AssumeRoleResponse/>").await;
        let (tap, _) = start_tap(&upstream.url(), verifier()).await;
        let address = tap.trim_start_matches("http://");
        let patience = READ_TIMEOUT * 4;

        // Headers that never end, and a body that never comes.
        for sent in [
            "POST / HTTP/1.1\r\nHost: sts\r\n".to_owned(),
            "POST / HTTP/1.1\r\nHost: sts\r\nContent-Length: 100\r\n\r\nAction=".to_owned(),
        ] {
            let mut socket = tokio::net::TcpStream::connect(address).await.expect("connects");
            socket.write_all(sent.as_bytes()).await.expect("sends");
            let mut answer = String::new();
            tokio::time::timeout(patience, socket.read_to_string(&mut answer))
                .await
                .expect("the pass-through gives up within its read timeout")
                .expect("reads");
            assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
        }
        assert_eq!(upstream.requests(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_bad_gateway_that_names_it() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let upstream = format!("http://{}", closed.local_addr().expect("an address"));
        drop(closed);
        let (tap, _) = start_tap(&upstream, verifier()).await;

        let response = assume_role(&tap).await;

        assert_eq!(response.status(), 502);
        let text = response.text().await.expect("a body");
        assert!(text.contains(&upstream), "{text}");
    }
}
