//! Shared driver of the end-to-end suites: one libtest-mimic trial per check, on the provider named by
//! `MESHCONF_PROVIDER` (default `kind`). Reports go to `reports/<suite>.junit.xml`.

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

/// Builds the rehearsal tools if needed (no-op when cached) and exports their directory.
pub fn ensure_tools() -> Result<(), Failed> {
    if ToolsBin::locate().is_ok() {
        return Ok(());
    }
    let out = std::process::Command::new("bash")
        .arg(root().join("tools/build.sh"))
        .output()
        .map_err(|e| format!("cannot run tools/build.sh: {e}"))?;
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

/// Runs `scenario` on the suite's provider; `fault` may build a reporter that breaks something mid-run.
pub fn run(
    name: &str,
    scenario: &Scenario,
    port_base: u16,
    fault: Option<&dyn Fn(Arc<KwokProvider>) -> Box<dyn Reporter>>,
) -> Result<RunResult, Failed> {
    run_with(name, scenario, port_base, fault, &|_| {})
}

/// [`run`] with a chance to adjust the session configuration (e.g. shorter waits in failure tests).
pub fn run_with(
    name: &str,
    scenario: &Scenario,
    port_base: u16,
    fault: Option<&dyn Fn(Arc<KwokProvider>) -> Box<dyn Reporter>>,
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
    let mut cfg = SessionConfig::new(kind, root().join("reports"), name.to_string());
    cfg.port_base = port_base;
    tweak(&mut cfg);
    let collector = Collector::default();
    let events = collector.events.clone();
    let status = rt.block_on(async {
        let (provider, extra): (Arc<dyn ClusterProvider>, Vec<Box<dyn Reporter>>) = match (kind, fault) {
            (ProviderKind::Kwok, Some(f)) => {
                let tools = ToolsBin::locate().map_err(|e| e.to_string())?;
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                let p = Arc::new(KwokProvider::new(
                    tools,
                    KwokOptions {
                        port_base,
                        run_dir: session::fresh_run_dir(scenario),
                        shim_exe: exe,
                        keep: false,
                    },
                ));
                let r = f(p.clone());
                (p as Arc<dyn ClusterProvider>, vec![r])
            }
            _ => (session::build_provider(&cfg, scenario)?, Vec::new()),
        };
        let mut extra = extra;
        extra.push(Box::new(collector));
        Ok::<_, String>(session::run_with(&cfg, scenario, provider, extra).await)
    })?;
    let events = events.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(RunResult { status, events })
}

/// Asserts cleanup removed everything the run created (for the rehearsal: no process left, no port listening).
pub fn assert_clean(r: &RunResult) -> Result<(), Failed> {
    match r.events.iter().find_map(|e| match e {
        Event::CleanupFinished {
            complete, message, ..
        } => Some((*complete, message.clone())),
        _ => None,
    }) {
        Some((true, _)) => Ok(()),
        Some((false, m)) => Err(format!("cleanup incomplete: {m}").into()),
        None => Err("no cleanup event".into()),
    }
}

/// Asserts the happy path: status Passed and, from every source, both versions answered by the right cluster.
pub fn assert_conformance(r: &RunResult, sources: &[&str]) -> Result<(), Failed> {
    if r.status != ExitStatus::Passed {
        return Err(format!("run ended {:?}:\n{}", r.status, r.failures()).into());
    }
    for s in sources {
        let id = format!("check-traffic/from-{s}");
        let (outcome, props) = r.outcome(&id).ok_or_else(|| format!("no result for {id}"))?;
        if outcome != Outcome::Passed {
            return Err(format!("{id}: {outcome:?}").into());
        }
        for key in ["count/v1@cluster1", "count/v2@cluster2"] {
            let n: u64 = props.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
            if n == 0 {
                return Err(format!("{id}: no answers for {key}; properties {props:?}").into());
            }
        }
    }
    assert_clean(r)
}

/// Asserts a run failed with `status` and that step `id` failed with a message containing `needle`.
pub fn assert_failed(r: &RunResult, status: ExitStatus, id: &str, needle: &str) -> Result<(), Failed> {
    if provider()? == ProviderKind::Kwok {
        assert_clean(r)?;
    }
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

/// Runs the suite's trials. Failure-injection trials need the rehearsal (they break real processes).
pub fn main(conformance: Trial, faults: Vec<Trial>) -> std::process::ExitCode {
    meshconf::rehearsal::run_if_shim();
    let mut args = Arguments::from_args();
    // Rehearsals are heavy on a small machine and bind fixed port ranges: run trials one at a time.
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let kwok = provider().map(|p| p == ProviderKind::Kwok).unwrap_or(false);
    let mut trials = vec![conformance];
    trials.extend(faults.into_iter().map(|t| t.with_ignored_flag(!kwok)));
    libtest_mimic::run(&args, trials).exit_code()
}

/// Fault helper: a reporter that runs `action` once, when step `step` starts.
pub struct OnStepStart<F: FnMut() + Send> {
    pub step: String,
    pub action: Option<F>,
}

impl<F: FnMut() + Send> Reporter for OnStepStart<F> {
    fn on_event(&mut self, event: &Event) {
        if let Event::StepStarted { id, .. } = event
            && id.0 == self.step
            && let Some(mut a) = self.action.take()
        {
            a();
        }
    }

    fn finish(&mut self) -> Result<(), meshconf::report::ReportError> {
        Ok(())
    }
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
                port_base: 31700,
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
            let mut cfg = SessionConfig::new(
                ProviderKind::Existing,
                root().join("reports"),
                "existing_provider",
            );
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

/// Fault: deletes the rehearsal's MetalLB IPAddressPool in one cluster.
pub async fn delete_metallb_pool(kubeconfig: &std::path::Path, context: &str) -> Result<(), String> {
    use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
    let client = meshconf::kube::client_for(kubeconfig, context)
        .await
        .map_err(|e| e.to_string())?;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("metallb.io", "v1beta1", "IPAddressPool"));
    let pools: Api<DynamicObject> = Api::namespaced_with(client, "metallb-system", &ar);
    pools
        .delete("rehearsal", &DeleteParams::default())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
