//! What a data-moving phase moved, and the size of the dataset it was
//! moved for: the two facts an RTO projection at production scale is made
//! of (`report::projection`).
//!
//! A phase that restores a dump, downloads a base backup, replays WAL or
//! copies rows records each amount it moved as a [`Moved`], with the time
//! it took when the library times that part on its own (a PITR run times
//! its download and its replay separately); otherwise the whole phase moved
//! it. Amounts are the library's own figures (the dump's bytes in its
//! manifest, the WAL bytes between the base backup's end LSN and the last
//! replayed one, the rows a table restore copied), never estimates.
//!
//! [`DatasetSize`] is the yardstick: the size of the database the drill
//! recovered, as PostgreSQL reports it (`pg_database_size`), and the bytes
//! of the logical dump it restored, when it restored one.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What an amount counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Quantity {
    /// Bytes of backup data (a dump, a base backup's tar).
    Bytes,
    /// Bytes of WAL replayed.
    WalBytes,
    /// Table rows (seeded, copied, restored).
    Rows,
}

impl Quantity {
    /// The word after an amount: `bytes`, `WAL bytes`, `rows`.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Bytes => "bytes",
            Self::WalBytes => "WAL bytes",
            Self::Rows => "rows",
        }
    }

    /// Reads [`unit`](Self::unit) back.
    pub fn from_unit(unit: &str) -> Option<Self> {
        [Self::Bytes, Self::WalBytes, Self::Rows]
            .into_iter()
            .find(|q| q.unit() == unit)
    }
}

/// One amount a phase moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Moved {
    pub quantity: Quantity,
    pub amount: u64,
    /// The part of the phase that moved it, when the library timed that
    /// part on its own; `None`: the whole phase moved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Duration>,
}

impl Moved {
    /// `amount` bytes of backup data, over the whole phase.
    pub fn bytes(amount: u64) -> Self {
        Self::new(Quantity::Bytes, amount)
    }

    /// `amount` bytes of WAL replayed, over the whole phase.
    pub fn wal_bytes(amount: u64) -> Self {
        Self::new(Quantity::WalBytes, amount)
    }

    /// `amount` rows, over the whole phase.
    pub fn rows(amount: u64) -> Self {
        Self::new(Quantity::Rows, amount)
    }

    fn new(quantity: Quantity, amount: u64) -> Self {
        Self {
            quantity,
            amount,
            within: None,
        }
    }

    /// Moved in `duration`, a part of the phase the library timed on its own.
    pub fn within(mut self, duration: Duration) -> Self {
        self.within = Some(duration);
        self
    }

    /// The time it took: its own part, or the whole phase's `phase` duration.
    pub fn seconds(&self, phase: Duration) -> f64 {
        self.within.map_or(phase, |within| within.min(phase)).as_secs_f64()
    }
}

/// `1.2 GB`, `820 kB`, `312 B`: decimal units, as disks and buckets count.
pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000.0 {
        return format!("{bytes:.0} B");
    }
    let mut value = bytes;
    let mut unit = "B";
    for next in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = next;
    }
    let text = format!("{value:.1}");
    format!("{} {unit}", text.strip_suffix(".0").unwrap_or(&text))
}

/// An amount of `quantity` for people: `1.2 GB`, `1.2 GB of WAL`, `48,213 rows`.
pub fn format_amount(quantity: Quantity, amount: f64) -> String {
    match quantity {
        Quantity::Bytes => format_bytes(amount),
        Quantity::WalBytes => format!("{} of WAL", format_bytes(amount)),
        Quantity::Rows => format!("{} rows", group_thousands(amount.round() as u64)),
    }
}

/// A rate for people: `101.3 MB/s`, `64.9 MB/s of WAL`, `48,213 rows/s`.
pub fn format_rate(quantity: Quantity, per_second: f64) -> String {
    match quantity {
        Quantity::Bytes => format!("{}/s", format_bytes(per_second)),
        Quantity::WalBytes => format!("{}/s of WAL", format_bytes(per_second)),
        Quantity::Rows => format!("{} rows/s", group_thousands(per_second.round() as u64)),
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Moved {
    /// `moved 12345 bytes` or `moved 12345 WAL bytes in 1.234s`: the line a
    /// phase's JUnit testcase carries, read back by the monthly report.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "moved {} {}", self.amount, self.quantity.unit())?;
        if let Some(within) = self.within {
            write!(f, " in {:.3}s", within.as_secs_f64())?;
        }
        Ok(())
    }
}

impl Moved {
    /// Reads [`Display`](fmt::Display)'s line back; `None` for any other line.
    pub fn parse_line(line: &str) -> Option<Self> {
        let rest = line.trim().strip_prefix("moved ")?;
        let (amount, rest) = rest.split_once(' ')?;
        let amount = amount.parse().ok()?;
        let (unit, within) = match rest.split_once(" in ") {
            Some((unit, seconds)) => {
                let seconds: f64 = seconds.strip_suffix('s')?.parse().ok()?;
                (unit, Some(Duration::try_from_secs_f64(seconds).ok()?))
            }
            None => (rest, None),
        };
        Some(Self {
            quantity: Quantity::from_unit(unit)?,
            amount,
            within,
        })
    }
}

/// The size of the dataset a drill recovered: what its data-moving phases'
/// amounts scale with when the RTO is projected to another size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DatasetSize {
    /// `pg_database_size` of the recovered database, measured by the drill.
    pub database_bytes: u64,
    /// Bytes of the logical dump (`pg_dump -Fc`) the drill restored, if it
    /// restored one: the yardstick when projecting to another dump's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_bytes: Option<u64>,
}

impl DatasetSize {
    pub fn new(database_bytes: u64, dump_bytes: Option<u64>) -> Self {
        Self {
            database_bytes,
            dump_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_lines_read_back() {
        for moved in [
            Moved::bytes(86_000_000),
            Moved::wal_bytes(184_500_000).within(Duration::from_millis(2840)),
            Moved::rows(0),
        ] {
            let line = moved.to_string();
            assert_eq!(Moved::parse_line(&line), Some(moved), "{line}");
        }
        assert_eq!(Moved::parse_line("3 broken links"), None);
        assert_eq!(Moved::parse_line("moved 12 parsecs"), None);
    }

    #[test]
    fn amounts_and_rates_read_for_people() {
        assert_eq!(format_bytes(312.0), "312 B");
        assert_eq!(format_bytes(459_000_000.0), "459 MB");
        assert_eq!(format_bytes(86_420_000.0), "86.4 MB");
        assert_eq!(format_bytes(500e9), "500 GB");
        assert_eq!(format_amount(Quantity::Rows, 48_213.0), "48,213 rows");
        assert_eq!(format_rate(Quantity::WalBytes, 64.9e6), "64.9 MB/s of WAL");
        assert_eq!(format_rate(Quantity::Rows, 1_234_567.0), "1,234,567 rows/s");
    }

    #[test]
    fn a_part_longer_than_its_phase_counts_as_the_phase() {
        let moved = Moved::bytes(1).within(Duration::from_secs(5));
        assert_eq!(moved.seconds(Duration::from_secs(3)), 3.0);
        assert_eq!(Moved::bytes(1).seconds(Duration::from_secs(3)), 3.0);
    }
}
