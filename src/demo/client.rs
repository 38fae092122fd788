//! A minimal HTTP/1.1 client that sends exactly the bytes it is given. The demo's
//! `--check` uses it, and so do the integration tests, which need to send hostile
//! requests no ordinary client library would produce.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A parsed response.
#[derive(Debug, Clone)]
pub(crate) struct RawResponse {
    /// Status code.
    pub(crate) status: u16,
    /// Headers, names lowercase.
    pub(crate) headers: Vec<(String, String)>,
    /// Body (read to its Content-Length, or to the end of the stream).
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header (name lowercase).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (`Null` when it is not JSON).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends `raw` (a whole request, head and body) on a new connection and reads one
/// response. The connection is closed afterwards.
pub(crate) fn send(addr: SocketAddr, raw: &[u8]) -> std::io::Result<RawResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(raw)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(resp) = parse(&buf)? {
            return Ok(resp);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return parse_to_end(&buf);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A GET with the given `Host` and extra header lines.
pub(crate) fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<RawResponse> {
    let mut raw = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    send(addr, raw.as_bytes())
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

/// A complete response in `buf`, or `None` when more bytes are needed.
fn parse(buf: &[u8]) -> std::io::Result<Option<RawResponse>> {
    let Some((status, headers, head_len)) = head(buf)? else {
        return Ok(None);
    };
    let length = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
    match length {
        Some(len) if buf.len() >= head_len + len => {
            Ok(Some(RawResponse { status, headers, body: buf[head_len..head_len + len].to_vec() }))
        }
        _ => Ok(None),
    }
}

fn parse_to_end(buf: &[u8]) -> std::io::Result<RawResponse> {
    let (status, headers, head_len) =
        head(buf)?.ok_or_else(|| invalid("connection closed before a full response head"))?;
    Ok(RawResponse { status, headers, body: buf[head_len..].to_vec() })
}

type Head = (u16, Vec<(String, String)>, usize);

fn head(buf: &[u8]) -> std::io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let headers = resp
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            Ok(Some((resp.code.unwrap_or(0), headers, n)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(invalid(&format!("bad response: {e}"))),
    }
}
