//! Escalation prevention, as kube-apiserver's RBAC storage does it: a Role or ClusterRole may
//! be written only with rules its writer holds (in the Role's namespace, or cluster-wide)
//! unless the writer may `escalate` it; a RoleBinding or ClusterRoleBinding may be written
//! only for a role whose rules its writer holds unless the writer may `bind` it; a
//! ClusterRole's `aggregationRule` needs every permission. `system:masters` may do anything.
//! Refusals are worded as kube-apiserver words them, the missing rules listed compactly.

use serde_json::Value;

use crate::{
    audit::RequestRecord,
    error::ApiError,
    rbac::{Policy, UserInfo},
};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Whether `request` writes a role or binding, which the check must see.
pub fn guards(request: &RequestRecord) -> bool {
    request.group == RBAC_GROUP
        && request.subresource.is_empty()
        && matches!(request.resource.as_str(), "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings")
        && matches!(request.verb.as_str(), "create" | "update" | "patch")
}

/// One permission: a verb on one resource (and name) of one group, or on one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    Resource { group: String, resource: String, name: Option<String>, verb: String },
    Url { url: String, verb: String },
}

fn strings(rule: &Value, field: &str) -> Vec<String> {
    crate::strings(rule.get(field))
}

/// A rule as the permissions it grants one by one (kube's `BreakdownRule`).
fn breakdown(rule: &Value) -> Vec<Atom> {
    let verbs = strings(rule, "verbs");
    let names = strings(rule, "resourceNames");
    let mut atoms = Vec::new();
    for group in strings(rule, "apiGroups") {
        for resource in strings(rule, "resources") {
            for verb in &verbs {
                if names.is_empty() {
                    atoms.push(Atom::Resource {
                        group: group.clone(),
                        resource: resource.clone(),
                        name: None,
                        verb: verb.clone(),
                    });
                }
                for name in &names {
                    atoms.push(Atom::Resource {
                        group: group.clone(),
                        resource: resource.clone(),
                        name: Some(name.clone()),
                        verb: verb.clone(),
                    });
                }
            }
        }
    }
    for url in strings(rule, "nonResourceURLs") {
        atoms.extend(verbs.iter().map(|verb| Atom::Url { url: url.clone(), verb: verb.clone() }));
    }
    atoms
}

/// Whether an owner's rule grants `atom` (kube's `ruleCovers` for one permission). A
/// wildcard in the atom is held only by the same wildcard.
fn covers(owner: &Value, atom: &Atom) -> bool {
    let has = |field: &str, value: &str| strings(owner, field).iter().any(|v| v == "*" || v == value);
    match atom {
        Atom::Resource { group, resource, name, verb } => {
            let resources = strings(owner, "resources");
            let resource_held = resources.iter().any(|r| {
                r == "*"
                    || r == resource
                    || resource
                        .split_once('/')
                        .is_some_and(|(base, sub)| *r == format!("{base}/*") || *r == format!("*/{sub}"))
            });
            let names = strings(owner, "resourceNames");
            let name_held = names.is_empty() || name.as_ref().is_some_and(|n| names.contains(n));
            has("verbs", verb) && has("apiGroups", group) && resource_held && name_held
        }
        Atom::Url { url, verb } => {
            let urls = strings(owner, "nonResourceURLs");
            has("verbs", verb)
                && urls.iter().any(|u| u == url || u.strip_suffix('*').is_some_and(|prefix| url.starts_with(prefix)))
        }
    }
}

/// The permissions of `rules` that no rule of `owner` grants, in order.
fn missing(owner: &[&Value], rules: &[&Value]) -> Vec<Atom> {
    let mut missing: Vec<Atom> = Vec::new();
    for atom in rules.iter().flat_map(|r| breakdown(r)) {
        if !owner.iter().any(|o| covers(o, &atom)) && !missing.contains(&atom) {
            missing.push(atom);
        }
    }
    missing
}

fn go_strings(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

/// The missing permissions as kube-apiserver lists them: verbs of one resource (and name)
/// gathered into one rule (`CompactRules`), each printed as `CompactString` prints it,
/// sorted.
fn describe(missing: &[Atom]) -> Vec<String> {
    /// What one compacted rule is about; only resource rules gather verbs.
    #[derive(PartialEq, Eq)]
    enum About {
        Resource { group: String, resource: String, name: Option<String> },
        Url(String),
    }
    let mut rules: Vec<(About, Vec<String>)> = Vec::new();
    for atom in missing {
        match atom {
            Atom::Resource { group, resource, name, verb } => {
                let about = About::Resource { group: group.clone(), resource: resource.clone(), name: name.clone() };
                match rules.iter_mut().find(|(a, _)| *a == about) {
                    Some((_, verbs)) => verbs.push(verb.clone()),
                    None => rules.push((about, vec![verb.clone()])),
                }
            }
            Atom::Url { url, verb } => rules.push((About::Url(url.clone()), vec![verb.clone()])),
        }
    }
    let mut lines: Vec<String> = rules
        .into_iter()
        .map(|(about, verbs)| {
            let mut parts = Vec::new();
            match about {
                About::Resource { group, resource, name } => {
                    parts.push(format!("APIGroups:{}", go_strings(&[group])));
                    parts.push(format!("Resources:{}", go_strings(&[resource])));
                    if let Some(name) = name {
                        parts.push(format!("ResourceNames:{}", go_strings(&[name])));
                    }
                }
                About::Url(url) => parts.push(format!("NonResourceURLs:{}", go_strings(&[url]))),
            }
            parts.push(format!("Verbs:{}", go_strings(&verbs)));
            format!("{{{}}}", parts.join(", "))
        })
        .collect();
    lines.sort();
    lines.dedup();
    lines
}

/// kube-apiserver's refusal of rules the user does not hold.
fn not_held(user: &UserInfo, missing: &[Atom]) -> String {
    format!(
        "user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        go_strings(&user.groups),
        describe(missing).join("\n")
    )
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// Whether `user` may write `object` (the role or binding as it would be stored) by
/// `request`; a refusal is kube-apiserver's 403 (or 404 for a binding of a missing role).
pub fn check(policy: &Policy, user: &UserInfo, request: &RequestRecord, object: &Value) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    let name = text(object, "/metadata/name");
    let name = if name.is_empty() { request.name.as_str() } else { name };
    let namespace = request.namespace.as_str();
    let resource = request.qualified_resource();
    let forbidden = |message: String| {
        ApiError::forbidden(format!("{resource} \"{name}\" is forbidden: {message}"), &resource, name)
    };
    let allowed = |verb: &str, resource: &str, role: &str| {
        let ask = RequestRecord {
            verb: verb.into(),
            group: RBAC_GROUP.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: role.into(),
            ..RequestRecord::default()
        };
        policy.authorize(user, &ask).allowed()
    };
    let held = policy.rules_for(user, namespace);
    match request.resource.as_str() {
        "roles" | "clusterroles" => {
            if allowed("escalate", &request.resource, name) {
                return Ok(());
            }
            let rules: Vec<&Value> = object.get("rules").and_then(Value::as_array).into_iter().flatten().collect();
            let lacking = missing(&held, &rules);
            if !lacking.is_empty() {
                return Err(forbidden(not_held(user, &lacking)));
            }
            let all = serde_json::json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]);
            let all: Vec<&Value> = all.as_array().into_iter().flatten().collect();
            if object.get("aggregationRule").is_some_and(|a| !a.is_null()) && !missing(&held, &all).is_empty() {
                return Err(forbidden("must have cluster-admin privileges to use the aggregationRule".into()));
            }
            Ok(())
        }
        _ => {
            let kind = text(object, "/roleRef/kind");
            let role = text(object, "/roleRef/name");
            let resource = if kind == "ClusterRole" { "clusterroles" } else { "roles" };
            if allowed("bind", resource, role) {
                return Ok(());
            }
            let rules = match kind {
                "ClusterRole" => policy.cluster_role(role).map(|_| policy.cluster_role_rules(role)),
                _ => policy.role(namespace, role).map(|_| policy.role_rules(namespace, role)),
            }
            .ok_or_else(|| ApiError::not_found(&format!("{resource}.{RBAC_GROUP}"), role))?;
            let lacking = missing(&held, &rules);
            if lacking.is_empty() { Ok(()) } else { Err(forbidden(not_held(user, &lacking))) }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rules_held_cover_what_they_grant_and_no_more() {
        let owner = [
            json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}),
            json!({"apiGroups": ["apps"], "resources": ["deployments/*"], "verbs": ["*"]}),
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["tls"]}),
            json!({"nonResourceURLs": ["/healthz/*"], "verbs": ["get"]}),
        ];
        let owner: Vec<&Value> = owner.iter().collect();
        let wanted = [
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}),
            json!({"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]}),
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["tls"]}),
            json!({"nonResourceURLs": ["/healthz/ready"], "verbs": ["get"]}),
        ];
        assert!(missing(&owner, &wanted.iter().collect::<Vec<_>>()).is_empty());
        let more = [
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete", "deletecollection"]}),
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}),
            json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}),
            json!({"nonResourceURLs": ["/metrics"], "verbs": ["get"]}),
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}),
        ];
        let lacking = missing(&owner, &more.iter().collect::<Vec<_>>());
        assert_eq!(
            describe(&lacking),
            [
                "{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\" \"deletecollection\" \"*\"]}",
                "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}",
                "{APIGroups:[\"apps\"], Resources:[\"deployments\"], Verbs:[\"get\"]}",
                "{NonResourceURLs:[\"/metrics\"], Verbs:[\"get\"]}",
            ]
        );
        let user = UserInfo::authenticated("alice", &["dev"]);
        assert!(not_held(&user, &lacking).starts_with(
            "user \"alice\" (groups=[\"dev\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups"
        ));
    }
}
