//! The PostgreSQL front end: SSL negotiation, the cleartext password exchange RDS uses for IAM users, then a session
//! as the same user on the upstream server (which must trust the emulator), relayed both ways.

mod conflicts;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::cluster::Placement;
use crate::state::{Relay, Session, Shared, Verdict};
use wire::Initial;

/// SQLSTATE `invalid_password`: what RDS answers for a token it does not accept.
const INVALID_PASSWORD: &str = "28P01";
/// SQLSTATE `invalid_authorization_specification`: refused before any password was asked for.
const INVALID_AUTHORIZATION: &str = "28000";
/// SQLSTATE `too_many_connections`; also the emulator's choice for IAM authentication throttling, for which AWS
/// documents a message but no SQLSTATE: class 53 (insufficient resources) says "back off", where class 28 would say
/// "your token is wrong".
const TOO_MANY_CONNECTIONS: &str = "53300";
/// SQLSTATE `cannot_connect_now`, which a starting server answers with.
const CANNOT_CONNECT_NOW: &str = "57P03";
/// RDS Proxy's words when IAM authentications come faster than it takes them.
const THROTTLED: &str = "The IAM authentication failed because of too many competing requests.";

/// How a connection's opening messages ended.
enum Negotiated {
    /// A start-up message inside TLS, with its parameters.
    Startup(Box<TlsStream<TcpStream>>, BTreeMap<String, String>),
    /// A cancel request, in clear or inside TLS.
    Cancel(Vec<u8>),
    /// Nothing to do: the client went no further, or was refused for not using TLS.
    Over,
}

/// Reads the client's opening messages, upgrading to TLS when it asks, as a PostgreSQL server does before it decides
/// anything about the connection.
async fn negotiate(shared: &Shared, mut socket: TcpStream, peer: SocketAddr) -> std::io::Result<Negotiated> {
    loop {
        match wire::read_initial(&mut socket).await? {
            Initial::GssEncRequest => socket.write_all(b"N").await?,
            Initial::SslRequest => {
                socket.write_all(b"S").await?;
                let mut tls = shared.acceptor.accept(socket).await?;
                return Ok(match wire::read_initial(&mut tls).await? {
                    Initial::Startup(parameters) => Negotiated::Startup(Box::new(tls), parameters),
                    Initial::Cancel(request) => Negotiated::Cancel(request),
                    Initial::SslRequest | Initial::GssEncRequest => Negotiated::Over,
                });
            }
            Initial::Cancel(request) => return Ok(Negotiated::Cancel(request)),
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
                return Ok(Negotiated::Over);
            }
        }
    }
}

/// Authenticates the client and opens its session on the upstream, read-only when `placement` says so; `None` when
/// the connection ends here (refused, or a cancel request forwarded).
pub(crate) async fn handshake(
    shared: &Shared,
    upstream: &str,
    socket: TcpStream,
    peer: SocketAddr,
    placement: &Placement<'_>,
) -> std::io::Result<Option<Session>> {
    match negotiate(shared, socket, peer).await? {
        Negotiated::Startup(tls, parameters) => authenticate(shared, upstream, *tls, parameters, peer, placement).await,
        Negotiated::Cancel(request) => forward_cancel(upstream, &request).await.map(|()| None),
        Negotiated::Over => Ok(None),
    }
}

/// Refuses a client while the instance restarts, as a starting PostgreSQL does: once TLS is up and the start-up
/// message read, with FATAL 57P03. A cancel request has nothing to cancel.
pub(crate) async fn refuse_starting_up(shared: &Shared, socket: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    if let Negotiated::Startup(mut tls, _) = negotiate(shared, socket, peer).await? {
        wire::send_fatal(&mut tls, CANNOT_CONNECT_NOW, "the database system is starting up").await?;
    }
    Ok(())
}

async fn authenticate(
    shared: &Shared,
    upstream_address: &str,
    mut client: TlsStream<TcpStream>,
    mut parameters: BTreeMap<String, String>,
    peer: SocketAddr,
    placement: &Placement<'_>,
) -> std::io::Result<Option<Session>> {
    let Some(user) = parameters.get("user").cloned() else {
        wire::send_fatal(&mut client, INVALID_AUTHORIZATION, "no PostgreSQL user name specified").await?;
        return Ok(None);
    };
    let token = wire::request_password(&mut client).await?;
    let refusal = match shared.authenticate(&token, &user, peer, placement.auth_limit()).await {
        Verdict::Accepted => None,
        Verdict::Refused => Some((
            INVALID_PASSWORD,
            format!("PAM authentication failed for user \"{user}\""),
        )),
        Verdict::Throttled => Some((TOO_MANY_CONNECTIONS, THROTTLED.to_owned())),
    };
    if let Some((code, message)) = refusal {
        wire::send_fatal(&mut client, code, &message).await?;
        return Ok(None);
    }
    if placement.read_only() {
        // As on an Aurora reader, writes answer 25006 (read_only_sql_transaction). A start-up parameter rather than
        // a SET: the server applies it before the session's first statement, after any `options` the client sent,
        // and reports it to the client, as a hot standby reports itself.
        parameters.insert("default_transaction_read_only".to_owned(), "on".to_owned());
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
                // Reading every message costs more than copying bytes: only with conflicts to inject.
                let relay = match &shared.conflicts {
                    Some(injector) => Relay::PostgresConflicts(Arc::clone(injector)),
                    None => Relay::Bytes,
                };
                return Ok(Some(Session {
                    client,
                    upstream,
                    relay,
                }));
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

/// Relays an open session, answering a share of its commits with DSQL's conflict (see [`conflicts`]).
pub(crate) async fn relay_with_conflicts(
    client: TlsStream<TcpStream>,
    upstream: TcpStream,
    injector: &crate::state::ConflictInjector,
) -> std::io::Result<()> {
    conflicts::relay(client, upstream, injector).await
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
