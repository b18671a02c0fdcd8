//! What a cluster holds that a mesh install touches, as names: namespaces, CRDs, mutating and validating
//! webhooks, ClusterRoles and their bindings, and every object of an Istio API group in any namespace. Taken
//! before a run on clusters that outlive it and again after its reset; anything new is left over, by name.

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
    // Every object of an Istio API group (networking, security, telemetry, extensions, install …), any namespace.
    let discovery = Discovery::new(c.clone())
        .filter(&[
            "networking.istio.io",
            "security.istio.io",
            "telemetry.istio.io",
            "extensions.istio.io",
            "install.istio.io",
        ])
        .run()
        .await
        .map_err(|source| KubeError::Api {
            what: format!("discover the Istio API groups of {cluster}"),
            source,
        })?;
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(kube::discovery::verbs::LIST) {
                continue;
            }
            // Cluster-scoped or not, `all` lists every object of the resource.
            let api: Api<DynamicObject> = Api::all_with(c.clone(), &ar);
            let l = api
                .list(&ListParams::default())
                .await
                .map_err(|source| KubeError::Api {
                    what: format!("list {}.{} in {cluster}", ar.plural, ar.group),
                    source,
                })?;
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
    fn what_is_new_after_the_run_is_left_over_and_what_went_is_not() {
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
        assert_eq!(
            after.counts(),
            "ClusterRole=2 CustomResourceDefinition=1 Namespace=1"
        );
    }
}
