//! The pingora glue: `ProxyHttp` phases call the stages in request order and keep their
//! results in `Ctx`. `request_filter` runs identify → bind → authorise → route and
//! answers every refusal itself, so a refused request never reaches an upstream;
//! `upstream_peer` reads the chosen pool; `upstream_request_filter` applies the header
//! plan; `logging` writes the one audit line and the metrics for every request.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, USER_AGENT};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType};

use crate::audit::{self, AuditRecord, AuditSink, Slot};
use crate::auth::Identity;
use crate::bind::{EnvId, RouteEnvironment};
use crate::headers::{new_request_id, Trusted};
use crate::metrics::{status_class, Decision, Metrics, NONE};
use crate::policy;
use crate::reject::Reject;
use crate::routing::{self, normalize_host, RouteId};
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::upstream::PoolId;

/// The gateway application run by pingora's proxy service.
#[derive(Debug)]
pub struct Gateway {
    snapshots: Arc<SnapshotCell>,
    audit: Arc<AuditSink>,
    metrics: Metrics,
}

impl Gateway {
    /// Builds the application over shared state.
    pub fn new(snapshots: Arc<SnapshotCell>, audit: Arc<AuditSink>, metrics: Metrics) -> Self {
        Self {
            snapshots,
            audit,
            metrics,
        }
    }
}

/// Per-request state: the pinned snapshot and each stage's result.
#[derive(Debug)]
pub struct Ctx {
    snapshot: Arc<Snapshot>,
    started: Instant,
    request_id: String,
    route: Option<RouteId>,
    identity: Option<Identity>,
    env: Option<EnvId>,
    pool: Option<PoolId>,
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
        return normalize_host(authority.as_str())
            .map(Some)
            .ok_or(Reject::BadRequest);
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
    /// Runs identify → bind → authorise → route. On success the context holds the pool.
    fn admit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<(), Reject> {
        let snap = Arc::clone(&ctx.snapshot);
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        let req = session.req_header_mut();
        ctx.request_id = snap
            .headers
            .client_request_id(req)
            .map_or_else(new_request_id, str::to_owned);
        let stripped = snap.headers.strip(req);
        if stripped > 0 {
            self.metrics.headers_stripped.inc_by(stripped as u64);
            log::debug!(target: "isogate::headers", "request {}: stripped {stripped} client identity header value(s)", ctx.request_id);
        }
        ctx.audit_slot = self.audit.reserve();
        if ctx.audit_slot.is_none() && self.audit.fail_closed() {
            return Err(Reject::AuditUnavailable);
        }
        let req = session.req_header();
        let host = request_host(req)?;
        let route_id = snap
            .routes
            .find(host.as_deref(), req.uri.path())
            .ok_or(Reject::NoRoute)?;
        ctx.route = Some(route_id);
        let route = snap.routes.get(route_id);
        let expected = snap
            .binder
            .expected(route.environment, host.as_deref(), local);
        ctx.env = Ctx::fixed_env(expected);

        let identity = snap.auth.identify(
            req.headers
                .get_all(AUTHORIZATION)
                .iter()
                .map(|v| v.as_bytes()),
        );
        let identity = ctx
            .identity
            .insert(identity.map_err(Reject::Unauthenticated)?);
        let binding = snap
            .binder
            .bind(expected, identity.environment.as_deref())?;
        ctx.env = Some(binding.env);
        let permit = policy::authorize(identity, &binding, &snap.policies[binding.env.index()])?;
        ctx.pool = Some(routing::select(
            &permit,
            identity.tenant.as_deref(),
            &snap.tenancy,
        )?);
        Ok(())
    }

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
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
        Ok(())
    }

    /// Maps a proxy error to the refusal the client sees (`None`: the client went away).
    fn upstream_reject(e: &Error) -> Option<Reject> {
        match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(503)) => Some(Reject::UpstreamUnavailable),
            (
                ErrorSource::Downstream,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => None,
            (ErrorSource::Downstream, _) => Some(Reject::BadRequest),
            (
                _,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => Some(Reject::UpstreamTimeout),
            _ => Some(Reject::UpstreamUnreachable),
        }
    }

    fn record(&self, session: &Session, e: Option<&Error>, ctx: &mut Ctx) {
        let snap = &ctx.snapshot;
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let decision = if ctx.reject.is_some() {
            Decision::Deny
        } else {
            Decision::Allow
        };
        let reason = match (ctx.reject, e) {
            (Some(r), _) => r.reason(),
            (None, Some(e)) if e.esource() == &ErrorSource::Upstream => "upstream_reset",
            (None, Some(_)) => "client_aborted",
            (None, None) => "ok",
        };
        let env = ctx.env.map(|id| snap.binder.name(id));
        let route = ctx.route.map(|id| &*snap.routes.get(id).name);
        let pool = ctx.pool.map(|id| &*snap.pools.get(id).name);
        let elapsed = ctx.started.elapsed();

        let m = &self.metrics;
        m.requests
            .with_label_values(&[
                env.unwrap_or(NONE),
                route.unwrap_or(NONE),
                decision.as_str(),
                status_class(status),
            ])
            .inc();
        match env {
            Some(env) => m
                .request_duration
                .with_label_values(&[env])
                .observe(elapsed.as_secs_f64()),
            None => m.unbound_duration.observe(elapsed.as_secs_f64()),
        }
        if let Some(r) = ctx.reject {
            m.rejections.with_label_values(&[r.reason()]).inc();
            if let Reject::Unauthenticated(a) = r {
                m.auth_failures.with_label_values(&[a.reason()]).inc();
            }
        }
        if let (Some(pool), Some(t)) = (pool, ctx.upstream_time) {
            m.upstream_duration
                .with_label_values(&[pool])
                .observe(t.as_secs_f64());
        }

        if ctx.request_id.is_empty() {
            ctx.request_id = new_request_id();
        }
        let req = session.req_header();
        let id = ctx.identity.as_ref();
        let record = AuditRecord {
            ts: SystemTime::now(),
            request_id: &ctx.request_id,
            environment: env,
            tenant: id.and_then(|i| i.tenant.as_deref()),
            user: id.and_then(|i| i.user.as_deref()),
            roles: id.map_or(&[], |i| i.roles.as_slice()),
            test_account: id.is_some_and(|i| i.test_account),
            issuer: id.map(|i| &*snap.auth.issuer(i.issuer).name),
            method: req.method.as_str(),
            path: req.uri.path(),
            route,
            pool,
            upstream: ctx.upstream.map(|a| a.to_string()),
            status,
            decision: decision.as_str(),
            reason,
            latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            client: session.client_addr().map(|a| a.to_string()),
            user_agent: req.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()),
        };
        match audit::encode(&record) {
            Some(line) => self.audit.submit(ctx.audit_slot.take(), line),
            None => self.audit.count_lost(),
        }
        if let Some(r) = ctx.reject.filter(|r| r.is_policy()) {
            log::info!(target: "isogate::reject", "request {} refused: {} ({})", ctx.request_id, r.reason(), r.status());
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
            pool: None,
            upstream: None,
            reject: None,
            audit_slot: None,
            upstream_sent: None,
            upstream_time: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let Err(reject) = self.admit(session, ctx) else {
            return Ok(false);
        };
        ctx.reject = Some(reject);
        self.respond(session, ctx, reject).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // request_filter answered every refusal, so a pool is always set here; fail closed anyway.
        let pool = ctx
            .pool
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no pool chosen"))?;
        let key = ctx
            .identity
            .as_ref()
            .and_then(|i| i.tenant.as_deref())
            .unwrap_or("");
        let _ = session;
        match ctx.snapshot.pools.get(pool).peer(key.as_bytes()) {
            Ok((addr, peer)) => {
                ctx.upstream = Some(addr);
                Ok(peer)
            }
            Err(reject) => {
                ctx.reject = Some(reject);
                Err(Error::explain(
                    ErrorType::HTTPStatus(reject.status()),
                    reject.reason(),
                ))
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let snap = &ctx.snapshot;
        let (Some(identity), Some(env), Some(pool), Some(route)) =
            (&ctx.identity, ctx.env, ctx.pool, ctx.route)
        else {
            return Error::e_explain(
                ErrorType::InternalError,
                "request reached the upstream phase unauthorised",
            );
        };
        let trusted = Trusted {
            identity,
            environment: snap.binder.header_value(env),
            pool: &snap.pools.get(pool).header_value,
            request_id: &ctx.request_id,
            forward_authorization: snap.routes.get(route).forward_authorization,
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

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
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
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        self.record(session, e, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_host_headers_are_malformed() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("host", "a.example.com").unwrap();
        assert_eq!(
            request_host(&req).unwrap().as_deref(),
            Some("a.example.com")
        );
        req.append_header("host", "b.example.com").unwrap();
        assert_eq!(request_host(&req), Err(Reject::BadRequest));
    }

    #[test]
    fn reject_table_covers_upstream_failures() {
        let refused = Error::new(ErrorType::ConnectRefused).into_up();
        assert_eq!(
            Gateway::upstream_reject(&refused),
            Some(Reject::UpstreamUnreachable)
        );
        let timeout = Error::new(ErrorType::ConnectTimedout).into_up();
        assert_eq!(
            Gateway::upstream_reject(&timeout),
            Some(Reject::UpstreamTimeout)
        );
        let gone = Error::new(ErrorType::ReadError).into_down();
        assert_eq!(Gateway::upstream_reject(&gone), None);
        assert_eq!(Reject::UpstreamTimeout.status(), 504);
    }
}
