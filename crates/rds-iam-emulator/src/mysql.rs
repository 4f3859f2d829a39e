//! The MySQL/MariaDB front end: the upstream's own greeting with TLS added, a switch to `mysql_clear_password` (as
//! RDS asks of users identified with `AWSAuthenticationPlugin`), token verification, and only then a session as the
//! same user on the upstream server, relayed both ways.

mod relay;
mod wire;

use std::net::SocketAddr;

use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use url::Url;

use crate::cluster::Placement;
use crate::state::{Relay, Session, Shared, Verdict};
use wire::{CLEAR_PASSWORD, Greeting, HandshakeResponse, Packet};

pub(crate) use relay::relay_reader;

/// `ER_ACCESS_DENIED_ERROR`, the code RDS answers a refused token with.
const ACCESS_DENIED: u16 = 1045;
/// `ER_UNKNOWN_ERROR`, for failures that are not the client's.
const UNKNOWN_ERROR: u16 = 1105;
/// `ER_CON_COUNT_ERROR`, with its SQLSTATE.
const TOO_MANY_CONNECTIONS: (u16, &str) = (1040, "08004");
/// The same error number with RDS Proxy's words for IAM authentications that come faster than it takes them.
const THROTTLED: (u16, &str, &str) = (1040, "HY000", "IAM authentication rate limit exceeded");
/// `ER_SERVER_SHUTDOWN`, with SQLSTATE 08S01 (communication link failure), for connections while the instance
/// restarts. A restarting MySQL has its port closed (clients report 2003 or 2013); the emulator keeps its port open
/// to count the refusal and tell the client why, in words whose SQLSTATE class 08 drivers and the AWS wrappers treat
/// as a connection failure.
const STARTING_UP: (u16, &str, &str) = (1053, "08S01", "Server shutdown in progress");
/// Makes a session's transactions read-only by default, in words MySQL and every MariaDB accept (MariaDB before 11.1
/// knows the variable only as `tx_read_only`, MySQL 8 only as `transaction_read_only`).
const READ_ONLY: &str = "SET SESSION TRANSACTION READ ONLY";
/// The client/server protocol's COM_QUERY command.
const COM_QUERY: u8 = 0x03;
const INVALID_AUTHORIZATION: &str = "28000";
const GENERAL_ERROR: &str = "HY000";

/// Where the upstream MySQL/MariaDB server is, the one password the emulator may present there, and how it greets.
#[derive(Debug)]
pub(crate) struct MySqlUpstream {
    pub(crate) address: String,
    user: String,
    password: SecretString,
    /// The upstream's greeting, read once: see [`MySqlUpstream::template`].
    template: Mutex<Option<Greeting>>,
}

impl MySqlUpstream {
    pub(crate) fn from_url(url: &Url, host: &str) -> Self {
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        Self {
            address: format!("{host}:{}", url.port().unwrap_or(3306)),
            user: decode(url.username()),
            password: url.password().map(decode).unwrap_or_default().into(),
            template: Mutex::default(),
        }
    }

    /// The URL's password is for the URL's user; every other user must have none.
    fn password_for(&self, user: &str) -> &str {
        if self.user == user {
            self.password.expose_secret()
        } else {
            ""
        }
    }

    /// The upstream's greeting, which clients are greeted with: its version and capabilities decide how a client
    /// speaks to the session it will be relayed to. It is read once, from a connection that goes no further, and not
    /// for each client: that would open an upstream connection before the client is authenticated, and every
    /// client that then went no further would count towards the upstream's `max_connect_errors` until it blocked
    /// the emulator's host. (One such connection does not: a successful log-in resets the count.) `Err` holds the
    /// ERR packet to give the client instead.
    async fn template(&self) -> Result<Greeting, Vec<u8>> {
        let mut template = self.template.lock().await;
        if let Some(greeting) = template.as_ref() {
            return Ok(greeting.clone());
        }
        let (_, _, greeting) = self.open().await?;
        *template = Some(greeting.clone());
        Ok(greeting)
    }

    /// Whether `greeting`, from a new upstream connection, still matches the template a client was greeted with
    /// in all that shapes the protocol; when it does not (the server was upgraded or reconfigured), the template is
    /// replaced for the clients that follow.
    async fn still_greets_as(&self, template: &Greeting, greeting: &Greeting) -> bool {
        let same = (&greeting.server_version, greeting.capabilities, greeting.reserved)
            == (&template.server_version, template.capabilities, template.reserved);
        if !same {
            *self.template.lock().await = Some(greeting.clone());
        }
        same
    }

    /// Connects and reads the greeting: the connection, the greeting's packet and the greeting. `Err` holds the ERR
    /// packet to give the client instead: the upstream's own refusal, or one saying it cannot be reached.
    async fn open(&self) -> Result<(TcpStream, Packet, Greeting), Vec<u8>> {
        let greeted = async {
            let mut upstream = TcpStream::connect(&self.address).await?;
            upstream.set_nodelay(true)?;
            let packet = wire::read_packet(&mut upstream).await?;
            if packet.payload.first() == Some(&0xff) {
                return Ok(Err(packet.payload));
            }
            let greeting = Greeting::parse(&packet.payload)?;
            Ok::<_, std::io::Error>(Ok((upstream, packet, greeting)))
        };
        greeted.await.unwrap_or_else(|error| {
            tracing::error!(upstream = self.address, %error, "upstream unreachable");
            Err(wire::error_packet(
                UNKNOWN_ERROR,
                GENERAL_ERROR,
                "the upstream database server is unreachable",
            ))
        })
    }
}

/// Authenticates the client and only then opens its session on the upstream, read-only when `placement` says so;
/// `None` when the connection ends here, the client having been told why.
pub(crate) async fn handshake(
    shared: &Shared,
    upstream_server: &MySqlUpstream,
    mut socket: TcpStream,
    peer: SocketAddr,
    placement: &Placement<'_>,
) -> std::io::Result<Option<Session>> {
    let template = match upstream_server.template().await {
        Ok(template) => template,
        Err(refusal) => {
            wire::write_packet(&mut socket, 0, &refusal).await?;
            return Ok(None);
        }
    };
    let ours = Greeting {
        // No connection's id: the real one is known only once the upstream session opens, and a client that sends
        // KILL QUERY with the id it was greeted with (the mariadb client's Ctrl-C) must not reach another session.
        connection_id: 0,
        nonce: wire::nonce()?,
        capabilities: (template.capabilities | wire::CLIENT_SSL)
            & !(wire::CLIENT_COMPRESS | wire::CLIENT_ZSTD_COMPRESSION),
        plugin: wire::NATIVE_PASSWORD.to_owned(),
        ..template.clone()
    };
    wire::write_packet(&mut socket, 0, &ours.encode()).await?;

    let first = wire::read_packet(&mut socket).await?;
    if !first.is_ssl_request() {
        let user = HandshakeResponse::parse(&first.payload)
            .map(|response| response.user)
            .unwrap_or_default();
        tracing::warn!(%peer, user, "refused: the client did not use TLS");
        let refusal = wire::error_packet(
            ACCESS_DENIED,
            INVALID_AUTHORIZATION,
            &format!(
                "Access denied for user '{user}'@'{}': IAM authentication requires an SSL connection; connect with \
                 ssl-mode=VERIFY_IDENTITY and the CA bundle",
                peer.ip()
            ),
        );
        wire::write_packet(&mut socket, first.next(), &refusal).await?;
        return Ok(None);
    }
    let mut client = shared.acceptor.accept(socket).await?;
    let response_packet = wire::read_packet(&mut client).await?;
    let response = HandshakeResponse::parse(&response_packet.payload)?;
    let Some((token, next)) = read_token(&mut client, &response, &response_packet, peer).await? else {
        return Ok(None);
    };
    let refusal = match shared
        .authenticate(&token, &response.user, peer, placement.auth_limit())
        .await
    {
        Verdict::Accepted => None,
        Verdict::Refused => Some(wire::error_packet(
            ACCESS_DENIED,
            INVALID_AUTHORIZATION,
            &format!(
                "Access denied for user '{}'@'{}' (using password: YES)",
                response.user,
                peer.ip()
            ),
        )),
        Verdict::Throttled => {
            let (code, sql_state, message) = THROTTLED;
            Some(wire::error_packet(code, sql_state, message))
        }
    };
    if let Some(refusal) = refusal {
        wire::write_packet(&mut client, next, &refusal).await?;
        return Ok(None);
    }

    let (mut upstream, greeting_packet, greeting) = match upstream_server.open().await {
        Ok(opened) => opened,
        Err(refusal) => {
            wire::write_packet(&mut client, next, &refusal).await?;
            return Ok(None);
        }
    };
    if !upstream_server.still_greets_as(&template, &greeting).await {
        tracing::warn!(%peer, "the upstream server's version or capabilities changed; the client must reconnect");
        let refusal = wire::error_packet(
            UNKNOWN_ERROR,
            GENERAL_ERROR,
            "the upstream database server changed its version or capabilities since this connection began; connect \
             again",
        );
        wire::write_packet(&mut client, next, &refusal).await?;
        return Ok(None);
    }
    let password = upstream_server.password_for(&response.user);
    let login = HandshakeResponse {
        capabilities: response.capabilities & !wire::CLIENT_SSL,
        auth_response: wire::scramble(&greeting.plugin, password, &greeting.nonce)?,
        plugin: Some(greeting.plugin.clone()),
        ..response
    };
    wire::write_packet(&mut upstream, greeting_packet.next(), &login.encode()).await?;
    let ok = match log_in_upstream(&mut upstream, password).await? {
        Ok(ok) => ok,
        Err(refusal) => {
            wire::write_packet(&mut client, next, &refusal).await?;
            return Ok(None);
        }
    };
    let relay = if placement.read_only() {
        if let Err(refusal) = make_read_only(&mut upstream).await? {
            wire::write_packet(&mut client, next, &refusal).await?;
            return Ok(None);
        }
        Relay::MySqlReader
    } else {
        Relay::Bytes
    };
    wire::write_packet(&mut client, next, &ok).await?;
    Ok(Some(Session {
        client,
        upstream,
        relay,
    }))
}

/// Makes the freshly opened session's transactions read-only, before the client has it. `Err` holds the ERR packet
/// to give the client instead.
async fn make_read_only(upstream: &mut TcpStream) -> std::io::Result<Result<(), Vec<u8>>> {
    wire::write_packet(upstream, 0, &[&[COM_QUERY], READ_ONLY.as_bytes()].concat()).await?;
    let answer = wire::read_packet(upstream).await?;
    if answer.payload.first() == Some(&0x00) {
        return Ok(Ok(()));
    }
    tracing::error!(
        answer = %String::from_utf8_lossy(answer.payload.get(9..).unwrap_or_default()),
        "the upstream refused `{READ_ONLY}`"
    );
    Ok(Err(wire::error_packet(
        UNKNOWN_ERROR,
        GENERAL_ERROR,
        "the emulator could not make this reader's session read-only",
    )))
}

/// Refuses a client while the instance restarts: an error in place of the greeting (see [`STARTING_UP`]).
pub(crate) async fn refuse_starting_up(mut socket: TcpStream) -> std::io::Result<()> {
    let (code, sql_state, message) = STARTING_UP;
    wire::write_packet(&mut socket, 0, &wire::error_packet(code, sql_state, message)).await
}

/// Refuses a client over the emulator's connection limit as a full MySQL server does: an error in place of the
/// greeting.
pub(crate) async fn refuse_busy(mut socket: TcpStream) -> std::io::Result<()> {
    let (code, sql_state) = TOO_MANY_CONNECTIONS;
    wire::write_packet(
        &mut socket,
        0,
        &wire::error_packet(code, sql_state, "Too many connections"),
    )
    .await
}

/// The token, in clear text: from the handshake response when the client already used `mysql_clear_password`,
/// otherwise after switching it to that plugin. `None` when the client gave up, having been told why. Also returns
/// the sequence number of the next packet to the client.
async fn read_token<S>(
    client: &mut S,
    response: &HandshakeResponse,
    response_packet: &Packet,
    peer: SocketAddr,
) -> std::io::Result<Option<(String, u8)>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if response.capabilities & wire::CLIENT_PLUGIN_AUTH == 0 {
        let refusal = wire::error_packet(
            ACCESS_DENIED,
            INVALID_AUTHORIZATION,
            "IAM authentication needs a client with pluggable authentication (mysql_clear_password)",
        );
        wire::write_packet(client, response_packet.next(), &refusal).await?;
        return Ok(None);
    }
    let (token, next) = if response.plugin.as_deref() == Some(CLEAR_PASSWORD) && !response.auth_response.is_empty() {
        (response.auth_response.clone(), response_packet.next())
    } else {
        wire::write_packet(client, response_packet.next(), &wire::auth_switch(CLEAR_PASSWORD, &[])).await?;
        match wire::read_packet(client).await {
            Ok(packet) => {
                let next = packet.next();
                (packet.payload, next)
            }
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::warn!(
                    %peer,
                    user = response.user,
                    "the client hung up when asked for mysql_clear_password: enable its cleartext plugin \
                     (mysql --enable-cleartext-plugin, LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN=1, sqlx \
                     enable_cleartext_plugin)"
                );
                return Ok(None);
            }
            Err(error) => return Err(error),
        }
    };
    let token = token.strip_suffix(&[0]).unwrap_or(&token);
    Ok(Some((String::from_utf8_lossy(token).into_owned(), next)))
}

/// Completes the upstream's authentication as the client's user: the upstream's OK packet for the client, or the
/// ERR packet to give it instead (the upstream's own, verbatim).
async fn log_in_upstream(upstream: &mut TcpStream, password: &str) -> std::io::Result<Result<Vec<u8>, Vec<u8>>> {
    loop {
        let packet = wire::read_packet(upstream).await?;
        match packet.payload.first() {
            Some(0x00) => return Ok(Ok(packet.payload)),
            Some(0xfe) => {
                let (plugin, nonce) = wire::parse_auth_switch(&packet.payload)?;
                let answer = wire::scramble(&plugin, password, &nonce)?;
                wire::write_packet(upstream, packet.next(), &answer).await?;
            }
            // caching_sha2_password's "fast authentication succeeded"; its OK follows.
            Some(0x01) if packet.payload.get(1) == Some(&3) => {}
            Some(0x01) => {
                tracing::error!("the upstream server wants caching_sha2_password full authentication");
                return Ok(Err(wire::error_packet(
                    UNKNOWN_ERROR,
                    GENERAL_ERROR,
                    "the upstream server asked the emulator for a full password exchange; give this user \
                     mysql_native_password or no password there",
                )));
            }
            _ => return Ok(Err(packet.payload)),
        }
    }
}
