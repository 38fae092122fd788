//! The verified-token cache: skips signature work for a token seen before.
//!
//! Keyed by the whole token string (so a hit is the same bytes that were verified, with
//! the `alg`, `typ` and `kid` that were checked), bounded by `capacity` entries, and
//! never trusted blindly: a hit re-checks `exp` and `nbf` against the clock (entries die
//! with their token), and is dropped when the key that verified it has left the
//! issuer's key set. The environment binding runs after identification on every
//! request, hit or not.
//!
//! Eviction is CLOCK (second chance) on top of the `DashMap`: a hit sets the entry's
//! `used` bit (one relaxed atomic store, no allocation, under the shard's read lock).
//! An insert that finds the cache full runs one sweep (one sweeper at a time; inserts
//! that meet a running sweep are simply not cached): it drops expired entries and every
//! entry not hit since the previous sweep, and clears the bit of the rest. When nearly
//! everything was in use, it also drops one of `PARTITIONS` slices of the entries (by a
//! few bytes of the token's signature, a different slice each time), so each sweep
//! frees at least about an eighth of the cache and its O(entries) cost is amortised over
//! the inserts it makes room for. New tokens are therefore always cached, tokens in use
//! stay, and one-off tokens leave first.
//!
//! Bound: at most `capacity` entries (`token.cache_entries`, default 10,000). Each costs
//! about 400 bytes (map slot, entry and `Identity` with its claim strings) plus the
//! token's length: about 1.1 KB for a typical 700-byte RS256 token, so about 11 MB at
//! the default.
//!
//! Measured with `cargo bench --bench stages -- cache/churn` (a 1,000-entry cache filled
//! by tokens used once, then 64 RS256 tokens in use among three one-off HS256 tokens per
//! hot request; 2-core machine, release build): the hot tokens hit 98.4 % of the time
//! and a round takes 23.6 µs, against 0 % and 417.5 µs when a full cache refused new
//! tokens. A hit (`verify/RS256/cached`) stays at about 0.8 µs. `DashMap` is kept (the
//! design's concurrent map, no new dependency); a bounded cache crate was not needed
//! to get new tokens cached.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::{Identity, IssuerId};

/// The map's hash: foldhash with a per-process random seed, several times faster than
/// SipHash over a whole token. Only verified tokens are ever inserted, so a caller
/// cannot fill a bucket with colliding keys without holding a signing key.
type TokenHasher = foldhash::fast::RandomState;

/// Slices of the cache dropped in turn when a sweep finds nearly everything in use.
const PARTITIONS: u64 = 8;

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

/// An entry with its CLOCK bit.
#[derive(Debug)]
struct Slot {
    entry: Cached,
    used: AtomicBool,
}

/// Bounded map from token to verified identity.
#[derive(Debug)]
pub(crate) struct TokenCache {
    map: DashMap<Box<str>, Slot, TokenHasher>,
    capacity: usize,
    /// Entries held, counted on insert and removal (cheaper than `DashMap::len`).
    held: AtomicUsize,
    sweeping: AtomicBool,
    sweeps: AtomicU64,
}

/// The slice of the cache `token` belongs to, from the last bytes of its signature.
fn partition(token: &str) -> u64 {
    let tail = &token.as_bytes()[token.len().saturating_sub(8)..];
    tail.iter().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b))) % PARTITIONS
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0 disables it).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: DashMap::with_hasher(TokenHasher::default()),
            capacity,
            held: AtomicUsize::new(0),
            sweeping: AtomicBool::new(false),
            sweeps: AtomicU64::new(0),
        }
    }

    /// Whether tokens are cached at all (`capacity` > 0).
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The most tokens held.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tokens held.
    pub(crate) fn len(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// A still-valid entry for `token`; expired entries are removed.
    pub(crate) fn get(&self, token: &str, now: u64) -> Option<Cached> {
        if self.capacity == 0 {
            return None;
        }
        let slot = self.map.get(token)?;
        if slot.entry.current(now) {
            if !slot.used.load(Ordering::Relaxed) {
                slot.used.store(true, Ordering::Relaxed);
            }
            return Some(slot.entry.clone());
        }
        drop(slot);
        self.remove(token);
        None
    }

    /// Forgets `token` (its key left the key set, or it expired).
    pub(crate) fn remove(&self, token: &str) {
        if self.map.remove(token).is_some() {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Remembers a verification, sweeping first when the cache is full.
    pub(crate) fn insert(&self, token: &str, entry: Cached, now: u64) {
        if self.capacity == 0 || entry.identity.expires_at.is_none() {
            return;
        }
        if !self.reserve() {
            self.sweep(now);
            if !self.reserve() {
                return;
            }
        }
        self.put(token.into(), entry);
    }

    /// Takes one place, if there is one.
    fn reserve(&self) -> bool {
        self.held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.capacity).then_some(n + 1)).is_ok()
    }

    /// Stores an entry whose place is reserved.
    fn put(&self, token: Box<str>, entry: Cached) {
        if self.map.insert(token, Slot { entry, used: AtomicBool::new(false) }).is_some() {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// One CLOCK sweep (see the module doc); a no-op while another one runs.
    fn sweep(&self, now: u64) {
        if self.sweeping.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return;
        }
        let mut freed = 0;
        self.map.retain(|_, slot| {
            let keep = slot.entry.current(now) && slot.used.swap(false, Ordering::Relaxed);
            freed += usize::from(!keep);
            keep
        });
        if freed < self.capacity / PARTITIONS as usize + 1 {
            let slice = self.sweeps.fetch_add(1, Ordering::Relaxed) % PARTITIONS;
            self.map.retain(|token, _| {
                let keep = partition(token) != slice;
                freed += usize::from(!keep);
                keep
            });
        }
        self.held.fetch_sub(freed, Ordering::Relaxed);
        self.sweeping.store(false, Ordering::Release);
    }

    /// Copies `previous`'s still-valid entries whose issuer `carry` maps to an issuer of
    /// this configuration (one whose rules did not change), with that issuer's id.
    pub(crate) fn adopt(&self, previous: &TokenCache, now: u64, carry: impl Fn(IssuerId) -> Option<IssuerId>) {
        if self.capacity == 0 {
            return;
        }
        for item in previous.map.iter() {
            let old = &item.value().entry;
            let Some(issuer) = carry(old.issuer).filter(|_| old.current(now)) else { continue };
            if !self.reserve() {
                return;
            }
            let identity = if issuer == old.issuer {
                Arc::clone(&old.identity)
            } else {
                Arc::new(Identity { issuer, ..Identity::clone(&old.identity) })
            };
            self.put(item.key().clone(), Cached { identity, issuer, ..old.clone() });
        }
    }
}

#[cfg(test)]
mod tests;
