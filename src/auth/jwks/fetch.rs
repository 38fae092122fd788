//! Fetching a key set over HTTP(S): optional OpenID discovery (whose `issuer` must match
//! the configured one exactly), then the JWKS itself, with a bounded time and body size.
//! `Cache-Control: max-age` sets the next refresh.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::keys::{usable_keys, KeyEntry};
use super::KeySource;

/// Largest JWKS or discovery document accepted, in bytes.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why a key set could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connection, TLS or timeout failure.
    #[error("cannot fetch {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The client error.
        source: reqwest::Error,
    },
    /// The server answered with a non-200 status.
    #[error("{url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The body was larger than allowed.
    #[error("{url} sent more than {MAX_BODY_BYTES} bytes")]
    TooLarge {
        /// The URL.
        url: String,
    },
    /// The body was not the expected JSON.
    #[error("{url} did not send a valid document: {reason}")]
    Garbage {
        /// The URL.
        url: String,
        /// The parse error.
        reason: String,
    },
    /// The discovery document names another issuer.
    #[error("discovery document names issuer `{found}`, expected `{expected}`")]
    IssuerMismatch {
        /// Configured issuer.
        expected: String,
        /// Issuer in the document.
        found: String,
    },
    /// The JWKS held no key usable for this issuer.
    #[error("{url} holds no usable key ({skipped} skipped)")]
    NoUsableKeys {
        /// The URL.
        url: String,
        /// Keys that did not fit.
        skipped: usize,
    },
}

impl FetchError {
    /// Short label for the fetch-result metric.
    pub fn result(&self) -> &'static str {
        match self {
            FetchError::Http { .. } => "unreachable",
            FetchError::Status { .. } => "bad_status",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Garbage { .. } => "garbage",
            FetchError::IssuerMismatch { .. } => "issuer_mismatch",
            FetchError::NoUsableKeys { .. } => "no_usable_keys",
        }
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Fetches and validates the key set; returns the keys and the server's max-age.
pub(super) async fn key_set(
    client: &reqwest::Client,
    source: &KeySource,
    iss: &str,
    allowed: &[Algorithm],
    timeout: Duration,
) -> Result<(Vec<KeyEntry>, Option<Duration>), FetchError> {
    let url = match source {
        KeySource::Jwks(url) => url.clone(),
        KeySource::Discovery(url) => {
            let (body, _) = get(client, url, timeout).await?;
            let doc: Discovery = serde_json::from_slice(&body)
                .map_err(|e| FetchError::Garbage { url: url.clone(), reason: e.to_string() })?;
            if doc.issuer != iss {
                let found = crate::auth::token::for_log(&doc.issuer).to_owned();
                return Err(FetchError::IssuerMismatch { expected: iss.to_owned(), found });
            }
            doc.jwks_uri
        }
    };
    let (body, max_age) = get(client, &url, timeout).await?;
    let set: JwkSet =
        serde_json::from_slice(&body).map_err(|e| FetchError::Garbage { url: url.clone(), reason: e.to_string() })?;
    let (keys, skipped) = usable_keys(&set, allowed);
    if keys.is_empty() {
        return Err(FetchError::NoUsableKeys { url, skipped });
    }
    Ok((keys, max_age))
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
    let http = |source| FetchError::Http { url: url.to_owned(), source };
    let mut resp = client.get(url).timeout(timeout).send().await.map_err(http)?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(FetchError::Status { url: url.to_owned(), status: resp.status().as_u16() });
    }
    if resp.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(FetchError::TooLarge { url: url.to_owned() });
    }
    let max_age = resp.headers().get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(max_age);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(FetchError::TooLarge { url: url.to_owned() });
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

/// `max-age` from a `Cache-Control` value.
fn max_age(value: &str) -> Option<Duration> {
    value
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age=")?.trim_matches('"').parse().ok().map(Duration::from_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_max_age() {
        assert_eq!(max_age("public, max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(max_age("max-age=\"60\", must-revalidate"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }
}
