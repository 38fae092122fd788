//! Random traffic against an independent model of the configuration: nothing crosses a
//! tenant or environment boundary.
//!
//! - `random_traffic_never_crosses_a_boundary` drives the typed pipeline the proxy
//!   runs (strip, `admit`, `prepare_upstream`) over at least a million seeded requests,
//!   without sockets.
//! - `random_traffic_over_sockets_reaches_only_its_pool` sends a sample of the same
//!   traffic to the real binary with recording upstreams.
//!
//! Every request is checked against `model` (written from the README, not from
//! isogate's code): admitted or refused, and why; the environment, pool, trusted
//! headers, forwarded headers and upstream target. The safety properties in
//! `upstream::safety` are checked against the gateway's own decision as well.
//!
//! `ISOGATE_PROPERTY_SEED` replays a run (the seed is printed), `ISOGATE_PROPERTY_REQUESTS`
//! sets the count, and `ISOGATE_PROPERTY_INDEX` replays one request of a run.

#![allow(clippy::unwrap_used, unreachable_pub)] // test helpers outside #[test] fns

mod common;
#[path = "isolation_property/config.rs"]
mod config;
#[path = "isolation_property/model.rs"]
mod model;
#[path = "isolation_property/paths.rs"]
mod paths;
#[path = "isolation_property/rng.rs"]
mod rng;
#[path = "isolation_property/run.rs"]
mod run;
#[path = "isolation_property/tokens.rs"]
mod tokens;
#[path = "isolation_property/traffic.rs"]
mod traffic;
#[path = "isolation_property/upstream.rs"]
mod upstream;
#[path = "isolation_property/vocabulary.rs"]
mod vocabulary;
#[path = "isolation_property/wire.rs"]
mod wire;

use std::time::Instant;

use run::{Settings, Tally};

#[test]
fn random_traffic_never_crosses_a_boundary() {
    let settings = Settings::from_env("ISOGATE_PROPERTY_REQUESTS", 1_000_000);
    println!("seed {} ({} requests)", settings.seed, settings.requests);
    let start = Instant::now();
    let tally = run::in_process(&settings);
    println!("{tally}");
    println!("checked {} requests in {:.1?} (seed {})", tally.total(), start.elapsed(), settings.seed);
    if settings.only.is_none() && settings.requests >= 100_000 {
        tally.assert_coverage();
    }
}

#[test]
fn random_traffic_over_sockets_reaches_only_its_pool() {
    let settings = Settings::from_env("ISOGATE_PROPERTY_WIRE_REQUESTS", 10_000);
    println!("seed {} ({} requests over sockets)", settings.seed, settings.requests);
    let start = Instant::now();
    let tally = wire::over_sockets(&settings);
    println!("{tally}");
    println!("sent {} requests over sockets in {:.1?} (seed {})", tally.total(), start.elapsed(), settings.seed);
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "admitted by pool: {:?}", self.pools)?;
        writeln!(f, "admitted by route: {:?}", self.routes)?;
        writeln!(f, "refused by reason: {:?}", self.reasons)?;
        write!(f, "admin paths admitted: {}, not representable: {}", self.admin_admitted, self.unsendable)
    }
}
