//! Trials that need a setup of their own: a user's own Docker engine, and clusters the run did not create.

#[allow(unused_imports)]
use super::*;

/// Issue: a user's own Docker engine is used as it is and no second engine starts. The engine this suite runs
/// on plays the user's: `DOCKER_HOST` points at it while meshconf's engine directory is an empty one, so
/// `tools/engine.sh up` could only start a new engine there: it must use the user's and start none.
pub fn users_engine_is_used_as_is() -> Result<(), Failed> {
    let bin = meshconf::tools::which("docker").ok_or("the docker CLI is not on PATH")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let host = match rt.block_on(meshconf::tools::find_engine(&bin))? {
        Some(ours) => ours,
        None => std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
    };
    let dockerds = || -> Result<usize, Failed> {
        let out = std::process::Command::new("timeout")
            .args(["10s", "pgrep", "-x", "dockerd"])
            .output()
            .map_err(|e| format!("pgrep: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().count())
    };
    let before = dockerds()?;
    let empty = tempfile_dir()?;
    let out = std::process::Command::new("timeout")
        .args(["--kill-after=10", "300s", "bash"])
        .arg(root().join("tools/engine.sh"))
        .arg("up")
        .env("DOCKER_HOST", &host)
        .env("MESHCONF_ENGINE_DIR", &empty)
        .output()
        .map_err(|e| format!("tools/engine.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stdout.lines().last() != Some(host.as_str()) {
        return Err(
            format!("engine.sh up with DOCKER_HOST={host} printed {stdout:?}, said {stderr:?}").into(),
        );
    }
    if !stderr.contains("meshconf starts none") {
        return Err(format!("engine.sh did not say it uses the user's engine: {stderr:?}").into());
    }
    let after = dockerds()?;
    let _ = std::fs::remove_dir_all(&empty);
    if after != before || std::path::Path::new(&empty).join("docker.sock").exists() {
        return Err(format!("a second engine started: {before} dockerd before, {after} after").into());
    }
    Ok(())
}

pub(crate) fn tempfile_dir() -> Result<PathBuf, Failed> {
    let d = std::env::temp_dir().join(format!("meshconf-engine-probe-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

/// Issue: the `existing` provider must never delete what it did not create. Starts two rehearsal clusters,
/// plants a namespace the "user" owns, runs a scenario against their contexts with `--provider existing`, then
/// checks the user's namespace and both clusters are still there while the run's own namespace is gone.
pub fn existing_provider_leaves_what_it_did_not_create() -> Result<(), Failed> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PostParams};
    use meshconf::provider::ExistingProvider;
    use meshconf::tools::{Istioctl, IstioctlSource};

    ensure_tools()?;
    let text = "name: existing-check\nguide: \"Install Multi-Primary (install steps)\"\nmesh: {id: mesh1}\ntrust: shared-root\nclusters:\n  - {name: cluster1, role: primary, network: network1, kind-config: ../kind-configs/cluster1.yaml}\n  - {name: cluster2, role: primary, network: network1, kind-config: ../kind-configs/cluster2.yaml}\nsteps:\n  - install-istio: {cluster: cluster1}\n  - install-istio: {cluster: cluster2}\n";
    let s =
        scenario::load_str(&root().join("scenarios/existing-check.yaml"), text).map_err(|e| e.to_string())?;
    let tools = ToolsBin::locate().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let host = KwokProvider::new(
            tools.clone(),
            KwokOptions {
                port_base: EXISTING_PORT_BASE,
                run_dir: session::fresh_run_dir(&s),
                shim_exe: std::env::current_exe().map_err(|e| e.to_string())?,
                keep: false,
            },
        );
        let result = async {
            let clusters = host
                .create(&s)
                .await
                .map_err(|e| format!("rehearsal clusters: {e}"))?;
            for c in &clusters {
                let ns: Api<Namespace> = Api::all(c.client.clone());
                let mut n = Namespace::default();
                n.metadata.name = Some("user-owned".into());
                ns.create(&PostParams::default(), &n)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let contexts = clusters
                .iter()
                .map(|c| (c.name.clone(), c.context.clone()))
                .collect();
            let kubeconfig = clusters[0].kubeconfig.clone();
            let istioctl = Istioctl {
                bin: tools.path("istioctl"),
                source: IstioctlSource::RehearsalTools,
            };
            let existing = Arc::new(ExistingProvider::new(
                kubeconfig,
                contexts,
                session::fresh_run_dir(&s),
                Some(istioctl),
            ));
            let mut cfg = SessionConfig::new(ProviderKind::Existing, report_dir(), "existing_provider");
            cfg.console = true;
            let status = session::run_with(&cfg, &s, existing, Vec::new()).await;
            if status != ExitStatus::Passed {
                return Err(format!("run on existing clusters ended {status:?}"));
            }
            for c in &clusters {
                let ns: Api<Namespace> = Api::all(c.client.clone());
                let user = ns
                    .get_opt("user-owned")
                    .await
                    .map_err(|e| format!("{}: cluster gone? {e}", c.name))?;
                if user.is_none_or(|n| n.metadata.deletion_timestamp.is_some()) {
                    return Err(format!("{}: the user's namespace was deleted", c.name));
                }
                let ours = ns.get_opt("istio-system").await.map_err(|e| e.to_string())?;
                if ours.is_some_and(|n| n.metadata.deletion_timestamp.is_none()) {
                    return Err(format!(
                        "{}: istio-system, created by the run, was left in place",
                        c.name
                    ));
                }
            }
            Ok(())
        }
        .await;
        let cleanup = host.cleanup().await;
        result.and_then(|_| {
            if cleanup.complete {
                Ok(())
            } else {
                Err(format!("rehearsal cleanup: {}", cleanup.message))
            }
        })
    })
    .map_err(Failed::from)
}
