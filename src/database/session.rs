//! One client connection to a database listener, from its first byte to its end:
//! TLS (`SSLRequest` or direct, ALPN `postgresql`), the startup packet, the token (as
//! the password or by SASL OAUTHBEARER, see `client_auth`), admission, a server
//! connection from the pool, the relay, and the audit lines. Every refusal is a
//! `FATAL` `ErrorResponse` and a `deny` audit line, and reaches no server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::admit::{admit, Admitted};
use super::audit::{SessionRecord, StatementRecord};
use super::client_auth;
use super::codec::{self, Startup, StartupParams, TLS_HANDSHAKE};
use super::pool::{CheckoutError, RESET_TIMEOUT};
use super::prefixed::Prefixed;
use super::relay::{relay, RelayEnd, StatementSink};
use super::server::{ServerError, SignIn};
use super::target::Listener;
use super::Front;
use crate::admission::Refused;
use crate::bind::EnvId;
use crate::config::file::ClientAuth;
use crate::reject::Reject;
use crate::snapshot::Snapshot;

/// Longest time from the first byte to the client's token (and from a failed token to
/// the end of the OAUTHBEARER error exchange).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The ALPN protocol of PostgreSQL over TLS.
pub(super) const ALPN: &[u8] = b"postgresql";

/// What is known of the client's connection.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) client: Option<SocketAddr>,
    pub(super) listener: Listener,
    /// The session's environment: the listener's own, or the one its TLS server name
    /// maps to (`None` until the handshake names a known one).
    env: Option<EnvId>,
}

impl Peer {
    pub(super) fn new(client: Option<SocketAddr>, listener: Listener) -> Self {
        let env = listener.environment.of(None);
        Self { client, listener, env }
    }

    /// The same client after a TLS handshake that named `server_name`.
    fn named(mut self, server_name: Option<&str>) -> Self {
        self.env = self.listener.environment.of(server_name);
        self
    }
}

/// A session refused before admission: why, and what the client is told.
pub(super) struct Early(pub(super) Reject);

impl From<std::io::Error> for Early {
    fn from(_: std::io::Error) -> Self {
        Early(Reject::ProtocolViolation)
    }
}

impl Front {
    /// Serves one client connection of `peer`'s listener in `snap`.
    pub(super) async fn serve<S>(self: &Arc<Self>, mut stream: S, snap: Arc<Snapshot>, peer: Peer)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let session_id = format!("{:016x}", rand::random::<u64>());
        let mut first = [0u8; 1];
        let opened = match tokio::time::timeout(STARTUP_TIMEOUT, stream.read_exact(&mut first)).await {
            Ok(Ok(_)) => first[0],
            _ => return,
        };
        if opened == TLS_HANDSHAKE {
            let prefixed = Prefixed::new(vec![TLS_HANDSHAKE], stream);
            match self.tls_accept(prefixed, &peer, true).await {
                Some(tls) => {
                    let peer = peer.named(tls.get_ref().1.server_name());
                    self.start(tls, None, true, snap, &peer, &session_id).await;
                }
                None => self.refused_early(&snap, &peer, &session_id, true, Reject::ProtocolViolation),
            }
            return;
        }
        let mut word = [opened, 0, 0, 0];
        let packet = tokio::time::timeout(STARTUP_TIMEOUT, async {
            stream.read_exact(&mut word[1..]).await?;
            read_startup_body(&mut stream, word).await
        })
        .await
        .unwrap_or(Err(Early(Reject::ProtocolViolation)));
        let startup = match packet {
            Ok(Startup::GssEncRequest) => {
                // Declined; the client goes on in plain text or asks for TLS next.
                if stream.write_all(b"N").await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                match tokio::time::timeout(STARTUP_TIMEOUT, read_startup(&mut stream)).await {
                    Ok(Ok(Startup::GssEncRequest)) => Err(Early(Reject::ProtocolViolation)),
                    Ok(other) => other,
                    Err(_) => Err(Early(Reject::ProtocolViolation)),
                }
            }
            other => other,
        };
        match startup {
            Ok(Startup::SslRequest) => {
                if stream.write_all(b"S").await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                match self.tls_accept(stream, &peer, false).await {
                    Some(tls) => {
                        let peer = peer.named(tls.get_ref().1.server_name());
                        self.start(tls, None, true, snap, &peer, &session_id).await;
                    }
                    None => self.refused_early(&snap, &peer, &session_id, true, Reject::ProtocolViolation),
                }
            }
            Ok(Startup::Cancel(key)) => self.cancel(key, &snap).await,
            Ok(Startup::Start(params)) if peer.listener.allow_plaintext => {
                self.start(stream, Some(params), false, snap, &peer, &session_id).await;
            }
            Ok(Startup::Start(_)) => self.refuse(stream, &snap, &peer, &session_id, false, Reject::TlsRequired).await,
            Ok(Startup::GssEncRequest) => {}
            Err(Early(reject)) => self.refuse(stream, &snap, &peer, &session_id, false, reject).await,
        }
    }

    /// The TLS handshake, with the listener's own certificate or `[[certificates]]` by
    /// SNI; a direct-TLS client must have negotiated ALPN `postgresql`.
    async fn tls_accept<S>(&self, stream: S, peer: &Peer, direct: bool) -> Option<tokio_rustls::server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = peer.listener.tls.as_ref().unwrap_or(&self.tls);
        let accepted = tokio::time::timeout(STARTUP_TIMEOUT, acceptor.accept(stream)).await.ok()?.ok()?;
        let alpn_ok = accepted.get_ref().1.alpn_protocol() == Some(ALPN);
        (alpn_ok || !direct).then_some(accepted)
    }

    /// From the startup packet (read here when TLS came first) to the end of the session.
    async fn start<S>(
        self: &Arc<Self>,
        mut client: S,
        params: Option<StartupParams>,
        tls: bool,
        snap: Arc<Snapshot>,
        peer: &Peer,
        session_id: &str,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let began = Instant::now();
        // Counted for the whole session; past the listener's cap the client is told so
        // once its startup packet is read (as PostgreSQL does), before any token.
        let open = self.sessions.enter(&peer.listener);
        let how = peer.listener.client_auth;
        // The OAUTHBEARER error response names the environment's issuer.
        let challenge = |env| match how {
            ClientAuth::Oauthbearer => snap.databases.oauth_challenge(peer.listener.address, env),
            ClientAuth::Password => "",
        };
        let handshake = tokio::time::timeout(STARTUP_TIMEOUT, async {
            let params = match params {
                Some(params) => params,
                None => match read_startup(&mut client).await? {
                    Startup::Start(params) => params,
                    Startup::Cancel(key) => {
                        self.cancel(key, &snap).await;
                        return Ok(None);
                    }
                    Startup::SslRequest | Startup::GssEncRequest => return Err(Early(Reject::ProtocolViolation)),
                },
            };
            if open.is_none() {
                return Err(Early(Reject::TooManySessions));
            }
            // Told once the startup packet is read, so the client is sure to see it.
            let Some(env) = peer.env else { return Err(Early(Reject::UnknownServerName)) };
            let mut out = Vec::with_capacity(64);
            if params.minor != 0 || params.protocol_options().next().is_some() {
                codec::negotiate_protocol_version(&mut out, params.protocol_options());
            }
            let token = client_auth::read_token(&mut client, out, how, challenge(env)).await?;
            Ok(Some((params, token, env)))
        })
        .await
        .unwrap_or(Err(Early(Reject::ProtocolViolation)));
        let (params, token, env) = match handshake {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(Early(reject)) => return self.refuse(client, &snap, peer, session_id, tls, reject).await,
        };
        let reason = params.access_reason();
        let admitted = match admit(&snap, env, &token, reason.as_deref()).await {
            Ok(admitted) => admitted,
            Err(refused) => {
                self.audit(&self.refusal_record(&snap, peer, session_id, tls, &refused));
                if how == ClientAuth::Oauthbearer && matches!(refused.reject, Reject::Unauthenticated(_)) {
                    // A token that fails verification gets the RFC 7628 error exchange
                    // first; refusals about what a verified token may do go out at once.
                    // Whatever the client answers, the refusal follows.
                    let exchange = client_auth::fail_exchange(&mut client, challenge(env));
                    let _ = tokio::time::timeout(STARTUP_TIMEOUT, exchange).await;
                }
                return write_fatal(client, refused.reject, Some(snap.binder.name(env)), how).await;
            }
        };
        drop(token);
        self.run(client, snap, peer, session_id, tls, &admitted, began).await;
    }

    /// Checks a server connection out, tells the client it is in, relays, and puts the
    /// connection back (reset) or closes it. The snapshot is let go once the server
    /// connection is there, so a long session does not keep an old configuration alive.
    #[allow(clippy::too_many_arguments)]
    async fn run<S>(
        self: &Arc<Self>,
        mut client: S,
        snap: Arc<Snapshot>,
        peer: &Peer,
        session_id: &str,
        tls: bool,
        admitted: &Admitted,
        began: Instant,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let target = snap.databases.get(admitted.target);
        let names = Names {
            environment: snap.binder.name(admitted.env).into(),
            issuer: snap.auth.issuer(admitted.identity.issuer).name.clone(),
            database: target.name.clone(),
        };
        let password = target.password(&admitted.role);
        let sign_in = SignIn {
            host: &target.host,
            port: target.port,
            database: &target.database,
            role: &admitted.role,
            password: &password,
            schema: admitted.placement.db_schema.as_deref(),
            tls: target.tls.as_ref(),
        };
        let pool = self.pools.of(target);
        let mut record = admitted_record(&names, peer, session_id, tls, admitted);
        let mut lease = match pool.checkout(target, &sign_in).await {
            Ok(lease) => lease,
            Err(e) => {
                let reject = match &e {
                    CheckoutError::Busy => Reject::DatabaseBusy,
                    CheckoutError::Timeout => Reject::UpstreamTimeout,
                    CheckoutError::Server(ServerError::Refused { .. }) | CheckoutError::Server(_) => {
                        Reject::UpstreamUnreachable
                    }
                };
                log::warn!(target: "isogate::database", "session {session_id}: database `{}`: {e}", target.name);
                record.decision = "deny";
                record.reason = reject.reason();
                record.sqlstate = Some(reject.sqlstate());
                self.audit(&record);
                return write_fatal(client, reject, Some(&names.environment), peer.listener.client_auth).await;
            }
        };
        let audit_statements = target.audit_statements && admitted.permit.access_reason().is_some();
        let peer_id = snap.databases.peering.id;
        drop(snap);
        let registration = self.cancels.register(lease.conn.addr, lease.conn.key, peer_id);
        let mut out = Vec::with_capacity(512);
        codec::authentication_ok(&mut out);
        for (name, value) in &lease.conn.params {
            codec::parameter_status(&mut out, name, value);
        }
        codec::backend_key_data(&mut out, registration.key);
        codec::ready_for_query(&mut out);
        record.server = Some(lease.conn.addr);
        record.server_reused = Some(lease.reused);
        self.audit(&record);
        let mut statement_line = |text: &[u8], truncated: bool| {
            let statement = String::from_utf8_lossy(text);
            let line = StatementRecord {
                ts: SystemTime::now(),
                event: "db_statement",
                session_id,
                environment: &names.environment,
                tenant: admitted.identity.tenant.as_deref(),
                user: admitted.identity.user.as_deref(),
                access_reason: admitted.permit.access_reason(),
                statement: &statement,
                truncated,
            };
            if let Some(line) = crate::audit::encode(&line) {
                self.audit.submit(None, line);
            }
        };
        let sink: Option<StatementSink<'_>> = audit_statements.then_some(&mut statement_line);
        let end = if client.write_all(&out).await.is_ok() && client.flush().await.is_ok() {
            relay(&mut client, &mut lease.conn, sink).await
        } else {
            RelayEnd::default()
        };
        drop(registration);
        if !end.server_idle {
            // The client left with a query possibly still running: cancel it, so the
            // backend does not work on for nobody, then close the connection.
            super::cancel::send_cancel(lease.conn.addr, lease.conn.key).await;
        }
        let kept = end.server_idle && tokio::time::timeout(RESET_TIMEOUT, pool.checkin(lease)).await.unwrap_or(false);
        record.ts = SystemTime::now();
        record.event = "db_session_end";
        record.duration_us = Some(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX));
        record.bytes_in = Some(end.bytes_in);
        record.bytes_out = Some(end.bytes_out);
        record.statements = Some(end.statements);
        record.server_kept = Some(kept);
        self.audit(&record);
    }

    /// Handles a `CancelRequest` (see `cancel`) and counts what became of it.
    async fn cancel(&self, key: codec::BackendKey, snap: &Snapshot) {
        let outcome = self.cancels.cancel(key, &snap.databases.peering).await;
        self.metrics.0.db_cancel_requests.with_label_values(&[outcome.label()]).inc();
    }

    /// Writes the refusal and its audit line, for a refusal before any token was read.
    async fn refuse<S>(&self, client: S, snap: &Snapshot, peer: &Peer, session_id: &str, tls: bool, reject: Reject)
    where
        S: AsyncWrite + Unpin,
    {
        self.refused_early(snap, peer, session_id, tls, reject);
        write_fatal(client, reject, peer.env.map(|env| snap.binder.name(env)), peer.listener.client_auth).await;
    }

    fn refused_early(&self, snap: &Snapshot, peer: &Peer, session_id: &str, tls: bool, reject: Reject) {
        let refused = Refused { env: peer.env, ..Refused::early(reject) };
        self.audit(&self.refusal_record(snap, peer, session_id, tls, &refused));
    }

    fn refusal_record<'a>(
        &self,
        snap: &'a Snapshot,
        peer: &Peer,
        session_id: &'a str,
        tls: bool,
        refused: &'a Refused,
    ) -> SessionRecord<'a> {
        let identity = refused.identity.as_deref();
        let issuer = identity.map(|i| i.issuer).or(refused.token.as_ref().and_then(|t| t.issuer));
        SessionRecord {
            tenant: identity.and_then(|i| i.tenant.as_deref()),
            user: identity.and_then(|i| i.user.as_deref()),
            roles: identity.map_or(&[], |i| &i.roles),
            test_account: identity.is_some_and(|i| i.test_account),
            issuer: issuer.map(|id| &*snap.auth.issuer(id).name),
            decision: "deny",
            reason: refused.reject.reason(),
            sqlstate: Some(refused.reject.sqlstate()),
            ..blank(refused.env.map(|env| snap.binder.name(env)), peer, session_id, tls)
        }
    }

    fn audit(&self, record: &SessionRecord<'_>) {
        if let Some(line) = crate::audit::encode(record) {
            self.audit.submit(None, line);
        }
        self.metrics.count(record.event, record.reason);
    }
}

/// Names from the snapshot an admitted session's audit lines keep after letting it go.
struct Names {
    environment: Box<str>,
    issuer: Box<str>,
    database: Box<str>,
}

fn admitted_record<'a>(
    names: &'a Names,
    peer: &Peer,
    session_id: &'a str,
    tls: bool,
    admitted: &'a Admitted,
) -> SessionRecord<'a> {
    let identity = &admitted.identity;
    SessionRecord {
        tenant: identity.tenant.as_deref(),
        user: identity.user.as_deref(),
        roles: &identity.roles,
        test_account: identity.test_account,
        issuer: Some(&names.issuer),
        access_reason: admitted.permit.access_reason(),
        report_only: admitted.permit.reported().map(Reject::reason),
        database: Some(&names.database),
        login_role: Some(&admitted.role),
        db_schema: admitted.placement.db_schema.as_deref(),
        ..blank(Some(&names.environment), peer, session_id, tls)
    }
}

/// A start line with only the connection's facts.
fn blank<'a>(environment: Option<&'a str>, peer: &Peer, session_id: &'a str, tls: bool) -> SessionRecord<'a> {
    SessionRecord {
        ts: SystemTime::now(),
        event: "db_session_start",
        session_id,
        environment,
        tenant: None,
        user: None,
        roles: &[],
        test_account: false,
        issuer: None,
        access_reason: None,
        report_only: None,
        database: None,
        login_role: None,
        db_schema: None,
        decision: "allow",
        reason: "ok",
        sqlstate: None,
        client: peer.client,
        tls,
        server: None,
        server_reused: None,
        duration_us: None,
        bytes_in: None,
        bytes_out: None,
        statements: None,
        server_kept: None,
    }
}

async fn read_startup<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Startup, Early> {
    let mut word = [0u8; 4];
    stream.read_exact(&mut word).await?;
    read_startup_body(stream, word).await
}

async fn read_startup_body<S: AsyncRead + Unpin>(stream: &mut S, word: [u8; 4]) -> Result<Startup, Early> {
    let length = codec::startup_length(word).map_err(|_| Early(Reject::ProtocolViolation))?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    codec::parse_startup(&body).map_err(|_| Early(Reject::ProtocolViolation))
}

/// Writes a refusal as a `FATAL` `ErrorResponse` and closes; `env` is the session's
/// environment, once known, and `how` the listener's way of taking the token.
async fn write_fatal<S: AsyncWrite + Unpin>(mut client: S, reject: Reject, env: Option<&str>, how: ClientAuth) {
    let (text, hint) = super::refusal::explain(reject, env.unwrap_or_default(), how);
    let mut out = Vec::with_capacity(256);
    codec::fatal(&mut out, reject.sqlstate(), &text, &hint);
    let _ = client.write_all(&out).await;
    let _ = client.flush().await;
    let _ = client.shutdown().await;
}
