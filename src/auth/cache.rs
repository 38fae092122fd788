//! The verified-token cache: skips signature work for a token seen before.
//!
//! Keyed by the whole token string (so a hit is the same bytes that were verified),
//! bounded by `capacity` entries, and never trusted blindly: a hit re-checks `exp` and
//! `nbf` against the clock (entries die with their token), and is dropped when the key
//! that verified it has left the issuer's key set. The environment binding runs after
//! identification on every request, hit or not. When it is full, expired entries are
//! swept at most once a second, so a stream of new tokens cannot make every miss scan
//! the whole map.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::{Identity, IssuerId};

/// A cached verification.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub(crate) identity: Arc<Identity>,
    pub(crate) issuer: IssuerId,
    pub(crate) key_id: u64,
    pub(crate) leeway: u64,
}

impl Cached {
    /// Whether the token's time claims still hold at `now` (seconds).
    fn current(&self, now: u64) -> bool {
        let exp_ok = self.identity.expires_at.is_some_and(|exp| now <= exp.saturating_add(self.leeway));
        let nbf_ok = self.identity.not_before.is_none_or(|nbf| nbf <= now.saturating_add(self.leeway));
        exp_ok && nbf_ok
    }
}

/// Bounded map from token to verified identity.
#[derive(Debug)]
pub(crate) struct TokenCache {
    map: DashMap<Box<str>, Cached>,
    capacity: usize,
    /// When (seconds) the last sweep of expired entries ran.
    swept_at: AtomicU64,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0 disables it).
    pub(crate) fn new(capacity: usize) -> Self {
        Self { map: DashMap::new(), capacity, swept_at: AtomicU64::new(0) }
    }

    /// Whether tokens are cached at all (`capacity` > 0).
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Tokens held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// A still-valid entry for `token`; expired entries are removed.
    pub(crate) fn get(&self, token: &str, now: u64) -> Option<Cached> {
        if self.capacity == 0 {
            return None;
        }
        let hit = self.map.get(token)?;
        if hit.current(now) {
            return Some(hit.clone());
        }
        drop(hit);
        self.map.remove(token);
        None
    }

    /// Forgets `token` (its key left the key set).
    pub(crate) fn remove(&self, token: &str) {
        self.map.remove(token);
    }

    /// Remembers a verification. When full, expired entries are swept first (at most
    /// once a second); if it is still full the token is simply not cached.
    pub(crate) fn insert(&self, token: &str, entry: Cached, now: u64) {
        if self.capacity == 0 || entry.identity.expires_at.is_none() {
            return;
        }
        if self.map.len() >= self.capacity {
            let swept = self.swept_at.load(Ordering::Relaxed);
            if now <= swept || self.swept_at.compare_exchange(swept, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                return;
            }
            self.map.retain(|_, c| c.current(now));
            if self.map.len() >= self.capacity {
                return;
            }
        }
        self.map.insert(token.into(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(exp: u64, nbf: Option<u64>) -> Cached {
        let identity =
            Identity { expires_at: Some(exp), not_before: nbf, tenant: Some("acme".into()), ..Default::default() };
        Cached { identity: Arc::new(identity), issuer: IssuerId(0), key_id: 7, leeway: 10 }
    }

    #[test]
    fn hits_recheck_time_claims() {
        let c = TokenCache::new(10);
        c.insert("t", cached(100, Some(50)), 60);
        assert!(c.get("t", 60).is_some());
        assert!(c.get("t", 110).is_some(), "within leeway");
        assert!(c.get("t", 111).is_none(), "expired");
        assert_eq!(c.len(), 0, "expired entries are dropped");
        c.insert("n", cached(1000, Some(500)), 100);
        assert!(c.get("n", 100).is_none(), "not yet valid");
    }

    #[test]
    fn stays_within_capacity() {
        let c = TokenCache::new(2);
        c.insert("a", cached(100, None), 0);
        c.insert("b", cached(5, None), 0);
        c.insert("c", cached(100, None), 0);
        assert_eq!(c.len(), 2, "full, nothing expired: not cached");
        c.insert("d", cached(100, None), 50);
        assert_eq!(c.len(), 2, "b expired and made room");
        assert!(c.get("d", 50).is_some());
        c.insert("e", cached(100, Some(0)), 50);
        assert_eq!(c.len(), 2, "one sweep a second: the second miss in second 50 is not cached");
        let off = TokenCache::new(0);
        off.insert("a", cached(100, None), 0);
        assert!(off.get("a", 0).is_none());
    }
}
