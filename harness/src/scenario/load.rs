//! Reading scenario files: bounded, panic-free parsing with serde-saphyr, then validation.

use std::path::Path;

use ipnet::Ipv4Net;
use serde_saphyr::options::{AliasLimits, Options};

use super::error::{ScenarioError, ScenarioErrors};
use super::model::{Scenario, Subnets};
use super::raw::{RawKindConfig, RawScenario, S};
use super::validate::{self, KindConfigProblem, KindConfigs, kind_config_path};

/// Scenario files larger than this are rejected before parsing.
pub const MAX_SCENARIO_BYTES: u64 = 256 * 1024;

/// Parser options shared by scenario and kind-config files: hostile input (alias bombs, deep nesting) is cut off.
pub(crate) fn parser_options() -> Options {
    let mut o = Options::default();
    let mut limits = AliasLimits::default();
    limits.max_total_replayed_events = 10_000;
    limits.max_replay_stack_depth = 32;
    limits.max_alias_expansions_per_anchor = 64;
    o.alias_limits = limits;
    o.with_snippet = false;
    o
}

/// Reads, parses and validates a scenario file. Relative paths inside it resolve against its directory.
pub fn load_file(path: &Path) -> Result<Scenario, ScenarioErrors> {
    let meta = std::fs::metadata(path).map_err(|e| {
        ScenarioError::whole_file(
            path,
            format!("cannot read scenario: {e}"),
            Some("check the path".into()),
        )
    })?;
    if meta.len() > MAX_SCENARIO_BYTES {
        return Err(ScenarioError::whole_file(
            path,
            format!(
                "scenario is {} bytes, more than the {MAX_SCENARIO_BYTES}-byte limit",
                meta.len()
            ),
            Some("a scenario is a short YAML file; is this the right file?".into()),
        )
        .into());
    }
    let bytes = std::fs::read(path).map_err(|e| {
        ScenarioError::whole_file(
            path,
            format!("cannot read scenario: {e}"),
            Some("check the path".into()),
        )
    })?;
    let text = decode(path, &bytes)?;
    load_str(path, &text)
}

#[expect(
    clippy::result_large_err,
    reason = "errors are rare and carry the source for miette"
)]
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<String, ScenarioError> {
    if bytes.contains(&0) {
        return Err(ScenarioError::whole_file(
            path,
            "file contains NUL bytes: this is not a YAML text file",
            Some("pass a scenario YAML file".into()),
        ));
    }
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        ScenarioError::whole_file(
            path,
            format!(
                "file is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
            Some("save the scenario as UTF-8".into()),
        )
    })
}

/// Parses and validates scenario text; `path` names it in messages and anchors relative paths.
pub fn load_str(path: &Path, text: &str) -> Result<Scenario, ScenarioErrors> {
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(ScenarioError::whole_file(
            path,
            "scenario file is empty",
            Some("a scenario needs at least `name`, `mesh`, `clusters` and `steps`".into()),
        )
        .into());
    }
    let raw: RawScenario = serde_saphyr::from_str_with_options(text, parser_options()).map_err(|e| {
        let loc = e.location();
        let msg = first_line(&e.to_string());
        let hint = hint_for_parse_error(&msg);
        match loc {
            Some(l) => ScenarioError::at_location(path, text, &l, msg, hint),
            None => ScenarioError::at(path, text, 1, 1, msg, hint),
        }
    })?;
    // All file I/O happens here: every kind config the scenario names is read before validation, which is pure.
    let mut kind_configs: KindConfigs = raw
        .clusters
        .iter()
        .map(|c| {
            let p = kind_config_path(path, &c.kind_config.value);
            let read = read_kind_subnets(&p);
            (c.kind_config.value.clone(), (p, read))
        })
        .collect();
    validate::validate(path, text, raw, &mut kind_configs)
}

#[expect(
    clippy::result_large_err,
    reason = "errors are rare and carry the source for miette"
)]
fn read_kind_subnets(path: &Path) -> Result<Subnets, KindConfigProblem> {
    let bytes = std::fs::read(path).map_err(|e| {
        KindConfigProblem::AtScenario(
            format!("cannot read kind config {}: {e}", path.display()),
            "kind-config is relative to the scenario file's directory".into(),
        )
    })?;
    let text = decode(path, &bytes).map_err(KindConfigProblem::InFile)?;
    let raw: RawKindConfig = serde_saphyr::from_str_with_options(&text, parser_options()).map_err(|e| {
        let msg = e.to_string().lines().next().unwrap_or_default().to_string();
        KindConfigProblem::InFile(match e.location() {
            Some(l) => ScenarioError::at_location(path, &text, &l, msg, None),
            None => ScenarioError::at(path, &text, 1, 1, msg, None),
        })
    })?;
    let at1 = |msg: String, hint: &str| {
        KindConfigProblem::InFile(ScenarioError::at(path, &text, 1, 1, msg, Some(hint.to_string())))
    };
    if raw.kind.as_deref() != Some("Cluster") || raw.api_version.as_deref() != Some("kind.x-k8s.io/v1alpha4")
    {
        return Err(at1(
            "not a kind Cluster config".into(),
            "expected apiVersion: kind.x-k8s.io/v1alpha4, kind: Cluster",
        ));
    }
    let hint = "set networking.podSubnet and networking.serviceSubnet: kind's defaults are the same for every \
                cluster, and flat multicluster routing needs distinct ones";
    let net = raw
        .networking
        .ok_or_else(|| at1("kind config has no networking section".into(), hint))?;
    let parse = |v: Option<S<String>>, what: &str| -> Result<Ipv4Net, KindConfigProblem> {
        let v = v.ok_or_else(|| at1(format!("kind config lacks networking.{what}"), hint))?;
        v.value.parse::<Ipv4Net>().map_err(|e| {
            KindConfigProblem::InFile(ScenarioError::at_location(
                path,
                &text,
                &v.referenced,
                format!("networking.{what} '{}' is not an IPv4 CIDR: {e}", v.value),
                Some("e.g. 10.10.0.0/16".into()),
            ))
        })
    };
    Ok(Subnets {
        pods: parse(net.pod_subnet, "podSubnet")?,
        services: parse(net.service_subnet, "serviceSubnet")?,
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

fn hint_for_parse_error(msg: &str) -> Option<String> {
    if msg.contains("unknown field") {
        Some(
            "remove the key or fix its spelling; see the Scenario files section of README.md for the format"
                .into(),
        )
    } else if msg.contains("unknown variant") {
        Some(
            "steps are set-network, install-istio, eastwest-gateway, expose-services, expose-istiod, \
             remote-secret, install-remote, deploy-apps, check-traffic, start-traffic, move-workloads, \
             remove-revision, check-live-traffic"
                .into(),
        )
    } else if msg.contains("missing field") {
        Some("add the missing key".into())
    } else if msg.to_lowercase().contains("alias") || msg.to_lowercase().contains("budget") {
        Some("the file expands beyond the loader's limits; scenarios do not need deep aliases".into())
    } else if msg.contains("duplicate") {
        Some("each key may appear once".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn err(text: &str) -> ScenarioErrors {
        match load_str(&PathBuf::from("t.yaml"), text) {
            Ok(s) => panic!("expected an error, got scenario {}", s.name),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_and_comment_only_files_are_rejected() {
        assert!(err("").to_string().contains("empty"));
        assert!(err("# nothing\n\n").to_string().contains("empty"));
    }

    #[test]
    fn unknown_top_level_key_names_line_and_column() {
        let e = err("name: x\nmesh: {id: m}\nclusters: []\nsteps: []\nbogus: 1\n");
        let first = &e.errors[0];
        assert_eq!(first.line, 5, "{e}");
        assert!(first.message.contains("bogus"), "{e}");
        assert!(first.hint.is_some());
    }

    #[test]
    fn alias_bomb_is_bounded_and_does_not_panic() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let started = std::time::Instant::now();
        let e = err(&s);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(!e.errors.is_empty());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let s = format!("name: {}{}\n", "[".repeat(5000), "]".repeat(5000));
        assert!(!err(&s).errors.is_empty());
    }

    #[test]
    fn binary_garbage_is_rejected() {
        let e = decode(&PathBuf::from("b.yaml"), &[0x89, 0x50, 0x4e, 0x47, 0, 1, 2]).unwrap_err();
        assert!(e.message.contains("NUL"));
        let e = decode(&PathBuf::from("b.yaml"), &[0xff, 0xfe, 0x41]).unwrap_err();
        assert!(e.message.contains("UTF-8"));
    }

    #[test]
    fn wrong_type_is_located() {
        let e = err("name: [1, 2]\nmesh: {id: m}\nclusters: []\nsteps: []\n");
        assert_eq!(e.errors[0].line, 1, "{e}");
    }
}
