//! Durations as people write them (targets in the environment, `--rto`
//! style options) and as reports print them.
//!
//! Parsing is [`humantime`]'s, narrowed to whole seconds: a target of `5ms`
//! is far more likely a typo for `5m` than a wish, so it fails loudly
//! instead of silently meaning something else. Formatting is drillbook's
//! own fixed-width form, which reports, JUnit messages and snapshots print.

use std::fmt;
use std::time::Duration;

/// A string that is not a duration in [`parse_duration`]'s form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration `{input}`: {problem}; expected whole seconds written as numbers with \
     units (h, m, s, ...), such as `90s`, `15m`, `2h`, `1h30m` or `1h 30m`"
)]
pub struct ParseDurationError {
    input: String,
    problem: DurationProblem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DurationProblem {
    Empty,
    ExpectedNumber(char),
    UnexpectedCharacter(char),
    MissingUnit,
    UnknownUnit(String),
    TooLarge,
    NotWholeSeconds,
}

impl fmt::Display for DurationProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::ExpectedNumber(found) => write!(f, "expected a number, found `{found}`"),
            Self::UnexpectedCharacter(found) => write!(f, "unexpected character `{found}`"),
            Self::MissingUnit => f.write_str("the last number has no unit"),
            Self::UnknownUnit(found) => write!(f, "unknown unit `{found}`"),
            Self::TooLarge => f.write_str("it is too large"),
            Self::NotWholeSeconds => {
                f.write_str("it is not a whole number of seconds (`ms` is milliseconds, `m` minutes)")
            }
        }
    }
}

/// Parses `90s`, `15m`, `2h`, `1h30m`, `1h 30m`, `1h30m15s`: numbers, each
/// with a unit ([`humantime::parse_duration`]'s: `h`, `m`, `s`, `min`,
/// `hours`, `d`, ...), adding up to a whole number of seconds. Surrounding
/// whitespace is ignored.
///
/// # Errors
///
/// [`ParseDurationError`] names the input, what is wrong with it and the
/// accepted form: bare numbers, unknown units, negative or fractional
/// seconds, values too large.
pub fn parse_duration(input: &str) -> Result<Duration, ParseDurationError> {
    let trimmed = input.trim();
    let error = |problem| ParseDurationError {
        input: input.to_owned(),
        problem,
    };
    // The character at a byte offset humantime reports, skipping the
    // whitespace it skipped too.
    let found = |offset: usize| {
        trimmed
            .get(offset..)
            .and_then(|rest| rest.trim_start().chars().next())
            .unwrap_or(' ')
    };
    let duration = humantime::parse_duration(trimmed).map_err(|problem| {
        error(match problem {
            humantime::DurationError::Empty => DurationProblem::Empty,
            humantime::DurationError::NumberExpected(offset) => DurationProblem::ExpectedNumber(found(offset)),
            humantime::DurationError::InvalidCharacter(offset) => DurationProblem::UnexpectedCharacter(found(offset)),
            humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => DurationProblem::MissingUnit,
            humantime::DurationError::UnknownUnit { unit, .. } => DurationProblem::UnknownUnit(unit),
            humantime::DurationError::NumberOverflow => DurationProblem::TooLarge,
        })
    })?;
    if duration.subsec_nanos() != 0 {
        return Err(error(DurationProblem::NotWholeSeconds));
    }
    Ok(duration)
}

/// Formats a duration for people, rounded to a tenth of a second:
/// `4.2s`, `15m 00.0s`, `1h 02m 03.4s`. Fixed-width minutes and seconds keep
/// a measured value and its target easy to compare by eye.
pub fn format_duration(duration: Duration) -> String {
    let tenths = (duration.as_millis() + 50) / 100;
    let (hours, minutes) = (tenths / 36_000, tenths / 600 % 60);
    let (seconds, tenth) = (tenths / 10 % 60, tenths % 10);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}.{tenth}s"),
        (0, _) => format!("{minutes}m {seconds:02}.{tenth}s"),
        _ => format!("{hours}h {minutes:02}m {seconds:02}.{tenth}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_mins(1);
    const HOUR: Duration = Duration::from_hours(1);

    #[test]
    fn parse_duration_accepts_the_documented_forms() {
        let cases = [
            ("90s", 90),
            ("15m", 15 * 60),
            ("2h", 7200),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("1h30m15s", 5415),
            ("1h15s", 3615),
            ("0s", 0),
            (" 5m\n", 300),
            ("1.5h", 5400),
            ("90min", 5400),
            ("2hours", 7200),
        ];
        for (input, seconds) in cases {
            assert_eq!(parse_duration(input), Ok(Duration::from_secs(seconds)), "{input:?}");
        }
    }

    #[test]
    fn parse_duration_rejects_everything_else() {
        let cases = [
            ("", "it is empty"),
            ("   ", "it is empty"),
            ("90", "the last number has no unit"),
            ("1h30", "the last number has no unit"),
            ("h", "expected a number, found `h`"),
            ("-5m", "expected a number, found `-`"),
            ("5ms", "not a whole number of seconds"),
            ("1.5s", "not a whole number of seconds"),
            ("2H", "unknown unit `H`"),
            ("5m!", "unexpected character `!`"),
            ("99999999999999999999s", "too large"),
            ("5124095576030432h", "too large"),
        ];
        for (input, problem) in cases {
            let error = parse_duration(input).expect_err(input).to_string();
            assert!(error.contains(problem), "{input:?}: {error}");
            assert!(error.contains(&format!("`{input}`")), "{input:?}: {error}");
            assert!(error.contains("`1h30m`"), "{input:?}: {error}");
        }
    }

    #[test]
    fn format_duration_is_readable_and_rounds_to_tenths() {
        let cases = [
            (Duration::ZERO, "0.0s"),
            (Duration::from_millis(4_240), "4.2s"),
            (Duration::from_millis(4_250), "4.3s"),
            (15 * MINUTE, "15m 00.0s"),
            (Duration::from_millis(59_960), "1m 00.0s"),
            (Duration::from_millis(3_723_400), "1h 02m 03.4s"),
            (5 * HOUR, "5h 00m 00.0s"),
            (100 * HOUR, "100h 00m 00.0s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text, "{duration:?}");
        }
    }
}
