//! Live traffic during a change (an upgrade): read the traffic generator's per-phase counts and judge them with
//! zero tolerance, as Cilium's clustermesh upgrade test does: one failed request or broken connection fails the
//! source, and the first failure is named with its phase.
//!
//! The generator (`tools/images/loadgen`) runs in the source cluster's client pod namespace and counts every
//! request in the phase it started in; this module only reads what it counted.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::parse::Answer;
use super::parse::parse_answers;
use super::verdict::{At, Attribution};
use crate::scenario::{AppVersion, ClusterName};

/// The generator's report could not be read: infrastructure (its output is tool output, never mesh behaviour).
#[derive(Debug, thiserror::Error)]
#[error("the traffic generator's report is not what meshconf reads ({0}); is the loadgen image current?")]
pub struct ReportError(String);

/// Requests of one kind of traffic in a phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    /// Requests started.
    pub sent: u64,
    /// Of those, failed (no answer in time, a status other than 200, or a body that is not HelloWorld's).
    pub failed: u64,
}

/// One phase as the generator counted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseCounts {
    /// Phase name (`start` before the first mark).
    pub name: String,
    /// When the phase began (Unix ms, the generator's clock).
    pub started_ms: i64,
    /// When the next one began (0 while it runs).
    pub ended_ms: i64,
    /// Requests started in the phase.
    pub sent: u64,
    /// Of those, failed.
    pub failed: u64,
    /// The first failure, with its time.
    #[serde(default)]
    pub first_error: Option<String>,
    /// Failures by message.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// Answers by body (`Hello version: v1, instance: …`).
    #[serde(default)]
    pub answers: BTreeMap<String, u64>,
    /// New connections at a fixed rate, one request each.
    pub new_connections: KindCounts,
    /// Long-lived keep-alive connections.
    pub keep_alive: KindCounts,
    /// Median latency of the answered requests, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// What `loadgen report` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Phases in order.
    pub phases: Vec<PhaseCounts>,
}

impl LoadReport {
    /// Parses the generator's JSON.
    pub fn parse(text: &str) -> Result<Self, ReportError> {
        let r: LoadReport = serde_json::from_str(text).map_err(|e| ReportError(e.to_string()))?;
        if r.phases.is_empty() {
            return Err(ReportError("no phases".into()));
        }
        Ok(r)
    }
}

/// One phase, judged: answers attributed to their version and cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseVerdict {
    /// Phase name.
    pub name: String,
    /// Seconds the phase lasted (up to the report when it still ran).
    pub seconds: f64,
    /// The generator's counts.
    pub counts: PhaseCounts,
    /// Answers per version and the cluster that served it.
    pub answered: BTreeMap<At, u64>,
}

/// The verdict for one source cluster over every phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveVerdict {
    /// Source cluster.
    pub from: ClusterName,
    /// Every phase in order.
    pub phases: Vec<PhaseVerdict>,
    /// Requests sent in all.
    pub sent: u64,
    /// Failed requests in all (the JUnit property `failed-requests`, which must be 0).
    pub failed: u64,
    /// Problems; empty means the source passed.
    pub problems: Vec<String>,
}

/// Judges the report of `from`'s generator: no request may fail, every phase must have sent requests (a
/// generator that stalled proves nothing about the phase), and in every phase after `start` each expected
/// version must have answered from each of its clusters (traffic that silently stopped crossing clusters fails
/// too). `now_ms` ends a phase that still runs.
pub fn judge_live(
    from: &ClusterName,
    report: &LoadReport,
    expect: &BTreeMap<AppVersion, BTreeSet<ClusterName>>,
    attribution: &Attribution,
    now_ms: i64,
) -> LiveVerdict {
    let mut phases = Vec::new();
    let mut problems = Vec::new();
    let (mut sent, mut failed) = (0, 0);
    for p in &report.phases {
        let end = if p.ended_ms > 0 { p.ended_ms } else { now_ms };
        let mut answered = BTreeMap::new();
        for (body, n) in &p.answers {
            let at = match parse_answers(body).first() {
                Some(Answer::Hello { version, instance }) => {
                    At::new(version.clone(), attribution.get(instance))
                }
                _ => At::new(body.clone(), None),
            };
            *answered.entry(at).or_default() += n;
        }
        sent += p.sent;
        failed += p.failed;
        if p.failed > 0 {
            problems.push(format!(
                "{} of {} requests from {from} failed during phase '{}' ({} new-connection, {} keep-alive); first: {}",
                p.failed,
                p.sent,
                p.name,
                p.new_connections.failed,
                p.keep_alive.failed,
                p.first_error.as_deref().unwrap_or("(no message)")
            ));
        }
        let outcomes = p.failed + p.answers.values().sum::<u64>();
        if outcomes != p.sent {
            problems.push(format!(
                "{from}'s traffic generator counts {} requests started in phase '{}' but {outcomes} outcomes: the \
                 report was read before `loadgen stop` waited for every request",
                p.sent, p.name
            ));
        }
        if p.sent == 0 && p.name != "start" {
            problems.push(format!(
                "{from}'s traffic generator sent nothing during phase '{}': the phase was not under traffic",
                p.name
            ));
        }
        if p.sent > 0 && p.name != "start" {
            for (v, clusters) in expect {
                for c in clusters {
                    let at = At::new(v.as_str(), Some(c));
                    if answered.get(&at).copied().unwrap_or(0) == 0 {
                        problems.push(format!(
                            "{at} never answered {from}'s generator during phase '{}' ({} requests)",
                            p.name, p.sent
                        ));
                    }
                }
            }
        }
        phases.push(PhaseVerdict {
            name: p.name.clone(),
            seconds: (end - p.started_ms).max(0) as f64 / 1000.0,
            counts: p.clone(),
            answered,
        });
    }
    LiveVerdict {
        from: from.clone(),
        phases,
        sent,
        failed,
        problems,
    }
}

/// The per-phase table of one source, as the console and the HTML report print it.
pub fn render_table(v: &LiveVerdict) -> String {
    let mut out = format!(
        "{:<22} {:>7} {:>7} {:>7} {:>9} {:>9}  answers\n",
        "phase", "seconds", "sent", "failed", "p50 ms", "p99 ms"
    );
    for p in &v.phases {
        let answers: Vec<String> = p.answered.iter().map(|(k, n)| format!("{k}×{n}")).collect();
        let line = format!(
            "{:<22} {:>7.1} {:>7} {:>7} {:>9.1} {:>9.1}  {}",
            p.name,
            p.seconds,
            p.counts.sent,
            p.counts.failed,
            p.counts.p50_ms,
            p.counts.p99_ms,
            answers.join(", ")
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"now_ms": 1000000, "phases": [
      {"name": "start", "started_ms": 990000, "ended_ms": 992000, "sent": 0, "failed": 0, "errors": {}, "answers": {},
       "new_connections": {"sent": 0, "failed": 0}, "keep_alive": {"sent": 0, "failed": 0}, "p50_ms": 0, "p99_ms": 0},
      {"name": "baseline", "started_ms": 992000, "ended_ms": 996000, "sent": 80, "failed": 0, "errors": {},
       "answers": {"Hello version: v1, instance: hw-v1": 41, "Hello version: v2, instance: hw-v2": 39},
       "new_connections": {"sent": 40, "failed": 0}, "keep_alive": {"sent": 40, "failed": 0}, "p50_ms": 2.5, "p99_ms": 9.75},
      {"name": "move-workloads", "started_ms": 996000, "ended_ms": 0, "sent": 70, "failed": 2,
       "first_error": "2026-12-04T19:00:01Z HTTP 503: upstream connect error", "errors": {"HTTP 503: upstream connect error": 2},
       "answers": {"Hello version: v1, instance: hw-v1-new": 30, "Hello version: v2, instance: hw-v2": 38},
       "new_connections": {"sent": 35, "failed": 2}, "keep_alive": {"sent": 35, "failed": 0}, "p50_ms": 3.0, "p99_ms": 40.0}
    ]}"#;

    /// [`REPORT`] without its two failures (the requests answered by the new v1 pod instead).
    fn clean() -> String {
        REPORT
            .replace(r#""failed": 2,"#, r#""failed": 0,"#)
            .replace(r#""sent": 35, "failed": 2"#, r#""sent": 35, "failed": 0"#)
            .replace("hw-v1-new\": 30", "hw-v1-new\": 32")
    }

    /// The report `text` of `from`'s generator, parsed and judged.
    fn judged(text: &str, from: &str) -> LiveVerdict {
        let r = LoadReport::parse(text).expect("report");
        judge_live(&ClusterName::new(from), &r, &expect(), &attribution(), 1_000_000)
    }

    fn expect() -> BTreeMap<AppVersion, BTreeSet<ClusterName>> {
        BTreeMap::from([
            (
                AppVersion::new("v1"),
                BTreeSet::from([ClusterName::new("cluster1")]),
            ),
            (
                AppVersion::new("v2"),
                BTreeSet::from([ClusterName::new("cluster2")]),
            ),
        ])
    }

    fn attribution() -> Attribution {
        Attribution::from([
            ("hw-v1".to_string(), ClusterName::new("cluster1")),
            ("hw-v1-new".to_string(), ClusterName::new("cluster1")),
            ("hw-v2".to_string(), ClusterName::new("cluster2")),
        ])
    }

    #[test]
    fn one_failed_request_fails_the_source_naming_its_phase_and_first_error() {
        let v = judged(REPORT, "cluster1");
        assert_eq!((v.sent, v.failed), (150, 2));
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert_eq!(
            v.problems[0],
            "2 of 70 requests from cluster1 failed during phase 'move-workloads' (2 new-connection, 0 keep-alive); \
             first: 2026-12-04T19:00:01Z HTTP 503: upstream connect error"
        );
        assert_eq!(v.phases[2].seconds, 4.0, "a running phase ends at the report");
        assert_eq!(
            v.phases[2].answered[&At::new("v1", Some(&ClusterName::new("cluster1")))],
            30
        );
        insta::assert_snapshot!(render_table(&v));
    }

    #[test]
    fn a_clean_report_passes_and_a_silent_phase_does_not() {
        let clean = clean();
        let v = judged(&clean, "cluster2");
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        let silent = clean.replace(r#""sent": 80,"#, r#""sent": 0,"#).replace(
            r#"{"Hello version: v1, instance: hw-v1": 41, "Hello version: v2, instance: hw-v2": 39}"#,
            "{}",
        );
        let v = judged(&silent, "cluster2");
        assert_eq!(
            v.problems,
            [
                "cluster2's traffic generator sent nothing during phase 'baseline': the phase was not under traffic"
            ]
        );
    }

    #[test]
    fn output_that_is_not_the_report_is_an_error() {
        assert!(LoadReport::parse("loadgen: no loadgen answers").is_err());
        assert!(LoadReport::parse(r#"{"phases": []}"#).is_err());
    }

    #[test]
    fn requests_without_an_outcome_are_never_taken_for_answers() {
        let early = REPORT.replace(r#""sent": 80,"#, r#""sent": 82,"#);
        let v = judged(&early, "cluster2");
        assert!(
            v.problems[0].starts_with(
                "cluster2's traffic generator counts 82 requests started in phase 'baseline' but 80 outcomes"
            ),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_phase_where_a_cluster_stopped_answering_fails_without_any_failed_request() {
        let local = clean().replace(
            r#""Hello version: v2, instance: hw-v2": 38"#,
            r#""Hello version: v1, instance: hw-v1": 38"#,
        );
        let v = judged(&local, "cluster1");
        assert_eq!(
            v.problems,
            ["v2@cluster2 never answered cluster1's generator during phase 'move-workloads' (70 requests)"]
        );
    }
}
