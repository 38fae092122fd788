//! Stage 1, identify: the token is read from its sources (`source`), its issuer picked,
//! its signature and time claims verified, and its claims mapped into an `Identity`.
//!
//! `Identity` is the only output other stages trust. Every failure is one `AuthError`
//! with a stable reason; nothing here knows about sockets or pingora.

mod cache;
mod claims;
mod issuer;
pub mod jwks;
pub mod source;
mod token;

use std::collections::HashMap;
use std::sync::Arc;

pub use claims::{glob_match, safe_value, ClaimNames, MAX_CLAIM_BYTES, MAX_ROLES};
pub use issuer::Issuer;
pub use token::MAX_LOGGED_BYTES;

use crate::config::{file, ConfigError, EnvLookup, Source};
use cache::TokenCache;

/// Seconds since the epoch.
fn now_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Index of an issuer in the compiled snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct IssuerId(pub u16);

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header.
    Missing,
    /// Not a well-formed bearer JWS.
    Malformed,
    /// Over `token.max_bytes`.
    TooLarge,
    /// The header carries `jku`, `x5u`, `jwk`, `x5c` or `crit`.
    HeaderForbidden,
    /// `alg` is `none`, not in the issuer's list, or does not fit the key's type.
    AlgorithmNotAllowed,
    /// The `typ` header is not in the issuer's `token_types` (e.g. an ID token).
    WrongTokenType,
    /// `iss` is missing or names no configured issuer.
    WrongIssuer,
    /// `aud` does not name this gateway.
    WrongAudience,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// A required claim (`exp`, `iss`, `aud`) is missing.
    ClaimMissing,
    /// An identity claim has the wrong type or an unsafe value.
    ClaimInvalid,
    /// The token's `kid` is not in the issuer's key set (after any allowed refetch).
    UnknownKid,
    /// The issuer's keys are not available (never fetched, or older than allowed).
    KeysUnavailable,
    /// Two token sources carry different tokens.
    Conflicting,
    /// The token's issuer does not list the source it came from.
    SourceNotAllowed,
}

impl AuthError {
    /// Stable reason string.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Malformed => "token_malformed",
            AuthError::TooLarge => "token_too_large",
            AuthError::HeaderForbidden => "token_header_forbidden",
            AuthError::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthError::WrongTokenType => "wrong_token_type",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::ClaimMissing => "claim_missing",
            AuthError::ClaimInvalid => "claim_invalid",
            AuthError::UnknownKid => "unknown_kid",
            AuthError::KeysUnavailable => "keys_unavailable",
            AuthError::Conflicting => "token_conflict",
            AuthError::SourceNotAllowed => "token_source_not_allowed",
        }
    }
}

/// Who is calling, from a verified token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The issuer that verified the token.
    pub issuer: IssuerId,
    /// The token's `kid` header, if any, cut to `MAX_LOGGED_BYTES`.
    pub kid: Option<String>,
    /// The environment claim.
    pub environment: Option<String>,
    /// The tenant claim.
    pub tenant: Option<String>,
    /// The user claim.
    pub user: Option<String>,
    /// The roles claim.
    pub roles: Vec<String>,
    /// Whether the token is a developer test account (flag claim or subject pattern).
    pub test_account: bool,
    /// The `iat` claim, in seconds since the epoch.
    pub issued_at: Option<u64>,
    /// The `exp` claim, in seconds since the epoch.
    pub expires_at: Option<u64>,
    /// The `nbf` claim, in seconds since the epoch.
    pub not_before: Option<u64>,
    /// The plan claim, when `rate_limit.plan_claim` names one.
    pub plan: Option<String>,
    /// Tenant, user and roles as the header values the upstream gets, built once with
    /// the identity (and cached with it), so a request copies none of them. Built by
    /// `with_header_values`: call it again after changing those claims.
    pub header_values: IdentityHeaders,
    /// The rate-limit keys, made on first use (so once per cached token); read them with
    /// `limit_key`.
    pub limit_keys: LimitKeys,
}

/// The rate-limit keys of an identity, per tenant and per user, made on first use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitKeys([std::sync::OnceLock<Box<str>>; 2]);

/// The identity's claims as prebuilt header values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// The tenant claim.
    pub tenant: Option<http::HeaderValue>,
    /// The user claim.
    pub user: Option<http::HeaderValue>,
    /// The roles, comma-separated.
    pub roles: Option<http::HeaderValue>,
}

impl Identity {
    /// Builds `header_values` from the claims (claims are visible ASCII, so they are
    /// valid header values).
    pub fn with_header_values(mut self) -> Self {
        let value = |s: &str| http::HeaderValue::from_str(s).ok();
        self.header_values = IdentityHeaders {
            tenant: self.tenant.as_deref().and_then(value),
            user: self.user.as_deref().and_then(value),
            roles: (!self.roles.is_empty()).then(|| value(&self.roles.join(","))).flatten(),
        };
        self
    }

    /// The key its requests are limited under: `env:tenant`, or `env:tenant:user` when
    /// `per_user` and there is a user (`-` stands for no tenant). The environment is the
    /// token's, which binding made equal to the request's.
    pub fn limit_key(&self, per_user: bool) -> &str {
        let user = self.user.as_deref().filter(|_| per_user);
        self.limit_keys.0[usize::from(user.is_some())].get_or_init(|| {
            let env = self.environment.as_deref().unwrap_or("-");
            let tenant = self.tenant.as_deref().unwrap_or("-");
            match user {
                Some(user) => format!("{env}:{tenant}:{user}").into(),
                None => format!("{env}:{tenant}").into(),
            }
        })
    }

    /// Whether the identity holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Seconds from `iat` (or from `now` when there is none) to `exp`.
    pub fn lifetime(&self, now: u64) -> Option<u64> {
        self.expires_at.map(|exp| exp.saturating_sub(self.issued_at.unwrap_or(now)))
    }
}

/// Compiled identification stage: issuers by `iss`, claim names, size limit.
#[derive(Debug)]
pub struct Authenticator {
    issuers: Box<[Issuer]>,
    by_iss: HashMap<Box<str>, IssuerId>,
    claims: ClaimNames,
    max_bytes: usize,
    /// `token.leeway_seconds`, the issuers' default.
    default_leeway: u64,
    cache: TokenCache,
    /// Where tokens are read on routes without their own list: every issuer's sources.
    sources: source::TokenSources,
    /// Each issuer's own sources, when it lists them, indexed by `IssuerId`.
    issuer_sources: Box<[Option<source::TokenSources>]>,
}

/// A refused token, with what is known of it for the audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub error: AuthError,
    /// The issuer the token named, when it is a configured one.
    pub issuer: Option<IssuerId>,
    /// The token's `kid`, when it had one, cut to `MAX_LOGGED_BYTES`.
    pub kid: Option<String>,
}

impl From<AuthError> for Refusal {
    fn from(error: AuthError) -> Self {
        Self { error, issuer: None, kid: None }
    }
}

/// Whether the verified-token cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Served from the cache: no signature work.
    Hit,
    /// Verified and cached.
    Miss,
    /// The cache is off.
    Bypass,
}

impl Authenticator {
    /// Identifies the caller from the `Authorization` header values alone.
    pub fn identify<'a, I>(&self, authorization: I) -> Result<(Arc<Identity>, CacheUse), Refusal>
    where
        I: Iterator<Item = &'a [u8]>,
    {
        self.verify(token::bearer(authorization, self.max_bytes)?)
    }

    /// Identifies the caller from a token given on its own, such as a database password:
    /// the same checks, issuers, keys and cache as a bearer token.
    pub fn identify_token(&self, token: &[u8]) -> Result<(Arc<Identity>, CacheUse), Refusal> {
        self.verify(token::compact(token, self.max_bytes)?)
    }

    /// Identifies the caller from a token found by `source::TokenSources::find`.
    /// The identity is shared with the verified-token cache, so a hit copies nothing.
    pub fn verify(&self, token: &str) -> Result<(Arc<Identity>, CacheUse), Refusal> {
        let now = now_seconds();
        if let Some(hit) = self.cache.get(token, now) {
            if self.issuer(hit.issuer).holds_key(hit.key_id) {
                return Ok((hit.identity, CacheUse::Hit));
            }
            self.cache.remove(token);
        }
        if !token::well_formed(token) {
            return Err(AuthError::Malformed.into());
        }
        let peeked = token::peek(token)?;
        let iss = peeked.iss.as_deref().ok_or(AuthError::ClaimMissing)?;
        let id = *self.by_iss.get(iss).ok_or(AuthError::WrongIssuer)?;
        let refusal = |error| Refusal { error, issuer: Some(id), kid: peeked.logged_kid() };
        let issuer = self.issuer(id);
        let (claims, key_id) = issuer.verify(&peeked).map_err(refusal)?;
        let identity = Arc::new(self.claims.identity(id, peeked.logged_kid(), &claims).map_err(refusal)?);
        if !self.cache.enabled() {
            return Ok((identity, CacheUse::Bypass));
        }
        let entry = cache::Cached { identity: Arc::clone(&identity), issuer: id, key_id, leeway: issuer.leeway };
        self.cache.insert(token, entry, now);
        Ok((identity, CacheUse::Miss))
    }

    /// Where tokens are read on routes that do not list their own sources.
    pub fn sources(&self) -> &source::TokenSources {
        &self.sources
    }

    /// Largest accepted token, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Whether the issuer accepts tokens from `from` (issuers without a list accept the
    /// `Authorization` header only).
    pub fn source_allowed(&self, issuer: IssuerId, from: &source::Source) -> bool {
        match self.issuer_sources.get(usize::from(issuer.0)) {
            Some(Some(own)) => own.contains(from),
            _ => *from == source::Source::Authorization,
        }
    }

    /// Tokens in the verified-token cache.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Every issuer whose keys are fetched from a JWKS.
    pub fn remote_keys(&self) -> impl Iterator<Item = &std::sync::Arc<jwks::RemoteKeys>> {
        self.issuers.iter().filter_map(Issuer::remote)
    }

    /// Keeps the JWKS caches of `previous` for issuers whose key source did not change.
    pub fn adopt_keys(&mut self, previous: &Authenticator) {
        for issuer in self.issuers.iter_mut() {
            if let Some(old) = previous.issuers.iter().find(|p| p.name == issuer.name) {
                issuer.adopt_keys(old);
            }
        }
    }

    /// Keeps the verified tokens of `previous` whose issuer did not change (same name,
    /// `iss`, audiences, algorithms, token types, leeway and key source), when `[token]`
    /// and the claim mapping did not change either: a token verified under the old rules
    /// is never served under new rules that could refuse it. Call after `adopt_keys`.
    pub fn adopt_cache(&self, previous: &Authenticator) {
        let same_token_rules = self.claims == previous.claims
            && self.max_bytes == previous.max_bytes
            && self.default_leeway == previous.default_leeway
            && self.cache.capacity() == previous.cache.capacity();
        if !same_token_rules {
            return;
        }
        let carried: Vec<Option<IssuerId>> = previous
            .issuers
            .iter()
            .map(|old| {
                let new = self.issuers.iter().position(|new| new.same_rules(old))?;
                u16::try_from(new).ok().map(IssuerId)
            })
            .collect();
        self.cache.adopt(&previous.cache, now_seconds(), |old| carried.get(usize::from(old.0)).copied().flatten());
    }

    /// Whether every JWKS issuer holds usable keys.
    pub fn ready(&self) -> bool {
        self.remote_keys().all(|r| r.ready())
    }

    /// The issuer with this id.
    pub fn issuer(&self, id: IssuerId) -> &Issuer {
        &self.issuers[usize::from(id.0)]
    }

    /// Looks an issuer up by its configured name.
    pub fn issuer_by_name(&self, name: &str) -> Option<IssuerId> {
        self.issuers.iter().position(|i| &*i.name == name).and_then(|i| u16::try_from(i).ok()).map(IssuerId)
    }

    /// Compiles `[token]`, `[claims]` and `[[issuers]]`.
    pub fn compile(raw: &file::File, source: &Source, env: EnvLookup<'_>) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        if raw.issuers.is_empty() {
            errors.push(ConfigError::at(
                0..0,
                "issuers",
                "no issuer is configured, so no token can be accepted",
                "add an [[issuers]] entry with its key material",
            ));
        }
        let max_bytes = *raw.token.max_bytes.get_ref();
        if !(256..=65_536).contains(&max_bytes) {
            errors.push(ConfigError::at(
                raw.token.max_bytes.span(),
                "token.max_bytes",
                format!("{max_bytes} is out of range"),
                "use a value from 256 to 65536 (default 8192)",
            ));
        }
        let mut issuers = Vec::new();
        let mut issuer_sources = Vec::new();
        let mut by_iss = HashMap::new();
        let mut names = HashMap::new();
        for (index, entry) in raw.issuers.iter().enumerate() {
            if let Some(first) = names.insert(entry.name.get_ref().as_str(), index) {
                errors.push(ConfigError::at(
                    entry.name.span(),
                    format!("issuers[{index}].name"),
                    format!("issuer name `{}` is already used by issuers[{first}]", entry.name.get_ref()),
                    "give each issuer its own name",
                ));
            }
            match Issuer::compile(index, entry, raw.token.leeway_seconds, source, env) {
                Ok(issuer) => {
                    let id = IssuerId(u16::try_from(issuers.len()).unwrap_or(u16::MAX));
                    if by_iss.insert(issuer.iss.clone(), id).is_some() {
                        errors.push(ConfigError::at(
                            entry.issuer.span(),
                            format!("issuers[{index}].issuer"),
                            format!("`{}` is configured twice", issuer.iss),
                            "merge the two entries into one issuer",
                        ));
                    }
                    issuers.push(issuer);
                    let key = format!("issuers[{index}].token_sources");
                    issuer_sources.push(
                        entry.token_sources.as_ref().map(|raw| source::TokenSources::compile(raw, &key, &mut errors)),
                    );
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let default_sources = source::TokenSources::default();
        let sources = if issuer_sources.iter().all(Option::is_none) {
            default_sources
        } else {
            source::TokenSources::union(issuer_sources.iter().map(|s| s.as_ref().unwrap_or(&default_sources)))
        };
        Ok(Self {
            sources,
            issuer_sources: issuer_sources.into(),
            cache: TokenCache::new(raw.token.cache_entries),
            issuers: issuers.into(),
            by_iss,
            claims: ClaimNames::new(&raw.claims, &raw.access, raw.rate_limit.plan_claim.as_deref()),
            max_bytes,
            default_leeway: raw.token.leeway_seconds,
        })
    }
}
