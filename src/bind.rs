//! Stage 2, bind: decide which environment a request belongs to and check that the
//! token was issued for it. A stage token never works on prod.
//!
//! The expected environment comes from the route, else the request's host, else the
//! listener it arrived on (most specific first). A route may instead take the
//! environment from the token, which must then name a configured environment.

use std::collections::HashMap;
use std::net::SocketAddr;

use http::HeaderValue;

use crate::reject::Reject;

/// Index of an environment in the compiled snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnvId(pub u16);

impl EnvId {
    /// Index into the environment table.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Where a route takes its environment from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteEnvironment {
    /// This environment, whatever the host or listener.
    Fixed(EnvId),
    /// The token's environment claim.
    FromToken,
    /// The host's environment, else the listener's.
    Inherit,
}

/// A request bound to one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The environment the request is served in.
    pub env: EnvId,
}

/// Compiled environment names plus the host and listener bindings.
#[derive(Debug, Default)]
pub struct Binder {
    names: Box<[Box<str>]>,
    header_values: Box<[HeaderValue]>,
    hosts: HashMap<Box<str>, EnvId>,
    listeners: Box<[(SocketAddr, Option<EnvId>)]>,
}

impl Binder {
    /// Builds a binder. `hosts` keys must be lowercase without port.
    pub fn new(
        names: Vec<Box<str>>,
        hosts: HashMap<Box<str>, EnvId>,
        listeners: Vec<(SocketAddr, Option<EnvId>)>,
    ) -> Self {
        let header_values = names
            .iter()
            .map(|n| HeaderValue::from_str(n).unwrap_or_else(|_| HeaderValue::from_static("invalid")))
            .collect();
        Self { names: names.into(), header_values, hosts, listeners: listeners.into() }
    }

    /// The environment's name.
    pub fn name(&self, env: EnvId) -> &str {
        self.names.get(env.index()).map_or("", |n| n)
    }

    /// The environment's name as a prebuilt header value.
    pub fn header_value(&self, env: EnvId) -> &HeaderValue {
        &self.header_values[env.index()]
    }

    /// Finds an environment by name.
    pub fn find(&self, name: &str) -> Option<EnvId> {
        self.names.iter().position(|n| &**n == name).and_then(|i| u16::try_from(i).ok()).map(EnvId)
    }

    /// The environment the request must be in, before looking at the token.
    /// `host` is lowercase without port; `local` is the address the request arrived on.
    pub fn expected(
        &self,
        route: RouteEnvironment,
        host: Option<&str>,
        local: Option<SocketAddr>,
    ) -> Option<RouteEnvironment> {
        match route {
            RouteEnvironment::Inherit => host
                .and_then(|h| self.hosts.get(h).copied())
                .or_else(|| local.and_then(|addr| self.listener_env(addr)))
                .map(RouteEnvironment::Fixed),
            other => Some(other),
        }
    }

    fn listener_env(&self, local: SocketAddr) -> Option<EnvId> {
        self.listeners
            .iter()
            .find(|(addr, _)| addr.port() == local.port() && (addr.ip() == local.ip() || addr.ip().is_unspecified()))
            .and_then(|(_, env)| *env)
    }

    /// Binds the request to an environment, checking the token's environment claim.
    pub fn bind(&self, expected: Option<RouteEnvironment>, token_env: Option<&str>) -> Result<Binding, Reject> {
        match expected {
            None | Some(RouteEnvironment::Inherit) => Err(Reject::UnknownEnvironment),
            Some(RouteEnvironment::Fixed(env)) => {
                if token_env == Some(self.name(env)) {
                    Ok(Binding { env })
                } else {
                    Err(Reject::WrongEnvironment)
                }
            }
            Some(RouteEnvironment::FromToken) => {
                token_env.and_then(|name| self.find(name)).map(|env| Binding { env }).ok_or(Reject::UnknownEnvironment)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binder() -> Binder {
        let hosts = HashMap::from([("stage.example.com".into(), EnvId(0))]);
        let listeners =
            vec![("127.0.0.1:8001".parse().unwrap(), Some(EnvId(1))), ("0.0.0.0:8002".parse().unwrap(), None)];
        Binder::new(vec!["stage".into(), "prod".into()], hosts, listeners)
    }

    #[test]
    fn route_beats_host_beats_listener() {
        let b = binder();
        let local = Some("127.0.0.1:8001".parse().unwrap());
        let fixed = RouteEnvironment::Fixed(EnvId(1));
        assert_eq!(b.expected(fixed, Some("stage.example.com"), local), Some(fixed));
        assert_eq!(
            b.expected(RouteEnvironment::Inherit, Some("stage.example.com"), local),
            Some(RouteEnvironment::Fixed(EnvId(0)))
        );
        assert_eq!(
            b.expected(RouteEnvironment::Inherit, Some("other"), local),
            Some(RouteEnvironment::Fixed(EnvId(1)))
        );
        assert_eq!(b.expected(RouteEnvironment::Inherit, None, Some("127.0.0.1:8002".parse().unwrap())), None);
    }

    #[test]
    fn stage_token_never_binds_to_prod() {
        let b = binder();
        let prod = Some(RouteEnvironment::Fixed(EnvId(1)));
        assert_eq!(b.bind(prod, Some("prod")), Ok(Binding { env: EnvId(1) }));
        assert_eq!(b.bind(prod, Some("stage")), Err(Reject::WrongEnvironment));
        assert_eq!(b.bind(prod, Some("PROD")), Err(Reject::WrongEnvironment));
        assert_eq!(b.bind(prod, None), Err(Reject::WrongEnvironment));
        assert_eq!(b.bind(None, Some("prod")), Err(Reject::UnknownEnvironment));
    }

    #[test]
    fn from_token_needs_a_configured_environment() {
        let b = binder();
        let from = Some(RouteEnvironment::FromToken);
        assert_eq!(b.bind(from, Some("stage")), Ok(Binding { env: EnvId(0) }));
        assert_eq!(b.bind(from, Some("qa")), Err(Reject::UnknownEnvironment));
        assert_eq!(b.bind(from, None), Err(Reject::UnknownEnvironment));
    }
}
