//! The graceful stop. On SIGTERM (and after the listeners are handed to a new process
//! on SIGQUIT) pingora stops accepting, closes idle keep-alive connections, lets
//! in-flight requests finish without keep-alive, and then sleeps the whole grace period
//! before it stops. This background service ends the process as soon as no client
//! connection and no request is left instead: it flushes the audit trail and exits.
//! If the grace period runs out first, pingora's own stop takes over (the requests
//! still running are cut, and `server::run` flushes the audit trail).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::audit::AuditSink;
use crate::connections::Connections;

/// Ends the process once a graceful stop has nothing left to wait for.
pub struct Drain {
    connections: Arc<Connections>,
    audit: Arc<AuditSink>,
    grace: Duration,
    flush_timeout: Duration,
}

impl Drain {
    /// Waits at most `grace` for connections and requests to end, then gives the audit
    /// writer `flush_timeout` to write what is queued.
    pub fn new(connections: Arc<Connections>, audit: Arc<AuditSink>, grace: Duration, flush_timeout: Duration) -> Self {
        Self { connections, audit, grace, flush_timeout }
    }
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.wait_for(|stopping| *stopping).await.is_err() {
            return;
        }
        let started = Instant::now();
        if tokio::time::timeout(self.grace, self.connections.wait_idle()).await.is_err() {
            log::warn!(
                "grace period of {:?} over with {} connection(s) and {} request(s) left; they are cut",
                self.grace,
                self.connections.open(),
                self.connections.busy()
            );
            return;
        }
        log::info!("every connection and request done {:?} after the stop began", started.elapsed());
        let (audit, timeout) = (Arc::clone(&self.audit), self.flush_timeout);
        // The audit writer is closed from a blocking thread: it waits on a channel.
        let _ = tokio::task::spawn_blocking(move || audit.close(timeout)).await;
        log::info!("isogate stopped");
        std::process::exit(0);
    }
}
