//! Cluster providers: they create and delete clusters, hand out kubeconfigs (host view and in-mesh view), and
//! stand in for components that cannot run as pods. The scenario, plan and step code are the same for all.

mod egress;
mod existing;
mod kind;
mod kwok;
mod metallb;

pub use egress::{EgressCount, EgressRule, packets_of};
pub use existing::ExistingProvider;
pub use kind::{
    DEFAULT_KIND_SUBNET, KindFleet, KindOptions, KindProvider, KindState, STATE_FILE as KIND_STATE_FILE,
    kind_version,
};

pub use kwok::{
    FLEET_STATE_FILE, KwokFleet, KwokFleetState, KwokOptions, KwokProvider, ToolsBin, check_port_base,
    ephemeral_range, read_fleet_state,
};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, ListParams};

use crate::diagnose::EndpointFact;
use crate::kube::{self as k, Applier, KubeError};
use crate::plan::{Placeholder, ProviderAction, ProviderKind, ProviderProfile};
use crate::scenario::{ClusterName, Scenario};
use crate::tools::{Istioctl, ToolError};

/// Provider failures; all are infrastructure errors.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// A prerequisite is missing.
    #[error("{0}")]
    Missing(String),
    /// A tool failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The API failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// Local I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Anything else, with a message naming the object.
    #[error("{0}")]
    Other(String),
}

impl ProviderError {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Access to one cluster of the run.
#[derive(Clone)]
pub struct ClusterAccess {
    /// Scenario name.
    pub name: ClusterName,
    /// Host-view kubeconfig (for meshconf, kube-rs and istioctl).
    pub kubeconfig: PathBuf,
    /// Context in that kubeconfig.
    pub context: String,
    /// The client.
    pub client: kube::Client,
    /// Server-side applier.
    pub applier: Arc<Applier>,
}

/// After the remote install: the primary's istiod (EXTERNAL_ISTIOD) patches the remote's injection webhooks once
/// it reads the remote secret and sees the controlPlaneClusters annotation. Injection depends on it, so wait.
pub async fn wait_injector_patched(
    cluster: &ClusterAccess,
    primary: &ClusterName,
    within: Duration,
) -> Result<Vec<String>, KubeError> {
    // The primary's istiod (EXTERNAL_ISTIOD) patches the remote's injector once it reads the remote secret
    // and sees the controlPlaneClusters annotation: wait for that, as injection depends on it.
    let api: Api<MutatingWebhookConfiguration> = Api::all(cluster.client.clone());
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let l = api
            .list(&ListParams::default())
            .await
            .map_err(|source| k::KubeError::Api {
                what: format!("list mutatingwebhookconfigurations in {}", cluster.name),
                source,
            })?;
        let istio: Vec<_> = l
            .items
            .iter()
            .filter(|m| m.metadata.name.as_deref().is_some_and(|n| n.contains("istio")))
            .collect();
        let patched = !istio.is_empty()
            && istio.iter().all(|m| {
                m.webhooks.iter().flatten().all(|w| {
                    w.client_config
                        .ca_bundle
                        .as_ref()
                        .is_some_and(|b| !b.0.is_empty())
                })
            });
        if patched {
            return Ok(vec![format!(
                "istiod of {} patched the injection webhooks of {}",
                primary, cluster.name
            )]);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(k::KubeError::Timeout {
                what: format!(
                    "the istiod of {} to patch the caBundle of {}'s injection webhooks (does it read {}'s remote secret?)",
                    primary, cluster.name, cluster.name
                ),
                after: within,
                last: Some(format!("{} istio webhook configurations, unpatched", istio.len())),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl ClusterAccess {
    /// Access to `name` through `context` of `kubeconfig`, with an applier on `client`.
    pub fn new(name: ClusterName, kubeconfig: PathBuf, context: String, client: kube::Client) -> Self {
        Self {
            name,
            kubeconfig,
            context,
            applier: Arc::new(Applier::new(client.clone())),
            client,
        }
    }
}

/// What the run created, for cleanup.
#[derive(Debug, Default, Clone)]
pub struct CleanupReport {
    /// Whether everything created is gone.
    pub complete: bool,
    /// Human summary.
    pub message: String,
    /// Facts measured over the whole run, for the reports (e.g. `egress-packets`).
    pub properties: BTreeMap<String, String>,
}

/// What performing a provider action produced.
#[derive(Default)]
pub struct Performed {
    /// A cluster the action created (or connected to).
    pub created: Option<ClusterAccess>,
    /// Placeholders the action read, with their values.
    pub bound: Vec<(Placeholder, String)>,
    /// Progress lines.
    pub log: Vec<String>,
    /// Measurements for the reports.
    pub props: BTreeMap<String, String>,
}

impl Performed {
    /// A cluster created or connected to, with the line that says so.
    pub fn created(access: ClusterAccess, line: String) -> Self {
        Self {
            created: Some(access),
            log: vec![line],
            ..Self::default()
        }
    }

    /// Only progress lines.
    pub fn log(lines: Vec<String>) -> Self {
        Self {
            log: lines,
            ..Self::default()
        }
    }
}

/// A cluster provider. Methods return boxed futures so providers can be chosen at run time.
pub trait ClusterProvider: Send + Sync {
    /// Provider kind.
    fn kind(&self) -> ProviderKind;
    /// What the provider contributes to the plan of a scenario: its typed actions and overlays (pure).
    fn profile(&self, scenario: &Scenario) -> ProviderProfile;
    /// Components that run for real, and those whose behaviour is computed.
    fn parts(&self) -> (Vec<String>, Vec<String>);
    /// Fails fast, naming what is missing, before anything is created. Default: nothing to check.
    fn preflight(&self) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async { Ok(()) })
    }
    /// The istioctl to drive.
    fn istioctl(&self) -> BoxFuture<'_, Result<Istioctl, ProviderError>>;
    /// The istioctl of another Istio build made here (a cluster of a mixed-version scenario runs it), checked to
    /// report that build's version. Default: this provider runs one build only.
    fn istioctl_of_build<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Istioctl, ProviderError>> {
        Box::pin(async move {
            Err(ProviderError::Missing(format!(
                "the {} provider runs one Istio build; a cluster asks for build {name}",
                self.kind().as_str()
            )))
        })
    }
    /// helm and the Istio charts, for the Helm install method; `None` where the provider has none.
    fn helm(&self) -> Option<crate::tools::Helm> {
        None
    }
    /// Performs one of the provider actions of the plan, exactly as its fields say; `clusters` are the run's
    /// clusters created so far.
    fn perform<'a>(
        &'a self,
        action: &'a ProviderAction,
        clusters: &'a BTreeMap<ClusterName, ClusterAccess>,
    ) -> BoxFuture<'a, Result<Performed, ProviderError>>;
    /// Deletes what the run created (never anything else).
    fn cleanup(&self) -> BoxFuture<'_, CleanupReport>;
    /// Run directory holding kubeconfigs, certs and logs.
    fn run_dir(&self) -> PathBuf;
    /// Processes the provider started that have died (checked between steps), with log tails.
    fn dead_processes(&self) -> Vec<String> {
        Vec::new()
    }
    /// Diagnostic files worth attaching on failure (e.g. istiod logs), as `(label, path)`.
    fn diagnostics(&self) -> BTreeMap<String, PathBuf> {
        BTreeMap::new()
    }
    /// Where the data plane is computed there is no proxy to ask: istiod's endpoints for `envoy_cluster` as the
    /// sidecar of `namespace/pod` would get them. `None` where real proxies run (ask them with `istioctl
    /// proxy-config endpoints`).
    fn computed_endpoints<'a>(
        &'a self,
        _cluster: &'a ClusterAccess,
        _namespace: &'a str,
        _pod: &'a str,
        _envoy_cluster: &'a str,
    ) -> Option<BoxFuture<'a, Result<Vec<EndpointFact>, ProviderError>>> {
        None
    }
}
