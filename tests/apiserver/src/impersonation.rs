//! Impersonation, as kube-apiserver's impersonation filter does it: `Impersonate-User`,
//! `Impersonate-Group`, `Impersonate-Uid` and `Impersonate-Extra-<key>` headers make the
//! request another user's, once the requester is authorized to `impersonate` each of them
//! (`users` or `serviceaccounts`, `groups`, `uids`, `userextras/<key>`). The checks are plain
//! requests for the authorizer; the new user is a plain function of the headers.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

use crate::{audit::RequestRecord, error::ApiError, rbac::UserInfo};

/// Who a request asks to act as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impersonation {
    /// `Impersonate-User`.
    pub user: String,
    /// Every `Impersonate-Group`.
    pub groups: Vec<String>,
    /// `Impersonate-Uid`, or empty.
    pub uid: String,
    /// `Impersonate-Extra-<key>` values by key (lowercase, percent-decoded).
    pub extra: BTreeMap<String, Vec<String>>,
}

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

/// The impersonation the headers ask for, if any; a group, uid or extra without a user is
/// refused as kube-apiserver refuses it.
pub fn requested(headers: &HeaderMap) -> Result<Option<Impersonation>, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    };
    let user = values(USER).into_iter().next().unwrap_or_default();
    let groups = values(GROUP);
    let uid = values(UID).into_iter().next().unwrap_or_default();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix(EXTRA)
            && let Ok(value) = value.to_str()
        {
            let key = form_urlencoded::parse(format!("k={key}").as_bytes())
                .next()
                .map_or_else(|| key.to_owned(), |(_, k)| k.into_owned());
            extra.entry(key.to_ascii_lowercase()).or_default().push(value.to_owned());
        }
    }
    if user.is_empty() {
        if !groups.is_empty() || !uid.is_empty() || !extra.is_empty() {
            return Err(ApiError::bad_request(format!(
                "requested {} without impersonating a user",
                describe(&groups, &uid, &extra)
            )));
        }
        return Ok(None);
    }
    Ok(Some(Impersonation { user, groups, uid, extra }))
}

fn describe(groups: &[String], uid: &str, extra: &BTreeMap<String, Vec<String>>) -> String {
    let mut parts: Vec<String> = groups.iter().map(|g| format!("group={g}")).collect();
    if !uid.is_empty() {
        parts.push(format!("uid={uid}"));
    }
    parts.extend(extra.iter().map(|(k, v)| format!("extra[{k}]={v:?}")));
    format!("[{}]", parts.join(" "))
}

fn check(group: &str, resource: &str, subresource: &str, namespace: &str, name: &str) -> RequestRecord {
    RequestRecord {
        verb: "impersonate".into(),
        group: group.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        namespace: namespace.into(),
        name: name.into(),
        ..RequestRecord::default()
    }
}

/// The `impersonate` requests the requester must be allowed, in kube-apiserver's order:
/// the user (as a ServiceAccount in its namespace when it names one), each group, each
/// extra value, the uid.
pub fn checks(wanted: &Impersonation) -> Vec<RequestRecord> {
    let mut all = vec![match service_account(&wanted.user) {
        Some((namespace, name)) => check("", "serviceaccounts", "", namespace, name),
        None => check("", "users", "", "", &wanted.user),
    }];
    all.extend(wanted.groups.iter().map(|g| check("", "groups", "", "", g)));
    for (key, values) in &wanted.extra {
        all.extend(values.iter().map(|v| check("authentication.k8s.io", "userextras", key, "", v)));
    }
    if !wanted.uid.is_empty() {
        all.push(check("authentication.k8s.io", "uids", "", "", &wanted.uid));
    }
    all
}

fn service_account(user: &str) -> Option<(&str, &str)> {
    user.strip_prefix("system:serviceaccount:")?.split_once(':')
}

/// The user the request then runs as: the named user with the groups asked for, a
/// ServiceAccount's own groups added, and `system:authenticated` (or, for
/// `system:anonymous`, `system:unauthenticated`).
pub fn user(wanted: &Impersonation) -> UserInfo {
    let mut groups = wanted.groups.clone();
    if let Some((namespace, _)) = service_account(&wanted.user) {
        for group in ["system:serviceaccounts".to_owned(), format!("system:serviceaccounts:{namespace}")] {
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
    }
    let implied = if wanted.user == "system:anonymous" { "system:unauthenticated" } else { "system:authenticated" };
    if !groups.iter().any(|g| g == implied) {
        groups.push(implied.to_owned());
    }
    UserInfo { name: wanted.user.clone(), groups, uid: wanted.uid.clone(), extra: wanted.extra.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn headers_name_the_user_groups_uid_and_extras() {
        assert_eq!(requested(&HeaderMap::new()).unwrap(), None);
        let wanted = requested(&headers(&[
            ("Impersonate-User", "vera"),
            ("Impersonate-Group", "viewers"),
            ("Impersonate-Group", "ops"),
            ("Impersonate-Uid", "1001"),
            ("Impersonate-Extra-Scopes%2Fview", "all"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(wanted.groups, ["viewers", "ops"]);
        assert_eq!(wanted.extra["scopes/view"], ["all"]);
        let summary: Vec<String> = checks(&wanted).iter().map(ToString::to_string).collect();
        assert_eq!(
            summary,
            [
                "impersonate core/users \"vera\" (cluster-wide)",
                "impersonate core/groups \"viewers\" (cluster-wide)",
                "impersonate core/groups \"ops\" (cluster-wide)",
                "impersonate authentication.k8s.io/userextras/scopes/view \"all\" (cluster-wide)",
                "impersonate authentication.k8s.io/uids \"1001\" (cluster-wide)",
            ]
        );
        assert_eq!(user(&wanted).groups, ["viewers", "ops", "system:authenticated"]);
        let err = requested(&headers(&[("Impersonate-Group", "admins")])).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (400, "requested [group=admins] without impersonating a user"));
    }

    #[test]
    fn a_service_account_is_impersonated_in_its_namespace_with_its_groups() {
        let wanted = requested(&headers(&[("Impersonate-User", "system:serviceaccount:shop:ops")])).unwrap().unwrap();
        assert_eq!(checks(&wanted)[0].to_string(), "impersonate core/serviceaccounts \"ops\" in namespace shop");
        assert_eq!(
            user(&wanted).groups,
            ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"]
        );
    }
}
