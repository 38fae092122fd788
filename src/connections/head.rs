//! Reading an HTTP/1 request head before pingora parses it: the wait for the next
//! request (bounded by the keep-alive timeout), then a deadline for the rest of the head
//! and a cap on its size. A client that trickles its head (slowloris) gets 408, one
//! whose head never ends gets 431, and both are closed before pingora holds any request
//! state for them. A head that is complete is handed over as it is, so in the common
//! case (the whole head in the first read) this costs one scan for the blank line.
//!
//! What pingora's parser then refuses (a malformed head, a `CONNECT`) never reaches the
//! proxy's phases; `Limited` notices that no request began and records it, so every
//! refusal is audited and counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::headers::RequestId;
use crate::reject::Reject;

/// The buffer a request head is read into: pingora's own initial size.
pub(super) const HEAD_BUFFER: usize = 4096;

/// How long a head may take once its first byte arrived, and how large it may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadRules {
    /// From the first byte of a head to its blank line.
    pub timeout: Duration,
    /// Largest head, request line included.
    pub max_bytes: usize,
}

/// Records the refusals made before a request reached the proxy.
pub trait EarlyRefusals: Send + Sync {
    /// Writes the audit line and counts the refusal; returns the request id it used.
    /// `request_line` is the head's first line as received (possibly cut).
    fn record(&self, peer: Option<SocketAddr>, reject: Reject, request_line: &[u8]) -> RequestId;
}

/// What waiting for a request produced.
pub(super) enum Next {
    /// A complete head (and whatever followed it in the same reads).
    Head(BytesMut),
    /// Nothing more will come: idle timeout, the client closed, or a stop began.
    Closed,
    /// The head broke a rule; the refusal was sent and recorded.
    Refused,
}

tokio::task_local! {
    /// Set when the proxy begins a request on the connection's task.
    static REQUEST_BEGAN: Arc<AtomicBool>;
}

/// Tells the connection a request reached the proxy (called when its context is made).
pub fn request_began() {
    let _ = REQUEST_BEGAN.try_with(|began| began.store(true, Ordering::Relaxed));
}

/// Runs `serve` with `began` as the connection's marker, cleared first.
pub(super) async fn marked<F: std::future::Future>(began: &Arc<AtomicBool>, serve: F) -> F::Output {
    began.store(false, Ordering::Relaxed);
    REQUEST_BEGAN.scope(Arc::clone(began), serve).await
}

/// Whether `buf` holds a whole head: a blank line, with CRLF or bare LF line ends (both
/// of which pingora's parser accepts).
pub(super) fn complete(buf: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', buf).any(|at| match buf.get(at + 1) {
        Some(b'\n') => true,
        Some(b'\r') => buf.get(at + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// The first line of a head, without its line end, cut at 2 KiB.
pub(super) fn request_line(head: &[u8]) -> &[u8] {
    let line = head.split(|b| *b == b'\n').next().unwrap_or(head);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    &line[..line.len().min(2048)]
}

/// The start of a request line, kept on the stack while pingora parses the head, for
/// the audit line of a head it refuses.
pub(super) struct LineStart {
    bytes: [u8; 256],
    len: usize,
}

impl LineStart {
    /// Copies the first 256 bytes of `head`'s first line.
    pub(super) fn of(head: &[u8]) -> Self {
        let line = request_line(head);
        let len = line.len().min(256);
        let mut bytes = [0; 256];
        bytes[..len].copy_from_slice(&line[..len]);
        Self { bytes, len }
    }

    /// The bytes kept.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Waits for the next request's head on `stream`.
pub(super) async fn next(
    stream: &mut Stream,
    keepalive: Duration,
    stopping: &mut ShutdownWatch,
    rules: HeadRules,
    refusals: &dyn EarlyRefusals,
) -> Next {
    let mut head = BytesMut::with_capacity(HEAD_BUFFER);
    let arrived = tokio::select! {
        biased;
        read = tokio::time::timeout(keepalive, stream.read_buf(&mut head)) => matches!(read, Ok(Ok(n)) if n > 0),
        _ = stopping.wait_for(|stop| *stop) => false,
    };
    if !arrived {
        return Next::Closed;
    }
    let deadline = tokio::time::Instant::now() + rules.timeout;
    loop {
        if complete(&head) {
            return Next::Head(head);
        }
        if head.len() > rules.max_bytes {
            refuse(stream, Reject::HeadersTooLarge, &head, refusals).await;
            return Next::Refused;
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut head)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Next::Closed,
            Err(_) => {
                refuse(stream, Reject::RequestTimeout, &head, refusals).await;
                return Next::Refused;
            }
        }
    }
}

/// Answers a refusal with its status and JSON body, records it, and lets the
/// connection close.
async fn refuse(stream: &mut Stream, reject: Reject, head: &[u8], refusals: &dyn EarlyRefusals) {
    let peer = stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
    let request_id = refusals.record(peer, reject, request_line(head));
    let body = reject.body(request_id.as_str());
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        reject.status(),
        http::StatusCode::from_u16(reject.status()).ok().and_then(|s| s.canonical_reason()).unwrap_or(""),
        body.len(),
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_complete_at_its_blank_line() {
        assert!(complete(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"));
        assert!(complete(b"GET / HTTP/1.1\nhost: a\n\n"));
        assert!(complete(b"GET / HTTP/1.1\r\nhost: a\r\n\r\nbody"));
        assert!(!complete(b"GET / HTTP/1.1\r\nhost: a\r\n"));
        assert!(!complete(b"GET / HTTP/1.1\r\nhost: a\r\n\r"));
        assert!(!complete(b""));
    }

    #[test]
    fn the_request_line_is_cut() {
        assert_eq!(request_line(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n"), b"GET /x HTTP/1.1");
        assert_eq!(request_line(&[b'a'; 5000]).len(), 2048);
    }
}
