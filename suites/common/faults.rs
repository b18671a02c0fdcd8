//! Failure injection: what a fault trial breaks (istiod, a MetalLB pool) or repairs (a remote secret), the
//! reporter that fires it when its step starts, and the verdict on whether it really happened.

#[allow(unused_imports)]
use super::*;

/// What a failure-injection trial breaks, the same on every provider that creates its clusters.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// istiod of this cluster goes away (rehearsal: its process is killed; kind: its pods are deleted and its
    /// Deployment scaled to 0).
    KillIstiod(&'static str),
    /// MetalLB's address pool in this cluster is deleted: a LoadBalancer Service never gets an address.
    RemovePool(&'static str),
    /// A repair rather than a fault: the remote secret `from` → `into` is created and applied the way the
    /// guide's step does. Triggered by the first failed attempt of the step, so the retry can pass.
    AddRemoteSecret { from: &'static str, into: &'static str },
    /// Rehearsal: pods of `from` get a route to the pods of `to` although the two are on different networks
    /// (what a flat network between VPCs would give): the isolation probe must then fail the run.
    RouteNetworks { from: &'static str, to: &'static str },
}

/// A fault and the step whose start (or, for a repair, first failed attempt) triggers it.
#[derive(Debug, Clone, Copy)]
pub struct FaultAt {
    pub step: &'static str,
    pub fault: Fault,
}

/// Carries out `fault` (blocking the caller until done; reporters are synchronous).
pub(crate) fn inject(
    fault: Fault,
    kind: ProviderKind,
    run_dir: &std::path::Path,
    prefix: &str,
    kwok: Option<&KwokProvider>,
    provider: &Arc<dyn ClusterProvider>,
) -> Result<(), String> {
    let kubeconfig = |c: &str| cluster_kubeconfig(kind, run_dir, prefix, c);
    match fault {
        Fault::KillIstiod(c) => match kwok {
            Some(p) => {
                if p.kill_process(&format!("istiod-{c}")) {
                    Ok(())
                } else {
                    Err(format!("the rehearsal runs no process istiod-{c}"))
                }
            }
            None => {
                let (kc, ctx) = kubeconfig(c);
                block_on(kill_istiod(&kc, &ctx))
            }
        },
        Fault::RemovePool(c) => {
            let (kc, ctx) = kubeconfig(c);
            let pool = if kind == ProviderKind::Kwok {
                "rehearsal"
            } else {
                "default-pool"
            };
            block_on(delete_metallb_pool(&kc, &ctx, pool))
        }
        Fault::RouteNetworks { from, to } => {
            if kwok.is_none() {
                return Err("RouteNetworks is a rehearsal fault (kind's routes are the nodes')".into());
            }
            let route = meshconf::plan::ProviderAction::RehearsalRoute {
                from: meshconf::scenario::ClusterName::new(from),
                to: meshconf::scenario::ClusterName::new(to),
            };
            block_on(provider.perform(&route, &std::collections::BTreeMap::new()))
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Fault::AddRemoteSecret { from, into } => block_on(add_remote_secret(
            provider.as_ref(),
            kubeconfig(from),
            kubeconfig(into),
            from,
        )),
    }
}

/// What became of a trial's fault: it must have been injected, and without error, or the trial tested nothing.
pub fn fault_verdict(at: &FaultAt, injected: Option<Result<(), String>>) -> Result<(), Failed> {
    match injected {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(format!("the fault {:?} could not be injected: {e}", at.fault).into()),
        None => Err(format!(
            "the fault {:?} was never injected: step {} never started (or never retried)",
            at.fault, at.step
        )
        .into()),
    }
}

/// Repair: `istioctl create-remote-secret` for `from` (read the way the provider's remote-secret step reads it),
/// applied in `into`'s istio-system.
async fn add_remote_secret(
    provider: &dyn ClusterProvider,
    (from_kc, from_ctx): (PathBuf, String),
    (into_kc, into_ctx): (PathBuf, String),
    from: &str,
) -> Result<(), String> {
    use meshconf::provider::ClusterAccess;
    let src_client = meshconf::kube::client_for(&from_kc, &from_ctx)
        .await
        .map_err(|e| e.to_string())?;
    let dst_client = meshconf::kube::client_for(&into_kc, &into_ctx)
        .await
        .map_err(|e| e.to_string())?;
    let src = ClusterAccess::new(
        meshconf::scenario::ClusterName::new(from),
        from_kc,
        from_ctx,
        src_client,
    );
    // The in-mesh view the run's create step wrote (kind: the API server at the node address), else the run's.
    let internal = src
        .kubeconfig
        .with_file_name(format!("kubeconfig-{from}-internal"));
    let source_kc = if internal.is_file() {
        internal
    } else {
        src.kubeconfig.clone()
    };
    let istioctl = provider.istioctl().await.map_err(|e| e.to_string())?;
    let variant = meshconf::mesh::Variant::for_version(istioctl.version().await.map_err(|e| e.to_string())?);
    let out = istioctl
        .create_remote_secret(variant.remote_secret_words(), &source_kc, &src.context, from, &[])
        .run()
        .await
        .map_err(|e| e.to_string())?;
    meshconf::kube::Applier::new(dst_client)
        .apply_yaml(&out.stdout, Some("istio-system"))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Fault: scale istiod to 0 and delete its pods (what an operator's mistake or an eviction storm does).
pub async fn kill_istiod(kubeconfig: &std::path::Path, context: &str) -> Result<(), String> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
    let client = meshconf::kube::client_for(kubeconfig, context)
        .await
        .map_err(|e| e.to_string())?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");
    let scale = serde_json::json!({ "spec": { "replicas": 0 } });
    deployments
        .patch("istiod", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .map_err(|e| format!("scale istiod to 0: {e}"))?;
    let pods: Api<Pod> = Api::namespaced(client, "istio-system");
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=istiod"),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("delete istiod pods: {e}"))
}

/// Fault helper: a reporter that runs `action` once, when step `step` starts (or, with `on_retry`, when its
/// first attempt has failed and the runner is about to retry it).
pub struct OnTrigger<F: FnMut() + Send> {
    pub step: String,
    pub on_retry: bool,
    pub action: Option<F>,
}

impl<F: FnMut() + Send> Reporter for OnTrigger<F> {
    fn on_event(&mut self, event: &Event) {
        let fire = match event {
            Event::StepStarted { id, .. } => !self.on_retry && id.0 == self.step,
            Event::StepLog { id, message } => {
                self.on_retry && id.0 == self.step && message.starts_with("attempt 1 failed")
            }
            _ => false,
        };
        if fire && let Some(mut a) = self.action.take() {
            a();
        }
    }

    fn finish(&mut self) -> Result<(), meshconf::report::ReportError> {
        Ok(())
    }
}

/// Fault: deletes a MetalLB IPAddressPool in one cluster.
pub async fn delete_metallb_pool(
    kubeconfig: &std::path::Path,
    context: &str,
    pool: &str,
) -> Result<(), String> {
    use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
    let client = meshconf::kube::client_for(kubeconfig, context)
        .await
        .map_err(|e| e.to_string())?;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("metallb.io", "v1beta1", "IPAddressPool"));
    let pools: Api<DynamicObject> = Api::namespaced_with(client, "metallb-system", &ar);
    pools
        .delete(pool, &DeleteParams::default())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
