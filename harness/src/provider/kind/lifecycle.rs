//! The life of a run's kind clusters: created (with the node's journal when kind fails), their istiod logs read
//! for rejected config before they go, and deleted with the host state the run added (also by `meshconf down`
//! from the run's state file).

use std::path::Path;

use kube::api::Api;

use super::super::ProviderError;
use super::super::egress::EgressCount;
use super::{KindProvider, KindState, STATE_FILE};
use crate::images::ImageSet;
use crate::kube as k;
use crate::tools::{Docker, Kind, which};

impl KindProvider {
    pub(super) fn ensure_run_dir(&self) -> Result<(), ProviderError> {
        std::fs::create_dir_all(&self.opts.run_dir).map_err(|e| ProviderError::io("create run dir", e))?;
        self.update(|_| {});
        Ok(())
    }

    pub(super) async fn create_one(
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

    /// Counts Envoy config rejections in every istiod's log (`ADS:… ACK ERROR`: the word NACK never appears):
    /// the proof that the upstream Envoy accepted all the config istiod sent. `N`, or `N; unreadable: …`.
    pub(super) async fn ack_errors(&self, state: &KindState) -> String {
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
pub(super) async fn remove_created(
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
        // Another fleet's (or run's) nodes may still be on it: the network goes with the last of them.
        let attached = docker
            .inspect_format_network("kind", "{{len .Containers}}")
            .run()
            .await
            .map(|o| o.stdout.trim().to_string())
            .unwrap_or_default();
        if attached != "0" && !attached.is_empty() {
            msgs.push(format!(
                "kept the kind network: {attached} other container(s) still use it"
            ));
        } else {
            match docker.remove_kind_network().run().await {
                Ok(_) => msgs.push("removed the kind network".into()),
                Err(e) => failed.push(format!("docker network rm kind: {e}")),
            }
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
pub(crate) async fn istiod_ack_errors(kubeconfig: &Path, context: &str) -> Result<usize, String> {
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
