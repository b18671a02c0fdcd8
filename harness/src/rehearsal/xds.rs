//! An ADS client of istiod's plaintext port: one-shot questions (the endpoints a given proxy would get, the SNI
//! names a gateway's listeners on a port accept) and a standing subscription that ACKs and follows istiod's pushes.

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{Node, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value};
use prost::Message;

/// EDS type URL.
pub const EDS_TYPE: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// LDS type URL.
pub const LDS_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// One endpoint as the proxy would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEndpoint {
    /// IP address.
    pub address: String,
    /// Port.
    pub port: u32,
    /// Cluster ID from istio's `workload` metadata (`name;ns;svc;rev;cluster`).
    pub cluster_id: Option<String>,
    /// Locality priority.
    pub priority: u32,
    /// Envoy health status code (0 unknown, 1 healthy).
    pub health: i32,
}

/// The proxy identity for the request.
#[derive(Debug, Clone)]
pub struct ProxyIdentity {
    /// `sidecar`, or `router` for a gateway.
    pub node_type: &'static str,
    /// Pod IP.
    pub ip: String,
    /// Pod name.
    pub pod: String,
    /// Namespace.
    pub namespace: String,
    /// Metadata fields (CLUSTER_ID, NETWORK, ...).
    pub metadata: BTreeMap<String, String>,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
}

fn str_value(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_string())),
    }
}

fn node(p: &ProxyIdentity) -> Node {
    let mut fields: std::collections::HashMap<String, Value> = p
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), str_value(v)))
        .collect();
    fields.insert("NAMESPACE".into(), str_value(&p.namespace));
    fields.insert("NAME".into(), str_value(&p.pod));
    fields.insert("INSTANCE_IPS".into(), str_value(&p.ip));
    let labels: std::collections::HashMap<String, Value> =
        p.labels.iter().map(|(k, v)| (k.clone(), str_value(v))).collect();
    fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(value::Kind::StructValue(Struct { fields: labels })),
        },
    );
    Node {
        id: format!(
            "{}~{}~{}.{}~{}.svc.cluster.local",
            p.node_type, p.ip, p.pod, p.namespace, p.namespace
        ),
        cluster: format!(
            "{}.{}",
            p.labels.get("app").cloned().unwrap_or_default(),
            p.namespace
        ),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}

/// One ADS request of `type_url` for `names` (empty: every resource) as `proxy`; the first response's resources.
async fn ask(
    xds_addr: &str,
    proxy: &ProxyIdentity,
    type_url: &str,
    names: Vec<String>,
) -> Result<Vec<Any>, String> {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds_addr}"))
        .await
        .map_err(|e| format!("cannot connect to istiod xDS at {xds_addr}: {e}"))?;
    let req = DiscoveryRequest {
        node: Some(node(proxy)),
        type_url: type_url.into(),
        resource_names: names,
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(req).await.map_err(|e| e.to_string())?;
    let mut stream = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("ADS stream refused by istiod at {xds_addr}: {}", e.message()))?
        .into_inner();
    let resp = stream
        .message()
        .await
        .map_err(|e| format!("ADS error from istiod at {xds_addr}: {}", e.message()))?
        .ok_or_else(|| "istiod closed the ADS stream without a response".to_string())?;
    drop(tx);
    Ok(resp.resources)
}

/// The SNI names the listeners of `proxy` on `port` match (a gateway's 15443 `AUTO_PASSTHROUGH` chains, one
/// per service: `outbound_.5000_._.helloworld.sample.svc.cluster.local`). Empty when no listener is on `port`.
pub async fn listener_server_names(
    xds_addr: &str,
    proxy: &ProxyIdentity,
    port: u32,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let fut = async { decode_server_names(&ask(xds_addr, proxy, LDS_TYPE, Vec::new()).await?, port) };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("istiod at {xds_addr} did not answer LDS within {timeout:?}"))?
}

/// The SNI names of the filter chains of the listeners on `port` among `resources` (an LDS response).
fn decode_server_names(resources: &[Any], port: u32) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for any in resources {
        let l = Listener::decode(any.value.as_slice()).map_err(|e| format!("bad LDS payload: {e}"))?;
        let on_port = l.address.and_then(|a| a.address).is_some_and(|a| match a {
            address::Address::SocketAddress(sa) => {
                sa.port_specifier == Some(socket_address::PortSpecifier::PortValue(port))
            }
            _ => false,
        });
        if on_port {
            for fc in l.filter_chains {
                out.extend(fc.filter_chain_match.into_iter().flat_map(|m| m.server_names));
            }
        }
    }
    Ok(out)
}

/// The SNI a client's proxy sends to a network gateway for an Envoy cluster `outbound|port|subset|host`.
pub fn gateway_sni(envoy_cluster: &str) -> Option<String> {
    let mut parts = envoy_cluster.split('|');
    let (dir, port, subset, host) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(format!("{dir}_.{port}_.{subset}_.{host}"))
}

/// Requests the ClusterLoadAssignment for `cluster_name` (e.g. `outbound|5000||helloworld.sample.svc.cluster.local`).
pub async fn endpoints(
    xds_addr: &str,
    proxy: &ProxyIdentity,
    cluster_name: &str,
    timeout: Duration,
) -> Result<Vec<SeenEndpoint>, String> {
    let fut = async {
        let resources = ask(xds_addr, proxy, EDS_TYPE, vec![cluster_name.to_string()]).await?;
        decode_endpoints(&resources, cluster_name)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("istiod at {xds_addr} did not answer EDS within {timeout:?}"))?
}

/// The endpoints of `cluster_name` among `resources` (an EDS response).
fn decode_endpoints(resources: &[Any], cluster_name: &str) -> Result<Vec<SeenEndpoint>, String> {
    let mut out = Vec::new();
    for any in resources {
        let cla = ClusterLoadAssignment::decode(any.value.as_slice())
            .map_err(|e| format!("bad EDS payload: {e}"))?;
        if cla.cluster_name != cluster_name {
            continue;
        }
        for locality in cla.endpoints {
            for lb in locality.lb_endpoints {
                let cluster_id = lb
                    .metadata
                    .as_ref()
                    .and_then(|m| m.filter_metadata.get("istio"))
                    .and_then(|s| s.fields.get("workload"))
                    .and_then(|v| match &v.kind {
                        Some(value::Kind::StringValue(w)) => w.split(';').nth(4).map(str::to_string),
                        _ => None,
                    });
                let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = lb.host_identifier else {
                    continue;
                };
                let Some(address::Address::SocketAddress(sa)) = ep.address.and_then(|a| a.address) else {
                    continue;
                };
                let port = match sa.port_specifier {
                    Some(socket_address::PortSpecifier::PortValue(p)) => p,
                    _ => 0,
                };
                out.push(SeenEndpoint {
                    address: sa.address,
                    port,
                    cluster_id,
                    priority: locality.priority,
                    health: lb.health_status,
                });
            }
        }
    }
    Ok(out)
}

/// One update of a standing subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// istiod's current endpoints of the subscribed Envoy cluster.
    Endpoints(Vec<SeenEndpoint>),
    /// istiod's current SNI names of the listeners on the subscribed port.
    ServerNames(Vec<String>),
}

/// How long connecting to istiod may take before a subscription gives up (and its owner tries again).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Subscribes as `proxy` to the endpoints of `cluster_name` (and, with `lds_port`, to every listener, for the SNI
/// names on that port), ACKs each response as Envoy does and hands each one to `on`, until istiod closes the
/// stream (`Ok`) or it fails (`Err`). Every push istiod makes reaches `on`: the view an Envoy holds.
pub async fn subscribe(
    xds_addr: &str,
    proxy: &ProxyIdentity,
    cluster_name: &str,
    lds_port: Option<u32>,
    mut on: impl FnMut(Pushed),
) -> Result<(), String> {
    let mut client = tokio::time::timeout(
        CONNECT_TIMEOUT,
        AggregatedDiscoveryServiceClient::connect(format!("http://{xds_addr}")),
    )
    .await
    .map_err(|_| format!("istiod xDS at {xds_addr} did not accept a connection within {CONNECT_TIMEOUT:?}"))?
    .map_err(|e| format!("cannot connect to istiod xDS at {xds_addr}: {e}"))?;
    let eds_names = vec![cluster_name.to_string()];
    let mut first = vec![DiscoveryRequest {
        node: Some(node(proxy)),
        type_url: EDS_TYPE.into(),
        resource_names: eds_names.clone(),
        ..Default::default()
    }];
    if lds_port.is_some() {
        first.push(DiscoveryRequest {
            type_url: LDS_TYPE.into(),
            ..Default::default()
        });
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for req in first {
        tx.send(req).await.map_err(|e| e.to_string())?;
    }
    let mut stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client.stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .map_err(|_| format!("istiod at {xds_addr} did not open an ADS stream within {CONNECT_TIMEOUT:?}"))?
    .map_err(|e| format!("ADS stream refused by istiod at {xds_addr}: {}", e.message()))?
    .into_inner();
    loop {
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("ADS error from istiod at {xds_addr}: {}", e.message())),
        };
        let (pushed, names) = match (resp.type_url.as_str(), lds_port) {
            (EDS_TYPE, _) => (
                Pushed::Endpoints(decode_endpoints(&resp.resources, cluster_name)?),
                eds_names.clone(),
            ),
            (LDS_TYPE, Some(port)) => (
                Pushed::ServerNames(decode_server_names(&resp.resources, port)?),
                Vec::new(),
            ),
            _ => continue,
        };
        on(pushed);
        let ack = DiscoveryRequest {
            type_url: resp.type_url,
            version_info: resp.version_info,
            response_nonce: resp.nonce,
            resource_names: names,
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            return Ok(());
        }
    }
}

/// Envoy's name for a health status code (`envoy.config.core.v3.HealthStatus`).
pub fn health_name(code: i32) -> &'static str {
    match code {
        0 => "UNKNOWN",
        1 => "HEALTHY",
        2 => "UNHEALTHY",
        3 => "DRAINING",
        4 => "TIMEOUT",
        5 => "DEGRADED",
        _ => "OTHER",
    }
}

/// Envoy's choice set: healthy or unknown endpoints of the lowest priority present.
pub fn eligible(endpoints: &[SeenEndpoint]) -> Vec<SeenEndpoint> {
    let ok: Vec<&SeenEndpoint> = endpoints
        .iter()
        .filter(|e| e.health == 0 || e.health == 1)
        .collect();
    let Some(min) = ok.iter().map(|e| e.priority).min() else {
        return Vec::new();
    };
    let mut v: Vec<SeenEndpoint> = ok.into_iter().filter(|e| e.priority == min).cloned().collect();
    v.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
    v
}

/// A stand-in istiod for tests: an ADS server that answers the first EDS request with each of `pushes` in turn,
/// sending the next only after the ACK of the one before, records every request it gets, then closes the stream.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::{Arc, Mutex};

    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
    use envoy_types::pb::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
    };
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    };
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    };
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;
    use tokio_stream::wrappers::ReceiverStream;

    use super::{EDS_TYPE, address, socket_address};

    /// A generator pod's sidecar, as the stand-in presents it.
    pub fn sidecar() -> super::ProxyIdentity {
        super::ProxyIdentity {
            node_type: "sidecar",
            ip: "10.10.1.5".into(),
            pod: "loadgen-abc".into(),
            namespace: "sample".into(),
            metadata: Default::default(),
            labels: Default::default(),
        }
    }

    /// The EDS payload naming `addrs` (port 5000) for `cluster`.
    pub fn cla(cluster: &str, addrs: &[&str]) -> Any {
        let lb_endpoints = addrs
            .iter()
            .map(|a| LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: a.to_string(),
                            port_specifier: Some(socket_address::PortSpecifier::PortValue(5000)),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                })),
                health_status: 1,
                ..Default::default()
            })
            .collect();
        let c = ClusterLoadAssignment {
            cluster_name: cluster.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints,
                ..Default::default()
            }],
            ..Default::default()
        };
        Any {
            type_url: EDS_TYPE.into(),
            value: c.encode_to_vec(),
        }
    }

    #[derive(Clone)]
    struct Istiod {
        pushes: Vec<Any>,
        seen: Arc<Mutex<Vec<DiscoveryRequest>>>,
    }

    #[tonic::async_trait]
    impl AggregatedDiscoveryService for Istiod {
        type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, tonic::Status>>;
        type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, tonic::Status>>;

        async fn stream_aggregated_resources(
            &self,
            request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
        ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
            let mut incoming = request.into_inner();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let me = self.clone();
            tokio::spawn(async move {
                let mut next = 0;
                while let Ok(Some(req)) = incoming.message().await {
                    let eds = req.type_url == EDS_TYPE;
                    if let Ok(mut s) = me.seen.lock() {
                        s.push(req);
                    }
                    if !eds {
                        continue;
                    }
                    let Some(p) = me.pushes.get(next) else {
                        return; // every push ACKed: istiod goes away
                    };
                    next += 1;
                    let resp = DiscoveryResponse {
                        type_url: EDS_TYPE.into(),
                        version_info: format!("v{next}"),
                        nonce: format!("n{next}"),
                        resources: vec![p.clone()],
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            });
            Ok(tonic::Response::new(ReceiverStream::new(rx)))
        }

        async fn delta_aggregated_resources(
            &self,
            _request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
        ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("delta xDS"))
        }
    }

    /// Serves `pushes` on a loopback port; the address and the requests it records.
    pub async fn serve(pushes: Vec<Any>) -> (String, Arc<Mutex<Vec<DiscoveryRequest>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback port");
        let addr = listener.local_addr().expect("address").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let svc = AggregatedDiscoveryServiceServer::new(Istiod {
            pushes,
            seen: Arc::clone(&seen),
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .serve_with_incoming(svc, tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (addr, seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(a: &str, pri: u32, health: i32) -> SeenEndpoint {
        SeenEndpoint {
            address: a.into(),
            port: 5000,
            cluster_id: None,
            priority: pri,
            health,
        }
    }

    #[test]
    fn eligible_keeps_lowest_priority_healthy() {
        let v = eligible(&[
            ep("10.0.0.2", 0, 1),
            ep("10.0.0.1", 0, 0),
            ep("10.0.0.3", 1, 1),
            ep("10.0.0.4", 0, 2),
        ]);
        let addrs: Vec<_> = v.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(addrs, ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn the_gateway_sni_follows_istios_dns_srv_subset_key() {
        assert_eq!(
            gateway_sni("outbound|5000||helloworld.sample.svc.cluster.local").as_deref(),
            Some("outbound_.5000_._.helloworld.sample.svc.cluster.local")
        );
        assert_eq!(gateway_sni("not-an-envoy-cluster"), None);
    }

    #[test]
    fn node_id_follows_the_sidecar_format() {
        let p = ProxyIdentity {
            node_type: "sidecar",
            ip: "10.10.1.5".into(),
            pod: "curl-abc".into(),
            namespace: "sample".into(),
            metadata: BTreeMap::from([("CLUSTER_ID".into(), "cluster1".into())]),
            labels: BTreeMap::from([("app".into(), "curl".into())]),
        };
        let n = node(&p);
        assert_eq!(n.id, "sidecar~10.10.1.5~curl-abc.sample~sample.svc.cluster.local");
        assert_eq!(n.cluster, "curl.sample");
    }

    /// Every push reaches the subscriber in order, each is ACKed with its version and nonce (istiod sends the
    /// next only then), and a stream istiod closes ends the subscription without an error.
    #[tokio::test]
    async fn a_subscription_follows_pushes_and_acks_each() {
        let name = "outbound|5000||helloworld.sample.svc.cluster.local";
        let (addr, seen) = fake::serve(vec![
            fake::cla(name, &["10.10.1.7"]),
            fake::cla(name, &["10.10.1.7", "10.10.1.9"]),
        ])
        .await;
        let mut got = Vec::new();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            subscribe(&addr, &fake::sidecar(), name, None, |p| got.push(p)),
        )
        .await
        .expect("the fake closes the stream after the last ACK");
        assert_eq!(r, Ok(()));
        let addrs: Vec<Vec<String>> = got
            .iter()
            .map(|p| match p {
                Pushed::Endpoints(e) => e.iter().map(|e| e.address.clone()).collect(),
                Pushed::ServerNames(n) => n.clone(),
            })
            .collect();
        assert_eq!(addrs, [vec!["10.10.1.7"], vec!["10.10.1.7", "10.10.1.9"]]);
        let seen = seen.lock().expect("requests").clone();
        let acks: Vec<(&str, &str)> = seen
            .iter()
            .map(|r| (r.version_info.as_str(), r.response_nonce.as_str()))
            .collect();
        assert_eq!(acks, [("", ""), ("v1", "n1"), ("v2", "n2")]);
        assert!(
            seen[0]
                .node
                .as_ref()
                .is_some_and(|n| n.id.starts_with("sidecar~10.10.1.5~"))
        );
        assert!(seen.iter().all(|r| r.resource_names == [name]));
    }
}
