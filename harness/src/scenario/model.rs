//! The validated scenario model: every reference resolved, every name typed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::Serialize;

macro_rules! name_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub(crate) String);

        impl $name {
            /// The name as written in the scenario file.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A cluster's name in the scenario (also its Istio cluster ID).
    ClusterName
);
name_type!(
    /// An Istio network name (`global.network`).
    NetworkName
);
name_type!(
    /// The mesh ID (`global.meshID`).
    MeshId
);
name_type!(
    /// A HelloWorld version (`v1`, `v2`, ...).
    AppVersion
);
name_type!(
    /// A Kubernetes namespace name.
    Namespace
);

impl ClusterName {
    /// Builds a cluster name from trusted code (tests, providers); scenario input goes through validation.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
}

impl AppVersion {
    /// Builds a version from trusted code.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
}

impl Namespace {
    /// Builds a namespace name from trusted code.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
}

/// What a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs its own istiod.
    Primary,
    /// Uses the istiod of a primary cluster.
    Remote,
}

/// How workload certificates are rooted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trust {
    /// One root CA, an intermediate per cluster plugged in as the `cacerts` Secret (before-you-begin guide step).
    SharedRoot,
    /// Each istiod self-signs (enough when only one CA issues certificates, e.g. primary-remote).
    SelfSigned,
}

/// How Istio is installed: the guide's istioctl tab or its Helm tab.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallMethod {
    /// `istioctl install` of an IstioOperator (and `gen-eastwest-gateway.sh | istioctl install`).
    #[default]
    Istioctl,
    /// `helm install` of the `base`, `istiod` and `gateway` charts.
    Helm,
}

impl InstallMethod {
    /// The keyword as written in scenario files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            InstallMethod::Istioctl => "istioctl",
            InstallMethod::Helm => "helm",
        }
    }
}

/// The pod and service address ranges of a cluster, read from its kind config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Subnets {
    /// `networking.podSubnet`.
    pub pods: Ipv4Net,
    /// `networking.serviceSubnet`.
    pub services: Ipv4Net,
}

/// A cluster of the topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    /// Scenario name, also the Istio cluster ID and `--name` of its remote secret.
    pub name: ClusterName,
    /// Primary or remote.
    pub role: Role,
    /// The Istio network the cluster is on.
    pub network: NetworkName,
    /// For a remote: the primary whose istiod serves it.
    pub primary: Option<ClusterName>,
    /// The kind config file (resolved path).
    pub kind_config: PathBuf,
    /// Pod and service CIDRs from the kind config.
    pub subnets: Subnets,
    /// The Istio build this cluster runs when it differs from the run's (`istio: 1.31-dev`): a mixed-version mesh.
    pub istio: Option<String>,
}

/// Options of the `install-istio` step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstallIstio {
    /// The primary cluster to install.
    pub cluster: ClusterName,
    /// `values.global.externalIstiod`: this istiod also serves remote clusters.
    pub external_istiod: bool,
    /// A control-plane revision (`spec.revision`, the canary-upgrade guide): several can run side by side.
    pub revision: Option<String>,
    /// The Istio build this install uses when it is not the cluster's (`istio:`): a canary of another build.
    pub build: Option<String>,
}

/// How `move-workloads` restarts the workloads of a namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// `kubectl rollout restart` of each Deployment, one at a time, each waited for (the guide's way).
    #[default]
    Rolling,
    /// Every pod of the namespace deleted at once: breaks traffic on purpose (the fault a harness must see).
    AllAtOnce,
}

/// Options of the `start-traffic` step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StartTraffic {
    /// Clusters whose client namespace gets a traffic generator.
    pub from: Vec<ClusterName>,
    /// The URL every request gets.
    pub url: String,
    /// New connections per second, one request each.
    pub rate: u32,
    /// Long-lived keep-alive connections.
    pub connections: u32,
}

/// Options of the `deploy-apps` step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployApps {
    /// Namespace for HelloWorld and the curl client (`sample` in the guide).
    pub namespace: Namespace,
    /// Label the namespace `istio-injection=enabled` (the guide does).
    pub injection: bool,
    /// Label it `istio.io/rev=<revision>` instead: the sidecars of that control-plane revision.
    pub revision: Option<String>,
    /// Seconds HelloWorld keeps serving once asked to stop (`preStop: sleep`): a workload that survives a
    /// rolling restart without dropped requests, which the sample itself is not.
    pub graceful_shutdown: Option<u32>,
    /// Which HelloWorld version runs in which cluster.
    pub helloworld: BTreeMap<ClusterName, AppVersion>,
    /// Clusters that get the curl (sleep) client.
    pub client: Vec<ClusterName>,
}

/// Options of the `check-traffic` step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckTraffic {
    /// Source clusters (each runs the check from its curl pod).
    pub from: Vec<ClusterName>,
    /// The URL curl requests, e.g. `http://helloworld.sample:5000/hello`.
    pub url: String,
    /// Each expected version and every cluster it must be answered from (each must answer; none other may).
    pub expect: BTreeMap<AppVersion, BTreeSet<ClusterName>>,
    /// Requests per source cluster; `None` lets the harness size it from the false-failure bound.
    pub requests: Option<u32>,
}

/// One step of the guide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub enum Step {
    /// `istioctl install` of a primary with the generated IstioOperator.
    InstallIstio(InstallIstio),
    /// The cluster's default network: `topology.istio.io/network=<network>` on `istio-system`, before the install
    /// (the different-networks guides).
    SetNetwork { cluster: ClusterName },
    /// The east-west gateway (`gen-eastwest-gateway.sh --network N [--revision R] | istioctl install -y -f -`).
    /// With a revision the gateway connects to that revision's istiod and runs its build's proxy; a second one of
    /// a cluster moves the gateway (one Deployment, rolled) to another revision during a canary upgrade.
    EastwestGateway {
        cluster: ClusterName,
        revision: Option<String>,
    },
    /// `kubectl apply -n istio-system -f expose-services.yaml`: the gateway's 15443 `AUTO_PASSTHROUGH` server, so
    /// other networks reach this cluster's services (the different-networks guides).
    ExposeServices { cluster: ClusterName },
    /// `kubectl apply -n istio-system -f expose-istiod.yaml`.
    ExposeIstiod { cluster: ClusterName },
    /// `istioctl create-remote-secret --context=<from> --name=<from> | kubectl apply --context=<into>`.
    RemoteSecret { from: ClusterName, into: ClusterName },
    /// Configure a remote: namespace + `controlPlaneClusters` annotation, `DISCOVERY_ADDRESS`, remote install.
    InstallRemote {
        cluster: ClusterName,
        primary: ClusterName,
    },
    /// HelloWorld and the curl client, as the verify page deploys them.
    DeployApps(DeployApps),
    /// Repeated curls from each source must reach every expected version in its cluster.
    CheckTraffic(CheckTraffic),
    /// A traffic generator per source cluster, kept running until `check-live-traffic`; every step in between
    /// is a phase it counts apart.
    StartTraffic(StartTraffic),
    /// The namespace moved to another control-plane revision (`istio.io/rev`) in every cluster it was deployed
    /// to, and its workloads restarted so their sidecars are injected by it.
    MoveWorkloads {
        namespace: Namespace,
        revision: String,
        restart: Restart,
    },
    /// The In-place Upgrades guide: the newer build's istioctl applied over the running default control plane
    /// with the same IstioOperator file (`istioctl upgrade -f`); no revision, one istiod rolled over.
    UpgradeIstio { cluster: ClusterName, build: String },
    /// `kubectl rollout restart deployment` in every cluster the namespace was deployed to (or only `clusters`):
    /// the sidecars of the control plane that now serves it (the in-place guide's data-plane step).
    RestartWorkloads {
        namespace: Namespace,
        restart: Restart,
        /// Only these clusters (a mesh midway through an upgrade); empty: every cluster of the namespace.
        clusters: Vec<ClusterName>,
    },
    /// `istioctl uninstall --revision R -y`: the old control plane goes.
    RemoveRevision { cluster: ClusterName, revision: String },
    /// Stops the traffic generators and judges every phase: no request may fail.
    CheckLiveTraffic {
        /// Each version and every cluster it must answer from, in every phase.
        expect: BTreeMap<AppVersion, BTreeSet<ClusterName>>,
    },
    /// Every sidecar of the namespace in each named cluster runs the named build's proxy (read from the pods'
    /// `istio-proxy` image): the proof that a mixed-version mesh is the mix it claims to be.
    CheckProxies {
        namespace: Namespace,
        expect: BTreeMap<ClusterName, String>,
    },
}

impl Step {
    /// The step's kebab-case keyword as written in scenario files.
    pub fn keyword(&self) -> &'static str {
        match self {
            Step::InstallIstio(_) => "install-istio",
            Step::SetNetwork { .. } => "set-network",
            Step::EastwestGateway { .. } => "eastwest-gateway",
            Step::ExposeServices { .. } => "expose-services",
            Step::ExposeIstiod { .. } => "expose-istiod",
            Step::RemoteSecret { .. } => "remote-secret",
            Step::InstallRemote { .. } => "install-remote",
            Step::DeployApps(_) => "deploy-apps",
            Step::CheckTraffic(_) => "check-traffic",
            Step::StartTraffic(_) => "start-traffic",
            Step::MoveWorkloads { .. } => "move-workloads",
            Step::UpgradeIstio { .. } => "upgrade-istio",
            Step::RestartWorkloads { .. } => "restart-workloads",
            Step::RemoveRevision { .. } => "remove-revision",
            Step::CheckLiveTraffic { .. } => "check-live-traffic",
            Step::CheckProxies { .. } => "check-proxies",
        }
    }
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// Scenario name (also the JUnit testsuite name).
    pub name: String,
    /// The istio.io guide it follows.
    pub guide: String,
    /// `global.meshID`.
    pub mesh_id: MeshId,
    /// `mesh.retry-on`: the mesh-wide default HTTP retry conditions (`meshConfig.defaultHttpRetryPolicy.retryOn`)
    /// of every istioctl install; `None` keeps Istio's default.
    pub retry_on: Option<String>,
    /// Certificate trust model.
    pub trust: Trust,
    /// The guide's tab the installs follow (`install-method:`, or `--install-method` on the command line).
    pub install_method: InstallMethod,
    /// Clusters in declaration order.
    pub clusters: Vec<Cluster>,
    /// Guide steps in order.
    pub steps: Vec<Step>,
    /// Where the scenario came from (for messages and reports).
    pub source: PathBuf,
    /// Non-fatal findings of validation.
    pub warnings: Vec<String>,
}

impl Scenario {
    /// Looks a cluster up by name.
    pub fn cluster(&self, name: &ClusterName) -> Option<&Cluster> {
        self.clusters.iter().find(|c| &c.name == name)
    }

    /// The index of a cluster in declaration order (used to derive ports and pools deterministically).
    pub fn cluster_index(&self, name: &ClusterName) -> Option<usize> {
        self.clusters.iter().position(|c| &c.name == name)
    }

    /// Every Istio build the scenario names besides the run's: clusters' `istio:` and installs' own.
    pub fn builds(&self) -> BTreeSet<&str> {
        let installs = self.steps.iter().filter_map(|s| match s {
            Step::InstallIstio(i) => i.build.as_deref(),
            Step::UpgradeIstio { build, .. } => Some(build.as_str()),
            _ => None,
        });
        self.clusters
            .iter()
            .filter_map(|c| c.istio.as_deref())
            .chain(installs)
            .collect()
    }

    /// The build an install runs: its own, else its cluster's (`None`: the run's).
    pub fn build_of_install(&self, i: &InstallIstio) -> Option<String> {
        i.build
            .clone()
            .or_else(|| self.cluster(&i.cluster).and_then(|c| c.istio.clone()))
    }
}
