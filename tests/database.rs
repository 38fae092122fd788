//! The database front against a real PostgreSQL server (one per test file), with psql
//! and tokio-postgres as clients: a JWT as the password opens a session bound to its
//! tenant's login role, schema and rows; escape attempts stay inside; refusals carry
//! the right SQLSTATE and reach no server; a reused server connection keeps nothing
//! of the previous session; a cancel reaches only its own query.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use common::idp::Idp;
use common::jws::{claims, now, token};
use common::postgres::{column, connect, connect_with, db_audit, derived_password, runtime, sqlstate};
use common::postgres::{error_fields, Postgres, RawClient, RustlsConnect};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_postgres::config::{SslMode, SslNegotiation};
use tokio_postgres::error::SqlState;
use tokio_postgres::Config;

const MASTER_SECRET: &str = "a-master-secret-of-at-least-32-bytes-for-tests";
const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

/// The password the gateway derives for `role`, computed here on its own.
fn role_password(role: &str) -> String {
    derived_password(MASTER_SECRET, role)
}

/// The shared server, set up with the shipped SQL (deploy/postgres) for every tenant:
/// a schema with a `notes` row each, and a shared table with one row per tenant.
fn postgres() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| {
        let pg = Postgres::start("SELECT 1");
        let deploy = |file: &str, vars: &[(&str, &str)]| pg.deploy(file, vars);
        deploy("00-database.sql", &[]);
        for tenant in TENANTS {
            let password = role_password(&format!("tenant_{tenant}"));
            deploy("10-tenant-role.sql", &[("tenant", tenant), ("password", &password)]);
            deploy("20-tenant-schema.sql", &[("tenant", tenant)]);
            deploy("30-tenant-rows.sql", &[("tenant", tenant)]);
            pg.sql(
                "app",
                &format!(
                    "SET ROLE tenant_{tenant}; CREATE TABLE company_{tenant}.notes (v text); \
                     INSERT INTO company_{tenant}.notes VALUES ('{tenant}-secret'); RESET ROLE;"
                ),
            );
        }
        pg.sql(
            "app",
            "CREATE SCHEMA shared; GRANT USAGE ON SCHEMA shared TO isogate_tenants; \
             CREATE TABLE shared.orders (tenant_id text NOT NULL, item text NOT NULL); \
             ALTER TABLE shared.orders ENABLE ROW LEVEL SECURITY; \
             ALTER TABLE shared.orders FORCE ROW LEVEL SECURITY; \
             CREATE POLICY tenant_rows ON shared.orders USING (tenant_id = isogate.session_tenant()) \
                 WITH CHECK (tenant_id = isogate.session_tenant()); \
             GRANT SELECT, INSERT ON shared.orders TO isogate_tenants; \
             INSERT INTO shared.orders VALUES ('acme', 'acme-order'), ('globex', 'globex-order');",
        );
        std::fs::write(pg.dir.join("master.secret"), MASTER_SECRET).unwrap();
        pg
    })
}

/// A gateway with a prod and a stage database listener in front of the shared server.
struct Front {
    gw: Gateway,
    prod: SocketAddr,
    stage: SocketAddr,
}

fn front(database_extra: &str) -> Front {
    let (prod, stage) = (free_addr(), free_addr());
    let gw = Gateway::start(&config("", database_extra), &[("@PGPROD@", prod), ("@PGSTAGE@", stage)]);
    Front { gw, prod, stage }
}

/// The gateway's configuration, with more keys for `[environments.prod]` and
/// `[databases.pg]`.
fn config(prod_extra: &str, database_extra: &str) -> String {
    let pg = postgres();
    let tls = format!("{}/tests/fixtures/tls", env!("CARGO_MANIFEST_DIR"));
    format!(
        r#"{PREAMBLE}
[[certificates]]
cert_file = "{tls}/a.pem"
key_file = "{tls}/a.key"
server_names = ["a.test"]
{HMAC_ISSUER}
[environments.prod]
default_pool = "app"
db_schema = "company_{{tenant}}"
db_pool = "pg"
reason_required_roles = ["admin"]
{prod_extra}
[environments.stage]
default_pool = "app"
db_schema = "company_{{tenant}}"
db_pool = "pg"
[pools.app]
servers = ["{dead}"]
[[routes]]
name = "api"
path_prefix = "/api"
environment = "prod"
[[database_listeners]]
address = "@PGPROD@"
environment = "prod"
[[database_listeners]]
address = "@PGSTAGE@"
environment = "stage"
[databases.pg]
host = "127.0.0.1"
port = {port}
database = "app"
user = "tenant_{{tenant}}"
password_file = "{secret}"
{database_extra}
"#,
        dead = dead_addr(),
        port = pg.port,
        secret = pg.dir.join("master.secret").display(),
    )
}

fn tenant_token(env: &str, tenant: &str) -> String {
    token("HS256", claims(env, tenant))
}

#[test]
fn psql_with_a_token_lands_in_its_tenant_schema() {
    let f = front("");
    let pg = postgres();
    let out = pg
        .psql_client(f.prod, &tenant_token("prod", "acme"), "", "SELECT current_user, current_schema(), v FROM notes")
        .unwrap();
    assert_eq!(out, "tenant_acme|company_acme|acme-secret");
    let out = pg.psql_client(f.prod, &tenant_token("prod", "globex"), "", "SELECT v FROM notes").unwrap();
    assert_eq!(out, "globex-secret");
    let start = &db_audit(&f.gw, "db_session_start", 2)[0];
    assert_eq!(start["decision"], "allow");
    assert_eq!(start["environment"], "prod");
    assert_eq!(start["login_role"], "tenant_acme");
    assert_eq!(start["db_schema"], "company_acme");
    assert_eq!(start["database"], "pg");
    assert_eq!(start["tls"], true);
    let end = &db_audit(&f.gw, "db_session_end", 2)[0];
    assert_eq!(end["session_id"], start["session_id"]);
    assert_eq!(end["statements"], 1);
    assert!(end["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(f.gw.metric("isogate_db_sessions_total{decision=\"allow\",reason=\"ok\"}"), Some(2.0));
    assert_eq!(f.gw.metric("isogate_db_sessions_ended_total"), Some(2.0));
}

#[test]
fn a_reload_applies_new_access_rules_to_new_sessions() {
    let f = front("");
    let user = tenant_token("prod", "acme");
    runtime().block_on(async {
        let before = connect(f.prod, &user).await.unwrap();
        f.gw.write_config(&config("allowed_roles = [\"admin\"]", ""));
        f.gw.signal("HUP");
        eventually("the reload", || (f.gw.metric("isogate_config_generation") == Some(2.0)).then_some(()));
        let e = connect(f.prod, &user).await.unwrap_err();
        assert_eq!(sqlstate(&e), SqlState::INSUFFICIENT_PRIVILEGE.code(), "{e}");
        // The session admitted before the reload goes on.
        assert_eq!(column(&before, "SELECT v FROM notes").await.unwrap(), ["acme-secret"]);
    });
}

#[test]
fn no_escape_attempt_reaches_another_tenants_schema_or_rows() {
    let f = front("");
    runtime().block_on(async {
        let client = connect(f.prod, &tenant_token("prod", "acme")).await.unwrap();
        let forbidden = [
            "SET ROLE tenant_globex",
            "SET SESSION AUTHORIZATION tenant_globex",
            "SELECT set_config('role', 'tenant_globex', false)",
            "SET ROLE postgres",
            "SELECT v FROM company_globex.notes",
        ];
        for sql in forbidden {
            let e = client.simple_query(sql).await.expect_err(sql);
            assert_eq!(sqlstate(&e), SqlState::INSUFFICIENT_PRIVILEGE.code(), "{sql}: {e}");
        }
        // Each of these is allowed to run; none of them changes whose data is reachable.
        let attempts = [
            "RESET ROLE",
            "RESET ALL",
            "DISCARD ALL",
            "SET search_path = company_globex, public",
            "SELECT set_config('search_path', 'company_globex', false)",
            "SELECT set_config('request.jwt.claims', '{\"tenant\":\"globex\"}', false)",
            "SET app.tenant_id = 'globex'",
            "SET ROLE isogate_tenants",
        ];
        for sql in attempts {
            client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            let e = client.simple_query("SELECT v FROM company_globex.notes").await.expect_err(sql);
            assert_eq!(sqlstate(&e), SqlState::INSUFFICIENT_PRIVILEGE.code(), "after {sql}: {e}");
            let orders = column(&client, "SELECT item FROM shared.orders").await.unwrap();
            assert_eq!(orders, ["acme-order"], "after {sql}");
            assert_eq!(column(&client, "SELECT session_user").await.unwrap(), ["tenant_acme"], "after {sql}");
        }
        let e = client.simple_query("INSERT INTO shared.orders VALUES ('globex', 'planted')").await.unwrap_err();
        assert_eq!(sqlstate(&e), SqlState::INSUFFICIENT_PRIVILEGE.code(), "{e}");
        // search_path pointing at another tenant's schema finds nothing there.
        client.simple_query("SET search_path = company_globex").await.unwrap();
        let e = client.simple_query("SELECT v FROM notes").await.unwrap_err();
        assert_eq!(sqlstate(&e), SqlState::UNDEFINED_TABLE.code(), "{e}");
    });
    let globex = postgres().sql("app", "SELECT count(*) FROM shared.orders WHERE item = 'planted'");
    assert_eq!(globex, "0");
}

#[test]
fn a_stage_token_never_opens_a_prod_session() {
    let f = front("");
    runtime().block_on(async {
        let e = connect(f.prod, &tenant_token("stage", "initech")).await.unwrap_err();
        assert_eq!(sqlstate(&e), "28000", "{e}");
        let hint = e.as_db_error().and_then(|d| d.hint()).unwrap_or_default().to_owned();
        assert!(hint.contains("prod"), "the hint names the listener's environment: {hint}");
        // The stage listener takes it.
        let client = connect(f.stage, &tenant_token("stage", "initech")).await.unwrap();
        assert_eq!(column(&client, "SELECT v FROM notes").await.unwrap(), ["initech-secret"]);
    });
    let refused = db_audit(&f.gw, "db_session_start", 2);
    let refused = refused.iter().find(|l| l["decision"] == "deny").unwrap();
    assert_eq!(refused["reason"], "wrong_environment");
    assert_eq!(refused["sqlstate"], "28000");
    assert_eq!(refused["tenant"], "initech");
    assert!(refused["server"].is_null(), "a refused session reaches no server: {refused}");
}

#[test]
fn bad_tokens_are_refused_with_invalid_password() {
    let f = front("");
    let mut expired = claims("prod", "acme");
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    let good = tenant_token("prod", "acme");
    let (head, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", "A".repeat(43));
    runtime().block_on(async {
        for (what, password) in
            [("expired", token("HS256", expired)), ("forged", forged), ("not a token", "hunter2".into())]
        {
            let e = connect(f.prod, &password).await.expect_err(what);
            assert_eq!(sqlstate(&e), SqlState::INVALID_PASSWORD.code(), "{what}: {e}");
        }
    });
    // psql, the way a user sees it.
    let e = postgres().psql_client(f.prod, "hunter2", "", "SELECT 1").unwrap_err();
    assert!(e.contains("not an accepted token") && e.contains("HINT"), "{e}");
    // Plain text is refused on a listener that does not allow it.
    let e = postgres().psql_client(f.prod, &good, "sslmode=disable", "SELECT 1").unwrap_err();
    assert!(e.contains("TLS connections only"), "{e}");
    let reasons: Vec<Value> = db_audit(&f.gw, "db_session_start", 5).iter().map(|l| l["reason"].clone()).collect();
    assert!(reasons.contains(&json!("token_expired")), "{reasons:?}");
    assert!(reasons.contains(&json!("bad_signature")), "{reasons:?}");
    assert!(reasons.contains(&json!("tls_required")), "{reasons:?}");
}

#[test]
fn a_role_that_must_give_a_reason_gives_it_in_the_startup_options() {
    let f = front("");
    let mut admin = claims("prod", "acme");
    admin["roles"] = json!(["admin"]);
    let admin = token("HS256", admin);
    let pg = postgres();
    let e = pg.psql_client(f.prod, &admin, "", "SELECT 1").unwrap_err();
    assert!(e.contains("access reason"), "{e}");
    let out =
        pg.psql_client(f.prod, &admin, "options='-c isogate.reason=ticket\\\\ 4242'", "SELECT v FROM notes").unwrap();
    assert_eq!(out, "acme-secret");
    let lines = db_audit(&f.gw, "db_session_start", 2);
    assert_eq!(lines[0]["reason"], "reason_required");
    assert_eq!(lines[0]["sqlstate"], "42501");
    assert_eq!(lines[1]["access_reason"], "ticket 4242");
}

#[test]
fn sessions_that_gave_a_reason_have_each_statement_audited() {
    let f = front("audit_statements = true");
    let mut admin = claims("prod", "acme");
    admin["roles"] = json!(["admin"]);
    let admin = token("HS256", admin);
    let long = format!("SELECT '{}' AS padding", "x".repeat(2000));
    runtime().block_on(async {
        let reasoned = connect_with(f.prod, &admin, |c| {
            c.options("-c isogate.reason=INC-7");
        })
        .await
        .unwrap();
        reasoned.simple_query("SELECT v FROM notes").await.unwrap();
        reasoned.query_one("SELECT $1::text", &[&"bound"]).await.unwrap();
        reasoned.simple_query(&long).await.unwrap();
        drop(reasoned);
        // A session without a reason writes no statement lines.
        let plain = connect(f.prod, &tenant_token("prod", "acme")).await.unwrap();
        plain.simple_query("SELECT 'unaudited'").await.unwrap();
        drop(plain);
    });
    db_audit(&f.gw, "db_session_end", 2);
    let lines = db_audit(&f.gw, "db_statement", 3);
    let statements: Vec<&str> = lines.iter().map(|l| l["statement"].as_str().unwrap()).collect();
    assert_eq!(&statements[..2], ["SELECT v FROM notes", "SELECT $1::text"]);
    assert_eq!(lines[0]["access_reason"], "INC-7");
    assert_eq!(lines[0]["tenant"], "acme");
    assert_eq!(lines[0]["truncated"], false);
    assert_eq!(statements[2].len(), 1024);
    assert!(long.starts_with(statements[2]));
    assert_eq!(lines[2]["truncated"], true);
    assert_eq!(lines.len(), 3, "{statements:?}");
}

#[test]
fn a_reused_server_connection_keeps_nothing_of_the_previous_session() {
    let f = front("max_server_connections = 1\nqueue_timeout_ms = 500");
    let acme = tenant_token("prod", "acme");
    runtime().block_on(async {
        let first = connect(f.prod, &acme).await.unwrap();
        first
            .batch_execute(
                "CREATE TEMP TABLE leftover (v int); \
                 PREPARE leftover_stmt AS SELECT 1; \
                 SET work_mem = '7MB'; \
                 SELECT set_config('app.leftover', 'yes', false); \
                 SELECT pg_advisory_lock(4242); \
                 LISTEN leftover_channel; \
                 BEGIN; DECLARE leftover_cursor CURSOR WITH HOLD FOR SELECT 1; COMMIT; \
                 SET ROLE isogate_tenants; \
                 BEGIN; INSERT INTO shared.orders VALUES ('acme', 'uncommitted');",
            )
            .await
            .unwrap();
        let pid = column(&first, "SELECT pg_backend_pid()").await.unwrap();
        drop(first);
        let end = db_audit(&f.gw, "db_session_end", 1);
        assert_eq!(end[0]["server_kept"], true, "{}", end[0]);

        let second = connect(f.prod, &acme).await.unwrap();
        assert_eq!(column(&second, "SELECT pg_backend_pid()").await.unwrap(), pid, "the connection was reused");
        let checks = [
            ("SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()", "0"),
            ("SELECT count(*) FROM pg_prepared_statements", "0"),
            ("SELECT current_setting('work_mem')", "4MB"),
            ("SELECT coalesce(current_setting('app.leftover', true), '')", ""),
            ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()", "0"),
            ("SELECT count(*) FROM pg_listening_channels()", "0"),
            ("SELECT count(*) FROM pg_cursors", "0"),
            ("SELECT current_user", "tenant_acme"),
            ("SELECT count(*) FROM shared.orders WHERE item = 'uncommitted'", "0"),
        ];
        for (sql, want) in checks {
            assert_eq!(column(&second, sql).await.unwrap(), [want], "{sql}");
        }
        // With the only connection lent, another tenant waits its queue time, then is
        // told the database is busy.
        let start = std::time::Instant::now();
        let e = connect(f.prod, &tenant_token("prod", "globex")).await.unwrap_err();
        assert_eq!(sqlstate(&e), SqlState::TOO_MANY_CONNECTIONS.code(), "{e}");
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
        drop(second);
        // Once it is back, the other tenant's session closes it and signs in as itself.
        db_audit(&f.gw, "db_session_end", 2);
        let globex = connect(f.prod, &tenant_token("prod", "globex")).await.unwrap();
        assert_eq!(column(&globex, "SELECT current_user").await.unwrap(), ["tenant_globex"]);
        assert_ne!(column(&globex, "SELECT pg_backend_pid()").await.unwrap(), pid);
    });
}

#[test]
fn a_client_that_vanishes_mid_query_leaves_no_connection_to_reuse() {
    let f = front("");
    let acme = tenant_token("prod", "acme");
    let pid = runtime().block_on(async {
        let mut config = Config::new();
        config.host("127.0.0.1").port(f.prod.port()).user("anyone").dbname("app");
        config.password(acme.as_str()).ssl_mode(SslMode::Require);
        let (client, connection) = config.connect(RustlsConnect::new()).await.unwrap();
        let connection = tokio::spawn(connection);
        let pid = column(&client, "SELECT pg_backend_pid()").await.unwrap();
        let running = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The socket closes with the query still running and no Terminate sent.
        connection.abort();
        let _ = running.await;
        let end = db_audit(&f.gw, "db_session_end", 1);
        assert_eq!(end[0]["server_kept"], false, "{}", end[0]);
        let next = connect(f.prod, &acme).await.unwrap();
        assert_ne!(column(&next, "SELECT pg_backend_pid()").await.unwrap(), pid, "a fresh server connection");
        pid
    });
    // The abandoned query was cancelled, so its backend ends long before its 30 s.
    let gone = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {}", pid[0]);
    eventually("the abandoned backend to end", || (postgres().sql("app", &gone) == "0").then_some(()));
}

#[test]
fn a_cancel_reaches_its_own_query_only() {
    let f = front("");
    runtime().block_on(async {
        let a = connect(f.prod, &tenant_token("prod", "acme")).await.unwrap();
        let b = connect(f.prod, &tenant_token("prod", "acme")).await.unwrap();
        let cancel = a.cancel_token();
        let slow_a = tokio::spawn(async move { a.simple_query("SELECT pg_sleep(20)").await.map(|_| ()) });
        let slow_b = tokio::spawn(async move { b.simple_query("SELECT pg_sleep(1.5)").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel_query(RustlsConnect::new()).await.unwrap();
        let e = tokio::time::timeout(Duration::from_secs(5), slow_a).await.unwrap().unwrap().unwrap_err();
        assert_eq!(sqlstate(&e), SqlState::QUERY_CANCELED.code(), "{e}");
        slow_b.await.unwrap().unwrap();
    });
}

#[test]
fn extended_queries_copy_and_notices_pass_through() {
    let f = front("");
    runtime().block_on(async {
        let mut config = Config::new();
        config.host("127.0.0.1").port(f.prod.port()).user("anyone").dbname("app");
        config.password(tenant_token("prod", "acme")).ssl_mode(SslMode::Require);
        let (client, mut connection) = config.connect(RustlsConnect::new()).await.unwrap();
        let (notices, mut received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                if let Ok(tokio_postgres::AsyncMessage::Notice(n)) = message {
                    let _ = notices.send(n.message().to_owned());
                }
            }
        });
        // Extended protocol: parse, bind with parameters, execute.
        let row = client.query_one("SELECT $1::text || v FROM notes", &[&"seen: "]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "seen: acme-secret");
        let statement = client.prepare("SELECT $1::int * 2").await.unwrap();
        for n in [1i32, 21] {
            assert_eq!(client.query_one(&statement, &[&n]).await.unwrap().get::<_, i32>(0), n * 2);
        }
        // COPY in and out.
        client.batch_execute("CREATE TEMP TABLE copied (n int, s text)").await.unwrap();
        let sink = client.copy_in("COPY copied FROM STDIN").await.unwrap();
        let mut sink = std::pin::pin!(sink);
        sink.send(bytes::Bytes::from_static(b"1\tone\n2\ttwo\n")).await.unwrap();
        assert_eq!(sink.as_mut().finish().await.unwrap(), 2);
        let out = client.copy_out("COPY (SELECT * FROM copied ORDER BY n) TO STDOUT").await.unwrap();
        let mut out = std::pin::pin!(out);
        let mut copied = Vec::new();
        while let Some(chunk) = out.next().await {
            copied.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(copied, b"1\tone\n2\ttwo\n");
        // A notice raised by the server reaches the client.
        client.batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from %', current_user; END $$").await.unwrap();
        let notice = tokio::time::timeout(Duration::from_secs(5), received.recv()).await.unwrap().unwrap();
        assert_eq!(notice, "hello from tenant_acme");
    });
    let end = &db_audit(&f.gw, "db_session_end", 1)[0];
    assert!(end["statements"].as_u64().unwrap() >= 6, "{end}");
}

#[test]
fn the_server_connection_can_be_tls_verified_against_the_targets_ca() {
    let ca = format!("{}/tests/fixtures/tls/ca.pem", env!("CARGO_MANIFEST_DIR"));
    let f = front(&format!("tls = true\nca_file = \"{ca}\"\nserver_name = \"a.test\""));
    let wrong = front(&format!("tls = true\nca_file = \"{ca}\"\nserver_name = \"b.test\""));
    runtime().block_on(async {
        let client = connect(f.prod, &tenant_token("prod", "acme")).await.unwrap();
        let ssl = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        assert_eq!(column(&client, ssl).await.unwrap(), ["t"]);
        assert_eq!(column(&client, "SELECT v FROM notes").await.unwrap(), ["acme-secret"]);
        // A certificate for another name is refused: no session, and no plain-text fallback.
        let e = connect(wrong.prod, &tenant_token("prod", "acme")).await.unwrap_err();
        assert_eq!(sqlstate(&e), SqlState::CONNECTION_FAILURE.code(), "{e}");
    });
}

#[test]
fn direct_tls_with_alpn_postgresql_is_served() {
    let f = front("");
    runtime().block_on(async {
        let client = connect_with(f.prod, &tenant_token("prod", "acme"), |c| {
            c.ssl_negotiation(SslNegotiation::Direct);
        })
        .await
        .unwrap();
        assert_eq!(column(&client, "SELECT v FROM notes").await.unwrap(), ["acme-secret"]);
    });
}

/// Sends `packet` raw and returns the SQLSTATE of the `ErrorResponse` that comes back.
fn raw_refusal(addr: SocketAddr, packet: &[u8], close_write: bool) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(packet).unwrap();
    if close_write {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(answer.first(), Some(&b'E'), "an ErrorResponse: {answer:?}");
    let at = answer.windows(1).position(|w| w == b"C").unwrap();
    String::from_utf8_lossy(&answer[at + 1..at + 6]).into_owned()
}

#[test]
fn malformed_startup_packets_get_a_protocol_error_and_the_gateway_keeps_serving() {
    let f = front("");
    let startup = |version: u32, body: &[u8]| {
        let mut p = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&version.to_be_bytes());
        p.extend_from_slice(body);
        p
    };
    // Oversized: a length word past 10000.
    assert_eq!(raw_refusal(f.prod, &100_000u32.to_be_bytes(), false), "08P01");
    // Truncated: the length promises more than comes.
    let mut truncated = 64u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&(3u32 << 16).to_be_bytes());
    truncated.extend_from_slice(b"user\0");
    assert_eq!(raw_refusal(f.prod, &truncated, true), "08P01");
    // Protocol 2.0.
    assert_eq!(raw_refusal(f.prod, &startup(2 << 16, b"user\0a\0\0"), false), "08P01");
    // A well-formed startup in plain text on a TLS-only listener.
    assert_eq!(raw_refusal(f.prod, &startup(3 << 16, b"user\0a\0\0"), false), "28000");
    let reasons: Vec<Value> = db_audit(&f.gw, "db_session_start", 4).iter().map(|l| l["reason"].clone()).collect();
    assert_eq!(reasons.iter().filter(|r| **r == "protocol_violation").count(), 3, "{reasons:?}");
    let out = postgres().psql_client(f.prod, &tenant_token("prod", "acme"), "", "SELECT v FROM notes").unwrap();
    assert_eq!(out, "acme-secret");
}

#[test]
fn a_listener_past_its_session_cap_refuses_before_reading_a_token() {
    let (prod, stage) = (free_addr(), free_addr());
    let text = config("", "").replace(
        "address = \"@PGPROD@\"\nenvironment = \"prod\"\n",
        "address = \"@PGPROD@\"\nenvironment = \"prod\"\nmax_sessions = 2\n",
    );
    assert!(text.contains("max_sessions = 2"), "the listener took the cap");
    let gw = Gateway::start(&text, &[("@PGPROD@", prod), ("@PGSTAGE@", stage)]);
    let acme = tenant_token("prod", "acme");
    runtime().block_on(async {
        let first = connect(prod, &acme).await.unwrap();
        let second = connect(prod, &acme).await.unwrap();
        let e = connect(prod, &acme).await.unwrap_err();
        assert_eq!(sqlstate(&e), SqlState::TOO_MANY_CONNECTIONS.code(), "{e}");
        // Another listener counts its own sessions.
        let stage_session = connect(stage, &tenant_token("stage", "acme")).await.unwrap();
        assert_eq!(column(&stage_session, "SELECT 1").await.unwrap(), ["1"]);
        // Both sessions on the capped listener still work, and once one ends a new one
        // is let in.
        assert_eq!(column(&second, "SELECT current_user").await.unwrap(), ["tenant_acme"]);
        drop(first);
        db_audit(&gw, "db_session_end", 1);
        let again = connect(prod, &acme).await.unwrap();
        assert_eq!(column(&again, "SELECT current_user").await.unwrap(), ["tenant_acme"]);
    });
    let refused: Vec<Value> = gw.audit_lines().into_iter().filter(|l| l["reason"] == "too_many_sessions").collect();
    assert_eq!(refused.len(), 1, "the refusal is audited once");
    assert_eq!(refused[0]["decision"], "deny");
}

#[test]
fn with_a_database_per_tenant_each_tenant_lands_in_its_own() {
    let pg = postgres();
    for tenant in ["acme", "globex"] {
        pg.sql("app", &format!("CREATE DATABASE {tenant}_db"));
        pg.sql(
            &format!("{tenant}_db"),
            &format!(
                "REVOKE ALL ON DATABASE {tenant}_db FROM PUBLIC; \
                 GRANT CONNECT ON DATABASE {tenant}_db TO tenant_{tenant}; \
                 CREATE TABLE secrets (v text); INSERT INTO secrets VALUES ('{tenant}-db-secret'); \
                 GRANT SELECT ON secrets TO tenant_{tenant};"
            ),
        );
    }
    // The environment's db_pool renders one database target per tenant.
    let per_tenant = ["acme", "globex"]
        .map(|t| {
            format!(
                "[databases.db_{t}]\nhost = \"127.0.0.1\"\nport = {port}\ndatabase = \"{t}_db\"\n\
                 user = \"tenant_{{tenant}}\"\npassword_file = \"{secret}\"\n",
                port = pg.port,
                secret = pg.dir.join("master.secret").display()
            )
        })
        .join("");
    let text = config("", "")
        .replace("db_pool = \"pg\"\nreason_required_roles", "db_pool = \"db_{tenant}\"\nreason_required_roles")
        + &per_tenant;
    assert!(text.contains("db_pool = \"db_{tenant}\""), "the environment renders a database per tenant");
    let (prod, stage) = (free_addr(), free_addr());
    let _gw = Gateway::start(&text, &[("@PGPROD@", prod), ("@PGSTAGE@", stage)]);
    runtime().block_on(async {
        for tenant in ["acme", "globex"] {
            let client = connect(prod, &tenant_token("prod", tenant)).await.unwrap();
            let seen = column(&client, "SELECT current_database() || '|' || v FROM public.secrets").await.unwrap();
            assert_eq!(seen, [format!("{tenant}_db|{tenant}-db-secret")]);
        }
        // A tenant whose rendered target does not exist gets no database at all.
        let e = connect(prod, &tenant_token("prod", "initech")).await.unwrap_err();
        assert_eq!(sqlstate(&e), SqlState::INVALID_CATALOG_NAME.code(), "{e}");
    });
}

/// Whether the server has a backend with process id `pid`, and if so its login role.
fn backend_role(pid: &str) -> Option<String> {
    let role = postgres().sql("app", &format!("SELECT usename FROM pg_stat_activity WHERE pid = {pid}"));
    (!role.is_empty()).then_some(role)
}

/// The session's server backend, after the session ended and its connection was pooled.
async fn pooled_backend(f: &Front, tenant: &str, ended_before: usize) -> String {
    let client = connect(f.prod, &tenant_token("prod", tenant)).await.unwrap();
    let pid = column(&client, "SELECT pg_backend_pid()").await.unwrap().remove(0);
    drop(client);
    let end = db_audit(&f.gw, "db_session_end", ended_before + 1);
    assert_eq!(end[ended_before]["server_kept"], true, "{}", end[ended_before]);
    pid
}

#[test]
fn an_idle_server_connection_is_closed_after_the_idle_timeout() {
    let f = front("server_idle_timeout_seconds = 1");
    runtime().block_on(async {
        let pid = pooled_backend(&f, "acme", 0).await;
        // Pooled: the backend is still there, signed in as the tenant's role.
        assert_eq!(backend_role(&pid).as_deref(), Some("tenant_acme"));
        assert_eq!(f.gw.metric("isogate_db_server_connections"), Some(1.0));
        eventually("the idle server connection to close and leave the count", || {
            (backend_role(&pid).is_none() && f.gw.metric("isogate_db_server_connections") == Some(0.0)).then_some(())
        });
        // The next session gets a fresh connection.
        let next = connect(f.prod, &tenant_token("prod", "acme")).await.unwrap();
        assert_ne!(column(&next, "SELECT pg_backend_pid()").await.unwrap(), [pid]);
        assert_eq!(f.gw.metric("isogate_db_server_connections"), Some(1.0));
    });
}

#[test]
fn a_server_connection_past_its_lifetime_is_closed_instead_of_pooled() {
    let f = front("server_lifetime_seconds = 1");
    runtime().block_on(async {
        let client = connect(f.prod, &tenant_token("prod", "acme")).await.unwrap();
        let pid = column(&client, "SELECT pg_backend_pid()").await.unwrap().remove(0);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        drop(client);
        let end = db_audit(&f.gw, "db_session_end", 1);
        assert_eq!(end[0]["server_kept"], false, "{}", end[0]);
        let next = connect(f.prod, &tenant_token("prod", "acme")).await.unwrap();
        assert_ne!(column(&next, "SELECT pg_backend_pid()").await.unwrap(), std::slice::from_ref(&pid), "not reused");
        eventually("the old backend to end and leave the count", || {
            (backend_role(&pid).is_none() && f.gw.metric("isogate_db_server_connections") == Some(1.0)).then_some(())
        });
    });
}

#[test]
fn a_reload_that_changes_or_removes_a_target_closes_its_old_connections_and_keeps_unchanged_ones() {
    let f = front("");
    let ca = format!("{}/tests/fixtures/tls/ca.pem", env!("CARGO_MANIFEST_DIR"));
    let over_tls = format!("tls = true\nca_file = \"{ca}\"\nserver_name = \"a.test\"");
    let ssl = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    runtime().block_on(async {
        let idle = pooled_backend(&f, "acme", 0).await;
        let busy = connect(f.prod, &tenant_token("prod", "globex")).await.unwrap();
        let busy_pid = column(&busy, "SELECT pg_backend_pid()").await.unwrap().remove(0);
        // The target now goes over TLS: connections made in plain text must not serve again.
        f.gw.write_config(&config("", &over_tls));
        f.gw.signal("HUP");
        eventually("the reload", || (f.gw.metric("isogate_config_generation") == Some(2.0)).then_some(()));
        eventually("the idle connection to close", || backend_role(&idle).is_none().then_some(()));
        // The lent connection finishes its session, then closes instead of going back.
        assert_eq!(column(&busy, "SELECT v FROM notes").await.unwrap(), ["globex-secret"]);
        assert_eq!(backend_role(&busy_pid).as_deref(), Some("tenant_globex"));
        drop(busy);
        let end = db_audit(&f.gw, "db_session_end", 2);
        assert_eq!(end[1]["server_kept"], false, "{}", end[1]);
        eventually("the lent connection to close", || backend_role(&busy_pid).is_none().then_some(()));
        let client = connect(f.prod, &tenant_token("prod", "acme")).await.unwrap();
        assert_ne!(column(&client, "SELECT pg_backend_pid()").await.unwrap(), [idle]);
        assert_eq!(column(&client, ssl).await.unwrap(), ["t"], "made with the new settings");
        drop(client);
        db_audit(&f.gw, "db_session_end", 3);
        let warm_pid = pooled_backend(&f, "acme", 3).await;
        // A reload that leaves the target's connections as they were keeps them warm.
        f.gw.write_config(&config("", &format!("{over_tls}\nqueue_timeout_ms = 4000")));
        f.gw.signal("HUP");
        eventually("the reload", || (f.gw.metric("isogate_config_generation") == Some(3.0)).then_some(()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(backend_role(&warm_pid).is_some(), "the pooled connection stays open");
        let client = connect(f.prod, &tenant_token("prod", "acme")).await.unwrap();
        assert_eq!(
            column(&client, "SELECT pg_backend_pid()").await.unwrap(),
            std::slice::from_ref(&warm_pid),
            "reused"
        );
        drop(client);
        assert_eq!(db_audit(&f.gw, "db_session_end", 5)[4]["server_kept"], true);
        // A reload that removes the target (the same server, now named pg2) closes its pool.
        let renamed = config("", &over_tls).replace("\"pg\"", "\"pg2\"").replace("[databases.pg]", "[databases.pg2]");
        assert!(!renamed.contains("\"pg\"") && renamed.contains("[databases.pg2]"), "pg is gone");
        f.gw.write_config(&renamed);
        f.gw.signal("HUP");
        eventually("the reload", || (f.gw.metric("isogate_config_generation") == Some(4.0)).then_some(()));
        eventually("the removed target's connection to close", || backend_role(&warm_pid).is_none().then_some(()));
        let client = connect(f.prod, &tenant_token("prod", "acme")).await.unwrap();
        assert_eq!(column(&client, "SELECT v FROM notes").await.unwrap(), ["acme-secret"]);
    });
}

/// A `CancelRequest` for process id `pid` and `secret`, as a client sends it.
fn cancel_request(pid: i32, secret: i32) -> Vec<u8> {
    [16i32, 80_877_102, pid, secret].iter().flat_map(|w| w.to_be_bytes()).collect()
}

#[test]
fn a_cancel_sent_to_another_gateway_process_is_forwarded_to_the_one_serving_the_query() {
    let [a_prod, a_stage, b_prod, b_stage] = free_addrs::<4>();
    let peered = |own: u8, other: u8, at: SocketAddr| {
        format!("{}\n[database_cancel]\npeer_id = {own}\npeers = {{ {other} = \"{at}\" }}\n", config("", ""))
    };
    let a = Gateway::start(&peered(1, 2, b_prod), &[("@PGPROD@", a_prod), ("@PGSTAGE@", a_stage)]);
    let b = Gateway::start(&peered(2, 1, a_prod), &[("@PGPROD@", b_prod), ("@PGSTAGE@", b_stage)]);
    let cancels =
        |gw: &Gateway, result: &str| gw.metric(&format!("isogate_db_cancel_requests_total{{result=\"{result}\"}}"));
    runtime().block_on(async {
        // Prefer: the session is over TLS, and the token's cancel goes in plain text.
        let client = connect_with(a_prod, &tenant_token("prod", "acme"), |c| {
            c.ssl_mode(SslMode::Prefer);
        })
        .await
        .unwrap();
        let token = client.cancel_token();
        let slow = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(20)").await.map(|_| ()) });
        // The key gateway A handed out, read from what tokio-postgres sends.
        let capture = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to_capture = tokio::net::TcpStream::connect(capture.local_addr().unwrap()).await.unwrap();
        token.cancel_query_raw(to_capture, tokio_postgres::NoTls).await.unwrap();
        let mut request = [0u8; 16];
        tokio::io::AsyncReadExt::read_exact(&mut capture.accept().await.unwrap().0, &mut request).await.unwrap();
        let word = |i: usize| i32::from_be_bytes(request[i..i + 4].try_into().unwrap());
        let (pid, secret) = (word(8), word(12));
        assert_eq!(pid >> 23, 1, "the key carries gateway A's peer id: {pid:x}");
        // Gateway B forwards a wrong secret too (only A can tell), and A drops it; a key
        // of a peer B does not know is dropped by B.
        for raw in [cancel_request(pid, secret.wrapping_add(1)), cancel_request((9 << 23) | (pid & 0x7f_ffff), secret)]
        {
            let mut s = tokio::net::TcpStream::connect(b_prod).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut s, &raw).await.unwrap();
        }
        // Each side counts once it is done with its connection, so wait for both counts.
        eventually("A to drop the wrong secret and B the unknown peer", || {
            (cancels(&a, "unknown_key") == Some(1.0) && cancels(&b, "unknown_peer") == Some(1.0)).then_some(())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!slow.is_finished(), "a wrong key cancels nothing");
        // tokio-postgres' own cancel, sent to gateway B.
        let to_b = tokio::net::TcpStream::connect(b_prod).await.unwrap();
        token.cancel_query_raw(to_b, tokio_postgres::NoTls).await.unwrap();
        let e = tokio::time::timeout(Duration::from_secs(5), slow).await.unwrap().unwrap().unwrap_err();
        assert_eq!(sqlstate(&e), SqlState::QUERY_CANCELED.code(), "{e}");
    });
    // The query may end before either side has counted its part.
    eventually("the forwarded cancel to be counted on both sides", || {
        (cancels(&b, "forwarded") == Some(2.0) && cancels(&a, "sent") == Some(1.0)).then_some(())
    });
    assert_eq!(cancels(&b, "sent"), Some(0.0));
}

/// The front with its prod listener taking tokens by SASL OAUTHBEARER (scope `openid`),
/// and an issuer with a discovery document (served by `idp`) that clients are sent to.
fn oauthbearer_front() -> (Front, Idp) {
    let idp = Idp::start(&[]);
    idp.set(|s| s.discovery_issuer = "https://sso.test".to_owned());
    let listener = "address = \"@PGPROD@\"\nenvironment = \"prod\"\n";
    let text = config("", "")
        .replace(listener, &format!("{listener}client_auth = \"oauthbearer\"\noauth_scope = \"openid\"\n"))
        + &format!(
            "[[issuers]]\nname = \"sso\"\nissuer = \"https://sso.test\"\naudiences = [\"isogate-tests\"]\n\
         algorithms = [\"RS256\"]\ndiscovery_url = \"{}\"\n",
            idp.discovery_url()
        );
    assert!(text.contains("client_auth = \"oauthbearer\""), "the prod listener takes OAUTHBEARER");
    let (prod, stage) = (free_addr(), free_addr());
    let gw = Gateway::start(&text, &[("@PGPROD@", prod), ("@PGSTAGE@", stage)]);
    (Front { gw, prod, stage }, idp)
}

/// A `SASLInitialResponse` body: the mechanism, then the initial response's length and
/// bytes, or -1 for none.
fn sasl_initial(mechanism: &str, response: Option<&[u8]>) -> Vec<u8> {
    let mut body = format!("{mechanism}\0").into_bytes();
    match response {
        Some(r) => {
            body.extend_from_slice(&i32::try_from(r.len()).unwrap().to_be_bytes());
            body.extend_from_slice(r);
        }
        None => body.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    body
}

/// The RFC 7628 client-first-message carrying `token` (empty: a discovery request).
fn client_first(token: &str) -> Vec<u8> {
    let auth = if token.is_empty() { String::new() } else { format!("Bearer {token}") };
    format!("n,,\x01auth={auth}\x01\x01").into_bytes()
}

/// Starts a session and checks the gateway asks for OAUTHBEARER and nothing else.
async fn sasl_session(addr: SocketAddr) -> RawClient {
    let mut client = RawClient::start(addr).await;
    let (tag, body) = client.read().await.unwrap();
    assert_eq!((tag, body.as_slice()), (b'R', &b"\0\0\0\x0aOAUTHBEARER\0\0"[..]), "AuthenticationSASL");
    client
}

/// Reads the `AuthenticationSASLContinue` of a failed exchange, answers with the single
/// `0x01` byte, and returns the JSON and the SQLSTATE and message of the FATAL.
async fn failed_exchange(client: &mut RawClient) -> (Value, (String, String)) {
    let (tag, body) = client.read().await.unwrap();
    assert_eq!((tag, &body[..4]), (b'R', &[0, 0, 0, 11][..]), "AuthenticationSASLContinue");
    let json: Value = serde_json::from_slice(&body[4..]).unwrap();
    client.send(b'p', b"\x01").await;
    let (tag, body) = client.read().await.unwrap();
    assert_eq!(tag, b'E');
    (json, error_fields(&body))
}

/// The `ErrorResponse` the client gets next.
async fn refusal(client: &mut RawClient) -> (String, String) {
    let (tag, body) = client.read().await.unwrap();
    assert_eq!(tag, b'E', "an ErrorResponse");
    error_fields(&body)
}

#[test]
fn an_oauthbearer_token_opens_the_tenants_schema_and_a_stage_token_is_refused() {
    let (f, _idp) = oauthbearer_front();
    let acme = tenant_token("prod", "acme");
    runtime().block_on(async {
        let mut client = sasl_session(f.prod).await;
        client.send(b'p', &sasl_initial("OAUTHBEARER", Some(&client_first(&acme)))).await;
        client.expect_ready().await;
        let seen = client.simple_query("SELECT current_user || '|' || current_schema() || '|' || v FROM notes").await;
        assert_eq!(seen.unwrap(), ["tenant_acme|company_acme|acme-secret"]);
        assert_eq!(client.simple_query("SELECT v FROM company_globex.notes").await.unwrap_err(), "42501");
        client.send(b'X', b"").await;
        // No initial response: an empty challenge asks for it, and the client sends it.
        let mut client = sasl_session(f.prod).await;
        client.send(b'p', &sasl_initial("OAUTHBEARER", None)).await;
        assert_eq!(client.read().await.unwrap(), (b'R', vec![0, 0, 0, 11]), "an empty challenge");
        client.send(b'p', &client_first(&tenant_token("prod", "globex"))).await;
        client.expect_ready().await;
        assert_eq!(client.simple_query("SELECT v FROM notes").await.unwrap(), ["globex-secret"]);
        // A stage token is verified, then refused at once: it is not for this listener.
        let mut client = sasl_session(f.prod).await;
        client.send(b'p', &sasl_initial("OAUTHBEARER", Some(&client_first(&tenant_token("stage", "acme"))))).await;
        assert_eq!(refusal(&mut client).await.0, "28000");
        // The password listener of the same gateway is unchanged.
        let out = postgres().psql_client(f.stage, &tenant_token("stage", "initech"), "", "SELECT v FROM notes");
        assert_eq!(out.unwrap(), "initech-secret");
    });
    let lines = db_audit(&f.gw, "db_session_start", 4);
    let reasons: Vec<&str> = lines.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["ok", "ok", "wrong_environment", "ok"], "{lines:?}");
    assert!(lines[2]["server"].is_null(), "a refused session reaches no server: {}", lines[2]);
    assert_eq!(lines[0]["login_role"], "tenant_acme");
}

#[test]
fn oauthbearer_refusals_follow_rfc_7628_reach_no_server_and_are_audited() {
    let (f, idp) = oauthbearer_front();
    let good = tenant_token("prod", "acme");
    let (head, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", "A".repeat(43));
    runtime().block_on(async {
        // Discovery: no token; the client learns where to get one, acknowledges, and
        // is refused.
        let mut client = sasl_session(f.prod).await;
        client.send(b'p', &sasl_initial("OAUTHBEARER", Some(&client_first("")))).await;
        let (json, (code, _)) = failed_exchange(&mut client).await;
        let want = json!({"status": "invalid_token", "openid-configuration": idp.discovery_url(), "scope": "openid"});
        assert_eq!(json, want);
        assert_eq!(code, "28000");
        // A forged token: the same error exchange, then invalid_password.
        let mut client = sasl_session(f.prod).await;
        client.send(b'p', &sasl_initial("OAUTHBEARER", Some(&client_first(&forged)))).await;
        let (json, (code, message)) = failed_exchange(&mut client).await;
        assert_eq!(json["status"], "invalid_token");
        assert_eq!(code, "28P01");
        assert!(message.contains("OAuth bearer authentication failed"), "{message}");
        // Another mechanism.
        let mut client = sasl_session(f.prod).await;
        client.send(b'p', &sasl_initial("SCRAM-SHA-256", Some(b"n,,n=,r=abc"))).await;
        assert_eq!(refusal(&mut client).await.0, "28000");
        // Malformed GS2 headers: channel binding asked for, and no header at all.
        for (response, says) in [
            (format!("p=tls-server-end-point,,\x01auth=Bearer {good}\x01\x01"), "channel binding"),
            (format!("auth=Bearer {good}\x01\x01"), "GS2 header"),
        ] {
            let mut client = sasl_session(f.prod).await;
            client.send(b'p', &sasl_initial("OAUTHBEARER", Some(response.as_bytes()))).await;
            let (code, message) = refusal(&mut client).await;
            assert_eq!(code, "08P01");
            assert!(message.contains(says), "{message}");
        }
        // An oversized message is refused from its length word, unread.
        let mut client = sasl_session(f.prod).await;
        let mut oversized = b"p".to_vec();
        oversized.extend_from_slice(&200_000u32.to_be_bytes());
        client.send_raw(&oversized).await;
        assert_eq!(refusal(&mut client).await.0, "08P01");
    });
    // psql 15 knows no OAUTHBEARER: libpq says so, and the gateway audits it.
    let e = postgres().psql_client(f.prod, &good, "", "SELECT 1").unwrap_err();
    assert!(e.contains("SASL authentication mechanisms"), "{e}");
    let lines = db_audit(&f.gw, "db_session_start", 7);
    let reasons: Vec<&str> = lines.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        [
            "oauth_discovery",
            "bad_signature",
            "sasl_mechanism",
            "sasl_malformed",
            "sasl_malformed",
            "sasl_malformed",
            "sasl_mechanism"
        ]
    );
    for line in &lines {
        assert_eq!(line["decision"], "deny", "{line}");
        assert!(line["server"].is_null(), "a refused session reaches no server: {line}");
    }
    assert_eq!(f.gw.metric("isogate_db_sessions_total{decision=\"deny\",reason=\"sasl_malformed\"}"), Some(3.0));
}
