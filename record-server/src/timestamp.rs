//! The `Last updated: YYYY-MM-DD HH:MM:SS` line the server puts at the top of every record, and
//! the same timestamp in the record file. Local time, as the seed's server wrote it.

use std::time::Duration;

use chrono::{Local, NaiveDateTime, Timelike};

/// The first line's prefix.
pub const PREFIX: &str = "Last updated: ";
/// The `strftime` format of a timestamp.
pub const FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// A timestamp as stored: `2024-03-18 13:14:33`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(NaiveDateTime);

impl Timestamp {
    /// The current local time, to the second.
    pub fn now() -> Timestamp {
        let now = Local::now().naive_local();
        Timestamp(now.with_nanosecond(0).unwrap_or(now))
    }

    /// Reads `2024-03-18 13:14:33`.
    pub fn parse(text: &str) -> Option<Timestamp> {
        NaiveDateTime::parse_from_str(text.trim(), FORMAT)
            .ok()
            .map(Timestamp)
    }

    /// How long ago this was, as of `now` (zero for a time in the future).
    pub fn age(self, now: Timestamp) -> Duration {
        (now.0 - self.0).to_std().unwrap_or(Duration::ZERO)
    }

    /// The timestamp in a record's first line, if it has one.
    pub fn of_record(content: &str) -> Option<Timestamp> {
        let first = content.lines().next()?;
        Timestamp::parse(first.strip_prefix(PREFIX)?)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format(FORMAT))
    }
}

/// `content` with its first line set to `Last updated: <at>`: a first line that already starts
/// with `Last updated:` (the client's own, or an older one of ours) is replaced, otherwise the
/// line is added on top.
pub fn stamp(content: &str, at: Timestamp) -> String {
    let body = if content.starts_with(PREFIX.trim_end()) {
        content.split_once('\n').map_or("", |(_, body)| body)
    } else {
        content
    };
    if body.is_empty() {
        format!("{PREFIX}{at}")
    } else {
        format!("{PREFIX}{at}\n{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    #[test]
    fn the_clients_line_is_replaced() {
        let sent = "Last updated: 2024-03-18 13:14:33\nStudent ID: 1\nName: A";
        assert_eq!(
            stamp(sent, at("2026-11-21 10:00:00")),
            "Last updated: 2026-11-21 10:00:00\nStudent ID: 1\nName: A"
        );
    }

    #[test]
    fn a_record_without_the_line_gets_one_on_top() {
        assert_eq!(
            stamp("Student ID: 1\nName: A", at("2026-11-21 10:00:00")),
            "Last updated: 2026-11-21 10:00:00\nStudent ID: 1\nName: A"
        );
        assert_eq!(
            stamp("", at("2026-11-21 10:00:00")),
            "Last updated: 2026-11-21 10:00:00"
        );
    }

    #[test]
    fn a_record_that_is_only_the_line_stays_one_line() {
        assert_eq!(
            stamp("Last updated: whenever", at("2026-11-21 10:00:00")),
            "Last updated: 2026-11-21 10:00:00"
        );
    }

    #[test]
    fn timestamps_round_trip_and_age() {
        let t = at("2024-03-16 04:11:01");
        assert_eq!(t.to_string(), "2024-03-16 04:11:01");
        assert_eq!(t.age(at("2024-03-16 04:12:01")), Duration::from_secs(60));
        assert_eq!(at("2024-03-16 04:12:01").age(t), Duration::ZERO);
        assert_eq!(Timestamp::parse("2024-03-16"), None);
        assert_eq!(
            Timestamp::of_record("Last updated: 2024-03-16 04:11:01\nStudent ID: 1"),
            Some(t)
        );
        assert_eq!(Timestamp::of_record("Student ID: 1"), None);
        let now = Timestamp::now();
        assert_eq!(Timestamp::parse(&now.to_string()), Some(now));
    }
}
