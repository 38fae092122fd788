//! Identity providers over real sockets: a JWKS/OIDC server in the test rotates keys,
//! removes one, serves garbage, answers slowly, goes down and comes back; tokens are
//! minted from fixture keys independently of the verification path.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::client;
use common::idp::{jwk, Idp};
use common::jws::{claims, token_signed};
use common::*;
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
{prod_api}"#,
        prod_api = prod_api(ups.get("prod-shared").addr)
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
    // Audit lines are written behind the responses: wait for it.
    let refused = eventually("the unknown_kid audit line", || {
        gw.audit_lines().into_iter().find(|l| l["reason"] == "unknown_kid")
    });
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

/// A gateway with one issuer `idp` listing `algorithms`, keys from `idp`'s JWKS.
fn gateway_algorithms(idp: &Idp, algorithms: &str, settings: &str) -> Gateway {
    let ups = Upstreams::start(&["prod-shared"]);
    let config = format!(
        r#"
{PREAMBLE}[[issuers]]
name = "idp"
issuer = "{ISS}"
audiences = ["isogate-tests"]
algorithms = {algorithms}
jwks_url = "{}"
{settings}
[environments.prod]
hosts = ["prod.test"]
default_pool = "prod-shared"
[pools.prod-shared]
servers = ["{}"]
[[routes]]
name = "api"
path_prefix = "/api"
"#,
        idp.jwks_url(),
        ups.get("prod-shared").addr
    );
    let gw = Gateway::start(&config, &[]);
    std::mem::forget(ups); // the upstream runtime lives as long as the test process
    gw
}

#[test]
fn one_issuer_verifies_rsa_and_ec_keys_each_only_with_its_own_algorithms() {
    // As Keycloak publishes them: an RSA and an EC signing key in one JWKS, each naming its
    // algorithm; and the same keys again without `alg`, where only the key type decides.
    for with_alg in [true, false] {
        let mut keys = vec![jwk("rsa1", "RS256", "rsa.key.pem"), jwk("ec1", "ES256", "ec256.key.pem")];
        if !with_alg {
            keys.iter_mut().for_each(|k| drop(k.as_object_mut().unwrap().remove("alg")));
        }
        let idp = Idp::start(&keys);
        let gw = gateway_algorithms(&idp, r#"["RS256", "ES256"]"#, "unknown_kid_cooldown_seconds = 30");
        eventually("readiness", || ready(&gw).then_some(()));
        assert_eq!(gw.metric(r#"isogate_jwks_keys{issuer="idp"}"#), Some(2.0), "both key types are loaded");
        assert_eq!(status_and_reason(&gw, &token("RS256", ISS, "rsa1", "rsa.key.pem")), (200, None));
        assert_eq!(status_and_reason(&gw, &token("ES256", ISS, "ec1", "ec256.key.pem")), (200, None));
        let refused = |t: &str| status_and_reason(&gw, t);
        let not_allowed = (401, Some("algorithm_not_allowed".to_owned()));
        // Cross-type attempts: the kid of one key type with the other type's algorithm.
        assert_eq!(refused(&token("RS256", ISS, "ec1", "rsa.key.pem")), not_allowed, "RS256 naming the EC key");
        assert_eq!(refused(&token("ES256", ISS, "rsa1", "ec256.key.pem")), not_allowed, "ES256 naming the RSA key");
        // An algorithm of a loaded key type that the issuer does not list.
        assert_eq!(refused(&token("PS256", ISS, "rsa1", "rsa.key.pem")), not_allowed, "PS256 is not listed");
        assert_eq!(refused(&token("ES384", ISS, "ec1", "ec384.key.pem")), not_allowed, "ES384 is not listed");
        // RS256 -> HS256 confusion against a JWKS issuer.
        let mut c = claims("prod", "acme");
        c["iss"] = json!(ISS);
        let hs = common::jws::token_with(&json!({"alg": "HS256", "kid": "rsa1"}), &c, "HS256");
        assert_eq!(refused(&hs), not_allowed, "HS256 naming the RSA key");
    }
}

#[test]
fn jwks_issuers_keep_hmac_apart_and_static_keys_to_their_own_type() {
    let dir = Scratch::new("families");
    let keys = common::jws::keys_dir();
    let run = |issuer: &str| {
        let text = format!(
            "{PREAMBLE}{issuer}\n[environments.prod]\nhosts = [\"prod.test\"]\ndefault_pool = \"p\"\n[pools.p]\nservers = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"api\"\npath_prefix = \"/\"\n"
        );
        check_config(&dir, &text.replace("@KEYS@", &keys.display().to_string()))
    };
    let mixed_jwks = "[[issuers]]\nname = \"kc\"\nissuer = \"https://kc.test\"\nalgorithms = [\"RS256\", \"ES256\", \"PS384\", \"EdDSA\"]\njwks_url = \"http://127.0.0.1:9/jwks\"\n";
    let (ok, out) = run(mixed_jwks);
    assert!(ok, "RSA, PSS, EC and EdDSA may share one JWKS issuer: {out}");

    let hmac_mix = "[[issuers]]\nname = \"kc\"\nissuer = \"https://kc.test\"\nalgorithms = [\"RS256\", \"HS256\"]\njwks_url = \"http://127.0.0.1:9/jwks\"\n";
    let (ok, out) = run(hmac_mix);
    assert!(!ok);
    assert!(out.contains("issuers[0].algorithms") && out.contains("HMAC") && out.contains("confusion"), "{out}");

    let static_mix = "[[issuers]]\nname = \"rsa\"\nissuer = \"https://rsa.test\"\nalgorithms = [\"RS256\", \"ES256\"]\npublic_key_file = \"@KEYS@/rsa.pub.pem\"\n";
    let (ok, out) = run(static_mix);
    assert!(!ok);
    assert!(out.contains("issuers[0].algorithms") && out.contains("one key") && out.contains("jwks_url"), "{out}");
}

/// Runs `isogate check` on `text`; returns whether it passed and its stderr.
fn check_config(dir: &Scratch, text: &str) -> (bool, String) {
    let path = dir.0.join("check.toml");
    std::fs::write(
        &path,
        text.replace("@ADMIN@", "127.0.0.1:1").replace("@LISTEN@", "127.0.0.1:0").replace("@AUDIT@", "stdout"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_isogate"))
        .args(["check", "-c"])
        .arg(&path)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_refuses_a_staleness_that_a_refresh_cannot_beat() {
    let dir = Scratch::new("staleness");
    let text = |settings: &str| {
        format!(
            "{PREAMBLE}[[issuers]]\nname = \"idp\"\nissuer = \"{ISS}\"\nalgorithms = [\"RS256\"]\njwks_url = \"http://127.0.0.1:9/jwks\"\n{settings}\n[environments.prod]\nhosts = [\"prod.test\"]\ndefault_pool = \"p\"\n[pools.p]\nservers = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"api\"\npath_prefix = \"/\"\n"
        )
    };
    let (ok, out) = check_config(&dir, &text("max_staleness_seconds = 10"));
    assert!(!ok, "10 s of staleness against the default 60 s refresh_min");
    assert!(
        out.contains("issuers[0].max_staleness_seconds") && out.contains("refresh_min_seconds"),
        "the message names both keys: {out}"
    );
    let (ok, out) = check_config(&dir, &text("max_staleness_seconds = 60\nrefresh_min_seconds = 60"));
    assert!(!ok, "equal is refused too: {out}");
    let (ok, out) = check_config(&dir, &text("max_staleness_seconds = 10\nrefresh_min_seconds = 5"));
    assert!(ok, "{out}");
    let (ok, out) = check_config(&dir, &text("unknown_kid_cooldown_seconds = 3600"));
    assert!(!ok && out.contains("issuers[0].unknown_kid_cooldown_seconds"), "{out}");
}

#[test]
fn keys_are_refreshed_before_they_go_stale_when_the_idp_sends_no_max_age() {
    // No Cache-Control: the refresh interval would be refresh_max (an hour), far beyond
    // the 3 s of allowed staleness; the refresher must come back before the keys go stale.
    let idp = Idp::start(&[jwk("k1", "RS256", "rsa.key.pem")]);
    let gw =
        gateway(&format!("jwks_url = \"{}\"", idp.jwks_url()), "refresh_min_seconds = 1\nmax_staleness_seconds = 3");
    eventually("readiness", || ready(&gw).then_some(()));
    let mut c = claims("prod", "acme");
    c["iss"] = json!(ISS);
    let mut n = 0;
    eventually("several refreshes", || {
        // A fresh token each time, so every request needs the keys (no cache hit).
        n += 1;
        c["jti"] = json!(n);
        let t = token_signed(&json!({"alg": "RS256", "kid": "k1"}), &c, "RS256", "rsa.key.pem");
        assert_eq!(status_and_reason(&gw, &t), (200, None), "request {n}");
        assert!(ready(&gw), "ready throughout");
        (idp.jwks_hits() >= 4).then_some(())
    });
}

#[test]
fn an_unknown_kid_refetches_even_while_the_keys_are_stale() {
    // refresh_min 5 s, staleness 6 s: after an outage the refresher backs off (1, 2, 4 s),
    // leaving the keys stale for a while after the IdP is back. A token naming a key the
    // IdP rotated in meanwhile must not wait for it.
    let idp = Idp::start(&[jwk("k1", "RS256", "rsa.key.pem")]);
    let gw = gateway(
        &format!("jwks_url = \"{}\"", idp.jwks_url()),
        "refresh_min_seconds = 5\nmax_staleness_seconds = 6\nunknown_kid_cooldown_seconds = 1",
    );
    eventually("readiness", || ready(&gw).then_some(()));
    idp.set(|s| s.down = true);
    eventually("stale keys", || (!ready(&gw)).then_some(()));
    let old = token("RS256", ISS, "k1", "rsa.key.pem");
    assert_eq!(status_and_reason(&gw, &old), (401, Some("keys_unavailable".to_owned())));
    idp.set(|s| {
        s.down = false;
        s.jwks = json!({"keys": [jwk("k1", "RS256", "rsa.key.pem"), jwk("k2", "RS256", "rsa2.key.pem")]}).to_string();
    });
    let refetches = || gw.metric(r#"isogate_jwks_unknown_kid_refetches_total{issuer="idp"}"#).unwrap_or(0.0);
    let before = refetches();
    assert_eq!(status_and_reason(&gw, &token("RS256", ISS, "k2", "rsa2.key.pem")), (200, None));
    assert_eq!(refetches(), before + 1.0, "the unknown kid fetched the keys");
    assert_eq!(status_and_reason(&gw, &old), (200, None), "and the refreshed keys serve every kid");
    assert!(ready(&gw));
}

#[test]
fn a_forged_kid_flood_delays_a_rotated_key_by_at_most_the_cooldown() {
    // Default cooldown (5 s), no max-age: the regular refresh is an hour away, so only an
    // unknown-kid refetch can bring the new key in.
    let idp = Idp::start(&[jwk("k1", "RS256", "rsa.key.pem")]);
    let gw = gateway(&format!("jwks_url = \"{}\"", idp.jwks_url()), "");
    eventually("readiness", || ready(&gw).then_some(()));
    let mut c = claims("prod", "acme");
    c["iss"] = json!(ISS);
    let payload = common::jws::b64(c.to_string().as_bytes());
    let forged = |i: usize| {
        let header = common::jws::b64(json!({"alg": "RS256", "kid": format!("forged-{i}")}).to_string().as_bytes());
        format!("{header}.{payload}.c2ln")
    };
    for i in 0..200 {
        assert_eq!(status_and_reason(&gw, &forged(i)).1.as_deref(), Some("unknown_kid"));
    }
    idp.serve_keys(&[jwk("k1", "RS256", "rsa.key.pem"), jwk("k2", "RS256", "rsa2.key.pem")]);
    let rotated = token("RS256", ISS, "k2", "rsa2.key.pem");
    let start = std::time::Instant::now();
    let mut i = 200;
    loop {
        // The flood goes on between the real token's attempts.
        for _ in 0..20 {
            i += 1;
            assert_eq!(status_and_reason(&gw, &forged(i)).1.as_deref(), Some("unknown_kid"));
        }
        let got = status_and_reason(&gw, &rotated);
        if got == (200, None) {
            break;
        }
        assert_eq!(got.1.as_deref(), Some("unknown_kid"));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(7),
            "the rotated key is still refused after {:?}",
            start.elapsed()
        );
    }
    let fetches = gw.metric(r#"isogate_jwks_unknown_kid_refetches_total{issuer="idp"}"#).unwrap();
    assert!(fetches <= 1.0 + start.elapsed().as_secs_f64() / 5.0 + 1.0, "{fetches} refetches");
}
