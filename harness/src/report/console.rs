//! Console reporter: a progress bar over the plan's steps on a terminal, plain lines otherwise, and a summary.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::events::{Event, FailureKind, Outcome};
use super::{ReportError, Reporter};
use crate::plan::DataPlane;
use crate::verify::CheckRecord;

/// Prints progress and a summary to stderr.
pub struct ConsoleReporter {
    bar: ProgressBar,
    failures: Vec<String>,
    passed: usize,
    failed: usize,
    skipped: usize,
    rehearsal: bool,
    diagnosis: Option<String>,
    /// The latest record of each traffic check, by step id.
    checks: std::collections::BTreeMap<String, CheckRecord>,
}

impl Default for ConsoleReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleReporter {
    /// A console reporter; the bar is hidden when stderr is not a terminal (CI), lines are printed instead.
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(0),
            if std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
        {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Self {
            bar,
            failures: Vec::new(),
            passed: 0,
            failed: 0,
            skipped: 0,
            rehearsal: false,
            diagnosis: None,
            checks: std::collections::BTreeMap::new(),
        }
    }

    fn line(&self, s: String) {
        if self.bar.is_hidden() {
            eprintln!("{s}");
        } else {
            self.bar.println(s);
        }
    }
}

/// `v1@cluster1 ×46, v2@cluster2 ×54; p=0.4237; answered by pod@cluster ×N, …` for a traffic check.
fn traffic_detail(r: &CheckRecord) -> Option<String> {
    let join = |m: &std::collections::BTreeMap<crate::verify::At, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let v = &r.verdict;
    if v.counts.is_empty() {
        return None;
    }
    let pv = v.p_value.map(|p| format!("; p={p:.4}")).unwrap_or_default();
    Some(format!(
        "{}{pv}; answered by {}",
        join(&v.counts),
        join(&v.instances)
    ))
}

impl Reporter for ConsoleReporter {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::RunStarted {
                scenario,
                provider,
                dataplane,
                variant,
                real,
                computed,
                notes,
                steps,
                ..
            } => {
                self.bar.set_length(steps.len() as u64);
                self.rehearsal = *dataplane == DataPlane::Computed;
                let banner = if self.rehearsal {
                    "REHEARSAL"
                } else {
                    "CONFORMANCE RUN"
                };
                self.line(format!(
                    "== {banner}: {scenario} on provider {}",
                    provider.as_str()
                ));
                self.line(format!("   {variant}"));
                if self.rehearsal {
                    self.line(format!("   real: {}", real.join(", ")));
                    self.line(format!(
                        "   computed (not a real data plane): {}",
                        computed.join(", ")
                    ));
                }
                for n in notes {
                    self.line(format!("   note: {n}"));
                }
            }
            Event::StepStarted { id, .. } => self.bar.set_message(id.to_string()),
            Event::CheckFinished { id, record } => {
                self.checks.insert(id.0.clone(), record.clone());
            }
            Event::StepLog { id, message } => tracing::info!(step = %id, "{message}"),
            Event::ActionFinished { id, record } => {
                for l in record.lines.iter().filter(|l| !l.starts_with('#')) {
                    tracing::debug!(step = %id, "$ {l}");
                }
            }
            Event::StepFinished {
                id,
                outcome,
                duration,
                attempts,
                ..
            } => {
                self.bar.inc(1);
                let retries = if attempts.is_empty() {
                    String::new()
                } else {
                    format!(": passed after {} failed attempt(s)", attempts.len())
                };
                match outcome {
                    Outcome::Passed => {
                        self.passed += 1;
                        // nextest's word for a pass that needed retries.
                        let tag = if attempts.is_empty() { "PASS " } else { "FLAKY" };
                        self.line(format!("  {tag} {id} ({:.1}s){retries}", duration.as_secs_f64()));
                        for (n, a) in attempts.iter().enumerate() {
                            self.line(format!("        attempt {} failed: {}", n + 1, a.message));
                        }
                        if let Some(d) = self.checks.get(&id.0).and_then(traffic_detail) {
                            self.line(format!("        {d}"));
                        }
                    }
                    Outcome::Skipped { reason } => {
                        self.skipped += 1;
                        self.line(format!("  SKIP  {id}: {reason}"));
                    }
                    Outcome::Failed {
                        kind,
                        message,
                        command,
                        output_tail,
                    } => {
                        self.failed += 1;
                        let tag = match kind {
                            FailureKind::Conformance => "FAIL ",
                            FailureKind::Infrastructure => "ERROR",
                        };
                        self.line(format!(
                            "  {tag} {id} ({:.1}s): {message}",
                            duration.as_secs_f64()
                        ));
                        if let Some(c) = command {
                            self.line(format!("        command: {c}"));
                        }
                        if let Some(t) = output_tail {
                            for l in t.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev() {
                                self.line(format!("        | {l}"));
                            }
                        }
                        self.failures.push(format!("{id}: {message}"));
                    }
                }
            }
            Event::Diagnostics {
                path,
                files,
                bytes,
                budget,
                diagnosis,
                findings,
                ..
            } => {
                match diagnosis {
                    Some(d) => self.line(format!("  DIAGNOSIS {d}")),
                    None => self.line("  DIAGNOSIS none: no rule matched the collected facts".to_string()),
                }
                for f in findings.iter().skip(1) {
                    self.line(format!("        also: {f}"));
                }
                self.line(format!(
                    "        diagnostics: {path} ({} files, {} of {} KiB)",
                    files.len(),
                    bytes.div_ceil(1024),
                    budget / 1024
                ));
                self.diagnosis.clone_from(diagnosis);
            }
            Event::CleanupFinished {
                complete,
                message,
                properties,
            } => {
                self.line(format!(
                    "  cleanup {}: {message}",
                    if *complete { "complete" } else { "INCOMPLETE" }
                ));
                for (k, v) in properties {
                    self.line(format!("  {k}: {v}"));
                }
            }
            Event::RunFinished { status, duration } => {
                self.bar.finish_and_clear();
                let kind = if self.rehearsal { "rehearsal" } else { "run" };
                self.line(format!(
                    "== {kind} finished in {:.1}s: {} passed, {} failed, {} skipped → {status:?} (exit {})",
                    duration.as_secs_f64(),
                    self.passed,
                    self.failed,
                    self.skipped,
                    status.code()
                ));
                for f in &self.failures {
                    self.line(format!("   - {f}"));
                }
                if let Some(d) = &self.diagnosis {
                    self.line(format!("   diagnosis: {d}"));
                }
            }
        }
    }

    fn finish(&mut self) -> Result<(), ReportError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::traffic_detail;
    use crate::scenario::ClusterName;
    use crate::verify::{At, CheckRecord, Convergence, SourceVerdict};
    use std::collections::BTreeMap;

    fn record(counts: &[(&str, u64)], instances: &[(&str, u64)]) -> CheckRecord {
        let m = |v: &[(&str, u64)]| {
            v.iter()
                .map(|(k, n)| {
                    let (what, c) = k.split_once('@').expect("what@cluster");
                    (At::new(what, Some(&ClusterName::new(c))), *n)
                })
                .collect()
        };
        CheckRecord {
            verdict: SourceVerdict {
                from: ClusterName::new("cluster1"),
                requests: 100,
                counts: m(counts),
                instances: m(instances),
                errors: BTreeMap::new(),
                p_value: Some(0.42371),
                problems: Vec::new(),
            },
            convergence: Convergence {
                converged: true,
                attempts: 1,
                seconds: 0.4,
                first_cross_cluster_seconds: None,
            },
        }
    }

    #[test]
    fn a_traffic_check_line_shows_counts_p_value_and_the_pods_that_answered() {
        let r = record(
            &[("v1@cluster1", 46), ("v2@cluster2", 54)],
            &[("helloworld-v1-a@cluster1", 46), ("helloworld-v2-b@cluster2", 54)],
        );
        assert_eq!(
            traffic_detail(&r).as_deref(),
            Some(
                "v1@cluster1 ×46, v2@cluster2 ×54; p=0.4237; answered by helloworld-v1-a@cluster1 ×46, \
                 helloworld-v2-b@cluster2 ×54"
            )
        );
        assert_eq!(
            traffic_detail(&record(&[], &[])),
            None,
            "no answers, no detail line"
        );
    }
}
