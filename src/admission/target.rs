//! What a request addresses: its host and its path, read from the request target and
//! `Host` the way RFC 9112 section 3.2 says an origin server reads them, so the gateway
//! never routes on a host or path other than the one an upstream would see.
//!
//! Served targets are origin-form (`/path?query`) and, from HTTP/1 proxies,
//! absolute-form (`http://host/path`); anything else (`*`, `admin/x`, `?x=1`, an
//! authority-form or an ambiguous scheme) is refused as `malformed_request`. The host is
//! an HTTP/2 request's `:authority`, else the absolute-form authority and `Host`, which
//! must agree when both are present, else `Host` alone. An HTTP/1.1 request with no host
//! at all is malformed (RFC 9112 section 3.2); an HTTP/1.0 one is bound by its listener.

use std::borrow::Cow;

use http::header::HOST;
use http::Version;
use pingora::http::authority::{is_http_family_scheme, raw_target_authority, RawTargetAuthority};
use pingora::http::RequestHeader;

use crate::reject::Reject;
use crate::routing::normalize_host;

/// The host (lowercase, no port) and the path (before normalisation) a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target<'h> {
    pub(super) host: Option<Cow<'h, str>>,
    pub(super) path: &'h str,
}

/// Reads the request's target and host.
pub(super) fn read(head: &RequestHeader) -> Result<Target<'_>, Reject> {
    let raw = head.raw_path();
    let absolute = match raw_target_authority(raw) {
        _ if raw.first() == Some(&b'/') => None,
        RawTargetAuthority::Absolute { scheme, authority, .. } if is_http_family_scheme(scheme) => Some(authority),
        _ => return Err(Reject::BadRequest),
    };
    let path = head.uri.path();
    if !path.starts_with('/') {
        return Err(Reject::BadRequest);
    }
    if let Some(authority) = head.uri.authority() {
        return Ok(Target { host: Some(plausible(authority.as_str())?), path });
    }
    let header = host_header(head)?;
    let host = match (absolute, header) {
        (Some(authority), header) => {
            let from_target = plausible(std::str::from_utf8(authority).map_err(|_| Reject::BadRequest)?)?;
            if header.is_some_and(|h| h != from_target) {
                return Err(Reject::BadRequest);
            }
            Some(from_target)
        }
        (None, header) => header,
    };
    if host.is_none() && head.version == Version::HTTP_11 {
        return Err(Reject::BadRequest);
    }
    Ok(Target { host, path })
}

/// The single `Host` header, normalised; several are malformed.
fn host_header(head: &RequestHeader) -> Result<Option<Cow<'_, str>>, Reject> {
    let mut hosts = head.headers.get_all(HOST).iter();
    let Some(host) = hosts.next() else {
        return Ok(None);
    };
    if hosts.next().is_some() {
        return Err(Reject::BadRequest);
    }
    plausible(host.to_str().map_err(|_| Reject::BadRequest)?).map(Some)
}

fn plausible(host: &str) -> Result<Cow<'_, str>, Reject> {
    normalize_host(host).ok_or(Reject::BadRequest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, host: &[&str], version: Version) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        req.set_version(version);
        for h in host {
            req.append_header("host", *h).unwrap();
        }
        req
    }

    fn read_host(target: &str, host: &[&str]) -> Result<(Option<String>, String), Reject> {
        let h = head(target, host, Version::HTTP_11);
        read(&h).map(|t| (t.host.map(Cow::into_owned), t.path.to_owned()))
    }

    #[test]
    fn origin_and_absolute_forms_are_read_like_an_origin_server() {
        let ok = |host: &str, path: &str| Ok((Some(host.to_owned()), path.to_owned()));
        assert_eq!(read_host("/a/b?q=1", &["API.test:8080"]), ok("api.test", "/a/b"));
        assert_eq!(read_host("http://prod.test/api/x", &[]), ok("prod.test", "/api/x"), "the authority is the host");
        assert_eq!(read_host("http://prod.test/api", &["prod.test"]), ok("prod.test", "/api"));
    }

    #[test]
    fn targets_in_no_served_form_and_disagreeing_hosts_are_malformed() {
        for (target, host) in [
            ("admin/x", &["a.test"][..]),
            ("*", &["a.test"][..]),
            ("?next=/admin", &["a.test"][..]),
            ("a.test:443", &["a.test"][..]),
            ("http:/\\evil/x", &["a.test"][..]),
            ("ftp://a.test/x", &["a.test"][..]),
            ("http://prod.test/api", &["stage.test"][..]),
            ("/x", &["a.test", "b.test"][..]),
            ("/x", &[][..]),
        ] {
            assert_eq!(read_host(target, host), Err(Reject::BadRequest), "{target} {host:?}");
        }
        let old = head("/x", &[], Version::HTTP_10);
        assert_eq!(read(&old).map(|t| t.host), Ok(None), "HTTP/1.0 may leave the host out");
    }
}
