//! Rate-limited diagnostic logging, for log lines a client can cause at will (a
//! refusal, a request while Redis is down). Under a flood such lines would make the
//! diagnostic log the bottleneck, so each call site gets a `LogLimiter`: at most
//! `per_second` lines in each one-second window, then nothing until the window rolls
//! over; the first line of a later window is preceded by one summary line,
//! "suppressed K similar lines". Every suppressed line is counted, and the counts are
//! exported as `isogate_log_lines_suppressed_total{target}` (see `metrics`).
//!
//! The audit trail is separate and never limited: this is only about stderr.
//!
//! A limiter is two atomics and a counter: one word packs the current window (whole
//! seconds since the process's first log call) and the lines shown in it, updated by
//! CAS; no lock, no allocation. A line whose level is filtered out is neither shown
//! nor counted.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

pub use log::Level;

/// Logs through one of this module's limiters:
/// `log_limited!(REJECT, Info, "request {} refused", id)`.
#[macro_export]
macro_rules! log_limited {
    ($site:ident, $level:ident, $($arg:tt)+) => {
        $crate::diag::$site.log($crate::diag::Level::$level, ::std::format_args!($($arg)+))
    };
}

/// Refusals (`isogate::reject`, info): at most 20 lines a second.
pub static REJECT: LogLimiter = LogLimiter::new("isogate::reject", 20);

/// The shared limiter failing a request (`isogate::ratelimit`, warn): at most 5 a second.
pub static RATELIMIT: LogLimiter = LogLimiter::new("isogate::ratelimit", 5);

/// Every limited call site, for the metric.
pub static SITES: [&LogLimiter; 2] = [&REJECT, &RATELIMIT];

const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// A per-call-site limit on log lines.
#[derive(Debug)]
pub struct LogLimiter {
    target: &'static str,
    per_second: u32,
    /// Window (high 32 bits) and lines shown in it (low 32 bits).
    window: AtomicU64,
    /// Suppressed since the last summary.
    pending: AtomicU64,
    /// Suppressed since start (the metric).
    suppressed: AtomicU64,
}

/// What a limiter decided for one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Show the line; first summarise this many suppressed lines when above 0.
    Show {
        /// Lines suppressed since the last summary.
        suppressed: u64,
    },
    /// Leave the line out (counted).
    Suppress,
}

impl LogLimiter {
    /// A limiter for `target` showing at most `per_second` lines a second (at least 1).
    pub const fn new(target: &'static str, per_second: u32) -> Self {
        Self {
            target,
            per_second: if per_second == 0 { 1 } else { per_second },
            window: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// The log target, also the metric's label value.
    pub fn target(&self) -> &'static str {
        self.target
    }

    /// Lines shown per one-second window.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Lines suppressed since start.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }

    /// Logs `args` at `level` under this limiter's target, unless this window's lines
    /// are used up.
    pub fn log(&self, level: Level, args: fmt::Arguments<'_>) {
        if !log::log_enabled!(target: self.target, level) {
            return;
        }
        if let Admission::Show { suppressed } = self.admit(now_window()) {
            if suppressed > 0 {
                log::log!(target: self.target, level, "suppressed {suppressed} similar lines (more than {} a second)", self.per_second);
            }
            log::log!(target: self.target, level, "{args}");
        }
    }

    /// Decides one line at `window` (whole seconds on any monotonic clock; tests pass
    /// their own). A window older than the current one counts in the current one.
    pub fn admit(&self, window: u64) -> Admission {
        let window = window & COUNT_MASK;
        let mut current = self.window.load(Ordering::Acquire);
        loop {
            let (at, shown) = (current >> COUNT_BITS, current & COUNT_MASK);
            let (next, rolled) = if window > at {
                ((window << COUNT_BITS) | 1, true)
            } else if shown < u64::from(self.per_second) {
                (current + 1, false)
            } else {
                self.pending.fetch_add(1, Ordering::Relaxed);
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return Admission::Suppress;
            };
            match self.window.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if rolled => return Admission::Show { suppressed: self.pending.swap(0, Ordering::Relaxed) },
                Ok(_) => return Admission::Show { suppressed: 0 },
                Err(actual) => current = actual,
            }
        }
    }
}

/// Whole seconds since the first call, plus one (so the first window is never 0,
/// the initial state).
fn now_window() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_secs() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_the_limit_per_window_then_summarises_what_it_left_out() {
        let l = LogLimiter::new("t", 3);
        let first: Vec<_> = (0..10).map(|_| l.admit(1)).collect();
        assert_eq!(first.iter().filter(|a| matches!(a, Admission::Show { .. })).count(), 3);
        assert_eq!(first[3..], [Admission::Suppress; 7]);
        assert_eq!(l.suppressed_total(), 7);
        // The window rolls: the first line of it carries the summary, once.
        assert_eq!(l.admit(2), Admission::Show { suppressed: 7 });
        assert_eq!(l.admit(2), Admission::Show { suppressed: 0 });
        assert_eq!(l.admit(2), Admission::Show { suppressed: 0 });
        assert_eq!(l.admit(2), Admission::Suppress);
        // A quiet gap changes nothing; a late caller with an old window counts in the current one.
        assert_eq!(l.admit(1), Admission::Suppress);
        assert_eq!(l.admit(9), Admission::Show { suppressed: 2 });
        assert_eq!(l.suppressed_total(), 9);
    }

    #[test]
    fn concurrent_callers_never_show_more_than_the_limit() {
        let l = LogLimiter::new("t", 50);
        let shown = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if matches!(l.admit(5), Admission::Show { .. }) {
                            shown.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(shown.into_inner(), 50);
        assert_eq!(l.suppressed_total(), 40_000 - 50);
    }

    #[test]
    fn every_site_has_its_own_target() {
        let mut targets: Vec<_> = SITES.iter().map(|s| s.target()).collect();
        targets.dedup();
        assert_eq!(targets, ["isogate::reject", "isogate::ratelimit"]);
    }
}
