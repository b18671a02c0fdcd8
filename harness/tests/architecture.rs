//! The direction of flow, held by a test: the top-level modules of `harness/src` import each other without a
//! circle (scenario → plan → runner → events → reporters; diagnostics and validation on the narrow side).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its inline test module (a `#[cfg(test)] mod tests;` line only declares one).
fn non_test_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if l.trim() == "#[cfg(test)]" {
            match lines.peek().map(|n| n.trim()) {
                Some(n) if n.starts_with("mod ") && n.ends_with('{') => break,
                _ => {
                    lines.next();
                    continue;
                }
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Top-level module → the top-level modules its non-test code names as `crate::<module>`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut files = Vec::new();
    rs_files(&root, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&root).expect("under src");
        let first = rel.components().next().expect("component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" || rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read");
        let code = non_test_code(&text);
        let deps = g.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                deps.insert(name);
            }
        }
    }
    g
}

/// A path `from` → … → `to` in `g`, if there is one.
fn path(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(p) = stack.pop() {
        let last = p.last().cloned().unwrap_or_default();
        for next in g.get(&last).into_iter().flatten() {
            let mut q = p.clone();
            q.push(next.clone());
            if next == to {
                return Some(q);
            }
            if seen.insert(next.clone()) {
                stack.push(q);
            }
        }
    }
    None
}

#[test]
fn no_import_circles_between_the_modules_of_harness_src() {
    let g = graph();
    assert!(g.len() > 10, "read too few modules: {g:?}");
    let mut circles = Vec::new();
    for (m, deps) in &g {
        for d in deps {
            if let Some(back) = path(&g, d, m) {
                circles.push(format!("{m} -> {}", back.join(" -> ")));
            }
        }
    }
    assert!(circles.is_empty(), "import circles:\n{}", circles.join("\n"));
}

#[test]
fn diagnostics_know_nothing_of_the_runner_and_validation_reads_no_file() {
    let g = graph();
    for (m, banned) in [
        ("diagnose", "runner"),
        ("diagnose", "provider"),
        ("scenario", "apps"),
    ] {
        assert!(!g[m].contains(banned), "{m} imports {banned}");
    }
    let validate = std::fs::read_to_string(src().join("scenario/validate.rs")).expect("validate.rs");
    let code = validate.split("#[cfg(test)]").next().unwrap_or_default();
    assert!(!code.contains("load::"), "validation calls into loading");
    assert!(!code.contains("std::fs::"), "validation does file I/O");
}

/// The runner is handed a plan, never the scenario: its non-test code names no `Scenario` and no scenario step.
#[test]
fn the_runner_executes_plans_and_never_reads_the_scenario() {
    let mut files = Vec::new();
    rs_files(&src().join("runner"), &mut files);
    assert!(files.len() >= 4, "read too few runner files: {files:?}");
    for f in files.iter().filter(|f| !f.ends_with("tests.rs")) {
        let text = std::fs::read_to_string(f).expect("read");
        let code = non_test_code(&text);
        for banned in ["Scenario", "scenario::Step", "load_file"] {
            assert!(
                !code.contains(banned),
                "{} names {banned}: the runner gets the Plan",
                f.display()
            );
        }
    }
}
