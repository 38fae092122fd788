//! Identity providers over real sockets: a JWKS/OIDC server in the test rotates keys,
//! removes one, serves garbage, answers slowly, goes down and comes back; tokens are
//! minted from fixture keys independently of the verification path.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::idp::{jwk, Idp};
use common::jws::{claims, token_signed};
use common::*;
use isogate::demo::client;
use serde_json::{json, Value};

const ISS: &str = "https://idp.test";

/// A gateway whose RSA issuer takes its keys from `source` (`jwks_url = ...` or
/// `discovery_url = ...`), with extra issuer settings.
fn gateway(source: &str, settings: &str) -> Gateway {
    gateway_with(source, settings, "")
}

/// Like `gateway`, plus EC and EdDSA issuers on the same key source.
fn gateway_all_families(source: &str) -> Gateway {
    let more = format!(
        r#"
[[issuers]]
name = "idp-ec"
issuer = "https://idp-ec.test"
audiences = ["isogate-tests"]
algorithms = ["ES256", "ES384"]
{source}
[[issuers]]
name = "idp-ed"
issuer = "https://idp-ed.test"
audiences = ["isogate-tests"]
algorithms = ["EdDSA"]
{source}
"#
    );
    gateway_with(source, "", &more)
}

fn gateway_with(source: &str, settings: &str, more_issuers: &str) -> Gateway {
    let ups = Upstreams::start(&["prod-shared"]);
    let config = format!(
        r#"
{PREAMBLE}[[issuers]]
name = "idp"
issuer = "{ISS}"
audiences = ["isogate-tests"]
algorithms = ["RS256", "PS256"]
{source}
{settings}
{more_issuers}
[environments.prod]
hosts = ["prod.test"]
default_pool = "prod-shared"
[pools.prod-shared]
servers = ["{}"]
[[routes]]
name = "api"
path_prefix = "/api"
"#,
        ups.get("prod-shared").addr
    );
    let gw = Gateway::start(&config, &[]);
    std::mem::forget(ups); // the upstream runtime lives as long as the test process
    gw
}

fn ready(gw: &Gateway) -> bool {
    client::get(gw.admin, "admin", "/readyz", &[]).unwrap().status == 200
}

/// A token for `iss`, signed by fixture key `key_file` and naming `kid`.
fn token(alg: &str, iss: &str, kid: &str, key_file: &str) -> String {
    let mut c = claims("prod", "acme");
    c["iss"] = json!(iss);
    token_signed(&json!({"alg": alg, "kid": kid}), &c, alg, key_file)
}

fn status_and_reason(gw: &Gateway, t: &str) -> (u16, Option<String>) {
    let r = gw.get_with_token("prod.test", "/api", t);
    (r.status, r.json()["error"].as_str().map(str::to_owned))
}

fn all_family_keys() -> Vec<Value> {
    vec![
        jwk("k1", "RS256", "rsa.key.pem"),
        jwk("p1", "PS256", "rsa.key.pem"),
        jwk("ec1", "ES256", "ec256.key.pem"),
        jwk("ec2", "ES384", "ec384.key.pem"),
        jwk("ed1", "EdDSA", "ed25519.key.pem"),
    ]
}

#[test]
fn every_algorithm_verifies_against_fetched_keys_and_readiness_waits_for_them() {
    let idp = Idp::start(&all_family_keys());
    let gw = gateway_all_families(&format!("jwks_url = \"{}\"", idp.jwks_url()));
    eventually("readiness", || ready(&gw).then_some(()));
    let mut ps = claims("prod", "acme");
    ps["iss"] = json!(ISS);
    let cases = [
        token("RS256", ISS, "k1", "rsa.key.pem"),
        token_signed(&json!({"alg": "PS256", "kid": "p1"}), &ps, "PS256", "rsa.key.pem"),
        token("ES256", "https://idp-ec.test", "ec1", "ec256.key.pem"),
        token("ES384", "https://idp-ec.test", "ec2", "ec384.key.pem"),
        token("EdDSA", "https://idp-ed.test", "ed1", "ed25519.key.pem"),
    ];
    for t in &cases {
        assert_eq!(status_and_reason(&gw, t), (200, None));
    }
    // The JWK says RS256 (or ES256): a token with another algorithm naming it is refused.
    assert_eq!(
        status_and_reason(&gw, &token_signed(&json!({"alg": "PS256", "kid": "k1"}), &ps, "PS256", "rsa.key.pem"))
            .1
            .as_deref(),
        Some("algorithm_not_allowed")
    );
    assert_eq!(
        status_and_reason(&gw, &token("ES384", "https://idp-ec.test", "ec1", "ec384.key.pem")).1.as_deref(),
        Some("algorithm_not_allowed")
    );
    let fetched = gw.metric(r#"isogate_jwks_fetches_total{issuer="idp",result="ok"}"#).unwrap();
    assert!(fetched >= 1.0);
    assert_eq!(gw.metric(r#"isogate_jwks_keys{issuer="idp"}"#), Some(2.0), "only the RSA keys fit the RSA issuer");
    assert_eq!(gw.metric(r#"isogate_jwks_keys{issuer="idp-ec"}"#), Some(2.0));
}

#[test]
fn a_rotated_key_works_on_its_first_request_and_a_removed_one_stops_after_refresh() {
    let idp = Idp::start(&[jwk("k1", "RS256", "rsa.key.pem")]);
    let gw = gateway(
        &format!("jwks_url = \"{}\"", idp.jwks_url()),
        "refresh_min_seconds = 1\nrefresh_max_seconds = 1\nunknown_kid_cooldown_seconds = 0",
    );
    eventually("readiness", || ready(&gw).then_some(()));
    let old = token("RS256", ISS, "k1", "rsa.key.pem");
    assert_eq!(status_and_reason(&gw, &old), (200, None));
    assert_eq!(status_and_reason(&gw, &old), (200, None), "second use is a cache hit");
    assert_eq!(gw.metric(r#"isogate_token_cache_requests_total{result="hit"}"#), Some(1.0));

    // Rotation: the IdP adds k2; a token signed with it works at once (one refetch).
    idp.serve_keys(&[jwk("k1", "RS256", "rsa.key.pem"), jwk("k2", "RS256", "rsa2.key.pem")]);
    let new = token("RS256", ISS, "k2", "rsa2.key.pem");
    assert_eq!(status_and_reason(&gw, &new), (200, None));
    assert!(gw.metric(r#"isogate_jwks_unknown_kid_refetches_total{issuer="idp"}"#).unwrap() <= 1.0);

    // Removal: once the IdP drops k1, the next refresh makes k1 tokens (cached or not) fail.
    idp.serve_keys(&[jwk("k2", "RS256", "rsa2.key.pem")]);
    let r = eventually("k1 refused after refresh", || {
        let got = status_and_reason(&gw, &old);
        (got.0 == 401).then_some(got)
    });
    assert_eq!(r.1.as_deref(), Some("unknown_kid"));
    assert_eq!(status_and_reason(&gw, &new), (200, None));
    let refused = gw.audit_lines().into_iter().find(|l| l["reason"] == "unknown_kid").unwrap();
    assert_eq!(refused["issuer"], "idp");
    assert_eq!(refused["kid"], "k1");
}

#[test]
fn an_idp_outage_keeps_the_last_keys_until_max_staleness_then_fails_closed() {
    let idp = Idp::start(&[jwk("k1", "RS256", "rsa.key.pem")]);
    let gw = gateway(
        &format!("jwks_url = \"{}\"", idp.jwks_url()),
        "refresh_min_seconds = 1\nrefresh_max_seconds = 1\nmax_staleness_seconds = 3",
    );
    eventually("readiness", || ready(&gw).then_some(()));
    let t = token("RS256", ISS, "k1", "rsa.key.pem");
    assert_eq!(status_and_reason(&gw, &t), (200, None));

    idp.set(|s| s.jwks = "{ not json".to_owned());
    eventually("a garbage fetch", || gw.metric(r#"isogate_jwks_fetches_total{issuer="idp",result="garbage"}"#));
    idp.set(|s| s.down = true);
    eventually("an unreachable fetch", || {
        gw.metric(r#"isogate_jwks_fetches_total{issuer="idp",result="unreachable"}"#)
    });
    assert_eq!(status_and_reason(&gw, &t), (200, None), "last good keys still work inside max staleness");

    let r = eventually("keys_unavailable after max staleness", || {
        let got = status_and_reason(&gw, &t);
        (got.0 == 401).then_some(got)
    });
    assert_eq!(r.1.as_deref(), Some("keys_unavailable"));
    assert!(!ready(&gw), "readiness reports the stale issuer");

    idp.set(|s| {
        s.down = false;
        s.jwks = json!({"keys": [jwk("k1", "RS256", "rsa.key.pem")]}).to_string();
    });
    eventually("recovery", || (status_and_reason(&gw, &t).0 == 200).then_some(()));
    assert!(ready(&gw));
}

#[test]
fn a_flood_of_random_kids_causes_a_bounded_number_of_fetches() {
    let idp = Idp::start(&[jwk("k1", "RS256", "rsa.key.pem")]);
    let gw = gateway(&format!("jwks_url = \"{}\"", idp.jwks_url()), "unknown_kid_cooldown_seconds = 30");
    eventually("readiness", || ready(&gw).then_some(()));
    let before = idp.jwks_hits();
    let mut c = claims("prod", "acme");
    c["iss"] = json!(ISS);
    let payload = common::jws::b64(c.to_string().as_bytes());
    for i in 0..1000 {
        // The kid is looked up before any signature work, so the signature can be junk.
        let header = common::jws::b64(json!({"alg": "RS256", "kid": format!("random-{i}")}).to_string().as_bytes());
        let t = format!("{header}.{payload}.c2ln");
        assert_eq!(status_and_reason(&gw, &t), (401, Some("unknown_kid".to_owned())));
    }
    let fetches = idp.jwks_hits() - before;
    assert!(fetches <= 1, "1000 unknown kids caused {fetches} fetches");
    assert!(gw.metric(r#"isogate_jwks_cooldown_hits_total{issuer="idp"}"#).unwrap() >= 999.0);
}

#[test]
fn slow_answers_time_out_and_keep_the_last_keys() {
    let idp = Idp::start(&[jwk("k1", "RS256", "rsa.key.pem")]);
    let gw = gateway(
        &format!("jwks_url = \"{}\"", idp.jwks_url()),
        "refresh_min_seconds = 1\nrefresh_max_seconds = 1\nfetch_timeout_ms = 200",
    );
    eventually("readiness", || ready(&gw).then_some(()));
    idp.set(|s| s.delay = std::time::Duration::from_secs(2));
    eventually("a timed-out fetch", || gw.metric(r#"isogate_jwks_fetches_total{issuer="idp",result="unreachable"}"#));
    let start = std::time::Instant::now();
    assert_eq!(status_and_reason(&gw, &token("RS256", ISS, "k1", "rsa.key.pem")), (200, None));
    assert!(start.elapsed() < std::time::Duration::from_secs(1), "requests do not wait for the slow IdP");
}

#[test]
fn discovery_must_name_the_configured_issuer() {
    let idp = Idp::start(&[jwk("k1", "RS256", "rsa.key.pem")]);
    idp.set(|s| s.discovery_issuer = "https://evil.test".to_owned());
    let gw = gateway(
        &format!("discovery_url = \"{}\"", idp.discovery_url()),
        "refresh_min_seconds = 1\nrefresh_max_seconds = 1",
    );
    eventually("a refused discovery", || {
        gw.metric(r#"isogate_jwks_fetches_total{issuer="idp",result="issuer_mismatch"}"#)
    });
    assert_eq!(
        status_and_reason(&gw, &token("RS256", ISS, "k1", "rsa.key.pem")),
        (401, Some("keys_unavailable".to_owned()))
    );
    assert!(!ready(&gw));
    assert_eq!(idp.jwks_hits(), 0, "the JWKS of a mismatching discovery document is never fetched");

    idp.set(|s| s.discovery_issuer = ISS.to_owned());
    eventually("keys after a matching discovery", || ready(&gw).then_some(()));
    assert_eq!(status_and_reason(&gw, &token("RS256", ISS, "k1", "rsa.key.pem")), (200, None));
}

#[test]
fn weak_or_misused_keys_are_never_loaded_and_token_headers_cannot_bring_keys() {
    let mut weak = jwk("weak", "RS256", "rsa1024.key.pem");
    weak["kid"] = json!("weak");
    let mut enc = jwk("enc", "RS256", "rsa2.key.pem");
    enc["use"] = json!("enc");
    let idp = Idp::start(&[jwk("k1", "RS256", "rsa.key.pem"), weak, enc]);
    let gw = gateway(&format!("jwks_url = \"{}\"", idp.jwks_url()), "unknown_kid_cooldown_seconds = 30");
    eventually("readiness", || ready(&gw).then_some(()));
    assert_eq!(
        status_and_reason(&gw, &token("RS256", ISS, "weak", "rsa1024.key.pem")).1.as_deref(),
        Some("unknown_kid")
    );
    assert_eq!(status_and_reason(&gw, &token("RS256", ISS, "enc", "rsa2.key.pem")).1.as_deref(), Some("unknown_kid"));
    // A token that carries its own key or key URL is refused before any key lookup.
    let mut c = claims("prod", "acme");
    c["iss"] = json!(ISS);
    let jku = token_signed(&json!({"alg": "RS256", "kid": "k1", "jku": idp.jwks_url()}), &c, "RS256", "rsa.key.pem");
    assert_eq!(status_and_reason(&gw, &jku).1.as_deref(), Some("token_header_forbidden"));
    let embedded =
        token_signed(&json!({"alg": "RS256", "jwk": jwk("x", "RS256", "rsa2.key.pem")}), &c, "RS256", "rsa2.key.pem");
    assert_eq!(status_and_reason(&gw, &embedded).1.as_deref(), Some("token_header_forbidden"));
}
