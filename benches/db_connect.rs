//! Connection-setup cost of the database front, JWT verification included.
//!
//! Starts a real PostgreSQL (the tests' start-up code, `tests/common/postgres.rs`)
//! provisioned with `deploy/postgres/`, and the isogate binary (release build under
//! `cargo bench`) in front of it. Then one tokio-postgres client opens and closes
//! sessions one after another, each timed from the TCP connect to `ReadyForQuery`:
//!
//! - `direct`: straight to PostgreSQL over TLS, as the tenant's role (SCRAM-SHA-256);
//! - `cached`: through isogate over TLS, the same token every time (the verified-token
//!   cache answers);
//! - `rs256`, `es256`: through isogate over TLS, a token never seen before on every
//!   connection (cold signature verification against a static public key: no network).
//!
//! The modes take turns, connection by connection, in an order that rotates, so a noisy
//! neighbour on the machine hits them alike. Each connection starts after a pause (not
//! timed), so the previous one's teardown is not timed into it: without it, a session
//! right after a direct one took about 2 ms longer (a PostgreSQL backend exiting on
//! this 2-core machine), whatever its mode.
//! Server connections behind isogate are pooled, as in production; the run says how
//! many sessions had to sign in to the server anew.
//!
//! Run: `cargo bench --bench db_connect`. Settings (environment variables):
//! `CONNECTIONS` per mode (500), `WARMUP` per mode (20), `GAP_MS` between connections (10). Without PostgreSQL installed
//! it says so and exits; under `cargo test` (no `--bench`) it does nothing.

#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::jws::{claims, token};
use common::postgres::{Postgres, RustlsConnect};
use common::{free_addr, Gateway, HMAC_ISSUER, PREAMBLE, RSA_ISSUER};
use serde_json::json;
use tokio_postgres::config::SslMode;
use tokio_postgres::Config;

const MASTER_SECRET: &str = "a-master-secret-of-at-least-32-bytes-for-benches";

const EC_ISSUER: &str = r#"
[[issuers]]
name = "ec"
issuer = "https://ec256.test"
audiences = ["isogate-tests"]
algorithms = ["ES256"]
public_key_file = "@KEYS@/ec256.pub.pem"
"#;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Cached,
    Rs256,
    Es256,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Direct, Mode::Cached, Mode::Rs256, Mode::Es256];

    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct (PostgreSQL, TLS, SCRAM)",
            Mode::Cached => "isogate, cached token",
            Mode::Rs256 => "isogate, fresh RS256 token",
            Mode::Es256 => "isogate, fresh ES256 token",
        }
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn postgres_installed() -> bool {
    std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.filter_map(Result::ok).any(|d| d.path().join("bin/postgres").exists()))
        .unwrap_or(false)
}

fn gateway(pg: &Postgres, listen: std::net::SocketAddr) -> Gateway {
    let tls = format!("{}/tests/fixtures/tls", env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        r#"{PREAMBLE}
[[certificates]]
cert_file = "{tls}/a.pem"
key_file = "{tls}/a.key"
server_names = ["a.test"]
{HMAC_ISSUER}{RSA_ISSUER}{EC_ISSUER}
[environments.prod]
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
[databases.pg]
host = "127.0.0.1"
port = {port}
database = "app"
user = "tenant_{{tenant}}"
password_file = "{secret}"
"#,
        dead = common::dead_addr(),
        port = pg.port,
        secret = pg.dir.join("master.secret").display(),
    );
    Gateway::start(&text, &[("@PGPROD@", listen)])
}

/// Opens a session and closes it; the time to `ReadyForQuery`.
async fn connect(config: &Config) -> Duration {
    let started = Instant::now();
    let (client, connection) = config.connect(RustlsConnect::new()).await.unwrap();
    let took = started.elapsed();
    drop(client);
    connection.await.unwrap();
    took
}

fn client_config(port: u16, user: &str, password: &str) -> Config {
    let mut config = Config::new();
    config.host("127.0.0.1").port(port).user(user).dbname("app").password(password);
    config.ssl_mode(SslMode::Require);
    config
}

fn fresh_tokens(alg: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let mut c = claims("prod", "acme");
            c["jti"] = json!(format!("{alg}-{i}"));
            token(alg, c)
        })
        .collect()
}

fn summary(mut micros: Vec<f64>) -> (f64, f64, f64) {
    micros.sort_by(f64::total_cmp);
    let mean = micros.iter().sum::<f64>() / micros.len() as f64;
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    (mean, at(0.5), at(0.9))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("db_connect: a benchmark; run it with `cargo bench --bench db_connect`");
        return;
    }
    if !postgres_installed() {
        println!("db_connect: skipped, PostgreSQL is not installed (apt-get install postgresql)");
        return;
    }
    let (count, warmup) = (env_number("CONNECTIONS", 500), env_number("WARMUP", 20));
    let gap = Duration::from_millis(env_number("GAP_MS", 10) as u64);
    let pg = Postgres::start("SELECT 1");
    let role_password = isogate::database::derived_password(MASTER_SECRET.as_bytes(), "tenant_acme");
    pg.deploy("00-database.sql", &[]);
    pg.deploy("10-tenant-role.sql", &[("tenant", "acme"), ("password", &role_password)]);
    pg.deploy("20-tenant-schema.sql", &[("tenant", "acme")]);
    std::fs::write(pg.dir.join("master.secret"), MASTER_SECRET).unwrap();
    let listen = free_addr();
    let gw = gateway(&pg, listen);

    let total = count + warmup;
    let started = Instant::now();
    let (rs256, es256) = (fresh_tokens("RS256", total), fresh_tokens("ES256", total));
    println!("minted {} fresh tokens in {:?} (not timed below)", 2 * total, started.elapsed());
    let cached = token("HS256", claims("prod", "acme"));
    let configs = |i: usize, mode: Mode| match mode {
        Mode::Direct => client_config(pg.port, "tenant_acme", &role_password),
        Mode::Cached => client_config(listen.port(), "anyone", &cached),
        Mode::Rs256 => client_config(listen.port(), "anyone", &rs256[i]),
        Mode::Es256 => client_config(listen.port(), "anyone", &es256[i]),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut timings: Vec<Vec<f64>> = vec![Vec::with_capacity(count); Mode::ALL.len()];
    runtime.block_on(async {
        for i in 0..total {
            for k in 0..Mode::ALL.len() {
                let m = (i + k) % Mode::ALL.len();
                tokio::time::sleep(gap).await;
                let took = connect(&configs(i, Mode::ALL[m])).await;
                if i >= warmup {
                    timings[m].push(took.as_secs_f64() * 1e6);
                }
            }
        }
    });

    println!("\n{count} sequential connections per mode (after {warmup} warm-up), TLS, connect to ReadyForQuery:");
    println!("{:<34} {:>9} {:>9} {:>9} {:>9} {:>9}", "mode", "mean µs", "p50 µs", "p90 µs", "conn/s", "÷ direct");
    let direct_mean = summary(timings[0].clone()).0;
    let mut means = Vec::new();
    for (mode, micros) in Mode::ALL.into_iter().zip(timings) {
        let (mean, p50, p90) = summary(micros);
        means.push(mean);
        let ratio = mean / direct_mean;
        println!("{:<34} {mean:>9.0} {p50:>9.0} {p90:>9.0} {:>9.0} {ratio:>9.2}", mode.name(), 1e6 / mean);
    }
    println!(
        "cold verification over cached: RS256 {:+.0} µs ({:.2}x), ES256 {:+.0} µs ({:.2}x)",
        means[2] - means[1],
        means[2] / means[1],
        means[3] - means[1],
        means[3] / means[1]
    );
    let starts: Vec<_> = gw.audit_lines().into_iter().filter(|l| l["event"] == "db_session_start").collect();
    let signed_in = starts.iter().filter(|l| l["server_reused"] == false).count();
    println!("{} sessions through isogate, {signed_in} of them signed in to the server anew", starts.len());
}
