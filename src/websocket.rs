//! WebSocket upgrades, stage "forward": how a request is recognised as an upgrade
//! (admission runs every stage on it, like on any request), and the timing of the
//! tunnel that opens once the upstream answers 101 — a per-route idle timeout, which
//! replaces the pool's read timeout and the client body timeout for the tunnel, and a
//! maximum lifetime.
//!
//! The idle timeout is a read timeout on each side; pingora restarts both reads
//! whenever a message passes either way, so it measures silence in both directions.
//! The lifetime is enforced by the same timeout, shortened to what is left of it, and
//! by a check as each message passes.

use std::time::{Duration, Instant};

use http::header::{CONNECTION, UPGRADE};
use http::request::Parts;
use toml::Spanned;

use crate::config::ConfigError;

/// Whether the request asks to become a WebSocket (RFC 6455 section 4.1): a GET with
/// `Upgrade: websocket` and `Connection: upgrade`.
pub fn is_upgrade(head: &Parts) -> bool {
    let has_token = |name, token: &str| {
        head.headers
            .get_all(name)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    head.method == http::Method::GET && has_token(UPGRADE, "websocket") && has_token(CONNECTION, "upgrade")
}

/// A route's WebSocket limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest silence in both directions.
    pub idle: Duration,
    /// Longest life of a tunnel.
    pub max_lifetime: Duration,
}

impl Limits {
    /// Compiles `routes[].websocket_*` at `key` (`routes[N]`).
    pub fn compile(idle: &Spanned<u64>, lifetime: &Spanned<u64>, key: &str, errors: &mut Vec<ConfigError>) -> Self {
        let mut seconds = |value: &Spanned<u64>, name: &str| {
            let s = *value.get_ref();
            if !(1..=604_800).contains(&s) {
                errors.push(ConfigError::at(
                    value.span(),
                    format!("{key}.{name}"),
                    format!("{s} is out of range"),
                    "use a value from 1 to 604800 seconds (one week)",
                ));
            }
            Duration::from_secs(s)
        };
        let limits = Self {
            idle: seconds(idle, "websocket_idle_timeout_seconds"),
            max_lifetime: seconds(lifetime, "websocket_max_lifetime_seconds"),
        };
        if limits.idle > limits.max_lifetime {
            errors.push(ConfigError::at(
                idle.span(),
                format!("{key}.websocket_idle_timeout_seconds"),
                "the idle timeout is longer than the maximum lifetime",
                "make websocket_idle_timeout_seconds at most websocket_max_lifetime_seconds",
            ));
        }
        limits
    }
}

/// An open tunnel's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    idle: Duration,
    deadline: Instant,
}

/// Why a tunnel was closed by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Nothing passed either way for the idle timeout.
    Idle,
    /// The maximum lifetime was reached.
    Lifetime,
}

impl Closed {
    /// Stable reason for the closing audit record.
    pub fn reason(self) -> &'static str {
        match self {
            Closed::Idle => "websocket_idle_timeout",
            Closed::Lifetime => "websocket_max_lifetime",
        }
    }
}

impl Tunnel {
    /// A tunnel opening now.
    pub fn open(limits: Limits) -> Self {
        Self { idle: limits.idle, deadline: Instant::now() + limits.max_lifetime }
    }

    /// The read timeout for the next read: the idle timeout, or what is left of the
    /// lifetime if that is shorter; `Err` once the lifetime is over.
    pub fn next_read_timeout(&self) -> Result<Duration, Closed> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Closed::Lifetime);
        }
        Ok(left.min(self.idle))
    }

    /// Why the tunnel ended, when it ended on a read timeout.
    pub fn closed_by_timeout(&self) -> Closed {
        if Instant::now() >= self.deadline {
            Closed::Lifetime
        } else {
            Closed::Idle
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri("/ws");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn an_upgrade_needs_get_and_both_tokens() {
        let ws = [("upgrade", "WebSocket"), ("connection", "keep-alive, Upgrade")];
        assert!(is_upgrade(&head("GET", &ws)));
        assert!(!is_upgrade(&head("POST", &ws)));
        assert!(!is_upgrade(&head("GET", &[("upgrade", "websocket")])));
        assert!(!is_upgrade(&head("GET", &[("upgrade", "h2c"), ("connection", "upgrade")])));
        assert!(!is_upgrade(&head("GET", &[])));
    }

    #[test]
    fn the_read_timeout_shrinks_to_the_lifetime_left() {
        let limits = Limits { idle: Duration::from_secs(60), max_lifetime: Duration::from_secs(5) };
        let t = Tunnel::open(limits);
        let next = t.next_read_timeout().unwrap();
        assert!(next <= Duration::from_secs(5) && next > Duration::from_secs(4), "{next:?}");
        let long = Tunnel::open(Limits { idle: Duration::from_secs(2), max_lifetime: Duration::from_secs(60) });
        assert_eq!(long.next_read_timeout(), Ok(Duration::from_secs(2)));
        assert_eq!(long.closed_by_timeout(), Closed::Idle);
        let over = Tunnel { idle: Duration::from_secs(2), deadline: Instant::now() };
        assert_eq!(over.next_read_timeout(), Err(Closed::Lifetime));
        assert_eq!(over.closed_by_timeout(), Closed::Lifetime);
    }

    #[test]
    fn limits_are_bounded_and_ordered() {
        let mut errors = Vec::new();
        let s = |v| Spanned::new(0..0, v);
        Limits::compile(&s(0), &s(10), "routes[0]", &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.clear();
        Limits::compile(&s(100), &s(10), "routes[0]", &mut errors);
        assert_eq!(errors[0].key, "routes[0].websocket_idle_timeout_seconds");
        errors.clear();
        let l = Limits::compile(&s(300), &s(86_400), "routes[0]", &mut errors);
        assert!(errors.is_empty());
        assert_eq!(l.idle, Duration::from_secs(300));
    }
}
