//! A bounded diagnostics directory: every file written through it counts against one byte budget, and a file
//! that would cross it is cut, saying so in the file and in the index.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Default budget per run (`--diagnostics-budget`).
pub const DEFAULT_BUDGET: u64 = 5 * 1024 * 1024;

/// One file written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredFile {
    /// File name inside the directory.
    pub name: String,
    /// What it holds.
    pub what: String,
    /// Bytes written.
    pub bytes: u64,
    /// Bytes cut to stay within the budget (0 when whole).
    pub cut: u64,
}

/// Writes files under `dir` within `budget` bytes in all.
pub struct Store {
    dir: PathBuf,
    budget: u64,
    used: u64,
    files: Vec<StoredFile>,
}

const CUT_NOTE: &str =
    "\n[meshconf: cut here to stay within the diagnostics budget; raise --diagnostics-budget]\n";

impl Store {
    /// A store writing to `dir` (created, emptied of an earlier run's files).
    pub fn create(dir: &Path, budget: u64) -> std::io::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            budget,
            used: 0,
            files: Vec::new(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `content` as `name`, cutting its end if the budget would be crossed. The newest lines of a log
    /// matter most, so `keep_end` keeps the end instead of the start.
    /// Secrets are redacted before the budget is applied: a cut that starts inside a private key must not show
    /// its body.
    pub fn write(&mut self, name: &str, what: &str, content: &str, keep_end: bool) -> std::io::Result<()> {
        let content = &crate::tools::redact(content);
        let left = self.budget.saturating_sub(self.used);
        let full = content.len() as u64;
        let (text, cut) = if full <= left {
            (content.to_string(), 0)
        } else {
            let room = left.saturating_sub(CUT_NOTE.len() as u64) as usize;
            let kept = if keep_end {
                let mut start = content.len().saturating_sub(room);
                while !content.is_char_boundary(start) {
                    start += 1;
                }
                format!("{}{}", CUT_NOTE.trim_start(), &content[start..])
            } else {
                let mut end = room.min(content.len());
                while !content.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}{CUT_NOTE}", &content[..end])
            };
            let kept = if kept.len() as u64 > left {
                String::new()
            } else {
                kept
            };
            let cut = full.saturating_sub(kept.len() as u64);
            (kept, cut)
        };
        std::fs::write(self.dir.join(name), &text)?;
        self.used += text.len() as u64;
        self.files.push(StoredFile {
            name: name.to_string(),
            what: what.to_string(),
            bytes: text.len() as u64,
            cut,
        });
        Ok(())
    }

    /// Bytes written so far.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The files written, in order.
    pub fn files(&self) -> &[StoredFile] {
        &self.files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_within_budget_are_whole_and_the_rest_is_cut_with_a_note() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::create(&dir.path().join("d"), 300).expect("store");
        s.write("a.txt", "a", &"a".repeat(100), false).expect("write");
        s.write("log.txt", "log", &format!("{}END", "x".repeat(1000)), true)
            .expect("write");
        s.write("late.txt", "late", "more", false).expect("write");
        assert_eq!(s.files()[0].cut, 0);
        let log = std::fs::read_to_string(dir.path().join("d/log.txt")).expect("read");
        assert!(log.ends_with("END"), "a log keeps its newest lines");
        assert!(log.contains("raise --diagnostics-budget"));
        assert!(s.files()[1].cut > 0);
        assert_eq!(s.files()[2].bytes, 0, "nothing left for later files");
        assert!(s.used() <= 300, "used {}", s.used());
    }

    #[test]
    fn a_log_cut_inside_a_private_key_shows_none_of_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::create(&dir.path().join("d"), 200).expect("store");
        let body = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo".repeat(8);
        let log = format!("start\n-----BEGIN EC PRIVATE KEY-----\n{body}\n-----END EC PRIVATE KEY-----\nend");
        s.write("log.txt", "log", &log, true).expect("write");
        let kept = std::fs::read_to_string(dir.path().join("d/log.txt")).expect("read");
        assert!(!kept.contains("QUJD"), "{kept}");
        assert!(kept.ends_with("end"), "{kept}");
    }
}
