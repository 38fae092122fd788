//! Stage "forward", header half: strip every client copy of an identity header, then set
//! the trusted ones from the verified identity only.
//!
//! Stripping matches names case-insensitively (the header map stores them lowercase) and
//! treats `_` like `-`, because many app servers (CGI, WSGI, Rack, PHP) map both to the
//! same variable. Everything under the reserved prefix goes too. Names are validated and
//! built once, at compile time.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use pingora::http::RequestHeader;
use pingora::OrErr;
use toml::Spanned;

use crate::auth::Identity;
use crate::config::{file, ConfigError};

/// A header the gateway sets: its name, and the bytes pingora writes for it, built once
/// so that setting it copies no name (pingora would title-case and copy a `HeaderName`).
#[derive(Debug, Clone)]
pub struct Injected {
    name: HeaderName,
    wire: Bytes,
}

impl Injected {
    /// A header set under `name` (lowercase on the wire).
    pub fn new(name: HeaderName) -> Self {
        let wire = Bytes::copy_from_slice(name.as_str().as_bytes());
        Self { name, wire }
    }

    /// The header's name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// Sets the header on a request, replacing any value.
    pub fn set(&self, req: &mut RequestHeader, value: HeaderValue) -> pingora::Result<()> {
        req.insert_header(self.wire.clone(), value)
    }

    /// Sets the header on a response, replacing any value.
    pub fn set_response(&self, resp: &mut pingora::http::ResponseHeader, value: HeaderValue) -> pingora::Result<()> {
        resp.insert_header(self.wire.clone(), value)
    }
}

/// Prebuilt header names: what to strip and what to inject.
#[derive(Debug, Clone)]
pub struct HeaderPlan {
    reserved_prefix: Box<str>,
    strip: Box<[HeaderName]>,
    /// Environment header.
    pub environment: Injected,
    tenant: Injected,
    user: Injected,
    roles: Injected,
    test_account: Injected,
    pool: Injected,
    system_mode: Injected,
    db_schema: Injected,
    db_pool: Injected,
    /// Request id header.
    pub request_id: Injected,
}

/// What the gateway vouches for on one request.
#[derive(Debug)]
pub struct Trusted<'a> {
    /// The verified identity.
    pub identity: &'a Identity,
    /// The bound environment's name, prebuilt.
    pub environment: &'a HeaderValue,
    /// The chosen pool's name, prebuilt.
    pub pool: &'a HeaderValue,
    /// The request id (validated client value or generated).
    pub request_id: &'a RequestId,
    /// Whether to pass the client's `Authorization` header on.
    pub forward_authorization: bool,
    /// Whether the backend may bypass per-user filtering.
    pub system_mode: bool,
    /// Rendered database schema hint.
    pub db_schema: Option<&'a str>,
    /// Rendered database pool hint.
    pub db_pool: Option<&'a str>,
}

impl HeaderPlan {
    /// Validates and builds `[headers]`.
    pub fn compile(raw: &file::Headers) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut name = |key: &str, value: &Spanned<String>| -> HeaderName {
            let lowered = value.get_ref().to_ascii_lowercase();
            HeaderName::from_bytes(lowered.as_bytes()).unwrap_or_else(|_| {
                errors.push(ConfigError::at(
                    value.span(),
                    format!("headers.{key}"),
                    format!("`{}` is not a valid header name", value.get_ref()),
                    "use letters, digits and dashes, e.g. `x-isogate-tenant`",
                ));
                HeaderName::from_static("x-invalid")
            })
        };
        let environment = name("environment", &raw.environment);
        let tenant = name("tenant", &raw.tenant);
        let user = name("user", &raw.user);
        let roles = name("roles", &raw.roles);
        let test_account = name("test_account", &raw.test_account);
        let pool = name("pool", &raw.pool);
        let request_id = name("request_id", &raw.request_id);
        let system_mode = name("system_mode", &raw.system_mode);
        let db_schema = name("db_schema", &raw.db_schema);
        let db_pool = name("db_pool", &raw.db_pool);
        let mut strip = vec![
            environment.clone(),
            tenant.clone(),
            user.clone(),
            roles.clone(),
            test_account.clone(),
            pool.clone(),
            request_id.clone(),
            system_mode.clone(),
            db_schema.clone(),
            db_pool.clone(),
        ];
        for (i, extra) in raw.strip.iter().enumerate() {
            strip.push(name(&format!("strip[{i}]"), extra));
        }
        let prefix = raw.reserved_prefix.get_ref().to_ascii_lowercase().replace('_', "-");
        if prefix.len() < 3 {
            errors.push(ConfigError::at(
                raw.reserved_prefix.span(),
                "headers.reserved_prefix",
                format!("`{prefix}` is too short and would strip ordinary headers"),
                "use a specific prefix such as `x-isogate-`",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            reserved_prefix: prefix.into(),
            strip: strip.into(),
            environment: Injected::new(environment),
            tenant: Injected::new(tenant),
            user: Injected::new(user),
            roles: Injected::new(roles),
            test_account: Injected::new(test_account),
            pool: Injected::new(pool),
            system_mode: Injected::new(system_mode),
            db_schema: Injected::new(db_schema),
            db_pool: Injected::new(db_pool),
            request_id: Injected::new(request_id),
        })
    }

    /// Whether a client header of this name must be removed. Both sides are lowercase (a
    /// `HeaderName` always is, and the prefix is stored lowercased).
    fn is_identity(&self, name: &str) -> bool {
        let n = name.as_bytes();
        let prefix = self.reserved_prefix.as_bytes();
        n.get(..prefix.len()).is_some_and(|start| same_name(start, prefix))
            || self.strip.iter().any(|s| same_name(n, s.as_str().as_bytes()))
    }

    /// Removes every client-supplied identity header (all values of each); returns how many
    /// values were removed. The names are copied onto the stack, so a request that spoofs
    /// a few short names costs no allocation; more or longer ones are cloned.
    pub fn strip(&self, req: &mut RequestHeader) -> usize {
        const NAMES: usize = 8;
        const NAME_BYTES: usize = 64;
        let mut copies = [[0u8; NAME_BYTES]; NAMES];
        let mut lens = [0usize; NAMES];
        let mut count = 0;
        for name in req.headers.keys().filter(|n| self.is_identity(n.as_str())) {
            let text = name.as_str().as_bytes();
            if count == NAMES || text.len() > NAME_BYTES {
                let doomed: Vec<HeaderName> =
                    req.headers.keys().filter(|n| self.is_identity(n.as_str())).cloned().collect();
                return remove_all(req, doomed.iter().map(HeaderName::as_str));
            }
            copies[count][..text.len()].copy_from_slice(text);
            lens[count] = text.len();
            count += 1;
        }
        // Header names are ASCII, so every copy is a str.
        let names = copies.iter().zip(lens).take(count).filter_map(|(c, len)| std::str::from_utf8(&c[..len]).ok());
        remove_all(req, names)
    }

    /// The client's request id, when exactly one is present and it is safe to keep.
    pub fn client_request_id(&self, req: &RequestHeader) -> Option<RequestId> {
        let mut values = req.headers.get_all(&self.request_id.name).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        RequestId::from_client(value)
    }

    /// Sets the trusted headers on the upstream request. A claim that is missing leaves its
    /// header absent; the client's copy was removed by `strip`.
    pub fn inject(&self, req: &mut RequestHeader, trusted: &Trusted<'_>) -> pingora::Result<()> {
        const TRUE: HeaderValue = HeaderValue::from_static("true");
        let values = &trusted.identity.header_values;
        self.environment.set(req, trusted.environment.clone())?;
        self.pool.set(req, trusted.pool.clone())?;
        self.request_id.set(req, trusted.request_id.header_value())?;
        for (header, value) in
            [(&self.tenant, &values.tenant), (&self.user, &values.user), (&self.roles, &values.roles)]
        {
            if let Some(v) = value {
                header.set(req, v.clone())?;
            }
        }
        if trusted.identity.test_account {
            self.test_account.set(req, TRUE)?;
        }
        if trusted.system_mode {
            self.system_mode.set(req, TRUE)?;
        }
        for (header, value) in [(&self.db_schema, trusted.db_schema), (&self.db_pool, trusted.db_pool)] {
            if let Some(v) = value {
                header
                    .set(req, HeaderValue::from_str(v).or_err(pingora::ErrorType::InternalError, "database hint")?)?;
            }
        }
        if !trusted.forward_authorization {
            req.remove_header(&AUTHORIZATION);
        }
        Ok(())
    }
}

/// Removes every value of each of `names`; returns how many values went.
fn remove_all<'n>(req: &mut RequestHeader, names: impl Iterator<Item = &'n str>) -> usize {
    let mut removed = 0;
    for name in names {
        removed += req.headers.get_all(name).iter().count();
        req.remove_header(name);
    }
    removed
}

/// Whether two lowercase header names are the same with `_` and `-` read alike.
fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (matches!(x, b'_' | b'-') && matches!(y, b'_' | b'-')))
}

mod request_id;

pub use request_id::{valid_request_id, RequestId};

#[cfg(test)]
mod tests;
