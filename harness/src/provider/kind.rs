//! The `kind` provider: kind clusters on Docker, MetalLB for LoadBalancer addresses carved from the `kind`
//! network, and routes between nodes of one network. Implemented against the real tools' interfaces; it needs a
//! Docker engine, which the development machines of this project do not have (see the README).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{CleanupReport, ClusterAccess, ClusterProvider, ProviderError, RemoteSecretSource};
use crate::kube as k;
use crate::plan::{DataPlane, ProviderKind, ProviderProfile, render_ctx_var};
use crate::scenario::{ClusterName, Scenario};
use crate::tools::{Cmd, Docker, Istioctl, Kind, download_istioctl, which};
use crate::topology::{self, kind_cluster_name};

/// MetalLB release whose native manifest the kind provider applies.
pub const METALLB_VERSION: &str = "v0.16.1";
/// LoadBalancer addresses per cluster.
pub const LB_ADDRESSES: u32 = 50;

/// Options of the kind provider.
#[derive(Debug, Clone)]
pub struct KindOptions {
    /// Prefix of kind cluster names (`<prefix>-<cluster>`).
    pub prefix: String,
    /// Node image, if pinned.
    pub node_image: Option<String>,
    /// Istio version to download instead of using istioctl from PATH.
    pub istio_version: Option<String>,
    /// Run directory.
    pub run_dir: PathBuf,
    /// Keep clusters after the run.
    pub keep: bool,
}

/// The kind provider.
pub struct KindProvider {
    opts: KindOptions,
    kind: Kind,
    docker: Docker,
    created: Arc<Mutex<Vec<String>>>,
}

impl KindProvider {
    /// A kind provider.
    pub fn new(opts: KindOptions) -> Self {
        let kind = Kind {
            bin: "kind".into(),
            node_image: opts.node_image.clone(),
        };
        Self {
            opts,
            kind,
            docker: Docker { bin: "docker".into() },
            created: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn kubeconfig(&self, c: &ClusterName) -> PathBuf {
        self.opts.run_dir.join(format!("kubeconfig-{c}"))
    }

    fn node(&self, c: &ClusterName) -> String {
        format!("{}-control-plane", kind_cluster_name(&self.opts.prefix, c))
    }

    async fn node_ip(&self, c: &ClusterName) -> Result<String, ProviderError> {
        let out = self.docker.node_ip(&self.node(c)).run().await?;
        let ip = out.stdout.trim().to_string();
        ip.parse::<std::net::Ipv4Addr>().map_err(|_| {
            ProviderError::Other(format!(
                "node {} has no IPv4 address on the kind network: {ip:?}",
                self.node(c)
            ))
        })?;
        Ok(ip)
    }

    /// Fails within seconds, naming what is missing, when Docker or kind is unavailable.
    pub async fn check_prerequisites(&self) -> Result<(), ProviderError> {
        let mut missing = Vec::new();
        if which("docker").is_none() {
            missing.push("the docker CLI is not on PATH".to_string());
        } else if let Err(e) = self.docker.info().timeout(Duration::from_secs(10)).run().await {
            missing.push(format!("no Docker engine answers (`docker info` failed: {e})"));
        }
        if which("kind").is_none() {
            missing.push("kind is not on PATH (go install sigs.k8s.io/kind@v0.32.0)".to_string());
        }
        if self.opts.istio_version.is_none() && which("istioctl").is_none() {
            missing.push("istioctl is not on PATH (install it, or pass --istio-version X.Y.Z)".to_string());
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::Missing(format!(
                "the kind provider needs a Docker engine and kind: {}. Use --provider kwok for a rehearsal without Docker.",
                missing.join("; ")
            )))
        }
    }
}

impl ClusterProvider for KindProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Kind
    }

    fn profile(&self, scenario: &Scenario) -> ProviderProfile {
        let mut p = ProviderProfile::empty(ProviderKind::Kind, DataPlane::Real);
        for c in &scenario.clusters {
            let name = kind_cluster_name(&self.opts.prefix, &c.name);
            p.contexts.insert(c.name.clone(), format!("kind-{name}"));
            let kc = format!("\"$MESHCONF_RUN/kubeconfig-{}\"", c.name);
            let mut create = self
                .kind
                .create(
                    &name,
                    &c.kind_config,
                    std::path::Path::new("KUBECONFIG_PLACEHOLDER"),
                )
                .display();
            create = create.replace("KUBECONFIG_PLACEHOLDER", &kc);
            let node_var = render_ctx_var(&c.name).replacen("CTX_", "NODE_IP_", 1);
            p.create_commands.insert(c.name.clone(), vec![
                create,
                format!("export {node_var}=$(docker inspect -f '{{{{.NetworkSettings.Networks.kind.IPAddress}}}}' {name}-control-plane)"),
                    format!(
                        "kind get kubeconfig --internal --name {name} | sed 's#https://{name}-control-plane:6443#https://'\"${node_var}\"':6443#' > \"$MESHCONF_RUN/kubeconfig-{}-internal\"",
                        c.name
                    ),
            ]);
            let v = render_ctx_var(&c.name);
            p.lb_commands.insert(c.name.clone(), vec![
                format!("kubectl --context=\"${{{v}}}\" apply -f https://raw.githubusercontent.com/metallb/metallb/{METALLB_VERSION}/config/manifests/metallb-native.yaml"),
                format!("kubectl --context=\"${{{v}}}\" wait -n metallb-system pod -l app=metallb --for=condition=Ready --timeout=120s"),
                format!("# IPAddressPool default-pool + L2Advertisement: {LB_ADDRESSES} addresses from the top of the kind network's IPv4 subnet, disjoint per cluster (retried while MetalLB's webhook starts)"),
            ]);
            p.remote_secret_flags.insert(
                c.name.clone(),
                vec![format!(
                    "--kubeconfig=\"$MESHCONF_RUN/kubeconfig-{}-internal\"",
                    c.name
                )],
            );
            p.delete_commands
                .push(format!("kind delete cluster --name {name} --kubeconfig {kc}"));
        }
        for r in topology::same_network_routes(&scenario.clusters) {
            let peer = format!("{}-control-plane", kind_cluster_name(&self.opts.prefix, &r.to));
            let on = format!("{}-control-plane", kind_cluster_name(&self.opts.prefix, &r.on));
            p.network_commands.push(format!(
                "docker exec {on} ip route replace {} via \"$(docker inspect -f '{{{{.NetworkSettings.Networks.kind.IPAddress}}}}' {peer})\"",
                r.destination
            ));
        }
        p
    }

    fn parts(&self) -> (Vec<String>, Vec<String>) {
        (
            vec![
                "kind clusters".into(),
                "MetalLB".into(),
                "Istio control and data plane".into(),
                "HelloWorld and curl pods".into(),
            ],
            Vec::new(),
        )
    }

    fn preflight(&self) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(self.check_prerequisites())
    }

    fn istioctl(&self) -> BoxFuture<'_, Result<Istioctl, ProviderError>> {
        Box::pin(async move {
            match &self.opts.istio_version {
                Some(v) => Ok(download_istioctl(v, &self.opts.run_dir.join("istio-bin")).await?),
                None => Ok(Istioctl::from_path()?),
            }
        })
    }

    fn create<'a>(
        &'a self,
        scenario: &'a Scenario,
    ) -> BoxFuture<'a, Result<Vec<ClusterAccess>, ProviderError>> {
        Box::pin(async move {
            self.check_prerequisites().await?;
            std::fs::create_dir_all(&self.opts.run_dir)
                .map_err(|e| ProviderError::io("create run dir", e))?;
            let creates = scenario.clusters.iter().map(|c| {
                let name = kind_cluster_name(&self.opts.prefix, &c.name);
                if let Ok(mut v) = self.created.lock() {
                    v.push(name.clone());
                }
                self.kind
                    .create(&name, &c.kind_config, &self.kubeconfig(&c.name))
                    .run()
            });
            for r in futures::future::join_all(creates).await {
                r?;
            }
            let mut out = Vec::new();
            for c in &scenario.clusters {
                let context = format!("kind-{}", kind_cluster_name(&self.opts.prefix, &c.name));
                let client = k::client_for(&self.kubeconfig(&c.name), &context).await?;
                out.push(ClusterAccess::new(
                    c.name.clone(),
                    self.kubeconfig(&c.name),
                    context,
                    client,
                ));
            }
            Ok(out)
        })
    }

    fn connect_networks<'a>(
        &'a self,
        scenario: &'a Scenario,
        _c: &'a [ClusterAccess],
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        Box::pin(async move {
            let mut log = Vec::new();
            for r in topology::same_network_routes(&scenario.clusters) {
                let via = self.node_ip(&r.to).await?;
                self.docker
                    .add_route(&self.node(&r.on), &r.destination.to_string(), &via)
                    .run()
                    .await?;
                log.push(format!("{}: route {} via {via} ({})", r.on, r.destination, r.to));
            }
            Ok(log)
        })
    }

    fn load_balancers<'a>(
        &'a self,
        scenario: &'a Scenario,
        cluster: &'a ClusterAccess,
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        Box::pin(async move {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let url = format!(
                "https://raw.githubusercontent.com/metallb/metallb/{METALLB_VERSION}/config/manifests/metallb-native.yaml"
            );
            let manifest = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| ProviderError::Other(e.to_string()))?
                .get(&url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| ProviderError::Other(format!("download {url}: {e}")))?
                .text()
                .await
                .map_err(|e| ProviderError::Other(format!("download {url}: {e}")))?;
            cluster.applier.apply_yaml(&manifest, None).await?;
            k::wait_pods_ready(
                &cluster.client,
                "metallb-system",
                "app=metallb",
                1,
                Duration::from_secs(120),
            )
            .await?;
            let inspect = self.docker.inspect_kind_network().run().await?;
            let subnet = topology::kind_network_ipv4(&inspect.stdout)
                .map_err(|e| ProviderError::Other(e.to_string()))?;
            let pools = topology::carve_pools(subnet, scenario.clusters.len(), LB_ADDRESSES)
                .map_err(|e| ProviderError::Other(e.to_string()))?;
            let i = scenario.cluster_index(&cluster.name).unwrap_or(0);
            let pool = pools[i.min(pools.len() - 1)];
            let yaml = format!(
                "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: default-pool\n  namespace: metallb-system\nspec:\n  addresses: [\"{}\"]\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: default-l2\n  namespace: metallb-system\nspec:\n  ipAddressPools: [default-pool]\n",
                pool.as_range()
            );
            // MetalLB's webhook can refuse the pool for a few seconds after its pods are Ready.
            let mut last = None;
            for _ in 0..5 {
                match cluster.applier.apply_yaml(&yaml, None).await {
                    Ok(_) => {
                        return Ok(vec![format!(
                            "MetalLB {METALLB_VERSION} with pool {} from {subnet}",
                            pool.as_range()
                        )]);
                    }
                    Err(e) => {
                        last = Some(e);
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
            Err(last
                .map(ProviderError::Kube)
                .unwrap_or_else(|| ProviderError::Other("MetalLB pool not applied".into())))
        })
    }

    fn remote_secret_source<'a>(
        &'a self,
        cluster: &'a ClusterAccess,
    ) -> BoxFuture<'a, Result<RemoteSecretSource, ProviderError>> {
        Box::pin(async move {
            // The in-mesh view: `kind get kubeconfig --internal` names the API server by its container hostname,
            // which istiod in the other cluster cannot resolve, so it is rewritten to the node's address on the
            // kind network (as Istio's own kind provisioner does). The remote secret embeds that address.
            let name = kind_cluster_name(&self.opts.prefix, &cluster.name);
            let ip = self.node_ip(&cluster.name).await?;
            let internal = self.kind.internal_kubeconfig(&name).run().await?;
            let rewritten = in_mesh_kubeconfig(&internal.stdout, &name, &ip)?;
            let path = self
                .opts
                .run_dir
                .join(format!("kubeconfig-{}-internal", cluster.name));
            write_private(&path, &rewritten)?;
            Ok(RemoteSecretSource {
                kubeconfig: path,
                context: cluster.context.clone(),
                flags: Vec::new(),
            })
        })
    }

    fn cleanup(&self) -> BoxFuture<'_, CleanupReport> {
        Box::pin(async move {
            let names = self.created.lock().map(|v| v.clone()).unwrap_or_default();
            if self.opts.keep {
                return CleanupReport {
                    complete: false,
                    message: format!("kept (--keep): kind clusters {}", names.join(", ")),
                };
            }
            let mut ok = true;
            let mut msgs = Vec::new();
            for n in names {
                let kc = self.opts.run_dir.join("kubeconfig-deleted");
                match self.kind.delete(&n, &kc).run().await {
                    Ok(_) => msgs.push(format!("deleted kind cluster {n}")),
                    Err(e) => {
                        ok = false;
                        msgs.push(format!("kind delete {n}: {e}"));
                    }
                }
            }
            if ok {
                let _ = std::fs::remove_dir_all(&self.opts.run_dir);
            }
            CleanupReport {
                complete: ok,
                message: if msgs.is_empty() {
                    "nothing was created".into()
                } else {
                    msgs.join("; ")
                },
            }
        })
    }

    fn run_dir(&self) -> PathBuf {
        self.opts.run_dir.clone()
    }
}

/// Used by `doctor`: the kind version, if kind runs.
pub async fn kind_version() -> Option<String> {
    Cmd::new("kind")
        .arg("version")
        .timeout(Duration::from_secs(10))
        .run()
        .await
        .ok()
        .map(|o| o.stdout.trim().to_string())
}

/// Rewrites `kind get kubeconfig --internal` output (server `https://<name>-control-plane:6443`) to the node's
/// address on the kind network, so an istiod in another cluster can reach it.
pub fn in_mesh_kubeconfig(internal: &str, cluster: &str, node_ip: &str) -> Result<String, ProviderError> {
    let from = format!("https://{cluster}-control-plane:6443");
    if !internal.contains(&from) {
        return Err(ProviderError::Other(format!(
            "`kind get kubeconfig --internal --name {cluster}` did not name the server {from}"
        )));
    }
    Ok(internal.replace(&from, &format!("https://{node_ip}:6443")))
}

fn write_private(path: &std::path::Path, body: &str) -> Result<(), ProviderError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).map_err(|e| ProviderError::io(format!("write {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ProviderError::io(format!("chmod {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape `kind get kubeconfig --internal` prints (kind's documented output; credentials elided).
    const INTERNAL: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: LS0t\n    server: https://meshconf-cluster2-control-plane:6443\n  name: kind-meshconf-cluster2\ncontexts:\n- context:\n    cluster: kind-meshconf-cluster2\n    user: kind-meshconf-cluster2\n  name: kind-meshconf-cluster2\ncurrent-context: kind-meshconf-cluster2\nkind: Config\nusers:\n- name: kind-meshconf-cluster2\n  user:\n    client-certificate-data: LS0t\n    client-key-data: LS0t\n";

    #[test]
    fn in_mesh_view_points_at_the_node_address() {
        let k = in_mesh_kubeconfig(INTERNAL, "meshconf-cluster2", "172.18.0.3").expect("rewrite");
        assert!(k.contains("server: https://172.18.0.3:6443"));
        assert!(!k.contains("control-plane:6443"));
        assert!(
            in_mesh_kubeconfig(INTERNAL, "other", "172.18.0.3").is_err(),
            "unexpected tool output is an error"
        );
    }
}
