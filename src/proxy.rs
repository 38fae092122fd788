//! The pingora glue: `ProxyHttp` phases call the stages in request order and keep their
//! results in `Ctx`. `request_filter` runs identify → bind → authorise → route and
//! answers every refusal itself, so a refused request never reaches an upstream;
//! `upstream_peer` reads the chosen pool; `upstream_request_filter` applies the header
//! plan; `logging` writes the one audit line and the metrics for every request
//! (see `record`).

mod admit;
mod record;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::HOST;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType};

use crate::audit::{AuditSink, Slot};
use crate::auth::{Identity, Refusal};
use crate::bind::{EnvId, RouteEnvironment};
use crate::headers::Trusted;
use crate::metrics::Metrics;
use crate::policy::Permit;
use crate::ratelimit::{Mode, PlanId};
use crate::reject::Reject;
use crate::routing::{normalize_host, Placement, RouteId};
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::tenant_label::TenantRanking;

/// The gateway application run by pingora's proxy service.
#[derive(Debug)]
pub struct Gateway {
    snapshots: Arc<SnapshotCell>,
    audit: Arc<AuditSink>,
    metrics: Metrics,
    tenants: Option<TenantRanking>,
}

impl Gateway {
    /// Builds the application over shared state.
    pub fn new(snapshots: Arc<SnapshotCell>, audit: Arc<AuditSink>, metrics: Metrics) -> Self {
        let top = snapshots.load().settings.tenant_label_top;
        let tenants = (top > 0).then(|| TenantRanking::new(top));
        Self { snapshots, audit, metrics, tenants }
    }
}

/// Per-request state: the pinned snapshot and each stage's result.
#[derive(Debug)]
pub struct Ctx {
    snapshot: Arc<Snapshot>,
    started: Instant,
    request_id: String,
    route: Option<RouteId>,
    identity: Option<Arc<Identity>>,
    env: Option<EnvId>,
    permit: Option<Permit>,
    placement: Option<Placement>,
    /// The normalised path, when it differs from the request's.
    normalized_path: Option<Box<str>>,
    /// The client's path, when the upstream gets another one (for the audit line).
    client_path: Option<Box<str>>,
    /// Connection failures so far (each may retry on another server).
    connect_failures: u8,
    /// The plan that limited the request, and which limiter decided.
    limit: Option<(PlanId, Mode)>,
    /// Issuer and `kid` of a refused token, for the audit line (rare, so boxed).
    refusal: Option<Box<Refusal>>,
    upstream: Option<SocketAddr>,
    reject: Option<Reject>,
    audit_slot: Option<Slot>,
    upstream_sent: Option<Instant>,
    upstream_time: Option<Duration>,
}

impl Ctx {
    fn fixed_env(expected: Option<RouteEnvironment>) -> Option<EnvId> {
        match expected {
            Some(RouteEnvironment::Fixed(env)) => Some(env),
            _ => None,
        }
    }
}

/// The host a request is addressed to: the URI authority (HTTP/2, absolute form) or
/// the single `Host` header. Several `Host` headers, or a host that is not plausible,
/// make the request malformed.
fn request_host(req: &RequestHeader) -> Result<Option<Cow<'_, str>>, Reject> {
    if let Some(authority) = req.uri.authority() {
        return normalize_host(authority.as_str()).map(Some).ok_or(Reject::BadRequest);
    }
    let mut hosts = req.headers.get_all(HOST).iter();
    let Some(host) = hosts.next() else {
        return Ok(None);
    };
    if hosts.next().is_some() {
        return Err(Reject::BadRequest);
    }
    let host = host.to_str().map_err(|_| Reject::BadRequest)?;
    normalize_host(host).map(Some).ok_or(Reject::BadRequest)
}

impl Gateway {
    /// Writes the refusal response: status, JSON body, and the headers the table asks for.
    async fn respond(&self, session: &mut Session, ctx: &Ctx, reject: Reject) -> Result<()> {
        let body = reject.body(&ctx.request_id);
        let mut resp = ResponseHeader::build(reject.status(), Some(6))?;
        resp.insert_header("content-type", "application/json")?;
        resp.insert_header("content-length", body.len())?;
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header(&ctx.snapshot.headers.request_id, ctx.request_id.as_str())?;
        if let Some(challenge) = reject.www_authenticate() {
            resp.insert_header("www-authenticate", challenge)?;
        }
        if let Some(after) = reject.retry_after() {
            resp.insert_header("retry-after", after.as_secs())?;
        }
        if let (Some(field), Some((plan, _))) = (reject.ratelimit_field(), ctx.limit) {
            resp.insert_header("ratelimit-policy", ctx.snapshot.plans[usize::from(plan.0)].policy_header.clone())?;
            resp.insert_header("ratelimit", field)?;
        }
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(Bytes::from(body)), true).await?;
        Ok(())
    }

    /// Maps a proxy error to the refusal the client sees (`None`: the client went away).
    fn upstream_reject(e: &Error) -> Option<Reject> {
        match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(503)) => Some(Reject::UpstreamUnavailable),
            (ErrorSource::Downstream, ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed) => {
                None
            }
            (ErrorSource::Downstream, _) => Some(Reject::BadRequest),
            (_, ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
                Some(Reject::UpstreamTimeout)
            }
            _ => Some(Reject::UpstreamUnreachable),
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            snapshot: self.snapshots.load(),
            started: Instant::now(),
            request_id: String::new(),
            route: None,
            identity: None,
            env: None,
            permit: None,
            placement: None,
            normalized_path: None,
            client_path: None,
            refusal: None,
            limit: None,
            connect_failures: 0,
            upstream: None,
            reject: None,
            audit_slot: None,
            upstream_sent: None,
            upstream_time: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let Err(reject) = self.admit(session, ctx).await else {
            return Ok(false);
        };
        ctx.reject = Some(reject);
        self.respond(session, ctx, reject).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // request_filter answered every refusal, so a placement is always set here; fail closed anyway.
        let Some(placement) = &ctx.placement else {
            return Error::e_explain(ErrorType::InternalError, "no pool chosen");
        };
        let key = ctx.identity.as_ref().and_then(|i| i.tenant.as_deref()).unwrap_or("");
        let avoid = ctx.connect_failures.gt(&0).then_some(ctx.upstream).flatten();
        match ctx.snapshot.pools.get(placement.pool).peer(key.as_bytes(), avoid) {
            Ok((addr, peer)) => {
                ctx.upstream = Some(addr);
                Ok(peer)
            }
            Err(reject) => {
                ctx.reject = Some(reject);
                Err(Error::explain(ErrorType::HTTPStatus(reject.status()), reject.reason()))
            }
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Connecting failed, so nothing was sent: another server may take the request.
        if let (Some(placement), Some(addr)) = (&ctx.placement, ctx.upstream) {
            let pool = ctx.snapshot.pools.get(placement.pool);
            if pool.report_failure(addr) {
                self.metrics.upstream_ejections.with_label_values(&[&pool.name]).inc();
            }
            ctx.connect_failures = ctx.connect_failures.saturating_add(1);
            if usize::from(ctx.connect_failures) < pool.len() {
                e.set_retry(true);
            }
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(placement), Some(addr)) = (&ctx.placement, ctx.upstream) {
            ctx.snapshot.pools.get(placement.pool).report_success(addr);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let snap = &ctx.snapshot;
        let (Some(identity), Some(permit), Some(placement), Some(route)) =
            (&ctx.identity, &ctx.permit, &ctx.placement, ctx.route)
        else {
            return Error::e_explain(ErrorType::InternalError, "request reached the upstream phase unauthorised");
        };
        let trusted = Trusted {
            identity,
            environment: snap.binder.header_value(permit.env()),
            pool: &snap.pools.get(placement.pool).header_value,
            request_id: &ctx.request_id,
            forward_authorization: snap.routes.get(route).forward_authorization,
            system_mode: permit.system_mode(),
            db_schema: placement.db_schema.as_deref(),
            db_pool: placement.db_pool.as_deref(),
        };
        snap.headers.inject(upstream, &trusted)?;
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_time = ctx.upstream_sent.map(|t| t.elapsed());
        Ok(())
    }

    async fn response_filter(&self, _session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        // Clients and upstream logs can quote the same id.
        resp.insert_header(&ctx.snapshot.headers.request_id, ctx.request_id.as_str())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let reject = ctx.reject.or_else(|| Self::upstream_reject(e));
        ctx.reject = reject;
        let code = match reject {
            Some(r) if session.response_written().is_none() => {
                if let Err(write_err) = self.respond(session, ctx, r).await {
                    log::debug!(target: "isogate::reject", "cannot send {} to the client: {write_err}", r.reason());
                }
                r.status()
            }
            Some(r) => r.status(),
            None => 0,
        };
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        self.record(session, e, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctx_stays_small() {
        // Every in-flight request holds one; growth here should be deliberate. The big
        // members are the Identity (claims as owned strings), Permit and Placement;
        // pingora's own per-request session is several kilobytes.
        assert!(std::mem::size_of::<Ctx>() <= 512, "Ctx is {} bytes", std::mem::size_of::<Ctx>());
    }

    #[test]
    fn several_host_headers_are_malformed() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("host", "a.example.com").unwrap();
        assert_eq!(request_host(&req).unwrap().as_deref(), Some("a.example.com"));
        req.append_header("host", "b.example.com").unwrap();
        assert_eq!(request_host(&req), Err(Reject::BadRequest));
    }

    #[test]
    fn reject_table_covers_upstream_failures() {
        let refused = Error::new(ErrorType::ConnectRefused).into_up();
        assert_eq!(Gateway::upstream_reject(&refused), Some(Reject::UpstreamUnreachable));
        let timeout = Error::new(ErrorType::ConnectTimedout).into_up();
        assert_eq!(Gateway::upstream_reject(&timeout), Some(Reject::UpstreamTimeout));
        let gone = Error::new(ErrorType::ReadError).into_down();
        assert_eq!(Gateway::upstream_reject(&gone), None);
        assert_eq!(Reject::UpstreamTimeout.status(), 504);
    }
}
