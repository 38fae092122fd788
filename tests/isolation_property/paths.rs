//! The model's reading of request targets, written from the README and RFC 3986/9112:
//! the host, the normalised path routes and access rules see, the path the upstream
//! gets, and every way an upstream could read a path as an admin path.

/// A path after normalisation (README, "Route").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Norm {
    /// What the upstream receives: dot segments resolved, unreserved escapes decoded,
    /// segment parameters kept.
    pub forward: String,
    /// What routes and access rules match: `forward` without segment parameters.
    pub matching: String,
    pub parameters: bool,
}

/// The path and query of a request target (origin or absolute form).
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let origin = match target.strip_prefix("http://").or_else(|| target.strip_prefix("https://")) {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    match origin.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (origin, None),
    }
}

/// The authority of an absolute-form target.
pub fn absolute_authority(target: &str) -> Option<&str> {
    let rest = target.strip_prefix("http://").or_else(|| target.strip_prefix("https://"))?;
    Some(rest.find(['/', '?']).map_or(rest, |i| &rest[..i]))
}

pub fn normalize_host(raw: &str) -> Option<String> {
    let host = match raw.strip_prefix('[') {
        Some(rest) => &raw[..rest.find(']').map_or(raw.len(), |i| i + 2)],
        None => raw.rfind(':').map_or(raw, |i| &raw[..i]),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let plausible = host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    (!host.is_empty() && plausible).then(|| host.to_ascii_lowercase())
}

/// Whether `prefix` matches `path` on whole segments.
pub fn under(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix).is_some_and(|rest| prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn hex_byte(h: &[u8]) -> Option<u8> {
    let digit = |c: u8| char::from(c).to_digit(16);
    match h {
        [hi, lo] => Some((digit(*hi)? * 16 + digit(*lo)?) as u8),
        _ => None,
    }
}

/// Decodes the escapes of unreserved characters, keeping every other escape.
fn decode_unreserved(segment: &str) -> String {
    let b = segment.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b.get(i + 1..i + 3).and_then(hex_byte).filter(|c| b[i] == b'%' && is_unreserved(*c)) {
            Some(c) => {
                out.push(c);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A segment's name: everything before its parameters (`;` or `%3B`).
fn segment_name(decoded: &str) -> &str {
    let b = decoded.as_bytes();
    let at = (0..b.len()).find(|&i| {
        b[i] == b';' || (b[i] == b'%' && b[i + 1..].get(..2).is_some_and(|h| h.eq_ignore_ascii_case(b"3b")))
    });
    at.map_or(decoded, |i| &decoded[..i])
}

/// The README's normalisation; `None` where it says the path is refused as ambiguous.
pub fn normalize(raw: &str) -> Option<Norm> {
    if !raw.starts_with('/') || raw.contains('\\') {
        return None;
    }
    if plain(raw) {
        return Some(Norm { forward: raw.to_owned(), matching: raw.to_owned(), parameters: false });
    }
    let b = raw.as_bytes();
    for (i, _) in raw.match_indices('%') {
        let c = b.get(i + 1..i + 3).and_then(hex_byte)?;
        if matches!(c, b'/' | b'\\' | 0) {
            return None;
        }
    }
    let mut kept: Vec<(String, String)> = Vec::new();
    for segment in raw[1..].split('/') {
        let decoded = decode_unreserved(segment);
        let name = segment_name(&decoded).to_owned();
        let parameters = name.len() != decoded.len();
        match (name.as_str(), parameters) {
            ("." | "..", true) => return None,
            ("" | ".", false) => {}
            ("..", false) => {
                kept.pop()?;
            }
            _ => kept.push((decoded, name)),
        }
    }
    let last = decode_unreserved(raw.rsplit('/').next().unwrap_or(""));
    let trailing = raw.ends_with('/') || last == "." || last == "..";
    let forward = join(kept.iter().map(|(f, _)| f.as_str()), trailing);
    // An escaped `%` before two hex digits is an escape escaped once more: its meaning
    // depends on how often the upstream decodes.
    let doubled = forward
        .as_bytes()
        .windows(5)
        .any(|w| w[..3].eq_ignore_ascii_case(b"%25") && w[3].is_ascii_hexdigit() && w[4].is_ascii_hexdigit());
    if doubled {
        return None;
    }
    let ends_bare = kept.last().is_some_and(|(_, n)| n.is_empty());
    let matching = join(kept.iter().map(|(_, n)| n.as_str()).filter(|n| !n.is_empty()), trailing || ends_bare);
    let parameters = kept.iter().any(|(f, n)| f != n);
    Some(Norm { forward, matching, parameters })
}

/// A path normalisation leaves as it is: no escape, parameter, dot segment or empty
/// segment (but a trailing `/`).
fn plain(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut start = 1;
    for i in 1..=b.len() {
        match b.get(i) {
            Some(b'%' | b';') => return false,
            Some(b'/') | None => {
                let segment = &b[start..i];
                if segment == b"." || segment == b".." || (segment.is_empty() && i < b.len()) {
                    return false;
                }
                start = i + 1;
            }
            Some(_) => {}
        }
    }
    true
}

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

/// Whether an upstream could read `path` as under the admin prefix: decoded once
/// (every escape), `\` as `/`, dot segments resolved, with or without segment
/// parameters. Admission of such a path needs an admin role, whatever the gateway's
/// own normalisation said.
pub fn admin_in_any_reading(path: &str) -> bool {
    let decoded = percent_decode(path).replace('\\', "/");
    [true, false].into_iter().any(|strip| resolve(&decoded, strip).first().is_some_and(|s| s == "admin"))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b.get(i + 1..i + 3).and_then(hex_byte).filter(|_| b[i] == b'%') {
            Some(c) => {
                out.push(c);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn resolve(path: &str, strip_parameters: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for seg in path.split('/') {
        let name = if strip_parameters { seg.split(';').next().unwrap_or("") } else { seg };
        match name {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            n => out.push(n.to_owned()),
        }
    }
    out
}
