//! What the curl stand-in needs to know, written by the kwok provider as it starts processes. It names only
//! process facts (kubeconfigs, istiod ports), never anything from the scenario.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One rehearsal cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterState {
    /// Kubeconfig with that cluster as current context.
    pub kubeconfig: PathBuf,
    /// The plaintext xDS address of the istiod process running for this cluster, if one runs.
    pub istiod_xds: Option<String>,
    /// The same for each control-plane revision's istiod (a canary upgrade runs two), by revision.
    #[serde(default)]
    pub istiod_revisions: BTreeMap<String, String>,
    /// Revisions whose istiod was stopped with their control plane: a sidecar they injected reaches no istiod.
    #[serde(default)]
    pub removed_revisions: Vec<String>,
    /// The clusters whose pods this cluster's pods reach directly (the provider's routes: same network).
    #[serde(default)]
    pub routed_to: Vec<String>,
}

impl RehearsalState {
    /// Whether a pod of `from` reaches a pod of `to` without a gateway: the same cluster, or a route.
    pub fn routed(&self, from: &str, to: &str) -> bool {
        from == to
            || self
                .clusters
                .get(from)
                .is_some_and(|c| c.routed_to.iter().any(|t| t == to))
    }
}

/// The whole rehearsal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RehearsalState {
    /// By cluster name (as kwok clusters are named).
    pub clusters: BTreeMap<String, ClusterState>,
    /// Directory for round-robin counters.
    pub rr_dir: PathBuf,
}

impl RehearsalState {
    /// Reads the state file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("bad state file {}: {e}", path.display()))
    }

    /// Writes the state file atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }
}
