//! `meshconf doctor`: each prerequisite as pass or fail, with what to do.

use std::time::Duration;

use crate::provider::ToolsBin;
use crate::tools::{Cmd, Istioctl, which};

/// One prerequisite check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Passed?
    pub ok: bool,
    /// What was found, or what to do.
    pub detail: String,
}

fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

/// inotify limits kind needs for several clusters (kind's known-issues page).
pub fn inotify_check(instances: Option<u64>, watches: Option<u64>) -> Check {
    match (instances, watches) {
        (Some(i), Some(w)) if i >= 512 && w >= 524_288 => check(
            "inotify limits",
            true,
            format!("max_user_instances={i}, max_user_watches={w}"),
        ),
        (Some(i), Some(w)) => check(
            "inotify limits",
            false,
            format!(
                "max_user_instances={i}, max_user_watches={w}: kind clusters may fail to start; run \
             `sudo sysctl fs.inotify.max_user_instances=512 fs.inotify.max_user_watches=524288`"
            ),
        ),
        _ => check(
            "inotify limits",
            false,
            "cannot read /proc/sys/fs/inotify (not Linux?)",
        ),
    }
}

fn read_u64(p: &str) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Runs every check.
pub async fn run() -> Vec<Check> {
    let mut out = Vec::new();
    match which("docker") {
        None => out.push(check(
            "docker CLI",
            false,
            "not on PATH: install Docker (needed by the kind provider)",
        )),
        Some(p) => {
            out.push(check("docker CLI", true, p.display().to_string()));
            match Cmd::new("docker")
                .args(["info", "--format", "{{.ServerVersion}}"])
                .timeout(Duration::from_secs(10))
                .run()
                .await
            {
                Ok(o) => out.push(check(
                    "Docker engine",
                    true,
                    format!("server {}", o.stdout.trim()),
                )),
                Err(e) => out.push(check(
                    "Docker engine",
                    false,
                    format!("no engine answers ({e}); start Docker, or use --provider kwok for a rehearsal"),
                )),
            }
        }
    }
    match crate::provider::kind_version().await {
        Some(v) => out.push(check("kind", true, v)),
        None => out.push(check(
            "kind",
            false,
            "not on PATH: go install sigs.k8s.io/kind@v0.32.0",
        )),
    }
    match Istioctl::from_path() {
        Ok(i) => match i.version().await {
            Ok(v) => out.push(check("istioctl", true, format!("{} ({})", v, i.bin.display()))),
            Err(e) => out.push(check("istioctl", false, format!("{}: {e}", i.bin.display()))),
        },
        Err(_) => out.push(check(
            "istioctl",
            false,
            "not on PATH: install it, or run with --istio-version X.Y.Z to download one",
        )),
    }
    out.push(inotify_check(
        read_u64("/proc/sys/fs/inotify/max_user_instances"),
        read_u64("/proc/sys/fs/inotify/max_user_watches"),
    ));
    match ToolsBin::locate() {
        Ok(t) => out.push(check(
            "rehearsal tools (kwok provider)",
            true,
            format!(
                "{} [{}]",
                t.dir.display(),
                t.versions()
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        Err(e) => out.push(check("rehearsal tools (kwok provider)", false, e.to_string())),
    }
    out
}

/// Renders checks as `PASS`/`FAIL` lines.
pub fn render(checks: &[Check]) -> String {
    checks
        .iter()
        .map(|c| {
            format!(
                "{} {:<34} {}",
                if c.ok { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inotify_thresholds() {
        assert!(inotify_check(Some(8192), Some(1_048_576)).ok);
        let low = inotify_check(Some(128), Some(8192));
        assert!(!low.ok && low.detail.contains("sysctl"));
        assert!(!inotify_check(None, None).ok);
    }

    #[test]
    fn render_marks_each_line() {
        let s = render(&[check("a", true, "x"), check("b", false, "do y")]);
        assert!(s.starts_with("PASS a") && s.contains("\nFAIL b"));
    }
}
