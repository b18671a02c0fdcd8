//! The `meshconf` command line: a thin layer over the engine crate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use meshconf::ExitStatus;
use meshconf::mesh::{IstioVersion, Variant};
use meshconf::plan::{self, ProviderKind};
use meshconf::provider::{ClusterProvider, KindOptions, KindProvider, KwokOptions, KwokProvider, ToolsBin};
use meshconf::scenario::{self, ClusterName};
use meshconf::session::{self, SessionConfig};

/// Conformance harness for multicluster Istio installs (primary-remote, multi-primary).
#[derive(Parser)]
#[command(name = "meshconf", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Every fleet: key, age, runs, clean or dirty, clusters.
    List,
    /// Delete a fleet's clusters (and the egress rule and kind network it made); idempotent.
    Down {
        /// The fleet's key (from `meshconf fleet list`).
        #[arg(required_unless_present = "all")]
        key: Option<String>,
        /// Every fleet.
        #[arg(long, conflicts_with = "key")]
        all: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Check scenario files without creating anything (exit 2 on any problem).
    Validate {
        /// Scenario files.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
    /// Print the shell commands a person following the guide would type for a scenario.
    Plan {
        /// Scenario file.
        scenario: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Print the plan as JSON instead of shell.
        #[arg(long)]
        json: bool,
        /// The run directory the plan names (as `meshconf run --run-dir`); default: the variable $MESHCONF_RUN.
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Instead of printing, check that this transcript (a run's <name>.sh) executed exactly this plan, with
        /// its placeholders filled; exit 1 naming every difference.
        #[arg(long, value_name = "TRANSCRIPT")]
        against: Option<PathBuf>,
        /// kind and kwok: the plan of `meshconf run --reuse`: the fleet of the scenario's topology reused when it
        /// is clean and answers (else created), reset at the end (looked at, never changed).
        #[arg(long, conflicts_with = "run_dir")]
        reuse: bool,
    },
    /// Run a scenario: provision, install, deploy, check traffic, write JUnit and JSON reports.
    Run {
        /// Scenario file.
        scenario: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Directory for <name>.junit.xml and <name>.json.
        #[arg(long, default_value = "reports")]
        report_dir: PathBuf,
        /// Base name of the report files (default: the scenario name).
        #[arg(long)]
        report_name: Option<String>,
        /// Keep clusters and processes after the run (clean up later with `meshconf down`).
        #[arg(long)]
        keep: bool,
        /// Run directory for kubeconfigs, certs and logs (default: a fresh one under the temp dir).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Most bytes a failed run's diagnostics (<report-dir>/<name>.diagnostics/) may take, e.g. 5MiB, 512KiB, 10MB.
        #[arg(long, default_value = "5MiB", value_parser = parse_bytes)]
        diagnostics_budget: u64,
        /// Retry a failed traffic check up to N times; a check that passes only on a retry is reported as flaky
        /// (JUnit flakyFailure, one per failed attempt), never as a plain pass.
        #[arg(long, default_value_t = 0)]
        retries: u32,
        /// Run the steps of each stage one after another (they run at once by default): what parallelism saves.
        #[arg(long)]
        serial: bool,
        /// kind and kwok: run on the fleet of the scenario's topology: created when missing (or dirty, or gone),
        /// kept after the run, reset by it and proved clean; `meshconf fleet down` removes it. A rehearsal fleet
        /// keeps its control planes on the ports of --port-base (a fleet per port base).
        #[arg(long, conflicts_with_all = ["keep", "run_dir"])]
        reuse: bool,
    },
    /// Compare a candidate build's reports with a baseline's (the JSON records of two --report-dir): per run and
    /// check, pass or fail on each side, answers, p-values, convergence. Exit 1 on a regression (passed on the
    /// baseline, fails on the candidate) or a run the candidate lacks; 3 when an infrastructure error left
    /// something unjudged; slowdowns are flagged, never failed.
    Compare {
        /// The baseline's report directory.
        baseline: PathBuf,
        /// The candidate's report directory.
        candidate: PathBuf,
        /// Where comparison.json and comparison.html go (default: the candidate's directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A check converging slower by more than this percent of the baseline's time (and the floor) is a
        /// slowdown.
        #[arg(long, default_value_t = 50.0)]
        slowdown_percent: f64,
        /// Growth in convergence time always tolerated, seconds.
        #[arg(long, default_value_t = 3.0)]
        slowdown_floor: f64,
    },
    /// Fleets: the kind clusters and rehearsal control planes `run --reuse` keeps between runs.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Report each prerequisite (Docker engine, kind, istioctl, inotify limits, rehearsal tools) as pass or fail.
    Doctor,
    /// Delete what a kept run created (clusters, processes) given its run directory.
    Down {
        /// The run directory printed by `meshconf run --keep`.
        run_dir: PathBuf,
    },
}

#[derive(Args)]
struct Target {
    /// Where clusters come from.
    #[arg(long, value_enum, env = "MESHCONF_PROVIDER", default_value = "kind")]
    provider: ProviderKind,
    /// Install Istio as the guide's istioctl tab or its Helm tab does, whatever the scenario's `install-method:`
    /// says (a Helm run of a scenario is named `<scenario>-helm` in reports).
    #[arg(long, value_enum)]
    install_method: Option<MethodArg>,
    /// Istio version: kind downloads this istioctl (sha256-checked); plan uses it to pick the guide variant.
    #[arg(long, conflicts_with = "istio")]
    istio_version: Option<String>,
    /// The Istio build made here to drive (`1.31-dev`, `1.32-dev`; tools/istio-builds.env): its istioctl,
    /// istiod, charts and images. Reports are named `<scenario>@<build>`.
    #[arg(long, env = "MESHCONF_ISTIO")]
    istio: Option<String>,
    /// kind node image (kindest/node:vX.Y.Z@sha256:...).
    #[arg(long)]
    node_image: Option<String>,
    /// kind: use released images from their registries even where `make images` built local ones.
    #[arg(long)]
    released_images: bool,
    /// existing: kubeconfig to read (never modified).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// existing: map a scenario cluster to a context, e.g. --context cluster1=gke-east (repeatable).
    #[arg(long = "context", value_parser = parse_mapping)]
    contexts: Vec<(String, String)>,
    /// kwok: first 127.0.0.1 port of the rehearsal's range (20 ports per cluster).
    #[arg(long, default_value_t = session::DEFAULT_PORT_BASE)]
    port_base: u16,
}

/// `5MB`, `512KiB`, `1048576` → bytes (decimal and binary units).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size: write bytes or a number with a unit (5MB, 512KiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "kib" => 1024,
        "mb" | "m" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "gb" | "g" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "'{s}': unknown unit '{other}' (use B, KB, KiB, MB, MiB, GB, GiB)"
            ));
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

fn parse_mapping(s: &str) -> Result<(String, String), String> {
    let (a, b) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not CLUSTER=CONTEXT"))?;
    if a.is_empty() || b.is_empty() {
        return Err(format!("'{s}' is not CLUSTER=CONTEXT"));
    }
    Ok((a.to_string(), b.to_string()))
}

fn load(path: &std::path::Path) -> Result<scenario::Scenario, ExitCode> {
    scenario::load_file(path).map_err(|e| {
        eprintln!("{:?}", miette::Report::new(e));
        ExitCode::from(ExitStatus::BadInput.code() as u8)
    })
}

fn init_tracing() {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn session_config(t: &Target, report_dir: PathBuf, report_name: String) -> SessionConfig {
    let mut cfg = SessionConfig::new(t.provider, report_dir, report_name);
    cfg.istio_version = t.istio_version.clone();
    cfg.istio_build = t.istio.clone();
    cfg.node_image = t.node_image.clone();
    cfg.released_images = t.released_images;
    cfg.kubeconfig = t.kubeconfig.clone();
    cfg.contexts = t
        .contexts
        .iter()
        .map(|(a, b)| (ClusterName::new(a.clone()), b.clone()))
        .collect::<BTreeMap<_, _>>();
    cfg.port_base = t.port_base;
    cfg
}

fn plan_provider(t: &Target, scenario: &scenario::Scenario, run_dir: PathBuf) -> Box<dyn ClusterProvider> {
    match t.provider {
        ProviderKind::Kind => {
            let cfg = session_config(t, PathBuf::new(), scenario.name.clone());
            let opts = session::kind_options(&cfg, run_dir.clone()).unwrap_or_else(|e| {
                eprintln!("meshconf: {e}; planning with released images");
                KindOptions {
                    prefix: "meshconf".into(),
                    node_image: t.node_image.clone(),
                    istio_version: t.istio_version.clone(),
                    run_dir,
                    keep: false,
                    images: None,
                    subnet: meshconf::provider::DEFAULT_KIND_SUBNET
                        .parse()
                        .unwrap_or_default(),
                    cgroup_v1: false,
                    fleet: None,
                }
            });
            Box::new(KindProvider::new(opts))
        }
        ProviderKind::Kwok => {
            let tools = ToolsBin::locate().unwrap_or(ToolsBin {
                dir: PathBuf::from("$MESHCONF_TOOLS_BIN"),
                istio: None,
            });
            let tools = match &t.istio {
                Some(name) => tools.clone().with_istio(name).unwrap_or_else(|e| {
                    eprintln!("meshconf: {e}");
                    tools
                }),
                None => tools,
            };
            Box::new(KwokProvider::new(
                tools,
                KwokOptions {
                    port_base: t.port_base,
                    run_dir,
                    shim_exe: PathBuf::from("meshconf"),
                    keep: false,
                    fleet: None,
                },
            ))
        }
        ProviderKind::Existing => {
            let cfg = session_config(t, PathBuf::new(), scenario.name.clone());
            Box::new(meshconf::provider::ExistingProvider::new(
                t.kubeconfig
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("<kubeconfig>")),
                cfg.contexts,
                run_dir,
                None,
            ))
        }
    }
}

async fn plan_version(t: &Target, provider: &dyn ClusterProvider) -> (IstioVersion, Option<String>) {
    if let Some(v) = &t.istio_version
        && let Ok(v) = IstioVersion::parse(v)
    {
        return (v, None);
    }
    if let Ok(i) = provider.istioctl().await
        && let Ok(v) = i.version().await
    {
        return (v, None);
    }
    (
        IstioVersion::new(1, 30, 3),
        Some("no istioctl found: showing the Istio 1.30.3 variant (pass --istio-version)".into()),
    )
}

fn compare(
    baseline: &std::path::Path,
    candidate: &std::path::Path,
    out: Option<PathBuf>,
    percent: f64,
    floor: f64,
) -> ExitStatus {
    if !(percent >= 0.0 && floor >= 0.0) {
        eprintln!("meshconf: --slowdown-percent and --slowdown-floor must be numbers ≥ 0");
        return ExitStatus::BadInput;
    }
    let band = meshconf::compare::NoiseBand {
        percent,
        floor_seconds: floor,
    };
    let out = out.unwrap_or_else(|| candidate.to_path_buf());
    match meshconf::compare::run(baseline, candidate, &out, band) {
        Ok(c) => {
            print!("{}", meshconf::compare::console(&c));
            println!(
                "   {} and {}",
                out.join(meshconf::compare::JSON_FILE).display(),
                out.join(meshconf::compare::HTML_FILE).display()
            );
            c.status
        }
        Err(e) => {
            eprintln!("{:?}", miette::Report::msg(e.to_string()));
            // Bad input is what was read; a comparison that cannot be written is the machine's fault.
            match e {
                meshconf::compare::CompareError::Write { .. } => ExitStatus::Infrastructure,
                _ => ExitStatus::BadInput,
            }
        }
    }
}

async fn fleet(command: FleetCommand) -> ExitStatus {
    let root = meshconf::fleet::fleets_dir();
    match command {
        FleetCommand::List => {
            let fleets = meshconf::fleet::list(&root);
            if fleets.is_empty() {
                println!("no fleets under {}", root.display());
            }
            let now = meshconf::fleet::now();
            for (dir, r) in fleets {
                match r {
                    Ok(r) => println!(
                        "{}  {}  age {}  runs {}  {}  {}  (topology of {})",
                        r.key,
                        r.provider,
                        meshconf::fleet::age(r.created, now),
                        r.runs,
                        r.dirty
                            .map(|d| format!("DIRTY: {d}"))
                            .unwrap_or_else(|| "clean".into()),
                        r.clusters.join(","),
                        r.topology_of
                    ),
                    Err(e) => println!("{}  unreadable: {e}", dir.display()),
                }
            }
            ExitStatus::Passed
        }
        FleetCommand::Down { key, all } => {
            if let Some(k) = key
                .as_deref()
                .filter(|k| k.len() != 16 || !k.chars().all(|c| c.is_ascii_hexdigit()))
            {
                eprintln!(
                    "meshconf: '{k}' is not a fleet key (16 hex digits, as `meshconf fleet list` shows them)"
                );
                return ExitStatus::BadInput;
            }
            let dirs: Vec<PathBuf> = if all {
                meshconf::fleet::list(&root).into_iter().map(|(d, _)| d).collect()
            } else {
                key.iter().map(|k| root.join(k)).collect()
            };
            let mut status = ExitStatus::Passed;
            for dir in dirs {
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                if !dir.exists() {
                    println!("fleet {name}: already gone");
                    continue;
                }
                // Never from under a run that holds it.
                match meshconf::lease::take_down(&dir).await {
                    Ok(lines) => {
                        lines.iter().for_each(|l| println!("fleet {name}: {l}"));
                        println!("fleet {name}: removed");
                    }
                    Err(e @ meshconf::lease::LeaseError::Held(_)) => {
                        eprintln!("meshconf: {e}; try again once that run has ended");
                        status = ExitStatus::Infrastructure;
                    }
                    Err(e) => {
                        eprintln!("meshconf: fleet {name}: {e}");
                        status = ExitStatus::Infrastructure;
                    }
                }
            }
            status
        }
    }
}

async fn down(run_dir: PathBuf) -> ExitStatus {
    let pids = run_dir.join("pids");
    let mut status = ExitStatus::Passed;
    if let Ok(entries) = std::fs::read_dir(&pids) {
        use meshconf::rehearsal::pidfile;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            // Signal only a process proved to be the one the run started: a pid is reused once it is gone.
            match pidfile::read(&e.path()).and_then(|r| pidfile::still_ours(&r).map(|()| r)) {
                Ok(r) => {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(r.pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    eprintln!("stopped {name} (pid {})", r.pid);
                }
                Err(why) => eprintln!("left {name} alone: {why}"),
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(&run_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(cluster) = name.strip_suffix(".kwok.yaml") {
                let tools = ToolsBin::locate();
                let bin = tools
                    .map(|t| t.path("kwokctl"))
                    .unwrap_or_else(|_| PathBuf::from("kwokctl"));
                let r = meshconf::tools::Cmd::new(bin)
                    .args(["--name", cluster, "delete", "cluster", "--kubeconfig"])
                    .arg(run_dir.join("kubeconfig").display().to_string())
                    .env("KWOK_WORKDIR", run_dir.join("kwok").display().to_string())
                    .run()
                    .await;
                match r {
                    Ok(_) => eprintln!("deleted kwok cluster {cluster}"),
                    Err(e) => {
                        eprintln!("kwokctl delete {cluster}: {e}");
                        status = ExitStatus::Infrastructure;
                    }
                }
            }
        }
    }
    if run_dir.join("kind-state.json").is_file() {
        match KindProvider::down(&run_dir).await {
            Ok(lines) => lines.iter().for_each(|l| eprintln!("{l}")),
            Err(e) => {
                eprintln!("meshconf down: {e}");
                status = ExitStatus::Infrastructure;
            }
        }
    }
    if status == ExitStatus::Passed {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    status
}

fn main() -> ExitCode {
    meshconf::rehearsal::run_if_shim();
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshconf: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let status = rt.block_on(async {
        match cli.command {
            Command::Validate { scenarios } => {
                let mut status = ExitStatus::Passed;
                for p in &scenarios {
                    match scenario::load_file(p) {
                        Ok(s) => {
                            println!("ok   {} ({}, {} clusters, {} steps)", p.display(), s.name, s.clusters.len(), s.steps.len());
                            for w in &s.warnings {
                                println!("     warning: {w}");
                            }
                        }
                        Err(e) => {
                            eprintln!("{:?}", miette::Report::new(e));
                            status = ExitStatus::BadInput;
                        }
                    }
                }
                status
            }
            Command::Plan { scenario, target, json, run_dir, against, reuse } => {
                let s = match load(&scenario) {
                    Ok(s) => with_method(s, target.install_method),
                    Err(_) => return ExitStatus::BadInput,
                };
                if let Err(e) = session::check_build(&session_config(&target, PathBuf::new(), s.name.clone()), &s).await {
                    eprintln!("meshconf: {e}");
                    return ExitStatus::BadInput;
                }
                let provider: Arc<dyn ClusterProvider> = if reuse {
                    if target.provider == ProviderKind::Existing {
                        eprintln!("meshconf: --reuse is for --provider kind or kwok");
                        return ExitStatus::BadInput;
                    }
                    let cfg = session_config(&target, PathBuf::new(), s.name.clone());
                    let base = match session::fleet_base(&cfg) {
                        Ok(o) => o,
                        Err(e) => { eprintln!("meshconf: {e}"); return ExitStatus::Infrastructure; }
                    };
                    match meshconf::lease::survey(&base, &s).await {
                        Ok(survey) => survey.provider(),
                        Err(e) => { eprintln!("meshconf: {e}"); return e.status(); }
                    }
                } else {
                    Arc::from(plan_provider(&target, &s, run_dir.unwrap_or_else(|| PathBuf::from("$MESHCONF_RUN"))))
                };
                let (version, note) = plan_version(&target, provider.as_ref()).await;
                let mut profile = provider.profile(&s);
                profile.notes.extend(note);
                let p = plan::build(&s, &Variant::for_version(version), profile);
                if let Some(t) = against {
                    let transcript = match std::fs::read_to_string(&t) {
                        Ok(x) => x,
                        Err(e) => { eprintln!("meshconf: {}: {e}", t.display()); return ExitStatus::BadInput; }
                    };
                    return match plan::compare_transcript(&plan::render_shell(&p), &transcript) {
                        Ok(()) => { println!("{}: the plan's commands, placeholders filled, nothing more", t.display()); ExitStatus::Passed }
                        Err(d) => { eprintln!("{}: differs from the plan:\n{d}", t.display()); ExitStatus::ConformanceFailure }
                    };
                }
                if json {
                    match serde_json::to_string_pretty(&p) {
                        Ok(t) => println!("{t}"),
                        Err(e) => { eprintln!("meshconf: {e}"); return ExitStatus::Infrastructure; }
                    }
                } else {
                    print!("{}", plan::render_shell(&p));
                }
                ExitStatus::Passed
            }
            Command::Run { scenario, target, report_dir, report_name, keep, run_dir, diagnostics_budget, retries, serial, reuse } => {
                let s = match load(&scenario) {
                    Ok(s) => with_method(s, target.install_method),
                    Err(_) => return ExitStatus::BadInput,
                };
                if target.provider == ProviderKind::Existing && target.kubeconfig.is_none() {
                    eprintln!("meshconf: --provider existing needs --kubeconfig FILE and --context CLUSTER=CONTEXT for each cluster");
                    return ExitStatus::BadInput;
                }
                let name = report_name.unwrap_or_else(|| match &target.istio {
                    Some(b) => format!("{}@{b}", s.name),
                    None => s.name.clone(),
                });
                let mut cfg = session_config(&target, report_dir, name);
                cfg.keep = keep;
                cfg.reuse = reuse;
                cfg.run_dir = run_dir;
                cfg.run.diagnostics_budget = diagnostics_budget;
                cfg.run.check_retries = retries;
                cfg.run.serial = serial;
                session::run(&cfg, &s).await
            }
            Command::Doctor => {
                let checks = meshconf::doctor::run().await;
                println!("{}", meshconf::doctor::render(&checks));
                if checks.iter().all(|c| c.ok) { ExitStatus::Passed } else { ExitStatus::Infrastructure }
            }
            Command::Down { run_dir } => down(run_dir).await,
            Command::Fleet { command } => fleet(command).await,
            Command::Compare { baseline, candidate, out, slowdown_percent, slowdown_floor } => {
                compare(&baseline, &candidate, out, slowdown_percent, slowdown_floor)
            }
        }
    });
    ExitCode::from(status.code() as u8)
}

/// `--install-method`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Istioctl,
    Helm,
}

/// The scenario as `--install-method` asks for it to be installed.
fn with_method(mut s: meshconf::scenario::Scenario, m: Option<MethodArg>) -> meshconf::scenario::Scenario {
    use meshconf::scenario::InstallMethod;
    let want = match m {
        None => return s,
        Some(MethodArg::Istioctl) => InstallMethod::Istioctl,
        Some(MethodArg::Helm) => InstallMethod::Helm,
    };
    if s.install_method != want {
        s.name = format!("{}-{}", s.name, want.as_str());
        s.install_method = want;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_take_decimal_and_binary_units_and_reject_the_rest() {
        assert_eq!(parse_bytes("5MiB"), Ok(5 * 1024 * 1024));
        assert_eq!(parse_bytes("5MB"), Ok(5_000_000));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 * 1024));
        assert_eq!(parse_bytes("1048576"), Ok(1_048_576));
        assert!(parse_bytes("5 parsecs").is_err_and(|e| e.contains("unknown unit")));
        assert!(parse_bytes("MB").is_err());
        assert!(parse_bytes("99999999999GiB").is_err_and(|e| e.contains("too large")));
    }
}
