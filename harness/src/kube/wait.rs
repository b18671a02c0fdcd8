//! Watch-based waits, each with a deadline and a message naming what it waited for.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::runtime::{reflector, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::KubeError;

/// Waits until `cond` holds for object `name`, or `timeout` passes. `describe` renders the last state seen for
/// the timeout message.
pub async fn wait_for<K>(
    api: Api<K>,
    name: &str,
    cond: impl Condition<K>,
    what: &str,
    timeout: Duration,
    describe: impl Fn(&K) -> String,
) -> Result<K, KubeError>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
{
    // A watch that sees no event for the client's read timeout is cut by it: watch again until the deadline, and
    // name the last watch error only if the deadline passes.
    let deadline = tokio::time::Instant::now() + timeout;
    let cond = std::sync::Arc::new(cond);
    let mut watch_error = None;
    loop {
        let c = cond.clone();
        let attempt = await_condition(api.clone(), name, move |o: Option<&K>| c.matches_object(o));
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(Some(obj))) => return Ok(obj),
            Ok(Ok(None)) => return Err(KubeError::Transport(format!("{what}: the object was deleted"))),
            Ok(Err(e)) => {
                watch_error = Some(e.to_string());
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)))
                    .await;
                if tokio::time::Instant::now() < deadline {
                    continue;
                }
            }
            Err(_) => {}
        }
        let last = match api.get_opt(name).await {
            Ok(Some(o)) => Some(describe(&o)),
            Ok(None) => Some("does not exist".into()),
            Err(e) => Some(format!("unreadable: {e}")),
        };
        let last = match (last, watch_error) {
            (Some(l), Some(w)) => Some(format!("{l}; last watch error: {w}")),
            (l, _) => l,
        };
        return Err(KubeError::Timeout {
            what: what.to_string(),
            after: timeout,
            last,
        });
    }
}

/// A rollout is complete when the controller has observed the current generation and every replica is updated
/// and available (`is_deployment_completed` alone can see the previous rollout's state).
pub fn rollout_complete(d: Option<&Deployment>) -> bool {
    let Some(d) = d else { return false };
    let (Some(spec), Some(status)) = (&d.spec, &d.status) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    let generation = d.metadata.generation.unwrap_or(0);
    status.observed_generation.unwrap_or(-1) >= generation
        && status.updated_replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
}

/// Waits for a Deployment rollout.
pub async fn wait_rollout(client: &Client, ns: &str, name: &str, timeout: Duration) -> Result<(), KubeError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait_for(
        api,
        name,
        rollout_complete,
        &format!("rollout of deployment {ns}/{name}"),
        timeout,
        |d| {
            let s = d.status.clone().unwrap_or_default();
            format!(
                "observedGeneration {:?}/{:?}, updated {:?}, available {:?}",
                s.observed_generation, d.metadata.generation, s.updated_replicas, s.available_replicas
            )
        },
    )
    .await
    .map(|_| ())
}

/// The pods a readiness wait saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodsReady {
    /// `(name, ready containers, total containers)`.
    pub pods: Vec<(String, usize, usize)>,
    /// Each pod's `istio-proxy` image (a container or a native sidecar), as injected: which build's proxy runs.
    pub proxies: BTreeMap<String, String>,
}

/// The image of a pod's `istio-proxy` (a container, or a native sidecar init container).
pub fn proxy_image(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == "istio-proxy")
        .and_then(|c| c.image.clone())
}

fn pod_readiness(p: &Pod) -> (String, usize, usize, bool) {
    let name = p.metadata.name.clone().unwrap_or_default();
    // Native sidecars (init containers with restartPolicy Always, as Istio injects on Kubernetes >= 1.33) count
    // like containers, as `kubectl get pod` shows them: helloworld + istio-proxy = 2/2.
    let sidecars: Vec<String> = p
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|ics| {
            ics.iter()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"))
                .map(|c| c.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let total = p.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0) + sidecars.len();
    let status = p.status.as_ref();
    let ready_main = status
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().filter(|c| c.ready).count())
        .unwrap_or(0);
    let ready_side = status
        .and_then(|s| s.init_container_statuses.as_ref())
        .map(|cs| {
            cs.iter()
                .filter(|c| c.ready && sidecars.contains(&c.name))
                .count()
        })
        .unwrap_or(0);
    let pod_ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let deleting = p.metadata.deletion_timestamp.is_some();
    (name, ready_main + ready_side, total, pod_ready && !deleting)
}

/// Returns (as an error) once a ReplicaSet in `ns` has failed to create pods for at least `persist` (events
/// `FailedCreate`, e.g. an injection webhook whose istiod is gone). The ReplicaSet controller retries, so a
/// failure that clears within `persist` is not reported. Never returns `Ok`: race it against a pod wait.
pub async fn persistent_create_failure(client: &Client, ns: &str, persist: Duration) -> KubeError {
    use k8s_openapi::api::core::v1::Event;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let lp = kube::api::ListParams::default().fields("reason=FailedCreate");
    let mut first_seen: std::collections::BTreeMap<String, tokio::time::Instant> = Default::default();
    loop {
        if let Ok(list) = events.list(&lp).await {
            for e in list.items {
                let object = e.involved_object.name.clone().unwrap_or_default();
                let since = *first_seen
                    .entry(object.clone())
                    .or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= persist {
                    return KubeError::Stuck(format!(
                        "{} {ns}/{object} has failed to create pods for {}s: {}",
                        e.involved_object.kind.as_deref().unwrap_or("controller"),
                        persist.as_secs(),
                        e.message.as_deref().unwrap_or("(no message)")
                    ));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// Returns (as an error) once `istio-system/istiod` in `cluster` has had no ready replica for `persist`: sidecars
/// it serves cannot get certificates or configuration, so their pods never become Ready. Never returns `Ok`:
/// race it against a pod wait.
pub async fn istiod_down(client: &Client, cluster: &str, persist: Duration) -> KubeError {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");
    let mut down_since: Option<tokio::time::Instant> = None;
    loop {
        let ready = match deps.get_opt("istiod").await {
            Ok(Some(d)) => d.status.and_then(|s| s.ready_replicas).unwrap_or(0),
            Ok(None) => 0,
            // The API itself failing is for the pod wait to report.
            Err(_) => 1,
        };
        if ready > 0 {
            down_since = None;
        } else if down_since.get_or_insert_with(tokio::time::Instant::now).elapsed() >= persist {
            return KubeError::Stuck(format!(
                "istiod in {cluster} has had no ready replica for {}s: the sidecars it serves cannot get \
                 certificates or configuration",
                persist.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// Waits until at least one pod matches `selector` and every matching pod is Ready with `containers`
/// containers (2 with a sidecar, 1 without). A Ready pod with another container count fails at once: it will
/// never gain or lose a sidecar.
pub async fn wait_pods_ready(
    client: &Client,
    ns: &str,
    selector: &str,
    containers: usize,
    timeout: Duration,
) -> Result<PodsReady, KubeError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let (reader, writer) = reflector::store();
    // Every watcher event (including InitDone, when the initial list lands in the store) triggers a re-check;
    // filtering to applied objects would miss pods that were already Ready when the watch started.
    let stream = reflector(writer, watcher(api, watcher::Config::default().labels(selector)));
    let what = format!("pods {ns} -l {selector} to be {containers}/{containers} Ready");
    let mut stream = Box::pin(stream);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let state = reader.state();
        let pods: Vec<(String, usize, usize, bool)> = state.iter().map(|p| pod_readiness(p)).collect();
        if let Some((name, _, total, _)) = pods
            .iter()
            .find(|(_, _, total, ready)| *ready && *total != containers)
        {
            return Err(KubeError::Unmet(format!(
                "pod {ns}/{name} is Ready with {total} container(s), expected {containers}: {}",
                if *total < containers {
                    "the sidecar was not injected"
                } else {
                    "an unexpected sidecar was injected"
                }
            )));
        }
        if !pods.is_empty()
            && pods
                .iter()
                .all(|(_, r, t, ready)| *ready && r == t && *t == containers)
        {
            return Ok(PodsReady {
                pods: pods.into_iter().map(|(n, r, t, _)| (n, r, t)).collect(),
                proxies: state
                    .iter()
                    .filter_map(|p| Some((p.metadata.name.clone()?, proxy_image(p)?)))
                    .collect(),
            });
        }
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => tracing::debug!("pod watch error (retried): {e}"),
            Ok(None) => return Err(KubeError::Transport(format!("{what}: watch ended"))),
            Err(_) => {
                let last = if pods.is_empty() {
                    "no matching pods".to_string()
                } else {
                    pods.iter()
                        .map(|(n, r, t, _)| format!("{n} {r}/{t}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(KubeError::Timeout {
                    what,
                    after: timeout,
                    last: Some(last),
                });
            }
        }
    }
}

fn lb_ip(s: Option<&Service>) -> Option<IpAddr> {
    s?.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .iter()
        .find_map(|i| i.ip.as_deref()?.parse().ok())
}

/// Waits until a LoadBalancer Service has an IP address in `.status.loadBalancer.ingress` (never `<pending>`).
pub async fn wait_lb_address(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<IpAddr, KubeError> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = wait_for(
        api,
        name,
        |s: Option<&Service>| lb_ip(s).is_some(),
        &format!("an external IP on service {ns}/{name}"),
        timeout,
        |_| "<pending>".to_string(),
    )
    .await?;
    lb_ip(Some(&svc)).ok_or_else(|| KubeError::Transport(format!("service {ns}/{name} lost its address")))
}

/// Waits until every webhook of a MutatingWebhookConfiguration carries a caBundle (istiod patches it).
pub async fn wait_webhook_ca_bundle(client: &Client, name: &str, timeout: Duration) -> Result<(), KubeError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    wait_for(
        api,
        name,
        |m: Option<&MutatingWebhookConfiguration>| {
            m.and_then(|m| m.webhooks.as_ref()).is_some_and(|ws| {
                !ws.is_empty()
                    && ws.iter().all(|w| {
                        w.client_config
                            .ca_bundle
                            .as_ref()
                            .is_some_and(|b| !b.0.is_empty())
                    })
            })
        },
        &format!("istiod to patch the caBundle of mutatingwebhookconfiguration {name}"),
        timeout,
        |_| "caBundle empty".to_string(),
    )
    .await
    .map(|_| ())
}

/// Deletes every CRD of an Istio API group (`*.istio.io`) and waits, watching each, until all are gone: Helm keeps
/// the base chart's CRDs on uninstall (their resource policy), so Istio's Helm uninstall steps delete them by hand.
/// Returns the names deleted.
pub async fn delete_istio_crds(
    client: &Client,
    cluster: &str,
    timeout: Duration,
) -> Result<Vec<String>, KubeError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::wait::conditions::is_deleted;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let all = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|source| KubeError::Api {
            what: format!("list customresourcedefinitions in {cluster}"),
            source,
        })?;
    let istio: Vec<(String, String)> = all
        .items
        .iter()
        .filter_map(|c| Some((c.metadata.name.clone()?, c.metadata.uid.clone()?)))
        .filter(|(n, _)| n.ends_with(".istio.io"))
        .collect();
    for (name, _) in &istio {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(KubeError::Api {
                    what: format!("delete customresourcedefinition {name} in {cluster}"),
                    source,
                });
            }
        }
    }
    let gone = futures::future::join_all(
        istio
            .iter()
            .map(|(name, uid)| await_condition(api.clone(), name, is_deleted(uid))),
    );
    let names: Vec<String> = istio.iter().map(|(n, _)| n.clone()).collect();
    match tokio::time::timeout(timeout, gone).await {
        Ok(results) => {
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(KubeError::Transport(format!(
                    "watch the Istio CRDs of {cluster} going away: {e}"
                )));
            }
            Ok(names)
        }
        Err(_) => Err(KubeError::Timeout {
            what: format!("the {} Istio CRDs of {cluster} to be deleted", names.len()),
            after: timeout,
            last: None,
        }),
    }
}

/// Deletes a ValidatingWebhookConfiguration if present.
pub async fn delete_webhook_configuration(client: &Client, name: &str) -> Result<(), KubeError> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(KubeError::Api {
            what: format!("delete validatingwebhookconfiguration {name}"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    fn dep(generation: i64, observed: i64, updated: i32, available: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(generation);
        d.spec = Some(DeploymentSpec {
            replicas: Some(1),
            ..Default::default()
        });
        d.status = Some(DeploymentStatus {
            observed_generation: Some(observed),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            replicas: Some(1),
            ..Default::default()
        });
        d
    }

    #[test]
    fn rollout_needs_the_current_generation_observed() {
        assert!(rollout_complete(Some(&dep(2, 2, 1, 1))));
        assert!(
            !rollout_complete(Some(&dep(2, 1, 1, 1))),
            "stale status of the previous rollout"
        );
        assert!(!rollout_complete(Some(&dep(1, 1, 0, 1))));
        assert!(!rollout_complete(None));
    }

    #[test]
    fn native_sidecars_count_as_containers() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hw"},
            "spec": {"containers": [{"name": "helloworld"}],
                     "initContainers": [{"name": "istio-init"}, {"name": "istio-proxy", "restartPolicy": "Always"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "helloworld", "ready": true, "restartCount": 0, "image": "", "imageID": ""}],
                       "initContainerStatuses": [{"name": "istio-init", "ready": false, "restartCount": 0, "image": "", "imageID": ""},
                                                 {"name": "istio-proxy", "ready": true, "restartCount": 0, "image": "", "imageID": ""}]}
        })).expect("pod");
        assert_eq!(pod_readiness(&p), ("hw".to_string(), 2, 2, true));
    }

    #[test]
    fn pending_has_no_ip() {
        let mut s = Service::default();
        assert!(lb_ip(Some(&s)).is_none());
        s.status = Some(
            serde_json::from_value(serde_json::json!({"loadBalancer": {"ingress": [{"hostname": "x.elb"}]}}))
                .expect("status"),
        );
        assert!(lb_ip(Some(&s)).is_none(), "a hostname is not an address");
        s.status = Some(
            serde_json::from_value(serde_json::json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}))
                .expect("status"),
        );
        assert_eq!(lb_ip(Some(&s)), Some("192.0.2.10".parse().expect("ip")));
    }
}
