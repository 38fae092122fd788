//! Compiled database targets and listeners: where a session's server connections go,
//! which login role they sign in as, and with which password.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

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
    /// How long a pooled server connection may stay idle before it is closed.
    pub server_idle_timeout: Duration,
    /// How old a server connection may get before it is closed instead of pooled.
    pub server_lifetime: Duration,
    /// Identifies the target's server connections; see `pool_key`.
    pool_key: Box<str>,
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
            server_idle_timeout: Duration::from_secs(600),
            server_lifetime: Duration::from_secs(3600),
            pool_key: Box::default(),
        }
        .with_pool_key()
    }

    /// The same target, reached over TLS.
    pub fn with_tls(mut self, tls: Option<super::server_stream::ServerTls>) -> Self {
        self.tls = tls;
        self.with_pool_key()
    }

    /// The same target, with its pooled connections' idle timeout and lifetime.
    pub fn with_server_lifetimes(mut self, idle_timeout: Duration, lifetime: Duration) -> Self {
        self.server_idle_timeout = idle_timeout;
        self.server_lifetime = lifetime;
        self.with_pool_key()
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

    /// What identifies the server connections of this target: its name and a digest of
    /// everything its connections and its pool are made with (address, database, login
    /// role template, secret and password mode, TLS trust and name, connection cap, idle
    /// timeout and lifetime). A reload that changes any of it starts a new pool and
    /// retires the old one; one that changes none keeps the pool and its connections.
    pub fn pool_key(&self) -> &str {
        &self.pool_key
    }

    fn with_pool_key(mut self) -> Self {
        let mut digest = Sha256::new();
        let mut field = |bytes: &[u8]| {
            // Length-prefixed, so no two different field lists hash alike.
            digest.update((bytes.len() as u64).to_be_bytes());
            digest.update(bytes);
        };
        field(self.host.as_bytes());
        field(&self.port.to_be_bytes());
        field(self.database.as_bytes());
        field(format!("{:?}", self.user).as_bytes());
        field(&self.secret);
        field(format!("{:?}", self.password_mode).as_bytes());
        match &self.tls {
            Some(tls) => {
                field(&tls.trust);
                field(format!("{:?}", tls.name).as_bytes());
            }
            None => field(b"plain"),
        }
        field(&(self.max_server_connections as u64).to_be_bytes());
        field(&self.server_idle_timeout.as_millis().to_be_bytes());
        field(&self.server_lifetime.as_millis().to_be_bytes());
        let hex = hex_lower(&digest.finalize());
        self.pool_key = format!("{}\u{0}{hex}", self.name).into();
        self
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
        out
    })
}

/// The password of a login role under a master secret: the lowercase hex
/// HMAC-SHA256 of the role name, keyed by the secret. Operators set it with the SQL
/// that `deploy/postgres/` shows; anyone who can compute it must hold the secret.
pub fn derived_password(secret: &[u8], role: &str) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else { return String::new() };
    mac.update(role.as_bytes());
    hex_lower(&mac.finalize().into_bytes())
}

/// Where the sessions of a database listener get their environment.
#[derive(Debug, Clone)]
pub enum ListenerEnvironment {
    /// Every session belongs to this one.
    Fixed(EnvId),
    /// Each session belongs to the environment of the TLS server name (SNI) its client
    /// sent; the names are lowercase.
    ByServerName(Arc<HashMap<Box<str>, EnvId>>),
}

impl ListenerEnvironment {
    /// The environment of a session whose TLS handshake named `server_name`; `None`
    /// when the listener goes by server name and the client sent none or an unknown one.
    pub fn of(&self, server_name: Option<&str>) -> Option<EnvId> {
        match self {
            Self::Fixed(env) => Some(*env),
            Self::ByServerName(names) => names.get(server_name?.to_ascii_lowercase().as_str()).copied(),
        }
    }
}

/// A `[[database_listeners]]` entry, compiled.
#[derive(Clone)]
pub struct Listener {
    /// Where it listens.
    pub address: SocketAddr,
    /// The environment of its sessions.
    pub environment: ListenerEnvironment,
    /// Whether clients may stay in plain text (loopback only).
    pub allow_plaintext: bool,
    /// Client sessions open at once; more are refused.
    pub max_sessions: usize,
    /// How clients hand their token over.
    pub client_auth: ClientAuth,
    /// TLS with the listener's own certificate; `None`: `[[certificates]]` by SNI.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("environment", &self.environment)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("max_sessions", &self.max_sessions)
            .field("client_auth", &self.client_auth)
            .field("own_certificate", &self.tls.is_some())
            .finish()
    }
}

/// A listener's OAUTHBEARER error responses, one per environment it serves.
pub type OauthChallenges = Box<[(EnvId, Box<str>)]>;

/// The OAUTHBEARER error response that names nothing but the status.
pub const OAUTH_STATUS_ONLY: &str = r#"{"status":"invalid_token"}"#;

/// Every database target and listener.
#[derive(Debug, Default)]
pub struct Databases {
    /// Listeners.
    pub listeners: Box<[Listener]>,
    /// The OAUTHBEARER error responses of each listener (one per environment it
    /// serves), in the order of `listeners`.
    oauth_challenges: Box<[OauthChallenges]>,
    targets: Box<[Target]>,
    by_name: HashMap<Box<str>, TargetId>,
    /// Where cancel requests for other gateway processes go.
    pub peering: super::cancel::Peering,
}

impl Databases {
    /// Builds the table; names must be unique (the on-disk map guarantees it). Each
    /// listener comes with the JSON its OAUTHBEARER clients get when their token fails,
    /// for each environment it serves.
    pub fn new(listeners: Vec<(Listener, OauthChallenges)>, targets: Vec<Target>) -> Self {
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
            peering: Default::default(),
        }
    }

    /// The same table, with this process's peer id and its peers.
    pub fn with_peering(mut self, peering: super::cancel::Peering) -> Self {
        self.peering = peering;
        self
    }

    /// The OAUTHBEARER error response (RFC 7628 section 3.2.2) of the listener on
    /// `address` for a session in `env`: `{"status":"invalid_token"}`, with the
    /// discovery document and scope where configured.
    pub fn oauth_challenge(&self, address: SocketAddr, env: EnvId) -> &str {
        let at = self.listeners.iter().position(|l| l.address == address);
        let challenges = at.and_then(|i| self.oauth_challenges.get(i));
        challenges.and_then(|c| c.iter().find(|(e, _)| *e == env)).map_or(OAUTH_STATUS_ONLY, |(_, c)| c)
    }

    /// The target named `name`.
    pub fn find(&self, name: &str) -> Option<TargetId> {
        self.by_name.get(name).copied()
    }

    /// The target with this id.
    pub fn get(&self, id: TargetId) -> &Target {
        &self.targets[usize::from(id.0)]
    }

    /// Whether a target of this configuration has server connections under `pool_key`.
    pub fn has_pool(&self, pool_key: &str) -> bool {
        let name = pool_key.split('\u{0}').next().unwrap_or_default();
        self.find(name).is_some_and(|id| self.get(id).pool_key() == pool_key)
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

    fn target(host: &str, secret: &[u8], queue_timeout: Duration) -> Target {
        let user = Template::parse("tenant_{tenant}").unwrap();
        let limits = (20, queue_timeout, Duration::from_secs(5));
        Target::new("db", host, 5432, "app", user, secret.to_vec(), PasswordMode::Derived, limits)
    }

    #[test]
    fn the_pool_key_changes_with_what_connections_are_made_with_only() {
        let base = target("10.0.0.1", b"secret", Duration::from_secs(5));
        let key = base.pool_key().to_owned();
        assert!(key.starts_with("db\u{0}"), "{key}");
        assert_eq!(target("10.0.0.1", b"secret", Duration::from_secs(9)).pool_key(), key, "queue timeout");
        assert_ne!(target("10.0.0.2", b"secret", Duration::from_secs(5)).pool_key(), key, "host");
        assert_ne!(target("10.0.0.1", b"rotated", Duration::from_secs(5)).pool_key(), key, "secret");
        let shorter = target("10.0.0.1", b"secret", Duration::from_secs(5))
            .with_server_lifetimes(Duration::from_secs(600), Duration::from_secs(60));
        assert_ne!(shorter.pool_key(), key, "lifetime");
        let databases = Databases::new(Vec::new(), vec![base]);
        assert!(databases.has_pool(&key));
        assert!(!databases.has_pool(shorter.pool_key()));
        assert!(!databases.has_pool("other\u{0}00"));
    }

    #[test]
    fn a_server_name_chooses_its_environment_without_case_and_nothing_else_does() {
        let (stage, prod) = (EnvId(1), EnvId(2));
        let names = HashMap::from([("db.stage.test".into(), stage), ("db.prod.test".into(), prod)]);
        let by_name = ListenerEnvironment::ByServerName(Arc::new(names));
        assert_eq!(by_name.of(Some("db.stage.test")), Some(stage));
        assert_eq!(by_name.of(Some("DB.Prod.Test")), Some(prod));
        assert_eq!(by_name.of(Some("db.dev.test")), None);
        assert_eq!(by_name.of(Some("stage.test")), None);
        assert_eq!(by_name.of(None), None);
        let fixed = ListenerEnvironment::Fixed(prod);
        assert_eq!(fixed.of(None), Some(prod));
        assert_eq!(fixed.of(Some("db.stage.test")), Some(prod));
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
