//! `meshconf doctor`: each prerequisite as pass or fail, with what to do.

use crate::provider::ToolsBin;
use crate::tools::{Istioctl, IstioctlSource, which};

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
            match crate::tools::find_engine(&p).await {
                Ok(None) => out.push(check(
                    "Docker engine",
                    true,
                    "yours (DOCKER_HOST or the default socket)",
                )),
                Ok(Some(h)) => out.push(check("Docker engine", true, format!("meshconf's own at {h}"))),
                Err(e) => out.push(check("Docker engine", false, e)),
            }
        }
    }
    match crate::images::ImageSet::locate() {
        Ok(Some(i)) => out.push(check(
            "kind images built here",
            true,
            format!(
                "node image {}, {} images, Envoy {}",
                i.node_image,
                i.images.len(),
                i.envoy
            ),
        )),
        Ok(None) => out.push(check(
            "kind images built here",
            true,
            "none: the kind provider uses released images (run `make images` where no registry answers)",
        )),
        Err(e) => out.push(check("kind images built here", false, e.to_string())),
    }
    let built = crate::images::ImageSet::locate()
        .ok()
        .flatten()
        .map(|i| i.tools_bin);
    let built_kind = built.as_ref().map(|b| b.join("kind")).filter(|p| p.is_file());
    match crate::provider::kind_version().await {
        Some(v) => out.push(check("kind", true, v)),
        None if built_kind.is_some() => out.push(check(
            "kind",
            true,
            format!(
                "{} (built by make images)",
                built_kind.unwrap_or_default().display()
            ),
        )),
        None => out.push(check(
            "kind",
            false,
            "not on PATH: `make images` builds it, or go install sigs.k8s.io/kind@v0.33.0",
        )),
    }
    let built_istioctl = built.map(|b| Istioctl {
        bin: b.join("istioctl"),
        source: IstioctlSource::RehearsalTools,
    });
    match Istioctl::from_path().or_else(|e| built_istioctl.filter(|i| i.bin.is_file()).ok_or(e)) {
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
