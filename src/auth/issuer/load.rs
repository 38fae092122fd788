//! Loading an issuer's key source: a PEM public key, an HMAC secret (from a file or the
//! environment), or the settings of a JWKS to fetch.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use toml::Spanned;

use super::{fingerprint, IssuerKeys};
use crate::auth::jwks::{JwksSettings, KeySource, RemoteKeys};
use crate::config::{file, ConfigError, EnvLookup, Source};

/// Smallest HMAC secret accepted, in bytes (RFC 7518 section 3.2 for HS256).
const MIN_SECRET_BYTES: usize = 32;

/// Longest `unknown_kid_cooldown_seconds` accepted: the worst delay before a key the IdP
/// rotated in is accepted, while forged `kid`s keep the cooldown busy.
const MAX_UNKNOWN_KID_COOLDOWN_SECONDS: u64 = 60;

/// The issuer's keys from its one key source.
pub(super) fn keys(
    raw: &file::Issuer,
    algorithms: &[Algorithm],
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
        return remote_keys(raw, algorithms, key_path, source, errors).map(|r| IssuerKeys::Remote(Arc::new(r)));
    }
    let family = static_family(raw, algorithms, key_path, errors)?;
    load_key(raw, family, key_path, source, env, errors).map(|(key, id)| IssuerKeys::Static(key, id))
}

/// The one key type a static key must have: a PEM file or a secret is one key.
fn static_family(
    raw: &file::Issuer,
    algorithms: &[Algorithm],
    key_path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<AlgorithmFamily> {
    let family = algorithms.first()?.family();
    if algorithms.iter().any(|a| a.family() != family) {
        errors.push(ConfigError::at(
            raw.algorithms.span(),
            format!("{key_path}.algorithms"),
            "public_key_file holds one key of one type, but the algorithms need several key types",
            "list only the algorithms of that key (RS*/PS* for RSA, ES256/ES384 for EC, EdDSA for Ed25519), \
             or take the keys from jwks_url or discovery_url, where each key has its own type",
        ));
        return None;
    }
    Some(family)
}

fn remote_keys(
    raw: &file::Issuer,
    algorithms: &[Algorithm],
    key_path: &str,
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> Option<RemoteKeys> {
    let (field, url, key_source) = match (&raw.jwks_url, &raw.discovery_url) {
        (Some(u), _) => ("jwks_url", u, KeySource::Jwks(u.get_ref().clone())),
        (_, Some(u)) => ("discovery_url", u, KeySource::Discovery(u.get_ref().clone())),
        _ => return None,
    };
    if algorithms.iter().any(|a| a.family() == AlgorithmFamily::Hmac) {
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
    let settings = jwks_settings(raw, key_path, errors)?;
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

/// Refresh, staleness and cooldown settings, checked against each other.
fn jwks_settings(raw: &file::Issuer, key_path: &str, errors: &mut Vec<ConfigError>) -> Option<JwksSettings> {
    let secs = Duration::from_secs;
    let refresh_min = raw.refresh_min_seconds.max(1);
    let staleness = *raw.max_staleness_seconds.get_ref();
    // A key the file does not set points at the issuer instead.
    let span = |s: &Spanned<u64>| if s.span().start == 0 { raw.name.span() } else { s.span() };
    let mut ok = true;
    if staleness <= refresh_min {
        errors.push(ConfigError::at(
            span(&raw.max_staleness_seconds),
            format!("{key_path}.max_staleness_seconds"),
            format!(
                "max_staleness_seconds ({staleness}) is not above refresh_min_seconds ({refresh_min}), so keys \
                 could go stale between two refreshes while the IdP is up"
            ),
            format!("raise max_staleness_seconds above {refresh_min} (default 86400), or lower refresh_min_seconds"),
        ));
        ok = false;
    }
    let cooldown = *raw.unknown_kid_cooldown_seconds.get_ref();
    if cooldown > MAX_UNKNOWN_KID_COOLDOWN_SECONDS {
        errors.push(ConfigError::at(
            span(&raw.unknown_kid_cooldown_seconds),
            format!("{key_path}.unknown_kid_cooldown_seconds"),
            format!("{cooldown} s would refuse a key the IdP just rotated in for that long"),
            format!("use 0 to {MAX_UNKNOWN_KID_COOLDOWN_SECONDS} (default 5)"),
        ));
        ok = false;
    }
    ok.then(|| JwksSettings {
        fetch_timeout: Duration::from_millis(raw.fetch_timeout_ms.max(1)),
        refresh_min: secs(refresh_min),
        refresh_max: secs(raw.refresh_max_seconds.max(refresh_min)),
        max_staleness: secs(staleness),
        unknown_kid_cooldown: secs(cooldown),
    })
}

fn load_key(
    raw: &file::Issuer,
    family: jsonwebtoken::AlgorithmFamily,
    key_path: &str,
    source: &Source,
    env: EnvLookup<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<(DecodingKey, u64)> {
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
        (F::Hmac, None) => {
            load_secret(raw, key_path, source, env, errors).map(|s| (DecodingKey::from_secret(&s), fingerprint(&s)))
        }
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
                .map(|key| (key, fingerprint(&bytes)))
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
