//! JUnit XML (Jenkins/GitLab schema via quick-junit): one testsuite per scenario, one testcase per step and
//! check. Infrastructure failures are `<error>`, mesh failures `<failure>`, retried attempts `rerunFailure`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite};

use super::events::{Event, FailureKind, Outcome};
use super::{ReportError, Reporter};

#[derive(Default)]
struct CaseState {
    title: String,
    log: Vec<String>,
}

/// Accumulates events into a JUnit report written on `finish`.
pub struct JunitReporter {
    path: PathBuf,
    events: Vec<Event>,
}

impl JunitReporter {
    /// A reporter writing to `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            events: Vec::new(),
        }
    }
}

impl Reporter for JunitReporter {
    fn on_event(&mut self, event: &Event) {
        self.events.push(event.clone());
    }

    fn finish(&mut self) -> Result<(), ReportError> {
        let xml = render_junit(&self.events)?;
        super::write_file(&self.path, xml)
    }
}

/// Renders the events of one run as JUnit XML.
pub fn render_junit(events: &[Event]) -> Result<String, ReportError> {
    let mut report = Report::new("meshconf");
    let mut suite = TestSuite::new("meshconf");
    let mut classname = "meshconf".to_string();
    let mut cases: BTreeMap<String, CaseState> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut total = Duration::ZERO;
    let mut finished: BTreeMap<String, ()> = BTreeMap::new();
    let mut suite_out: Vec<String> = Vec::new();
    // Diagnostics arrive after the failing step; index them first so that step's case can carry them.
    let mut evidence: BTreeMap<String, (Option<String>, String)> = BTreeMap::new();
    for e in events {
        if let Event::Diagnostics {
            steps,
            link,
            diagnosis,
            ..
        } = e
        {
            for s in steps {
                evidence.insert(s.0.clone(), (diagnosis.clone(), link.clone()));
            }
        }
    }
    for e in events {
        match e {
            // JUnit carries a check's measurements as its StepFinished properties.
            // The transcript (`<name>.sh`) and the JSON record carry the actions.
            Event::CheckFinished { .. } | Event::ActionFinished { .. } => {}
            Event::RunStarted {
                scenario,
                guide,
                source,
                provider,
                dataplane,
                variant,
                real,
                computed,
                notes,
                properties,
                steps,
                ..
            } => {
                suite = TestSuite::new(scenario.as_str());
                classname = format!("meshconf.{scenario}");
                suite.add_property(Property::new("scenario", scenario.as_str()));
                suite.add_property(Property::new("guide", guide.as_str()));
                suite.add_property(Property::new("scenario-file", source.as_str()));
                suite.add_property(Property::new("provider", provider.as_str()));
                suite.add_property(Property::new("dataplane", dataplane.as_str()));
                suite.add_property(Property::new("variant", variant.as_str()));
                suite.add_property(Property::new("real", real.join(", ")));
                suite.add_property(Property::new("computed", computed.join(", ")));
                for n in notes {
                    suite.add_property(Property::new("note", n.as_str()));
                }
                for (k, v) in properties {
                    suite.add_property(Property::new(k.as_str(), v.as_str()));
                }
                if *dataplane == crate::plan::DataPlane::Computed {
                    suite_out.push(format!(
                        "REHEARSAL on provider {}: real {}; computed {}",
                        provider.as_str(),
                        real.join(", "),
                        computed.join(", ")
                    ));
                }
                for (id, title) in steps {
                    order.push(id.0.clone());
                    cases.insert(
                        id.0.clone(),
                        CaseState {
                            title: title.clone(),
                            log: Vec::new(),
                        },
                    );
                }
            }
            Event::StepStarted { .. } => {}
            Event::StepLog { id, message } => {
                cases.entry(id.0.clone()).or_default().log.push(message.clone());
            }
            Event::StepFinished {
                id,
                title,
                outcome,
                duration,
                attempts,
                properties,
                ..
            } => {
                let state = cases.remove(&id.0).unwrap_or_default();
                finished.insert(id.0.clone(), ());
                let mut status = match outcome {
                    Outcome::Passed => TestCaseStatus::success(),
                    Outcome::Skipped { reason } => {
                        let mut s = TestCaseStatus::skipped();
                        s.set_message(reason.as_str());
                        s
                    }
                    Outcome::Failed {
                        kind,
                        message,
                        command,
                        output_tail,
                    } => {
                        let k = match kind {
                            FailureKind::Conformance => NonSuccessKind::Failure,
                            FailureKind::Infrastructure => NonSuccessKind::Error,
                        };
                        let mut s = TestCaseStatus::non_success(k);
                        match evidence.get(&id.0) {
                            Some((Some(d), _)) => s.set_message(format!("{message} (diagnosis: {d})")),
                            _ => s.set_message(message.as_str()),
                        };
                        s.set_type(match kind {
                            FailureKind::Conformance => "conformance",
                            FailureKind::Infrastructure => "infrastructure",
                        });
                        let mut d = String::new();
                        if let Some(c) = command {
                            d.push_str(&format!("command: {c}\n"));
                        }
                        if let Some(t) = output_tail {
                            d.push_str(&format!("output (tail):\n{t}\n"));
                        }
                        if !d.is_empty() {
                            s.set_description(d);
                        }
                        s
                    }
                };
                for a in attempts {
                    let mut r = TestRerun::new(NonSuccessKind::Failure);
                    r.set_message(a.message.as_str());
                    r.set_time(a.duration);
                    status.add_rerun(r);
                }
                let name = if state.title.is_empty() {
                    title.clone()
                } else {
                    state.title.clone()
                };
                let mut case = TestCase::new(format!("{id}: {name}"), status);
                case.set_classname(classname.as_str());
                case.set_time(*duration);
                for (k, v) in properties {
                    case.add_property(Property::new(k.as_str(), v.as_str()));
                }
                let mut out = state.log;
                if let Some((diagnosis, link)) = evidence.get(&id.0) {
                    out.push(format!(
                        "diagnosis: {}",
                        diagnosis
                            .as_deref()
                            .unwrap_or("none (no rule matched the collected facts)")
                    ));
                    out.push(format!(
                        "diagnostics: {link}/ (diagnosis.txt, facts.json, log tails)"
                    ));
                }
                if !out.is_empty() {
                    case.set_system_out(out.join("\n"));
                }
                total += *duration;
                suite.add_test_case(case);
            }
            Event::CleanupFinished {
                complete,
                message,
                properties,
            } => {
                suite_out.push(format!(
                    "cleanup {}: {message}",
                    if *complete { "complete" } else { "INCOMPLETE" }
                ));
                for (k, v) in properties {
                    suite.add_property(Property::new(k.as_str(), v.as_str()));
                }
            }
            Event::Diagnostics {
                link,
                bytes,
                budget,
                diagnosis,
                ..
            } => {
                suite.add_property(Property::new("diagnostics", link.as_str()));
                if let Some(d) = diagnosis {
                    suite.add_property(Property::new("diagnosis", d.as_str()));
                }
                suite_out.push(format!("diagnostics: {link}/ ({bytes} of {budget} bytes)"));
            }
            Event::RunFinished { status, duration } => {
                suite.add_property(Property::new("exit-status", format!("{status:?}")));
                suite.set_time(*duration);
                total = *duration;
            }
        }
    }
    // Steps that never finished (interrupt, earlier failure) are reported as skipped, never silently dropped.
    for id in order {
        if finished.contains_key(&id) {
            continue;
        }
        let state = cases.remove(&id).unwrap_or_default();
        let mut s = TestCaseStatus::skipped();
        s.set_message("not run: an earlier step failed or the run was interrupted");
        let mut case = TestCase::new(format!("{id}: {}", state.title), s);
        case.set_classname(classname.as_str());
        suite.add_test_case(case);
    }
    if !suite_out.is_empty() {
        suite.set_system_out(suite_out.join("\n"));
    }
    report.set_time(total);
    report.add_test_suite(suite);
    report.to_string().map_err(|e| ReportError::Junit(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitStatus;
    use crate::plan::{DataPlane, ProviderKind, StepClass, StepId};
    use std::collections::BTreeMap;

    fn events() -> Vec<Event> {
        let id = |s: &str| StepId(s.to_string());
        vec![
            Event::RunStarted {
                scenario: "multi-primary".into(),
                guide: "Install Multi-Primary".into(),
                source: "scenarios/multi-primary.yaml".into(),
                provider: ProviderKind::Kwok,
                dataplane: DataPlane::Computed,
                variant: "istioctl 1.30.3".into(),
                real: vec!["kube-apiserver".into(), "istiod".into()],
                computed: vec!["data plane".into()],
                notes: vec!["rehearsal".into()],
                properties: BTreeMap::new(),
                steps: vec![
                    (id("create-clusters"), "Create clusters".into()),
                    (
                        id("install-istio/cluster1"),
                        "Configure cluster1 as a primary".into(),
                    ),
                    (
                        id("check-traffic/from-cluster1"),
                        "Verify cross-cluster traffic from cluster1".into(),
                    ),
                    (
                        id("check-traffic/from-cluster2"),
                        "Verify cross-cluster traffic from cluster2".into(),
                    ),
                ],
                preamble: Vec::new(),
            },
            Event::StepLog {
                id: id("create-clusters"),
                message: "cluster1: context kwok-cluster1".into(),
            },
            Event::StepFinished {
                id: id("create-clusters"),
                title: "Create clusters".into(),
                class: StepClass::Infrastructure,
                outcome: Outcome::Passed,
                duration: Duration::from_millis(9500),
                attempts: vec![],
                properties: BTreeMap::new(),
            },
            Event::StepFinished {
                id: id("install-istio/cluster1"),
                title: "Configure cluster1 as a primary".into(),
                class: StepClass::Mesh,
                outcome: Outcome::Failed {
                    kind: FailureKind::Infrastructure,
                    message: "`istioctl install` exited with 1".into(),
                    command: Some("istioctl install -f cluster1.yaml".into()),
                    output_tail: Some("Error: token: <redacted>".into()),
                },
                duration: Duration::from_secs(2),
                attempts: vec![],
                properties: BTreeMap::new(),
            },
            Event::StepFinished {
                id: id("check-traffic/from-cluster1"),
                title: "Verify".into(),
                class: StepClass::Check,
                outcome: Outcome::Failed {
                    kind: FailureKind::Conformance,
                    message: "v2 (in cluster2) never answered".into(),
                    command: None,
                    output_tail: None,
                },
                duration: Duration::from_secs(3),
                attempts: vec![crate::report::Attempt {
                    message: "first try".into(),
                    duration: Duration::from_secs(1),
                }],
                properties: BTreeMap::from([("count/v1@cluster1".to_string(), "100".to_string())]),
            },
            Event::CleanupFinished {
                complete: true,
                message: "deleted kwok cluster cluster1".into(),
                properties: BTreeMap::new(),
            },
            Event::RunFinished {
                status: ExitStatus::Infrastructure,
                duration: Duration::from_secs(20),
            },
        ]
    }

    #[test]
    fn a_check_that_passed_on_a_retry_is_flaky_with_every_attempt() {
        let mut evs = events();
        if let Some(Event::StepFinished { outcome, .. }) = evs
            .iter_mut()
            .find(|e| matches!(e, Event::StepFinished { id, .. } if id.0 == "check-traffic/from-cluster1"))
        {
            *outcome = Outcome::Passed;
        }
        let xml = render_junit(&evs).expect("xml");
        let case = xml
            .split("<testcase")
            .find(|c| c.contains("check-traffic/from-cluster1"))
            .expect("case");
        assert!(
            case.contains("<flakyFailure") && case.contains("message=\"first try\""),
            "{case}"
        );
        assert!(
            !case.contains("<failure"),
            "a flaky pass is not a failure: {case}"
        );
    }

    #[test]
    fn junit_snapshot_classifies_failures_and_keeps_unrun_steps() {
        let xml = render_junit(&events()).expect("xml");
        assert!(
            xml.contains("<error message=\"`istioctl install` exited with 1\" type=\"infrastructure\""),
            "{xml}"
        );
        assert!(
            xml.contains("<failure message=\"v2 (in cluster2) never answered\" type=\"conformance\""),
            "{xml}"
        );
        assert!(
            xml.contains("check-traffic/from-cluster2") && xml.contains("<skipped"),
            "an unrun step must appear as skipped"
        );
        assert!(xml.contains("name=\"dataplane\" value=\"computed\""));
        insta::assert_snapshot!(xml);
    }
}
