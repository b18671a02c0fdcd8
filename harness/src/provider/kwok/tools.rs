//! The rehearsal's binaries: the directory `tools/build.sh` fills from the Go module proxy, found by its
//! completion marker, with the versions it pinned.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::super::ProviderError;

/// The directory of binaries built by `tools/build.sh`.
#[derive(Debug, Clone)]
pub struct ToolsBin {
    /// The `bin` directory.
    pub dir: PathBuf,
    /// The Istio build `--istio` picked (its istioctl, pilot-discovery and charts); `None`: the default build at
    /// the top of `dir`.
    pub istio: Option<crate::builds::IstioBuild>,
}

/// What an Istio build owns in a tools directory.
const ISTIO_OWNED: [&str; 5] = [
    "istioctl",
    "pilot-discovery",
    "pilot-agent",
    "istio-charts",
    "istio-files",
];

impl ToolsBin {
    /// `$MESHCONF_TOOLS_BIN`, else the newest complete build under the tools cache.
    pub fn locate() -> Result<Self, ProviderError> {
        if let Ok(d) = std::env::var("MESHCONF_TOOLS_BIN") {
            let dir = PathBuf::from(d);
            if Self::complete_marker(&dir).is_some() {
                return Ok(Self { dir, istio: None });
            }
            return Err(ProviderError::Missing(format!(
                "MESHCONF_TOOLS_BIN={} is not a complete tools build; run `make tools`",
                dir.display()
            )));
        }
        let newest = std::fs::read_dir(crate::tools::tools_cache_dir())
            .ok()
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter_map(|b| Self::complete_marker(&b).map(|m| (b, m)))
            .max_by_key(|(_, m)| m.metadata().and_then(|m| m.modified()).ok())
            .map(|(b, _)| b);
        newest.map(|dir| Self { dir, istio: None }).ok_or_else(|| {
            ProviderError::Missing(
                "rehearsal tools are not built: run `make tools` (tools/build.sh builds etcd, kube-apiserver, kwok, \
                 istioctl, istiod and MetalLB from the Go module proxy)"
                    .into(),
            )
        })
    }

    /// The marker `tools/build.sh` writes when a profile (rehearsal, or kind which includes it) is complete.
    fn complete_marker(dir: &std::path::Path) -> Option<PathBuf> {
        [".complete-kind", ".complete-rehearsal"]
            .iter()
            .map(|m| dir.join(m))
            .find(|m| m.is_file())
    }

    /// These tools with Istio build `name` (bad input when this directory has no such build).
    pub fn with_istio(mut self, name: &str) -> Result<Self, crate::builds::BuildError> {
        self.istio = Some(crate::builds::pick(&self.dir, name)?);
        Ok(self)
    }

    /// Path of a tool (an Istio one from the picked build).
    pub fn path(&self, name: &str) -> PathBuf {
        match &self.istio {
            Some(b) if ISTIO_OWNED.contains(&name) => b.path(name),
            _ => self.dir.join(name),
        }
    }

    /// The directory of the Istio build in use.
    pub fn istio_dir(&self) -> &std::path::Path {
        self.istio.as_ref().map(|b| b.dir.as_path()).unwrap_or(&self.dir)
    }

    /// The pinned versions, one `name=version` per line (`istio` is the picked build's).
    pub fn versions(&self) -> BTreeMap<String, String> {
        let mut v: BTreeMap<String, String> = std::fs::read_to_string(self.dir.join("VERSIONS"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect();
        if let Some(b) = &self.istio {
            v.insert("istio".into(), format!("{} ({})", b.label, b.module));
        }
        v
    }
}
