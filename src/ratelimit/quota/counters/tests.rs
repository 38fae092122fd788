//! Exact counts, the capacity bound, and which key is evicted.

use super::*;
use crate::ratelimit::quota::Window;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn utc() -> TimeZone {
    TimeZone::UTC
}

#[test]
fn quotas_refuse_at_the_limit_and_reset_at_the_boundary() {
    let q = QuotaCounters::new(100);
    let quotas = [Quota { window: Window::Minute, limit: 3 }, Quota { window: Window::Day, limit: 5 }];
    let t0 = ts("2026-05-31T23:58:10Z");
    for _ in 0..3 {
        q.charge("acme", &quotas, &utc(), 1, t0, 1).unwrap();
    }
    let e = q.charge("acme", &quotas, &utc(), 1, t0, 1).unwrap_err();
    assert_eq!((e.window, e.retry_after), (Window::Minute, Duration::from_secs(50)));
    let t1 = ts("2026-05-31T23:59:00Z");
    q.charge("acme", &quotas, &utc(), 2, t1, 1).unwrap();
    let e = q.charge("acme", &quotas, &utc(), 1, t1, 1).unwrap_err();
    assert_eq!((e.window, e.retry_after), (Window::Day, Duration::from_secs(60)), "the day ran out first");
    q.charge("acme", &quotas, &utc(), 1, ts("2026-06-01T00:00:00Z"), 1).unwrap();
    q.charge("globex", &quotas, &utc(), 3, t0, 1).unwrap();
}

#[test]
fn a_share_divides_each_limit() {
    let q = QuotaCounters::new(100);
    let quotas = [Quota { window: Window::Hour, limit: 10 }];
    let t = ts("2026-01-01T10:00:00Z");
    assert!(q.charge("k", &quotas, &utc(), 5, t, 2).is_ok());
    assert!(q.charge("k", &quotas, &utc(), 1, t, 2).is_err());
}

const MONTH: [Quota; 1] = [Quota { window: Window::Month, limit: 3 }];
const MINUTE: [Quota; 1] = [Quota { window: Window::Minute, limit: 3 }];

fn charge(q: &QuotaCounters, key: &str, quotas: &[Quota], at: Timestamp) -> bool {
    q.charge(key, quotas, &utc(), 1, at, 1).is_ok()
}

/// Charges `key` until refused; returns how many were admitted.
fn admitted(q: &QuotaCounters, key: &str, at: Timestamp) -> usize {
    (0..10).take_while(|_| charge(q, key, &MONTH, at)).count()
}

/// Monthly quotas keep every entry alive; the map still never outgrows its capacity.
#[test]
fn the_map_never_holds_more_than_its_capacity() {
    let q = QuotaCounters::new(100);
    let t = ts("2026-05-10T12:00:00Z");
    for i in 0..10_000 {
        assert!(charge(&q, &format!("tenant-{i}"), &MONTH, t));
        assert!(q.len() <= 100, "{} keys held after {i}", q.len());
    }
    assert_eq!(q.len(), 100);
}

#[test]
fn keys_whose_windows_ended_are_evicted_before_live_ones() {
    let q = QuotaCounters::new(SAMPLE); // one sample covers the whole ring
    let t0 = ts("2026-05-10T12:00:00Z");
    for i in 0..4 {
        assert!(charge(&q, &format!("minute-{i}"), &MINUTE, t0));
        assert_eq!(admitted(&q, &format!("month-{i}"), t0), 3);
    }
    // Two minutes later the minute keys' windows have ended: new keys replace them.
    let t1 = ts("2026-05-10T12:02:00Z");
    for i in 0..4 {
        assert!(charge(&q, &format!("new-{i}"), &MINUTE, t1));
    }
    for i in 0..4 {
        assert_eq!(admitted(&q, &format!("month-{i}"), t1), 0, "month-{i} kept its count");
    }
}

#[test]
fn the_least_recently_charged_live_key_is_evicted_first() {
    let q = QuotaCounters::new(SAMPLE);
    let t = ts("2026-05-10T12:00:00Z");
    for i in 0..SAMPLE {
        let at = t.checked_add(jiff::SignedDuration::from_secs(i as i64)).unwrap();
        assert_eq!(admitted(&q, &format!("k{i}"), at), 3);
    }
    // k0 is the oldest, but a refused request counts as use: k1 becomes the oldest.
    let later = ts("2026-05-10T12:01:00Z");
    assert!(!charge(&q, "k0", &MONTH, later));
    assert!(charge(&q, "newcomer", &MONTH, later));
    assert_eq!(q.len(), SAMPLE);
    assert_eq!(admitted(&q, "k0", later), 0, "k0 kept its count");
    // k1 was forgotten: its count restarts (the documented over-admission), which in
    // turn evicts the next oldest, k2.
    assert_eq!(admitted(&q, "k1", later), 3);
    for i in 3..SAMPLE {
        assert_eq!(admitted(&q, &format!("k{i}"), later), 0, "k{i} kept its count");
    }
}

/// Property: concurrent charges of one key are exact.
#[test]
fn concurrent_charges_of_one_key_are_exact() {
    let q = QuotaCounters::new(64);
    let t = ts("2026-05-10T12:00:00Z");
    let quota = [Quota { window: Window::Day, limit: 2_500 }];
    let ok = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let admitted = (0..1_000).filter(|_| charge(&q, "shared", &quota, t)).count();
                ok.fetch_add(admitted, Ordering::Relaxed);
            });
        }
    });
    assert_eq!(ok.into_inner(), 2_500);
}

/// Property: concurrent new keys never push the map past its capacity, and every key
/// held owns the ring slot it names.
#[test]
fn concurrent_new_keys_stay_within_capacity() {
    let q = QuotaCounters::new(64);
    let t = ts("2026-05-10T12:00:00Z");
    std::thread::scope(|s| {
        for thread in 0..4 {
            let q = &q;
            s.spawn(move || {
                for i in 0..5_000 {
                    let _ = charge(q, &format!("t{thread}-{}", i % 300), &MONTH, t);
                }
            });
        }
    });
    assert!(q.len() <= 64, "{} keys held", q.len());
    let ring = q.ring.get().unwrap();
    for e in q.map.iter() {
        assert_eq!(lock(&ring[e.slot]).as_deref(), Some(&**e.key()), "slot of {}", e.key());
    }
}
