//! istioctl: found on PATH, taken from the rehearsal tools, or downloaded for a requested version and checked
//! against its published sha256.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::process::{Cmd, ToolError, which};
use crate::mesh::IstioVersion;

/// Where the istioctl binary came from (reported).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IstioctlSource {
    /// Found on PATH.
    Path,
    /// Built by tools/build.sh for the rehearsal.
    RehearsalTools,
    /// Downloaded and verified.
    Downloaded,
    /// Given explicitly.
    Explicit,
}

/// An istioctl binary with its version.
#[derive(Debug, Clone)]
pub struct Istioctl {
    /// The binary.
    pub bin: PathBuf,
    /// How it was found.
    pub source: IstioctlSource,
}

impl Istioctl {
    /// istioctl from PATH.
    pub fn from_path() -> Result<Self, ToolError> {
        which("istioctl")
            .map(|bin| Self {
                bin,
                source: IstioctlSource::Path,
            })
            .ok_or_else(|| ToolError::NotFound {
                program: "istioctl".into(),
                hint: "install istioctl, or pass --istio-version X.Y.Z to download it".into(),
            })
    }

    /// `istioctl version --remote=false`.
    pub fn version_cmd(&self) -> Cmd {
        Cmd::new(&self.bin)
            .args(["version", "--remote=false"])
            .timeout(Duration::from_secs(30))
    }

    /// Runs `version` and parses it.
    pub async fn version(&self) -> Result<IstioVersion, ToolError> {
        let out = self.version_cmd().run().await?;
        IstioVersion::parse(&out.stdout).map_err(|e| ToolError::Failed {
            command: self.version_cmd().display(),
            code: 0,
            tail: e.to_string(),
        })
    }

    /// `istioctl install --kubeconfig K --context C -f FILE -y [extra]`.
    pub fn install(&self, kubeconfig: &Path, context: &str, file: &Path, extra: &[String]) -> Cmd {
        Cmd::new(&self.bin)
            .arg("install")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--context={context}"))
            .arg("-f")
            .arg(file.display().to_string())
            .arg("-y")
            .args(extra.iter().cloned())
            .timeout(Duration::from_secs(600))
    }

    /// `istioctl uninstall --purge -y` (everything, a reset), or `--revision R -y` (one control-plane
    /// revision, an upgrade's old one).
    pub fn uninstall(&self, kubeconfig: &Path, context: &str, revision: Option<&str>) -> Cmd {
        let cmd = Cmd::new(&self.bin)
            .arg("uninstall")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--context={context}"));
        match revision {
            Some(r) => cmd.args(["--revision", r, "-y"]),
            None => cmd.args(["--purge", "-y"]),
        }
        .timeout(Duration::from_secs(300))
    }

    /// `istioctl proxy-config endpoints POD.NS --cluster ENVOY_CLUSTER -o json`: the endpoints that proxy holds.
    pub fn proxy_config_endpoints(
        &self,
        kubeconfig: &Path,
        context: &str,
        pod_ns: &str,
        envoy_cluster: &str,
    ) -> Cmd {
        Cmd::new(&self.bin)
            .args(["proxy-config", "endpoints", pod_ns])
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--context={context}"))
            .arg(format!("--cluster={envoy_cluster}"))
            .args(["-o", "json"])
            .timeout(Duration::from_secs(30))
    }

    /// `istioctl [x] create-remote-secret --kubeconfig K --context C --name N [extra]`. Its stdout is a Secret
    /// with a bearer token: never log it.
    pub fn create_remote_secret(
        &self,
        words: &[&str],
        kubeconfig: &Path,
        context: &str,
        name: &str,
        extra: &[String],
    ) -> Cmd {
        Cmd::new(&self.bin)
            .args(words.iter().copied())
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--context={context}"))
            .arg(format!("--name={name}"))
            .args(extra.iter().cloned())
            .timeout(Duration::from_secs(120))
    }
}

/// The release tarball URL and its `.sha256` for a version on linux/amd64 (or arm64).
pub fn release_urls(version: &str, arch: &str) -> (String, String) {
    let base = format!(
        "https://github.com/istio/istio/releases/download/{version}/istioctl-{version}-linux-{arch}.tar.gz"
    );
    let sum = format!("{base}.sha256");
    (base, sum)
}

/// Downloads istioctl `version` into `dest_dir`, verifies the sha256 the release publishes, and unpacks it.
pub async fn download_istioctl(version: &str, dest_dir: &Path) -> Result<Istioctl, ToolError> {
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let (url, sum_url) = release_urls(version, arch);
    let io = |command: &str, e: String| ToolError::Io {
        command: command.to_string(),
        source: std::io::Error::other(e),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .connect_timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| io("http client", e.to_string()))?;
    let sum_text = client
        .get(&sum_url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| io(&sum_url, e.to_string()))?
        .text()
        .await
        .map_err(|e| io(&sum_url, e.to_string()))?;
    let want = sum_text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let resp = client
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| io(&url, e.to_string()))?;
    let mut hasher = Sha256::new();
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| io(&url, e.to_string()))?;
        hasher.update(&chunk);
        body.extend_from_slice(&chunk);
    }
    let got = base16ct::lower::encode_string(&hasher.finalize());
    verify_sha256(&want, &got).map_err(|m| io(&url, m))?;
    std::fs::create_dir_all(dest_dir).map_err(|e| io("mkdir", e.to_string()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(body.as_slice()));
    archive
        .unpack(dest_dir)
        .map_err(|e| io("unpack istioctl", e.to_string()))?;
    let bin = dest_dir.join("istioctl");
    if !bin.is_file() {
        return Err(io(&url, "the archive has no istioctl binary".into()));
    }
    Ok(Istioctl {
        bin,
        source: IstioctlSource::Downloaded,
    })
}

/// Compares a published checksum with the computed one.
pub fn verify_sha256(published: &str, computed: &str) -> Result<(), String> {
    if published.len() != 64 || !published.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("published checksum is not a sha256: {published:?}"));
    }
    if !published.eq_ignore_ascii_case(computed) {
        return Err(format!(
            "sha256 mismatch: published {published}, downloaded {computed}; refusing to use it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_release_layout() {
        let (u, s) = release_urls("1.30.3", "amd64");
        assert_eq!(
            u,
            "https://github.com/istio/istio/releases/download/1.30.3/istioctl-1.30.3-linux-amd64.tar.gz"
        );
        assert!(s.ends_with(".tar.gz.sha256"));
    }

    #[test]
    fn checksum_mismatch_is_refused() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        assert!(verify_sha256(&a, &a).is_ok());
        assert!(verify_sha256(&a, &b).unwrap_err().contains("mismatch"));
        assert!(verify_sha256("<html>", &a).unwrap_err().contains("not a sha256"));
    }

    #[test]
    fn install_and_secret_commands_snapshot() {
        let i = Istioctl {
            bin: "istioctl".into(),
            source: IstioctlSource::Path,
        };
        let k = Path::new("/run/kubeconfig");
        let lines = [
            i.install(k, "kind-meshconf-cluster1", Path::new("/run/cluster1.yaml"), &[])
                .display(),
            i.create_remote_secret(
                &["create-remote-secret"],
                k,
                "kind-meshconf-cluster2",
                "cluster2",
                &["--server=https://172.18.0.3:6443".to_string()],
            )
            .display(),
        ];
        insta::assert_snapshot!(lines.join("\n"));
    }
}
