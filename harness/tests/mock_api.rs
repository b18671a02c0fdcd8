//! The kube layer against a mock API server (tower-test), as kube-rs tests itself: server-side apply through
//! discovery, watch-based LoadBalancer waits with deadlines, and secret handling.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use meshconf::kube::{Applier, KubeError, wait_lb_address};
use serde_json::json;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path_and_query: String,
    content_type: String,
    body: String,
}

fn ok(v: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(200)
        .body(Body::from(serde_json::to_vec(&v).expect("json")))
        .expect("response")
}

fn discovery(path: &str) -> Option<serde_json::Value> {
    Some(match path {
        "/api" => json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        "/apis" => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]}),
        "/api/v1" => json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace", "verbs": ["get", "list", "patch", "watch"]},
            {"name": "services", "singularName": "service", "namespaced": true, "kind": "Service", "verbs": ["get", "list", "patch", "watch"]},
            {"name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret", "verbs": ["get", "list", "patch"]}]}),
        "/apis/apps/v1" => json!({"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [
            {"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment", "verbs": ["get", "list", "patch", "watch"]}]}),
        _ => return None,
    })
}

/// Serves discovery and echoes applies; `custom` may answer any request first.
fn serve(
    mut handle: Handle,
    seen: Arc<Mutex<Vec<Seen>>>,
    custom: impl Fn(&str, &str) -> Option<Response<Body>> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let path = req.uri().path().to_string();
            let aggregated = req
                .headers()
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("apidiscovery"));
            let content_type = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = req
                .into_body()
                .collect_bytes()
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            seen.lock().expect("lock").push(Seen {
                method: method.clone(),
                path_and_query: pq.clone(),
                content_type,
                body: body.clone(),
            });
            let resp = if aggregated {
                // An API server without aggregated discovery: the applier must fall back to the legacy walk.
                Response::builder()
                    .status(406)
                    .body(Body::from(Vec::new()))
                    .expect("resp")
            } else if let Some(r) = custom(&method, &pq) {
                r
            } else if let Some(d) = discovery(&path).filter(|_| method == "GET") {
                ok(d)
            } else if method == "PATCH" {
                let v: serde_json::Value = serde_saphyr::from_str(&body).unwrap_or(json!({}));
                ok(v)
            } else {
                Response::builder().status(404).body(Body::from(serde_json::to_vec(&json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})).expect("json"))).expect("resp")
            };
            send.send_response(resp);
        }
    })
}

fn client() -> (Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), handle)
}

const MANIFEST: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: helloworld\n  labels: {app: helloworld}\nspec:\n  ports: [{port: 5000, name: http}]\n---\n\
apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: helloworld-v1\nspec:\n  replicas: 1\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: sample\n";

#[tokio::test]
async fn apply_uses_server_side_apply_with_one_field_manager_and_resolves_scope() {
    let (client, handle) = client();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = serve(handle, seen.clone(), |_, _| None);
    let applied = tokio::time::timeout(
        Duration::from_secs(10),
        Applier::new(client).apply_yaml(MANIFEST, Some("sample")),
    )
    .await
    .expect("no hang")
    .expect("applied");
    assert_eq!(
        applied,
        [
            "Service sample/helloworld",
            "Deployment sample/helloworld-v1",
            "Namespace sample"
        ]
    );
    let patches: Vec<Seen> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|s| s.method == "PATCH")
        .cloned()
        .collect();
    assert_eq!(patches.len(), 3);
    assert!(
        patches[0]
            .path_and_query
            .starts_with("/api/v1/namespaces/sample/services/helloworld?"),
        "{:?}",
        patches[0]
    );
    assert!(
        patches[1]
            .path_and_query
            .starts_with("/apis/apps/v1/namespaces/sample/deployments/helloworld-v1?")
    );
    assert!(
        patches[2]
            .path_and_query
            .starts_with("/api/v1/namespaces/sample?"),
        "cluster-scoped: {:?}",
        patches[2]
    );
    for p in &patches {
        assert!(
            p.path_and_query.contains("fieldManager=meshconf") && p.path_and_query.contains("force=true"),
            "{p:?}"
        );
        assert_eq!(p.content_type, "application/apply-patch+yaml");
    }
    assert!(
        patches[0].body.contains("\"namespace\":\"sample\""),
        "namespace filled in: {}",
        patches[0].body
    );
    assert!(
        !patches[2].body.contains("\"namespace\""),
        "no namespace on a cluster-scoped object"
    );
    server.abort();
}

#[tokio::test]
async fn unknown_kinds_refresh_discovery_then_fail_with_a_hint() {
    let (client, handle) = client();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = serve(handle, seen.clone(), |_, _| None);
    let e = Applier::new(client)
        .apply_yaml(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n",
            Some("istio-system"),
        )
        .await
        .expect_err("no such kind");
    assert!(
        e.to_string()
            .contains("does not serve networking.istio.io/v1 Gateway: is its CRD installed?"),
        "{e}"
    );
    let discoveries = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|s| s.path_and_query == "/apis")
        .count();
    assert!(
        discoveries >= 2,
        "discovery must be re-run once before giving up, saw {discoveries}"
    );
    server.abort();
}

fn svc(ip: Option<&str>) -> serde_json::Value {
    let status = match ip {
        Some(ip) => json!({"loadBalancer": {"ingress": [{"ip": ip}]}}),
        None => json!({"loadBalancer": {}}),
    };
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "istio-eastwestgateway", "namespace": "istio-system", "resourceVersion": "1"},
           "spec": {"type": "LoadBalancer"}, "status": status})
}

#[tokio::test]
async fn lb_wait_follows_the_watch_until_an_address_appears() {
    let (client, handle) = client();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = serve(handle, seen.clone(), |method, pq| {
        if method != "GET" || !pq.starts_with("/api/v1/namespaces/istio-system/services") {
            return None;
        }
        if pq.contains("watch=true") {
            let ev = json!({"type": "MODIFIED", "object": svc(Some("192.0.2.130"))});
            return Some(
                Response::builder()
                    .status(200)
                    .body(Body::from(format!("{ev}\n").into_bytes()))
                    .expect("resp"),
            );
        }
        Some(ok(
            json!({"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": [svc(None)]}),
        ))
    });
    let ip = wait_lb_address(
        &client,
        "istio-system",
        "istio-eastwestgateway",
        Duration::from_secs(10),
    )
    .await
    .expect("address");
    assert_eq!(ip.to_string(), "192.0.2.130");
    assert!(
        seen.lock()
            .expect("lock")
            .iter()
            .any(|s| s.path_and_query.contains("watch=true")),
        "must watch, not poll"
    );
    server.abort();
}

#[tokio::test]
async fn lb_wait_times_out_naming_the_service_and_pending() {
    let (client, handle) = client();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = serve(handle, seen, |method, pq| {
        if method != "GET" || !pq.starts_with("/api/v1/namespaces/istio-system/services") {
            return None;
        }
        if pq.contains("watch=true") {
            return Some(
                Response::builder()
                    .status(200)
                    .body(Body::from(Vec::new()))
                    .expect("resp"),
            );
        }
        if pq.starts_with("/api/v1/namespaces/istio-system/services/istio-eastwestgateway") {
            return Some(ok(svc(None)));
        }
        Some(ok(
            json!({"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": [svc(None)]}),
        ))
    });
    let e = wait_lb_address(
        &client,
        "istio-system",
        "istio-eastwestgateway",
        Duration::from_millis(800),
    )
    .await
    .expect_err("pending");
    assert!(matches!(e, KubeError::Timeout { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "timed out after 800ms waiting for an external IP on service istio-system/istio-eastwestgateway (last seen: <pending>)"
    );
    server.abort();
}

/// A watch that the API server keeps breaking (here: a 500 on the list that starts it) is watched again until the
/// deadline, then reported with the last watch error: infrastructure (exit 3), never a conformance failure of the
/// mesh (exit 1) that a retry would mark flaky.
#[tokio::test]
async fn a_broken_watch_is_an_infrastructure_error_not_a_mesh_failure() {
    let (client, handle) = client();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = serve(handle, seen, |method, pq| {
        if method != "GET" || !pq.starts_with("/api/v1/namespaces/istio-system/services") {
            return None;
        }
        Some(
            Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Body::from(
                    serde_json::to_vec(&json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError",
                    "code": 500, "message": "etcdserver: leader changed"}))
                    .expect("json"),
                ))
                .expect("resp"),
        )
    });
    let e = wait_lb_address(
        &client,
        "istio-system",
        "istio-eastwestgateway",
        Duration::from_secs(3),
    )
    .await
    .expect_err("the watch broke");
    assert!(matches!(e, KubeError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains("last watch error"), "{e}");
    assert!(e.to_string().contains("leader changed"), "{e}");
    let step = meshconf::runner::StepError::from(e);
    assert_eq!(
        step.kind,
        meshconf::report::FailureKind::Infrastructure,
        "{}",
        step.message
    );
    server.abort();
}

#[tokio::test]
async fn secrets_are_sent_to_the_server_but_never_echoed_in_errors() {
    let (client, handle) = client();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = serve(handle, seen.clone(), |method, pq| {
        (method == "PATCH" && pq.contains("/secrets/")).then(|| {
            Response::builder()
                .status(StatusCode::UNPROCESSABLE_ENTITY)
                .body(Body::from(
                    serde_json::to_vec(&json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                "message": "Secret \"istio-remote-secret-cluster2\" is invalid"}))
                    .expect("json"),
                ))
                .expect("resp")
        })
    });
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: istio-remote-secret-cluster2\n  labels: {istio/multiCluster: \"true\"}\nstringData:\n  cluster2: |\n    users:\n    - user: {token: s3cr3t-bearer-token}\n";
    let e = Applier::new(client)
        .apply_yaml(secret, Some("istio-system"))
        .await
        .expect_err("rejected");
    let shown = format!("{e} {e:?}");
    assert!(
        shown.contains("apply Secret istio-system/istio-remote-secret-cluster2"),
        "{shown}"
    );
    assert!(
        !shown.contains("s3cr3t-bearer-token"),
        "error leaked the token: {shown}"
    );
    let sent = seen
        .lock()
        .expect("lock")
        .iter()
        .any(|s| s.method == "PATCH" && s.body.contains("s3cr3t-bearer-token"));
    assert!(sent, "the secret itself must reach the API server");
    server.abort();
}

/// A group whose preferred version serves only some of its kinds (MetalLB v0.16 prefers v1beta2, which has only
/// BGPPeer): the snapshot still names the pool of v1beta1. Listing only the preferred version missed it, and the
/// fleet whose pool a fault removed was called clean (kind CI).
#[tokio::test]
async fn the_snapshot_sees_every_kind_of_a_group_not_only_its_preferred_version() {
    let (client, handle) = client();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let empty = |kind: &str| {
        ok(json!({"kind": format!("{kind}List"), "apiVersion": "v1", "metadata": {}, "items": []}))
    };
    let _server = serve(handle, seen.clone(), move |method, pq| {
        if method != "GET" {
            return None;
        }
        let path = pq.split('?').next().unwrap_or_default();
        Some(match path {
            "/apis" => ok(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "metallb.io", "versions": [
                    {"groupVersion": "metallb.io/v1beta2", "version": "v1beta2"},
                    {"groupVersion": "metallb.io/v1beta1", "version": "v1beta1"}],
                 "preferredVersion": {"groupVersion": "metallb.io/v1beta2", "version": "v1beta2"}}]})),
            "/apis/metallb.io/v1beta2" => ok(
                json!({"kind": "APIResourceList", "groupVersion": "metallb.io/v1beta2",
                "resources": [{"name": "bgppeers", "singularName": "bgppeer", "namespaced": true, "kind": "BGPPeer",
                               "verbs": ["get", "list"]}]}),
            ),
            "/apis/metallb.io/v1beta1" => ok(
                json!({"kind": "APIResourceList", "groupVersion": "metallb.io/v1beta1",
                "resources": [
                    {"name": "bgppeers", "singularName": "bgppeer", "namespaced": true, "kind": "BGPPeer", "verbs": ["get", "list"]},
                    {"name": "ipaddresspools", "singularName": "ipaddresspool", "namespaced": true, "kind": "IPAddressPool",
                     "verbs": ["get", "list"]}]}),
            ),
            "/apis/metallb.io/v1beta1/ipaddresspools" => ok(json!({"kind": "IPAddressPoolList",
                "apiVersion": "metallb.io/v1beta1", "metadata": {},
                "items": [{"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                           "metadata": {"name": "default-pool", "namespace": "metallb-system"}}]})),
            "/api/v1/namespaces" => empty("Namespace"),
            p if p.starts_with("/apis/metallb.io/") && p.ends_with("/bgppeers") => empty("BGPPeer"),
            p if p.starts_with("/apis/apiextensions.k8s.io/")
                || p.starts_with("/apis/admissionregistration.k8s.io/")
                || p.starts_with("/apis/rbac.authorization.k8s.io/") =>
            {
                empty("Object")
            }
            _ => return None,
        })
    });
    let snap = meshconf::kube::snapshot::take(&client, "cluster1")
        .await
        .expect("snapshot");
    assert!(
        snap.objects.contains("IPAddressPool/metallb-system/default-pool"),
        "{:?}",
        snap.objects
    );
}
