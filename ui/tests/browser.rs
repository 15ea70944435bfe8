//! The capture browser in a real headless Chromium, over an in-memory backend holding real
//! CPU profiles of the Go target (and one whose function names are an app's attempts at
//! markup): every view renders, names chosen by the app stay text, the download is the
//! file, speedscope draws the profile, the top functions shown are `go tool pprof -top`'s,
//! and the comparison of two runs shows the function a test made hotter as grown.

mod common;

use std::net::SocketAddr;

use biometrics_test_support::{GoTarget, browser, free_port, go_pprof_files, http_request, parse_pprof_top};
use bytes::Bytes;
use common::{
    HOSTILE, LOCALHOST, Volume, assert_inert, cpu_profile, hostile_profile, serve, serve_with_tokens, sha256,
};
use serde_json::json;

/// Profiles of two runs: `r1` before the target's `main.burnHot` ran, `r2` while it ran.
struct Profiles {
    r1: Bytes,
    r2: Bytes,
}

fn profiles() -> Profiles {
    let target = GoTarget::start(SocketAddr::new(LOCALHOST, free_port(LOCALHOST)));
    let r1 = cpu_profile(&target);
    target.get("/hot?ms=1500");
    let r2 = cpu_profile(&target);
    Profiles { r1, r2 }
}

/// A capture `shop/checkout` whose last run `r2` the status records (its top functions
/// include the hostile names), with an older run `r1` known only from the volume; in each,
/// `web-0` holds a real CPU profile and `web-1` the hostile one (twice as heavy in `r2`).
fn backend(p: &Profiles) -> Volume {
    let top: Vec<_> = ["main.burnCPU", HOSTILE[0], HOSTILE[1]]
        .iter()
        .enumerate()
        .map(|(i, f)| json!({"function": f, "flat": 100 - i, "flatPercent": 50.0, "cum": 100, "cumPercent": 50.0}))
        .collect();
    let status = json!({
        "phase": "Succeeded", "selectedPods": 2, "thresholdLevel": "Warning",
        "lastRun": {"id": "r2", "trigger": "Manual", "startTime": "2026-11-29T10:00:00Z", "result": "Succeeded",
            "pods": [{"pod": "web-0", "result": "Succeeded", "profiles": [{"type": "cpu", "path": "shop/checkout/r2/web-0/cpu.pb.gz", "top": top}]}]},
        "history": [{"id": "r2", "trigger": "Manual", "startTime": "2026-11-29T10:00:00Z", "result": "Succeeded", "podsSucceeded": 2, "podsFailed": 0}],
        "pods": [{"name": "web-0", "goroutines": 12, "levels": {"goroutines": "OK", "memoryPercent": "Warning"}, "memoryPercent": 75.5}],
        "rollouts": [{"revision": "7", "stage": "Judged", "detectedTime": "2026-11-29T09:59:00Z",
            "baselineRun": "r1", "candidateRun": "r2", "verdict": "Regressed", "severity": "Warning",
            "message": format!("revision 7: {} 0.0 % → 40.0 % of CPU, {} 1.0 % → 9.0 % of CPU", HOSTILE[0], HOSTILE[1])}]
    });
    common::volume(
        status,
        &[
            ("r1", vec![("web-0", p.r1.clone()), ("web-1", hostile_profile(1))]),
            ("r2", vec![("web-0", p.r2.clone()), ("web-1", hostile_profile(2))]),
        ],
    )
}

/// The rows of the table with `id` in a serialised DOM: each row's cells' text.
fn table_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = dom.find(&format!("<table id=\"{id}\"")).unwrap_or_else(|| panic!("no table {id}: {dom}"));
    let table = &dom[start..start + dom[start..].find("</table>").unwrap()];
    let body = &table[table.find("<tbody>").unwrap()..];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|c| {
                    let text = &c[c.find('>').unwrap() + 1..c.find("</td>").unwrap()];
                    let text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
                    text.trim().to_owned()
                })
                .collect()
        })
        .collect()
}

/// Up to three looks at a page until it shows `wanted`: headless Chromium under load may
/// take the DOM before the page's fetches answered.
fn dom_showing(url: &str, wanted: &str) -> String {
    (0..3).map(|_| browser::dump_dom(url)).find(|dom| dom.contains(wanted)).unwrap_or_else(|| browser::dump_dom(url))
}

#[test]
fn every_view_renders_and_the_apps_names_stay_text() {
    let p = profiles();
    let (addr, _runtime) = serve(backend(&p));
    let base = format!("http://{addr}");

    let dom = browser::dump_dom(&format!("{base}/"));
    assert!(dom.contains("id=\"captures\""), "{dom}");
    assert!(dom.contains("href=\"/captures/shop/checkout\""), "{dom}");
    assert!(dom.contains("class=\"level-Warning\""), "{dom}");

    let dom = browser::dump_dom(&format!("{base}/captures/shop/checkout"));
    assert!(dom.contains("id=\"runs\""), "{dom}");
    let r2 = dom.find(">r2<").expect("run r2 listed");
    let r1 = dom.find(">r1<").expect("run r1, known only from the volume, listed");
    assert!(r2 < r1, "newest first");

    let dom = dom_showing(&format!("{base}/captures/shop/checkout/runs/r2"), "id=\"merged-cpu\"");
    assert!(dom.contains("main.burnCPU"), "{dom}");
    assert!(dom.contains("id=\"top-web-1-cpu\""), "each pod's top, computed from its file: {dom}");
    assert!(dom.contains("class=\"level-Warning\">Warning"), "the memory level is shown: {dom}");
    assert!(dom.contains("/api/v1/namespaces/shop/captures/checkout/runs/r2/files/web-0/cpu.pb.gz"), "{dom}");
    assert!(dom.contains("/speedscope/index.html#profileURL="), "{dom}");
    assert_inert(&dom);

    let dom = dom_showing(&format!("{base}/captures/shop/checkout/compare"), "id=\"compare\"");
    assert!(dom.contains("id=\"diff-flame\""), "{dom}");
    assert_inert(&dom);
}

#[test]
fn token_mode_asks_for_a_token_and_then_shows_what_its_user_may_read() {
    let p = profiles();
    let (addr, _runtime) = serve_with_tokens(backend(&p));
    let base = format!("http://{addr}");

    // No token, or one the cluster refuses: the sign-in form, with the API's reason.
    let dom = browser::dump_dom(&format!("{base}/"));
    assert!(dom.contains("id=\"token\"") && dom.contains("a bearer token is required"), "{dom}");
    assert!(!dom.contains("checkout"), "{dom}");
    let dom = browser::dump_dom(&format!("{base}/#token=forged"));
    assert!(dom.contains("id=\"token\"") && dom.contains("the cluster did not accept the bearer token"), "{dom}");

    // A token handed over in the fragment: the views, their files fetched with it.
    let dom = dom_showing(&format!("{base}/#token=dev-token"), "id=\"captures\"");
    assert!(dom.contains("href=\"/captures/shop/checkout\""), "{dom}");
    let dom = dom_showing(&format!("{base}/captures/shop/checkout/runs/r2#token=dev-token"), "profileURL=blob");
    assert!(dom.contains("id=\"merged-cpu\"") && dom.contains("main.burnCPU"), "{dom}");
    assert!(
        dom.contains("/speedscope/index.html#profileURL=blob%3Ahttp"),
        "speedscope reads a blob fetched with the token: {dom}"
    );
    assert_inert(&dom);
    let dom = dom_showing(&format!("{base}/captures/shop/checkout/compare#token=dev-token"), "src=\"blob:");
    assert!(dom.contains("id=\"diff-flame\""), "{dom}");

    // A user who may not read shop is told so, in kube-apiserver's words.
    let dom = browser::dump_dom(&format!("{base}/captures/shop/checkout#token=other-token"));
    assert!(dom.contains("User \"other\" cannot get resource \"profilecaptures\""), "{dom}");
}

#[test]
fn the_download_is_the_file_and_never_a_page() {
    let p = profiles();
    let profile = p.r2.clone();
    let (addr, _runtime) = serve(backend(&p));
    let path = "/api/v1/namespaces/shop/captures/checkout/runs/r2/files/web-0/cpu.pb.gz";
    let (status, body) = http_request(addr, "GET", path, &[], b"");
    assert_eq!(status, 200);
    assert_eq!(sha256(&body), sha256(&profile), "byte for byte");
    let head = raw_head(addr, path);
    assert!(head.contains("content-disposition: attachment; filename=\"web-0_r2_cpu.pb.gz\""), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(head.contains("content-security-policy: sandbox"), "{head}");
    // Pages carry a policy that allows no inline script and no other origin.
    let page = raw_head(addr, "/");
    assert!(page.contains("content-security-policy: default-src 'none'; script-src 'self'"), "{page}");
    assert_eq!(http_request(addr, "GET", "/api/v1/namespaces/shop/captures/checkout/runs/r9", &[], b"").0, 404);
    assert_eq!(http_request(addr, "GET", "/api/v1/namespaces/shop/captures/nope", &[], b"").0, 404);
    assert_eq!(http_request(addr, "GET", "/speedscope/..%2F..%2FCargo.toml", &[], b"").0, 404);
}

fn raw_head(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: ui\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase()
}

#[test]
fn speedscope_draws_the_profile() {
    let (addr, _runtime) = serve(backend(&profiles()));
    let download = "/api/v1/namespaces/shop/captures/checkout/runs/r2/files/web-0/cpu.pb.gz";
    let url = |view: &str| {
        format!("http://{addr}/speedscope/index.html#profileURL={}&view={view}", download.replace('/', "%2F"))
    };
    // The sandwich view lists the functions as a table: the Go target's hot function is there.
    // On a loaded machine headless Chromium may take its DOM before speedscope has fetched
    // and parsed the profile: up to three looks, each of which must find the name.
    let dom = (0..3)
        .map(|_| browser::dump_dom(&url("sandwich")))
        .find(|dom| dom.contains("main.burnCPU"))
        .unwrap_or_else(|| browser::dump_dom(&url("sandwich")));
    assert!(dom.contains("main.burnCPU"), "speedscope read the profile: {}", &dom[..dom.len().min(2000)]);
    // The flame graph is drawn: the screenshot is far from one flat colour.
    let shot = tempfile::NamedTempFile::with_suffix(".png").unwrap();
    browser::screenshot(&url("left-heavy"), shot.path(), 1000, 600);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(shot.path()).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let colours: std::collections::HashSet<&[u8]> =
        pixels[..info.buffer_size()].chunks(info.color_type.samples()).collect();
    assert!(colours.len() > 50, "a drawn flame graph has many colours, this has {}", colours.len());
}

/// The pages as a person sees them, checked to be drawn (not blank) and, with
/// `BIOMETRICS_WRITE_SCREENSHOTS=1`, written to `docs/images/` for the user guide.
#[test]
fn screenshots_of_each_view() {
    let (addr, _runtime) = serve(backend(&profiles()));
    let download = "/api/v1/namespaces/shop/captures/checkout/runs/r2/files/web-0/cpu.pb.gz";
    let views = [
        ("browser-captures", "/".to_owned()),
        ("browser-runs", "/captures/shop/checkout".to_owned()),
        ("browser-run", "/captures/shop/checkout/runs/r2".to_owned()),
        ("browser-compare", "/captures/shop/checkout/compare".to_owned()),
        ("browser-flamegraph", format!("/speedscope/index.html#profileURL={}", download.replace('/', "%2F"))),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, path) in views {
        let shot = dir.path().join(format!("{name}.png"));
        browser::screenshot(&format!("http://{addr}{path}"), &shot, 1200, 800);
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        let colours: std::collections::HashSet<&[u8]> =
            pixels[..info.buffer_size()].chunks(info.color_type.samples()).collect();
        assert!(colours.len() > 20, "{name} is drawn: {} colours", colours.len());
        if std::env::var_os("BIOMETRICS_WRITE_SCREENSHOTS").is_some() {
            let docs = biometrics_test_support::repo_root().join("docs/images");
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::copy(&shot, docs.join(format!("{name}.png"))).unwrap();
        }
    }
}

/// `value` as pprof prints a percentage, read back: within its rounding of `shown`.
fn same_percent(shown: &str, pprof: f64) -> bool {
    let shown: f64 = shown.trim_end_matches('%').parse().unwrap_or_else(|e| panic!("{shown:?}: {e}"));
    (shown - pprof).abs() <= 0.006 + pprof * 0.05
}

#[test]
fn the_run_page_shows_pprof_s_top_and_the_compare_page_the_hotter_function_grown() {
    let p = profiles();
    let (addr, _runtime) = serve(backend(&p));
    let base = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let (r1, r2) = (dir.path().join("r1.pb.gz"), dir.path().join("r2.pb.gz"));
    std::fs::write(&r1, &p.r1).unwrap();
    std::fs::write(&r2, &p.r2).unwrap();

    // The pod's table is computed from its file: every line as go tool pprof -top prints it.
    let dom = dom_showing(&format!("{base}/captures/shop/checkout/runs/r2"), "id=\"merged-cpu\"");
    let shown = table_rows(&dom, "top-web-0-cpu");
    let (total, pprof) = parse_pprof_top(&go_pprof_files(&["-top", "-unit=ns"], &[&r2]), "ns");
    assert_eq!(shown.len(), pprof.len(), "{shown:?}");
    let mut running = 0i64;
    for (row, want) in shown.iter().zip(&pprof) {
        // flat, flat%, sum%, cum, cum%, function
        running += want.flat;
        let cells = (row[0].as_str(), row[3].as_str(), row[5].as_str());
        assert_eq!(cells, (want.flat.to_string().as_str(), want.cum.to_string().as_str(), want.function.as_str()));
        assert!(same_percent(&row[1], want.flat_percent), "{row:?} vs {want:?}");
        assert!(same_percent(&row[2], running as f64 * 100.0 / total as f64), "{row:?}");
        assert!(same_percent(&row[4], want.cum_percent), "{row:?} vs {want:?}");
    }

    // The last two runs compared (merged over their pods): the hot function grew, and the
    // differential flame graph drawn from the profiles names it.
    let dom = dom_showing(&format!("{base}/captures/shop/checkout"), "compare-last-two");
    assert!(dom.contains("href=\"/captures/shop/checkout/compare?base=r1&amp;run=r2\""), "{dom}");
    // A rollout's verdict links to the comparison of its baseline and candidate runs.
    let rollouts = table_rows(&dom, "rollouts");
    assert_eq!((rollouts[0][0].as_str(), rollouts[0][1].as_str()), ("7", "Regressed (Warning)"), "{rollouts:?}");
    assert!(dom.contains("id=\"rollout-compare-7\""), "{dom}");
    assert_inert(&dom);
    let dom = dom_showing(&format!("{base}/captures/shop/checkout/compare?base=r1&run=r2"), "id=\"compare\"");
    let rows = table_rows(&dom, "compare");
    let hot = rows.iter().find(|r| r.last().is_some_and(|f| f == "main.burnHot")).expect("main.burnHot compared");
    assert!(hot[2].starts_with('+'), "its cum grew: {hot:?}");
    assert!(dom.contains("class=\"fn grew\" data-trend=\"grew\">main.burnHot<"), "shown as grown: {dom}");
    let (status, svg) = http_request(
        addr,
        "GET",
        "/api/v1/namespaces/shop/captures/checkout/compare/flamegraph.svg?base=r1&run=r2",
        &[],
        b"",
    );
    assert_eq!(status, 200);
    let svg = String::from_utf8_lossy(&svg);
    assert!(svg.contains("main.burnHot"), "the flame graph draws it");
    assert!(svg.contains("&lt;script&gt;"), "names are escaped in the SVG too");
    assert!(!svg.contains("<script>document"), "no name became markup");
}
