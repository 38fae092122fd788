//! Environment binding and tenant routing over real sockets: which upstream got each
//! request (or that none did), the status and reason, and the audit line.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::client;
use common::jws::{claims, token};
use common::*;
use serde_json::json;

#[test]
fn stage_token_never_works_on_prod_and_is_audited() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);

    let stage = token("RS256", claims("stage", "acme"));
    let ok = gw.get_with_token("stage.test", "/api/orders", &stage);
    assert_eq!((ok.status, ok.json()["upstream"].as_str()), (200, Some("stage-shared")));

    let refused = gw.get_with_token("prod.test", "/api/orders", &stage);
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"], "wrong_environment");
    let line = gw.audit_for(&request_id(&refused));
    assert_eq!(line["environment"], "prod");
    assert_eq!(line["tenant"], "acme");
    assert_eq!(line["reason"], "wrong_environment");
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["pool"], serde_json::Value::Null);

    // The environment claim is compared exactly, a missing one is refused, and one
    // that could not travel in a header is not a valid claim at all.
    let cases = [
        (json!("PROD"), 403, "wrong_environment"),
        (json!(null), 403, "wrong_environment"),
        (json!("prod "), 401, "claim_invalid"),
        (json!(["prod"]), 401, "claim_invalid"),
    ];
    for (env, status, reason) in cases {
        let mut c = claims("prod", "acme");
        c["env"] = env.clone();
        let r = gw.get_with_token("prod.test", "/api", &token("RS256", c));
        assert_eq!((r.status, r.json()["error"].as_str()), (status, Some(reason)), "env {env}");
    }
    assert_eq!(ups.get("prod-shared").count(), 0, "prod received a request it must not");
    assert_eq!(ups.get("stage-shared").count(), 1);
    assert_eq!(gw.metric(r#"isogate_rejections_total{reason="wrong_environment"}"#), Some(3.0));
}

#[test]
fn a_listener_binds_its_environment_and_its_issuer_rules() {
    let ups = standard_upstreams();
    let (_gw, dev) = standard_gateway(&ups);
    let get = |t: &str| {
        let auth = format!("Bearer {t}");
        client::get(dev, "whatever.test", "/api", &[("authorization", auth.as_str())]).unwrap()
    };
    let r = get(&token("HS256", claims("dev", "acme")));
    assert_eq!((r.status, r.json()["upstream"].as_str()), (200, Some("dev-pool")));
    // dev trusts only the hmac issuer.
    let r = get(&token("RS256", claims("dev", "acme")));
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("issuer_not_trusted")));
    // A prod token on the dev listener.
    let r = get(&token("HS256", claims("prod", "acme")));
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("wrong_environment")));
    // dev refuses tenants without their own pool.
    let r = get(&token("HS256", claims("dev", "globex")));
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("tenant_not_mapped")));
    let mut c = claims("dev", "acme");
    c.as_object_mut().unwrap().remove("tenant");
    let r = get(&token("HS256", c));
    assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("tenant_missing")));
    assert_eq!(ups.get("dev-pool").count(), 1);
    assert_eq!(ups.total(), 1);
}

#[test]
fn tenants_land_on_their_silo_or_the_shared_pool() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    let r = gw.get_with_token("prod.test", "/api/x", &token("ES256", claims("prod", "globex")));
    assert_eq!(r.json()["upstream"], "prod-globex");
    assert_eq!(r.json()["trusted_headers"]["x-isogate-pool"], "prod-globex");
    let r = gw.get_with_token("prod.test", "/api/x", &token("ES256", claims("prod", "initech")));
    assert_eq!(r.json()["upstream"], "prod-shared");
    // Integer tenant ids are accepted and compared as text.
    let mut c = claims("prod", "x");
    c["tenant"] = json!(42);
    let r = gw.get_with_token("prod.test", "/api/x", &token("ES256", c));
    assert_eq!(r.json()["trusted_headers"]["x-isogate-tenant"], "42");
    let line = gw.audit_for(&request_id(&r));
    assert_eq!(line["pool"], "prod-shared");
    assert_eq!(line["upstream"], ups.get("prod-shared").addr.to_string());
    assert_eq!(ups.get("prod-globex").count(), 1);
}

#[test]
fn a_from_token_route_takes_the_environment_from_the_token() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    let r = gw.get_with_token("any.test", "/", &token("RS256", claims("stage", "acme")));
    assert_eq!((r.status, r.json()["upstream"].as_str()), (200, Some("stage-shared")));
    let r = gw.get_with_token("any.test", "/", &token("RS256", claims("qa", "acme")));
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("unknown_environment")));
}

#[test]
fn unmatched_requests_get_404_and_unbound_ones_403() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    let t = token("RS256", claims("prod", "acme"));
    let r = gw.get_with_token("prod.test", "/apix", &t);
    assert_eq!((r.status, r.json()["error"].as_str()), (404, Some("no_route")));
    let r = gw.get_with_token("prod.test", "/", &t);
    assert_eq!((r.status, r.json()["error"].as_str()), (404, Some("no_route")));
    // A host bound to no environment on a listener bound to none.
    let r = gw.get_with_token("unknown.test", "/api", &t);
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("unknown_environment")));
    let line = gw.audit_for(&request_id(&r));
    assert_eq!(line["environment"], serde_json::Value::Null);
    assert_eq!(line["route"], "api");
    assert_eq!(ups.total(), 0);
}

#[test]
fn an_unreachable_upstream_is_a_502_with_reason() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    let r = gw.get_with_token("broken.test", "/api", &token("RS256", claims("broken", "acme")));
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "upstream_unreachable");
    let line = gw.audit_for(&request_id(&r));
    assert_eq!(line["reason"], "upstream_unreachable");
    assert_eq!(line["pool"], "dead");
    assert_eq!(line["status"], 502);
    assert_eq!(gw.metric(r#"isogate_rejections_total{reason="upstream_unreachable"}"#), Some(1.0));
    // The gateway keeps serving.
    let r = gw.get_with_token("prod.test", "/api", &token("RS256", claims("prod", "acme")));
    assert_eq!(r.status, 200);
}
