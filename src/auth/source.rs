//! Where a token is read from, part of stage 1 (identify): an ordered list of sources
//! per route or per issuer — `Authorization: Bearer`, a named cookie, and on WebSocket
//! upgrades a query parameter or a `Sec-WebSocket-Protocol` entry — and how each source
//! is removed from the upstream request, so a token read anywhere but the
//! `Authorization` header never reaches the app.
//!
//! Every listed source is read: the same token in two places is one token, two
//! different tokens are refused (`token_conflict`). The subprotocol form is the entry
//! after a marker: a browser opens `new WebSocket(url, ["bearer", token])`, the upstream
//! sees neither entry, and the gateway answers the marker when the upstream picks none.

use std::borrow::Cow;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, COOKIE, SEC_WEBSOCKET_PROTOCOL};
use http::request::Parts;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{ErrorType, OrErr};
use toml::Spanned;

use super::{token, AuthError};
use crate::config::{file, ConfigError};

/// One compiled place a token may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `Authorization: Bearer <token>`.
    Authorization,
    /// The cookie of this name.
    Cookie(Box<str>),
    /// The query parameter of this name (WebSocket upgrades only).
    Query(Box<str>),
    /// The entry after this marker in `Sec-WebSocket-Protocol` (WebSocket upgrades only).
    Subprotocol(HeaderValue),
}

impl Source {
    fn only_on_upgrades(&self) -> bool {
        matches!(self, Source::Query(_) | Source::Subprotocol(_))
    }
}

/// An ordered list of sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSources {
    list: Box<[Source]>,
    /// Whether any source is not the `Authorization` header (so there is something to strip).
    strips: bool,
}

/// A token and where it was found.
#[derive(Debug)]
pub struct Found<'h, 's> {
    /// The compact JWS.
    pub token: Cow<'h, str>,
    /// The first listed source that carried it.
    pub source: &'s Source,
}

impl Default for TokenSources {
    fn default() -> Self {
        Self::new(vec![Source::Authorization])
    }
}

impl TokenSources {
    fn new(list: Vec<Source>) -> Self {
        let strips = list.iter().any(|s| *s != Source::Authorization);
        Self { list: list.into(), strips }
    }

    /// Compiles a `token_sources` list at `key`.
    pub fn compile(raw: &Spanned<Vec<file::TokenSource>>, key: &str, errors: &mut Vec<ConfigError>) -> Self {
        if raw.get_ref().is_empty() {
            errors.push(ConfigError::at(
                raw.span(),
                key,
                "the list is empty, so no token could be read",
                "list at least one source, e.g. [\"authorization\"]",
            ));
        }
        let mut list = Vec::new();
        for (i, s) in raw.get_ref().iter().enumerate() {
            let mut name = |n: &str, what: &str| -> Box<str> {
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                    errors.push(ConfigError::at(
                        raw.span(),
                        format!("{key}[{i}]"),
                        format!("`{n}` is not a usable {what} name"),
                        "use letters, digits, `-`, `_` and `.` only, e.g. \"access_token\"",
                    ));
                }
                n.into()
            };
            let source = match s {
                file::TokenSource::Authorization => Source::Authorization,
                file::TokenSource::Cookie(n) => Source::Cookie(name(n, "cookie")),
                file::TokenSource::Query(n) => Source::Query(name(n, "query parameter")),
                file::TokenSource::Subprotocol(n) => {
                    let marker = name(n, "subprotocol marker");
                    Source::Subprotocol(HeaderValue::from_str(&marker).unwrap_or(HeaderValue::from_static("bearer")))
                }
            };
            if list.contains(&source) {
                errors.push(ConfigError::at(
                    raw.span(),
                    format!("{key}[{i}]"),
                    "this source is listed twice",
                    "list each source once",
                ));
            }
            list.push(source);
        }
        Self::new(list)
    }

    /// The sources of `lists`, each once, in first-listed order.
    pub fn union<'a>(lists: impl Iterator<Item = &'a TokenSources>) -> Self {
        let mut all: Vec<Source> = Vec::new();
        for s in lists.flat_map(|l| l.list.iter()) {
            if !all.contains(s) {
                all.push(s.clone());
            }
        }
        Self::new(all)
    }

    /// Whether `source` is listed.
    pub fn contains(&self, source: &Source) -> bool {
        self.list.contains(source)
    }

    /// Reads every listed source (query and subprotocol only when `websocket`) and
    /// returns the token. No token → `Missing`; two different ones → `Conflicting`; a
    /// token that is not a compact JWS within `max_bytes` → `Malformed` / `TooLarge`.
    pub fn find<'h, 's>(
        &'s self,
        head: &'h Parts,
        websocket: bool,
        max_bytes: usize,
    ) -> Result<Found<'h, 's>, AuthError> {
        let mut found: Option<Found<'h, 's>> = None;
        let mut keep = |token: Cow<'h, str>, source: &'s Source| match &found {
            Some(first) if first.token != token => Err(AuthError::Conflicting),
            Some(_) => Ok(()),
            None => {
                found = Some(Found { token, source });
                Ok(())
            }
        };
        for source in self.list.iter().filter(|s| websocket || !s.only_on_upgrades()) {
            match source {
                Source::Authorization => {
                    let values = head.headers.get_all(AUTHORIZATION).iter().map(HeaderValue::as_bytes);
                    match token::bearer(values, max_bytes) {
                        Ok(t) => keep(Cow::Borrowed(t), source)?,
                        Err(AuthError::Missing) => {}
                        Err(e) => return Err(e),
                    }
                }
                Source::Cookie(name) => {
                    for value in cookies(head, name) {
                        keep(Cow::Borrowed(token::compact(value, max_bytes)?), source)?;
                    }
                }
                Source::Query(name) => {
                    for value in query_values(head.uri.query().unwrap_or(""), name) {
                        let value = match percent_decode(value.as_bytes()) {
                            Cow::Borrowed(_) => Cow::Borrowed(token::compact(value.as_bytes(), max_bytes)?),
                            Cow::Owned(v) => Cow::Owned(token::compact(&v, max_bytes)?.to_owned()),
                        };
                        keep(value, source)?;
                    }
                }
                Source::Subprotocol(marker) => {
                    let mut entries = protocols(head.headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter());
                    while let Some(entry) = entries.next() {
                        if entry.as_bytes() == marker.as_bytes() {
                            let value = entries.next().ok_or(AuthError::Malformed)?;
                            keep(Cow::Borrowed(token::compact(value.as_bytes(), max_bytes)?), source)?;
                        }
                    }
                }
            }
        }
        found.ok_or(AuthError::Missing)
    }

    /// Removes every listed cookie (unless `forward_cookie`), query parameter and
    /// subprotocol entry from the upstream request. Costs nothing when only the
    /// `Authorization` header is listed.
    pub fn strip(&self, upstream: &mut RequestHeader, forward_cookie: bool) -> pingora::Result<()> {
        if !self.strips {
            return Ok(());
        }
        for source in self.list.iter() {
            match source {
                Source::Authorization => {}
                Source::Cookie(name) if !forward_cookie => strip_cookie(upstream, name)?,
                Source::Cookie(_) => {}
                Source::Query(name) => strip_query(upstream, name)?,
                Source::Subprotocol(marker) => strip_subprotocol(upstream, marker)?,
            }
        }
        Ok(())
    }

    /// On a 101 answer to a client that offered a subprotocol marker, answers the marker
    /// when the upstream chose no subprotocol: a browser that offered subprotocols fails
    /// a handshake whose answer names none.
    pub fn answer_subprotocol(&self, client: &Parts, resp: &mut ResponseHeader) -> pingora::Result<()> {
        if !self.strips || resp.status != 101 || resp.headers.contains_key(SEC_WEBSOCKET_PROTOCOL) {
            return Ok(());
        }
        for source in self.list.iter() {
            if let Source::Subprotocol(marker) = source {
                let offered = client.headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter();
                if protocols(offered).any(|e| e.as_bytes() == marker.as_bytes()) {
                    return resp.insert_header(SEC_WEBSOCKET_PROTOCOL, marker.clone());
                }
            }
        }
        Ok(())
    }
}

/// The values of the cookies named `name` in every `Cookie` header (RFC 6265 section 5.4).
fn cookies<'h, 'n>(head: &'h Parts, name: &'n str) -> impl Iterator<Item = &'h [u8]> + use<'h, 'n> {
    head.headers.get_all(COOKIE).iter().flat_map(|v| v.as_bytes().split(|b| *b == b';')).filter_map(move |pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        let value = pair[eq + 1..].trim_ascii();
        let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
        (pair[..eq].trim_ascii() == name.as_bytes()).then_some(value)
    })
}

/// The raw values of the query parameters whose (decoded) name is `name`.
fn query_values<'q, 'n>(query: &'q str, name: &'n str) -> impl Iterator<Item = &'q str> + use<'q, 'n> {
    query.split('&').filter_map(move |pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(n.as_bytes()) == name.as_bytes()).then_some(v)
    })
}

/// `%XX` escapes decoded (a malformed escape stays as it is).
fn percent_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'%') {
        return Cow::Borrowed(raw);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match (raw[i], raw.get(i + 1).copied().and_then(hex), raw.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// The comma-separated entries of `Sec-WebSocket-Protocol` values, trimmed.
fn protocols<'h>(values: impl Iterator<Item = &'h HeaderValue> + 'h) -> impl Iterator<Item = &'h str> + 'h {
    values.filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim).filter(|e| !e.is_empty())
}

/// Replaces every value of `name` with `values` (removed when there are none).
fn replace_all(req: &mut RequestHeader, name: &HeaderName, values: Vec<Vec<u8>>) -> pingora::Result<()> {
    req.remove_header(name);
    for v in values.into_iter().filter(|v| !v.is_empty()) {
        let v = HeaderValue::from_bytes(&v).or_err(ErrorType::InternalError, "rebuilt header")?;
        req.append_header(name.clone(), v)?;
    }
    Ok(())
}

fn strip_cookie(req: &mut RequestHeader, name: &str) -> pingora::Result<()> {
    let named =
        |pair: &[u8]| pair.trim_ascii().split(|b| *b == b'=').next().map(<[u8]>::trim_ascii) == Some(name.as_bytes());
    let values = req.headers.get_all(COOKIE);
    if !values.iter().any(|v| v.as_bytes().split(|b| *b == b';').any(named)) {
        return Ok(());
    }
    let kept = values
        .iter()
        .map(|v| {
            let pairs: Vec<&[u8]> =
                v.as_bytes().split(|b| *b == b';').filter(|p| !named(p)).map(<[u8]>::trim_ascii).collect();
            pairs.join(&b"; "[..])
        })
        .collect();
    replace_all(req, &COOKIE, kept)
}

/// Removes every marker and the entry after it.
fn strip_subprotocol(req: &mut RequestHeader, marker: &HeaderValue) -> pingora::Result<()> {
    let is_marker = |e: &str| e.as_bytes() == marker.as_bytes();
    if !protocols(req.headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter()).any(is_marker) {
        return Ok(());
    }
    let value = {
        let mut kept = Vec::new();
        let mut entries = protocols(req.headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter());
        while let Some(entry) = entries.next() {
            if is_marker(entry) {
                entries.next();
            } else {
                kept.push(entry);
            }
        }
        kept.join(", ").into_bytes()
    };
    replace_all(req, &SEC_WEBSOCKET_PROTOCOL, vec![value])
}

fn strip_query(req: &mut RequestHeader, name: &str) -> pingora::Result<()> {
    let Some(query) = req.uri.query() else { return Ok(()) };
    if query_values(query, name).next().is_none() {
        return Ok(());
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| percent_decode(pair.split_once('=').map_or(*pair, |(n, _)| n).as_bytes()) != name.as_bytes())
        .collect();
    let path = req.uri.path();
    let target = if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) };
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = Some(target.parse().or_err(ErrorType::InternalError, "upstream target without the token")?);
    req.set_uri(http::Uri::from_parts(parts).or_err(ErrorType::InternalError, "upstream target")?);
    Ok(())
}

#[cfg(test)]
mod tests;
