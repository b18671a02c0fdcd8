//! The `kwok` provider (rehearsal): every scenario cluster is a real control plane (etcd, kube-apiserver,
//! controller-manager, scheduler) started by kwokctl's binary runtime, with kwok standing in for kubelets.
//! Where a pod would run a program that matters, the real program runs as a local process instead: one istiod
//! per primary and one MetalLB controller per cluster. All traffic stays on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::{CleanupReport, ClusterAccess, ClusterProvider, Performed, ProviderError};
use crate::diagnose::EndpointFact;
use crate::kube::{self as k, Applier};
use crate::mesh::InstallOverlay;
use crate::plan::{Action, DataPlane, Placeholder, PoolSpec, ProviderAction, ProviderKind, ProviderProfile};
use crate::rehearsal::procs::{Supervised, port_free, port_listening};
use crate::rehearsal::shim::install_shim;
use crate::rehearsal::state::{ClusterState, RehearsalState};
use crate::scenario::{Cluster, ClusterName, Role, Scenario};
use crate::tools::{Cmd, Istioctl, IstioctlSource};

/// The directory of binaries built by `tools/build.sh`.
#[derive(Debug, Clone)]
pub struct ToolsBin {
    /// The `bin` directory.
    pub dir: PathBuf,
}

impl ToolsBin {
    /// `$MESHCONF_TOOLS_BIN`, else the newest complete build under the tools cache.
    pub fn locate() -> Result<Self, ProviderError> {
        if let Ok(d) = std::env::var("MESHCONF_TOOLS_BIN") {
            let dir = PathBuf::from(d);
            if Self::complete_marker(&dir).is_some() {
                return Ok(Self { dir });
            }
            return Err(ProviderError::Missing(format!(
                "MESHCONF_TOOLS_BIN={} is not a complete tools build; run `make tools`",
                dir.display()
            )));
        }
        let newest = std::fs::read_dir(crate::tools::tools_cache_dir())
            .ok()
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter_map(|b| Self::complete_marker(&b).map(|m| (b, m)))
            .max_by_key(|(_, m)| m.metadata().and_then(|m| m.modified()).ok())
            .map(|(b, _)| b);
        newest.map(|dir| Self { dir }).ok_or_else(|| {
            ProviderError::Missing(
                "rehearsal tools are not built: run `make tools` (tools/build.sh builds etcd, kube-apiserver, kwok, \
                 istioctl, istiod and MetalLB from the Go module proxy)"
                    .into(),
            )
        })
    }

    /// The marker `tools/build.sh` writes when a profile (rehearsal, or kind which includes it) is complete.
    fn complete_marker(dir: &std::path::Path) -> Option<PathBuf> {
        [".complete-kind", ".complete-rehearsal"]
            .iter()
            .map(|m| dir.join(m))
            .find(|m| m.is_file())
    }

    /// Path of a tool.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The pinned versions, one `name=version` per line.
    pub fn versions(&self) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.dir.join("VERSIONS"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect()
    }
}

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
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    apiserver: u16,
    etcd: u16,
    etcd_peer: u16,
    kwok: u16,
    kcm: u16,
    scheduler: u16,
    istiod_http: u16,
    xds: u16,
    xds_tls: u16,
    webhook: u16,
    monitoring: u16,
    ctrlz: u16,
    metallb_metrics: u16,
    metallb_health: u16,
}

impl Ports {
    fn for_index(base: u16, i: usize) -> Self {
        let b = base + (i as u16) * 20;
        Self {
            apiserver: b,
            etcd: b + 1,
            etcd_peer: b + 2,
            kwok: b + 3,
            kcm: b + 4,
            scheduler: b + 5,
            istiod_http: b + 6,
            xds: b + 7,
            xds_tls: b + 8,
            webhook: b + 9,
            monitoring: b + 10,
            ctrlz: b + 11,
            metallb_metrics: b + 12,
            metallb_health: b + 13,
        }
    }

    fn all(&self) -> [u16; 14] {
        [
            self.apiserver,
            self.etcd,
            self.etcd_peer,
            self.kwok,
            self.kcm,
            self.scheduler,
            self.istiod_http,
            self.xds,
            self.xds_tls,
            self.webhook,
            self.monitoring,
            self.ctrlz,
            self.metallb_metrics,
            self.metallb_health,
        ]
    }
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

/// MetalLB pool for rehearsal cluster `i`: TEST-NET-1 addresses that are written into Service status and Istio
/// values only, never dialled.
fn rehearsal_pool(i: usize) -> String {
    let first = 128 + i * 16;
    format!("192.0.2.{first}-192.0.2.{}", first + 15)
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

    fn kwok_config(&self, c: &Cluster, i: usize) -> String {
        let p = self.ports(i);
        let t = |n: &str| self.tools.path(n).display().to_string();
        let k8s = self
            .tools
            .versions()
            .get("k8s")
            .cloned()
            .unwrap_or_else(|| "v1.35.4".into());
        let run = self.opts.run_dir.display();
        format!(
            r#"apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  kubeVersion: {k8s}
  bindAddress: 127.0.0.1
  securePort: true
  kubeAuthorization: true
  kubeAdmission: true
  kubeApiserverPort: {api}
  etcdPort: {etcd}
  etcdPeerPort: {peer}
  kwokControllerPort: {kwok}
  kubeControllerManagerPort: {kcm}
  kubeSchedulerPort: {sched}
  kubeApiserverBinary: {apiserver_bin}
  kubeControllerManagerBinary: {kcm_bin}
  kubeSchedulerBinary: {sched_bin}
  kwokControllerBinary: {kwok_bin}
  etcdBinary: {etcd_bin}
  kubectlBinary: {kubectl_bin}
componentsPatches:
- name: kube-apiserver
  extraArgs:
  - {{key: advertise-address, value: 127.0.0.1}}
  - {{key: endpoint-reconciler-type, value: none}}
  - {{key: service-cluster-ip-range, value: "{svc}"}}
  - {{key: kubelet-preferred-address-types, value: Hostname}}
- name: kwok-controller
  extraEnvs:
  - {{name: PATH, value: "{path}"}}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterExec
metadata:
  name: meshconf-curl
spec:
  execs:
  - containers: [curl, sleep]
    local:
      workDir: {run}
      envs:
      - {{name: RH_CLUSTER, value: "{name}"}}
      - {{name: RH_STATE, value: "{state}"}}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterPortForward
metadata:
  name: meshconf-istiod-monitoring
spec:
  selector:
    matchNamespaces: [istio-system]
  forwards:
  - ports: [15014]
    target: {{address: 127.0.0.1, port: {mon}}}
"#,
            api = p.apiserver,
            etcd = p.etcd,
            peer = p.etcd_peer,
            kwok = p.kwok,
            kcm = p.kcm,
            sched = p.scheduler,
            apiserver_bin = t("kube-apiserver"),
            kcm_bin = t("kube-controller-manager"),
            sched_bin = t("kube-scheduler"),
            kwok_bin = t("kwok"),
            etcd_bin = t("etcd"),
            kubectl_bin = t("kubectl"),
            svc = c.subnets.services,
            path = self.path_env(),
            name = c.name,
            state = self.state_path().display(),
            mon = p.monitoring,
        )
    }

    fn node_yaml(c: &Cluster) -> String {
        let cidr = first_24(c);
        format!(
            r#"apiVersion: v1
kind: Node
metadata:
  name: {name}-node-0
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: {name}-node-0
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
    topology.kubernetes.io/region: region1
    topology.kubernetes.io/zone: zone1
spec:
  podCIDR: {cidr}
  podCIDRs: [{cidr}]
status:
  allocatable: {{cpu: "32", memory: 256Gi, pods: "110"}}
  capacity: {{cpu: "32", memory: 256Gi, pods: "110"}}
  nodeInfo: {{architecture: amd64, operatingSystem: linux, kubeletVersion: v1.35.4}}
"#,
            name = c.name
        )
    }

    fn write_state(&self, inner: &Inner) -> Result<(), ProviderError> {
        inner
            .state
            .write(&self.state_path())
            .map_err(|e| ProviderError::io("write rehearsal state", e))
    }

    async fn create_one(&self, c: &Cluster, i: usize) -> Result<ClusterAccess, ProviderError> {
        let cfg = self.opts.run_dir.join(format!("{}.kwok.yaml", c.name));
        std::fs::write(&cfg, self.kwok_config(c, i))
            .map_err(|e| ProviderError::io("write kwokctl config", e))?;
        let kubeconfig = self.opts.run_dir.join("kubeconfig");
        let kc = kubeconfig.display().to_string();
        let cfgs = cfg.display().to_string();
        self.lock().created.push(c.name.to_string());
        self.kwokctl(&[
            "--name",
            c.name.as_str(),
            "--config",
            &cfgs,
            "create",
            "cluster",
            "--runtime",
            "binary",
            "--kubeconfig",
            &kc,
            "--wait",
            "120s",
            "--timeout",
            "300s",
        ])
        .timeout(Duration::from_secs(330))
        .run()
        .await?;
        let context = ctx_name(&c.name);
        let client = k::client_for(&kubeconfig, &context).await?;
        let applier = Arc::new(Applier::new(client.clone()));
        let node = Self::node_yaml(c);
        std::fs::write(self.opts.run_dir.join(format!("{}-node.yaml", c.name)), &node)
            .map_err(|e| ProviderError::io("write node manifest", e))?;
        applier.apply_yaml(&node, None).await?;
        {
            let mut inner = self.lock();
            inner.state.clusters.insert(
                c.name.to_string(),
                ClusterState {
                    kubeconfig: self.cluster_kubeconfig(&c.name),
                    istiod_xds: None,
                },
            );
            inner.indices.insert(c.name.clone(), i);
            inner.clusters.insert(c.name.clone(), c.clone());
            self.write_state(&inner)?;
        }
        Ok(ClusterAccess {
            name: c.name.clone(),
            kubeconfig,
            context,
            client,
            applier,
        })
    }

    /// Once per run, before the first cluster: the tools are there, the run directory, the curl stand-in and
    /// the rehearsal state exist.
    fn prepare_once(&self) -> Result<(), ProviderError> {
        if self.lock().prepared {
            return Ok(());
        }
        for b in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubectl",
            "kwok",
            "kwokctl",
            "istioctl",
            "pilot-discovery",
            "metallb-controller",
        ] {
            if !self.tools.path(b).is_file() {
                return Err(ProviderError::Missing(format!(
                    "rehearsal tool {b} is missing from {}: run `make tools`",
                    self.tools.dir.display()
                )));
            }
        }
        std::fs::create_dir_all(&self.opts.run_dir).map_err(|e| ProviderError::io("create run dir", e))?;
        install_shim(&self.opts.run_dir.join("shimbin"), &self.opts.shim_exe)
            .map_err(|e| ProviderError::io("install curl stand-in", e))?;
        let mut inner = self.lock();
        inner.state.rr_dir = self.opts.run_dir.join("rr");
        self.write_state(&inner)?;
        inner.prepared = true;
        Ok(())
    }

    /// Fails, naming them, when ports of cluster `i` are taken (another rehearsal may run).
    fn ports_free(&self, i: usize) -> Result<(), ProviderError> {
        let busy: Vec<u16> = self
            .ports(i)
            .all()
            .into_iter()
            .filter(|p| !port_free(*p))
            .collect();
        if busy.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::Missing(format!(
                "127.0.0.1 ports {busy:?} are in use; another rehearsal may be running, or pass --port-base"
            )))
        }
    }

    /// MetalLB's manifest with its webhook removed (nothing serves it: its pod is fake), the real controller as a
    /// local process standing in for that pod, and the pool.
    async fn rehearsal_metallb(
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
        let pid = self.supervise(&name, "metallb-controller", &args, &env, &dir, "controller.log")?;
        let range = match pool {
            PoolSpec::Fixed { range } => range.clone(),
            other => {
                return Err(ProviderError::Other(format!(
                    "the rehearsal has no kind network for {other:?}"
                )));
            }
        };
        cluster
            .applier
            .apply_yaml(
                &crate::topology::metallb_pool_yaml(&names.0, &names.1, &range),
                None,
            )
            .await?;
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

    fn index(&self, c: &ClusterName) -> usize {
        self.lock().indices.get(c).copied().unwrap_or(0)
    }

    async fn start_istiod(&self, cluster: &ClusterAccess) -> Result<Vec<String>, ProviderError> {
        let i = self.index(&cluster.name);
        let p = self.ports(i);
        let dir = self.opts.run_dir.join(format!("istiod-{}", cluster.name));
        let ca_dir = dir.join("cacerts");
        std::fs::create_dir_all(&ca_dir).map_err(|e| ProviderError::io("mkdir istiod dir", e))?;
        // Mirror the literal env of the Deployment istioctl rendered, then override what differs out of cluster.
        let deps: Api<Deployment> = Api::namespaced(cluster.client.clone(), "istio-system");
        let dep = deps.get("istiod").await.map_err(|source| k::KubeError::Api {
            what: format!("get deployment istio-system/istiod in {}", cluster.name),
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
            ("POD_NAME", format!("istiod-local-{}", cluster.name)),
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
        let name = format!("istiod-{}", cluster.name);
        let pid = self.supervise(&name, "pilot-discovery", &args, &env_vec, &dir, "istiod.log")?;
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
            "istio-sidecar-injector",
            Duration::from_secs(120),
        )
        .await?;
        {
            let mut inner = self.lock();
            if let Some(s) = inner.state.clusters.get_mut(cluster.name.as_str()) {
                s.istiod_xds = Some(format!("127.0.0.1:{}", p.xds));
            }
            self.write_state(&inner)?;
        }
        Ok(vec![
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
        ])
    }

    /// Starts a tool from the tools directory as a supervised process and records it for health checks and
    /// cleanup; returns its PID.
    fn supervise(
        &self,
        name: &str,
        tool: &str,
        args: &[String],
        env: &[(String, String)],
        dir: &std::path::Path,
        log: &str,
    ) -> Result<u32, ProviderError> {
        let proc = Supervised::spawn(name, &self.tools.path(tool), args, env, dir, &dir.join(log))
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

    /// Every 127.0.0.1 port this provider may open for `n` clusters.
    pub fn all_ports(&self, n: usize) -> Vec<u16> {
        (0..n).flat_map(|i| self.ports(i).all()).collect()
    }
}

fn first_24(c: &Cluster) -> String {
    c.subnets
        .pods
        .subnets(24)
        .ok()
        .and_then(|mut s| s.nth(1))
        .map(|n| n.to_string())
        .unwrap_or_else(|| c.subnets.pods.to_string())
}

async fn wait_http_ok(url: &str, timeout: Duration, what: &str) -> Result<(), String> {
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
        let run_dir = self.opts.run_dir.display().to_string();
        let webhook_of = |i: usize| self.ports(i).webhook;
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
                    p.overlays.insert(
                        c.name.clone(),
                        InstallOverlay {
                            sets: vec![
                                (
                                    "values.istiodRemote.injectionURL".into(),
                                    format!("https://127.0.0.1:{w}/inject"),
                                ),
                                (
                                    "values.base.validationURL".into(),
                                    format!("https://127.0.0.1:{w}/validate"),
                                ),
                            ],
                            reason: Some(
                                "rehearsal: the API server calls the local istiod's webhooks on loopback"
                                    .into(),
                            ),
                        },
                    );
                    p.after_install.insert(
                        c.name.clone(),
                        vec![Action::Provider(ProviderAction::StartIstiod {
                            cluster: c.name.clone(),
                            ports: (ports.xds, ports.webhook),
                            run_dir: run_dir.clone(),
                        })],
                    );
                }
                Role::Remote => {
                    let pi = c
                        .primary
                        .as_ref()
                        .and_then(|pn| scenario.cluster_index(pn))
                        .unwrap_or(0);
                    let w = webhook_of(pi);
                    p.overlays.insert(c.name.clone(), InstallOverlay {
                        sets: vec![
                            ("values.istiodRemote.injectionURL".into(), format!("https://127.0.0.1:{w}/inject/cluster/{}/net/{}", c.name, c.network)),
                            ("values.base.validationURL".into(), format!("https://127.0.0.1:{w}/validate")),
                        ],
                        reason: Some("rehearsal: the remote's webhooks call the primary's local istiod on loopback".into()),
                    });
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
                    let p = self.ports(*index);
                    if (p.apiserver, p.metallb_health) != *ports {
                        return Err(ProviderError::Other(format!(
                            "the plan gives {} the ports {ports:?}, this provider {:?}: build the plan with this provider",
                            c.name,
                            (p.apiserver, p.metallb_health)
                        )));
                    }
                    self.prepare_once()?;
                    self.ports_free(*index)?;
                    let access = self.create_one(c, *index).await?;
                    Ok(Performed {
                        log: vec![format!(
                            "{}: context {} in {}",
                            c.name,
                            access.context,
                            access.kubeconfig.display()
                        )],
                        created: Some(access),
                        ..Performed::default()
                    })
                }
                ProviderAction::RehearsalMetalLb {
                    cluster: name,
                    pool,
                    names,
                    ..
                } => self.rehearsal_metallb(cluster(name)?, pool, names).await,
                ProviderAction::StartIstiod {
                    cluster: name, ports, ..
                } => {
                    let p = self.ports(self.index(name));
                    if (p.xds, p.webhook) != *ports {
                        return Err(ProviderError::Other(format!(
                            "the plan gives istiod of {name} the ports {ports:?}, this provider {:?}",
                            (p.xds, p.webhook)
                        )));
                    }
                    Ok(Performed::log(self.start_istiod(cluster(name)?).await?))
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
            if !stopped.is_empty() {
                msgs.push(format!("stopped {}", stopped.join(", ")));
            }
            let kc = self.opts.run_dir.join("kubeconfig").display().to_string();
            let mut ok = true;
            for name in &created {
                match self
                    .kwokctl(&["--name", name, "delete", "cluster", "--kubeconfig", &kc])
                    .timeout(Duration::from_secs(120))
                    .run()
                    .await
                {
                    Ok(_) => msgs.push(format!("deleted kwok cluster {name}")),
                    Err(e) => {
                        ok = false;
                        msgs.push(format!("kwokctl delete {name} failed: {e}"))
                    }
                }
            }
            // Nothing the run started may keep listening.
            let mut left = Vec::new();
            for _ in 0..50 {
                left = self
                    .all_ports(n)
                    .into_iter()
                    .filter(|p| port_listening(*p))
                    .collect();
                if left.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
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
            ToolsBin { dir: "/t".into() },
            KwokOptions {
                port_base: 31000,
                run_dir: "/r".into(),
                shim_exe: "/x".into(),
                keep: false,
            },
        );
        assert!(p.path_env().starts_with("/r/shimbin:/t:"));
    }
}
