//! IstioOperator files exactly as the guides write them (`cluster1.yaml`, `cluster2.yaml`) and the east-west
//! gateway operator that `gen-eastwest-gateway.sh --network N` prints.

use serde::Serialize;

use super::variant::Variant;
use crate::scenario::{ClusterName, MeshId, NetworkName};

/// Extra `--set` values a provider adds to an `istioctl install` (e.g. the rehearsal's loopback webhook URLs).
/// Plans and reports show them, so a deviation from the guide is never silent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstallOverlay {
    /// `(path, value)` pairs rendered as `--set path=value`.
    pub sets: Vec<(String, String)>,
    /// Why the provider needs them.
    pub reason: Option<String>,
}

impl InstallOverlay {
    /// The `--set` arguments joined for a shell line, each preceded by a space (empty when none).
    pub fn shell_suffix(&self) -> String {
        self.args().iter().map(|a| format!(" {a}")).collect()
    }

    /// The `--set` arguments.
    pub fn args(&self) -> Vec<String> {
        self.sets
            .iter()
            .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
            .collect()
    }
}

/// The IstioOperator for a primary cluster (guide: "Configure clusterN as a primary").
pub fn primary_operator(
    mesh: &MeshId,
    cluster: &ClusterName,
    network: &NetworkName,
    external_istiod: bool,
    variant: &Variant,
) -> String {
    let mut s = format!(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  values:\n    global:\n      \
         meshID: {mesh}\n      multiCluster:\n        clusterName: {cluster}\n      network: {network}\n"
    );
    if external_istiod {
        if variant.external_istiod_value {
            s.push_str("      externalIstiod: true\n");
        } else {
            s.push_str("    pilot:\n      env:\n        EXTERNAL_ISTIOD: true\n");
        }
    }
    s
}

/// The start of an IstioOperator `spec:` for a control plane that shares its cluster with another during an
/// upgrade: a canary revision (`revision: Some`, the canary guide's `--set revision=`) or the default one rolled
/// over in place (its surge pod runs beside the old one). istiod asks for 100m CPU and no ingress gateway is
/// installed, so two istiods fit one small node side by side (the plan notes both).
pub fn upgrade_spec(revision: Option<&str>) -> String {
    let rev = revision.map(|r| format!("  revision: {r}\n")).unwrap_or_default();
    format!(
        "spec:\n{rev}  components:\n    ingressGateways:\n      - name: istio-ingressgateway\n        \
         enabled: false\n    pilot:\n      k8s:\n        resources:\n          requests:\n            cpu: 100m\n"
    )
}

/// The IstioOperator for a remote cluster (guide: "Configure cluster2 as a remote"). `discovery_address` is
/// the primary's east-west gateway address, a runtime fact; plans show `${DISCOVERY_ADDRESS}`.
pub fn remote_operator(
    mesh: &MeshId,
    cluster: &ClusterName,
    network: &NetworkName,
    discovery_address: &str,
    variant: &Variant,
) -> String {
    if variant.remote_profile {
        format!(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  profile: remote\n  values:\n    \
             istiodRemote:\n      injectionPath: /inject/cluster/{cluster}/net/{network}\n    global:\n      \
             meshID: {mesh}\n      multiCluster:\n        clusterName: {cluster}\n      network: {network}\n      \
             remotePilotAddress: {discovery_address}\n"
        )
    } else {
        format!(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  values:\n    global:\n      \
             meshID: {mesh}\n      multiCluster:\n        clusterName: {cluster}\n      network: {network}\n      \
             remotePilotAddress: {discovery_address}\n"
        )
    }
}

/// `body` (an IstioOperator) with the mesh-wide default HTTP retry conditions set
/// (`meshConfig.defaultHttpRetryPolicy.retryOn`). istiod reads a policy without `attempts` as "no retries", so
/// the policy keeps Istio's default 2 attempts; its host predicate (other hosts first) stays as well.
pub fn with_retry_on(body: &str, retry_on: &str) -> String {
    body.replacen(
        "spec:\n",
        &format!(
            "spec:\n  meshConfig:\n    defaultHttpRetryPolicy:\n      attempts: 2\n      retryOn: \"{retry_on}\"\n"
        ),
        1,
    )
}

/// What `samples/multicluster/gen-eastwest-gateway.sh --network <network> [--revision <revision>]` prints
/// (sidecar mode): the revision's injector gives the gateway its proxy and its istiod.
pub fn eastwest_operator(network: &NetworkName, revision: Option<&str>) -> String {
    let revision = revision.unwrap_or_default();
    format!(
        r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata:
  name: eastwest
spec:
  revision: "{revision}"
  profile: empty
  components:
    ingressGateways:
      - name: istio-eastwestgateway
        label:
          istio: eastwestgateway
          app: istio-eastwestgateway
          topology.istio.io/network: {network}
        enabled: true
        k8s:
          env:
            # traffic through this gateway should be routed inside the network
            - name: ISTIO_META_REQUESTED_NETWORK_VIEW
              value: {network}
          service:
            ports:
              - name: status-port
                port: 15021
                targetPort: 15021
              - name: tls
                port: 15443
                targetPort: 15443
              - name: tls-istiod
                port: 15012
                targetPort: 15012
              - name: tls-webhook
                port: 15017
                targetPort: 15017
  values:
    gateways:
      istio-ingressgateway:
        injectionTemplate: gateway
    global:
      network: {network}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::IstioVersion;

    fn names() -> (MeshId, ClusterName, NetworkName) {
        (
            MeshId("mesh1".into()),
            ClusterName::new("cluster2"),
            NetworkName("network1".into()),
        )
    }

    #[test]
    fn a_retry_policy_keeps_istios_attempts_beside_its_conditions() {
        let (m, c, n) = names();
        let v = Variant::for_version(IstioVersion::new(1, 32, 0));
        let body = with_retry_on(&primary_operator(&m, &c, &n, false, &v), "connect-failure,reset");
        let doc: serde_json::Value = serde_saphyr::from_str(&body).expect("yaml");
        let policy = &doc["spec"]["meshConfig"]["defaultHttpRetryPolicy"];
        assert_eq!(policy["attempts"], 2, "{body}");
        assert_eq!(policy["retryOn"], "connect-failure,reset", "{body}");
        assert_eq!(doc["spec"]["values"]["global"]["meshID"], "mesh1", "{body}");
    }

    #[test]
    fn operators_snapshot() {
        let (m, c, n) = names();
        let new = Variant::for_version(IstioVersion::new(1, 30, 3));
        let old = Variant::for_version(IstioVersion::new(1, 18, 0));
        insta::assert_snapshot!("primary_external_1_30", primary_operator(&m, &c, &n, true, &new));
        insta::assert_snapshot!("primary_external_1_18", primary_operator(&m, &c, &n, true, &old));
        insta::assert_snapshot!(
            "remote_1_30",
            remote_operator(&m, &c, &n, "${DISCOVERY_ADDRESS}", &new)
        );
        insta::assert_snapshot!("remote_1_18", remote_operator(&m, &c, &n, "172.18.255.254", &old));
        insta::assert_snapshot!("eastwest", eastwest_operator(&n, None));
    }

    #[test]
    fn operators_are_valid_yaml_with_the_guide_values() {
        let (m, c, n) = names();
        let v = Variant::for_version(IstioVersion::new(1, 30, 3));
        for doc in [
            primary_operator(&m, &c, &n, true, &v),
            remote_operator(&m, &c, &n, "192.0.2.1", &v),
            eastwest_operator(&n, None),
        ] {
            let parsed: serde_json::Value = serde_saphyr::from_str(&doc).expect("yaml");
            assert_eq!(parsed["kind"], "IstioOperator");
        }
        let p: serde_json::Value =
            serde_saphyr::from_str(&primary_operator(&m, &c, &n, true, &v)).expect("yaml");
        assert_eq!(p["spec"]["values"]["global"]["externalIstiod"], true);
        assert_eq!(
            p["spec"]["values"]["global"]["multiCluster"]["clusterName"],
            "cluster2"
        );
    }

    #[test]
    fn overlay_renders_set_flags() {
        let o = InstallOverlay {
            sets: vec![("values.a".into(), "b".into())],
            reason: None,
        };
        assert_eq!(o.args(), ["--set", "values.a=b"]);
    }
}
