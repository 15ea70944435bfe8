//! What both controllers write the same way: conditions (KEP-1623, transition times that
//! move only when the status does), timestamps at second precision, Events.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
};

use jiff::Timestamp;
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event as K8sEvent},
    apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::events::{EventType, Reporter},
};
use serde::Serialize;

/// Now, at the precision the API server keeps (a status rewritten in the same second is
/// unchanged).
pub fn now_time() -> Time {
    Time(Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| Timestamp::now()))
}

/// Sets a condition, keeping its transition time unless its status changes.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status = if value { "True" } else { "False" };
    let existing = conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match existing {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now_time(),
    };
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time,
        observed_generation: generation,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Publishes Events. Repeats of the same Event (same object, reason, action and note)
/// within [`SERIES_TTL`] become one Event with a series count; an Event whose note differs
/// is its own, so `kubectl describe` never shows an old note under a new occurrence. Clones
/// share the series.
///
/// kube's `Recorder` aggregates by object, reason and action only, which would put a new
/// note under an old one; one `Recorder` per note keeps a whole Event per series (4 KiB
/// each, 20 MiB for the operator at 500 captures). A series here is the Event's name and a
/// count.
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: Reporter,
    series: Arc<Mutex<HashMap<u64, Series>>>,
}

/// An Event already published, to count its repeats on.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    namespace: String,
    name: String,
    count: i32,
    last_observed: Timestamp,
}

/// How long a repeat still counts on the same Event (kube's and client-go's six minutes).
const SERIES_TTL: jiff::SignedDuration = jiff::SignedDuration::from_mins(6);

/// Distinct notes remembered for aggregation before starting afresh.
const MAX_SERIES: usize = 4096;

impl Events {
    /// Events reported as `instance` of the operator.
    pub fn new(client: Client, instance: &str) -> Self {
        Self {
            client,
            reporter: Reporter { controller: "biometrics-operator".into(), instance: Some(instance.into()) },
            series: Arc::default(),
        }
    }

    /// Publishes an Event about `object`; a failure is logged, never fatal.
    pub async fn publish(&self, object: &ObjectReference, type_: EventType, reason: &str, note: String, action: &str) {
        let key = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&object.uid, reason, action, &note).hash(&mut h);
            h.finish()
        };
        let now = Timestamp::now();
        let repeat = {
            let mut series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            series.retain(|_, s| s.last_observed + SERIES_TTL > now);
            if series.len() >= MAX_SERIES && !series.contains_key(&key) {
                series.clear();
            }
            series.get(&key).cloned()
        };
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let counted = match repeat {
            Some(s) => match self.count_repeat(&s, now).await {
                Ok(()) => Some(Ok(Series { count: s.count + 1, last_observed: now, ..s })),
                // The Event is gone (its TTL in the API server, or deleted): start a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => None,
                Err(e) => Some(Err(e)),
            },
            None => None,
        };
        let published = match counted {
            Some(result) => result,
            None => {
                let event = self.event(object, type_, reason, note, action, now);
                Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
                    .create(&PostParams::default(), &event)
                    .await
                    .map(|created| Series { namespace, name: created.name_any(), count: 1, last_observed: now })
            }
        };
        match published {
            Ok(s) => {
                self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, s);
            }
            Err(err) => tracing::warn!(error = %err, "cannot publish event"),
        }
    }

    async fn count_repeat(&self, s: &Series, now: Timestamp) -> Result<(), kube::Error> {
        let patch = serde_json::json!({"series": {"count": s.count + 1, "lastObservedTime": MicroTime(now)}});
        Api::<K8sEvent>::namespaced(self.client.clone(), &s.namespace)
            .patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
    }

    /// A new Event, named as client-go names them: the object's name and the time in
    /// nanoseconds, in hex.
    fn event(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
        now: Timestamp,
    ) -> K8sEvent {
        let name = format!("{}.{:x}", object.name.as_deref().unwrap_or_default(), now.as_nanosecond());
        K8sEvent {
            metadata: kube::api::ObjectMeta {
                name: Some(name),
                namespace: object.namespace.clone(),
                ..Default::default()
            },
            action: Some(action.into()),
            event_time: Some(MicroTime(now)),
            note: Some(note),
            reason: Some(reason.into()),
            regarding: Some(object.clone()),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: self.reporter.instance.clone(),
            type_: Some(match type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            ..Default::default()
        }
    }
}

/// Status writes by server-side apply (skipped when nothing changed), remembering each
/// status written until the watch delivers it: a reconcile that runs in between must act on
/// what was written, not on the older status it still sees (or it would start the same run
/// twice). The watch has delivered it when it delivers the very resourceVersion the write
/// answered with; resourceVersions are opaque, so they are compared for equality only. Only
/// the leader writes status, so what it wrote last stays the truth until then.
pub struct StatusWriter<S> {
    written: Mutex<HashMap<String, (String, S)>>,
}

impl<S> Default for StatusWriter<S> {
    fn default() -> Self {
        Self { written: Mutex::default() }
    }
}

fn resource_version<K: Resource>(object: &K) -> String {
    object.meta().resource_version.clone().unwrap_or_default()
}

impl<S: Clone + PartialEq + Serialize> StatusWriter<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, S)>> {
        self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The newest status of `object`: the one written last, until the watch delivers the
    /// object as that write left it.
    pub fn freshest<K: Resource>(&self, object: &K, seen: S) -> S {
        let uid = object.meta().uid.clone().unwrap_or_default();
        let mut written = self.lock();
        match written.get(&uid) {
            Some((rv, _)) if *rv == resource_version(object) => {
                written.remove(&uid);
                seen
            }
            Some((_, status)) => status.clone(),
            None => seen,
        }
    }

    /// Applies `status` to `object`'s status subresource unless it equals `before`.
    pub async fn write<K>(&self, client: &Client, object: &K, before: &S, status: S) -> crate::error::Result<()>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        if *before == status {
            return Ok(());
        }
        let api: Api<K> = Api::namespaced(client.clone(), object.meta().namespace.as_deref().unwrap_or_default());
        let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
        let name = object.meta().name.clone().unwrap_or_default();
        let written = api
            .patch_status(&name, &PatchParams::apply(crate::FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|source| crate::error::Error::WriteStatus {
                object: format!("{}/{name}", object.meta().namespace.as_deref().unwrap_or_default()),
                source,
            })?;
        self.lock().insert(object.meta().uid.clone().unwrap_or_default(), (resource_version(&written), status));
        Ok(())
    }

    /// Drops what is remembered of a deleted object.
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    #[tokio::test]
    async fn a_repeated_event_is_counted_on_one_event_and_a_new_note_is_its_own() {
        let (_server, client) = crate::testing::api_server().await;
        let events = Events::new(client.clone(), "t");
        let object = ObjectReference {
            kind: Some("ProfileCapture".into()),
            name: Some("checkout".into()),
            namespace: Some(crate::testing::NS.into()),
            uid: Some("u-1".into()),
            ..Default::default()
        };
        for _ in 0..3 {
            events.publish(&object, EventType::Warning, "AgentUnreachable", "pod a: refused".into(), "Run").await;
        }
        events.publish(&object, EventType::Warning, "AgentUnreachable", "pod b: refused".into(), "Run").await;
        let mut seen: Vec<(String, i32)> = crate::testing::events_about(&client, "checkout", 2)
            .await
            .into_iter()
            .map(|e| (e.message.unwrap_or_default(), e.count.unwrap_or(1)))
            .collect();
        seen.sort();
        assert_eq!(seen, [("pod a: refused".into(), 3), ("pod b: refused".into(), 1)]);
        assert!(events.series.lock().unwrap().len() == 2, "a series is remembered as a name and a count");
        // An Event deleted in the meantime (its TTL) is published anew, not lost.
        let api: Api<K8sEvent> = Api::namespaced(client.clone(), crate::testing::NS);
        api.delete_collection(&Default::default(), &Default::default()).await.unwrap();
        events.publish(&object, EventType::Warning, "AgentUnreachable", "pod a: refused".into(), "Run").await;
        let again = crate::testing::events_about(&client, "checkout", 1).await;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].message.as_deref(), Some("pod a: refused"));
    }

    #[test]
    fn a_remembered_status_goes_when_the_watch_delivers_the_version_written() {
        let writer = StatusWriter::<String>::default();
        writer.lock().insert("u".into(), ("10".into(), "written".into()));
        let seen_at = |rv: &str| ConfigMap {
            metadata: ObjectMeta { uid: Some("u".into()), resource_version: Some(rv.into()), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(writer.freshest(&seen_at("9"), "seen".into()), "written", "the watch lags");
        assert_eq!(
            writer.freshest(&seen_at("11"), "seen".into()),
            "written",
            "resourceVersions are opaque: one that reads as larger is not taken as caught up"
        );
        assert_eq!(writer.freshest(&seen_at("10"), "seen".into()), "seen", "delivered");
        assert_eq!(writer.freshest(&seen_at("9"), "seen".into()), "seen", "and forgotten");
    }
}
