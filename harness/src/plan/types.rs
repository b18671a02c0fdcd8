//! Plan types: everything resolved except runtime facts (addresses, pod names), which steps record as they run.

use std::collections::BTreeMap;

use serde::Serialize;

use super::action::Action;
use crate::mesh::{InstallOverlay, Variant};
use crate::scenario::{ClusterName, NetworkName, Role};

/// Which provider a plan targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, clap::ValueEnum)]
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

/// What a provider contributes to a plan: typed actions and data, so the plan never calls into a provider and
/// the runner performs exactly the actions the plan shows.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderProfile {
    /// Provider kind.
    pub kind: ProviderKind,
    /// Data plane real or computed.
    pub dataplane: DataPlane,
    /// Kube context per scenario cluster.
    pub contexts: BTreeMap<ClusterName, String>,
    /// Host-level actions before any cluster exists (the kind network, the egress rule).
    pub setup: Vec<Action>,
    /// Actions that create (or connect to) each cluster and make it usable.
    pub create: BTreeMap<ClusterName, Vec<Action>>,
    /// Whether clusters may be created at once (kind: yes; kwokctl: one after another).
    pub parallel_create: bool,
    /// Routes between same-network nodes (kind); empty when not needed.
    pub connect: Vec<Action>,
    /// Actions that give a cluster LoadBalancer addresses.
    pub load_balancers: BTreeMap<ClusterName, Vec<Action>>,
    /// The kubeconfig `istioctl create-remote-secret` reads for a cluster (the in-mesh view), when not the run's.
    pub in_mesh_kubeconfig: BTreeMap<ClusterName, String>,
    /// Extra `--set`s per cluster for `istioctl install`.
    pub overlays: BTreeMap<ClusterName, InstallOverlay>,
    /// The same for an install of another build than its cluster's (a canary, an in-place upgrade), by cluster
    /// and build name.
    pub build_overlays: BTreeMap<(ClusterName, String), InstallOverlay>,
    /// Actions right after a primary's `istioctl install` (wait for istiod; rehearsal: start it).
    pub after_install: BTreeMap<ClusterName, Vec<Action>>,
    /// For an install of a control-plane revision, by cluster and revision: its own `--set`s and what follows it,
    /// where they differ from the cluster's (the rehearsal: that revision's istiod process and ports).
    pub revisions: BTreeMap<(ClusterName, String), RevisionProfile>,
    /// Actions at the start of a cluster's reset, while the run's istiod still runs (kind: read its ACK errors).
    pub before_reset: BTreeMap<ClusterName, Vec<Action>>,
    /// Whether the clusters outlive the run (existing clusters): the plan then snapshots them first and resets
    /// them at the end, and a left-over object fails the run.
    pub outlives_run: bool,
    /// What cleanup deletes, as the commands that do it (the provider performs cleanup, also on interrupt).
    pub delete_commands: Vec<String>,
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
            setup: Vec::new(),
            create: BTreeMap::new(),
            parallel_create: true,
            connect: Vec::new(),
            load_balancers: BTreeMap::new(),
            in_mesh_kubeconfig: BTreeMap::new(),
            overlays: BTreeMap::new(),
            build_overlays: BTreeMap::new(),
            after_install: BTreeMap::new(),
            revisions: BTreeMap::new(),
            before_reset: BTreeMap::new(),
            outlives_run: false,
            delete_commands: Vec::new(),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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

/// A step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    /// Unique id.
    pub id: StepId,
    /// Human title (the guide's heading where there is one).
    pub title: String,
    /// How failures are classified.
    pub class: StepClass,
    /// What it does, in order.
    pub actions: Vec<Action>,
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
    /// The clusters with their roles, for diagnostics.
    pub clusters: Vec<PlannedCluster>,
    /// The namespace of the sample apps and the Envoy cluster name of the checked service.
    pub checked: (String, Option<String>),
    /// Stages in order.
    pub stages: Vec<Stage>,
    /// Stages run after the others whatever happened (a reset of clusters that outlive the run).
    pub reset: Vec<Stage>,
}

/// A cluster as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedCluster {
    /// Name.
    pub name: ClusterName,
    /// Primary or remote.
    pub role: Role,
    /// A remote's primary.
    pub primary: Option<ClusterName>,
    /// Network.
    pub network: NetworkName,
    /// Whether the plan installs an east-west gateway in it.
    pub needs_gateway: bool,
}

impl Plan {
    /// All steps in execution order.
    pub fn steps(&self) -> impl Iterator<Item = &PlannedStep> {
        self.stages.iter().chain(&self.reset).flat_map(|s| s.steps.iter())
    }
}

/// What a provider does differently for one control-plane revision of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RevisionProfile {
    /// The install's `--set`s.
    pub overlay: InstallOverlay,
    /// Actions right after its install.
    pub after_install: Vec<Action>,
    /// Actions right after `istioctl uninstall --revision` (the rehearsal: stop its istiod).
    pub after_uninstall: Vec<Action>,
}
