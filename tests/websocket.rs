//! WebSockets through the gateway with a real client and server (tokio-tungstenite):
//! the token read from the header, a query parameter, a subprotocol entry or a cookie;
//! what the upstream sees of it (identity injected, token gone); refused upgrades that
//! reach no upstream; upstream refusals that open no tunnel; and the route's idle
//! timeout and lifetime, which the pool's read timeout does not cut short.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use common::jws::{claims, token};
use common::ws_upstream::{Answer, WsUpstream};
use common::*;

type Client = tokio_tungstenite::WebSocketStream<TcpStream>;
/// Request headers a case sends.
type Headers<'a> = Vec<(&'a str, String)>;

/// One upstream pool behind three routes: the token sources, and two short clocks.
fn config(ws: &WsUpstream) -> String {
    config_for(ws.addr)
}

fn config_for(upstream: std::net::SocketAddr) -> String {
    let preamble = PREAMBLE.replace("[audit]\n", "[audit]\nstream_end = true\n");
    format!(
        r#"{preamble}
{HMAC_ISSUER}
[limits]
body_read_timeout_seconds = 1

[environments.prod]
default_pool = "ws"

[environments.stage]
default_pool = "ws"

[pools.ws]
servers = ["{ws}"]
read_timeout_ms = 300

[[routes]]
name = "live"
path_prefix = "/live"
environment = "prod"
token_sources = ["authorization", {{ query = "access_token" }}, {{ subprotocol = "bearer" }}, {{ cookie = "session" }}]

[[routes]]
name = "idle"
path_prefix = "/idle"
environment = "prod"
websocket_idle_timeout_seconds = 1

[[routes]]
name = "brief"
path_prefix = "/brief"
environment = "prod"
websocket_idle_timeout_seconds = 1
websocket_max_lifetime_seconds = 2
"#,
        ws = upstream
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn acme() -> String {
    token("HS256", claims("prod", "acme"))
}

/// Opens a WebSocket through the gateway with extra request headers.
async fn open(
    gw: &Gateway,
    target: &str,
    headers: &[(&str, String)],
) -> Result<(Client, tungstenite::handshake::client::Response), tungstenite::Error> {
    let mut req = format!("ws://prod.test{target}").into_client_request().unwrap();
    for (name, value) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        req.headers_mut().append(name, value.parse().unwrap());
    }
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    tokio_tungstenite::client_async(req, stream).await
}

async fn echo(client: &mut Client, text: &str) {
    client.send(Message::text(text)).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), client.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), text);
}

/// Waits for the gateway to end the tunnel; returns how long it stayed open.
async fn until_closed(client: &mut Client, opened: Instant) -> Duration {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.next()).await.expect("the tunnel stays open") {
            None | Some(Err(_)) => return opened.elapsed(),
            Some(Ok(m)) if m.is_close() => return opened.elapsed(),
            Some(Ok(_)) => {}
        }
    }
}

#[test]
fn a_token_from_each_source_opens_an_echo_tunnel_and_stays_at_the_gateway() {
    let rt = runtime();
    let ws = rt.block_on(WsUpstream::start(Answer::Echo));
    let gw = Gateway::start(&config(&ws), &[]);
    let t = acme();
    let spoof = ("x-isogate-tenant", "globex".to_owned());
    let cases: [(&str, String, Headers); 5] = [
        ("header", "/live/chat".into(), vec![("authorization", format!("Bearer {t}")), spoof.clone()]),
        ("query", format!("/live/chat?room=7&access_token={t}"), vec![spoof.clone()]),
        ("subprotocol", "/live/chat".into(), vec![("sec-websocket-protocol", format!("bearer, {t}")), spoof.clone()]),
        (
            "subprotocol and another",
            "/live/chat".into(),
            vec![("sec-websocket-protocol", format!("bearer, {t}, chat.v1")), spoof.clone()],
        ),
        ("cookie", "/live/chat".into(), vec![("cookie", format!("theme=dark; session={t}")), spoof.clone()]),
    ];
    rt.block_on(async {
        for (i, (source, target, headers)) in cases.iter().enumerate() {
            let (mut client, resp) = open(&gw, target, headers).await.unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(resp.status(), 101, "{source}");
            let protocol = resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_owned());
            match *source {
                "subprotocol" => assert_eq!(protocol.as_deref(), Some("bearer"), "the marker is answered"),
                "subprotocol and another" => assert_eq!(protocol.as_deref(), Some("chat.v1")),
                _ => assert_eq!(protocol, None, "{source}"),
            }
            echo(&mut client, &format!("hello over {source}")).await;
            client.close(None).await.unwrap();

            let seen = &ws.handshakes()[i];
            assert_eq!(seen.header("x-isogate-tenant"), Some("acme"), "{source}: the verified tenant, not the spoof");
            assert_eq!(seen.header("x-isogate-user"), Some("user-1"), "{source}");
            assert_eq!(seen.header("x-isogate-environment"), Some("prod"), "{source}");
            let everything = format!("{} {:?}", seen.target, seen.headers);
            let leaked = everything.replace(&format!("authorization\", \"Bearer {t}"), "");
            assert!(
                !leaked.contains(&t),
                "{source}: the token reached the upstream outside Authorization: {everything}"
            );
            match *source {
                "query" => assert_eq!(seen.target, "/live/chat?room=7"),
                "cookie" => assert_eq!(seen.header("cookie"), Some("theme=dark")),
                "subprotocol" => assert_eq!(seen.header("sec-websocket-protocol"), None),
                "subprotocol and another" => assert_eq!(seen.header("sec-websocket-protocol"), Some("chat.v1")),
                _ => {}
            }
        }
    });
    let upgrades: Vec<_> = eventually("the upgrade lines", || {
        let lines: Vec<_> = gw.audit_lines().into_iter().filter(|l| l["event"].is_null()).collect();
        (lines.len() == cases.len()).then_some(lines)
    });
    for line in &upgrades {
        assert_eq!((line["path"].as_str(), line["tenant"].as_str()), (Some("/live/chat"), Some("acme")), "{line}");
    }
    let ends = eventually("the closing records", || {
        let ends: Vec<_> = gw.audit_lines().into_iter().filter(|l| l["event"] == "end").collect();
        (ends.len() == cases.len()).then_some(ends)
    });
    for end in &ends {
        assert_eq!(end["status"], 101, "{end}");
        assert!(end["bytes_in"].as_u64().unwrap() > 0 && end["bytes_out"].as_u64().unwrap() > 0, "{end}");
        assert!(end["duration_us"].as_u64().unwrap() > 0, "{end}");
    }
    let audit = std::fs::read_to_string(&gw.audit_path).unwrap();
    assert!(!audit.contains(&t), "a token reached the audit trail");
    assert!(!gw.stderr().contains(&t), "a token reached the log");
}

#[test]
fn refused_upgrades_reach_no_upstream() {
    let rt = runtime();
    let ws = rt.block_on(WsUpstream::start(Answer::Echo));
    let gw = Gateway::start(&config(&ws), &[]);
    let (a, b) = (acme(), token("HS256", claims("prod", "globex")));
    let mut forged = a.clone().into_bytes();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let stage = token("HS256", claims("stage", "acme"));
    let cases: [(&str, &str, Headers, u16, &str); 6] = [
        ("no token", "/live", vec![], 401, "token_missing"),
        ("two tokens", "/live?access_token=B", vec![("authorization", format!("Bearer {a}"))], 401, "token_conflict"),
        ("two cookies", "/live", vec![("cookie", format!("session={a}; session={b}"))], 401, "token_conflict"),
        ("forged", "/live", vec![("sec-websocket-protocol", format!("bearer, {forged}"))], 401, "bad_signature"),
        ("query off-route", "/idle?access_token=A", vec![], 401, "token_missing"),
        (
            "other environment",
            "/live",
            vec![("sec-websocket-protocol", format!("bearer, {stage}"))],
            403,
            "wrong_environment",
        ),
    ];
    rt.block_on(async {
        for (what, target, headers, status, reason) in &cases {
            let target = target.replace("=B", &format!("={b}")).replace("=A", &format!("={a}"));
            match open(&gw, &target, headers).await {
                Err(tungstenite::Error::Http(resp)) => {
                    assert_eq!(resp.status(), *status, "{what}");
                    let body: serde_json::Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
                    assert_eq!(body["error"], *reason, "{what}");
                }
                other => panic!("{what}: expected a refusal, got {:?}", other.map(|(_, r)| r.status())),
            }
        }
    });
    assert_eq!(ws.connections(), 0, "a refused upgrade reached the upstream");
    let audit = std::fs::read_to_string(&gw.audit_path).unwrap();
    assert!(!audit.contains(&a) && !audit.contains(&b), "a token reached the audit trail");
}

#[test]
fn an_upstream_that_refuses_the_upgrade_opens_no_tunnel() {
    let rt = runtime();
    let ws = rt.block_on(WsUpstream::start(Answer::Refuse(403)));
    let gw = Gateway::start(&config(&ws), &[]);
    let auth = format!("Bearer {}", acme());
    match rt.block_on(open(&gw, "/live", &[("authorization", auth)])) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected the upstream's 403, got {:?}", other.map(|(_, r)| r.status())),
    }
    assert_eq!(ws.handshakes().len(), 1, "the admitted upgrade reached the upstream once");
    let line = eventually("the audit line", || gw.audit_lines().into_iter().find(|l| l["event"].is_null()));
    assert_eq!(line["status"], 403, "{line}");
}

#[test]
fn bytes_after_an_upstream_200_are_not_tunnelled() {
    use std::io::{Read, Write};
    // An upstream that ignores the upgrade and streams an ordinary 200 response.
    let up = raw_upstream::RawUpstream::start(raw_upstream::Behaviour::Stream);
    let gw = Gateway::start(&config_for(up.addr), &[]);
    let mut client = std::net::TcpStream::connect(gw.addr).unwrap();
    let head = format!(
        "GET /live HTTP/1.1\r\nHost: prod.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {}\r\n\r\n",
        acme()
    );
    client.write_all(head.as_bytes()).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(5).any(|w| w == b"first") {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "the gateway closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    // What a client would send into a tunnel goes nowhere: there is none.
    client.write_all(b"\x81\x05tunnel").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    up.release();
    let received = up.received().concat();
    assert!(received.windows(6).all(|w| w != b"tunnel"), "{}", String::from_utf8_lossy(&received));
}

#[test]
fn an_idle_tunnel_outlives_the_pool_read_timeout_then_closes_at_the_route_idle_timeout() {
    let rt = runtime();
    let ws = rt.block_on(WsUpstream::start(Answer::Echo));
    let gw = Gateway::start(&config(&ws), &[]);
    let auth = format!("Bearer {}", acme());
    let lived = rt.block_on(async {
        let (mut client, _) = open(&gw, "/idle", &[("authorization", auth)]).await.unwrap();
        // Quiet for twice the pool's read timeout (300 ms), then still usable.
        tokio::time::sleep(Duration::from_millis(700)).await;
        echo(&mut client, "still there").await;
        let quiet_from = Instant::now();
        until_closed(&mut client, quiet_from).await
    });
    assert!(lived >= Duration::from_millis(900) && lived < Duration::from_millis(2500), "closed after {lived:?}");
    let end = eventually("the closing record", || gw.audit_lines().into_iter().find(|l| l["event"] == "end"));
    assert_eq!(end["reason"], "websocket_idle_timeout", "{end}");
    assert!(!gw.stderr().contains("Fail to proxy"), "an idle close is not an error: {}", gw.stderr());
}

#[test]
fn a_tunnel_busy_one_way_is_not_idle() {
    let rt = runtime();
    let ws = rt.block_on(WsUpstream::start(Answer::Push));
    let gw = Gateway::start(&config(&ws), &[]);
    let auth = format!("Bearer {}", acme());
    let received = rt.block_on(async {
        let (mut client, _) = open(&gw, "/idle", &[("authorization", auth)]).await.unwrap();
        // The client says nothing for 2.5 s, more than twice the idle timeout (1 s).
        let until = Instant::now() + Duration::from_millis(2500);
        let mut received = 0;
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until.into(), client.next()).await {
            assert!(!m.is_close(), "closed after {received} messages");
            received += 1;
        }
        received
    });
    assert!(received >= 8, "only {received} pushed messages arrived");
}

#[test]
fn a_busy_tunnel_closes_at_its_maximum_lifetime() {
    let rt = runtime();
    let ws = rt.block_on(WsUpstream::start(Answer::Echo));
    let gw = Gateway::start(&config(&ws), &[]);
    let auth = format!("Bearer {}", acme());
    let lived = rt.block_on(async {
        let (client, _) = open(&gw, "/brief", &[("authorization", auth)]).await.unwrap();
        let opened = Instant::now();
        let (mut tx, mut rx) = client.split();
        // A message every 300 ms keeps it from idling (the idle timeout is 1 s).
        let chatter = tokio::spawn(async move {
            while tx.send(Message::text("tick")).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let mut echoed = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.next()).await.expect("the tunnel ends") {
                Some(Ok(m)) if !m.is_close() => echoed += 1,
                _ => break,
            }
        }
        chatter.abort();
        assert!(echoed >= 4, "only {echoed} messages came back");
        opened.elapsed()
    });
    assert!(lived >= Duration::from_millis(1900) && lived < Duration::from_millis(3500), "closed after {lived:?}");
    let end = eventually("the closing record", || gw.audit_lines().into_iter().find(|l| l["event"] == "end"));
    assert_eq!(end["reason"], "websocket_max_lifetime", "{end}");
}
