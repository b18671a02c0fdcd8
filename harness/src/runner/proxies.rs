//! Which build's proxy each pod runs: a mixed-version mesh (a remote whose sidecars lag its upgraded primary) is
//! only the mix it claims if every sidecar's image says so, read from the pods, never from the scenario.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::context::{RunContext, StepError, StepLogger};
use super::exec::Props;
use crate::kube::{self as k};
use crate::scenario::ClusterName;

/// The build a proxy image names through its tag (`…/proxyv2:1.31-dev.b01690e6db7d[-distroless]` → `1.31-dev`);
/// `None` for an image without a tag.
pub(super) fn build_of_image(image: &str) -> Option<String> {
    let last = image.rsplit('/').next()?;
    let (_, tag) = last.split_once(':')?;
    let tag = tag.split('@').next()?;
    let tag = tag
        .strip_suffix("-distroless")
        .or_else(|| tag.strip_suffix("-debug"))
        .unwrap_or(tag);
    (!tag.is_empty()).then(|| crate::builds::name_of(tag))
}

/// The pods of `pods` whose sidecar is not `build`'s, each with what it runs instead.
pub(super) fn not_of_build(pods: &[Pod], build: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let mut seen = BTreeMap::new();
    let mut wrong = Vec::new();
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = p.metadata.name.clone().unwrap_or_default();
        match k::proxy_image(p) {
            Some(image) => {
                match build_of_image(&image) {
                    Some(b) if b == build => {}
                    Some(b) => wrong.push(format!("{name} runs {b} ({image})")),
                    None => wrong.push(format!("{name} runs an untagged proxy ({image})")),
                }
                seen.insert(name, image);
            }
            None => wrong.push(format!("{name} has no istio-proxy sidecar")),
        }
    }
    (seen, wrong)
}

/// Every pod of `ns` in `cluster` must run `build`'s proxy; the image of each goes into the report.
pub(super) async fn check(
    ctx: &RunContext,
    cluster: &ClusterName,
    ns: &str,
    build: &str,
    log: &StepLogger,
    props: &mut Props,
) -> Result<(), StepError> {
    let c = ctx.cluster(cluster)?;
    let api: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let pods = api
        .list(&ListParams::default())
        .await
        .map_err(|source| k::KubeError::Api {
            what: format!("list the pods of {cluster}/{ns}"),
            source,
        })?;
    let (seen, wrong) = not_of_build(&pods.items, build);
    for (name, image) in &seen {
        log.log(format!("{cluster}: {name} runs {image}"));
        props.insert(format!("proxy/{name}"), image.clone());
    }
    if seen.is_empty() && wrong.is_empty() {
        return Err(StepError::conformance(format!(
            "{cluster}/{ns} has no pods: nothing runs the {build} proxy"
        )));
    }
    if !wrong.is_empty() {
        return Err(StepError::conformance(format!(
            "in {cluster}/{ns} not every sidecar runs the {build} proxy: {}",
            wrong.join("; ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, image: Option<&str>) -> Pod {
        let mut containers = vec![serde_json::json!({"name": "helloworld", "image": "helloworld:v1"})];
        if let Some(i) = image {
            containers.push(serde_json::json!({"name": "istio-proxy", "image": i}));
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": containers}
        }))
        .unwrap_or_default()
    }

    #[test]
    fn the_tag_names_the_build_with_or_without_variant_and_registry_port() {
        assert_eq!(
            build_of_image("meshconf.local/istio/proxyv2:1.31-dev.b01690e6db7d").as_deref(),
            Some("1.31-dev")
        );
        assert_eq!(
            build_of_image("localhost:5000/proxyv2:1.32-dev.eed52ebb66ad-distroless").as_deref(),
            Some("1.32-dev")
        );
        assert_eq!(
            build_of_image("docker.io/istio/proxyv2:1.31.4").as_deref(),
            Some("1.31.4")
        );
        assert_eq!(build_of_image("localhost:5000/proxyv2"), None);
    }

    #[test]
    fn a_pod_of_another_build_or_without_sidecar_is_named() {
        let pods = vec![
            pod("a", Some("h/proxyv2:1.31-dev.b01690e6db7d")),
            pod("b", Some("h/proxyv2:1.32-dev.eed52ebb66ad")),
            pod("c", None),
        ];
        let (seen, wrong) = not_of_build(&pods, "1.31-dev");
        assert_eq!(seen.len(), 2);
        assert_eq!(wrong.len(), 2, "{wrong:?}");
        assert!(wrong[0].starts_with("b runs 1.32-dev"), "{wrong:?}");
        assert!(wrong[1].starts_with("c has no istio-proxy"), "{wrong:?}");
        let (_, none_wrong) = not_of_build(&pods[..1], "1.31-dev");
        assert!(none_wrong.is_empty());
    }
}
