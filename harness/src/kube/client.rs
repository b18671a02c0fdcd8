//! One kube client per cluster, always from the run's kubeconfig file and an explicit context: the user's
//! `~/.kube/config` and current context are never read or changed.

use std::path::Path;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::KubeError;

/// A client for `context` in `kubeconfig`, with connect and read timeouts.
pub async fn client_for(kubeconfig: &Path, context: &str) -> Result<Client, KubeError> {
    let err = |message: String| KubeError::Kubeconfig {
        path: kubeconfig.display().to_string(),
        message,
    };
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| err(format!("cannot read: {e}")))?;
    if !kc.contexts.iter().any(|c| c.name == context) {
        let known: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
        return Err(err(format!(
            "no context '{context}' (it has: {})",
            known.join(", ")
        )));
    }
    let opts = KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let mut cfg = Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| err(format!("context '{context}': {e}")))?;
    cfg.connect_timeout = Some(Duration::from_secs(10));
    cfg.read_timeout = Some(Duration::from_secs(60));
    Client::try_from(cfg).map_err(|e| err(format!("cannot build a client for '{context}': {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_context_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("kubeconfig");
        std::fs::write(&p, "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster: {server: https://127.0.0.1:1}\n\
            contexts:\n- name: ctx-a\n  context: {cluster: a, user: u}\nusers:\n- name: u\n  user: {token: t}\n")
            .expect("write");
        let Err(e) = client_for(&p, "ctx-b").await else {
            panic!("no such context must fail")
        };
        assert!(
            e.to_string().contains("no context 'ctx-b' (it has: ctx-a)"),
            "{e}"
        );
        assert!(client_for(&p, "ctx-a").await.is_ok());
        let Err(e) = client_for(&dir.path().join("missing"), "x").await else {
            panic!("missing file must fail")
        };
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
