//! Local quota counters: exact counts per key in a concurrent map (`DashMap`, short
//! per-shard locks), bounded by construction.
//!
//! Every entry owns one slot of a fixed ring of `capacity` slots, so the map never
//! holds more than `capacity` keys whatever the traffic. The ring is allocated on the
//! first new key (none for plans without quotas). A key already held is charged under
//! its shard's lock, with no allocation. A new key takes a never-used slot while the
//! ring fills up; after that a hand sweeps the ring and samples `SAMPLE` slots per new
//! key, taking a free one or evicting
//! - a key whose counted windows have all ended (as good as absent: nothing is lost),
//! - else the least recently charged key of the sample (approximate LRU; "recently" is
//!   counted in new keys, not in time, which is what eviction order needs and costs
//!   one shared load per charge).
//!
//! Work per new key is `O(SAMPLE)`, never a scan of the map.
//!
//! Bounds:
//! - memory: at most `capacity` keys, each about 190 bytes for a short key (map entry
//!   ~120, the key's allocation ~40, its ring slot 24); about 200 MiB for the default
//!   2^20 when all are in use, and nothing until a plan with a quota is charged;
//! - counts are exact while fewer than `capacity` distinct keys are charged within the
//!   longest quota window (a month for a monthly quota): such keys are never evicted;
//! - beyond that a key still inside a window can be evicted; its count restarts at 0,
//!   so it can be admitted up to one more full quota per window for each eviction. Keys
//!   charged (or refused) recently are the last to go, so a tenant hammering its
//!   exhausted quota keeps its count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::{Exhausted, Quota};

/// Slots sampled for a victim per new key once the table is full.
const SAMPLE: usize = 8;

#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    start: i64,
    used: u64,
}

/// One key's counters, one per window kind.
#[derive(Debug)]
struct Entry {
    counters: [Counter; 4],
    /// The ring slot this entry owns.
    slot: usize,
    /// Last charge or refusal, on the clock of new keys (the ring's hand), for LRU.
    used_at: usize,
    /// End of the latest counted window, in Unix seconds.
    ends: i64,
}

/// A ring slot: the key that owns it, if any.
type Slot = Mutex<Option<Arc<str>>>;

/// The window bounds of one charge, in the order of the plan's quotas.
type Bounds = [(i64, i64); 4];

/// Local quota counters for at most `capacity` keys.
#[derive(Debug)]
pub struct QuotaCounters {
    map: DashMap<Arc<str>, Entry>,
    ring: OnceLock<Box<[Slot]>>,
    /// Sweeps the full ring; also the clock of `Entry::used_at` (one tick per new key).
    hand: AtomicUsize,
    /// Slots handed out before the ring first filled up.
    filled: AtomicUsize,
    capacity: usize,
}

impl QuotaCounters {
    /// Counters for at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            map: DashMap::new(),
            ring: OnceLock::new(),
            hand: AtomicUsize::new(0),
            filled: AtomicUsize::new(0),
            capacity: capacity.max(1),
        }
    }

    /// Keys held now (at most the capacity).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Charges `cost` against every quota, or refuses without charging any. `share`
    /// divides each limit (a gateway's share of a cluster-wide quota).
    pub fn charge(
        &self,
        key: &str,
        quotas: &[Quota],
        tz: &TimeZone,
        cost: u64,
        now: Timestamp,
        share: u64,
    ) -> Result<(), Exhausted> {
        if quotas.is_empty() {
            return Ok(());
        }
        let mut bounds: Bounds = [(0, 0); 4];
        for (b, q) in bounds.iter_mut().zip(quotas) {
            *b = q.window.bounds(now, tz);
        }
        let used_at = self.hand.load(Ordering::Relaxed);
        let charge = Charge { quotas, bounds: &bounds, cost, share: share.max(1), now, used_at };
        if let Some(mut entry) = self.map.get_mut(key) {
            return charge.apply(&mut entry);
        }
        // A charge that a fresh count refuses takes no room.
        let mut fresh = Entry { counters: Default::default(), slot: 0, used_at: 0, ends: i64::MIN };
        charge.apply(&mut fresh)?;
        self.insert(key, fresh, &charge)
    }

    /// Inserts `fresh` (already charged) for `key` in a slot taken from another key,
    /// or charges the entry another request inserted meanwhile.
    fn insert(&self, key: &str, mut fresh: Entry, charge: &Charge<'_>) -> Result<(), Exhausted> {
        let ring = self.ring.get_or_init(|| (0..self.capacity).map(|_| Mutex::new(None)).collect());
        let index = self.victim(ring, charge.now);
        // Lock order: a ring slot, then map shards; never the other way round.
        let mut slot = lock(&ring[index]);
        if let Some(old) = slot.take() {
            self.map.remove_if(&*old, |_, e| e.slot == index);
        }
        match self.map.entry(Arc::from(key)) {
            MapEntry::Occupied(mut held) => charge.apply(held.get_mut()),
            MapEntry::Vacant(vacant) => {
                *slot = Some(vacant.key().clone());
                fresh.slot = index;
                vacant.insert(fresh);
                Ok(())
            }
        }
    }

    /// The slot to take: a never-used one while the ring fills up; then the first free
    /// slot or ended key of the sample, else its least recently used key.
    fn victim(&self, ring: &[Slot], now: Timestamp) -> usize {
        let n = ring.len();
        let start = self.hand.fetch_add(SAMPLE, Ordering::Relaxed) % n;
        if self.filled.load(Ordering::Relaxed) < n {
            let index = self.filled.fetch_add(1, Ordering::Relaxed);
            if index < n {
                return index;
            }
        }
        let mut best = (start, usize::MAX);
        for i in 0..SAMPLE.min(n) {
            let index = (start + i) % n;
            let Some(key) = lock(&ring[index]).clone() else { return index };
            let used_at = match self.map.get(&*key) {
                Some(e) if e.ends > now.as_second() => e.used_at,
                _ => return index,
            };
            if used_at < best.1 {
                best = (index, used_at);
            }
        }
        best.0
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One request's charge.
struct Charge<'a> {
    quotas: &'a [Quota],
    bounds: &'a Bounds,
    cost: u64,
    share: u64,
    now: Timestamp,
    used_at: usize,
}

impl Charge<'_> {
    /// Charges every quota of `entry`, or none.
    fn apply(&self, entry: &mut Entry) -> Result<(), Exhausted> {
        entry.used_at = self.used_at;
        for (q, (start, end)) in self.quotas.iter().zip(self.bounds) {
            let c = &entry.counters[q.window as usize];
            let used = if c.start == *start { c.used } else { 0 };
            let limit = (q.limit / self.share).max(1);
            if used.saturating_add(self.cost) > limit {
                let left = u64::try_from(end - self.now.as_second()).unwrap_or(0);
                return Err(Exhausted { window: q.window, limit, retry_after: Duration::from_secs(left.max(1)) });
            }
        }
        for (q, (start, end)) in self.quotas.iter().zip(self.bounds) {
            let c = &mut entry.counters[q.window as usize];
            if c.start != *start {
                *c = Counter { start: *start, used: 0 };
            }
            c.used += self.cost;
            entry.ends = entry.ends.max(*end);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
