//! One traffic check from one source cluster, whole: wait until every expected (version, cluster) has answered
//! (convergence), send the sized sample, attribute every answer and judge it. What sends the requests is a
//! [`Probe`]: exec + curl in the client pod on a cluster (where the rehearsal's stand-in answers inside the same
//! exec), or a scripted one in tests.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Serialize;

use super::parse::Answer;
use super::verdict::{At, Attribution, SourceVerdict, judge};
use crate::scenario::{AppVersion, ClusterName};

/// A probe could not send or read (an API or exec failure): infrastructure, never the mesh's verdict.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ProbeError(pub String);

/// Sends requests from one client and says which cluster runs each answering pod.
pub trait Probe: Send + Sync {
    /// `n` requests in one go; every answer, errors included.
    fn batch(&self, n: u32) -> BoxFuture<'_, Result<Vec<Answer>, ProbeError>>;
    /// Which cluster runs each HelloWorld pod, read from every cluster's API.
    fn attribution(&self) -> BoxFuture<'_, Result<Attribution, ProbeError>>;
}

/// What a check expects and how hard it tries.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// Source cluster.
    pub from: ClusterName,
    /// Each expected version and every cluster it must answer from.
    pub expect: BTreeMap<AppVersion, BTreeSet<ClusterName>>,
    /// Expected clusters on another network than `from`'s, reached through its gateways: cluster → network.
    pub through_gateways: BTreeMap<ClusterName, String>,
    /// Requests in the measured sample.
    pub requests: u32,
    /// Requests per probe call.
    pub batch: u32,
    /// Deadline for convergence.
    pub convergence_timeout: Duration,
    /// Pause between convergence batches.
    pub poll: Duration,
}

/// How the check converged before its sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Convergence {
    /// Whether every expected (version, cluster) answered before the deadline.
    pub converged: bool,
    /// Batches sent while converging.
    pub attempts: u32,
    /// Seconds from the start of the check until every expected endpoint had answered.
    pub seconds: f64,
    /// Seconds from `since` (the last remote secret applied) to the first answer from another cluster.
    pub first_cross_cluster_seconds: Option<f64>,
}

/// The whole record of one check: what the reporters read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckRecord {
    /// The verdict on the measured sample.
    pub verdict: SourceVerdict,
    /// How it converged first.
    pub convergence: Convergence,
}

/// Runs the check: convergence, then the sample, then the verdict. `since` is when the last remote secret was
/// applied (for the convergence time); `log` gets progress lines.
pub async fn run_check(
    probe: &dyn Probe,
    spec: &CheckSpec,
    since: Option<Instant>,
    log: &(dyn Fn(String) + Send + Sync),
) -> Result<CheckRecord, ProbeError> {
    let started = Instant::now();
    let deadline = started + spec.convergence_timeout;
    let mut seen: BTreeSet<At> = BTreeSet::new();
    let mut first_cross: Option<Instant> = None;
    let mut attempts = 0u32;
    let wanted: Vec<At> = spec
        .expect
        .iter()
        .flat_map(|(v, cs)| cs.iter().map(move |c| At::new(v.as_str(), Some(c))))
        .collect();
    let converged = loop {
        attempts += 1;
        let attr = probe.attribution().await?;
        for a in probe.batch(spec.batch).await? {
            if let Answer::Hello { version, instance } = &a {
                let cluster = attr.get(instance);
                seen.insert(At::new(version.clone(), cluster));
                if first_cross.is_none() && cluster.is_some_and(|c| c != &spec.from) {
                    first_cross = Some(Instant::now());
                }
            }
        }
        if wanted.iter().all(|w| seen.contains(w)) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(spec.poll).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    if converged {
        log(format!(
            "converged after {seconds:.1}s ({attempts} batches): every expected version answered from each of its clusters"
        ));
    } else {
        log(format!(
            "did not converge within {:?}: saw {}",
            spec.convergence_timeout,
            seen.iter().map(At::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    let first_cross_cluster_seconds = match (first_cross, since) {
        (Some(t), Some(s)) => Some(t.saturating_duration_since(s).as_secs_f64()),
        _ => None,
    };
    if let Some(s) = first_cross_cluster_seconds {
        log(format!(
            "first cross-cluster answer {s:.1}s after the last remote secret was applied"
        ));
    }
    let attr = probe.attribution().await?;
    let mut answers = Vec::new();
    let mut left = spec.requests;
    while left > 0 {
        let n = left.min(spec.batch.max(1));
        answers.extend(probe.batch(n).await?);
        left -= n;
    }
    let verdict = judge(
        &spec.from,
        &answers,
        &spec.expect,
        &spec.through_gateways,
        &attr,
        spec.requests,
    );
    log(format!(
        "{} requests from {}: {}",
        spec.requests,
        spec.from,
        verdict
            .counts
            .iter()
            .map(|(k, n)| format!("{k}×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(CheckRecord {
        verdict,
        convergence: Convergence {
            converged,
            attempts,
            seconds,
            first_cross_cluster_seconds,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Answers v1 (local) from the first batch on and v2 (cross-cluster) only from batch `v2_from` on.
    struct Scripted {
        v2_from: u32,
        calls: Mutex<u32>,
        sizes: Mutex<Vec<u32>>,
        fail: bool,
    }

    impl Scripted {
        fn new(v2_from: u32) -> Self {
            Self {
                v2_from,
                calls: Mutex::new(0),
                sizes: Mutex::new(Vec::new()),
                fail: false,
            }
        }
    }

    impl Probe for Scripted {
        fn batch(&self, n: u32) -> BoxFuture<'_, Result<Vec<Answer>, ProbeError>> {
            Box::pin(async move {
                if self.fail {
                    return Err(ProbeError("exec stream broke".into()));
                }
                let call = {
                    let mut c = self.calls.lock().expect("calls");
                    *c += 1;
                    *c
                };
                self.sizes.lock().expect("sizes").push(n);
                Ok((0..n)
                    .map(|i| {
                        let v2 = call >= self.v2_from && i % 2 == 1;
                        Answer::Hello {
                            version: if v2 { "v2" } else { "v1" }.into(),
                            instance: if v2 { "hw-v2" } else { "hw-v1" }.into(),
                        }
                    })
                    .collect())
            })
        }
        fn attribution(&self) -> BoxFuture<'_, Result<Attribution, ProbeError>> {
            Box::pin(async {
                Ok(Attribution::from([
                    ("hw-v1".to_string(), ClusterName::new("cluster1")),
                    ("hw-v2".to_string(), ClusterName::new("cluster2")),
                ]))
            })
        }
    }

    fn spec(timeout_ms: u64) -> CheckSpec {
        CheckSpec {
            from: ClusterName::new("cluster1"),
            expect: BTreeMap::from([
                (
                    AppVersion::new("v1"),
                    BTreeSet::from([ClusterName::new("cluster1")]),
                ),
                (
                    AppVersion::new("v2"),
                    BTreeSet::from([ClusterName::new("cluster2")]),
                ),
            ]),
            through_gateways: BTreeMap::new(),
            requests: 25,
            batch: 10,
            convergence_timeout: Duration::from_millis(timeout_ms),
            poll: Duration::from_millis(1),
        }
    }

    #[tokio::test]
    async fn waits_for_the_cross_cluster_version_then_sends_the_sized_sample() {
        let probe = Scripted::new(3);
        let since = Instant::now();
        let r = run_check(&probe, &spec(5_000), Some(since), &|_| {})
            .await
            .expect("check");
        assert!(r.convergence.converged);
        assert_eq!(r.convergence.attempts, 3, "v2 first answers in the third batch");
        assert!(r.convergence.first_cross_cluster_seconds.is_some());
        assert_eq!(
            probe.sizes.lock().expect("sizes")[3..],
            [10, 10, 5],
            "25 requests in batches of 10"
        );
        assert_eq!(r.verdict.requests, 25);
        assert!(r.verdict.passed(), "{:?}", r.verdict.problems);
    }

    #[tokio::test]
    async fn a_version_that_never_answers_ends_convergence_at_its_deadline_and_fails_the_verdict() {
        let probe = Scripted::new(u32::MAX);
        let started = Instant::now();
        let r = run_check(&probe, &spec(50), None, &|_| {}).await.expect("check");
        assert!(!r.convergence.converged);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            r.verdict.problems[0].starts_with("v2 (in cluster2) never answered cluster1's curl"),
            "{:?}",
            r.verdict.problems
        );
    }

    #[tokio::test]
    async fn a_probe_that_cannot_send_is_an_error_not_a_verdict() {
        let mut probe = Scripted::new(1);
        probe.fail = true;
        let e = run_check(&probe, &spec(50), None, &|_| {})
            .await
            .expect_err("no verdict");
        assert_eq!(e.0, "exec stream broke");
    }
}
