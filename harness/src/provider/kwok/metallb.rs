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
        Ok(Performed {
            bound: vec![(Placeholder::metallb_pod(&cluster.name), pod)],
            log: vec![
                "applied metallb-native.yaml; removed its webhook (nothing serves it in a rehearsal)".into(),
                format!(
                    "started {name} (pid {pid}): real MetalLB controller for {} with pool {range}",
                    cluster.name
                ),
            ],
            ..Performed::default()
        })
    }
}
