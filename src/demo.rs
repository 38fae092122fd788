//! `isogate demo`: a self-contained run on loopback. It starts three echo upstreams,
//! compiles the embedded `config/demo.toml` against them with a fresh HMAC secret,
//! mints tokens, and prints ready-to-paste `curl` lines that show isolation working.

// The integration tests compile these two files as their own support code, with
// helpers the demo itself does not call.
#[allow(dead_code)]
pub(crate) mod client;
#[allow(dead_code)]
pub(crate) mod upstream;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use toml::Spanned;

use isogate::config::Source;
use isogate::snapshot::Snapshot;
use upstream::EchoUpstream;

/// The embedded demo configuration.
pub(crate) const CONFIG: &str = include_str!("../config/demo.toml");
/// The environment variable name the demo config reads its secret from.
pub(crate) const SECRET_VAR: &str = "ISOGATE_DEMO_SECRET";

/// One demonstrated request and what it must produce.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    /// What it shows.
    pub(crate) title: &'static str,
    /// `Host` header.
    pub(crate) host: &'static str,
    /// Path.
    pub(crate) path: &'static str,
    /// Bearer token.
    pub(crate) token: String,
    /// Expected status.
    pub(crate) status: u16,
    /// Expected upstream name (for 200) or refusal reason.
    pub(crate) expect: &'static str,
}

/// A prepared demo: its upstreams and the cases to show.
#[derive(Debug)]
pub(crate) struct Demo {
    /// The proxy address.
    pub(crate) gateway: SocketAddr,
    /// The admin address.
    pub(crate) admin: SocketAddr,
    /// The requests to show.
    pub(crate) cases: Vec<Case>,
    upstreams: Vec<EchoUpstream>,
    _runtime: tokio::runtime::Runtime,
}

/// Turns `127.0.0.1:0` into a free port now, so the printed lines can name it.
fn concrete(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    TcpListener::bind(addr)?.local_addr()
}

impl Demo {
    /// Starts the upstreams and compiles the demo config into the snapshot to run.
    /// `listen`/`admin` override the embedded addresses (port 0 picks a free port).
    pub(crate) fn prepare(listen: Option<SocketAddr>, admin: Option<SocketAddr>) -> Result<(Snapshot, Self), String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let names = ["stage-shared", "prod-shared", "prod-globex"];
        let upstreams = runtime
            .block_on(async { start_upstreams(names).await })
            .map_err(|e| format!("cannot start the demo upstreams: {e}"))?;

        let source = Source::embedded("config/demo.toml", CONFIG);
        let mut file = source.parse().map_err(|e| source.render(&[e]))?;
        for (name, pool) in file.pools.iter_mut() {
            if let Some(u) = upstreams.iter().find(|u| u.name == *name.get_ref()) {
                pool.servers = Spanned::new(0..0, vec![Spanned::new(0..0, u.addr.to_string())]);
            }
        }
        if let (Some(addr), Some(l)) = (listen, file.listeners.first_mut()) {
            l.address = Spanned::new(0..0, concrete(addr).map_err(|e| e.to_string())?.to_string());
        }
        if let Some(addr) = admin {
            file.admin.address = Spanned::new(0..0, concrete(addr).map_err(|e| e.to_string())?.to_string());
        }
        let secret = format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>());
        let lookup = |name: &str| (name == SECRET_VAR).then(|| secret.clone());
        let snapshot = Snapshot::compile(&file, &source, &lookup).map_err(|e| source.render(&e))?;
        let gateway = snapshot.settings.listeners[0];
        let admin = snapshot.settings.admin;
        let cases = cases(&secret).map_err(|e| format!("cannot mint demo tokens: {e}"))?;
        Ok((snapshot, Self { gateway, admin, cases, upstreams, _runtime: runtime }))
    }

    /// The text printed when the demo starts.
    pub(crate) fn banner(&self) -> String {
        let mut out = format!(
            "isogate demo\n  gateway   http://{}\n  admin     http://{}/metrics\n  upstreams {}\n\nPaste these in another terminal (tokens are valid for one hour):\n",
            self.gateway,
            self.admin,
            self.upstreams.iter().map(|u| format!("{}={}", u.name, u.addr)).collect::<Vec<_>>().join(", ")
        );
        for (i, case) in self.cases.iter().enumerate() {
            out.push_str(&format!(
                "\n# {}. {} (expect {} {})\ncurl -s -i -H 'Host: {}' -H 'Authorization: Bearer {}' http://{}{}\n",
                i + 1,
                case.title,
                case.status,
                case.expect,
                case.host,
                case.token,
                self.gateway,
                case.path
            ));
        }
        out.push_str(
            "\nPostgreSQL: the same tokens open tenant-bound database sessions through a\n\
             [[database_listeners]] entry (PGPASSWORD=<token> psql \"host=... sslmode=require\").\n\
             With PostgreSQL installed, docs/DATABASE.md sets it up; tests/database.rs runs it.\n",
        );
        out.push_str("\nAudit lines follow on stdout, one per request. Ctrl-C stops the demo.\n");
        out
    }

    /// Sends every case once the gateway answers; returns a report and whether all passed.
    pub(crate) fn check(&self, deadline: Duration) -> (String, bool) {
        let start = Instant::now();
        while std::net::TcpStream::connect(self.gateway).is_err() {
            if start.elapsed() > deadline {
                return (format!("gateway did not start listening on {} within {deadline:?}\n", self.gateway), false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut report = String::new();
        let mut all = true;
        for case in &self.cases {
            let auth = format!("Bearer {}", case.token);
            let got = client::get(self.gateway, case.host, case.path, &[("authorization", auth.as_str())]);
            let (status, what) = match &got {
                Ok(r) => {
                    let v = r.json();
                    let what = v["upstream"].as_str().or(v["error"].as_str()).unwrap_or("?").to_owned();
                    (r.status, what)
                }
                Err(e) => (0, e.to_string()),
            };
            let ok = status == case.status && what == case.expect;
            all &= ok;
            report.push_str(&format!("{} {}: got {status} {what}\n", if ok { "ok  " } else { "FAIL" }, case.title));
        }
        self.wait_for_audit(self.cases.len(), start + deadline);
        (report, all)
    }

    /// Waits (until `deadline`) for the audit writer to have written `lines` lines, so
    /// the demo's output shows them before the process ends.
    fn wait_for_audit(&self, lines: usize, deadline: Instant) {
        let written = || {
            let r = client::get(self.admin, "admin", "/metrics", &[]).ok()?;
            let text = String::from_utf8(r.body).ok()?;
            text.lines().find_map(|l| l.strip_prefix("isogate_audit_lines_written_total ")?.trim().parse::<f64>().ok())
        };
        while written().is_none_or(|n| n < lines as f64) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

async fn start_upstreams(names: [&str; 3]) -> std::io::Result<Vec<EchoUpstream>> {
    let mut out = Vec::new();
    for name in names {
        out.push(EchoUpstream::start(name).await?);
    }
    Ok(out)
}

fn mint(secret: &str, env: &str, tenant: &str, sub: &str, roles: &[&str]) -> jsonwebtoken::errors::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = json!({
        "iss": "https://idp.demo.isogate.local",
        "aud": "isogate-demo",
        "iat": now,
        "exp": now + 3600,
        "env": env,
        "tenant": tenant,
        "sub": sub,
        "roles": roles,
    });
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes()))
}

fn cases(secret: &str) -> jsonwebtoken::errors::Result<Vec<Case>> {
    let stage = mint(secret, "stage", "acme", "alice", &["tester"])?;
    let prod = mint(secret, "prod", "acme", "bob", &["user"])?;
    let globex = mint(secret, "prod", "globex", "carol", &["user"])?;
    Ok(vec![
        Case {
            title: "stage token on stage",
            host: "stage.localhost",
            path: "/orders",
            token: stage.clone(),
            status: 200,
            expect: "stage-shared",
        },
        Case {
            title: "prod token on prod",
            host: "prod.localhost",
            path: "/orders",
            token: prod,
            status: 200,
            expect: "prod-shared",
        },
        Case {
            title: "stage token refused on prod",
            host: "prod.localhost",
            path: "/orders",
            token: stage,
            status: 403,
            expect: "wrong_environment",
        },
        Case {
            title: "tenant globex lands on its own prod pool",
            host: "prod.localhost",
            path: "/orders",
            token: globex,
            status: 200,
            expect: "prod-globex",
        },
    ])
}
