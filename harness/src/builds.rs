//! Istio builds side by side (`--istio NAME`): which istioctl, istiod, charts and images one named build is, read
//! from what `tools/build.sh` and `tools/images.sh` wrote, and checked to agree before anything is created, so a run
//! never drives one build's istioctl against another build's images.

use std::path::{Path, PathBuf};

use crate::tools::Cmd;

/// Picking a build failed: bad input (exit 2), nothing was created.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No build has that name.
    #[error(
        "no Istio build named '{name}' (built here: {known}); tools/istio-builds.env lists the builds and \
         `make tools` builds them"
    )]
    Unknown {
        /// The name asked for.
        name: String,
        /// The builds found.
        known: String,
    },
    /// The build's istioctl does not report the build's version.
    #[error(
        "the Istio build '{name}' should be {label}, but {istioctl} reports {reported:?}: its tools are stale or \
         mixed up; rebuild them with `make tools`"
    )]
    Mismatch {
        /// Build name.
        name: String,
        /// Expected version label.
        label: String,
        /// The istioctl run.
        istioctl: String,
        /// What it printed.
        reported: String,
    },
    /// The build's istioctl could not run.
    #[error("the Istio build '{name}': {message}")]
    Unusable {
        /// Build name.
        name: String,
        /// What went wrong.
        message: String,
    },
}

/// One Istio build: its tools directory and the version label its istioctl reports and its images carry as tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IstioBuild {
    /// Short name (`1.31-dev`): the label up to its last dot.
    pub name: String,
    /// Version label (`1.31-dev.b01690e6db7d`): istioctl's `client version` and the images' tag.
    pub label: String,
    /// Where it came from (the Go module version).
    pub module: String,
    /// Directory with istioctl, pilot-discovery, `istio-charts/` and `istio-files/`.
    pub dir: PathBuf,
    /// The default build (the top of the tools directory), used when no `--istio` is given.
    pub default: bool,
}

/// `1.31-dev.b01690e6db7d (v0.0.0-…)` → (label, module).
fn parse_line(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    let (label, rest) = line.split_once(' ').unwrap_or((line, ""));
    if label.is_empty() {
        return None;
    }
    let module = rest
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .to_string();
    Some((label.to_string(), module))
}

/// The short name of a label: up to its last dot when what follows is a commit (`1.32-dev.eed52ebb66ad` →
/// `1.32-dev`), else the label itself (`1.31.4`).
pub fn name_of(label: &str) -> String {
    match label.rsplit_once('.') {
        Some((head, tail)) if tail.len() >= 7 && tail.chars().all(|c| c.is_ascii_hexdigit()) => {
            head.to_string()
        }
        _ => label.to_string(),
    }
}

/// Every build in a tools directory: the default (its `VERSIONS` file's `istio=` line) first, then each
/// `istio/<name>/VERSION`, by name.
pub fn catalog(tools_bin: &Path) -> Vec<IstioBuild> {
    let mut out = Vec::new();
    let versions = std::fs::read_to_string(tools_bin.join("VERSIONS")).unwrap_or_default();
    if let Some((label, module)) = versions
        .lines()
        .find_map(|l| l.strip_prefix("istio="))
        .and_then(parse_line)
    {
        out.push(IstioBuild {
            name: name_of(&label),
            label,
            module,
            dir: tools_bin.to_path_buf(),
            default: true,
        });
    }
    let mut extra: Vec<IstioBuild> = std::fs::read_dir(tools_bin.join("istio"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("VERSION")).ok()?;
            let (label, module) = parse_line(&text)?;
            Some(IstioBuild {
                name: e.file_name().to_string_lossy().to_string(),
                label,
                module,
                dir: e.path(),
                default: false,
            })
        })
        .collect();
    extra.sort_by(|a, b| a.name.cmp(&b.name));
    out.extend(extra);
    out
}

/// The build named `name` (its short name or its full label) in `tools_bin`.
pub fn pick(tools_bin: &Path, name: &str) -> Result<IstioBuild, BuildError> {
    let all = catalog(tools_bin);
    all.iter()
        .find(|b| b.name == name || b.label == name)
        .cloned()
        .ok_or_else(|| BuildError::Unknown {
            name: name.to_string(),
            known: if all.is_empty() {
                format!("none in {}", tools_bin.display())
            } else {
                all.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")
            },
        })
}

impl IstioBuild {
    /// A tool or file of this build (`istioctl`, `pilot-discovery`, `istio-charts`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The build's istioctl, once [`IstioBuild::verify`] proved it reports this build.
    pub async fn verified_istioctl(&self) -> Result<crate::tools::Istioctl, BuildError> {
        self.verify().await?;
        Ok(crate::tools::Istioctl {
            bin: self.path("istioctl"),
            source: crate::tools::IstioctlSource::RehearsalTools,
        })
    }

    /// Runs the build's `istioctl version --remote=false` and requires it to report this build's label.
    pub async fn verify(&self) -> Result<(), BuildError> {
        let bin = self.path("istioctl");
        let out = Cmd::new(&bin)
            .args(["version", "--remote=false"])
            .timeout(std::time::Duration::from_secs(30))
            .run()
            .await
            .map_err(|e| BuildError::Unusable {
                name: self.name.clone(),
                message: e.to_string(),
            })?;
        let reported = out.stdout.trim().to_string();
        if reported.split_whitespace().any(|w| w == self.label) {
            Ok(())
        } else {
            Err(BuildError::Mismatch {
                name: self.name.clone(),
                label: self.label.clone(),
                istioctl: bin.display().to_string(),
                reported,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(default: &str, extra: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("VERSIONS"),
            format!("k8s=v1.35.4\nistio={default}\nhelm=v4\n"),
        )
        .unwrap();
        for (name, line) in extra {
            let b = d.path().join("istio").join(name);
            std::fs::create_dir_all(&b).unwrap();
            std::fs::write(b.join("VERSION"), line).unwrap();
        }
        d
    }

    #[test]
    fn the_catalog_lists_the_default_first_then_each_extra_build() {
        let d = tools(
            "1.32-dev.eed52ebb66ad (v0.0.0-20260827124520-eed52ebb66ad)",
            &[(
                "1.31-dev",
                "1.31-dev.b01690e6db7d (v0.0.0-20260423205519-b01690e6db7d)\n",
            )],
        );
        let all = catalog(d.path());
        let names: Vec<_> = all.iter().map(|b| (b.name.as_str(), b.default)).collect();
        assert_eq!(names, vec![("1.32-dev", true), ("1.31-dev", false)]);
        assert_eq!(all[1].label, "1.31-dev.b01690e6db7d");
        assert_eq!(all[1].module, "v0.0.0-20260423205519-b01690e6db7d");
        assert_eq!(all[0].dir, d.path());
        assert_eq!(all[1].path("istioctl"), d.path().join("istio/1.31-dev/istioctl"));
    }

    #[test]
    fn a_build_is_picked_by_name_or_label_and_an_unknown_one_names_the_known() {
        let d = tools(
            "1.32-dev.eed52ebb66ad (v0)",
            &[("1.31-dev", "1.31-dev.b01690e6db7d (v0)")],
        );
        assert_eq!(pick(d.path(), "1.31-dev").unwrap().label, "1.31-dev.b01690e6db7d");
        assert!(pick(d.path(), "1.32-dev.eed52ebb66ad").unwrap().default);
        let e = pick(d.path(), "1.30").unwrap_err().to_string();
        assert!(e.contains("'1.30'") && e.contains("1.32-dev, 1.31-dev"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(
            pick(empty.path(), "1.31-dev")
                .unwrap_err()
                .to_string()
                .contains("none in")
        );
    }

    #[test]
    fn names_drop_only_a_commit_suffix() {
        assert_eq!(name_of("1.32-dev.eed52ebb66ad"), "1.32-dev");
        assert_eq!(name_of("1.31.4"), "1.31.4");
        assert_eq!(name_of("1.31-dev"), "1.31-dev");
    }

    #[tokio::test]
    async fn verify_requires_istioctl_to_report_the_label() {
        let d = tools("1.32-dev.eed52ebb66ad (v0)", &[]);
        let script = d.path().join("istioctl");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'client version: 1.31-dev.b01690e6db7d'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let b = pick(d.path(), "1.32-dev").unwrap();
        let e = b.verify().await.unwrap_err().to_string();
        assert!(
            e.contains("should be 1.32-dev.eed52ebb66ad") && e.contains("1.31-dev.b01690e6db7d"),
            "{e}"
        );
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'client version: 1.32-dev.eed52ebb66ad'\n",
        )
        .unwrap();
        b.verify().await.unwrap();
    }
}
