//! Admission of a database session: the same stages as an HTTP request (identify, bind,
//! authorise, place) over the token given as the password, then the database target
//! named by the rendered `db_pool` and the login role rendered from the target's `user`.

use std::sync::Arc;

use crate::admission::{identify_token, Refused};
use crate::auth::Identity;
use crate::bind::{EnvId, RouteEnvironment};
use crate::policy::{self, Permit, Policies, RequestFacts, RoutePolicy};
use crate::reject::Reject;
use crate::routing::{self, Placement};
use crate::snapshot::Snapshot;
use crate::template::Values;

use super::target::TargetId;

/// A session that passed every stage.
#[derive(Debug)]
pub struct Admitted {
    /// The verified caller.
    pub identity: Arc<Identity>,
    /// Proof of authorisation in the listener's environment.
    pub permit: Permit,
    /// The pool and the rendered database hints.
    pub placement: Placement,
    /// The database target.
    pub target: TargetId,
    /// The login role the server connection signs in as.
    pub role: String,
    /// The session's environment.
    pub env: EnvId,
}

/// Admits a session of environment `env` (the listener's, or its TLS server name's), with `token` (the password) and the
/// access reason from the startup parameters.
pub async fn admit(snap: &Snapshot, env: EnvId, token: &[u8], reason: Option<&str>) -> Result<Admitted, Refused> {
    let refused = |reject| Refused { env: Some(env), ..Refused::early(reject) };
    let (identity, token_cache) = identify_token(snap, token)
        .await
        .map_err(|token| Refused { token: Some(token.clone()), ..refused(Reject::Unauthenticated(token.error)) })?;
    let refused =
        |reject| Refused { identity: Some(Arc::clone(&identity)), token_cache: Some(token_cache), ..refused(reject) };
    let binding =
        snap.binder.bind(Some(RouteEnvironment::Fixed(env)), identity.environment.as_deref()).map_err(refused)?;
    // A database session has no route: no path, no route-level requirement (empty
    // slices, so this allocates nothing).
    let no_route = RoutePolicy::default();
    let policies = Policies { environment: &snap.policies[env.index()], route: &no_route, access: &snap.access };
    let facts = RequestFacts { path: "", reason: reason.map(str::as_bytes), now: RequestFacts::now_seconds() };
    let permit = policy::authorize(&identity, &binding, &policies, &facts).map_err(refused)?;
    let env_name = snap.binder.name(env);
    let placement = routing::place(&permit, &identity, env_name, &snap.tenancy, &snap.pool_hints).map_err(refused)?;
    let target = placement
        .db_pool
        .as_deref()
        .and_then(|name| snap.databases.find(name))
        .ok_or_else(|| refused(Reject::NoDatabase))?;
    let values = Values { env: env_name, tenant: identity.tenant.as_deref(), sub: identity.user.as_deref() };
    let role = snap.databases.get(target).login_role(&values).ok_or_else(|| refused(Reject::UnsafeTenantValue))?;
    Ok(Admitted { identity, permit, placement, target, role, env })
}
