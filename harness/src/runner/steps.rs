//! What each plan action does against real clusters. The same code serves every provider.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams};

use super::context::{RunContext, StepError, StepLogger};
use crate::apps;
use crate::kube::{self as k, parse_documents};
use crate::mesh::{self, SharedRoot};
use crate::plan::{Action, PlannedStep, curl_target};
use crate::provider::ClusterAccess;
use crate::scenario::{AppVersion, ClusterName};
use crate::verify::{self, Answer};

/// Requests per exec: one curl invocation fetches this many URLs, saving exec round-trips.
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

pub(super) async fn run(
    s: &PlannedStep,
    ctx: &Arc<RunContext>,
    log: &StepLogger,
) -> Result<Props, StepError> {
    match &s.action {
        Action::CreateClusters { .. } => {
            let started = Instant::now();
            let clusters = ctx.provider.create(&ctx.scenario).await?;
            let mut m = ctx
                .clusters
                .lock()
                .map_err(|_| StepError::infra("cluster table poisoned"))?;
            for c in clusters {
                log.log(format!(
                    "{}: context {} in {}",
                    c.name,
                    c.context,
                    c.kubeconfig.display()
                ));
                m.insert(c.name.clone(), c);
            }
            Ok(Props::from([(
                "create-seconds".into(),
                format!("{:.1}", started.elapsed().as_secs_f64()),
            )]))
        }
        Action::ConnectNetworks { .. } => {
            let all = ctx.all_clusters();
            for l in ctx.provider.connect_networks(&ctx.scenario, &all).await? {
                log.log(l);
            }
            Ok(Props::new())
        }
        Action::LoadBalancers { cluster } => {
            let c = ctx.cluster(cluster)?;
            for l in ctx.provider.load_balancers(&ctx.scenario, &c).await? {
                log.log(l);
            }
            Ok(Props::new())
        }
        Action::PlugCaCerts { cluster } => plug_cacerts(ctx, cluster, log).await,
        Action::InstallIstio {
            cluster,
            file,
            operator,
            overlay,
        } => {
            let c = ctx.cluster(cluster)?;
            istioctl_install(ctx, &c, file, operator, overlay, log).await?;
            for l in ctx.provider.after_primary_install(&c).await? {
                log.log(l);
            }
            Ok(Props::new())
        }
        Action::EastwestGateway {
            cluster,
            file,
            operator,
            overlay,
            ..
        } => {
            let c = ctx.cluster(cluster)?;
            istioctl_install(ctx, &c, file, operator, overlay, log).await?;
            let started = Instant::now();
            let ip = k::wait_lb_address(
                &c.client,
                "istio-system",
                "istio-eastwestgateway",
                ctx.opts.lb_timeout,
            )
            .await?;
            log.log(format!(
                "istio-eastwestgateway EXTERNAL-IP {ip} after {:.1}s",
                started.elapsed().as_secs_f64()
            ));
            ctx.with_facts(|f| f.eastwest.insert(cluster.clone(), ip.to_string()));
            Ok(Props::from([("eastwest-address".into(), ip.to_string())]))
        }
        Action::ExposeIstiod { cluster, manifest } => {
            let c = ctx.cluster(cluster)?;
            for a in c.applier.apply_yaml(manifest, Some("istio-system")).await? {
                log.log(format!("applied {a}"));
            }
            Ok(Props::new())
        }
        Action::RemoteSecret { from, into } => remote_secret(ctx, from, into, log).await,
        Action::InstallRemote {
            cluster,
            primary,
            file,
            overlay,
            ..
        } => {
            let c = ctx.cluster(cluster)?;
            let p = ctx.cluster(primary)?;
            ensure_namespace(
                ctx,
                &c,
                "istio-system",
                &[],
                &[("topology.istio.io/controlPlaneClusters", primary.as_str())],
            )
            .await?;
            log.log(format!(
                "annotated {cluster}/istio-system topology.istio.io/controlPlaneClusters={primary}"
            ));
            let known = ctx.with_facts(|f| f.eastwest.get(primary).cloned());
            let address = match known {
                Some(a) => a,
                None => k::wait_lb_address(
                    &p.client,
                    "istio-system",
                    "istio-eastwestgateway",
                    ctx.opts.lb_timeout,
                )
                .await?
                .to_string(),
            };
            log.log(format!("DISCOVERY_ADDRESS={address}"));
            let cl = ctx
                .scenario
                .cluster(cluster)
                .ok_or_else(|| StepError::infra(format!("unknown cluster {cluster}")))?;
            let operator = mesh::remote_operator(
                &ctx.scenario.mesh_id,
                cluster,
                &cl.network,
                &address,
                &ctx.variant,
            );
            istioctl_install(ctx, &c, file, &operator, overlay, log).await?;
            for l in ctx.provider.after_remote_install(&c, &p).await? {
                log.log(l);
            }
            Ok(Props::from([("discovery-address".into(), address)]))
        }
        Action::DeployApps {
            cluster,
            namespace,
            injection,
            versions,
            client,
        } => {
            deploy_apps(
                ctx,
                cluster,
                namespace.as_str(),
                *injection,
                versions,
                *client,
                log,
            )
            .await
        }
        Action::CheckTraffic {
            from,
            namespace,
            url,
            expect,
            requests,
        } => check_traffic(ctx, from, namespace.as_str(), url, expect, *requests, log).await,
    }
}

/// Writes the operator file to the run directory and runs `istioctl install -f` on it with the provider overlay.
async fn istioctl_install(
    ctx: &RunContext,
    c: &ClusterAccess,
    file: &str,
    operator: &str,
    overlay: &crate::mesh::InstallOverlay,
    log: &StepLogger,
) -> Result<(), StepError> {
    let path = ctx.run_dir().join(file);
    write_private(&path, operator)?;
    let out = ctx
        .istioctl
        .install(&c.kubeconfig, &c.context, &path, &overlay.args())
        .run()
        .await?;
    log.log(format!("istioctl install -f {file}: {}", last_line(&out.stdout)));
    Ok(())
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
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
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
            "labels": labels.iter().map(|(a, b)| (a.to_string(), serde_json::Value::String(b.to_string()))).collect::<serde_json::Map<_, _>>(),
            "annotations": annotations.iter().map(|(a, b)| (a.to_string(), serde_json::Value::String(b.to_string()))).collect::<serde_json::Map<_, _>>(),
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
) -> Result<Props, StepError> {
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
    ensure_namespace(ctx, &c, "istio-system", &[], &[]).await?;
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cacerts", "namespace": "istio-system"},
        "type": "Opaque",
        "stringData": bundle.secret_data(),
    });
    c.applier.apply_values(vec![secret], Some("istio-system")).await?;
    log.log(format!("Secret istio-system/cacerts in {cluster}: intermediate CA for {cluster} under the shared root (keys not logged)"));
    Ok(Props::new())
}

async fn remote_secret(
    ctx: &Arc<RunContext>,
    from: &ClusterName,
    into: &ClusterName,
    log: &StepLogger,
) -> Result<Props, StepError> {
    let src = ctx.cluster(from)?;
    let dst = ctx.cluster(into)?;
    let source = ctx.provider.remote_secret_source(&src).await?;
    let cmd = ctx.istioctl.create_remote_secret(
        ctx.variant.remote_secret_words(),
        &source.kubeconfig,
        &source.context,
        from.as_str(),
        &source.flags,
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
    Ok(Props::from([("secret".into(), names.join(","))]))
}

async fn deploy_apps(
    ctx: &Arc<RunContext>,
    cluster: &ClusterName,
    ns: &str,
    injection: bool,
    versions: &[AppVersion],
    client: bool,
    log: &StepLogger,
) -> Result<Props, StepError> {
    let c = ctx.cluster(cluster)?;
    let labels: Vec<(&str, &str)> = if injection {
        vec![("istio-injection", "enabled")]
    } else {
        Vec::new()
    };
    ensure_namespace(ctx, &c, ns, &labels, &[]).await?;
    let all_versions: Vec<&str> = vec!["v1", "v2"];
    let hw_text = apps::helloworld_yaml(&ctx.variant, &all_versions);
    let client_text = apps::client_yaml(&ctx.variant);
    write_private(&ctx.run_dir().join(apps::HELLOWORLD_PATH), &hw_text)?;
    write_private(
        &ctx.run_dir().join(apps::client_path(ctx.variant.client)),
        &client_text,
    )?;
    let mut hw = parse_documents(&hw_text)?;
    for v in versions {
        if !all_versions.contains(&v.as_str()) {
            hw.extend(
                parse_documents(&apps::helloworld_yaml(&ctx.variant, &[v.as_str()]))?
                    .into_iter()
                    .skip(1),
            );
        }
    }
    let sel = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    let mut applied = c
        .applier
        .apply_values(
            apps::select_documents(&hw, &sel("service", "helloworld")),
            Some(ns),
        )
        .await?;
    for v in versions {
        applied.extend(
            c.applier
                .apply_values(apps::select_documents(&hw, &sel("version", v.as_str())), Some(ns))
                .await?,
        );
    }
    if client {
        applied.extend(c.applier.apply_yaml(&client_text, Some(ns)).await?);
    }
    for a in &applied {
        log.log(format!("applied {a}"));
    }
    // The guide expects 2/2 (app + istio-proxy) whatever the namespace says: a pod without its sidecar fails.
    let want = 2;
    let mut waits = Vec::new();
    for v in versions {
        waits.push(format!("app=helloworld,version={v}"));
    }
    if client {
        waits.push(format!("app={}", ctx.variant.client.name()));
    }
    let started = Instant::now();
    let checks = waits
        .iter()
        .map(|sel| k::wait_pods_ready(&c.client, ns, sel, want, Duration::from_secs(300)));
    // A ReplicaSet that keeps failing to create pods (its injection webhook is down) fails the step with the
    // controller's own message instead of a 300 s timeout that says only "no matching pods".
    // Where sidecars are real, an istiod that stays down (the control plane of this cluster) fails the step with
    // that cause instead of a timeout on pods whose proxies wait for it.
    let control_plane = ctx
        .scenario
        .cluster(cluster)
        .and_then(|sc| sc.primary.clone())
        .unwrap_or_else(|| cluster.clone());
    let real_proxies = ctx.provider.profile(&ctx.scenario).dataplane != crate::plan::DataPlane::Computed;
    let istiod_watch = async {
        match (real_proxies, ctx.cluster(&control_plane)) {
            (true, Ok(cp)) => {
                k::istiod_down(&cp.client, control_plane.as_str(), Duration::from_secs(30)).await
            }
            _ => std::future::pending().await,
        }
    };
    let results = tokio::select! {
        r = futures::future::join_all(checks) => r,
        e = k::persistent_create_failure(&c.client, ns, Duration::from_secs(30)) => return Err(e.into()),
        e = istiod_watch => return Err(e.into()),
    };
    let mut props = Props::new();
    for (sel, r) in waits.iter().zip(results) {
        let ready = r?;
        for (name, r, t) in ready.pods {
            log.log(format!("pod {name} {r}/{t} Running ({sel})"));
            props.insert(format!("pod/{name}"), format!("{r}/{t}"));
        }
    }
    props.insert(
        "ready-seconds".into(),
        format!("{:.1}", started.elapsed().as_secs_f64()),
    );
    Ok(props)
}

async fn client_pod(c: &ClusterAccess, ns: &str, app: &str) -> Result<String, StepError> {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let l = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map_err(|source| k::KubeError::Api {
            what: format!("list pods -l app={app} in {}/{ns}", c.name),
            source,
        })?;
    l.items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .find_map(|p| p.metadata.name)
        .ok_or_else(|| StepError::infra(format!("no running {app} pod in {}/{ns}", c.name)))
}

/// Which cluster runs each HelloWorld pod, read from every cluster's API.
async fn attribution(ctx: &RunContext, ns: &str) -> Result<verify::Attribution, StepError> {
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
    from: &ClusterName,
    ns: &str,
    url: &str,
    expect: &BTreeMap<AppVersion, std::collections::BTreeSet<ClusterName>>,
    requests: u32,
    log: &StepLogger,
) -> Result<Props, StepError> {
    let c = ctx.cluster(from)?;
    let app = ctx.variant.client.name();
    let pod = client_pod(&c, ns, app).await?;
    let target = curl_target(url).to_string();
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
        expect: expect.clone(),
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
