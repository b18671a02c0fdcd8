//! Scenario errors: each names the file, line and column, says what is wrong and what to do.

use std::fmt;
use std::path::{Path, PathBuf};

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde_saphyr::Location;

/// One problem in a scenario (or in a kind config it references).
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{}:{line}:{column}: {message}", file.display())]
#[diagnostic(code(meshconf::scenario))]
pub struct ScenarioError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line (0 when the position is unknown, e.g. an unreadable file).
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[help]
    pub hint: Option<String>,
    #[source_code]
    src: NamedSource<String>,
    #[label("here")]
    span: Option<SourceSpan>,
}

impl ScenarioError {
    /// An error at a known position of `source`.
    pub fn at(
        file: &Path,
        source: &str,
        line: u64,
        column: u64,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        let span = offset_of(source, line, column).map(|o| SourceSpan::from((o, 1)));
        Self {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint,
            src: NamedSource::new(file.display().to_string(), source.to_string()),
            span,
        }
    }

    /// An error at a serde-saphyr location.
    pub fn at_location(
        file: &Path,
        source: &str,
        loc: &Location,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        Self::at(file, source, loc.line(), loc.column(), message, hint)
    }

    /// An error about a whole file (unreadable, empty).
    pub fn whole_file(file: &Path, message: impl Into<String>, hint: Option<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
            message: message.into(),
            hint,
            src: NamedSource::new(file.display().to_string(), String::new()),
            span: None,
        }
    }
}

fn offset_of(source: &str, line: u64, column: u64) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let mut offset = 0usize;
    for (i, l) in source.split_inclusive('\n').enumerate() {
        if (i as u64) + 1 == line {
            let col_bytes: usize = l
                .chars()
                .take(column.saturating_sub(1) as usize)
                .map(char::len_utf8)
                .sum();
            return Some((offset + col_bytes).min(source.len().saturating_sub(1)));
        }
        offset += l.len();
    }
    None
}

/// All problems found in one scenario; validation reports every one, not just the first.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[diagnostic(code(meshconf::scenario::invalid))]
pub struct ScenarioErrors {
    /// The individual problems, in file order.
    #[related]
    pub errors: Vec<ScenarioError>,
}

impl fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "{n} problem{} in scenario", if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
            if let Some(h) = &e.hint {
                write!(f, "\n    hint: {h}")?;
            }
        }
        Ok(())
    }
}

impl From<ScenarioError> for ScenarioErrors {
    fn from(e: ScenarioError) -> Self {
        Self { errors: vec![e] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_counts_characters_not_bytes() {
        let src = "a: é\nbb: x\n";
        assert_eq!(offset_of(src, 2, 1), Some(6));
        assert_eq!(offset_of(src, 1, 4), Some(3));
        assert_eq!(offset_of(src, 9, 1), None);
    }

    #[test]
    fn display_names_file_line_and_column() {
        let e = ScenarioError::at(
            Path::new("s.yaml"),
            "x: 1\n",
            1,
            4,
            "bad value",
            Some("fix it".into()),
        );
        assert_eq!(e.to_string(), "s.yaml:1:4: bad value");
    }
}
