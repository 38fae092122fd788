//! Identify: bearer extraction, the unverified JWS peek and `Authenticator::identify`
//! against a compiled gateway with one issuer per key family (`fixtures/identify.toml`).
//!
//! Input: either raw `Authorization` values, one per line; or `S` followed by a JWS
//! header and payload (JSON, one line each), which are signed here with the fixture HMAC
//! secret so that fuzzed claims get past the signature and reach claim mapping.
//!
//! Checked: nothing panics, and a token is accepted only if it is a single well-formed
//! bearer JWS with no key-carrying header, an allowed `alg`, the issuer's exact `iss`,
//! an acceptable `aud` and `exp`, and identity values that are safe to put in a header.
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use isogate::auth::{safe_value, Identity, MAX_ROLES};
use isogate_fuzz::{hmac_token, identify_snapshot, segment_json};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// `token.max_bytes` in the fixture.
const MAX_BYTES: usize = 4096;

/// The algorithms each fixture issuer allows, by `iss`.
const ALGORITHMS: [(&str, &[&str]); 5] = [
    ("https://hmac.fuzz.test", &["HS256", "HS384", "HS512"]),
    ("https://open.fuzz.test", &["HS256", "HS384", "HS512"]),
    ("https://rsa.fuzz.test", &["RS256", "PS256"]),
    ("https://ec.fuzz.test", &["ES256"]),
    ("https://ed.fuzz.test", &["EdDSA"]),
];

/// The audiences each fixture issuer accepts, by `iss` (none: `aud` is refused).
const AUDIENCES: [(&str, &[&str]); 2] =
    [("https://hmac.fuzz.test", &["isogate"]), ("https://ec.fuzz.test", &["isogate", "other"])];

fuzz_target!(|data: &[u8]| {
    let signed;
    let values: Vec<&[u8]> = match data.split_first() {
        Some((b'S', rest)) => {
            let (header, payload) = rest.split_at(rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len()));
            signed = format!("Bearer {}", hmac_token(header, payload.get(1..).unwrap_or_default()));
            vec![signed.as_bytes()]
        }
        Some(_) => data.split(|b| *b == b'\n').collect(),
        None => Vec::new(),
    };
    let auth = &identify_snapshot().auth;
    match auth.identify(values.iter().copied()) {
        Ok((identity, _)) => accepted(&values, &identity),
        Err(refusal) => {
            // The issuer a refusal names (for the audit line) is one the gateway has:
            // `issuer` indexes, so an id from anywhere else panics here.
            if let Some(id) = refusal.issuer {
                let _ = auth.issuer(id);
            }
        }
    }
});

/// Everything an accepted token must satisfy, checked independently of the gateway.
fn accepted(values: &[&[u8]], identity: &Identity) {
    assert_eq!(values.len(), 1, "accepted {} Authorization values", values.len());
    let value = values[0];
    assert!(value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer "), "accepted scheme of {value:?}");
    let token = value[7..].trim_ascii();
    assert!(token.len() <= MAX_BYTES, "accepted a token of {} bytes", token.len());
    assert!(token.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')), "alphabet: {token:?}");
    let token = std::str::from_utf8(token).expect("ASCII");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted {token}");
    assert!(!parts[2].is_empty(), "accepted an unsigned token");
    let header = segment_json(parts[0]).expect("accepted a header that is not JSON");
    let payload = segment_json(parts[1]).expect("accepted a payload that is not JSON");
    for forbidden in ["jku", "x5u", "jwk", "x5c", "crit"] {
        assert!(header.get(forbidden).is_none(), "accepted a header with `{forbidden}`: {header}");
    }
    let iss = payload.get("iss").and_then(Value::as_str).expect("accepted a token without a string iss");
    let issuer = identify_snapshot().auth.issuer(identity.issuer);
    assert_eq!(&*issuer.iss, iss, "verified by the wrong issuer");
    let alg = header.get("alg").and_then(Value::as_str).expect("accepted a token without alg");
    let allowed = ALGORITHMS.iter().find(|(i, _)| *i == iss).map(|(_, a)| *a).unwrap_or_default();
    assert!(allowed.contains(&alg), "accepted alg {alg} from {iss}");
    check_audience(iss, payload.get("aud"));
    check_times(&payload, identity, issuer.leeway);
    check_values(identity);
}

fn check_audience(iss: &str, aud: Option<&Value>) {
    let wanted = AUDIENCES.iter().find(|(i, _)| *i == iss).map(|(_, a)| *a).unwrap_or_default();
    let given: Vec<&str> = match aud {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().map(|v| v.as_str().expect("accepted a non-string aud entry")).collect(),
        Some(other) => panic!("accepted aud {other} from {iss}"),
    };
    if wanted.is_empty() {
        assert!(given.is_empty() && !matches!(aud, Some(Value::Array(_))), "accepted aud {aud:?} from {iss}");
    } else {
        assert!(given.iter().any(|a| wanted.contains(a)), "accepted aud {aud:?} from {iss}");
    }
}

fn check_times(payload: &Value, identity: &Identity, leeway: u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as f64;
    let exp = payload.get("exp").and_then(Value::as_f64).expect("accepted a token without a numeric exp");
    assert!(exp + leeway as f64 >= now, "accepted exp {exp} at {now}");
    if let Some(nbf) = payload.get("nbf").and_then(Value::as_f64) {
        assert!(nbf <= now + leeway as f64, "accepted nbf {nbf} at {now}");
    }
    if let Some(seconds) = identity.expires_at {
        assert_eq!(Some(seconds), payload.get("exp").and_then(Value::as_u64), "expires_at differs from exp");
    }
}

fn check_values(identity: &Identity) {
    for value in [&identity.environment, &identity.tenant, &identity.user, &identity.plan].into_iter().flatten() {
        assert!(safe_value(value), "unsafe identity value {value:?}");
    }
    assert!(identity.roles.len() <= MAX_ROLES, "{} roles", identity.roles.len());
    for role in &identity.roles {
        assert!(safe_value(role), "unsafe role {role:?}");
    }
}
