//! The guides' Helm tab: which chart each install uses, its release name and `--set` values, and how a
//! provider's IstioOperator overlay reads as chart values — so one overlay serves both install methods.

use serde::Serialize;

use super::InstallOverlay;
use crate::scenario::{ClusterName, MeshId, NetworkName};

/// One of the Istio charts the guides install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Chart {
    /// `istio/base`: CRDs and the cluster roles.
    Base,
    /// `istio/istiod` (`manifests/charts/istio-control/istio-discovery`).
    Istiod,
    /// `istio/gateway`.
    Gateway,
}

impl Chart {
    /// The chart's directory under the charts tools/build.sh copies from the Istio module.
    pub fn dir(self) -> &'static str {
        match self {
            Chart::Base => "base",
            Chart::Istiod => "istiod",
            Chart::Gateway => "gateway",
        }
    }

    /// The chart as the guide names it (from `helm repo add istio …`).
    pub fn guide_name(self) -> &'static str {
        match self {
            Chart::Base => "istio/base",
            Chart::Istiod => "istio/istiod",
            Chart::Gateway => "istio/gateway",
        }
    }
}

/// The guide's release names.
pub const BASE_RELEASE: &str = "istio-base";
/// The istiod release.
pub const ISTIOD_RELEASE: &str = "istiod";
/// The east-west gateway release (also its name, so the chart selects `istio: eastwestgateway`).
pub const EASTWEST_RELEASE: &str = "istio-eastwestgateway";

/// What the guide's `helm repo add` line was replaced by.
pub const REPO_ADD: &str =
    "helm repo add istio https://istio-release.storage.googleapis.com/charts && helm repo update";

type Sets = Vec<(String, String)>;

fn set(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// `helm install istiod istio/istiod` of a primary ("Configure clusterN as a primary", Helm tab).
pub fn primary_values(
    mesh: &MeshId,
    cluster: &ClusterName,
    network: &NetworkName,
    external_istiod: bool,
) -> Sets {
    let mut v = vec![
        set("global.meshID", mesh),
        set("global.multiCluster.clusterName", cluster),
        set("global.network", network),
    ];
    if external_istiod {
        v.push(set("global.externalIstiod", true));
    }
    v
}

/// `helm install istio-base istio/base` of a remote: the remote profile (its webhooks call the primary).
pub fn remote_base_values() -> Sets {
    vec![set("profile", "remote")]
}

/// `helm install istiod istio/istiod` of a remote ("Configure cluster2 as a remote", Helm tab);
/// `discovery_address` is the primary's east-west gateway address (`${DISCOVERY_ADDRESS}` in plans).
pub fn remote_values(cluster: &ClusterName, network: &NetworkName, discovery_address: &str) -> Sets {
    vec![
        set("profile", "remote"),
        set("global.multiCluster.clusterName", cluster),
        set("global.network", network),
        set(
            "istiodRemote.injectionPath",
            format!("/inject/cluster/{cluster}/net/{network}"),
        ),
        set("global.configCluster", true),
        set("global.remotePilotAddress", discovery_address),
    ]
}

/// `helm install istio-eastwestgateway istio/gateway` ("Install the east-west gateway", Helm tab).
pub fn gateway_values(network: &NetworkName) -> Sets {
    vec![set("name", EASTWEST_RELEASE), set("networkGateway", network)]
}

/// A provider's IstioOperator overlay as chart values: `hub`/`tag` are `global.hub`/`global.tag`, `values.X` is
/// `X`, and `meshConfig.X` stays as it is (the istiod chart takes `meshConfig`).
pub fn chart_overlay(o: &InstallOverlay) -> InstallOverlay {
    InstallOverlay {
        sets: o
            .sets
            .iter()
            .map(|(k, v)| {
                let k = match k.as_str() {
                    "hub" => "global.hub".to_string(),
                    "tag" => "global.tag".to_string(),
                    other => other.strip_prefix("values.").unwrap_or(other).to_string(),
                };
                (k, v.clone())
            })
            .collect(),
        reason: o.reason.clone(),
    }
}

/// The overlay for the `gateway` chart: its proxy is injected (`image: auto`), so the images come from istiod's
/// values; only the pull policy is the chart's own (`imagePullPolicy`; the injected default is `Always`, which
/// pulls even an image loaded into the node).
pub fn gateway_overlay(o: &InstallOverlay) -> InstallOverlay {
    InstallOverlay {
        sets: o
            .sets
            .iter()
            .filter(|(k, _)| k == "values.global.imagePullPolicy")
            .map(|(_, v)| ("imagePullPolicy".to_string(), v.clone()))
            .collect(),
        reason: o.reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_overlay_reads_as_chart_values() {
        let o = InstallOverlay {
            sets: vec![
                ("hub".into(), "meshconf.local/istio".into()),
                ("tag".into(), "1.32-dev".into()),
                ("values.pilot.env.PILOT_ENABLE_ALPN_FILTER".into(), "false".into()),
                (
                    "meshConfig.defaultConfig.proxyMetadata.CLOUD_PLATFORM".into(),
                    "none".into(),
                ),
            ],
            reason: Some("why".into()),
        };
        let h = chart_overlay(&o);
        assert_eq!(
            h.args(),
            [
                "--set",
                "global.hub=meshconf.local/istio",
                "--set",
                "global.tag=1.32-dev",
                "--set",
                "pilot.env.PILOT_ENABLE_ALPN_FILTER=false",
                "--set",
                "meshConfig.defaultConfig.proxyMetadata.CLOUD_PLATFORM=none"
            ]
        );
        assert_eq!(h.reason.as_deref(), Some("why"));
        assert!(gateway_overlay(&o).sets.is_empty());
        let pull = InstallOverlay {
            sets: vec![("values.global.imagePullPolicy".into(), "IfNotPresent".into())],
            reason: None,
        };
        assert_eq!(
            gateway_overlay(&pull).args(),
            ["--set", "imagePullPolicy=IfNotPresent"]
        );
    }

    #[test]
    fn the_remote_values_are_the_guides() {
        let v = remote_values(
            &ClusterName::new("cluster2"),
            &NetworkName("network2".into()),
            "${DISCOVERY_ADDRESS}",
        );
        assert!(v.contains(&set(
            "istiodRemote.injectionPath",
            "/inject/cluster/cluster2/net/network2"
        )));
        assert!(v.contains(&set("global.remotePilotAddress", "${DISCOVERY_ADDRESS}")));
        assert_eq!(v[0], set("profile", "remote"));
    }
}
