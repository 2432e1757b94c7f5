//! Time for drills (layer 0): durations as people write and read them, and
//! the clocks a drill measures with.
//!
//! - [`parse_duration`] / [`format_duration`]: `1h30m` in, `1h 30m 00.0s`
//!   out ([`duration`]).
//! - [`Clock`]: the seam for time; [`SystemClock`] in real drills,
//!   [`ManualClock`] in tests that need four hours to pass instantly
//!   ([`clock`]).

pub mod clock;
pub mod duration;

pub use clock::{Clock, ManualClock, SystemClock};
pub use duration::{ParseDurationError, format_duration, parse_duration};

use chrono::{DateTime, SecondsFormat, Utc};

/// `2026-05-01T08:00:00.000Z`: the one form timelines and reports print a
/// moment in (UTC, milliseconds).
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}
