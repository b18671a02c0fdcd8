//! `samples/multicluster/expose-istiod.yaml` and `expose-services.yaml`, written here from the upstream facts
//! (not copied).

/// The shell variable the guide stores the east-west gateway address in.
pub const DISCOVERY_ADDRESS_VAR: &str = "DISCOVERY_ADDRESS";

/// `samples/multicluster/expose-services.yaml`: the Gateway `cross-network-gateway` on the east-west gateway.
/// Applied with `-n istio-system`.
pub fn expose_services(networking_api: &str) -> String {
    // The east-west gateway passes mTLS through on 15443 by SNI (`outbound_.<port>_.<subset>_.<host>`), for
    // every service of the mesh's `*.local` names: clusters on other networks reach this one's workloads.
    format!(
        r#"apiVersion: {networking_api}
kind: Gateway
metadata:
  name: cross-network-gateway
spec:
  selector:
    istio: eastwestgateway
  servers:
    - port:
        number: 15443
        name: tls
        protocol: TLS
      tls:
        mode: AUTO_PASSTHROUGH
      hosts:
        - "*.local"
"#
    )
}

/// The Gateway and VirtualService that expose istiod (15012) and its webhook (15017) through the east-west
/// gateway. Applied with `-n istio-system`.
pub fn expose_istiod(networking_api: &str) -> String {
    format!(
        r#"apiVersion: {networking_api}
kind: Gateway
metadata:
  name: istiod-gateway
spec:
  selector:
    istio: eastwestgateway
  servers:
    - port:
        name: tls-istiod
        number: 15012
        protocol: tls
      tls:
        mode: PASSTHROUGH
      hosts:
        - "*"
    - port:
        name: tls-istiodwebhook
        number: 15017
        protocol: tls
      tls:
        mode: PASSTHROUGH
      hosts:
        - "*"
---
apiVersion: {networking_api}
kind: VirtualService
metadata:
  name: istiod-vs
spec:
  hosts:
    - "*"
  gateways:
    - istiod-gateway
  tls:
    - match:
        - port: 15012
          sniHosts:
            - "*"
      route:
        - destination:
            host: istiod.istio-system.svc.cluster.local
            port:
              number: 15012
    - match:
        - port: 15017
          sniHosts:
            - "*"
      route:
        - destination:
            host: istiod.istio-system.svc.cluster.local
            port:
              number: 443
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_istiod_snapshot() {
        insta::assert_snapshot!(expose_istiod("networking.istio.io/v1"));
    }

    #[test]
    fn expose_istiod_routes_webhook_port_to_443() {
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&expose_istiod("networking.istio.io/v1")).expect("yaml");
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[1]["spec"]["tls"][1]["route"][0]["destination"]["port"]["number"],
            443
        );
    }
}
