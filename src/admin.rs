//! The admin listener: `/metrics` (our registry, Prometheus text), `/healthz`
//! (the process is up) and `/readyz` (every JWKS issuer holds usable keys).
//! It runs on its own address, by default on loopback.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::snapshot::SnapshotCell;

/// The admin HTTP application.
#[derive(Debug)]
pub struct Admin {
    metrics: Metrics,
    snapshots: Arc<SnapshotCell>,
}

impl Admin {
    /// Serves `metrics` and the readiness of `snapshots`.
    pub fn new(metrics: Metrics, snapshots: Arc<SnapshotCell>) -> Self {
        Self { metrics, snapshots }
    }

    fn answer(&self, path: &str) -> (StatusCode, &'static str, Vec<u8>) {
        match path {
            "/metrics" => {
                let snapshot = self.snapshots.load();
                self.metrics.token_cache_entries.set(i64::try_from(snapshot.auth.cached_tokens()).unwrap_or(i64::MAX));
                self.metrics.upstream_healthy.reset();
                for pool in snapshot.pools.iter() {
                    for (server, usable) in pool.health() {
                        self.metrics
                            .upstream_healthy
                            .with_label_values(&[&*pool.name, server.to_string().as_str()])
                            .set(i64::from(usable));
                    }
                }
                (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", self.metrics.encode())
            }
            "/healthz" => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let snapshot = self.snapshots.load();
                let waiting: Vec<&str> = snapshot.auth.remote_keys().filter(|r| !r.ready()).map(|r| &*r.name).collect();
                if waiting.is_empty() {
                    (StatusCode::OK, "text/plain", b"ready\n".to_vec())
                } else {
                    let body = format!("not ready: no usable keys yet for issuer(s) {}\n", waiting.join(", "));
                    (StatusCode::SERVICE_UNAVAILABLE, "text/plain", body.into_bytes())
                }
            }
            _ => (StatusCode::NOT_FOUND, "text/plain", b"not found: try /metrics, /healthz or /readyz\n".to_vec()),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, content_type, body) = self.answer(session.req_header().uri.path());
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("content-length", body.len())
            .header("cache-control", "no-store")
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
