//! Helpers shared by the fuzz targets: fixture paths, the compiled gateway the `token`
//! target identifies against, and the header-name folding the gateway promises.

use std::path::PathBuf;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use isogate::config::Source;
use isogate::snapshot::Snapshot;

/// A path relative to the fuzz crate.
pub fn here(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The snapshot compiled from `fixtures/identify.toml`, built once per process.
pub fn identify_snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let source = Source::read(&here("fixtures/identify.toml")).unwrap_or_else(|e| panic!("{e}"));
        Snapshot::from_source(&source, &|_| None).unwrap_or_else(|e| panic!("fixtures/identify.toml: {e}"))
    })
}

/// The HMAC secret of the `hmac` issuer in `fixtures/identify.toml`.
pub fn hmac_secret() -> &'static [u8] {
    static SECRET: OnceLock<Vec<u8>> = OnceLock::new();
    SECRET.get_or_init(|| {
        let raw = std::fs::read(here("../tests/fixtures/keys/hmac.secret")).unwrap_or_else(|e| panic!("{e}"));
        // As the gateway reads a secret file: trailing line ends are not part of it.
        let end = raw.iter().rposition(|b| !matches!(b, b'\n' | b'\r')).map_or(0, |i| i + 1);
        raw[..end].to_vec()
    })
}

/// A compact JWS over `header` and `payload` (JSON text, as given), signed with the
/// fixture HMAC secret: HS384 or HS512 when the header names it, HS256 otherwise.
pub fn hmac_token(header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let alg = serde_json::from_slice::<serde_json::Value>(header).ok();
    let signature = match alg.as_ref().and_then(|h| h.get("alg")).and_then(|a| a.as_str()) {
        Some("HS384") => mac::<Hmac<sha2::Sha384>>(input.as_bytes()),
        Some("HS512") => mac::<Hmac<sha2::Sha512>>(input.as_bytes()),
        _ => mac::<Hmac<sha2::Sha256>>(input.as_bytes()),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn mac<M: Mac + hmac::digest::KeyInit>(input: &[u8]) -> Vec<u8> {
    let mut m = <M as Mac>::new_from_slice(hmac_secret()).unwrap_or_else(|e| panic!("{e}"));
    m.update(input);
    m.finalize().into_bytes().to_vec()
}

/// A header name as the gateway compares it: ASCII lowercase, `_` read as `-`.
pub fn fold(name: &[u8]) -> Vec<u8> {
    name.iter().map(|c| if *c == b'_' { b'-' } else { c.to_ascii_lowercase() }).collect()
}

/// Decodes one base64url segment of a compact JWS as JSON, if it is that.
pub fn segment_json(segment: &str) -> Option<serde_json::Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).ok()?).ok()
}
