//! Trials that need a setup of their own: a user's own Docker engine, clusters the run did not create, and this
//! suite itself run as a user would, interrupted.

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
                fleet: None,
            },
        );
        let result = async {
            // The rehearsal provider's own create actions, as a run performs them.
            let profile = host.profile(&s);
            let mut made = std::collections::BTreeMap::new();
            let mut clusters = Vec::new();
            for a in s
                .clusters
                .iter()
                .flat_map(|c| profile.create.get(&c.name).into_iter().flatten())
            {
                if let meshconf::plan::Action::Provider(p) = a {
                    let done = host
                        .perform(p, &made)
                        .await
                        .map_err(|e| format!("rehearsal clusters: {e}"))?;
                    if let Some(c) = done.created {
                        made.insert(c.name.clone(), c.clone());
                        clusters.push(c);
                    }
                }
            }
            for c in &clusters {
                let ns: Api<Namespace> = Api::all(c.client.clone());
                let mut n = Namespace::default();
                n.metadata.name = Some("user-owned".into());
                ns.create(&PostParams::default(), &n)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let contexts: std::collections::BTreeMap<_, _> = clusters
                .iter()
                .map(|c| (c.name.clone(), c.context.clone()))
                .collect();
            let kubeconfig = clusters[0].kubeconfig.clone();
            let istioctl = Istioctl {
                bin: tools.path("istioctl"),
                source: IstioctlSource::RehearsalTools,
            };
            let existing = |dir| {
                Arc::new(ExistingProvider::new(
                    kubeconfig.clone(),
                    contexts.clone(),
                    dir,
                    Some(istioctl.clone()),
                ))
            };
            let mut cfg = SessionConfig::new(ProviderKind::Existing, report_dir(), "existing_provider");
            cfg.console = true;
            let collector = Collector::default();
            let events = collector.events.clone();
            let status = session::run_with(&cfg, &s, existing(session::fresh_run_dir(&s)), vec![Box::new(collector)]).await;
            if status != ExitStatus::Passed {
                return Err(format!("run on existing clusters ended {status:?}"));
            }
            let events = events.lock().map(|e| e.clone()).unwrap_or_default();
            for c in &clusters {
                let id = format!("reset/{}", c.name);
                let reset = events.iter().find_map(|e| match e {
                    Event::StepFinished { id: i, outcome, .. } if i.0 == id => Some(outcome.clone()),
                    _ => None,
                });
                if reset != Some(Outcome::Passed) {
                    return Err(format!("{id}: {reset:?} (the clean-state check must pass)"));
                }
                let ns: Api<Namespace> = Api::all(c.client.clone());
                let user = ns
                    .get_opt("user-owned")
                    .await
                    .map_err(|e| format!("{}: cluster gone? {e}", c.name))?;
                if user.is_none_or(|n| n.metadata.deletion_timestamp.is_some()) {
                    return Err(format!("{}: the user's namespace was deleted", c.name));
                }
                let ours = ns.get_opt("istio-system").await.map_err(|e| e.to_string())?;
                if ours.is_some() {
                    return Err(format!("{}: istio-system, created by the run, is still there", c.name));
                }
                let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
                    Api::all(c.client.clone());
                let istio: Vec<String> = crds
                    .list(&Default::default())
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .into_iter()
                    .filter_map(|d| d.metadata.name)
                    .filter(|n| n.ends_with(".istio.io"))
                    .collect();
                if !istio.is_empty() {
                    return Err(format!("{}: Istio CRDs left after the reset: {istio:?}", c.name));
                }
            }
            // A step that leaves something behind: the run's reset must find it, name it and fail the run (exit 3).
            let planted = "left-behind-by-a-step";
            let target = clusters[0].client.clone();
            let plant = move || {
                let api: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(target.clone());
                let mut role = k8s_openapi::api::rbac::v1::ClusterRole::default();
                role.metadata.name = Some(planted.into());
                let _ = block_on(api.create(&PostParams::default(), &role));
            };
            let mut cfg = SessionConfig::new(ProviderKind::Existing, report_dir(), "existing_provider.left-behind");
            cfg.console = true;
            let collector = Collector::default();
            let events = collector.events.clone();
            let trigger = OnTrigger {
                step: "install-istio/cluster1".into(),
                on_retry: false,
                action: Some(plant),
            };
            let status = session::run_with(
                &cfg,
                &s,
                existing(session::fresh_run_dir(&s)),
                vec![Box::new(trigger), Box::new(collector)],
            )
            .await;
            let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(clusters[0].client.clone());
            let _ = roles.delete(planted, &Default::default()).await;
            if status != ExitStatus::Infrastructure {
                return Err(format!("a run that left a ClusterRole behind ended {status:?}, not Infrastructure"));
            }
            let events = events.lock().map(|e| e.clone()).unwrap_or_default();
            let named = events.iter().any(|e| {
                matches!(e, Event::StepFinished { id, outcome: Outcome::Failed { message, .. }, .. }
                    if id.0 == "reset/cluster1" && message.contains(&format!("ClusterRole/{planted}")))
            });
            if !named {
                return Err("reset/cluster1 did not name the ClusterRole the step left behind".into());
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

/// Issue: Ctrl-C did not stop a suite; each signal ended only the trial in flight and the next one started. Runs
/// this suite binary as a child (two trials selected), sends it SIGINT once its first run has created its
/// clusters, and requires exit 130 after that run cleaned up, with the second trial never started.
pub fn sigint_stops_the_suite_after_the_trial_in_flight() -> Result<(), Failed> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let reports = std::env::temp_dir().join(format!("meshconf-sigint-{}", std::process::id()));
    // `multi_primary::` selects the conformance trial and the fault trials after it, not this one.
    let mut child = Command::new(&exe)
        .args(["multi_primary::", "--test-threads", "1"])
        .env("MESHCONF_SUITE_REPORTS", &reports)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let mut seen = Vec::new();
    let started = Instant::now();
    let wait_for = |seen: &mut Vec<String>, needle: &str, deadline: Duration| -> bool {
        while started.elapsed() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        false
    };
    let result = (|| -> Result<(), Failed> {
        if !wait_for(&mut seen, "PASS  create-cluster/", Duration::from_secs(300)) {
            return Err(format!("the child run never created its clusters:\n{}", seen.join("\n")).into());
        }
        // The child is this test's own process (spawned above): signalling it is safe.
        let sent = Command::new("timeout")
            .args(["5s", "kill", "-INT", &child.id().to_string()])
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if !sent.success() {
            return Err("could not send SIGINT to the child suite".into());
        }
        // Read the rest of its output: it ends when the child exits (or at the deadline).
        while started.elapsed() < Duration::from_secs(420) {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => seen.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(())
    })();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if started.elapsed() < Duration::from_secs(480) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            _ => {
                let _ = child.kill();
                break child.wait().ok();
            }
        }
    };
    let _ = std::fs::remove_dir_all(&reports);
    result?;
    let text = seen.join("\n");
    if status.and_then(|s| s.code()) != Some(session::INTERRUPTED_EXIT) {
        return Err(format!("the suite ended {status:?}, not with exit 130:\n{text}").into());
    }
    if !text.contains("cleanup complete") || !text.contains("stopping the suite") {
        return Err(
            format!("the interrupted trial did not clean up before the suite stopped:\n{text}").into(),
        );
    }
    if text.contains("test multi_primary::fails_without_remote_secret_into_cluster1") {
        return Err(format!("a second trial started after the interrupt:\n{text}").into());
    }
    Ok(())
}

/// Issue 14 on the rehearsal: two runs of multi-primary with `--reuse` on one port base. The first creates the
/// fleet's control planes (its plan runs `kwokctl … create cluster`), the second connects to them (its plan says
/// they were kept, and creates nothing); both pass, both resets prove the clusters hold only what they held before,
/// and the fleet records two runs. `meshconf fleet down`'s removal follows whatever happened, and afterwards no API
/// server of the fleet listens.
pub fn rehearsal_fleet_is_reused_and_left_clean() -> Result<(), Failed> {
    let s = scenario("multi-primary.yaml", |t| t)?;
    let name = "multi_primary.kwok-fleet";
    let base = port(name);
    let reuse = |cfg: &mut SessionConfig| cfg.reuse = true;
    let runs = (|| {
        let first = run_with(name, &s, base, None, &reuse)?;
        let second = run_with("multi_primary.kwok-fleet-reused", &s, base, None, &reuse)?;
        Ok::<_, Failed>((first, second))
    })();
    // Whatever happened: the fleet goes, as `meshconf fleet down` removes it.
    let mut cfg = SessionConfig::new(ProviderKind::Kwok, report_dir(), name.to_string());
    cfg.port_base = base;
    let down = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(async {
            let survey = meshconf::lease::survey(&session::fleet_base(&cfg)?, &s)
                .await
                .map_err(|e| e.to_string())?;
            meshconf::lease::take_down(&survey.dir)
                .await
                .map_err(|e| e.to_string())
        });
    let (first, second) = runs?;
    let down = down.map_err(|e| format!("taking the fleet down: {e}"))?;
    for r in [&first, &second] {
        if r.status != ExitStatus::Passed {
            return Err(format!("{}: {:?}: {}", r.name, r.status, r.failures()).into());
        }
        for c in ["cluster1", "cluster2"] {
            match r.outcome(&format!("reset/{c}")) {
                Some((Outcome::Passed, _)) => {}
                other => return Err(format!("{}: reset/{c} {other:?}", r.name).into()),
            }
        }
    }
    let plan = |r: &RunResult| r.plan.clone().map_err(|e| format!("{}: plan: {e}", r.name));
    let (p1, p2) = (plan(&first)?, plan(&second)?);
    if !p1.contains("create cluster --runtime binary") || p1.contains("kept from an earlier run") {
        return Err(format!("the first run did not create the fleet:\n{p1}").into());
    }
    if p2.contains("create cluster") || !p2.contains("kept from an earlier run (--reuse)") {
        return Err(format!("the second run did not reuse the fleet:\n{p2}").into());
    }
    match &second.fleet {
        Some(f) if f.runs == 2 && f.dirty.is_none() && f.provider == "kwok" => {}
        other => return Err(format!("fleet record after two runs: {other:?}").into()),
    }
    if down.len() != 2 {
        return Err(format!("fleet down removed {down:?}, not both clusters").into());
    }
    let apiserver = base;
    if meshconf::rehearsal::procs::port_listening(apiserver) {
        return Err(
            format!("after fleet down, 127.0.0.1:{apiserver} (cluster1's API server) still listens").into(),
        );
    }
    Ok(())
}
