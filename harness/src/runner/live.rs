//! Live traffic during a change: drive meshconf's traffic generator in a source cluster (mark a phase, stop it,
//! read its counts) and restart workloads under it. The verdict on the counts is `verify::live`'s; this module
//! only talks to the clusters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

use super::context::{RunContext, StepError, StepLogger};
use super::exec::Props;
use crate::apps::LOADGEN;
use crate::kube::{self as k};
use crate::plan::LiveCheck;
use crate::provider::ClusterAccess;
use crate::scenario::{ClusterName, Restart};
use crate::verify;

/// How long one `loadgen` command may take (`stop` waits for requests still in flight, each at most 5 s).
const CTL_TIMEOUT: Duration = Duration::from_secs(30);
/// The annotation the sidecar injector writes on every pod it injects; its JSON names the injecting revision.
const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";

/// The revision that injected `p`'s sidecar, read from [`STATUS_ANNOTATION`] (`"revision": "1-32-dev"`).
fn injected_by(p: &Pod) -> Option<String> {
    let status = p.metadata.annotations.as_ref()?.get(STATUS_ANNOTATION)?;
    let v: serde_json::Value = serde_json::from_str(status).ok()?;
    v.get("revision")?.as_str().map(str::to_string)
}

/// The proxy image the injector of `revision` puts into pods, from its ConfigMap's `values` (what istiod itself
/// renders the sidecar template with): `<hub>/<proxy.image>:<tag>[-<variant>]`.
fn injector_image(values_json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(values_json).ok()?;
    let g = v.get("global")?;
    let hub = g.get("hub")?.as_str()?;
    let tag = match g.get("tag")? {
        serde_json::Value::String(t) => t.clone(),
        other => other.to_string(),
    };
    let image = g.get("proxy")?.get("image")?.as_str()?;
    if image.contains('/') {
        return Some(image.to_string());
    }
    let variant = g
        .get("variant")
        .and_then(|x| x.as_str())
        .filter(|x| !x.is_empty());
    Some(match variant {
        Some(x) => format!("{hub}/{image}:{tag}-{x}"),
        None => format!("{hub}/{image}:{tag}"),
    })
}

/// Reads the proxy image `revision`'s injector in `c` uses now.
async fn injector_image_of(c: &ClusterAccess, revision: &str) -> Result<String, StepError> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let name = if revision == "default" {
        "istio-sidecar-injector".to_string()
    } else {
        format!("istio-sidecar-injector-{revision}")
    };
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), "istio-system");
    let cm = api.get(&name).await.map_err(|source| k::KubeError::Api {
        what: format!("get ConfigMap istio-system/{name} in {}", c.name),
        source,
    })?;
    cm.data
        .as_ref()
        .and_then(|d| d.get("values"))
        .and_then(|v| injector_image(v))
        .ok_or_else(|| {
            StepError::infra(format!(
                "ConfigMap istio-system/{name} in {} has no global.hub/tag/proxy.image in its `values`",
                c.name
            ))
        })
}

/// The Running generator pod of `ns`.
async fn generator_pod(c: &ClusterAccess, ns: &str) -> Result<String, StepError> {
    let api: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let pods = api
        .list(&ListParams::default().labels(&format!("app={LOADGEN}")))
        .await
        .map_err(|source| k::KubeError::Api {
            what: format!("list the traffic generator's pod in {}/{ns}", c.name),
            source,
        })?;
    pods.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .and_then(|p| p.metadata.name)
        .ok_or_else(|| StepError::infra(format!("no Running traffic generator pod in {}/{ns}", c.name)))
}

/// `loadgen ARGS…` in the generator's pod; its stdout.
async fn ctl(c: &ClusterAccess, ns: &str, args: &[&str]) -> Result<String, StepError> {
    let pod = generator_pod(c, ns).await?;
    let mut argv = vec![LOADGEN.to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let out = k::exec(&c.client, ns, &pod, LOADGEN, &argv, CTL_TIMEOUT).await?;
    if out.exit_code != 0 {
        let mut e = StepError::infra(format!(
            "`{}` in {}/{pod} exited with {}",
            argv.join(" "),
            c.name,
            out.exit_code
        ));
        e.output_tail = Some(out.stderr.trim().to_string());
        return Err(e);
    }
    Ok(out.stdout)
}

/// Adds every HelloWorld pod the clusters run now to the run's record of who answered (pods a restart replaces
/// keep their cluster in it, so their answers of earlier phases stay attributed).
async fn remember_pods(ctx: &RunContext, ns: &str) -> Result<verify::Attribution, StepError> {
    let now = super::actions::attribution(ctx, ns).await?;
    Ok(ctx.with_facts(|f| {
        f.live_attribution.extend(now);
        f.live_attribution.clone()
    }))
}

/// Marks phase `phase` in the generator of `cluster`, then lets traffic run `dwell` under it.
pub(super) async fn mark_phase(
    ctx: &RunContext,
    cluster: &ClusterName,
    ns: &str,
    phase: &str,
    dwell: Duration,
    log: &StepLogger,
) -> Result<(), StepError> {
    let c = ctx.cluster(cluster)?;
    remember_pods(ctx, ns).await?;
    ctl(&c, ns, &["phase", phase]).await?;
    if dwell.is_zero() {
        log.log(format!("{cluster}: traffic now counted as '{phase}'"));
    } else {
        log.log(format!(
            "{cluster}: traffic now counted as '{phase}'; {}s of it",
            dwell.as_secs()
        ));
        tokio::time::sleep(dwell).await;
    }
    Ok(())
}

/// Restarts the workloads of `ns` but the generator, then waits until each of their pods is Ready and injected
/// by `revision`. A pod that came back Ready from another revision is the mesh's doing (conformance).
pub(super) async fn restart_workloads(
    ctx: &RunContext,
    (cluster, injector): (&ClusterName, &ClusterName),
    ns: &str,
    restart: Restart,
    revision: &str,
    deadline: Duration,
    log: &StepLogger,
) -> Result<(), StepError> {
    let c = ctx.cluster(cluster)?;
    remember_pods(ctx, ns).await?;
    let not_generator = format!("app!={LOADGEN}");
    let started = Instant::now();
    match restart {
        Restart::Rolling => {
            let api: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
            let deployments = api
                .list(&ListParams::default().labels(&not_generator))
                .await
                .map_err(|source| k::KubeError::Api {
                    what: format!("list Deployments in {cluster}/{ns}"),
                    source,
                })?;
            let stamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default()
                .to_string();
            for d in deployments.items {
                let Some(name) = d.metadata.name else { continue };
                // What `kubectl rollout restart` writes.
                let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
                    "kubectl.kubernetes.io/restartedAt": stamp.clone()}}}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|source| k::KubeError::Api {
                        what: format!("restart Deployment {cluster}/{ns}/{name}"),
                        source,
                    })?;
                let left = deadline.saturating_sub(started.elapsed());
                k::wait_rollout(&c.client, ns, &name, left).await?;
                log.log(format!("{cluster}: {name} rolled out"));
            }
        }
        Restart::AllAtOnce => {
            let api: Api<Pod> = Api::namespaced(c.client.clone(), ns);
            api.delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&not_generator),
            )
            .await
            .map_err(|source| k::KubeError::Api {
                what: format!("delete the pods of {cluster}/{ns}"),
                source,
            })?;
            log.log(format!(
                "{cluster}: every pod of {ns} but the generator deleted at once"
            ));
        }
    }
    let image = wait_injected_by(
        (&c, &ctx.cluster(injector)?),
        ns,
        &not_generator,
        revision,
        deadline.saturating_sub(started.elapsed()),
    )
    .await?;
    remember_pods(ctx, ns).await?;
    log.log(format!(
        "{cluster}: every pod of {ns} but the generator is Ready, injected by {revision} and runs {image} after \
         {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Polls until no pod of `selector` is terminating and each is Ready (all containers), injected by `revision`,
/// and runs the proxy image that revision's injector names now (after an in-place upgrade: the newer build's);
/// returns that image.
pub(super) async fn wait_injected_by(
    (c, injector): (&ClusterAccess, &ClusterAccess),
    ns: &str,
    selector: &str,
    revision: &str,
    within: Duration,
) -> Result<String, StepError> {
    let api: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let deadline = Instant::now() + within;
    let image = injector_image_of(injector, revision).await?;
    loop {
        let pods = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|source| k::KubeError::Api {
                what: format!("list the pods of {}/{ns}", c.name),
                source,
            })?;
        let mut waiting = Vec::new();
        let mut other_revision = Vec::new();
        for p in &pods.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready));
            if p.metadata.deletion_timestamp.is_some() || !ready {
                waiting.push(name);
                continue;
            }
            let rev = injected_by(p).unwrap_or_else(|| "(not injected)".into());
            let got = k::proxy_image(p).unwrap_or_else(|| "(no istio-proxy)".into());
            if rev != revision {
                other_revision.push(format!("{name} (injected by {rev})"));
            } else if got != image {
                other_revision.push(format!("{name} (proxy {got}, not {image})"));
            }
        }
        if waiting.is_empty() && !pods.items.is_empty() {
            if other_revision.is_empty() {
                return Ok(image);
            }
            return Err(StepError::conformance(format!(
                "after the restart, pods of {}/{ns} run sidecars not injected by {revision} with its proxy: {}",
                c.name,
                other_revision.join(", ")
            )));
        }
        if Instant::now() >= deadline {
            return Err(StepError::infra(format!(
                "timed out after {}s waiting for the pods of {}/{ns} ({selector}) to be Ready and injected by \
                 {revision}; still waiting for: {}",
                within.as_secs(),
                c.name,
                if waiting.is_empty() {
                    "any pod".to_string()
                } else {
                    waiting.join(", ")
                }
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Stops the generator of `l.from`, reads its counts and judges them: any failed request fails the check.
pub(super) async fn check(ctx: &RunContext, l: &LiveCheck, log: &StepLogger) -> Result<Props, StepError> {
    let c = ctx.cluster(&l.from)?;
    ctl(&c, &l.namespace, &["stop"]).await?;
    let text = ctl(&c, &l.namespace, &["report"]).await?;
    let report = verify::LoadReport::parse(&text).map_err(|e| StepError::infra(e.to_string()))?;
    let attribution = remember_pods(ctx, &l.namespace).await?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let v = verify::judge_live(&l.from, &report, &l.expect, &attribution, now_ms);
    for line in verify::render_table(&v).lines() {
        log.log(line.to_string());
    }
    let mut props: Props = BTreeMap::new();
    props.insert("failed-requests".into(), v.failed.to_string());
    props.insert("requests".into(), v.sent.to_string());
    for p in &v.phases {
        let k = |what: &str| format!("phase/{}/{what}", p.name);
        props.insert(k("sent"), p.counts.sent.to_string());
        props.insert(k("failed"), p.counts.failed.to_string());
        props.insert(k("seconds"), format!("{:.1}", p.seconds));
        props.insert(k("p50-ms"), format!("{:.1}", p.counts.p50_ms));
        props.insert(k("p99-ms"), format!("{:.1}", p.counts.p99_ms));
        for (at, n) in &p.answered {
            props.insert(k(&format!("count/{at}")), n.to_string());
        }
        if let Some(e) = &p.counts.first_error {
            props.insert(k("first-error"), e.clone());
        }
    }
    if v.problems.is_empty() {
        Ok(props)
    } else {
        let mut e = StepError::conformance(v.problems.join("; "));
        e.command = Some(format!(
            "kubectl exec -n {} deploy/{LOADGEN} -c {LOADGEN} -- {LOADGEN} report",
            l.namespace
        ));
        e.properties = props;
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_injector_image_is_read_from_its_values() {
        let v = r#"{"global":{"hub":"meshconf.local/istio","tag":"1.32-dev","proxy":{"image":"proxyv2"}}}"#;
        assert_eq!(
            injector_image(v).as_deref(),
            Some("meshconf.local/istio/proxyv2:1.32-dev")
        );
        let distroless =
            r#"{"global":{"hub":"h","tag":"1","variant":"distroless","proxy":{"image":"proxyv2"}}}"#;
        assert_eq!(
            injector_image(distroless).as_deref(),
            Some("h/proxyv2:1-distroless")
        );
        assert_eq!(injector_image(r#"{"global":{"hub":"h"}}"#), None);
        assert_eq!(injector_image("not json"), None);
    }

    #[test]
    fn the_injecting_revision_is_read_from_the_sidecar_status() {
        let mut p = Pod::default();
        assert_eq!(injected_by(&p), None);
        p.metadata.annotations = Some(std::collections::BTreeMap::from([(
            STATUS_ANNOTATION.to_string(),
            r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"revision":"1-32-dev"}"#
                .to_string(),
        )]));
        assert_eq!(injected_by(&p).as_deref(), Some("1-32-dev"));
    }
}
