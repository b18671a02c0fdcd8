//! Shared driver of the end-to-end suites: one libtest-mimic trial per check, on the provider named by
//! `MESHCONF_PROVIDER` (default `kind`). Reports go to `reports/<provider>/<suite>.junit.xml`.

// Each suite binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use meshconf::ExitStatus;
use meshconf::plan::ProviderKind;
use meshconf::provider::{ClusterProvider, KwokOptions, KwokProvider, ToolsBin};
use meshconf::report::{Collector, Event, Outcome, Reporter};
use meshconf::scenario::{self, Scenario};
use meshconf::session::{self, SessionConfig};

/// The repository root (suites run from the root package).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the suites write reports: `reports/<provider>/`, so the rehearsal's and kind's reports of one
/// `make test` sit side by side.
pub fn report_dir() -> PathBuf {
    let p = provider().map(|p| p.as_str()).unwrap_or("unknown");
    root().join("reports").join(p)
}

/// The provider the suite runs on.
pub fn provider() -> Result<ProviderKind, String> {
    match std::env::var("MESHCONF_PROVIDER").as_deref() {
        Err(_) | Ok("") | Ok("kind") => Ok(ProviderKind::Kind),
        Ok("kwok") => Ok(ProviderKind::Kwok),
        Ok("existing") => Ok(ProviderKind::Existing),
        Ok(other) => Err(format!(
            "MESHCONF_PROVIDER={other} is not one of kind, kwok, existing"
        )),
    }
}

/// Loads a scenario from `scenarios/`, optionally rewriting its text first (to break one thing).
pub fn scenario(file: &str, edit: impl Fn(String) -> String) -> Result<Scenario, Failed> {
    load_edited(file, edit, false)
}

/// Like [`scenario`], but an edit that changes nothing is an error: a failure-injection test whose fault
/// silently did not apply would otherwise test nothing.
pub fn scenario_checked(file: &str, edit: impl Fn(String) -> String) -> Result<Scenario, Failed> {
    load_edited(file, edit, true)
}

fn load_edited(file: &str, edit: impl Fn(String) -> String, must_change: bool) -> Result<Scenario, Failed> {
    let path = root().join("scenarios").join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let edited = edit(text.clone());
    if must_change && edited == text {
        return Err(format!("the fault edit did not change {file}: the test would break nothing").into());
    }
    scenario::load_str(&path, &edited).map_err(|e| Failed::from(e.to_string()))
}

/// Deadline of a cold `tools/build.sh` (the Go builds of the rehearsal, as `timeout` takes it).
const BUILD_DEADLINE: &str = "3600s";

/// Builds the rehearsal tools if needed (no-op when cached) and exports their directory.
pub fn ensure_tools() -> Result<(), Failed> {
    if ToolsBin::locate().is_ok() {
        return Ok(());
    }
    let out = std::process::Command::new("timeout")
        .args(["--kill-after=30", BUILD_DEADLINE])
        .arg("bash")
        .arg(root().join("tools/build.sh"))
        .output()
        .map_err(|e| format!("cannot run tools/build.sh: {e}"))?;
    if out.status.code() == Some(124) {
        return Err(format!("tools/build.sh did not finish within {BUILD_DEADLINE}").into());
    }
    if !out.status.success() {
        return Err(format!("tools/build.sh failed:\n{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    // SAFETY of intent: set before any thread of the suite reads it (trials run after this returns).
    unsafe { std::env::set_var("MESHCONF_TOOLS_BIN", dir) };
    Ok(())
}

/// What a run produced.
pub struct RunResult {
    pub status: ExitStatus,
    pub events: Vec<Event>,
    /// Report base name.
    pub name: String,
    /// Secret values the run created, read from its clusters and run directory while they existed, as
    /// `(what, value)`: they must appear in no report file.
    pub secrets: Vec<(String, String)>,
}

impl RunResult {
    /// The outcome of step `id`.
    pub fn outcome(&self, id: &str) -> Option<(Outcome, std::collections::BTreeMap<String, String>)> {
        self.events.iter().find_map(|e| match e {
            Event::StepFinished {
                id: i,
                outcome,
                properties,
                ..
            } if i.0 == id => Some((outcome.clone(), properties.clone())),
            _ => None,
        })
    }

    /// The failed attempts before step `id`'s final outcome.
    pub fn attempts(&self, id: &str) -> Vec<String> {
        self.events
            .iter()
            .find_map(|e| match e {
                Event::StepFinished { id: i, attempts, .. } if i.0 == id => {
                    Some(attempts.iter().map(|a| a.message.clone()).collect())
                }
                _ => None,
            })
            .unwrap_or_default()
    }

    /// A readable summary of failed steps.
    pub fn failures(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::StepFinished {
                    id,
                    outcome: Outcome::Failed { message, .. },
                    ..
                } => Some(format!("{id}: {message}")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What a failure-injection trial breaks, the same on every provider that creates its clusters.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// istiod of this cluster goes away (rehearsal: its process is killed; kind: its pods are deleted and its
    /// Deployment scaled to 0).
    KillIstiod(&'static str),
    /// MetalLB's address pool in this cluster is deleted: a LoadBalancer Service never gets an address.
    RemovePool(&'static str),
    /// A repair rather than a fault: the remote secret `from` → `into` is created and applied the way the
    /// guide's step does. Triggered by the first failed attempt of the step, so the retry can pass.
    AddRemoteSecret { from: &'static str, into: &'static str },
}

/// A fault and the step whose start (or, for a repair, first failed attempt) triggers it.
#[derive(Debug, Clone, Copy)]
pub struct FaultAt {
    pub step: &'static str,
    pub fault: Fault,
}

/// Runs `scenario` on the suite's provider; `fault` breaks something when its step starts.
pub fn run(
    name: &str,
    scenario: &Scenario,
    port_base: u16,
    fault: Option<FaultAt>,
) -> Result<RunResult, Failed> {
    run_with(name, scenario, port_base, fault, &|_| {})
}

/// The kind cluster-name prefix of one trial, from its report name (`multi_primary.no-secret` →
/// `mc-mp-no-secret`): trials never share a cluster name, so they can run side by side (nextest runs each in
/// its own process) and a leftover of one trial is never mistaken for another's.
pub fn kind_prefix(report_name: &str) -> String {
    let short = report_name
        .replace("multi_primary", "mp")
        .replace("primary_remote", "pr")
        .replace(['_', '.'], "-");
    format!("mc-{short}")
}

/// The kubeconfig and context the provider wrote for cluster `c` of a run.
fn cluster_kubeconfig(
    kind: ProviderKind,
    run_dir: &std::path::Path,
    prefix: &str,
    c: &str,
) -> (PathBuf, String) {
    match kind {
        ProviderKind::Kwok => (run_dir.join("kubeconfig"), format!("kwok-{c}")),
        _ => (
            run_dir.join(format!("kubeconfig-{c}")),
            format!("kind-{prefix}-{c}"),
        ),
    }
}

/// Carries out `fault` (blocking the caller until done; reporters are synchronous).
fn inject(
    fault: Fault,
    kind: ProviderKind,
    run_dir: &std::path::Path,
    prefix: &str,
    kwok: Option<&KwokProvider>,
    provider: &Arc<dyn ClusterProvider>,
) -> Result<(), String> {
    let kubeconfig = |c: &str| cluster_kubeconfig(kind, run_dir, prefix, c);
    match fault {
        Fault::KillIstiod(c) => match kwok {
            Some(p) => {
                if p.kill_process(&format!("istiod-{c}")) {
                    Ok(())
                } else {
                    Err(format!("the rehearsal runs no process istiod-{c}"))
                }
            }
            None => {
                let (kc, ctx) = kubeconfig(c);
                block_on(kill_istiod(&kc, &ctx))
            }
        },
        Fault::RemovePool(c) => {
            let (kc, ctx) = kubeconfig(c);
            let pool = if kind == ProviderKind::Kwok {
                "rehearsal"
            } else {
                "default-pool"
            };
            block_on(delete_metallb_pool(&kc, &ctx, pool))
        }
        Fault::AddRemoteSecret { from, into } => block_on(add_remote_secret(
            provider.as_ref(),
            kubeconfig(from),
            kubeconfig(into),
            from,
        )),
    }
}

/// What became of a trial's fault: it must have been injected, and without error, or the trial tested nothing.
pub fn fault_verdict(at: &FaultAt, injected: Option<Result<(), String>>) -> Result<(), Failed> {
    match injected {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(format!("the fault {:?} could not be injected: {e}", at.fault).into()),
        None => Err(format!(
            "the fault {:?} was never injected: step {} never started (or never retried)",
            at.fault, at.step
        )
        .into()),
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Repair: `istioctl create-remote-secret` for `from` (read the way the provider's remote-secret step reads it),
/// applied in `into`'s istio-system.
async fn add_remote_secret(
    provider: &dyn ClusterProvider,
    (from_kc, from_ctx): (PathBuf, String),
    (into_kc, into_ctx): (PathBuf, String),
    from: &str,
) -> Result<(), String> {
    use meshconf::provider::ClusterAccess;
    let src_client = meshconf::kube::client_for(&from_kc, &from_ctx)
        .await
        .map_err(|e| e.to_string())?;
    let dst_client = meshconf::kube::client_for(&into_kc, &into_ctx)
        .await
        .map_err(|e| e.to_string())?;
    let src = ClusterAccess::new(
        meshconf::scenario::ClusterName::new(from),
        from_kc,
        from_ctx,
        src_client,
    );
    let source = provider
        .remote_secret_source(&src)
        .await
        .map_err(|e| e.to_string())?;
    let istioctl = provider.istioctl().await.map_err(|e| e.to_string())?;
    let variant = meshconf::mesh::Variant::for_version(istioctl.version().await.map_err(|e| e.to_string())?);
    let out = istioctl
        .create_remote_secret(
            variant.remote_secret_words(),
            &source.kubeconfig,
            &source.context,
            from,
            &source.flags,
        )
        .run()
        .await
        .map_err(|e| e.to_string())?;
    meshconf::kube::Applier::new(dst_client)
        .apply_yaml(&out.stdout, Some("istio-system"))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Fault: scale istiod to 0 and delete its pods (what an operator's mistake or an eviction storm does).
pub async fn kill_istiod(kubeconfig: &std::path::Path, context: &str) -> Result<(), String> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
    let client = meshconf::kube::client_for(kubeconfig, context)
        .await
        .map_err(|e| e.to_string())?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");
    let scale = serde_json::json!({ "spec": { "replicas": 0 } });
    deployments
        .patch("istiod", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .map_err(|e| format!("scale istiod to 0: {e}"))?;
    let pods: Api<Pod> = Api::namespaced(client, "istio-system");
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=istiod"),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("delete istiod pods: {e}"))
}

/// [`run`] with a chance to adjust the session configuration (e.g. shorter waits in failure tests).
pub fn run_with(
    name: &str,
    scenario: &Scenario,
    port_base: u16,
    fault: Option<FaultAt>,
    tweak: &dyn Fn(&mut SessionConfig),
) -> Result<RunResult, Failed> {
    let kind = provider()?;
    if kind == ProviderKind::Kwok {
        ensure_tools()?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut cfg = SessionConfig::new(kind, report_dir(), name.to_string());
    cfg.port_base = port_base;
    cfg.kind_prefix = kind_prefix(name);
    let prefix = cfg.kind_prefix.clone();
    cfg.run_dir = Some(session::fresh_run_dir(scenario));
    tweak(&mut cfg);
    let run_dir = cfg.run_dir.clone().unwrap_or_default();
    let collector = Collector::default();
    let events = collector.events.clone();
    let injected: Arc<std::sync::Mutex<Option<Result<(), String>>>> = Arc::default();
    let harvest = SecretHarvest {
        kind,
        run_dir: run_dir.clone(),
        prefix: prefix.clone(),
        clusters: scenario
            .clusters
            .iter()
            .map(|c| c.name.as_str().to_string())
            .collect(),
        found: Arc::new(std::sync::Mutex::new(Vec::new())),
    };
    let secrets = harvest.found.clone();
    let status = rt.block_on(async {
        // The rehearsal's processes can be killed by name, so fault trials keep a handle on its provider.
        let kwok = match (kind, fault) {
            (ProviderKind::Kwok, Some(_)) => {
                let tools = ToolsBin::locate().map_err(|e| e.to_string())?;
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                Some(Arc::new(KwokProvider::new(
                    tools,
                    KwokOptions {
                        port_base,
                        run_dir: run_dir.clone(),
                        shim_exe: exe,
                        keep: false,
                    },
                )))
            }
            _ => None,
        };
        let provider: Arc<dyn ClusterProvider> = match &kwok {
            Some(p) => p.clone(),
            None => session::build_provider(&cfg, scenario)?,
        };
        let extra: Vec<Box<dyn Reporter>> = match fault {
            Some(f) => {
                let dir = run_dir.clone();
                let target = provider.clone();
                let slot = injected.clone();
                let prefix = prefix.clone();
                vec![Box::new(OnTrigger {
                    step: f.step.into(),
                    on_retry: matches!(f.fault, Fault::AddRemoteSecret { .. }),
                    action: Some(move || {
                        let r = inject(f.fault, kind, &dir, &prefix, kwok.as_deref(), &target);
                        if let Ok(mut s) = slot.lock() {
                            *s = Some(r);
                        }
                    }),
                })]
            }
            None => Vec::new(),
        };
        let mut extra = extra;
        extra.push(Box::new(collector));
        extra.push(Box::new(harvest));
        Ok::<_, String>(session::run_with(&cfg, scenario, provider, extra).await)
    })?;
    // A SIGINT or SIGTERM stops the whole suite once the trial in flight has cleaned up and written its report:
    // the next trial would only create clusters again.
    if session::interrupted() {
        eprintln!(
            "meshconf suite: interrupted during {name}; its clusters are cleaned up, stopping the suite"
        );
        std::process::exit(session::INTERRUPTED_EXIT);
    }
    if let Some(f) = &fault {
        let got = injected.lock().map(|g| g.clone()).unwrap_or(None);
        fault_verdict(f, got)?;
    }
    let events = events.lock().map(|v| v.clone()).unwrap_or_default();
    let secrets = secrets.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(RunResult {
        status,
        events,
        name: name.to_string(),
        secrets,
    })
}

/// Reads the secret values a run created while its clusters stand (after each traffic check, and when
/// diagnostics are collected): the kubeconfigs' client keys and tokens, every remote secret's credentials, the
/// plugged CA key.
struct SecretHarvest {
    kind: ProviderKind,
    run_dir: PathBuf,
    prefix: String,
    clusters: Vec<String>,
    found: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

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
        if now {
            let values = block_on(self.read());
            if let Ok(mut f) = self.found.lock() {
                for v in values {
                    if !f.contains(&v) {
                        f.push(v);
                    }
                }
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

/// Asserts a failed run kept diagnostics within the default 5 MB budget whose diagnosis contains `needle`, that
/// the JUnit links them and the HTML report shows the diagnosis, and that no secret reached any report file.
pub fn assert_diagnosis(r: &RunResult, needle: &str) -> Result<(), Failed> {
    let (link, bytes, diagnosis) = r
        .events
        .iter()
        .find_map(|e| match e {
            Event::Diagnostics {
                link,
                bytes,
                diagnosis,
                ..
            } => Some((link.clone(), *bytes, diagnosis.clone())),
            _ => None,
        })
        .ok_or("the failed run collected no diagnostics")?;
    match &diagnosis {
        Some(d) if d.contains(needle) => {}
        other => return Err(format!("diagnosis should contain {needle:?}, got {other:?}").into()),
    }
    let dir = report_dir().join(&link);
    let on_disk: u64 = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    if on_disk != bytes || on_disk > meshconf::diagnose::DEFAULT_BUDGET {
        return Err(format!(
            "{} holds {on_disk} bytes; the record says {bytes}; budget 5 MB",
            dir.display()
        )
        .into());
    }
    let junit = report_dir().join(format!("{}.junit.xml", r.name));
    let xml = std::fs::read_to_string(&junit).map_err(|e| format!("{}: {e}", junit.display()))?;
    if !xml.contains(&format!("diagnostics: {link}/")) {
        return Err(format!("{} does not link {link}/ from the failing case", junit.display()).into());
    }
    let html_path = report_dir().join(format!("{}.html", r.name));
    let html = std::fs::read_to_string(&html_path).map_err(|e| format!("{}: {e}", html_path.display()))?;
    if !html.contains("id=\"diagnosis\"") || !html.contains(&needle.replace('&', "&amp;")) {
        return Err(format!("{} does not show the diagnosis", html_path.display()).into());
    }
    assert_no_secrets_in_reports(r)
}

/// Asserts cleanup removed everything the run created (for the rehearsal: no process left, no port listening)
/// and, on kind, that no packet left the machine (`egress-packets` is 0, measured).
pub fn assert_clean(r: &RunResult) -> Result<(), Failed> {
    let (complete, message, properties) = r
        .events
        .iter()
        .find_map(|e| match e {
            Event::CleanupFinished {
                complete,
                message,
                properties,
            } => Some((*complete, message.clone(), properties.clone())),
            _ => None,
        })
        .ok_or("no cleanup event")?;
    if !complete {
        return Err(format!("cleanup incomplete: {message}").into());
    }
    if provider()? == ProviderKind::Kind {
        match properties.get("egress-packets").map(String::as_str) {
            Some("0") => {}
            other => return Err(format!("egress-packets must be 0, got {other:?}").into()),
        }
    }
    Ok(())
}

/// Asserts the happy path: status Passed and, from every source, both versions answered by the right cluster;
/// no secret value the run created in its reports.
pub fn assert_conformance(r: &RunResult, sources: &[&str]) -> Result<(), Failed> {
    if r.status != ExitStatus::Passed {
        return Err(format!("run ended {:?}:\n{}", r.status, r.failures()).into());
    }
    for s in sources {
        let id = format!("check-traffic/from-{s}");
        let (outcome, _) = r.outcome(&id).ok_or_else(|| format!("no result for {id}"))?;
        if outcome != Outcome::Passed {
            return Err(format!("{id}: {outcome:?}").into());
        }
        // The typed record of the check's last attempt: every version answered from the cluster that runs it.
        let record = r
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::CheckFinished { id: i, record } if i.0 == id => Some(record),
                _ => None,
            })
            .ok_or_else(|| format!("{id}: no check record"))?;
        for key in ["v1@cluster1", "v2@cluster2"] {
            if record.verdict.counts.get(key).copied().unwrap_or(0) == 0 {
                return Err(format!("{id}: no answers for {key}; counts {:?}", record.verdict.counts).into());
            }
        }
    }
    if provider()? == ProviderKind::Kind {
        // Every sidecar accepted every config istiod sent (the upstream Envoy lacks Istio's own filters).
        let acks = r.events.iter().find_map(|e| match e {
            Event::CleanupFinished { properties, .. } => properties.get("istiod-ack-errors").cloned(),
            _ => None,
        });
        if acks.as_deref() != Some("0") {
            return Err(format!("istiod logged rejected configs (ACK ERROR): {acks:?}").into());
        }
    }
    assert_clean(r)?;
    assert_no_secrets_in_reports(r)
}

/// Asserts a run failed with `status` and that step `id` failed with a message containing `needle`.
pub fn assert_failed(r: &RunResult, status: ExitStatus, id: &str, needle: &str) -> Result<(), Failed> {
    assert_clean(r)?;
    if r.status != status {
        return Err(format!("expected {status:?}, run ended {:?}:\n{}", r.status, r.failures()).into());
    }
    match r.outcome(id) {
        Some((Outcome::Failed { message, .. }, _)) if message.contains(needle) => Ok(()),
        other => Err(format!(
            "step {id}: expected a failure containing {needle:?}, got {other:?}\nall failures:\n{}",
            r.failures()
        )
        .into()),
    }
}

/// Runs the suite's trials. Failure-injection trials break what the run created, so they run on the providers
/// that create their clusters (kwok, kind) and are listed as ignored on `existing` (a user's clusters); `kwok_only`
/// trials need the rehearsal's own processes. An ignored trial is reported as such, never as a pass.
pub fn main(conformance: Trial, faults: Vec<Trial>, kwok_only: Vec<Trial>) -> std::process::ExitCode {
    main_with(conformance, faults, kwok_only, Vec::new())
}

/// [`main`] plus trials that need the kind provider's Docker engine.
pub fn main_with(
    conformance: Trial,
    faults: Vec<Trial>,
    kwok_only: Vec<Trial>,
    kind_only: Vec<Trial>,
) -> std::process::ExitCode {
    meshconf::rehearsal::run_if_shim();
    let mut args = Arguments::from_args();
    // Rehearsals are heavy on a small machine and bind fixed port ranges: run trials one at a time.
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let p = provider().ok();
    let kwok = p == Some(ProviderKind::Kwok);
    let creates = kwok || p == Some(ProviderKind::Kind);
    let mut trials = self_tests();
    trials.push(conformance);
    trials.extend(faults.into_iter().map(|t| t.with_ignored_flag(!creates)));
    trials.extend(kwok_only.into_iter().map(|t| t.with_ignored_flag(!kwok)));
    trials.extend(
        kind_only
            .into_iter()
            .map(|t| t.with_ignored_flag(p != Some(ProviderKind::Kind))),
    );
    libtest_mimic::run(&args, trials).exit_code()
}

/// Issue: a user's own Docker engine is used as it is and no second engine starts. The engine this suite runs
/// on plays the user's: `DOCKER_HOST` points at it while meshconf's engine directory is an empty one, so
/// `tools/engine.sh up` could only start a new engine there: it must use the user's and start none.
pub fn users_engine_is_used_as_is() -> Result<(), Failed> {
    let bin = meshconf::tools::which("docker").ok_or("the docker CLI is not on PATH")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let host = match rt.block_on(meshconf::tools::find_engine(&bin))? {
        Some(ours) => ours,
        None => std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
    };
    let dockerds = || -> Result<usize, Failed> {
        let out = std::process::Command::new("timeout")
            .args(["10s", "pgrep", "-x", "dockerd"])
            .output()
            .map_err(|e| format!("pgrep: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().count())
    };
    let before = dockerds()?;
    let empty = tempfile_dir()?;
    let out = std::process::Command::new("timeout")
        .args(["--kill-after=10", "300s", "bash"])
        .arg(root().join("tools/engine.sh"))
        .arg("up")
        .env("DOCKER_HOST", &host)
        .env("MESHCONF_ENGINE_DIR", &empty)
        .output()
        .map_err(|e| format!("tools/engine.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stdout.lines().last() != Some(host.as_str()) {
        return Err(
            format!("engine.sh up with DOCKER_HOST={host} printed {stdout:?}, said {stderr:?}").into(),
        );
    }
    if !stderr.contains("meshconf starts none") {
        return Err(format!("engine.sh did not say it uses the user's engine: {stderr:?}").into());
    }
    let after = dockerds()?;
    let _ = std::fs::remove_dir_all(&empty);
    if after != before || std::path::Path::new(&empty).join("docker.sock").exists() {
        return Err(format!("a second engine started: {before} dockerd before, {after} after").into());
    }
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf, Failed> {
    let d = std::env::temp_dir().join(format!("meshconf-engine-probe-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

/// Fault helper: a reporter that runs `action` once, when step `step` starts (or, with `on_retry`, when its
/// first attempt has failed and the runner is about to retry it).
pub struct OnTrigger<F: FnMut() + Send> {
    pub step: String,
    pub on_retry: bool,
    pub action: Option<F>,
}

impl<F: FnMut() + Send> Reporter for OnTrigger<F> {
    fn on_event(&mut self, event: &Event) {
        let fire = match event {
            Event::StepStarted { id, .. } => !self.on_retry && id.0 == self.step,
            Event::StepLog { id, message } => {
                self.on_retry && id.0 == self.step && message.starts_with("attempt 1 failed")
            }
            _ => false,
        };
        if fire && let Some(mut a) = self.action.take() {
            a();
        }
    }

    fn finish(&mut self) -> Result<(), meshconf::report::ReportError> {
        Ok(())
    }
}

/// The port range of the existing-provider trial (every trial has its own; see [`PORTS`]).
pub const EXISTING_PORT_BASE: u16 = 31700;

/// Every trial's first rehearsal port, by report name: each trial owns 100 ports from there, so trials can run
/// at once in separate processes. A test holds them distinct.
pub const PORTS: &[(&str, u16)] = &[
    ("multi_primary", 31000),
    ("multi_primary.no-secret", 31100),
    ("multi_primary.no-shared-root", 31200),
    ("multi_primary.no-injection", 31300),
    ("multi_primary.istiod-killed", 31400),
    ("primary_remote", 31500),
    ("primary_remote.no-lb", 31600),
    ("existing_provider", EXISTING_PORT_BASE),
    ("multi_primary.flaky", 31800),
];

/// The first port of trial `name` (from [`PORTS`]).
pub fn port(name: &str) -> u16 {
    PORTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("trial {name} has no port range in common::PORTS"))
}

/// Trials of the suites' own machinery: they create nothing and run on every provider.
pub fn self_tests() -> Vec<Trial> {
    vec![
        Trial::test(
            "harness::trials_have_distinct_port_ranges_and_cluster_names",
            || {
                let mut seen = std::collections::BTreeMap::new();
                for (name, p) in PORTS {
                    if let Some(other) = seen.insert(p / 100, name) {
                        return Err(format!("{name} and {other} share the port range {p}").into());
                    }
                }
                let prefixes: std::collections::BTreeSet<String> =
                    PORTS.iter().map(|(n, _)| kind_prefix(n)).collect();
                if prefixes.len() != PORTS.len() {
                    return Err(format!("kind prefixes collide: {prefixes:?}").into());
                }
                Ok(())
            },
        ),
        Trial::test("harness::a_fault_that_was_not_injected_fails_the_trial", || {
            let at = FaultAt {
                step: "deploy-apps/cluster2",
                fault: Fault::KillIstiod("cluster2"),
            };
            let broken = fault_verdict(
                &at,
                Some(Err("the rehearsal runs no process istiod-cluster2".into())),
            );
            let never = fault_verdict(&at, None);
            match (broken, never, fault_verdict(&at, Some(Ok(())))) {
                (Err(a), Err(b), Ok(())) => {
                    let (a, b) = (format!("{a:?}"), format!("{b:?}"));
                    if a.contains("could not be injected") && b.contains("never injected") {
                        Ok(())
                    } else {
                        Err(format!("unclear messages: {a} / {b}").into())
                    }
                }
                other => Err(format!("a failed or missing injection must fail the trial: {other:?}").into()),
            }
        }),
    ]
}

/// Issue: the `existing` provider must never delete what it did not create. Starts two rehearsal clusters,
/// plants a namespace the "user" owns, runs a scenario against their contexts with `--provider existing`, then
/// checks the user's namespace and both clusters are still there while the run's own namespace is gone.
pub fn existing_provider_leaves_what_it_did_not_create() -> Result<(), Failed> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PostParams};
    use meshconf::provider::ExistingProvider;
    use meshconf::tools::{Istioctl, IstioctlSource};

    ensure_tools()?;
    let text = "name: existing-check\nguide: \"Install Multi-Primary (install steps)\"\nmesh: {id: mesh1}\ntrust: shared-root\nclusters:\n  - {name: cluster1, role: primary, network: network1, kind-config: ../kind-configs/cluster1.yaml}\n  - {name: cluster2, role: primary, network: network1, kind-config: ../kind-configs/cluster2.yaml}\nsteps:\n  - install-istio: {cluster: cluster1}\n  - install-istio: {cluster: cluster2}\n";
    let s =
        scenario::load_str(&root().join("scenarios/existing-check.yaml"), text).map_err(|e| e.to_string())?;
    let tools = ToolsBin::locate().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let host = KwokProvider::new(
            tools.clone(),
            KwokOptions {
                port_base: EXISTING_PORT_BASE,
                run_dir: session::fresh_run_dir(&s),
                shim_exe: std::env::current_exe().map_err(|e| e.to_string())?,
                keep: false,
            },
        );
        let result = async {
            let clusters = host
                .create(&s)
                .await
                .map_err(|e| format!("rehearsal clusters: {e}"))?;
            for c in &clusters {
                let ns: Api<Namespace> = Api::all(c.client.clone());
                let mut n = Namespace::default();
                n.metadata.name = Some("user-owned".into());
                ns.create(&PostParams::default(), &n)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let contexts = clusters
                .iter()
                .map(|c| (c.name.clone(), c.context.clone()))
                .collect();
            let kubeconfig = clusters[0].kubeconfig.clone();
            let istioctl = Istioctl {
                bin: tools.path("istioctl"),
                source: IstioctlSource::RehearsalTools,
            };
            let existing = Arc::new(ExistingProvider::new(
                kubeconfig,
                contexts,
                session::fresh_run_dir(&s),
                Some(istioctl),
            ));
            let mut cfg = SessionConfig::new(ProviderKind::Existing, report_dir(), "existing_provider");
            cfg.console = true;
            let status = session::run_with(&cfg, &s, existing, Vec::new()).await;
            if status != ExitStatus::Passed {
                return Err(format!("run on existing clusters ended {status:?}"));
            }
            for c in &clusters {
                let ns: Api<Namespace> = Api::all(c.client.clone());
                let user = ns
                    .get_opt("user-owned")
                    .await
                    .map_err(|e| format!("{}: cluster gone? {e}", c.name))?;
                if user.is_none_or(|n| n.metadata.deletion_timestamp.is_some()) {
                    return Err(format!("{}: the user's namespace was deleted", c.name));
                }
                let ours = ns.get_opt("istio-system").await.map_err(|e| e.to_string())?;
                if ours.is_some_and(|n| n.metadata.deletion_timestamp.is_none()) {
                    return Err(format!(
                        "{}: istio-system, created by the run, was left in place",
                        c.name
                    ));
                }
            }
            Ok(())
        }
        .await;
        let cleanup = host.cleanup().await;
        result.and_then(|_| {
            if cleanup.complete {
                Ok(())
            } else {
                Err(format!("rehearsal cleanup: {}", cleanup.message))
            }
        })
    })
    .map_err(Failed::from)
}

/// Fault: deletes a MetalLB IPAddressPool in one cluster.
pub async fn delete_metallb_pool(
    kubeconfig: &std::path::Path,
    context: &str,
    pool: &str,
) -> Result<(), String> {
    use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
    let client = meshconf::kube::client_for(kubeconfig, context)
        .await
        .map_err(|e| e.to_string())?;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("metallb.io", "v1beta1", "IPAddressPool"));
    let pools: Api<DynamicObject> = Api::namespaced_with(client, "metallb-system", &ar);
    pools
        .delete(pool, &DeleteParams::default())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
