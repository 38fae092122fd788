//! Per-tenant rate limits and quotas over real sockets, locally and shared through a
//! real `redis-server`: 429 answers with Retry-After and RateLimit headers, plans, costs,
//! two gateways sharing one budget, and each policy while Redis is down.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::time::{Duration, Instant};

use common::client::RawResponse;
use common::jws::{claims, token};
use common::redis::{Blackhole, Redis};
use common::*;
use serde_json::json;

/// A gateway with plans `tight` (burst 3, 1/s), `quota` (2 per minute), `tester`
/// (burst 1) and `roomy` (100/s); prod's default plan is `tight`.
fn config(ups: &Upstreams, rate_limit: &str) -> String {
    format!(
        r#"
{PREAMBLE}{RSA_ISSUER}{HMAC_ISSUER}[rate_limit]
plan_claim = "plan"
{rate_limit}
[plans.tight]
rate_per_second = 1
burst = 3
[plans.quota]
quota_minute = 2
[plans.tester]
rate_per_second = 1
burst = 1
[plans.roomy]
rate_per_second = 100
[environments.prod]
hosts = ["prod.test"]
default_pool = "prod-shared"
default_plan = "tight"
test_account_plan = "tester"
tenant_plans = {{ quotaco = "quota" }}
[pools.prod-shared]
servers = ["{}"]
[[routes]]
name = "export"
path_prefix = "/export"
cost = 2
[[routes]]
name = "api"
path_prefix = "/api"
"#,
        ups.get("prod-shared").addr
    )
}

fn call(gw: &Gateway, tenant: &str, path: &str) -> RawResponse {
    gw.get_with_token("prod.test", path, &token("RS256", claims("prod", tenant)))
}

fn statuses(gw: &Gateway, tenant: &str, n: usize) -> Vec<u16> {
    (0..n).map(|_| call(gw, tenant, "/api").status).collect()
}

#[test]
fn a_tenant_over_its_rate_gets_429_with_retry_after_and_ratelimit_headers() {
    let ups = Upstreams::start(&["prod-shared"]);
    let gw = Gateway::start(&config(&ups, ""), &[]);
    assert_eq!(statuses(&gw, "acme", 3), vec![200, 200, 200]);
    let r = call(&gw, "acme", "/api");
    assert_eq!((r.status, r.json()["error"].as_str()), (429, Some("rate_limited")));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"burst\";q=3;w=1"));
    assert_eq!(r.header("ratelimit"), Some("\"burst\";r=0;t=1"));
    assert_eq!(ups.total(), 3, "a refused request never reaches the upstream");
    // Another tenant has its own budget.
    assert_eq!(statuses(&gw, "globex", 3), vec![200, 200, 200]);
    let line = gw.audit_for(&request_id(&r));
    assert_eq!(
        (line["reason"].as_str(), line["plan"].as_str(), line["limit_mode"].as_str()),
        (Some("rate_limited"), Some("tight"), Some("local"))
    );
    assert_eq!(
        gw.metric(
            r#"isogate_rate_limit_decisions_total{environment="prod",mode="local",plan="tight",result="rate_limited"}"#
        ),
        Some(1.0)
    );
    // After the refill interval one more request fits (refused polls charge nothing).
    eventually("a refill", || (call(&gw, "acme", "/api").status == 200).then_some(()));
    assert_eq!(statuses(&gw, "acme", 1), vec![429]);
}

#[test]
fn quotas_count_route_costs_and_plans_follow_tenant_test_account_and_claim() {
    let ups = Upstreams::start(&["prod-shared"]);
    let gw = Gateway::start(&config(&ups, ""), &[]);
    // quotaco has 2 per minute; /export costs 2.
    assert_eq!(call(&gw, "quotaco", "/export").status, 200);
    let r = call(&gw, "quotaco", "/api");
    assert_eq!((r.status, r.json()["error"].as_str()), (429, Some("quota_exhausted")));
    let t: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&t), "retry-after runs to the end of the minute: {t}");
    assert_eq!(r.header("ratelimit"), Some(format!("\"minute\";r=0;t={t}").as_str()));
    assert_eq!(r.header("ratelimit-policy"), Some("\"minute\";q=2;w=60"));

    // Test accounts get their own plan (burst 1).
    let mut c = claims("prod", "acme");
    c["is_test_account"] = json!(true);
    let test = token("RS256", c);
    assert_eq!(gw.get_with_token("prod.test", "/api", &test).status, 200);
    assert_eq!(gw.get_with_token("prod.test", "/api", &test).json()["error"], "rate_limited");

    // A plan claim is honoured because the operator allows it.
    let mut c = claims("prod", "bigco");
    c["plan"] = json!("roomy");
    let roomy = token("RS256", c);
    let ok = (0..10).filter(|_| gw.get_with_token("prod.test", "/api", &roomy).status == 200).count();
    assert_eq!(ok, 10);
    gw.metrics();
    let line = gw.audit_lines().into_iter().rev().find(|l| l["tenant"] == "bigco").unwrap();
    assert_eq!(line["plan"], "roomy");
}

fn redis_config(ups: &Upstreams, redis: &Redis, policy: &str) -> String {
    config(ups, &format!("backend = \"redis\"\nredis_url = \"{}\"\nredis_timeout_ms = 100\non_redis_error = \"{policy}\"\ninstances = 2", redis.url()))
}

#[test]
fn two_gateways_share_one_budget_through_redis() {
    let redis = Redis::start();
    let ups = Upstreams::start(&["prod-shared"]);
    let a = Gateway::start(&redis_config(&ups, &redis, "fail_closed"), &[]);
    let b = Gateway::start(&redis_config(&ups, &redis, "fail_closed"), &[]);
    let started = Instant::now();
    let mut admitted = 0;
    for i in 0..20 {
        let gw = if i % 2 == 0 { &a } else { &b };
        if call(gw, "acme", "/api").status == 200 {
            admitted += 1;
        }
    }
    // Burst 3 plus one per elapsed second, across both gateways.
    let limit = 3 + started.elapsed().as_secs() as usize;
    assert!(admitted <= limit, "{admitted} admitted, limit {limit}");
    assert!(admitted >= 3);
    let line = a.audit_lines().into_iter().next().unwrap();
    assert_eq!(line["limit_mode"], "redis");
}

#[test]
fn quotas_in_redis_survive_a_gateway_restart() {
    let redis = Redis::start();
    let ups = Upstreams::start(&["prod-shared"]);
    let first = Gateway::start(&redis_config(&ups, &redis, "fail_closed"), &[]);
    assert_eq!(call(&first, "quotaco", "/api").status, 200);
    drop(first);
    let second = Gateway::start(&redis_config(&ups, &redis, "fail_closed"), &[]);
    assert_eq!(call(&second, "quotaco", "/api").status, 200);
    let r = call(&second, "quotaco", "/api");
    assert_eq!((r.status, r.json()["error"].as_str()), (429, Some("quota_exhausted")));
}

#[test]
fn while_redis_is_down_each_policy_applies_quickly_and_sharing_resumes_after() {
    let mut redis = Redis::start();
    let addr = redis.addr;
    let ups = Upstreams::start(&["prod-shared"]);
    let closed = Gateway::start(&redis_config(&ups, &redis, "fail_closed"), &[]);
    let open = Gateway::start(&redis_config(&ups, &redis, "fail_open"), &[]);
    let fallback = Gateway::start(&redis_config(&ups, &redis, "local_fallback"), &[]);
    assert_eq!(call(&closed, "warm", "/api").status, 200);
    redis.kill();

    let started = Instant::now();
    let r = call(&closed, "acme", "/api");
    assert!(started.elapsed() < Duration::from_secs(2), "bounded latency: {:?}", started.elapsed());
    assert_eq!((r.status, r.json()["error"].as_str()), (503, Some("limiter_unavailable")));
    assert_eq!(gw_line(&closed, &r)["limit_mode"], "fail_closed");

    let r = call(&open, "acme", "/api");
    assert_eq!(r.status, 200);
    assert_eq!(gw_line(&open, &r)["limit_mode"], "fail_open");

    // local_fallback: this gateway enforces its share (burst 3 / 2 instances = 1).
    let r = call(&fallback, "acme", "/api");
    assert_eq!(r.status, 200);
    assert_eq!(gw_line(&fallback, &r)["limit_mode"], "local_fallback");
    assert_eq!(call(&fallback, "acme", "/api").json()["error"], "rate_limited");

    let _restarted = Redis::start_on(addr);
    eventually("shared limiting resumes", || {
        let r = call(&closed, "resumed", "/api");
        (r.status == 200 && gw_line(&closed, &r)["limit_mode"] == "redis").then_some(())
    });
}

fn gw_line(gw: &Gateway, r: &RawResponse) -> serde_json::Value {
    gw.audit_for(&request_id(r))
}

/// `redis_timeout_ms` of the latency tests.
const TIMEOUT_MS: u64 = 50;

fn fallback_config(ups: &Upstreams, redis_url: &str) -> String {
    config(
        ups,
        &format!(
            "backend = \"redis\"\nredis_url = \"{redis_url}\"\nredis_timeout_ms = {TIMEOUT_MS}\non_redis_error = \"local_fallback\""
        ),
    )
}

/// Tests that load the machine run one at a time, so each measures itself.
static LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sends 8 × 50 requests from 8 threads at once (one tenant each) and returns the p99
/// latency. Every answer must be the local fallback's (200 or 429), never an error.
/// HS256 tokens: verifying them is cheap even in a debug build, unlike RSA.
fn p99_under_concurrency(gw: &Gateway) -> Duration {
    let _load = LOAD.lock().unwrap_or_else(|e| e.into_inner());
    let tokens: Vec<String> = (0..8).map(|i| token("HS256", claims("prod", &format!("t{i}")))).collect();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|t| {
                s.spawn(move || {
                    (0..50)
                        .map(|_| {
                            let started = Instant::now();
                            let r = gw.get_with_token("prod.test", "/api", t);
                            let took = started.elapsed();
                            assert!(matches!(r.status, 200 | 429), "status {}: {:?}", r.status, r.json());
                            took
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    latencies.sort();
    let q = |p: usize| latencies[latencies.len() * p / 100 - 1];
    eprintln!("p50 {:?} p90 {:?} p99 {:?} max {:?}", q(50), q(90), q(99), latencies[latencies.len() - 1]);
    q(99)
}

/// The bound on p99: the timeout plus slack for a loaded 2-core machine. Requests that
/// queued behind each other's connection attempts would take 8 × the timeout.
fn assert_bounded(p99: Duration, what: &str) {
    let bound = Duration::from_millis(4 * TIMEOUT_MS);
    eprintln!("p99 with redis {what}: {p99:?} (timeout {TIMEOUT_MS} ms, bound {bound:?})");
    assert!(p99 < bound, "p99 {p99:?} with redis {what}; bound {bound:?}");
}

fn eventually_shared(gw: &Gateway) {
    let t = token("RS256", claims("prod", "resumed"));
    eventually("shared limiting resumes", || {
        let r = gw.get_with_token("prod.test", "/api", &t);
        (r.status == 200 && gw_line(gw, &r)["limit_mode"] == "redis").then_some(())
    });
}

#[test]
fn with_redis_unreachable_from_the_start_latency_is_bounded_and_sharing_starts_when_it_comes() {
    let addr = free_addr();
    let ups = Upstreams::start(&["prod-shared"]);
    let gw = Gateway::start(&fallback_config(&ups, &format!("redis://{addr}")), &[]);
    assert_bounded(p99_under_concurrency(&gw), "unreachable");
    let r = call(&gw, "acme", "/api");
    assert_eq!(gw_line(&gw, &r)["limit_mode"], "local_fallback");
    let _redis = Redis::start_on(addr);
    eventually_shared(&gw);
}

#[test]
fn with_redis_blackholed_from_the_start_latency_is_bounded_and_sharing_starts_when_it_answers() {
    let blackhole = Blackhole::start();
    let addr = blackhole.addr;
    let ups = Upstreams::start(&["prod-shared"]);
    let gw = Gateway::start(&fallback_config(&ups, &blackhole.url()), &[]);
    assert_bounded(p99_under_concurrency(&gw), "blackholed");
    let r = call(&gw, "acme", "/api");
    assert_eq!(gw_line(&gw, &r)["limit_mode"], "local_fallback");
    drop(blackhole);
    let _redis = Redis::start_on(addr);
    eventually_shared(&gw);
}

#[test]
fn when_a_connected_redis_hangs_latency_stays_bounded_and_sharing_resumes_when_it_answers() {
    let redis = Redis::start();
    let ups = Upstreams::start(&["prod-shared"]);
    let gw = Gateway::start(&fallback_config(&ups, &redis.url()), &[]);
    eventually_shared(&gw);
    redis.pause();
    assert_bounded(p99_under_concurrency(&gw), "hung");
    let r = call(&gw, "acme", "/api");
    assert_eq!(gw_line(&gw, &r)["limit_mode"], "local_fallback");
    redis.resume();
    eventually_shared(&gw);
}

/// The shared limiter keeps time in nanoseconds like the local one: at 7,000/s the
/// interval is 142,858 ns, not a rounded 100 µs or 143 µs.
#[test]
fn the_shared_limiter_enforces_rates_to_the_nanosecond() {
    use isogate::ratelimit::gcra::Rate;
    use isogate::ratelimit::redis::RedisLimiter;
    use isogate::ratelimit::{Limiter, Mode, OnError, Outcome, Plan};
    let redis = Redis::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let shared = RedisLimiter::new(&redis.url(), Duration::from_millis(500)).unwrap();
    let limiter = Limiter::shared(1024, shared, OnError::FailClosed, 1);
    let plan = Plan::new("fast", Rate::new(7_000, 1_000), Vec::new(), jiff::tz::TimeZone::UTC);
    rt.block_on(async {
        let started = Instant::now();
        assert_eq!(limiter.check("prod:acme", &plan, 1_000).await, (Outcome::Allow, Mode::Redis));
        let (outcome, mode) = limiter.check("prod:acme", &plan, 1_000).await;
        let elapsed = started.elapsed();
        assert_eq!(mode, Mode::Redis);
        // The second 1,000 fit once the first 1,000 intervals have passed.
        let full = Duration::from_nanos(1_000 * 142_858);
        let Outcome::RateLimited(wait) = outcome else { panic!("{outcome:?}") };
        assert!(wait <= full && wait + elapsed >= full, "wait {wait:?}, elapsed {elapsed:?}, full {full:?}");
    });
}

/// Reject lines allowed per second on stderr (`isogate::diag::REJECT`).
const REJECT_LINES_PER_SECOND: usize = 20;

/// A flood of bad tokens: the audit trail keeps every request, while the diagnostic log
/// shows at most `REJECT_LINES_PER_SECOND` reject lines a second plus summaries, and the
/// metric counts every line left out.
#[test]
fn a_flood_of_bad_tokens_is_audited_in_full_but_logged_within_bounds() {
    let ups = Upstreams::start(&["prod-shared"]);
    let gw = Gateway::start_logging(&config(&ups, ""), &[], "info");
    let _load = LOAD.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..250 {
                    assert_eq!(gw.get_with_token("prod.test", "/api", "not-a-token").status, 401);
                }
            });
        }
    });
    // The summary of the suppressed lines comes when the one-second window rolls over.
    let summary = |line: &str| line.contains("isogate::reject") && line.contains("suppressed");
    eventually("a suppression summary", || {
        assert_eq!(gw.get_with_token("prod.test", "/api", "not-a-token").status, 401);
        gw.stderr().lines().any(summary).then_some(())
    });
    let seconds = started.elapsed().as_secs() as usize + 1;
    let shown =
        |stderr: &str| stderr.lines().filter(|l| l.contains("isogate::reject") && l.contains("refused:")).count();
    // Each refusal's log decision follows its audit line: wait until all are accounted.
    let (refused, shown, suppressed) = eventually("every refusal shown or counted as suppressed", || {
        let metrics = gw.metrics();
        let refused = gw.audit_lines().iter().filter(|l| l["status"] == 401).count() as u64;
        let shown = shown(&gw.stderr()) as u64;
        let suppressed = metric_value(&metrics, r#"isogate_log_lines_suppressed_total{target="isogate::reject"}"#)?;
        (shown + suppressed as u64 == refused).then_some((refused, shown, suppressed as u64))
    });
    let summarised: u64 = gw
        .stderr()
        .lines()
        .filter(|l| summary(l))
        .map(|l| l.split("suppressed ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse::<u64>().unwrap())
        .sum();
    eprintln!("{refused} refusals in {seconds} s: {shown} reject lines shown, {suppressed} suppressed, {summarised} summarised");
    assert_eq!(isogate::diag::REJECT.per_second() as usize, REJECT_LINES_PER_SECOND);
    assert!(refused > 2_000, "every refusal has its audit line: {refused}");
    assert!(shown as usize <= REJECT_LINES_PER_SECOND * (seconds + 1), "{shown} reject lines in {seconds} s");
    assert!(summarised >= 1 && summarised <= suppressed, "summaries {summarised}, suppressed {suppressed}");
}
