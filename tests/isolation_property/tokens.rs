//! The token pool: a few thousand tokens minted once from the seed, each with the
//! verdict the README promises for it. Every defective token carries exactly one defect,
//! so its refusal reason is determined. Signing keys are parsed once; RSA and EC tokens
//! are few, because each costs milliseconds to sign and (uncached) to verify in a debug
//! build.

use std::collections::HashMap;

use hmac::Hmac;
use serde_json::{json, Value};
use sha2::{Sha256, Sha384, Sha512};

use crate::common::jws::{b64, hmac, hmac_secret, keys_dir, now};
use crate::config::{AUDIENCE, PARTNER_AUDIENCE};
use crate::rng::Rng;

/// Verified claims, as the model expects the gateway to read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub issuer: &'static str,
    pub env: Option<String>,
    pub tenant: Option<String>,
    pub sub: Option<String>,
    pub roles: Vec<String>,
    pub test: bool,
}

/// What the gateway must make of a token.
#[derive(Debug, Clone)]
pub enum Verdict {
    Valid(Claims),
    Refused(&'static str),
}

/// One minted token.
#[derive(Debug)]
pub struct Minted {
    pub token: String,
    /// Whether it is made of the compact JWS alphabet only.
    pub compact: bool,
    /// What was done to it, for failure reports.
    pub what: String,
    pub verdict: Verdict,
}

/// Signing keys, parsed once.
pub struct Keys {
    hmac: Vec<u8>,
    pub partner: Vec<u8>,
    foreign: Vec<u8>,
    rsa: rsa::pkcs1v15::SigningKey<Sha256>,
    rsa_foreign: rsa::pkcs1v15::SigningKey<Sha256>,
    ec: p256::ecdsa::SigningKey,
    rsa_public_pem: Vec<u8>,
}

impl Keys {
    /// The fixture keys, and a partner secret derived from the seed.
    pub fn load(rng: &mut Rng) -> Self {
        use p256::pkcs8::DecodePrivateKey as _;
        let pem = |f: &str| std::fs::read_to_string(keys_dir().join(f)).unwrap();
        let rsa_key = |f: &str| rsa::pkcs1v15::SigningKey::new(rsa::RsaPrivateKey::from_pkcs8_pem(&pem(f)).unwrap());
        let partner: String = (0..48).map(|_| char::from(b"0123456789abcdef"[rng.below(16)])).collect();
        Self {
            hmac: hmac_secret(),
            partner: partner.into_bytes(),
            foreign: b"a-secret-no-configured-issuer-knows-0123456789".to_vec(),
            rsa: rsa_key("rsa.key.pem"),
            rsa_foreign: rsa_key("rsa2.key.pem"),
            ec: p256::ecdsa::SigningKey::from_pkcs8_pem(&pem("ec256.key.pem")).unwrap(),
            rsa_public_pem: std::fs::read(keys_dir().join("rsa.pub.pem")).unwrap(),
        }
    }
}

/// Which key signs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signer {
    Hmac,
    Partner,
    Rsa,
    Ec,
    Foreign,
    RsaForeign,
    /// HS256 keyed with the RSA issuer's public key: the classic confusion attack.
    RsaPublicAsSecret,
    /// Random bytes.
    Junk,
}

impl Signer {
    fn iss(self) -> &'static str {
        match self {
            Signer::Hmac | Signer::Foreign | Signer::Junk => "https://hmac.test",
            Signer::Partner => "https://partner.test",
            Signer::Rsa | Signer::RsaForeign | Signer::RsaPublicAsSecret => "https://rsa.test",
            Signer::Ec => "https://ec256.test",
        }
    }

    fn issuer(self) -> &'static str {
        match self {
            Signer::Partner => "partner",
            Signer::Rsa | Signer::RsaForeign | Signer::RsaPublicAsSecret => "rsa",
            Signer::Ec => "ec",
            _ => "hmac",
        }
    }

    fn alg(self) -> &'static str {
        match self {
            Signer::Partner => "HS384",
            Signer::Rsa | Signer::RsaForeign => "RS256",
            Signer::Ec => "ES256",
            _ => "HS256",
        }
    }
}

fn sign(keys: &Keys, signer: Signer, alg: &str, input: &[u8]) -> Vec<u8> {
    use rsa::signature::{SignatureEncoding, Signer as _};
    let secret = match signer {
        Signer::Rsa => return keys.rsa.sign(input).to_vec(),
        Signer::RsaForeign => return keys.rsa_foreign.sign(input).to_vec(),
        Signer::Ec => {
            let s: p256::ecdsa::Signature = keys.ec.sign(input);
            return s.to_bytes().to_vec();
        }
        Signer::Junk => return b"not a signature at all, just bytes".to_vec(),
        Signer::Hmac => &keys.hmac,
        Signer::Partner => &keys.partner,
        Signer::Foreign => &keys.foreign,
        Signer::RsaPublicAsSecret => &keys.rsa_public_pem,
    };
    match alg {
        "HS384" => hmac::<Hmac<Sha384>>(secret, input),
        "HS512" => hmac::<Hmac<Sha512>>(secret, input),
        _ => hmac::<Hmac<Sha256>>(secret, input),
    }
}

fn compact(keys: &Keys, signer: Signer, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let alg = header["alg"].as_str().unwrap_or("HS256");
    let sig = if alg == "none" { Vec::new() } else { sign(keys, signer, alg, input.as_bytes()) };
    format!("{input}.{}", b64(&sig))
}

const ENV_CLAIMS: &[(u32, Option<&str>)] = &[
    (25, Some("dev")),
    (25, Some("stage")),
    (25, Some("prod")),
    (15, Some("qa")),
    (3, Some("PROD")),
    (3, None),
    (2, Some("staging")),
    (2, Some("from_token")),
];
/// Tenant claims: mapped somewhere, unmapped, an integer, and values that are valid
/// claims but unsafe in a template.
const TENANTS: &[(u32, Option<&str>)] = &[
    (14, Some("acme")),
    (10, Some("initech")),
    (16, Some("globex")),
    (8, Some("umbrella")),
    (8, Some("hooli")),
    (4, Some("wayne")),
    (6, Some("42")),
    (3, Some("Globex")),
    (3, Some("../x")),
    (2, Some("t.1")),
    (2, Some("x-isogate-tenant")),
    (2, Some("globex;x")),
    (2, Some("%2e%2e")),
    (2, Some("LONG")),
    (8, None),
];
const SUBS: &[(u32, Option<&str>)] = &[
    (40, Some("user-N")),
    (25, Some("svc_bot")),
    (10, Some("admin")),
    (10, Some("u.x@example.com")),
    (10, Some("Ops")),
    (5, None),
];
const ROLES: &[&str] = &["user", "admin", "ops", "support", "analyst", "guest", "dev"];

/// A valid claim set for `signer`, as JSON and as the model reads it.
fn valid_claims(rng: &mut Rng, signer: Signer, n: usize) -> (Value, Claims) {
    let now = now();
    let mut c = json!({"iss": signer.iss(), "aud": AUDIENCE, "iat": now, "exp": now + 7200, "jti": format!("n{n}")});
    match rng.below(10) {
        0 if signer == Signer::Partner => c["aud"] = json!(PARTNER_AUDIENCE),
        1 => c["aud"] = json!(["someone-else", AUDIENCE]),
        2 => c["nbf"] = json!(now - 60),
        _ => {}
    }
    let env = *rng.weighted(ENV_CLAIMS);
    if let Some(e) = env {
        c["env"] = json!(e);
    }
    let tenant = rng.weighted(TENANTS).map(|t| if t == "LONG" { "a".repeat(100) } else { t.to_owned() });
    match tenant.as_deref() {
        Some("42") => c["tenant"] = json!(42),
        Some(t) => c["tenant"] = json!(t),
        None => {}
    }
    let sub = rng.weighted(SUBS).map(|s| s.replace('N', &n.to_string()));
    if let Some(s) = &sub {
        c["sub"] = json!(s);
    }
    let roles: Vec<String> = (0..rng.below(4)).map(|_| (*rng.pick(ROLES)).to_owned()).collect();
    match rng.below(10) {
        0 => c["roles"] = json!(roles.join(" ")),
        1 if roles.is_empty() => {}
        _ => c["roles"] = json!(roles),
    }
    let test = rng.below(10) == 0;
    if test {
        c["is_test_account"] = json!(true);
    } else if rng.below(20) == 0 {
        c["is_test_account"] = json!(false);
    }
    let claims = Claims { issuer: signer.issuer(), env: env.map(str::to_owned), tenant, sub, roles, test };
    (c, claims)
}

/// One defect applied to a valid claim set.
struct Defect {
    header: Value,
    signer: Signer,
    /// The reason the README gives for refusing it.
    reason: &'static str,
    what: &'static str,
    /// A token built by hand instead of signing `header` and the claims.
    token: Option<String>,
}

fn defect(rng: &mut Rng, keys: &Keys, c: &mut Value, signer: Signer) -> Defect {
    let now = now();
    let mut header = json!({"alg": signer.alg(), "typ": "JWT"});
    let mut token = None;
    let foreign = if signer == Signer::Rsa { Signer::RsaForeign } else { Signer::Foreign };
    let other_family = if signer == Signer::Rsa { "ES256" } else { "RS256" };
    let ((), signer, reason, what) = match rng.below(17) {
        0 => (c["exp"] = json!(now - 3600), signer, "token_expired", "expired"),
        1 => (c["nbf"] = json!(now + 3600), signer, "token_not_yet_valid", "not yet valid"),
        2 => ((), foreign, "bad_signature", "signed with a foreign key"),
        3 => (c["iss"] = json!("https://evil.test"), signer, "wrong_issuer", "unknown issuer"),
        4 => (remove(c, "iss"), signer, "claim_missing", "no iss"),
        5 => (header["alg"] = json!("HS512"), signer, "algorithm_not_allowed", "HS512, not on the issuer's list"),
        6 => {
            header["alg"] = json!("HS256");
            c["iss"] = json!("https://rsa.test");
            ((), Signer::RsaPublicAsSecret, "algorithm_not_allowed", "HS256 keyed with the RSA public key")
        }
        7 => (header["alg"] = json!(*rng.pick(&["none", "None", "NONE"])), signer, "algorithm_not_allowed", "alg none"),
        8 => (header["alg"] = json!(other_family), Signer::Junk, "algorithm_not_allowed", "another key family's alg"),
        9 => (c["aud"] = json!("someone-else"), signer, "wrong_audience", "wrong audience"),
        10 => (remove(c, "aud"), signer, "claim_missing", "no aud"),
        11 => (remove(c, "exp"), signer, "claim_missing", "no exp"),
        12 | 13 => {
            let (key, value) = hostile_claim(rng);
            c[key] = value;
            ((), signer, "claim_invalid", "hostile claim")
        }
        14 => {
            let key = *rng.pick(&["jku", "x5u", "jwk", "x5c", "crit"]);
            header[key] = if key == "jku" || key == "x5u" { json!("https://evil.test/keys") } else { json!(["x"]) };
            ((), signer, "token_header_forbidden", "key-bearing header")
        }
        15 => (c["iss"] = json!(42), signer, "claim_invalid", "iss is a number"),
        _ => {
            // Signed, then the payload swapped for one naming another tenant: the
            // signature no longer covers it.
            let signed = compact(keys, signer, &header, c);
            c["tenant"] = json!("globex");
            c["roles"] = json!(["admin"]);
            c["jti"] = json!(format!("{}-changed", c["jti"].as_str().unwrap_or("")));
            let (head, rest) = signed.split_once('.').unwrap();
            let sig = rest.split_once('.').unwrap().1;
            token = Some(format!("{head}.{}.{sig}", b64(c.to_string().as_bytes())));
            ((), signer, "bad_signature", "tampered payload")
        }
    };
    Defect { header, signer, reason, what, token }
}

fn remove(c: &mut Value, key: &str) {
    c.as_object_mut().unwrap().remove(key);
}

fn hostile_claim(rng: &mut Rng) -> (&'static str, Value) {
    match rng.below(14) {
        0 => ("tenant", json!("a b")),
        1 => ("tenant", json!("é")),
        2 => ("tenant", json!("x".repeat(300))),
        3 => ("tenant", json!("")),
        4 => ("tenant", json!("acme\r\nx-isogate-tenant: globex")),
        5 => ("tenant", json!({"id": 1})),
        6 => ("tenant", json!(1.5)),
        7 => ("env", json!(["prod"])),
        8 => ("env", json!("prod ")),
        9 => ("sub", json!(7)),
        10 => ("roles", json!(["admin,ops"])),
        11 => ("roles", json!(vec!["r"; 70])),
        12 => ("roles", json!([1])),
        _ => ("is_test_account", json!("yes")),
    }
}

/// Strings that are not tokens at all, with the reason for each.
const GARBAGE: &[(&str, &str)] = &[
    ("abc", "token_malformed"),
    ("a.b.c", "token_malformed"),
    ("e30.e30.c2ln", "token_malformed"),
    ("a.b.c.d", "token_malformed"),
    ("..", "token_malformed"),
    ("abc+def/ghi=", "token_malformed"),
    ("eyJhbGciOiJIUzI1NiJ9", "token_malformed"),
];

fn tail(token: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.as_bytes()[token.len().saturating_sub(24)..].hash(&mut h);
    h.finish()
}

/// The minted tokens, indexed for the generator and the model.
pub struct TokenPool {
    pub minted: Vec<Minted>,
    /// Minted tokens by a hash of their last bytes (the signature), which is cheaper
    /// than hashing whole tokens a million times in a debug build.
    by_tail: HashMap<u64, Vec<usize>>,
    /// Valid tokens by environment claim (`""` for none).
    pub valid_by_env: HashMap<String, Vec<usize>>,
    pub valid: Vec<usize>,
    pub cheap_bad: Vec<usize>,
    /// RSA and EC tokens that fail after signature work, so are never cached.
    pub costly_bad: Vec<usize>,
}

impl TokenPool {
    /// Mints the pool: mostly HMAC, a few dozen EC and a handful of RSA tokens.
    pub fn mint(rng: &mut Rng, keys: &Keys, scale: usize) -> Self {
        let mut pool = Self {
            minted: Vec::new(),
            by_tail: HashMap::new(),
            valid_by_env: HashMap::new(),
            valid: Vec::new(),
            cheap_bad: Vec::new(),
            costly_bad: Vec::new(),
        };
        let plan = [
            (Signer::Hmac, scale * 3, scale),
            (Signer::Partner, scale, scale / 3),
            (Signer::Ec, scale / 25, 4),
            (Signer::Rsa, 6, 4),
        ];
        for (signer, valid, bad) in plan {
            for _ in 0..valid {
                let n = pool.minted.len();
                let (c, claims) = valid_claims(rng, signer, n);
                let token = compact(keys, signer, &json!({"alg": signer.alg(), "typ": "JWT", "kid": "k1"}), &c);
                pool.push(token, format!("{} valid", signer.alg()), Verdict::Valid(claims));
            }
            for _ in 0..bad {
                let n = pool.minted.len();
                let (mut c, _) = valid_claims(rng, signer, n);
                let d = defect(rng, keys, &mut c, signer);
                let token = d.token.unwrap_or_else(|| compact(keys, d.signer, &d.header, &c));
                pool.push(token, format!("{}: {}", signer.alg(), d.what), Verdict::Refused(d.reason));
            }
        }
        for (g, reason) in GARBAGE {
            pool.push((*g).to_owned(), "garbage".to_owned(), Verdict::Refused(reason));
        }
        pool.push("e".repeat(9000), "oversized".to_owned(), Verdict::Refused("token_too_large"));
        pool
    }

    fn push(&mut self, token: String, what: String, verdict: Verdict) {
        let i = self.minted.len();
        let costly = what.starts_with("RS256") || what.starts_with("ES256");
        match &verdict {
            Verdict::Valid(c) => {
                self.valid.push(i);
                self.valid_by_env.entry(c.env.clone().unwrap_or_default()).or_default().push(i);
            }
            Verdict::Refused(_) if costly => self.costly_bad.push(i),
            Verdict::Refused(_) => self.cheap_bad.push(i),
        }
        assert!(self.find(&token).is_none(), "token minted twice");
        self.by_tail.entry(tail(&token)).or_default().push(i);
        let compact = token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        self.minted.push(Minted { token, compact, what, verdict });
    }

    /// The token with this text, if it was minted.
    pub fn find(&self, token: &str) -> Option<&Minted> {
        let candidates = self.by_tail.get(&tail(token))?;
        candidates.iter().map(|i| &self.minted[*i]).find(|m| m.token == token)
    }
}
