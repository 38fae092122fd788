//! Memory per idle client connection.
//!
//! Starts the isogate binary (release build under `cargo bench`) in front of an echo
//! upstream, opens N keep-alive connections that each send one proxied request and then
//! stay idle, and reads the gateway's `VmRSS` and thread count from `/proc/PID/status`:
//! before, with the connections open, after closing them, and after closing them and
//! sending some more traffic (allocators give memory back on their own schedule, often
//! only when they are next used). Two rounds show whether memory keeps growing with churn.
//!
//! Run: `cargo bench --bench connections`. Settings (environment variables):
//! `CONNECTIONS` (2000), `THREADS` (2, the gateway's `[server] threads`), `ROUNDS` (2).
//! Under `cargo test` it does a smoke run of 20 connections that checks each is served.

#![allow(missing_docs, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{env, fs, thread};

#[path = "../src/demo/upstream.rs"]
#[allow(dead_code)]
mod upstream;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use upstream::EchoUpstream;

fn env_number(name: &str, default: usize) -> usize {
    env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

fn token() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({
        "iss": "https://hmac.bench", "aud": "isogate-bench", "sub": "user-1", "tenant": "acme",
        "env": "prod", "roles": ["user"], "iat": now, "exp": now + 3600,
    });
    let key = EncodingKey::from_secret(&fs::read(keys_dir().join("hmac.secret")).unwrap());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

fn config(dir: &Path, listen: SocketAddr, admin: SocketAddr, upstream: SocketAddr, threads: usize) -> String {
    format!(
        r#"
[server]
threads = {threads}
grace_period_seconds = 1
shutdown_timeout_seconds = 1
upgrade_socket = "{dir}/upgrade.sock"
[admin]
address = "{admin}"
[audit]
output = "{dir}/audit.jsonl"
[[listeners]]
address = "{listen}"
[[issuers]]
name = "hmac"
issuer = "https://hmac.bench"
audiences = ["isogate-bench"]
algorithms = ["HS256"]
secret_file = "{keys}/hmac.secret"
[environments.prod]
default_pool = "prod"
[pools.prod]
servers = ["{upstream}"]
[[routes]]
name = "app"
path_prefix = "/"
environment = "from_token"
"#,
        dir = dir.display(),
        keys = keys_dir().display(),
    )
}

/// `(VmRSS KiB, threads)` of a process.
fn rss_and_threads(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// Sends one keep-alive GET and reads its whole response; returns the status.
fn request(stream: &mut TcpStream, token: &str) -> u16 {
    let req = format!("GET /idle HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {token}\r\n\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before a full response");
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = resp.parse(&buf) {
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            if buf.len() >= head + len {
                return resp.code.unwrap_or(0);
            }
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Opens `n` connections, each served one request, and keeps them open.
fn open_idle(addr: SocketAddr, token: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = connect(addr);
            let status = request(&mut s, token);
            assert_eq!(status, 200, "connection {i} was answered {status}");
            s
        })
        .collect()
}

/// Some traffic on fresh connections (warms lazy state, or wakes the allocator).
fn traffic(addr: SocketAddr, token: &str, n: usize) {
    for _ in 0..n {
        let mut s = connect(addr);
        assert_eq!(request(&mut s, token), 200);
    }
}

struct Gateway {
    child: Child,
    dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn start_gateway(upstream: SocketAddr, threads: usize) -> (Gateway, SocketAddr) {
    let dir = env::temp_dir().join(format!("isogate-connections-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let path = dir.join("isogate.toml");
    fs::write(&path, config(&dir, listen, admin, upstream, threads)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_isogate"))
        .args(["run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let gateway = Gateway { child, dir };
    let start = Instant::now();
    while TcpStream::connect(listen).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "the gateway did not start");
        thread::sleep(Duration::from_millis(20));
    }
    (gateway, listen)
}

fn line(what: &str, (rss, threads): (u64, u64), base: u64) {
    let delta = rss as i64 - base as i64;
    println!("| {what:<38} | {rss:>9} | {delta:>+9} | {threads:>7} |");
}

fn main() {
    let bench = env::args().any(|a| a == "--bench");
    let connections = if bench { env_number("CONNECTIONS", 2000) } else { 20 };
    let threads = env_number("THREADS", 2);
    let rounds = if bench { env_number("ROUNDS", 2) } else { 1 };
    // Time for the allocator and the gateway to settle before each reading, and the
    // traffic between rounds; the smoke run under `cargo test` only checks service.
    let (settle, requests) = if bench { (Duration::from_secs(3), 200) } else { (Duration::ZERO, 10) };

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let upstream = rt.block_on(EchoUpstream::start("bench")).unwrap();
    let (gateway, addr) = start_gateway(upstream.addr, threads);
    let pid = gateway.child.id();
    let token = token();

    traffic(addr, &token, requests);
    thread::sleep(settle);
    let before = rss_and_threads(pid);
    println!("{connections} idle keep-alive connections, [server] threads = {threads}");
    println!("| {:<38} | {:>9} | {:>9} | {:>7} |", "gateway", "VmRSS KiB", "Δ KiB", "threads");
    println!("|{:-<40}|{:-<11}|{:-<11}|{:-<9}|", "", "", "", "");
    line("before", before, before.0);
    for round in 1..=rounds {
        let open = open_idle(addr, &token, connections);
        thread::sleep(settle);
        let with_open = rss_and_threads(pid);
        line(&format!("round {round}: {connections} connections open"), with_open, before.0);
        drop(open);
        thread::sleep(settle);
        line(&format!("round {round}: closed, {}s later", settle.as_secs()), rss_and_threads(pid), before.0);
        traffic(addr, &token, requests);
        thread::sleep(settle);
        line(&format!("round {round}: closed, then {requests} requests"), rss_and_threads(pid), before.0);
        let per_connection = (with_open.0.saturating_sub(before.0) * 1024) / connections as u64;
        println!("round {round}: {per_connection} bytes per idle connection");
    }
}
