//! Access reasons: the free text a caller gives for entering an environment with
//! elevated rights (`X-Access-Reason: debugging issue #123`). It ends up in the audit
//! trail, so it is cleaned: control characters removed (tabs become spaces), whitespace
//! trimmed, length cut.

/// Cleans a raw reason header; `None` when nothing usable is left.
pub fn clean_reason(raw: &[u8], max_chars: usize) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    // Whitespace controls (tab) become spaces so words stay apart; others are dropped.
    let cleaned: String = text
        .chars()
        .filter_map(|c| if c.is_whitespace() && c.is_control() { Some(' ') } else { (!c.is_control()).then_some(c) })
        .take(max_chars.saturating_mul(2))
        .collect();
    let trimmed = cleaned.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(trimmed.chars().take(max_chars).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cleaned_and_capped() {
        assert_eq!(clean_reason(b"debugging issue #123", 200).as_deref(), Some("debugging issue #123"));
        assert_eq!(clean_reason(b"  a\tb\x00c\x1b[31m  ", 200).as_deref(), Some("a bc[31m"));
        assert_eq!(clean_reason(b"   ", 200), None);
        assert_eq!(clean_reason(b"\x01\x02", 200), None);
        assert_eq!(clean_reason("é".repeat(500).as_bytes(), 10).map(|s| s.chars().count()), Some(10));
        assert_eq!(clean_reason(b"\xff\xfeok", 200).as_deref(), Some("\u{fffd}\u{fffd}ok"));
    }
}
