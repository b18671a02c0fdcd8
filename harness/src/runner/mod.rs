//! The runner: executes a plan's stages against a provider, steps of a stage in parallel, and reports every
//! step as events. It never re-reads scenario files and never talks to reporters except through events.

mod actions;
mod context;
mod exec;
mod live;
mod proxies;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::exit::ExitStatus;
use crate::plan::{self, Plan, PlannedStep, ProviderProfile, StepClass};
use crate::provider::ClusterProvider;
use crate::report::{Event, EventBus, FailureKind, ISTIO_PROPERTY, Outcome};
use crate::tools::Istioctl;

pub use context::{RunContext, StepError, StepLogger};
pub use exec::{ContextExecutor, Props, StepExecutor};

/// Run options.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Deadline for any single step.
    pub step_timeout: Duration,
    /// Deadline for the traffic check to converge (every expected version seen once).
    pub convergence_timeout: Duration,
    /// Deadline for a LoadBalancer Service to get an address.
    pub lb_timeout: Duration,
    /// Where `meshconf run` writes files users may want (also holds nothing secret).
    pub report_dir: PathBuf,
    /// Where a failed run's diagnostics go (`<report dir>/<name>.diagnostics`); `None` keeps none.
    pub diagnostics_dir: Option<PathBuf>,
    /// Byte budget for the diagnostics of one run.
    pub diagnostics_budget: u64,
    /// How often a failed traffic check is retried; a pass after retries is reported as flaky.
    pub check_retries: u32,
    /// Run the steps of each stage one after another instead of at once (`meshconf run --serial`): what the
    /// parallelism saves, measured by `make bench`.
    pub serial: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(900),
            convergence_timeout: Duration::from_secs(180),
            lb_timeout: Duration::from_secs(180),
            report_dir: PathBuf::from("reports"),
            diagnostics_dir: None,
            diagnostics_budget: crate::diagnose::DEFAULT_BUDGET,
            check_retries: 0,
            serial: false,
        }
    }
}

/// What the report of a run that could not start names: the scenario and the provider's profile.
pub struct RefusedRun {
    /// The name of the scenario.
    pub scenario: String,
    /// Guide.
    pub guide: String,
    /// The scenario's file.
    pub source: String,
    /// The provider's contribution (kind, data plane, notes, properties).
    pub profile: ProviderProfile,
}

/// Executes plans.
pub struct Runner {
    provider: Arc<dyn ClusterProvider>,
    bus: EventBus,
    opts: RunOptions,
    interrupted: Arc<AtomicBool>,
}

impl Runner {
    /// A runner for `provider`, reporting to `bus`.
    pub fn new(provider: Arc<dyn ClusterProvider>, bus: EventBus, opts: RunOptions) -> Self {
        Self {
            provider,
            bus,
            opts,
            interrupted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A flag that, once set (e.g. by Ctrl-C), stops the run after the current stage; cleanup still runs.
    pub fn interrupt_flag(&self) -> Arc<AtomicBool> {
        self.interrupted.clone()
    }

    /// Executes a plan end to end against the provider's clusters, driving `istioctl`; always cleans up and
    /// finishes the reporters.
    pub async fn run(&self, plan: &Plan, istioctl: Istioctl) -> ExitStatus {
        self.run_builds(plan, istioctl, BTreeMap::new()).await
    }

    /// [`Runner::run`] of a mixed-version plan: `builds` holds the istioctl of each other build its clusters run.
    pub async fn run_builds(
        &self,
        plan: &Plan,
        istioctl: Istioctl,
        builds: BTreeMap<String, Istioctl>,
    ) -> ExitStatus {
        let started = Instant::now();
        self.emit_run_started(plan);
        let mut ctx = RunContext::new(plan, istioctl, self.provider.clone(), self.opts.clone());
        ctx.builds = builds;
        let ctx = Arc::new(ctx);
        let executor = ContextExecutor { ctx: ctx.clone() };
        let status = self.execute(plan, &executor).await;
        self.finish(status, started).await
    }

    /// Reports a run that could not start (a prerequisite is missing, istioctl does not answer): the run's start
    /// with its one failed step, cleanup (nothing was created) and the end, exit 3.
    pub async fn refuse(&self, run: RefusedRun, message: String) -> ExitStatus {
        let started = Instant::now();
        let (real, computed) = self.provider.parts();
        let id = plan::StepId("preflight".into());
        let title = "Check prerequisites; find istioctl and its version".to_string();
        self.bus.emit(Event::RunStarted {
            scenario: run.scenario,
            guide: run.guide,
            source: run.source,
            provider: run.profile.kind,
            dataplane: run.profile.dataplane,
            variant: "unknown (istioctl unavailable)".into(),
            real,
            computed,
            notes: run.profile.notes,
            properties: run.profile.properties,
            steps: vec![(id.clone(), title.clone())],
            preamble: Vec::new(),
        });
        self.bus.emit(Event::StepFinished {
            id,
            title,
            class: StepClass::Infrastructure,
            outcome: Outcome::Failed {
                kind: FailureKind::Infrastructure,
                message,
                command: None,
                output_tail: None,
            },
            duration: Duration::ZERO,
            attempts: Vec::new(),
            properties: Default::default(),
        });
        self.finish(ExitStatus::Infrastructure, started).await
    }

    /// Executes `plan` with `executor` as [`Runner::run`] does once the plan is built: the run's start, every
    /// step, cleanup and the run's end as events. The runner's policy without any cluster (tests).
    pub async fn run_plan(&self, plan: &Plan, executor: &dyn StepExecutor) -> ExitStatus {
        let started = Instant::now();
        self.emit_run_started(plan);
        let status = self.execute(plan, executor).await;
        self.finish(status, started).await
    }

    /// Cleanup (always, whatever happened), then the run's end; finishes the reporters.
    async fn finish(&self, status: ExitStatus, started: Instant) -> ExitStatus {
        let cleanup = self.provider.cleanup().await;
        self.bus.emit(Event::CleanupFinished {
            complete: cleanup.complete,
            message: cleanup.message,
            properties: cleanup.properties,
        });
        self.bus.emit(Event::RunFinished {
            status,
            duration: started.elapsed(),
        });
        if let Err(e) = self.bus.finish() {
            eprintln!("meshconf: {e}");
        }
        status
    }

    fn emit_run_started(&self, plan: &Plan) {
        let (real, computed) = self.provider.parts();
        // The mesh build the run drives, as istioctl names itself: what `meshconf compare` sets side by side.
        let mut properties = plan.provider.properties.clone();
        properties
            .entry(ISTIO_PROPERTY.to_string())
            .or_insert_with(|| plan.variant.version.raw.clone());
        self.bus.emit(Event::RunStarted {
            scenario: plan.scenario.clone(),
            guide: plan.guide.clone(),
            source: plan.source.clone(),
            provider: plan.provider.kind,
            dataplane: plan.provider.dataplane,
            variant: plan.variant.describe(),
            real,
            computed,
            notes: plan.provider.notes.clone(),
            properties,
            steps: plan.steps().map(|s| (s.id.clone(), s.title.clone())).collect(),
            preamble: plan::preamble(plan),
        });
    }

    async fn execute(&self, plan: &Plan, executor: &dyn StepExecutor) -> ExitStatus {
        let mut status = ExitStatus::Passed;
        let mut stop_reason: Option<String> = None;
        for stage in &plan.stages {
            if self.interrupted.load(Ordering::SeqCst) && stop_reason.is_none() {
                stop_reason = Some("interrupted".into());
            }
            if let Some(reason) = &stop_reason {
                for s in &stage.steps {
                    self.skip(s, reason);
                }
                // A run cut short by an interrupt has judged nothing it skipped: never a pass.
                if self.interrupted.load(Ordering::SeqCst) {
                    status = status.worst(ExitStatus::Infrastructure);
                }
                continue;
            }
            let mut failed = Vec::new();
            // Provisioning, isolation probes and resets are the harness's own ground: a mesh diagnosis of their
            // failure would blame a mesh that was never installed.
            let mut of_the_mesh = false;
            for (s, outcome) in stage
                .steps
                .iter()
                .zip(self.run_stage(&stage.steps, executor, true).await)
            {
                if outcome != ExitStatus::Passed {
                    failed.push(s.id.clone());
                    of_the_mesh |= s.class != crate::plan::StepClass::Infrastructure;
                }
                status = status.worst(outcome);
            }
            if of_the_mesh
                && !self.interrupted.load(Ordering::SeqCst)
                && let Some(event) = executor.diagnose(failed).await
            {
                self.bus.emit(event);
            }
            if self.interrupted.load(Ordering::SeqCst) {
                stop_reason = Some("interrupted".into());
            } else if status != ExitStatus::Passed {
                stop_reason = Some("an earlier step failed".into());
            }
        }
        // The reset of clusters that outlive the run: whatever happened before, to its end.
        for stage in &plan.reset {
            for outcome in self.run_stage(&stage.steps, executor, false).await {
                status = status.worst(outcome);
            }
        }
        status
    }

    /// The steps of one stage: at once, or one after another in plan order when the run is serial.
    async fn run_stage(
        &self,
        steps: &[PlannedStep],
        executor: &dyn StepExecutor,
        interruptible: bool,
    ) -> Vec<ExitStatus> {
        if !self.opts.serial {
            let runs = steps.iter().map(|s| self.run_step(s, executor, interruptible));
            return futures::future::join_all(runs).await;
        }
        let mut out = Vec::with_capacity(steps.len());
        for s in steps {
            out.push(self.run_step(s, executor, interruptible).await);
        }
        out
    }

    fn skip(&self, s: &PlannedStep, reason: &str) {
        self.bus.emit(Event::StepFinished {
            id: s.id.clone(),
            title: s.title.clone(),
            class: s.class,
            outcome: Outcome::Skipped {
                reason: reason.to_string(),
            },
            duration: Duration::ZERO,
            attempts: Vec::new(),
            properties: Default::default(),
        });
    }

    async fn run_step(
        &self,
        s: &PlannedStep,
        executor: &dyn StepExecutor,
        interruptible: bool,
    ) -> ExitStatus {
        self.bus.emit(Event::StepStarted {
            id: s.id.clone(),
            title: s.title.clone(),
        });
        let started = Instant::now();
        let log = StepLogger::new(self.bus.clone(), s.id.clone());
        // A check may be retried (`--retries`); every failed attempt is kept and reported, so a check that passed
        // only on a retry shows as flaky rather than as a plain pass.
        let retries = if s.class == StepClass::Check {
            self.opts.check_retries as usize
        } else {
            0
        };
        let mut attempts = Vec::new();
        let result = loop {
            let attempt_started = Instant::now();
            match self.attempt(s, executor, &log, interruptible).await {
                Err(e)
                    if e.kind == FailureKind::Conformance
                        && attempts.len() < retries
                        && !self.interrupted.load(Ordering::SeqCst) =>
                {
                    log.log(format!(
                        "attempt {} failed: {}; retrying ({} left)",
                        attempts.len() + 1,
                        e.message,
                        retries - attempts.len()
                    ));
                    attempts.push(crate::report::Attempt {
                        message: e.message,
                        duration: attempt_started.elapsed(),
                    });
                }
                r => break r,
            }
        };
        let (outcome, properties, status) = match result {
            Ok(props) => (Outcome::Passed, props, ExitStatus::Passed),
            Err(e) => {
                let status = match e.kind {
                    FailureKind::Conformance => ExitStatus::ConformanceFailure,
                    FailureKind::Infrastructure => ExitStatus::Infrastructure,
                };
                (
                    Outcome::Failed {
                        kind: e.kind,
                        message: e.message,
                        command: e.command,
                        output_tail: e.output_tail,
                    },
                    e.properties,
                    status,
                )
            }
        };
        self.bus.emit(Event::StepFinished {
            id: s.id.clone(),
            title: s.title.clone(),
            class: s.class,
            outcome,
            duration: started.elapsed(),
            attempts,
            properties,
        });
        status
    }

    /// One attempt of a step, under the step deadline, ended early by an interrupt or a dead process.
    async fn attempt(
        &self,
        s: &PlannedStep,
        executor: &dyn StepExecutor,
        log: &StepLogger,
        interruptible: bool,
    ) -> Result<BTreeMap<String, String>, StepError> {
        // A reset runs to its end after an interrupt too: it is how the run leaves the clusters as it found them.
        let interrupted = self.interrupted.clone();
        let stop = async move {
            if interruptible {
                wait_flag(interrupted).await
            } else {
                std::future::pending::<()>().await
            }
        };
        let work = executor.run(s, log);
        let provider = self.provider.clone();
        let result = tokio::select! {
            r = tokio::time::timeout(self.opts.step_timeout, work) => match r {
                Ok(r) => r,
                Err(_) => Err(StepError::infra(format!("step did not finish within {:?}", self.opts.step_timeout))),
            },
            _ = stop => Err(StepError::infra("interrupted".to_string())),
            // A process the provider started (istiod, MetalLB) dying ends the step at once instead of letting it
            // wait out its deadline for something that can no longer happen.
            _ = wait_dead(provider) => Ok(BTreeMap::new()),
        };
        let dead = self.provider.dead_processes();
        match (result, dead.is_empty()) {
            (Ok(p), true) => Ok(p),
            (Ok(_), false) => Err(StepError::infra(format!(
                "a process the rehearsal started has died: {}",
                dead.join("\n")
            ))),
            (Err(e), true) => Err(e),
            (Err(mut e), false) => {
                e.message = format!(
                    "{} (and a process the rehearsal started has died: {})",
                    e.message,
                    dead.join("; ")
                );
                e.kind = FailureKind::Infrastructure;
                Err(e)
            }
        }
    }
}

async fn wait_dead(provider: Arc<dyn ClusterProvider>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !provider.dead_processes().is_empty() {
            return;
        }
    }
}

async fn wait_flag(flag: Arc<AtomicBool>) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
