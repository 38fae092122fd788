//! Claim mapping: turns a verified payload into an `Identity` using the claim names
//! from `[claims]`, so tokens from existing identity providers work unchanged.
//!
//! Values end up in upstream headers and audit lines, so they are held to a safe shape:
//! 1 to 256 bytes of visible ASCII. Anything else fails closed with `claim_invalid`.

use serde_json::Value;

use super::issuer::Claims;
use super::{AuthError, Identity, IssuerId};
use crate::config::file;

/// Longest accepted claim value, in bytes.
pub const MAX_CLAIM_BYTES: usize = 256;
/// Most roles accepted in one token.
pub const MAX_ROLES: usize = 64;

/// Configured claim names, and the subject patterns that mark test accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    environment: Box<str>,
    tenant: Box<str>,
    user: Box<str>,
    roles: Box<str>,
    test_account: Box<str>,
    test_subjects: Box<[Box<str>]>,
    plan: Option<Box<str>>,
}

impl ClaimNames {
    /// Builds the mapping from `[claims]` and `access.test_account_subjects`.
    pub fn new(raw: &file::Claims, access: &file::Access, plan_claim: Option<&str>) -> Self {
        Self {
            environment: raw.environment.as_str().into(),
            tenant: raw.tenant.as_str().into(),
            user: raw.user.as_str().into(),
            roles: raw.roles.as_str().into(),
            test_account: raw.test_account.as_str().into(),
            test_subjects: access.test_account_subjects.iter().map(|p| p.get_ref().as_str().into()).collect(),
            plan: plan_claim.map(Into::into),
        }
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl ClaimNames {
    /// Builds the identity from verified claims; a missing claim stays `None`.
    pub(crate) fn identity(
        &self,
        issuer: IssuerId,
        kid: Option<String>,
        claims: &Claims,
    ) -> Result<Identity, AuthError> {
        let user = text(claims.get(&*self.user), false)?;
        let flagged = match claims.get(&*self.test_account) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(AuthError::ClaimInvalid),
        };
        let by_subject = user.as_deref().is_some_and(|u| self.test_subjects.iter().any(|p| glob_match(p, u)));
        let seconds = |name: &str| claims.get(name).and_then(Value::as_u64);
        Ok(Identity {
            issuer,
            kid,
            environment: text(claims.get(&*self.environment), false)?,
            tenant: text(claims.get(&*self.tenant), true)?,
            user,
            roles: roles(claims.get(&*self.roles))?,
            test_account: flagged || by_subject,
            issued_at: seconds("iat"),
            expires_at: seconds("exp"),
            not_before: seconds("nbf"),
            plan: match &self.plan {
                Some(name) => text(claims.get(&**name), false)?,
                None => None,
            },
            header_values: Default::default(),
            ..Default::default()
        }
        .with_header_values())
    }
}

/// Whether `s` may travel in a trusted header: visible ASCII, 1..=256 bytes.
pub fn safe_value(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CLAIM_BYTES && s.bytes().all(|b| b.is_ascii_graphic())
}

fn text(value: Option<&Value>, allow_integer: bool) -> Result<Option<String>, AuthError> {
    let s = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if allow_integer && (n.is_u64() || n.is_i64()) => n.to_string(),
        Some(_) => return Err(AuthError::ClaimInvalid),
    };
    if safe_value(&s) {
        Ok(Some(s))
    } else {
        Err(AuthError::ClaimInvalid)
    }
}

fn roles(value: Option<&Value>) -> Result<Vec<String>, AuthError> {
    let roles: Vec<String> = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => s.split_ascii_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(AuthError::ClaimInvalid))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(AuthError::ClaimInvalid),
    };
    if roles.len() > MAX_ROLES || roles.iter().any(|r| !safe_value(r) || r.contains(',')) {
        return Err(AuthError::ClaimInvalid);
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names() -> ClaimNames {
        let access = file::Access {
            test_account_subjects: vec![toml::Spanned::new(0..0, "qa-*@example.com".to_owned())],
            ..Default::default()
        };
        ClaimNames::new(&file::Claims::default(), &access, Some("plan"))
    }

    fn identity(v: Value) -> Result<Identity, AuthError> {
        let Value::Object(claims) = v else { panic!("claims are an object") };
        names().identity(IssuerId(0), None, &claims)
    }

    #[test]
    fn maps_default_claims() {
        let id = identity(json!({"env":"prod","tenant":42,"sub":"u-1","roles":["admin","dev"],"is_test_account":true}))
            .unwrap();
        assert_eq!(id.environment.as_deref(), Some("prod"));
        assert_eq!(id.tenant.as_deref(), Some("42"));
        assert_eq!(id.user.as_deref(), Some("u-1"));
        assert_eq!(id.roles, vec!["admin", "dev"]);
        assert!(id.test_account);
    }

    #[test]
    fn missing_claims_stay_absent() {
        let id = identity(json!({})).unwrap();
        assert_eq!((id.environment, id.tenant, id.user), (None, None, None));
        assert!(id.roles.is_empty());
        assert!(!id.test_account);
    }

    #[test]
    fn subject_patterns_mark_test_accounts() {
        assert!(identity(json!({"sub":"qa-7@example.com"})).unwrap().test_account);
        assert!(!identity(json!({"sub":"qa-7@example.org"})).unwrap().test_account);
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn space_separated_roles_are_split() {
        assert_eq!(identity(json!({"roles":"a b  c"})).unwrap().roles, vec!["a", "b", "c"]);
    }

    #[test]
    fn hostile_values_fail_closed() {
        for v in [
            json!({"tenant":"acme\r\nx-isogate-user: root"}),
            json!({"tenant":"a b"}),
            json!({"tenant":""}),
            json!({"tenant":"é"}),
            json!({"tenant":"x".repeat(257)}),
            json!({"tenant":1.5}),
            json!({"tenant":{"id":1}}),
            json!({"env":["prod"]}),
            json!({"sub":7}),
            json!({"roles":["a,b"]}),
            json!({"roles":[1]}),
            json!({"roles":vec!["r"; 65]}),
            json!({"is_test_account":"false"}),
        ] {
            assert_eq!(identity(v.clone()).unwrap_err(), AuthError::ClaimInvalid, "{v}");
        }
    }
}
