//! `top` and `diff` ask the browser for the run, base, profile, pod and node count the user
//! chose (by default the newest run with files and the one before it), and print its
//! answer as pprof does. The browser here is a stand-in that records what was asked; the
//! numbers themselves are compared with `go tool pprof` where the browser computes them.

mod common;

use std::sync::{Arc, Mutex};

use axum::{Json, Router, extract::State, http::Uri, routing::get};
use biometrics_crds::v1alpha1::{RunResult, TopFunction};
use biometrics_ui::api::{CaptureDetail, CaptureRow, CompareRow, CompareView, RunRow, TopView};
use common::{NS, run, serve};

type Asked = Arc<Mutex<Vec<String>>>;

fn detail() -> CaptureDetail {
    let row = |id: &str, pods: &[&str], result| RunRow {
        id: id.into(),
        trigger: None,
        start_time: None,
        result: Some(result),
        pods_with_files: pods.iter().map(|p| (*p).to_owned()).collect(),
    };
    CaptureDetail {
        capture: CaptureRow {
            namespace: NS.into(),
            name: "checkout".into(),
            phase: None,
            selected_pods: None,
            last_run: Some("m3".into()),
            last_run_time: None,
            next_run_time: None,
            threshold_level: None,
            profiles: vec!["cpu".into()],
        },
        runs: vec![
            row("m3", &[], RunResult::Running),
            row("s2", &["web-0"], RunResult::Succeeded),
            row("g1", &[], RunResult::Failed),
            row("s0", &["web-0"], RunResult::Succeeded),
        ],
        rollouts: vec![],
        warnings: vec!["agent web-1: connection refused".into()],
    }
}

fn function(name: &str, flat: i64, cum: i64) -> TopFunction {
    TopFunction { function: name.into(), flat, flat_percent: 0.0, cum, cum_percent: 0.0 }
}

fn stand_in() -> (String, tokio::runtime::Runtime, Asked) {
    let asked = Asked::default();
    let record = |asked: &Asked, uri: &Uri| asked.lock().unwrap().push(uri.to_string());
    let router = Router::new()
        .route("/api/v1/namespaces/shop/captures/checkout", get(|| async { Json(detail()) }))
        .route(
            "/api/v1/namespaces/shop/captures/checkout/runs/{run}/top",
            get(move |State(asked): State<Asked>, uri: Uri| async move {
                record(&asked, &uri);
                Json(TopView {
                    run: "s2".into(),
                    profile: "cpu".into(),
                    pods: vec!["web-0".into()],
                    sample_type: "cpu/nanoseconds".into(),
                    total: 1_000_000_000,
                    duration_seconds: Some(1.01),
                    functions: vec![
                        function("main.burnCPU", 980_000_000, 990_000_000),
                        function("main.main", 0, 990_000_000),
                    ],
                })
            }),
        )
        .route(
            "/api/v1/namespaces/shop/captures/checkout/compare",
            get(move |State(asked): State<Asked>, uri: Uri| async move {
                record(&asked, &uri);
                Json(CompareView {
                    base: "s0".into(),
                    base_pod: None,
                    pod: None,
                    run: "s2".into(),
                    profile: "cpu".into(),
                    sample_type: "cpu/nanoseconds".into(),
                    base_total: 1_000_000_000,
                    total: 1_000_000_000,
                    diff_total: 0,
                    base_seconds: Some(1.0),
                    seconds: Some(1.0),
                    rows: vec![CompareRow {
                        function: "main.burnCPU".into(),
                        base_flat: 900_000_000,
                        flat: 980_000_000,
                        flat_delta: 80_000_000,
                        flat_delta_percent: 0.0,
                        base_cum: 950_000_000,
                        cum: 990_000_000,
                        cum_delta: 40_000_000,
                        cum_delta_percent: 0.0,
                        flat_delta_per_second: Some(80_000_000.0),
                    }],
                })
            }),
        )
        .with_state(asked.clone());
    let (ui, rt) = serve(router);
    (ui, rt, asked)
}

#[test]
fn top_asks_for_the_newest_run_with_files_and_prints_as_pprof() {
    let (ui, _rt, asked) = stand_in();
    let out = run(&["top", "pcap/checkout", "-n", NS, "--ui", &ui]);
    out.assert_ok();
    assert_eq!(
        asked.lock().unwrap().as_slice(),
        ["/api/v1/namespaces/shop/captures/checkout/runs/s2/top?profile=cpu&nodecount=20"],
        "m3 is still capturing"
    );
    assert_eq!(
        out.stdout,
        "\
Type: cpu
Duration: 1.01s, Total samples = 1000ms (99.01%)
Showing nodes accounting for 980ms, 98.00% of 1000ms total
      flat  flat%   sum%        cum   cum%
     980ms 98.00% 98.00%      990ms 99.00%  main.burnCPU
         0     0% 98.00%      990ms 99.00%  main.main
"
    );
    assert_eq!(
        out.stderr,
        "warning: agent web-1: connection refused\nRun s2 of ProfileCapture shop/checkout, cpu profile of web-0\n"
    );

    asked.lock().unwrap().clear();
    let out = run(&[
        "top",
        "checkout",
        "-n",
        NS,
        "--ui",
        &ui,
        "--run",
        "s0",
        "--pod",
        "web-0",
        "--profile",
        "heap",
        "--nodecount",
        "5",
        "--unit",
        "ns",
    ]);
    out.assert_ok();
    assert_eq!(
        asked.lock().unwrap().as_slice(),
        ["/api/v1/namespaces/shop/captures/checkout/runs/s0/top?profile=heap&pod=web-0&nodecount=5"]
    );
    // Wider than pprof's ten columns, as pprof prints it: unpadded.
    assert!(out.stdout.contains("\n980000000ns 98.00% 98.00% 990000000ns 99.00%  main.burnCPU\n"), "{}", out.stdout);
}

#[test]
fn diff_compares_with_the_run_before_by_default() {
    let (ui, _rt, asked) = stand_in();
    let out = run(&["diff", "pcap/checkout", "-n", NS, "--ui", &ui]);
    out.assert_ok();
    assert_eq!(
        asked.lock().unwrap().as_slice(),
        ["/api/v1/namespaces/shop/captures/checkout/compare?base=s0&run=s2&profile=cpu&nodecount=20"],
        "s2 is the newest run with files; g1 before it has none"
    );
    assert_eq!(
        out.stdout,
        "\
Type: cpu
Base: s0, total 1000ms over 1s
Run:  s2, total 1000ms over 1s
ΔFLAT   ΔCUM    ΔFLAT/S   BASE FLAT   FLAT    BASE CUM   CUM     FUNCTION
+80ms   +40ms   +80ms/s   900ms       980ms   950ms      990ms   main.burnCPU
"
    );
    asked.lock().unwrap().clear();
    run(&[
        "diff",
        "pcap/checkout",
        "-n",
        NS,
        "--ui",
        &ui,
        "--base",
        "g1",
        "--run",
        "m3",
        "--pod",
        "web-0",
        "--nodecount",
        "0",
    ])
    .assert_ok();
    assert_eq!(
        asked.lock().unwrap().as_slice(),
        ["/api/v1/namespaces/shop/captures/checkout/compare?base=g1&run=m3&profile=cpu&pod=web-0"]
    );
}
