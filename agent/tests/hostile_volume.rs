//! Whoever can write the profiles volume (the app container, another pod on a shared claim)
//! swaps directories for links while the agent works: nothing outside the volume is ever
//! written or removed, and what was refused is said.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use biometrics_test_support::{GoTarget, free_port};
use common::*;
use serde_json::json;

/// Every directory and file under `dir`, with the files' contents: a tree to compare.
fn snapshot(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Option<Vec<u8>>)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let shown = path.strip_prefix(root).unwrap().display().to_string();
            if entry.file_type().unwrap().is_dir() {
                out.push((shown, None));
                walk(root, &path, out);
            } else {
                out.push((shown, Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A directory outside the volume holding `<prefix>/<run>/<pod>/` with a file in it, as an
/// attacker would lay out the target of a link.
fn outside_tree(prefix: &str, run: &str) -> (tempfile::TempDir, PathBuf) {
    let outside = tempfile::tempdir().unwrap();
    let pod_dir = outside.path().join(prefix).join(run).join(POD);
    std::fs::create_dir_all(&pod_dir).unwrap();
    std::fs::write(pod_dir.join("precious.txt"), "outside the volume").unwrap();
    std::fs::write(outside.path().join("marker"), "untouched").unwrap();
    let target = outside.path().join(prefix);
    (outside, target)
}

fn cpu_capture(id: &str, capture: &str, run: &str, seconds: u64, port: u16) -> serde_json::Value {
    json!({
        "id": id,
        "capture": {"namespace": NAMESPACE, "name": capture},
        "run": run,
        "profiles": ["cpu"],
        "durationSeconds": seconds,
        "target": {"port": port, "basePath": "/debug/pprof"}
    })
}

/// Starts a 4 s CPU capture of `shop/race` run `r1`, then after 1 s moves the capture's
/// directory away and puts a link to `outside` in its place.
fn swap_during_capture(agent: &Agent, port: u16, id: &str, link_target: &Path) {
    let (status, body) = agent.request("POST", "/v1/captures", Some(&cpu_capture(id, "race", "r1", 4, port)));
    assert_eq!(status, 202, "{body}");
    std::thread::sleep(Duration::from_secs(1));
    let race = agent.profiles().join(NAMESPACE).join("race");
    assert!(race.join("r1").join(POD).is_dir(), "the capture made its directory");
    std::fs::rename(&race, agent.profiles().join(NAMESPACE).join("race.orig")).unwrap();
    std::os::unix::fs::symlink(link_target, &race).unwrap();
}

#[test]
fn a_directory_swapped_for_a_link_during_a_capture_gets_nothing_written_through_it() {
    let target = GoTarget::start(SocketAddr::new(LOCALHOST, free_port(LOCALHOST)));
    let agent = Agent::start(Some(target.addr.port()), &[]);
    let (outside, race_target) = outside_tree("race-target", "r1");
    let before = snapshot(outside.path());
    swap_during_capture(&agent, target.addr.port(), "race-write", &race_target);
    let done = agent.wait_capture("race-write", Duration::from_secs(30));
    assert_eq!(snapshot(outside.path()), before, "nothing written outside the volume");
    assert_eq!(done["state"], "Failed", "{done}");
    let reason = done["error"].as_str().unwrap();
    assert!(reason.contains("shop/race/r1/") && reason.contains("moved or replaced"), "{reason}");
    assert!(done["profiles"][0]["path"].is_null(), "no path that now leads outside: {done}");
    // The profile went where the agent opened its directory: the moved one, on the volume.
    let kept = agent.profiles().join(NAMESPACE).join("race.orig/r1").join(POD);
    assert!(kept.join("cpu.pb.gz").is_file() && kept.join("cpu.svg").is_file(), "{:?}", files_under(&kept));
}

#[test]
fn cancelling_a_capture_whose_directory_was_swapped_removes_nothing_outside() {
    let target = GoTarget::start(SocketAddr::new(LOCALHOST, free_port(LOCALHOST)));
    let agent = Agent::start(Some(target.addr.port()), &[]);
    let (outside, race_target) = outside_tree("race-target", "r1");
    let before = snapshot(outside.path());
    swap_during_capture(&agent, target.addr.port(), "race-cancel", &race_target);
    let (status, cancelled) = agent.request("DELETE", "/v1/captures/race-cancel", None);
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "Failed", "{cancelled}");
    assert_eq!(snapshot(outside.path()), before, "nothing removed outside the volume");
    // What the capture wrote (in the directory it opened, now moved) is gone.
    assert!(!agent.profiles().join(NAMESPACE).join("race.orig/r1").join(POD).exists());
}

#[test]
fn retention_refuses_a_link_at_the_namespace_capture_or_run_level_and_removes_nothing() {
    let agent = Agent::start(None, &[]);
    let cases = [
        // (capture, where the link is planted, what the error names); the namespace's own
        // directory comes last, as its link stands in the way of every other case.
        ("vcap", "shop/vcap", "shop/vcap"),
        ("runlink", "shop/runlink/r1-0123abcd", "shop/runlink/r1-0123abcd"),
        ("vcap", "shop", "shop"),
    ];
    for (capture, link, named) in cases {
        let (outside, link_target) = if link.ends_with("r1-0123abcd") {
            let outside = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(outside.path().join(POD)).unwrap();
            std::fs::write(outside.path().join(POD).join("cpu.pb.gz"), "outside").unwrap();
            let target = outside.path().to_path_buf();
            (outside, target)
        } else if link.contains('/') {
            outside_tree("capdir", "r1-0123abcd")
        } else {
            let (outside, _) = outside_tree("nsdir/vcap", "r1-0123abcd");
            let target = outside.path().join("nsdir");
            (outside, target)
        };
        let planted = agent.profiles().join(link);
        if link == "shop" {
            let _ = std::fs::remove_dir_all(&planted);
        }
        std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&link_target, &planted).unwrap();
        let before = snapshot(outside.path());
        let request = json!({"namespace": "shop", "prune": [{"name": capture, "runSuffix": "0123abcd"}]});
        let (status, body) = agent.request("POST", "/v1/retention", Some(&request));
        assert_eq!(status, 409, "{link}: {body}");
        assert_eq!(body["code"], "VolumeConflict", "{link}: {body}");
        let reason = body["message"].as_str().unwrap();
        assert!(reason.contains(&format!("{named} is a symbolic link")), "{link}: {reason}");
        assert_eq!(snapshot(outside.path()), before, "{link}: nothing removed outside the volume");
    }
}

#[test]
fn retention_refuses_a_link_inside_a_run_it_would_prune() {
    let agent = Agent::start(None, &[]);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious.txt"), "outside").unwrap();
    let pod_dir = agent.profiles().join("shop/cap/r1-0123abcd").join(POD);
    std::fs::create_dir_all(&pod_dir).unwrap();
    std::fs::write(pod_dir.join("cpu.pb.gz"), "ours").unwrap();
    std::os::unix::fs::symlink(outside.path(), pod_dir.join("cpu.svg")).unwrap();
    let before = snapshot(outside.path());
    let request = json!({"namespace": "shop", "prune": [{"name": "cap", "runSuffix": "0123abcd"}]});
    let (status, body) = agent.request("POST", "/v1/retention", Some(&request));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(&format!("shop/cap/r1-0123abcd/{POD}/cpu.svg is a symbolic link"))
    );
    assert!(pod_dir.join("cpu.pb.gz").is_file(), "nothing removed");
    assert_eq!(snapshot(outside.path()), before);
}
