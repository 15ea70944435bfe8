//! The browser's top and compare answers against `go tool pprof` on the same files: real
//! CPU profiles of the Go target, one pod's, a run merged over its pods, and two runs or two
//! pods compared, where the test made a function hotter in the later run.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use biometrics_test_support::{
    GoTarget, PprofRow, free_port, go_pprof_files, http_request, parse_pprof_top, tempdir::Dir as TempDir,
};
use biometrics_ui::api::{CompareView, TopView};
use bytes::Bytes;
use common::{LOCALHOST, cpu_profile, serve};
use serde_json::json;

fn volume(runs: &[(&str, Vec<(&str, Bytes)>)]) -> common::Volume {
    common::volume(json!({"phase": "Succeeded"}), runs)
}

fn get<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> T {
    let (status, body) = http_request(addr, "GET", path, &[], b"");
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// pprof prints percentages rounded (two decimals, or two significant digits under 1%).
fn same_percent(ours: f64, printed: f64) -> bool {
    (ours.abs() - printed).abs() <= 0.005 + printed * 0.05
}

fn assert_top_equals(view: &TopView, pprof: &str) {
    let (total, rows) = parse_pprof_top(pprof, "ns");
    assert_eq!(view.total, total, "{pprof}");
    let ours: Vec<(&str, i64, i64)> = view.functions.iter().map(|f| (f.function.as_str(), f.flat, f.cum)).collect();
    let theirs: Vec<(&str, i64, i64)> = rows.iter().map(|r| (r.function.as_str(), r.flat, r.cum)).collect();
    assert_eq!(ours, theirs, "{pprof}");
    for (f, r) in view.functions.iter().zip(&rows) {
        assert!(
            same_percent(f.flat_percent, r.flat_percent),
            "{} flat% {} vs {}",
            f.function,
            f.flat_percent,
            r.flat_percent
        );
        assert!(
            same_percent(f.cum_percent, r.cum_percent),
            "{} cum% {} vs {}",
            f.function,
            f.cum_percent,
            r.cum_percent
        );
    }
}

fn assert_compare_equals(view: &CompareView, pprof: &str) {
    let (total, rows): (i64, Vec<PprofRow>) = parse_pprof_top(pprof, "ns");
    assert_eq!(view.diff_total, total, "{pprof}");
    let ours: Vec<(&str, i64, i64)> =
        view.rows.iter().map(|r| (r.function.as_str(), r.flat_delta, r.cum_delta)).collect();
    let theirs: Vec<(&str, i64, i64)> = rows.iter().map(|r| (r.function.as_str(), r.flat, r.cum)).collect();
    assert_eq!(ours, theirs, "{pprof}");
    for (o, r) in view.rows.iter().zip(&rows) {
        assert!(
            same_percent(o.flat_delta_percent, r.flat_percent),
            "{} flat% {} vs {}",
            o.function,
            o.flat_delta_percent,
            r.flat_percent
        );
        assert!(
            same_percent(o.cum_delta_percent, r.cum_percent),
            "{} cum% {} vs {}",
            o.function,
            o.cum_delta_percent,
            r.cum_percent
        );
    }
}

#[test]
fn top_and_compare_equal_go_tool_pprof_on_the_same_files() {
    let target = GoTarget::start(SocketAddr::new(LOCALHOST, free_port(LOCALHOST)));
    // Run r1: two pods (two profiles of the target); run r2: one pod, while main.burnHot
    // burns beside the usual workload.
    let (r1_web0, r1_web1) = (cpu_profile(&target), cpu_profile(&target));
    target.get("/hot?ms=1500");
    let r2_web0 = cpu_profile(&target);
    let dir = TempDir::new("pprof-numbers");
    let (f10, f11, f20) = (
        write(dir.path(), "r1-web-0.pb.gz", &r1_web0),
        write(dir.path(), "r1-web-1.pb.gz", &r1_web1),
        write(dir.path(), "r2-web-0.pb.gz", &r2_web0),
    );
    let (addr, _runtime) =
        serve(volume(&[("r1", vec![("web-0", r1_web0), ("web-1", r1_web1)]), ("r2", vec![("web-0", r2_web0)])]));
    let api = "/api/v1/namespaces/shop/captures/checkout";
    let top_unit = ["-top", "-unit=ns"];

    // One pod's profile.
    let one: TopView = get(addr, &format!("{api}/runs/r1/top?profile=cpu&pod=web-0"));
    assert_eq!(one.pods, ["web-0"]);
    assert_eq!(one.sample_type, "cpu/nanoseconds");
    assert_top_equals(&one, &go_pprof_files(&top_unit, &[&f10]));
    assert!(one.duration_seconds.is_some_and(|s| (0.9..2.0).contains(&s)), "{:?}", one.duration_seconds);
    let twenty: TopView = get(addr, &format!("{api}/runs/r1/top?profile=cpu&pod=web-0&nodecount=3"));
    assert_eq!(twenty.functions, one.functions[..3.min(one.functions.len())]);

    // The run merged over its pods: durations add.
    let merged: TopView = get(addr, &format!("{api}/runs/r1/top?profile=cpu"));
    assert_eq!(merged.pods, ["web-0", "web-1"]);
    assert_top_equals(&merged, &go_pprof_files(&top_unit, &[&f10, &f11]));
    assert!(merged.duration_seconds.unwrap() > one.duration_seconds.unwrap() * 1.5);

    // The last two runs (the default), merged over their pods, against -base of the base
    // run's files merged by pprof itself (go 1.19's pprof keeps only one -base flag).
    let runs: CompareView = get(addr, &format!("{api}/compare?profile=cpu"));
    assert_eq!((runs.base.as_str(), runs.run.as_str()), ("r1", "r2"));
    let merged_base = dir.path().join("r1.pb.gz");
    let proto = std::process::Command::new("go")
        .args(["tool", "pprof", "-proto", "-output"])
        .args([&merged_base, &f10, &f11])
        .env("GOCACHE", biometrics_test_support::repo_root().join("target/go/cache"))
        .output()
        .unwrap();
    assert!(proto.status.success(), "{}", String::from_utf8_lossy(&proto.stderr));
    let base_args = ["-top", "-unit=ns", "-base", merged_base.to_str().unwrap()];
    assert_compare_equals(&runs, &go_pprof_files(&base_args, &[&f20]));
    let hot = runs.rows.iter().find(|r| r.function == "main.burnHot").expect("main.burnHot in the comparison");
    // It hashes: the time is sha256's own (flat), under main.burnHot (cum).
    assert!(hot.cum_delta > 0 && hot.base_cum == 0 && hot.cum == hot.cum_delta, "{hot:?}");
    assert!(hot.flat_delta_per_second.is_some(), "both runs say how long they sampled: {hot:?}");

    // One pod of each run.
    let pods: CompareView = get(addr, &format!("{api}/compare?profile=cpu&base=r1&run=r2&pod=web-0"));
    let base_args = ["-top", "-unit=ns", "-base", f10.to_str().unwrap()];
    assert_compare_equals(&pods, &go_pprof_files(&base_args, &[&f20]));
    // Two pods of one run.
    let two: CompareView = get(addr, &format!("{api}/compare?profile=cpu&run=r1&pod=web-0&basePod=web-1"));
    assert_eq!((two.base.as_str(), two.base_pod.as_deref(), two.pod.as_deref()), ("r1", Some("web-1"), Some("web-0")));
    let base_args = ["-top", "-unit=ns", "-base", f11.to_str().unwrap()];
    assert_compare_equals(&two, &go_pprof_files(&base_args, &[&f10]));
}

#[test]
fn what_cannot_be_shown_is_a_clear_error() {
    let (addr, _runtime) = serve(volume(&[("r1", vec![("web-0", Bytes::from_static(b"not a profile"))])]));
    let api = "/api/v1/namespaces/shop/captures/checkout";
    let error = |path: &str, want: u16| {
        let (status, body) = http_request(addr, "GET", path, &[], b"");
        assert_eq!(status, want, "{path}");
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["message"].as_str().unwrap().to_owned()
    };
    let m = error(&format!("{api}/compare?profile=cpu"), 404);
    assert!(m.contains("no run before \"r1\" has a cpu profile"), "{m}");
    let m = error(&format!("{api}/runs/r1/top?profile=heap"), 404);
    assert!(m.contains("has a heap profile"), "{m}");
    let m = error(&format!("{api}/runs/r1/top?profile=trace"), 400);
    assert!(m.contains("not a profile"), "{m}");
    let m = error(&format!("{api}/runs/r1/top?profile=cpu&pod=web-9"), 404);
    assert!(m.contains("pod web-9"), "{m}");
    let m = error(&format!("{api}/runs/r1/top?profile=cpu"), 422);
    assert!(m.contains("cpu.pb.gz of pod web-0 in run r1"), "{m}");
    let m = error("/api/v1/namespaces/shop/captures/nope/runs/r1/top", 404);
    assert!(m.contains("no ProfileCapture shop/nope"), "{m}");
}
