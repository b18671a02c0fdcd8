//! `meshconf compare BASELINE CANDIDATE`: two report directories (a build's JSON records each) side by side, so a
//! release engineer sees whether the candidate does everything the baseline did. It reads records only; it
//! never runs anything.

mod diff;
mod record;
mod render;

use std::path::{Path, PathBuf};

pub use diff::{Change, Comparison, NoiseBand, RunRow, RunSide, Side, StepRow, compare};
pub use record::{CheckSummary, FORMAT, RunSummary, StepResult, StepSummary, key_of, read_dir, read_record};
pub use render::{console, html, json, summary};

/// A comparison could not read its input or write its output.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A directory or file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A `.json` file is not JSON.
    #[error("{path}:{line}:{column}: not JSON ({message}); is it a meshconf record (<name>.json)?")]
    Json {
        /// The file.
        path: PathBuf,
        /// Line, 1-based.
        line: usize,
        /// Column, 1-based.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A meshconf record is malformed.
    #[error("{path}: {message}; is the record complete (a run writes it when it ends)?")]
    Record {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A directory holds no record.
    #[error(
        "{dir} holds no meshconf record (<name>.json with format {FORMAT}); pass the --report-dir of a run"
    )]
    Empty {
        /// The directory.
        dir: PathBuf,
    },
    /// The comparison could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The files a comparison writes into its output directory.
pub const JSON_FILE: &str = "comparison.json";
/// The HTML page's name.
pub const HTML_FILE: &str = "comparison.html";

/// Reads both directories, compares, writes `comparison.json` and `comparison.html` into `out`; returns the
/// comparison (the caller prints [`console`] and exits with its status).
pub fn run(
    baseline: &Path,
    candidate: &Path,
    out: &Path,
    band: NoiseBand,
) -> Result<Comparison, CompareError> {
    let b = read_dir(baseline)?;
    let c = read_dir(candidate)?;
    let comparison = compare(baseline.to_path_buf(), &b, candidate.to_path_buf(), &c, band);
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::create_dir_all(out)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|source| CompareError::Write { path, source })
    };
    let text = json(&comparison).map_err(|e| CompareError::Write {
        path: out.join(JSON_FILE),
        source: std::io::Error::other(e),
    })?;
    write(JSON_FILE, text)?;
    write(HTML_FILE, html(&comparison))?;
    Ok(comparison)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STARTED: &str = r#"{"event": "run-started", "scenario": "multi-primary", "guide": "g", "source": "s",
        "provider": "kwok", "dataplane": "computed", "variant": "v", "real": [], "computed": [], "notes": [],
        "properties": {"istio": "BUILD"}, "steps": [], "preamble": []}"#;

    fn write_record(dir: &Path, name: &str, build: &str, outcome: &str, status: &str) {
        let text = format!(
            r#"{{"format": "meshconf-events/v1", "events": [{},
            {{"event": "step-finished", "id": "check-traffic/from-cluster1", "title": "t", "class": "check",
              "outcome": {outcome}, "duration": {{"secs": 1, "nanos": 0}}, "attempts": [], "properties": {{}}}},
            {{"event": "run-finished", "status": "{status}", "duration": {{"secs": 9, "nanos": 0}}}}]}}"#,
            STARTED.replace("BUILD", build)
        );
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join(format!("{name}.json")), text).expect("write");
    }

    #[test]
    fn two_directories_compare_and_the_files_land_in_out() {
        let t = tempfile::tempdir().expect("tempdir");
        let (b, c, out) = (t.path().join("b"), t.path().join("c"), t.path().join("out"));
        write_record(
            &b,
            "multi-primary@1.31-dev",
            "1.31-dev",
            r#"{"status": "passed"}"#,
            "passed",
        );
        write_record(
            &c,
            "multi-primary@1.32-dev",
            "1.32-dev",
            r#"{"status": "failed", "kind": "conformance", "message": "v2 never answered"}"#,
            "conformance-failure",
        );
        // A comparison's own JSON in a directory is passed over, not read as a record.
        std::fs::write(b.join(JSON_FILE), r#"{"format": "meshconf-compare/v1"}"#).expect("write");
        let cmp = run(&b, &c, &out, NoiseBand::default()).expect("compares");
        assert_eq!(cmp.status, crate::ExitStatus::ConformanceFailure);
        assert_eq!(cmp.runs[0].key, "multi-primary");
        assert!(out.join(JSON_FILE).is_file() && out.join(HTML_FILE).is_file());
    }

    #[test]
    fn an_empty_or_missing_directory_is_bad_input_naming_it() {
        let t = tempfile::tempdir().expect("tempdir");
        let e = run(t.path(), t.path(), t.path(), NoiseBand::default()).expect_err("empty");
        assert!(matches!(e, CompareError::Empty { .. }), "{e}");
        let gone = t.path().join("gone");
        let e = run(&gone, t.path(), t.path(), NoiseBand::default()).expect_err("missing");
        assert!(e.to_string().contains("gone"), "{e}");
    }
}
