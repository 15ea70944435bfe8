//! Guarded deserialisation: an object whose spec the operator cannot read is one object
//! reported on its own status, never a failed list or watch for all the others.
//!
//! Both controllers watch [`Guarded<K>`] instead of `K`. Reading it never fails on a bad
//! spec (only on unreadable metadata): the serde error — the parser's message, such as
//! `"30-10 * * * *" is not a valid cron schedule: …` — is kept with the metadata and the
//! stored object, so the controller can write `Ready=False InvalidSpec` with that message,
//! publish a Warning Event, and still run the finalizer's cleanup on deletion. The API
//! server can hold such an object: one written before a CRD upgrade tightened the schema, or
//! under an older operator whose parser was more lenient. The shape follows kube-core's
//! `DeserializeGuard`, which Stackable's operators watch; unlike it, this one keeps the
//! stored object (its status is rewritten in full, so server-side apply drops nothing, and
//! cleanup reads `spec.retention`) and can be written back, as kube-runtime's finalizer
//! helper requires.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Client, Resource,
    core::NamespaceResourceScope,
    runtime::{controller::Action, events::EventType},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    error::{Error, Result},
    reasons,
    status::{Events, StatusWriter},
};

/// A `K` as read from the API server, or why its spec cannot be read.
#[derive(Debug, Clone)]
pub struct Guarded<K>(Result<K, Invalid>);

/// An object the operator cannot read as its type.
#[derive(Debug, Clone)]
pub struct Invalid {
    metadata: ObjectMeta,
    message: String,
    /// The object as stored, without its metadata (kept above).
    stored: Value,
}

impl<K> Guarded<K> {
    /// The object, or why it cannot be read.
    pub fn valid(&self) -> Result<&K, &Invalid> {
        self.0.as_ref()
    }
}

impl Invalid {
    /// Why the object cannot be read: serde's message, which is the refusing parser's.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A part of the stored object (`/status`, `/spec/retention/deleteOnRemoval`), if it
    /// is there and reads as `T`: what can still be known of an object whose spec cannot.
    pub fn part<T: DeserializeOwned>(&self, pointer: &str) -> Option<T> {
        self.stored.pointer(pointer).and_then(|v| T::deserialize(v).ok())
    }
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut stored = Value::deserialize(deserializer)?;
        match K::deserialize(&stored) {
            Ok(object) => Ok(Self(Ok(object))),
            Err(error) => {
                let metadata = stored.as_object_mut().and_then(|o| o.remove("metadata")).unwrap_or_default();
                let mut metadata = ObjectMeta::deserialize(metadata).map_err(serde::de::Error::custom)?;
                // Who wrote which field is not read here, and is a large part of each object.
                metadata.managed_fields = None;
                Ok(Self(Err(Invalid { metadata, message: error.to_string(), stored })))
            }
        }
    }
}

impl<K: Serialize> Serialize for Guarded<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Ok(object) => object.serialize(serializer),
            Err(invalid) => {
                let mut stored = invalid.stored.clone();
                if let Some(object) = stored.as_object_mut() {
                    let metadata = serde_json::to_value(&invalid.metadata).map_err(serde::ser::Error::custom)?;
                    object.insert("metadata".into(), metadata);
                }
                stored.serialize(serializer)
            }
        }
    }
}

impl<K: Resource> Resource for Guarded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.as_ref().map_or_else(|invalid| &invalid.metadata, K::meta)
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.as_mut().map_or_else(|invalid| &mut invalid.metadata, K::meta_mut)
    }
}

/// A status that can say its object's spec cannot be read.
pub trait InvalidSpecStatus: Clone + Default + PartialEq + Serialize + DeserializeOwned {
    /// Marks the status: `Ready=False` with reason [`reasons::INVALID_SPEC`] and `message`,
    /// and whatever else the kind shows for an object it cannot act on, for `generation`.
    fn invalid_spec(&mut self, message: &str, generation: Option<i64>);
}

/// Reports an object whose spec cannot be read: its status says so (server-side apply, only
/// when that changes), one Warning Event when it starts saying so, and an
/// [`Error::InvalidSpec`] for the error policy, which logs it and waits for a change.
pub async fn report_invalid<K, S>(
    client: &Client,
    events: &Events,
    statuses: &StatusWriter<S>,
    object: &Guarded<K>,
    invalid: &Invalid,
    action: &str,
) -> Result<Action>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    S: InvalidSpecStatus,
{
    let before: S = invalid.part("/status").unwrap_or_default();
    let shown = statuses.freshest(object, before.clone());
    let mut status = shown.clone();
    status.invalid_spec(invalid.message(), object.meta().generation);
    let news = status != shown;
    statuses.write(client, object, &before, status).await?;
    if news {
        let note = invalid.message().to_owned();
        events.publish(&object.object_ref(&()), EventType::Warning, reasons::INVALID_SPEC, note, action).await;
    }
    Err(Error::InvalidSpec { reason: reasons::INVALID_SPEC, message: invalid.message().to_owned() })
}

#[cfg(test)]
mod tests {
    use biometrics_crds::v1alpha1::{
        CachePolicy, CachePolicyStatus, CapturePhase, ProfileCapture, ProfileCaptureStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::ResourceExt;
    use serde_json::json;

    use super::*;

    fn capture(schedule: &str) -> Value {
        json!({
            "apiVersion": "biometrics.io/v1alpha1",
            "kind": "ProfileCapture",
            "metadata": {
                "name": "poison", "namespace": "shop", "uid": "u-1", "generation": 3, "resourceVersion": "42",
                "finalizers": ["biometrics.io/profilecapture"],
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {
                "selector": {"matchLabels": {"app": "api"}},
                "target": {"port": 6060},
                "schedule": schedule,
                "retention": {"deleteOnRemoval": true}
            },
            "status": {"observedGeneration": 2, "phase": "Succeeded", "history": []}
        })
    }

    #[test]
    fn a_spec_the_parser_refuses_is_kept_with_its_metadata_and_message() {
        let guarded: Guarded<ProfileCapture> = serde_json::from_value(capture("30-10 * * * *")).unwrap();
        let invalid = guarded.valid().unwrap_err();
        assert!(
            invalid.message().contains(r#""30-10 * * * *" is not a valid cron schedule"#)
                && invalid.message().contains("runs backwards"),
            "{}",
            invalid.message()
        );
        // Everything the controller needs from a broken object: who it is, what it had.
        assert_eq!((guarded.name_any(), guarded.namespace().as_deref()), ("poison".into(), Some("shop")));
        assert_eq!((guarded.uid().as_deref(), guarded.meta().generation), (Some("u-1"), Some(3)));
        assert_eq!(guarded.finalizers(), ["biometrics.io/profilecapture"]);
        assert_eq!(guarded.meta().managed_fields, None, "not kept in the cache");
        let status: ProfileCaptureStatus = invalid.part("/status").unwrap();
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(invalid.part::<bool>("/spec/retention/deleteOnRemoval"), Some(true));
        assert_eq!(invalid.part::<bool>("/spec/retention/keepRuns"), None);
        // Written back, it is the object as stored (the finalizer helper's contract).
        let written = serde_json::to_value(&guarded).unwrap();
        assert_eq!(written["spec"]["schedule"], "30-10 * * * *");
        assert_eq!(written["metadata"]["name"], "poison");
        assert_eq!(Guarded::<ProfileCapture>::kind(&()), "ProfileCapture");
        assert_eq!(Guarded::<CachePolicy>::plural(&()), "cachepolicies");
    }

    #[test]
    fn a_valid_object_reads_as_itself() {
        let guarded: Guarded<ProfileCapture> = serde_json::from_value(capture("10-30 * * * *")).unwrap();
        let pc = guarded.valid().unwrap();
        assert_eq!(pc.spec.schedule.as_ref().map(ToString::to_string).as_deref(), Some("10-30 * * * *"));
        assert_eq!(serde_json::to_value(&guarded).unwrap(), serde_json::to_value(pc).unwrap());
    }

    #[test]
    fn one_bad_object_does_not_fail_the_list() {
        // What the watcher's initial list reads: before guarding, one poison item failed it all.
        let list = json!([capture("10-30 * * * *"), capture("30-10 * * * *"), capture("@hourly")]);
        assert!(serde_json::from_value::<Vec<ProfileCapture>>(list.clone()).is_err());
        let read: Vec<Guarded<ProfileCapture>> = serde_json::from_value(list).unwrap();
        let valid: Vec<bool> = read.iter().map(|g| g.valid().is_ok()).collect();
        assert_eq!(valid, [true, false, true]);
    }

    #[test]
    fn unreadable_metadata_is_still_an_error() {
        let mut object = capture("30-10 * * * *");
        object["metadata"]["name"] = json!(7);
        assert!(serde_json::from_value::<Guarded<ProfileCapture>>(object).is_err());
    }

    fn condition<'a>(
        conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
        type_: &str,
    ) -> (&'a str, &'a str, &'a str, Option<i64>) {
        let c = conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str(), c.message.as_str(), c.observed_generation)
    }

    #[test]
    fn an_unreadable_spec_is_not_ready_and_saying_so_twice_changes_nothing() {
        let mut capture = ProfileCaptureStatus {
            phase: Some(CapturePhase::Scheduled),
            next_run_time: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        };
        capture.invalid_spec("bad schedule", Some(4));
        assert_eq!(
            (capture.phase, capture.next_run_time.as_ref(), capture.observed_generation),
            (Some(CapturePhase::Failed), None, Some(4))
        );
        assert_eq!(condition(&capture.conditions, "Ready"), ("False", "InvalidSpec", "bad schedule", Some(4)));
        assert_eq!(condition(&capture.conditions, "Degraded"), ("True", "InvalidSpec", "bad schedule", Some(4)));
        let mut again = capture.clone();
        again.invalid_spec("bad schedule", Some(4));
        assert_eq!(again, capture, "no second status write, no second Event");

        let mut policy = CachePolicyStatus::default();
        policy.invalid_spec("bad schedule", Some(2));
        assert_eq!(policy.observed_generation, Some(2));
        assert_eq!(condition(&policy.conditions, "Ready"), ("False", "InvalidSpec", "bad schedule", Some(2)));
        assert_eq!(condition(&policy.conditions, "Degraded"), ("True", "InvalidSpec", "bad schedule", Some(2)));
    }
}
