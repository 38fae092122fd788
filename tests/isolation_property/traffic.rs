//! The random traffic: one request per (seed, index), built from weighted tables of
//! hosts, listeners, paths in disguise, tokens and spoofed headers.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::config::ENVS;
use crate::rng::Rng;
use crate::tokens::TokenPool;
use crate::vocabulary::*;

/// The listener a request arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Bound to no environment.
    Main,
    /// Bound to `dev`.
    Dev,
    /// An address no listener is configured on.
    Other,
}

/// One generated request, as the client sends it.
#[derive(Debug, Clone)]
pub struct Req {
    pub index: u64,
    pub local: Local,
    pub peer: IpAddr,
    pub tls: bool,
    /// The request target as on the request line.
    pub target: String,
    /// Header names as sent (any case, `_` for `-`) and values.
    pub headers: Vec<(String, String)>,
}

impl Req {
    /// Every value of a header, by case-insensitive name.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// A printable description; tokens are named by what was minted.
    pub fn describe(&self, tokens: &TokenPool) -> String {
        let target = if self.target.len() > 200 {
            format!("{:.60}... ({} bytes)", self.target, self.target.len())
        } else {
            self.target.clone()
        };
        let mut s = format!("local {:?}, peer {}, tls {}\n  GET {target}\n", self.local, self.peer, self.tls);
        for (n, v) in &self.headers {
            let shown = match v.split_once(' ').map(|(_, t)| t.trim()).and_then(|t| tokens.find(t)) {
                Some(m) if n.eq_ignore_ascii_case("authorization") => {
                    format!("{v:.40}... [{}: {:?}]", m.what, m.verdict)
                }
                _ if v.len() > 200 => format!("{:.60}... ({} bytes)", v, v.len()),
                _ => v.clone(),
            };
            let _ = writeln!(s, "  {n}: {shown}");
        }
        s
    }
}

/// Generates requests; `wire` keeps to what a socket test can send (loopback peer, no
/// TLS, only the two listeners).
pub struct Gen<'a> {
    pub tokens: &'a TokenPool,
    pub wire: bool,
}

impl Gen<'_> {
    pub fn request(&self, seed: u64, index: u64) -> Req {
        let rng = &mut Rng::for_request(seed, index);
        let local = if self.wire {
            *rng.weighted(&[(70, Local::Main), (30, Local::Dev)])
        } else {
            *rng.weighted(&[(65, Local::Main), (30, Local::Dev), (5, Local::Other)])
        };
        let (peer, tls) = if self.wire {
            (IpAddr::from([127, 0, 0, 1]), false)
        } else {
            (rng.weighted(PEERS).parse().unwrap(), rng.chance(200))
        };
        let (hosts, intended_host) = host_headers(rng);
        let path = path(rng);
        let mut target = path.clone();
        if rng.chance(120) && path.starts_with('/') {
            let _ = write!(target, "?{}", rng.pick(QUERIES));
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        if rng.chance(10) && path.starts_with('/') && !path.contains('\\') {
            // Absolute form, with the same authority as `Host`, with another one, or with
            // no `Host` at all (then the authority is the host).
            match hosts.as_slice() {
                [one] if intended_host.is_some() => target = format!("http://{one}{target}"),
                [_] => target = format!("http://{}{target}", rng.weighted(HOSTS)),
                [] => target = format!("http://{}{target}", rng.weighted(HOSTS)),
                _ => {}
            }
        }
        let intended = intended_env(rng, intended_host, local, &path);
        self.authorization(rng, intended, &mut headers);
        spoof_identity(rng, index, &mut headers);
        spoof_addresses(rng, &mut headers);
        benign(rng, index, &mut headers);
        shuffle(rng, &mut headers);
        let mut all: Vec<(String, String)> = hosts.into_iter().map(|h| ("Host".to_owned(), h)).collect();
        all.append(&mut headers);
        Req { index, local, peer, tls, target, headers: all }
    }

    fn authorization(&self, rng: &mut Rng, intended: Option<&str>, headers: &mut Vec<(String, String)>) {
        if rng.chance(30) {
            return;
        }
        let copies = if rng.chance(20) { 2 } else { 1 };
        for _ in 0..copies {
            let t = &self.tokens.minted[self.token(rng, intended)].token;
            let value = match rng.below(100) {
                0..=87 => format!("Bearer {t}"),
                88..=91 => format!("bearer {t}"),
                92..=93 => format!("BEARER {t}"),
                94..=95 => format!("Bearer   {t}"),
                96..=97 => format!("Basic {t}"),
                98 => format!("Bearer{t}"),
                _ => format!("Token {t}"),
            };
            headers.push((mangle_case(rng, "authorization"), value));
        }
    }

    fn token(&self, rng: &mut Rng, intended: Option<&str>) -> usize {
        let p = self.tokens;
        // A refused token is verified again on every use (only verified tokens are
        // cached), so defective ones are sent less often than valid ones.
        match rng.below(10_000) {
            0..=6_399 => match intended.and_then(|e| p.valid_by_env.get(e)) {
                Some(list) => *rng.pick(list),
                None => *rng.pick(&p.valid),
            },
            6_400..=9_598 => *rng.pick(&p.valid),
            9_599..=9_998 => *rng.pick(&p.cheap_bad),
            _ => *rng.pick(&p.costly_bad),
        }
    }
}

/// The `Host` header values, and the host the generator meant (for biasing tokens).
fn host_headers(rng: &mut Rng) -> (Vec<String>, Option<&'static str>) {
    match rng.below(100) {
        0..=89 => {
            let host = *rng.weighted(HOSTS);
            (vec![decorate(rng, host)], Some(host))
        }
        90..=94 => (Vec::new(), None),
        95..=96 => {
            let (a, b) = (*rng.weighted(HOSTS), *rng.weighted(HOSTS));
            (vec![decorate(rng, a), decorate(rng, b)], None)
        }
        _ => (vec![(*rng.pick(HOSTILE_HOSTS)).to_owned()], None),
    }
}

fn decorate(rng: &mut Rng, host: &str) -> String {
    let mut h = if rng.chance(100) { mangle_case(rng, host) } else { host.to_owned() };
    if rng.chance(40) {
        h.push('.');
    }
    if rng.chance(80) {
        h.push_str(":8080");
    }
    h
}

fn intended_env(rng: &mut Rng, host: Option<&str>, local: Local, path: &str) -> Option<&'static str> {
    let any = || ENVS.iter().map(|e| e.name);
    if path.starts_with("/qa-tools") {
        return Some("qa");
    }
    match host {
        Some("any.test") => {
            let names: Vec<&'static str> = any().collect();
            Some(*rng.pick(&names))
        }
        Some("matrix.test") => Some("prod"),
        Some(h) => ENVS.iter().find(|e| e.hosts.contains(&h)).map(|e| e.name),
        None => None,
    }
    .or((local == Local::Dev).then_some("dev"))
}

fn path(rng: &mut Rng) -> String {
    if rng.chance(50) {
        return (*rng.pick(NOT_ORIGIN_FORM)).to_owned();
    }
    if rng.chance(1) {
        return format!("/api/{}", "a".repeat(9000));
    }
    if rng.chance(200) {
        return (*rng.pick(DISGUISES)).to_owned();
    }
    let mut first = (*rng.weighted(FIRST)).to_owned();
    match rng.below(100) {
        0..=3 if !first.is_empty() => {
            let at = rng.below(first.len());
            let c = first.remove(at);
            first.insert_str(at, &format!("%{:02X}", c as u32));
        }
        4..=6 => first.push_str(";v=1"),
        7..=8 => first.push_str("%3Bv=1"),
        9..=10 => first = mangle_case(rng, &first),
        _ => {}
    }
    let mut p = String::from("/");
    if rng.chance(30) {
        p.push('/');
    }
    if rng.chance(10) {
        p.push_str("./");
    }
    p.push_str(&first);
    for _ in 0..rng.below(4) {
        p.push('/');
        let segment: &&str = rng.weighted(MORE);
        p.push_str(segment);
    }
    if rng.chance(120) {
        p.push('/');
    }
    p
}

fn spoof_identity(rng: &mut Rng, index: u64, headers: &mut Vec<(String, String)>) {
    if rng.chance(400) {
        for k in 0..1 + rng.below(6) {
            let name = *rng.pick(IDENTITY_NAMES);
            let name = mangle(rng, name);
            let value =
                if rng.chance(500) { format!("SPOOF-ID-{k}") } else { (*rng.pick(LOOKALIKE_VALUES)).to_owned() };
            if rng.chance(200) {
                headers.push((name.clone(), value.clone()));
            }
            headers.push((name, value));
        }
    }
    match rng.below(100) {
        0..=24 => headers.push((mangle_case(rng, "x-request-id"), format!("client-rid-{index}"))),
        25..=29 => {
            headers.push(("x-request-id".to_owned(), format!("client-rid-{index}")));
            headers.push(("X-Request-Id".to_owned(), "client-rid-other".to_owned()));
        }
        30..=34 => headers.push(("x-request-id".to_owned(), format!("bad id {index}"))),
        35..=37 => headers.push(("X_Request_Id".to_owned(), "SPOOF-ID-rid".to_owned())),
        38..=39 => headers.push(("x-request-id".to_owned(), "r".repeat(200))),
        _ => {}
    }
}

fn spoof_addresses(rng: &mut Rng, headers: &mut Vec<(String, String)>) {
    if rng.chance(300) {
        for _ in 0..1 + rng.below(4) {
            let name = *rng.pick(ADDRESS_NAMES);
            let name = mangle(rng, name);
            headers.push((name, (*rng.pick(ADDRESS_VALUES)).to_owned()));
        }
    }
}

fn benign(rng: &mut Rng, index: u64, headers: &mut Vec<(String, String)>) {
    if rng.chance(500) {
        headers.push(("Accept".to_owned(), "application/json".to_owned()));
    }
    if rng.chance(200) {
        headers.push(("user-agent".to_owned(), "property/1".to_owned()));
    }
    for k in 0..rng.below(3) / 2 + usize::from(rng.chance(100)) {
        headers.push((format!("X-Custom-{k}"), format!("keep-{index}-{k}")));
    }
    if rng.chance(50) {
        headers.push(("x-access-reason".to_owned(), "debugging issue 123".to_owned()));
    }
}

fn shuffle<T>(rng: &mut Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

/// A header name as a hostile client might spell it: `_` for `-` and any case.
fn mangle(rng: &mut Rng, name: &str) -> String {
    let dashes = rng.below(5);
    let spelled: String = name
        .chars()
        .map(|c| if c == '-' && (dashes == 0 || (dashes == 1 && rng.chance(500))) { '_' } else { c })
        .collect();
    mangle_case(rng, &spelled)
}

fn mangle_case(rng: &mut Rng, name: &str) -> String {
    match rng.below(8) {
        0 => name.to_ascii_uppercase(),
        1 => {
            let mut up = true;
            name.chars()
                .map(|c| {
                    let out = if up { c.to_ascii_uppercase() } else { c };
                    up = matches!(c, '-' | '_' | '.');
                    out
                })
                .collect()
        }
        2 => name.chars().map(|c| if rng.chance(500) { c.to_ascii_uppercase() } else { c }).collect(),
        _ => name.to_owned(),
    }
}
