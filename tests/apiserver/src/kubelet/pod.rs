//! One pod on the node, from its network and volumes to its containers' processes, probes,
//! restarts and status, until it is deleted.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use rustix::process::Signal;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{
    Context,
    container::{self, Launch, Mount},
    env::{self, Sources},
    hosts, images,
    network::Attachment,
    probe, security,
    volumes::{self, Objects, VolumeSource},
};
use crate::{
    registry::TypeKey,
    store::{Patch, Subresource, WriteOptions},
};

/// How a pod's worker is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep running.
    No,
    /// SIGTERM, then SIGKILL after the grace period; then the pod object is removed.
    Graceful(Duration),
    /// The object is gone: kill now.
    Now,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting { reason: String, message: String },
    Running { since: Timestamp },
    Terminated { code: i32, reason: String, started: Timestamp, finished: Timestamp },
}

#[derive(Debug, Default)]
struct ProbeTrack {
    next: Option<Instant>,
    successes: u32,
    failures: u32,
}

/// Where a container stands in the pod's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An init container: runs to completion, in order, before the next one starts.
    Init,
    /// An init container with `restartPolicy: Always` (a native sidecar): started in order,
    /// the next one starting once it has started; it runs beside the app containers, is
    /// always restarted, and stops after them.
    Sidecar,
    /// One of `containers`.
    App,
}

struct Container {
    spec: Value,
    name: String,
    kind: Kind,
    restarts: u32,
    started_once: bool,
    /// Its startup probe has passed (at once without one): liveness and readiness probes
    /// run only from then on, and a sidecar lets the next init container start.
    started: bool,
    startup: ProbeTrack,
    /// Not to be restarted: a sidecar whose app containers have ended.
    retired: bool,
    /// Sent SIGTERM as a retired sidecar.
    stopping: bool,
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
    state: State,
    last: Option<Value>,
    ready: bool,
    readiness: ProbeTrack,
    liveness: ProbeTrack,
    retry_at: Option<Instant>,
    backoff: Duration,
    done: bool,
}

impl Container {
    /// It has run to completion, successfully.
    fn succeeded(&self) -> bool {
        matches!(self.state, State::Terminated { code: 0, .. })
    }

    /// The init containers after it may start: it has succeeded (an init container) or
    /// started (a sidecar). App containers hold nothing up.
    fn lets_next_start(&self) -> bool {
        match self.kind {
            Kind::Init => self.succeeded(),
            Kind::Sidecar => self.started,
            Kind::App => true,
        }
    }

    /// A container not created yet: `waiting` is `PodInitializing` in a pod with init
    /// containers, else `ContainerCreating`, as the kubelet reports it.
    fn new(spec: &Value, kind: Kind, waiting: &str) -> Self {
        Self {
            name: spec.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            spec: spec.clone(),
            kind,
            restarts: 0,
            started_once: false,
            started: false,
            startup: ProbeTrack::default(),
            retired: false,
            stopping: false,
            child: None,
            pid: None,
            state: State::Waiting { reason: waiting.into(), message: String::new() },
            last: None,
            ready: false,
            readiness: ProbeTrack::default(),
            liveness: ProbeTrack::default(),
            retry_at: None,
            backoff: Duration::ZERO,
            done: false,
        }
    }
}

fn state_json(state: &State) -> Value {
    match state {
        State::Waiting { reason, message } if message.is_empty() => json!({"waiting": {"reason": reason}}),
        State::Waiting { reason, message } => json!({"waiting": {"reason": reason, "message": message}}),
        State::Running { since } => json!({"running": {"startedAt": since.to_string()}}),
        State::Terminated { code, reason, started, finished } => json!({"terminated": {
            "exitCode": code, "reason": reason, "startedAt": started.to_string(), "finishedAt": finished.to_string(),
            "containerID": "",
        }}),
    }
}

/// ConfigMaps and Secrets of the pod's namespace, read from the store when asked, and its
/// ServiceAccount's tokens, issued when first asked for and again when due.
struct Namespace<'a> {
    context: &'a Context,
    namespace: &'a str,
    pod: &'a Value,
    tokens: &'a volumes::TokenManager,
}

impl Namespace<'_> {
    fn object(&self, plural: &str, name: &str) -> Option<Value> {
        self.context.store.get(&TypeKey { group: String::new(), plural: plural.into() }, self.namespace, name).ok()
    }
}

impl Objects for Namespace<'_> {
    fn config_map(&self, name: &str) -> Option<Value> {
        self.object("configmaps", name)
    }
    fn secret(&self, name: &str) -> Option<Value> {
        self.object("secrets", name)
    }
    fn service_account_token(&self, audience: &str, expiration_seconds: i64) -> Result<Vec<u8>, env::ConfigError> {
        let Some(access) = &self.context.access else {
            return Err(env::ConfigError("this node issues no ServiceAccount tokens (the server has no HTTPS)".into()));
        };
        let text = |p: &str| self.pod.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let account = Some(text("/spec/serviceAccountName")).filter(|a| !a.is_empty()).unwrap_or("default");
        let spec = crate::serviceaccounts::TokenSpec {
            audiences: vec![if audience.is_empty() { crate::serviceaccounts::ISSUER } else { audience }.to_owned()],
            expiration_seconds,
        };
        let bound = Some(("Pod", text("/metadata/name"), text("/metadata/uid")));
        self.tokens.get(audience, expiration_seconds, Timestamp::now().as_second(), || {
            access
                .issuer
                .issue(&self.context.store, self.namespace, account, &spec, bound)
                .map(|(token, expires)| (token, expires.as_second()))
                .map_err(|e| env::ConfigError(format!("failed to fetch token: {}", e.message)))
        })
    }
}

impl Sources for Namespace<'_> {
    fn config_map(&self, name: &str, key: &str) -> Option<String> {
        Objects::config_map(self, name)?.pointer(&format!("/data/{key}")).and_then(Value::as_str).map(str::to_owned)
    }
    fn secret(&self, name: &str, key: &str) -> Option<String> {
        env::secret_value(&Objects::secret(self, name)?, key)
    }
}

/// Gives `path` its owner, its group (`fs_group`, else root's) and `mode`. A failure shows
/// later, as the container's own failure to read or write.
fn own(path: &std::path::Path, uid: u32, fs_group: Option<u32>, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::os::unix::fs::chown(path, Some(uid), Some(fs_group.unwrap_or(0)));
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

struct Pod {
    context: Arc<Context>,
    object: Value,
    namespace: String,
    name: String,
    uid: String,
    dir: PathBuf,
    attachment: Attachment,
    started: Timestamp,
    /// Init containers (and sidecars) in order, then the app containers.
    containers: Vec<Container>,
    /// The pod has been initialized.
    initialized_once: bool,
    /// When the sidecars of a pod whose app containers have ended are killed.
    sidecars_stop_by: Option<Instant>,
    volumes: BTreeMap<String, PathBuf>,
    volume_error: Option<String>,
    tokens: volumes::TokenManager,
    conditions: BTreeMap<&'static str, (bool, Timestamp)>,
    written: Option<Value>,
    hosts: String,
}

fn pods() -> TypeKey {
    TypeKey { group: String::new(), plural: "pods".into() }
}

impl Pod {
    fn restart_policy(&self) -> &str {
        self.object.pointer("/spec/restartPolicy").and_then(Value::as_str).unwrap_or("Always")
    }

    /// Every init container has succeeded and every sidecar has started (latched in
    /// `initialized_once`: a sidecar's restart later does not undo it).
    fn initialized(&self) -> bool {
        self.containers.iter().all(Container::lets_next_start)
    }

    /// Latches `initialized_once` when the pod has just been initialized.
    fn note_initialized(&mut self) {
        if !self.initialized_once && self.initialized() {
            self.initialized_once = true;
        }
    }

    /// An init container failed for good (the pod's `restartPolicy` is `Never`).
    fn init_failed(&self) -> bool {
        self.containers.iter().any(|c| c.kind == Kind::Init && c.done && !c.succeeded())
    }

    /// Every app container has ended for good.
    fn apps_ended(&self) -> bool {
        self.containers.iter().filter(|c| c.kind == Kind::App).all(|c| c.done)
    }

    /// Whether container `i` may start now: an init container or sidecar once every one
    /// before it has succeeded or started, an app container once the pod is initialized.
    fn may_start(&self, i: usize) -> bool {
        match self.containers[i].kind {
            Kind::App => self.initialized_once,
            // A sidecar restarting in an initialized pod waits for nothing.
            Kind::Sidecar if self.initialized_once => true,
            Kind::Init | Kind::Sidecar => self.containers[..i].iter().all(Container::lets_next_start),
        }
    }

    /// The pod's volumes, with the ServiceAccount volume when the pod gets one.
    fn volume_specs(&self) -> Vec<Value> {
        let mut specs: Vec<Value> =
            self.object.pointer("/spec/volumes").and_then(Value::as_array).cloned().unwrap_or_default();
        if self.context.access.is_some() {
            let account = self.object.pointer("/spec/serviceAccountName").and_then(Value::as_str);
            let ns = Namespace {
                context: &self.context,
                namespace: &self.namespace,
                pod: &self.object,
                tokens: &self.tokens,
            };
            let account = ns.object("serviceaccounts", account.filter(|a| !a.is_empty()).unwrap_or("default"));
            if volumes::automounts(&self.object, account.as_ref()) {
                specs.push(volumes::service_account_volume());
            }
        }
        specs
    }

    /// Writes every volume's files (again, if their objects changed or a token is due).
    fn sync_volumes(&mut self) {
        let specs = self.volume_specs();
        let ns =
            Namespace { context: &self.context, namespace: &self.namespace, pod: &self.object, tokens: &self.tokens };
        self.volume_error = None;
        let ownership = security::volume_ownership(&self.object);
        for volume in &specs {
            let name = volume.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            let source = match volumes::source(&self.object, volume, &ns) {
                Ok(s) => s,
                Err(e) => {
                    self.volume_error = Some(format!("MountVolume.SetUp failed for volume \"{name}\": {e}"));
                    continue;
                }
            };
            let path = volumes::host_path(&self.context.state_dir, &self.dir, &self.namespace, &name, &source);
            let new = !path.exists();
            let _ = std::fs::create_dir_all(&path);
            match &source {
                // Set up once: what the containers do with it since is theirs.
                VolumeSource::Scratch | VolumeSource::Claim(_) if new => {
                    own(&path, 0, ownership.fs_group, security::scratch_mode(ownership));
                }
                VolumeSource::Scratch | VolumeSource::Claim(_) => {}
                VolumeSource::Files(files) => {
                    for (file, bytes) in files.iter().filter(|(f, _)| volumes::safe_relative(f)) {
                        let target = path.join(file);
                        if std::fs::read(&target).ok().as_deref() != Some(bytes.as_slice()) {
                            if let Some(parent) = target.parent() {
                                let _ = std::fs::create_dir_all(parent);
                            }
                            // Replaced whole, as the kubelet's atomic writer does, with its
                            // mode and owners set before it appears.
                            let (declared, token) = volumes::declared_mode(volume, file);
                            let owner = if token { ownership.fs_user.unwrap_or(0) } else { 0 };
                            let temporary = target.with_extension("biometrics-tmp");
                            if std::fs::write(&temporary, bytes).is_ok() {
                                own(
                                    &temporary,
                                    owner,
                                    ownership.fs_group,
                                    security::file_mode(declared, token, ownership),
                                );
                                let _ = std::fs::rename(&temporary, &target);
                            }
                        }
                    }
                }
                VolumeSource::Empty => {}
            }
            self.volumes.insert(name, path);
        }
    }

    fn hosts_path(&self) -> PathBuf {
        self.dir.join("etc-hosts")
    }

    /// Rewrites the hosts file when what Services resolve to has changed. The file is
    /// bind-mounted into every container, so it is rewritten in place (never replaced), new
    /// content first and the length after, so a reader never finds it empty.
    fn sync_hosts(&mut self) {
        let services = self.context.services.lock().expect("lock").clone();
        let hostname = self.object.pointer("/spec/hostname").and_then(Value::as_str).unwrap_or(&self.name);
        let text = hosts::hosts_file(&self.namespace, hostname, self.attachment.ip, &services);
        if text == self.hosts {
            return;
        }
        let path = self.hosts_path();
        let _ = std::fs::create_dir_all(&self.dir);
        let written =
            std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&path).and_then(|mut f| {
                use std::io::Write as _;
                f.write_all(text.as_bytes())?;
                f.set_len(text.len() as u64)
            });
        if written.is_ok() {
            self.hosts = text;
        }
    }

    fn launch(&self, c: &Container) -> Result<Launch, (String, String)> {
        let image = c.spec.get("image").and_then(Value::as_str).unwrap_or_default();
        let resolved =
            self.context.images.resolve(image).ok_or_else(|| {
                ("ErrImagePull".to_owned(), format!("image {image:?} is not in the node's image map"))
            })?;
        let strings = |field: &str, environment: &BTreeMap<String, String>| -> Vec<String> {
            c.spec
                .get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|arg| env::expand(arg, environment))
                .collect()
        };
        let mut pod = self.object.clone();
        pod["status"]["podIP"] = json!(self.attachment.ip.to_string());
        pod["status"]["hostIP"] = json!(self.context.gateway.to_string());
        let ns =
            Namespace { context: &self.context, namespace: &self.namespace, pod: &self.object, tokens: &self.tokens };
        let identity = security::identity(&self.object, &c.spec)
            .map_err(|refusal| (refusal.reason.to_owned(), refusal.message))?;
        // An image's user has no home of its own here but root's.
        let home = if identity.uid == 0 { "/root" } else { "/" };
        let mut environment = BTreeMap::from([
            ("PATH".to_owned(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()),
            ("HOSTNAME".to_owned(), self.name.clone()),
            ("HOME".to_owned(), home.to_owned()),
            ("KUBERNETES_SERVICE_HOST".to_owned(), self.context.gateway.to_string()),
            ("KUBERNETES_SERVICE_PORT".to_owned(), self.context.api_port.to_string()),
        ]);
        environment.extend(resolved.env.clone());
        environment
            .extend(env::environment(&pod, &c.spec, &ns).map_err(|e| ("CreateContainerConfigError".to_owned(), e.0))?);
        let mut mounts = Vec::new();
        for m in c.spec.get("volumeMounts").and_then(Value::as_array).into_iter().flatten() {
            let volume = m.get("name").and_then(Value::as_str).unwrap_or_default();
            let host = self
                .volumes
                .get(volume)
                .ok_or_else(|| ("CreateContainerConfigError".to_owned(), format!("volume {volume:?} is not ready")))?;
            let sub = m.get("subPath").and_then(Value::as_str).filter(|s| volumes::safe_relative(s));
            mounts.push(Mount {
                host: sub.map_or_else(|| host.clone(), |s| host.join(s)),
                path: container::resolve_in_root(m.get("mountPath").and_then(Value::as_str).unwrap_or("/")),
                read_only: m.get("readOnly").and_then(Value::as_bool) == Some(true),
            });
        }
        // The ServiceAccount volume, where the container does not mount something else.
        if let Some(host) = self.volumes.get(volumes::SERVICE_ACCOUNT_VOLUME)
            && !mounts.iter().any(|m| m.path == container::resolve_in_root(volumes::SERVICE_ACCOUNT_MOUNT))
        {
            let path = container::resolve_in_root(volumes::SERVICE_ACCOUNT_MOUNT);
            mounts.push(Mount { host: host.clone(), path, read_only: true });
        }
        Ok(Launch {
            netns: self.attachment.netns.clone(),
            dir: container::container_dir(&self.dir, &c.name),
            mounts,
            hosts: self.hosts_path(),
            argv: images::argv(resolved, &strings("command", &environment), &strings("args", &environment)),
            env: environment,
            working_dir: c.spec.get("workingDir").and_then(Value::as_str).unwrap_or("/").to_owned(),
            log: self.log_path(&c.name, c.restarts),
            identity,
        })
    }

    fn log_path(&self, container: &str, restart: u32) -> PathBuf {
        log_path(&self.dir, container, restart)
    }

    /// One step of every container: reap, restart, start, probe.
    async fn step(&mut self) {
        let now = Instant::now();
        let policy = self.restart_policy().to_owned();
        // (A pod without init containers is initialized from the start, so its containers
        // start in their order in this step.)
        self.note_initialized();
        for i in 0..self.containers.len() {
            // Reap.
            let exited = self.containers[i].child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let c = &mut self.containers[i];
                let code = status
                    .code()
                    .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(9));
                let started = match c.state {
                    State::Running { since } => since,
                    _ => Timestamp::now(),
                };
                let terminated = State::Terminated {
                    code,
                    reason: if code == 0 { "Completed".into() } else { "Error".into() },
                    started,
                    finished: Timestamp::now(),
                };
                c.child = None;
                if let Some(pid) = c.pid.take() {
                    // The rest of the group (children the main process left) goes with it.
                    container::signal(pid, Signal::KILL);
                    self.context.groups.lock().expect("lock").remove(&pid);
                }
                c.ready = false;
                c.started = false;
                c.startup = ProbeTrack::default();
                c.readiness = ProbeTrack::default();
                c.liveness = ProbeTrack::default();
                let restart = match c.kind {
                    // A failed init container follows the pod's policy, except that
                    // `Always` restarts it only on failure too.
                    Kind::Init => code != 0 && policy != "Never",
                    Kind::Sidecar => !c.retired,
                    Kind::App => policy == "Always" || policy == "OnFailure" && code != 0,
                };
                if restart {
                    c.last = Some(state_json(&terminated));
                    c.backoff = if c.backoff.is_zero() {
                        self.context.restart_backoff
                    } else {
                        (c.backoff * 2).min(Duration::from_secs(300))
                    };
                    c.retry_at = Some(now + c.backoff);
                    c.state = State::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: format!(
                            "back-off {}s restarting failed container={} pod={}_{}",
                            c.backoff.as_secs(),
                            c.name,
                            self.name,
                            self.namespace
                        ),
                    };
                } else {
                    c.state = terminated;
                    c.done = true;
                }
            }
            // Start.
            let due = {
                let c = &self.containers[i];
                !c.done
                    && !c.retired
                    && c.child.is_none()
                    && c.retry_at.is_none_or(|t| t <= now)
                    && self.volume_error.is_none()
                    && !self.init_failed()
                    && self.may_start(i)
            };
            if due {
                match self.launch(&self.containers[i]) {
                    Ok(launch) => match container::spawn(&launch) {
                        Ok(child) => {
                            let c = &mut self.containers[i];
                            if c.started_once {
                                c.restarts += 1;
                            }
                            c.started_once = true;
                            c.pid = child.id();
                            if let Some(pid) = c.pid {
                                self.context.groups.lock().expect("lock").insert(pid);
                            }
                            c.child = Some(child);
                            c.state = State::Running { since: Timestamp::now() };
                            c.retry_at = None;
                        }
                        Err(e) => {
                            let c = &mut self.containers[i];
                            c.state = State::Waiting { reason: "RunContainerError".into(), message: e.to_string() };
                            c.retry_at = Some(now + Duration::from_secs(2));
                        }
                    },
                    Err((reason, message)) => {
                        let c = &mut self.containers[i];
                        c.state = State::Waiting { reason, message };
                        c.retry_at = Some(now + Duration::from_secs(2));
                    }
                }
            }
            self.probe(i, now).await;
            self.note_initialized();
        }
        // The app containers have ended (or never will run): the sidecars stop too, as
        // the kubelet stops them, the last one first, each once the one after it has
        // exited, and SIGKILL for what still runs after the grace period; none restarts.
        if self.apps_ended() || self.init_failed() {
            let grace = Duration::from_secs(
                self.object.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_u64).unwrap_or(30),
            );
            let deadline = *self.sidecars_stop_by.get_or_insert(now + grace);
            for c in self.containers.iter_mut().filter(|c| c.kind == Kind::Sidecar) {
                c.retired = true;
                if c.child.is_none() {
                    c.done = true;
                }
            }
            let running = self.containers.iter_mut().rev().filter(|c| c.kind == Kind::Sidecar && c.child.is_some());
            for (n, c) in running.enumerate() {
                let Some(pid) = c.pid else { continue };
                if now >= deadline {
                    container::signal(pid, Signal::KILL);
                } else if n == 0 && !c.stopping {
                    c.stopping = true;
                    container::signal(pid, Signal::TERM);
                }
            }
        }
    }

    async fn probe(&mut self, i: usize, now: Instant) {
        let address = self.attachment.ip;
        let root = container::container_dir(&self.dir, &self.containers[i].name).join("root");
        // A running container was started with it, so it resolves.
        let Ok(identity) = security::identity(&self.object, &self.containers[i].spec) else { return };
        let c = &mut self.containers[i];
        let State::Running { since } = c.state else { return };
        // An init container has no probes: it is only waited for.
        if c.kind == Kind::Init {
            c.started = true;
            return;
        }
        let running_for =
            Duration::from_secs(u64::try_from(Timestamp::now().duration_since(since).as_secs()).unwrap_or(0));
        if !c.started {
            let Some(spec) = c.spec.get("startupProbe").cloned() else {
                c.started = true;
                return self.probe_running(i, now, running_for, address, &root, &identity).await;
            };
            let timing = probe::timing(&spec);
            if running_for < timing.initial_delay || c.startup.next.is_some_and(|t| t > now) {
                return;
            }
            c.startup.next = Some(now + timing.period);
            if probe::run(&spec, &c.spec, address, c.pid, &root, &identity).await {
                c.started = true;
            } else {
                c.startup.failures += 1;
                if c.startup.failures >= timing.failure_threshold
                    && let Some(pid) = c.pid
                {
                    // As a failed liveness probe: killed, and restarted by its policy.
                    container::signal(pid, Signal::KILL);
                }
            }
            return;
        }
        self.probe_running(i, now, running_for, address, &root, &identity).await;
    }

    /// The liveness and readiness probes of a started container.
    async fn probe_running(
        &mut self,
        i: usize,
        now: Instant,
        running_for: Duration,
        address: std::net::Ipv4Addr,
        root: &std::path::Path,
        identity: &security::Identity,
    ) {
        let c = &mut self.containers[i];
        for liveness in [false, true] {
            let field = if liveness { "livenessProbe" } else { "readinessProbe" };
            let Some(spec) = c.spec.get(field).cloned() else {
                if !liveness {
                    c.ready = true;
                }
                continue;
            };
            let timing = probe::timing(&spec);
            let track = if liveness { &mut c.liveness } else { &mut c.readiness };
            if running_for < timing.initial_delay || track.next.is_some_and(|t| t > now) {
                continue;
            }
            track.next = Some(now + timing.period);
            let passed = probe::run(&spec, &c.spec, address, c.pid, root, identity).await;
            let track = if liveness { &mut c.liveness } else { &mut c.readiness };
            if passed {
                track.successes += 1;
                track.failures = 0;
            } else {
                track.failures += 1;
                track.successes = 0;
            }
            let (successes, failures) = (track.successes, track.failures);
            if liveness {
                if failures >= timing.failure_threshold
                    && let Some(pid) = c.pid
                {
                    // The container is killed and restarted by its restart policy.
                    container::signal(pid, Signal::KILL);
                }
            } else if successes >= timing.success_threshold {
                c.ready = true;
            } else if failures >= timing.failure_threshold {
                c.ready = false;
            }
        }
    }

    fn condition(&mut self, kind: &'static str, status: bool) -> Value {
        let entry = self.conditions.entry(kind).or_insert((status, Timestamp::now()));
        if entry.0 != status {
            *entry = (status, Timestamp::now());
        }
        json!({"type": kind, "status": if status { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": entry.1.to_string()})
    }

    fn status(&mut self) -> Value {
        let apps = || self.containers.iter().filter(|c| c.kind == Kind::App);
        let serving = |c: &&Container| c.kind != Kind::Init;
        let all_started = apps().all(|c| c.started_once);
        let all_ready =
            self.containers.iter().filter(serving).all(|c| c.ready && matches!(c.state, State::Running { .. }));
        // A sidecar still running keeps the pod Running after its app containers have
        // ended, as the kubelet's phase counts it, until it has stopped.
        let sidecar_running = self.containers.iter().any(|c| c.kind == Kind::Sidecar && c.child.is_some());
        let phase = if self.init_failed() {
            "Failed"
        } else if self.apps_ended() && !sidecar_running {
            if apps().all(Container::succeeded) { "Succeeded" } else { "Failed" }
        } else if self.initialized_once && all_started || self.apps_ended() {
            "Running"
        } else {
            "Pending"
        };
        let status_of = |c: &Container| {
            let running = matches!(c.state, State::Running { .. });
            let mut s = json!({
                "name": c.name,
                "image": c.spec.get("image").cloned().unwrap_or(Value::Null),
                "imageID": "",
                // A finished init container reads ready, as the kubelet reports it.
                "ready": match c.kind {
                    Kind::Init => c.succeeded(),
                    Kind::Sidecar | Kind::App => c.ready && running,
                },
                "started": c.started && running,
                "restartCount": c.restarts,
                "state": state_json(&c.state),
                "lastState": c.last.clone().unwrap_or_else(|| json!({})),
            });
            if let Some(pid) = c.pid {
                s["containerID"] = json!(format!("process://{pid}"));
            }
            s
        };
        let statuses: Vec<Value> = apps().map(status_of).collect();
        let init_statuses: Vec<Value> = self.containers.iter().filter(|c| c.kind != Kind::App).map(status_of).collect();
        let mut status = json!({
            "phase": phase,
            "hostIP": self.context.gateway.to_string(),
            "hostIPs": [{"ip": self.context.gateway.to_string()}],
            "podIP": self.attachment.ip.to_string(),
            "podIPs": [{"ip": self.attachment.ip.to_string()}],
            "startTime": self.started.to_string(),
            "qosClass": "BestEffort",
            "containerStatuses": statuses,
        });
        if !init_statuses.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        let initialized = self.initialized_once;
        let conditions = vec![
            self.condition("PodReadyToStartContainers", true),
            self.condition("Initialized", initialized),
            self.condition("Ready", all_ready),
            self.condition("ContainersReady", all_ready),
            self.condition("PodScheduled", true),
        ];
        status["conditions"] = json!(conditions);
        if let Some(message) = &self.volume_error {
            status["message"] = json!(message);
        }
        status
    }

    fn write_status(&mut self) {
        let status = self.status();
        if self.written.as_ref() == Some(&status) {
            return;
        }
        let opts = WriteOptions { field_manager: "kubelet".into(), ..Default::default() };
        let patch = Patch::Merge(json!({"status": status}));
        if self.context.store.patch(&pods(), &self.namespace, &self.name, patch, Subresource::Status, &opts).is_ok() {
            self.written = Some(status);
        }
    }

    /// Stops the containers within `grace`: SIGTERM to the init and app containers, and
    /// once they have exited, to each sidecar in turn, the last one first (so a sidecar
    /// outlives what it serves); SIGKILL to whatever still runs at the end; every
    /// process reaped.
    async fn kill_all(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let sidecars: Vec<usize> =
            (0..self.containers.len()).rev().filter(|&i| self.containers[i].kind == Kind::Sidecar).collect();
        let others: Vec<usize> =
            (0..self.containers.len()).filter(|&i| self.containers[i].kind != Kind::Sidecar).collect();
        let mut waves = vec![others];
        waves.extend(sidecars.into_iter().map(|i| vec![i]));
        for wave in waves {
            for &i in &wave {
                if let Some(pid) = self.containers[i].pid {
                    container::signal(pid, Signal::TERM);
                }
            }
            if !self.wait_exited(&wave, deadline).await {
                break;
            }
        }
        for c in &mut self.containers {
            if let Some(pid) = c.pid.take() {
                container::signal(pid, Signal::KILL);
                if let Some(child) = c.child.as_mut() {
                    let _ = child.wait().await;
                }
                self.context.groups.lock().expect("lock").remove(&pid);
            }
        }
    }

    /// Waits until containers `which` have exited, or `deadline`: whether they did.
    async fn wait_exited(&mut self, which: &[usize], deadline: Instant) -> bool {
        loop {
            let mut alive = false;
            for &i in which {
                let c = &mut self.containers[i];
                if let Some(child) = c.child.as_mut() {
                    if child.try_wait().ok().flatten().is_some() {
                        c.child = None;
                    } else {
                        alive = true;
                    }
                }
            }
            if !alive {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Where the log of `container`'s `restart`-th run is kept.
pub fn log_path(pod_dir: &std::path::Path, container: &str, restart: u32) -> PathBuf {
    pod_dir.join("logs").join(container).join(format!("{restart}.log"))
}

/// Runs the pod until it is asked to stop.
pub async fn run(context: Arc<Context>, object: Value, mut stop: watch::Receiver<Stop>) {
    let meta =
        |f: &str| object.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (namespace, name, uid) = (meta("namespace"), meta("name"), meta("uid"));
    let dir = context.state_dir.join("pods").join(&uid);
    let attachment = match context.network.attach(&uid[..uid.len().min(8)]).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("test-apiserver: kubelet: pod {namespace}/{name}: {e}");
            return;
        }
    };
    let list =
        |field: &str| object.pointer(&format!("/spec/{field}")).and_then(Value::as_array).cloned().unwrap_or_default();
    let (init, apps) = (list("initContainers"), list("containers"));
    let waiting = if init.is_empty() { "ContainerCreating" } else { "PodInitializing" };
    let containers = init
        .iter()
        .map(|spec| {
            let sidecar = spec.get("restartPolicy").and_then(Value::as_str) == Some("Always");
            Container::new(spec, if sidecar { Kind::Sidecar } else { Kind::Init }, waiting)
        })
        .chain(apps.iter().map(|spec| Container::new(spec, Kind::App, waiting)))
        .collect();
    let mut pod = Pod {
        context: context.clone(),
        object,
        namespace,
        name,
        uid,
        dir,
        attachment,
        started: Timestamp::now(),
        containers,
        initialized_once: false,
        sidecars_stop_by: None,
        volumes: BTreeMap::new(),
        volume_error: None,
        tokens: volumes::TokenManager::default(),
        conditions: BTreeMap::new(),
        written: None,
        hosts: String::new(),
    };
    let mut last_volume_sync = Instant::now();
    pod.sync_volumes();
    pod.sync_hosts();
    let outcome = loop {
        let asked = *stop.borrow();
        if asked != Stop::No {
            break asked;
        }
        pod.sync_hosts();
        pod.step().await;
        pod.write_status();
        if last_volume_sync.elapsed() >= Duration::from_secs(1) {
            pod.sync_volumes();
            last_volume_sync = Instant::now();
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    let grace = match outcome {
        Stop::Graceful(g) => g,
        _ => Duration::ZERO,
    };
    pod.kill_all(grace).await;
    context.network.detach(&pod.attachment).await;
    if matches!(outcome, Stop::Graceful(_)) {
        // The kubelet confirms the deletion once the containers are gone.
        let _ = context.store.delete(&pods(), &pod.namespace, &pod.name, false, Some(&pod.uid));
    }
    let _ = std::fs::remove_dir_all(&pod.dir);
}
