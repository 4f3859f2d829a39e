//! TLS done by the pool itself, for the two checks sqlx's own TLS cannot make:
//!
//! - through a tunnel, the certificate must be checked against the name of the endpoint the tunnel leads to (the
//!   host tokens are signed for), while sqlx can only check it against the host it connects to, `127.0.0.1`;
//! - with a CA bundle (RDS's `global-bundle.pem`), only that bundle may be trusted, while sqlx adds it to the public
//!   web roots, so that under `verify-ca`, which checks no name, any publicly trusted certificate would pass.
//!
//! sqlx then connects in clear to a Unix socket in a directory only this process's user can enter, and each
//! connection is relayed to the server over TLS verified as above. The database protocols negotiate TLS inside the
//! connection, so the relay makes that exchange itself: PostgreSQL's `SSLRequest`, or MySQL's, which comes after the
//! server's greeting and shifts the sequence numbers of the log-in that follows. After the log-in, bytes pass as
//! they are.
//!
//! A relay that cannot reach or verify the server answers the driver with the engine's own error message (SQLSTATE
//! 08001, "unable to establish a connection"), so the failure reads like one from the server, with its cause.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::error::Error;

/// The wire protocol spoken through the relay, which decides how TLS is asked for. Public only to appear in
/// [`crate::IamConnectOptions`], from a module that cannot be named outside the crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Postgres,
    MySql,
}

/// What the server's certificate is checked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// The chain, to the trusted roots, and the name: `verify-full`.
    ChainAndName(String),
    /// The chain only: `verify-ca`.
    Chain,
}

/// A running relay. Dropping it stops accepting connections and removes its socket; relayed connections go on
/// until they end.
pub(crate) struct TlsRelay {
    socket: PathBuf,
    accepting: JoinHandle<()>,
    // Removed with the relay.
    _dir: tempfile::TempDir,
}

impl fmt::Debug for TlsRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsRelay")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl TlsRelay {
    /// The socket the driver is to connect to.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Where each relayed connection goes, and how it is secured.
struct Upstream {
    protocol: Protocol,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl TlsRelay {
    /// Starts relaying, to `host:port` over TLS that makes `check` against `root_cert` (the public web roots when
    /// none is given), the connections made to the socket `socket_name` in a new private directory.
    pub(crate) fn start(
        protocol: Protocol,
        (host, port): (String, u16),
        check: Check,
        root_cert: Option<&Path>,
        socket_name: &str,
    ) -> Result<Self, Error> {
        let roots = trusted_roots(root_cert)?;
        let config = client_config(roots, &check)?;
        let name = match &check {
            Check::ChainAndName(name) => name.clone(),
            // Sent as SNI only; not checked.
            Check::Chain => host.clone(),
        };
        let server_name = ServerName::try_from(name.clone()).map_err(|_| Error::InvalidSetting {
            setting: "signing_host",
            problem: format!("`{name}` is not a host name a certificate can be checked against"),
        })?;
        // tempfile creates it readable and enterable by this user alone.
        let dir = tempfile::Builder::new()
            .prefix("rds-iam-")
            .tempdir()
            .map_err(|source| relay_error("create a private directory for its socket", source))?;
        let socket = dir.path().join(socket_name);
        let listener =
            UnixListener::bind(&socket).map_err(|source| relay_error("listen on a socket in its directory", source))?;
        let upstream = Arc::new(Upstream {
            protocol,
            host,
            port,
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
        });
        let accepting = tokio::spawn(accept(listener, upstream));
        Ok(Self {
            socket,
            accepting,
            _dir: dir,
        })
    }
}

fn relay_error(what: &str, source: io::Error) -> Error {
    Error::InvalidSetting {
        setting: "tunnel",
        problem: format!("needs a local relay for its TLS, which could not {what}: {source}"),
    }
}

/// The roots to verify against: exactly the certificates in `root_cert`, or the public web roots without one.
fn trusted_roots(root_cert: Option<&Path>) -> Result<RootCertStore, Error> {
    let Some(path) = root_cert else {
        return Ok(RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()));
    };
    let unreadable = |problem: String| Error::InvalidSetting {
        setting: "root_cert",
        problem: format!("`{}` {problem}", path.display()),
    };
    let mut roots = RootCertStore::empty();
    for certificate in
        CertificateDer::pem_file_iter(path).map_err(|error| unreadable(format!("cannot be read: {error}")))?
    {
        let certificate = certificate.map_err(|error| unreadable(format!("holds a bad PEM block: {error}")))?;
        roots
            .add(certificate)
            .map_err(|error| unreadable(format!("holds a certificate that cannot be a root: {error}")))?;
    }
    if roots.is_empty() {
        return Err(unreadable("holds no certificate".to_owned()));
    }
    Ok(roots)
}

fn client_config(roots: RootCertStore, check: &Check) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::InvalidSetting {
            setting: "tls_mode",
            problem: format!("cannot be set up: {error}"),
        })?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|error| Error::InvalidSetting {
            setting: "root_cert",
            problem: format!("cannot verify servers: {error}"),
        })?;
    Ok(match check {
        Check::ChainAndName(_) => builder.with_webpki_verifier(verifier).with_no_client_auth(),
        Check::Chain => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
            .with_no_client_auth(),
    })
}

/// `verify-ca`: the full check, except that a certificate for another name passes. The name is checked last, so a
/// name error means everything else held.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            outcome => outcome,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

async fn accept(listener: UnixListener, upstream: Arc<Upstream>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                let upstream = Arc::clone(&upstream);
                tokio::spawn(async move {
                    let outcome = match upstream.protocol {
                        Protocol::Postgres => postgres(client, &upstream).await,
                        Protocol::MySql => mysql(client, &upstream).await,
                    };
                    if let Err(error) = outcome {
                        tracing::debug!(%error, "relayed connection ended");
                    }
                });
            }
            Err(error) => {
                // Out of file descriptors, most likely: the pool's connect fails and is retried; so is this.
                tracing::warn!(%error, "the TLS relay cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How long the relay waits for the server to accept a connection, and then to finish the TLS handshake. The driver
/// gives up sooner (the pool's acquire time-out); this only ends the relay's own attempt.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// `step` of setting up the connection to the server, given up after [`SETUP_TIMEOUT`].
async fn in_time<T>(step: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(SETUP_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer")))
}

impl Upstream {
    async fn connect(&self) -> Result<TcpStream, String> {
        let stream = in_time(TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|error| format!("cannot connect to {}:{}: {error}", self.host, self.port))?;
        // As sqlx sets it on its own sockets: statements are small and must not wait for more to send.
        stream.set_nodelay(true).map_err(|error| error.to_string())?;
        Ok(stream)
    }

    async fn secure<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, String> {
        in_time(self.connector.connect(self.server_name.clone(), stream))
            .await
            .map_err(|error| format!("TLS to {}:{} failed: {error}", self.host, self.port))
    }
}

/// PostgreSQL's request for TLS: a length of 8 and the code 1234 5679.
const PG_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

async fn postgres(mut client: UnixStream, upstream: &Upstream) -> io::Result<()> {
    let mut server = match postgres_tls(upstream).await {
        Ok(server) => server,
        Err(cause) => {
            tracing::warn!(cause, "the TLS relay cannot reach the server");
            // The driver sends its start-up message first and then reads the answer.
            let mut length = [0; 4];
            client.read_exact(&mut length).await?;
            let length = usize::try_from(u32::from_be_bytes(length))
                .unwrap_or(0)
                .clamp(4, 10_000);
            client.read_exact(&mut vec![0; length - 4]).await?;
            client.write_all(&postgres_error(&cause)).await?;
            return client.shutdown().await;
        }
    };
    tokio::io::copy_bidirectional(&mut client, &mut server).await.map(drop)
}

async fn postgres_tls(upstream: &Upstream) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut server = upstream.connect().await?;
    let mut answer = [0];
    let asked = async {
        server.write_all(&PG_SSL_REQUEST).await?;
        server.read_exact(&mut answer).await
    };
    asked
        .await
        .map_err(|error| format!("cannot ask {}:{} for TLS: {error}", upstream.host, upstream.port))?;
    if answer[0] != b'S' {
        return Err(format!("{}:{} does not accept TLS", upstream.host, upstream.port));
    }
    upstream.secure(server).await
}

/// A FATAL `ErrorResponse` with SQLSTATE 08001 and `message`.
fn postgres_error(message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (kind, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "08001"), (b'M', message)] {
        fields.push(kind);
        fields.extend_from_slice(value.replace('\0', " ").as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut frame = vec![b'E'];
    frame.extend_from_slice(&u32::try_from(fields.len() + 4).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&fields);
    frame
}

/// The capability flag by which a MySQL client asks for TLS.
const CLIENT_SSL: u32 = 0x0800;

/// The relay between a MySQL client and server. The server's greeting passes as it is. The client's reply to it
/// (sequence number 1) starts with the fields of an `SSLRequest`, which is sent first, with the TLS flag, and then the
/// reply itself over TLS, as number 2, with that flag too. Until the server ends the log-in with OK or an error,
/// every packet's number is one more towards the server than the client knows it by.
async fn mysql(mut client: UnixStream, upstream: &Upstream) -> io::Result<()> {
    let mut server = match upstream.connect().await {
        Ok(server) => server,
        Err(cause) => return mysql_refuse(&mut client, 0, &cause).await,
    };
    let (_, greeting) = read_packet(&mut server).await?;
    write_packet(&mut client, 0, &greeting).await?;
    let (_, mut reply) = read_packet(&mut client).await?;
    if reply.len() < 32 {
        return mysql_refuse(&mut client, 2, "the client's handshake reply is too short").await;
    }
    let flags = u32::from_le_bytes([reply[0], reply[1], reply[2], reply[3]]) | CLIENT_SSL;
    reply[..4].copy_from_slice(&flags.to_le_bytes());
    let mut server = match mysql_tls(server, &greeting, &reply[..32], upstream).await {
        Ok(server) => server,
        Err(cause) => {
            tracing::warn!(cause, "the TLS relay cannot reach the server");
            return mysql_refuse(&mut client, 2, &cause).await;
        }
    };
    write_packet(&mut server, 2, &reply).await?;

    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let logged_in = AtomicBool::new(false);
    let up = async {
        // The client writes after each packet from the server; its first command only once it has read the log-in's
        // end, which is marked before it is passed on.
        while !logged_in.load(Ordering::Acquire) {
            let (sequence, packet) = read_packet(&mut client_read).await?;
            let sequence = if logged_in.load(Ordering::Acquire) {
                sequence
            } else {
                sequence.wrapping_add(1)
            };
            write_packet(&mut server_write, sequence, &packet).await?;
        }
        tokio::io::copy(&mut client_read, &mut server_write).await?;
        server_write.shutdown().await
    };
    let down = async {
        loop {
            let (sequence, packet) = read_packet(&mut server_read).await?;
            // OK or ERR ends the log-in; anything else (an authentication switch, more data) is part of it.
            if matches!(packet.first(), Some(0x00 | 0xff)) {
                logged_in.store(true, Ordering::Release);
                write_packet(&mut client_write, sequence.wrapping_sub(1), &packet).await?;
                break;
            }
            write_packet(&mut client_write, sequence.wrapping_sub(1), &packet).await?;
        }
        tokio::io::copy(&mut server_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    tokio::try_join!(up, down).map(drop)
}

async fn mysql_tls(
    mut server: TcpStream,
    greeting: &[u8],
    ssl_request: &[u8],
    upstream: &Upstream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    if greeting.first() == Some(&0xff) {
        return Err(format!("{}:{} refused the connection", upstream.host, upstream.port));
    }
    if greeting_flags(greeting).is_none_or(|flags| flags & CLIENT_SSL == 0) {
        return Err(format!("{}:{} does not accept TLS", upstream.host, upstream.port));
    }
    write_packet(&mut server, 1, ssl_request)
        .await
        .map_err(|error| format!("cannot ask {}:{} for TLS: {error}", upstream.host, upstream.port))?;
    upstream.secure(server).await
}

/// The lower capability flags of a protocol 10 greeting: after the version byte, the NUL-ended server version, the
/// connection id (4), the first part of the scramble (8) and a filler byte.
fn greeting_flags(greeting: &[u8]) -> Option<u32> {
    let version_end = 1 + greeting.get(1..)?.iter().position(|byte| *byte == 0)?;
    let at = version_end + 1 + 4 + 8 + 1;
    let flags = greeting.get(at..at + 2)?;
    Some(u32::from(u16::from_le_bytes([flags[0], flags[1]])))
}

/// Answers the client with a MySQL error packet numbered `sequence`: error 2026 (a TLS connection error), SQLSTATE
/// 08001.
async fn mysql_refuse(client: &mut UnixStream, sequence: u8, message: &str) -> io::Result<()> {
    let mut packet = vec![0xff];
    packet.extend_from_slice(&2026_u16.to_le_bytes());
    packet.extend_from_slice(b"#08001");
    packet.extend_from_slice(message.as_bytes());
    write_packet(client, sequence, &packet).await?;
    client.shutdown().await
}

/// One MySQL packet: its sequence number and payload (never more than one packet's worth during a log-in).
async fn read_packet<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(u8, Vec<u8>)> {
    let mut header = [0; 4];
    stream.read_exact(&mut header).await?;
    let length = usize::from(header[0]) | (usize::from(header[1]) << 8) | (usize::from(header[2]) << 16);
    let mut payload = vec![0; length];
    stream.read_exact(&mut payload).await?;
    Ok((header[3], payload))
}

async fn write_packet<S: AsyncWrite + Unpin>(stream: &mut S, sequence: u8, payload: &[u8]) -> io::Result<()> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|length| *length < 1 << 24)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a log-in packet over 16 MiB"))?;
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.extend_from_slice(&length.to_le_bytes()[..3]);
    frame.push(sequence);
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_is_trusted_alone_and_without_one_the_web_roots_are() {
        let dir = tempfile::tempdir().expect("a directory");
        let bundle = dir.path().join("bundle.pem");
        let authority = rcgen::CertificateParams::new(Vec::<String>::new()).expect("parameters");
        let key = rcgen::KeyPair::generate().expect("a key");
        let mut params = authority;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let certificate = params.self_signed(&key).expect("a CA certificate");
        std::fs::write(&bundle, certificate.pem()).expect("written");

        assert_eq!(trusted_roots(Some(&bundle)).expect("roots").len(), 1);
        assert!(trusted_roots(None).expect("roots").len() > 100);
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("written");
        let error = trusted_roots(Some(&empty)).expect_err("nothing to trust").to_string();
        assert!(
            error.contains("`root_cert`") && error.contains("holds no certificate"),
            "{error}"
        );
    }

    #[test]
    fn the_capability_flags_are_read_from_a_greeting() {
        let mut greeting = vec![10];
        greeting.extend_from_slice(b"11.8.3-MariaDB\0");
        greeting.extend_from_slice(&[1, 0, 0, 0]);
        greeting.extend_from_slice(&[7; 8]);
        greeting.push(0);
        greeting.extend_from_slice(&0xf7fe_u16.to_le_bytes());
        assert_eq!(greeting_flags(&greeting), Some(0xf7fe));
        assert_eq!(greeting_flags(&greeting[..20]), None);
    }
}
