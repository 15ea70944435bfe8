//! What the agent refuses, and that a refusal changes nothing: unauthenticated and
//! wrong-pod requests, malformed and out-of-range input, and misbehaving targets.

mod common;

use std::{net::SocketAddr, time::Duration};

use biometrics_test_support::{GoTarget, free_port, serve_canned};
use common::*;
use serde_json::json;

fn token_with(keys: &KeyPair, claims: serde_json::Value) -> String {
    token_with_header(keys, jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA), claims)
}

fn token_with_header(keys: &KeyPair, header: jsonwebtoken::Header, claims: serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_ed_pem(keys.private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[test]
fn unauthenticated_requests_are_refused_and_change_nothing() {
    let target = GoTarget::start(SocketAddr::new(LOCALHOST, free_port(LOCALHOST)));
    let agent = Agent::start(Some(target.addr.port()), &[]);
    let body = capture_request("cap-auth", "run-1", &["heap"], 1, target.addr.port()).to_string();
    let now = biometrics_agent::auth::unix_now();
    let claims = |sub: &str, aud: &str, iat: u64, exp: u64| json!({"iss": "biometrics-operator", "aud": aud, "sub": sub, "iat": iat, "exp": exp});
    let me = format!("{NAMESPACE}/{POD}");
    let other_keys = key_pair();
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("no token", None, 401, "missing Authorization"),
        ("not bearer", Some("Basic abc".into()), 401, "Bearer"),
        ("garbage", Some("Bearer not.a.jwt".into()), 401, "invalid token"),
        (
            "bad signature",
            Some(format!("Bearer {}", token_with(&other_keys, claims(&me, "biometrics-agent", now, now + 60)))),
            401,
            "invalid token",
        ),
        (
            "expired",
            Some(format!("Bearer {}", token_with(&agent.keys, claims(&me, "biometrics-agent", now - 700, now - 200)))),
            401,
            "invalid token",
        ),
        (
            "wrong audience",
            Some(format!("Bearer {}", token_with(&agent.keys, claims(&me, "someone-else", now, now + 60)))),
            401,
            "invalid token",
        ),
        (
            "too long-lived",
            Some(format!("Bearer {}", token_with(&agent.keys, claims(&me, "biometrics-agent", now, now + 3600)))),
            401,
            "lifetime",
        ),
        (
            "wrong pod",
            Some(format!(
                "Bearer {}",
                token_with(&agent.keys, claims("shop/another-pod", "biometrics-agent", now, now + 60))
            )),
            403,
            "another-pod",
        ),
        (
            "not valid yet",
            Some(format!("Bearer {}", {
                let mut early = claims(&me, "biometrics-agent", now, now + 300);
                early["nbf"] = json!(now + 200);
                token_with(&agent.keys, early)
            })),
            401,
            "not valid yet",
        ),
        (
            "unknown critical header",
            Some(format!("Bearer {}", {
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
                header.crit = Some(vec!["exp-v2".into()]);
                token_with_header(&agent.keys, header, claims(&me, "biometrics-agent", now, now + 60))
            })),
            401,
            "critical header",
        ),
    ];
    for (name, authorization, expected, reason) in cases {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &authorization {
            headers.push(("Authorization", a.as_str()));
        }
        let (status, response) =
            biometrics_test_support::http_request(agent.addr, "POST", "/v1/captures", &headers, body.as_bytes());
        let response: serde_json::Value = serde_json::from_slice(&response).unwrap();
        assert_eq!(status, expected, "{name}: {response}");
        assert_eq!(response["code"], if expected == 401 { "Unauthorized" } else { "Forbidden" }, "{name}: {response}");
        assert!(response["message"].as_str().unwrap().contains(reason), "{name}: {response}");
    }
    // Two Authorization headers, a valid one among them: which one counts is ambiguous.
    let valid = format!("Bearer {}", agent.token());
    let headers =
        [("Content-Type", "application/json"), ("Authorization", valid.as_str()), ("Authorization", "Bearer x")];
    let (status, response) =
        biometrics_test_support::http_request(agent.addr, "POST", "/v1/captures", &headers, body.as_bytes());
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&response));
    assert!(String::from_utf8_lossy(&response).contains("2 Authorization headers"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(files_under(&agent.profiles()).is_empty(), "nothing was written");
    assert_eq!(agent.request("GET", "/v1/captures/cap-auth", None).0, 404, "nothing was started");
    // Health and metrics stay open.
    assert_eq!(biometrics_test_support::http_request(agent.addr, "GET", "/healthz", &[], b"").0, 200);
}

/// The trust ConfigMap reaches a pod's volume a little after the pod starts: until the key
/// is there, the agent says "not yet" (503, a code the operator retries), not "never" (401).
#[test]
fn a_key_not_yet_on_the_volume_is_a_retryable_refusal() {
    let agent = Agent::start(None, &[]);
    let key = agent.dir.path().join("operator.pub");
    let aside = agent.dir.path().join("operator.pub.aside");
    std::fs::rename(&key, &aside).unwrap();
    let (status, response) = agent.request("GET", "/v1/captures/cap-trust", None);
    assert_eq!(status, 503, "{response}");
    assert_eq!(response["code"], "TrustNotReady", "{response}");
    assert!(response["message"].as_str().unwrap().contains("operator.pub"), "{response}");
    std::fs::rename(&aside, &key).unwrap();
    let (status, response) = agent.request("GET", "/v1/captures/cap-trust", None);
    assert_eq!(status, 404, "once the key is there the request is authenticated: {response}");
    // A key that is there but unusable is a refusal, not a wait.
    std::fs::write(&key, "not a key").unwrap();
    let (status, response) = agent.request("GET", "/v1/captures/cap-trust", None);
    assert_eq!((status, response["code"].as_str()), (401, Some("Unauthorized")), "{response}");
}

#[test]
fn bad_input_is_a_400_with_a_reason() {
    let agent = Agent::start(None, &[]);
    let good = capture_request("cap-ok", "run-1", &["heap"], 30, 6060);
    let with = |field: &str, value: serde_json::Value| {
        let mut r = good.clone();
        r[field] = value;
        r
    };
    let mut bad_ns = good.clone();
    bad_ns["capture"]["namespace"] = json!("../etc");
    let mut bad_path = good.clone();
    bad_path["target"]["basePath"] = json!("/debug/../admin");
    let mut url_path = good.clone();
    url_path["target"]["basePath"] = json!("http://169.254.169.254/latest");
    let mut extra = good.clone();
    extra["target"]["host"] = json!("10.0.0.1");
    let cases = vec![
        ("unknown profile", with("profiles", json!(["cpu", "gpu"])).to_string(), "unknown variant `gpu`"),
        ("duration 0", with("durationSeconds", json!(0)).to_string(), "durationSeconds must be between 1 and 300"),
        ("duration 301", with("durationSeconds", json!(301)).to_string(), "durationSeconds must be between 1 and 300"),
        ("run traversal", with("run", json!("../x")).to_string(), "run \"../x\" is invalid"),
        ("run uppercase", with("run", json!("Run1")).to_string(), "lower-case"),
        ("run 64 chars", with("run", json!("a".repeat(64))).to_string(), "at most 63"),
        ("id traversal", with("id", json!("../../x")).to_string(), "id \"../../x\" is invalid"),
        ("namespace traversal", bad_ns.to_string(), "capture.namespace"),
        ("base path traversal", bad_path.to_string(), "target.basePath"),
        ("base path URL", url_path.to_string(), "target.basePath"),
        ("a host field", extra.to_string(), "unknown field `host`"),
        ("no profiles", with("profiles", json!([])).to_string(), "at least one profile"),
        ("duplicate profiles", with("profiles", json!(["heap", "heap"])).to_string(), "twice"),
        ("port 0", with("target", json!({"port": 0})).to_string(), "target.port"),
        ("malformed JSON", "{\"id\": ".to_owned(), "invalid request body"),
    ];
    for (name, body, reason) in cases {
        let (status, response) = agent.request_with("POST", "/v1/captures", Some(&agent.token()), body.as_bytes());
        assert_eq!(status, 400, "{name}: {response}");
        assert!(response["message"].as_str().unwrap_or_default().contains(reason), "{name}: {response}");
    }
    let huge = format!("{{\"id\": \"{}\"}}", "a".repeat(100_000));
    assert_eq!(
        agent.request_with("POST", "/v1/captures", Some(&agent.token()), huge.as_bytes()).0,
        413,
        "body over the limit"
    );
    assert!(files_under(&agent.profiles()).is_empty());
}

/// Captures one heap profile from `target_port` and returns the profile's outcome.
fn capture_from(agent: &Agent, id: &str, target_port: u16) -> serde_json::Value {
    let (status, body) =
        agent.request("POST", "/v1/captures", Some(&capture_request(id, "run-1", &["heap"], 1, target_port)));
    assert_eq!(status, 202, "{body}");
    let done = agent.wait_capture(id, Duration::from_secs(30));
    assert_eq!(done["state"], "Failed", "{done}");
    done["profiles"][0].clone()
}

#[test]
fn misbehaving_targets_fail_the_profile_with_a_reason_and_leave_nothing() {
    let agent = Agent::start(None, &["--max-profile-bytes", "100000"]);
    let down = capture_from(&agent, "cap-down", free_port(LOCALHOST));
    assert!(down["error"].as_str().unwrap().contains("cannot reach the app"), "{down}");

    let garbage = serve_canned(SocketAddr::new(LOCALHOST, 0), 200, "", b"this is not a profile".to_vec());
    let out = capture_from(&agent, "cap-garbage", garbage.port());
    assert!(out["error"].as_str().unwrap().contains("not a pprof protobuf"), "{out}");

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &[7u8; 5000]).unwrap();
    let mut truncated = gz.finish().unwrap();
    truncated.truncate(truncated.len() / 2);
    let cut = serve_canned(SocketAddr::new(LOCALHOST, 0), 200, "", truncated);
    let out = capture_from(&agent, "cap-truncated", cut.port());
    assert!(out["error"].as_str().unwrap().contains("gzip"), "{out}");

    let big = serve_canned(SocketAddr::new(LOCALHOST, 0), 200, "", vec![0u8; 200_000]);
    let out = capture_from(&agent, "cap-big", big.port());
    assert!(out["error"].as_str().unwrap().contains("larger than 100000 bytes (limit maxProfileBytes)"), "{out}");

    let redirect = serve_canned(SocketAddr::new(LOCALHOST, 0), 302, "Location: http://10.0.0.1/steal\r\n", Vec::new());
    let out = capture_from(&agent, "cap-redirect", redirect.port());
    assert!(out["error"].as_str().unwrap().contains("redirects are not followed"), "{out}");

    let refusing = serve_canned(
        SocketAddr::new(LOCALHOST, 0),
        500,
        "",
        b"Could not enable CPU profiling: cpu profiling already in use".to_vec(),
    );
    let out = capture_from(&agent, "cap-busy", refusing.port());
    assert!(out["error"].as_str().unwrap().contains("cpu profiling already in use"), "Go's reason is passed on: {out}");

    let left = files_under(&agent.profiles());
    assert!(left.is_empty(), "no file left behind: {left:?}");
}

#[test]
fn a_profile_that_inflates_past_the_limit_is_refused() {
    let agent = Agent::start(None, &["--max-decompressed-bytes", "1000000"]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &vec![0u8; 5_000_000]).unwrap();
    let bomb = serve_canned(SocketAddr::new(LOCALHOST, 0), 200, "", gz.finish().unwrap());
    let out = capture_from(&agent, "cap-bomb", bomb.port());
    assert!(out["error"].as_str().unwrap().contains("more than 1000000 bytes (limit maxDecompressedBytes)"), "{out}");
    assert!(files_under(&agent.profiles()).is_empty());
}

#[test]
fn a_symlink_planted_on_the_volume_is_not_followed() {
    let target = GoTarget::start(SocketAddr::new(LOCALHOST, free_port(LOCALHOST)));
    let agent = Agent::start(Some(target.addr.port()), &[]);
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(agent.profiles().join(NAMESPACE)).unwrap();
    std::os::unix::fs::symlink(outside.path(), agent.profiles().join(NAMESPACE).join("api-hourly")).unwrap();
    let out = capture_from(&agent, "cap-link", target.addr.port());
    assert!(out["error"].as_str().unwrap().contains("shop/api-hourly is a symbolic link"), "{out}");
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "nothing written outside the profiles dir");
}

#[test]
fn every_name_that_becomes_a_path_or_key_refuses_traversal() {
    let agent = Agent::start(None, &[]);
    // Files a traversal could reach if a name were used as is.
    std::fs::write(agent.dir.path().join("secret.txt"), "do not touch").unwrap();
    let mut capture_name = capture_request("cap-ok", "run-1", &["heap"], 1, 6060);
    capture_name["capture"]["name"] = json!("../../secret");
    let invalidation = |id: &str, namespace: &str, name: &str| json!({"id": id, "policy": {"namespace": namespace, "name": name}, "redis": {"address": "127.0.0.1:1"}, "keyPrefix": "users:", "rule": {"name": "r", "pattern": "*"}});
    let cases = [
        ("capture.name", "/v1/captures", capture_name, "capture.name"),
        (
            "retention namespace",
            "/v1/retention",
            json!({"namespace": "..", "prune": [{"name": "api-hourly", "runSuffix": "0123abcd"}]}),
            "namespace",
        ),
        (
            "retention name",
            "/v1/retention",
            json!({"namespace": NAMESPACE, "prune": [{"name": "../..", "runSuffix": "0123abcd"}]}),
            "prune.name",
        ),
        ("invalidation id", "/v1/cache/invalidations", invalidation("../x", NAMESPACE, "users"), "id"),
        ("policy namespace", "/v1/cache/invalidations", invalidation("inv-1", "../etc", "users"), "policy.namespace"),
        ("policy name", "/v1/cache/invalidations", invalidation("inv-2", NAMESPACE, "a/b"), "policy.name"),
    ];
    for (what, path, body, reason) in cases {
        let (status, response) = agent.request("POST", path, Some(&body));
        assert_eq!(status, 400, "{what}: {response}");
        assert!(response["message"].as_str().unwrap_or_default().contains(reason), "{what}: {response}");
    }
    // Ids in the URL are looked up, never used as paths.
    for path in ["/v1/captures/..%2F..%2Fsecret.txt", "/v1/cache/invalidations/..%2Fsecret.txt"] {
        assert_eq!(agent.request("GET", path, None).0, 404, "{path}");
        assert_eq!(agent.request("DELETE", path, None).0, 404, "{path}");
    }
    assert_eq!(std::fs::read_to_string(agent.dir.path().join("secret.txt")).unwrap(), "do not touch");
    assert!(files_under(&agent.profiles()).is_empty(), "nothing written");
}

#[test]
fn redis_timeouts_are_bounded_on_every_route_that_takes_them() {
    let agent = Agent::start(None, &[]);
    let redis = |field: &str, value: u64| {
        let mut r = json!({"address": "127.0.0.1:1"});
        r[field] = json!(value);
        r
    };
    for (field, value) in [("dialTimeoutMillis", u64::MAX), ("readTimeoutMillis", 60_001), ("writeTimeoutMillis", 0)] {
        let bodies = [
            (
                "/v1/cache/invalidations",
                json!({"id": "inv-t", "policy": {"namespace": NAMESPACE, "name": "users"}, "redis": redis(field, value), "keyPrefix": "users:", "rule": {"name": "r", "pattern": "*"}}),
            ),
            (
                "/v1/cache/enforce",
                json!({"id": "enf-t", "redis": redis(field, value), "keyPrefix": "users:", "strategy": {"type": "LRU"}}),
            ),
            ("/v1/cache/stats", json!({"redis": redis(field, value), "keyPrefix": "users:"})),
        ];
        for (path, body) in bodies {
            let (status, response) = agent.request("POST", path, Some(&body));
            assert_eq!(status, 400, "{path} {field}={value}: {response}");
            let reason = response["message"].as_str().unwrap_or_default();
            assert!(reason.contains(&format!("redis.{field} must be between 1 and 60000")), "{path}: {reason}");
        }
    }
}
