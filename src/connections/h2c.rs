//! HTTP/2 with prior knowledge (h2c) on plain listeners that accept it: a connection
//! whose first bytes are the HTTP/2 connection preface is handed to pingora's HTTP/2
//! server instead of the HTTP/1 loop. Everywhere else the preface is an HTTP/1 head
//! that pingora's parser refuses, as before.

use std::net::SocketAddr;

use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;

/// The HTTP/2 connection preface up to its first blank line (RFC 9113 section 3.4):
/// what the HTTP/1 head reader returns as a complete head.
const PREFACE_HEAD: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

/// The plain listeners that accept h2c.
#[derive(Debug, Clone, Default)]
pub(super) struct H2cListeners(Box<[SocketAddr]>);

impl H2cListeners {
    pub(super) fn new(listeners: &[SocketAddr]) -> Self {
        Self(listeners.into())
    }

    /// Whether `head`, the first bytes read on `stream`, opens an HTTP/2 connection on
    /// a listener that accepts h2c. The listener is looked up only for a preface.
    pub(super) fn accepts(&self, stream: &Stream, head: &[u8]) -> bool {
        if self.0.is_empty() || !head.starts_with(PREFACE_HEAD) {
            return false;
        }
        let local = stream.get_socket_digest().and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
        local.is_some_and(|local| self.0.iter().any(|l| listens_on(*l, local)))
    }
}

/// Whether a listener bound to `listener` accepted a connection on `local`.
fn listens_on(listener: SocketAddr, local: SocketAddr) -> bool {
    listener.port() == local.port() && (listener.ip().is_unspecified() || listener.ip() == local.ip())
}

/// Puts bytes already read back in front of the stream, so the HTTP/2 server reads
/// the whole preface; `None` if the stream is not a plain TCP stream.
pub(super) fn unread(stream: Stream, bytes: &[u8]) -> Option<Stream> {
    let mut tcp = stream.into_any().downcast::<TcpStream>().ok()?;
    tcp.rewind(bytes);
    Some(tcp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_matches_any_local_address_on_its_port() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let one: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(listens_on(any, "10.0.0.1:8080".parse().unwrap()));
        assert!(listens_on(one, one));
        assert!(!listens_on(one, "127.0.0.2:8080".parse().unwrap()));
        assert!(!listens_on(any, "127.0.0.1:8081".parse().unwrap()));
    }
}
