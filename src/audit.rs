//! Stage "record", audit half: one JSON line per request, allowed or refused.
//!
//! Lines are encoded on the request thread, queued on a bounded channel and written by
//! one writer thread, so they never interleave or tear. Nothing is lost silently: a
//! request can reserve its queue slot up front (`reserve`), a line that finds no room is
//! counted in `isogate_audit_lines_lost_total`, and `close` flushes everything queued.
//! The field names of `AuditRecord` are a stable interface.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;
use serde::{Serialize, Serializer};
use tokio::sync::mpsc;

use json::key;

use crate::config::file::OnQueueFull;

mod json;

/// Longest path or user agent kept in a line, in bytes.
const MAX_FIELD_BYTES: usize = 2048;

/// How long the writer rests after writing a batch of several lines (a busy queue).
/// Lines queued meanwhile are written together, and no request has to wake the writer
/// while it rests: under load that is one wake-up and one `write` per pause instead of
/// one per request. A lone line (a quiet gateway) is written at once.
const BATCH_PAUSE: Duration = Duration::from_millis(5);

/// One audit line.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// When the response head went out (or the request ended), RFC 3339 with
    /// microseconds, UTC.
    #[serde(serialize_with = "rfc3339_micros")]
    pub ts: SystemTime,
    /// Request id (validated client value or generated).
    pub request_id: &'a str,
    /// Bound environment, if any.
    pub environment: Option<&'a str>,
    /// Tenant claim, if verified.
    pub tenant: Option<&'a str>,
    /// User claim, if verified.
    pub user: Option<&'a str>,
    /// Roles claim.
    pub roles: &'a [String],
    /// Whether the token is a developer test account.
    pub test_account: bool,
    /// Issuer that verified (or, on refusal, was named by) the token.
    pub issuer: Option<&'a str>,
    /// The token's `kid`, where known.
    pub kid: Option<&'a str>,
    /// HTTP method.
    pub method: &'a str,
    /// The client's request path, without the query string (before any rewrite).
    #[serde(serialize_with = "capped")]
    pub path: &'a str,
    /// Matched route.
    pub route: Option<&'a str>,
    /// Chosen pool.
    pub pool: Option<&'a str>,
    /// Upstream server address.
    pub upstream: Option<SocketAddr>,
    /// Status sent to the client (0 if none).
    pub status: u16,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// Refusal or failure reason; `ok` when served.
    pub reason: &'static str,
    /// In a report-only environment: the refusal the access rules would have made.
    pub report_only: Option<&'static str>,
    /// The cleaned access reason the caller gave.
    pub access_reason: Option<&'a str>,
    /// Whether the backend was told to bypass per-user filtering.
    pub system_mode: bool,
    /// The database schema hint sent upstream.
    pub db_schema: Option<&'a str>,
    /// The plan the request was limited under.
    pub plan: Option<&'a str>,
    /// Which limiter decided: `local`, `redis`, `fail_open`, `fail_closed`, `local_fallback`.
    pub limit_mode: Option<&'static str>,
    /// Time from request start to the response head (or to the refusal), in microseconds.
    pub latency_us: u64,
    /// Client address.
    pub client: Option<SocketAddr>,
    /// `User-Agent` header.
    #[serde(serialize_with = "capped_opt")]
    pub user_agent: Option<&'a str>,
    /// W3C trace id (32 hex digits) of the trace the request went upstream in.
    pub trace_id: Option<&'a str>,
}

impl<'a> AuditRecord<'a> {
    /// The line of a refusal made before any stage ran: a head too slow or too large,
    /// or one the HTTP parser refused. Only what the request line said is known.
    pub fn early(request_id: &'a str, method: &'a str, path: &'a str, reject: crate::reject::Reject) -> Self {
        Self {
            ts: SystemTime::now(),
            request_id,
            environment: None,
            tenant: None,
            user: None,
            roles: &[],
            test_account: false,
            issuer: None,
            kid: None,
            method,
            path,
            route: None,
            pool: None,
            upstream: None,
            status: reject.status(),
            decision: "deny",
            reason: reject.reason(),
            report_only: None,
            access_reason: None,
            system_mode: false,
            db_schema: None,
            plan: None,
            limit_mode: None,
            latency_us: 0,
            client: None,
            user_agent: None,
            trace_id: None,
        }
    }
}

impl AuditRecord<'_> {
    /// The record as one JSON line (with the trailing newline), written field by field:
    /// the same bytes serde_json writes for it, without its per-field machinery.
    pub fn encode(&self) -> Vec<u8> {
        // A typical line is 500-900 bytes: one allocation, no growth.
        let mut line = Vec::with_capacity(1024);
        let mut o = json::Object::new(&mut line);
        o.timestamp(key!("ts"), self.ts);
        o.str(key!("request_id"), self.request_id);
        o.opt_str(key!("environment"), self.environment);
        o.opt_str(key!("tenant"), self.tenant);
        o.opt_str(key!("user"), self.user);
        o.strs(key!("roles"), self.roles);
        o.bool(key!("test_account"), self.test_account);
        o.opt_str(key!("issuer"), self.issuer);
        o.opt_str(key!("kid"), self.kid);
        o.str(key!("method"), self.method);
        o.str(key!("path"), cap(self.path));
        o.opt_str(key!("route"), self.route);
        o.opt_str(key!("pool"), self.pool);
        o.address(key!("upstream"), self.upstream);
        o.u64(key!("status"), self.status.into());
        o.str(key!("decision"), self.decision);
        o.str(key!("reason"), self.reason);
        o.opt_str(key!("report_only"), self.report_only);
        o.opt_str(key!("access_reason"), self.access_reason);
        o.bool(key!("system_mode"), self.system_mode);
        o.opt_str(key!("db_schema"), self.db_schema);
        o.opt_str(key!("plan"), self.plan);
        o.opt_str(key!("limit_mode"), self.limit_mode);
        o.u64(key!("latency_us"), self.latency_us);
        o.address(key!("client"), self.client);
        o.opt_str(key!("user_agent"), self.user_agent.map(cap));
        o.opt_str(key!("trace_id"), self.trace_id);
        o.end();
        line.push(b'\n');
        line
    }
}

/// The optional second line of a response: how it ended.
#[derive(Debug, Serialize)]
pub struct StreamEnd<'a> {
    /// When the response ended.
    #[serde(serialize_with = "rfc3339_micros")]
    pub ts: SystemTime,
    /// The request id of the first line.
    pub request_id: &'a str,
    /// Always `end`.
    pub event: &'static str,
    /// Status sent to the client.
    pub status: u16,
    /// `ok`, or why the response stopped early (`upstream_reset`, `client_aborted`, ...).
    pub reason: &'static str,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// Time from request start to the end of the response, in microseconds.
    pub duration_us: u64,
}

pub(crate) fn rfc3339_micros<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_micros(*t))
}

fn cap(v: &str) -> &str {
    if v.len() <= MAX_FIELD_BYTES {
        return v;
    }
    let mut end = MAX_FIELD_BYTES;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

fn capped<S: Serializer>(v: &&str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(cap(v))
}

fn capped_opt<S: Serializer>(v: &Option<&str>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(cap(v)),
        None => s.serialize_none(),
    }
}

enum Message {
    Line(Vec<u8>),
    Close,
}

/// A reserved place in the audit queue, held by a request until it logs.
pub struct Slot(mpsc::OwnedPermit<Message>);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

/// The sending side of the audit trail.
pub struct AuditSink {
    tx: mpsc::Sender<Message>,
    on_full: OnQueueFull,
    lost: IntCounter,
    writer: Mutex<Option<(JoinHandle<()>, std::sync::mpsc::Receiver<()>)>>,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink").field("on_full", &self.on_full).finish_non_exhaustive()
    }
}

impl AuditSink {
    /// Opens the output (`None` for stdout) and starts the writer thread.
    pub fn start(
        path: Option<&Path>,
        capacity: usize,
        on_full: OnQueueFull,
        written: IntCounter,
        lost: IntCounter,
    ) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(OpenOptions::new().create(true).append(true).open(p)?),
            None => Box::new(io::stdout()),
        };
        let (tx, rx) = mpsc::channel(capacity);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let writer_lost = lost.clone();
        let handle = std::thread::Builder::new().name("isogate-audit".to_owned()).spawn(move || {
            write_loop(rx, BufWriter::with_capacity(64 * 1024, out), &written, &writer_lost);
            let _ = done_tx.send(());
        })?;
        Ok(Self { tx, on_full, lost, writer: Mutex::new(Some((handle, done_rx))) })
    }

    /// Reserves a queue slot for a request's line. `None` when the queue is full.
    pub fn reserve(&self) -> Option<Slot> {
        self.tx.clone().try_reserve_owned().ok().map(Slot)
    }

    /// Whether a request must be refused when `reserve` finds the queue full.
    pub fn fail_closed(&self) -> bool {
        self.on_full == OnQueueFull::Refuse
    }

    /// Queues one encoded line, into its slot when it has one. Counts the line as lost
    /// when there is no room.
    pub fn submit(&self, slot: Option<Slot>, line: Vec<u8>) {
        match slot {
            Some(Slot(permit)) => {
                permit.send(Message::Line(line));
            }
            None => {
                if self.tx.try_send(Message::Line(line)).is_err() {
                    self.lost.inc();
                }
            }
        }
    }

    /// Records a line that could not even be encoded or reserved.
    pub fn count_lost(&self) {
        self.lost.inc();
    }

    /// Flushes everything queued and stops the writer, waiting up to `timeout`.
    /// Call it from outside any async runtime, after the server has stopped.
    pub fn close(&self, timeout: Duration) {
        let Some((handle, done)) = self.writer.lock().ok().and_then(|mut w| w.take()) else {
            return;
        };
        if self.tx.blocking_send(Message::Close).is_err() {
            return;
        }
        if done.recv_timeout(timeout).is_ok() {
            let _ = handle.join();
        } else {
            log::error!(target: "isogate::audit", "audit writer did not finish within {timeout:?}; some lines may be lost");
        }
    }
}

fn write_loop(
    mut rx: mpsc::Receiver<Message>,
    mut out: BufWriter<Box<dyn Write + Send>>,
    written: &IntCounter,
    lost: &IntCounter,
) {
    let mut failing = false;
    let report = |failing: &mut bool, what: &str, e: io::Error| {
        if !*failing {
            log::error!(target: "isogate::audit", "cannot {what} the audit output: {e}");
            *failing = true;
        }
    };
    while let Some(first) = rx.blocking_recv() {
        let (mut closing, mut batch, mut buffered) = (false, 0usize, 0u64);
        let mut next = Some(first);
        while let Some(message) = next {
            batch += 1;
            match message {
                Message::Line(line) => match out.write_all(&line) {
                    Ok(()) => buffered += 1,
                    Err(e) => {
                        lost.inc();
                        report(&mut failing, "write to", e);
                    }
                },
                Message::Close => closing = true,
            }
            next = rx.try_recv().ok();
        }
        // A line counts as written once it left the buffer.
        match out.flush() {
            Ok(()) => {
                written.inc_by(buffered);
                failing = false;
            }
            Err(e) => {
                lost.inc_by(buffered);
                report(&mut failing, "flush", e);
            }
        }
        if closing {
            return;
        }
        if batch > 1 {
            std::thread::sleep(BATCH_PAUSE);
        }
    }
}

/// Encodes a record as one JSON line (with the trailing newline).
pub fn encode<R: Serialize>(record: &R) -> Option<Vec<u8>> {
    // A typical line is 500-900 bytes: one allocation, no growth.
    let mut line = Vec::with_capacity(1024);
    serde_json::to_writer(&mut line, record).ok()?;
    line.push(b'\n');
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(path: &'a str, roles: &'a [String]) -> AuditRecord<'a> {
        AuditRecord {
            ts: SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            request_id: "r1",
            environment: Some("prod"),
            tenant: Some("acme"),
            user: None,
            roles,
            test_account: false,
            issuer: Some("corp"),
            kid: None,
            method: "GET",
            path,
            route: Some("api"),
            pool: Some("prod-main"),
            upstream: Some("127.0.0.1:1".parse().unwrap()),
            status: 200,
            decision: "allow",
            reason: "ok",
            report_only: None,
            access_reason: Some("ticket 1"),
            system_mode: false,
            db_schema: None,
            plan: None,
            limit_mode: None,
            latency_us: 12,
            client: None,
            user_agent: Some("curl\r\n{\"forged\":1}"),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        }
    }

    /// What serde_json writes for the record: the reference for the hand-written line.
    fn by_serde(record: &AuditRecord<'_>) -> Vec<u8> {
        encode(record).unwrap()
    }

    #[test]
    fn the_written_line_is_what_serde_json_writes() {
        let roles = ["admin".to_owned(), "a\"b\\c\u{1}".to_owned(), "é€😀".to_owned()];
        let long = "é".repeat(3000);
        let hostile = ["/a\nb", "/ok", "", "\u{7f}\u{0}\t\"", long.as_str(), "/a\\u0000"];
        for path in hostile {
            for roles in [&roles[..], &[]] {
                let mut r = record(path, roles);
                assert_eq!(r.encode(), by_serde(&r), "path {path:?}");
                r.upstream = Some("[::1]:8443".parse().unwrap());
                r.client = Some("10.1.2.3:54321".parse().unwrap());
                r.user = Some(path);
                r.kid = Some(path);
                r.user_agent = Some(path);
                r.report_only = Some("forbidden");
                r.latency_us = u64::MAX;
                r.test_account = true;
                assert_eq!(r.encode(), by_serde(&r), "path {path:?}");
                r.user_agent = None;
                r.environment = None;
                assert_eq!(r.encode(), by_serde(&r), "path {path:?}");
            }
        }
    }

    #[test]
    fn line_is_one_json_object_with_stable_fields() {
        let roles = vec!["admin".to_owned()];
        let line = record("/a\nb", &roles).encode();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["ts"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(v["path"], "/a\nb");
        assert_eq!(v["user"], serde_json::Value::Null);
        assert_eq!(v["roles"][0], "admin");
        assert_eq!(v["user_agent"], "curl\r\n{\"forged\":1}");
    }

    #[test]
    fn long_fields_are_capped_on_a_char_boundary() {
        let long = "é".repeat(3000);
        let line = record(&long, &[]).encode();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert!(v["path"].as_str().unwrap().len() <= MAX_FIELD_BYTES);
    }

    #[test]
    fn writes_every_line_and_flushes_on_close() {
        let dir = std::env::temp_dir().join(format!("isogate-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let _ = std::fs::remove_file(&path);
        let (written, lost) = (IntCounter::new("w", "w").unwrap(), IntCounter::new("l", "l").unwrap());
        let sink = AuditSink::start(Some(&path), 4, OnQueueFull::Serve, written.clone(), lost.clone()).unwrap();
        for i in 0..3 {
            let slot = sink.reserve();
            sink.submit(slot, format!("{{\"n\":{i}}}\n").into_bytes());
        }
        sink.close(Duration::from_secs(5));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert_eq!(written.get(), 3);
        assert_eq!(lost.get(), 0);
    }

    #[test]
    fn a_full_queue_refuses_reservations_and_counts_losses() {
        let (tx, _rx) = mpsc::channel(1);
        let lost = IntCounter::new("l", "l").unwrap();
        let sink = AuditSink { tx, on_full: OnQueueFull::Refuse, lost: lost.clone(), writer: Mutex::new(None) };
        let held = sink.reserve();
        assert!(held.is_some());
        assert!(sink.reserve().is_none());
        assert!(sink.fail_closed());
        sink.submit(None, b"x\n".to_vec());
        assert_eq!(lost.get(), 1);
    }
}
