//! `make bench`: how long the parts that run before and after any cluster take, so a slow loader or reporter
//! shows up as a number rather than a feeling. Plain timing loops (no extra dependency); prints per-iteration
//! medians of 5 rounds.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshconf::mesh::{IstioVersion, Variant};
use meshconf::plan;
use meshconf::provider::{ClusterProvider, KindOptions, KindProvider};
use meshconf::verify::{Answer, Attribution, judge};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(name: &str, iters: u32, mut f: impl FnMut()) {
    let rounds: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed() / iters
        })
        .collect();
    println!("{name:<48} {:>10.1} µs/iter", median(rounds).as_secs_f64() * 1e6);
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("scenarios/primary-remote.yaml");
    bench("load + validate primary-remote.yaml", 200, || {
        black_box(meshconf::scenario::load_file(&path).expect("valid"));
    });
    let s = meshconf::scenario::load_file(&path).expect("valid");
    let kind = KindProvider::new(KindOptions {
        prefix: "meshconf".into(),
        node_image: None,
        istio_version: None,
        run_dir: "/r".into(),
        keep: false,
        images: None,
        subnet: meshconf::provider::DEFAULT_KIND_SUBNET.parse().expect("subnet"),
        cgroup_v1: false,
        fleet: None,
    });
    let variant = Variant::for_version(IstioVersion::new(1, 30, 3));
    bench("plan + render shell (kind)", 500, || {
        black_box(plan::render_shell(&plan::build(&s, &variant, kind.profile(&s))));
    });
    let expect = [("v1", "cluster1"), ("v2", "cluster2")]
        .into_iter()
        .map(|(v, c)| {
            (
                meshconf::scenario::AppVersion::new(v),
                std::collections::BTreeSet::from([meshconf::scenario::ClusterName::new(c)]),
            )
        })
        .collect();
    let attr: Attribution = [
        (
            "hw-v1".to_string(),
            meshconf::scenario::ClusterName::new("cluster1"),
        ),
        (
            "hw-v2".to_string(),
            meshconf::scenario::ClusterName::new("cluster2"),
        ),
    ]
    .into_iter()
    .collect();
    let answers: Vec<Answer> = (0..10_000)
        .map(|i| Answer::Hello {
            version: if i % 2 == 0 { "v1" } else { "v2" }.into(),
            instance: if i % 2 == 0 { "hw-v1" } else { "hw-v2" }.into(),
        })
        .collect();
    bench("judge 10,000 answers (attribution + chi-square)", 50, || {
        black_box(judge(
            &meshconf::scenario::ClusterName::new("cluster1"),
            &answers,
            &expect,
            &std::collections::BTreeMap::new(),
            &attr,
            10_000,
        ));
    });
    let out: String = answers
        .iter()
        .take(1000)
        .map(|_| "Hello version: v1, instance: helloworld-v1-86f77cd7bd-cpxhv\n")
        .collect();
    bench("parse 1,000 curl answers", 200, || {
        black_box(meshconf::verify::parse_answers(&out));
    });
}
