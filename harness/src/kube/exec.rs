//! Exec into a container with stdout and stderr both drained (kube's 1 KiB pipes deadlock otherwise), the
//! status taken before join, and a timeout.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, AttachParams};
use tokio::io::AsyncReadExt;

use super::KubeError;

/// What an exec returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
    /// Exit code (0 on success; from the NonZeroExitCode cause otherwise).
    pub exit_code: i32,
}

/// Runs `argv` in `container` of `ns/pod`.
pub async fn exec(
    client: &Client,
    ns: &str,
    pod: &str,
    container: &str,
    argv: &[String],
    timeout: Duration,
) -> Result<ExecOutput, KubeError> {
    let what = format!("exec in {ns}/{pod} -c {container}: {}", argv.join(" "));
    let fut = async {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let params = AttachParams::default()
            .container(container)
            .stdin(false)
            .stdout(true)
            .stderr(true);
        let mut proc = api
            .exec(pod, argv.iter().map(String::as_str), &params)
            .await
            .map_err(|source| KubeError::Api {
                what: what.clone(),
                source,
            })?;
        let status = proc.take_status();
        let mut out = proc
            .stdout()
            .ok_or_else(|| KubeError::Transport(format!("{what}: no stdout stream")))?;
        let mut err = proc
            .stderr()
            .ok_or_else(|| KubeError::Transport(format!("{what}: no stderr stream")))?;
        let mut o = Vec::new();
        let mut e = Vec::new();
        let (r1, r2) = tokio::join!(out.read_to_end(&mut o), err.read_to_end(&mut e));
        r1.and(r2)
            .map_err(|io| KubeError::Transport(format!("{what}: reading output: {io}")))?;
        let st = match status {
            Some(s) => s.await,
            None => None,
        };
        proc.join()
            .await
            .map_err(|e| KubeError::Transport(format!("{what}: {e}")))?;
        let exit_code = match st {
            Some(s) if s.status.as_deref() == Some("Failure") => s
                .details
                .and_then(|d| d.causes)
                .and_then(|cs| cs.into_iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
                .and_then(|c| c.message)
                .and_then(|m| m.parse().ok())
                .unwrap_or(1),
            _ => 0,
        };
        Ok(ExecOutput {
            stdout: String::from_utf8_lossy(&o).into_owned(),
            stderr: String::from_utf8_lossy(&e).into_owned(),
            exit_code,
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| KubeError::Timeout {
            what: what.clone(),
            after: timeout,
            last: None,
        })?
}
