//! The connection to Redis, owned by one background task. Requests never connect:
//! they take the current connection, or fail at once so the caller applies its
//! `on_redis_error` policy.
//!
//! States, and what a request waits for in each (the caller bounds every wait by
//! `redis_timeout_ms` in any case):
//! - starting (no attempt finished since the first request): the first attempt, at
//!   most one timeout;
//! - up: nothing; the call itself is bounded by the timeout. A call that times out or
//!   loses its connection reports it, and the task checks the connection with a `PING`
//!   (one timeout) before declaring Redis down, so one slow answer does not drop it;
//! - down (an attempt failed, or the connection was lost): nothing, the request fails
//!   at once. The task reconnects with jittered exponential backoff, from the timeout
//!   up to `MAX_BACKOFF`, and each attempt is bounded by the timeout.
//!
//! The task starts with the first request (so `isogate check` never connects) and
//! ends when the limiter is dropped, e.g. replaced by a reload.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::Notify;

use super::LimiterError;

/// Longest pause between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

const STARTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A handle on the connection; dropping it stops the background task.
pub(super) struct Link {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    timeout: Duration,
    connection: ArcSwapOption<MultiplexedConnection>,
    state: AtomicU8,
    started: AtomicBool,
    closed: AtomicBool,
    /// Requests → task: a call failed on the connection (or the link was dropped).
    failed: Notify,
    /// Task → waiting requests: the state changed.
    changed: Notify,
}

impl Link {
    /// A link to `client`; nothing connects before the first `connection()`.
    pub(super) fn new(client: redis::Client, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                timeout,
                connection: ArcSwapOption::empty(),
                state: AtomicU8::new(STARTING),
                started: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                failed: Notify::new(),
                changed: Notify::new(),
            }),
        }
    }

    /// The connection. Fails at once while Redis is down; while the first attempt runs
    /// it waits for that attempt, so the caller must bound the wait.
    pub(super) async fn connection(&self) -> Result<MultiplexedConnection, LimiterError> {
        self.start();
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(c) = &*self.inner.connection.load() {
                return Ok((**c).clone());
            }
            if self.inner.state.load(Ordering::Acquire) == DOWN {
                return Err(LimiterError::Down);
            }
            changed.await;
        }
    }

    /// Reports that a call on the connection timed out or lost it.
    pub(super) fn report_failure(&self) {
        self.inner.failed.notify_one();
    }

    /// Spawns the task on the current runtime, once.
    fn start(&self) {
        if self.inner.started.load(Ordering::Relaxed) || self.inner.started.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(run(self.inner.clone()))),
            Err(_) => self.inner.started.store(false, Ordering::Release),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.failed.notify_one();
    }
}

impl Inner {
    fn set(&self, connection: Option<MultiplexedConnection>) {
        let state = if connection.is_some() { UP } else { DOWN };
        self.connection.store(connection.map(Arc::new));
        self.state.store(state, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The task: connect, watch, reconnect, until the link is dropped.
async fn run(inner: Arc<Inner>) {
    let first = inner.timeout.max(Duration::from_millis(10));
    let mut backoff = first;
    let mut was_down = false;
    while !inner.closed() {
        match connect(&inner).await {
            Ok(connection) => {
                log::info!(target: "isogate::ratelimit", "connected to redis; limits are shared");
                inner.set(Some(connection.clone()));
                backoff = first;
                was_down = false;
                watch(&inner, connection).await;
                if inner.closed() {
                    return;
                }
                log::warn!(target: "isogate::ratelimit", "lost the connection to redis; applying on_redis_error and reconnecting");
                inner.set(None);
            }
            Err(e) => {
                if !was_down {
                    log::warn!(target: "isogate::ratelimit", "cannot reach redis ({e}); applying on_redis_error and retrying every {MAX_BACKOFF:?} at most");
                    was_down = true;
                }
                inner.set(None);
                let pause = backoff.mul_f64(rand::random_range(0.5..=1.0));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = inner.failed.notified() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Returns once a reported failure is confirmed by a failed `PING`, or the link closes.
async fn watch(inner: &Inner, mut connection: MultiplexedConnection) {
    loop {
        inner.failed.notified().await;
        if inner.closed() {
            return;
        }
        let ping = redis::cmd("PING");
        if !matches!(tokio::time::timeout(inner.timeout, ping.query_async::<()>(&mut connection)).await, Ok(Ok(()))) {
            return;
        }
    }
}

/// One attempt: connect and `PING`, within the timeout.
async fn connect(inner: &Inner) -> Result<MultiplexedConnection, String> {
    let config = AsyncConnectionConfig::new().set_connection_timeout(inner.timeout).set_response_timeout(inner.timeout);
    let attempt = async {
        let mut c = inner.client.get_multiplexed_async_connection_with_config(&config).await?;
        redis::cmd("PING").query_async::<()>(&mut c).await?;
        Ok::<_, redis::RedisError>(c)
    };
    match tokio::time::timeout(inner.timeout, attempt).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {:?}", inner.timeout)),
    }
}
