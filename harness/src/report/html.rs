//! HTML report: one self-contained file beside the JUnit (`<name>.html`, no network fetches) that a person opens
//! first when a nightly run fails: what ran where, a timeline per cluster, the answers per source cluster as a
//! chart with the p-value and convergence time, and each failure with its diagnosis and evidence links.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Serialize;

use super::events::{Event, FailureKind, Outcome};
use super::{ReportError, Reporter};

/// Records events with their time since the run started; writes `<name>.html` on `finish`.
pub struct HtmlReporter {
    path: PathBuf,
    started: Option<Instant>,
    events: Vec<(Duration, Event)>,
}

impl HtmlReporter {
    /// A reporter writing to `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            started: None,
            events: Vec::new(),
        }
    }
}

impl Reporter for HtmlReporter {
    fn on_event(&mut self, event: &Event) {
        let t0 = *self.started.get_or_insert_with(Instant::now);
        self.events.push((t0.elapsed(), event.clone()));
    }

    fn finish(&mut self) -> Result<(), ReportError> {
        let text = render_html(&self.events);
        super::write_file(&self.path, text)
    }
}

/// One step on the timeline.
#[derive(Debug, Clone, Serialize)]
struct TimelineStep {
    id: String,
    title: String,
    lane: String,
    start: f64,
    end: f64,
    status: &'static str,
}

/// One traffic check's answers.
#[derive(Debug, Clone, Serialize)]
struct CheckData {
    id: String,
    source: String,
    status: &'static str,
    /// Failed attempts before the outcome (a pass with attempts is flaky).
    attempts: Vec<String>,
    requests: Option<u64>,
    p_value: Option<String>,
    convergence_seconds: Option<String>,
    /// `version@cluster` → answers (the chart's data).
    counts: BTreeMap<String, u64>,
    /// (version, cluster, answers), typed (the matrix).
    #[serde(skip)]
    cells: Vec<(String, String, u64)>,
}

#[derive(Debug, Clone, Serialize)]
struct ChartData {
    lanes: Vec<String>,
    steps: Vec<TimelineStep>,
    checks: Vec<CheckData>,
    total: f64,
}

struct Failure {
    id: String,
    kind: &'static str,
    message: String,
    command: Option<String>,
}

struct Evidence {
    link: String,
    diagnosis: Option<String>,
    findings: Vec<String>,
    files: Vec<(String, String, u64, u64)>,
    bytes: u64,
    budget: u64,
    unavailable: Vec<String>,
}

/// The cluster a step belongs on: `install-istio/cluster1` → cluster1, `check-traffic/from-cluster2` →
/// cluster2, `remote-secret/cluster1-into-cluster2` → cluster2; steps over every cluster → `all clusters`.
fn lane_of(id: &str) -> String {
    match id.split_once('/') {
        None => "all clusters".into(),
        Some((_, rest)) => {
            let rest = rest.strip_prefix("from-").unwrap_or(rest);
            match rest.split_once("-into-") {
                Some((_, into)) => into.to_string(),
                None => rest.to_string(),
            }
        }
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// Renders the page.
pub fn render_html(events: &[(Duration, Event)]) -> String {
    let mut header: Option<&Event> = None;
    let mut started: BTreeMap<String, Duration> = BTreeMap::new();
    let mut steps = Vec::new();
    let mut checks = Vec::new();
    let mut failures = Vec::new();
    let mut evidence: Option<Evidence> = None;
    let mut cleanup: Option<(bool, String, BTreeMap<String, String>)> = None;
    let mut finish: Option<(String, i32, Duration)> = None;
    let mut lanes: Vec<String> = vec!["all clusters".into()];
    let mut records: BTreeMap<String, &crate::verify::CheckRecord> = BTreeMap::new();
    for (at, e) in events {
        match e {
            Event::CheckFinished { id, record } => {
                records.insert(id.0.clone(), record);
            }
            Event::RunStarted { steps: planned, .. } => {
                header = Some(e);
                for (id, _) in planned {
                    let lane = lane_of(&id.0);
                    if !lanes.contains(&lane) {
                        lanes.push(lane);
                    }
                }
            }
            Event::StepStarted { id, .. } => {
                started.insert(id.0.clone(), *at);
            }
            Event::StepLog { .. } | Event::ActionFinished { .. } => {}
            Event::StepFinished {
                id,
                title,
                outcome,
                duration,
                attempts,
                ..
            } => {
                let start = started
                    .get(&id.0)
                    .copied()
                    .unwrap_or(at.saturating_sub(*duration));
                let status = match outcome {
                    Outcome::Passed => "passed",
                    Outcome::Skipped { .. } => "skipped",
                    Outcome::Failed {
                        kind: FailureKind::Conformance,
                        ..
                    } => "failed",
                    Outcome::Failed { .. } => "error",
                };
                if let Outcome::Failed {
                    kind,
                    message,
                    command,
                    ..
                } = outcome
                {
                    failures.push(Failure {
                        id: id.0.clone(),
                        kind: match kind {
                            FailureKind::Conformance => "conformance failure",
                            FailureKind::Infrastructure => "infrastructure error",
                        },
                        message: message.clone(),
                        command: command.clone(),
                    });
                }
                if !matches!(outcome, Outcome::Skipped { .. }) {
                    steps.push(TimelineStep {
                        id: id.0.clone(),
                        title: title.clone(),
                        lane: lane_of(&id.0),
                        start: secs(start),
                        end: secs(start + *duration),
                        status,
                    });
                }
                if let Some(r) = records.get(&id.0) {
                    checks.push(CheckData {
                        id: id.0.clone(),
                        source: r.verdict.from.to_string(),
                        status,
                        attempts: attempts.iter().map(|a| a.message.clone()).collect(),
                        requests: Some(u64::from(r.verdict.requests)),
                        p_value: r.verdict.p_value.map(|p| format!("{p:.4}")),
                        convergence_seconds: r
                            .convergence
                            .first_cross_cluster_seconds
                            .map(|s| format!("{s:.1}")),
                        counts: r
                            .verdict
                            .counts
                            .iter()
                            .map(|(k, n)| (k.to_string(), *n))
                            .collect(),
                        cells: r
                            .verdict
                            .counts
                            .iter()
                            .map(|(k, n)| (k.what.clone(), k.cluster_name().to_string(), *n))
                            .collect(),
                    });
                }
            }
            Event::Diagnostics {
                link,
                files,
                bytes,
                budget,
                diagnosis,
                findings,
                unavailable,
                ..
            } => {
                evidence = Some(Evidence {
                    link: link.clone(),
                    diagnosis: diagnosis.clone(),
                    findings: findings.clone(),
                    files: files
                        .iter()
                        .map(|f| (f.name.clone(), f.what.clone(), f.bytes, f.cut))
                        .collect(),
                    bytes: *bytes,
                    budget: *budget,
                    unavailable: unavailable.clone(),
                })
            }
            Event::CleanupFinished {
                complete,
                message,
                properties,
            } => cleanup = Some((*complete, message.clone(), properties.clone())),
            Event::RunFinished { status, duration } => {
                finish = Some((format!("{status:?}"), status.code(), *duration))
            }
        }
    }
    let total = finish
        .as_ref()
        .map(|f| secs(f.2))
        .or_else(|| events.last().map(|(t, _)| secs(*t)))
        .unwrap_or(0.0);
    let data = ChartData {
        lanes,
        steps,
        checks: checks.clone(),
        total,
    };
    // `</` cannot end the script element from inside a JSON string once escaped.
    let json = serde_json::to_string(&data)
        .unwrap_or_else(|_| "{}".into())
        .replace("</", "<\\/");
    page(
        header,
        &checks,
        &failures,
        evidence.as_ref(),
        cleanup.as_ref(),
        finish.as_ref(),
        &json,
    )
    .into_string()
}

fn page(
    header: Option<&Event>,
    checks: &[CheckData],
    failures: &[Failure],
    evidence: Option<&Evidence>,
    cleanup: Option<&(bool, String, BTreeMap<String, String>)>,
    finish: Option<&(String, i32, Duration)>,
    json: &str,
) -> Markup {
    let (scenario, provider, dataplane, variant, guide, notes, props) = match header {
        Some(Event::RunStarted {
            scenario,
            provider,
            dataplane,
            variant,
            guide,
            notes,
            properties,
            ..
        }) => (
            scenario.as_str(),
            provider.as_str(),
            dataplane.as_str(),
            variant.as_str(),
            guide.as_str(),
            notes.as_slice(),
            Some(properties),
        ),
        _ => ("(run did not start)", "?", "?", "?", "?", &[][..], None),
    };
    let (status, code) = finish.map_or(("Unfinished", -1), |f| (f.0.as_str(), f.1));
    let verdict_class = if code == 0 { "ok" } else { "bad" };
    // As the console and JUnit do: a rehearsal never passes for a conformance run.
    let kind_of_run = if dataplane == "computed" {
        "REHEARSAL"
    } else {
        "CONFORMANCE RUN"
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "meshconf " (kind_of_run) ": " (scenario) " on " (provider) " — " (status) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header id="summary" class=(verdict_class) {
                    h1 { span id="run-kind" { (kind_of_run) } ": " span id="scenario" { (scenario) } }
                    @if dataplane == "computed" {
                        p id="rehearsal" { "Rehearsal: real control planes, data plane computed from istiod's answers (no Envoy ran)." }
                    }
                    p id="verdict" { (status) " (exit " (code) ")" @if let Some(f) = finish { " in " (format!("{:.1}", f.2.as_secs_f64())) " s" } }
                    dl {
                        dt { "guide" } dd { (guide) }
                        dt { "provider" } dd id="provider" { (provider) }
                        dt { "data plane" } dd id="dataplane" { (dataplane) }
                        dt { "istioctl" } dd id="variant" { (variant) }
                        @if let Some(p) = props { @for (k, v) in p { @if k != "images" { dt { (k) } dd { (v) } } } }
                    }
                }
                @if !failures.is_empty() {
                    section id="failures" {
                        h2 { "Failures" }
                        @if let Some(ev) = evidence {
                            p id="diagnosis" class="diagnosis" {
                                @match &ev.diagnosis {
                                    Some(d) => { "Diagnosis: " (d) }
                                    None => { "No diagnosis: no rule matched the collected facts." }
                                }
                            }
                        }
                        @for f in failures {
                            div class="failure" data-step=(f.id) {
                                h3 { (f.id) " — " (f.kind) }
                                p class="message" { (f.message) }
                                @if let Some(c) = &f.command { pre { (c) } }
                            }
                        }
                        @if let Some(ev) = evidence {
                            div id="diagnostics" {
                                h3 { "Evidence (" (ev.bytes) " of " (ev.budget) " bytes)" }
                                @if ev.findings.len() > 1 {
                                    ul class="findings" { @for f in &ev.findings { li { (f) } } }
                                }
                                ul class="files" {
                                    @for (name, what, bytes, cut) in &ev.files {
                                        li {
                                            a class="diag-file" href=(format!("{}/{}", ev.link, name)) { (name) }
                                            " — " (what) " (" (bytes) " bytes"
                                            @if *cut > 0 { ", " (cut) " cut" }
                                            ")"
                                        }
                                    }
                                }
                                @if !ev.unavailable.is_empty() {
                                    p { "Not collected: " (ev.unavailable.join("; ")) }
                                }
                            }
                        }
                    }
                }
                section id="traffic" {
                    h2 { "Traffic per source cluster" }
                    @if checks.is_empty() { p { "No traffic check ran." } }
                    @for c in checks {
                        div class={ "check " (c.status) } data-source=(c.source) {
                            h3 { "From " (c.source) " — " (c.status) @if !c.attempts.is_empty() { " (flaky: " (c.attempts.len()) " failed attempt(s) first)" } }
                            @for (n, a) in c.attempts.iter().enumerate() { p class="attempt" { "attempt " (n + 1) " failed: " (a) } }
                            p class="stats" {
                                @if let Some(r) = c.requests { (r) " requests; " }
                                "p-value " span class="p-value" { (c.p_value.as_deref().unwrap_or("n/a")) }
                                @if let Some(s) = c.convergence_seconds.as_deref() {
                                    "; first cross-cluster answer "
                                    span class="convergence" { (s) " s" }
                                    " after the last remote secret"
                                } @else {
                                    "; no cross-cluster answer"
                                }
                            }
                            (matrix(c))
                            div class="chart" {}
                        }
                    }
                }
                section id="timeline-section" {
                    h2 { "Timeline" }
                    div id="timeline" {}
                }
                section id="overlays" {
                    h2 { "What differs from the guide" }
                    ul { @for n in notes { li { (n) } } }
                    @if let Some(img) = props.and_then(|p| p.get("images")) {
                        details { summary { "Image sources" } ul { @for i in img.split("; ") { li { (i) } } } }
                    }
                }
                @if let Some((complete, message, props)) = cleanup {
                    section id="cleanup" {
                        h2 { "Cleanup " @if *complete { "complete" } @else { "INCOMPLETE" } }
                        p { (message) }
                        @if !props.is_empty() {
                            dl { @for (k, v) in props { dt { (k) } dd data-property=(k) { (v) } } }
                        }
                    }
                }
                script type="application/json" id="run-data" { (PreEscaped(json)) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// Versions × clusters of one check's answers.
fn matrix(c: &CheckData) -> Markup {
    let mut versions: Vec<&str> = Vec::new();
    let mut clusters: Vec<&str> = Vec::new();
    for (v, cl, _) in &c.cells {
        let (v, cl) = (v.as_str(), cl.as_str());
        if !versions.contains(&v) {
            versions.push(v);
        }
        if !clusters.contains(&cl) {
            clusters.push(cl);
        }
    }
    html! {
        table class="matrix" {
            tr { th { "version \\ cluster" } @for cl in &clusters { th { (cl) } } }
            @for v in &versions {
                tr {
                    th { (v) }
                    @for cl in &clusters {
                        td { (c.cells.iter().find(|(cv, cc, _)| cv == v && cc == cl).map(|x| x.2).unwrap_or(0)) }
                    }
                }
            }
        }
    }
}

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1rem;color:#222}
header{border-left:8px solid #999;padding:.2rem 1rem;margin-bottom:1rem}
header.ok{border-color:#2a7}header.bad{border-color:#c33}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem}dt{font-weight:600}dd{margin:0}
.diagnosis{font-size:1.2rem;background:#fff3cd;padding:.5rem;border:1px solid #e0c060}
.failure h3{color:#c33}pre{background:#f4f4f4;padding:.4rem;overflow-x:auto}
table.matrix{border-collapse:collapse}table.matrix td,table.matrix th{border:1px solid #ccc;padding:.2rem .6rem;text-align:right}
.check{border:1px solid #ddd;padding:.5rem 1rem;margin:.5rem 0}.check.failed,.check.error{border-color:#c33}
svg text{font-size:11px;font-family:system-ui,sans-serif}
rect.passed{fill:#2a7}rect.failed{fill:#c33}rect.error{fill:#e80}rect.bar{fill:#47a}
"#;

/// Draws the timeline and one bar chart per check from the embedded data (inline, no fetches).
const SCRIPT: &str = r#"
(function(){
var d=JSON.parse(document.getElementById('run-data').textContent);var NS='http://www.w3.org/2000/svg';
function el(n,a,p){var e=document.createElementNS(NS,n);for(var k in a)e.setAttribute(k,a[k]);if(p)p.appendChild(e);return e;}
var W=1000,L=110,H=26,total=Math.max(d.total,1);
var tl=el('svg',{width:W,height:H*d.lanes.length+24,id:'timeline-svg'},document.getElementById('timeline'));
d.lanes.forEach(function(l,i){var t=el('text',{x:0,y:i*H+17},tl);t.textContent=l;});
d.steps.forEach(function(s){var i=Math.max(d.lanes.indexOf(s.lane),0);var x=L+(W-L-10)*s.start/total;
var w=Math.max((W-L-10)*(s.end-s.start)/total,2);var r=el('rect',{x:x,y:i*H+4,width:w,height:H-8,'class':'step '+s.status,'data-step':s.id},tl);
el('title',{},r).textContent=s.id+' '+s.status+' ('+(s.end-s.start).toFixed(1)+' s)';});
var ax=el('text',{x:W-80,y:H*d.lanes.length+18},tl);ax.textContent=total.toFixed(1)+' s';
d.checks.forEach(function(c){var box=document.querySelector('.check[data-source="'+c.source+'"] .chart');if(!box)return;
var keys=Object.keys(c.counts);var max=Math.max.apply(null,keys.map(function(k){return c.counts[k];}).concat([1]));
var svg=el('svg',{width:480,height:keys.length*28+10,'class':'bars'},box);
keys.forEach(function(k,i){var p=k.split('@');var w=300*c.counts[k]/max;
var t=el('text',{x:0,y:i*28+19},svg);t.textContent=k;
el('rect',{x:100,y:i*28+6,width:w,height:18,'class':'bar','data-version':p[0],'data-cluster':p[1],'data-count':c.counts[k]},svg);
var n=el('text',{x:106+w,y:i*28+19},svg);n.textContent=c.counts[k];});});
document.body.setAttribute('data-rendered','yes');
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitStatus;
    use crate::plan::{DataPlane, ProviderKind, StepClass, StepId};

    fn t(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn check(from: &str, counts: &[(&str, u64)], p: f64, cross: Option<f64>) -> Event {
        Event::CheckFinished {
            id: StepId(format!("check-traffic/from-{from}")),
            record: crate::verify::CheckRecord {
                verdict: crate::verify::SourceVerdict {
                    from: crate::scenario::ClusterName::new(from),
                    requests: 100,
                    counts: counts
                        .iter()
                        .map(|(k, n)| {
                            let (what, c) = k.split_once('@').expect("what@cluster");
                            (
                                crate::verify::At::new(what, Some(&crate::scenario::ClusterName::new(c))),
                                *n,
                            )
                        })
                        .collect(),
                    instances: BTreeMap::new(),
                    errors: BTreeMap::new(),
                    p_value: Some(p),
                    problems: Vec::new(),
                },
                convergence: crate::verify::Convergence {
                    converged: cross.is_some(),
                    attempts: 3,
                    seconds: 1.5,
                    first_cross_cluster_seconds: cross,
                },
            },
        }
    }

    fn events() -> Vec<(Duration, Event)> {
        let id = |s: &str| StepId(s.to_string());
        let counts = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        vec![
            (
                t(0.0),
                Event::RunStarted {
                    scenario: "multi-primary".into(),
                    guide: "Install Multi-Primary".into(),
                    source: "scenarios/multi-primary.yaml".into(),
                    provider: ProviderKind::Kind,
                    dataplane: DataPlane::Envoy,
                    variant: "istioctl 1.32".into(),
                    real: vec![],
                    computed: vec![],
                    notes: vec!["overlay: upstream Envoy <1.40> & friends".into()],
                    properties: counts(&[("envoy", "1.40.0")]),
                    steps: vec![
                        (id("create-clusters"), "Create clusters".into()),
                        (id("check-traffic/from-cluster1"), "Verify from cluster1".into()),
                        (id("check-traffic/from-cluster2"), "Verify from cluster2 </script>".into()),
                    ],
                preamble: Vec::new(),
                },
            ),
            (t(0.0), Event::StepStarted { id: id("create-clusters"), title: "Create clusters".into() }),
            (
                t(40.0),
                Event::StepFinished {
                    id: id("create-clusters"),
                    title: "Create clusters".into(),
                    class: StepClass::Infrastructure,
                    outcome: Outcome::Passed,
                    duration: t(40.0),
                    attempts: vec![],
                    properties: BTreeMap::new(),
                },
            ),
            (
                t(40.0),
                Event::StepStarted { id: id("check-traffic/from-cluster1"), title: "Verify".into() },
            ),
            (t(70.0), check("cluster1", &[("v1@cluster1", 100)], 0.0, None)),
            (
                t(70.0),
                Event::StepFinished {
                    id: id("check-traffic/from-cluster1"),
                    title: "Verify".into(),
                    class: StepClass::Check,
                    outcome: Outcome::Failed {
                        kind: FailureKind::Conformance,
                        message: "v2 (in cluster2) never answered cluster1's curl".into(),
                        command: Some("kubectl exec … curl".into()),
                        output_tail: None,
                    },
                    duration: t(30.0),
                    attempts: vec![],
                    properties: counts(&[("count/v1@cluster1", "100"), ("p-value", "0.0000"), ("requests", "100")]),
                },
            ),
            (t(41.5), check("cluster2", &[("v1@cluster1", 46), ("v2@cluster2", 54)], 0.4237, Some(10.5))),
            (
                t(41.5),
                Event::StepFinished {
                    id: id("check-traffic/from-cluster2"),
                    title: "Verify </script>".into(),
                    class: StepClass::Check,
                    outcome: Outcome::Passed,
                    duration: t(1.5),
                    attempts: vec![],
                    properties: counts(&[
                        ("count/v1@cluster1", "46"),
                        ("count/v2@cluster2", "54"),
                        ("p-value", "0.4237"),
                        ("convergence-seconds", "10.5"),
                    ]),
                },
            ),
            (
                t(75.0),
                Event::Diagnostics {
                    steps: vec![id("check-traffic/from-cluster1")],
                    path: "/r/multi-primary.diagnostics".into(),
                    link: "multi-primary.diagnostics".into(),
                    files: vec![crate::diagnose::StoredFile {
                        name: "diagnosis.txt".into(),
                        what: "one-line diagnoses".into(),
                        bytes: 90,
                        cut: 0,
                    }],
                    bytes: 90,
                    budget: 5_000_000,
                    diagnosis: Some("cluster1 has no remote secret for cluster2: istiod in cluster1 sees no endpoints in cluster2".into()),
                    findings: vec!["cluster1 has no remote secret for cluster2: istiod in cluster1 sees no endpoints in cluster2".into()],
                    unavailable: vec![],
                },
            ),
            (
                t(90.0),
                Event::CleanupFinished {
                    complete: true,
                    message: "deleted kind cluster meshconf-cluster1".into(),
                    properties: counts(&[("egress-packets", "0")]),
                },
            ),
            (t(90.0), Event::RunFinished { status: ExitStatus::ConformanceFailure, duration: t(90.0) }),
        ]
    }

    #[test]
    fn a_rehearsal_page_says_it_is_a_rehearsal() {
        let mut evs = events();
        assert!(!render_html(&evs).contains("REHEARSAL"));
        if let Some((
            _,
            Event::RunStarted {
                provider, dataplane, ..
            },
        )) = evs.first_mut()
        {
            *provider = ProviderKind::Kwok;
            *dataplane = DataPlane::Computed;
        }
        let page = render_html(&evs);
        assert!(page.contains("<span id=\"run-kind\">REHEARSAL</span>"), "{page}");
        assert!(page.contains("id=\"rehearsal\""));
    }

    #[test]
    fn lanes_follow_the_cluster_a_step_acts_on() {
        assert_eq!(lane_of("create-clusters"), "all clusters");
        assert_eq!(lane_of("install-istio/cluster1"), "cluster1");
        assert_eq!(lane_of("check-traffic/from-cluster2"), "cluster2");
        assert_eq!(lane_of("remote-secret/cluster1-into-cluster2"), "cluster2");
    }

    #[test]
    fn html_is_self_contained_escaped_and_carries_the_diagnosis() {
        let page = render_html(&events());
        assert!(
            !page.contains("http://") || !page.contains("src=\"http"),
            "no fetches"
        );
        for fetch in ["src=\"http", "href=\"http", "@import", "url("] {
            assert!(
                !page.contains(fetch),
                "the page must not fetch anything ({fetch})"
            );
        }
        assert!(
            page.contains("upstream Envoy &lt;1.40&gt; &amp; friends"),
            "notes are escaped"
        );
        assert!(page.contains("Diagnosis: cluster1 has no remote secret for cluster2"));
        assert!(page.contains("href=\"multi-primary.diagnostics/diagnosis.txt\""));
        assert_eq!(
            page.matches("</script>").count(),
            2,
            "embedded data cannot close its script element early"
        );
        insta::assert_snapshot!(page);
    }
}
