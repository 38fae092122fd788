//! What the upstream receives for an admitted request: the trusted headers from the
//! verified identity, the forwarded headers from the connection, and the target the
//! stages chose, less any token read from a cookie, query or subprotocol. The client's
//! identity headers were stripped when the request arrived.

use pingora::http::RequestHeader;
use pingora::{ErrorType, OrErr, Result};

use super::{Admitted, Connection, UpstreamTarget};
use crate::headers::{RequestId, Trusted};
use crate::snapshot::Snapshot;

impl Admitted {
    /// Turns the copy of the client's request (`client`, as the client sent it, less its
    /// identity headers) into the upstream request.
    pub fn prepare_upstream(
        &self,
        snap: &Snapshot,
        request_id: &RequestId,
        conn: &Connection,
        client: &RequestHeader,
        upstream: &mut RequestHeader,
    ) -> Result<()> {
        // The host the client asked for, as it wrote it (for X-Forwarded-Host).
        let authority = client.uri.authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok());
        let host = authority.as_ref().or_else(|| client.headers.get(http::header::HOST));
        shed_header_case(upstream, INJECTED_MAX);
        let trusted = Trusted {
            identity: &self.identity,
            environment: snap.binder.header_value(self.env()),
            pool: &snap.pools.get(self.placement.pool).header_value,
            request_id,
            forward_authorization: snap.routes.get(self.route).forward_authorization,
            system_mode: self.permit.system_mode(),
            db_schema: self.placement.db_schema.as_deref(),
            db_pool: self.placement.db_pool.as_deref(),
        };
        snap.headers.inject(upstream, &trusted)?;
        snap.forwarded.apply(upstream, conn, host)?;
        retarget(upstream, &self.target)?;
        let route = snap.routes.get(self.route);
        let sources = route.token_sources.as_ref().unwrap_or(snap.auth.sources());
        sources.strip(upstream, route.forward_token_cookie)
    }
}

/// Most headers the gateway may add: its trusted headers, the forwarded ones and
/// `traceparent`.
const INJECTED_MAX: usize = 16;

/// Drops the client's header-name case from the upstream copy of its request, and makes
/// room for the headers the gateway adds. pingora keeps a second map of the names as the
/// client wrote them and copies every added name into it; names are case-insensitive
/// (RFC 9110 section 5.1), so the upstream loses nothing but spelling, and the target
/// sent is the URI that routing matched (an absolute-form target becomes origin-form).
fn shed_header_case(upstream: &mut RequestHeader, room: usize) {
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(upstream, placeholder).into();
    parts.headers.reserve(room);
    *upstream = RequestHeader::from(parts);
}

/// Points the upstream request at the admitted target. The URI keeps its scheme and
/// authority (an HTTP/2 request's `:authority`), so a rewrite never loses the host.
fn retarget(upstream: &mut RequestHeader, target: &UpstreamTarget) -> Result<()> {
    if target.path_and_query.is_none() && target.host.is_none() {
        return Ok(());
    }
    let mut parts = upstream.uri.clone().into_parts();
    if let Some(pq) = &target.path_and_query {
        parts.path_and_query = Some(pq.parse().or_err(ErrorType::InternalError, "rewritten path")?);
    }
    if let Some(host) = &target.host {
        if parts.authority.is_some() {
            parts.authority = Some(host.parse().or_err(ErrorType::InternalError, "rewritten host")?);
        }
        upstream.insert_header(http::header::HOST, &**host)?;
    }
    upstream.set_uri(http::Uri::from_parts(parts).or_err(ErrorType::InternalError, "upstream target")?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_copy_keeps_every_header_but_not_its_case() {
        let mut req = RequestHeader::build("GET", b"/a", None).unwrap();
        req.append_header("X-Custom-Thing", "1").unwrap();
        req.append_header("Accept", "*/*").unwrap();
        req.append_header("x-custom-thing", "2").unwrap();
        assert!(req.has_case());
        shed_header_case(&mut req, 8);
        assert!(!req.has_case());
        let all: Vec<_> = req.headers.get_all("x-custom-thing").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(all, ["1", "2"]);
        assert_eq!(req.headers["accept"], "*/*");
        assert_eq!((req.method.as_str(), req.uri.path()), ("GET", "/a"));
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.contains("x-custom-thing: 1\r\n") && wire.contains("accept: */*"), "{wire}");
    }

    #[test]
    fn retargeting_keeps_the_authority() {
        // An HTTP/2 request's URI carries the scheme and `:authority`.
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.set_uri("https://api.example.com/a/../b?q=1".parse().unwrap());
        let target = UpstreamTarget { path_and_query: Some("/b?q=1".into()), host: None };
        retarget(&mut req, &target).unwrap();
        assert_eq!(req.uri.to_string(), "https://api.example.com/b?q=1");
        let target = UpstreamTarget { path_and_query: None, host: Some("acme.store.internal".into()) };
        retarget(&mut req, &target).unwrap();
        assert_eq!(req.uri.authority().map(|a| a.as_str()), Some("acme.store.internal"));
        assert_eq!(req.headers["host"], "acme.store.internal");
    }
}
