//! Streaming the audit chain out of PostgreSQL into the [`ChainVerifier`].
//!
//! The rows come with `COPY (SELECT <the hashed columns> ... ORDER BY
//! created_at, id) TO STDOUT` ([`CHAIN_COPY_SQL`]), in COPY's text format:
//! the cheapest way to read a table, with no per-row protocol overhead.
//! Chunks are handed over a small bounded channel to one blocking thread
//! that splits lines, parses fields and feeds the verifier (which hashes
//! every row), so reading from the socket and hashing overlap. Memory is
//! flat: a few chunks in flight, one row being parsed, the verifier's state.
//!
//! # Requirements
//! The caller's session must print timestamps in ISO style in UTC
//! (`SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, MDY'`); the
//! suite does that. Other offsets are still parsed correctly.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt as _;
use sqlx::PgConnection;

use super::Finding;
use super::anchor::Anchor;
use super::chain::{AnchorMismatch, AuditRow, ChainVerifier};

/// The columns the verifier needs, in chain order: the same statement the
/// benchmark times as "COPY into nothing".
pub const CHAIN_COPY_SQL: &str = "COPY (SELECT id, created_at, tenant_id, actor, action, entity_type, entity_id, \
     payload, previous_hash, hash FROM public.audit_logs ORDER BY created_at, id) TO STDOUT";

/// Bytes handed to the parser thread at a time.
const BATCH_BYTES: usize = 256 * 1024;

/// Why the chain could not be verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainStreamError {
    #[error("failed to read the audit chain from the database")]
    Read(#[source] sqlx::Error),
    #[error("failed to parse audit row {line} of the COPY output: {reason}")]
    Parse { line: u64, reason: String },
    #[error(transparent)]
    AnchorMismatch(#[from] AnchorMismatch),
}

/// What one pass over the chain found.
#[derive(Debug)]
pub struct ChainPass {
    pub findings: Vec<Finding>,
    pub rows: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Streams the chain from `conn` (in the caller's transaction) through a
/// [`ChainVerifier`].
///
/// # Errors
/// A failed or interrupted read (a lost connection is never a clean chain),
/// a row that does not parse, or an anchor of another chain.
pub async fn verify_chain(conn: &mut PgConnection, anchor: Option<&Anchor>) -> Result<ChainPass, ChainStreamError> {
    let started = Instant::now();
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
    let verifier = ChainVerifier::new(anchor);
    // The row count is not known before the pass: progress without a total.
    let progress = crate::progress::task("verify audit chain", crate::progress::Unit::Rows, None);
    let counter = progress.counter();
    let worker = tokio::task::spawn_blocking(move || {
        let mut parser = LineParser::new(verifier);
        while let Some(chunk) = receiver.blocking_recv() {
            let before = parser.line;
            parser.feed(&chunk)?;
            counter.advance(parser.line - before);
        }
        parser.finish()
    });
    let mut bytes = 0u64;
    let read = async {
        let mut stream = conn.copy_out_raw(CHAIN_COPY_SQL).await?;
        // PostgreSQL sends one message per row: batch them, so the parser
        // thread is woken once per BATCH_BYTES, not once per row.
        let mut batch = Vec::with_capacity(BATCH_BYTES + 4096);
        while let Some(chunk) = stream.try_next().await? {
            bytes += chunk.len() as u64;
            batch.extend_from_slice(&chunk);
            if batch.len() >= BATCH_BYTES {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_BYTES + 4096));
                if sender.send(Bytes::from(full)).await.is_err() {
                    // The parser stopped on an error; it reports it below.
                    return Ok(());
                }
            }
        }
        if !batch.is_empty() {
            let _ = sender.send(Bytes::from(batch)).await;
        }
        Ok::<_, sqlx::Error>(())
    }
    .await;
    drop(sender);
    let parsed = worker.await.expect("the chain parser does not panic");
    read.map_err(ChainStreamError::Read)?;
    let (verifier, rows) = parsed?;
    let findings = verifier.finish()?;
    progress.finish();
    Ok(ChainPass {
        findings,
        rows,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Splits COPY text output into rows across chunk boundaries.
struct LineParser {
    verifier: ChainVerifier,
    carry: Vec<u8>,
    line: u64,
    /// Reused for every row: its strings keep their capacity.
    row: AuditRow,
}

impl LineParser {
    fn new(verifier: ChainVerifier) -> Self {
        Self {
            verifier,
            carry: Vec::new(),
            line: 0,
            row: AuditRow {
                id: 0,
                created_at: DateTime::<Utc>::UNIX_EPOCH,
                tenant_id: None,
                actor: String::new(),
                action: String::new(),
                entity_type: String::new(),
                entity_id: String::new(),
                payload: String::new(),
                previous_hash: String::new(),
                hash: None,
            },
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), ChainStreamError> {
        let mut rest = chunk;
        if !self.carry.is_empty() {
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                self.carry.extend_from_slice(rest);
                return Ok(());
            };
            let mut line = std::mem::take(&mut self.carry);
            line.extend_from_slice(&rest[..end]);
            self.row(&line)?;
            rest = &rest[end + 1..];
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.row(&rest[..end])?;
            rest = &rest[end + 1..];
        }
        self.carry.extend_from_slice(rest);
        Ok(())
    }

    fn finish(self) -> Result<(ChainVerifier, u64), ChainStreamError> {
        if !self.carry.is_empty() {
            return Err(ChainStreamError::Parse {
                line: self.line + 1,
                reason: "the COPY output ends in the middle of a row".to_owned(),
            });
        }
        Ok((self.verifier, self.line))
    }

    fn row(&mut self, line: &[u8]) -> Result<(), ChainStreamError> {
        self.line += 1;
        parse_row_into(line, &mut self.row).map_err(|reason| ChainStreamError::Parse {
            line: self.line,
            reason,
        })?;
        self.verifier.push(&self.row);
        Ok(())
    }
}

/// One COPY text row of [`CHAIN_COPY_SQL`]'s columns.
pub fn parse_row(line: &[u8]) -> Result<AuditRow, String> {
    let mut row = AuditRow {
        id: 0,
        created_at: DateTime::<Utc>::UNIX_EPOCH,
        tenant_id: None,
        actor: String::new(),
        action: String::new(),
        entity_type: String::new(),
        entity_id: String::new(),
        payload: String::new(),
        previous_hash: String::new(),
        hash: None,
    };
    parse_row_into(line, &mut row)?;
    Ok(row)
}

/// [`parse_row`] into an existing row, reusing its strings' allocations.
/// On error the row holds a mix of old and new values.
pub fn parse_row_into(line: &[u8], row: &mut AuditRow) -> Result<(), String> {
    let mut fields = line.split(|&b| b == b'\t');
    let mut next = |name: &str| fields.next().ok_or_else(|| format!("column {name} is missing"));
    row.id = parse_i64(next("id")?).ok_or("id is not an integer")?;
    row.created_at = parse_timestamp(next("created_at")?)?;
    row.tenant_id = match next("tenant_id")? {
        b"\\N" => None,
        text => Some(parse_i64(text).ok_or("tenant_id is not an integer")?),
    };
    text_into(next("actor")?, &mut row.actor)?;
    text_into(next("action")?, &mut row.action)?;
    text_into(next("entity_type")?, &mut row.entity_type)?;
    text_into(next("entity_id")?, &mut row.entity_id)?;
    text_into(next("payload")?, &mut row.payload)?;
    text_into(next("previous_hash")?, &mut row.previous_hash)?;
    match next("hash")? {
        b"\\N" => row.hash = None,
        value => text_into(value, row.hash.get_or_insert_with(String::new))?,
    }
    Ok(())
}

fn parse_i64(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A COPY text field: `\N` is NULL (not allowed here), backslash escapes
/// decoded.
fn text_into(field: &[u8], into: &mut String) -> Result<(), String> {
    into.clear();
    if !field.contains(&b'\\') {
        let text = std::str::from_utf8(field).map_err(|_| "a text field is not UTF-8".to_owned())?;
        into.push_str(text);
        return Ok(());
    }
    if field == b"\\N" {
        return Err("a NOT NULL column is NULL".to_owned());
    }
    // Decode into the string's own buffer; checked as UTF-8 at the end.
    let mut out = std::mem::take(into).into_bytes();
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let e = field[i + 1];
        i += 2;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut value = u32::from(e - b'0');
                let mut digits = 1;
                while digits < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    value = value * 8 + u32::from(field[i] - b'0');
                    i += 1;
                    digits += 1;
                }
                out.push(value as u8);
            }
            b'x' => {
                let mut value = 0u32;
                let mut digits = 0;
                while digits < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                    value = value * 16 + (field[i] as char).to_digit(16).expect("hex digit");
                    i += 1;
                    digits += 1;
                }
                out.push(value as u8);
            }
            other => out.push(other),
        }
    }
    *into = String::from_utf8(out).map_err(|_| "a text field is not UTF-8".to_owned())?;
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM[:SS]]`, PostgreSQL's ISO output.
fn parse_timestamp(field: &[u8]) -> Result<DateTime<Utc>, String> {
    let bad = || {
        format!(
            "created_at {:?} is not an ISO timestamp",
            String::from_utf8_lossy(field)
        )
    };
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = field.get(range)?;
        digits.iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    if field.len() < 22 || field[4] != b'-' || field[10] != b' ' {
        return Err(bad());
    }
    let (year, month, day) = (
        num(0..4).ok_or_else(bad)?,
        num(5..7).ok_or_else(bad)?,
        num(8..10).ok_or_else(bad)?,
    );
    let (hour, minute, second) = (
        num(11..13).ok_or_else(bad)?,
        num(14..16).ok_or_else(bad)?,
        num(17..19).ok_or_else(bad)?,
    );
    let mut i = 19;
    let mut micros = 0u32;
    if field[i] == b'.' {
        i += 1;
        let mut digits = 0;
        while i < field.len() && field[i].is_ascii_digit() {
            if digits < 6 {
                micros = micros * 10 + u32::from(field[i] - b'0');
                digits += 1;
            }
            i += 1;
        }
        while digits < 6 {
            micros *= 10;
            digits += 1;
        }
    }
    let sign: i64 = match field.get(i) {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(bad()),
    };
    let offset_text = &field[i + 1..];
    let mut offset = 0i64;
    for (n, part) in offset_text.split(|&b| b == b':').enumerate() {
        let value: i64 = std::str::from_utf8(part)
            .ok()
            .and_then(|p| p.parse().ok())
            .ok_or_else(bad)?;
        offset += value * [3600, 60, 1].get(n).copied().ok_or_else(bad)?;
    }
    let naive = NaiveDate::from_ymd_opt(year as i32, month, day)
        .and_then(|d| d.and_hms_micro_opt(hour, minute, second, micros))
        .ok_or_else(bad)?;
    Ok(naive.and_utc() - chrono::Duration::seconds(sign * offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_any_offset_and_precision() {
        let at = |s: &str| parse_timestamp(s.as_bytes()).unwrap().to_rfc3339();
        assert_eq!(at("2026-01-02 03:04:05.000006+00"), "2026-01-02T03:04:05.000006+00:00");
        assert_eq!(at("2026-01-02 03:04:05+00"), "2026-01-02T03:04:05+00:00");
        assert_eq!(at("2026-01-02 03:04:05.5+01"), "2026-01-02T02:04:05.500+00:00");
        assert_eq!(at("2026-01-02 03:04:05-05:30"), "2026-01-02T08:34:05+00:00");
        assert!(parse_timestamp(b"yesterday").is_err());
    }

    #[test]
    fn rows_decode_escapes_and_nulls() {
        let row =
            parse_row(b"7\t2026-01-02 03:04:05.1+00\t\\N\ta\\tb\tact\tet\t9\t{\"k\":\"x\\\\y\\n\"}\tGENESIS\t\\N")
                .unwrap();
        assert_eq!(row.id, 7);
        assert_eq!(row.tenant_id, None);
        assert_eq!(row.actor, "a\tb");
        assert_eq!(row.payload, "{\"k\":\"x\\y\n\"}");
        assert_eq!(row.hash, None);
        assert!(parse_row(b"7\t2026-01-02 03:04:05+00").unwrap_err().contains("missing"));
    }

    #[test]
    fn a_reused_row_holds_exactly_the_last_line() {
        let lines: [&[u8]; 3] = [
            b"1\t2026-01-02 03:04:05+00\t3\ta long actor\\tname\tact\tet\t9\t{\"much\":\"longer payload\"}\tGENESIS\tabc",
            b"2\t2026-01-02 03:04:06+00\t\\N\tb\tc\td\te\tf\tprev\t\\N",
            b"3\t2026-01-02 03:04:07+00\t4\tx\\ny\tc\td\te\t\\\\\tprev\tdef",
        ];
        let mut row = parse_row(lines[0]).unwrap();
        for line in lines {
            parse_row_into(line, &mut row).unwrap();
            assert_eq!(row, parse_row(line).unwrap());
        }
    }
}
