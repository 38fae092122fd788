//! Stage "record": the audit line and the metrics of a request, for every request,
//! allowed or refused. The audit line goes out when the response head does (so a
//! WebSocket or an event stream frees its queue slot at once), or from `logging()` for
//! requests that never got a proxied response head; an optional second line records
//! how a response ended. Metrics are recorded once, in `logging()`.

use std::time::SystemTime;

use http::header::USER_AGENT;
use pingora::prelude::*;
use pingora::ErrorSource;

use std::net::SocketAddr;
use std::sync::Arc;

use super::{Admission, Ctx, Gateway};
use crate::admission::Limit;
use crate::audit::AuditSink;
use crate::audit::{self, AuditRecord, StreamEnd};
use crate::auth::{Identity, Refusal};
use crate::bind::EnvId;
use crate::connections::EarlyRefusals;
use crate::headers::RequestId;
use crate::metrics::Metrics;
use crate::metrics::{status_class, Account, Decision, LimitLabels, RequestLabels, NONE};
use crate::policy::Permit;
use crate::reject::Reject;
use crate::routing::{Placement, RouteId};
use crate::tenant_label::OTHER;

/// What is known of a request when it is recorded.
#[derive(Default)]
struct Known<'a> {
    route: Option<RouteId>,
    env: Option<EnvId>,
    identity: Option<&'a Identity>,
    permit: Option<&'a Permit>,
    placement: Option<&'a Placement>,
    token: Option<&'a Refusal>,
    limit: Option<Limit>,
}

impl Ctx {
    fn known(&self) -> Known<'_> {
        match &self.admission {
            Admission::Pending => Known::default(),
            Admission::Admitted(a) => Known {
                route: Some(a.route),
                env: Some(a.env()),
                identity: Some(&a.identity),
                permit: Some(&a.permit),
                placement: Some(&a.placement),
                token: None,
                limit: a.limit,
            },
            Admission::Preflight(route) => Known { route: Some(*route), ..Known::default() },
            Admission::Refused(r) => Known {
                route: r.route,
                env: r.env,
                identity: r.identity.as_deref(),
                permit: None,
                placement: None,
                token: r.token.as_ref(),
                limit: r.limit,
            },
        }
    }

    /// The reason for the audit line and the metrics.
    fn reason(&self, e: Option<&Error>) -> &'static str {
        if let (Some(tunnel), Some(e)) = (&self.tunnel, e) {
            if e.etype() == &pingora::ErrorType::ReadTimedout {
                return tunnel.closed_by_timeout().reason();
            }
        }
        match (self.reject(), e) {
            (Some(r), _) => r.reason(),
            (None, _) if matches!(self.admission, Admission::Preflight(_)) => "cors_preflight",
            (None, Some(e)) if e.esource() == &ErrorSource::Upstream => "upstream_reset",
            (None, Some(_)) => "client_aborted",
            (None, None) => "ok",
        }
    }
}

impl Gateway {
    /// Writes the request's audit line, once.
    pub(super) fn audit_line(&self, session: &Session, e: Option<&Error>, status: u16, ctx: &mut Ctx) {
        if std::mem::replace(&mut ctx.audited, true) {
            return;
        }
        if ctx.request_id.is_unset() {
            ctx.request_id = RequestId::generate();
        }
        let snap = &ctx.snapshot;
        let known = ctx.known();
        let id = known.identity;
        let reject = ctx.reject();
        let reported = known.permit.and_then(Permit::reported);
        let req = session.req_header();
        let trace_id = ctx.trace.map(|t| t.trace_id());
        let record = AuditRecord {
            ts: SystemTime::now(),
            request_id: ctx.request_id.as_str(),
            environment: known.env.map(|e| snap.binder.name(e)),
            tenant: id.and_then(|i| i.tenant.as_deref()),
            user: id.and_then(|i| i.user.as_deref()),
            roles: id.map_or(&[], |i| i.roles.as_slice()),
            test_account: id.is_some_and(|i| i.test_account),
            issuer: id.map(|i| i.issuer).or(known.token.and_then(|r| r.issuer)).map(|i| &*snap.auth.issuer(i).name),
            kid: id.and_then(|i| i.kid.as_deref()).or(known.token.and_then(|r| r.kid.as_deref())),
            method: req.method.as_str(),
            path: req.uri.path(),
            route: known.route.map(|r| &*snap.routes.get(r).name),
            pool: known.placement.map(|p| &*snap.pools.get(p.pool).name),
            upstream: ctx.upstream,
            status,
            decision: if reject.is_some() { Decision::Deny } else { Decision::Allow }.as_str(),
            reason: ctx.reason(e),
            report_only: reported.map(Reject::reason),
            access_reason: known.permit.and_then(Permit::access_reason),
            system_mode: known.permit.is_some_and(Permit::system_mode),
            db_schema: known.placement.and_then(|p| p.db_schema.as_deref()),
            plan: known.limit.map(|l| &*snap.plans[usize::from(l.plan.0)].name),
            limit_mode: known.limit.map(|l| l.mode.as_str()),
            latency_us: u64::try_from(ctx.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            client: session.client_addr().and_then(|a| a.as_inet()).copied(),
            user_agent: req.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()),
            trace_id: trace_id.as_ref().map(|t| t.as_str()),
        };
        let line = record.encode();
        self.audit.submit(ctx.audit_slot.take(), line);
    }

    /// Records a finished request: the audit line if the response head did not carry
    /// it, the end line if configured, and the metrics.
    pub(super) fn record(&self, session: &Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if ctx.audited {
            if ctx.snapshot.settings.audit_stream_end {
                self.stream_end(session, e, status, ctx);
            }
        } else {
            self.audit_line(session, e, status, ctx);
        }
        self.count(status, ctx);
        if let Some(r) = ctx.reject().filter(|r| r.is_policy()) {
            crate::log_limited!(REJECT, Info, "request {} refused: {} ({})", ctx.request_id, r.reason(), r.status());
        }
    }

    fn stream_end(&self, session: &Session, e: Option<&Error>, status: u16, ctx: &Ctx) {
        let end = StreamEnd {
            ts: SystemTime::now(),
            request_id: ctx.request_id.as_str(),
            event: "end",
            status,
            reason: ctx.reason(e),
            bytes_in: session.body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
            duration_us: u64::try_from(ctx.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        };
        match audit::encode(&end) {
            Some(line) => self.audit.submit(None, line),
            None => self.audit.count_lost(),
        }
    }

    fn count(&self, status: u16, ctx: &Ctx) {
        let snap = &ctx.snapshot;
        let cells = &snap.metric_cells;
        let known = ctx.known();
        let reject = ctx.reject();
        let env = known.env.map(|e| (e.index(), snap.binder.name(e)));
        let env_label = env.map_or(NONE, |(_, n)| n);
        let id = known.identity;
        let m = &self.metrics;
        let labels = RequestLabels {
            env,
            route: known.route.map(|r| (usize::from(r.0), &*snap.routes.get(r).name)),
            decision: if reject.is_some() { Decision::Deny } else { Decision::Allow },
            status,
            account: if id.is_some_and(|i| i.test_account) { Account::Test } else { Account::Regular },
        };
        cells.duration(m, env).observe(ctx.started.elapsed().as_secs_f64());
        if let Some(r) = reject {
            m.rejections.with_label_values(&[r.reason()]).inc();
            if let Reject::Unauthenticated(a) = r {
                m.auth_failures.with_label_values(&[a.reason()]).inc();
            }
        }
        if let Some(r) = known.permit.and_then(Permit::reported) {
            m.report_only.with_label_values(&[env_label, r.reason()]).inc();
        }
        if known.permit.and_then(Permit::access_reason).is_some() {
            m.access_reasons.with_label_values(&[env_label]).inc();
        }
        if let (Some(ranking), Some(tenant)) = (&self.tenants, id.and_then(|i| i.tenant.as_deref())) {
            let ranked = ranking.observe(tenant);
            if let Some(gone) = ranked.evicted {
                let _ = m.tenant_requests.remove_label_values(&[&gone]);
            }
            m.tenant_requests.with_label_values(&[if ranked.top { tenant } else { OTHER }]).inc();
        }
        if let Some(limit) = known.limit {
            let result = match reject {
                Some(Reject::RateLimited { .. }) => (1, "rate_limited"),
                Some(Reject::QuotaExhausted { .. }) => (2, "quota_exhausted"),
                Some(Reject::LimiterUnavailable) => (3, "limiter_unavailable"),
                _ => (0, "allow"),
            };
            let plan = usize::from(limit.plan.0);
            let mode = (limit.mode as usize, limit.mode.as_str());
            let labels = LimitLabels { env, plan: (plan, &snap.plans[plan].name), result, mode };
            cells.limit(m, &labels).inc();
        }
        if let (Some(p), Some(t)) = (known.placement, ctx.upstream_time) {
            let pool = usize::from(p.pool.0);
            cells.upstream(m, pool, &snap.pools.get(p.pool).name).observe(t.as_secs_f64());
        }
        // Last, so a reader that sees the request counted sees everything else about it.
        cells.request(m, &labels).inc();
    }
}

/// Records the refusals made before a request reached the proxy's phases.
#[derive(Debug)]
pub struct EarlyAudit {
    audit: Arc<AuditSink>,
    metrics: Metrics,
}

impl EarlyAudit {
    /// Records into the gateway's audit trail and metrics.
    pub fn new(audit: Arc<AuditSink>, metrics: Metrics) -> Self {
        Self { audit, metrics }
    }
}

impl EarlyRefusals for EarlyAudit {
    fn record(&self, peer: Option<SocketAddr>, reject: Reject, request_line: &[u8]) -> RequestId {
        let request_id = RequestId::generate();
        let line = String::from_utf8_lossy(request_line);
        let mut words = line.splitn(3, ' ');
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let record = AuditRecord { client: peer, ..AuditRecord::early(request_id.as_str(), method, path, reject) };
        self.audit.submit(None, record.encode());
        let m = &self.metrics;
        let labels = [NONE, NONE, Decision::Deny.as_str(), status_class(reject.status()), Account::Regular.as_str()];
        m.requests.with_label_values(&labels).inc();
        m.rejections.with_label_values(&[reject.reason()]).inc();
        crate::log_limited!(
            REJECT,
            Info,
            "request {request_id} refused before routing: {} ({})",
            reject.reason(),
            reject.status()
        );
        request_id
    }
}
