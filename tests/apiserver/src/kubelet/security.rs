//! A pod's security context as a node applies it: who each container's process runs as
//! (the container's `securityContext` over the pod's), whether it may gain privileges or
//! write its root filesystem, and who owns the files of the pod's volumes.
//!
//! The images of the node's image map are local programs with no user of their own, so they
//! run as root (uid 0, gid 0) unless the pod says otherwise, as an image without `USER`
//! does. Capabilities are containerd's default set with the container's `add` and `drop`;
//! seccomp and SELinux are not applied.

use serde_json::Value;

/// Who a container's process runs as, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `runAsUser`.
    pub uid: u32,
    /// `runAsGroup`.
    pub gid: u32,
    /// `fsGroup` and `supplementalGroups`.
    pub groups: Vec<u32>,
    /// `allowPrivilegeEscalation: false`: the process and its children cannot gain
    /// privileges (setuid programs do not raise them).
    pub no_new_privileges: bool,
    /// `readOnlyRootFilesystem`: writes outside its volumes fail.
    pub read_only_root: bool,
    /// The capability bounding set, as `setpriv --bounding-set` takes it: changes applied
    /// in order (`-all,+chown,…`); none for a privileged container.
    pub bounding_set: Option<String>,
}

/// The capabilities containerd (and Docker) give a container that asks for none.
const DEFAULT_CAPABILITIES: [&str; 14] = [
    "chown",
    "dac_override",
    "fsetid",
    "fowner",
    "mknod",
    "net_raw",
    "setgid",
    "setuid",
    "setfcap",
    "setpcap",
    "net_bind_service",
    "sys_chroot",
    "kill",
    "audit_write",
];

/// Every capability Linux has, by the name `setpriv` takes.
const CAPABILITIES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// Why a container cannot be started as its pod says: the kubelet's waiting reason and
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `CreateContainerConfigError` (the kubelet's checks) or `CreateContainerError` (the
    /// runtime's).
    pub reason: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The bounding set of a container with `capabilities` (`add`, `drop`), as containerd
/// builds it: the default set, or every capability if `add` has `ALL`; none if `drop` has
/// `ALL`; then each one added, then each one dropped. Names are taken with or without
/// `CAP_`, in any case; one Linux does not have refuses the container, as the runtime
/// does.
fn bounding_set(capabilities: Option<&Value>) -> Result<String, Refusal> {
    let names = |field: &str| -> Vec<String> {
        capabilities
            .and_then(|c| c.get(field))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|n| {
                let n = n.to_ascii_lowercase();
                n.strip_prefix("cap_").map_or(n.clone(), str::to_owned)
            })
            .collect()
    };
    let (add, drop) = (names("add"), names("drop"));
    if let Some(unknown) = add.iter().chain(&drop).find(|n| *n != "all" && !CAPABILITIES.contains(&n.as_str())) {
        return Err(Refusal {
            reason: "CreateContainerError",
            message: format!("unknown capability {:?}", format!("CAP_{}", unknown.to_ascii_uppercase())),
        });
    }
    let mut changes: Vec<String> = if add.iter().any(|n| n == "all") {
        vec!["+all".into()]
    } else {
        std::iter::once("-all".to_owned()).chain(DEFAULT_CAPABILITIES.iter().map(|c| format!("+{c}"))).collect()
    };
    if drop.iter().any(|n| n == "all") {
        changes = vec!["-all".into()];
    }
    changes.extend(add.iter().filter(|n| *n != "all").map(|n| format!("+{n}")));
    changes.extend(drop.iter().filter(|n| *n != "all").map(|n| format!("-{n}")));
    Ok(changes.join(","))
}

#[cfg(test)]
impl Identity {
    /// Root, as the node's images run by default.
    pub fn root() -> Self {
        Self {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            no_new_privileges: false,
            read_only_root: false,
            bounding_set: bounding_set(None).ok(),
        }
    }
}

fn id(context: Option<&Value>, field: &str) -> Option<u32> {
    context?.get(field)?.as_u64().and_then(|v| u32::try_from(v).ok())
}

fn pod_context(pod: &Value) -> Option<&Value> {
    pod.pointer("/spec/securityContext")
}

/// The identity of `container` of `pod`, or why it cannot start: `runAsNonRoot` forbids
/// what it would run as, or it names a capability that does not exist.
pub fn identity(pod: &Value, container: &Value) -> Result<Identity, Refusal> {
    let (pod_sc, own) = (pod_context(pod), container.get("securityContext"));
    let either = |field: &str| id(own, field).or_else(|| id(pod_sc, field));
    let flag = |field: &str| {
        own.and_then(|c| c.get(field)).or_else(|| pod_sc.and_then(|p| p.get(field))).and_then(Value::as_bool)
    };
    let uid = either("runAsUser");
    if flag("runAsNonRoot") == Some(true) && uid.unwrap_or(0) == 0 {
        let text = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let name = container.get("name").and_then(Value::as_str).unwrap_or_default();
        let whose = format!(
            "pod: \"{}_{}({})\", container: {name}",
            text("/metadata/name"),
            text("/metadata/namespace"),
            text("/metadata/uid")
        );
        let message = match uid {
            Some(_) => format!("container's runAsUser breaks non-root policy ({whose})"),
            None => format!("container has runAsNonRoot and image will run as root ({whose})"),
        };
        return Err(Refusal { reason: "CreateContainerConfigError", message });
    }
    let mut groups: Vec<u32> = id(pod_sc, "fsGroup").into_iter().collect();
    for g in pod_sc.and_then(|p| p.get("supplementalGroups")).and_then(Value::as_array).into_iter().flatten() {
        if let Some(g) = g.as_u64().and_then(|g| u32::try_from(g).ok())
            && !groups.contains(&g)
        {
            groups.push(g);
        }
    }
    let own_flag = |field: &str| own.and_then(|c| c.get(field)).and_then(Value::as_bool);
    Ok(Identity {
        uid: uid.unwrap_or(0),
        gid: either("runAsGroup").unwrap_or(0),
        groups,
        no_new_privileges: own_flag("allowPrivilegeEscalation") == Some(false),
        read_only_root: own_flag("readOnlyRootFilesystem") == Some(true),
        bounding_set: if own_flag("privileged") == Some(true) {
            None
        } else {
            Some(bounding_set(own.and_then(|c| c.get("capabilities")))?)
        },
    })
}

/// Who owns the files of the pod's volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VolumeOwnership {
    /// `fsGroup`: the group of every volume's files, which it may read (and, in writable
    /// volumes, write); directories pass it on to new files.
    pub fs_group: Option<u32>,
    /// The one `runAsUser` every container of the pod runs as, if they agree: the owner of
    /// ServiceAccount tokens, which are then private to it.
    pub fs_user: Option<u32>,
}

/// The ownership the kubelet gives `pod`'s volumes.
pub fn volume_ownership(pod: &Value) -> VolumeOwnership {
    let pod_sc = pod_context(pod);
    let containers = ["initContainers", "containers"]
        .iter()
        .flat_map(|kind| pod.pointer(&format!("/spec/{kind}")).and_then(Value::as_array).into_iter().flatten());
    let mut users = containers.map(|c| id(c.get("securityContext"), "runAsUser").or_else(|| id(pod_sc, "runAsUser")));
    let first = users.next().flatten();
    let fs_user = first.filter(|_| users.all(|u| u == first));
    VolumeOwnership { fs_group: id(pod_sc, "fsGroup"), fs_user }
}

/// The mode of a file of a ConfigMap, Secret, downward-API or projected volume: the item's
/// `mode`, else the volume's `defaultMode`, else 0644; a ServiceAccount token's is 0600
/// once it has an owner or group of the pod's. With `fsGroup`, the group may read it.
pub fn file_mode(declared: Option<u32>, token: bool, ownership: VolumeOwnership) -> u32 {
    let mut mode = declared.unwrap_or(0o644) & 0o777;
    if token && (ownership.fs_user.is_some() || ownership.fs_group.is_some()) {
        mode = 0o600;
    }
    if ownership.fs_group.is_some() {
        mode |= 0o440;
    }
    mode
}

/// The mode of a writable volume's directory (`emptyDir`, a claim): anyone may write it,
/// as on a node; with `fsGroup`, new files take its group.
pub fn scratch_mode(ownership: VolumeOwnership) -> u32 {
    if ownership.fs_group.is_some() { 0o2777 } else { 0o777 }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(security: Value, containers: Value) -> Value {
        json!({"metadata": {"name": "web-1", "namespace": "shop", "uid": "u1"},
               "spec": {"securityContext": security, "containers": containers}})
    }

    #[test]
    fn the_container_overrides_the_pod_and_groups_gather() {
        let p = pod(
            json!({"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 3000, "supplementalGroups": [4000, 3000]}),
            json!([{"name": "app", "securityContext": {"runAsUser": 65532, "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true}}]),
        );
        let identity = identity(&p, &p["spec"]["containers"][0]).unwrap();
        let defaults = bounding_set(None).unwrap();
        assert_eq!(
            identity,
            Identity {
                uid: 65532,
                gid: 2000,
                groups: vec![3000, 4000],
                no_new_privileges: true,
                read_only_root: true,
                bounding_set: Some(defaults)
            }
        );
        assert_eq!(super::identity(&json!({}), &json!({"name": "app"})).unwrap(), Identity::root());
    }

    #[test]
    fn run_as_non_root_refuses_root_as_the_kubelet_says() {
        let p = pod(json!({"runAsNonRoot": true}), json!([{"name": "app"}]));
        let refusal = identity(&p, &p["spec"]["containers"][0]).unwrap_err();
        assert_eq!(refusal.reason, "CreateContainerConfigError");
        assert_eq!(
            refusal.message,
            "container has runAsNonRoot and image will run as root (pod: \"web-1_shop(u1)\", container: app)"
        );
        let explicit = json!({"name": "app", "securityContext": {"runAsUser": 0}});
        assert!(
            identity(&p, &explicit).unwrap_err().message.starts_with("container's runAsUser breaks non-root policy")
        );
        let fine = json!({"name": "app", "securityContext": {"runAsUser": 10}});
        assert_eq!(identity(&p, &fine).unwrap().uid, 10);
        // The container's own runAsNonRoot: false lifts the pod's.
        let lifted = json!({"name": "app", "securityContext": {"runAsNonRoot": false}});
        assert_eq!(identity(&p, &lifted).unwrap(), Identity::root());
    }

    #[test]
    fn capabilities_are_the_defaults_with_the_containers_add_and_drop() {
        let set = |c: Value| bounding_set(Some(&c)).unwrap();
        assert_eq!(bounding_set(None).unwrap(), format!("-all,+{}", DEFAULT_CAPABILITIES.join(",+")));
        assert_eq!(set(json!({"drop": ["ALL"]})), "-all");
        assert_eq!(set(json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})), "-all,+net_bind_service");
        assert_eq!(set(json!({"add": ["all"], "drop": ["CAP_CHOWN"]})), "+all,-chown");
        assert!(set(json!({"add": ["SYS_PTRACE"]})).ends_with(",+audit_write,+sys_ptrace"));
        // A name Linux does not have is the runtime's refusal, never a word of the script.
        let refusal = bounding_set(Some(&json!({"add": ["NET_ADMIN", "$(touch /x)"]}))).unwrap_err();
        assert_eq!(
            refusal,
            Refusal { reason: "CreateContainerError", message: r#"unknown capability "CAP_$(TOUCH /X)""#.into() }
        );
        let privileged = json!({"name": "app", "securityContext": {"privileged": true}});
        assert_eq!(identity(&json!({}), &privileged).unwrap().bounding_set, None);
    }

    #[test]
    fn volumes_are_owned_by_fs_group_and_tokens_by_the_one_user() {
        let same = pod(json!({"runAsUser": 65532}), json!([{"name": "a"}, {"name": "b"}]));
        assert_eq!(volume_ownership(&same), VolumeOwnership { fs_group: None, fs_user: Some(65532) });
        let differ = pod(
            json!({"runAsUser": 65532}),
            json!([{"name": "a"}, {"name": "b", "securityContext": {"runAsUser": 1}}]),
        );
        assert_eq!(volume_ownership(&differ).fs_user, None);
        let unset = pod(json!({"fsGroup": 7}), json!([{"name": "a"}]));
        assert_eq!(volume_ownership(&unset), VolumeOwnership { fs_group: Some(7), fs_user: None });

        let none = VolumeOwnership::default();
        assert_eq!(file_mode(None, false, none), 0o644);
        assert_eq!(file_mode(Some(0o400), false, none), 0o400);
        assert_eq!(file_mode(Some(0o644), true, none), 0o644, "a root pod's token keeps the volume's mode");
        let user = VolumeOwnership { fs_group: None, fs_user: Some(65532) };
        assert_eq!(file_mode(Some(0o644), true, user), 0o600);
        let group = VolumeOwnership { fs_group: Some(7), fs_user: None };
        assert_eq!(file_mode(Some(0o400), false, group), 0o440);
        assert_eq!(file_mode(Some(0o644), true, group), 0o640);
        assert_eq!((scratch_mode(none), scratch_mode(group)), (0o777, 0o2777));
    }
}
