//! The labelled children the request path counts into, resolved once per snapshot:
//! each label combination's child is looked up in its vector the first time it is
//! used and kept in a fixed table indexed by the snapshot's environment, route, pool and
//! plan ids, so a request never hashes label values or takes the vector's lock.
//!
//! The table is sized when the snapshot is compiled (environments × routes × 2 decisions
//! × 6 status classes × 2 accounts for the request counter, and smaller ones for the
//! rest); a reload builds a new one.

use std::sync::OnceLock;

use prometheus::{Histogram, IntCounter};

use super::{status_class, Account, Decision, Metrics, NONE};

/// Status classes, in the order of `status_index`.
const CLASSES: usize = 6;
/// Rate-limit results: allow, rate_limited, quota_exhausted, limiter_unavailable.
const RESULTS: usize = 4;
/// Limiter modes (`ratelimit::Mode`).
const MODES: usize = 5;

/// One request's labels, as snapshot ids (`None`: the label is `none`).
#[derive(Debug, Clone, Copy)]
pub struct RequestLabels<'a> {
    /// Environment id and name.
    pub env: Option<(usize, &'a str)>,
    /// Route id and name.
    pub route: Option<(usize, &'a str)>,
    /// Allowed or refused.
    pub decision: Decision,
    /// Status sent.
    pub status: u16,
    /// Test account or not.
    pub account: Account,
}

/// A limiter decision's labels, as snapshot ids and fixed values.
#[derive(Debug, Clone, Copy)]
pub struct LimitLabels<'a> {
    /// Environment id and name.
    pub env: Option<(usize, &'a str)>,
    /// Plan id and name.
    pub plan: (usize, &'a str),
    /// Result index (0 allow .. 3) and label.
    pub result: (usize, &'static str),
    /// Mode index and label.
    pub mode: (usize, &'static str),
}

/// Children resolved for one snapshot.
#[derive(Debug, Default)]
pub struct MetricCells {
    envs: usize,
    routes: usize,
    plans: usize,
    requests: Box<[OnceLock<IntCounter>]>,
    durations: Box<[OnceLock<Histogram>]>,
    upstream: Box<[OnceLock<Histogram>]>,
    limits: Box<[OnceLock<IntCounter>]>,
}

fn cells<T>(n: usize) -> Box<[OnceLock<T>]> {
    (0..n).map(|_| OnceLock::new()).collect()
}

fn status_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100),
        _ => 0,
    }
}

impl MetricCells {
    /// Empty cells for a snapshot of this many environments, routes, pools and plans.
    pub fn new(envs: usize, routes: usize, pools: usize, plans: usize) -> Self {
        Self {
            envs,
            routes,
            plans,
            requests: cells((envs + 1) * (routes + 1) * 2 * CLASSES * 2),
            durations: cells(envs + 1),
            upstream: cells(pools),
            limits: cells((envs + 1) * plans * RESULTS * MODES),
        }
    }

    /// `isogate_requests_total` for these labels.
    pub fn request(&self, m: &Metrics, l: &RequestLabels<'_>) -> &IntCounter {
        let env = l.env.map_or(self.envs, |(i, _)| i);
        let route = l.route.map_or(self.routes, |(i, _)| i);
        let decision = usize::from(l.decision == Decision::Deny);
        let account = usize::from(l.account == Account::Test);
        let index =
            (((env * (self.routes + 1) + route) * 2 + decision) * CLASSES + status_index(l.status)) * 2 + account;
        self.requests[index].get_or_init(|| {
            let env = l.env.map_or(NONE, |(_, n)| n);
            let route = l.route.map_or(NONE, |(_, n)| n);
            m.requests.with_label_values(&[env, route, l.decision.as_str(), status_class(l.status), l.account.as_str()])
        })
    }

    /// `isogate_request_duration_seconds` of an environment (or of unbound requests).
    pub fn duration<'a>(&'a self, m: &'a Metrics, env: Option<(usize, &str)>) -> &'a Histogram {
        match env {
            Some((i, name)) => self.durations[i].get_or_init(|| m.request_duration.with_label_values(&[name])),
            None => &m.unbound_duration,
        }
    }

    /// `isogate_upstream_duration_seconds` of a pool.
    pub fn upstream(&self, m: &Metrics, pool: usize, name: &str) -> &Histogram {
        self.upstream[pool].get_or_init(|| m.upstream_duration.with_label_values(&[name]))
    }

    /// `isogate_rate_limit_decisions_total` for these labels.
    pub fn limit(&self, m: &Metrics, l: &LimitLabels<'_>) -> &IntCounter {
        let env = l.env.map_or(self.envs, |(i, _)| i);
        let index = ((env * self.plans + l.plan.0) * RESULTS + l.result.0) * MODES + l.mode.0;
        self.limits[index].get_or_init(|| {
            let env = l.env.map_or(NONE, |(_, n)| n);
            m.rate_limit.with_label_values(&[env, l.plan.1, l.result.1, l.mode.1])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_label_combination_has_its_own_child() {
        let m = Metrics::register(&prometheus::Registry::new()).unwrap();
        let cells = MetricCells::new(2, 3, 1, 1);
        let labels = |env: Option<usize>, route: Option<usize>, status: u16, account: Account| RequestLabels {
            env: env.map(|i| (i, ["prod", "stage"][i])),
            route: route.map(|i| (i, ["a", "b", "c"][i])),
            decision: Decision::Allow,
            status,
            account,
        };
        for (env, route, status, account) in [
            (Some(0), Some(2), 200, Account::Regular),
            (Some(1), Some(2), 200, Account::Regular),
            (Some(1), None, 503, Account::Test),
            (None, None, 0, Account::Regular),
            (Some(0), Some(2), 200, Account::Regular),
        ] {
            cells.request(&m, &labels(env, route, status, account)).inc();
        }
        let get = |l: [&str; 5]| m.requests.with_label_values(&l).get();
        assert_eq!(get(["prod", "c", "allow", "2xx", "regular"]), 2);
        assert_eq!(get(["stage", "c", "allow", "2xx", "regular"]), 1);
        assert_eq!(get(["stage", "none", "allow", "5xx", "test"]), 1);
        assert_eq!(get(["none", "none", "allow", "none", "regular"]), 1);
    }
}
