//! Path normalisation before route matching, so a restricted prefix cannot be bypassed
//! with dot segments, doubled slashes, percent-encoding or segment parameters.
//!
//! Escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 section 6.2.2.2)
//! are decoded, so `/%61dmin` is `/admin`; other escapes are kept as they are. Matching
//! is case-sensitive, as paths are.
//!
//! Segment parameters (`/admin;jsessionid=1/x`, also written `%3B`) are dropped by
//! servlet containers before they look at a path, so a segment is matched on its name
//! alone: `matching` is the path without parameters, and it is what routes and access
//! rules see. `forward` keeps them, and is what the upstream receives.
//!
//! What cannot be normalised without guessing how the upstream decodes is refused:
//! encoded slashes and backslashes, raw backslashes, encoded NUL, `..` above the root,
//! dot segments carrying parameters (`..;`, `.;x`), and doubly encoded escapes (`%25`
//! followed by two hex digits: `%252f`, `%252e`, `%2561`, ...), which an upstream that
//! decodes twice would read as a separator, a dot or a letter of a restricted prefix.

use std::borrow::Cow;

/// The path is ambiguous and must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous;

/// A normalised path: what the upstream receives and what routes match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath<'a> {
    /// Dot segments resolved, unreserved escapes decoded, parameters kept.
    pub forward: Cow<'a, str>,
    /// `forward` with every segment's parameters removed.
    pub matching: Cow<'a, str>,
}

impl NormalPath<'_> {
    /// Whether some segment carries parameters.
    pub fn has_parameters(&self) -> bool {
        self.forward.len() != self.matching.len()
    }
}

/// Normalises an origin-form path (no query string).
pub fn normalize(raw: &str) -> Result<NormalPath<'_>, Ambiguous> {
    if !raw.starts_with('/') {
        return Err(Ambiguous);
    }
    check_encodings(raw)?;
    if is_normal(raw) {
        check_double_encoding(raw)?;
        return Ok(NormalPath { forward: Cow::Borrowed(raw), matching: Cow::Borrowed(raw) });
    }
    // (forward segment, matching segment); a matching segment may be empty (`/;x/`).
    let mut segments: Vec<(String, String)> = Vec::new();
    for segment in raw.split('/').skip(1) {
        let decoded = decode_unreserved(segment);
        let (name, has_params) = match parameters_at(&decoded) {
            Some(at) => (&decoded[..at], true),
            None => (decoded.as_str(), false),
        };
        match (name, has_params) {
            ("." | "..", true) => return Err(Ambiguous),
            ("" | ".", false) => {}
            ("..", false) => {
                segments.pop().ok_or(Ambiguous)?;
            }
            _ => {
                let name = name.to_owned();
                segments.push((decoded, name));
            }
        }
    }
    let last = raw.rsplit('/').next().map(decode_unreserved);
    let trailing = raw.ends_with('/') || matches!(last.as_deref(), Some(".") | Some(".."));
    let forward = join(segments.iter().map(|(f, _)| f.as_str()), trailing);
    check_double_encoding(&forward)?;
    let matching = if segments.iter().any(|(f, m)| f.len() != m.len()) {
        let ends_bare = segments.last().is_some_and(|(_, m)| m.is_empty());
        Cow::Owned(join(segments.iter().map(|(_, m)| m.as_str()).filter(|m| !m.is_empty()), trailing || ends_bare))
    } else {
        Cow::Owned(forward.clone())
    };
    Ok(NormalPath { forward: Cow::Owned(forward), matching })
}

/// `/`-joins segments into a path; `trailing` keeps a final `/`.
fn join<'s>(segments: impl Iterator<Item = &'s str>, trailing: bool) -> String {
    let mut out = String::new();
    for s in segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing && !out.ends_with('/')) {
        out.push('/');
    }
    out
}

/// Where a decoded segment's parameters start: at `;` or an escaped `%3B`.
fn parameters_at(segment: &str) -> Option<usize> {
    let b = segment.as_bytes();
    b.iter().enumerate().find_map(|(i, c)| match c {
        b';' => Some(i),
        b'%' if b.get(i + 1..i + 3).is_some_and(|h| h.eq_ignore_ascii_case(b"3b")) => Some(i),
        _ => None,
    })
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

/// Refuses `%25` (an escaped `%`) followed by two hex digits: an escape escaped once
/// more, whose meaning depends on how often the upstream decodes. Run on the path the
/// upstream receives, after unreserved escapes were decoded, so `%25%32%66` is caught as
/// `%252f`. A `%25` not followed by hex digits (`/100%25`) is a plain percent sign.
fn check_double_encoding(path: &str) -> Result<(), Ambiguous> {
    let b = path.as_bytes();
    let doubled = b
        .windows(5)
        .any(|w| w[..3].eq_ignore_ascii_case(b"%25") && w[3].is_ascii_hexdigit() && w[4].is_ascii_hexdigit());
    if doubled {
        Err(Ambiguous)
    } else {
        Ok(())
    }
}

/// Whether a `%XX` escape encodes an unreserved character (which must be decoded).
fn unreserved_escape(hex: &[u8]) -> Option<char> {
    let s = std::str::from_utf8(hex).ok()?;
    let byte = u8::from_str_radix(s, 16).ok()?;
    (byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')).then_some(char::from(byte))
}

/// Fast path: no empty, `.` or `..` segment, no escaped unreserved character and no
/// segment parameter.
fn is_normal(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut segment_start = 1;
    for i in 1..=b.len() {
        if i < b.len() && b[i] != b'/' {
            match b[i] {
                b';' => return false,
                b'%' if b
                    .get(i + 1..i + 3)
                    .is_some_and(|h| h.eq_ignore_ascii_case(b"3b") || unreserved_escape(h).is_some()) =>
                {
                    return false
                }
                _ => {}
            }
            continue;
        }
        let segment = &b[segment_start..i];
        let last = i == b.len();
        if matches!(segment, b"." | b"..") || (segment.is_empty() && !last) {
            return false;
        }
        segment_start = i + 1;
    }
    true
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
mod tests;
