//! The protobuf codec on real objects: JSON → protobuf → JSON gives the object back, and
//! the k8s-pb crate's prost types (maintained from Kubernetes' `.proto` files) read the bytes
//! we write and write bytes we read back to the same object, so our wire is theirs.

use biometrics_test_apiserver::protobuf::{self, DecodeError};
use k8s_pb::{api, apiextensions_apiserver, apimachinery};
use prost::Message;
use serde_json::{Value, json};

/// Round-trips `object` through our envelope, and its message through prost type `M`;
/// returns what prost decoded for further checks.
fn round_trip<M: Message + Default>(object: &Value) -> M {
    let encoded = protobuf::encode_object(object).expect("encodes").expect("a built-in kind");
    assert_eq!(&protobuf::decode_object(&encoded).expect("decodes"), object, "our round trip");

    // The envelope is runtime.Unknown as prost reads it.
    let unknown = apimachinery::pkg::runtime::Unknown::decode(&encoded[4..]).expect("prost reads the envelope");
    let type_meta = unknown.type_meta.expect("typeMeta");
    assert_eq!(type_meta.api_version.as_deref(), object["apiVersion"].as_str());
    assert_eq!(type_meta.kind.as_deref(), object["kind"].as_str());
    let raw = unknown.raw.expect("raw");

    // prost drops fields it does not know, so a wrong tag or wire type shows as a difference.
    let typed = M::decode(raw.as_slice()).expect("prost reads the message");
    let message =
        protobuf::message_for(object["apiVersion"].as_str().unwrap(), object["kind"].as_str().unwrap()).unwrap();
    let mut again = protobuf::decode_message(message, &typed.encode_to_vec()).expect("we read prost's bytes");
    again["apiVersion"] = object["apiVersion"].clone();
    again["kind"] = object["kind"].clone();
    assert_eq!(&again, object, "through prost");
    typed
}

fn meta(name: &str) -> Value {
    json!({
        "name": name,
        "namespace": "shop",
        "uid": "6f1c2b7e-0d9a-4c55-9a43-5b8f3c2a1d10",
        "resourceVersion": "42",
        "generation": 3,
        "creationTimestamp": "2026-03-01T10:20:30Z",
        "labels": {"app": "web", "tier": "front"},
        "annotations": {"deployment.kubernetes.io/revision": "2"},
        "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9c", "uid": "0b1c",
            "controller": true, "blockOwnerDeletion": true
        }],
        "finalizers": ["example.com/keep"],
        "managedFields": [{
            "manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
            "time": "2026-03-01T10:20:30Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}}
        }]
    })
}

#[test]
fn pod_with_volumes_probes_and_resources() {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta("web-5d9c-x7k2p"),
        "spec": {
            "containers": [{
                "name": "app",
                "image": "example/app:1.2",
                "command": ["/app"],
                "args": ["--port", "8080"],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [
                    {"name": "MODE", "value": "prod"},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password", "optional": true}}}
                ],
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http", "scheme": "HTTP"}, "periodSeconds": 5},
                "livenessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 3, "failureThreshold": 3},
                "volumeMounts": [
                    {"name": "profiles", "mountPath": "/profiles"},
                    {"name": "config", "mountPath": "/etc/app", "readOnly": true, "subPath": "app.yaml"}
                ],
                "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "capabilities": {"drop": ["ALL"]}},
                "imagePullPolicy": "IfNotPresent",
                "terminationMessagePath": "/dev/termination-log"
            }],
            "volumes": [
                {"name": "profiles", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "config", "configMap": {"name": "app-config", "defaultMode": 420, "items": [{"key": "app.yaml", "path": "app.yaml"}]}},
                {"name": "trust", "secret": {"secretName": "ca", "optional": true}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "nodeName": "local-1",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "enableServiceLinks": true
        },
        "status": {
            "phase": "Running",
            "podIP": "10.200.0.7",
            "podIPs": [{"ip": "10.200.0.7"}],
            "hostIP": "10.200.0.1",
            "startTime": "2026-03-01T10:20:31Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-03-01T10:20:40Z"}],
            "containerStatuses": [{
                "name": "app", "ready": true, "restartCount": 2, "image": "example/app:1.2", "imageID": "",
                "started": true,
                "state": {"running": {"startedAt": "2026-03-01T10:20:35Z"}},
                "lastState": {"terminated": {"exitCode": -1, "reason": "Error", "startedAt": "2026-03-01T10:20:32Z", "finishedAt": "2026-03-01T10:20:34Z"}}
            }]
        }
    });
    let typed: api::core::v1::Pod = round_trip(&pod);
    // Spot checks on prost's reading: names, inline volume sources, quantities, int-or-string.
    let spec = typed.spec.unwrap();
    assert_eq!(spec.containers[0].image.as_deref(), Some("example/app:1.2"));
    let config = spec.volumes[1].volume_source.as_ref().unwrap().config_map.as_ref().unwrap();
    assert_eq!(config.default_mode, Some(420));
    let requests = &spec.containers[0].resources.as_ref().unwrap().requests;
    assert_eq!(requests["cpu"].string.as_deref(), Some("250m"));
    let port = spec.containers[0].liveness_probe.as_ref().unwrap().handler.as_ref().unwrap();
    assert_eq!(port.tcp_socket.as_ref().unwrap().port.as_ref().unwrap().int_val, Some(8080));
    let created = typed.metadata.unwrap().creation_timestamp.unwrap();
    assert_eq!(created.seconds, Some(1_772_360_430));
    let status = typed.status.unwrap();
    assert_eq!(status.pod_ips[0].ip.as_deref(), Some("10.200.0.7"));
    assert_eq!(
        status.container_statuses[0].last_state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code,
        Some(-1)
    );
}

#[test]
fn deployment_service_and_secret() {
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta("web"),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "example/app"}]}
            },
            "minReadySeconds": 2,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600
        },
        "status": {
            "observedGeneration": 3, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
            "conditions": [{
                "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
                "lastUpdateTime": "2026-03-01T10:21:00Z", "lastTransitionTime": "2026-03-01T10:21:00Z"
            }]
        }
    });
    let typed: api::apps::v1::Deployment = round_trip(&deployment);
    let rolling = typed.spec.unwrap().strategy.unwrap().rolling_update.unwrap();
    assert_eq!(rolling.max_surge.unwrap().str_val.as_deref(), Some("25%"));

    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("web"),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": "web"},
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10", "fd00::10"],
            "ipFamilies": ["IPv4", "IPv6"],
            "ipFamilyPolicy": "PreferDualStack",
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}, {"name": "admin", "port": 9090, "targetPort": 9091}],
            "sessionAffinity": "None"
        },
        "status": {"loadBalancer": {}}
    });
    let typed: api::core::v1::Service = round_trip(&service);
    assert_eq!(typed.spec.unwrap().cluster_ips, ["10.96.0.10", "fd00::10"]);

    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"},
        "type": "Opaque",
        "immutable": true,
        "data": {"password": "c2VjcmV0", "binary": "AAEC/w=="}
    });
    let typed: api::core::v1::Secret = round_trip(&secret);
    assert_eq!(typed.data["binary"], [0, 1, 2, 255]);
}

#[test]
fn rbac_cronjob_and_ingress() {
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "biometrics-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [
            {"apiGroups": ["biometrics.io"], "resources": ["profilecaptures", "profilecaptures/status"], "verbs": ["get", "list", "watch"]},
            {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}
        ],
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate": "true"}}]}
    });
    let _: api::rbac::v1::ClusterRole = round_trip(&role);
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "view", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "shop"}, {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "ann"}]
    });
    let _: api::rbac::v1::RoleBinding = round_trip(&binding);

    let cronjob = json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta("report"),
        "spec": {
            "schedule": "*/5 * * * *",
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "suspend": true,
            "jobTemplate": {
                "metadata": {"labels": {"job": "report"}},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": 120,
                    "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "report", "image": "busybox", "command": ["date"]}]}}
                }
            }
        },
        "status": {"lastScheduleTime": "2026-03-01T10:25:00Z"}
    });
    let _: api::batch::v1::CronJob = round_trip(&cronjob);

    let ingress = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta("web"),
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
            "rules": [{"host": "shop.example.com", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}
            }, {
                "path": "/admin", "pathType": "Exact",
                "backend": {"service": {"name": "admin", "port": {"name": "http"}}}
            }]}}]
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ports": [{"port": 443, "protocol": "TCP"}]}]}}
    });
    let _: api::networking::v1::Ingress = round_trip(&ingress);
}

#[test]
fn reviews_token_requests_and_status() {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "metadata": {"creationTimestamp": null},
        "spec": {"resourceAttributes": {"namespace": "shop", "verb": "create", "group": "apps", "resource": "deployments"}},
        "status": {"allowed": true, "reason": "no RBAC"}
    });
    // A null field is absent once encoded, as Go writes it.
    let expected = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "metadata": {},
        "spec": review["spec"],
        "status": review["status"]
    });
    let encoded = protobuf::encode_object(&review).unwrap().unwrap();
    assert_eq!(protobuf::decode_object(&encoded).unwrap(), expected);
    let _: api::authorization::v1::SelfSubjectAccessReview = round_trip(&expected);

    // ExtraValue is a list in JSON and a message of items on the wire.
    let access = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "metadata": {},
        "spec": {"user": "ann", "groups": ["dev"], "extra": {"scopes": ["a", "b"]}, "nonResourceAttributes": {"path": "/metrics", "verb": "get"}},
        "status": {"allowed": false, "denied": true}
    });
    let typed: api::authorization::v1::SubjectAccessReview = round_trip(&access);
    assert_eq!(typed.spec.unwrap().extra["scopes"].items, ["a", "b"]);

    let token = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": "agent", "namespace": "shop"},
        "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600, "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-1", "uid": "u-1"}},
        "status": {"token": "eyJhbGciOi", "expirationTimestamp": "2026-03-01T11:20:30Z"}
    });
    let _: api::authentication::v1::TokenRequest = round_trip(&token);

    let status = json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": "deployments.apps \"web\" not found",
        "reason": "NotFound",
        "details": {"name": "web", "group": "apps", "kind": "deployments", "causes": [{"reason": "FieldValueInvalid", "message": "bad", "field": "spec.replicas"}]},
        "code": 404
    });
    let typed: apimachinery::pkg::apis::meta::v1::Status = round_trip(&status);
    assert_eq!(typed.code, Some(404));
}

#[test]
fn lists_events_leases_and_crds() {
    let list = json!({
        "apiVersion": "v1",
        "kind": "ConfigMapList",
        "metadata": {"resourceVersion": "77", "continue": "shop/b", "remainingItemCount": 4},
        "items": [
            {"metadata": {"name": "a", "namespace": "shop"}, "data": {"k": "v"}},
            {"metadata": {"name": "b", "namespace": "shop"}, "binaryData": {"b": "AQI="}, "immutable": true}
        ]
    });
    let _: api::core::v1::ConfigMapList = round_trip(&list);

    let event = json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "web.1", "namespace": "shop"},
        "eventTime": "2026-03-01T10:20:30.123456Z",
        "reportingController": "biometrics.io/operator",
        "reportingInstance": "operator-1",
        "action": "Capture",
        "reason": "RunStarted",
        "note": "run g1 started",
        "type": "Normal",
        "regarding": {"kind": "ProfileCapture", "namespace": "shop", "name": "web", "apiVersion": "biometrics.io/v1alpha1"},
        "series": {"count": 2, "lastObservedTime": "2026-03-01T10:21:30.000001Z"}
    });
    let _: api::events::v1::Event = round_trip(&event);

    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "operator", "namespace": "biometrics"},
        "spec": {"holderIdentity": "operator-1", "leaseDurationSeconds": 15, "renewTime": "2026-03-01T10:20:30.500000Z", "leaseTransitions": 1}
    });
    let _: api::coordination::v1::Lease = round_trip(&lease);

    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": {
                                "size": {"type": "integer", "minimum": 1, "default": 3},
                                "mode": {"type": "string", "enum": ["fast", "slow"]},
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "additionalProperties": false}
                            },
                            "x-kubernetes-validations": [{"rule": "self.size < 100", "message": "too big"}]
                        },
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }}
            }]
        }
    });
    let _: apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition = round_trip(&crd);
}

#[test]
fn custom_resources_and_foreign_bodies_are_refused() {
    let capture = json!({"apiVersion": "biometrics.io/v1alpha1", "kind": "ProfileCapture", "metadata": {"name": "x"}});
    assert_eq!(protobuf::encode_object(&capture), Ok(None));
    // An envelope naming a custom resource, as a client with the wrong idea would send it.
    let mut envelope = protobuf::MAGIC.to_vec();
    envelope.extend(
        apimachinery::pkg::runtime::Unknown {
            type_meta: Some(apimachinery::pkg::runtime::TypeMeta {
                api_version: Some("biometrics.io/v1alpha1".into()),
                kind: Some("ProfileCapture".into()),
            }),
            raw: Some(Vec::new()),
            content_encoding: None,
            content_type: None,
        }
        .encode_to_vec(),
    );
    assert!(matches!(protobuf::decode_object(&envelope), Err(DecodeError::UnknownKind { .. })));
    assert!(matches!(protobuf::decode_object(b"{\"kind\":\"Pod\"}"), Err(DecodeError::Malformed(_))));
    assert!(matches!(protobuf::decode_object(b"k8s\0\x0a\xff"), Err(DecodeError::Malformed(_))));
}

#[test]
fn watch_frames_are_length_prefixed_watch_events() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "shop"}, "data": {"k": "v"}});
    let frame = protobuf::watch_frame("ADDED", &cm).unwrap();
    let length = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(length, frame.len() - 4);
    let event = apimachinery::pkg::apis::meta::v1::WatchEvent::decode(&frame[4..]).unwrap();
    assert_eq!(event.r#type.as_deref(), Some("ADDED"));
    let raw = event.object.unwrap().raw.unwrap();
    assert_eq!(protobuf::decode_object(&raw).unwrap(), cm);
}

#[test]
fn a_go_clients_zeros_are_kept_in_pointer_fields_and_left_out_of_omitempty_ones() {
    use apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    // What kubectl's generators send: every non-pointer field, zero or not, and the pointer
    // fields the client set, here to zero.
    let template = api::core::v1::PodTemplateSpec {
        metadata: Some(ObjectMeta {
            name: Some(String::new()),
            generate_name: Some(String::new()),
            generation: Some(0),
            creation_timestamp: Some(Time::default()),
            labels: [("app".to_owned(), String::new())].into(),
            ..Default::default()
        }),
        spec: Some(api::core::v1::PodSpec {
            containers: vec![api::core::v1::Container {
                name: Some("app".into()),
                image: Some("nginx".into()),
                stdin: Some(false),
                working_dir: Some(String::new()),
                ..Default::default()
            }],
            host_network: Some(false),
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(0),
            ..Default::default()
        }),
    };
    let message = protobuf::message_for("v1", "PodTemplate").unwrap();
    let bytes = api::core::v1::PodTemplate { metadata: None, template: Some(template) }.encode_to_vec();
    assert_eq!(
        protobuf::decode_message(message, &bytes).unwrap(),
        json!({"template": {
            // A zero time is null in Go's JSON; map values are kept even when empty.
            "metadata": {"creationTimestamp": null, "labels": {"app": ""}},
            // `name` has no omitempty, so Go's JSON writes it; `stdin`, `hostNetwork` and
            // `workingDir` are non-pointer omitempty fields, left out at zero; the pointer
            // fields the client set to zero stay.
            "spec": {
                "containers": [{"name": "app", "image": "nginx"}],
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 0
            }
        }})
    );
}

#[test]
fn every_group_version_carries_meta_kinds() {
    // client-go sends a typed delete's options under the resource's own group version.
    let options = json!({
        "apiVersion": "apps/v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Orphan",
        "gracePeriodSeconds": 5,
        "preconditions": {"uid": "u-1"}
    });
    let typed: apimachinery::pkg::apis::meta::v1::DeleteOptions = round_trip(&options);
    assert_eq!(typed.propagation_policy.as_deref(), Some("Orphan"));
}
