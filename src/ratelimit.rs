//! Stage "limit": per-tenant rate limits and calendar quotas, by plan.
//!
//! A plan has a rate (GCRA: a sustained rate and a burst) and any of four quota windows
//! (minute, hour, day, month) in a timezone. Each request charges its route's cost to
//! its key (environment + tenant, or + user). Locally the rate lives in a lock-free,
//! fixed-memory table with nanosecond time (`gcra`) and quotas in exact counters for a
//! bounded number of keys (`quota`); each module states its memory and error bounds.
//! With Redis both are shared by every gateway (`redis`), and an explicit policy decides
//! what happens while Redis is slow or down: `fail_open`, `fail_closed`, or
//! `local_fallback`, where each gateway enforces its `1/instances` share locally. No
//! request waits for Redis longer than its timeout.

pub mod gcra;
pub mod quota;
pub mod redis;

use std::time::{Duration, Instant};

use http::HeaderValue;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use gcra::{Gcra, Rate, Verdict};
use quota::{Quota, QuotaCounters, Window};
use redis::{QuotaWindow, RedisLimiter, Shared};

/// Index of a plan in the compiled snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlanId(pub u16);

/// A compiled plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Name, for metrics and audit lines.
    pub name: Box<str>,
    /// Rate and burst; `None` means no rate limit.
    pub rate: Option<Rate>,
    /// Quotas; empty means none.
    pub quotas: Box<[Quota]>,
    /// Timezone the quota windows follow.
    pub timezone: TimeZone,
    /// Prebuilt `RateLimit-Policy` value.
    pub policy_header: HeaderValue,
}

impl Plan {
    /// Builds a plan and its `RateLimit-Policy` header.
    pub fn new(name: &str, rate: Option<Rate>, quotas: Vec<Quota>, timezone: TimeZone) -> Self {
        let mut items = Vec::new();
        if let Some(r) = rate {
            items.push(format!("\"burst\";q={};w=1", r.most_in(1)));
        }
        for q in &quotas {
            let seconds = match q.window {
                Window::Minute => 60,
                Window::Hour => 3_600,
                Window::Day => 86_400,
                Window::Month => 2_592_000,
            };
            items.push(format!("\"{}\";q={};w={seconds}", q.window.as_str(), q.limit));
        }
        let policy_header = HeaderValue::from_str(&items.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""));
        Self { name: name.into(), rate, quotas: quotas.into(), timezone, policy_header }
    }

    fn is_unlimited(&self) -> bool {
        self.rate.is_none() && self.quotas.is_empty()
    }
}

/// How an environment assigns plans.
#[derive(Debug, Clone, Default)]
pub struct PlanAssignment {
    /// Plan of tenants without their own.
    pub default: Option<PlanId>,
    /// Plan of developer test accounts.
    pub test_account: Option<PlanId>,
    /// Tenants with their own plan.
    pub tenants: std::collections::HashMap<Box<str>, PlanId>,
}

impl PlanAssignment {
    /// The plan of a request: test accounts' plan, else the token's plan claim (when the
    /// operator allows one and it names a plan), else the tenant's, else the default.
    pub fn plan_for(&self, test_account: bool, claimed: Option<PlanId>, tenant: Option<&str>) -> Option<PlanId> {
        if test_account && self.test_account.is_some() {
            return self.test_account;
        }
        claimed.or_else(|| tenant.and_then(|t| self.tenants.get(t).copied())).or(self.default)
    }
}

/// What to do while Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Admit the request.
    FailOpen,
    /// Refuse it with 503.
    FailClosed,
    /// Enforce this gateway's share of the limits locally.
    LocalFallback,
}

/// Which limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The local limiter (local backend).
    Local,
    /// Redis.
    Redis,
    /// Redis failed; admitted by policy.
    FailOpen,
    /// Redis failed; refused by policy.
    FailClosed,
    /// Redis failed; this gateway's local share decided.
    LocalFallback,
}

impl Mode {
    /// Label for metrics and audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Redis => "redis",
            Mode::FailOpen => "fail_open",
            Mode::FailClosed => "fail_closed",
            Mode::LocalFallback => "local_fallback",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted.
    Allow,
    /// Over the rate.
    RateLimited(Duration),
    /// A quota is used up.
    QuotaExhausted(quota::Exhausted),
    /// No limiter could answer and the policy is fail-closed.
    Unavailable,
}

/// The limiter and its state. State survives as long as the limiter does.
pub struct Limiter {
    gcra: Gcra,
    quotas: QuotaCounters,
    started: Instant,
    redis: Option<RedisLimiter>,
    on_error: OnError,
    instances: u64,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("redis", &self.redis.is_some())
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A local limiter with `capacity` rate slots.
    pub fn local(capacity: usize) -> Self {
        Self {
            gcra: Gcra::new(capacity),
            quotas: QuotaCounters::new(capacity),
            started: Instant::now(),
            redis: None,
            on_error: OnError::FailOpen,
            instances: 1,
        }
    }

    /// A Redis-backed limiter that falls back per `on_error`; `instances` gateways share it.
    pub fn shared(capacity: usize, redis: RedisLimiter, on_error: OnError, instances: u64) -> Self {
        Self { redis: Some(redis), on_error, instances: instances.max(1), ..Self::local(capacity) }
    }

    /// Memory held by the rate table, in bytes.
    pub fn rate_memory_bytes(&self) -> usize {
        self.gcra.memory_bytes()
    }

    /// Charges `cost` to `key` under `plan`.
    pub async fn check(&self, key: &str, plan: &Plan, cost: u32) -> (Outcome, Mode) {
        if plan.is_unlimited() {
            return (Outcome::Allow, if self.redis.is_some() { Mode::Redis } else { Mode::Local });
        }
        let Some(redis) = &self.redis else {
            return (self.check_local(key, plan, cost, 1), Mode::Local);
        };
        let now = Timestamp::now();
        let windows: Vec<QuotaWindow> = plan
            .quotas
            .iter()
            .map(|q| {
                let (start, end) = q.window.bounds(now, &plan.timezone);
                QuotaWindow { quota: *q, start, end }
            })
            .collect();
        let (interval, tolerance) = plan.rate.map_or((0, 0), |r| {
            let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            (ns(r.interval()), ns(r.tolerance()))
        });
        match redis.charge(key, interval, tolerance, cost, &windows).await {
            Ok(Shared::Allow) => (Outcome::Allow, Mode::Redis),
            Ok(Shared::RateLimited(wait)) => (Outcome::RateLimited(wait), Mode::Redis),
            Ok(Shared::Exhausted(e)) => (Outcome::QuotaExhausted(e), Mode::Redis),
            Err(e) => {
                crate::log_limited!(RATELIMIT, Warn, "shared limiter unavailable, applying {:?}: {e}", self.on_error);
                match self.on_error {
                    OnError::FailOpen => (Outcome::Allow, Mode::FailOpen),
                    OnError::FailClosed => (Outcome::Unavailable, Mode::FailClosed),
                    OnError::LocalFallback => (self.check_local(key, plan, cost, self.instances), Mode::LocalFallback),
                }
            }
        }
    }

    /// The local decision; `share` divides the limits (1 for the local backend).
    fn check_local(&self, key: &str, plan: &Plan, cost: u32, share: u64) -> Outcome {
        if let Some(rate) = plan.rate {
            let rate = rate.share(share);
            let now = gcra::nanos(self.started, Instant::now());
            if let Verdict::Deny { retry_after } = self.gcra.check(key, rate, cost, now) {
                return Outcome::RateLimited(retry_after);
            }
        }
        match self.quotas.charge(key, &plan.quotas, &plan.timezone, u64::from(cost), Timestamp::now(), share) {
            Ok(()) => Outcome::Allow,
            Err(e) => Outcome::QuotaExhausted(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rate: Option<Rate>, quotas: Vec<Quota>) -> String {
        Plan::new("p", rate, quotas, TimeZone::UTC).policy_header.to_str().unwrap().to_owned()
    }

    /// `RateLimit-Policy` states the most a client is admitted in the window: the burst
    /// plus one per interval, at the rate the table enforces.
    #[test]
    fn the_policy_header_states_what_is_enforced() {
        assert_eq!(policy(Rate::new(7_000, 1), Vec::new()), "\"burst\";q=7000;w=1");
        assert_eq!(policy(Rate::new(1, 3), Vec::new()), "\"burst\";q=3;w=1");
        assert_eq!(policy(Rate::new(10, 5), Vec::new()), "\"burst\";q=14;w=1");
        // 999,999/s is a 1,001 ns interval: 999,001 a second.
        assert_eq!(policy(Rate::new(999_999, 1), Vec::new()), "\"burst\";q=999001;w=1");
        let minute = Quota { window: Window::Minute, limit: 100 };
        assert_eq!(policy(Rate::new(10, 5), vec![minute]), "\"burst\";q=14;w=1, \"minute\";q=100;w=60");
    }
}
