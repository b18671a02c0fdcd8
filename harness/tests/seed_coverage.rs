//! Docs equivalence: every command of the seed guides maps to a line of `meshconf plan`, for the guide's own
//! istioctl generation (1.18: `x create-remote-secret`, sleep) and, through the documented renames, for the
//! current one; and every command of the current different-networks guides (`fixtures/current-guides.yaml`) for
//! the current variant. A command the plan does not cover fails the test.

use std::collections::BTreeMap;
use std::path::PathBuf;

use meshconf::mesh::{IstioVersion, Variant};
use meshconf::plan::{self, ProviderKind};
use meshconf::provider::{ClusterProvider, KindOptions, KindProvider};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    Cmd { cmd: String },
    Heredoc { heredoc: String, body: String },
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn guides_in(fixture: &str) -> BTreeMap<String, Vec<Entry>> {
    let text = std::fs::read_to_string(root().join("harness/tests/fixtures").join(fixture)).expect("fixture");
    serde_saphyr::from_str(&text).expect("fixture parses")
}

fn guides() -> BTreeMap<String, Vec<Entry>> {
    guides_in("seed-guides.yaml")
}

fn plan_text(scenario: &str, version: IstioVersion) -> String {
    let s = meshconf::scenario::load_file(&root().join("scenarios").join(format!("{scenario}.yaml")))
        .expect("scenario");
    let p = KindProvider::new(KindOptions {
        prefix: "meshconf".into(),
        node_image: None,
        istio_version: None,
        run_dir: "$MESHCONF_RUN".into(),
        keep: false,
        images: None,
        subnet: meshconf::provider::DEFAULT_KIND_SUBNET.parse().expect("subnet"),
        cgroup_v1: false,
        fleet: None,
    });
    assert_eq!(p.kind(), ProviderKind::Kind);
    plan::render_shell(&plan::build(&s, &Variant::for_version(version), p.profile(&s)))
}

fn tokens(line: &str) -> Vec<String> {
    line.replace('@', "")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// `--mesh` and `--cluster` of gen-eastwest-gateway.sh are accepted and ignored since Istio 1.12.
fn drop_noop_flags(t: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for x in t {
        if skip {
            skip = false;
            continue;
        }
        if x == "--mesh" || x == "--cluster" {
            skip = true;
            continue;
        }
        out.push(x);
    }
    out
}

fn rename_for(variant: &Variant, line: &str) -> String {
    let mut l = line.to_string();
    if variant.remote_secret_words() == ["create-remote-secret"] {
        l = l.replace("istioctl x create-remote-secret", "istioctl create-remote-secret");
    }
    if variant.client.name() == "curl" {
        l = l
            .replace("samples/sleep/sleep.yaml", "samples/curl/curl.yaml")
            .replace("-c sleep", "-c curl")
            .replace("app=sleep", "app=curl");
    }
    l
}

/// The guide's inline pod lookup `"$(kubectl get pod --context="${CTX_X}" … -o jsonpath=…)"` is, in the plan, a
/// placeholder `"${CLIENT_POD_X}"` bound by `export CLIENT_POD_X=$(…the same lookup…)` one line earlier (so the
/// transcript shows the pod it used). Returns the line with the placeholder and the export it needs.
fn with_placeholder(line: &str) -> (String, Option<String>) {
    let Some(start) = line.find("\"$(kubectl get pod ") else {
        return (line.to_string(), None);
    };
    let Some(len) = line[start..].find(")\"") else {
        return (line.to_string(), None);
    };
    let lookup = &line[start + 3..start + len];
    let Some(cluster) = lookup.split("${CTX_").nth(1).and_then(|r| r.split('}').next()) else {
        return (line.to_string(), None);
    };
    let name = format!("CLIENT_POD_{cluster}");
    let replaced = format!("{}\"${{{name}}}\"{}", &line[..start], &line[start + len + 2..]);
    (replaced, Some(format!("export {name}=$({lookup})")))
}

fn covered(plan: &str, seed: &[String]) -> bool {
    plan.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .any(|l| {
            let mut have = tokens(l);
            // The same program; its words in any order (the pages put `--context` before or after the verb).
            if have.is_empty() || seed.is_empty() || have[0] != seed[0] {
                return false;
            }
            seed.iter().all(|t| match have.iter().position(|h| h == t) {
                Some(i) => {
                    have.remove(i);
                    true
                }
                None => false,
            })
        })
}

fn heredoc_body(plan: &str, file: &str) -> Option<String> {
    let start = format!("cat <<EOF > {file}");
    let mut lines = plan.lines().skip_while(|l| *l != start);
    lines.next()?;
    Some(lines.take_while(|l| *l != "EOF").collect::<Vec<_>>().join("\n"))
}

fn subset(want: &serde_json::Value, have: &serde_json::Value) -> bool {
    match (want, have) {
        (serde_json::Value::Object(w), serde_json::Value::Object(h)) => {
            w.iter().all(|(k, v)| h.get(k).is_some_and(|hv| subset(v, hv)))
        }
        _ => want == have,
    }
}

fn check(guide: &str, version: IstioVersion) -> Vec<String> {
    check_in(guides(), guide, version)
}

fn check_in(mut fixture: BTreeMap<String, Vec<Entry>>, guide: &str, version: IstioVersion) -> Vec<String> {
    let variant = Variant::for_version(version.clone());
    let plan = plan_text(guide, version);
    let mut missing = Vec::new();
    for e in fixture.remove(guide).expect("guide in fixture") {
        match e {
            Entry::Cmd { cmd } => {
                let (line, export) = with_placeholder(&rename_for(&variant, &cmd));
                let seed = drop_noop_flags(tokens(&line));
                let bound = export.is_none_or(|e| covered(&plan, &tokens(&e)));
                if !covered(&plan, &seed) || !bound {
                    missing.push(cmd);
                }
            }
            Entry::Heredoc { heredoc, body } => match heredoc_body(&plan, &heredoc) {
                None => missing.push(format!("cat <<EOF > {heredoc}")),
                Some(have) => {
                    let want: serde_json::Value = serde_saphyr::from_str(&body).expect("seed yaml");
                    let have: serde_json::Value = serde_saphyr::from_str(&have).expect("plan yaml");
                    if !subset(&want, &have) {
                        missing.push(format!(
                            "{heredoc}: plan writes\n{have:#}\nwhich lacks part of\n{want:#}"
                        ));
                    }
                }
            },
        }
    }
    missing
}

#[test]
fn every_seed_command_is_in_the_plan_for_the_guides_istio_generation() {
    for guide in ["primary-remote", "multi-primary"] {
        let missing = check(guide, IstioVersion::new(1, 18, 0));
        assert!(
            missing.is_empty(),
            "{guide}: plan does not cover:\n{}",
            missing.join("\n")
        );
    }
}

#[test]
fn every_seed_command_maps_to_the_current_variant_through_documented_renames() {
    for guide in ["primary-remote", "multi-primary"] {
        let missing = check(guide, IstioVersion::new(1, 30, 3));
        assert!(
            missing.is_empty(),
            "{guide}: plan does not cover:\n{}",
            missing.join("\n")
        );
    }
}

#[test]
fn every_command_of_the_current_different_networks_guides_is_in_the_plan() {
    for guide in ["multi-primary-multi-network", "primary-remote-multi-network"] {
        let missing = check_in(
            guides_in("current-guides.yaml"),
            guide,
            IstioVersion::new(1, 30, 3),
        );
        assert!(
            missing.is_empty(),
            "{guide}: plan does not cover:\n{}",
            missing.join("\n")
        );
    }
}

#[test]
fn the_check_fails_when_a_command_is_missing() {
    let plan = plan_text("multi-primary", IstioVersion::new(1, 18, 0));
    let without = plan
        .lines()
        .filter(|l| !l.contains("create-remote-secret"))
        .collect::<Vec<_>>()
        .join("\n");
    let seed = tokens(
        "istioctl x create-remote-secret --context=\"${CTX_CLUSTER1}\" --name=cluster1 | kubectl apply -f - --context=\"${CTX_CLUSTER2}\"",
    );
    assert!(covered(&plan, &seed));
    assert!(!covered(&without, &seed));
}
