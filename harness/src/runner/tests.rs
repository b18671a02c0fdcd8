//! The runner's policy against a fake provider and a scripted executor: stages and parallelism, retries and
//! flaky marks, skips after a failure, interrupts, a dead supervised process, failure classes and cleanup, in
//! milliseconds and without any cluster.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::*;
use crate::mesh::{IstioVersion, Variant};
use crate::plan::{Action, DataPlane, ProviderAction, ProviderKind, ProviderProfile, Stage, StepId};
use crate::provider::{CleanupReport, ClusterAccess, ClusterProvider, Performed, ProviderError};
use crate::report::{Collector, Event, FailureKind, Outcome};
use crate::scenario::{ClusterName, Scenario};
use crate::tools::Istioctl;

/// A provider that creates nothing; its cleanup and its dead processes are what the test says.
#[derive(Default)]
struct FakeProvider {
    dead: Mutex<Vec<String>>,
    cleanup: Mutex<Option<CleanupReport>>,
    cleaned: AtomicBool,
}

impl ClusterProvider for FakeProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Kwok
    }
    fn profile(&self, _: &Scenario) -> ProviderProfile {
        ProviderProfile::empty(ProviderKind::Kwok, DataPlane::Computed)
    }
    fn parts(&self) -> (Vec<String>, Vec<String>) {
        (vec!["nothing".into()], vec!["everything".into()])
    }
    fn istioctl(&self) -> BoxFuture<'_, Result<Istioctl, ProviderError>> {
        Box::pin(async { Err(ProviderError::Missing("the fake provider has no istioctl".into())) })
    }
    fn perform<'a>(
        &'a self,
        _: &'a ProviderAction,
        _: &'a BTreeMap<ClusterName, ClusterAccess>,
    ) -> BoxFuture<'a, Result<Performed, ProviderError>> {
        Box::pin(async {
            Err(ProviderError::Missing(
                "the fake provider performs nothing".into(),
            ))
        })
    }
    fn cleanup(&self) -> BoxFuture<'_, CleanupReport> {
        self.cleaned.store(true, Ordering::SeqCst);
        let r = self
            .cleanup
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or(CleanupReport {
                complete: true,
                message: "nothing was created".into(),
                properties: BTreeMap::new(),
            });
        Box::pin(async move { r })
    }
    fn run_dir(&self) -> PathBuf {
        std::env::temp_dir()
    }
    fn dead_processes(&self) -> Vec<String> {
        self.dead.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

/// What a scripted step does on one attempt.
#[derive(Clone)]
enum Act {
    Pass,
    Fail(FailureKind, &'static str),
    /// Sleeps, then passes.
    Sleep(Duration),
    /// Sets the runner's interrupt flag, then sleeps (the runner must end the step at once).
    Interrupt(Duration),
    /// Passes after setting the interrupt flag (an interrupt between stages).
    PassThenInterrupt,
    /// Marks a supervised process dead after a moment, then sleeps long.
    DieAfter(Duration),
}

#[derive(Default)]
struct Script {
    /// Per step id, the acts of its attempts in order (the last repeats).
    acts: BTreeMap<String, VecDeque<Act>>,
    /// (step id, start, end) per attempt.
    spans: Mutex<Vec<(String, Instant, Instant)>>,
    diagnosed: Mutex<Vec<Vec<StepId>>>,
    flag: Mutex<Option<Arc<AtomicBool>>>,
    provider: Mutex<Option<Arc<FakeProvider>>>,
    attempts: Mutex<BTreeMap<String, usize>>,
}

impl StepExecutor for Script {
    fn run<'a>(
        &'a self,
        step: &'a PlannedStep,
        _log: &'a StepLogger,
    ) -> BoxFuture<'a, Result<Props, StepError>> {
        Box::pin(async move {
            let id = step.id.0.clone();
            let n = {
                let mut a = self.attempts.lock().expect("attempts");
                let n = a.entry(id.clone()).or_default();
                *n += 1;
                *n - 1
            };
            let acts = self.acts.get(&id).cloned().unwrap_or_default();
            let act = acts.get(n).or(acts.back()).cloned().unwrap_or(Act::Pass);
            let start = Instant::now();
            let result = match act {
                Act::Pass => Ok(Props::new()),
                Act::Fail(FailureKind::Conformance, m) => Err(StepError::conformance(m)),
                Act::Fail(FailureKind::Infrastructure, m) => Err(StepError::infra(m)),
                Act::Sleep(d) => {
                    tokio::time::sleep(d).await;
                    Ok(Props::new())
                }
                Act::Interrupt(d) => {
                    if let Some(f) = self.flag.lock().expect("flag").as_ref() {
                        f.store(true, Ordering::SeqCst);
                    }
                    tokio::time::sleep(d).await;
                    Ok(Props::new())
                }
                Act::PassThenInterrupt => {
                    if let Some(f) = self.flag.lock().expect("flag").as_ref() {
                        f.store(true, Ordering::SeqCst);
                    }
                    Ok(Props::new())
                }
                Act::DieAfter(d) => {
                    tokio::time::sleep(d).await;
                    if let Some(p) = self.provider.lock().expect("provider").as_ref() {
                        p.dead
                            .lock()
                            .expect("dead")
                            .push("istiod-cluster1 (pid 4242) exited; log tail:\npanic".into());
                    }
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(Props::new())
                }
            };
            self.spans
                .lock()
                .expect("spans")
                .push((id, start, Instant::now()));
            result
        })
    }

    fn diagnose(&self, steps: Vec<StepId>) -> BoxFuture<'_, Option<Event>> {
        self.diagnosed.lock().expect("diagnosed").push(steps);
        Box::pin(async { None })
    }
}

fn step(id: &str, class: StepClass) -> PlannedStep {
    PlannedStep {
        id: StepId(id.into()),
        title: format!("step {id}"),
        class,
        actions: vec![Action::RemoteSecret {
            build: None,
            from: ClusterName::new("cluster1"),
            into: ClusterName::new("cluster2"),
            kubeconfig: None,
        }],
    }
}

fn plan(stages: Vec<Vec<PlannedStep>>) -> Plan {
    Plan {
        scenario: "fake".into(),
        guide: "a guide".into(),
        source: "scenarios/fake.yaml".into(),
        provider: ProviderProfile::empty(ProviderKind::Kwok, DataPlane::Computed),
        variant: Variant::for_version(IstioVersion::new(1, 31, 0)),
        clusters: Vec::new(),
        checked: ("sample".into(), None),
        stages: stages.into_iter().map(|steps| Stage { steps }).collect(),
        reset: Vec::new(),
    }
}

struct Ran {
    status: ExitStatus,
    events: Vec<Event>,
    script: Arc<Script>,
    provider: Arc<FakeProvider>,
    took: Duration,
}

impl Ran {
    fn outcome(&self, id: &str) -> (Outcome, Vec<String>) {
        self.events
            .iter()
            .find_map(|e| match e {
                Event::StepFinished {
                    id: i,
                    outcome,
                    attempts,
                    ..
                } if i.0 == id => Some((
                    outcome.clone(),
                    attempts.iter().map(|a| a.message.clone()).collect(),
                )),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no StepFinished for {id}"))
    }
    fn span(&self, id: &str) -> (Instant, Instant) {
        self.script
            .spans
            .lock()
            .expect("spans")
            .iter()
            .find(|(i, _, _)| i == id)
            .map(|(_, a, b)| (*a, *b))
            .unwrap_or_else(|| panic!("{id} never ran"))
    }
}

async fn run(p: Plan, acts: &[(&str, Vec<Act>)], opts: RunOptions) -> Ran {
    run_with(p, acts, opts, FakeProvider::default()).await
}

async fn run_with(p: Plan, acts: &[(&str, Vec<Act>)], opts: RunOptions, provider: FakeProvider) -> Ran {
    let provider = Arc::new(provider);
    let collector = Collector::default();
    let events = collector.events.clone();
    let runner = Runner::new(provider.clone(), EventBus::new(vec![Box::new(collector)]), opts);
    let script = Arc::new(Script {
        acts: acts
            .iter()
            .map(|(id, a)| (id.to_string(), a.iter().cloned().collect()))
            .collect(),
        flag: Mutex::new(Some(runner.interrupt_flag())),
        provider: Mutex::new(Some(provider.clone())),
        ..Script::default()
    });
    let started = Instant::now();
    let status = runner.run_plan(&p, script.as_ref()).await;
    let took = started.elapsed();
    let events = events.lock().expect("events").clone();
    Ran {
        status,
        events,
        script,
        provider,
        took,
    }
}

fn fast() -> RunOptions {
    RunOptions {
        step_timeout: Duration::from_secs(5),
        ..RunOptions::default()
    }
}

#[tokio::test]
async fn stages_run_in_order_and_the_steps_of_a_stage_at_once() {
    let d = Duration::from_millis(150);
    let p = plan(vec![
        vec![step("a", StepClass::Infrastructure)],
        vec![step("b", StepClass::Mesh), step("c", StepClass::Mesh)],
    ]);
    let r = run(
        p,
        &[
            ("a", vec![Act::Sleep(d)]),
            ("b", vec![Act::Sleep(d)]),
            ("c", vec![Act::Sleep(d)]),
        ],
        fast(),
    )
    .await;
    assert_eq!(r.status, ExitStatus::Passed);
    let (a, b, c) = (r.span("a"), r.span("b"), r.span("c"));
    assert!(a.1 <= b.0 && a.1 <= c.0, "stage 2 started before stage 1 ended");
    assert!(b.0 < c.1 && c.0 < b.1, "the steps of one stage did not overlap");
    assert!(
        r.took < Duration::from_millis(420),
        "took {:?}: stage 2 ran serially",
        r.took
    );
}

#[tokio::test]
async fn a_serial_run_takes_the_steps_of_a_stage_one_after_another_in_plan_order() {
    let d = Duration::from_millis(100);
    let p = plan(vec![vec![step("b", StepClass::Mesh), step("c", StepClass::Mesh)]]);
    let acts = [("b", vec![Act::Sleep(d)]), ("c", vec![Act::Sleep(d)])];
    let r = run(
        p,
        &acts,
        RunOptions {
            serial: true,
            ..fast()
        },
    )
    .await;
    assert_eq!(r.status, ExitStatus::Passed);
    let (b, c) = (r.span("b"), r.span("c"));
    assert!(b.1 <= c.0, "c started before b ended: {b:?} {c:?}");
}

#[tokio::test]
async fn a_provisioning_failure_gets_no_mesh_diagnosis() {
    let p = plan(vec![vec![step(
        "create-cluster/cluster1",
        StepClass::Infrastructure,
    )]]);
    let r = run(
        p,
        &[(
            "create-cluster/cluster1",
            vec![Act::Fail(FailureKind::Infrastructure, "kube-dns never Ready")],
        )],
        fast(),
    )
    .await;
    assert_eq!(r.status, ExitStatus::Infrastructure);
    assert!(
        r.script.diagnosed.lock().expect("d").is_empty(),
        "no mesh was installed to diagnose"
    );
}

#[tokio::test]
async fn a_failure_skips_every_later_stage_and_gets_diagnosed() {
    let p = plan(vec![
        vec![step("a", StepClass::Mesh), step("ok", StepClass::Mesh)],
        vec![step("b", StepClass::Check)],
    ]);
    let r = run(
        p,
        &[("a", vec![Act::Fail(FailureKind::Conformance, "no sidecar")])],
        fast(),
    )
    .await;
    assert_eq!(r.status, ExitStatus::ConformanceFailure);
    assert!(matches!(r.outcome("ok").0, Outcome::Passed));
    match r.outcome("b").0 {
        Outcome::Skipped { reason } => assert_eq!(reason, "an earlier step failed"),
        other => panic!("{other:?}"),
    }
    assert!(
        r.script
            .spans
            .lock()
            .expect("spans")
            .iter()
            .all(|(i, _, _)| i != "b"),
        "b ran"
    );
    assert_eq!(
        *r.script.diagnosed.lock().expect("d"),
        vec![vec![StepId("a".into())]]
    );
}

#[tokio::test]
async fn infrastructure_outranks_conformance_and_each_failure_keeps_its_class() {
    let p = plan(vec![vec![
        step("mesh", StepClass::Check),
        step("infra", StepClass::Mesh),
    ]]);
    let r = run(
        p,
        &[
            (
                "mesh",
                vec![Act::Fail(FailureKind::Conformance, "v2 never answered")],
            ),
            (
                "infra",
                vec![Act::Fail(FailureKind::Infrastructure, "API timed out")],
            ),
        ],
        fast(),
    )
    .await;
    assert_eq!(r.status, ExitStatus::Infrastructure);
    assert!(matches!(
        r.outcome("mesh").0,
        Outcome::Failed {
            kind: FailureKind::Conformance,
            ..
        }
    ));
    assert!(matches!(
        r.outcome("infra").0,
        Outcome::Failed {
            kind: FailureKind::Infrastructure,
            ..
        }
    ));
}

#[tokio::test]
async fn a_check_that_passes_on_a_retry_is_flaky_and_infrastructure_is_never_retried() {
    let p = plan(vec![vec![
        step("check", StepClass::Check),
        step("infra-check", StepClass::Check),
    ]]);
    let opts = RunOptions {
        check_retries: 2,
        ..fast()
    };
    let r = run(
        p,
        &[
            (
                "check",
                vec![
                    Act::Fail(FailureKind::Conformance, "v2 never answered"),
                    Act::Pass,
                ],
            ),
            (
                "infra-check",
                vec![
                    Act::Fail(FailureKind::Infrastructure, "exec stream broke"),
                    Act::Pass,
                ],
            ),
        ],
        opts,
    )
    .await;
    let (outcome, attempts) = r.outcome("check");
    assert!(matches!(outcome, Outcome::Passed), "{outcome:?}");
    assert_eq!(
        attempts,
        vec!["v2 never answered".to_string()],
        "the failed attempt is kept"
    );
    let (outcome, attempts) = r.outcome("infra-check");
    assert!(matches!(
        outcome,
        Outcome::Failed {
            kind: FailureKind::Infrastructure,
            ..
        }
    ));
    assert!(
        attempts.is_empty(),
        "an infrastructure error must not be retried into a flaky pass"
    );
    assert_eq!(r.status, ExitStatus::Infrastructure);
}

#[tokio::test]
async fn an_interrupt_ends_the_step_in_flight_skips_the_rest_and_is_never_a_pass() {
    let p = plan(vec![
        vec![step("a", StepClass::Mesh)],
        vec![step("b", StepClass::Check)],
    ]);
    let r = run(p, &[("a", vec![Act::Interrupt(Duration::from_secs(20))])], fast()).await;
    assert!(
        r.took < Duration::from_secs(2),
        "the step was not ended at once: {:?}",
        r.took
    );
    assert_eq!(r.status, ExitStatus::Infrastructure);
    assert!(matches!(&r.outcome("a").0, Outcome::Failed { message, .. } if message == "interrupted"));
    assert!(matches!(&r.outcome("b").0, Outcome::Skipped { reason } if reason == "interrupted"));
    assert!(
        r.provider.cleaned.load(Ordering::SeqCst),
        "cleanup must run after an interrupt"
    );
}

#[tokio::test]
async fn an_interrupt_between_stages_skips_the_rest_and_is_never_a_pass() {
    let p = plan(vec![
        vec![step("a", StepClass::Mesh)],
        vec![step("b", StepClass::Check)],
    ]);
    let r = run(p, &[("a", vec![Act::PassThenInterrupt])], fast()).await;
    assert!(matches!(r.outcome("a").0, Outcome::Passed));
    assert!(matches!(&r.outcome("b").0, Outcome::Skipped { reason } if reason == "interrupted"));
    assert_eq!(
        r.status,
        ExitStatus::Infrastructure,
        "nothing was checked: not a pass"
    );
}

#[tokio::test]
async fn a_dead_supervised_process_ends_the_step_as_infrastructure() {
    let p = plan(vec![vec![step("deploy", StepClass::Mesh)]]);
    let r = run(
        p,
        &[("deploy", vec![Act::DieAfter(Duration::from_millis(50))])],
        fast(),
    )
    .await;
    assert!(
        r.took < Duration::from_secs(3),
        "waited {:?} for a process that had died",
        r.took
    );
    match r.outcome("deploy").0 {
        Outcome::Failed { kind, message, .. } => {
            assert_eq!(kind, FailureKind::Infrastructure);
            assert!(message.contains("istiod-cluster1 (pid 4242) exited"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.status, ExitStatus::Infrastructure);
}

#[tokio::test]
async fn a_step_past_its_deadline_is_an_infrastructure_error_naming_the_deadline() {
    let p = plan(vec![vec![step("slow", StepClass::Mesh)]]);
    let opts = RunOptions {
        step_timeout: Duration::from_millis(100),
        ..fast()
    };
    let r = run(p, &[("slow", vec![Act::Sleep(Duration::from_secs(20))])], opts).await;
    match r.outcome("slow").0 {
        Outcome::Failed { kind, message, .. } => {
            assert_eq!(kind, FailureKind::Infrastructure);
            assert!(message.contains("did not finish within 100ms"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn cleanup_is_reported_as_the_provider_found_it_even_after_a_failure() {
    let provider = FakeProvider::default();
    *provider.cleanup.lock().expect("cleanup") = Some(CleanupReport {
        complete: false,
        message: "kind delete mc-cluster1: Cannot connect to the Docker daemon".into(),
        properties: BTreeMap::from([("egress-packets".into(), "0".into())]),
    });
    let p = plan(vec![vec![step("a", StepClass::Mesh)]]);
    let r = run_with(
        p,
        &[("a", vec![Act::Fail(FailureKind::Infrastructure, "boom")])],
        fast(),
        provider,
    )
    .await;
    let cleanup = r.events.iter().find_map(|e| match e {
        Event::CleanupFinished {
            complete, message, ..
        } => Some((*complete, message.clone())),
        _ => None,
    });
    assert_eq!(
        cleanup,
        Some((
            false,
            "kind delete mc-cluster1: Cannot connect to the Docker daemon".into()
        ))
    );
    let last = r.events.last().expect("events");
    assert!(
        matches!(
            last,
            Event::RunFinished {
                status: ExitStatus::Infrastructure,
                ..
            }
        ),
        "{last:?}"
    );
}

/// Clusters that outlive the run are reset whatever happened: after a failure (which skips the rest of the plan)
/// and after an interrupt (which would otherwise end every step at once); a reset that finds something left over
/// is the run's infrastructure error even when every check passed.
#[tokio::test]
async fn the_reset_runs_after_a_failure_and_an_interrupt_and_its_failure_counts() {
    let with_reset = |stages| Plan {
        reset: vec![Stage {
            steps: vec![step("reset/cluster1", StepClass::Infrastructure)],
        }],
        ..plan(stages)
    };
    let r = run(
        with_reset(vec![
            vec![step("a", StepClass::Mesh)],
            vec![step("b", StepClass::Check)],
        ]),
        &[("a", vec![Act::Fail(FailureKind::Conformance, "no sidecar")])],
        fast(),
    )
    .await;
    assert!(matches!(r.outcome("b").0, Outcome::Skipped { .. }));
    assert_eq!(r.outcome("reset/cluster1").0, Outcome::Passed);
    assert_eq!(r.status, ExitStatus::ConformanceFailure);

    let r = run(
        with_reset(vec![vec![step("a", StepClass::Mesh)]]),
        &[
            ("a", vec![Act::PassThenInterrupt]),
            ("reset/cluster1", vec![Act::Sleep(Duration::from_millis(300))]),
        ],
        fast(),
    )
    .await;
    assert_eq!(
        r.outcome("reset/cluster1").0,
        Outcome::Passed,
        "the interrupt cut the reset short"
    );
    let (start, end) = r.span("reset/cluster1");
    assert!(end - start >= Duration::from_millis(300));

    let r = run(
        with_reset(vec![vec![step("b", StepClass::Check)]]),
        &[(
            "reset/cluster1",
            vec![Act::Fail(
                FailureKind::Infrastructure,
                "cluster1 holds Namespace/leftover",
            )],
        )],
        fast(),
    )
    .await;
    assert_eq!(r.outcome("b").0, Outcome::Passed);
    assert_eq!(r.status, ExitStatus::Infrastructure);
}
