//! The distributed limiter: rate (GCRA) and quota counters shared by every gateway
//! through one Redis, updated atomically by a server-side script that reads the Redis
//! clock, so instances need no clock agreement. Quota counters live until their window
//! ends, so they survive gateway restarts.
//!
//! Time is counted in nanoseconds, like the local table (`gcra`). Redis's `TIME` has
//! microsecond resolution and Lua numbers are doubles (exact integers up to 2^53), so
//! the script never forms an absolute nanosecond count: it stores the theoretical
//! arrival time as `seconds:nanoseconds` and computes only differences to now, which
//! are exact while a key's schedule runs less than 2^53 ns (104 days) ahead.
//!
//! Every call, including any wait for the connection, is bounded by the timeout (tens
//! of milliseconds by default). The connection belongs to a background task (`link`);
//! while Redis is down a call fails at once and the caller applies its policy.

mod link;

use std::time::Duration;

use redis::Script;

use super::quota::{Exhausted, Quota};
use link::Link;

pub use link::MAX_BACKOFF;

/// GCRA plus all-or-nothing quota charge. `ARGV`: interval and tolerance (ns), cost,
/// quota count, then each quota's limit and window end. Returns `{code, value}`:
/// `{0, wait_ns}` rate limited; `{1, i}` quota `i` (1-based) exhausted; `{2, 0}` allowed.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ns = tonumber(t[2]) * 1000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
if interval > 0 then
  local ahead = 0
  local stored = redis.call('GET', KEYS[1])
  if stored then
    local s, ns = string.match(stored, '^(%d+):(%d+)$')
    if s then
      ahead = math.max(0, (tonumber(s) - now_s) * 1000000000 + tonumber(ns) - now_ns)
    end
  end
  local new = ahead + interval * cost
  local allow_at = new - interval - tolerance
  if allow_at > 0 then return {0, allow_at} end
  local total = now_ns + new
  local carry = math.floor(total / 1000000000)
  local tat = string.format('%d:%d', now_s + carry, total - carry * 1000000000)
  redis.call('SET', KEYS[1], tat, 'PX', math.floor(new / 1000000) + 1000)
end
for i = 1, n do
  local used = tonumber(redis.call('GET', KEYS[1 + i]) or '0')
  if used + cost > tonumber(ARGV[4 + 2 * i - 1]) then return {1, i} end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[1 + i], cost)
  redis.call('EXPIREAT', KEYS[1 + i], tonumber(ARGV[4 + 2 * i]) + 60)
end
return {2, 0}
"#;

/// Why the distributed limiter gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    /// Not connected: the last attempt failed or the connection was lost; the link
    /// reconnects in the background.
    #[error("redis is down (reconnecting in the background)")]
    Down,
    /// The call took longer than the timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The script failed or answered something unexpected.
    #[error("redis error: {0}")]
    Redis(String),
}

/// What Redis decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// Admitted.
    Allow,
    /// Rate limited; retry after.
    RateLimited(Duration),
    /// A quota is used up.
    Exhausted(Exhausted),
}

/// One quota of a request: the window, its limit, and its bounds (epoch seconds).
#[derive(Debug, Clone, Copy)]
pub struct QuotaWindow {
    /// The quota.
    pub quota: Quota,
    /// Window start.
    pub start: i64,
    /// Window end.
    pub end: i64,
}

/// A Redis-backed limiter.
pub struct RedisLimiter {
    link: Link,
    timeout: Duration,
    script: Script,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limiter for `url` (e.g. `redis://127.0.0.1:6379`); connects in the background
    /// from the first use on.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        Ok(Self { link: Link::new(client, timeout), timeout, script: Script::new(SCRIPT) })
    }

    /// Charges `cost` for `key` against the rate (`interval_ns`/`tolerance_ns`; 0 for
    /// none) and the quotas, all or nothing. Returns within the timeout, whatever the
    /// state of the connection.
    pub async fn charge(
        &self,
        key: &str,
        interval_ns: u64,
        tolerance_ns: u64,
        cost: u32,
        quotas: &[QuotaWindow],
    ) -> Result<Shared, LimiterError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut conn = tokio::time::timeout_at(deadline, self.link.connection())
            .await
            .map_err(|_| LimiterError::Timeout(self.timeout))??;
        let mut invocation = self.script.key(format!("isogate:r:{key}"));
        invocation.arg(interval_ns).arg(tolerance_ns).arg(cost).arg(quotas.len());
        for q in quotas {
            invocation.key(format!("isogate:q:{key}:{}:{}", q.quota.window.as_str(), q.start));
            invocation.arg(q.quota.limit).arg(q.end);
        }
        let answer: Vec<i64> = match tokio::time::timeout_at(deadline, invocation.invoke_async(&mut conn)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error() {
                    self.link.report_failure();
                }
                return Err(LimiterError::Redis(e.to_string()));
            }
            Err(_) => {
                self.link.report_failure();
                return Err(LimiterError::Timeout(self.timeout));
            }
        };
        match answer.as_slice() {
            [0, wait_ns] => Ok(Shared::RateLimited(Duration::from_nanos(u64::try_from(*wait_ns).unwrap_or(0)))),
            [1, i] => {
                let q = usize::try_from(*i)
                    .ok()
                    .and_then(|i| quotas.get(i.checked_sub(1)?))
                    .ok_or_else(|| LimiterError::Redis("bad quota index".to_owned()))?;
                let now = jiff::Timestamp::now().as_second();
                let retry_after = Duration::from_secs(u64::try_from(q.end - now).unwrap_or(0).max(1));
                Ok(Shared::Exhausted(Exhausted { window: q.quota.window, limit: q.quota.limit, retry_after }))
            }
            [2, _] => Ok(Shared::Allow),
            other => Err(LimiterError::Redis(format!("unexpected script answer {other:?}"))),
        }
    }
}
