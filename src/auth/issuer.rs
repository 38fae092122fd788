//! One trusted token issuer: its `iss`, its keys, the algorithms and token types it may
//! use.
//!
//! Compile-time rules keep algorithm confusion out: HMAC (`HS*`) never shares an issuer
//! with a public-key algorithm, an HMAC issuer needs a secret and a public-key issuer a
//! PEM key or a JWKS, and `none` cannot be configured. A JWKS issuer may mix RSA, PSS,
//! EC and EdDSA (one IdP signing with several key types); a `public_key_file` holds one
//! key of one type, so its algorithms must all fit that type. At request time the
//! token's `alg` must be in the list and fit the type of the key its `kid` names (see
//! `jwks::KeySet::find`), and jsonwebtoken checks the key type once more.
//!
//! `token_types`, when set, is the allow-list of JWS `typ` values (RFC 9068 access tokens
//! are `at+jwt`), compared case-insensitively with the optional `application/` prefix.

mod load;

use std::hash::BuildHasher;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use toml::Spanned;

use super::jwks::RemoteKeys;
use super::token::Peeked;
use super::AuthError;
use crate::config::{file, ConfigError, EnvLookup, Source};

/// A compiled issuer.
pub struct Issuer {
    /// Short name from the config, for logs and audit lines.
    pub name: Box<str>,
    /// The exact `iss` value.
    pub iss: Box<str>,
    keys: IssuerKeys,
    /// One validation per allowed algorithm (jsonwebtoken takes the algorithm from it).
    validations: Box<[(Algorithm, Validation)]>,
    /// Clock leeway for `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// Everything a verification depends on besides the keys, to tell whether a token
    /// verified under an earlier configuration would still pass.
    rules: Rules,
}

/// The settings of an issuer that decide whether a token passes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rules {
    audiences: Box<[String]>,
    algorithms: Box<[Algorithm]>,
    /// Accepted `typ` values, lower case and without `application/`; `None` accepts any.
    token_types: Option<Box<[Box<str>]>>,
    leeway: u64,
}

/// Where an issuer's verification keys come from.
pub(crate) enum IssuerKeys {
    /// One key from the config (PEM file or HMAC secret) and the fingerprint of its bytes.
    Static(DecodingKey, u64),
    /// A JWKS fetched and refreshed in the background.
    Remote(Arc<RemoteKeys>),
}

/// A fingerprint of static key material, keyed per process (it never leaves memory).
pub(crate) fn fingerprint(material: &[u8]) -> u64 {
    static HASHER: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    HASHER.get_or_init(Default::default).hash_one(material)
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("name", &self.name).field("iss", &self.iss).field("rules", &self.rules).finish()
    }
}

/// Payload claims of a verified token.
pub(crate) type Claims = serde_json::Map<String, serde_json::Value>;

/// `typ` without the optional `application/` prefix (RFC 7515 section 4.1.9).
fn media_type(typ: &str) -> &str {
    const PREFIX: &[u8] = b"application/";
    match typ.as_bytes().get(..PREFIX.len()) {
        Some(p) if p.eq_ignore_ascii_case(PREFIX) => typ.get(PREFIX.len()..).unwrap_or(typ),
        _ => typ,
    }
}

impl Issuer {
    /// Verifies `alg`, `typ`, signature, `iss`, `aud`, `exp` and `nbf`; returns the claims
    /// and the identity of the key that verified them.
    pub(crate) fn verify(&self, peeked: &Peeked<'_>) -> Result<(Claims, u64), AuthError> {
        let alg = Algorithm::from_str(&peeked.alg).map_err(|_| AuthError::AlgorithmNotAllowed)?;
        let (_, validation) = self.validations.iter().find(|(a, _)| *a == alg).ok_or(AuthError::AlgorithmNotAllowed)?;
        if !self.accepts_type(peeked.typ.as_deref()) {
            return Err(AuthError::WrongTokenType);
        }
        let decode = |key: &DecodingKey| {
            let claims = jsonwebtoken::decode::<Claims>(peeked.token, key, validation)
                .map(|data| data.claims)
                .map_err(|e| map_error(e.kind()))?;
            // jsonwebtoken lets an `aud` it cannot read (a number, an object) through when
            // no audience is configured; an issuer without audiences refuses any `aud`.
            if self.rules.audiences.is_empty() && claims.contains_key("aud") {
                return Err(AuthError::WrongAudience);
            }
            Ok(claims)
        };
        match &self.keys {
            IssuerKeys::Static(key, id) => Ok((decode(key)?, *id)),
            IssuerKeys::Remote(remote) => {
                let set = remote.current();
                let entry = remote.key_for(&set, peeked.kid.as_deref(), alg)?;
                Ok((decode(&entry.key)?, entry.id))
            }
        }
    }

    /// Whether a token typed `typ` may be used here.
    fn accepts_type(&self, typ: Option<&str>) -> bool {
        match (&self.rules.token_types, typ) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(types), Some(typ)) => {
                let typ = media_type(typ);
                types.iter().any(|t| t.eq_ignore_ascii_case(typ))
            }
        }
    }

    /// Whether the key that verified a cached token is still trusted.
    pub(crate) fn holds_key(&self, key_id: u64) -> bool {
        match &self.keys {
            IssuerKeys::Static(_, id) => key_id == *id,
            IssuerKeys::Remote(remote) => remote.ready() && remote.current().holds(key_id),
        }
    }

    /// Whether a token that `previous` verified would pass here too: same name, `iss`,
    /// audiences, algorithms, token types, leeway and key source (static key bytes, or
    /// JWKS location and fetch settings).
    pub(crate) fn same_rules(&self, previous: &Issuer) -> bool {
        let same_keys = match (&self.keys, &previous.keys) {
            (IssuerKeys::Static(_, a), IssuerKeys::Static(_, b)) => a == b,
            (IssuerKeys::Remote(a), IssuerKeys::Remote(b)) => Arc::ptr_eq(a, b) || a.same_source(b),
            _ => false,
        };
        self.name == previous.name && self.iss == previous.iss && self.rules == previous.rules && same_keys
    }

    /// Keeps `previous`'s key cache when it fetches the same keys the same way.
    pub(crate) fn adopt_keys(&mut self, previous: &Issuer) {
        if let (IssuerKeys::Remote(new), Some(old)) = (&self.keys, previous.remote()) {
            if new.same_source(old) {
                self.keys = IssuerKeys::Remote(Arc::clone(old));
            }
        }
    }

    /// The issuer's JWKS cache, when its keys are fetched.
    pub fn remote(&self) -> Option<&Arc<RemoteKeys>> {
        match &self.keys {
            IssuerKeys::Remote(r) => Some(r),
            IssuerKeys::Static(..) => None,
        }
    }

    /// Compiles `[[issuers]]` entry `index`.
    pub(crate) fn compile(
        index: usize,
        raw: &file::Issuer,
        default_leeway: u64,
        source: &Source,
        env: EnvLookup<'_>,
    ) -> Result<Self, Vec<ConfigError>> {
        let key_path = format!("issuers[{index}]");
        let mut errors = Vec::new();
        if raw.name.get_ref().trim().is_empty() {
            errors.push(ConfigError::at(
                raw.name.span(),
                format!("{key_path}.name"),
                "the name is empty",
                "give the issuer a short name such as `corp-idp`",
            ));
        }
        if raw.issuer.get_ref().is_empty() {
            errors.push(ConfigError::at(
                raw.issuer.span(),
                format!("{key_path}.issuer"),
                "the issuer is empty",
                "set it to the exact `iss` value of the tokens",
            ));
        }
        let algorithms = parse_algorithms(&raw.algorithms, &key_path, &mut errors);
        let token_types = raw.token_types.as_ref().map(|t| parse_token_types(t, &key_path, &mut errors));
        let keys = (!algorithms.is_empty())
            .then(|| load::keys(raw, &algorithms, &key_path, source, env, &mut errors))
            .flatten();
        let (Some(keys), true) = (keys, errors.is_empty()) else {
            return Err(errors);
        };
        let leeway = raw.leeway_seconds.unwrap_or(default_leeway);
        let validations = algorithms
            .iter()
            .map(|alg| (*alg, validation(*alg, raw.issuer.get_ref(), &raw.audiences, leeway)))
            .collect();
        let rules =
            Rules { audiences: raw.audiences.clone().into(), algorithms: algorithms.into(), token_types, leeway };
        Ok(Self {
            name: raw.name.get_ref().as_str().into(),
            iss: raw.issuer.get_ref().as_str().into(),
            keys,
            validations,
            leeway,
            rules,
        })
    }
}

fn validation(alg: Algorithm, iss: &str, audiences: &[String], leeway: u64) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = leeway;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[iss]);
    if audiences.is_empty() {
        // jsonwebtoken then refuses any token that carries `aud`.
        v.set_required_spec_claims(&["exp", "iss"]);
    } else {
        v.set_audience(audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
    }
    v
}

fn parse_algorithms(
    raw: &Spanned<Vec<Spanned<String>>>,
    key_path: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<Algorithm> {
    const ALLOWED: &str = "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";
    if raw.get_ref().is_empty() {
        errors.push(ConfigError::at(
            raw.span(),
            format!("{key_path}.algorithms"),
            "no algorithm is allowed",
            format!("list the algorithms this issuer signs with, from: {ALLOWED}"),
        ));
        return Vec::new();
    }
    let mut algorithms = Vec::new();
    for (i, name) in raw.get_ref().iter().enumerate() {
        match Algorithm::from_str(name.get_ref()) {
            Ok(alg) => algorithms.push(alg),
            Err(_) => errors.push(ConfigError::at(
                name.span(),
                format!("{key_path}.algorithms[{i}]"),
                format!("`{}` is not a supported algorithm", name.get_ref()),
                format!("use one of: {ALLOWED} (`none` is never accepted)"),
            )),
        }
    }
    let hmac = |a: &Algorithm| a.family() == AlgorithmFamily::Hmac;
    if algorithms.iter().any(hmac) && !algorithms.iter().all(hmac) {
        errors.push(ConfigError::at(
            raw.span(),
            format!("{key_path}.algorithms"),
            "the algorithms mix key families, HMAC (HS*) with public-key algorithms, which invites algorithm confusion (RS256 -> HS256)",
            "declare HMAC algorithms in an issuer of their own, with secret_env or secret_file",
        ));
        return Vec::new();
    }
    algorithms
}

fn parse_token_types(raw: &Spanned<Vec<String>>, key_path: &str, errors: &mut Vec<ConfigError>) -> Box<[Box<str>]> {
    let key = format!("{key_path}.token_types");
    if raw.get_ref().is_empty() {
        errors.push(ConfigError::at(
            raw.span(),
            key.clone(),
            "no token type is accepted, so every token would be refused",
            "list the JWS `typ` values to accept, e.g. [\"at+jwt\"], or remove the key to accept any",
        ));
    }
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c);
    let mut types = Vec::new();
    for typ in raw.get_ref() {
        let bare = media_type(typ);
        if bare.is_empty() || !bare.chars().all(token_char) {
            errors.push(ConfigError::at(
                raw.span(),
                key.clone(),
                format!("`{typ}` is not a media type"),
                "write a JWS `typ` such as \"at+jwt\", \"application/at+jwt\" or \"JWT\"",
            ));
            continue;
        }
        types.push(bare.to_ascii_lowercase().into_boxed_str());
    }
    types.into()
}

fn map_error(kind: &jsonwebtoken::errors::ErrorKind) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        K::InvalidIssuer => AuthError::WrongIssuer,
        K::InvalidAudience => AuthError::WrongAudience,
        K::MissingRequiredClaim(_) => AuthError::ClaimMissing,
        K::InvalidClaimFormat(_) => AuthError::ClaimInvalid,
        K::InvalidAlgorithm | K::MissingAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
            AuthError::AlgorithmNotAllowed
        }
        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => AuthError::Malformed,
        // Signature failures and any crypto error fail closed the same way.
        _ => AuthError::BadSignature,
    }
}
