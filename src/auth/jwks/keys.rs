//! A fetched key set and the rules a JWK must meet to enter it: signature use only, a
//! key type that fits the issuer's algorithms, an `alg` (when given) from the issuer's
//! allow-list, and RSA moduli of at least 2048 bits. Symmetric (`oct`) keys are never
//! taken from a JWKS. `kid` is an opaque string.
//!
//! One set may hold keys of several types (RSA and EC, say); each key verifies only
//! tokens whose `alg` fits its type, and an EC key only the algorithm of its curve
//! (P-256: ES256, P-384: ES384), whether or not the JWK names its `alg`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use crate::auth::token::for_log;
use crate::auth::AuthError;

/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// One usable key.
#[derive(Clone)]
pub struct KeyEntry {
    /// The key id, if the JWK has one.
    pub kid: Option<String>,
    /// The algorithm the JWK is restricted to, if any.
    pub alg: Option<Algorithm>,
    /// Key family (RSA, EC, Ed).
    pub family: AlgorithmFamily,
    /// The verification key.
    pub key: DecodingKey,
    /// Stable identity of the key material, used to drop cached tokens it verified.
    pub id: u64,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

/// The keys held for an issuer.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<KeyEntry>,
    /// When the set was fetched (Unix milliseconds); 0 when never.
    pub fetched_at_ms: u64,
    /// Increments with every successful refresh.
    pub generation: u64,
}

impl KeySet {
    /// A set fetched at `fetched_at_ms`.
    pub fn new(keys: Vec<KeyEntry>, fetched_at_ms: u64, generation: u64) -> Self {
        Self { keys, fetched_at_ms, generation }
    }

    /// Whether the set has keys and is not older than `max_staleness`.
    pub fn usable(&self, now_ms: u64, max_staleness: Duration) -> bool {
        let max = u64::try_from(max_staleness.as_millis()).unwrap_or(u64::MAX);
        !self.keys.is_empty() && self.fetched_at_ms != 0 && now_ms.saturating_sub(self.fetched_at_ms) <= max
    }

    /// Whether a key with this identity is still in the set.
    pub fn holds(&self, id: u64) -> bool {
        self.keys.iter().any(|k| k.id == id)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token's `kid` and `alg`. Without a `kid`, the set must hold exactly
    /// one key of the right family.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<&KeyEntry, AuthError> {
        let entry = match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)).ok_or(AuthError::UnknownKid)?,
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.family == alg.family());
                match (fitting.next(), fitting.next()) {
                    (Some(only), None) => only,
                    (None, _) => return Err(AuthError::UnknownKid),
                    (Some(_), Some(_)) => return Err(AuthError::Malformed),
                }
            }
        };
        if entry.family != alg.family() || entry.alg.is_some_and(|a| a != alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        Ok(entry)
    }
}

/// Converts a parsed JWKS into usable keys; returns the keys and how many were skipped.
pub(super) fn usable_keys(set: &JwkSet, allowed: &[Algorithm]) -> (Vec<KeyEntry>, usize) {
    let mut keys = Vec::new();
    let mut skipped = 0;
    for jwk in &set.keys {
        match entry(jwk, allowed) {
            Ok(k) => keys.push(k),
            Err(why) => {
                skipped += 1;
                let kid = jwk.common.key_id.as_deref().map(for_log);
                log::warn!(target: "isogate::jwks", "skipping key {kid:?}: {why}");
            }
        }
    }
    (keys, skipped)
}

fn entry(jwk: &Jwk, allowed: &[Algorithm]) -> Result<KeyEntry, String> {
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return Err("its `use` is not `sig`".to_owned());
    }
    let (family, material) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = URL_SAFE_NO_PAD.decode(p.n.trim_end_matches('=')).map_err(|e| format!("bad modulus: {e}"))?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA modulus of {bits} bits is below {MIN_RSA_BITS}"));
            }
            (AlgorithmFamily::Rsa, format!("{}.{}", p.n, p.e))
        }
        AlgorithmParameters::EllipticCurve(p) => (AlgorithmFamily::Ec, format!("{}.{}", p.x, p.y)),
        AlgorithmParameters::OctetKeyPair(p) => (AlgorithmFamily::Ed, p.x.clone()),
        _ => return Err("its key type is not RSA, EC or OKP".to_owned()),
    };
    if !allowed.iter().any(|a| a.family() == family) {
        return Err(format!("a {family:?} key does not fit the issuer's algorithms"));
    }
    let curve_alg = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => Some(match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return Err(format!("EC curve {:?} is not supported", p.curve)),
        }),
        _ => None,
    };
    let alg = match &jwk.common.key_algorithm {
        None => curve_alg,
        Some(ka) => {
            let alg = jwt_algorithm(ka).ok_or_else(|| format!("`alg` {ka:?} is not a signature algorithm"))?;
            if !allowed.contains(&alg) || alg.family() != family || curve_alg.is_some_and(|c| c != alg) {
                return Err(format!("`alg` {alg:?} is not allowed for this issuer or does not fit the key"));
            }
            Some(alg)
        }
    };
    if alg.is_some_and(|a| !allowed.contains(&a)) {
        return Err(format!("its curve needs {alg:?}, which the issuer does not list"));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
    let mut h = DefaultHasher::new();
    (&jwk.common.key_id, material).hash(&mut h);
    Ok(KeyEntry { kid: jwk.common.key_id.clone(), alg, family, key, id: h.finish() })
}

fn jwt_algorithm(ka: &KeyAlgorithm) -> Option<Algorithm> {
    Some(match ka {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(json: &str) -> JwkSet {
        serde_json::from_str(json).unwrap()
    }

    const EC: &str = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"ec1","use":"sig","alg":"ES256"}"#;

    #[test]
    fn keeps_fitting_keys_and_skips_the_rest() {
        let small_rsa = r#"{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"tiny"}"#;
        let enc = EC.replace("\"sig\"", "\"enc\"").replace("ec1", "enc1");
        let oct = r#"{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}"#;
        let wrong_alg = EC.replace("ES256\"", "ES384\"").replace("ec1", "ec384");
        let json = format!(r#"{{"keys":[{EC},{small_rsa},{enc},{oct},{wrong_alg}]}}"#);
        let (keys, skipped) = usable_keys(&set(&json), &[Algorithm::ES256]);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ec1"));
        assert_eq!(skipped, 4);
    }

    #[test]
    fn lookup_by_kid_checks_alg_and_family() {
        let (keys, _) = usable_keys(&set(&format!(r#"{{"keys":[{EC}]}}"#)), &[Algorithm::ES256]);
        let s = KeySet::new(keys, 1, 1);
        assert!(s.find(Some("ec1"), Algorithm::ES256).is_ok());
        assert!(s.find(None, Algorithm::ES256).is_ok(), "one key of the family needs no kid");
        assert_eq!(s.find(Some("nope"), Algorithm::ES256).unwrap_err(), AuthError::UnknownKid);
        assert_eq!(s.find(Some("ec1"), Algorithm::RS256).unwrap_err(), AuthError::AlgorithmNotAllowed);
        assert_eq!(s.find(Some("ec1"), Algorithm::ES384).unwrap_err(), AuthError::AlgorithmNotAllowed);
    }

    #[test]
    fn staleness_bounds_use() {
        let (keys, _) = usable_keys(&set(&format!(r#"{{"keys":[{EC}]}}"#)), &[Algorithm::ES256]);
        let s = KeySet::new(keys, 10_000, 1);
        assert!(s.usable(15_000, Duration::from_secs(5)));
        assert!(!s.usable(15_001, Duration::from_secs(5)));
        assert!(!KeySet::default().usable(0, Duration::from_secs(5)));
    }
}
