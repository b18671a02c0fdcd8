//! A run's hold on a fleet (`meshconf run --reuse`, and the kind suites): which fleet a scenario's topology maps
//! to, whether it is warm (recorded clean and answering) or must be made again and why, an exclusive lock so two
//! runs (two nextest processes, two CI jobs) never use one fleet's clusters at once, and the record written after
//! the run. `survey` changes nothing, so `meshconf plan --reuse` shows the plan such a run would execute.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::exit::ExitStatus;
use crate::fleet::{self, FleetKey, FleetRecord};
use crate::plan::StepClass;
use crate::provider::{
    ClusterProvider, KindFleet, KindOptions, KindProvider, KindState, KwokFleet, KwokOptions, KwokProvider,
    ToolsBin,
};
use crate::report::{Event, Outcome, ReportError, Reporter};
use crate::scenario::Scenario;

/// Why a run cannot have its fleet.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The scenario or the flags cannot make a fleet (exit 2).
    #[error("{0}")]
    BadInput(String),
    /// The fleet or the host failed (exit 3).
    #[error("{0}")]
    Infrastructure(String),
    /// Another run holds the fleet's lock (exit 3 for a run that needed it; a fleet to leave alone otherwise).
    #[error("{0}")]
    Held(String),
}

impl LeaseError {
    /// The exit status this error ends a run with.
    pub fn status(&self) -> ExitStatus {
        match self {
            LeaseError::BadInput(_) => ExitStatus::BadInput,
            LeaseError::Infrastructure(_) | LeaseError::Held(_) => ExitStatus::Infrastructure,
        }
    }
}

/// The provider side of a fleet: the options a run without `--reuse` would have.
// One value per run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum FleetBase {
    /// kind clusters (node containers on the kind network).
    Kind(KindOptions),
    /// Rehearsal control planes (kwokctl's binary runtime on 127.0.0.1 ports from the port base).
    Kwok {
        /// The tools whose binaries run the control planes.
        tools: ToolsBin,
        /// The provider's options (the fleet's port base).
        opts: KwokOptions,
    },
}

impl FleetBase {
    fn name(&self) -> &'static str {
        match self {
            FleetBase::Kind(_) => "kind",
            FleetBase::Kwok { .. } => "kwok",
        }
    }

    /// The provider of a run on this fleet.
    pub fn provider(&self) -> Arc<dyn ClusterProvider> {
        match self {
            FleetBase::Kind(o) => Arc::new(KindProvider::new(o.clone())),
            FleetBase::Kwok { tools, opts } => Arc::new(KwokProvider::new(tools.clone(), opts.clone())),
        }
    }

    /// The provider's state file in a fleet's directory (what `fleet down` removes from).
    fn state_file(&self) -> &'static str {
        match self {
            FleetBase::Kind(_) => crate::provider::KIND_STATE_FILE,
            FleetBase::Kwok { .. } => crate::provider::FLEET_STATE_FILE,
        }
    }

    /// The clusters a fleet's state file names.
    fn clusters(&self, dir: &std::path::Path) -> Vec<String> {
        match self {
            FleetBase::Kind(_) => {
                std::fs::read_to_string(dir.join(self.state_file()))
                    .ok()
                    .and_then(|t| serde_json::from_str::<KindState>(&t).ok())
                    .unwrap_or_default()
                    .clusters
            }
            FleetBase::Kwok { .. } => crate::provider::read_fleet_state(dir)
                .map(|s| s.clusters)
                .unwrap_or_default(),
        }
    }
}

/// Removes what is left of the fleet in `dir` (`meshconf fleet down`), by the provider state file found there.
pub async fn down(dir: &std::path::Path) -> Result<Vec<String>, String> {
    if dir.join(crate::provider::KIND_STATE_FILE).is_file() {
        KindProvider::down(dir).await
    } else if dir.join(crate::provider::FLEET_STATE_FILE).is_file() {
        KwokProvider::down(dir).await
    } else {
        Ok(Vec::new())
    }
}

/// Takes the fleet in `dir` down as `meshconf fleet down` does, never from under a run: its lock taken without
/// waiting (a held one is an error naming the fleet), what is left of its clusters removed, then its directory.
/// Returns what was removed, one line each.
pub async fn take_down(dir: &std::path::Path) -> Result<Vec<String>, LeaseError> {
    let name = key_of_dir(dir);
    let held = lock_at(
        &dir.with_file_name(format!("{name}.lock")),
        &FleetKey(name),
        Duration::ZERO,
    )?;
    let lines = down(dir).await.map_err(LeaseError::Infrastructure)?;
    let removed = std::fs::remove_dir_all(dir);
    drop(held);
    removed.map_err(|e| LeaseError::Infrastructure(format!("{}: {e}", dir.display())))?;
    Ok(lines)
}

/// A fleet directory's name, which is its key.
fn key_of_dir(dir: &std::path::Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// Takes down every fleet under `root` but `keep` that no run holds, each as [`take_down`]: the kind suites keep
/// one fleet up at a time, since an idle kind node still costs about a tenth of a CPU that the running trial
/// needs. Returns each fleet's key with what happened to it.
pub async fn take_down_all_but(
    root: &std::path::Path,
    keep: &FleetKey,
) -> Vec<(String, Result<Vec<String>, LeaseError>)> {
    let mut out = Vec::new();
    for (dir, _) in fleet::list(root) {
        let name = key_of_dir(&dir);
        if name != keep.0 {
            out.push((name, take_down(&dir).await));
        }
    }
    out
}

/// What a run on the fleet of a scenario's topology would use, found without changing anything.
#[derive(Debug, Clone)]
pub struct Survey {
    /// The fleet's key.
    pub key: FleetKey,
    /// Its directory (kubeconfigs, the provider's state, `fleet.json`).
    pub dir: PathBuf,
    /// The inputs the key hashes.
    pub inputs: Vec<String>,
    /// Its record, when it has one.
    pub record: Option<FleetRecord>,
    /// Why it cannot be reused as it is (the run then removes what is left of it and creates it again).
    pub why_not: Option<String>,
    /// The provider's options for the run, the fleet's warmth and note filled in.
    pub opts: FleetBase,
}

impl Survey {
    /// Whether the run reuses the fleet's clusters.
    pub fn warm(&self) -> bool {
        match &self.opts {
            FleetBase::Kind(o) => o.fleet.as_ref().is_some_and(|f| f.warm),
            FleetBase::Kwok { opts, .. } => opts.fleet.as_ref().is_some_and(|f| f.warm),
        }
    }

    /// The kind cluster-name prefix of the fleet's clusters (empty for a rehearsal fleet: kwokctl's names are the
    /// scenario's, in the fleet's own directory).
    pub fn prefix(&self) -> &str {
        match &self.opts {
            FleetBase::Kind(o) => &o.prefix,
            FleetBase::Kwok { .. } => "",
        }
    }

    /// What the plan says of the fleet.
    pub fn note(&self) -> &str {
        match &self.opts {
            FleetBase::Kind(o) => o.fleet.as_ref().map(|f| f.note.as_str()).unwrap_or_default(),
            FleetBase::Kwok { opts, .. } => opts.fleet.as_ref().map(|f| f.note.as_str()).unwrap_or_default(),
        }
    }

    /// The provider a run on this fleet uses.
    pub fn provider(&self) -> Arc<dyn ClusterProvider> {
        self.opts.provider()
    }
}

/// The key of the fleet for `scenario`'s topology, found from the inputs alone (nothing is read or asked).
pub fn key_for(base: &FleetBase, scenario: &Scenario) -> Result<FleetKey, LeaseError> {
    locate(base, scenario).map(|(key, ..)| key)
}

/// The key, directory and provider options of the fleet for `scenario` (no fleet state read yet), from the options
/// a run without `--reuse` would have (`session::kind_options`, `session::fleet_base`).
fn locate(
    base: &FleetBase,
    scenario: &Scenario,
) -> Result<(FleetKey, PathBuf, Vec<String>, FleetBase), LeaseError> {
    let root = fleet::fleets_dir();
    let mut extra: Vec<(&str, String)> = match base {
        FleetBase::Kind(opts) => vec![
            (
                "node-image",
                opts.node_image
                    .clone()
                    .or_else(|| opts.images.as_ref().map(|i| i.node_image.clone()))
                    .unwrap_or_else(|| "kind default".into()),
            ),
            (
                "images",
                opts.images
                    .as_ref()
                    .map(|i| i.provenance().join("; "))
                    .unwrap_or_else(|| "released".into()),
            ),
            ("kind-subnet", opts.subnet.to_string()),
            ("cgroup-v1", opts.cgroup_v1.to_string()),
        ],
        // The control planes' binaries and their ports; istiod and MetalLB's controller are each run's own.
        FleetBase::Kwok { tools, opts } => vec![
            ("tools", tools.dir.display().to_string()),
            ("port-base", opts.port_base.to_string()),
        ],
    };
    // Two fleet roots (a user's and the suites') never share cluster names.
    extra.push(("fleets", root.display().to_string()));
    if let FleetBase::Kind(_) = base {
        // Fleets made before every fleet got MetalLB lack it: they are not this key.
        extra.push(("load-balancers", "metallb".to_string()));
    }
    let inputs = fleet::inputs(base.name(), scenario, &extra).map_err(LeaseError::BadInput)?;
    let key = fleet::key_of(&inputs);
    let dir = fleet::fleet_dir(&key);
    let opts = match base.clone() {
        FleetBase::Kind(mut o) => {
            o.prefix = format!("mcf-{}", &key.0[..6]);
            o.run_dir = dir.clone();
            o.keep = false;
            FleetBase::Kind(o)
        }
        FleetBase::Kwok { tools, mut opts } => {
            opts.run_dir = dir.clone();
            opts.keep = false;
            FleetBase::Kwok { tools, opts }
        }
    };
    Ok((key, dir, inputs, opts))
}

/// `opts` with the fleet's key, warmth and note.
fn with_fleet(opts: FleetBase, key: &FleetKey, warm: bool, note: String) -> FleetBase {
    match opts {
        FleetBase::Kind(mut o) => {
            o.fleet = Some(KindFleet {
                key: key.0.clone(),
                warm,
                note,
            });
            FleetBase::Kind(o)
        }
        FleetBase::Kwok { tools, mut opts } => {
            opts.fleet = Some(KwokFleet {
                key: key.0.clone(),
                warm,
                note,
            });
            FleetBase::Kwok { tools, opts }
        }
    }
}

/// Whether the fleet's clusters answer, probed by its provider (changes nothing).
async fn alive(opts: &FleetBase, key: &FleetKey, scenario: &Scenario) -> Result<(), String> {
    match with_fleet(opts.clone(), key, true, String::new()) {
        FleetBase::Kind(o) => KindProvider::new(o).fleet_alive(scenario).await,
        FleetBase::Kwok { tools, opts } => KwokProvider::new(tools, opts).fleet_alive(scenario).await,
    }
}

/// The fleet a run of `scenario` would use and whether it is warm: its record, and a probe that each node runs
/// and is Ready. Changes nothing.
pub async fn survey(base: &FleetBase, scenario: &Scenario) -> Result<Survey, LeaseError> {
    let (key, dir, inputs, opts) = locate(base, scenario)?;
    let record = fleet::read(&dir).map_err(LeaseError::Infrastructure)?;
    let why_not = match &record {
        None if dir.exists() => Some("an earlier creation never finished".to_string()),
        None => None,
        Some(r) if r.inputs != inputs => Some("its inputs no longer match its key".to_string()),
        Some(r) => match &r.dirty {
            Some(d) => Some(format!("dirty: {d}")),
            None => alive(&opts, &key, scenario)
                .await
                .err()
                .map(|e| format!("no longer answers: {e}")),
        },
    };
    let (warm, note) = match (&record, &why_not) {
        (Some(r), None) => (
            true,
            format!(
                "fleet {key}: reused (made {} ago by {}, {} runs before this one)",
                fleet::age(r.created, fleet::now()),
                r.topology_of,
                r.runs
            ),
        ),
        (_, Some(why)) => (false, format!("fleet {key}: recreated ({why})")),
        (None, None) => (
            false,
            format!("fleet {key}: created (kept for the next --reuse run)"),
        ),
    };
    let opts = with_fleet(opts, &key, warm, note);
    Ok(Survey {
        key,
        dir,
        inputs,
        record,
        why_not,
        opts,
    })
}

/// How long a run waits for another run to give its fleet back.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(1800);

/// A run's exclusive hold on its fleet, from [`acquire`] to [`Lease::finish`].
pub struct Lease {
    /// What the run uses.
    pub survey: Survey,
    provider: Arc<dyn ClusterProvider>,
    dirty: Arc<Mutex<Option<String>>>,
    started: u64,
    // Held open: the lock is released when the lease is dropped.
    _lock: std::fs::File,
}

fn lock_path(key: &FleetKey) -> PathBuf {
    fleet::fleets_dir().join(format!("{key}.lock"))
}

/// Takes fleet `key`'s lock, waiting at most `wait` for a run that holds it.
pub fn lock(key: &FleetKey, wait: Duration) -> Result<std::fs::File, LeaseError> {
    lock_at(&lock_path(key), key, wait)
}

fn lock_at(path: &std::path::Path, key: &FleetKey, wait: Duration) -> Result<std::fs::File, LeaseError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| LeaseError::Infrastructure(format!("{}: {e}", parent.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| LeaseError::Infrastructure(format!("{}: {e}", path.display())))?;
    let deadline = Instant::now() + wait;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                if Instant::now() >= deadline {
                    return Err(LeaseError::Held(format!(
                        "fleet {key} is still in use by another run after {} s (lock {})",
                        wait.as_secs(),
                        path.display()
                    )));
                }
                if !said {
                    eprintln!(
                        "meshconf: fleet {key} is in use by another run; waiting up to {} s (lock {})",
                        wait.as_secs(),
                        path.display()
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(LeaseError::Infrastructure(format!(
                    "lock {}: {e}",
                    path.display()
                )));
            }
        }
    }
}

/// Takes the fleet of `scenario`'s topology for one run: its lock (waiting at most `wait`), then what is left of
/// it removed when it cannot be reused, its directory ready.
pub async fn acquire(base: &FleetBase, scenario: &Scenario, wait: Duration) -> Result<Lease, LeaseError> {
    let (key, ..) = locate(base, scenario)?;
    let lock_file = {
        let key = key.clone();
        tokio::task::spawn_blocking(move || lock(&key, wait))
            .await
            .map_err(|e| LeaseError::Infrastructure(format!("fleet lock: {e}")))??
    };
    // Read under the lock: the run that held it may have changed the fleet.
    let survey = survey(base, scenario).await?;
    if survey.why_not.is_some() {
        // What is left of it goes first, as `meshconf fleet down` would remove it.
        down(&survey.dir).await.map_err(|e| {
            LeaseError::Infrastructure(format!("cannot remove fleet {key} to recreate it: {e}"))
        })?;
        let _ = std::fs::remove_dir_all(&survey.dir);
    }
    std::fs::create_dir_all(&survey.dir)
        .map_err(|e| LeaseError::Infrastructure(format!("{}: {e}", survey.dir.display())))?;
    Ok(Lease {
        provider: survey.provider(),
        survey,
        dirty: Arc::new(Mutex::new(None)),
        started: fleet::now(),
        _lock: lock_file,
    })
}

impl Lease {
    /// The provider the run uses: the fleet's clusters, reused or created.
    pub fn provider(&self) -> Arc<dyn ClusterProvider> {
        self.provider.clone()
    }

    /// A reporter that marks the fleet dirty when a provisioning or reset step fails.
    pub fn watch(&self) -> Box<dyn Reporter> {
        Box::new(FleetWatch {
            dirty: self.dirty.clone(),
        })
    }

    /// Why the run left the fleet unfit for the next one, if it did.
    pub fn dirty(&self) -> Option<String> {
        self.dirty.lock().ok().and_then(|d| d.clone())
    }

    /// Writes the fleet's record after the run (dirty when a provisioning or reset step failed, or when
    /// `interrupted` stopped its creation) and gives the fleet back. Returns the record.
    pub fn finish(self, scenario: &Scenario, interrupted: bool) -> FleetRecord {
        let s = &self.survey;
        let warm = s.warm();
        let dirty = self
            .dirty()
            .or_else(|| (interrupted && !warm).then(|| "its creation was interrupted".to_string()));
        let kept = s.record.as_ref().filter(|_| warm);
        let record = FleetRecord {
            key: s.key.clone(),
            provider: s.opts.name().into(),
            topology_of: kept
                .map(|r| r.topology_of.clone())
                .unwrap_or_else(|| scenario.name.clone()),
            clusters: s.opts.clusters(&s.dir),
            inputs: s.inputs.clone(),
            created: kept.map(|r| r.created).unwrap_or(self.started),
            runs: kept.map(|r| r.runs).unwrap_or(0) + 1,
            dirty,
        };
        if let Err(e) = fleet::write(&s.dir, &record) {
            eprintln!("meshconf: fleet {}: {e}", s.key);
        }
        let note = s.note();
        match &record.dirty {
            Some(d) => eprintln!(
                "meshconf: fleet {} is dirty ({d}): the next --reuse run recreates it",
                s.key
            ),
            None => eprintln!(
                "meshconf: {note}; kept: `meshconf fleet down {}` removes it",
                s.key
            ),
        }
        record
    }
}

/// Watches a run on a fleet for what makes the fleet unfit for the next one: a provisioning step or a reset that
/// failed (something was left over, or something the fleet held is gone). A mesh step's failure is not one: the
/// reset and its clean-state check decide.
struct FleetWatch {
    dirty: Arc<Mutex<Option<String>>>,
}

impl Reporter for FleetWatch {
    fn on_event(&mut self, event: &Event) {
        if let Event::StepFinished {
            id,
            outcome: Outcome::Failed { message, .. },
            class: StepClass::Infrastructure,
            ..
        } = event
            && let Ok(mut d) = self.dirty.lock()
            && d.is_none()
        {
            let first = message.lines().next().unwrap_or_default();
            *d = Some(format!("{id} failed: {first}"));
        }
    }

    fn finish(&mut self) -> Result<(), ReportError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_fleet_lock_makes_the_second_run_wait_then_fail_naming_the_fleet() {
        let dir = std::env::temp_dir().join(format!("meshconf-lease-test-{}", std::process::id()));
        let path = dir.join("fleet.lock");
        let key = FleetKey("0123456789abcdef".into());
        let held = lock_at(&path, &key, Duration::from_secs(5)).unwrap();
        let started = Instant::now();
        let err = match lock_at(&path, &key, Duration::from_millis(600)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a second lock on a held fleet was granted"),
        };
        assert!(started.elapsed() >= Duration::from_millis(600), "it did not wait");
        assert!(err.contains("fleet 0123456789abcdef is still in use"), "{err}");
        drop(held);
        assert!(lock_at(&path, &key, Duration::from_millis(100)).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn every_other_fleet_goes_but_the_one_a_run_holds() {
        let root = std::env::temp_dir().join(format!("meshconf-takedown-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for k in ["a", "b", "keep"] {
            std::fs::create_dir_all(root.join(k)).unwrap();
        }
        let held = lock_at(&root.join("b.lock"), &FleetKey("b".into()), Duration::ZERO).unwrap();
        let got = take_down_all_but(&root, &FleetKey("keep".into())).await;
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(got[0].1.is_ok(), "{:?}", got[0].1);
        assert!(matches!(&got[1].1, Err(LeaseError::Held(m)) if m.contains("fleet b is still in use")));
        assert!(!root.join("a").exists(), "an idle fleet was left up");
        assert!(
            root.join("b").exists(),
            "a held fleet was taken from under its run"
        );
        assert!(root.join("keep").exists(), "the fleet to keep was taken down");
        drop(held);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_reset_failure_dirties_the_fleet_and_a_mesh_failure_does_not() {
        let dirty = Arc::new(Mutex::new(None));
        let mut w = FleetWatch { dirty: dirty.clone() };
        let failed = |id: &str, class| Event::StepFinished {
            id: crate::plan::StepId(id.into()),
            title: String::new(),
            class,
            outcome: Outcome::Failed {
                kind: crate::report::FailureKind::Infrastructure,
                message: "boom\nmore".into(),
                command: None,
                output_tail: None,
            },
            duration: Duration::ZERO,
            attempts: Vec::new(),
            properties: Default::default(),
        };
        w.on_event(&failed("deploy-apps/cluster2", StepClass::Mesh));
        assert_eq!(*dirty.lock().unwrap(), None);
        w.on_event(&failed("reset/cluster1", StepClass::Infrastructure));
        w.on_event(&failed("reset/cluster2", StepClass::Infrastructure));
        assert_eq!(
            dirty.lock().unwrap().as_deref(),
            Some("reset/cluster1 failed: boom")
        );
    }
}
