//! The few MySQL client/server protocol packets the emulator reads and writes itself during the connection phase:
//! the server greeting, the client's SSL request and handshake response, authentication switches, OK and ERR.

use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub(crate) const CLIENT_CONNECT_WITH_DB: u32 = 1 << 3;
pub(crate) const CLIENT_COMPRESS: u32 = 1 << 5;
pub(crate) const CLIENT_PROTOCOL_41: u32 = 1 << 9;
pub(crate) const CLIENT_SSL: u32 = 1 << 11;
pub(crate) const CLIENT_SECURE_CONNECTION: u32 = 1 << 15;
pub(crate) const CLIENT_PLUGIN_AUTH: u32 = 1 << 19;
pub(crate) const CLIENT_CONNECT_ATTRS: u32 = 1 << 20;
pub(crate) const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
pub(crate) const CLIENT_ZSTD_COMPRESSION: u32 = 1 << 26;

pub(crate) const NATIVE_PASSWORD: &str = "mysql_native_password";
pub(crate) const CLEAR_PASSWORD: &str = "mysql_clear_password";
pub(crate) const CACHING_SHA2_PASSWORD: &str = "caching_sha2_password";

/// Connection-phase packets are small: a token is about 1.5 KB, 3 KB with a session token, plus connection
/// attributes. Anything near this is not a client doing a handshake.
const MAX_HANDSHAKE_PACKET: usize = 64 * 1024;
/// An SSL request is the first 32 bytes of a handshake response, with `CLIENT_SSL` set.
const SSL_REQUEST_LENGTH: usize = 32;
/// The capabilities, maximum packet size, character set and filler that start every handshake response.
const RESPONSE_FIXED_LENGTH: usize = 32;

fn protocol_error(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.into())
}

/// One packet: its sequence number and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packet {
    pub(crate) sequence: u8,
    pub(crate) payload: Vec<u8>,
}

impl Packet {
    /// The sequence number the reply to this packet carries.
    pub(crate) fn next(&self) -> u8 {
        self.sequence.wrapping_add(1)
    }

    pub(crate) fn is_ssl_request(&self) -> bool {
        self.payload.len() == SSL_REQUEST_LENGTH && read_u32(&self.payload) & CLIENT_SSL != 0
    }
}

pub(crate) async fn read_packet(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Packet> {
    let mut header = [0; 4];
    stream.read_exact(&mut header).await?;
    let length = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if length > MAX_HANDSHAKE_PACKET {
        return Err(protocol_error(format!("handshake packet of {length} bytes")));
    }
    let mut payload = vec![0; length];
    stream.read_exact(&mut payload).await?;
    Ok(Packet {
        sequence: header[3],
        payload,
    })
}

pub(crate) async fn write_packet(
    stream: &mut (impl AsyncWrite + Unpin),
    sequence: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|length| *length < 1 << 24)
        .ok_or_else(|| protocol_error("packet too large"))?;
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.extend_from_slice(&length.to_le_bytes()[..3]);
    frame.push(sequence);
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await?;
    stream.flush().await
}

/// A server's first packet (protocol version 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Greeting {
    pub(crate) server_version: Vec<u8>,
    pub(crate) connection_id: u32,
    /// The 20 bytes of scramble the client's password hash is salted with.
    pub(crate) nonce: Vec<u8>,
    pub(crate) capabilities: u32,
    pub(crate) charset: u8,
    pub(crate) status: u16,
    /// MySQL's reserved bytes; MariaDB keeps its extended capabilities in the last four.
    pub(crate) reserved: [u8; 10],
    pub(crate) plugin: String,
}

impl Greeting {
    pub(crate) fn parse(payload: &[u8]) -> std::io::Result<Self> {
        let mut reader = Reader::new(payload);
        let version = reader.u8()?;
        if version != 10 {
            return Err(protocol_error(format!("server protocol version {version}, not 10")));
        }
        let server_version = reader.null_terminated()?.to_vec();
        let connection_id = reader.u32()?;
        let mut nonce = reader.bytes(8)?.to_vec();
        reader.bytes(1)?;
        let low = u32::from(reader.u16()?);
        let charset = reader.u8()?;
        let status = reader.u16()?;
        let capabilities = low | u32::from(reader.u16()?) << 16;
        let nonce_length = usize::from(reader.u8()?);
        let reserved = reader
            .bytes(10)?
            .try_into()
            .map_err(|_| protocol_error("short greeting"))?;
        if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let rest = reader.bytes(nonce_length.saturating_sub(8).max(13))?;
            nonce.extend_from_slice(rest.strip_suffix(&[0]).unwrap_or(rest));
        }
        let plugin = if capabilities & CLIENT_PLUGIN_AUTH == 0 {
            NATIVE_PASSWORD.to_owned()
        } else {
            String::from_utf8_lossy(reader.null_terminated_or_rest()).into_owned()
        };
        Ok(Self {
            server_version,
            connection_id,
            nonce,
            capabilities,
            charset,
            status,
            reserved,
            plugin,
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut payload = vec![10];
        payload.extend_from_slice(&self.server_version);
        payload.push(0);
        payload.extend_from_slice(&self.connection_id.to_le_bytes());
        let (first, rest) = self.nonce.split_at(self.nonce.len().min(8));
        payload.extend_from_slice(first);
        payload.push(0);
        payload.extend_from_slice(&self.capabilities.to_le_bytes()[..2]);
        payload.push(self.charset);
        payload.extend_from_slice(&self.status.to_le_bytes());
        payload.extend_from_slice(&self.capabilities.to_le_bytes()[2..]);
        payload.push(u8::try_from(self.nonce.len() + 1).unwrap_or(21));
        payload.extend_from_slice(&self.reserved);
        payload.extend_from_slice(rest);
        payload.push(0);
        payload.extend_from_slice(self.plugin.as_bytes());
        payload.push(0);
        payload
    }
}

/// A fresh 20-byte scramble for a greeting, of printable bytes as servers make them (a NUL would end it early).
pub(crate) fn nonce() -> std::io::Result<Vec<u8>> {
    let mut nonce = vec![0; 20];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut nonce)
        .map_err(|_| std::io::Error::other("no randomness for a greeting's scramble"))?;
    Ok(nonce.into_iter().map(|byte| b'!' + byte % 94).collect())
}

/// A client's handshake response (protocol 4.1), the fields the emulator needs and the rest kept as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HandshakeResponse {
    pub(crate) capabilities: u32,
    pub(crate) max_packet_size: u32,
    pub(crate) charset: u8,
    /// Filler; MariaDB clients put their extended capabilities in the last four bytes.
    pub(crate) reserved: [u8; 23],
    pub(crate) user: String,
    pub(crate) auth_response: Vec<u8>,
    pub(crate) database: Option<Vec<u8>>,
    pub(crate) plugin: Option<String>,
    /// Connection attributes, length prefix included, forwarded untouched.
    pub(crate) attributes: Vec<u8>,
}

impl HandshakeResponse {
    pub(crate) fn parse(payload: &[u8]) -> std::io::Result<Self> {
        if payload.len() < RESPONSE_FIXED_LENGTH {
            return Err(protocol_error("handshake response too short (a pre-4.1 client?)"));
        }
        let mut reader = Reader::new(payload);
        let capabilities = reader.u32()?;
        if capabilities & CLIENT_PROTOCOL_41 == 0 {
            return Err(protocol_error("the client does not speak protocol 4.1"));
        }
        let max_packet_size = reader.u32()?;
        let charset = reader.u8()?;
        let reserved = reader
            .bytes(23)?
            .try_into()
            .map_err(|_| protocol_error("short response"))?;
        let user = String::from_utf8_lossy(reader.null_terminated()?).into_owned();
        let auth_response = if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            let length = reader.length_encoded()?;
            reader.bytes(length)?.to_vec()
        } else if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let length = usize::from(reader.u8()?);
            reader.bytes(length)?.to_vec()
        } else {
            reader.null_terminated()?.to_vec()
        };
        let database = (capabilities & CLIENT_CONNECT_WITH_DB != 0 && !reader.is_empty())
            .then(|| reader.null_terminated_or_rest().to_vec());
        let plugin = (capabilities & CLIENT_PLUGIN_AUTH != 0 && !reader.is_empty())
            .then(|| String::from_utf8_lossy(reader.null_terminated_or_rest()).into_owned());
        let attributes = if capabilities & CLIENT_CONNECT_ATTRS == 0 {
            Vec::new()
        } else {
            reader.rest().to_vec()
        };
        Ok(Self {
            capabilities,
            max_packet_size,
            charset,
            reserved,
            user,
            auth_response,
            database,
            plugin,
            attributes,
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(128 + self.attributes.len());
        payload.extend_from_slice(&self.capabilities.to_le_bytes());
        payload.extend_from_slice(&self.max_packet_size.to_le_bytes());
        payload.push(self.charset);
        payload.extend_from_slice(&self.reserved);
        payload.extend_from_slice(self.user.as_bytes());
        payload.push(0);
        if self.capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            write_length_encoded(&mut payload, self.auth_response.len());
        } else {
            payload.push(u8::try_from(self.auth_response.len()).unwrap_or(u8::MAX));
        }
        payload.extend_from_slice(&self.auth_response);
        if let Some(database) = self
            .database
            .as_ref()
            .filter(|_| self.capabilities & CLIENT_CONNECT_WITH_DB != 0)
        {
            payload.extend_from_slice(database);
            payload.push(0);
        }
        if let Some(plugin) = self
            .plugin
            .as_ref()
            .filter(|_| self.capabilities & CLIENT_PLUGIN_AUTH != 0)
        {
            payload.extend_from_slice(plugin.as_bytes());
            payload.push(0);
        }
        payload.extend_from_slice(&self.attributes);
        payload
    }
}

/// An authentication switch request: the server asks the client to authenticate with another plugin.
pub(crate) fn auth_switch(plugin: &str, data: &[u8]) -> Vec<u8> {
    let mut payload = vec![0xfe];
    payload.extend_from_slice(plugin.as_bytes());
    payload.push(0);
    payload.extend_from_slice(data);
    payload
}

/// The plugin name and data of an authentication switch request (the payload after its 0xfe).
pub(crate) fn parse_auth_switch(payload: &[u8]) -> std::io::Result<(String, Vec<u8>)> {
    let mut reader = Reader::new(payload.get(1..).unwrap_or_default());
    let plugin = String::from_utf8_lossy(reader.null_terminated()?).into_owned();
    let data = reader.rest();
    Ok((plugin, data.strip_suffix(&[0]).unwrap_or(data).to_vec()))
}

/// An ERR packet, as servers end the connection phase when they refuse a client.
pub(crate) fn error_packet(code: u16, sql_state: &str, message: &str) -> Vec<u8> {
    let mut payload = vec![0xff];
    payload.extend_from_slice(&code.to_le_bytes());
    payload.push(b'#');
    payload.extend_from_slice(sql_state.as_bytes());
    payload.extend_from_slice(message.as_bytes());
    payload
}

/// What `plugin` sends for `password` salted with `nonce`; an empty password is always sent as nothing.
pub(crate) fn scramble(plugin: &str, password: &str, nonce: &[u8]) -> std::io::Result<Vec<u8>> {
    if password.is_empty() {
        return Ok(Vec::new());
    }
    match plugin {
        NATIVE_PASSWORD => {
            let hashed = Sha1::digest(password.as_bytes());
            let double_hashed = Sha1::digest(hashed);
            let salted = Sha1::new().chain_update(nonce).chain_update(double_hashed).finalize();
            Ok(hashed.iter().zip(salted).map(|(left, right)| left ^ right).collect())
        }
        CACHING_SHA2_PASSWORD => {
            let hashed = Sha256::digest(password.as_bytes());
            let double_hashed = Sha256::digest(hashed);
            let salted = Sha256::new().chain_update(double_hashed).chain_update(nonce).finalize();
            Ok(hashed.iter().zip(salted).map(|(left, right)| left ^ right).collect())
        }
        CLEAR_PASSWORD => Ok([password.as_bytes(), &[0]].concat()),
        other => Err(protocol_error(format!(
            "the upstream server asks for authentication plugin `{other}`, which the emulator does not speak"
        ))),
    }
}

fn read_u32(bytes: &[u8]) -> u32 {
    bytes
        .get(..4)
        .map_or(0, |word| u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
}

fn write_length_encoded(payload: &mut Vec<u8>, length: usize) {
    // Lengths of the few auth responses the emulator writes fit in two bytes.
    match u16::try_from(length) {
        Ok(short) if short < 0xfb => payload.push(u8::try_from(short).unwrap_or_default()),
        Ok(short) => {
            payload.push(0xfc);
            payload.extend_from_slice(&short.to_le_bytes());
        }
        Err(_) => {
            payload.push(0xfe);
            payload.extend_from_slice(&(length as u64).to_le_bytes());
        }
    }
}

/// Reads fields off a payload, failing rather than panicking when it is short.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(payload: &'a [u8]) -> Self {
        Self { rest: payload }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn bytes(&mut self, count: usize) -> std::io::Result<&'a [u8]> {
        if self.rest.len() < count {
            return Err(protocol_error("packet ends early"));
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> std::io::Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> std::io::Result<u16> {
        let bytes = self.bytes(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> std::io::Result<u32> {
        Ok(read_u32(self.bytes(4)?))
    }

    fn length_encoded(&mut self) -> std::io::Result<usize> {
        let value = match self.u8()? {
            0xfc => u64::from(self.u16()?),
            0xfd => {
                let bytes = self.bytes(3)?;
                u64::from(bytes[0]) | u64::from(bytes[1]) << 8 | u64::from(bytes[2]) << 16
            }
            0xfe => u64::from_le_bytes(self.bytes(8)?.try_into().map_err(|_| protocol_error("short length"))?),
            short => u64::from(short),
        };
        usize::try_from(value).map_err(|_| protocol_error("length out of range"))
    }

    fn null_terminated(&mut self) -> std::io::Result<&'a [u8]> {
        let end = self
            .rest
            .iter()
            .position(|&byte| byte == 0)
            .ok_or_else(|| protocol_error("string without its terminating NUL"))?;
        let value = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        Ok(value)
    }

    /// A NUL-terminated string, or the rest of the packet when the NUL is missing (some servers leave it off).
    fn null_terminated_or_rest(&mut self) -> &'a [u8] {
        self.null_terminated()
            .unwrap_or_else(|_| std::mem::take(&mut self.rest))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MariaDB 10.11 greeting, as captured from the local server.
    fn mariadb_greeting() -> Greeting {
        Greeting {
            server_version: b"5.5.5-10.11.19-MariaDB-0+deb12u1".to_vec(),
            connection_id: 42,
            nonce: b"abcdefgh123456789012".to_vec(),
            capabilities: 0xf7fe | CLIENT_PLUGIN_AUTH | CLIENT_SECURE_CONNECTION | CLIENT_CONNECT_ATTRS,
            charset: 45,
            status: 2,
            reserved: [0, 0, 0, 0, 0, 0, 0x1d, 0, 0, 0],
            plugin: NATIVE_PASSWORD.to_owned(),
        }
    }

    #[test]
    fn greetings_round_trip() {
        let greeting = mariadb_greeting();
        assert_eq!(Greeting::parse(&greeting.encode()).expect("parses"), greeting);
    }

    #[test]
    fn handshake_responses_round_trip_with_and_without_optional_fields() {
        let full = HandshakeResponse {
            capabilities: CLIENT_PROTOCOL_41
                | CLIENT_SECURE_CONNECTION
                | CLIENT_PLUGIN_AUTH
                | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
                | CLIENT_CONNECT_WITH_DB
                | CLIENT_CONNECT_ATTRS,
            max_packet_size: 1 << 24,
            charset: 45,
            reserved: [0; 23],
            user: "tasks user+1@example".to_owned(),
            auth_response: vec![7; 300],
            database: Some(b"tasks".to_vec()),
            plugin: Some(CLEAR_PASSWORD.to_owned()),
            attributes: vec![3, 1, b'a', 0],
        };
        assert_eq!(HandshakeResponse::parse(&full.encode()).expect("parses"), full);
        let minimal = HandshakeResponse {
            capabilities: CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION,
            auth_response: vec![1; 20],
            database: None,
            plugin: None,
            attributes: Vec::new(),
            ..full
        };
        assert_eq!(HandshakeResponse::parse(&minimal.encode()).expect("parses"), minimal);
    }

    #[test]
    fn truncated_packets_are_errors_not_panics() {
        let greeting = mariadb_greeting().encode();
        for length in 0..greeting.len() - 1 {
            let _ = Greeting::parse(&greeting[..length]);
        }
        let response = HandshakeResponse::parse(&[0; 40]);
        assert!(response.is_err(), "no protocol 4.1 flag");
        let mut cut = vec![0; 32];
        cut[1] = 0x02; // CLIENT_PROTOCOL_41
        assert!(HandshakeResponse::parse(&cut).is_err(), "no user name");
    }

    #[test]
    fn native_password_scramble_matches_the_server_side_check() {
        // The server stores SHA1(SHA1(password)) and checks SHA1(response XOR SHA1(nonce + stored)) == stored.
        let nonce = b"01234567890123456789";
        let response = scramble(NATIVE_PASSWORD, "secret", nonce).expect("native password");
        let stored = Sha1::digest(Sha1::digest(b"secret"));
        let salted = Sha1::new().chain_update(nonce).chain_update(stored).finalize();
        let recovered: Vec<u8> = response.iter().zip(salted).map(|(left, right)| left ^ right).collect();
        assert_eq!(Sha1::digest(recovered), stored);
        assert!(scramble(NATIVE_PASSWORD, "", nonce).expect("empty").is_empty());
        assert!(scramble("dialog", "secret", nonce).is_err());
    }
}
