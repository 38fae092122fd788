//! The in-process run: each request goes through what `proxy` does with it, in order —
//! read the request id, strip the client's identity headers, `admit`, and for an
//! admitted request `prepare_upstream` on a copy of the request — and the result is
//! checked against the model. Two worker threads share one snapshot (and its token
//! cache), as the proxy's workers do.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use isogate::admission::{self, Admitted, Connection};
use isogate::config::Source;
use isogate::headers::RequestId;
use isogate::snapshot::Snapshot;
use pingora::http::RequestHeader;

use crate::common::{jws, Scratch};
use crate::model::{self, Decision};
use crate::rng::Rng;
use crate::tokens::{Keys, TokenPool};
use crate::traffic::{Gen, Local, Req};
use crate::upstream::{self, Received};

/// Seed and size of a run, from the environment.
pub struct Settings {
    pub seed: u64,
    pub requests: u64,
    /// Replay only this request.
    pub only: Option<u64>,
}

impl Settings {
    /// `ISOGATE_PROPERTY_SEED` (else a fresh seed), the count from `count_var` (else
    /// `default`), `ISOGATE_PROPERTY_INDEX`.
    pub fn from_env(count_var: &str, default: u64) -> Self {
        let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_owned());
        let number =
            |name: &str| var(name).map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("{name}={v} is not a number")));
        let seed = number("ISOGATE_PROPERTY_SEED").unwrap_or_else(rand::random);
        Self { seed, requests: number(count_var).unwrap_or(default), only: number("ISOGATE_PROPERTY_INDEX") }
    }

    /// The request indices to run.
    pub fn indices(&self) -> std::ops::Range<u64> {
        match self.only {
            Some(i) => i..i + 1,
            None => 0..self.requests,
        }
    }
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub pools: BTreeMap<String, u64>,
    pub routes: BTreeMap<&'static str, u64>,
    pub reasons: BTreeMap<String, u64>,
    pub admin_admitted: u64,
    pub unsendable: u64,
}

/// Refusals a run of any size must have produced, or the traffic is too tame.
const MUST_SEE: &[&str] = &[
    "uri_too_long",
    "malformed_request",
    "ambiguous_path",
    "no_route",
    "token_missing",
    "token_malformed",
    "token_too_large",
    "token_header_forbidden",
    "algorithm_not_allowed",
    "wrong_issuer",
    "wrong_audience",
    "bad_signature",
    "token_expired",
    "token_not_yet_valid",
    "claim_missing",
    "claim_invalid",
    "tenant_missing",
    "wrong_environment",
    "unknown_environment",
    "issuer_not_trusted",
    "tenant_not_mapped",
    "role_not_allowed",
    "role_required",
    "admin_role_required",
    "tenant_value_unsafe",
];

impl Tally {
    pub fn total(&self) -> u64 {
        self.pools.values().sum::<u64>() + self.reasons.values().sum::<u64>() + self.unsendable
    }

    pub fn merge(&mut self, other: Tally) {
        for (k, v) in other.pools {
            *self.pools.entry(k).or_default() += v;
        }
        for (k, v) in other.routes {
            *self.routes.entry(k).or_default() += v;
        }
        for (k, v) in other.reasons {
            *self.reasons.entry(k).or_default() += v;
        }
        self.admin_admitted += other.admin_admitted;
        self.unsendable += other.unsendable;
    }

    /// Every pool was reached, admin paths were admitted, and every refusal the model
    /// knows happened.
    pub fn assert_coverage(&self) {
        for p in crate::config::POOLS {
            assert!(self.pools.get(p.name).is_some_and(|n| *n > 0), "no request reached pool {}", p.name);
        }
        for r in crate::config::ROUTES {
            assert!(self.routes.get(r.name).is_some_and(|n| *n > 0), "no request was admitted on route {}", r.name);
        }
        assert!(self.admin_admitted > 0, "no admin path was admitted");
        assert_eq!(self.unsendable, 0, "the generator made requests pingora cannot represent");
        for r in MUST_SEE {
            assert!(self.reasons.get(*r).is_some_and(|n| *n > 0), "no request was refused as {r}");
        }
    }
}

/// The compiled configuration and the token pool of one seed.
pub struct Fixture {
    pub tokens: TokenPool,
    pub partner_secret: PathBuf,
    pub _scratch: Scratch,
}

impl Fixture {
    pub fn new(seed: u64) -> Self {
        let scratch = Scratch::new("property");
        let rng = &mut Rng::new(seed);
        let keys = Keys::load(rng);
        let partner_secret = scratch.0.join("partner.secret");
        std::fs::write(&partner_secret, &keys.partner).unwrap();
        let tokens = TokenPool::mint(rng, &keys, 600);
        Self { tokens, partner_secret, _scratch: scratch }
    }
}

const LISTEN: &str = "127.0.0.1:17080";
const DEV: &str = "127.0.0.1:17081";

fn local_addr(local: Local) -> SocketAddr {
    match local {
        Local::Main => LISTEN,
        Local::Dev => DEV,
        Local::Other => "127.0.0.1:17099",
    }
    .parse()
    .unwrap()
}

fn snapshot(fixture: &Fixture) -> Snapshot {
    let text = crate::config::toml(&fixture.partner_secret, &|p| {
        let i = crate::config::POOLS.iter().position(|x| x.name == p).unwrap();
        format!("127.0.0.1:{}", 19000 + i)
    })
    .replace("@LISTEN@", LISTEN)
    .replace("@DEV@", DEV)
    .replace("@ADMIN@", "127.0.0.1:17082")
    .replace("@AUDIT@", "stdout")
    .replace("@KEYS@", &jws::keys_dir().display().to_string());
    Snapshot::from_source(&Source::embedded("property.toml", &text), &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `admit` to completion; with no JWKS issuer and no rate limit nothing in it waits.
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("admission waited on something"),
    }
}

pub fn in_process(settings: &Settings) -> Tally {
    let fixture = Fixture::new(settings.seed);
    let snap = snapshot(&fixture);
    let gen = Gen { tokens: &fixture.tokens, wire: false };
    let failed = AtomicBool::new(false);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u64);
    let workers = if settings.only.is_some() { 1 } else { cores };
    let results: Vec<(Tally, Option<(u64, String)>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (snap, gen, failed, tokens) = (&snap, &gen, &failed, &fixture.tokens);
                s.spawn(move || {
                    let mut tally = Tally::default();
                    for index in settings.indices().filter(|i| i % workers == w) {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        let req = gen.request(settings.seed, index);
                        if let Err(e) = one(snap, tokens, &req, &mut tally) {
                            failed.store(true, Ordering::Relaxed);
                            return (tally, Some((index, format!("{}\n{e}", req.describe(tokens)))));
                        }
                    }
                    (tally, None)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut tally = Tally::default();
    let mut failure: Option<(u64, String)> = None;
    for (t, f) in results {
        tally.merge(t);
        if let Some((i, msg)) = f {
            if failure.as_ref().is_none_or(|(j, _)| i < *j) {
                failure = Some((i, msg));
            }
        }
    }
    if let Some((index, msg)) = failure {
        panic!(
            "request {index} of seed {seed} broke isolation or disagreed with the model; replay with \
             ISOGATE_PROPERTY_SEED={seed} ISOGATE_PROPERTY_INDEX={index}\n{msg}",
            seed = settings.seed
        );
    }
    tally
}

/// The client's request as pingora would hand it to the proxy.
fn head(req: &Req) -> Option<RequestHeader> {
    let mut head = RequestHeader::build_no_case("GET", req.target.as_bytes(), None).ok()?;
    for (n, v) in &req.headers {
        head.append_header(n.clone(), v.as_str()).ok()?;
    }
    Some(head)
}

/// One request through the pipeline, checked.
fn one(snap: &Snapshot, tokens: &TokenPool, req: &Req, tally: &mut Tally) -> Result<(), String> {
    let Some(mut head) = head(req) else {
        tally.unsendable += 1;
        return Ok(());
    };
    let client_id = snap.headers.client_request_id(&head).map(|id| id.as_str().to_owned());
    if client_id != upstream::client_request_id(req) {
        return Err(format!("kept client request id {client_id:?}, the model {:?}", upstream::client_request_id(req)));
    }
    // The proxy generates a random id here; any id the model knows will do.
    let request_id = client_id.unwrap_or_else(|| format!("{:032x}", req.index));
    let request_id = RequestId::from_client(&http::HeaderValue::from_str(&request_id).map_err(|e| e.to_string())?)
        .ok_or("the request id is not one the gateway keeps")?;
    snap.headers.strip(&mut head);
    let conn = Connection { local: Some(local_addr(req.local)), peer: Some(req.peer), tls: req.tls };
    let outcome = now_or_never(admission::admit(snap, &head, &conn));
    let decision = model::decide(req, tokens);
    match (outcome, decision) {
        (Ok(admitted), decision) => {
            let env = snap.binder.name(admitted.env());
            let pool = snap.pools.get(admitted.placement.pool).name.to_string();
            upstream::safety(req, tokens, env, &pool).map_err(|e| format!("ISOLATION BROKEN: {e}"))?;
            let Decision::Admit(a) = decision else {
                return Err(format!("the gateway admitted it to `{pool}` in `{env}`; the model says {decision:?}"));
            };
            let route = &*snap.routes.get(admitted.route).name;
            let got = (env, pool.as_str(), route, admitted.permit.system_mode());
            let want = (a.env.name, a.pool, a.route.name, a.system_mode);
            if got != want || admitted.placement.db_schema != a.db_schema || admitted.placement.db_pool != a.db_pool {
                return Err(format!("gateway: {got:?} {:?}\nmodel: {want:?} {a:?}", admitted.placement));
            }
            check_upstream(snap, req, &head, &conn, &admitted, &a, &request_id)?;
            *tally.pools.entry(pool).or_default() += 1;
            *tally.routes.entry(a.route.name).or_default() += 1;
            tally.admin_admitted += u64::from(a.system_mode);
        }
        (Err(refused), Decision::Refuse(reason)) if refused.reject.reason() == reason => {
            *tally.reasons.entry(reason.to_owned()).or_default() += 1;
        }
        (Err(refused), decision) => {
            return Err(format!("the gateway refused it as {}; the model says {decision:?}", refused.reject.reason()));
        }
    }
    Ok(())
}

fn check_upstream(
    snap: &Snapshot,
    req: &Req,
    head: &RequestHeader,
    conn: &Connection,
    admitted: &Admitted,
    a: &model::Admit,
    request_id: &RequestId,
) -> Result<(), String> {
    let mut up = head.clone();
    admitted.prepare_upstream(snap, request_id, conn, head, &mut up).map_err(|e| format!("prepare_upstream: {e}"))?;
    let headers: Vec<(String, String)> = up
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let target = String::from_utf8_lossy(up.raw_path()).into_owned();
    upstream::check(req, a, &Received { headers: &headers, target: &target }, Some(request_id.as_str()))
}
