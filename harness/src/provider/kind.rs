//! The `kind` provider: kind clusters on Docker, MetalLB for LoadBalancer addresses carved from the `kind`
//! network, routes between nodes of one network. With an image set from `tools/images.sh` (no registry answers)
//! it runs on images built here, creates the `kind` network itself and counts every packet that tries to leave
//! the machine; without one it uses released images, as on a user's laptop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use serde::{Deserialize, Serialize};

use super::egress::{EgressCount, EgressRule};
use super::{CleanupReport, ClusterAccess, ClusterProvider, ProviderError, RemoteSecretSource};
use crate::images::ImageSet;
use crate::kube as k;
use crate::mesh::InstallOverlay;
use crate::plan::{DataPlane, ProviderKind, ProviderProfile, render_ctx_var};
use crate::scenario::{ClusterName, Scenario};
use crate::tools::{Cmd, Docker, Istioctl, IstioctlSource, Kind, download_istioctl, find_engine, which};
use crate::topology::{self, kind_cluster_name};

/// MetalLB release whose native manifest the kind provider applies.
pub const METALLB_VERSION: &str = "v0.16.1";
/// LoadBalancer addresses per cluster.
pub const LB_ADDRESSES: u32 = 50;
/// The `kind` network's subnet when meshconf creates it.
pub const DEFAULT_KIND_SUBNET: &str = "172.30.0.0/16";

/// Options of the kind provider.
#[derive(Debug, Clone)]
pub struct KindOptions {
    /// Prefix of kind cluster names (`<prefix>-<cluster>`).
    pub prefix: String,
    /// Node image, if pinned (else the image set's, else kind's default).
    pub node_image: Option<String>,
    /// Istio version to download instead of using istioctl from PATH.
    pub istio_version: Option<String>,
    /// Run directory.
    pub run_dir: PathBuf,
    /// Keep clusters after the run.
    pub keep: bool,
    /// Images built here (`tools/images.sh`); `None`: released images from their registries.
    pub images: Option<ImageSet>,
    /// Subnet of the `kind` network when meshconf creates it.
    pub subnet: Ipv4Net,
    /// The host runs cgroup v1 (kubelet 1.35 then needs `failCgroupV1: false`).
    pub cgroup_v1: bool,
}

/// What a run created on the host, written to the run directory so `meshconf down` can remove it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KindState {
    /// The engine used, when it is meshconf's own.
    pub docker_host: Option<String>,
    /// kind clusters created.
    pub clusters: Vec<String>,
    /// Whether the run created the `kind` network.
    pub network_created: bool,
    /// The egress rule, when set.
    pub egress: Option<EgressRule>,
}

/// The kind provider.
pub struct KindProvider {
    opts: KindOptions,
    state: Arc<Mutex<KindState>>,
    egress_unmeasured: Arc<Mutex<Option<String>>>,
    /// Seconds per phase of cluster creation, for the reports.
    phases: Arc<Mutex<BTreeMap<String, String>>>,
}

const STATE_FILE: &str = "kind-state.json";

impl KindProvider {
    /// A kind provider.
    pub fn new(opts: KindOptions) -> Self {
        Self {
            opts,
            state: Arc::new(Mutex::new(KindState::default())),
            egress_unmeasured: Arc::new(Mutex::new(None)),
            phases: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    fn phase(&self, name: &str, since: std::time::Instant) {
        if let Ok(mut p) = self.phases.lock() {
            p.insert(
                format!("kind-{name}-seconds"),
                format!("{:.1}", since.elapsed().as_secs_f64()),
            );
        }
    }

    fn state(&self) -> KindState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut KindState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
            if let Ok(text) = serde_json::to_string_pretty(&*s) {
                let _ = std::fs::write(self.opts.run_dir.join(STATE_FILE), text);
            }
        }
    }

    fn kind_bin(&self) -> PathBuf {
        which("kind")
            .or_else(|| {
                self.opts
                    .images
                    .as_ref()
                    .map(|i| i.tools_bin.join("kind"))
                    .filter(|p| p.is_file())
            })
            .unwrap_or_else(|| "kind".into())
    }

    fn node_image(&self) -> Option<String> {
        self.opts
            .node_image
            .clone()
            .or_else(|| self.opts.images.as_ref().map(|i| i.node_image.clone()))
    }

    fn kind(&self) -> Kind {
        Kind {
            bin: self.kind_bin(),
            node_image: self.node_image(),
            docker_host: self.state().docker_host,
        }
    }

    fn docker(&self) -> Docker {
        Docker {
            bin: "docker".into(),
            docker_host: self.state().docker_host,
        }
    }

    fn kubeconfig(&self, c: &ClusterName) -> PathBuf {
        self.opts.run_dir.join(format!("kubeconfig-{c}"))
    }

    fn config_path(&self, c: &ClusterName) -> PathBuf {
        self.opts.run_dir.join(format!("kind-{c}.yaml"))
    }

    fn node(&self, c: &ClusterName) -> String {
        format!("{}-control-plane", kind_cluster_name(&self.opts.prefix, c))
    }

    async fn node_ip(&self, c: &ClusterName) -> Result<String, ProviderError> {
        let out = self.docker().node_ip(&self.node(c)).run().await?;
        let ip = out.stdout.trim().to_string();
        ip.parse::<std::net::Ipv4Addr>().map_err(|_| {
            ProviderError::Other(format!(
                "node {} has no IPv4 address on the kind network: {ip:?}",
                self.node(c)
            ))
        })?;
        Ok(ip)
    }

    /// The istioctl to drive: `--istio-version` downloads one; else PATH; else the one built with the images.
    fn istioctl_candidate(&self) -> Option<Istioctl> {
        Istioctl::from_path().ok().or_else(|| {
            let bin = self.opts.images.as_ref()?.tools_bin.join("istioctl");
            bin.is_file().then_some(Istioctl {
                bin,
                source: IstioctlSource::RehearsalTools,
            })
        })
    }

    /// Fails within seconds, naming what is missing, when Docker, kind, istioctl or the images are unavailable.
    /// Finds the engine: the user's when it answers, else meshconf's own.
    pub async fn check_prerequisites(&self) -> Result<(), ProviderError> {
        let mut missing = Vec::new();
        match which("docker") {
            None => missing.push("the docker CLI is not on PATH".to_string()),
            Some(bin) => match find_engine(&bin).await {
                // Record the engine actually used, the user's too: `meshconf down` from a shell without this
                // DOCKER_HOST must reach the same engine.
                Ok(Some(ours)) => self.update(|s| s.docker_host = Some(ours)),
                Ok(None) => {
                    let host = crate::tools::users_engine_host(&bin).await;
                    self.update(|s| s.docker_host = Some(host));
                }
                Err(e) => missing.push(e),
            },
        }
        if !self.kind_bin().is_file() && which("kind").is_none() {
            missing
                .push("kind is not on PATH (make images builds it, or go install sigs.k8s.io/kind)".into());
        }
        if self.opts.istio_version.is_none() && self.istioctl_candidate().is_none() {
            missing.push("istioctl is not on PATH (install it, or pass --istio-version X.Y.Z)".into());
        }
        if missing.is_empty()
            && let Some(img) = self.node_image().filter(|_| self.opts.images.is_some())
        {
            let probe = self
                .docker()
                .image_inspect(&img)
                .timeout(Duration::from_secs(20))
                .run()
                .await;
            if probe.is_err() {
                missing.push(format!(
                    "the node image {img} is not in the Docker engine: run `make images` (tools/images.sh)"
                ));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::Missing(format!(
                "the kind provider needs a Docker engine, kind and istioctl: {}. Use --provider kwok for a \
                 rehearsal without Docker.",
                missing.join("; ")
            )))
        }
    }

    /// The run's kind config for a cluster: the scenario's file plus meshconf's overlays, as JSON (kind reads
    /// YAML, of which JSON is a subset).
    pub fn derived_config(&self, user_config: &str, source: &Path) -> Result<String, ProviderError> {
        let mut v: serde_json::Value = serde_saphyr::from_str(user_config).map_err(|e| {
            ProviderError::Other(format!("kind config {}: not valid YAML: {e}", source.display()))
        })?;
        let obj = v.as_object_mut().ok_or_else(|| {
            ProviderError::Other(format!("kind config {}: not a mapping", source.display()))
        })?;
        if self.opts.cgroup_v1 {
            let patches = obj
                .entry("kubeadmConfigPatches")
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let Some(list) = patches.as_array_mut() {
                list.push(serde_json::Value::String(CGROUP_V1_PATCH.into()));
            }
        }
        serde_json::to_string_pretty(&v).map_err(|e| ProviderError::Other(e.to_string()))
    }

    /// The overlays this provider adds, one line each, for plans and reports.
    pub fn overlay_notes(&self) -> Vec<String> {
        let mut n = Vec::new();
        if self.opts.cgroup_v1 {
            n.push(
                "overlay: kubelet failCgroupV1=false (this host runs cgroup v1; kind warns it is deprecated)"
                    .into(),
            );
        }
        if let Some(i) = &self.opts.images {
            n.push(format!(
                "overlay: images built here, no registry (node image {}; sources below)",
                i.node_image
            ));
            n.push(format!(
                "overlay: data plane is upstream Envoy {}, not istio-proxy; Istio filters off: metadata exchange \
                 (PILOT_ENABLE_METADATA_EXCHANGE=false), ALPN filter (PILOT_ENABLE_ALPN_FILTER=false), stats \
                 (values.telemetry.enabled=false)",
                i.envoy
            ));
            n.push(
                "overlay: CLOUD_PLATFORM=none for every proxy (no cloud metadata probes leave the machine)"
                    .into(),
            );
            n.push(format!(
                "overlay: meshconf creates the kind network ({}) and counts packets leaving it (egress-packets, must be 0)",
                self.opts.subnet
            ));
            n.push(
                "overlay: node CNI is ptp + host-local per cluster pod subnet (kindnetd is not built here)"
                    .into(),
            );
        }
        n
    }

    fn install_overlay(&self) -> InstallOverlay {
        let Some(i) = &self.opts.images else {
            return InstallOverlay::default();
        };
        let sets = [
            ("hub", i.istio.hub.as_str()),
            ("tag", i.istio.tag.as_str()),
            ("values.global.imagePullPolicy", "IfNotPresent"),
            ("values.pilot.env.PILOT_ENABLE_METADATA_EXCHANGE", "false"),
            ("values.pilot.env.PILOT_ENABLE_ALPN_FILTER", "false"),
            ("values.telemetry.enabled", "false"),
            ("meshConfig.defaultConfig.proxyMetadata.CLOUD_PLATFORM", "none"),
        ];
        InstallOverlay {
            sets: sets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            reason: Some(format!(
                "images built here; upstream Envoy {} lacks Istio's own filters; no cloud metadata probes",
                i.envoy
            )),
        }
    }

    async fn prepare_network(&self) -> Result<Ipv4Net, ProviderError> {
        let docker = self.docker();
        let subnet = match docker.inspect_kind_network().run().await {
            Ok(out) => {
                topology::kind_network_ipv4(&out.stdout).map_err(|e| ProviderError::Other(e.to_string()))?
            }
            Err(_) => {
                docker
                    .create_kind_network(&self.opts.subnet.to_string())
                    .run()
                    .await
                    .map_err(|e| {
                        ProviderError::Other(format!(
                            "cannot create the kind network with subnet {} (set MESHCONF_KIND_SUBNET to a free one): {e}",
                            self.opts.subnet
                        ))
                    })?;
                self.update(|s| s.network_created = true);
                self.opts.subnet
            }
        };
        let run_id = self
            .opts
            .run_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "run".into());
        let inspect = docker.inspect_kind_network().run().await?;
        let bridge = topology::kind_network_bridge(&inspect.stdout)
            .map_err(|e| ProviderError::Other(e.to_string()))?;
        let rule = EgressRule::new(&bridge, &run_id);
        match rule.arm().await {
            Ok(()) => self.update(|s| s.egress = Some(rule.clone())),
            Err(why) => {
                tracing::warn!("egress is not counted: {why}");
                if let Ok(mut u) = self.egress_unmeasured.lock() {
                    *u = Some(why);
                }
            }
        }
        Ok(subnet)
    }

    async fn create_one(&self, name: &str, c: &crate::scenario::Cluster) -> Result<(), ProviderError> {
        let text = std::fs::read_to_string(&c.kind_config)
            .map_err(|e| ProviderError::io(format!("read kind config {}", c.kind_config.display()), e))?;
        let derived = self.derived_config(&text, &c.kind_config)?;
        let path = self.config_path(&c.name);
        std::fs::write(&path, derived)
            .map_err(|e| ProviderError::io(format!("write {}", path.display()), e))?;
        match self
            .kind()
            .create(name, &path, &self.kubeconfig(&c.name))
            .run()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let journal = self
                    .docker()
                    .journal_tail(&self.node(&c.name))
                    .run()
                    .await
                    .map(|o| o.stdout)
                    .unwrap_or_else(|j| format!("(no journal: {j})"));
                Err(ProviderError::Other(format!(
                    "kind create cluster {name} failed: {e}\nthe node's journal (kubelet, containerd), last lines:\n{}",
                    crate::tools::tail(&journal, 40)
                )))
            }
        }
    }

    /// What `kind create --wait` does not wait for: the default ServiceAccount (pods are refused without it),
    /// kube-proxy and CoreDNS Ready (Services answer).
    async fn gate_ready(&self, c: &ClusterAccess) -> Result<(), ProviderError> {
        let sa: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "default");
        k::wait_for(
            sa,
            "default",
            |o: Option<&ServiceAccount>| o.is_some(),
            &format!("{}: ServiceAccount default/default", c.name),
            Duration::from_secs(120),
            |_| "present".into(),
        )
        .await?;
        for sel in ["k8s-app=kube-proxy", "k8s-app=kube-dns"] {
            k::wait_pods_ready(&c.client, "kube-system", sel, 1, Duration::from_secs(180)).await?;
        }
        Ok(())
    }

    async fn load_images(&self, name: &str) -> Result<usize, ProviderError> {
        let Some(i) = &self.opts.images else {
            return Ok(0);
        };
        let list = i.to_load();
        if !list.is_empty() {
            self.kind().load_images(name, &list).run().await?;
        }
        Ok(list.len())
    }

    async fn metallb_manifest(&self) -> Result<String, ProviderError> {
        if let Some(i) = &self.opts.images {
            return std::fs::read_to_string(&i.metallb.manifest).map_err(|e| {
                ProviderError::io(
                    format!("read MetalLB manifest {}", i.metallb.manifest.display()),
                    e,
                )
            });
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = metallb_url();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ProviderError::Other(e.to_string()))?;
        let resp = client
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| ProviderError::Other(format!("download {url}: {e}")))?;
        resp.text()
            .await
            .map_err(|e| ProviderError::Other(format!("download {url}: {e}")))
    }

    /// Counts Envoy config rejections in every istiod's log (`ADS:… ACK ERROR`: the word NACK never appears):
    /// the proof that the upstream Envoy accepted all the config istiod sent. `N`, or `N; unreadable: …`.
    async fn ack_errors(&self, state: &KindState) -> String {
        let mut total = 0usize;
        let mut unreadable = Vec::new();
        for name in &state.clusters {
            let Some(cluster) = name.strip_prefix(&format!("{}-", self.opts.prefix)) else {
                continue;
            };
            let kc = self.opts.run_dir.join(format!("kubeconfig-{cluster}"));
            match istiod_ack_errors(&kc, &format!("kind-{name}")).await {
                Ok(n) => total += n,
                Err(e) => unreadable.push(format!("{cluster}: {e}")),
            }
        }
        if unreadable.is_empty() {
            total.to_string()
        } else {
            format!("{total}; unreadable: {}", unreadable.join("; "))
        }
    }

    /// Removes what a kept or interrupted run left, from its state file (`meshconf down`).
    pub async fn down(run_dir: &Path) -> Result<Vec<String>, String> {
        let path = run_dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let state: KindState = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let kind_bin = which("kind")
            .or_else(|| {
                ImageSet::locate()
                    .ok()
                    .flatten()
                    .map(|i| i.tools_bin.join("kind"))
            })
            .unwrap_or_else(|| "kind".into());
        let kind = Kind {
            bin: kind_bin,
            node_image: None,
            docker_host: state.docker_host.clone(),
        };
        let docker = Docker {
            bin: "docker".into(),
            docker_host: state.docker_host.clone(),
        };
        remove_created(&kind, &docker, &state, &run_dir.join("kubeconfig-deleted")).await
    }
}

/// Deletes clusters, the egress rule and the network a run created; one line per action.
async fn remove_created(
    kind: &Kind,
    docker: &Docker,
    state: &KindState,
    kc: &Path,
) -> Result<Vec<String>, String> {
    let mut msgs = Vec::new();
    let mut failed = Vec::new();
    // One kubeconfig per delete: kind locks the file, so parallel deletes sharing one fail.
    let deletes = state.clusters.iter().map(|n| async move {
        let path = kc.with_file_name(format!("kubeconfig-deleted-{n}"));
        (n, kind.delete(n, &path).run().await)
    });
    for (n, r) in futures::future::join_all(deletes).await {
        match r {
            Ok(_) => msgs.push(format!("deleted kind cluster {n}")),
            Err(e) => failed.push(format!("kind delete {n}: {e}")),
        }
    }
    // The egress rule guards the clusters' traffic and the network carries them: both stay while any cluster
    // may still be up, so a second `meshconf down` (with the right engine) finds them all again.
    if !failed.is_empty() {
        if state.egress.is_some() || state.network_created {
            failed.push(
                "kept the egress rule and the kind network: a cluster they guard may still run".to_string(),
            );
        }
        msgs.extend(failed);
        return Err(msgs.join("; "));
    }
    if let Some(rule) = &state.egress {
        let comment = &rule.comment;
        match rule.disarm().await {
            Ok(()) => msgs.push(format!("removed the egress rule '{comment}'")),
            // Already gone (an earlier `meshconf down`): nothing left to remove.
            Err(_) if matches!(rule.read().await, EgressCount::Unmeasured(_)) => {}
            Err(e) => failed.push(format!("egress rule '{comment}': {e}")),
        }
    }
    if state.network_created && docker.inspect_kind_network().run().await.is_ok() {
        match docker.remove_kind_network().run().await {
            Ok(_) => msgs.push("removed the kind network".into()),
            Err(e) => failed.push(format!("docker network rm kind: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(msgs)
    } else {
        msgs.extend(failed);
        Err(msgs.join("; "))
    }
}

/// `ACK ERROR` lines in the logs of the istiod pods of one cluster (none when it runs no istiod: a remote).
async fn istiod_ack_errors(kubeconfig: &Path, context: &str) -> Result<usize, String> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{ListParams, LogParams};
    let client = k::client_for(kubeconfig, context)
        .await
        .map_err(|e| e.to_string())?;
    let pods: Api<Pod> = Api::namespaced(client, "istio-system");
    let list = pods
        .list(&ListParams::default().labels("app=istiod"))
        .await
        .map_err(|e| format!("list istiod pods: {e}"))?;
    let mut n = 0;
    for p in list.items {
        let name = p.metadata.name.unwrap_or_default();
        let logs = pods
            .logs(&name, &LogParams::default())
            .await
            .map_err(|e| format!("logs of {name}: {e}"))?;
        n += count_ack_errors(&logs);
    }
    Ok(n)
}

/// How many lines of an istiod log report a rejected config.
pub fn count_ack_errors(log: &str) -> usize {
    log.lines().filter(|l| l.contains("ACK ERROR")).count()
}

const CGROUP_V1_PATCH: &str = "kind: KubeletConfiguration\nfailCgroupV1: false\n";

fn metallb_url() -> String {
    format!(
        "https://raw.githubusercontent.com/metallb/metallb/{METALLB_VERSION}/config/manifests/metallb-native.yaml"
    )
}

impl ClusterProvider for KindProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Kind
    }

    fn profile(&self, scenario: &Scenario) -> ProviderProfile {
        let mut p = ProviderProfile::empty(ProviderKind::Kind, DataPlane::Envoy);
        let kind = self.kind();
        if self.opts.images.is_some() {
            p.setup_commands.push(format!(
                "docker network create --driver bridge --subnet {s} -o com.docker.network.bridge.enable_ip_masquerade=true -o com.docker.network.bridge.name={b} kind",
                b = crate::tools::KIND_BRIDGE,
                s = self.opts.subnet
            ));
            p.setup_commands.push(format!(
                "iptables -I DOCKER-USER 1 -i {b} ! -o {b} -m comment --comment meshconf-egress -j DROP   # egress-packets: must stay 0",
                b = crate::tools::KIND_BRIDGE
            ));
        }
        for c in &scenario.clusters {
            let name = kind_cluster_name(&self.opts.prefix, &c.name);
            p.contexts.insert(c.name.clone(), format!("kind-{name}"));
            let kc = format!("\"$MESHCONF_RUN/kubeconfig-{}\"", c.name);
            let config = if self.opts.cgroup_v1 {
                PathBuf::from(format!("$MESHCONF_RUN/kind-{}.yaml", c.name))
            } else {
                c.kind_config.clone()
            };
            let mut cmds = Vec::new();
            if self.opts.cgroup_v1 {
                cmds.push(format!(
                    "# $MESHCONF_RUN/kind-{}.yaml = {} + kubeadmConfigPatches: KubeletConfiguration failCgroupV1: false",
                    c.name,
                    c.kind_config.display()
                ));
            }
            cmds.push(
                kind.create(&name, &config, Path::new("KUBECONFIG_PLACEHOLDER"))
                    .display()
                    .replace("KUBECONFIG_PLACEHOLDER", &kc),
            );
            cmds.push(format!(
                "kubectl --context=\"${{{v}}}\" wait -n kube-system pod -l k8s-app=kube-dns --for=condition=Ready --timeout=180s   # and ServiceAccount default exists",
                v = render_ctx_var(&c.name)
            ));
            if let Some(i) = &self.opts.images {
                cmds.push(kind.load_images(&name, &i.to_load()).display());
            }
            let node_var = render_ctx_var(&c.name).replacen("CTX_", "NODE_IP_", 1);
            cmds.push(format!(
                "export {node_var}=$(docker inspect -f '{{{{.NetworkSettings.Networks.kind.IPAddress}}}}' {name}-control-plane)"
            ));
            cmds.push(format!(
                "kind get kubeconfig --internal --name {name} | sed 's#https://{name}-control-plane:6443#https://'\"${node_var}\"':6443#' > \"$MESHCONF_RUN/kubeconfig-{}-internal\"",
                c.name
            ));
            p.create_commands.insert(c.name.clone(), cmds);
            let v = render_ctx_var(&c.name);
            let manifest = match &self.opts.images {
                Some(i) => i.metallb.manifest.display().to_string(),
                None => metallb_url(),
            };
            p.lb_commands.insert(c.name.clone(), vec![
                format!("kubectl --context=\"${{{v}}}\" apply --server-side -f {manifest}"),
                format!("kubectl --context=\"${{{v}}}\" wait -n metallb-system pod -l app=metallb --for=condition=Ready --timeout=180s"),
                format!("# IPAddressPool default-pool + L2Advertisement: {LB_ADDRESSES} addresses from the top of the kind network's IPv4 subnet, disjoint per cluster (retried while MetalLB's webhook starts)"),
            ]);
            p.remote_secret_flags.insert(
                c.name.clone(),
                vec![format!(
                    "--kubeconfig=\"$MESHCONF_RUN/kubeconfig-{}-internal\"",
                    c.name
                )],
            );
            p.overlays.insert(c.name.clone(), self.install_overlay());
            p.delete_commands
                .push(format!("kind delete cluster --name {name} --kubeconfig {kc}"));
        }
        for r in topology::same_network_routes(&scenario.clusters) {
            let peer = self.node(&r.to);
            let on = self.node(&r.on);
            p.network_commands.push(format!(
                "docker exec {on} ip route replace {} via \"$(docker inspect -f '{{{{.NetworkSettings.Networks.kind.IPAddress}}}}' {peer})\"",
                r.destination
            ));
            if let Some(own) = scenario.cluster(&r.on).map(|c| c.subnets.pods) {
                p.network_commands.push(
                    self.docker()
                        .keep_source(&on, &own.to_string(), &r.destination.to_string())
                        .display(),
                );
            }
        }
        if self.opts.images.is_some() {
            p.delete_commands
                .push("iptables -D DOCKER-USER … meshconf-egress …; docker network rm kind   # what the run created".into());
        }
        p.notes = self.overlay_notes();
        if let Some(i) = &self.opts.images {
            p.notes
                .extend(i.provenance().into_iter().map(|l| format!("image: {l}")));
            p.properties.insert("envoy".into(), i.envoy.clone());
            p.properties.insert("node-image".into(), i.node_image.clone());
            p.properties.insert("images".into(), i.provenance().join("; "));
        }
        p
    }

    fn parts(&self) -> (Vec<String>, Vec<String>) {
        let envoy = match &self.opts.images {
            Some(i) => format!("Envoy sidecars (upstream Envoy {})", i.envoy),
            None => "Envoy sidecars (istio-proxy)".into(),
        };
        (
            vec![
                "kind clusters".into(),
                "MetalLB controller and speaker".into(),
                "istiod".into(),
                envoy,
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
                None => self.istioctl_candidate().ok_or_else(|| {
                    ProviderError::Missing("istioctl is not on PATH (or pass --istio-version X.Y.Z)".into())
                }),
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
            self.update(|_| {});
            if self.opts.images.is_some() {
                let subnet = self.prepare_network().await?;
                tracing::info!("kind network {subnet}");
            }
            let started = std::time::Instant::now();
            let creates = scenario.clusters.iter().map(|c| {
                let name = kind_cluster_name(&self.opts.prefix, &c.name);
                self.update(|s| s.clusters.push(name.clone()));
                async move { self.create_one(&name, c).await }
            });
            for r in futures::future::join_all(creates).await {
                r?;
            }
            self.phase("create", started);
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
            let started = std::time::Instant::now();
            let ready = out.iter().map(|c| async move {
                self.gate_ready(c).await?;
                self.phase(&format!("ready-{}", c.name), started);
                let loaded = std::time::Instant::now();
                let n = self
                    .load_images(&kind_cluster_name(&self.opts.prefix, &c.name))
                    .await?;
                self.phase(&format!("load-{n}-images-{}", c.name), loaded);
                Ok::<_, ProviderError>(())
            });
            for r in futures::future::join_all(ready).await {
                r?;
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
            let docker = self.docker();
            for r in topology::same_network_routes(&scenario.clusters) {
                let via = self.node_ip(&r.to).await?;
                docker
                    .add_route(&self.node(&r.on), &r.destination.to_string(), &via)
                    .run()
                    .await?;
                if let Some(own) = scenario.cluster(&r.on).map(|c| c.subnets.pods) {
                    docker
                        .keep_source(&self.node(&r.on), &own.to_string(), &r.destination.to_string())
                        .run()
                        .await?;
                }
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
            let manifest = self.metallb_manifest().await?;
            cluster.applier.apply_yaml(&manifest, None).await?;
            for sel in [
                "app=metallb,component=controller",
                "app=metallb,component=speaker",
            ] {
                k::wait_pods_ready(
                    &cluster.client,
                    "metallb-system",
                    sel,
                    1,
                    Duration::from_secs(180),
                )
                .await?;
            }
            let inspect = self.docker().inspect_kind_network().run().await?;
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
            // MetalLB's webhook refuses the pool for a few seconds after its pods are Ready (it fails closed).
            let mut last = None;
            for _ in 0..12 {
                match cluster.applier.apply_yaml(&yaml, None).await {
                    Ok(_) => {
                        return Ok(vec![format!(
                            "MetalLB {METALLB_VERSION} (controller and speaker Ready) with pool {} from {subnet}",
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
            let internal = self.kind().internal_kubeconfig(&name).run().await?;
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
            let state = self.state();
            let mut properties = self.phases.lock().map(|p| p.clone()).unwrap_or_default();
            if self.opts.images.is_some() {
                properties.insert("istiod-ack-errors".into(), self.ack_errors(&state).await);
                let count = match (
                    &state.egress,
                    self.egress_unmeasured.lock().ok().and_then(|u| u.clone()),
                ) {
                    (Some(rule), _) => rule.read().await,
                    (None, Some(why)) => EgressCount::Unmeasured(why),
                    (None, None) => EgressCount::Unmeasured("no kind network was set up".into()),
                };
                properties.insert("egress-packets".to_string(), count.to_string());
            }
            if self.opts.keep {
                return CleanupReport {
                    complete: false,
                    message: format!(
                        "kept (--keep): kind clusters {}; remove them with `meshconf down {}`",
                        state.clusters.join(", "),
                        self.opts.run_dir.display()
                    ),
                    properties,
                };
            }
            let kc = self.opts.run_dir.join("kubeconfig-deleted");
            let (complete, message) = match remove_created(&self.kind(), &self.docker(), &state, &kc).await {
                Ok(msgs) if msgs.is_empty() => (true, "nothing was created".to_string()),
                Ok(msgs) => {
                    let _ = std::fs::remove_dir_all(&self.opts.run_dir);
                    (true, msgs.join("; "))
                }
                Err(e) => (false, e),
            };
            CleanupReport {
                complete,
                message,
                properties,
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

    /// `meshconf down` from a shell that reaches no engine (or the wrong one): kind cannot delete the clusters,
    /// so the egress rule that guards them and the network that carries them must stay for the next attempt.
    #[tokio::test]
    async fn a_failed_cluster_delete_keeps_the_egress_rule_and_the_network() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("kind");
        std::fs::write(
            &bin,
            "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock' >&2\nexit 1\n",
        )
        .expect("write");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let kind = Kind {
            bin,
            node_image: None,
            docker_host: None,
        };
        let docker = Docker {
            bin: dir.path().join("no-docker"),
            docker_host: None,
        };
        let state = KindState {
            docker_host: None,
            clusters: vec!["meshconf-cluster1".into(), "meshconf-cluster2".into()],
            network_created: true,
            egress: Some(EgressRule::new(crate::tools::KIND_BRIDGE, "test-run")),
        };
        let err = remove_created(&kind, &docker, &state, &dir.path().join("kubeconfig-deleted"))
            .await
            .expect_err("kind delete failed");
        assert!(err.contains("kind delete meshconf-cluster1"), "{err}");
        assert!(err.contains("kept the egress rule and the kind network"), "{err}");
        assert!(!err.contains("removed the egress rule"), "{err}");
    }

    /// The shape `kind get kubeconfig --internal` prints (kind's documented output; credentials elided).
    const INTERNAL: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: LS0t\n    server: https://meshconf-cluster2-control-plane:6443\n  name: kind-meshconf-cluster2\ncontexts:\n- context:\n    cluster: kind-meshconf-cluster2\n    user: kind-meshconf-cluster2\n  name: kind-meshconf-cluster2\ncurrent-context: kind-meshconf-cluster2\nkind: Config\nusers:\n- name: kind-meshconf-cluster2\n  user:\n    client-certificate-data: LS0t\n    client-key-data: LS0t\n";

    fn provider(cgroup_v1: bool) -> KindProvider {
        KindProvider::new(KindOptions {
            prefix: "meshconf".into(),
            node_image: None,
            istio_version: None,
            run_dir: "/run/x".into(),
            keep: false,
            images: None,
            subnet: DEFAULT_KIND_SUBNET.parse().expect("subnet"),
            cgroup_v1,
        })
    }

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

    #[test]
    fn derived_config_keeps_the_users_patches_and_adds_cgroup_v1_only_when_needed() {
        let user = "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  podSubnet: \"10.10.0.0/16\"\nkubeadmConfigPatches:\n  - |\n    kind: ClusterConfiguration\n";
        let v1: serde_json::Value = serde_json::from_str(
            &provider(true)
                .derived_config(user, Path::new("c.yaml"))
                .expect("derive"),
        )
        .expect("json");
        let patches = v1["kubeadmConfigPatches"].as_array().expect("patches");
        assert_eq!(patches.len(), 2);
        assert_eq!(patches[1], CGROUP_V1_PATCH);
        assert_eq!(v1["networking"]["podSubnet"], "10.10.0.0/16");
        let v2: serde_json::Value = serde_json::from_str(
            &provider(false)
                .derived_config(user, Path::new("c.yaml"))
                .expect("derive"),
        )
        .expect("json");
        assert_eq!(v2["kubeadmConfigPatches"].as_array().map(Vec::len), Some(1));
        let bad = provider(true).derived_config("- a\n- b\n", Path::new("bad.yaml"));
        assert!(
            bad.expect_err("a list is not a kind config")
                .to_string()
                .contains("bad.yaml")
        );
    }

    #[test]
    fn ack_errors_are_counted_line_by_line() {
        let log = "2026-11-25T01:00:00Z info ads CDS: PUSH for node:x resources:20
                   2026-11-25T01:00:01Z warn ads ADS:CDS: ACK ERROR sidecar~10.10.0.5 Internal:Didn't find a registered implementation for 'istio.metadata_exchange'
                   2026-11-25T01:00:02Z info ads LDS: PUSH
                   2026-11-25T01:00:03Z warn ads ADS:LDS: ACK ERROR sidecar~10.10.0.5 Internal:istio.stats
";
        assert_eq!(count_ack_errors(log), 2);
        assert_eq!(
            count_ack_errors(
                "info ads CDS: PUSH
"
            ),
            0
        );
    }

    #[test]
    fn state_round_trips_for_meshconf_down() {
        let s = KindState {
            docker_host: Some("unix:///c/docker.sock".into()),
            clusters: vec!["meshconf-cluster1".into()],
            network_created: true,
            egress: Some(EgressRule::new("meshconf-kind", "r")),
        };
        let back: KindState = serde_json::from_str(&serde_json::to_string(&s).expect("ser")).expect("de");
        assert_eq!(back.clusters, s.clusters);
        assert_eq!(back.egress, s.egress);
    }
}
