//! Renders typed actions as the shell commands a person following the guide would type: same contexts, files and
//! flags. The one renderer: `meshconf plan` uses it with nothing bound, a run's transcript with the values bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::action::*;
use super::types::*;
use crate::mesh::Variant;
use crate::scenario::ClusterName;
use crate::tools::{Docker, Kind};

/// The guide's context variable for a cluster: `cluster1` → `CTX_CLUSTER1`.
pub fn ctx_var(c: &ClusterName) -> String {
    format!("CTX_{}", upper(c))
}

fn ctx(c: &ClusterName) -> String {
    format!("--context=\"${{{}}}\"", ctx_var(c))
}

/// Strips the scheme: the guide writes `curl helloworld.sample:5000/hello`.
pub fn curl_target(url: &str) -> &str {
    url.strip_prefix("http://").unwrap_or(url)
}

fn heredoc(o: &mut Vec<String>, head: &str, body: &str) {
    o.push(format!("{head} <<EOF"));
    o.extend(body.lines().map(str::to_string));
    o.push("EOF".into());
}

/// The lines before the first step: the context variables the guide exports.
pub fn preamble(plan: &Plan) -> Vec<String> {
    plan.provider
        .contexts
        .iter()
        .map(|(c, context)| format!("export {}={}", ctx_var(c), context))
        .collect()
}

/// Renders the whole plan.
pub fn render_shell(plan: &Plan) -> String {
    let mut o = String::new();
    let p = &plan.provider;
    let _ = writeln!(
        o,
        "# meshconf plan: {} (guide: \"{}\")",
        plan.scenario, plan.guide
    );
    let _ = writeln!(
        o,
        "# provider: {}, data plane: {}",
        p.kind.as_str(),
        p.dataplane.as_str()
    );
    let _ = writeln!(o, "# variant: {}", plan.variant.describe());
    for n in &p.notes {
        let _ = writeln!(o, "# note: {n}");
    }
    o.push('\n');
    for l in preamble(plan) {
        let _ = writeln!(o, "{l}");
    }
    let none = Bindings::new();
    for (i, stage) in plan.stages.iter().enumerate() {
        let parallel = if stage.steps.len() > 1 {
            " (steps run in parallel)"
        } else {
            ""
        };
        let _ = writeln!(o, "\n# ── stage {}{parallel}", i + 1);
        for s in &stage.steps {
            let _ = writeln!(o, "\n{}", step_header(s));
            for a in &s.actions {
                for l in action_lines(a, &plan.variant, &none) {
                    let _ = writeln!(o, "{l}");
                }
            }
        }
    }
    for stage in &plan.reset {
        let _ = writeln!(
            o,
            "\n# ── reset (always, also after a failure: the clusters outlive the run)"
        );
        for s in &stage.steps {
            let _ = writeln!(o, "\n{}", step_header(s));
            for a in &s.actions {
                for l in action_lines(a, &plan.variant, &none) {
                    let _ = writeln!(o, "{l}");
                }
            }
        }
    }
    if !p.delete_commands.is_empty() {
        let _ = writeln!(o, "\n# ── cleanup (also on failure or interrupt, unless --keep)");
        for c in &p.delete_commands {
            let _ = writeln!(o, "{c}");
        }
    }
    o
}

/// `# [id] title`: the line that opens a step in plans and transcripts.
pub fn step_header(s: &PlannedStep) -> String {
    format!("# [{}] {}", s.id, s.title)
}

/// The shell lines of one action, with the bound placeholders filled in.
pub fn action_lines(a: &Action, v: &Variant, b: &Bindings) -> Vec<String> {
    let mut o = Vec::new();
    match a {
        Action::Note { text } => o.push(format!("# {text}")),
        Action::Namespace {
            cluster,
            name,
            labels,
            annotations,
        } => {
            let c = ctx(cluster);
            o.push(format!("kubectl create {c} namespace {name}"));
            o.extend(labels.iter().map(|l| format!("kubectl label {c} namespace {name} {l}")));
            o.extend(
                annotations
                    .iter()
                    .map(|l| format!("kubectl annotate {c} namespace {name} {l}")),
            );
        }
        Action::LabelNamespace {
            cluster,
            name,
            label,
        } => {
            let c = ctx(cluster);
            o.push(format!(
                "kubectl {c} get namespace {name} && kubectl {c} label namespace {name} {label}"
            ));
        }
        Action::CaCerts { cluster } => o.push(format!(
            "kubectl create {} secret generic cacerts -n istio-system --from-file=certs/{cluster}/ca-cert.pem \
             --from-file=certs/{cluster}/ca-key.pem --from-file=certs/{cluster}/root-cert.pem \
             --from-file=certs/{cluster}/cert-chain.pem",
            ctx(cluster)
        )),
        Action::WriteFile { file, body } => {
            o.push(format!("cat <<EOF > {file}"));
            o.extend(body.lines().map(str::to_string));
            o.push("EOF".into());
        }
        Action::IstioctlInstall {
            cluster,
            build,
            file,
            source,
            overlay,
        } => {
            if let Some(r) = &overlay.reason {
                o.push(format!("# overlay: {r}"));
            }
            let sets = overlay.shell_suffix();
            let istioctl = istioctl_word(build);
            match source {
                OperatorSource::File => {
                    o.push(format!("{istioctl} install {} -f {file} -y{sets}", ctx(cluster)))
                }
                OperatorSource::Script { script, .. } => {
                    o.push(format!(
                        "# meshconf writes the operator this script prints to {file} and installs that"
                    ));
                    o.push(format!("{script} | {istioctl} {} install -y -f -{sets}", ctx(cluster)));
                }
            }
        }
        Action::Apply {
            cluster,
            namespace,
            manifest,
            selector,
        } => {
            let mut line = format!("kubectl apply {} -f {}", ctx(cluster), manifest.path(v));
            if let Some(l) = selector {
                let _ = write!(line, " -l {l}");
            }
            if let Some(ns) = namespace {
                let _ = write!(line, " -n {ns}");
            }
            o.push(line);
        }
        Action::RemoteSecret {
            from,
            build,
            into,
            kubeconfig,
        } => {
            let mut line = format!(
                "{} {} {} --name={from}",
                istioctl_word(build),
                v.remote_secret_words().join(" "),
                ctx(from)
            );
            if let Some(k) = kubeconfig {
                let _ = write!(line, " --kubeconfig=\"{k}\"");
            }
            o.push(format!("{line} | kubectl apply -f - {}", ctx(into)));
        }
        Action::Wait {
            cluster,
            until,
            deadline_secs: d,
        } => wait_lines(&mut o, cluster, until, *d),
        Action::Capture {
            cluster,
            reading,
            into,
            deadline_secs: d,
        } => match reading {
            Reading::LbAddress { namespace, service } => {
                o.push(format!(
                    "# meshconf polls until the address is an IP, never <pending> (deadline {d}s)"
                ));
                o.push(format!("kubectl {} get svc {service} -n {namespace}", ctx(cluster)));
                o.push(format!(
                    "export {}=$(kubectl {} -n {namespace} get svc {service} -o \
                     jsonpath='{{.status.loadBalancer.ingress[0].ip}}')",
                    into.0,
                    ctx(cluster)
                ));
            }
            Reading::PodName {
                namespace,
                selector,
            } => o.push(format!(
                "export {}=$(kubectl get pod {} -n {namespace} -l {selector} -o \
                 jsonpath='{{.items[0].metadata.name}}')",
                into.0,
                ctx(cluster)
            )),
            Reading::PodIp {
                namespace,
                selector,
            } => o.push(format!(
                "export {}=$(kubectl get pod {} -n {namespace} -l {selector} -o \
                 jsonpath='{{.items[0].status.podIP}}')",
                into.0,
                ctx(cluster)
            )),
        },
        Action::Snapshot { cluster } => {
            o.push(format!(
                "kubectl get {} {SNAPSHOT_KINDS} -o name | sort > before-{cluster}.txt   # and every object of an Istio \
                 API group, in every namespace",
                ctx(cluster)
            ));
        }
        Action::HelmInstall {
            cluster,
            release,
            chart,
            namespace,
            sets,
            overlay,
        } => {
            if let Some(r) = overlay.reason.as_ref().filter(|_| !overlay.sets.is_empty()) {
                o.push(format!("# overlay: {r}"));
            }
            let guide: String = sets.iter().map(|(k, v)| format!(" --set {k}={v}")).collect();
            o.push(format!(
                "helm install {release} \"{}/{}\" -n {namespace} --kube-context=\"${{{}}}\"{guide}{}  # {}",
                Placeholder::istio_charts().shell(),
                chart.dir(),
                ctx_var(cluster),
                overlay.shell_suffix(),
                chart.guide_name()
            ));
        }
        Action::HelmUninstall {
            cluster,
            releases,
            namespace,
        } => {
            for r in releases {
                o.push(format!(
                    "helm uninstall {r} -n {namespace} --kube-context=\"${{{}}}\" --ignore-not-found",
                    ctx_var(cluster)
                ));
            }
            o.push("# helm keeps the base chart's CRDs; Istio's Helm uninstall steps delete them (until gone)".into());
            o.push(format!(
                "kubectl get crd -oname {} | grep --color=never 'istio.io' | xargs kubectl delete {}",
                ctx(cluster),
                ctx(cluster)
            ));
        }
        Action::IstioctlUninstall {
            cluster,
            build,
            revision,
        } => {
            let what = revision
                .as_ref()
                .map_or("--purge".to_string(), |r| format!("--revision {r}"));
            o.push(format!("{} uninstall {} {what} -y", istioctl_word(build), ctx(cluster)));
        }
        Action::TrafficPhase {
            cluster,
            namespace,
            phase,
            dwell_secs,
        } => {
            o.push(format!(
                "kubectl exec {} -n {namespace} deploy/{g} -c {g} -- {g} phase {phase}",
                ctx(cluster),
                g = crate::apps::LOADGEN
            ));
            if *dwell_secs > 0 {
                o.push(format!("sleep {dwell_secs}  # traffic under '{phase}' before the next change"));
            }
        }
        Action::WaitInjected {
            cluster,
            namespace,
            selector,
            revision,
            deadline_secs,
        } => {
            o.push(format!(
                "kubectl get pods {} -n {namespace} -l {selector} -o jsonpath='{{..containers[?(@.name==\"istio-proxy\")].image}}'",
                ctx(cluster)
            ));
            o.push(format!(
                "# meshconf waits (deadline {deadline_secs}s) until each is Ready, its sidecar.istio.io/status names \
                 revision {revision} and its istio-proxy runs the image that revision's injector names"
            ));
        }
        Action::CheckProxies {
            cluster,
            namespace,
            build,
        } => {
            o.push(format!(
                "kubectl get pods {} -n {namespace} -o jsonpath='{{..containers[?(@.name==\"istio-proxy\")].image}}'  # each tag names {build}",
                ctx(cluster)
            ));
        }
        Action::RestartWorkloads {
            cluster,
            namespace,
            restart,
            revision,
            injector,
            deadline_secs,
        } => {
            let not_gen = format!("app!={}", crate::apps::LOADGEN);
            match restart {
                crate::scenario::Restart::Rolling => {
                    o.push(format!(
                        "# one Deployment at a time, each rolled out before the next (deadline {deadline_secs}s)"
                    ));
                    o.push(format!(
                        "kubectl rollout restart deployment {} -n {namespace} -l '{not_gen}'",
                        ctx(cluster)
                    ));
                }
                crate::scenario::Restart::AllAtOnce => {
                    o.push("# every pod at once (restart: all-at-once): breaks traffic on purpose".into());
                    o.push(format!(
                        "kubectl delete pod {} -n {namespace} -l '{not_gen}' --wait=false",
                        ctx(cluster)
                    ));
                }
            }
            o.push(format!(
                "# meshconf waits until every pod but the generator is Ready, its sidecar.istio.io/status \
                 names revision {revision} and its istio-proxy runs the image that revision's injector{} names",
                if injector == cluster {
                    String::new()
                } else {
                    format!(" (in {injector}, whose istiod injects {cluster}'s pods)")
                }
            ));
        }
        Action::CheckLiveTraffic(l) => {
            let g = crate::apps::LOADGEN;
            o.push(format!(
                "kubectl exec {} -n {} deploy/{g} -c {g} -- {g} stop",
                ctx(&l.from),
                l.namespace
            ));
            o.push(format!(
                "# meshconf reads every phase's counts and fails on any failed request (zero tolerance), or on a \
                 phase where {} did not answer",
                l.expect
                    .iter()
                    .map(|(v, cs)| format!(
                        "{v} from {}",
                        cs.iter().map(ClusterName::as_str).collect::<Vec<_>>().join(" and ")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            o.push(format!(
                "kubectl exec {} -n {} deploy/{g} -c {g} -- {g} report",
                ctx(&l.from),
                l.namespace
            ));
        }
        Action::StopCreatedPods {
            cluster,
            deadline_secs,
        } => {
            let created = Placeholder::created_namespaces(cluster).shell();
            o.push(format!(
                "for ns in {created}; do kubectl delete {c} deployments,replicasets --all -n \"$ns\" --cascade=orphan; \
                 kubectl delete {c} pods --all -n \"$ns\" --grace-period=1 --wait=false; done   # only the namespaces \
                 this run created; first, so no pod keeps the 30 s grace an uninstall would give it (helloworld and a \
                 primary-remote istiod do not stop on SIGTERM)",
                c = ctx(cluster)
            ));
            o.push(format!(
                "kubectl wait {c} --for=delete pods --all -n <each of {created}> --timeout={deadline_secs}s   # past it \
                 the reset goes on",
                c = ctx(cluster)
            ));
        }
        Action::DeleteCreatedNamespaces {
            cluster,
            deadline_secs,
        } => {
            o.push(format!(
                "# only the namespaces this run created (never one that was there before), until gone (deadline \
                 {deadline_secs}s)"
            ));
            let created = Placeholder::created_namespaces(cluster).shell();
            o.push(format!(
                "kubectl delete {} namespace {created} --wait --timeout={deadline_secs}s",
                ctx(cluster),
            ));
        }
        Action::CleanState { cluster } => {
            o.push(format!(
                "kubectl get {} {SNAPSHOT_KINDS} -o name | sort > after-{cluster}.txt   # and the Istio objects again",
                ctx(cluster)
            ));
            o.push(format!(
                "comm -13 before-{cluster}.txt after-{cluster}.txt   # anything listed was left over: the run fails \
                 (infrastructure)"
            ));
        }
        Action::Provider(p) => provider_lines(&mut o, p),
        Action::CheckTraffic(t) => {
            let n = v.client.name();
            let exp: Vec<String> = t
                .expect
                .iter()
                .map(|(ver, cl)| {
                    let names: Vec<&str> = cl.iter().map(ClusterName::as_str).collect();
                    format!("{ver} from {}", names.join(" and "))
                })
                .collect();
            o.push(format!(
                "# meshconf sends {} requests in batches, attributes each answer to a pod and its cluster, \
                 and expects {}",
                t.requests,
                exp.join(", ")
            ));
            let mut nets: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (c, net) in &t.through_gateways {
                nets.entry(net.as_str()).or_default().push(c.as_str());
            }
            // With one cluster behind a network the bucket is that cluster's: nothing changes, nothing to say.
            for (net, cs) in nets.into_iter().filter(|(_, cs)| cs.len() > 1) {
                o.push(format!(
                    "# {net} ({}) is reached through its gateways, which pass whole connections to one pod: its \
                     share is judged as one, in proportion to its endpoints",
                    cs.join(", ")
                ));
            }
            o.push(format!(
                "kubectl exec {} -n {} -c {n} \"{}\" -- curl -sS {}",
                ctx(&t.from),
                t.namespace,
                Placeholder::client_pod(&t.from).shell(),
                curl_target(&t.url)
            ));
        }
        Action::ProbeIsolation(p) => {
            o.push(format!(
                "# must fail: {} has no route to the pods of {} (a reply means the networks are not isolated)",
                p.from_network, p.to_network
            ));
            o.push(format!(
                "kubectl exec {} -n {} -c {} \"{}\" -- curl -sS -m {} http://{}:{}{}",
                ctx(&p.from),
                p.namespace,
                v.client.name(),
                Placeholder::client_pod(&p.from).shell(),
                p.timeout_secs,
                Placeholder::helloworld_ip(&p.to).shell(),
                p.port,
                p.path
            ));
        }
        Action::CheckGatewayPath(g) => {
            for (net, peers) in &g.networks {
                let at: Vec<String> = peers
                    .gateways
                    .iter()
                    .map(|c| format!("{}:15443", Placeholder::eastwest_address(c).shell()))
                    .collect();
                let pods: Vec<String> = peers
                    .workloads
                    .iter()
                    .map(|c| Placeholder::helloworld_ip(c).shell())
                    .collect();
                o.push(format!(
                    "# {net}'s endpoints in {}'s proxy must be its east-west gateway ({}), never its pods ({})",
                    g.from,
                    at.join(", "),
                    pods.join(", ")
                ));
            }
            o.push(format!(
                "istioctl proxy-config endpoints {} \"{}.{}\" --cluster '{}' -o json",
                ctx(&g.from),
                Placeholder::client_pod(&g.from).shell(),
                g.namespace,
                g.envoy_cluster
            ));
        }
    }
    o.into_iter().map(|l| fill(&l, b)).collect()
}

fn wait_lines(o: &mut Vec<String>, cluster: &ClusterName, until: &Condition, d: u64) {
    let c = ctx(cluster);
    match until {
        Condition::ApiReady => o.push(format!(
            "kubectl {c} wait -n kube-system pod -l k8s-app=kube-dns --for=condition=Ready --timeout={d}s   \
             # and kube-proxy Ready, ServiceAccount default exists"
        )),
        Condition::Rollout {
            namespace,
            deployment,
        } => o.push(format!(
            "kubectl {c} rollout status deployment/{deployment} -n {namespace} --timeout={d}s"
        )),
        Condition::PodsReady {
            namespace,
            selectors,
            containers,
            control_plane,
        } => {
            // The guide's check, one line per app; meshconf waits on each workload's own selector.
            let mut apps: Vec<&str> = Vec::new();
            for s in selectors {
                let app = s.split(',').next().unwrap_or(s);
                if !apps.contains(&app) {
                    apps.push(app);
                }
            }
            for app in apps {
                o.push(format!("kubectl get pod {c} -n {namespace} -l {app}"));
            }
            let watch = control_plane
                .as_ref()
                .map(|cp| format!("; fails at once if the istiod of {cp} stays down"))
                .unwrap_or_default();
            o.push(format!(
                "# meshconf waits (deadline {d}s) until each of {} has its rollout current and pods \
                 {containers}/{containers} Ready{watch}",
                selectors.join(" ")
            ));
        }
        Condition::InjectorPatched { primary } => {
            o.push(format!(
                "# meshconf waits (deadline {d}s) until the istiod of {primary} patched the caBundle of the \
                 injection webhooks of {cluster}"
            ));
            o.push(format!(
                "kubectl {c} get mutatingwebhookconfigurations -o \
                 jsonpath='{{.items[*].webhooks[*].clientConfig.caBundle}}'"
            ));
        }
    }
}

/// What a snapshot lists, as `kubectl get` names it.
const SNAPSHOT_KINDS: &str = "namespaces,crds,mutatingwebhookconfigurations,validatingwebhookconfigurations,\
                              clusterroles,clusterrolebindings";

/// The kind CLI as plans show it (the provider runs the same builder with its binary and engine).
fn kind_cli(image: Option<String>) -> Kind {
    Kind {
        bin: "kind".into(),
        node_image: image,
        docker_host: None,
    }
}

fn docker_cli() -> Docker {
    Docker {
        bin: "docker".into(),
        docker_host: None,
    }
}

const NODE_IP_FORMAT: &str = "'{{.NetworkSettings.Networks.kind.IPAddress}}'";

fn pool_range(cluster: &ClusterName, pool: &PoolSpec) -> String {
    match pool {
        PoolSpec::TopOfKindNetwork { .. } => Placeholder::lb_pool(cluster).shell(),
        PoolSpec::Fixed { range } => range.clone(),
    }
}

fn provider_lines(o: &mut Vec<String>, p: &ProviderAction) {
    match p {
        ProviderAction::KindNetwork { subnet, bridge } => {
            o.push("# the kind network, when it does not exist yet".into());
            o.push(docker_cli().create_kind_network(&subnet.to_string()).display());
            o.push(format!(
                "iptables -I DOCKER-USER 1 -i {bridge} ! -o {bridge} -m comment --comment meshconf-egress -j DROP   \
                 # egress-packets: must stay 0"
            ));
        }
        ProviderAction::KindCreate {
            cluster,
            name,
            config,
            derived,
            kubeconfig,
            image,
        } => {
            if *derived {
                o.push(format!(
                    "# {config} = {} + kubeadmConfigPatches: KubeletConfiguration failCgroupV1: false",
                    cluster.kind_config.display()
                ));
            }
            o.push(
                kind_cli(image.clone())
                    .create(name, Path::new(config), Path::new(kubeconfig))
                    .display(),
            );
        }
        ProviderAction::KindLoadImages { name, images, .. } => {
            let list: Vec<&str> = images.iter().map(String::as_str).collect();
            o.push(kind_cli(None).load_images(name, &list).display());
        }
        ProviderAction::InMeshKubeconfig {
            cluster,
            name,
            file,
        } => {
            let ip = Placeholder::node_ip(cluster);
            o.push(format!(
                "export {}=$(docker inspect -f {NODE_IP_FORMAT} {name}-control-plane)",
                ip.0
            ));
            o.push(format!(
                "kind get kubeconfig --internal --name {name} | sed 's#https://{name}-control-plane:6443#https://'\"{}\"':6443#' > \"{file}\"",
                ip.shell()
            ));
        }
        ProviderAction::RehearsalRoute { from, to } => o.push(format!(
            "# rehearsal: pods of {from} reach the pods of {to} directly (one network; kind routes between the nodes)"
        )),
        ProviderAction::NodeRoute {
            on_node,
            destination,
            via,
            keep_source,
            ..
        } => {
            let d = destination.to_string();
            o.push(
                docker_cli()
                    .add_route(on_node, &d, &Placeholder::node_ip(via).shell())
                    .display(),
            );
            o.push(docker_cli().keep_source(on_node, &keep_source.to_string(), &d).display());
        }
        ProviderAction::MetalLb {
            cluster,
            manifest,
            pool,
            names,
        } => {
            let c = ctx(cluster);
            o.push(format!("kubectl {c} apply --server-side -f {manifest}"));
            o.push(format!(
                "kubectl {c} wait -n metallb-system pod -l app=metallb --for=condition=Ready --timeout=180s"
            ));
            if let PoolSpec::TopOfKindNetwork { index, of, addresses } = pool {
                o.push(format!(
                    "# {} = {addresses} addresses from the top of the kind network's IPv4 subnet, range {} of {of} \
                     (applied again while MetalLB's webhook starts)",
                    Placeholder::lb_pool(cluster).0,
                    index + 1
                ));
            }
            heredoc(
                o,
                &format!("kubectl {c} apply -f -"),
                &crate::topology::metallb_pool_yaml(&names.0, &names.1, &pool_range(cluster, pool)),
            );
        }
        ProviderAction::KwokCreate {
            cluster,
            ports,
            pod_cidr,
            run_dir,
            ..
        } => {
            let n = &cluster.name;
            o.push(format!(
                "kwokctl --name {n} --config \"{run_dir}/{n}.kwok.yaml\" create cluster --runtime binary \
                 --kubeconfig \"{run_dir}/kubeconfig\"  # ports {}-{}",
                ports.0, ports.1
            ));
            o.push(format!(
                "kubectl {} apply -f \"{run_dir}/{n}-node.yaml\"  # one kwok node, podCIDR {pod_cidr}",
                ctx(n)
            ));
        }
        ProviderAction::KwokReuse {
            cluster,
            ports,
            fleet,
            run_dir,
            ..
        } => {
            let n = &cluster.name;
            o.push(format!(
                "# fleet {fleet}: kwok cluster {n} (etcd, API server, controllers, kwok on ports {}-{}), kept from an \
                 earlier run (--reuse) in \"{run_dir}\"",
                ports.0, ports.1
            ));
            o.push(format!("kubectl {} get node {n}-node-0   # Ready", ctx(n)));
        }
        ProviderAction::RehearsalMetalLb {
            cluster,
            manifest,
            ports,
            pool,
            names,
            run_dir,
        } => {
            let c = ctx(cluster);
            o.push(format!("kubectl {c} apply --server-side -f \"{manifest}\""));
            o.push(format!(
                "kubectl {c} delete validatingwebhookconfiguration metallb-webhook-configuration"
            ));
            o.push(format!(
                "export {}=$(kubectl get pod {c} -n metallb-system -l app=metallb,component=controller -o \
                 jsonpath='{{.items[0].metadata.name}}')",
                Placeholder::metallb_pod(cluster).0
            ));
            o.push(format!(
                "KUBECONFIG=\"{run_dir}/kwok/clusters/{cluster}/kubeconfig.yaml\" metallb-controller \
                 --namespace=metallb-system --pod-name={} --webhook-mode=disabled --port={} \
                 --health-probe-port={} --log-level=info &",
                Placeholder::metallb_pod(cluster).shell(),
                ports.0,
                ports.1
            ));
            o.push("# TEST-NET-1 addresses: assigned, never dialled".into());
            heredoc(
                o,
                &format!("kubectl {c} apply -f -"),
                &crate::topology::metallb_pool_yaml(&names.0, &names.1, &pool_range(cluster, pool)),
            );
        }
        ProviderAction::StartIstiod {
            cluster,
            build,
            revision,
            ports,
            run_dir,
        } => {
            let rev = revision.as_ref().map(|r| format!("-{r}")).unwrap_or_default();
            o.push(format!(
                "(cd \"{run_dir}/istiod-{cluster}{rev}\" && CLUSTER_ID={cluster} ISTIOD_CUSTOM_HOST=127.0.0.1,localhost \
                 USE_REMOTE_CERTS=<cacerts present> pilot-discovery{} discovery \
                 --kubeconfig=\"{run_dir}/kwok/clusters/{cluster}/kubeconfig.yaml\" --grpcAddr=127.0.0.1:{} \
                 --httpsAddr=127.0.0.1:{} ... &)  # rehearsal: istiod{rev} as a local process, env mirrored from the \
                 rendered Deployment{}",
                build.as_ref().map(|b| format!("-{b}")).unwrap_or_default(),
                ports.0,
                ports.1,
                revision.as_ref().map(|r| format!(" istiod-{r}")).unwrap_or_default()
            ))
        }
        ProviderAction::StopIstiod { cluster, revision } => o.push(format!(
            "kill \"$(cat \"$MESHCONF_RUN/pids/istiod-{cluster}-{revision}\")\"  # rehearsal: revision {revision}'s \
             istiod process goes with its control plane"
        )),
        ProviderAction::AckErrors { cluster } => o.push(format!(
            "kubectl logs {} -n istio-system -l app=istiod --tail=-1 | grep -c 'ACK ERROR'   # istiod-ack-errors: \
             the sidecars rejected none of istiod's config",
            ctx(cluster)
        )),
        ProviderAction::ReuseCluster {
            cluster,
            name,
            fleet,
            ..
        } => {
            o.push(format!("# fleet {fleet}: kind cluster {name}, kept from an earlier run (--reuse)"));
            o.push(format!("kubectl get {} nodes   # every node Ready", ctx(cluster)));
        }
        ProviderAction::Connect { cluster, context } => o.push(format!(
            "# {cluster}: context {context} of the given kubeconfig (read only; nothing is created)"
        )),
    }
}
