//! The admin listener: `/metrics` (our registry, Prometheus text), `/healthz`
//! (the process is up) and `/readyz` (a configuration is loaded and in force).
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
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.encode(),
            ),
            "/healthz" => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                // A snapshot exists from the start; readiness grows with later checks (keys, health).
                let _ = self.snapshots.load();
                (StatusCode::OK, "text/plain", b"ready\n".to_vec())
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found: try /metrics, /healthz or /readyz\n".to_vec(),
            ),
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
