//! Secret harvesting: the values a run created (kubeconfig keys and tokens, remote secrets, the plugged CA key),
//! read while its clusters stand, and the check that none of them reached a report file.

#[allow(unused_imports)]
use super::*;

/// Secret reads under way, each on a thread of its own, each giving (where, value) pairs.
pub(crate) type PendingReads = std::sync::Mutex<Vec<std::thread::JoinHandle<Vec<(String, String)>>>>;

/// Reads the secret values a run created while its clusters stand (after each traffic check, and when
/// diagnostics are collected): the kubeconfigs' client keys and tokens, every remote secret's credentials, the
/// plugged CA key.
pub(crate) struct SecretHarvest {
    pub(crate) kind: ProviderKind,
    pub(crate) run_dir: PathBuf,
    pub(crate) prefix: String,
    pub(crate) clusters: Vec<String>,
    pub(crate) found: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// Reads under way, each on a thread of its own: joined into `found` by [`SecretHarvest::join`].
    pub(crate) pending: Arc<PendingReads>,
}

/// How long one harvest may read the clusters.
const READ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Values of `key:` lines in a kubeconfig text (client-key-data, token, …).
fn kubeconfig_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| v.len() >= 16)
        .collect()
}

/// The base64 body lines of a PEM block (each a secret fragment of a key).
fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .map(str::to_string)
        .collect()
}

impl SecretHarvest {
    /// Waits for the reads under way and adds what they found.
    pub(crate) fn join(pending: &PendingReads, found: &std::sync::Mutex<Vec<(String, String)>>) {
        let handles: Vec<_> = pending
            .lock()
            .map(|mut p| p.drain(..).collect())
            .unwrap_or_default();
        for h in handles {
            let values = h.join().unwrap_or_default();
            if let Ok(mut f) = found.lock() {
                for v in values {
                    if !f.contains(&v) {
                        f.push(v);
                    }
                }
            }
        }
    }

    async fn read(&self) -> Vec<(String, String)> {
        use k8s_openapi::api::core::v1::Secret;
        use kube::api::{Api, ListParams};
        let mut out = Vec::new();
        for c in &self.clusters {
            let (kc, ctx) = cluster_kubeconfig(self.kind, &self.run_dir, &self.prefix, c);
            if let Ok(text) = std::fs::read_to_string(&kc) {
                for key in ["client-key-data", "token"] {
                    out.extend(
                        kubeconfig_values(&text, key)
                            .into_iter()
                            .map(|v| (format!("{key} of {}", kc.display()), v)),
                    );
                }
            }
            let Ok(client) = meshconf::kube::client_for(&kc, &ctx).await else {
                continue;
            };
            let api: Api<Secret> = Api::namespaced(client, "istio-system");
            let Ok(list) = api.list(&ListParams::default()).await else {
                continue;
            };
            for s in list.items {
                let name = s.metadata.name.clone().unwrap_or_default();
                let remote = s
                    .metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.get("istio/multiCluster").map(String::as_str) == Some("true"));
                for (k, v) in s.data.unwrap_or_default() {
                    let text = String::from_utf8_lossy(&v.0).to_string();
                    if remote {
                        for key in ["token", "client-key-data"] {
                            out.extend(
                                kubeconfig_values(&text, key)
                                    .into_iter()
                                    .map(|x| (format!("{key} in remote secret {name} ({c})"), x)),
                            );
                        }
                    } else if name == "cacerts" && k.ends_with("key.pem") {
                        out.extend(
                            pem_body_lines(&text)
                                .into_iter()
                                .map(|x| (format!("cacerts/{k} ({c})"), x)),
                        );
                    }
                }
            }
        }
        out
    }
}

impl Reporter for SecretHarvest {
    fn on_event(&mut self, event: &Event) {
        let now = match event {
            Event::StepFinished { id, .. } => id.0.starts_with("check-traffic/"),
            Event::Diagnostics { .. } => true,
            _ => false,
        };
        // Never read here: the bus calls every reporter under its lock, so a reporter that waits on the clusters
        // stops every step that logs meanwhile (a kind run saw two traffic checks held 888 s that way). The read
        // runs on a thread and runtime of its own, while the clusters still stand (the reset comes after every
        // check), and is joined after the run.
        if now {
            let me = SecretHarvest {
                kind: self.kind,
                run_dir: self.run_dir.clone(),
                prefix: self.prefix.clone(),
                clusters: self.clusters.clone(),
                found: Arc::default(),
                pending: Arc::default(),
            };
            let read = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| {
                        rt.block_on(async {
                            tokio::time::timeout(READ_DEADLINE, me.read())
                                .await
                                .unwrap_or_default()
                        })
                    })
                    .unwrap_or_default()
            });
            if let Ok(mut p) = self.pending.lock() {
                p.push(read);
            }
        }
    }

    fn finish(&mut self) -> Result<(), meshconf::report::ReportError> {
        Ok(())
    }
}

/// Asserts no secret value the run created appears in any report file of the run (JUnit, JSON, HTML,
/// diagnostics), and that there were values to look for.
pub fn assert_no_secrets_in_reports(r: &RunResult) -> Result<(), Failed> {
    if r.secrets.is_empty() {
        return Err("no secret values were harvested from the run: the check would look for nothing".into());
    }
    let dir = report_dir();
    let mut files = Vec::new();
    for ext in ["junit.xml", "json", "html"] {
        files.push(dir.join(format!("{}.{ext}", r.name)));
    }
    if let Ok(rd) = std::fs::read_dir(dir.join(format!("{}.diagnostics", r.name))) {
        files.extend(rd.flatten().map(|e| e.path()));
    }
    let mut leaks = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for (what, value) in &r.secrets {
            if text.contains(value.as_str()) {
                leaks.push(format!("{what} appears in {}", f.display()));
            }
        }
    }
    if leaks.is_empty() {
        Ok(())
    } else {
        Err(format!("secret values reached the reports:\n{}", leaks.join("\n")).into())
    }
}
