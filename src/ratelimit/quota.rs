//! Quotas over calendar windows (minute, hour, day, month) in a timezone: a real
//! calendar month, days that follow DST changes, and counts that reset exactly at the
//! window boundary in the tenant's (or plan's) timezone.
//!
//! The local counters keep one small entry per active tenant in a sharded map (short
//! per-shard locks, not lock-free: quotas need exact counts); an entry whose windows
//! have all ended is as good as absent and is purged when the map exceeds its bound.

use std::time::Duration;

use dashmap::DashMap;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// A calendar window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    /// A clock minute.
    Minute,
    /// A clock hour.
    Hour,
    /// A calendar day.
    Day,
    /// A calendar month.
    Month,
}

impl Window {
    /// Label for headers, metrics and Redis keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    /// Start and end (epoch seconds) of the window containing `now` in `tz`.
    pub fn bounds(self, now: Timestamp, tz: &TimeZone) -> (i64, i64) {
        let zoned = now.to_zoned(tz.clone());
        let start = self.start(&zoned).unwrap_or_else(|| zoned.clone());
        let span = match self {
            Window::Minute => 1.minute(),
            Window::Hour => 1.hour(),
            Window::Day => 1.day(),
            Window::Month => 1.month(),
        };
        let end = start.checked_add(span).map_or(i64::MAX, |z| z.timestamp().as_second());
        (start.timestamp().as_second(), end)
    }

    fn start(self, z: &Zoned) -> Option<Zoned> {
        match self {
            Window::Minute => z.with().second(0).subsec_nanosecond(0).build().ok(),
            Window::Hour => z.with().minute(0).second(0).subsec_nanosecond(0).build().ok(),
            Window::Day => z.start_of_day().ok(),
            Window::Month => z.first_of_month().ok()?.start_of_day().ok(),
        }
    }
}

/// One quota of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The window.
    pub window: Window,
    /// Requests (cost units) allowed per window.
    pub limit: u64,
}

/// A quota that is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// Which window ran out.
    pub window: Window,
    /// Its limit.
    pub limit: u64,
    /// Time until the window ends.
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    start: i64,
    used: u64,
}

/// Local quota counters.
#[derive(Debug)]
pub struct QuotaCounters {
    map: DashMap<Box<str>, [Counter; 4]>,
    max_entries: usize,
}

impl QuotaCounters {
    /// Counters for at most about `max_entries` active tenants.
    pub fn new(max_entries: usize) -> Self {
        Self { map: DashMap::new(), max_entries }
    }

    /// Charges `cost` against every quota, or refuses without charging any. `share`
    /// divides each limit (a gateway's share of a cluster-wide quota).
    pub fn charge(
        &self,
        key: &str,
        quotas: &[Quota],
        tz: &TimeZone,
        cost: u64,
        now: Timestamp,
        share: u64,
    ) -> Result<(), Exhausted> {
        if quotas.is_empty() {
            return Ok(());
        }
        if self.map.len() >= self.max_entries && !self.map.contains_key(key) {
            self.purge(now.as_second());
        }
        let mut entry = self.map.entry(key.into()).or_default();
        let counters = entry.value_mut();
        let bounds: Vec<(i64, i64)> = quotas.iter().map(|q| q.window.bounds(now, tz)).collect();
        for (q, (start, end)) in quotas.iter().zip(&bounds) {
            let c = &counters[q.window as usize];
            let used = if c.start == *start { c.used } else { 0 };
            let limit = (q.limit / share.max(1)).max(1);
            if used + cost > limit {
                let retry_after = Duration::from_secs(u64::try_from(end - now.as_second()).unwrap_or(0).max(1));
                return Err(Exhausted { window: q.window, limit, retry_after });
            }
        }
        for (q, (start, _)) in quotas.iter().zip(&bounds) {
            let c = &mut counters[q.window as usize];
            if c.start != *start {
                *c = Counter { start: *start, used: 0 };
            }
            c.used += cost;
        }
        Ok(())
    }

    /// Drops tenants whose counted windows have all ended (a month at most).
    fn purge(&self, now: i64) {
        self.map.retain(|_, counters| counters.iter().any(|c| c.used > 0 && now - c.start < 31 * 86_400));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    #[test]
    fn months_are_calendar_months() {
        let (start, end) = Window::Month.bounds(ts("2026-02-15T12:00:00Z"), &utc());
        assert_eq!(start, ts("2026-02-01T00:00:00Z").as_second());
        assert_eq!(end, ts("2026-03-01T00:00:00Z").as_second());
        let (start, end) = Window::Month.bounds(ts("2028-02-29T23:59:59Z"), &utc());
        assert_eq!(end - start, 29 * 86_400, "leap February");
        let (_, end) = Window::Month.bounds(ts("2026-12-31T23:00:00Z"), &utc());
        assert_eq!(end, ts("2027-01-01T00:00:00Z").as_second());
    }

    #[test]
    fn windows_follow_the_timezone_and_dst() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 23:30 UTC on 2026-03-31 is already April 1st in Berlin (UTC+2).
        let (start, _) = Window::Month.bounds(ts("2026-03-31T23:30:00Z"), &berlin);
        assert_eq!(start, ts("2026-03-31T22:00:00Z").as_second());
        // The day DST starts has 23 hours.
        let (start, end) = Window::Day.bounds(ts("2026-03-29T12:00:00Z"), &berlin);
        assert_eq!(end - start, 23 * 3_600);
        let (start, end) = Window::Hour.bounds(ts("2026-03-29T12:34:56Z"), &berlin);
        assert_eq!((start, end - start), (ts("2026-03-29T12:00:00Z").as_second(), 3_600));
        let kolkata = TimeZone::get("Asia/Kolkata").unwrap();
        let (start, _) = Window::Day.bounds(ts("2026-06-01T20:00:00Z"), &kolkata);
        assert_eq!(start, ts("2026-06-01T18:30:00Z").as_second());
    }

    #[test]
    fn quotas_refuse_at_the_limit_and_reset_at_the_boundary() {
        let q = QuotaCounters::new(100);
        let quotas = [Quota { window: Window::Minute, limit: 3 }, Quota { window: Window::Day, limit: 5 }];
        let t0 = ts("2026-05-31T23:58:10Z");
        for _ in 0..3 {
            q.charge("acme", &quotas, &utc(), 1, t0, 1).unwrap();
        }
        let e = q.charge("acme", &quotas, &utc(), 1, t0, 1).unwrap_err();
        assert_eq!((e.window, e.retry_after), (Window::Minute, Duration::from_secs(50)));
        let t1 = ts("2026-05-31T23:59:00Z");
        q.charge("acme", &quotas, &utc(), 2, t1, 1).unwrap();
        let e = q.charge("acme", &quotas, &utc(), 1, t1, 1).unwrap_err();
        assert_eq!((e.window, e.retry_after), (Window::Day, Duration::from_secs(60)), "the day ran out first");
        q.charge("acme", &quotas, &utc(), 1, ts("2026-06-01T00:00:00Z"), 1).unwrap();
        q.charge("globex", &quotas, &utc(), 3, t0, 1).unwrap();
    }

    #[test]
    fn a_share_divides_each_limit() {
        let q = QuotaCounters::new(100);
        let quotas = [Quota { window: Window::Hour, limit: 10 }];
        let t = ts("2026-01-01T10:00:00Z");
        assert!(q.charge("k", &quotas, &utc(), 5, t, 2).is_ok());
        assert!(q.charge("k", &quotas, &utc(), 1, t, 2).is_err());
    }
}
