//! The local rate limiter against the naive alternatives, at 1, 10^3 and 10^6 tenants:
//! the lock-free fixed-memory GCRA table, a `Mutex<HashMap>` and a `DashMap`, each doing
//! the same GCRA update per request.
//!
//! Run: `cargo bench --bench ratelimit`. Results are recorded in docs/BENCHMARKS.md.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dashmap::DashMap;
use isogate::ratelimit::gcra::{Gcra, Rate};

/// The same GCRA step the table does, on a plain `u64` TAT.
fn gcra_step(tat: &mut u64, now: u64, interval: u64, tolerance: u64) -> bool {
    let new = (*tat).max(now) + interval;
    if new - interval - tolerance > now {
        return false;
    }
    *tat = new;
    true
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("prod:tenant-{i}")).collect()
}

fn limiters(c: &mut Criterion) {
    let rate = Rate::new(1_000, 100).expect("rate");
    let mut g = c.benchmark_group("limiter");
    for tenants in [1usize, 1_000, 1_000_000] {
        let keys = keys(tenants);
        let table = Gcra::new(1 << 20);
        let mutex: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
        let dash: DashMap<String, u64> = DashMap::new();
        let mut i = 0usize;
        let mut now = 0u64;
        g.bench_function(format!("gcra_table/{tenants}"), |b| {
            b.iter(|| {
                i = (i + 7919) % tenants;
                now += 1;
                table.check(black_box(keys[i].as_str()), rate, 1, now)
            })
        });
        g.bench_function(format!("mutex_hashmap/{tenants}"), |b| {
            b.iter(|| {
                i = (i + 7919) % tenants;
                now += 1;
                let mut map = mutex.lock().expect("lock");
                match map.get_mut(keys[i].as_str()) {
                    Some(tat) => gcra_step(tat, now, 10, 990),
                    None => map.insert(keys[i].clone(), now + 10).is_none(),
                }
            })
        });
        g.bench_function(format!("dashmap/{tenants}"), |b| {
            b.iter(|| {
                i = (i + 7919) % tenants;
                now += 1;
                match dash.get_mut(keys[i].as_str()) {
                    Some(mut tat) => gcra_step(&mut tat, now, 10, 990),
                    None => dash.insert(keys[i].clone(), now + 10).is_none(),
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = limiters
}
criterion_main!(benches);
