//! Stage 3, authorise: decide whether a bound identity may proceed, and say so with a
//! `Permit` that only this module can build. Routing takes a `Permit`, so it cannot run
//! before authorisation. The default is deny.
//!
//! Rules, in order: the environment trusts the token's issuer; the token names a tenant
//! where the environment requires one; the environment's access
//! matrix admits one of the caller's roles; admin routes need an admin role (and only
//! then get system mode); the route's role requirements; test accounts stay off critical
//! routes and within their token lifetime; listed roles give an access reason. An
//! environment in `report_only` serves requests that break the access rules (not the
//! issuer or tenant rules) and reports the would-be refusal instead.

mod reason;

use std::time::{SystemTime, UNIX_EPOCH};

pub use reason::clean_reason;

use crate::auth::{Identity, IssuerId};
use crate::bind::{Binding, EnvId};
use crate::reject::Reject;

/// A set of role names.
pub type Roles = Box<[Box<str>]>;

/// Proof that a request passed authorisation in one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    env: EnvId,
    system_mode: bool,
    access_reason: Option<String>,
    reported: Option<Reject>,
}

impl Permit {
    /// The environment the request was authorised in.
    pub fn env(&self) -> EnvId {
        self.env
    }

    /// Whether the backend may bypass per-user filtering (admin route, admin caller).
    pub fn system_mode(&self) -> bool {
        self.system_mode
    }

    /// The cleaned access reason, when the caller gave one.
    pub fn access_reason(&self) -> Option<&str> {
        self.access_reason.as_deref()
    }

    /// In report-only mode: the refusal the rules would have made.
    pub fn reported(&self) -> Option<Reject> {
        self.reported
    }
}

/// Compiled per-environment access rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentPolicy {
    /// Issuers this environment accepts; empty means every configured issuer.
    pub trusted_issuers: Box<[IssuerId]>,
    /// Roles that may enter at all; `None` means any caller.
    pub allowed_roles: Option<Roles>,
    /// Roles that must give an access reason here.
    pub reason_roles: Roles,
    /// Serve rule breaks and report them instead of refusing.
    pub report_only: bool,
    /// Tokens without a tenant claim are refused.
    pub tenant_required: bool,
}

/// Compiled per-route requirements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    /// At least one of these roles (unless `roles_by_env` names the environment).
    pub roles_any: Roles,
    /// All of these roles.
    pub roles_all: Roles,
    /// Per environment, at least one of these roles.
    pub roles_by_env: Box<[(EnvId, Roles)]>,
    /// Test accounts are refused.
    pub critical: bool,
}

/// Rules shared by every environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRules {
    /// Paths under this prefix are admin routes.
    pub admin_prefix: Option<Box<str>>,
    /// Roles allowed on admin routes.
    pub admin_roles: Roles,
    /// Longest test-account token lifetime, in seconds.
    pub test_max_lifetime: Option<u64>,
    /// Longest access reason kept, in characters.
    pub reason_max_chars: usize,
}

/// What authorisation looks at besides the identity.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The normalised path.
    pub path: &'a str,
    /// The raw access-reason header, if exactly one was sent.
    pub reason: Option<&'a [u8]>,
    /// Seconds since the epoch.
    pub now: u64,
}

impl RequestFacts<'_> {
    /// Seconds since the epoch, from the system clock.
    pub fn now_seconds() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }
}

fn holds_any(identity: &Identity, roles: &[Box<str>]) -> bool {
    roles.iter().any(|r| identity.has_role(r))
}

fn under_prefix(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix).is_some_and(|rest| prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
}

/// The policy inputs of one request.
#[derive(Debug, Clone, Copy)]
pub struct Policies<'a> {
    /// The bound environment's rules.
    pub environment: &'a EnvironmentPolicy,
    /// The matched route's requirements.
    pub route: &'a RoutePolicy,
    /// Shared rules.
    pub access: &'a AccessRules,
}

/// Authorises `identity` in the environment of `binding`.
pub fn authorize(
    identity: &Identity,
    binding: &Binding,
    policies: &Policies<'_>,
    facts: &RequestFacts<'_>,
) -> Result<Permit, Reject> {
    let env_policy = policies.environment;
    if !env_policy.trusted_issuers.is_empty() && !env_policy.trusted_issuers.contains(&identity.issuer) {
        return Err(Reject::IssuerNotTrusted);
    }
    if env_policy.tenant_required && identity.tenant.is_none() {
        return Err(Reject::TenantMissing);
    }
    let access_reason = facts.reason.and_then(|r| clean_reason(r, policies.access.reason_max_chars));
    let admin_route = policies.access.admin_prefix.as_deref().is_some_and(|p| under_prefix(p, facts.path));
    let broken = access_rules(identity, binding.env, policies, admin_route, access_reason.is_some(), facts.now);
    match broken {
        Some(reject) if !env_policy.report_only => Err(reject),
        reported => {
            Ok(Permit { env: binding.env, system_mode: admin_route && reported.is_none(), access_reason, reported })
        }
    }
}

/// The first access rule the request breaks, if any.
fn access_rules(
    identity: &Identity,
    env: EnvId,
    policies: &Policies<'_>,
    admin_route: bool,
    has_reason: bool,
    now: u64,
) -> Option<Reject> {
    let (env_policy, route, access) = (policies.environment, policies.route, policies.access);
    if env_policy.allowed_roles.as_deref().is_some_and(|allowed| !holds_any(identity, allowed)) {
        return Some(Reject::RoleNotAllowed);
    }
    if admin_route && !holds_any(identity, &access.admin_roles) {
        return Some(Reject::AdminRoleRequired);
    }
    let any = route.roles_by_env.iter().find(|(e, _)| *e == env).map_or(&route.roles_any, |(_, roles)| roles);
    if (!any.is_empty() && !holds_any(identity, any)) || !route.roles_all.iter().all(|r| identity.has_role(r)) {
        return Some(Reject::RoleRequired);
    }
    if identity.test_account {
        if route.critical {
            return Some(Reject::TestAccountForbidden);
        }
        if access.test_max_lifetime.is_some_and(|max| identity.lifetime(now).is_none_or(|l| l > max)) {
            return Some(Reject::TestAccountLifetime);
        }
    }
    if !has_reason && holds_any(identity, &env_policy.reason_roles) {
        return Some(Reject::ReasonRequired);
    }
    None
}

#[cfg(test)]
mod tests;
