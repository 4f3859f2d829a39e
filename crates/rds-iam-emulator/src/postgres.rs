//! The PostgreSQL front end: SSL negotiation, the cleartext password exchange RDS uses for IAM users, then a session
//! as the same user on the upstream server (which must trust the emulator), relayed both ways.

mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::state::{Session, Shared};
use wire::Initial;

/// SQLSTATE `invalid_password`: what RDS answers for a token it does not accept.
const INVALID_PASSWORD: &str = "28P01";
/// SQLSTATE `invalid_authorization_specification`: refused before any password was asked for.
const INVALID_AUTHORIZATION: &str = "28000";
/// SQLSTATE `too_many_connections`.
const TOO_MANY_CONNECTIONS: &str = "53300";

/// Authenticates the client and opens its session on the upstream; `None` when the connection ends here (refused,
/// or a cancel request forwarded).
pub(crate) async fn handshake(
    shared: &Shared,
    upstream: &str,
    mut socket: TcpStream,
    peer: SocketAddr,
) -> std::io::Result<Option<Session>> {
    loop {
        match wire::read_initial(&mut socket).await? {
            Initial::GssEncRequest => socket.write_all(b"N").await?,
            Initial::SslRequest => {
                socket.write_all(b"S").await?;
                let mut tls = shared.acceptor.accept(socket).await?;
                return match wire::read_initial(&mut tls).await? {
                    Initial::Startup(parameters) => authenticate(shared, upstream, tls, parameters, peer).await,
                    Initial::Cancel(request) => forward_cancel(upstream, &request).await.map(|()| None),
                    Initial::SslRequest | Initial::GssEncRequest => Ok(None),
                };
            }
            Initial::Cancel(request) => return forward_cancel(upstream, &request).await.map(|()| None),
            Initial::Startup(parameters) => {
                let user = parameters.get("user").map_or("", String::as_str);
                tracing::warn!(%peer, user, "refused: the client did not use TLS");
                wire::send_fatal(
                    &mut socket,
                    INVALID_AUTHORIZATION,
                    &format!(
                        "IAM authentication for user \"{user}\" requires an SSL connection: connect with sslmode=verify-full"
                    ),
                )
                .await?;
                return Ok(None);
            }
        }
    }
}

async fn authenticate(
    shared: &Shared,
    upstream_address: &str,
    mut client: TlsStream<TcpStream>,
    parameters: BTreeMap<String, String>,
    peer: SocketAddr,
) -> std::io::Result<Option<Session>> {
    let Some(user) = parameters.get("user").cloned() else {
        wire::send_fatal(&mut client, INVALID_AUTHORIZATION, "no PostgreSQL user name specified").await?;
        return Ok(None);
    };
    let token = wire::request_password(&mut client).await?;
    if !shared.authenticate(&token, &user, peer).await {
        wire::send_fatal(
            &mut client,
            INVALID_PASSWORD,
            &format!("PAM authentication failed for user \"{user}\""),
        )
        .await?;
        return Ok(None);
    }

    let mut upstream = match TcpStream::connect(upstream_address).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::error!(upstream = upstream_address, %error, "upstream unreachable");
            wire::send_fatal(&mut client, "08006", "the upstream database server is unreachable").await?;
            return Ok(None);
        }
    };
    upstream.set_nodelay(true)?;
    upstream.write_all(&wire::startup_message(&parameters)).await?;
    loop {
        let message = wire::read_message(&mut upstream, 1 << 20).await?;
        match message.authentication_code() {
            Some(0) => {
                client.write_all(&message.to_bytes()).await?;
                return Ok(Some(Session { client, upstream }));
            }
            Some(code) => {
                tracing::error!(
                    user,
                    code,
                    "the upstream server asks for a password; give the emulator trust auth"
                );
                wire::send_fatal(
                    &mut client,
                    INVALID_AUTHORIZATION,
                    "the upstream server asked the emulator for a password; configure trust authentication for it",
                )
                .await?;
                return Ok(None);
            }
            // An error from upstream (unknown role or database, ...) is the client's to read, verbatim.
            None => {
                client.write_all(&message.to_bytes()).await?;
                if message.tag == b'E' {
                    client.flush().await?;
                    return Ok(None);
                }
            }
        }
    }
}

/// Refuses a client over the emulator's connection limit in PostgreSQL's words, before TLS, once it has sent its
/// first message: closing with that message unread would reset the connection under the answer.
pub(crate) async fn refuse_busy(mut socket: TcpStream) -> std::io::Result<()> {
    wire::read_initial(&mut socket).await?;
    wire::send_fatal(&mut socket, TOO_MANY_CONNECTIONS, "sorry, too many clients already").await
}

/// Cancel requests carry the upstream's own process id and key (the client learnt them from the relayed
/// BackendKeyData), so they go to the upstream unchanged.
async fn forward_cancel(upstream_address: &str, request: &[u8]) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(upstream_address).await?;
    upstream.write_all(request).await?;
    upstream.shutdown().await
}
