//! Downstream connections, before any request stage: the cap on live client connections
//! (past it a connection gets a small 503 and is closed, so a flood cannot exhaust
//! memory), the idle keep-alive timeout, and the count of live connections and requests
//! that a graceful stop waits on.
//!
//! pingora has no downstream connection limit, so two thin wrappers sit around the
//! proxy app: [`Limited`] is the transport-level [`ServerApp`] that counts connections
//! (TCP or TLS, HTTP/1 or HTTP/2) and runs the HTTP/1 keep-alive loop, and [`Tracked`]
//! is the [`HttpServerApp`] that sets the keep-alive timeout on each HTTP/1 request and
//! counts the requests being processed (an HTTP/2 request runs in its own task and may
//! outlive its connection, so requests are counted apart from connections).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// The answer past the connection cap.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
content-length: 46\r\n\
retry-after: 1\r\n\
connection: close\r\n\r\n\
{\"error\":\"too_many_connections\",\"status\":503}\n";

/// How long a refused client gets to take the answer: the request it may already have
/// sent is read and dropped meanwhile, so closing does not reset the connection before
/// the client has read the 503.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Refused connections given [`REFUSAL_LINGER`] at once; past this, in a flood, a
/// refused connection is closed without an answer, so refusing stays bounded too.
const MAX_LINGERING_REFUSALS: usize = 1024;

/// Metric handles for connections.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    /// `isogate_connections_open`
    pub open: IntGauge,
    /// `isogate_connections_refused_total`
    pub refused: IntCounter,
}

/// Live client connections and requests being processed, shared by the wrappers and
/// the graceful stop.
#[derive(Debug)]
pub struct Connections {
    limit: usize,
    open: AtomicUsize,
    busy: AtomicUsize,
    refusing: AtomicUsize,
    idle: Notify,
    metrics: ConnectionMetrics,
}

impl Connections {
    /// At most `limit` connections at once (at least one).
    pub fn new(limit: usize, metrics: ConnectionMetrics) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            open: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            idle: Notify::new(),
            metrics,
        })
    }

    /// Live client connections.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Requests being read or served; a connection waiting for its next request is
    /// not one.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    /// Takes a connection slot, or `None` past the limit.
    fn try_open(self: &Arc<Self>) -> Option<Slot> {
        let limit = self.limit;
        self.open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1)).ok()?;
        self.metrics.open.inc();
        Some(Slot(Arc::clone(self), Kind::Connection))
    }

    /// Takes a place to answer a refused connection, or `None` when too many are
    /// being answered.
    fn try_refuse(self: &Arc<Self>) -> Option<Slot> {
        self.refusing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_LINGERING_REFUSALS).then_some(n + 1))
            .ok()?;
        Some(Slot(Arc::clone(self), Kind::Refusal))
    }

    fn start_request(self: &Arc<Self>) -> Slot {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Slot(Arc::clone(self), Kind::Request)
    }

    /// Resolves once no connection is open and no request is being processed.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open() == 0 && self.busy() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Connection,
    Request,
    Refusal,
}

/// A counted connection, request or refusal; the count drops with it.
///
/// Counts are sequentially consistent: of a connection and its last request ending
/// together, at least one sees the other gone and wakes [`Connections::wait_idle`].
#[derive(Debug)]
struct Slot(Arc<Connections>, Kind);

impl Drop for Slot {
    fn drop(&mut self) {
        let c = &self.0;
        let left = match self.1 {
            Kind::Connection => {
                c.metrics.open.dec();
                c.open.fetch_sub(1, Ordering::SeqCst) - 1 + c.busy()
            }
            Kind::Request => c.busy.fetch_sub(1, Ordering::SeqCst) - 1 + c.open(),
            Kind::Refusal => {
                c.refusing.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        };
        if left == 0 {
            c.idle.notify_waiters();
        }
    }
}

// === impl Limited ===

/// The transport-level app: counts every client connection, refuses those past the
/// limit before reading anything from them, and serves HTTP/1 connections itself so
/// that a connection waiting for its next request holds no request state.
///
/// pingora's own HTTP/1 loop waits for the next request inside the proxy's request
/// future, about 14 KiB kept for every idle connection; here the wait is a read into
/// the request's head buffer, and the request future exists only while a request is
/// read and served. HTTP/2 connections (ALPN h2, or h2c on the listeners that accept
/// it) take pingora's path unchanged.
pub struct Limited<A> {
    app: Arc<A>,
    keepalive: Duration,
    connections: Arc<Connections>,
    snapshots: Arc<SnapshotCell>,
    refusals: Arc<dyn EarlyRefusals>,
    h2c: H2cListeners,
}

impl<A> Limited<A> {
    /// Wraps `app`; a connection idle for `keepalive` between requests is closed. Head
    /// limits come from the snapshot in force; refusals made before the proxy sees a
    /// request go to `refusals`.
    pub fn new(
        app: Arc<A>,
        keepalive: Duration,
        connections: Arc<Connections>,
        snapshots: Arc<SnapshotCell>,
        refusals: Arc<dyn EarlyRefusals>,
    ) -> Self {
        Self { app, keepalive, connections, snapshots, refusals, h2c: H2cListeners::default() }
    }

    /// Hands connections that open with the HTTP/2 preface on these plain listeners to
    /// the app's HTTP/2 server (which must accept h2c, see [`Tracked::accept_h2c`]).
    pub fn with_h2c(mut self, listeners: &[std::net::SocketAddr]) -> Self {
        self.h2c = H2cListeners::new(listeners);
        self
    }

    fn head_rules(&self) -> HeadRules {
        let limits = self.snapshots.load().head_limits;
        HeadRules { timeout: limits.read_timeout, max_bytes: limits.max_head_bytes() }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Limited<A> {
    /// The HTTP/1 keep-alive loop: wait for a request, serve it, and again while the
    /// connection may be reused. The bytes read while waiting go to the session as the
    /// start of its request, so waiting costs no extra read.
    ///
    /// pingora hands a session bytes of its own only with HTTP/1 pipelining, which
    /// isogate does not turn on; with it, a next request could already sit in the
    /// persistent settings while this loop waits on the socket.
    ///
    /// A complete head that never becomes a request for the proxy was refused by
    /// pingora's parser (400, or 405 for `CONNECT`); it is recorded here.
    async fn serve_http1(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) {
        let mut stopping = shutdown.clone();
        let mut persistent = None;
        let mut first = true;
        let began = Arc::new(AtomicBool::new(false));
        let peer = stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        loop {
            let rules = self.head_rules();
            let head = match head::next(&mut stream, self.keepalive, &mut stopping, rules, &*self.refusals).await {
                Next::Head(head) => head,
                Next::Closed | Next::Refused => return,
            };
            if std::mem::take(&mut first) && self.h2c.accepts(&stream, &head) {
                let Some(stream) = h2c::unread(stream, &head) else { return };
                ServerApp::process_new(&self.app, stream, shutdown).await;
                return;
            }
            let line = head::LineStart::of(&head);
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = persistent.take() {
                HttpPersistentSettings::apply_to_session(settings, &mut session);
            }
            session.set_pipelined_prefix(head);
            let served = head::marked(&began, self.app.process_new_http(session, shutdown)).await;
            if !began.load(Ordering::Relaxed) {
                self.parser_refused(peer, line.as_bytes());
            }
            let Some(reused) = served else {
                return;
            };
            (stream, persistent) = reused.consume();
        }
    }

    /// Records a head pingora refused before any phase ran.
    fn parser_refused(&self, peer: Option<std::net::SocketAddr>, line: &[u8]) {
        let reject = if line.starts_with(b"CONNECT ") { Reject::MethodNotAllowed } else { Reject::BadRequest };
        self.refusals.record(peer, reject, line);
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Limited<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let Some(_slot) = self.connections.try_open() else {
            self.connections.metrics.refused.inc();
            if let Some(_answering) = self.connections.try_refuse() {
                refuse(stream).await;
            }
            return None;
        };
        match stream.selected_alpn_proto() {
            None | Some(ALPN::H1) => self.serve_http1(stream, shutdown).await,
            Some(_) => return ServerApp::process_new(&self.app, stream, shutdown).await,
        }
        None
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

/// Answers 503 `too_many_connections` and closes. An HTTP/2 client (ALPN h2) would not
/// understand an HTTP/1 answer, so it is only closed.
async fn refuse(mut stream: Stream) {
    if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        return;
    }
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(REFUSAL).await?;
        stream.flush().await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 512];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
}

// === impl Tracked ===

/// The HTTP app: sets the idle keep-alive timeout on each HTTP/1 request and the idle
/// timeout of HTTP/2 connections, and counts the requests being processed.
pub struct Tracked<A> {
    app: Arc<A>,
    keepalive: u64,
    options: HttpServerOptions,
    connections: Arc<Connections>,
}

impl<A> Tracked<A> {
    /// Wraps `app`; an idle connection is closed after `keepalive` (whole seconds, at
    /// least one).
    pub fn new(app: Arc<A>, keepalive: Duration, connections: Arc<Connections>) -> Self {
        let keepalive = keepalive.as_secs().max(1);
        let mut options = HttpServerOptions::default();
        options.h2_idle_timeout = Some(Duration::from_secs(keepalive));
        Self { app, keepalive, options, connections }
    }

    /// Serves HTTP/2 with prior knowledge on the plain connections handed over as such.
    pub fn accept_h2c(mut self) -> Self {
        self.options.h2c = true;
        self
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for Tracked<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // pingora turns keep-alive off once a stop has begun; keep it that way.
        if !*shutdown.borrow() {
            session.set_keepalive(Some(self.keepalive));
        }
        let _request = self.connections.start_request();
        self.app.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.app.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }

    async fn http_cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

mod h2c;
mod head;

use h2c::H2cListeners;
use head::Next;
pub use head::{request_began, EarlyRefusals, HeadRules};

use crate::reject::Reject;
use crate::snapshot::SnapshotCell;

#[cfg(test)]
mod tests;
