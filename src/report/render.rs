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
use crate::checklist::Item;
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
    target: Option<f64>,
}

fn trend(report: &MonthlyReport, pick: impl Fn(&HistoryRecord) -> (Option<f64>, Option<f64>)) -> Vec<Series> {
    let mut by_scenario: BTreeMap<String, Series> = BTreeMap::new();
    for record in &report.trend {
        let (value, target) = pick(record);
        let series = by_scenario.entry(record.scenario_title()).or_insert_with(|| Series {
            title: record.scenario_title(),
            values: BTreeMap::new(),
            target: None,
        });
        // The newest run's target is the one the chart draws.
        if target.is_some() {
            series.target = target;
        }
        if let Some(value) = value {
            let month = Month::of(record.started_at);
            let worst = series.values.entry(month).or_insert(value);
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
    md_trend(&mut md, report, "RTO", rto_of);
    md_trend(&mut md, report, "RPO", rpo_of);
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

fn md_trend(
    md: &mut String,
    report: &MonthlyReport,
    what: &str,
    pick: impl Fn(&HistoryRecord) -> (Option<f64>, Option<f64>),
) {
    let series = trend(report, pick);
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
            .map(|m| s.values.get(m).map_or_else(|| "–".to_owned(), |&v| seconds_text(v)))
            .collect();
        let target = s.target.map_or_else(|| "none".to_owned(), seconds_text);
        let _ = writeln!(md, "| {} | {target} | {} |", md_cell(&s.title), cells.join(" | "));
    }
    md.push('\n');
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
    let rto = trend(report, rto_of);
    let rpo = trend(report, rpo_of);
    if rto.is_empty() && rpo.is_empty() {
        return;
    }
    let first = report.trend_months.first().copied().unwrap_or(report.month);
    let _ = writeln!(
        h,
        "<section id=\"trends\"><h2>RTO and RPO per scenario, {first} to {}</h2>\
         <p class=\"facts\">Worst run of each month against the target (dashed line); red bars missed it.</p>\
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

/// A bar chart of one scenario's worst value per month, with the target.
fn chart(what: &str, series: &Series, months: &[Month]) -> String {
    const W: f64 = 340.0;
    const H: f64 = 200.0;
    const LEFT: f64 = 12.0;
    const TOP: f64 = 44.0;
    const BOTTOM: f64 = 28.0;
    let plot_h = H - TOP - BOTTOM;
    let max_value = series.values.values().copied().fold(0.0_f64, f64::max);
    let ymax = (max_value.max(series.target.unwrap_or(0.0)) * 1.15).max(1.0);
    let y = |v: f64| TOP + plot_h - (v / ymax) * plot_h;
    let band = (W - 2.0 * LEFT) / months.len().max(1) as f64;
    let title = format!("{what}: {}", series.title);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>\
         <text x=\"{LEFT}\" y=\"18\" font-size=\"13\" font-weight=\"600\">{t}</text>",
        t = esc(&title)
    );
    let target_text = series
        .target
        .map_or_else(|| "no target".to_owned(), |t| format!("target {}", seconds_text(t)));
    let _ = write!(
        svg,
        "<text x=\"{LEFT}\" y=\"34\" font-size=\"11\" fill=\"#57606a\">{}</text>",
        esc(&target_text)
    );
    let base = TOP + plot_h;
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#8c959f\"/>",
        W - LEFT
    );
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
        let missed = series.target.is_some_and(|t| value > t);
        let color = if missed { "#cf222e" } else { "#1a7f37" };
        let top = y(value).min(base - 2.0);
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\" rx=\"2\">\
             <title>{month}: {}</title></rect>",
            x + band * 0.2,
            band * 0.6,
            base - top,
            esc(&seconds_text(value))
        );
        let _ = write!(
            svg,
            "<text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\" fill=\"{color}\">{}</text>",
            top - 4.0,
            esc(&seconds_text(value))
        );
    }
    if let Some(target) = series.target {
        let ty = y(target);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{ty:.1}\" x2=\"{:.1}\" y2=\"{ty:.1}\" stroke=\"#cf222e\" \
             stroke-dasharray=\"6 4\" stroke-width=\"1.5\"/>",
            W - LEFT
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
            "<h3>Phases</h3><table><thead><tr><th>phase</th><th>duration</th><th>outcome</th></tr></thead><tbody>",
        );
        for p in &r.phases {
            let (class, outcome) = match &p.error {
                None => ("ok", "passed".to_owned()),
                Some(error) => ("miss", format!("failed: {error}")),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"{class}\">{}</td></tr>",
                esc(&p.name),
                seconds_text(p.duration_seconds),
                esc(&outcome)
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_everything_it_is_given() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
