//! The rehearsal's stand-in for meshconf's traffic generator (`tools/images/loadgen`): kwok runs no container, so
//! `loadgen phase|stop|report`, exec'd in the generator's pod, reaches this instead. The first `phase` starts a
//! daemon that sends the generator's requests at its pod's `-rate`, each answered as the curl stand-in answers
//! (the endpoints the real istiod serves the generator pod's sidecar, the serving pod found through the real API),
//! and counts them per phase in the generator's own report format. Its proxies' views come from standing ADS
//! subscriptions ([`super::watch`]), so no request waits for istiod and the last view outlives it as Envoy's
//! configuration does, and a pod asked to stop answers for its `preStop`
//! sleep ([`super::departures`]). Long-lived connections are not modelled: every request is a new connection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::departures::Departures;
use super::shim::{Sidecar, Watches, answer, client_from, state_and_client};
use super::state::RehearsalState;
use crate::apps::{LOADGEN, ServiceTarget};
use crate::verify::{KindCounts, LoadReport, PhaseCounts};

/// How long `stop` waits for the daemon's last report.
const STOP_WAIT: Duration = Duration::from_secs(20);
/// One request's deadline (the generator's own client timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A daemon nobody stops ends by itself after this long (a run's cleanup normally stops it first).
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// The files of one cluster's generator: `phase` (the current phase, written by `phase`), `stop` (written by
/// `stop`), `report.json` (written by the daemon), `done` (the daemon's last report is written).
fn dir_of(state: &RehearsalState, cluster: &str) -> PathBuf {
    state.rr_dir.join(format!("{LOADGEN}-{cluster}"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

fn env_state() -> Result<(String, PathBuf), String> {
    match (std::env::var("RH_CLUSTER"), std::env::var("RH_STATE")) {
        (Ok(c), Ok(s)) => Ok((c, PathBuf::from(s))),
        _ => Err("RH_CLUSTER and RH_STATE must be set by the kwok exec rule".into()),
    }
}

/// `loadgen phase NAME | stop | report` in the generator's pod.
pub async fn ctl(args: Vec<String>) -> i32 {
    match ctl_inner(&args).await {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("meshconf rehearsal loadgen: {e}");
            1
        }
    }
}

async fn ctl_inner(args: &[String]) -> Result<String, String> {
    let (cluster, state_path) = env_state()?;
    let state = RehearsalState::read(&state_path)?;
    let dir = dir_of(&state, &cluster);
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["phase", name] => {
            write_atomic(&dir.join("phase"), name).map_err(|e| e.to_string())?;
            if !daemon_alive(&dir) {
                start_daemon(&dir, &cluster, &state_path)?;
            }
            Ok(format!("phase {name}\n"))
        }
        ["stop"] => {
            std::fs::write(dir.join("stop"), "").map_err(|e| e.to_string())?;
            let until = Instant::now() + STOP_WAIT;
            while !dir.join("done").exists() {
                if Instant::now() >= until {
                    return Err(format!(
                        "the generator stand-in did not write its last report within {}s ({})",
                        STOP_WAIT.as_secs(),
                        dir.display()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok("stopped\n".into())
        }
        ["report"] => std::fs::read_to_string(dir.join("report.json"))
            .map_err(|e| format!("no report yet in {}: {e}", dir.display())),
        other => Err(format!(
            "usage: loadgen phase NAME | stop | report (got {other:?})"
        )),
    }
}

/// Whether the daemon recorded in `dir` still runs (same start time and program as recorded).
fn daemon_alive(dir: &Path) -> bool {
    super::pidfile::read(&dir.join("daemon.pid")).is_ok_and(|r| super::pidfile::still_ours(&r).is_ok())
}

/// Starts the daemon in its own process group, recorded in `dir/daemon.pid` and in the run's `pids/` (the kwok
/// provider's cleanup stops what is recorded there).
fn start_daemon(dir: &Path, cluster: &str, state_path: &Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let log = std::fs::File::create(dir.join("daemon.log")).map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(dir.join("stop"));
    let _ = std::fs::remove_file(dir.join("done"));
    let child = std::process::Command::new(&exe)
        .env(super::shim::SHIM_ENV, "loadgen-daemon")
        .env("RH_CLUSTER", cluster)
        .env("RH_STATE", state_path)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start the generator stand-in: {e}"))?;
    super::pidfile::record(&dir.join("daemon.pid"), child.id(), &exe).map_err(|e| e.to_string())?;
    if let Some(run) = state_path.parent() {
        let pids = run.join("pids");
        let _ = std::fs::create_dir_all(&pids);
        super::pidfile::record(&pids.join(format!("{LOADGEN}-{cluster}")), child.id(), &exe)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The value after `flag` in the generator container's args.
fn arg_of(p: &Pod, flag: &str) -> Option<String> {
    let c = p.spec.as_ref()?.containers.iter().find(|c| c.name == LOADGEN)?;
    let args = c.args.as_ref()?;
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).cloned()
}

/// The counts of every phase so far, in the order they began.
#[derive(Debug, Default)]
struct Recorder {
    phases: Vec<PhaseCounts>,
    latencies: BTreeMap<String, Vec<f64>>,
}

impl Recorder {
    fn phase(&mut self, name: &str, at_ms: i64) -> &mut PhaseCounts {
        if self.phases.last().is_none_or(|p| p.name != name) {
            if let Some(last) = self.phases.last_mut() {
                last.ended_ms = at_ms;
            }
            self.phases.push(PhaseCounts {
                name: name.to_string(),
                started_ms: at_ms,
                ended_ms: 0,
                sent: 0,
                failed: 0,
                first_error: None,
                errors: BTreeMap::new(),
                answers: BTreeMap::new(),
                new_connections: KindCounts::default(),
                keep_alive: KindCounts::default(),
                p50_ms: 0.0,
                p99_ms: 0.0,
            });
        }
        let last = self.phases.len() - 1;
        &mut self.phases[last]
    }

    /// Counts one request that started in `phase` at `at_ms`: an answer (HelloWorld's body) or a failure.
    fn record(&mut self, phase: &str, at_ms: i64, outcome: Result<String, String>, ms: f64) {
        let p = self.phase(phase, at_ms);
        p.sent += 1;
        p.new_connections.sent += 1;
        match outcome {
            Ok(body) if body.starts_with("Hello version:") => {
                *p.answers.entry(body).or_default() += 1;
                let name = p.name.clone();
                self.latencies.entry(name).or_default().push(ms);
            }
            Ok(body) | Err(body) => {
                p.failed += 1;
                p.new_connections.failed += 1;
                let msg: String = body.chars().take(200).collect();
                if p.first_error.is_none() {
                    p.first_error = Some(format!("{} {msg}", rfc3339(at_ms)));
                }
                *p.errors.entry(msg).or_default() += 1;
            }
        }
    }

    fn report(&mut self) -> String {
        for p in &mut self.phases {
            if let Some(l) = self.latencies.get_mut(&p.name) {
                l.sort_by(f64::total_cmp);
                p.p50_ms = percentile(l, 0.5);
                p.p99_ms = percentile(l, 0.99);
            }
        }
        serde_json::to_string(&LoadReport {
            phases: self.phases.clone(),
        })
        .unwrap_or_default()
    }
}

/// The generator's own percentile: the nearest rank in a sorted list.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = (q * (sorted.len() - 1) as f64 + 0.5) as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `ms` (Unix milliseconds) as the generator writes times: RFC 3339, UTC.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The daemon: requests at the generator pod's rate until `stop`, each counted in the phase it started in.
pub async fn daemon() -> i32 {
    match daemon_inner().await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("meshconf rehearsal loadgen daemon: {e}");
            1
        }
    }
}

async fn daemon_inner() -> Result<(), String> {
    let (cluster, state_path) = env_state()?;
    let (mut state, client) = state_and_client(&state_path, &cluster).await?;
    let dir = dir_of(&state, &cluster);
    let pods: Api<Pod> = Api::all(client.clone());
    let source = pods
        .list(&ListParams::default().labels(&format!("app={LOADGEN}")))
        .await
        .map_err(|e| format!("list the generator pod in {cluster}: {e}"))?
        .items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .ok_or_else(|| format!("no generator pod in {cluster}"))?;
    let url = arg_of(&source, "-url").ok_or("the generator pod has no -url argument")?;
    let rate: f64 = arg_of(&source, "-rate")
        .and_then(|r| r.parse().ok())
        .filter(|r: &f64| *r > 0.0)
        .ok_or("the generator pod has no positive -rate argument")?;
    let target =
        ServiceTarget::parse(&url).ok_or_else(|| format!("cannot parse the generator's URL {url}"))?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut sidecar = Sidecar {
        watches: Some(Watches::new(&state_path)),
        departures: Some(Departures::default()),
        ..Default::default()
    };
    // Every cluster's pods, listed at most every 250 ms, tell which pods are leaving (kwok removes them at once).
    let mut clients = Vec::new();
    for (name, c) in &state.clusters {
        clients.push((name.clone(), client_from(&c.kubeconfig).await?));
    }
    let mut listed_at: Option<Instant> = None;
    let mut rec = Recorder::default();
    let born = Instant::now();
    let mut written = Instant::now();
    loop {
        let tick = Instant::now();
        if dir.join("stop").exists() || born.elapsed() > MAX_LIFETIME {
            break;
        }
        if listed_at.is_none_or(|t| t.elapsed() >= Duration::from_millis(250)) {
            // The control planes change under the generator (a canary revision starts, the old one goes): read
            // which istiod serves which revision as often as the pods. A failed read keeps the last state.
            if let Ok(s) = RehearsalState::read(&state_path) {
                state = s;
            }
            if let Some(d) = sidecar.departures.as_mut() {
                for (name, c) in &clients {
                    let api: Api<Pod> = Api::all(c.clone());
                    // A listing that fails keeps what was seen (the next one catches up).
                    if let Ok(l) = api.list(&ListParams::default()).await {
                        d.observe(name, &l.items, Instant::now());
                    }
                }
            }
            listed_at = Some(Instant::now());
        }
        let phase = std::fs::read_to_string(dir.join("phase")).unwrap_or_else(|_| "start".into());
        let at = now_ms();
        let started = Instant::now();
        let outcome = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            answer(&state, &cluster, &client, &source, &target, &mut sidecar),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())),
        };
        rec.record(
            phase.trim(),
            at,
            outcome,
            started.elapsed().as_secs_f64() * 1000.0,
        );
        if written.elapsed() >= Duration::from_secs(1) {
            write_atomic(&dir.join("report.json"), &rec.report()).map_err(|e| e.to_string())?;
            written = Instant::now();
        }
        if let Some(rest) = interval.checked_sub(tick.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    if let Some(last) = rec.phases.last_mut() {
        last.ended_ms = now_ms();
    }
    write_atomic(&dir.join("report.json"), &rec.report()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("done"), "").map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_in_the_phase_they_started_in_and_failures_name_the_first() {
        let mut r = Recorder::default();
        r.record(
            "baseline",
            1_000,
            Ok("Hello version: v1, instance: a".into()),
            3.0,
        );
        r.record(
            "baseline",
            1_100,
            Ok("Hello version: v2, instance: b".into()),
            5.0,
        );
        r.record("upgrade-istio", 2_000, Ok("no healthy upstream".into()), 1.0);
        r.record("upgrade-istio", 2_100, Err("no answer within 5s".into()), 1.0);
        let report = LoadReport::parse(&r.report()).expect("the generator's format");
        assert_eq!(report.phases.len(), 2);
        let (b, u) = (&report.phases[0], &report.phases[1]);
        assert_eq!((b.sent, b.failed, b.ended_ms), (2, 0, 2_000));
        assert_eq!(b.answers.len(), 2);
        assert_eq!((u.sent, u.failed), (2, 2));
        assert_eq!(
            u.first_error.as_deref(),
            Some("1970-01-01T00:00:02.000Z no healthy upstream")
        );
        assert_eq!(u.new_connections.failed, 2);
        assert_eq!(b.p99_ms, 5.0);
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_453_089_675), "2026-12-05T06:44:49.675Z");
    }
}
