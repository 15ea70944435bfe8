//! Authorization by RBAC, as kube-apiserver's RBAC authorizer decides it: a request (its
//! attributes, as [`RequestRecord`] describes them) is allowed when some rule of a role
//! bound to the user, one of its groups or its ServiceAccount covers it; a RoleBinding
//! grants in its own namespace only, a ClusterRoleBinding everywhere. `system:masters`
//! may do anything. A ClusterRole with an `aggregationRule` has the rules of every
//! ClusterRole its selectors match, as the aggregation controller writes them.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::{Value, json};

use crate::audit::RequestRecord;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user's name (`system:serviceaccount:<ns>:<name>` for a ServiceAccount).
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Its uid (a ServiceAccount's object uid), or empty.
    pub uid: String,
    /// What the authenticator adds (a ServiceAccount token's bound pod and id).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user in `groups` and `system:authenticated`.
    pub fn authenticated(name: &str, groups: &[&str]) -> Self {
        let mut all: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        if !all.iter().any(|g| g == "system:authenticated") {
            all.push("system:authenticated".into());
        }
        Self { name: name.to_owned(), groups: all, uid: String::new(), extra: BTreeMap::new() }
    }

    /// The user of a request without credentials.
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            uid: String::new(),
            extra: BTreeMap::new(),
        }
    }

    /// As `userInfo` in a review's status.
    pub fn to_json(&self) -> Value {
        let mut info = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            info["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            info["extra"] = json!(self.extra);
        }
        info
    }
}

/// The RBAC objects a decision reads.
#[derive(Debug, Default)]
pub struct Policy {
    /// Roles, every namespace.
    pub roles: Vec<Arc<Value>>,
    /// ClusterRoles.
    pub cluster_roles: Vec<Arc<Value>>,
    /// RoleBindings, every namespace.
    pub role_bindings: Vec<Arc<Value>>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<Arc<Value>>,
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

/// Whether `subject` of a binding in `binding_namespace` names `user`.
fn names(subject: &Value, binding_namespace: &str, user: &UserInfo) -> bool {
    let name = text(subject, "/name");
    match text(subject, "/kind") {
        "User" => name == user.name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let namespace = subject.get("namespace").and_then(Value::as_str).unwrap_or(binding_namespace);
            user.name == format!("system:serviceaccount:{namespace}:{name}")
        }
        _ => false,
    }
}

fn labels_match(object: &Value, selector: &Value) -> bool {
    let labels = object.pointer("/metadata/labels").and_then(Value::as_object);
    let expected = selector.get("matchLabels").and_then(Value::as_object);
    expected.is_some_and(|expected| expected.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)))
}

impl Policy {
    /// The rules of ClusterRole `name`, aggregated ones included (through aggregated roles
    /// that are aggregated themselves, as the controller's passes would settle them).
    pub fn cluster_role_rules(&self, name: &str) -> Vec<&Value> {
        let mut rules = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        self.collect_rules(name, &mut rules, &mut seen);
        rules
    }

    fn collect_rules<'a>(
        &'a self,
        name: &str,
        rules: &mut Vec<&'a Value>,
        seen: &mut std::collections::BTreeSet<String>,
    ) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        let Some(role) = self.cluster_roles.iter().find(|r| text(r, "/metadata/name") == name) else { return };
        rules.extend(role.get("rules").and_then(Value::as_array).into_iter().flatten());
        let selectors = role.pointer("/aggregationRule/clusterRoleSelectors").and_then(Value::as_array);
        for selector in selectors.into_iter().flatten() {
            for other in self.cluster_roles.iter().filter(|r| labels_match(r, selector)) {
                self.collect_rules(text(other, "/metadata/name"), rules, seen);
            }
        }
    }

    /// The rules of Role `namespace/name`.
    pub fn role_rules(&self, namespace: &str, name: &str) -> Vec<&Value> {
        self.roles
            .iter()
            .find(|r| text(r, "/metadata/namespace") == namespace && text(r, "/metadata/name") == name)
            .and_then(|r| r.get("rules").and_then(Value::as_array))
            .into_iter()
            .flatten()
            .collect()
    }

    /// ClusterRole `name`, if it exists.
    pub fn cluster_role(&self, name: &str) -> Option<&Value> {
        self.cluster_roles.iter().find(|r| text(r, "/metadata/name") == name).map(AsRef::as_ref)
    }

    /// Role `namespace/name`, if it exists.
    pub fn role(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.roles
            .iter()
            .find(|r| text(r, "/metadata/namespace") == namespace && text(r, "/metadata/name") == name)
            .map(AsRef::as_ref)
    }

    /// Every rule `user` holds in `namespace` (cluster-wide only, when empty): those of the
    /// ClusterRoleBindings naming it and of the namespace's RoleBindings naming it.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<&Value> {
        let mut rules = Vec::new();
        for binding in &self.cluster_role_bindings {
            if binding.get("subjects").and_then(Value::as_array).into_iter().flatten().any(|s| names(s, "", user)) {
                rules.extend(self.cluster_role_rules(text(binding, "/roleRef/name")));
            }
        }
        if namespace.is_empty() {
            return rules;
        }
        for binding in self.role_bindings.iter().filter(|b| text(b, "/metadata/namespace") == namespace) {
            if !binding
                .get("subjects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|s| names(s, namespace, user))
            {
                continue;
            }
            let role = text(binding, "/roleRef/name");
            rules.extend(match text(binding, "/roleRef/kind") {
                "ClusterRole" => self.cluster_role_rules(role),
                _ => self.role_rules(namespace, role),
            });
        }
        rules
    }

    /// Allows or denies `request` by `user`, with the reason kube-apiserver gives.
    pub fn authorize(&self, user: &UserInfo, request: &RequestRecord) -> Decision {
        if user.groups.iter().any(|g| g == "system:masters") {
            return Decision::Allowed("the user is in system:masters".into());
        }
        for binding in &self.cluster_role_bindings {
            let subjects = binding.get("subjects").and_then(Value::as_array);
            if !subjects.into_iter().flatten().any(|s| names(s, "", user)) {
                continue;
            }
            let role = text(binding, "/roleRef/name");
            if self.cluster_role_rules(role).into_iter().any(|rule| rule_allows(rule, request)) {
                return Decision::Allowed(format!(
                    "RBAC: allowed by ClusterRoleBinding \"{}\" of ClusterRole \"{role}\" to {}",
                    text(binding, "/metadata/name"),
                    user.name
                ));
            }
        }
        if !request.namespace.is_empty() {
            for binding in self.role_bindings.iter().filter(|b| text(b, "/metadata/namespace") == request.namespace) {
                let subjects = binding.get("subjects").and_then(Value::as_array);
                if !subjects.into_iter().flatten().any(|s| names(s, &request.namespace, user)) {
                    continue;
                }
                let role = text(binding, "/roleRef/name");
                let rules = match text(binding, "/roleRef/kind") {
                    "ClusterRole" => self.cluster_role_rules(role),
                    _ => self.role_rules(&request.namespace, role),
                };
                if rules.into_iter().any(|rule| rule_allows(rule, request)) {
                    return Decision::Allowed(format!(
                        "RBAC: allowed by RoleBinding \"{}/{}\" of {} \"{role}\" to {}",
                        request.namespace,
                        text(binding, "/metadata/name"),
                        text(binding, "/roleRef/kind"),
                        user.name
                    ));
                }
            }
        }
        Decision::Denied(forbidden_message(user, request))
    }
}

/// The RBAC objects in `store` now.
pub fn policy(store: &crate::store::Store) -> Policy {
    let list = |plural: &str| {
        let key = crate::registry::TypeKey { group: "rbac.authorization.k8s.io".into(), plural: plural.into() };
        store.list_shared(&key, None).map(|(items, _)| items).unwrap_or_default()
    };
    Policy {
        roles: list("roles"),
        cluster_roles: list("clusterroles"),
        role_bindings: list("rolebindings"),
        cluster_role_bindings: list("clusterrolebindings"),
    }
}

/// What the authorizer decided, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, by the named binding.
    Allowed(String),
    /// Denied: the 403 message.
    Denied(String),
}

impl Decision {
    /// Whether the request may proceed.
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allowed(_))
    }
}

fn covers(list: &[&str], value: &str) -> bool {
    list.iter().any(|v| *v == "*" || *v == value)
}

/// Whether one PolicyRule covers the request.
pub fn rule_allows(rule: &Value, request: &RequestRecord) -> bool {
    let verbs = strings(rule.get("verbs"));
    if !covers(&verbs, &request.verb) {
        return false;
    }
    if !request.is_resource_request() {
        return strings(rule.get("nonResourceURLs")).iter().any(|url| {
            *url == "*"
                || *url == request.path
                || url.strip_suffix('*').is_some_and(|prefix| request.path.starts_with(prefix))
        });
    }
    if !covers(&strings(rule.get("apiGroups")), &request.group) {
        return false;
    }
    let combined = request.rbac_resource();
    let resource_matches = strings(rule.get("resources")).iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!request.subresource.is_empty() && *r == format!("*/{}", request.subresource))
            || r.strip_suffix("/*").is_some_and(|base| base == request.resource && !request.subresource.is_empty())
    });
    if !resource_matches {
        return false;
    }
    let names = strings(rule.get("resourceNames"));
    names.is_empty() || (!request.name.is_empty() && names.contains(&request.name.as_str()))
}

/// kube-apiserver's words for a denied request.
pub fn forbidden_message(user: &UserInfo, request: &RequestRecord) -> String {
    if !request.is_resource_request() {
        return format!("forbidden: User \"{}\" cannot {} path \"{}\"", user.name, request.verb, request.path);
    }
    let resource = request.qualified_resource();
    let what = if request.name.is_empty() { resource } else { format!("{resource} \"{}\"", request.name) };
    let scope = if request.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{}\"", request.namespace)
    };
    format!(
        "{what} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        user.name,
        request.verb,
        request.rbac_resource(),
        request.group
    )
}

/// The ClusterRoles and ClusterRoleBindings kube-apiserver makes at start-up that matter
/// here: `cluster-admin`; `admin`, `edit` and `view`, aggregated from the
/// `system:aggregate-to-*` roles (and every role labelled to join them, a CRD's own); and
/// what every user may do: discovery, `/version` and health, reviewing itself.
pub fn bootstrap() -> Vec<Value> {
    let read = ["get", "list", "watch"];
    let write = ["create", "delete", "deletecollection", "patch", "update"];
    let cluster_role = |name: &str, labels: Value, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name, "labels": labels, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
               "rules": rules})
    };
    let label = |to: &str| json!({format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"});
    let aggregated = |name: &str, to: &str, labels: Value| {
        let mut role = cluster_role(name, labels, json!([]));
        role["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": label(to)}]});
        role
    };
    let binding = |name: &str, role: &str, group: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]})
    };
    let core_read = [
        "configmaps",
        "endpoints",
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "pods",
        "pods/log",
        "pods/status",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "replicationcontrollers/status",
        "serviceaccounts",
        "services",
        "services/status",
        "bindings",
        "events",
        "limitranges",
        "namespaces",
        "namespaces/status",
        "resourcequotas",
        "resourcequotas/status",
    ];
    let apps = [
        "controllerrevisions",
        "daemonsets",
        "daemonsets/status",
        "deployments",
        "deployments/scale",
        "deployments/status",
        "replicasets",
        "replicasets/scale",
        "replicasets/status",
        "statefulsets",
        "statefulsets/scale",
        "statefulsets/status",
    ];
    let view_rules = json!([
        {"apiGroups": [""], "resources": core_read, "verbs": read},
        {"apiGroups": ["apps"], "resources": apps, "verbs": read},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers", "horizontalpodautoscalers/status"], "verbs": read},
        {"apiGroups": ["batch"], "resources": ["cronjobs", "cronjobs/status", "jobs", "jobs/status"], "verbs": read},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets", "poddisruptionbudgets/status"], "verbs": read},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingresses/status", "networkpolicies"], "verbs": read},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
    ]);
    let edit_rules = json!([
        {"apiGroups": [""], "resources": ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"], "verbs": read},
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
        {"apiGroups": [""], "resources": ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], "verbs": write},
        {"apiGroups": [""], "resources": ["pods/eviction", "serviceaccounts/token"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
            "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"], "verbs": write},
        {"apiGroups": ["apps"], "resources": ["daemonsets", "deployments", "deployments/rollback", "deployments/scale",
            "replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale"], "verbs": write},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": write},
        {"apiGroups": ["batch"], "resources": ["cronjobs", "jobs"], "verbs": write},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": write},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "networkpolicies"], "verbs": write},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
    ]);
    let admin_rules = json!([
        {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings", "roles"],
         "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]},
    ]);
    // As in kube: view joins edit and admin, edit joins admin.
    let mut view_labels = label("edit");
    view_labels["rbac.authorization.k8s.io/aggregate-to-admin"] = json!("true");
    let mut anonymous = binding("system:public-info-viewer", "system:public-info-viewer", "system:authenticated");
    anonymous["subjects"]
        .as_array_mut()
        .expect("subjects")
        .push(json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}));
    vec![
        cluster_role(
            "cluster-admin",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        aggregated("admin", "admin", json!({"kubernetes.io/bootstrapping": "rbac-defaults"})),
        aggregated("edit", "edit", label("admin")),
        aggregated("view", "view", view_labels),
        cluster_role("system:aggregate-to-admin", label("admin"), admin_rules),
        cluster_role("system:aggregate-to-edit", label("edit"), edit_rules),
        cluster_role("system:aggregate-to-view", label("view"), view_rules),
        cluster_role(
            "system:discovery",
            json!({}),
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        cluster_role(
            "system:public-info-viewer",
            json!({}),
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        cluster_role(
            "system:basic-user",
            json!({}),
            json!([
                {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
            ]),
        ),
        cluster_role(
            "system:auth-delegator",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            json!([
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
            ]),
        ),
        binding("cluster-admin", "cluster-admin", "system:masters"),
        binding("system:discovery", "system:discovery", "system:authenticated"),
        binding("system:basic-user", "system:basic-user", "system:authenticated"),
        anonymous,
    ]
}

/// Users by bearer token, from a file in kube-apiserver's `--token-auth-file` format:
/// `token,user,uid,"group1,group2"` per line.
#[derive(Debug, Clone, Default)]
pub struct Tokens(BTreeMap<String, UserInfo>);

impl Tokens {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = BTreeMap::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#')) {
            let (token, rest) =
                line.split_once(',').ok_or_else(|| format!("line {}: token,user,uid[,groups]", i + 1))?;
            let mut fields = rest.splitn(3, ',');
            let user = fields.next().unwrap_or_default().trim();
            let _uid = fields.next();
            let groups = fields.next().unwrap_or_default().trim().trim_matches('"');
            if token.trim().is_empty() || user.is_empty() {
                return Err(format!("line {}: a token and a user are required", i + 1));
            }
            let groups: Vec<&str> = groups.split(',').map(str::trim).filter(|g| !g.is_empty()).collect();
            tokens.insert(token.trim().to_owned(), UserInfo::authenticated(user, &groups));
        }
        Ok(Self(tokens))
    }

    /// Adds a token.
    pub fn insert(&mut self, token: &str, user: UserInfo) {
        self.0.insert(token.to_owned(), user);
    }

    /// The user a token stands for.
    pub fn user(&self, token: &str) -> Option<&UserInfo> {
        self.0.get(token)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, Method};

    use super::*;

    fn request(method: Method, uri: &str) -> RequestRecord {
        RequestRecord::from_request(&method, &uri.parse().unwrap(), &HeaderMap::new())
    }

    fn object(value: Value) -> Arc<Value> {
        Arc::new(value)
    }

    fn policy() -> Policy {
        Policy {
            cluster_roles: vec![
                object(
                    json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}, "rules": []}),
                ),
                object(
                    json!({"metadata": {"name": "pcap-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                    "rules": [{"apiGroups": ["biometrics.io"], "resources": ["profilecaptures"], "verbs": ["get", "list", "watch"]}]}),
                ),
                object(
                    json!({"metadata": {"name": "status-writer"}, "rules": [{"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]}]}),
                ),
                object(
                    json!({"metadata": {"name": "health"}, "rules": [{"nonResourceURLs": ["/healthz", "/version/*"], "verbs": ["get"]}]}),
                ),
            ],
            cluster_role_bindings: vec![
                object(json!({"metadata": {"name": "viewers"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
                    "subjects": [{"kind": "Group", "name": "viewers"}]})),
                object(json!({"metadata": {"name": "health"}, "roleRef": {"kind": "ClusterRole", "name": "health"},
                    "subjects": [{"kind": "Group", "name": "system:authenticated"}]})),
            ],
            roles: vec![object(json!({"metadata": {"name": "forward", "namespace": "shop"},
                "rules": [{"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"], "resourceNames": ["web-0"]}]}))],
            role_bindings: vec![
                object(
                    json!({"metadata": {"name": "forward", "namespace": "shop"}, "roleRef": {"kind": "Role", "name": "forward"},
                    "subjects": [{"kind": "ServiceAccount", "name": "ops"}]}),
                ),
                object(
                    json!({"metadata": {"name": "status", "namespace": "shop"}, "roleRef": {"kind": "ClusterRole", "name": "status-writer"},
                    "subjects": [{"kind": "User", "name": "bob"}]}),
                ),
            ],
        }
    }

    #[test]
    fn bindings_grant_what_their_roles_say_where_they_say_it() {
        let policy = policy();
        let viewer = UserInfo::authenticated("alice", &["viewers"]);
        let sa = UserInfo::authenticated("system:serviceaccount:shop:ops", &["system:serviceaccounts"]);
        let bob = UserInfo::authenticated("bob", &[]);
        let admin = UserInfo::authenticated("root", &["system:masters"]);
        let cases = [
            // Aggregation: view has pcap-view's rules.
            (&viewer, Method::GET, "/apis/biometrics.io/v1alpha1/namespaces/shop/profilecaptures/web", true),
            (&viewer, Method::GET, "/apis/biometrics.io/v1alpha1/profilecaptures?watch=true", true),
            (&viewer, Method::PATCH, "/apis/biometrics.io/v1alpha1/namespaces/shop/profilecaptures/web", false),
            (&viewer, Method::GET, "/api/v1/namespaces/shop/secrets", false),
            // A Role's resourceNames and subresource, in its namespace only.
            (&sa, Method::POST, "/api/v1/namespaces/shop/pods/web-0/portforward", true),
            (&sa, Method::POST, "/api/v1/namespaces/shop/pods/web-1/portforward", false),
            (&sa, Method::POST, "/api/v1/namespaces/billing/pods/web-0/portforward", false),
            (&sa, Method::GET, "/api/v1/namespaces/shop/pods/web-0", false),
            // A ClusterRole bound by a RoleBinding: `*/status`, in that namespace.
            (&bob, Method::PATCH, "/apis/apps/v1/namespaces/shop/deployments/web/status", true),
            (&bob, Method::PATCH, "/apis/apps/v1/namespaces/shop/deployments/web", false),
            (&bob, Method::PATCH, "/apis/apps/v1/namespaces/other/deployments/web/status", false),
            // Non-resource URLs, with a prefix.
            (&bob, Method::GET, "/healthz", true),
            (&bob, Method::GET, "/version/", true),
            (&bob, Method::GET, "/metrics", false),
            (&admin, Method::DELETE, "/api/v1/namespaces/shop", true),
        ];
        for (user, method, uri, allowed) in cases {
            let r = request(method.clone(), uri);
            assert_eq!(policy.authorize(user, &r).allowed(), allowed, "{} {method} {uri}", user.name);
        }
    }

    #[test]
    fn denials_are_worded_as_kube_apiserver_words_them() {
        let user = UserInfo::authenticated("alice", &[]);
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/shop/pods",
                "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"shop\"",
            ),
            (
                Method::PATCH,
                "/apis/biometrics.io/v1alpha1/namespaces/shop/profilecaptures/web",
                "profilecaptures.biometrics.io \"web\" is forbidden: User \"alice\" cannot patch resource \"profilecaptures\" in API group \"biometrics.io\" in the namespace \"shop\"",
            ),
            (
                Method::GET,
                "/api/v1/nodes",
                "nodes is forbidden: User \"alice\" cannot list resource \"nodes\" in API group \"\" at the cluster scope",
            ),
            (Method::GET, "/metrics", "forbidden: User \"alice\" cannot get path \"/metrics\""),
        ];
        for (method, uri, expected) in cases {
            let r = request(method, uri);
            assert_eq!(Policy::default().authorize(&user, &r), Decision::Denied(expected.to_owned()), "{uri}");
        }
    }

    #[test]
    fn a_token_file_names_users_and_groups() {
        let tokens = Tokens::parse("t1,alice,1,\"viewers,ops\"\n# comment\nt2,bob,2\n").unwrap();
        assert_eq!(tokens.user("t1").unwrap().groups, ["viewers", "ops", "system:authenticated"]);
        assert_eq!(tokens.user("t2").unwrap().name, "bob");
        assert!(tokens.user("t3").is_none());
        assert!(Tokens::parse("only-a-token\n").is_err());
    }
}
