//! The bounded tenant label: per-tenant request counts for the top N tenants by traffic,
//! everyone else folded into `other`, so a million tenants cannot blow up a scrape.
//!
//! Traffic is estimated with a fixed-memory count-min sketch (estimates can only run
//! high, by collisions); the top set holds at most N tenants and is replaced
//! copy-on-write, so the request path only reads it. A tenant that drops out of the top
//! set loses its series (it is removed, not left to grow the scrape).

use std::sync::Mutex;

use arc_swap::ArcSwap;
use pingora_limits::estimator::Estimator;

/// Label value for tenants outside the top N.
pub const OTHER: &str = "other";

/// Ranks tenants by traffic and keeps the top N.
pub struct TenantRanking {
    top: usize,
    sketch: Estimator,
    members: ArcSwap<Vec<Box<str>>>,
    threshold: std::sync::atomic::AtomicIsize,
    update: Mutex<()>,
}

impl std::fmt::Debug for TenantRanking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantRanking").field("top", &self.top).finish_non_exhaustive()
    }
}

/// What one observation decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    /// Whether the tenant has its own label.
    pub top: bool,
    /// A tenant that just left the top set (its series should be removed).
    pub evicted: Option<Box<str>>,
}

impl TenantRanking {
    /// Keeps the `top` busiest tenants.
    pub fn new(top: usize) -> Self {
        Self {
            top,
            sketch: Estimator::new(4, 8192),
            members: ArcSwap::from_pointee(Vec::new()),
            threshold: std::sync::atomic::AtomicIsize::new(0),
            update: Mutex::new(()),
        }
    }

    /// Counts one request of `tenant` and says whether it is in the top set.
    pub fn observe(&self, tenant: &str) -> Ranked {
        let estimate = self.sketch.incr(tenant, 1);
        let members = self.members.load();
        if members.iter().any(|m| &**m == tenant) {
            return Ranked { top: true, evicted: None };
        }
        let full = members.len() >= self.top;
        if full && estimate <= self.threshold.load(std::sync::atomic::Ordering::Acquire) {
            return Ranked { top: false, evicted: None };
        }
        let Ok(_one) = self.update.lock() else { return Ranked { top: false, evicted: None } };
        let mut next: Vec<Box<str>> = self.members.load().as_ref().clone();
        if next.iter().any(|m| &**m == tenant) {
            return Ranked { top: true, evicted: None };
        }
        let mut evicted = None;
        if next.len() >= self.top {
            let (index, lowest) = next
                .iter()
                .enumerate()
                .map(|(i, m)| (i, self.sketch.get(&**m)))
                .min_by_key(|(_, e)| *e)
                .unwrap_or((0, 0));
            if estimate <= lowest {
                self.threshold.store(lowest, std::sync::atomic::Ordering::Release);
                return Ranked { top: false, evicted: None };
            }
            evicted = Some(next.swap_remove(index));
        }
        next.push(tenant.into());
        let lowest = next.iter().map(|m| self.sketch.get(&**m)).min().unwrap_or(0);
        self.threshold.store(if next.len() >= self.top { lowest } else { 0 }, std::sync::atomic::Ordering::Release);
        self.members.store(std::sync::Arc::new(next));
        Ranked { top: true, evicted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_tenants_get_labels_and_the_rest_fold_into_other() {
        let r = TenantRanking::new(2);
        for _ in 0..50 {
            r.observe("big");
        }
        for _ in 0..30 {
            r.observe("medium");
        }
        assert!(r.observe("big").top);
        assert!(!r.observe("tiny").top, "the set is full of busier tenants");
        // A tenant that becomes the busiest displaces the least busy member.
        let mut last = Ranked { top: false, evicted: None };
        for _ in 0..100 {
            let got = r.observe("rising");
            if got.evicted.is_some() {
                last = got;
            }
        }
        assert_eq!(last.evicted.as_deref(), Some("medium"));
        assert!(r.observe("rising").top);
        assert!(!r.observe("medium").top);
    }

    #[test]
    fn a_million_tenants_keep_the_label_set_bounded() {
        let r = TenantRanking::new(10);
        let labelled: std::collections::HashSet<String> =
            (0..200_000u32).map(|i| format!("t{}", i % 100_000)).filter(|t| r.observe(t).top).collect();
        assert!(r.members.load().len() <= 10);
        assert!(labelled.len() < 2_000, "{} tenants were labelled at some point", labelled.len());
    }
}
