//! Reading a run back from its JSON record (`<name>.json`, format `meshconf-events/v1`): only what a comparison
//! sets side by side (steps and their outcomes, each check's counts, p-value and convergence, the run's build and
//! its whole-run measurements), so a record written by a newer meshconf with more fields still reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CompareError;
use crate::exit::ExitStatus;
use crate::plan::{ProviderKind, StepClass};
use crate::report::{ACK_ERRORS_PROPERTY, EGRESS_PROPERTY, FailureKind, ISTIO_PROPERTY};

/// The format name a JSON record carries.
pub const FORMAT: &str = "meshconf-events/v1";

/// A serde `Duration` as the record spells it.
#[derive(Debug, Clone, Copy, Deserialize)]
struct RecordedDuration {
    secs: u64,
    nanos: u32,
}

impl RecordedDuration {
    fn seconds(self) -> f64 {
        self.secs as f64 + f64::from(self.nanos) / 1e9
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
enum RecordedOutcome {
    Passed,
    Failed { kind: FailureKind, message: String },
    Skipped { reason: String },
}

#[derive(Debug, Deserialize)]
struct RecordedVerdict {
    requests: u32,
    #[serde(default)]
    counts: BTreeMap<String, u64>,
    #[serde(default)]
    errors: BTreeMap<String, u64>,
    p_value: Option<f64>,
    #[serde(default)]
    problems: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RecordedConvergence {
    converged: bool,
    seconds: f64,
}

#[derive(Debug, Deserialize)]
struct RecordedCheck {
    verdict: RecordedVerdict,
    convergence: RecordedConvergence,
}

/// The events a comparison reads; every other event is passed over.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
enum Recorded {
    RunStarted {
        scenario: String,
        guide: String,
        provider: ProviderKind,
        variant: String,
        #[serde(default)]
        properties: BTreeMap<String, String>,
    },
    CheckFinished {
        id: String,
        record: RecordedCheck,
    },
    StepFinished {
        id: String,
        title: String,
        class: StepClass,
        outcome: RecordedOutcome,
        duration: RecordedDuration,
    },
    CleanupFinished {
        #[serde(default)]
        properties: BTreeMap<String, String>,
    },
    RunFinished {
        status: ExitStatus,
        duration: RecordedDuration,
    },
    #[serde(other)]
    Other,
}

/// How one step ended, as a comparison shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum StepResult {
    /// Passed.
    Passed,
    /// Failed: the mesh (conformance) or the environment (infrastructure).
    Failed {
        /// Which.
        kind: FailureKind,
        /// The step's one-line message.
        message: String,
    },
    /// Not run.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl StepResult {
    /// `pass`, `FAIL`, `error` or `skip`: the word of a table cell.
    pub fn word(&self) -> &'static str {
        match self {
            StepResult::Passed => "pass",
            StepResult::Failed {
                kind: FailureKind::Conformance,
                ..
            } => "FAIL",
            StepResult::Failed {
                kind: FailureKind::Infrastructure,
                ..
            } => "error",
            StepResult::Skipped { .. } => "skip",
        }
    }
}

/// The measured sample of a traffic check (its last attempt: the verdict).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckSummary {
    /// Requests in the sample.
    pub requests: u32,
    /// Answers per `version@cluster`.
    pub counts: BTreeMap<String, u64>,
    /// Non-HelloWorld answers.
    pub errors: BTreeMap<String, u64>,
    /// The even-split test's p-value.
    pub p_value: Option<f64>,
    /// Whether every expected endpoint answered before the deadline.
    pub converged: bool,
    /// Seconds until every expected endpoint had answered.
    pub convergence_seconds: f64,
    /// The verdict's problems (empty: passed).
    pub problems: Vec<String>,
}

impl CheckSummary {
    /// `v1@cluster1 ×50, v2@cluster2 ×50`.
    pub fn split(&self) -> String {
        self.counts
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .chain(self.errors.iter().map(|(k, n)| format!("error {k:?} ×{n}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One step of a recorded run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepSummary {
    /// Step id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Its failure class.
    pub class: StepClass,
    /// How it ended.
    pub result: StepResult,
    /// Wall time, seconds.
    pub seconds: f64,
    /// A traffic check's sample, when the step judged one.
    pub check: Option<CheckSummary>,
}

/// One recorded run, as a comparison reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// What pairs it with its run on the other side: the report name, without a `@<build>` suffix.
    pub key: String,
    /// The record file.
    pub file: PathBuf,
    /// Scenario name.
    pub scenario: String,
    /// The guide followed.
    pub guide: String,
    /// Provider.
    pub provider: ProviderKind,
    /// The mesh build the run drove.
    pub istio: String,
    /// The guide variant.
    pub variant: String,
    /// Exit status; `None` when the record ends before the run did.
    pub status: Option<ExitStatus>,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Steps in the order they ended.
    pub steps: Vec<StepSummary>,
    /// Config istiod sent that a proxy rejected, when measured.
    pub ack_errors: Option<u64>,
    /// Packets that left the kind network, when measured.
    pub egress_packets: Option<u64>,
}

/// The key of a report name: `multi-primary@1.31-dev` → `multi-primary`.
pub fn key_of(report_name: &str) -> &str {
    report_name.split_once('@').map_or(report_name, |(k, _)| k)
}

/// The build a record names: its `istio` property, else the version in its variant (`istioctl 1.32-dev…: …`),
/// records written before the property existed.
fn build_of(properties: &BTreeMap<String, String>, variant: &str) -> String {
    if let Some(b) = properties.get(ISTIO_PROPERTY) {
        return b.clone();
    }
    variant
        .strip_prefix("istioctl ")
        .and_then(|v| v.split(':').next())
        .unwrap_or("unknown")
        .to_string()
}

/// Reads one record. `Ok(None)`: a JSON file that is not a meshconf record (another tool's, a comparison's).
pub fn read_record(path: &Path) -> Result<Option<RunSummary>, CompareError> {
    let text = std::fs::read_to_string(path).map_err(|source| CompareError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_record(path, &text)
}

/// Parses one record's text (`path` names it in errors and gives the key).
pub fn parse_record(path: &Path, text: &str) -> Result<Option<RunSummary>, CompareError> {
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| CompareError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    if doc.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Ok(None);
    }
    let events = doc
        .get("events")
        .and_then(|e| e.as_array())
        .ok_or_else(|| CompareError::Record {
            path: path.to_path_buf(),
            message: "has no \"events\" list".into(),
        })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut run: Option<RunSummary> = None;
    let mut checks: BTreeMap<String, CheckSummary> = BTreeMap::new();
    for (i, value) in events.iter().enumerate() {
        let event: Recorded = serde_json::from_value(value.clone()).map_err(|e| CompareError::Record {
            path: path.to_path_buf(),
            message: format!("event {i}: {e}"),
        })?;
        if let Recorded::RunStarted {
            scenario,
            guide,
            provider,
            variant,
            properties,
        } = &event
        {
            run = Some(RunSummary {
                key: key_of(&name).to_string(),
                file: path.to_path_buf(),
                scenario: scenario.clone(),
                guide: guide.clone(),
                provider: *provider,
                istio: build_of(properties, variant),
                variant: variant.clone(),
                status: None,
                seconds: 0.0,
                steps: Vec::new(),
                ack_errors: None,
                egress_packets: None,
            });
            continue;
        }
        let Some(r) = run.as_mut() else {
            return Err(CompareError::Record {
                path: path.to_path_buf(),
                message: format!("event {i} comes before the run-started event"),
            });
        };
        match event {
            Recorded::CheckFinished { id, record } => {
                checks.insert(
                    id,
                    CheckSummary {
                        requests: record.verdict.requests,
                        counts: record.verdict.counts,
                        errors: record.verdict.errors,
                        p_value: record.verdict.p_value,
                        converged: record.convergence.converged,
                        convergence_seconds: record.convergence.seconds,
                        problems: record.verdict.problems,
                    },
                );
            }
            Recorded::StepFinished {
                id,
                title,
                class,
                outcome,
                duration,
            } => {
                let result = match outcome {
                    RecordedOutcome::Passed => StepResult::Passed,
                    RecordedOutcome::Failed { kind, message } => StepResult::Failed { kind, message },
                    RecordedOutcome::Skipped { reason } => StepResult::Skipped { reason },
                };
                let check = checks.remove(&id);
                r.steps.push(StepSummary {
                    id,
                    title,
                    class,
                    result,
                    seconds: duration.seconds(),
                    check,
                });
            }
            Recorded::CleanupFinished { properties } => {
                r.ack_errors = properties.get(ACK_ERRORS_PROPERTY).and_then(|v| v.parse().ok());
                r.egress_packets = properties.get(EGRESS_PROPERTY).and_then(|v| v.parse().ok());
            }
            Recorded::RunFinished { status, duration } => {
                r.status = Some(status);
                r.seconds = duration.seconds();
            }
            Recorded::RunStarted { .. } | Recorded::Other => {}
        }
    }
    match run {
        Some(r) => Ok(Some(r)),
        None => Err(CompareError::Record {
            path: path.to_path_buf(),
            message: "has no run-started event".into(),
        }),
    }
}

/// Every record directly in `dir`, by key. Exit 2 material: a missing directory, an unreadable or malformed
/// record, or a directory without any.
pub fn read_dir(dir: &Path) -> Result<BTreeMap<String, RunSummary>, CompareError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CompareError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut runs: BTreeMap<String, RunSummary> = BTreeMap::new();
    for f in files {
        if let Some(run) = read_record(&f)? {
            if let Some(other) = runs.get(&run.key) {
                return Err(CompareError::Record {
                    path: f.clone(),
                    message: format!(
                        "pairs as '{}' like {}: one record per report name in a directory",
                        run.key,
                        other.file.display()
                    ),
                });
            }
            runs.insert(run.key.clone(), run);
        }
    }
    if runs.is_empty() {
        return Err(CompareError::Empty {
            dir: dir.to_path_buf(),
        });
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(events: &str) -> String {
        format!(r#"{{"format": "meshconf-events/v1", "events": [{events}]}}"#)
    }

    const STARTED: &str = r#"{"event": "run-started", "scenario": "multi-primary", "guide": "Install Multi-Primary",
        "source": "scenarios/multi-primary.yaml", "provider": "kwok", "dataplane": "computed",
        "variant": "istioctl 1.32-dev.eed52ebb66ad: `istioctl create-remote-secret`", "real": [], "computed": [],
        "notes": [], "properties": {"istio": "1.32-dev"}, "steps": [], "preamble": []}"#;

    #[test]
    fn a_record_reads_steps_checks_and_measurements() {
        let text = record(&format!(
            r#"{STARTED},
            {{"event": "check-finished", "id": "check-traffic/from-cluster1", "record": {{
              "verdict": {{"from": "cluster1", "requests": 100, "counts": {{"v1@cluster1": 52, "v2@cluster2": 48}},
                "instances": {{}}, "errors": {{}}, "p_value": 0.69, "problems": []}},
              "convergence": {{"converged": true, "attempts": 3, "seconds": 4.5, "first_cross_cluster_seconds": null}}}}}},
            {{"event": "step-finished", "id": "check-traffic/from-cluster1", "title": "t", "class": "check",
              "outcome": {{"status": "passed"}}, "duration": {{"secs": 7, "nanos": 500000000}}, "attempts": [],
              "properties": {{}}}},
            {{"event": "step-finished", "id": "check-traffic/from-cluster2", "title": "t", "class": "check",
              "outcome": {{"status": "failed", "kind": "conformance", "message": "v1 never answered",
                "command": null, "output_tail": null}}, "duration": {{"secs": 1, "nanos": 0}}, "attempts": [],
              "properties": {{}}}},
            {{"event": "step-log", "id": "x", "message": "ignored"}},
            {{"event": "cleanup-finished", "complete": true, "message": "",
              "properties": {{"istiod-ack-errors": "2", "egress-packets": "0"}}}},
            {{"event": "run-finished", "status": "conformance-failure", "duration": {{"secs": 60, "nanos": 0}}}}"#
        ));
        let r = parse_record(Path::new("r/multi-primary@1.32-dev.json"), &text)
            .expect("parses")
            .expect("a record");
        assert_eq!(r.key, "multi-primary");
        assert_eq!(r.istio, "1.32-dev");
        assert_eq!(r.status, Some(ExitStatus::ConformanceFailure));
        assert_eq!(r.steps.len(), 2);
        let c = r.steps[0].check.as_ref().expect("the check's sample");
        assert_eq!(c.split(), "v1@cluster1 ×52, v2@cluster2 ×48");
        assert_eq!(c.convergence_seconds, 4.5);
        assert_eq!(r.steps[0].seconds, 7.5);
        assert_eq!(r.steps[1].result.word(), "FAIL");
        assert_eq!((r.ack_errors, r.egress_packets), (Some(2), Some(0)));
    }

    #[test]
    fn the_build_falls_back_to_the_variant_of_older_records() {
        let text = record(&STARTED.replace(r#""istio": "1.32-dev""#, r#""other": "x""#));
        let r = parse_record(Path::new("a.json"), &text)
            .expect("parses")
            .expect("a record");
        assert_eq!(r.istio, "1.32-dev.eed52ebb66ad");
        assert_eq!(r.status, None, "a record that ends early has no status");
    }

    #[test]
    fn other_json_is_not_a_record_and_broken_json_names_its_line() {
        assert!(matches!(
            parse_record(Path::new("fleet.json"), r#"{"key": "abc"}"#),
            Ok(None)
        ));
        let e = parse_record(Path::new("x.json"), "{\n  \"format\": ").expect_err("broken");
        assert!(e.to_string().contains("x.json:2"), "{e}");
        let e = parse_record(Path::new("y.json"), &record(r#"{"event": "run-finished"}"#))
            .expect_err("no status");
        assert!(e.to_string().contains("y.json: event 0"), "{e}");
    }
}
