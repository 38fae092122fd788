//! Route matching and stage 4, route: pick the route from host and path, then (with a
//! `Permit`) pick the pool from the environment and the tenant.
//!
//! Both are pure functions over the compiled snapshot. Routes match in file order; a
//! path prefix matches whole segments (`/api` matches `/api` and `/api/x`, not
//! `/apix`). Tenants map to their own pool (silo) or share the environment's default
//! pool; an unmapped tenant is refused when the environment says so.

use std::borrow::Cow;
use std::collections::HashMap;

pub mod path;

use crate::auth::source::TokenSources;
use crate::auth::Identity;
use crate::bind::RouteEnvironment;
use crate::policy::{Permit, RoutePolicy};
use crate::reject::Reject;
use crate::template::{valid_schema, Template, Values};
use crate::upstream::PoolId;

/// Index of a route in the compiled snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteId(pub u16);

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name for metrics and audit lines.
    pub name: Box<str>,
    /// Lowercase host names; empty matches any host.
    pub hosts: Box<[Box<str>]>,
    /// Path prefix, always starting with `/`.
    pub path_prefix: Box<str>,
    /// Where the route takes its environment from.
    pub environment: RouteEnvironment,
    /// Whether the client's `Authorization` header goes upstream.
    pub forward_authorization: bool,
    /// Role and test-account requirements.
    pub policy: RoutePolicy,
    /// Replaces `path_prefix` upstream.
    pub rewrite_prefix: Option<Template>,
    /// Sets the upstream `Host`.
    pub rewrite_host: Option<Template>,
    /// Units charged against rates and quotas.
    pub cost: u32,
    /// Whether paths may carry segment parameters.
    pub path_parameters: bool,
    /// Largest request body, in bytes.
    pub max_body_bytes: u64,
    /// Where the token may come from, when the route lists its own sources.
    pub token_sources: Option<TokenSources>,
    /// Whether a cookie that is a token source goes upstream.
    pub forward_token_cookie: bool,
    /// Idle timeout and lifetime of WebSockets.
    pub websocket: crate::websocket::Limits,
    /// Cross-origin rules; `None`: no CORS handling.
    pub cors: Option<Box<crate::cors::Cors>>,
}

/// What a route rewrites on the way upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// New path (with the query string re-attached by the caller).
    pub path: Option<String>,
    /// New `Host`.
    pub host: Option<String>,
}

impl Route {
    /// Renders the route's rewrites for `path` (normalised, matched by this route).
    /// The part after the prefix is kept as it is: it was normalised, so it cannot climb
    /// out of the rewritten prefix. A path whose prefix segments carry parameters has no
    /// clean prefix to replace and is refused as ambiguous.
    pub fn rewrite(&self, path: &str, values: &Values<'_>) -> Result<Rewrite, Reject> {
        let mut out = Rewrite::default();
        if let Some(t) = &self.rewrite_prefix {
            let mut new = t.render(values).map_err(|_| Reject::UnsafeTenantValue)?;
            if !prefix_matches(&self.path_prefix, path) {
                return Err(Reject::AmbiguousPath);
            }
            let rest = path.strip_prefix(&*self.path_prefix).unwrap_or("");
            if !rest.is_empty() && !rest.starts_with('/') && !new.ends_with('/') {
                new.push('/');
            }
            new.push_str(rest);
            out.path = Some(new);
        }
        if let Some(t) = &self.rewrite_host {
            out.host = Some(t.render(values).map_err(|_| Reject::UnsafeTenantValue)?.to_ascii_lowercase());
        }
        Ok(out)
    }

    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        let host_ok = self.hosts.is_empty() || host.is_some_and(|h| self.hosts.iter().any(|x| &**x == h));
        host_ok && prefix_matches(&self.path_prefix, path)
    }
}

/// Whether `prefix` matches `path` on whole segments.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

/// Routes in file order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Box<[Route]>,
}

impl RouteTable {
    /// Builds a table; order is match order.
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes: routes.into() }
    }

    /// The first route matching `host` (lowercase, no port) and `path`.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<RouteId> {
        self.routes.iter().position(|r| r.matches(host, path)).and_then(|i| u16::try_from(i).ok()).map(RouteId)
    }

    /// The route with this id.
    pub fn get(&self, id: RouteId) -> &Route {
        &self.routes[usize::from(id.0)]
    }

    /// All routes, in match order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

/// Normalises a `Host` value for matching: lowercase, no port, no trailing dot.
/// Returns `None` for values that are not a plausible host.
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let host = if raw.starts_with('[') {
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
    {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

/// How one environment places tenants on pools.
#[derive(Debug, Clone, Default)]
pub struct Tenancy {
    /// Pool for tenants without their own; `None` refuses them.
    pub default_pool: Option<PoolId>,
    /// Tenants with their own pool (silo).
    pub tenants: HashMap<Box<str>, PoolId>,
    /// The environment's database hints.
    pub hints: DbHints,
}

/// Database hint templates of an environment or a pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbHints {
    /// Schema template, e.g. `company_{tenant}`.
    pub schema: Option<Template>,
    /// Pool-name template, e.g. `prod-eu-1`.
    pub db_pool: Option<Template>,
}

/// Where an authorised request goes, and the database hints for its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The pool.
    pub pool: PoolId,
    /// Rendered schema hint.
    pub db_schema: Option<String>,
    /// Rendered database pool hint.
    pub db_pool: Option<String>,
}

/// Picks the pool for an authorised request. `tenancy` is indexed by environment.
pub fn select(permit: &Permit, tenant: Option<&str>, tenancy: &[Tenancy]) -> Result<PoolId, Reject> {
    let t = tenancy.get(permit.env().index()).ok_or(Reject::UnknownEnvironment)?;
    tenant.and_then(|id| t.tenants.get(id).copied()).or(t.default_pool).ok_or(Reject::TenantNotMapped)
}

/// Picks the pool and renders its database hints; a pool's own hint templates win over
/// the environment's. A schema that is not `^[a-z_][a-z0-9_]{0,62}$` refuses the request.
pub fn place(
    permit: &Permit,
    identity: &Identity,
    env_name: &str,
    tenancy: &[Tenancy],
    pool_hints: &[DbHints],
) -> Result<Placement, Reject> {
    let pool = select(permit, identity.tenant.as_deref(), tenancy)?;
    let env_hints = &tenancy[permit.env().index()].hints;
    let pool_hints = pool_hints.get(usize::from(pool.0));
    let pick = |f: fn(&DbHints) -> &Option<Template>| pool_hints.and_then(|h| f(h).as_ref()).or(f(env_hints).as_ref());
    let values = Values { env: env_name, tenant: identity.tenant.as_deref(), sub: identity.user.as_deref() };
    let render = |t: Option<&Template>| t.map(|t| t.render(&values).map_err(|_| Reject::UnsafeTenantValue)).transpose();
    let db_schema = render(pick(|h| &h.schema))?;
    if db_schema.as_deref().is_some_and(|s| !valid_schema(s)) {
        return Err(Reject::UnsafeTenantValue);
    }
    let db_pool = render(pick(|h| &h.db_pool))?;
    Ok(Placement { pool, db_schema, db_pool })
}

#[cfg(test)]
mod tests;
