//! RTO at production scale: a drill's measured RTO projected to a larger
//! database from the throughput of its data-moving phases.
//!
//! A drill on 20,000 rows that meets a 4-hour target says nothing about a
//! 500 GB database by itself. Its record does, read with a stated model
//! ([`ASSUMPTION`]):
//!
//! ```text
//! RTO(S) = fixed + Σ over data-moving phases in the RTO window of
//!          (amount moved × S / D) / throughput measured
//! fixed  = measured RTO − the time those phases spent moving data
//! ```
//!
//! where `D` is the size of the dataset the drill recovered and `S` the
//! size asked for, both of the same kind ([`SizeBasis`]): a database size
//! (`pg_database_size`) for `--project-size 500GB`, or a logical dump's
//! bytes for `--project-size newest-backup` (the newest dump in a bucket
//! against the dump the drill restored).
//!
//! # Caveats
//!
//! Linear and on the drill's machine: real servers move data at their own
//! rates; WAL to replay grows with the write rate, not the size; checks
//! that count rows are fixed cost here though they are not. A projection is
//! a warning light, not a measurement.

use std::fmt;
use std::str::FromStr;

use super::history::HistoryRecord;
use crate::drill::moved::{Quantity, format_amount, format_bytes, format_rate};

/// The model, one sentence for every output that shows a projection.
pub const ASSUMPTION: &str = "linear scaling: each data-moving phase in the RTO window (restore, download, \
     WAL replay, table copy) moves an amount proportional to the size, at the throughput the drill measured \
     on its machine; every other part of the RTO (fixed-cost phases, checks, waits) stays as measured";

/// What a size measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeBasis {
    /// `pg_database_size` of the database.
    Database,
    /// Bytes of a logical dump (`pg_dump -Fc`).
    Dump,
}

impl SizeBasis {
    /// What `D` is for this basis, for the assumption line.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Database => "size = database size (pg_database_size of the database the drill recovered)",
            Self::Dump => "size = logical dump bytes (against the dump the drill restored)",
        }
    }
}

/// The size to project to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionSize {
    pub bytes: u64,
    pub basis: SizeBasis,
    /// Where the size came from, when not typed in: the newest backup's key.
    pub source: Option<String>,
}

impl ProjectionSize {
    /// A database of `bytes`.
    pub fn database(bytes: u64) -> Self {
        Self {
            bytes,
            basis: SizeBasis::Database,
            source: None,
        }
    }

    /// A logical dump of `bytes`, found at `key`.
    pub fn dump(bytes: u64, key: impl Into<String>) -> Self {
        Self {
            bytes,
            basis: SizeBasis::Dump,
            source: Some(key.into()),
        }
    }

    /// `500 GB`, `86.4 MB dump`: the size in testcase names and headings.
    pub fn label(&self) -> String {
        let size = format_bytes(self.bytes as f64);
        match self.basis {
            SizeBasis::Database => size,
            SizeBasis::Dump => format!("{size} dump"),
        }
    }

    /// The assumption, with what size means here.
    pub fn assumption(&self) -> String {
        let source = self
            .source
            .as_ref()
            .map(|key| format!(" (the newest backup, `{key}`)"))
            .unwrap_or_default();
        format!(
            "Assumption: {ASSUMPTION}; {}; S = {}{source}.",
            self.basis.describe(),
            self.label()
        )
    }
}

/// What `--project-size` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeRequest {
    /// A database of this many bytes (`500GB`).
    Bytes(u64),
    /// The newest logical backup in the staging bucket.
    NewestBackup,
}

/// The accepted spelling, for every error that names it.
pub const SIZE_FORM: &str = "a number and a unit: B, KB, MB, GB, TB, PB (powers of 1000) or \
     KiB, MiB, GiB, TiB, PiB (powers of 1024), any case, e.g. `500GB`, `1.5 TiB`";

impl FromStr for SizeRequest {
    type Err = ParseSizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().eq_ignore_ascii_case("newest-backup") {
            return Ok(Self::NewestBackup);
        }
        parse_size(text).map(Self::Bytes)
    }
}

/// A size that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a size: {problem}; write {SIZE_FORM} (or `newest-backup` on staging)")]
pub struct ParseSizeError {
    pub input: String,
    pub problem: String,
}

/// `500GB`, `1.5 TiB`, `750 mb` as bytes. Units are case-insensitive; KB
/// and friends are powers of 1000, KiB and friends powers of 1024.
///
/// # Errors
///
/// [`ParseSizeError`] naming the input, what is wrong and the accepted units.
pub fn parse_size(text: &str) -> Result<u64, ParseSizeError> {
    let fail = |problem: String| ParseSizeError {
        input: text.to_owned(),
        problem,
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(fail("it does not start with a number".to_owned()));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| fail(format!("`{number}` is not a number")))?;
    if unit.is_empty() {
        return Err(fail("it has no unit".to_owned()));
    }
    let multiplier: f64 = match unit.to_ascii_lowercase().as_str() {
        "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "pb" => 1e15,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        "pib" => 1024f64.powi(5),
        _ => return Err(fail(format!("unknown unit `{unit}`"))),
    };
    let bytes = (value * multiplier).round();
    if bytes < 1.0 {
        return Err(fail("a size to project to must be at least 1 byte".to_owned()));
    }
    if bytes > u64::MAX as f64 {
        return Err(fail("it is larger than 16 EiB".to_owned()));
    }
    Ok(bytes as u64)
}

/// One amount a phase moved, measured and projected.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaledAmount {
    pub quantity: Quantity,
    pub measured_amount: f64,
    pub projected_amount: f64,
    /// Amount per second as measured; `None` when it took no measurable time.
    pub throughput: Option<f64>,
    pub measured_seconds: f64,
    pub projected_seconds: f64,
}

/// A data-moving phase of the RTO window, measured and projected.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaledPhase {
    pub name: String,
    pub amounts: Vec<ScaledAmount>,
}

impl ScaledPhase {
    /// `86.4 MB at 45.2 MB/s`, each amount measured, `; `-separated.
    pub fn throughput_text(&self) -> String {
        let parts: Vec<String> = self
            .amounts
            .iter()
            .map(|a| {
                let amount = format_amount(a.quantity, a.measured_amount);
                match a.throughput {
                    Some(rate) => format!("{amount} at {}", format_rate(a.quantity, rate)),
                    None => amount,
                }
            })
            .collect();
        parts.join("; ")
    }
}

/// One run's RTO projected to a size.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub size: ProjectionSize,
    /// `D`: the drill's own size, of the same basis as `size`; `None` when
    /// no phase in the window moves data (nothing to scale).
    pub measured_size: Option<u64>,
    pub measured_rto: f64,
    pub target: f64,
    /// The part of the measured RTO that does not scale.
    pub fixed_seconds: f64,
    /// The data-moving phases of the RTO window.
    pub phases: Vec<ScaledPhase>,
    pub projected_rto: f64,
}

impl Projection {
    /// `S / D`: how many times larger the projected dataset is.
    pub fn factor(&self) -> f64 {
        self.measured_size.map_or(1.0, |d| self.size.bytes as f64 / d as f64)
    }

    /// Seconds spent moving data in the window, as measured.
    pub fn moving_seconds(&self) -> f64 {
        self.amounts().map(|a| a.measured_seconds).sum()
    }

    fn amounts(&self) -> impl Iterator<Item = &ScaledAmount> {
        self.phases.iter().flat_map(|p| &p.amounts)
    }

    /// The projected RTO at `bytes` (same basis as [`Self::size`]).
    pub fn rto_at(&self, bytes: f64) -> f64 {
        let Some(d) = self.measured_size else {
            return self.measured_rto;
        };
        let scale = bytes / d as f64;
        self.fixed_seconds + self.amounts().map(|a| a.scaled_seconds(scale)).sum::<f64>()
    }

    pub fn within_target(&self) -> bool {
        self.projected_rto <= self.target
    }

    /// The size at which the projected RTO reaches the target: `None` when
    /// it never does (nothing scales), `Some(0.0)` when the fixed part alone
    /// exceeds it.
    pub fn break_even_bytes(&self) -> Option<f64> {
        let d = self.measured_size? as f64;
        let per_byte: f64 = self.amounts().map(|a| a.scaled_seconds(1.0)).sum::<f64>() / d;
        if per_byte <= 0.0 {
            return None;
        }
        Some(((self.target - self.fixed_seconds) / per_byte).max(0.0))
    }

    /// `phase A 1.2 s → 2h 10m (86.4 MB at 45.2 MB/s); fixed 3.4 s`: how
    /// the projection was made, for messages.
    pub fn breakdown(&self) -> String {
        use super::monthly::seconds_text;
        if self.phases.is_empty() {
            return format!(
                "no phase in the RTO window moves data, so the projection is the measured RTO {}",
                seconds_text(self.measured_rto)
            );
        }
        let scale = self.factor();
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|p| {
                let measured: f64 = p.amounts.iter().map(|a| a.measured_seconds).sum();
                let projected: f64 = p.amounts.iter().map(|a| a.scaled_seconds(scale)).sum();
                format!(
                    "`{}` {} -> {} ({})",
                    p.name,
                    seconds_text(measured),
                    seconds_text(projected),
                    p.throughput_text()
                )
            })
            .collect();
        let measured_size = self.measured_size.map_or(0.0, |d| d as f64);
        format!(
            "measured at {} (x{:.0}): {}; fixed {}",
            format_bytes(measured_size),
            scale,
            phases.join(", "),
            seconds_text(self.fixed_seconds)
        )
    }
}

impl ScaledAmount {
    /// Its time at `scale` times the measured amount: the amount over the
    /// measured throughput. An amount of zero moved nothing, so its time is
    /// fixed cost, not scaled; one that took no time scales to none.
    fn scaled_seconds(&self, scale: f64) -> f64 {
        match self.throughput {
            _ if self.measured_amount <= 0.0 => 0.0,
            None => 0.0,
            Some(rate) => self.measured_amount * scale / rate,
        }
    }
}

/// Why a run has no projection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotProjectable {
    #[error("no RTO was measured (no incident, or never verified healthy)")]
    NoRto,
    #[error(
        "the record was written by a drillbook that did not record what its phases moved; \
         run the drill again with this one"
    )]
    NoThroughput,
    #[error(
        "its data-moving phases are recorded but not the size of the dataset they moved \
         (the drill did not call `Drill::dataset_size`)"
    )]
    NoDatasetSize,
    #[error(
        "it restored no logical dump, so a dump's size says nothing about it; \
         project it to a database size instead (--project-size 500GB)"
    )]
    NoDumpSize,
    #[error("the dataset it measured is empty (0 bytes), which cannot be scaled")]
    EmptyDataset,
}

/// `record`'s RTO at `size`, by the [module's model](self).
///
/// # Errors
///
/// [`NotProjectable`] saying what the record lacks.
pub fn project(record: &HistoryRecord, size: &ProjectionSize) -> Result<Projection, NotProjectable> {
    if !record.throughput_recorded {
        return Err(NotProjectable::NoThroughput);
    }
    let measured_rto = record.rto_seconds.ok_or(NotProjectable::NoRto)?;
    let phases: Vec<ScaledPhase> = phases_in_window(record)
        .map(|phase| ScaledPhase {
            name: phase.name.clone(),
            amounts: Vec::new(),
        })
        .collect();
    let measured_size = if phases.is_empty() {
        None
    } else {
        let dataset = record.dataset.ok_or(NotProjectable::NoDatasetSize)?;
        let d = match size.basis {
            SizeBasis::Database => dataset.database_bytes,
            SizeBasis::Dump => dataset.dump_bytes.ok_or(NotProjectable::NoDumpSize)?,
        };
        if d == 0 {
            return Err(NotProjectable::EmptyDataset);
        }
        Some(d)
    };
    let scale = measured_size.map_or(1.0, |d| size.bytes as f64 / d as f64);
    let phases: Vec<ScaledPhase> = phases_in_window(record)
        .zip(phases)
        .map(|(phase, mut scaled)| {
            let duration = std::time::Duration::from_secs_f64(phase.duration_seconds.max(0.0));
            // Several amounts timed as the whole phase moved together: the
            // phase's time counts once.
            let mut left = phase.duration_seconds.max(0.0);
            for moved in &phase.moved {
                let seconds = moved.seconds(duration).min(left);
                left -= seconds;
                let amount = moved.amount as f64;
                let throughput = (seconds > 0.0).then(|| amount / seconds);
                let mut scaled_amount = ScaledAmount {
                    quantity: moved.quantity,
                    measured_amount: amount,
                    projected_amount: amount * scale,
                    throughput,
                    measured_seconds: if amount > 0.0 { seconds } else { 0.0 },
                    projected_seconds: 0.0,
                };
                scaled_amount.projected_seconds = scaled_amount.scaled_seconds(scale);
                scaled.amounts.push(scaled_amount);
            }
            scaled
        })
        .collect();
    let moving: f64 = phases.iter().flat_map(|p| &p.amounts).map(|a| a.measured_seconds).sum();
    let fixed_seconds = (measured_rto - moving).max(0.0);
    let projected: f64 = phases
        .iter()
        .flat_map(|p| &p.amounts)
        .map(|a| a.projected_seconds)
        .sum();
    Ok(Projection {
        size: size.clone(),
        measured_size,
        measured_rto,
        target: record.rto_target_seconds,
        fixed_seconds,
        phases,
        projected_rto: fixed_seconds + projected,
    })
}

/// The phases that moved data between the incident and verified healthy.
fn phases_in_window(record: &HistoryRecord) -> impl Iterator<Item = &super::history::RecordPhase> {
    let window = record.incident.as_ref().map(|i| i.at).zip(record.verified_at);
    record.phases.iter().filter(move |phase| {
        let (Some((from, to)), Some(started)) = (window, phase.started_at) else {
            return false;
        };
        let ended = started + chrono::Duration::milliseconds((phase.duration_seconds * 1000.0) as i64);
        // A millisecond of slack: the wall clock and the monotonic clock
        // that timed the phase tick apart.
        let slack = chrono::Duration::milliseconds(1);
        phase.moves_data() && started + slack >= from && ended <= to + slack
    })
}

impl fmt::Display for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use super::monthly::seconds_text;
        write!(
            f,
            "projected RTO at {} {} (target {}; measured {})",
            self.size.label(),
            seconds_text(self.projected_rto),
            seconds_text(self.target),
            seconds_text(self.measured_rto)
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::drill::testing::fixture;
    use crate::drill::{DatasetSize, Moved};
    use crate::playbook::Scenario;

    const GB: u64 = 1_000_000_000;
    const MB: u64 = 1_000_000;

    /// A complete-infrastructure-loss drill on the manual clock: a backup
    /// before the incident (data-moving, outside the window), then in the
    /// window 5 s of provisioning, a 10 s restore of a 100 MB dump and 2 s
    /// of checks: RTO 17 s; database 400 MB.
    async fn restore_drill(dataset: Option<DatasetSize>) -> HistoryRecord {
        let mut fx = fixture("full_restore", Scenario::CompleteInfrastructureLoss);
        let clock = fx.clock.clone();
        fx.drill
            .data_phase(
                "backup",
                async {
                    clock.advance(Duration::from_secs(30));
                    Ok::<_, String>(())
                },
                |()| [Moved::bytes(100 * MB)],
            )
            .await
            .unwrap();
        fx.drill.incident("primary lost");
        let provision = fx.drill.phase("provision", async {
            clock.advance(Duration::from_secs(5));
            Ok::<_, String>(())
        });
        provision.await.unwrap();
        fx.drill
            .data_phase(
                "restore",
                async {
                    clock.advance(Duration::from_secs(10));
                    Ok::<_, String>(100 * MB)
                },
                |&bytes| [Moved::bytes(bytes)],
            )
            .await
            .unwrap();
        fx.clock.advance(Duration::from_secs(2));
        fx.drill.verified();
        if let Some(dataset) = dataset {
            fx.drill.dataset_size(dataset);
        }
        HistoryRecord::from_summary_on(&fx.drill.summary(), "embedded")
    }

    #[tokio::test]
    async fn data_moving_phases_scale_and_the_rest_stays() {
        let record = restore_drill(Some(DatasetSize::new(400 * MB, Some(100 * MB)))).await;
        let projection = project(&record, &ProjectionSize::database(400 * GB)).unwrap();
        // 1000 times the data at 10 MB/s: 10 000 s, plus 7 s fixed.
        assert_eq!(projection.measured_rto, 17.0);
        assert_eq!(projection.fixed_seconds, 7.0);
        assert_eq!(projection.factor(), 1000.0);
        assert_eq!(projection.projected_rto, 10_007.0);
        assert_eq!(projection.phases.len(), 1, "the backup is before the incident");
        let restore = &projection.phases[0].amounts[0];
        assert_eq!(restore.throughput, Some(10.0 * MB as f64));
        assert_eq!(restore.projected_amount, 100.0 * GB as f64);
        assert_eq!(projection.phases[0].throughput_text(), "100 MB at 10 MB/s");
        // 2h 46m 47s against the matrix's 4 hours.
        assert!(projection.within_target(), "{projection}");
    }

    #[tokio::test]
    async fn a_projection_equal_to_its_measurement_at_the_measured_size() {
        let record = restore_drill(Some(DatasetSize::new(400 * MB, None))).await;
        let projection = project(&record, &ProjectionSize::database(400 * MB)).unwrap();
        assert_eq!(projection.projected_rto, 17.0);
        assert_eq!(projection.rto_at(400.0 * MB as f64), 17.0);
        assert_eq!(projection.rto_at(800.0 * MB as f64), 27.0);
    }

    #[tokio::test]
    async fn over_the_target_fails_and_break_even_is_where_it_crosses() {
        let record = restore_drill(Some(DatasetSize::new(400 * MB, None))).await;
        // Target 4 h = 14 400 s: 7 s fixed + size / 40 per second (10 MB/s
        // of dump for every 400 MB of database) → 575.72 GB.
        let projection = project(&record, &ProjectionSize::database(1000 * GB)).unwrap();
        assert_eq!(projection.target, 14_400.0);
        assert!(!projection.within_target());
        let break_even = projection.break_even_bytes().unwrap();
        assert!((break_even - 575.72 * GB as f64).abs() < 1.0, "{break_even}");
        assert!((projection.rto_at(break_even) - 14_400.0).abs() < 1e-6);
        let under = project(&record, &ProjectionSize::database(500 * GB)).unwrap();
        assert!(under.within_target(), "{under}");
    }

    #[tokio::test]
    async fn a_dump_size_scales_by_the_dump_the_drill_restored() {
        let record = restore_drill(Some(DatasetSize::new(400 * MB, Some(100 * MB)))).await;
        let size = ProjectionSize::dump(10 * GB, "daily/20260501T000000.000Z/immoflowme.dump");
        let projection = project(&record, &size).unwrap();
        assert_eq!(projection.factor(), 100.0);
        assert_eq!(projection.projected_rto, 1007.0);
        let assumption = size.assumption();
        assert!(assumption.contains("logical dump bytes"), "{assumption}");
        assert!(assumption.contains("immoflowme.dump"), "{assumption}");

        let no_dump = restore_drill(Some(DatasetSize::new(400 * MB, None))).await;
        assert_eq!(project(&no_dump, &size), Err(NotProjectable::NoDumpSize));
    }

    #[tokio::test]
    async fn data_moved_without_a_dataset_size_cannot_be_projected() {
        let record = restore_drill(None).await;
        let error = project(&record, &ProjectionSize::database(GB)).unwrap_err();
        assert_eq!(error, NotProjectable::NoDatasetSize);
        assert!(error.to_string().contains("Drill::dataset_size"), "{error}");
        let empty = restore_drill(Some(DatasetSize::new(0, None))).await;
        assert_eq!(
            project(&empty, &ProjectionSize::database(GB)),
            Err(NotProjectable::EmptyDataset)
        );
    }

    #[test]
    fn no_data_moving_phase_projects_the_measured_rto() {
        let mut fx = fixture("pod", Scenario::SinglePodCrash);
        fx.drill.incident("killed the pod");
        fx.clock.advance(Duration::from_secs(40));
        fx.drill.verified();
        let record = HistoryRecord::from_summary_on(&fx.drill.summary(), "embedded");
        let projection = project(&record, &ProjectionSize::database(500 * GB)).unwrap();
        assert_eq!(projection.projected_rto, 40.0);
        assert_eq!(projection.measured_size, None);
        assert_eq!(projection.break_even_bytes(), None);
        assert!(projection.breakdown().contains("no phase in the RTO window moves data"));
    }

    #[tokio::test]
    async fn a_record_from_before_throughput_cannot_be_projected() {
        let mut record = restore_drill(Some(DatasetSize::new(400 * MB, None))).await;
        let line = record.to_json_line();
        let mut value: serde_json::Value = serde_json::from_str(&line).unwrap();
        for field in ["throughput_recorded", "dataset"] {
            value.as_object_mut().unwrap().remove(field);
        }
        for phase in value["phases"].as_array_mut().unwrap() {
            phase.as_object_mut().unwrap().remove("moved");
        }
        let old = HistoryRecord::parse(&value.to_string()).expect("an older record still reads");
        assert_eq!(
            project(&old, &ProjectionSize::database(GB)),
            Err(NotProjectable::NoThroughput)
        );
        record.throughput_recorded = true;
        assert!(project(&record, &ProjectionSize::database(GB)).is_ok());
    }

    #[test]
    fn no_rto_cannot_be_projected() {
        let fx = fixture("never", Scenario::SinglePodCrash);
        let record = HistoryRecord::from_summary_on(&fx.drill.summary(), "embedded");
        assert_eq!(
            project(&record, &ProjectionSize::database(GB)),
            Err(NotProjectable::NoRto)
        );
    }

    #[tokio::test]
    async fn zero_amounts_are_fixed_cost_and_timed_parts_scale_alone() {
        let mut fx = fixture("pitr", Scenario::DbCorruptionFull);
        let clock = fx.clock.clone();
        fx.drill.incident("bad migration");
        fx.drill
            .data_phase(
                "recover",
                async {
                    clock.advance(Duration::from_secs(10));
                    Ok::<_, String>(())
                },
                |()| {
                    [
                        // 4 s of the 10 downloading, 2 s replaying no WAL at all.
                        Moved::bytes(40 * MB).within(Duration::from_secs(4)),
                        Moved::wal_bytes(0).within(Duration::from_secs(2)),
                    ]
                },
            )
            .await
            .unwrap();
        fx.drill.verified();
        fx.drill.dataset_size(DatasetSize::new(40 * MB, None));
        let record = HistoryRecord::from_summary_on(&fx.drill.summary(), "embedded");
        let projection = project(&record, &ProjectionSize::database(400 * MB)).unwrap();
        assert_eq!(projection.fixed_seconds, 6.0);
        assert_eq!(projection.projected_rto, 6.0 + 40.0);
        let wal = &projection.phases[0].amounts[1];
        assert_eq!((wal.measured_seconds, wal.projected_seconds), (0.0, 0.0));
    }

    #[test]
    fn sizes_parse_in_any_case_with_si_and_binary_units() {
        for (text, bytes) in [
            ("500GB", 500 * GB),
            ("500 gb", 500 * GB),
            ("1.5TB", 1_500 * GB),
            ("750MiB", 750 * 1024 * 1024),
            ("2 kib", 2048),
            ("12b", 12),
            (" 3 Tib ", 3 * 1024u64.pow(4)),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        assert_eq!("NEWEST-backup".parse(), Ok(SizeRequest::NewestBackup));
        assert_eq!("500GB".parse(), Ok(SizeRequest::Bytes(500 * GB)));
    }

    #[test]
    fn bad_sizes_name_the_input_the_problem_and_the_units() {
        for (text, problem) in [
            ("500XB", "unknown unit `XB`"),
            ("500", "no unit"),
            ("GB", "does not start with a number"),
            ("1.2.3GB", "`1.2.3` is not a number"),
            ("0GB", "at least 1 byte"),
            ("", "does not start with a number"),
        ] {
            let message = parse_size(text).unwrap_err().to_string();
            for needle in [&format!("`{text}`"), problem, "KB, MB, GB, TB", "KiB", "any case"] {
                assert!(message.contains(needle), "{needle:?} missing from {message:?}");
            }
        }
    }

    #[test]
    fn labels_say_what_the_size_is() {
        assert_eq!(ProjectionSize::database(500 * GB).label(), "500 GB");
        assert_eq!(ProjectionSize::dump(86_400_000, "k").label(), "86.4 MB dump");
        let assumption = ProjectionSize::database(500 * GB).assumption();
        assert!(assumption.starts_with("Assumption: linear scaling"), "{assumption}");
        assert!(assumption.contains("pg_database_size"), "{assumption}");
    }
}
