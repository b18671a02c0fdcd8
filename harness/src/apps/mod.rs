//! The verify page's sample apps, authored here from the upstream facts: `samples/helloworld/helloworld.yaml`
//! (Service + v1/v2 Deployments) and `samples/curl/curl.yaml` (or `sleep.yaml` before Istio 1.24).

use std::collections::BTreeMap;

use crate::mesh::{ClientApp, Variant};

/// Port helloworld listens on (Service port and containerPort).
pub const HELLOWORLD_PORT: u16 = 5000;

pub use crate::scenario::ServiceTarget;

/// Relative path the guide uses for the HelloWorld manifest.
pub const HELLOWORLD_PATH: &str = "samples/helloworld/helloworld.yaml";

/// Relative path of the client manifest for a variant.
pub fn client_path(client: ClientApp) -> &'static str {
    match client {
        ClientApp::Curl => "samples/curl/curl.yaml",
        ClientApp::Sleep => "samples/sleep/sleep.yaml",
    }
}

/// `helloworld.yaml`: Service `helloworld` (labels app, service; selector app only) then one Deployment per
/// version, labelled app + version, so `-l service=helloworld` and `-l version=vN` select disjoint subsets.
pub fn helloworld_yaml(variant: &Variant, versions: &[&str]) -> String {
    helloworld_yaml_with(variant, versions, None)
}

/// [`helloworld_yaml`] whose containers, asked to stop, keep serving `prestop_secs` first (`preStop: sleep`), so
/// a pod leaves every proxy's endpoints before its app stops: what a rolling restart without dropped requests
/// needs, and the sample does not do.
pub fn helloworld_yaml_with(variant: &Variant, versions: &[&str], prestop_secs: Option<u32>) -> String {
    let mut s = format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: helloworld
  labels:
    app: helloworld
    service: helloworld
spec:
  ports:
    - port: {HELLOWORLD_PORT}
      name: http
  selector:
    app: helloworld
"#
    );
    for v in versions {
        let image = variant.helloworld_image_for(v);
        s.push_str(&format!(
            r#"---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: helloworld-{v}
  labels:
    app: helloworld
    version: {v}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: helloworld
      version: {v}
  template:
    metadata:
      labels:
        app: helloworld
        version: {v}
    spec:
      containers:
        - name: helloworld
          image: {image}
          resources:
            requests:
              cpu: "100m"
          imagePullPolicy: IfNotPresent
          ports:
            - containerPort: {HELLOWORLD_PORT}
"#
        ));
        if let Some(secs) = prestop_secs {
            s.push_str(&format!(
                "          lifecycle:\n            preStop:\n              sleep:\n                seconds: {secs}\n"
            ));
        }
    }
    s
}

/// `curl.yaml` / `sleep.yaml`: ServiceAccount, Service (port 80) and a Deployment that sleeps forever.
pub fn client_yaml(variant: &Variant) -> String {
    let n = variant.client.name();
    let image = variant.client_image;
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: {n}
---
apiVersion: v1
kind: Service
metadata:
  name: {n}
  labels:
    app: {n}
    service: {n}
spec:
  ports:
    - port: 80
      name: http
  selector:
    app: {n}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {n}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {n}
  template:
    metadata:
      labels:
        app: {n}
    spec:
      terminationGracePeriodSeconds: 0
      serviceAccountName: {n}
      containers:
        - name: {n}
          image: {image}
          command: ["/bin/sleep", "infinity"]
          imagePullPolicy: IfNotPresent
          volumeMounts:
            - mountPath: /etc/{n}/tls
              name: secret-volume
      volumes:
        - name: secret-volume
          secret:
            secretName: {n}-secret
            optional: true
"#
    )
}

/// meshconf's traffic generator (`tools/images/loadgen`), built here like the samples' images.
pub const LOADGEN_IMAGE: &str = "meshconf.local/loadgen:1";
/// Its Deployment's name and `app` label.
pub const LOADGEN: &str = "loadgen";
/// The file the run directory holds it as (no guide names one).
pub const LOADGEN_PATH: &str = "meshconf/loadgen.yaml";

/// The traffic generator's Deployment: new connections at `rate` per second and `connections` keep-alive ones
/// to `url`. Its application waits for its sidecar (`holdApplicationUntilProxyStarts`), so no request is sent
/// before the proxy has its first configuration; its pod is never restarted by `move-workloads`, so one process
/// counts every request of the run.
pub fn loadgen_yaml(url: &str, rate: u32, connections: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {LOADGEN}
  labels:
    app: {LOADGEN}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {LOADGEN}
  template:
    metadata:
      labels:
        app: {LOADGEN}
      annotations:
        proxy.istio.io/config: '{{"holdApplicationUntilProxyStarts": true}}'
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - name: {LOADGEN}
          image: {LOADGEN_IMAGE}
          imagePullPolicy: IfNotPresent
          args: ["-url", "{url}", "-rate", "{rate}", "-connections", "{connections}"]
"#
    )
}

/// Keeps the documents of a multi-document manifest whose `metadata.labels` match every `key=value` of
/// `selector`, as `kubectl apply -l` does.
pub fn select_documents(
    docs: &[serde_json::Value],
    selector: &BTreeMap<String, String>,
) -> Vec<serde_json::Value> {
    docs.iter()
        .filter(|d| {
            selector
                .iter()
                .all(|(k, v)| d["metadata"]["labels"][k].as_str() == Some(v.as_str()))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::IstioVersion;

    fn docs(s: &str) -> Vec<serde_json::Value> {
        serde_saphyr::from_multiple(s).expect("yaml")
    }

    #[test]
    fn manifests_snapshot() {
        let v = Variant::for_version(IstioVersion::new(1, 30, 3));
        insta::assert_snapshot!("helloworld_1_30", helloworld_yaml(&v, &["v1", "v2"]));
        insta::assert_snapshot!("curl_1_30", client_yaml(&v));
        let old = Variant::for_version(IstioVersion::new(1, 18, 0));
        insta::assert_snapshot!("sleep_1_18", client_yaml(&old));
    }

    #[test]
    fn label_selectors_pick_the_guide_subsets() {
        let v = Variant::for_version(IstioVersion::new(1, 30, 3));
        let all = docs(&helloworld_yaml(&v, &["v1", "v2"]));
        let sel = |k: &str, val: &str| BTreeMap::from([(k.to_string(), val.to_string())]);
        let svc = select_documents(&all, &sel("service", "helloworld"));
        assert_eq!(svc.len(), 1);
        assert_eq!(svc[0]["kind"], "Service");
        let v1 = select_documents(&all, &sel("version", "v1"));
        assert_eq!(v1.len(), 1);
        assert_eq!(v1[0]["metadata"]["name"], "helloworld-v1");
        assert_eq!(
            v1[0]["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.istio.io/release/examples-helloworld-v1:1.0"
        );
    }

    #[test]
    fn client_names_follow_the_variant() {
        let old = Variant::for_version(IstioVersion::new(1, 18, 0));
        let d = docs(&client_yaml(&old));
        assert_eq!(d[2]["spec"]["template"]["spec"]["containers"][0]["name"], "sleep");
        assert_eq!(client_path(old.client), "samples/sleep/sleep.yaml");
    }
}
