//! What an upstream must receive, and the checks on what it did receive: the safety
//! properties (read from the gateway's own decision) and the model's exact headers.

use std::net::IpAddr;

use crate::config::{self, ADMIN_ROLES, EXTRA_STRIP, RESERVED_PREFIX, TRUSTED};
use crate::config::{H_DB_POOL, H_ENV, H_POOL, H_REQUEST_ID, H_ROLES, H_SCHEMA, H_SYSTEM, H_TENANT, H_TEST, H_USER};
use crate::model::Admit;
use crate::paths::{admin_in_any_reading, split_target};
use crate::tokens::{Claims, TokenPool, Verdict};
use crate::traffic::Req;
use crate::vocabulary::ADDRESS_NAMES;

/// What reached the upstream: header names lowercase, and the request target.
pub struct Received<'a> {
    pub headers: &'a [(String, String)],
    pub target: &'a str,
}

/// Header names compared as app servers read them: any case, `_` as `-`.
fn same_name(a: &str, b: &str) -> bool {
    let fold = |c: u8| if c == b'_' { b'-' } else { c.to_ascii_lowercase() };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// A name some app server reads as an identity header.
fn identity_family(name: &str) -> bool {
    (name.len() >= RESERVED_PREFIX.len() && same_name(&name[..RESERVED_PREFIX.len()], RESERVED_PREFIX))
        || TRUSTED.iter().chain(EXTRA_STRIP).any(|t| same_name(name, t))
}

/// A name some app server reads as a client-address header.
fn address_family(name: &str) -> bool {
    ADDRESS_NAMES.iter().any(|a| same_name(name, a))
}

/// The request id the client's is kept as: exactly one `x-request-id` (that spelling,
/// any case) of 1–128 `[A-Za-z0-9._:-]`.
pub fn client_request_id(req: &Req) -> Option<String> {
    match req.values(H_REQUEST_ID).as_slice() {
        [one]
            if (1..=128).contains(&one.len())
                && one.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) =>
        {
            Some((*one).to_owned())
        }
        _ => None,
    }
}

/// The claims of the request's token, if the token pool says it verifies.
pub fn verified_claims<'t>(req: &Req, tokens: &'t TokenPool) -> Option<&'t Claims> {
    let [value] = req.values("authorization")[..] else { return None };
    let token = value.get(7..)?.trim();
    match &tokens.find(token)?.verdict {
        Verdict::Valid(c) => Some(c),
        Verdict::Refused(_) => None,
    }
}

/// The isolation properties of an admitted request, read from the gateway's decision
/// (not the model's): the token verifies, its environment claim is the environment the
/// request was served in, the pool belongs to that environment and is the tenant's silo
/// or the environment's default, and a path any upstream could read as an admin path
/// was served to an admin only.
pub fn safety(req: &Req, tokens: &TokenPool, env: &str, pool: &str) -> Result<(), String> {
    let claims = verified_claims(req, tokens).ok_or("admitted with a token that does not verify")?;
    if claims.env.as_deref() != Some(env) {
        return Err(format!("served in `{env}` with a token for {:?}", claims.env));
    }
    let home = config::pool(pool).env;
    if home != env {
        return Err(format!("served in `{env}` by pool `{pool}` of environment `{home}`"));
    }
    let e = config::env(env).ok_or("served in an environment the config does not define")?;
    let silo = claims.tenant.as_deref().and_then(|t| e.tenants.iter().find(|(n, _)| *n == t)).map(|(_, p)| *p);
    let expected = silo.or(if e.refuse_unmapped { None } else { e.default_pool });
    if expected != Some(pool) {
        return Err(format!("tenant {:?} in `{env}` belongs in {expected:?}, got pool `{pool}`", claims.tenant));
    }
    let (path, _) = split_target(&req.target);
    if admin_in_any_reading(path) && !claims.roles.iter().any(|r| ADMIN_ROLES.contains(&r.as_str())) {
        return Err(format!("`{path}` reads as an admin path and was served to roles {:?}", claims.roles));
    }
    Ok(())
}

/// The trusted headers the model expects, without the request id.
fn identity<'a>(a: &'a Admit<'_>) -> Vec<(&'static str, &'a str)> {
    let c = a.claims;
    let mut out = vec![(H_ENV, a.env.name), (H_POOL, a.pool)];
    out.extend(c.tenant.as_deref().map(|t| (H_TENANT, t)));
    out.extend(c.sub.as_deref().map(|s| (H_USER, s)));
    out.extend(c.test.then_some((H_TEST, "true")));
    out.extend(a.system_mode.then_some((H_SYSTEM, "true")));
    out.extend(a.db_schema.as_deref().map(|s| (H_SCHEMA, s)));
    out.extend(a.db_pool.as_deref().map(|p| (H_DB_POOL, p)));
    out
}

fn trusted_proxy(ip: IpAddr) -> bool {
    let (first, _) = config::TRUSTED_PROXIES;
    matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == first)
}

/// The forwarded headers the README promises: set from the connection, or the chain of
/// a trusted proxy extended.
fn forwarded(req: &Req) -> Vec<(String, String)> {
    let peer = req.peer.to_canonical();
    let trusted = trusted_proxy(peer);
    let proto = if req.tls { "https" } else { "http" };
    let host = req.values("host").first().map(|h| h.trim().to_owned());
    let exact = |name: &str| -> Vec<String> {
        req.headers.iter().filter(|(n, _)| n.to_ascii_lowercase() == name).map(|(_, v)| v.trim().to_owned()).collect()
    };
    let joined = |name: &str| Some(exact(name).join(", ")).filter(|j| trusted && !j.is_empty());
    let single = |name: &str| match exact(name).as_slice() {
        [one] if trusted => Some(one.clone()),
        _ => None,
    };
    let chain = joined("x-forwarded-for");
    let prior = joined("forwarded");
    let kept_proto = single("x-forwarded-proto").filter(|p| p == "http" || p == "https");
    let kept_host = single("x-forwarded-host");
    let mut client = peer;
    for entry in chain.as_deref().unwrap_or("").rsplit(',').filter(|_| chain.is_some()) {
        if !trusted_proxy(client) {
            break;
        }
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) => client = ip.to_canonical(),
            Err(_) => break,
        }
    }
    let mut element = match peer {
        IpAddr::V4(v4) => format!("for={v4};proto={proto}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto={proto}"),
    };
    if let Some(h) = host.as_deref().filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')) {
        element.push_str(&format!(";host=\"{h}\""));
    }
    let mut out = vec![
        ("x-forwarded-for".to_owned(), chain.map_or(peer.to_string(), |c| format!("{c}, {peer}"))),
        ("x-real-ip".to_owned(), client.to_string()),
        ("x-forwarded-proto".to_owned(), kept_proto.unwrap_or_else(|| proto.to_owned())),
        ("forwarded".to_owned(), prior.map_or(element.clone(), |p| format!("{p}, {element}"))),
    ];
    match kept_host.or(host) {
        Some(h) => out.push(("x-forwarded-host".to_owned(), h)),
        // Nothing replaces a trusted proxy's own values then.
        None if trusted => {
            out.extend(exact("x-forwarded-host").into_iter().map(|v| ("x-forwarded-host".to_owned(), v)))
        }
        None => {}
    }
    out
}

/// Compares what the upstream received with what the model expects. `request_id` is
/// the id the gateway used, when the caller knows it.
pub fn check(req: &Req, a: &Admit<'_>, got: &Received<'_>, request_id: Option<&str>) -> Result<(), String> {
    let mut problems = Vec::new();
    let trusted = trusted_proxy(req.peer.to_canonical());
    let (mut ids, mut idents, mut addresses) = (Vec::new(), Vec::new(), Vec::new());
    for (n, v) in got.headers {
        if v.contains("SPOOF-ID") || (v.contains("SPOOF-FWD") && !trusted) {
            problems.push(format!("a client value reached the upstream: {n}: {v:?}"));
        }
        if n == H_REQUEST_ID {
            ids.push(v.as_str());
        } else if identity_family(n) {
            idents.push((n.as_str(), v.as_str()));
        } else if address_family(n) {
            addresses.push((n.clone(), v.trim().to_owned()));
        }
    }
    let roles = a.claims.roles.join(",");
    let mut want = identity(a);
    if !roles.is_empty() {
        want.push((H_ROLES, &roles));
    }
    want.sort_unstable();
    idents.sort_unstable();
    if idents != want {
        problems.push(format!("identity headers: expected {want:?}, got {idents:?}"));
    }
    let id_ok = match (ids.as_slice(), request_id) {
        ([one], Some(id)) => *one == id,
        ([one], None) => match client_request_id(req) {
            Some(client) => *one == client,
            None => one.len() == 32 && one.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        },
        _ => false,
    };
    if !id_ok {
        problems.push(format!("request id: got {ids:?} (gateway used {request_id:?})"));
    }
    let mut want = forwarded(req);
    want.sort_unstable();
    addresses.sort_unstable();
    if addresses != want {
        problems.push(format!("forwarded headers: expected {want:?}, got {addresses:?}"));
    }
    passed_through(req, a, got, &mut problems);
    let (path, query) = split_target(got.target);
    let same = match query {
        Some(q) => a.target == format!("{path}?{q}"),
        None => a.target == path,
    };
    if !same {
        problems.push(format!("target: expected {:?}, got {:?}", a.target, got.target));
    }
    if got.target.starts_with("http") && req.values("host").is_empty() {
        problems.push(format!("the upstream reads the host from `{}`, which the gateway never bound", got.target));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// `Authorization` (unless the route keeps it), `Host` (or its rewrite) and ordinary
/// headers reach the upstream as the client sent them.
fn passed_through(req: &Req, a: &Admit<'_>, got: &Received<'_>, problems: &mut Vec<String>) {
    let values =
        |name: &str| -> Vec<&str> { got.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.trim()).collect() };
    let sent = |name: &str| -> Vec<&str> { req.values(name).into_iter().map(str::trim).collect() };
    let auth = if a.route.forward_authorization { sent("authorization") } else { Vec::new() };
    if values("authorization") != auth {
        problems.push(format!("authorization: expected {auth:?}, got {:?}", values("authorization")));
    }
    let host = a.host.as_deref().map_or_else(|| sent("host"), |h| vec![h]);
    if values("host") != host {
        problems.push(format!("host: expected {host:?}, got {:?}", values("host")));
    }
    for name in ["accept", "user-agent", "x-access-reason", "x-probe", "x-custom-0", "x-custom-1"] {
        if values(name) != sent(name) {
            problems.push(format!("{name} did not pass through: sent {:?}, got {:?}", sent(name), values(name)));
        }
    }
}
