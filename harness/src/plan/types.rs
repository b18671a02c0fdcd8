//! Plan types: everything resolved except runtime facts (addresses, pod names), which steps record as they run.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::mesh::{InstallOverlay, Variant};
use crate::scenario::{AppVersion, ClusterName, Namespace, NetworkName};
use crate::topology::NodeRoute;

/// Which provider a plan targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// kind clusters on Docker with MetalLB: the real conformance run.
    Kind,
    /// Rehearsal: real control planes (kwokctl binary runtime), istiod and MetalLB as local processes.
    Kwok,
    /// Kubeconfig contexts the user already has; nothing is created or deleted.
    Existing,
}

impl ProviderKind {
    /// The name used in reports (`provider=` property).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Kind => "kind",
            ProviderKind::Kwok => "kwok",
            ProviderKind::Existing => "existing",
        }
    }
}

/// Whether traffic crossed a real data plane or was computed from the control plane's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataPlane {
    /// Envoy sidecars really carried the requests.
    Real,
    /// Real Envoy sidecars on clusters meshconf created (kind), with the Envoy version in the reports.
    Envoy,
    /// A stand-in computed each reply from istiod's endpoint view (rehearsal).
    Computed,
}

impl DataPlane {
    /// The name used in reports (`dataplane=` property).
    pub fn as_str(self) -> &'static str {
        match self {
            DataPlane::Real => "real",
            DataPlane::Envoy => "envoy",
            DataPlane::Computed => "computed",
        }
    }
}

/// What a provider contributes to a plan: data only, so the plan never calls into a provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderProfile {
    /// Provider kind.
    pub kind: ProviderKind,
    /// Data plane real or computed.
    pub dataplane: DataPlane,
    /// Kube context per scenario cluster.
    pub contexts: BTreeMap<ClusterName, String>,
    /// Shell commands that create each cluster (empty for `existing`).
    pub create_commands: BTreeMap<ClusterName, Vec<String>>,
    /// Shell commands that give a cluster LoadBalancer addresses.
    pub lb_commands: BTreeMap<ClusterName, Vec<String>>,
    /// Commands that route pod/service CIDRs between same-network nodes (kind); empty when not needed.
    pub network_commands: Vec<String>,
    /// Extra flags for `istioctl create-remote-secret` per source cluster (e.g. kind's `--server`).
    pub remote_secret_flags: BTreeMap<ClusterName, Vec<String>>,
    /// Extra `--set`s per cluster for `istioctl install`.
    pub overlays: BTreeMap<ClusterName, InstallOverlay>,
    /// Commands the provider runs right after a primary's `istioctl install` (rehearsal: start istiod).
    pub after_install: BTreeMap<ClusterName, Vec<String>>,
    /// Commands that delete what the run created.
    pub delete_commands: Vec<String>,
    /// Host-level commands before any cluster exists (the kind network, the egress rule).
    pub setup_commands: Vec<String>,
    /// Facts for the reports' properties (the Envoy version, image sources).
    pub properties: BTreeMap<String, String>,
    /// Deviations from the guide, shown at the top of the plan and in reports.
    pub notes: Vec<String>,
}

impl ProviderProfile {
    /// A profile with nothing but the provider kind and data plane filled in.
    pub fn empty(kind: ProviderKind, dataplane: DataPlane) -> Self {
        Self {
            kind,
            dataplane,
            contexts: BTreeMap::new(),
            create_commands: BTreeMap::new(),
            lb_commands: BTreeMap::new(),
            network_commands: Vec::new(),
            remote_secret_flags: BTreeMap::new(),
            overlays: BTreeMap::new(),
            after_install: BTreeMap::new(),
            delete_commands: Vec::new(),
            setup_commands: Vec::new(),
            properties: BTreeMap::new(),
            notes: Vec::new(),
        }
    }
}

/// Identifies a step uniquely within a plan, e.g. `install-istio/cluster1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StepId(pub String);

impl std::fmt::Display for StepId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of outcome a step failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepClass {
    /// Provisioning: failures are infrastructure errors (JUnit `<error>`).
    Infrastructure,
    /// Mesh installation and app deployment: a failure of the mesh to do what the guide says is a conformance
    /// failure; tool or API errors are still infrastructure.
    Mesh,
    /// A verification check: failures are conformance failures (JUnit `<failure>`).
    Check,
}

/// One typed action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// Create every cluster (in parallel).
    CreateClusters { clusters: Vec<ClusterName> },
    /// Static routes between nodes of clusters on the same network.
    ConnectNetworks { routes: Vec<NodeRoute> },
    /// Give a cluster LoadBalancer addresses (MetalLB).
    LoadBalancers { cluster: ClusterName },
    /// `istio-system` namespace and the `cacerts` Secret from the shared root.
    PlugCaCerts { cluster: ClusterName },
    /// `istioctl install -f <file>` on a primary.
    InstallIstio {
        cluster: ClusterName,
        file: String,
        operator: String,
        overlay: InstallOverlay,
    },
    /// East-west gateway install, then wait for its LoadBalancer address.
    EastwestGateway {
        cluster: ClusterName,
        network: NetworkName,
        file: String,
        operator: String,
        overlay: InstallOverlay,
    },
    /// Apply expose-istiod.yaml in istio-system.
    ExposeIstiod { cluster: ClusterName, manifest: String },
    /// Create a remote secret for `from` and apply it in `into`.
    RemoteSecret { from: ClusterName, into: ClusterName },
    /// Prepare and install a remote cluster from its primary's east-west address.
    InstallRemote {
        cluster: ClusterName,
        primary: ClusterName,
        file: String,
        operator_template: String,
        overlay: InstallOverlay,
    },
    /// Namespace, injection label, HelloWorld Service and versions, client; then wait for pods.
    DeployApps {
        cluster: ClusterName,
        namespace: Namespace,
        injection: bool,
        versions: Vec<AppVersion>,
        client: bool,
    },
    /// Repeated curls from one source cluster.
    CheckTraffic {
        from: ClusterName,
        namespace: Namespace,
        url: String,
        expect: BTreeMap<AppVersion, BTreeSet<ClusterName>>,
        requests: u32,
    },
}

/// A step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    /// Unique id.
    pub id: StepId,
    /// Human title (the guide's heading where there is one).
    pub title: String,
    /// How failures are classified.
    pub class: StepClass,
    /// What to do.
    pub action: Action,
}

/// Steps that may run concurrently; stages run in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// The steps.
    pub steps: Vec<PlannedStep>,
}

/// A complete plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Scenario name.
    pub scenario: String,
    /// The guide followed.
    pub guide: String,
    /// The scenario file the plan was built from (for the reports).
    pub source: String,
    /// Provider data.
    pub provider: ProviderProfile,
    /// The guide variant chosen from the istioctl version.
    pub variant: Variant,
    /// Stages in order.
    pub stages: Vec<Stage>,
}

impl Plan {
    /// All steps in execution order.
    pub fn steps(&self) -> impl Iterator<Item = &PlannedStep> {
        self.stages.iter().flat_map(|s| s.steps.iter())
    }
}
