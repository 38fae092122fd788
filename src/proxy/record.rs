//! Stage "record": the one audit line and the metrics of a request, written from
//! `logging()` for every request, allowed or refused.

use std::time::SystemTime;

use http::header::USER_AGENT;
use pingora::prelude::*;
use pingora::ErrorSource;

use super::{Ctx, Gateway};
use crate::audit::{self, AuditRecord};
use crate::headers::new_request_id;
use crate::metrics::{status_class, Account, Decision, NONE};
use crate::reject::Reject;
use crate::tenant_label::OTHER;

impl Gateway {
    pub(super) fn record(&self, session: &Session, e: Option<&Error>, ctx: &mut Ctx) {
        if ctx.request_id.is_empty() {
            ctx.request_id = new_request_id();
        }
        let snap = &ctx.snapshot;
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let decision = if ctx.reject.is_some() { Decision::Deny } else { Decision::Allow };
        let reason = match (ctx.reject, e) {
            (Some(r), _) => r.reason(),
            (None, Some(e)) if e.esource() == &ErrorSource::Upstream => "upstream_reset",
            (None, Some(_)) => "client_aborted",
            (None, None) => "ok",
        };
        let env = ctx.env.map(|id| snap.binder.name(id));
        let route = ctx.route.map(|id| &*snap.routes.get(id).name);
        let pool = ctx.placement.as_ref().map(|p| &*snap.pools.get(p.pool).name);
        let id = ctx.identity.as_ref();
        let permit = ctx.permit.as_ref();
        let refusal = ctx.refusal.as_deref();
        let reported = permit.and_then(|p| p.reported());
        let account = if id.is_some_and(|i| i.test_account) { Account::Test } else { Account::Regular };
        let elapsed = ctx.started.elapsed();

        let m = &self.metrics;
        let env_label = env.unwrap_or(NONE);
        m.requests
            .with_label_values(&[
                env_label,
                route.unwrap_or(NONE),
                decision.as_str(),
                status_class(status),
                account.as_str(),
            ])
            .inc();
        match env {
            Some(env) => m.request_duration.with_label_values(&[env]).observe(elapsed.as_secs_f64()),
            None => m.unbound_duration.observe(elapsed.as_secs_f64()),
        }
        if let Some(r) = ctx.reject {
            m.rejections.with_label_values(&[r.reason()]).inc();
            if let Reject::Unauthenticated(a) = r {
                m.auth_failures.with_label_values(&[a.reason()]).inc();
            }
        }
        if let Some(r) = reported {
            m.report_only.with_label_values(&[env_label, r.reason()]).inc();
        }
        if permit.and_then(|p| p.access_reason()).is_some() {
            m.access_reasons.with_label_values(&[env_label]).inc();
        }
        if let (Some(ranking), Some(tenant)) = (&self.tenants, id.and_then(|i| i.tenant.as_deref())) {
            let ranked = ranking.observe(tenant);
            if let Some(gone) = ranked.evicted {
                let _ = m.tenant_requests.remove_label_values(&[&gone]);
            }
            m.tenant_requests.with_label_values(&[if ranked.top { tenant } else { OTHER }]).inc();
        }
        if let Some((plan, mode)) = ctx.limit {
            let result = match ctx.reject {
                Some(r @ (Reject::RateLimited { .. } | Reject::QuotaExhausted { .. } | Reject::LimiterUnavailable)) => {
                    r.reason()
                }
                _ => "allow",
            };
            m.rate_limit
                .with_label_values(&[env_label, &snap.plans[usize::from(plan.0)].name, result, mode.as_str()])
                .inc();
        }
        if let (Some(pool), Some(t)) = (pool, ctx.upstream_time) {
            m.upstream_duration.with_label_values(&[pool]).observe(t.as_secs_f64());
        }

        let req = session.req_header();
        let record = AuditRecord {
            ts: SystemTime::now(),
            request_id: &ctx.request_id,
            environment: env,
            tenant: id.and_then(|i| i.tenant.as_deref()),
            user: id.and_then(|i| i.user.as_deref()),
            roles: id.map_or(&[], |i| i.roles.as_slice()),
            test_account: id.is_some_and(|i| i.test_account),
            issuer: id.map(|i| i.issuer).or(refusal.and_then(|r| r.issuer)).map(|i| &*snap.auth.issuer(i).name),
            kid: id.and_then(|i| i.kid.as_deref()).or(refusal.and_then(|r| r.kid.as_deref())),
            method: req.method.as_str(),
            path: ctx.client_path.as_deref().unwrap_or(req.uri.path()),
            route,
            pool,
            upstream: ctx.upstream.map(|a| a.to_string()),
            status,
            decision: decision.as_str(),
            reason,
            report_only: reported.map(Reject::reason),
            access_reason: permit.and_then(|p| p.access_reason()),
            system_mode: permit.is_some_and(|p| p.system_mode()),
            db_schema: ctx.placement.as_ref().and_then(|p| p.db_schema.as_deref()),
            plan: ctx.limit.map(|(p, _)| &*snap.plans[usize::from(p.0)].name),
            limit_mode: ctx.limit.map(|(_, m)| m.as_str()),
            latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            client: session.client_addr().map(|a| a.to_string()),
            user_agent: req.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()),
        };
        match audit::encode(&record) {
            Some(line) => self.audit.submit(ctx.audit_slot.take(), line),
            None => self.audit.count_lost(),
        }
        if let Some(r) = ctx.reject.filter(|r| r.is_policy()) {
            crate::log_limited!(REJECT, Info, "request {} refused: {} ({})", ctx.request_id, r.reason(), r.status());
        }
    }
}
