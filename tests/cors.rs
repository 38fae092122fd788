//! CORS per route over real sockets: the gateway answers preflights itself (no token,
//! no upstream, audited), adds the route's headers to answers for allowed origins —
//! refusals included — and gives a foreign origin none; `*` never goes with credentials.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::client::RawResponse;
use common::jws::{claims, token};
use common::*;

const APP: &str = "https://app.example.com";

fn config(ups: &Upstreams) -> String {
    format!(
        r#"{PREAMBLE}
{HMAC_ISSUER}
[environments.prod]
default_pool = "app"

[pools.app]
servers = ["{app}"]

[[routes]]
name = "api"
path_prefix = "/api"
environment = "prod"
token_sources = ["authorization", {{ cookie = "session" }}]
[routes.cors]
allowed_origins = ["{APP}"]
allowed_methods = ["GET", "PUT"]
allowed_headers = ["authorization", "content-type"]
expose_headers = ["x-request-id"]
allow_credentials = true
max_age_seconds = 120

[[routes]]
name = "public"
path_prefix = "/public"
environment = "prod"
[routes.cors]
allowed_origins = ["*"]

[[routes]]
name = "plain"
path_prefix = "/"
environment = "prod"
"#,
        app = ups.get("app").addr
    )
}

fn request(gw: &Gateway, method: &str, path: &str, headers: &[(&str, String)]) -> RawResponse {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nhost: prod.test\r\nconnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    gw.send_raw(raw.as_bytes()).unwrap()
}

fn preflight(gw: &Gateway, path: &str, origin: &str, method: &str, headers: Option<&str>) -> RawResponse {
    let mut h = vec![("origin", origin.to_owned()), ("access-control-request-method", method.to_owned())];
    if let Some(asked) = headers {
        h.push(("access-control-request-headers", asked.to_owned()));
    }
    request(gw, "OPTIONS", path, &h)
}

fn cors_headers(r: &RawResponse) -> Vec<&(String, String)> {
    r.headers.iter().filter(|(n, _)| n.starts_with("access-control-")).collect()
}

fn bearer() -> String {
    format!("Bearer {}", token("HS256", claims("prod", "acme")))
}

#[test]
fn the_gateway_answers_preflights_without_a_token_or_the_upstream() {
    let ups = Upstreams::start(&["app"]);
    let gw = Gateway::start(&config(&ups), &[]);

    let ok = preflight(&gw, "/api/items", APP, "PUT", Some("Content-Type, authorization"));
    assert_eq!(ok.status, 204, "{ok:?}");
    assert_eq!(ok.header("access-control-allow-origin"), Some(APP));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(ok.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(ok.header("access-control-allow-headers"), Some("authorization, content-type"));
    assert_eq!(ok.header("access-control-max-age"), Some("120"));
    assert!(ok.header("vary").unwrap().contains("Origin"), "{ok:?}");
    let line = gw.audit_for(&request_id(&ok));
    assert_eq!((line["method"].as_str(), line["status"].as_u64()), (Some("OPTIONS"), Some(204)));
    assert_eq!((line["route"].as_str(), line["reason"].as_str()), (Some("api"), Some("cors_preflight")));

    for (what, origin, method, asked) in [
        ("foreign origin", "https://evil.example", "PUT", None),
        ("method", APP, "DELETE", None),
        ("header", APP, "GET", Some("x-isogate-tenant")),
        ("null origin", "null", "GET", None),
    ] {
        let denied = preflight(&gw, "/api/items", origin, method, asked);
        assert_eq!(denied.status, 403, "{what}");
        assert_eq!(denied.json()["error"], "cors_not_allowed", "{what}");
        assert!(cors_headers(&denied).is_empty(), "{what}: {denied:?}");
        assert_eq!(gw.audit_for(&request_id(&denied))["reason"], "cors_not_allowed");
    }

    // A route without CORS keeps asking for a token, preflight or not.
    let plain = preflight(&gw, "/other", APP, "GET", None);
    assert_eq!(plain.status, 401);
    assert!(cors_headers(&plain).is_empty());
    assert_eq!(ups.total(), 0, "a preflight reached the upstream");
}

#[test]
fn answers_to_an_allowed_origin_carry_the_headers_and_a_foreign_one_gets_none() {
    let ups = Upstreams::start(&["app"]);
    let gw = Gateway::start(&config(&ups), &[]);
    let origin = ("origin", APP.to_owned());

    let ok = request(&gw, "GET", "/api/items", &[origin.clone(), ("authorization", bearer())]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-origin"), Some(APP));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(ok.header("access-control-expose-headers"), Some("x-request-id"));
    assert!(ok.headers.iter().any(|(n, v)| n == "vary" && v.contains("Origin")), "{ok:?}");

    let foreign =
        request(&gw, "GET", "/api/items", &[("origin", "https://evil.example".into()), ("authorization", bearer())]);
    assert_eq!(foreign.status, 200);
    assert!(cors_headers(&foreign).is_empty(), "{foreign:?}");

    // The browser can read why it was refused.
    let refused = request(&gw, "GET", "/api/items", std::slice::from_ref(&origin));
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("access-control-allow-origin"), Some(APP));
    assert_eq!(refused.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(ups.total(), 2, "only the two admitted requests reached the upstream");

    // A browser sending its session cookie: the upstream gets the identity, not the cookie.
    let cookie = format!("lang=en; session={}", token("HS256", claims("prod", "acme")));
    let with_cookie = request(&gw, "GET", "/api/items", &[origin, ("cookie", cookie)]);
    assert_eq!(with_cookie.status, 200);
    let seen = ups.get("app").received().pop().unwrap();
    assert_eq!(seen.header("x-isogate-tenant"), Some("acme"));
    assert_eq!(seen.header("cookie"), Some("lang=en"));
}

#[test]
fn any_origin_gets_a_star_without_credentials() {
    let ups = Upstreams::start(&["app"]);
    let gw = Gateway::start(&config(&ups), &[]);
    let pre = preflight(&gw, "/public/feed", "https://anyone.example", "GET", None);
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    assert_eq!(pre.header("access-control-allow-credentials"), None);
    let get = request(
        &gw,
        "GET",
        "/public/feed",
        &[("origin", "https://anyone.example".into()), ("authorization", bearer())],
    );
    assert_eq!(get.status, 200);
    assert_eq!(get.header("access-control-allow-origin"), Some("*"));
    assert_eq!(get.header("access-control-allow-credentials"), None);
}

#[test]
fn a_star_with_credentials_is_a_config_error_naming_the_key() {
    let ups = Upstreams::start(&["app"]);
    let scratch = Scratch::new("cors-check");
    let bad = config(&ups).replace("allowed_origins = [\"*\"]", "allowed_origins = [\"*\"]\nallow_credentials = true");
    let path = scratch.0.join("isogate.toml");
    let filled = bad.replace("@KEYS@", &jws::keys_dir().display().to_string()).replace("@AUDIT@", "stdout");
    let filled = filled.replace("@ADMIN@", "127.0.0.1:9").replace("@LISTEN@", "127.0.0.1:8");
    std::fs::write(&path, filled).unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_isogate")).args(["check", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes[1].cors.allow_credentials"), "{stderr}");
}
