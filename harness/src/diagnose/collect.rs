//! Collects a failed run's facts and files from its clusters, each read under a deadline, into a bounded store:
//! remote secrets (names, targets, hashes), root fingerprints, pods, istiod, the east-west gateway, events, the
//! endpoints each client's proxy gets, and istiod's log tail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event as KubeEvent, Namespace, Pod, Secret, Service};
use kube::api::{Api, ListParams, LogParams};
use serde::Serialize;

use super::facts::*;
use super::rules::{Finding, diagnose};
use super::store::{Store, StoredFile};
use crate::apps::ServiceTarget;
use crate::scenario::{ClusterName, Role, Scenario, Step};

/// Deadline for one cluster's reads, and for one client's endpoint view.
const PER_CLUSTER: Duration = Duration::from_secs(30);
/// Events kept per cluster.
const EVENTS_KEPT: usize = 40;
/// istiod log lines kept per cluster.
const LOG_LINES: i64 = 400;

/// What a collection produced.
#[derive(Debug, Clone, Serialize)]
pub struct Collected {
    /// The facts.
    pub facts: MeshFacts,
    /// Findings, most fundamental first.
    pub findings: Vec<Finding>,
    /// Files written.
    pub files: Vec<StoredFile>,
    /// Bytes written.
    pub bytes: u64,
}

/// One cluster as diagnostics see it: a client and its place in the topology.
pub struct DiagnosedCluster {
    /// Its name in the scenario.
    pub name: ClusterName,
    /// An API client for it.
    pub client: kube::Client,
    /// Primary or remote.
    pub role: Role,
    /// A remote's primary.
    pub primary: Option<ClusterName>,
    /// Whether the scenario installs an east-west gateway in it.
    pub needs_gateway: bool,
    /// The network the scenario puts it on.
    pub network: String,
}

/// Where the endpoints a client's sidecar was given come from: its proxy (`istioctl proxy-config endpoints`) on a
/// real data plane, istiod's ADS answer for it on a computed one.
pub trait EndpointSource: Send + Sync {
    /// The endpoints of `envoy_cluster` as the sidecar of `namespace/pod` in `cluster` has them, with a line
    /// saying where they were read.
    fn endpoints<'a>(
        &'a self,
        cluster: &'a ClusterName,
        namespace: &'a str,
        pod: &'a str,
        envoy_cluster: &'a str,
    ) -> BoxFuture<'a, (String, Result<Vec<EndpointFact>, String>)>;
}

/// Everything diagnostics read: the clusters and roles, the checked service, the client, an endpoint source and
/// what the provider knows of its own processes. Nothing of the runner.
pub struct DiagnoseInput<'a> {
    /// The run's clusters that exist.
    pub clusters: Vec<DiagnosedCluster>,
    /// The namespace of the apps.
    pub app_namespace: String,
    /// The Envoy cluster of the checked service, when a check names one.
    pub envoy_cluster: Option<String>,
    /// The client app's name (`curl` or `sleep`).
    pub client_app: &'static str,
    /// Where endpoint views come from.
    pub endpoints: &'a dyn EndpointSource,
    /// Logs of processes the provider runs outside the clusters, by label (the rehearsal's istiod).
    pub process_logs: BTreeMap<String, PathBuf>,
    /// Processes the provider started that have exited, as the provider describes them.
    pub exited: Vec<String>,
}

/// The namespace and Envoy cluster of the traffic check (`helloworld.sample:5000` →
/// `outbound|5000||helloworld.sample.svc.cluster.local`).
pub fn checked_service(scenario: &Scenario) -> (String, Option<String>) {
    let mut ns = "sample".to_string();
    let mut envoy = None;
    for s in &scenario.steps {
        match s {
            Step::DeployApps(d) => ns = d.namespace.as_str().to_string(),
            Step::CheckTraffic(c) => envoy = ServiceTarget::parse(&c.url).map(|t| t.envoy_cluster()),
            _ => {}
        }
    }
    (ns, envoy)
}

/// Whether `scenario` installs an east-west gateway in `cluster`.
pub fn needs_gateway(scenario: &Scenario, cluster: &ClusterName) -> bool {
    scenario
        .steps
        .iter()
        .any(|s| matches!(s, Step::EastwestGateway { cluster: c, .. } if c == cluster))
}

/// Collects everything into `dir` within `budget` bytes.
pub async fn collect(input: &DiagnoseInput<'_>, dir: &Path, budget: u64) -> std::io::Result<Collected> {
    let app_ns = input.app_namespace.clone();
    let namespaces = [app_ns.clone(), "istio-system".to_string()];
    let reads = input.clusters.iter().map(|c| {
        let client = c.client.clone();
        let skeleton = ClusterFacts {
            name: c.name.as_str().to_string(),
            role: match c.role {
                Role::Primary => ClusterRole::Primary,
                Role::Remote => ClusterRole::Remote,
            },
            primary: c.primary.as_ref().map(|p| p.as_str().to_string()),
            needs_gateway: c.needs_gateway,
            network: c.network.clone(),
            exposes_services: None,
            remote_secrets: Vec::new(),
            root_sha256: None,
            namespaces: Vec::new(),
            pods: Vec::new(),
            istiod: None,
            eastwest: None,
            events: Vec::new(),
            unavailable: Vec::new(),
        };
        let namespaces = namespaces.clone();
        async move {
            let mut f = skeleton;
            if tokio::time::timeout(PER_CLUSTER, read_cluster(&client, &namespaces, &mut f))
                .await
                .is_err()
            {
                f.unavailable.push(format!(
                    "reading {} did not finish within {PER_CLUSTER:?}",
                    f.name
                ));
            }
            let log = istiod_log(&client, f.role).await;
            (f, log)
        }
    });
    let read: Vec<(ClusterFacts, Option<String>)> = futures::future::join_all(reads).await;
    let mut facts = MeshFacts::default();
    let mut logs = Vec::new();
    for (f, log) in read {
        if let Some(l) = log {
            logs.push((format!("istiod-{}", f.name), l));
        }
        facts.clusters.push(f);
    }
    // Process logs the provider keeps (the rehearsal's out-of-cluster istiod).
    for (label, path) in input.process_logs.iter().filter(|(l, _)| l.starts_with("istiod")) {
        if let Ok(text) = std::fs::read_to_string(path) {
            logs.push((label.clone(), tail_lines(&text, LOG_LINES as usize)));
        }
    }
    facts.exited = input
        .exited
        .iter()
        .filter_map(|d| d.split_whitespace().next().map(str::to_string))
        .collect();
    if let Some(envoy) = &input.envoy_cluster {
        facts.views = views(input, &facts, &app_ns, envoy).await;
    }
    let findings = diagnose(&facts, &app_ns);

    let mut store = Store::create(dir, budget)?;
    let diagnosis: Vec<String> = findings.iter().map(|f| f.line.clone()).collect();
    let text = if diagnosis.is_empty() {
        "no rule matched the collected facts; see facts.json\n".to_string()
    } else {
        format!("{}\n", diagnosis.join("\n"))
    };
    store.write(
        "diagnosis.txt",
        "one-line diagnoses, most fundamental first",
        &text,
        false,
    )?;
    let json = serde_json::to_string_pretty(&facts).map_err(std::io::Error::other)?;
    store.write(
        "facts.json",
        "remote secrets (hashes), roots, pods, istiod, gateway, events, endpoint views per client",
        &json,
        false,
    )?;
    for (label, text) in logs {
        let name = format!("log-{}.txt", label.replace(['/', ' '], "-"));
        store.write(&name, &format!("tail of {label}'s log"), &text, true)?;
    }
    Ok(Collected {
        facts,
        findings,
        files: store.files().to_vec(),
        bytes: store.used(),
    })
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn read_cluster(client: &kube::Client, namespaces: &[String], f: &mut ClusterFacts) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "istio-system");
    match secrets
        .list(&ListParams::default().labels("istio/multiCluster=true"))
        .await
    {
        Ok(l) => {
            f.remote_secrets = l
                .items
                .iter()
                .map(|s| {
                    let data = s.data.clone().unwrap_or_default();
                    let mut bytes = Vec::new();
                    for (k, v) in &data {
                        bytes.extend_from_slice(k.as_bytes());
                        bytes.extend_from_slice(&v.0);
                    }
                    RemoteSecretFact {
                        name: s.metadata.name.clone().unwrap_or_default(),
                        points_at: data.keys().cloned().collect(),
                        sha256: short_sha256(&bytes),
                    }
                })
                .collect();
        }
        Err(e) => f.unavailable.push(format!("remote secrets: {e}")),
    }
    for ns in namespaces {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        if f.root_sha256.is_none()
            && let Ok(Some(cm)) = cms.get_opt("istio-ca-root-cert").await
            && let Some(pem) = cm.data.as_ref().and_then(|d| d.get("root-cert.pem"))
        {
            f.root_sha256 = Some(short_sha256(pem.trim().as_bytes()));
        }
        let nss: Api<Namespace> = Api::all(client.clone());
        match nss.get_opt(ns).await {
            Ok(n) => {
                let labels = n.as_ref().and_then(|n| n.metadata.labels.clone());
                let label = |k: &str| labels.as_ref().and_then(|l| l.get(k).cloned());
                f.namespaces.push(NamespaceFact {
                    name: ns.clone(),
                    exists: n.is_some(),
                    injection: label("istio-injection"),
                    revision: label("istio.io/rev"),
                    network: label("topology.istio.io/network"),
                })
            }
            Err(e) => f.unavailable.push(format!("namespace {ns}: {e}")),
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        match pods.list(&ListParams::default()).await {
            Ok(l) => f.pods.extend(l.items.iter().map(|p| pod_fact(ns, p))),
            Err(e) => f.unavailable.push(format!("pods in {ns}: {e}")),
        }
        let events: Api<KubeEvent> = Api::namespaced(client.clone(), ns);
        match events.list(&ListParams::default()).await {
            // `when` leads each line, so the sort below orders the events of every namespace by time.
            Ok(l) => f.events.extend(l.items.iter().map(|e| {
                let when = e
                    .last_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
                    .unwrap_or_default();
                let obj = format!("{ns}/{}", e.involved_object.name.clone().unwrap_or_default());
                format!(
                    "{when} {obj} {} {}: {}",
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.message.clone().unwrap_or_default().trim()
                )
            })),
            Err(e) => f.unavailable.push(format!("events in {ns}: {e}")),
        }
    }
    f.events.sort();
    let n = f.events.len();
    f.events.drain(..n.saturating_sub(EVENTS_KEPT));
    if f.role == ClusterRole::Primary {
        let deps: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");
        // `istiod`, or `istiod-<revision>` for each control-plane revision (a canary upgrade runs two).
        match deps.list(&ListParams::default().labels("app=istiod")).await {
            Ok(l) => {
                f.istiod = (!l.items.is_empty()).then(|| ReplicaFact {
                    desired: l
                        .items
                        .iter()
                        .map(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
                        .sum(),
                    ready: l
                        .items
                        .iter()
                        .map(|d| d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0))
                        .sum(),
                })
            }
            Err(e) => f.unavailable.push(format!("istiod Deployments: {e}")),
        }
    }
    match exposes_services(client).await {
        Ok(v) => f.exposes_services = Some(v),
        Err(e) => f.unavailable.push(format!("Gateways in istio-system: {e}")),
    }
    let svcs: Api<Service> = Api::namespaced(client.clone(), "istio-system");
    match svcs.get_opt("istio-eastwestgateway").await {
        Ok(s) => {
            f.eastwest = s.map(|s| ServiceFact {
                name: s.metadata.name.clone().unwrap_or_default(),
                kind: s
                    .spec
                    .as_ref()
                    .and_then(|sp| sp.type_.clone())
                    .unwrap_or_default(),
                address: s
                    .status
                    .and_then(|st| st.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .and_then(|i| i.into_iter().find_map(|i| i.ip.or(i.hostname))),
            })
        }
        Err(e) => f.unavailable.push(format!("east-west gateway Service: {e}")),
    }
}

/// Whether istio-system holds a Gateway with a 15443 `AUTO_PASSTHROUGH` server, at whichever of the networking
/// API versions the cluster serves.
async fn exposes_services(client: &kube::Client) -> Result<bool, String> {
    let mut last = String::new();
    for version in ["v1", "v1beta1", "v1alpha3"] {
        let gvk = kube::api::GroupVersionKind::gvk("networking.istio.io", version, "Gateway");
        let ar = kube::api::ApiResource::from_gvk(&gvk);
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), "istio-system", &ar);
        match api.list(&ListParams::default()).await {
            Ok(l) => {
                return Ok(l.items.iter().any(|g| {
                    g.data["spec"]["servers"].as_array().is_some_and(|servers| {
                        servers
                            .iter()
                            .any(|s| s["port"]["number"] == 15443 && s["tls"]["mode"] == "AUTO_PASSTHROUGH")
                    })
                }));
            }
            // No Istio CRDs (yet), or not this version: the next, else say so.
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

fn pod_fact(ns: &str, p: &Pod) -> PodFact {
    let containers: Vec<String> = p
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .filter(|c| {
                    // A native sidecar is an init container that keeps running.
                    s.containers.iter().any(|x| x.name == c.name)
                        || c.restart_policy.as_deref() == Some("Always")
                })
                .map(|c| c.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let status = p.status.as_ref();
    let ready = status
        .map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
                .filter(|c| c.ready && containers.contains(&c.name))
                .count()
        })
        .unwrap_or(0);
    PodFact {
        namespace: ns.to_string(),
        name: p.metadata.name.clone().unwrap_or_default(),
        ip: status.and_then(|s| s.pod_ip.clone()),
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
        ready,
        sidecar: containers.iter().any(|c| c == "istio-proxy"),
        containers: containers.len(),
    }
}

async fn istiod_log(client: &kube::Client, role: ClusterRole) -> Option<String> {
    if role != ClusterRole::Primary {
        return None;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "istio-system");
    let fut = async {
        let l = pods
            .list(&ListParams::default().labels("app=istiod"))
            .await
            .ok()?;
        let name = l.items.into_iter().find_map(|p| p.metadata.name)?;
        let params = LogParams {
            container: Some("discovery".into()),
            tail_lines: Some(LOG_LINES),
            ..Default::default()
        };
        pods.logs(&name, &params).await.ok()
    };
    tokio::time::timeout(PER_CLUSTER, fut).await.ok().flatten()
}

async fn views(input: &DiagnoseInput<'_>, facts: &MeshFacts, ns: &str, envoy: &str) -> Vec<EndpointView> {
    let app = input.client_app;
    let reads = input.clusters.iter().filter_map(|c| {
        let cf = facts.cluster(c.name.as_str())?;
        let pod = cf
            .pods
            .iter()
            .find(|p| p.namespace == ns && p.name.starts_with(&format!("{app}-")) && p.phase == "Running")?
            .name
            .clone();
        Some(async move {
            let (source, read) =
                match tokio::time::timeout(PER_CLUSTER, input.endpoints.endpoints(&c.name, ns, &pod, envoy))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => (
                        "the client's endpoint view".to_string(),
                        Err(format!("no answer within {PER_CLUSTER:?}")),
                    ),
                };
            let (endpoints, error) = match read {
                Ok(mut eps) => {
                    for e in &mut eps {
                        // Attribute by what the clusters hold (pod IPs, gateway addresses) before istio's label.
                        if let Some(owner) = facts.owner_of(&e.address) {
                            e.cluster = Some(owner);
                        }
                    }
                    (eps, None)
                }
                Err(e) => (Vec::new(), Some(e)),
            };
            EndpointView {
                client_cluster: c.name.as_str().to_string(),
                client: format!("{pod}.{ns}"),
                envoy_cluster: envoy.to_string(),
                source,
                endpoints,
                error,
            }
        })
    });
    futures::future::join_all(reads).await
}

/// Parses `istioctl proxy-config endpoints … -o json` (Envoy admin `ClusterStatus` objects).
pub fn parse_proxy_endpoints(json: &str) -> Result<Vec<EndpointFact>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("istioctl printed no JSON endpoint list: {e}"))?;
    let clusters = v
        .as_array()
        .ok_or("istioctl printed JSON that is not a list of clusters")?;
    let mut out = Vec::new();
    for c in clusters {
        for h in c["hostStatuses"].as_array().into_iter().flatten() {
            let sa = &h["address"]["socketAddress"];
            let Some(address) = sa["address"].as_str() else {
                continue;
            };
            out.push(EndpointFact {
                address: address.to_string(),
                port: sa["portValue"]
                    .as_u64()
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or(0),
                health: h["healthStatus"]["edsHealthStatus"]
                    .as_str()
                    .unwrap_or("UNKNOWN")
                    .to_string(),
                cluster: None,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_config_endpoints_json_is_read() {
        let json = r#"[{"name":"outbound|5000||helloworld.sample.svc.cluster.local","addedViaApi":true,
          "hostStatuses":[
            {"address":{"socketAddress":{"address":"10.10.0.7","portValue":5000}},
             "healthStatus":{"edsHealthStatus":"HEALTHY"},"weight":1},
            {"address":{"socketAddress":{"address":"172.30.255.201","portValue":15443}},
             "healthStatus":{}}]}]"#;
        let eps = parse_proxy_endpoints(json).expect("parse");
        assert_eq!(eps.len(), 2);
        assert_eq!(
            (eps[0].address.as_str(), eps[0].port, eps[0].health.as_str()),
            ("10.10.0.7", 5000, "HEALTHY")
        );
        assert_eq!(eps[1].health, "UNKNOWN");
        assert!(parse_proxy_endpoints("Error: pod not found").is_err());
    }

    #[test]
    fn tail_keeps_the_newest_lines() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
    }
}
