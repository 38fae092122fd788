//! `compile`: on-disk schema → `Snapshot`. Each section is checked on its own and every
//! error is collected with its span, key path and fix.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{databases, limits, pools, routes, settings, Snapshot};
use crate::admission::HeadLimits;
use crate::auth::{safe_value, Authenticator};
use crate::bind::{Binder, EnvId};
use crate::config::{file, tenant_map, ConfigError, EnvLookup, Source};
use crate::forwarded::ForwardedPolicy;
use crate::headers::HeaderPlan;
use crate::metrics::MetricCells;
use crate::policy::{AccessRules, EnvironmentPolicy};
use crate::routing::{normalize_host, DbHints, Tenancy};
use crate::template::{valid_schema, Template, Values};
use crate::upstream::PoolId;

/// Value of `routes[].environment` that takes the environment from the token.
pub(super) const FROM_TOKEN: &str = "from_token";

/// Compiles a parsed file into a snapshot, or returns every problem found.
pub fn compile(raw: &file::File, source: &Source, env: EnvLookup<'_>) -> Result<Snapshot, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let env_names: Vec<&Spanned<String>> = raw.environments.keys().collect();
    check_environment_names(&env_names, &mut errors);
    let find_env = |name: &str| env_names.iter().position(|n| n.get_ref() == name).map(|i| EnvId(i as u16));

    let mut settings = settings::settings(raw, source, &find_env, &mut errors);
    let taken: Vec<SocketAddr> = settings.listeners.iter().copied().chain([settings.admin]).collect();
    let databases = databases::databases(raw, source, env, &find_env, &taken, &mut errors);
    settings.database_listeners = databases.listen;
    let auth = Authenticator::compile(raw, source, env).map_err(|mut e| errors.append(&mut e)).ok();
    let headers = HeaderPlan::compile(&raw.headers).map_err(|mut e| errors.append(&mut e)).ok();
    let (pools, pool_ids, pool_hints) = pools::pools(&raw.pools, source, &mut errors);
    let access = access_rules(&raw.access, &mut errors);
    let certificates = crate::tls::CertStore::compile(&raw.certificates, source, &mut errors);
    if certificates.is_empty() && raw.listeners.iter().any(|l| l.tls) {
        errors.push(ConfigError::at(
            0..0,
            "certificates",
            "a listener terminates TLS but no certificate is configured",
            "add a [[certificates]] entry with cert_file, key_file and server_names",
        ));
    }
    let (plans, plan_ids) = limits::plans(&raw.plans, &mut errors);
    let limiter = limits::limiter(&raw.rate_limit, &mut errors);
    let reason_header = header_name(&raw.access.reason_header, "access.reason_header", &mut errors);
    let forwarded = ForwardedPolicy::compile(&raw.forwarded, &mut errors);
    check_limits(&raw.limits, *raw.token.max_bytes.get_ref(), &mut errors);

    let mut hosts = HashMap::new();
    let mut policies = Vec::new();
    let mut tenancy = Vec::new();
    let mut plan_assignment = Vec::new();
    for (index, (name, environment)) in raw.environments.iter().enumerate() {
        let key = format!("environments.{}", name.get_ref());
        for (i, host) in environment.hosts.iter().enumerate() {
            match normalize_host(host.get_ref()) {
                Some(h) => {
                    if let Some(other) = hosts.insert(Box::<str>::from(h.as_ref()), EnvId(index as u16)) {
                        let other = env_names[other.index()].get_ref();
                        errors.push(ConfigError::at(
                            host.span(),
                            format!("{key}.hosts[{i}]"),
                            format!("host `{h}` is already bound to environment `{other}`"),
                            "bind each host to one environment",
                        ));
                    }
                }
                None => errors.push(ConfigError::at(
                    host.span(),
                    format!("{key}.hosts[{i}]"),
                    format!("`{}` is not a host name", host.get_ref()),
                    "write a bare host name such as `api.example.com`",
                )),
            }
        }
        policies.push(environment_policy(&key, environment, auth.as_ref(), &mut errors));
        let map_key = format!("{key}.tenant_map_file");
        let map_text =
            environment.tenant_map_file.as_ref().and_then(|m| read_tenant_map(&map_key, m, source, &mut errors));
        let map = map_text.as_ref().and_then(|(path, text)| match tenant_map::parse(path, &map_key, text) {
            Ok(entries) => Some(TenantMap { key: &map_key, path, entries }),
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        });
        tenancy.push(tenancy_of(&key, name.span(), environment, &pool_ids, map.as_ref(), &mut errors));
        plan_assignment.push(limits::assignment(&key, environment, &plan_ids, map.as_ref(), &mut errors));
    }
    if raw.environments.is_empty() {
        errors.push(ConfigError::at(
            0..0,
            "environments",
            "no environment is defined",
            "add at least one [environments.NAME] section with a default_pool or tenants",
        ));
    }

    let listener_envs: Vec<(SocketAddr, Option<EnvId>)> = settings
        .listeners
        .iter()
        .zip(&raw.listeners)
        .map(|(addr, l)| (*addr, l.environment.as_ref().and_then(|e| find_env(e.get_ref()))))
        .collect();
    let can_inherit = !hosts.is_empty() || listener_envs.iter().any(|(_, e)| e.is_some());
    let routes = routes::routes(&raw.routes, &raw.limits, &find_env, can_inherit, &mut errors);
    for (name, _) in raw.routes.iter().flat_map(|r| r.roles_by_environment.iter()) {
        if find_env(name.get_ref()).is_none() {
            errors.push(unknown_env(name, "routes[].roles_by_environment", &raw.environments));
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(auth), Some(headers), Some(reason_header), Some(limiter)) = (auth, headers, reason_header, limiter)
    else {
        return Err(errors);
    };
    let names = env_names.iter().map(|n| Box::from(n.get_ref().as_str())).collect();
    let metric_cells = MetricCells::new(env_names.len(), routes.iter().count(), pools.iter().count(), plans.len());
    Ok(Snapshot {
        settings,
        auth,
        headers,
        binder: Binder::new(names, hosts, listener_envs),
        policies: policies.into(),
        tenancy: tenancy.into(),
        routes,
        pools,
        pool_hints: pool_hints.into(),
        access,
        reason_header,
        plans: plans.into(),
        plan_assignment: plan_assignment.into(),
        limiter: std::sync::Arc::new(limiter),
        head_limits: HeadLimits::new(&raw.limits),
        body_read_timeout: std::time::Duration::from_secs(raw.limits.body_read_timeout_seconds),
        forwarded,
        trace_context: raw.tracing.trace_context,
        metric_cells,
        limit_key: raw.rate_limit.key,
        limiter_config: raw.rate_limit.clone(),
        certificates,
        databases: databases.databases,
    })
}

fn header_name(raw: &Spanned<String>, key: &str, errors: &mut Vec<ConfigError>) -> Option<http::HeaderName> {
    http::HeaderName::from_bytes(raw.get_ref().to_ascii_lowercase().as_bytes())
        .map_err(|_| {
            errors.push(ConfigError::at(
                raw.span(),
                key,
                format!("`{}` is not a valid header name", raw.get_ref()),
                "use letters, digits and dashes, e.g. `x-access-reason`",
            ))
        })
        .ok()
}

fn access_rules(raw: &file::Access, errors: &mut Vec<ConfigError>) -> AccessRules {
    if let Some(prefix) = &raw.admin_path_prefix {
        if !prefix.get_ref().starts_with('/') || prefix.get_ref().len() < 2 {
            errors.push(ConfigError::at(
                prefix.span(),
                "access.admin_path_prefix",
                format!("`{}` is not a path prefix", prefix.get_ref()),
                "write an absolute prefix such as \"/admin\"",
            ));
        }
    }
    if raw.admin_path_prefix.is_some() && raw.admin_roles.is_empty() {
        errors.push(ConfigError::at(
            0..0,
            "access.admin_roles",
            "admin routes are configured but no role may use them",
            "list the admin roles, e.g. [\"admin\"]",
        ));
    }
    if !(1..=1000).contains(&raw.reason_max_chars) {
        errors.push(ConfigError::at(
            0..0,
            "access.reason_max_chars",
            format!("{} is out of range", raw.reason_max_chars),
            "use a value from 1 to 1000 (default 200)",
        ));
    }
    for (i, p) in raw.test_account_subjects.iter().enumerate() {
        if p.get_ref().is_empty() || p.get_ref() == "*" {
            errors.push(ConfigError::at(
                p.span(),
                format!("access.test_account_subjects[{i}]"),
                "this pattern would mark every token (or none) as a test account",
                "write a pattern such as \"qa-*@example.com\"",
            ));
        }
    }
    AccessRules {
        admin_prefix: raw.admin_path_prefix.as_ref().map(|p| p.get_ref().as_str().into()),
        admin_roles: boxed(&raw.admin_roles),
        test_max_lifetime: raw.test_account_max_lifetime_seconds,
        reason_max_chars: raw.reason_max_chars,
    }
}

pub(super) fn boxed(list: &[String]) -> Box<[Box<str>]> {
    list.iter().map(|s| Box::from(s.as_str())).collect()
}

/// Parses a template; `schema` templates must be able to produce a valid schema name.
pub(super) fn template(
    raw: Option<&Spanned<String>>,
    key: &str,
    schema: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<Template> {
    let raw = raw?;
    let parsed = Template::parse(raw.get_ref())
        .map_err(|e| errors.push(ConfigError::at(raw.span(), key, e, "use {env}, {tenant} or {sub} placeholders")))
        .ok()?;
    let sample = parsed.render(&Values { env: "env", tenant: Some("t1"), sub: Some("s1") });
    if schema && !sample.as_deref().is_ok_and(valid_schema) {
        errors.push(ConfigError::at(
            raw.span(),
            key,
            format!("`{}` can never render a valid schema name", raw.get_ref()),
            "use lowercase letters, digits and `_` around the placeholders, e.g. `company_{tenant}`",
        ));
    }
    Some(parsed)
}

pub(super) fn db_hints(
    schema: Option<&Spanned<String>>,
    db_pool: Option<&Spanned<String>>,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> DbHints {
    DbHints {
        schema: template(schema, &format!("{key}.db_schema"), true, errors),
        db_pool: template(db_pool, &format!("{key}.db_pool"), false, errors),
    }
}

fn check_environment_names(names: &[&Spanned<String>], errors: &mut Vec<ConfigError>) {
    if names.len() > usize::from(u16::MAX) {
        errors.push(ConfigError::at(0..0, "environments", "too many environments", "keep fewer than 65535"));
    }
    for name in names {
        if !safe_value(name.get_ref()) || name.get_ref() == FROM_TOKEN {
            errors.push(ConfigError::at(
                name.span(),
                format!("environments.{}", name.get_ref()),
                "this environment name cannot be matched against a token claim",
                "use letters, digits, `-` or `_` (and not `from_token`)",
            ));
        }
    }
}

/// "defined: a, b", or "none is defined".
pub(super) fn defined_list(names: &[&str]) -> String {
    if names.is_empty() {
        "none is defined".to_owned()
    } else {
        format!("defined: {}", names.join(", "))
    }
}

pub(super) fn unknown_env<T>(name: &Spanned<String>, key: &str, defined: &BTreeMap<Spanned<String>, T>) -> ConfigError {
    let list: Vec<&str> = defined.keys().map(|k| k.get_ref().as_str()).collect();
    ConfigError::at(
        name.span(),
        key,
        format!("environment `{}` is not defined ({})", name.get_ref(), defined_list(&list)),
        format!("define [environments.{}] or use one of the defined names", name.get_ref()),
    )
}

fn environment_policy(
    key: &str,
    raw: &file::Environment,
    auth: Option<&Authenticator>,
    errors: &mut Vec<ConfigError>,
) -> EnvironmentPolicy {
    let mut trusted = Vec::new();
    for (i, name) in raw.issuers.iter().enumerate() {
        match auth.map(|a| a.issuer_by_name(name.get_ref())) {
            Some(Some(id)) => trusted.push(id),
            Some(None) => errors.push(ConfigError::at(
                name.span(),
                format!("{key}.issuers[{i}]"),
                format!("issuer `{}` is not defined", name.get_ref()),
                "use the `name` of an [[issuers]] entry",
            )),
            None => {}
        }
    }
    EnvironmentPolicy {
        trusted_issuers: trusted.into(),
        allowed_roles: raw.allowed_roles.as_deref().map(boxed),
        reason_roles: boxed(&raw.reason_required_roles),
        report_only: raw.enforcement == file::Enforcement::ReportOnly,
        tenant_required: raw.tenant_claim == file::TenantClaim::Required,
    }
}

/// Looks up a pool or plan named by the config; an unknown name is an error that lists
/// the defined ones. `kind` is "pool" or "plan" (its section is `[kinds.NAME]`).
pub(super) fn named_ref<T: Copy>(
    kind: &str,
    name: &Spanned<String>,
    key: String,
    ids: &HashMap<String, T>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let id = ids.get(name.get_ref()).copied();
    if id.is_none() {
        let mut defined: Vec<&str> = ids.keys().map(String::as_str).collect();
        defined.sort_unstable();
        errors.push(ConfigError::at(
            name.span(),
            key,
            format!("{kind} `{}` is not defined ({})", name.get_ref(), defined_list(&defined)),
            format!("define [{kind}s.{}] or use one of the defined {kind}s", name.get_ref()),
        ));
    }
    id
}

fn tenancy_of(
    key: &str,
    span: std::ops::Range<usize>,
    raw: &file::Environment,
    pools: &HashMap<String, PoolId>,
    map: Option<&TenantMap<'_>>,
    errors: &mut Vec<ConfigError>,
) -> Tenancy {
    let default_pool =
        raw.default_pool.as_ref().and_then(|p| named_ref("pool", p, format!("{key}.default_pool"), pools, errors));
    if raw.default_pool.is_none() && raw.unmapped_tenants == file::UnmappedTenants::DefaultPool {
        errors.push(ConfigError::at(
            span,
            key,
            "unmapped tenants go to the default pool, but no default_pool is set",
            "set default_pool, or set unmapped_tenants = \"refuse\"",
        ));
    }
    let mut tenants = HashMap::new();
    for (tenant, pool) in &raw.tenants {
        if let Some(id) = named_ref("pool", pool, format!("{key}.tenants.{tenant}"), pools, errors) {
            tenants.insert(Box::from(tenant.as_str()), id);
        }
    }
    if let Some(map) = map {
        map_tenants(map, pools, &mut tenants, errors);
    }
    let default_pool = if raw.unmapped_tenants == file::UnmappedTenants::Refuse { None } else { default_pool };
    let hints = db_hints(raw.db_schema.as_ref(), raw.db_pool.as_ref(), key, errors);
    Tenancy { default_pool, tenants, hints }
}

/// A parsed tenant map file.
pub(super) struct TenantMap<'a> {
    /// Key path of `tenant_map_file`.
    pub(super) key: &'a str,
    /// The file.
    pub(super) path: &'a Path,
    /// Its entries.
    pub(super) entries: Vec<tenant_map::Entry<'a>>,
}

fn read_tenant_map(
    map_key: &str,
    map: &Spanned<String>,
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> Option<(PathBuf, String)> {
    let path = source.resolve(map.get_ref());
    match std::fs::read_to_string(&path) {
        Ok(text) => Some((path, text)),
        Err(e) => {
            errors.push(ConfigError::at(
                map.span(),
                map_key,
                format!("cannot read {}: {e}", path.display()),
                "point it at a `tenant,pool[,plan]` file (relative paths start at the config file's directory)",
            ));
            None
        }
    }
}

fn map_tenants(
    map: &TenantMap<'_>,
    pools: &HashMap<String, PoolId>,
    tenants: &mut HashMap<Box<str>, PoolId>,
    errors: &mut Vec<ConfigError>,
) {
    tenants.reserve(map.entries.len());
    for entry in &map.entries {
        let at = |col| crate::config::At::File { path: map.path.to_owned(), line: entry.line, col };
        match pools.get(entry.pool) {
            Some(id) if tenants.insert(Box::from(entry.tenant), *id).is_none() => {}
            Some(_) => errors.push(ConfigError {
                at: at(1),
                key: map.key.to_owned(),
                problem: format!("tenant `{}` is also mapped inline", entry.tenant),
                fix: "map each tenant in one place".to_owned(),
            }),
            None => errors.push(ConfigError {
                at: at(entry.pool_col),
                key: map.key.to_owned(),
                problem: format!("pool `{}` is not defined", entry.pool),
                fix: format!("define [pools.{}] or use a defined pool", entry.pool),
            }),
        }
    }
}

/// Every `[limits]` value must leave room for ordinary requests, and a header must be
/// able to carry the largest token accepted.
fn check_limits(raw: &file::Limits, token_max_bytes: usize, errors: &mut Vec<ConfigError>) {
    let authorization = "authorization".len() + "Bearer ".len() + token_max_bytes;
    if raw.max_header_bytes < authorization || raw.max_request_header_bytes < authorization {
        errors.push(ConfigError::at(
            0..0,
            "limits.max_header_bytes",
            format!("an Authorization header with a token of token.max_bytes ({token_max_bytes}) needs {authorization} bytes"),
            "raise limits.max_header_bytes and limits.max_request_header_bytes, or lower token.max_bytes",
        ));
    }
    let checks: [(&str, u64, u64); 7] = [
        ("max_uri_bytes", raw.max_uri_bytes as u64, 256),
        ("max_header_bytes", raw.max_header_bytes as u64, 256),
        ("max_request_header_bytes", raw.max_request_header_bytes as u64, 1_024),
        ("max_headers", raw.max_headers as u64, 8),
        ("max_body_bytes", raw.max_body_bytes, 1),
        ("body_read_timeout_seconds", raw.body_read_timeout_seconds, 1),
        ("header_read_timeout_seconds", raw.header_read_timeout_seconds, 1),
    ];
    for (key, value, min) in checks {
        if value < min {
            errors.push(ConfigError::at(
                0..0,
                format!("limits.{key}"),
                format!("{value} is too small for ordinary requests"),
                format!("use at least {min}, or leave it out for the default"),
            ));
        }
    }
}
