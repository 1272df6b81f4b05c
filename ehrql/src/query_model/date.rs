//! Calendar dates as days since 1970-01-01, with the ehrQL date arithmetic rules
//! (month overflow rolls to the 1st of the next month; whole elapsed units for differences).
//!
//! Kept dependency-free: the proleptic Gregorian conversions are the standard
//! "days from civil" algorithms.

use std::fmt;

/// A calendar date (proleptic Gregorian), stored as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(i32);

/// Days in `month` (1–12) of `year`.
pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap_year(year) => 29,
        _ => 28,
    }
}

/// Whether `year` is a Gregorian leap year.
pub fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

impl Date {
    /// The date with the given parts, or `None` if it does not exist (or is outside years 1–9999,
    /// the range ehrQL's Python `date` allows).
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Date> {
        if !(1..=9999).contains(&year) || !(1..=12).contains(&month) {
            return None;
        }
        if day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date(days_from_civil(year, month, day)))
    }

    /// Parses `YYYY-MM-DD` exactly.
    pub fn parse_iso(text: &str) -> Option<Date> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let digits = |s: &str| -> Option<u32> {
            if s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse().ok()
            } else {
                None
            }
        };
        let year = digits(text.get(0..4)?)?;
        let month = digits(text.get(5..7)?)?;
        let day = digits(text.get(8..10)?)?;
        Date::from_ymd(i32::try_from(year).ok()?, month, day)
    }

    /// Days since 1970-01-01.
    pub fn days_since_epoch(self) -> i32 {
        self.0
    }

    /// The date `days` days after 1970-01-01, if within years 1–9999.
    pub fn from_days_since_epoch(days: i64) -> Option<Date> {
        let days = i32::try_from(days).ok()?;
        let (y, _, _) = civil_from_days(days);
        if !(1..=9999).contains(&y) {
            return None;
        }
        Some(Date(days))
    }

    /// Year, month, day.
    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(self.0)
    }

    /// Adds days; `None` if the result leaves years 1–9999.
    pub fn add_days(self, days: i64) -> Option<Date> {
        Date::from_days_since_epoch(i64::from(self.0) + days)
    }

    /// Adds months; a day past the end of the target month rolls over to the 1st of the next
    /// month (ehrQL's rule, so 31 Jan + 1 month is 1 Mar).
    pub fn add_months(self, months: i64) -> Option<Date> {
        let (y, m, d) = self.ymd();
        let zero_based = i64::from(y) * 12 + i64::from(m) - 1 + months;
        let year = i32::try_from(zero_based.div_euclid(12)).ok()?;
        let month = u32::try_from(zero_based.rem_euclid(12)).ok()? + 1;
        if d > days_in_month(year, month) {
            let (ny, nm) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
            return Date::from_ymd(ny, nm, 1);
        }
        Date::from_ymd(year, month, d)
    }

    /// Adds years; 29 Feb on a non-leap target year becomes 1 Mar.
    pub fn add_years(self, years: i64) -> Option<Date> {
        self.add_months(years.checked_mul(12)?)
    }

    /// Whole days from `start` to `self` (negative if `self` is earlier).
    pub fn days_since(self, start: Date) -> i64 {
        i64::from(self.0) - i64::from(start.0)
    }

    /// Whole months elapsed from `start` to `self`, by ehrQL's rule
    /// `year_diff * 12 + month_diff - (1 if end_day < start_day)`.
    pub fn months_since(self, start: Date) -> i64 {
        let (y1, m1, d1) = self.ymd();
        let (y0, m0, d0) = start.ymd();
        let total = i64::from(y1 - y0) * 12 + i64::from(m1) - i64::from(m0);
        if d1 < d0 { total - 1 } else { total }
    }

    /// Whole years elapsed from `start` to `self` ("birthday not yet reached" subtracts one).
    pub fn years_since(self, start: Date) -> i64 {
        let (y1, m1, d1) = self.ymd();
        let (y0, m0, d0) = start.ymd();
        let not_reached = (m1, d1) < (m0, d0);
        i64::from(y1 - y0) - i64::from(not_reached)
    }

    /// 1 January of the same year.
    pub fn first_of_year(self) -> Date {
        let (y, _, _) = self.ymd();
        Date(days_from_civil(y, 1, 1))
    }

    /// The 1st of the same month.
    pub fn first_of_month(self) -> Date {
        let (y, m, _) = self.ymd();
        Date(days_from_civil(y, m, 1))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i32;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i32) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        Date::parse_iso(s).unwrap()
    }

    #[test]
    fn round_trips_and_rejects_bad_dates() {
        for s in [
            "1970-01-01",
            "2000-02-29",
            "0001-01-01",
            "9999-12-31",
            "1899-12-31",
        ] {
            assert_eq!(d(s).to_string(), s);
        }
        assert_eq!(Date::parse_iso("2001-02-29"), None);
        assert_eq!(Date::parse_iso("2001-2-01"), None);
        assert_eq!(Date::parse_iso("abcd-01-01"), None);
    }

    #[test]
    fn month_overflow_rolls_to_first_of_next_month() {
        assert_eq!(d("2003-01-31").add_months(1).unwrap(), d("2003-03-01"));
        assert_eq!(d("2004-01-31").add_months(1).unwrap(), d("2004-03-01"));
        assert_eq!(d("2004-01-29").add_months(1).unwrap(), d("2004-02-29"));
        assert_eq!(d("2000-10-31").add_months(-11).unwrap(), d("1999-12-01"));
        assert_eq!(d("2004-02-29").add_years(1).unwrap(), d("2005-03-01"));
    }
}
