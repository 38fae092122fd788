//! Audit lines, `/metrics`, health endpoints, orderly shutdown and start-up failures,
//! all against the real binary.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::process::Command;

use common::client;
use common::jws::{claims, token};
use common::*;

const AUDIT_FIELDS: &[&str] = &[
    "ts",
    "request_id",
    "environment",
    "tenant",
    "user",
    "roles",
    "test_account",
    "issuer",
    "kid",
    "method",
    "path",
    "route",
    "pool",
    "upstream",
    "status",
    "decision",
    "reason",
    "report_only",
    "access_reason",
    "system_mode",
    "db_schema",
    "plan",
    "limit_mode",
    "latency_us",
    "client",
    "user_agent",
    "trace_id",
];

#[test]
fn an_allowed_request_writes_one_complete_audit_line() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    let auth = format!("Bearer {}", token("EdDSA", claims("prod", "acme")));
    let r = gw.get(
        "prod.test",
        "/api/orders?secret=1",
        &[("authorization", auth.as_str()), ("user-agent", "audit-test/1.0")],
    );
    assert_eq!(r.status, 200);
    let line = gw.audit_for(&request_id(&r));
    let mut keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = AUDIT_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected);
    let ts = line["ts"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == "2026-01-01T00:00:00.000000Z".len(), "RFC 3339 with µs: {ts}");
    assert_eq!(line["environment"], "prod");
    assert_eq!(line["tenant"], "acme");
    assert_eq!(line["user"], "user-1");
    assert_eq!(line["roles"], serde_json::json!(["user"]));
    assert_eq!(line["issuer"], "ed");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/api/orders", "the query string stays out of the audit trail");
    assert_eq!(line["route"], "api");
    assert_eq!(line["pool"], "prod-shared");
    assert_eq!(line["status"], 200);
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["reason"], "ok");
    assert_eq!(line["user_agent"], "audit-test/1.0");
    let trace = line["trace_id"].as_str().unwrap();
    assert!(trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()), "a started trace: {trace}");
    assert!(line["latency_us"].as_u64().unwrap() > 0);
    assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
}

#[test]
fn metrics_count_requests_by_environment_route_decision_and_status() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    let t = token("RS256", claims("prod", "acme"));
    for _ in 0..3 {
        assert_eq!(gw.get_with_token("prod.test", "/api", &t).status, 200);
    }
    let stage = token("RS256", claims("stage", "acme"));
    let denied = gw.get_with_token("prod.test", "/api", &stage);
    gw.audit_for(&request_id(&denied));
    let text = gw.metrics();
    let v = |p: &str| metric_value(&text, p);
    assert_eq!(
        v(
            r#"isogate_requests_total{account="regular",decision="allow",environment="prod",route="api",status_class="2xx"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        v(
            r#"isogate_requests_total{account="regular",decision="deny",environment="prod",route="api",status_class="4xx"}"#
        ),
        Some(1.0)
    );
    assert_eq!(v(r#"isogate_request_duration_seconds_count{environment="prod"}"#), Some(4.0));
    assert_eq!(v(r#"isogate_upstream_duration_seconds_count{pool="prod-shared"}"#), Some(3.0));
    assert_eq!(v("isogate_config_generation"), Some(1.0));
    assert_eq!(v(&format!(r#"isogate_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"))), Some(1.0));
    assert_eq!(v("isogate_audit_lines_written_total"), Some(4.0));
    assert_eq!(v("isogate_audit_lines_lost_total"), Some(0.0));
    assert!(!text.contains("tenant="), "no tenant label: cardinality stays bounded");
}

#[test]
fn admin_endpoints_answer_on_their_own_listener() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    let get = |p: &str| client::get(gw.admin, "admin", p, &[]).unwrap();
    assert_eq!(get("/healthz").status, 200);
    assert_eq!(get("/readyz").status, 200);
    assert_eq!(get("/nope").status, 404);
    let m = get("/metrics");
    assert!(m.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    // The proxy listener does not serve admin paths.
    assert_eq!(gw.get("prod.test", "/metrics", &[]).status, 404);
}

#[test]
fn sigterm_drains_and_flushes_every_audit_line() {
    let ups = standard_upstreams();
    let (mut gw, _) = standard_gateway(&ups);
    let t = token("HS256", claims("prod", "acme"));
    for _ in 0..50 {
        assert_eq!(gw.get_with_token("prod.test", "/api", &t).status, 200);
    }
    let status = gw.terminate();
    assert!(status.success(), "exit status {status}: {}", gw.stderr());
    assert_eq!(gw.audit_lines().len(), 50);
}

#[test]
fn start_up_failures_are_clear_and_exit_non_zero() {
    let ups = standard_upstreams();
    let scratch = Scratch::new("startup");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cases = [
        ("/nonexistent-dir/audit.log".to_owned(), free_addr().to_string(), "cannot open the audit output"),
        (scratch.0.join("audit.log").display().to_string(), busy.local_addr().unwrap().to_string(), "cannot listen on"),
    ];
    for (audit, listen, message) in cases {
        let config = standard_config(&ups, "")
            .replace("@AUDIT@", &audit)
            .replace("@KEYS@", jws::keys_dir().to_str().unwrap())
            .replace("@LISTEN@", &listen)
            .replace("@DEV@", &free_addr().to_string())
            .replace("@ADMIN@", &free_addr().to_string());
        let path = scratch.0.join("isogate.toml");
        std::fs::write(&path, config).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_isogate")).args(["run", "-c"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{message}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{message}: {stderr}");
    }
}

#[test]
fn the_tenant_label_covers_only_the_busiest_tenants() {
    let ups = standard_upstreams();
    let dev = free_addr();
    let gw = Gateway::start(&standard_config(&ups, "[metrics]\ntenant_label_top = 2"), &[("@DEV@", dev)]);
    let send = |tenant: &str, n: usize| {
        for _ in 0..n {
            assert_eq!(gw.get_with_token("prod.test", "/api", &token("HS256", claims("prod", tenant))).status, 200);
        }
    };
    send("big", 6);
    send("medium", 4);
    for t in ["c", "d", "e", "f"] {
        send(t, 1);
    }
    let text = gw.metrics();
    assert_eq!(metric_value(&text, r#"isogate_tenant_requests_total{tenant="big"}"#), Some(6.0), "{text}");
    assert_eq!(metric_value(&text, r#"isogate_tenant_requests_total{tenant="medium"}"#), Some(4.0));
    assert_eq!(metric_value(&text, r#"isogate_tenant_requests_total{tenant="other"}"#), Some(4.0));
    assert_eq!(text.matches("isogate_tenant_requests_total{").count(), 3, "top 2 plus other: {text}");
}
