//! Keeps the `biometrics-trust` ConfigMap as published: a watch of ConfigMaps of that name
//! (and no other) re-publishes the operator's public key in a namespace where this process
//! has published it once the ConfigMap is deleted or its key edited, so that the agents there
//! keep trusting the operator without a restart.

use std::collections::HashSet;

use futures::{Future, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};

use crate::signing::{SigningKey, TRUST_CONFIGMAP, TRUST_KEY};

/// Whether a namespace's trust ConfigMap, as last seen (`None`: gone), must be published
/// again: only where this process published it, and only when it no longer carries the key.
pub fn needs_publish(published: bool, seen: Option<&ConfigMap>, public_pem: &str) -> bool {
    published && seen.and_then(|cm| cm.data.as_ref()?.get(TRUST_KEY)).is_none_or(|key| key != public_pem)
}

/// The namespaces whose ConfigMap a fresh list did not include: deleted while the watch was
/// down, so no deletion was seen.
fn missing_after_relist<'a>(published: &'a HashSet<String>, listed: &'a HashSet<String>) -> Vec<&'a str> {
    published.iter().filter(|ns| !listed.contains(*ns)).map(String::as_str).collect()
}

/// Watches the trust ConfigMaps in `namespace` (all when `None`) until `stopping`, and
/// re-publishes where [`needs_publish`] says so.
pub async fn keep_published(
    client: Client,
    key: SigningKey,
    namespace: Option<String>,
    stopping: impl Future<Output = ()>,
) {
    let api: Api<ConfigMap> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let config = watcher::Config::default().fields(&format!("metadata.name={TRUST_CONFIGMAP}"));
    let mut listed: HashSet<String> = HashSet::new();
    let events = watcher(api, config).default_backoff().take_until(stopping);
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let republish: Vec<String> = match event {
            Ok(watcher::Event::Init) => {
                listed.clear();
                Vec::new()
            }
            Ok(watcher::Event::InitApply(cm)) => {
                let ns = cm.namespace().unwrap_or_default();
                listed.insert(ns.clone());
                stale(&key, &ns, Some(&cm))
            }
            Ok(watcher::Event::InitDone) => {
                missing_after_relist(&key.published_namespaces(), &listed).into_iter().map(str::to_owned).collect()
            }
            Ok(watcher::Event::Apply(cm)) => stale(&key, &cm.namespace().unwrap_or_default(), Some(&cm)),
            Ok(watcher::Event::Delete(cm)) => stale(&key, &cm.namespace().unwrap_or_default(), None),
            Err(e) => {
                tracing::warn!(error = %e, "trust ConfigMap watch");
                Vec::new()
            }
        };
        for ns in republish {
            match key.publish(client.clone(), &ns).await {
                Ok(()) => tracing::info!(namespace = %ns, configmap = TRUST_CONFIGMAP, "re-published the public key"),
                Err(e) => {
                    // Left to the next reconcile in that namespace, which reports a failure.
                    tracing::warn!(namespace = %ns, error = %e, "cannot re-publish the public key");
                    key.forget_published(&ns);
                }
            }
        }
    }
}

fn stale(key: &SigningKey, namespace: &str, seen: Option<&ConfigMap>) -> Vec<String> {
    if needs_publish(key.published_in(namespace), seen, &key.public_pem) {
        vec![namespace.to_owned()]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn cm(key: Option<&str>) -> ConfigMap {
        ConfigMap { data: key.map(|k| BTreeMap::from([(TRUST_KEY.to_owned(), k.to_owned())])), ..Default::default() }
    }

    #[test]
    fn republished_when_deleted_or_edited_where_published() {
        assert!(!needs_publish(true, Some(&cm(Some("PEM"))), "PEM"), "as published");
        assert!(needs_publish(true, None, "PEM"), "deleted");
        assert!(needs_publish(true, Some(&cm(Some("other"))), "PEM"), "edited");
        assert!(needs_publish(true, Some(&cm(None)), "PEM"), "emptied");
        assert!(!needs_publish(false, None, "PEM"), "a namespace the operator has no business in");
        assert!(!needs_publish(false, Some(&cm(Some("other"))), "PEM"));
    }

    #[test]
    fn a_relist_finds_the_deletions_it_missed() {
        let published: HashSet<String> = ["shop", "web"].map(String::from).into();
        let listed: HashSet<String> = ["shop", "other"].map(String::from).into();
        assert_eq!(missing_after_relist(&published, &listed), ["web"]);
    }
}
