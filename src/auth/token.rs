//! Token extraction and the unverified peek that picks the issuer.
//!
//! Everything here runs before any signature check, on hostile input: it bounds sizes
//! first, accepts only the compact JWS alphabet, and refuses headers that try to bring
//! their own keys (`jku`, `x5u`, `jwk`, `x5c`) or critical extensions.
//!
//! Strings taken from the unverified token that can reach a log or audit line (today the
//! `kid`) are cut to `MAX_LOGGED_BYTES` with `for_log` first, so a hostile token cannot
//! bloat the logs: the whole token is bounded by `token.max_bytes`, but that is 8 KiB.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use super::AuthError;

/// The parts of a compact JWS needed before verification.
#[derive(Debug)]
pub(crate) struct Peeked<'a> {
    /// The whole token, `header.payload.signature`.
    pub(crate) token: &'a str,
    /// The `alg` header, verbatim.
    pub(crate) alg: String,
    /// The `kid` header, an opaque string.
    pub(crate) kid: Option<String>,
    /// The unverified `iss` claim, used only to pick which issuer verifies the token.
    pub(crate) iss: Option<String>,
    /// The `typ` header (RFC 7515 section 4.1.9), verbatim.
    pub(crate) typ: Option<String>,
}

/// Longest token-derived string written to a log or audit line, in bytes.
pub const MAX_LOGGED_BYTES: usize = 128;

/// `s` cut to at most `MAX_LOGGED_BYTES`, on a character boundary.
pub(crate) fn for_log(s: &str) -> &str {
    if s.len() <= MAX_LOGGED_BYTES {
        return s;
    }
    let mut end = MAX_LOGGED_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Peeked<'_> {
    /// The `kid`, cut for the audit line.
    pub(crate) fn logged_kid(&self) -> Option<String> {
        self.kid.as_deref().map(|k| for_log(k).to_owned())
    }
}

/// Pulls the bearer token out of the `Authorization` header values.
///
/// Zero values → `Missing`; several values, another scheme or a malformed token →
/// `Malformed`; a token over `max_bytes` → `TooLarge`.
pub(crate) fn bearer<'a, I>(mut values: I, max_bytes: usize) -> Result<&'a str, AuthError>
where
    I: Iterator<Item = &'a [u8]>,
{
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::Malformed);
    }
    if value.len() > max_bytes + 7 + 16 {
        return Err(AuthError::TooLarge);
    }
    let (scheme, rest) = value.split_at(value.len().min(7));
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return Err(AuthError::Malformed);
    }
    compact(rest.trim_ascii(), max_bytes)
}

/// Checks a token given on its own (a database password): at most `max_bytes`, made
/// only of the compact JWS alphabet.
pub(crate) fn compact(token: &[u8], max_bytes: usize) -> Result<&str, AuthError> {
    if token.len() > max_bytes {
        return Err(AuthError::TooLarge);
    }
    if token.is_empty() || !token.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(AuthError::Malformed);
    }
    // Only ASCII remains, so this cannot fail.
    std::str::from_utf8(token).map_err(|_| AuthError::Malformed)
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    typ: Option<String>,
    jku: Option<serde::de::IgnoredAny>,
    x5u: Option<serde::de::IgnoredAny>,
    jwk: Option<serde::de::IgnoredAny>,
    x5c: Option<serde::de::IgnoredAny>,
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct RawIssuer {
    iss: Option<serde_json::Value>,
}

/// Splits and decodes the header and the `iss` claim without verifying anything.
pub(crate) fn peek(token: &str) -> Result<Peeked<'_>, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(AuthError::Malformed);
    }
    let header: RawHeader = decode_json(header)?;
    if header.jku.is_some() || header.x5u.is_some() || header.jwk.is_some() || header.x5c.is_some() {
        return Err(AuthError::HeaderForbidden);
    }
    if header.crit.is_some() {
        return Err(AuthError::HeaderForbidden);
    }
    let alg = header.alg.ok_or(AuthError::Malformed)?;
    if alg.eq_ignore_ascii_case("none") || signature.is_empty() {
        return Err(AuthError::AlgorithmNotAllowed);
    }
    let claims: RawIssuer = decode_json(payload)?;
    let iss = match claims.iss {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => return Err(AuthError::ClaimInvalid),
        None => None,
    };
    Ok(Peeked { token, alg, kid: header.kid, iss, typ: header.typ })
}

fn decode_json<T: for<'de> Deserialize<'de>>(segment: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    #[test]
    fn bearer_extraction_is_strict() {
        let one = |v: &'static [u8]| bearer([v].into_iter(), 100);
        assert_eq!(bearer(std::iter::empty(), 100), Err(AuthError::Missing));
        assert_eq!(one(b"Bearer abc.def.ghi"), Ok("abc.def.ghi"));
        assert_eq!(one(b"bearer   abc.def.ghi  "), Ok("abc.def.ghi"));
        assert_eq!(one(b"Basic dXNlcjpwYXNz"), Err(AuthError::Malformed));
        assert_eq!(one(b"Bearer "), Err(AuthError::Malformed));
        assert_eq!(one(b"Bearer a b"), Err(AuthError::Malformed));
        assert_eq!(one(b"Bearer a\x00b"), Err(AuthError::Malformed));
        assert_eq!(one(b"Bear"), Err(AuthError::Malformed));
        let two = [b"Bearer a.b.c".as_slice(), b"Bearer a.b.c".as_slice()];
        assert_eq!(bearer(two.into_iter(), 100), Err(AuthError::Malformed));
        let big = format!("Bearer {}", "a".repeat(101));
        assert_eq!(bearer([big.as_bytes()].into_iter(), 100), Err(AuthError::TooLarge));
        let huge = format!("Bearer {}", "a".repeat(100_000));
        assert_eq!(bearer([huge.as_bytes()].into_iter(), 100), Err(AuthError::TooLarge));
    }

    #[test]
    fn peek_reads_alg_kid_and_iss() {
        let t = token(r#"{"alg":"RS256","kid":"k1"}"#, r#"{"iss":"https://idp"}"#);
        let p = peek(&t).unwrap();
        assert_eq!(p.alg, "RS256");
        assert_eq!(p.kid.as_deref(), Some("k1"));
        assert_eq!(p.iss.as_deref(), Some("https://idp"));
        assert_eq!(p.typ, None);
        let typed = token(r#"{"alg":"RS256","typ":"at+jwt"}"#, "{}");
        assert_eq!(peek(&typed).unwrap().typ.as_deref(), Some("at+jwt"));
        let odd = token(r#"{"alg":"RS256","typ":7}"#, "{}");
        assert_eq!(peek(&odd).unwrap_err(), AuthError::Malformed);
    }

    #[test]
    fn logged_strings_are_cut_on_a_character_boundary() {
        assert_eq!(for_log("k1"), "k1");
        let ascii = "a".repeat(500);
        assert_eq!(for_log(&ascii).len(), MAX_LOGGED_BYTES);
        let wide = "é".repeat(100); // two bytes each: 128 falls on a boundary
        assert_eq!(for_log(&wide).len(), 128);
        let odd = format!("x{wide}"); // byte 128 is inside a character
        assert_eq!(for_log(&odd).len(), 127);
        assert!(odd.starts_with(for_log(&odd)));
    }

    #[test]
    fn peek_refuses_hostile_headers() {
        for h in [
            r#"{"alg":"RS256","jku":"https://evil/keys"}"#,
            r#"{"alg":"RS256","x5u":"https://evil/cert"}"#,
            r#"{"alg":"RS256","jwk":{"kty":"oct","k":"AAAA"}}"#,
            r#"{"alg":"RS256","x5c":["MIIB"]}"#,
            r#"{"alg":"RS256","crit":["exp"]}"#,
        ] {
            assert_eq!(peek(&token(h, "{}")).unwrap_err(), AuthError::HeaderForbidden, "{h}");
        }
        assert_eq!(peek(&token(r#"{"alg":"none"}"#, "{}")).unwrap_err(), AuthError::AlgorithmNotAllowed);
        assert_eq!(peek(&token(r#"{"alg":"NoNe"}"#, "{}")).unwrap_err(), AuthError::AlgorithmNotAllowed);
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"HS256"}"#), b64("{}"));
        assert_eq!(peek(&unsigned).unwrap_err(), AuthError::AlgorithmNotAllowed);
    }

    #[test]
    fn peek_refuses_garbage() {
        for t in ["", "a", "a.b", "a.b.c.d", "..", "!!.!!.!!", "e30.e30", "bm90IGpzb24.e30.c2ln"] {
            assert_eq!(peek(t).unwrap_err(), AuthError::Malformed, "{t:?}");
        }
        assert_eq!(peek(&token(r#"{"kid":"x"}"#, "{}")).unwrap_err(), AuthError::Malformed);
        assert_eq!(peek(&token(r#"{"alg":"HS256"}"#, r#"{"iss":42}"#)).unwrap_err(), AuthError::ClaimInvalid);
    }
}
