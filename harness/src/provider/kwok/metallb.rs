//! MetalLB in a rehearsal: its manifest with the webhook removed (nothing serves it: its pod is fake), the real
//! controller as a local process standing in for that pod, and the pool (shared with kind: provider/metallb.rs).

use std::time::Duration;

use super::super::metallb;
use super::super::{ClusterAccess, Performed, ProviderError};
use super::KwokProvider;
use crate::kube as k;
use crate::plan::{Placeholder, PoolSpec};

impl KwokProvider {
    /// MetalLB's manifest with its webhook removed (nothing serves it: its pod is fake), the real controller as a
    /// local process standing in for that pod, and the pool.
    pub(super) async fn rehearsal_metallb(
        &self,
        cluster: &ClusterAccess,
        pool: &PoolSpec,
        names: &(String, String),
    ) -> Result<Performed, ProviderError> {
        let i = self.index(&cluster.name);
        let p = self.ports(i);
        let manifest = std::fs::read_to_string(self.tools.path("metallb-native.yaml"))
            .map_err(|e| ProviderError::io("read metallb-native.yaml", e))?;
        cluster.applier.apply_yaml(&manifest, None).await?;
        k::delete_webhook_configuration(&cluster.client, "metallb-webhook-configuration").await?;
        let ready = k::wait_pods_ready(
            &cluster.client,
            "metallb-system",
            "app=metallb,component=controller",
            1,
            Duration::from_secs(120),
        )
        .await?;
        let pod =
            ready.pods.first().map(|p| p.0.clone()).ok_or_else(|| {
                ProviderError::Other(format!("no MetalLB controller pod in {}", cluster.name))
            })?;
        let name = format!("metallb-{}", cluster.name);
        let dir = self.opts.run_dir.join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| ProviderError::io("mkdir", e))?;
        let args = vec![
            "--namespace=metallb-system".to_string(),
            format!("--pod-name={pod}"),
            "--webhook-mode=disabled".into(),
            format!("--port={}", p.metallb_metrics),
            format!("--health-probe-port={}", p.metallb_health),
            "--log-level=info".into(),
        ];
        let env = vec![
            (
                "KUBECONFIG".to_string(),
                self.cluster_kubeconfig(&cluster.name).display().to_string(),
            ),
            ("METALLB_NAMESPACE".into(), "metallb-system".into()),
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ];
        let pid = self.supervise(
            &name,
            &self.tools.path("metallb-controller"),
            &args,
            &env,
            &dir,
            "controller.log",
        )?;
        let range = metallb::range(pool, None)?;
        metallb::apply_pool(cluster, names, &range, 1).await?;
        let mut log = vec![
            "applied metallb-native.yaml; removed its webhook (nothing serves it in a rehearsal)".into(),
            format!(
                "started {name} (pid {pid}): real MetalLB controller for {} with pool {range}",
                cluster.name
            ),
        ];
        if self.opts.fleet.is_some() {
            // The controller writes its ConfigurationState once it has loaded the pool; on a fleet the snapshot
            // that follows must hold it, or a new fleet's first reset finds it "left over" (seen in a cold run).
            let waited = configuration_state(&cluster.client, Duration::from_secs(30)).await?;
            log.push(format!(
                "MetalLB's controller reported its ConfigurationState after {:.1}s",
                waited.as_secs_f64()
            ));
        }
        Ok(Performed {
            bound: vec![(Placeholder::metallb_pod(&cluster.name), pod)],
            log,
            ..Performed::default()
        })
    }
}

/// Waits at most `deadline` for MetalLB's controller to write `ConfigurationState/metallb-system/controller`;
/// returns how long that took.
async fn configuration_state(client: &kube::Client, deadline: Duration) -> Result<Duration, ProviderError> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
    let gvk = GroupVersionKind::gvk("metallb.io", "v1beta1", "ConfigurationState");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "configurationstates");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "metallb-system", &ar);
    let started = std::time::Instant::now();
    loop {
        let last = match tokio::time::timeout(Duration::from_secs(5), api.get_opt("controller")).await {
            Ok(Ok(Some(_))) => return Ok(started.elapsed()),
            Ok(Ok(None)) => "not written yet".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the API server did not answer in 5 s".to_string(),
        };
        if started.elapsed() >= deadline {
            return Err(ProviderError::Other(format!(
                "MetalLB's controller wrote no ConfigurationState/metallb-system/controller in {} s ({last}): see \
                 its log (controller.log in the run directory)",
                deadline.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
