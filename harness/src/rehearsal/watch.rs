//! A stand-in proxy's standing ADS subscription, held as Envoy holds one: its view follows istiod's pushes (no
//! request waits for istiod), survives istiod going away (Envoy keeps its configuration), and subscribes again to
//! whichever istiod serves the proxy when the stream ends (a replaced istiod, a revision's).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::xds::{self, ProxyIdentity, Pushed, SeenEndpoint};

/// How long a subscription waits before it asks for its istiod again after its stream ended or failed.
const RETRY: Duration = Duration::from_millis(500);
/// How often `first_view` looks whether the first configuration arrived.
const POLL: Duration = Duration::from_millis(50);

/// What the proxy holds: the last endpoints and SNI names istiod pushed (`None`: none yet), and why its last
/// subscription ended, if it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The subscribed Envoy cluster's endpoints.
    pub endpoints: Option<Vec<SeenEndpoint>>,
    /// The SNI names of the listeners on the subscribed port (gateways only).
    pub server_names: Option<Vec<String>>,
    /// Why the last subscription ended or could not start.
    pub last_error: Option<String>,
}

/// One standing subscription; dropping it ends it.
#[derive(Debug)]
pub struct Watch {
    view: Arc<Mutex<View>>,
    lds: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Subscribes as `proxy` to `cluster_name`'s endpoints (and with `lds_port` to the SNI names on that port) at
    /// the istiod `resolve` names, now and after every end of the stream.
    pub fn start<R, F>(resolve: R, proxy: ProxyIdentity, cluster_name: String, lds_port: Option<u32>) -> Self
    where
        R: Fn() -> F + Send + 'static,
        F: Future<Output = Result<String, String>> + Send,
    {
        let view = Arc::new(Mutex::new(View::default()));
        let shared = Arc::clone(&view);
        let task = tokio::spawn(async move {
            loop {
                let ended = match resolve().await {
                    Ok(addr) => {
                        let on = |p: Pushed| {
                            if let Ok(mut v) = shared.lock() {
                                match p {
                                    Pushed::Endpoints(e) => v.endpoints = Some(e),
                                    Pushed::ServerNames(n) => v.server_names = Some(n),
                                }
                            }
                        };
                        match xds::subscribe(&addr, &proxy, &cluster_name, lds_port, on).await {
                            Ok(()) => format!("istiod at {addr} closed the ADS stream"),
                            Err(e) => e,
                        }
                    }
                    Err(e) => e,
                };
                if let Ok(mut v) = shared.lock() {
                    v.last_error = Some(ended);
                }
                tokio::time::sleep(RETRY).await;
            }
        });
        Watch {
            view,
            lds: lds_port.is_some(),
            task,
        }
    }

    /// What the proxy holds now.
    pub fn view(&self) -> View {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Whether istiod has sent everything the proxy subscribed to at least once (Envoy is ready only then).
    pub fn warmed(&self) -> bool {
        let v = self.view();
        v.endpoints.is_some() && (!self.lds || v.server_names.is_some())
    }

    /// The view once warmed, waiting at most `wait` for the first configuration (never again after it): without
    /// one the proxy has nothing to route by, and the error says what istiod did.
    pub async fn first_view(&self, wait: Duration) -> Result<View, String> {
        let until = Instant::now() + wait;
        loop {
            if self.warmed() {
                return Ok(self.view());
            }
            if Instant::now() >= until {
                let why = self
                    .view()
                    .last_error
                    .unwrap_or_else(|| "istiod sent nothing yet".into());
                return Err(format!(
                    "the proxy had no configuration from istiod within {wait:?}: {why}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds::fake::sidecar as proxy;

    /// With no istiod to reach, the proxy never warms and says why, instead of answering from an empty view.
    #[tokio::test]
    async fn no_istiod_means_no_view_and_the_reason() {
        let w = Watch::start(
            || async { Err::<String, _>("istiod-1-31-dev in cluster1 is gone (revision removed)".into()) },
            proxy(),
            "outbound|5000||helloworld.sample.svc.cluster.local".into(),
            None,
        );
        let e = w
            .first_view(Duration::from_millis(300))
            .await
            .expect_err("no view");
        assert!(e.contains("revision removed"), "{e}");
        assert!(!w.warmed());
    }

    /// A refused connection is a reason too, and the subscription keeps trying (its task lives until dropped).
    #[tokio::test]
    async fn a_refused_connection_is_reported_and_retried() {
        let w = Watch::start(
            || async { Ok::<_, String>("127.0.0.1:1".to_string()) },
            proxy(),
            "outbound|5000||helloworld.sample.svc.cluster.local".into(),
            Some(15443),
        );
        let e = w
            .first_view(Duration::from_millis(800))
            .await
            .expect_err("nothing listens on port 1");
        assert!(e.contains("127.0.0.1:1"), "{e}");
        assert!(!w.task.is_finished());
    }

    /// istiod's pushes make the view; when istiod goes (its stream ends and it cannot be found again) the view
    /// stays what it last pushed, as Envoy keeps its configuration, and says why nothing newer comes.
    #[tokio::test]
    async fn the_view_follows_pushes_and_outlives_istiod() {
        let name = "outbound|5000||helloworld.sample.svc.cluster.local";
        let (addr, _) = xds::fake::serve(vec![
            xds::fake::cla(name, &["10.10.1.7"]),
            xds::fake::cla(name, &["10.10.1.9"]),
        ])
        .await;
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let w = Watch::start(
            move || {
                let first = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                let addr = addr.clone();
                async move {
                    if first {
                        Ok(addr)
                    } else {
                        Err("istiod-1-31-dev is gone".to_string())
                    }
                }
            },
            proxy(),
            name.into(),
            None,
        );
        w.first_view(Duration::from_secs(5)).await.expect("first push");
        let until = Instant::now() + Duration::from_secs(5);
        while w.view().last_error.as_deref() != Some("istiod-1-31-dev is gone") {
            assert!(Instant::now() < until, "istiod never went: {:?}", w.view());
            tokio::time::sleep(POLL).await;
        }
        let kept: Vec<String> = w
            .view()
            .endpoints
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.address)
            .collect();
        assert_eq!(kept, ["10.10.1.9"]);
        assert!(w.warmed());
    }
}
