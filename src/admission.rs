//! The request pipeline as one typed value: `admit` runs the stages in request order
//! over the compiled snapshot — check the head, route, identify, bind, authorise, place,
//! rewrite, limit — and returns `Admitted`, which cannot exist unless every stage passed,
//! or `Refused`, which carries what was learnt before the refusal (for the audit line).
//!
//! Nothing here knows about sockets or pingora's session: the same pipeline serves every
//! front, and tests drive it directly.

mod head;
mod stages;
mod target;
mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use pingora::http::RequestHeader;

pub use head::HeadLimits;
pub use stages::UpstreamTarget;

use crate::auth::{CacheUse, Identity, Refusal};
use crate::bind::EnvId;
use crate::policy::Permit;
use crate::ratelimit::{Mode, PlanId};
use crate::reject::Reject;
use crate::routing::{Placement, RouteId};
use crate::snapshot::Snapshot;

/// What admission knows of the connection a request came on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connection {
    /// The address the request arrived on (binds listener environments).
    pub local: Option<SocketAddr>,
    /// The client's address.
    pub peer: Option<IpAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// The plan a request was limited under, and which limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The plan.
    pub plan: PlanId,
    /// Local, Redis, or the fallback that applied.
    pub mode: Mode,
}

/// A request that passed every stage.
#[derive(Debug)]
pub struct Admitted {
    /// The matched route.
    pub route: RouteId,
    /// The verified caller.
    pub identity: Arc<Identity>,
    /// Proof of authorisation, in the bound environment.
    pub permit: Permit,
    /// The pool and database hints.
    pub placement: Placement,
    /// The plan that limited the request, if any.
    pub limit: Option<Limit>,
    /// What the upstream request's target becomes, when it differs from the client's.
    pub target: UpstreamTarget,
    /// Whether the verified-token cache answered.
    pub token_cache: CacheUse,
}

impl Admitted {
    /// The bound environment.
    pub fn env(&self) -> EnvId {
        self.permit.env()
    }
}

/// A refused request: why, and what was known when it was refused.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Why.
    pub reject: Reject,
    /// The matched route, if routing passed.
    pub route: Option<RouteId>,
    /// The environment, if known.
    pub env: Option<EnvId>,
    /// The verified caller, if identification passed.
    pub identity: Option<Arc<Identity>>,
    /// Issuer and `kid` of a refused token.
    pub token: Option<Refusal>,
    /// The plan that refused, for 429s.
    pub limit: Option<Limit>,
    /// Whether the verified-token cache answered, if a token was verified.
    pub token_cache: Option<CacheUse>,
}

impl Refused {
    /// A refusal before any stage learnt anything.
    pub fn early(reject: Reject) -> Self {
        Self { reject, route: None, env: None, identity: None, token: None, limit: None, token_cache: None }
    }
}

/// The route a request matches, for answers given before admission (CORS preflights).
pub fn route_of(snap: &Snapshot, head: &RequestHeader, conn: &Connection) -> Option<RouteId> {
    snap.head_limits.check(head).ok()?;
    stages::route(snap, head, conn).ok().map(|r| r.id)
}

/// Verifies a token given on its own (a database password) like a bearer token,
/// refetching an issuer's keys once for an unknown `kid`.
pub async fn identify_token(snap: &Snapshot, token: &[u8]) -> Result<(Arc<Identity>, CacheUse), Refusal> {
    stages::verify_with_refetch(snap, || snap.auth.identify_token(token)).await
}

/// Runs every stage; the request's head is read, never changed.
pub async fn admit(snap: &Snapshot, head: &RequestHeader, conn: &Connection) -> Result<Admitted, Refused> {
    snap.head_limits.check(head).map_err(Refused::early)?;
    let routed = stages::route(snap, head, conn).map_err(Refused::early)?;
    let refused = |reject| Refused { route: Some(routed.id), env: routed.fixed_env(), ..Refused::early(reject) };
    stages::check_body(snap, &routed, head).map_err(refused)?;
    let (identity, token_cache) = match stages::identify(snap, &routed, head).await {
        Ok(found) => found,
        Err(token) => {
            let reject = Reject::Unauthenticated(token.error);
            return Err(Refused { token: Some(token), ..refused(reject) });
        }
    };
    let refused = |reject, env| Refused {
        env,
        identity: Some(Arc::clone(&identity)),
        token_cache: Some(token_cache),
        ..refused(reject)
    };
    let binding = snap
        .binder
        .bind(routed.expected, identity.environment.as_deref())
        .map_err(|r| refused(r, routed.fixed_env()))?;
    let env = Some(binding.env);
    let permit = stages::authorize(snap, &routed, &identity, &binding, head).map_err(|r| refused(r, env))?;
    let placement = stages::place(snap, &permit, &identity).map_err(|r| refused(r, env))?;
    let target = stages::rewrite(snap, &routed, &identity, &permit, head).map_err(|r| refused(r, env))?;
    let limit = stages::limit(snap, &routed, &identity, &permit)
        .await
        .map_err(|(reject, limit)| Refused { limit, ..refused(reject, env) })?;
    Ok(Admitted { route: routed.id, identity, permit, placement, limit, target, token_cache })
}
