//! The compiled configuration: an immutable `Snapshot` built once from the on-disk
//! schema, validated as a whole, and shared by every request through `SnapshotCell`.
//!
//! Names are resolved to indices (`EnvId`, `PoolId`, `RouteId`), header names and
//! values are prebuilt, and every problem is collected so `check` can list them all.

mod compile;
mod databases;
mod limits;
mod pools;
mod routes;
mod settings;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::bind::Binder;
use crate::config::file::OnQueueFull;
use crate::config::{ConfigError, EnvLookup, Source};
use crate::headers::HeaderPlan;
use crate::policy::{AccessRules, EnvironmentPolicy};
use crate::routing::{DbHints, RouteTable, Tenancy};
use crate::upstream::Pools;

pub use compile::compile;

/// Settings read once at start (changing them needs a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Proxy listeners.
    pub listeners: Vec<SocketAddr>,
    /// The TLS listeners among them, with whether each offers HTTP/2.
    pub tls_listeners: Vec<(SocketAddr, bool)>,
    /// The plain listeners that also accept HTTP/2 with prior knowledge (h2c).
    pub h2c_listeners: Vec<SocketAddr>,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Proxy worker threads.
    pub threads: usize,
    /// Whether idle workers take tasks from busy ones.
    pub work_stealing: bool,
    /// SIGTERM grace period.
    pub grace_period: Duration,
    /// Runtime shutdown timeout after the grace period.
    pub shutdown_timeout: Duration,
    /// Socket for handing listeners to a new binary.
    pub upgrade_socket: std::path::PathBuf,
    /// Client connections open at once; more are refused with 503.
    pub max_connections: usize,
    /// How long an idle keep-alive client connection is kept open.
    pub keepalive_timeout: Duration,
    /// Audit output: `None` for stdout, else a file path.
    pub audit_path: Option<std::path::PathBuf>,
    /// Audit queue capacity.
    pub audit_queue_capacity: usize,
    /// Audit queue-full policy.
    pub audit_on_full: OnQueueFull,
    /// Whether a second audit line records how each response ended.
    pub audit_stream_end: bool,
    /// Tenants with their own metric label (0: the per-tenant metric is off).
    pub tenant_label_top: usize,
    /// Database (PostgreSQL) listeners.
    pub database_listeners: Vec<SocketAddr>,
}

/// Everything the request path reads, compiled and validated. Other crates (the binary,
/// benches, tests) see the settings and the stages they drive; the rest is the
/// gateway's own.
#[derive(Debug)]
pub struct Snapshot {
    /// Start-time settings.
    pub settings: Settings,
    /// Token verification.
    pub auth: Authenticator,
    /// Header strip and inject plan.
    pub headers: HeaderPlan,
    /// Environment names and host/listener bindings.
    pub binder: Binder,
    /// Per-environment access rules, indexed by `EnvId`.
    pub(crate) policies: Box<[EnvironmentPolicy]>,
    /// Per-environment tenant placement, indexed by `EnvId`.
    pub(crate) tenancy: Box<[Tenancy]>,
    /// Routes in match order.
    pub routes: RouteTable,
    /// Upstream pools.
    pub pools: Pools,
    /// Per-pool database hint templates, indexed by `PoolId`.
    pub(crate) pool_hints: Box<[DbHints]>,
    /// Access rules shared by every environment.
    pub(crate) access: AccessRules,
    /// Header carrying the access reason.
    pub(crate) reason_header: http::HeaderName,
    /// Plans, indexed by `PlanId`.
    pub(crate) plans: Box<[crate::ratelimit::Plan]>,
    /// Per-environment plan assignment, indexed by `EnvId`.
    pub(crate) plan_assignment: Box<[crate::ratelimit::PlanAssignment]>,
    /// The rate limiter and quota counters.
    pub(crate) limiter: std::sync::Arc<crate::ratelimit::Limiter>,
    /// What a limit counts (tenant, or tenant and user).
    pub(crate) limit_key: crate::config::file::LimitKey,
    /// The `[rate_limit]` section the limiter was built from.
    pub(crate) limiter_config: crate::config::file::RateLimit,
    /// Certificates for TLS listeners.
    pub(crate) certificates: crate::tls::CertStore,
    /// Limits on the request head.
    pub(crate) head_limits: crate::admission::HeadLimits,
    /// Longest wait for the next piece of a request body.
    pub(crate) body_read_timeout: Duration,
    /// Forwarded headers: who is trusted to send them.
    pub(crate) forwarded: crate::forwarded::ForwardedPolicy,
    /// Whether requests carry a W3C trace context upstream (see `trace`).
    pub(crate) trace_context: bool,
    /// The metric children requests count into, resolved on first use.
    pub(crate) metric_cells: crate::metrics::MetricCells,
    /// Database targets and the database listeners' environments.
    pub(crate) databases: crate::database::Databases,
}

impl Snapshot {
    /// Reads, parses and compiles a configuration file. The error is the rendered list
    /// of every problem, one per line.
    pub fn load(path: &Path, env: EnvLookup<'_>) -> Result<Self, String> {
        let source = Source::read(path)?;
        Self::from_source(&source, env)
    }

    /// Parses and compiles configuration text.
    pub fn from_source(source: &Source, env: EnvLookup<'_>) -> Result<Self, String> {
        let file = source.parse().map_err(|e| source.render(&[e]))?;
        compile(&file, source, env).map_err(|errors| source.render(&errors))
    }

    /// Compiles an already-parsed file, returning the unrendered errors.
    pub fn compile(
        file: &crate::config::file::File,
        source: &Source,
        env: EnvLookup<'_>,
    ) -> Result<Self, Vec<ConfigError>> {
        compile(file, source, env)
    }
}

impl Snapshot {
    /// Carries state over from the snapshot this one replaces: JWKS caches whose source
    /// did not change, verified tokens whose issuer and token rules did not change, and
    /// the limiter (with its counters) when `[rate_limit]` did not.
    pub fn adopt_state(&mut self, previous: &Snapshot) {
        self.auth.adopt_keys(&previous.auth);
        self.auth.adopt_cache(&previous.auth);
        if self.limiter_config == previous.limiter_config {
            self.limiter = std::sync::Arc::clone(&previous.limiter);
        }
    }
}

/// The live snapshot, swapped atomically; each request pins the one it started with.
#[derive(Debug)]
pub struct SnapshotCell {
    current: ArcSwap<Snapshot>,
    generation: std::sync::atomic::AtomicU64,
    /// The generation in force, for tasks that act on a reload.
    stored: tokio::sync::watch::Sender<u64>,
}

impl SnapshotCell {
    /// Starts with `snapshot` as generation 1.
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
            generation: std::sync::atomic::AtomicU64::new(1),
            stored: tokio::sync::watch::Sender::new(1),
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Puts `snapshot` in force; requests already running keep the one they pinned.
    /// Returns the new generation.
    ///
    /// The replaced snapshot is freed on a helper thread once the last request lets go
    /// of it, so dropping a large one (a million-tenant map) never stalls a request.
    pub fn store(&self, snapshot: Snapshot) -> u64 {
        let previous = self.current.swap(Arc::new(snapshot));
        let reaper = std::thread::Builder::new().name("isogate-reaper".to_owned()).spawn(move || {
            while Arc::strong_count(&previous) > 1 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            drop(previous);
        });
        if let Err(e) = reaper {
            log::warn!(target: "isogate::reload", "cannot start the thread that frees the old configuration: {e}");
        }
        let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
        self.stored.send_replace(generation);
        generation
    }

    /// Changes each time a snapshot is stored.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.stored.subscribe()
    }

    /// The generation in force (1 for the configuration loaded at start).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
}
