//! What both controllers do alike around their own logic: the finalizer, counting and
//! timing reconciles, backing off on errors, and which changes wake an object.

use std::{future::Future, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use kube::{
    Api, Client, Resource,
    core::NamespaceResourceScope,
    runtime::{
        WatchStreamExt,
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
        reflector, watcher,
    },
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    error::{Error, Result},
    metrics::Metrics,
};

/// Runs `reconcile` (apply, or cleanup on deletion) under the finalizer `name`, counted and
/// timed for `controller`.
pub async fn finalized<K, Fut>(
    client: &Client,
    metrics: &Metrics,
    controller: &str,
    name: &str,
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
    let result = finalizer(&api, name, object, reconcile).await.map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    metrics.reconcile_duration.with_label_values(&[controller]).observe(started.elapsed().as_secs_f64());
    result
}

/// Backs off on errors; a spec that cannot be acted on waits for a change.
pub fn backoff(metrics: &Metrics, controller: &str, object: &impl Resource, error: &Error) -> Action {
    metrics.failures.with_label_values(&[controller, error.metric_label()]).inc();
    let (namespace, name) = (object.meta().namespace.as_deref(), object.meta().name.as_deref());
    tracing::warn!(controller, namespace, name, error = %error, "reconcile failed");
    match error {
        Error::InvalidSpec(_) => Action::await_change(),
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

/// Runs a controller's stream to its end; per-object errors were handled by its error
/// policy and are only traced here.
pub async fn drive<T, E: std::fmt::Display>(results: impl Stream<Item = std::result::Result<T, E>>) {
    results
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
