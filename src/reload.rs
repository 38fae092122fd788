//! Hot reload: re-read, parse and compile the configuration off the request path, and
//! swap it in only if it compiles cleanly. A bad file keeps the running configuration
//! and reports every error (log, `isogate_config_reloads_total{result="error"}`).
//!
//! State survives where its configuration did not change: JWKS caches (and their keys),
//! verified tokens (per issuer, see `Authenticator::adopt_cache`), the rate
//! limiter's counters, and each database target's pooled server connections (while
//! what they are made with is unchanged, see `database::pool`). Listener, admin, thread and audit settings need a
//! restart; a reload that changes them keeps the running ones and says so.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::auth::jwks::RemoteKeys;
use crate::config::{process_env, Source};
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotCell};

/// What a successful reload changed in the key caches.
#[derive(Debug, Default)]
pub struct KeyChanges {
    /// JWKS caches that are new and need a refresh task.
    pub started: Vec<Arc<RemoteKeys>>,
    /// JWKS caches no longer in use (already retired).
    pub retired: usize,
}

/// Reloads one configuration file into a `SnapshotCell`.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    cell: Arc<SnapshotCell>,
    metrics: Metrics,
    seen: Mutex<Vec<(PathBuf, Option<SystemTime>)>>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Reloader {
    /// A reloader for `path`, whose current snapshot is in `cell`.
    pub fn new(path: &Path, cell: Arc<SnapshotCell>, metrics: Metrics) -> Self {
        let reloader = Self { path: path.to_owned(), cell, metrics, seen: Mutex::new(Vec::new()) };
        reloader.remember_files();
        reloader
    }

    /// The configuration file and every tenant map it names.
    fn watched(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        if let Ok(source) = Source::read(&self.path) {
            if let Ok(file) = source.parse() {
                files.extend(
                    file.environments
                        .values()
                        .filter_map(|e| e.tenant_map_file.as_ref())
                        .map(|m| source.resolve(m.get_ref())),
                );
            }
        }
        files
    }

    /// Each watched file with its modification time.
    fn file_times(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        self.watched()
            .into_iter()
            .map(|p| {
                let m = modified(&p);
                (p, m)
            })
            .collect()
    }

    fn remember_files(&self) {
        let now = self.file_times();
        if let Ok(mut seen) = self.seen.lock() {
            *seen = now;
        }
    }

    /// Whether a watched file changed since the last call (or the last reload). Only
    /// modification times are read: the list of files is the one the last reload (or
    /// the start) found, and any edit that changes it changes the configuration file.
    pub fn files_changed(&self) -> bool {
        let Ok(mut seen) = self.seen.lock() else { return false };
        let mut changed = false;
        for (path, time) in seen.iter_mut() {
            let now = modified(path);
            changed |= *time != now;
            *time = now;
        }
        changed
    }

    /// Reloads now. On success the new snapshot is in force; on failure the running one
    /// stays and the rendered errors are returned.
    pub fn reload(&self) -> Result<KeyChanges, String> {
        let started = std::time::Instant::now();
        let result = self.compile();
        let outcome = match result {
            Ok(mut next) => {
                let previous = self.cell.load();
                next.adopt_state(&previous);
                let restart_needed = next.settings != previous.settings;
                if restart_needed {
                    log::warn!(target: "isogate::reload", "listener, admin, thread or audit settings changed: they take effect at the next restart");
                    next.settings = previous.settings.clone();
                }
                let changes = key_changes(&previous, &next);
                let generation = self.cell.store(next);
                self.metrics.config_generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
                self.metrics.config_reloads.with_label_values(&["ok"]).inc();
                self.metrics.config_last_reload.set(jiff::Timestamp::now().as_second());
                self.metrics.config_last_reload_successful.set(1);
                log::info!(
                    target: "isogate::reload",
                    "configuration reloaded from {} (generation {generation}) in {:?}",
                    self.path.display(),
                    started.elapsed()
                );
                Ok(changes)
            }
            Err(errors) => {
                self.metrics.config_reloads.with_label_values(&["error"]).inc();
                self.metrics.config_last_reload_successful.set(0);
                log::error!(target: "isogate::reload", "configuration NOT reloaded; the running one stays:\n{errors}");
                Err(errors)
            }
        };
        self.remember_files();
        outcome
    }

    fn compile(&self) -> Result<Snapshot, String> {
        Snapshot::load(&self.path, &process_env)
    }
}

/// Which JWKS caches the new snapshot starts, and retires the ones it dropped.
fn key_changes(previous: &Snapshot, next: &Snapshot) -> KeyChanges {
    let mut changes = KeyChanges::default();
    for new in next.auth.remote_keys() {
        if !previous.auth.remote_keys().any(|old| Arc::ptr_eq(old, new)) {
            changes.started.push(Arc::clone(new));
        }
    }
    for old in previous.auth.remote_keys() {
        if !next.auth.remote_keys().any(|new| Arc::ptr_eq(old, new)) {
            old.retire();
            changes.retired += 1;
        }
    }
    changes
}
