//! Trusted headers over real sockets: client copies of identity headers never reach an
//! upstream, verified values do, and hostile requests neither crash nor leak.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::jws::{claims, token};
use common::*;
use serde_json::json;

#[test]
fn spoofed_identity_headers_are_replaced_by_verified_ones() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    let mut c = claims("prod", "acme");
    c["roles"] = json!(["user", "billing"]);
    let auth = format!("Bearer {}", token("RS256", c));
    let r = gw.get(
        "prod.test",
        "/api/orders?x=1",
        &[
            ("authorization", auth.as_str()),
            ("X-Isogate-Tenant", "globex"),
            ("x-isogate-tenant", "initech"),
            ("X_ISOGATE_USER", "root"),
            ("x-isogate-environment", "stage"),
            ("x-isogate-pool", "prod-globex"),
            ("x-isogate-test-account", "false"),
            ("x-isogate-system-mode", "on"),
            ("X-Tenant-Id", "globex"),
            ("x_user_id", "root"),
            ("x-request-id", "client-id-1"),
            ("accept", "application/json"),
        ],
    );
    assert_eq!(r.status, 200);
    let got = &ups.get("prod-shared").received()[0];
    let expected = [
        ("x-isogate-environment", "prod"),
        ("x-isogate-tenant", "acme"),
        ("x-isogate-user", "user-1"),
        ("x-isogate-roles", "user,billing"),
        ("x-isogate-pool", "prod-shared"),
        ("x-request-id", "client-id-1"),
    ];
    for (name, value) in expected {
        assert_eq!(got.header_values(name), vec![value], "{name}");
    }
    let leaked: Vec<_> = got
        .headers
        .iter()
        .filter(|(k, _)| {
            k.replace('_', "-").starts_with("x-isogate-")
                || k.replace('_', "-") == "x-tenant-id"
                || k.replace('_', "-") == "x-user-id"
        })
        .filter(|(k, _)| !expected.iter().any(|(n, _)| n == k))
        .collect();
    assert!(leaked.is_empty(), "client identity headers reached the upstream: {leaked:?}");
    assert_eq!(got.header_values("accept"), vec!["application/json"]);
    assert_eq!(got.path, "/api/orders?x=1");
    assert_eq!(r.header("x-request-id"), Some("client-id-1"));
    assert_eq!(gw.metric("isogate_identity_headers_stripped_total"), Some(10.0));
}

#[test]
fn missing_claims_leave_their_headers_absent() {
    let ups = standard_upstreams();
    let optional = "[environments.prod]\ntenant_claim = \"optional\"";
    let config = standard_config(&ups, "").replace("[environments.prod]", optional);
    let gw = Gateway::start(&config, &[("@DEV@", free_addr())]);
    let mut c = claims("prod", "acme");
    let obj = c.as_object_mut().unwrap();
    obj.remove("sub");
    obj.remove("roles");
    obj.remove("tenant");
    let auth = format!("Bearer {}", token("RS256", c));
    let r = gw.get(
        "prod.test",
        "/api",
        &[("authorization", auth.as_str()), ("x-isogate-user", "root"), ("x-isogate-tenant", "globex")],
    );
    assert_eq!(r.status, 200);
    let got = &ups.get("prod-shared").received()[0];
    for name in ["x-isogate-user", "x-isogate-tenant", "x-isogate-roles", "x-isogate-test-account"] {
        assert!(got.header_values(name).is_empty(), "{name} must be absent, got {:?}", got.header_values(name));
    }
    assert_eq!(got.header("x-isogate-environment"), Some("prod"));
}

#[test]
fn test_accounts_are_flagged_and_authorization_forwarding_is_per_route() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    let mut c = claims("prod", "acme");
    c["is_test_account"] = json!(true);
    let t = token("RS256", c);
    gw.get_with_token("prod.test", "/api", &t);
    gw.get_with_token("prod.test", "/private/x", &t);
    let got = ups.get("prod-shared").received();
    assert_eq!(got[0].header("x-isogate-test-account"), Some("true"));
    assert_eq!(got[0].header("authorization"), Some(format!("Bearer {t}").as_str()), "forwarded by default");
    assert_eq!(got[1].header("authorization"), None, "the private route does not forward it");
    let line =
        eventually("the private route's audit line", || gw.audit_lines().into_iter().find(|l| l["route"] == "private"));
    assert_eq!(line["test_account"], true);
}

#[test]
fn request_ids_are_kept_when_safe_and_generated_otherwise() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    let auth = format!("Bearer {}", token("RS256", claims("prod", "acme")));
    let hostile = "a\"b";
    let r = gw.get("prod.test", "/api", &[("authorization", auth.as_str()), ("x-request-id", hostile)]);
    let id = r.header("x-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 32, "a generated id replaces {hostile:?}");
    assert_eq!(ups.get("prod-shared").received()[0].header("x-request-id"), Some(id.as_str()));
    assert_eq!(gw.audit_for(&id)["request_id"], id);
}

#[test]
fn malformed_requests_are_refused_without_reaching_an_upstream() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    let t = token("RS256", claims("prod", "acme"));
    let two_hosts = format!("GET /api HTTP/1.1\r\nhost: stage.test\r\nhost: prod.test\r\nauthorization: Bearer {t}\r\nconnection: close\r\n\r\n");
    // pingora's parser already refuses a request with two Host headers.
    assert_eq!(gw.send_raw(two_hosts.as_bytes()).unwrap().status, 400);

    let bad_host =
        format!("GET /api HTTP/1.1\r\nhost: prod.test/evil\r\nauthorization: Bearer {t}\r\nconnection: close\r\n\r\n");
    let r = gw.send_raw(bad_host.as_bytes()).unwrap();
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("malformed_request")));

    // Garbage and oversized heads must not crash or hang the gateway.
    for raw in [
        b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nhost: prod.test\r\nx-bad\r\n\r\n".to_vec(),
        format!("GET /{} HTTP/1.1\r\nhost: prod.test\r\n\r\n", "a".repeat(200_000)).into_bytes(),
    ] {
        let _ = gw.send_raw(&raw);
    }
    let r = gw.get_with_token("prod.test", "/api", &t);
    assert_eq!(r.status, 200, "the gateway still serves after hostile input");
    assert_eq!(ups.total(), 1);
}
