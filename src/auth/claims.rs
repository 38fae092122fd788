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

/// Configured claim names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    environment: Box<str>,
    tenant: Box<str>,
    user: Box<str>,
    roles: Box<str>,
    test_account: Box<str>,
}

impl From<&file::Claims> for ClaimNames {
    fn from(raw: &file::Claims) -> Self {
        Self {
            environment: raw.environment.as_str().into(),
            tenant: raw.tenant.as_str().into(),
            user: raw.user.as_str().into(),
            roles: raw.roles.as_str().into(),
            test_account: raw.test_account.as_str().into(),
        }
    }
}

impl ClaimNames {
    /// Builds the identity from verified claims; a missing claim stays `None`.
    pub(crate) fn identity(
        &self,
        issuer: IssuerId,
        kid: Option<String>,
        claims: &Claims,
    ) -> Result<Identity, AuthError> {
        Ok(Identity {
            issuer,
            kid,
            environment: text(claims.get(&*self.environment), false)?,
            tenant: text(claims.get(&*self.tenant), true)?,
            user: text(claims.get(&*self.user), false)?,
            roles: roles(claims.get(&*self.roles))?,
            test_account: match claims.get(&*self.test_account) {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(AuthError::ClaimInvalid),
            },
        })
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
        ClaimNames::from(&file::Claims::default())
    }

    fn identity(v: Value) -> Result<Identity, AuthError> {
        let Value::Object(claims) = v else {
            panic!("claims are an object")
        };
        names().identity(IssuerId(0), None, &claims)
    }

    #[test]
    fn maps_default_claims() {
        let id = identity(json!({"env":"prod","tenant":42,"sub":"u-1","roles":["admin","dev"],"is_test_account":true})).unwrap();
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
    fn space_separated_roles_are_split() {
        assert_eq!(
            identity(json!({"roles":"a b  c"})).unwrap().roles,
            vec!["a", "b", "c"]
        );
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
            assert_eq!(
                identity(v.clone()).unwrap_err(),
                AuthError::ClaimInvalid,
                "{v}"
            );
        }
    }
}
