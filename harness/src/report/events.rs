//! The event stream a run produces.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::diagnose::StoredFile;
use crate::exit::ExitStatus;
use crate::plan::{DataPlane, Placeholder, ProviderKind, StepClass, StepId};
use crate::verify::CheckRecord;

/// The run-started property naming the mesh build a run drives (istioctl's version, e.g. `1.32-dev.eed52ebb66ad`).
pub const ISTIO_PROPERTY: &str = "istio";

/// The version a running istiod reports for itself (the rehearsal asks its monitoring port's `/version`): a
/// property of the step that started it.
pub const ISTIOD_VERSION_PROPERTY: &str = "istiod-version";

/// The cleanup property counting the config istiod sent that a proxy rejected (NACKs).
pub const ACK_ERRORS_PROPERTY: &str = "istiod-ack-errors";

/// The cleanup property counting packets that left the kind network (must be 0).
pub const EGRESS_PROPERTY: &str = "egress-packets";

/// Whether a failure is the mesh's fault or the environment's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The mesh did not do what the guide says (JUnit `<failure>`).
    Conformance,
    /// A cluster, tool or API failed (JUnit `<error>`).
    Infrastructure,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Outcome {
    /// The step did what it should.
    Passed,
    /// The step failed.
    Failed {
        /// Conformance or infrastructure.
        kind: FailureKind,
        /// One-line message.
        message: String,
        /// The command or API call that failed, if any (secrets redacted).
        command: Option<String>,
        /// The tail of its output (secrets redacted).
        output_tail: Option<String>,
    },
    /// Not run because an earlier step failed or the run was interrupted.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// One attempt of a retried operation, kept so retries are visible rather than hidden.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// What failed on this attempt.
    pub message: String,
    /// How long it took.
    pub duration: Duration,
}

/// One action of a step as it ran: the lines `meshconf plan` shows for it with the placeholders filled, what it
/// bound, when it started and ended (Unix milliseconds) and whether it failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRecord {
    /// Position in the step's actions.
    pub index: usize,
    /// Rendered lines (secrets redacted by the bus).
    pub lines: Vec<String>,
    /// Placeholders it bound, with their values.
    pub bound: Vec<(Placeholder, String)>,
    /// Start, Unix milliseconds.
    pub started: u64,
    /// End, Unix milliseconds.
    pub ended: u64,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// A run event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum Event {
    /// The run began.
    RunStarted {
        /// Scenario name.
        scenario: String,
        /// Guide followed.
        guide: String,
        /// Scenario file.
        source: String,
        /// Provider.
        provider: ProviderKind,
        /// Real or computed data plane.
        dataplane: DataPlane,
        /// Guide variant description.
        variant: String,
        /// Components that ran for real.
        real: Vec<String>,
        /// Components whose behaviour was computed.
        computed: Vec<String>,
        /// Provider deviations from the guide.
        notes: Vec<String>,
        /// Provider facts (Envoy version, image sources).
        properties: BTreeMap<String, String>,
        /// Steps in plan order.
        steps: Vec<(StepId, String)>,
        /// The lines before the first step (the context variables), as the plan renders them.
        preamble: Vec<String>,
    },
    /// A step started.
    StepStarted {
        /// Step id.
        id: StepId,
        /// Title.
        title: String,
    },
    /// A line of progress inside a step.
    StepLog {
        /// Step id.
        id: StepId,
        /// Message (never contains secrets).
        message: String,
    },
    /// An action of a step ended (the transcript is made of these).
    ActionFinished {
        /// Step id.
        id: StepId,
        /// What ran.
        record: ActionRecord,
    },
    /// A traffic check judged its sample (once per attempt; the last one of a step is its verdict).
    CheckFinished {
        /// Step id (`check-traffic/from-<cluster>`).
        id: StepId,
        /// Counts per version and cluster, the answering pods, errors, p-value, problems, and convergence.
        record: CheckRecord,
    },
    /// A step ended.
    StepFinished {
        /// Step id.
        id: StepId,
        /// Title.
        title: String,
        /// Failure classification of the step.
        class: StepClass,
        /// Outcome.
        outcome: Outcome,
        /// Wall time.
        duration: Duration,
        /// Failed attempts before the final outcome.
        attempts: Vec<Attempt>,
        /// Measurements (counts, p-values, convergence times) as report properties.
        properties: BTreeMap<String, String>,
    },
    /// Evidence collected after a failure, before cleanup.
    Diagnostics {
        /// The failed steps the evidence is about.
        steps: Vec<StepId>,
        /// The directory holding the files.
        path: String,
        /// The same directory relative to the report directory (for links from JUnit and HTML).
        link: String,
        /// Files written.
        files: Vec<StoredFile>,
        /// Bytes written.
        bytes: u64,
        /// The byte budget (`--diagnostics-budget`).
        budget: u64,
        /// The one-line diagnosis (the most fundamental finding), when the evidence is clear.
        diagnosis: Option<String>,
        /// Every finding, most fundamental first.
        findings: Vec<String>,
        /// What could not be collected, and why.
        unavailable: Vec<String>,
    },
    /// Cleanup ended.
    CleanupFinished {
        /// Whether everything the run created is gone.
        complete: bool,
        /// What was removed or left.
        message: String,
        /// Facts measured over the whole run (e.g. `egress-packets`).
        properties: BTreeMap<String, String>,
    },
    /// The run ended.
    RunFinished {
        /// Exit status.
        status: ExitStatus,
        /// Wall time.
        duration: Duration,
    },
}

impl Event {
    /// Redacts secrets from every free-text field (messages, commands, output tails, findings, property values,
    /// a check's problems and error texts). The bus applies it before any reporter sees an event: the boundary
    /// where reports are written, whatever a step, a tool or a diagnostic rule put in its text.
    pub fn redact(&mut self) {
        use crate::tools::redact as r;
        fn text(s: &mut String) {
            *s = r(s);
        }
        fn texts(v: &mut [String]) {
            v.iter_mut().for_each(text);
        }
        fn values(m: &mut BTreeMap<String, String>) {
            m.values_mut().for_each(text);
        }
        match self {
            Event::RunStarted {
                notes, properties, ..
            } => {
                texts(notes);
                values(properties);
            }
            Event::StepLog { message, .. } => text(message),
            Event::ActionFinished { record, .. } => {
                texts(&mut record.lines);
                record.error.iter_mut().for_each(text);
                record.bound.iter_mut().for_each(|(_, v)| text(v));
            }
            Event::CheckFinished { record, .. } => {
                texts(&mut record.verdict.problems);
                let errors = std::mem::take(&mut record.verdict.errors);
                record.verdict.errors = errors.into_iter().map(|(k, n)| (r(&k), n)).collect();
            }
            Event::StepFinished {
                outcome,
                attempts,
                properties,
                ..
            } => {
                match outcome {
                    Outcome::Failed {
                        message,
                        command,
                        output_tail,
                        ..
                    } => {
                        text(message);
                        command.iter_mut().for_each(text);
                        output_tail.iter_mut().for_each(text);
                    }
                    Outcome::Skipped { reason } => text(reason),
                    Outcome::Passed => {}
                }
                attempts.iter_mut().for_each(|a| text(&mut a.message));
                values(properties);
            }
            Event::Diagnostics {
                diagnosis,
                findings,
                unavailable,
                ..
            } => {
                diagnosis.iter_mut().for_each(text);
                texts(findings);
                texts(unavailable);
            }
            Event::CleanupFinished {
                message, properties, ..
            } => {
                text(message);
                values(properties);
            }
            Event::StepStarted { .. } | Event::RunFinished { .. } => {}
        }
    }
}
