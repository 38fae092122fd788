//! What the upstream receives for an admitted request: the trusted headers from the
//! verified identity, the forwarded headers from the connection, and the target the
//! stages chose. The client's identity headers were stripped when the request arrived.

use pingora::http::RequestHeader;
use pingora::{ErrorType, OrErr, Result};

use super::{Admitted, Connection, UpstreamTarget};
use crate::headers::{RequestId, Trusted};
use crate::snapshot::Snapshot;

impl Admitted {
    /// Turns the copy of the client's request into the upstream request. `host` is the
    /// host the client asked for, as it sent it.
    pub fn prepare_upstream(
        &self,
        snap: &Snapshot,
        request_id: &RequestId,
        conn: &Connection,
        host: Option<&http::HeaderValue>,
        upstream: &mut RequestHeader,
    ) -> Result<()> {
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
        retarget(upstream, &self.target)
    }
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
