//! The agent's Redis work against real `redis-server` processes (and a real 3-master
//! cluster): each rule deletes exactly its keys, once across agents; strategies are
//! enforced and read back; statistics come from INFO deltas; faults fail cleanly.

mod common;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use biometrics_test_support::{ChildGuard, RedisCluster, RedisServer, redis_load};
use common::*;
use serde_json::{Value, json};

const PREFIX: &str = "app[1]:";

fn target(server: &RedisServer) -> Value {
    json!({"address": server.addr.to_string()})
}

fn set_cmd(key: &str) -> Vec<String> {
    vec!["SET".into(), key.into(), "v".into()]
}

/// Keys inside the prefix (with glob characters in the prefix itself) and keys outside it
/// that an unescaped pattern would also match.
fn seed(port: u16) {
    let mut cmds = Vec::new();
    for i in 0..50 {
        cmds.push(set_cmd(&format!("{PREFIX}user:{i}")));
    }
    for i in 0..30 {
        cmds.push(set_cmd(&format!("{PREFIX}session:{i}")));
    }
    for k in ["app[1]:s*ss:1", "app1:user:1", "app[1]x:user:1", "apx:user:1", "other:user:1", "app[1]:tag"] {
        cmds.push(set_cmd(k));
    }
    cmds.push(vec![
        "SADD".into(),
        format!("{PREFIX}tag:active"),
        format!("{PREFIX}session:1"),
        format!("{PREFIX}session:2"),
    ]);
    cmds.push(vec![
        "SADD".into(),
        format!("{PREFIX}tag:premium"),
        format!("{PREFIX}session:2"),
        format!("{PREFIX}session:3"),
        "other:user:1".into(),
    ]);
    redis_load(port, &cmds);
}

fn keys(server: &RedisServer) -> BTreeSet<String> {
    server.cli(None, &["--scan"]).lines().map(str::to_owned).collect()
}

fn invalidation(id: &str, redis: Value, rule: Value) -> Value {
    json!({"id": id, "policy": {"namespace": NAMESPACE, "name": "users"}, "redis": redis, "keyPrefix": PREFIX, "rule": rule})
}

fn run_invalidation(agent: &Agent, request: &Value) -> Value {
    let id = request["id"].as_str().unwrap().to_owned();
    let (status, body) = agent.request("POST", "/v1/cache/invalidations", Some(request));
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = agent.request("GET", &format!("/v1/cache/invalidations/{id}"), None);
        if s["state"] != "Running" {
            return s;
        }
        assert!(Instant::now() < deadline, "invalidation still running: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_rule_kind_deletes_exactly_its_keys() {
    let server = RedisServer::start(&[]);
    seed(server.addr.port());
    let agent = Agent::start(None, &[]);
    let before = keys(&server);

    let s = run_invalidation(
        &agent,
        &invalidation("inv-pattern", target(&server), json!({"name": "users", "pattern": "user:*"})),
    );
    assert_eq!((s["state"].as_str(), s["keysDeleted"].as_u64()), (Some("Succeeded"), Some(50)), "{s}");
    let after = keys(&server);
    let gone: BTreeSet<_> = before.difference(&after).cloned().collect();
    assert_eq!(
        gone,
        (0..50).map(|i| format!("{PREFIX}user:{i}")).collect(),
        "only the prefix's user keys; not app1:user:1 nor app[1]x:user:1"
    );

    let s = run_invalidation(
        &agent,
        &invalidation("inv-prefix", target(&server), json!({"name": "odd", "prefix": "s*ss:"})),
    );
    assert_eq!(s["keysDeleted"], 1, "the literal prefix 's*ss:' is not a glob: {s}");
    assert!(!keys(&server).contains("app[1]:s*ss:1") && keys(&server).contains(&format!("{PREFIX}session:5")));

    let s = run_invalidation(
        &agent,
        &invalidation("inv-tags", target(&server), json!({"name": "tagged", "tags": ["active", "premium"]})),
    );
    assert_eq!(s["state"], "Succeeded", "{s}");
    let left = keys(&server);
    for k in ["session:1", "session:2", "session:3", "tag:active", "tag:premium"] {
        assert!(!left.contains(&format!("{PREFIX}{k}")), "{k} should be gone");
    }
    assert!(left.contains("other:user:1"), "a tag set cannot reach outside the prefix");
    assert_eq!(s["keysDeleted"], 5, "session:2 carries both tags and is counted once; the 2 sets count: {s}");

    let s = run_invalidation(
        &agent,
        &invalidation(
            "inv-keys",
            target(&server),
            json!({"name": "some", "keys": ["session:10", "session:11", "missing"]}),
        ),
    );
    assert_eq!(s["keysDeleted"], 2, "{s}");

    let survivors = keys(&server);
    for outside in ["app1:user:1", "app[1]x:user:1", "apx:user:1", "other:user:1", "app[1]:tag"] {
        assert!(survivors.contains(outside), "{outside} was never in reach");
    }
}

#[test]
fn the_same_invalidation_runs_once_across_agents_and_is_announced() {
    let server = RedisServer::start(&[]);
    seed(server.addr.port());
    let first = Agent::start(None, &[]);
    let second = Agent::start(None, &[]);
    // A subscriber like an app instance dropping its in-process copies.
    let mut subscriber = ChildGuard::spawn(
        "redis-cli subscribe",
        Command::new("redis-cli")
            .args(["-p", &server.addr.port().to_string(), "--csv", "subscribe", &format!("{PREFIX}invalidations")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let lines = BufReader::new(subscriber.child_mut().stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.cli(None, &["pubsub", "numsub", &format!("{PREFIX}invalidations")]).contains('1') {
        assert!(Instant::now() < deadline, "subscriber never subscribed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let request = invalidation("inv-once", target(&server), json!({"name": "users", "pattern": "user:*"}));
    let done = run_invalidation(&first, &request);
    assert_eq!(done["keysDeleted"], 50);
    // A key that appears afterwards is not taken by a retry of the same invalidation.
    server.cli(None, &["set", &format!("{PREFIX}user:new"), "v"]);
    let retried = run_invalidation(&second, &request);
    assert_eq!(retried["state"], "Succeeded");
    assert_eq!(retried["alreadyDone"], true, "{retried}");
    assert_eq!(retried["keysDeleted"], 50, "the first execution's count is reported");
    assert!(keys(&server).contains(&format!("{PREFIX}user:new")), "no second execution");
    let message = loop {
        let line = rx.recv_timeout(Duration::from_secs(5)).expect("a published message");
        if line.contains("keysDeleted") {
            break line;
        }
    };
    // redis-cli --csv: "message","<channel>","<payload with quotes backslash-escaped>"
    let field = message
        .strip_prefix(&format!("\"message\",\"{PREFIX}invalidations\",\""))
        .expect("a message line")
        .trim_end_matches('"');
    let payload: Value = serde_json::from_str(&field.replace("\\\"", "\"")).unwrap();
    assert_eq!(payload["policy"], format!("{NAMESPACE}/users"));
    assert_eq!(payload["rule"], "users");
    assert_eq!(payload["kind"], "pattern");
    assert_eq!(payload["values"], json!(["user:*"]));
    assert_eq!(payload["keysDeleted"], 50);
}

/// Starts an enforcement job and polls it to its end: the final status (200 when it
/// succeeded, 502 when it failed) and the job.
fn enforce(agent: &Agent, redis: Value, strategy: Value) -> (u16, Value) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let id = format!("enf-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let body = json!({"id": id, "redis": redis, "keyPrefix": PREFIX, "strategy": strategy});
    let (status, job) = agent.request("POST", "/v1/cache/enforce", Some(&body));
    if status != 202 {
        return (status, job);
    }
    let job = wait_enforcement(agent, &id, Duration::from_secs(120));
    (if job["state"] == "Succeeded" { 200 } else { 502 }, job)
}

fn wait_enforcement(agent: &Agent, id: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, job) = agent.request("GET", &format!("/v1/cache/enforce/{id}"), None);
        assert_eq!(status, 200, "{job}");
        if job["state"] != "Running" {
            return job;
        }
        assert!(Instant::now() < deadline, "enforcement {id} still running: {job}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn strategies_are_enforced_and_drift_is_reported() {
    let server = RedisServer::start(&[]);
    let agent = Agent::start(None, &[]);
    let lru = json!({"type": "LRU", "manageServerEvictionPolicy": true, "maxMemoryBytes": 268435456u64});
    let (status, report) = enforce(&agent, target(&server), lru.clone());
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["evictionPolicy"]["desired"], "allkeys-lru");
    assert_eq!(report["evictionPolicy"]["found"], "noeviction");
    assert_eq!(report["evictionPolicy"]["drift"], true);
    assert_eq!(report["evictionPolicy"]["actual"], "allkeys-lru");
    assert!(server.cli(None, &["config", "get", "maxmemory-policy"]).contains("allkeys-lru"), "Redis reports it");
    assert!(server.cli(None, &["config", "get", "maxmemory"]).contains("268435456"));
    let (_, steady) = enforce(&agent, target(&server), lru.clone());
    assert_eq!(steady["evictionPolicy"]["drift"], false, "{steady}");
    // Changed behind our back: reported as drift, and put back.
    server.cli(None, &["config", "set", "maxmemory-policy", "volatile-ttl"]);
    let (_, drifted) = enforce(&agent, target(&server), lru);
    assert_eq!(
        (drifted["evictionPolicy"]["found"].as_str(), drifted["evictionPolicy"]["drift"].as_bool()),
        (Some("volatile-ttl"), Some(true))
    );
    assert!(server.cli(None, &["config", "get", "maxmemory-policy"]).contains("allkeys-lru"));
    // The app can read what was applied, from inside the pod, without a token.
    let (status, policies) = agent.request_with("GET", "/v1/cache/policy", None, b"");
    assert_eq!(status, 200, "{policies}");
    assert_eq!(policies.as_array().map(Vec::len), Some(1), "one enforced policy: {policies}");
    assert_eq!(policies[0]["keyPrefix"], PREFIX);
    assert_eq!(policies[0]["strategy"]["type"], "LRU");
}

#[test]
fn config_refused_by_the_server_is_reported_as_such() {
    let server = RedisServer::start(&["--rename-command", "CONFIG", ""]);
    let agent = Agent::start(None, &[]);
    let (status, report) = enforce(&agent, target(&server), json!({"type": "LFU", "manageServerEvictionPolicy": true}));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["evictionPolicy"]["applied"], false);
    assert!(report["evictionPolicy"]["error"].as_str().unwrap().contains("CONFIG refused by the server"), "{report}");
    assert_eq!(report["evictionPolicy"]["actual"], "noeviction", "read back through INFO");
}

#[test]
fn max_keys_trims_the_least_recently_used_and_ttl_caps_expiry() {
    let server = RedisServer::start(&[]);
    let agent = Agent::start(None, &[]);
    let port = server.addr.port();
    redis_load(port, &(0..30).map(|i| set_cmd(&format!("{PREFIX}k:{i}"))).collect::<Vec<_>>());
    redis_load(port, &[set_cmd("outside:1")]);
    std::thread::sleep(Duration::from_millis(2200));
    // Touch ten keys: they are the recently used ones.
    for i in 0..10 {
        server.cli(None, &["get", &format!("{PREFIX}k:{i}")]);
    }
    let (status, report) = enforce(&agent, target(&server), json!({"type": "LRU", "maxKeys": 10}));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["keysTrimmed"], 20, "{report}");
    let left = keys(&server);
    let kept: BTreeSet<String> = (0..10).map(|i| format!("{PREFIX}k:{i}")).collect();
    assert!(kept.is_subset(&left), "the recently used keys stay: {left:?}");
    assert!(left.contains("outside:1"));
    assert_eq!(left.len(), 11);

    server.cli(None, &["expire", &format!("{PREFIX}k:0"), "100000"]);
    server.cli(None, &["expire", &format!("{PREFIX}k:1"), "5"]);
    let (_, report) = enforce(&agent, target(&server), json!({"type": "TTL", "ttlSeconds": 60}));
    assert_eq!(report["keysGivenTtl"], 9, "eight without a TTL and one with a longer one: {report}");
    for i in 0..10 {
        let ttl: i64 = server.cli(None, &["ttl", &format!("{PREFIX}k:{i}")]).trim().parse().unwrap();
        assert!((1..=60).contains(&ttl), "k:{i} has ttl {ttl}");
    }
    assert_eq!(server.cli(None, &["ttl", "outside:1"]).trim(), "-1", "keys outside the prefix are untouched");
}

fn stats(agent: &Agent, redis: Value) -> Value {
    let (status, body) = agent.request("POST", "/v1/cache/stats", Some(&json!({"redis": redis, "keyPrefix": PREFIX})));
    assert_eq!(status, 200, "{body}");
    body
}

/// A statistics request that fails: its status, and the error body's code and message.
fn stats_refused(agent: &Agent, redis: Value) -> (u16, String, String) {
    let (status, body) = agent.request("POST", "/v1/cache/stats", Some(&json!({"redis": redis, "keyPrefix": PREFIX})));
    let field = |k: &str| body[k].as_str().unwrap_or_else(|| panic!("an error body: {body}")).to_owned();
    (status, field("code"), field("message"))
}

#[test]
fn hit_ratio_comes_from_the_lookups_between_samples() {
    let server = RedisServer::start(&["--maxmemory", "104857600"]);
    seed(server.addr.port());
    // Lookups before the first sample must not count.
    for _ in 0..50 {
        server.cli(None, &["get", "nope"]);
    }
    let agent = Agent::start(None, &[]);
    let first = stats(&agent, target(&server));
    assert_eq!(first["reachable"], true);
    assert!(first["serverHitRatioPercent"].is_null(), "no rate from a single sample: {first}");
    for i in 0..30 {
        server.cli(None, &["get", &format!("{PREFIX}user:{i}")]);
    }
    for i in 0..10 {
        server.cli(None, &["get", &format!("{PREFIX}missing:{i}")]);
    }
    let second = stats(&agent, target(&server));
    assert_eq!(second["serverHitRatioPercent"], 75.0, "{second}");
    assert!(second.get("hitRatioPercent").is_none(), "the ratio is named for what it measures: {second}");
    assert_eq!(second["evictionsPerSecond"], 0.0);
    assert_eq!(
        second["keysUnderPrefix"], 84,
        "50 users, 30 sessions, s*ss, the key named 'tag' and 2 tag sets: {second}"
    );
    assert_eq!(second["keysEstimated"], false);
    assert_eq!(second["maxMemoryBytes"], 104857600);
    assert!(second["memoryPercent"].as_f64().unwrap() > 0.0);
    assert!(second["pingLatencyMillis"].as_f64().unwrap() >= 0.0);
    assert_eq!(second["evictionPolicy"], "noeviction");
}

#[test]
fn faults_fail_cleanly_and_never_show_the_password() {
    let secret = "s3cr3t-Pa55word";
    let mut server = RedisServer::start(&["--requirepass", secret]);
    let agent = Agent::start(None, &["--redis-max-ops-per-second", "20000"]);
    let wrong = json!({"address": server.addr.to_string(), "password": "not-the-password"});
    // A failed sample answers with the code the operator turns into a condition reason.
    let (status, code, message) = stats_refused(&agent, wrong.clone());
    assert_eq!((status, code.as_str()), (502, "RedisAuthFailed"), "{message}");
    assert!(message.contains("authentication failed") && !message.contains("not-the-password"), "{message}");
    let (status, code, _) = stats_refused(&agent, json!({"address": "127.0.0.1:1", "dialTimeoutMillis": 500}));
    assert_eq!((status, code.as_str()), (502, "RedisUnreachable"));
    // An enforcement answers with an error code the operator decides on, not with text.
    let (status, refused) = enforce(&agent, wrong.clone(), json!({"type": "LRU", "maxKeys": 10}));
    assert_eq!((status, refused["code"].as_str()), (502, Some("RedisAuthFailed")), "{refused}");
    assert!(!refused.to_string().contains("not-the-password"));
    let unreachable = json!({"address": "127.0.0.1:1", "dialTimeoutMillis": 500});
    let (status, refused) = enforce(&agent, unreachable, json!({"type": "LRU", "maxKeys": 10}));
    assert_eq!((status, refused["code"].as_str()), (502, Some("RedisUnreachable")), "{refused}");
    let inv = run_invalidation(&agent, &invalidation("inv-wrongpass", wrong, json!({"name": "x", "pattern": "*"})));
    assert_eq!(inv["state"], "Failed");
    assert!(
        inv["error"].as_str().unwrap().contains("authentication failed")
            && !inv.to_string().contains("not-the-password"),
        "{inv}"
    );

    // The same id sent again once it failed runs again (here with the right password).
    let right_once = json!({"address": server.addr.to_string(), "password": secret});
    let retried =
        run_invalidation(&agent, &invalidation("inv-wrongpass", right_once, json!({"name": "x", "pattern": "none:*"})));
    assert_eq!(retried["state"], "Succeeded", "{retried}");

    // Killed mid-invalidation: the job fails with what it did so far, the agent keeps serving.
    let right = json!({"address": server.addr.to_string(), "password": secret});
    let port = server.addr.port();
    let batch: Vec<Vec<String>> = (0..200_000).map(|i| set_cmd(&format!("{PREFIX}bulk:{i}"))).collect();
    redis_load_auth(port, secret, &batch);
    let request = invalidation("inv-killed", right.clone(), json!({"name": "bulk", "pattern": "bulk:*"}));
    assert_eq!(agent.request("POST", "/v1/cache/invalidations", Some(&request)).0, 202);
    std::thread::sleep(Duration::from_millis(1500));
    server.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let s = agent.request("GET", "/v1/cache/invalidations/inv-killed", None).1;
        if s["state"] != "Running" {
            break s;
        }
        assert!(Instant::now() < deadline, "{s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(failed["state"], "Failed", "{failed}");
    let done = failed["keysDeleted"].as_u64().unwrap();
    assert!(done > 0 && done < 200_000, "reports the count done: {failed}");
    assert_eq!(
        biometrics_test_support::http_request(agent.addr, "GET", "/healthz", &[], b"").0,
        200,
        "the agent keeps serving"
    );
    // Its pooled connection is stale now: the fresh dial says what happened.
    let (status, code, message) = stats_refused(&agent, right);
    assert_eq!((status, code.as_str()), (502, "RedisUnreachable"), "{message}");
    assert!(!message.contains(secret));

    // Bad requests change nothing and say why.
    let cases = [
        (
            invalidation(
                "inv-bad1",
                json!({"address": "127.0.0.1:1"}),
                json!({"name": "x", "pattern": "a".repeat(300)}),
            ),
            "pattern must be 1 to 256",
        ),
        (
            json!({"id": "inv-bad2", "policy": {"namespace": NAMESPACE, "name": "users"}, "redis": {"address": "127.0.0.1:1"}, "keyPrefix": "", "rule": {"name": "x", "pattern": "*"}}),
            "keyPrefix must not be empty",
        ),
        (
            invalidation(
                "inv-bad3",
                json!({"address": "127.0.0.1:1"}),
                json!({"name": "x", "pattern": "*", "prefix": "a"}),
            ),
            "exactly one of",
        ),
        (invalidation("inv-bad4", json!({"address": "127.0.0.1:1"}), json!({"name": "x"})), "exactly one of"),
    ];
    for (body, reason) in cases {
        let (status, response) = agent.request("POST", "/v1/cache/invalidations", Some(&body));
        assert_eq!(status, 400, "{response}");
        assert!(response["message"].as_str().unwrap().contains(reason), "{response}");
    }
}

fn redis_load_auth(port: u16, password: &str, commands: &[Vec<String>]) {
    let mut all = vec![vec!["AUTH".to_owned(), password.to_owned()]];
    all.extend_from_slice(commands);
    redis_load(port, &all);
}

fn cluster_target(cluster: &RedisCluster) -> Value {
    json!({"address": cluster.nodes[0].addr.to_string(), "cluster": true})
}

#[test]
fn the_core_cases_on_a_three_master_cluster() {
    let cluster = RedisCluster::start();
    for i in 0..60 {
        cluster.cli(&["set", &format!("{PREFIX}user:{i}"), "v"]);
    }
    for k in ["app1:user:1", "other:user:1", "app[1]:s*ss:1", "app[1]:session:1", "app[1]:session:2"] {
        cluster.cli(&["set", k, "v"]);
    }
    cluster.cli(&[
        "sadd",
        &format!("{PREFIX}tag:active"),
        &format!("{PREFIX}session:1"),
        &format!("{PREFIX}session:2"),
        "other:user:1",
    ]);
    let spread = cluster
        .nodes
        .iter()
        .filter(|n| n.cli(None, &["--scan", "--pattern", "app?1?:user:*"]).lines().count() > 0)
        .count();
    assert_eq!(spread, 3, "the keys live on every master");
    let agent = Agent::start(None, &[]);
    let s = run_invalidation(
        &agent,
        &invalidation("cl-pattern", cluster_target(&cluster), json!({"name": "users", "pattern": "user:*"})),
    );
    assert_eq!((s["state"].as_str(), s["keysDeleted"].as_u64()), (Some("Succeeded"), Some(60)), "{s}");
    let s = run_invalidation(
        &agent,
        &invalidation("cl-prefix", cluster_target(&cluster), json!({"name": "odd", "prefix": "s*ss:"})),
    );
    assert_eq!(s["keysDeleted"], 1, "{s}");
    let s = run_invalidation(
        &agent,
        &invalidation("cl-tags", cluster_target(&cluster), json!({"name": "t", "tags": ["active"]})),
    );
    assert_eq!(s["keysDeleted"], 3, "two members and the set: {s}");
    cluster.cli(&["set", &format!("{PREFIX}solo"), "v"]);
    let s = run_invalidation(
        &agent,
        &invalidation("cl-keys", cluster_target(&cluster), json!({"name": "k", "keys": ["solo", "missing"]})),
    );
    assert_eq!(s["keysDeleted"], 1, "{s}");
    let left: Vec<String> = cluster.keys().into_iter().filter(|k| !k.contains("biometrics:done")).collect();
    assert_eq!(left, ["app1:user:1", "other:user:1"], "only the keys outside the prefix remain");
    // The same id again on the cluster does not run twice.
    let again = run_invalidation(
        &agent,
        &invalidation("cl-pattern", cluster_target(&cluster), json!({"name": "users", "pattern": "user:*"})),
    );
    assert_eq!(again["keysDeleted"], 60);
    let st = stats(&agent, cluster_target(&cluster));
    assert_eq!(st["reachable"], true, "{st}");
    assert_eq!(st["keysUnderPrefix"], 0, "{st}");
}

#[test]
fn tls_connections_verify_the_server() {
    let dir = tempfile::tempdir().unwrap();
    biometrics_test_support::tls_material(dir.path(), "IP:127.0.0.1,DNS:localhost");
    let file = |f: &str| dir.path().join(f).display().to_string();
    let server = RedisServer::start_tls(dir.path(), &["--requirepass", "tls-secret"]);
    let port = server.addr.port();
    let tls_target = json!({"address": server.addr.to_string(), "tls": true, "password": "tls-secret"});
    // An agent that trusts the CA talks TLS to Redis.
    let trusting = Agent::start_with_env(None, &[], &[("SSL_CERT_FILE", &file("ca.pem"))]);
    let s = stats(&trusting, tls_target.clone());
    assert_eq!(s["reachable"], true, "{s}");
    let out = Command::new("redis-cli")
        .args([
            "--tls",
            "--cacert",
            &file("ca.pem"),
            "-p",
            &port.to_string(),
            "--no-auth-warning",
            "-a",
            "tls-secret",
            "set",
            &format!("{PREFIX}user:1"),
            "v",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let done = run_invalidation(
        &trusting,
        &invalidation("inv-tls", tls_target.clone(), json!({"name": "u", "keys": ["user:1"]})),
    );
    assert_eq!(done["keysDeleted"], 1, "{done}");
    // One that does not trust it refuses the server.
    let doubting = Agent::start(None, &[]);
    let (status, code, message) = stats_refused(&doubting, tls_target);
    assert_eq!((status, code.as_str()), (502, "RedisCertificateUntrusted"), "{message}");
    assert!(!message.contains("tls-secret"));
}

#[test]
fn a_private_ca_and_a_server_name_other_than_the_address_are_verified() {
    let password = "private-ca-secret";
    let (pki, stranger) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The certificate names a Service, not the loopback address the agent dials.
    biometrics_test_support::tls_material(pki.path(), "DNS:redis.shop.svc");
    biometrics_test_support::tls_material(stranger.path(), "DNS:redis.shop.svc");
    let ca = std::fs::read_to_string(pki.path().join("ca.pem")).unwrap();
    let other_ca = std::fs::read_to_string(stranger.path().join("ca.pem")).unwrap();
    let mut server = RedisServer::start_tls(pki.path(), &["--requirepass", password]);
    let port = server.addr.port();
    let set_key = |key: &str| {
        let ca_file = pki.path().join("ca.pem").display().to_string();
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert", &ca_file, "--sni", "redis.shop.svc", "-p", &port.to_string()])
            .args(["--no-auth-warning", "-a", password, "set", key, "v"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let target = |ca: &str, name: Option<&str>| {
        let mut t = json!({"address": server.addr.to_string(), "tls": true, "password": password, "caBundle": ca});
        if let Some(name) = name {
            t["tlsServerName"] = json!(name);
        }
        t
    };
    // The system's roots do not hold the private CA: this agent trusts it only when told.
    let agent = Agent::start(None, &[]);
    let trusted = target(&ca, Some("redis.shop.svc"));
    let s = stats(&agent, trusted.clone());
    assert_eq!(s["reachable"], true, "{s}");
    set_key(&format!("{PREFIX}user:1"));
    let done =
        run_invalidation(&agent, &invalidation("inv-ca", trusted.clone(), json!({"name": "u", "keys": ["user:1"]})));
    assert_eq!((done["state"].as_str(), done["keysDeleted"].as_u64()), (Some("Succeeded"), Some(1)), "{done}");

    // Each refusal has its own code and says what was verified against what.
    let pem_body = ca.lines().nth(1).unwrap().to_owned();
    let refusals = [
        (target(&other_ca, Some("redis.shop.svc")), "RedisCertificateUntrusted", "redis.caSecretRef"),
        (target(&ca, None), "RedisServerNameMismatch", "the host of redis.address"),
        (target(&ca, Some("redis.other.svc")), "RedisServerNameMismatch", "\"redis.other.svc\""),
        (
            json!({"address": server.addr.to_string(), "tls": true, "password": password}),
            "RedisCertificateUntrusted",
            "system's roots",
        ),
    ];
    for (redis, expected, says) in refusals {
        let (status, code, message) = stats_refused(&agent, redis);
        assert_eq!((status, code.as_str()), (502, expected), "{message}");
        assert!(message.contains(says), "{message}");
        assert!(!message.contains(password) && !message.contains(&pem_body), "{message}");
    }

    // What cannot be a CA bundle, or TLS settings without TLS, are refused before any dial.
    let bad = [
        target("not a certificate", Some("redis.shop.svc")),
        target("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", None),
        json!({"address": server.addr.to_string(), "tlsServerName": "redis.shop.svc"}),
        target(&ca, Some("not a name!")),
    ];
    for redis in bad {
        let (status, code, message) = stats_refused(&agent, redis.clone());
        assert_eq!((status, code.as_str()), (400, "InvalidRequest"), "{redis}: {message}");
    }

    // The server restarts: the connection verified under the other name is replaced rather
    // than kept failing.
    server.kill();
    let _server = RedisServer::start_tls_on(port, pki.path(), &["--requirepass", password]);
    set_key(&format!("{PREFIX}user:2"));
    let rule = json!({"name": "u", "keys": ["user:2"]});
    let first = run_invalidation(&agent, &invalidation("inv-ca-2", trusted.clone(), rule.clone()));
    let done = if first["state"] == "Succeeded" {
        first
    } else {
        run_invalidation(&agent, &invalidation("inv-ca-3", trusted, rule))
    };
    assert_eq!((done["state"].as_str(), done["keysDeleted"].as_u64()), (Some("Succeeded"), Some(1)), "{done}");
}

#[test]
fn a_cancelled_invalidation_stops_and_keeps_what_it_did_not_reach() {
    let server = RedisServer::start(&[]);
    let agent = Agent::start(None, &["--redis-max-ops-per-second", "2000"]);
    redis_load(server.addr.port(), &(0..20_000).map(|i| set_cmd(&format!("{PREFIX}bulk:{i}"))).collect::<Vec<_>>());
    let request = invalidation("inv-cancel", target(&server), json!({"name": "bulk", "pattern": "bulk:*"}));
    assert_eq!(agent.request("POST", "/v1/cache/invalidations", Some(&request)).0, 202);
    std::thread::sleep(Duration::from_millis(800));
    let (code, body) = agent.request("DELETE", "/v1/cache/invalidations/inv-cancel", None);
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let stopped = loop {
        let s = agent.request("GET", "/v1/cache/invalidations/inv-cancel", None).1;
        if s["state"] != "Running" {
            break s;
        }
        assert!(Instant::now() < deadline, "{s}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(stopped["state"], "Failed", "{stopped}");
    assert!(stopped["error"].as_str().unwrap().contains("cancelled"), "{stopped}");
    let left = keys(&server).len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(keys(&server).len(), left, "nothing is deleted after the cancellation");
    assert!(left > 10_000, "most keys were not reached: {left} left");
    assert_eq!(agent.request("DELETE", "/v1/cache/invalidations/nope", None).0, 404);
}

#[test]
fn the_operator_gives_any_agent_the_policy_its_app_reads() {
    let agent = Agent::start(None, &[]);
    assert_eq!(agent.request_with("GET", "/v1/cache/policy", None, b"").0, 404, "nothing served yet");
    let policy = json!({"policy": {"namespace": NAMESPACE, "name": "users"}, "keyPrefix": PREFIX, "strategy": {"type": "WriteBehind", "asyncWrite": true, "writeBatchSize": 100, "maxKeys": 1000, "manageServerEvictionPolicy": false}, "appliedAt": "2026-01-01T00:00:00Z"});
    let body = policy.to_string();
    assert_eq!(
        agent.request_with("PUT", "/v1/cache/app-policy", None, body.as_bytes()).0,
        401,
        "only the operator sets it"
    );
    let (status, answer) = agent.request("PUT", "/v1/cache/app-policy", Some(&policy));
    assert_eq!(status, 200, "{answer}");
    // A second CachePolicy selecting the same pod is served beside the first, not over it.
    let sessions = json!({"policy": {"namespace": NAMESPACE, "name": "sessions"}, "keyPrefix": "sessions:", "strategy": {"type": "TTL", "ttlSeconds": 60, "asyncWrite": false, "manageServerEvictionPolicy": false}, "appliedAt": "2026-01-01T00:00:01Z"});
    assert_eq!(agent.request("PUT", "/v1/cache/app-policy", Some(&sessions)).0, 200);
    let (status, served) = agent.request_with("GET", "/v1/cache/policy", None, b"");
    assert_eq!(status, 200, "{served}");
    assert_eq!(served, json!([sessions, policy]), "the app reads every policy the operator set, by name");
    let (status, one) = agent.request_with("GET", &format!("/v1/cache/policy?policy={NAMESPACE}/users"), None, b"");
    assert_eq!((status, one), (200, policy.clone()), "one policy by name");
    assert_eq!(agent.request_with("GET", &format!("/v1/cache/policy?policy={NAMESPACE}/nope"), None, b"").0, 404);
    // The same policy again replaces its own entry only.
    let mut changed = policy.clone();
    changed["strategy"]["maxKeys"] = json!(10);
    assert_eq!(agent.request("PUT", "/v1/cache/app-policy", Some(&changed)).0, 200);
    assert_eq!(agent.request_with("GET", "/v1/cache/policy", None, b"").1, json!([sessions, changed]));
    let mut bad = policy.clone();
    bad["keyPrefix"] = json!("");
    assert_eq!(agent.request("PUT", "/v1/cache/app-policy", Some(&bad)).0, 400);
    let mut bad_name = policy.clone();
    bad_name["policy"]["name"] = json!("../x");
    assert_eq!(agent.request("PUT", "/v1/cache/app-policy", Some(&bad_name)).0, 400);
    assert_eq!(
        agent.request_with("GET", "/v1/cache/policy", None, b"").1,
        json!([sessions, changed]),
        "a refused one changes nothing"
    );
}

/// Connections the Redis server has open, its own `redis-cli` included.
fn connected_clients(server: &RedisServer) -> usize {
    server.cli(None, &["CLIENT", "LIST"]).lines().filter(|l| l.starts_with("id=")).count()
}

#[test]
fn redis_connections_are_pooled_per_target_and_bounded() {
    let server = RedisServer::start(&[]);
    let agent = Agent::start(None, &["--max-redis-connections", "4", "--redis-idle-timeout", "2s"]);
    let before = connected_clients(&server);
    let stats_with =
        |redis: Value| agent.request("POST", "/v1/cache/stats", Some(&json!({"redis": redis, "keyPrefix": PREFIX})));
    // A password that changes with every request (a rotating Secret, or a hostile caller)
    // replaces the target's connection instead of adding one.
    for i in 0..200 {
        // The server's default user has `nopass`: every password is accepted.
        let redis = json!({"address": server.addr.to_string(), "username": "default", "password": format!("pw-{i}")});
        let (status, body) = stats_with(redis);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["reachable"], true, "{body}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = connected_clients(&server);
    assert!(after <= before + 1, "one connection for the target, not one per password: {before} -> {after}");
    // Distinct targets are capped: four databases are served, a fifth is refused by name.
    for db in 0..3 {
        let (_, body) = stats_with(json!({"address": server.addr.to_string(), "database": db + 1}));
        assert_eq!(body["reachable"], true, "{body}");
    }
    let (status, refused) = stats_with(json!({"address": server.addr.to_string(), "database": 9}));
    assert_eq!((status, refused["code"].as_str()), (429, Some("TooManyRequests")), "{refused}");
    let reason = refused["message"].as_str().unwrap();
    assert!(reason.contains("4 Redis connections") && reason.contains("--max-redis-connections"), "{reason}");
    assert!(connected_clients(&server) <= before + 4, "never more than the cap");
    // Unused, they are closed: the pool empties and the fifth target is served.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(connected_clients(&server), before, "idle connections closed");
    let (_, body) = stats_with(json!({"address": server.addr.to_string(), "database": 9}));
    assert_eq!(body["reachable"], true, "{body}");
    // A target grows to its poolSize, within the cap, and its connections are used in turn.
    for _ in 0..6 {
        let (_, body) = stats_with(json!({"address": server.addr.to_string(), "database": 9, "poolSize": 3}));
        assert_eq!(body["reachable"], true, "{body}");
    }
    assert_eq!(connected_clients(&server), before + 3, "three connections for poolSize 3");
}

/// Microseconds Redis spent on the commands it ran since the last `CONFIG RESETSTAT`, by its
/// own `INFO commandstats` (the `CONFIG` that reset them left out).
fn redis_usec_since_reset(server: &RedisServer) -> u64 {
    server
        .cli(None, &["info", "commandstats"])
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_config"))
        .filter_map(|l| l.split(',').find_map(|f| f.strip_prefix("usec=")).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// Tests that load millions of keys run one at a time: Redis' own timings are what they
/// measure, and two of them at once on a small machine would skew each other's.
static LARGE_KEYSPACE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Seconds of CPU the server's main thread (the one that runs commands) has used, by its own
/// `INFO cpu`: unlike the wall-clock timings of `commandstats` and the slow log, it does not
/// grow when the machine is busy with other work and the server waits for a core.
fn redis_main_thread_cpu(server: &RedisServer) -> f64 {
    let info = server.cli(None, &["info", "cpu"]);
    ["used_cpu_user_main_thread:", "used_cpu_sys_main_thread:"]
        .iter()
        .map(|field| {
            info.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap()
        })
        .sum()
}

#[test]
fn statistics_cost_redis_a_bounded_time_on_a_large_keyspace() {
    let _alone = LARGE_KEYSPACE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let server = RedisServer::start(&["--enable-debug-command", "yes"]);
    server.cli(None, &["debug", "populate", "2000000", "bulk"]);
    redis_load(server.addr.port(), &(0..100).map(|i| set_cmd(&format!("{PREFIX}user:{i}"))).collect::<Vec<_>>());
    assert_eq!(server.cli(None, &["dbsize"]).trim(), "2000100");
    let agent = Agent::start(None, &[]);
    // 5,000 keys a call: a pass takes about 400 calls; 420 see one end whatever the
    // estimates before it said.
    // Judged on the typical call and step (the 95th percentile), so a moment when the
    // machine's other work stalls the server does not decide; a call that walked the whole
    // keyspace would cost seconds and fails the ceiling on the costliest.
    let (mut per_call, mut per_step, mut most_usec) = (Vec::new(), Vec::new(), 0);
    let last = loop {
        server.cli(None, &["config", "resetstat"]);
        let cpu_before = redis_main_thread_cpu(&server);
        let s = stats(&agent, target(&server));
        // Includes the INFO that reads it and the one before: an upper bound.
        let cpu = redis_main_thread_cpu(&server) - cpu_before;
        let usec = redis_usec_since_reset(&server);
        assert!(
            cpu < 0.5,
            "one statistics call cost Redis {:.1} ms of CPU (call {}, {usec} µs by commandstats): {s}\n{}",
            cpu * 1000.0,
            per_call.len(),
            server.cli(None, &["info", "commandstats"])
        );
        // A PING waits for at most the command in progress: the call is cut into SCAN steps
        // of a fraction of a millisecond of the server's CPU each (their wall-clock time in
        // commandstats stretches when the machine is busy; the CPU does not).
        let stats = server.cli(None, &["info", "commandstats"]);
        let scan = stats.lines().find(|l| l.starts_with("cmdstat_scan:")).unwrap_or_default();
        let steps: f64 = scan
            .split(',')
            .find_map(|f| f.strip_prefix("cmdstat_scan:calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.0);
        per_call.push(cpu);
        per_step.push(cpu / steps);
        most_usec = most_usec.max(usec);
        if per_call.len() == 420 {
            break s;
        }
    };
    let p95 = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() * 95 / 100]
    };
    let (call_p95, step_p95) = (p95(&mut per_call), p95(&mut per_step));
    assert!(call_p95 < 0.050, "a statistics call typically costs Redis {:.1} ms of CPU", call_p95 * 1000.0);
    assert!(step_p95 < 0.002, "a SCAN step typically costs Redis {:.2} ms of CPU", step_p95 * 1000.0);
    assert_eq!(last["keysUnderPrefix"], 100, "a whole pass finishes over successive calls: {last}");
    assert_eq!(last["keysEstimated"], true, "a count spread over calls says it is one: {last}");
    eprintln!(
        "{} statistics calls for one pass over 2,000,100 keys: 95th percentile {:.2} ms of Redis CPU, the costliest {:.2} ms, {most_usec} µs by commandstats",
        per_call.len(),
        call_p95 * 1000.0,
        per_call.last().copied().unwrap_or_default() * 1000.0
    );
    // The next call still reports the last complete count.
    let next = stats(&agent, target(&server));
    assert_eq!((next["keysUnderPrefix"].as_u64(), next["keysEstimated"].as_bool()), (Some(100), Some(true)));
}

#[test]
fn max_keys_trims_a_million_keys_as_a_job_in_bounded_memory() {
    let _alone = LARGE_KEYSPACE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let server = RedisServer::start(&["--enable-debug-command", "yes"]);
    // DEBUG POPULATE names its keys `<prefix>:<n>`: all under the policy's prefix.
    server.cli(None, &["debug", "populate", "1000000", &format!("{PREFIX}bulk")]);
    // The trim ranks keys by idle time, which Redis counts in whole seconds of a clock it
    // updates ten times a second (later when busy), compared by the agent with a second of
    // slack against its own clock. So the touched keys must be several seconds more recent
    // by the server's own reading, not by a sleep of ours: wait until the newest untouched
    // key (the last one populated) has idled `SEPARATION` seconds on the server, then touch.
    // The touch is stamped from the same clock, later, so the gap is at least that.
    const SEPARATION: u64 = 5;
    let newest_untouched = format!("{PREFIX}bulk:999999");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let idle: u64 = server.cli(None, &["object", "idletime", &newest_untouched]).trim().parse().unwrap();
        if idle >= SEPARATION {
            break;
        }
        assert!(Instant::now() < deadline, "the server's idle clock did not reach {SEPARATION} s ({idle} s)");
        std::thread::sleep(Duration::from_millis(100));
    }
    let recent: Vec<String> = (0..1000).map(|i| format!("{PREFIX}bulk:{i}")).collect();
    for chunk in recent.chunks(100) {
        let mut args = vec!["mget"];
        args.extend(chunk.iter().map(String::as_str));
        server.cli(None, &args);
    }
    redis_load(server.addr.port(), &[set_cmd("outside:1")]);
    let agent = Agent::start(None, &[]);
    let before = biometrics_test_support::rss_bytes(agent.process.pid());
    let peak = biometrics_test_support::RssPeak::start(agent.process.pid());
    let body = json!({"id": "trim-million", "redis": target(&server), "keyPrefix": PREFIX,
        "strategy": {"type": "LRU", "maxKeys": 1000}});
    let (status, job) = agent.request("POST", "/v1/cache/enforce", Some(&body));
    assert_eq!((status, job["state"].as_str()), (202, Some("Running")), "answered at once, as a job: {job}");
    // Progress shows while it runs, and the same id answers for the same job.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, again) = agent.request("POST", "/v1/cache/enforce", Some(&body));
        assert_eq!(again["id"], "trim-million");
        if again["keysScanned"].as_u64().unwrap_or(0) > 0 || again["state"] != "Running" {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {again}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let job = wait_enforcement(&agent, "trim-million", Duration::from_secs(600));
    let growth = peak.finish().saturating_sub(before);
    assert_eq!(job["state"], "Succeeded", "{job}");
    assert_eq!(job["keysTrimmed"], 999_000, "{job}");
    assert_eq!(server.cli(None, &["dbsize"]).trim(), "1001", "1000 keys under the prefix and the one outside");
    let kept = server.cli(None, &["exists", &recent[0], &recent[500], &recent[999]]);
    assert_eq!(kept.trim(), "3", "the recently used keys stay");
    eprintln!("trimmed 999,000 of 1,000,000 keys: agent RSS grew {} KiB", growth / 1024);
    assert!(growth < 32 << 20, "the agent's RSS grew {} MiB", growth >> 20);
}

#[test]
fn an_enforcement_is_cancelled_by_its_id() {
    let server = RedisServer::start(&["--enable-debug-command", "yes"]);
    server.cli(None, &["debug", "populate", "200000", &format!("{PREFIX}bulk")]);
    let agent = Agent::start(None, &["--redis-max-ops-per-second", "20000"]);
    let body = json!({"id": "trim-slow", "redis": target(&server), "keyPrefix": PREFIX,
        "strategy": {"type": "LRU", "maxKeys": 10}});
    let (status, _) = agent.request("POST", "/v1/cache/enforce", Some(&body));
    assert_eq!(status, 202);
    std::thread::sleep(Duration::from_millis(500));
    let (status, job) = agent.request("DELETE", "/v1/cache/enforce/trim-slow", None);
    assert_eq!(status, 200, "{job}");
    let job = wait_enforcement(&agent, "trim-slow", Duration::from_secs(10));
    assert_eq!(job["state"], "Failed", "{job}");
    assert!(job["error"].as_str().unwrap_or_default().contains("cancelled"), "{job}");
    let left: u64 = server.cli(None, &["dbsize"]).trim().parse().unwrap();
    assert!(left > 10, "stopped before the trim finished: {left} keys left");
    let (status, _) = agent.request("GET", "/v1/cache/enforce/nope", None);
    assert_eq!(status, 404);
}
