//! isogate against a real, certified OpenID Connect provider: `oidc-provider` from the
//! npm registry (pinned by `tests/oidc/package-lock.json`), run by `tests/oidc/provider.mjs`
//! on a loopback port. The gateway finds its keys through the provider's discovery
//! document; the tests take RFC 9068 access tokens (`typ: at+jwt`) from its token endpoint
//! by the client-credentials grant and by CIBA (which also yields an ID token), and prove
//! that real tokens are admitted with the trusted headers taken from their claims, that
//! ID tokens and tokens for another API are refused, that a key rotated at the provider
//! works on first use, and that an outage fails closed after the allowed staleness.
//!
//! Needs Node.js and `npm ci` in `tests/oidc` (`scripts/dev test` does both); the tests
//! fail, never skip, without them.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::client;
use common::*;
use serde_json::Value;

/// The API's resource indicator: the audience of the access tokens isogate accepts.
const API: &str = "https://api.isogate.test";
/// Another API the provider issues tokens for.
const OTHER_API: &str = "https://other-api.test";
/// The client that signs users in by CIBA; ID tokens name it as their audience.
const USER_CLIENT: &str = "isogate-portal";
/// The secret of every client in `provider.mjs`.
const CLIENT_SECRET: &str = "isogate-test-secret-0123456789abcdef";

// === impl Provider ===

/// `tests/oidc/provider.mjs` running under Node; stopped when dropped.
struct Provider {
    addr: SocketAddr,
    child: Child,
    commands: Option<ChildStdin>,
    replies: mpsc::Receiver<String>,
    stderr: PathBuf,
    _scratch: Scratch,
}

impl Provider {
    fn start() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed in {}: run `npm ci` there (`scripts/dev test` does)",
            dir.display()
        );
        let scratch = Scratch::new("oidc");
        let stderr = scratch.0.join("provider.stderr");
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `node` ({e}): install Node.js (`apt-get install -y nodejs npm`, as `scripts/dev test` does)")
            });
        let (send, replies) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let commands = child.stdin.take();
        let mut provider =
            Self { addr: SocketAddr::from(([127, 0, 0, 1], 0)), child, commands, replies, stderr, _scratch: scratch };
        let port = provider.reply("port ").parse().unwrap();
        provider.addr.set_port(port);
        provider
    }

    /// The next stdout line starting with `prefix`, without it (oidc-provider's own
    /// notices go to stdout too).
    fn reply(&self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.replies.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_owned();
                    }
                }
                Err(e) => panic!(
                    "the provider did not answer `{prefix}` ({e}); its stderr:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                ),
            }
        }
    }

    fn command(&mut self, command: &str, reply: &str) -> String {
        writeln!(self.commands.as_mut().unwrap(), "{command}").unwrap();
        self.reply(reply)
    }

    /// Signs with a new key from now on (the old ones stay published); returns its kid.
    fn rotate(&mut self) -> String {
        self.command("rotate", "kid ")
    }

    fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// POSTs a form to `path`, authenticated as `client` (client_secret_basic).
    fn post(&self, path: &str, client: &str, form: &[(&str, &str)]) -> Value {
        let body = form.iter().map(|(k, v)| format!("{k}={}", url_encode(v))).collect::<Vec<_>>().join("&");
        let basic = STANDARD.encode(format!("{client}:{CLIENT_SECRET}"));
        let raw = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Basic {basic}\r\n\
             content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let r = client::send(self.addr, raw.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{path} as {client}: {}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    /// An access token for `resource` by the client-credentials grant.
    fn service_token(&self, client: &str, resource: &str) -> String {
        let answer = self.post(
            "/token",
            client,
            &[("grant_type", "client_credentials"), ("resource", resource), ("scope", "api")],
        );
        answer["access_token"].as_str().unwrap().to_owned()
    }

    /// `account`'s access token for `resource` and ID token, by CIBA in poll mode (the
    /// provider approves at once).
    fn user_tokens(&self, account: &str, resource: &str) -> (String, String) {
        let form = [("scope", "openid isolation api"), ("login_hint", account), ("resource", resource)];
        let request = self.post("/backchannel", USER_CLIENT, &form);
        let id = request["auth_req_id"].as_str().unwrap();
        let grant = [("grant_type", "urn:openid:params:grant-type:ciba"), ("auth_req_id", id)];
        let tokens = self.post("/token", USER_CLIENT, &grant);
        (tokens["access_token"].as_str().unwrap().to_owned(), tokens["id_token"].as_str().unwrap().to_owned())
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        drop(self.commands.take()); // end of stdin stops it
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The decoded JOSE header of a compact JWS.
fn jws_header(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

// === the gateway in front of it ===

/// A gateway trusting `provider` through its discovery document, with extra issuer
/// settings, and the upstream behind it.
struct Fixture {
    gw: Gateway,
    ups: Upstreams,
}

impl Fixture {
    fn start(provider: &Provider, settings: &str) -> Self {
        let ups = Upstreams::start(&["prod-shared"]);
        let issuer = provider.issuer();
        let config = format!(
            r#"
{PREAMBLE}[[issuers]]
name = "oidc"
issuer = "{issuer}"
audiences = ["{API}", "{USER_CLIENT}"]
algorithms = ["RS256"]
discovery_url = "{issuer}/.well-known/openid-configuration"
{settings}
{prod_api}"#,
            prod_api = prod_api(ups.get("prod-shared").addr)
        );
        let gw = Gateway::start(&config, &[]);
        eventually("the provider's keys", || (readyz(&gw) == 200).then_some(()));
        Self { gw, ups }
    }

    /// Status and refusal reason of a request with `token`.
    fn call(&self, token: &str) -> (u16, Option<String>) {
        let r = self.gw.get_with_token("prod.test", "/api/orders", token);
        (r.status, r.json()["error"].as_str().map(str::to_owned))
    }

    fn served(&self) -> usize {
        self.ups.total()
    }
}

fn readyz(gw: &Gateway) -> u16 {
    client::get(gw.admin, "admin", "/readyz", &[]).unwrap().status
}

fn refused(reason: &str) -> (u16, Option<String>) {
    (401, Some(reason.to_owned()))
}

/// Sends `token` with forged identity headers; returns the trusted headers the
/// upstream saw.
fn trusted_headers_seen(f: &Fixture, token: &str) -> Vec<(String, String)> {
    let auth = format!("Bearer {token}");
    let r = f.gw.get(
        "prod.test",
        "/api/orders",
        &[
            ("authorization", auth.as_str()),
            ("x-isogate-tenant", "initech"),
            ("x-isogate-user", "mallory"),
            ("x-isogate-roles", "admin"),
            ("x-isogate-environment", "dev"),
        ],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = f.ups.get("prod-shared").received().pop().unwrap();
    let mut trusted: Vec<(String, String)> =
        seen.headers.into_iter().filter(|(k, _)| k.starts_with("x-isogate-")).collect();
    trusted.sort();
    trusted
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn real_access_tokens_are_admitted_and_the_upstream_sees_identity_from_their_claims() {
    let provider = Provider::start();
    let f = Fixture::start(&provider, r#"token_types = ["at+jwt"]"#);

    let service = provider.service_token("billing-service", API);
    assert_eq!(jws_header(&service)["typ"], "at+jwt", "RFC 9068 access token");
    assert_eq!(
        trusted_headers_seen(&f, &service),
        headers(&[
            ("x-isogate-environment", "prod"),
            ("x-isogate-pool", "prod-shared"),
            ("x-isogate-roles", "service,billing"),
            ("x-isogate-tenant", "acme"),
            ("x-isogate-user", "billing-service"),
        ]),
        "forged identity headers are replaced by the token's claims"
    );

    let (user, _) = provider.user_tokens("alice", API);
    assert_eq!(
        trusted_headers_seen(&f, &user),
        headers(&[
            ("x-isogate-environment", "prod"),
            ("x-isogate-pool", "prod-shared"),
            ("x-isogate-roles", "developer"),
            ("x-isogate-tenant", "globex"),
            ("x-isogate-user", "alice"),
        ])
    );
    let line = eventually("alice's audit line", || f.gw.audit_lines().into_iter().find(|l| l["user"] == "alice"));
    assert_eq!((line["issuer"].as_str(), line["tenant"].as_str()), (Some("oidc"), Some("globex")));
    assert_eq!(line["kid"], jws_header(&user)["kid"]);

    // A real token of the stage environment is no key to prod.
    let served = f.served();
    let stage = provider.service_token("stage-runner", API);
    let r = f.gw.get_with_token("prod.test", "/api/orders", &stage);
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("wrong_environment")));
    assert_eq!(f.served(), served, "the refusal reached no upstream");
}

#[test]
fn id_tokens_and_access_tokens_for_another_api_are_refused() {
    let provider = Provider::start();
    let typed = Fixture::start(&provider, r#"token_types = ["at+jwt"]"#);
    let untyped = Fixture::start(&provider, "");
    let (access, id) = provider.user_tokens("alice", API);
    assert_eq!(typed.call(&access), (200, None));

    // The ID token is signed by the same key, names an accepted audience (the client) and
    // carries the isolation claims: only its type tells it apart.
    assert_eq!(jws_header(&id)["typ"], Value::Null, "oidc-provider does not type ID tokens");
    assert_eq!(untyped.call(&id), (200, None), "without token_types an ID token passes for an access token");
    let served = typed.served();
    assert_eq!(typed.call(&id), refused("wrong_token_type"));

    // A real access token, but for another API.
    let other = provider.service_token("billing-service", OTHER_API);
    assert_eq!(jws_header(&other)["typ"], "at+jwt");
    assert_eq!(typed.call(&other), refused("wrong_audience"));
    assert_eq!(untyped.call(&other), refused("wrong_audience"));
    assert_eq!(typed.served(), served, "the refusals reached no upstream");
}

#[test]
fn a_key_rotated_at_the_provider_works_on_its_first_use() {
    let mut provider = Provider::start();
    // Default refresh intervals: only the unknown-kid refetch can bring the new key in.
    let f = Fixture::start(&provider, "unknown_kid_cooldown_seconds = 0");
    let before = provider.service_token("billing-service", API);
    assert_eq!(f.call(&before), (200, None));

    let kid = provider.rotate();
    let after = provider.service_token("billing-service", API);
    assert_eq!(jws_header(&after)["kid"], kid.as_str(), "the provider signs with the new key");
    assert_ne!(jws_header(&before)["kid"], kid.as_str());
    assert_eq!(f.call(&after), (200, None), "the new kid is admitted on its first use");
    assert_eq!(f.gw.metric(r#"isogate_jwks_unknown_kid_refetches_total{issuer="oidc"}"#), Some(1.0));
    assert_eq!(f.call(&before), (200, None), "tokens of the old key, still published, keep working");
}

#[test]
fn a_provider_outage_keeps_the_last_keys_until_max_staleness_then_fails_closed() {
    let mut provider = Provider::start();
    let f = Fixture::start(&provider, "refresh_min_seconds = 1\nrefresh_max_seconds = 1\nmax_staleness_seconds = 3");
    let token = provider.service_token("billing-service", API);
    assert_eq!(f.call(&token), (200, None));

    provider.command("down", "down");
    eventually("a failed fetch", || f.gw.metric(r#"isogate_jwks_fetches_total{issuer="oidc",result="unreachable"}"#));
    assert_eq!(f.call(&token), (200, None), "the last keys work within max staleness");
    let got = eventually("keys_unavailable", || Some(f.call(&token)).filter(|r| r.0 == 401));
    assert_eq!(got, refused("keys_unavailable"));
    assert_eq!(readyz(&f.gw), 503, "readiness reports the stale issuer");
    let served = f.served();
    assert_eq!(f.call(&token), refused("keys_unavailable"));
    assert_eq!(f.served(), served, "the refusal reached no upstream");

    provider.command("up", "up");
    eventually("recovery", || (f.call(&token).0 == 200).then_some(()));
    assert_eq!(readyz(&f.gw), 200);
}
