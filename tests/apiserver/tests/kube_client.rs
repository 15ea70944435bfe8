//! kube-rs 5 against the test API server: CRUD, conflicts, generations, status isolation,
//! server-side apply, watches, a Controller that reconciles each change once, leases.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use biometrics_crds::v1alpha1::{CachePolicy, CapturePhase, ProfileCapture, ProfileCaptureStatus};
use biometrics_test_apiserver::{Options, TestApiServer};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt,
        controller::{Action, Controller},
        predicates, watcher,
    },
};
use serde_json::json;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn server_with(options: Options) -> (TestApiServer, Client) {
    let server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.expect("server starts");
    let crds = ["profilecapture.yaml", "cachepolicy.yaml"].map(|f| repo_root().join("crds/yaml").join(f));
    server.create_from_files(&crds).expect("CRDs are accepted");
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    let client = Client::try_from(config).expect("client");
    (server, client)
}

async fn server() -> (TestApiServer, Client) {
    server_with(Options::default()).await
}

fn capture(name: &str) -> ProfileCapture {
    serde_json::from_value(json!({
        "apiVersion": "biometrics.io/v1alpha1",
        "kind": "ProfileCapture",
        "metadata": {"name": name, "labels": {"team": "checkout"}},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "target": {"port": 6060}}
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_with_defaults_selectors_and_conflicts() {
    let (_server, client) = server().await;
    let api: Api<ProfileCapture> = Api::namespaced(client, "default");
    let created = api.create(&PostParams::default(), &capture("one")).await.unwrap();
    // Schema defaults are applied by the server.
    assert_eq!(created.spec.duration.to_string(), "30s");
    assert_eq!(created.spec.retention.keep_runs, 5);
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    api.create(&PostParams::default(), &capture("two")).await.unwrap();
    let mut other = capture("three");
    other.metadata.labels = Some([("team".to_owned(), "search".to_owned())].into());
    api.create(&PostParams::default(), &other).await.unwrap();

    let err = api.create(&PostParams::default(), &capture("one")).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"), "{err:?}");

    let selected = api.list(&ListParams::default().labels("team=checkout")).await.unwrap();
    assert_eq!(selected.items.iter().map(ResourceExt::name_any).collect::<Vec<_>>(), ["one", "two"]);
    let set_based = api.list(&ListParams::default().labels("team notin (checkout)")).await.unwrap();
    assert_eq!(set_based.items.len(), 1);
    let by_name = api.list(&ListParams::default().fields("metadata.name=two")).await.unwrap();
    assert_eq!(by_name.items.len(), 1);
    let page = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let rest = api
        .list(&ListParams::default().limit(2).continue_token(page.metadata.continue_.as_deref().unwrap()))
        .await
        .unwrap();
    assert_eq!(rest.items.iter().map(ResourceExt::name_any).collect::<Vec<_>>(), ["two"]);

    // A replace from a stale copy is refused; from the latest it succeeds.
    let mut fresh = api.get("one").await.unwrap();
    let stale = fresh.clone();
    fresh.spec.suspend = true;
    api.replace("one", &PostParams::default(), &fresh).await.unwrap();
    let err = api.replace("one", &PostParams::default(), &stale).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"), "{err:?}");
    // Custom resources refuse an update without a resourceVersion, as kube-apiserver does.
    let mut unconditional = api.get("one").await.unwrap();
    unconditional.metadata.resource_version = None;
    let err = api.replace("one", &PostParams::default(), &unconditional).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 422), "{err:?}");

    api.delete("two", &DeleteParams::default()).await.unwrap();
    let err = api.get("two").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404), "{err:?}");
}

#[tokio::test]
async fn invalid_objects_are_refused_with_field_causes() {
    let (_server, client) = server().await;
    let api: Api<CachePolicy> = Api::namespaced(client, "default");
    let bad = json!({
        "apiVersion": "biometrics.io/v1alpha1", "kind": "CachePolicy", "metadata": {"name": "bad"},
        "spec": {"selector": {}, "redis": {"address": "redis:6379"}, "keyPrefix": "", "strategy": {"type": "LRU", "writeBatchSize": 5}}
    });
    let err = api.create(&PostParams::default(), &serde_json::from_value(bad).unwrap()).await.unwrap_err();
    let kube::Error::Api(status) = err else { panic!("expected an API error, got {err:?}") };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(status.message.contains("keyPrefix must not be empty"), "{}", status.message);
    assert!(status.message.contains("apply only to the WriteBehind strategy"), "{}", status.message);
    assert!(api.list(&ListParams::default()).await.unwrap().items.is_empty(), "nothing was stored");
}

#[tokio::test]
async fn generation_moves_with_spec_and_status_is_isolated() {
    let (_server, client) = server().await;
    let api: Api<ProfileCapture> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &capture("gen")).await.unwrap();

    // A status write through /status: generation unchanged, spec untouched even if sent.
    let status_patch = json!({
        "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture",
        "spec": {"selector": {}, "target": {"port": 1}},
        "status": {"phase": "Running", "observedGeneration": 1}
    });
    let after_status = api
        .patch_status("gen", &PatchParams::apply("biometrics-operator").force(), &Patch::Apply(&status_patch))
        .await
        .unwrap();
    assert_eq!(after_status.metadata.generation, Some(1));
    assert_eq!(after_status.spec.target.port, 6060, "a status write cannot change spec");
    assert_eq!(after_status.status.as_ref().and_then(|s| s.phase), Some(CapturePhase::Running));

    // A spec write through the main resource: generation + 1, status kept as it was.
    let spec_patch = json!({"spec": {"duration": "10s"}, "status": {"phase": "Failed"}});
    let after_spec = api.patch("gen", &PatchParams::default(), &Patch::Merge(&spec_patch)).await.unwrap();
    assert_eq!(after_spec.metadata.generation, Some(2));
    assert_eq!(
        after_spec.status.as_ref().and_then(|s| s.phase),
        Some(CapturePhase::Running),
        "a spec write cannot change status"
    );

    // A metadata-only change does not bump the generation.
    let label = json!({"metadata": {"labels": {"x": "y"}}});
    let after_label = api.patch("gen", &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    assert_eq!(after_label.metadata.generation, Some(2));

    // Writing the same status again changes nothing: no new resourceVersion.
    let rv = after_label.resource_version();
    let again = api
        .patch_status("gen", &PatchParams::apply("biometrics-operator").force(), &Patch::Apply(&status_patch))
        .await
        .unwrap();
    assert_eq!(again.resource_version(), rv, "an unchanged write must not bump the resourceVersion");
}

#[tokio::test]
async fn server_side_apply_owns_fields_and_reports_conflicts() {
    let (_server, client) = server().await;
    let api: Api<ProfileCapture> = Api::namespaced(client, "default");
    let applied = |suspend: Option<bool>, max_pods: Option<i32>| {
        let mut spec = json!({"selector": {"matchLabels": {"app": "api"}}, "target": {"port": 6060}});
        if let Some(s) = suspend {
            spec["suspend"] = json!(s);
        }
        if let Some(m) = max_pods {
            spec["maxPods"] = json!(m);
        }
        json!({"apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture", "metadata": {"name": "ssa"}, "spec": spec})
    };
    // Apply creates.
    let created = api.patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&applied(None, Some(3)))).await.unwrap();
    assert_eq!(created.spec.max_pods, Some(3));
    let managers: Vec<String> =
        created.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    assert_eq!(managers, ["alice"]);

    // Another manager changing alice's field conflicts, unless it forces.
    let err = api.patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(&applied(None, Some(5)))).await.unwrap_err();
    let kube::Error::Api(status) = err else { panic!("expected a conflict, got {err:?}") };
    assert_eq!(status.code, 409);
    assert!(status.message.contains("conflict with \"alice\""), "{}", status.message);
    assert!(status.message.contains(".spec.maxPods"), "{}", status.message);
    let forced =
        api.patch("ssa", &PatchParams::apply("bob").force(), &Patch::Apply(&applied(None, Some(5)))).await.unwrap();
    assert_eq!(forced.spec.max_pods, Some(5));

    // A field its only manager stops applying is removed.
    api.patch(
        "ssa",
        &PatchParams::apply("carol"),
        &Patch::Apply(&json!({
            "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture", "metadata": {"name": "ssa"},
            "spec": {"schedule": "@hourly"}
        })),
    )
    .await
    .unwrap();
    assert!(api.get("ssa").await.unwrap().spec.schedule.is_some());
    let dropped = api.patch("ssa", &PatchParams::apply("carol"), &Patch::Apply(&json!({
        "apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture", "metadata": {"name": "ssa", "labels": {"owner": "carol"}}
    }))).await.unwrap();
    assert!(dropped.spec.schedule.is_none(), "carol stopped applying spec.schedule");
    assert_eq!(dropped.spec.max_pods, Some(5), "bob's field stays");
}

#[tokio::test]
async fn watch_delivers_changes_after_a_resource_version() {
    let (_server, client) = server().await;
    let api: Api<ProfileCapture> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &capture("before")).await.unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = api.watch(&kube::api::WatchParams::default().labels("team=checkout"), &rv).await.unwrap().boxed();
    api.create(&PostParams::default(), &capture("after")).await.unwrap();
    api.patch("after", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": true}}))).await.unwrap();
    // Leaving the selector reads as a deletion for this watch.
    api.patch("after", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"team": "other"}}})))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        match event {
            kube::api::WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.name_any())),
            kube::api::WatchEvent::Modified(o) => {
                seen.push(format!("MODIFIED {} suspend={}", o.name_any(), o.spec.suspend))
            }
            kube::api::WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.name_any())),
            kube::api::WatchEvent::Bookmark(_) => {}
            kube::api::WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(
        seen,
        ["ADDED after", "MODIFIED after suspend=true", "DELETED after"],
        "nothing from before the resourceVersion"
    );
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_is_gone() {
    let (_server, client) = server_with(Options { event_log_capacity: 5, ..Options::default() }).await;
    let api: Api<ProfileCapture> = Api::namespaced(client, "default");
    for i in 0..10 {
        api.create(&PostParams::default(), &capture(&format!("c{i}"))).await.unwrap();
    }
    let mut stream = api.watch(&kube::api::WatchParams::default(), "1").await.unwrap().boxed();
    let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(event, kube::api::WatchEvent::Error(ref e) if e.code == 410), "{event:?}");
}

#[tokio::test]
async fn a_controller_reconciles_each_change_once_without_relisting() {
    let (server, client) =
        server_with(Options { bookmark_interval: Duration::from_millis(200), ..Options::default() }).await;
    let api: Api<ProfileCapture> = Api::namespaced(client.clone(), "default");
    let reconciles = Arc::new(AtomicUsize::new(0));
    let ctx = Arc::new((api.clone(), reconciles.clone()));
    async fn reconcile(
        obj: Arc<ProfileCapture>,
        ctx: Arc<(Api<ProfileCapture>, Arc<AtomicUsize>)>,
    ) -> Result<Action, kube::Error> {
        ctx.1.fetch_add(1, Ordering::SeqCst);
        // Like the operator: write status with SSA, which must not wake the controller again.
        let status = ProfileCaptureStatus {
            observed_generation: obj.metadata.generation,
            phase: Some(CapturePhase::Pending),
            ..Default::default()
        };
        let patch = json!({"apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture", "status": status});
        ctx.0
            .patch_status(&obj.name_any(), &PatchParams::apply("test-controller").force(), &Patch::Apply(&patch))
            .await?;
        Ok(Action::await_change())
    }
    fn error_policy(
        _: Arc<ProfileCapture>,
        _: &kube::Error,
        _: Arc<(Api<ProfileCapture>, Arc<AtomicUsize>)>,
    ) -> Action {
        Action::requeue(Duration::from_secs(1))
    }
    let (reader, writer) = kube::runtime::reflector::store();
    let stream = watcher(api.clone(), watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let controller =
        tokio::spawn(Controller::for_stream(stream, reader).run(reconcile, error_policy, ctx).for_each(|_| async {}));

    api.create(&PostParams::default(), &capture("ctl")).await.unwrap();
    let wait_for = |n: usize| {
        let reconciles = reconciles.clone();
        async move {
            for _ in 0..100 {
                if reconciles.load(Ordering::SeqCst) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(1).await;
    for i in 0..3 {
        api.patch("ctl", &PatchParams::default(), &Patch::Merge(json!({"spec": {"maxPods": i + 1}}))).await.unwrap();
        wait_for(2 + i as usize).await;
    }
    // Give stray wake-ups (own status writes, bookmarks) time to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(reconciles.load(Ordering::SeqCst), 4, "one reconcile per spec change, none for our own status writes");
    assert_eq!(server.counts().get("list", "profilecaptures"), 1, "the watcher listed once and then only watched");
    assert!(server.counts().get("watch", "profilecaptures") <= 2, "no watch restart loop");
    let status = api.get_status("ctl").await.unwrap().status.unwrap();
    assert_eq!(status.observed_generation, Some(4));
    controller.abort();
}

#[tokio::test]
async fn leases_serialise_leaders_by_resource_version() {
    let (_server, client) = server().await;
    let api: Api<Lease> = Api::namespaced(client, "default");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "biometrics-operator"},
        "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    api.create(&PostParams::default(), &lease).await.unwrap();
    // Both replicas read the lease; the first to write wins, the second gets a conflict.
    let mut a = api.get("biometrics-operator").await.unwrap();
    let mut b = a.clone();
    a.spec.as_mut().unwrap().holder_identity = Some("replica-a".into());
    b.spec.as_mut().unwrap().holder_identity = Some("replica-b".into());
    a.spec.as_mut().unwrap().lease_transitions = Some(1);
    api.replace("biometrics-operator", &PostParams::default(), &a).await.unwrap();
    let err = api.replace("biometrics-operator", &PostParams::default(), &b).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409), "{err:?}");
    assert_eq!(
        api.get("biometrics-operator").await.unwrap().spec.unwrap().holder_identity.as_deref(),
        Some("replica-a")
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_server, client) = server().await;
    let api: Api<ProfileCapture> = Api::namespaced(client, "default");
    let mut c = capture("fin");
    c.metadata.finalizers = Some(vec!["biometrics.io/cleanup".into()]);
    api.create(&PostParams::default(), &c).await.unwrap();
    api.delete("fin", &DeleteParams::default()).await.unwrap();
    let terminating = api.get("fin").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.generation, Some(2), "setting deletionTimestamp bumps the generation");
    // A terminating object takes no new finalizers.
    let err = api
        .patch(
            "fin",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["biometrics.io/cleanup", "other"]}})),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 422), "{err:?}");
    api.patch("fin", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    let err = api.get("fin").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "removing the last finalizer completes the deletion: {err:?}"
    );
}

/// The garbage collector's two ways: deleting an owner deletes its dependents, and a
/// dependent created after its owner was deleted (or naming one that never existed) is
/// collected too, as kube-controller-manager's does, while one whose owner exists stays.
#[tokio::test]
async fn dependents_go_with_their_owners() {
    let (_server, client) = server().await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, "default");
    let owner = cms
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap())
        .await
        .unwrap();
    let dependent = |name: &str, uid: &str| {
        serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid
        }]}}))
        .unwrap()
    };
    cms.create(&PostParams::default(), &dependent("kept", owner.metadata.uid.as_deref().unwrap())).await.unwrap();
    cms.create(&PostParams::default(), &dependent("stray", "5d1c8a4e-never-existed")).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cms.get_opt("stray").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the orphan was not collected");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(cms.get_opt("kept").await.unwrap().is_some(), "a dependent whose owner exists stays");
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    assert!(cms.get_opt("kept").await.unwrap().is_none(), "and goes with it");
}

#[tokio::test]
async fn recorder_events_are_visible_through_the_core_event_api() {
    use kube::{
        Resource,
        runtime::events::{Event, EventType, Recorder, Reporter},
    };
    let (_server, client) = server().await;
    let api: Api<ProfileCapture> = Api::namespaced(client.clone(), "default");
    let capture = api.create(&PostParams::default(), &capture("evented")).await.unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: "biometrics-operator".into(), instance: Some("op-0".into()) },
    );
    let event = Event {
        type_: EventType::Warning,
        reason: "PodFailed".into(),
        note: Some("agent did not answer".into()),
        action: "Capture".into(),
        secondary: None,
    };
    recorder.publish(&event, &capture.object_ref(&())).await.unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, "default");
    let listed = core
        .list(
            &ListParams::default()
                .fields(&format!("involvedObject.name=evented,involvedObject.uid={}", capture.uid().unwrap())),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1, "kubectl describe finds the Event by its involved object");
    let e = &listed.items[0];
    assert_eq!(e.reason.as_deref(), Some("PodFailed"));
    assert_eq!(e.message.as_deref(), Some("agent did not answer"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
}

#[tokio::test]
async fn streaming_list_watch_sends_initial_events_then_changes() {
    let (server, client) = server().await;
    let api: Api<ProfileCapture> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &capture("existing")).await.unwrap();
    let mut stream =
        watcher(api.clone(), watcher::Config::default().streaming_lists()).default_backoff().applied_objects().boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.name_any(), "existing");
    api.create(&PostParams::default(), &capture("new")).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.name_any(), "new");
    assert_eq!(server.counts().get("list", "profilecaptures"), 0, "a streaming list needs no list request");
}

#[tokio::test]
async fn json_patch_test_operations_guard_the_patch() {
    let (_server, client) = server().await;
    let api: Api<ProfileCapture> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &capture("jp")).await.unwrap();
    let guarded = |expected_port: u16| -> json_patch::Patch {
        serde_json::from_value(json!([
            {"op": "test", "path": "/spec/target/port", "value": expected_port},
            {"op": "replace", "path": "/spec/target/port", "value": 7070}
        ]))
        .unwrap()
    };
    let err = api.patch("jp", &PatchParams::default(), &Patch::<()>::Json(guarded(1234))).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 422), "{err:?}");
    assert_eq!(api.get("jp").await.unwrap().spec.target.port, 6060, "a failed test changes nothing");
    let patched = api.patch("jp", &PatchParams::default(), &Patch::<()>::Json(guarded(6060))).await.unwrap();
    assert_eq!(patched.spec.target.port, 7070);
    // As in kube-apiserver, `test` of null on a missing path holds (kube-rs adds finalizers so).
    let add_finalizer: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["biometrics.io/x"]}
    ]))
    .unwrap();
    let with = api.patch("jp", &PatchParams::default(), &Patch::<()>::Json(add_finalizer)).await.unwrap();
    assert_eq!(with.metadata.finalizers, Some(vec!["biometrics.io/x".to_owned()]));
}

#[tokio::test]
async fn secret_string_data_is_stored_as_data() {
    let (_server, client) = server().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, "default");
    let created = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}})).unwrap(),
        )
        .await
        .unwrap();
    assert!(created.string_data.is_none(), "stringData is never stored");
    assert_eq!(created.data.unwrap()["password"].0, b"hunter2");
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
}

#[tokio::test]
async fn port_forward_reaches_the_pods_address() {
    let (server, client) = server_with(Options { controllers: false, ..Options::default() }).await;
    // What the pod serves: an echo on loopback, the pod's address here.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, "default");
    let pod = serde_json::from_value(
        json!({"metadata": {"name": "echo"}, "spec": {"containers": [{"name": "c", "image": "echo"}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    pods.patch_status(
        "echo",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "127.0.0.1"}})),
    )
    .await
    .unwrap();
    let mut forwarder = pods.portforward("echo", &[port]).await.expect("the port-forward upgrade is accepted");
    let mut stream = forwarder.take_stream(port).unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"through the API server").await.unwrap();
    let mut echoed = [0u8; 22];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"through the API server");
    assert_eq!(server.counts().get("create", "pods/portforward"), 1);

    // A port nothing listens on reports on the error channel.
    let closed = { std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port() };
    let mut forwarder = pods.portforward("echo", &[closed]).await.unwrap();
    let error = forwarder.take_error(closed).unwrap().await;
    assert!(error.is_some_and(|e| e.contains("error forwarding port")), "the refusal is reported");
}
