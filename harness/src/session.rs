//! One run of one scenario, wired end to end: provider, reporters, runner, Ctrl-C. Shared by the CLI and the
//! suites so both behave the same.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::exit::ExitStatus;
use crate::mesh::Variant;
use crate::plan::{self, Plan, ProviderKind};
use crate::provider::{
    ClusterProvider, ExistingProvider, KindOptions, KindProvider, KwokOptions, KwokProvider, ProviderError,
    ToolsBin,
};
use crate::report::{
    ConformanceReporter, ConsoleReporter, EventBus, HtmlReporter, JsonReporter, JunitReporter, Reporter,
    TranscriptReporter,
};
use crate::runner::{RefusedRun, RunOptions, Runner};
use crate::scenario::{ClusterName, Scenario};
use crate::tools::Istioctl;

/// Set by the first SIGINT or SIGTERM a run sees, for the whole process: a suite that runs many trials stops
/// after the trial in flight has cleaned up, instead of starting the next one (a CI cancel expects an exit).
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process was interrupted (SIGINT or SIGTERM) during a run.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The exit code of a process that stops because it was interrupted (128 + SIGINT, as shells report it).
pub const INTERRUPTED_EXIT: i32 = 130;

/// Default first port of the rehearsal's 127.0.0.1 range.
pub const DEFAULT_PORT_BASE: u16 = 31000;

/// Everything needed to run a scenario.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Provider.
    pub provider: ProviderKind,
    /// Directory for JUnit and JSON reports.
    pub report_dir: PathBuf,
    /// Base name of the report files (`<name>.junit.xml`, `<name>.json`).
    pub report_name: String,
    /// Keep clusters and processes afterwards.
    pub keep: bool,
    /// kind: Istio version to download (else istioctl from PATH).
    pub istio_version: Option<String>,
    /// The Istio build built here to drive (`--istio 1.31-dev`): its istioctl, istiod, charts and images.
    pub istio_build: Option<String>,
    /// kind: node image.
    pub node_image: Option<String>,
    /// kind: cluster name prefix.
    pub kind_prefix: String,
    /// kind: use released images from their registries even when `make images` built local ones.
    pub released_images: bool,
    /// existing: kubeconfig file (read only).
    pub kubeconfig: Option<PathBuf>,
    /// existing: scenario cluster → context.
    pub contexts: BTreeMap<ClusterName, String>,
    /// kwok: first port.
    pub port_base: u16,
    /// Run directory (default: a fresh one under the temp dir).
    pub run_dir: Option<PathBuf>,
    /// Print progress to the console.
    pub console: bool,
    /// kind: run on the fleet of the scenario's topology (created when missing, kept afterwards).
    pub reuse: bool,
    /// Options for the runner.
    pub run: RunOptions,
}

impl SessionConfig {
    /// Defaults for `provider`, reporting under `report_dir` as `report_name`.
    pub fn new(provider: ProviderKind, report_dir: PathBuf, report_name: impl Into<String>) -> Self {
        Self {
            provider,
            report_dir,
            report_name: report_name.into(),
            keep: false,
            istio_version: None,
            istio_build: None,
            node_image: None,
            kind_prefix: "meshconf".into(),
            released_images: false,
            kubeconfig: None,
            contexts: BTreeMap::new(),
            port_base: DEFAULT_PORT_BASE,
            run_dir: None,
            console: true,
            reuse: false,
            run: RunOptions::default(),
        }
    }
}

/// A fresh run directory under the system temp dir.
pub fn fresh_run_dir(scenario: &Scenario) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    std::env::temp_dir().join("meshconf-runs").join(format!(
        "{}-{}-{stamp}",
        scenario.name,
        std::process::id()
    ))
}

/// The kind provider's options: images from `make images` unless `released_images`, the `kind` subnet from
/// `MESHCONF_KIND_SUBNET`, and whether this host runs cgroup v1.
pub fn kind_options(cfg: &SessionConfig, run_dir: PathBuf) -> Result<KindOptions, String> {
    let images = if cfg.released_images {
        None
    } else {
        crate::images::ImageSet::locate().map_err(|e| e.to_string())?
    };
    let images = match (images, &cfg.istio_build) {
        (Some(i), Some(name)) => {
            let build = crate::builds::pick(&i.tools_bin, name).map_err(|e| e.to_string())?;
            Some(i.with_build(&build)?)
        }
        (None, Some(name)) => {
            return Err(format!(
                "--istio {name} names a build made here, but no images were built (run `make images`) or \
                 --released-images was given (use --istio-version X.Y.Z for released Istio)"
            ));
        }
        (i, None) => i,
    };
    let subnet =
        std::env::var("MESHCONF_KIND_SUBNET").unwrap_or_else(|_| crate::provider::DEFAULT_KIND_SUBNET.into());
    let subnet = subnet
        .parse()
        .map_err(|e| format!("MESHCONF_KIND_SUBNET={subnet:?} is not an IPv4 subnet: {e}"))?;
    Ok(KindOptions {
        prefix: cfg.kind_prefix.clone(),
        node_image: cfg.node_image.clone(),
        istio_version: cfg.istio_version.clone(),
        run_dir,
        keep: cfg.keep,
        images,
        subnet,
        cgroup_v1: !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        fleet: None,
    })
}

/// Builds the provider a session config names.
pub fn build_provider(cfg: &SessionConfig, scenario: &Scenario) -> Result<Arc<dyn ClusterProvider>, String> {
    let run_dir = cfg.run_dir.clone().unwrap_or_else(|| fresh_run_dir(scenario));
    Ok(match cfg.provider {
        ProviderKind::Kind => Arc::new(KindProvider::new(kind_options(cfg, run_dir)?)),
        ProviderKind::Kwok => {
            let mut tools = ToolsBin::locate().map_err(|e| e.to_string())?;
            if let Some(name) = &cfg.istio_build {
                tools = tools.with_istio(name).map_err(|e| e.to_string())?;
            }
            let shim_exe = std::env::current_exe()
                .map_err(|e| format!("cannot find this executable for the curl stand-in: {e}"))?;
            Arc::new(KwokProvider::new(
                tools,
                KwokOptions {
                    port_base: cfg.port_base,
                    run_dir,
                    shim_exe,
                    keep: cfg.keep,
                    fleet: None,
                },
            ))
        }
        ProviderKind::Existing => {
            let kubeconfig = cfg
                .kubeconfig
                .clone()
                .ok_or("--provider existing needs --kubeconfig FILE (read only; never the default)")?;
            Arc::new(ExistingProvider::new(
                kubeconfig,
                cfg.contexts.clone(),
                run_dir,
                None,
            ))
        }
    })
}

/// Runs `scenario` on `provider` with console, JUnit and JSON reporters (plus `extra`).
pub async fn run_with(
    cfg: &SessionConfig,
    scenario: &Scenario,
    provider: Arc<dyn ClusterProvider>,
    extra: Vec<Box<dyn Reporter>>,
) -> ExitStatus {
    let mut reporters: Vec<Box<dyn Reporter>> = Vec::new();
    if cfg.console {
        reporters.push(Box::new(ConsoleReporter::new()));
    }
    reporters.push(Box::new(JunitReporter::new(
        cfg.report_dir.join(format!("{}.junit.xml", cfg.report_name)),
    )));
    reporters.push(Box::new(JsonReporter::new(
        cfg.report_dir.join(format!("{}.json", cfg.report_name)),
    )));
    reporters.push(Box::new(HtmlReporter::new(
        cfg.report_dir.join(format!("{}.html", cfg.report_name)),
    )));
    reporters.push(Box::new(ConformanceReporter::new(
        cfg.report_dir
            .join(format!("{}.conformance.yaml", cfg.report_name)),
        scenario,
    )));
    reporters.push(Box::new(TranscriptReporter::new(
        cfg.report_dir.join(format!("{}.sh", cfg.report_name)),
    )));
    reporters.extend(extra);
    let mut opts = cfg.run.clone();
    opts.report_dir.clone_from(&cfg.report_dir);
    let diagnostics = cfg.report_dir.join(format!("{}.diagnostics", cfg.report_name));
    // An earlier run's evidence under the same name would be mistaken for this run's.
    if diagnostics.exists()
        && let Err(e) = std::fs::remove_dir_all(&diagnostics)
    {
        eprintln!(
            "meshconf: cannot remove the earlier {}: {e}",
            diagnostics.display()
        );
    }
    opts.diagnostics_dir = Some(diagnostics);
    let runner = Runner::new(provider.clone(), EventBus::new(reporters), opts.clone());
    let flag = runner.interrupt_flag();
    // An earlier run of this process was interrupted: this one creates nothing (every step is skipped) and
    // still writes its report.
    if interrupted() {
        flag.store(true, Ordering::SeqCst);
    }
    let watcher = tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        eprintln!("meshconf: interrupted; stopping the current step, cleaning up and writing the report");
        INTERRUPTED.store(true, Ordering::SeqCst);
        flag.store(true, Ordering::SeqCst);
    });
    let status = match prepare(provider.as_ref(), scenario, &opts).await {
        Ok(p) => runner.run_builds(&p.plan, p.istioctl, p.builds).await,
        Err(e) => {
            let refused = RefusedRun {
                scenario: scenario.name.clone(),
                guide: scenario.guide.clone(),
                source: scenario.source.display().to_string(),
                profile: provider.profile(scenario),
            };
            runner.refuse(refused, e.to_string()).await
        }
    };
    watcher.abort();
    status
}

/// What a run executes: the plan, the istioctl of the run's build, and the istioctl of each other build the
/// scenario's clusters run (a mixed-version mesh), by name.
pub struct Prepared {
    /// The plan.
    pub plan: Plan,
    /// The run's istioctl.
    pub istioctl: Istioctl,
    /// Other builds' istioctl.
    pub builds: BTreeMap<String, Istioctl>,
}

/// Scenario → plan: the provider's prerequisites, the istioctl it drives and that istioctl's version (which picks
/// the guide variant), the istioctl of every other build a cluster runs (each recorded as the run's
/// `istio/<cluster>` property, as that istioctl names itself), then the plan the runner executes and `meshconf plan`
/// shows.
pub async fn prepare(
    provider: &dyn ClusterProvider,
    scenario: &Scenario,
    opts: &RunOptions,
) -> Result<Prepared, ProviderError> {
    provider.preflight().await?;
    let istioctl = provider.istioctl().await?;
    let version = istioctl.version().await?;
    let mut builds = BTreeMap::new();
    let mut profile = provider.profile(scenario);
    for b in scenario.builds() {
        builds.insert(b.to_string(), provider.istioctl_of_build(b).await?);
    }
    for c in &scenario.clusters {
        let Some(b) = &c.istio else { continue };
        if let Some(i) = builds.get(b) {
            let v = i.version().await?;
            profile
                .properties
                .insert(format!("{}/{}", crate::report::ISTIO_PROPERTY, c.name), v.raw);
        }
    }
    let deadlines = plan::Deadlines {
        load_balancer: opts.lb_timeout,
        ..plan::Deadlines::default()
    };
    let plan = plan::build_with(scenario, &Variant::for_version(version), profile, &deadlines);
    Ok(Prepared {
        plan,
        istioctl,
        builds,
    })
}

/// Checks the Istio builds a run names before anything is created: the one `--istio` picks and each a cluster of
/// the scenario runs (`istio:`) exist in the tools (and, on kind, in the images, with the same tag), and their
/// istioctl reports their version. Any problem is bad input (exit 2).
pub async fn check_build(cfg: &SessionConfig, scenario: &Scenario) -> Result<(), String> {
    check_features(cfg, scenario)?;
    let mixed: Vec<(&ClusterName, &String)> = scenario
        .clusters
        .iter()
        .filter_map(|c| c.istio.as_ref().map(|b| (&c.name, b)))
        .collect();
    // Builds only an install names (a canary of another build) are checked like the clusters' own.
    let canaries: Vec<&str> = scenario
        .builds()
        .into_iter()
        .filter(|b| !mixed.iter().any(|(_, m)| m.as_str() == *b))
        .collect();
    if cfg.istio_build.is_none() && mixed.is_empty() && canaries.is_empty() {
        return Ok(());
    }
    if let Some((c, b)) = mixed.first()
        && scenario.install_method == crate::scenario::InstallMethod::Helm
    {
        return Err(format!(
            "{}: {c} runs Istio build {b}, but mixed versions are installed with istioctl only (the Helm tab \
             installs one chart version); drop --install-method helm or the cluster's istio:",
            scenario.source.display()
        ));
    }
    let names = cfg
        .istio_build
        .iter()
        .map(String::as_str)
        .chain(mixed.iter().map(|(_, b)| b.as_str()))
        .chain(canaries.iter().copied());
    let builds = match cfg.provider {
        ProviderKind::Kwok => {
            let tools = ToolsBin::locate().map_err(|e| e.to_string())?;
            names
                .map(|n| crate::builds::pick(&tools.dir, n).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?
        }
        ProviderKind::Kind => {
            // The images must hold each build, tagged as its istioctl reports (`ImageSet::with_build`).
            let images = kind_options(cfg, PathBuf::new())?
                .images
                .ok_or("--istio and a cluster's istio: need images built here (make images)")?;
            let mut out = Vec::new();
            for n in names {
                let b = crate::builds::pick(&images.tools_bin, n).map_err(|e| e.to_string())?;
                images.with_build(&b)?;
                out.push(b);
            }
            out
        }
        ProviderKind::Existing => {
            return Err(
                "--istio and a cluster's istio: pick builds made here for kind or kwok; on existing clusters use the \
                 istioctl on PATH or --istio-version"
                    .into(),
            );
        }
    };
    for b in &builds {
        b.verify().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Refuses, before anything is created, what a provider cannot run yet (bad input, exit 2): upgrades and live
/// traffic run on kind and rehearse on kwok, which has ports for two istiods per cluster (a third revision is
/// refused); existing clusters cannot pull meshconf's images of other builds or its generator; the Helm tab
/// installs one release per chart.
pub fn check_features(cfg: &SessionConfig, scenario: &Scenario) -> Result<(), String> {
    use crate::scenario::Step;
    // Upgrades and live traffic also rehearse: istioctl installs each build for real, each control-plane revision
    // is a pilot-discovery process of its own (two per cluster at most: the rehearsal has ports for two), an
    // in-place upgrade replaces the running one, and the generator is the rehearsal's stand-in.
    let third_revision = scenario.clusters.iter().find_map(|c| {
        let n = scenario
            .steps
            .iter()
            .filter(|s| matches!(s, Step::InstallIstio(i) if i.cluster == c.name && i.revision.is_some()))
            .count();
        (n > 2).then_some("a third control-plane revision in one cluster")
    });
    let upgrade_step = |s: &Step| match s {
        Step::InstallIstio(i) if i.revision.is_some() => Some("install-istio with a revision"),
        Step::MoveWorkloads { .. } => Some("move-workloads"),
        Step::RemoveRevision { .. } => Some("remove-revision"),
        Step::UpgradeIstio { .. } => Some("upgrade-istio"),
        Step::RestartWorkloads { .. } => Some("restart-workloads"),
        Step::StartTraffic(_) => Some("start-traffic"),
        _ => None,
    };
    let Some(what) = scenario.steps.iter().find_map(upgrade_step) else {
        return Ok(());
    };
    let src = scenario.source.display();
    match (cfg.provider, third_revision) {
        (ProviderKind::Kind, _) | (ProviderKind::Kwok, None) => {}
        (ProviderKind::Kwok, Some(k)) => {
            return Err(format!(
                "{src}: {k} runs on --provider kind only so far (the rehearsal has ports for two istiods per \
                 cluster)"
            ));
        }
        (ProviderKind::Existing, _) => {
            return Err(format!(
                "{src}: {what} runs on --provider kind and kwok only so far: existing clusters lack meshconf's \
                 images of other builds and its loadgen image"
            ));
        }
    }
    if scenario.install_method == crate::scenario::InstallMethod::Helm {
        return Err(format!(
            "{src}: {what} is an istioctl upgrade; drop --install-method helm"
        ));
    }
    Ok(())
}

/// Runs `scenario` as `cfg` says.
pub async fn run(cfg: &SessionConfig, scenario: &Scenario) -> ExitStatus {
    if let Err(e) = check_build(cfg, scenario).await {
        eprintln!("meshconf: {e}");
        return ExitStatus::BadInput;
    }
    if cfg.provider == ProviderKind::Kwok
        && let Err(e) = crate::provider::check_port_base(
            cfg.port_base,
            scenario.clusters.len(),
            crate::provider::ephemeral_range(),
        )
    {
        eprintln!("meshconf: {e}");
        return ExitStatus::BadInput;
    }
    if cfg.reuse {
        return run_on_fleet(cfg, scenario).await;
    }
    match build_provider(cfg, scenario) {
        Ok(p) => run_with(cfg, scenario, p, Vec::new()).await,
        Err(e) => {
            eprintln!("meshconf: {e}");
            ExitStatus::Infrastructure
        }
    }
}

/// The provider side of the fleet a `--reuse` run of `cfg` uses: kind's options, or the rehearsal's tools and port
/// base (existing clusters are the user's: no fleet).
pub fn fleet_base(cfg: &SessionConfig) -> Result<crate::lease::FleetBase, String> {
    match cfg.provider {
        ProviderKind::Kind => Ok(crate::lease::FleetBase::Kind(kind_options(cfg, PathBuf::new())?)),
        ProviderKind::Kwok => {
            let tools = ToolsBin::locate().map_err(|e| e.to_string())?;
            let shim_exe = std::env::current_exe()
                .map_err(|e| format!("cannot find this executable for the curl stand-in: {e}"))?;
            // The fleet's control planes come from the default build's tools; `--istio` picks istiod per run.
            let tools_of_run = match &cfg.istio_build {
                Some(name) => tools.clone().with_istio(name).map_err(|e| e.to_string())?,
                None => tools,
            };
            Ok(crate::lease::FleetBase::Kwok {
                tools: tools_of_run,
                opts: KwokOptions {
                    port_base: cfg.port_base,
                    run_dir: PathBuf::new(),
                    shim_exe,
                    keep: false,
                    fleet: None,
                },
            })
        }
        ProviderKind::Existing => Err(
            "--reuse is for --provider kind or kwok (existing clusters are yours: nothing is made)".into(),
        ),
    }
}

/// `--reuse`: the fleet for the scenario's topology ([`crate::lease`]), created when missing, recreated when dirty
/// or gone, reused when it answers; its record updated after the run.
pub async fn run_on_fleet(cfg: &SessionConfig, scenario: &Scenario) -> ExitStatus {
    let base = match fleet_base(cfg) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("meshconf: {e}");
            return match cfg.provider {
                ProviderKind::Existing => ExitStatus::BadInput,
                _ => ExitStatus::Infrastructure,
            };
        }
    };
    let lease = match crate::lease::acquire(&base, scenario, crate::lease::DEFAULT_WAIT).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("meshconf: {e}");
            return e.status();
        }
    };
    let watch = lease.watch();
    let status = run_with(cfg, scenario, lease.provider(), vec![watch]).await;
    lease.finish(scenario, interrupted());
    status
}
