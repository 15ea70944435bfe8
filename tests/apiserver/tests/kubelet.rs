//! The process kubelet under the real kubectl: pods of a Deployment run as real processes
//! (the Go pprof target) on their own addresses, with every volume kind, env source and
//! probe kind; crash loops back off; deletion sends SIGTERM and waits the grace period.
//! Needs root with CAP_SYS_ADMIN, as the kubelet does.

mod common;

use std::{
    net::SocketAddr,
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use biometrics_test_apiserver::{
    TestApiServer,
    kubelet::{ImageMap, KubeletConfig},
};
use common::Kubectl;
use serde_json::Value;

struct Cluster {
    _server: TestApiServer,
    dir: tempfile::TempDir,
    kubectl: Kubectl,
}

impl Cluster {
    async fn start() -> Self {
        let go = biometrics_test_support::go_target_binary();
        let dir = tempfile::tempdir().expect("dir");
        let images = format!(
            "images:\n  example/go-app: {{command: [{}], args: [--addr, '0.0.0.0:6060']}}\n  example/go-loopback: {{command: [{}]}}\n  example/shell: {{command: [/bin/sh]}}\n",
            go.display(),
            go.display()
        );
        let images = ImageMap::parse(&images, Path::new("images.yaml")).expect("image map");
        let mut server = TestApiServer::start("127.0.0.1:0".parse().unwrap()).await.expect("server");
        let config = KubeletConfig {
            node_name: "local-1".into(),
            state_dir: dir.path().join("kubelet"),
            images,
            restart_backoff: Duration::from_secs(1),
            api: server.addr(),
        };
        server.start_kubelet(config).await.expect("the kubelet starts (it needs root)");
        server.write_kubeconfig(&dir.path().join("kubeconfig")).expect("kubeconfig");
        let kubectl = Kubectl::new(dir.path());
        Self { _server: server, dir, kubectl }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl.run(args, stdin)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.kubectl.ok(args)
    }

    fn apply(&self, manifest: &str) {
        self.kubectl.apply(manifest);
    }

    /// Makes the ReadWriteMany claim `notes` in `default`, which the pods of a test write
    /// to, and returns where its files are on the node.
    fn notes_claim(&self) -> std::path::PathBuf {
        self.apply(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: notes, namespace: default}\nspec: {accessModes: [ReadWriteMany], resources: {requests: {storage: 1Gi}}}\n",
        );
        self.dir.path().join("kubelet/claims/default/notes")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl JSON")
    }

    /// Waits until `check` holds for the JSON of `args`, or fails with the last one seen.
    fn wait_for(&self, args: &[&str], what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, || self.json(args), check)
    }

    /// Waits until `check` holds for kubectl's printed output of `args`.
    fn wait_for_text(&self, args: &[&str], what: &str, check: impl Fn(&String) -> bool) -> String {
        wait_until(what, || self.ok(args), check)
    }
}

/// Reads `read` until `check` holds for what it read, or fails after 30 s with the last.
fn wait_until<T: std::fmt::Display>(what: &str, read: impl Fn() -> T, check: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = read();
        if check(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} did not happen: {value:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking part")
}

const APP: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: redis, namespace: shop}
stringData: {password: s3cret}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: example/go-app:1.0
        ports: [{name: pprof, containerPort: 6060}]
        readinessProbe: {httpGet: {path: /debug/pprof/, port: pprof}, periodSeconds: 1, timeoutSeconds: 5}
        livenessProbe: {tcpSocket: {port: 6060}, periodSeconds: 2, timeoutSeconds: 5, failureThreshold: 5}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_runs_as_processes_on_their_own_addresses() {
    let cluster = std::sync::Arc::new(Cluster::start().await);
    let c = cluster.clone();
    let pods = blocking(move || {
        c.apply(APP);
        c.ok(&["rollout", "status", "deployment/web", "-n", "shop", "--timeout=60s"]);
        c.json(&["get", "pods", "-n", "shop"])
    })
    .await;
    let items = pods["items"].as_array().expect("pods");
    assert_eq!(items.len(), 3);
    let mut addresses: Vec<&str> = items.iter().map(|p| p["status"]["podIP"].as_str().expect("podIP")).collect();
    addresses.sort_unstable();
    addresses.dedup();
    assert_eq!(addresses.len(), 3, "each pod has its own address");
    for address in &addresses {
        // The app listens on 0.0.0.0:6060 in every pod: only separate namespaces allow that.
        let addr: SocketAddr = format!("{address}:6060").parse().unwrap();
        let body = biometrics_test_support::http_get(addr, "/debug/pprof/");
        assert!(body.contains("goroutine"), "{address}: {body}");
    }
    let pids: Vec<u32> = items
        .iter()
        .map(|p| {
            p["status"]["containerStatuses"][0]["containerID"]
                .as_str()
                .unwrap()
                .trim_start_matches("process://")
                .parse()
                .unwrap()
        })
        .collect();
    let first = items[0]["metadata"]["name"].as_str().unwrap().to_owned();

    let c = cluster.clone();
    blocking(move || {
        let logs = c.ok(&["logs", &first, "-n", "shop"]);
        assert!(logs.contains("pprof-target serving on 0.0.0.0:6060"), "{logs}");
        c.ok(&["set", "env", "deployment/web", "-n", "shop", "COLOUR=blue"]);
        c.ok(&["rollout", "status", "deployment/web", "-n", "shop", "--timeout=60s"]);
    })
    .await;
    // The old pods' processes were stopped (a finished rollout may still be terminating them).
    let running = |pid: &u32| {
        Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids.iter().any(running) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!pids.iter().any(running), "a process of an old pod still runs: {pids:?}");
    let node = cluster.json(&["get", "node", "local-1"]);
    assert_eq!(node["status"]["conditions"][0]["reason"], "KubeletReady");

    // A Service resolves, by every name cluster DNS gives it, to the ready pods behind it;
    // `$(VAR)` in args is the pod's variable.
    let c = cluster.clone();
    blocking(move || {
        c.apply(CLIENT);
        let pods = c.json(&["get", "pods", "-n", "shop", "-l", "app=web"]);
        let mut web: Vec<String> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
            .map(|p| p["status"]["podIP"].as_str().unwrap().to_owned())
            .collect();
        web.sort_unstable();
        let expected = format!("resolved {}\n", web.join(" "));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logs = c.run(&["logs", "client", "-n", "shop"], None);
            let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
            if logs.contains(&expected) && logs.contains("short name too") {
                assert!(logs.contains("I am client in shop"), "{logs}");
                break;
            }
            assert!(Instant::now() < deadline, "the Service did not resolve to {web:?}: {logs}");
            std::thread::sleep(Duration::from_millis(500));
        }
    })
    .await;
}

const CLIENT: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 6060}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec:
  containers:
  - name: sh
    image: example/shell
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    args:
    - -c
    - |
      echo I am $(POD_NAME) in $(POD_NAMESPACE)
      while true; do
        echo resolved $(getent ahostsv4 web.shop.svc.cluster.local | awk '/STREAM/ {print $1}' | sort | tr '\\n' ' ')
        getent ahostsv4 web >/dev/null && echo short name too
        sleep 0.3
      done
";

const EVERY_SOURCE: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: redis, namespace: shop}
stringData: {password: s3cret}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: shared, namespace: shop}
spec: {accessModes: [ReadWriteMany], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: reader, namespace: shop, labels: {app: reader}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: sh
    image: example/shell
    args:
    - -c
    - |
      echo mode=$(cat /etc/settings/mode) password=$(cat /etc/redis/password) name=$(cat /etc/podinfo/name)
      echo env MODE=$MODE PASSWORD=$PASSWORD POD=$POD IP=$IP MEM=$MEM KUBECONFIG=${KUBECONFIG:-none}
      echo scratch > /scratch/file && echo shared-by-reader > /shared/note
      trap 'echo got TERM > /shared/term; exit 0' TERM
      while true; do sleep 0.1; done
    resources: {limits: {memory: 64Mi}}
    env:
    - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: redis, key: password}}}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    volumeMounts:
    - {name: settings, mountPath: /etc/settings}
    - {name: redis, mountPath: /etc/redis, readOnly: true}
    - {name: podinfo, mountPath: /etc/podinfo}
    - {name: scratch, mountPath: /scratch}
    - {name: shared, mountPath: /shared}
  volumes:
  - {name: settings, configMap: {name: settings}}
  - {name: redis, secret: {secretName: redis}}
  - {name: podinfo, downwardAPI: {items: [{path: name, fieldRef: {fieldPath: metadata.name}}]}}
  - {name: scratch, emptyDir: {}}
  - {name: shared, persistentVolumeClaim: {claimName: shared}}
---
apiVersion: v1
kind: Pod
metadata: {name: peer, namespace: shop}
spec:
  containers:
  - name: sh
    image: example/shell
    args: [-c, 'until [ -f /shared/note ]; do sleep 0.1; done; echo peer read $(cat /shared/note); sleep 1000']
    readinessProbe: {exec: {command: [test, -f, /shared/note]}, periodSeconds: 1}
    volumeMounts: [{name: shared, mountPath: /shared}]
  volumes:
  - {name: shared, persistentVolumeClaim: {claimName: shared}}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_env_probes_and_graceful_deletion_behave_as_on_a_node() {
    let cluster = std::sync::Arc::new(Cluster::start().await);
    let state = cluster.dir.path().join("kubelet");
    let c = cluster.clone();
    blocking(move || {
        c.apply(EVERY_SOURCE);
        c.wait_for(&["get", "pod", "peer", "-n", "shop"], "the exec readiness probe to pass", |p| {
            p["status"]["containerStatuses"][0]["ready"] == true
        });
        let reader = c.ok(&["logs", "reader", "-n", "shop"]);
        let ip = c.ok(&["get", "pod", "reader", "-n", "shop", "-o", "jsonpath={.status.podIP}"]);
        assert!(reader.contains("mode=fast password=s3cret name=reader"), "{reader}");
        assert!(
            reader.contains(&format!("env MODE=fast PASSWORD=s3cret POD=reader IP={ip} MEM=64 KUBECONFIG=none")),
            "{reader}"
        );
        let peer = c.ok(&["logs", "peer", "-n", "shop"]);
        assert!(peer.contains("peer read shared-by-reader"), "a claim is shared by its pods: {peer}");

        // Deletion: SIGTERM first, and the pod stays until its process has exited.
        c.ok(&["delete", "pod", "reader", "-n", "shop"]);
        let out = c.run(&["get", "pod", "reader", "-n", "shop"], None);
        assert!(!out.status.success(), "kubectl delete waits until the pod is gone");
    })
    .await;
    let term = std::fs::read_to_string(state.join("claims/shop/shared/term")).expect("the TERM trap wrote its file");
    assert_eq!(term.trim(), "got TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loops_back_off_and_unknown_images_stay_pending() {
    let cluster = std::sync::Arc::new(Cluster::start().await);
    let c = cluster.clone();
    blocking(move || {
        c.apply(
            "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: crasher, namespace: shop}
spec:
  containers: [{name: sh, image: example/shell, args: [-c, 'echo run; exit 3']}]
---
apiVersion: v1
kind: Pod
metadata: {name: missing, namespace: shop}
spec:
  containers: [{name: app, image: example/not-in-the-map:2}]
",
        );
        let crasher = c.wait_for(&["get", "pod", "crasher", "-n", "shop"], "two restarts", |p| {
            p["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(2)
        });
        let status = &crasher["status"]["containerStatuses"][0];
        assert_eq!(status["lastState"]["terminated"]["exitCode"], 3, "{status:#}");
        let previous = c.ok(&["logs", "crasher", "-n", "shop", "--previous"]);
        assert_eq!(previous.trim(), "run");
        // kubectl's STATUS column shows the back-off while the container waits; between two
        // waits the container runs for a moment, so the table is read until it shows one.
        let listed =
            c.wait_for_text(&["get", "pod", "crasher", "-n", "shop", "--no-headers"], "the back-off listed", |l| {
                l.split_whitespace().nth(2) == Some("CrashLoopBackOff")
            });
        let columns: Vec<&str> = listed.split_whitespace().collect();
        assert_eq!(columns[1], "0/1", "{listed}");
        assert!(columns[3].parse::<u32>().unwrap() >= 2, "{listed}");
        let missing = c.wait_for(&["get", "pod", "missing", "-n", "shop"], "ErrImagePull", |p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
        });
        assert_eq!(missing["status"]["phase"], "Pending");
    })
    .await;
}

/// `kubectl port-forward` reaches a server that listens on the pod's own loopback only (the
/// Go target's default, 127.0.0.1:6060), as a kubelet's runtime connects inside the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_the_pods_own_loopback() {
    let cluster = std::sync::Arc::new(Cluster::start().await);
    let c = cluster.clone();
    blocking(move || {
        c.apply(
            "
apiVersion: v1
kind: Pod
metadata: {name: lo, namespace: default}
spec:
  containers: [{name: app, image: example/go-loopback, readinessProbe: {exec: {command: [bash, -c, 'exec 3<>/dev/tcp/127.0.0.1/6060']}, periodSeconds: 1}}]
",
        );
        let pod = c.wait_for(&["get", "pod", "lo"], "the pod to be ready", |p| {
            p["status"]["containerStatuses"][0]["ready"] == true
        });
        let ip = pod["status"]["podIP"].as_str().unwrap().to_owned();
        assert!(
            std::net::TcpStream::connect_timeout(&format!("{ip}:6060").parse().unwrap(), Duration::from_secs(1)).is_err(),
            "the server is on the pod's loopback only, not on {ip}"
        );
        let mut forward = c
            .kubectl
            .command()
            .args(["port-forward", "pod/lo", ":6060"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl port-forward runs");
        let mut output = std::io::BufReader::new(forward.stdout.take().expect("stdout"));
        let local = common::forwarded_port(&mut output);
        let body = biometrics_test_support::http_get(format!("127.0.0.1:{local}").parse().unwrap(), "/debug/pprof/");
        let _ = forward.kill();
        let _ = forward.wait();
        assert!(body.contains("goroutine"), "through kubectl port-forward: {body}");
    })
    .await;
}

/// A pod's security context as a node applies it: the process runs as `runAsUser` and
/// `runAsGroup` with `fsGroup` and `supplementalGroups`, cannot gain privileges, cannot
/// write its root; its volumes belong to `fsGroup` (a Secret's 0400 files readable by the
/// group, an emptyDir writable by anyone, passing its group on); `runAsNonRoot` with no
/// user keeps the container from starting, with the kubelet's reason; root gets the
/// runtime's default capabilities, with the container's `add` and `drop`; an exec probe
/// runs as the container does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_context_decides_who_the_process_is_and_owns_the_volumes() {
    let cluster = std::sync::Arc::new(Cluster::start().await);
    let c = cluster.clone();
    blocking(move || {
        c.apply(
            r#"
apiVersion: v1
kind: Secret
metadata: {name: key, namespace: default}
stringData: {key: hush}
---
apiVersion: v1
kind: Pod
metadata: {name: confined, namespace: default}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65533, fsGroup: 2000, supplementalGroups: [3000]}
  containers:
  - name: sh
    image: example/shell
    securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}
    volumeMounts: [{name: scratch, mountPath: /scratch}, {name: secret, mountPath: /secret}]
    args:
    - -c
    - |
      echo "id $(id -u) $(id -g) $(id -G) home=$HOME"
      echo "scratch $(stat -c %a:%g /scratch)"
      echo "secret $(stat -c %a:%g /secret/key) $(cat /secret/key)"
      touch /scratch/x && echo "wrote $(stat -c %g /scratch/x)"
      touch /written-to-root 2>/dev/null || echo "root read-only"
      echo "no-new-privs $(grep NoNewPrivs /proc/self/status | cut -f2)"
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: secret, secret: {secretName: key, defaultMode: 256}}
---
apiVersion: v1
kind: Pod
metadata: {name: rooted, namespace: default}
spec:
  securityContext: {runAsNonRoot: true}
  containers: [{name: app, image: example/shell, args: [-c, 'sleep 60']}]
---
apiVersion: v1
kind: Pod
metadata: {name: capable, namespace: default}
spec:
  restartPolicy: Never
  containers:
  - {name: default, image: example/shell, args: [-c, 'grep CapEff /proc/self/status']}
  - name: narrow
    image: example/shell
    args: [-c, 'grep CapEff /proc/self/status']
    securityContext: {capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}
---
apiVersion: v1
kind: Pod
metadata: {name: probed, namespace: default}
spec:
  securityContext: {runAsUser: 65532}
  containers:
  - name: app
    image: example/shell
    args: [-c, 'sleep 60']
    readinessProbe: {exec: {command: [sh, -c, 'test "$(id -u)" = 65532']}, periodSeconds: 1}
"#,
        );
        c.wait_for(&["get", "pod", "confined"], "the pod to finish", |p| p["status"]["phase"] == "Succeeded");
        let out = c.ok(&["logs", "confined"]);
        for line in [
            "id 65532 65533 65533 2000 3000 home=/",
            "scratch 2777:2000",
            "secret 440:2000 hush",
            "wrote 2000",
            "root read-only",
            "no-new-privs 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line:?} in:\n{out}");
        }
        let rooted = c.wait_for(&["get", "pod", "rooted"], "CreateContainerConfigError", |p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        });
        let message = rooted["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap();
        let uid = rooted["metadata"]["uid"].as_str().unwrap();
        assert_eq!(
            message,
            format!(
                "container has runAsNonRoot and image will run as root (pod: \"rooted_default({uid})\", container: app)"
            )
        );
        assert_eq!(rooted["status"]["phase"], "Pending");

        // Root in a container has containerd's default capabilities, not the node's.
        c.wait_for(&["get", "pod", "capable"], "the pod to finish", |p| p["status"]["phase"] == "Succeeded");
        let effective = |container: &str| c.ok(&["logs", "capable", "-c", container]).trim().to_owned();
        assert_eq!(effective("default"), "CapEff:\t00000000a80425fb");
        assert_eq!(effective("narrow"), "CapEff:\t0000000000000400", "NET_BIND_SERVICE alone");
        // An exec probe runs in the container as the container's user.
        c.wait_for(&["get", "pod", "probed"], "the exec probe as 65532", |p| {
            p["status"]["containerStatuses"][0]["ready"] == true
        });
    })
    .await;
}

/// The controllers delete pods as any client does: a ReplicaSet scaled down and a
/// Deployment deleted (its pods then go by the garbage collector) leave their pods
/// `Terminating` while the kubelet's SIGTERM is handled, within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_the_controllers_delete_get_their_grace_period() {
    let c = std::sync::Arc::new(Cluster::start().await);
    blocking(move || {
        let notes = c.notes_claim();
        c.apply(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: slow, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: slow}}
  template:
    metadata: {labels: {app: slow}}
    spec:
      terminationGracePeriodSeconds: 20
      containers:
      - name: sh
        image: example/shell
        volumeMounts: [{name: notes, mountPath: /notes}]
        args:
        - -c
        - |
          trap 'echo "TERM $HOSTNAME" >> /notes/log; sleep 2; echo "done $HOSTNAME" >> /notes/log; exit 0' TERM
          while true; do sleep 0.1; done
      volumes: [{name: notes, persistentVolumeClaim: {claimName: notes}}]
"#,
        );
        c.ok(&["rollout", "status", "deployment/slow", "--timeout=60s"]);
        let log = notes.join("log");
        let names = |what: &str| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines().filter_map(|l| l.strip_prefix(what)).map(str::to_owned).collect::<Vec<_>>()
        };

        c.ok(&["scale", "deployment/slow", "--replicas=1"]);
        let terminating = c.wait_for(&["get", "pods", "-l", "app=slow"], "a pod terminating", |list| {
            list["items"].as_array().unwrap().iter().any(|p| p["metadata"]["deletionTimestamp"].is_string())
        });
        let pod = terminating["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["metadata"]["deletionTimestamp"].is_string())
            .unwrap();
        assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 20, "the pod's own grace period: {pod:#}");
        let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        wait_until("its TERM handler to finish", || names("done ").join(","), |done| done == &name);
        assert_eq!(names("TERM "), std::slice::from_ref(&name), "SIGTERM first");

        c.ok(&["delete", "deployment", "slow", "--wait=false"]);
        // (The first pod may still be listed: its kubelet removes it once it has reaped it.)
        let other_terminating =
            |p: &&Value| p["metadata"]["name"] != name.as_str() && p["metadata"]["deletionTimestamp"].is_string();
        let left = c.wait_for(&["get", "pods", "-l", "app=slow"], "the other pod terminating", |list| {
            list["items"].as_array().unwrap().iter().any(|p| other_terminating(&p))
        });
        let other = left["items"].as_array().unwrap().iter().find(other_terminating).unwrap()["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        c.wait_for_text(&["get", "pods", "-l", "app=slow", "-o", "name"], "every pod gone", String::is_empty);
        assert_eq!(names("done "), [name, other], "the garbage collector's deletion is graceful too");
    })
    .await;
}

/// Init containers run in order before the app; a native sidecar (an init container with
/// `restartPolicy: Always`) lets the next start only once its startup probe passes, runs
/// beside the app, and is stopped after it; a failed init container fails a pod that
/// does not restart, and a pod whose app has ended stops its sidecar, killing it at the
/// end of the grace period when it ignores SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_and_native_sidecars_run_in_their_order() {
    let c = std::sync::Arc::new(Cluster::start().await);
    blocking(move || {
        let notes = c.notes_claim();
        c.apply(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  initContainers:
  - name: setup
    image: example/shell
    volumeMounts: [{name: notes, mountPath: /notes}]
    args: [-c, 'echo setup >> /notes/order; until [ -f /notes/go ]; do sleep 0.1; done; echo set up']
  - name: agent
    image: example/shell
    restartPolicy: Always
    volumeMounts: [{name: notes, mountPath: /notes}]
    startupProbe: {exec: {command: [test, -f, /notes/agent-up]}, periodSeconds: 1}
    readinessProbe: {exec: {command: [test, -f, /notes/agent-up]}, periodSeconds: 1}
    args:
    - -c
    - |
      trap 'echo agent-TERM >> /notes/order; sleep 1; echo agent-done >> /notes/order; exit 0' TERM
      sleep 1; echo agent-start >> /notes/order; touch /notes/agent-up
      while true; do sleep 0.1; done
  containers:
  - name: app
    image: example/shell
    volumeMounts: [{name: notes, mountPath: /notes}]
    args:
    - -c
    - |
      trap 'echo app-TERM >> /notes/order; sleep 1; echo app-done >> /notes/order; exit 0' TERM
      echo app-start >> /notes/order
      while true; do sleep 0.1; done
  volumes: [{name: notes, persistentVolumeClaim: {claimName: notes}}]
---
apiVersion: v1
kind: Pod
metadata: {name: broken, namespace: default}
spec:
  restartPolicy: Never
  initContainers: [{name: setup, image: example/shell, args: [-c, 'exit 4']}]
  containers: [{name: app, image: example/shell, args: [-c, 'sleep 60']}]
---
apiVersion: v1
kind: Pod
metadata: {name: oneshot, namespace: default}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  initContainers:
  - {name: agent, image: example/shell, restartPolicy: Always, args: [-c, "trap '' TERM; while true; do sleep 0.1; done"]}
  containers: [{name: job, image: example/shell, args: [-c, 'sleep 3; echo finished']}]
"#,
        );
        let order = notes.join("order");
        let lines =
            || std::fs::read_to_string(&order).unwrap_or_default().lines().map(str::to_owned).collect::<Vec<_>>();
        let row = |pod: &str| c.ok(&["get", "pod", pod, "--no-headers"]);
        let column = |text: &String, n: usize| text.split_whitespace().nth(n).unwrap_or_default().to_owned();

        // The first init container runs; nothing after it has started.
        let listed = c.wait_for_text(&["get", "pod", "web", "--no-headers"], "the first init container listed", |l| {
            column(l, 2) == "Init:0/2"
        });
        assert_eq!(column(&listed, 1), "0/2", "the sidecar counts among the containers: {listed}");
        let pod = c.json(&["get", "pod", "web"]);
        assert_eq!(pod["status"]["phase"], "Pending", "{pod:#}");
        let initialized = pod["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Initialized");
        assert_eq!(initialized.unwrap()["status"], "False", "{pod:#}");
        assert_eq!(pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing", "{pod:#}");
        let waiting = c.run(&["logs", "web", "-c", "app"], None);
        let said = String::from_utf8_lossy(&waiting.stderr);
        assert!(said.contains("is waiting to start: PodInitializing"), "{said}");
        // (The row is there once the container is; its first line follows.)
        wait_until("setup's line", || lines().join(","), |l| !l.is_empty());
        assert_eq!(lines(), ["setup"]);

        // Let it finish: the sidecar starts, and the app only once its startup probe passes.
        std::fs::write(notes.join("go"), "").expect("go");
        let listed = c.wait_for_text(&["get", "pod", "web", "--no-headers"], "the pod running", |l| {
            column(l, 1) == "2/2" && column(l, 2) == "Running"
        });
        wait_until("the app's line", || lines().join(","), |l| l.split(',').count() >= 3);
        assert_eq!(lines(), ["setup", "agent-start", "app-start"], "{listed}");
        let pod = c.json(&["get", "pod", "web"]);
        let init = &pod["status"]["initContainerStatuses"];
        assert_eq!(init[0]["state"]["terminated"]["reason"], "Completed", "{pod:#}");
        assert_eq!((&init[1]["started"], &init[1]["ready"]), (&Value::Bool(true), &Value::Bool(true)), "{pod:#}");
        assert_eq!(c.ok(&["logs", "web", "-c", "setup"]).trim(), "set up");

        // Deleted: the app stops first, the sidecar after it.
        c.ok(&["delete", "pod", "web"]);
        assert_eq!(lines()[3..], ["app-TERM", "app-done", "agent-TERM", "agent-done"]);

        let broken = c.wait_for(&["get", "pod", "broken"], "the pod failed", |p| p["status"]["phase"] == "Failed");
        assert_eq!(broken["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 4, "{broken:#}");
        assert_eq!(broken["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing");
        assert_eq!(column(&row("broken"), 2), "Init:Error");

        let oneshot =
            c.wait_for(&["get", "pod", "oneshot"], "the job's pod succeeded", |p| p["status"]["phase"] == "Succeeded");
        let agent = &oneshot["status"]["initContainerStatuses"][0];
        // It ignores SIGTERM: killed at the end of the grace period.
        assert_eq!(agent["state"]["terminated"]["exitCode"], 137, "the sidecar stopped with its app: {oneshot:#}");
        assert_eq!(column(&row("oneshot"), 2), "Completed");
    })
    .await;
}

/// The Job controller: pods from the template until the completions have succeeded, as
/// `kubectl wait --for=condition=complete` and `kubectl logs job/…` expect, and a Job
/// whose pods fail past its `backoffLimit` failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_their_pods_or_fail_past_their_backoff_limit() {
    let c = std::sync::Arc::new(Cluster::start().await);
    blocking(move || {
        c.apply(
            "
apiVersion: batch/v1
kind: Job
metadata: {name: count, namespace: default}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: sh, image: example/shell, args: [-c, 'echo counted']}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: fails, namespace: default}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: sh, image: example/shell, args: [-c, 'exit 2']}]
",
        );
        c.ok(&["wait", "job/count", "--for=condition=complete", "--timeout=60s"]);
        let job = c.json(&["get", "job", "count"]);
        let uid = job["metadata"]["uid"].as_str().unwrap();
        assert_eq!(job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], uid, "{job:#}");
        assert_eq!((&job["status"]["succeeded"], job["status"].get("active")), (&Value::from(3), None), "{job:#}");
        assert!(job["status"]["completionTime"].is_string(), "{job:#}");
        let listed = c.ok(&["get", "job", "count", "--no-headers"]);
        let columns: Vec<&str> = listed.split_whitespace().collect();
        assert_eq!(columns[1..3], ["Complete", "3/3"], "{listed}");
        let pods = c.json(&["get", "pods", "-l", "job-name=count"]);
        let phases: Vec<&str> =
            pods["items"].as_array().unwrap().iter().map(|p| p["status"]["phase"].as_str().unwrap()).collect();
        assert_eq!(phases, ["Succeeded"; 3], "{pods:#}");
        let tracked =
            pods["items"].as_array().unwrap().iter().filter(|p| p["metadata"]["finalizers"].is_array()).count();
        assert_eq!(tracked, 0, "counted pods are released from the tracking finalizer: {pods:#}");
        assert_eq!(c.ok(&["logs", "job/count"]).trim(), "counted");
        // The controller's syncs since (one a second at least) wrote nothing.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(c.json(&["get", "job", "count"])["metadata"]["resourceVersion"], job["metadata"]["resourceVersion"]);

        c.ok(&["wait", "job/fails", "--for=condition=failed", "--timeout=60s"]);
        let failed = c.json(&["get", "job", "fails"]);
        assert_eq!(failed["status"]["failed"], 2, "the first try and one retry: {failed:#}");
        let reasons: Vec<&str> =
            failed["status"]["conditions"].as_array().unwrap().iter().filter_map(|c| c["reason"].as_str()).collect();
        assert_eq!(reasons, ["BackoffLimitExceeded", "BackoffLimitExceeded"], "FailureTarget, then Failed: {failed:#}");
        assert_eq!(c.ok(&["get", "job", "fails", "--no-headers"]).split_whitespace().nth(1), Some("Failed"));

        // A running pod deleted: counted as a failure (its count outlives it) and replaced.
        c.apply(
            "
apiVersion: batch/v1
kind: Job
metadata: {name: long, namespace: default}
spec:
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: sh, image: example/shell, args: [-c, 'sleep 60']}]
",
        );
        let running = |list: &Value| {
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
        };
        let first = c.wait_for(&["get", "pods", "-l", "job-name=long"], "the pod running", running);
        assert_eq!(
            first["items"][0]["metadata"]["finalizers"],
            serde_json::json!(["batch.kubernetes.io/job-tracking"])
        );
        c.ok(&["delete", "pod", "-l", "job-name=long"]);
        let job = c.wait_for(&["get", "job", "long"], "the deleted pod counted", |j| j["status"]["failed"] == 1);
        assert_eq!(job["status"]["uncountedTerminatedPods"], serde_json::json!({}), "{job:#}");
        c.wait_for(&["get", "pods", "-l", "job-name=long"], "a replacement running", running);
        // The Job deleted: its pods are released and go with it.
        c.ok(&["delete", "job", "long"]);
        c.wait_for_text(&["get", "pods", "-l", "job-name=long", "-o", "name"], "the Job's pods gone", String::is_empty);
    })
    .await;
}

/// `kubectl exec` runs the command in the container: its root and files, its user, its
/// environment and working directory; stdin reaches it, and its exit code is kubectl's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_the_command_in_the_container_as_its_user() {
    let c = std::sync::Arc::new(Cluster::start().await);
    blocking(move || {
        c.apply(
            "
apiVersion: v1
kind: Pod
metadata: {name: shell, namespace: default}
spec:
  securityContext: {runAsUser: 1234, runAsGroup: 5678}
  containers:
  - name: sh
    image: example/shell
    workingDir: /tmp
    env: [{name: GREETING, value: hello}]
    readinessProbe: {exec: {command: [cat, /tmp/mark]}, periodSeconds: 1}
    args: [-c, 'echo inside > /tmp/mark; while true; do sleep 0.1; done']
",
        );
        c.ok(&["wait", "pod/shell", "--for=condition=Ready", "--timeout=60s"]);
        let said = c.ok(&["exec", "shell", "--", "sh", "-c", "echo \"$GREETING $(id -u):$(id -g) $(pwd)\"; cat mark"]);
        assert_eq!(said, "hello 1234:5678 /tmp\ninside\n", "the container's own file, user, env and directory");
        assert!(!Path::new("/tmp/mark").exists(), "the file is in the container's root, not the node's");

        let piped = c.run(&["exec", "-i", "shell", "--", "tr", "a-z", "A-Z"], Some("through stdin\n"));
        assert_eq!(String::from_utf8_lossy(&piped.stdout), "THROUGH STDIN\n");

        // Ended by a signal: 128 and the signal, as a runtime reports it.
        let killed = c.run(&["exec", "shell", "--", "sh", "-c", "kill -KILL $$"], None);
        assert_eq!(killed.status.code(), Some(137), "{killed:?}");
        let failed = c.run(&["exec", "shell", "--", "sh", "-c", "echo oops >&2; exit 3"], None);
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert_eq!(failed.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("oops") && stderr.contains("command terminated with exit code 3"), "{stderr}");

        let missing = c.run(&["exec", "shell", "-c", "db", "--", "true"], None);
        let stderr = String::from_utf8_lossy(&missing.stderr);
        assert!(!missing.status.success() && stderr.contains("container db is not valid for pod shell"), "{stderr}");
    })
    .await;
}
