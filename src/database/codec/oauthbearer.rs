//! SASL `OAUTHBEARER` (RFC 7628) as PostgreSQL 18 speaks it: the messages of the
//! exchange and a strict parser of the client's response. Nothing here does I/O.
//!
//! The exchange: the server sends `AuthenticationSASL` naming `OAUTHBEARER`; the client
//! answers with `SASLInitialResponse` (the mechanism and, usually, its initial
//! response); an initial response that carries no token asks for the server's
//! parameters (discovery). A failed token or a discovery request gets
//! `AuthenticationSASLContinue` with a JSON error, which the client acknowledges with
//! one `0x01` byte, and then the connection fails.

/// The mechanism's name on the wire.
pub const MECHANISM: &[u8] = b"OAUTHBEARER";
/// The separator of key/value pairs (`kvsep`).
pub const KVSEP: u8 = 0x01;

/// What the client's response asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientResponse<'a> {
    /// An `auth=` value with the bearer token (whatever follows `Bearer` and its spaces;
    /// a value of another scheme is an empty token, which verification refuses).
    Token(&'a [u8]),
    /// An empty `auth=` value: the client asks for the server's discovery parameters.
    Discovery,
}

/// Why an `OAUTHBEARER` message is malformed; each says what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// Longer than the gateway reads.
    #[error("the message is longer than a token allows")]
    TooLong,
    /// The `SASLInitialResponse` framing is broken.
    #[error("the SASLInitialResponse message is not framed as the protocol says")]
    Framing,
    /// The response is empty.
    #[error("the message is empty")]
    Empty,
    /// The GS2 header does not start with `n,` or `y,`.
    #[error("the GS2 header must start with \"n,\" or \"y,\"")]
    Gs2Header,
    /// The client asks for channel binding (`p=`), which OAUTHBEARER does not define.
    #[error("OAUTHBEARER has no channel binding, but the client asked for it")]
    ChannelBinding,
    /// The GS2 header names an authorization identity (`a=`).
    #[error("an authorization identity (a=) is not supported")]
    AuthorizationIdentity,
    /// No `0x01` after the GS2 header, or pairs not closed by `0x01`.
    #[error("key/value pairs must be separated and closed by 0x01")]
    Separator,
    /// A pair with an empty or non-alphabetic key, no `=`, or a value with a control
    /// character.
    #[error("a key/value pair is malformed")]
    Pair,
    /// No `auth` pair, or more than one.
    #[error("the message must carry exactly one auth value")]
    Auth,
    /// Bytes after the closing `0x01`.
    #[error("the message carries data after its final separator")]
    Trailing,
    /// After a failed exchange, the client sent something other than one `0x01`.
    #[error("after an error the client must answer with a single 0x01")]
    Acknowledgement,
}

/// `AuthenticationSASL` naming `OAUTHBEARER` alone.
pub fn authentication_sasl(out: &mut Vec<u8>) {
    super::message(out, b'R', |b| {
        b.extend_from_slice(&10u32.to_be_bytes());
        b.extend_from_slice(MECHANISM);
        b.extend_from_slice(&[0, 0]);
    });
}

/// `AuthenticationSASLContinue` carrying `data`.
pub fn authentication_sasl_continue(out: &mut Vec<u8>, data: &[u8]) {
    super::message(out, b'R', |b| {
        b.extend_from_slice(&11u32.to_be_bytes());
        b.extend_from_slice(data);
    });
}

/// Splits the body of a `SASLInitialResponse` into the mechanism the client chose and
/// its initial response (`None` when the client sent none, length -1).
pub fn initial_response(body: &[u8]) -> Result<(&[u8], Option<&[u8]>), SaslError> {
    let nul = body.iter().position(|b| *b == 0).ok_or(SaslError::Framing)?;
    let (mechanism, rest) = (&body[..nul], &body[nul + 1..]);
    let (length, data) = rest.split_first_chunk::<4>().ok_or(SaslError::Framing)?;
    match i32::from_be_bytes(*length) {
        -1 if data.is_empty() => Ok((mechanism, None)),
        n if usize::try_from(n).is_ok_and(|n| n == data.len()) => Ok((mechanism, Some(data))),
        _ => Err(SaslError::Framing),
    }
}

/// Parses a client response: `gs2-header kvsep *kvpair kvsep`, where the GS2 header is
/// `n,,` or `y,,` (no channel binding, no authorization identity), each pair is
/// `key=value` with an alphabetic key and a value of visible characters, spaces, tabs,
/// CR and LF, and exactly one pair is `auth`. Unknown keys are ignored (section 3.1).
pub fn client_response(input: &[u8]) -> Result<ClientResponse<'_>, SaslError> {
    let rest = match input {
        [] => return Err(SaslError::Empty),
        [b'n' | b'y', b',', rest @ ..] => rest,
        [b'p', ..] => return Err(SaslError::ChannelBinding),
        _ => return Err(SaslError::Gs2Header),
    };
    let rest = match rest {
        [b',', rest @ ..] => rest,
        [b'a', ..] => return Err(SaslError::AuthorizationIdentity),
        _ => return Err(SaslError::Gs2Header),
    };
    let mut rest = rest.strip_prefix(&[KVSEP]).ok_or(SaslError::Separator)?;
    let mut auth = None;
    loop {
        let end = rest.iter().position(|b| *b == KVSEP).ok_or(SaslError::Separator)?;
        let (pair, after) = (&rest[..end], &rest[end + 1..]);
        rest = after;
        if pair.is_empty() {
            break;
        }
        let eq = pair.iter().position(|b| *b == b'=').ok_or(SaslError::Pair)?;
        let (key, value) = (&pair[..eq], &pair[eq + 1..]);
        let value_ok = value.iter().all(|b| matches!(b, 0x21..=0x7E | b' ' | b'\t' | b'\r' | b'\n'));
        if key.is_empty() || !key.iter().all(u8::is_ascii_alphabetic) || !value_ok {
            return Err(SaslError::Pair);
        }
        if key == b"auth" && auth.replace(value).is_some() {
            return Err(SaslError::Auth);
        }
    }
    if !rest.is_empty() {
        return Err(SaslError::Trailing);
    }
    match auth.ok_or(SaslError::Auth)? {
        [] => Ok(ClientResponse::Discovery),
        value => Ok(ClientResponse::Token(bearer_token(value))),
    }
}

/// The token of an `auth` value: what follows a case-insensitive `Bearer ` and any more
/// spaces; empty for another scheme.
fn bearer_token(value: &[u8]) -> &[u8] {
    const SCHEME: &[u8] = b"bearer ";
    match value.split_at_checked(SCHEME.len()) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case(SCHEME) => {
            let start = token.iter().position(|b| *b != b' ').unwrap_or(token.len());
            &token[start..]
        }
        _ => &[],
    }
}

/// Checks the client's answer to the error response: a single `0x01`.
pub fn acknowledgement(input: &[u8]) -> Result<(), SaslError> {
    (input == [KVSEP]).then_some(()).ok_or(SaslError::Acknowledgement)
}

#[cfg(test)]
mod tests;
