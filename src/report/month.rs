//! The calendar month in UTC: the unit of history files, history objects
//! and the monthly report.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// Text that is not a month in `YYYY-MM` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid month `{input}`: expected YYYY-MM with a month from 01 to 12, such as `2026-05`")]
pub struct InvalidMonth {
    input: String,
}

/// A calendar month in UTC: the unit of history files and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    fn new(year: i32, month: u32) -> Option<Self> {
        ((1..=12).contains(&month) && (1..=9999).contains(&year)).then_some(Self { year, month })
    }

    /// The month `at` falls in.
    pub fn of(at: DateTime<Utc>) -> Self {
        Self {
            year: at.year(),
            month: at.month(),
        }
    }

    /// The month before this one.
    pub fn previous(self) -> Self {
        match self.month {
            1 => Self {
                year: self.year - 1,
                month: 12,
            },
            m => Self {
                year: self.year,
                month: m - 1,
            },
        }
    }

    /// The first instant of the month.
    pub fn start(self) -> DateTime<Utc> {
        let date = NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("validated month");
        Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"))
    }

    pub fn contains(self, at: DateTime<Utc>) -> bool {
        Self::of(at) == self
    }

    /// `count` months ending with this one, oldest first.
    pub fn trailing(self, count: usize) -> Vec<Self> {
        let mut months = Vec::with_capacity(count);
        let mut month = self;
        for _ in 0..count {
            months.push(month);
            month = month.previous();
        }
        months.reverse();
        months
    }

    /// `July 2026`.
    pub fn long_name(self) -> String {
        self.start().format("%B %Y").to_string()
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = InvalidMonth;

    fn from_str(input: &str) -> Result<Self, InvalidMonth> {
        let invalid = || InvalidMonth {
            input: input.to_owned(),
        };
        let (year, month) = input.trim().split_once('-').ok_or_else(invalid)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(invalid());
        }
        let year = year.parse().map_err(|_| invalid())?;
        let month = month.parse().map_err(|_| invalid())?;
        Self::new(year, month).ok_or_else(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_and_step() {
        let may: Month = "2026-05".parse().unwrap();
        assert_eq!(may.to_string(), "2026-05");
        assert_eq!(may.long_name(), "May 2026");
        assert_eq!("2026-01".parse::<Month>().unwrap().previous().to_string(), "2025-12");
        let months: Vec<String> = may.trailing(3).iter().map(ToString::to_string).collect();
        assert_eq!(months, ["2026-03", "2026-04", "2026-05"]);
        for bad in ["2026-13", "2026-5", "26-05", "may", "2026-00", ""] {
            let error = bad.parse::<Month>().unwrap_err().to_string();
            assert!(
                error.contains(&format!("`{bad}`")) && error.contains("YYYY-MM"),
                "{error}"
            );
        }
    }
}
