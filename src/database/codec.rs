//! The client side of the PostgreSQL wire protocol, version 3: the startup packet
//! (untrusted, parsed under hard limits), frontend message framing, and the few backend
//! messages the gateway writes itself. Nothing here does I/O, so it can be tested and
//! fuzzed alone.

use std::borrow::Cow;

pub mod oauthbearer;

/// Largest startup packet accepted, in bytes, length word included (PostgreSQL's own
/// limit, `MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_BYTES: usize = 10_000;
/// Most parameters accepted in a startup packet.
pub const MAX_STARTUP_PARAMETERS: usize = 64;

/// Protocol 3.0.
const PROTOCOL_3_0: u32 = 3 << 16;
/// `SSLRequest`'s code.
const SSL_REQUEST: u32 = 80_877_103;
/// `GSSENCRequest`'s code.
const GSSENC_REQUEST: u32 = 80_877_104;
/// `CancelRequest`'s code.
const CANCEL_REQUEST: u32 = 80_877_102;

/// The first byte of a TLS handshake record: a client negotiating TLS directly.
pub const TLS_HANDSHAKE: u8 = 0x16;

/// A packet sent before the session starts (after the length word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// The client asks to switch to TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption (declined).
    GssEncRequest,
    /// A cancel request for the session holding this key.
    Cancel(BackendKey),
    /// A startup message: protocol 3.x with its parameters.
    Start(StartupParams),
}

/// A session's cancel key, as `BackendKeyData` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendKey {
    /// The process id.
    pub pid: i32,
    /// The secret.
    pub secret: i32,
}

/// The parameters of a startup message, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupParams {
    /// The minor protocol version the client asked for (0 for 3.0).
    pub minor: u16,
    /// Name and value pairs.
    pub pairs: Vec<(String, String)>,
}

impl StartupParams {
    /// The value of parameter `name`, if sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Protocol options (`_pq_.*`) the client asked for; the gateway supports none.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().filter(|(n, _)| n.starts_with("_pq_.")).map(|(n, _)| n.as_str())
    }

    /// The access reason: `-c isogate.reason=...` in `options` (libpq's `\ ` escapes
    /// a space), else an `application_name` of the form `reason: ...`.
    pub fn access_reason(&self) -> Option<Cow<'_, str>> {
        self.get("options").and_then(reason_in_options).or_else(|| {
            let name = self.get("application_name")?.strip_prefix("reason:")?.trim();
            (!name.is_empty()).then_some(Cow::Borrowed(name))
        })
    }
}

/// The value of `isogate.reason` in a libpq `options` string: words separated by
/// spaces, `\` escaping the next character.
fn reason_in_options(options: &str) -> Option<Cow<'_, str>> {
    let start = options.find("isogate.reason=")? + "isogate.reason=".len();
    let rest = &options[start..];
    if !rest.contains('\\') {
        let end = rest.find(' ').unwrap_or(rest.len());
        return Some(Cow::Borrowed(&rest[..end])).filter(|r| !r.is_empty());
    }
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.extend(chars.next()),
            ' ' => break,
            c => value.push(c),
        }
    }
    (!value.is_empty()).then_some(Cow::Owned(value))
}

/// Why a startup packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// The length word is below 8 or above `MAX_STARTUP_BYTES`.
    #[error("the startup packet length is out of bounds")]
    BadLength,
    /// The packet ends inside a field.
    #[error("the startup packet is truncated")]
    Truncated,
    /// A protocol version other than 3.x, or an unknown request code.
    #[error("unsupported frontend protocol")]
    UnsupportedProtocol,
    /// A parameter name or value is not UTF-8, a name is empty or repeated, or there
    /// are more than `MAX_STARTUP_PARAMETERS`.
    #[error("invalid startup parameters")]
    BadParameters,
}

/// Reads the length word of a startup packet: the number of bytes that follow it.
pub fn startup_length(word: [u8; 4]) -> Result<usize, StartupError> {
    let length = u32::from_be_bytes(word) as usize;
    if !(8..=MAX_STARTUP_BYTES).contains(&length) {
        return Err(StartupError::BadLength);
    }
    Ok(length - 4)
}

/// Parses the body of a startup packet (everything after the length word).
pub fn parse_startup(body: &[u8]) -> Result<Startup, StartupError> {
    let (code, rest) = body.split_first_chunk::<4>().ok_or(StartupError::Truncated)?;
    match u32::from_be_bytes(*code) {
        SSL_REQUEST if rest.is_empty() => Ok(Startup::SslRequest),
        GSSENC_REQUEST if rest.is_empty() => Ok(Startup::GssEncRequest),
        CANCEL_REQUEST => {
            let (pid, secret) = rest.split_first_chunk::<4>().ok_or(StartupError::Truncated)?;
            let secret: [u8; 4] = secret.try_into().map_err(|_| StartupError::Truncated)?;
            Ok(Startup::Cancel(BackendKey { pid: i32::from_be_bytes(*pid), secret: i32::from_be_bytes(secret) }))
        }
        SSL_REQUEST | GSSENC_REQUEST => Err(StartupError::BadLength),
        version if version >> 16 == PROTOCOL_3_0 >> 16 => {
            Ok(Startup::Start(StartupParams { minor: version as u16, pairs: parameters(rest)? }))
        }
        _ => Err(StartupError::UnsupportedProtocol),
    }
}

/// Name/value pairs, each NUL-terminated, closed by one more NUL.
fn parameters(mut rest: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    loop {
        match rest {
            [0] => return Ok(pairs),
            [] => return Err(StartupError::Truncated),
            _ => {}
        }
        let (name, after) = cstr(rest)?;
        let (value, after) = cstr(after)?;
        if name.is_empty() || pairs.len() == MAX_STARTUP_PARAMETERS || pairs.iter().any(|(n, _)| *n == name) {
            return Err(StartupError::BadParameters);
        }
        pairs.push((name.to_owned(), value.to_owned()));
        rest = after;
    }
}

/// A NUL-terminated UTF-8 string and what follows it.
fn cstr(bytes: &[u8]) -> Result<(&str, &[u8]), StartupError> {
    let nul = bytes.iter().position(|b| *b == 0).ok_or(StartupError::Truncated)?;
    let text = std::str::from_utf8(&bytes[..nul]).map_err(|_| StartupError::BadParameters)?;
    Ok((text, &bytes[nul + 1..]))
}

/// The password in the body of a `PasswordMessage` (`p`): a NUL-terminated string.
pub fn password(body: &[u8]) -> Option<&[u8]> {
    match body.split_last() {
        Some((0, text)) if !text.contains(&0) => Some(text),
        _ => None,
    }
}

/// A message header: its type byte and the length of the body that follows.
pub fn message_header(header: [u8; 5]) -> Result<(u8, usize), StartupError> {
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if length < 4 {
        return Err(StartupError::BadLength);
    }
    Ok((header[0], length - 4))
}

/// Appends one message: type, length, body.
fn message(out: &mut Vec<u8>, tag: u8, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let length = u32::try_from(out.len() - at).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&length.to_be_bytes());
}

fn put_cstr(out: &mut Vec<u8>, s: &str) {
    // Values written here come from the configuration or the gateway itself; a NUL in
    // one would end the field early, so it is cut there.
    out.extend_from_slice(s.split('\0').next().unwrap_or("").as_bytes());
    out.push(0);
}

/// `AuthenticationCleartextPassword`.
pub fn cleartext_password_request(out: &mut Vec<u8>) {
    message(out, b'R', |b| b.extend_from_slice(&3u32.to_be_bytes()));
}

/// `AuthenticationOk`.
pub fn authentication_ok(out: &mut Vec<u8>) {
    message(out, b'R', |b| b.extend_from_slice(&0u32.to_be_bytes()));
}

/// `ParameterStatus`.
pub fn parameter_status(out: &mut Vec<u8>, name: &str, value: &str) {
    message(out, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

/// `BackendKeyData`.
pub fn backend_key_data(out: &mut Vec<u8>, key: BackendKey) {
    message(out, b'K', |b| {
        b.extend_from_slice(&key.pid.to_be_bytes());
        b.extend_from_slice(&key.secret.to_be_bytes());
    });
}

/// `ReadyForQuery` with transaction status `I` (idle).
pub fn ready_for_query(out: &mut Vec<u8>) {
    message(out, b'Z', |b| b.push(b'I'));
}

/// `NegotiateProtocolVersion`: the newest minor version served (0) and the protocol
/// options not recognised.
pub fn negotiate_protocol_version<'a>(out: &mut Vec<u8>, unrecognised: impl Iterator<Item = &'a str>) {
    let names: Vec<&str> = unrecognised.collect();
    message(out, b'v', |b| {
        b.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        b.extend_from_slice(&u32::try_from(names.len()).unwrap_or(0).to_be_bytes());
        for name in names {
            put_cstr(b, name);
        }
    });
}

/// A `FATAL` `ErrorResponse` with its SQLSTATE, message and hint.
pub fn fatal(out: &mut Vec<u8>, sqlstate: &str, text: &str, hint: &str) {
    message(out, b'E', |b| {
        for (field, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', sqlstate), (b'M', text), (b'H', hint)] {
            b.push(field);
            put_cstr(b, value);
        }
        b.push(0);
    });
}

/// The message a gateway sends to a server to cancel its query.
pub fn cancel_request(key: BackendKey) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&16u32.to_be_bytes());
    out[4..8].copy_from_slice(&CANCEL_REQUEST.to_be_bytes());
    out[8..12].copy_from_slice(&key.pid.to_be_bytes());
    out[12..].copy_from_slice(&key.secret.to_be_bytes());
    out
}

#[cfg(test)]
mod tests;
