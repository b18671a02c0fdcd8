//! What a trial asserts about a run: conformance, a located failure, a diagnosis, a clean machine afterwards.

#[allow(unused_imports)]
use super::*;

/// Asserts a failed run kept diagnostics within the default 5 MB budget whose diagnosis contains `needle`, that
/// the JUnit links them and the HTML report shows the diagnosis, and that no secret reached any report file.
pub fn assert_diagnosis(r: &RunResult, needle: &str) -> Result<(), Failed> {
    let (link, bytes, diagnosis) = r
        .events
        .iter()
        .find_map(|e| match e {
            Event::Diagnostics {
                link,
                bytes,
                diagnosis,
                ..
            } => Some((link.clone(), *bytes, diagnosis.clone())),
            _ => None,
        })
        .ok_or("the failed run collected no diagnostics")?;
    match &diagnosis {
        Some(d) if d.contains(needle) => {}
        other => return Err(format!("diagnosis should contain {needle:?}, got {other:?}").into()),
    }
    let dir = report_dir().join(&link);
    let on_disk: u64 = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    if on_disk != bytes || on_disk > meshconf::diagnose::DEFAULT_BUDGET {
        return Err(format!(
            "{} holds {on_disk} bytes; the record says {bytes}; budget 5 MB",
            dir.display()
        )
        .into());
    }
    let junit = report_dir().join(format!("{}.junit.xml", r.name));
    let xml = std::fs::read_to_string(&junit).map_err(|e| format!("{}: {e}", junit.display()))?;
    if !xml.contains(&format!("diagnostics: {link}/")) {
        return Err(format!("{} does not link {link}/ from the failing case", junit.display()).into());
    }
    let html_path = report_dir().join(format!("{}.html", r.name));
    let html = std::fs::read_to_string(&html_path).map_err(|e| format!("{}: {e}", html_path.display()))?;
    if !html.contains("id=\"diagnosis\"") || !html.contains(&needle.replace('&', "&amp;")) {
        return Err(format!("{} does not show the diagnosis", html_path.display()).into());
    }
    assert_no_secrets_in_reports(r)
}

/// Asserts cleanup removed everything the run created (for the rehearsal: no process left, no port listening)
/// and, on kind, that no packet left the machine (`egress-packets` is 0, measured).
pub fn assert_clean(r: &RunResult) -> Result<(), Failed> {
    let (complete, message, properties) = r
        .events
        .iter()
        .find_map(|e| match e {
            Event::CleanupFinished {
                complete,
                message,
                properties,
            } => Some((*complete, message.clone(), properties.clone())),
            _ => None,
        })
        .ok_or("no cleanup event")?;
    if !complete {
        return Err(format!("cleanup incomplete: {message}").into());
    }
    if provider()? == ProviderKind::Kind {
        match properties.get("egress-packets").map(String::as_str) {
            Some("0") => {}
            other => return Err(format!("egress-packets must be 0, got {other:?}").into()),
        }
    }
    Ok(())
}

/// Asserts the happy path: status Passed and, from every source, both versions answered by the right cluster;
/// no secret value the run created in its reports.
pub fn assert_conformance(r: &RunResult, sources: &[&str]) -> Result<(), Failed> {
    assert_conformance_of(r, sources, &[("v1", "cluster1"), ("v2", "cluster2")])
}

/// [`assert_conformance`] where every source must see each `(version, cluster)` of `answering` answer.
pub fn assert_conformance_of(
    r: &RunResult,
    sources: &[&str],
    answering: &[(&str, &str)],
) -> Result<(), Failed> {
    if r.status != ExitStatus::Passed {
        return Err(format!("run ended {:?}:\n{}", r.status, r.failures()).into());
    }
    assert_transcript_is_the_plan(r)?;
    for s in sources {
        let id = format!("check-traffic/from-{s}");
        let (outcome, _) = r.outcome(&id).ok_or_else(|| format!("no result for {id}"))?;
        if outcome != Outcome::Passed {
            return Err(format!("{id}: {outcome:?}").into());
        }
        // The typed record of the check's last attempt: every version answered from the cluster that runs it.
        let record = r
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::CheckFinished { id: i, record } if i.0 == id => Some(record),
                _ => None,
            })
            .ok_or_else(|| format!("{id}: no check record"))?;
        for (version, cluster) in answering.iter().copied() {
            let at = meshconf::verify::At::new(version, Some(&meshconf::scenario::ClusterName::new(cluster)));
            if record.verdict.counts.get(&at).copied().unwrap_or(0) == 0 {
                return Err(format!("{id}: no answers for {at}; counts {:?}", record.verdict.counts).into());
            }
        }
    }
    if provider()? == ProviderKind::Kind {
        // Every sidecar accepted every config istiod sent (the upstream Envoy lacks Istio's own filters).
        let acks = r.events.iter().find_map(|e| match e {
            Event::CleanupFinished { properties, .. } => properties.get("istiod-ack-errors").cloned(),
            _ => None,
        });
        if acks.as_deref() != Some("0") {
            return Err(format!("istiod logged rejected configs (ACK ERROR): {acks:?}").into());
        }
    }
    assert_clean(r)?;
    assert_no_secrets_in_reports(r)
}

/// Asserts a run failed with `status` and that step `id` failed with a message containing `needle`.
pub fn assert_failed(r: &RunResult, status: ExitStatus, id: &str, needle: &str) -> Result<(), Failed> {
    assert_clean(r)?;
    if r.status != status {
        return Err(format!("expected {status:?}, run ended {:?}:\n{}", r.status, r.failures()).into());
    }
    match r.outcome(id) {
        Some((Outcome::Failed { message, .. }, _)) if message.contains(needle) => Ok(()),
        other => Err(format!(
            "step {id}: expected a failure containing {needle:?}, got {other:?}\nall failures:\n{}",
            r.failures()
        )
        .into()),
    }
}

/// The run's `<name>.sh` holds exactly the commands of `meshconf plan` for the same settings, step by step, with
/// the placeholders filled by the values the run bound.
pub fn assert_transcript_is_the_plan(r: &RunResult) -> Result<(), Failed> {
    let plan = r
        .plan
        .clone()
        .map_err(|e| format!("no plan to compare the transcript with: {e}"))?;
    let path = report_dir().join(format!("{}.sh", r.name));
    let transcript = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    meshconf::plan::compare_transcript(&plan, &transcript).map_err(|e| {
        format!(
            "{} is not the plan with its placeholders filled:\n{e}",
            path.display()
        )
        .into()
    })
}

/// A different-networks run's proof that its cross-network answers came through the gateways: each source's
/// isolation probe found no route to the other network's pods, and its proxy held the other network's gateway,
/// never its pods (the `isolation/…` and `gateway-path/…` properties the steps recorded).
pub fn assert_gateway_path(r: &RunResult, sources: &[&str]) -> Result<(), Failed> {
    for s in sources {
        let id = format!("check-traffic/from-{s}");
        let (_, props) = r.outcome(&id).ok_or_else(|| format!("no result for {id}"))?;
        let path = props
            .get(&format!("gateway-path/{s}"))
            .ok_or_else(|| format!("{id} recorded no gateway-path/{s}: {props:?}"))?;
        if !path.contains("'s gateway ") || !path.contains(":15443") {
            return Err(format!("{id}: the gateway path names no gateway on 15443: {path}").into());
        }
        let probe = format!("isolation/from-{s}");
        let (_, iso) = r
            .outcome(&probe)
            .ok_or_else(|| format!("no result for {probe}"))?;
        if !iso
            .iter()
            .any(|(k, v)| k.starts_with("isolation/") && !v.starts_with("answered"))
        {
            return Err(format!("{probe} recorded no refused direct request: {iso:?}").into());
        }
    }
    Ok(())
}

/// A one-way break: the run failed with a conformance failure whose check from `failing` names `needle`, while the
/// check from `passing` passed (the failure is precise), and the diagnosis names `diagnosis`.
pub fn assert_one_way(
    r: &RunResult,
    failing: &str,
    needle: &str,
    passing: &str,
    diagnosis: &str,
) -> Result<(), Failed> {
    assert_failed(
        r,
        ExitStatus::ConformanceFailure,
        &format!("check-traffic/from-{failing}"),
        needle,
    )?;
    match r.outcome(&format!("check-traffic/from-{passing}")) {
        Some((Outcome::Passed, _)) => {}
        other => return Err(format!("from-{passing} should pass, got {other:?}").into()),
    }
    assert_diagnosis(r, diagnosis)
}
