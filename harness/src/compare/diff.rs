//! Setting a candidate build's runs beside a baseline's, step by step: a step that passed on the baseline and
//! fails on the candidate is a regression (the answer a release engineer asks for, named first); a check that
//! converges slower beyond the noise band is a slowdown (flagged, never a failure); an infrastructure error on
//! the candidate judged nothing and is said so, never counted as the mesh's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use super::record::{RunSummary, StepResult, StepSummary};
use crate::exit::ExitStatus;
use crate::plan::StepClass;
use crate::report::FailureKind;

/// How much slower a check may converge on the candidate before it is flagged: more than `percent` of the
/// baseline's time and more than `floor_seconds` (convergence on one machine varies by a few seconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NoiseBand {
    /// Relative growth allowed, percent of the baseline.
    pub percent: f64,
    /// Absolute growth always allowed, seconds.
    pub floor_seconds: f64,
}

impl Default for NoiseBand {
    fn default() -> Self {
        Self {
            percent: 50.0,
            floor_seconds: 3.0,
        }
    }
}

impl NoiseBand {
    /// Whether going from `baseline` to `candidate` seconds is beyond the band.
    pub fn slower(&self, baseline: f64, candidate: f64) -> bool {
        let grew = candidate - baseline;
        grew > self.floor_seconds && grew > baseline * self.percent / 100.0
    }

    /// `50% and 3.0 s`.
    pub fn describe(&self) -> String {
        format!("{}% and {:.1} s", self.percent, self.floor_seconds)
    }
}

/// What changed for one step (or one run) from the baseline to the candidate, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Passed on the baseline, failed as the mesh's fault on the candidate.
    Regression,
    /// The baseline has it, the candidate never ran it.
    Missing,
    /// Passed on the baseline; on the candidate an infrastructure error (or a skip after one) judged nothing.
    NotJudged,
    /// Passed on both; the candidate converged slower beyond the noise band.
    Slowdown,
    /// Failed on both.
    StillFailing,
    /// Failed on the baseline, passes on the candidate.
    Fixed,
    /// Only one side has it: a run the baseline lacks, or a step of one side's plan alone (not a check).
    OneSided,
    /// The same on both (passed, or skipped on both).
    Same,
}

impl Change {
    /// The table's word.
    pub fn word(self) -> &'static str {
        match self {
            Change::Regression => "REGRESSION",
            Change::Missing => "MISSING",
            Change::NotJudged => "not judged",
            Change::Slowdown => "slowdown",
            Change::StillFailing => "still failing",
            Change::Fixed => "fixed",
            Change::OneSided => "one side only",
            Change::Same => "same",
        }
    }
}

/// One step on both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRow {
    /// Step id.
    pub id: String,
    /// What changed.
    pub change: Change,
    /// The baseline's step.
    pub baseline: Option<StepSummary>,
    /// The candidate's step.
    pub candidate: Option<StepSummary>,
    /// Convergence seconds on each side, for checks that converged on both.
    pub convergence: Option<(f64, f64)>,
}

/// One run (a report name) on both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    /// The report name both sides share.
    pub key: String,
    /// The worst change among its steps (or the run's own, when one side has no record).
    pub change: Change,
    /// The baseline's build and status.
    pub baseline: Option<RunSide>,
    /// The candidate's build and status.
    pub candidate: Option<RunSide>,
    /// Steps, worst change first, then in the baseline's order.
    pub steps: Vec<StepRow>,
    /// Whole-run findings that are not a step's (new ACK errors, egress).
    pub notes: Vec<String>,
}

/// A run as one side recorded it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSide {
    /// Scenario name.
    pub scenario: String,
    /// Build.
    pub istio: String,
    /// Exit status, when the record has one.
    pub status: Option<ExitStatus>,
    /// Wall time.
    pub seconds: f64,
    /// The record file.
    pub file: PathBuf,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// `meshconf-compare/v1`.
    pub format: &'static str,
    /// The baseline's directory and builds.
    pub baseline: Side,
    /// The candidate's directory and builds.
    pub candidate: Side,
    /// The slowdown band used.
    pub band: NoiseBand,
    /// Runs, worst change first.
    pub runs: Vec<RunRow>,
    /// What the comparison exits with.
    pub status: ExitStatus,
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    /// The report directory.
    pub dir: PathBuf,
    /// Every build its records name.
    pub builds: BTreeSet<String>,
}

impl Side {
    /// `1.31-dev` (or `1.31-dev, 1.32-dev` for a mixed directory).
    pub fn builds_text(&self) -> String {
        self.builds.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

impl Comparison {
    /// Every step row of this change, with its run's key.
    pub fn rows_of(&self, change: Change) -> impl Iterator<Item = (&str, &StepRow)> {
        self.runs.iter().flat_map(move |r| {
            r.steps
                .iter()
                .filter(move |s| s.change == change)
                .map(move |s| (r.key.as_str(), s))
        })
    }

    /// How many step rows have this change.
    pub fn count(&self, change: Change) -> usize {
        self.rows_of(change).count()
    }
}

fn step_change(b: Option<&StepSummary>, c: Option<&StepSummary>, band: &NoiseBand) -> Change {
    use StepResult::{Failed, Passed, Skipped};
    let (Some(b), Some(c)) = (b, c) else {
        return match (b, c) {
            // A check the baseline passed and the candidate never ran verified nothing there.
            (Some(b), None) if b.result == Passed && b.class == StepClass::Check => Change::Missing,
            // Other steps differ with the provider and the fleet (a reset, a cluster's creation).
            (Some(_), None) | (None, Some(_)) => Change::OneSided,
            (None, None) | (Some(_), Some(_)) => Change::Same,
        };
    };
    match (&b.result, &c.result) {
        (Passed, Passed) => match (&b.check, &c.check) {
            (Some(bc), Some(cc))
                if bc.converged
                    && cc.converged
                    && band.slower(bc.convergence_seconds, cc.convergence_seconds) =>
            {
                Change::Slowdown
            }
            _ => Change::Same,
        },
        (
            Passed,
            Failed {
                kind: FailureKind::Conformance,
                ..
            },
        ) => Change::Regression,
        (
            Passed,
            Failed {
                kind: FailureKind::Infrastructure,
                ..
            }
            | Skipped { .. },
        ) => Change::NotJudged,
        (Failed { .. }, Passed) => Change::Fixed,
        (Failed { .. }, Failed { .. }) => Change::StillFailing,
        (Skipped { .. }, Passed | Failed { .. }) => Change::OneSided,
        (Failed { .. }, Skipped { .. }) | (Skipped { .. }, Skipped { .. }) => Change::Same,
    }
}

fn side(r: &RunSummary) -> RunSide {
    RunSide {
        scenario: r.scenario.clone(),
        istio: r.istio.clone(),
        status: r.status,
        seconds: r.seconds,
        file: r.file.clone(),
    }
}

fn run_row(key: &str, b: Option<&RunSummary>, c: Option<&RunSummary>, band: &NoiseBand) -> RunRow {
    let mut ids: Vec<String> = Vec::new();
    for s in b.iter().chain(c.iter()).flat_map(|r| r.steps.iter()) {
        if !ids.contains(&s.id) {
            ids.push(s.id.clone());
        }
    }
    let find = |r: Option<&RunSummary>, id: &str| -> Option<StepSummary> {
        r.and_then(|r| r.steps.iter().find(|s| s.id == id)).cloned()
    };
    let mut steps: Vec<StepRow> = ids
        .iter()
        .map(|id| {
            let (bs, cs) = (find(b, id), find(c, id));
            let convergence = match (
                bs.as_ref().and_then(|s| s.check.as_ref()),
                cs.as_ref().and_then(|s| s.check.as_ref()),
            ) {
                (Some(x), Some(y)) if x.converged && y.converged => {
                    Some((x.convergence_seconds, y.convergence_seconds))
                }
                _ => None,
            };
            StepRow {
                id: id.clone(),
                change: step_change(bs.as_ref(), cs.as_ref(), band),
                baseline: bs,
                candidate: cs,
                convergence,
            }
        })
        .collect();
    // Stable: worst first, the recorded order within a change.
    steps.sort_by_key(|s| s.change);
    // A step only the candidate has (a fleet the baseline's run created and the candidate's reused has other
    // provider steps) is shown, but says nothing about the run.
    let mut change = steps
        .iter()
        .map(|s| s.change)
        .filter(|c| *c != Change::OneSided)
        .min()
        .unwrap_or(Change::Same);
    match (b, c) {
        (Some(_), None) => change = Change::Missing,
        (None, Some(_)) => change = Change::OneSided,
        // A candidate run that ended in an infrastructure error before any step failed (a refused preflight
        // records one failed step, so this is a record cut short) judged nothing.
        (Some(b), Some(c))
            if change > Change::NotJudged
                && b.status == Some(ExitStatus::Passed)
                && c.status != Some(ExitStatus::Passed)
                && c.status != Some(ExitStatus::ConformanceFailure) =>
        {
            change = Change::NotJudged
        }
        _ => {}
    }
    let mut notes = Vec::new();
    if let (Some(b), Some(c)) = (b, c) {
        match (b.ack_errors, c.ack_errors) {
            (Some(x), Some(y)) if y > x => notes.push(format!(
                "istiod-ack-errors grew from {x} to {y}: proxies rejected config the baseline's accepted"
            )),
            _ => {}
        }
        if let Some(n) = c.egress_packets.filter(|n| *n > 0) {
            notes.push(format!("egress-packets {n} on the candidate (must be 0)"));
        }
        if b.scenario != c.scenario {
            notes.push(format!(
                "the sides ran different scenarios under one name: {} and {}",
                b.scenario, c.scenario
            ));
        }
    }
    RunRow {
        key: key.to_string(),
        change,
        baseline: b.map(side),
        candidate: c.map(side),
        steps,
        notes,
    }
}

/// Compares the candidate's runs with the baseline's. Exit 1 on any regression or run missing from the
/// candidate (the candidate did less than the baseline); else 3 when an infrastructure error on the candidate
/// left something the baseline passed unjudged; else 0. Slowdowns and notes never change the exit status.
pub fn compare(
    baseline_dir: PathBuf,
    baseline: &BTreeMap<String, RunSummary>,
    candidate_dir: PathBuf,
    candidate: &BTreeMap<String, RunSummary>,
    band: NoiseBand,
) -> Comparison {
    let keys: BTreeSet<&String> = baseline.keys().chain(candidate.keys()).collect();
    let mut runs: Vec<RunRow> = keys
        .into_iter()
        .map(|k| run_row(k, baseline.get(k), candidate.get(k), &band))
        .collect();
    runs.sort_by(|a, b| a.change.cmp(&b.change).then_with(|| a.key.cmp(&b.key)));
    let worst = runs.iter().map(|r| r.change).min().unwrap_or(Change::Same);
    let status = match worst {
        Change::Regression | Change::Missing => ExitStatus::ConformanceFailure,
        Change::NotJudged => ExitStatus::Infrastructure,
        _ => ExitStatus::Passed,
    };
    let builds = |m: &BTreeMap<String, RunSummary>| m.values().map(|r| r.istio.clone()).collect();
    Comparison {
        format: "meshconf-compare/v1",
        baseline: Side {
            dir: baseline_dir,
            builds: builds(baseline),
        },
        candidate: Side {
            dir: candidate_dir,
            builds: builds(candidate),
        },
        band,
        runs,
        status,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::record::CheckSummary;
    use super::*;
    use crate::plan::ProviderKind;

    pub(crate) fn step(id: &str, result: StepResult, convergence: Option<f64>) -> StepSummary {
        StepSummary {
            id: id.into(),
            title: id.into(),
            class: if id.starts_with("check-") {
                StepClass::Check
            } else {
                StepClass::Mesh
            },
            result,
            seconds: 1.0,
            check: convergence.map(|s| CheckSummary {
                requests: 100,
                counts: [("v1@cluster1".to_string(), 50), ("v2@cluster2".to_string(), 50)].into(),
                errors: BTreeMap::new(),
                p_value: Some(1.0),
                converged: true,
                convergence_seconds: s,
                problems: Vec::new(),
            }),
        }
    }

    pub(crate) fn run(key: &str, istio: &str, status: ExitStatus, steps: Vec<StepSummary>) -> RunSummary {
        RunSummary {
            key: key.into(),
            file: PathBuf::from(format!("{istio}/{key}.json")),
            scenario: key.into(),
            guide: "Install Multi-Primary".into(),
            provider: ProviderKind::Kwok,
            istio: istio.into(),
            variant: String::new(),
            status: Some(status),
            seconds: 60.0,
            steps,
            ack_errors: Some(0),
            egress_packets: Some(0),
        }
    }

    pub(crate) fn fail(kind: FailureKind) -> StepResult {
        StepResult::Failed {
            kind,
            message: "v2 (in cluster2) never answered cluster1's curl".into(),
        }
    }

    fn side_of(runs: Vec<RunSummary>) -> BTreeMap<String, RunSummary> {
        runs.into_iter().map(|r| (r.key.clone(), r)).collect()
    }

    fn cmp(b: Vec<RunSummary>, c: Vec<RunSummary>) -> Comparison {
        compare(
            "base".into(),
            &side_of(b),
            "cand".into(),
            &side_of(c),
            NoiseBand::default(),
        )
    }

    fn passing(key: &str, istio: &str, convergence: f64) -> RunSummary {
        run(
            key,
            istio,
            ExitStatus::Passed,
            vec![
                step("install-istio/cluster1", StepResult::Passed, None),
                step(
                    "check-traffic/from-cluster1",
                    StepResult::Passed,
                    Some(convergence),
                ),
            ],
        )
    }

    #[test]
    fn the_same_results_on_both_builds_exit_0_and_name_both() {
        let c = cmp(
            vec![passing("mp", "1.31-dev", 4.0)],
            vec![passing("mp", "1.32-dev", 5.0)],
        );
        assert_eq!(c.status, ExitStatus::Passed);
        assert_eq!(c.baseline.builds_text(), "1.31-dev");
        assert_eq!(c.candidate.builds_text(), "1.32-dev");
        assert!(c.runs.iter().all(|r| r.change == Change::Same));
    }

    /// Seen with `make matrix` on a fleet: the baseline's run created the fleet, the candidate's reused it, so
    /// each side has provider steps the other lacks. The run is still the same.
    #[test]
    fn provider_steps_only_one_side_has_leave_the_run_the_same() {
        let mut reused = passing("mp", "1.32-dev", 4.0);
        reused
            .steps
            .insert(0, step("reuse-cluster/cluster1", StepResult::Passed, None));
        let c = cmp(vec![passing("mp", "1.31-dev", 4.0)], vec![reused]);
        assert_eq!(c.status, ExitStatus::Passed);
        assert_eq!(c.runs[0].change, Change::Same);
        assert!(c.runs[0].steps.iter().any(|s| s.change == Change::OneSided));
    }

    #[test]
    fn a_check_failing_only_on_the_candidate_is_a_regression_named_first() {
        let mut broken = passing("mp", "1.32-dev", 4.0);
        broken.status = Some(ExitStatus::ConformanceFailure);
        broken.steps[1].result = fail(FailureKind::Conformance);
        let c = cmp(
            vec![
                passing("a-first", "1.31-dev", 4.0),
                passing("mp", "1.31-dev", 4.0),
            ],
            vec![passing("a-first", "1.32-dev", 4.0), broken],
        );
        assert_eq!(c.status, ExitStatus::ConformanceFailure);
        assert_eq!(
            c.runs[0].key, "mp",
            "the regressed run comes first, whatever its name"
        );
        assert_eq!(c.runs[0].steps[0].id, "check-traffic/from-cluster1");
        assert_eq!(c.runs[0].steps[0].change, Change::Regression);
        assert_eq!(c.count(Change::Regression), 1);
    }

    #[test]
    fn an_infrastructure_error_on_the_candidate_is_not_judged_never_a_regression() {
        let mut broken = passing("mp", "1.32-dev", 4.0);
        broken.status = Some(ExitStatus::Infrastructure);
        broken.steps[0].result = fail(FailureKind::Infrastructure);
        broken.steps[1].result = StepResult::Skipped {
            reason: "an earlier step failed".into(),
        };
        let c = cmp(vec![passing("mp", "1.31-dev", 4.0)], vec![broken]);
        assert_eq!(c.status, ExitStatus::Infrastructure);
        assert_eq!(c.count(Change::Regression), 0);
        assert_eq!(c.count(Change::NotJudged), 2);
    }

    #[test]
    fn a_fix_a_missing_run_and_a_new_one() {
        let mut was_broken = passing("mp", "1.31-dev", 4.0);
        was_broken.steps[1].result = fail(FailureKind::Conformance);
        let c = cmp(
            vec![was_broken, passing("pr", "1.31-dev", 4.0)],
            vec![passing("mp", "1.32-dev", 4.0), passing("three", "1.32-dev", 4.0)],
        );
        assert_eq!(
            c.status,
            ExitStatus::ConformanceFailure,
            "pr is missing on the candidate"
        );
        let by: BTreeMap<&str, Change> = c.runs.iter().map(|r| (r.key.as_str(), r.change)).collect();
        assert_eq!(by["pr"], Change::Missing);
        assert_eq!(by["three"], Change::OneSided);
        assert_eq!(c.count(Change::Fixed), 1);
    }

    #[test]
    fn slower_convergence_beyond_the_band_is_a_slowdown_and_still_exits_0() {
        let band = NoiseBand::default();
        assert!(!band.slower(4.0, 6.5), "2.5 s is within the 3 s floor");
        assert!(!band.slower(20.0, 28.0), "40% is within 50%");
        assert!(band.slower(4.0, 12.0));
        let c = cmp(
            vec![passing("mp", "1.31-dev", 4.0)],
            vec![passing("mp", "1.32-dev", 12.0)],
        );
        assert_eq!(c.status, ExitStatus::Passed);
        assert_eq!(c.runs[0].change, Change::Slowdown);
        assert_eq!(c.runs[0].steps[0].convergence, Some((4.0, 12.0)));
    }

    #[test]
    fn new_ack_errors_are_noted() {
        let mut cand = passing("mp", "1.32-dev", 4.0);
        cand.ack_errors = Some(3);
        let c = cmp(vec![passing("mp", "1.31-dev", 4.0)], vec![cand]);
        assert_eq!(c.status, ExitStatus::Passed);
        assert!(
            c.runs[0].notes[0].contains("from 0 to 3"),
            "{:?}",
            c.runs[0].notes
        );
    }
}
