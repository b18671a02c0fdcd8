//! Validation of a parsed scenario: every check runs before anything is created, and every problem is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use super::error::{ScenarioError, ScenarioErrors};
use super::model::*;
use super::raw::*;
use super::target::is_dns_label;

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<ScenarioError>,
    warnings: Vec<String>,
}

impl Ctx<'_> {
    /// The clusters an earlier deploy-apps deployed namespace `ns` to; an error at `ns` when none did.
    fn deployed(
        &mut self,
        namespaces: &BTreeMap<String, BTreeSet<String>>,
        ns: &S<String>,
    ) -> Option<BTreeSet<String>> {
        let found = namespaces.get(&ns.value).cloned();
        if found.is_none() {
            self.err(
                ns,
                format!(
                    "namespace '{}' is not deployed by an earlier deploy-apps",
                    ns.value
                ),
                None,
            );
        }
        found
    }

    fn err<T>(&mut self, at: &S<T>, msg: impl Into<String>, hint: impl Into<Option<String>>) {
        self.errors.push(ScenarioError::at_location(
            self.path,
            self.text,
            &at.referenced,
            msg,
            hint.into(),
        ));
    }
}

fn is_version(s: &str) -> bool {
    s.len() >= 2 && s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Checks a parsed scenario against itself and the kind configs loading read for it. Pure: no I/O.
pub(crate) fn validate(
    path: &Path,
    text: &str,
    raw: RawScenario,
    kind_configs: &mut KindConfigs,
) -> Result<Scenario, ScenarioErrors> {
    let mut cx = Ctx {
        path,
        text,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    if !is_dns_label(&raw.name.value) {
        cx.err(
            &raw.name,
            format!("scenario name '{}' is not a DNS-1123 label", raw.name.value),
            Some("use lowercase letters, digits and '-', e.g. multi-primary".to_string()),
        );
    }
    if !is_dns_label(&raw.mesh.id.value) {
        cx.err(
            &raw.mesh.id,
            format!("mesh id '{}' is not a DNS-1123 label", raw.mesh.id.value),
            Some("the guides use mesh1".to_string()),
        );
    }

    // Clusters.
    let mut clusters: Vec<Cluster> = Vec::new();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for rc in &raw.clusters {
        let name = rc.name.value.clone();
        if !is_dns_label(&name) {
            cx.err(
                &rc.name,
                format!("cluster name '{name}' is not a DNS-1123 label"),
                Some("istioctl create-remote-secret --name requires one, e.g. cluster1".to_string()),
            );
        }
        if let Some(line) = seen.insert(name.clone(), rc.name.referenced.line()) {
            cx.err(
                &rc.name,
                format!("duplicate cluster name '{name}' (first declared on line {line})"),
                Some("give every cluster a distinct name".to_string()),
            );
            continue;
        }
        if !is_dns_label(&rc.network.value) {
            cx.err(
                &rc.network,
                format!("network '{}' is not a DNS-1123 label", rc.network.value),
                None,
            );
        }
        if let Some(b) = &rc.istio
            && !is_build_name(&b.value)
        {
            cx.err(
                b,
                format!("istio build '{}' is not a build name", b.value),
                Some(
                    "name a build made here, e.g. 1.31-dev (tools/istio-builds.env), or leave it out".into(),
                ),
            );
        }
        let value = rc.kind_config.value.clone();
        let Some((kind_config, read)) = kind_configs.remove(&value) else {
            cx.err(&rc.kind_config, format!("kind config {value} was not read"), None);
            continue;
        };
        // Each problem is reported once, at the first reference; later references to the same file see a note.
        let (subnets, again) = match read {
            Ok(s) => (Some(s), Ok(s)),
            Err(KindConfigProblem::AtScenario(msg, hint)) => {
                cx.err(&rc.kind_config, msg.clone(), Some(hint.clone()));
                (None, Err(KindConfigProblem::AtScenario(msg, hint)))
            }
            Err(KindConfigProblem::InFile(e)) => {
                cx.errors.push(e);
                let note = format!("kind config {value} is invalid (see the error located in it)");
                (
                    None,
                    Err(KindConfigProblem::AtScenario(note, "fix that file".into())),
                )
            }
        };
        kind_configs.insert(value, (kind_config.clone(), again));
        let Some(subnets) = subnets else { continue };
        clusters.push(Cluster {
            name: ClusterName(name),
            role: rc.role.value,
            network: NetworkName(rc.network.value.clone()),
            primary: rc.primary.as_ref().map(|p| ClusterName(p.value.clone())),
            kind_config,
            subnets,
            istio: rc.istio.as_ref().map(|b| b.value.clone()),
        });
    }
    if raw.clusters.is_empty() {
        cx.errors.push(ScenarioError::at(
            path,
            text,
            1,
            1,
            "scenario declares no clusters",
            Some("declare at least one cluster under `clusters:`".into()),
        ));
    }
    let names: BTreeSet<String> = raw.clusters.iter().map(|c| c.name.value.clone()).collect();
    let known = names.iter().cloned().collect::<Vec<_>>().join(", ");
    let role_of = |n: &str| {
        raw.clusters
            .iter()
            .find(|c| c.name.value == n)
            .map(|c| c.role.value)
    };

    // Roles.
    for rc in &raw.clusters {
        match (rc.role.value, &rc.primary) {
            (Role::Remote, None) => cx.err(
                &rc.role,
                format!("remote cluster '{}' names no primary", rc.name.value),
                Some("add `primary: <name of a primary cluster>`".to_string()),
            ),
            (Role::Remote, Some(p)) => match role_of(&p.value) {
                None => cx.err(
                    p,
                    format!("primary '{}' is not a declared cluster", p.value),
                    Some(format!("declared clusters: {known}")),
                ),
                Some(Role::Remote) => cx.err(
                    p,
                    format!("'{}' is a remote, not a primary", p.value),
                    Some("a remote must be served by a primary cluster".to_string()),
                ),
                Some(Role::Primary) => {}
            },
            (Role::Primary, Some(p)) => cx.err(
                p,
                "a primary cluster takes no `primary:`",
                Some("remove the key, or make this cluster a remote".to_string()),
            ),
            (Role::Primary, None) => {}
        }
    }
    if !raw.clusters.is_empty() && !raw.clusters.iter().any(|c| c.role.value == Role::Primary) {
        cx.err(
            &raw.clusters[0].role,
            "the topology has no primary cluster",
            Some("at least one cluster must run istiod (role: primary)".to_string()),
        );
    }

    // Subnets must be disjoint across clusters (pods and services alike): flat routing needs unique addresses.
    let mut ranges: Vec<(String, &'static str, Ipv4Net, usize)> = Vec::new();
    for c in &clusters {
        let idx = raw
            .clusters
            .iter()
            .position(|r| r.name.value == c.name.0)
            .unwrap_or(0);
        ranges.push((c.name.0.clone(), "podSubnet", c.subnets.pods, idx));
        ranges.push((c.name.0.clone(), "serviceSubnet", c.subnets.services, idx));
    }
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            if a.2.contains(&b.2.network()) || b.2.contains(&a.2.network()) {
                let at = &raw.clusters[b.3].kind_config;
                cx.err(
                    at,
                    format!(
                        "{} {} of cluster '{}' overlaps {} {} of cluster '{}'",
                        b.1, b.2, b.0, a.1, a.2, a.0
                    ),
                    Some(
                        "give every cluster distinct pod and service subnets in its kind config".to_string(),
                    ),
                );
            }
        }
    }

    // Steps.
    let check_cluster = |cx: &mut Ctx, r: &S<String>| -> Option<ClusterName> {
        if names.contains(&r.value) {
            Some(ClusterName(r.value.clone()))
        } else {
            cx.err(
                r,
                format!("unknown cluster '{}'", r.value),
                Some(format!("declared clusters: {known}")),
            );
            None
        }
    };
    let helm = raw.install_method.as_ref().map(|m| m.value) == Some(InstallMethod::Helm);
    let mut steps = Vec::new();
    let mut installed: BTreeSet<String> = BTreeSet::new();
    let mut eastwest: BTreeSet<String> = BTreeSet::new();
    let mut exposed: BTreeSet<String> = BTreeSet::new();
    let mut networked: BTreeSet<String> = BTreeSet::new();
    let mut deployed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new(); // version -> clusters
    let mut clients: BTreeSet<String> = BTreeSet::new();
    let mut external: BTreeSet<String> = BTreeSet::new();
    // Control-plane revisions installed per cluster (`None`: an install without one), and where each namespace
    // of deploy-apps runs.
    let mut revisions: BTreeMap<String, BTreeSet<Option<String>>> = BTreeMap::new();
    let mut namespaces: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut traffic: Option<(&S<String>, bool)> = None; // start-traffic's first source, and whether it was checked
    // The build each cluster's default control plane runs now (`None`: the run's), moved on by upgrade-istio.
    let mut running: BTreeMap<String, Option<String>> = raw
        .clusters
        .iter()
        .map(|c| (c.name.value.clone(), c.istio.as_ref().map(|b| b.value.clone())))
        .collect();
    if raw.steps.is_empty() {
        cx.errors.push(ScenarioError::at(
            path,
            text,
            1,
            1,
            "scenario has no steps",
            Some("list the guide's steps under `steps:`".into()),
        ));
    }
    for rs in &raw.steps {
        match rs {
            RawStep::InstallIstio(s) => {
                let Some(c) = check_cluster(&mut cx, &s.cluster) else {
                    continue;
                };
                if role_of(&c.0) != Some(Role::Primary) {
                    cx.err(
                        &s.cluster,
                        format!("install-istio targets '{c}', which is not a primary"),
                        Some("use install-remote for remote clusters".to_string()),
                    );
                }
                let revision = s.revision.as_ref().map(|r| r.value.clone());
                if let Some(r) = &s.revision
                    && helm
                {
                    cx.err(
                        r,
                        "a control-plane revision with install-method: helm".to_string(),
                        Some(
                            "meshconf's Helm path installs the default revision only; drop `revision:` or use istioctl"
                                .into(),
                        ),
                    );
                }
                if let Some(r) = &s.revision
                    && !is_dns_label(&r.value)
                {
                    cx.err(
                        r,
                        format!("revision '{}' is not a DNS-1123 label", r.value),
                        Some("name it after its build with dashes, e.g. 1-31-dev".to_string()),
                    );
                }
                if let Some(b) = &s.istio
                    && !is_build_name(&b.value)
                {
                    cx.err(
                        b,
                        format!("istio build '{}' is not a build name", b.value),
                        Some("name a build made here, e.g. 1.32-dev (tools/istio-builds.env)".into()),
                    );
                }
                let revs = revisions.entry(c.0.clone()).or_default();
                // A second install of a cluster is a canary: both installs name revisions, and different ones.
                let again = !installed.insert(c.0.clone());
                if again && (revision.is_none() || revs.contains(&None) || revs.contains(&revision)) {
                    cx.err(
                        &s.cluster,
                        format!("'{c}' is installed twice"),
                        Some(
                            "a canary install names a revision, and so does the install it joins (install-istio: {cluster: c, revision: 1-32-dev, istio: 1.32-dev})"
                                .to_string(),
                        ),
                    );
                }
                revs.insert(revision.clone());
                if s.external_istiod {
                    external.insert(c.0.clone());
                }
                steps.push(Step::InstallIstio(InstallIstio {
                    cluster: c,
                    external_istiod: s.external_istiod,
                    revision,
                    build: s.istio.as_ref().map(|b| b.value.clone()),
                }));
            }
            RawStep::EastwestGateway(s) => {
                let Some(c) = check_cluster(&mut cx, &s.cluster) else {
                    continue;
                };
                if !installed.contains(&c.0) {
                    cx.err(
                        &s.cluster,
                        format!("eastwest-gateway on '{c}' before Istio is installed there"),
                        Some("put install-istio for this cluster first".to_string()),
                    );
                }
                let installs = revisions.get(&c.0).cloned().unwrap_or_default();
                let revision = s.revision.as_ref().map(|r| r.value.clone());
                match &s.revision {
                    Some(r) if helm => cx.err(
                        r,
                        "a revisioned east-west gateway with install-method: helm".to_string(),
                        Some(
                            "meshconf's Helm path installs the default revision only; drop `revision:` or use istioctl"
                                .into(),
                        ),
                    ),
                    Some(r) if !installs.contains(&revision) => cx.err(
                        r,
                        format!(
                            "eastwest-gateway names revision '{}', which is not installed in '{c}' at this step",
                            r.value
                        ),
                        Some(format!(
                            "installed there now: {}; put install-istio {{cluster: {c}, revision: {}}} first",
                            revision_list(&installs),
                            r.value
                        )),
                    ),
                    None if !installs.is_empty() && !installs.contains(&None) => cx.err(
                        &s.cluster,
                        format!(
                            "eastwest-gateway on '{c}' names no revision, but '{c}' runs only revisions ({}): the \
                             gateway would wait for a default istiod that is not there",
                            revision_list(&installs)
                        ),
                        Some("name the revision it joins: eastwest-gateway: {cluster: c, revision: r}".into()),
                    ),
                    _ => {}
                }
                eastwest.insert(c.0.clone());
                steps.push(Step::EastwestGateway { cluster: c, revision });
            }
            RawStep::SetNetwork(s) => {
                let Some(c) = check_cluster(&mut cx, &s.cluster) else {
                    continue;
                };
                if installed.contains(&c.0) {
                    cx.err(
                        &s.cluster,
                        format!("set-network on '{c}' after Istio is installed there"),
                        Some(
                            "the guide labels istio-system before the install: move it before install-istio"
                                .into(),
                        ),
                    );
                }
                if role_of(&c.0) == Some(Role::Remote) {
                    cx.err(
                        &s.cluster,
                        format!("set-network targets the remote '{c}'"),
                        Some("install-remote labels a remote's istio-system with its network itself".into()),
                    );
                }
                if !networked.insert(c.0.clone()) {
                    cx.err(&s.cluster, format!("set-network on '{c}' twice"), None);
                }
                steps.push(Step::SetNetwork { cluster: c });
            }
            RawStep::ExposeServices(s) => {
                let Some(c) = check_cluster(&mut cx, &s.cluster) else {
                    continue;
                };
                if !eastwest.contains(&c.0) {
                    cx.err(
                        &s.cluster,
                        format!("expose-services on '{c}' without an east-west gateway there"),
                        Some("add `- eastwest-gateway: { cluster: ... }` before it".to_string()),
                    );
                }
                steps.push(Step::ExposeServices { cluster: c });
            }
            RawStep::ExposeIstiod(s) => {
                let Some(c) = check_cluster(&mut cx, &s.cluster) else {
                    continue;
                };
                if !eastwest.contains(&c.0) {
                    cx.err(
                        &s.cluster,
                        format!("expose-istiod on '{c}' without an east-west gateway there"),
                        Some("add `- eastwest-gateway: { cluster: ... }` before it".to_string()),
                    );
                }
                exposed.insert(c.0.clone());
                steps.push(Step::ExposeIstiod { cluster: c });
            }
            RawStep::RemoteSecret(s) => {
                let (Some(from), Some(into)) =
                    (check_cluster(&mut cx, &s.from), check_cluster(&mut cx, &s.into))
                else {
                    continue;
                };
                if from == into {
                    cx.err(
                        &s.into,
                        "a remote secret from a cluster into itself has no effect",
                        Some("`from` and `into` must differ".to_string()),
                    );
                }
                if role_of(&into.0) != Some(Role::Primary) {
                    cx.err(
                        &s.into,
                        format!("remote secret into '{into}', which runs no istiod"),
                        Some("remote secrets go into primary clusters".to_string()),
                    );
                } else if !installed.contains(&into.0) {
                    cx.err(
                        &s.into,
                        format!("remote secret into '{into}' before Istio is installed there"),
                        Some("istio-system must exist: install the primary first".to_string()),
                    );
                }
                steps.push(Step::RemoteSecret { from, into });
            }
            RawStep::InstallRemote(s) => {
                let (Some(c), Some(p)) = (
                    check_cluster(&mut cx, &s.cluster),
                    check_cluster(&mut cx, &s.primary),
                ) else {
                    continue;
                };
                if role_of(&c.0) != Some(Role::Remote) {
                    cx.err(
                        &s.cluster,
                        format!("install-remote targets '{c}', which is not a remote"),
                        Some("use install-istio for primaries".to_string()),
                    );
                }
                let declared = raw
                    .clusters
                    .iter()
                    .find(|r| r.name.value == c.0)
                    .and_then(|r| r.primary.as_ref());
                if declared.map(|d| d.value != p.0).unwrap_or(false) {
                    cx.err(
                        &s.primary,
                        format!("'{c}' declares a different primary than '{p}'"),
                        None,
                    );
                }
                if !installed.contains(&p.0) {
                    cx.err(
                        &s.primary,
                        format!("primary '{p}' is not installed before its remote"),
                        Some("install the primary first".to_string()),
                    );
                }
                if !eastwest.contains(&p.0) || !exposed.contains(&p.0) {
                    cx.err(&s.primary, format!("primary-remote needs an east-west gateway and exposed istiod on '{p}'"),
                        Some("add eastwest-gateway and expose-istiod steps for the primary before install-remote"
                            .to_string()));
                }
                if !external.contains(&p.0) {
                    cx.warnings.push(format!(
                        "install-istio on '{p}' lacks external-istiod: true; Istio >= 1.24 needs it to serve remote '{c}'"));
                }
                if !installed.insert(c.0.clone()) {
                    cx.err(&s.cluster, format!("'{c}' is installed twice"), None);
                }
                steps.push(Step::InstallRemote {
                    cluster: c,
                    primary: p,
                });
            }
            RawStep::DeployApps(s) => {
                if !is_dns_label(&s.namespace.value) {
                    cx.err(
                        &s.namespace,
                        format!("namespace '{}' is not a DNS-1123 label", s.namespace.value),
                        None,
                    );
                }
                let mut hw = BTreeMap::new();
                for (cluster, version) in &s.helloworld {
                    if !names.contains(cluster) {
                        cx.err(
                            version,
                            format!("helloworld placed in unknown cluster '{cluster}'"),
                            Some(format!("declared clusters: {known}")),
                        );
                        continue;
                    }
                    if !is_version(&version.value) {
                        cx.err(
                            version,
                            format!("'{}' is not a HelloWorld version", version.value),
                            Some("the sample ships v1 and v2".to_string()),
                        );
                        continue;
                    }
                    if !installed.contains(cluster) {
                        cx.err(
                            version,
                            format!("apps deployed to '{cluster}' before Istio is installed there"),
                            None,
                        );
                    }
                    deployed
                        .entry(version.value.clone())
                        .or_default()
                        .insert(cluster.clone());
                    hw.insert(ClusterName(cluster.clone()), AppVersion(version.value.clone()));
                }
                let mut client = Vec::new();
                for c in &s.client {
                    if let Some(c) = check_cluster(&mut cx, c) {
                        clients.insert(c.0.clone());
                        client.push(c);
                    }
                }
                let mut in_ns: BTreeSet<String> = s.helloworld.keys().cloned().collect();
                in_ns.extend(client.iter().map(|c| c.0.clone()));
                if let Some(r) = &s.revision {
                    for c in &in_ns {
                        if !revisions
                            .get(c)
                            .is_some_and(|rs| rs.contains(&Some(r.value.clone())))
                        {
                            cx.err(
                                r,
                                format!(
                                    "revision '{}' is not installed in '{c}' before this step",
                                    r.value
                                ),
                                Some(
                                    "install it first: install-istio: {cluster: …, revision: …}".to_string(),
                                ),
                            );
                        }
                    }
                }
                if let Some(g) = &s.graceful_shutdown
                    && !(1..=60).contains(&g.value)
                {
                    cx.err(
                        g,
                        format!("graceful-shutdown: {} is out of range", g.value),
                        Some("1 to 60 seconds of serving after a pod is asked to stop".to_string()),
                    );
                }
                namespaces
                    .entry(s.namespace.value.clone())
                    .or_default()
                    .extend(in_ns);
                let injection = s.injection.unwrap_or(true);
                if !injection {
                    cx.warnings.push(format!(
                        "namespace '{}' is not labelled for injection: pods run without \
                        sidecars, which the guide does not do",
                        s.namespace.value
                    ));
                }
                steps.push(Step::DeployApps(DeployApps {
                    namespace: Namespace(s.namespace.value.clone()),
                    injection,
                    revision: s.revision.as_ref().map(|r| r.value.clone()),
                    graceful_shutdown: s.graceful_shutdown.as_ref().map(|g| g.value),
                    helloworld: hw,
                    client,
                }));
            }
            RawStep::CheckTraffic(s) => {
                let mut from = Vec::new();
                for f in &s.from {
                    let Some(c) = check_cluster(&mut cx, f) else {
                        continue;
                    };
                    if !clients.contains(&c.0) {
                        cx.err(
                            f,
                            format!("traffic check from '{c}', where no curl client is deployed"),
                            Some("add the cluster to deploy-apps.client".to_string()),
                        );
                    }
                    from.push(c);
                }
                if let Err(why) = super::ServiceTarget::parse_checked(&s.url.value) {
                    cx.err(
                        &s.url,
                        format!("url '{}' cannot be checked: {why}", s.url.value),
                        Some("the guide calls http://helloworld.sample:5000/hello".to_string()),
                    );
                }
                let expect = parse_expect(&mut cx, &names, &known, &deployed, &s.expect);
                let pairs: usize = expect.values().map(std::collections::BTreeSet::len).sum();
                if let Some(r) = &s.requests
                    && (r.value < 2 * pairs.max(1) as u32 || r.value > 10_000)
                {
                    cx.err(
                        r,
                        format!("requests: {} is out of range", r.value),
                        Some(
                            "use at least two requests per expected version and cluster, and at most 10000"
                                .to_string(),
                        ),
                    );
                }
                steps.push(Step::CheckTraffic(CheckTraffic {
                    from,
                    url: s.url.value.clone(),
                    expect,
                    requests: s.requests.as_ref().map(|r| r.value),
                }));
            }
            RawStep::StartTraffic(s) => {
                let mut from = Vec::new();
                for f in &s.from {
                    let Some(c) = check_cluster(&mut cx, f) else {
                        continue;
                    };
                    if !clients.contains(&c.0) {
                        cx.err(
                            f,
                            format!("traffic generator in '{c}', where no client namespace is deployed"),
                            Some(
                                "add the cluster to deploy-apps.client: the generator runs beside it"
                                    .to_string(),
                            ),
                        );
                    }
                    from.push(c);
                }
                if let Some(f) = s.from.first() {
                    if traffic.is_some() {
                        cx.err(
                            f,
                            "traffic is started twice",
                            Some("one start-traffic per scenario".into()),
                        );
                    }
                    traffic = Some((f, false));
                }
                if let Err(why) = super::ServiceTarget::parse_checked(&s.url.value) {
                    cx.err(
                        &s.url,
                        format!("url '{}' cannot be requested: {why}", s.url.value),
                        Some("the guide calls http://helloworld.sample:5000/hello".to_string()),
                    );
                }
                let rate = s.rate.as_ref().map_or(10, |r| r.value);
                if let Some(r) = &s.rate
                    && !(1..=200).contains(&r.value)
                {
                    cx.err(
                        r,
                        format!("rate: {} is out of range", r.value),
                        Some("1 to 200 new connections a second".into()),
                    );
                }
                let connections = s.connections.as_ref().map_or(2, |r| r.value);
                if let Some(r) = &s.connections
                    && r.value > 32
                {
                    cx.err(
                        r,
                        format!("connections: {} is out of range", r.value),
                        Some("0 to 32 keep-alive connections".into()),
                    );
                }
                steps.push(Step::StartTraffic(StartTraffic {
                    from,
                    url: s.url.value.clone(),
                    rate,
                    connections,
                }));
            }
            RawStep::MoveWorkloads(s) => {
                let Some(in_ns) = cx.deployed(&namespaces, &s.namespace) else {
                    continue;
                };
                for c in &in_ns {
                    if !revisions
                        .get(c)
                        .is_some_and(|rs| rs.contains(&Some(s.revision.value.clone())))
                    {
                        cx.err(
                            &s.revision,
                            format!(
                                "revision '{}' is not installed in '{c}' before this step",
                                s.revision.value
                            ),
                            Some("install it first: install-istio: {cluster: …, revision: …}".to_string()),
                        );
                    }
                }
                steps.push(Step::MoveWorkloads {
                    namespace: Namespace(s.namespace.value.clone()),
                    revision: s.revision.value.clone(),
                    restart: s.restart.as_ref().map(|r| r.value).unwrap_or_default(),
                });
            }
            RawStep::UpgradeIstio(s) => {
                let Some(c) = check_cluster(&mut cx, &s.cluster) else {
                    continue;
                };
                if !is_build_name(&s.istio.value) {
                    cx.err(
                        &s.istio,
                        format!("istio build '{}' is not a build name", s.istio.value),
                        Some("name a build made here, e.g. 1.32-dev (tools/istio-builds.env)".into()),
                    );
                }
                let revs = revisions.get(&c.0);
                if !installed.contains(&c.0) || !revs.is_some_and(|rs| rs.contains(&None)) {
                    cx.err(
                        &s.cluster,
                        format!(
                            "upgrade-istio on '{c}', where no control plane without a revision is installed"
                        ),
                        Some(
                            "an in-place upgrade replaces an install-istio without revision; a revisioned \
                             control plane is upgraded by installing the next revision beside it"
                                .into(),
                        ),
                    );
                }
                let now = running.get(&c.0).cloned().flatten();
                if now.as_deref() == Some(s.istio.value.as_str()) {
                    cx.err(
                        &s.istio,
                        format!("'{c}' already runs Istio build '{}'", s.istio.value),
                        Some("an upgrade names another build than the one installed".into()),
                    );
                } else if now.is_none() {
                    cx.err(
                        &s.cluster,
                        format!("'{c}' names no Istio build to upgrade from"),
                        Some("give the cluster the build it starts on (istio: 1.31-dev)".into()),
                    );
                }
                running.insert(c.0.clone(), Some(s.istio.value.clone()));
                steps.push(Step::UpgradeIstio {
                    cluster: c,
                    build: s.istio.value.clone(),
                });
            }
            RawStep::RestartWorkloads(s) => {
                let Some(in_ns) = cx.deployed(&namespaces, &s.namespace) else {
                    continue;
                };
                let mut only = Vec::new();
                for r in s.clusters.iter().flatten() {
                    let Some(c) = check_cluster(&mut cx, r) else {
                        continue;
                    };
                    if !in_ns.contains(&c.0) {
                        cx.err(
                            r,
                            format!("namespace '{}' is not deployed in '{c}'", s.namespace.value),
                            Some(format!(
                                "it is deployed in: {}",
                                in_ns.iter().cloned().collect::<Vec<_>>().join(", ")
                            )),
                        );
                        continue;
                    }
                    only.push(c);
                }
                steps.push(Step::RestartWorkloads {
                    namespace: Namespace(s.namespace.value.clone()),
                    restart: s.restart.as_ref().map(|r| r.value).unwrap_or_default(),
                    clusters: only,
                });
            }
            RawStep::RemoveRevision(s) => {
                let Some(c) = check_cluster(&mut cx, &s.cluster) else {
                    continue;
                };
                let rev = Some(s.revision.value.clone());
                if !revisions.get_mut(&c.0).is_some_and(|rs| rs.remove(&rev)) {
                    cx.err(
                        &s.revision,
                        format!(
                            "revision '{}' is not installed in '{c}' (or was removed already)",
                            s.revision.value
                        ),
                        None,
                    );
                }
                steps.push(Step::RemoveRevision {
                    cluster: c,
                    revision: s.revision.value.clone(),
                });
            }
            RawStep::CheckLiveTraffic(s) => {
                match traffic.as_mut() {
                    Some(t) => t.1 = true,
                    None => cx.errors.push(ScenarioError::at(
                        path,
                        text,
                        1,
                        1,
                        "check-live-traffic without start-traffic before it",
                        Some("start the generators first: start-traffic: {from: […], url: …}".into()),
                    )),
                }
                let expect = parse_expect(&mut cx, &names, &known, &deployed, &s.expect);
                steps.push(Step::CheckLiveTraffic { expect });
            }
            RawStep::CheckProxies(s) => {
                let Some(in_ns) = cx.deployed(&namespaces, &s.namespace) else {
                    continue;
                };
                if s.expect.is_empty() {
                    cx.err(
                        &s.namespace,
                        "check-proxies expects nothing",
                        Some("name each cluster's build: expect: {cluster1: 1.32-dev}".into()),
                    );
                }
                let mut expect = BTreeMap::new();
                for (name, build) in &s.expect {
                    if !names.contains(name) {
                        cx.err(
                            build,
                            format!("unknown cluster '{name}'"),
                            Some(format!("declared clusters: {known}")),
                        );
                        continue;
                    }
                    if !in_ns.contains(name) {
                        cx.err(
                            build,
                            format!("namespace '{}' is not deployed in '{name}'", s.namespace.value),
                            None,
                        );
                        continue;
                    }
                    if !is_build_name(&build.value) {
                        cx.err(
                            build,
                            format!("istio build '{}' is not a build name", build.value),
                            Some("name a build made here, e.g. 1.32-dev (tools/istio-builds.env)".into()),
                        );
                        continue;
                    }
                    expect.insert(ClusterName(name.clone()), build.value.clone());
                }
                steps.push(Step::CheckProxies {
                    namespace: Namespace(s.namespace.value.clone()),
                    expect,
                });
            }
        }
    }

    if let Some((at, false)) = traffic {
        cx.err(
            at,
            "traffic is started but never checked",
            Some("end the scenario with check-live-traffic".to_string()),
        );
    }
    let trust = raw.trust.as_ref().map(|t| t.value).unwrap_or(Trust::SelfSigned);
    let primaries = raw
        .clusters
        .iter()
        .filter(|c| c.role.value == Role::Primary)
        .count();
    if primaries > 1 && trust != Trust::SharedRoot {
        cx.warnings.push(format!(
            "{primaries} primaries without `trust: shared-root`: each istiod self-signs and cross-cluster mTLS fails"
        ));
    }

    let retry_on = raw.mesh.retry_on.as_ref().map(|r| r.value.clone());
    if let Some(r) = &raw.mesh.retry_on {
        let unknown: Vec<&str> = r
            .value
            .split(',')
            .map(str::trim)
            .filter(|c| !RETRY_ON.contains(c) && !c.parse::<u16>().is_ok_and(|n| (100..600).contains(&n)))
            .collect();
        if !unknown.is_empty() {
            cx.err(
                r,
                format!(
                    "mesh.retry-on names unknown retry conditions: {}",
                    unknown.join(", ")
                ),
                Some(format!(
                    "Envoy's conditions or HTTP status codes, comma-separated: {}",
                    RETRY_ON.join(", ")
                )),
            );
        }
        if helm {
            cx.err(
                r,
                "mesh.retry-on with install-method: helm".to_string(),
                Some("meshconf sets it in the istioctl operator files only; drop it or use istioctl".into()),
            );
        }
    }

    if !cx.errors.is_empty() {
        cx.errors.sort_by_key(|e| (e.line, e.column));
        return Err(ScenarioErrors { errors: cx.errors });
    }
    Ok(Scenario {
        name: raw.name.value,
        guide: raw.guide.unwrap_or_default(),
        mesh_id: MeshId(raw.mesh.id.value),
        retry_on,
        trust,
        install_method: raw.install_method.map(|m| m.value).unwrap_or_default(),
        clusters,
        steps,
        source: path.to_path_buf(),
        warnings: cx.warnings,
    })
}

/// The `expect:` of a traffic check: each version from the clusters that run it, every one of them listed.
fn parse_expect(
    cx: &mut Ctx,
    names: &BTreeSet<String>,
    known: &str,
    deployed: &BTreeMap<String, BTreeSet<String>>,
    raw: &BTreeMap<String, S<OneOrMany>>,
) -> BTreeMap<AppVersion, BTreeSet<ClusterName>> {
    let mut expect = BTreeMap::new();
    for (version, listed) in raw {
        let clusters = listed.value.items();
        if clusters.is_empty() {
            cx.err(
                listed,
                format!("check expects {version} from no cluster"),
                Some("name the cluster (or clusters) that run it".to_string()),
            );
            continue;
        }
        let mut set = std::collections::BTreeSet::new();
        for cluster in &clusters {
            if !names.contains(cluster) {
                cx.err(
                    listed,
                    format!("unknown cluster '{cluster}'"),
                    Some(format!("declared clusters: {known}")),
                );
                continue;
            }
            set.insert(ClusterName(cluster.clone()));
        }
        match deployed.get(version) {
            None => cx.err(
                listed,
                format!("check expects version '{version}', which no deploy-apps step deploys"),
                Some(format!(
                    "deployed versions: {}",
                    deployed.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
            ),
            Some(where_) => {
                let join = |v: Vec<&String>| v.into_iter().cloned().collect::<Vec<_>>().join(", ");
                let not_there: Vec<&String> = clusters
                    .iter()
                    .filter(|c| names.contains(*c) && !where_.contains(*c))
                    .collect();
                // The verdict rejects an answer from a cluster the check does not list, so a
                // version running where the check does not expect it could never pass.
                let unlisted: Vec<&String> = where_.iter().filter(|c| !clusters.contains(c)).collect();
                if !not_there.is_empty() {
                    cx.err(
                        listed,
                        format!(
                            "check expects {version} from {}, but it is deployed in {}",
                            join(not_there),
                            join(where_.iter().collect())
                        ),
                        Some("expect each version from the clusters that run it".to_string()),
                    );
                } else if !unlisted.is_empty() {
                    cx.err(
                        listed,
                        format!(
                            "{version} also runs in {}, which the check does not list: its answers \
                             would count as misplaced",
                            join(unlisted)
                        ),
                        Some(format!(
                            "list every cluster that runs it: {version}: [{}]",
                            join(where_.iter().collect())
                        )),
                    );
                }
            }
        }
        expect.insert(AppVersion(version.clone()), set);
    }
    expect
}

/// `scenarios/../kind-configs/x.yaml` → `kind-configs/x.yaml`, without touching the file system.
fn lexical_clean(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

/// Why a kind config named by a scenario could not give its subnets.
pub(crate) enum KindConfigProblem {
    /// A problem to report at the scenario's `kind-config:` reference (message, hint).
    AtScenario(String, String),
    /// A problem inside the kind config file itself, located there.
    InFile(ScenarioError),
}

/// What loading read for each `kind-config:` a scenario names, by the value written in the scenario: the
/// resolved path and the subnets or the problem. Validation itself reads no file.
pub(crate) type KindConfigs = BTreeMap<String, (PathBuf, Result<Subnets, KindConfigProblem>)>;

/// The path a `kind-config:` value names, relative to the scenario file's directory.
/// A build name as `tools/istio-builds.env` names them (`1.31-dev`, `1.32-dev.eed52ebb66ad`, `1.31.4`).
/// Envoy's HTTP retry conditions (`x-envoy-retry-on`), which `meshConfig.defaultHttpRetryPolicy.retryOn` takes.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The revisions of one cluster as an error names them (`default` for an install without one).
fn revision_list(revs: &BTreeSet<Option<String>>) -> String {
    if revs.is_empty() {
        return "none".into();
    }
    revs.iter()
        .map(|r| r.clone().unwrap_or_else(|| "default".into()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_build_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

pub(crate) fn kind_config_path(scenario: &Path, value: &str) -> PathBuf {
    let base_dir = scenario.parent().map(Path::to_path_buf).unwrap_or_default();
    lexical_clean(&base_dir.join(value))
}

#[cfg(test)]
mod tests {
    use super::super::load_str;
    use super::*;
    use rstest::rstest;

    fn fixture_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, pods, svcs) in [
            ("c1", "10.10.0.0/16", "10.255.10.0/24"),
            ("c2", "10.20.0.0/16", "10.255.20.0/24"),
            ("overlap", "10.10.128.0/17", "10.255.30.0/24"),
        ] {
            let body = format!(
                "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  podSubnet: \"{pods}\"\n  serviceSubnet: \"{svcs}\"\n"
            );
            std::fs::write(dir.path().join(format!("{name}.yaml")), body).expect("write");
        }
        dir
    }

    const GOOD: &str = "name: mp\nmesh: {id: mesh1}\ntrust: shared-root\nclusters:\n\
  - {name: cluster1, role: primary, network: network1, kind-config: c1.yaml}\n\
  - {name: cluster2, role: primary, network: network1, kind-config: c2.yaml}\n\
steps:\n\
  - install-istio: {cluster: cluster1}\n\
  - install-istio: {cluster: cluster2}\n\
  - remote-secret: {from: cluster1, into: cluster2}\n\
  - remote-secret: {from: cluster2, into: cluster1}\n\
  - deploy-apps: {namespace: sample, helloworld: {cluster1: v1, cluster2: v2}, client: [cluster1, cluster2]}\n\
  - check-traffic: {from: [cluster1, cluster2], url: \"http://helloworld.sample:5000/hello\", expect: {v1: cluster1, v2: cluster2}}\n";

    fn load(text: &str) -> Result<Scenario, ScenarioErrors> {
        let dir = fixture_dir();
        load_str(&dir.path().join("s.yaml"), text)
    }

    const CANARY: &str = "name: up\nmesh: {id: mesh1}\ntrust: shared-root\nclusters:\n\
  - {name: cluster1, role: primary, network: network1, kind-config: c1.yaml, istio: 1.31-dev}\n\
  - {name: cluster2, role: primary, network: network1, kind-config: c2.yaml, istio: 1.31-dev}\n\
steps:\n\
  - install-istio: {cluster: cluster1, revision: old}\n\
  - install-istio: {cluster: cluster2, revision: old}\n\
  - remote-secret: {from: cluster1, into: cluster2}\n\
  - remote-secret: {from: cluster2, into: cluster1}\n\
  - deploy-apps: {namespace: sample, revision: old, helloworld: {cluster1: v1, cluster2: v2}, client: [cluster1, cluster2]}\n\
  - start-traffic: {from: [cluster1, cluster2], url: \"http://helloworld.sample:5000/hello\"}\n\
  - install-istio: {cluster: cluster1, revision: new, istio: 1.32-dev}\n\
  - install-istio: {cluster: cluster2, revision: new, istio: 1.32-dev}\n\
  - move-workloads: {namespace: sample, revision: new}\n\
  - remove-revision: {cluster: cluster1, revision: old}\n\
  - check-live-traffic: {expect: {v1: cluster1, v2: cluster2}}\n";

    #[test]
    fn a_canary_upgrade_validates() {
        let s = load(CANARY).expect("valid");
        assert_eq!(
            s.builds().into_iter().collect::<Vec<_>>(),
            ["1.31-dev", "1.32-dev"]
        );
        assert!(matches!(
            &s.steps[6],
            Step::InstallIstio(i) if i.revision.as_deref() == Some("new") && i.build.as_deref() == Some("1.32-dev")
        ));
    }

    #[rstest]
    #[case::second_install_without_revision(
        "{cluster: cluster1, revision: new, istio: 1.32-dev}",
        "{cluster: cluster1}",
        14,
        "'cluster1' is installed twice"
    )]
    #[case::moved_to_a_revision_not_installed(
        "revision: new}\n- remove",
        "revision: newer}\n- remove",
        16,
        "revision 'newer' is not installed in 'cluster1'"
    )]
    #[case::removed_twice(
        "{cluster: cluster1, revision: old}\n- check",
        "{cluster: cluster1, revision: gone}\n- check",
        17,
        "revision 'gone' is not installed in 'cluster1'"
    )]
    #[case::traffic_never_checked(
        "- check-live-traffic: {expect: {v1: cluster1, v2: cluster2}}\n",
        "",
        13,
        "traffic is started but never checked"
    )]
    #[case::deployed_on_a_revision_not_installed(
        "namespace: sample, revision: old",
        "namespace: sample, revision: new",
        12,
        "revision 'new' is not installed in 'cluster1' before this step"
    )]
    #[case::gateway_on_a_revision_not_installed(
        "- remote-secret: {from: cluster1, into: cluster2}\n",
        "- eastwest-gateway: {cluster: cluster1, revision: new}\n- remote-secret: {from: cluster1, into: cluster2}\n",
        10,
        "eastwest-gateway names revision 'new', which is not installed in 'cluster1' at this step"
    )]
    #[case::gateway_of_no_revision_where_only_revisions_run(
        "- remote-secret: {from: cluster1, into: cluster2}\n",
        "- eastwest-gateway: {cluster: cluster1}\n- remote-secret: {from: cluster1, into: cluster2}\n",
        10,
        "names no revision, but 'cluster1' runs only revisions (old)"
    )]
    #[case::a_revision_with_helm(
        "trust: shared-root\n",
        "trust: shared-root\ninstall-method: helm\n",
        9,
        "a control-plane revision with install-method: helm"
    )]
    fn canary_mistakes_are_located(
        #[case] from: &str,
        #[case] to: &str,
        #[case] line: u64,
        #[case] needle: &str,
    ) {
        assert_located(CANARY, from, to, line, needle);
    }

    #[rstest]
    #[case::unknown_condition(
        "mesh: {id: mesh1, retry-on: \"reset,on-a-whim\"}",
        2,
        "unknown retry conditions: on-a-whim"
    )]
    #[case::with_helm(
        "mesh: {id: mesh1, retry-on: \"reset,503\"}\ninstall-method: helm",
        2,
        "mesh.retry-on with install-method: helm"
    )]
    fn retry_mistakes_are_located(#[case] to: &str, #[case] line: u64, #[case] needle: &str) {
        assert_located(CANARY, "mesh: {id: mesh1}", to, line, needle);
    }

    #[test]
    fn retry_conditions_and_status_codes_validate() {
        let s = load(&CANARY.replace(
            "mesh: {id: mesh1}",
            "mesh: {id: mesh1, retry-on: \"connect-failure,reset, 503\"}",
        ))
        .expect("valid");
        assert_eq!(s.retry_on.as_deref(), Some("connect-failure,reset, 503"));
        assert_eq!(load(CANARY).expect("valid").retry_on, None);
    }

    #[test]
    fn a_gateway_moves_to_the_canary_revision() {
        let s = load(&CANARY.replace(
            "- move-workloads",
            "- eastwest-gateway: {cluster: cluster1, revision: new}\n- move-workloads",
        ))
        .expect("valid");
        assert!(matches!(
            &s.steps[8],
            Step::EastwestGateway { cluster, revision } if cluster.as_str() == "cluster1" && revision.as_deref() == Some("new")
        ));
    }

    const IN_PLACE: &str = "name: up\nmesh: {id: mesh1}\ntrust: shared-root\nclusters:\n\
  - {name: cluster1, role: primary, network: network1, kind-config: c1.yaml, istio: 1.31-dev}\n\
  - {name: cluster2, role: primary, network: network1, kind-config: c2.yaml, istio: 1.31-dev}\n\
steps:\n\
  - install-istio: {cluster: cluster1}\n\
  - install-istio: {cluster: cluster2}\n\
  - deploy-apps: {namespace: sample, helloworld: {cluster1: v1, cluster2: v2}, client: [cluster1, cluster2]}\n\
  - start-traffic: {from: [cluster1, cluster2], url: \"http://helloworld.sample:5000/hello\"}\n\
  - upgrade-istio: {cluster: cluster1, istio: 1.32-dev}\n\
  - upgrade-istio: {cluster: cluster2, istio: 1.32-dev}\n\
  - restart-workloads: {namespace: sample}\n\
  - check-live-traffic: {expect: {v1: cluster1, v2: cluster2}}\n";

    #[test]
    fn an_in_place_upgrade_validates() {
        let s = load(IN_PLACE).expect("valid");
        assert_eq!(
            s.builds().into_iter().collect::<Vec<_>>(),
            ["1.31-dev", "1.32-dev"]
        );
        assert!(matches!(
            &s.steps[4],
            Step::UpgradeIstio { cluster, build } if cluster.as_str() == "cluster1" && build == "1.32-dev"
        ));
        assert!(matches!(
            &s.steps[6],
            Step::RestartWorkloads {
                restart: Restart::Rolling,
                clusters,
                ..
            } if clusters.is_empty()
        ));
        let only = load(&IN_PLACE.replace(
            "restart-workloads: {namespace: sample}",
            "restart-workloads: {namespace: sample, clusters: [cluster2]}\n- check-proxies: {namespace: sample, \
             expect: {cluster1: 1.31-dev, cluster2: 1.32-dev}}",
        ))
        .expect("valid");
        assert!(matches!(
            &only.steps[6],
            Step::RestartWorkloads { clusters, .. } if clusters.len() == 1 && clusters[0].as_str() == "cluster2"
        ));
        assert!(matches!(
            &only.steps[7],
            Step::CheckProxies { expect, .. } if expect.len() == 2
        ));
    }

    #[rstest]
    #[case::to_the_build_it_runs(
        "{cluster: cluster1, istio: 1.32-dev}",
        "{cluster: cluster1, istio: 1.31-dev}",
        12,
        "'cluster1' already runs Istio build '1.31-dev'"
    )]
    #[case::upgraded_twice_to_one_build(
        "{cluster: cluster2, istio: 1.32-dev}",
        "{cluster: cluster1, istio: 1.32-dev}",
        13,
        "'cluster1' already runs Istio build '1.32-dev'"
    )]
    #[case::of_a_revisioned_install(
        "install-istio: {cluster: cluster1}",
        "install-istio: {cluster: cluster1, revision: old}",
        12,
        "upgrade-istio on 'cluster1', where no control plane without a revision is installed"
    )]
    #[case::restart_of_a_namespace_never_deployed(
        "restart-workloads: {namespace: sample}",
        "restart-workloads: {namespace: other}",
        14,
        "namespace 'other' is not deployed"
    )]
    #[case::restart_in_an_unknown_cluster(
        "restart-workloads: {namespace: sample}",
        "restart-workloads: {namespace: sample, clusters: [cluster9]}",
        14,
        "unknown cluster 'cluster9'"
    )]
    #[case::check_proxies_of_a_namespace_never_deployed(
        "restart-workloads: {namespace: sample}",
        "restart-workloads: {namespace: sample}\n- check-proxies: {namespace: other, expect: {cluster1: 1.32-dev}}",
        15,
        "namespace 'other' is not deployed"
    )]
    #[case::check_proxies_of_no_build(
        "restart-workloads: {namespace: sample}",
        "restart-workloads: {namespace: sample}\n- check-proxies: {namespace: sample, expect: {cluster1: 'latest please'}}",
        15,
        "is not a build name"
    )]
    #[case::check_proxies_in_an_unknown_cluster(
        "restart-workloads: {namespace: sample}",
        "restart-workloads: {namespace: sample}\n- check-proxies: {namespace: sample, expect: {cluster7: 1.32-dev}}",
        15,
        "unknown cluster 'cluster7'"
    )]
    fn in_place_mistakes_are_located(
        #[case] from: &str,
        #[case] to: &str,
        #[case] line: u64,
        #[case] needle: &str,
    ) {
        assert_located(IN_PLACE, from, to, line, needle);
    }

    /// `base` with `from` replaced by `to` is invalid, with an error containing `needle` at `line`.
    fn assert_located(base: &str, from: &str, to: &str, line: u64, needle: &str) {
        let text = base.replacen(from, to, 1);
        assert_ne!(text, base, "fixture replacement did not apply");
        let e = load(&text).expect_err("must be invalid");
        let hit = e
            .errors
            .iter()
            .find(|x| x.message.contains(needle) || x.to_string().contains(needle));
        let hit = hit.unwrap_or_else(|| panic!("no error containing {needle:?} in:\n{e}"));
        assert_eq!(hit.line, line, "{e}");
        assert!(hit.column >= 1);
    }

    #[test]
    fn the_good_scenario_validates() {
        let s = load(GOOD).expect("valid");
        assert_eq!(s.clusters.len(), 2);
        assert_eq!(s.steps.len(), 6);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[rstest]
    #[case::unknown_cluster("into: cluster2}", "into: cluster9}", 10, "unknown cluster 'cluster9'")]
    #[case::duplicate_name(
        "name: cluster2, role",
        "name: cluster1, role",
        6,
        "duplicate cluster name 'cluster1'"
    )]
    #[case::overlap(
        "kind-config: c2.yaml",
        "kind-config: overlap.yaml",
        6,
        "overlaps podSubnet 10.10.0.0/16"
    )]
    #[case::version_nobody_deploys("v2: cluster2}}", "v3: cluster2}}", 13, "expects version 'v3'")]
    #[case::version_in_wrong_cluster("v2: cluster2}}", "v2: cluster1}}", 13, "deployed in cluster2")]
    #[case::version_in_two_clusters_listed_once(
        "{cluster1: v1, cluster2: v2}",
        "{cluster1: v2, cluster2: v2}",
        13,
        "also runs in cluster1, which the check does not list"
    )]
    #[case::self_secret(
        "{from: cluster1, into: cluster2}",
        "{from: cluster1, into: cluster1}",
        10,
        "into itself"
    )]
    #[case::unknown_key("trust: shared-root", "trust: shared-root\ncolour: blue", 4, "colour")]
    #[case::bad_name("name: mp", "name: Multi_Primary", 1, "DNS-1123")]
    #[case::url_without_host("\"http://helloworld.sample:5000/hello\"", "\"http://\"", 13, "names no host")]
    #[case::url_with_an_address(
        "\"http://helloworld.sample:5000/hello\"",
        "\"http://10.0.0.7:5000/hello\"",
        13,
        "is an address"
    )]
    fn inconsistent_scenarios_are_located(
        #[case] from: &str,
        #[case] to: &str,
        #[case] line: u64,
        #[case] needle: &str,
    ) {
        assert_located(GOOD, from, to, line, needle);
    }

    #[test]
    fn a_version_in_two_clusters_is_expected_from_both() {
        let text = GOOD
            .replacen(
                "{cluster1: v1, cluster2: v2}",
                "{cluster1: v1, cluster2: v2, cluster3: v2}",
                1,
            )
            .replacen(
                "client: [cluster1, cluster2]",
                "client: [cluster1, cluster2, cluster3]",
                1,
            )
            .replacen("v2: cluster2}", "v2: [cluster2, cluster3]}", 1)
            .replacen(
                "steps:\n",
                "- {name: cluster3, role: primary, network: network2, kind-config: c3.yaml}\nsteps:\n",
                1,
            )
            .replacen(
                "- remote-secret: {from: cluster1, into: cluster2}\n",
                "- install-istio: {cluster: cluster3}\n- remote-secret: {from: cluster1, into: cluster2}\n",
                1,
            );
        let dir = fixture_dir();
        std::fs::write(
            dir.path().join("c3.yaml"),
            "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  podSubnet: \"10.30.0.0/16\"\n  serviceSubnet: \"10.255.40.0/24\"\n",
        )
        .expect("write");
        let s = load_str(&dir.path().join("s.yaml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let Some(Step::CheckTraffic(c)) = s.steps.last() else {
            panic!("no check")
        };
        let v2: Vec<&str> = c.expect[&AppVersion::new("v2")]
            .iter()
            .map(ClusterName::as_str)
            .collect();
        assert_eq!(v2, ["cluster2", "cluster3"]);
    }

    #[test]
    fn remote_without_primary_and_without_eastwest_are_errors() {
        let text = "name: pr\nmesh: {id: mesh1}\nclusters:\n\
  - {name: cluster1, role: primary, network: network1, kind-config: c1.yaml}\n\
  - {name: cluster2, role: remote, network: network1, kind-config: c2.yaml}\n\
steps:\n\
  - install-istio: {cluster: cluster1, external-istiod: true}\n\
  - install-remote: {cluster: cluster2, primary: cluster1}\n";
        let e = load(text).expect_err("invalid");
        let all = e.to_string();
        assert!(all.contains("names no primary"), "{all}");
        assert!(all.contains("east-west gateway"), "{all}");
    }

    #[test]
    fn missing_kind_config_points_at_the_reference() {
        let e = load(&GOOD.replacen("c2.yaml", "nope.yaml", 1)).expect_err("invalid");
        assert_eq!(e.errors[0].line, 6);
        assert!(e.errors[0].message.contains("cannot read kind config"));
    }

    #[test]
    fn two_primaries_without_shared_root_warn() {
        let s = load(&GOOD.replacen("trust: shared-root\n", "", 1)).expect("valid");
        assert!(
            s.warnings.iter().any(|w| w.contains("shared-root")),
            "{:?}",
            s.warnings
        );
    }
}
