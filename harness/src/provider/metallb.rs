//! MetalLB, shared by the providers: the release meshconf applies, where its manifest comes from, the address
//! range a pool spec resolves to, and the pool manifest both providers apply (again while MetalLB's webhook
//! still refuses it).

use std::path::Path;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::{ClusterAccess, ProviderError};
use crate::plan::PoolSpec;
use crate::topology;

/// MetalLB release whose native manifest the providers apply.
pub const METALLB_VERSION: &str = "v0.16.1";

/// Where a user's laptop gets the native manifest.
pub(crate) fn manifest_url() -> String {
    format!(
        "https://raw.githubusercontent.com/metallb/metallb/{METALLB_VERSION}/config/manifests/metallb-native.yaml"
    )
}

/// The native manifest: the file built here when there is one, else downloaded from its release (60 s deadline).
pub(crate) async fn manifest(local: Option<&Path>) -> Result<String, ProviderError> {
    if let Some(path) = local {
        return std::fs::read_to_string(path)
            .map_err(|e| ProviderError::io(format!("read MetalLB manifest {}", path.display()), e));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = manifest_url();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| ProviderError::Other(e.to_string()))?;
    let resp = client
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| ProviderError::Other(format!("download {url}: {e}")))?;
    resp.text()
        .await
        .map_err(|e| ProviderError::Other(format!("download {url}: {e}")))
}

/// The address range of `pool`; `subnet` is the kind network's IPv4 subnet, for pools carved from it.
pub(crate) fn range(pool: &PoolSpec, subnet: Option<Ipv4Net>) -> Result<String, ProviderError> {
    match pool {
        PoolSpec::Fixed { range } => Ok(range.clone()),
        PoolSpec::TopOfKindNetwork { index, of, addresses } => {
            let subnet = subnet
                .ok_or_else(|| ProviderError::Other(format!("{pool:?} needs the kind network's subnet")))?;
            let pools = topology::carve_pools(subnet, *of, *addresses)
                .map_err(|e| ProviderError::Other(e.to_string()))?;
            Ok(pools
                .get(*index)
                .ok_or_else(|| ProviderError::Other(format!("no address range {index} in {subnet}")))?
                .as_range())
        }
    }
}

/// Applies the pool `names` with `range`, again while MetalLB's webhook refuses it (it fails closed for a few
/// seconds after its pods are Ready); up to `attempts` tries, 5 s apart.
pub(crate) async fn apply_pool(
    cluster: &ClusterAccess,
    names: &(String, String),
    range: &str,
    attempts: u32,
) -> Result<(), ProviderError> {
    let yaml = topology::metallb_pool_yaml(&names.0, &names.1, range);
    let mut last = None;
    for attempt in 1..=attempts.max(1) {
        match cluster.applier.apply_yaml(&yaml, None).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = Some(e);
                if attempt < attempts {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }
    Err(last
        .map(ProviderError::Kube)
        .unwrap_or_else(|| ProviderError::Other("MetalLB pool not applied".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_pool_is_its_range_and_a_carved_one_needs_the_subnet() {
        let fixed = PoolSpec::Fixed {
            range: "192.0.2.128-192.0.2.143".into(),
        };
        assert_eq!(
            range(&fixed, None).ok().as_deref(),
            Some("192.0.2.128-192.0.2.143")
        );
        let carved = PoolSpec::TopOfKindNetwork {
            index: 1,
            of: 2,
            addresses: 50,
        };
        assert!(range(&carved, None).is_err());
        let subnet: Ipv4Net = "172.30.0.0/16".parse().expect("subnet");
        assert_eq!(
            range(&carved, Some(subnet)).ok().as_deref(),
            Some("172.30.255.154-172.30.255.203")
        );
        let beyond = PoolSpec::TopOfKindNetwork {
            index: 2,
            of: 2,
            addresses: 50,
        };
        assert!(range(&beyond, Some(subnet)).is_err());
    }
}
