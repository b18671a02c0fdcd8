//! The rehearsal's stand-in for `curl` inside the client pod. kwok runs it on the host when the harness execs
//! into the (fake) curl container. It computes the reply a sidecar would produce: endpoints come from the real
//! istiod over ADS (as the pod's own proxy would receive them), the endpoint is picked round-robin, the serving
//! pod is found through the real API by IP, and mTLS across clusters succeeds only if both clusters' real
//! `istio-ca-root-cert` roots match. An endpoint at a network gateway's address (split-horizon EDS) is resolved as
//! that gateway would: its listeners must accept the service's SNI on 15443 (expose-services), and its own
//! istiod's answer, in the gateway's network view, names the pod. A pod of another cluster is reached directly
//! only along the provider's routes (one network). It never reads the scenario.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::state::RehearsalState;
use super::watch::Watch;
use super::xds::{self, ProxyIdentity, SeenEndpoint};
use crate::apps::ServiceTarget;
use crate::mesh::GATEWAY_PORT;

/// Environment variable that turns a meshconf binary into the curl stand-in.
pub const SHIM_ENV: &str = "MESHCONF_SHIM";

/// What a sidecar answers when the gateway resets the connection (no listener chain for the SNI).
pub const GATEWAY_RESET_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: \
    connection termination";

/// What a sidecar answers when the endpoint's address cannot be reached (no route to its network).
pub const CONNECT_TIMEOUT_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: \
    connection timeout";

/// What a sidecar answers when the endpoint's pod is gone (nothing listens at its address any more).
pub const CONNECT_REFUSED_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: \
    connection failure, transport failure reason: delayed connect error: Connection refused";

/// Envoy's reply body when an upstream TLS handshake fails (roots differ).
pub const TLS_FAILURE_BODY: &str = "upstream connect error or disconnect/reset before headers. retried and the latest \
    reset reason: remote connection failure, transport failure reason: TLS_error:|268435581:SSL \
    routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end";

/// If this process was started as the curl stand-in, runs it and exits; otherwise returns.
pub fn run_if_shim() {
    let role = std::env::var(SHIM_ENV).unwrap_or_default();
    if !matches!(role.as_str(), "curl" | "loadgen" | "loadgen-daemon") {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(async {
            match role.as_str() {
                "loadgen" => super::loadgen::ctl(args).await,
                "loadgen-daemon" => super::loadgen::daemon().await,
                _ => curl(args).await,
            }
        }),
        Err(e) => {
            eprintln!("meshconf rehearsal curl: cannot start runtime: {e}");
            2
        }
    };
    std::process::exit(code);
}

/// Writes the `curl` and `loadgen` scripts that kwok's PATH finds first: each re-executes `exe` as its stand-in.
pub fn install_shim(dir: &Path, exe: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let quoted = exe.display().to_string().replace('\'', "'\\''");
    for name in ["curl", crate::apps::LOADGEN] {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\n{SHIM_ENV}={name} exec '{quoted}' \"$@\"\n"),
        )?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(dir.join("curl"))
}

pub(super) async fn client_from(kubeconfig: &Path) -> Result<Client, String> {
    let kc =
        Kubeconfig::read_from(kubeconfig).map_err(|e| format!("kubeconfig {}: {e}", kubeconfig.display()))?;
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(cfg).map_err(|e| e.to_string())
}

/// The URLs of a curl command line: its operands, never the value of an option that takes one (`-m 5`).
fn curl_urls(args: Vec<String>) -> Vec<String> {
    const TAKES_VALUE: &[&str] = &[
        "-m",
        "--max-time",
        "--connect-timeout",
        "-o",
        "--output",
        "-H",
        "--header",
        "-w",
        "--write-out",
        "-X",
        "--request",
        "-d",
        "--data",
        "-A",
        "--user-agent",
        "--retry",
    ];
    let mut urls = Vec::new();
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        if TAKES_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            urls.push(a);
        }
    }
    urls
}

async fn curl(args: Vec<String>) -> i32 {
    let urls = curl_urls(args);
    if urls.is_empty() {
        eprintln!("curl: no URL specified");
        return 2;
    }
    let (Ok(cluster), Ok(state_path)) = (std::env::var("RH_CLUSTER"), std::env::var("RH_STATE")) else {
        eprintln!("meshconf rehearsal curl: RH_CLUSTER and RH_STATE must be set by the kwok exec rule");
        return 2;
    };
    match run(&cluster, Path::new(&state_path), &urls).await {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            0
        }
        Err(Failure::Timeout(e)) => {
            eprintln!("curl: (28) {e}");
            28
        }
        Err(Failure::Other(e)) => {
            eprintln!("curl: (7) {e}");
            7
        }
    }
}

/// The rehearsal's state and a client for `cluster` from it.
pub(super) async fn state_and_client(
    state_path: &Path,
    cluster: &str,
) -> Result<(RehearsalState, Client), String> {
    let state = RehearsalState::read(state_path)?;
    let me = state
        .clusters
        .get(cluster)
        .ok_or_else(|| format!("unknown rehearsal cluster {cluster}"))?;
    let client = client_from(&me.kubeconfig).await?;
    Ok((state, client))
}

/// How long a request waits for istiod: a one-off request (curl) for its answer, a standing subscription for its
/// first configuration (a proxy that has none is not ready); after that no request waits for istiod.
const XDS_WAIT: Duration = Duration::from_secs(10);

/// Kubernetes clients per kubeconfig, made once per stand-in process (every request reads several clusters).
#[derive(Default)]
pub(super) struct Clients(BTreeMap<PathBuf, Client>);

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Clients {
    /// The client for `kubeconfig`, made on first use.
    pub(super) async fn get(&mut self, kubeconfig: &Path) -> Result<Client, String> {
        if let Some(c) = self.0.get(kubeconfig) {
            return Ok(c.clone());
        }
        let c = client_from(kubeconfig).await?;
        self.0.insert(kubeconfig.to_path_buf(), c.clone());
        Ok(c)
    }

    /// The client for rehearsal cluster `name`.
    async fn of(&mut self, state: &RehearsalState, name: &str) -> Result<Client, String> {
        let c = state
            .clusters
            .get(name)
            .ok_or_else(|| format!("unknown rehearsal cluster {name}"))?;
        self.get(&c.kubeconfig).await
    }
}

/// The standing subscriptions of a long-lived stand-in (the traffic generator's): its sidecar's per Envoy
/// cluster, and each network gateway pod's per Envoy cluster, as their Envoys hold them.
#[derive(Debug)]
pub(super) struct Watches {
    /// The rehearsal state, re-read whenever a subscription looks for its istiod again.
    state_path: PathBuf,
    sidecar: BTreeMap<String, Watch>,
    gateways: BTreeMap<String, Watch>,
}

impl Watches {
    pub(super) fn new(state_path: &Path) -> Self {
        Watches {
            state_path: state_path.to_path_buf(),
            sidecar: BTreeMap::new(),
            gateways: BTreeMap::new(),
        }
    }

    /// A subscription as `pod`'s proxy in `cluster`, to whichever istiod serves that pod each time it subscribes.
    fn start(
        &self,
        cluster: &str,
        client: &Client,
        pod: &Pod,
        proxy: ProxyIdentity,
        envoy_cluster: &str,
        lds_port: Option<u32>,
    ) -> Watch {
        let (state_path, cluster, client, pod) = (
            self.state_path.clone(),
            cluster.to_string(),
            client.clone(),
            pod.clone(),
        );
        let resolve = move || {
            let (state_path, cluster, client, pod) =
                (state_path.clone(), cluster.clone(), client.clone(), pod.clone());
            async move {
                let state = RehearsalState::read(&state_path)?;
                istiod_for(&state, &cluster, &client, &pod).await
            }
        };
        Watch::start(resolve, proxy, envoy_cluster.to_string(), lds_port)
    }
}

/// What a stand-in sidecar carries from one request to the next.
#[derive(Debug, Default)]
pub(super) struct Sidecar {
    /// Standing subscriptions, whose views are used while istiod cannot be reached (Envoy keeps the configuration
    /// it has): the generator's for its whole life, curl's for one invocation. `None`: every request asks istiod
    /// afresh and fails without it.
    pub watches: Option<Watches>,
    /// Clients of the clusters' API servers.
    pub clients: Clients,
    /// Pods on their way out, kept answering for their `preStop` (live traffic during a restart); `None` for the
    /// steady-state checks, which meet none: only a running pod answers.
    pub departures: Option<super::departures::Departures>,
}

/// Why curl itself failed (the exit codes curl gives them).
enum Failure {
    /// Nothing answered in time (28): a pod address no route leads to.
    Timeout(String),
    /// Anything else (7).
    Other(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Other(s)
    }
}

/// `http://10.20.0.5:5000/hello` → the address, when the URL's host is an IPv4 address.
fn ip_host(url: &str) -> Option<std::net::Ipv4Addr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next()?;
    hostport.split(':').next()?.parse().ok()
}

/// A request to a pod address (the isolation probe): the sidecar passes it through to the address itself, which
/// answers only if the source's pods have a route to it.
async fn direct(
    state: &RehearsalState,
    clients: &mut Clients,
    cluster: &str,
    ip: &str,
) -> Result<String, Failure> {
    for (name, c) in &state.clusters {
        let client = clients.get(&c.kubeconfig).await?;
        if let Some(pod) = pod_by_ip(&client, ip).await? {
            if !state.routed(cluster, name) {
                break;
            }
            let version =
                helloworld_version(&pod).ok_or_else(|| format!("pod {ip} in {name} names no version"))?;
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            return Ok(format!("Hello version: {version}, instance: {pod_name}"));
        }
    }
    Err(Failure::Timeout(format!(
        "Connection timed out: no route from {cluster} to {ip}"
    )))
}

async fn run(cluster: &str, state_path: &Path, urls: &[String]) -> Result<Vec<String>, Failure> {
    let (state, client) = state_and_client(state_path, cluster).await?;
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().labels("app in (curl,sleep)"))
        .await
        .map_err(|e| e.to_string())?;
    let source = list
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.pod_ip.clone()).is_some()
        })
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        .ok_or_else(|| format!("no running curl pod in {cluster}"))?;
    let mut out = Vec::new();
    // One curl process is one sidecar's moment: its Envoy holds one subscription per Envoy cluster, pushed to by
    // istiod, and every URL of the invocation uses that view (not a new ADS stream per URL).
    let mut sc = Sidecar {
        watches: Some(Watches::new(state_path)),
        ..Sidecar::default()
    };
    for url in urls {
        if let Some(ip) = ip_host(url) {
            out.push(direct(&state, &mut sc.clients, cluster, &ip.to_string()).await?);
            continue;
        }
        let t = ServiceTarget::parse(url).ok_or_else(|| format!("cannot parse URL {url}"))?;
        out.push(answer(&state, cluster, &client, &source, &t, &mut sc).await?);
    }
    Ok(out)
}

fn sidecar_env(p: &Pod) -> Option<BTreeMap<String, String>> {
    let spec = p.spec.as_ref()?;
    let proxy = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == "istio-proxy")?;
    Some(
        proxy
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect(),
    )
}

/// The revision that injected `p`'s sidecar (`sidecar.istio.io/status`), if it names one.
fn injected_revision(p: &Pod) -> Option<String> {
    let status = p.metadata.annotations.as_ref()?.get("sidecar.istio.io/status")?;
    let v: serde_json::Value = serde_json::from_str(status).ok()?;
    v.get("revision")?.as_str().map(str::to_string)
}

/// The xDS address of the istiod that serves `source`'s sidecar in `cluster`: its revision's, else the cluster's
/// (a remote: its control plane's).
async fn istiod_for(
    state: &RehearsalState,
    cluster: &str,
    client: &Client,
    source: &Pod,
) -> Result<String, String> {
    let me = state.clusters.get(cluster);
    if let (Some(c), Some(r)) = (me, injected_revision(source)) {
        if let Some(x) = c.istiod_revisions.get(&r) {
            return Ok(x.clone());
        }
        // Its control plane was removed: the sidecar keeps reaching for that istiod, never another one.
        if c.removed_revisions.contains(&r) {
            return Err(format!("istiod-{r} in {cluster} is gone (revision removed)"));
        }
    }
    if let Some(x) = me.and_then(|c| c.istiod_xds.clone()) {
        return Ok(x);
    }
    // A remote: its istio-system names the cluster whose istiod serves it.
    let ns: Api<Namespace> = Api::all(client.clone());
    let n = ns
        .get("istio-system")
        .await
        .map_err(|e| format!("{cluster}: istio-system: {e}"))?;
    let cps = n
        .metadata
        .annotations
        .and_then(|a| a.get("topology.istio.io/controlPlaneClusters").cloned())
        .ok_or_else(|| format!("{cluster} runs no istiod and names no controlPlaneClusters"))?;
    cps.split(',')
        .find_map(|c| state.clusters.get(c.trim()).and_then(|s| s.istiod_xds.clone()))
        .ok_or_else(|| format!("no running istiod for control plane '{cps}' of {cluster}"))
}

fn next_index(state: &RehearsalState, key: &str, n: usize) -> usize {
    let path = state.rr_dir.join(key.replace(['/', '|'], "_"));
    let cur: usize = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let _ = std::fs::create_dir_all(&state.rr_dir);
    let _ = std::fs::write(&path, (cur + 1).to_string());
    cur % n.max(1)
}

/// The running (not terminating) pod with address `ip`.
async fn pod_by_ip(client: &Client, ip: &str) -> Result<Option<Pod>, String> {
    let pods: Api<Pod> = Api::all(client.clone());
    let l = pods
        .list(&ListParams::default().fields(&format!("status.podIP={ip}")))
        .await
        .map_err(|e| e.to_string())?;
    Ok(l.items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none()))
}

async fn root_cert(client: &Client, ns: &str) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.get_opt("istio-ca-root-cert")
        .await
        .ok()
        .flatten()?
        .data?
        .get("root-cert.pem")
        .cloned()
}

/// HelloWorld's version is baked into its image (`examples-helloworld-v1`); fall back to the env the gen script
/// sets, then the label. `None` when the pod says none of these: the stand-in then answers an error, never a
/// version it did not read.
fn helloworld_version(p: &Pod) -> Option<String> {
    let c = p
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == "helloworld"));
    if let Some(img) = c.and_then(|c| c.image.clone())
        && let Some(pos) = img.find("helloworld-v")
    {
        let v: String = img[pos + "helloworld-".len()..]
            .chars()
            .take_while(|ch| ch.is_ascii_alphanumeric())
            .collect();
        if v.len() > 1 {
            return Some(v);
        }
    }
    if let Some(v) = c
        .and_then(|c| c.env.as_ref())
        .and_then(|e| e.iter().find(|e| e.name == "SERVICE_VERSION"))
        .and_then(|e| e.value.clone())
    {
        return Some(v);
    }
    p.metadata.labels.as_ref().and_then(|l| l.get("version").cloned())
}

/// The identity a pod's sidecar presents to istiod (its `ISTIO_META_*` env), or `None` without a sidecar.
pub(super) fn proxy_identity(source: &Pod, cluster: &str) -> Option<ProxyIdentity> {
    let env = sidecar_env(source)?;
    let mut metadata: BTreeMap<String, String> = env
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("ISTIO_META_")?.to_string(), v.clone())))
        .collect();
    metadata
        .entry("CLUSTER_ID".into())
        .or_insert_with(|| cluster.to_string());
    metadata.insert("INTERCEPTION_MODE".into(), "REDIRECT".into());
    Some(ProxyIdentity {
        node_type: if source
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("istio"))
        {
            "router"
        } else {
            "sidecar"
        },
        ip: source
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
        pod: source.metadata.name.clone().unwrap_or_default(),
        namespace: source.metadata.namespace.clone().unwrap_or_default(),
        metadata,
        labels: source
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    })
}

/// istiod's answer for `envoy_cluster` as the sidecar of `namespace/pod` in `cluster` would get it: the
/// rehearsal's counterpart of `istioctl proxy-config endpoints`, for diagnostics.
pub async fn ads_view(
    state_path: &Path,
    cluster: &str,
    namespace: &str,
    pod: &str,
    envoy_cluster: &str,
) -> Result<Vec<SeenEndpoint>, String> {
    let (state, client) = state_and_client(state_path, cluster).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let source = pods
        .get(pod)
        .await
        .map_err(|e| format!("get pod {namespace}/{pod} in {cluster}: {e}"))?;
    let proxy = proxy_identity(&source, cluster)
        .ok_or_else(|| format!("{namespace}/{pod} in {cluster} has no istio-proxy sidecar"))?;
    let xds_addr = istiod_for(&state, cluster, &client, &source).await?;
    xds::endpoints(&xds_addr, &proxy, envoy_cluster, Duration::from_secs(10)).await
}

/// The answer to one request from `source` (its sidecar's view when it has one) to `t`.
pub(super) async fn answer(
    state: &RehearsalState,
    cluster: &str,
    client: &Client,
    source: &Pod,
    t: &ServiceTarget,
    sc: &mut Sidecar,
) -> Result<String, String> {
    let chosen: (String, Option<String>) = match proxy_identity(source, cluster) {
        Some(proxy) => {
            let name = t.envoy_cluster();
            let all = match sc.watches.as_mut() {
                None => {
                    let xds_addr = istiod_for(state, cluster, client, source).await?;
                    xds::endpoints(&xds_addr, &proxy, &name, XDS_WAIT).await?
                }
                Some(w) => {
                    if !w.sidecar.contains_key(&name) {
                        let watch = w.start(cluster, client, source, proxy, &name, None);
                        w.sidecar.insert(name.clone(), watch);
                    }
                    match w.sidecar.get(&name) {
                        Some(watch) => watch.first_view(XDS_WAIT).await?.endpoints.unwrap_or_default(),
                        None => return Err(format!("no subscription for {name}")),
                    }
                }
            };
            let seen: Vec<SeenEndpoint> = xds::eligible(&all);
            if seen.is_empty() {
                return Ok("no healthy upstream".into());
            }
            let e = &seen[next_index(state, &format!("{cluster}-{name}"), seen.len())];
            (e.address.clone(), e.cluster_id.clone())
        }
        None => {
            // No sidecar: kube-proxy picks among the local cluster's ready endpoints only.
            let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &t.namespace);
            let l = slices
                .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={}", t.service)))
                .await
                .map_err(|e| e.to_string())?;
            let mut ips: Vec<String> = l
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .flat_map(|e| e.addresses.iter().cloned())
                .collect();
            ips.sort();
            if ips.is_empty() {
                return Err(format!(
                    "Failed to connect to {}.{} port {}: no endpoints",
                    t.service, t.namespace, t.port
                ));
            }
            let i = next_index(
                state,
                &format!("{cluster}-kube-proxy-{}.{}", t.service, t.namespace),
                ips.len(),
            );
            (ips[i].clone(), Some(cluster.to_string()))
        }
    };
    let (ip, cluster_id) = chosen;
    if let Some(gw) = gateway_at(state, &mut sc.clients, &ip).await? {
        return through_gateway(state, cluster, client, source, t, &gw, sc).await;
    }
    let dest_cluster = cluster_id.unwrap_or_else(|| cluster.to_string());
    // A pod of another cluster, reached directly: only along a route (one network).
    if !state.routed(cluster, &dest_cluster) {
        return Ok(CONNECT_TIMEOUT_BODY.to_string());
    }
    reply_from(state, sc, cluster, client, source, &dest_cluster, &ip).await
}

/// A network gateway found at an endpoint's address: its cluster and its running pods.
struct Gateway {
    cluster: String,
    pods: Vec<Pod>,
}

/// The network gateway whose LoadBalancer address is `ip` (a Service labelled `topology.istio.io/network` with
/// port 15443, as istiod finds them), with its running pods; `None` when `ip` is no gateway's.
async fn gateway_at(
    state: &RehearsalState,
    clients: &mut Clients,
    ip: &str,
) -> Result<Option<Gateway>, String> {
    use k8s_openapi::api::core::v1::Service;
    for (name, c) in &state.clusters {
        let client = clients.get(&c.kubeconfig).await?;
        let svcs: Api<Service> = Api::all(client.clone());
        let l = svcs
            .list(&ListParams::default().labels("topology.istio.io/network"))
            .await
            .map_err(|e| format!("list network gateways in {name}: {e}"))?;
        for s in l.items {
            let at = s
                .status
                .as_ref()
                .and_then(|st| st.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .is_some_and(|i| i.iter().any(|i| i.ip.as_deref() == Some(ip)));
            let port = s
                .spec
                .as_ref()
                .and_then(|sp| sp.ports.as_ref())
                .is_some_and(|ps| ps.iter().any(|p| p.port as u32 == GATEWAY_PORT));
            if !(at && port) {
                continue;
            }
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            let selector = s
                .spec
                .and_then(|sp| sp.selector)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let running: Vec<Pod> = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| format!("list gateway pods in {name}: {e}"))?
                .items
                .into_iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.status.as_ref().and_then(|s| s.pod_ip.clone()).is_some()
                })
                .collect();
            if running.is_empty() {
                return Err(format!(
                    "the network gateway at {ip} in {name} has no running pod"
                ));
            }
            return Ok(Some(Gateway {
                cluster: name.clone(),
                pods: running,
            }));
        }
    }
    Ok(None)
}

/// The request as the gateway passes it on: only when its listeners on 15443 accept the service's SNI, to an
/// endpoint its own istiod gives it in its network's view. With standing subscriptions, a gateway pod that has
/// its configuration takes the request (a gateway is ready only then); one-off requests ask the first pod's istiod.
async fn through_gateway(
    state: &RehearsalState,
    cluster: &str,
    client: &Client,
    source: &Pod,
    t: &ServiceTarget,
    gw: &Gateway,
    sc: &mut Sidecar,
) -> Result<String, String> {
    let g = &gw.cluster;
    let g_client = sc.clients.of(state, g).await?;
    let name = t.envoy_cluster();
    let sni = xds::gateway_sni(&name).ok_or_else(|| format!("no SNI for {name}"))?;
    let identity = |pod: &Pod| {
        proxy_identity(pod, g).ok_or_else(|| format!("the gateway pod in {g} has no istio-proxy"))
    };
    let (names, endpoints) = match sc.watches.as_mut() {
        None => {
            let pod = gw
                .pods
                .first()
                .ok_or_else(|| format!("the network gateway in {g} has no running pod"))?;
            let proxy = identity(pod)?;
            let xds_addr = istiod_for(state, g, &g_client, pod).await?;
            (
                xds::listener_server_names(&xds_addr, &proxy, GATEWAY_PORT, XDS_WAIT).await?,
                xds::endpoints(&xds_addr, &proxy, &name, XDS_WAIT).await?,
            )
        }
        Some(w) => {
            let mut keys = Vec::new();
            for pod in &gw.pods {
                let key = format!("{g}/{}/{name}", pod.metadata.name.clone().unwrap_or_default());
                if !w.gateways.contains_key(&key) {
                    let watch = w.start(g, &g_client, pod, identity(pod)?, &name, Some(GATEWAY_PORT));
                    w.gateways.insert(key.clone(), watch);
                }
                keys.push(key);
            }
            let ready = keys
                .iter()
                .filter_map(|k| w.gateways.get(k))
                .find(|watch| watch.warmed());
            let watch = match ready {
                Some(watch) => watch,
                None => keys
                    .first()
                    .and_then(|k| w.gateways.get(k))
                    .ok_or_else(|| format!("the network gateway in {g} has no running pod"))?,
            };
            let view = watch.first_view(XDS_WAIT).await?;
            (
                view.server_names.unwrap_or_default(),
                view.endpoints.unwrap_or_default(),
            )
        }
    };
    if !names.contains(&sni) {
        return Ok(GATEWAY_RESET_BODY.to_string());
    }
    let seen = xds::eligible(&endpoints);
    if seen.is_empty() {
        return Ok("no healthy upstream".into());
    }
    let e = &seen[next_index(state, &format!("{g}-gateway-{name}"), seen.len())];
    let dest = e.cluster_id.clone().unwrap_or_else(|| g.clone());
    if !state.routed(g, &dest) {
        return Ok(CONNECT_TIMEOUT_BODY.to_string());
    }
    reply_from(state, sc, cluster, client, source, &dest, &e.address).await
}

/// The reply of the pod at `ip` in `dest_cluster` to a request from `source` in `cluster`: its version, or the
/// TLS failure when the two clusters' roots differ.
async fn reply_from(
    state: &RehearsalState,
    sc: &mut Sidecar,
    cluster: &str,
    client: &Client,
    source: &Pod,
    dest_cluster: &str,
    ip: &str,
) -> Result<String, String> {
    let src_ns = source.metadata.namespace.clone().unwrap_or_default();
    let dest_cluster = dest_cluster.to_string();
    let dest_state = state
        .clusters
        .get(&dest_cluster)
        .ok_or_else(|| format!("endpoint {ip} is in unknown cluster {dest_cluster}"))?;
    let dest_client = if dest_cluster == cluster {
        client.clone()
    } else {
        sc.clients.get(&dest_state.kubeconfig).await?
    };
    let running = pod_by_ip(&dest_client, ip).await?;
    let leaving = || {
        sc.departures
            .as_ref()
            .and_then(|d| d.serving(&dest_cluster, ip, std::time::Instant::now()).cloned())
    };
    let Some(pod) = running.or_else(leaving) else {
        // The endpoint istiod (or the sidecar's last view of it) named is gone: what Envoy answers when the
        // connection is refused.
        return Ok(CONNECT_REFUSED_BODY.to_string());
    };
    if dest_cluster != cluster && sidecar_env(source).is_some() {
        let dest_ns = pod.metadata.namespace.clone().unwrap_or_default();
        let (a, b) = (
            root_cert(client, &src_ns).await,
            root_cert(&dest_client, &dest_ns).await,
        );
        if a.is_none() || a != b {
            return Ok(TLS_FAILURE_BODY.to_string());
        }
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    let version = helloworld_version(&pod).ok_or_else(|| {
        format!(
            "pod {name} in {dest_cluster} (IP {ip}) answers with no version: its helloworld container has no \
             helloworld-vN image and no SERVICE_VERSION, and the pod no version label"
        )
    })?;
    Ok(format!("Hello version: {version}, instance: {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_option_value_is_no_url() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            curl_urls(a(&["-sS", "-m", "5", "http://10.20.1.5:5000/hello"])),
            a(&["http://10.20.1.5:5000/hello"])
        );
        assert_eq!(
            curl_urls(a(&["-sS", "helloworld.sample:5000/hello"])),
            a(&["helloworld.sample:5000/hello"])
        );
    }

    #[test]
    fn version_comes_from_the_image() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"version": "v9"}},
            "spec": {"containers": [{"name": "helloworld", "image": "registry.istio.io/release/examples-helloworld-v2:1.0"}]}
        }))
        .expect("pod");
        assert_eq!(helloworld_version(&p).as_deref(), Some("v2"));
    }

    #[test]
    fn a_pod_that_names_no_version_gets_none_never_a_default() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "helloworld"}},
            "spec": {"containers": [{"name": "helloworld", "image": "example/hello:1.0"}]}
        }))
        .expect("pod");
        assert_eq!(helloworld_version(&p), None);
    }

    /// A sidecar whose revision was removed asks no other istiod (it keeps its last endpoints instead); a live
    /// revision's sidecar asks its own.
    #[tokio::test]
    async fn a_sidecar_of_a_removed_revision_reaches_no_istiod() {
        let mut state = RehearsalState::default();
        let mut c = super::super::state::ClusterState {
            istiod_xds: Some("127.0.0.1:1".into()),
            ..Default::default()
        };
        c.istiod_revisions.insert("1-32-dev".into(), "127.0.0.1:2".into());
        c.removed_revisions.push("1-31-dev".into());
        state.clusters.insert("cluster1".into(), c);
        let client =
            Client::try_from(Config::new("http://127.0.0.1:9".parse().expect("uri"))).expect("client");
        let pod = |rev: &str| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"annotations": {
                "sidecar.istio.io/status": format!("{{\"revision\":\"{rev}\"}}")}}}))
            .expect("pod")
        };
        let gone = istiod_for(&state, "cluster1", &client, &pod("1-31-dev")).await;
        assert!(gone.is_err_and(|e| e.contains("istiod-1-31-dev")));
        let live = istiod_for(&state, "cluster1", &client, &pod("1-32-dev")).await;
        assert_eq!(live.as_deref(), Ok("127.0.0.1:2"));
    }

    #[test]
    fn shim_script_reexecs_the_binary() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = install_shim(dir.path(), Path::new("/opt/it's/meshconf")).expect("write");
        let text = std::fs::read_to_string(p).expect("read");
        assert!(
            text.contains("MESHCONF_SHIM=curl exec '/opt/it'\\''s/meshconf' \"$@\""),
            "{text}"
        );
    }
}
