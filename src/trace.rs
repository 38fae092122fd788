//! W3C Trace Context (https://www.w3.org/TR/trace-context/): the gateway is one hop of
//! the caller's trace. A valid `traceparent` is continued under a new span id for the
//! gateway's hop, with its `tracestate`; a missing or malformed one starts a new trace
//! (a malformed header is replaced, never forwarded, and its `tracestate` dropped). The
//! trace id goes into the audit line, so audit lines join the app's traces.
//!
//! Reading and writing use fixed-size buffers: the only allocation is the header sent
//! upstream.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;

/// `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static(TRACEPARENT_NAME);
const TRACEPARENT_NAME: &str = "traceparent";
/// `tracestate`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
const TRACEPARENT_LEN: usize = 55;
/// The sampled flag, set on traces the gateway starts: it is the first hop, as an app
/// would be that starts its own traces (parent-based samplers follow it).
const SAMPLED: u8 = 0x01;

/// The trace a request belongs to and the gateway's span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
    /// Whether the client's trace is continued (its `tracestate` goes along).
    continued: bool,
}

impl TraceContext {
    /// Continues the client's trace, or starts one.
    pub fn of_request(headers: &HeaderMap) -> Self {
        let span_id = nonzero_random();
        let mut values = headers.get_all(TRACEPARENT).iter();
        // Several traceparent headers cannot be told apart: start afresh.
        let parsed = match (values.next(), values.next()) {
            (Some(value), None) => parse(value.as_bytes()),
            _ => None,
        };
        match parsed {
            Some((trace_id, flags)) => Self { trace_id, span_id, flags, continued: true },
            None => Self { trace_id: nonzero_random(), span_id, flags: SAMPLED, continued: false },
        }
    }

    /// The trace id, as 32 lowercase hex digits.
    pub fn trace_id(&self) -> TraceId {
        let mut hex = [0u8; 32];
        encode_hex(&self.trace_id, &mut hex);
        TraceId(hex)
    }

    /// Whether the client sent a valid `traceparent`.
    pub fn continued(&self) -> bool {
        self.continued
    }

    /// Sets the upstream request's `traceparent` to the gateway's span; drops the
    /// client's `tracestate` unless its trace is continued.
    pub fn apply(&self, upstream: &mut RequestHeader) -> pingora::Result<()> {
        let mut value = [0u8; TRACEPARENT_LEN];
        value[..3].copy_from_slice(b"00-");
        encode_hex(&self.trace_id, &mut value[3..35]);
        value[35] = b'-';
        encode_hex(&self.span_id, &mut value[36..52]);
        value[52] = b'-';
        encode_hex(&[self.flags], &mut value[53..55]);
        let value = HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static(""));
        // The name as static bytes: pingora would title-case a copy of a `HeaderName`.
        upstream.insert_header(TRACEPARENT_NAME, value)?;
        if !self.continued {
            upstream.remove_header(&TRACESTATE);
        }
        Ok(())
    }
}

/// A trace id as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 32]);

impl TraceId {
    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// Reads a `traceparent` value: the trace id and flags, or `None` if it is malformed.
/// Versions above `00` are read as `00` where they agree with it, as the spec asks.
fn parse(v: &[u8]) -> Option<([u8; 16], u8)> {
    if v.len() < TRACEPARENT_LEN || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = decode_hex::<1>(&v[..2])?[0];
    let longer_ok = version != 0 && v.get(TRACEPARENT_LEN).is_none_or(|b| *b == b'-');
    if version == 0xff || (v.len() > TRACEPARENT_LEN && !longer_ok) {
        return None;
    }
    let trace_id = decode_hex::<16>(&v[3..35])?;
    let parent_id = decode_hex::<8>(&v[36..52])?;
    let flags = decode_hex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    // Flags this version does not define are not passed on from a later version.
    let flags = if version == 0 { flags } else { flags & SAMPLED };
    Some((trace_id, flags))
}

/// Lowercase hex only: the spec refuses uppercase.
fn decode_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    fn digit(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// Random bytes, not all zero (an all-zero id is invalid).
fn nonzero_random<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id != [0; N] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn of(values: &[&str]) -> TraceContext {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(TRACEPARENT, HeaderValue::from_str(v).unwrap());
        }
        TraceContext::of_request(&headers)
    }

    fn sent(ctx: &TraceContext) -> String {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header(TRACESTATE, "vendor=1").unwrap();
        ctx.apply(&mut req).unwrap();
        let state = req.headers.get(TRACESTATE).map_or("-", |v| v.to_str().unwrap());
        format!("{} {state}", req.headers[TRACEPARENT].to_str().unwrap())
    }

    #[test]
    fn a_valid_parent_is_continued_under_a_new_span() {
        let ctx = of(&[VALID]);
        assert!(ctx.continued());
        assert_eq!(ctx.trace_id().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let out = sent(&ctx);
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{out}");
        assert!(out.ends_with("-01 vendor=1"), "{out}");
        assert_ne!(&out[36..52], "00f067aa0ba902b7", "the gateway's hop has its own span id");
    }

    #[test]
    fn malformed_parents_are_replaced_and_their_state_dropped() {
        let upper = VALID.to_uppercase();
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let long00 = format!("{VALID}-x");
        let ff = VALID.replacen("00", "ff", 1);
        for bad in [&upper, zero_trace, zero_parent, &long00, &ff, "00-abc", "garbage", &VALID[..54]] {
            let ctx = of(&[bad]);
            assert!(!ctx.continued(), "{bad}");
            assert_ne!(ctx.trace_id().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
            let out = sent(&ctx);
            assert!(out.starts_with("00-") && out.ends_with("-01 -") && out.len() == 57, "{bad}: {out}");
        }
        assert!(!of(&[VALID, VALID]).continued(), "two parents");
    }

    #[test]
    fn later_versions_are_read_as_00() {
        let v = format!("{}-more", VALID.replacen("00", "01", 1).replace("-01", "-03"));
        let ctx = of(&[&v]);
        assert!(ctx.continued());
        assert!(sent(&ctx).starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(sent(&ctx).ends_with("-01 vendor=1"), "only the sampled flag is kept");
    }

    #[test]
    fn a_missing_parent_starts_a_sampled_trace_with_fresh_ids() {
        let (a, b) = (of(&[]), of(&[]));
        assert!(!a.continued());
        assert_ne!(a.trace_id(), b.trace_id());
        let out = sent(&a);
        assert_eq!(&out[3..35], a.trace_id().as_str());
        assert!(out.ends_with("-01 -"));
    }
}
