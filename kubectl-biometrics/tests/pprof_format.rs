//! `top` prints pprof's text: given the numbers `go tool pprof -top -unit=<sample unit>`
//! reports for real profiles of the Go target, `render_top` prints what `go tool pprof -top
//! [-unit=U] [-nodecount=N]` prints for them, line for line — from its `Type:` line, less
//! the lines whose facts the browser's answer does not carry (`Time:`, `Dropped … nodes`,
//! `Showing top N nodes out of M`, and the `(inline)` marks).

use std::{io::Read, net::SocketAddr, path::Path};

use biometrics_crds::v1alpha1::TopFunction;
use biometrics_test_support::{GoTarget, free_port, go_pprof, http_request, parse_pprof_top};
use kubectl_biometrics::pprof::{Top, render_top};

/// The profile's `duration_nanos` (field 10), read with a minimal protobuf scan.
fn duration_nanos(file: &Path) -> i64 {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(file).unwrap()).read_to_end(&mut raw).unwrap();
    let varint = |at: &mut usize| -> u64 {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = raw[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    };
    let mut at = 0;
    while at < raw.len() {
        let key = varint(&mut at);
        match key & 7 {
            0 => {
                let value = varint(&mut at);
                if key >> 3 == 10 {
                    return value as i64;
                }
            }
            1 => at += 8,
            2 => at += varint(&mut at) as usize,
            5 => at += 4,
            other => panic!("wire type {other}"),
        }
    }
    0
}

/// pprof's report from its `Type:` line, without what the browser cannot know.
fn comparable(pprof: &str) -> String {
    pprof
        .lines()
        .skip_while(|l| !l.starts_with("Type: "))
        .filter(|l| !(l.starts_with("Time: ") || l.starts_with("Dropped ") || l.starts_with("Showing top ")))
        .map(|l| format!("{}\n", l.trim_end_matches(" (inline)").trim_end_matches(" (partial-inline)")))
        .collect()
}

fn check(file: &Path, sample_type: &str, raw_unit: &str, units: &[&str], extra: &[&str]) {
    let numbers = go_pprof(&[&["-top", &format!("-unit={raw_unit}")], extra].concat(), file);
    let (total, rows) = parse_pprof_top(&numbers, raw_unit);
    assert!(!rows.is_empty(), "{numbers}");
    let functions: Vec<TopFunction> = rows
        .iter()
        .map(|r| TopFunction {
            function: r.function.clone(),
            flat: r.flat,
            flat_percent: r.flat_percent,
            cum: r.cum,
            cum_percent: r.cum_percent,
        })
        .collect();
    let duration = duration_nanos(file);
    let top = Top { sample_type, total, duration_nanos: Some(duration), functions: &functions };
    for unit in units {
        let pprof = go_pprof(&[&["-top", &format!("-unit={unit}")], extra].concat(), file);
        assert_eq!(render_top(&top, unit), comparable(&pprof), "-unit={unit} {extra:?}\n{pprof}");
    }
}

#[test]
fn top_reads_as_pprof_for_real_profiles() {
    let target =
        GoTarget::start(SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1".parse().unwrap())));
    let dir = tempfile::tempdir().unwrap();
    let take = |path: &str, name: &str| {
        let (status, body) = http_request(target.addr, "GET", path, &[], b"");
        assert_eq!(status, 200);
        let file = dir.path().join(name);
        std::fs::write(&file, body).unwrap();
        file
    };
    let cpu = take("/debug/pprof/profile?seconds=1", "cpu.pb.gz");
    let heap = take("/debug/pprof/heap", "heap.pb.gz");
    check(&cpu, "cpu/nanoseconds", "ns", &["minimum", "ns", "us", "ms", "s"], &[]);
    check(&cpu, "cpu/nanoseconds", "ns", &["minimum", "ms"], &["-nodecount=3"]);
    check(&heap, "inuse_space/bytes", "B", &["minimum", "B", "kB", "MB"], &[]);
    check(&heap, "inuse_space/bytes", "B", &["minimum"], &["-nodecount=2"]);
}
