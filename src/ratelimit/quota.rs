//! Quotas over calendar windows (minute, hour, day, month) in a timezone: a real
//! calendar month, days that follow DST changes, and counts that reset exactly at the
//! window boundary in the tenant's (or plan's) timezone.
//!
//! The local counters (`counters`) hold exact counts for a bounded number of keys; their
//! memory and error bounds are stated there.

mod counters;

use std::time::Duration;

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

pub use counters::QuotaCounters;

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
}
