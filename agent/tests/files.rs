//! The capture files over the agent API: listings with sizes and hashes, downloads that
//! stream with constant memory and answer ranges, and every way out of the volume refused.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use biometrics_test_support::{GoTarget, free_port};
use common::*;
use serde_json::Value;
use sha2::Digest;

/// A raw GET with a token: status, headers (lower-case names) and body.
fn get(
    agent: &Agent,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(agent.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("GET {path} HTTP/1.0\r\nHost: agent\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response");
    let text = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = text.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_capture_is_listed_and_downloaded_byte_for_byte() {
    let target = GoTarget::start(SocketAddr::new(LOCALHOST, free_port(LOCALHOST)));
    let agent = Agent::start(Some(target.addr.port()), &[]);
    let request = capture_request("cap-files", "run-1", &["heap", "goroutine"], 1, target.addr.port());
    assert_eq!(agent.request("POST", "/v1/captures", Some(&request)).0, 202);
    let done = agent.wait_capture("cap-files", Duration::from_secs(60));
    assert_eq!(done["state"], "Succeeded", "{done}");
    let token = agent.token();

    let (status, _, body) = get(&agent, "/v1/files/shop/api-hourly", Some(&token), &[]);
    assert_eq!(status, 200);
    let listing: Value = serde_json::from_slice(&body).unwrap();
    let runs = listing["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{listing}");
    assert_eq!(runs[0]["run"], "run-1");
    assert_eq!(runs[0]["pods"][0]["pod"], POD);
    let files = runs[0]["pods"][0]["files"].as_array().unwrap();
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["goroutine.pb.gz", "goroutine.svg", "heap.pb.gz", "heap.svg"]);

    for outcome in done["profiles"].as_array().unwrap() {
        let path = outcome["path"].as_str().unwrap();
        let name = path.rsplit('/').next().unwrap();
        let listed = files.iter().find(|f| f["name"] == name).unwrap();
        assert_eq!(listed["sha256"], outcome["sha256"], "the listing agrees with the capture's status");
        assert_eq!(listed["bytes"], outcome["bytes"]);
        let (status, headers, bytes) = get(&agent, &format!("/v1/files/{path}"), Some(&token), &[]);
        assert_eq!(status, 200, "{path}");
        assert_eq!(sha256(&bytes), outcome["sha256"].as_str().unwrap(), "the download is the file");
        assert_eq!(bytes, std::fs::read(agent.profiles().join(path)).unwrap());
        assert_eq!(header(&headers, "etag"), Some(format!("\"{}\"", outcome["sha256"].as_str().unwrap()).as_str()));
        assert_eq!(header(&headers, "content-type"), Some("application/octet-stream"));
        assert_eq!(header(&headers, "content-length"), Some(bytes.len().to_string().as_str()));
        let disposition = header(&headers, "content-disposition").unwrap();
        assert!(disposition.starts_with("attachment;") && disposition.contains(name), "{disposition}");
        // The same version again: not modified.
        let etag = header(&headers, "etag").unwrap().to_owned();
        assert_eq!(get(&agent, &format!("/v1/files/{path}"), Some(&token), &[("If-None-Match", &etag)]).0, 304);
    }
    // A flame graph on the volume may have been written by the app: a download, never a page.
    let svg = done["profiles"][0]["flamegraph"].as_str().unwrap();
    let (status, headers, _) = get(&agent, &format!("/v1/files/{svg}"), Some(&token), &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("image/svg+xml"));
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&headers, "content-security-policy"), Some("sandbox"));
    assert!(header(&headers, "content-disposition").unwrap().starts_with("attachment;"));
}

/// Plants `shop/cap/run-1/<pod>/cpu.pb.gz` with `bytes` in the agent's volume.
fn plant(agent: &Agent, bytes: &[u8]) -> String {
    let dir = agent.profiles().join("shop/cap/run-1").join(POD);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cpu.pb.gz"), bytes).unwrap();
    format!("/v1/files/shop/cap/run-1/{POD}/cpu.pb.gz")
}

#[test]
fn ranges_are_answered_as_rfc_9110_says() {
    let agent = Agent::start(None, &[]);
    let content: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let path = plant(&agent, &content);
    let token = agent.token();
    let ranged = |range: &str| get(&agent, &path, Some(&token), &[("Range", range)]);

    let (status, headers, body) = ranged("bytes=0-9");
    assert_eq!(status, 206);
    assert_eq!(body, &content[..10]);
    assert_eq!(header(&headers, "content-range"), Some("bytes 0-9/1000"));
    let (status, _, body) = ranged("bytes=-5");
    assert_eq!((status, body.as_slice()), (206, &content[995..]));
    let (status, headers, body) = ranged("bytes=990-5000");
    assert_eq!((status, body.as_slice()), (206, &content[990..]));
    assert_eq!(header(&headers, "content-range"), Some("bytes 990-999/1000"));
    let (status, headers, body) = ranged("bytes=1000-");
    assert_eq!(status, 416);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "content-range"), Some("bytes */1000"));
    let (status, _, body) = ranged("bytes=0-1,5-6");
    assert_eq!((status, body.len()), (200, 1000), "several ranges: the whole file");
    let (status, _, body) = ranged("bytes=9-1");
    assert_eq!((status, body.len()), (200, 1000), "an invalid range is ignored");
}

#[test]
fn nothing_outside_the_capture_files_of_this_namespace_is_served() {
    let agent = Agent::start(None, &[]);
    let path = plant(&agent, b"ours");
    std::fs::write(agent.dir.path().join("secret.txt"), "outside the volume").unwrap();
    let outside = agent.dir.path().join("secret.txt");
    let pod_dir = agent.profiles().join("shop/cap/run-1").join(POD);
    std::os::unix::fs::symlink(&outside, pod_dir.join("heap.pb.gz")).unwrap();
    std::os::unix::fs::symlink(agent.dir.path(), agent.profiles().join("shop/linked")).unwrap();
    std::fs::create_dir_all(agent.profiles().join("other/cap/run-1").join(POD)).unwrap();
    std::fs::write(agent.profiles().join("other/cap/run-1").join(POD).join("cpu.pb.gz"), "theirs").unwrap();
    let token = agent.token();
    let cases = [
        ("dot-dot", "/v1/files/shop/cap/run-1/../../secret.txt".to_owned(), 404),
        ("encoded dot-dot", format!("/v1/files/shop/cap/%2e%2e/{POD}/cpu.pb.gz"), 400),
        ("encoded slash", "/v1/files/shop/cap/run-1/..%2F..%2F..%2Fsecret.txt/cpu.pb.gz".to_owned(), 400),
        ("absolute", format!("/v1/files/shop/cap/run-1/{POD}/%2Fetc%2Fpasswd"), 400),
        ("NUL", format!("/v1/files/shop/cap/run-1/{POD}/cpu.pb.gz%00.txt"), 400),
        ("not a capture file", format!("/v1/files/shop/cap/run-1/{POD}/secret.txt"), 400),
        ("temporary file", format!("/v1/files/shop/cap/run-1/{POD}/.cpu.pb.gz.1.tmp"), 400),
        ("file link", format!("/v1/files/shop/cap/run-1/{POD}/heap.pb.gz"), 409),
        ("directory link", format!("/v1/files/shop/linked/run-1/{POD}/cpu.pb.gz"), 409),
        ("directory link listing", "/v1/files/shop/linked".to_owned(), 409),
        ("other namespace", format!("/v1/files/other/cap/run-1/{POD}/cpu.pb.gz"), 403),
        ("other namespace listing", "/v1/files/other/cap".to_owned(), 403),
        ("missing", format!("/v1/files/shop/cap/run-2/{POD}/cpu.pb.gz"), 404),
    ];
    for (what, path, expected) in cases {
        let (status, _, body) = get(&agent, &path, Some(&token), &[]);
        assert_eq!(status, expected, "{what}: {}", String::from_utf8_lossy(&body));
        assert!(!String::from_utf8_lossy(&body).contains("outside the volume"), "{what}");
        assert!(!String::from_utf8_lossy(&body).contains("theirs"), "{what}");
    }
    // The listing leaves the link out and says so.
    let (status, _, body) = get(&agent, "/v1/files/shop/cap", Some(&token), &[]);
    assert_eq!(status, 200);
    let listing: Value = serde_json::from_slice(&body).unwrap();
    let files = &listing["runs"][0]["pods"][0]["files"];
    assert_eq!(files.as_array().unwrap().len(), 1, "{listing}");
    assert!(listing["skipped"][0].as_str().unwrap().contains("heap.pb.gz is a symbolic link"), "{listing}");
    // Tokens are checked as for every route.
    assert_eq!(get(&agent, &path, None, &[]).0, 401);
    let now = biometrics_agent::auth::unix_now();
    let expired =
        biometrics_agent::auth::mint(agent.keys.private_pem.as_bytes(), NAMESPACE, POD, now - 700, 300).unwrap();
    assert_eq!(get(&agent, &path, Some(&expired), &[]).0, 401);
    let other_pod =
        biometrics_agent::auth::mint(agent.keys.private_pem.as_bytes(), NAMESPACE, "other-pod", now, 60).unwrap();
    assert_eq!(get(&agent, &path, Some(&other_pod), &[]).0, 403);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "outside the volume");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap()))
        .unwrap()
}

#[test]
fn a_200_mb_file_streams_with_constant_memory() {
    let agent = Agent::start(None, &[]);
    let dir = agent.profiles().join("shop/big/run-1").join(POD);
    std::fs::create_dir_all(&dir).unwrap();
    let size: u64 = 200 << 20;
    {
        // Real blocks, not a sparse file: 1 MiB of varied bytes written 200 times.
        let chunk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        let mut file = std::fs::File::create(dir.join("cpu.pb.gz")).unwrap();
        for _ in 0..200 {
            file.write_all(&chunk).unwrap();
        }
    }
    let pid = agent.process.pid();
    let token = agent.token();
    // Warm up the paths once with a small range, then measure a whole download.
    let path = format!("/v1/files/shop/big/run-1/{POD}/cpu.pb.gz");
    assert_eq!(get(&agent, &path, Some(&token), &[("Range", "bytes=0-0")]).0, 206);
    let before = rss_kib(pid);
    let mut stream = TcpStream::connect(agent.addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n").unwrap();
    let (mut read, mut peak, mut buf) = (0u64, before, vec![0u8; 256 << 10]);
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        read += n as u64;
        // Read slowly at first, so the agent would buffer if it could.
        if read < (32 << 20) {
            std::thread::sleep(Duration::from_micros(200));
        }
        peak = peak.max(rss_kib(pid));
    }
    assert!(read > size, "headers and the whole file arrived: {read}");
    let grew = peak.saturating_sub(before);
    assert!(grew < 16 << 10, "the agent's RSS grew by {grew} KiB while serving 200 MiB");
}
