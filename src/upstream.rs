//! Upstream pools: named server lists behind pingora's load balancer, with active HTTP
//! health checks and passive ejection, and the `HttpPeer` each request is sent to.
//!
//! Balancing is round-robin, or a consistent hash of the tenant so a tenant keeps
//! hitting the same server while the pool is stable. A server is chosen only if the
//! active check (when configured) reports it healthy and it is not ejected: after
//! `eject_after_failures` connection failures in a row it is skipped for
//! `eject_seconds`. When no server is usable the request gets 503
//! `upstream_unavailable`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::{Consistent, RoundRobin};
use pingora::lb::{Backend, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::protocols::tls::CaType;
use pingora::protocols::ALPN;
use pingora::utils::tls::CertKey;

use crate::reject::Reject;

/// Index of a pool in the compiled snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolId(pub u16);

/// How a pool picks a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Each server in turn.
    RoundRobin,
    /// Consistent hashing of the tenant.
    TenantHash,
}

/// The HTTP version a pool speaks to its servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, one request at a time per connection.
    #[default]
    Http1,
    /// HTTP/2 over TLS, negotiated by ALPN `h2`.
    H2,
    /// HTTP/2 over plain TCP, with prior knowledge (the server must speak h2c).
    H2c,
}

impl Protocol {
    /// What the connector offers: HTTP/2 only, or HTTP/1.1 only. Over plain TCP an
    /// HTTP/2-only peer is spoken to with the h2c preface, as there is no ALPN.
    fn alpn(self) -> ALPN {
        match self {
            Protocol::Http1 => ALPN::H1,
            Protocol::H2 | Protocol::H2c => ALPN::H2,
        }
    }
}

/// Concurrent requests (streams) on one HTTP/2 connection to a server; pingora's
/// default of one would open a connection per concurrent request.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// Active health check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path requested (a 200 answer is healthy).
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// Connect and read timeout of one check.
    pub timeout: Duration,
    /// Successes in a row to become healthy.
    pub healthy_after: usize,
    /// Failures in a row to become unhealthy.
    pub unhealthy_after: usize,
}

/// Passive ejection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Connection failures in a row that eject a server (0 disables ejection).
    pub after_failures: u32,
    /// How long an ejected server is skipped.
    pub duration: Duration,
}

/// TLS to the servers of a pool.
#[derive(Clone)]
pub struct UpstreamTls {
    /// Name sent as SNI and verified in the server certificate.
    pub sni: String,
    /// CAs trusted instead of the system roots.
    pub ca: Option<Arc<CaType>>,
    /// Client certificate and key for mutual TLS.
    pub client: Option<Arc<CertKey>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// Everything needed to build a pool.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// Pool name.
    pub name: String,
    /// Resolved server addresses.
    pub servers: Vec<SocketAddr>,
    /// Balancing.
    pub balance: Balance,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Read and write timeout.
    pub read_timeout: Duration,
    /// Active health check, if any.
    pub health_check: Option<HealthCheck>,
    /// Passive ejection.
    pub ejection: Ejection,
    /// TLS to the servers, if any.
    pub tls: Option<UpstreamTls>,
    /// The HTTP version spoken to the servers.
    pub protocol: Protocol,
}

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    TenantHash(LoadBalancer<Consistent>),
}

impl Balancer {
    fn select_with(&self, key: &[u8], accept: impl Fn(&Backend, bool) -> bool) -> Option<Backend> {
        match self {
            Balancer::RoundRobin(lb) => lb.select_with(key, 256, accept),
            Balancer::TenantHash(lb) => lb.select_with(key, 256, accept),
        }
    }

    fn backends(&self) -> &pingora::lb::Backends {
        match self {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::TenantHash(lb) => lb.backends(),
        }
    }
}

struct Server {
    addr: SocketAddr,
    failures: AtomicU32,
    ejected_until_ms: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One pool of servers.
pub struct Pool {
    /// The pool's name.
    pub name: Box<str>,
    /// The name as a prebuilt header value.
    pub header_value: HeaderValue,
    balancer: Balancer,
    servers: Box<[Server]>,
    connect_timeout: Duration,
    read_timeout: Duration,
    health_interval: Option<Duration>,
    last_check_ms: AtomicU64,
    ejection: Ejection,
    tls: Option<UpstreamTls>,
    protocol: Protocol,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).finish_non_exhaustive()
    }
}

fn balancer<S>(spec: &PoolSpec) -> std::io::Result<LoadBalancer<S>>
where
    S: pingora::lb::selection::BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    let mut lb = LoadBalancer::<S>::try_from_iter(spec.servers.iter().copied())?;
    if let Some(c) = &spec.health_check {
        let mut hc = match &spec.tls {
            Some(t) => {
                let mut hc = HttpHealthCheck::new(&t.sni, true);
                hc.peer_template.options.ca.clone_from(&t.ca);
                hc.peer_template.client_cert_key.clone_from(&t.client);
                hc
            }
            None => HttpHealthCheck::new("localhost", false),
        };
        hc.req.set_uri(c.path.parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?);
        hc.peer_template.options.connection_timeout = Some(c.timeout);
        hc.peer_template.options.read_timeout = Some(c.timeout);
        hc.peer_template.options.alpn = spec.protocol.alpn();
        hc.consecutive_success = c.healthy_after.max(1);
        hc.consecutive_failure = c.unhealthy_after.max(1);
        lb.set_health_check(Box::new(hc));
    }
    Ok(lb)
}

impl Pool {
    /// Builds a pool over already-resolved addresses.
    pub fn new(spec: &PoolSpec) -> std::io::Result<Self> {
        let header_value =
            HeaderValue::from_str(&spec.name).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let check = spec.health_check.as_ref();
        let balancer = match spec.balance {
            Balance::RoundRobin => Balancer::RoundRobin(balancer(spec)?),
            Balance::TenantHash => Balancer::TenantHash(balancer(spec)?),
        };
        let servers = spec
            .servers
            .iter()
            .map(|addr| Server { addr: *addr, failures: AtomicU32::new(0), ejected_until_ms: AtomicU64::new(0) })
            .collect();
        Ok(Self {
            name: spec.name.as_str().into(),
            header_value,
            balancer,
            servers,
            connect_timeout: spec.connect_timeout,
            read_timeout: spec.read_timeout,
            health_interval: check.map(|c| c.interval),
            last_check_ms: AtomicU64::new(0),
            ejection: spec.ejection,
            tls: spec.tls.clone(),
            protocol: spec.protocol,
        })
    }

    fn server(&self, addr: SocketAddr) -> Option<&Server> {
        self.servers.iter().find(|s| s.addr == addr)
    }

    fn ejected(&self, addr: SocketAddr, now: u64) -> bool {
        self.server(addr).is_some_and(|s| s.ejected_until_ms.load(Ordering::Acquire) > now)
    }

    /// The peer for the next request, or `UpstreamUnavailable` when no server is usable.
    /// `avoid` is a server that just failed for this request (tried last, if at all).
    pub fn peer(&self, key: &[u8], avoid: Option<SocketAddr>) -> Result<(SocketAddr, Box<HttpPeer>), Reject> {
        let now = now_ms();
        let usable = |b: &Backend, healthy: bool| {
            healthy && b.addr.as_inet().is_some_and(|a| !self.ejected(*a, now) && Some(*a) != avoid)
        };
        let backend = self.balancer.select_with(key, usable).ok_or(Reject::UpstreamUnavailable)?;
        let addr = backend.addr.as_inet().copied().ok_or(Reject::UpstreamUnavailable)?;
        let mut peer = match &self.tls {
            // The SNI is never empty for TLS pools: an empty one would skip verification.
            Some(tls) => {
                let mut p = HttpPeer::new(addr, true, tls.sni.clone());
                p.options.ca.clone_from(&tls.ca);
                p.client_cert_key.clone_from(&tls.client);
                p
            }
            None => HttpPeer::new(addr, false, String::new()),
        };
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.write_timeout = Some(self.read_timeout);
        if self.protocol != Protocol::Http1 {
            peer.options.alpn = self.protocol.alpn();
            peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
        }
        Ok((addr, Box::new(peer)))
    }

    /// Records a connection failure; returns whether it ejected the server.
    pub fn report_failure(&self, addr: SocketAddr) -> bool {
        let Some(s) = self.server(addr) else { return false };
        let failures = s.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if self.ejection.after_failures == 0 || failures < self.ejection.after_failures {
            return false;
        }
        s.failures.store(0, Ordering::Release);
        let until = now_ms() + u64::try_from(self.ejection.duration.as_millis()).unwrap_or(u64::MAX);
        s.ejected_until_ms.store(until, Ordering::Release);
        log::warn!(target: "isogate::upstream", "pool {}: {addr} ejected for {:?} after {failures} connection failures", self.name, self.ejection.duration);
        true
    }

    /// Records a successful connection.
    pub fn report_success(&self, addr: SocketAddr) {
        if let Some(s) = self.server(addr) {
            s.failures.store(0, Ordering::Release);
        }
    }

    /// Runs the active health check if one is configured and due.
    pub async fn check_health_if_due(&self) {
        let Some(interval) = self.health_interval else { return };
        let now = now_ms();
        let last = self.last_check_ms.load(Ordering::Acquire);
        if now.saturating_sub(last) < u64::try_from(interval.as_millis()).unwrap_or(u64::MAX) {
            return;
        }
        self.last_check_ms.store(now, Ordering::Release);
        self.balancer.backends().run_health_check(true).await;
    }

    /// Each server and whether it is usable now (healthy and not ejected).
    pub fn health(&self) -> Vec<(SocketAddr, bool)> {
        let now = now_ms();
        let backends = self.balancer.backends().get_backend();
        self.servers
            .iter()
            .map(|s| {
                let healthy = backends
                    .iter()
                    .find(|b| b.addr.as_inet() == Some(&s.addr))
                    .is_some_and(|b| self.balancer.backends().ready(b));
                (s.addr, healthy && !self.ejected(s.addr, now))
            })
            .collect()
    }

    /// How many servers the pool has.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether the pool has no server.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
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

    /// Every pool.
    pub fn iter(&self) -> impl Iterator<Item = &Pool> {
        self.pools.iter()
    }
}
