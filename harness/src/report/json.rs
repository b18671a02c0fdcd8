//! JSON report: the full event stream, for dashboards that compare nightly runs (convergence times, counts).

use std::path::PathBuf;

use super::events::Event;
use super::{ReportError, Reporter};

/// Writes every event as one JSON document on `finish`.
pub struct JsonReporter {
    path: PathBuf,
    events: Vec<Event>,
}

impl JsonReporter {
    /// A reporter writing to `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            events: Vec::new(),
        }
    }
}

impl Reporter for JsonReporter {
    fn on_event(&mut self, event: &Event) {
        self.events.push(event.clone());
    }

    fn finish(&mut self) -> Result<(), ReportError> {
        let doc = serde_json::json!({ "format": "meshconf-events/v1", "events": self.events });
        let text = serde_json::to_string_pretty(&doc)?;
        super::write_file(&self.path, text)
    }
}
