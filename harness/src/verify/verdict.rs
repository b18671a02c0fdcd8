//! Judging one source cluster's answers against the scenario's expectation.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::parse::Answer;
use super::stats::{ALPHA, proportional_p_value};
use crate::scenario::{AppVersion, ClusterName};

/// Which cluster each HelloWorld pod runs in, read from every cluster's API (pod name → cluster).
pub type Attribution = BTreeMap<String, ClusterName>;

/// What answered (a version, or a pod) and the cluster whose API lists the pod; `None` when no API knows it.
/// Shown and serialized as `v1@cluster1` (`v1@?`): the JSON record's map keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct At {
    /// The version (in `counts`) or the pod (in `instances`).
    pub what: String,
    /// The cluster that runs it.
    pub cluster: Option<ClusterName>,
}

impl At {
    /// `what` answered from `cluster`.
    pub fn new(what: impl Into<String>, cluster: Option<&ClusterName>) -> Self {
        Self {
            what: what.into(),
            cluster: cluster.cloned(),
        }
    }

    /// The cluster's name, `?` when unknown.
    pub fn cluster_name(&self) -> &str {
        self.cluster.as_ref().map(ClusterName::as_str).unwrap_or("?")
    }
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.what, self.cluster_name())
    }
}

impl Serialize for At {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The outcome for one source cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceVerdict {
    /// Source cluster.
    pub from: ClusterName,
    /// Requests sent.
    pub requests: u32,
    /// Answers per version and the cluster that served it.
    pub counts: BTreeMap<At, u64>,
    /// Answers per pod and its cluster: the attribution, pod by pod.
    pub instances: BTreeMap<At, u64>,
    /// Non-HelloWorld answers (errors), with how often each occurred.
    pub errors: BTreeMap<String, u64>,
    /// p-value of the even-split test over expected versions.
    pub p_value: Option<f64>,
    /// Problems; empty means the check passed.
    pub problems: Vec<String>,
}

impl SourceVerdict {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Judges `answers` from `from`: every expected version answered from each cluster the scenario placed it in,
/// nothing answered from elsewhere, no errors, and a fair split at level [`ALPHA`] across what the client's
/// sidecar balances requests over: each (version, cluster) endpoint of its own network (one replica each), and
/// each other network as one bucket (`through_gateways`: cluster → its network), weighted by its endpoints. An
/// east-west gateway passes TLS through by SNI, so it balances the sidecar's few long-lived connections, not
/// requests: which pod of that network answers follows those connections and is not judged for evenness (on
/// kind, three clusters: both connections of one gateway landed on one pod, 17/79 between the two pods of
/// network1, while network1 against cluster3 was a fair 96/54).
pub fn judge(
    from: &ClusterName,
    answers: &[Answer],
    expect: &BTreeMap<AppVersion, BTreeSet<ClusterName>>,
    through_gateways: &BTreeMap<ClusterName, String>,
    attribution: &Attribution,
    requests: u32,
) -> SourceVerdict {
    let mut counts: BTreeMap<At, u64> = BTreeMap::new();
    let mut per_version: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut instances: BTreeMap<At, u64> = BTreeMap::new();
    let mut misplaced: BTreeMap<String, u64> = BTreeMap::new();
    for a in answers {
        match a {
            Answer::Hello { version, instance } => {
                let owner = attribution.get(instance);
                let cluster = owner.map(ClusterName::as_str).unwrap_or("?");
                *counts.entry(At::new(version.clone(), owner)).or_default() += 1;
                *instances.entry(At::new(instance.clone(), owner)).or_default() += 1;
                *per_version.entry(version.clone()).or_default() += 1;
                match expect.get(&AppVersion::new(version.clone())) {
                    Some(want) if want.iter().any(|w| w.as_str() == cluster) => {}
                    Some(want) => {
                        let want: Vec<&str> = want.iter().map(ClusterName::as_str).collect();
                        *misplaced
                            .entry(format!(
                                "{version} answered by {instance} in {cluster}, expected in {}",
                                want.join(" or ")
                            ))
                            .or_default() += 1
                    }
                    None => {
                        *misplaced
                            .entry(format!(
                                "unexpected version {version} from {instance} in {cluster}"
                            ))
                            .or_default() += 1
                    }
                }
            }
            Answer::Other { text } => *errors.entry(text.clone()).or_default() += 1,
        }
    }
    let summary = || {
        let mut parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        parts.extend(errors.iter().map(|(k, v)| format!("error «{k}»×{v}")));
        if parts.is_empty() {
            "nothing".to_string()
        } else {
            parts.join(", ")
        }
    };
    if (answers.len() as u64) < u64::from(requests) {
        problems.push(format!("only {} answers to {requests} requests", answers.len()));
    }
    let endpoints: Vec<At> = expect
        .iter()
        .flat_map(|(v, cs)| cs.iter().map(move |c| At::new(v.as_str(), Some(c))))
        .collect();
    for (version, clusters) in expect {
        for cluster in clusters {
            if counts
                .get(&At::new(version.as_str(), Some(cluster)))
                .copied()
                .unwrap_or(0)
                == 0
            {
                problems.push(format!(
                    "{version} (in {cluster}) never answered {from}'s curl in {requests} requests; saw {}",
                    summary()
                ));
            }
        }
    }
    for (m, n) in &misplaced {
        problems.push(format!("{m} ({n}×)"));
    }
    if !errors.is_empty() {
        let errs: Vec<String> = errors.iter().map(|(k, v)| format!("«{k}»×{v}")).collect();
        problems.push(format!(
            "{} requests failed: {}",
            errors.values().sum::<u64>(),
            errs.join(", ")
        ));
    }
    let expected_counts: Vec<u64> = endpoints
        .iter()
        .map(|e| counts.get(e).copied().unwrap_or(0))
        .collect();
    // What the sidecar balances over: its network's endpoints one by one, each other network as one bucket.
    let mut buckets: BTreeMap<String, (u64, u32)> = BTreeMap::new();
    for (e, n) in endpoints.iter().zip(&expected_counts) {
        let key = match e.cluster.as_ref().and_then(|c| through_gateways.get(c)) {
            Some(net) => format!("{net} (through its gateways)"),
            None => e.to_string(),
        };
        let b = buckets.entry(key).or_default();
        b.0 += n;
        b.1 += 1;
    }
    let p_value = proportional_p_value(&buckets.values().copied().collect::<Vec<_>>());
    if let Some(p) = p_value
        && p < ALPHA
        && expected_counts.iter().all(|&c| c > 0)
    {
        let split = if buckets.len() == endpoints.len() {
            format!(
                "answers are not evenly split across {}",
                endpoints.iter().map(At::to_string).collect::<Vec<_>>().join("/")
            )
        } else {
            format!(
                "answers are not split in proportion to the endpoints behind {}",
                buckets
                    .iter()
                    .map(|(k, (n, w))| format!("{k} [{w} endpoint(s)]×{n}"))
                    .collect::<Vec<_>>()
                    .join("/")
            )
        };
        problems.push(format!(
            "{split} (chi-square p = {p:.2e} < {ALPHA:e}): {}",
            summary()
        ));
    }
    SourceVerdict {
        from: from.clone(),
        requests,
        counts,
        instances,
        errors,
        p_value,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(v: &str, pod: &str) -> Answer {
        Answer::Hello {
            version: v.into(),
            instance: pod.into(),
        }
    }

    fn one(c: &str) -> BTreeSet<ClusterName> {
        BTreeSet::from([ClusterName::new(c)])
    }

    /// v1 in cluster1, v2 in cluster2 and cluster3, one pod each.
    fn three_clusters() -> (BTreeMap<AppVersion, BTreeSet<ClusterName>>, Attribution) {
        let expect = BTreeMap::from([
            (AppVersion::new("v1"), one("cluster1")),
            (
                AppVersion::new("v2"),
                BTreeSet::from([ClusterName::new("cluster2"), ClusterName::new("cluster3")]),
            ),
        ]);
        let attr = Attribution::from([
            ("hw-v1".to_string(), ClusterName::new("cluster1")),
            ("hw-v2-c2".to_string(), ClusterName::new("cluster2")),
            ("hw-v2-c3".to_string(), ClusterName::new("cluster3")),
        ]);
        (expect, attr)
    }

    fn none() -> BTreeMap<ClusterName, String> {
        BTreeMap::new()
    }

    fn setup() -> (BTreeMap<AppVersion, BTreeSet<ClusterName>>, Attribution) {
        let expect = BTreeMap::from([
            (AppVersion::new("v1"), one("cluster1")),
            (AppVersion::new("v2"), one("cluster2")),
        ]);
        let attr = Attribution::from([
            ("hw-v1-a".to_string(), ClusterName::new("cluster1")),
            ("hw-v2-b".to_string(), ClusterName::new("cluster2")),
            ("hw-v2-rogue".to_string(), ClusterName::new("cluster1")),
        ]);
        (expect, attr)
    }

    #[test]
    fn an_even_toggle_passes() {
        let (e, a) = setup();
        let answers: Vec<_> = (0..100)
            .map(|i| {
                if i % 2 == 0 {
                    hello("v1", "hw-v1-a")
                } else {
                    hello("v2", "hw-v2-b")
                }
            })
            .collect();
        let v = judge(&ClusterName::new("cluster1"), &answers, &e, &none(), &a, 100);
        assert!(v.passed(), "{:?}", v.problems);
        assert_eq!(v.counts[&At::new("v1", Some(&ClusterName::new("cluster1")))], 50);
        assert!(v.p_value.expect("p") > 0.9);
    }

    #[test]
    fn only_local_version_fails_naming_the_missing_one() {
        let (e, a) = setup();
        let answers: Vec<_> = (0..100).map(|_| hello("v1", "hw-v1-a")).collect();
        let v = judge(&ClusterName::new("cluster1"), &answers, &e, &none(), &a, 100);
        assert!(!v.passed());
        assert!(
            v.problems[0].contains(
                "v2 (in cluster2) never answered cluster1's curl in 100 requests; saw v1@cluster1×100"
            ),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_version_served_from_the_wrong_cluster_fails() {
        let (e, a) = setup();
        let answers: Vec<_> = (0..100)
            .map(|i| {
                if i % 2 == 0 {
                    hello("v1", "hw-v1-a")
                } else {
                    hello("v2", "hw-v2-rogue")
                }
            })
            .collect();
        let v = judge(&ClusterName::new("cluster2"), &answers, &e, &none(), &a, 100);
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("answered by hw-v2-rogue in cluster1, expected in cluster2")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn errors_and_skew_are_reported() {
        let (e, a) = setup();
        let mut answers: Vec<_> = (0..95).map(|_| hello("v1", "hw-v1-a")).collect();
        answers.extend((0..5).map(|_| hello("v2", "hw-v2-b")));
        let v = judge(&ClusterName::new("cluster1"), &answers, &e, &none(), &a, 100);
        assert!(
            v.problems.iter().any(|p| p.contains("not evenly split")),
            "{:?}",
            v.problems
        );
        let mut answers: Vec<_> = (0..99)
            .map(|i| {
                if i % 2 == 0 {
                    hello("v1", "hw-v1-a")
                } else {
                    hello("v2", "hw-v2-b")
                }
            })
            .collect();
        answers.push(Answer::Other {
            text: "upstream connect error".into(),
        });
        let v = judge(&ClusterName::new("cluster1"), &answers, &e, &none(), &a, 100);
        assert!(
            v.problems.iter().any(|p| p.contains("1 requests failed")),
            "{:?}",
            v.problems
        );
    }

    /// v2 runs in cluster2 and cluster3: answers from both pass, and each of them must answer.
    #[test]
    fn a_version_in_two_clusters_passes_from_both_and_fails_when_one_is_silent() {
        let (expect, attr) = three_clusters();
        let pods = ["hw-v1", "hw-v2-c2", "hw-v2-c3"];
        let answers: Vec<_> = (0..90)
            .map(|i| hello(if i % 3 == 0 { "v1" } else { "v2" }, pods[i % 3]))
            .collect();
        let v = judge(
            &ClusterName::new("cluster1"),
            &answers,
            &expect,
            &none(),
            &attr,
            90,
        );
        assert!(v.passed(), "{:?}", v.problems);
        assert_eq!(v.counts[&At::new("v2", Some(&ClusterName::new("cluster3")))], 30);
        let silent: Vec<_> = (0..90)
            .map(|i| {
                if i % 2 == 0 {
                    hello("v1", "hw-v1")
                } else {
                    hello("v2", "hw-v2-c2")
                }
            })
            .collect();
        let v = judge(
            &ClusterName::new("cluster1"),
            &silent,
            &expect,
            &none(),
            &attr,
            90,
        );
        assert!(
            v.problems
                .iter()
                .any(|p| p.starts_with("v2 (in cluster3) never answered cluster1's curl")),
            "{:?}",
            v.problems
        );
    }

    /// From cluster3 (network2) the sidecar balances over its own pod and network1's gateways, which pass whole
    /// connections to one of network1's two pods: the three-cluster split seen on kind passes as 1:2 by network,
    /// and a network that gets too few answers still fails.
    #[test]
    fn another_network_is_judged_as_one_bucket_weighted_by_its_endpoints() {
        let (expect, attr) = three_clusters();
        let answers = |c1: usize, c2: usize, c3: usize| -> Vec<Answer> {
            let mut a: Vec<_> = (0..c1).map(|_| hello("v1", "hw-v1")).collect();
            a.extend((0..c2).map(|_| hello("v2", "hw-v2-c2")));
            a.extend((0..c3).map(|_| hello("v2", "hw-v2-c3")));
            a
        };
        let from3 = ClusterName::new("cluster3");
        let gateways = BTreeMap::from([
            (ClusterName::new("cluster1"), "network1".to_string()),
            (ClusterName::new("cluster2"), "network1".to_string()),
        ]);
        let seen = answers(17, 79, 54);
        let v = judge(&from3, &seen, &expect, &gateways, &attr, 150);
        assert!(v.passed(), "{:?}", v.problems);
        let v = judge(&from3, &seen, &expect, &none(), &attr, 150);
        assert!(
            v.problems[0].contains("not evenly split"),
            "judged pod by pod it fails: {:?}",
            v.problems
        );
        let v = judge(&from3, &answers(20, 20, 110), &expect, &gateways, &attr, 150);
        assert!(
            v.problems[0].contains(
                "not split in proportion to the endpoints behind network1 (through its gateways) [2 endpoint(s)]×40/v2@cluster3 [1 endpoint(s)]×110"
            ),
            "{:?}",
            v.problems
        );
    }
}
