//! The few PostgreSQL wire-protocol messages the emulator speaks itself, before it hands the session to the upstream
//! server: start-up, SSL negotiation, cancel requests, password exchange and errors.

use std::collections::BTreeMap;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
const PROTOCOL_3_0: i32 = 196_608;
/// Start-up packets are small; anything larger is not a PostgreSQL client.
const MAX_STARTUP_LENGTH: usize = 10_000;
/// Password messages carry a token of about 1.5 KB (more with a session token).
const MAX_PASSWORD_LENGTH: usize = 16_384;

/// The first message of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Initial {
    SslRequest,
    GssEncRequest,
    /// The raw 16 bytes, forwarded as they are.
    Cancel(Vec<u8>),
    Startup(BTreeMap<String, String>),
}

/// A message from the upstream server: its type byte and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) tag: u8,
    pub(crate) body: Vec<u8>,
}

impl Message {
    /// The whole message as it travels on the wire.
    #[must_use]
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        frame(self.tag, &self.body)
    }

    /// For an `R` message, which authentication step it is (0 = OK, 3 = cleartext, 5 = MD5, 10 = SASL).
    #[must_use]
    pub(crate) fn authentication_code(&self) -> Option<i32> {
        (self.tag == b'R' && self.body.len() >= 4)
            .then(|| i32::from_be_bytes([self.body[0], self.body[1], self.body[2], self.body[3]]))
    }
}

fn protocol_error(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.into())
}

/// Reads the untyped first message (length, code, body).
pub(crate) async fn read_initial(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Initial> {
    let length = usize::try_from(stream.read_i32().await?).map_err(|_| protocol_error("negative length"))?;
    if !(8..=MAX_STARTUP_LENGTH).contains(&length) {
        return Err(protocol_error(format!("start-up packet of {length} bytes")));
    }
    let code = stream.read_i32().await?;
    let mut body = vec![0; length - 8];
    stream.read_exact(&mut body).await?;
    match code {
        SSL_REQUEST => Ok(Initial::SslRequest),
        GSSENC_REQUEST => Ok(Initial::GssEncRequest),
        CANCEL_REQUEST => {
            let mut raw = Vec::with_capacity(length);
            raw.extend_from_slice(&i32::try_from(length).unwrap_or(16).to_be_bytes());
            raw.extend_from_slice(&code.to_be_bytes());
            raw.extend_from_slice(&body);
            Ok(Initial::Cancel(raw))
        }
        PROTOCOL_3_0 => parse_parameters(&body).map(Initial::Startup),
        other => Err(protocol_error(format!("unsupported protocol version {other}"))),
    }
}

fn parse_parameters(body: &[u8]) -> std::io::Result<BTreeMap<String, String>> {
    let mut fields = body
        .split(|&byte| byte == 0)
        .map(|field| String::from_utf8_lossy(field).into_owned());
    let mut parameters = BTreeMap::new();
    while let Some(name) = fields.next().filter(|name| !name.is_empty()) {
        let value = fields
            .next()
            .ok_or_else(|| protocol_error("parameter without a value"))?;
        parameters.insert(name, value);
    }
    Ok(parameters)
}

/// The start-up message that opens the same session on the upstream server.
#[must_use]
pub(crate) fn startup_message(parameters: &BTreeMap<String, String>) -> Vec<u8> {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (name, value) in parameters {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = i32::try_from(body.len() + 4).unwrap_or(i32::MAX).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

/// Reads one typed message.
pub(crate) async fn read_message(stream: &mut (impl AsyncRead + Unpin), max_length: usize) -> std::io::Result<Message> {
    let tag = stream.read_u8().await?;
    let length = usize::try_from(stream.read_i32().await?).map_err(|_| protocol_error("negative length"))?;
    if !(4..=max_length).contains(&length) {
        return Err(protocol_error(format!("message of {length} bytes")));
    }
    let mut body = vec![0; length - 4];
    stream.read_exact(&mut body).await?;
    Ok(Message { tag, body })
}

/// Asks for the password in clear text (inside TLS), as RDS does for IAM users, and returns what the client sent.
pub(crate) async fn request_password(stream: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> std::io::Result<String> {
    stream.write_all(&frame(b'R', &3_i32.to_be_bytes())).await?;
    stream.flush().await?;
    let message = read_message(stream, MAX_PASSWORD_LENGTH).await?;
    if message.tag != b'p' {
        return Err(protocol_error(format!(
            "expected a password message, got `{}`",
            char::from(message.tag)
        )));
    }
    let password = message.body.strip_suffix(&[0]).unwrap_or(&message.body);
    String::from_utf8(password.to_vec()).map_err(|_| protocol_error("password is not UTF-8"))
}

/// Sends a FATAL error with SQLSTATE `code`, the way the server ends a connection it refuses.
pub(crate) async fn send_fatal(
    stream: &mut (impl AsyncWrite + Unpin),
    code: &str,
    message: &str,
) -> std::io::Result<()> {
    stream.write_all(&error_response("FATAL", code, message)).await?;
    stream.flush().await
}

/// An ErrorResponse of `severity` (`ERROR`, `FATAL`) with SQLSTATE `code`.
#[must_use]
pub(crate) fn error_response(severity: &str, code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [(b'S', severity), (b'V', severity), (b'C', code), (b'M', message)] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    frame(b'E', &body)
}

/// A ReadyForQuery with transaction status `status` (`I`, `T` or `E`).
#[must_use]
pub(crate) fn ready_for_query(status: u8) -> Vec<u8> {
    frame(b'Z', &[status])
}

/// A simple Query message running `sql`.
#[must_use]
pub(crate) fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    frame(b'Q', &body)
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(body.len() + 5);
    message.push(tag);
    message.extend_from_slice(&i32::try_from(body.len() + 4).unwrap_or(i32::MAX).to_be_bytes());
    message.extend_from_slice(body);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn startup_messages_round_trip() {
        let parameters: BTreeMap<String, String> = [
            ("user", "app user+1@x"),
            ("database", "tasks"),
            ("application_name", "t"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .into();
        let bytes = startup_message(&parameters);
        let parsed = read_initial(&mut bytes.as_slice()).await.expect("parses");
        assert_eq!(parsed, Initial::Startup(parameters));
    }

    #[tokio::test]
    async fn oversized_or_unknown_start_up_packets_are_refused() {
        let huge = [100_000_i32.to_be_bytes(), PROTOCOL_3_0.to_be_bytes()].concat();
        assert!(read_initial(&mut huge.as_slice()).await.is_err());
        let unknown = [8_i32.to_be_bytes(), 12345_i32.to_be_bytes()].concat();
        assert!(read_initial(&mut unknown.as_slice()).await.is_err());
    }
}
