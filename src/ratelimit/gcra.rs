//! A lock-free, fixed-memory GCRA rate limiter for many keys, with nanosecond time.
//!
//! Each slot of a fixed table is two `AtomicU64`s: the key's 64-bit fingerprint and its
//! theoretical arrival time (TAT) in nanoseconds since the limiter started. A key hashes
//! to a home slot and probes `PROBES` slots. A key that owns its slot is updated by one
//! CAS on the TAT; a key takes a slot by a CAS on the fingerprint, then sets the TAT.
//!
//! Memory is `16 × capacity` bytes whatever the number of tenants (16 MiB for the default
//! 2^20 slots). Idle keys need no state: a TAT in the past is the same as a fresh key, so
//! such slots are reused freely and eviction of idle tenants is exact. Error bounds:
//! - time resolution is 1 ns. A rate `r` (1 to `MAX_RATE` per second) becomes the
//!   interval `T = ⌈10^9 / r⌉` ns, rounded up so the limiter never admits more than
//!   configured. The enforced rate `10^9 / T` lies in `(r − r²/10^9, r]`: the count
//!   admitted in any second is exactly `r` up to 31,622/s, and at most 0.1 % low at
//!   `MAX_RATE`. `Rate::per_second` reports the enforced count, which is what the
//!   `RateLimit-Policy` header states;
//! - when all probed slots hold keys that are still limited, the one closest to
//!   replenishment is evicted, and that key may get up to one extra burst. A request of
//!   the evicted key racing with the takeover may be charged to the new owner;
//! - two keys share one bucket only if their 64-bit hashes are equal (keyed SipHash:
//!   about `2^-64` per pair of keys probing the same slots);
//! - the TAT wraps after 584 years of uptime.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Slots probed from a key's home slot.
const PROBES: usize = 4;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Highest rate per second a plan may set: an interval of 1 µs.
pub const MAX_RATE: u32 = 1_000_000;

/// Bytes of table per slot.
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// A rate: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds between two requests at the sustained rate (GCRA's emission interval T).
    interval_ns: u64,
    /// How far the TAT may run ahead of now (GCRA's τ = (burst - 1) × T).
    tolerance_ns: u64,
}

impl Rate {
    /// A rate of `per_second` (1..=`MAX_RATE`) with a `burst` (≥ 1).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        if per_second == 0 || per_second > MAX_RATE || burst == 0 {
            return None;
        }
        let interval_ns = NANOS_PER_SECOND.div_ceil(u64::from(per_second));
        Some(Self { interval_ns, tolerance_ns: interval_ns * u64::from(burst - 1) })
    }

    /// Requests admitted in one second at the sustained rate: the configured rate, or
    /// slightly less above 31,622/s (see the module doc).
    pub fn per_second(&self) -> u64 {
        NANOS_PER_SECOND.div_ceil(self.interval_ns)
    }

    /// The burst size.
    pub fn burst(&self) -> u64 {
        self.tolerance_ns / self.interval_ns + 1
    }

    /// The most requests admitted in any window of `seconds`: the burst, then one per
    /// interval.
    pub fn most_in(&self, seconds: u64) -> u64 {
        (self.burst() - 1).saturating_add(seconds.saturating_mul(NANOS_PER_SECOND).div_ceil(self.interval_ns))
    }

    /// Time between two requests at the sustained rate.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    /// How far ahead of now the schedule may run (the burst allowance).
    pub fn tolerance(&self) -> Duration {
        Duration::from_nanos(self.tolerance_ns)
    }

    /// This rate divided among `share` gateways (at least 1 request per burst).
    pub fn share(self, share: u64) -> Self {
        if share <= 1 {
            return self;
        }
        let interval_ns = self.interval_ns.saturating_mul(share);
        let burst = (self.burst() / share).max(1);
        Self { interval_ns, tolerance_ns: interval_ns.saturating_mul(burst - 1) }
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

/// One slot: the owner's fingerprint (0: never used) and its TAT.
#[derive(Default)]
struct Slot {
    fingerprint: AtomicU64,
    tat: AtomicU64,
}

#[derive(Clone, Copy)]
/// Where a key's state is: its own slot, or one to take over from `previous`.
enum Located {
    Own(usize),
    Take { index: usize, previous: u64 },
}

/// The slot table.
pub struct Gcra {
    slots: Box<[Slot]>,
    mask: usize,
    hasher: std::hash::RandomState,
}

impl std::fmt::Debug for Gcra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gcra").field("slots", &self.slots.len()).finish()
    }
}

impl Gcra {
    /// A table of at least `capacity` slots (rounded up to a power of two).
    pub fn new(capacity: usize) -> Self {
        let size = capacity.max(PROBES).next_power_of_two();
        Self { slots: (0..size).map(|_| Slot::default()).collect(), mask: size - 1, hasher: Default::default() }
    }

    /// Bytes of state held, whatever the number of keys.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * SLOT_BYTES
    }

    /// Charges `cost` requests for `key` at time `now` (ns since start; see `nanos`).
    pub fn check<K: Hash + ?Sized>(&self, key: &K, rate: Rate, cost: u32, now: u64) -> Verdict {
        let hash = self.hasher.hash_one(key);
        let fingerprint = hash | 1;
        let home = (hash as usize) & self.mask;
        let charge = rate.interval_ns.saturating_mul(u64::from(cost.max(1)));
        let limit = rate.interval_ns.saturating_add(rate.tolerance_ns);
        loop {
            let located = self.locate(home, fingerprint, now);
            let (slot, owned_tat) = match located {
                Located::Own(index) => (&self.slots[index], Some(self.slots[index].tat.load(Ordering::Acquire))),
                Located::Take { index, .. } => (&self.slots[index], None),
            };
            let new_tat = owned_tat.map_or(now, |t| t.max(now)).saturating_add(charge);
            let allow_at = new_tat.saturating_sub(limit);
            if allow_at > now {
                return Verdict::Deny { retry_after: Duration::from_nanos(allow_at - now) };
            }
            let stored = match (located, owned_tat) {
                (Located::Take { previous, .. }, _) => take(slot, previous, fingerprint, new_tat),
                (Located::Own(_), Some(tat)) => {
                    slot.tat.compare_exchange(tat, new_tat, Ordering::AcqRel, Ordering::Acquire).is_ok()
                }
                (Located::Own(_), None) => false,
            };
            if stored {
                let headroom = (now + limit).saturating_sub(new_tat);
                return Verdict::Allow { remaining: headroom / rate.interval_ns };
            }
        }
    }

    /// The slot for `fingerprint`: its own, else a free or idle one, else the one
    /// closest to replenishment (evicted).
    fn locate(&self, home: usize, fingerprint: u64, now: u64) -> Located {
        let mut reusable = None;
        let mut oldest = (home, u64::MAX, 0);
        for i in 0..PROBES {
            let index = (home + i) & self.mask;
            let slot = &self.slots[index];
            let owner = slot.fingerprint.load(Ordering::Acquire);
            if owner == fingerprint {
                return Located::Own(index);
            }
            let tat = slot.tat.load(Ordering::Acquire);
            if reusable.is_none() && (owner == 0 || tat <= now) {
                reusable = Some((index, owner));
            }
            if tat < oldest.1 {
                oldest = (index, tat, owner);
            }
        }
        let (index, previous) = reusable.unwrap_or((oldest.0, oldest.2));
        Located::Take { index, previous }
    }
}

/// Takes `slot` over from `previous` with `tat`; false when another request got there
/// first (the caller retries).
fn take(slot: &Slot, previous: u64, fingerprint: u64, tat: u64) -> bool {
    let old_tat = slot.tat.load(Ordering::Acquire);
    if slot.fingerprint.compare_exchange(previous, fingerprint, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return false;
    }
    // A request of the previous owner that read its fingerprint before the takeover may
    // move the TAT in between; then this request retries as the owner.
    slot.tat.compare_exchange(old_tat, tat, Ordering::AcqRel, Ordering::Acquire).is_ok()
}

/// Nanoseconds since `start`.
pub fn nanos(start: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn allowed(v: Verdict) -> bool {
        matches!(v, Verdict::Allow { .. })
    }

    #[test]
    fn admits_the_burst_then_the_sustained_rate() {
        let g = Gcra::new(1024);
        let rate = Rate::new(10, 5).unwrap(); // one per 100 ms, burst 5
        let admitted = (0..20).filter(|_| allowed(g.check("acme", rate, 1, 0))).count();
        assert_eq!(admitted, 5);
        assert_eq!(g.check("acme", rate, 1, 0), Verdict::Deny { retry_after: Duration::from_millis(100) });
        assert_eq!(g.check("acme", rate, 1, 60 * MS), Verdict::Deny { retry_after: Duration::from_millis(40) });
        assert!(allowed(g.check("acme", rate, 1, 100 * MS)), "one more after one interval");
        assert!(!allowed(g.check("acme", rate, 1, 100 * MS)));
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

    /// Admitted in one simulated second by a client that retries exactly when told.
    fn admitted_in_one_second(rate: Rate) -> u64 {
        let g = Gcra::new(64);
        let (mut now, mut admitted) = (0, 0);
        while now < 1_000_000_000 {
            match g.check("k", rate, 1, now) {
                Verdict::Allow { .. } => admitted += 1,
                Verdict::Deny { retry_after } => now += u64::try_from(retry_after.as_nanos()).unwrap(),
            }
        }
        admitted
    }

    #[test]
    fn a_rate_of_7000_a_second_admits_exactly_7000_in_a_second() {
        let rate = Rate::new(7_000, 1).unwrap();
        assert_eq!(rate.interval(), Duration::from_nanos(142_858));
        assert_eq!(admitted_in_one_second(rate), 7_000);
        assert_eq!((rate.per_second(), rate.most_in(1)), (7_000, 7_000));
        // Requests every microsecond: a burst of 2 absorbs the sub-interval lateness, so
        // the second holds the burst plus one per interval, as advertised.
        let g = Gcra::new(64);
        let rate = Rate::new(7_000, 2).unwrap();
        let admitted = (0..1_000_000u64).filter(|us| allowed(g.check("k", rate, 1, us * 1_000))).count();
        assert_eq!(admitted as u64, rate.most_in(1));
        assert_eq!(admitted, 7_001);
    }

    /// Property: no rate is exceeded; up to 31,622/s the count per second is exact, and
    /// above it is low by less than r²/10^9 (0.1 % at the maximum).
    #[test]
    fn every_rate_up_to_the_maximum_is_enforced_as_configured_or_just_below() {
        for r in 1..=MAX_RATE {
            let rate = Rate::new(r, 1).unwrap();
            let (r, enforced) = (u64::from(r), rate.per_second());
            assert!(enforced <= r && r - enforced <= r * r / 1_000_000_000, "{r}/s enforced as {enforced}");
            if r <= 31_622 {
                assert_eq!(enforced, r);
            }
        }
        for r in [1, 3, 7_000, 9_999, 31_622, 31_623, 100_000, 999_999, MAX_RATE] {
            let rate = Rate::new(r, 1).unwrap();
            assert_eq!(admitted_in_one_second(rate), rate.per_second(), "{r}/s");
        }
    }

    /// Property: over any window of length W, a key is admitted at most burst + W / T.
    #[test]
    fn never_admits_more_than_the_limit_plus_burst() {
        let g = Gcra::new(1 << 12);
        let rate = Rate::new(50, 10).unwrap(); // T = 20 ms
        let mut seed: u64 = 0x1234_5678;
        let mut now = 0;
        let mut admitted = 0;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            now += (seed % 5_000) * 1_000;
            if allowed(g.check("k", rate, 1, now)) {
                admitted += 1;
            }
        }
        let limit = 10 + now / (20 * MS);
        assert!(admitted <= limit, "{admitted} > {limit}");
        assert!(admitted + 5 >= limit.min(20_000), "the limiter should not starve: {admitted} of {limit}");
    }

    #[test]
    fn a_million_keys_fit_in_fixed_memory() {
        let g = Gcra::new(1 << 20);
        let rate = Rate::new(1, 1).unwrap();
        let refused = (0..1_000_000u32).filter(|i| !allowed(g.check(i, rate, 1, 0))).count();
        assert_eq!(g.memory_bytes(), 16 << 20);
        // A key's first request finds room: a full probe window evicts the key closest
        // to replenishment, and 64-bit fingerprints do not collide in practice.
        assert_eq!(refused, 0, "{refused} first requests refused");
    }

    #[test]
    fn a_limited_key_evicted_from_a_full_window_comes_back_fresh() {
        let g = Gcra::new(PROBES); // one probe window: the fifth key evicts
        let rate = Rate::new(1, 1).unwrap();
        for key in 0..4u64 {
            assert!(allowed(g.check(&key, rate, 1, key * 10 * MS)));
        }
        assert!(allowed(g.check(&4u64, rate, 1, 40 * MS)), "evicts key 0, the closest to replenishment");
        assert!(!allowed(g.check(&1u64, rate, 1, 50 * MS)), "the others keep their state");
        assert!(allowed(g.check(&0u64, rate, 1, 50 * MS)), "key 0 starts over: the documented extra burst");
    }

    #[test]
    fn rates_out_of_range_are_refused() {
        assert!(Rate::new(0, 1).is_none());
        assert!(Rate::new(MAX_RATE + 1, 1).is_none());
        assert!(Rate::new(1, 0).is_none());
        assert_eq!(Rate::new(7, 3).unwrap().burst(), 3);
        assert_eq!(Rate::new(10, 5).unwrap().most_in(1), 14, "the burst, then one every 100 ms");
    }
}
