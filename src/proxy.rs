//! The pingora glue: `ProxyHttp` phases around the typed pipeline in `admission`.
//! `request_filter` strips client identity headers, reads the trace context, reserves
//! the audit slot and runs `admit`, answering every refusal itself (JSON, or a gRPC
//! status for gRPC calls, see `grpc`), so a refused request never reaches an
//! upstream; `upstream_peer` reads the admitted placement; `upstream_request_filter`
//! sets the trusted, forwarded and trace headers and the upstream target;
//! `request_body_filter` enforces the route's body limit as the body streams; the
//! audit line is written when the response head goes out, and `logging` records the
//! metrics (see `record`). CORS preflights are answered before admission and CORS
//! headers set on every answer (`preflight`); a WebSocket's tunnel keeps the route's
//! clock (`tunnel`).

mod grpc;
mod preflight;
mod record;
mod tunnel;

pub use record::EarlyAudit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType};

use crate::admission::{self, Admitted, Connection, Refused};
use crate::audit::{AuditSink, Slot};
use crate::auth::CacheUse;
use crate::headers::RequestId;
use crate::metrics::Metrics;
use crate::reject::{is_grpc, Reject};
use crate::routing::RouteId;
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::tenant_label::TenantRanking;
use crate::trace::TraceContext;
use crate::websocket::Tunnel;

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

/// How far a request got through admission.
#[derive(Debug)]
enum Admission {
    /// `request_filter` has not run (e.g. the client went away first).
    Pending,
    /// Every stage passed.
    Admitted(Box<Admitted>),
    /// A stage refused.
    Refused(Box<Refused>),
    /// A CORS preflight the gateway answered itself.
    Preflight(RouteId),
}

/// Per-request state: the pinned snapshot, the admission, and the forwarding progress.
#[derive(Debug)]
pub struct Ctx {
    snapshot: Arc<Snapshot>,
    started: Instant,
    request_id: RequestId,
    admission: Admission,
    /// A refusal after admission: the upstream failed, or the body broke a limit.
    failure: Option<Reject>,
    /// The server chosen last, and connection failures so far (each may retry).
    upstream: Option<SocketAddr>,
    connect_failures: u8,
    upstream_sent: Option<Instant>,
    upstream_time: Option<Duration>,
    /// Request body bytes seen so far.
    body_bytes: u64,
    audit_slot: Option<Slot>,
    /// Whether the audit line went out with the response head.
    audited: bool,
    /// The WebSocket tunnel's clock, once the upstream answered 101.
    tunnel: Option<Tunnel>,
    /// The W3C trace the request belongs to, when the gateway propagates one.
    trace: Option<TraceContext>,
}

impl Ctx {
    fn admitted(&self) -> Option<&Admitted> {
        match &self.admission {
            Admission::Admitted(a) => Some(a),
            _ => None,
        }
    }

    /// The matched route, once routing passed.
    fn route(&self) -> Option<RouteId> {
        match &self.admission {
            Admission::Admitted(a) => Some(a.route),
            Admission::Refused(r) => r.route,
            Admission::Preflight(route) => Some(*route),
            Admission::Pending => None,
        }
    }

    /// The refusal the client got, if any.
    fn reject(&self) -> Option<Reject> {
        match &self.admission {
            Admission::Refused(r) => Some(r.reject),
            _ => self.failure,
        }
    }
}

/// What admission needs of the connection.
fn connection(session: &Session) -> Connection {
    Connection {
        local: session.server_addr().and_then(|a| a.as_inet()).copied(),
        peer: session.client_addr().and_then(|a| a.as_inet()).map(SocketAddr::ip),
        tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
    }
}

impl Gateway {
    /// Writes the refusal response: status, JSON body, and the headers the table asks for.
    async fn respond(&self, session: &mut Session, ctx: &Ctx, reject: Reject) -> Result<()> {
        if is_grpc(session.req_header().headers.get(http::header::CONTENT_TYPE)) {
            return self.respond_grpc(session, ctx, reject).await;
        }
        let body = reject.body(ctx.request_id.as_str());
        let mut resp = ResponseHeader::build(reject.status(), Some(6))?;
        resp.insert_header("content-type", "application/json")?;
        resp.insert_header("content-length", body.len())?;
        resp.insert_header("cache-control", "no-store")?;
        ctx.snapshot.headers.request_id.set_response(&mut resp, ctx.request_id.header_value())?;
        Self::cors_headers(session, ctx, &mut resp)?;
        if let Some(challenge) = reject.www_authenticate() {
            resp.insert_header("www-authenticate", challenge)?;
        }
        if let Some(after) = reject.retry_after() {
            resp.insert_header("retry-after", after.as_secs())?;
        }
        let limit = match &ctx.admission {
            Admission::Refused(r) => r.limit,
            _ => None,
        };
        if let (Some(field), Some(limit)) = (reject.ratelimit_field(), limit) {
            let policy = ctx.snapshot.plans[usize::from(limit.plan.0)].policy_header.clone();
            resp.insert_header("ratelimit-policy", policy)?;
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
            (ErrorSource::Downstream, ErrorType::ReadTimedout) => Some(Reject::RequestTimeout),
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

    fn count_token_cache(&self, cache: Option<CacheUse>) {
        match cache {
            Some(CacheUse::Hit) => self.metrics.token_cache_hits.inc(),
            Some(CacheUse::Miss) => self.metrics.token_cache_misses.inc(),
            Some(CacheUse::Bypass) | None => {}
        }
    }

    /// Reads the request id, strips client identity headers and reserves the audit slot.
    fn receive(&self, session: &mut Session, ctx: &mut Ctx) -> Result<(), Reject> {
        let snap = &ctx.snapshot;
        let req = session.req_header_mut();
        ctx.request_id = snap.headers.client_request_id(req).unwrap_or_else(RequestId::generate);
        let stripped = snap.headers.strip(req);
        if stripped > 0 {
            self.metrics.headers_stripped.inc_by(stripped as u64);
            log::debug!(target: "isogate::headers", "request {}: stripped {stripped} client identity header value(s)", ctx.request_id);
        }
        ctx.trace = snap.trace_context.then(|| TraceContext::of_request(&req.headers));
        ctx.audit_slot = self.audit.reserve();
        if ctx.audit_slot.is_none() && self.audit.fail_closed() {
            return Err(Reject::AuditUnavailable);
        }
        session.set_read_timeout(Some(snap.body_read_timeout));
        Ok(())
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        crate::connections::request_began();
        Ctx {
            snapshot: self.snapshots.load(),
            started: Instant::now(),
            request_id: RequestId::unset(),
            admission: Admission::Pending,
            failure: None,
            upstream: None,
            connect_failures: 0,
            upstream_sent: None,
            upstream_time: None,
            body_bytes: 0,
            audit_slot: None,
            audited: false,
            tunnel: None,
            trace: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let outcome = match self.receive(session, ctx) {
            Ok(()) => {
                if let Some(route) = Self::preflight_route(session, ctx) {
                    self.answer_preflight(session, ctx, route).await?;
                    return Ok(true);
                }
                let snap = Arc::clone(&ctx.snapshot);
                admission::admit(&snap, session.req_header(), &connection(session)).await
            }
            Err(reject) => Err(Refused::early(reject)),
        };
        match outcome {
            Ok(admitted) => {
                self.count_token_cache(Some(admitted.token_cache));
                ctx.admission = Admission::Admitted(Box::new(admitted));
                Ok(false)
            }
            Err(refused) => {
                self.count_token_cache(refused.token_cache);
                let reject = refused.reject;
                ctx.admission = Admission::Refused(Box::new(refused));
                self.respond(session, ctx, reject).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // request_filter answered every refusal, so the request is admitted here; fail closed anyway.
        let Some(admitted) = ctx.admitted() else {
            return Error::e_explain(ErrorType::InternalError, "request reached the upstream phase unadmitted");
        };
        let key = admitted.identity.tenant.as_deref().unwrap_or("");
        let avoid = ctx.connect_failures.gt(&0).then_some(ctx.upstream).flatten();
        match ctx.snapshot.pools.get(admitted.placement.pool).peer(key.as_bytes(), avoid) {
            Ok((addr, mut peer)) => {
                ctx.upstream = Some(addr);
                Self::upgrade_peer(session, ctx, &mut peer);
                Ok(peer)
            }
            Err(reject) => {
                ctx.failure = Some(reject);
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
        if let (Some(admitted), Some(addr)) = (ctx.admitted(), ctx.upstream) {
            let pool = ctx.snapshot.pools.get(admitted.placement.pool);
            if pool.report_failure(addr) {
                self.metrics.upstream_ejections.with_label_values(&[&pool.name]).inc();
            }
            let attempts = usize::from(ctx.connect_failures) + 1;
            ctx.connect_failures = ctx.connect_failures.saturating_add(1);
            if attempts < pool.len() {
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
        if let (Some(admitted), Some(addr)) = (ctx.admitted(), ctx.upstream) {
            ctx.snapshot.pools.get(admitted.placement.pool).report_success(addr);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(admitted) = ctx.admitted() else {
            return Error::e_explain(ErrorType::InternalError, "request reached the upstream phase unadmitted");
        };
        let conn = connection(session);
        admitted.prepare_upstream(&ctx.snapshot, &ctx.request_id, &conn, session.req_header(), upstream)?;
        if let Some(trace) = &ctx.trace {
            trace.apply(upstream)?;
        }
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.tunnel.is_some() {
            // A WebSocket's messages are not a request body: no body limit, only the clock.
            return Self::rearm(session, ctx);
        }
        let Some(route) = ctx.admitted().map(|a| a.route) else { return Ok(()) };
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_bytes > ctx.snapshot.routes.get(route).max_body_bytes {
            // The upstream connection is dropped with the body unfinished, so the upstream
            // never sees a complete request.
            ctx.failure = Some(Reject::BodyTooLarge);
            return Error::e_explain(ErrorType::HTTPStatus(413), "request body over the route's limit");
        }
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

    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        // Clients and upstream logs can quote the same id.
        ctx.snapshot.headers.request_id.set_response(resp, ctx.request_id.header_value())?;
        Self::cors_headers(session, ctx, resp)?;
        Self::open_tunnel(session, ctx, resp)?;
        // The status is known: the audit line goes now, so a long stream holds no slot.
        self.audit_line(session, None, resp.status.as_u16(), ctx);
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        Self::rearm(session, ctx)?;
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if ctx.tunnel.is_some() {
            // An open WebSocket ended (a timeout, or a side went away): nothing was refused.
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        }
        let reject = ctx.failure.or_else(|| Self::upstream_reject(e));
        ctx.failure = reject;
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

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, e: &Error) -> bool {
        // A WebSocket closed by its idle timeout or lifetime is the route doing its job.
        ctx.tunnel.is_some() && e.etype() == &ErrorType::ReadTimedout
    }

    /// The request for pingora's error log: method, path and host, never the query
    /// string, which may carry a token.
    fn request_summary(&self, session: &Session, _ctx: &Ctx) -> String {
        let req = session.req_header();
        let host = req.headers.get(http::header::HOST).map(|h| String::from_utf8_lossy(h.as_bytes()));
        format!("{} {}, Host: {}", req.method, req.uri.path(), host.unwrap_or_default())
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
        // Every in-flight request holds one; growth here should be deliberate. Admission's
        // products are boxed; pingora's own per-request session is several kilobytes.
        assert!(std::mem::size_of::<Ctx>() <= 256, "Ctx is {} bytes", std::mem::size_of::<Ctx>());
    }

    #[test]
    fn reject_table_covers_upstream_failures() {
        let refused = Error::new(ErrorType::ConnectRefused).into_up();
        assert_eq!(Gateway::upstream_reject(&refused), Some(Reject::UpstreamUnreachable));
        let timeout = Error::new(ErrorType::ConnectTimedout).into_up();
        assert_eq!(Gateway::upstream_reject(&timeout), Some(Reject::UpstreamTimeout));
        let gone = Error::new(ErrorType::ReadError).into_down();
        assert_eq!(Gateway::upstream_reject(&gone), None);
        let slow = Error::new(ErrorType::ReadTimedout).into_down();
        assert_eq!(Gateway::upstream_reject(&slow), Some(Reject::RequestTimeout));
        assert_eq!(Reject::UpstreamTimeout.status(), 504);
    }
}
