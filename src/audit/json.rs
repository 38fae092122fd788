//! The audit line's JSON, written straight into its buffer: field names are fixed ASCII
//! written as they are, numbers go through `itoa`, and string values are copied as they
//! are unless they hold a byte JSON must escape, in which case serde_json writes them.
//! The output is byte for byte what serde_json writes for the same record (a test
//! holds the two together), at a fraction of the instructions on the request path.

use std::fmt::Display;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

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

    fn key(&mut self, name: &str) {
        debug_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if !std::mem::take(&mut self.empty) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A string field.
    pub(super) fn str(&mut self, name: &str, value: &str) {
        self.key(name);
        string(self.out, value);
    }

    /// A string field that may be `null`.
    pub(super) fn opt_str(&mut self, name: &str, value: Option<&str>) {
        self.key(name);
        match value {
            Some(v) => string(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// A value whose text never needs escaping (addresses, timestamps), as a string,
    /// or `null`.
    pub(super) fn plain<T: Display>(&mut self, name: &str, value: Option<T>) {
        self.key(name);
        match value {
            Some(v) => {
                self.out.push(b'"');
                // Writing into a Vec cannot fail.
                let _ = write!(self.out, "{v}");
                self.out.push(b'"');
            }
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// A timestamp as RFC 3339 with microseconds in UTC (`2026-12-06T05:24:57.123456Z`),
    /// as `humantime` writes it, from digits rather than through `fmt`. A clock outside
    /// 1970..=9999 is written as the nearest end of that range.
    pub(super) fn timestamp(&mut self, name: &str, t: SystemTime) {
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

    /// A socket address as a string, or `null`; IPv4 from digits, IPv6 through `fmt`.
    pub(super) fn address(&mut self, name: &str, addr: Option<SocketAddr>) {
        let Some(SocketAddr::V4(v4)) = addr else {
            return self.plain(name, addr);
        };
        self.key(name);
        let mut digits = itoa::Buffer::new();
        self.out.push(b'"');
        for (i, octet) in v4.ip().octets().into_iter().enumerate() {
            if i > 0 {
                self.out.push(b'.');
            }
            self.out.extend_from_slice(digits.format(octet).as_bytes());
        }
        self.out.push(b':');
        self.out.extend_from_slice(digits.format(v4.port()).as_bytes());
        self.out.push(b'"');
    }

    /// A number field.
    pub(super) fn u64(&mut self, name: &str, value: u64) {
        self.key(name);
        self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A boolean field.
    pub(super) fn bool(&mut self, name: &str, value: bool) {
        self.key(name);
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// An array of strings.
    pub(super) fn strs(&mut self, name: &str, values: &[String]) {
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

/// A JSON string: copied as it is when nothing in it needs escaping (quotes,
/// backslashes and control characters are what JSON escapes), else written by
/// serde_json.
fn string(out: &mut Vec<u8>, value: &str) {
    if value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Serialising a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
        return;
    }
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
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
                    assert_eq!(written(|o| o.timestamp("t", t)), want, "day {day} second {secs}");
                }
            }
        }
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(MAX_SECONDS + 5);
        assert_eq!(written(|o| o.timestamp("t", far)), r#"{"t":"9999-12-31T23:59:59.999999Z"}"#);
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(written(|o| o.timestamp("t", before)), r#"{"t":"1970-01-01T00:00:00.000000Z"}"#);
    }

    #[test]
    fn addresses_are_what_fmt_writes() {
        for a in ["0.0.0.0:0", "255.255.255.255:65535", "10.1.2.3:8080", "[::1]:443", "[2001:db8::7]:1"] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(written(|o| o.address("a", Some(addr))), format!("{{\"a\":\"{addr}\"}}"));
        }
        assert_eq!(written(|o| o.address("a", None)), "{\"a\":null}");
    }
}
