//! Repeatable per-request figures, for a machine whose timings move by ±20%: each proxy
//! runs under `valgrind --tool=callgrind --cache-sim=yes`, gets a warm-up, then exactly
//! `LOAD_CALLGRIND_REQUESTS` requests over 8 keep-alive connections, between a
//! `callgrind_control --zero` and a `--dump`. The dump holds only those requests (and
//! whatever the idle runtime did meanwhile), so instructions, simulated cache misses and
//! allocator calls divide by the request count. Instructions are counts, not seconds:
//! the same binary and stream give the same figure whatever else the machine does.
//!
//! Allocations are counted as calls into the allocator: mimalloc's `mi_malloc_aligned`,
//! `mi_zalloc_aligned` and `mi_realloc_aligned` for the Rust proxies (their global
//! allocator), glibc's `malloc`, `calloc` and `realloc` for HAProxy.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Proxy, Workdir, PROXY_PORT};

/// Allocation entry points counted per proxy.
const ALLOCATORS: [&str; 6] =
    ["mi_malloc_aligned", "mi_zalloc_aligned", "mi_realloc_aligned", "malloc", "calloc", "realloc"];

/// What one measured stream cost, per request.
pub(crate) struct Counts {
    pub(crate) instructions: f64,
    pub(crate) i1_misses: f64,
    pub(crate) d1_misses: f64,
    pub(crate) ll_misses: f64,
    pub(crate) allocations: f64,
}

/// A keep-alive client that sends requests in turn over a few connections and checks
/// every answer is a 200.
struct Client {
    connections: Vec<TcpStream>,
    requests: Vec<Vec<u8>>,
    next: usize,
}

impl Client {
    fn new(tokens: &Path, connections: usize) -> Self {
        let text = std::fs::read_to_string(tokens).expect("token file");
        let requests = text
            .lines()
            .map(|t| {
                format!("GET /api/orders HTTP/1.1\r\nHost: bench.local\r\nAuthorization: Bearer {t}\r\nX-Isogate-Tenant: spoofed\r\n\r\n")
                    .into_bytes()
            })
            .collect();
        let connections = (0..connections)
            .map(|_| {
                let s = TcpStream::connect(("127.0.0.1", PROXY_PORT)).expect("connect to the proxy");
                s.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
                s.set_nodelay(true).expect("nodelay");
                s
            })
            .collect();
        Self { connections, requests, next: 0 }
    }

    /// Sends `n` requests, one connection after the other, each waiting for its answer.
    fn send(&mut self, n: usize) {
        for i in 0..n {
            let request = &self.requests[self.next % self.requests.len()];
            self.next += 1;
            let count = self.connections.len();
            let conn = &mut self.connections[i % count];
            conn.write_all(request).expect("send");
            let status = read_response(conn);
            assert_eq!(status, 200, "request {i} was not served");
        }
    }
}

/// Reads one response with a `Content-Length` body; returns its status.
fn read_response(conn: &mut TcpStream) -> u16 {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = conn.read(&mut chunk).expect("read body");
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            return head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        }
        let n = conn.read(&mut chunk).expect("read head");
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn control(args: &[&str], pid: u32) {
    let status = Command::new("callgrind_control").args(args).arg(pid.to_string()).output().expect("callgrind_control");
    assert!(status.status.success(), "callgrind_control {args:?}: {}", String::from_utf8_lossy(&status.stderr));
}

/// Runs `proxy` under callgrind and measures `requests` requests after `warmup` ones.
/// The dump is kept as `callgrind.<name>.out` in the work directory, for
/// `callgrind_annotate` and for comparing two proxies function by function.
pub(crate) fn measure(
    work: &Workdir,
    name: &str,
    proxy: Proxy,
    tokens: &Path,
    warmup: usize,
    requests: usize,
) -> Counts {
    let out = work.path("callgrind.out");
    let dumps: Vec<_> = std::fs::read_dir(&work.dir).expect("work dir").flatten().map(|e| e.path()).collect();
    for d in dumps.iter().filter(|p| p.display().to_string().contains("callgrind.out")) {
        let _ = std::fs::remove_file(d);
    }
    let wrapper = [
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        "--cache-sim=yes".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let mut proc = super::start_proxy_wrapped(work, proxy, &wrapper).expect("a proxy to measure");
    let deadline = Instant::now() + Duration::from_secs(300);
    while super::http_get(PROXY_PORT, "/", None).is_none() {
        proc.assert_running();
        assert!(Instant::now() < deadline, "the proxy under valgrind did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut client = Client::new(tokens, 8);
    client.send(warmup);
    let pid = proc.child.id();
    control(&["--zero"], pid);
    client.send(requests);
    control(&["--dump"], pid);
    drop(client);
    drop(proc);
    let dump = std::fs::read_dir(&work.dir)
        .expect("work dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with("callgrind.out.")))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("a callgrind dump");
    let counts = parse(&std::fs::read_to_string(&dump).expect("read the dump"), requests as f64);
    std::fs::rename(&dump, work.path(&format!("callgrind.{name}.out"))).expect("keep the dump");
    counts
}

/// Totals and allocator calls of a callgrind dump, divided by `requests`.
fn parse(dump: &str, requests: f64) -> Counts {
    let mut events: Vec<String> = Vec::new();
    let mut totals: Vec<f64> = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut callee: Option<String> = None;
    let mut allocations = 0.0;
    for line in dump.lines() {
        if let Some(list) = line.strip_prefix("events: ") {
            events = list.split_whitespace().map(str::to_owned).collect();
        } else if let Some(list) = line.strip_prefix("summary: ").or_else(|| line.strip_prefix("totals: ")) {
            totals = list.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        } else if let Some(rest) = line.strip_prefix("cfn=") {
            callee = Some(function_name(rest, &mut names));
        } else if let Some(rest) = line.strip_prefix("calls=") {
            if callee.as_deref().is_some_and(|c| ALLOCATORS.contains(&c)) {
                allocations += rest.split_whitespace().next().and_then(|c| c.parse::<f64>().ok()).unwrap_or(0.0);
            }
        } else if let Some(rest) = line.strip_prefix("fn=") {
            function_name(rest, &mut names);
        }
    }
    let event = |name: &str| events.iter().position(|e| e == name).and_then(|i| totals.get(i)).copied().unwrap_or(0.0);
    Counts {
        instructions: event("Ir") / requests,
        i1_misses: event("I1mr") / requests,
        d1_misses: (event("D1mr") + event("D1mw")) / requests,
        ll_misses: (event("ILmr") + event("DLmr") + event("DLmw")) / requests,
        allocations: allocations / requests,
    }
}

/// Instructions each function executed itself (not in its callees) in a kept dump,
/// per request; inlined code counts for the function it was inlined into.
pub(crate) fn self_costs(work: &Workdir, name: &str, requests: f64) -> HashMap<String, f64> {
    let dump = std::fs::read_to_string(work.path(&format!("callgrind.{name}.out"))).expect("read a kept dump");
    let mut names: HashMap<String, String> = HashMap::new();
    let mut costs: HashMap<String, f64> = HashMap::new();
    let mut function = String::new();
    let mut call_cost_next = false;
    for line in dump.lines() {
        if let Some(rest) = line.strip_prefix("fn=") {
            function = function_name(rest, &mut names);
        } else if let Some(rest) = line.strip_prefix("cfn=") {
            function_name(rest, &mut names);
        } else if line.starts_with("calls=") {
            call_cost_next = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '*')) {
            // The line after `calls=` is the call's inclusive cost, not the caller's own.
            if !std::mem::take(&mut call_cost_next) {
                let ir = line.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                *costs.entry(function.clone()).or_default() += ir / requests;
            }
        }
    }
    costs
}

/// The crate a function belongs to, read from its name (`<isogate::proxy::Gateway as
/// pingora_proxy::ProxyHttp>::…` is isogate's); C functions by their own name.
pub(crate) fn owner(function: &str) -> &str {
    let name = function.trim_start_matches('<');
    name.split("::").next().filter(|_| name.contains("::")).unwrap_or("C and runtime")
}

/// Resolves callgrind's name compression: `(id) name` defines, `(id)` refers.
fn function_name(spec: &str, names: &mut HashMap<String, String>) -> String {
    let spec = spec.trim();
    match spec.strip_prefix('(').and_then(|s| s.split_once(')')) {
        Some((id, rest)) if !rest.trim().is_empty() => {
            names.insert(id.to_owned(), rest.trim().to_owned());
            rest.trim().to_owned()
        }
        Some((id, _)) => names.get(id).cloned().unwrap_or_default(),
        None => spec.to_owned(),
    }
}

/// Checks the dump reader on a small dump, so `cargo test` covers it without valgrind.
pub(crate) fn self_check() {
    let dump = "events: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw\nfn=(1) main\ncfn=(2) mi_malloc_aligned\ncalls=30 0\n1 5\ncfn=(2)\ncalls=10 0\n1 5\nsummary: 1000 10 1 0 20 2 0 10 1\n";
    let c = parse(dump, 10.0);
    let got = (c.instructions, c.i1_misses, c.d1_misses, c.ll_misses, c.allocations);
    assert_eq!(got, (100.0, 1.0, 3.0, 0.4, 4.0), "callgrind dump reader");
}
