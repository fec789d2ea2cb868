//! Weekly time windows for `when = { inside | outside = "...", tz = "..." }`.
//!
//! A window is a set of weekdays and a time range in a time zone's civil (wall-clock) time:
//! `Mon-Fri 08:00-18:00`, `Sat,Sun 00:00-24:00`, `Wed 09:00-10:00`. A range whose end is before
//! its start crosses midnight and belongs to the day it starts on: `Fri 22:00-06:00` runs from
//! Friday 22:00 to Saturday 06:00.
//!
//! Membership is decided on the civil time of the instant, so around a DST change a window
//! follows the clock on the wall: a window starting at 02:30 on the night the clocks jump from
//! 02:00 to 03:00 opens at the jump, and a window in the hour that repeats when the clocks go
//! back is entered twice. [`When::next_transition`] reports exactly the instants where
//! membership changes, so the daemon recompiles neither too late nor needlessly.
use std::fmt;

use jiff::{
    SignedDuration, Timestamp, ToSpan as _,
    civil::{Date, DateTime, Time},
    tz::TimeZone,
};

/// Minutes in a day: the end of a window that runs until midnight (`24:00`).
const DAY_MINUTES: u16 = 24 * 60;
const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Why a window does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("expected `DAYS HH:MM-HH:MM`, like `Mon-Fri 08:00-18:00`")]
    Shape,
    #[error(
        "unknown day `{0}`: expected Mon, Tue, Wed, Thu, Fri, Sat or Sun, or a range like Mon-Fri"
    )]
    Day(String),
    #[error("bad time `{0}`: expected HH:MM from 00:00 to 23:59, or 24:00 as an end")]
    Time(String),
    #[error("the window is empty: it starts and ends at {0} (a whole day is 00:00-24:00)")]
    Empty(String),
}

/// A weekly window in civil time (no time zone yet; see [`When`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeWindow {
    /// Bit `i`: the window starts on weekday `i` (0 = Monday).
    days: u8,
    /// Minute of the day the window opens, 0..1440.
    start: u16,
    /// Minute of the day it closes, 1..=1440; at or before `start` means the next day.
    end: u16,
}

impl TimeWindow {
    /// Parses `DAYS HH:MM-HH:MM`, where `DAYS` is a comma-separated list of days (`Mon`, case
    /// insensitive) and ranges (`Mon-Fri`; a range may wrap around the week: `Fri-Mon`).
    ///
    /// # Errors
    /// When the text is not such a window, or the window is empty (start = end).
    pub fn parse(text: &str) -> Result<Self, WindowError> {
        let (days, times) = text
            .trim()
            .rsplit_once(char::is_whitespace)
            .ok_or(WindowError::Shape)?;
        let (start, end) = times.split_once('-').ok_or(WindowError::Shape)?;
        let start_minute = parse_time(start, false)?;
        let end_minute = parse_time(end, true)?;
        if start_minute == end_minute {
            return Err(WindowError::Empty(start.to_owned()));
        }
        let mut mask = 0u8;
        for item in days.split(',').map(str::trim) {
            mask |= parse_days(item)?;
        }
        Ok(Self {
            days: mask,
            start: start_minute,
            // `22:00-00:00` is `22:00-24:00`.
            end: if end_minute == 0 {
                DAY_MINUTES
            } else {
                end_minute
            },
        })
    }

    fn starts_on(&self, day: usize) -> bool {
        self.days & (1 << (day % 7)) != 0
    }

    fn crosses_midnight(&self) -> bool {
        self.end <= self.start
    }

    /// Whether the civil date-time `dt` is inside the window.
    #[must_use]
    pub fn contains(&self, dt: DateTime) -> bool {
        let day = usize::from(dt.weekday().to_monday_zero_offset().unsigned_abs());
        let minute =
            u16::from(dt.hour().unsigned_abs()) * 60 + u16::from(dt.minute().unsigned_abs());
        if self.crosses_midnight() {
            (self.starts_on(day) && minute >= self.start)
                || (self.starts_on(day + 6) && minute < self.end)
        } else {
            self.starts_on(day) && self.start <= minute && minute < self.end
        }
    }

    /// Civil opening and closing date-times of the occurrence starting on `date`, if one does.
    fn occurrence(&self, date: Date) -> Option<(DateTime, DateTime)> {
        let day = usize::from(date.weekday().to_monday_zero_offset().unsigned_abs());
        if !self.starts_on(day) {
            return None;
        }
        let at = |date: Date, minute: u16| -> Option<DateTime> {
            if minute == DAY_MINUTES {
                return Some(date.tomorrow().ok()?.to_datetime(Time::midnight()));
            }
            let time = Time::new(
                i8::try_from(minute / 60).ok()?,
                i8::try_from(minute % 60).ok()?,
                0,
                0,
            )
            .ok()?;
            Some(date.to_datetime(time))
        };
        let end_date = if self.crosses_midnight() {
            date.tomorrow().ok()?
        } else {
            date
        };
        Some((at(date, self.start)?, at(end_date, self.end)?))
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = (0..7)
            .filter(|&d| self.starts_on(d))
            .filter_map(|d| DAY_NAMES.get(d).copied())
            .collect();
        write!(
            f,
            "{} {:02}:{:02}-{:02}:{:02}",
            names.join(","),
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

fn parse_day(name: &str) -> Result<usize, WindowError> {
    DAY_NAMES
        .iter()
        .position(|d| d.eq_ignore_ascii_case(name))
        .ok_or_else(|| WindowError::Day(name.to_owned()))
}

/// The day mask of `Mon` or `Mon-Fri`.
fn parse_days(item: &str) -> Result<u8, WindowError> {
    let (first, last) = if let Some((a, b)) = item.split_once('-') {
        (parse_day(a.trim())?, parse_day(b.trim())?)
    } else {
        let d = parse_day(item)?;
        (d, d)
    };
    let mut mask = 0u8;
    let mut day = first;
    loop {
        mask |= 1 << day;
        if day == last {
            return Ok(mask);
        }
        day = (day + 1) % 7;
    }
}

/// Minute of the day of `HH:MM`; `24:00` only when `is_end`.
fn parse_time(text: &str, is_end: bool) -> Result<u16, WindowError> {
    let bad = || WindowError::Time(text.to_owned());
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let two_digits = |s: &str| {
        (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u16>().ok())
            .flatten()
    };
    let (h, m) = (
        two_digits(h).ok_or_else(bad)?,
        two_digits(m).ok_or_else(bad)?,
    );
    match (h, m) {
        (24, 0) if is_end => Ok(DAY_MINUTES),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

/// Whether a rule is active inside or outside its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    Inside,
    Outside,
}

/// A rule's `when`: the rule is active inside (or outside) a window, read in a time zone.
#[derive(Clone, Debug)]
pub struct When {
    pub activity: Activity,
    pub window: TimeWindow,
    /// IANA name as written in the policy (`UTC` when omitted).
    pub tz_name: String,
    pub tz: TimeZone,
}

impl When {
    /// Whether the window contains the instant `ts`.
    #[must_use]
    pub fn is_inside(&self, ts: Timestamp) -> bool {
        self.window.contains(self.tz.to_datetime(ts))
    }

    /// Whether the rule is active at `ts`.
    #[must_use]
    pub fn is_active(&self, ts: Timestamp) -> bool {
        self.is_inside(ts) == (self.activity == Activity::Inside)
    }

    /// The first instant strictly after `after` at which [`When::is_inside`] changes, or `None`
    /// when it never does (a window covering the whole week).
    #[must_use]
    pub fn next_transition(&self, after: Timestamp) -> Option<Timestamp> {
        // Membership can only change where the civil time reaches an opening or closing time
        // (once, or twice in a repeated hour) or where it jumps (a time zone transition). Every
        // weekday recurs within 8 days; the margins cover windows crossing midnight and offsets.
        let today = self.tz.to_datetime(after).date();
        let first = today.checked_sub(2.days()).ok()?;
        let horizon = self
            .tz
            .to_timestamp(
                today
                    .checked_add(10.days())
                    .ok()?
                    .to_datetime(Time::midnight()),
            )
            .ok()?;
        let mut candidates: Vec<Timestamp> = Vec::new();
        let mut date = first;
        for _ in 0..12 {
            if let Some((open, close)) = self.window.occurrence(date) {
                for civil in [open, close] {
                    let ambiguous = self.tz.to_ambiguous_timestamp(civil);
                    candidates.extend(ambiguous.earlier().ok());
                    candidates.extend(ambiguous.later().ok());
                }
            }
            date = date.tomorrow().ok()?;
        }
        candidates.extend(
            self.tz
                .following(after)
                .map(|t| t.timestamp())
                .take_while(|&t| t <= horizon),
        );
        candidates.retain(|&t| t > after);
        candidates.sort_unstable();
        candidates.dedup();
        candidates.into_iter().find(|&t| {
            t.checked_sub(SignedDuration::from_nanos(1))
                .is_ok_and(|before| self.is_inside(before) != self.is_inside(t))
        })
    }
}

#[cfg(test)]
mod tests;
