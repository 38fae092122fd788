//! Compiling `[[database_listeners]]` and `[databases.NAME]`.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use toml::Spanned;

use super::compile::unknown_env;
use crate::bind::EnvId;
use crate::config::{file, ConfigError, EnvLookup, Source};
use crate::database::{Databases, Listener, Target};
use crate::template::{valid_schema, Template};

/// Most client sessions one database listener may hold.
const MAX_SESSIONS: usize = 100_000;

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
        if !l.allow_plaintext && raw.certificates.is_empty() {
            errors.push(ConfigError::at(
                l.address.span(),
                key.clone(),
                "a database listener needs TLS, but no certificate is configured",
                "add a [[certificates]] entry",
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
        let Some(env_id) = find_env(l.environment.get_ref()) else {
            errors.push(unknown_env(&l.environment, &format!("{key}.environment"), &raw.environments));
            continue;
        };
        check_db_pool(raw, &l.environment, &key, errors);
        let challenge = oauth_challenge(raw, l, &key, errors);
        let listener = Listener {
            address,
            env: env_id,
            allow_plaintext: l.allow_plaintext,
            max_sessions: l.max_sessions,
            client_auth: l.client_auth,
        };
        listeners.push((listener, challenge));
    }
    let mut targets = Vec::new();
    for (name, d) in &raw.databases {
        if let Some(target) = target(name, d, source, env, errors) {
            targets.push(target);
        }
    }
    let listen = listeners.iter().map(|(l, _)| l.address).collect();
    Compiled { databases: Databases::new(listeners, targets), listen }
}

/// The JSON an OAUTHBEARER client gets when its token fails (RFC 7628 section 3.2.2):
/// the status, the discovery document of the first issuer the environment trusts that
/// has a `discovery_url` (every issuer when it names none), and `oauth_scope` if set.
fn oauth_challenge(raw: &file::File, l: &file::DatabaseListener, key: &str, errors: &mut Vec<ConfigError>) -> Box<str> {
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
    let trusted = raw.environments.get(l.environment.get_ref().as_str()).map(|e| &e.issuers);
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
fn check_db_pool(raw: &file::File, env_name: &Spanned<String>, key: &str, errors: &mut Vec<ConfigError>) {
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
            format!("{key}.environment"),
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
        .with_tls(tls),
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

/// TLS to the server: the CA file (required, so verification is never skipped) and the
/// name to verify (default: `host`).
fn server_tls(
    raw: &file::Database,
    key: &str,
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> Option<crate::database::server_stream::ServerTls> {
    if !raw.tls {
        if raw.ca_file.is_some() || raw.server_name.is_some() {
            errors.push(ConfigError::at(
                raw.host.span(),
                key,
                "ca_file or server_name is set but tls is not enabled",
                "set tls = true, or remove ca_file and server_name",
            ));
        }
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
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| e.to_string())
        .and_then(|certs| {
            for c in certs {
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
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    match config {
        Ok(config) => Some(crate::database::server_stream::ServerTls { config: std::sync::Arc::new(config), name }),
        Err(e) => {
            errors.push(ConfigError::at(ca.span(), format!("{key}.tls"), e.to_string(), "report this as a bug"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge_of(text: &str) -> (String, Vec<ConfigError>) {
        let raw: file::File = toml::from_str(text).unwrap();
        let mut errors = Vec::new();
        let json = oauth_challenge(&raw, &raw.database_listeners[0], "database_listeners[0]", &mut errors);
        (json.into(), errors)
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
}
