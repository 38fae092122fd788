//! End-to-end load harness: isogate against HAProxy and nginx doing the same job on this
//! machine, in the same run.
//!
//! Run: `cargo bench --bench load` (needs `wrk`, `nginx`, `haproxy` and `taskset`; on
//! Debian: `apt-get install -y wrk nginx-light haproxy`). Under `cargo test` it only
//! checks its templates and exits, so CI never runs the load.
//!
//! Layout: the load generator is pinned to core 0; the proxy under test and the upstream
//! nginx share core 1. Every scenario gets a fresh proxy process, a correctness check
//! (a valid token is served by the right upstream, forged and expired ones are refused),
//! a warm-up, then a measured run. Passes interleave the scenarios, because the machine
//! is shared and noisy; the table shows the median of the passes.
//!
//! Settings (environment variables): `LOAD_SECONDS` (10), `LOAD_WARMUP_SECONDS` (5),
//! `LOAD_PASSES` (3), `LOAD_CONNECTIONS` (32), `LOAD_ONLY` (comma-separated scenario
//! names), `LOAD_KEEP` (keep the work directory).

#![allow(missing_docs)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{env, fs, thread};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;

#[path = "load/callgrind.rs"]
mod callgrind;
#[path = "load/report.rs"]
mod report;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

/// The same allocator as the isogate binary, so the bare pingora proxy below is its
/// like-for-like floor.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PROD_PORT: u16 = 18_801;
const STAGE_PORT: u16 = 18_802;
const PROXY_PORT: u16 = 18_810;
const ADMIN_PORT: u16 = 18_811;
const LOAD_CORE: &str = "0";
const PROXY_CORE: &str = "1";
const ISSUER: &str = "https://idp.bench.isogate.test";
const AUDIENCE: &str = "isogate-bench";
/// Tokens that repeat in the churn scenario.
const CHURN_REPEATS: usize = 1_000;
/// Clock ticks per second in /proc/PID/stat (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Alg {
    Hs256,
    Rs256,
    Es256,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    /// The issuer's verification key, as each proxy's config names it.
    fn public_key_file(self, work: &Workdir) -> PathBuf {
        match self {
            Alg::Hs256 => work.keys.join("hmac.secret"),
            Alg::Rs256 => work.keys.join("rsa.pub.pem"),
            Alg::Es256 => work.keys.join("ec256.pub.pem"),
        }
    }
}

/// Which tenants the tokens name, and which tenants the tenant maps hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tenants {
    /// 10,000 tenants on the environments' default pools (no tenant map).
    Many,
    /// A map of 10 tenants per environment; 200,000 distinct tokens (users) name them.
    MapOf10,
    /// A map of 10^6 tenants per environment; 200,000 distinct tokens name 200,000 of
    /// them. Both map scenarios send each token about once, so they differ only in the
    /// tenant map and limiter sizes, not in token-cache hits.
    MapOf1M,
    /// Token churn: 1,000 tokens repeat, and every 20th request carries a token not
    /// seen before (120,000 requests' worth, so a measured run never wraps around).
    Churn,
}

impl Tenants {
    fn token_count(self) -> usize {
        match self {
            Tenants::Many => 10_000,
            Tenants::MapOf10 | Tenants::MapOf1M => 200_000,
            Tenants::Churn => 120_000,
        }
    }

    /// Distinct tenants among the tokens.
    fn tenant_count(self) -> usize {
        match self {
            Tenants::Many => 10_000,
            Tenants::MapOf10 => 10,
            Tenants::MapOf1M => 200_000,
            Tenants::Churn => CHURN_REPEATS,
        }
    }

    /// The user (and so the token) of line `i` of the token file.
    fn user(self, i: usize) -> usize {
        match self {
            Tenants::Churn if i.is_multiple_of(20) => CHURN_REPEATS + i,
            Tenants::Churn => i % CHURN_REPEATS,
            _ => i,
        }
    }

    fn map_size(self) -> Option<usize> {
        match self {
            Tenants::Many | Tenants::Churn => None,
            Tenants::MapOf10 => Some(10),
            Tenants::MapOf1M => Some(1_000_000),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proxy {
    /// wrk straight to the upstream: the limit.
    Direct,
    /// nginx as a plain reverse proxy, no auth: the floor of proxy cost.
    Nginx,
    /// pingora with no stage at all (this harness with `--bare-proxy`): the floor of
    /// the framework isogate is built on.
    PingoraBare,
    /// pingora setting what isogate sets, with fixed values and nothing else: the same
    /// 12 upstream request headers (as isogate adds them: static names, no client
    /// header-name case, room reserved), the response's `x-request-id` and the same
    /// upstream timeouts (`--bare-proxy --headers`). What the framework charges for the
    /// job's output alone.
    PingoraHeaders,
    Haproxy(Alg, Tenants),
    Isogate(Alg, Tenants),
}

impl Proxy {
    /// The token set the scenario's load sends (the job's, even to proxies that ignore it).
    fn tokens(self) -> (Alg, Tenants) {
        match self {
            Proxy::Haproxy(alg, tenants) | Proxy::Isogate(alg, tenants) => (alg, tenants),
            Proxy::Direct | Proxy::Nginx | Proxy::PingoraBare | Proxy::PingoraHeaders => (Alg::Hs256, Tenants::Many),
        }
    }
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    proxy: Proxy,
    connections: Option<usize>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario { name: "direct", proxy: Proxy::Direct, connections: None },
    Scenario { name: "nginx-proxy", proxy: Proxy::Nginx, connections: None },
    Scenario { name: "pingora-bare", proxy: Proxy::PingoraBare, connections: None },
    Scenario { name: "pingora-headers", proxy: Proxy::PingoraHeaders, connections: None },
    Scenario { name: "haproxy-hs256", proxy: Proxy::Haproxy(Alg::Hs256, Tenants::Many), connections: None },
    Scenario { name: "isogate-hs256", proxy: Proxy::Isogate(Alg::Hs256, Tenants::Many), connections: None },
    Scenario { name: "haproxy-rs256", proxy: Proxy::Haproxy(Alg::Rs256, Tenants::Many), connections: None },
    Scenario { name: "isogate-rs256", proxy: Proxy::Isogate(Alg::Rs256, Tenants::Many), connections: None },
    Scenario { name: "haproxy-es256", proxy: Proxy::Haproxy(Alg::Es256, Tenants::Many), connections: None },
    Scenario { name: "isogate-es256", proxy: Proxy::Isogate(Alg::Es256, Tenants::Many), connections: None },
    Scenario { name: "haproxy-rs256-churn", proxy: Proxy::Haproxy(Alg::Rs256, Tenants::Churn), connections: None },
    Scenario { name: "isogate-rs256-churn", proxy: Proxy::Isogate(Alg::Rs256, Tenants::Churn), connections: None },
    Scenario { name: "isogate-map-10", proxy: Proxy::Isogate(Alg::Hs256, Tenants::MapOf10), connections: None },
    Scenario { name: "isogate-map-1m", proxy: Proxy::Isogate(Alg::Hs256, Tenants::MapOf1M), connections: None },
    Scenario { name: "direct-1conn", proxy: Proxy::Direct, connections: Some(1) },
    Scenario { name: "haproxy-hs256-1conn", proxy: Proxy::Haproxy(Alg::Hs256, Tenants::Many), connections: Some(1) },
    Scenario { name: "isogate-hs256-1conn", proxy: Proxy::Isogate(Alg::Hs256, Tenants::Many), connections: Some(1) },
];

struct Settings {
    seconds: u64,
    warmup_seconds: u64,
    passes: usize,
    connections: usize,
    only: Option<Vec<String>>,
    keep: bool,
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Settings {
    fn from_env() -> Self {
        Self {
            seconds: env_number("LOAD_SECONDS", 10),
            warmup_seconds: env_number("LOAD_WARMUP_SECONDS", 5),
            passes: env_number("LOAD_PASSES", 3),
            connections: env_number("LOAD_CONNECTIONS", 32),
            only: env::var("LOAD_ONLY").ok().map(|v| v.split(',').map(str::to_owned).collect()),
            keep: env::var_os("LOAD_KEEP").is_some(),
        }
    }

    fn selected(&self) -> Vec<Scenario> {
        SCENARIOS
            .iter()
            .filter(|s| self.only.as_ref().is_none_or(|only| only.iter().any(|o| o == s.name)))
            .copied()
            .collect()
    }
}

/// The files every scenario draws on.
struct Workdir {
    dir: PathBuf,
    sources: PathBuf,
    keys: PathBuf,
}

impl Workdir {
    fn create() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("target/load");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("nginx-tmp")).expect("create target/load");
        Self { dir, sources: root.join("benches/load"), keys: root.join("tests/fixtures/keys") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Fills a template's `{{NAME}}` placeholders and writes it into the work directory.
    fn render(&self, template: &str, output: &str, vars: &[(&str, String)]) -> PathBuf {
        let mut text = fs::read_to_string(self.sources.join(template)).expect("read template");
        let dir = self.dir.display().to_string();
        let ports = [
            ("DIR", dir),
            ("PROD_PORT", PROD_PORT.to_string()),
            ("STAGE_PORT", STAGE_PORT.to_string()),
            ("PROXY_PORT", PROXY_PORT.to_string()),
            ("ADMIN_PORT", ADMIN_PORT.to_string()),
        ];
        for (name, value) in ports.iter().chain(vars) {
            text = text.replace(&format!("{{{{{name}}}}}"), value);
        }
        assert!(!text.contains("{{"), "{template}: unfilled placeholder");
        let path = self.path(output);
        fs::write(&path, text).expect("write rendered config");
        path
    }

    fn tokens_file(alg: Alg, tenants: Tenants) -> String {
        format!("tokens-{}-{}-{}.txt", alg.name(), tenants.token_count(), tenants.tenant_count())
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn encoding_key(work: &Workdir, alg: Alg) -> EncodingKey {
    match alg {
        Alg::Hs256 => EncodingKey::from_secret(&fs::read(work.keys.join("hmac.secret")).expect("hmac secret")),
        Alg::Rs256 => {
            EncodingKey::from_rsa_pem(&fs::read(work.keys.join("rsa.key.pem")).expect("rsa key")).expect("rsa key")
        }
        Alg::Es256 => {
            EncodingKey::from_ec_pem(&fs::read(work.keys.join("ec256.key.pem")).expect("ec key")).expect("ec key")
        }
    }
}

fn mint(key: &EncodingKey, alg: Alg, user: usize, tenant: usize, env_name: &str, exp: u64) -> String {
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": format!("user-{user}"), "tenant": format!("t{tenant}"),
        "env": env_name, "roles": "user", "iat": now(), "exp": exp,
    });
    let algorithm = match alg {
        Alg::Hs256 => Algorithm::HS256,
        Alg::Rs256 => Algorithm::RS256,
        Alg::Es256 => Algorithm::ES256,
    };
    jsonwebtoken::encode(&Header::new(algorithm), &claims, key).expect("sign token")
}

/// Writes one token per user, tenants in turn, alternating prod and stage, valid for
/// two hours.
fn write_tokens(work: &Workdir, alg: Alg, tenants: Tenants) {
    let path = work.path(&Workdir::tokens_file(alg, tenants));
    if path.exists() {
        return;
    }
    let key = encoding_key(work, alg);
    let exp = now() + 7200;
    let mut text = String::new();
    let mut minted = std::collections::HashMap::new();
    for line in 0..tenants.token_count() {
        let user = tenants.user(line);
        let token = minted.entry(user).or_insert_with(|| {
            let env_name = if user.is_multiple_of(2) { "prod" } else { "stage" };
            mint(&key, alg, user, user % tenants.tenant_count(), env_name, exp)
        });
        let _ = writeln!(text, "{token}");
    }
    fs::write(path, text).expect("write tokens");
    if tenants == Tenants::Churn {
        // The warm-up sends the repeating tokens only, so the new ones stay new.
        let base: String = (0..CHURN_REPEATS).filter_map(|u| minted.get(&u)).map(|t| format!("{t}\n")).collect();
        fs::write(work.path(&churn_warmup_file(alg)), base).expect("write warm-up tokens");
    }
}

fn churn_warmup_file(alg: Alg) -> String {
    format!("tokens-{}-churn-warmup.txt", alg.name())
}

/// Writes the two tenant maps (every tenant on its environment's pool, plan `bench`).
fn write_tenant_maps(work: &Workdir, size: usize) -> [PathBuf; 2] {
    ["prod", "stage"].map(|env_name| {
        let path = work.path(&format!("tenants-{env_name}-{size}.csv"));
        if !path.exists() {
            let mut text = String::with_capacity(size * 20);
            for t in 0..size {
                let _ = writeln!(text, "t{t},{env_name},bench");
            }
            fs::write(&path, text).expect("write tenant map");
        }
        path
    })
}

#[derive(Clone, Copy)]
struct Cpu {
    user: u64,
    system: u64,
}

/// A process pinned to the proxy core, killed on drop.
struct Pinned {
    child: Child,
    name: &'static str,
}

impl Pinned {
    /// Starts `program`; its stderr goes to `<work>/<program>.stderr`, its stdout to
    /// `stdout` (or nowhere).
    fn spawn(work: &Workdir, name: &'static str, program: &str, args: &[&str], stdout: Option<PathBuf>) -> Self {
        Self::spawn_wrapped(work, name, &[], program, args, stdout)
    }

    /// Like `spawn`, with `wrapper` (e.g. valgrind and its options) in front of `program`.
    fn spawn_wrapped(
        work: &Workdir,
        name: &'static str,
        wrapper: &[String],
        program: &str,
        args: &[&str],
        stdout: Option<PathBuf>,
    ) -> Self {
        let program_name = Path::new(program).file_name().and_then(|f| f.to_str()).unwrap_or("proc");
        let stderr = work.path(&format!("{program_name}.stderr"));
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", PROXY_CORE])
            .args(wrapper)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stderr(fs::File::options().create(true).append(true).open(stderr).expect("stderr file"));
        match stdout {
            Some(path) => cmd.stdout(fs::File::create(path).expect("log file")),
            None => cmd.stdout(Stdio::null()),
        };
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Self { child, name }
    }

    /// User and system CPU time of the process (all threads), in microseconds.
    fn cpu_us(&self) -> Cpu {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("proc stat");
        let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
        let us = |i: usize| fields[i].parse::<u64>().expect("cpu ticks") * 1_000_000 / TICKS_PER_SECOND;
        Cpu { user: us(11), system: us(12) }
    }

    fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early: {status}", self.name);
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection: status and body.
fn http_get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench.local\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

fn wait_until_serving(port: u16, proc: &mut Pinned) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        proc.assert_running();
        if http_get(port, "/", None).is_some() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("{} did not answer on port {port} within 60 s", proc.name);
}

/// A proxy that does the job must serve valid tokens from the right upstream and
/// refuse forged, expired and missing ones; otherwise its numbers mean nothing.
fn check_job(work: &Workdir, alg: Alg, name: &str) {
    let key = encoding_key(work, alg);
    let exp = now() + 600;
    for env_name in ["prod", "stage"] {
        let token = mint(&key, alg, 7, 7, env_name, exp);
        let got = http_get(PROXY_PORT, "/api/orders", Some(&token));
        assert_eq!(got, Some((200, format!("{env_name}\n"))), "{name}: a valid {env_name} token");
    }
    let good = mint(&key, alg, 7, 7, "prod", exp);
    let (head, signature) = good.rsplit_once('.').expect("jws");
    let forged = format!("{head}.{}", signature.chars().rev().collect::<String>());
    let expired = mint(&key, alg, 7, 7, "prod", now() - 3600);
    let other_key = match alg {
        Alg::Hs256 => EncodingKey::from_secret(b"not-the-secret-not-the-secret-32"),
        Alg::Rs256 => {
            EncodingKey::from_rsa_pem(&fs::read(work.keys.join("rsa2.key.pem")).expect("rsa2")).expect("rsa2")
        }
        Alg::Es256 => {
            let other = p256::SecretKey::random(&mut rand08::thread_rng());
            let pem = p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&other, Default::default()).expect("ec pem");
            EncodingKey::from_ec_pem(pem.as_bytes()).expect("other ec key")
        }
    };
    let wrong_key = mint(&other_key, alg, 7, 7, "prod", exp);
    for (what, token) in
        [("forged", Some(&forged)), ("expired", Some(&expired)), ("wrong key", Some(&wrong_key)), ("no", None)]
    {
        let status = http_get(PROXY_PORT, "/api/orders", token.map(String::as_str)).map(|(s, _)| s);
        assert!(matches!(status, Some(401 | 403)), "{name}: a {what} token got {status:?}");
    }
}

struct Sample {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    cpu_us_per_request: Option<f64>,
    /// The kernel's part of `cpu_us_per_request`.
    system_us_per_request: Option<f64>,
    rss_kib: Option<u64>,
}

fn result_field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("wrk result has no {name}: {line}"))
}

/// Runs wrk on the load core; returns the `LOAD_RESULT` line.
fn wrk(work: &Workdir, port: u16, tokens: &Path, connections: usize, seconds: u64) -> String {
    let output = Command::new("taskset")
        .args(["-c", LOAD_CORE, "wrk", "-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency"])
        .arg("-s")
        .arg(work.sources.join("rotate.lua"))
        .arg(format!("http://127.0.0.1:{port}/api/orders"))
        .env("LOAD_TOKENS", tokens)
        .output()
        .expect("run wrk");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find(|l| l.starts_with("LOAD_RESULT"))
        .unwrap_or_else(|| panic!("wrk printed no result: {stdout}{}", String::from_utf8_lossy(&output.stderr)))
        .to_owned()
}

fn start_proxy(work: &Workdir, proxy: Proxy) -> Option<Pinned> {
    start_proxy_wrapped(work, proxy, &[])
}

/// Starts `proxy` with `wrapper` in front of its program.
fn start_proxy_wrapped(work: &Workdir, proxy: Proxy, wrapper: &[String]) -> Option<Pinned> {
    let isogate = env!("CARGO_BIN_EXE_isogate");
    let spawn =
        |name, program: &str, args: &[&str], stdout| Pinned::spawn_wrapped(work, name, wrapper, program, args, stdout);
    let pinned = match proxy {
        Proxy::Direct => return None,
        Proxy::PingoraBare => {
            let me = env::current_exe().expect("own path");
            spawn("pingora bare", &me.display().to_string(), &["--bare-proxy"], None)
        }
        Proxy::PingoraHeaders => {
            let me = env::current_exe().expect("own path");
            spawn("pingora headers", &me.display().to_string(), &["--bare-proxy", "--headers"], None)
        }
        Proxy::Nginx => {
            let conf = work.render("proxy.nginx.conf", "proxy.nginx.conf", &[]);
            spawn("nginx proxy", "nginx", &["-e", "stderr", "-c", &conf.display().to_string()], None)
        }
        Proxy::Haproxy(alg, _) => {
            let key = match alg {
                Alg::Hs256 => fs::read_to_string(alg.public_key_file(work)).expect("secret").trim().to_owned(),
                Alg::Rs256 | Alg::Es256 => alg.public_key_file(work).display().to_string(),
            };
            let conf = work.render("haproxy.cfg", "haproxy.cfg", &[("ALG", alg.name().to_owned()), ("KEY", key)]);
            spawn("haproxy", "haproxy", &["-db", "-f", &conf.display().to_string()], Some(work.path("haproxy.log")))
        }
        Proxy::Isogate(alg, tenants) => {
            let key_setting = match alg {
                Alg::Hs256 => format!("secret_file = \"{}\"", alg.public_key_file(work).display()),
                Alg::Rs256 | Alg::Es256 => format!("public_key_file = \"{}\"", alg.public_key_file(work).display()),
            };
            let maps = tenants.map_size().map(|size| write_tenant_maps(work, size));
            let map_setting = |i: usize| {
                maps.as_ref().map(|m| format!("tenant_map_file = \"{}\"", m[i].display())).unwrap_or_default()
            };
            let conf = work.render(
                "isogate.toml",
                "isogate.toml",
                &[
                    ("ALG", alg.name().to_owned()),
                    ("KEY_SETTING", key_setting),
                    ("PROD_TENANT_MAP", map_setting(0)),
                    ("STAGE_TENANT_MAP", map_setting(1)),
                ],
            );
            spawn("isogate", isogate, &["run", "-c", &conf.display().to_string()], None)
        }
    };
    Some(pinned)
}

/// isogate's `isogate_token_cache_entries`, from its admin listener.
fn cached_tokens() -> usize {
    let (_, metrics) = http_get(ADMIN_PORT, "/metrics", None).unwrap_or_default();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("isogate_token_cache_entries "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn run_scenario(work: &Workdir, settings: &Settings, scenario: Scenario) -> Sample {
    let (alg, tenants) = scenario.proxy.tokens();
    let tokens = work.path(&Workdir::tokens_file(alg, tenants));
    let mut proxy = start_proxy(work, scenario.proxy);
    let port = match proxy.as_mut() {
        Some(p) => {
            wait_until_serving(PROXY_PORT, p);
            if let Proxy::Haproxy(alg, _) | Proxy::Isogate(alg, _) = scenario.proxy {
                check_job(work, alg, scenario.name);
            }
            PROXY_PORT
        }
        None => PROD_PORT,
    };
    let connections = scenario.connections.unwrap_or(settings.connections);
    if settings.warmup_seconds > 0 {
        let warmup = match tenants {
            Tenants::Churn => work.path(&churn_warmup_file(alg)),
            _ => tokens.clone(),
        };
        wrk(work, port, &warmup, connections, settings.warmup_seconds);
        // Steady state for isogate means every token has been seen once: keep warming
        // until its verified-token cache holds them all (RS256 misses are slow, so the
        // fixed warm-up is not always enough on a busy machine).
        if let Proxy::Isogate(_, Tenants::Many) = scenario.proxy {
            let deadline = Instant::now() + Duration::from_secs(60);
            while cached_tokens() < tenants.token_count() && Instant::now() < deadline {
                wrk(work, port, &tokens, connections, settings.warmup_seconds);
            }
        }
    }
    let cpu_before = proxy.as_ref().map(Pinned::cpu_us);
    let line = wrk(work, port, &tokens, connections, settings.seconds);
    let cpu_after = proxy.as_ref().map(Pinned::cpu_us);
    let requests = result_field(&line, "requests");
    let failures = result_field(&line, "non2xx") + result_field(&line, "socket_errors");
    assert_eq!(failures, 0, "{}: {failures} failed requests: {line}", scenario.name);
    let rss_kib = proxy.as_ref().map(Pinned::rss_kib);
    if let Some(p) = proxy.as_mut() {
        p.assert_running();
    }
    Sample {
        rps: requests as f64 * 1e6 / result_field(&line, "duration_us") as f64,
        p50_us: result_field(&line, "p50_us"),
        p99_us: result_field(&line, "p99_us"),
        cpu_us_per_request: cpu_before
            .zip(cpu_after)
            .map(|(b, a)| (a.user + a.system - b.user - b.system) as f64 / requests as f64),
        system_us_per_request: cpu_before.zip(cpu_after).map(|(b, a)| (a.system - b.system) as f64 / requests as f64),
        rss_kib,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The median of the passes, field by field.
fn summarize(samples: &[Sample]) -> Sample {
    let cpu: Vec<f64> = samples.iter().filter_map(|s| s.cpu_us_per_request).collect();
    let system: Vec<f64> = samples.iter().filter_map(|s| s.system_us_per_request).collect();
    Sample {
        rps: median(samples.iter().map(|s| s.rps).collect()),
        p50_us: median(samples.iter().map(|s| s.p50_us as f64).collect()) as u64,
        p99_us: median(samples.iter().map(|s| s.p99_us as f64).collect()) as u64,
        cpu_us_per_request: (!cpu.is_empty()).then(|| median(cpu)),
        system_us_per_request: (!system.is_empty()).then(|| median(system)),
        rss_kib: samples.iter().filter_map(|s| s.rss_kib).max(),
    }
}

fn require_tools() {
    let missing: Vec<&str> = ["wrk", "nginx", "haproxy", "taskset"]
        .into_iter()
        .filter(|tool| {
            Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| !o.status.success())
        })
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}; on Debian: apt-get install -y wrk nginx-light haproxy");
}

/// Instructions, simulated cache misses and allocator calls per request of every
/// selected proxy (but `direct` and nginx, whose worker processes valgrind would not
/// follow), against `pingora-bare` and against HAProxy doing the same job.
fn run_callgrind(work: &Workdir, scenarios: &[Scenario]) {
    let requests = env_number("LOAD_CALLGRIND_REQUESTS", 4_000);
    let mut rows: Vec<(&str, callgrind::Counts)> = Vec::new();
    for scenario in scenarios.iter().filter(|s| !matches!(s.proxy, Proxy::Direct | Proxy::Nginx)) {
        let (alg, tenants) = scenario.proxy.tokens();
        let tokens = work.path(&Workdir::tokens_file(alg, tenants));
        // Every token once (the token cache then holds them all), then the measured stream.
        let warmup = tenants.token_count().min(20_000);
        eprintln!("callgrind {}: {warmup} warm-up requests, then {requests} measured ...", scenario.name);
        rows.push((scenario.name, callgrind::measure(work, scenario.name, scenario.proxy, &tokens, warmup, requests)));
    }
    let find = |name: &str| rows.iter().find(|(n, _)| *n == name).map(|(_, c)| c);
    println!("\ncallgrind, {requests} requests over 8 keep-alive connections, per request:\n");
    println!("| scenario | instructions | I1 misses | D1 misses | LL misses | allocations | instructions vs pingora-bare | allocations beyond pingora-bare |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, c) in &rows {
        let bare = find("pingora-bare");
        let ratio = bare.map_or_else(|| "-".to_owned(), |b| format!("{:.2}x", c.instructions / b.instructions));
        let beyond = bare.map_or_else(|| "-".to_owned(), |b| format!("{:+.1}", c.allocations - b.allocations));
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {ratio} | {beyond} |",
            c.instructions, c.i1_misses, c.d1_misses, c.ll_misses, c.allocations
        );
    }
    for floor in ["pingora-bare", "pingora-headers"] {
        if find(floor).is_some() && find("isogate-hs256").is_some() {
            differential(work, "isogate-hs256", floor, requests as f64);
        }
    }
}

/// Where `name`'s instructions per request beyond `floor`'s go: by crate, then the
/// functions that grew most (self cost, inlined code counted where it was inlined).
fn differential(work: &Workdir, name: &str, floor: &str, requests: f64) {
    let (ours, base) = (callgrind::self_costs(work, name, requests), callgrind::self_costs(work, floor, requests));
    let delta = |f: &String| ours.get(f).copied().unwrap_or(0.0) - base.get(f).copied().unwrap_or(0.0);
    let mut functions: Vec<(&String, f64)> = ours.keys().chain(base.keys()).map(|f| (f, delta(f))).collect();
    functions.sort_by(|a, b| a.0.cmp(b.0));
    functions.dedup_by(|a, b| a.0 == b.0);
    let mut crates: HashMap<&str, f64> = HashMap::new();
    for (f, d) in &functions {
        *crates.entry(callgrind::owner(f)).or_default() += d;
    }
    let mut crates: Vec<_> = crates.into_iter().filter(|(_, d)| d.abs() >= 200.0).collect();
    crates.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("\n{name} against {floor}, instructions per request by crate (self cost):\n");
    println!("| crate | instructions beyond {floor} |\n|---|---|");
    for (c, d) in crates {
        println!("| {c} | {d:+.0} |");
    }
    functions.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("\nthe 25 functions that grew most:\n\n| function | instructions beyond {floor} |\n|---|---|");
    for (f, d) in functions.iter().take(25) {
        let shown: String = f.chars().take(110).collect();
        println!("| `{shown}` | {d:+.0} |");
    }
}

/// A pingora proxy with no stage at all: every request goes to the prod upstream.
/// A pingora proxy with no stage of its own; with `headers`, it sets what isogate's job
/// sets upstream and downstream, as isogate sets them, with fixed values.
struct BareProxy {
    headers: bool,
}

/// The request headers isogate's HS256 job sets upstream (identity, forwarded, trace).
const JOB_REQUEST_HEADERS: [(&str, &str); 12] = [
    ("x-isogate-environment", "prod"),
    ("x-isogate-tenant", "tenant-1"),
    ("x-isogate-user", "user-1"),
    ("x-isogate-roles", "user"),
    ("x-isogate-pool", "prod"),
    ("x-request-id", "0123456789abcdef0123456789abcdef"),
    ("x-forwarded-for", "127.0.0.1"),
    ("x-forwarded-proto", "http"),
    ("x-forwarded-host", "127.0.0.1"),
    ("x-real-ip", "127.0.0.1"),
    ("forwarded", "for=127.0.0.1;proto=http;host=\"127.0.0.1\""),
    ("traceparent", "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"),
];

#[async_trait]
impl ProxyHttp for BareProxy {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = Box::new(HttpPeer::new(("127.0.0.1", PROD_PORT), false, String::new()));
        if self.headers {
            // isogate's defaults for a pool.
            peer.options.connection_timeout = Some(Duration::from_millis(1_000));
            peer.options.read_timeout = Some(Duration::from_millis(30_000));
        }
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        if self.headers {
            // As isogate does: without the client's header-name case (pingora copies
            // every added name into that second map) and with room for the added headers.
            let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
            let mut parts: http::request::Parts = std::mem::replace(upstream, placeholder).into();
            parts.headers.reserve(JOB_REQUEST_HEADERS.len());
            *upstream = RequestHeader::from(parts);
            // Static names, as isogate passes them: pingora then copies each name once.
            for (name, value) in JOB_REQUEST_HEADERS {
                upstream.insert_header(Bytes::from_static(name.as_bytes()), HeaderValue::from_static(value))?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        if self.headers {
            response.insert_header(
                Bytes::from_static(b"x-request-id"),
                HeaderValue::from_static(JOB_REQUEST_HEADERS[5].1),
            )?;
        }
        Ok(())
    }
}

/// Runs `BareProxy` with one worker thread on the proxy port, until killed.
fn run_bare_proxy(headers: bool) {
    let conf = ServerConf { threads: 1, work_stealing: false, ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, BareProxy { headers });
    service.add_tcp(&format!("127.0.0.1:{PROXY_PORT}"));
    server.add_service(service);
    server.run_forever();
}

fn main() {
    if env::args().any(|a| a == "--bare-proxy") {
        run_bare_proxy(env::args().any(|a| a == "--headers"));
    }
    let work_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/load");
    if !env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets as tests: check the templates exist.
        for file in ["upstream.nginx.conf", "proxy.nginx.conf", "haproxy.cfg", "isogate.toml", "rotate.lua"] {
            assert!(work_root.join(file).is_file(), "benches/load/{file} is missing");
        }
        callgrind::self_check();
        println!("load harness: run it with `cargo bench --bench load`");
        return;
    }
    require_tools();
    let settings = Settings::from_env();
    let scenarios = settings.selected();
    let work = Workdir::create();
    eprintln!("minting tokens ...");
    let mut minted = Vec::new();
    for tokens in scenarios.iter().map(|s| s.proxy.tokens()) {
        if !minted.contains(&tokens) {
            write_tokens(&work, tokens.0, tokens.1);
            minted.push(tokens);
        }
    }
    let upstream_conf = work.render("upstream.nginx.conf", "upstream.nginx.conf", &[]);
    let mut upstream = Pinned::spawn(
        &work,
        "upstream nginx",
        "nginx",
        &["-e", "stderr", "-c", &upstream_conf.display().to_string()],
        None,
    );
    wait_until_serving(PROD_PORT, &mut upstream);

    if env::var_os("LOAD_CALLGRIND").is_some() {
        run_callgrind(&work, &scenarios);
        return;
    }
    let mut samples: Vec<Vec<Sample>> = scenarios.iter().map(|_| Vec::new()).collect();
    for pass in 1..=settings.passes {
        for (i, scenario) in scenarios.iter().enumerate() {
            let sample = run_scenario(&work, &settings, *scenario);
            eprintln!(
                "pass {pass} {:<22} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  cpu {:>6} µs/req",
                scenario.name,
                sample.rps,
                sample.p50_us,
                sample.p99_us,
                sample.cpu_us_per_request.map_or_else(|| "-".to_owned(), |c| format!("{c:.1}")),
            );
            samples[i].push(sample);
        }
    }
    let results: Vec<(Scenario, Sample)> =
        scenarios.iter().copied().zip(samples.iter().map(|s| summarize(s))).collect();
    println!(
        "\n{} passes of {} s (+{} s warm-up), {} connections unless stated; wrk on core {LOAD_CORE}, proxy + upstream on core {PROXY_CORE}; medians",
        settings.passes, settings.seconds, settings.warmup_seconds, settings.connections
    );
    report::print_table(&results);
    report::print_targets(&results);
    if !settings.keep {
        let _ = fs::remove_dir_all(&work.dir);
    }
}
