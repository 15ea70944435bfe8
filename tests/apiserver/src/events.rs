//! Kubernetes keeps one store of Events and shows it through two APIs: `events.k8s.io/v1`
//! (what kube-runtime's recorder writes) and core `v1` (what `kubectl describe` reads). This
//! converts the former into the latter so both views see every Event.

use serde_json::{Value, json};

/// An `events.k8s.io/v1` Event as the core `v1` Event kube-apiserver would show.
pub fn to_core(event: &Value) -> Value {
    let get = |p: &str| event.pointer(p).cloned().unwrap_or(Value::Null);
    let count = event.pointer("/series/count").or_else(|| event.get("deprecatedCount")).cloned().unwrap_or(json!(1));
    let last = event
        .pointer("/series/lastObservedTime")
        .or_else(|| event.get("deprecatedLastTimestamp"))
        .or_else(|| event.get("eventTime"))
        .cloned()
        .unwrap_or(Value::Null);
    let first =
        event.get("deprecatedFirstTimestamp").or_else(|| event.get("eventTime")).cloned().unwrap_or(Value::Null);
    let mut core = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": get("/metadata"),
        "involvedObject": get("/regarding"),
        "related": get("/related"),
        "reason": get("/reason"),
        "message": get("/note"),
        "type": get("/type"),
        "action": get("/action"),
        "count": count,
        "firstTimestamp": timestamp_seconds(&first),
        "lastTimestamp": timestamp_seconds(&last),
        "eventTime": get("/eventTime"),
        "reportingComponent": get("/reportingController"),
        "reportingInstance": get("/reportingInstance"),
        "source": {"component": get("/reportingController"), "host": get("/reportingInstance")},
    });
    if let Some(map) = core.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    core
}

/// Core Events carry whole-second timestamps.
fn timestamp_seconds(v: &Value) -> Value {
    match v.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
        Some(t) => json!(t.round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default()),
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_events_read_as_core_events() {
        let event = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "x.1", "namespace": "shop"},
            "regarding": {"kind": "ProfileCapture", "name": "api", "namespace": "shop"},
            "reason": "RunStarted", "note": "capturing 2 pods", "type": "Normal", "action": "Capture",
            "reportingController": "biometrics-operator", "reportingInstance": "op-1",
            "eventTime": "2026-01-01T10:00:00.123456Z",
            "series": {"count": 3, "lastObservedTime": "2026-01-01T10:05:00.5Z"}
        });
        let core = to_core(&event);
        assert_eq!(core["involvedObject"]["name"], "api");
        assert_eq!(core["message"], "capturing 2 pods");
        assert_eq!(core["count"], 3);
        assert_eq!(core["source"]["component"], "biometrics-operator");
        assert_eq!(core["firstTimestamp"], "2026-01-01T10:00:00Z");
        assert_eq!(core["lastTimestamp"], "2026-01-01T10:05:01Z");
    }
}
