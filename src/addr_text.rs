//! Addresses as text, written straight into a byte buffer: IPv4 from its digits (the
//! common case on the request path, where `fmt` costs about ten times as much) and
//! IPv6 through `fmt`. The text is what `Display` writes.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Appends `ip` as `Display` writes it.
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => push_v4(out, v4),
        // Writing into a Vec cannot fail.
        IpAddr::V6(v6) => drop(write!(out, "{v6}")),
    }
}

/// Appends `addr` as `Display` writes it (`1.2.3.4:80`, `[::1]:443`).
pub(crate) fn push_socket(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            push_v4(out, *v4.ip());
            out.push(b':');
            out.extend_from_slice(itoa::Buffer::new().format(v4.port()).as_bytes());
        }
        SocketAddr::V6(v6) => drop(write!(out, "{v6}")),
    }
}

fn push_v4(out: &mut Vec<u8>, ip: Ipv4Addr) {
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    out.extend_from_slice(&text[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_what_display_writes() {
        for a in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.1.2.3:8080",
            "100.99.9.199:1",
            "1.10.100.0:10",
            "[::1]:443",
            "[2001:db8::7]:1",
            "[::ffff:1.2.3.4]:9",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut out = Vec::new();
            push_socket(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
            let mut out = Vec::new();
            push_ip(&mut out, addr.ip());
            assert_eq!(String::from_utf8(out).unwrap(), addr.ip().to_string());
        }
    }
}
