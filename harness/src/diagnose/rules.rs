//! One-line diagnoses read off collected facts. Each rule states only what the facts show; the first finding by
//! priority (the cause nearest the root) is the run's diagnosis, the rest are listed beside it.

use serde::Serialize;

use super::facts::{ClusterFacts, ClusterRole, MeshFacts};

/// Which rule produced a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A primary's istiod has no ready replica.
    IstiodDown,
    /// An east-west gateway has no LoadBalancer address.
    GatewayWithoutAddress,
    /// The app namespace lacks the injection label, so pods run without sidecars.
    SidecarMissing,
    /// A primary has no remote secret for a cluster it must discover.
    MissingRemoteSecret,
    /// Clusters distribute different root certificates.
    RootsDiffer,
    /// A cluster of a different-networks mesh lacks its network label on istio-system.
    NetworkLabelMissing,
    /// A network's east-west gateway has no 15443 `AUTO_PASSTHROUGH` configuration (expose-services).
    ServicesNotExposed,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// The one-line diagnosis.
    pub line: String,
}

/// Every finding the facts support, most fundamental first. `app_namespace` is where HelloWorld and the client run.
pub fn diagnose(facts: &MeshFacts, app_namespace: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(istiod_down(facts));
    out.extend(gateway_without_address(facts));
    out.extend(sidecar_missing(facts, app_namespace));
    out.extend(missing_remote_secret(facts));
    out.extend(roots_differ(facts));
    out.extend(network_label_missing(facts));
    out.extend(services_not_exposed(facts));
    out.sort_by_key(|f| f.rule);
    out
}

/// Whether the mesh spans networks (the different-networks guides): only then do the network rules apply.
fn multi_network(facts: &MeshFacts) -> bool {
    let nets: std::collections::BTreeSet<&str> = facts
        .clusters
        .iter()
        .map(|c| c.network.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    nets.len() > 1
}

fn network_label_missing(facts: &MeshFacts) -> Vec<Finding> {
    if !multi_network(facts) {
        return Vec::new();
    }
    facts
        .clusters
        .iter()
        .filter_map(|c| {
            let ns = c.namespaces.iter().find(|n| n.name == "istio-system" && n.exists)?;
            let why = match &ns.network {
                Some(n) if *n == c.network => return None,
                Some(n) => format!("says {n}"),
                None => "is missing".to_string(),
            };
            Some(Finding {
                rule: Rule::NetworkLabelMissing,
                line: format!(
                    "istio-system in {}: label topology.istio.io/network={} {why}, so istiod places its workloads \
                     on the wrong network",
                    c.name, c.network
                ),
            })
        })
        .collect()
}

fn services_not_exposed(facts: &MeshFacts) -> Vec<Finding> {
    if !multi_network(facts) {
        return Vec::new();
    }
    facts
        .clusters
        .iter()
        .filter(|c| c.needs_gateway)
        .filter_map(|c| {
            // A remote's gateway takes its configuration from the primary's istiod: the Gateway lives there.
            let config = match (&c.role, &c.primary) {
                (ClusterRole::Remote, Some(p)) => facts.clusters.iter().find(|o| &o.name == p)?,
                _ => c,
            };
            if config.exposes_services != Some(false) {
                return None;
            }
            Some(Finding {
                rule: Rule::ServicesNotExposed,
                line: format!(
                    "the east-west gateway of {} ({}) passes nothing from other networks: {} has no \
                     cross-network-gateway (15443 AUTO_PASSTHROUGH, samples/multicluster/expose-services.yaml)",
                    c.name, c.network, config.name
                ),
            })
        })
        .collect()
}

fn primaries(facts: &MeshFacts) -> impl Iterator<Item = &ClusterFacts> {
    facts.clusters.iter().filter(|c| c.role == ClusterRole::Primary)
}

fn istiod_down(facts: &MeshFacts) -> Vec<Finding> {
    primaries(facts)
        .filter_map(|c| {
            let process = format!("istiod-{}", c.name);
            let line = match &c.istiod {
                _ if facts.exited.contains(&process) => {
                    format!("istiod in {} is down: its process ({process}) exited", c.name)
                }
                None => format!(
                    "istiod is not installed in {} (no Deployment labelled app=istiod in istio-system)",
                    c.name
                ),
                Some(r) if r.ready == 0 => {
                    format!("istiod in {} is down: 0 of {} replicas ready", c.name, r.desired)
                }
                Some(_) => return None,
            };
            Some(Finding {
                rule: Rule::IstiodDown,
                line,
            })
        })
        .collect()
}

fn gateway_without_address(facts: &MeshFacts) -> Vec<Finding> {
    facts
        .clusters
        .iter()
        .filter(|c| c.needs_gateway)
        .filter_map(|c| {
            let line = match &c.eastwest {
                None => format!("{} has no east-west gateway Service (istio-system/istio-eastwestgateway)", c.name),
                Some(s) if s.address.is_none() => format!(
                    "the east-west gateway Service istio-system/{} in {} has no LoadBalancer address (is there an address pool?)",
                    s.name, c.name
                ),
                Some(_) => return None,
            };
            Some(Finding {
                rule: Rule::GatewayWithoutAddress,
                line,
            })
        })
        .collect()
}

fn sidecar_missing(facts: &MeshFacts, ns: &str) -> Vec<Finding> {
    facts
        .clusters
        .iter()
        .filter_map(|c| {
            let n = c.namespaces.iter().find(|n| n.name == ns && n.exists)?;
            if n.injection.as_deref() == Some("enabled") || n.revision.is_some() {
                return None;
            }
            let bare = c.pods.iter().filter(|p| p.namespace == ns && !p.sidecar).count();
            if bare == 0 {
                return None;
            }
            let why = match &n.injection {
                None => "lacks the istio-injection label".to_string(),
                Some(v) => format!("has istio-injection={v}"),
            };
            Some(Finding {
                rule: Rule::SidecarMissing,
                line: format!(
                    "namespace {ns} in {} {why}: {bare} pod(s) there run without a sidecar",
                    c.name
                ),
            })
        })
        .collect()
}

fn missing_remote_secret(facts: &MeshFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in primaries(facts) {
        for other in facts.clusters.iter().filter(|o| o.name != p.name) {
            if p.remote_secrets.iter().any(|s| s.points_at.contains(&other.name)) {
                continue;
            }
            // What istiod of `p` shows its own clients about `other`.
            let views: Vec<_> = facts
                .views
                .iter()
                .filter(|v| facts.control_plane_of(&v.client_cluster).as_deref() == Some(p.name.as_str()))
                .filter(|v| v.error.is_none())
                .collect();
            let seen_in_other = views
                .iter()
                .flat_map(|v| v.endpoints.iter())
                .filter(|e| e.cluster.as_deref() == Some(other.name.as_str()))
                .count();
            let tail = if views.is_empty() {
                format!("(istiod's endpoint view from {} was not collected)", p.name)
            } else if seen_in_other == 0 {
                format!("istiod in {} sees no endpoints in {}", p.name, other.name)
            } else {
                format!(
                    "yet istiod in {} sees {seen_in_other} endpoint(s) in {} (through another path)",
                    p.name, other.name
                )
            };
            out.push(Finding {
                rule: Rule::MissingRemoteSecret,
                line: format!("{} has no remote secret for {}: {tail}", p.name, other.name),
            });
        }
    }
    out
}

fn roots_differ(facts: &MeshFacts) -> Vec<Finding> {
    let roots: Vec<(&str, &str)> = facts
        .clusters
        .iter()
        .filter_map(|c| c.root_sha256.as_deref().map(|r| (c.name.as_str(), r)))
        .collect();
    let Some((first, first_root)) = roots.first() else {
        return Vec::new();
    };
    roots
        .iter()
        .skip(1)
        .filter(|(_, r)| r != first_root)
        .map(|(name, r)| Finding {
            rule: Rule::RootsDiffer,
            line: format!(
                "{first} and {name} have different root certificates (sha256 {first_root}…, {r}…): mTLS between them fails"
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::facts::*;
    use super::*;

    fn cluster(name: &str, role: ClusterRole) -> ClusterFacts {
        ClusterFacts {
            name: name.into(),
            role,
            primary: (role == ClusterRole::Remote).then(|| "cluster1".into()),
            needs_gateway: false,
            network: "network1".into(),
            exposes_services: None,
            remote_secrets: Vec::new(),
            root_sha256: Some("aaaa".into()),
            namespaces: vec![NamespaceFact {
                name: "sample".into(),
                exists: true,
                injection: Some("enabled".into()),
                revision: None,
                network: None,
            }],
            pods: vec![PodFact {
                namespace: "sample".into(),
                name: format!("helloworld-{name}"),
                ip: Some(format!("10.{}.0.5", name.len())),
                phase: "Running".into(),
                ready: 2,
                containers: 2,
                sidecar: true,
            }],
            istiod: (role == ClusterRole::Primary).then_some(ReplicaFact { desired: 1, ready: 1 }),
            eastwest: None,
            events: Vec::new(),
            unavailable: Vec::new(),
        }
    }

    fn secret(to: &str) -> RemoteSecretFact {
        RemoteSecretFact {
            name: format!("istio-remote-secret-{to}"),
            points_at: vec![to.into()],
            sha256: "0123456789abcdef".into(),
        }
    }

    fn view(client: &str, endpoint_clusters: &[&str]) -> EndpointView {
        EndpointView {
            client_cluster: client.into(),
            client: format!("curl.sample ({client})"),
            envoy_cluster: "outbound|5000||helloworld.sample.svc.cluster.local".into(),
            source: "test".into(),
            endpoints: endpoint_clusters
                .iter()
                .map(|c| EndpointFact {
                    address: "10.0.0.1".into(),
                    port: 5000,
                    health: "HEALTHY".into(),
                    cluster: Some(c.to_string()),
                })
                .collect(),
            error: None,
        }
    }

    fn healthy_multi_primary() -> MeshFacts {
        let mut a = cluster("cluster1", ClusterRole::Primary);
        let mut b = cluster("cluster2", ClusterRole::Primary);
        a.remote_secrets.push(secret("cluster2"));
        b.remote_secrets.push(secret("cluster1"));
        MeshFacts {
            clusters: vec![a, b],
            views: vec![
                view("cluster1", &["cluster1", "cluster2"]),
                view("cluster2", &["cluster1", "cluster2"]),
            ],
            exited: Vec::new(),
        }
    }

    /// Multi-primary on different networks as it should be: each cluster on its own network, labelled, with an
    /// addressed east-west gateway and the cross-network Gateway.
    fn healthy_multi_network() -> MeshFacts {
        let mut f = healthy_multi_primary();
        for (c, net) in f.clusters.iter_mut().zip(["network1", "network2"]) {
            c.network = net.into();
            c.needs_gateway = true;
            c.exposes_services = Some(true);
            c.eastwest = Some(ServiceFact {
                name: "istio-eastwestgateway".into(),
                kind: "LoadBalancer".into(),
                address: Some("172.18.255.200".into()),
            });
            c.namespaces.push(NamespaceFact {
                name: "istio-system".into(),
                exists: true,
                injection: None,
                revision: None,
                network: Some(net.into()),
            });
        }
        f
    }

    #[test]
    fn different_networks_name_the_unexposed_gateway_and_the_missing_label() {
        assert!(diagnose(&healthy_multi_network(), "sample").is_empty());
        let mut f = healthy_multi_network();
        f.clusters[1].exposes_services = Some(false);
        let d = diagnose(&f, "sample");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].rule, Rule::ServicesNotExposed);
        assert!(
            d[0].line.contains("east-west gateway of cluster2 (network2)"),
            "{}",
            d[0].line
        );
        assert!(
            d[0].line.contains("cluster2 has no cross-network-gateway"),
            "{}",
            d[0].line
        );
        // Unread is not absent: no finding without the fact.
        f.clusters[1].exposes_services = None;
        assert!(diagnose(&f, "sample").is_empty());
        // A remote's gateway is configured in its primary: the finding names the primary.
        let mut f = healthy_multi_network();
        f.clusters[1].role = ClusterRole::Remote;
        f.clusters[1].primary = Some("cluster1".into());
        f.clusters[1].exposes_services = Some(false);
        assert!(diagnose(&f, "sample").is_empty(), "cluster1 holds the Gateway");
        f.clusters[0].exposes_services = Some(false);
        let lines: Vec<String> = diagnose(&f, "sample").into_iter().map(|d| d.line).collect();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("east-west gateway of cluster2 (network2)")
                    && l.contains("cluster1 has no cross-network-gateway")),
            "{lines:?}"
        );
        // The label.
        let mut f = healthy_multi_network();
        f.clusters[1].namespaces[1].network = None;
        let d = diagnose(&f, "sample");
        assert_eq!(d[0].rule, Rule::NetworkLabelMissing);
        assert!(
            d[0].line
                .contains("istio-system in cluster2: label topology.istio.io/network=network2 is missing"),
            "{}",
            d[0].line
        );
        // One network: neither rule applies.
        let mut f = healthy_multi_primary();
        f.clusters[1].exposes_services = Some(false);
        assert!(diagnose(&f, "sample").is_empty());
    }

    #[test]
    fn a_healthy_mesh_has_no_diagnosis() {
        assert_eq!(diagnose(&healthy_multi_primary(), "sample"), Vec::new());
    }

    #[test]
    fn missing_remote_secret_names_both_clusters_and_the_empty_view() {
        let mut f = healthy_multi_primary();
        f.clusters[0].remote_secrets.clear();
        f.views[0] = view("cluster1", &["cluster1"]);
        let d = diagnose(&f, "sample");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].rule, Rule::MissingRemoteSecret);
        assert_eq!(
            d[0].line,
            "cluster1 has no remote secret for cluster2: istiod in cluster1 sees no endpoints in cluster2"
        );
    }

    #[test]
    fn a_remote_needs_no_secret_but_its_primary_does() {
        let mut p = cluster("cluster1", ClusterRole::Primary);
        let r = cluster("cluster2", ClusterRole::Remote);
        p.remote_secrets.push(secret("cluster2"));
        let mut f = MeshFacts {
            clusters: vec![p, r],
            views: vec![view("cluster2", &["cluster1"])],
            exited: Vec::new(),
        };
        assert!(diagnose(&f, "sample").is_empty());
        f.clusters[0].remote_secrets.clear();
        let d = diagnose(&f, "sample");
        assert_eq!(
            d[0].line,
            "cluster1 has no remote secret for cluster2: istiod in cluster1 sees no endpoints in cluster2",
            "the remote's client is served by cluster1's istiod"
        );
    }

    #[test]
    fn different_roots_are_named_with_their_fingerprints() {
        let mut f = healthy_multi_primary();
        f.clusters[1].root_sha256 = Some("bbbb".into());
        let d = diagnose(&f, "sample");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].rule, Rule::RootsDiffer);
        assert!(
            d[0].line
                .starts_with("cluster1 and cluster2 have different root certificates (sha256 aaaa…, bbbb…)")
        );
    }

    #[test]
    fn sidecar_missing_names_the_namespace() {
        let mut f = healthy_multi_primary();
        for c in &mut f.clusters {
            c.namespaces[0].injection = None;
            c.pods[0].sidecar = false;
        }
        let d = diagnose(&f, "sample");
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0].line,
            "namespace sample in cluster1 lacks the istio-injection label: 1 pod(s) there run without a sidecar"
        );
    }

    #[test]
    fn istiod_down_comes_before_what_it_causes() {
        let mut f = healthy_multi_primary();
        f.clusters[0].istiod = Some(ReplicaFact { desired: 0, ready: 0 });
        f.clusters[0].remote_secrets.clear();
        let d = diagnose(&f, "sample");
        assert_eq!(d[0].rule, Rule::IstiodDown);
        assert_eq!(d[0].line, "istiod in cluster1 is down: 0 of 0 replicas ready");
        assert_eq!(d[1].rule, Rule::MissingRemoteSecret);
    }

    #[test]
    fn an_exited_istiod_process_is_istiod_down() {
        let mut f = healthy_multi_primary();
        f.exited.push("istiod-cluster2".into());
        let d = diagnose(&f, "sample");
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].line,
            "istiod in cluster2 is down: its process (istiod-cluster2) exited"
        );
    }

    #[test]
    fn gateway_without_address_only_where_one_is_needed() {
        let mut f = healthy_multi_primary();
        f.clusters[0].eastwest = Some(ServiceFact {
            name: "istio-eastwestgateway".into(),
            kind: "LoadBalancer".into(),
            address: None,
        });
        assert!(diagnose(&f, "sample").is_empty());
        f.clusters[0].needs_gateway = true;
        let d = diagnose(&f, "sample");
        assert_eq!(d[0].rule, Rule::GatewayWithoutAddress);
        assert!(
            d[0].line
                .contains("istio-system/istio-eastwestgateway in cluster1 has no LoadBalancer address")
        );
    }

    #[test]
    fn facts_round_trip_through_json() {
        let f = healthy_multi_primary();
        let text = serde_json::to_string(&f).expect("json");
        let back: MeshFacts = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, f);
    }
}
