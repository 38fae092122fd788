//! Compiling `[pools.*]`: servers, balancing, health checks, ejection, TLS and hints.

use std::collections::{BTreeMap, HashMap};
use std::net::ToSocketAddrs;
use std::time::Duration;

use toml::Spanned;

use super::compile::db_hints;
use crate::config::{file, ConfigError, Source};
use crate::routing::DbHints;
use crate::upstream::{Balance, Ejection, HealthCheck, Pool, PoolId, PoolSpec, Pools, Protocol};

pub(super) fn pools(
    raw: &BTreeMap<Spanned<String>, file::Pool>,
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> (Pools, HashMap<String, PoolId>, Vec<DbHints>) {
    let mut pools = Vec::new();
    let mut ids = HashMap::new();
    let mut hints = Vec::new();
    for (name, pool) in raw {
        let key = format!("pools.{}", name.get_ref());
        if !name.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            || name.get_ref().is_empty()
        {
            errors.push(ConfigError::at(
                name.span(),
                &key,
                "pool names may hold only letters, digits, `-`, `_` and `.`",
                "rename the pool",
            ));
            continue;
        }
        if pool.servers.get_ref().is_empty() {
            errors.push(ConfigError::at(
                pool.servers.span(),
                format!("{key}.servers"),
                "the pool has no server",
                "list at least one \"host:port\"",
            ));
        }
        if pool.connect_timeout_ms == 0 || pool.read_timeout_ms == 0 {
            errors.push(ConfigError::at(
                name.span(),
                &key,
                "timeouts must be above zero",
                "set connect_timeout_ms and read_timeout_ms in milliseconds",
            ));
        }
        let mut addrs = Vec::new();
        for (i, server) in pool.servers.get_ref().iter().enumerate() {
            match server.get_ref().to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(addr)) => addrs.push(addr),
                _ => errors.push(ConfigError::at(
                    server.span(),
                    format!("{key}.servers[{i}]"),
                    format!("`{}` is not a reachable host:port (it does not parse or resolve)", server.get_ref()),
                    "write \"10.0.0.5:8080\" or \"app.internal:8080\"",
                )),
            }
        }
        let health_check = pool.health_check_path.as_ref().map(|path| {
            if !path.get_ref().starts_with('/') {
                errors.push(ConfigError::at(
                    path.span(),
                    format!("{key}.health_check_path"),
                    format!("`{}` is not an absolute path", path.get_ref()),
                    "write e.g. \"/healthz\"",
                ));
            }
            HealthCheck {
                path: path.get_ref().clone(),
                interval: Duration::from_millis(pool.health_check_interval_ms.max(100)),
                timeout: Duration::from_millis(pool.health_check_timeout_ms.max(10)),
                healthy_after: pool.healthy_after,
                unhealthy_after: pool.unhealthy_after,
            }
        });
        let spec = PoolSpec {
            name: name.get_ref().clone(),
            servers: addrs,
            balance: match pool.balance {
                file::Balance::RoundRobin => Balance::RoundRobin,
                file::Balance::TenantHash => Balance::TenantHash,
            },
            connect_timeout: Duration::from_millis(pool.connect_timeout_ms),
            read_timeout: Duration::from_millis(pool.read_timeout_ms),
            health_check,
            ejection: Ejection {
                after_failures: pool.eject_after_failures,
                duration: Duration::from_secs(pool.eject_seconds),
            },
            tls: crate::tls::upstream(pool, &key, source, errors),
            protocol: protocol(pool, &key, errors),
        };
        let built = Pool::new(&spec);
        match built {
            Ok(p) => {
                ids.insert(name.get_ref().clone(), PoolId(pools.len() as u16));
                pools.push(p);
                hints.push(db_hints(pool.db_schema.as_ref(), pool.db_pool.as_ref(), &key, errors));
            }
            Err(e) => errors.push(ConfigError::at(
                name.span(),
                &key,
                format!("cannot build the pool: {e}"),
                "check the server list",
            )),
        }
    }
    (Pools::new(pools), ids, hints)
}

/// The pool's HTTP version; `h2` is negotiated inside TLS and `h2c` has none.
fn protocol(pool: &file::Pool, key: &str, errors: &mut Vec<ConfigError>) -> Protocol {
    let Some(raw) = &pool.protocol else { return Protocol::Http1 };
    let (protocol, conflict) = match raw.get_ref() {
        file::UpstreamProtocol::Http1 => (Protocol::Http1, None),
        file::UpstreamProtocol::H2 => {
            (Protocol::H2, (!pool.tls).then_some("\"h2\" is HTTP/2 over TLS and the pool has tls = false"))
        }
        file::UpstreamProtocol::H2c => {
            (Protocol::H2c, pool.tls.then_some("\"h2c\" is HTTP/2 without TLS and the pool has tls = true"))
        }
    };
    if let Some(problem) = conflict {
        errors.push(ConfigError::at(
            raw.span(),
            format!("{key}.protocol"),
            problem,
            "use protocol = \"h2\" with tls = true, or protocol = \"h2c\" without TLS",
        ));
    }
    protocol
}
