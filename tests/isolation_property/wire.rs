//! The socket run: a sample of the same traffic sent as raw HTTP/1.1 to the real
//! binary, with one recording echo upstream per pool. Each request carries an
//! `x-probe` header with its index, so what every upstream recorded joins back to what
//! was sent. A refused request must have reached no upstream at all; an admitted one
//! exactly its pool, once, with exactly the model's headers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::common::client::{self, RawResponse};

use crate::common::{free_addr, Gateway, Upstreams};
use crate::model::{self, Decision};
use crate::run::{Fixture, Settings, Tally};
use crate::tokens::TokenPool;
use crate::traffic::{Gen, Local, Req};
use crate::upstream::{self, Received};

const CLIENTS: u64 = 4;

fn raw(req: &Req) -> Vec<u8> {
    let mut s = format!("GET {} HTTP/1.1\r\n", req.target);
    for (n, v) in &req.headers {
        let _ = write!(s, "{n}: {v}\r\n");
    }
    s.push_str("connection: close\r\n\r\n");
    s.into_bytes()
}

/// How a request was answered.
enum Answer {
    /// By the upstream the model names, or with the refusal the model names.
    AsModelled,
    /// By pingora's HTTP layer with a bare 400, before the gateway saw it; the model
    /// must refuse it, as malformed, or for another reason on a head pingora refuses
    /// first (see `refused_by_pingora`).
    HttpLayer,
}

/// Whether pingora refuses the head before the gateway sees it, whatever else is wrong
/// with it: several `Host` headers, or userinfo in one.
fn refused_by_pingora(req: &Req) -> bool {
    let hosts = req.values("host");
    hosts.len() > 1 || hosts.iter().any(|h| h.contains('@'))
}

/// What the gateway answered, and what the model expected of it.
fn answer(req: &Req, decision: &Decision<'_>, r: &RawResponse) -> Result<Answer, String> {
    let body = r.json();
    let bare_400 = r.status == 400 && body.is_null();
    match decision {
        Decision::Admit(a) if r.status == 200 && body["upstream"] == a.pool => Ok(Answer::AsModelled),
        Decision::Refuse(reason) if body["error"] == *reason => Ok(Answer::AsModelled),
        Decision::Refuse("malformed_request" | "ambiguous_path") if bare_400 => Ok(Answer::HttpLayer),
        Decision::Refuse(_) if bare_400 && refused_by_pingora(req) => Ok(Answer::HttpLayer),
        _ => Err(format!("answered {} {}", r.status, String::from_utf8_lossy(&r.body))),
    }
}

/// The sent requests of one run, for joining and reporting.
struct Sent<'a> {
    seed: u64,
    tokens: &'a TokenPool,
    by_index: HashMap<u64, &'a Req>,
}

impl Sent<'_> {
    fn fail(&self, index: u64, msg: &str) -> ! {
        panic!(
            "request {index} of seed {seed} over sockets: {msg}; replay with ISOGATE_PROPERTY_SEED={seed} \
             ISOGATE_PROPERTY_INDEX={index}\n{}",
            self.by_index[&index].describe(self.tokens),
            seed = self.seed
        )
    }
}

pub fn over_sockets(settings: &Settings) -> Tally {
    let fixture = Fixture::new(settings.seed);
    let names: Vec<&str> = crate::config::POOLS.iter().map(|p| p.name).collect();
    let ups = Upstreams::start(&names);
    let dev = free_addr();
    let config = crate::config::toml(&fixture.partner_secret, &|p| ups.get(p).addr.to_string());
    let gw = Gateway::start(&config, &[("@DEV@", dev)]);
    let gen = Gen { tokens: &fixture.tokens, wire: true };
    let reqs: Vec<Req> = settings
        .indices()
        .map(|i| {
            let mut r = gen.request(settings.seed, i);
            r.headers.push(("x-probe".to_owned(), i.to_string()));
            r
        })
        .collect();
    let answers = send_all(&reqs, |l| if l == Local::Dev { dev } else { gw.addr });
    let sent =
        Sent { seed: settings.seed, tokens: &fixture.tokens, by_index: reqs.iter().map(|r| (r.index, r)).collect() };
    let mut tally = Tally::default();
    let mut decisions = HashMap::new();
    for (index, response) in answers {
        let req = sent.by_index[&index];
        let decision = model::decide(req, &fixture.tokens);
        let r = response.unwrap_or_else(|e| sent.fail(index, &format!("no answer: {e}")));
        let how = answer(req, &decision, &r)
            .unwrap_or_else(|e| sent.fail(index, &format!("{e}; the model says {decision:?}")));
        match (&decision, how) {
            (Decision::Admit(a), _) => {
                *tally.pools.entry(a.pool.to_owned()).or_default() += 1;
                *tally.routes.entry(a.route.name).or_default() += 1;
                tally.admin_admitted += u64::from(a.system_mode);
            }
            (Decision::Refuse(reason), Answer::AsModelled) => {
                *tally.reasons.entry((*reason).to_owned()).or_default() += 1;
            }
            (Decision::Refuse(reason), Answer::HttpLayer) => {
                *tally.reasons.entry(format!("{reason} (by pingora)")).or_default() += 1;
            }
        }
        decisions.insert(index, decision);
    }
    check_recorded(&sent, &ups, &decisions);
    drop(gw);
    tally
}

/// Sends every request on its own connection, from a few client threads.
fn send_all(reqs: &[Req], addr: impl Fn(Local) -> SocketAddr + Sync) -> Vec<(u64, Result<RawResponse, String>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let addr = &addr;
                s.spawn(move || {
                    reqs.iter()
                        .filter(|r| r.index % CLIENTS == c)
                        .map(|r| (r.index, client::send(addr(r.local), &raw(r)).map_err(|e| e.to_string())))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// Every request an upstream recorded was admitted by the model to that very pool,
/// reached it once, and carried exactly the model's headers; every admitted request
/// was recorded.
fn check_recorded(sent: &Sent<'_>, ups: &Upstreams, decisions: &HashMap<u64, Decision<'_>>) {
    let mut seen = HashMap::new();
    for up in &ups.list {
        for got in up.received() {
            let probe = got.header("x-probe").and_then(|p| p.parse::<u64>().ok());
            let Some(index) = probe else { panic!("{} received a request nobody sent: {got:?}", up.name) };
            if let Some(other) = seen.insert(index, up.name.clone()) {
                sent.fail(index, &format!("reached {other} and {}", up.name));
            }
            let req = sent.by_index[&index];
            let env = crate::config::pool(&up.name).env;
            if let Err(e) = upstream::safety(req, sent.tokens, env, &up.name) {
                sent.fail(index, &format!("ISOLATION BROKEN at {}: {e}", up.name));
            }
            let Some(Decision::Admit(a)) = decisions.get(&index) else {
                sent.fail(index, &format!("reached {} though the model refuses it", up.name))
            };
            if a.pool != up.name {
                sent.fail(index, &format!("reached {}, the model says {}", up.name, a.pool));
            }
            let received = Received { headers: &got.headers, target: &got.path };
            if let Err(e) = upstream::check(req, a, &received, None) {
                sent.fail(index, &format!("{} received:\n{e}", up.name));
            }
        }
    }
    for (index, d) in decisions {
        if matches!(d, Decision::Admit(_)) && !seen.contains_key(index) {
            sent.fail(*index, "admitted, but no upstream recorded it");
        }
    }
}
