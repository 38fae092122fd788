//! Path normalisation (`routing::path::normalize`) on any request target.
//!
//! Checked: nothing panics; a refused path is refused whatever follows; an accepted one
//! is normal form (normalising `forward` again gives it back unchanged, with the same
//! `matching`), resolves every dot segment, empty segment and unreserved escape, never
//! carries an escape an upstream could decode into a separator or a NUL, and `matching`
//! is `forward` without segment parameters.
#![no_main]

use isogate::routing::path::{normalize, NormalPath};
use libfuzzer_sys::fuzz_target;

/// Never in `forward` (compared case-insensitively).
const NEVER_FORWARDED: [&str; 9] = ["%2f", "%5c", "%00", "%252f", "%255c", "%252e", "%253b", "%2500", "\\"];

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let Ok(path) = normalize(raw) else {
        assert!(!raw.starts_with('/') || ambiguous_anyway(raw), "refused {raw:?} without a reason");
        return;
    };
    check_shape(raw, &path);
    let again = normalize(&path.forward).unwrap_or_else(|_| panic!("{raw:?}: forward {:?} is refused", path.forward));
    assert_eq!(again.forward, path.forward, "{raw:?}: normalising forward changes it");
    assert_eq!(again.matching, path.matching, "{raw:?}: normalising forward changes matching");
});

/// A path the normaliser may refuse: something in it is ambiguous before resolution.
fn ambiguous_anyway(raw: &str) -> bool {
    let lower = raw.to_ascii_lowercase();
    lower.contains('%') || lower.contains(';') || lower.contains('\\') || lower.contains("..")
}

fn check_shape(raw: &str, path: &NormalPath<'_>) {
    let (forward, matching) = (&*path.forward, &*path.matching);
    for p in [forward, matching] {
        assert!(p.starts_with('/'), "{raw:?} gave {p:?}");
        assert!(!p.contains("//"), "{raw:?} gave {p:?}");
        let segments: Vec<&str> = p.split('/').skip(1).collect();
        assert!(!segments.iter().any(|s| matches!(*s, "." | "..")), "{raw:?} gave {p:?}");
        assert!(no_unreserved_escape(p), "{raw:?} gave {p:?} with an escaped unreserved character");
    }
    let lower = forward.to_ascii_lowercase();
    for bad in NEVER_FORWARDED {
        assert!(!lower.contains(bad), "{raw:?} forwards {forward:?}");
    }
    let lower = matching.to_ascii_lowercase();
    assert!(!lower.contains(';') && !lower.contains("%3b"), "{raw:?} matches {matching:?}");
    assert_eq!(matching, without_parameters(forward), "{raw:?}: matching is not forward without parameters");
    assert_eq!(path.has_parameters(), forward != matching);
}

/// Whether no `%XX` escape encodes `A-Z a-z 0-9 - . _ ~`.
fn no_unreserved_escape(p: &str) -> bool {
    p.as_bytes().windows(3).all(|w| {
        w[0] != b'%'
            || !std::str::from_utf8(&w[1..])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
    })
}

/// `forward` with each segment cut at its first `;` or `%3B`; segments left empty go,
/// except that a path ending in one keeps its final `/`.
fn without_parameters(forward: &str) -> String {
    let mut out = String::new();
    let segments: Vec<&str> = forward.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let lower = segment.to_ascii_lowercase();
        let cut = [lower.find(';'), lower.find("%3b")].into_iter().flatten().min().unwrap_or(segment.len());
        let name = &segment[..cut];
        let last = i + 1 == segments.len();
        if !name.is_empty() {
            out.push('/');
            out.push_str(name);
        } else if last {
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}
