//! Tables as kubectl prints them (upper-case headers, columns three spaces apart, `<none>`
//! for what is not known): a capture's runs, and the comparison of two runs.

use std::fmt::Write;

use biometrics_ui::api::{CaptureDetail, CompareView};

use crate::pprof::{output_unit, scale, scaled_label};

/// Columns padded to their widest cell, three spaces apart, the last one unpadded.
fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}   ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn or_none(value: Option<String>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or_else(|| "<none>".to_owned())
}

/// `kubectl biometrics runs`: one line per run, newest first.
pub fn runs(detail: &CaptureDetail) -> String {
    let mut rows = vec![["RUN", "TRIGGER", "STARTED", "RESULT", "PODS WITH FILES"].map(String::from).to_vec()];
    for run in &detail.runs {
        rows.push(vec![
            run.id.clone(),
            or_none(run.trigger.map(|t| format!("{t:?}"))),
            or_none(run.start_time.clone()),
            or_none(run.result.map(|r| format!("{r:?}"))),
            or_none(Some(run.pods_with_files.join(","))),
        ]);
    }
    columns(&rows)
}

/// A delta with its sign, so that growth and shrinkage read apart.
fn signed(label: String) -> String {
    if label == "0" || label.starts_with('-') { label } else { format!("+{label}") }
}

/// `kubectl biometrics diff`: the two runs' totals, then per function the change in flat and
/// cumulative value — the numbers `go tool pprof -top -base BASE RUN` shows as flat and cum —
/// the flat change per second of capture, and both sides.
pub fn compare(view: &CompareView, requested_unit: &str) -> String {
    let (kind, sample_unit) = view.sample_type.split_once('/').unwrap_or((&view.sample_type, "count"));
    let nodes: Vec<(i64, i64)> = view.rows.iter().map(|r| (r.flat_delta, r.cum_delta)).collect();
    let unit = output_unit(requested_unit, &nodes, view.base_total.max(view.total), sample_unit);
    let value = |v: i64| scaled_label(v, sample_unit, &unit);
    let seconds =
        |s: Option<f64>| s.map(|s| format!(" over {}", scaled_label((s * 1e9).round() as i64, "nanoseconds", "auto")));
    let per_second = |v: Option<f64>| match v {
        Some(v) => {
            // Per second, in the table's unit (a value per second is a rate, so a time
            // unit stays a share of one CPU: 250ms/s is a quarter of a core).
            let (scaled, name) = scale(v.round() as i64, sample_unit, &unit);
            let printed = format!("{scaled:.2}");
            let printed = printed.strip_suffix(".00").unwrap_or(&printed).to_owned();
            if printed == "0" || printed == "-0" { "0".to_owned() } else { signed(format!("{printed}{name}/s")) }
        }
        None => "<none>".to_owned(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "Type: {kind}");
    let _ = writeln!(
        out,
        "Base: {}, total {}{}",
        view.base,
        value(view.base_total),
        seconds(view.base_seconds).unwrap_or_default()
    );
    let _ =
        writeln!(out, "Run:  {}, total {}{}", view.run, value(view.total), seconds(view.seconds).unwrap_or_default());
    let mut rows = vec![
        ["ΔFLAT", "ΔCUM", "ΔFLAT/S", "BASE FLAT", "FLAT", "BASE CUM", "CUM", "FUNCTION"].map(String::from).to_vec(),
    ];
    for r in &view.rows {
        rows.push(vec![
            signed(value(r.flat_delta)),
            signed(value(r.cum_delta)),
            per_second(r.flat_delta_per_second),
            value(r.base_flat),
            value(r.flat),
            value(r.base_cum),
            value(r.cum),
            r.function.clone(),
        ]);
    }
    out.push_str(&columns(&rows));
    out
}

#[cfg(test)]
mod tests {
    use biometrics_crds::v1alpha1::{RunResult, RunTrigger};
    use biometrics_ui::api::{CaptureRow, CompareRow, RunRow};

    use super::*;

    #[test]
    fn runs_as_kubectl_prints_a_table() {
        let detail = CaptureDetail {
            capture: CaptureRow {
                namespace: "shop".into(),
                name: "checkout".into(),
                phase: None,
                selected_pods: None,
                last_run: None,
                last_run_time: None,
                next_run_time: None,
                threshold_level: None,
                profiles: vec![],
            },
            runs: vec![
                RunRow {
                    id: "m1a2b3".into(),
                    trigger: Some(RunTrigger::Manual),
                    start_time: Some("2026-11-29T10:00:00Z".into()),
                    result: Some(RunResult::PartiallySucceeded),
                    pods_with_files: vec!["web-0".into(), "web-1".into()],
                },
                RunRow {
                    id: "r1".into(),
                    trigger: None,
                    start_time: Some("2026-11-29T09:00:00Z".into()),
                    result: None,
                    pods_with_files: vec![],
                },
            ],
            rollouts: vec![],
            warnings: vec![],
        };
        assert_eq!(
            runs(&detail),
            "\
RUN      TRIGGER   STARTED                RESULT               PODS WITH FILES
m1a2b3   Manual    2026-11-29T10:00:00Z   PartiallySucceeded   web-0,web-1
r1       <none>    2026-11-29T09:00:00Z   <none>               <none>
"
        );
    }

    #[test]
    fn a_comparison_with_signs_and_rates() {
        let view = CompareView {
            base: "r1".into(),
            base_pod: None,
            pod: None,
            run: "r2".into(),
            profile: "cpu".into(),
            sample_type: "cpu/nanoseconds".into(),
            base_total: 1_000_000_000,
            total: 2_000_000_000,
            diff_total: 0,
            base_seconds: Some(1.0),
            seconds: Some(2.0),
            rows: vec![
                CompareRow {
                    function: "main.burnCPU".into(),
                    base_flat: 500_000_000,
                    flat: 1_500_000_000,
                    flat_delta: 1_000_000_000,
                    flat_delta_percent: 0.0,
                    base_cum: 600_000_000,
                    cum: 1_600_000_000,
                    cum_delta: 1_000_000_000,
                    cum_delta_percent: 0.0,
                    flat_delta_per_second: Some(250_000_000.0),
                },
                CompareRow {
                    function: "main.idle".into(),
                    base_flat: 50_000_000,
                    flat: 40_000_000,
                    flat_delta: -10_000_000,
                    flat_delta_percent: 0.0,
                    base_cum: 50_000_000,
                    cum: 40_000_000,
                    cum_delta: -10_000_000,
                    cum_delta_percent: 0.0,
                    flat_delta_per_second: None,
                },
            ],
        };
        assert_eq!(
            compare(&view, "minimum"),
            // 100 × the smallest change (10ms) is less than the larger total: seconds, as
            // pprof would choose.
            "\
Type: cpu
Base: r1, total 1s over 1s
Run:  r2, total 2s over 2s
ΔFLAT    ΔCUM     ΔFLAT/S    BASE FLAT   FLAT    BASE CUM   CUM     FUNCTION
+1s      +1s      +0.25s/s   0.50s       1.50s   0.60s      1.60s   main.burnCPU
-0.01s   -0.01s   <none>     0.05s       0.04s   0.05s      0.04s   main.idle
"
        );
        assert!(compare(&view, "ms").contains("+1000ms   +1000ms   +250ms/s"), "{}", compare(&view, "ms"));
    }
}
