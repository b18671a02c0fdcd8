//! Events and reporters. The runner emits [`Event`]s; reporters (console, JUnit, JSON, HTML) consume them and never
//! call back into the runner or a cluster.

mod conformance;
mod console;
mod events;
mod html;
mod json;
mod junit;
mod transcript;

pub use conformance::{ConformanceReporter, Statistics, TopologyCluster};
pub use console::ConsoleReporter;
pub use events::*;
pub use html::{HtmlReporter, render_html};
pub use json::JsonReporter;
pub use junit::{JunitReporter, render_junit};
pub use transcript::TranscriptReporter;

use std::sync::{Arc, Mutex};

/// Writing a report failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The report file could not be written.
    #[error("cannot write report {path}: {source}")]
    Write {
        /// File path.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// JUnit serialization failed.
    #[error("cannot serialize JUnit: {0}")]
    Junit(String),
    /// The conformance report could not be rendered.
    #[error("cannot render the conformance report: {0}")]
    Conformance(String),
    /// JSON serialization failed.
    #[error("cannot serialize JSON report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes a report file, creating its directory.
pub(crate) fn write_file(path: &std::path::Path, text: impl AsRef<[u8]>) -> Result<(), ReportError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A consumer of run events.
pub trait Reporter: Send {
    /// Called for every event, in order.
    fn on_event(&mut self, event: &Event);
    /// Called once after the last event; writes files.
    fn finish(&mut self) -> Result<(), ReportError>;
}

/// Fans events out to reporters. Cheap to clone; safe to emit from parallel steps.
#[derive(Clone, Default)]
pub struct EventBus {
    inner: Arc<Mutex<Vec<Box<dyn Reporter>>>>,
}

impl EventBus {
    /// A bus with these reporters.
    pub fn new(reporters: Vec<Box<dyn Reporter>>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(reporters)),
        }
    }

    /// Delivers an event to every reporter, secrets redacted first ([`Event::redact`]).
    pub fn emit(&self, mut event: Event) {
        event.redact();
        tracing::debug!(?event, "event");
        if let Ok(mut rs) = self.inner.lock() {
            for r in rs.iter_mut() {
                r.on_event(&event);
            }
        }
    }

    /// Finishes every reporter, returning the first error.
    pub fn finish(&self) -> Result<(), ReportError> {
        let mut first = Ok(());
        if let Ok(mut rs) = self.inner.lock() {
            for r in rs.iter_mut() {
                if let Err(e) = r.finish()
                    && first.is_ok()
                {
                    first = Err(e);
                }
            }
        }
        first
    }
}

/// Collects events in memory (tests, and the suites' assertions).
#[derive(Clone, Default)]
pub struct Collector {
    /// Everything received.
    pub events: Arc<Mutex<Vec<Event>>>,
}

impl Reporter for Collector {
    fn on_event(&mut self, event: &Event) {
        if let Ok(mut v) = self.events.lock() {
            v.push(event.clone());
        }
    }

    fn finish(&mut self) -> Result<(), ReportError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::StepId;

    #[test]
    fn no_reporter_sees_a_secret_whatever_a_step_put_in_its_text() {
        let c = Collector::default();
        let seen = c.events.clone();
        let bus = EventBus::new(vec![Box::new(c)]);
        bus.emit(Event::StepLog {
            id: StepId("remote-secret/a".into()),
            message: "istioctl create-remote-secret --token=sekrit-value".into(),
        });
        bus.emit(Event::StepFinished {
            id: StepId("x".into()),
            title: "x".into(),
            class: crate::plan::StepClass::Mesh,
            outcome: Outcome::Failed {
                kind: FailureKind::Infrastructure,
                message: "apply failed: {\"token\":\"sekrit-value\"}".into(),
                command: Some("curl -H 'Authorization: Bearer sekrit-value'".into()),
                output_tail: Some(
                    "-----BEGIN PRIVATE KEY-----\nsekrit-value\n-----END PRIVATE KEY-----".into(),
                ),
            },
            duration: std::time::Duration::ZERO,
            attempts: vec![Attempt {
                message: "token: sekrit-value".into(),
                duration: std::time::Duration::ZERO,
            }],
            properties: Default::default(),
        });
        bus.emit(Event::CheckFinished {
            id: StepId("check-traffic/from-cluster1".into()),
            record: crate::verify::CheckRecord {
                verdict: crate::verify::SourceVerdict {
                    from: crate::scenario::ClusterName::new("cluster1"),
                    requests: 2,
                    counts: Default::default(),
                    instances: Default::default(),
                    errors: [("curl exit 7: Bearer sekrit-value".to_string(), 2)].into(),
                    p_value: None,
                    problems: vec!["2 requests failed: token: sekrit-value".into()],
                },
                convergence: crate::verify::Convergence {
                    converged: false,
                    attempts: 1,
                    seconds: 0.1,
                    first_cross_cluster_seconds: None,
                },
            },
        });
        let events = seen.lock().expect("events");
        let text = format!("{events:?}");
        assert_eq!(events.len(), 3);
        assert!(!text.contains("sekrit-value"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}
