//! Compiling the start-time settings: listeners, admin, threads, shutdown, audit.

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::compile::unknown_env;
use super::Settings;
use crate::bind::EnvId;
use crate::config::{file, ConfigError, Source};

pub(super) fn settings(
    raw: &file::File,
    source: &Source,
    find_env: &dyn Fn(&str) -> Option<EnvId>,
    errors: &mut Vec<ConfigError>,
) -> Settings {
    let mut listeners = Vec::new();
    if raw.listeners.is_empty() {
        errors.push(ConfigError::at(
            0..0,
            "listeners",
            "no listener is configured",
            "add [[listeners]] with address = \"0.0.0.0:8080\"",
        ));
    }
    for (i, l) in raw.listeners.iter().enumerate() {
        let key = format!("listeners[{i}]");
        if let Some(addr) = socket_addr(&l.address, &format!("{key}.address"), errors) {
            if listeners.contains(&addr) {
                errors.push(ConfigError::at(
                    l.address.span(),
                    format!("{key}.address"),
                    format!("{addr} is listed twice"),
                    "remove the duplicate listener",
                ));
            }
            listeners.push(addr);
        }
        if l.h2c && l.tls {
            errors.push(ConfigError::at(
                l.address.span(),
                format!("{key}.h2c"),
                "h2c is HTTP/2 without TLS and the listener has tls = true",
                "on a TLS listener offer HTTP/2 with http2 = true; keep h2c for plain listeners",
            ));
        }
        if let Some(env) = &l.environment {
            if find_env(env.get_ref()).is_none() {
                errors.push(unknown_env(env, &format!("{key}.environment"), &raw.environments));
            }
        }
    }
    let admin = socket_addr(&raw.admin.address, "admin.address", errors)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901)));
    if listeners.contains(&admin) {
        errors.push(ConfigError::at(
            raw.admin.address.span(),
            "admin.address",
            "the admin listener shares an address with a proxy listener",
            "give the admin listener its own port",
        ));
    }
    if raw.metrics.tenant_label_top > 1_000 {
        errors.push(ConfigError::at(
            0..0,
            "metrics.tenant_label_top",
            format!("{} tenants is too many for a label", raw.metrics.tenant_label_top),
            "use at most 1000 (0 turns it off)",
        ));
    }
    if !raw.server.upgrade_socket.starts_with('/') {
        errors.push(ConfigError::at(
            0..0,
            "server.upgrade_socket",
            format!("`{}` is not an absolute path", raw.server.upgrade_socket),
            "old and new processes must agree on it: use an absolute path such as \"/run/isogate/upgrade.sock\"",
        ));
    }
    server_limits(&raw.server, errors);
    let capacity = *raw.audit.queue_capacity.get_ref();
    if !(1..=10_000_000).contains(&capacity) {
        errors.push(ConfigError::at(
            raw.audit.queue_capacity.span(),
            "audit.queue_capacity",
            format!("{capacity} is out of range"),
            "use a value from 1 to 10000000 (default 65536)",
        ));
    }
    let output = raw.audit.output.get_ref();
    let audit_path = if output == "stdout" {
        None
    } else if output.is_empty() {
        errors.push(ConfigError::at(
            raw.audit.output.span(),
            "audit.output",
            "the audit output is empty",
            "write a file path or \"stdout\"",
        ));
        None
    } else {
        Some(source.resolve(output))
    };
    let threads = if raw.server.threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        raw.server.threads
    };
    let tls_listeners =
        listeners.iter().zip(&raw.listeners).filter(|(_, l)| l.tls).map(|(a, l)| (*a, l.http2)).collect();
    let h2c_listeners = listeners.iter().zip(&raw.listeners).filter(|(_, l)| l.h2c).map(|(a, _)| *a).collect();
    Settings {
        listeners,
        tls_listeners,
        h2c_listeners,
        admin,
        threads,
        work_stealing: raw.server.work_stealing,
        grace_period: Duration::from_secs(raw.server.grace_period_seconds),
        shutdown_timeout: Duration::from_secs(raw.server.shutdown_timeout_seconds),
        upgrade_socket: std::path::PathBuf::from(&raw.server.upgrade_socket),
        max_connections: raw.server.max_connections,
        keepalive_timeout: Duration::from_secs(raw.server.keepalive_timeout_seconds),
        audit_path,
        audit_queue_capacity: capacity,
        audit_on_full: raw.audit.on_queue_full,
        audit_stream_end: raw.audit.stream_end,
        tenant_label_top: raw.metrics.tenant_label_top,
        database_listeners: Vec::new(),
    }
}

/// `[server]` connection limits: a cap of 0 would refuse everything and "unlimited"
/// would let a flood exhaust memory, so both are bounded.
fn server_limits(server: &file::Server, errors: &mut Vec<ConfigError>) {
    if !(1..=1_000_000).contains(&server.max_connections) {
        errors.push(ConfigError::at(
            0..0,
            "server.max_connections",
            format!("{} is out of range", server.max_connections),
            "use a value from 1 to 1000000 (default 10000); each idle connection costs about 13 KiB",
        ));
    }
    if !(1..=3600).contains(&server.keepalive_timeout_seconds) {
        errors.push(ConfigError::at(
            0..0,
            "server.keepalive_timeout_seconds",
            format!("{} is out of range", server.keepalive_timeout_seconds),
            "use a value from 1 to 3600 seconds (default 60)",
        ));
    }
}

fn socket_addr(raw: &Spanned<String>, key: &str, errors: &mut Vec<ConfigError>) -> Option<SocketAddr> {
    raw.get_ref()
        .parse()
        .map_err(|_| {
            errors.push(ConfigError::at(
                raw.span(),
                key,
                format!("`{}` is not an ip:port address", raw.get_ref()),
                "write e.g. \"0.0.0.0:8080\" or \"127.0.0.1:9901\"",
            ))
        })
        .ok()
}
