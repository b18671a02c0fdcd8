//! A rehearsal fleet (`meshconf run --provider kwok --reuse`): the control planes kwokctl starts (etcd, API server,
//! controllers, kwok) outlive the run in the fleet's directory; every run starts its own istiod, MetalLB controller
//! and generators, connects to the kept clusters, and resets them (the plan's reset stage) before it ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::{ClusterAccess, ProviderError};
use super::{KwokProvider, ToolsBin, ctx_name};
use crate::kube as k;
use crate::rehearsal::procs::port_listening;
use crate::scenario::Cluster;

/// The fleet a rehearsal runs on.
#[derive(Debug, Clone)]
pub struct KwokFleet {
    /// The fleet's key.
    pub key: String,
    /// The fleet's control planes run and answer: connect to them; else this run creates them.
    pub warm: bool,
    /// What the plan says of the fleet (reused, created, recreated and why).
    pub note: String,
}

/// The fleet's own record of what it runs, beside `fleet.json`: what `meshconf fleet down` removes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KwokFleetState {
    /// The tools directory whose kwokctl made the clusters.
    pub tools: PathBuf,
    /// kwokctl cluster names.
    pub clusters: Vec<String>,
    /// The 127.0.0.1 ports their control planes listen on (free again once the fleet is down).
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// The state file in a rehearsal fleet's directory.
pub const STATE_FILE: &str = "kwok-fleet.json";

/// What a fleet directory keeps between runs; everything else in it is one run's (removed when the next begins).
const KEPT: [&str; 4] = ["kwok", "kubeconfig", "fleet.json", STATE_FILE];

impl KwokProvider {
    /// The fleet's state file, read (empty when none was written yet).
    fn fleet_state(&self) -> KwokFleetState {
        read_state(&self.opts.run_dir).unwrap_or_default()
    }

    /// Records a cluster this run created in the fleet, before kwokctl starts it: an interrupted creation is
    /// then still removed by `meshconf fleet down`.
    pub(super) fn record_fleet_cluster(&self, name: &str, index: usize) -> Result<(), ProviderError> {
        let mut s = self.fleet_state();
        s.tools = self.tools.dir.clone();
        if !s.clusters.iter().any(|c| c == name) {
            s.clusters.push(name.to_string());
        }
        for p in self.ports(index).control_plane() {
            if !s.ports.contains(&p) {
                s.ports.push(p);
            }
        }
        let text = serde_json::to_string_pretty(&s).map_err(|e| ProviderError::Other(e.to_string()))?;
        std::fs::write(self.opts.run_dir.join(STATE_FILE), text)
            .map_err(|e| ProviderError::io("write the fleet's kwok state", e))
    }

    /// Before the first cluster of a run on a fleet: what an earlier run left in the fleet's directory (its
    /// istiod and MetalLB directories, logs, pid files, the rehearsal state) goes; the control planes stay.
    pub(super) fn clear_previous_run(&self) -> Result<Vec<String>, ProviderError> {
        let mut removed = Vec::new();
        let entries = match std::fs::read_dir(&self.opts.run_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(ProviderError::io("read the fleet's directory", e)),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if KEPT.contains(&name.as_str()) || name.ends_with(".kwok.yaml") || name.ends_with("-node.yaml") {
                continue;
            }
            let path = e.path();
            let r = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            r.map_err(|err| ProviderError::io(format!("remove {}", path.display()), err))?;
            removed.push(name);
        }
        Ok(removed)
    }

    /// Connects to fleet cluster `c` (index `i`): its API server answers and its kwok node is Ready (the kwok
    /// controller keeps the node's heartbeat), then the run's rehearsal state gets it as a created cluster would.
    pub(super) async fn reuse_one(
        &self,
        c: &Cluster,
        i: usize,
        fleet: &str,
    ) -> Result<ClusterAccess, ProviderError> {
        self.ports_free(i)?;
        let kubeconfig = self.opts.run_dir.join("kubeconfig");
        let context = ctx_name(&c.name);
        let client = k::client_for(&kubeconfig, &context).await?;
        let node = format!("{}-node-0", c.name);
        node_ready(&client, &node, Duration::from_secs(30))
            .await
            .map_err(|e| {
                ProviderError::Other(format!(
                    "fleet {fleet}: {}: {e}; `meshconf fleet down {fleet}` and run again",
                    c.name
                ))
            })?;
        self.adopt(c, i, kubeconfig, client)
    }

    /// The fleet's clusters answer: each API server on its port, each kwok node Ready. Changes nothing.
    pub async fn fleet_alive(&self, scenario: &crate::scenario::Scenario) -> Result<(), String> {
        let kubeconfig = self.opts.run_dir.join("kubeconfig");
        let state = read_state(&self.opts.run_dir)?;
        for c in &scenario.clusters {
            if !state.clusters.iter().any(|n| n == c.name.as_str()) {
                return Err(format!("{} was never created in it", c.name));
            }
            let client = k::client_for(&kubeconfig, &ctx_name(&c.name))
                .await
                .map_err(|e| format!("{}: {e}", c.name))?;
            node_ready(&client, &format!("{}-node-0", c.name), Duration::from_secs(5))
                .await
                .map_err(|e| format!("{}: {e}", c.name))?;
        }
        Ok(())
    }

    /// Removes a rehearsal fleet's control planes (`meshconf fleet down`): `kwokctl delete cluster` for each, with
    /// the kwokctl that made them.
    pub async fn down(dir: &Path) -> Result<Vec<String>, String> {
        let state = read_state(dir)?;
        let p = KwokProvider::new(
            ToolsBin {
                dir: state.tools.clone(),
                istio: None,
            },
            super::KwokOptions {
                port_base: 0,
                run_dir: dir.to_path_buf(),
                shim_exe: PathBuf::new(),
                keep: false,
                fleet: None,
            },
        );
        let kc = dir.join("kubeconfig").display().to_string();
        let mut lines = Vec::new();
        for name in &state.clusters {
            p.delete_cluster(name, &kc)
                .await
                .map_err(|e| format!("kwokctl delete cluster {name}: {e}"))?;
            lines.push(format!("deleted kwok cluster {name}"));
        }
        // kwokctl returns while its components still exit: down is done when none of their ports listens.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left: Vec<u16> = state
                .ports
                .iter()
                .copied()
                .filter(|p| port_listening(*p))
                .collect();
            if left.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "127.0.0.1 ports {left:?} still listen 20 s after kwokctl deleted the fleet's clusters"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(lines)
    }
}

/// The state file of the fleet in `dir`.
pub fn read_state(dir: &Path) -> Result<KwokFleetState, String> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Waits at most `deadline` for node `name` to be Ready.
async fn node_ready(client: &kube::Client, name: &str, deadline: Duration) -> Result<(), String> {
    use k8s_openapi::api::core::v1::Node;
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let last = match tokio::time::timeout(Duration::from_secs(5), api.get(name)).await {
            Ok(Ok(n)) => {
                let ready = n
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "Ready")
                    .map(|c| c.status);
                match ready.as_deref() {
                    Some("True") => return Ok(()),
                    other => format!("node {name} is not Ready (Ready={})", other.unwrap_or("absent")),
                }
            }
            Ok(Err(e)) => format!("node {name}: {e}"),
            Err(_) => format!("node {name}: the API server did not answer in 5 s"),
        };
        if tokio::time::Instant::now() >= until {
            return Err(format!("{last} after {} s", deadline.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(dir: &Path) -> KwokProvider {
        KwokProvider::new(
            ToolsBin {
                dir: PathBuf::from("/tools"),
                istio: None,
            },
            super::super::KwokOptions {
                port_base: 29000,
                run_dir: dir.to_path_buf(),
                shim_exe: PathBuf::new(),
                keep: false,
                fleet: Some(KwokFleet {
                    key: "0123456789abcdef".into(),
                    warm: true,
                    note: String::new(),
                }),
            },
        )
    }

    #[test]
    fn a_new_run_on_a_fleet_clears_the_last_runs_files_and_keeps_the_control_planes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for keep in ["kwok/clusters/cluster1", "istiod-cluster1", "pids", "shimbin"] {
            std::fs::create_dir_all(d.join(keep)).expect("mkdir");
        }
        for f in [
            "kubeconfig",
            "fleet.json",
            "cluster1.kwok.yaml",
            "cluster1-node.yaml",
            "rehearsal-state.json",
        ] {
            std::fs::write(d.join(f), "x").expect("write");
        }
        let p = provider(d);
        p.record_fleet_cluster("cluster1", 0).expect("record");
        p.record_fleet_cluster("cluster1", 0).expect("twice");
        let mut removed = p.clear_previous_run().expect("clear");
        removed.sort();
        assert_eq!(
            removed,
            ["istiod-cluster1", "pids", "rehearsal-state.json", "shimbin"]
        );
        for kept in [
            "kwok/clusters/cluster1",
            "kubeconfig",
            "fleet.json",
            "cluster1.kwok.yaml",
            STATE_FILE,
        ] {
            assert!(d.join(kept).exists(), "{kept} was removed");
        }
        let s = read_state(d).expect("state");
        assert_eq!(
            (s.tools, s.clusters),
            (PathBuf::from("/tools"), vec!["cluster1".to_string()])
        );
    }

    /// A warm rehearsal fleet's plan connects to the kept control planes instead of creating them, and still routes
    /// and starts MetalLB's controller (each run's own processes); every fleet plan snapshots after that setup and
    /// resets at the end.
    #[test]
    fn a_warm_rehearsal_fleet_plan_reuses_the_control_planes_and_resets_them() {
        use crate::plan::{Action, ProviderAction};
        use crate::provider::ClusterProvider;
        let s = crate::scenario::load_file(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/multi-primary.yaml"),
        )
        .expect("scenario");
        let variant = crate::mesh::Variant::for_version(crate::mesh::IstioVersion::new(1, 32, 0));
        let plan_of = |warm: bool| {
            let mut p = provider(Path::new("/fleet"));
            if let Some(f) = p.opts.fleet.as_mut() {
                f.warm = warm;
            }
            crate::plan::build(&s, &variant, p.profile(&s))
        };
        for warm in [true, false] {
            let plan = plan_of(warm);
            let ids: Vec<&str> = plan.steps().map(|st| st.id.0.as_str()).collect();
            let reused: Vec<bool> = plan
                .steps()
                .filter(|st| st.id.0.starts_with("create-cluster/"))
                .map(|st| {
                    st.actions
                        .iter()
                        .any(|a| matches!(a, Action::Provider(ProviderAction::KwokReuse { .. })))
                })
                .collect();
            assert_eq!(reused, vec![warm, warm], "warm={warm}");
            let at = |id: &str| {
                ids.iter()
                    .position(|i| *i == id)
                    .unwrap_or_else(|| panic!("{id} in {ids:?}"))
            };
            assert!(at("load-balancers/cluster1") < at("snapshot/cluster1"), "{ids:?}");
            assert!(at("snapshot/cluster1") < at("install-istio/cluster1"), "{ids:?}");
            assert_eq!(ids.last(), Some(&"reset/cluster2"), "{ids:?}");
            let shell = crate::plan::render_shell(&plan);
            assert!(shell.contains("meshconf fleet down 0123456789abcdef"), "{shell}");
            assert_eq!(
                shell.contains("kept from an earlier run (--reuse)"),
                warm,
                "{shell}"
            );
            assert!(!shell.contains("kwokctl --name cluster1 delete"), "{shell}");
        }
    }

    #[test]
    fn a_fleet_without_its_state_file_is_not_alive_and_says_which_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = read_state(dir.path()).unwrap_err();
        assert!(e.contains(STATE_FILE), "{e}");
    }
}
