//! Typed actions: the one value `meshconf plan` renders and the runner executes, so the plan is what runs.
//! Values known only at run time (an address, a pod name) are named [`Placeholder`]s, bound by the action that
//! reads them and filled into every later action of the same step.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::mesh::{InstallOverlay, Variant};
use crate::scenario::{AppVersion, Cluster, ClusterName};

/// A value known only at run time, rendered as the shell variable `${NAME}` in the plan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Placeholder(pub String);

/// A cluster name as a shell variable suffix: `cluster-1` → `CLUSTER_1`.
pub fn upper(c: &ClusterName) -> String {
    c.as_str()
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() {
                ch.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl Placeholder {
    /// The guide's `DISCOVERY_ADDRESS`: the primary's east-west gateway address a remote installs against.
    pub fn discovery_address() -> Self {
        Self(crate::mesh::DISCOVERY_ADDRESS_VAR.into())
    }
    /// The directory of the pinned Istio module's charts (`manifests/charts`), in place of the guide's
    /// `helm repo add istio …`.
    pub fn istio_charts() -> Self {
        Self("ISTIO_CHARTS".into())
    }
    /// The east-west gateway's LoadBalancer address in `c`.
    pub fn eastwest_address(c: &ClusterName) -> Self {
        Self(format!("EASTWEST_IP_{}", upper(c)))
    }
    /// The node address of `c` on the kind network.
    pub fn node_ip(c: &ClusterName) -> Self {
        Self(format!("NODE_IP_{}", upper(c)))
    }
    /// A HelloWorld pod's IP in `c` (the isolation probe's target).
    pub fn helloworld_ip(c: &ClusterName) -> Self {
        Self(format!("HELLOWORLD_IP_{}", upper(c)))
    }
    /// The client pod (curl/sleep) of `c`.
    pub fn client_pod(c: &ClusterName) -> Self {
        Self(format!("CLIENT_POD_{}", upper(c)))
    }
    /// The namespaces the run created in `c`, deleted by its reset.
    pub fn created_namespaces(c: &ClusterName) -> Self {
        Self(format!("CREATED_NAMESPACES_{}", upper(c)))
    }
    /// The LoadBalancer address range given to `c`.
    pub fn lb_pool(c: &ClusterName) -> Self {
        Self(format!("LB_POOL_{}", upper(c)))
    }
    /// The (kwok) pod the rehearsal's local MetalLB controller stands in for, in `c`.
    pub fn metallb_pod(c: &ClusterName) -> Self {
        Self(format!("METALLB_POD_{}", upper(c)))
    }
    /// `${NAME}`.
    pub fn shell(&self) -> String {
        format!("${{{}}}", self.0)
    }
}

/// Placeholder values bound so far in a step.
pub type Bindings = BTreeMap<Placeholder, String>;

/// Replaces each bound `${NAME}` in `text` by its value; unbound ones stay as they are.
pub fn fill(text: &str, bindings: &Bindings) -> String {
    let mut out = text.to_string();
    for (p, v) in bindings {
        out = out.replace(&p.shell(), v);
    }
    out
}

/// The first `${NAME}` of `text` that `bindings` does not bind, among the placeholders it names.
pub fn unbound<'a>(
    text: &str,
    names: impl IntoIterator<Item = &'a Placeholder>,
    bindings: &Bindings,
) -> Option<Placeholder> {
    names
        .into_iter()
        .find(|p| text.contains(&p.shell()) && !bindings.contains_key(*p))
        .cloned()
}

/// A label selector of one `key=value` pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

impl Label {
    /// `key=value`.
    pub fn new(key: &str, value: &str) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// The label that names a cluster's (or a gateway's) network.
pub const NETWORK_LABEL: &str = "topology.istio.io/network";

/// A manifest by what it is; its text follows from the guide variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "manifest")]
pub enum Manifest {
    /// `samples/helloworld/helloworld.yaml` with the Service and every listed version.
    Helloworld {
        /// Versions the file holds.
        versions: Vec<AppVersion>,
        /// Seconds each container keeps serving once asked to stop (`preStop: sleep`), when the scenario asks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prestop_secs: Option<u32>,
    },
    /// The client sample (`samples/sleep/sleep.yaml` or `samples/curl/curl.yaml`).
    Client,
    /// `samples/multicluster/expose-istiod.yaml`.
    ExposeIstiod,
    /// `samples/multicluster/expose-services.yaml`.
    ExposeServices,
    /// meshconf's traffic generator (no guide has one).
    Loadgen {
        /// The URL every request gets.
        url: String,
        /// New connections per second.
        rate: u32,
        /// Keep-alive connections.
        connections: u32,
    },
}

impl Manifest {
    /// The path the guide names.
    pub fn path(&self, v: &Variant) -> &'static str {
        match self {
            Manifest::Helloworld { .. } => crate::apps::HELLOWORLD_PATH,
            Manifest::Client => crate::apps::client_path(v.client),
            Manifest::ExposeIstiod => "samples/multicluster/expose-istiod.yaml",
            Manifest::ExposeServices => "samples/multicluster/expose-services.yaml",
            Manifest::Loadgen { .. } => crate::apps::LOADGEN_PATH,
        }
    }

    /// The YAML text for `v`.
    pub fn text(&self, v: &Variant) -> String {
        match self {
            Manifest::Helloworld {
                versions,
                prestop_secs,
            } => {
                let vs: Vec<&str> = versions.iter().map(AppVersion::as_str).collect();
                crate::apps::helloworld_yaml_with(v, &vs, *prestop_secs)
            }
            Manifest::Client => crate::apps::client_yaml(v),
            Manifest::ExposeIstiod => crate::mesh::expose_istiod(v.networking_api),
            Manifest::ExposeServices => crate::mesh::expose_services(v.networking_api),
            Manifest::Loadgen {
                url,
                rate,
                connections,
            } => crate::apps::loadgen_yaml(url, *rate, *connections),
        }
    }
}

/// The operator `istioctl install` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "from")]
pub enum OperatorSource {
    /// A file an earlier [`Action::WriteFile`] of the step wrote.
    File,
    /// What a samples script prints (the guide pipes it into istioctl); meshconf writes it to the file.
    Script {
        /// The script as the guide types it.
        script: String,
        /// What it prints for these arguments.
        operator: String,
    },
}

/// What a wait waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "until")]
pub enum Condition {
    /// A new cluster serves pods: the default ServiceAccount exists, kube-proxy and CoreDNS are Ready.
    ApiReady,
    /// A Deployment rolled out.
    Rollout {
        /// Namespace.
        namespace: String,
        /// Deployment name.
        deployment: String,
    },
    /// Pods matching each selector are Running with `containers` Ready containers.
    PodsReady {
        /// Namespace.
        namespace: String,
        /// One selector per workload.
        selectors: Vec<String>,
        /// Ready containers each pod must have (2: app and sidecar).
        containers: usize,
        /// The cluster whose istiod serves these sidecars, watched while waiting (real proxies only).
        control_plane: Option<ClusterName>,
    },
    /// A primary's istiod patched the caBundle of this remote's injection webhooks.
    InjectorPatched {
        /// The primary.
        primary: ClusterName,
    },
}

/// A value a [`Action::Capture`] reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "read")]
pub enum Reading {
    /// A LoadBalancer Service's first ingress IP (never `<pending>`).
    LbAddress {
        /// Namespace.
        namespace: String,
        /// Service.
        service: String,
    },
    /// The name of a Running pod matching a selector.
    PodName {
        /// Namespace.
        namespace: String,
        /// Selector.
        selector: String,
    },
    /// The IP of a Running pod matching a selector.
    PodIp {
        /// Namespace.
        namespace: String,
        /// Selector.
        selector: String,
    },
}

/// How a cluster gets its LoadBalancer address range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "pool")]
pub enum PoolSpec {
    /// `addresses` from the top of the kind network's IPv4 subnet, the `index`-th of `of` disjoint ranges.
    TopOfKindNetwork {
        /// This cluster's range.
        index: usize,
        /// How many ranges.
        of: usize,
        /// Addresses each.
        addresses: u32,
    },
    /// A fixed range (the rehearsal's TEST-NET-1 addresses, never dialled).
    Fixed {
        /// `first-last`.
        range: String,
    },
}

/// What a provider does: typed, so the plan renders it and the provider performs exactly these fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum ProviderAction {
    /// The `kind` Docker network (created when missing) and the rule that counts packets leaving it.
    KindNetwork {
        /// Subnet when created.
        subnet: Ipv4Net,
        /// Bridge name.
        bridge: String,
    },
    /// `kind create cluster`, then a client for it.
    KindCreate {
        /// The scenario cluster.
        cluster: Cluster,
        /// kind's cluster name.
        name: String,
        /// The kind config kind reads (derived in the run directory when meshconf adds patches).
        config: String,
        /// Whether `config` is the scenario's file plus the cgroup v1 patch.
        derived: bool,
        /// The kubeconfig kind writes.
        kubeconfig: String,
        /// The node image.
        image: Option<String>,
    },
    /// `kind load docker-image` of the images built here.
    KindLoadImages {
        /// Cluster.
        cluster: ClusterName,
        /// kind's cluster name.
        name: String,
        /// Images.
        images: Vec<String>,
    },
    /// The in-mesh kubeconfig: kind's internal one, its server rewritten to the node address.
    InMeshKubeconfig {
        /// Cluster.
        cluster: ClusterName,
        /// kind's cluster name.
        name: String,
        /// File in the run directory.
        file: String,
    },
    /// Rehearsal: pods of `from` reach the pods of `to` directly (the two are on one network), what kind's node
    /// routes give. The curl stand-in lets a request reach a pod of another cluster only along such a route.
    RehearsalRoute {
        /// The cluster whose pods send.
        from: ClusterName,
        /// The cluster whose pods they reach.
        to: ClusterName,
    },
    /// A static route on one node to a peer cluster's CIDR, and no masquerading of own pods towards it.
    NodeRoute {
        /// Cluster whose node gets the route.
        on: ClusterName,
        /// That node's container.
        on_node: String,
        /// Destination CIDR.
        destination: Ipv4Net,
        /// The peer.
        via: ClusterName,
        /// The peer's node container.
        via_node: String,
        /// `on`'s pod subnet, kept as source towards `destination`.
        keep_source: Ipv4Net,
    },
    /// MetalLB from its native manifest, Ready, with one address pool.
    MetalLb {
        /// Cluster.
        cluster: ClusterName,
        /// The manifest (path or URL).
        manifest: String,
        /// The pool.
        pool: PoolSpec,
        /// Names of the IPAddressPool and the L2Advertisement.
        names: (String, String),
    },
    /// A kwokctl cluster (binary runtime) with one kwok node, then a client for it.
    KwokCreate {
        /// The scenario cluster.
        cluster: Cluster,
        /// Index (ports and pools derive from it).
        index: usize,
        /// First and last port of its range on 127.0.0.1.
        ports: (u16, u16),
        /// The node's podCIDR.
        pod_cidr: String,
        /// The run directory (kwokctl's configs and kubeconfigs).
        run_dir: String,
    },
    /// A kwokctl cluster of a rehearsal fleet, kept from an earlier run: connected to, its kwok node Ready.
    KwokReuse {
        /// The scenario cluster.
        cluster: Cluster,
        /// Index (ports and pools derive from it).
        index: usize,
        /// First and last port of its range on 127.0.0.1.
        ports: (u16, u16),
        /// The fleet's key.
        fleet: String,
        /// The fleet's directory (kwokctl's configs and kubeconfigs).
        run_dir: String,
    },
    /// MetalLB's manifest, its webhook removed, the real controller as a local process, and the pool.
    RehearsalMetalLb {
        /// Cluster.
        cluster: ClusterName,
        /// The manifest.
        manifest: String,
        /// Metrics and health ports of the local controller.
        ports: (u16, u16),
        /// The pool.
        pool: PoolSpec,
        /// Names of the IPAddressPool and the L2Advertisement.
        names: (String, String),
        /// The run directory (logs, kubeconfigs).
        run_dir: String,
    },
    /// istiod as a local process for a primary, env mirrored from the Deployment istioctl rendered.
    StartIstiod {
        /// Cluster.
        cluster: ClusterName,
        /// The cluster's Istio build when it is not the run's: that build's pilot-discovery.
        build: Option<String>,
        /// The control-plane revision it serves (`istiod-<revision>`), `None` for the default one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<String>,
        /// gRPC (xDS) and HTTPS (webhook) ports.
        ports: (u16, u16),
        /// The run directory.
        run_dir: String,
    },
    /// Stops the local istiod process of a removed control-plane revision (rehearsal).
    StopIstiod {
        /// Cluster.
        cluster: ClusterName,
        /// Its revision.
        revision: String,
    },
    /// Counts the `ACK ERROR` lines (config the sidecars rejected) in the logs of the cluster's istiod pods.
    AckErrors {
        /// Cluster.
        cluster: ClusterName,
    },
    /// A kind cluster of a fleet, kept from an earlier run: connected to, its nodes Ready.
    ReuseCluster {
        /// The scenario cluster.
        cluster: ClusterName,
        /// kind's cluster name.
        name: String,
        /// The fleet's kubeconfig for it.
        kubeconfig: String,
        /// The fleet's key.
        fleet: String,
    },
    /// A context of the user's kubeconfig, connected to (nothing is created).
    Connect {
        /// Cluster.
        cluster: ClusterName,
        /// Context.
        context: String,
    },
}

impl ProviderAction {
    /// The placeholders this action binds when it runs.
    pub fn binds(&self) -> Vec<Placeholder> {
        match self {
            ProviderAction::InMeshKubeconfig { cluster, .. } => vec![Placeholder::node_ip(cluster)],
            ProviderAction::NodeRoute { via, .. } => vec![Placeholder::node_ip(via)],
            ProviderAction::MetalLb { cluster, pool, .. }
            | ProviderAction::RehearsalMetalLb { cluster, pool, .. } => {
                let mut v = Vec::new();
                if matches!(pool, PoolSpec::TopOfKindNetwork { .. }) {
                    v.push(Placeholder::lb_pool(cluster));
                }
                if matches!(self, ProviderAction::RehearsalMetalLb { .. }) {
                    v.push(Placeholder::metallb_pod(cluster));
                }
                v
            }
            _ => Vec::new(),
        }
    }
}

/// The traffic check of one source cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrafficCheck {
    /// Source cluster.
    pub from: ClusterName,
    /// Namespace of the client.
    pub namespace: String,
    /// URL as written in the scenario.
    pub url: String,
    /// Expected versions and the clusters serving each.
    pub expect: BTreeMap<AppVersion, std::collections::BTreeSet<ClusterName>>,
    /// Expected clusters on another network than `from`'s (cluster → network): reached through that network's
    /// east-west gateways, which balance connections rather than requests, so judged as one bucket per network.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub through_gateways: BTreeMap<ClusterName, String>,
    /// Requests in the sample.
    pub requests: u32,
}

/// The live-traffic check of one source cluster's generator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveCheck {
    /// Source cluster.
    pub from: ClusterName,
    /// The generator's namespace.
    pub namespace: String,
    /// Each version and every cluster that must answer it in every phase.
    pub expect: BTreeMap<AppVersion, std::collections::BTreeSet<ClusterName>>,
}

/// A direct request from a client pod in one network to a workload pod in another, which must fail: clusters on
/// different networks have no routes to each other's pods, so every answer across them came through a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IsolationProbe {
    /// Source cluster (its client pod is `CLIENT_POD_<FROM>`).
    pub from: ClusterName,
    /// Its network.
    pub from_network: String,
    /// The cluster whose pod is asked (its IP is `HELLOWORLD_IP_<TO>`).
    pub to: ClusterName,
    /// Its network.
    pub to_network: String,
    /// Namespace of the client.
    pub namespace: String,
    /// The workload's port, as in the checked URL.
    pub port: u16,
    /// The path, as in the checked URL.
    pub path: String,
    /// Seconds curl may try.
    pub timeout_secs: u64,
}

/// Where the client's proxy sends the checked service's requests for each other network: to that network's
/// east-west gateways (`EASTWEST_IP_<C>`, port 15443), never to its pods (`HELLOWORLD_IP_<C>`). Read from the
/// endpoints the client's proxy holds after the traffic check passed: the evidence that the cross-network
/// answers came through a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayPath {
    /// Source cluster (its client pod is `CLIENT_POD_<FROM>`).
    pub from: ClusterName,
    /// Its network.
    pub from_network: String,
    /// Namespace of the client.
    pub namespace: String,
    /// The checked service's Envoy cluster (`outbound|5000||helloworld.sample.svc.cluster.local`).
    pub envoy_cluster: String,
    /// Each other network: the clusters whose east-west gateway serves it, and the clusters whose HelloWorld pod
    /// must not be given directly.
    pub networks: BTreeMap<String, NetworkPeers>,
}

/// The clusters of one network as a [`GatewayPath`] sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetworkPeers {
    /// Clusters with an east-west gateway in this network.
    pub gateways: Vec<ClusterName>,
    /// Clusters whose HelloWorld answers the check.
    pub workloads: Vec<ClusterName>,
}

/// One typed action of a plan step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// A line for the person reading the plan: what meshconf does that the guide leaves to you, and why.
    Note {
        /// Text.
        text: String,
    },
    /// A namespace (created when missing) with labels and annotations.
    Namespace {
        /// Cluster.
        cluster: ClusterName,
        /// Name.
        name: String,
        /// Labels.
        labels: Vec<Label>,
        /// Annotations.
        annotations: Vec<Label>,
    },
    /// A label on a namespace that exists (`kubectl get ns N && kubectl label ns N k=v`, as the guides write it:
    /// nothing is labelled when the namespace is not there).
    LabelNamespace {
        /// Cluster.
        cluster: ClusterName,
        /// Namespace.
        name: String,
        /// The label.
        label: Label,
    },
    /// The `cacerts` Secret in `istio-system`: an intermediate CA for the cluster under the run's shared root.
    CaCerts {
        /// Cluster.
        cluster: ClusterName,
    },
    /// A file in the run directory (a heredoc); `${NAME}`s in the body are filled first.
    WriteFile {
        /// File name.
        file: String,
        /// Body.
        body: String,
    },
    /// `istioctl install -f FILE -y` with the provider's overlay.
    IstioctlInstall {
        /// Cluster.
        cluster: ClusterName,
        /// The Istio build of this cluster when it is not the run's (a mixed-version mesh): that build's istioctl.
        build: Option<String>,
        /// The operator file.
        file: String,
        /// Where the operator comes from.
        source: OperatorSource,
        /// Provider overlay.
        overlay: InstallOverlay,
    },
    /// `helm install RELEASE CHART -n NAMESPACE --set …` of one of the pinned Istio module's charts (the guide's
    /// Helm tab), with the provider's overlay read as chart values.
    HelmInstall {
        /// Cluster.
        cluster: ClusterName,
        /// Release name.
        release: String,
        /// Chart.
        chart: crate::mesh::helm::Chart,
        /// Namespace.
        namespace: String,
        /// The guide's `--set` values.
        sets: Vec<(String, String)>,
        /// Provider overlay (as chart values).
        overlay: InstallOverlay,
    },
    /// `helm uninstall` of the run's releases, in order (a reset on clusters that outlive the run).
    HelmUninstall {
        /// Cluster.
        cluster: ClusterName,
        /// Releases, uninstalled in this order.
        releases: Vec<String>,
        /// Namespace.
        namespace: String,
    },
    /// A manifest applied server-side, optionally only the documents a label selects.
    Apply {
        /// Cluster.
        cluster: ClusterName,
        /// Namespace for namespaced documents without one.
        namespace: Option<String>,
        /// The manifest.
        manifest: Manifest,
        /// Only documents with this label.
        selector: Option<Label>,
    },
    /// `istioctl create-remote-secret` for `from`, applied in `into` (the Secret is never logged).
    RemoteSecret {
        /// Whose API server.
        from: ClusterName,
        /// `from`'s Istio build when it is not the run's: that build's istioctl.
        build: Option<String>,
        /// Which cluster gets access.
        into: ClusterName,
        /// The kubeconfig istioctl reads (the in-mesh view, a file in the run directory), when not the run's own.
        kubeconfig: Option<String>,
    },
    /// A wait with its condition and deadline.
    Wait {
        /// Cluster.
        cluster: ClusterName,
        /// Condition.
        until: Condition,
        /// Deadline in seconds.
        deadline_secs: u64,
    },
    /// Reads a value from a cluster into a placeholder.
    Capture {
        /// Cluster.
        cluster: ClusterName,
        /// What is read.
        reading: Reading,
        /// The placeholder it binds.
        into: Placeholder,
        /// Deadline in seconds.
        deadline_secs: u64,
    },
    /// Records what the cluster holds before the run (namespaces, CRDs, webhooks, ClusterRoles and bindings,
    /// Istio objects), for the clean-state check of a cluster that outlives the run.
    Snapshot {
        /// Cluster.
        cluster: ClusterName,
    },
    /// `istioctl uninstall --purge -y`, or `--revision R -y` for one control-plane revision.
    IstioctlUninstall {
        /// Cluster.
        cluster: ClusterName,
        /// The cluster's Istio build when it is not the run's.
        build: Option<String>,
        /// Only this revision (an upgrade's old control plane); `None`: everything (`--purge`, a reset).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<String>,
    },
    /// Marks a new phase in a traffic generator (every request is counted in the phase it started in), then lets
    /// traffic run `dwell_secs` under it.
    TrafficPhase {
        /// Cluster of the generator.
        cluster: ClusterName,
        /// Its namespace.
        namespace: String,
        /// Phase name (a step keyword).
        phase: String,
        /// Seconds of traffic before the next action.
        dwell_secs: u64,
    },
    /// The workloads of a namespace restarted so the sidecar injector of the namespace's revision injects them
    /// again (the traffic generator excepted), then every pod proved to carry that revision.
    RestartWorkloads {
        /// Cluster.
        cluster: ClusterName,
        /// Namespace.
        namespace: String,
        /// Rolling (each Deployment in turn, waited for) or every pod at once.
        restart: crate::scenario::Restart,
        /// The revision every restarted pod must be injected by (`istio.io/rev` on the pod).
        revision: String,
        /// The cluster whose istiod injects these pods (a remote's primary), where its injector config is read.
        injector: ClusterName,
        /// Deadline in seconds.
        deadline_secs: u64,
    },
    /// Waits until the pods of `selector` are Ready and injected by `revision` with the proxy its injector names
    /// now (the east-west gateway moved to another revision); a pod injected otherwise fails (the mesh's doing).
    WaitInjected {
        /// Cluster.
        cluster: ClusterName,
        /// Namespace.
        namespace: String,
        /// Label selector of the pods.
        selector: String,
        /// The revision they must be injected by.
        revision: String,
        /// Deadline in seconds.
        deadline_secs: u64,
    },
    /// Stops a traffic generator and judges what it counted, phase by phase: no request may fail.
    CheckLiveTraffic(LiveCheck),
    /// Reads the `istio-proxy` image of every pod in the namespace: each must be `build`'s (its tag names the
    /// build), a pod without a sidecar fails too.
    CheckProxies {
        /// Cluster.
        cluster: ClusterName,
        /// Namespace.
        namespace: String,
        /// The build every sidecar must run (`1.31-dev`).
        build: String,
    },
    /// Stops the pods of the namespaces this run created, before anything is uninstalled: their controllers
    /// orphaned, the pods deleted with a 1 s grace and waited for (a pod the uninstall deleted first keeps the
    /// 30 s grace its kubelet started with, and the namespace controller then retries late).
    StopCreatedPods {
        /// Cluster.
        cluster: ClusterName,
        /// How long to wait for the pods to be gone (past it the reset goes on; the namespaces' own deadline
        /// still holds).
        deadline_secs: u64,
    },
    /// Deletes the namespaces this run created in the cluster (never one that was there before) and waits until
    /// they are gone.
    DeleteCreatedNamespaces {
        /// Cluster.
        cluster: ClusterName,
        /// Deadline in seconds.
        deadline_secs: u64,
    },
    /// Takes the snapshot again: anything the first one did not hold is left over, by name (infrastructure).
    CleanState {
        /// Cluster.
        cluster: ClusterName,
    },
    /// Something only the provider does (create a cluster, route between nodes, MetalLB).
    Provider(ProviderAction),
    /// Repeated curls from one source cluster, judged by `verify`.
    CheckTraffic(TrafficCheck),
    /// The isolation probe of a different-networks run.
    ProbeIsolation(IsolationProbe),
    /// The gateway evidence of a different-networks traffic check.
    CheckGatewayPath(GatewayPath),
}

/// The istioctl of a build as the plan writes it: `istioctl` for the run's build, `istioctl-<build>` for another.
pub fn istioctl_word(build: &Option<String>) -> String {
    match build {
        Some(b) => format!("istioctl-{b}"),
        None => "istioctl".into(),
    }
}

impl Action {
    /// A note.
    pub fn note(text: impl Into<String>) -> Self {
        Action::Note { text: text.into() }
    }

    /// The placeholders this action binds when it runs.
    pub fn binds(&self) -> Vec<Placeholder> {
        match self {
            Action::Capture { into, .. } => vec![into.clone()],
            Action::StopCreatedPods { cluster, .. } | Action::DeleteCreatedNamespaces { cluster, .. } => {
                vec![Placeholder::created_namespaces(cluster)]
            }
            Action::Provider(p) => p.binds(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_replaces_only_bound_placeholders() {
        let mut b = Bindings::new();
        b.insert(Placeholder::discovery_address(), "172.30.255.200".into());
        let t = "remotePilotAddress: ${DISCOVERY_ADDRESS} via ${NODE_IP_CLUSTER1}";
        assert_eq!(
            fill(t, &b),
            "remotePilotAddress: 172.30.255.200 via ${NODE_IP_CLUSTER1}"
        );
        let n = Placeholder::node_ip(&ClusterName::new("cluster1"));
        assert_eq!(unbound(t, [&n], &b), Some(n.clone()));
        b.insert(n.clone(), "172.30.0.2".into());
        assert_eq!(unbound(t, [&n], &b), None);
    }
}
