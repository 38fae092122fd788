//! The model: what the README says the gateway does with a request, computed from the
//! tables in `config` without any of isogate's code. It decides admission (with the
//! refusal reason, in the README's stage order) and, for an admitted request, the
//! environment, pool, database hints and upstream target.

use crate::config::{self, Env, Route, RouteEnv, ADMIN_PREFIX, ADMIN_ROLES, ENVS, MAX_TOKEN_BYTES, MAX_URI_BYTES};
use crate::paths::{absolute_authority, normalize, normalize_host, split_target, under, Norm};
use crate::tokens::{Claims, TokenPool, Verdict};
use crate::traffic::{Local, Req};

/// What the model expects of an admitted request.
#[derive(Debug, Clone)]
pub struct Admit<'t> {
    pub env: &'static Env,
    pub route: &'static Route,
    pub pool: &'static str,
    pub claims: &'t Claims,
    pub system_mode: bool,
    pub db_schema: Option<String>,
    pub db_pool: Option<String>,
    /// The upstream path and query (origin form).
    pub target: String,
    /// The rewritten `Host`, when the route rewrites it.
    pub host: Option<String>,
}

/// The model's decision.
#[derive(Debug, Clone)]
pub enum Decision<'t> {
    Admit(Box<Admit<'t>>),
    Refuse(&'static str),
}

pub fn decide<'t>(req: &Req, tokens: &'t TokenPool) -> Decision<'t> {
    match admit(req, tokens) {
        Ok(a) => Decision::Admit(Box::new(a)),
        Err(reason) => Decision::Refuse(reason),
    }
}

fn admit<'t>(req: &Req, tokens: &'t TokenPool) -> Result<Admit<'t>, &'static str> {
    let (path, query) = split_target(&req.target);
    if path.len() + query.map_or(0, |q| q.len() + 1) > MAX_URI_BYTES {
        return Err("uri_too_long");
    }
    if !req.target.starts_with('/') && absolute_authority(&req.target).is_none() {
        return Err("malformed_request");
    }
    let host = request_host(req)?;
    let norm = normalize(path).ok_or("ambiguous_path")?;
    let route = config::ROUTES
        .iter()
        .find(|r| {
            (r.hosts.is_empty() || host.as_deref().is_some_and(|h| r.hosts.contains(&h)))
                && under(r.prefix, &norm.matching)
        })
        .ok_or("no_route")?;
    if norm.parameters && !route.parameters {
        return Err("ambiguous_path");
    }
    let claims = identify(req, tokens)?;
    let env = bind(route, host.as_deref(), req.local, claims)?;
    let system_mode = authorize(env, route, claims, &norm.matching)?;
    let (pool, db_schema, db_pool) = place(env, claims)?;
    let (target, host) = rewrite(route, env, claims, &norm, query)?;
    Ok(Admit { env, route, pool, claims, system_mode, db_schema, db_pool, target, host })
}

/// The host the request is addressed to: lowercase, without port or trailing dot.
/// Several `Host` headers, or an implausible one, make the request malformed, and so
/// does an HTTP/1.1 request with no host at all (RFC 9112 section 3.2). An absolute-form
/// target's authority is the host (RFC 9112 section 3.2.2); a `Host` beside it must agree.
fn request_host(req: &Req) -> Result<Option<String>, &'static str> {
    let hosts = req.values("host");
    let authority = absolute_authority(&req.target);
    let host = |h: &str| normalize_host(h).ok_or("malformed_request");
    match (authority, hosts.as_slice()) {
        (_, [_, _, ..]) | (None, []) => Err("malformed_request"),
        (Some(a), &[h]) if host(a)? != host(h)? => Err("malformed_request"),
        (Some(h), _) | (None, &[h]) => host(h).map(Some),
    }
}

/// Reads the bearer token and returns what the token pool says of it.
fn identify<'t>(req: &Req, tokens: &'t TokenPool) -> Result<&'t Claims, &'static str> {
    let values = req.values("authorization");
    let value = match values.as_slice() {
        [] => return Err("token_missing"),
        [one] => one.trim(),
        _ => return Err("token_malformed"),
    };
    if value.len() > MAX_TOKEN_BYTES + 7 + 16 {
        return Err("token_too_large");
    }
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case("bearer ") {
        return Err("token_malformed");
    }
    let token = value[7..].trim();
    if token.len() > MAX_TOKEN_BYTES {
        return Err("token_too_large");
    }
    let minted = tokens.find(token).unwrap_or_else(|| panic!("the generator sent a token it did not mint: {token}"));
    if !minted.compact {
        return Err("token_malformed");
    }
    match &minted.verdict {
        Verdict::Valid(c) => Ok(c),
        Verdict::Refused(reason) => Err(reason),
    }
}

/// The route's environment, else the host's, else the listener's; the token's
/// environment claim must name it (or, on a `from_token` route, name any).
fn bind(route: &Route, host: Option<&str>, local: Local, claims: &Claims) -> Result<&'static Env, &'static str> {
    let expected = match route.env {
        RouteEnv::Fixed(e) => config::env(e),
        RouteEnv::FromToken => {
            return claims.env.as_deref().and_then(config::env).ok_or("unknown_environment");
        }
        RouteEnv::Inherit => host
            .and_then(|h| ENVS.iter().find(|e| e.hosts.contains(&h)))
            .or_else(|| ENVS.iter().find(|e| e.listener && local == Local::Dev)),
    };
    let env = expected.ok_or("unknown_environment")?;
    if claims.env.as_deref() == Some(env.name) {
        Ok(env)
    } else {
        Err("wrong_environment")
    }
}

fn holds(claims: &Claims, roles: &[&str]) -> bool {
    claims.roles.iter().any(|r| roles.contains(&r.as_str()))
}

/// Issuer trust, tenant presence, then the access rules; returns system mode.
fn authorize(env: &Env, route: &Route, claims: &Claims, matching: &str) -> Result<bool, &'static str> {
    if !env.issuers.is_empty() && !env.issuers.contains(&claims.issuer) {
        return Err("issuer_not_trusted");
    }
    if env.tenant_required && claims.tenant.is_none() {
        return Err("tenant_missing");
    }
    if env.allowed_roles.is_some_and(|allowed| !holds(claims, allowed)) {
        return Err("role_not_allowed");
    }
    let admin = under(ADMIN_PREFIX, matching);
    if admin && !holds(claims, ADMIN_ROLES) {
        return Err("admin_role_required");
    }
    if !route.roles_any.is_empty() && !holds(claims, route.roles_any) {
        return Err("role_required");
    }
    Ok(admin)
}

/// A value substituted into a template: 1–64 of `[A-Za-z0-9_-]`.
fn safe(v: &str) -> bool {
    (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn render(template: &str, env: &str, claims: &Claims) -> Result<String, &'static str> {
    let mut out = template.to_owned();
    for (key, value) in [("{env}", Some(env)), ("{tenant}", claims.tenant.as_deref()), ("{sub}", claims.sub.as_deref())]
    {
        if out.contains(key) {
            let v = value.filter(|v| safe(v)).ok_or("tenant_value_unsafe")?;
            out = out.replace(key, v);
        }
    }
    Ok(out)
}

fn valid_schema(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// The tenant's silo, else the default pool; then the database hints.
type Placement = (&'static str, Option<String>, Option<String>);

fn place(env: &'static Env, claims: &Claims) -> Result<Placement, &'static str> {
    let silo = claims.tenant.as_deref().and_then(|t| env.tenants.iter().find(|(name, _)| *name == t)).map(|(_, p)| *p);
    let shared = if env.refuse_unmapped { None } else { env.default_pool };
    let pool = silo.or(shared).ok_or("tenant_not_mapped")?;
    let p = config::pool(pool);
    let schema = p.db_schema.or(env.db_schema).map(|t| render(t, env.name, claims)).transpose()?;
    if schema.as_deref().is_some_and(|s| !valid_schema(s)) {
        return Err("tenant_value_unsafe");
    }
    let db_pool = p.db_pool.or(env.db_pool).map(|t| render(t, env.name, claims)).transpose()?;
    Ok((pool, schema, db_pool))
}

/// The upstream target and rewritten host.
fn rewrite(
    route: &Route,
    env: &Env,
    claims: &Claims,
    norm: &Norm,
    query: Option<&str>,
) -> Result<(String, Option<String>), &'static str> {
    let mut path = norm.forward.clone();
    if let Some(t) = route.rewrite_prefix {
        let new = render(t, env.name, claims)?;
        if !under(route.prefix, &norm.forward) {
            return Err("ambiguous_path");
        }
        path = format!("{new}{}", &norm.forward[route.prefix.len()..]);
    }
    let host = route.rewrite_host.map(|t| render(t, env.name, claims).map(|h| h.to_ascii_lowercase())).transpose()?;
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    Ok((target, host))
}
