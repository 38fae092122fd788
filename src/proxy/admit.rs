//! `request_filter`'s work, in request order: route (strip, normalise, match), identify
//! (with one unknown-`kid` refetch), then bind, authorise, place and rewrite. Every
//! refusal comes back as a `Reject`; on success the context holds the placement.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{AUTHORIZATION, HOST};
use pingora::prelude::*;

use super::{request_host, Ctx, Gateway};
use crate::auth::jwks::Refetch;
use crate::auth::{AuthError, CacheUse, Refusal};
use crate::bind::RouteEnvironment;
use crate::config::file::LimitKey;
use crate::headers::new_request_id;
use crate::policy::{self, Policies, RequestFacts};
use crate::ratelimit::{Outcome, PlanId};
use crate::reject::Reject;
use crate::routing::{self, path};
use crate::template::Values;

fn authorization(session: &Session) -> impl Iterator<Item = &[u8]> {
    session.req_header().headers.get_all(AUTHORIZATION).iter().map(|v| v.as_bytes())
}

impl Gateway {
    /// Runs every stage up to the placement.
    pub(super) async fn admit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<(), Reject> {
        let expected = self.route(session, ctx)?;
        self.identify(session, ctx).await?;
        self.authorize(session, ctx, expected)?;
        self.limit(ctx).await
    }

    /// Charges the route's cost to the request's plan; refuses when over rate or quota.
    async fn limit(&self, ctx: &mut Ctx) -> Result<(), Reject> {
        let snap = Arc::clone(&ctx.snapshot);
        let (Some(identity), Some(env), Some(route)) = (&ctx.identity, ctx.env, ctx.route) else {
            return Ok(());
        };
        let assignment = &snap.plan_assignment[env.index()];
        let claimed = identity
            .plan
            .as_deref()
            .and_then(|p| snap.plans.iter().position(|x| &*x.name == p))
            .map(|i| PlanId(i as u16));
        let Some(plan_id) = assignment.plan_for(identity.test_account, claimed, identity.tenant.as_deref()) else {
            return Ok(());
        };
        let plan = &snap.plans[usize::from(plan_id.0)];
        let env_name = snap.binder.name(env);
        let tenant = identity.tenant.as_deref().unwrap_or("-");
        let key = match (snap.limit_key, identity.user.as_deref()) {
            (LimitKey::TenantUser, Some(user)) => format!("{env_name}:{tenant}:{user}"),
            _ => format!("{env_name}:{tenant}"),
        };
        let (outcome, mode) = snap.limiter.check(&key, plan, snap.routes.get(route).cost).await;
        ctx.limit = Some((plan_id, mode));
        match outcome {
            Outcome::Allow => Ok(()),
            Outcome::RateLimited(wait) => {
                Err(Reject::RateLimited { retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX) })
            }
            Outcome::QuotaExhausted(e) => {
                Err(Reject::QuotaExhausted { window: e.window, retry_after_s: e.retry_after.as_secs() })
            }
            Outcome::Unavailable => Err(Reject::LimiterUnavailable),
        }
    }

    /// Strips client identity headers, reserves the audit slot, normalises the path and
    /// matches the route. Returns the environment the route expects.
    fn route(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Option<RouteEnvironment>, Reject> {
        let snap = Arc::clone(&ctx.snapshot);
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        let req = session.req_header_mut();
        ctx.request_id = snap.headers.client_request_id(req).map_or_else(new_request_id, str::to_owned);
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
        let path = path::normalize(req.uri.path()).map_err(|_| Reject::AmbiguousPath)?;
        let route_id = snap.routes.find(host.as_deref(), &path).ok_or(Reject::NoRoute)?;
        ctx.route = Some(route_id);
        let expected = snap.binder.expected(snap.routes.get(route_id).environment, host.as_deref(), local);
        ctx.env = Ctx::fixed_env(expected);
        if let Cow::Owned(normalized) = path {
            ctx.normalized_path = Some(normalized.into_boxed_str());
        }
        Ok(expected)
    }

    /// Verifies the token. An unknown `kid` from a JWKS issuer triggers one refetch (or
    /// none, inside the cooldown) and one more try.
    async fn identify(&self, session: &Session, ctx: &mut Ctx) -> Result<(), Reject> {
        let snap = Arc::clone(&ctx.snapshot);
        let mut result = snap.auth.identify(authorization(session));
        if let Err(Refusal { error: AuthError::UnknownKid, issuer: Some(id), .. }) = &result {
            if let Some(remote) = snap.auth.issuer(*id).remote() {
                if remote.refetch_unknown_kid().await == Refetch::Refreshed {
                    result = snap.auth.identify(authorization(session));
                }
            }
        }
        match result {
            Ok((identity, cache)) => {
                match cache {
                    CacheUse::Hit => self.metrics.token_cache_hits.inc(),
                    CacheUse::Miss => self.metrics.token_cache_misses.inc(),
                    CacheUse::Bypass => {}
                }
                ctx.identity = Some(identity);
                Ok(())
            }
            Err(refusal) => {
                let error = refusal.error;
                ctx.refusal = Some(Box::new(refusal));
                Err(Reject::Unauthenticated(error))
            }
        }
    }

    /// Binds the environment, authorises, places the request and applies rewrites.
    fn authorize(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        expected: Option<RouteEnvironment>,
    ) -> Result<(), Reject> {
        let snap = Arc::clone(&ctx.snapshot);
        let (Some(identity), Some(route_id)) = (&ctx.identity, ctx.route) else {
            return Err(Reject::Unauthenticated(AuthError::Missing));
        };
        let route = snap.routes.get(route_id);
        let binding = snap.binder.bind(expected, identity.environment.as_deref())?;
        ctx.env = Some(binding.env);
        let req = session.req_header();
        let path = ctx.normalized_path.as_deref().unwrap_or(req.uri.path());
        let policies =
            Policies { environment: &snap.policies[binding.env.index()], route: &route.policy, access: &snap.access };
        let mut reasons = req.headers.get_all(&snap.reason_header).iter();
        let reason = reasons.next().filter(|_| reasons.next().is_none()).map(|v| v.as_bytes());
        let facts = RequestFacts { path, reason, now: RequestFacts::now_seconds() };
        let permit = ctx.permit.insert(policy::authorize(identity, &binding, &policies, &facts)?);
        let env_name = snap.binder.name(binding.env);
        ctx.placement = Some(routing::place(permit, identity, env_name, &snap.tenancy, &snap.pool_hints)?);
        let values = Values { env: env_name, tenant: identity.tenant.as_deref(), sub: identity.user.as_deref() };
        let rewrite = route.rewrite(path, &values)?;

        let new_path = rewrite.path.or_else(|| ctx.normalized_path.take().map(String::from));
        let req = session.req_header_mut();
        if let Some(new_path) = new_path {
            ctx.client_path = Some(req.uri.path().into());
            let uri = match req.uri.query() {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path,
            };
            req.set_uri(uri.parse().map_err(|_| Reject::AmbiguousPath)?);
        }
        if let Some(host) = rewrite.host {
            req.insert_header(HOST, host).map_err(|_| Reject::UnsafeTenantValue)?;
        }
        Ok(())
    }
}
