//! One trusted token issuer: its `iss`, its key and the algorithms it may use.
//!
//! Compile-time rules keep algorithm confusion out: every algorithm of an issuer is of
//! one family, an HMAC family needs a secret, a public-key family needs a PEM key, and
//! `none` cannot be configured. At request time the token's `alg` must be in the list,
//! and jsonwebtoken checks the key family once more.

use std::str::FromStr;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use toml::Spanned;

use std::sync::Arc;
use std::time::Duration;

use super::jwks::{JwksSettings, KeySource, RemoteKeys};
use super::token::Peeked;
use super::AuthError;
use crate::config::{file, ConfigError, EnvLookup, Source};

/// Smallest HMAC secret accepted, in bytes (RFC 7518 section 3.2 for HS256).
const MIN_SECRET_BYTES: usize = 32;

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
}

/// Where an issuer's verification keys come from.
pub(crate) enum IssuerKeys {
    /// One key from the config (PEM file or HMAC secret).
    Static(DecodingKey),
    /// A JWKS fetched and refreshed in the background.
    Remote(Arc<RemoteKeys>),
}

/// Identity of the only key of a static issuer (cached tokens never need dropping).
const STATIC_KEY_ID: u64 = 0;

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algs: Vec<_> = self.validations.iter().map(|(a, _)| a).collect();
        f.debug_struct("Issuer").field("name", &self.name).field("iss", &self.iss).field("algorithms", &algs).finish()
    }
}

/// Payload claims of a verified token.
pub(crate) type Claims = serde_json::Map<String, serde_json::Value>;

impl Issuer {
    /// Verifies signature, `alg`, `iss`, `aud`, `exp` and `nbf`, and returns the claims.
    /// Verifies signature, `alg`, `iss`, `aud`, `exp` and `nbf`; returns the claims and
    /// the identity of the key that verified them.
    pub(crate) fn verify(&self, peeked: &Peeked<'_>) -> Result<(Claims, u64), AuthError> {
        let alg = Algorithm::from_str(&peeked.alg).map_err(|_| AuthError::AlgorithmNotAllowed)?;
        let (_, validation) = self.validations.iter().find(|(a, _)| *a == alg).ok_or(AuthError::AlgorithmNotAllowed)?;
        let decode = |key: &DecodingKey| {
            jsonwebtoken::decode::<Claims>(peeked.token, key, validation)
                .map(|data| data.claims)
                .map_err(|e| map_error(e.kind()))
        };
        match &self.keys {
            IssuerKeys::Static(key) => Ok((decode(key)?, STATIC_KEY_ID)),
            IssuerKeys::Remote(remote) => {
                let set = remote.current();
                let entry = remote.key_for(&set, peeked.kid.as_deref(), alg)?;
                Ok((decode(&entry.key)?, entry.id))
            }
        }
    }

    /// Whether the key that verified a cached token is still trusted.
    pub(crate) fn holds_key(&self, key_id: u64) -> bool {
        match &self.keys {
            IssuerKeys::Static(_) => key_id == STATIC_KEY_ID,
            IssuerKeys::Remote(remote) => remote.ready() && remote.current().holds(key_id),
        }
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
            IssuerKeys::Static(_) => None,
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
        let keys = algorithms
            .first()
            .and_then(|first| load_keys(raw, &algorithms, first.family(), &key_path, source, env, &mut errors));
        let (Some(keys), true) = (keys, errors.is_empty()) else {
            return Err(errors);
        };
        let leeway = raw.leeway_seconds.unwrap_or(default_leeway);
        let validations = algorithms
            .iter()
            .map(|alg| (*alg, validation(*alg, raw.issuer.get_ref(), &raw.audiences, leeway)))
            .collect();
        Ok(Self {
            name: raw.name.get_ref().as_str().into(),
            iss: raw.issuer.get_ref().as_str().into(),
            keys,
            validations,
            leeway,
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
    if let Some(first) = algorithms.first() {
        if algorithms.iter().any(|a| a.family() != first.family()) {
            errors.push(ConfigError::at(
                raw.span(),
                format!("{key_path}.algorithms"),
                "the algorithms mix key families (e.g. HS256 with RS256), which invites algorithm confusion",
                "declare one issuer per key: HMAC algorithms with a secret, public-key algorithms with a key file",
            ));
        }
    }
    algorithms
}

fn load_keys(
    raw: &file::Issuer,
    algorithms: &[Algorithm],
    family: jsonwebtoken::AlgorithmFamily,
    key_path: &str,
    source: &Source,
    env: EnvLookup<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<IssuerKeys> {
    let sources = [
        raw.public_key_file.is_some(),
        raw.secret_env.is_some(),
        raw.secret_file.is_some(),
        raw.jwks_url.is_some(),
        raw.discovery_url.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        errors.push(ConfigError::at(
            raw.name.span(),
            key_path,
            "an issuer needs exactly one of public_key_file, secret_env, secret_file, jwks_url, discovery_url",
            "keep the one that matches its algorithms",
        ));
        return None;
    }
    if raw.jwks_url.is_some() || raw.discovery_url.is_some() {
        return remote_keys(raw, algorithms, family, key_path, source, errors).map(|r| IssuerKeys::Remote(Arc::new(r)));
    }
    load_key(raw, family, key_path, source, env, errors).map(IssuerKeys::Static)
}

fn remote_keys(
    raw: &file::Issuer,
    algorithms: &[Algorithm],
    family: jsonwebtoken::AlgorithmFamily,
    key_path: &str,
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> Option<RemoteKeys> {
    let (field, url, key_source) = match (&raw.jwks_url, &raw.discovery_url) {
        (Some(u), _) => ("jwks_url", u, KeySource::Jwks(u.get_ref().clone())),
        (_, Some(u)) => ("discovery_url", u, KeySource::Discovery(u.get_ref().clone())),
        _ => return None,
    };
    if family == jsonwebtoken::AlgorithmFamily::Hmac {
        errors.push(ConfigError::at(
            url.span(),
            format!("{key_path}.{field}"),
            "HMAC secrets are never taken from a JWKS",
            "use secret_env or secret_file for HS* algorithms",
        ));
        return None;
    }
    if !(url.get_ref().starts_with("https://") || url.get_ref().starts_with("http://"))
        || url.get_ref().parse::<http::Uri>().is_err()
    {
        errors.push(ConfigError::at(
            url.span(),
            format!("{key_path}.{field}"),
            format!("`{}` is not an http(s) URL", url.get_ref()),
            "write e.g. \"https://idp.example.com/.well-known/jwks.json\"",
        ));
        return None;
    }
    let secs = |s: u64| Duration::from_secs(s);
    let settings = JwksSettings {
        fetch_timeout: Duration::from_millis(raw.fetch_timeout_ms.max(1)),
        refresh_min: secs(raw.refresh_min_seconds.max(1)),
        refresh_max: secs(raw.refresh_max_seconds.max(raw.refresh_min_seconds).max(1)),
        max_staleness: secs(raw.max_staleness_seconds),
        unknown_kid_cooldown: secs(raw.unknown_kid_cooldown_seconds),
    };
    let mut builder = reqwest::Client::builder().use_rustls_tls().connect_timeout(settings.fetch_timeout);
    if let Some(ca) = &raw.ca_file {
        let path = source.resolve(ca.get_ref());
        let cert = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|pem| reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string()));
        match cert {
            Ok(cert) => builder = builder.add_root_certificate(cert),
            Err(e) => {
                errors.push(ConfigError::at(
                    ca.span(),
                    format!("{key_path}.ca_file"),
                    format!("cannot use {} as a CA certificate: {e}", path.display()),
                    "point it at a PEM CA certificate",
                ));
                return None;
            }
        }
    }
    let client = builder
        .build()
        .map_err(|e| {
            errors.push(ConfigError::at(
                url.span(),
                key_path,
                format!("cannot build the HTTPS client: {e}"),
                "check ca_file",
            ))
        })
        .ok()?;
    let ca_path = raw.ca_file.as_ref().map(|c| source.resolve(c.get_ref()));
    Some(RemoteKeys::new(raw.name.get_ref(), raw.issuer.get_ref(), key_source, algorithms, settings, client, ca_path))
}

fn load_key(
    raw: &file::Issuer,
    family: jsonwebtoken::AlgorithmFamily,
    key_path: &str,
    source: &Source,
    env: EnvLookup<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<DecodingKey> {
    use jsonwebtoken::AlgorithmFamily as F;
    match (family, &raw.public_key_file) {
        (F::Hmac, Some(pem)) => {
            errors.push(ConfigError::at(
                pem.span(),
                format!("{key_path}.public_key_file"),
                "HMAC algorithms cannot be verified with a public key (this is the RS256→HS256 confusion attack)",
                "use secret_env or secret_file for HS*, or list RS*/PS*/ES*/EdDSA algorithms",
            ));
            None
        }
        (F::Hmac, None) => load_secret(raw, key_path, source, env, errors).map(|s| DecodingKey::from_secret(&s)),
        (family, Some(pem)) => {
            let path = source.resolve(pem.get_ref());
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    errors.push(ConfigError::at(
                        pem.span(),
                        format!("{key_path}.public_key_file"),
                        format!("cannot read {}: {e}", path.display()),
                        "point it at a PEM public key file (relative paths start at the config file's directory)",
                    ));
                    return None;
                }
            };
            let parsed = match family {
                F::Rsa => DecodingKey::from_rsa_pem(&bytes),
                F::Ec => DecodingKey::from_ec_pem(&bytes),
                _ => DecodingKey::from_ed_pem(&bytes),
            };
            parsed
                .map_err(|e| {
                    errors.push(ConfigError::at(
                        pem.span(),
                        format!("{key_path}.public_key_file"),
                        format!("{} is not a {family:?} public key in PEM: {e}", path.display()),
                        "use the issuer's public key (`-----BEGIN PUBLIC KEY-----`) matching its algorithms",
                    ))
                })
                .ok()
        }
        (_, None) => {
            let span = raw.secret_env.as_ref().or(raw.secret_file.as_ref()).map_or(0..0, Spanned::span);
            errors.push(ConfigError::at(
                span,
                key_path,
                "public-key algorithms need public_key_file, not a secret",
                "set public_key_file to the issuer's PEM public key",
            ));
            None
        }
    }
}

fn load_secret(
    raw: &file::Issuer,
    key_path: &str,
    source: &Source,
    env: EnvLookup<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<u8>> {
    let (span, key, secret) = if let Some(var) = &raw.secret_env {
        let value = env(var.get_ref());
        if value.is_none() {
            errors.push(ConfigError::at(
                var.span(),
                format!("{key_path}.secret_env"),
                format!("environment variable `{}` is not set", var.get_ref()),
                "export it before starting isogate (e.g. from a systemd EnvironmentFile or a Kubernetes Secret)",
            ));
        }
        (var.span(), "secret_env", value.map(String::into_bytes))
    } else if let Some(file) = &raw.secret_file {
        let path = source.resolve(file.get_ref());
        let value = std::fs::read(&path)
            .map_err(|e| {
                errors.push(ConfigError::at(
                    file.span(),
                    format!("{key_path}.secret_file"),
                    format!("cannot read {}: {e}", path.display()),
                    "point it at a file holding the secret",
                ))
            })
            .ok()
            .map(|mut b| {
                while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    b.pop();
                }
                b
            });
        (file.span(), "secret_file", value)
    } else {
        return None;
    };
    let secret = secret?;
    if secret.len() < MIN_SECRET_BYTES {
        errors.push(ConfigError::at(
            span,
            format!("{key_path}.{key}"),
            format!("the HMAC secret is {} bytes; at least {MIN_SECRET_BYTES} are required", secret.len()),
            "generate one with `head -c 48 /dev/urandom | base64`",
        ));
        return None;
    }
    Some(secret)
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
