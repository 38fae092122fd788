//! Stage "forward", header half: strip every client copy of an identity header, then set
//! the trusted ones from the verified identity only.
//!
//! Stripping matches names case-insensitively (the header map stores them lowercase) and
//! treats `_` like `-`, because many app servers (CGI, WSGI, Rack, PHP) map both to the
//! same variable. Everything under the reserved prefix goes too. Names are validated and
//! built once, at compile time.

use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use pingora::http::RequestHeader;
use toml::Spanned;

use crate::auth::Identity;
use crate::config::{file, ConfigError};

/// Longest client request id that is kept.
const MAX_REQUEST_ID: usize = 128;

/// Prebuilt header names: what to strip and what to inject.
#[derive(Debug, Clone)]
pub struct HeaderPlan {
    reserved_prefix: Box<str>,
    strip: Box<[HeaderName]>,
    /// Environment header.
    pub environment: HeaderName,
    tenant: HeaderName,
    user: HeaderName,
    roles: HeaderName,
    test_account: HeaderName,
    pool: HeaderName,
    system_mode: HeaderName,
    db_schema: HeaderName,
    db_pool: HeaderName,
    /// Request id header.
    pub request_id: HeaderName,
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
    pub request_id: &'a str,
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
            environment,
            tenant,
            user,
            roles,
            test_account,
            pool,
            system_mode,
            db_schema,
            db_pool,
            request_id,
        })
    }

    /// Whether a client header of this (lowercase) name must be removed.
    fn is_identity(&self, name: &str) -> bool {
        let n = name.as_bytes();
        let prefix = self.reserved_prefix.as_bytes();
        (n.len() >= prefix.len() && same_name(&n[..prefix.len()], prefix))
            || self.strip.iter().any(|s| same_name(n, s.as_str().as_bytes()))
    }

    /// Removes every client-supplied identity header (all values of each); returns how many
    /// values were removed. Allocates only when something is removed.
    pub fn strip(&self, req: &mut RequestHeader) -> usize {
        let found = req.headers.keys().filter(|n| self.is_identity(n.as_str())).count();
        if found == 0 {
            return 0;
        }
        let names: Vec<HeaderName> = req.headers.keys().filter(|n| self.is_identity(n.as_str())).cloned().collect();
        let mut removed = 0;
        for name in &names {
            removed += req.headers.get_all(name).iter().count();
            req.remove_header(name);
        }
        removed
    }

    /// The client's request id, when exactly one is present and it is safe to keep.
    pub fn client_request_id<'r>(&self, req: &'r RequestHeader) -> Option<&'r str> {
        let mut values = req.headers.get_all(&self.request_id).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        value.to_str().ok().filter(|v| valid_request_id(v))
    }

    /// Sets the trusted headers on the upstream request. A claim that is missing leaves its
    /// header absent; the client's copy was removed by `strip`.
    pub fn inject(&self, req: &mut RequestHeader, trusted: &Trusted<'_>) -> pingora::Result<()> {
        let id = trusted.identity;
        req.insert_header(&self.environment, trusted.environment.clone())?;
        req.insert_header(&self.pool, trusted.pool.clone())?;
        req.insert_header(&self.request_id, trusted.request_id)?;
        if let Some(tenant) = &id.tenant {
            req.insert_header(&self.tenant, tenant.as_str())?;
        }
        if let Some(user) = &id.user {
            req.insert_header(&self.user, user.as_str())?;
        }
        if !id.roles.is_empty() {
            req.insert_header(&self.roles, id.roles.join(","))?;
        }
        if id.test_account {
            req.insert_header(&self.test_account, "true")?;
        }
        if trusted.system_mode {
            req.insert_header(&self.system_mode, "true")?;
        }
        if let Some(schema) = trusted.db_schema {
            req.insert_header(&self.db_schema, schema)?;
        }
        if let Some(db_pool) = trusted.db_pool {
            req.insert_header(&self.db_pool, db_pool)?;
        }
        if !trusted.forward_authorization {
            req.remove_header(&AUTHORIZATION);
        }
        Ok(())
    }
}

/// Header names are compared as lowercase with `_` and `-` treated alike.
fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let fold = |c: u8| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            };
            fold(*x) == fold(*y)
        })
}

/// A request id is kept from the client only if it is 1..=128 of `[A-Za-z0-9._:-]`.
pub fn valid_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A fresh random request id: 32 lowercase hex digits.
pub fn new_request_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

#[cfg(test)]
mod tests;
