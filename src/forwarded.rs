//! Stage "forward", address half: the forwarded headers an upstream sees
//! (`X-Forwarded-For`, `-Proto`, `-Host`, `X-Real-IP`, `Forwarded`) come from the
//! connection, never from the client.
//!
//! From a client that is not a trusted proxy, every copy of those headers (and of the
//! other client-address headers apps are known to read, such as `True-Client-IP`) is
//! removed and they are set afresh: `X-Forwarded-For` and `X-Real-IP` to the peer
//! address, `X-Forwarded-Proto` to the connection's scheme, `X-Forwarded-Host` to the
//! requested host, and one RFC 7239 `Forwarded` element with the same facts.
//!
//! From a trusted proxy (`forwarded.trusted_proxies`, as nginx's realip module and
//! Envoy's trusted hops do), the chain is kept and extended: the peer is appended to
//! `X-Forwarded-For` and `Forwarded`, `X-Forwarded-Proto` and `-Host` are kept when the
//! proxy sent exactly one, and `X-Real-IP` is the rightmost address of the chain that
//! is not a trusted proxy. Spellings with `_` for `-` are always removed, since app
//! servers read them as the same variable.

use std::cell::RefCell;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use pingora::http::RequestHeader;

use crate::addr_text::push_ip;
use crate::admission::Connection;
use crate::config::{file, ConfigError};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The headers the gateway can set, in `forwarded.set` order of the docs.
const SETTABLE: [&str; 5] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded"];

/// Headers set from the connection, plus other client-address headers that apps read;
/// only the first five are kept from trusted proxies.
const ADDRESS_HEADERS: [&str; 13] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-original-forwarded-for",
    "x-client-ip",
    "x-cluster-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
];

/// Kept from a trusted proxy (by exact lowercase name).
const CHAIN_HEADERS: usize = 5;

/// Compiled `[forwarded]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedPolicy {
    trusted: Box<[IpNet]>,
    /// Which of `SETTABLE` are set, by index.
    set: [bool; 5],
}

impl ForwardedPolicy {
    /// Parses `trusted_proxies` (CIDRs or single addresses).
    pub fn compile(raw: &file::Forwarded, errors: &mut Vec<ConfigError>) -> Self {
        let mut trusted = Vec::new();
        for (i, entry) in raw.trusted_proxies.iter().enumerate() {
            let text = entry.get_ref().trim();
            match text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from)) {
                Ok(net) => trusted.push(net.trunc()),
                Err(_) => errors.push(ConfigError::at(
                    entry.span(),
                    format!("forwarded.trusted_proxies[{i}]"),
                    format!("`{text}` is not an address or a CIDR"),
                    "write e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \"2001:db8::/32\"",
                )),
            }
        }
        let mut set = [false; 5];
        for (i, name) in raw.set.iter().enumerate() {
            match SETTABLE.iter().position(|s| s.eq_ignore_ascii_case(name.get_ref())) {
                Some(at) => set[at] = true,
                None => errors.push(ConfigError::at(
                    name.span(),
                    format!("forwarded.set[{i}]"),
                    format!("`{}` is not a forwarded header isogate sets", name.get_ref()),
                    format!("use some of: {}", SETTABLE.join(", ")),
                )),
            }
        }
        Self { trusted: trusted.into(), set }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Replaces (or, from a trusted proxy, extends) the forwarded headers of the upstream
    /// request: the client's copies are removed, and the headers in `forwarded.set` are
    /// set. `host` is the host the client asked for, as it sent it.
    pub fn apply(&self, req: &mut RequestHeader, conn: &Connection, host: Option<&HeaderValue>) -> pingora::Result<()> {
        let peer = conn.peer.map(|ip| ip.to_canonical());
        let trusted = peer.is_some_and(|ip| self.trusts(ip));
        let proto = if conn.tls { "https" } else { "http" };
        let (chain, prior, kept_proto, kept_host) = if trusted {
            let proto = single(req, &X_FORWARDED_PROTO).and_then(|p| match p {
                "https" => Some("https"),
                "http" => Some("http"),
                _ => None,
            });
            let host = single(req, &X_FORWARDED_HOST).and_then(|_| req.headers.get(X_FORWARDED_HOST)).cloned();
            (values(req, &X_FORWARDED_FOR), values(req, &FORWARDED), proto, host)
        } else {
            (None, None, None, None)
        };
        remove_address_headers(req, trusted);

        let [xff, xfp, xfh, real_ip, forwarded] = self.set;
        if xfp {
            set(req, 1, HeaderValue::from_static(kept_proto.unwrap_or(proto)))?;
        }
        if let Some(h) = kept_host.or_else(|| host.cloned()).filter(|_| xfh) {
            set(req, 2, h)?;
        }
        let Some(peer) = peer else {
            return Ok(());
        };
        // The peer's address as text, made once: `X-Forwarded-For` and `X-Real-IP`
        // share it (a header value clone only counts a reference).
        let peer_text = (xff || real_ip).then(|| peer_text(peer)).transpose()?;
        if let Some(peer_text) = peer_text.as_ref().filter(|_| xff) {
            let value = match &chain {
                Some(c) => text(format!("{c}, {peer}").into_bytes())?,
                None => peer_text.clone(),
            };
            set(req, 0, value)?;
        }
        if let Some(peer_text) = peer_text.filter(|_| real_ip) {
            let client = chain.as_deref().map_or(peer, |c| self.client_of(c, peer));
            set(req, 3, if client == peer { peer_text } else { text(address(client))? })?;
        }
        if forwarded {
            let host = host.and_then(|h| h.to_str().ok());
            let value = match prior {
                Some(p) => {
                    let mut value = Vec::with_capacity(p.len() + 96);
                    value.extend_from_slice(p.as_bytes());
                    value.extend_from_slice(b", ");
                    push_forwarded_element(&mut value, peer, proto, host);
                    text(value)?
                }
                None => forwarded_element(peer, proto, host)?,
            };
            set(req, 4, value)?;
        }
        Ok(())
    }

    /// The rightmost address of `chain` (then `peer`) that is not a trusted proxy; the
    /// last trusted one when an entry cannot be read.
    fn client_of(&self, chain: &str, peer: IpAddr) -> IpAddr {
        let mut client = peer;
        for entry in chain.rsplit(',') {
            if !self.trusts(client) {
                break;
            }
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) => client = ip.to_canonical(),
                Err(_) => break,
            }
        }
        client
    }
}

/// Sets `SETTABLE[index]`; the name is static, so setting it copies nothing.
fn set(req: &mut RequestHeader, index: usize, value: HeaderValue) -> pingora::Result<()> {
    req.insert_header(Bytes::from_static(SETTABLE[index].as_bytes()), value)
}

/// The last peer's values, per worker thread. Behind a load balancer, or on a
/// keep-alive connection, the next request mostly comes from the same address with the
/// same host, so its values are made once and then shared (cloning a header value
/// counts a reference).
struct LastPeer {
    ip: IpAddr,
    text: HeaderValue,
    /// This hop's `Forwarded` element, with the proto and host it was made for.
    element: Option<(&'static str, Option<Box<str>>, HeaderValue)>,
}

thread_local! {
    static LAST_PEER: RefCell<Option<LastPeer>> = const { RefCell::new(None) };
}

/// `ip` as a header value, shared with the requests before it from the same address.
fn peer_text(ip: IpAddr) -> pingora::Result<HeaderValue> {
    LAST_PEER.with_borrow_mut(|last| {
        if let Some(last) = last.as_ref().filter(|l| l.ip == ip) {
            return Ok(last.text.clone());
        }
        let text = text(address(ip))?;
        *last = Some(LastPeer { ip, text: text.clone(), element: None });
        Ok(text)
    })
}

/// This hop's `Forwarded` element as a header value, shared with the requests before it
/// from the same address, over the same scheme, for the same host.
fn forwarded_element(ip: IpAddr, proto: &'static str, host: Option<&str>) -> pingora::Result<HeaderValue> {
    LAST_PEER.with_borrow_mut(|last| {
        let cached = last.as_ref().filter(|l| l.ip == ip).and_then(|l| l.element.as_ref());
        if let Some((_, _, element)) = cached.filter(|(p, h, _)| *p == proto && h.as_deref() == host) {
            return Ok(element.clone());
        }
        let mut value = Vec::with_capacity(96);
        push_forwarded_element(&mut value, ip, proto, host);
        let element = text(value)?;
        let entry = (proto, host.map(Box::from), element.clone());
        match last.as_mut().filter(|l| l.ip == ip) {
            Some(l) => l.element = Some(entry),
            None => *last = Some(LastPeer { ip, text: text(address(ip))?, element: Some(entry) }),
        }
        Ok(element)
    })
}

/// An address as text, in one allocation.
fn address(ip: IpAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    push_ip(&mut out, ip);
    out
}

/// A header value from text the gateway made (addresses, quoted hosts).
fn text(value: Vec<u8>) -> pingora::Result<HeaderValue> {
    use pingora::OrErr;
    HeaderValue::try_from(value).or_err(pingora::ErrorType::InternalError, "forwarded header value")
}

/// Appends this hop's RFC 7239 element: `for` (IPv6 quoted and bracketed), `proto`,
/// and `host` when it can be quoted as it is.
fn push_forwarded_element(out: &mut Vec<u8>, peer: IpAddr, proto: &str, host: Option<&str>) {
    out.extend_from_slice(b"for=");
    if peer.is_ipv6() {
        out.extend_from_slice(b"\"[");
        push_ip(out, peer);
        out.extend_from_slice(b"]\"");
    } else {
        push_ip(out, peer);
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto.as_bytes());
    if let Some(h) = host.filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')) {
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(h.as_bytes());
        out.push(b'"');
    }
}

/// Every value of `name`, joined with `, ` (a proxy chain may span several lines).
fn values(req: &RequestHeader, name: &HeaderName) -> Option<String> {
    let mut joined: Option<String> = None;
    for v in req.headers.get_all(name) {
        let v = v.to_str().ok()?.trim();
        match &mut joined {
            Some(j) => {
                j.push_str(", ");
                j.push_str(v);
            }
            None => joined = Some(v.to_owned()),
        }
    }
    joined.filter(|j| !j.is_empty())
}

/// The value of `name` when there is exactly one, printable.
fn single<'r>(req: &'r RequestHeader, name: &HeaderName) -> Option<&'r str> {
    let mut all = req.headers.get_all(name).iter();
    let v = all.next()?;
    all.next().is_none().then(|| v.to_str().ok()).flatten()
}

/// For each name length, which of `ADDRESS_HEADERS` have it (bit `i` for entry `i`):
/// most client headers are ruled out by their length alone.
const ADDRESS_HEADERS_BY_LENGTH: [u16; 32] = {
    let mut by_length = [0u16; 32];
    let mut i = 0;
    while i < ADDRESS_HEADERS.len() {
        by_length[ADDRESS_HEADERS[i].len()] |= 1 << i;
        i += 1;
    }
    by_length
};

/// Whether a client header name spells one of the address headers (`_` as `-`);
/// returns whether it is the exact name of a header kept from trusted proxies.
fn address_header(name: &str) -> Option<bool> {
    let n = name.as_bytes();
    let mut candidates = ADDRESS_HEADERS_BY_LENGTH.get(n.len()).copied().unwrap_or(0);
    while candidates != 0 {
        let i = candidates.trailing_zeros() as usize;
        candidates &= candidates - 1;
        let h = ADDRESS_HEADERS[i].as_bytes();
        if n.iter().zip(h).all(|(a, b)| a == b || (*a == b'_' && *b == b'-')) {
            return Some(i < CHAIN_HEADERS && n == h);
        }
    }
    None
}

/// Removes the client's address headers: all of them from an untrusted client, the
/// `_` spellings and the non-chain ones from a trusted proxy.
fn remove_address_headers(req: &mut RequestHeader, trusted: bool) {
    let doomed = |name: &HeaderName| address_header(name.as_str()).is_some_and(|chain| !(trusted && chain));
    if !req.headers.keys().any(doomed) {
        return;
    }
    let names: Vec<HeaderName> = req.headers.keys().filter(|n| doomed(n)).cloned().collect();
    for name in &names {
        req.remove_header(name);
    }
}

#[cfg(test)]
mod tests;
