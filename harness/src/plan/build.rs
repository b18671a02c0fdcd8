//! Scenario + variant + provider profile → plan. Pure: no I/O, so plans render without any cluster.

use std::collections::BTreeSet;

use super::types::*;
use crate::mesh::{self, DISCOVERY_ADDRESS_VAR, Variant};
use crate::scenario::{ClusterName, Scenario, Step, Trust};
use crate::topology;
use crate::verify;

fn step(id: String, title: String, class: StepClass, action: Action) -> PlannedStep {
    PlannedStep {
        id: StepId(id),
        title,
        class,
        action,
    }
}

fn touched(s: &Step) -> Vec<&ClusterName> {
    match s {
        Step::InstallIstio(i) => vec![&i.cluster],
        Step::EastwestGateway { cluster } | Step::ExposeIstiod { cluster } => vec![cluster],
        Step::RemoteSecret { into, .. } => vec![into],
        Step::InstallRemote { cluster, .. } => vec![cluster],
        Step::DeployApps(d) => d.helloworld.keys().chain(d.client.iter()).collect(),
        Step::CheckTraffic(c) => c.from.iter().collect(),
    }
}

/// Builds the plan for `scenario` as driven by `variant` on the provider described by `profile`.
pub fn build(scenario: &Scenario, variant: &Variant, profile: ProviderProfile) -> Plan {
    let mut stages: Vec<Stage> = Vec::new();
    let all: Vec<ClusterName> = scenario.clusters.iter().map(|c| c.name.clone()).collect();

    stages.push(Stage {
        steps: vec![step(
            "create-clusters".into(),
            format!("Create clusters ({})", profile.kind.as_str()),
            StepClass::Infrastructure,
            Action::CreateClusters {
                clusters: all.clone(),
            },
        )],
    });

    let mut infra = Vec::new();
    if !profile.network_commands.is_empty() {
        let routes = topology::same_network_routes(&scenario.clusters);
        if !routes.is_empty() {
            infra.push(step(
                "connect-networks".into(),
                "Route pod and service CIDRs between nodes on the same network".into(),
                StepClass::Infrastructure,
                Action::ConnectNetworks { routes },
            ));
        }
    }
    if topology::needs_load_balancers(scenario) {
        for c in &all {
            if profile.lb_commands.get(c).is_some_and(|v| !v.is_empty()) {
                infra.push(step(
                    format!("load-balancers/{c}"),
                    format!("LoadBalancer addresses for {c} (MetalLB)"),
                    StepClass::Infrastructure,
                    Action::LoadBalancers { cluster: c.clone() },
                ));
            }
        }
    }
    if !infra.is_empty() {
        stages.push(Stage { steps: infra });
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
                        Action::PlugCaCerts { cluster: c.clone() },
                    )
                })
                .collect(),
        });
    }

    let overlay = |c: &ClusterName| profile.overlays.get(c).cloned().unwrap_or_default();
    let mut current: Vec<PlannedStep> = Vec::new();
    let mut current_kind: Option<&'static str> = None;
    let mut current_clusters: BTreeSet<ClusterName> = BTreeSet::new();

    for s in &scenario.steps {
        let cl: Vec<ClusterName> = touched(s).into_iter().cloned().collect();
        let joinable = current_kind == Some(s.keyword())
            && !matches!(s, Step::DeployApps(_) | Step::CheckTraffic(_))
            && cl.iter().all(|c| !current_clusters.contains(c));
        if !joinable && !current.is_empty() {
            stages.push(Stage {
                steps: std::mem::take(&mut current),
            });
            current_clusters.clear();
        }
        current_kind = Some(s.keyword());
        current_clusters.extend(cl.iter().cloned());
        match s {
            Step::InstallIstio(i) => {
                let c = &i.cluster;
                let network = scenario
                    .cluster(c)
                    .map(|x| x.network.clone())
                    .unwrap_or_else(unreachable_net);
                current.push(step(
                    format!("install-istio/{c}"),
                    format!("Configure {c} as a primary"),
                    StepClass::Mesh,
                    Action::InstallIstio {
                        cluster: c.clone(),
                        file: format!("{c}.yaml"),
                        operator: mesh::primary_operator(
                            &scenario.mesh_id,
                            c,
                            &network,
                            i.external_istiod,
                            variant,
                        ),
                        overlay: overlay(c),
                    },
                ));
            }
            Step::EastwestGateway { cluster } => {
                let network = scenario
                    .cluster(cluster)
                    .map(|x| x.network.clone())
                    .unwrap_or_else(unreachable_net);
                current.push(step(
                    format!("eastwest-gateway/{cluster}"),
                    format!("Install the east-west gateway in {cluster}"),
                    StepClass::Mesh,
                    Action::EastwestGateway {
                        cluster: cluster.clone(),
                        network: network.clone(),
                        file: format!("eastwest-{cluster}.yaml"),
                        operator: mesh::eastwest_operator(&network),
                        overlay: overlay(cluster),
                    },
                ));
            }
            Step::ExposeIstiod { cluster } => current.push(step(
                format!("expose-istiod/{cluster}"),
                format!("Expose the control plane in {cluster}"),
                StepClass::Mesh,
                Action::ExposeIstiod {
                    cluster: cluster.clone(),
                    manifest: mesh::expose_istiod(variant.networking_api),
                },
            )),
            Step::RemoteSecret { from, into } => current.push(step(
                format!("remote-secret/{from}-into-{into}"),
                format!("Give {into} access to the API server of {from}"),
                StepClass::Mesh,
                Action::RemoteSecret {
                    from: from.clone(),
                    into: into.clone(),
                },
            )),
            Step::InstallRemote { cluster, primary } => {
                let network = scenario
                    .cluster(cluster)
                    .map(|x| x.network.clone())
                    .unwrap_or_else(unreachable_net);
                current.push(step(
                    format!("install-remote/{cluster}"),
                    format!("Configure {cluster} as a remote of {primary}"),
                    StepClass::Mesh,
                    Action::InstallRemote {
                        cluster: cluster.clone(),
                        primary: primary.clone(),
                        file: format!("{cluster}.yaml"),
                        operator_template: mesh::remote_operator(
                            &scenario.mesh_id,
                            cluster,
                            &network,
                            &format!("${{{DISCOVERY_ADDRESS_VAR}}}"),
                            variant,
                        ),
                        overlay: overlay(cluster),
                    },
                ));
            }
            Step::DeployApps(d) => {
                let mut clusters: BTreeSet<&ClusterName> = d.helloworld.keys().collect();
                clusters.extend(d.client.iter());
                for c in all.iter().filter(|c| clusters.contains(c)) {
                    current.push(step(
                        format!("deploy-apps/{c}"),
                        format!("Deploy HelloWorld and {} in {c}", variant.client.name()),
                        StepClass::Mesh,
                        Action::DeployApps {
                            cluster: c.clone(),
                            namespace: d.namespace.clone(),
                            injection: d.injection,
                            versions: d.helloworld.get(c).cloned().into_iter().collect(),
                            client: d.client.contains(c),
                        },
                    ));
                }
            }
            Step::CheckTraffic(ct) => {
                let requests = ct
                    .requests
                    .unwrap_or_else(|| verify::default_requests(ct.expect.values().map(BTreeSet::len).sum()));
                let namespace = scenario
                    .steps
                    .iter()
                    .find_map(|s| match s {
                        Step::DeployApps(d) if d.client.iter().any(|c| ct.from.contains(c)) => {
                            Some(d.namespace.clone())
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| crate::scenario::Namespace::new("sample"));
                for from in &ct.from {
                    current.push(step(
                        format!("check-traffic/from-{from}"),
                        format!("Verify cross-cluster traffic from {from}"),
                        StepClass::Check,
                        Action::CheckTraffic {
                            from: from.clone(),
                            namespace: namespace.clone(),
                            url: ct.url.clone(),
                            expect: ct.expect.clone(),
                            requests,
                        },
                    ));
                }
            }
        }
    }
    if !current.is_empty() {
        stages.push(Stage { steps: current });
    }

    Plan {
        scenario: scenario.name.clone(),
        guide: scenario.guide.clone(),
        source: scenario.source.display().to_string(),
        provider: profile,
        variant: variant.clone(),
        stages,
    }
}

// Validation guarantees every referenced cluster exists; this keeps `build` total without panicking.
fn unreachable_net() -> crate::scenario::NetworkName {
    crate::scenario::NetworkName("network1".into())
}
