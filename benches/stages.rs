//! Per-stage micro benchmarks: token verification per algorithm, route and pool
//! selection with 10 and 10^6 tenants, header strip + inject, audit line encoding,
//! the whole admission pipeline without sockets, and the W3C trace context.
//!
//! Run: `cargo bench --bench stages`. Results are recorded in docs/BENCHMARKS.md.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderValue;
use isogate::admission::{admit, Connection};
use isogate::audit::{encode, AuditRecord};
use isogate::auth::{Identity, IssuerId};
use isogate::bind::{Binding, EnvId};
use isogate::config::Source;
use isogate::headers::{RequestId, Trusted};
use isogate::policy::{authorize, AccessRules, EnvironmentPolicy, Policies, RequestFacts, RoutePolicy};
use isogate::routing::path::normalize;
use isogate::routing::{select, Tenancy};
use isogate::snapshot::Snapshot;
use isogate::trace::TraceContext;
use isogate::upstream::PoolId;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pingora::http::RequestHeader;

fn keys() -> String {
    format!("{}/tests/fixtures/keys", env!("CARGO_MANIFEST_DIR"))
}

fn snapshot() -> Snapshot {
    snapshot_with_cache(10_000)
}

fn snapshot_with_cache(cache_entries: usize) -> Snapshot {
    let k = keys();
    let text = format!(
        r#"
[token]
cache_entries = {cache_entries}
[[listeners]]
address = "127.0.0.1:18080"
[[issuers]]
name = "hmac"
issuer = "https://hmac.test"
algorithms = ["HS256"]
secret_file = "{k}/hmac.secret"
[[issuers]]
name = "rsa"
issuer = "https://rsa.test"
algorithms = ["RS256"]
public_key_file = "{k}/rsa.pub.pem"
[[issuers]]
name = "ec"
issuer = "https://ec.test"
algorithms = ["ES256"]
public_key_file = "{k}/ec256.pub.pem"
[[issuers]]
name = "ed"
issuer = "https://ed.test"
algorithms = ["EdDSA"]
public_key_file = "{k}/ed25519.pub.pem"
[environments.prod]
hosts = ["prod.test"]
default_pool = "shared"
[pools.shared]
servers = ["127.0.0.1:9"]
[[routes]]
name = "admin"
path_prefix = "/admin"
[[routes]]
name = "billing"
path_prefix = "/billing"
[[routes]]
name = "api"
path_prefix = "/api"
"#
    );
    Snapshot::from_source(&Source::embedded("bench.toml", &text), &|_| None).expect("bench config compiles")
}

fn mint(alg: Algorithm, iss: &str) -> String {
    mint_numbered(alg, iss, 0)
}

/// A token that differs from the others by its `jti`.
fn mint_numbered(alg: Algorithm, iss: &str, jti: u64) -> String {
    let k = keys();
    let read = |f: &str| std::fs::read(format!("{k}/{f}")).expect("fixture key");
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(&read("hmac.secret")),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&read("rsa.key.pem")).expect("rsa"),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&read("ec256.key.pem")).expect("ec"),
        _ => EncodingKey::from_ed_pem(&read("ed25519.key.pem")).expect("ed"),
    };
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() + 86_400;
    let claims = serde_json::json!({"iss": iss, "exp": exp, "jti": jti, "env": "prod", "tenant": "acme", "sub": "u-1", "roles": ["user"]});
    jsonwebtoken::encode(&Header::new(alg), &claims, &key).expect("mint")
}

/// Token verification per algorithm, cold (cache off) and cached (the same token again).
fn verify(c: &mut Criterion) {
    let cold = snapshot_with_cache(0);
    let cached = snapshot();
    let mut g = c.benchmark_group("verify");
    for (alg, iss, name) in [
        (Algorithm::HS256, "https://hmac.test", "HS256"),
        (Algorithm::RS256, "https://rsa.test", "RS256"),
        (Algorithm::ES256, "https://ec.test", "ES256"),
        (Algorithm::EdDSA, "https://ed.test", "EdDSA"),
    ] {
        let header = format!("Bearer {}", mint(alg, iss));
        for (mode, snap) in [("cold", &cold), ("cached", &cached)] {
            g.bench_function(format!("{name}/{mode}"), |b| {
                b.iter(|| snap.auth.identify(std::iter::once(black_box(header.as_bytes()))).expect("valid"))
            });
        }
    }
    g.finish();
}

/// The token cache under churn: a 1,000-entry cache first filled by tokens used once
/// (still valid for a day), then 64 RS256 tokens in use among a stream of one-off HS256
/// tokens (three per hot request). A cache that stops caching when full verifies the
/// hot tokens every time; one that evicts keeps them. Measured: 98.4 % hot hits and
/// 23.6 µs a round with CLOCK eviction, against 0 % and 417.5 µs when a full cache
/// refused new tokens.
fn cache_churn(c: &mut Criterion) {
    use isogate::auth::CacheUse;
    let snap = snapshot_with_cache(1_000);
    let bearer = |t: String| format!("Bearer {t}");
    for i in 0..1_000 {
        let t = bearer(mint_numbered(Algorithm::HS256, "https://hmac.test", 1_000_000 + i));
        snap.auth.identify(std::iter::once(t.as_bytes())).expect("valid");
    }
    let hot: Vec<String> = (0..64).map(|i| bearer(mint_numbered(Algorithm::RS256, "https://rsa.test", i))).collect();
    let churn: Vec<String> =
        (0..30_000).map(|i| bearer(mint_numbered(Algorithm::HS256, "https://hmac.test", 2_000_000 + i))).collect();
    let (mut h, mut n) = (0, 0);
    let step = |h: &mut u64, n: &mut u64| {
        let use_of = |t: &String| snap.auth.identify(std::iter::once(black_box(t.as_bytes()))).expect("valid").1;
        for _ in 0..3 {
            use_of(&churn[usize::try_from(*n).unwrap_or(0) % churn.len()]);
            *n += 1;
        }
        let hit = use_of(&hot[usize::try_from(*n / 3).unwrap_or(0) % hot.len()]) == CacheUse::Hit;
        *h += u64::from(hit);
    };
    for _ in 0..4_000 {
        step(&mut h, &mut n);
    }
    eprintln!("cache/churn: hot-token hit ratio {:.3} after 4000 rounds", h as f64 / 4_000.0);
    c.bench_function("cache/churn_1_hot_3_new", |b| b.iter(|| step(&mut h, &mut n)));
}

fn identity() -> Identity {
    Identity {
        issuer: IssuerId(0),
        kid: None,
        environment: Some("prod".into()),
        tenant: Some("tenant-424242".into()),
        user: Some("u-1".into()),
        roles: vec!["user".into()],
        ..Default::default()
    }
    .with_header_values()
}

fn route(c: &mut Criterion) {
    let snap = snapshot();
    let id = identity();
    let environment = EnvironmentPolicy {
        allowed_roles: Some(Box::new(["user".into(), "developer".into(), "admin".into()])),
        reason_roles: Box::new(["developer".into()]),
        ..Default::default()
    };
    let route_policy = RoutePolicy { roles_any: Box::new(["user".into()]), ..Default::default() };
    let access = AccessRules {
        admin_prefix: Some("/admin".into()),
        admin_roles: Box::new(["admin".into()]),
        test_max_lifetime: Some(3600),
        reason_max_chars: 200,
    };
    let policies = Policies { environment: &environment, route: &route_policy, access: &access };
    let facts = RequestFacts { path: "/api/orders/17", reason: None, now: 1_000 };
    let binding = Binding { env: EnvId(0) };
    let permit = authorize(&id, &binding, &policies, &facts).expect("permit");
    let mut g = c.benchmark_group("route");
    g.bench_function("normalize_path", |b| b.iter(|| normalize(black_box("/api/orders/17"))));
    g.bench_function("authorize", |b| b.iter(|| authorize(black_box(&id), &binding, &policies, &facts)));
    g.bench_function("find_route", |b| {
        b.iter(|| snap.routes.find(black_box(Some("prod.test")), black_box("/api/orders/17")))
    });
    for tenants in [10usize, 1_000_000] {
        let map: HashMap<Box<str>, PoolId> =
            (0..tenants).map(|i| (format!("tenant-{i}").into_boxed_str(), PoolId((i % 7) as u16))).collect();
        let tenancy = vec![Tenancy { default_pool: Some(PoolId(0)), tenants: map, ..Default::default() }];
        g.bench_function(format!("select_pool_{tenants}_tenants"), |b| {
            b.iter(|| select(&permit, black_box(id.tenant.as_deref()), &tenancy))
        });
    }
    g.finish();
}

fn headers(c: &mut Criterion) {
    let snap = snapshot();
    let id = identity();
    let env = HeaderValue::from_static("prod");
    let pool = HeaderValue::from_static("shared");
    let mut base = RequestHeader::build("GET", b"/api/orders/17", None).expect("request");
    for (k, v) in [
        ("host", "prod.test"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("authorization", "Bearer x.y.z"),
        ("x-isogate-tenant", "evil"),
    ] {
        base.append_header(k, v).expect("header");
    }
    let request_id = RequestId::generate();
    c.bench_function("headers/strip_and_inject", |b| {
        b.iter_batched(
            || base.clone(),
            |mut req| {
                snap.headers.strip(&mut req);
                let trusted = Trusted {
                    identity: &id,
                    environment: &env,
                    pool: &pool,
                    request_id: &request_id,
                    forward_authorization: true,
                    system_mode: false,
                    db_schema: Some("company_424242"),
                    db_pool: None,
                };
                snap.headers.inject(&mut req, &trusted).expect("inject");
                req
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn audit(c: &mut Criterion) {
    let roles = vec!["user".to_owned()];
    let record = AuditRecord {
        ts: SystemTime::now(),
        request_id: "0123456789abcdef0123456789abcdef",
        environment: Some("prod"),
        tenant: Some("tenant-424242"),
        user: Some("u-1"),
        roles: &roles,
        test_account: false,
        issuer: Some("rsa"),
        kid: None,
        method: "GET",
        path: "/api/orders/17",
        route: Some("api"),
        pool: Some("shared"),
        upstream: Some("10.0.0.5:8080".parse().expect("address")),
        status: 200,
        decision: "allow",
        reason: "ok",
        report_only: None,
        access_reason: None,
        system_mode: false,
        db_schema: Some("company_424242"),
        plan: Some("free"),
        limit_mode: Some("local"),
        latency_us: 321,
        client: Some("10.1.2.3:45678".parse().expect("address")),
        user_agent: Some("bench/1.0"),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
    };
    let mut g = c.benchmark_group("audit");
    g.bench_function("encode_line", |b| b.iter(|| black_box(&record).encode()));
    // The same line through serde_json's derive: what `encode_line` replaced.
    g.bench_function("encode_line_serde", |b| b.iter(|| encode(black_box(&record))));
    g.finish();
}

/// The whole pipeline without sockets: `admit` (HS256 token from the cache) and the
/// upstream request it produces.
fn pipeline(c: &mut Criterion) {
    let snap = snapshot();
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let auth = format!("Bearer {}", mint(Algorithm::HS256, "https://hmac.test"));
    let mut req = RequestHeader::build("GET", b"/api/orders/17?page=2", None).expect("request");
    for (k, v) in [("host", "prod.test"), ("user-agent", "bench/1.0"), ("accept", "*/*"), ("authorization", &auth)] {
        req.append_header(k, v).expect("header");
    }
    let conn = Connection { local: None, peer: Some([10, 1, 2, 3].into()), tls: false };
    let admitted = rt.block_on(admit(&snap, &req, &conn)).expect("admitted");
    let request_id = RequestId::generate();
    let mut g = c.benchmark_group("pipeline");
    g.bench_function("admit", |b| b.iter(|| rt.block_on(admit(&snap, black_box(&req), &conn)).expect("admitted")));
    g.bench_function("prepare_upstream", |b| {
        b.iter_batched(
            || req.clone(),
            |mut up| admitted.prepare_upstream(&snap, &request_id, &conn, &req, &mut up),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The W3C trace context of a request: read the client's `traceparent` (or start a
/// trace) and set the gateway's on the upstream request.
fn trace(c: &mut Criterion) {
    let mut g = c.benchmark_group("trace");
    for (name, parent) in
        [("continue", Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")), ("start", None)]
    {
        let mut head = http::Request::get("/api/orders/17");
        if let Some(p) = parent {
            head = head.header("traceparent", p);
        }
        // Without pingora's header-case map, as `prepare_upstream` leaves the upstream copy.
        let req = RequestHeader::from(head.body(()).expect("request").into_parts().0);
        g.bench_function(name, |b| {
            b.iter_batched(
                || req.clone(),
                |mut up| {
                    let trace = TraceContext::of_request(black_box(&req.headers));
                    trace.apply(&mut up).expect("traceparent");
                    trace.trace_id()
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = verify, cache_churn, route, headers, audit, pipeline, trace
}
criterion_main!(benches);
