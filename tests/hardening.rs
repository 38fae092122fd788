//! The weak paths an outside attack run found, each over real sockets: segment
//! parameters and double encoding past a prefix check, tenant-less tokens, oversized or
//! slow input, spoofed forwarded headers, and long responses holding audit slots.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::client;
use common::jws::{claims, token};
use common::raw_upstream::{Behaviour, RawUpstream};
use common::*;
use serde_json::json;

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn user_token() -> String {
    token("RS256", claims("prod", "acme"))
}

const ADMIN_PREFIX: &str = "\n[access]\nadmin_path_prefix = \"/api/admin\"\n";

#[test]
fn segment_parameters_and_double_encoding_cannot_reach_an_admin_prefix() {
    let ups = standard_upstreams();
    let gw = Gateway::start(&standard_config(&ups, ADMIN_PREFIX), &[("@DEV@", free_addr())]);
    let t = user_token();
    for path in [
        "/api/admin;x=1/x",
        "/api/admin%3bx=1/x",
        "/api/zz/..;/admin/x",
        "/api/zz/.;/admin/x",
        "/api/x%252f..%252fadmin/x",
        "/api/%252e%252e/api/admin/x",
        "/api/%25%32%65%25%32%65/api/admin/x",
    ] {
        let r = gw.get_with_token("prod.test", path, &t);
        assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("ambiguous_path")), "{path}");
        assert_eq!(gw.audit_for(&request_id(&r))["reason"], "ambiguous_path", "{path}");
    }
    assert_eq!(ups.total(), 0, "an ambiguous path reached an upstream");
    let admin = gw.get_with_token("prod.test", "/api/admin/x", &t);
    assert_eq!(admin.json()["error"], "admin_role_required");
}

#[test]
fn a_route_that_allows_parameters_matches_without_them() {
    let ups = standard_upstreams();
    let extra = format!("path_parameters = \"allow\"\n{ADMIN_PREFIX}");
    let gw = Gateway::start(&standard_config(&ups, &extra), &[("@DEV@", free_addr())]);
    let t = user_token();
    let r = gw.get_with_token("prod.test", "/api/admin;jsessionid=1/x", &t);
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("admin_role_required")));
    let r = gw.get_with_token("prod.test", "/api/zz/..;/admin/x", &t);
    assert_eq!(r.json()["error"], "ambiguous_path", "dot segments with parameters stay refused");
    let ok = gw.get_with_token("prod.test", "/api/orders;v=2/x", &t);
    assert_eq!(ok.status, 200);
    assert_eq!(ups.get("prod-shared").received()[0].path, "/api/orders;v=2/x", "parameters pass upstream");
    assert_eq!(ups.total(), 1);
}

#[test]
fn a_token_without_a_tenant_is_refused_where_the_tenant_is_required() {
    let ups = standard_upstreams();
    let config = standard_config(&ups, "").replace(
        "[environments.stage]\nhosts = [\"stage.test\"]",
        "[environments.stage]\nhosts = [\"stage.test\"]\ntenant_claim = \"optional\"",
    );
    let gw = Gateway::start(&config, &[("@DEV@", free_addr())]);
    let tenantless = |env: &str| {
        let mut c = claims(env, "x");
        c.as_object_mut().unwrap().remove("tenant");
        token("RS256", c)
    };
    let r = gw.get_with_token("prod.test", "/api", &tenantless("prod"));
    assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("tenant_missing")));
    assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
    let line = gw.audit_for(&request_id(&r));
    assert_eq!((line["reason"].as_str(), line["tenant"].clone()), (Some("tenant_missing"), serde_json::Value::Null));
    assert_eq!(line["user"], "user-1");
    assert_eq!(ups.total(), 0);
    let r = gw.get_with_token("stage.test", "/api", &tenantless("stage"));
    assert_eq!(r.status, 200, "optional where the environment says so");
    assert_eq!(gw.metric(r#"isogate_rejections_total{reason="tenant_missing"}"#), Some(1.0));
}

/// Name, extra headers, path, expected status and reason.
type Case<'a> = (&'a str, Vec<(String, String)>, String, u16, &'a str);

#[test]
fn oversized_heads_are_refused_audited_and_counted() {
    let ups = standard_upstreams();
    let gw = Gateway::start(&standard_config(&ups, ""), &[("@DEV@", free_addr())]);
    let auth = bearer(&user_token());
    let big = "x".repeat(512 * 1024);
    let twelve_k = "y".repeat(12 * 1024);
    let many: Vec<(String, String)> = (0..101).map(|i| (format!("x-h{i}"), "1".to_owned())).collect();
    let mut cases: Vec<Case> = vec![
        ("one huge header", vec![("x-big".into(), big)], "/api".into(), 431, "headers_too_large"),
        ("too many headers", many, "/api".into(), 431, "headers_too_large"),
        (
            "head over the total",
            (0..3).map(|i| (format!("x-part{i}"), twelve_k.clone())).collect(),
            "/api".into(),
            431,
            "headers_too_large",
        ),
    ];
    cases.push(("long target", vec![], format!("/api?q={}", "z".repeat(9000)), 414, "uri_too_long"));
    for (name, headers, path, status, reason) in cases {
        let mut h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        h.push(("authorization", auth.as_str()));
        let r = gw.get("prod.test", &path, &h);
        assert_eq!((r.status, r.json()["error"].as_str()), (status, Some(reason)), "{name}");
        let line = gw.audit_for(&request_id(&r));
        assert_eq!(
            (line["status"].as_u64(), line["reason"].as_str()),
            (Some(u64::from(status)), Some(reason)),
            "{name}"
        );
    }
    assert_eq!(ups.total(), 0, "oversized input reached an upstream");
    assert_eq!(gw.metric(r#"isogate_rejections_total{reason="headers_too_large"}"#), Some(3.0));
    assert_eq!(gw.metric(r#"isogate_rejections_total{reason="uri_too_long"}"#), Some(1.0));
}

fn raw_config(upstream: SocketAddr, audit: &str, route: &str, tail: &str) -> String {
    let preamble = PREAMBLE.replace("output = \"@AUDIT@\"", &format!("output = \"@AUDIT@\"\n{audit}"));
    format!(
        "{preamble}{HMAC_ISSUER}\n[environments.prod]\nhosts = [\"prod.test\"]\ndefault_pool = \"raw\"\n\
         [pools.raw]\nservers = [\"{upstream}\"]\n[[routes]]\nname = \"api\"\npath_prefix = \"/api\"\n{route}\n{tail}"
    )
}

fn hmac_auth() -> String {
    bearer(&token("HS256", claims("prod", "acme")))
}

#[test]
fn a_body_over_the_route_limit_never_completes_upstream() {
    let up = RawUpstream::start(Behaviour::Record);
    let gw = Gateway::start(&raw_config(up.addr, "", "max_body_bytes = 1024", ""), &[]);
    let auth = hmac_auth();
    let declared = format!(
        "POST /api HTTP/1.1\r\nhost: prod.test\r\nauthorization: {auth}\r\ncontent-length: 2048\r\n\r\n{}",
        "a".repeat(2048)
    );
    let r = gw.send_raw(declared.as_bytes()).unwrap();
    assert_eq!((r.status, r.json()["error"].as_str()), (413, Some("body_too_large")));
    assert_eq!(up.heads(), 0, "a declared oversized body is refused before anything is sent");

    let mut chunked =
        format!("POST /api HTTP/1.1\r\nhost: prod.test\r\nauthorization: {auth}\r\ntransfer-encoding: chunked\r\n\r\n");
    for _ in 0..8 {
        chunked.push_str(&format!("200\r\n{}\r\n", "b".repeat(512)));
    }
    chunked.push_str("0\r\n\r\n");
    let r = gw.send_raw(chunked.as_bytes()).unwrap();
    assert_eq!((r.status, r.json()["error"].as_str()), (413, Some("body_too_large")));
    let line = gw.audit_for(&request_id(&r));
    assert_eq!((line["status"].as_u64(), line["reason"].as_str()), (Some(413), Some("body_too_large")));
    let sent = eventually("the upstream connection to close", || {
        let all = up.received();
        (!all.is_empty()).then(|| all.concat())
    });
    assert!(!sent.windows(5).any(|w| w == b"0\r\n\r\n"), "the upstream received a complete chunked body");
    assert!(sent.iter().filter(|b| **b == b'b').count() <= 2048, "the upstream got more than the limit allows");
}

#[test]
fn a_client_that_stalls_its_body_gets_408() {
    let up = RawUpstream::start(Behaviour::Record);
    let gw = Gateway::start(&raw_config(up.addr, "", "", "[limits]\nbody_read_timeout_seconds = 1"), &[]);
    let auth = hmac_auth();
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST /api HTTP/1.1\r\nhost: prod.test\r\nauthorization: {auth}\r\ncontent-length: 10\r\n\r\nabc")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

/// Opens a request whose response streams, and returns once the first chunk arrived.
fn open_stream(addr: SocketAddr, auth: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /api/events HTTP/1.1\r\nhost: prod.test\r\nauthorization: {auth}\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(5).any(|w| w == b"first") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));
    s
}

#[test]
fn long_responses_do_not_hold_audit_slots() {
    let up = RawUpstream::start(Behaviour::Stream);
    let audit = "queue_capacity = 2\non_queue_full = \"refuse\"\nstream_end = true";
    let gw = Gateway::start(&raw_config(up.addr, audit, "", ""), &[]);
    let auth = hmac_auth();
    let streams: Vec<TcpStream> = (0..4).map(|_| open_stream(gw.addr, &auth)).collect();
    let lines = eventually("an audit line per open stream", || {
        let lines = gw.audit_lines();
        (lines.len() >= 4).then_some(lines)
    });
    assert!(lines.iter().all(|l| l["status"] == 200 && l["reason"] == "ok" && l["event"].is_null()), "{lines:?}");
    up.release();
    for mut s in streams {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    // The four streams end at once, into a queue of two: each end line is written or,
    // past the queue, counted as lost; none goes missing silently.
    let ends = |gw: &Gateway| -> Vec<serde_json::Value> {
        gw.audit_lines().into_iter().filter(|l| l["event"] == "end").collect()
    };
    eventually("an end line or a counted loss per stream", || {
        let lost = gw.metric("isogate_audit_lines_lost_total").unwrap_or(0.0) as usize;
        (ends(&gw).len() + lost == 4).then_some(())
    });
    assert!(ends(&gw).iter().all(|l| l["bytes_out"] == json!(9) && l["reason"] == "ok"), "{:?}", ends(&gw));
    // With the queue free again, a stream's end is written.
    let before = ends(&gw).len();
    let mut last = open_stream(gw.addr, &auth);
    let _ = last.read_to_end(&mut Vec::new());
    let written = eventually("the end line of a stream on a free queue", || {
        let now = ends(&gw);
        (now.len() > before).then_some(now)
    });
    assert_eq!(written.last().unwrap()["bytes_out"], json!(9), "{written:?}");
}

const SPOOFED: [(&str, &str); 7] = [
    ("x-forwarded-for", "10.0.0.1"),
    ("x_forwarded_for", "10.9.9.9"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "admin.internal"),
    ("x-real-ip", "10.0.0.1"),
    ("forwarded", "for=10.0.0.1;proto=https"),
    ("true-client-ip", "10.0.0.1"),
];

#[test]
fn forwarded_headers_come_from_the_connection() {
    let ups = standard_upstreams();
    let gw = Gateway::start(&standard_config(&ups, ""), &[("@DEV@", free_addr())]);
    let auth = bearer(&user_token());
    let mut headers = SPOOFED.to_vec();
    headers.push(("authorization", auth.as_str()));
    assert_eq!(gw.get("prod.test:8080", "/api", &headers).status, 200);
    let got = &ups.get("prod-shared").received()[0];
    assert_eq!(got.header_values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(got.header_values("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(got.header_values("x-forwarded-proto"), ["http"]);
    assert_eq!(got.header_values("x-forwarded-host"), ["prod.test:8080"]);
    assert_eq!(got.header_values("forwarded"), ["for=127.0.0.1;proto=http;host=\"prod.test:8080\""]);
    for name in ["x_forwarded_for", "true-client-ip"] {
        assert!(got.header_values(name).is_empty(), "{name} reached the upstream");
    }
}

#[test]
fn a_trusted_proxy_chain_is_extended() {
    let ups = standard_upstreams();
    let trusted = "\n[forwarded]\ntrusted_proxies = [\"127.0.0.0/8\"]\n";
    let gw = Gateway::start(&standard_config(&ups, trusted), &[("@DEV@", free_addr())]);
    let auth = bearer(&user_token());
    let mut headers = SPOOFED.to_vec();
    headers.retain(|(k, _)| *k != "x-forwarded-for");
    headers.push(("x-forwarded-for", "198.51.100.7, 127.0.0.9"));
    headers.push(("authorization", auth.as_str()));
    assert_eq!(gw.get("prod.test", "/api", &headers).status, 200);
    let got = &ups.get("prod-shared").received()[0];
    assert_eq!(got.header_values("x-forwarded-for"), ["198.51.100.7, 127.0.0.9, 127.0.0.1"]);
    assert_eq!(got.header_values("x-real-ip"), ["198.51.100.7"]);
    assert_eq!(got.header_values("x-forwarded-proto"), ["https"]);
    assert_eq!(got.header_values("x-forwarded-host"), ["admin.internal"]);
    assert!(got.header_values("x_forwarded_for").is_empty());
}

/// Reads until the peer closes (or 10 s pass) and returns what came.
fn read_all(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_trickled_head_gets_408_and_an_endless_one_431() {
    let ups = standard_upstreams();
    let gw = Gateway::start(
        &standard_config(&ups, "\n[limits]\nheader_read_timeout_seconds = 1\n"),
        &[("@DEV@", free_addr())],
    );
    let started = std::time::Instant::now();
    let mut slow = TcpStream::connect(gw.addr).unwrap();
    slow.write_all(b"GET /api HTTP/1.1\r\nhost: prod.test\r\n").unwrap();
    let trickle = std::thread::spawn({
        let mut s = slow.try_clone().unwrap();
        move || {
            for _ in 0..30 {
                std::thread::sleep(Duration::from_millis(200));
                if s.write_all(b"x").is_err() {
                    return;
                }
            }
        }
    });
    let answer = read_all(&mut slow);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4), "the head deadline is 1 s, took {:?}", started.elapsed());
    trickle.join().unwrap();

    let mut endless = TcpStream::connect(gw.addr).unwrap();
    let mut head = b"GET /api HTTP/1.1\r\nhost: prod.test\r\n".to_vec();
    while head.len() < 200 * 1024 {
        head.extend_from_slice(format!("x-filler-{}: {}\r\n", head.len(), "f".repeat(100)).as_bytes());
    }
    let _ = endless.write_all(&head);
    let answer = read_all(&mut endless);
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(200)]);

    let lines = eventually("both refusals audited", || {
        let lines: Vec<_> = gw.audit_lines().into_iter().filter(|l| l["decision"] == "deny").collect();
        (lines.len() >= 2).then_some(lines)
    });
    let reasons: Vec<_> =
        lines.iter().map(|l| (l["status"].as_u64(), l["reason"].as_str(), l["path"].as_str())).collect();
    assert_eq!(
        reasons,
        [(Some(408), Some("request_timeout"), Some("/api")), (Some(431), Some("headers_too_large"), Some("/api"))]
    );
    assert_eq!(ups.total(), 0);
    assert_eq!(gw.metric(r#"isogate_rejections_total{reason="request_timeout"}"#), Some(1.0));
}

#[test]
fn heads_the_http_parser_refuses_are_audited_and_counted() {
    let ups = standard_upstreams();
    let gw = Gateway::start(&standard_config(&ups, ""), &[("@DEV@", free_addr())]);
    let auth = bearer(&user_token());
    let cases: [(&str, u16, &str); 3] = [
        ("GET /api HTTP/1.1\r\nhost: prod.test\r\nthis is no header\r\n", 400, "malformed_request"),
        ("GET /api HTTP/1.1\r\nhost: prod.test\r\nx-reason: a\x7fb\r\n", 400, "malformed_request"),
        ("CONNECT prod.test:443 HTTP/1.1\r\nhost: prod.test:443\r\n", 405, "method_not_allowed"),
    ];
    for (head, status, _) in cases {
        let raw = format!("{head}authorization: {auth}\r\n\r\n");
        let r = gw.send_raw(raw.as_bytes()).unwrap();
        assert_eq!(r.status, status, "{}", head.escape_debug());
    }
    let lines = eventually("an audit line per refusal", || {
        let lines = gw.audit_lines();
        (lines.len() >= 3).then_some(lines)
    });
    for (line, (head, status, reason)) in lines.iter().zip(cases) {
        assert_eq!(
            (line["status"].as_u64(), line["reason"].as_str()),
            (Some(u64::from(status)), Some(reason)),
            "{}",
            head.escape_debug()
        );
        assert_eq!(line["decision"], "deny");
        assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    assert_eq!(lines[2]["method"], "CONNECT");
    assert_eq!(ups.total(), 0);
    assert_eq!(gw.metric(r#"isogate_rejections_total{reason="malformed_request"}"#), Some(2.0));
    assert_eq!(gw.metric(r#"isogate_rejections_total{reason="method_not_allowed"}"#), Some(1.0));
}

#[test]
fn targets_are_read_as_an_origin_server_reads_them() {
    let ups = standard_upstreams();
    let dev = free_addr();
    let gw = Gateway::start(&standard_config(&ups, ADMIN_PREFIX), &[("@DEV@", dev)]);
    let auth = bearer(&user_token());
    let dev_auth = bearer(&token("HS256", claims("dev", "acme")));
    // A target in no request-target form was routed and authorised as `/`.
    for target in ["api/admin/x", "*/api/admin", "?next=/api/admin"] {
        let raw = format!("GET {target} HTTP/1.1\r\nhost: prod.test\r\nauthorization: {auth}\r\n\r\n");
        let r = gw.send_raw(raw.as_bytes()).unwrap();
        assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("malformed_request")), "{target}");
    }
    // An absolute-form target names the host; a Host beside it must agree.
    let raw = format!("GET http://prod.test/api/x HTTP/1.1\r\nauthorization: {dev_auth}\r\n\r\n");
    let r = client::send(dev, raw.as_bytes()).unwrap();
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("wrong_environment")),
        "bound by its authority, not the listener"
    );
    let raw = format!("GET http://prod.test/api/x HTTP/1.1\r\nhost: stage.test\r\nauthorization: {auth}\r\n\r\n");
    let r = gw.send_raw(raw.as_bytes()).unwrap();
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    // HTTP/1.1 needs a host (RFC 9112 section 3.2).
    let raw = format!("GET /api/x HTTP/1.1\r\nauthorization: {dev_auth}\r\n\r\n");
    assert_eq!(client::send(dev, raw.as_bytes()).unwrap().json()["error"], "malformed_request");
    assert_eq!(ups.total(), 0);
    let raw = format!("GET http://prod.test/api/x HTTP/1.1\r\nauthorization: {auth}\r\n\r\n");
    let ok = gw.send_raw(raw.as_bytes()).unwrap();
    assert_eq!((ok.status, ok.json()["upstream"].as_str()), (200, Some("prod-shared")));
    assert_eq!(ups.get("prod-shared").received()[0].path, "/api/x", "the upstream gets origin form");
}
