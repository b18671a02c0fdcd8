//! Scenario + variant + provider profile → plan: every step as the typed actions the runner will execute. Pure:
//! no I/O, so plans render without any cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::action::*;
use super::types::*;
use crate::mesh::{self, InstallOverlay, Variant, helm};
use crate::scenario::{ClusterName, InstallMethod, Role, Scenario, Step, Trust};
use crate::topology;
use crate::verify;

/// Deadlines the plan writes into its waits (and shows).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// A LoadBalancer Service getting its address.
    pub load_balancer: Duration,
    /// Pods Running and Ready after `kubectl apply`.
    pub pods: Duration,
    /// istiod rolled out after `istioctl install`.
    pub rollout: Duration,
    /// A remote's injection webhooks patched by its primary's istiod.
    pub injector: Duration,
    /// The run's namespaces gone after their deletion.
    pub namespaces: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            load_balancer: Duration::from_secs(180),
            pods: Duration::from_secs(300),
            rollout: Duration::from_secs(300),
            injector: Duration::from_secs(180),
            namespaces: Duration::from_secs(180),
        }
    }
}

fn step(id: String, title: String, class: StepClass, actions: Vec<Action>) -> PlannedStep {
    PlannedStep {
        id: StepId(id),
        title,
        class,
        actions,
    }
}

/// The clusters two steps of one kind must not both change at once (such steps go to separate stages).
fn touched(s: &Step) -> Vec<&ClusterName> {
    match s {
        Step::InstallIstio(i) => vec![&i.cluster],
        Step::SetNetwork { cluster }
        | Step::EastwestGateway { cluster, .. }
        | Step::ExposeServices { cluster }
        | Step::ExposeIstiod { cluster } => vec![cluster],
        // `create-remote-secret` makes its token Secret in `from`: two secrets of one cluster at once race on
        // it ("already exists"); secrets applied into one cluster do not conflict.
        Step::RemoteSecret { from, .. } => vec![from],
        Step::InstallRemote { cluster, .. } => vec![cluster],
        Step::DeployApps(d) => d.helloworld.keys().chain(d.client.iter()).collect(),
        Step::CheckTraffic(c) => c.from.iter().collect(),
        Step::StartTraffic(t) => t.from.iter().collect(),
        Step::RemoveRevision { cluster, .. } | Step::UpgradeIstio { cluster, .. } => vec![cluster],
        Step::MoveWorkloads { .. }
        | Step::RestartWorkloads { .. }
        | Step::CheckLiveTraffic { .. }
        | Step::CheckProxies { .. } => Vec::new(),
    }
}

const EASTWEST: &str = "istio-eastwestgateway";
/// How long a reset waits for the run's pods to stop (a 1 s grace each) before it uninstalls.
const STOP_PODS_SECS: u64 = 30;
const ISTIO_SYSTEM: &str = "istio-system";

/// The steps in the order the Helm tab runs them: a remote's secret comes after its install (`create-remote-secret`
/// makes the reader ServiceAccount the `base` chart must own). Returns the scenario so ordered and the secrets moved.
fn helm_order(scenario: &Scenario) -> (Scenario, BTreeSet<(ClusterName, ClusterName)>) {
    let mut s = scenario.clone();
    let mut moved = BTreeSet::new();
    if s.install_method != InstallMethod::Helm {
        return (s, moved);
    }
    let mut i = 0;
    while i < s.steps.len() {
        if let Step::RemoteSecret { from, into } = &s.steps[i]
            && let Some(at) = s.steps[i..]
                .iter()
                .position(|x| matches!(x, Step::InstallRemote { cluster, .. } if cluster == from))
        {
            moved.insert((from.clone(), into.clone()));
            let secret = s.steps.remove(i);
            s.steps.insert(i + at, secret);
            continue;
        }
        i += 1;
    }
    (s, moved)
}

/// The clusters the scenario gives an east-west gateway.
fn gateway_clusters(scenario: &Scenario) -> BTreeSet<&ClusterName> {
    scenario
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::EastwestGateway { cluster, .. } => Some(cluster),
            _ => None,
        })
        .collect()
}

/// The note that replaces the guide's `helm repo add`, on the first Helm install only.
fn helm_repo_note(noted: &mut bool) -> Vec<Action> {
    if std::mem::replace(noted, true) {
        return Vec::new();
    }
    vec![Action::Note {
        text: format!(
            "replaces `{}`: the charts are the pinned Istio module's manifests/charts (built by tools/build.sh), \
             in ${}",
            helm::REPO_ADD,
            Placeholder::istio_charts().0
        ),
    }]
}

fn helm_install(
    cluster: &ClusterName,
    release: &str,
    chart: helm::Chart,
    sets: Vec<(String, String)>,
    overlay: InstallOverlay,
) -> Action {
    Action::HelmInstall {
        cluster: cluster.clone(),
        release: release.into(),
        chart,
        namespace: ISTIO_SYSTEM.into(),
        sets,
        overlay: helm::chart_overlay(&overlay),
    }
}

fn rollout(cluster: &ClusterName, deployment: &str, d: &Deadlines) -> Action {
    Action::Wait {
        cluster: cluster.clone(),
        until: Condition::Rollout {
            namespace: ISTIO_SYSTEM.into(),
            deployment: deployment.into(),
        },
        deadline_secs: d.pods.as_secs(),
    }
}

/// Whether the remote secret of `remote` into `primary` comes after `remote`'s install (the different-networks
/// guides attach the remote after configuring it; the others before).
fn secret_after_install(scenario: &Scenario, remote: &ClusterName, primary: &ClusterName) -> bool {
    let at = |want: &dyn Fn(&Step) -> bool| scenario.steps.iter().position(want);
    let install = at(&|s| matches!(s, Step::InstallRemote { cluster, .. } if cluster == remote));
    let secret = at(&|s| matches!(s, Step::RemoteSecret { from, into } if from == remote && into == primary));
    matches!((install, secret), (Some(i), Some(s)) if s > i)
}

/// Whether `remote`'s secret into `primary` comes before `remote`'s install as a remote of `primary`.
fn remote_before_install(scenario: &Scenario, remote: &ClusterName, primary: &ClusterName) -> bool {
    let at = |want: &dyn Fn(&Step) -> bool| scenario.steps.iter().position(want);
    let install = at(
        &|s| matches!(s, Step::InstallRemote { cluster, primary: p } if cluster == remote && p == primary),
    );
    let secret = at(&|s| matches!(s, Step::RemoteSecret { from, into } if from == remote && into == primary));
    matches!((install, secret), (Some(i), Some(s)) if s < i)
}

/// The remote's istio-system namespace naming its control plane cluster (and, on different networks, labelled
/// with its network, as that guide does).
fn control_plane_namespace(scenario: &Scenario, cluster: &ClusterName, primary: &ClusterName) -> Action {
    Action::Namespace {
        cluster: cluster.clone(),
        name: ISTIO_SYSTEM.into(),
        labels: if topology::multi_network(scenario) {
            let net = scenario
                .cluster(cluster)
                .map(|x| x.network.clone())
                .unwrap_or_else(unreachable_net);
            vec![Label::new(NETWORK_LABEL, net.as_str())]
        } else {
            Vec::new()
        },
        annotations: vec![Label::new(
            "topology.istio.io/controlPlaneClusters",
            primary.as_str(),
        )],
    }
}

/// The wait until `primary`'s istiod patched the caBundle of `remote`'s injection webhooks.
fn injector_wait(remote: &ClusterName, primary: &ClusterName, d: &Deadlines) -> Action {
    Action::Wait {
        cluster: remote.clone(),
        until: Condition::InjectorPatched {
            primary: primary.clone(),
        },
        deadline_secs: d.injector.as_secs(),
    }
}

fn lb_capture(cluster: &ClusterName, into: Placeholder, d: &Deadlines) -> Action {
    Action::Capture {
        cluster: cluster.clone(),
        reading: Reading::LbAddress {
            namespace: ISTIO_SYSTEM.into(),
            service: EASTWEST.into(),
        },
        into,
        deadline_secs: d.load_balancer.as_secs(),
    }
}

/// Builds the plan for `scenario` as driven by `variant` on the provider described by `profile`, with the
/// default deadlines.
pub fn build(scenario: &Scenario, variant: &Variant, profile: ProviderProfile) -> Plan {
    build_with(scenario, variant, profile, &Deadlines::default())
}

/// Builds the plan with the given deadlines.
pub fn build_with(scenario: &Scenario, variant: &Variant, profile: ProviderProfile, d: &Deadlines) -> Plan {
    let (ordered, moved) = helm_order(scenario);
    let scenario = &ordered;
    let mut profile = profile;
    for c in &scenario.clusters {
        if let Some(b) = &c.istio {
            // A remote has no istiod: its primary's injects its proxies, from the primary's own injector config
            // (on kind a remote installed with 1.31-dev got the 1.32-dev primary's proxies).
            let runs = match c.role {
                crate::scenario::Role::Primary => {
                    format!("{}'s control plane and proxies are that build's", c.name)
                }
                crate::scenario::Role::Remote => format!(
                    "{}'s remote install (webhooks, CRDs) is that build's; its proxies are injected by its primary's \
                     istiod",
                    c.name
                ),
            };
            // A canary install of another build in the cluster: it starts on `b` and is upgraded by the run.
            let upgraded_to: Vec<String> = scenario
                .steps
                .iter()
                .filter_map(|s| match s {
                    Step::InstallIstio(i)
                        if i.cluster == c.name && i.build.as_ref().is_some_and(|x| x != b) =>
                    {
                        i.build.as_ref().map(|x| format!("{x} as a canary revision"))
                    }
                    Step::UpgradeIstio { cluster, build } if cluster == &c.name => {
                        Some(format!("{build} in place"))
                    }
                    _ => None,
                })
                .collect();
            if upgraded_to.is_empty() {
                profile.notes.push(format!(
                    "mixed versions: {} runs Istio build {b}; `{}` is that build's istioctl, and {runs}",
                    c.name,
                    istioctl_word(&c.istio),
                ));
            } else {
                profile.notes.push(format!(
                    "upgrade: {} starts on Istio build {b} (`{}`) and gets {}",
                    c.name,
                    istioctl_word(&c.istio),
                    upgraded_to.join(", ")
                ));
            }
        }
    }
    // Clusters whose default control plane the run upgrades in place: their istiod rolls over with a surge pod.
    let upgraded_in_place: BTreeSet<ClusterName> = scenario
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::UpgradeIstio { cluster, .. } => Some(cluster.clone()),
            _ => None,
        })
        .collect();
    if scenario
        .steps
        .iter()
        .any(|s| matches!(s, Step::InstallIstio(i) if i.revision.is_some()))
        || !upgraded_in_place.is_empty()
    {
        profile.notes.push(
            "upgrades: two istiods share a cluster during a canary upgrade (two revisions) and during an in-place \
             one (the rollout's surge pod), so such an install asks istiod for 100m CPU (not 500m) and installs no \
             ingress gateway (the multicluster guides use none); on a 2-CPU kind node the second istiod does not \
             schedule otherwise"
                .into(),
        );
    }
    let mut stages: Vec<Stage> = Vec::new();
    let all: Vec<ClusterName> = scenario.clusters.iter().map(|c| c.name.clone()).collect();

    if !profile.setup.is_empty() {
        stages.push(Stage {
            steps: vec![step(
                "host-setup".into(),
                "Prepare the host (the kind network and the egress counter)".into(),
                StepClass::Infrastructure,
                profile.setup.clone(),
            )],
        });
    }
    let creates: Vec<PlannedStep> = all
        .iter()
        .filter_map(|c| {
            let actions = profile.create.get(c).filter(|a| !a.is_empty())?;
            Some(step(
                format!("create-cluster/{c}"),
                format!("Create cluster {c} ({})", profile.kind.as_str()),
                StepClass::Infrastructure,
                actions.clone(),
            ))
        })
        .collect();
    if profile.parallel_create {
        if !creates.is_empty() {
            stages.push(Stage { steps: creates });
        }
    } else {
        stages.extend(creates.into_iter().map(|s| Stage { steps: vec![s] }));
    }

    let mut infra = Vec::new();
    if !profile.connect.is_empty() {
        infra.push(step(
            "connect-networks".into(),
            "Route pod and service CIDRs between nodes on the same network".into(),
            StepClass::Infrastructure,
            profile.connect.clone(),
        ));
    }
    // A fleet serves every scenario of its topology (multi-primary and primary-remote share one): it gets MetalLB
    // when it is made, whether or not the scenario that made it has a gateway.
    if topology::needs_load_balancers(scenario) || profile.outlives_run {
        for c in &all {
            if let Some(actions) = profile.load_balancers.get(c).filter(|v| !v.is_empty()) {
                infra.push(step(
                    format!("load-balancers/{c}"),
                    format!("LoadBalancer addresses for {c} (MetalLB)"),
                    StepClass::Infrastructure,
                    actions.clone(),
                ));
            }
        }
    }
    if !infra.is_empty() {
        stages.push(Stage { steps: infra });
    }
    if profile.outlives_run {
        // Once the provider's own setup is done and before anything of the guide's: what the clusters hold, so
        // the reset can prove it left them so.
        stages.push(Stage {
            steps: all
                .iter()
                .map(|c| {
                    step(
                        format!("snapshot/{c}"),
                        format!("Record what {c} holds before the run"),
                        StepClass::Infrastructure,
                        vec![Action::Snapshot { cluster: c.clone() }],
                    )
                })
                .collect(),
        });
    }

    if scenario.trust == Trust::SharedRoot {
        stages.push(Stage {
            steps: all
                .iter()
                .map(|c| {
                    step(
                        format!("plug-cacerts/{c}"),
                        format!("Plug the shared-root CA into {c} (before you begin)"),
                        StepClass::Mesh,
                        vec![
                            Action::note(format!(
                                "certs/{c}/*.pem are generated by meshconf (one root, an intermediate per cluster), \
                                 in place of make -f tools/certs/Makefile.selfsigned.mk root-ca {c}-cacerts"
                            )),
                            Action::Namespace {
                                cluster: c.clone(),
                                name: ISTIO_SYSTEM.into(),
                                labels: Vec::new(),
                                annotations: Vec::new(),
                            },
                            Action::CaCerts { cluster: c.clone() },
                        ],
                    )
                })
                .collect(),
        });
    }

    let overlay = |c: &ClusterName| profile.overlays.get(c).cloned().unwrap_or_default();
    // A cluster on another Istio build than the run's (a mixed-version mesh) is driven by that build's istioctl.
    let build_of = |c: &ClusterName| scenario.cluster(c).and_then(|x| x.istio.clone());
    let network = |c: &ClusterName| {
        scenario
            .cluster(c)
            .map(|x| x.network.clone())
            .unwrap_or_else(unreachable_net)
    };
    let helm = scenario.install_method == InstallMethod::Helm;
    // What follows an install in `c` on this provider.
    let after_install = |c: &ClusterName| {
        profile
            .after_install
            .get(c)
            .cloned()
            .unwrap_or_default()
            .into_iter()
    };
    // The install overlay of `c` for a revision and a build: a revision's own (a provider may set one), else the
    // build's when it is not the cluster's (a canary of another build), else the cluster's.
    let install_overlay = |c: &ClusterName, revision: Option<&String>, build: Option<&String>| {
        if let Some(p) = revision.and_then(|r| profile.revisions.get(&(c.clone(), r.clone()))) {
            return p.overlay.clone();
        }
        match build {
            Some(b) if Some(b) != build_of(c).as_ref() => profile
                .build_overlays
                .get(&(c.clone(), b.clone()))
                .cloned()
                .unwrap_or_else(|| overlay(c)),
            _ => overlay(c),
        }
    };
    // The cluster whose istiod injects a cluster's pods: a remote's primary, else itself.
    let injector_of = |c: &ClusterName| {
        scenario
            .cluster(c)
            .and_then(|x| x.primary.clone())
            .unwrap_or_else(|| c.clone())
    };
    // The first Helm install says what replaced the guide's `helm repo add`.
    let mut noted = false;
    let mut current: Vec<PlannedStep> = Vec::new();
    let mut current_kind: Option<&'static str> = None;
    let mut current_clusters: BTreeSet<ClusterName> = BTreeSet::new();
    // The traffic generators running (cluster, namespace), from start-traffic until check-live-traffic, and the
    // phase names used so far.
    let mut live: Option<Vec<(ClusterName, String)>> = None;
    let mut phases: BTreeSet<String> = BTreeSet::new();
    // The build of each control-plane revision per cluster, for its removal.
    let mut revision_builds: BTreeMap<(ClusterName, String), Option<String>> = BTreeMap::new();
    // The build revision `r` of `c` was installed with (the cluster's when the scenario named none).
    let build_of_revision =
        |builds: &BTreeMap<(ClusterName, String), Option<String>>, c: &ClusterName, r: &String| {
            builds
                .get(&(c.clone(), r.clone()))
                .cloned()
                .unwrap_or_else(|| build_of(c))
        };
    // The clusters whose east-west gateway is installed: another eastwest-gateway step moves it.
    let mut gateways_installed: BTreeSet<ClusterName> = BTreeSet::new();

    for s in &scenario.steps {
        let cl: Vec<ClusterName> = touched(s).into_iter().cloned().collect();
        let joinable = current_kind == Some(s.keyword())
            && !matches!(
                s,
                Step::DeployApps(_)
                    | Step::CheckTraffic(_)
                    | Step::StartTraffic(_)
                    | Step::MoveWorkloads { .. }
                    | Step::RestartWorkloads { .. }
                    | Step::CheckLiveTraffic { .. }
                    | Step::CheckProxies { .. }
            )
            && cl.iter().all(|c| !current_clusters.contains(c));
        if !joinable && !current.is_empty() {
            stages.push(Stage {
                steps: std::mem::take(&mut current),
            });
            current_clusters.clear();
        }
        // Under live traffic every stage is a phase of its own: the generators count it apart.
        // (check-live-traffic marks its own last phase, `after`.)
        if let (Some(live), false, false) = (&live, joinable, matches!(s, Step::CheckLiveTraffic { .. })) {
            let phase = phase_name(&mut phases, s.keyword());
            stages.push(Stage {
                steps: vec![step(
                    format!("phase/{phase}"),
                    format!("Count the traffic of '{phase}' apart"),
                    StepClass::Infrastructure,
                    live.iter()
                        .map(|(c, ns)| Action::TrafficPhase {
                            cluster: c.clone(),
                            namespace: ns.clone(),
                            phase: phase.clone(),
                            dwell_secs: 0,
                        })
                        .collect(),
                )],
            });
        }
        current_kind = Some(s.keyword());
        current_clusters.extend(cl.iter().cloned());
        match s {
            Step::InstallIstio(i) if helm => {
                let c = &i.cluster;
                let mut actions = helm_repo_note(&mut noted);
                actions.extend([
                    helm_install(c, helm::BASE_RELEASE, helm::Chart::Base, Vec::new(), overlay(c)),
                    helm_install(
                        c,
                        helm::ISTIOD_RELEASE,
                        helm::Chart::Istiod,
                        helm::primary_values(&scenario.mesh_id, c, &network(c), i.external_istiod),
                        overlay(c),
                    ),
                ]);
                actions.extend(after_install(c));
                actions.push(rollout(c, helm::ISTIOD_RELEASE, d));
                current.push(step(
                    format!("install-istio/{c}"),
                    format!("Configure {c} as a primary (Helm)"),
                    StepClass::Mesh,
                    actions,
                ));
            }
            Step::InstallIstio(i) => {
                let c = &i.cluster;
                let build = scenario.build_of_install(i);
                let file = match &i.revision {
                    Some(r) => format!("{c}-{r}.yaml"),
                    None => format!("{c}.yaml"),
                };
                let mut body =
                    mesh::primary_operator(&scenario.mesh_id, c, &network(c), i.external_istiod, variant);
                if let Some(r) = &i.revision {
                    revision_builds.insert((c.clone(), r.clone()), build.clone());
                }
                if i.revision.is_some() || upgraded_in_place.contains(c) {
                    body = body.replacen("spec:\n", &mesh::upgrade_spec(i.revision.as_deref()), 1);
                }
                if let Some(r) = &scenario.retry_on {
                    body = mesh::with_retry_on(&body, r);
                }
                // A canary of another build than the cluster's gets that build's images; a provider may set a
                // revision's own.
                let rev_profile = i
                    .revision
                    .as_ref()
                    .and_then(|r| profile.revisions.get(&(c.clone(), r.clone())));
                let ov = install_overlay(c, i.revision.as_ref(), i.build.as_ref());
                let mut actions = vec![
                    Action::WriteFile {
                        file: file.clone(),
                        body,
                    },
                    Action::IstioctlInstall {
                        cluster: c.clone(),
                        build,
                        file,
                        source: OperatorSource::File,
                        overlay: ov,
                    },
                ];
                match rev_profile {
                    Some(p) => actions.extend(p.after_install.clone()),
                    None => actions.extend(after_install(c).map(|a| revisioned(a, i.revision.as_deref()))),
                }
                let (id, title) = match &i.revision {
                    Some(r) => (
                        format!("install-istio/{c}/{r}"),
                        format!("Install control-plane revision {r} in {c}"),
                    ),
                    None => (
                        format!("install-istio/{c}"),
                        format!("Configure {c} as a primary"),
                    ),
                };
                current.push(step(id, title, StepClass::Mesh, actions));
            }
            Step::StartTraffic(t) => {
                let namespace = client_namespace(scenario, &t.from);
                let mut running = Vec::new();
                for c in &t.from {
                    running.push((c.clone(), namespace.clone()));
                    current.push(step(
                        format!("start-traffic/{c}"),
                        format!("Start live traffic from {c} (meshconf's generator, kept until the check)"),
                        StepClass::Infrastructure,
                        vec![
                            Action::note(format!(
                                "{} new connections a second and {} keep-alive connections to {}; the generator's \
                                 pod is never restarted, so one process counts every request (its sidecar stays \
                                 on the revision that injected it)",
                                t.rate, t.connections, t.url
                            )),
                            Action::Apply {
                                cluster: c.clone(),
                                namespace: Some(namespace.clone()),
                                manifest: Manifest::Loadgen {
                                    url: t.url.clone(),
                                    rate: t.rate,
                                    connections: t.connections,
                                },
                                selector: None,
                            },
                            Action::Wait {
                                cluster: c.clone(),
                                until: Condition::PodsReady {
                                    namespace: namespace.clone(),
                                    selectors: vec![format!("app={}", crate::apps::LOADGEN)],
                                    containers: 2,
                                    control_plane: (profile.dataplane != DataPlane::Computed).then(|| c.clone()),
                                },
                                deadline_secs: d.pods.as_secs(),
                            },
                            Action::TrafficPhase {
                                cluster: c.clone(),
                                namespace: namespace.clone(),
                                phase: "baseline".into(),
                                dwell_secs: BASELINE_SECS,
                            },
                        ],
                    ));
                }
                phases.insert("baseline".into());
                live = Some(running);
            }
            Step::MoveWorkloads {
                namespace,
                revision,
                restart,
            } => {
                let ns = namespace.as_str().to_string();
                for c in deployed_clusters(scenario, namespace) {
                    current.push(step(
                        format!("move-workloads/{c}"),
                        format!("Move {ns} in {c} to revision {revision} and restart its workloads"),
                        StepClass::Mesh,
                        vec![
                            Action::LabelNamespace {
                                cluster: c.clone(),
                                name: ns.clone(),
                                label: Label::new(REV_LABEL, revision),
                            },
                            Action::RestartWorkloads {
                                cluster: c.clone(),
                                namespace: ns.clone(),
                                restart: *restart,
                                revision: revision.clone(),
                                injector: injector_of(&c),
                                deadline_secs: d.pods.as_secs(),
                            },
                        ],
                    ));
                }
            }
            Step::UpgradeIstio { cluster, build } => {
                let c = cluster;
                // The guide passes the install's own configuration to the newer istioctl: the file written by this
                // cluster's install-istio, with the newer build's images.
                let mut actions = vec![
                    Action::note(format!(
                        "In-place Upgrades: `istioctl upgrade -f {c}.yaml` with the {build} istioctl; `istioctl upgrade --help` of \
                         the istioctl this harness drives says it \"is an alias for the install command\", so the \
                         plan runs install"
                    )),
                    Action::IstioctlInstall {
                        cluster: c.clone(),
                        build: Some(build.clone()),
                        file: format!("{c}.yaml"),
                        source: OperatorSource::File,
                        overlay: profile
                            .build_overlays
                            .get(&(c.clone(), build.clone()))
                            .cloned()
                            .unwrap_or_else(|| overlay(c)),
                    },
                ];
                // What follows an install on this provider, with the newer build (the rehearsal's istiod process
                // is replaced by the newer pilot-discovery).
                actions.extend(after_install(c).map(|a| match a {
                    Action::Provider(ProviderAction::StartIstiod {
                        cluster,
                        ports,
                        run_dir,
                        revision,
                        ..
                    }) => Action::Provider(ProviderAction::StartIstiod {
                        cluster,
                        build: Some(build.clone()),
                        revision,
                        ports,
                        run_dir,
                    }),
                    other => other,
                }));
                current.push(step(
                    format!("upgrade-istio/{c}"),
                    format!("Upgrade {c} in place to Istio build {build}"),
                    StepClass::Mesh,
                    actions,
                ));
            }
            Step::RestartWorkloads {
                namespace,
                restart,
                clusters,
            } => {
                let ns = namespace.as_str().to_string();
                let chosen = deployed_clusters(scenario, namespace)
                    .into_iter()
                    .filter(|c| clusters.is_empty() || clusters.contains(c));
                for c in chosen {
                    current.push(step(
                        format!("restart-workloads/{c}"),
                        format!("Restart the workloads of {ns} in {c} onto the control plane serving it"),
                        StepClass::Mesh,
                        vec![Action::RestartWorkloads {
                            cluster: c.clone(),
                            namespace: ns.clone(),
                            restart: *restart,
                            revision: DEFAULT_REVISION.into(),
                            injector: injector_of(&c),
                            deadline_secs: d.pods.as_secs(),
                        }],
                    ));
                }
            }
            Step::CheckProxies { namespace, expect } => {
                let ns = namespace.as_str().to_string();
                for (c, build) in expect {
                    current.push(step(
                        format!("check-proxies/{c}"),
                        format!("Every sidecar of {ns} in {c} runs the {build} proxy"),
                        StepClass::Check,
                        vec![Action::CheckProxies {
                            cluster: c.clone(),
                            namespace: ns.clone(),
                            build: build.clone(),
                        }],
                    ));
                }
            }
            Step::RemoveRevision { cluster, revision } => {
                let build = build_of_revision(&revision_builds, cluster, revision);
                current.push(step(
                    format!("remove-revision/{cluster}/{revision}"),
                    format!("Remove control-plane revision {revision} from {cluster}"),
                    StepClass::Mesh,
                    std::iter::once(Action::IstioctlUninstall {
                        cluster: cluster.clone(),
                        build,
                        revision: Some(revision.clone()),
                    })
                    .chain(
                        profile
                            .revisions
                            .get(&(cluster.clone(), revision.clone()))
                            .map(|p| p.after_uninstall.clone())
                            .unwrap_or_default(),
                    )
                    .collect(),
                ));
            }
            Step::CheckLiveTraffic { expect } => {
                for (c, ns) in live.take().unwrap_or_default() {
                    current.push(step(
                        format!("check-live-traffic/from-{c}"),
                        format!("Judge every request of {c}'s generator, phase by phase"),
                        StepClass::Check,
                        vec![
                            Action::TrafficPhase {
                                cluster: c.clone(),
                                namespace: ns.clone(),
                                phase: "after".into(),
                                dwell_secs: BASELINE_SECS,
                            },
                            Action::CheckLiveTraffic(LiveCheck {
                                from: c.clone(),
                                namespace: ns,
                                expect: expect.clone(),
                            }),
                        ],
                    ));
                }
            }
            Step::EastwestGateway { cluster, .. } if helm => {
                let mut actions = helm_repo_note(&mut noted);
                actions.extend([
                    helm_install(
                        cluster,
                        helm::EASTWEST_RELEASE,
                        helm::Chart::Gateway,
                        helm::gateway_values(&network(cluster)),
                        helm::gateway_overlay(&overlay(cluster)),
                    ),
                    rollout(cluster, helm::EASTWEST_RELEASE, d),
                    lb_capture(cluster, Placeholder::eastwest_address(cluster), d),
                ]);
                current.push(step(
                    format!("eastwest-gateway/{cluster}"),
                    format!("Install the east-west gateway in {cluster} (Helm)"),
                    StepClass::Mesh,
                    actions,
                ));
            }
            Step::EastwestGateway { cluster, revision } => {
                let net = network(cluster);
                let moved = !gateways_installed.insert(cluster.clone());
                let (id, title, script, file, build) = match revision {
                    Some(r) => (
                        format!("eastwest-gateway/{cluster}/{r}"),
                        if moved {
                            format!(
                                "Move the east-west gateway of {cluster} to revision {r} (rolled in place)"
                            )
                        } else {
                            format!("Install the east-west gateway in {cluster} on revision {r}")
                        },
                        format!(
                            "samples/multicluster/gen-eastwest-gateway.sh --network {net} --revision {r}"
                        ),
                        format!("eastwest-{cluster}-{r}.yaml"),
                        build_of_revision(&revision_builds, cluster, r),
                    ),
                    None => (
                        format!("eastwest-gateway/{cluster}"),
                        format!("Install the east-west gateway in {cluster}"),
                        format!("samples/multicluster/gen-eastwest-gateway.sh --network {net}"),
                        format!("eastwest-{cluster}.yaml"),
                        build_of(cluster),
                    ),
                };
                let mut actions = vec![Action::IstioctlInstall {
                    cluster: cluster.clone(),
                    overlay: install_overlay(cluster, revision.as_ref(), build.as_ref()),
                    build,
                    file,
                    source: OperatorSource::Script {
                        script,
                        operator: mesh::eastwest_operator(&net, revision.as_deref()),
                    },
                }];
                if let (true, Some(r)) = (moved, revision) {
                    // The same Deployment rolls onto the revision's injector; its address stays.
                    actions.push(rollout(cluster, EASTWEST, d));
                    actions.push(Action::WaitInjected {
                        cluster: cluster.clone(),
                        namespace: ISTIO_SYSTEM.into(),
                        selector: format!("app={EASTWEST}"),
                        revision: r.clone(),
                        deadline_secs: d.pods.as_secs(),
                    });
                } else {
                    actions.push(lb_capture(cluster, Placeholder::eastwest_address(cluster), d));
                }
                current.push(step(id, title, StepClass::Mesh, actions));
            }
            Step::SetNetwork { cluster } => current.push(step(
                format!("set-network/{cluster}"),
                format!("Set the default network for {cluster}"),
                StepClass::Mesh,
                vec![Action::LabelNamespace {
                    cluster: cluster.clone(),
                    name: ISTIO_SYSTEM.into(),
                    label: Label::new(NETWORK_LABEL, network(cluster).as_str()),
                }],
            )),
            Step::ExposeServices { cluster } => current.push(step(
                format!("expose-services/{cluster}"),
                format!("Expose the services in {cluster}"),
                StepClass::Mesh,
                vec![Action::Apply {
                    cluster: cluster.clone(),
                    namespace: Some(ISTIO_SYSTEM.into()),
                    manifest: Manifest::ExposeServices,
                    selector: None,
                }],
            )),
            Step::ExposeIstiod { cluster } => current.push(step(
                format!("expose-istiod/{cluster}"),
                format!("Expose the control plane in {cluster}"),
                StepClass::Mesh,
                vec![Action::Apply {
                    cluster: cluster.clone(),
                    namespace: Some(ISTIO_SYSTEM.into()),
                    manifest: Manifest::ExposeIstiod,
                    selector: None,
                }],
            )),
            Step::RemoteSecret { from, into } => {
                let mut actions = vec![Action::RemoteSecret {
                    from: from.clone(),
                    build: build_of(from),
                    into: into.clone(),
                    kubeconfig: profile.in_mesh_kubeconfig.get(from).cloned(),
                }];
                // A remote's secret before its install (the older guide's order): istiod reads the remote's
                // controlPlaneClusters annotation once, when it adds the cluster, to decide whether it patches the
                // remote's webhooks (Istio's multicluster checkShouldLead). Annotated only by install-remote, the
                // patch never came unless istiod happened to be slower than the next step (kind CI: 180 s timeout).
                if remote_before_install(scenario, from, into) {
                    actions.splice(
                        0..0,
                        [
                            Action::Note {
                                text: format!(
                                    "the annotation of install-remote/{from} first: istiod decides when it reads this \
                                     secret whether it patches {from}'s webhooks"
                                ),
                            },
                            control_plane_namespace(scenario, from, into),
                        ],
                    );
                }
                // The secret of a remote installed before it (the different-networks guide's order) is what lets
                // its primary's istiod patch the remote's webhooks: the wait for that comes here.
                if secret_after_install(scenario, from, into) {
                    actions.push(injector_wait(from, into, d));
                }
                if moved.contains(&(from.clone(), into.clone())) {
                    actions.insert(
                        0,
                        Action::Note {
                            text: format!(
                                "after install-remote/{from}, as the Helm tab orders it: helm cannot adopt the \
                                 istio-reader ServiceAccount this command makes in {from}"
                            ),
                        },
                    );
                }
                current.push(step(
                    format!("remote-secret/{from}-into-{into}"),
                    format!("Give {into} access to the API server of {from}"),
                    StepClass::Mesh,
                    actions,
                ))
            }
            Step::InstallRemote { cluster, primary } => {
                let file = format!("{cluster}.yaml");
                let address = Placeholder::discovery_address();
                current.push(step(
                    format!("install-remote/{cluster}"),
                    format!("Configure {cluster} as a remote of {primary}"),
                    StepClass::Mesh,
                    vec![
                        control_plane_namespace(scenario, cluster, primary),
                        lb_capture(primary, address.clone(), d),
                    ]
                    .into_iter()
                    .chain(if helm {
                        let mut a = helm_repo_note(&mut noted);
                        a.extend([
                            helm_install(
                                cluster,
                                helm::BASE_RELEASE,
                                helm::Chart::Base,
                                helm::remote_base_values(),
                                overlay(cluster),
                            ),
                            helm_install(
                                cluster,
                                helm::ISTIOD_RELEASE,
                                helm::Chart::Istiod,
                                helm::remote_values(cluster, &network(cluster), &address.shell()),
                                overlay(cluster),
                            ),
                        ]);
                        a
                    } else {
                        vec![
                            Action::WriteFile {
                                file: file.clone(),
                                body: mesh::remote_operator(
                                    &scenario.mesh_id,
                                    cluster,
                                    &network(cluster),
                                    &address.shell(),
                                    variant,
                                ),
                            },
                            Action::IstioctlInstall {
                                cluster: cluster.clone(),
                                build: build_of(cluster),
                                file: file.clone(),
                                source: OperatorSource::File,
                                overlay: overlay(cluster),
                            },
                        ]
                    })
                    .chain(
                        (!secret_after_install(scenario, cluster, primary))
                            .then(|| injector_wait(cluster, primary, d)),
                    )
                    .collect(),
                ));
            }
            Step::DeployApps(dep) => {
                let mut clusters: BTreeSet<&ClusterName> = dep.helloworld.keys().collect();
                clusters.extend(dep.client.iter());
                // One file with every version the scenario deploys anywhere, as the guide's helloworld.yaml holds
                // v1 and v2; each cluster applies the Service and its own versions by label.
                let mut file_versions: BTreeSet<crate::scenario::AppVersion> = ["v1", "v2"]
                    .into_iter()
                    .map(crate::scenario::AppVersion::new)
                    .collect();
                file_versions.extend(dep.helloworld.values().cloned());
                let hw = Manifest::Helloworld {
                    versions: file_versions.into_iter().collect(),
                    prestop_secs: dep.graceful_shutdown,
                };
                let ns = dep.namespace.as_str().to_string();
                for c in all.iter().filter(|c| clusters.contains(c)) {
                    let versions: Vec<_> = dep.helloworld.get(c).cloned().into_iter().collect();
                    let client = dep.client.contains(c);
                    let mut actions = vec![Action::Namespace {
                        cluster: c.clone(),
                        name: ns.clone(),
                        labels: match (&dep.revision, dep.injection) {
                            (Some(r), _) => vec![Label::new(REV_LABEL, r)],
                            (None, true) => vec![Label::new("istio-injection", "enabled")],
                            (None, false) => Vec::new(),
                        },
                        annotations: Vec::new(),
                    }];
                    if let (Some(secs), false) = (dep.graceful_shutdown, versions.is_empty()) {
                        actions.push(Action::note(format!(
                            "helloworld keeps serving {secs}s after it is asked to stop (preStop sleep, scenario: \
                             graceful-shutdown), so its endpoint leaves every proxy first: the sample as shipped \
                             drops requests on a rolling restart (on kind 1-2 of ~360 per source, HTTP 503)"
                        )));
                    }
                    if !dep.injection {
                        actions.push(Action::note(
                            "namespace left WITHOUT the istio-injection label (scenario: injection: false)",
                        ));
                    }
                    let apply = |selector: Option<Label>, manifest: Manifest| Action::Apply {
                        cluster: c.clone(),
                        namespace: Some(ns.clone()),
                        manifest,
                        selector,
                    };
                    actions.push(apply(Some(Label::new("service", "helloworld")), hw.clone()));
                    let mut selectors = Vec::new();
                    for v in &versions {
                        actions.push(apply(Some(Label::new("version", v.as_str())), hw.clone()));
                        selectors.push(format!("app=helloworld,version={v}"));
                    }
                    if client {
                        actions.push(apply(None, Manifest::Client));
                        selectors.push(format!("app={}", variant.client.name()));
                    }
                    // Where sidecars are real, an istiod that stays down fails the wait with that cause.
                    let control_plane = (profile.dataplane != DataPlane::Computed).then(|| {
                        scenario
                            .cluster(c)
                            .and_then(|sc| sc.primary.clone())
                            .unwrap_or_else(|| c.clone())
                    });
                    if !selectors.is_empty() {
                        actions.push(Action::Wait {
                            cluster: c.clone(),
                            // The guide expects 2/2 (app + istio-proxy) whatever the namespace says: a pod
                            // without its sidecar fails.
                            until: Condition::PodsReady {
                                namespace: ns.clone(),
                                selectors,
                                containers: 2,
                                control_plane,
                            },
                            deadline_secs: d.pods.as_secs(),
                        });
                    }
                    current.push(step(
                        format!("deploy-apps/{c}"),
                        format!("Deploy HelloWorld and {} in {c}", variant.client.name()),
                        StepClass::Mesh,
                        actions,
                    ));
                }
            }
            Step::CheckTraffic(ct) => {
                let requests = ct
                    .requests
                    .unwrap_or_else(|| verify::default_requests(ct.expect.values().map(BTreeSet::len).sum()));
                let namespace = client_namespace(scenario, &ct.from);
                let target = crate::scenario::ServiceTarget::parse(&ct.url);
                let (port, path) = (target.as_ref().map_or(80, |t| t.port), url_path(&ct.url));
                // The clusters with an east-west gateway: each serves its network to the others.
                let gateways = gateway_clusters(scenario);
                for from in &ct.from {
                    // Different networks: a direct request to each other network's workload must fail.
                    let others: BTreeSet<&ClusterName> = ct
                        .expect
                        .values()
                        .flatten()
                        .filter(|to| network(to) != network(from))
                        .collect();
                    if !others.is_empty() {
                        let mut actions = vec![client_capture(from, &namespace, variant)];
                        for to in others.iter().copied() {
                            actions.push(Action::Capture {
                                cluster: to.clone(),
                                reading: Reading::PodIp {
                                    namespace: namespace.clone(),
                                    selector: "app=helloworld".into(),
                                },
                                into: Placeholder::helloworld_ip(to),
                                deadline_secs: 30,
                            });
                            actions.push(Action::ProbeIsolation(IsolationProbe {
                                from: from.clone(),
                                from_network: network(from).as_str().to_string(),
                                to: to.clone(),
                                to_network: network(to).as_str().to_string(),
                                namespace: namespace.clone(),
                                port,
                                path: path.clone(),
                                timeout_secs: 5,
                            }));
                        }
                        current.push(step(
                            format!("isolation/from-{from}"),
                            format!("Prove {from} reaches other networks' pods only through their gateways"),
                            StepClass::Infrastructure,
                            actions,
                        ));
                    }
                    let mut actions = vec![
                        client_capture(from, &namespace, variant),
                        Action::CheckTraffic(TrafficCheck {
                            from: from.clone(),
                            namespace: namespace.clone(),
                            url: ct.url.clone(),
                            expect: ct.expect.clone(),
                            through_gateways: others
                                .iter()
                                .map(|to| ((*to).clone(), network(to).as_str().to_string()))
                                .collect(),
                            requests,
                        }),
                    ];
                    // Different networks: once the answers came, the client's proxy must hold each other
                    // network's gateways for the service, never its pods.
                    if let (Some(t), false) = (&target, others.is_empty()) {
                        let mut networks: std::collections::BTreeMap<String, NetworkPeers> =
                            Default::default();
                        for to in &others {
                            let peers = networks.entry(network(to).as_str().to_string()).or_default();
                            peers.workloads.push((*to).clone());
                            actions.push(Action::Capture {
                                cluster: (*to).clone(),
                                reading: Reading::PodIp {
                                    namespace: namespace.clone(),
                                    selector: "app=helloworld".into(),
                                },
                                into: Placeholder::helloworld_ip(to),
                                deadline_secs: 30,
                            });
                        }
                        for g in &gateways {
                            if let Some(peers) = networks.get_mut(network(g).as_str()) {
                                peers.gateways.push((*g).clone());
                                actions.push(lb_capture(g, Placeholder::eastwest_address(g), d));
                            }
                        }
                        actions.push(Action::CheckGatewayPath(GatewayPath {
                            from: from.clone(),
                            from_network: network(from).as_str().to_string(),
                            namespace: namespace.clone(),
                            envoy_cluster: t.envoy_cluster(),
                            networks,
                        }));
                    }
                    current.push(step(
                        format!("check-traffic/from-{from}"),
                        format!("Verify cross-cluster traffic from {from}"),
                        StepClass::Check,
                        actions,
                    ));
                }
            }
        }
    }
    if !current.is_empty() {
        stages.push(Stage { steps: current });
    }

    let mut reset = Vec::new();
    if profile.outlives_run {
        let gateways = gateway_clusters(scenario);
        let installs: BTreeSet<&ClusterName> = scenario
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::InstallIstio(i) => Some(&i.cluster),
                Step::InstallRemote { cluster, .. } => Some(cluster),
                _ => None,
            })
            .collect();
        let steps = all
            .iter()
            .map(|c| {
                let mut actions = profile.before_reset.get(c).cloned().unwrap_or_default();
                actions.push(Action::StopCreatedPods {
                    cluster: c.clone(),
                    deadline_secs: STOP_PODS_SECS,
                });
                if installs.contains(c) && helm {
                    let mut releases = Vec::new();
                    if gateways.contains(c) {
                        releases.push(helm::EASTWEST_RELEASE.to_string());
                    }
                    releases.extend([helm::ISTIOD_RELEASE.to_string(), helm::BASE_RELEASE.to_string()]);
                    actions.push(Action::HelmUninstall {
                        cluster: c.clone(),
                        releases,
                        namespace: ISTIO_SYSTEM.into(),
                    });
                } else if installs.contains(c) {
                    actions.push(Action::IstioctlUninstall {
                        cluster: c.clone(),
                        build: newest_build(scenario, c),
                        revision: None,
                    });
                }
                actions.push(Action::DeleteCreatedNamespaces {
                    cluster: c.clone(),
                    deadline_secs: d.namespaces.as_secs(),
                });
                actions.push(Action::CleanState { cluster: c.clone() });
                step(
                    format!("reset/{c}"),
                    format!("Reset {c} and prove it holds nothing the run left"),
                    StepClass::Infrastructure,
                    actions,
                )
            })
            .collect();
        reset.push(Stage { steps });
    }

    let clusters = scenario
        .clusters
        .iter()
        .map(|c| PlannedCluster {
            name: c.name.clone(),
            role: c.role,
            primary: if c.role == Role::Remote {
                c.primary.clone()
            } else {
                None
            },
            network: c.network.clone(),
            needs_gateway: crate::diagnose::needs_gateway(scenario, &c.name),
        })
        .collect();
    Plan {
        scenario: scenario.name.clone(),
        guide: scenario.guide.clone(),
        source: scenario.source.display().to_string(),
        provider: profile,
        variant: variant.clone(),
        clusters,
        checked: crate::diagnose::checked_service(scenario),
        stages,
        reset,
    }
}

/// The namespace of the client in the source clusters of a check (the apps' namespace).
/// The client pod of `from`, bound to `CLIENT_POD_<FROM>`.
/// The label that picks a namespace's control-plane revision.
const REV_LABEL: &str = "istio.io/rev";
/// The revision the sidecar injector of an install without `revision:` writes into every pod it injects.
const DEFAULT_REVISION: &str = "default";
/// Seconds of steady traffic before the first change and after the last one.
const BASELINE_SECS: u64 = 5;

/// A phase name not used yet: the step keyword, suffixed `-2`, `-3`, … when it repeats.
fn phase_name(used: &mut BTreeSet<String>, keyword: &str) -> String {
    let mut name = keyword.to_string();
    let mut n = 1;
    while used.contains(&name) {
        n += 1;
        name = format!("{keyword}-{n}");
    }
    used.insert(name.clone());
    name
}

/// A provider's after-install action for a revisioned install: its istiod Deployment is `istiod-<revision>`.
fn revisioned(a: Action, revision: Option<&str>) -> Action {
    match (a, revision) {
        (
            Action::Wait {
                cluster,
                until:
                    Condition::Rollout {
                        namespace,
                        deployment,
                    },
                deadline_secs,
            },
            Some(r),
        ) if deployment == "istiod" => Action::Wait {
            cluster,
            until: Condition::Rollout {
                namespace,
                deployment: format!("istiod-{r}"),
            },
            deadline_secs,
        },
        (a, _) => a,
    }
}

/// The clusters a namespace's apps were deployed to, in declaration order.
fn deployed_clusters(scenario: &Scenario, namespace: &crate::scenario::Namespace) -> Vec<ClusterName> {
    let mut in_ns: BTreeSet<&ClusterName> = BTreeSet::new();
    for s in &scenario.steps {
        if let Step::DeployApps(d) = s
            && &d.namespace == namespace
        {
            in_ns.extend(d.helloworld.keys().chain(d.client.iter()));
        }
    }
    scenario
        .clusters
        .iter()
        .map(|c| &c.name)
        .filter(|c| in_ns.contains(c))
        .cloned()
        .collect()
}

fn client_capture(from: &ClusterName, namespace: &str, variant: &Variant) -> Action {
    Action::Capture {
        cluster: from.clone(),
        reading: Reading::PodName {
            namespace: namespace.to_string(),
            selector: format!("app={}", variant.client.name()),
        },
        into: Placeholder::client_pod(from),
        deadline_secs: 30,
    }
}

/// The path of `url` (`/hello`), `/` when it names none.
fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".into(),
    }
}

fn client_namespace(scenario: &Scenario, from: &[ClusterName]) -> String {
    scenario
        .steps
        .iter()
        .find_map(|s| match s {
            Step::DeployApps(d) if d.client.iter().any(|c| from.contains(c)) => {
                Some(d.namespace.as_str().to_string())
            }
            _ => None,
        })
        .unwrap_or_else(|| "sample".to_string())
}

// Validation guarantees every referenced cluster exists; this keeps `build` total without panicking.
fn unreachable_net() -> crate::scenario::NetworkName {
    crate::scenario::NetworkName("network1".into())
}

/// The Istio build the run leaves on cluster `c`: the last one an install or an in-place upgrade put there (a
/// canary's build, an upgrade's), else the cluster's own; the reset uninstalls with its istioctl.
fn newest_build(scenario: &Scenario, c: &ClusterName) -> Option<String> {
    scenario
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::InstallIstio(i) if &i.cluster == c => i.build.clone(),
            Step::UpgradeIstio { cluster, build } if cluster == c => Some(build.clone()),
            _ => None,
        })
        .next_back()
        .or_else(|| scenario.cluster(c).and_then(|x| x.istio.clone()))
}
