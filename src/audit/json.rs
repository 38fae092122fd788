//! The audit line's JSON, written straight into its buffer: field names are fixed ASCII
//! written as they are, numbers go through `itoa`, and string values are copied as they
//! are unless they hold a byte JSON must escape, in which case serde_json writes them.
//! The output is byte for byte what serde_json writes for the same record (a test
//! holds the two together), at a fraction of the instructions on the request path.

use std::fmt::Display;
use std::io::Write;

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
