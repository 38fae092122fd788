//! Shared integration-test harness: echo upstreams, the real `isogate` binary on
//! ephemeral loopback ports, a raw HTTP client, audit and metrics readers. Nothing
//! leaves the machine and nothing sleeps blindly: waits poll against a deadline.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

pub mod idp;
pub mod jws;
pub mod postgres;
pub mod raw_upstream;
pub mod redis;
pub mod tls_upstream;
pub mod ws_upstream;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The demo's HTTP client and echo upstream, shared as source (not library API).
#[path = "../../src/demo/client.rs"]
pub mod client;
#[path = "../../src/demo/upstream.rs"]
pub mod upstream;

use client::RawResponse;
use serde_json::Value;
use upstream::EchoUpstream;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `f` until it returns `Some`, or panics after `DEADLINE`.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port free right now on loopback.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `N` distinct ports free right now on loopback (held together while they are chosen,
/// so none is handed out twice).
pub fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let held: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap())
}

/// Named echo upstreams on their own runtime.
pub struct Upstreams {
    pub list: Vec<EchoUpstream>,
    _rt: tokio::runtime::Runtime,
}

impl Upstreams {
    pub fn start(names: &[&str]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let list = rt.block_on(async {
            let mut v = Vec::new();
            for n in names {
                v.push(EchoUpstream::start(n).await.unwrap());
            }
            v
        });
        Self { list, _rt: rt }
    }

    /// Starts one more upstream on `addr` (e.g. a server coming back).
    pub fn add_on(&mut self, name: &str, addr: SocketAddr) {
        let up = self._rt.block_on(EchoUpstream::start_on(name, addr)).unwrap();
        self.list.push(up);
    }

    pub fn get(&self, name: &str) -> &EchoUpstream {
        self.list.iter().find(|u| u.name == name).unwrap()
    }

    /// Requests received by every upstream together.
    pub fn total(&self) -> usize {
        self.list.iter().map(EchoUpstream::count).sum()
    }
}

/// A scratch directory under the target dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("isogate-test-{tag}-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

/// What the gateway says when a port chosen for it was not free after all: taken by
/// another test meanwhile, or handed out twice (a free port is free again once probed).
const PORT_CLASHES: [&str; 3] = ["cannot listen on", "is listed twice", "shares an address with a proxy listener"];

/// A running gateway process.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub audit_path: PathBuf,
    pub stderr_path: PathBuf,
    pub config_path: PathBuf,
    placeholders: Vec<(String, String)>,
    /// Requests sent with `get`: each writes one audit line, after its metrics.
    sent: std::sync::atomic::AtomicUsize,
    child: Option<Child>,
    _scratch: Scratch,
}

impl Gateway {
    /// Writes `config` (with `@AUDIT@`, `@KEYS@`, `@DIR@`, `@LISTEN@` and `@ADMIN@` replaced)
    /// and starts `isogate run` on it. `extra_listeners` are (placeholder, addr) pairs.
    /// A port taken by another test between choosing and binding it is chosen again.
    pub fn start(config: &str, extra_listeners: &[(&str, SocketAddr)]) -> Self {
        Self::start_logging(config, extra_listeners, "warn")
    }

    /// Like `start`, with the diagnostic log filter `rust_log` (e.g. `info`) for stderr.
    pub fn start_logging(config: &str, extra_listeners: &[(&str, SocketAddr)], rust_log: &str) -> Self {
        for _ in 0..4 {
            match Self::try_start(config, extra_listeners, rust_log) {
                Ok(gw) => return gw,
                // A port taken meanwhile, or the same free port handed out twice.
                Err(stderr) if PORT_CLASHES.iter().any(|clash| stderr.contains(clash)) => continue,
                Err(stderr) => panic!("gateway exited during start-up: {stderr}"),
            }
        }
        panic!("no free ports for the gateway after 4 attempts");
    }

    fn try_start(config: &str, extra_listeners: &[(&str, SocketAddr)], rust_log: &str) -> Result<Self, String> {
        let scratch = Scratch::new("gw");
        let addr = free_addr();
        let admin = free_addr();
        let audit_path = scratch.0.join("audit.log");
        let mut placeholders = vec![
            ("@AUDIT@".to_owned(), audit_path.display().to_string()),
            ("@KEYS@".to_owned(), jws::keys_dir().display().to_string()),
            ("@DIR@".to_owned(), scratch.0.display().to_string()),
            ("@LISTEN@".to_owned(), addr.to_string()),
            ("@ADMIN@".to_owned(), admin.to_string()),
        ];
        placeholders.extend(extra_listeners.iter().map(|(p, a)| ((*p).to_owned(), a.to_string())));
        let config_path = scratch.0.join("isogate.toml");
        std::fs::write(&config_path, fill(config, &placeholders)).unwrap();
        let stderr_path = scratch.0.join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_isogate"))
            .args(["run", "-c"])
            .arg(&config_path)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let mut gw = Self {
            addr,
            admin,
            audit_path,
            stderr_path,
            config_path,
            placeholders,
            sent: Default::default(),
            child: Some(child),
            _scratch: scratch,
        };
        let mut wait_for = vec![addr, admin];
        wait_for.extend(extra_listeners.iter().map(|(_, a)| *a));
        for a in wait_for {
            let exited = eventually(&format!("gateway listening on {a}"), || {
                if gw.child.as_mut().and_then(|c| c.try_wait().unwrap()).is_some() {
                    return Some(true);
                }
                TcpStream::connect(a).ok().map(|_| false)
            });
            if exited {
                return Err(gw.stderr());
            }
        }
        Ok(gw)
    }

    /// A GET to the proxy with the given `Host`, path and headers.
    pub fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> RawResponse {
        let r = client::get(self.addr, host, path, headers).unwrap();
        self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        r
    }

    /// A GET with a bearer token.
    pub fn get_with_token(&self, host: &str, path: &str, token: &str) -> RawResponse {
        let auth = format!("Bearer {token}");
        self.get(host, path, &[("authorization", auth.as_str())])
    }

    /// Sends raw bytes to the proxy.
    pub fn send_raw(&self, raw: &[u8]) -> std::io::Result<RawResponse> {
        client::send(self.addr, raw)
    }

    /// Every audit line written so far.
    pub fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
            .collect()
    }

    /// The audit line of `request_id`, waiting for it to be written.
    pub fn audit_for(&self, request_id: &str) -> Value {
        eventually(&format!("audit line for {request_id}"), || {
            self.audit_lines().into_iter().find(|l| l["request_id"] == request_id)
        })
    }

    /// The `/metrics` text, once every request sent with `get` has been recorded
    /// (the client sees a response before the gateway's logging phase runs, and the
    /// audit line goes out with the response head, before the metrics).
    pub fn metrics(&self) -> String {
        let sent = self.sent.load(std::sync::atomic::Ordering::SeqCst);
        eventually("audit lines of every sent request", || (self.audit_lines().len() >= sent).then_some(()));
        // Every request with an audit line, raw ones included, has its metrics recorded.
        let audited = self.audit_lines().iter().filter(|l| l["event"].is_null()).count();
        let sent = sent.max(audited) as f64;
        eventually("metrics of every audited request", || {
            let r = client::get(self.admin, "admin", "/metrics", &[]).unwrap();
            assert_eq!(r.status, 200);
            let text = String::from_utf8(r.body).unwrap();
            let recorded: f64 = text
                .lines()
                .filter(|l| l.starts_with("isogate_requests_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            (recorded >= sent).then_some(text)
        })
    }

    /// The value of the sample whose line starts with `prefix` (name plus labels).
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        metric_value(&self.metrics(), prefix)
    }

    /// Sends a signal (e.g. `HUP`) to the gateway.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args([&format!("-{name}"), &pid]).status().unwrap().success());
    }

    /// Rewrites the config file from a template, with the same placeholder values.
    pub fn write_config(&self, template: &str) {
        std::fs::write(&self.config_path, fill(template, &self.placeholders)).unwrap();
    }

    /// Starts a second process on the same config that takes the listeners over from
    /// this one (`isogate run --upgrade`); its stderr goes next to this one's.
    pub fn spawn_upgrade(&self) -> Child {
        let stderr = std::fs::File::create(self.config_path.with_file_name("upgrade-stderr.log")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_isogate"))
            .args(["run", "--upgrade", "-c"])
            .arg(&self.config_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_ref().unwrap();
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        self.wait_for_exit()
    }

    /// Waits for the process to exit by itself (after a signal sent earlier).
    pub fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < DEADLINE, "gateway did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn fill(template: &str, placeholders: &[(String, String)]) -> String {
    placeholders.iter().fold(template.to_owned(), |text, (p, v)| text.replace(p.as_str(), v))
}

/// Finds `prefix value` in Prometheus text and parses the value.
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(prefix).and_then(|rest| rest.trim().parse().ok()))
}

/// `[server]`, `[admin]`, `[audit]` and the main listener, with the harness placeholders.
pub const PREAMBLE: &str = r#"
[server]
threads = 2
grace_period_seconds = 1
shutdown_timeout_seconds = 1
[admin]
address = "@ADMIN@"
[audit]
output = "@AUDIT@"
[[listeners]]
address = "@LISTEN@"
"#;

/// The HMAC issuer of the fixture secret (tokens from `jws::token("HS256", ..)`).
pub const HMAC_ISSUER: &str = r#"
[[issuers]]
name = "hmac"
issuer = "https://hmac.test"
audiences = ["isogate-tests"]
algorithms = ["HS256"]
secret_file = "@KEYS@/hmac.secret"
"#;

/// The RSA issuer of the fixture key (tokens from `jws::token("RS256" | "PS256", ..)`).
pub const RSA_ISSUER: &str = r#"
[[issuers]]
name = "rsa"
issuer = "https://rsa.test"
audiences = ["isogate-tests"]
algorithms = ["RS256", "PS256"]
public_key_file = "@KEYS@/rsa.pub.pem"
"#;

/// A prod environment on `prod.test` whose one pool is `upstream`, and an `/api` route:
/// the tail of the small configurations that test one feature.
pub fn prod_api(upstream: SocketAddr) -> String {
    format!(
        r#"[environments.prod]
hosts = ["prod.test"]
default_pool = "prod-shared"
[pools.prod-shared]
servers = ["{upstream}"]
[[routes]]
name = "api"
path_prefix = "/api"
"#
    )
}

/// The config every isolation test runs with: three environments, six issuers (one per
/// fixture key family), silo and shared pools, host- and listener-bound environments.
/// Upstream addresses are filled from `ups`; `@DEV@` is the dev listener.
pub fn standard_config(ups: &Upstreams, extra: &str) -> String {
    let addr = |n: &str| ups.get(n).addr.to_string();
    format!(
        r#"
{PREAMBLE}
[[listeners]]
address = "@DEV@"
environment = "dev"

{RSA_ISSUER}
{HMAC_ISSUER}
[[issuers]]
name = "ec256"
issuer = "https://ec256.test"
audiences = ["isogate-tests"]
algorithms = ["ES256"]
public_key_file = "@KEYS@/ec256.pub.pem"

[[issuers]]
name = "ec384"
issuer = "https://ec384.test"
audiences = ["isogate-tests"]
algorithms = ["ES384"]
public_key_file = "@KEYS@/ec384.pub.pem"

[[issuers]]
name = "ed"
issuer = "https://ed.test"
audiences = ["isogate-tests"]
algorithms = ["EdDSA"]
public_key_file = "@KEYS@/ed25519.pub.pem"

[headers]
strip = ["x-tenant-id", "x-user-id"]

[environments.stage]
hosts = ["stage.test"]
default_pool = "stage-shared"

[environments.prod]
hosts = ["prod.test"]
default_pool = "prod-shared"
tenants = {{ globex = "prod-globex" }}

[environments.dev]
unmapped_tenants = "refuse"
tenants = {{ acme = "dev-pool" }}
issuers = ["hmac"]

[environments.broken]
hosts = ["broken.test"]
default_pool = "dead"

[pools.stage-shared]
servers = ["{stage}"]

[pools.prod-shared]
servers = ["{prod}"]

[pools.prod-globex]
servers = ["{globex}"]

[pools.dev-pool]
servers = ["{dev}"]

[pools.dead]
servers = ["{dead}"]
connect_timeout_ms = 500

[[routes]]
name = "by-token"
hosts = ["any.test"]
environment = "from_token"

[[routes]]
name = "private"
path_prefix = "/private"
forward_authorization = false

[[routes]]
name = "api"
path_prefix = "/api"
{extra}
"#,
        stage = addr("stage-shared"),
        prod = addr("prod-shared"),
        globex = addr("prod-globex"),
        dev = addr("dev-pool"),
        dead = dead_addr(),
    )
}

/// An address nothing listens on.
pub fn dead_addr() -> SocketAddr {
    free_addr()
}

/// The standard upstream set.
pub fn standard_upstreams() -> Upstreams {
    Upstreams::start(&["stage-shared", "prod-shared", "prod-globex", "dev-pool"])
}

/// Starts the standard gateway; returns it and the dev listener address.
pub fn standard_gateway(ups: &Upstreams) -> (Gateway, SocketAddr) {
    let dev = free_addr();
    let gw = Gateway::start(&standard_config(ups, ""), &[("@DEV@", dev)]);
    (gw, dev)
}

/// The request id the gateway answered with.
pub fn request_id(r: &RawResponse) -> String {
    r.header("x-request-id")
        .map(str::to_owned)
        .or_else(|| r.json()["request_id"].as_str().map(str::to_owned))
        .expect("response carries a request id")
}

pub fn path_of(p: &Path) -> String {
    p.display().to_string()
}

/// Percent-encodes `value` for a query string or a form body (RFC 3986 unreserved
/// characters stay as they are).
pub fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
