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
use kube::api::Api;
use serde::{Deserialize, Serialize};

use super::egress::{EgressCount, EgressRule};
use super::{CleanupReport, ClusterAccess, ClusterProvider, Performed, ProviderError};
use crate::images::ImageSet;
use crate::kube as k;
use crate::mesh::InstallOverlay;
use crate::plan::{
    Action, Condition, DataPlane, Placeholder, PoolSpec, ProviderAction, ProviderKind, ProviderProfile,
};
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

    fn ensure_run_dir(&self) -> Result<(), ProviderError> {
        std::fs::create_dir_all(&self.opts.run_dir).map_err(|e| ProviderError::io("create run dir", e))?;
        self.update(|_| {});
        Ok(())
    }

    /// Writes the run's kind config for `c` to `path`: the scenario's file plus meshconf's patches.
    fn derive_config(&self, c: &crate::scenario::Cluster, path: &Path) -> Result<(), ProviderError> {
        let text = std::fs::read_to_string(&c.kind_config)
            .map_err(|e| ProviderError::io(format!("read kind config {}", c.kind_config.display()), e))?;
        let derived = self.derived_config(&text, &c.kind_config)?;
        std::fs::write(path, derived).map_err(|e| ProviderError::io(format!("write {}", path.display()), e))
    }

    async fn create_one(
        &self,
        name: &str,
        config: &Path,
        kubeconfig: &Path,
        image: Option<String>,
    ) -> Result<(), ProviderError> {
        let kind = Kind {
            node_image: image,
            ..self.kind()
        };
        match kind.create(name, config, kubeconfig).run().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let journal = self
                    .docker()
                    .journal_tail(&format!("{name}-control-plane"))
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

    /// MetalLB from its manifest, Ready, with the pool the action names: the `index`-th range carved from the
    /// top of the kind network's subnet as it is now.
    async fn metallb(
        &self,
        cluster: &ClusterAccess,
        pool: &PoolSpec,
        names: &(String, String),
    ) -> Result<Performed, ProviderError> {
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
        let range = match pool {
            PoolSpec::Fixed { range } => range.clone(),
            PoolSpec::TopOfKindNetwork { index, of, addresses } => {
                let inspect = self.docker().inspect_kind_network().run().await?;
                let subnet = topology::kind_network_ipv4(&inspect.stdout)
                    .map_err(|e| ProviderError::Other(e.to_string()))?;
                let pools = topology::carve_pools(subnet, *of, *addresses)
                    .map_err(|e| ProviderError::Other(e.to_string()))?;
                pools
                    .get(*index)
                    .ok_or_else(|| ProviderError::Other(format!("no address range {index} in {subnet}")))?
                    .as_range()
            }
        };
        let yaml = topology::metallb_pool_yaml(&names.0, &names.1, &range);
        // MetalLB's webhook refuses the pool for a few seconds after its pods are Ready (it fails closed).
        let mut last = None;
        for _ in 0..12 {
            match cluster.applier.apply_yaml(&yaml, None).await {
                Ok(_) => {
                    return Ok(Performed {
                        bound: vec![(Placeholder::lb_pool(&cluster.name), range.clone())],
                        log: vec![format!(
                            "MetalLB {METALLB_VERSION} (controller and speaker Ready) with pool {range}"
                        )],
                        ..Performed::default()
                    });
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
        if self.opts.images.is_some() {
            p.setup.push(Action::Provider(ProviderAction::KindNetwork {
                subnet: self.opts.subnet,
                bridge: crate::tools::KIND_BRIDGE.into(),
            }));
        }
        let n = scenario.clusters.len();
        for (index, c) in scenario.clusters.iter().enumerate() {
            let name = kind_cluster_name(&self.opts.prefix, &c.name);
            p.contexts.insert(c.name.clone(), format!("kind-{name}"));
            let (config, derived) = if self.opts.cgroup_v1 {
                (self.config_path(&c.name), true)
            } else {
                (c.kind_config.clone(), false)
            };
            let mut create = vec![
                Action::Provider(ProviderAction::KindCreate {
                    cluster: c.clone(),
                    name: name.clone(),
                    config: config.display().to_string(),
                    derived,
                    kubeconfig: self.kubeconfig(&c.name).display().to_string(),
                    image: self.node_image(),
                }),
                Action::Wait {
                    cluster: c.name.clone(),
                    until: Condition::ApiReady,
                    deadline_secs: 180,
                },
            ];
            if let Some(i) = &self.opts.images {
                create.push(Action::Provider(ProviderAction::KindLoadImages {
                    cluster: c.name.clone(),
                    name: name.clone(),
                    images: i.to_load().into_iter().map(str::to_string).collect(),
                }));
            }
            let in_mesh = self
                .opts
                .run_dir
                .join(format!("kubeconfig-{}-internal", c.name))
                .display()
                .to_string();
            create.push(Action::Provider(ProviderAction::InMeshKubeconfig {
                cluster: c.name.clone(),
                name: name.clone(),
                file: in_mesh.clone(),
            }));
            p.create.insert(c.name.clone(), create);
            p.in_mesh_kubeconfig.insert(c.name.clone(), in_mesh);
            let manifest = match &self.opts.images {
                Some(i) => i.metallb.manifest.display().to_string(),
                None => metallb_url(),
            };
            p.load_balancers.insert(
                c.name.clone(),
                vec![Action::Provider(ProviderAction::MetalLb {
                    cluster: c.name.clone(),
                    manifest,
                    pool: PoolSpec::TopOfKindNetwork {
                        index,
                        of: n,
                        addresses: LB_ADDRESSES,
                    },
                    names: ("default-pool".into(), "default-l2".into()),
                })],
            );
            p.overlays.insert(c.name.clone(), self.install_overlay());
            p.after_install
                .insert(c.name.clone(), vec![istiod_rollout(&c.name)]);
            p.delete_commands.push(format!(
                "kind delete cluster --name {name} --kubeconfig \"{}\"",
                self.kubeconfig(&c.name).display()
            ));
        }
        for r in topology::same_network_routes(&scenario.clusters) {
            let Some(own) = scenario.cluster(&r.on).map(|c| c.subnets.pods) else {
                continue;
            };
            p.connect.push(Action::Provider(ProviderAction::NodeRoute {
                on_node: self.node(&r.on),
                via_node: self.node(&r.to),
                on: r.on,
                via: r.to,
                destination: r.destination,
                keep_source: own,
            }));
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

    fn perform<'a>(
        &'a self,
        action: &'a ProviderAction,
        _clusters: &'a BTreeMap<ClusterName, ClusterAccess>,
    ) -> BoxFuture<'a, Result<Performed, ProviderError>> {
        Box::pin(async move {
            match action {
                ProviderAction::KindNetwork { .. } => {
                    self.ensure_run_dir()?;
                    let subnet = self.prepare_network().await?;
                    Ok(Performed::log(vec![format!("kind network {subnet}")]))
                }
                ProviderAction::KindCreate {
                    cluster,
                    name,
                    config,
                    derived,
                    kubeconfig,
                    image,
                } => {
                    self.ensure_run_dir()?;
                    self.update(|s| s.clusters.push(name.clone()));
                    let started = std::time::Instant::now();
                    let config = Path::new(config);
                    if *derived {
                        self.derive_config(cluster, config)?;
                    }
                    self.create_one(name, config, Path::new(kubeconfig), image.clone())
                        .await?;
                    self.phase(&format!("create-{}", cluster.name), started);
                    let context = format!("kind-{name}");
                    let client = k::client_for(Path::new(kubeconfig), &context).await?;
                    let access = ClusterAccess::new(
                        cluster.name.clone(),
                        PathBuf::from(kubeconfig),
                        context.clone(),
                        client,
                    );
                    Ok(Performed {
                        created: Some(access),
                        log: vec![format!("{}: context {context} in {kubeconfig}", cluster.name)],
                        props: BTreeMap::from([(
                            "create-seconds".into(),
                            format!("{:.1}", started.elapsed().as_secs_f64()),
                        )]),
                        ..Performed::default()
                    })
                }
                ProviderAction::KindLoadImages {
                    cluster,
                    name,
                    images,
                } => {
                    let started = std::time::Instant::now();
                    let list: Vec<&str> = images.iter().map(String::as_str).collect();
                    if !list.is_empty() {
                        self.kind().load_images(name, &list).run().await?;
                    }
                    self.phase(&format!("load-{}-images-{cluster}", list.len()), started);
                    Ok(Performed::log(vec![format!(
                        "loaded {} images into {name}",
                        list.len()
                    )]))
                }
                ProviderAction::InMeshKubeconfig { cluster, name, file } => {
                    // The in-mesh view: `kind get kubeconfig --internal` names the API server by its container
                    // hostname, which istiod in the other cluster cannot resolve, so it is rewritten to the node's
                    // address on the kind network (as Istio's own kind provisioner does).
                    let ip = self.node_ip(cluster).await?;
                    let internal = self.kind().internal_kubeconfig(name).run().await?;
                    let rewritten = in_mesh_kubeconfig(&internal.stdout, name, &ip)?;
                    write_private(Path::new(file), &rewritten)?;
                    Ok(Performed {
                        bound: vec![(Placeholder::node_ip(cluster), ip.clone())],
                        log: vec![format!("{file}: server https://{ip}:6443 (content not logged)")],
                        ..Performed::default()
                    })
                }
                ProviderAction::NodeRoute {
                    on,
                    on_node,
                    destination,
                    via,
                    keep_source,
                    ..
                } => {
                    let ip = self.node_ip(via).await?;
                    let docker = self.docker();
                    let d = destination.to_string();
                    docker.add_route(on_node, &d, &ip).run().await?;
                    docker
                        .keep_source(on_node, &keep_source.to_string(), &d)
                        .run()
                        .await?;
                    Ok(Performed {
                        bound: vec![(Placeholder::node_ip(via), ip.clone())],
                        log: vec![format!("{on}: route {destination} via {ip} ({via})")],
                        ..Performed::default()
                    })
                }
                ProviderAction::MetalLb {
                    cluster, pool, names, ..
                } => {
                    let access = _clusters
                        .get(cluster)
                        .ok_or_else(|| ProviderError::Other(format!("cluster {cluster} was not created")))?;
                    self.metallb(access, pool, names).await
                }
                other => Err(ProviderError::Other(format!(
                    "the kind provider does not perform {other:?}"
                ))),
            }
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

/// After `istioctl install` on a real cluster: wait for the istiod Deployment to roll out.
pub(super) fn istiod_rollout(c: &ClusterName) -> Action {
    Action::Wait {
        cluster: c.clone(),
        until: Condition::Rollout {
            namespace: "istio-system".into(),
            deployment: "istiod".into(),
        },
        deadline_secs: 300,
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
