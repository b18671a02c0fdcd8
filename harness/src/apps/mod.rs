//! The verify page's sample apps, authored here from the upstream facts: `samples/helloworld/helloworld.yaml`
//! (Service + v1/v2 Deployments) and `samples/curl/curl.yaml` (or `sleep.yaml` before Istio 1.24).

use std::collections::BTreeMap;

use crate::mesh::{ClientApp, Variant};

/// Port helloworld listens on (Service port and containerPort).
pub const HELLOWORLD_PORT: u16 = 5000;

/// The in-mesh service a check's URL names (`http://helloworld.sample:5000/hello`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTarget {
    /// Service name.
    pub service: String,
    /// Namespace (`default` when the host has no second label).
    pub namespace: String,
    /// Port (80 when the URL names none).
    pub port: u16,
}

impl ServiceTarget {
    /// Parses `[scheme://]service[.namespace][:port][/path]`; `None` for a port that is not a number.
    pub fn parse(url: &str) -> Option<Self> {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let hostport = rest.split('/').next()?;
        let (host, port) = hostport
            .split_once(':')
            .map(|(h, p)| (h, p.parse().ok()))
            .unwrap_or((hostport, Some(80)));
        let mut parts = host.split('.');
        let service = parts.next().filter(|s| !s.is_empty())?.to_string();
        let namespace = parts.next().unwrap_or("default").to_string();
        Some(Self {
            service,
            namespace,
            port: port?,
        })
    }

    /// Checks that `url` is what the traffic check can send: `http://service[.namespace[.svc.cluster.local]][:port][/path]`,
    /// with a host curl reaches by a Service's DNS name (never an address) and a port from 1 to 65535. The error
    /// says what is wrong with it.
    pub fn parse_checked(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| "it must start with http://".to_string())?;
        let hostport = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if hostport.contains('@') {
            return Err("it must not carry user information (user@host)".into());
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => {
                let port: u16 = p
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("port '{p}' is not a number from 1 to 65535"))?;
                (h, port)
            }
            None => (hostport, 80),
        };
        if host.is_empty() {
            return Err("it names no host".into());
        }
        let labels: Vec<&str> = host.split('.').collect();
        let name_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if let Some(bad) = labels.iter().find(|l| !name_label(l)) {
            return Err(format!(
                "host '{host}': '{bad}' is not a DNS label (lowercase letters, digits and '-', 1 to 63 characters)"
            ));
        }
        if labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit()))
            || labels[0].bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!(
                "host '{host}' is an address, not a Service name: the check attributes answers to a Service's pods"
            ));
        }
        let suffix_ok = match labels.len() {
            1 | 2 => true,
            3 => labels[2] == "svc",
            5 => labels[2..] == ["svc", "cluster", "local"],
            _ => false,
        };
        if !suffix_ok {
            return Err(format!(
                "host '{host}' is not a Service name: use service, service.namespace or service.namespace.svc.cluster.local"
            ));
        }
        Ok(Self {
            service: labels[0].to_string(),
            namespace: labels.get(1).copied().unwrap_or("default").to_string(),
            port,
        })
    }

    /// The Envoy cluster a sidecar uses for it: `outbound|5000||helloworld.sample.svc.cluster.local`.
    pub fn envoy_cluster(&self) -> String {
        format!(
            "outbound|{}||{}.{}.svc.cluster.local",
            self.port, self.service, self.namespace
        )
    }
}

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

    #[test]
    fn targets_parse_like_curl() {
        let t = ServiceTarget::parse("helloworld.sample:5000/hello").expect("t");
        assert_eq!(
            (t.service.as_str(), t.namespace.as_str(), t.port),
            ("helloworld", "sample", 5000)
        );
        let t = ServiceTarget::parse("http://web.ns/").expect("t");
        assert_eq!(t.port, 80);
        assert!(ServiceTarget::parse("h:notaport/").is_none());
    }

    #[test]
    fn checked_urls_name_a_service_curl_can_reach() {
        let t = ServiceTarget::parse_checked("http://helloworld.sample:5000/hello").expect("the guide's url");
        assert_eq!(
            (t.service.as_str(), t.namespace.as_str(), t.port),
            ("helloworld", "sample", 5000)
        );
        let t = ServiceTarget::parse_checked("http://web.ns.svc.cluster.local").expect("fqdn");
        assert_eq!((t.namespace.as_str(), t.port), ("ns", 80));
        for (url, why) in [
            ("http://", "names no host"),
            ("http://:5000/hello", "names no host"),
            ("https://helloworld.sample:5000/", "must start with http://"),
            ("http://helloworld.sample:0/", "not a number from 1 to 65535"),
            ("http://helloworld.sample:99999/", "not a number from 1 to 65535"),
            ("http://helloworld.sample:abc/", "not a number"),
            ("http://10.0.0.7:5000/", "is an address"),
            ("http://Hello_World.sample/", "not a DNS label"),
            ("http://a..b/", "not a DNS label"),
            ("http://helloworld.sample.example.com/", "not a Service name"),
            ("http://u@helloworld.sample/", "user information"),
        ] {
            let e = ServiceTarget::parse_checked(url).expect_err(url);
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn envoy_cluster_from_the_guide_url() {
        let t = ServiceTarget::parse("http://helloworld.sample:5000/hello").expect("t");
        assert_eq!(
            t.envoy_cluster(),
            "outbound|5000||helloworld.sample.svc.cluster.local"
        );
    }

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
