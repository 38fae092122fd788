//! The audit line's JSON, written straight into its buffer: each field name with its
//! quotes, comma and colon is one literal (`key!`), numbers go through `itoa`, and
//! string values are copied as they are unless they hold a byte JSON must escape
//! (found eight bytes at a time), in which case serde_json writes them.
//! The output is byte for byte what serde_json writes for the same record (a test
//! holds the two together), at a fraction of the instructions on the request path.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// What is written before a field's value: `,"name":`, made by `key!("name")`.
#[derive(Clone, Copy)]
pub(super) struct Key(pub(super) &'static str);

/// The [`Key`] of a field name (ASCII letters, digits and `_`, which JSON writes as
/// they are).
macro_rules! key {
    ($name:literal) => {
        $crate::audit::json::Key(concat!(",\"", $name, "\":"))
    };
}
pub(super) use key;

/// One JSON object being written into a line buffer.
pub(super) struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    /// Opens an object at the end of `out`.
    pub(super) fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    fn key(&mut self, key: Key) {
        let text = key.0.as_bytes();
        debug_assert!(text.starts_with(b",\"") && text.ends_with(b"\":"));
        debug_assert!(text[2..text.len() - 2].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_'));
        // The first field has no comma before it.
        let text = if std::mem::take(&mut self.empty) { &text[1..] } else { text };
        self.out.extend_from_slice(text);
    }

    /// A string field.
    pub(super) fn str(&mut self, name: Key, value: &str) {
        self.key(name);
        string(self.out, value);
    }

    /// A string field that may be `null`.
    pub(super) fn opt_str(&mut self, name: Key, value: Option<&str>) {
        self.key(name);
        match value {
            Some(v) => string(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// A timestamp as RFC 3339 with microseconds in UTC (`2026-12-06T05:24:57.123456Z`),
    /// as `humantime` writes it, from digits rather than through `fmt`. A clock outside
    /// 1970..=9999 is written as the nearest end of that range.
    pub(super) fn timestamp(&mut self, name: Key, t: SystemTime) {
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let since = since.min(Duration::from_micros(MAX_SECONDS * 1_000_000 - 1));
        self.key(name);
        let secs = since.as_secs();
        let (year, month, day) = civil_from_days(secs / 86_400);
        let of_day = secs % 86_400;
        let mut text = *b"\"0000-00-00T00:00:00.000000Z\"";
        digits(&mut text[1..5], year);
        digits(&mut text[6..8], month);
        digits(&mut text[9..11], day);
        digits(&mut text[12..14], of_day / 3600);
        digits(&mut text[15..17], of_day / 60 % 60);
        digits(&mut text[18..20], of_day % 60);
        digits(&mut text[21..27], u64::from(since.subsec_micros()));
        self.out.extend_from_slice(&text);
    }

    /// A socket address as a string, or `null`.
    pub(super) fn address(&mut self, name: Key, addr: Option<SocketAddr>) {
        self.key(name);
        match addr {
            Some(addr) => {
                self.out.push(b'"');
                crate::addr_text::push_socket(self.out, addr);
                self.out.push(b'"');
            }
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// A number field.
    pub(super) fn u64(&mut self, name: Key, value: u64) {
        self.key(name);
        self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A boolean field.
    pub(super) fn bool(&mut self, name: Key, value: bool) {
        self.key(name);
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// An array of strings.
    pub(super) fn strs(&mut self, name: Key, values: &[String]) {
        self.key(name);
        self.out.push(b'[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            string(self.out, v);
        }
        self.out.push(b']');
    }

    /// Closes the object.
    pub(super) fn end(self) {
        self.out.push(b'}');
    }
}

/// A JSON string: copied as it is when nothing in it needs escaping, else written by
/// serde_json.
fn string(out: &mut Vec<u8>, value: &str) {
    if needs_escape(value.as_bytes()) {
        // Serialising a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
        return;
    }
    out.reserve(value.len() + 2);
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// Whether `text` holds a byte JSON escapes: a quote, a backslash or a control
/// character. Eight bytes at a time: a byte of a word is zero exactly where
/// `(w - 0x01..) & !w & 0x80..` has its top bit set, and below 0x20 exactly where
/// `(w - 0x20..) & !w & 0x80..` has, for the question whether any byte is.
fn needs_escape(text: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const TOPS: u64 = u64::from_ne_bytes([0x80; 8]);
    const fn below(w: u64, n: u8) -> u64 {
        w.wrapping_sub(ONES * n as u64) & !w & TOPS
    }
    let mut words = text.chunks_exact(8);
    for word in &mut words {
        let w = u64::from_ne_bytes(word.try_into().expect("eight bytes"));
        if below(w, 0x20) | below(w ^ (ONES * b'"' as u64), 1) | below(w ^ (ONES * b'\\' as u64), 1) != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Seconds before the year 10000, past which RFC 3339 has no four-digit year.
const MAX_SECONDS: u64 = 253_402_300_800;

/// Writes `value` as decimal digits filling `out`, zero-padded on the left.
fn digits(out: &mut [u8], mut value: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut Object<'_>)) -> String {
        let mut out = Vec::new();
        let mut o = Object::new(&mut out);
        f(&mut o);
        o.end();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_are_what_humantime_writes() {
        let days = [0u64, 59, 60, 365, 10_956, 11_016, 11_017, 19_782, 47_541, 47_542, 2_932_896];
        for day in days {
            for secs in [0u64, 1, 3599, 86_399] {
                for micros in [0u64, 1, 999_999] {
                    let t = SystemTime::UNIX_EPOCH + Duration::from_micros((day * 86_400 + secs) * 1_000_000 + micros);
                    let want = format!("{{\"t\":\"{}\"}}", humantime::format_rfc3339_micros(t));
                    assert_eq!(written(|o| o.timestamp(key!("t"), t)), want, "day {day} second {secs}");
                }
            }
        }
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(MAX_SECONDS + 5);
        assert_eq!(written(|o| o.timestamp(key!("t"), far)), r#"{"t":"9999-12-31T23:59:59.999999Z"}"#);
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(written(|o| o.timestamp(key!("t"), before)), r#"{"t":"1970-01-01T00:00:00.000000Z"}"#);
    }

    #[test]
    fn addresses_are_what_fmt_writes() {
        for a in ["0.0.0.0:0", "255.255.255.255:65535", "10.1.2.3:8080", "[::1]:443", "[2001:db8::7]:1"] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(written(|o| o.address(key!("a"), Some(addr))), format!("{{\"a\":\"{addr}\"}}"));
        }
        assert_eq!(written(|o| o.address(key!("a"), None)), "{\"a\":null}");
    }

    #[test]
    fn escapes_are_found_wherever_they_are() {
        let naive = |t: &[u8]| t.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for len in 0..26 {
            assert!(!needs_escape(&vec![b'a'; len]));
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut text = vec![b'~'; len];
                    text[at] = b;
                    assert_eq!(needs_escape(&text), naive(&text), "byte {b:#x} at {at} of {len}");
                }
            }
        }
        // Bytes just outside each class, all in one word, with a borrow between them.
        assert!(!needs_escape(b" !#[]\x7f\xff\x80 !#[]"));
    }
}
