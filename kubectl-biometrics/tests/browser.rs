//! The real `kubectl-biometrics` against the capture browser's real router (`--ui URL`)
//! over an in-memory backend holding real profiles: the runs table, fetch (every file, its
//! SHA-256 checked, a corrupted download refused, existing files kept), and the one-line
//! errors.

mod common;

use common::{NS, PODS, backend, profiles, run, serve_browser, serve_browser_with_token};

#[test]
fn runs_are_a_table_newest_first() {
    let (ui, _rt) = serve_browser(backend(&[]));
    let out = run(&["runs", "pcap/checkout", "-n", NS, "--ui", &ui]);
    out.assert_ok();
    assert_eq!(
        out.stdout,
        "\
RUN   TRIGGER    STARTED                RESULT      PODS WITH FILES
r2    Schedule   2026-11-29T10:00:00Z   Succeeded   web-0,web-1
r1    Schedule   2026-11-29T09:00:00Z   Succeeded   web-0,web-1
"
    );
    assert_eq!(out.stderr, "");
    // The other spellings kubectl users write, and --namespace= before the command.
    let again = run(&["--namespace=shop", "runs", "profilecapture/checkout", "--ui", &ui]);
    assert_eq!(again.stdout, out.stdout);
    let bare = run(&["runs", "checkout", "--ui", &ui, "--namespace", NS]);
    assert_eq!(bare.stdout, out.stdout);

    let fresh = run(&["runs", "pcap/fresh", "-n", NS, "--ui", &ui]);
    fresh.assert_ok();
    assert_eq!((fresh.stdout.as_str(), fresh.stderr.as_str()), ("", "No runs of ProfileCapture shop/fresh yet.\n"));
}

#[test]
fn fetch_writes_every_file_of_the_run_checked() {
    let (ui, _rt) = serve_browser(backend(&[]));
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out_arg = out_dir.to_str().unwrap();
    let out = run(&["fetch", "pcap/checkout", "-n", NS, "--ui", &ui, "-o", out_arg]);
    out.assert_ok();
    let expected = [("web-0", "cpu.pb.gz"), ("web-0", "heap.pb.gz"), ("web-1", "cpu.pb.gz")];
    for (pod, file) in expected {
        let written = std::fs::read(out_dir.join(pod).join(file)).unwrap();
        assert_eq!(&written[..], &profiles().get("r2", pod, file)[..], "{pod}/{file} byte for byte");
        let path = out_dir.join(pod).join(file);
        assert!(out.stdout.contains(&format!("wrote {} (", path.display())), "{}", out.stdout);
    }
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    assert_eq!(out.stderr, "Run r2 of ProfileCapture shop/checkout: 3 files\n", "the newest run by default");

    // Again: nothing to download.
    let again = run(&["fetch", "pcap/checkout", "-n", NS, "--ui", &ui, "-o", out_arg]);
    again.assert_ok();
    assert_eq!(again.stdout.lines().filter(|l| l.starts_with("unchanged ")).count(), 3, "{}", again.stdout);

    // A file changed locally is kept unless --force.
    let cpu = out_dir.join("web-1/cpu.pb.gz");
    std::fs::write(&cpu, b"my notes").unwrap();
    let refused = run(&["fetch", "pcap/checkout", "-n", NS, "--ui", &ui, "-o", out_arg]);
    refused.assert_last_error(&format!(
        "{} exists and differs from the run's file; not overwritten (pass --force)",
        cpu.display()
    ));
    assert_eq!(std::fs::read(&cpu).unwrap(), b"my notes");
    let forced = run(&["fetch", "pcap/checkout", "-n", NS, "--ui", &ui, "-o", out_arg, "--force"]);
    forced.assert_ok();
    assert_eq!(&std::fs::read(&cpu).unwrap()[..], &profiles().get("r2", "web-1", "cpu.pb.gz")[..]);

    // An older run by name.
    let r1 = run(&["fetch", "pcap/checkout", "-n", NS, "--ui", &ui, "-o", out_arg, "--run", "r1", "--force"]);
    r1.assert_ok();
    for pod in PODS {
        assert_eq!(
            &std::fs::read(out_dir.join(pod).join("cpu.pb.gz")).unwrap()[..],
            &profiles().get("r1", pod, "cpu.pb.gz")[..]
        );
    }
}

#[test]
fn a_corrupted_download_is_refused_and_the_rest_written() {
    let (ui, _rt) = serve_browser(backend(&[("r2", "web-1", "cpu.pb.gz")]));
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["fetch", "pcap/checkout", "-n", NS, "--ui", &ui, "-o", dir.path().to_str().unwrap()]);
    let bad = dir.path().join("web-1/cpu.pb.gz");
    let expected = common::sha256(profiles().get("r2", "web-1", "cpu.pb.gz"));
    let mut served = profiles().get("r2", "web-1", "cpu.pb.gz").to_vec();
    let last = served.len() - 1;
    served[last] ^= 0xff;
    let actual = common::sha256(&served);
    out.assert_last_error(&format!(
        "{}: the download's SHA-256 is {actual}, the listing says {expected}; not written",
        bad.display()
    ));
    assert!(!bad.exists(), "nothing under the file's name");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("web-1")).unwrap().collect();
    assert!(leftovers.is_empty(), "no partial download left: {leftovers:?}");
    assert_eq!(
        &std::fs::read(dir.path().join("web-0/cpu.pb.gz")).unwrap()[..],
        &profiles().get("r2", "web-0", "cpu.pb.gz")[..]
    );
    assert_eq!(out.stdout.lines().count(), 2, "the good files were written: {}", out.stdout);
}

#[test]
fn errors_are_one_line_and_exit_1() {
    let (ui, _rt) = serve_browser(backend(&[]));
    let args = |command: &str, capture: &str| -> Vec<String> {
        let mut args = vec![command.to_owned(), capture.to_owned(), "-n".into(), NS.into(), "--ui".into(), ui.clone()];
        if command == "fetch" {
            args.extend(["-o".into(), "/nonexistent/out".into()]);
        }
        args
    };
    let run_args = |a: Vec<String>| run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    for command in ["runs", "top", "fetch", "diff"] {
        run_args(args(command, "pcap/nope")).assert_error("no ProfileCapture shop/nope");
        run_args(args(command, "pcap/broken"))
            .assert_error("agent unreachable: agent web-0 (10.0.0.7:9477): connection refused");
        run_args(args(command, "pcap/secret")).assert_error(
            "RBAC denied: profilecaptures.biometrics.io \"secret\" is forbidden: User \"dev\" cannot get resource \"profilecaptures\" in the namespace \"shop\"",
        );
        run_args(args(command, "deploy/web"))
            .assert_error("\"deploy/web\" is not a ProfileCapture: write pcap/NAME, profilecapture/NAME or NAME");
    }
    for command in ["top", "fetch", "diff"] {
        run_args(args(command, "pcap/fresh")).assert_error("ProfileCapture shop/fresh has no run yet");
    }
    run(&["top", "pcap/checkout", "-n", NS, "--ui", &ui, "--run", "r9"])
        .assert_error("ProfileCapture shop/checkout has no run \"r9\" (its runs: r2, r1)");
    run(&["diff", "pcap/checkout", "-n", NS, "--ui", &ui, "--run", "r1"])
        .assert_error("ProfileCapture shop/checkout has no run before r1 to compare with (pass --base)");
    run(&["runs", "pcap/checkout", "-n", NS, "--ui", "localhost:1"])
        .assert_error("--ui \"localhost:1\": write http://HOST:PORT or https://HOST");

    // Nothing listens: said so, with the address.
    let closed = format!("http://127.0.0.1:{}", biometrics_test_support::free_port(common::LOCALHOST));
    let out = run(&["runs", "pcap/checkout", "-n", NS, "--ui", &closed]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.starts_with(&format!(
            "error: cannot reach the capture browser at {closed}/api/v1/namespaces/shop/captures/checkout: "
        )) && out.stderr.lines().count() == 1,
        "{out:?}"
    );
}

#[test]
fn a_browser_in_token_mode_gets_the_token_and_says_when_it_is_missing() {
    let (ui, _rt) = serve_browser_with_token(backend(&[]));
    let (open, _open_rt) = serve_browser(backend(&[]));
    let expected = run(&["runs", "pcap/checkout", "-n", NS, "--ui", &open]);
    let with_token = run(&["runs", "pcap/checkout", "-n", NS, "--ui", &ui, "--token", "dev-token"]);
    with_token.assert_ok();
    assert_eq!(with_token.stdout, expected.stdout);
    run(&["runs", "pcap/checkout", "-n", NS, "--ui", &ui]).assert_error(
        "the capture browser wants a bearer token the cluster accepts (it runs in token mode): a bearer token is required: send Authorization: Bearer <token> (e.g. kubectl create token); pass --token (e.g. $(kubectl create token NAME))",
    );
    run(&["runs", "pcap/checkout", "-n", NS, "--ui", &ui, "--token", "stolen"]).assert_error(
        "the capture browser wants a bearer token the cluster accepts (it runs in token mode): the cluster did not accept the bearer token; pass --token (e.g. $(kubectl create token NAME))",
    );
    run(&["runs", "pcap/ledger", "-n", "billing", "--ui", &ui, "--token", "dev-token"]).assert_error(
        "RBAC denied: profilecaptures.biometrics.io is forbidden: User \"dev\" cannot get resource \"profilecaptures\" in API group \"biometrics.io\" in the namespace \"billing\"",
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["top"][..],
        &["fetch", "pcap/x"],
        &["bogus"],
        &["top", "x", "--profile", "gpu"],
        &["capture", "x", "--timeout", "soon"],
    ] {
        let out = run(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{args:?}: {out:?}");
    }
    let help = run(&["--help"]);
    help.assert_ok();
    assert!(help.stdout.contains("Usage: kubectl biometrics [OPTIONS] <COMMAND>"), "{}", help.stdout);
}

#[test]
fn open_prints_the_page_of_the_capture() {
    let (ui, _rt) = serve_browser(backend(&[]));
    let out = run(&["open", "pcap/checkout", "-n", NS, "--ui", &format!("{ui}/")]);
    out.assert_ok();
    assert_eq!(out.stdout, format!("{ui}/captures/shop/checkout\n"));
    let all = run(&["open", "--ui", &ui]);
    all.assert_ok();
    assert_eq!(all.stdout, format!("{ui}/\n"));
    run(&["open", "pcap/nope", "-n", NS, "--ui", &ui]).assert_error("no ProfileCapture shop/nope");
}

/// pprof's report from its `Showing nodes accounting for` line on, less the lines whose facts
/// the browser's answer does not carry (`Dropped … nodes`, `Showing top N nodes out of M`)
/// and the `(inline)` marks.
fn report_lines(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Showing nodes accounting for"))
        .filter(|l| !l.starts_with("Dropped ") && !l.starts_with("Showing top "))
        .map(|l| l.trim_end_matches(" (inline)").to_owned())
        .collect()
}

fn write_profile(dir: &std::path::Path, run: &str, pod: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{run}-{pod}.pb.gz"));
    std::fs::write(&path, profiles().get(run, pod, "cpu.pb.gz")).unwrap();
    path
}

#[test]
fn top_prints_what_go_tool_pprof_top_prints_for_the_same_files() {
    let (ui, _rt) = serve_browser(backend(&[]));
    let dir = tempfile::tempdir().unwrap();
    let (web0, web1) = (write_profile(dir.path(), "r2", "web-0"), write_profile(dir.path(), "r2", "web-1"));
    // One pod's profile, pprof's default unit and the plugin's default 20 lines.
    let one = run(&["top", "pcap/checkout", "-n", NS, "--ui", &ui, "--pod", "web-0"]);
    one.assert_ok();
    let pprof = biometrics_test_support::go_pprof_files(&["-top", "-nodecount=20"], &[&web0]);
    assert_eq!(report_lines(&one.stdout), report_lines(&pprof), "{}\n{pprof}", one.stdout);
    assert!(one.stdout.starts_with("Type: cpu\n"), "{}", one.stdout);
    // The run, merged over its pods, in nanoseconds, every line.
    let merged = run(&["top", "pcap/checkout", "-n", NS, "--ui", &ui, "--unit", "ns", "--nodecount", "1000"]);
    merged.assert_ok();
    let pprof = biometrics_test_support::go_pprof_files(&["-top", "-unit=ns"], &[&web0, &web1]);
    assert_eq!(report_lines(&merged.stdout), report_lines(&pprof), "{}\n{pprof}", merged.stdout);
    assert!(merged.stderr.contains("cpu profile of web-0, web-1"), "{}", merged.stderr);
}

#[test]
fn diff_numbers_are_what_go_tool_pprof_top_base_counts() {
    let (ui, _rt) = serve_browser(backend(&[]));
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (write_profile(dir.path(), "r1", "web-0"), write_profile(dir.path(), "r2", "web-0"));
    let out =
        run(&["diff", "pcap/checkout", "-n", NS, "--ui", &ui, "--pod", "web-0", "--unit", "ns", "--nodecount", "1000"]);
    out.assert_ok();
    assert!(out.stderr.starts_with("Run r2 against r1"), "the last two runs by default: {}", out.stderr);
    let base = ["-top", "-unit=ns", "-base", old.to_str().unwrap()];
    let (_, pprof) =
        biometrics_test_support::parse_pprof_top(&biometrics_test_support::go_pprof_files(&base, &[&new]), "ns");
    let number = |s: &str| -> i64 {
        if s == "0" {
            0
        } else {
            s.trim_start_matches('+').trim_end_matches("ns").parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
        }
    };
    let rows: Vec<(String, i64, i64)> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("ΔFLAT"))
        .skip(1)
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields[7..].join(" "), number(fields[0]), number(fields[1]))
        })
        .collect();
    let expected: Vec<(String, i64, i64)> = pprof.iter().map(|r| (r.function.clone(), r.flat, r.cum)).collect();
    assert_eq!(rows, expected, "{}", out.stdout);
    assert!(!rows.is_empty());
}
