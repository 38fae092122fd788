//! Limits on the request head, checked before any other stage: the target's length
//! (414) and the headers' count and sizes (431). Body limits belong to routes; the time
//! a head may take and its size on the wire are enforced as it is read (`connections`).

use http::request::Parts;

use crate::config::file;
use crate::reject::Reject;

/// Compiled `[limits]` for the request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest request target, in bytes.
    pub max_uri_bytes: usize,
    /// Largest single header (name and value), in bytes.
    pub max_header_bytes: usize,
    /// Largest sum of every header's name and value, in bytes.
    pub max_request_header_bytes: usize,
    /// Most headers.
    pub max_headers: usize,
    /// From the first byte of a head to its end.
    pub read_timeout: std::time::Duration,
}

impl HeadLimits {
    /// Takes the head limits of `[limits]`.
    pub fn new(raw: &file::Limits) -> Self {
        Self {
            max_uri_bytes: raw.max_uri_bytes,
            max_header_bytes: raw.max_header_bytes,
            max_request_header_bytes: raw.max_request_header_bytes,
            max_headers: raw.max_headers,
            read_timeout: std::time::Duration::from_secs(raw.header_read_timeout_seconds),
        }
    }

    /// The largest head worth reading at all: a target and headers at their limits,
    /// with their separators and line ends. Past it the head is refused unread.
    pub fn max_head_bytes(&self) -> usize {
        self.max_uri_bytes + self.max_request_header_bytes + 4 * self.max_headers + 64
    }

    /// Refuses a head over any limit: 414 for the target, 431 for the headers.
    pub fn check(&self, head: &Parts) -> Result<(), Reject> {
        let target = head.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
        if target > self.max_uri_bytes {
            return Err(Reject::UriTooLong);
        }
        if head.headers.len() > self.max_headers {
            return Err(Reject::HeadersTooLarge);
        }
        let mut total = 0;
        for (name, value) in &head.headers {
            let size = name.as_str().len() + value.len();
            if size > self.max_header_bytes {
                return Err(Reject::HeadersTooLarge);
            }
            total += size;
        }
        if total > self.max_request_header_bytes {
            return Err(Reject::HeadersTooLarge);
        }
        Ok(())
    }
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self::new(&file::Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(path: &str, headers: &[(&str, String)]) -> Parts {
        let mut b = http::Request::builder().uri(path);
        for (n, v) in headers {
            b = b.header(*n, v.as_str());
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn each_limit_refuses_with_its_status() {
        let limits = HeadLimits {
            max_uri_bytes: 20,
            max_header_bytes: 30,
            max_request_header_bytes: 50,
            max_headers: 3,
            read_timeout: std::time::Duration::from_secs(1),
        };
        assert_eq!(limits.check(&head("/ok", &[("a", "x".repeat(28))])), Ok(()));
        assert_eq!(limits.check(&head(&format!("/{}", "x".repeat(20)), &[])), Err(Reject::UriTooLong));
        assert_eq!(limits.check(&head("/?q=12345678901234567", &[])), Err(Reject::UriTooLong), "the query counts");
        assert_eq!(limits.check(&head("/", &[("a", "x".repeat(30))])), Err(Reject::HeadersTooLarge));
        let four: Vec<_> = ["a", "b", "c", "d"].iter().map(|n| (*n, "1".to_owned())).collect();
        assert_eq!(limits.check(&head("/", &four)), Err(Reject::HeadersTooLarge));
        let big = [("a", "x".repeat(25)), ("b", "x".repeat(25))];
        assert_eq!(limits.check(&head("/", &big)), Err(Reject::HeadersTooLarge), "the sum counts");
    }
}
