//! Process assembly: metrics registry, audit writer, the pingora server with the proxy
//! (behind the connection cap) and admin services, and an orderly stop that flushes the
//! audit trail.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::RunArgs;
use pingora::services::listening::Service;
use prometheus::Registry;

use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService};

use crate::admin::Admin;
use crate::audit::AuditSink;
use crate::auth::jwks::RemoteKeys;
use crate::connections::{Connections, Limited, Tracked};
use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::proxy::{EarlyAudit, Gateway};
use crate::reload::Reloader;
use crate::snapshot::Settings;
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::tls::SniResolver;
use pingora::listeners::tls::TlsSettings;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address cannot be bound.
    #[error("cannot listen on {addr}: {source} (is another process using it?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// The audit output cannot be opened.
    #[error("cannot open the audit output: {0}")]
    Audit(std::io::Error),
    /// A TLS listener could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// Metrics could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Keeps every JWKS issuer's keys fresh until shutdown.
struct JwksRefresh(Vec<Arc<RemoteKeys>>);

#[async_trait::async_trait]
impl BackgroundService for JwksRefresh {
    async fn start(&self, shutdown: ShutdownWatch) {
        let tasks: Vec<_> = self.0.iter().map(|r| tokio::spawn(Arc::clone(r).run(shutdown.clone()))).collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Runs the active health checks of the pools in force, each on its own interval.
struct PoolHealth(Arc<SnapshotCell>);

#[async_trait::async_trait]
impl BackgroundService for PoolHealth {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let snapshot = self.0.load();
                    for pool in snapshot.pools.iter() {
                        pool.check_health_if_due().await;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Checks every address can be bound before pingora takes them, so a busy port is a
/// clear error instead of a panic inside a service thread.
fn check_bindable(addrs: impl IntoIterator<Item = SocketAddr>) -> Result<(), StartError> {
    for addr in addrs {
        TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    }
    Ok(())
}

/// Reloads the configuration on SIGHUP, and when the file or a tenant map changes (a
/// change is applied once the files have been still for a tick, so half-written files
/// are not read).
struct ConfigReload {
    reloader: Arc<Reloader>,
    metrics: Metrics,
}

impl ConfigReload {
    async fn apply(&self, shutdown: &ShutdownWatch) {
        let reloader = Arc::clone(&self.reloader);
        let Ok(Ok(changes)) = tokio::task::spawn_blocking(move || reloader.reload()).await else {
            return;
        };
        for remote in changes.started {
            remote.attach_metrics(self.metrics.jwks(&remote.name));
            tokio::spawn(remote.run(shutdown.clone()));
        }
    }
}

#[async_trait::async_trait]
impl BackgroundService for ConfigReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!(target: "isogate::reload", "cannot listen for SIGHUP: {e}");
                return;
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut pending = false;
        loop {
            tokio::select! {
                _ = hangup.recv() => self.apply(&shutdown).await,
                _ = tick.tick() => {
                    if self.reloader.files_changed() {
                        pending = true;
                    } else if std::mem::take(&mut pending) {
                        self.apply(&shutdown).await;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Read buffer of a plain listener's connections: none. Request heads are read straight
/// into pingora's own 4 KiB buffer and bodies in 64 KiB chunks, so a buffer in front
/// saves no read, and pingora's default (64 KiB) was most of an idle connection's memory.
const PLAIN_READ_BUFFER: usize = 0;
/// Read buffer of a TLS listener's connections: one full TLS record, which rustls reads
/// 4 KiB at a time.
const TLS_READ_BUFFER: usize = 16 * 1024;

/// The proxy service: the gateway behind the connection cap and keep-alive timeout, on
/// every configured listener.
fn proxy_service(
    server: &Server,
    gateway: Gateway,
    settings: &Settings,
    snapshots: &Arc<SnapshotCell>,
    connections: &Arc<Connections>,
    early: Arc<EarlyAudit>,
) -> Result<Service<Limited<Tracked<pingora::proxy::HttpProxy<Gateway>>>>, StartError> {
    let proxy = Arc::new(pingora::proxy::http_proxy(&server.configuration, gateway));
    let mut tracked = Tracked::new(proxy, settings.keepalive_timeout, Arc::clone(connections));
    if !settings.h2c_listeners.is_empty() {
        tracked = tracked.accept_h2c();
    }
    let app = Limited::new(
        Arc::new(tracked),
        settings.keepalive_timeout,
        Arc::clone(connections),
        Arc::clone(snapshots),
        early,
    )
    .with_h2c(&settings.h2c_listeners);
    let mut service = Service::new("isogate proxy".to_owned(), app);
    for addr in &settings.listeners {
        let listener = ListenerConfig::tcp(addr.to_string());
        let write = L4BufferSettings::default().write_capacity();
        let listener = match settings.tls_listeners.iter().find(|(a, _)| a == addr) {
            Some((_, http2)) => {
                // Paths stay empty: the resolver supplies the certificate per handshake.
                let mut tls = TlsSettings::intermediate("", "").map_err(|e| StartError::Tls(e.to_string()))?;
                tls.set_cert_resolver(Arc::new(SniResolver::new(Arc::clone(snapshots))));
                if *http2 {
                    tls.enable_h2();
                }
                listener.tls(tls).l4_buffer(L4BufferSettings::new(TLS_READ_BUFFER, write))
            }
            None => listener.l4_buffer(L4BufferSettings::new(PLAIN_READ_BUFFER, write)),
        };
        service.add_listener(listener);
    }
    Ok(service)
}

/// How the process starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Launch<'a> {
    /// The configuration file, for reloads on SIGHUP and on change.
    pub config_path: Option<&'a Path>,
    /// Take the listeners over from a running process (zero-downtime upgrade).
    pub upgrade: bool,
}

/// Runs the gateway until SIGINT or SIGTERM (or SIGQUIT, which hands the listeners to a
/// new process started with `upgrade`), then flushes the audit trail.
pub fn run(snapshot: Snapshot, launch: Launch<'_>) -> Result<(), StartError> {
    let settings = snapshot.settings.clone();
    if !launch.upgrade {
        check_bindable(
            settings
                .listeners
                .iter()
                .copied()
                .chain([settings.admin])
                .chain(settings.database_listeners.iter().copied()),
        )?;
    }

    let registry = Registry::new();
    let metrics = Metrics::register(&registry)?;
    metrics.config_generation.set(1);
    let audit = AuditSink::start(
        settings.audit_path.as_deref(),
        settings.audit_queue_capacity,
        settings.audit_on_full,
        metrics.audit_written.clone(),
        metrics.audit_lost.clone(),
    )
    .map(Arc::new)
    .map_err(StartError::Audit)?;
    let remote_keys: Vec<_> = snapshot.auth.remote_keys().cloned().collect();
    for remote in &remote_keys {
        remote.attach_metrics(metrics.jwks(&remote.name));
    }
    let snapshots = Arc::new(SnapshotCell::new(snapshot));

    let conf = ServerConf {
        threads: settings.threads,
        work_stealing: settings.work_stealing,
        upgrade_sock: settings.upgrade_socket.display().to_string(),
        grace_period_seconds: Some(settings.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(settings.shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
    let opt = Opt { upgrade: launch.upgrade, ..Opt::default() };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();

    let gateway = Gateway::new(Arc::clone(&snapshots), Arc::clone(&audit), metrics.clone());
    let connections = Connections::new(settings.max_connections, metrics.connections());
    let early = Arc::new(EarlyAudit::new(Arc::clone(&audit), metrics.clone()));
    let proxy = proxy_service(&server, gateway, &settings, &snapshots, &connections, early)?;
    let mut admin = Service::new("isogate admin".to_owned(), Admin::new(metrics.clone(), Arc::clone(&snapshots)));
    admin.add_tcp(&settings.admin.to_string());
    admin.threads = Some(1);

    log::info!("isogate listening on {:?}, admin on {}", settings.listeners, settings.admin);
    if !settings.database_listeners.is_empty() {
        let front = crate::database::Front::new(Arc::clone(&snapshots), Arc::clone(&audit), metrics.clone())
            .map_err(|e| StartError::Tls(e.to_string()))?;
        let mut database = Service::new("isogate database".to_owned(), front);
        for addr in &settings.database_listeners {
            database.add_tcp(&addr.to_string());
        }
        log::info!("isogate database listeners on {:?}", settings.database_listeners);
        server.add_service(database);
    }
    server.add_service(proxy);
    server.add_service(admin);
    if !remote_keys.is_empty() {
        server.add_service(background_service("jwks refresh", JwksRefresh(remote_keys)));
    }
    server.add_service(background_service("pool health", PoolHealth(Arc::clone(&snapshots))));
    let flush_timeout = settings.shutdown_timeout.max(Duration::from_secs(1));
    let drain = Drain::new(connections, Arc::clone(&audit), settings.grace_period, flush_timeout);
    server.add_service(background_service("drain", drain));
    if let Some(path) = launch.config_path {
        let reloader = Arc::new(Reloader::new(path, Arc::clone(&snapshots), metrics.clone()));
        server.add_service(background_service("config reload", ConfigReload { reloader, metrics }));
    }
    server.run(RunArgs::default());
    audit.close(flush_timeout);
    log::info!("isogate stopped");
    Ok(())
}
