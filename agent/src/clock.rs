//! Time as the agent records it: UNIX nanoseconds from the system clock, Docker's RFC 3339
//! timestamps turned into nanoseconds, and the UTC year-month that names a job-log directory.
//! Hand-rolled on purpose: three small conversions do not justify a date-time dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in UNIX nanoseconds (0 if the clock is before 1970, which no host we run on is).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Now, in UNIX seconds.
pub fn now_s() -> i64 {
    now_ns() / 1_000_000_000
}

/// Parses Docker's `2024-05-01T10:20:30.123456789Z` (or with a `+hh:mm` offset) into UNIX
/// nanoseconds. Docker's "never" (`0001-01-01T00:00:00Z`) and anything unparsable give `None`.
pub fn parse_rfc3339_ns(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[10] != b'T' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse().ok() };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos: i64 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        let kept = &fraction[..digits.min(9)];
        nanos = kept.parse::<i64>().ok()? * 10_i64.pow(9 - u32::try_from(kept.len()).ok()?);
        rest = &fraction[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (hours * 3600 + minutes * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    seconds.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// The UTC `YYYY-MM` of a UNIX time in seconds: the month directory of a job's logs.
pub fn year_month(unix_s: i64) -> String {
    let (year, month, _) = civil_from_days(unix_s.div_euclid(86_400));
    format!("{year:04}-{month:02}")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_timestamps() {
        assert_eq!(
            parse_rfc3339_ns("1970-01-01T00:00:01Z"),
            Some(1_000_000_000)
        );
        assert_eq!(
            parse_rfc3339_ns("2024-05-01T10:20:30.123456789Z"),
            Some(1_714_558_830_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_ns("2024-05-01T12:20:30.5+02:00"),
            Some(1_714_558_830_500_000_000)
        );
        assert_eq!(parse_rfc3339_ns("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ns("garbage"), None);
        assert_eq!(parse_rfc3339_ns("2024-05-01T10:20:30"), None);
    }

    #[test]
    fn year_month_is_utc() {
        assert_eq!(year_month(0), "1970-01");
        assert_eq!(year_month(1_714_558_830), "2024-05");
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(year_month(1_709_251_199), "2024-02");
        assert_eq!(year_month(1_709_251_200), "2024-03");
    }
}
