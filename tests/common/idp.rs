//! A controllable identity provider on loopback: serves a JWKS and an OpenID discovery
//! document, and can rotate keys, serve garbage, answer slowly, fail, or go down.
//! It counts every fetch, so tests can bound how often the gateway calls it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::jws::keys_dir;

/// What the IdP answers.
#[derive(Debug, Clone)]
pub struct IdpState {
    /// The JWKS body.
    pub jwks: String,
    /// Status of the JWKS answer.
    pub status: u16,
    /// `Cache-Control: max-age`, if any.
    pub max_age: Option<u64>,
    /// Delay before answering.
    pub delay: Duration,
    /// Close connections without answering.
    pub down: bool,
    /// The `issuer` in the discovery document.
    pub discovery_issuer: String,
    /// JWKS requests served so far.
    pub jwks_hits: usize,
    /// Discovery requests served so far.
    pub discovery_hits: usize,
}

pub struct Idp {
    pub addr: SocketAddr,
    state: Arc<Mutex<IdpState>>,
    _rt: tokio::runtime::Runtime,
}

impl Idp {
    /// Starts serving `keys` (a list of JWKs).
    pub fn start(keys: &[Value]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(IdpState {
            jwks: json!({ "keys": keys }).to_string(),
            status: 200,
            max_age: None,
            delay: Duration::ZERO,
            down: false,
            discovery_issuer: String::new(),
            jwks_hits: 0,
            discovery_hits: 0,
        }));
        let served = Arc::clone(&state);
        rt.spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut len = 0;
                    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf[len..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => len += n,
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..len]).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let (status, body, max_age, delay, down) = {
                        let mut s = state.lock().unwrap();
                        if path.starts_with("/.well-known/openid-configuration") {
                            s.discovery_hits += 1;
                            let doc = json!({"issuer": s.discovery_issuer, "jwks_uri": format!("http://{addr}/jwks")});
                            (200, doc.to_string(), None, s.delay, s.down)
                        } else {
                            s.jwks_hits += 1;
                            (s.status, s.jwks.clone(), s.max_age, s.delay, s.down)
                        }
                    };
                    if down {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    let cache = max_age.map(|a| format!("cache-control: max-age={a}\r\n")).unwrap_or_default();
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{cache}connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(resp.as_bytes()).await;
                });
            }
        });
        Self { addr, state, _rt: rt }
    }

    /// Changes what the IdP answers.
    pub fn set(&self, f: impl FnOnce(&mut IdpState)) {
        f(&mut self.state.lock().unwrap());
    }

    /// Serves these keys from now on.
    pub fn serve_keys(&self, keys: &[Value]) {
        self.set(|s| s.jwks = json!({ "keys": keys }).to_string());
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.lock().unwrap().jwks_hits
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    pub fn discovery_url(&self) -> String {
        format!("http://{}/.well-known/openid-configuration", self.addr)
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn pem(name: &str) -> String {
    std::fs::read_to_string(keys_dir().join(name)).unwrap()
}

/// The public JWK of fixture private key `key_file`, with `kid` and `alg`.
pub fn jwk(kid: &str, alg: &str, key_file: &str) -> Value {
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
    use rsa::traits::PublicKeyParts;
    let mut k = match alg {
        "RS256" | "PS256" => {
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem(key_file)).unwrap();
            json!({"kty": "RSA", "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())})
        }
        "ES256" => {
            let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem(key_file)).unwrap();
            let point = key.verifying_key().to_encoded_point(false);
            json!({"kty": "EC", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())})
        }
        "ES384" => {
            let key = p384::ecdsa::SigningKey::from_pkcs8_pem(&pem(key_file)).unwrap();
            let point = key.verifying_key().to_encoded_point(false);
            json!({"kty": "EC", "crv": "P-384", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())})
        }
        "EdDSA" => {
            let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem(key_file)).unwrap();
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.verifying_key().as_bytes())})
        }
        other => panic!("no JWK for {other}"),
    };
    k["kid"] = json!(kid);
    k["alg"] = json!(alg);
    k["use"] = json!("sig");
    k
}
