//! Path normalisation before route matching, so a restricted prefix cannot be bypassed
//! with dot segments, doubled slashes or percent-encoding.
//!
//! Escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 section 6.2.2.2)
//! are decoded, so `/%61dmin` is `/admin`; other escapes are kept as they are. Matching
//! is case-sensitive, as paths are.
//!
//! The normalised path is what routes match *and* what the upstream receives, so both
//! sides agree on which resource is meant. What cannot be normalised without guessing
//! how the upstream decodes it is refused: encoded slashes and backslashes, raw
//! backslashes, encoded NUL, and `..` above the root.

use std::borrow::Cow;

/// The path is ambiguous and must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous;

/// Normalises an origin-form path (no query string).
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, Ambiguous> {
    if !raw.starts_with('/') {
        return Err(Ambiguous);
    }
    check_encodings(raw)?;
    if is_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut segments: Vec<String> = Vec::new();
    for segment in raw.split('/').skip(1) {
        let decoded = decode_unreserved(segment);
        match decoded.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(Ambiguous)?;
            }
            _ => segments.push(decoded),
        }
    }
    let mut out = String::with_capacity(raw.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    let last = raw.rsplit('/').next().map(decode_unreserved);
    let trailing = raw.ends_with('/') || matches!(last.as_deref(), Some(".") | Some(".."));
    if out.is_empty() || (trailing && !out.ends_with('/')) {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Refuses encodings whose meaning depends on the upstream's decoder.
fn check_encodings(raw: &str) -> Result<(), Ambiguous> {
    let bytes = raw.as_bytes();
    if bytes.contains(&b'\\') {
        return Err(Ambiguous);
    }
    let mut i = 0;
    while let Some(pos) = bytes[i..].iter().position(|b| *b == b'%') {
        let at = i + pos;
        let hex = bytes.get(at + 1..at + 3).ok_or(Ambiguous)?;
        match [hex[0].to_ascii_lowercase(), hex[1].to_ascii_lowercase()] {
            [b'2', b'f'] | [b'5', b'c'] | [b'0', b'0'] => return Err(Ambiguous),
            [h, l] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {}
            _ => return Err(Ambiguous),
        }
        i = at + 3;
    }
    Ok(())
}

/// Whether a `%XX` escape encodes an unreserved character (which must be decoded).
fn unreserved_escape(hex: &[u8]) -> Option<char> {
    let s = std::str::from_utf8(hex).ok()?;
    let byte = u8::from_str_radix(s, 16).ok()?;
    (byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')).then_some(char::from(byte))
}

fn has_unreserved_escape(raw: &str) -> bool {
    let b = raw.as_bytes();
    b.iter().enumerate().any(|(i, c)| *c == b'%' && b.get(i + 1..i + 3).and_then(unreserved_escape).is_some())
}

/// Fast path: no empty, `.` or `..` segment and no escaped unreserved character.
fn is_normal(raw: &str) -> bool {
    let body = &raw[1..];
    !raw.contains("//")
        && !has_unreserved_escape(raw)
        && body
            .split('/')
            .enumerate()
            .all(|(i, s)| !(s == "." || s == ".." || (s.is_empty() && i + 1 != body.split('/').count())))
}

/// Decodes escapes of unreserved characters; other escapes are left as they are.
fn decode_unreserved(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let end = (pos + 3).min(rest.len());
        match unreserved_escape(&rest.as_bytes()[pos + 1..end]) {
            Some(c) => out.push(c),
            None => out.push_str(&rest[pos..end]),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in ["/", "/api", "/api/", "/api/v1/users", "/a%20b", "/.well-known/x", "/a..b/c"] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_slashes_are_resolved() {
        let cases = [
            ("//admin", "/admin"),
            ("/api//../admin", "/admin"),
            ("/api/./x", "/api/x"),
            ("/api/x/..", "/api/"),
            ("/api/%2e%2e/admin", "/admin"),
            ("/api/%2E%2e/admin/", "/admin/"),
            ("/api/.%2e/admin", "/admin"),
            ("/a/b/../../c", "/c"),
            ("/a/.", "/a/"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn escaped_unreserved_characters_are_decoded() {
        assert_eq!(normalize("/%61dmin/x").unwrap(), "/admin/x");
        assert_eq!(normalize("/adm%69n/%7Euser").unwrap(), "/admin/~user");
        assert_eq!(normalize("/a%20b/%61").unwrap(), "/a%20b/a", "reserved and other escapes stay");
        assert_eq!(normalize("/api/%2E%2e/%61dmin").unwrap(), "/admin");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for p in [
            "/api%2fadmin",
            "/api%2Fadmin",
            "/a%5cb",
            "/a\\b",
            "/a%00",
            "/..",
            "/a/../..",
            "/%2e%2e/x",
            "/a%2",
            "/a%zz",
            "*",
            "admin",
        ] {
            assert_eq!(normalize(p), Err(Ambiguous), "{p}");
        }
    }
}
