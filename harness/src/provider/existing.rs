//! The `existing` provider: scenario clusters map to kubeconfig contexts the user names explicitly (e.g. two
//! cloud clusters). Nothing is created or deleted there; LoadBalancers come from the platform.

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::future::BoxFuture;

use super::{CleanupReport, ClusterAccess, ClusterProvider, Performed, ProviderError};
use crate::kube as k;
use crate::plan::{Action, DataPlane, ProviderAction, ProviderKind, ProviderProfile};
use crate::scenario::{ClusterName, Scenario};
use crate::tools::Istioctl;

/// The existing-clusters provider.
pub struct ExistingProvider {
    kubeconfig: PathBuf,
    contexts: BTreeMap<ClusterName, String>,
    run_dir: PathBuf,
    istioctl: Option<Istioctl>,
}

impl ExistingProvider {
    /// Clusters from `kubeconfig` (read only) under the given contexts.
    pub fn new(
        kubeconfig: PathBuf,
        contexts: BTreeMap<ClusterName, String>,
        run_dir: PathBuf,
        istioctl: Option<Istioctl>,
    ) -> Self {
        Self {
            kubeconfig,
            contexts,
            run_dir,
            istioctl,
        }
    }
}

impl ClusterProvider for ExistingProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Existing
    }

    fn profile(&self, scenario: &Scenario) -> ProviderProfile {
        let mut contexts = BTreeMap::new();
        for c in &scenario.clusters {
            contexts.insert(
                c.name.clone(),
                self.contexts
                    .get(&c.name)
                    .cloned()
                    .unwrap_or_else(|| format!("<context for {}>", c.name)),
            );
        }
        let create = contexts
            .iter()
            .map(|(c, context)| {
                (
                    c.clone(),
                    vec![Action::Provider(ProviderAction::Connect {
                        cluster: c.clone(),
                        context: context.clone(),
                    })],
                )
            })
            .collect();
        let after_install = contexts
            .keys()
            .map(|c| (c.clone(), vec![super::kind::istiod_rollout(c)]))
            .collect();
        ProviderProfile {
            contexts,
            create,
            after_install,
            outlives_run: true,
            delete_commands: vec!["# only namespaces this run created are deleted; the clusters stay".into()],
            notes: vec![format!(
                "existing clusters from {} (read only); LoadBalancers come from the platform",
                self.kubeconfig.display()
            )],
            ..ProviderProfile::empty(ProviderKind::Existing, DataPlane::Real)
        }
    }

    fn parts(&self) -> (Vec<String>, Vec<String>) {
        (
            vec![
                "the user's clusters".into(),
                "Istio control and data plane".into(),
            ],
            Vec::new(),
        )
    }

    /// The helm and charts of a tools build named by `MESHCONF_TOOLS_BIN` (`make tools`), for `--install-method
    /// helm` on a user's clusters.
    fn helm(&self) -> Option<crate::tools::Helm> {
        let dir = std::env::var_os("MESHCONF_TOOLS_BIN")?;
        crate::tools::Helm::beside(std::path::Path::new(&dir))
    }

    fn istioctl(&self) -> BoxFuture<'_, Result<Istioctl, ProviderError>> {
        Box::pin(async move {
            match &self.istioctl {
                Some(i) => Ok(i.clone()),
                None => Ok(Istioctl::from_path()?),
            }
        })
    }

    fn perform<'a>(
        &'a self,
        action: &'a ProviderAction,
        _clusters: &'a BTreeMap<ClusterName, ClusterAccess>,
    ) -> BoxFuture<'a, Result<Performed, ProviderError>> {
        Box::pin(async move {
            let ProviderAction::Connect { cluster, context } = action else {
                return Err(ProviderError::Other(format!(
                    "the existing provider creates nothing; it does not perform {action:?}"
                )));
            };
            if !self.contexts.contains_key(cluster) {
                return Err(ProviderError::Missing(format!(
                    "no context given for cluster '{cluster}': pass --context {cluster}=<kube context>"
                )));
            }
            let client = k::client_for(&self.kubeconfig, context).await?;
            let line = format!("{cluster}: context {context} of {}", self.kubeconfig.display());
            let access =
                ClusterAccess::new(cluster.clone(), self.kubeconfig.clone(), context.clone(), client);
            Ok(Performed::created(access, line))
        })
    }

    fn cleanup(&self) -> BoxFuture<'_, CleanupReport> {
        Box::pin(async move {
            let _ = std::fs::remove_dir_all(&self.run_dir);
            CleanupReport {
                complete: true,
                message: "existing clusters left in place".into(),
                properties: BTreeMap::new(),
            }
        })
    }

    fn run_dir(&self) -> PathBuf {
        self.run_dir.clone()
    }
}
