//! The database front's TLS on both sides, and how it signs in to the server, against a
//! real PostgreSQL server (one per test file) with psql and tokio-postgres as clients:
//! a listener that takes each session's environment from the TLS server name, a
//! listener with its own certificate, a client certificate the server requires
//! (`clientcert=verify-ca`), and sign-in by MD5 and by cleartext password (only over TLS).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;

use common::jws::{claims, token};
use common::postgres::{column, connect_tls, db_audit, derived_password, runtime, sqlstate};
use common::postgres::{Postgres, RustlsConnect};
use common::*;
use tokio_postgres::config::SslNegotiation;
use tokio_postgres::error::SqlState;

const MASTER_SECRET: &str = "another-master-secret-of-at-least-32-bytes";

/// Roles that sign in only one way each, by the lines put in front of pg_hba.conf.
const ACCESS: &str = "\
hostssl app mtls_user 127.0.0.1/32 scram-sha-256 clientcert=verify-ca
host app md5_user 127.0.0.1/32 md5
host app cleartext_user 127.0.0.1/32 password";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The shared server: `tenant_acme` in databases `app` and `stage`, and one role per
/// sign-in method, each with the password the gateway derives for it.
fn postgres() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| {
        let pg = Postgres::start("SELECT 1");
        pg.sql("postgres", "CREATE DATABASE stage");
        for role in ["tenant_acme", "mtls_user", "cleartext_user"] {
            pg.sql("app", &format!("CREATE ROLE {role} LOGIN PASSWORD '{}'", derived_password(MASTER_SECRET, role)));
        }
        // MD5 needs the password stored as an MD5 hash (a SCRAM verifier would make the
        // server ask for SCRAM instead).
        pg.sql(
            "app",
            &format!(
                "SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD '{}'",
                derived_password(MASTER_SECRET, "md5_user")
            ),
        );
        pg.configure_access(ACCESS);
        std::fs::write(pg.dir.join("master.secret"), MASTER_SECRET).unwrap();
        pg
    })
}

/// A target `NAME` on the shared server signing in as `user` to `database`, with more keys.
fn target(name: &str, database: &str, user: &str, extra: &str) -> String {
    let pg = postgres();
    format!(
        "[databases.{name}]\nhost = \"127.0.0.1\"\nport = {port}\ndatabase = \"{database}\"\nuser = \"{user}\"\n\
         password_file = \"{secret}\"\n{extra}\n",
        port = pg.port,
        secret = pg.dir.join("master.secret").display(),
    )
}

/// TLS to the shared server, verified against the test CA as `a.test`.
fn server_tls() -> String {
    format!("tls = true\nca_file = \"{}\"\nserver_name = \"a.test\"", fixture("ca.pem"))
}

/// A gateway with `certificates` and `listeners`: prod sessions open the target named
/// `db_<tenant>`, stage sessions open `stage_db` (database `stage`).
fn gateway(certificates: &[&str], listeners: &str, listen: &[(&str, SocketAddr)]) -> Gateway {
    let certificates: String = certificates
        .iter()
        .map(|name| {
            format!(
                "[[certificates]]\ncert_file = \"{}\"\nkey_file = \"{}\"\nserver_names = [\"{name}.test\"]\n",
                fixture(&format!("{name}.pem")),
                fixture(&format!("{name}.key"))
            )
        })
        .collect();
    let targets = [
        target("db_acme", "app", "tenant_{tenant}", ""),
        target("stage_db", "stage", "tenant_{tenant}", ""),
        target(
            "db_mtls",
            "app",
            "mtls_user",
            &format!(
                "{}\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"",
                server_tls(),
                fixture("client.pem"),
                fixture("client.key")
            ),
        ),
        target("db_nocert", "app", "mtls_user", &server_tls()),
        target("db_md5", "app", "md5_user", ""),
        target("db_cleartext", "app", "cleartext_user", &server_tls()),
        target("db_plaincleartext", "app", "cleartext_user", ""),
    ]
    .concat();
    let text = format!(
        r#"{PREAMBLE}
{certificates}
{HMAC_ISSUER}
[environments.prod]
default_pool = "app"
db_pool = "db_{{tenant}}"
[environments.stage]
default_pool = "app"
db_pool = "stage_db"
[pools.app]
servers = ["{dead}"]
[[routes]]
name = "api"
path_prefix = "/api"
environment = "prod"
{listeners}
{targets}
"#,
        dead = dead_addr(),
    );
    Gateway::start(&text, listen)
}

/// One listener choosing the environment by server name: `a.test` is stage, `b.test` prod.
fn by_server_name() -> (Gateway, SocketAddr) {
    let addr = free_addr();
    let listener = "[[database_listeners]]\naddress = \"@PGNAMES@\"\n\
                    server_names = { \"a.test\" = \"stage\", \"B.test\" = \"prod\" }";
    (gateway(&["a", "b"], listener, &[("@PGNAMES@", addr)]), addr)
}

/// One prod listener served by the shared certificate (`a.test`).
fn prod_listener() -> (Gateway, SocketAddr) {
    let addr = free_addr();
    let listener = "[[database_listeners]]\naddress = \"@PGPROD@\"\nenvironment = \"prod\"";
    (gateway(&["a"], listener, &[("@PGPROD@", addr)]), addr)
}

fn tenant_token(env: &str, tenant: &str) -> String {
    token("HS256", claims(env, tenant))
}

#[test]
fn the_tls_server_name_chooses_the_environment() {
    let (gw, addr) = by_server_name();
    let stage = RustlsConnect::with_server_name("a.test");
    let prod = RustlsConnect::with_server_name("b.test");
    runtime().block_on(async {
        let client = connect_tls(addr, &tenant_token("stage", "acme"), stage.clone(), |_| {}).await.unwrap();
        assert_eq!(
            column(&client, "SELECT current_database() || '|' || current_user").await.unwrap(),
            ["stage|tenant_acme"]
        );
        // The map's names are compared without case; direct TLS names it the same way.
        let client = connect_tls(addr, &tenant_token("prod", "acme"), prod, |c| {
            c.ssl_negotiation(SslNegotiation::Direct);
        })
        .await
        .unwrap();
        assert_eq!(column(&client, "SELECT current_database()").await.unwrap(), ["app"]);
        // A prod token under the stage name is a token for the wrong environment.
        let e = connect_tls(addr, &tenant_token("prod", "acme"), stage, |_| {}).await.unwrap_err();
        assert_eq!(sqlstate(&e), "28000", "{e}");
        let hint = e.as_db_error().and_then(|d| d.hint()).unwrap_or_default().to_owned();
        assert!(hint.contains("stage"), "the hint names the server name's environment: {hint}");
    });
    // psql, verifying the certificate for the name it connects to.
    let out = postgres()
        .psql_client(
            addr,
            &tenant_token("stage", "acme"),
            &format!("host=a.test hostaddr=127.0.0.1 sslmode=verify-full sslrootcert={}", fixture("ca.pem")),
            "SELECT current_database()",
        )
        .unwrap();
    assert_eq!(out, "stage");
    let seen: Vec<String> = db_audit(&gw, "db_session_start", 4)
        .iter()
        .map(|l| format!("{} {}", l["environment"].as_str().unwrap(), l["reason"].as_str().unwrap()))
        .collect();
    // The refused session is in the environment its server name chose.
    assert_eq!(seen, ["stage ok", "prod ok", "stage wrong_environment", "stage ok"]);
}

#[test]
fn without_a_server_name_it_serves_a_client_is_refused_before_its_token() {
    let (gw, addr) = by_server_name();
    let pg = postgres();
    let stage = tenant_token("stage", "acme");
    // psql to an address sends no server name; to an unknown name, an unknown one.
    for extra in ["", "host=c.test hostaddr=127.0.0.1"] {
        let e = pg.psql_client(addr, &stage, extra, "SELECT 1").unwrap_err();
        assert!(e.contains("TLS server name") && e.contains("sslsni=1") && e.contains("host="), "{extra}: {e}");
    }
    // Plain text names nothing either.
    let e = pg.psql_client(addr, &stage, "host=a.test hostaddr=127.0.0.1 sslmode=disable", "SELECT 1").unwrap_err();
    assert!(e.contains("TLS connections only"), "{e}");
    let refused = db_audit(&gw, "db_session_start", 3);
    for line in &refused[..2] {
        assert_eq!(line["reason"], "unknown_server_name", "{line}");
        assert_eq!(line["sqlstate"], "28000", "{line}");
        assert_eq!(line["tls"], true, "{line}");
        assert!(line["environment"].is_null() && line["tenant"].is_null(), "no token was read: {line}");
    }
    assert_eq!(refused[2]["reason"], "tls_required");
    assert!(refused.iter().all(|l| l["decision"] == "deny" && l["server"].is_null()), "{refused:?}");
    assert_eq!(gw.metric("isogate_db_sessions_total{decision=\"deny\",reason=\"unknown_server_name\"}"), Some(2.0));
}

#[test]
fn a_listener_serves_its_own_certificate() {
    // The shared certificate is for a.test only; the listener's own is for b.test.
    let (own, shared) = (free_addr(), free_addr());
    let listeners = format!(
        "[[database_listeners]]\naddress = \"@PGOWN@\"\nenvironment = \"prod\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         [[database_listeners]]\naddress = \"@PGSHARED@\"\nenvironment = \"prod\"",
        fixture("b.pem"),
        fixture("b.key")
    );
    let _gw = gateway(&["a"], &listeners, &[("@PGOWN@", own), ("@PGSHARED@", shared)]);
    let acme = tenant_token("prod", "acme");
    runtime().block_on(async {
        let client = connect_tls(own, &acme, RustlsConnect::with_server_name("b.test"), |_| {}).await.unwrap();
        assert_eq!(column(&client, "SELECT current_user").await.unwrap(), ["tenant_acme"]);
        // Whatever name the client sends, the listener's own certificate comes back.
        let e = connect_tls(own, &acme, RustlsConnect::with_server_name("a.test"), |_| {}).await.unwrap_err();
        assert!(format!("{e:?}").contains("NotValidForName"), "the certificate is not for a.test: {e:?}");
        // The other listener still serves the shared certificate.
        let client = connect_tls(shared, &acme, RustlsConnect::with_server_name("a.test"), |_| {}).await.unwrap();
        assert_eq!(column(&client, "SELECT current_user").await.unwrap(), ["tenant_acme"]);
    });
}

#[test]
fn the_gateway_presents_its_client_certificate_where_the_server_requires_one() {
    let (gw, addr) = prod_listener();
    runtime().block_on(async {
        let client = connect_tls(addr, &tenant_token("prod", "mtls"), RustlsConnect::new(), |_| {}).await.unwrap();
        let seen = "SELECT current_user || '|' || client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        assert_eq!(column(&client, seen).await.unwrap(), ["mtls_user|/CN=gateway-client"]);
        // The same role through a target without the certificate: the server refuses it.
        let e = connect_tls(addr, &tenant_token("prod", "nocert"), RustlsConnect::new(), |_| {}).await.unwrap_err();
        assert_eq!(sqlstate(&e), SqlState::CONNECTION_FAILURE.code(), "{e}");
    });
    let refused = db_audit(&gw, "db_session_start", 2);
    assert_eq!(refused[1]["database"], "db_nocert");
    assert_eq!(refused[1]["reason"], "upstream_unreachable");
    assert!(gw.stderr().contains("certificate"), "the log says what the server said: {}", gw.stderr());
}

#[test]
fn the_gateway_signs_in_with_md5_and_with_a_cleartext_password_over_tls() {
    let (gw, addr) = prod_listener();
    let pg = postgres();
    let stored = pg.sql("app", "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'md5_user'");
    assert_eq!(stored, "md5", "the role's password is an MD5 hash, so the server asks for MD5");
    runtime().block_on(async {
        let client = connect_tls(addr, &tenant_token("prod", "md5"), RustlsConnect::new(), |_| {}).await.unwrap();
        assert_eq!(column(&client, "SELECT current_user").await.unwrap(), ["md5_user"]);
        let client = connect_tls(addr, &tenant_token("prod", "cleartext"), RustlsConnect::new(), |_| {}).await.unwrap();
        let seen = "SELECT current_user || '|' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        assert_eq!(column(&client, seen).await.unwrap(), ["cleartext_user|true"]);
        // Over plain TCP the gateway does not send the password in clear text.
        let e =
            connect_tls(addr, &tenant_token("prod", "plaincleartext"), RustlsConnect::new(), |_| {}).await.unwrap_err();
        assert_eq!(sqlstate(&e), SqlState::CONNECTION_FAILURE.code(), "{e}");
    });
    let starts = db_audit(&gw, "db_session_start", 3);
    assert_eq!(starts[2]["database"], "db_plaincleartext");
    assert_eq!(starts[2]["decision"], "deny");
    assert!(gw.stderr().contains("clear text"), "the log says why: {}", gw.stderr());
}
