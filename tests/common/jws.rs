//! Token minting for tests, independent of the verification path: compact JWS built
//! by hand from fixture keys with the RustCrypto signers directly.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Sha256, Sha384, Sha512};
use std::time::{SystemTime, UNIX_EPOCH};

/// Fixture key directory.
pub fn keys_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

fn key(name: &str) -> String {
    std::fs::read_to_string(keys_dir().join(name)).unwrap()
}

/// The HMAC fixture secret.
pub fn hmac_secret() -> Vec<u8> {
    std::fs::read(keys_dir().join("hmac.secret")).unwrap()
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The fixture private key file used for `alg` by default.
pub fn default_key(alg: &str) -> &'static str {
    match alg {
        "RS256" | "PS256" => "rsa.key.pem",
        "ES256" => "ec256.key.pem",
        "ES384" => "ec384.key.pem",
        "EdDSA" => "ed25519.key.pem",
        _ => "hmac.secret",
    }
}

/// Signs `header.payload` with the fixture key for `alg`.
pub fn sign(alg: &str, signing_input: &[u8]) -> Vec<u8> {
    sign_with(alg, default_key(alg), signing_input)
}

/// Signs `header.payload` with fixture private key `key_file`.
pub fn sign_with(alg: &str, key_file: &str, signing_input: &[u8]) -> Vec<u8> {
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
    use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
    match alg {
        "HS256" => hmac::<Hmac<Sha256>>(&hmac_secret(), signing_input),
        "HS384" => hmac::<Hmac<Sha384>>(&hmac_secret(), signing_input),
        "HS512" => hmac::<Hmac<Sha512>>(&hmac_secret(), signing_input),
        "RS256" => {
            let k = rsa::RsaPrivateKey::from_pkcs8_pem(&key(key_file)).unwrap();
            rsa::pkcs1v15::SigningKey::<Sha256>::new(k).sign(signing_input).to_vec()
        }
        "PS256" => {
            let k = rsa::RsaPrivateKey::from_pkcs8_pem(&key(key_file)).unwrap();
            rsa::pss::SigningKey::<Sha256>::new(k).sign_with_rng(&mut rand08::thread_rng(), signing_input).to_vec()
        }
        "ES256" => {
            let k = p256::ecdsa::SigningKey::from_pkcs8_pem(&key(key_file)).unwrap();
            let s: p256::ecdsa::Signature = k.sign(signing_input);
            s.to_bytes().to_vec()
        }
        "ES384" => {
            let k = p384::ecdsa::SigningKey::from_pkcs8_pem(&key(key_file)).unwrap();
            let s: p384::ecdsa::Signature = k.sign(signing_input);
            s.to_bytes().to_vec()
        }
        "EdDSA" => {
            let k = ed25519_dalek::SigningKey::from_pkcs8_pem(&key(key_file)).unwrap();
            k.sign(signing_input).to_bytes().to_vec()
        }
        other => panic!("no fixture key for {other}"),
    }
}

pub fn hmac<M: Mac + hmac::digest::KeyInit>(secret: &[u8], input: &[u8]) -> Vec<u8> {
    let mut m = <M as hmac::digest::KeyInit>::new_from_slice(secret).unwrap();
    m.update(input);
    m.finalize().into_bytes().to_vec()
}

/// A compact JWS over arbitrary header and claims, signed by `sign_alg`'s fixture key.
pub fn token_with(header: &Value, claims: &Value, sign_alg: &str) -> String {
    token_signed(header, claims, sign_alg, default_key(sign_alg))
}

/// A compact JWS signed with fixture private key `key_file`.
pub fn token_signed(header: &Value, claims: &Value, alg: &str, key_file: &str) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = sign_with(alg, key_file, input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

/// The issuer URL the test config gives the fixture key of `alg`.
pub fn issuer_for(alg: &str) -> &'static str {
    match alg {
        "HS256" | "HS384" | "HS512" => "https://hmac.test",
        "RS256" | "PS256" => "https://rsa.test",
        "ES256" => "https://ec256.test",
        "ES384" => "https://ec384.test",
        "EdDSA" => "https://ed.test",
        _ => "https://unknown.test",
    }
}

/// Standard claims for `env` and `tenant`, valid for an hour.
pub fn claims(env: &str, tenant: &str) -> Value {
    json!({
        "iss": "https://rsa.test",
        "aud": "isogate-tests",
        "exp": now() + 3600,
        "iat": now(),
        "env": env,
        "tenant": tenant,
        "sub": "user-1",
        "roles": ["user"],
    })
}

/// A valid token for `alg` with `claims` (its `iss` set to that algorithm's issuer).
pub fn token(alg: &str, mut claims: Value) -> String {
    claims["iss"] = json!(issuer_for(alg));
    token_with(&json!({"alg": alg, "typ": "JWT", "kid": "k1"}), &claims, alg)
}
