//! gRPC through the gateway with tonic, a gRPC client and server isogate did not write:
//! unary and server-streaming calls over h2c and over h2 (TLS) to the gateway, to an
//! h2c pool and to an h2 (TLS) pool; statuses and trailers pass through; the server sees
//! exactly the trusted identity; refusals come back as gRPC statuses and reach no server.
//!
//! Messages are UTF-8 strings with a codec of their own, so no `.proto` compiler is
//! needed; the framing, HTTP/2 and status handling are tonic's.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut};
use common::jws::{claims, token};
use common::*;
use tokio_stream::StreamExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::{NamedService, ServerStreamingService, UnaryService};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status, Streaming};

fn tls_file(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

// === the codec: one UTF-8 string per message ===

#[derive(Debug, Clone, Copy, Default)]
struct Utf8;

impl Codec for Utf8 {
    type Encode = String;
    type Decode = String;
    type Encoder = Utf8;
    type Decoder = Utf8;
    fn encoder(&mut self) -> Utf8 {
        Utf8
    }
    fn decoder(&mut self) -> Utf8 {
        Utf8
    }
}

impl Encoder for Utf8 {
    type Item = String;
    type Error = Status;
    fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }
}

impl Decoder for Utf8 {
    type Item = String;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        String::from_utf8(bytes.to_vec()).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

// === the server: test.Echo/Hello (unary), test.Echo/Count (server streaming) ===

/// Every call's request metadata, as the server saw it.
type Seen = Arc<Mutex<Vec<http::HeaderMap>>>;

#[derive(Clone, Default)]
struct Echo {
    seen: Seen,
}

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

struct Hello(Seen);

impl UnaryService<String> for Hello {
    type Response = String;
    type Future = BoxFuture<Response<String>, Status>;
    fn call(&mut self, request: Request<String>) -> Self::Future {
        self.0.lock().unwrap().push(request.metadata().clone().into_headers());
        let name = request.into_inner();
        Box::pin(async move {
            match name.as_str() {
                // An application error: its status must reach the client unchanged.
                "nobody" => Err(Status::not_found("no such person")),
                _ => Ok(Response::new(format!("hello {name}"))),
            }
        })
    }
}

struct Count(Seen);

impl ServerStreamingService<String> for Count {
    type Response = String;
    type ResponseStream = tokio_stream::Iter<std::vec::IntoIter<Result<String, Status>>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;
    fn call(&mut self, request: Request<String>) -> Self::Future {
        self.0.lock().unwrap().push(request.metadata().clone().into_headers());
        let n: usize = request.into_inner().parse().unwrap_or(0);
        // Three messages, then a status in the trailers after them.
        let mut items: Vec<_> = (1..=n).map(|i| Ok(i.to_string())).collect();
        items.push(Err(Status::aborted("counted")));
        Box::pin(async move { Ok(Response::new(tokio_stream::iter(items))) })
    }
}

impl Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let seen = Arc::clone(&self.seen);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Utf8);
            Ok(match req.uri().path() {
                "/test.Echo/Hello" => grpc.unary(Hello(seen), req).await,
                "/test.Echo/Count" => grpc.server_streaming(Count(seen), req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// A tonic server on its own runtime: h2c, or TLS with the `upstream.test` certificate.
struct GrpcServer {
    addr: SocketAddr,
    seen: Seen,
    /// TCP connections accepted.
    connections: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl GrpcServer {
    fn start(tls: bool) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = Echo::default();
        let seen = Arc::clone(&echo.seen);
        let mut builder = Server::builder();
        if tls {
            let identity = Identity::from_pem(
                std::fs::read(tls_file("upstream.pem")).unwrap(),
                std::fs::read(tls_file("upstream.key")).unwrap(),
            );
            builder = builder.tls_config(ServerTlsConfig::new().identity(identity)).unwrap();
        }
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |conn| {
            accepted.fetch_add(1, Ordering::SeqCst);
            conn
        });
        rt.spawn(builder.add_service(echo).serve_with_incoming(incoming));
        Self { addr, seen, connections, _rt: rt }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last_call(&self) -> http::HeaderMap {
        self.seen.lock().unwrap().last().cloned().expect("the server got the call")
    }
}

// === the gateway ===

fn config(h2c_pool: SocketAddr, h2_pool: SocketAddr) -> String {
    let ca = tls_file("ca.pem");
    format!(
        r#"
{PREAMBLE}[[listeners]]
address = "@H2C@"
h2c = true
environment = "prod"
[[listeners]]
address = "@TLS@"
tls = true
http2 = true
environment = "prod"
[[listeners]]
address = "@SECURE@"
h2c = true
environment = "secure"
[[listeners]]
address = "@DOWN@"
h2c = true
environment = "down"
[[certificates]]
cert_file = "{a_pem}"
key_file = "{a_key}"
server_names = ["a.test"]
{HMAC_ISSUER}[headers]
strip = ["x-tenant-id"]
[plans.tight]
rate_per_second = 1
burst = 1
[environments.prod]
default_pool = "grpc-h2c"
tenant_plans = {{ tiny = "tight" }}
[environments.secure]
default_pool = "grpc-h2"
[environments.down]
default_pool = "dead"
[pools.grpc-h2c]
servers = ["{h2c_pool}"]
protocol = "h2c"
[pools.grpc-h2]
servers = ["{h2_pool}"]
protocol = "h2"
tls = true
sni = "upstream.test"
ca_file = "{ca}"
[pools.dead]
servers = ["{dead}"]
protocol = "h2c"
[[routes]]
name = "admin-rpc"
path_prefix = "/test.Admin"
roles_any = ["admin"]
[[routes]]
name = "rpc"
path_prefix = "/"
"#,
        a_pem = tls_file("a.pem"),
        a_key = tls_file("a.key"),
        dead = dead_addr(),
    )
}

struct Setup {
    gw: Gateway,
    plain: GrpcServer,
    secure: GrpcServer,
    h2c: SocketAddr,
    tls: SocketAddr,
    secure_listener: SocketAddr,
    down: SocketAddr,
    rt: tokio::runtime::Runtime,
}

fn setup() -> Setup {
    let (plain, secure) = (GrpcServer::start(false), GrpcServer::start(true));
    let [h2c, tls, secure_listener, down] = free_addrs();
    let listeners = [("@H2C@", h2c), ("@TLS@", tls), ("@SECURE@", secure_listener), ("@DOWN@", down)];
    let gw = Gateway::start(&config(plain.addr, secure.addr), &listeners);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    Setup { gw, plain, secure, h2c, tls, secure_listener, down, rt }
}

impl Setup {
    /// A channel to a gateway listener: h2c, or TLS trusting the test CA for `a.test`.
    fn channel(&self, addr: SocketAddr, tls: bool) -> Channel {
        let scheme = if tls { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).unwrap();
        if tls {
            let ca = Certificate::from_pem(std::fs::read(tls_file("ca.pem")).unwrap());
            endpoint = endpoint.tls_config(ClientTlsConfig::new().ca_certificate(ca).domain_name("a.test")).unwrap();
        }
        self.rt.block_on(endpoint.connect()).unwrap()
    }
}

/// A request with the caller's token (if any) and client-sent copies of identity headers.
fn request(message: &str, bearer: Option<&str>) -> Request<String> {
    let mut req = Request::new(message.to_owned());
    let md = req.metadata_mut();
    if let Some(t) = bearer {
        md.insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    md.insert("x-isogate-tenant", "globex".parse().unwrap());
    md.insert("x-isogate-roles", "admin".parse().unwrap());
    md.insert("x-tenant-id", "globex".parse().unwrap());
    req
}

fn unary(s: &Setup, channel: &Channel, path: &'static str, req: Request<String>) -> Result<String, Status> {
    let mut client = tonic::client::Grpc::new(channel.clone());
    s.rt.block_on(async {
        client.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static(path);
        client.unary(req, path, Utf8).await.map(Response::into_inner)
    })
}

/// The messages of a server-streaming call, and the status that ended it.
fn count(s: &Setup, channel: &Channel, req: Request<String>) -> (Vec<String>, Status) {
    let mut client = tonic::client::Grpc::new(channel.clone());
    s.rt.block_on(async {
        client.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/test.Echo/Count");
        let mut stream: Streaming<String> = match client.server_streaming(req, path, Utf8).await {
            Ok(r) => r.into_inner(),
            Err(status) => return (Vec::new(), status),
        };
        let mut got = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(m)) => got.push(m),
                Ok(None) => return (got, Status::ok("")),
                Err(status) => return (got, status),
            }
        }
    })
}

fn prod_token(tenant: &str) -> String {
    token("HS256", claims("prod", tenant))
}

/// The server saw the token's identity, and none of the client's copies.
fn assert_trusted_only(seen: &http::HeaderMap, env: &str) {
    let all = |name: &str| seen.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(all("x-isogate-tenant"), ["acme"]);
    assert_eq!(all("x-isogate-roles"), ["user"]);
    assert_eq!(all("x-isogate-user"), ["user-1"]);
    assert_eq!(all("x-isogate-environment"), [env]);
    assert!(seen.get("x-tenant-id").is_none());
    assert_eq!(seen.get("te").map(|v| v.to_str().unwrap()), Some("trailers"));
    assert_eq!(all("traceparent").len(), 1);
}

#[test]
fn unary_and_streaming_calls_over_h2c_reach_an_h2c_pool_with_trusted_headers_only() {
    let s = setup();
    let channel = s.channel(s.h2c, false);
    let t = prod_token("acme");
    assert_eq!(unary(&s, &channel, "/test.Echo/Hello", request("world", Some(&t))).unwrap(), "hello world");
    assert_trusted_only(&s.plain.last_call(), "prod");
    // An application status travels back unchanged.
    let err = unary(&s, &channel, "/test.Echo/Hello", request("nobody", Some(&t))).unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "no such person"));
    // Streamed messages arrive, then the status from the trailers.
    let (got, end) = count(&s, &channel, request("3", Some(&t)));
    assert_eq!(got, ["1", "2", "3"]);
    assert_eq!((end.code(), end.message()), (Code::Aborted, "counted"));
    assert_trusted_only(&s.plain.last_call(), "prod");
    assert_eq!(s.secure.calls(), 0);
    assert_eq!(s.plain.connections(), 1, "one h2c connection carried every call");
}

#[test]
fn unary_and_streaming_calls_over_tls_reach_an_h2c_pool() {
    let s = setup();
    let channel = s.channel(s.tls, true);
    let t = prod_token("acme");
    assert_eq!(unary(&s, &channel, "/test.Echo/Hello", request("tls", Some(&t))).unwrap(), "hello tls");
    let (got, end) = count(&s, &channel, request("2", Some(&t)));
    assert_eq!((got.len(), end.code()), (2, Code::Aborted));
    assert_trusted_only(&s.plain.last_call(), "prod");
}

#[test]
fn calls_reach_an_h2_pool_over_tls_on_reused_connections() {
    let s = setup();
    let channel = s.channel(s.secure_listener, false);
    let t = token("HS256", claims("secure", "acme"));
    for i in 0..5 {
        let reply = unary(&s, &channel, "/test.Echo/Hello", request(&i.to_string(), Some(&t))).unwrap();
        assert_eq!(reply, format!("hello {i}"));
    }
    let (got, end) = count(&s, &channel, request("3", Some(&t)));
    assert_eq!((got, end.code()), (vec!["1".to_owned(), "2".to_owned(), "3".to_owned()], Code::Aborted));
    assert_trusted_only(&s.secure.last_call(), "secure");
    assert_eq!((s.secure.calls(), s.plain.calls()), (6, 0));
    assert_eq!(s.secure.connections(), 1, "one TLS connection carried every call");
}

#[test]
fn refusals_are_grpc_statuses_and_reach_no_server() {
    let s = setup();
    let channel = s.channel(s.h2c, false);
    let status = |path, req| unary(&s, &channel, path, req).unwrap_err();

    let missing = status("/test.Echo/Hello", request("x", None));
    assert_eq!((missing.code(), missing.message()), (Code::Unauthenticated, "token_missing"));
    let bad = status("/test.Echo/Hello", request("x", Some(&format!("{}x", prod_token("acme")))));
    assert_eq!(bad.code(), Code::Unauthenticated);
    let role = status("/test.Admin/Hello", request("x", Some(&prod_token("acme"))));
    assert_eq!((role.code(), role.message()), (Code::PermissionDenied, "role_required"));
    let env = status("/test.Echo/Hello", request("x", Some(&token("HS256", claims("secure", "acme")))));
    assert_eq!((env.code(), env.message()), (Code::PermissionDenied, "wrong_environment"));
    // Plan `tight` admits one call, then refuses.
    let tiny = prod_token("tiny");
    assert!(unary(&s, &channel, "/test.Echo/Hello", request("x", Some(&tiny))).is_ok());
    let limited = status("/test.Echo/Hello", request("x", Some(&tiny)));
    assert_eq!((limited.code(), limited.message()), (Code::ResourceExhausted, "rate_limited"));
    assert_eq!(s.plain.calls(), 1, "only the admitted call reached the server");
    // A streaming call is refused the same way.
    let (got, end) = count(&s, &channel, request("3", None));
    assert_eq!((got.len(), end.code()), (0, Code::Unauthenticated));
    // The server is down: UNAVAILABLE, which a gRPC client may retry.
    let down = s.channel(s.down, false);
    let t = token("HS256", claims("down", "acme"));
    let gone = unary(&s, &down, "/test.Echo/Hello", request("x", Some(&t))).unwrap_err();
    assert_eq!((gone.code(), gone.message()), (Code::Unavailable, "upstream_unreachable"));
    assert_eq!(s.plain.calls() + s.secure.calls(), 1);

    // Each refusal is audited as a denial with its reason (a line is written once the
    // answer is out, so the last may still be on its way).
    let denied = |reason: &str| s.gw.audit_lines().iter().any(|l| l["decision"] == "deny" && l["reason"] == reason);
    for reason in ["token_missing", "role_required", "wrong_environment", "rate_limited", "upstream_unreachable"] {
        eventually(&format!("the audit line of {reason}"), || denied(reason).then_some(()));
    }
}

#[test]
fn health_checks_of_an_h2c_pool_speak_http2() {
    // tonic serves only HTTP/2, so an HTTP/1 check would find the server down.
    let server = GrpcServer::start(false);
    let config = format!(
        r#"
{PREAMBLE}[[listeners]]
address = "@H2C@"
h2c = true
environment = "prod"
{HMAC_ISSUER}[environments.prod]
default_pool = "checked"
[pools.checked]
servers = ["{}"]
protocol = "h2c"
health_check_path = "/healthz"
health_check_interval_ms = 100
healthy_after = 1
unhealthy_after = 1
[[routes]]
name = "rpc"
path_prefix = "/"
"#,
        server.addr
    );
    let h2c = free_addr();
    let gw = Gateway::start(&config, &[("@H2C@", h2c)]);
    // Each check is a connection of its own; after several, the server is still usable.
    eventually("three health checks", || (server.connections() >= 3).then_some(()));
    let healthy = format!("isogate_upstream_healthy{{pool=\"checked\",server=\"{}\"}}", server.addr);
    assert_eq!(gw.metric(&healthy), Some(1.0));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let channel = rt.block_on(Endpoint::from_shared(format!("http://{h2c}")).unwrap().connect()).unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    let reply = rt.block_on(async {
        client.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/test.Echo/Hello");
        client.unary(request("checked", Some(&prod_token("acme"))), path, Utf8).await
    });
    assert_eq!(reply.unwrap().into_inner(), "hello checked");
}
