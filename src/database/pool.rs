//! Session pooling of server connections: per target, a cap on open connections (over
//! every login role), and idle connections kept per (login role, schema), so a
//! connection only ever serves clients of the role it signed in as. A connection goes
//! back only after its reset passed; otherwise it is closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::server::{ServerConn, ServerError, SignIn};
use super::target::Target;

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

/// Every target's pool, kept across reloads while the target is unchanged.
#[derive(Debug, Default)]
pub struct Pools {
    by_target: DashMap<String, Arc<TargetPool>>,
}

impl Pools {
    /// The pool of `target`.
    pub fn of(&self, target: &Target) -> Arc<TargetPool> {
        let key = target.pool_key();
        if let Some(pool) = self.by_target.get(&key) {
            return Arc::clone(&pool);
        }
        Arc::clone(
            &self.by_target.entry(key).or_insert_with(|| Arc::new(TargetPool::new(target.max_server_connections))),
        )
    }

    /// Server connections open, over every target.
    pub fn open(&self) -> usize {
        self.by_target.iter().map(|p| p.open()).sum()
    }
}

/// One target's connections.
#[derive(Debug)]
pub struct TargetPool {
    max: usize,
    permits: Arc<Semaphore>,
    idle: Mutex<HashMap<Box<str>, Vec<Idle>>>,
}

#[derive(Debug)]
struct Idle {
    conn: ServerConn,
    permit: OwnedSemaphorePermit,
}

/// A server connection lent to one client session.
#[derive(Debug)]
pub struct Lease {
    /// The connection.
    pub conn: ServerConn,
    /// Whether it served an earlier session.
    pub reused: bool,
    permit: OwnedSemaphorePermit,
    key: Box<str>,
}

fn idle_key(role: &str, schema: Option<&str>) -> Box<str> {
    format!("{role}\u{0}{}", schema.unwrap_or("")).into()
}

impl TargetPool {
    fn new(max: usize) -> Self {
        Self { max, permits: Arc::new(Semaphore::new(max)), idle: Mutex::new(HashMap::new()) }
    }

    /// Server connections open (lent or idle).
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Vec<Idle>>> {
        // A panic while holding the lock cannot leave the map inconsistent (only whole
        // entries are pushed and popped), so a poisoned lock is used as it is.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle connection of the same role and schema, or a new one: waits at most the
    /// target's queue timeout for room, closing another role's idle connection to make
    /// room when the cap is reached.
    pub async fn checkout(&self, target: &Target, sign_in: &SignIn<'_>) -> Result<Lease, CheckoutError> {
        let key = idle_key(sign_in.role, sign_in.schema);
        loop {
            let Some(Idle { conn, permit }) = self.idle().get_mut(&key).and_then(Vec::pop) else { break };
            if conn.idle_and_open() {
                return Ok(Lease { conn, reused: true, permit, key });
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
        Ok(Lease { conn, reused: false, permit, key })
    }

    fn close_one_idle(&self) {
        let closed = self.idle().values_mut().find_map(Vec::pop);
        drop(closed);
    }

    /// Resets the connection and keeps it for the next session of its role; closes it
    /// when the reset fails. Returns whether it was kept.
    pub async fn checkin(&self, mut lease: Lease) -> bool {
        match lease.conn.reset().await {
            Ok(()) => {
                let Lease { conn, permit, key, .. } = lease;
                self.idle().entry(key).or_default().push(Idle { conn, permit });
                true
            }
            Err(e) => {
                log::info!(target: "isogate::database", "closing a server connection: reset failed: {e}");
                false
            }
        }
    }
}

/// Longest a reset may take before the connection is closed instead.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(5);
