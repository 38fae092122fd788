//! Every metric isogate exports: names, help texts and label names live here and are a
//! stable interface. Metrics register into a registry passed in, so tests can build an
//! isolated one; the admin listener encodes that registry.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

mod cells;

pub use cells::{LimitLabels, MetricCells, RequestLabels};

/// Latency buckets in seconds, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Label value used when a label does not apply (no route matched, no environment bound).
pub const NONE: &str = "none";

/// The decision label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Sent upstream.
    Allow,
    /// Refused by the gateway or failed upstream.
    Deny,
}

impl Decision {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// The account label: developer test accounts are counted apart, so production
/// statistics can exclude them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// Not a test account (or no verified identity).
    Regular,
    /// A developer test account.
    Test,
}

impl Account {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Account::Regular => "regular",
            Account::Test => "test",
        }
    }
}

/// `1xx` .. `5xx`, or `none` when nothing was sent.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => NONE,
    }
}

/// All metric handles.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `isogate_requests_total{environment,route,decision,status_class,account}`
    pub requests: IntCounterVec,
    /// `isogate_policy_report_only_total{environment,reason}`: would-be refusals served.
    pub report_only: IntCounterVec,
    /// `isogate_access_reasons_total{environment}`: elevated access with a reason given.
    pub access_reasons: IntCounterVec,
    /// `isogate_rejections_total{reason}`
    pub rejections: IntCounterVec,
    /// `isogate_auth_failures_total{reason}`
    pub auth_failures: IntCounterVec,
    /// `isogate_request_duration_seconds{environment}`
    pub request_duration: HistogramVec,
    /// `isogate_upstream_duration_seconds{pool}`: from sending upstream to the response header.
    pub upstream_duration: HistogramVec,
    /// `isogate_token_cache_requests_total{result="hit"}`: verified-token cache hits.
    pub token_cache_hits: IntCounter,
    /// `isogate_token_cache_requests_total{result="miss"}`: tokens verified and cached.
    pub token_cache_misses: IntCounter,
    /// `isogate_token_cache_entries`: tokens held (set at scrape time).
    pub token_cache_entries: IntGauge,
    /// `isogate_jwks_fetches_total{issuer,result}`
    pub jwks_fetches: IntCounterVec,
    /// `isogate_jwks_keys{issuer}`
    pub jwks_keys: IntGaugeVec,
    /// `isogate_jwks_last_success_timestamp_seconds{issuer}`
    pub jwks_last_success: IntGaugeVec,
    /// `isogate_jwks_unknown_kid_refetches_total{issuer}`
    pub jwks_unknown_kid_refetches: IntCounterVec,
    /// `isogate_jwks_cooldown_hits_total{issuer}`
    pub jwks_cooldown_hits: IntCounterVec,
    /// `isogate_rate_limit_decisions_total{environment,plan,result,mode}`
    pub rate_limit: IntCounterVec,
    /// `isogate_upstream_ejections_total{pool}`: servers ejected after connection failures.
    pub upstream_ejections: IntCounterVec,
    /// `isogate_upstream_healthy{pool,server}`: 1 when a server is usable (set at scrape time).
    pub upstream_healthy: IntGaugeVec,
    /// `isogate_tenant_requests_total{tenant}`: the top-N tenants by traffic, the rest `other`.
    pub tenant_requests: IntCounterVec,
    /// `isogate_identity_headers_stripped_total`
    pub headers_stripped: IntCounter,
    /// `isogate_audit_lines_written_total`
    pub audit_written: IntCounter,
    /// `isogate_audit_lines_lost_total`
    pub audit_lost: IntCounter,
    /// `isogate_config_reloads_total{result}`
    pub config_reloads: IntCounterVec,
    /// `isogate_config_last_reload_success_timestamp_seconds`
    pub config_last_reload: IntGauge,
    /// `isogate_config_last_reload_successful`: 0 after a failed reload until one succeeds.
    pub config_last_reload_successful: IntGauge,
    /// `isogate_config_generation`
    pub config_generation: IntGauge,
    /// `isogate_build_info{version}`
    pub build_info: IntGaugeVec,
    /// `isogate_connections_open`: live client connections.
    pub connections_open: IntGauge,
    /// `isogate_connections_refused_total`: connections refused past `server.max_connections`.
    pub connections_refused: IntCounter,
    /// `isogate_request_duration_seconds` child for requests with no environment.
    pub unbound_duration: Histogram,
    /// `isogate_log_lines_suppressed_total{target}`: diagnostic log lines left out by the
    /// limits of `diag` (read from its counters at scrape time).
    pub log_suppressed: IntCounterVec,
    /// `isogate_db_sessions_total{decision,reason}`: database sessions admitted or refused.
    pub db_sessions: IntCounterVec,
    /// `isogate_db_sessions_ended_total`: admitted database sessions that ended.
    pub db_sessions_ended: IntCounter,
    /// `isogate_db_server_connections`: server connections open to databases (lent or idle).
    pub db_server_connections: IntGauge,
    /// `isogate_db_cancel_requests_total{result}`: database cancel requests received, by
    /// what became of them.
    pub db_cancel_requests: IntCounterVec,
}

/// Exports `diag`'s suppression counters: at each scrape the counter of each call site
/// is brought up to the site's process-wide count (they only grow).
struct LogSuppressed(IntCounterVec);

impl prometheus::core::Collector for LogSuppressed {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        for site in crate::diag::SITES {
            let counter = self.0.with_label_values(&[site.target()]);
            counter.inc_by(site.suppressed_total().saturating_sub(counter.get()));
        }
        self.0.collect()
    }
}

impl Metrics {
    /// Creates every metric and registers it into `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram_vec = |name: &str, help: &str, label: &str| -> prometheus::Result<HistogramVec> {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), &[label])?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let gauge_vec = |name: &str, help: &str, label: &str| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let config_last_reload = IntGauge::new(
            "isogate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration reload (0: none since start).",
        )?;
        registry.register(Box::new(config_last_reload.clone()))?;
        let config_last_reload_successful = IntGauge::new(
            "isogate_config_last_reload_successful",
            "1 when the last configuration reload succeeded (or none was tried since start); 0 after a failed one, until a reload succeeds.",
        )?;
        registry.register(Box::new(config_last_reload_successful.clone()))?;
        config_last_reload_successful.set(1);
        let token_cache = counter_vec(
            "isogate_token_cache_requests_total",
            "Verified-token cache lookups by result (hit, miss).",
            &["result"],
        )?;
        let token_cache_entries = IntGauge::new("isogate_token_cache_entries", "Verified tokens held in the cache.")?;
        registry.register(Box::new(token_cache_entries.clone()))?;
        let request_duration = histogram_vec(
            "isogate_request_duration_seconds",
            "Time from request start to the end of the response, by environment.",
            "environment",
        )?;
        let config_generation =
            IntGauge::new("isogate_config_generation", "Generation of the configuration in force; starts at 1.")?;
        registry.register(Box::new(config_generation.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new("isogate_build_info", "Always 1; the version label names the running build."),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let config_reloads = IntCounterVec::new(
            Opts::new("isogate_config_reloads_total", "Configuration reloads by result (ok, error)."),
            &["result"],
        )?;
        registry.register(Box::new(config_reloads.clone()))?;
        let log_suppressed = IntCounterVec::new(
            Opts::new(
                "isogate_log_lines_suppressed_total",
                "Diagnostic log lines left out by the per-call-site line limits, by log target.",
            ),
            &["target"],
        )?;
        registry.register(Box::new(LogSuppressed(log_suppressed.clone())))?;
        // Both series exist from the start, so the first failed reload is an increase.
        for result in ["ok", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        let db_server_connections = IntGauge::new(
            "isogate_db_server_connections",
            "Server connections open to database targets, lent to a session or idle.",
        )?;
        registry.register(Box::new(db_server_connections.clone()))?;
        let db_cancel_requests = counter_vec(
            "isogate_db_cancel_requests_total",
            "Database cancel requests received, by result (sent to the server, forwarded to a peer, or dropped).",
            &["result"],
        )?;
        for result in crate::database::cancel::CancelOutcome::LABELS {
            db_cancel_requests.with_label_values(&[result]);
        }
        Ok(Self {
            db_sessions: counter_vec(
                "isogate_db_sessions_total",
                "Database sessions by decision and reason (ok when admitted).",
                &["decision", "reason"],
            )?,
            db_sessions_ended: counter(
                "isogate_db_sessions_ended_total",
                "Admitted database sessions that ended.",
            )?,
            db_server_connections,
            db_cancel_requests,
            registry: registry.clone(),
            requests: counter_vec(
                "isogate_requests_total",
                "Requests by environment, route, decision, status class and account type.",
                &["environment", "route", "decision", "status_class", "account"],
            )?,
            report_only: counter_vec(
                "isogate_policy_report_only_total",
                "Requests a report-only environment served that its access rules would refuse.",
                &["environment", "reason"],
            )?,
            access_reasons: counter_vec(
                "isogate_access_reasons_total",
                "Requests that gave an access reason (cross-environment or elevated access).",
                &["environment"],
            )?,
            rejections: counter_vec("isogate_rejections_total", "Refused or failed requests by reason.", &["reason"])?,
            auth_failures: counter_vec("isogate_auth_failures_total", "Token failures by reason.", &["reason"])?,
            unbound_duration: request_duration.with_label_values(&[NONE]),
            request_duration,
            upstream_duration: histogram_vec(
                "isogate_upstream_duration_seconds",
                "Time from sending the request upstream to its response header, by pool.",
                "pool",
            )?,
            token_cache_hits: token_cache.with_label_values(&["hit"]),
            token_cache_misses: token_cache.with_label_values(&["miss"]),
            token_cache_entries,
            jwks_fetches: counter_vec(
                "isogate_jwks_fetches_total",
                "JWKS fetches by issuer and result.",
                &["issuer", "result"],
            )?,
            jwks_keys: gauge_vec("isogate_jwks_keys", "Keys held from the issuer's JWKS.", "issuer")?,
            jwks_last_success: gauge_vec(
                "isogate_jwks_last_success_timestamp_seconds",
                "Unix time of the last successful JWKS fetch; the key set's age is time() minus this.",
                "issuer",
            )?,
            jwks_unknown_kid_refetches: counter_vec(
                "isogate_jwks_unknown_kid_refetches_total",
                "JWKS refetches triggered by a token with an unknown kid.",
                &["issuer"],
            )?,
            jwks_cooldown_hits: counter_vec(
                "isogate_jwks_cooldown_hits_total",
                "Unknown-kid tokens refused without a refetch because of the cooldown.",
                &["issuer"],
            )?,
            config_reloads,
            config_last_reload,
            config_last_reload_successful,
            rate_limit: counter_vec(
                "isogate_rate_limit_decisions_total",
                "Rate-limit and quota decisions by environment, plan, result and the limiter that decided.",
                &["environment", "plan", "result", "mode"],
            )?,
            upstream_ejections: counter_vec(
                "isogate_upstream_ejections_total",
                "Servers ejected after consecutive connection failures, by pool.",
                &["pool"],
            )?,
            upstream_healthy: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "isogate_upstream_healthy",
                        "1 when the server passes its health check and is not ejected.",
                    ),
                    &["pool", "server"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            tenant_requests: counter_vec(
                "isogate_tenant_requests_total",
                "Requests of the busiest tenants (metrics.tenant_label_top); all others are counted under the label value other.",
                &["tenant"],
            )?,
            headers_stripped: counter(
                "isogate_identity_headers_stripped_total",
                "Client-supplied identity header values removed before forwarding.",
            )?,
            audit_written: counter("isogate_audit_lines_written_total", "Audit lines written to the audit output.")?,
            audit_lost: counter("isogate_audit_lines_lost_total", "Audit lines that could not be queued or written.")?,
            config_generation,
            build_info,
            connections_open: {
                let g = IntGauge::new("isogate_connections_open", "Live client connections on the proxy listeners.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            connections_refused: counter(
                "isogate_connections_refused_total",
                "Client connections refused with 503 too_many_connections because server.max_connections were open.",
            )?,
            log_suppressed,
        })
    }

    /// Handles for the connection cap.
    pub fn connections(&self) -> crate::connections::ConnectionMetrics {
        crate::connections::ConnectionMetrics {
            open: self.connections_open.clone(),
            refused: self.connections_refused.clone(),
        }
    }

    /// Handles for one JWKS issuer.
    pub fn jwks(&self, issuer: &str) -> crate::auth::jwks::JwksMetrics {
        crate::auth::jwks::JwksMetrics {
            fetches: self.jwks_fetches.clone(),
            keys: self.jwks_keys.with_label_values(&[issuer]),
            last_success: self.jwks_last_success.with_label_values(&[issuer]),
            unknown_kid_refetches: self.jwks_unknown_kid_refetches.with_label_values(&[issuer]),
            cooldown_hits: self.jwks_cooldown_hits.with_label_values(&[issuer]),
        }
    }

    /// Prometheus text exposition of the registry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8192);
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_into_its_own_registry_and_encodes() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).unwrap();
        m.requests
            .with_label_values(&["prod", "api", Decision::Allow.as_str(), status_class(204), Account::Regular.as_str()])
            .inc();
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text.contains(r#"isogate_requests_total{account="regular",decision="allow",environment="prod",route="api",status_class="2xx"} 1"#), "{text}");
        assert!(text.contains(r#"isogate_build_info{version=""#));
        // Every limited log target has its series from the start.
        assert!(text.contains(r#"isogate_log_lines_suppressed_total{target="isogate::reject"} "#), "{text}");
        assert!(Metrics::register(&registry).is_err(), "names are registered once");
    }
}
