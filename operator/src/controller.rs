//! What both controllers do alike around their own logic: the finalizer, counting and
//! timing reconciles, backing off on errors and reporting them on the object, and which
//! changes wake an object.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, StreamExt};
use kube::{
    Api, Client, Resource,
    core::NamespaceResourceScope,
    runtime::{
        WatchStreamExt,
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
        reflector, watcher,
    },
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    error::{Error, Result},
    metrics::Metrics,
    status::Events,
};

/// The action of the Warning Events of failed reconciles.
const RECONCILE: &str = "Reconcile";
/// Objects whose last failure is remembered before starting afresh.
const MAX_REMEMBERED: usize = 4096;

/// The failure last reported on each object (by uid): an object that fails the same way on
/// every backoff retry gets one Warning Event, a different failure gets another, and so
/// does the same one again after a reconcile succeeded in between.
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<String, String>>);

impl Failures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `failure` of the object `uid` is news (and remembers it).
    pub fn is_news(&self, uid: &str, failure: &str) -> bool {
        let mut last = self.lock();
        if last.get(uid).is_some_and(|f| f == failure) {
            return false;
        }
        if last.len() >= MAX_REMEMBERED && !last.contains_key(uid) {
            last.clear();
        }
        last.insert(uid.to_owned(), failure.to_owned());
        true
    }

    /// The object reconciled: its next failure is news.
    pub fn succeeded(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

/// Runs `reconcile` (apply, or cleanup on deletion) under the finalizer `name`, counted and
/// timed for `controller`; a success clears the object's last failure.
#[allow(clippy::too_many_arguments)]
pub async fn finalized<K, Fut>(
    client: &Client,
    metrics: &Metrics,
    failures: &Failures,
    controller: &str,
    name: &'static str,
    object: Arc<K>,
    reconcile: impl FnOnce(Finalizer<K>) -> Fut,
) -> Result<Action>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    Fut: Future<Output = Result<Action>>,
{
    let started = std::time::Instant::now();
    metrics.reconciles.with_label_values(&[controller]).inc();
    let api: Api<K> = Api::namespaced(client.clone(), object.meta().namespace.as_deref().unwrap_or_default());
    let uid = object.meta().uid.clone().unwrap_or_default();
    let result = finalizer(&api, name, object, reconcile).await.map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer { finalizer: name, source: Box::new(other) },
    });
    if result.is_ok() {
        failures.succeeded(&uid);
    }
    metrics.reconcile_duration.with_label_values(&[controller]).observe(started.elapsed().as_secs_f64());
    result
}

/// The error policy of both controllers: counts and logs the failure, shows it on the
/// object as a Warning Event (its reason from the error, once per distinct failure; an
/// invalid spec is on the object's conditions already), and backs off; a spec that cannot
/// be acted on waits for a change.
pub fn backoff<K>(
    metrics: &Metrics,
    failures: &Failures,
    events: &Events,
    controller: &str,
    object: &K,
    error: &Error,
) -> Action
where
    K: Resource<DynamicType = ()>,
{
    metrics.failures.with_label_values(&[controller, error.metric_label()]).inc();
    let (namespace, name) = (object.meta().namespace.as_deref(), object.meta().name.as_deref());
    tracing::warn!(controller, namespace, name, error = %error, "reconcile failed");
    let note = error.to_string();
    if let Some(uid) = object.meta().uid.as_deref()
        && !error.shown_on_object()
        && failures.is_news(uid, &note)
    {
        let (events, reference, reason) = (events.clone(), object.object_ref(&()), error.event_reason());
        tokio::spawn(async move { events.publish(&reference, EventType::Warning, reason, note, RECONCILE).await });
    }
    match error {
        Error::InvalidSpec { .. } => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

/// What makes an object worth reconciling again: its generation, annotations (the
/// `…-now` requests), finalizers and deletion — everything but its status, so the
/// controller's own status writes do not wake it.
pub fn wakes<K: Resource>(object: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = object.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.deletion_timestamp.as_ref().map(|t| t.0.as_second()).hash(&mut h);
    Some(h.finish())
}

/// The objects a controller reconciles, cached in `writer`, waking it only for what
/// [`wakes`] sees change (its own status writes do not).
pub fn objects<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        // Who wrote which field is not read here, and is a large part of each object.
        .modify(|o: &mut K| o.meta_mut().managed_fields = None)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(wakes, Default::default())
}

/// The cached objects of `namespace` that `keep` picks: what a change of a related
/// object (a pod, a workload) wakes.
pub fn in_namespace_where<K>(
    store: &reflector::Store<K>,
    namespace: &str,
    keep: impl Fn(&K) -> bool,
) -> Vec<reflector::ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace) && keep(o))
        .map(|o| reflector::ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Runs a controller's stream to its end (after a graceful shutdown, once the reconciles in
/// flight have finished); per-object errors were handled by its error policy and are only
/// traced here.
pub async fn drive<T, E: std::fmt::Display>(results: impl Stream<Item = std::result::Result<T, E>>) {
    results
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_news_once_until_it_changes_or_the_object_recovers() {
        let failures = Failures::default();
        assert!(failures.is_news("u1", "writing the status: 500"));
        assert!(!failures.is_news("u1", "writing the status: 500"), "the same failure on a backoff retry");
        assert!(failures.is_news("u2", "writing the status: 500"), "another object");
        assert!(failures.is_news("u1", "publishing the key: 403"), "a different failure");
        assert!(failures.is_news("u1", "writing the status: 500"), "and back");
        failures.succeeded("u1");
        assert!(failures.is_news("u1", "writing the status: 500"), "after a success it is news again");
    }

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.into(),
            reason: "InternalError".into(),
            ..Default::default()
        }))
    }

    #[tokio::test]
    async fn a_failed_reconcile_is_a_warning_event_on_its_object_once_per_failure() {
        use k8s_openapi::api::core::v1::ConfigMap;

        use crate::{reasons, testing};

        let (_server, client) = testing::api_server().await;
        let (metrics, failures, events) = (Metrics::default(), Failures::default(), Events::new(client.clone(), "t"));
        let object: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "checkout", "namespace": testing::NS, "uid": "u-1"}
        }))
        .unwrap();
        let write = || Error::WriteStatus { object: "shop/checkout".into(), source: api_error(500, "etcd is slow") };
        // The same failure on every backoff retry: one Event.
        for _ in 0..3 {
            let action = backoff(&metrics, &failures, &events, "profilecapture", &object, &write());
            assert_eq!(action, Action::requeue(Duration::from_secs(5)));
        }
        // An invalid spec is on the object's conditions (and its own Event) already.
        let invalid = Error::InvalidSpec { reason: reasons::INVALID_SELECTOR, message: "bad selector".into() };
        assert_eq!(backoff(&metrics, &failures, &events, "profilecapture", &object, &invalid), Action::await_change());
        // Another failure is news.
        let publish = Error::PublishKey { namespace: "shop".into(), source: api_error(403, "forbidden") };
        backoff(&metrics, &failures, &events, "profilecapture", &object, &publish);

        let seen = testing::events_about(&client, "checkout", 2).await;
        let mut shown: Vec<(String, String, String)> = seen
            .iter()
            .map(|e| (e.type_.clone().unwrap(), e.reason.clone().unwrap(), e.message.clone().unwrap()))
            .collect();
        shown.sort();
        assert_eq!(
            shown,
            [
                ("Warning".into(), reasons::STATUS_WRITE_FAILED.into(), write().to_string()),
                ("Warning".into(), reasons::TRUST_PUBLISH_FAILED.into(), publish.to_string()),
            ],
        );
        assert!(shown[0].2.starts_with("writing the status of shop/checkout: "), "{shown:?}");
        assert!(
            metrics.render().contains(r#"reconcile_failures_total{controller="profilecapture",reason="kube"} 4"#),
            "every failure is counted, shown or not"
        );
    }
}
