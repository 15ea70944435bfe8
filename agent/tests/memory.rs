//! What a capture costs the agent in memory, read from `/proc`: a gzip bomb (2 GiB of
//! zeros, 2 MiB gzipped, served as `heap`) is refused by its decompressed size with the
//! agent's RSS barely moving, alone or four at once; and analyses share one memory budget,
//! waiting their turn (the capture says so) and refused only when the queue is full.

mod common;

use std::{net::SocketAddr, time::Duration};

use biometrics_test_support::{GoTarget, RssPeak, free_port, gzip_bomb, rss_bytes, serve_canned};
use common::*;

const MIB: u64 = 1 << 20;

/// The agent's RSS once it has settled after start-up.
fn idle_rss(agent: &Agent) -> u64 {
    std::thread::sleep(Duration::from_millis(1500));
    rss_bytes(agent.process.pid())
}

fn post(agent: &Agent, id: &str, port: u16) {
    let (status, body) = agent.request("POST", "/v1/captures", Some(&capture_request(id, id, &["heap"], 1, port)));
    assert_eq!(status, 202, "{body}");
}

#[test]
fn a_gzip_bomb_costs_the_agent_less_than_64_mib() {
    let bomb = gzip_bomb(2 << 30);
    assert!(bomb.len() < 3 << 20, "2 GiB of zeros in {} bytes", bomb.len());
    let server = serve_canned(SocketAddr::new(LOCALHOST, 0), 200, "", bomb);
    // The defaults: 256 MiB decompressed at most, a 64 MiB analysis budget.
    let agent = Agent::start(None, &[]);
    let idle = idle_rss(&agent);

    let peak = RssPeak::start(agent.process.pid());
    post(&agent, "bomb-1", server.port());
    let done = agent.wait_capture("bomb-1", Duration::from_secs(120));
    let one = peak.finish();
    println!("idle RSS {} KiB; one bomb: peak {} KiB above idle", idle >> 10, one.saturating_sub(idle) >> 10);
    assert!(
        one < idle + 64 * MIB,
        "one bomb: RSS peaked at {} MiB, {} MiB above idle",
        one / MIB,
        one.saturating_sub(idle) / MIB
    );
    let reason = done["profiles"][0]["error"].as_str().unwrap_or_default();
    assert!(reason.contains("decompresses to more than 268435456 bytes"), "{done}");

    let peak = RssPeak::start(agent.process.pid());
    let ids = ["bomb-2", "bomb-3", "bomb-4", "bomb-5"];
    for id in ids {
        post(&agent, id, server.port());
    }
    let done: Vec<_> = ids.iter().map(|id| agent.wait_capture(id, Duration::from_secs(240))).collect();
    let four = peak.finish();
    println!("four bombs at once: peak {} KiB above idle", four.saturating_sub(idle) >> 10);
    assert!(
        four < idle + 64 * MIB,
        "four bombs at once: RSS peaked at {} MiB, {} MiB above idle",
        four / MIB,
        four.saturating_sub(idle) / MIB
    );
    for d in done {
        let reason = d["profiles"][0]["error"].as_str().unwrap_or_default();
        assert!(reason.contains("decompresses to more than 268435456 bytes"), "{d}");
    }
    assert!(files_under(&agent.profiles()).is_empty(), "refused profiles leave nothing");
}

/// A gauge from the agent's `/metrics`.
fn gauge(agent: &Agent, name: &str) -> u64 {
    let (_, text) = biometrics_test_support::http_request(agent.addr, "GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).map_or(0, |v| v as u64)
}

#[test]
fn analyses_wait_for_memory_in_turn_and_a_full_queue_refuses() {
    let target = GoTarget::start(SocketAddr::new(LOCALHOST, free_port(LOCALHOST)));
    let bomb = serve_canned(SocketAddr::new(LOCALHOST, 0), 200, "", gzip_bomb(16 << 30));
    // A bomb's first reservation (its size and the floor) is the whole 4 MiB budget, and
    // inflating 8 GiB of zeros holds it for seconds.
    let agent = Agent::start(
        Some(target.addr.port()),
        &[
            "--analysis-memory-budget",
            "4194304",
            "--max-queued-analyses",
            "1",
            "--max-decompressed-bytes",
            "8589934592",
        ],
    );
    let started = std::time::Instant::now();
    post(&agent, "holds-it", bomb.port());
    while gauge(&agent, "biometrics_agent_analysis_memory_held_bytes") < 4 << 20 {
        assert!(started.elapsed() < Duration::from_secs(30), "the bomb never took the budget");
        std::thread::sleep(Duration::from_millis(10));
    }
    post(&agent, "waits", target.addr.port());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = agent.request("GET", "/v1/captures/waits", None);
        if let Some(waiting) = status["waiting"].as_str() {
            assert_eq!(status["state"], "Running", "{status}");
            assert!(waiting.contains("waiting for analysis memory"), "{status}");
            break;
        }
        assert_eq!(status["state"], "Running", "the heap capture should wait behind the bomb: {status}");
        assert!(std::time::Instant::now() < deadline, "never waited: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(gauge(&agent, "biometrics_agent_analyses_waiting"), 1);
    post(&agent, "refused", target.addr.port());
    let refused = agent.wait_capture("refused", Duration::from_secs(30));
    let reason = refused["profiles"][0]["error"].as_str().unwrap_or_default();
    assert!(reason.contains("already waiting for analysis memory (limit maxQueuedAnalyses 1)"), "{refused}");

    let held = agent.wait_capture("holds-it", Duration::from_secs(240));
    println!("the bomb held the budget for {:?}", started.elapsed());
    assert!(held["profiles"][0]["error"].as_str().unwrap_or_default().contains("8589934592"), "{held}");
    assert!(held["profiles"][0]["error"].as_str().unwrap_or_default().contains("decompresses to more than"), "{held}");
    let waited = agent.wait_capture("waits", Duration::from_secs(60));
    assert_eq!(waited["state"], "Succeeded", "{waited}");
    assert!(waited.get("waiting").is_none(), "no longer waiting: {waited}");
    assert!(!waited["profiles"][0]["top"].as_array().unwrap().is_empty(), "{waited}");
}

#[test]
fn a_profile_larger_than_the_whole_budget_is_refused_with_the_reason() {
    // 200,000 unsymbolised locations: about 10 MiB of tables, against a 4 MiB budget.
    use prost::Message;
    let p = biometrics_agent::profile::proto::Profile {
        sample_type: vec![biometrics_agent::profile::proto::ValueType { r#type: 1, unit: 2 }],
        location: (1..=200_000)
            .map(|id| biometrics_agent::profile::proto::Location { id, address: id, ..Default::default() })
            .collect(),
        string_table: vec![String::new(), "inuse_space".into(), "bytes".into()],
        ..Default::default()
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &p.encode_to_vec()).unwrap();
    let server = serve_canned(SocketAddr::new(LOCALHOST, 0), 200, "", gz.finish().unwrap());
    let agent = Agent::start(None, &["--analysis-memory-budget", "4194304"]);
    post(&agent, "too-big", server.port());
    let done = agent.wait_capture("too-big", Duration::from_secs(60));
    let reason = done["profiles"][0]["error"].as_str().unwrap_or_default();
    assert!(reason.contains("more than the agent's analysis memory budget of 4194304 bytes"), "{done}");
}
