//! Client connections over real sockets: the cap on open connections (past it a 503
//! `too_many_connections`, and service again once some close), the idle keep-alive
//! timeout, TLS and HTTP/2 through the cap, and a SIGTERM that ends the process as soon
//! as no request is in flight, with every audit line written.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::RawResponse;
use common::jws::{claims, token};
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// One environment and pool in front of `upstream`; `server` lines are added to
/// `[server]`, `listeners` after the main listener.
fn config(upstream: SocketAddr, server: &str, listeners: &str) -> String {
    let d = tls_dir();
    let preamble = PREAMBLE.replace("[server]\n", &format!("[server]\n{server}\n"));
    format!(
        r#"
{preamble}{listeners}
[[certificates]]
cert_file = "{d}/a.pem"
key_file = "{d}/a.key"
server_names = ["a.test"]
{HMAC_ISSUER}[environments.prod]
hosts = ["prod.test", "a.test"]
default_pool = "app"
[pools.app]
servers = ["{upstream}"]
[[routes]]
name = "api"
path_prefix = "/api"
"#
    )
}

fn tls_dir() -> String {
    format!("{}/tests/fixtures/tls", env!("CARGO_MANIFEST_DIR"))
}

fn bearer() -> String {
    format!("Bearer {}", token("HS256", claims("prod", "acme")))
}

/// Reads one response (head and `content-length` body) from a kept-alive connection.
fn read_response(stream: &mut impl Read) -> std::io::Result<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = resp.parse(&buf).unwrap() {
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            let len = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
            if buf.len() >= head + len {
                let body = buf[head..head + len].to_vec();
                return Ok(RawResponse { status: resp.code.unwrap(), headers, body });
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                String::from_utf8_lossy(&buf).into_owned(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends a kept-alive GET `/api` on `stream` and reads the response.
fn get(stream: &mut (impl Read + Write), host: &str) -> std::io::Result<RawResponse> {
    write!(stream, "GET /api HTTP/1.1\r\nhost: {host}\r\nauthorization: {}\r\n\r\n", bearer())?;
    read_response(stream)
}

/// A new connection that was served one request and is kept open.
fn served_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let r = get(&mut stream, "prod.test").unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    stream
}

/// Reads until the peer closes; how long that took.
fn time_to_close(stream: &mut impl Read) -> Duration {
    let start = Instant::now();
    let mut sink = [0u8; 512];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return start.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }
}

fn assert_refused(r: &RawResponse) {
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    let body = r.json();
    assert_eq!(body["error"], "too_many_connections", "{body}");
    assert_eq!(body["status"], 503);
}

#[test]
fn connections_past_the_cap_are_refused_and_served_again_once_some_close() {
    let ups = Upstreams::start(&["app"]);
    let gw = Gateway::start(&config(ups.get("app").addr, "max_connections = 20", ""), &[]);
    let mut open: Vec<TcpStream> = (0..20).map(|_| served_connection(gw.addr)).collect();
    assert_eq!(gw.metric("isogate_connections_open "), Some(20.0));

    let mut over = TcpStream::connect(gw.addr).unwrap();
    over.set_read_timeout(Some(DEADLINE)).unwrap();
    let r = get(&mut over, "prod.test").unwrap();
    assert_refused(&r);
    assert!(time_to_close(&mut over) < DEADLINE, "the refused connection is closed");
    assert_eq!(gw.metric("isogate_connections_refused_total "), Some(1.0));
    assert_eq!(ups.get("app").count(), 20, "the refused request never reached the upstream");

    // The open connections are still served.
    assert_eq!(get(&mut open[0], "prod.test").unwrap().status, 200);
    open.truncate(15);
    let fresh = eventually("a connection served after five closed", || {
        let mut s = TcpStream::connect(gw.addr).ok()?;
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        (get(&mut s, "prod.test").ok()?.status == 200).then_some(s)
    });
    let more: Vec<TcpStream> = (0..4).map(|_| served_connection(gw.addr)).collect();
    assert_eq!(gw.metric("isogate_connections_open "), Some(20.0));
    drop((fresh, more, open));
    eventually("every connection counted closed", || {
        (gw.metric("isogate_connections_open ") == Some(0.0)).then_some(())
    });
}

#[test]
fn an_idle_keepalive_connection_is_closed_after_the_timeout() {
    let ups = Upstreams::start(&["app"]);
    let gw = Gateway::start(&config(ups.get("app").addr, "keepalive_timeout_seconds = 1", ""), &[]);
    let mut stream = served_connection(gw.addr);
    // Still usable right away: keep-alive works.
    assert_eq!(get(&mut stream, "prod.test").unwrap().status, 200);
    let idle = time_to_close(&mut stream);
    assert!(idle >= Duration::from_millis(900) && idle < Duration::from_secs(5), "closed after {idle:?}");
    eventually("the closed connection is no longer counted", || {
        (gw.metric("isogate_connections_open ") == Some(0.0)).then_some(())
    });
}

#[test]
fn kept_alive_connections_serve_split_heads_and_bodies() {
    let ups = Upstreams::start(&["app"]);
    let gw = Gateway::start(&config(ups.get("app").addr, "", ""), &[]);
    let mut stream = served_connection(gw.addr);
    // A head in two segments.
    stream.set_nodelay(true).unwrap();
    stream.write_all(b"GET /api/split HTTP/1.1\r\nhost: prod").unwrap();
    write!(stream, ".test\r\nauthorization: {}\r\n\r\n", bearer()).unwrap();
    let r = read_response(&mut stream).unwrap();
    assert_eq!((r.status, r.json()["path"].as_str()), (200, Some("/api/split")));
    // A request with a body, then one more on the same connection.
    let body = "x".repeat(10_000);
    write!(
        stream,
        "POST /api/body HTTP/1.1\r\nhost: prod.test\r\nauthorization: {}\r\ncontent-length: {}\r\n\r\n{body}",
        bearer(),
        body.len()
    )
    .unwrap();
    assert_eq!(read_response(&mut stream).unwrap().status, 200);
    assert_eq!(get(&mut stream, "prod.test").unwrap().status, 200);
    let paths: Vec<String> = ups.get("app").received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/api", "/api/split", "/api/body", "/api"]);
}

fn tls_client_config(alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(format!("{}/ca.pem", tls_dir())).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_connect(addr: SocketAddr) -> TlsStream {
    let conn =
        rustls::ClientConnection::new(tls_client_config(b"http/1.1"), ServerName::try_from("a.test").unwrap()).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// One HTTP/2 request over TLS; returns its status and how long the server then took to
/// close the idle connection.
async fn h2_request_then_idle(addr: SocketAddr) -> (u16, Duration) {
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(b"h2"));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector.connect(ServerName::try_from("a.test").unwrap(), tcp).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get("https://a.test/api").header("authorization", bearer()).body(()).unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    let idle = Instant::now();
    tokio::time::timeout(DEADLINE, connection).await.expect("the idle HTTP/2 connection is closed").unwrap().ok();
    drop(client);
    (status, idle.elapsed())
}

#[test]
fn tls_and_http2_connections_are_counted_capped_and_time_out() {
    let ups = Upstreams::start(&["app"]);
    let tls = free_addr();
    let listener = "[[listeners]]\naddress = \"@TLS@\"\ntls = true\nhttp2 = true\n";
    let server = "max_connections = 2\nkeepalive_timeout_seconds = 1";
    let gw = Gateway::start(&config(ups.get("app").addr, server, listener), &[("@TLS@", tls)]);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, idle) = rt.block_on(h2_request_then_idle(tls));
    assert_eq!(status, 200, "an HTTP/2 request is served");
    assert!(idle >= Duration::from_millis(900) && idle < Duration::from_secs(5), "closed after {idle:?}");
    eventually("the HTTP/2 connection is no longer counted", || {
        (gw.metric("isogate_connections_open ") == Some(0.0)).then_some(())
    });

    let mut first = tls_connect(tls);
    assert_eq!(get(&mut first, "a.test").unwrap().status, 200);
    let mut second = tls_connect(tls);
    assert_eq!(get(&mut second, "a.test").unwrap().status, 200);
    let mut third = tls_connect(tls);
    assert_refused(&get(&mut third, "a.test").unwrap());
    assert_eq!(gw.metric("isogate_connections_refused_total "), Some(1.0));
}

/// An upstream that answers 200 `slow` `delay` after a request arrives; counts arrivals.
fn slow_upstream(rt: &tokio::runtime::Runtime, delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let (addr, arrived) = (listener.local_addr().unwrap(), Arc::new(AtomicUsize::new(0)));
    let counter = Arc::clone(&arrived);
    rt.spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let _ =
                    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow").await;
            });
        }
    });
    (addr, arrived)
}

/// A gateway with a grace period of 30 seconds.
fn start_for_stop(upstream: SocketAddr) -> Gateway {
    let text = config(upstream, "", "").replace("grace_period_seconds = 1", "grace_period_seconds = 30");
    assert!(text.contains("grace_period_seconds = 30"));
    Gateway::start(&text, &[])
}

#[test]
fn sigterm_with_only_idle_connections_exits_at_once_with_the_audit_written() {
    let ups = Upstreams::start(&["app"]);
    let mut gw = start_for_stop(ups.get("app").addr);
    let mut kept = served_connection(gw.addr);
    assert_eq!(get(&mut kept, "prod.test").unwrap().status, 200);
    let _other = served_connection(gw.addr);

    let start = Instant::now();
    let status = gw.terminate();
    let took = start.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(3), "a stop with only idle connections took {took:?}");
    assert_eq!(gw.audit_lines().len(), 3, "every request has its audit line");
    assert!(time_to_close(&mut kept) < DEADLINE, "the idle connection is closed");
}

#[test]
fn sigterm_lets_a_slow_request_finish_then_exits() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (upstream, arrived) = slow_upstream(&rt, Duration::from_secs(2));
    let mut gw = start_for_stop(upstream);
    let addr = gw.addr;
    let slow = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        get(&mut stream, "prod.test")
    });
    eventually("the request reaches the upstream", || (arrived.load(Ordering::SeqCst) == 1).then_some(()));

    let start = Instant::now();
    let status = gw.terminate();
    let took = start.elapsed();
    let answer = slow.join().unwrap().expect("the in-flight request is answered");
    assert_eq!((answer.status, answer.body.as_slice()), (200, &b"slow"[..]));
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "the stop took {took:?} (grace period 30 s)");
    let lines = gw.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], 200, "{}", lines[0]);
}
