//! What a cluster holds that a mesh install touches, as names: namespaces, CRDs, mutating and validating
//! webhooks, ClusterRoles and their bindings, every object of an Istio API group in any namespace, and MetalLB's
//! pools and advertisements (what gives the next run its addresses). Taken before a run on clusters that outlive
//! it and again after its reset: anything new is left over, anything gone was taken from the cluster, by name.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::Discovery;
use serde::Serialize;

use super::KubeError;

/// How long discovery is asked again while an API group is going away under it.
const DISCOVERY_SETTLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The names a cluster holds, each as `kind/name` or `kind/namespace/name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Every object named, sorted.
    pub objects: BTreeSet<String>,
}

impl Snapshot {
    /// What `after` holds that `self` (taken before) did not: what a run left behind, sorted.
    pub fn left_over(&self, after: &Snapshot) -> Vec<String> {
        after.objects.difference(&self.objects).cloned().collect()
    }

    /// What `self` (taken before) held that `after` does not: what a run took away (a MetalLB pool a fault
    /// removed, a namespace it deleted), sorted.
    pub fn missing(&self, after: &Snapshot) -> Vec<String> {
        self.objects.difference(&after.objects).cloned().collect()
    }

    /// Whether Istio was there already: an Istio CRD or the `istio-system` namespace. A reset must not purge an
    /// Istio the run did not install.
    pub fn holds_istio(&self) -> bool {
        self.objects.iter().any(|o| {
            o == "Namespace/istio-system"
                || (o.starts_with("CustomResourceDefinition/") && o.ends_with(".istio.io"))
        })
    }

    /// How many objects of each kind, `kind=N` (for reports: growth over reused runs shows here).
    pub fn counts(&self) -> String {
        let mut by: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for o in &self.objects {
            *by.entry(o.split('/').next().unwrap_or_default()).or_default() += 1;
        }
        by.iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

async fn names<K>(api: Api<K>, kind: &str, cluster: &str) -> Result<Vec<String>, KubeError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let l = api
        .list(&ListParams::default())
        .await
        .map_err(|source| KubeError::Api {
            what: format!("list {kind}s in {cluster}"),
            source,
        })?;
    Ok(l.items
        .iter()
        // An object being deleted is on its way out, not left over.
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .filter_map(|o| o.meta().name.clone().map(|n| format!("{kind}/{n}")))
        .collect())
}

/// Takes the snapshot of the cluster `client` talks to; `cluster` names it in errors.
pub async fn take(client: &kube::Client, cluster: &str) -> Result<Snapshot, KubeError> {
    let mut objects = BTreeSet::new();
    let c = client.clone();
    objects.extend(names(Api::<Namespace>::all(c.clone()), "Namespace", cluster).await?);
    objects.extend(
        names(
            Api::<CustomResourceDefinition>::all(c.clone()),
            "CustomResourceDefinition",
            cluster,
        )
        .await?,
    );
    objects.extend(
        names(
            Api::<MutatingWebhookConfiguration>::all(c.clone()),
            "MutatingWebhookConfiguration",
            cluster,
        )
        .await?,
    );
    objects.extend(
        names(
            Api::<ValidatingWebhookConfiguration>::all(c.clone()),
            "ValidatingWebhookConfiguration",
            cluster,
        )
        .await?,
    );
    objects.extend(names(Api::<ClusterRole>::all(c.clone()), "ClusterRole", cluster).await?);
    objects.extend(
        names(
            Api::<ClusterRoleBinding>::all(c.clone()),
            "ClusterRoleBinding",
            cluster,
        )
        .await?,
    );
    // Every object of an Istio API group (networking, security, telemetry, extensions, install …) and of MetalLB's,
    // any namespace.
    // A group whose CRDs are being deleted (the reset's purge) is listed, then gone when its resources are asked
    // for: discovery answers 404 until the API server's view settles, so it is asked again, within a deadline.
    let deadline = std::time::Instant::now() + DISCOVERY_SETTLE;
    let discovery = loop {
        let d = Discovery::new(c.clone())
            .filter(&[
                "networking.istio.io",
                "security.istio.io",
                "telemetry.istio.io",
                "extensions.istio.io",
                "install.istio.io",
                "metallb.io",
            ])
            .run()
            .await;
        match d {
            Ok(d) => break d,
            Err(kube::Error::Api(s)) if s.code == 404 && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(source) => {
                return Err(KubeError::Api {
                    what: format!(
                        "discover the Istio API groups of {cluster} (asked again for {DISCOVERY_SETTLE:?} while \
                         404)"
                    ),
                    source,
                });
            }
        }
    };
    for group in discovery.groups() {
        // Every kind at its most stable version: a group's preferred version need not serve every kind (metallb.io
        // prefers v1beta2, which has only BGPPeer; EnvoyFilter is v1alpha3 only), and the pool a fault removed
        // went unseen.
        for (ar, caps) in group.resources_by_stability() {
            if !caps.supports_operation(kube::discovery::verbs::LIST) {
                continue;
            }
            // Cluster-scoped or not, `all` lists every object of the resource.
            let api: Api<DynamicObject> = Api::all_with(c.clone(), &ar);
            let l = match api.list(&ListParams::default()).await {
                Ok(l) => l,
                // The resource went between discovery and the list (a purge deleting the CRDs while the
                // snapshot runs): it holds nothing now.
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(source) => {
                    return Err(KubeError::Api {
                        what: format!("list {}.{} in {cluster}", ar.plural, ar.group),
                        source,
                    });
                }
            };
            for o in l.items {
                if o.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let name = o.metadata.name.unwrap_or_default();
                objects.insert(match o.metadata.namespace {
                    Some(ns) => format!("{}/{ns}/{name}", ar.kind),
                    None => format!("{}/{name}", ar.kind),
                });
            }
        }
    }
    Ok(Snapshot { objects })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(v: &[&str]) -> Snapshot {
        Snapshot {
            objects: v.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn what_is_new_after_the_run_is_left_over_and_what_went_is_missing() {
        let before = snap(&["Namespace/default", "Namespace/user-owned", "ClusterRole/admin"]);
        let after = snap(&[
            "Namespace/default",
            "ClusterRole/admin",
            "ClusterRole/istiod-istio-system",
            "CustomResourceDefinition/gateways.networking.istio.io",
        ]);
        assert_eq!(
            before.left_over(&after),
            vec![
                "ClusterRole/istiod-istio-system".to_string(),
                "CustomResourceDefinition/gateways.networking.istio.io".to_string()
            ]
        );
        assert!(before.left_over(&before).is_empty());
        // What went is no leftover, but it is missing: the cluster is not as the run found it.
        assert_eq!(before.missing(&after), vec!["Namespace/user-owned".to_string()]);
        assert!(after.missing(&after).is_empty());
        assert_eq!(
            after.counts(),
            "ClusterRole=2 CustomResourceDefinition=1 Namespace=1"
        );
    }
}
