//! The admitted session: messages pass between client and server as they are, framed
//! only to see where each ends. The client's `Terminate` is kept from the server (the
//! connection outlives the session), and the gateway counts the `ReadyForQuery` it
//! still owes the client, so it knows whether the server is idle when the client goes.

use std::sync::atomic::{AtomicI64, Ordering};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::message_header;
use super::server::ServerConn;

/// Longest statement text kept for an audit line, in bytes.
pub(super) const MAX_STATEMENT_BYTES: usize = 1024;

/// Receives each statement the client sends (a simple query's text, or an extended
/// query's `Parse`), cut to `MAX_STATEMENT_BYTES`, and whether it was cut.
pub(super) type StatementSink<'a> = &'a mut (dyn FnMut(&[u8], bool) + Send);

/// A statement being read as it passes.
#[derive(Debug)]
struct Capture {
    /// `Q` or `P`.
    tag: u8,
    text: Vec<u8>,
    truncated: bool,
}

impl Capture {
    fn take(&mut self, bytes: &[u8]) {
        let room = MAX_STATEMENT_BYTES + 64 - self.text.len().min(MAX_STATEMENT_BYTES + 64);
        self.text.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.truncated |= bytes.len() > room;
    }

    /// The statement: a `Query`'s string, or the query of a `Parse` (after the
    /// statement name), up to its NUL and at most `MAX_STATEMENT_BYTES`.
    fn finish(self, sink: &mut (dyn FnMut(&[u8], bool) + Send)) {
        let body = self.text.as_slice();
        let query = if self.tag == b'P' {
            body.iter().position(|b| *b == 0).map_or(&[][..], |nul| &body[nul + 1..])
        } else {
            body
        };
        let end = query.iter().position(|b| *b == 0).unwrap_or(query.len());
        let cut = end > MAX_STATEMENT_BYTES;
        sink(&query[..end.min(MAX_STATEMENT_BYTES)], cut || (self.truncated && end == query.len()));
    }
}

/// How a session ended, and what passed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct RelayEnd {
    /// The client left at a message boundary while the server was idle (no answer
    /// owed, nothing half-read): the server connection may be reset and reused.
    pub(super) server_idle: bool,
    /// Bytes from the client to the server.
    pub(super) bytes_in: u64,
    /// Bytes from the server to the client.
    pub(super) bytes_out: u64,
    /// Simple queries (`Q`) and executes (`E`) the client sent.
    pub(super) statements: u64,
}

/// Where a direction is in its byte stream.
#[derive(Debug, Default)]
struct Framing {
    /// Body bytes of the current message still to pass.
    remaining: usize,
    bytes: u64,
}

/// How the client's side ended.
enum ClientEnd {
    /// `Terminate`, or end of stream between two messages.
    Left,
    /// A broken stream or a broken frame.
    Broken,
}

/// Relays until either side ends.
pub(super) async fn relay<C>(client: C, server: &mut ServerConn, statements_sink: Option<StatementSink<'_>>) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    // ReadyForQuery owed to the client: one per simple query, Sync and function call.
    let owed = AtomicI64::new(0);
    let mut statements = 0u64;
    let mut up = Framing::default();
    let mut down = Framing::default();
    let mut status = server.status;
    let (client_read, client_write) = tokio::io::split(client);
    let (stream, server_buf) = server.parts();
    let (server_read, server_write) = tokio::io::split(stream);
    let client_end = {
        let to_server = client_to_server(client_read, server_write, &mut up, &owed, &mut statements, statements_sink);
        let to_client = server_to_client(server_read, client_write, server_buf, &mut down, &owed, &mut status);
        tokio::select! {
            end = to_server => end,
            () = to_client => ClientEnd::Broken,
        }
    };
    let server_idle = matches!(client_end, ClientEnd::Left)
        && up.remaining == 0
        && down.remaining == 0
        && owed.load(Ordering::Relaxed) == 0
        && server_buf.is_empty();
    server.status = status;
    RelayEnd { server_idle, bytes_in: up.bytes, bytes_out: down.bytes, statements }
}

/// Client to server, message by message; stops at `Terminate`.
async fn client_to_server<R, W>(
    mut from: R,
    mut to: W,
    framing: &mut Framing,
    owed: &AtomicI64,
    statements: &mut u64,
    mut sink: Option<StatementSink<'_>>,
) -> ClientEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut capture: Option<Capture> = None;
    loop {
        let mut pass = 0;
        let mut terminated = false;
        while pass < buf.len() {
            if framing.remaining > 0 {
                let n = framing.remaining.min(buf.len() - pass);
                if let Some(c) = capture.as_mut() {
                    c.take(&buf[pass..pass + n]);
                }
                framing.remaining -= n;
                pass += n;
                if framing.remaining == 0 {
                    finish(&mut capture, &mut sink);
                }
                continue;
            }
            let Some(header) = buf.get(pass..pass + 5).and_then(|h| <[u8; 5]>::try_from(h).ok()) else { break };
            let Ok((tag, length)) = message_header(header) else { return ClientEnd::Broken };
            match tag {
                b'X' => {
                    terminated = true;
                    break;
                }
                b'Q' => {
                    owed.fetch_add(1, Ordering::Relaxed);
                    *statements += 1;
                }
                b'S' | b'F' => {
                    owed.fetch_add(1, Ordering::Relaxed);
                }
                b'E' => *statements += 1,
                _ => {}
            }
            if sink.is_some() && matches!(tag, b'Q' | b'P') {
                capture = Some(Capture { tag, text: Vec::new(), truncated: false });
            }
            pass += 5;
            framing.remaining = length;
            if length == 0 {
                finish(&mut capture, &mut sink);
            }
        }
        if pass > 0 {
            if to.write_all(&buf[..pass]).await.is_err() || to.flush().await.is_err() {
                return ClientEnd::Broken;
            }
            framing.bytes += pass as u64;
            buf.advance(pass);
        }
        if terminated {
            return ClientEnd::Left;
        }
        match from.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() && framing.remaining == 0 => return ClientEnd::Left,
            Ok(0) | Err(_) => return ClientEnd::Broken,
            Ok(_) => {}
        }
    }
}

fn finish(capture: &mut Option<Capture>, sink: &mut Option<StatementSink<'_>>) {
    if let (Some(c), Some(sink)) = (capture.take(), sink.as_deref_mut()) {
        c.finish(sink);
    }
}

/// Server to client, message by message, noting each `ReadyForQuery`. Returns when
/// either side fails or the server closes.
async fn server_to_client<R, W>(
    mut from: R,
    mut to: W,
    buf: &mut BytesMut,
    framing: &mut Framing,
    owed: &AtomicI64,
    status: &mut u8,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let mut pass = 0;
        while pass < buf.len() {
            if framing.remaining > 0 {
                let n = framing.remaining.min(buf.len() - pass);
                framing.remaining -= n;
                pass += n;
                continue;
            }
            let Some(header) = buf.get(pass..pass + 5).and_then(|h| <[u8; 5]>::try_from(h).ok()) else { break };
            let Ok((tag, length)) = message_header(header) else { return };
            if tag == b'Z' {
                // The status byte is needed before the message passes.
                let Some(&s) = buf.get(pass + 5) else { break };
                *status = s;
                owed.fetch_sub(1, Ordering::Relaxed);
            }
            pass += 5;
            framing.remaining = length;
        }
        if pass > 0 {
            if to.write_all(&buf[..pass]).await.is_err() || to.flush().await.is_err() {
                return;
            }
            framing.bytes += pass as u64;
            buf.advance(pass);
        }
        match from.read_buf(buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(tag: u8, pieces: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut c = Capture { tag, text: Vec::new(), truncated: false };
        for p in pieces {
            c.take(p);
        }
        let mut got = (Vec::new(), false);
        c.finish(&mut |text: &[u8], cut| got = (text.to_vec(), cut));
        got
    }

    #[test]
    fn a_statement_is_read_across_pieces_and_cut_at_its_limit() {
        assert_eq!(captured(b'Q', &[b"SELECT ", b"1\0"]), (b"SELECT 1".to_vec(), false));
        // Parse: statement name, query, parameter types.
        assert_eq!(captured(b'P', &[b"s1\0SELECT $1\0\0\x01", b"\0\0\0\x17"]), (b"SELECT $1".to_vec(), false));
        let long = vec![b'x'; 5000];
        let (text, cut) = captured(b'Q', &[&long[..3000], &long[3000..], b"\0"]);
        assert_eq!((text.len(), cut), (MAX_STATEMENT_BYTES, true));
        let (text, cut) = captured(b'Q', &[&vec![b'y'; MAX_STATEMENT_BYTES], b"\0"]);
        assert_eq!((text.len(), cut), (MAX_STATEMENT_BYTES, false));
    }
}
