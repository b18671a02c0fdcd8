//! Plan versus transcript: a run's `<name>.sh` must hold exactly the plan's lines, step by step (commands and the
//! comments that state deadlines and waits), with each step's placeholders filled by the values its `# bound:`
//! lines record — nothing more, nothing less.

use super::action::{Bindings, Placeholder, fill};

/// One step's commands (non-comment, non-blank lines) and the bindings its transcript records.
#[derive(Debug, Default, PartialEq)]
struct Section {
    id: String,
    commands: Vec<String>,
    bound: Bindings,
}

/// Splits a rendered plan or transcript at its `# [id] title` headers; the lines before the first header are the
/// preamble (id ""), and a `# ── cleanup` line ends the last step (cleanup is the provider's, reported apart).
fn sections(text: &str) -> Vec<Section> {
    let mut out = vec![Section::default()];
    for line in text.lines() {
        if line.starts_with("# ── cleanup") {
            break;
        }
        if let Some(rest) = line.strip_prefix("# [") {
            let id = rest.split(']').next().unwrap_or_default().to_string();
            out.push(Section {
                id,
                ..Section::default()
            });
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        if let Some(b) = line.strip_prefix("# bound: ") {
            if let Some((k, v)) = b.split_once('=') {
                cur.bound.insert(Placeholder(k.to_string()), v.to_string());
            }
            continue;
        }
        // Within a step every line counts, its comments too (they carry deadlines and what meshconf waits
        // for); the transcript's own annotations and the plan's stage headers do not.
        let comment = line.trim_start().starts_with('#');
        if line.trim().is_empty()
            || (comment && (cur.id.is_empty() || line.starts_with("# ── ") || transcript_only(line)))
        {
            continue;
        }
        cur.commands.push(line.to_string());
    }
    out
}

/// The comments only a transcript writes: what happened, not what was planned.
fn transcript_only(line: &str) -> bool {
    ["# failed: ", "# (ran ", "# step failed", "# skipped: "]
        .iter()
        .any(|p| line.starts_with(p))
}

/// `Ok` when `transcript` runs exactly the commands of `plan`, step by step in plan order, with each step's
/// placeholders filled from the transcript's `# bound:` values; else every difference, one per line.
pub fn compare_transcript(plan: &str, transcript: &str) -> Result<(), String> {
    let want = sections(plan);
    let have = sections(transcript);
    let mut diffs = Vec::new();
    let ids = |s: &[Section]| s.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
    if ids(&want) != ids(&have) {
        diffs.push(format!(
            "steps differ: plan {:?}, transcript {:?}",
            ids(&want),
            ids(&have)
        ));
    }
    for w in &want {
        let Some(h) = have.iter().find(|h| h.id == w.id) else {
            continue;
        };
        let filled: Vec<String> = w.commands.iter().map(|c| fill(c, &h.bound)).collect();
        if filled != h.commands {
            let step = if w.id.is_empty() { "preamble" } else { &w.id };
            for (i, (a, b)) in filled.iter().zip(&h.commands).enumerate() {
                if a != b {
                    diffs.push(format!("[{step}] line {}: plan `{a}`, transcript `{b}`", i + 1));
                    break;
                }
            }
            if filled.len() != h.commands.len() {
                diffs.push(format!(
                    "[{step}] plan has {} commands, transcript {}",
                    filled.len(),
                    h.commands.len()
                ));
            }
        }
        if let Some(p) = filled.iter().find_map(|c| unfilled(c)) {
            diffs.push(format!(
                "[{}] placeholder {p} has no bound value in the transcript",
                w.id
            ));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n"))
    }
}

/// A `${NAME}` that is a run-time placeholder (not a `${CTX_…}` context variable the script itself exports).
fn unfilled(line: &str) -> Option<String> {
    let mut rest = line;
    while let Some(at) = rest.find("${") {
        let name: String = rest[at + 2..].chars().take_while(|c| *c != '}').collect();
        if !name.starts_with("CTX_") {
            return Some(name);
        }
        rest = &rest[at + 2..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "# meshconf plan\nexport CTX_CLUSTER1=kwok-cluster1\n\n# ── stage 1\n\n# [a] A\n\
                        export IP=$(kubectl get svc)\ncat <<EOF > f.yaml\naddress: ${IP}\nEOF\n\n# [b] B\n\
                        kubectl exec --context=\"${CTX_CLUSTER1}\" \"${POD}\"\n\n# ── cleanup\nkind delete cluster\n";
    const RAN: &str = "# meshconf transcript\nexport CTX_CLUSTER1=kwok-cluster1\n\n# [a] A\n\
                       export IP=$(kubectl get svc)\n# bound: IP=1.2.3.4\ncat <<EOF > f.yaml\naddress: 1.2.3.4\nEOF\n\n\
                       # [b] B\n# bound: POD=curl-1\nkubectl exec --context=\"${CTX_CLUSTER1}\" \"curl-1\"\n\n\
                       # ── cleanup (complete): deleted\n";

    #[test]
    fn a_transcript_that_ran_the_plan_matches() {
        assert_eq!(compare_transcript(PLAN, RAN), Ok(()));
    }

    #[test]
    fn an_extra_a_missing_or_a_changed_command_does_not() {
        let extra = RAN.replace("# [b] B\n", "# [b] B\nrm -rf /tmp/x\n");
        assert!(compare_transcript(PLAN, &extra).is_err_and(|e| e.contains("[b]")));
        let missing = RAN.replace("EOF\n\n", "\n\n");
        assert!(compare_transcript(PLAN, &missing).is_err_and(|e| e.contains("[a]")));
        let changed = RAN.replace("address: 1.2.3.4", "address: 5.6.7.8");
        assert!(compare_transcript(PLAN, &changed).is_err_and(|e| e.contains("5.6.7.8")));
        let skipped = RAN.split("# [b]").next().unwrap_or_default().to_string();
        assert!(compare_transcript(PLAN, &skipped).is_err_and(|e| e.contains("steps differ")));
    }

    #[test]
    fn a_changed_deadline_in_a_comment_is_a_difference() {
        let plan = PLAN.replace("# [b] B\n", "# [b] B\n# meshconf waits (deadline 300s)\n");
        let ran = RAN.replace("# [b] B\n", "# [b] B\n# meshconf waits (deadline 299s)\n");
        assert!(compare_transcript(&plan, &ran).is_err_and(|e| e.contains("299s")));
        let same = RAN.replace(
            "# [b] B\n",
            "# [b] B\n# meshconf waits (deadline 300s)\n# failed: x\n",
        );
        assert_eq!(compare_transcript(&plan, &same), Ok(()));
    }

    /// The plan's section headers (stages, the reset) are the plan's layout, not a step's lines.
    #[test]
    fn a_reset_section_header_is_not_a_line_of_the_step_before_it() {
        let plan = PLAN.replace(
            "\n\n# ── cleanup",
            "\n\n# ── reset (always)\n\n# [r] R\nistioctl uninstall\n\n# ── cleanup",
        );
        let ran = RAN.replace(
            "\n\n# ── cleanup",
            "\n\n# [r] R\nistioctl uninstall\n\n# ── cleanup",
        );
        assert_eq!(compare_transcript(&plan, &ran), Ok(()));
    }

    #[test]
    fn a_placeholder_without_a_value_is_named() {
        let unbound = RAN
            .replace("# bound: POD=curl-1\n", "")
            .replace("\"curl-1\"", "\"${POD}\"");
        let e = compare_transcript(PLAN, &unbound).expect_err("unbound");
        assert!(e.contains("placeholder POD"), "{e}");
    }
}
