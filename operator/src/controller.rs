//! What both controllers do alike around their own logic: the finalizer, counting and
//! timing reconciles, backing off on errors, and which changes wake an object.

use std::{future::Future, sync::Arc, time::Duration};

use kube::{
    Api, Client, Resource,
    core::NamespaceResourceScope,
    runtime::{
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
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
pub fn backoff(metrics: &Metrics, controller: &str, error: &Error) -> Action {
    metrics.failures.with_label_values(&[controller, error.metric_label()]).inc();
    tracing::warn!(controller, error = %error, "reconcile failed");
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
