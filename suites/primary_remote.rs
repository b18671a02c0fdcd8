//! `cargo test --test primary_remote`: the Install Primary-Remote guide end to end on `MESHCONF_PROVIDER`
//! (default kind), plus a failure-injection trial (on kind and on the rehearsal).

mod common;

use common::{Fault, FaultAt, assert_conformance, assert_failed, run, scenario};

use libtest_mimic::Trial;
use meshconf::ExitStatus;

fn main() -> std::process::ExitCode {
    // Cargo runs this suite after multi_primary, whose trials end on the two-network fleet: starting there makes
    // one kind fleet fewer in `make test` (a fleet costs about a minute to make on a 2-core machine).
    // The different-networks guide: a conformance run on clusters meshconf puts on two networks.
    let lead = vec![
        Trial::test("primary_remote::different_networks", || {
            common::guide_conformance(
                "primary-remote-multi-network.yaml",
                "primary_remote.multi-network",
                common::Tab::Istioctl,
            )
        }),
        Trial::test("primary_remote::different_networks_helm", || {
            common::guide_conformance(
                "primary-remote-multi-network.yaml",
                "primary_remote.multi-network-helm",
                common::Tab::Helm,
            )
        }),
    ];
    let conformance = Trial::test("primary_remote::conformance", || {
        let s = scenario("primary-remote.yaml", |t| t)?;
        let r = run("primary_remote", &s, common::port("primary_remote"), None)?;
        assert_conformance(&r, &["cluster1", "cluster2"])
    });
    let faults = vec![
        // The Helm tab of both Primary-Remote guides.
        Trial::test("primary_remote::helm", || {
            common::guide_conformance("primary-remote.yaml", "primary_remote.helm", common::Tab::Helm)
        }),
        // The remote's proxies one minor behind its primary (the primary upgraded in place, only its own
        // workloads restarted): check-proxies reads every sidecar's build from the pods, then both clusters' curls
        // reach both versions through the newer istiod.
        Trial::test("primary_remote::remote_proxies_one_minor_behind", || {
            let s = scenario("primary-remote-mixed-versions.yaml", |t| t)?;
            let r = run(
                "primary_remote.mixed-versions",
                &s,
                common::port("primary_remote.mixed-versions"),
                None,
            )?;
            assert_conformance(&r, &["cluster1", "cluster2"])?;
            for (cluster, build) in [("cluster1", "1.32-dev."), ("cluster2", common::OLDER_ISTIO)] {
                let id = format!("check-proxies/{cluster}");
                let (outcome, _) = r.outcome(&id).ok_or(format!("no {id}"))?;
                let proxies = r.proxy_images(&id);
                if outcome != meshconf::report::Outcome::Passed
                    || proxies.is_empty()
                    || !proxies.iter().all(|i| i.contains(&format!(":{build}")))
                {
                    return Err(format!(
                        "{cluster}'s sidecars should all be {build}*: {outcome:?}, {proxies:?}"
                    )
                    .into());
                }
            }
            Ok(())
        }),
        Trial::test("primary_remote::eastwest_gateway_without_address_fails", || {
            // Break the east-west gateway's address: the MetalLB pool is taken away when the gateway step starts.
            let s = scenario("primary-remote.yaml", |t| t)?;
            let fault = FaultAt {
                step: "eastwest-gateway/cluster1",
                fault: Fault::RemovePool("cluster1"),
            };
            let r = common::run_with(
                "primary_remote.no-lb",
                &s,
                common::port("primary_remote.no-lb"),
                Some(fault),
                &|cfg| {
                    cfg.run.lb_timeout = std::time::Duration::from_secs(30);
                },
            )?;
            assert_failed(
                &r,
                ExitStatus::Infrastructure,
                "eastwest-gateway/cluster1",
                "external IP on service istio-system/istio-eastwestgateway",
            )?;
            common::assert_diagnosis(
                &r,
                "istio-system/istio-eastwestgateway in cluster1 has no LoadBalancer address",
            )?;
            // On a fleet the reset's clean-state check sees the pool gone: the fleet is dirty, so the next run
            // recreates it rather than inherit a cluster that gives no addresses.
            match &r.fleet {
                None => Ok(()),
                Some(f) => match &f.dirty {
                    Some(d)
                        if d.contains("lost") && d.contains("IPAddressPool/metallb-system/default-pool") =>
                    {
                        Ok(())
                    }
                    other => {
                        Err(format!("the fleet must be dirty naming the removed pool, got {other:?}").into())
                    }
                },
            }
        }),
    ];
    let kwok_only = vec![
        // The same with the remote's workloads restarted too: its sidecars are then the newer build's, and
        // check-proxies names each pod that is not the older one.
        Trial::test(
            "primary_remote::check_proxies_fails_when_the_remote_restarts_too",
            || {
                let r = common::run_broken(
                    "primary_remote.remote-restarted",
                    "primary-remote-mixed-versions.yaml",
                    |t| {
                        t.replace(
                            "restart-workloads: { namespace: sample, clusters: [cluster1] }",
                            "restart-workloads: { namespace: sample }",
                        )
                    },
                )?;
                assert_failed(
                    &r,
                    ExitStatus::ConformanceFailure,
                    "check-proxies/cluster2",
                    "not every sidecar runs the 1.31-dev proxy",
                )
            },
        ),
    ];
    common::main(lead, conformance, faults, kwok_only, Vec::new())
}
