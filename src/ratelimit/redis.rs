//! The distributed limiter: rate (GCRA) and quota counters shared by every gateway
//! through one Redis, updated atomically by a server-side script that reads the Redis
//! clock, so instances need no clock agreement. Quota counters live until their window
//! ends, so they survive gateway restarts.
//!
//! Every call is bounded by a timeout (tens of milliseconds by default). While Redis is
//! slow or down the caller applies its configured policy; the connection manager
//! reconnects by itself when Redis comes back.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use redis::Script;

use super::quota::{Exhausted, Quota};

/// GCRA plus all-or-nothing quota charge. Returns `{code, value}`:
/// `{0, wait_us}` rate limited; `{1, i}` quota `i` (1-based) exhausted; `{2, 0}` allowed.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then tat = now end
  local new = tat + interval * cost
  local allow_at = new - interval - tolerance
  if allow_at > now then return {0, allow_at - now} end
  redis.call('SET', KEYS[1], new, 'PX', math.floor((new - now) / 1000) + 1000)
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
    /// Not connected, and connecting failed.
    #[error("redis is unreachable: {0}")]
    Unreachable(String),
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
    client: redis::Client,
    connection: ArcSwapOption<ConnectionManager>,
    connecting: tokio::sync::Mutex<()>,
    timeout: Duration,
    script: Script,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limiter for `url` (e.g. `redis://127.0.0.1:6379`); connects on first use.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            connection: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            timeout,
            script: Script::new(SCRIPT),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, LimiterError> {
        if let Some(c) = self.connection.load_full() {
            return Ok((*c).clone());
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.connection.load_full() {
            return Ok((*c).clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let manager =
            tokio::time::timeout(self.timeout, ConnectionManager::new_with_config(self.client.clone(), config))
                .await
                .map_err(|_| LimiterError::Timeout(self.timeout))?
                .map_err(|e| LimiterError::Unreachable(e.to_string()))?;
        self.connection.store(Some(Arc::new(manager.clone())));
        Ok(manager)
    }

    /// Charges `cost` for `key` against the rate (`interval_us`/`tolerance_us`; 0 for
    /// none) and the quotas, all or nothing.
    pub async fn charge(
        &self,
        key: &str,
        interval_us: u64,
        tolerance_us: u64,
        cost: u32,
        quotas: &[QuotaWindow],
    ) -> Result<Shared, LimiterError> {
        let mut conn = self.connection().await?;
        let mut invocation = self.script.key(format!("isogate:r:{key}"));
        invocation.arg(interval_us).arg(tolerance_us).arg(cost).arg(quotas.len());
        for q in quotas {
            invocation.key(format!("isogate:q:{key}:{}:{}", q.quota.window.as_str(), q.start));
            invocation.arg(q.quota.limit).arg(q.end);
        }
        let answer: Vec<i64> = tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
            .await
            .map_err(|_| LimiterError::Timeout(self.timeout))?
            .map_err(|e| LimiterError::Redis(e.to_string()))?;
        match answer.as_slice() {
            [0, wait_us] => Ok(Shared::RateLimited(Duration::from_micros(u64::try_from(*wait_us).unwrap_or(0)))),
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
