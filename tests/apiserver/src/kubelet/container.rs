//! Starting one container as a local process: in the pod's network namespace, in a mount
//! namespace of its own whose root is the host's root under a private overlay (so writes
//! stay with the container) with the pod's volumes mounted at their `mountPath`s, with a
//! clean environment, and in a process group of its own so signals reach it whole.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
};

use rustix::process::{Pid, Signal, kill_process_group};

use super::{KubeletError, security::Identity};

/// A volume mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// On the node.
    pub host: PathBuf,
    /// In the container.
    pub path: String,
    /// `readOnly`.
    pub read_only: bool,
}

/// Everything a container process is started with.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The pod's network namespace.
    pub netns: String,
    /// The container's directory on the node (overlay layers, root).
    pub dir: PathBuf,
    /// Volumes.
    pub mounts: Vec<Mount>,
    /// The pod's hosts file, mounted at `/etc/hosts`.
    pub hosts: PathBuf,
    /// The environment, nothing else.
    pub env: BTreeMap<String, String>,
    /// argv.
    pub argv: Vec<String>,
    /// `workingDir`.
    pub working_dir: String,
    /// Where stdout and stderr go.
    pub log: PathBuf,
    /// Who the process runs as, and what it may do.
    pub identity: Identity,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `path` inside the container with its directories' symlinks followed, as they lie in the
/// node's root that the container's root overlays (`/var/run/…` is `/run/…` on most
/// systems): a mount made at the unresolved path would land where the symlink points on the
/// node, outside the container's root.
pub fn resolve_in_root(path: &str) -> String {
    let mut resolved = std::path::PathBuf::from("/");
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, component) in components.iter().enumerate() {
        let next = resolved.join(component);
        let last = i + 1 == components.len();
        match std::fs::read_link(&next) {
            Ok(target) if !last && target.is_absolute() => resolved = target,
            Ok(target) if !last => resolved = resolved.join(target),
            _ => resolved = next,
        }
    }
    resolved.to_string_lossy().into_owned()
}

/// The shell script that builds the container's root and execs its process. Every value
/// from the pod is quoted; the script runs as root in the container's new mount namespace.
pub fn script(launch: &Launch) -> String {
    let root = launch.dir.join("root");
    let r = |p: &str| quote(&format!("{}{p}", root.display()));
    let mut s = String::from("set -e\nmount --make-rprivate /\n");
    s.push_str(&format!(
        "mount -t overlay overlay -o lowerdir=/,upperdir={},workdir={} {}\n",
        launch.dir.join("upper").display(),
        launch.dir.join("work").display(),
        r("")
    ));
    for special in ["/proc", "/dev", "/sys"] {
        s.push_str(&format!("mount --rbind {special} {}\n", r(special)));
    }
    // (touched first: where the node's own /etc/hosts is a mount, the overlay has none)
    s.push_str(&format!(
        "touch {hosts}\nmount --bind {} {hosts}\n",
        quote(&launch.hosts.to_string_lossy()),
        hosts = r("/etc/hosts")
    ));
    for m in &launch.mounts {
        s.push_str(&format!(
            "mkdir -p {}\nmount --bind {} {}\n",
            r(&m.path),
            quote(&m.host.to_string_lossy()),
            r(&m.path)
        ));
        if m.read_only {
            s.push_str(&format!("mount -o remount,bind,ro {}\n", r(&m.path)));
        }
    }
    let identity = &launch.identity;
    if identity.read_only_root {
        // The root's own mount only: the volumes, /proc, /dev and /sys keep their flags.
        s.push_str(&format!("mount -o remount,bind,ro {}\n", r("")));
    }
    // setpriv (util-linux) takes the identity inside the root, after every mount is made.
    let setpriv: Vec<String> = setpriv(identity).iter().map(|a| quote(a)).collect();
    let env: Vec<String> = launch.env.iter().map(|(k, v)| quote(&format!("{k}={v}"))).collect();
    let argv: Vec<String> = launch.argv.iter().map(|a| quote(a)).collect();
    s.push_str(&format!(
        "exec chroot {} {} /usr/bin/env -i {} /bin/sh -c 'cd \"$0\" && exec \"$@\"' {} {}\n",
        r(""),
        setpriv.join(" "),
        env.join(" "),
        quote(&launch.working_dir),
        argv.join(" ")
    ));
    s
}

/// The command, run inside the container's root, that takes `identity` and runs the
/// arguments after it: the container's process, or an exec probe's command.
pub fn setpriv(identity: &Identity) -> Vec<String> {
    let mut args =
        vec!["/usr/bin/setpriv".to_owned(), format!("--reuid={}", identity.uid), format!("--regid={}", identity.gid)];
    if identity.groups.is_empty() {
        args.push("--clear-groups".into());
    } else {
        args.push(format!("--groups={}", identity.groups.iter().map(u32::to_string).collect::<Vec<_>>().join(",")));
    }
    if identity.no_new_privileges {
        args.push("--no-new-privs".into());
    }
    if let Some(set) = &identity.bounding_set {
        args.push(format!("--bounding-set={set}"));
    }
    args
}

/// Starts the container; the process is the container's main process once it has set up.
pub fn spawn(launch: &Launch) -> Result<tokio::process::Child, KubeletError> {
    for layer in ["upper", "work", "root"] {
        std::fs::create_dir_all(launch.dir.join(layer)).map_err(|e| KubeletError::io(&launch.dir, e))?;
    }
    if let Some(parent) = launch.log.parent() {
        std::fs::create_dir_all(parent).map_err(|e| KubeletError::io(parent, e))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .map_err(|e| KubeletError::io(&launch.log, e))?;
    let err = log.try_clone().map_err(|e| KubeletError::io(&launch.log, e))?;
    tokio::process::Command::new("ip")
        .args(["netns", "exec", &launch.netns, "unshare", "--mount", "/bin/sh", "-c", &script(launch)])
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| KubeletError::Start(format!("{}: {e}", launch.argv.first().map_or("", String::as_str))))
}

/// Sends `signal` to the container's process group.
pub fn signal(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process_group(pid, signal);
    }
}

/// The directory of container `name` of the pod in `pod_dir`.
pub fn container_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("containers").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_the_pod_are_quoted() {
        let launch = Launch {
            netns: "ns".into(),
            dir: "/state/pods/u/containers/app".into(),
            mounts: vec![Mount { host: "/state/v".into(), path: "/profiles".into(), read_only: true }],
            hosts: "/state/pods/u/etc-hosts".into(),
            env: BTreeMap::from([("X".into(), "a'b $(rm -rf /)".into())]),
            argv: vec!["/bin/app".into(), "--name=it's".into()],
            working_dir: "/".into(),
            log: "/state/log".into(),
            identity: Identity::root(),
        };
        let s = script(&launch);
        assert!(s.contains("'X=a'\\''b $(rm -rf /)'"), "{s}");
        assert!(s.contains("'--name=it'\\''s'"), "{s}");
        assert!(s.contains("mount -o remount,bind,ro '/state/pods/u/containers/app/root/profiles'"), "{s}");
        assert!(
            s.contains("'/usr/bin/setpriv' '--reuid=0' '--regid=0' '--clear-groups' '--bounding-set=-all,+chown,"),
            "{s}"
        );
        let root_read_only = "mount -o remount,bind,ro '/state/pods/u/containers/app/root'\n";
        assert!(!s.contains(root_read_only), "a writable root stays writable: {s}");

        let confined = Launch {
            identity: Identity {
                uid: 65532,
                gid: 65532,
                groups: vec![7, 8],
                no_new_privileges: true,
                read_only_root: true,
                bounding_set: Some("-all".into()),
            },
            ..launch
        };
        let s = script(&confined);
        assert!(s.contains(root_read_only), "{s}");
        assert!(
            s.contains(
                "'/usr/bin/setpriv' '--reuid=65532' '--regid=65532' '--groups=7,8' '--no-new-privs' '--bounding-set=-all' /usr/bin/env"
            ),
            "{s}"
        );
        let (volumes, root) = (s.find("root/profiles'\n").unwrap(), s.find(root_read_only).unwrap());
        assert!(volumes < root, "the root is made read-only after the volumes are mounted: {s}");
    }
}
