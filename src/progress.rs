//! Progress of long phases (uploads, downloads, restores, verification) on
//! stderr: bytes or rows done, rate, ETA.
//!
//! # Design
//!
//! Library code reports progress without taking a reporter argument: it
//! opens a [`Task`] with [`task`], calls [`Task::advance`] as work gets done
//! (one atomic add, callable from any thread through a [`Counter`]) and
//! [`Task::finish`]es it (dropping it finishes it too, as "stopped"). Where
//! the progress goes is decided once per process, by the command line, with
//! [`install`]:
//!
//! - [`Sink::Terminal`]: one live line per running task on stderr, drawn by
//!   [`indicatif`] (redraw in place, terminal width, several tasks at once,
//!   a steady tick for tasks that count nothing):
//!   `download daily/…/immoflowme.dump  41.2 MiB / 85.9 MiB  48%  12.3 MiB/s  ETA 4s`.
//!   Log lines written through [`log_writer`] are printed with the live
//!   lines hidden, so they never mix. A finished task leaves one permanent
//!   line.
//! - [`Sink::Lines`] (stderr is not a terminal: CI logs, pipes): plain
//!   lines, never a carriage return. One when a task starts, one every
//!   [`LINES_INTERVAL`] while it runs, and one at the end with the total,
//!   the elapsed time and the mean rate.
//! - Nothing installed (tests, library users): silent. Tasks still count.
//!
//! The command line picks the sink from [`ENV_VAR`] (`DRILL_PROGRESS=plain`,
//! `terminal` or `off`) or, when unset, from whether stderr is a terminal
//! ([`choose_sink`]). Progress always goes to stderr: stdout stays for
//! results and `--json`.
//!
//! The plain lines are written here rather than by indicatif, which draws
//! nothing when stderr is not a terminal: CI logs rely on them. What a line
//! says (the same figures in both sinks) and when one is due are pure
//! functions of explicit values ([`Snapshot`], [`Throttle`]), so they are
//! tested without sleeping or a clock.
//!
//! # Caveats
//!
//! The rate is the mean since the task started, and the ETA extrapolates it:
//! a transfer that slows down shows an optimistic ETA for a while.

use std::io::{IsTerminal as _, Write};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The environment variable that overrides the sink: `plain`, `terminal`,
/// `off` (or `auto`, the default).
pub const ENV_VAR: &str = "DRILL_PROGRESS";

/// A task that counts nothing ([`Unit::Elapsed`]) has its terminal line
/// redrawn this often, so its elapsed time moves.
pub const TERMINAL_INTERVAL: Duration = Duration::from_millis(100);

/// While a task runs, [`Sink::Lines`] writes a line this often.
pub const LINES_INTERVAL: Duration = Duration::from_secs(5);

/// What a task counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unit {
    Bytes,
    Rows,
    /// Nothing countable (pg_restore): only the elapsed time is shown.
    Elapsed,
}

/// Where progress goes; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sink {
    /// One line redrawn in place on stderr.
    Terminal,
    /// Plain lines on stderr, a few per task.
    Lines,
}

/// A [`ENV_VAR`] value this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ENV_VAR}={value:?} is not a progress setting; use plain, terminal, off or auto")]
pub struct InvalidSetting {
    pub value: String,
}

/// The sink for a [`ENV_VAR`] setting (`None`: unset) and whether stderr is
/// a terminal; `Ok(None)` is "no progress at all".
///
/// # Errors
/// An unknown setting; callers fall back to `choose_sink(None, ..)`.
pub fn choose_sink(setting: Option<&str>, stderr_is_terminal: bool) -> Result<Option<Sink>, InvalidSetting> {
    let auto = if stderr_is_terminal {
        Sink::Terminal
    } else {
        Sink::Lines
    };
    match setting.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "auto") => Ok(Some(auto)),
        Some("plain" | "lines") => Ok(Some(Sink::Lines)),
        Some("terminal" | "tty") => Ok(Some(Sink::Terminal)),
        Some("off" | "none" | "0") => Ok(None),
        Some(_) => Err(InvalidSetting {
            value: setting.unwrap_or_default().to_owned(),
        }),
    }
}

/// What the command line calls once: reads [`ENV_VAR`] and whether stderr
/// is a terminal (a `TERM=dumb` terminal gets plain lines), then
/// [`install`]s the sink. Returns the sink in use, `None` when off.
pub fn install_from_env() -> Option<Sink> {
    let setting = std::env::var(ENV_VAR).ok();
    let terminal = std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |term| term != "dumb");
    let sink = choose_sink(setting.as_deref(), terminal).unwrap_or_else(|invalid| {
        tracing::warn!("{invalid}; using auto");
        choose_sink(None, terminal).unwrap_or(None)
    })?;
    install(sink);
    Some(sink)
}

/// Sends every task's progress to `sink` from now on. Only the first call
/// in a process counts; it returns `false` for later ones.
pub fn install(sink: Sink) -> bool {
    let mut installed = false;
    let shared = SHARED.get_or_init(|| {
        installed = true;
        Shared {
            sink,
            output: Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
            live: (sink == Sink::Terminal).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    });
    if installed && sink == Sink::Lines {
        let spawned = std::thread::Builder::new()
            .name("drillbook-progress".to_owned())
            .spawn(move || write_running_lines(shared));
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start the progress lines; progress is shown at start and end only");
        }
    }
    installed
}

/// Starts a task. Cheap when nothing is installed.
pub fn task(label: impl Into<String>, unit: Unit, total: Option<u64>) -> Task {
    let now = Instant::now();
    let label = label.into();
    let shared = SHARED.get();
    let live = shared.and_then(|shared| shared.live.as_ref()).map(|live| {
        let bar = live.add(ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden()));
        bar.set_style(live_style(unit));
        bar.set_message(label.clone());
        if unit == Unit::Elapsed {
            bar.enable_steady_tick(TERMINAL_INTERVAL);
        }
        bar
    });
    let state = Arc::new(TaskState {
        label,
        unit,
        total,
        started: now,
        done: AtomicU64::new(0),
        next_line: Mutex::new(Throttle::new(LINES_INTERVAL)),
        live,
    });
    if let Some(shared) = shared {
        lock(&state.next_line).ready(now);
        if shared.sink == Sink::Lines {
            shared.print_line(&state.snapshot(now).start_line());
        }
        lock(&shared.tasks).push(Arc::clone(&state));
    }
    Task { state: Some(state) }
}

/// A live line: the label, shortened by indicatif to fit the terminal, then
/// the same figures as a plain line ([`Snapshot::figures`]).
fn live_style(unit: Unit) -> ProgressStyle {
    let template = match unit {
        Unit::Elapsed => "{spinner} {wide_msg}  {figures}",
        Unit::Bytes | Unit::Rows => "{wide_msg}  {figures}",
    };
    ProgressStyle::with_template(template)
        .expect("the live line templates are valid")
        .with_key(
            "figures",
            move |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                let snapshot = Snapshot {
                    label: String::new(),
                    unit,
                    done: state.pos(),
                    total: state.len(),
                    elapsed: state.elapsed(),
                };
                let _ = out.write_str(&snapshot.figures());
            },
        )
}

/// A phase in progress; see [`task`]. Dropping it without [`Task::finish`]
/// ends it as "stopped" (an error path).
#[derive(Debug)]
pub struct Task {
    /// `None` once ended.
    state: Option<Arc<TaskState>>,
}

impl Task {
    /// Counts `n` more bytes or rows done.
    pub fn advance(&self, n: u64) {
        if let Some(state) = &self.state {
            state.advance(n);
        }
    }

    /// Done so far.
    pub fn done(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.done.load(Ordering::Relaxed))
    }

    /// A handle that only advances this task, for another thread (it is
    /// `Clone + Send + Sync` and `'static`); it does not keep the task open.
    pub fn counter(&self) -> Counter {
        Counter {
            state: self.state.clone(),
        }
    }

    /// Ends the task successfully: the sink shows the total, the elapsed
    /// time and the mean rate.
    pub fn finish(mut self) {
        self.end(Outcome::Done);
    }

    fn end(&mut self, outcome: Outcome) {
        let Some(state) = self.state.take() else {
            return;
        };
        let Some(shared) = SHARED.get() else {
            return;
        };
        lock(&shared.tasks).retain(|task| !Arc::ptr_eq(task, &state));
        if let (Some(live), Some(bar)) = (&shared.live, &state.live) {
            bar.finish_and_clear();
            live.remove(bar);
        }
        shared.print_line(&state.snapshot(Instant::now()).end_line(outcome));
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.end(Outcome::Stopped);
    }
}

/// Advances a [`Task`] from anywhere; see [`Task::counter`].
#[derive(Debug, Clone)]
pub struct Counter {
    state: Option<Arc<TaskState>>,
}

impl Counter {
    /// Counts `n` more bytes or rows done.
    pub fn advance(&self, n: u64) {
        if let Some(state) = &self.state {
            state.advance(n);
        }
    }
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// [`Task::finish`].
    Done,
    /// Dropped unfinished (the phase failed or was abandoned).
    Stopped,
}

/// A task's state at one instant: everything a line is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub label: String,
    pub unit: Unit,
    pub done: u64,
    pub total: Option<u64>,
    pub elapsed: Duration,
}

impl Snapshot {
    /// `download x  started (85.9 MiB)`.
    pub fn start_line(&self) -> String {
        match (self.unit, self.total) {
            (Unit::Elapsed, _) | (_, None) => format!("{}  started", self.label),
            (unit, Some(total)) => format!("{}  started ({})", self.label, amount(unit, total)),
        }
    }

    /// The figures after the label while running:
    /// `41.2 MiB / 85.9 MiB  48%  12.3 MiB/s  ETA 4s`, or without a total
    /// `41.2 MiB  12.3 MiB/s  3.4s elapsed`, or for [`Unit::Elapsed`]
    /// `running, 12s elapsed`.
    pub fn figures(&self) -> String {
        if self.unit == Unit::Elapsed {
            return format!("running, {} elapsed", duration(self.elapsed));
        }
        let mut parts = Vec::with_capacity(4);
        // No rate before the first unit: "0 B/s" says nothing.
        let rate = rate(self.done, self.elapsed).filter(|_| self.done > 0);
        match self.total {
            Some(total) => {
                parts.push(format!(
                    "{} / {}",
                    amount(self.unit, self.done),
                    amount(self.unit, total)
                ));
                parts.push(format!("{}%", percent(self.done, total)));
            }
            None => parts.push(amount(self.unit, self.done)),
        }
        if let Some(rate) = rate {
            parts.push(per_second(self.unit, rate));
        }
        match self.total.and_then(|total| eta(self.done, total, self.elapsed)) {
            Some(eta) => parts.push(format!("ETA {}", duration(eta))),
            None => parts.push(format!("{} elapsed", duration(self.elapsed))),
        }
        parts.join("  ")
    }

    /// `label  figures`: what [`Sink::Lines`] prints while a task runs.
    pub fn running_line(&self) -> String {
        format!("{}  {}", self.label, self.figures())
    }

    /// `download x  done: 85.9 MiB in 7.0s (12.3 MiB/s)`, or `stopped
    /// after` for a task dropped unfinished.
    pub fn end_line(&self, outcome: Outcome) -> String {
        let verb = match outcome {
            Outcome::Done => "done:",
            Outcome::Stopped => "stopped after",
        };
        if self.unit == Unit::Elapsed {
            let verb = match outcome {
                Outcome::Done => "done in",
                Outcome::Stopped => "stopped after",
            };
            return format!("{}  {verb} {}", self.label, duration(self.elapsed));
        }
        let mut line = format!(
            "{}  {verb} {} in {}",
            self.label,
            amount(self.unit, self.done),
            duration(self.elapsed)
        );
        if let Some(rate) = rate(self.done, self.elapsed) {
            line.push_str(&format!(" ({})", per_second(self.unit, rate)));
        }
        line
    }
}

/// "Is a line due?" for one interval; the first call is always due.
#[derive(Debug, Clone)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Self { interval, last: None }
    }

    /// Whether a line is due at `now`; if so, `now` is remembered as the
    /// last one.
    pub fn ready(&mut self, now: Instant) -> bool {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// `512 B`, `1.0 KiB`, `41.2 MiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// An amount in its unit: `41.2 MiB`, `20,000 rows`.
pub fn amount(unit: Unit, n: u64) -> String {
    match unit {
        Unit::Bytes => bytes(n),
        Unit::Rows => format!("{} rows", count(n)),
        Unit::Elapsed => String::new(),
    }
}

/// A rate in its unit: `12.3 MiB/s`, `52,310 rows/s`.
pub fn per_second(unit: Unit, rate: f64) -> String {
    let whole = rate.max(0.0).round() as u64;
    match unit {
        Unit::Bytes => format!("{}/s", bytes(whole)),
        Unit::Rows => format!("{} rows/s", count(whole)),
        Unit::Elapsed => String::new(),
    }
}

/// Mean units per second; `None` before any time has passed.
pub fn rate(done: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (secs > 0.0).then(|| done as f64 / secs)
}

/// The remaining time at the mean rate so far; `None` while nothing is done
/// (no rate to extrapolate), zero once `done` reaches `total`.
pub fn eta(done: u64, total: u64, elapsed: Duration) -> Option<Duration> {
    if done >= total {
        return Some(Duration::ZERO);
    }
    let rate = rate(done, elapsed).filter(|&r| r > 0.0)?;
    Duration::try_from_secs_f64((total - done) as f64 / rate).ok()
}

/// Whole percent, capped at 100 (a total may be an estimate).
pub fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 100;
    }
    (u128::from(done) * 100 / u128::from(total)).min(100) as u64
}

/// `0.4s`, `42s`, `4m05s`, `2h03m`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 10 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    }
}

/// A [`tracing_subscriber`] writer for stderr that first clears the
/// terminal progress line, so log lines never mix with it (the next redraw
/// brings it back). Plain stderr when no terminal sink is installed.
pub fn log_writer() -> LogWriter {
    LogWriter
}

/// See [`log_writer`].
#[derive(Debug, Clone, Copy)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match SHARED.get().and_then(|shared| shared.live.as_ref()) {
            Some(live) => {
                live.suspend(|| std::io::stderr().lock().write_all(buf))?;
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

static SHARED: OnceLock<Shared> = OnceLock::new();

struct Shared {
    sink: Sink,
    /// Serializes the lines this module writes to stderr itself.
    output: Mutex<()>,
    /// Running tasks, oldest first.
    tasks: Mutex<Vec<Arc<TaskState>>>,
    /// [`Sink::Terminal`]'s live lines.
    live: Option<MultiProgress>,
}

impl Shared {
    /// A permanent line (with the live lines hidden while it is written).
    fn print_line(&self, line: &str) {
        let _serial = lock(&self.output);
        let write = || {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "{line}");
            let _ = stderr.flush();
        };
        match &self.live {
            Some(live) => live.suspend(write),
            None => write(),
        }
    }

    /// [`Sink::Lines`]: a running task's line, unless `task` ended
    /// meanwhile (its end line is then already out, and must stay its last
    /// word).
    fn print_running(&self, task: &Arc<TaskState>, line: &str) {
        let _serial = lock(&self.output);
        if !lock(&self.tasks).iter().any(|running| Arc::ptr_eq(running, task)) {
            return;
        }
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{line}");
        let _ = stderr.flush();
    }
}

#[derive(Debug)]
struct TaskState {
    label: String,
    unit: Unit,
    total: Option<u64>,
    started: Instant,
    done: AtomicU64,
    /// When [`Sink::Lines`] writes this task's next line.
    next_line: Mutex<Throttle>,
    /// Its live line under [`Sink::Terminal`].
    live: Option<ProgressBar>,
}

impl TaskState {
    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.live {
            bar.inc(n);
        }
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            label: self.label.clone(),
            unit: self.unit,
            done: self.done.load(Ordering::Relaxed),
            total: self.total,
            elapsed: now.saturating_duration_since(self.started),
        }
    }
}

/// [`Sink::Lines`]'s background thread: each running task's line, every
/// [`LINES_INTERVAL`]. Runs until the process exits.
fn write_running_lines(shared: &'static Shared) {
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = Instant::now();
        let tasks: Vec<Arc<TaskState>> = lock(&shared.tasks).clone();
        for task in &tasks {
            if lock(&task.next_line).ready(now) {
                shared.print_running(task, &task.snapshot(now).running_line());
            }
        }
    }
}

/// A poisoned lock only means another thread panicked mid-line: keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn snapshot(unit: Unit, done: u64, total: Option<u64>, elapsed: Duration) -> Snapshot {
        Snapshot {
            label: "restore: download dump".to_owned(),
            unit,
            done,
            total,
            elapsed,
        }
    }

    #[test]
    fn bytes_rows_and_durations_read_like_a_human_wrote_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(41 * MIB + MIB / 5), "41.2 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(amount(Unit::Rows, 20_000), "20,000 rows");
        assert_eq!(per_second(Unit::Rows, 52_310.4), "52,310 rows/s");
        assert_eq!(per_second(Unit::Bytes, 12.3 * MIB as f64), "12.3 MiB/s");
        assert_eq!(duration(Duration::from_millis(430)), "0.4s");
        assert_eq!(duration(Duration::from_secs(42)), "42s");
        assert_eq!(duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(duration(Duration::from_secs(2 * 3600 + 3 * 60 + 59)), "2h03m");
    }

    #[test]
    fn eta_extrapolates_the_mean_rate() {
        // 40 MiB in 4 s is 10 MiB/s; 60 MiB left is 6 s.
        assert_eq!(
            eta(40 * MIB, 100 * MIB, Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(eta(0, 100, Duration::from_secs(4)), None, "no rate yet");
        assert_eq!(eta(10, 100, Duration::ZERO), None, "no time passed");
        assert_eq!(eta(100, 100, Duration::from_secs(1)), Some(Duration::ZERO));
        assert_eq!(
            eta(120, 100, Duration::from_secs(1)),
            Some(Duration::ZERO),
            "past an estimate"
        );
        assert_eq!(rate(30, Duration::from_secs(3)), Some(10.0));
        assert_eq!(rate(30, Duration::ZERO), None);
        assert_eq!(percent(48, 100), 48);
        assert_eq!(percent(150, 100), 100);
        assert_eq!(percent(0, 0), 100);
        assert_eq!(percent(u64::MAX / 2, u64::MAX), 49, "no overflow");
    }

    #[test]
    fn running_lines_show_done_total_percent_rate_and_eta() {
        let s = snapshot(Unit::Bytes, 48 * MIB, Some(100 * MIB), Duration::from_secs(4));
        assert_eq!(
            s.running_line(),
            "restore: download dump  48.0 MiB / 100.0 MiB  48%  12.0 MiB/s  ETA 4.3s"
        );
        let unknown_total = snapshot(Unit::Bytes, 48 * MIB, None, Duration::from_secs(4));
        assert_eq!(
            unknown_total.running_line(),
            "restore: download dump  48.0 MiB  12.0 MiB/s  4.0s elapsed"
        );
        let rows = snapshot(Unit::Rows, 150_000, None, Duration::from_secs(3));
        assert_eq!(rows.figures(), "150,000 rows  50,000 rows/s  3.0s elapsed");
        let phase = snapshot(Unit::Elapsed, 0, None, Duration::from_secs(75));
        assert_eq!(phase.running_line(), "restore: download dump  running, 1m15s elapsed");
        let nothing_yet = snapshot(Unit::Bytes, 0, Some(MIB), Duration::ZERO);
        assert_eq!(nothing_yet.figures(), "0 B / 1.0 MiB  0%  0.0s elapsed");
        let waiting = snapshot(Unit::Bytes, 0, None, Duration::from_secs(2));
        assert_eq!(waiting.figures(), "0 B  2.0s elapsed", "no rate before the first byte");
    }

    #[test]
    fn plain_lines_have_label_amount_time_and_rate_and_no_carriage_return() {
        let s = snapshot(
            Unit::Bytes,
            85 * MIB + 9 * MIB / 10,
            Some(86 * MIB),
            Duration::from_secs(7),
        );
        let start = s.start_line();
        let end = s.end_line(Outcome::Done);
        assert_eq!(start, "restore: download dump  started (86.0 MiB)");
        assert_eq!(end, "restore: download dump  done: 85.9 MiB in 7.0s (12.3 MiB/s)");
        let stopped = s.end_line(Outcome::Stopped);
        assert!(stopped.contains("stopped after 85.9 MiB in 7.0s"), "{stopped}");
        let upload = Snapshot {
            label: "upload x".into(),
            total: None,
            ..s.clone()
        };
        assert_eq!(upload.start_line(), "upload x  started");
        let phase = snapshot(Unit::Elapsed, 0, None, Duration::from_secs(12));
        assert_eq!(phase.end_line(Outcome::Done), "restore: download dump  done in 12s");
        for line in [start, end, stopped, s.running_line(), phase.running_line()] {
            assert!(
                !line.contains('\r') && !line.contains('\n') && !line.contains('\x1b'),
                "{line:?}"
            );
        }
    }

    #[test]
    fn live_lines_fit_the_terminal_and_show_the_plain_lines_figures() {
        let terminal = indicatif::InMemoryTerm::new(4, 80);
        let label = format!("download daily/20261129T023000.000Z/{}.dump", "x".repeat(60));
        for (unit, total, figures) in [
            (Unit::Bytes, Some(100 * MIB), "48.0 MiB / 100.0 MiB  48%"),
            (Unit::Rows, None, "50,331,648 rows"),
            (Unit::Elapsed, None, "running, "),
        ] {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::term_like(Box::new(terminal.clone())));
            bar.set_style(live_style(unit));
            bar.set_message(label.clone());
            bar.set_position(48 * MIB);
            bar.tick();
            let line = terminal.contents();
            assert!(line.contains(figures), "{unit:?}: {line:?}");
            assert!(line.starts_with("download daily/") || unit == Unit::Elapsed, "{line:?}");
            assert!(
                line.lines().all(|l| l.chars().count() <= 80),
                "wider than the terminal: {line:?}"
            );
            bar.finish_and_clear();
        }
    }

    #[test]
    fn throttle_lets_one_line_through_per_interval() {
        let t0 = Instant::now();
        let mut lines = Throttle::new(LINES_INTERVAL);
        assert!(lines.ready(t0), "the first line is due at once");
        assert!(!lines.ready(t0 + Duration::from_secs(1)));
        assert!(!lines.ready(t0 + Duration::from_millis(4999)));
        assert!(lines.ready(t0 + Duration::from_secs(5)));
        assert!(!lines.ready(t0 + Duration::from_secs(9)), "counted from the last line");
        assert!(lines.ready(t0 + Duration::from_secs(10)));
        let mut redraws = Throttle::new(TERMINAL_INTERVAL);
        let drawn = (0..100)
            .filter(|i| redraws.ready(t0 + Duration::from_millis(i * 10)))
            .count();
        assert_eq!(drawn, 10, "a second of 10 ms updates draws 10 times");
    }

    #[test]
    fn the_setting_overrides_the_terminal_check() {
        assert_eq!(choose_sink(None, true), Ok(Some(Sink::Terminal)));
        assert_eq!(choose_sink(None, false), Ok(Some(Sink::Lines)));
        assert_eq!(choose_sink(Some("auto"), false), Ok(Some(Sink::Lines)));
        assert_eq!(choose_sink(Some("plain"), true), Ok(Some(Sink::Lines)));
        assert_eq!(choose_sink(Some("Terminal"), false), Ok(Some(Sink::Terminal)));
        assert_eq!(choose_sink(Some("off"), true), Ok(None));
        let bad = choose_sink(Some("fancy"), true).unwrap_err();
        assert!(bad.to_string().contains("plain, terminal, off"), "{bad}");
    }

    #[test]
    fn tasks_count_from_any_thread_and_are_silent_without_a_sink() {
        // No sink is installed in unit tests: nothing printed, but counted.
        let task = task("rows", Unit::Rows, None);
        let counters: Vec<_> = (0..4).map(|_| task.counter()).collect();
        std::thread::scope(|scope| {
            for counter in &counters {
                scope.spawn(|| (0..1000).for_each(|_| counter.advance(1)));
            }
        });
        task.advance(5);
        assert_eq!(task.done(), 4005);
        task.finish();
        assert!(SHARED.get().is_none(), "tests never install a sink");
    }
}
