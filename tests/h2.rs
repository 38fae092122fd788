//! HTTP/2 from clients over real sockets with curl, a client isogate did not write:
//! prior knowledge (h2c) on a plain listener that accepts it, ALPN h2 on a TLS listener,
//! the same stripping and injection as HTTP/1.1, refusals that reach no upstream,
//! server-sent events relayed as they arrive, and the W3C trace context.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::jws::{claims, token};
use common::raw_upstream::{Behaviour, RawUpstream};
use common::*;
use serde_json::Value;

fn tls_dir() -> String {
    format!("{}/tests/fixtures/tls", env!("CARGO_MANIFEST_DIR"))
}

fn config(app: SocketAddr, events: SocketAddr) -> String {
    let d = tls_dir();
    format!(
        r#"
{PREAMBLE}[[listeners]]
address = "@H2C@"
h2c = true
[[listeners]]
address = "@TLS@"
tls = true
http2 = true
[[certificates]]
cert_file = "{d}/a.pem"
key_file = "{d}/a.key"
server_names = ["a.test"]
[[certificates]]
cert_file = "{d}/b.pem"
key_file = "{d}/b.key"
server_names = ["b.test"]
{HMAC_ISSUER}[headers]
strip = ["x-tenant-id"]
[environments.prod]
hosts = ["a.test"]
default_pool = "app"
[environments.stream]
hosts = ["b.test"]
default_pool = "events"
[pools.app]
servers = ["{app}"]
[pools.events]
servers = ["{events}"]
[[routes]]
name = "api"
path_prefix = "/"
"#
    )
}

struct Setup {
    gw: Gateway,
    ups: Upstreams,
    events: RawUpstream,
    h2c: SocketAddr,
    tls: SocketAddr,
}

fn setup() -> Setup {
    let ups = Upstreams::start(&["app"]);
    let events = RawUpstream::start(Behaviour::Events);
    let [h2c, tls] = free_addrs();
    let gw = Gateway::start(&config(ups.get("app").addr, events.addr), &[("@H2C@", h2c), ("@TLS@", tls)]);
    Setup { gw, ups, events, h2c, tls }
}

/// curl's arguments for `https://host:port/path` (TLS, trusting the test CA) or
/// `http://...`, with the name resolved to loopback.
fn curl_args(host: &str, addr: SocketAddr, path: &str, tls: bool) -> Vec<String> {
    let scheme = if tls { "https" } else { "http" };
    // A bounded run: a gateway that held a stream back fails the test instead of hanging it.
    let mut args = vec![
        "-sS".to_owned(),
        "--max-time".to_owned(),
        "10".to_owned(),
        "--resolve".to_owned(),
        format!("{host}:{}:127.0.0.1", addr.port()),
    ];
    if tls {
        args.extend(["--cacert".to_owned(), format!("{}/ca.pem", tls_dir())]);
    }
    args.push(format!("{scheme}://{host}:{}{path}", addr.port()));
    args
}

/// Runs curl; returns the body and `<http version> <status>`.
fn curl(version: &str, host: &str, addr: SocketAddr, tls: bool, headers: &[(&str, &str)]) -> (String, String) {
    let mut cmd = Command::new("curl");
    cmd.arg(version).args(curl_args(host, addr, "/api/x", tls));
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    let out = cmd.args(["-w", "\n%{http_version} %{http_code}"]).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_owned(), status.to_owned())
}

const SPOOFS: [(&str, &str); 4] = [
    ("x-isogate-tenant", "globex"),
    ("x-isogate-user", "admin"),
    ("x-tenant-id", "globex"),
    ("x_isogate_roles", "admin"),
];

/// The upstream saw exactly the trusted identity of the token, and no client copy.
fn assert_trusted_only(ups: &Upstreams) {
    let seen = ups.get("app").received().pop().expect("the upstream got the request");
    assert_eq!(seen.header_values("x-isogate-tenant"), ["acme"]);
    assert_eq!(seen.header_values("x-isogate-user"), ["user-1"]);
    assert_eq!(seen.header_values("x-isogate-roles"), ["user"]);
    assert_eq!(seen.header_values("x-isogate-environment"), ["prod"]);
    assert_eq!(seen.header("x-tenant-id"), None);
    assert_eq!(seen.header("x_isogate_roles"), None);
    assert!(seen.headers.iter().all(|(_, v)| !v.contains("globex") && v != "admin"), "{:?}", seen.headers);
    let host = seen.header("host").unwrap();
    let port = host.strip_prefix("a.test").map(|p| p.strip_prefix(':').map(str::parse::<u16>));
    assert!(matches!(port, Some(None | Some(Ok(_)))), "the :authority is the host: {host}");
}

#[test]
fn h2c_prior_knowledge_is_served_with_the_trusted_headers_only() {
    let s = setup();
    let auth = format!("Bearer {}", token("HS256", claims("prod", "acme")));
    let mut headers = SPOOFS.to_vec();
    headers.push(("authorization", &auth));
    let (body, status) = curl("--http2-prior-knowledge", "a.test", s.h2c, false, &headers);
    assert_eq!(status, "2 200", "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["trusted_headers"]["x-isogate-tenant"], "acme");
    assert_trusted_only(&s.ups);
    // The same listener still speaks HTTP/1.1 to everyone else.
    let (_, status) = curl("--http1.1", "a.test", s.h2c, false, &headers);
    assert_eq!(status, "1.1 200");
    assert_trusted_only(&s.ups);
    assert_eq!(s.ups.total(), 2);
}

#[test]
fn http2_over_tls_is_served_with_the_trusted_headers_only() {
    let s = setup();
    let auth = format!("Bearer {}", token("HS256", claims("prod", "acme")));
    let mut headers = SPOOFS.to_vec();
    headers.push(("authorization", &auth));
    let (body, status) = curl("--http2", "a.test", s.tls, true, &headers);
    assert_eq!(status, "2 200", "{body}");
    assert_trusted_only(&s.ups);
}

#[test]
fn refusals_over_h2c_reach_no_upstream() {
    let s = setup();
    let (body, status) = curl("--http2-prior-knowledge", "a.test", s.h2c, false, &SPOOFS);
    assert_eq!(status, "2 401", "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "token_missing");
    let stage = format!("Bearer {}", token("HS256", claims("stage", "acme")));
    let (body, status) = curl("--http2-prior-knowledge", "a.test", s.h2c, false, &[("authorization", &stage)]);
    assert_eq!(status, "2 403", "{body}");
    let forged = format!("Bearer {}x", token("HS256", claims("prod", "acme")));
    let (_, status) = curl("--http2-prior-knowledge", "a.test", s.h2c, false, &[("authorization", &forged)]);
    assert_eq!(status, "2 401");
    assert_eq!(s.ups.total(), 0);
    // Lines are written once the answers are out: wait for all three.
    let lines = eventually("three audit lines", || Some(s.gw.audit_lines()).filter(|l| l.len() >= 3));
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["decision"] == "deny"), "{lines:?}");
}

#[test]
fn a_listener_without_h2c_does_not_speak_it() {
    let s = setup();
    let auth = format!("Bearer {}", token("HS256", claims("prod", "acme")));
    let (_, status) = curl("--http2-prior-knowledge", "a.test", s.gw.addr, false, &[("authorization", &auth)]);
    assert_ne!(status, "2 200");
    assert_eq!(s.ups.total(), 0);
    // pingora's HTTP/1 parser refused the preface; the refusal is audited.
    let line = eventually("the refusal's audit line", || s.gw.audit_lines().pop());
    assert_eq!((line["method"].as_str(), line["reason"].as_str()), (Some("PRI"), Some("malformed_request")));
    // HTTP/1.1 there is unchanged.
    let (_, status) = curl("--http1.1", "a.test", s.gw.addr, false, &[("authorization", &auth)]);
    assert_eq!(status, "1.1 200");
}

/// Streams `/events` with curl; returns once `data: one` arrived, then releases the
/// upstream's second event and reads it.
fn events_arrive_one_by_one(s: &Setup, version: &str, addr: SocketAddr, tls: bool) {
    let auth = format!("authorization: Bearer {}", token("HS256", claims("stream", "acme")));
    let mut child = Command::new("curl")
        .args(["-N", version, "-H", &auth])
        .args(curl_args("b.test", addr, "/events", tls))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "data: one");
    // The first event reached the client while the upstream still holds the second.
    s.events.release();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(rest, ["", "data: two", ""]);
    assert!(child.wait().unwrap().success());
}

#[test]
fn server_sent_events_are_relayed_as_they_arrive_over_http1() {
    let s = setup();
    events_arrive_one_by_one(&s, "--http1.1", s.gw.addr, false);
}

#[test]
fn server_sent_events_are_relayed_as_they_arrive_over_h2c() {
    let s = setup();
    events_arrive_one_by_one(&s, "--http2-prior-knowledge", s.h2c, false);
}

#[test]
fn server_sent_events_are_relayed_as_they_arrive_over_h2() {
    let s = setup();
    events_arrive_one_by_one(&s, "--http2", s.tls, true);
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The upstream's traceparent and tracestate, and the audit line's trace id.
fn traced(s: &Setup, headers: &[(&str, &str)]) -> (String, Option<String>, Value) {
    let t = token("HS256", claims("prod", "acme"));
    let auth = format!("Bearer {t}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    let r = s.gw.get("a.test", "/api", &all);
    assert_eq!(r.status, 200);
    let seen = s.ups.get("app").received().pop().unwrap();
    assert_eq!(seen.header_values("traceparent").len(), 1);
    let parent = seen.header("traceparent").unwrap().to_owned();
    let state = seen.header("tracestate").map(str::to_owned);
    (parent, state, s.gw.audit_for(&request_id(&r))["trace_id"].clone())
}

#[test]
fn a_valid_traceparent_is_continued_under_the_gateway_span() {
    let s = setup();
    let (parent, state, audited) = traced(&s, &[("traceparent", PARENT), ("tracestate", "vendor=abc")]);
    assert!(parent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && parent.ends_with("-01"), "{parent}");
    assert_eq!(parent.len(), 55);
    assert_ne!(&parent[36..52], "00f067aa0ba902b7", "the gateway's hop has its own span id");
    assert_eq!(state.as_deref(), Some("vendor=abc"));
    assert_eq!(audited, "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn a_trace_is_started_when_absent_and_replaced_when_malformed() {
    let s = setup();
    let (started, state, audited) = traced(&s, &[]);
    assert_eq!(state, None);
    assert_eq!(started.len(), 55);
    assert_eq!(&started[3..35], audited.as_str().unwrap(), "the audit line names the trace sent upstream");
    let upper = PARENT.to_uppercase();
    let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    for bad in [upper.as_str(), zero, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "hello"] {
        let (parent, state, audited) = traced(&s, &[("traceparent", bad), ("tracestate", "vendor=abc")]);
        assert_ne!(parent, bad);
        assert!(!parent.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{bad}: {parent}");
        assert!(parent.starts_with("00-") && parent.len() == 55, "{parent}");
        assert_eq!(&parent[3..35], audited.as_str().unwrap());
        assert_ne!(&parent[3..35], &started[3..35], "a new trace each time");
        assert_eq!(state, None, "the state of a replaced trace is dropped");
    }
}

#[test]
fn refusals_carry_the_callers_trace_id_in_the_audit_line() {
    let s = setup();
    let r = s.gw.get("a.test", "/api", &[("traceparent", PARENT)]);
    assert_eq!(r.status, 401);
    assert_eq!(s.gw.audit_for(&request_id(&r))["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(s.ups.total(), 0);
}

/// Sends one h2c request with the `h2` crate (prior knowledge); returns the status, or
/// the stream error.
fn h2c_request(addr: SocketAddr, authority: &str, headers: &[(&str, &str)]) -> Result<u16, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut client = client.ready().await.map_err(|e| e.to_string())?;
        let mut req = http::Request::builder().uri(format!("http://{authority}/api/x"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (answer, _) = client.send_request(req.body(()).unwrap(), true).map_err(|e| e.to_string())?;
        answer.await.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
    })
}

#[test]
fn the_authority_pseudo_header_is_the_host() {
    let s = setup();
    let auth = format!("Bearer {}", token("HS256", claims("prod", "acme")));
    let mut headers = SPOOFS.to_vec();
    headers.push(("authorization", &auth));
    assert_eq!(h2c_request(s.h2c, "a.test", &headers), Ok(200));
    assert_trusted_only(&s.ups);
    // `:authority` binds the environment: b.test is not prod.
    assert_eq!(h2c_request(s.h2c, "b.test", &headers), Ok(403));
    // A `host` header that disagrees with `:authority` is refused.
    headers.push(("host", "b.test"));
    assert!(h2c_request(s.h2c, "a.test", &headers) != Ok(200));
    assert_eq!((s.ups.total(), s.events.heads()), (1, 0));
}
