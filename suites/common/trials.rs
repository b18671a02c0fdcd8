//! Trial policy: each trial's ports and kind prefix (so trials can run side by side), which trials run on which
//! provider, the suites' own self-tests, and the libtest-mimic entry point.

#[allow(unused_imports)]
use super::*;

/// The kind cluster-name prefix of one trial, from its report name (`multi_primary.no-secret` →
/// `mc-mp-no-secret`): trials never share a cluster name, so they can run side by side (nextest runs each in
/// its own process) and a leftover of one trial is never mistaken for another's.
pub fn kind_prefix(report_name: &str) -> String {
    let short = report_name
        .replace("multi_primary", "mp")
        .replace("primary_remote", "pr")
        .replace(['_', '.'], "-");
    format!("mc-{short}")
}

/// Runs the suite's trials. Failure-injection trials break what the run created, so they run on the providers
/// that create their clusters (kwok, kind) and are listed as ignored on `existing` (a user's clusters); `kwok_only`
/// trials need the rehearsal's own processes, `kind_only` ones the kind provider's Docker engine. `lead` are
/// trials that create clusters and run before the conformance run: a suite that starts on the topology the suite
/// before it ended on makes one fleet fewer. An ignored trial is reported as such, never as a pass.
pub fn main(
    lead: Vec<Trial>,
    conformance: Trial,
    faults: Vec<Trial>,
    kwok_only: Vec<Trial>,
    kind_only: Vec<Trial>,
) -> std::process::ExitCode {
    meshconf::rehearsal::run_if_shim();
    let mut args = Arguments::from_args();
    // Rehearsals are heavy on a small machine and bind fixed port ranges: run trials one at a time.
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let p = provider().ok();
    let kwok = p == Some(ProviderKind::Kwok);
    let creates = kwok || p == Some(ProviderKind::Kind);
    // In the order they run (one at a time): on kind the suites keep one fleet up (`run_with`), so the trials of
    // a topology follow each other: multi_primary lists its trials flat network first (the kind-only ones right
    // after the conformance run), then three clusters, then two networks; primary_remote, which cargo runs next,
    // starts on two networks (its `lead`), then flat.
    let mut trials = self_tests();
    trials.extend(lead.into_iter().map(|t| t.with_ignored_flag(!creates)));
    trials.push(conformance);
    trials.extend(
        kind_only
            .into_iter()
            .map(|t| t.with_ignored_flag(p != Some(ProviderKind::Kind))),
    );
    trials.extend(faults.into_iter().map(|t| t.with_ignored_flag(!creates)));
    trials.extend(kwok_only.into_iter().map(|t| t.with_ignored_flag(!kwok)));
    libtest_mimic::run(&args, trials).exit_code()
}

/// The port range of the existing-provider trial (every trial has its own; see [`PORTS`]).
pub const EXISTING_PORT_BASE: u16 = 31700;

/// Every trial's first rehearsal port, by report name: each trial owns 100 ports from there, so trials can run
/// at once in separate processes. A test holds them distinct.
pub const PORTS: &[(&str, u16)] = &[
    ("multi_primary", 31000),
    ("multi_primary.no-secret", 31100),
    ("multi_primary.no-shared-root", 31200),
    ("multi_primary.no-injection", 31300),
    ("multi_primary.istiod-killed", 31400),
    ("primary_remote", 31500),
    ("primary_remote.no-lb", 31600),
    ("existing_provider", EXISTING_PORT_BASE),
    ("multi_primary.flaky", 31800),
    ("multi_primary.multi-network", 31900),
    ("multi_primary.no-expose", 32000),
    ("primary_remote.multi-network", 32100),
    ("multi_primary.three-clusters", 32200),
    ("multi_primary.helm", 32300),
    ("multi_primary.multi-network-helm", 32400),
    ("primary_remote.helm", 32500),
    ("primary_remote.multi-network-helm", 32600),
    ("multi_primary.routed-networks", 32700),
    // Below 32768, where Linux's ephemeral ports start.
    ("multi_primary.compare-baseline", 30800),
    ("multi_primary.compare-candidate", 30900),
    ("multi_primary.mixed-versions", 30700),
    ("multi_primary.canary-upgrade", 30600),
    ("multi_primary.canary-all-at-once", 30500),
    ("multi_primary.inplace-upgrade", 30400),
    ("primary_remote.mixed-versions", 30300),
    ("primary_remote.remote-restarted", 30200),
    ("multi_primary.multi-network-canary", 30100),
    ("multi_primary.gateway-left-behind", 30000),
    ("multi_primary.kwok-fleet", 29800),
];

/// The first port of trial `name` (from [`PORTS`]).
pub fn port(name: &str) -> u16 {
    PORTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("trial {name} has no port range in common::PORTS"))
}

/// Trials of the suites' own machinery: they create nothing and run on every provider.
pub fn self_tests() -> Vec<Trial> {
    vec![
        Trial::test(
            "harness::trials_have_distinct_port_ranges_and_cluster_names",
            || {
                let mut seen = std::collections::BTreeMap::new();
                for (name, p) in PORTS {
                    if let Some(other) = seen.insert(p / 100, name) {
                        return Err(format!("{name} and {other} share the port range {p}").into());
                    }
                }
                let prefixes: std::collections::BTreeSet<String> =
                    PORTS.iter().map(|(n, _)| kind_prefix(n)).collect();
                if prefixes.len() != PORTS.len() {
                    return Err(format!("kind prefixes collide: {prefixes:?}").into());
                }
                Ok(())
            },
        ),
        Trial::test("harness::a_fault_that_was_not_injected_fails_the_trial", || {
            let at = FaultAt {
                step: "deploy-apps/cluster2",
                fault: Fault::KillIstiod("cluster2"),
            };
            let broken = fault_verdict(
                &at,
                Some(Err("the rehearsal runs no process istiod-cluster2".into())),
            );
            let never = fault_verdict(&at, None);
            match (broken, never, fault_verdict(&at, Some(Ok(())))) {
                (Err(a), Err(b), Ok(())) => {
                    let (a, b) = (format!("{a:?}"), format!("{b:?}"));
                    if a.contains("could not be injected") && b.contains("never injected") {
                        Ok(())
                    } else {
                        Err(format!("unclear messages: {a} / {b}").into())
                    }
                }
                other => Err(format!("a failed or missing injection must fail the trial: {other:?}").into()),
            }
        }),
    ]
}
