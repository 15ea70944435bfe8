//! The CachePolicy controller end to end: the real operator binary against the test API
//! server, real agents on loopback "pod" addresses, a real `redis-server`; policies applied
//! with kubectl.

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use biometrics_crds::v1alpha1::{CachePolicy, InvalidationResult, InvalidationStatus, InvalidationTrigger};
use biometrics_test_support::{RedisServer, redis_load};
use common::*;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

const PREFIX: &str = "users:";

/// A world of cache pods (agents without a Go program) and an operator that samples every
/// 2 s and re-enforces every 3 s.
async fn cache_world(ips: &[&str], agent_args: &[&str]) -> World {
    let mut world = World::start(&[]).await;
    world.agent_args = agent_args.iter().map(|a| (*a).to_owned()).collect();
    let config = world.dir.path().join("operator.yaml");
    std::fs::write(&config, "performance:\n  metrics:\n    interval: 2s\n  cache:\n    enforce_interval: 3s\n")
        .unwrap();
    world.operator_args = vec!["--config".into(), config.display().to_string()];
    for (i, ip) in ips.iter().enumerate() {
        world.add_pod_with(&format!("cache-{i}"), ip.parse().unwrap(), None, "cache").await;
    }
    world
}

fn policy_manifest(name: &str, redis: &RedisServer, extra: &str) -> String {
    let strategy = if extra.contains("strategy:") { "" } else { "  strategy:\n    type: LRU\n" };
    format!(
        "apiVersion: biometrics.io/v1alpha1\nkind: CachePolicy\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  selector:\n    matchLabels:\n      app: cache\n  redis:\n    address: {}\n  keyPrefix: \"{PREFIX}\"\n{strategy}{extra}",
        redis.addr
    )
}

fn set_cmd(key: &str) -> Vec<String> {
    vec!["SET".into(), key.into(), "v".into()]
}

/// The keys in Redis, but the agents' own bookkeeping (`<prefix>biometrics:…`).
fn keys(redis: &RedisServer, auth: Option<&str>) -> BTreeSet<String> {
    redis.cli(auth, &["--scan"]).lines().filter(|k| !k.contains("biometrics:")).map(str::to_owned).collect()
}

async fn wait_policy(world: &World, name: &str, timeout: Duration, done: impl Fn(&CachePolicy) -> bool) -> CachePolicy {
    let api: Api<CachePolicy> = Api::namespaced(world.client.clone(), NS);
    let deadline = Instant::now() + timeout;
    loop {
        let cp = api.get(name).await.unwrap();
        if done(&cp) {
            return cp;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not reach the expected state: {:#?}\n{}",
            cp.status,
            world.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn rule<'a>(cp: &'a CachePolicy, name: &str) -> Option<&'a InvalidationStatus> {
    cp.status.as_ref()?.invalidations.iter().find(|e| e.name == name)
}

fn all_finished(cp: &CachePolicy, names: &[&str]) -> bool {
    names.iter().all(|n| rule(cp, n).is_some_and(|e| e.result == Some(InvalidationResult::Succeeded)))
}

fn condition(cp: &CachePolicy, type_: &str) -> Option<(String, String, String)> {
    cp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn run_ids(cp: &CachePolicy) -> Vec<Option<String>> {
    cp.status.as_ref().unwrap().invalidations.iter().map(|e| e.run_id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_delete_exactly_their_keys_and_rerun_only_when_due() {
    let redis = RedisServer::start(&[]);
    let port = redis.addr.port();
    let mut seed: Vec<Vec<String>> = Vec::new();
    seed.extend((0..50).map(|i| set_cmd(&format!("{PREFIX}user:{i}"))));
    seed.extend((0..30).map(|i| set_cmd(&format!("{PREFIX}session:{i}"))));
    seed.extend((0..10).map(|i| set_cmd(&format!("{PREFIX}keep:{i}"))));
    seed.extend(["t:1", "t:2", "k:a", "k:b"].map(|k| set_cmd(&format!("{PREFIX}{k}"))));
    seed.push(set_cmd("other:user:1"));
    seed.push(vec!["SADD".into(), format!("{PREFIX}tag:hot"), format!("{PREFIX}t:1"), format!("{PREFIX}t:2")]);
    redis_load(port, &seed);
    let before = keys(&redis, None);

    let mut world = cache_world(&["127.0.1.2", "127.0.1.3"], &[]).await;
    world.start_operator();
    let rules = |user_pattern: &str| {
        format!(
            "  invalidations:\n  - name: users\n    pattern: \"{user_pattern}\"\n  - name: sessions\n    prefix: \"session:\"\n  - name: hot\n    tags: [hot]\n  - name: listed\n    keys: [\"k:a\", \"k:b\"]\n"
        )
    };
    world.kubectl(&["apply", "-f", "-"], Some(&policy_manifest("users", &redis, &rules("user:*"))));
    let names = ["users", "sessions", "hot", "listed"];
    let cp = wait_policy(&world, "users", Duration::from_secs(60), |cp| all_finished(cp, &names)).await;
    let after = keys(&redis, None);
    let lost: BTreeSet<&String> = before.difference(&after).collect();
    let expected: BTreeSet<String> = (0..50)
        .map(|i| format!("{PREFIX}user:{i}"))
        .chain((0..30).map(|i| format!("{PREFIX}session:{i}")))
        .chain(["t:1", "t:2", "k:a", "k:b", "tag:hot"].map(|k| format!("{PREFIX}{k}")))
        .collect();
    assert_eq!(lost, expected.iter().collect(), "exactly the intended keys disappear");
    let counted: i64 = names.iter().map(|n| rule(&cp, n).unwrap().keys_deleted.unwrap()).sum();
    assert_eq!(counted, i64::try_from(lost.len()).unwrap(), "status counts what Redis lost: {:#?}", cp.status);
    assert_eq!(rule(&cp, "users").unwrap().keys_deleted, Some(50));
    for n in names {
        let e = rule(&cp, n).unwrap();
        assert_eq!(e.trigger, Some(InvalidationTrigger::Change));
        assert_eq!(e.applied_generation, cp.metadata.generation);
    }
    let status = cp.status.clone().unwrap();
    assert_eq!(status.observed_generation, cp.metadata.generation);
    let executor = status.executor.clone().unwrap();
    assert!(executor.starts_with("cache-"), "{executor}");
    assert_eq!(condition(&cp, "Ready").unwrap().0, "True", "{:#?}", cp.status);
    let printed = world.kubectl(&["get", "cpol", "-n", NS], None);
    assert!(printed.lines().any(|l| l.starts_with("users") && l.contains("LRU") && l.contains(&executor)), "{printed}");

    // Edit one rule: only it runs again.
    redis_load(port, &(0..50).map(|i| set_cmd(&format!("{PREFIX}user:{i}"))).collect::<Vec<_>>());
    redis_load(port, &(0..30).map(|i| set_cmd(&format!("{PREFIX}session:{i}"))).collect::<Vec<_>>());
    let ids = run_ids(&cp);
    world.kubectl(&["apply", "-f", "-"], Some(&policy_manifest("users", &redis, &rules("user:1*"))));
    let cp = wait_policy(&world, "users", Duration::from_secs(60), |cp| {
        rule(cp, "users").is_some_and(|e| {
            e.result == Some(InvalidationResult::Succeeded) && e.applied_generation == cp.metadata.generation
        }) && cp.status.as_ref().unwrap().observed_generation == cp.metadata.generation
    })
    .await;
    assert_eq!(rule(&cp, "users").unwrap().keys_deleted, Some(11), "user:1 and user:10..19");
    let new_ids = run_ids(&cp);
    let changed: Vec<bool> = ids.iter().zip(&new_ids).map(|(a, b)| a != b).collect();
    let order: Vec<String> = cp.status.as_ref().unwrap().invalidations.iter().map(|e| e.name.clone()).collect();
    assert_eq!(
        order.iter().zip(&changed).filter(|(_, c)| **c).map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["users"],
        "only the edited rule ran"
    );
    assert_eq!(keys(&redis, None).iter().filter(|k| k.contains("session:")).count(), 30, "sessions did not run");
    for n in ["sessions", "hot", "listed"] {
        assert_eq!(rule(&cp, n).unwrap().applied_generation, cp.metadata.generation, "current at the new generation");
    }

    // invalidate-now: every rule once.
    world.kubectl(&["annotate", "cpol", "users", "-n", NS, "biometrics.io/invalidate-now=1"], None);
    let cp = wait_policy(&world, "users", Duration::from_secs(60), |cp| {
        all_finished(cp, &names)
            && names.iter().all(|n| rule(cp, n).unwrap().trigger == Some(InvalidationTrigger::Manual))
    })
    .await;
    assert_eq!(keys(&redis, None).iter().filter(|k| k.contains("session:")).count(), 0);
    let ids = run_ids(&cp);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let api: Api<CachePolicy> = Api::namespaced(world.client.clone(), NS);
    assert_eq!(run_ids(&api.get("users").await.unwrap()), ids, "nothing runs twice");
    let described = world.kubectl(&["describe", "cpol", "users", "-n", NS], None);
    for note in ["rule sessions (Manual) deleted 30 keys", "rule hot (Manual) deleted 0 keys", "rule users (Manual)"] {
        assert!(described.contains(note), "each rule's latest run has its Event: {described}");
    }
    let metrics = biometrics_test_support::http_get(world.operator_metrics.unwrap(), "/metrics");
    assert!(metrics.contains(r#"biometrics_operator_invalidations_total{result="succeeded"} 9"#), "{metrics}");
    assert!(cp.metadata.finalizers.as_ref().unwrap().iter().any(|f| f == "biometrics.io/cachepolicy"));
}

async fn set_deployment_status(world: &World, status: serde_json::Value) {
    let api: Api<Deployment> = Api::namespaced(world.client.clone(), NS);
    api.patch_status("api", &PatchParams::default(), &Patch::Merge(&json!({ "status": status }))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_invalidates_once_after_it_completes() {
    let redis = RedisServer::start(&[]);
    let port = redis.addr.port();
    let mut world = cache_world(&["127.0.1.4"], &[]).await;
    let deployments: Api<Deployment> = Api::namespaced(world.client.clone(), NS);
    // The test plays the Deployment controller: it numbers each new pod template's revision
    // in deployment.kubernetes.io/revision and reports the rollout in status. (It stages
    // what a real controller would not hold still for: a rollout paused half-way, a
    // scale-out, the same template re-serialised with a defaulted field. The rollout as
    // the local cluster's controllers and kubelet run it is in cluster_e2e.rs.)
    let deployment = json!({
        "metadata": {"name": "api", "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}}, "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "app", "image": "api:v1"}]}}}
    });
    deployments.create(&PostParams::default(), &serde_json::from_value(deployment).unwrap()).await.unwrap();
    set_deployment_status(&world, json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2})).await;
    world.start_operator();
    world.kubectl(
        &["apply", "-f", "-"],
        Some(&policy_manifest(
            "api-cache",
            &redis,
            "  invalidations:\n  - name: on-deploy\n    pattern: \"page:*\"\n    onRolloutOf:\n      kind: Deployment\n      name: api\n",
        )),
    );
    let first = wait_policy(&world, "api-cache", Duration::from_secs(60), |cp| all_finished(cp, &["on-deploy"])).await;
    let first_id = rule(&first, "on-deploy").unwrap().run_id.clone();
    let seed = || redis_load(port, &(0..20).map(|i| set_cmd(&format!("{PREFIX}page:{i}"))).collect::<Vec<_>>());
    seed();

    // The template changes; the rollout is under way: nothing yet.
    deployments
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(&json!({
                "metadata": {"annotations": {"deployment.kubernetes.io/revision": "2"}},
                "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "api:v2"}]}}}
            })),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    set_deployment_status(
        &world,
        json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    set_deployment_status(
        &world,
        json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let api: Api<CachePolicy> = Api::namespaced(world.client.clone(), NS);
    let during = api.get("api-cache").await.unwrap();
    assert_eq!(rule(&during, "on-deploy").unwrap().run_id, first_id, "no run before the rollout completes");
    assert!(
        rule(&during, "on-deploy").unwrap().message.as_deref().unwrap_or("").contains("waiting for the rollout"),
        "{:#?}",
        during.status
    );
    assert_eq!(keys(&redis, None).len(), 20, "old pods may still refill the cache: nothing deleted yet");

    // Complete: the rule runs once.
    set_deployment_status(&world, json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2})).await;
    let after = wait_policy(&world, "api-cache", Duration::from_secs(30), |cp| {
        rule(cp, "on-deploy").is_some_and(|e| {
            e.trigger == Some(InvalidationTrigger::Rollout) && e.result == Some(InvalidationResult::Succeeded)
        })
    })
    .await;
    assert_eq!(rule(&after, "on-deploy").unwrap().keys_deleted, Some(20));
    assert!(keys(&redis, None).is_empty());
    seed();
    let id = rule(&after, "on-deploy").unwrap().run_id.clone();
    // A scale-out is not a rollout, nor is the template serialised with a field defaulted that
    // was not before (the revision stays), and a finished rollout does not run again.
    let defaulted = json!({"spec": {"replicas": 3, "template": {"spec": {"terminationGracePeriodSeconds": 30, "containers": [{"name": "app", "image": "api:v2", "terminationMessagePath": "/dev/termination-log"}]}}}});
    deployments.patch("api", &PatchParams::default(), &Patch::Merge(&defaulted)).await.unwrap();
    set_deployment_status(&world, json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3})).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(rule(&api.get("api-cache").await.unwrap(), "on-deploy").unwrap().run_id, id);
    assert_eq!(keys(&redis, None).len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_executor_hands_its_invalidation_to_another_agent() {
    let redis = RedisServer::start(&[]);
    redis_load(redis.addr.port(), &(0..20_000).map(|i| set_cmd(&format!("{PREFIX}bulk:{i}"))).collect::<Vec<_>>());
    let mut world = cache_world(&["127.0.1.5", "127.0.1.6"], &["--redis-max-ops-per-second", "1500"]).await;
    world.start_operator();
    world.kubectl(
        &["apply", "-f", "-"],
        Some(&policy_manifest("bulk", &redis, "  invalidations:\n  - name: bulk\n    pattern: \"bulk:*\"\n")),
    );
    let running = wait_policy(&world, "bulk", Duration::from_secs(60), |cp| {
        rule(cp, "bulk")
            .is_some_and(|e| e.result == Some(InvalidationResult::Running) && e.keys_deleted.unwrap_or(0) > 0)
    })
    .await;
    let first = running.status.as_ref().unwrap().executor.clone().unwrap();
    let id = rule(&running, "bulk").unwrap().run_id.clone();
    // The executor's pod goes away mid-invalidation.
    let index = world.pods.iter().position(|p| p.name == first).unwrap();
    world.pods[index].agent.take().unwrap().kill();
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), NS);
    pods.delete(&first, &DeleteParams::default()).await.unwrap();

    let done = wait_policy(&world, "bulk", Duration::from_secs(120), |cp| {
        rule(cp, "bulk").is_some_and(|e| e.result != Some(InvalidationResult::Running))
    })
    .await;
    let entry = rule(&done, "bulk").unwrap();
    let second = done.status.as_ref().unwrap().executor.clone().unwrap();
    assert_ne!(second, first);
    assert_eq!(entry.result, Some(InvalidationResult::Succeeded), "{entry:?}");
    assert_eq!(entry.run_id, id, "the same job, re-driven");
    assert_eq!(entry.executor.as_deref(), Some(second.as_str()));
    assert!(entry.message.as_deref().unwrap_or("").contains(&format!("after {first} was lost")), "{entry:?}");
    assert!(keys(&redis, None).is_empty(), "every key is gone");
    let counted = entry.keys_deleted.unwrap();
    assert!(counted <= 20_000 && counted > 15_000, "counted {counted}: the lost executor's progress is carried over");
    let described = world.kubectl(&["describe", "cpol", "bulk", "-n", NS], None);
    assert!(
        described.contains("ExecutorChanged") && described.contains(&format!("{second} takes over")),
        "{described}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_reachability_show_in_conditions_never_the_password() {
    let password = "Redis-Pa55-e2e";
    let wrong = "Wrong-Pa55-e2e";
    let mut redis = RedisServer::start(&["--requirepass", password]);
    let port = redis.addr.port();
    let mut world = cache_world(&["127.0.1.7"], &[]).await;
    world.start_operator();
    let manifest = policy_manifest("secured", &redis, "  invalidations:\n  - name: all\n    pattern: \"*\"\n")
        .replace("  keyPrefix:", "    passwordSecretRef:\n      name: redis-auth\n  keyPrefix:");
    world.kubectl(&["apply", "-f", "-"], Some(&manifest));
    let cp = wait_policy(&world, "secured", Duration::from_secs(30), |cp| {
        condition(cp, "Ready").is_some_and(|c| c.1 == "SecretNotFound")
    })
    .await;
    assert!(condition(&cp, "Ready").unwrap().2.contains(&format!("Secret {NS}/redis-auth not found")));
    assert_eq!(condition(&cp, "Degraded").unwrap().0, "True");

    let secret = |value: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: redis-auth\n  namespace: {NS}\nstringData:\n  password: {value}\n"
        )
    };
    world.kubectl(&["apply", "-f", "-"], Some(&secret(wrong)));
    let cp = wait_policy(&world, "secured", Duration::from_secs(30), |cp| {
        condition(cp, "RedisReachable").is_some_and(|c| c.1 == "AuthenticationFailed")
    })
    .await;
    assert!(condition(&cp, "RedisReachable").unwrap().2.contains("authentication failed"));

    world.kubectl(&["apply", "-f", "-"], Some(&secret(password)));
    wait_policy(&world, "secured", Duration::from_secs(30), |cp| {
        condition(cp, "RedisReachable").is_some_and(|c| c.0 == "True")
            && condition(cp, "Ready").is_some_and(|c| c.0 == "True")
            && all_finished(cp, &["all"])
    })
    .await;

    // Redis stops: unreachable and degraded, with the reason; back when it returns.
    redis.kill();
    let cp = wait_policy(&world, "secured", Duration::from_secs(30), |cp| {
        condition(cp, "RedisReachable").is_some_and(|c| c.0 == "False" && c.1 == "Unreachable")
    })
    .await;
    let degraded = condition(&cp, "Degraded").unwrap();
    assert_eq!((degraded.0.as_str(), degraded.1.as_str()), ("True", "Unreachable"), "{degraded:?}");
    assert!(!cp.status.as_ref().unwrap().redis.as_ref().unwrap().reachable);
    let _redis = RedisServer::start_on(port, &["--requirepass", password]);
    wait_policy(&world, "secured", Duration::from_secs(30), |cp| {
        condition(cp, "RedisReachable").is_some_and(|c| c.0 == "True")
            && condition(cp, "Degraded").is_some_and(|c| c.0 == "False")
    })
    .await;
    let described = world.kubectl(&["describe", "cpol", "secured", "-n", NS], None);
    assert!(described.contains("RedisUnreachable") && described.contains("SecretNotFound"), "{described}");

    // Nowhere: status, Events, operator and agent logs.
    let status = world.kubectl(&["get", "cpol", "secured", "-n", NS, "-o", "json"], None);
    let events = world.kubectl(&["get", "events", "-n", NS, "-o", "json"], None);
    let logs = world.all_logs();
    assert!(logs.contains("biometrics"), "the logs were captured");
    for (what, text) in [("status", &status), ("events", &events), ("logs", &logs)] {
        for secret in [password, wrong] {
            assert!(!text.contains(secret), "the password appears in the {what}");
        }
    }
}

/// The password Secret is read once per 30 s while a policy runs (not at every dispatch and
/// statistics sample), and read again at once when Redis refuses the password it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_secret_is_read_seldom_and_again_when_refused() {
    let redis = RedisServer::start(&["--requirepass", "First-Pa55"]);
    let options = biometrics_test_apiserver::Options { record_requests: true, ..Default::default() };
    let mut world = World::start_with(options, &[]).await;
    let config = world.dir.path().join("operator.yaml");
    std::fs::write(&config, "performance:\n  metrics:\n    interval: 1s\n  cache:\n    enforce_interval: 1s\n")
        .unwrap();
    world.operator_args = vec!["--config".into(), config.display().to_string()];
    world.add_pod_with("cache-0", "127.0.1.40".parse().unwrap(), None, "cache").await;
    let secret = |value: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: redis-auth\n  namespace: {NS}\nstringData:\n  password: {value}\n"
        )
    };
    world.kubectl(&["apply", "-f", "-"], Some(&secret("First-Pa55")));
    world.start_operator();
    let manifest = policy_manifest("rotating", &redis, "")
        .replace("  keyPrefix:", "    passwordSecretRef:\n      name: redis-auth\n  keyPrefix:");
    world.kubectl(&["apply", "-f", "-"], Some(&manifest));
    let reachable = |cp: &CachePolicy| condition(cp, "RedisReachable").is_some_and(|c| c.0 == "True");
    wait_policy(&world, "rotating", Duration::from_secs(30), reachable).await;
    // Statistics every second and enforcement every second: the Secret is read once at most.
    let reads = || {
        world
            .server
            .requests()
            .iter()
            .filter(|r| r.verb == "get" && r.resource == "secrets" && r.name == "redis-auth")
            .filter(|r| !r.user_agent.starts_with("kubectl"))
            .count()
    };
    let before = reads();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = reads() - before;
    assert!(during <= 1, "{during} reads of the Secret in 10 s of a running policy");

    // The password rotates: Redis refuses the one held, and the new one is read at once.
    redis.cli(Some("First-Pa55"), &["CONFIG", "SET", "requirepass", "Second-Pa55"]);
    // Connections already authenticated would carry on: they go.
    redis.cli(Some("Second-Pa55"), &["CLIENT", "KILL", "TYPE", "normal"]);
    world.kubectl(&["apply", "-f", "-"], Some(&secret("Second-Pa55")));
    let rotated = Instant::now();
    wait_policy(&world, "rotating", Duration::from_secs(30), |cp| {
        condition(cp, "RedisReachable").is_some_and(|c| c.1 == "AuthenticationFailed")
    })
    .await;
    wait_policy(&world, "rotating", Duration::from_secs(30), reachable).await;
    assert!(reads() > before + during, "the Secret was read again");
    println!("reachable again {:?} after the rotation", rotated.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eviction_policy_is_enforced_and_the_hit_ratio_measured() {
    let redis = RedisServer::start(&[]);
    let port = redis.addr.port();
    let mut world = cache_world(&["127.0.1.8"], &[]).await;
    world.start_operator();
    world.kubectl(
        &["apply", "-f", "-"],
        Some(&policy_manifest("lru", &redis, "  strategy:\n    type: LRU\n    manageServerEvictionPolicy: true\n")),
    );
    let cp = wait_policy(&world, "lru", Duration::from_secs(30), |cp| {
        cp.status
            .as_ref()
            .and_then(|s| s.enforcement.as_ref())
            .is_some_and(|e| e.eviction_policy.as_deref() == Some("allkeys-lru"))
    })
    .await;
    assert_eq!(redis.cli(None, &["CONFIG", "GET", "maxmemory-policy"]).lines().nth(1), Some("allkeys-lru"));
    assert!(cp.status.as_ref().unwrap().enforcement.as_ref().unwrap().result == Some(InvalidationResult::Succeeded));

    // Changed behind our back: a drift Event, and set again.
    redis.cli(None, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let described = world.kubectl(&["describe", "cpol", "lru", "-n", NS], None);
        if described.contains("EvictionPolicyDrift") {
            assert!(described.contains("was noeviction instead of allkeys-lru; set again"), "{described}");
            break;
        }
        assert!(Instant::now() < deadline, "no drift event: {described}\n{}", world.operator_log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(redis.cli(None, &["CONFIG", "GET", "maxmemory-policy"]).lines().nth(1), Some("allkeys-lru"));

    // 30 hits and 10 misses between two samples: 75 %.
    redis_load(port, &(0..30).map(|i| set_cmd(&format!("{PREFIX}h:{i}"))).collect::<Vec<_>>());
    let lookups: Vec<Vec<String>> = (0..40)
        .map(|i| if i % 4 == 3 { format!("{PREFIX}missing:{i}") } else { format!("{PREFIX}h:{}", i - i / 4) })
        .map(|k| vec!["GET".into(), k])
        .collect();
    let api: Api<CachePolicy> = Api::namespaced(world.client.clone(), NS);
    let mut seen = Vec::new();
    let measured = 'attempts: {
        for _ in 0..5 {
            redis_load(port, &lookups);
            let deadline = Instant::now() + Duration::from_secs(6);
            while Instant::now() < deadline {
                let ratio =
                    api.get("lru").await.unwrap().status.and_then(|s| s.redis).and_then(|r| r.server_hit_ratio_percent);
                if ratio == Some(75.0) {
                    break 'attempts true;
                }
                seen.push(ratio);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        false
    };
    assert!(measured, "the hit ratio never read 75%: {seen:?}");
    let printed = world.kubectl(&["get", "cpol", "lru", "-n", NS], None);
    assert!(printed.contains("75"), "{printed}");
}

/// Everything sent to `addr`, by a listener that never answers (a plain-HTTP "agent").
fn record_everything(addr: std::net::SocketAddr) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = std::io::Read::read(&mut stream, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_agent_tls_the_password_travels_only_over_tls() {
    let password = "Tls-Only-Pa55";
    let redis = RedisServer::start(&["--requirepass", password]);
    let pki = tempfile::tempdir().unwrap();
    biometrics_test_support::tls_material(pki.path(), "DNS:biometrics-agent");
    let file = |f: &str| pki.path().join(f).display().to_string();
    let mut world =
        cache_world(&["127.0.1.10"], &["--tls-cert", &file("server.pem"), "--tls-key", &file("server.key")]).await;
    world.operator_args.extend(["--agent-scheme".into(), "https".into(), "--agent-ca-bundle".into(), file("ca.pem")]);
    // A pod whose "agent" speaks plain HTTP (here: records what it is sent, answers nothing).
    let plain_ip: std::net::IpAddr = "127.0.1.11".parse().unwrap();
    let seen = record_everything(std::net::SocketAddr::new(plain_ip, 9477));
    world.create_pod("plain-0", plain_ip, "plain").await;
    world.start_operator();
    world.kubectl(
        &["apply", "-f", "-"],
        Some(&format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: redis-auth\n  namespace: {NS}\nstringData:\n  password: {password}\n")),
    );
    let with_secret = |name: &str, app: &str| {
        policy_manifest(name, &redis, "  invalidations:\n  - name: all\n    pattern: \"*\"\n")
            .replace("  keyPrefix:", "    passwordSecretRef:\n      name: redis-auth\n  keyPrefix:")
            .replace("app: cache", &format!("app: {app}"))
    };
    world.kubectl(&["apply", "-f", "-"], Some(&with_secret("over-tls", "cache")));
    world.kubectl(&["apply", "-f", "-"], Some(&with_secret("to-plain", "plain")));
    wait_policy(&world, "over-tls", Duration::from_secs(30), |cp| {
        all_finished(cp, &["all"]) && condition(cp, "RedisReachable").is_some_and(|c| c.0 == "True")
    })
    .await;
    let refused = wait_policy(&world, "to-plain", Duration::from_secs(60), |cp| {
        rule(cp, "all").is_some_and(|e| e.result == Some(InvalidationResult::Failed))
    })
    .await;
    assert_eq!(refused.status.as_ref().unwrap().executor.as_deref(), Some("plain-0"));
    let sent = seen.lock().unwrap().clone();
    assert!(!sent.is_empty(), "the operator did try the plain agent");
    assert_eq!(sent[0], 0x16, "only a TLS handshake was sent, never an HTTP request");
    assert!(!sent.windows(password.len()).any(|w| w == password.as_bytes()), "the password never went out in clear");
}

/// A Redis whose certificate, from its own CA, names a Service rather than the address the
/// agent dials: trusted through `caSecretRef` and verified under `tlsServerName`; a wrong CA
/// or name is its own reason on the policy; the PEM and the password show nowhere; fields
/// that need TLS are refused without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_behind_a_private_ca_is_verified_under_its_service_name() {
    let password = "Private-Ca-Pa55";
    let (pki, stranger) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    biometrics_test_support::tls_material(pki.path(), "DNS:redis.shop.svc");
    biometrics_test_support::tls_material(stranger.path(), "DNS:redis.shop.svc");
    let ca = std::fs::read_to_string(pki.path().join("ca.pem")).unwrap();
    let other_ca = std::fs::read_to_string(stranger.path().join("ca.pem")).unwrap();
    let redis = RedisServer::start_tls(pki.path(), &["--requirepass", password]);
    let mut world = cache_world(&["127.0.1.41"], &[]).await;
    world.start_operator();
    let secrets = |ca: &str| {
        let indented: String = ca.lines().map(|l| format!("    {l}\n")).collect();
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: redis-auth\n  namespace: {NS}\nstringData:\n  password: {password}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata:\n  name: redis-ca\n  namespace: {NS}\nstringData:\n  ca.crt: |\n{indented}"
        )
    };
    world.kubectl(&["apply", "-f", "-"], Some(&secrets(&other_ca)));
    let manifest = |name: &str| {
        policy_manifest("private-ca", &redis, "  invalidations:\n  - name: all\n    pattern: \"*\"\n").replace(
            "  keyPrefix:",
            &format!(
                "    tls: true\n    caSecretRef:\n      name: redis-ca\n    tlsServerName: {name}\n    passwordSecretRef:\n      name: redis-auth\n  keyPrefix:"
            ),
        )
    };
    world.kubectl(&["apply", "-f", "-"], Some(&manifest("redis.shop.svc")));
    let reachable = |reason: &'static str| {
        move |cp: &CachePolicy| {
            condition(cp, "RedisReachable").is_some_and(|c| c.1 == reason)
                && condition(cp, "Ready").is_some_and(|c| c.1 == reason || reason == "Reachable")
        }
    };
    let cp = wait_policy(&world, "private-ca", Duration::from_secs(30), reachable("CertificateUntrusted")).await;
    let (_, _, message) = condition(&cp, "RedisReachable").unwrap();
    assert!(message.contains("not trusted by the CA bundle of redis.caSecretRef"), "{message}");

    // The right CA: read again at once (the refused one is forgotten), and the rule runs.
    world.kubectl(&["apply", "-f", "-"], Some(&secrets(&ca)));
    let ca_fixed = Instant::now();
    wait_policy(&world, "private-ca", Duration::from_secs(30), |cp| {
        reachable("Reachable")(cp)
            && condition(cp, "Ready").is_some_and(|c| c.0 == "True")
            && all_finished(cp, &["all"])
    })
    .await;
    println!("reachable {:?} after the CA was corrected", ca_fixed.elapsed());

    // A name the certificate does not list.
    world.kubectl(&["apply", "-f", "-"], Some(&manifest("redis.other.svc")));
    let cp = wait_policy(&world, "private-ca", Duration::from_secs(30), reachable("ServerNameMismatch")).await;
    let (_, _, message) = condition(&cp, "RedisReachable").unwrap();
    assert!(message.contains("not valid for redis.tlsServerName \"redis.other.svc\""), "{message}");
    assert!(cp.status.as_ref().unwrap().conditions.iter().all(|c| c.observed_generation == cp.metadata.generation));

    // A Secret key that is no CA bundle is the policy's reason before any agent dials.
    world.kubectl(&["apply", "-f", "-"], Some(&secrets("not a certificate")));
    world.kubectl(&["apply", "-f", "-"], Some(&manifest("redis.shop.svc")));
    let cp = wait_policy(&world, "private-ca", Duration::from_secs(40), |cp| {
        condition(cp, "Ready").is_some_and(|c| c.1 == "SecretKeyInvalid")
    })
    .await;
    let (_, _, message) = condition(&cp, "Ready").unwrap();
    assert!(message.contains("holds no PEM certificate") && message.contains("redis-ca"), "{message}");

    // TLS settings without TLS, and a server name for a cluster, are refused by the schema.
    let api: Api<CachePolicy> = Api::namespaced(world.client.clone(), NS);
    for (redis_spec, says) in [
        (
            json!({"address": "redis:6379", "caSecretRef": {"name": "redis-ca"}}),
            "caSecretRef applies only with tls: true",
        ),
        (
            json!({"address": "redis:6379", "tlsServerName": "redis.shop.svc"}),
            "tlsServerName applies only with tls: true",
        ),
        (
            json!({"address": "redis:6379", "tls": true, "cluster": true, "tlsServerName": "redis.shop.svc"}),
            "tlsServerName cannot be used with cluster",
        ),
        (json!({"address": "redis:6379", "tls": true, "tlsServerName": "not a name!"}), "tlsServerName"),
    ] {
        let bad = json!({
            "apiVersion": "biometrics.io/v1alpha1", "kind": "CachePolicy", "metadata": {"name": "refused"},
            "spec": {"selector": {}, "redis": redis_spec, "keyPrefix": "x:", "strategy": {"type": "LRU"}}
        });
        let err = api.create(&PostParams::default(), &serde_json::from_value(bad).unwrap()).await.unwrap_err();
        let kube::Error::Api(status) = err else { panic!("expected an API error, got {err:?}") };
        assert_eq!(status.code, 422, "{}", status.message);
        assert!(status.message.contains(says), "{}", status.message);
    }

    // Nowhere: status, Events, operator and agent logs.
    let status = world.kubectl(&["get", "cpol", "private-ca", "-n", NS, "-o", "json"], None);
    let events = world.kubectl(&["get", "events", "-n", NS, "-o", "json"], None);
    let logs = world.all_logs();
    let pem_lines: Vec<&str> = ca.lines().chain(other_ca.lines()).filter(|l| !l.starts_with("-----")).collect();
    for (what, text) in [("status", &status), ("events", &events), ("logs", &logs)] {
        assert!(!text.contains(password), "the password appears in the {what}");
        for line in &pem_lines {
            assert!(!text.contains(line), "the CA bundle appears in the {what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_policy_cancels_its_running_invalidation() {
    let redis = RedisServer::start(&[]);
    redis_load(redis.addr.port(), &(0..20_000).map(|i| set_cmd(&format!("{PREFIX}bulk:{i}"))).collect::<Vec<_>>());
    let mut world = cache_world(&["127.0.1.12"], &["--redis-max-ops-per-second", "1500"]).await;
    world.start_operator();
    world.kubectl(
        &["apply", "-f", "-"],
        Some(&policy_manifest("doomed", &redis, "  invalidations:\n  - name: bulk\n    pattern: \"bulk:*\"\n")),
    );
    wait_policy(&world, "doomed", Duration::from_secs(60), |cp| {
        rule(cp, "bulk")
            .is_some_and(|e| e.result == Some(InvalidationResult::Running) && e.keys_deleted.unwrap_or(0) > 0)
    })
    .await;
    world.kubectl(&["delete", "cpol", "doomed", "-n", NS, "--timeout=30s"], None);
    let api: Api<CachePolicy> = Api::namespaced(world.client.clone(), NS);
    assert!(api.get_opt("doomed").await.unwrap().is_none(), "the finalizer let go");
    let left = keys(&redis, None).len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(keys(&redis, None).len(), left, "the job stopped with the policy");
    assert!(left > 5_000, "{left} keys left: the job was cut short");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_selected_agent_serves_its_app_the_write_behind_settings() {
    let redis = RedisServer::start(&[]);
    let mut world = cache_world(&["127.0.1.13", "127.0.1.14"], &[]).await;
    world.start_operator();
    world.kubectl(
        &["apply", "-f", "-"],
        Some(&policy_manifest(
            "orders",
            &redis,
            "  strategy:\n    type: WriteBehind\n    asyncWrite: true\n    writeBatchSize: 100\n    maxKeys: 1000\n    ttl: 1h\n",
        )),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for pod in world.pods.iter().map(|p| p.ip) {
        let served = loop {
            let (status, body) = biometrics_test_support::http_request(
                std::net::SocketAddr::new(pod, 9477),
                "GET",
                &format!("/v1/cache/policy?policy={NS}/orders"),
                &[],
                b"",
            );
            if status == 200 {
                break serde_json::from_slice::<serde_json::Value>(&body).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{pod} serves no policy: {}\n{}",
                String::from_utf8_lossy(&body),
                world.operator_log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(served["policy"], serde_json::json!({"namespace": NS, "name": "orders"}), "served by its name");
        assert_eq!(served["keyPrefix"], PREFIX);
        assert_eq!(served["strategy"]["type"], "WriteBehind");
        assert_eq!(
            (served["strategy"]["asyncWrite"].as_bool(), served["strategy"]["writeBatchSize"].as_u64()),
            (Some(true), Some(100))
        );
        assert_eq!(served["strategy"]["ttlSeconds"], 3600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_trim_runs_as_a_job_the_operator_polls_to_its_end() {
    let redis = RedisServer::start(&["--enable-debug-command", "yes"]);
    redis.cli(None, &["debug", "populate", "200000", &format!("{PREFIX}bulk")]);
    // Paced so that the trim outlasts any one request to the agent.
    let mut world = cache_world(&["127.0.1.20"], &["--redis-max-ops-per-second", "40000"]).await;
    world.start_operator();
    world.kubectl(
        &["apply", "-f", "-"],
        Some(&policy_manifest("trim", &redis, "  strategy:\n    type: LRU\n    maxKeys: 100\n")),
    );
    let running = wait_policy(&world, "trim", Duration::from_secs(60), |cp| {
        cp.status
            .as_ref()
            .and_then(|s| s.enforcement.as_ref())
            .is_some_and(|e| e.result == Some(InvalidationResult::Running) && e.keys_scanned.unwrap_or(0) > 0)
    })
    .await;
    let job = running.status.unwrap().enforcement.unwrap();
    assert!(job.job_id.as_deref().is_some_and(|id| id.starts_with("enforce-")), "{job:?}");
    assert_eq!(job.executor.as_deref(), Some("cache-0"));
    let done = wait_policy(&world, "trim", Duration::from_secs(120), |cp| {
        cp.status
            .as_ref()
            .and_then(|s| s.enforcement.as_ref())
            .is_some_and(|e| e.result != Some(InvalidationResult::Running))
    })
    .await;
    let e = done.status.unwrap().enforcement.unwrap();
    assert_eq!(
        (e.result, e.keys_trimmed, e.job_id.clone()),
        (Some(InvalidationResult::Succeeded), Some(199_900), job.job_id),
        "{e:?}"
    );
    assert_eq!(redis.cli(None, &["dbsize"]).trim(), "100");
    let described = world.kubectl(&["describe", "cpol", "trim", "-n", NS], None);
    assert!(described.contains("199900 keys trimmed"), "{described}");
}
