//! Stage 3, authorise: decide whether a bound identity may proceed, and say so with a
//! `Permit` that only this module can build. Routing takes a `Permit`, so it cannot run
//! before authorisation. The default is deny.

use crate::auth::{Identity, IssuerId};
use crate::bind::{Binding, EnvId};
use crate::reject::Reject;

/// Proof that a request passed authorisation in one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    env: EnvId,
}

impl Permit {
    /// The environment the request was authorised in.
    pub fn env(&self) -> EnvId {
        self.env
    }
}

/// Compiled per-environment access rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentPolicy {
    /// Issuers this environment accepts; empty means every configured issuer.
    pub trusted_issuers: Box<[IssuerId]>,
}

/// Authorises `identity` in the environment of `binding`.
pub fn authorize(
    identity: &Identity,
    binding: &Binding,
    policy: &EnvironmentPolicy,
) -> Result<Permit, Reject> {
    if !policy.trusted_issuers.is_empty() && !policy.trusted_issuers.contains(&identity.issuer) {
        return Err(Reject::IssuerNotTrusted);
    }
    Ok(Permit { env: binding.env })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(issuer: u16) -> Identity {
        Identity {
            issuer: IssuerId(issuer),
            kid: None,
            environment: None,
            tenant: None,
            user: None,
            roles: vec![],
            test_account: false,
        }
    }

    #[test]
    fn environment_accepts_only_its_issuers() {
        let binding = Binding { env: EnvId(2) };
        let open = EnvironmentPolicy {
            trusted_issuers: Box::new([]),
        };
        let strict = EnvironmentPolicy {
            trusted_issuers: Box::new([IssuerId(1)]),
        };
        assert_eq!(
            authorize(&identity(0), &binding, &open).unwrap().env(),
            EnvId(2)
        );
        assert_eq!(
            authorize(&identity(1), &binding, &strict).unwrap().env(),
            EnvId(2)
        );
        assert_eq!(
            authorize(&identity(0), &binding, &strict),
            Err(Reject::IssuerNotTrusted)
        );
    }
}
