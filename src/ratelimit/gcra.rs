//! A lock-free, fixed-memory GCRA rate limiter for many keys.
//!
//! Each slot of a fixed table is one `AtomicU64` packing a 22-bit key fingerprint and a
//! 42-bit theoretical arrival time (TAT) in 100 µs ticks since the limiter started. A key
//! hashes to a home slot and probes `PROBES` slots; updates are a single CAS.
//!
//! Memory is `8 × capacity` bytes whatever the number of tenants (8 MiB for the default
//! 2^20 slots). Idle keys need no state: a TAT in the past is the same as a fresh key, so
//! such slots are reused freely and eviction of idle tenants is exact. Error bounds:
//! - when all probed slots hold keys that are still limited, the one closest to
//!   replenishment is evicted, and that key may get up to one extra burst;
//! - two keys with the same home slot and fingerprint (probability about
//!   `PROBES / 2^22` per pair of hot keys sharing a home slot) share one bucket;
//! - time has a 100 µs resolution, so rates above 10,000/s per key are not representable
//!   (the config refuses them), and the TAT wraps after about 13.9 years of uptime.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Slots probed from a key's home slot.
const PROBES: usize = 4;
/// Bits of the TAT.
const TAT_BITS: u32 = 42;
const TAT_MASK: u64 = (1 << TAT_BITS) - 1;
/// Length of one tick.
pub const TICK: Duration = Duration::from_micros(100);

/// A rate: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Ticks between two requests at the sustained rate (GCRA's emission interval T).
    interval_ticks: u64,
    /// How far the TAT may run ahead of now (GCRA's τ = (burst - 1) × T).
    tolerance_ticks: u64,
}

impl Rate {
    /// A rate of `per_second` (1..=10,000) with a `burst` (≥ 1).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        if per_second == 0 || per_second > 10_000 || burst == 0 {
            return None;
        }
        let interval_ticks = 10_000 / u64::from(per_second);
        Some(Self { interval_ticks, tolerance_ticks: interval_ticks * u64::from(burst - 1) })
    }

    /// The sustained rate per second this limiter enforces.
    pub fn per_second(&self) -> u64 {
        10_000 / self.interval_ticks
    }

    /// The burst size.
    pub fn burst(&self) -> u64 {
        self.tolerance_ticks / self.interval_ticks + 1
    }

    /// Time between two requests at the sustained rate.
    pub fn interval(&self) -> Duration {
        TICK * u32::try_from(self.interval_ticks).unwrap_or(u32::MAX)
    }

    /// How far ahead of now the schedule may run (the burst allowance).
    pub fn tolerance(&self) -> Duration {
        TICK * u32::try_from(self.tolerance_ticks).unwrap_or(u32::MAX)
    }

    /// This rate divided among `share` gateways (at least 1 request per burst).
    pub fn share(self, share: u64) -> Self {
        if share <= 1 {
            return self;
        }
        let interval_ticks = self.interval_ticks.saturating_mul(share);
        let burst = (self.burst() / share).max(1);
        Self { interval_ticks, tolerance_ticks: interval_ticks * (burst - 1) }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; `remaining` more requests would be admitted right now.
    Allow {
        /// Requests left in the current burst.
        remaining: u64,
    },
    /// Refused; retry after this long.
    Deny {
        /// Time until the request would be admitted.
        retry_after: Duration,
    },
}

/// The slot table.
pub struct Gcra {
    slots: Box<[AtomicU64]>,
    mask: usize,
    hasher: std::hash::RandomState,
}

impl std::fmt::Debug for Gcra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gcra").field("slots", &self.slots.len()).finish()
    }
}

fn pack(fingerprint: u64, tat: u64) -> u64 {
    (fingerprint << TAT_BITS) | (tat & TAT_MASK)
}

fn fingerprint(v: u64) -> u64 {
    v >> TAT_BITS
}

fn tat(v: u64) -> u64 {
    v & TAT_MASK
}

impl Gcra {
    /// A table of at least `capacity` slots (rounded up to a power of two).
    pub fn new(capacity: usize) -> Self {
        let size = capacity.max(PROBES).next_power_of_two();
        Self {
            slots: (0..size).map(|_| AtomicU64::new(0)).collect(),
            mask: size - 1,
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Bytes of state held, whatever the number of keys.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<AtomicU64>()
    }

    /// Charges `cost` requests for `key` at time `now` (ticks since start; see `ticks`).
    pub fn check<K: Hash + ?Sized>(&self, key: &K, rate: Rate, cost: u32, now: u64) -> Verdict {
        let hash = self.hasher.hash_one(key);
        let fp = (hash >> TAT_BITS) | 1;
        let home = (hash as usize) & self.mask;
        let now = now & TAT_MASK;
        loop {
            let (index, current) = self.locate(home, fp, now);
            let slot = &self.slots[index];
            let start = if fingerprint(current) == fp { tat(current).max(now) } else { now };
            let new_tat = start + rate.interval_ticks * u64::from(cost.max(1));
            let allow_at = new_tat.saturating_sub(rate.interval_ticks + rate.tolerance_ticks);
            if allow_at > now {
                return Verdict::Deny { retry_after: TICK * u32::try_from(allow_at - now).unwrap_or(u32::MAX) };
            }
            if slot.compare_exchange(current, pack(fp, new_tat), Ordering::AcqRel, Ordering::Acquire).is_ok() {
                let headroom = (now + rate.interval_ticks + rate.tolerance_ticks).saturating_sub(new_tat);
                return Verdict::Allow { remaining: headroom / rate.interval_ticks };
            }
        }
    }

    /// The slot for `fp`: its own, else a free or idle one, else the one closest to
    /// replenishment (evicted).
    fn locate(&self, home: usize, fp: u64, now: u64) -> (usize, u64) {
        let mut reusable = None;
        let mut oldest = (home, u64::MAX, 0);
        for i in 0..PROBES {
            let index = (home + i) & self.mask;
            let v = self.slots[index].load(Ordering::Acquire);
            if fingerprint(v) == fp {
                return (index, v);
            }
            if reusable.is_none() && (v == 0 || tat(v) <= now) {
                reusable = Some((index, v));
            }
            if tat(v) < oldest.1 {
                oldest = (index, tat(v), v);
            }
        }
        reusable.unwrap_or((oldest.0, oldest.2))
    }
}

/// Ticks since `start`.
pub fn ticks(start: std::time::Instant, now: std::time::Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(start).as_micros() / 100).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(v: Verdict) -> bool {
        matches!(v, Verdict::Allow { .. })
    }

    #[test]
    fn admits_the_burst_then_the_sustained_rate() {
        let g = Gcra::new(1024);
        let rate = Rate::new(10, 5).unwrap(); // one per 1000 ticks, burst 5
        let admitted = (0..20).filter(|_| allowed(g.check("acme", rate, 1, 0))).count();
        assert_eq!(admitted, 5);
        assert_eq!(g.check("acme", rate, 1, 0), Verdict::Deny { retry_after: Duration::from_millis(100) });
        assert!(allowed(g.check("acme", rate, 1, 1_000)), "one more after one interval");
        assert!(!allowed(g.check("acme", rate, 1, 1_000)));
        assert!(allowed(g.check("globex", rate, 1, 0)), "keys are independent");
    }

    #[test]
    fn remaining_counts_down_and_cost_charges_several() {
        let g = Gcra::new(64);
        let rate = Rate::new(100, 10).unwrap();
        assert_eq!(g.check("k", rate, 1, 0), Verdict::Allow { remaining: 9 });
        assert_eq!(g.check("k", rate, 4, 0), Verdict::Allow { remaining: 5 });
        assert!(!allowed(g.check("k", rate, 6, 0)));
        assert_eq!(g.check("k", rate, 5, 0), Verdict::Allow { remaining: 0 });
    }

    /// Property: over any window of length W, a key is admitted at most burst + W / T.
    #[test]
    fn never_admits_more_than_the_limit_plus_burst() {
        let g = Gcra::new(1 << 12);
        let rate = Rate::new(50, 10).unwrap(); // T = 200 ticks
        let mut seed: u64 = 0x1234_5678;
        let mut now = 0;
        let mut admitted = 0;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            now += seed % 50;
            if allowed(g.check("k", rate, 1, now)) {
                admitted += 1;
            }
        }
        let limit = 10 + now / 200;
        assert!(admitted <= limit, "{admitted} > {limit}");
        assert!(admitted + 5 >= limit.min(20_000), "the limiter should not starve: {admitted} of {limit}");
    }

    #[test]
    fn a_million_keys_fit_in_fixed_memory() {
        let g = Gcra::new(1 << 20);
        let rate = Rate::new(1, 1).unwrap();
        let refused = (0..1_000_000u32).filter(|i| !allowed(g.check(i, rate, 1, 0))).count();
        assert_eq!(g.memory_bytes(), 8 << 20);
        // A key's first request finds room (a full probe window evicts the key closest to
        // replenishment) unless its fingerprint collides with a hot key in its probe
        // window: about keys × PROBES / 2^22 ≈ 1 expected here.
        assert!(refused <= 10, "{refused} first requests refused");
    }

    #[test]
    fn rates_out_of_range_are_refused() {
        assert!(Rate::new(0, 1).is_none());
        assert!(Rate::new(10_001, 1).is_none());
        assert!(Rate::new(1, 0).is_none());
        assert_eq!(Rate::new(7, 3).unwrap().burst(), 3);
    }
}
