//! A rehearsal cluster's life: kwokctl's config (binary runtime, pinned ports), the one kwok node with the
//! scenario's pod subnet, the run directory with the curl stand-in, and the checks before the first cluster.

use std::sync::Arc;
use std::time::Duration;

use super::super::{ClusterAccess, ProviderError};
use super::{KwokProvider, ctx_name};
use crate::kube::{self as k, Applier};
use crate::rehearsal::procs::port_free;
use crate::rehearsal::shim::install_shim;
use crate::rehearsal::state::ClusterState;
use crate::scenario::Cluster;

impl KwokProvider {
    pub(super) fn kwok_config(&self, c: &Cluster, i: usize) -> String {
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
  - containers: [curl, sleep, loadgen]
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

    pub(super) fn node_yaml(c: &Cluster) -> String {
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

    pub(super) async fn create_one(&self, c: &Cluster, i: usize) -> Result<ClusterAccess, ProviderError> {
        let cfg = self.opts.run_dir.join(format!("{}.kwok.yaml", c.name));
        std::fs::write(&cfg, self.kwok_config(c, i))
            .map_err(|e| ProviderError::io("write kwokctl config", e))?;
        let kubeconfig = self.opts.run_dir.join("kubeconfig");
        let kc = kubeconfig.display().to_string();
        let cfgs = cfg.display().to_string();
        if self.opts.fleet.is_some() {
            self.record_fleet_cluster(c.name.as_str(), i)?;
        } else {
            self.lock().created.push(c.name.to_string());
        }
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
        self.adopt(c, i, kubeconfig, client)
    }

    /// Cluster `c` (index `i`) of this run, created or kept by a fleet: the rehearsal state and the stand-in get it,
    /// and the run a client for it.
    pub(super) fn adopt(
        &self,
        c: &Cluster,
        i: usize,
        kubeconfig: std::path::PathBuf,
        client: kube::Client,
    ) -> Result<ClusterAccess, ProviderError> {
        {
            let mut inner = self.lock();
            inner.state.clusters.insert(
                c.name.to_string(),
                ClusterState {
                    kubeconfig: self.cluster_kubeconfig(&c.name),
                    istiod_xds: None,
                    istiod_revisions: Default::default(),
                    removed_revisions: Vec::new(),
                    routed_to: Vec::new(),
                },
            );
            inner.indices.insert(c.name.clone(), i);
            inner.clusters.insert(c.name.clone(), c.clone());
            self.write_state(&inner)?;
        }
        Ok(ClusterAccess {
            name: c.name.clone(),
            kubeconfig,
            context: ctx_name(&c.name),
            applier: Arc::new(Applier::new(client.clone())),
            client,
        })
    }

    /// Once per run, before the first cluster: the tools are there, the run directory, the curl stand-in and
    /// the rehearsal state exist.
    pub(super) fn prepare_once(&self) -> Result<(), ProviderError> {
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
        if self.opts.fleet.is_some() {
            let removed = self.clear_previous_run()?;
            if !removed.is_empty() {
                tracing::info!("fleet directory: removed the last run's {}", removed.join(", "));
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

    /// Fails, naming them, when ports of cluster `i` are taken (another rehearsal may run); on a fleet only the
    /// ports one run opens (istiod's two slots, MetalLB): the control plane's own are busy by design.
    pub(super) fn ports_free(&self, i: usize) -> Result<(), ProviderError> {
        let ports = match self.opts.fleet.as_ref().filter(|f| f.warm) {
            Some(_) => self.ports(i).per_run(),
            None => self.ports(i).all().to_vec(),
        };
        let busy: Vec<u16> = ports.into_iter().filter(|p| !port_free(*p)).collect();
        if busy.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::Missing(format!(
                "127.0.0.1 ports {busy:?} are in use; another rehearsal on this port base may be running, or pass \
                 --port-base"
            )))
        }
    }
}

pub(super) fn first_24(c: &Cluster) -> String {
    c.subnets
        .pods
        .subnets(24)
        .ok()
        .and_then(|mut s| s.nth(1))
        .map(|n| n.to_string())
        .unwrap_or_else(|| c.subnets.pods.to_string())
}
