//! How a database client hands its token over, by the listener's `client_auth`: as the
//! password (`AuthenticationCleartextPassword`, then `PasswordMessage`), or by SASL
//! `OAUTHBEARER` (RFC 7628, as PostgreSQL 18 speaks it). Either way the result is the
//! token's bytes, which admission verifies the same way.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec;
use super::codec::oauthbearer::{self, ClientResponse, SaslError};
use super::session::Early;
use crate::config::file::ClientAuth;
use crate::reject::Reject;

/// Largest `PasswordMessage` body read: the largest token `token.max_bytes` allows.
const MAX_PASSWORD_BYTES: usize = 65_536 + 1;
/// Largest SASL message body read: the largest token with its framing, and room for
/// the `host` and `port` pairs RFC 7628 defines.
const MAX_SASL_BYTES: usize = 65_536 + 1_024;

/// Asks for the token (after `out`, which holds what must go before the request) and
/// reads it. An OAUTHBEARER client asking for discovery gets `challenge` and then the
/// refusal `OauthDiscovery`.
pub(super) async fn read_token<S>(
    client: &mut S,
    mut out: Vec<u8>,
    how: ClientAuth,
    challenge: &str,
) -> Result<Vec<u8>, Early>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match how {
        ClientAuth::Password => codec::cleartext_password_request(&mut out),
        ClientAuth::Oauthbearer => oauthbearer::authentication_sasl(&mut out),
    }
    client.write_all(&out).await?;
    client.flush().await?;
    match how {
        ClientAuth::Password => {
            let body = read_message(client, MAX_PASSWORD_BYTES, Reject::ProtocolViolation).await?;
            let password = codec::password(&body).ok_or(Early(Reject::ProtocolViolation))?;
            Ok(password.to_vec())
        }
        ClientAuth::Oauthbearer => read_bearer_token(client, challenge).await,
    }
}

/// The SASL exchange up to the client's token.
async fn read_bearer_token<S>(client: &mut S, challenge: &str) -> Result<Vec<u8>, Early>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A client that only knows passwords (libpq before 18) finds no mechanism it
    // supports and leaves without a word.
    let mut header = [0u8; 5];
    match client.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Early(Reject::SaslMechanism)),
        Err(e) => return Err(e.into()),
    }
    let body = read_body(client, header, MAX_SASL_BYTES, Reject::SaslMalformed(SaslError::TooLong)).await?;
    let (mechanism, initial) = oauthbearer::initial_response(&body).map_err(malformed)?;
    if mechanism != oauthbearer::MECHANISM {
        return Err(Early(Reject::SaslMechanism));
    }
    let later;
    let response = match initial {
        Some(data) => data,
        None => {
            // No initial response: an empty challenge asks for it (RFC 4422 section 5).
            send_continue(client, b"").await?;
            later = read_message(client, MAX_SASL_BYTES, Reject::SaslMalformed(SaslError::TooLong)).await?;
            &later
        }
    };
    match oauthbearer::client_response(response).map_err(malformed)? {
        ClientResponse::Token(token) => Ok(token.to_vec()),
        ClientResponse::Discovery => {
            fail_exchange(client, challenge).await?;
            Err(Early(Reject::OauthDiscovery))
        }
    }
}

/// Ends a failed OAUTHBEARER exchange as RFC 7628 section 3.2.2 says: the error
/// response `challenge`, then the client's single `0x01`. The caller then writes the
/// refusal.
pub(super) async fn fail_exchange<S>(client: &mut S, challenge: &str) -> Result<(), Early>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_continue(client, challenge.as_bytes()).await?;
    let answer = read_message(client, MAX_SASL_BYTES, Reject::SaslMalformed(SaslError::Acknowledgement)).await?;
    oauthbearer::acknowledgement(&answer).map_err(malformed)
}

async fn send_continue<S: AsyncWrite + Unpin>(client: &mut S, data: &[u8]) -> Result<(), Early> {
    let mut out = Vec::with_capacity(9 + data.len());
    oauthbearer::authentication_sasl_continue(&mut out, data);
    client.write_all(&out).await?;
    client.flush().await?;
    Ok(())
}

fn malformed(e: SaslError) -> Early {
    Early(Reject::SaslMalformed(e))
}

/// Reads one `p` message (every authentication message a client sends) of at most
/// `max` body bytes; a longer one is refused with `too_long`.
async fn read_message<S: AsyncRead + Unpin>(stream: &mut S, max: usize, too_long: Reject) -> Result<Vec<u8>, Early> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await?;
    read_body(stream, header, max, too_long).await
}

/// The body of a `p` message whose `header` (type and length) was read.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    header: [u8; 5],
    max: usize,
    too_long: Reject,
) -> Result<Vec<u8>, Early> {
    let (tag, length) = codec::message_header(header).map_err(|_| Early(Reject::ProtocolViolation))?;
    if tag != b'p' {
        return Err(Early(Reject::ProtocolViolation));
    }
    if length > max {
        return Err(Early(too_long));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(body)
}
