//! Pods on their way out, as a kubelet would keep them: asked to stop, a container keeps serving through its
//! `preStop: sleep` and stops at once without one. kwok removes a deleted pod immediately, so the generator
//! stand-in records when it last saw each pod and lets a departed pod answer for its `preStop` seconds from then;
//! a pod without a `preStop` sleep stops answering the moment it is gone, as HelloWorld does on kind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// A pod seen with an address, and since when it is leaving (terminating, or gone from the API).
#[derive(Debug, Clone)]
struct Seen {
    pod: Pod,
    leaving_since: Option<Instant>,
}

/// What the stand-in has seen of the pods of every cluster, by `(cluster, pod IP)`.
#[derive(Debug, Default)]
pub struct Departures {
    seen: BTreeMap<(String, String), Seen>,
}

/// How long `p` keeps serving once asked to stop: the longest `preStop: sleep` of its containers.
pub fn serves_for(p: &Pod) -> Duration {
    let secs = p
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| c.lifecycle.as_ref()?.pre_stop.as_ref()?.sleep.as_ref())
        .map(|s| s.seconds.max(0) as u64)
        .max()
        .unwrap_or(0);
    Duration::from_secs(secs)
}

fn ip_of(p: &Pod) -> Option<String> {
    p.status.as_ref()?.pod_ip.clone()
}

impl Departures {
    /// Takes `cluster`'s pods as listed `now`: a terminating pod starts leaving, a pod no longer listed has left
    /// (at the latest now), and what left longer ago than a minute is forgotten.
    pub fn observe(&mut self, cluster: &str, pods: &[Pod], now: Instant) {
        let mut listed = std::collections::BTreeSet::new();
        for p in pods {
            let Some(ip) = ip_of(p) else { continue };
            let key = (cluster.to_string(), ip);
            listed.insert(key.clone());
            let terminating = p.metadata.deletion_timestamp.is_some();
            let since = self.seen.get(&key).and_then(|s| s.leaving_since);
            let leaving_since = match (terminating, since) {
                (false, _) => None,
                (true, Some(t)) => Some(t),
                (true, None) => Some(now),
            };
            self.seen.insert(
                key,
                Seen {
                    pod: p.clone(),
                    leaving_since,
                },
            );
        }
        for (key, s) in self.seen.iter_mut() {
            if key.0 == cluster && !listed.contains(key) && s.leaving_since.is_none() {
                s.leaving_since = Some(now);
            }
        }
        self.seen.retain(|_, s| {
            s.leaving_since
                .is_none_or(|t| now.duration_since(t) < Duration::from_secs(60))
        });
    }

    /// The pod that answers at `ip` in `cluster` at `now`: one not leaving, or one still within its `preStop`.
    pub fn serving(&self, cluster: &str, ip: &str, now: Instant) -> Option<&Pod> {
        let s = self.seen.get(&(cluster.to_string(), ip.to_string()))?;
        match s.leaving_since {
            None => Some(&s.pod),
            Some(t) if now.duration_since(t) < serves_for(&s.pod) => Some(&s.pod),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, prestop: Option<i64>, terminating: bool) -> Pod {
        let mut c = serde_json::json!({"name": "helloworld", "image": "h"});
        if let Some(s) = prestop {
            c["lifecycle"] = serde_json::json!({"preStop": {"sleep": {"seconds": s}}});
        }
        let mut meta = serde_json::json!({"name": name});
        if terminating {
            meta["deletionTimestamp"] = serde_json::json!("2026-12-05T00:00:00Z");
        }
        serde_json::from_value(serde_json::json!({
            "metadata": meta, "spec": {"containers": [c]}, "status": {"podIP": ip}
        }))
        .unwrap_or_default()
    }

    #[test]
    fn a_departed_pod_serves_for_its_prestop_sleep_and_not_a_moment_without_one() {
        let t0 = Instant::now();
        let mut d = Departures::default();
        d.observe(
            "c1",
            &[
                pod("graceful", "10.0.0.1", Some(5), false),
                pod("abrupt", "10.0.0.2", None, false),
            ],
            t0,
        );
        assert!(d.serving("c1", "10.0.0.1", t0).is_some());
        // Both gone from the next listing.
        let t1 = t0 + Duration::from_secs(1);
        d.observe("c1", &[], t1);
        assert!(d.serving("c1", "10.0.0.1", t1 + Duration::from_secs(4)).is_some());
        assert!(d.serving("c1", "10.0.0.1", t1 + Duration::from_secs(5)).is_none());
        assert!(d.serving("c1", "10.0.0.2", t1).is_none());
        // Another cluster's listing leaves c1's records alone; an unknown address serves nothing.
        d.observe("c2", &[], t1);
        assert!(d.serving("c1", "10.0.0.1", t1).is_some());
        assert!(d.serving("c1", "10.9.9.9", t1).is_none());
    }

    #[test]
    fn leaving_starts_when_the_pod_is_first_seen_terminating() {
        let t0 = Instant::now();
        let mut d = Departures::default();
        d.observe("c1", &[pod("p", "10.0.0.1", Some(2), true)], t0);
        d.observe(
            "c1",
            &[pod("p", "10.0.0.1", Some(2), true)],
            t0 + Duration::from_secs(1),
        );
        assert!(
            d.serving("c1", "10.0.0.1", t0 + Duration::from_millis(1900))
                .is_some()
        );
        assert!(d.serving("c1", "10.0.0.1", t0 + Duration::from_secs(2)).is_none());
    }
}
