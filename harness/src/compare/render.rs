//! A comparison as people and programs read it: the console table (regressions named first, a summary line with
//! the exit status), the JSON document, and one self-contained HTML page.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::diff::{Change, Comparison, RunRow, StepRow};
use super::record::StepSummary;

fn outcome(s: Option<&StepSummary>) -> String {
    match s {
        None => "-".into(),
        Some(s) => s.result.word().into(),
    }
}

fn split(s: Option<&StepSummary>) -> String {
    s.and_then(|s| s.check.as_ref())
        .map(|c| c.split())
        .unwrap_or_default()
}

fn p_values(r: &StepRow) -> String {
    let p = |s: Option<&StepSummary>| {
        s.and_then(|s| s.check.as_ref())
            .and_then(|c| c.p_value)
            .map_or("-".to_string(), |p| format!("{p:.3}"))
    };
    match (&r.baseline, &r.candidate) {
        (None, None) => String::new(),
        _ if r.baseline.as_ref().and_then(|s| s.check.as_ref()).is_none()
            && r.candidate.as_ref().and_then(|s| s.check.as_ref()).is_none() =>
        {
            String::new()
        }
        _ => format!("{} → {}", p(r.baseline.as_ref()), p(r.candidate.as_ref())),
    }
}

fn convergence(r: &StepRow) -> String {
    match r.convergence {
        Some((b, c)) => format!("{b:.1} s → {c:.1} s ({:+.1} s)", c - b),
        None => String::new(),
    }
}

/// The rows a table shows: every check, and any other step whose result changed.
fn shown(run: &RunRow) -> impl Iterator<Item = &StepRow> {
    run.steps.iter().filter(|s| {
        let is_check = s
            .baseline
            .as_ref()
            .or(s.candidate.as_ref())
            .is_some_and(|x| x.check.is_some() || x.class == crate::plan::StepClass::Check);
        is_check || !matches!(s.change, Change::Same | Change::OneSided)
    })
}

fn message(s: Option<&StepSummary>) -> Option<&str> {
    match s.map(|s| &s.result) {
        Some(super::record::StepResult::Failed { message, .. }) => Some(message),
        Some(super::record::StepResult::Skipped { reason }) => Some(reason),
        _ => None,
    }
}

/// The summary line: counts per change and the exit status.
pub fn summary(c: &Comparison) -> String {
    let runs_missing = c.runs.iter().filter(|r| r.candidate.is_none()).count();
    format!(
        "{} regression(s), {} missing check(s), {} run(s) missing on the candidate, {} not judged, {} slowdown(s), {} fixed → exit {}",
        c.count(Change::Regression),
        c.count(Change::Missing),
        runs_missing,
        c.count(Change::NotJudged),
        c.count(Change::Slowdown),
        c.count(Change::Fixed),
        c.status.code()
    )
}

/// The console report.
pub fn console(c: &Comparison) -> String {
    let mut out = format!(
        "== COMPARISON: baseline {} ({}) → candidate {} ({}); slowdown band {}\n",
        c.baseline.dir.display(),
        c.baseline.builds_text(),
        c.candidate.dir.display(),
        c.candidate.builds_text(),
        c.band.describe()
    );
    for change in [Change::Regression, Change::Missing, Change::NotJudged] {
        for (key, s) in c.rows_of(change) {
            out.push_str(&format!("{} {key} · {}", change.word(), s.id));
            if let Some(m) = message(s.candidate.as_ref()) {
                out.push_str(&format!(": {m}"));
            }
            out.push('\n');
        }
    }
    for r in c.runs.iter().filter(|r| r.candidate.is_none()) {
        out.push_str(&format!(
            "MISSING {}: the candidate has no record of this run\n",
            r.key
        ));
    }
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::ASCII_MARKDOWN);
    table.set_header([
        "run",
        "step",
        "baseline",
        "candidate",
        "change",
        "candidate's answers",
        "p-value",
        "convergence",
    ]);
    for r in &c.runs {
        let b = r.baseline.as_ref().map_or("-".into(), |s| s.istio.clone());
        let k = r.candidate.as_ref().map_or("-".into(), |s| s.istio.clone());
        table.add_row([
            r.key.clone(),
            "(run)".into(),
            b,
            k,
            r.change.word().into(),
            String::new(),
            String::new(),
            String::new(),
        ]);
        for s in shown(r) {
            table.add_row([
                String::new(),
                s.id.clone(),
                outcome(s.baseline.as_ref()),
                outcome(s.candidate.as_ref()),
                s.change.word().into(),
                split(s.candidate.as_ref()),
                p_values(s),
                convergence(s),
            ]);
        }
    }
    out.push_str(&table.to_string());
    out.push('\n');
    for r in &c.runs {
        for n in &r.notes {
            out.push_str(&format!("note: {}: {n}\n", r.key));
        }
    }
    out.push_str(&format!("== {}\n", summary(c)));
    out
}

/// The JSON document (`meshconf-compare/v1`).
pub fn json(c: &Comparison) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(c)
}

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1rem;color:#222}
header{border-left:8px solid #2a7;padding:.2rem 1rem;margin-bottom:1rem}header.bad{border-color:#c33}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;vertical-align:top}
tr.run td{background:#f4f4f4;font-weight:600}
.regression,.missing{color:#c33;font-weight:700}.not-judged{color:#e80}.slowdown{color:#a60}.fixed{color:#2a7}
ul.first li{font-size:1.1rem}
"#;

fn class(change: Change) -> &'static str {
    match change {
        Change::Regression => "regression",
        Change::Missing => "missing",
        Change::NotJudged => "not-judged",
        Change::Slowdown => "slowdown",
        Change::StillFailing => "still-failing",
        Change::Fixed => "fixed",
        Change::OneSided => "one-sided",
        Change::Same => "same",
    }
}

/// The HTML page (self-contained, no fetches).
pub fn html(c: &Comparison) -> String {
    let first: Vec<(&str, &StepRow)> = [Change::Regression, Change::Missing, Change::NotJudged]
        .into_iter()
        .flat_map(|ch| c.rows_of(ch))
        .collect();
    let page: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "meshconf compare: " (c.baseline.builds_text()) " → " (c.candidate.builds_text()) }
                style { (PreEscaped(STYLE)) }
            }
            body data-status=(c.status.code()) {
                header class=(if c.status.code() == 0 { "ok" } else { "bad" }) {
                    h1 { "Baseline " (c.baseline.builds_text()) " → candidate " (c.candidate.builds_text()) }
                    p { (summary(c)) }
                    p { "Baseline: " code { (c.baseline.dir.display()) } " · candidate: " code { (c.candidate.dir.display()) }
                        " · slowdown band " (c.band.describe()) }
                }
                @if !first.is_empty() {
                    h2 { "First" }
                    ul.first {
                        @for (key, s) in &first {
                            li class=(class(s.change)) data-run=(key) data-step=(s.id) {
                                (s.change.word()) " " (key) " · " (s.id)
                                @if let Some(m) = message(s.candidate.as_ref()) { ": " (m) }
                            }
                        }
                    }
                }
                h2 { "Every run" }
                table {
                    tr { th { "run / step" } th { "baseline" } th { "candidate" } th { "change" }
                         th { "candidate's answers" } th { "p-value" } th { "convergence" } }
                    @for r in &c.runs {
                        tr.run data-run=(r.key) data-change=(class(r.change)) {
                            td { (r.key) }
                            td { (r.baseline.as_ref().map_or("-".into(), |s| format!("{} ({})", s.istio,
                                s.status.map_or("unfinished".into(), |x| format!("exit {}", x.code()))))) }
                            td { (r.candidate.as_ref().map_or("-".into(), |s| format!("{} ({})", s.istio,
                                s.status.map_or("unfinished".into(), |x| format!("exit {}", x.code()))))) }
                            td class=(class(r.change)) { (r.change.word()) }
                            td colspan="3" { @for n in &r.notes { div { (n) } } }
                        }
                        @for s in shown(r) {
                            tr data-step=(s.id) data-change=(class(s.change)) {
                                td { (s.id) }
                                td { (outcome(s.baseline.as_ref())) }
                                td { (outcome(s.candidate.as_ref())) }
                                td class=(class(s.change)) { (s.change.word()) }
                                td { (split(s.candidate.as_ref())) }
                                td { (p_values(s)) }
                                td { (convergence(s)) }
                            }
                        }
                    }
                }
            }
        }
    };
    page.into_string()
}

#[cfg(test)]
mod tests {
    use super::super::diff::tests::{fail, run, step};
    use super::super::diff::{NoiseBand, compare};
    use super::super::record::StepResult;
    use super::*;
    use crate::exit::ExitStatus;
    use crate::report::FailureKind;

    fn sample() -> Comparison {
        let ok = |istio: &str, conv: f64| {
            run(
                "multi-primary",
                istio,
                ExitStatus::Passed,
                vec![
                    step("install-istio/cluster1", StepResult::Passed, None),
                    step("check-traffic/from-cluster1", StepResult::Passed, Some(4.0)),
                    step("check-traffic/from-cluster2", StepResult::Passed, Some(conv)),
                ],
            )
        };
        let mut broken = run(
            "primary-remote",
            "1.32-dev",
            ExitStatus::ConformanceFailure,
            vec![
                step("install-istio/cluster1", StepResult::Passed, None),
                step("check-traffic/from-cluster1", StepResult::Passed, Some(4.0)),
                step(
                    "check-traffic/from-cluster2",
                    fail(FailureKind::Conformance),
                    Some(4.0),
                ),
            ],
        );
        if let Some(c) = broken.steps[2].check.as_mut() {
            c.counts = [("v1@cluster1".to_string(), 100)].into();
        }
        let mut base_pr = ok("1.31-dev", 4.0);
        base_pr.key = "primary-remote".into();
        base_pr.scenario = "primary-remote".into();
        let b = [ok("1.31-dev", 4.0), base_pr];
        let k = [ok("1.32-dev", 14.0), broken];
        compare(
            "reports/1.31-dev".into(),
            &b.into_iter().map(|r| (r.key.clone(), r)).collect(),
            "reports/1.32-dev".into(),
            &k.into_iter().map(|r| (r.key.clone(), r)).collect(),
            NoiseBand::default(),
        )
    }

    #[test]
    fn the_console_names_the_regression_first_then_the_table() {
        let text = console(&sample());
        insta::assert_snapshot!(text);
        let first_line_after_header = text.lines().nth(1).unwrap_or_default();
        assert!(
            first_line_after_header.starts_with("REGRESSION primary-remote · check-traffic/from-cluster2"),
            "{text}"
        );
    }

    #[test]
    fn the_page_lists_the_regression_first_and_carries_the_exit_status() {
        let page = html(&sample());
        assert!(page.contains(r#"data-status="1""#), "{page}");
        let first = page.find("<ul class=\"first\">").expect("the first list");
        let table = page.find("<table>").expect("the table");
        let reg = page
            .find(r#"data-run="primary-remote" data-step="check-traffic/from-cluster2""#)
            .expect("the regression's item");
        assert!(
            first < reg && reg < table,
            "the regression is listed before the table"
        );
        assert!(page.contains("1.31-dev") && page.contains("1.32-dev"));
    }

    #[test]
    fn the_json_document_round_trips_its_verdict() {
        let text = json(&sample()).expect("serializes");
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["format"], "meshconf-compare/v1");
        assert_eq!(v["status"], "conformance-failure");
        assert_eq!(v["runs"][0]["key"], "primary-remote");
        assert_eq!(v["runs"][0]["change"], "regression");
    }
}
