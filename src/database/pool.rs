//! Session pooling of server connections: per target, a cap on open connections (over
//! every login role), and idle connections kept per (login role, schema), so a
//! connection only ever serves clients of the role it signed in as. A connection goes
//! back only after its reset passed, while it is younger than the target's lifetime
//! and its pool is not retired; otherwise it is closed.
//!
//! Idle connections past the target's idle timeout or lifetime are closed by one
//! sweeper per front (`Pools::sweep`), and skipped at checkout. A reload that changes
//! or removes a target retires its pool: the idle connections close at once, the lent
//! ones when their session ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::server::{ServerConn, ServerError, SignIn};
use super::target::{Databases, Target};

/// Why no server connection was handed out.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// Every connection of the target stayed busy for the queue timeout.
    #[error("no server connection became free in time")]
    Busy,
    /// Connecting or signing in failed.
    #[error("cannot open a server connection: {0}")]
    Server(#[from] ServerError),
    /// Connecting and signing in took longer than the connect timeout.
    #[error("the server did not answer in time")]
    Timeout,
}

/// Shortest pause between two sweeps.
const MIN_SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Longest pause between two sweeps (also when there is no pool yet).
const MAX_SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Every target's pool, kept across reloads while the target is unchanged.
#[derive(Debug)]
pub struct Pools {
    by_target: DashMap<Box<str>, Arc<TargetPool>>,
    /// Server connections open (lent or idle), over every pool, retired ones included.
    open: IntGauge,
    /// Told when a pool is made, whose timeouts may call for an earlier sweep.
    pub added: tokio::sync::Notify,
}

impl Pools {
    /// No pool yet; `open` counts the server connections.
    pub fn new(open: IntGauge) -> Self {
        Self { by_target: DashMap::new(), open, added: tokio::sync::Notify::new() }
    }

    /// The pool of `target`.
    pub fn of(&self, target: &Target) -> Arc<TargetPool> {
        if let Some(pool) = self.by_target.get(target.pool_key()) {
            return Arc::clone(&pool);
        }
        let pool = self.by_target.entry(target.pool_key().into()).or_insert_with(|| {
            self.added.notify_one();
            Arc::new(TargetPool::new(target, self.open.clone()))
        });
        Arc::clone(&pool)
    }

    /// Retires the pools of targets that `databases` no longer has as they were
    /// (changed or removed), then closes idle connections past their idle timeout or
    /// lifetime.
    pub fn sweep(&self, databases: &Databases) {
        let now = Instant::now();
        let mut retired = Vec::new();
        self.by_target.retain(|key, pool| {
            let current = databases.has_pool(key);
            if !current {
                retired.push(Arc::clone(pool));
            }
            current
        });
        for pool in retired {
            let closed = pool.retire();
            log::info!(
                target: "isogate::database",
                "database `{}`: its server connection settings changed or it is gone: retired its pool ({closed} idle connection(s) closed, lent ones close when their session ends)",
                pool.name
            );
        }
        for pool in self.by_target.iter() {
            pool.close_expired(now);
        }
    }

    /// How long the sweeper may wait before the next sweep: a quarter of the shortest
    /// idle timeout or lifetime, so an idle connection lives at most a quarter longer.
    pub fn sweep_every(&self) -> Duration {
        let shortest = self.by_target.iter().map(|p| p.idle_timeout.min(p.lifetime) / 4).min();
        shortest.unwrap_or(MAX_SWEEP_EVERY).clamp(MIN_SWEEP_EVERY, MAX_SWEEP_EVERY)
    }
}

/// One target's connections.
#[derive(Debug)]
pub struct TargetPool {
    name: Box<str>,
    idle_timeout: Duration,
    lifetime: Duration,
    permits: Arc<Semaphore>,
    gauge: IntGauge,
    idle: Mutex<IdleConns>,
}

#[derive(Debug, Default)]
struct IdleConns {
    by_key: HashMap<Box<str>, Vec<Idle>>,
    /// Set when a reload changed or removed the target: nothing goes back any more.
    retired: bool,
}

#[derive(Debug)]
struct Idle {
    conn: ServerConn,
    slot: Slot,
    since: Instant,
}

/// A server connection's place in its pool: its permit and its count in the gauge,
/// both given back when it is dropped (when the connection closes).
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    gauge: IntGauge,
    opened: Instant,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, gauge: &IntGauge) -> Self {
        gauge.inc();
        Self { _permit: permit, gauge: gauge.clone(), opened: Instant::now() }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// A server connection lent to one client session.
#[derive(Debug)]
pub struct Lease {
    /// The connection.
    pub conn: ServerConn,
    /// Whether it served an earlier session.
    pub reused: bool,
    slot: Slot,
    key: Box<str>,
}

fn idle_key(role: &str, schema: Option<&str>) -> Box<str> {
    format!("{role}\u{0}{}", schema.unwrap_or("")).into()
}

impl TargetPool {
    fn new(target: &Target, gauge: IntGauge) -> Self {
        Self {
            name: target.name.clone(),
            idle_timeout: target.server_idle_timeout,
            lifetime: target.server_lifetime,
            permits: Arc::new(Semaphore::new(target.max_server_connections)),
            gauge,
            idle: Mutex::new(IdleConns::default()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, IdleConns> {
        // A panic while holding the lock cannot leave the map inconsistent (only whole
        // entries are pushed and popped), so a poisoned lock is used as it is.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn expired(&self, idle: &Idle, now: Instant) -> bool {
        now.duration_since(idle.since) >= self.idle_timeout || now.duration_since(idle.slot.opened) >= self.lifetime
    }

    /// An idle connection of the same role and schema, or a new one: waits at most the
    /// target's queue timeout for room, closing another role's idle connection to make
    /// room when the cap is reached.
    pub async fn checkout(&self, target: &Target, sign_in: &SignIn<'_>) -> Result<Lease, CheckoutError> {
        let key = idle_key(sign_in.role, sign_in.schema);
        let now = Instant::now();
        loop {
            let Some(idle) = self.idle().by_key.get_mut(&key).and_then(Vec::pop) else { break };
            if !self.expired(&idle, now) && idle.conn.idle_and_open() {
                return Ok(Lease { conn: idle.conn, reused: true, slot: idle.slot, key });
            }
        }
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.close_one_idle();
                tokio::time::timeout(target.queue_timeout, Arc::clone(&self.permits).acquire_owned())
                    .await
                    .map_err(|_| CheckoutError::Busy)?
                    .map_err(|_| CheckoutError::Busy)?
            }
        };
        let conn = tokio::time::timeout(target.connect_timeout, ServerConn::connect(sign_in))
            .await
            .map_err(|_| CheckoutError::Timeout)??;
        Ok(Lease { conn, reused: false, slot: Slot::new(permit, &self.gauge), key })
    }

    fn close_one_idle(&self) {
        let closed = self.idle().by_key.values_mut().find_map(Vec::pop);
        drop(closed);
    }

    /// Resets the connection and keeps it for the next session of its role; closes it
    /// when the reset fails, when it is past the target's lifetime, or when the pool
    /// was retired. Returns whether it was kept.
    pub async fn checkin(&self, mut lease: Lease) -> bool {
        if lease.slot.opened.elapsed() >= self.lifetime || self.idle().retired {
            return false;
        }
        if let Err(e) = lease.conn.reset().await {
            log::info!(target: "isogate::database", "closing a server connection: reset failed: {e}");
            return false;
        }
        let Lease { conn, slot, key, .. } = lease;
        let mut idle = self.idle();
        if idle.retired {
            drop(idle);
            return false;
        }
        idle.by_key.entry(key).or_default().push(Idle { conn, slot, since: Instant::now() });
        true
    }

    /// Closes every idle connection and keeps none from now on; how many it closed.
    fn retire(&self) -> usize {
        let closed = {
            let mut idle = self.idle();
            idle.retired = true;
            std::mem::take(&mut idle.by_key)
        };
        closed.values().map(Vec::len).sum()
    }

    /// Closes the idle connections past their idle timeout or lifetime.
    fn close_expired(&self, now: Instant) {
        let mut closed = Vec::new();
        {
            let mut idle = self.idle();
            for conns in idle.by_key.values_mut() {
                let mut i = 0;
                while i < conns.len() {
                    if self.expired(&conns[i], now) {
                        closed.push(conns.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            idle.by_key.retain(|_, conns| !conns.is_empty());
        }
        drop(closed);
    }
}

/// Longest a reset may take before the connection is closed instead.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(5);
