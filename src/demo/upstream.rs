//! A small echo upstream: answers every request with JSON naming itself and listing the
//! trusted headers it received, and records each request. The demo uses it as its
//! backends; the integration tests use it to see exactly what reached which upstream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head the echo server reads.
const MAX_HEAD: usize = 64 * 1024;

/// One request as the upstream saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received {
    /// Method.
    pub(crate) method: String,
    /// Path with query.
    pub(crate) path: String,
    /// Every header, names lowercase, in arrival order.
    pub(crate) headers: Vec<(String, String)>,
}

impl Received {
    /// All values of a header (name lowercase).
    pub(crate) fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The single value of a header, if present.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).first().copied()
    }
}

/// A running echo upstream.
#[derive(Debug, Clone)]
pub(crate) struct EchoUpstream {
    /// Name it reports in its answers.
    pub(crate) name: String,
    /// Address it listens on.
    pub(crate) addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl EchoUpstream {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub(crate) async fn start(name: &str) -> std::io::Result<Self> {
        Self::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` and serves on the current tokio runtime.
    pub(crate) async fn start_on(name: &str, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let upstream = Self { name: name.to_owned(), addr: listener.local_addr()?, received: Arc::default() };
        let served = upstream.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = served.clone();
                tokio::spawn(async move { conn.serve(stream).await });
            }
        });
        Ok(upstream)
    }

    /// Every request received so far.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// How many requests were received so far.
    pub(crate) fn count(&self) -> usize {
        self.received.lock().map_or(0, |r| r.len())
    }

    async fn serve(&self, mut stream: TcpStream) {
        let mut buf = Vec::with_capacity(4096);
        loop {
            let Some((request, consumed, body_len)) = read_head(&mut stream, &mut buf).await else {
                return;
            };
            // Discard the request body (Content-Length only; the demo sends none).
            buf.drain(..consumed);
            if buf.len() >= body_len {
                buf.drain(..body_len);
            } else {
                let mut left = body_len - buf.len();
                buf.clear();
                let mut sink = [0u8; 4096];
                while left > 0 {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            }
            let body = self.answer(&request);
            if let Ok(mut r) = self.received.lock() {
                r.push(request);
            }
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
            if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(&body).await.is_err() {
                return;
            }
        }
    }

    fn answer(&self, request: &Received) -> Vec<u8> {
        let trusted: serde_json::Map<String, serde_json::Value> = request
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-isogate-") || k == "x-request-id")
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let mut body = serde_json::to_vec(&serde_json::json!({
            "upstream": self.name,
            "method": request.method,
            "path": request.path,
            "trusted_headers": trusted,
        }))
        .unwrap_or_default();
        body.push(b'\n');
        body
    }
}

/// Reads one request head from `stream` into `buf`. Returns the request, the head's
/// length in `buf`, and the declared body length.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(Received, usize, usize)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(consumed)) = req.parse(buf) {
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            let body_len = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            let request = Received {
                method: req.method.unwrap_or("").to_owned(),
                path: req.path.unwrap_or("").to_owned(),
                headers,
            };
            return Some((request, consumed, body_len));
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
