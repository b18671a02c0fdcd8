//! State shared by the steps of one run: cluster access, runtime facts (addresses, timestamps), the shared root.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::RunOptions;
use crate::kube::KubeError;
use crate::mesh::{SharedRoot, Variant};
use crate::plan::{Plan, PlannedCluster, StepId};
use crate::provider::{ClusterAccess, ClusterProvider, ProviderError};
pub use crate::report::ActionRecord;
use crate::report::{Event, EventBus, FailureKind};
use crate::scenario::ClusterName;
use crate::tools::{Istioctl, ToolError};

/// Why a step failed, classified.
#[derive(Debug, Clone)]
pub struct StepError {
    /// Conformance or infrastructure.
    pub kind: FailureKind,
    /// One-line message.
    pub message: String,
    /// Command, if one failed.
    pub command: Option<String>,
    /// Output tail.
    pub output_tail: Option<String>,
    /// Measurements to report even on failure.
    pub properties: BTreeMap<String, String>,
}

impl StepError {
    /// An infrastructure error.
    pub fn infra(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Infrastructure,
            message: message.into(),
            command: None,
            output_tail: None,
            properties: BTreeMap::new(),
        }
    }

    /// A conformance failure.
    pub fn conformance(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Conformance,
            ..Self::infra(message)
        }
    }
}

impl From<ToolError> for StepError {
    fn from(e: ToolError) -> Self {
        let (command, output_tail) = e.command_and_tail();
        Self {
            command,
            output_tail,
            ..Self::infra(e.to_string())
        }
    }
}

impl From<KubeError> for StepError {
    fn from(e: KubeError) -> Self {
        // A state that can never become the wanted one is the mesh's doing (e.g. no sidecar injected); every
        // other error of the kube layer (API, transport, timeout) is infrastructure.
        if e.is_conformance() {
            Self::conformance(e.to_string())
        } else {
            Self::infra(e.to_string())
        }
    }
}

impl From<ProviderError> for StepError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Tool(t) => t.into(),
            ProviderError::Kube(k) => k.into(),
            other => Self::infra(other.to_string()),
        }
    }
}

/// Emits step log lines as events.
pub struct StepLogger {
    bus: EventBus,
    id: StepId,
}

impl StepLogger {
    /// A logger for step `id` on `bus`.
    pub fn new(bus: EventBus, id: StepId) -> Self {
        Self { bus, id }
    }

    /// Reports an action that ran (the bus redacts it like every event).
    pub fn action(&self, record: ActionRecord) {
        self.bus.emit(Event::ActionFinished {
            id: self.id.clone(),
            record,
        });
    }

    /// Reports a traffic check's record (the bus redacts it like every event).
    pub fn check(&self, record: crate::verify::CheckRecord) {
        self.bus.emit(Event::CheckFinished {
            id: self.id.clone(),
            record,
        });
    }

    /// Logs a line (must not contain secrets).
    pub fn log(&self, message: impl Into<String>) {
        self.bus.emit(Event::StepLog {
            id: self.id.clone(),
            message: message.into(),
        });
    }
}

/// Runtime facts learned by steps.
#[derive(Debug, Default)]
pub struct Facts {
    /// When the last remote secret was applied.
    pub last_secret: Option<Instant>,
    /// Namespaces the run created (not present before), per cluster.
    pub created_namespaces: Vec<(ClusterName, String)>,
    /// What each cluster held before the run (clusters that outlive it).
    pub baseline: BTreeMap<ClusterName, crate::kube::snapshot::Snapshot>,
    /// Every HelloWorld pod seen while live traffic ran, with its cluster (restarts replace pods).
    pub live_attribution: crate::verify::Attribution,
}

/// Everything a step may use.
pub struct RunContext {
    /// The plan's clusters with their roles (for diagnostics).
    pub planned: Vec<PlannedCluster>,
    /// The apps' namespace and the checked Envoy cluster (for diagnostics).
    pub checked: (String, Option<String>),
    /// Guide variant.
    pub variant: Variant,
    /// istioctl of the run's Istio build.
    pub istioctl: Istioctl,
    /// The istioctl of each other build the plan's clusters run (a mixed-version mesh), by build name.
    pub builds: BTreeMap<String, Istioctl>,
    /// Provider.
    pub provider: Arc<dyn ClusterProvider>,
    /// Options.
    pub opts: RunOptions,
    /// Cluster access once created.
    pub clusters: Mutex<BTreeMap<ClusterName, ClusterAccess>>,
    /// Facts.
    pub facts: Mutex<Facts>,
    /// The shared root, generated on first use.
    pub root: tokio::sync::OnceCell<Arc<SharedRoot>>,
}

impl RunContext {
    /// A context for one run.
    pub fn new(
        plan: &Plan,
        istioctl: Istioctl,
        provider: Arc<dyn ClusterProvider>,
        opts: RunOptions,
    ) -> Self {
        Self {
            planned: plan.clusters.clone(),
            checked: plan.checked.clone(),
            variant: plan.variant.clone(),
            istioctl,
            builds: BTreeMap::new(),
            provider,
            opts,
            clusters: Mutex::new(BTreeMap::new()),
            facts: Mutex::new(Facts::default()),
            root: tokio::sync::OnceCell::new(),
        }
    }

    /// The istioctl of `build` (`None`: the run's). A build the session did not resolve is a bug in the plan or
    /// the session, reported as the run's infrastructure error.
    pub fn istioctl_of(&self, build: &Option<String>) -> Result<&Istioctl, StepError> {
        match build {
            None => Ok(&self.istioctl),
            Some(b) => self
                .builds
                .get(b)
                .ok_or_else(|| StepError::infra(format!("no istioctl was resolved for the Istio build {b}"))),
        }
    }

    /// A logger for a step.
    pub fn logger(&self, bus: EventBus, id: StepId) -> StepLogger {
        StepLogger::new(bus, id)
    }

    /// Access to a cluster.
    pub fn cluster(&self, name: &ClusterName) -> Result<ClusterAccess, StepError> {
        self.clusters
            .lock()
            .map_err(|_| StepError::infra("cluster table poisoned"))?
            .get(name)
            .cloned()
            .ok_or_else(|| StepError::infra(format!("cluster {name} was not created")))
    }

    /// All clusters.
    pub fn all_clusters(&self) -> Vec<ClusterAccess> {
        self.clusters
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Updates facts.
    pub fn with_facts<T>(&self, f: impl FnOnce(&mut Facts) -> T) -> T {
        match self.facts.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// The run directory.
    pub fn run_dir(&self) -> std::path::PathBuf {
        self.provider.run_dir()
    }
}
