//! The real kubectl's typed commands, which send built-in objects as protobuf: every
//! `kubectl create <generator>` for the kinds served, `run`, `expose`, `set image|env`,
//! `label`, `annotate`, `scale`, `rollout restart|history|undo` and `auth can-i`, each
//! checked for the object it made as kube-apiserver would store it; `apply` of a `kind:
//! List` validated against `/openapi/v2`; and content negotiation answered as
//! kube-apiserver answers it (protobuf for built-ins, JSON, 406 and 415 for custom
//! resources, protobuf watch frames).

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
};

use base64::Engine;
use biometrics_test_apiserver::{TestApiServer, protobuf};
use common::Kubectl;
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The server, with its workload controllers or without them (then the objects are
/// checked as the commands left them), and a directory holding its kubeconfig.
async fn cluster(controllers: bool) -> (TestApiServer, tempfile::TempDir) {
    let options = biometrics_test_apiserver::Options { controllers, ..Default::default() };
    let server = TestApiServer::start_with("127.0.0.1:0".parse().unwrap(), options).await.expect("server");
    let dir = tempfile::tempdir().expect("dir");
    server.write_kubeconfig(&dir.path().join("kubeconfig")).expect("kubeconfig");
    (server, dir)
}

/// `kubectl get KIND NAME -n shop -o json`, parsed.
fn get(k: &Kubectl, kind: &str, name: &str) -> Value {
    serde_json::from_str(&k.ok(&["get", kind, name, "-n", "shop", "-o", "json"])).expect("JSON")
}

fn decoded(data: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD.decode(data.as_str().expect("base64 text")).expect("base64");
    String::from_utf8(bytes).expect("UTF-8")
}

fn every_generator(k: &Kubectl) {
    assert_eq!(k.ok(&["create", "namespace", "shop"]).trim(), "namespace/shop created");
    let ns = get(k, "namespace", "shop");
    // Go's zero values (generateName: "", selfLink: "") that kubectl writes are not stored.
    assert_eq!(ns["metadata"].get("generateName"), None, "{ns}");
    assert_eq!(ns["status"]["phase"], "Active");

    k.ok(&["create", "configmap", "settings", "-n", "shop", "--from-literal=mode=fast", "--from-literal=empty="]);
    assert_eq!(get(k, "configmap", "settings")["data"], json!({"mode": "fast", "empty": ""}));

    k.ok(&["create", "secret", "generic", "db", "-n", "shop", "--from-literal=password=s3cret"]);
    let secret = get(k, "secret", "db");
    assert_eq!((secret["type"].as_str(), decoded(&secret["data"]["password"])), (Some("Opaque"), "s3cret".into()));

    k.ok(&[
        "create",
        "secret",
        "docker-registry",
        "pull",
        "-n",
        "shop",
        "--docker-server=registry.example",
        "--docker-username=ann",
        "--docker-password=pw",
    ]);
    let pull = get(k, "secret", "pull");
    assert_eq!(pull["type"], "kubernetes.io/dockerconfigjson");
    let config: Value = serde_json::from_str(&decoded(&pull["data"][".dockerconfigjson"])).unwrap();
    assert_eq!(config["auths"]["registry.example"]["username"], "ann");

    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["shop.example".into()]).expect("certificate");
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    k.ok(&[
        "create",
        "secret",
        "tls",
        "shop-tls",
        "-n",
        "shop",
        &format!("--cert={}", cert_path.display()),
        &format!("--key={}", key_path.display()),
    ]);
    let tls = get(k, "secret", "shop-tls");
    assert_eq!(tls["type"], "kubernetes.io/tls");
    assert_eq!(decoded(&tls["data"]["tls.crt"]), cert.pem());

    k.ok(&["create", "serviceaccount", "agent", "-n", "shop"]);
    assert_eq!(get(k, "serviceaccount", "agent")["metadata"]["name"], "agent");

    k.ok(&["create", "clusterrole", "pod-reader", "--verb=get,list", "--resource=pods"]);
    let role: Value = serde_json::from_str(&k.ok(&["get", "clusterrole", "pod-reader", "-o", "json"])).unwrap();
    assert_eq!(role["rules"], json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]));
    k.ok(&["create", "clusterrolebinding", "readers", "--clusterrole=pod-reader", "--user=ann"]);
    let binding: Value = serde_json::from_str(&k.ok(&["get", "clusterrolebinding", "readers", "-o", "json"])).unwrap();
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pod-reader"})
    );
    assert_eq!(binding["subjects"], json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ann"}]));
    k.ok(&["create", "role", "cm-writer", "-n", "shop", "--verb=create,update", "--resource=configmaps"]);
    assert_eq!(get(k, "role", "cm-writer")["rules"][0]["verbs"], json!(["create", "update"]));
    k.ok(&["create", "rolebinding", "agent-writes", "-n", "shop", "--role=cm-writer", "--serviceaccount=shop:agent"]);
    assert_eq!(
        get(k, "rolebinding", "agent-writes")["subjects"],
        json!([{"kind": "ServiceAccount", "name": "agent", "namespace": "shop"}])
    );

    k.ok(&["create", "deployment", "web", "-n", "shop", "--image=example/app:1", "--replicas=2", "--port=8080"]);
    let deploy = get(k, "deployment", "web");
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(deploy["spec"]["selector"], json!({"matchLabels": {"app": "web"}}));
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (container["image"].as_str(), &container["ports"][0]["containerPort"]),
        (Some("example/app:1"), &json!(8080))
    );
    // Defaulted by the server, as the zero values kubectl sent do not stand in the way.
    assert_eq!(deploy["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(deploy["spec"]["template"]["spec"]["restartPolicy"], "Always");

    k.ok(&["create", "job", "once", "-n", "shop", "--image=busybox", "--", "date"]);
    let job = get(k, "job", "once");
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["command"], json!(["date"]));
    // kube-apiserver's Job defaults, on the pointer fields kubectl left unset.
    let spec = &job["spec"];
    assert_eq!(
        [
            &spec["backoffLimit"],
            &spec["completions"],
            &spec["parallelism"],
            &spec["suspend"],
            &spec["manualSelector"],
            &spec["completionMode"],
            &spec["podReplacementPolicy"],
        ],
        [
            &json!(6),
            &json!(1),
            &json!(1),
            &json!(false),
            &json!(false),
            &json!("NonIndexed"),
            &json!("TerminatingOrFailed")
        ],
        "{job}"
    );
    k.ok(&["create", "cronjob", "report", "-n", "shop", "--image=busybox", "--schedule=*/5 * * * *", "--", "date"]);
    let cronjob = get(k, "cronjob", "report");
    assert_eq!(cronjob["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"], "OnFailure");
    assert_eq!(
        (
            &cronjob["spec"]["concurrencyPolicy"],
            &cronjob["spec"]["suspend"],
            &cronjob["spec"]["successfulJobsHistoryLimit"]
        ),
        (&json!("Allow"), &json!(false), &json!(3))
    );

    k.ok(&["create", "ingress", "shop", "-n", "shop", "--rule=shop.example/=web:80,tls=shop-tls", "--class=nginx"]);
    let ingress = get(k, "ingress", "shop");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(ingress["spec"]["tls"], json!([{"hosts": ["shop.example"], "secretName": "shop-tls"}]));
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0],
        json!({"path": "/", "pathType": "Exact", "backend": {"service": {"name": "web", "port": {"number": 80}}}})
    );

    k.ok(&["create", "poddisruptionbudget", "web", "-n", "shop", "--selector=app=web", "--min-available=1"]);
    let pdb = get(k, "poddisruptionbudget", "web");
    assert_eq!(
        (&pdb["spec"]["minAvailable"], &pdb["spec"]["selector"]["matchLabels"]),
        (&json!(1), &json!({"app": "web"}))
    );
    k.ok(&["create", "pdb", "half", "-n", "shop", "--selector=app=web", "--max-unavailable=50%"]);
    assert_eq!(get(k, "pdb", "half")["spec"]["maxUnavailable"], "50%");

    k.ok(&["create", "priorityclass", "high", "--value=1000", "--description=urgent", "--preemption-policy=Never"]);
    let pc: Value = serde_json::from_str(&k.ok(&["get", "priorityclass", "high", "-o", "json"])).unwrap();
    assert_eq!(
        (&pc["value"], &pc["description"], &pc["preemptionPolicy"]),
        (&json!(1000), &json!("urgent"), &json!("Never"))
    );
    assert_eq!(pc.get("globalDefault"), None, "false is omitted, as in kube-apiserver's JSON");

    k.ok(&["create", "quota", "small", "-n", "shop", "--hard=cpu=1,memory=1Gi,pods=2"]);
    assert_eq!(get(k, "quota", "small")["spec"]["hard"], json!({"cpu": "1", "memory": "1Gi", "pods": "2"}));

    k.ok(&["create", "service", "clusterip", "api", "-n", "shop", "--tcp=80:8080"]);
    let api = get(k, "service", "api");
    assert_eq!(api["spec"]["type"], "ClusterIP");
    assert_eq!(api["spec"]["selector"], json!({"app": "api"}));
    assert_eq!(api["spec"]["ports"], json!([{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}]));
    k.ok(&["create", "service", "externalname", "ext", "-n", "shop", "--external-name=example.com"]);
    let ext = get(k, "service", "ext");
    assert_eq!(
        (ext["spec"]["type"].as_str(), ext["spec"]["externalName"].as_str()),
        (Some("ExternalName"), Some("example.com"))
    );
    k.ok(&["create", "service", "loadbalancer", "lb", "-n", "shop", "--tcp=443:8443"]);
    assert_eq!(get(k, "service", "lb")["spec"]["type"], "LoadBalancer");
    k.ok(&["create", "service", "nodeport", "np", "-n", "shop", "--tcp=80:8080"]);
    assert_eq!(get(k, "service", "np")["spec"]["ports"][0]["targetPort"], 8080);
}

fn workload_commands(k: &Kubectl) {
    k.ok(&[
        "run",
        "probe",
        "-n",
        "shop",
        "--image=example/app:1",
        "--port=80",
        "--labels=app=probe",
        "--env=MODE=fast",
    ]);
    let pod = get(k, "pod", "probe");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["name"], "probe");
    assert_eq!(container["env"], json!([{"name": "MODE", "value": "fast"}]));
    assert_eq!(container["ports"], json!([{"containerPort": 80, "protocol": "TCP"}]));
    assert_eq!(pod["metadata"]["labels"], json!({"app": "probe"}));

    // A pointer field set to false in an override reaches the server as false, and stays.
    k.ok(&[
        "run",
        "lean",
        "-n",
        "shop",
        "--image=example/app:1",
        r#"--overrides={"spec":{"automountServiceAccountToken":false,"terminationGracePeriodSeconds":0}}"#,
    ]);
    let lean = get(k, "pod", "lean");
    assert_eq!(
        (&lean["spec"]["automountServiceAccountToken"], &lean["spec"]["terminationGracePeriodSeconds"]),
        (&json!(false), &json!(0)),
        "{lean}"
    );
    // Left alone, the same pointer field gets kube-apiserver's default.
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);

    k.ok(&["expose", "pod", "probe", "-n", "shop", "--port=80", "--name=probe-svc"]);
    let svc = get(k, "service", "probe-svc");
    assert_eq!(svc["spec"]["selector"], json!({"app": "probe"}));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
    k.ok(&["expose", "deployment", "web", "-n", "shop", "--port=80", "--target-port=8080"]);
    let web = get(k, "service", "web");
    assert_eq!((&web["spec"]["selector"], &web["spec"]["ports"][0]["port"]), (&json!({"app": "web"}), &json!(80)));

    k.ok(&["set", "image", "deployment/web", "-n", "shop", "app=example/app:2"]);
    k.ok(&["set", "env", "deployment/web", "-n", "shop", "COLOUR=blue"]);
    k.ok(&["label", "deployment", "web", "-n", "shop", "tier=front"]);
    k.ok(&["annotate", "deployment", "web", "-n", "shop", "owner=shop-team"]);
    k.ok(&["scale", "deployment", "web", "-n", "shop", "--replicas=3"]);
    let deploy = get(k, "deployment", "web");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "example/app:2");
    assert_eq!(container["env"], json!([{"name": "COLOUR", "value": "blue"}]));
    assert_eq!(deploy["metadata"]["labels"]["tier"], "front");
    assert_eq!(deploy["metadata"]["annotations"]["owner"], "shop-team");
    assert_eq!(deploy["spec"]["replicas"], 3);

    k.ok(&["rollout", "restart", "deployment/web", "-n", "shop"]);
    let restarted = get(k, "deployment", "web");
    assert!(
        restarted["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(),
        "{restarted}"
    );

    assert_eq!(k.ok(&["auth", "can-i", "create", "pods", "-n", "shop"]).trim(), "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectls_typed_commands_send_protobuf_and_make_what_kube_apiserver_would() {
    let (_server, dir) = cluster(false).await;
    let k = Kubectl::new(dir.path());
    tokio::task::spawn_blocking(move || {
        every_generator(&k);
        workload_commands(&k);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_history_and_undo_through_the_controllers() {
    // With the controllers on, each template change is a ReplicaSet revision.
    let (_server, dir) = cluster(true).await;
    let k = Kubectl::new(dir.path());
    tokio::task::spawn_blocking(move || {
        k.ok(&["create", "namespace", "shop"]);
        k.ok(&["create", "deployment", "web", "-n", "shop", "--image=example/app:1"]);
        k.ok(&["set", "image", "deployment/web", "-n", "shop", "app=example/app:2"]);
        let wait_for_revision = |n: &str| {
            for _ in 0..100 {
                let rs = k.ok(&[
                    "get",
                    "rs",
                    "-n",
                    "shop",
                    "-o",
                    "jsonpath={.items[*].metadata.annotations.deployment\\.kubernetes\\.io/revision}",
                ]);
                if rs.split_whitespace().any(|r| r == n) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            panic!("no ReplicaSet of revision {n}");
        };
        wait_for_revision("2");
        let history = k.ok(&["rollout", "history", "deployment/web", "-n", "shop"]);
        assert!(history.contains("\n1 ") && history.contains("\n2 "), "{history}");
        k.ok(&["rollout", "undo", "deployment/web", "-n", "shop"]);
        let image =
            k.ok(&["get", "deploy", "web", "-n", "shop", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]);
        assert_eq!(image, "example/app:1");
    })
    .await
    .unwrap();
}

const LIST: &str = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: shop}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: settings, namespace: shop}
  data: {mode: fast}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_is_validated_against_openapi_v2_and_applied() {
    let (_server, dir) = cluster(false).await;
    let k = Kubectl::new(dir.path());
    tokio::task::spawn_blocking(move || {
        // kubectl validates a List's items itself, from /openapi/v2 in protobuf.
        let bad = LIST.replace("data: {mode: fast}", "data: {mode: fast}\n  colour: blue");
        let out = k.run(&["apply", "-f", "-"], Some(&bad));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "an unknown field is refused");
        assert!(stderr.contains(r#"unknown field "colour" in io.k8s.api.core.v1.ConfigMap"#), "{stderr}");
        let none = k.run(&["get", "namespace", "shop"], None);
        assert!(!none.status.success(), "nothing of the refused List was made");

        let out = k.run(&["apply", "-f", "-"], Some(LIST));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("namespace/shop created") && stdout.contains("configmap/settings created"), "{stdout}");
        assert_eq!(get(&k, "configmap", "settings")["data"]["mode"], "fast");
        let again = k.run(&["apply", "-f", "-"], Some(LIST));
        assert!(String::from_utf8_lossy(&again.stdout).contains("configmap/settings unchanged"));
    })
    .await
    .unwrap();
}

/// One HTTP/1.1 exchange: status code, content type and the (de-chunked) body.
fn http(addr: std::net::SocketAddr, request: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("headers end");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut rest = &response[split + 4..];
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned())
        })
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size");
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 4 + size..];
        }
    } else {
        body = rest.to_vec();
    }
    (code, header("content-type").unwrap_or_default(), body)
}

const PROTOBUF_FIRST: &str = "application/vnd.kubernetes.protobuf, application/json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_is_negotiated_as_kube_apiserver_negotiates_it() {
    let (server, dir) = cluster(false).await;
    let addr = server.addr();
    let k = Kubectl::new(dir.path());
    tokio::task::spawn_blocking(move || {
        k.ok(&["apply", "-f", &repo_root().join("crds/yaml").to_string_lossy()]);
        k.ok(&["create", "namespace", "shop"]);
        k.ok(&["create", "configmap", "settings", "-n", "shop", "--from-literal=mode=fast"]);
        let get = |path: &str, accept: &str| {
            http(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"), b"")
        };

        // Built-ins in protobuf when preferred, JSON otherwise.
        let (code, content_type, body) = get("/api/v1/namespaces/shop/configmaps/settings", PROTOBUF_FIRST);
        assert_eq!((code, content_type.as_str()), (200, "application/vnd.kubernetes.protobuf"));
        assert_eq!(protobuf::decode_object(&body).unwrap()["data"], json!({"mode": "fast"}));
        let (_, content_type, _) = get("/api/v1/namespaces/shop/configmaps/settings", "application/json");
        assert_eq!(content_type, "application/json");
        // Lists and errors too; Tables stay JSON.
        let (_, _, body) = get("/api/v1/namespaces/shop/configmaps", PROTOBUF_FIRST);
        assert_eq!(protobuf::decode_object(&body).unwrap()["kind"], "ConfigMapList");
        let (code, content_type, body) = get("/api/v1/namespaces/shop/configmaps/nope", PROTOBUF_FIRST);
        assert_eq!((code, content_type.as_str()), (404, "application/vnd.kubernetes.protobuf"));
        assert_eq!(protobuf::decode_object(&body).unwrap()["reason"], "NotFound");
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io, application/vnd.kubernetes.protobuf";
        let (_, content_type, body) = get("/api/v1/namespaces/shop/configmaps", table);
        assert_eq!(content_type, "application/json");
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["kind"], "Table");

        // Discovery too, as client-go's typed discovery asks for it.
        let (_, content_type, body) = get("/api/v1", PROTOBUF_FIRST);
        assert_eq!(content_type, "application/vnd.kubernetes.protobuf");
        let resources = protobuf::decode_object(&body).unwrap();
        let pods = resources["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods").unwrap();
        assert_eq!((&pods["kind"], &pods["shortNames"]), (&json!("Pod"), &json!(["po"])));

        // Custom resources: JSON when the client also takes it, 406 when it takes only protobuf.
        let captures = "/apis/biometrics.io/v1alpha1/namespaces/shop/profilecaptures";
        let (code, content_type, _) = get(captures, PROTOBUF_FIRST);
        assert_eq!((code, content_type.as_str()), (200, "application/json"));
        let (code, content_type, body) = get(captures, "application/vnd.kubernetes.protobuf");
        assert_eq!((code, content_type.as_str()), (406, "application/json"));
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["reason"], "NotAcceptable");

        // A protobuf body: accepted for a built-in, 415 for a custom resource.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "raw", "namespace": "shop"}, "data": {"a": "b"}});
        let bytes = protobuf::encode_object(&cm).unwrap().unwrap();
        let post = |path: &str, body: &[u8]| {
            http(
                addr,
                &format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.kubernetes.protobuf\r\nAccept: {PROTOBUF_FIRST}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                ),
                body,
            )
        };
        let (code, _, body) = post("/api/v1/namespaces/shop/configmaps", &bytes);
        assert_eq!(code, 201);
        assert_eq!(protobuf::decode_object(&body).unwrap()["data"], json!({"a": "b"}));
        let (code, _, body) = post(captures, &bytes);
        assert_eq!(code, 415, "{}", String::from_utf8_lossy(&body));
        let (code, _, _) = post("/api/v1/namespaces/shop/configmaps", b"k8s\0\x0a\xff");
        assert_eq!(code, 400);

        // OpenAPI v2 in JSON or protobuf, 406 for anything else; a pod's log is negotiated
        // over the API's media types too.
        let (code, content_type, body) = get("/openapi/v2", "application/json");
        assert_eq!((code, content_type.as_str()), (200, "application/json"));
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["swagger"], "2.0");
        let (code, content_type, _) = get("/openapi/v2", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf");
        assert_eq!((code, content_type.as_str()), (200, "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"));
        assert_eq!(get("/openapi/v2", "text/html").0, 406);
        k.ok(&["run", "logger", "-n", "shop", "--image=example/app"]);
        assert_eq!(get("/api/v1/namespaces/shop/pods/logger/log", "text/plain").0, 406);
        assert_ne!(get("/api/v1/namespaces/shop/pods/logger/log", "application/json, */*").0, 406);

        // A watch in protobuf: length-prefixed WatchEvents.
        let (code, content_type, body) =
            get("/api/v1/namespaces/shop/configmaps?watch=true&resourceVersion=0&timeoutSeconds=1", PROTOBUF_FIRST);
        assert_eq!((code, content_type.as_str()), (200, "application/vnd.kubernetes.protobuf;stream=watch"));
        let mut names = Vec::new();
        let mut rest = &body[..];
        while rest.len() >= 4 {
            let length = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let event = protobuf::message_for("meta.k8s.io/v1", "WatchEvent").unwrap();
            let event = protobuf::decode_message(event, &rest[4..4 + length]).unwrap();
            assert_eq!(event["type"], "ADDED");
            names.push(event["object"]["metadata"]["name"].as_str().unwrap().to_owned());
            rest = &rest[4 + length..];
        }
        names.sort();
        assert_eq!(names, ["raw", "settings"]);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_of_zero_replicas_stays_at_zero_and_makes_no_pod() {
    let (_server, dir) = cluster(true).await;
    let k = Kubectl::new(dir.path());
    tokio::task::spawn_blocking(move || {
        k.ok(&["create", "namespace", "shop"]);
        k.ok(&["create", "deployment", "idle", "-n", "shop", "--image=example/app:1", "--replicas=0"]);
        k.ok(&["create", "deployment", "busy", "-n", "shop", "--image=example/app:1", "--replicas=1"]);
        assert_eq!(get(&k, "deployment", "idle")["spec"]["replicas"], 0);
        // Both sets appear; the busy one's pod shows the controllers have run for both.
        let mut seen = (String::new(), String::new());
        for _ in 0..100 {
            let jsonpath = "jsonpath={range .items[*]}{.metadata.labels.app}={.spec.replicas} {end}";
            let sets = k.ok(&["get", "rs", "-n", "shop", "-o", jsonpath]);
            let pods = k.ok(&["get", "pods", "-n", "shop", "-o", "jsonpath={.items[*].metadata.labels.app}"]);
            seen = (sets, pods);
            if seen.0.contains("idle=0") && seen.1.contains("busy") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(seen.0.contains("idle=0") && seen.0.contains("busy=1"), "{seen:?}");
        assert_eq!(seen.1.split_whitespace().collect::<Vec<_>>(), ["busy"], "{seen:?}");
    })
    .await
    .unwrap();
}

/// `object` (a k8s-pb message) in kube's protobuf envelope, as client-go writes it.
fn envelope(api_version: &str, kind: &str, object: &impl prost::Message) -> Vec<u8> {
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    let unknown = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    [protobuf::MAGIC, &prost::Message::encode_to_vec(&unknown)].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_clients_zeros_default_non_pointer_fields_and_stay_in_pointer_fields() {
    use k8s_pb::{
        api::{apps::v1 as apps, core::v1 as core},
        apimachinery::pkg::{apis::meta::v1 as meta, util::intstr::IntOrString},
    };
    let (server, dir) = cluster(false).await;
    let addr = server.addr();
    let k = Kubectl::new(dir.path());
    // A Deployment as a Go client writes it: every non-pointer field, zero or not (the
    // probe's numbers, the strings), and the pointer fields it set, to zero here.
    let probe = core::Probe {
        handler: Some(core::ProbeHandler {
            http_get: Some(core::HttpGetAction {
                path: Some(String::new()),
                port: Some(IntOrString { r#type: Some(0), int_val: Some(8080), str_val: Some(String::new()) }),
                host: Some(String::new()),
                scheme: Some(String::new()),
                http_headers: vec![],
            }),
            ..Default::default()
        }),
        initial_delay_seconds: Some(0),
        timeout_seconds: Some(0),
        period_seconds: Some(0),
        success_threshold: Some(0),
        failure_threshold: Some(0),
        termination_grace_period_seconds: None,
    };
    let labels: std::collections::BTreeMap<String, String> = [("app".to_owned(), "probed".to_owned())].into();
    let deployment = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: Some("probed".into()),
            namespace: Some("shop".into()),
            generate_name: Some(String::new()),
            generation: Some(0),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector { match_labels: labels.clone(), ..Default::default() }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta { labels, ..Default::default() }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: Some("app".into()),
                        image: Some("example/app:1".into()),
                        image_pull_policy: Some(String::new()),
                        readiness_probe: Some(probe.clone()),
                        liveness_probe: Some(core::Probe { period_seconds: Some(7), ..probe }),
                        ..Default::default()
                    }],
                    restart_policy: Some(String::new()),
                    dns_policy: Some(String::new()),
                    termination_grace_period_seconds: Some(0),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy { r#type: Some(String::new()), rolling_update: None }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(0),
            paused: Some(false),
            progress_deadline_seconds: None,
        }),
        status: None,
    };
    let body = envelope("apps/v1", "Deployment", &deployment);
    tokio::task::spawn_blocking(move || {
        k.ok(&["create", "namespace", "shop"]);
        let (code, _, answer) = http(
            addr,
            &format!(
                "POST /apis/apps/v1/namespaces/shop/deployments HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.kubernetes.protobuf\r\nAccept: {PROTOBUF_FIRST}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            &body,
        );
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&answer));
        let stored = get(&k, "deployment", "probed");
        let spec = &stored["spec"];
        // Pointer fields: the client's zeros stand.
        assert_eq!(
            [&spec["replicas"], &spec["revisionHistoryLimit"], &spec["progressDeadlineSeconds"]],
            [&json!(0), &json!(0), &json!(600)]
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(
            (&pod["terminationGracePeriodSeconds"], &pod["automountServiceAccountToken"]),
            (&json!(0), &json!(false))
        );
        // Non-pointer fields: zero is unset, and kube-apiserver's defaults fill them.
        assert_eq!((&spec["strategy"]["type"], &pod["restartPolicy"]), (&json!("RollingUpdate"), &json!("Always")));
        assert_eq!((&pod["dnsPolicy"], &pod["containers"][0]["imagePullPolicy"]), (&json!("ClusterFirst"), &json!("IfNotPresent")));
        let container = &pod["containers"][0];
        let readiness = &container["readinessProbe"];
        assert_eq!(
            [&readiness["timeoutSeconds"], &readiness["periodSeconds"], &readiness["successThreshold"], &readiness["failureThreshold"]],
            [&json!(1), &json!(10), &json!(1), &json!(3)],
            "{readiness}"
        );
        assert_eq!(readiness["httpGet"], json!({"path": "/", "port": 8080, "scheme": "HTTP"}));
        // Non-pointer zeros nothing defaults are left out, as kube-apiserver's JSON leaves them.
        assert_eq!((readiness.get("initialDelaySeconds"), spec.get("paused"), spec.get("minReadySeconds")), (None, None, None));
        // A value the client did set is left alone.
        assert_eq!(container["livenessProbe"]["periodSeconds"], 7);
    })
    .await
    .unwrap();
}
