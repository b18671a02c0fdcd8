//! The kind network and what crosses it: the `kind` Docker network meshconf creates (with the rule that counts
//! packets leaving it), node addresses, routes between nodes of one network, and the in-mesh kubeconfig (the API
//! server at the node address, for istiod in another cluster).

use std::path::Path;

use ipnet::Ipv4Net;

use super::super::egress::EgressRule;
use super::super::{Performed, ProviderError};
use super::{KindProvider, write_private};
use crate::plan::Placeholder;
use crate::scenario::ClusterName;
use crate::topology;

impl KindProvider {
    /// `kind get kubeconfig --internal` names the API server by its container hostname, which istiod in the other
    /// cluster cannot resolve, so it is rewritten to the node's address on the kind network (as Istio's own kind
    /// provisioner does) and written to `file`.
    pub(super) async fn write_in_mesh_kubeconfig(
        &self,
        cluster: &ClusterName,
        name: &str,
        file: &Path,
    ) -> Result<Performed, ProviderError> {
        let ip = self.node_ip(cluster).await?;
        let internal = self.kind().internal_kubeconfig(name).run().await?;
        let rewritten = in_mesh_kubeconfig(&internal.stdout, name, &ip)?;
        write_private(file, &rewritten)?;
        Ok(Performed {
            bound: vec![(Placeholder::node_ip(cluster), ip.clone())],
            log: vec![format!(
                "{}: server https://{ip}:6443 (content not logged)",
                file.display()
            )],
            ..Performed::default()
        })
    }

    /// A route on `on_node` to `destination` via the node of `via`, and `keep_source` (own pods) not masqueraded
    /// towards it.
    pub(super) async fn route(
        &self,
        on: &ClusterName,
        on_node: &str,
        destination: Ipv4Net,
        via: &ClusterName,
        keep_source: Ipv4Net,
    ) -> Result<Performed, ProviderError> {
        let ip = self.node_ip(via).await?;
        let docker = self.docker();
        let d = destination.to_string();
        docker.add_route(on_node, &d, &ip).run().await?;
        docker
            .keep_source(on_node, &keep_source.to_string(), &d)
            .run()
            .await?;
        Ok(Performed {
            bound: vec![(Placeholder::node_ip(via), ip.clone())],
            log: vec![format!("{on}: route {destination} via {ip} ({via})")],
            ..Performed::default()
        })
    }

    pub(super) async fn node_ip(&self, c: &ClusterName) -> Result<String, ProviderError> {
        let out = self.docker().node_ip(&self.node(c)).run().await?;
        let ip = out.stdout.trim().to_string();
        ip.parse::<std::net::Ipv4Addr>().map_err(|_| {
            ProviderError::Other(format!(
                "node {} has no IPv4 address on the kind network: {ip:?}",
                self.node(c)
            ))
        })?;
        Ok(ip)
    }

    pub(super) async fn prepare_network(&self) -> Result<Ipv4Net, ProviderError> {
        let docker = self.docker();
        let subnet = match docker.inspect_kind_network().run().await {
            Ok(out) => {
                topology::kind_network_ipv4(&out.stdout).map_err(|e| ProviderError::Other(e.to_string()))?
            }
            Err(_) => {
                docker
                    .create_kind_network(&self.opts.subnet.to_string())
                    .run()
                    .await
                    .map_err(|e| {
                        ProviderError::Other(format!(
                            "cannot create the kind network with subnet {} (set MESHCONF_KIND_SUBNET to a free one): {e}",
                            self.opts.subnet
                        ))
                    })?;
                self.update(|s| s.network_created = true);
                self.opts.subnet
            }
        };
        let run_id = self
            .opts
            .run_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "run".into());
        let inspect = docker.inspect_kind_network().run().await?;
        let bridge = topology::kind_network_bridge(&inspect.stdout)
            .map_err(|e| ProviderError::Other(e.to_string()))?;
        let rule = EgressRule::new(&bridge, &run_id);
        match rule.arm().await {
            Ok(()) => self.update(|s| s.egress = Some(rule.clone())),
            Err(why) => {
                tracing::warn!("egress is not counted: {why}");
                if let Ok(mut u) = self.egress_unmeasured.lock() {
                    *u = Some(why);
                }
            }
        }
        Ok(subnet)
    }
}

/// Rewrites `kind get kubeconfig --internal` output (server `https://<name>-control-plane:6443`) to the node's
/// address on the kind network, so an istiod in another cluster can reach it.
pub fn in_mesh_kubeconfig(internal: &str, cluster: &str, node_ip: &str) -> Result<String, ProviderError> {
    let from = format!("https://{cluster}-control-plane:6443");
    if !internal.contains(&from) {
        return Err(ProviderError::Other(format!(
            "`kind get kubeconfig --internal --name {cluster}` did not name the server {from}"
        )));
    }
    Ok(internal.replace(&from, &format!("https://{node_ip}:6443")))
}
