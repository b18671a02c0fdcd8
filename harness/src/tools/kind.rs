//! kind and docker command construction (the kind provider runs these; tests snapshot them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::Cmd;

/// The kind CLI.
#[derive(Debug, Clone)]
pub struct Kind {
    /// Path or name of the binary.
    pub bin: PathBuf,
    /// Node image (`--image`), when pinned.
    pub node_image: Option<String>,
}

impl Kind {
    /// `kind create cluster` writing only to the run's kubeconfig (never `~/.kube/config`).
    pub fn create(&self, name: &str, config: &Path, kubeconfig: &Path) -> Cmd {
        let mut c = Cmd::new(&self.bin)
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

    /// `kind delete cluster`.
    pub fn delete(&self, name: &str, kubeconfig: &Path) -> Cmd {
        Cmd::new(&self.bin)
            .args(["delete", "cluster", "--name", name, "--kubeconfig"])
            .arg(kubeconfig.display().to_string())
            .timeout(Duration::from_secs(180))
    }

    /// `kind get kubeconfig --internal`: the in-mesh view (server `https://<name>-control-plane:6443`).
    pub fn internal_kubeconfig(&self, name: &str) -> Cmd {
        Cmd::new(&self.bin)
            .args(["get", "kubeconfig", "--internal", "--name", name])
            .timeout(Duration::from_secs(30))
    }

    /// `kind version`.
    pub fn version(&self) -> Cmd {
        Cmd::new(&self.bin)
            .arg("version")
            .timeout(Duration::from_secs(15))
    }
}

/// The docker CLI (a kind cluster's nodes are containers on the `kind` network).
#[derive(Debug, Clone)]
pub struct Docker {
    /// Path or name of the binary.
    pub bin: PathBuf,
}

impl Docker {
    /// `docker network inspect kind`.
    pub fn inspect_kind_network(&self) -> Cmd {
        Cmd::new(&self.bin)
            .args(["network", "inspect", "kind"])
            .timeout(Duration::from_secs(30))
    }

    /// The node container's address on the `kind` network.
    pub fn node_ip(&self, node: &str) -> Cmd {
        Cmd::new(&self.bin)
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
        Cmd::new(&self.bin)
            .args(["exec", node, "ip", "route", "replace", destination, "via", via])
            .timeout(Duration::from_secs(30))
    }

    /// `docker info`: fails fast when no engine is reachable.
    pub fn info(&self) -> Cmd {
        Cmd::new(&self.bin)
            .args(["info", "--format", "{{.ServerVersion}}"])
            .timeout(Duration::from_secs(15))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_commands_snapshot() {
        let k = Kind {
            bin: "kind".into(),
            node_image: Some("kindest/node:v1.36.1".into()),
        };
        let d = Docker { bin: "docker".into() };
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
        ];
        insta::assert_snapshot!(lines.join("\n"));
    }

    #[test]
    fn create_never_targets_the_users_kubeconfig() {
        let k = Kind {
            bin: "kind".into(),
            node_image: None,
        };
        let c = k.create("n", Path::new("c.yaml"), Path::new("/run/kubeconfig"));
        let argv = c.argv();
        let i = argv
            .iter()
            .position(|a| a == "--kubeconfig")
            .expect("--kubeconfig");
        assert_eq!(argv[i + 1], "/run/kubeconfig");
    }
}
