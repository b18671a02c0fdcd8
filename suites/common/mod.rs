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

/// What a failure-injection trial breaks, the same on every provider that creates its clusters.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// istiod of this cluster goes away (rehearsal: its process is killed; kind: its pods are deleted and its
    /// Deployment scaled to 0).
    KillIstiod(&'static str),
    /// MetalLB's address pool in this cluster is deleted: a LoadBalancer Service never gets an address.
    RemovePool(&'static str),
}

/// A fault and the step whose start triggers it.
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

/// Carries out `fault` (blocking the caller until done; reporters are synchronous).
fn inject(fault: Fault, kind: ProviderKind, run_dir: &std::path::Path, kwok: Option<&KwokProvider>) {
    let kubeconfig = |c: &str| match kind {
        ProviderKind::Kwok => (run_dir.join("kubeconfig"), format!("kwok-{c}")),
        _ => (
            run_dir.join(format!("kubeconfig-{c}")),
            format!("kind-meshconf-{c}"),
        ),
    };
    let result = match fault {
        Fault::KillIstiod(c) => match kwok {
            Some(p) => {
                p.kill_process(&format!("istiod-{c}"));
                Ok(())
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
    };
    if let Err(e) = result {
        eprintln!("fault injection {fault:?} failed: {e}");
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
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
    let mut cfg = SessionConfig::new(kind, root().join("reports"), name.to_string());
    cfg.port_base = port_base;
    cfg.run_dir = Some(session::fresh_run_dir(scenario));
    tweak(&mut cfg);
    let run_dir = cfg.run_dir.clone().unwrap_or_default();
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
                        run_dir: run_dir.clone(),
                        shim_exe: exe,
                        keep: false,
                    },
                ));
                let hook = p.clone();
                let dir = run_dir.clone();
                let r: Box<dyn Reporter> = Box::new(OnStepStart {
                    step: f.step.into(),
                    action: Some(move || inject(f.fault, ProviderKind::Kwok, &dir, Some(&hook))),
                });
                (p as Arc<dyn ClusterProvider>, vec![r])
            }
            (_, Some(f)) => {
                let dir = run_dir.clone();
                let r: Box<dyn Reporter> = Box::new(OnStepStart {
                    step: f.step.into(),
                    action: Some(move || inject(f.fault, kind, &dir, None)),
                });
                (session::build_provider(&cfg, scenario)?, vec![r])
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
    assert_clean(r)
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
    let mut trials = vec![conformance];
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
        let out = std::process::Command::new("pgrep")
            .args(["-x", "dockerd"])
            .output()
            .map_err(|e| format!("pgrep: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().count())
    };
    let before = dockerds()?;
    let empty = tempfile_dir()?;
    let out = std::process::Command::new("bash")
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
