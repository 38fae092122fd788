//! Upstream pools: named server lists behind pingora's load balancer, and the
//! `HttpPeer` each request is sent to.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderValue;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::prelude::HttpPeer;

use crate::reject::Reject;

/// Index of a pool in the compiled snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolId(pub u16);

/// One pool of servers.
pub struct Pool {
    /// The pool's name.
    pub name: Box<str>,
    /// The name as a prebuilt header value.
    pub header_value: HeaderValue,
    balancer: LoadBalancer<RoundRobin>,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Pool {
    /// Builds a pool over already-resolved addresses.
    pub fn new(
        name: &str,
        servers: &[SocketAddr],
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> std::io::Result<Self> {
        let header_value =
            HeaderValue::from_str(name).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(Self {
            name: name.into(),
            header_value,
            balancer: LoadBalancer::try_from_iter(servers.iter().copied())?,
            connect_timeout,
            read_timeout,
        })
    }

    /// The peer for the next request, or `UpstreamUnavailable` when no server is usable.
    pub fn peer(&self, key: &[u8]) -> Result<(SocketAddr, Box<HttpPeer>), Reject> {
        let backend = self.balancer.select(key, 256).ok_or(Reject::UpstreamUnavailable)?;
        let addr = backend.addr.as_inet().copied().ok_or(Reject::UpstreamUnavailable)?;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.write_timeout = Some(self.read_timeout);
        Ok((addr, Box::new(peer)))
    }
}

/// All pools, indexed by `PoolId`.
#[derive(Debug, Default)]
pub struct Pools {
    pools: Box<[Pool]>,
}

impl Pools {
    /// Wraps compiled pools.
    pub fn new(pools: Vec<Pool>) -> Self {
        Self { pools: pools.into() }
    }

    /// The pool with this id.
    pub fn get(&self, id: PoolId) -> &Pool {
        &self.pools[usize::from(id.0)]
    }
}
