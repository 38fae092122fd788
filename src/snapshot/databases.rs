//! Compiling `[[database_listeners]]` and `[databases.NAME]`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::sign::SingleCertAndKey;
use sha2::Digest;
use toml::Spanned;

use super::compile::unknown_env;
use crate::bind::EnvId;
use crate::config::{file, ConfigError, EnvLookup, Source};
use crate::database::cancel::Peering;
use crate::database::{Databases, Listener, ListenerEnvironment, Target};
use crate::template::{valid_schema, Template};

/// Most client sessions one database listener may hold.
const MAX_SESSIONS: usize = 100_000;

/// Longest idle timeout of a pooled server connection, in seconds (a day).
const MAX_SERVER_IDLE_TIMEOUT_SECONDS: u64 = 86_400;
/// Longest lifetime of a server connection, in seconds (a week).
const MAX_SERVER_LIFETIME_SECONDS: u64 = 604_800;

/// Shortest master secret accepted for derived passwords, in bytes.
const MIN_MASTER_SECRET_BYTES: usize = 32;

/// What the database sections compile to.
pub(super) struct Compiled {
    pub(super) databases: Databases,
    pub(super) listen: Vec<SocketAddr>,
}

/// Compiles both sections. `taken` are the addresses of the other listeners.
pub(super) fn databases(
    raw: &file::File,
    source: &Source,
    env: EnvLookup<'_>,
    find_env: &dyn Fn(&str) -> Option<EnvId>,
    taken: &[SocketAddr],
    errors: &mut Vec<ConfigError>,
) -> Compiled {
    let mut listeners = Vec::new();
    for (i, l) in raw.database_listeners.iter().enumerate() {
        let key = format!("database_listeners[{i}]");
        let Ok(address) = l.address.get_ref().parse::<SocketAddr>() else {
            errors.push(ConfigError::at(
                l.address.span(),
                format!("{key}.address"),
                format!("`{}` is not an ip:port address", l.address.get_ref()),
                "write e.g. \"0.0.0.0:6432\"",
            ));
            continue;
        };
        if taken.contains(&address) || listeners.iter().any(|(x, _): &(Listener, _)| x.address == address) {
            errors.push(ConfigError::at(
                l.address.span(),
                format!("{key}.address"),
                format!("{address} is already used by another listener"),
                "give each listener its own address",
            ));
        }
        if l.allow_plaintext && !address.ip().is_loopback() {
            errors.push(ConfigError::at(
                l.address.span(),
                format!("{key}.allow_plaintext"),
                format!("plain text is allowed only on a loopback address, and {address} is not one"),
                "listen on 127.0.0.1 or ::1, or remove allow_plaintext",
            ));
        }
        let fields = crate::tls::PemPair::fields(&key, "cert_file", "key_file");
        let before = errors.len();
        let own = fields.load_optional(l.cert_file.as_ref(), l.key_file.as_ref(), source, errors);
        let own_given = l.cert_file.is_some() || l.key_file.is_some();
        if !l.allow_plaintext && !own_given && raw.certificates.is_empty() {
            errors.push(ConfigError::at(
                l.address.span(),
                key.clone(),
                "a database listener needs TLS, but no certificate is configured",
                "set cert_file and key_file on the listener, or add a [[certificates]] entry",
            ));
        }
        if !(1..=MAX_SESSIONS).contains(&l.max_sessions) {
            errors.push(ConfigError::at(
                l.address.span(),
                format!("{key}.max_sessions"),
                format!("{} client sessions is out of range", l.max_sessions),
                format!("use 1 to {MAX_SESSIONS}"),
            ));
        }
        let Some(environment) = listener_environment(raw, l, &key, find_env, errors) else { continue };
        let tls = match own {
            Some(certified) => {
                let resolver = std::sync::Arc::new(SingleCertAndKey::from(certified));
                match crate::database::tls_acceptor(resolver) {
                    Ok(acceptor) => Some(acceptor),
                    Err(e) => {
                        errors.push(ConfigError::at(
                            l.address.span(),
                            format!("{key}.cert_file"),
                            e.to_string(),
                            "use an RSA, ECDSA or Ed25519 certificate",
                        ));
                        None
                    }
                }
            }
            None => None,
        };
        let challenges = oauth_challenges(raw, l, &key, find_env, errors);
        if errors.len() > before {
            continue;
        }
        let listener = Listener {
            address,
            environment,
            allow_plaintext: l.allow_plaintext,
            max_sessions: l.max_sessions,
            client_auth: l.client_auth,
            tls,
        };
        listeners.push((listener, challenges));
    }
    let mut targets = Vec::new();
    for (name, d) in &raw.databases {
        if let Some(target) = target(name, d, source, env, errors) {
            targets.push(target);
        }
    }
    let listen = listeners.iter().map(|(l, _)| l.address).collect();
    let peering = raw.database_cancel.as_ref().map(|c| peering(c, errors)).unwrap_or_default();
    Compiled { databases: Databases::new(listeners, targets).with_peering(peering), listen }
}

/// `[database_cancel]`: a peer id from 1 to 255, and the other peers' addresses.
fn peering(raw: &file::DatabaseCancel, errors: &mut Vec<ConfigError>) -> Peering {
    let id = u8::try_from(*raw.peer_id.get_ref()).ok().filter(|id| *id != 0);
    if id.is_none() {
        errors.push(ConfigError::at(
            raw.peer_id.span(),
            "database_cancel.peer_id",
            format!("{} is out of range", raw.peer_id.get_ref()),
            "give each gateway process its own peer id from 1 to 255",
        ));
    }
    let mut peers = std::collections::HashMap::new();
    for (key, address) in &raw.peers {
        let field = format!("database_cancel.peers.{}", key.get_ref());
        match key.get_ref().parse::<u8>().ok().filter(|p| *p != 0) {
            None => errors.push(ConfigError::at(
                key.span(),
                field.clone(),
                format!("`{}` is not a peer id", key.get_ref()),
                "key each peer by its peer_id, from 1 to 255, e.g. peers = { 2 = \"10.0.0.2:6432\" }",
            )),
            Some(peer) if Some(peer) == id => errors.push(ConfigError::at(
                key.span(),
                field.clone(),
                format!("peer {peer} is this process's own peer_id"),
                "list only the other gateway processes",
            )),
            Some(peer) => match address.get_ref().parse::<SocketAddr>() {
                Ok(address) => {
                    peers.insert(peer, address);
                }
                Err(_) => errors.push(ConfigError::at(
                    address.span(),
                    field,
                    format!("`{}` is not an ip:port address", address.get_ref()),
                    "write the peer's database listener address, e.g. \"10.0.0.2:6432\"",
                )),
            },
        }
    }
    Peering { id, peers }
}

/// The listener's environment: `environment`, or the `server_names` map (exactly one);
/// every environment it names must exist and render a `db_pool`.
fn listener_environment(
    raw: &file::File,
    l: &file::DatabaseListener,
    key: &str,
    find_env: &dyn Fn(&str) -> Option<EnvId>,
    errors: &mut Vec<ConfigError>,
) -> Option<ListenerEnvironment> {
    let lookup = |name: &Spanned<String>, field: &str, errors: &mut Vec<ConfigError>| {
        let found = find_env(name.get_ref());
        match found {
            Some(_) => check_db_pool(raw, name, &format!("{key}.{field}"), errors),
            None => errors.push(unknown_env(name, &format!("{key}.{field}"), &raw.environments)),
        }
        found
    };
    match (&l.environment, &l.server_names) {
        (Some(name), None) => Some(ListenerEnvironment::Fixed(lookup(name, "environment", errors)?)),
        (None, Some(names)) => {
            if names.is_empty() {
                errors.push(ConfigError::at(
                    l.address.span(),
                    format!("{key}.server_names"),
                    "the map names no server name",
                    "map at least one name, e.g. { \"db.prod.example.com\" = \"prod\" }, or set environment",
                ));
            }
            if l.allow_plaintext {
                errors.push(ConfigError::at(
                    l.address.span(),
                    format!("{key}.allow_plaintext"),
                    "a plain-text client sends no server name, so it could never be given an environment",
                    "remove allow_plaintext, or set environment instead of server_names",
                ));
            }
            let mut map = HashMap::with_capacity(names.len());
            for (name, env_name) in names {
                let field = format!("server_names.\"{}\"", name.get_ref());
                let text = name.get_ref();
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
                    errors.push(ConfigError::at(
                        name.span(),
                        format!("{key}.{field}"),
                        format!("`{text}` is not a DNS name"),
                        "write the name clients connect to (host=...), e.g. \"db.prod.example.com\"",
                    ));
                }
                let env = lookup(env_name, &field, errors);
                if let Some(env) = env {
                    if map.insert(text.to_ascii_lowercase().into_boxed_str(), env).is_some() {
                        errors.push(ConfigError::at(
                            name.span(),
                            format!("{key}.{field}"),
                            format!("`{text}` is listed twice (names are compared without case)"),
                            "list each server name once",
                        ));
                    }
                }
            }
            Some(ListenerEnvironment::ByServerName(std::sync::Arc::new(map)))
        }
        (Some(_), Some(_)) | (None, None) => {
            errors.push(ConfigError::at(
                l.address.span(),
                key,
                "a database listener needs exactly one of environment and server_names",
                "set environment = \"prod\" to bind every session, or server_names = { \"db.prod.example.com\" = \"prod\" } to choose it by the TLS server name",
            ));
            None
        }
    }
}

/// The JSON an OAUTHBEARER client gets when its token fails (RFC 7628 section 3.2.2),
/// for each environment the listener serves: the status, the discovery document of the
/// first issuer the environment trusts that has a `discovery_url` (every issuer when it
/// names none), and `oauth_scope` if set.
fn oauth_challenges(
    raw: &file::File,
    l: &file::DatabaseListener,
    key: &str,
    find_env: &dyn Fn(&str) -> Option<EnvId>,
    errors: &mut Vec<ConfigError>,
) -> crate::database::target::OauthChallenges {
    let scope = l.oauth_scope.as_ref();
    if let Some(scope) = scope {
        if l.client_auth != file::ClientAuth::Oauthbearer {
            errors.push(ConfigError::at(
                scope.span(),
                format!("{key}.oauth_scope"),
                "oauth_scope is only sent to OAUTHBEARER clients, and this listener asks for a password",
                "set client_auth = \"oauthbearer\", or remove oauth_scope",
            ));
        } else if !valid_scope(scope.get_ref()) {
            errors.push(ConfigError::at(
                scope.span(),
                format!("{key}.oauth_scope"),
                format!("`{}` is not an OAuth scope", scope.get_ref()),
                "write space-separated scope tokens of printable ASCII without `\"` or `\\`, e.g. \"openid\"",
            ));
        }
    }
    let names = l.environment.iter().chain(l.server_names.iter().flat_map(|m| m.values()));
    let mut challenges: Vec<(EnvId, Box<str>)> = Vec::new();
    for name in names {
        let Some(env) = find_env(name.get_ref()).filter(|e| challenges.iter().all(|(c, _)| c != e)) else { continue };
        challenges.push((env, oauth_challenge(raw, name.get_ref(), scope)));
    }
    challenges.into()
}

/// The OAUTHBEARER error response for sessions in environment `env_name`.
fn oauth_challenge(raw: &file::File, env_name: &str, scope: Option<&Spanned<String>>) -> Box<str> {
    let trusted = raw.environments.get(env_name).map(|e| &e.issuers);
    let discovery = raw
        .issuers
        .iter()
        .filter(|i| trusted.is_none_or(|t| t.is_empty() || t.iter().any(|n| n.get_ref() == i.name.get_ref())))
        .find_map(|i| i.discovery_url.as_ref());
    // In PostgreSQL's order: the status first.
    let mut body = String::from(r#"{"status":"invalid_token""#);
    let fields = [("openid-configuration", discovery), ("scope", scope)];
    for (name, value) in fields.iter().filter_map(|(n, v)| Some((n, v.as_ref()?.get_ref().as_str()))) {
        body.push_str(&format!(",\"{name}\":{}", serde_json::Value::from(value)));
    }
    body.push('}');
    body.into()
}

/// RFC 6749 section 3.3: `scope-token *( SP scope-token )`, each token made of
/// `%x21 / %x23-5B / %x5D-7E`.
fn valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope.split(' ').all(|t| !t.is_empty() && t.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)))
}

/// An environment served by a database listener must render `db_pool`, from its own
/// setting or its pools' (default and inline tenants); a literal one must name a
/// database target. Pools of the tenant map file are checked when a session uses them.
fn check_db_pool(raw: &file::File, env_name: &Spanned<String>, field: &str, errors: &mut Vec<ConfigError>) {
    let Some(environment) = raw.environments.get(env_name.get_ref().as_str()) else { return };
    let pool_names =
        environment.default_pool.iter().map(|p| p.get_ref()).chain(environment.tenants.values().map(|p| p.get_ref()));
    let pools = pool_names.filter_map(|name| raw.pools.get(name.as_str())?.db_pool.as_ref());
    let mut any = false;
    for db_pool in environment.db_pool.iter().chain(pools) {
        any = true;
        let text = db_pool.get_ref();
        if !text.contains('{') && !raw.databases.contains_key(text.as_str()) {
            errors.push(ConfigError::at(
                db_pool.span(),
                "db_pool",
                format!("`{text}` names no [databases.{text}], and a database listener serves its environment"),
                format!("add [databases.{text}] or point db_pool at a defined database"),
            ));
        }
    }
    if !any {
        errors.push(ConfigError::at(
            env_name.span(),
            field,
            format!("environment `{}` sets no db_pool, so its sessions have no database", env_name.get_ref()),
            format!("set environments.{}.db_pool to a [databases.NAME]", env_name.get_ref()),
        ));
    }
}

fn target(
    name: &Spanned<String>,
    raw: &file::Database,
    source: &Source,
    env: EnvLookup<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<Target> {
    let key = format!("databases.{}", name.get_ref());
    let before = errors.len();
    let mut problem = |span: std::ops::Range<usize>, field: &str, what: String, fix: &str| {
        errors.push(ConfigError::at(span, format!("{key}.{field}"), what, fix));
    };
    if raw.host.get_ref().is_empty() {
        problem(raw.host.span(), "host", "the host is empty".into(), "write the server's host name or address");
    }
    if raw.database.get_ref().is_empty() || raw.database.get_ref().contains('\0') {
        problem(raw.database.span(), "database", "the database name is empty".into(), "name the database to open");
    }
    let user = match Template::parse(raw.user.get_ref()) {
        Ok(t) => Some(t),
        Err(e) => {
            problem(raw.user.span(), "user", e, "write a role name template such as \"tenant_{tenant}\"");
            None
        }
    };
    if !raw.user.get_ref().contains('{') && !valid_schema(raw.user.get_ref()) {
        problem(
            raw.user.span(),
            "user",
            format!("`{}` is not a plain role name", raw.user.get_ref()),
            "use lowercase letters, digits and `_`, starting with a letter or `_`",
        );
    }
    if !(1..=10_000).contains(&raw.max_server_connections) {
        problem(
            0..0,
            "max_server_connections",
            format!("{} is out of range", raw.max_server_connections),
            "use 1 to 10000 (default 20)",
        );
    }
    if raw.queue_timeout_ms == 0 {
        problem(
            0..0,
            "queue_timeout_ms",
            "0 would refuse every session that waits".into(),
            "use a value above 0 (default 5000)",
        );
    }
    if raw.connect_timeout_ms == 0 {
        problem(
            0..0,
            "connect_timeout_ms",
            "0 would fail every connection".into(),
            "use a value above 0 (default 5000)",
        );
    }
    if !(1..=MAX_SERVER_IDLE_TIMEOUT_SECONDS).contains(&raw.server_idle_timeout_seconds) {
        problem(
            0..0,
            "server_idle_timeout_seconds",
            format!("{} seconds is out of range", raw.server_idle_timeout_seconds),
            &format!("use 1 to {MAX_SERVER_IDLE_TIMEOUT_SECONDS} (default 600)"),
        );
    }
    if !(1..=MAX_SERVER_LIFETIME_SECONDS).contains(&raw.server_lifetime_seconds) {
        problem(
            0..0,
            "server_lifetime_seconds",
            format!("{} seconds is out of range", raw.server_lifetime_seconds),
            &format!("use 1 to {MAX_SERVER_LIFETIME_SECONDS} (default 3600)"),
        );
    }
    let secret = secret(raw, &key, source, env, errors);
    let tls = server_tls(raw, &key, source, errors);
    if errors.len() > before {
        return None;
    }
    let limits = (
        raw.max_server_connections,
        Duration::from_millis(raw.queue_timeout_ms),
        Duration::from_millis(raw.connect_timeout_ms),
    );
    Some(
        Target::new(
            name.get_ref(),
            raw.host.get_ref(),
            raw.port,
            raw.database.get_ref(),
            user?,
            secret?,
            raw.password,
            limits,
        )
        .with_statement_audit(raw.audit_statements)
        .with_tls(tls)
        .with_server_lifetimes(
            Duration::from_secs(raw.server_idle_timeout_seconds),
            Duration::from_secs(raw.server_lifetime_seconds),
        ),
    )
}

/// The secret from `password_env` or `password_file` (exactly one).
fn secret(
    raw: &file::Database,
    key: &str,
    source: &Source,
    env: EnvLookup<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<u8>> {
    let (span, field, value) = match (&raw.password_env, &raw.password_file) {
        (Some(var), None) => {
            let value = env(var.get_ref()).map(String::into_bytes);
            if value.is_none() {
                errors.push(ConfigError::at(
                    var.span(),
                    format!("{key}.password_env"),
                    format!("environment variable `{}` is not set", var.get_ref()),
                    "export it before starting isogate (e.g. from a systemd EnvironmentFile or a Kubernetes Secret)",
                ));
            }
            (var.span(), "password_env", value)
        }
        (None, Some(file)) => {
            let path = source.resolve(file.get_ref());
            let value = match std::fs::read(&path) {
                Ok(mut b) => {
                    while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                        b.pop();
                    }
                    Some(b)
                }
                Err(e) => {
                    errors.push(ConfigError::at(
                        file.span(),
                        format!("{key}.password_file"),
                        format!("cannot read {}: {e}", path.display()),
                        "point it at a file holding the secret",
                    ));
                    None
                }
            };
            (file.span(), "password_file", value)
        }
        _ => {
            errors.push(ConfigError::at(
                raw.host.span(),
                key,
                "a database needs exactly one of password_env and password_file",
                "keep the one that holds the secret",
            ));
            return None;
        }
    };
    let value = value?;
    let short = match raw.password {
        file::PasswordMode::Derived => value.len() < MIN_MASTER_SECRET_BYTES,
        file::PasswordMode::Literal => value.is_empty(),
    };
    if short || value.contains(&0) {
        errors.push(ConfigError::at(
            span,
            format!("{key}.{field}"),
            format!("the secret is {} bytes, too short for password = \"{:?}\"", value.len(), raw.password)
                .to_lowercase(),
            "derived passwords need a master secret of at least 32 bytes: `head -c 48 /dev/urandom | base64`",
        ));
        return None;
    }
    Some(value)
}

/// TLS to the server: the CA file (required, so verification is never skipped), the
/// name to verify (default: `host`), and the client certificate isogate presents, if any.
fn server_tls(
    raw: &file::Database,
    key: &str,
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> Option<crate::database::server_stream::ServerTls> {
    if !raw.tls {
        let tls_only = [
            ("ca_file", &raw.ca_file),
            ("server_name", &raw.server_name),
            ("client_cert_file", &raw.client_cert_file),
            ("client_key_file", &raw.client_key_file),
        ];
        for (field, value) in tls_only {
            if let Some(value) = value {
                errors.push(ConfigError::at(
                    value.span(),
                    format!("{key}.{field}"),
                    format!("{field} is set but tls is not enabled"),
                    format!("set tls = true, or remove {field}"),
                ));
            }
        }
        return None;
    }
    let client = crate::tls::PemPair::fields(key, "client_cert_file", "client_key_file").load_optional(
        raw.client_cert_file.as_ref(),
        raw.client_key_file.as_ref(),
        source,
        errors,
    );
    if client.is_none() && (raw.client_cert_file.is_some() || raw.client_key_file.is_some()) {
        return None;
    }
    let Some(ca) = &raw.ca_file else {
        errors.push(ConfigError::at(
            raw.host.span(),
            format!("{key}.ca_file"),
            "TLS to the server needs the CA that signed its certificate",
            "set ca_file = \"tls/db-ca.pem\"",
        ));
        return None;
    };
    let path = source.resolve(ca.get_ref());
    let mut roots = rustls::RootCertStore::empty();
    let mut trust = sha2::Sha256::new();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| e.to_string())
        .and_then(|certs| {
            for c in certs {
                trust.update(&c);
                roots.add(c).map_err(|e| e.to_string())?;
            }
            if roots.is_empty() {
                Err("no certificate in the file".to_owned())
            } else {
                Ok(())
            }
        });
    if let Err(e) = certs {
        errors.push(ConfigError::at(
            ca.span(),
            format!("{key}.ca_file"),
            format!("cannot use {}: {e}", path.display()),
            "point it at PEM CA certificate(s)",
        ));
        return None;
    }
    let name_text = raw.server_name.as_ref().unwrap_or(&raw.host);
    let Ok(name) = rustls::pki_types::ServerName::try_from(name_text.get_ref().clone()) else {
        errors.push(ConfigError::at(
            name_text.span(),
            format!("{key}.server_name"),
            format!("`{}` is not a server name", name_text.get_ref()),
            "write the DNS name or address in the server's certificate",
        ));
        return None;
    };
    // The client certificate is part of what a connection was made with, as the CA is.
    trust.update(b"client certificate");
    for cert in client.iter().flat_map(|c| c.cert.iter()) {
        trust.update(cert);
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().map(|b| {
        let b = b.with_root_certificates(roots);
        match client {
            Some(certified) => b.with_client_cert_resolver(std::sync::Arc::new(SingleCertAndKey::from(certified))),
            None => b.with_no_client_auth(),
        }
    });
    match config {
        Ok(config) => Some(crate::database::server_stream::ServerTls {
            config: std::sync::Arc::new(config),
            name,
            trust: trust.finalize().into(),
        }),
        Err(e) => {
            errors.push(ConfigError::at(ca.span(), format!("{key}.tls"), e.to_string(), "report this as a bug"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error response of the first listener's first environment, and the errors.
    fn challenge_of(text: &str) -> (String, Vec<ConfigError>) {
        let raw: file::File = toml::from_str(text).unwrap();
        let mut errors = Vec::new();
        let find_env = |name: &str| (name == "prod").then_some(EnvId(0));
        let listener = &raw.database_listeners[0];
        let json = oauth_challenges(&raw, listener, "database_listeners[0]", &find_env, &mut errors);
        (json[0].1.clone().into(), errors)
    }

    const ISSUERS: &str = r#"
[[issuers]]
name = "partner"
issuer = "https://partner.test"
algorithms = ["HS256"]
[[issuers]]
name = "sso"
issuer = "https://sso.test"
algorithms = ["RS256"]
discovery_url = "https://sso.test/.well-known/openid-configuration"
"#;

    #[test]
    fn the_oauth_challenge_names_what_the_environment_trusts() {
        let listener = "[[database_listeners]]\naddress = \"127.0.0.1:6432\"\nenvironment = \"prod\"\n";
        let oauth = format!("{listener}client_auth = \"oauthbearer\"\noauth_scope = \"openid db\"\n");
        // Every issuer trusted: the one with a discovery document is named.
        let (json, errors) = challenge_of(&format!("{ISSUERS}[environments.prod]\n{oauth}"));
        assert!(errors.is_empty());
        assert_eq!(
            json,
            r#"{"status":"invalid_token","openid-configuration":"https://sso.test/.well-known/openid-configuration","scope":"openid db"}"#
        );
        // An environment that trusts only an issuer without one gets the status alone.
        let only_partner = format!("{ISSUERS}[environments.prod]\nissuers = [\"partner\"]\n{listener}");
        assert_eq!(challenge_of(&only_partner).0, crate::database::target::OAUTH_STATUS_ONLY);
    }

    #[test]
    fn a_listener_choosing_the_environment_by_server_name_has_a_response_per_environment() {
        let text = format!(
            "{ISSUERS}[environments.prod]\n[environments.stage]\nissuers = [\"partner\"]\n\
             [[database_listeners]]\naddress = \"127.0.0.1:6432\"\nclient_auth = \"oauthbearer\"\n\
             server_names = {{ \"db.prod.test\" = \"prod\", \"db.stage.test\" = \"stage\", \"db.test\" = \"prod\" }}\n"
        );
        let raw: file::File = toml::from_str(&text).unwrap();
        let find_env = |name: &str| ["prod", "stage"].iter().position(|e| *e == name).map(|i| EnvId(i as u16));
        let mut errors = Vec::new();
        let challenges = oauth_challenges(&raw, &raw.database_listeners[0], "l", &find_env, &mut errors);
        assert!(errors.is_empty());
        let address: SocketAddr = "127.0.0.1:6432".parse().unwrap();
        let listener = Listener {
            address,
            environment: crate::database::target::ListenerEnvironment::Fixed(EnvId(0)),
            allow_plaintext: false,
            max_sessions: 1,
            client_auth: file::ClientAuth::Oauthbearer,
            tls: None,
        };
        let databases = Databases::new(vec![(listener, challenges)], Vec::new());
        assert!(databases.oauth_challenge(address, EnvId(0)).contains("https://sso.test/.well-known/"));
        assert_eq!(databases.oauth_challenge(address, EnvId(1)), crate::database::target::OAUTH_STATUS_ONLY);
    }

    #[test]
    fn oauth_scope_must_be_a_scope_on_an_oauthbearer_listener() {
        let listener = "[[database_listeners]]\naddress = \"127.0.0.1:6432\"\nenvironment = \"prod\"\n";
        let (_, errors) = challenge_of(&format!("{listener}oauth_scope = \"openid\"\n"));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key, "database_listeners[0].oauth_scope");
        for bad in ["", "a  b", "a\\\"b", "caf\u{e9}"] {
            let text = format!("{listener}client_auth = \"oauthbearer\"\noauth_scope = \"{bad}\"\n");
            assert_eq!(challenge_of(&text).1.len(), 1, "{bad:?}");
        }
    }

    /// The trust digest of a TLS target over the test CA, with or without a client
    /// certificate.
    fn trust(client: &str) -> [u8; 32] {
        let source = Source::embedded(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/isogate.toml"), "");
        let text = format!("host = \"db.test\"\ndatabase = \"app\"\nuser = \"t_{{tenant}}\"\npassword_env = \"X\"\ntls = true\nca_file = \"ca.pem\"\n{client}");
        let raw: file::Database = toml::from_str(&text).unwrap();
        let mut errors = Vec::new();
        let tls = server_tls(&raw, "databases.db", &source, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        tls.unwrap().trust
    }

    #[test]
    fn a_changed_client_certificate_changes_what_connections_are_made_with() {
        let none = trust("");
        let client = trust("client_cert_file = \"client.pem\"\nclient_key_file = \"client.key\"\n");
        assert_ne!(none, client);
        assert_eq!(none, trust(""));
    }
}
