//! The conformance report (`<name>.conformance.yaml`): one file a release engineer attaches to a release, modelled
//! on Gateway API's `ConformanceReport` (implementation, date, mode, a result with statistics and the failed and
//! skipped lists) and adding what no such report records: the mesh build of each cluster and the topology.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::events::{Event, FailureKind, ISTIO_PROPERTY, Outcome};
use super::{ReportError, Reporter};
use crate::exit::ExitStatus;
use crate::plan::StepClass;
use crate::scenario::{InstallMethod, Scenario};

/// The report's `apiVersion`.
pub const API_VERSION: &str = "meshconf.dev/v1alpha1";

/// A cluster of the topology.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopologyCluster {
    /// Name (the Istio cluster ID).
    pub name: String,
    /// `primary` or `remote`.
    pub role: crate::scenario::Role,
    /// Istio network.
    pub network: String,
    /// A remote's primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// The mesh build this cluster ran.
    pub mesh_build: String,
}

/// Counts, as Gateway API's `statistics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    /// Steps that passed.
    pub passed: usize,
    /// Steps the mesh failed.
    pub failed: usize,
    /// Steps an infrastructure error ended.
    pub errored: usize,
    /// Steps not run.
    pub skipped: usize,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Step id.
    pub name: String,
    /// `passed`, `failed`, `error` or `skipped`.
    pub result: &'static str,
    /// Why, when it did not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Implementation {
    project: &'static str,
    url: &'static str,
    variant: String,
    install_method: InstallMethod,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Harness {
    name: &'static str,
    version: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    api_version: &'static str,
    kind: &'static str,
    date: String,
    harness: Harness,
    implementation: Implementation,
    guide: String,
    scenario: String,
    scenario_file: String,
    provider: String,
    dataplane: String,
    computed: Vec<String>,
    topology: Vec<TopologyCluster>,
    /// `success` (every check passed), `failure` (the mesh failed one) or `error` (nothing could be judged).
    result: &'static str,
    exit_code: i32,
    statistics: Statistics,
    checks: Vec<CheckResult>,
    failed_tests: Vec<String>,
    skipped_tests: Vec<String>,
    measurements: BTreeMap<String, String>,
}

/// Collects a run's events; writes the YAML file on `finish`.
pub struct ConformanceReporter {
    path: PathBuf,
    topology: Vec<TopologyCluster>,
    install_method: InstallMethod,
    date: String,
    started: Option<Event>,
    steps: Vec<(String, StepClass, Outcome)>,
    measurements: BTreeMap<String, String>,
    status: Option<ExitStatus>,
}

impl ConformanceReporter {
    /// A reporter for `scenario`'s run, writing to `path`.
    pub fn new(path: PathBuf, scenario: &Scenario) -> Self {
        Self {
            path,
            topology: scenario
                .clusters
                .iter()
                .map(|c| TopologyCluster {
                    name: c.name.as_str().to_string(),
                    role: c.role,
                    network: c.network.as_str().to_string(),
                    primary: c.primary.as_ref().map(|p| p.as_str().to_string()),
                    mesh_build: String::new(),
                })
                .collect(),
            install_method: scenario.install_method,
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            started: None,
            steps: Vec::new(),
            measurements: BTreeMap::new(),
            status: None,
        }
    }

    /// The report's text (what `finish` writes).
    pub fn render(&self) -> Result<String, ReportError> {
        let Some(Event::RunStarted {
            scenario,
            guide,
            source,
            provider,
            dataplane,
            variant,
            computed,
            properties,
            ..
        }) = &self.started
        else {
            return Err(ReportError::Conformance(
                "no run-started event to report on".into(),
            ));
        };
        let default_build = properties.get(ISTIO_PROPERTY).cloned().unwrap_or_default();
        let topology = self
            .topology
            .iter()
            .map(|c| TopologyCluster {
                mesh_build: properties
                    .get(&format!("{ISTIO_PROPERTY}/{}", c.name))
                    .cloned()
                    .unwrap_or_else(|| default_build.clone()),
                ..c.clone()
            })
            .collect();
        let mut stats = Statistics::default();
        let (mut checks, mut failed, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for (id, class, outcome) in &self.steps {
            let (word, message) = match outcome {
                Outcome::Passed => {
                    stats.passed += 1;
                    ("passed", None)
                }
                Outcome::Failed {
                    kind: FailureKind::Conformance,
                    message,
                    ..
                } => {
                    stats.failed += 1;
                    failed.push(id.clone());
                    ("failed", Some(message.clone()))
                }
                Outcome::Failed { message, .. } => {
                    stats.errored += 1;
                    failed.push(id.clone());
                    ("error", Some(message.clone()))
                }
                Outcome::Skipped { reason } => {
                    stats.skipped += 1;
                    skipped.push(id.clone());
                    ("skipped", Some(reason.clone()))
                }
            };
            if *class == StepClass::Check {
                checks.push(CheckResult {
                    name: id.clone(),
                    result: word,
                    message,
                });
            }
        }
        let status = self.status.unwrap_or(ExitStatus::Infrastructure);
        let doc = Document {
            api_version: API_VERSION,
            kind: "ConformanceReport",
            date: self.date.clone(),
            harness: Harness {
                name: "meshconf",
                version: env!("CARGO_PKG_VERSION"),
            },
            implementation: Implementation {
                project: "istio",
                url: "https://istio.io",
                variant: variant.clone(),
                install_method: self.install_method,
            },
            guide: guide.clone(),
            scenario: scenario.clone(),
            scenario_file: source.clone(),
            provider: provider.as_str().to_string(),
            dataplane: dataplane.as_str().to_string(),
            computed: computed.clone(),
            topology,
            result: match status {
                ExitStatus::Passed => "success",
                ExitStatus::ConformanceFailure => "failure",
                ExitStatus::BadInput | ExitStatus::Infrastructure => "error",
            },
            exit_code: status.code(),
            statistics: stats,
            checks,
            failed_tests: failed,
            skipped_tests: skipped,
            measurements: self.measurements.clone(),
        };
        serde_saphyr::to_string(&doc).map_err(|e| ReportError::Conformance(e.to_string()))
    }
}

impl Reporter for ConformanceReporter {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::RunStarted { .. } => self.started = Some(event.clone()),
            Event::StepFinished {
                id, class, outcome, ..
            } => self.steps.push((id.0.clone(), *class, outcome.clone())),
            Event::CleanupFinished { properties, .. } => self.measurements.extend(properties.clone()),
            Event::RunFinished { status, .. } => self.status = Some(*status),
            _ => {}
        }
    }

    fn finish(&mut self) -> Result<(), ReportError> {
        let text = self.render()?;
        super::write_file(&self.path, text)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plan::{DataPlane, ProviderKind, StepId};

    fn scenario() -> Scenario {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/primary-remote.yaml");
        crate::scenario::load_file(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    fn finished(id: &str, class: StepClass, outcome: Outcome) -> Event {
        Event::StepFinished {
            id: StepId(id.into()),
            title: id.into(),
            class,
            outcome,
            duration: Duration::from_secs(1),
            attempts: Vec::new(),
            properties: BTreeMap::new(),
        }
    }

    #[test]
    fn the_report_names_each_cluster_build_the_result_and_the_failed_and_skipped_lists() {
        let mut r = ConformanceReporter::new(PathBuf::from("r.conformance.yaml"), &scenario());
        r.date = "2026-12-02T16:00:00Z".into();
        let events = [
            Event::RunStarted {
                scenario: "primary-remote".into(),
                guide: "Install Primary-Remote".into(),
                source: "scenarios/primary-remote.yaml".into(),
                provider: ProviderKind::Kind,
                dataplane: DataPlane::Real,
                variant: "istioctl 1.32-dev.eed52ebb66ad: `istioctl create-remote-secret`".into(),
                real: Vec::new(),
                computed: Vec::new(),
                notes: Vec::new(),
                properties: [
                    (ISTIO_PROPERTY.to_string(), "1.32-dev".to_string()),
                    (format!("{ISTIO_PROPERTY}/cluster2"), "1.31-dev".to_string()),
                ]
                .into(),
                steps: Vec::new(),
                preamble: Vec::new(),
            },
            finished("install-istio/cluster1", StepClass::Mesh, Outcome::Passed),
            finished("check-traffic/from-cluster1", StepClass::Check, Outcome::Passed),
            finished(
                "check-traffic/from-cluster2",
                StepClass::Check,
                Outcome::Failed {
                    kind: FailureKind::Conformance,
                    message: "v1 (in cluster1) never answered cluster2's curl".into(),
                    command: None,
                    output_tail: None,
                },
            ),
            finished(
                "verify-upgrade",
                StepClass::Check,
                Outcome::Skipped {
                    reason: "an earlier step failed".into(),
                },
            ),
            Event::CleanupFinished {
                complete: true,
                message: String::new(),
                properties: [("egress-packets".to_string(), "0".to_string())].into(),
            },
            Event::RunFinished {
                status: ExitStatus::ConformanceFailure,
                duration: Duration::from_secs(90),
            },
        ];
        for e in &events {
            r.on_event(e);
        }
        let text = r.render().expect("renders");
        insta::assert_snapshot!(text.replace(env!("CARGO_PKG_VERSION"), "[version]"));
        let v: serde_json::Value = serde_saphyr::from_str(&text).expect("the report is YAML");
        assert_eq!(v["result"], "failure");
        assert_eq!(v["topology"][1]["meshBuild"], "1.31-dev", "cluster2's own build");
        assert_eq!(
            v["topology"][0]["meshBuild"], "1.32-dev",
            "the run's build elsewhere"
        );
        assert_eq!(v["failedTests"][0], "check-traffic/from-cluster2");
        assert_eq!(v["skippedTests"][0], "verify-upgrade");
        assert_eq!(v["statistics"]["passed"], 2);
    }

    #[test]
    fn a_report_without_a_run_is_an_error_not_an_empty_file() {
        let r = ConformanceReporter::new(PathBuf::from("r.yaml"), &scenario());
        assert!(r.render().is_err());
    }
}
