//! The monthly drill report for people: Markdown, and one self-contained
//! HTML file (inline CSS, inline SVG charts, no scripts, no external assets:
//! it opens from an artifact download, a mail attachment or a wiki upload).
//!
//! Both show the summary verdict, the table of runs (scenario, recovery
//! action, RTO and RPO measured vs target, findings), each run's incident
//! timeline and post-recovery checklist, and the trend of RTO and RPO per
//! scenario against target over the trend months (charts in HTML, a table in
//! Markdown).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::history::HistoryRecord;
use super::month::Month;
use super::monthly::{MonthVerdict, MonthlyReport, seconds_text};
use super::projection::{Projection, project};
use crate::checklist::Item;
use crate::drill::moved::format_bytes;
use crate::time::timestamp;

/// One row of a run's post-recovery checklist: title, status, detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecklistRow {
    pub title: String,
    /// `passed`, `failed`, `not applicable`, `not recorded`.
    pub status: &'static str,
    pub detail: String,
}

/// The run's checklist: playbook section 7 when the drill attached it
/// (`crate::checklist`: checks `checklist: <title>`, properties
/// `checklist.<item>`), else the drill's own checks.
pub fn checklist(record: &HistoryRecord) -> (bool, Vec<ChecklistRow>) {
    let attached = record.checks.iter().any(|c| c.name.starts_with("checklist: "))
        || record.properties.keys().any(|k| k.starts_with("checklist."));
    if !attached {
        let rows = record
            .checks
            .iter()
            .map(|c| ChecklistRow {
                title: c.name.clone(),
                status: if c.passed { "passed" } else { "failed" },
                detail: c.detail.clone(),
            })
            .collect();
        return (false, rows);
    }
    let rows = Item::ALL
        .iter()
        .map(|&item| {
            let title = item.title();
            let key = serde_json::to_value(item)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let check = record
                .checks
                .iter()
                .find(|c| c.name.strip_prefix("checklist: ") == Some(title));
            let (status, detail) = match (check, record.properties.get(&format!("checklist.{key}"))) {
                (Some(c), _) => (if c.passed { "passed" } else { "failed" }, c.detail.clone()),
                (None, Some(value)) => (
                    "not applicable",
                    value.strip_prefix("not applicable: ").unwrap_or(value).to_owned(),
                ),
                (None, None) => ("not recorded", String::new()),
            };
            ChecklistRow {
                title: title.to_owned(),
                status,
                detail,
            }
        })
        .collect();
    (true, rows)
}

fn measured_vs_target(measured: Option<f64>, target: Option<f64>) -> String {
    let measured = measured.map_or_else(|| "not measured".to_owned(), seconds_text);
    match target {
        Some(target) => format!("{measured} / {}", seconds_text(target)),
        None => format!("{measured} / no target"),
    }
}

fn findings_text(record: &HistoryRecord) -> String {
    if record.passed {
        return if record.findings.is_empty() {
            "none".to_owned()
        } else {
            record.findings.join("; ")
        };
    }
    let mut all = record.failures.clone();
    for finding in &record.findings {
        if !all.contains(finding) {
            all.push(finding.clone());
        }
    }
    all.join("; ")
}

/// Worst (largest) value per scenario and month: what the trend shows.
struct Series {
    title: String,
    values: BTreeMap<Month, f64>,
    /// Worst projected RTO per month, when the report projects.
    projected: BTreeMap<Month, f64>,
    target: Option<f64>,
}

fn trend(report: &MonthlyReport, pick: impl Fn(&HistoryRecord) -> (Option<f64>, Option<f64>)) -> Vec<Series> {
    trend_with(report, pick, |_| None)
}

/// The RTO trend, with each run's projection beside its measurement.
fn rto_trend(report: &MonthlyReport) -> Vec<Series> {
    let size = report.projection_size.as_ref();
    trend_with(report, rto_of, |record| {
        project(record, size?).ok().map(|p| p.projected_rto)
    })
}

fn trend_with(
    report: &MonthlyReport,
    pick: impl Fn(&HistoryRecord) -> (Option<f64>, Option<f64>),
    projected: impl Fn(&HistoryRecord) -> Option<f64>,
) -> Vec<Series> {
    let mut by_scenario: BTreeMap<String, Series> = BTreeMap::new();
    for record in &report.trend {
        let (value, target) = pick(record);
        let series = by_scenario.entry(record.scenario_title()).or_insert_with(|| Series {
            title: record.scenario_title(),
            values: BTreeMap::new(),
            projected: BTreeMap::new(),
            target: None,
        });
        // The newest run's target is the one the chart draws.
        if target.is_some() {
            series.target = target;
        }
        let month = Month::of(record.started_at);
        if let Some(value) = value {
            let worst = series.values.entry(month).or_insert(value);
            *worst = worst.max(value);
        }
        if let Some(value) = projected(record) {
            let worst = series.projected.entry(month).or_insert(value);
            *worst = worst.max(value);
        }
    }
    by_scenario.into_values().filter(|s| !s.values.is_empty()).collect()
}

fn rto_of(r: &HistoryRecord) -> (Option<f64>, Option<f64>) {
    (r.rto_seconds, Some(r.rto_target_seconds))
}

fn rpo_of(r: &HistoryRecord) -> (Option<f64>, Option<f64>) {
    (r.rpo_seconds, r.rpo_target_seconds)
}

/// The report in Markdown.
pub fn markdown(report: &MonthlyReport) -> String {
    let mut md = String::new();
    let verdict = report.verdict();
    let _ = writeln!(md, "# Disaster-recovery drill report: {}\n", report.month.long_name());
    let _ = writeln!(md, "**Verdict: {}** — {}\n", verdict.label(), report.summary_sentence());
    if verdict != MonthVerdict::NoDrills {
        md.push_str("## Drills\n\n");
        md.push_str(
            "| drill | scenario | recovery | RTO measured / target | RPO measured / target | verdict | findings |\n",
        );
        md.push_str("|---|---|---|---|---|---|---|\n");
        for run in &report.runs {
            let r = &run.record;
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                r.drill,
                md_cell(&r.scenario_title()),
                md_cell(&r.action),
                measured_vs_target(r.rto_seconds, Some(r.rto_target_seconds)),
                measured_vs_target(r.rpo_seconds, r.rpo_target_seconds),
                r.verdict_label(),
                md_cell(&findings_text(r)),
            );
        }
        md.push('\n');
    }
    md_projection(&mut md, report);
    md_trend(&mut md, report, "RTO", rto_trend(report));
    md_trend(&mut md, report, "RPO", trend(report, rpo_of));
    for run in &report.runs {
        let r = &run.record;
        let _ = writeln!(
            md,
            "## `{}` — {}, {}\n",
            r.drill,
            r.scenario_title(),
            timestamp(r.started_at)
        );
        let _ = writeln!(
            md,
            "Verdict **{}**; backend {}; dataset {}; drillbook {}; PostgreSQL {}.\n",
            r.verdict_label(),
            r.backend,
            r.dataset_size.as_deref().unwrap_or("not recorded"),
            r.drillbook_version,
            r.postgres_version.as_deref().unwrap_or("not recorded"),
        );
        for failure in &r.failures {
            let _ = writeln!(md, "- {failure}");
        }
        if !r.failures.is_empty() {
            md.push('\n');
        }
        md.push_str("### Incident timeline\n\n");
        if r.timeline.is_empty() {
            md.push_str("No timeline was recorded (older history format).\n\n");
        } else {
            md.push_str("```text\n");
            for e in &r.timeline {
                let _ = writeln!(
                    md,
                    "{} {:>14}  {}",
                    timestamp(e.at),
                    format!("+{}", seconds_text(e.elapsed_seconds)),
                    e.message
                );
            }
            md.push_str("```\n\n");
        }
        let (section_7, rows) = checklist(r);
        md.push_str(if section_7 {
            "### Post-recovery checklist (playbook section 7)\n\n"
        } else {
            "### Post-recovery checks\n\n"
        });
        if rows.is_empty() {
            md.push_str("No checks were recorded.\n\n");
        } else {
            for row in rows {
                let mark = if row.status == "passed" { "x" } else { " " };
                let detail = if row.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", row.detail)
                };
                let _ = writeln!(md, "- [{mark}] {} — {}{detail}", row.title, row.status);
            }
            md.push('\n');
        }
    }
    md_warnings(&mut md, report);
    let _ = writeln!(md, "_Generated {}._", timestamp(report.generated_at));
    md
}

fn md_trend(md: &mut String, report: &MonthlyReport, what: &str, series: Vec<Series>) {
    if series.is_empty() {
        return;
    }
    let _ = writeln!(md, "## {what} per scenario, worst run per month\n");
    let months: Vec<String> = report.trend_months.iter().map(ToString::to_string).collect();
    let _ = writeln!(md, "| scenario | target | {} |", months.join(" | "));
    let _ = writeln!(md, "|---|---|{}", "---|".repeat(months.len()));
    for s in series {
        let cells: Vec<String> = report
            .trend_months
            .iter()
            .map(|m| {
                let measured = s.values.get(m).map_or_else(|| "–".to_owned(), |&v| seconds_text(v));
                match (s.projected.get(m), &report.projection_size) {
                    (Some(&p), Some(size)) => format!("{measured} (at {}: {})", size.label(), seconds_text(p)),
                    _ => measured,
                }
            })
            .collect();
        let target = s.target.map_or_else(|| "none".to_owned(), seconds_text);
        let _ = writeln!(md, "| {} | {target} | {} |", md_cell(&s.title), cells.join(" | "));
    }
    md.push('\n');
}

fn md_projection(md: &mut String, report: &MonthlyReport) {
    let Some(size) = &report.projection_size else {
        return;
    };
    let _ = writeln!(md, "## RTO projected to {}\n", size.label());
    let _ = writeln!(md, "{}\n", size.assumption());
    md.push_str("| drill | scenario | RTO measured | RTO projected | target | verdict | data-moving phases | target reached at |\n");
    md.push_str("|---|---|---|---|---|---|---|---|\n");
    for (run, projection) in report.projections() {
        let r = &run.record;
        let row = ProjectionRow::of(projection.as_ref());
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
            r.drill,
            md_cell(&r.scenario_title()),
            r.rto_seconds.map_or_else(|| "not measured".to_owned(), seconds_text),
            row.projected,
            seconds_text(r.rto_target_seconds),
            row.verdict,
            md_cell(&row.phases),
            row.break_even,
        );
    }
    md.push('\n');
}

/// One run's projection as table cells.
struct ProjectionRow {
    projected: String,
    verdict: &'static str,
    phases: String,
    break_even: String,
}

impl ProjectionRow {
    fn of(projection: Result<&Projection, &super::projection::NotProjectable>) -> Self {
        match projection {
            Ok(p) => Self {
                projected: seconds_text(p.projected_rto),
                verdict: if p.within_target() {
                    "within target"
                } else {
                    "MISSES target"
                },
                phases: if p.phases.is_empty() {
                    "none (nothing scales)".to_owned()
                } else {
                    p.phases
                        .iter()
                        .map(|phase| format!("{}: {}", phase.name, phase.throughput_text()))
                        .collect::<Vec<_>>()
                        .join("; ")
                },
                break_even: match p.break_even_bytes() {
                    None => "never".to_owned(),
                    Some(bytes) if bytes <= 0.0 => "already".to_owned(),
                    Some(bytes) => format_bytes(bytes),
                },
            },
            Err(why) => Self {
                projected: "not projected".to_owned(),
                verdict: "not projected",
                phases: why.to_string(),
                break_even: "–".to_owned(),
            },
        }
    }
}

fn md_warnings(md: &mut String, report: &MonthlyReport) {
    if report.warnings.is_empty() {
        return;
    }
    md.push_str("## Skipped while reading\n\n");
    for warning in &report.warnings {
        let _ = writeln!(md, "- {}", md_cell(warning));
    }
    md.push('\n');
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "
:root{--ok:#1a7f37;--bad:#cf222e;--muted:#57606a;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 8px}h2{font-size:20px;margin:32px 0 12px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:16px;margin:20px 0 8px}
.verdict{display:inline-block;font-weight:700;font-size:18px;padding:4px 14px;border-radius:6px;color:#fff}
.verdict.passed{background:var(--ok)}.verdict.failed{background:var(--bad)}.verdict.none{background:#9a6700}
.summary{font-size:16px;margin:8px 0 0}
table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{border:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
#drills td:last-child{min-width:280px}
.miss{color:var(--bad);font-weight:600}.ok{color:var(--ok);font-weight:600}.na{color:var(--muted)}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;background:var(--bg);padding:1px 4px;border-radius:4px}
.charts{display:flex;flex-wrap:wrap;gap:16px}
.chart{border:1px solid var(--line);border-radius:6px;padding:8px;background:#fff}
.run{border:1px solid var(--line);border-radius:8px;padding:4px 16px 12px;margin:16px 0}
.facts{color:var(--muted)}
.timeline td:first-child,.timeline td:nth-child(2){white-space:nowrap;font-variant-numeric:tabular-nums}
.warnings li{color:#9a6700}
footer{margin-top:32px;color:var(--muted);font-size:13px}
";

/// The report as one self-contained HTML document.
pub fn html(report: &MonthlyReport) -> String {
    let verdict = report.verdict();
    let class = match verdict {
        MonthVerdict::Passed => "passed",
        MonthVerdict::Failed => "failed",
        MonthVerdict::NoDrills => "none",
    };
    let title = format!("Disaster-recovery drill report: {}", report.month.long_name());
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head><body>\n",
        esc(&title)
    );
    let _ = writeln!(
        h,
        "<header><h1>{}</h1><span class=\"verdict {class}\" id=\"verdict\">{}</span>\
         <p class=\"summary\" id=\"summary\">{}</p></header>",
        esc(&title),
        verdict.label(),
        esc(&report.summary_sentence())
    );
    if verdict != MonthVerdict::NoDrills {
        html_table(&mut h, report);
    }
    html_projection(&mut h, report);
    html_charts(&mut h, report);
    for (index, run) in report.runs.iter().enumerate() {
        html_run(&mut h, index, &run.record);
    }
    if !report.warnings.is_empty() {
        h.push_str("<section class=\"warnings\"><h2>Skipped while reading</h2><ul>");
        for warning in &report.warnings {
            let _ = write!(h, "<li>{}</li>", esc(warning));
        }
        h.push_str("</ul></section>\n");
    }
    let _ = write!(
        h,
        "<footer>Generated {} by drillbook {}. Targets are the playbook's decision matrix unless overridden.</footer>\n\
         </body></html>\n",
        timestamp(report.generated_at),
        env!("CARGO_PKG_VERSION")
    );
    h
}

fn html_table(h: &mut String, report: &MonthlyReport) {
    h.push_str(
        "<section id=\"drills\"><h2>Drills</h2><table><thead><tr><th>drill</th><th>scenario</th>\
         <th>recovery</th><th>RTO measured / target</th><th>RPO measured / target</th><th>verdict</th>\
         <th>findings</th></tr></thead><tbody>\n",
    );
    for (index, run) in report.runs.iter().enumerate() {
        let r = &run.record;
        let rto_class = if r.rto_missed() { "miss" } else { "ok" };
        let rpo_class = match (r.rpo_target_seconds, r.rpo_missed()) {
            (None, _) => "na",
            (Some(_), true) => "miss",
            (Some(_), false) => "ok",
        };
        let verdict_class = if r.passed { "ok" } else { "miss" };
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#run-{index}\"><code>{}</code></a></td><td>{}</td><td>{}</td>\
             <td class=\"num {rto_class}\">{}</td><td class=\"num {rpo_class}\">{}</td>\
             <td class=\"{verdict_class}\">{}</td><td>{}</td></tr>",
            esc(&r.drill),
            esc(&r.scenario_title()),
            esc(&r.action),
            esc(&measured_vs_target(r.rto_seconds, Some(r.rto_target_seconds))),
            esc(&measured_vs_target(r.rpo_seconds, r.rpo_target_seconds)),
            r.verdict_label(),
            esc(&findings_text(r)),
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn html_charts(h: &mut String, report: &MonthlyReport) {
    let rto = rto_trend(report);
    let rpo = trend(report, rpo_of);
    if rto.is_empty() && rpo.is_empty() {
        return;
    }
    let first = report.trend_months.first().copied().unwrap_or(report.month);
    let projected = report
        .projection_size
        .as_ref()
        .map(|size| format!(" Outlined bars: the RTO projected to {}.", esc(&size.label())))
        .unwrap_or_default();
    let _ = writeln!(
        h,
        "<section id=\"trends\"><h2>RTO and RPO per scenario, {first} to {}</h2>\
         <p class=\"facts\">Worst run of each month against the target (dashed line); red bars missed it.{projected} \
         Logarithmic scale: seconds and hours on one axis, each gridline ten times the one below.</p>\
         <div class=\"charts\">",
        report.month
    );
    for series in &rto {
        h.push_str(&chart("RTO", series, &report.trend_months));
    }
    for series in &rpo {
        h.push_str(&chart("RPO", series, &report.trend_months));
    }
    h.push_str("</div></section>\n");
}

/// Gridlines of a logarithmic time axis, in seconds, with their labels.
const TIME_TICKS: &[(f64, &str)] = &[
    (0.01, "10 ms"),
    (0.1, "0.1 s"),
    (1.0, "1 s"),
    (10.0, "10 s"),
    (60.0, "1 min"),
    (600.0, "10 min"),
    (3600.0, "1 h"),
    (36_000.0, "10 h"),
    (360_000.0, "100 h"),
    (3_600_000.0, "1000 h"),
];

/// A logarithmic axis over `values`, from the gridline at or below a third
/// of the smallest to the one at or above the largest; maps a value to 0..=1.
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    fn over(values: impl Iterator<Item = f64>, ticks: &[f64]) -> Self {
        let (min, max) = values
            .filter(|v| *v > 0.0)
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (min, max) = if min > max { (1.0, 10.0) } else { (min, max) };
        // A third of the smallest value at least: a bar as tall as the
        // axis's bottom would vanish and read as zero.
        let lo = ticks
            .iter()
            .rev()
            .find(|t| **t <= min / 3.0)
            .copied()
            .unwrap_or(min / 3.0);
        let hi = ticks.iter().find(|t| **t >= max).copied().unwrap_or(max);
        let hi = if hi <= lo { lo * 10.0 } else { hi };
        Self { lo, hi }
    }

    fn fraction(&self, value: f64) -> f64 {
        let value = value.clamp(self.lo, self.hi);
        (value.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
    }

    fn ticks<'t>(&self, ticks: &'t [(f64, &'t str)]) -> impl Iterator<Item = &'t (f64, &'t str)> {
        let (lo, hi) = (self.lo, self.hi);
        ticks.iter().filter(move |(t, _)| *t >= lo && *t <= hi)
    }
}

/// The horizontal gridlines of a time axis from `left` to `right`, each
/// labelled on the left, at `y(tick)`.
fn time_gridlines(svg: &mut String, axis: &LogAxis, y: impl Fn(f64) -> f64, left: f64, right: f64) {
    for (tick, label) in axis.ticks(TIME_TICKS) {
        let ty = y(*tick);
        let _ = write!(
            svg,
            "<line x1=\"{left}\" y1=\"{ty:.1}\" x2=\"{right:.1}\" y2=\"{ty:.1}\" stroke=\"#eaeef2\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"end\" fill=\"#57606a\">{label}</text>",
            left - 4.0,
            ty + 3.0
        );
    }
}

/// `7.6 s`, `46 min`, `2.8 h`: a bar's label, short enough for its bar.
fn compact_seconds(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// A bar chart of one scenario's worst value per month (and, for the RTO
/// with a projection, the worst projected value beside it), with the
/// target, on a logarithmic axis: a 7.6 s measurement, a 4-hour target and
/// a 6-hour projection are all readable on one chart, and the gap to the
/// dashed target line reads as a factor of headroom.
fn chart(what: &str, series: &Series, months: &[Month]) -> String {
    const W: f64 = 360.0;
    const H: f64 = 220.0;
    const LEFT: f64 = 46.0;
    const RIGHT: f64 = 10.0;
    const TOP: f64 = 44.0;
    const BOTTOM: f64 = 28.0;
    let plot_h = H - TOP - BOTTOM;
    let ticks: Vec<f64> = TIME_TICKS.iter().map(|(t, _)| *t).collect();
    let axis = LogAxis::over(
        series
            .values
            .values()
            .chain(series.projected.values())
            .copied()
            .chain(series.target),
        &ticks,
    );
    let y = |v: f64| TOP + plot_h - axis.fraction(v) * plot_h;
    let band = (W - LEFT - RIGHT) / months.len().max(1) as f64;
    let title = format!("{what}: {}", series.title);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>\
         <text x=\"12\" y=\"18\" font-size=\"13\" font-weight=\"600\">{t}</text>",
        t = esc(&title)
    );
    let target_text = series
        .target
        .map_or_else(|| "no target".to_owned(), |t| format!("target {}", seconds_text(t)));
    let _ = write!(
        svg,
        "<text x=\"12\" y=\"34\" font-size=\"11\" fill=\"#57606a\">{}</text>",
        esc(&target_text)
    );
    time_gridlines(&mut svg, &axis, y, LEFT, W - RIGHT);
    let base = TOP + plot_h;
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#8c959f\"/>",
        W - RIGHT
    );
    let missed = |value: f64| series.target.is_some_and(|t| value > t);
    let color = |value: f64| if missed(value) { "#cf222e" } else { "#1a7f37" };
    let paired = !series.projected.is_empty();
    for (i, month) in months.iter().enumerate() {
        let x = LEFT + band * i as f64;
        let cx = x + band / 2.0;
        let _ = write!(
            svg,
            "<text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#57606a\">{month}</text>",
            H - 10.0
        );
        let Some(&value) = series.values.get(month) else {
            let _ = write!(
                svg,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#8c959f\">no run</text>",
                base - 4.0
            );
            continue;
        };
        // One bar centred in its band, or measured and projected side by side.
        let width = if paired { band * 0.36 } else { band * 0.6 };
        let measured_x = if paired { cx - width - 1.0 } else { cx - width / 2.0 };
        let mut bar = |bx: f64, value: f64, projected: bool| {
            let top = y(value).min(base - 2.0);
            let (fill, label) = if projected {
                ("#ffffff", format!("{month}: projected {}", seconds_text(value)))
            } else {
                (color(value), format!("{month}: {}", seconds_text(value)))
            };
            let _ = write!(
                svg,
                "<rect class=\"{}\" x=\"{bx:.1}\" y=\"{top:.1}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"{fill}\" \
                 stroke=\"{}\" stroke-width=\"1.5\" rx=\"2\"><title>{}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\" fill=\"{}\" \
                 stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\">{}</text>",
                if projected { "projected" } else { "measured" },
                base - top,
                color(value),
                esc(&label),
                bx + width / 2.0,
                top - 3.0,
                color(value),
                esc(&compact_seconds(value))
            );
        };
        bar(measured_x, value, false);
        if let Some(&projected) = series.projected.get(month) {
            bar(cx + 1.0, projected, true);
        }
    }
    if let Some(target) = series.target {
        let ty = y(target);
        let _ = write!(
            svg,
            "<line class=\"target\" x1=\"{LEFT}\" y1=\"{ty:.1}\" x2=\"{:.1}\" y2=\"{ty:.1}\" stroke=\"#cf222e\" \
             stroke-dasharray=\"6 4\" stroke-width=\"1.5\"/>",
            W - RIGHT
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The projection: a table of every run of the month, and for each run
/// whose RTO scales, its projected RTO against database size.
fn html_projection(h: &mut String, report: &MonthlyReport) {
    let Some(size) = &report.projection_size else {
        return;
    };
    let _ = writeln!(
        h,
        "<section id=\"projection\"><h2>RTO projected to {}</h2><p class=\"facts\">{}</p>\
         <table><thead><tr><th>drill</th><th>scenario</th><th>RTO measured</th><th>RTO projected</th>\
         <th>target</th><th>verdict</th><th>data-moving phases (measured throughput)</th><th>target reached at</th>\
         </tr></thead><tbody>",
        esc(&size.label()),
        esc(&size.assumption())
    );
    let projections = report.projections();
    for (run, projection) in &projections {
        let r = &run.record;
        let row = ProjectionRow::of(projection.as_ref());
        let class = match projection {
            Ok(p) if p.within_target() => "ok",
            Ok(_) => "miss",
            Err(_) => "na",
        };
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"num\">{}</td><td class=\"num {class}\">{}</td>\
             <td class=\"num\">{}</td><td class=\"{class}\">{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            esc(&r.drill),
            esc(&r.scenario_title()),
            r.rto_seconds.map_or_else(|| "not measured".to_owned(), seconds_text),
            esc(&row.projected),
            seconds_text(r.rto_target_seconds),
            row.verdict,
            esc(&row.phases),
            esc(&row.break_even),
        );
    }
    h.push_str("</tbody></table><div class=\"charts\">");
    for (run, projection) in &projections {
        if let Ok(p) = projection
            && p.measured_size.is_some()
        {
            h.push_str(&size_chart(&run.record, p));
        }
    }
    h.push_str("</div></section>\n");
}

/// Gridlines of a logarithmic size axis, in bytes.
const SIZE_TICKS: &[(f64, &str)] = &[
    (1e3, "1 kB"),
    (1e4, "10 kB"),
    (1e5, "100 kB"),
    (1e6, "1 MB"),
    (1e7, "10 MB"),
    (1e8, "100 MB"),
    (1e9, "1 GB"),
    (1e10, "10 GB"),
    (1e11, "100 GB"),
    (1e12, "1 TB"),
    (1e13, "10 TB"),
    (1e14, "100 TB"),
    (1e15, "1 PB"),
];

/// One run's projected RTO against database size, from the size it was
/// measured at to twice the projection's, both axes logarithmic, with the
/// target (dashed), the measurement and the projection marked, and where
/// the curve crosses the target.
fn size_chart(record: &HistoryRecord, p: &Projection) -> String {
    const W: f64 = 360.0;
    const H: f64 = 256.0;
    const LEFT: f64 = 46.0;
    const RIGHT: f64 = 14.0;
    const TOP: f64 = 62.0;
    const BOTTOM: f64 = 30.0;
    let measured_size = p.measured_size.unwrap_or(1) as f64;
    let projected_size = p.size.bytes as f64;
    let (from, to) = (
        measured_size.min(projected_size),
        measured_size.max(projected_size) * 2.0,
    );
    const POINTS: usize = 48;
    let sizes: Vec<f64> = (0..=POINTS)
        .map(|i| from * (to / from).powf(i as f64 / POINTS as f64))
        .collect();
    let size_ticks: Vec<f64> = SIZE_TICKS.iter().map(|(t, _)| *t).collect();
    let time_ticks: Vec<f64> = TIME_TICKS.iter().map(|(t, _)| *t).collect();
    let x_axis = LogAxis::over([from, to].into_iter(), &size_ticks);
    let y_axis = LogAxis::over(
        sizes.iter().map(|s| p.rto_at(*s)).chain([p.target, p.measured_rto]),
        &time_ticks,
    );
    let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |bytes: f64| LEFT + x_axis.fraction(bytes) * plot_w;
    let y = |seconds: f64| TOP + plot_h - y_axis.fraction(seconds) * plot_h;
    let title = format!("{}: projected RTO by database size", record.drill);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart size-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>\
         <text x=\"12\" y=\"18\" font-size=\"13\" font-weight=\"600\">{drill}</text>",
        t = esc(&title),
        drill = esc(&record.drill)
    );
    let reached = match p.break_even_bytes() {
        None => "never reaches the target".to_owned(),
        Some(bytes) if bytes <= 0.0 => "over the target at any size".to_owned(),
        Some(bytes) => format!("reaches the target at {}", format_bytes(bytes)),
    };
    let _ = write!(
        svg,
        "<text x=\"12\" y=\"32\" font-size=\"11\" fill=\"#57606a\">projected RTO by database size; target {}</text>\
         <text x=\"12\" y=\"46\" font-size=\"11\" fill=\"#57606a\">{}</text>",
        esc(&seconds_text(p.target)),
        esc(&reached)
    );
    time_gridlines(&mut svg, &y_axis, y, LEFT, W - RIGHT);
    let base = TOP + plot_h;
    for (tick, label) in x_axis.ticks(SIZE_TICKS) {
        let tx = x(*tick);
        let _ = write!(
            svg,
            "<line x1=\"{tx:.1}\" y1=\"{TOP}\" x2=\"{tx:.1}\" y2=\"{base:.1}\" stroke=\"#eaeef2\"/>\
             <text x=\"{tx:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\" fill=\"#57606a\">{label}</text>",
            base + 12.0
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{base:.1}\" x2=\"{:.1}\" y2=\"{base:.1}\" stroke=\"#8c959f\"/>",
        W - RIGHT
    );
    let ty = y(p.target);
    let _ = write!(
        svg,
        "<line class=\"target\" x1=\"{LEFT}\" y1=\"{ty:.1}\" x2=\"{:.1}\" y2=\"{ty:.1}\" stroke=\"#cf222e\" \
         stroke-dasharray=\"6 4\" stroke-width=\"1.5\"/>",
        W - RIGHT
    );
    let path: Vec<String> = sizes
        .iter()
        .map(|s| format!("{:.1},{:.1}", x(*s), y(p.rto_at(*s))))
        .collect();
    let _ = write!(
        svg,
        "<polyline class=\"projection\" points=\"{}\" fill=\"none\" stroke=\"#0969da\" stroke-width=\"2\"/>",
        path.join(" ")
    );
    let color = if p.within_target() { "#1a7f37" } else { "#cf222e" };
    for (bytes, seconds, label, fill) in [
        (
            measured_size,
            p.measured_rto,
            format!(
                "measured {} at {}",
                seconds_text(p.measured_rto),
                format_bytes(measured_size)
            ),
            "#0969da",
        ),
        (
            projected_size,
            p.projected_rto,
            format!("projected {} at {}", seconds_text(p.projected_rto), p.size.label()),
            color,
        ),
    ] {
        let (px, py) = (x(bytes), y(seconds));
        let anchor = if px > LEFT + plot_w / 2.0 { "end" } else { "start" };
        let dx = if anchor == "end" { -6.0 } else { 6.0 };
        let _ = write!(
            svg,
            "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"{fill}\"><title>{t}</title></circle>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"{anchor}\" fill=\"{fill}\" \
             stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\">{t}</text>",
            px + dx,
            py - 6.0,
            t = esc(&label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn html_run(h: &mut String, index: usize, r: &HistoryRecord) {
    let verdict_class = if r.passed { "ok" } else { "miss" };
    let _ = writeln!(
        h,
        "<section class=\"run\" id=\"run-{index}\"><h2><code>{}</code> — {}</h2>\
         <p class=\"facts\">{} · started {} · verdict <span class=\"{verdict_class}\">{}</span> · \
         backend {} · dataset {} · drillbook {} · PostgreSQL {}</p>",
        esc(&r.drill),
        esc(&r.scenario_title()),
        esc(&r.action),
        timestamp(r.started_at),
        r.verdict_label(),
        esc(&r.backend),
        esc(r.dataset_size.as_deref().unwrap_or("not recorded")),
        esc(&r.drillbook_version),
        esc(r.postgres_version.as_deref().unwrap_or("not recorded")),
    );
    let _ = writeln!(
        h,
        "<p>RTO <b class=\"{}\">{}</b> · RPO <b class=\"{}\">{}</b></p>",
        if r.rto_missed() { "miss" } else { "ok" },
        esc(&measured_vs_target(r.rto_seconds, Some(r.rto_target_seconds))),
        if r.rpo_missed() { "miss" } else { "ok" },
        esc(&measured_vs_target(r.rpo_seconds, r.rpo_target_seconds)),
    );
    if !r.failures.is_empty() {
        h.push_str("<ul class=\"failures\">");
        for failure in &r.failures {
            let _ = write!(h, "<li class=\"miss\">{}</li>", esc(failure));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("<h3>Incident timeline</h3>");
    if r.timeline.is_empty() {
        h.push_str("<p class=\"na\">No timeline was recorded (older history format).</p>\n");
    } else {
        h.push_str("<table class=\"timeline\"><thead><tr><th>time (UTC)</th><th>elapsed</th><th>event</th></tr></thead><tbody>");
        for e in &r.timeline {
            let class = if e.message.starts_with("incident:") || e.message == "verified healthy" {
                " class=\"ok\""
            } else if e.message.contains("FAILED") || e.message.contains(" failed") {
                " class=\"miss\""
            } else {
                ""
            };
            let _ = write!(
                h,
                "<tr{class}><td>{}</td><td>+{}</td><td>{}</td></tr>",
                timestamp(e.at),
                seconds_text(e.elapsed_seconds),
                esc(&e.message)
            );
        }
        h.push_str("</tbody></table>\n");
    }
    let (section_7, rows) = checklist(r);
    h.push_str(if section_7 {
        "<h3>Post-recovery checklist (playbook section 7)</h3>"
    } else {
        "<h3>Post-recovery checks</h3>"
    });
    if rows.is_empty() {
        h.push_str("<p class=\"na\">No checks were recorded.</p>\n");
    } else {
        h.push_str(
            "<table class=\"checklist\"><thead><tr><th>item</th><th>status</th><th>detail</th></tr></thead><tbody>",
        );
        for row in rows {
            let class = match row.status {
                "passed" => "ok",
                "failed" => "miss",
                _ => "na",
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"{class}\">{}</td><td>{}</td></tr>",
                esc(&row.title),
                row.status,
                esc(&row.detail)
            );
        }
        h.push_str("</tbody></table>\n");
    }
    if !r.phases.is_empty() {
        h.push_str(
            "<h3>Phases</h3><table><thead><tr><th>phase</th><th>duration</th><th>outcome</th>\
             <th>data moved (throughput)</th></tr></thead><tbody>",
        );
        for p in &r.phases {
            let (class, outcome) = match &p.error {
                None => ("ok", "passed".to_owned()),
                Some(error) => ("miss", format!("failed: {error}")),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"{class}\">{}</td><td>{}</td></tr>",
                esc(&p.name),
                seconds_text(p.duration_seconds),
                esc(&outcome),
                esc(&moved_text(p))
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</section>\n");
}

/// `86.4 MB (45.2 MB/s); 12 MB of WAL (30 MB/s of WAL)`, or empty.
fn moved_text(phase: &super::history::RecordPhase) -> String {
    use crate::drill::moved::{format_amount, format_rate};
    let duration = std::time::Duration::from_secs_f64(phase.duration_seconds.max(0.0));
    phase
        .moved
        .iter()
        .map(|m| {
            let amount = format_amount(m.quantity, m.amount as f64);
            match m.seconds(duration) {
                seconds if seconds > 0.0 => {
                    format!("{amount} ({})", format_rate(m.quantity, m.amount as f64 / seconds))
                }
                _ => amount,
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_everything_it_is_given() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
