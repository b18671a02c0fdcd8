//! Topology → infrastructure: MetalLB address pools carved from the `kind` Docker network, and the static routes
//! that let pods on one network reach a peer cluster's pods and services.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::scenario::{Cluster, ClusterName, Scenario};

/// Errors computing infrastructure from the topology and the Docker network.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// `docker network inspect kind` output did not parse.
    #[error("cannot read `docker network inspect kind` output: {0}")]
    BadInspect(String),
    /// The network has no IPv4 subnet.
    #[error("docker network 'kind' has no IPv4 subnet (IPAM.Config lists: {0})")]
    NoIpv4(String),
    /// Not enough addresses for every cluster's pool.
    #[error(
        "docker network 'kind' subnet {subnet} has {available} usable addresses, fewer than the {needed} needed \
         ({clusters} clusters x {per_cluster} LoadBalancer addresses + headroom for nodes); recreate the network \
         with a larger subnet or lower --lb-addresses"
    )]
    TooSmall {
        subnet: Ipv4Net,
        available: u64,
        needed: u64,
        clusters: usize,
        per_cluster: u32,
    },
}

#[derive(Debug, Deserialize)]
struct InspectNetwork {
    #[serde(rename = "Id", default)]
    id: String,
    #[serde(rename = "IPAM")]
    ipam: InspectIpam,
    #[serde(rename = "Options", default)]
    options: std::collections::BTreeMap<String, String>,
}

/// The one network `docker network inspect kind` describes.
fn first_network(inspect_json: &str) -> Result<InspectNetwork, TopologyError> {
    let nets: Vec<InspectNetwork> =
        serde_json::from_str(inspect_json).map_err(|e| TopologyError::BadInspect(e.to_string()))?;
    nets.into_iter()
        .next()
        .ok_or_else(|| TopologyError::BadInspect("empty array".into()))
}

/// The Linux bridge behind the `kind` network in `docker network inspect kind` JSON: the name set with
/// `com.docker.network.bridge.name`, else Docker's `br-<first 12 characters of the id>`.
pub fn kind_network_bridge(inspect_json: &str) -> Result<String, TopologyError> {
    let net = first_network(inspect_json)?;
    if let Some(n) = net.options.get("com.docker.network.bridge.name") {
        return Ok(n.clone());
    }
    net.id
        .get(..12)
        .map(|id| format!("br-{id}"))
        .ok_or_else(|| TopologyError::BadInspect(format!("network id {:?} is too short", net.id)))
}

#[derive(Debug, Deserialize)]
struct InspectIpam {
    #[serde(rename = "Config", default)]
    config: Option<Vec<InspectIpamConfig>>,
}

#[derive(Debug, Deserialize)]
struct InspectIpamConfig {
    #[serde(rename = "Subnet", default)]
    subnet: Option<String>,
}

/// Finds the IPv4 subnet in `docker network inspect kind` JSON. Docker may list the IPv6 ULA first, and the
/// subnet is whatever Docker chose, so neither position nor 172.18.0.0/16 is assumed.
pub fn kind_network_ipv4(inspect_json: &str) -> Result<Ipv4Net, TopologyError> {
    let net = first_network(inspect_json)?;
    let subnets: Vec<String> = net
        .ipam
        .config
        .iter()
        .flatten()
        .filter_map(|c| c.subnet.clone())
        .collect();
    subnets
        .iter()
        .find_map(|s| s.parse::<Ipv4Net>().ok())
        .ok_or_else(|| TopologyError::NoIpv4(subnets.join(", ")))
}

/// An inclusive address range for one cluster's MetalLB `IPAddressPool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LbPool {
    /// First address.
    pub first: Ipv4Addr,
    /// Last address.
    pub last: Ipv4Addr,
}

impl LbPool {
    /// MetalLB's range syntax, `a.b.c.d-e.f.g.h`.
    pub fn as_range(&self) -> String {
        format!("{}-{}", self.first, self.last)
    }

    /// Number of addresses in the pool.
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    /// Whether the pool is empty (never, for pools built here).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Carves disjoint pools of `per_cluster` addresses from the top of `subnet`, one per cluster, in order.
/// Docker hands out container addresses from the bottom, so the top end stays free; the broadcast address and
/// one address below every pool block are skipped.
pub fn carve_pools(subnet: Ipv4Net, clusters: usize, per_cluster: u32) -> Result<Vec<LbPool>, TopologyError> {
    const NODE_HEADROOM: u64 = 64;
    let hosts = u64::from(u32::from(subnet.broadcast())) - u64::from(u32::from(subnet.network())) - 1;
    let needed = clusters as u64 * (u64::from(per_cluster) + 1) + NODE_HEADROOM;
    if hosts < needed || per_cluster == 0 {
        return Err(TopologyError::TooSmall {
            subnet,
            available: hosts,
            needed,
            clusters,
            per_cluster,
        });
    }
    let top = u32::from(subnet.broadcast()) - 1; // last usable host
    let mut pools = Vec::with_capacity(clusters);
    let mut end = top;
    for _ in 0..clusters {
        let first = end - per_cluster + 1;
        pools.push(LbPool {
            first: Ipv4Addr::from(first),
            last: Ipv4Addr::from(end),
        });
        end = first - 2;
    }
    Ok(pools)
}

/// A static route to add on one kind node so that pods reach a peer cluster on the same network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRoute {
    /// The cluster whose node gets the route.
    pub on: ClusterName,
    /// The peer cluster the route leads to.
    pub to: ClusterName,
    /// Destination CIDR (the peer's pod or service subnet).
    pub destination: Ipv4Net,
}

/// Routes for every pair of clusters on the same network: each node routes the peer's pod and service CIDRs via
/// the peer node. Without them pod-to-pod traffic across clusters (and so the v1/v2 toggle) cannot happen.
/// Clusters on different networks get none: their traffic goes through east-west gateways.
pub fn same_network_routes(clusters: &[Cluster]) -> Vec<NodeRoute> {
    let mut routes = Vec::new();
    for a in clusters {
        for b in clusters {
            if a.name != b.name && a.network == b.network {
                for dest in [b.subnets.pods, b.subnets.services] {
                    routes.push(NodeRoute {
                        on: a.name.clone(),
                        to: b.name.clone(),
                        destination: dest,
                    });
                }
            }
        }
    }
    routes
}

/// The kind cluster name for a scenario cluster: prefixed so runs never collide with a user's own clusters.
pub fn kind_cluster_name(prefix: &str, cluster: &ClusterName) -> String {
    format!("{prefix}-{cluster}")
}

/// Whether the scenario's clusters sit on more than one network (the different-networks guides).
pub fn multi_network(s: &Scenario) -> bool {
    let nets: std::collections::BTreeSet<&str> = s.clusters.iter().map(|c| c.network.as_str()).collect();
    nets.len() > 1
}

/// Whether any cluster of the scenario needs a LoadBalancer address (an east-west gateway).
pub fn needs_load_balancers(s: &Scenario) -> bool {
    s.steps
        .iter()
        .any(|st| matches!(st, crate::scenario::Step::EastwestGateway { .. }))
}

/// MetalLB's `IPAddressPool` `pool` with `range` and the `L2Advertisement` `l2` announcing it, as one manifest:
/// what the plan shows and what the provider applies.
pub fn metallb_pool_yaml(pool: &str, l2: &str, range: &str) -> String {
    format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {pool}\n  namespace: metallb-system\nspec:\n  addresses: [\"{range}\"]\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: {l2}\n  namespace: metallb-system\nspec:\n  ipAddressPools: [{pool}]\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_found_even_when_ipv6_is_listed_first() {
        let json = r#"[{"Name":"kind","IPAM":{"Driver":"default","Config":[
            {"Subnet":"fc00:f853:ccd:e793::/64","Gateway":"fc00:f853:ccd:e793::1"},
            {"Subnet":"172.19.0.0/16","Gateway":"172.19.0.1"}]}}]"#;
        assert_eq!(
            kind_network_ipv4(json).expect("ipv4"),
            "172.19.0.0/16".parse::<Ipv4Net>().expect("net")
        );
    }

    #[test]
    fn no_ipv4_is_a_clear_error() {
        let json = r#"[{"IPAM":{"Config":[{"Subnet":"fc00::/64"}]}}]"#;
        let e = kind_network_ipv4(json).expect_err("no ipv4");
        assert!(e.to_string().contains("fc00::/64"));
        assert!(kind_network_ipv4("not json").is_err());
        let named = r#"[{"Id":"164013477d1584d307f5","IPAM":{"Config":[]},"Options":{"com.docker.network.bridge.name":"meshconf-kind"}}]"#;
        assert_eq!(kind_network_bridge(named).expect("bridge"), "meshconf-kind");
        let plain = r#"[{"Id":"164013477d1584d307f5","IPAM":{"Config":[]}}]"#;
        assert_eq!(kind_network_bridge(plain).expect("bridge"), "br-164013477d15");
        assert!(kind_network_bridge(r#"[{"Id":"x","IPAM":{}}]"#).is_err());
    }

    #[test]
    fn pools_are_disjoint_inside_the_subnet_and_sized() {
        let net: Ipv4Net = "172.18.0.0/16".parse().expect("net");
        let pools = carve_pools(net, 3, 50).expect("fits");
        assert_eq!(pools[0].as_range(), "172.18.255.205-172.18.255.254");
        for p in &pools {
            assert_eq!(p.len(), 50);
            assert!(net.contains(&p.first) && net.contains(&p.last));
        }
        for (i, a) in pools.iter().enumerate() {
            for b in &pools[i + 1..] {
                assert!(a.last < b.first || b.last < a.first, "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn small_networks_are_refused_with_numbers() {
        let net: Ipv4Net = "10.0.0.0/26".parse().expect("net");
        let e = carve_pools(net, 2, 50).expect_err("too small");
        let msg = e.to_string();
        assert!(
            msg.contains("62 usable") && msg.contains("2 clusters x 50"),
            "{msg}"
        );
    }
}
