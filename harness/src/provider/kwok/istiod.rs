//! istiod as a local process for a rehearsal primary: the env of the Deployment istioctl rendered, mirrored, with
//! what differs out of cluster overridden; started under supervision and waited for until its webhooks answer.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::super::{ClusterAccess, ProviderError};
use super::KwokProvider;
use crate::kube as k;

impl KwokProvider {
    /// Starts `pilot_discovery` (the run's build, or the cluster's own in a mixed-version mesh) for `cluster`.
    /// A control-plane revision's istiod (`revision`) reads its own Deployment `istiod-<revision>` and listens on
    /// the cluster's ports of `slot`.
    pub(super) async fn start_istiod(
        &self,
        cluster: &ClusterAccess,
        pilot_discovery: &std::path::Path,
        revision: Option<&str>,
        slot: usize,
    ) -> Result<(Vec<String>, String), ProviderError> {
        let i = self.index(&cluster.name);
        let p = self.ports(i).for_slot(slot);
        let suffix = revision.map(|r| format!("-{r}")).unwrap_or_default();
        let deployment = format!("istiod{suffix}");
        let dir = self.opts.run_dir.join(format!("istiod-{}{suffix}", cluster.name));
        let ca_dir = dir.join("cacerts");
        std::fs::create_dir_all(&ca_dir).map_err(|e| ProviderError::io("mkdir istiod dir", e))?;
        // Mirror the literal env of the Deployment istioctl rendered, then override what differs out of cluster.
        let deps: Api<Deployment> = Api::namespaced(cluster.client.clone(), "istio-system");
        let dep = deps.get(&deployment).await.map_err(|source| k::KubeError::Api {
            what: format!("get deployment istio-system/{deployment} in {}", cluster.name),
            source,
        })?;
        let mut env: BTreeMap<String, String> = dep
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.into_iter().find(|c| c.name == "discovery"))
            .and_then(|c| c.env)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect();
        let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "istio-system");
        let plugged = secrets.get_opt("cacerts").await.ok().flatten().is_some();
        let kubeconfig = self.cluster_kubeconfig(&cluster.name).display().to_string();
        for (k, v) in [
            ("POD_NAME", format!("istiod-local-{}{suffix}", cluster.name)),
            ("POD_NAMESPACE", "istio-system".into()),
            (
                "REVISION",
                env.get("REVISION").cloned().unwrap_or_else(|| "default".into()),
            ),
            ("CLUSTER_ID", cluster.name.to_string()),
            ("PILOT_CERT_PROVIDER", "istiod".into()),
            ("ENABLE_CA_SERVER", "true".into()),
            ("ISTIOD_CUSTOM_HOST", "127.0.0.1,localhost".into()),
            ("ROOT_CA_DIR", ca_dir.display().to_string()),
            ("USE_REMOTE_CERTS", plugged.to_string()),
            ("KUBECONFIG", kubeconfig.clone()),
            ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME", dir.display().to_string()),
        ] {
            env.insert(k.to_string(), v);
        }
        let args: Vec<String> = [
            "discovery".to_string(),
            format!("--kubeconfig={kubeconfig}"),
            "--domain=cluster.local".into(),
            "--keepaliveMaxServerConnectionAge=30m".into(),
            format!("--httpAddr=127.0.0.1:{}", p.istiod_http),
            format!("--grpcAddr=127.0.0.1:{}", p.xds),
            format!("--secureGRPCAddr=127.0.0.1:{}", p.xds_tls),
            format!("--httpsAddr=127.0.0.1:{}", p.webhook),
            format!("--monitoringAddr=127.0.0.1:{}", p.monitoring),
            format!("--ctrlz_port={}", p.ctrlz),
            "--ctrlz_address=127.0.0.1".into(),
            "--log_output_level=default:info".into(),
        ]
        .into();
        let env_vec: Vec<(String, String)> = env.into_iter().collect();
        let name = format!("istiod-{}{suffix}", cluster.name);
        // An in-place upgrade: the running istiod (the older build) goes first, as its pods would; the ports are
        // the cluster's own.
        let replaced = self.stop_process(&name);
        let pid = self.supervise(&name, pilot_discovery, &args, &env_vec, &dir, "istiod.log")?;
        let ready = format!("http://127.0.0.1:{}/ready", p.istiod_http);
        wait_http_ok(
            &ready,
            Duration::from_secs(180),
            &format!("{name} (pid {pid}) to report ready on {ready}"),
        )
        .await
        .map_err(|e| ProviderError::Other(format!("{e}\n{}", self.log_tail(&name))))?;
        k::wait_webhook_ca_bundle(
            &cluster.client,
            &format!("istio-sidecar-injector{suffix}"),
            Duration::from_secs(120),
        )
        .await?;
        {
            let mut inner = self.lock();
            if let Some(s) = inner.state.clusters.get_mut(cluster.name.as_str()) {
                let xds = format!("127.0.0.1:{}", p.xds);
                match revision {
                    Some(r) => {
                        s.istiod_revisions.insert(r.to_string(), xds.clone());
                        // The first control plane also serves what names no revision.
                        s.istiod_xds.get_or_insert(xds);
                    }
                    None => s.istiod_xds = Some(xds),
                }
            }
            self.write_state(&inner)?;
        }
        // The build the running istiod reports on its monitoring port: which control plane serves this cluster
        // (a mixed-version mesh proves its mix with it).
        let version = http_text(&format!("http://127.0.0.1:{}/version", p.monitoring))
            .await
            .map_err(|e| ProviderError::Other(format!("{name} does not report its version: {e}")))?;
        let version = version.trim().to_string();
        let mut lines = Vec::new();
        if let Some(old) = replaced {
            lines.push(format!("stopped the istiod it replaces (pid {old})"));
        }
        lines.extend([
                format!("{name} reports version {version}"),
                format!(
                    "started {name} (pid {pid}): real pilot-discovery with {}'s kubeconfig, cluster ID {}, xDS on 127.0.0.1:{}, webhooks on 127.0.0.1:{}",
                    cluster.name, cluster.name, p.xds, p.webhook
                ),
                format!(
                    "plugged-in CA (cacerts): {}",
                    if plugged {
                        "yes, read by istiod from the Secret"
                    } else {
                        "no, istiod self-signs"
                    }
                ),
                "istiod is ready and has patched the injector caBundle".into(),
            ]);
        Ok((lines, version))
    }
}

/// The body of a GET on a local endpoint (5 s).
async fn http_text(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let r = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("HTTP {} from {url}", r.status()));
    }
    r.text().await.map_err(|e| e.to_string())
}

pub(super) async fn wait_http_ok(url: &str, timeout: Duration, what: &str) -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no answer");
    while tokio::time::Instant::now() < deadline {
        match client.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "timed out after {timeout:?} waiting for {what} (last: {last})"
    ))
}
