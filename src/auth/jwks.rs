//! Remote key sets: one process-wide JWKS cache per issuer, read lock-free on the
//! request path and refreshed in the background.
//!
//! Lifecycle: fetch at start (readiness waits for it); refresh on the IdP's
//! `Cache-Control: max-age`, clamped to the configured bounds and never later than half
//! of `max_staleness`, so keys cannot go stale while the IdP is up (the config check
//! also insists on `max_staleness` > `refresh_min`); while the IdP is down or serves
//! garbage, the last good keys keep working up to `max_staleness`, then verification
//! fails closed with `keys_unavailable`. Keys come only from the configured URL, never
//! from token headers.
//!
//! Unknown `kid`s: one single-flight refetch, then a cooldown (`unknown_kid_cooldown`,
//! default 5 s, at most 60 s) during which further unknown `kid`s are refused without a
//! fetch. Bound: however many forged `kid`s arrive, the IdP sees at most one such fetch
//! per cooldown (plus the regular refreshes, which run on their own schedule), and a
//! key the IdP really rotated in is accepted at most one cooldown plus one fetch after
//! its first token, because whichever unknown `kid` wins the next refetch brings in the
//! whole current set. Stale keys do not stop this: an unknown `kid` still refetches.

mod fetch;
mod keys;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use jsonwebtoken::Algorithm;
use prometheus::{IntCounter, IntCounterVec, IntGauge};

pub use fetch::FetchError;
pub use keys::{KeyEntry, KeySet};

use super::AuthError;

/// Where the key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS URL.
    Jwks(String),
    /// An OpenID discovery document naming `jwks_uri` and `issuer`.
    Discovery(String),
}

/// Refresh and staleness settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksSettings {
    /// Fetch timeout.
    pub fetch_timeout: Duration,
    /// Shortest refresh interval.
    pub refresh_min: Duration,
    /// Longest refresh interval.
    pub refresh_max: Duration,
    /// How long the last good keys keep working without a successful refresh.
    pub max_staleness: Duration,
    /// Minimum time between two unknown-`kid` refetches.
    pub unknown_kid_cooldown: Duration,
}

/// Metric handles of one issuer, resolved when the server starts.
#[derive(Debug, Clone)]
pub struct JwksMetrics {
    /// `isogate_jwks_fetches_total{issuer,result}`.
    pub fetches: IntCounterVec,
    /// `isogate_jwks_keys{issuer}`.
    pub keys: IntGauge,
    /// `isogate_jwks_last_success_timestamp_seconds{issuer}`.
    pub last_success: IntGauge,
    /// `isogate_jwks_unknown_kid_refetches_total{issuer}`.
    pub unknown_kid_refetches: IntCounter,
    /// `isogate_jwks_cooldown_hits_total{issuer}`.
    pub cooldown_hits: IntCounter,
}

/// What an unknown-`kid` refetch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refetch {
    /// The key set was refreshed (by this call or a concurrent one).
    Refreshed,
    /// A refetch happened too recently; nothing was fetched.
    CoolingDown,
    /// The fetch failed; the last good keys stay.
    Failed,
}

/// The key cache of one issuer.
pub struct RemoteKeys {
    /// Issuer name, for logs and metric labels.
    pub name: Box<str>,
    iss: Box<str>,
    source: KeySource,
    allowed: Box<[Algorithm]>,
    settings: JwksSettings,
    client: reqwest::Client,
    state: ArcSwap<KeySet>,
    refresh_lock: tokio::sync::Mutex<()>,
    last_unknown_kid_ms: AtomicU64,
    metrics: OnceLock<JwksMetrics>,
    ca_file: Option<std::path::PathBuf>,
    retired: std::sync::atomic::AtomicBool,
    retire_signal: tokio::sync::Notify,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys").field("name", &self.name).field("source", &self.source).finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RemoteKeys {
    /// Builds an empty cache; nothing is fetched until `refresh` or `run`.
    pub fn new(
        name: &str,
        iss: &str,
        source: KeySource,
        allowed: &[Algorithm],
        settings: JwksSettings,
        client: reqwest::Client,
        ca_file: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            name: name.into(),
            iss: iss.into(),
            source,
            allowed: allowed.into(),
            settings,
            client,
            state: ArcSwap::from_pointee(KeySet::default()),
            refresh_lock: tokio::sync::Mutex::new(()),
            last_unknown_kid_ms: AtomicU64::new(0),
            metrics: OnceLock::new(),
            ca_file,
            retired: std::sync::atomic::AtomicBool::new(false),
            retire_signal: tokio::sync::Notify::new(),
        }
    }

    /// Whether `other` fetches the same keys the same way (so a reload can keep this
    /// cache and its keys).
    pub fn same_source(&self, other: &RemoteKeys) -> bool {
        self.name == other.name
            && self.iss == other.iss
            && self.source == other.source
            && self.allowed == other.allowed
            && self.settings == other.settings
            && self.ca_file == other.ca_file
    }

    /// Stops the background refresh (the issuer left the configuration).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.retire_signal.notify_waiters();
    }

    /// Attaches metric handles (once).
    pub fn attach_metrics(&self, metrics: JwksMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// The current key set.
    pub fn current(&self) -> Arc<KeySet> {
        self.state.load_full()
    }

    /// Whether usable, fresh-enough keys are held.
    pub fn ready(&self) -> bool {
        self.state.load().usable(now_ms(), self.settings.max_staleness)
    }

    /// The key for a token, or why there is none. Stale keys verify nothing, but a `kid`
    /// they do not hold is still `UnknownKid`, so it can trigger a refetch.
    pub(crate) fn key_for(&self, set: &KeySet, kid: Option<&str>, alg: Algorithm) -> Result<KeyEntry, AuthError> {
        if !set.usable(now_ms(), self.settings.max_staleness) {
            return match set.find(kid, alg) {
                Err(AuthError::UnknownKid) if !set.is_empty() => Err(AuthError::UnknownKid),
                _ => Err(AuthError::KeysUnavailable),
            };
        }
        set.find(kid, alg).cloned()
    }

    /// When to refresh after a fetch that said `max_age`: the IdP's wish within the
    /// configured bounds, but soon enough that the keys never go stale meanwhile.
    fn next_refresh(&self, max_age: Option<Duration>) -> Duration {
        let s = &self.settings;
        max_age
            .unwrap_or(s.refresh_max)
            .clamp(s.refresh_min, s.refresh_max)
            .min(s.max_staleness / 2)
            .max(Duration::from_secs(1))
    }

    /// Fetches the key set now. On success the new set replaces the old one and the
    /// next refresh interval is returned; on failure the old set stays.
    pub async fn refresh(&self) -> Result<Duration, FetchError> {
        let result =
            fetch::key_set(&self.client, &self.source, &self.iss, &self.allowed, self.settings.fetch_timeout).await;
        let metrics = self.metrics.get();
        match result {
            Ok((keys, max_age)) => {
                let generation = self.state.load().generation + 1;
                let count = keys.len();
                self.state.store(Arc::new(KeySet::new(keys, now_ms(), generation)));
                if let Some(m) = metrics {
                    m.fetches.with_label_values(&[&self.name, "ok"]).inc();
                    m.keys.set(i64::try_from(count).unwrap_or(i64::MAX));
                    m.last_success.set(i64::try_from(now_ms() / 1000).unwrap_or(0));
                }
                Ok(self.next_refresh(max_age))
            }
            Err(e) => {
                log::warn!(target: "isogate::jwks", "issuer {}: key refresh failed, keeping the last good keys: {e}", self.name);
                if let Some(m) = metrics {
                    m.fetches.with_label_values(&[&self.name, e.result()]).inc();
                }
                Err(e)
            }
        }
    }

    /// One single-flight refetch for a token whose `kid` is not in the set, unless one
    /// happened within the cooldown.
    pub async fn refetch_unknown_kid(&self) -> Refetch {
        let cooldown = u64::try_from(self.settings.unknown_kid_cooldown.as_millis()).unwrap_or(u64::MAX);
        let cooling = |last: u64| now_ms().saturating_sub(last) < cooldown && last != 0;
        if cooling(self.last_unknown_kid_ms.load(Ordering::Acquire)) {
            self.count(|m| &m.cooldown_hits);
            return Refetch::CoolingDown;
        }
        let generation = self.state.load().generation;
        let _flight = self.refresh_lock.lock().await;
        if self.state.load().generation != generation {
            return Refetch::Refreshed;
        }
        if cooling(self.last_unknown_kid_ms.load(Ordering::Acquire)) {
            self.count(|m| &m.cooldown_hits);
            return Refetch::CoolingDown;
        }
        self.last_unknown_kid_ms.store(now_ms(), Ordering::Release);
        self.count(|m| &m.unknown_kid_refetches);
        match self.refresh().await {
            Ok(_) => Refetch::Refreshed,
            Err(_) => Refetch::Failed,
        }
    }

    fn count(&self, pick: impl Fn(&JwksMetrics) -> &IntCounter) {
        if let Some(m) = self.metrics.get() {
            pick(m).inc();
        }
    }

    /// Refreshes until `shutdown` flips: on the IdP's schedule after a success, with a
    /// growing backoff (1 s up to `refresh_min`) after a failure.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let wait = {
                let _flight = self.refresh_lock.lock().await;
                match self.refresh().await {
                    Ok(next) => {
                        backoff = Duration::from_secs(1);
                        next
                    }
                    Err(_) => {
                        let wait = backoff;
                        backoff = (backoff * 2).min(self.settings.refresh_min.max(Duration::from_secs(1)));
                        wait
                    }
                }
            };
            if self.retired.load(Ordering::Acquire) {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
                _ = self.retire_signal.notified() => return,
            }
        }
    }
}
