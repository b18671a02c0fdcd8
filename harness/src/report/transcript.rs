//! The transcript `<name>.sh`: the actions a run executed, in plan order, each rendered exactly as `meshconf plan`
//! renders it with the run's values filled in, so a person can diff plan and transcript or replay it by hand.
//! Built from `action-finished` events only: an action that did not run does not appear.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::events::{ActionRecord, Event};
use super::{ReportError, Reporter};
use crate::plan::StepId;

/// Writes `<report-dir>/<name>.sh` on `finish`.
pub struct TranscriptReporter {
    path: PathBuf,
    head: Vec<String>,
    preamble: Vec<String>,
    steps: Vec<(StepId, String)>,
    ran: BTreeMap<StepId, BTreeMap<usize, (ActionRecord, u32)>>,
    outcome: BTreeMap<StepId, String>,
    tail: Vec<String>,
}

impl TranscriptReporter {
    /// A reporter writing to `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            head: Vec::new(),
            preamble: Vec::new(),
            steps: Vec::new(),
            ran: BTreeMap::new(),
            outcome: BTreeMap::new(),
            tail: Vec::new(),
        }
    }

    /// The transcript as text.
    pub fn render(&self) -> String {
        let mut o = String::new();
        for l in &self.head {
            let _ = writeln!(o, "{l}");
        }
        o.push('\n');
        for l in &self.preamble {
            let _ = writeln!(o, "{l}");
        }
        for (id, title) in &self.steps {
            let Some(actions) = self.ran.get(id) else {
                if let Some(why) = self.outcome.get(id) {
                    let _ = writeln!(o, "\n# [{id}] {title}\n# {why}");
                }
                continue;
            };
            let _ = writeln!(o, "\n# [{id}] {title}");
            for (record, runs) in actions.values() {
                if *runs > 1 {
                    let _ = writeln!(
                        o,
                        "# (ran {runs} times: the step was retried; the last run is shown)"
                    );
                }
                for l in &record.lines {
                    let _ = writeln!(o, "{l}");
                }
                for (p, v) in &record.bound {
                    let _ = writeln!(o, "# bound: {}={v}", p.0);
                }
                if let Some(e) = &record.error {
                    let first = e.lines().next().unwrap_or_default();
                    let _ = writeln!(o, "# failed: {first}");
                }
            }
            if let Some(why) = self.outcome.get(id) {
                let _ = writeln!(o, "# {why}");
            }
        }
        for l in &self.tail {
            let _ = writeln!(o, "{l}");
        }
        o
    }
}

impl Reporter for TranscriptReporter {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::RunStarted {
                scenario,
                guide,
                provider,
                steps,
                preamble,
                ..
            } => {
                self.head = vec![
                    format!("# meshconf transcript: {scenario} (guide: \"{guide}\"), provider {}", provider.as_str()),
                    "# What this run executed, in plan order, as `meshconf plan` renders it; `# bound:` lines give \
                     the values placeholders took (filled into the lines of their step)."
                        .into(),
                ];
                self.preamble.clone_from(preamble);
                self.steps.clone_from(steps);
            }
            Event::ActionFinished { id, record } => {
                let slot = self
                    .ran
                    .entry(id.clone())
                    .or_default()
                    .entry(record.index)
                    .or_insert_with(|| (record.clone(), 0));
                slot.0 = record.clone();
                slot.1 += 1;
            }
            Event::StepFinished { id, outcome, .. } => {
                use super::events::Outcome;
                match outcome {
                    Outcome::Passed => {}
                    Outcome::Failed { kind, message, .. } => {
                        let first = message.lines().next().unwrap_or_default();
                        self.outcome
                            .insert(id.clone(), format!("step failed ({kind:?}): {first}"));
                    }
                    Outcome::Skipped { reason } => {
                        self.outcome.insert(id.clone(), format!("skipped: {reason}"));
                    }
                }
            }
            Event::CleanupFinished {
                complete, message, ..
            } => {
                self.tail.push(format!(
                    "\n# ── cleanup ({}): {message}",
                    if *complete { "complete" } else { "incomplete" }
                ));
            }
            Event::RunFinished { status, duration } => {
                self.tail.push(format!(
                    "# exit {} ({status:?}) after {:.1}s",
                    status.code(),
                    duration.as_secs_f64()
                ));
            }
            _ => {}
        }
    }

    fn finish(&mut self) -> Result<(), ReportError> {
        super::write_file(&self.path, self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DataPlane, Placeholder, ProviderKind};

    fn started() -> Event {
        Event::RunStarted {
            scenario: "s".into(),
            guide: "g".into(),
            source: "s.yaml".into(),
            provider: ProviderKind::Kwok,
            dataplane: DataPlane::Computed,
            variant: "v".into(),
            real: vec![],
            computed: vec![],
            notes: vec![],
            properties: BTreeMap::new(),
            steps: vec![(StepId("a".into()), "A".into()), (StepId("b".into()), "B".into())],
            preamble: vec!["export CTX_CLUSTER1=kwok-cluster1".into()],
        }
    }

    fn action(id: &str, index: usize, line: &str) -> Event {
        Event::ActionFinished {
            id: StepId(id.into()),
            record: ActionRecord {
                index,
                lines: vec![line.into()],
                bound: vec![(Placeholder("X".into()), "1".into())],
                started: 0,
                ended: 1,
                error: None,
            },
        }
    }

    /// Plan order, not arrival order: steps of a stage finish in any order, the transcript follows the plan.
    #[test]
    fn actions_appear_in_plan_order_with_their_bindings() {
        let mut t = TranscriptReporter::new("x.sh".into());
        t.on_event(&started());
        t.on_event(&action("b", 0, "echo b"));
        t.on_event(&action("a", 1, "echo a2"));
        t.on_event(&action("a", 0, "echo a1"));
        let text = t.render();
        let a1 = text.find("echo a1").expect("a1");
        let a2 = text.find("echo a2").expect("a2");
        let b = text.find("echo b").expect("b");
        assert!(a1 < a2 && a2 < b, "{text}");
        assert!(text.contains("export CTX_CLUSTER1=kwok-cluster1\n"));
        assert!(text.contains("# bound: X=1"));
    }
}
