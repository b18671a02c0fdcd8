//! kind and docker command construction (the kind provider runs these; tests snapshot them), and finding the
//! Docker engine to talk to.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::Cmd;

/// `DOCKER_HOST` for a child process, when not the caller's own.
fn with_host(c: Cmd, host: &Option<String>) -> Cmd {
    match host {
        Some(h) => c.env("DOCKER_HOST", h.as_str()),
        None => c,
    }
}

/// The kind CLI.
#[derive(Debug, Clone)]
pub struct Kind {
    /// Path or name of the binary.
    pub bin: PathBuf,
    /// Node image (`--image`), when pinned.
    pub node_image: Option<String>,
    /// The engine to use when it is not the caller's `DOCKER_HOST` (meshconf's own engine).
    pub docker_host: Option<String>,
}

impl Kind {
    fn cmd(&self) -> Cmd {
        with_host(Cmd::new(&self.bin), &self.docker_host)
    }

    /// `kind create cluster` writing only to the run's kubeconfig (never `~/.kube/config`).
    pub fn create(&self, name: &str, config: &Path, kubeconfig: &Path) -> Cmd {
        let mut c = self
            .cmd()
            .args(["create", "cluster", "--name", name, "--config"])
            .arg(config.display().to_string())
            .arg("--kubeconfig")
            .arg(kubeconfig.display().to_string())
            .args(["--wait", "180s", "--retain"]);
        if let Some(img) = &self.node_image {
            c = c.args(["--image", img]);
        }
        c.timeout(Duration::from_secs(600))
    }

    /// `kind load docker-image` of several images into every node of a cluster, in one call.
    pub fn load_images(&self, name: &str, images: &[&str]) -> Cmd {
        self.cmd()
            .args(["load", "docker-image", "--name", name])
            .args(images.iter().copied())
            .timeout(Duration::from_secs(600))
    }

    /// `kind delete cluster`.
    pub fn delete(&self, name: &str, kubeconfig: &Path) -> Cmd {
        self.cmd()
            .args(["delete", "cluster", "--name", name, "--kubeconfig"])
            .arg(kubeconfig.display().to_string())
            .timeout(Duration::from_secs(180))
    }

    /// `kind get kubeconfig --internal`: the in-mesh view (server `https://<name>-control-plane:6443`).
    pub fn internal_kubeconfig(&self, name: &str) -> Cmd {
        self.cmd()
            .args(["get", "kubeconfig", "--internal", "--name", name])
            .timeout(Duration::from_secs(30))
    }

    /// `kind version`.
    pub fn version(&self) -> Cmd {
        self.cmd().arg("version").timeout(Duration::from_secs(15))
    }
}

/// The docker CLI (a kind cluster's nodes are containers on the `kind` network).
#[derive(Debug, Clone)]
pub struct Docker {
    /// Path or name of the binary.
    pub bin: PathBuf,
    /// The engine to use when it is not the caller's `DOCKER_HOST` (meshconf's own engine).
    pub docker_host: Option<String>,
}

impl Docker {
    fn cmd(&self) -> Cmd {
        with_host(Cmd::new(&self.bin), &self.docker_host)
    }

    /// `docker network inspect kind`.
    pub fn inspect_kind_network(&self) -> Cmd {
        self.cmd()
            .args(["network", "inspect", "kind"])
            .timeout(Duration::from_secs(30))
    }

    /// The node container's address on the `kind` network.
    pub fn node_ip(&self, node: &str) -> Cmd {
        self.cmd()
            .args([
                "inspect",
                "-f",
                "{{.NetworkSettings.Networks.kind.IPAddress}}",
                node,
            ])
            .timeout(Duration::from_secs(30))
    }

    /// `docker exec <node> ip route add <dest> via <gw>` (idempotent with `replace`).
    pub fn add_route(&self, node: &str, destination: &str, via: &str) -> Cmd {
        self.cmd()
            .args(["exec", node, "ip", "route", "replace", destination, "via", via])
            .timeout(Duration::from_secs(30))
    }

    /// Keeps pod traffic to a peer cluster's subnet un-masqueraded on `node` (the node CNI masquerades everything
    /// outside its own pod subnet): `iptables -t nat -I POSTROUTING 1 -s <own pods> -d <peer> -j RETURN`.
    pub fn keep_source(&self, node: &str, own_pods: &str, destination: &str) -> Cmd {
        self.cmd()
            .args([
                "exec",
                node,
                "iptables",
                "-t",
                "nat",
                "-I",
                "POSTROUTING",
                "1",
                "-s",
                own_pods,
            ])
            .args(["-d", destination, "-j", "RETURN"])
            .timeout(Duration::from_secs(30))
    }

    /// `docker network create kind` with a subnet meshconf chose (IPv4 only, masquerading as kind's own).
    pub fn create_kind_network(&self, subnet: &str) -> Cmd {
        self.cmd()
            .args(["network", "create", "--driver", "bridge", "--subnet", subnet])
            .args(["-o", "com.docker.network.bridge.enable_ip_masquerade=true"])
            .args(["-o", "com.docker.network.driver.mtu=1500"])
            .args(["-o", &format!("com.docker.network.bridge.name={KIND_BRIDGE}")])
            .args(["--label", "io.meshconf.created=true", "kind"])
            .timeout(Duration::from_secs(60))
    }

    /// `docker image inspect IMAGE` (fails when the engine lacks it).
    pub fn image_inspect(&self, image: &str) -> Cmd {
        self.cmd()
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .timeout(Duration::from_secs(20))
    }

    /// `docker network rm kind`.
    pub fn remove_kind_network(&self) -> Cmd {
        self.cmd()
            .args(["network", "rm", "kind"])
            .timeout(Duration::from_secs(60))
    }

    /// `docker network inspect -f FORMAT NETWORK`.
    pub fn inspect_format_network(&self, network: &str, format: &str) -> Cmd {
        self.cmd()
            .args(["network", "inspect", "-f", format, network])
            .timeout(Duration::from_secs(20))
    }

    /// `docker inspect -f FORMAT CONTAINER`.
    pub fn inspect_format(&self, container: &str, format: &str) -> Cmd {
        self.cmd()
            .args(["inspect", "-f", format, container])
            .timeout(Duration::from_secs(20))
    }

    /// The last lines of a node's journal (containerd and kubelet), for errors.
    pub fn journal_tail(&self, node: &str) -> Cmd {
        self.cmd()
            .args([
                "exec",
                node,
                "journalctl",
                "--no-pager",
                "-n",
                "40",
                "-u",
                "kubelet",
                "-u",
                "containerd",
            ])
            .timeout(Duration::from_secs(30))
    }

    /// `docker info`: fails fast when no engine is reachable.
    pub fn info(&self) -> Cmd {
        self.cmd()
            .args(["info", "--format", "{{.ServerVersion}}"])
            .timeout(Duration::from_secs(15))
    }
}

/// The Linux bridge of a `kind` network meshconf creates (the egress rule names it).
pub const KIND_BRIDGE: &str = "meshconf-kind";

/// Where meshconf's own engine listens (tools/engine.sh starts it there).
pub fn meshconf_engine_host() -> String {
    format!(
        "unix://{}",
        super::cache_dir().join("engine").join("docker.sock").display()
    )
}

/// The address of the caller's engine, recorded so that a later `meshconf down` from another shell reaches the
/// same engine: `DOCKER_HOST` when set, else the endpoint of the docker CLI's current context, else the default
/// socket.
pub async fn users_engine_host(docker_bin: &Path) -> String {
    if let Ok(h) = std::env::var("DOCKER_HOST")
        && !h.is_empty()
    {
        return h;
    }
    let context = Cmd::new(docker_bin)
        .args(["context", "inspect", "--format", "{{.Endpoints.docker.Host}}"])
        .timeout(Duration::from_secs(10))
        .run()
        .await;
    match context {
        Ok(o) if o.stdout.trim().contains("://") => o.stdout.trim().to_string(),
        _ => "unix:///var/run/docker.sock".to_string(),
    }
}

/// The engine to talk to: the caller's (`DOCKER_HOST` or the default socket) when it answers, used as it is
/// (`Ok(None)`); else meshconf's own when it answers (`Ok(Some(host))`); else what is missing.
pub async fn find_engine(docker_bin: &Path) -> Result<Option<String>, String> {
    let users = Docker {
        bin: docker_bin.to_path_buf(),
        docker_host: None,
    };
    let first = match users.info().run().await {
        Ok(_) => return Ok(None),
        Err(e) => e.to_string(),
    };
    let ours = meshconf_engine_host();
    let own = Docker {
        bin: docker_bin.to_path_buf(),
        docker_host: Some(ours.clone()),
    };
    if own.info().run().await.is_ok() {
        return Ok(Some(ours));
    }
    Err(format!(
        "no Docker engine answers (`docker info`: {first}); start meshconf's with `make engine` \
         (tools/engine.sh up), or point DOCKER_HOST at yours"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_commands_snapshot() {
        let k = Kind {
            bin: "kind".into(),
            node_image: Some("kindest/node:v1.36.1".into()),
            docker_host: None,
        };
        let d = Docker {
            bin: "docker".into(),
            docker_host: None,
        };
        let run = Path::new("/run/x");
        let lines = [
            k.create(
                "meshconf-cluster1",
                Path::new("kind-configs/cluster1.yaml"),
                &run.join("kubeconfig"),
            )
            .display(),
            k.delete("meshconf-cluster1", &run.join("kubeconfig")).display(),
            k.internal_kubeconfig("meshconf-cluster1").display(),
            d.inspect_kind_network().display(),
            d.node_ip("meshconf-cluster2-control-plane").display(),
            d.add_route("meshconf-cluster1-control-plane", "10.20.0.0/16", "172.18.0.3")
                .display(),
            d.keep_source("meshconf-cluster1-control-plane", "10.10.0.0/16", "10.20.0.0/16")
                .display(),
            d.create_kind_network("172.30.0.0/16").display(),
            k.load_images("meshconf-cluster1", &["a:1", "b:2"]).display(),
        ];
        insta::assert_snapshot!(lines.join("\n"));
    }

    #[test]
    fn create_never_targets_the_users_kubeconfig() {
        let k = Kind {
            bin: "kind".into(),
            node_image: None,
            docker_host: Some("unix:///c/engine/docker.sock".into()),
        };
        let c = k.create("n", Path::new("c.yaml"), Path::new("/run/kubeconfig"));
        let argv = c.argv();
        let i = argv
            .iter()
            .position(|a| a == "--kubeconfig")
            .expect("--kubeconfig");
        assert_eq!(argv[i + 1], "/run/kubeconfig");
        assert!(
            c.envs()
                .iter()
                .any(|(k, v)| k == "DOCKER_HOST" && v == "unix:///c/engine/docker.sock"),
            "meshconf's engine is passed to kind"
        );
    }
}
