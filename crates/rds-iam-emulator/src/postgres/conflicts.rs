//! Aurora DSQL's optimistic-concurrency conflicts, injected into a relayed PostgreSQL session
//! (`--occ-conflict-rate`).
//!
//! DSQL checks for conflicts when a transaction commits, and answers a losing commit with SQLSTATE OC000 after rolling
//! the transaction back. Here, a share of the commits (and of the writes run outside a transaction, which commit on
//! their own) are answered that way without reaching the upstream, so that nothing of them is applied: a client that
//! retries correctly loses and duplicates no write.
//!
//! The relay reads both directions message by message. From the client, messages are held until the end of their
//! batch (a `Sync`, or a simple `Query`), so that a batch is forwarded or answered whole. A batch is a candidate when
//! it executes a write (`INSERT`, `UPDATE`, `DELETE`, `MERGE`) outside a transaction or a `COMMIT` inside one; the
//! SQL an `Execute` runs is known by tracking `Parse` (statement name to SQL), `Bind` (portal to statement) and
//! `Close` for the session. Whether a transaction is open is what the upstream's last `ReadyForQuery` said, so a
//! candidate waits, with the client's later messages unread, until every batch before it has been answered.
//!
//! A conflicting batch is answered with ErrorResponse(OC000) and ReadyForQuery(idle), as if its first message had
//! failed, which is valid whatever the batch holds. For a `COMMIT`, the transaction is first rolled back on the
//! upstream with a `ROLLBACK` of the relay's own, whose answer the client never sees.

use std::collections::HashMap;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::wire::{self, Message};
use crate::state::ConflictInjector;

/// DSQL's words for a commit that lost a conflict.
const CONFLICT_MESSAGE: &str = "change conflicts with another transaction, please retry: (OC000)";
/// A client message larger than this is not one this relay can hold: bulk loads go through COPY, which is relayed
/// without being held.
const MAX_CLIENT_MESSAGE: usize = 1 << 30;
/// Server messages (rows) are relayed one at a time, each at most this large.
const MAX_SERVER_MESSAGE: usize = 1 << 30;

/// What an executed statement does, as far as conflicts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Write,
    Commit,
    Other,
}

/// The effect of one SQL statement, by its first keyword.
fn effect_of(statement: &str) -> Effect {
    let keyword: String = statement
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_uppercase();
    match keyword.as_str() {
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" => Effect::Write,
        "COMMIT" | "END" => Effect::Commit,
        _ => Effect::Other,
    }
}

/// The effects of a simple query, which may hold several statements. Splitting on `;` can be fooled by a quoted
/// one, which at worst makes a batch a candidate that is not, or the other way round: either way a valid answer.
fn effects_of_query(sql: &str) -> impl Iterator<Item = Effect> + '_ {
    sql.split(';').map(effect_of)
}

/// A NUL-terminated string at the start of `body`, and what follows it.
fn c_string(body: &[u8]) -> Option<(&str, &[u8])> {
    let end = body.iter().position(|&byte| byte == 0)?;
    Some((std::str::from_utf8(&body[..end]).ok()?, &body[end + 1..]))
}

/// A session's prepared statements and portals, by name, as the SQL they run.
#[derive(Debug, Default)]
struct Session {
    statements: HashMap<String, String>,
    portals: HashMap<String, String>,
}

impl Session {
    /// The effects of what `batch` executes, reading its own `Parse` and `Bind` messages before the session's.
    fn effects(&self, batch: &[Message]) -> Vec<Effect> {
        let mut statements: HashMap<&str, &str> = HashMap::new();
        let mut portals: HashMap<&str, &str> = HashMap::new();
        let mut effects = Vec::new();
        for message in batch {
            match message.tag {
                b'P' => {
                    if let Some((name, rest)) = c_string(&message.body)
                        && let Some((sql, _)) = c_string(rest)
                    {
                        statements.insert(name, sql);
                    }
                }
                b'B' => {
                    if let Some((portal, rest)) = c_string(&message.body)
                        && let Some((statement, _)) = c_string(rest)
                    {
                        let sql = statements
                            .get(statement)
                            .copied()
                            .or_else(|| self.statements.get(statement).map(String::as_str))
                            .unwrap_or("");
                        portals.insert(portal, sql);
                    }
                }
                b'E' => {
                    if let Some((portal, _)) = c_string(&message.body) {
                        let sql = portals
                            .get(portal)
                            .copied()
                            .or_else(|| self.portals.get(portal).map(String::as_str))
                            .unwrap_or("");
                        effects.push(effect_of(sql));
                    }
                }
                b'Q' => {
                    if let Some((sql, _)) = c_string(&message.body) {
                        effects.extend(effects_of_query(sql));
                    }
                }
                _ => {}
            }
        }
        effects
    }

    /// Records what a forwarded message prepares, binds or closes.
    fn apply(&mut self, message: &Message) {
        match message.tag {
            b'P' => {
                if let Some((name, rest)) = c_string(&message.body)
                    && let Some((sql, _)) = c_string(rest)
                {
                    self.statements.insert(name.to_owned(), sql.to_owned());
                }
            }
            b'B' => {
                if let Some((portal, rest)) = c_string(&message.body)
                    && let Some((statement, _)) = c_string(rest)
                {
                    let sql = self.statements.get(statement).cloned().unwrap_or_default();
                    self.portals.insert(portal.to_owned(), sql);
                }
            }
            b'C' => match message.body.split_first() {
                Some((b'S', rest)) => {
                    if let Some((name, _)) = c_string(rest) {
                        self.statements.remove(name);
                    }
                }
                Some((b'P', rest)) => {
                    if let Some((name, _)) = c_string(rest) {
                        self.portals.remove(name);
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
}

/// Messages that belong to an extended-protocol batch and are held until its `Sync`.
fn is_held(tag: u8) -> bool {
    matches!(tag, b'P' | b'B' | b'D' | b'E' | b'C')
}

/// Messages the server answers with one ReadyForQuery each.
fn ends_batch(tag: u8) -> bool {
    matches!(tag, b'S' | b'Q' | b'F')
}

/// Complete messages read off a stream into a buffer, so that waiting for the next one can be abandoned (in a
/// `select!`) without losing bytes.
#[derive(Debug, Default)]
struct Incoming {
    buffer: Vec<u8>,
}

impl Incoming {
    /// Reads more bytes; `false` at the end of the stream.
    async fn fill(&mut self, stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<bool> {
        Ok(stream.read_buf(&mut self.buffer).await? > 0)
    }

    /// The next complete message, if the buffer holds one.
    fn next(&mut self, max_length: usize) -> std::io::Result<Option<Message>> {
        let Some(header) = self.buffer.get(..5) else {
            return Ok(None);
        };
        let length = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let length = usize::try_from(length)
            .ok()
            .filter(|length| (4..=max_length).contains(length))
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "message length out of range"))?;
        if self.buffer.len() < length + 1 {
            return Ok(None);
        }
        let tag = self.buffer[0];
        let body = self.buffer[5..=length].to_vec();
        self.buffer.drain(..=length);
        Ok(Some(Message { tag, body }))
    }
}

/// The relay's state between messages.
struct Relay<'a> {
    injector: &'a ConflictInjector,
    session: Session,
    /// The client's messages since its last batch ended, not yet forwarded.
    batch: Vec<Message>,
    /// After a `Flush`, the rest of the batch goes through as it comes: part of it has been executed.
    passing_through: bool,
    /// Batches forwarded whose ReadyForQuery has not come back yet; the session's start-up counts as one.
    pending: usize,
    /// The transaction status of the last ReadyForQuery: `I` idle, `T` in a transaction, `E` in a failed one.
    status: u8,
    /// A candidate batch waiting for `pending` to reach zero.
    held: Option<Vec<Message>>,
    /// The relay's own ROLLBACK is on its way: the upstream's answers are not the client's.
    rolling_back: bool,
}

/// Relays a PostgreSQL session whose authentication is over, answering a share of its commits with a conflict, until
/// either side closes.
pub(crate) async fn relay(
    mut client: impl AsyncRead + AsyncWrite + Unpin,
    mut upstream: impl AsyncRead + AsyncWrite + Unpin,
    injector: &ConflictInjector,
) -> std::io::Result<()> {
    let mut relay = Relay {
        injector,
        session: Session::default(),
        batch: Vec::new(),
        passing_through: false,
        pending: 1,
        status: b'I',
        held: None,
        rolling_back: false,
    };
    let (mut from_client, mut from_upstream) = (Incoming::default(), Incoming::default());
    loop {
        // The client is not read while a batch waits for its answer, so that its later batches stay behind it.
        let waiting = relay.held.is_some() || relay.rolling_back;
        tokio::select! {
            more = from_client.fill(&mut client), if !waiting => {
                if !more? {
                    return upstream.shutdown().await;
                }
                while let Some(message) = from_client.next(MAX_CLIENT_MESSAGE)? {
                    if relay.on_client_message(message, &mut client, &mut upstream).await? {
                        return Ok(());
                    }
                    if relay.held.is_some() || relay.rolling_back {
                        break;
                    }
                }
            }
            more = from_upstream.fill(&mut upstream) => {
                if !more? {
                    return client.shutdown().await;
                }
                let mut out = Vec::new();
                while let Some(message) = from_upstream.next(MAX_SERVER_MESSAGE)? {
                    relay.on_upstream_message(message, &mut out);
                }
                if !out.is_empty() {
                    client.write_all(&out).await?;
                    client.flush().await?;
                }
            }
        }
        // A batch held back may have become decidable; its answer, if any, is already written.
        if relay.held.is_some() && relay.pending == 0 && !relay.rolling_back {
            let batch = relay.held.take().unwrap_or_default();
            relay.decide(batch, &mut client, &mut upstream).await?;
        }
        // Messages read past a held batch wait in `from_client` until it is settled.
        if relay.held.is_none() && !relay.rolling_back {
            while let Some(message) = from_client.next(MAX_CLIENT_MESSAGE)? {
                if relay.on_client_message(message, &mut client, &mut upstream).await? {
                    return Ok(());
                }
                if relay.held.is_some() || relay.rolling_back {
                    break;
                }
            }
        }
    }
}

impl Relay<'_> {
    /// Handles one client message; `true` when the client said goodbye.
    async fn on_client_message(
        &mut self,
        message: Message,
        client: &mut (impl AsyncWrite + Unpin),
        upstream: &mut (impl AsyncWrite + Unpin),
    ) -> std::io::Result<bool> {
        let tag = message.tag;
        if self.passing_through || (!is_held(tag) && !ends_batch(tag)) {
            // Flush, Terminate, COPY data, or the rest of a batch already partly executed: through at once, with
            // whatever was held before it, in order.
            if tag == b'S' {
                self.passing_through = false;
            }
            if tag == b'H' {
                self.passing_through = true;
            }
            self.batch.push(message);
            let batch = std::mem::take(&mut self.batch);
            self.forward(&batch, upstream).await?;
            return Ok(tag == b'X');
        }
        self.batch.push(message);
        if !ends_batch(tag) {
            return Ok(false);
        }
        let batch = std::mem::take(&mut self.batch);
        let effects = self.session.effects(&batch);
        if !effects.iter().any(|effect| *effect != Effect::Other) {
            self.forward(&batch, upstream).await?;
        } else if self.pending > 0 {
            self.held = Some(batch);
        } else {
            self.decide(batch, client, upstream).await?;
        }
        Ok(false)
    }

    /// Forwards a candidate batch, or answers it with a conflict: once every batch before it has been answered, so
    /// that `status` is the one it would run in.
    async fn decide(
        &mut self,
        batch: Vec<Message>,
        client: &mut (impl AsyncWrite + Unpin),
        upstream: &mut (impl AsyncWrite + Unpin),
    ) -> std::io::Result<()> {
        let effects = self.session.effects(&batch);
        let candidate = match self.status {
            b'I' => effects.contains(&Effect::Write),
            b'T' => effects.contains(&Effect::Commit),
            _ => false,
        };
        if !candidate || !self.injector.conflicts() {
            return self.forward(&batch, upstream).await;
        }
        if self.status == b'T' {
            tracing::debug!("injected an OC000 conflict at COMMIT; rolling the transaction back upstream");
            self.rolling_back = true;
            self.pending += 1;
            upstream.write_all(&wire::query("ROLLBACK")).await?;
            upstream.flush().await
        } else {
            tracing::debug!("injected an OC000 conflict on an autocommit write; nothing was sent upstream");
            client.write_all(&conflict_answer()).await?;
            client.flush().await
        }
    }

    /// Sends `batch` upstream and records what it prepares and binds.
    async fn forward(&mut self, batch: &[Message], upstream: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for message in batch {
            self.session.apply(message);
            if ends_batch(message.tag) {
                self.pending += 1;
            }
            bytes.extend_from_slice(&message.to_bytes());
        }
        upstream.write_all(&bytes).await?;
        upstream.flush().await
    }

    /// Handles one upstream message, adding what the client should see of it to `out`.
    fn on_upstream_message(&mut self, message: Message, out: &mut Vec<u8>) {
        if message.tag == b'Z' {
            self.pending = self.pending.saturating_sub(1);
            self.status = message.body.first().copied().unwrap_or(b'I');
            if self.rolling_back {
                // The relay's ROLLBACK is over: the client hears of its COMMIT's conflict instead.
                self.rolling_back = false;
                out.extend_from_slice(&conflict_answer());
                return;
            }
        }
        if !self.rolling_back {
            out.extend_from_slice(&message.to_bytes());
        }
    }
}

/// ErrorResponse(OC000) then ReadyForQuery(idle): a batch that failed at its first message, outside any transaction.
fn conflict_answer() -> Vec<u8> {
    let mut answer = wire::error_response("ERROR", "OC000", CONFLICT_MESSAGE);
    answer.extend_from_slice(&wire::ready_for_query(b'I'));
    answer
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A relay between a client socket and an upstream socket, both returned to the test, which plays both ends.
    async fn relayed(rate: f64) -> (TcpStream, TcpStream, std::sync::Arc<ConflictInjector>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let injector = std::sync::Arc::new(ConflictInjector::new(rate));
        let (client, relay_client) = {
            let connecting = TcpStream::connect(address);
            let (accepted, connected) = tokio::join!(listener.accept(), connecting);
            (connected.expect("client"), accepted.expect("accept").0)
        };
        let (upstream, relay_upstream) = {
            let connecting = TcpStream::connect(address);
            let (accepted, connected) = tokio::join!(listener.accept(), connecting);
            (accepted.expect("accept").0, connected.expect("upstream"))
        };
        let running = std::sync::Arc::clone(&injector);
        tokio::spawn(async move { relay(relay_client, relay_upstream, &running).await });
        (client, upstream, injector)
    }

    fn message(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        Message {
            tag,
            body: parts.concat(),
        }
        .to_bytes()
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        message(
            b'P',
            &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0", &0_i16.to_be_bytes()],
        )
    }

    fn bind(statement: &str) -> Vec<u8> {
        message(b'B', &[b"\0", statement.as_bytes(), b"\0", &[0; 6]])
    }

    fn execute() -> Vec<u8> {
        message(b'E', &[b"\0", &0_i32.to_be_bytes()])
    }

    fn sync() -> Vec<u8> {
        message(b'S', &[])
    }

    fn simple(sql: &str) -> Vec<u8> {
        wire::query(sql)
    }

    fn ready(status: u8) -> Vec<u8> {
        wire::ready_for_query(status)
    }

    fn complete(tag: &str) -> Vec<u8> {
        message(b'C', &[tag.as_bytes(), b"\0"])
    }

    async fn read(stream: &mut TcpStream) -> Message {
        tokio::time::timeout(Duration::from_secs(5), wire::read_message(stream, 1 << 20))
            .await
            .expect("a message in time")
            .expect("a message")
    }

    /// Reads a ReadyForQuery and checks the transaction status it reports.
    async fn assert_ready(stream: &mut TcpStream, status: u8) {
        assert_eq!(
            read(stream).await,
            Message {
                tag: b'Z',
                body: vec![status]
            }
        );
    }

    /// Nothing arrives on `stream` for a while.
    async fn silent(stream: &mut TcpStream) {
        let mut byte = [0_u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte))
                .await
                .is_err(),
            "unexpected bytes"
        );
    }

    /// The start-up's ReadyForQuery, which the relay waits for like any other.
    async fn started(client: &mut TcpStream, upstream: &mut TcpStream) {
        upstream.write_all(&ready(b'I')).await.expect("write");
        assert_eq!(read(client).await.tag, b'Z');
    }

    fn sqlstate(error: &Message) -> String {
        let mut fields = error.body.split(|&byte| byte == 0);
        fields
            .find_map(|field| field.strip_prefix(b"C"))
            .map(|code| String::from_utf8_lossy(code).into_owned())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn an_autocommit_write_that_conflicts_never_reaches_the_upstream() {
        let (mut client, mut upstream, injector) = relayed(1.0).await;
        started(&mut client, &mut upstream).await;

        // sqlx prepares first (Parse, Describe, Sync): that executes nothing and goes through.
        let prepare = [
            parse("s1", "INSERT INTO tasks VALUES ($1)"),
            message(b'D', &[b"Ss1\0"]),
            sync(),
        ]
        .concat();
        client.write_all(&prepare).await.expect("write");
        assert_eq!(read(&mut upstream).await.tag, b'P');
        assert_eq!(read(&mut upstream).await.tag, b'D');
        assert_eq!(read(&mut upstream).await.tag, b'S');
        upstream
            .write_all(&[message(b'1', &[]), message(b'n', &[]), ready(b'I')].concat())
            .await
            .expect("write");
        for expected in [b'1', b'n', b'Z'] {
            assert_eq!(read(&mut client).await.tag, expected);
        }

        // Then it binds and executes the prepared INSERT: answered with a conflict, and the upstream sees nothing.
        let run = [bind("s1"), execute(), message(b'C', &[b"P\0"]), sync()].concat();
        client.write_all(&run).await.expect("write");
        let error = read(&mut client).await;
        assert_eq!((error.tag, sqlstate(&error).as_str()), (b'E', "OC000"));
        assert_ready(&mut client, b'I').await;
        silent(&mut upstream).await;
        assert_eq!(injector.injected(), 1);

        // Reads are never conflicts.
        client
            .write_all(&[parse("", "SELECT 1"), bind(""), execute(), sync()].concat())
            .await
            .expect("write");
        for expected in [b'P', b'B', b'E', b'S'] {
            assert_eq!(read(&mut upstream).await.tag, expected);
        }
    }

    #[tokio::test]
    async fn a_commit_that_conflicts_is_rolled_back_upstream_and_answered_with_oc000() {
        let (mut client, mut upstream, injector) = relayed(1.0).await;
        started(&mut client, &mut upstream).await;

        client.write_all(&simple("BEGIN")).await.expect("write");
        assert_eq!(read(&mut upstream).await.body, b"BEGIN\0");
        upstream
            .write_all(&[complete("BEGIN"), ready(b'T')].concat())
            .await
            .expect("write");
        assert_eq!(read(&mut client).await.tag, b'C');
        assert_ready(&mut client, b'T').await;

        // Inside the transaction a write goes through: DSQL decides at the commit.
        client
            .write_all(&simple("UPDATE tasks SET name = 'x'"))
            .await
            .expect("write");
        assert_eq!(read(&mut upstream).await.tag, b'Q');
        upstream
            .write_all(&[complete("UPDATE 1"), ready(b'T')].concat())
            .await
            .expect("write");
        assert_eq!(read(&mut client).await.tag, b'C');
        assert_eq!(read(&mut client).await.tag, b'Z');

        client.write_all(&simple("COMMIT")).await.expect("write");
        assert_eq!(
            read(&mut upstream).await.body,
            b"ROLLBACK\0",
            "the relay's own ROLLBACK"
        );
        upstream
            .write_all(&[complete("ROLLBACK"), ready(b'I')].concat())
            .await
            .expect("write");
        let error = read(&mut client).await;
        assert_eq!((error.tag, sqlstate(&error).as_str()), (b'E', "OC000"));
        assert_ready(&mut client, b'I').await;
        assert_eq!(injector.injected(), 1);
    }

    #[tokio::test]
    async fn a_write_pipelined_behind_a_transaction_waits_for_its_status() {
        let (mut client, mut upstream, injector) = relayed(1.0).await;
        started(&mut client, &mut upstream).await;

        // BEGIN and an INSERT sent together: the INSERT is inside the transaction, which only the answer to BEGIN
        // shows, so it must wait for it and then go through.
        client
            .write_all(&[simple("BEGIN"), simple("INSERT INTO tasks VALUES (1)")].concat())
            .await
            .expect("write");
        assert_eq!(read(&mut upstream).await.body, b"BEGIN\0");
        silent(&mut upstream).await;
        upstream
            .write_all(&[complete("BEGIN"), ready(b'T')].concat())
            .await
            .expect("write");
        assert_eq!(read(&mut upstream).await.body, b"INSERT INTO tasks VALUES (1)\0");
        assert_eq!(read(&mut client).await.tag, b'C');
        assert_ready(&mut client, b'T').await;
        assert_eq!(injector.injected(), 0);
    }

    #[tokio::test]
    async fn at_rate_zero_every_write_and_commit_goes_through() {
        let (mut client, mut upstream, injector) = relayed(0.0).await;
        started(&mut client, &mut upstream).await;

        client
            .write_all(&[parse("", "DELETE FROM tasks"), bind(""), execute(), sync()].concat())
            .await
            .expect("write");
        for expected in [b'P', b'B', b'E', b'S'] {
            assert_eq!(read(&mut upstream).await.tag, expected);
        }
        upstream
            .write_all(
                &[
                    message(b'1', &[]),
                    message(b'2', &[]),
                    complete("DELETE 3"),
                    ready(b'I'),
                ]
                .concat(),
            )
            .await
            .expect("write");
        for expected in [b'1', b'2', b'C', b'Z'] {
            assert_eq!(read(&mut client).await.tag, expected);
        }
        assert_eq!(injector.injected(), 0);
    }

    #[test]
    fn statements_are_told_apart_by_their_first_keyword() {
        assert_eq!(effect_of("  insert into t values (1)"), Effect::Write);
        assert_eq!(effect_of("(DELETE FROM t)"), Effect::Write);
        assert_eq!(effect_of("commit"), Effect::Commit);
        assert_eq!(effect_of("END"), Effect::Commit);
        assert_eq!(effect_of("SELECT 'INSERT'"), Effect::Other);
        assert_eq!(effect_of("CREATE TABLE t (id int)"), Effect::Other);
        assert_eq!(
            effects_of_query("BEGIN; INSERT INTO t VALUES (1); COMMIT").collect::<Vec<_>>(),
            [Effect::Other, Effect::Write, Effect::Commit]
        );
    }
}
