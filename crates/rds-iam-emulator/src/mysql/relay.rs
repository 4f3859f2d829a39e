//! Relaying a session on a reader. The emulator makes such a session read-only with `SET SESSION TRANSACTION READ
//! ONLY`, so its writes fail with `ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION` (1792, SQLSTATE 25006); an Aurora
//! MySQL reader, whose whole server is read-only, answers `ER_OPTION_PREVENTS_STATEMENT` (1290, HY000) instead, and
//! that is what clients of Aurora must handle. So the server's packets are read one by one on their way to the
//! client, and that one error is rewritten; every other byte passes unchanged. The client's packets go to the
//! server as they are.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

use super::wire;

/// `ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION`, little-endian as in an ERR packet.
const READ_ONLY_TRANSACTION: [u8; 2] = 1792_u16.to_le_bytes();
/// What an Aurora MySQL reader answers a write with.
const AURORA_READER: (u16, &str, &str) = (
    1290,
    "HY000",
    "The MySQL server is running with the --read-only option so it cannot execute this statement",
);
/// A packet of this length is continued by the next one, which starts mid-payload.
const MAX_PACKET_PAYLOAD: usize = 0x00ff_ffff;

/// Relays a reader's session both ways until both sides have finished, as `copy_bidirectional` does.
pub(crate) async fn relay_reader<C, U>(client: C, upstream: U) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_reader, client_writer) = tokio::io::split(client);
    let (upstream_reader, mut upstream_writer) = tokio::io::split(upstream);
    let to_upstream = async {
        tokio::io::copy(&mut client_reader, &mut upstream_writer).await?;
        upstream_writer.shutdown().await
    };
    let to_client = async {
        let mut client_writer = BufWriter::new(client_writer);
        relay_server_packets(&mut BufReader::new(upstream_reader), &mut client_writer).await?;
        client_writer.shutdown().await
    };
    tokio::try_join!(to_upstream, to_client).map(drop)
}

/// Copies the server's packets to the client, rewriting read-only errors, until the server closes the connection.
async fn relay_server_packets<R, W>(server: &mut BufReader<R>, client: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut continued = false;
    loop {
        // What has arrived is passed on at once; more is read only when the client has it all.
        if server.buffer().is_empty() {
            client.flush().await?;
        }
        let mut header = [0; 4];
        match server.read_exact(&mut header).await {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return client.flush().await,
            Err(error) => return Err(error),
        }
        let length = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        let starts_a_packet = !continued;
        continued = length == MAX_PACKET_PAYLOAD;
        // An ERR packet is the only server packet whose first byte is 0xff (a row's first value cannot start so).
        if starts_a_packet && length > 0 && server.fill_buf().await?.first() == Some(&0xff) {
            let mut payload = vec![0; length];
            server.read_exact(&mut payload).await?;
            if payload.get(1..3) == Some(&READ_ONLY_TRANSACTION) {
                let (code, sql_state, message) = AURORA_READER;
                payload = wire::error_packet(code, sql_state, message);
            }
            wire::write_packet(client, header[3], &payload).await?;
            continue;
        }
        client.write_all(&header).await?;
        let mut remaining = length;
        while remaining > 0 {
            let available = server.fill_buf().await?;
            if available.is_empty() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let taken = available.len().min(remaining);
            client.write_all(&available[..taken]).await?;
            server.consume(taken);
            remaining -= taken;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(sequence: u8, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len()).expect("a small packet").to_le_bytes();
        [&length[..3], &[sequence], payload].concat()
    }

    async fn relayed(server: &[u8]) -> Vec<u8> {
        let mut client = Vec::new();
        relay_server_packets(&mut BufReader::new(server), &mut client)
            .await
            .expect("relays");
        client
    }

    #[tokio::test]
    async fn read_only_transaction_errors_become_aurora_readers_and_nothing_else_changes() {
        let ok = packet(1, &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]);
        let read_only = packet(
            1,
            &wire::error_packet(1792, "25006", "Cannot execute statement in a READ ONLY transaction"),
        );
        let other_error = packet(
            1,
            &wire::error_packet(1146, "42S02", "Table 'tasks.nope' doesn't exist"),
        );
        // A text row whose first value is NULL (0xfb), and an empty packet.
        let row = packet(3, &[0xfb, 0x01, b'x']);
        let empty = packet(4, &[]);
        let server = [ok.clone(), read_only, other_error.clone(), row.clone(), empty.clone()].concat();

        let (code, sql_state, message) = AURORA_READER;
        let aurora = packet(1, &wire::error_packet(code, sql_state, message));
        assert_eq!(relayed(&server).await, [ok, aurora, other_error, row, empty].concat());
    }

    #[tokio::test]
    async fn a_packet_continuing_a_long_one_is_not_read_as_an_error() {
        // A payload of exactly 2^24 - 1 bytes is continued by the next packet, which here starts with 0xff and the
        // read-only error's number as plain data.
        let long = [vec![0x03; 4], vec![b'x'; MAX_PACKET_PAYLOAD - 4]].concat();
        let mut header = MAX_PACKET_PAYLOAD.to_le_bytes()[..3].to_vec();
        header.push(0);
        let continuation = packet(1, &[0xff, READ_ONLY_TRANSACTION[0], READ_ONLY_TRANSACTION[1], b'#']);
        let server = [header, long, continuation].concat();

        assert_eq!(relayed(&server).await, server);
    }

    #[tokio::test]
    async fn both_directions_are_relayed_until_both_sides_finish() {
        let (client, mut client_end) = tokio::io::duplex(1024);
        let (upstream, mut server_end) = tokio::io::duplex(1024);
        let relay = tokio::spawn(relay_reader(client, upstream));

        let query = packet(0, b"\x03SELECT 1");
        client_end.write_all(&query).await.expect("sends");
        let mut received = vec![0; query.len()];
        server_end.read_exact(&mut received).await.expect("the server receives");
        assert_eq!(received, query);

        let read_only = packet(1, &wire::error_packet(1792, "25006", "read-only"));
        server_end.write_all(&read_only).await.expect("answers");
        drop(server_end);
        let mut answer = Vec::new();
        client_end.read_to_end(&mut answer).await.expect("the client receives");
        let (code, sql_state, message) = AURORA_READER;
        assert_eq!(answer, packet(1, &wire::error_packet(code, sql_state, message)));

        drop(client_end);
        relay.await.expect("the relay ends").expect("without an error");
    }
}
