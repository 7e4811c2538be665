//! Wall-clock instants as RFC 3339 text and as nanoseconds since the Unix epoch.
//!
//! Hand-written so the crate needs no date library: the calendar arithmetic is Howard
//! Hinnant's `days_from_civil` / `civil_from_days` (proleptic Gregorian calendar, UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// Why a timestamp could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("`{input}` is not an RFC 3339 timestamp like 2026-11-26T19:30:01Z: {problem}")]
    Malformed {
        input: String,
        problem: &'static str,
    },
    #[error("`{input}` is outside the range of this system's clock")]
    OutOfRange { input: String },
}

/// Formats `t` as RFC 3339 in UTC: `2026-11-26T19:30:01.123456789Z`.
///
/// The fraction is omitted when it is zero and otherwise shortened to milliseconds or
/// microseconds when that loses nothing, so every output parses back to the same instant.
/// Instants before 1970 are formatted like any other. Years outside 0000–9999 cannot be
/// written in RFC 3339; they come out with more digits or a sign.
pub fn rfc3339(t: SystemTime) -> String {
    let (secs, nanos) = split(t);
    let mut out = format_seconds(secs);
    if nanos != 0 {
        if nanos % 1_000_000 == 0 {
            out.push_str(&format!(".{:03}", nanos / 1_000_000));
        } else if nanos % 1_000 == 0 {
            out.push_str(&format!(".{:06}", nanos / 1_000));
        } else {
            out.push_str(&format!(".{nanos:09}"));
        }
    }
    out.push('Z');
    out
}

/// Formats `t` as RFC 3339 in UTC, truncated to whole seconds: `2026-11-26T19:30:01Z`.
pub fn rfc3339_seconds(t: SystemTime) -> String {
    let (secs, _) = split(t);
    let mut out = format_seconds(secs);
    out.push('Z');
    out
}

/// Parses an RFC 3339 timestamp (`2026-11-26T19:30:01.5Z`, `2026-11-26T20:30:01+01:00`).
///
/// Accepts `T`, `t` or a space between date and time, any number of fraction digits
/// (beyond nanoseconds they are truncated), `Z`, `z` or a `±HH:MM` offset. Instants before
/// 1970 are accepted. Leap seconds (`:60`) are rejected: nothing Chronicle writes has them.
pub fn parse_rfc3339(input: &str) -> Result<SystemTime, TimeError> {
    let malformed = |problem| TimeError::Malformed {
        input: input.to_owned(),
        problem,
    };
    let b = input.as_bytes();
    let expect = |at: usize, allowed: &[u8], problem| match b.get(at) {
        Some(c) if allowed.contains(c) => Ok(()),
        _ => Err(malformed(problem)),
    };
    let year = digits(b, 0, 4).ok_or_else(|| malformed("expected a four-digit year"))?;
    expect(4, b"-", "expected `-` after the year")?;
    let month = digits(b, 5, 2).ok_or_else(|| malformed("expected a two-digit month"))?;
    expect(7, b"-", "expected `-` after the month")?;
    let day = digits(b, 8, 2).ok_or_else(|| malformed("expected a two-digit day"))?;
    expect(10, b"Tt ", "expected `T` between date and time")?;
    let hour = digits(b, 11, 2).ok_or_else(|| malformed("expected a two-digit hour"))?;
    expect(13, b":", "expected `:` after the hour")?;
    let minute = digits(b, 14, 2).ok_or_else(|| malformed("expected two-digit minutes"))?;
    expect(16, b":", "expected `:` after the minutes")?;
    let second = digits(b, 17, 2).ok_or_else(|| malformed("expected two-digit seconds"))?;

    let mut at = 19;
    let mut nanos: i64 = 0;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 9 {
                nanos = nanos * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return Err(malformed("expected digits after `.`"));
        }
        for _ in (at - start)..9 {
            nanos *= 10;
        }
    }
    let offset_secs = match b.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let hours = digits(b, at + 1, 2);
            let colon = b.get(at + 3) == Some(&b':');
            let minutes = digits(b, at + 4, 2);
            let (Some(hours), true, Some(minutes)) = (hours, colon, minutes) else {
                return Err(malformed("expected a `±HH:MM` offset"));
            };
            if hours > 23 || minutes > 59 {
                return Err(malformed("offset out of range"));
            }
            at += 6;
            let secs = hours * 3600 + minutes * 60;
            if sign == b'-' { -secs } else { secs }
        }
        _ => return Err(malformed("expected `Z` or an offset like `+01:00`")),
    };
    if at != b.len() {
        return Err(malformed("unexpected text after the timestamp"));
    }

    if !(1..=12).contains(&month) {
        return Err(malformed("month out of range"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(malformed("day out of range for that month"));
    }
    if hour > 23 || minute > 59 {
        return Err(malformed("time of day out of range"));
    }
    if second == 60 {
        return Err(malformed("leap seconds are not supported"));
    }
    if second > 59 {
        return Err(malformed("seconds out of range"));
    }

    let secs =
        days_from_civil(year, month, day) * SECS_PER_DAY + hour * 3600 + minute * 60 + second
            - offset_secs;
    from_parts(secs, nanos).ok_or_else(|| TimeError::OutOfRange {
        input: input.to_owned(),
    })
}

/// Nanoseconds since 1970-01-01T00:00:00Z (negative before), or `None` outside the
/// ±292 years an `i64` holds.
pub fn to_unix_nanos(t: SystemTime) -> Option<i64> {
    let (secs, nanos) = split(t);
    // In i128: near i64::MIN the whole seconds alone overflow before the nanoseconds are added.
    i64::try_from(i128::from(secs) * i128::from(NANOS_PER_SEC) + i128::from(nanos)).ok()
}

/// The instant `nanos` nanoseconds after (or, when negative, before) the Unix epoch.
pub fn from_unix_nanos(nanos: i64) -> SystemTime {
    from_parts(
        nanos.div_euclid(NANOS_PER_SEC),
        nanos.rem_euclid(NANOS_PER_SEC),
    )
    .expect("every i64 of nanoseconds fits in SystemTime")
}

/// Whole seconds (floored) and the nanoseconds past them, which are never negative.
fn split(t: SystemTime) -> (i64, i64) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            i64::from(d.subsec_nanos()),
        ),
        Err(before) => {
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match i64::from(d.subsec_nanos()) {
                0 => (-secs, 0),
                n => (-secs - 1, NANOS_PER_SEC - n),
            }
        }
    }
}

fn from_parts(secs: i64, nanos: i64) -> Option<SystemTime> {
    let nanos = Duration::from_nanos(u64::try_from(nanos).ok()?);
    let whole = Duration::from_secs(secs.unsigned_abs());
    let at = if secs >= 0 {
        UNIX_EPOCH.checked_add(whole)?
    } else {
        UNIX_EPOCH.checked_sub(whole)?
    };
    at.checked_add(nanos)
}

fn format_seconds(secs: i64) -> String {
    let (year, month, day) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    let of_day = secs.rem_euclid(SECS_PER_DAY);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

fn digits(b: &[u8], at: usize, len: usize) -> Option<i64> {
    let text = b.get(at..at + len)?;
    text.iter().try_fold(0i64, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date `days` days after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400;
    (if month <= 2 { year + 1 } else { year }, month, day)
}

/// Serde helper: a `SystemTime` as its RFC 3339 string.
pub fn serialize_rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: i64) -> SystemTime {
        from_parts(secs, nanos).unwrap()
    }

    /// Formats, checks the text, and checks that it parses back to the same instant.
    #[track_caller]
    fn check(t: SystemTime, expect: &str) {
        assert_eq!(rfc3339(t), expect);
        assert_eq!(parse_rfc3339(expect), Ok(t));
    }

    #[test]
    fn formats_known_instants() {
        check(UNIX_EPOCH, "1970-01-01T00:00:00Z");
        check(
            at(1_795_721_401, 123_456_789),
            "2026-11-26T19:30:01.123456789Z",
        );
        check(at(1_795_721_401, 123_000_000), "2026-11-26T19:30:01.123Z");
        check(
            at(1_795_721_401, 123_456_000),
            "2026-11-26T19:30:01.123456Z",
        );
        check(at(1_795_721_401, 1), "2026-11-26T19:30:01.000000001Z");
        check(
            at(253_402_300_799, 999_999_999),
            "9999-12-31T23:59:59.999999999Z",
        );
    }

    #[test]
    fn leap_years() {
        check(at(951_782_400, 0), "2000-02-29T00:00:00Z");
        check(at(1_709_164_800, 0), "2024-02-29T00:00:00Z");
        // 2100 is not a leap year: the day after 2100-02-28 is 2100-03-01.
        check(at(4_107_542_400 - 86_400, 0), "2100-02-28T00:00:00Z");
        check(at(4_107_542_400, 0), "2100-03-01T00:00:00Z");
        assert_eq!(
            parse_rfc3339("2100-02-29T00:00:00Z"),
            Err(TimeError::Malformed {
                input: "2100-02-29T00:00:00Z".into(),
                problem: "day out of range for that month",
            })
        );
        assert!(parse_rfc3339("2026-02-29T00:00:00Z").is_err());
    }

    #[test]
    fn before_1970() {
        check(at(-1, 0), "1969-12-31T23:59:59Z");
        check(at(-1, 500_000_000), "1969-12-31T23:59:59.500Z");
        check(at(-31_536_000, 0), "1969-01-01T00:00:00Z");
        check(at(-2_203_891_200, 0), "1900-03-01T00:00:00Z");
        check(at(-62_162_035_200, 0), "0000-03-01T00:00:00Z");
        assert_eq!(to_unix_nanos(at(-1, 500_000_000)), Some(-500_000_000));
        assert_eq!(from_unix_nanos(-500_000_000), at(-1, 500_000_000));
    }

    #[test]
    fn unix_nanos() {
        let t = at(1_795_721_401, 123_456_789);
        assert_eq!(to_unix_nanos(t), Some(1_795_721_401_123_456_789));
        assert_eq!(from_unix_nanos(1_795_721_401_123_456_789), t);
        assert_eq!(to_unix_nanos(from_unix_nanos(i64::MIN)), Some(i64::MIN));
        assert_eq!(to_unix_nanos(from_unix_nanos(i64::MAX)), Some(i64::MAX));
        assert_eq!(to_unix_nanos(at(i64::MAX / 1_000_000_000 + 1, 0)), None);
    }

    #[test]
    fn seconds_only() {
        assert_eq!(
            rfc3339_seconds(at(1_795_721_401, 999_999_999)),
            "2026-11-26T19:30:01Z"
        );
        assert_eq!(rfc3339_seconds(at(-1, 500_000_000)), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn parses_offsets_and_variants() {
        let t = at(1_795_721_401, 0);
        assert_eq!(parse_rfc3339("2026-11-26T20:30:01+01:00"), Ok(t));
        assert_eq!(parse_rfc3339("2026-11-26T14:00:01-05:30"), Ok(t));
        assert_eq!(parse_rfc3339("2026-11-26t19:30:01z"), Ok(t));
        assert_eq!(parse_rfc3339("2026-11-26 19:30:01Z"), Ok(t));
        assert_eq!(
            parse_rfc3339("2026-11-26T19:30:01.5Z"),
            Ok(at(1_795_721_401, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339("2026-11-26T19:30:01.1234567891Z"),
            Ok(at(1_795_721_401, 123_456_789))
        );
    }

    #[track_caller]
    fn check_malformed(input: &str, problem: &'static str) {
        assert_eq!(
            parse_rfc3339(input),
            Err(TimeError::Malformed {
                input: input.to_owned(),
                problem
            })
        );
    }

    #[test]
    fn rejects_malformed() {
        check_malformed("", "expected a four-digit year");
        check_malformed("2026-11-26", "expected `T` between date and time");
        check_malformed(
            "2026-11-26T19:30:01",
            "expected `Z` or an offset like `+01:00`",
        );
        check_malformed("2026-13-01T00:00:00Z", "month out of range");
        check_malformed("2026-00-01T00:00:00Z", "month out of range");
        check_malformed("2026-04-31T00:00:00Z", "day out of range for that month");
        check_malformed("2026-11-26T24:00:00Z", "time of day out of range");
        check_malformed("2026-12-31T23:59:60Z", "leap seconds are not supported");
        check_malformed("2026-11-26T19:30:01.Z", "expected digits after `.`");
        check_malformed("2026-11-26T19:30:01+0100", "expected a `±HH:MM` offset");
        check_malformed(
            "2026-11-26T19:30:01Zjunk",
            "unexpected text after the timestamp",
        );
        check_malformed(
            "2026-11-26T19:30:01é",
            "expected `Z` or an offset like `+01:00`",
        );
        assert_eq!(
            parse_rfc3339("x").unwrap_err().to_string(),
            "`x` is not an RFC 3339 timestamp like 2026-11-26T19:30:01Z: expected a four-digit year"
        );
    }
}
