//! The project's shell scripts where their logic can go wrong silently: each test runs the real script file
//! (sourced from `tools/`) under bash with a recipe or cache of its own in a temporary directory.

use std::path::PathBuf;
use std::process::Command;

fn tools() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools")
}

/// Runs `script` under `bash -c` with `tools/` as `$TOOLS`; returns (exit code, stdout, stderr).
fn bash(script: &str) -> (i32, String, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("TOOLS", tools())
        .output()
        .expect("bash runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_recipe_whose_build_fails_is_not_counted_as_built_even_if_its_last_command_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = format!(
        r#"set -euo pipefail
source "$TOOLS/lib/recipe.sh"
cd '{d}'
build_broken() {{ false; echo built > out; }}   # a failed `go build` followed by a `cp` that succeeds
start_recipe build_broken '{d}/log'
if wait $!; then touch marker; echo counted-as-built; else echo failed-$?; fi"#,
        d = dir.path().display()
    );
    let (code, out, err) = bash(&script);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "failed-1", "stderr: {err}");
    assert!(!dir.path().join("marker").exists());
    assert!(
        !dir.path().join("out").exists(),
        "the recipe went on past its failure"
    );
}

#[test]
fn build_sh_runs_every_recipe_through_start_recipe() {
    let text = std::fs::read_to_string(tools().join("build.sh")).expect("build.sh");
    assert!(text.contains("source \"$here/lib/recipe.sh\""));
    // A plain command: under `|| exit` the recipes it starts would ignore errexit.
    assert!(text.contains(
        "\nrun_recipes \"$parallel\" build_step \"$dest\" step_started step_built \"${todo[@]}\"\n"
    ));
    let lib = std::fs::read_to_string(tools().join("lib/recipe.sh")).expect("recipe.sh");
    assert!(lib.contains("start_recipe \"$recipe\" \"$logdir/build-$step.log\" \"$step\""));
    assert!(
        !text.contains("( \"build_$step\" )"),
        "a recipe run as a condition ignores errexit"
    );
}

#[test]
fn a_recipe_gets_its_arguments_and_an_extra_istio_build_is_a_step_with_its_own_marker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = format!(
        r#"set -euo pipefail
source "$TOOLS/lib/recipe.sh"
cd '{d}'
build_named() {{ echo "built $1" > out; }}
start_recipe build_named '{d}/log' 1.31-dev
wait $!
cat out"#,
        d = dir.path().display()
    );
    let (code, out, err) = bash(&script);
    assert_eq!((code, out.trim()), (0, "built 1.31-dev"), "{err}");
    // Every build of istio-builds.env becomes a step; its marker hashes its own lines, not another build's.
    let text = std::fs::read_to_string(tools().join("build.sh")).expect("build.sh");
    assert!(text.contains(r#"steps="$steps istio@$b""#));
    assert!(
        text.contains(
            r#"grep "^ISTIO_$(echo "${1#istio@}" | tr 'a-z.-' 'A-Z__')_" "$here/istio-builds.env""#
        )
    );
    let builds = std::fs::read_to_string(tools().join("istio-builds.env")).expect("istio-builds.env");
    assert!(builds.contains("ISTIO_EXTRA_BUILDS=\"1.31-dev\""));
    for k in ["MODULE", "LABEL", "API", "CLIENT_GO", "GCP_ENVOY", "GCP_CONTRIB"] {
        assert!(builds.contains(&format!("ISTIO_1_31_DEV_{k}=")), "{k}");
    }
}

/// What `tools/lib/cache.sh` computes for the given environment: (cache, tools cache).
fn shell_cache(env: &[(&str, &str)]) -> (String, String) {
    let mut cmd = Command::new("env");
    cmd.arg("-i");
    for (k, v) in env {
        cmd.arg(format!("{k}={v}"));
    }
    let out = cmd
        .args([
            "bash",
            "-c",
            "source \"$0\"; echo \"$meshconf_cache\"; echo \"$meshconf_tools_cache\"",
        ])
        .arg(tools().join("lib/cache.sh"))
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut l = text.lines();
    (
        l.next().unwrap_or_default().to_string(),
        l.next().unwrap_or_default().to_string(),
    )
}

#[test]
fn scripts_and_the_harness_agree_on_the_cache_root_in_every_case() {
    let cases: &[&[(&str, &str)]] = &[
        &[("HOME", "/h")],
        &[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")],
        &[("HOME", "/h"), ("XDG_CACHE_HOME", "/x"), ("MESHCONF_CACHE", "/m")],
        // The old build.sh ignored MESHCONF_CACHE and built the tools under ~/.cache: one variable moves all.
        &[("HOME", "/h"), ("MESHCONF_CACHE", "/m")],
        &[
            ("HOME", "/h"),
            ("MESHCONF_CACHE", "/m"),
            ("MESHCONF_TOOLS_CACHE", "/t"),
        ],
    ];
    for env in cases {
        let lookup = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| std::ffi::OsString::from(v))
        };
        let (cache, tools_dir) = shell_cache(env);
        assert_eq!(
            cache,
            meshconf::tools::cache_dir_from(&lookup).display().to_string(),
            "{env:?}"
        );
        assert_eq!(
            tools_dir,
            meshconf::tools::tools_cache_dir_from(&lookup)
                .display()
                .to_string(),
            "{env:?}"
        );
    }
    assert_eq!(
        shell_cache(&[("HOME", "/h"), ("MESHCONF_CACHE", "/m")]).1,
        "/m/tools"
    );
}

#[test]
fn every_script_takes_its_cache_root_from_the_one_library() {
    for f in [
        "build.sh",
        "images.sh",
        "rootfs.sh",
        "engine.sh",
        "readers.sh",
        "prepare.sh",
    ] {
        let text = std::fs::read_to_string(tools().join(f)).expect("script");
        assert!(
            text.contains("source \"$here/lib/cache.sh\""),
            "{f} does not source lib/cache.sh"
        );
        assert!(
            !text.contains("XDG_CACHE_HOME:-"),
            "{f} computes the cache root itself"
        );
    }
}

#[test]
fn a_second_job_waits_for_the_key_the_first_one_is_building() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Job A holds the lock for 1.5 s and writes "a"; job B (started 0.3 s later) must wait, then write "b".
    let script = format!(
        r#"export MESHCONF_CACHE='{d}'
job() {{ source "$TOOLS/lib/cache.sh"; lock_key k1; [ "$1" = a ] && sleep 1.5; echo "$1" >> '{d}/order'; }}
( job a ) & sleep 0.3; ( job b ) 2>'{d}/b.err' & wait
cat '{d}/order'; cat '{d}/b.err'"#,
        d = dir.path().display()
    );
    let (code, out, err) = bash(&script);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["a", "b"], "{out}");
    assert!(
        out.contains("waiting up to 3600s for another job building k1"),
        "{out}"
    );
}

#[test]
fn every_docker_call_of_the_image_factory_reaches_the_cli_under_a_deadline() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // A docker CLI that records its arguments; `sleep` stands for a call that hangs.
    let fake = dir.path().join("docker");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}/calls'\n[ \"$1\" = sleep ] && exec sleep 30\nexit 0\n",
            dir.path().display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let script = format!(
        r#"export PATH='{d}':"$PATH"
source "$TOOLS/lib/docker.sh"
docker info --format x && echo info-ok
start=$(date +%s); DOCKER_TIMEOUT=1 docker sleep; echo "hang-rc=$? after $(( $(date +%s) - start ))s""#,
        d = dir.path().display()
    );
    let (code, out, err) = bash(&script);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("info-ok"), "{out}{err}");
    assert!(
        out.contains("hang-rc=124"),
        "the hanging call was not cut at its deadline: {out}"
    );
    let calls = std::fs::read_to_string(dir.path().join("calls")).expect("the CLI was called");
    assert!(calls.starts_with("info --format x"), "{calls}");
    let images = std::fs::read_to_string(tools().join("images.sh")).expect("images.sh");
    assert!(images.contains("source \"$here/lib/docker.sh\""));
}

/// Runs `run_recipes` of `tools/lib/recipe.sh` with the given recipe definitions and arguments in a temporary
/// directory; returns (exit code, stdout, stderr).
fn run_recipes(dir: &std::path::Path, recipes: &str, args: &str) -> (i32, String, String) {
    bash(&format!(
        r#"set -euo pipefail
source "$TOOLS/lib/recipe.sh"
cd '{d}'
{recipes}
started() {{ echo "started $1"; }}
built() {{ echo "built $1"; }}
run_recipes {args}"#,
        d = dir.display()
    ))
}

#[test]
fn two_recipes_run_at_once_and_each_is_marked_built() {
    let dir = tempfile::tempdir().expect("tempdir");
    // a waits (up to 20 s) for what b makes: one at a time, a would give up and fail.
    let recipes = r#"r() { case "$1" in
  a) for _ in $(seq 200); do [[ -f b.done ]] && exit 0; sleep 0.1; done; exit 7 ;;
  b) touch b.done ;;
  c) true ;;
esac; }"#;
    let (code, out, err) = run_recipes(
        dir.path(),
        recipes,
        &format!("2 r '{}' started built a b c", dir.path().display()),
    );
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["started a", "started b"], "{out}");
    for s in ["built a", "built b", "built c"] {
        assert!(lines.contains(&s), "{s} missing: {out}");
    }
}

#[test]
fn after_a_failure_no_step_starts_the_running_one_ends_and_the_failure_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    // a fails at once, then goes on past its failure unless errexit holds; b is under way and ends well; c never
    // starts.
    let recipes = r#"r() { case "$1" in
  a) false; touch a.went-on ;;
  b) sleep 1 ;;
  c) touch c.ran ;;
esac; }"#;
    let (code, out, err) = run_recipes(
        dir.path(),
        recipes,
        &format!("2 r '{}' started built a b c", dir.path().display()),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("built b"), "{out}");
    assert!(!out.contains("built a") && !out.contains("started c"), "{out}");
    assert!(
        err.contains("building a failed (exit 1)") && err.contains("failed: a"),
        "{err}"
    );
    assert!(
        !dir.path().join("a.went-on").exists(),
        "the recipe went on past its failure"
    );
    assert!(!dir.path().join("c.ran").exists());
}

#[test]
fn a_recipe_past_its_deadline_is_stopped_with_what_it_started_and_fails_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `sleep` stands for a hung `go build`: a child of the recipe that must end with it.
    let recipes = r#"r() { sleep 30 & echo $! > sleep.pid; wait; }"#;
    let started = std::time::Instant::now();
    let (code, out, err) = run_recipes(
        dir.path(),
        &format!("export MESHCONF_GO_STEP_DEADLINE=1\n{recipes}"),
        &format!("1 r '{}' started built hung", dir.path().display()),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "waited for the hung recipe"
    );
    assert!(err.contains("hung did not finish within 1s"), "{err}");
    assert!(err.contains("failed: hung"), "{err}");
    let pid = std::fs::read_to_string(dir.path().join("sleep.pid")).expect("sleep.pid");
    // Ended: gone, or a zombie its new parent has not reaped yet (state Z in /proc/PID/stat).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let alive = stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| !rest.starts_with('Z'));
    assert!(!alive, "the recipe's child outlived its deadline");
}
