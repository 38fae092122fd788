//! Compiled database targets and listeners: where a session's server connections go,
//! which login role they sign in as, and with which password.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::bind::EnvId;
use crate::config::file::{ClientAuth, PasswordMode};
use crate::template::{valid_schema, Template, Values};

/// Index of a target in the compiled snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TargetId(pub u16);

/// A `[databases.NAME]` entry, compiled.
#[derive(Debug)]
pub struct Target {
    /// The configured name (what `db_pool` renders to).
    pub name: Box<str>,
    /// Server host name or address.
    pub host: Box<str>,
    /// Server port.
    pub port: u16,
    /// The database to open.
    pub database: Box<str>,
    /// The login role template.
    pub user: Template,
    /// The secret the password comes from.
    secret: Box<[u8]>,
    /// How the password comes from the secret.
    password_mode: PasswordMode,
    /// Server connections open at once, over every login role.
    pub max_server_connections: usize,
    /// Longest wait for a server connection.
    pub queue_timeout: Duration,
    /// Connect and sign-in timeout.
    pub connect_timeout: Duration,
    /// Whether sessions that gave an access reason get one audit line per statement.
    pub audit_statements: bool,
    /// TLS to the server, verified against the target's CA.
    pub tls: Option<super::server_stream::ServerTls>,
}

impl Target {
    /// Builds a target; `secret` is the configured secret.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        host: &str,
        port: u16,
        database: &str,
        user: Template,
        secret: Vec<u8>,
        password_mode: PasswordMode,
        limits: (usize, Duration, Duration),
    ) -> Self {
        let (max_server_connections, queue_timeout, connect_timeout) = limits;
        Self {
            name: name.into(),
            host: host.into(),
            port,
            database: database.into(),
            user,
            secret: secret.into(),
            password_mode,
            max_server_connections,
            queue_timeout,
            connect_timeout,
            audit_statements: false,
            tls: None,
        }
    }

    /// The same target, reached over TLS.
    pub fn with_tls(mut self, tls: Option<super::server_stream::ServerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// The same target, auditing each statement of sessions that gave a reason.
    pub fn with_statement_audit(mut self, on: bool) -> Self {
        self.audit_statements = on;
        self
    }

    /// The login role for a session: the rendered `user` template, which must be a
    /// plain lowercase identifier (`^[a-z_][a-z0-9_]{0,62}$`), so that it can be named
    /// in SQL without quoting and no claim can smuggle another role's name in.
    pub fn login_role(&self, values: &Values<'_>) -> Option<String> {
        self.user.render(values).ok().filter(|r| valid_schema(r))
    }

    /// The password of `role` on this target.
    pub fn password(&self, role: &str) -> String {
        match self.password_mode {
            PasswordMode::Derived => derived_password(&self.secret, role),
            PasswordMode::Literal => String::from_utf8_lossy(&self.secret).into_owned(),
        }
    }

    /// What identifies the server connections of this target: a reload that changes
    /// any of it starts a new pool.
    pub fn pool_key(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            self.name, self.host, self.port, self.database, self.max_server_connections
        )
    }
}

/// The password of a login role under a master secret: the lowercase hex
/// HMAC-SHA256 of the role name, keyed by the secret. Operators set it with the SQL
/// that `deploy/postgres/` shows; anyone who can compute it must hold the secret.
pub fn derived_password(secret: &[u8], role: &str) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else { return String::new() };
    mac.update(role.as_bytes());
    mac.finalize().into_bytes().iter().fold(String::with_capacity(64), |mut out, b| {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
        out
    })
}

/// A `[[database_listeners]]` entry, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// Where it listens.
    pub address: SocketAddr,
    /// The environment of its sessions.
    pub env: EnvId,
    /// Whether clients may stay in plain text (loopback only).
    pub allow_plaintext: bool,
    /// Client sessions open at once; more are refused.
    pub max_sessions: usize,
    /// How clients hand their token over.
    pub client_auth: ClientAuth,
}

/// The OAUTHBEARER error response that names nothing but the status.
pub const OAUTH_STATUS_ONLY: &str = r#"{"status":"invalid_token"}"#;

/// Every database target and listener.
#[derive(Debug, Default)]
pub struct Databases {
    /// Listeners.
    pub listeners: Box<[Listener]>,
    /// The OAUTHBEARER error response of each listener, in the order of `listeners`.
    oauth_challenges: Box<[Box<str>]>,
    targets: Box<[Target]>,
    by_name: HashMap<Box<str>, TargetId>,
}

impl Databases {
    /// Builds the table; names must be unique (the on-disk map guarantees it). Each
    /// listener comes with the JSON its OAUTHBEARER clients get when their token fails.
    pub fn new(listeners: Vec<(Listener, Box<str>)>, targets: Vec<Target>) -> Self {
        let by_name = targets
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((t.name.clone(), TargetId(u16::try_from(i).ok()?))))
            .collect();
        let (listeners, oauth_challenges): (Vec<_>, Vec<_>) = listeners.into_iter().unzip();
        Self {
            listeners: listeners.into(),
            oauth_challenges: oauth_challenges.into(),
            targets: targets.into(),
            by_name,
        }
    }

    /// The OAUTHBEARER error response (RFC 7628 section 3.2.2) of the listener on
    /// `address`: `{"status":"invalid_token"}`, with the discovery document and scope
    /// where configured.
    pub fn oauth_challenge(&self, address: SocketAddr) -> &str {
        let at = self.listeners.iter().position(|l| l.address == address);
        at.and_then(|i| self.oauth_challenges.get(i)).map_or(OAUTH_STATUS_ONLY, |c| c)
    }

    /// The target named `name`.
    pub fn find(&self, name: &str) -> Option<TargetId> {
        self.by_name.get(name).copied()
    }

    /// The target with this id.
    pub fn get(&self, id: TargetId) -> &Target {
        &self.targets[usize::from(id.0)]
    }

    /// The listener accepting on `local` (an unspecified address matches any).
    pub fn listener(&self, local: SocketAddr) -> Option<&Listener> {
        self.listeners.iter().find(|l| {
            l.address.port() == local.port() && (l.address.ip() == local.ip() || l.address.ip().is_unspecified())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_password_is_hmac_sha256_hex_of_the_role() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            derived_password(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(derived_password(b"k", "tenant_a"), derived_password(b"k", "tenant_b"));
    }

    #[test]
    fn login_role_must_be_a_plain_identifier() {
        let t = Target::new(
            "db",
            "127.0.0.1",
            5432,
            "app",
            Template::parse("tenant_{tenant}").unwrap(),
            b"secret".to_vec(),
            PasswordMode::Derived,
            (1, Duration::from_secs(1), Duration::from_secs(1)),
        );
        let values = |tenant| Values { env: "prod", tenant: Some(tenant), sub: None };
        assert_eq!(t.login_role(&values("acme")).as_deref(), Some("tenant_acme"));
        assert_eq!(t.login_role(&values("Acme")), None);
        assert_eq!(t.login_role(&values("a-b")), None);
        assert_eq!(t.login_role(&values("x\"; drop role y; --")), None);
    }
}
