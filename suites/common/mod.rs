//! Shared driver of the end-to-end suites: one libtest-mimic trial per check, on the provider named by
//! `MESHCONF_PROVIDER` (default `kind`). Reports go to `reports/<provider>/<suite>.junit.xml`. This file runs a
//! scenario for a trial; fault injection, secret harvesting, assertions and trial policy have modules of their own.

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

mod assertions;
mod faults;
mod secrets;
mod special;
mod trials;

// Each suite binary uses a different subset of these.
use faults::inject;
use secrets::SecretHarvest;
#[allow(unused_imports)]
pub use {assertions::*, faults::*, secrets::*, special::*, trials::*};

/// The repository root (suites run from the root package).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the suites write reports: `reports/<provider>/`, so the rehearsal's and kind's reports of one
/// `make test` sit side by side.
pub fn report_dir() -> PathBuf {
    // A suite run by another trial (the interrupt trial) writes elsewhere, so it replaces no report of this run.
    if let Some(d) = std::env::var_os("MESHCONF_SUITE_REPORTS").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
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

/// The scenario installed as its guide's Helm tab does (`install-method: helm` added to the file's text).
pub fn helm(text: String) -> String {
    text.replacen("\nclusters:\n", "\ninstall-method: helm\nclusters:\n", 1)
}

/// How a guide's conformance trial installs Istio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// The guide's istioctl tab (the scenario as written).
    Istioctl,
    /// Its Helm tab: the plan must install with helm alone.
    Helm,
}

/// A two-cluster guide end to end: both versions answer from both clusters; with Helm, the transcript installed
/// with helm alone; across networks, every answer from the other network came through its gateway.
pub fn guide_conformance(file: &str, report: &str, tab: Tab) -> Result<(), Failed> {
    let s = match tab {
        Tab::Istioctl => scenario(file, |t| t)?,
        Tab::Helm => scenario_checked(file, helm)?,
    };
    let r = run(report, &s, port(report), None)?;
    assertions::assert_conformance(&r, &["cluster1", "cluster2"])?;
    if tab == Tab::Helm {
        let transcript = report_dir().join(format!("{report}.sh"));
        let sh =
            std::fs::read_to_string(&transcript).map_err(|e| format!("{}: {e}", transcript.display()))?;
        if !sh.contains("\nhelm install istiod ") || sh.contains("\nistioctl install") {
            return Err(format!(
                "{}: the run did not install with helm alone",
                transcript.display()
            )
            .into());
        }
    }
    if s.clusters.iter().any(|c| c.network != s.clusters[0].network) {
        assertions::assert_gateway_path(&r, &["cluster1", "cluster2"])?;
    }
    Ok(())
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

/// The older Istio line built beside the default (tools/istio-builds.env): the baseline of the build-axis trials.
pub const OLDER_ISTIO: &str = "1.31-dev";

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
    /// `meshconf plan` for the same scenario and provider settings, rendered apart from the run (or why not).
    pub plan: Result<String, String>,
    /// The fleet's record after the run, when the trial ran on one.
    pub fleet: Option<meshconf::fleet::FleetRecord>,
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

    /// The proxy image each pod ran as step `id` recorded it (`proxy/<pod>` properties).
    pub fn proxy_images(&self, id: &str) -> Vec<String> {
        self.outcome(id)
            .map(|(_, props)| {
                props
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("proxy/"))
                    .map(|(_, v)| v)
                    .collect()
            })
            .unwrap_or_default()
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

/// Runs `scenario` on the suite's provider; `fault` breaks something when its step starts.
pub fn run(
    name: &str,
    scenario: &Scenario,
    port_base: u16,
    fault: Option<FaultAt>,
) -> Result<RunResult, Failed> {
    run_with(name, scenario, port_base, fault, &|_| {})
}

/// Runs trial `name` on its own ports on scenario `file` as `edit` breaks it (the edit must change the file).
pub fn run_broken(name: &str, file: &str, edit: impl Fn(String) -> String) -> Result<RunResult, Failed> {
    let s = scenario_checked(file, edit)?;
    run(name, &s, port(name), None)
}

/// The kubeconfig and context the provider wrote for cluster `c` of a run.
pub(crate) fn cluster_kubeconfig(
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

/// Runs `f` to its end from synchronous code inside a run: a reporter's `on_event` (a fault's injection), which the
/// event bus calls under its lock. It runs on a thread and runtime of its own: on the run's runtime it could wait
/// for workers that are themselves waiting on that lock to log (a kind run saw two traffic checks held 888 s by a
/// reporter reading the clusters that way).
pub(crate) fn block_on<T: Send>(f: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        let done = s
            .spawn(
                move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => Ok(rt.block_on(f)),
                    Err(e) => Err((f, e)),
                },
            )
            .join();
        match done {
            Ok(Ok(v)) => v,
            // No runtime of its own (the machine is out of threads or descriptors): the run's, as before.
            Ok(Err((f, e))) => {
                eprintln!("meshconf suite: no runtime of its own for a call ({e}); using the run's");
                tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
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
    cfg.run_dir = Some(session::fresh_run_dir(scenario));
    tweak(&mut cfg);
    // On kind every trial of a topology runs on one fleet: created by the first, reset and proved clean by each.
    // A rehearsal trial asks for its fleet with `cfg.reuse` (as `meshconf run --provider kwok --reuse`).
    let on_suite_fleet = kind == ProviderKind::Kind && suite_fleets();
    let lease = match on_suite_fleet || cfg.reuse {
        true => {
            let base = session::fleet_base(&cfg)?;
            if on_suite_fleet {
                rt.block_on(retire_other_suite_fleets(&base, scenario))?;
            }
            Some(
                rt.block_on(meshconf::lease::acquire(
                    &base,
                    scenario,
                    meshconf::lease::DEFAULT_WAIT,
                ))
                .map_err(|e| format!("fleet for {name}: {e}"))?,
            )
        }
        false => None,
    };
    let (run_dir, prefix) = match &lease {
        Some(l) => (l.survey.dir.clone(), l.survey.prefix().to_string()),
        None => (cfg.run_dir.clone().unwrap_or_default(), cfg.kind_prefix.clone()),
    };
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
        pending: Arc::default(),
    };
    let secrets = harvest.found.clone();
    let reads = harvest.pending.clone();
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
                        fleet: None,
                    },
                )))
            }
            _ => None,
        };
        let provider: Arc<dyn ClusterProvider> = match (&kwok, &lease) {
            (Some(p), _) => p.clone(),
            (None, Some(l)) => l.provider(),
            (None, None) => session::build_provider(&cfg, scenario)?,
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
        extra.extend(lease.as_ref().map(|l| l.watch()));
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
    // The plan as `meshconf plan` shows it for the same settings (a fleet's: as it stood when the run began).
    let plan = rt.block_on(plan_apart(&cfg, scenario, lease.as_ref().map(|l| &l.survey)));
    let fleet = lease.map(|l| l.finish(scenario, session::interrupted()));
    if let Some(f) = &fault {
        let got = injected.lock().map(|g| g.clone()).unwrap_or(None);
        fault_verdict(f, got)?;
    }
    let events = events.lock().map(|v| v.clone()).unwrap_or_default();
    SecretHarvest::join(&reads, &secrets);
    let secrets = secrets.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(RunResult {
        status,
        events,
        name: name.to_string(),
        secrets,
        plan,
        fleet,
    })
}

/// The kind suites keep one fleet up at a time: before a trial takes its fleet, every other fleet of the suites'
/// own directory (`MESHCONF_FLEETS_DIR`, as the Makefile sets it) that no run holds is taken down, since an idle
/// kind node still costs about a tenth of a CPU the running trial needs (the trials are ordered by topology, so
/// each fleet is made about once). Under the default directory, where `meshconf run --reuse` keeps a user's
/// fleets, nothing else is touched. A fleet that cannot be taken down is named and left to `fleet down --all`.
async fn retire_other_suite_fleets(
    base: &meshconf::lease::FleetBase,
    scenario: &Scenario,
) -> Result<(), Failed> {
    if std::env::var_os("MESHCONF_FLEETS_DIR").is_none_or(|d| d.is_empty()) {
        return Ok(());
    }
    let keep = meshconf::lease::key_for(base, scenario).map_err(|e| e.to_string())?;
    for (key, r) in meshconf::lease::take_down_all_but(&meshconf::fleet::fleets_dir(), &keep).await {
        match r {
            Ok(_) => eprintln!("suite: fleet {key} taken down: the next trials run on fleet {keep}"),
            Err(meshconf::lease::LeaseError::Held(_)) => {}
            Err(e) => eprintln!("suite: fleet {key} left up: {e}"),
        }
    }
    Ok(())
}

/// Whether the kind suites run their trials on fleets (`MESHCONF_SUITE_FLEETS=0`: each trial makes its own
/// clusters, as `meshconf run` without `--reuse`).
pub fn suite_fleets() -> bool {
    std::env::var("MESHCONF_SUITE_FLEETS").map_or(true, |v| v != "0")
}

/// The plan as `meshconf plan` renders it for this configuration: a provider built afresh from the same
/// settings, the istioctl it drives asked for its version, the run's deadlines.
async fn plan_apart(
    cfg: &SessionConfig,
    scenario: &Scenario,
    fleet: Option<&meshconf::lease::Survey>,
) -> Result<String, String> {
    let provider: Arc<dyn ClusterProvider> = match fleet {
        Some(s) => s.provider(),
        None => session::build_provider(cfg, scenario)?,
    };
    let istioctl = provider.istioctl().await.map_err(|e| e.to_string())?;
    let version = istioctl.version().await.map_err(|e| e.to_string())?;
    let deadlines = meshconf::plan::Deadlines {
        load_balancer: cfg.run.lb_timeout,
        ..meshconf::plan::Deadlines::default()
    };
    let variant = meshconf::mesh::Variant::for_version(version);
    let plan = meshconf::plan::build_with(scenario, &variant, provider.profile(scenario), &deadlines);
    Ok(meshconf::plan::render_shell(&plan))
}
