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
use serde::{Deserialize, Serialize};

use super::egress::{EgressCount, EgressRule};
use super::metallb;
use super::{CleanupReport, ClusterAccess, ClusterProvider, Performed, ProviderError};
use crate::images::ImageSet;
use crate::kube as k;
use crate::plan::{
    Action, Condition, DataPlane, Placeholder, PoolSpec, ProviderAction, ProviderKind, ProviderProfile,
};
use crate::scenario::{ClusterName, Scenario};
use crate::tools::{Cmd, Docker, Istioctl, IstioctlSource, Kind, download_istioctl, find_engine, which};
use crate::topology::{self, kind_cluster_name};

mod lifecycle;
mod network;
mod overlays;

use lifecycle::remove_created;

pub use super::metallb::METALLB_VERSION;
#[cfg(test)]
use lifecycle::count_ack_errors;
#[cfg(test)]
use network::in_mesh_kubeconfig;
#[cfg(test)]
use overlays::CGROUP_V1_PATCH;
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
    /// The fleet the run uses (`--reuse`): its clusters outlive the run.
    pub fleet: Option<KindFleet>,
}

/// A run on a fleet: the clusters are the fleet's, kept after the run and reset instead of deleted.
#[derive(Debug, Clone)]
pub struct KindFleet {
    /// The fleet's key.
    pub key: String,
    /// The fleet's clusters exist and answer: reuse them; else this run creates them.
    pub warm: bool,
    /// What the plan's notes say about it (created, reused, recreated and why).
    pub note: String,
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
    /// ACK errors read per cluster before a fleet's reset.
    acks: Arc<Mutex<BTreeMap<String, Result<usize, String>>>>,
    /// A fleet's egress counter when this run began (a fleet's rule counts every run's packets).
    egress_before: Arc<Mutex<Option<u64>>>,
    /// Seconds per phase of cluster creation, for the reports.
    phases: Arc<Mutex<BTreeMap<String, String>>>,
}

/// The kind provider's state file in its run directory (a fleet's directory on a fleet).
pub const STATE_FILE: &str = "kind-state.json";

impl KindProvider {
    /// A kind provider.
    pub fn new(opts: KindOptions) -> Self {
        // A warm fleet's state (its clusters, network, egress rule) is the fleet's, written by the run that made it.
        let state = match &opts.fleet {
            Some(f) if f.warm => std::fs::read_to_string(opts.run_dir.join(STATE_FILE))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default(),
            _ => KindState::default(),
        };
        Self {
            opts,
            state: Arc::new(Mutex::new(state)),
            egress_unmeasured: Arc::new(Mutex::new(None)),
            egress_before: Arc::new(Mutex::new(None)),
            acks: Arc::new(Mutex::new(BTreeMap::new())),
            phases: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The ACK errors the reset's first actions read, `N` or `N; unread: …` (never a zero nobody read).
    fn fleet_ack_errors(&self) -> String {
        let acks = self.acks.lock().map(|a| a.clone()).unwrap_or_default();
        if acks.is_empty() {
            return "unread: no reset read istiod's logs (the run stopped before)".into();
        }
        let total: usize = acks.values().filter_map(|r| r.as_ref().ok()).sum();
        let unread: Vec<String> = acks
            .iter()
            .filter_map(|(c, r)| r.as_ref().err().map(|e| format!("{c}: {e}")))
            .collect();
        if unread.is_empty() {
            total.to_string()
        } else {
            format!("{total}; unreadable: {}", unread.join("; "))
        }
    }

    /// The clusters of this fleet answer: each kind cluster exists and its node container runs.
    pub async fn fleet_alive(&self, scenario: &Scenario) -> Result<(), String> {
        for c in &scenario.clusters {
            let node = self.node(&c.name);
            let out = self
                .docker()
                .inspect_format(&node, "{{.State.Running}}")
                .run()
                .await
                .map_err(|e| format!("node {node}: {e}"))?;
            if out.stdout.trim() != "true" {
                return Err(format!("node {node} is not running"));
            }
            let context = format!("kind-{}", kind_cluster_name(&self.opts.prefix, &c.name));
            let ready = async {
                let client = k::client_for(&self.kubeconfig(&c.name), &context)
                    .await
                    .map_err(|e| e.to_string())?;
                nodes_ready(&client, &context).await.map(|_| ())
            };
            match tokio::time::timeout(Duration::from_secs(20), ready).await {
                Ok(r) => r?,
                Err(_) => return Err(format!("{context} did not answer within 20 s")),
            }
        }
        Ok(())
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

    /// The istioctl to drive: `--istio-version` downloads one; `--istio NAME` is that build's; else PATH; else
    /// the one built with the images.
    fn istioctl_candidate(&self) -> Option<Istioctl> {
        let built = || {
            let bin = self.opts.images.as_ref()?.istio_dir().join("istioctl");
            bin.is_file().then_some(Istioctl {
                bin,
                source: IstioctlSource::RehearsalTools,
            })
        };
        if self.opts.images.as_ref().is_some_and(|i| i.istio_bin.is_some()) {
            return built();
        }
        Istioctl::from_path().ok().or_else(built)
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
}

impl KindProvider {
    /// MetalLB from its manifest, controller and speaker Ready, with the pool the action names: the `index`-th
    /// range carved from the top of the kind network's subnet as it is now.
    async fn metallb(
        &self,
        cluster: &ClusterAccess,
        pool: &PoolSpec,
        names: &(String, String),
    ) -> Result<Performed, ProviderError> {
        let local = self.opts.images.as_ref().map(|i| i.metallb.manifest.as_path());
        let manifest = metallb::manifest(local).await?;
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
        let subnet = match pool {
            PoolSpec::TopOfKindNetwork { .. } => {
                let inspect = self.docker().inspect_kind_network().run().await?;
                Some(
                    topology::kind_network_ipv4(&inspect.stdout)
                        .map_err(|e| ProviderError::Other(e.to_string()))?,
                )
            }
            PoolSpec::Fixed { .. } => None,
        };
        let range = metallb::range(pool, subnet)?;
        metallb::apply_pool(cluster, names, &range, 12).await?;
        Ok(Performed {
            bound: vec![(Placeholder::lb_pool(&cluster.name), range.clone())],
            log: vec![format!(
                "MetalLB {METALLB_VERSION} (controller and speaker Ready) with pool {range}"
            )],
            ..Performed::default()
        })
    }
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
                // A mixed-version scenario loads the images of every build its clusters run (all of them are
                // in the node image, so kind finds them present and skips the copy).
                let mut images: Vec<String> = i.to_load().into_iter().map(str::to_string).collect();
                for b in scenario.builds() {
                    images.extend(
                        i.build_images(b)
                            .into_iter()
                            .filter(|n| !images.contains(n))
                            .collect::<Vec<_>>(),
                    );
                }
                create.push(Action::Provider(ProviderAction::KindLoadImages {
                    cluster: c.name.clone(),
                    name: name.clone(),
                    images,
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
                None => super::metallb::manifest_url(),
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
            p.overlays
                .insert(c.name.clone(), self.install_overlay(c.istio.as_deref()));
            for b in scenario.builds() {
                p.build_overlays
                    .insert((c.name.clone(), b.to_string()), self.install_overlay(Some(b)));
            }
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
        if let Some(f) = &self.opts.fleet {
            p.outlives_run = true;
            if self.opts.images.is_some() {
                // The reset removes istiod: its logs are read first.
                for c in &scenario.clusters {
                    p.before_reset.insert(
                        c.name.clone(),
                        vec![Action::Provider(ProviderAction::AckErrors {
                            cluster: c.name.clone(),
                        })],
                    );
                }
            }
            p.notes.push(f.note.clone());
            p.delete_commands = vec![format!(
                "# the fleet's clusters stay for the next run: meshconf fleet down {} removes them",
                f.key
            )];
            if f.warm {
                // Created, routed and given MetalLB by the run that made the fleet: connect and check them.
                p.setup.clear();
                p.connect.clear();
                p.load_balancers.clear();
                for c in &scenario.clusters {
                    let name = kind_cluster_name(&self.opts.prefix, &c.name);
                    p.create.insert(
                        c.name.clone(),
                        vec![
                            Action::Provider(ProviderAction::ReuseCluster {
                                cluster: c.name.clone(),
                                name,
                                kubeconfig: self.kubeconfig(&c.name).display().to_string(),
                                fleet: f.key.clone(),
                            }),
                            Action::Wait {
                                cluster: c.name.clone(),
                                until: Condition::ApiReady,
                                deadline_secs: 60,
                            },
                        ],
                    );
                }
            }
        }
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

    fn helm(&self) -> Option<crate::tools::Helm> {
        let i = self.opts.images.as_ref()?;
        crate::tools::Helm::with_charts_of(&i.tools_bin, i.istio_dir())
    }

    fn istioctl_of_build<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Istioctl, ProviderError>> {
        Box::pin(async move {
            let images = self.opts.images.as_ref().ok_or_else(|| {
                ProviderError::Missing(format!(
                    "a cluster runs the Istio build {name}, which needs the images built here (make images)"
                ))
            })?;
            let b = crate::builds::pick(&images.tools_bin, name)
                .map_err(|e| ProviderError::Missing(e.to_string()))?;
            // The images must hold that build, tagged as its istioctl reports.
            images.with_build(&b).map_err(ProviderError::Missing)?;
            b.verified_istioctl()
                .await
                .map_err(|e| ProviderError::Missing(e.to_string()))
        })
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
        clusters: &'a BTreeMap<ClusterName, ClusterAccess>,
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
                    self.write_in_mesh_kubeconfig(cluster, name, Path::new(file))
                        .await
                }
                ProviderAction::NodeRoute {
                    on,
                    on_node,
                    destination,
                    via,
                    keep_source,
                    ..
                } => self.route(on, on_node, *destination, via, *keep_source).await,
                ProviderAction::MetalLb {
                    cluster, pool, names, ..
                } => {
                    let access = clusters
                        .get(cluster)
                        .ok_or_else(|| ProviderError::Other(format!("cluster {cluster} was not created")))?;
                    self.metallb(access, pool, names).await
                }
                ProviderAction::AckErrors { cluster } => {
                    let access = clusters
                        .get(cluster)
                        .ok_or_else(|| ProviderError::Other(format!("cluster {cluster} was not created")))?;
                    let read = lifecycle::istiod_ack_errors(&access.kubeconfig, &access.context).await;
                    let line = match &read {
                        Ok(n) => format!("{cluster}: {n} ACK ERROR lines in istiod's logs"),
                        Err(e) => format!("{cluster}: istiod's logs unreadable: {e}"),
                    };
                    if let Ok(mut a) = self.acks.lock() {
                        a.insert(cluster.as_str().to_string(), read);
                    }
                    Ok(Performed::log(vec![line]))
                }
                ProviderAction::ReuseCluster {
                    cluster,
                    name,
                    kubeconfig,
                    fleet,
                } => {
                    if let Some(rule) = &self.state().egress
                        && let EgressCount::Packets(n) = rule.read().await
                        && let Ok(mut b) = self.egress_before.lock()
                    {
                        b.get_or_insert(n);
                    }
                    let context = format!("kind-{name}");
                    let client = k::client_for(Path::new(kubeconfig), &context).await?;
                    let n = nodes_ready(&client, name).await.map_err(|e| {
                        ProviderError::Other(format!(
                            "fleet {fleet}: {e}; `meshconf fleet down {fleet}` and run again"
                        ))
                    })?;
                    let line = format!("{cluster}: fleet {fleet}'s {name}, {n} node(s) Ready");
                    let access =
                        ClusterAccess::new(cluster.clone(), PathBuf::from(kubeconfig), context, client);
                    Ok(Performed::created(access, line))
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
                let acks = match &self.opts.fleet {
                    // On a fleet the reset removed istiod: its logs were read by the reset's first action.
                    Some(_) => self.fleet_ack_errors(),
                    None => self.ack_errors(&state).await,
                };
                properties.insert("istiod-ack-errors".into(), acks);
                let count = match (
                    &state.egress,
                    self.egress_unmeasured.lock().ok().and_then(|u| u.clone()),
                ) {
                    (Some(rule), _) => {
                        match (rule.read().await, self.egress_before.lock().ok().and_then(|b| *b)) {
                            (EgressCount::Packets(n), Some(before)) => {
                                EgressCount::Packets(n.saturating_sub(before))
                            }
                            (count, _) => count,
                        }
                    }
                    (None, Some(why)) => EgressCount::Unmeasured(why),
                    (None, None) => EgressCount::Unmeasured("no kind network was set up".into()),
                };
                properties.insert("egress-packets".to_string(), count.to_string());
            }
            if let Some(f) = &self.opts.fleet {
                return CleanupReport {
                    complete: true,
                    message: format!(
                        "kept fleet {}: kind clusters {} (reset by the run; `meshconf fleet down {}` removes them)",
                        f.key,
                        state.clusters.join(", "),
                        f.key
                    ),
                    properties,
                };
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

/// How many nodes the cluster `client` talks to has, when every one is Ready; else what is wrong, naming `what`.
async fn nodes_ready(client: &kube::Client, what: &str) -> Result<usize, String> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let list = nodes
        .list(&Default::default())
        .await
        .map_err(|e| format!("list the nodes of {what}: {e}"))?;
    let ready = |n: &k8s_openapi::api::core::v1::Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    if list.items.is_empty() || !list.items.iter().all(ready) {
        return Err(format!("a node of {what} is not Ready"));
    }
    Ok(list.items.len())
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
            fleet: None,
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

    /// A warm fleet's plan connects to the kept clusters and creates, routes and gives MetalLB to nothing; every
    /// fleet plan snapshots the clusters after the provider's setup and resets them at the end.
    #[test]
    fn a_warm_fleet_plan_reuses_the_clusters_and_resets_them() {
        let s = crate::scenario::load_file(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/primary-remote.yaml"),
        )
        .expect("scenario");
        let variant = crate::mesh::Variant::for_version(crate::mesh::IstioVersion::new(1, 31, 0));
        let ids = |warm: bool| {
            let mut opts = provider(false).opts;
            opts.fleet = Some(KindFleet {
                key: "0123456789abcdef".into(),
                warm,
                note: "fleet".into(),
            });
            let p = KindProvider::new(opts);
            let plan = crate::plan::build(&s, &variant, p.profile(&s));
            let creates: Vec<bool> = plan
                .steps()
                .filter(|st| st.id.0.starts_with("create-cluster/"))
                .map(|st| {
                    st.actions
                        .iter()
                        .any(|a| matches!(a, Action::Provider(ProviderAction::ReuseCluster { .. })))
                })
                .collect();
            let ids: Vec<String> = plan.steps().map(|st| st.id.0.clone()).collect();
            (ids, creates)
        };
        let (warm, reused) = ids(true);
        assert_eq!(reused, vec![true, true]);
        assert!(
            !warm
                .iter()
                .any(|i| i.starts_with("load-balancers/") || i == "connect-networks"),
            "{warm:?}"
        );
        let (cold, reused) = ids(false);
        assert_eq!(reused, vec![false, false]);
        for ids in [&warm, &cold] {
            let snap = ids
                .iter()
                .position(|i| i == "snapshot/cluster1")
                .expect("snapshot");
            let lb = ids
                .iter()
                .position(|i| i.starts_with("load-balancers/"))
                .unwrap_or(0);
            let install = ids
                .iter()
                .position(|i| i == "install-istio/cluster1")
                .expect("install");
            assert!(lb < snap && snap < install, "{ids:?}");
            assert_eq!(ids.last().map(String::as_str), Some("reset/cluster2"));
        }
    }

    /// The reset uninstalls with the istioctl of the build the run left (after an in-place upgrade: the newer one)
    /// and gives the run's pods a short grace before their namespaces go.
    #[test]
    fn a_reset_uses_the_build_the_run_left_and_a_short_pod_grace() {
        let s = crate::scenario::load_file(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../scenarios/multi-primary-inplace-upgrade.yaml"),
        )
        .expect("scenario");
        let variant = crate::mesh::Variant::for_version(crate::mesh::IstioVersion::new(1, 31, 0));
        let mut opts = provider(false).opts;
        opts.fleet = Some(KindFleet {
            key: "0123456789abcdef".into(),
            warm: true,
            note: "fleet".into(),
        });
        let plan = crate::plan::build(&s, &variant, KindProvider::new(opts).profile(&s));
        let reset = plan
            .steps()
            .find(|st| st.id.0 == "reset/cluster1")
            .expect("a reset step");
        let builds: Vec<Option<String>> = reset
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::IstioctlUninstall { build, .. } => Some(build.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(builds, vec![Some("1.32-dev".to_string())]);
        let text = crate::plan::render_shell(&plan);
        assert!(
            text.contains("istioctl-1.32-dev uninstall --context=\"${CTX_CLUSTER1}\" --purge -y"),
            "{text}"
        );
        assert!(text.contains("--grace-period=1 --wait=false"), "{text}");
        // The run's pods stop before the uninstall: a pod it deletes first keeps a 30 s grace.
        let order: Vec<&str> = reset
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::StopCreatedPods { .. } => Some("stop"),
                Action::IstioctlUninstall { .. } => Some("uninstall"),
                Action::DeleteCreatedNamespaces { .. } => Some("namespaces"),
                _ => None,
            })
            .collect();
        assert_eq!(order, ["stop", "uninstall", "namespaces"]);
    }

    /// multi-primary and primary-remote share a fleet: one made by a scenario without a gateway still gets MetalLB,
    /// or the next primary-remote run on it waits for an address forever.
    #[test]
    fn a_new_fleet_gets_load_balancers_whatever_scenario_makes_it() {
        let s = crate::scenario::load_file(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/multi-primary.yaml"),
        )
        .expect("scenario");
        let variant = crate::mesh::Variant::for_version(crate::mesh::IstioVersion::new(1, 31, 0));
        let lbs = |fleet: bool| {
            let mut opts = provider(false).opts;
            opts.fleet = fleet.then(|| KindFleet {
                key: "0123456789abcdef".into(),
                warm: false,
                note: "fleet".into(),
            });
            let p = KindProvider::new(opts);
            crate::plan::build(&s, &variant, p.profile(&s))
                .steps()
                .filter(|st| st.id.0.starts_with("load-balancers/"))
                .count()
        };
        assert_eq!(lbs(true), 2);
        assert_eq!(
            lbs(false),
            0,
            "a run with its own clusters installs only what its scenario needs"
        );
    }
}
