//! Pools with several servers over real sockets: round robin, tenant hashing, passive
//! ejection with retry on another server, active health checks with recovery, and 503
//! when nothing is usable.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::jws::{claims, token};
use common::*;

fn config(servers: &[String], pool_extra: &str) -> String {
    let servers = servers.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
{PREAMBLE}{HMAC_ISSUER}[environments.prod]
hosts = ["prod.test"]
default_pool = "app"
[pools.app]
servers = [{servers}]
connect_timeout_ms = 300
{pool_extra}
[[routes]]
name = "api"
path_prefix = "/api"
"#
    )
}

fn call(gw: &Gateway, tenant: &str) -> (u16, String) {
    let r = gw.get_with_token("prod.test", "/api", &token("HS256", claims("prod", tenant)));
    let who = r.json()["upstream"].as_str().or(r.json()["error"].as_str()).unwrap_or("").to_owned();
    (r.status, who)
}

#[test]
fn round_robin_spreads_and_tenant_hash_sticks() {
    let ups = Upstreams::start(&["a", "b"]);
    let servers = vec![ups.get("a").addr.to_string(), ups.get("b").addr.to_string()];
    let rr = Gateway::start(&config(&servers, ""), &[]);
    for _ in 0..4 {
        assert_eq!(call(&rr, "acme").0, 200);
    }
    assert_eq!((ups.get("a").count(), ups.get("b").count()), (2, 2));

    let hashed = Gateway::start(&config(&servers, "balance = \"tenant_hash\""), &[]);
    let first = call(&hashed, "acme").1;
    for _ in 0..5 {
        assert_eq!(call(&hashed, "acme").1, first, "a tenant sticks to its server");
    }
    let used: std::collections::HashSet<String> = (0..20).map(|i| call(&hashed, &format!("t{i}")).1).collect();
    assert_eq!(used.len(), 2, "tenants spread over the pool");
}

#[test]
fn a_dead_server_is_retried_around_then_ejected() {
    let ups = Upstreams::start(&["live"]);
    let dead = free_addr();
    let servers = vec![dead.to_string(), ups.get("live").addr.to_string()];
    let gw = Gateway::start(&config(&servers, "eject_after_failures = 1\neject_seconds = 60"), &[]);
    for _ in 0..6 {
        assert_eq!(call(&gw, "acme"), (200, "live".to_owned()), "the failed connection is retried on the live server");
    }
    assert_eq!(gw.metric(r#"isogate_upstream_ejections_total{pool="app"}"#), Some(1.0));
    assert_eq!(gw.metric(&format!(r#"isogate_upstream_healthy{{pool="app",server="{dead}"}}"#)), Some(0.0));
    assert_eq!(
        gw.metric(&format!(r#"isogate_upstream_healthy{{pool="app",server="{}"}}"#, ups.get("live").addr)),
        Some(1.0)
    );
}

#[test]
fn health_checks_take_a_server_out_and_back_in() {
    let mut ups = Upstreams::start(&["live"]);
    let late = free_addr();
    let servers = vec![ups.get("live").addr.to_string(), late.to_string()];
    let extra = "health_check_path = \"/healthz\"\nhealth_check_interval_ms = 100\nhealthy_after = 1\nunhealthy_after = 1\neject_after_failures = 0";
    let gw = Gateway::start(&config(&servers, extra), &[]);
    let healthy = |addr: &str| gw.metric(&format!(r#"isogate_upstream_healthy{{pool="app",server="{addr}"}}"#));
    eventually("the dead server is marked unhealthy", || (healthy(&late.to_string()) == Some(0.0)).then_some(()));
    for _ in 0..4 {
        assert_eq!(call(&gw, "acme"), (200, "live".to_owned()));
    }
    assert!(ups.get("live").received().iter().any(|r| r.path == "/healthz"), "the check really asks the server");

    ups.add_on("late", late);
    eventually("the recovered server takes traffic again", || (call(&gw, "acme").1 == "late").then_some(()));
}

#[test]
fn no_usable_server_is_a_503_with_reason() {
    let servers = vec![free_addr().to_string()];
    let extra = "health_check_path = \"/healthz\"\nhealth_check_interval_ms = 100\nunhealthy_after = 1";
    let gw = Gateway::start(&config(&servers, extra), &[]);
    let r = eventually("the only server is unhealthy", || {
        let (status, reason) = call(&gw, "acme");
        (status == 503).then_some(reason)
    });
    assert_eq!(r, "upstream_unavailable");
}
