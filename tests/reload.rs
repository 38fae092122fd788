//! Hot reload against the real binary: file changes and SIGHUP swap in a new
//! configuration without failing a request; a broken file is refused and the running
//! configuration keeps serving; limiter state survives.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::client;
use common::jws::{claims, token};
use common::*;

fn config(ups: &Upstreams, prod_extra: &str) -> String {
    format!(
        r#"
{PREAMBLE}{HMAC_ISSUER}[plans.tight]
rate_per_second = 1
burst = 3
[plans.hourly]
quota_hour = 3
[environments.prod]
hosts = ["prod.test"]
default_pool = "prod-shared"
default_plan = "tight"
tenant_plans = {{ acme = "hourly" }}
{prod_extra}
[pools.prod-shared]
servers = ["{}"]
[pools.prod-globex]
servers = ["{}"]
[[routes]]
name = "api"
path_prefix = "/api"
"#,
        ups.get("prod-shared").addr,
        ups.get("prod-globex").addr
    )
}

fn generation(gw: &Gateway) -> f64 {
    let body = client::get(gw.admin, "admin", "/metrics", &[]).unwrap().body;
    metric_value(&String::from_utf8(body).unwrap(), "isogate_config_generation").unwrap()
}

fn upstream_of(gw: &Gateway, tenant: &str) -> String {
    let t = token("HS256", claims("prod", tenant));
    gw.get_with_token("prod.test", "/api", &t).json()["upstream"].as_str().unwrap_or("").to_owned()
}

#[test]
fn a_changed_file_is_reloaded_and_a_broken_one_refused_while_serving() {
    let ups = Upstreams::start(&["prod-shared", "prod-globex"]);
    let gw = Gateway::start(&config(&ups, ""), &[]);
    assert_eq!(upstream_of(&gw, "globex"), "prod-shared");

    gw.write_config(&config(&ups, "tenants = { globex = \"prod-globex\" }"));
    eventually("the file change is applied", || (generation(&gw) == 2.0).then_some(()));
    assert_eq!(upstream_of(&gw, "globex"), "prod-globex");
    assert_eq!(upstream_of(&gw, "acme"), "prod-shared");

    std::fs::write(&gw.config_path, "[environments.prod\nbroken = ").unwrap();
    eventually("the broken file is refused", || {
        (gw.metric(r#"isogate_config_reloads_total{result="error"}"#) == Some(1.0)).then_some(())
    });
    assert_eq!(generation(&gw), 2.0, "a bad file never replaces a good one");
    assert_eq!(upstream_of(&gw, "globex"), "prod-globex", "the running configuration keeps serving");
    let stderr = gw.stderr();
    assert!(stderr.contains("NOT reloaded") && stderr.contains("isogate.toml:1:"), "{stderr}");
}

#[test]
fn sighup_reloads_without_failing_a_request_under_load_and_keeps_limiter_state() {
    let ups = Upstreams::start(&["prod-shared", "prod-globex"]);
    let gw = Arc::new(Gateway::start(&config(&ups, ""), &[]));
    // Use up acme's hourly quota: the limiter state must survive the reloads.
    let acme = token("HS256", claims("prod", "acme"));
    for _ in 0..3 {
        assert_eq!(gw.get_with_token("prod.test", "/api", &acme).status, 200);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (gw, stop, served, failed) = (Arc::clone(&gw), Arc::clone(&stop), Arc::clone(&served), Arc::clone(&failed));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // A new tenant each time stays within its own burst.
                let t = token("HS256", claims("prod", &format!("load-{i}")));
                let status = client::get(gw.addr, "prod.test", "/api", &[("authorization", &format!("Bearer {t}"))])
                    .map(|r| r.status);
                if status.ok() == Some(200) {
                    served.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
            }
        })
    };
    for g in 2..=6 {
        let before = served.load(Ordering::Relaxed);
        gw.signal("HUP");
        eventually("the reload", || (generation(&gw) == f64::from(g)).then_some(()));
        eventually("traffic around the reload", || (served.load(Ordering::Relaxed) >= before + 5).then_some(()));
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed across 5 reloads");
    assert!(served.load(Ordering::Relaxed) >= 25);
    assert_eq!(
        gw.get_with_token("prod.test", "/api", &acme).json()["error"],
        "quota_exhausted",
        "limiter state survived"
    );
}

#[test]
fn a_tenant_map_change_is_picked_up() {
    let ups = Upstreams::start(&["prod-shared", "prod-globex"]);
    let dir = Scratch::new("map");
    let map = dir.0.join("tenants.csv");
    std::fs::write(&map, "acme,prod-shared\n").unwrap();
    let extra = format!("tenant_map_file = \"{}\"", map.display());
    let gw = Gateway::start(&config(&ups, &extra), &[]);
    assert_eq!(upstream_of(&gw, "initech"), "prod-shared");
    std::fs::write(&map, "acme,prod-shared\ninitech,prod-globex\n").unwrap();
    eventually("the map change is applied", || (upstream_of(&gw, "initech") == "prod-globex").then_some(()));
}

#[test]
fn a_cached_hmac_token_is_refused_once_its_secret_is_rotated() {
    let ups = Upstreams::start(&["prod-shared", "prod-globex"]);
    let gw = Gateway::start(&config(&ups, ""), &[]);
    let t = token("HS256", claims("prod", "initech"));
    for _ in 0..2 {
        assert_eq!(gw.get_with_token("prod.test", "/api", &t).status, 200);
    }
    assert_eq!(gw.metric(r#"isogate_token_cache_requests_total{result="hit"}"#), Some(1.0), "the second use is a hit");

    std::fs::write(gw.config_path.with_file_name("rotated.secret"), "a-rotated-secret-of-forty-bytes-or-so!!!")
        .unwrap();
    gw.write_config(&config(&ups, "").replace("@KEYS@/hmac.secret", "@DIR@/rotated.secret"));
    eventually("the rotated secret is applied", || (generation(&gw) >= 2.0).then_some(()));
    let r = gw.get_with_token("prod.test", "/api", &t);
    assert_eq!(r.status, 401, "a token cached under the old secret must not outlive it");
    assert_eq!(ups.get("prod-shared").count(), 2, "the refused request never reached the upstream");
}

/// The RSA and HMAC fixture issuers (the RSA one with `rsa_audiences`), prod placed by
/// the tenant map at `map`.
fn two_issuers(ups: &Upstreams, map: &std::path::Path, rsa_audiences: &str) -> String {
    format!(
        r#"
{PREAMBLE}{HMAC_ISSUER}
[[issuers]]
name = "rsa"
issuer = "https://rsa.test"
audiences = {rsa_audiences}
algorithms = ["RS256"]
public_key_file = "@KEYS@/rsa.pub.pem"
[environments.prod]
hosts = ["prod.test"]
default_pool = "prod-shared"
tenant_map_file = "{}"
[pools.prod-shared]
servers = ["{}"]
[pools.prod-globex]
servers = ["{}"]
[[routes]]
name = "api"
path_prefix = "/api"
"#,
        map.display(),
        ups.get("prod-shared").addr,
        ups.get("prod-globex").addr
    )
}

#[test]
fn verified_tokens_stay_cached_across_a_reload_unless_their_issuer_changed() {
    let ups = Upstreams::start(&["prod-shared", "prod-globex"]);
    let dir = Scratch::new("cache-reload");
    let map = dir.0.join("tenants.csv");
    std::fs::write(&map, "acme,prod-shared\n").unwrap();
    let gw = Gateway::start(&two_issuers(&ups, &map, r#"["isogate-tests"]"#), &[]);
    let rsa = token("RS256", claims("prod", "globex"));
    let hmac = token("HS256", claims("prod", "globex"));
    let hits = || gw.metric(r#"isogate_token_cache_requests_total{result="hit"}"#).unwrap_or(0.0);
    let misses = || gw.metric(r#"isogate_token_cache_requests_total{result="miss"}"#).unwrap_or(0.0);
    for t in [&rsa, &hmac] {
        assert_eq!(gw.get_with_token("prod.test", "/api", t).status, 200);
    }
    assert_eq!((hits(), misses()), (0.0, 2.0));
    assert_eq!(gw.metric("isogate_token_cache_entries"), Some(2.0));

    // A tenant-map edit: the issuers and token rules are untouched, so the cache stays.
    std::fs::write(&map, "acme,prod-shared\nglobex,prod-globex\n").unwrap();
    eventually("the map change is applied", || (generation(&gw) == 2.0).then_some(()));
    assert_eq!(gw.metric("isogate_token_cache_entries"), Some(2.0), "the reload kept the cached tokens");
    for t in [&rsa, &hmac] {
        let r = gw.get_with_token("prod.test", "/api", t);
        assert_eq!(r.json()["upstream"], "prod-globex", "the new map is in force");
    }
    assert_eq!((hits(), misses()), (2.0, 2.0), "both tokens were served from the carried-over cache");

    // The RSA issuer gains an audience: its cached tokens were checked under other rules.
    gw.write_config(&two_issuers(&ups, &map, r#"["isogate-tests", "isogate-extra"]"#));
    eventually("the issuer change is applied", || (generation(&gw) == 3.0).then_some(()));
    assert_eq!(gw.metric("isogate_token_cache_entries"), Some(1.0), "only the HMAC token was carried over");
    assert_eq!(gw.get_with_token("prod.test", "/api", &hmac).status, 200);
    assert_eq!((hits(), misses()), (3.0, 2.0), "the HMAC token is still a hit");
    assert_eq!(gw.get_with_token("prod.test", "/api", &rsa).status, 200);
    assert_eq!((hits(), misses()), (3.0, 3.0), "the RSA token is verified again");
}
