//! What the kind provider changes from a user's laptop, and says so: the cgroup v1 kubelet patch in a derived kind
//! config, the istioctl `--set`s for images built here and upstream Envoy, and the notes plans and reports show.

use std::path::Path;

use super::super::ProviderError;
use super::KindProvider;
use crate::mesh::InstallOverlay;

impl KindProvider {
    /// The run's kind config for a cluster: the scenario's file plus meshconf's overlays, as JSON (kind reads
    /// YAML, of which JSON is a subset).
    pub fn derived_config(&self, user_config: &str, source: &Path) -> Result<String, ProviderError> {
        let mut v: serde_json::Value = serde_saphyr::from_str(user_config).map_err(|e| {
            ProviderError::Other(format!("kind config {}: not valid YAML: {e}", source.display()))
        })?;
        let obj = v.as_object_mut().ok_or_else(|| {
            ProviderError::Other(format!("kind config {}: not a mapping", source.display()))
        })?;
        if self.opts.cgroup_v1 {
            let patches = obj
                .entry("kubeadmConfigPatches")
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let Some(list) = patches.as_array_mut() {
                list.push(serde_json::Value::String(CGROUP_V1_PATCH.into()));
            }
        }
        serde_json::to_string_pretty(&v).map_err(|e| ProviderError::Other(e.to_string()))
    }

    /// The overlays this provider adds, one line each, for plans and reports.
    pub fn overlay_notes(&self) -> Vec<String> {
        let mut n = Vec::new();
        if self.opts.cgroup_v1 {
            n.push(
                "overlay: kubelet failCgroupV1=false (this host runs cgroup v1; kind warns it is deprecated)"
                    .into(),
            );
        }
        if let Some(i) = &self.opts.images {
            n.push(format!(
                "overlay: images built here, no registry (node image {}; sources below)",
                i.node_image
            ));
            n.push(format!(
                "overlay: data plane is upstream Envoy {}, not istio-proxy; Istio filters off: metadata exchange \
                 (PILOT_ENABLE_METADATA_EXCHANGE=false), ALPN filter (PILOT_ENABLE_ALPN_FILTER=false), stats \
                 (values.telemetry.enabled=false)",
                i.envoy
            ));
            n.push(
                "overlay: CLOUD_PLATFORM=none for every proxy (no cloud metadata probes leave the machine)"
                    .into(),
            );
            n.push(format!(
                "overlay: meshconf creates the kind network ({}) and counts packets leaving it (egress-packets, must be 0)",
                self.opts.subnet
            ));
            n.push(
                "overlay: node CNI is ptp + host-local per cluster pod subnet (kindnetd is not built here)"
                    .into(),
            );
        }
        n
    }

    /// The `--set`s of images built here; `build` is a cluster's own Istio build in a mixed-version scenario
    /// (its images' hub and tag), `None` the run's.
    pub(super) fn install_overlay(&self, build: Option<&str>) -> InstallOverlay {
        let Some(i) = &self.opts.images else {
            return InstallOverlay::default();
        };
        let (hub, tag) = build
            .and_then(|b| i.hub_tag(b))
            .unwrap_or((i.istio.hub.as_str(), i.istio.tag.as_str()));
        let sets = [
            ("hub", hub),
            ("tag", tag),
            ("values.global.imagePullPolicy", "IfNotPresent"),
            ("values.pilot.env.PILOT_ENABLE_METADATA_EXCHANGE", "false"),
            ("values.pilot.env.PILOT_ENABLE_ALPN_FILTER", "false"),
            ("values.telemetry.enabled", "false"),
            ("meshConfig.defaultConfig.proxyMetadata.CLOUD_PLATFORM", "none"),
        ];
        InstallOverlay {
            sets: sets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            reason: Some(format!(
                "images built here; upstream Envoy {} lacks Istio's own filters; no cloud metadata probes",
                i.envoy
            )),
        }
    }

    /// Writes the run's kind config for `c` to `path`: the scenario's file plus meshconf's patches.
    pub(super) fn derive_config(
        &self,
        c: &crate::scenario::Cluster,
        path: &Path,
    ) -> Result<(), ProviderError> {
        let text = std::fs::read_to_string(&c.kind_config)
            .map_err(|e| ProviderError::io(format!("read kind config {}", c.kind_config.display()), e))?;
        let derived = self.derived_config(&text, &c.kind_config)?;
        std::fs::write(path, derived).map_err(|e| ProviderError::io(format!("write {}", path.display()), e))
    }
}

pub(super) const CGROUP_V1_PATCH: &str = "kind: KubeletConfiguration\nfailCgroupV1: false\n";
