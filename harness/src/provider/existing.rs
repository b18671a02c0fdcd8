//! The `existing` provider: scenario clusters map to kubeconfig contexts the user names explicitly (e.g. two
//! cloud clusters). Nothing is created or deleted there; LoadBalancers come from the platform.

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::future::BoxFuture;

use super::{CleanupReport, ClusterAccess, ClusterProvider, ProviderError};
use crate::kube as k;
use crate::plan::{DataPlane, ProviderKind, ProviderProfile};
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
        ProviderProfile {
            contexts,
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

    fn istioctl(&self) -> BoxFuture<'_, Result<Istioctl, ProviderError>> {
        Box::pin(async move {
            match &self.istioctl {
                Some(i) => Ok(i.clone()),
                None => Ok(Istioctl::from_path()?),
            }
        })
    }

    fn create<'a>(
        &'a self,
        scenario: &'a Scenario,
    ) -> BoxFuture<'a, Result<Vec<ClusterAccess>, ProviderError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for c in &scenario.clusters {
                let context = self.contexts.get(&c.name).cloned().ok_or_else(|| {
                    ProviderError::Missing(format!(
                        "no context given for cluster '{}': pass --context {}=<kube context>",
                        c.name, c.name
                    ))
                })?;
                let client = k::client_for(&self.kubeconfig, &context).await?;
                out.push(ClusterAccess::new(
                    c.name.clone(),
                    self.kubeconfig.clone(),
                    context,
                    client,
                ));
            }
            Ok(out)
        })
    }

    fn connect_networks<'a>(
        &'a self,
        _s: &'a Scenario,
        _c: &'a [ClusterAccess],
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        Box::pin(async { Ok(vec!["existing clusters: routing is the platform's".into()]) })
    }

    fn load_balancers<'a>(
        &'a self,
        _s: &'a Scenario,
        _c: &'a ClusterAccess,
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        Box::pin(async {
            Ok(vec![
                "existing clusters: LoadBalancers come from the platform".into(),
            ])
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

    fn deletes_clusters(&self) -> bool {
        false
    }
}
