//! The interpreter of plan actions: what each typed action does against the run's clusters (provider actions go
//! to the provider). The same code serves every provider, and each action reports the lines `meshconf plan`
//! showed for it, with the values it bound.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::context::{ActionRecord, RunContext, StepError, StepLogger};
use crate::apps;
use crate::diagnose::EndpointFact;
use crate::kube::{self as k, parse_documents};
use crate::mesh::SharedRoot;
use crate::plan::{
    Action, Bindings, Condition, Label, OperatorSource, Placeholder, PlannedStep, Reading, TrafficCheck,
    action_lines, curl_target, fill,
};
use crate::provider::ClusterAccess;
use crate::scenario::ClusterName;
use crate::verify::{self, Answer};

/// Requests per exec: one curl invocation fetches this many URLs, saving exec round-trips. Not more: a network
/// gateway passes TLS through, picking a pod per connection, and one invocation's requests share connections. In
/// execs of 50 the three-cluster kind trial's cluster3 got only cluster1's pod behind network1's gateway in 150
/// requests (never cluster2's); in tens the split held in every cold run.
pub const BATCH: u32 = 10;

use super::exec::Props;

fn write_private(path: &Path, body: &str) -> Result<(), StepError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| StepError::infra(format!("mkdir {}: {e}", d.display())))?;
    }
    std::fs::write(path, body).map_err(|e| StepError::infra(format!("write {}: {e}", path.display())))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(())
}

/// Executes a step: its actions in order, each reported with its rendered lines (placeholders filled), its times
/// and its outcome, so the transcript is what ran.
pub(super) async fn run(
    s: &PlannedStep,
    ctx: &Arc<RunContext>,
    log: &StepLogger,
) -> Result<Props, StepError> {
    let mut bindings = Bindings::new();
    let mut props = Props::new();
    for (index, a) in s.actions.iter().enumerate() {
        let started = std::time::SystemTime::now();
        let before = bindings.clone();
        let r = perform(a, ctx, &mut bindings, log, &mut props).await;
        let bound = bindings
            .iter()
            .filter(|(k, _)| !before.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        log.action(ActionRecord {
            index,
            lines: action_lines(a, &ctx.variant, &bindings),
            bound,
            started: millis(started),
            ended: millis(std::time::SystemTime::now()),
            error: r.as_ref().err().map(|e| e.message.clone()),
        });
        r?;
    }
    Ok(props)
}

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn bound<'a>(b: &'a Bindings, p: &Placeholder) -> Result<&'a str, StepError> {
    b.get(p).map(String::as_str).ok_or_else(|| {
        StepError::infra(format!(
            "placeholder {} is not bound: the action that reads it did not run in this step",
            p.0
        ))
    })
}

async fn perform(
    a: &Action,
    ctx: &Arc<RunContext>,
    b: &mut Bindings,
    log: &StepLogger,
    props: &mut Props,
) -> Result<(), StepError> {
    match a {
        Action::Note { .. } => Ok(()),
        Action::Namespace {
            cluster,
            name,
            labels,
            annotations,
        } => {
            let c = ctx.cluster(cluster)?;
            let pairs = |v: &[Label]| {
                v.iter()
                    .map(|l| (l.key.clone(), l.value.clone()))
                    .collect::<Vec<_>>()
            };
            ensure_namespace(ctx, &c, name, &pairs(labels), &pairs(annotations)).await?;
            log.log(format!("namespace {name} in {cluster}"));
            Ok(())
        }
        Action::LabelNamespace { cluster, name, label } => {
            let c = ctx.cluster(cluster)?;
            let api: Api<Namespace> = Api::all(c.client.clone());
            let what = |verb: &str| format!("{verb} namespace {name} in {cluster}");
            let exists = api
                .get_opt(name)
                .await
                .map_err(|source| k::KubeError::Api {
                    what: what("get"),
                    source,
                })?
                .is_some();
            if !exists {
                log.log(format!(
                    "namespace {name} does not exist in {cluster}: nothing labelled (the guide's `&&`)"
                ));
                return Ok(());
            }
            let patch =
                serde_json::json!({ "metadata": { "labels": { label.key.clone(): label.value.clone() } } });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| k::KubeError::Api {
                    what: what("label"),
                    source,
                })?;
            log.log(format!("namespace {name} in {cluster} labelled {label}"));
            Ok(())
        }
        Action::CaCerts { cluster } => plug_cacerts(ctx, cluster, log).await,
        Action::WriteFile { file, body } => {
            let text = fill(body, b);
            if let Some(at) = text.find("${") {
                let name: String = text[at + 2..].chars().take_while(|c| *c != '}').collect();
                return Err(StepError::infra(format!(
                    "{file}: placeholder {name} is not bound when the file is written"
                )));
            }
            write_private(&ctx.run_dir().join(file), &text)
        }
        Action::IstioctlInstall {
            cluster,
            build,
            file,
            source,
            overlay,
        } => {
            let c = ctx.cluster(cluster)?;
            let path = ctx.run_dir().join(file);
            if let OperatorSource::Script { operator, .. } = source {
                write_private(&path, operator)?;
            }
            let out = ctx
                .istioctl_of(build)?
                .install(&c.kubeconfig, &c.context, &path, &overlay.args())
                .run()
                .await?;
            log.log(format!("istioctl install -f {file}: {}", last_line(&out.stdout)));
            Ok(())
        }
        Action::Apply {
            cluster,
            namespace,
            manifest,
            selector,
        } => {
            let c = ctx.cluster(cluster)?;
            let text = manifest.text(&ctx.variant);
            // The file the guide names, so a person replaying the transcript finds it in the run directory.
            write_private(&ctx.run_dir().join(manifest.path(&ctx.variant)), &text)?;
            let mut docs = parse_documents(&text)?;
            if let Some(l) = selector {
                docs = apps::select_documents(&docs, &BTreeMap::from([(l.key.clone(), l.value.clone())]));
            }
            if docs.is_empty() {
                return Err(StepError::infra(format!(
                    "{} selects no document{}",
                    manifest.path(&ctx.variant),
                    selector
                        .as_ref()
                        .map(|l| format!(" with -l {l}"))
                        .unwrap_or_default()
                )));
            }
            for applied in c.applier.apply_values(docs, namespace.as_deref()).await? {
                log.log(format!("applied {applied}"));
            }
            Ok(())
        }
        Action::RemoteSecret {
            from,
            build,
            into,
            kubeconfig,
        } => remote_secret(ctx, (from, build), into, kubeconfig.as_deref(), log, props).await,
        Action::Wait {
            cluster,
            until,
            deadline_secs,
        } => {
            let c = ctx.cluster(cluster)?;
            let within = Duration::from_secs(*deadline_secs);
            wait(ctx, &c, until, within, log, props).await
        }
        Action::Capture {
            cluster,
            reading,
            into,
            deadline_secs,
        } => {
            let c = ctx.cluster(cluster)?;
            let within = Duration::from_secs(*deadline_secs);
            let started = Instant::now();
            let value = match reading {
                Reading::LbAddress { namespace, service } => {
                    k::wait_lb_address(&c.client, namespace, service, within)
                        .await?
                        .to_string()
                }
                Reading::PodName { namespace, selector } | Reading::PodIp { namespace, selector } => {
                    let (name, ip) = tokio::time::timeout(within, running_pod(&c, namespace, selector))
                        .await
                        .map_err(|_| {
                            StepError::infra(format!(
                                "no answer listing pods -l {selector} within {within:?}"
                            ))
                        })??;
                    match reading {
                        Reading::PodIp { .. } => ip.ok_or_else(|| {
                            StepError::infra(format!(
                                "the running pod -l {selector} in {cluster}/{namespace} has no IP yet"
                            ))
                        })?,
                        _ => name,
                    }
                }
            };
            log.log(format!(
                "{}={value} ({cluster}, after {:.1}s)",
                into.0,
                started.elapsed().as_secs_f64()
            ));
            props.insert(into.0.to_ascii_lowercase().replace('_', "-"), value.clone());
            b.insert(into.clone(), value);
            Ok(())
        }
        Action::Snapshot { cluster } => {
            let c = ctx.cluster(cluster)?;
            let snap = k::snapshot::take(&c.client, cluster.as_str()).await?;
            log.log(format!("{cluster} before the run: {}", snap.counts()));
            props.insert(format!("snapshot/{cluster}"), snap.counts());
            ctx.with_facts(|f| f.baseline.insert(cluster.clone(), snap));
            Ok(())
        }
        Action::HelmInstall {
            cluster,
            release,
            chart,
            namespace,
            sets,
            overlay,
        } => {
            let h = helm(ctx)?;
            b.insert(Placeholder::istio_charts(), h.charts.display().to_string());
            let c = ctx.cluster(cluster)?;
            let mut args: Vec<String> = Vec::new();
            for (k, v) in sets {
                let v = fill(v, b);
                if v.contains("${") {
                    return Err(StepError::infra(format!(
                        "helm install {release} in {cluster}: --set {k}={v} has a placeholder not bound yet"
                    )));
                }
                args.extend(["--set".to_string(), format!("{k}={v}")]);
            }
            args.extend(overlay.args());
            let out = h
                .install(&c.kubeconfig, &c.context, release, *chart, namespace, &args)
                .run()
                .await?;
            log.log(format!(
                "helm install {release} in {cluster}: {}",
                last_line(&out.stdout)
            ));
            Ok(())
        }
        Action::HelmUninstall {
            cluster,
            releases,
            namespace,
        } => {
            only_istio_the_run_installed(ctx, cluster)?;
            let h = helm(ctx)?;
            let c = ctx.cluster(cluster)?;
            for r in releases {
                let out = h.uninstall(&c.kubeconfig, &c.context, r, namespace).run().await?;
                log.log(format!(
                    "helm uninstall {r} in {cluster}: {}",
                    last_line(&out.stdout)
                ));
            }
            let gone = k::delete_istio_crds(&c.client, cluster.as_str(), Duration::from_secs(120)).await?;
            log.log(format!(
                "deleted the {} Istio CRDs helm keeps in {cluster}",
                gone.len()
            ));
            Ok(())
        }
        Action::IstioctlUninstall {
            cluster,
            build,
            revision,
        } => {
            // A reset purges everything, so it must only ever meet Istio the run installed; an upgrade removes
            // one revision of its own.
            if revision.is_none() {
                only_istio_the_run_installed(ctx, cluster)?;
            }
            let c = ctx.cluster(cluster)?;
            let out = ctx
                .istioctl_of(build)?
                .uninstall(&c.kubeconfig, &c.context, revision.as_deref())
                .run()
                .await?;
            let what = revision
                .as_ref()
                .map_or("--purge".to_string(), |r| format!("--revision {r}"));
            log.log(format!(
                "istioctl uninstall {what} in {cluster}: {}",
                last_line(&out.stdout)
            ));
            Ok(())
        }
        Action::TrafficPhase {
            cluster,
            namespace,
            phase,
            dwell_secs,
        } => {
            super::live::mark_phase(
                ctx,
                cluster,
                namespace,
                phase,
                Duration::from_secs(*dwell_secs),
                log,
            )
            .await
        }
        Action::RestartWorkloads {
            cluster,
            namespace,
            restart,
            revision,
            injector,
            deadline_secs,
        } => {
            super::live::restart_workloads(
                ctx,
                (cluster, injector),
                namespace,
                *restart,
                revision,
                Duration::from_secs(*deadline_secs),
                log,
            )
            .await
        }
        Action::CheckProxies {
            cluster,
            namespace,
            build,
        } => super::proxies::check(ctx, cluster, namespace, build, log, props).await,
        Action::WaitInjected {
            cluster,
            namespace,
            selector,
            revision,
            deadline_secs,
        } => {
            let c = ctx.cluster(cluster)?;
            let image = super::live::wait_injected_by(
                (&c, &c),
                namespace,
                selector,
                revision,
                Duration::from_secs(*deadline_secs),
            )
            .await?;
            log.log(format!(
                "{cluster}: every pod of {selector} is Ready, injected by {revision} and runs {image}"
            ));
            Ok(())
        }
        Action::CheckLiveTraffic(l) => {
            let p = super::live::check(ctx, l, log).await?;
            props.extend(p);
            Ok(())
        }
        Action::StopCreatedPods {
            cluster,
            deadline_secs,
        } => {
            let c = ctx.cluster(cluster)?;
            let created = created_namespaces(ctx, &c, cluster, b).await?;
            let started = std::time::Instant::now();
            for ns in &created {
                stop_pods_quickly(&c, ns).await?;
            }
            let left = pods_gone(&c, &created, Duration::from_secs(*deadline_secs)).await?;
            if left.is_empty() {
                log.log(format!(
                    "{cluster}: the run's pods stopped in {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
            } else {
                log.log(format!(
                    "{cluster}: after {deadline_secs}s still stopping: {} (the namespaces' deletion waits for them)",
                    left.join(", ")
                ));
            }
            Ok(())
        }
        Action::DeleteCreatedNamespaces {
            cluster,
            deadline_secs,
        } => {
            let c = ctx.cluster(cluster)?;
            let created = created_namespaces(ctx, &c, cluster, b).await?;
            delete_namespaces(&c, &created, Duration::from_secs(*deadline_secs), log).await
        }
        Action::CleanState { cluster } => {
            let c = ctx.cluster(cluster)?;
            let before = ctx
                .with_facts(|f| f.baseline.get(cluster).cloned())
                .ok_or_else(|| {
                    StepError::infra(format!("no snapshot of {cluster} before the run to compare with"))
                })?;
            let after = k::snapshot::take(&c.client, cluster.as_str()).await?;
            props.insert(format!("snapshot-after/{cluster}"), after.counts());
            let (left, gone) = (before.left_over(&after), before.missing(&after));
            let mut wrong = Vec::new();
            if !left.is_empty() {
                wrong.push(format!(
                    "{cluster} holds {} object(s) it did not hold before the run: {}",
                    left.len(),
                    left.join(", ")
                ));
            }
            if !gone.is_empty() {
                wrong.push(format!(
                    "{cluster} lost {} object(s) it held before the run: {}",
                    gone.len(),
                    gone.join(", ")
                ));
            }
            if wrong.is_empty() {
                log.log(format!(
                    "{cluster}: clean state, nothing left over, nothing gone ({})",
                    after.counts()
                ));
                Ok(())
            } else {
                Err(StepError::infra(wrong.join("; ")))
            }
        }
        Action::Provider(p) => {
            let clusters = ctx
                .clusters
                .lock()
                .map_err(|_| StepError::infra("cluster table poisoned"))?
                .clone();
            let done = ctx.provider.perform(p, &clusters).await?;
            for l in done.log {
                log.log(l);
            }
            props.extend(done.props);
            b.extend(done.bound);
            if let Some(c) = done.created {
                ctx.clusters
                    .lock()
                    .map_err(|_| StepError::infra("cluster table poisoned"))?
                    .insert(c.name.clone(), c);
            }
            Ok(())
        }
        Action::ProbeIsolation(p) => {
            let pod = bound(b, &Placeholder::client_pod(&p.from))?.to_string();
            let ip = bound(b, &Placeholder::helloworld_ip(&p.to))?.to_string();
            let c = ctx.cluster(&p.from)?;
            let url = format!("http://{ip}:{}{}", p.port, p.path);
            let argv: Vec<String> = ["curl", "-sS", "-m", &p.timeout_secs.to_string(), &url]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let out = k::exec(
                &c.client,
                &p.namespace,
                &pod,
                ctx.variant.client.name(),
                &argv,
                Duration::from_secs(p.timeout_secs + 30),
            )
            .await?;
            let (verdict, seen) = isolation_verdict(out.exit_code, &out.stdout, &out.stderr);
            props.insert(format!("isolation/{}-to-{}", p.from, p.to), seen.clone());
            match verdict {
                Ok(()) => {
                    log.log(format!(
                        "{} ({}) cannot reach {} ({}) pod {ip} directly: {seen}",
                        p.from, p.from_network, p.to, p.to_network
                    ));
                    Ok(())
                }
                Err(answer) => Err(StepError::infra(format!(
                    "{} ({}) reached {} ({}) pod {ip} directly ({answer}): the networks are not isolated, so \
                     answers across them need not have come through the east-west gateways",
                    p.from, p.from_network, p.to, p.to_network
                ))),
            }
        }
        Action::CheckGatewayPath(g) => {
            let pod = bound(b, &Placeholder::client_pod(&g.from))?.to_string();
            let mut nets = BTreeMap::new();
            for (net, peers) in &g.networks {
                let addrs = |cs: &[ClusterName], p: fn(&ClusterName) -> Placeholder| {
                    cs.iter()
                        .map(|c| Ok((c.clone(), bound(b, &p(c))?.to_string())))
                        .collect::<Result<Vec<_>, StepError>>()
                };
                nets.insert(
                    net.clone(),
                    PeerAddrs {
                        gateways: addrs(&peers.gateways, Placeholder::eastwest_address)?,
                        pods: addrs(&peers.workloads, Placeholder::helloworld_ip)?,
                    },
                );
            }
            let (source, view) = ctx
                .endpoint_view(&g.from, &g.namespace, &pod, &g.envoy_cluster)
                .await;
            let eps = view.map_err(|e| {
                StepError::infra(format!(
                    "read the endpoints of {pod} in {} ({source}): {e}",
                    g.from
                ))
            })?;
            match gateway_path_verdict(&g.from, &eps, &nets) {
                Ok(seen) => {
                    log.log(format!(
                        "{} reaches other networks through their gateways: {seen}",
                        g.from
                    ));
                    props.insert(format!("gateway-path/{}", g.from), seen);
                    Ok(())
                }
                Err(wrong) => {
                    let mut e = StepError::conformance(wrong.clone());
                    e.properties.insert(format!("gateway-path/{}", g.from), wrong);
                    Err(e)
                }
            }
        }
        Action::CheckTraffic(t) => {
            let pod = bound(b, &Placeholder::client_pod(&t.from))?.to_string();
            let p = check_traffic(ctx, t, pod, log).await?;
            props.extend(p);
            Ok(())
        }
    }
}

async fn wait(
    ctx: &Arc<RunContext>,
    c: &ClusterAccess,
    until: &Condition,
    within: Duration,
    log: &StepLogger,
    props: &mut Props,
) -> Result<(), StepError> {
    let started = Instant::now();
    match until {
        Condition::ApiReady => {
            // What `kind create --wait` does not wait for: the default ServiceAccount (pods are refused without
            // it), kube-proxy and CoreDNS Ready (Services answer).
            let sa: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "default");
            k::wait_for(
                sa,
                "default",
                |o: Option<&ServiceAccount>| o.is_some(),
                &format!("{}: ServiceAccount default/default", c.name),
                within,
                |_| "present".into(),
            )
            .await?;
            for sel in ["k8s-app=kube-proxy", "k8s-app=kube-dns"] {
                k::wait_pods_ready(&c.client, "kube-system", sel, 1, within).await?;
            }
            log.log(format!(
                "{}: ServiceAccount default, kube-proxy and CoreDNS Ready",
                c.name
            ));
        }
        Condition::Rollout {
            namespace,
            deployment,
        } => {
            k::wait_rollout(&c.client, namespace, deployment, within).await?;
            log.log(format!("{namespace}/{deployment} rolled out in {}", c.name));
        }
        Condition::InjectorPatched { primary } => {
            for l in crate::provider::wait_injector_patched(c, primary, within).await? {
                log.log(l);
            }
        }
        Condition::PodsReady {
            namespace,
            selectors,
            containers,
            control_plane,
        } => {
            let checks = selectors
                .iter()
                .map(|sel| k::wait_pods_ready(&c.client, namespace, sel, *containers, within));
            // A ReplicaSet that keeps failing to create pods (its injection webhook is down) fails the wait with
            // the controller's own message instead of a timeout that says only "no matching pods"; an istiod that
            // stays down (the control plane these sidecars need) fails it with that cause.
            let istiod_watch = async {
                match control_plane.as_ref().map(|cp| (cp, ctx.cluster(cp))) {
                    Some((cp, Ok(access))) => {
                        k::istiod_down(&access.client, cp.as_str(), Duration::from_secs(30)).await
                    }
                    _ => std::future::pending().await,
                }
            };
            let results = tokio::select! {
                r = futures::future::join_all(checks) => r,
                e = k::persistent_create_failure(&c.client, namespace, Duration::from_secs(30)) => return Err(e.into()),
                e = istiod_watch => return Err(e.into()),
            };
            for (sel, r) in selectors.iter().zip(results) {
                let ready = r?;
                for (name, r, t) in ready.pods {
                    log.log(format!("pod {name} {r}/{t} Running ({sel})"));
                    props.insert(format!("pod/{name}"), format!("{r}/{t}"));
                }
                // Which build's proxy each pod runs, as injected (a mixed-version mesh proves its mix here).
                for (name, image) in ready.proxies {
                    props.insert(format!("proxy/{name}"), image);
                }
            }
            props.insert(
                "ready-seconds".into(),
                format!("{:.1}", started.elapsed().as_secs_f64()),
            );
        }
    }
    Ok(())
}

/// Deletes `names` in `c` and waits until each is gone (finalizers done), within `within`.
/// The namespaces this run created in `cluster` (bound to their placeholder in `b`): those its actions made, and
/// any other the snapshot before the run did not hold (istioctl install makes istio-system when no cacerts step
/// did).
async fn created_namespaces(
    ctx: &RunContext,
    c: &ClusterAccess,
    cluster: &ClusterName,
    b: &mut Bindings,
) -> Result<Vec<String>, StepError> {
    let mut created: Vec<String> = ctx.with_facts(|f| {
        f.created_namespaces
            .iter()
            .filter(|(cl, _)| cl == cluster)
            .map(|(_, ns)| ns.clone())
            .collect()
    });
    if let Some(before) = ctx.with_facts(|f| f.baseline.get(cluster).cloned()) {
        let now = k::snapshot::take(&c.client, cluster.as_str()).await?;
        for o in before.left_over(&now) {
            if let Some(ns) = o.strip_prefix("Namespace/")
                && !created.iter().any(|c| c == ns)
            {
                created.push(ns.to_string());
            }
        }
    }
    b.insert(Placeholder::created_namespaces(cluster), created.join(" "));
    Ok(created)
}

/// Waits up to `within` until no pod is left in `namespaces`; returns those still there then (by name).
async fn pods_gone(
    c: &ClusterAccess,
    namespaces: &[String],
    within: Duration,
) -> Result<Vec<String>, StepError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut left = Vec::new();
        for ns in namespaces {
            let api: Api<Pod> = Api::namespaced(c.client.clone(), ns);
            let pods = api
                .list(&ListParams::default())
                .await
                .map_err(|source| k::KubeError::Api {
                    what: format!("list the pods of {}/{ns}", c.name),
                    source,
                })?;
            left.extend(
                pods.items
                    .into_iter()
                    .map(|p| format!("{ns}/{}", p.metadata.name.unwrap_or_default())),
            );
        }
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn delete_namespaces(
    c: &ClusterAccess,
    names: &[String],
    within: Duration,
    log: &StepLogger,
) -> Result<(), StepError> {
    use kube::api::DeleteParams;
    let api: Api<Namespace> = Api::all(c.client.clone());
    for ns in names {
        match api.delete(ns, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(k::KubeError::Api {
                    what: format!("delete namespace {ns} in {}", c.name),
                    source,
                }
                .into());
            }
        }
    }
    let deadline = tokio::time::Instant::now() + within;
    for ns in names {
        loop {
            let now = api.get_opt(ns).await.map_err(|source| k::KubeError::Api {
                what: format!("get namespace {ns} in {}", c.name),
                source,
            })?;
            let Some(n) = now else { break };
            if tokio::time::Instant::now() > deadline {
                return Err(k::KubeError::Timeout {
                    what: format!("{}: namespace {ns} deleted", c.name),
                    after: within,
                    last: n.status.and_then(|s| s.phase).or(Some("present".into())),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        log.log(format!(
            "deleted namespace {ns} in {} (created by this run)",
            c.name
        ));
    }
    Ok(())
}

/// Stops the pods of a namespace the run made before the namespace goes: its Deployments and ReplicaSets are
/// deleted orphaning their pods (so none is recreated, and none is collected with the default 30 s grace), then the
/// pods with a 1 s grace. helloworld (PID 1, no SIGTERM handler) ignores SIGTERM and a preStop sleep runs its
/// course, so each pod held the namespace for its whole grace, and the namespace controller requeues by it. The
/// kubelet still stops every container before its pod object goes.
async fn stop_pods_quickly(c: &ClusterAccess, ns: &str) -> Result<(), StepError> {
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    use kube::api::{DeleteParams, PropagationPolicy};
    let orphan = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    let quick = DeleteParams {
        grace_period_seconds: Some(1),
        ..DeleteParams::default()
    };
    let all = ListParams::default();
    let what = |kind: &str| format!("delete the {kind} of {}/{ns}", c.name);
    let gone = |r: Result<(), kube::Error>, kind: &str| -> Result<(), StepError> {
        match r {
            Ok(()) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(k::KubeError::Api {
                what: what(kind),
                source,
            }
            .into()),
        }
    };
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
    gone(
        deployments.delete_collection(&orphan, &all).await.map(drop),
        "Deployments",
    )?;
    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), ns);
    gone(
        sets.delete_collection(&orphan, &all).await.map(drop),
        "ReplicaSets",
    )?;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    gone(pods.delete_collection(&quick, &all).await.map(drop), "pods")
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("done")
        .trim()
        .to_string()
}

async fn ensure_namespace(
    ctx: &RunContext,
    c: &ClusterAccess,
    ns: &str,
    labels: &[(String, String)],
    annotations: &[(String, String)],
) -> Result<(), StepError> {
    let api: Api<Namespace> = Api::all(c.client.clone());
    let existed = api
        .get_opt(ns)
        .await
        .map_err(|source| k::KubeError::Api {
            what: format!("get namespace {ns} in {}", c.name),
            source,
        })?
        .is_some();
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": ns,
            "labels": labels.iter().map(|(a, b)| (a.clone(), serde_json::Value::String(b.clone()))).collect::<serde_json::Map<_, _>>(),
            "annotations": annotations.iter().map(|(a, b)| (a.clone(), serde_json::Value::String(b.clone()))).collect::<serde_json::Map<_, _>>(),
        }
    });
    c.applier.apply_values(vec![doc], None).await?;
    if !existed {
        ctx.with_facts(|f| f.created_namespaces.push((c.name.clone(), ns.to_string())));
    }
    Ok(())
}

async fn plug_cacerts(
    ctx: &Arc<RunContext>,
    cluster: &ClusterName,
    log: &StepLogger,
) -> Result<(), StepError> {
    let c = ctx.cluster(cluster)?;
    let root = ctx
        .root
        .get_or_try_init(|| async { SharedRoot::generate().map(Arc::new) })
        .await
        .map_err(|e| StepError::infra(e.to_string()))?
        .clone();
    let bundle = root
        .intermediate(cluster.as_str())
        .map_err(|e| StepError::infra(e.to_string()))?;
    let dir = ctx.run_dir().join("certs").join(cluster.as_str());
    for (name, body) in bundle.secret_data() {
        write_private(&dir.join(&name), &body)?;
    }
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cacerts", "namespace": "istio-system"},
        "type": "Opaque",
        "stringData": bundle.secret_data(),
    });
    c.applier.apply_values(vec![secret], Some("istio-system")).await?;
    log.log(format!("Secret istio-system/cacerts in {cluster}: intermediate CA for {cluster} under the shared root (keys not logged)"));
    Ok(())
}

async fn remote_secret(
    ctx: &Arc<RunContext>,
    (from, build): (&ClusterName, &Option<String>),
    into: &ClusterName,
    kubeconfig: Option<&str>,
    log: &StepLogger,
    props: &mut Props,
) -> Result<(), StepError> {
    let src = ctx.cluster(from)?;
    let dst = ctx.cluster(into)?;
    // The in-mesh view when the provider wrote one (kind: the API server at the node address), else the run's.
    let source = kubeconfig
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| src.kubeconfig.clone());
    let cmd = ctx.istioctl_of(build)?.create_remote_secret(
        ctx.variant.remote_secret_words(),
        &source,
        &src.context,
        from.as_str(),
        &[],
    );
    // stdout is a Secret holding a bearer token: parsed and applied, never logged.
    let out = cmd.run().await?;
    let docs = parse_documents(&out.stdout).map_err(|e| {
        StepError::infra(format!(
            "istioctl create-remote-secret printed something that is not YAML: {e}"
        ))
    })?;
    let names: Vec<String> = docs
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    if names.is_empty() {
        return Err(StepError::infra(
            "istioctl create-remote-secret printed no Secret",
        ));
    }
    dst.applier.apply_values(docs, Some("istio-system")).await?;
    ctx.with_facts(|f| f.last_secret = Some(Instant::now()));
    log.log(format!(
        "applied Secret istio-system/{} into {into} (content not logged)",
        names.join(", ")
    ));
    props.insert("secret".into(), names.join(","));
    Ok(())
}

/// The isolation probe's verdict on curl's exit code and output: `Ok` when no workload answered (with what curl
/// said), `Err` naming the answer when one did. An HTTP error from a proxy in between is no answer of the pod's.
fn isolation_verdict(exit_code: i32, stdout: &str, stderr: &str) -> (Result<(), String>, String) {
    let said = |s: &str| s.lines().next().unwrap_or_default().trim().to_string();
    if exit_code == 0 && stdout.contains("Hello version") {
        let answer = said(stdout);
        return (Err(answer.clone()), format!("answered: {answer}"));
    }
    let why = match (exit_code, said(stderr)) {
        (0, _) => format!("no workload answered: {}", said(stdout)),
        (code, e) if e.is_empty() => format!("curl exit {code}"),
        (code, e) => format!("curl exit {code}: {e}"),
    };
    (Ok(()), why)
}

/// Uninstall only an Istio this run installed: the snapshot before the run must exist and hold none.
fn only_istio_the_run_installed(ctx: &RunContext, cluster: &ClusterName) -> Result<(), StepError> {
    match ctx.with_facts(|f| f.baseline.get(cluster).map(|b| b.holds_istio())) {
        None => Err(StepError::infra(format!(
            "no snapshot of {cluster} from before the run: not uninstalling an Istio meshconf cannot prove it \
             installed"
        ))),
        Some(true) => Err(StepError::infra(format!(
            "{cluster} held Istio before the run (istio-system or an Istio CRD): meshconf does not uninstall what \
             it did not install; remove it yourself"
        ))),
        Some(false) => Ok(()),
    }
}

/// The provider's helm and Istio charts.
fn helm(ctx: &RunContext) -> Result<crate::tools::Helm, StepError> {
    ctx.provider.helm().ok_or_else(|| {
        StepError::infra(
            "the Helm install method needs helm and the Istio charts beside the other tools: run `make tools` \
             (tools/build.sh builds both)",
        )
    })
}

/// The addresses of one other network as a run found them: its east-west gateways' and its HelloWorld pods'.
#[derive(Debug, Clone, Default)]
struct PeerAddrs {
    gateways: Vec<(ClusterName, String)>,
    pods: Vec<(ClusterName, String)>,
}

/// The gateway-path verdict on the endpoints `from`'s proxy holds: `Ok` with what each other network's
/// endpoints are when each is reached through its gateways only, `Err` naming the endpoint given directly or the
/// network with no gateway endpoint.
fn gateway_path_verdict(
    from: &ClusterName,
    eps: &[EndpointFact],
    nets: &BTreeMap<String, PeerAddrs>,
) -> Result<String, String> {
    let listed = || {
        eps.iter()
            .map(|e| format!("{}:{}", e.address, e.port))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut seen = Vec::new();
    let mut claimed = 0;
    for (net, p) in nets {
        if let Some((c, ip)) = p.pods.iter().find(|(_, ip)| eps.iter().any(|e| &e.address == ip)) {
            return Err(format!(
                "{from}'s proxy was given {c}'s HelloWorld pod {ip} ({net}) directly, not {net}'s east-west \
                 gateway: istiod does not see {c} on another network (endpoints: {})",
                listed()
            ));
        }
        let at: Vec<String> = p
            .gateways
            .iter()
            .flat_map(|(c, ip)| {
                eps.iter()
                    .filter(move |e| &e.address == ip && e.port == crate::mesh::GATEWAY_PORT)
                    .map(move |e| format!("{c}'s gateway {}:{}", e.address, e.port))
            })
            .collect();
        if at.is_empty() {
            let gws: Vec<String> = p.gateways.iter().map(|(c, ip)| format!("{c} {ip}")).collect();
            return Err(format!(
                "{from}'s proxy holds no endpoint at {net}'s east-west gateway ({}); endpoints: {}",
                if gws.is_empty() {
                    "none installed".to_string()
                } else {
                    gws.join(", ")
                },
                if eps.is_empty() {
                    "none".to_string()
                } else {
                    listed()
                }
            ));
        }
        claimed += at.len();
        seen.push(format!("{net} via {}", at.join(", ")));
    }
    seen.push(format!("{} endpoint(s) of its own network", eps.len() - claimed));
    Ok(seen.join("; "))
}

/// A Running pod matching `selector`: its name and IP.
async fn running_pod(
    c: &ClusterAccess,
    ns: &str,
    selector: &str,
) -> Result<(String, Option<String>), StepError> {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let l = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|source| k::KubeError::Api {
            what: format!("list pods -l {selector} in {}/{ns}", c.name),
            source,
        })?;
    l.items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .find_map(|p| {
            let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
            p.metadata.name.map(|n| (n, ip))
        })
        .ok_or_else(|| StepError::infra(format!("no running pod -l {selector} in {}/{ns}", c.name)))
}

/// Which cluster runs each HelloWorld pod, read from every cluster's API.
pub(super) async fn attribution(ctx: &RunContext, ns: &str) -> Result<verify::Attribution, StepError> {
    let mut m = verify::Attribution::new();
    for c in ctx.all_clusters() {
        let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
        let l = pods
            .list(&ListParams::default().labels("app=helloworld"))
            .await
            .map_err(|source| k::KubeError::Api {
                what: format!("list helloworld pods in {}", c.name),
                source,
            })?;
        for p in l.items {
            if let Some(n) = p.metadata.name {
                m.insert(n, c.name.clone());
            }
        }
    }
    Ok(m)
}

async fn batch(
    c: &ClusterAccess,
    ns: &str,
    pod: &str,
    container: &str,
    target: &str,
    n: u32,
) -> Result<Vec<Answer>, StepError> {
    let mut argv = vec!["curl".to_string(), "-sS".to_string()];
    argv.extend((0..n).map(|_| target.to_string()));
    let out = k::exec(&c.client, ns, pod, container, &argv, Duration::from_secs(60)).await?;
    let mut answers = verify::parse_answers(&out.stdout);
    if out.exit_code != 0 {
        let err = out.stderr.lines().next().unwrap_or("").trim().to_string();
        answers.push(Answer::Other {
            text: format!("curl exit {}: {err}", out.exit_code),
        });
    }
    Ok(answers)
}

/// The real probe: curl in the client pod through exec (on the rehearsal the stand-in answers inside that exec),
/// attribution from every cluster's API.
struct ExecProbe<'a> {
    ctx: &'a RunContext,
    cluster: ClusterAccess,
    ns: &'a str,
    pod: String,
    app: &'static str,
    target: String,
}

impl verify::Probe for ExecProbe<'_> {
    fn batch(&self, n: u32) -> futures::future::BoxFuture<'_, Result<Vec<Answer>, verify::ProbeError>> {
        Box::pin(async move {
            batch(&self.cluster, self.ns, &self.pod, self.app, &self.target, n)
                .await
                .map_err(|e| verify::ProbeError(e.message))
        })
    }

    fn attribution(&self) -> futures::future::BoxFuture<'_, Result<verify::Attribution, verify::ProbeError>> {
        Box::pin(async move {
            attribution(self.ctx, self.ns)
                .await
                .map_err(|e| verify::ProbeError(e.message))
        })
    }
}

async fn check_traffic(
    ctx: &Arc<RunContext>,
    t: &TrafficCheck,
    pod: String,
    log: &StepLogger,
) -> Result<Props, StepError> {
    let (from, ns, requests) = (&t.from, t.namespace.as_str(), t.requests);
    let c = ctx.cluster(from)?;
    let app = ctx.variant.client.name();
    let target = curl_target(&t.url).to_string();
    let probe = ExecProbe {
        ctx,
        cluster: c,
        ns,
        pod: pod.clone(),
        app,
        target: target.clone(),
    };
    let spec = verify::CheckSpec {
        from: from.clone(),
        expect: t.expect.clone(),
        through_gateways: t.through_gateways.clone(),
        requests,
        batch: BATCH,
        convergence_timeout: ctx.opts.convergence_timeout,
        poll: Duration::from_millis(500),
    };
    let since = ctx.with_facts(|f| f.last_secret);
    let record = verify::run_check(&probe, &spec, since, &|l| log.log(l))
        .await
        .map_err(|e| StepError::infra(e.0))?;
    // JUnit's view: properties. The other reporters read the typed record.
    let v = &record.verdict;
    let mut props = Props::new();
    props.insert(
        "convergence-attempts".into(),
        record.convergence.attempts.to_string(),
    );
    if let Some(secs) = record.convergence.first_cross_cluster_seconds {
        props.insert("convergence-seconds".into(), format!("{secs:.1}"));
    }
    props.insert("requests".into(), requests.to_string());
    for (k, n) in &v.counts {
        props.insert(format!("count/{k}"), n.to_string());
    }
    for (k, n) in &v.errors {
        props.insert(format!("error/{k}"), n.to_string());
    }
    for (k, n) in &v.instances {
        props.insert(format!("answered-by/{k}"), n.to_string());
    }
    if let Some(p) = v.p_value {
        props.insert("p-value".into(), format!("{p:.4}"));
    }
    props.insert("alpha".into(), format!("{:e}", verify::ALPHA));
    let passed = v.passed();
    let problems = v.problems.join("; ");
    log.check(record);
    if passed {
        Ok(props)
    } else {
        let mut e = StepError::conformance(problems);
        e.command = Some(format!(
            "kubectl exec -n {ns} -c {app} {pod} -- curl -sS {target} (×{requests}, in batches of {BATCH})"
        ));
        e.properties = props;
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::{BTreeMap, EndpointFact, PeerAddrs, gateway_path_verdict, isolation_verdict};
    use crate::scenario::ClusterName;

    fn ep(address: &str, port: u32) -> EndpointFact {
        EndpointFact {
            address: address.into(),
            port,
            health: "HEALTHY".into(),
            cluster: None,
        }
    }

    #[test]
    fn the_gateway_path_holds_only_when_other_networks_are_behind_their_gateways() {
        let c = |s: &str| ClusterName::new(s);
        let nets = BTreeMap::from([(
            "network2".to_string(),
            PeerAddrs {
                gateways: vec![(c("cluster2"), "172.18.255.210".into())],
                pods: vec![(c("cluster2"), "10.20.1.7".into())],
            },
        )]);
        let from = c("cluster1");
        // The guide's view: the local pod directly, the other network at its gateway on 15443.
        let good = [ep("10.10.1.5", 5000), ep("172.18.255.210", 15443)];
        assert_eq!(
            gateway_path_verdict(&from, &good, &nets),
            Ok(
                "network2 via cluster2's gateway 172.18.255.210:15443; 1 endpoint(s) of its own network"
                    .into()
            )
        );
        // Without the network label istiod hands out the remote pod itself.
        let direct = [ep("10.10.1.5", 5000), ep("10.20.1.7", 5000)];
        let e = gateway_path_verdict(&from, &direct, &nets).unwrap_err();
        assert!(
            e.contains("cluster2's HelloWorld pod 10.20.1.7 (network2) directly"),
            "{e}"
        );
        // No endpoint at the gateway (services not exposed, gateway without address): named with what there is.
        let none = [ep("10.10.1.5", 5000)];
        let e = gateway_path_verdict(&from, &none, &nets).unwrap_err();
        assert!(
            e.contains("no endpoint at network2's east-west gateway (cluster2 172.18.255.210)"),
            "{e}"
        );
        assert!(e.ends_with("endpoints: 10.10.1.5:5000"), "{e}");
        // The gateway's address on another port is not the passthrough path.
        let port = [ep("172.18.255.210", 15021)];
        assert!(gateway_path_verdict(&from, &port, &nets).is_err());
    }

    #[test]
    fn the_isolation_probe_passes_only_when_no_workload_answers() {
        // What curl sees without a route: a timeout, or the sidecar's own 503 for the unreachable original address.
        let (timeout, said) = isolation_verdict(
            28,
            "",
            "curl: (28) Connection timed out after 5001 milliseconds\n",
        );
        assert!(timeout.is_ok());
        assert_eq!(
            said,
            "curl exit 28: curl: (28) Connection timed out after 5001 milliseconds"
        );
        let (proxy, said) =
            isolation_verdict(0, "upstream connect error or disconnect/reset before headers", "");
        assert!(proxy.is_ok(), "{said}");
        // With a route the pod answers: the networks are not isolated, and the probe says so.
        let (routed, said) = isolation_verdict(0, "Hello version: v2, instance: helloworld-v2-abc\n", "");
        assert_eq!(
            routed,
            Err("Hello version: v2, instance: helloworld-v2-abc".into())
        );
        assert!(said.starts_with("answered: "));
    }
}
