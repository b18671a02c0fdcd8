//! The `kwok` provider (rehearsal): every scenario cluster is a real control plane (etcd, kube-apiserver,
//! controller-manager, scheduler) started by kwokctl's binary runtime, with kwok standing in for kubelets.
//! Where a pod would run a program that matters, the real program runs as a local process instead: one istiod
//! per primary and one MetalLB controller per cluster. All traffic stays on 127.0.0.1.

mod cluster;
mod fleet;
mod istiod;
mod metallb;
mod ports;
mod tools;

pub use fleet::{KwokFleet, KwokFleetState, STATE_FILE as FLEET_STATE_FILE, read_state as read_fleet_state};
pub use ports::{check_port_base, ephemeral_range};
pub use tools::ToolsBin;

use cluster::first_24;
use ports::{Ports, rehearsal_pool};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{CleanupReport, ClusterAccess, ClusterProvider, Performed, ProviderError};
use crate::diagnose::EndpointFact;
use crate::mesh::InstallOverlay;
use crate::plan::{Action, DataPlane, PoolSpec, ProviderAction, ProviderKind, ProviderProfile};
use crate::rehearsal::procs::{Supervised, port_listening};
use crate::rehearsal::state::RehearsalState;
use crate::report::ISTIOD_VERSION_PROPERTY;
use crate::scenario::{Cluster, ClusterName, Role, Scenario};
use crate::tools::{Cmd, Istioctl, IstioctlSource};

/// Options of the kwok provider.
#[derive(Debug, Clone)]
pub struct KwokOptions {
    /// First of the 127.0.0.1 ports the rehearsal uses (20 per cluster).
    pub port_base: u16,
    /// Run directory (kubeconfigs, certs, logs); created if missing.
    pub run_dir: PathBuf,
    /// The binary kwok's exec rule re-executes as the curl stand-in.
    pub shim_exe: PathBuf,
    /// Keep the clusters and processes after the run.
    pub keep: bool,
    /// The fleet the run uses (`--reuse`): `run_dir` is then the fleet's directory and its control planes outlive
    /// the run.
    pub fleet: Option<KwokFleet>,
}

#[derive(Default)]
struct Inner {
    prepared: bool,
    created: Vec<String>,
    procs: Vec<Supervised>,
    state: RehearsalState,
    indices: BTreeMap<ClusterName, usize>,
    clusters: BTreeMap<ClusterName, Cluster>,
}

/// The rehearsal provider.
pub struct KwokProvider {
    tools: ToolsBin,
    opts: KwokOptions,
    inner: Arc<Mutex<Inner>>,
}

fn ctx_name(c: &ClusterName) -> String {
    format!("kwok-{c}")
}

impl KwokProvider {
    /// A provider using `tools`.
    pub fn new(tools: ToolsBin, opts: KwokOptions) -> Self {
        Self {
            tools,
            opts,
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    fn ports(&self, i: usize) -> Ports {
        Ports::for_index(self.opts.port_base, i)
    }

    fn kwok_dir(&self) -> PathBuf {
        self.opts.run_dir.join("kwok")
    }

    fn cluster_kubeconfig(&self, c: &ClusterName) -> PathBuf {
        self.kwok_dir()
            .join("clusters")
            .join(c.as_str())
            .join("kubeconfig.yaml")
    }

    fn state_path(&self) -> PathBuf {
        self.opts.run_dir.join("rehearsal-state.json")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn path_env(&self) -> String {
        format!(
            "{}:{}:/usr/local/bin:/usr/bin:/bin",
            self.opts.run_dir.join("shimbin").display(),
            self.tools.dir.display()
        )
    }

    fn kwokctl(&self, args: &[&str]) -> Cmd {
        Cmd::new(self.tools.path("kwokctl"))
            .args(args.iter().copied())
            .env("KWOK_WORKDIR", self.kwok_dir().display().to_string())
            .env(
                "KWOK_KUBE_VERSION",
                self.tools.versions().get("k8s").cloned().unwrap_or_default(),
            )
            .env(
                "PATH",
                format!("{}:/usr/local/bin:/usr/bin:/bin", self.tools.dir.display()),
            )
    }

    /// `kwokctl delete cluster`, tried again when it fails. A create killed mid-way (a SIGINT 0.2 s into it, seen
    /// once in CI) can leave a component running whose pid file kwokctl had not written yet: delete then fails to
    /// parse the empty file, every time. Before the last attempt the components provably this run's (running in
    /// the cluster's own directory under the run directory) are stopped and the unreadable pid files removed
    /// ([`crate::rehearsal::strays`]). Deleting a cluster that is already gone succeeds, so retrying is safe.
    /// Returns the attempt that succeeded and what was cleared on the way.
    async fn delete_cluster(
        &self,
        name: &str,
        kubeconfig: &str,
    ) -> Result<(u32, Vec<String>), crate::tools::ToolError> {
        let mut cleared = Vec::new();
        let mut attempt = 1;
        loop {
            let r = self
                .kwokctl(&["--name", name, "delete", "cluster", "--kubeconfig", kubeconfig])
                .timeout(Duration::from_secs(120))
                .run()
                .await;
            match r {
                Ok(_) => return Ok((attempt, cleared)),
                Err(e) if attempt >= 3 => return Err(e),
                Err(e) => {
                    tracing::warn!("kwokctl delete {name} (attempt {attempt}): {e}; trying again");
                    if attempt == 2 {
                        let workdir = self.kwok_dir().join("clusters").join(name);
                        cleared = tokio::task::spawn_blocking(move || {
                            crate::rehearsal::strays::clear(&workdir, Duration::from_secs(5))
                        })
                        .await
                        .unwrap_or_default();
                    } else {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    attempt += 1;
                }
            }
        }
    }

    fn write_state(&self, inner: &Inner) -> Result<(), ProviderError> {
        inner
            .state
            .write(&self.state_path())
            .map_err(|e| ProviderError::io("write rehearsal state", e))
    }

    fn index(&self, c: &ClusterName) -> usize {
        self.lock().indices.get(c).copied().unwrap_or(0)
    }

    /// Starts a tool from the tools directory as a supervised process and records it for health checks and
    /// cleanup; returns its PID.
    fn supervise(
        &self,
        name: &str,
        program: &std::path::Path,
        args: &[String],
        env: &[(String, String)],
        dir: &std::path::Path,
        log: &str,
    ) -> Result<u32, ProviderError> {
        let proc = Supervised::spawn(name, program, args, env, dir, &dir.join(log))
            .map_err(|e| ProviderError::io(format!("start {name}"), e))?;
        let pid = proc.pid();
        self.lock().procs.push(proc);
        Ok(pid)
    }

    fn log_tail(&self, name: &str) -> String {
        self.lock()
            .procs
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.log_tail(15))
            .unwrap_or_default()
    }

    fn dead(&self) -> Vec<String> {
        let mut inner = self.lock();
        inner
            .procs
            .iter_mut()
            .filter_map(|p| {
                if p.running() {
                    None
                } else {
                    Some(format!(
                        "{} (pid {}) exited; log tail:\n{}",
                        p.name,
                        p.pid(),
                        p.log_tail(10)
                    ))
                }
            })
            .collect()
    }

    /// An install overlay: `sets`, and where builds are named (`versioned`) `values.global.tag` set to the label
    /// of `build` (the run's default build when `None`).
    fn tagged(
        &self,
        mut sets: Vec<(String, String)>,
        reason: &str,
        build: Option<&str>,
        versioned: bool,
    ) -> InstallOverlay {
        let mut reason = reason.to_string();
        let label = match build {
            Some(b) => crate::builds::pick(&self.tools.dir, b).ok().map(|b| b.label),
            None => crate::builds::catalog(&self.tools.dir)
                .into_iter()
                .find(|b| b.default)
                .map(|b| b.label),
        };
        if let (true, Some(label)) = (versioned, label) {
            sets.push(("values.global.tag".into(), label));
            reason.push_str(
                "; no image is pulled, so the images carry their build's label as tag and each sidecar names \
                 the build that injected it",
            );
        }
        InstallOverlay {
            sets,
            reason: Some(reason),
        }
    }

    /// Stops the supervised process `name` (SIGTERM, then SIGKILL after 10 s) and forgets it; returns its PID, or
    /// `None` when none runs under that name.
    fn stop_process(&self, name: &str) -> Option<u32> {
        let mut p = {
            let mut inner = self.lock();
            let at = inner.procs.iter().position(|p| p.name == name)?;
            inner.procs.remove(at)
        };
        let pid = p.pid();
        p.stop(Duration::from_secs(10));
        Some(pid)
    }

    /// Kills a supervised process by name (for failure-injection tests). Returns whether one was found.
    pub fn kill_process(&self, name: &str) -> bool {
        let mut inner = self.lock();
        match inner.procs.iter_mut().find(|p| p.name == name) {
            Some(p) => {
                let pid = nix::unistd::Pid::from_raw(p.pid() as i32);
                let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
                std::thread::sleep(Duration::from_millis(200));
                true
            }
            None => false,
        }
    }

    /// The plan's ports for cluster `index` are this provider's, and a reuse (`fleet`) is of this provider's warm
    /// fleet: else the plan was built by another provider and must not run here.
    fn plan_ports_match(
        &self,
        name: &ClusterName,
        index: usize,
        ports: (u16, u16),
        fleet: Option<&String>,
    ) -> Result<(), ProviderError> {
        let p = self.ports(index);
        let mine = (p.apiserver, p.metallb_health);
        if let Some(key) = fleet
            && !self.opts.fleet.as_ref().is_some_and(|f| f.warm && &f.key == key)
        {
            return Err(ProviderError::Other(format!(
                "the plan reuses {name} of fleet {key}; this provider has no such warm fleet: build the plan with \
                 this provider"
            )));
        }
        if mine != ports {
            return Err(ProviderError::Other(format!(
                "the plan gives {name} the ports {ports:?}, this provider {mine:?}: build the plan with this provider"
            )));
        }
        Ok(())
    }

    /// Every 127.0.0.1 port this provider may open for `n` clusters.
    pub fn all_ports(&self, n: usize) -> Vec<u16> {
        (0..n).flat_map(|i| self.ports(i).all()).collect()
    }

    /// The ports of `n` clusters (`which` of each) still listening after up to 5 s.
    async fn listening_after(&self, n: usize, which: impl Fn(&Ports) -> Vec<u16>) -> Vec<u16> {
        let mut left = Vec::new();
        for _ in 0..50 {
            left = (0..n)
                .flat_map(|i| which(&self.ports(i)))
                .filter(|p| port_listening(*p))
                .collect();
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        left
    }
}

/// What a create or reuse action reports: the cluster, `what` it is, its context and kubeconfig.
fn created(name: &ClusterName, access: ClusterAccess, what: &str) -> Performed {
    let line = format!(
        "{name}: {what}context {} in {}",
        access.context,
        access.kubeconfig.display()
    );
    Performed::created(access, line)
}

/// The control-plane revisions `cluster` installs, in order, with the build each runs (`None`: the run's).
fn revision_installs(scenario: &Scenario, cluster: &ClusterName) -> Vec<(String, Option<String>)> {
    scenario
        .steps
        .iter()
        .filter_map(|s| match s {
            crate::scenario::Step::InstallIstio(i) if &i.cluster == cluster => {
                i.revision.clone().map(|r| (r, scenario.build_of_install(i)))
            }
            _ => None,
        })
        .collect()
}

/// Stops the traffic generator stand-ins the run's `loadgen` execs started (recorded in `run_dir/pids`), each
/// only while its pid file proves it is still the process started then.
fn stop_generators(run_dir: &std::path::Path) -> Vec<String> {
    use crate::rehearsal::pidfile;
    let mut stopped = Vec::new();
    let prefix = format!("{}-", crate::apps::LOADGEN);
    for e in std::fs::read_dir(run_dir.join("pids"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with(&prefix) {
            continue;
        }
        if let Ok(rec) = pidfile::read(&e.path())
            && pidfile::still_ours(&rec).is_ok()
        {
            let pg = nix::unistd::Pid::from_raw(rec.pid);
            let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
            stopped.push(format!("{name} (pid {})", rec.pid));
        }
        let _ = std::fs::remove_file(e.path());
    }
    stopped
}

impl ClusterProvider for KwokProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Kwok
    }

    fn profile(&self, scenario: &Scenario) -> ProviderProfile {
        let mut p = ProviderProfile {
            notes: vec![
            "REHEARSAL: real etcd, kube-apiserver, controller-manager, scheduler (kwokctl binary runtime), \
            istioctl, istiod and MetalLB controller; kwok stands in for kubelets"
            .into(),
            "no Envoy runs: curl in the client pod is answered by meshconf's stand-in from the endpoints \
            istiod serves that pod over ADS (data plane computed)"
            .into(),
            "webhooks use https://127.0.0.1 URLs because istiod runs as a local process (overlay below)".into(),
            ],
            // kwokctl allocates nothing across clusters; created one after another with pinned ports, they cannot
            // collide.
            parallel_create: false,
            ..ProviderProfile::empty(ProviderKind::Kwok, DataPlane::Computed)
        };
        if scenario
            .steps
            .iter()
            .any(|s| matches!(s, crate::scenario::Step::StartTraffic(_)))
        {
            p.notes.push(
                "live traffic: `loadgen` in the generator pod is meshconf's stand-in, sending at the pod's -rate; \
                 each request is answered from what istiod pushes that pod's sidecar and the gateways over standing \
                 ADS subscriptions (kept when istiod goes, as Envoy keeps its configuration), a pod asked to stop answers for \
                 its preStop sleep (none without one, kwok removes it at once); every request is a new connection (keep-alive not modelled) and its latency is the \
                 time to compute the answer (data plane computed)"
                    .into(),
            );
        }
        let run_dir = self.opts.run_dir.display().to_string();
        let webhook_of = |i: usize| self.ports(i).webhook;
        // Where the scenario names builds, each install tags its images with its build's label (kwok pulls
        // nothing): every sidecar the real injector writes then names the build whose istiod injected it.
        let versioned = !scenario.builds().is_empty();
        for (i, c) in scenario.clusters.iter().enumerate() {
            let ports = self.ports(i);
            p.contexts.insert(c.name.clone(), ctx_name(&c.name));
            p.create.insert(
                c.name.clone(),
                vec![Action::Provider(ProviderAction::KwokCreate {
                    cluster: c.clone(),
                    index: i,
                    ports: (ports.apiserver, ports.metallb_health),
                    pod_cidr: first_24(c),
                    run_dir: run_dir.clone(),
                })],
            );
            p.load_balancers.insert(
                c.name.clone(),
                vec![Action::Provider(ProviderAction::RehearsalMetalLb {
                    cluster: c.name.clone(),
                    manifest: self.tools.path("metallb-native.yaml").display().to_string(),
                    ports: (ports.metallb_metrics, ports.metallb_health),
                    pool: PoolSpec::Fixed {
                        range: rehearsal_pool(i),
                    },
                    names: ("rehearsal".into(), "rehearsal".into()),
                    run_dir: run_dir.clone(),
                })],
            );
            match c.role {
                Role::Primary => {
                    let w = webhook_of(i);
                    let webhooks = vec![
                        (
                            "values.istiodRemote.injectionURL".to_string(),
                            format!("https://127.0.0.1:{w}/inject"),
                        ),
                        (
                            "values.base.validationURL".to_string(),
                            format!("https://127.0.0.1:{w}/validate"),
                        ),
                    ];
                    let reason = "rehearsal: the API server calls the local istiod's webhooks on loopback";
                    p.overlays.insert(
                        c.name.clone(),
                        self.tagged(webhooks.clone(), reason, c.istio.as_deref(), versioned),
                    );
                    for b in scenario.builds() {
                        p.build_overlays.insert(
                            (c.name.clone(), b.to_string()),
                            self.tagged(webhooks.clone(), reason, Some(b), versioned),
                        );
                    }
                    p.after_install.insert(
                        c.name.clone(),
                        vec![Action::Provider(ProviderAction::StartIstiod {
                            cluster: c.name.clone(),
                            build: c.istio.clone(),
                            revision: None,
                            ports: (ports.xds, ports.webhook),
                            run_dir: run_dir.clone(),
                        })],
                    );
                    // Each control-plane revision is an istiod process of its own, in the cluster's next slot of
                    // ports (two per cluster: a canary upgrade's old and new revision).
                    for (slot, (rev, build)) in revision_installs(scenario, &c.name).into_iter().enumerate() {
                        let sp = ports.for_slot(slot);
                        let w = sp.webhook;
                        let sets = vec![
                            (
                                "values.istiodRemote.injectionURL".to_string(),
                                format!("https://127.0.0.1:{w}/inject"),
                            ),
                            (
                                "values.base.validationURL".to_string(),
                                format!("https://127.0.0.1:{w}/validate"),
                            ),
                        ];
                        let reason = format!(
                            "rehearsal: the API server calls revision {rev}'s local istiod's webhooks on loopback"
                        );
                        p.revisions.insert(
                            (c.name.clone(), rev.clone()),
                            crate::plan::RevisionProfile {
                                overlay: self.tagged(sets, &reason, build.as_deref(), versioned),
                                after_install: vec![Action::Provider(ProviderAction::StartIstiod {
                                    cluster: c.name.clone(),
                                    build,
                                    revision: Some(rev.clone()),
                                    ports: (sp.xds, sp.webhook),
                                    run_dir: run_dir.clone(),
                                })],
                                after_uninstall: vec![Action::Provider(ProviderAction::StopIstiod {
                                    cluster: c.name.clone(),
                                    revision: rev,
                                })],
                            },
                        );
                    }
                }
                Role::Remote => {
                    let pi = c
                        .primary
                        .as_ref()
                        .and_then(|pn| scenario.cluster_index(pn))
                        .unwrap_or(0);
                    let w = webhook_of(pi);
                    let webhooks = vec![
                        (
                            "values.istiodRemote.injectionURL".into(),
                            format!(
                                "https://127.0.0.1:{w}/inject/cluster/{}/net/{}",
                                c.name, c.network
                            ),
                        ),
                        (
                            "values.base.validationURL".into(),
                            format!("https://127.0.0.1:{w}/validate"),
                        ),
                    ];
                    let reason =
                        "rehearsal: the remote's webhooks call the primary's local istiod on loopback";
                    p.overlays.insert(
                        c.name.clone(),
                        self.tagged(webhooks, reason, c.istio.as_deref(), versioned),
                    );
                }
            }
            p.delete_commands.push(format!(
                "kwokctl --name {} delete cluster --kubeconfig \"{run_dir}/kubeconfig\"",
                c.name
            ));
        }
        p.delete_commands.push(format!(
            "kill istiod and metallb-controller processes (PIDs in \"{run_dir}/pids\")"
        ));
        if let Some(f) = &self.opts.fleet {
            p.outlives_run = true;
            p.notes.push(f.note.clone());
            p.delete_commands = vec![
                format!("kill istiod and metallb-controller processes (PIDs in \"{run_dir}/pids\")"),
                format!(
                    "# the fleet's control planes stay for the next run: meshconf fleet down {} removes them",
                    f.key
                ),
            ];
            if f.warm {
                // Created by the run that made the fleet: connect to them. Routes, MetalLB's controller and istiod
                // are each run's own (local processes and the run's rehearsal state), so they stay in the plan.
                for (i, c) in scenario.clusters.iter().enumerate() {
                    let ports = self.ports(i);
                    p.create.insert(
                        c.name.clone(),
                        vec![Action::Provider(ProviderAction::KwokReuse {
                            cluster: c.clone(),
                            index: i,
                            ports: (ports.apiserver, ports.metallb_health),
                            fleet: f.key.clone(),
                            run_dir: run_dir.clone(),
                        })],
                    );
                }
            }
        }
        // What kind's node routes are: pods of clusters on one network reach each other directly.
        for a in &scenario.clusters {
            for b in scenario
                .clusters
                .iter()
                .filter(|b| b.name != a.name && b.network == a.network)
            {
                p.connect.push(Action::Provider(ProviderAction::RehearsalRoute {
                    from: a.name.clone(),
                    to: b.name.clone(),
                }));
            }
        }
        p
    }

    fn parts(&self) -> (Vec<String>, Vec<String>) {
        let v = self.tools.versions();
        let g = |k: &str| v.get(k).cloned().unwrap_or_else(|| "?".into());
        (
            vec![
                format!("etcd {}", g("etcd")),
                format!("kube-apiserver/controller-manager/scheduler {}", g("k8s")),
                format!("kwok {}", g("kwok")),
                format!("istioctl and istiod {}", g("istio")),
                format!("MetalLB controller {}", g("metallb")),
                "sidecar injection through the API server".into(),
            ],
            vec![
                "pods (kwok)".into(),
                "data plane: curl answers computed from istiod EDS".into(),
            ],
        )
    }

    fn helm(&self) -> Option<crate::tools::Helm> {
        crate::tools::Helm::with_charts_of(&self.tools.dir, self.tools.istio_dir())
    }

    fn istioctl_of_build<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Istioctl, ProviderError>> {
        Box::pin(async move {
            let b = crate::builds::pick(&self.tools.dir, name)
                .map_err(|e| ProviderError::Missing(e.to_string()))?;
            b.verified_istioctl()
                .await
                .map_err(|e| ProviderError::Missing(e.to_string()))
        })
    }

    fn istioctl(&self) -> BoxFuture<'_, Result<Istioctl, ProviderError>> {
        Box::pin(async move {
            let bin = self.tools.path("istioctl");
            if !bin.is_file() {
                return Err(ProviderError::Missing(format!(
                    "{} is missing: run `make tools`",
                    bin.display()
                )));
            }
            Ok(Istioctl {
                bin,
                source: IstioctlSource::RehearsalTools,
            })
        })
    }

    fn perform<'a>(
        &'a self,
        action: &'a ProviderAction,
        clusters: &'a BTreeMap<ClusterName, ClusterAccess>,
    ) -> BoxFuture<'a, Result<Performed, ProviderError>> {
        Box::pin(async move {
            let cluster = |name: &ClusterName| {
                clusters
                    .get(name)
                    .ok_or_else(|| ProviderError::Other(format!("cluster {name} was not created")))
            };
            match action {
                ProviderAction::KwokCreate {
                    cluster: c,
                    index,
                    ports,
                    ..
                } => {
                    self.plan_ports_match(&c.name, *index, *ports, None)?;
                    self.prepare_once()?;
                    self.ports_free(*index)?;
                    let access = self.create_one(c, *index).await?;
                    Ok(created(&c.name, access, ""))
                }
                ProviderAction::KwokReuse {
                    cluster: c,
                    index,
                    ports,
                    fleet,
                    ..
                } => {
                    self.plan_ports_match(&c.name, *index, *ports, Some(fleet))?;
                    self.prepare_once()?;
                    let access = self.reuse_one(c, *index, fleet).await?;
                    Ok(created(
                        &c.name,
                        access,
                        &format!("fleet {fleet}'s kwok control plane, node Ready; "),
                    ))
                }
                ProviderAction::RehearsalMetalLb {
                    cluster: name,
                    pool,
                    names,
                    ..
                } => self.rehearsal_metallb(cluster(name)?, pool, names).await,
                ProviderAction::RehearsalRoute { from, to } => {
                    let mut inner = self.lock();
                    let c = inner
                        .state
                        .clusters
                        .get_mut(from.as_str())
                        .ok_or_else(|| ProviderError::Other(format!("cluster {from} was not created")))?;
                    if !c.routed_to.iter().any(|t| t == to.as_str()) {
                        c.routed_to.push(to.to_string());
                    }
                    self.write_state(&inner)?;
                    Ok(Performed::log(vec![format!("{from} → {to}: routed")]))
                }
                ProviderAction::StartIstiod {
                    cluster: name,
                    build,
                    revision,
                    ports,
                    ..
                } => {
                    let base = self.ports(self.index(name));
                    let slot = (0..2)
                        .find(|s| {
                            let p = base.for_slot(*s);
                            (p.xds, p.webhook) == *ports
                        })
                        .unwrap_or(0);
                    let p = base.for_slot(slot);
                    if (p.xds, p.webhook) != *ports {
                        return Err(ProviderError::Other(format!(
                            "the plan gives istiod of {name} the ports {ports:?}, this provider {:?}",
                            (p.xds, p.webhook)
                        )));
                    }
                    let binary = match build {
                        Some(b) => crate::builds::pick(&self.tools.dir, b)
                            .map_err(|e| ProviderError::Missing(e.to_string()))?
                            .path("pilot-discovery"),
                        None => self.tools.path("pilot-discovery"),
                    };
                    let (lines, version) = self
                        .start_istiod(cluster(name)?, &binary, revision.as_deref(), slot)
                        .await?;
                    let mut done = Performed::log(lines);
                    done.props.insert(ISTIOD_VERSION_PROPERTY.into(), version);
                    Ok(done)
                }
                ProviderAction::StopIstiod {
                    cluster: name,
                    revision,
                } => {
                    let proc = format!("istiod-{name}-{revision}");
                    let line = match self.stop_process(&proc) {
                        Some(pid) => {
                            format!("stopped {proc} (pid {pid}): revision {revision} is uninstalled")
                        }
                        None => format!("{proc} was not running"),
                    };
                    let mut inner = self.lock();
                    if let Some(c) = inner.state.clusters.get_mut(name.as_str()) {
                        c.removed_revisions.push(revision.clone());
                    }
                    if let Some(c) = inner.state.clusters.get_mut(name.as_str())
                        && let Some(gone) = c.istiod_revisions.remove(revision)
                        && c.istiod_xds.as_ref() == Some(&gone)
                    {
                        // What names no revision is served by a control plane still running.
                        c.istiod_xds = c.istiod_revisions.values().next().cloned();
                    }
                    self.write_state(&inner)?;
                    Ok(Performed::log(vec![line]))
                }
                other => Err(ProviderError::Other(format!(
                    "the rehearsal does not perform {other:?}"
                ))),
            }
        })
    }

    fn cleanup(&self) -> BoxFuture<'_, CleanupReport> {
        Box::pin(async move {
            if self.opts.keep {
                return CleanupReport {
                    complete: false,
                    message: format!("kept (--keep): run dir {}", self.opts.run_dir.display()),
                    properties: BTreeMap::new(),
                };
            }
            let (procs, created, n) = {
                let mut inner = self.lock();
                let n = inner.indices.len().max(inner.created.len());
                (
                    std::mem::take(&mut inner.procs),
                    std::mem::take(&mut inner.created),
                    n,
                )
            };
            let mut msgs = Vec::new();
            let stopped = tokio::task::spawn_blocking(move || {
                let mut procs = procs;
                procs
                    .iter_mut()
                    .map(|p| {
                        p.stop(Duration::from_secs(5));
                        p.name.clone()
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let mut stopped = stopped;
            stopped.extend(stop_generators(&self.opts.run_dir));
            if !stopped.is_empty() {
                msgs.push(format!("stopped {}", stopped.join(", ")));
            }
            if let Some(f) = &self.opts.fleet {
                // The control planes stay; what this run opened must not keep listening.
                let left = self.listening_after(n, |p| p.per_run()).await;
                let clusters = fleet::read_state(&self.opts.run_dir)
                    .map(|s| s.clusters.join(", "))
                    .unwrap_or_default();
                msgs.push(format!(
                    "kept fleet {}: kwok clusters {clusters} (reset by the run; `meshconf fleet down {}` removes them)",
                    f.key, f.key
                ));
                if !left.is_empty() {
                    msgs.push(format!("ports still listening: {left:?}"));
                }
                return CleanupReport {
                    complete: left.is_empty(),
                    message: msgs.join("; "),
                    properties: BTreeMap::new(),
                };
            }
            let kc = self.opts.run_dir.join("kubeconfig").display().to_string();
            let mut ok = true;
            for name in &created {
                match self.delete_cluster(name, &kc).await {
                    Ok((1, _)) => msgs.push(format!("deleted kwok cluster {name}")),
                    Ok((tries, cleared)) => msgs.push(format!(
                        "deleted kwok cluster {name} on attempt {tries}{}",
                        if cleared.is_empty() {
                            String::new()
                        } else {
                            format!(" after an interrupted create: {}", cleared.join("; "))
                        }
                    )),
                    Err(e) => {
                        ok = false;
                        let why = e.command_and_tail().1.unwrap_or_default();
                        msgs.push(format!("kwokctl delete {name} failed: {e}: {}", why.trim()))
                    }
                }
            }
            // Nothing the run started may keep listening.
            let left = self.listening_after(n, |p| p.all().to_vec()).await;
            if !left.is_empty() {
                ok = false;
                msgs.push(format!("ports still listening: {left:?}"));
            }
            if ok {
                let _ = std::fs::remove_dir_all(&self.opts.run_dir);
            } else {
                msgs.push(format!(
                    "run dir kept for inspection: {}",
                    self.opts.run_dir.display()
                ));
            }
            CleanupReport {
                complete: ok,
                message: msgs.join("; "),
                properties: BTreeMap::new(),
            }
        })
    }

    fn run_dir(&self) -> PathBuf {
        self.opts.run_dir.clone()
    }

    fn dead_processes(&self) -> Vec<String> {
        self.dead()
    }

    fn diagnostics(&self) -> BTreeMap<String, PathBuf> {
        self.lock()
            .procs
            .iter()
            .map(|p| (p.name.clone(), p.log.clone()))
            .collect()
    }

    fn computed_endpoints<'a>(
        &'a self,
        cluster: &'a ClusterAccess,
        namespace: &'a str,
        pod: &'a str,
        envoy_cluster: &'a str,
    ) -> Option<BoxFuture<'a, Result<Vec<EndpointFact>, ProviderError>>> {
        Some(Box::pin(async move {
            let seen = crate::rehearsal::shim::ads_view(
                &self.state_path(),
                cluster.name.as_str(),
                namespace,
                pod,
                envoy_cluster,
            )
            .await
            .map_err(ProviderError::Other)?;
            Ok(seen
                .into_iter()
                .map(|e| EndpointFact {
                    address: e.address,
                    port: e.port,
                    health: crate::rehearsal::xds::health_name(e.health).to_string(),
                    cluster: e.cluster_id,
                })
                .collect())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_disjoint_between_clusters() {
        let a = Ports::for_index(31000, 0).all();
        let b = Ports::for_index(31000, 1).all();
        assert!(a.iter().all(|p| !b.contains(p)));
        assert!(b.iter().all(|p| *p < 32768), "below the ephemeral range");
    }

    #[test]
    fn pools_are_test_net_and_disjoint() {
        assert_eq!(rehearsal_pool(0), "192.0.2.128-192.0.2.143");
        assert_eq!(rehearsal_pool(1), "192.0.2.144-192.0.2.159");
    }

    #[test]
    fn path_helper_keeps_run_dir_first() {
        let p = KwokProvider::new(
            ToolsBin {
                dir: "/t".into(),
                istio: None,
            },
            KwokOptions {
                port_base: 31000,
                run_dir: "/r".into(),
                shim_exe: "/x".into(),
                keep: false,
                fleet: None,
            },
        );
        assert!(p.path_env().starts_with("/r/shimbin:/t:"));
    }

    /// What CI saw once: a create interrupted between starting a component and writing its pid file leaves an
    /// empty pid file, and `kwokctl delete` fails on it every time. The stand-in kwokctl fails the same way while
    /// such a file exists; the delete succeeds once the component running in the cluster's directory is stopped
    /// and the file removed, and says so.
    #[tokio::test]
    async fn a_delete_after_an_interrupted_create_clears_what_kwokctl_cannot_parse() {
        use std::os::unix::fs::PermissionsExt;
        let tools = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        let fake = tools.path().join("kwokctl");
        std::fs::write(
            &fake,
            "#!/bin/sh\nfor f in \"$KWOK_WORKDIR/clusters/$2/pids\"/*.pid; do\n  [ -e \"$f\" ] || continue\n  \
             [ -s \"$f\" ] || { echo \"parse pid file $f: invalid syntax\" >&2; exit 1; }\ndone\nexit 0\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = KwokProvider::new(
            ToolsBin {
                dir: tools.path().to_path_buf(),
                istio: None,
            },
            KwokOptions {
                port_base: 31000,
                run_dir: run.path().to_path_buf(),
                shim_exe: "/x".into(),
                keep: false,
                fleet: None,
            },
        );
        let work = run.path().join("kwok/clusters/cluster2");
        std::fs::create_dir_all(work.join("pids")).unwrap();
        std::fs::write(work.join("pids/etcd.pid"), "").unwrap();
        let mut etcd = std::process::Command::new("sleep")
            .arg("60")
            .current_dir(&work)
            .spawn()
            .unwrap();
        let (attempt, cleared) = p.delete_cluster("cluster2", "/k").await.expect("deleted");
        let _ = etcd.wait();
        assert_eq!(attempt, 3, "{cleared:?}");
        assert!(
            cleared
                .iter()
                .any(|l| l.contains(&format!("killed pid {}", etcd.id()))),
            "{cleared:?}"
        );
        assert!(cleared.iter().any(|l| l.contains("etcd.pid")), "{cleared:?}");
    }
}
