//! Compiling `[rate_limit]`, `[plans.*]` and each environment's plan assignment.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::tz::TimeZone;
use toml::Spanned;

use super::compile::{named_ref, TenantMap};
use crate::config::{file, ConfigError};
use crate::ratelimit::gcra::{Rate, MAX_RATE, SLOT_BYTES};
use crate::ratelimit::quota::{Quota, Window};
use crate::ratelimit::redis::RedisLimiter;
use crate::ratelimit::{Limiter, OnError, Plan, PlanAssignment, PlanId};

/// Compiles the plans; returns them and their ids by name.
pub(super) fn plans(
    raw: &BTreeMap<Spanned<String>, file::Plan>,
    errors: &mut Vec<ConfigError>,
) -> (Vec<Plan>, HashMap<String, PlanId>) {
    let mut plans = Vec::new();
    let mut ids = HashMap::new();
    for (name, p) in raw {
        let key = format!("plans.{}", name.get_ref());
        let rate = match (p.rate_per_second, p.burst) {
            (None, None) => None,
            (None, Some(_)) => {
                errors.push(ConfigError::at(
                    name.span(),
                    &key,
                    "burst is set without rate_per_second",
                    format!("set rate_per_second (1 to {MAX_RATE})"),
                ));
                None
            }
            (Some(r), burst) => {
                let built = Rate::new(r, burst.unwrap_or(r));
                if built.is_none() {
                    errors.push(ConfigError::at(
                        name.span(),
                        &key,
                        format!("rate_per_second {r} with burst {burst:?} is out of range"),
                        format!("use a rate from 1 to {MAX_RATE} per second and a burst of at least 1"),
                    ));
                }
                built
            }
        };
        let quotas: Vec<Quota> = [
            (Window::Minute, p.quota_minute),
            (Window::Hour, p.quota_hour),
            (Window::Day, p.quota_day),
            (Window::Month, p.quota_month),
        ]
        .into_iter()
        .filter_map(|(window, limit)| limit.map(|limit| Quota { window, limit }))
        .collect();
        if quotas.iter().any(|q| q.limit == 0) {
            errors.push(ConfigError::at(
                name.span(),
                &key,
                "a quota of 0 refuses every request",
                "remove the quota or set it above 0",
            ));
        }
        let timezone = match &p.timezone {
            None => TimeZone::UTC,
            Some(tz) => TimeZone::get(tz.get_ref()).unwrap_or_else(|e| {
                errors.push(ConfigError::at(
                    tz.span(),
                    format!("{key}.timezone"),
                    format!("`{}` is not a known timezone: {e}", tz.get_ref()),
                    "use an IANA name such as \"UTC\" or \"Europe/Berlin\"",
                ));
                TimeZone::UTC
            }),
        };
        ids.insert(name.get_ref().clone(), PlanId(plans.len() as u16));
        plans.push(Plan::new(name.get_ref(), rate, quotas, timezone));
    }
    (plans, ids)
}

/// Builds the limiter for `[rate_limit]`.
pub(super) fn limiter(raw: &file::RateLimit, errors: &mut Vec<ConfigError>) -> Option<Limiter> {
    if !(1..=1 << 26).contains(&raw.local_capacity) {
        errors.push(ConfigError::at(
            0..0,
            "rate_limit.local_capacity",
            format!("{} is out of range", raw.local_capacity),
            format!("use 1 to 67108864 slots ({SLOT_BYTES} bytes each; default 1048576)"),
        ));
        return None;
    }
    match (raw.backend, &raw.redis_url) {
        (file::LimitBackend::Local, _) => Some(Limiter::local(raw.local_capacity)),
        (file::LimitBackend::Redis, None) => {
            errors.push(ConfigError::at(
                0..0,
                "rate_limit.redis_url",
                "the redis backend needs redis_url",
                "set redis_url = \"redis://host:6379\"",
            ));
            None
        }
        (file::LimitBackend::Redis, Some(url)) => {
            let timeout = Duration::from_millis(raw.redis_timeout_ms.max(1));
            let redis = RedisLimiter::new(url.get_ref(), timeout)
                .map_err(|e| {
                    errors.push(ConfigError::at(
                        url.span(),
                        "rate_limit.redis_url",
                        format!("`{}` is not a Redis URL: {e}", url.get_ref()),
                        "write e.g. \"redis://127.0.0.1:6379\"",
                    ))
                })
                .ok()?;
            let on_error = match raw.on_redis_error {
                file::OnRedisError::FailOpen => OnError::FailOpen,
                file::OnRedisError::FailClosed => OnError::FailClosed,
                file::OnRedisError::LocalFallback => OnError::LocalFallback,
            };
            Some(Limiter::shared(raw.local_capacity, redis, on_error, raw.instances))
        }
    }
}

/// Compiles an environment's default, test-account and per-tenant plans.
pub(super) fn assignment(
    key: &str,
    raw: &file::Environment,
    ids: &HashMap<String, PlanId>,
    map: Option<&TenantMap<'_>>,
    errors: &mut Vec<ConfigError>,
) -> PlanAssignment {
    let default =
        raw.default_plan.as_ref().and_then(|p| named_ref("plan", p, format!("{key}.default_plan"), ids, errors));
    let test_account = raw
        .test_account_plan
        .as_ref()
        .and_then(|p| named_ref("plan", p, format!("{key}.test_account_plan"), ids, errors));
    let mut tenants = HashMap::new();
    for (tenant, plan) in &raw.tenant_plans {
        if let Some(id) = named_ref("plan", plan, format!("{key}.tenant_plans.{tenant}"), ids, errors) {
            tenants.insert(Box::from(tenant.as_str()), id);
        }
    }
    for entry in map.iter().flat_map(|m| m.entries.iter().map(move |e| (m, e))) {
        let (map, e) = entry;
        let Some(plan) = e.plan else { continue };
        match ids.get(plan) {
            Some(id) if tenants.insert(Box::from(e.tenant), *id).is_none() => {}
            Some(_) => errors.push(ConfigError {
                at: crate::config::At::File { path: map.path.to_owned(), line: e.line, col: 1 },
                key: map.key.to_owned(),
                problem: format!("tenant `{}` also has a plan in tenant_plans", e.tenant),
                fix: "give each tenant its plan in one place".to_owned(),
            }),
            None => errors.push(ConfigError {
                at: crate::config::At::File { path: map.path.to_owned(), line: e.line, col: 1 },
                key: map.key.to_owned(),
                problem: format!("plan `{plan}` is not defined"),
                fix: format!("define [plans.{plan}] or use a defined plan"),
            }),
        }
    }
    PlanAssignment { default, test_account, tenants }
}
