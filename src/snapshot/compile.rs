//! `compile`: on-disk schema → `Snapshot`. Each section is checked on its own and every
//! error is collected with its span, key path and fix.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::{limits, Settings, Snapshot};
use crate::auth::{safe_value, Authenticator};
use crate::bind::{Binder, EnvId, RouteEnvironment};
use crate::config::{file, tenant_map, ConfigError, EnvLookup, Source};
use crate::headers::HeaderPlan;
use crate::policy::{AccessRules, EnvironmentPolicy, RoutePolicy};
use crate::routing::{normalize_host, DbHints, Route, RouteTable, Tenancy};
use crate::template::{valid_schema, Template, Values};
use crate::upstream::{Balance, Ejection, HealthCheck, Pool, PoolId, PoolSpec, Pools};

/// Value of `routes[].environment` that takes the environment from the token.
const FROM_TOKEN: &str = "from_token";

/// Compiles a parsed file into a snapshot, or returns every problem found.
pub fn compile(raw: &file::File, source: &Source, env: EnvLookup<'_>) -> Result<Snapshot, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let env_names: Vec<&Spanned<String>> = raw.environments.keys().collect();
    check_environment_names(&env_names, &mut errors);
    let find_env = |name: &str| env_names.iter().position(|n| n.get_ref() == name).map(|i| EnvId(i as u16));

    let settings = settings(raw, source, &find_env, &mut errors);
    let auth = Authenticator::compile(raw, source, env).map_err(|mut e| errors.append(&mut e)).ok();
    let headers = HeaderPlan::compile(&raw.headers).map_err(|mut e| errors.append(&mut e)).ok();
    let (pools, pool_ids, pool_hints) = pools(&raw.pools, source, &mut errors);
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
    let routes = routes(&raw.routes, &find_env, can_inherit, &mut errors);
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
        limit_key: raw.rate_limit.key,
        limiter_config: raw.rate_limit.clone(),
        certificates,
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

fn boxed(list: &[String]) -> Box<[Box<str>]> {
    list.iter().map(|s| Box::from(s.as_str())).collect()
}

/// Parses a template; `schema` templates must be able to produce a valid schema name.
fn template(raw: Option<&Spanned<String>>, key: &str, schema: bool, errors: &mut Vec<ConfigError>) -> Option<Template> {
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

fn db_hints(
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

fn settings(
    raw: &file::File,
    source: &Source,
    find_env: &dyn Fn(&str) -> Option<EnvId>,
    errors: &mut Vec<ConfigError>,
) -> Settings {
    let mut listeners = Vec::new();
    if raw.listeners.is_empty() {
        errors.push(ConfigError::at(
            0..0,
            "listeners",
            "no listener is configured",
            "add [[listeners]] with address = \"0.0.0.0:8080\"",
        ));
    }
    for (i, l) in raw.listeners.iter().enumerate() {
        let key = format!("listeners[{i}]");
        if let Some(addr) = socket_addr(&l.address, &format!("{key}.address"), errors) {
            if listeners.contains(&addr) {
                errors.push(ConfigError::at(
                    l.address.span(),
                    format!("{key}.address"),
                    format!("{addr} is listed twice"),
                    "remove the duplicate listener",
                ));
            }
            listeners.push(addr);
        }
        if let Some(env) = &l.environment {
            if find_env(env.get_ref()).is_none() {
                errors.push(unknown_env(env, &format!("{key}.environment"), &raw.environments));
            }
        }
    }
    let admin = socket_addr(&raw.admin.address, "admin.address", errors)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901)));
    if listeners.contains(&admin) {
        errors.push(ConfigError::at(
            raw.admin.address.span(),
            "admin.address",
            "the admin listener shares an address with a proxy listener",
            "give the admin listener its own port",
        ));
    }
    if raw.metrics.tenant_label_top > 1_000 {
        errors.push(ConfigError::at(
            0..0,
            "metrics.tenant_label_top",
            format!("{} tenants is too many for a label", raw.metrics.tenant_label_top),
            "use at most 1000 (0 turns it off)",
        ));
    }
    if !raw.server.upgrade_socket.starts_with('/') {
        errors.push(ConfigError::at(
            0..0,
            "server.upgrade_socket",
            format!("`{}` is not an absolute path", raw.server.upgrade_socket),
            "old and new processes must agree on it: use an absolute path such as \"/run/isogate/upgrade.sock\"",
        ));
    }
    let capacity = *raw.audit.queue_capacity.get_ref();
    if !(1..=10_000_000).contains(&capacity) {
        errors.push(ConfigError::at(
            raw.audit.queue_capacity.span(),
            "audit.queue_capacity",
            format!("{capacity} is out of range"),
            "use a value from 1 to 10000000 (default 65536)",
        ));
    }
    let output = raw.audit.output.get_ref();
    let audit_path = if output == "stdout" {
        None
    } else if output.is_empty() {
        errors.push(ConfigError::at(
            raw.audit.output.span(),
            "audit.output",
            "the audit output is empty",
            "write a file path or \"stdout\"",
        ));
        None
    } else {
        Some(source.resolve(output))
    };
    let threads = if raw.server.threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        raw.server.threads
    };
    let tls_listeners =
        listeners.iter().zip(&raw.listeners).filter(|(_, l)| l.tls).map(|(a, l)| (*a, l.http2)).collect();
    Settings {
        listeners,
        tls_listeners,
        admin,
        threads,
        grace_period: Duration::from_secs(raw.server.grace_period_seconds),
        shutdown_timeout: Duration::from_secs(raw.server.shutdown_timeout_seconds),
        upgrade_socket: std::path::PathBuf::from(&raw.server.upgrade_socket),
        audit_path,
        audit_queue_capacity: capacity,
        audit_on_full: raw.audit.on_queue_full,
        tenant_label_top: raw.metrics.tenant_label_top,
    }
}

fn socket_addr(raw: &Spanned<String>, key: &str, errors: &mut Vec<ConfigError>) -> Option<SocketAddr> {
    raw.get_ref()
        .parse()
        .map_err(|_| {
            errors.push(ConfigError::at(
                raw.span(),
                key,
                format!("`{}` is not an ip:port address", raw.get_ref()),
                "write e.g. \"0.0.0.0:8080\" or \"127.0.0.1:9901\"",
            ))
        })
        .ok()
}

/// "defined: a, b", or "none is defined".
pub(super) fn defined_list(names: &[&str]) -> String {
    if names.is_empty() {
        "none is defined".to_owned()
    } else {
        format!("defined: {}", names.join(", "))
    }
}

fn unknown_env<T>(name: &Spanned<String>, key: &str, defined: &BTreeMap<Spanned<String>, T>) -> ConfigError {
    let list: Vec<&str> = defined.keys().map(|k| k.get_ref().as_str()).collect();
    ConfigError::at(
        name.span(),
        key,
        format!("environment `{}` is not defined ({})", name.get_ref(), defined_list(&list)),
        format!("define [environments.{}] or use one of the defined names", name.get_ref()),
    )
}

fn pools(
    raw: &BTreeMap<Spanned<String>, file::Pool>,
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> (Pools, HashMap<String, PoolId>, Vec<DbHints>) {
    let mut pools = Vec::new();
    let mut ids = HashMap::new();
    let mut hints = Vec::new();
    for (name, pool) in raw {
        let key = format!("pools.{}", name.get_ref());
        if !name.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            || name.get_ref().is_empty()
        {
            errors.push(ConfigError::at(
                name.span(),
                &key,
                "pool names may hold only letters, digits, `-`, `_` and `.`",
                "rename the pool",
            ));
            continue;
        }
        if pool.servers.get_ref().is_empty() {
            errors.push(ConfigError::at(
                pool.servers.span(),
                format!("{key}.servers"),
                "the pool has no server",
                "list at least one \"host:port\"",
            ));
        }
        if pool.connect_timeout_ms == 0 || pool.read_timeout_ms == 0 {
            errors.push(ConfigError::at(
                name.span(),
                &key,
                "timeouts must be above zero",
                "set connect_timeout_ms and read_timeout_ms in milliseconds",
            ));
        }
        let mut addrs = Vec::new();
        for (i, server) in pool.servers.get_ref().iter().enumerate() {
            match server.get_ref().to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(addr)) => addrs.push(addr),
                _ => errors.push(ConfigError::at(
                    server.span(),
                    format!("{key}.servers[{i}]"),
                    format!("`{}` is not a reachable host:port (it does not parse or resolve)", server.get_ref()),
                    "write \"10.0.0.5:8080\" or \"app.internal:8080\"",
                )),
            }
        }
        let health_check = pool.health_check_path.as_ref().map(|path| {
            if !path.get_ref().starts_with('/') {
                errors.push(ConfigError::at(
                    path.span(),
                    format!("{key}.health_check_path"),
                    format!("`{}` is not an absolute path", path.get_ref()),
                    "write e.g. \"/healthz\"",
                ));
            }
            HealthCheck {
                path: path.get_ref().clone(),
                interval: Duration::from_millis(pool.health_check_interval_ms.max(100)),
                timeout: Duration::from_millis(pool.health_check_timeout_ms.max(10)),
                healthy_after: pool.healthy_after,
                unhealthy_after: pool.unhealthy_after,
            }
        });
        let spec = PoolSpec {
            name: name.get_ref().clone(),
            servers: addrs,
            balance: match pool.balance {
                file::Balance::RoundRobin => Balance::RoundRobin,
                file::Balance::TenantHash => Balance::TenantHash,
            },
            connect_timeout: Duration::from_millis(pool.connect_timeout_ms),
            read_timeout: Duration::from_millis(pool.read_timeout_ms),
            health_check,
            ejection: Ejection {
                after_failures: pool.eject_after_failures,
                duration: Duration::from_secs(pool.eject_seconds),
            },
            tls: crate::tls::upstream(pool, &key, source, errors),
        };
        let built = Pool::new(&spec);
        match built {
            Ok(p) => {
                ids.insert(name.get_ref().clone(), PoolId(pools.len() as u16));
                pools.push(p);
                hints.push(db_hints(pool.db_schema.as_ref(), pool.db_pool.as_ref(), &key, errors));
            }
            Err(e) => errors.push(ConfigError::at(
                name.span(),
                &key,
                format!("cannot build the pool: {e}"),
                "check the server list",
            )),
        }
    }
    (Pools::new(pools), ids, hints)
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
    }
}

fn pool_ref(
    name: &Spanned<String>,
    key: String,
    pools: &HashMap<String, PoolId>,
    errors: &mut Vec<ConfigError>,
) -> Option<PoolId> {
    let id = pools.get(name.get_ref()).copied();
    if id.is_none() {
        let mut defined: Vec<&str> = pools.keys().map(String::as_str).collect();
        defined.sort_unstable();
        errors.push(ConfigError::at(
            name.span(),
            key,
            format!("pool `{}` is not defined ({})", name.get_ref(), defined_list(&defined)),
            format!("define [pools.{}] or use one of the defined pools", name.get_ref()),
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
        raw.default_pool.as_ref().and_then(|p| pool_ref(p, format!("{key}.default_pool"), pools, errors));
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
        if let Some(id) = pool_ref(pool, format!("{key}.tenants.{tenant}"), pools, errors) {
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

fn routes(
    raw: &[file::Route],
    find_env: &dyn Fn(&str) -> Option<EnvId>,
    can_inherit: bool,
    errors: &mut Vec<ConfigError>,
) -> RouteTable {
    if raw.is_empty() {
        errors.push(ConfigError::at(
            0..0,
            "routes",
            "no route is configured, so every request would get 404",
            "add a [[routes]] entry, e.g. name = \"all\", path_prefix = \"/\"",
        ));
    }
    let mut names = HashMap::new();
    let mut routes = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("routes[{i}]");
        if let Some(first) = names.insert(r.name.get_ref().as_str(), i) {
            errors.push(ConfigError::at(
                r.name.span(),
                format!("{key}.name"),
                format!("route name `{}` is already used by routes[{first}]", r.name.get_ref()),
                "give each route its own name",
            ));
        }
        if !safe_value(r.name.get_ref()) {
            errors.push(ConfigError::at(
                r.name.span(),
                format!("{key}.name"),
                "route names must be visible ASCII without spaces",
                "rename the route",
            ));
        }
        if !r.path_prefix.get_ref().starts_with('/') {
            errors.push(ConfigError::at(
                r.path_prefix.span(),
                format!("{key}.path_prefix"),
                format!("`{}` does not start with `/`", r.path_prefix.get_ref()),
                "write an absolute path prefix such as \"/api\"",
            ));
        }
        let mut hosts = Vec::new();
        for (j, h) in r.hosts.iter().enumerate() {
            match normalize_host(h.get_ref()) {
                Some(n) => hosts.push(Box::from(n.as_ref())),
                None => errors.push(ConfigError::at(
                    h.span(),
                    format!("{key}.hosts[{j}]"),
                    format!("`{}` is not a host name", h.get_ref()),
                    "write a bare host name such as `api.example.com`",
                )),
            }
        }
        let environment = match &r.environment {
            Some(e) if e.get_ref() == FROM_TOKEN => RouteEnvironment::FromToken,
            Some(e) => find_env(e.get_ref()).map_or_else(
                || {
                    errors.push(ConfigError::at(
                        e.span(),
                        format!("{key}.environment"),
                        format!("environment `{}` is not defined", e.get_ref()),
                        "name a defined environment, or write \"from_token\"",
                    ));
                    RouteEnvironment::Inherit
                },
                RouteEnvironment::Fixed,
            ),
            None => {
                if !can_inherit {
                    errors.push(ConfigError::at(
                        r.name.span(),
                        format!("{key}.environment"),
                        "the route names no environment, and no host or listener binds one",
                        "set environment = \"NAME\" or \"from_token\", or bind hosts/listeners to environments",
                    ));
                }
                RouteEnvironment::Inherit
            }
        };
        let policy = RoutePolicy {
            roles_any: boxed(&r.roles_any),
            roles_all: boxed(&r.roles_all),
            roles_by_env: r
                .roles_by_environment
                .iter()
                .filter_map(|(env, roles)| find_env(env.get_ref()).map(|id| (id, boxed(roles))))
                .collect(),
            critical: r.critical,
        };
        routes.push(Route {
            name: r.name.get_ref().as_str().into(),
            hosts: hosts.into(),
            path_prefix: r.path_prefix.get_ref().as_str().into(),
            environment,
            forward_authorization: r.forward_authorization,
            policy,
            rewrite_prefix: template(r.rewrite_prefix.as_ref(), &format!("{key}.rewrite_prefix"), false, errors),
            rewrite_host: template(r.rewrite_host.as_ref(), &format!("{key}.rewrite_host"), false, errors),
            cost: r.cost,
        });
    }
    RouteTable::new(routes)
}
