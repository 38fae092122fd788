//! The database front: a listener speaking the PostgreSQL wire protocol that turns a
//! verified JWT into a tenant-bound database session.
//!
//! A client connects with TLS (`SSLRequest`, or direct TLS with ALPN `postgresql`) and
//! gives its token as the password. The session passes the same stages as an HTTP
//! request (identify, bind to the listener's environment or the one its TLS server name
//! maps to, authorise, place), then the rendered `db_pool` names a `[databases.NAME]`
//! target and the target's `user` template names the login role the gateway signs in
//! as, with a password derived from a master secret. The tenant is bound by PostgreSQL's own privileges on that role, so nothing a
//! client sends can undo it (docs/DATABASE.md gives the threat model).
//!
//! `codec` parses and writes the wire format without I/O; `session` owns a client
//! connection; `relay` passes messages; `server` and `pool` own server connections;
//! `cancel` maps cancel keys; `audit` and `refusal` say what happened.

pub mod admit;
pub mod audit;
pub mod cancel;
mod client_auth;
pub mod codec;
pub mod pool;
mod prefixed;
pub mod refusal;
mod relay;
pub mod server;
pub mod server_stream;
mod session;
pub mod target;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

pub use target::{derived_password, Databases, Listener, ListenerEnvironment, Target, TargetId};

use crate::audit::AuditSink;
use crate::metrics::Metrics;
use crate::snapshot::SnapshotCell;
use cancel::CancelKeys;
use pool::Pools;

/// The database front's state, shared by every session on every database listener.
pub struct Front {
    snapshots: Arc<SnapshotCell>,
    audit: Arc<AuditSink>,
    metrics: FrontMetrics,
    pools: Arc<Pools>,
    cancels: Arc<CancelKeys>,
    tls: tokio_rustls::TlsAcceptor,
    sessions: OpenSessions,
    /// Whether the task closing expired and retired server connections runs.
    sweeping: AtomicBool,
}

/// Client sessions open on each database listener (the listeners are fixed at start).
#[derive(Debug)]
struct OpenSessions(HashMap<SocketAddr, AtomicUsize>);

impl OpenSessions {
    fn new(listeners: &[Listener]) -> Self {
        Self(listeners.iter().map(|l| (l.address, AtomicUsize::new(0))).collect())
    }

    /// Counts a session in on `listener`, unless it already holds its `max_sessions`;
    /// the count goes down when the returned guard is dropped.
    fn enter(&self, listener: &Listener) -> Option<OpenSession<'_>> {
        let open = self.0.get(&listener.address)?;
        let held = open.fetch_add(1, Ordering::AcqRel);
        let session = OpenSession(open);
        (held < listener.max_sessions).then_some(session)
    }
}

/// One counted client session.
struct OpenSession<'a>(&'a AtomicUsize);

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front").field("pools", &self.pools).field("cancels", &self.cancels).finish_non_exhaustive()
    }
}

/// The metric children the front counts into.
#[derive(Debug)]
struct FrontMetrics(Metrics);

impl FrontMetrics {
    fn count(&self, event: &str, reason: &'static str) {
        if event == "db_session_end" {
            self.0.db_sessions_ended.inc();
        } else {
            let decision = if reason == "ok" { "allow" } else { "deny" };
            self.0.db_sessions.with_label_values(&[decision, reason]).inc();
        }
    }
}

impl Front {
    /// A front reading the snapshot in force; certificates come from `[[certificates]]`
    /// by SNI, as on the HTTP listeners, unless a listener has its own.
    pub fn new(snapshots: Arc<SnapshotCell>, audit: Arc<AuditSink>, metrics: Metrics) -> Result<Self, rustls::Error> {
        let tls = tls_acceptor(Arc::new(crate::tls::SniResolver::new(Arc::clone(&snapshots))))?;
        let sessions = OpenSessions::new(&snapshots.load().databases.listeners);
        let pools = Arc::new(Pools::new(metrics.db_server_connections.clone()));
        Ok(Self {
            sessions,
            snapshots,
            audit,
            metrics: FrontMetrics(metrics),
            pools,
            cancels: Arc::new(CancelKeys::default()),
            tls,
            sweeping: AtomicBool::new(false),
        })
    }

    /// Starts the sweeper on the first session (on the runtime serving the listeners).
    fn start_sweeper(self: &Arc<Self>) {
        if !self.sweeping.load(Ordering::Relaxed) && !self.sweeping.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep_pools(Arc::downgrade(self), self.snapshots.watch()));
        }
    }
}

/// Sweeps the pools after each reload and every `Pools::sweep_every` (reckoned again
/// when a pool is made), until the front is gone.
async fn sweep_pools(front: Weak<Front>, mut reloads: tokio::sync::watch::Receiver<u64>) {
    loop {
        let Some(pools) = front.upgrade().map(|f| Arc::clone(&f.pools)) else { return };
        tokio::select! {
            () = tokio::time::sleep(pools.sweep_every()) => {}
            () = pools.added.notified() => continue,
            changed = reloads.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let Some(front) = front.upgrade() else { return };
        let snap = front.snapshots.load();
        front.pools.sweep(&snap.databases);
    }
}

/// TLS for database clients: ALPN `postgresql`, certificates from `certificates`.
pub fn tls_acceptor(
    certificates: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![session::ALPN.to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(self: &Arc<Self>, stream: Stream, _shutdown: &ShutdownWatch) -> Option<Stream> {
        let digest = stream.get_socket_digest();
        let inet = |a: Option<&pingora::protocols::l4::socket::SocketAddr>| a.and_then(|a| a.as_inet()).copied();
        let client = inet(digest.as_ref().and_then(|d| d.peer_addr()));
        let local = inet(digest.as_ref().and_then(|d| d.local_addr()));
        // One snapshot from the listener's lookup on, so the environment ids it holds
        // are read against the table they index.
        let snap = self.snapshots.load();
        let listener = local.and_then(|l| snap.databases.listener(l)).cloned()?;
        self.start_sweeper();
        self.serve(stream, snap, session::Peer::new(client, listener)).await;
        None
    }
}
