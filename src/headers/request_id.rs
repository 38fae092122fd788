//! The request id: the client's when it is safe to keep, else a generated one. It is
//! held as a header value, so the upstream request and the response carry it without a
//! copy.

use http::HeaderValue;

/// Longest client request id that is kept.
const MAX_REQUEST_ID: usize = 128;

/// A request id, always 1..=128 of `[A-Za-z0-9._:-]` (or empty before one is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// No id yet.
    pub fn unset() -> Self {
        Self(HeaderValue::from_static(""))
    }

    /// A fresh random id: 32 lowercase hex digits.
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bits: u128 = rand::random();
        let mut digits = [0u8; 32];
        for (i, d) in digits.iter_mut().enumerate() {
            *d = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
        }
        Self(HeaderValue::from_bytes(&digits).unwrap_or_else(|_| HeaderValue::from_static("0")))
    }

    /// The client's id, if it is safe to keep (shares the client's bytes).
    pub fn from_client(value: &HeaderValue) -> Option<Self> {
        value.to_str().ok().filter(|v| valid_request_id(v)).map(|_| Self(value.clone()))
    }

    /// Whether no id was set yet.
    pub fn is_unset(&self) -> bool {
        self.0.is_empty()
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("")
    }

    /// The id as a header value (a reference count, not a copy).
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request id is kept from the client only if it is 1..=128 of `[A-Za-z0-9._:-]`.
pub fn valid_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        assert!(valid_request_id(a.as_str()));
    }

    #[test]
    fn client_ids_are_kept_only_when_safe() {
        let ok = HeaderValue::from_static("trace-1:a.b_c");
        assert_eq!(RequestId::from_client(&ok).map(|r| r.as_str().to_owned()).as_deref(), Some("trace-1:a.b_c"));
        for bad in ["", "a b", "x\"y", &"z".repeat(129)] {
            assert!(RequestId::from_client(&HeaderValue::from_str(bad).unwrap()).is_none(), "{bad:?}");
        }
        assert!(RequestId::unset().is_unset());
    }
}
