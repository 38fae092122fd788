//! Token verification over real sockets: every supported algorithm is accepted, and every
//! hostile or broken token is refused with 401, its reason, a challenge, an audit line
//! and a metric — and never reaches an upstream.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::jws::{self, claims, now, token, token_with};
use common::*;
use serde_json::json;

#[test]
fn every_configured_algorithm_is_accepted() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    for alg in ["RS256", "PS256", "ES256", "ES384", "EdDSA", "HS256"] {
        let r = gw.get_with_token("prod.test", "/api/orders", &token(alg, claims("prod", "acme")));
        assert_eq!(r.status, 200, "{alg}: {:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["upstream"], "prod-shared", "{alg}");
    }
    assert_eq!(ups.get("prod-shared").count(), 6);
}

/// One hostile case: the token, and the reason it must be refused with.
struct Case {
    name: &'static str,
    token: String,
    reason: &'static str,
}

fn hostile_cases() -> Vec<Case> {
    let valid = claims("prod", "acme");
    let rsa_pub = std::fs::read(jws::keys_dir().join("rsa.pub.pem")).unwrap();
    let mut cases = Vec::new();
    let mut add = |name, token, reason| cases.push(Case { name, token, reason });

    // alg none, with and without a trailing signature.
    let none_input =
        format!("{}.{}", jws::b64(br#"{"alg":"none","typ":"JWT"}"#), jws::b64(valid.to_string().as_bytes()));
    add("alg none", format!("{none_input}."), "algorithm_not_allowed");
    add("alg none with signature", format!("{none_input}.c2ln"), "algorithm_not_allowed");

    // RS256 -> HS256 confusion: HMAC over the token with the RSA public key as the secret.
    let mut c = valid.clone();
    c["iss"] = json!("https://rsa.test");
    let input = format!("{}.{}", jws::b64(br#"{"alg":"HS256","typ":"JWT"}"#), jws::b64(c.to_string().as_bytes()));
    let sig = jws::hmac::<hmac::Hmac<sha2::Sha256>>(&rsa_pub, input.as_bytes());
    add("RS256 to HS256 confusion", format!("{input}.{}", jws::b64(&sig)), "algorithm_not_allowed");

    // An algorithm of the right family that the issuer does not list.
    let mut c = valid.clone();
    c["iss"] = json!("https://rsa.test");
    add("RS384 not in the issuer's list", token_with(&json!({"alg":"RS384"}), &c, "RS256"), "algorithm_not_allowed");

    let mut c = valid.clone();
    c["exp"] = json!(now() - 120);
    add("expired beyond leeway", token("RS256", c), "token_expired");

    let mut c = valid.clone();
    c["nbf"] = json!(now() + 600);
    add("not yet valid", token("ES256", c), "token_not_yet_valid");

    let mut c = valid.clone();
    c.as_object_mut().unwrap().remove("exp");
    add("no exp", token("RS256", c), "claim_missing");

    let mut c = valid.clone();
    c["aud"] = json!("someone-else");
    add("wrong audience", token("RS256", c), "wrong_audience");

    let mut c = valid.clone();
    c["iss"] = json!("https://evil.test");
    add("unknown issuer", token_with(&json!({"alg":"RS256"}), &c, "RS256"), "wrong_issuer");

    // A token signed by the EC key but claiming the RSA issuer.
    let mut c = valid.clone();
    c["iss"] = json!("https://rsa.test");
    add("other issuer's key", token_with(&json!({"alg":"ES256"}), &c, "ES256"), "algorithm_not_allowed");

    // Tampered payload: a valid token whose tenant is swapped after signing.
    let good = token("RS256", claims("prod", "acme"));
    let parts: Vec<&str> = good.split('.').collect();
    let mut evil = claims("prod", "globex");
    evil["iss"] = json!("https://rsa.test");
    add(
        "tampered payload",
        format!("{}.{}.{}", parts[0], jws::b64(evil.to_string().as_bytes()), parts[2]),
        "bad_signature",
    );
    add("signature cut short", format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20]), "bad_signature");

    add(
        "jku header",
        token_with(&json!({"alg":"RS256","jku":"https://evil.test/keys"}), &c_with_iss(&valid), "RS256"),
        "token_header_forbidden",
    );
    add(
        "embedded jwk header",
        token_with(&json!({"alg":"RS256","jwk":{"kty":"oct","k":"AAAA"}}), &c_with_iss(&valid), "RS256"),
        "token_header_forbidden",
    );

    let mut c = valid;
    c["tenant"] = json!("acme\r\nx-isogate-user: root");
    add("header injection in a claim", token("RS256", c), "claim_invalid");

    add("garbage", "not-a-token".to_owned(), "token_malformed");
    add("two segments", "eyJhbGciOiJSUzI1NiJ9.e30".to_owned(), "token_malformed");
    add("oversized", "a".repeat(9000), "token_too_large");
    cases
}

fn c_with_iss(c: &serde_json::Value) -> serde_json::Value {
    let mut c = c.clone();
    c["iss"] = json!("https://rsa.test");
    c
}

#[test]
fn hostile_tokens_are_refused_audited_and_never_forwarded() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    for case in hostile_cases() {
        let r = gw.get_with_token("prod.test", "/api/orders", &case.token);
        assert_eq!(r.status, 401, "{}: {}", case.name, String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"], case.reason, "{}", case.name);
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer") && challenge.contains("invalid_token"), "{}: {challenge}", case.name);
        let line = gw.audit_for(&request_id(&r));
        assert_eq!(line["decision"], "deny", "{}", case.name);
        assert_eq!(line["reason"], case.reason, "{}", case.name);
        assert_eq!(line["status"], 401);
        assert_eq!(
            line["tenant"],
            serde_json::Value::Null,
            "{}: unverified claims must not be audited as identity",
            case.name
        );
    }
    assert_eq!(ups.total(), 0, "a refused request reached an upstream");
    let expired = gw.metric(r#"isogate_auth_failures_total{reason="token_expired"}"#);
    assert_eq!(expired, Some(1.0));
    let rejections = gw.metric(r#"isogate_rejections_total{reason="algorithm_not_allowed"}"#);
    assert_eq!(rejections, Some(5.0));
}

#[test]
fn missing_or_misplaced_credentials_get_a_plain_challenge() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    let r = gw.get("prod.test", "/api", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_missing");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"isogate\""));

    let t = token("RS256", claims("prod", "acme"));
    for value in [format!("Basic {t}"), t.clone(), format!("Bearer {t} extra")] {
        let r = gw.get("prod.test", "/api", &[("authorization", value.as_str())]);
        assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("token_malformed")), "{value}");
    }
    let bearer = format!("Bearer {t}");
    let r = gw.get("prod.test", "/api", &[("authorization", bearer.as_str()), ("authorization", bearer.as_str())]);
    assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("token_malformed")), "two Authorization headers");
    assert_eq!(ups.total(), 0);

    // Once the token is verified and cached, the same bytes with more after them are
    // still a malformed token, not a cache hit.
    assert_eq!(gw.get("prod.test", "/api", &[("authorization", bearer.as_str())]).status, 200);
    for value in [format!("Bearer {t} extra"), format!("Bearer {t}%20"), format!("Bearer {t}.")] {
        let r = gw.get("prod.test", "/api", &[("authorization", value.as_str())]);
        assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("token_malformed")), "{value}");
    }
    assert_eq!(ups.total(), 1);
}

#[test]
fn leeway_accepts_small_clock_skew() {
    let ups = standard_upstreams();
    let (gw, _) = standard_gateway(&ups);
    let mut c = claims("prod", "acme");
    c["exp"] = json!(now() - 5);
    c["nbf"] = json!(now() + 5);
    let r = gw.get_with_token("prod.test", "/api", &token("HS256", c));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// A gateway with the RSA fixture issuer (with `rsa_extra` settings) and the HMAC one.
fn typed_gateway(ups: &Upstreams, rsa_extra: &str, token_section: &str) -> Gateway {
    let config = format!(
        r#"
{PREAMBLE}{token_section}
[[issuers]]
name = "rsa"
issuer = "https://rsa.test"
audiences = ["isogate-tests"]
algorithms = ["RS256"]
public_key_file = "@KEYS@/rsa.pub.pem"
{rsa_extra}
{HMAC_ISSUER}
{prod_api}"#,
        prod_api = prod_api(ups.get("prod-shared").addr)
    );
    Gateway::start(&config, &[])
}

#[test]
fn an_issuer_with_token_types_refuses_id_tokens_and_untyped_tokens() {
    let ups = Upstreams::start(&["prod-shared"]);
    let gw = typed_gateway(&ups, r#"token_types = ["at+jwt"]"#, "");
    let mut c = claims("prod", "acme");
    c["iss"] = json!("https://rsa.test");
    let with_typ = |typ: Option<&str>| {
        let mut header = json!({"alg": "RS256", "kid": "k1"});
        if let Some(typ) = typ {
            header["typ"] = json!(typ);
        }
        token_with(&header, &c, "RS256")
    };
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"] {
        let r = gw.get_with_token("prod.test", "/api", &with_typ(Some(typ)));
        assert_eq!(r.status, 200, "{typ}: {}", String::from_utf8_lossy(&r.body));
    }
    // An ID token carries the API's audience too, but is typed `JWT` (or not at all).
    for typ in [Some("JWT"), None, Some("application/jwt"), Some("at+jwt2"), Some("")] {
        let t = with_typ(typ);
        for attempt in ["first", "second (a cache miss again)"] {
            let r = gw.get_with_token("prod.test", "/api", &t);
            assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("wrong_token_type")), "{typ:?} {attempt}");
            let line = gw.audit_for(&request_id(&r));
            assert_eq!(line["reason"], "wrong_token_type");
            assert_eq!(line["issuer"], "rsa");
        }
    }
    // The HMAC issuer has no token_types: any typ, or none, is accepted.
    let mut h = claims("prod", "acme");
    h["iss"] = json!("https://hmac.test");
    for header in [json!({"alg": "HS256", "typ": "JWT"}), json!({"alg": "HS256"}), json!({"alg": "HS256", "typ": "x"})]
    {
        assert_eq!(gw.get_with_token("prod.test", "/api", &token_with(&header, &h, "HS256")).status, 200, "{header}");
    }
    assert_eq!(gw.metric(r#"isogate_auth_failures_total{reason="wrong_token_type"}"#), Some(10.0));
    assert_eq!(ups.total(), 7);
}

#[test]
fn token_types_accept_plainly_typed_access_tokens_when_listed() {
    let ups = Upstreams::start(&["prod-shared"]);
    let gw = typed_gateway(&ups, r#"token_types = ["application/at+jwt", "JWT"]"#, "");
    let mut c = claims("prod", "acme");
    c["iss"] = json!("https://rsa.test");
    for typ in ["JWT", "jwt", "at+jwt", "application/JWT"] {
        let r = gw.get_with_token("prod.test", "/api", &token_with(&json!({"alg": "RS256", "typ": typ}), &c, "RS256"));
        assert_eq!(r.status, 200, "{typ}");
    }
    let r =
        gw.get_with_token("prod.test", "/api", &token_with(&json!({"alg": "RS256", "typ": "dpop+jwt"}), &c, "RS256"));
    assert_eq!(r.json()["error"], "wrong_token_type");
}

#[test]
fn a_huge_kid_is_capped_in_the_audit_line() {
    let ups = Upstreams::start(&["prod-shared"]);
    let gw = typed_gateway(
        &ups,
        "",
        "[token]\nmax_bytes = 16384\n[limits]\nmax_header_bytes = 20000\nmax_request_header_bytes = 40000\n",
    );
    let mut c = claims("prod", "acme");
    c["iss"] = json!("https://rsa.test");
    // Multi-byte characters, so a cut at a byte count could split one.
    let kid = "é".repeat(3 * 1024);
    assert_eq!(kid.len(), 6 * 1024);
    let good = token_with(&json!({"alg": "RS256", "kid": kid}), &c, "RS256");
    let r = gw.get_with_token("prod.test", "/api", &good);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40]);
    let refused = gw.get_with_token("prod.test", "/api", &forged);
    assert_eq!(refused.json()["error"], "bad_signature");
    for r in [r, refused] {
        let line = gw.audit_for(&request_id(&r));
        let logged = line["kid"].as_str().unwrap();
        assert!(logged.len() <= 128, "kid of {} bytes in the audit line", logged.len());
        assert!(!logged.is_empty() && kid.starts_with(logged), "the kept part is a prefix of the kid: {logged}");
    }
}

#[test]
fn check_refuses_empty_or_malformed_token_types() {
    let dir = Scratch::new("typ");
    let keys = jws::keys_dir().display().to_string();
    for (types, needle) in [("[]", "no token type"), (r#"["at jwt"]"#, "not a media type")] {
        let text = format!(
            "{PREAMBLE}[[issuers]]\nname = \"rsa\"\nissuer = \"https://rsa.test\"\nalgorithms = [\"RS256\"]\npublic_key_file = \"{keys}/rsa.pub.pem\"\ntoken_types = {types}\n[environments.prod]\nhosts = [\"prod.test\"]\ndefault_pool = \"p\"\n[pools.p]\nservers = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"api\"\npath_prefix = \"/\"\n"
        )
        .replace("@ADMIN@", "127.0.0.1:1")
        .replace("@LISTEN@", "127.0.0.1:0")
        .replace("@AUDIT@", "stdout");
        let path = dir.0.join("check.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_isogate"))
            .args(["check", "-c"])
            .arg(&path)
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{types}");
        assert!(stderr.contains("issuers[0].token_types") && stderr.contains(needle), "{types}: {stderr}");
    }
}

#[test]
fn an_issuer_without_audiences_refuses_any_aud_claim() {
    let ups = Upstreams::start(&["prod-shared"]);
    let open = HMAC_ISSUER.replace("audiences = [\"isogate-tests\"]\n", "");
    let config = format!(
        "{PREAMBLE}{open}[environments.prod]\nhosts = [\"prod.test\"]\ndefault_pool = \"p\"\n[pools.p]\nservers = [\"{}\"]\n[[routes]]\nname = \"api\"\npath_prefix = \"/api\"\n",
        ups.get("prod-shared").addr
    );
    let gw = Gateway::start(&config, &[]);
    let mut c = claims("prod", "acme");
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(gw.get_with_token("prod.test", "/api", &token("HS256", c.clone())).status, 200, "no aud: served");
    for aud in [json!("isogate-tests"), json!(0), json!(true), json!({}), json!([1]), json!(["x"]), json!(null)] {
        let mut with = c.clone();
        with["aud"] = aud.clone();
        let r = gw.get_with_token("prod.test", "/api", &token("HS256", with));
        assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("wrong_audience")), "aud {aud}");
    }
    assert_eq!(ups.get("prod-shared").count(), 1);
}
