//! Server-side apply of multi-document manifests, resolving each kind through API discovery (refreshed when a
//! kind is unknown, e.g. right after its CRD was applied).

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use tokio::sync::Mutex;

use super::KubeError;

/// Field manager for every object meshconf applies.
pub const FIELD_MANAGER: &str = "meshconf";

/// Parses a YAML stream into objects, skipping empty documents (istioctl and Helm emit them).
pub fn parse_documents(yaml: &str) -> Result<Vec<serde_json::Value>, KubeError> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| KubeError::Manifest(format!("invalid YAML: {e}")))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Applies objects to one cluster.
pub struct Applier {
    client: Client,
    discovery: Mutex<Option<Discovery>>,
}

impl Applier {
    /// An applier for a cluster.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            discovery: Mutex::new(None),
        }
    }

    async fn refresh(&self) -> Result<(), KubeError> {
        let d = Discovery::new(self.client.clone());
        let d = match d.run_aggregated().await {
            Ok(d) => d,
            Err(_) => Discovery::new(self.client.clone())
                .run()
                .await
                .map_err(|source| KubeError::Api {
                    what: "API discovery".into(),
                    source,
                })?,
        };
        *self.discovery.lock().await = Some(d);
        Ok(())
    }

    async fn resolve(
        &self,
        gvk: &GroupVersionKind,
    ) -> Result<(kube::discovery::ApiResource, Scope), KubeError> {
        for attempt in 0..2 {
            if attempt == 1 || self.discovery.lock().await.is_none() {
                self.refresh().await?;
            }
            if let Some(d) = self.discovery.lock().await.as_ref()
                && let Some((ar, caps)) = d.resolve_gvk(gvk)
            {
                return Ok((ar, caps.scope));
            }
        }
        Err(KubeError::Manifest(format!(
            "the cluster does not serve {}/{} {}: is its CRD installed?",
            gvk.group, gvk.version, gvk.kind
        )))
    }

    /// Applies a YAML stream; objects without a namespace go to `namespace` when namespaced.
    pub async fn apply_yaml(&self, yaml: &str, namespace: Option<&str>) -> Result<Vec<String>, KubeError> {
        self.apply_values(parse_documents(yaml)?, namespace).await
    }

    /// Applies objects in order; returns `Kind ns/name` for each.
    pub async fn apply_values(
        &self,
        docs: Vec<serde_json::Value>,
        namespace: Option<&str>,
    ) -> Result<Vec<String>, KubeError> {
        let mut applied = Vec::new();
        for doc in docs {
            let mut obj: DynamicObject = serde_json::from_value(doc)
                .map_err(|e| KubeError::Manifest(format!("not a Kubernetes object: {e}")))?;
            let types = obj.types.clone().ok_or_else(|| {
                KubeError::Manifest(format!("object {:?} has no apiVersion/kind", obj.metadata.name))
            })?;
            let gvk = GroupVersionKind::try_from(&types)
                .map_err(|e| KubeError::Manifest(format!("bad apiVersion {:?}: {e}", types.api_version)))?;
            let name = obj
                .metadata
                .name
                .clone()
                .ok_or_else(|| KubeError::Manifest(format!("a {} has no metadata.name", gvk.kind)))?;
            obj.metadata.managed_fields = None;
            obj.metadata.resource_version = None;
            let (ar, scope) = self.resolve(&gvk).await?;
            let (api, label): (Api<DynamicObject>, String) = match scope {
                Scope::Namespaced => {
                    let ns = obj
                        .metadata
                        .namespace
                        .clone()
                        .or(namespace.map(str::to_string))
                        .unwrap_or_else(|| "default".into());
                    obj.metadata.namespace = Some(ns.clone());
                    (
                        Api::namespaced_with(self.client.clone(), &ns, &ar),
                        format!("{} {ns}/{name}", gvk.kind),
                    )
                }
                Scope::Cluster => {
                    obj.metadata.namespace = None;
                    (
                        Api::all_with(self.client.clone(), &ar),
                        format!("{} {name}", gvk.kind),
                    )
                }
            };
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .map_err(|source| KubeError::Api {
                what: format!("apply {label}"),
                source,
            })?;
            applied.push(label);
        }
        Ok(applied)
    }

    /// The client this applier uses.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_documents_are_skipped() {
        let docs =
            parse_documents("# header\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n")
                .expect("ok");
        assert_eq!(docs.len(), 1);
        assert!(parse_documents("a: [").is_err());
    }
}
