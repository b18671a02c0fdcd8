//! The evidence a failed run keeps: plain, serializable facts about each cluster's mesh state. Secrets appear
//! only as names, the clusters they point at and a content hash, never as content.

use serde::{Deserialize, Serialize};

/// What a cluster is for the mesh (from the scenario's topology, not from its steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterRole {
    /// Runs its own istiod.
    Primary,
    /// Served by the istiod of `primary`.
    Remote,
}

/// A Secret labelled `istio/multiCluster=true` in istio-system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSecretFact {
    /// Secret name.
    pub name: String,
    /// The clusters it gives access to (its data keys, which `create-remote-secret --name` sets).
    pub points_at: Vec<String>,
    /// First 16 hex digits of the sha256 of its data (to compare runs; never the content).
    pub sha256: String,
}

/// A namespace the run touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceFact {
    /// Name.
    pub name: String,
    /// Whether it exists.
    pub exists: bool,
    /// The value of its `istio-injection` label, if any.
    pub injection: Option<String>,
    /// The value of its `istio.io/rev` label (injection by a control-plane revision), if any.
    #[serde(default)]
    pub revision: Option<String>,
    /// The value of its `topology.istio.io/network` label, if any.
    #[serde(default)]
    pub network: Option<String>,
}

/// A pod in a touched namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodFact {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pod IP.
    pub ip: Option<String>,
    /// Phase.
    pub phase: String,
    /// Ready containers.
    pub ready: usize,
    /// Containers in the spec.
    pub containers: usize,
    /// Whether an `istio-proxy` sidecar is among them.
    pub sidecar: bool,
}

/// A Deployment's replica counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaFact {
    /// Desired replicas.
    pub desired: i32,
    /// Ready replicas.
    pub ready: i32,
}

/// A Service and the address it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFact {
    /// Name.
    pub name: String,
    /// Service type.
    pub kind: String,
    /// LoadBalancer ingress address, if any.
    pub address: Option<String>,
}

/// One cluster's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFacts {
    /// Scenario name.
    pub name: String,
    /// Primary or remote.
    pub role: ClusterRole,
    /// For a remote, the primary serving it.
    pub primary: Option<String>,
    /// Whether the topology gives it an east-west gateway (multi-network).
    pub needs_gateway: bool,
    /// The network the scenario puts it on.
    #[serde(default)]
    pub network: String,
    /// Whether istio-system holds a Gateway serving 15443 with `AUTO_PASSTHROUGH` (expose-services.yaml's
    /// `cross-network-gateway`); `None` when it could not be read.
    #[serde(default)]
    pub exposes_services: Option<bool>,
    /// Remote secrets present in istio-system.
    pub remote_secrets: Vec<RemoteSecretFact>,
    /// First 16 hex digits of the sha256 of the root certificate istiod distributes (`istio-ca-root-cert`).
    pub root_sha256: Option<String>,
    /// Touched namespaces.
    pub namespaces: Vec<NamespaceFact>,
    /// Pods in the touched namespaces.
    pub pods: Vec<PodFact>,
    /// The istiod Deployment (primaries), if present.
    pub istiod: Option<ReplicaFact>,
    /// The east-west gateway Service, if present.
    pub eastwest: Option<ServiceFact>,
    /// Recent events in the touched namespaces, newest last, as `namespace/object reason: message`.
    pub events: Vec<String>,
    /// What could not be collected, and why.
    pub unavailable: Vec<String>,
}

/// One endpoint a client's proxy would use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointFact {
    /// Address.
    pub address: String,
    /// Port.
    pub port: u32,
    /// Health as the proxy has it (`HEALTHY`, `UNHEALTHY`, `UNKNOWN` …).
    pub health: String,
    /// The cluster whose pod or gateway owns the address, when known.
    pub cluster: Option<String>,
}

/// istiod's view of the checked service from one client: the endpoints that client's proxy gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    /// The client's cluster.
    pub client_cluster: String,
    /// `pod.namespace` of the client.
    pub client: String,
    /// Envoy cluster name, e.g. `outbound|5000||helloworld.sample.svc.cluster.local`.
    pub envoy_cluster: String,
    /// Where the view came from (`istioctl proxy-config endpoints` or the ADS answer).
    pub source: String,
    /// The endpoints.
    pub endpoints: Vec<EndpointFact>,
    /// Why the view could not be read, if it could not.
    pub error: Option<String>,
}

/// Everything collected about the mesh after a failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshFacts {
    /// Per cluster, in scenario order.
    pub clusters: Vec<ClusterFacts>,
    /// Per client.
    pub views: Vec<EndpointView>,
    /// Processes the provider started that have exited (the rehearsal's out-of-cluster istiod), by name.
    #[serde(default)]
    pub exited: Vec<String>,
}

impl MeshFacts {
    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&ClusterFacts> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The cluster owning `address` (a pod IP or an east-west gateway address).
    pub fn owner_of(&self, address: &str) -> Option<String> {
        self.clusters
            .iter()
            .find(|c| {
                c.pods.iter().any(|p| p.ip.as_deref() == Some(address))
                    || c.eastwest.as_ref().and_then(|s| s.address.as_deref()) == Some(address)
            })
            .map(|c| c.name.clone())
    }

    /// The primary whose istiod serves `cluster` (itself for a primary).
    pub fn control_plane_of(&self, cluster: &str) -> Option<String> {
        let c = self.cluster(cluster)?;
        match c.role {
            ClusterRole::Primary => Some(c.name.clone()),
            ClusterRole::Remote => c.primary.clone(),
        }
    }
}

/// First 16 hex digits of a sha256.
pub fn short_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    base16ct::lower::encode_string(&d)[..16].to_string()
}
