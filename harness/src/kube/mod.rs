//! Kubernetes access through kube-rs: one client per cluster from the run's own kubeconfig, server-side apply of
//! multi-document manifests via discovery, watch-based waits with deadlines, exec, and secrets.

mod apply;
mod client;
mod exec;
pub mod snapshot;
mod wait;

pub use apply::{Applier, parse_documents};
pub use client::client_for;
pub use exec::{ExecOutput, exec};
pub use wait::{
    PodsReady, delete_istio_crds, delete_webhook_configuration, istiod_down, persistent_create_failure,
    proxy_image, rollout_complete, wait_for, wait_lb_address, wait_pods_ready, wait_rollout,
    wait_webhook_ca_bundle,
};

use std::time::Duration;

/// Errors from the Kubernetes layer. Each names the object or the wait.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig could not be read or has no such context.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// The call, e.g. `apply Deployment sample/helloworld-v1`.
        what: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// A manifest could not be parsed or resolved.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A wait ran out of time.
    #[error("timed out after {after:?} waiting for {what}{}", last.as_ref().map(|l| format!(" (last seen: {l})")).unwrap_or_default())]
    Timeout {
        /// What was waited for.
        what: String,
        /// The deadline.
        after: Duration,
        /// The last state observed.
        last: Option<String>,
    },
    /// A controller keeps failing (e.g. pods cannot be created: the injection webhook does not answer). An
    /// infrastructure error, reported with the controller's own message.
    #[error("{0}")]
    Stuck(String),
    /// The connection to the API failed in the middle of an operation: a watch failed or ended, an exec stream
    /// broke or never opened, the object waited on was deleted under the wait. Infrastructure, never the mesh's
    /// doing: a transport hiccup during a traffic check must not read as a conformance failure.
    #[error("{0}")]
    Transport(String),
    /// A wait saw a state that can never become the wanted one because of what the mesh did (a pod Ready
    /// without its sidecar): the only conformance failure of this layer.
    #[error("{0}")]
    Unmet(String),
}

impl KubeError {
    /// Whether this error says something about the mesh (a conformance failure) rather than the infrastructure.
    pub fn is_conformance(&self) -> bool {
        matches!(self, KubeError::Unmet(_))
    }
}
