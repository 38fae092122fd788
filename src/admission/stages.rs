//! The stage functions `admit` composes, in request order. Each does what its name says
//! and returns its own product or the refusal.

use std::borrow::Cow;
use std::sync::Arc;

use http::request::Parts;
use pingora::http::RequestHeader;

use super::target::{self, Target};
use super::{Connection, Limit};
use crate::auth::jwks::Refetch;
use crate::auth::{AuthError, CacheUse, Identity, Refusal};
use crate::bind::{Binding, EnvId, RouteEnvironment};
use crate::config::file::LimitKey;
use crate::policy::{self, Permit, Policies, RequestFacts};
use crate::ratelimit::{Outcome, PlanId};
use crate::reject::Reject;
use crate::routing::path::{self, NormalPath};
use crate::routing::{self, Placement, RouteId};
use crate::snapshot::Snapshot;
use crate::template::Values;
use crate::websocket;

/// A routed request: the route, the environment it expects, and the normalised path.
pub(super) struct Routed<'h> {
    pub(super) id: RouteId,
    pub(super) expected: Option<RouteEnvironment>,
    pub(super) path: NormalPath<'h>,
}

impl Routed<'_> {
    /// The environment, when the route, host or listener fixes it.
    pub(super) fn fixed_env(&self) -> Option<EnvId> {
        match self.expected {
            Some(RouteEnvironment::Fixed(env)) => Some(env),
            _ => None,
        }
    }
}

/// What the upstream request's target becomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// Path and query, when normalisation or a rewrite changed the path.
    pub path_and_query: Option<Box<str>>,
    /// The host, when the route rewrites it.
    pub host: Option<Box<str>>,
}

/// Normalises the path and matches the route on host and path (without segment
/// parameters); a route that does not allow parameters refuses a path that has them.
pub(super) fn route<'h>(snap: &Snapshot, head: &'h RequestHeader, conn: &Connection) -> Result<Routed<'h>, Reject> {
    let Target { host, path } = target::read(head)?;
    let path = path::normalize(path).map_err(|_| Reject::AmbiguousPath)?;
    let id = snap.routes.find(host.as_deref(), &path.matching).ok_or(Reject::NoRoute)?;
    let route = snap.routes.get(id);
    if path.has_parameters() && !route.path_parameters {
        return Err(Reject::AmbiguousPath);
    }
    let expected = snap.binder.expected(route.environment, host.as_deref(), conn.local);
    Ok(Routed { id, expected, path })
}

/// Refuses a body whose declared length is over the route's limit before anything is
/// sent upstream; chunked bodies are counted as they stream (see `proxy`).
pub(super) fn check_body(snap: &Snapshot, routed: &Routed<'_>, head: &Parts) -> Result<(), Reject> {
    let declared = head.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(length) if length > snap.routes.get(routed.id).max_body_bytes => Err(Reject::BodyTooLarge),
        _ => Ok(()),
    }
}

/// Reads the token from the route's sources (or the issuers') and verifies it, with one
/// JWKS refetch for an unknown `kid`. On a route without its own list, the token's
/// issuer must list the source the token came from.
pub(super) async fn identify(
    snap: &Snapshot,
    routed: &Routed<'_>,
    head: &Parts,
) -> Result<(Arc<Identity>, CacheUse), Refusal> {
    let own = snap.routes.get(routed.id).token_sources.as_ref();
    let sources = own.unwrap_or(snap.auth.sources());
    let found = sources.find(head, websocket::is_upgrade(head), snap.auth.max_bytes())?;
    let (identity, cache) = verify_with_refetch(snap, || snap.auth.verify(&found.token)).await?;
    if own.is_none() && !snap.auth.source_allowed(identity.issuer, found.source) {
        let refused =
            Refusal { error: AuthError::SourceNotAllowed, issuer: Some(identity.issuer), kid: identity.kid.clone() };
        return Err(refused);
    }
    Ok((identity, cache))
}

/// Runs `verify`, and once more after a JWKS refetch when the token's `kid` was unknown
/// to its issuer (none inside the refetch cooldown).
pub(crate) async fn verify_with_refetch(
    snap: &Snapshot,
    verify: impl Fn() -> Result<(Arc<Identity>, CacheUse), Refusal>,
) -> Result<(Arc<Identity>, CacheUse), Refusal> {
    let result = verify();
    if let Err(Refusal { error: AuthError::UnknownKid, issuer: Some(id), .. }) = &result {
        if let Some(remote) = snap.auth.issuer(*id).remote() {
            if remote.refetch_unknown_kid().await == Refetch::Refreshed {
                return verify();
            }
        }
    }
    result
}

/// Authorises the bound identity on the matched route.
pub(super) fn authorize(
    snap: &Snapshot,
    routed: &Routed<'_>,
    identity: &Identity,
    binding: &Binding,
    head: &Parts,
) -> Result<Permit, Reject> {
    let policies = Policies {
        environment: &snap.policies[binding.env.index()],
        route: &snap.routes.get(routed.id).policy,
        access: &snap.access,
    };
    let mut reasons = head.headers.get_all(&snap.reason_header).iter();
    let reason = reasons.next().filter(|_| reasons.next().is_none()).map(|v| v.as_bytes());
    let facts = RequestFacts { path: &routed.path.matching, reason, now: RequestFacts::now_seconds() };
    policy::authorize(identity, binding, &policies, &facts)
}

/// Picks the pool and renders the database hints.
pub(super) fn place(snap: &Snapshot, permit: &Permit, identity: &Identity) -> Result<Placement, Reject> {
    let env_name = snap.binder.name(permit.env());
    routing::place(permit, identity, env_name, &snap.tenancy, &snap.pool_hints)
}

/// The upstream target: the normalised path, or the route's rewrite of it, with the
/// client's query string; and the rewritten host.
pub(super) fn rewrite(
    snap: &Snapshot,
    routed: &Routed<'_>,
    identity: &Identity,
    permit: &Permit,
    head: &Parts,
) -> Result<UpstreamTarget, Reject> {
    let route = snap.routes.get(routed.id);
    let values = Values {
        env: snap.binder.name(permit.env()),
        tenant: identity.tenant.as_deref(),
        sub: identity.user.as_deref(),
    };
    let rewrite = route.rewrite(&routed.path.forward, &values)?;
    let path = match (rewrite.path, &routed.path.forward) {
        (Some(path), _) => Some(path),
        (None, Cow::Owned(normalised)) => Some(normalised.clone()),
        (None, Cow::Borrowed(_)) => None,
    };
    let path_and_query = path.map(|p| match head.uri.query() {
        Some(q) => format!("{p}?{q}").into_boxed_str(),
        None => p.into_boxed_str(),
    });
    Ok(UpstreamTarget { path_and_query, host: rewrite.host.map(String::into_boxed_str) })
}

/// Charges the route's cost to the request's plan; refuses when over rate or quota.
pub(super) async fn limit(
    snap: &Snapshot,
    routed: &Routed<'_>,
    identity: &Identity,
    permit: &Permit,
) -> Result<Option<Limit>, (Reject, Option<Limit>)> {
    let env = permit.env();
    let claimed =
        identity.plan.as_deref().and_then(|p| snap.plans.iter().position(|x| &*x.name == p)).map(|i| PlanId(i as u16));
    let assignment = &snap.plan_assignment[env.index()];
    let Some(plan_id) = assignment.plan_for(identity.test_account, claimed, identity.tenant.as_deref()) else {
        return Ok(None);
    };
    let plan = &snap.plans[usize::from(plan_id.0)];
    let key = identity.limit_key(snap.limit_key == LimitKey::TenantUser);
    let (outcome, mode) = snap.limiter.check(key, plan, snap.routes.get(routed.id).cost).await;
    let limit = Some(Limit { plan: plan_id, mode });
    let reject = match outcome {
        Outcome::Allow => return Ok(limit),
        Outcome::RateLimited(wait) => {
            Reject::RateLimited { retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX) }
        }
        Outcome::QuotaExhausted(e) => {
            Reject::QuotaExhausted { window: e.window, retry_after_s: e.retry_after.as_secs() }
        }
        Outcome::Unavailable => Reject::LimiterUnavailable,
    };
    Err((reject, limit))
}
