//! Every built-in resource type kube-apiserver serves by default at the Kubernetes version
//! k8s-openapi is built for. Group, version, kind, plural, scope and the schema come from
//! k8s-openapi's own types; the one table below adds what those types do not carry: short
//! names, categories, the status subresource, generation tracking and restricted verbs, as
//! kube-apiserver's REST storage for each kind declares them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::{
    ClusterResourceScope, NamespaceResourceScope, Resource,
    api::{
        admissionregistration::v1 as admissionregistration, apps::v1 as apps, authentication::v1 as authentication,
        authorization::v1 as authorization, autoscaling::v2 as autoscaling, batch::v1 as batch,
        certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core,
        discovery::v1 as discovery, events::v1 as events, flowcontrol::v1 as flowcontrol, networking::v1 as networking,
        node::v1 as node, policy::v1 as policy, rbac::v1 as rbac, resource::v1 as resource,
        scheduling::v1 as scheduling, storage::v1 as storage,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions,
    kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration,
};
use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings};

/// Every verb of a storage with the generic semantics.
pub const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// Whether a k8s-openapi scope is a namespace's.
trait Scope {
    const NAMESPACED: bool;
}

impl Scope for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl Scope for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// One built-in type: what k8s-openapi says of it plus [`Extra`].
#[derive(Clone, Copy)]
pub struct Builtin {
    /// API group, `""` for core.
    pub group: &'static str,
    /// The served version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural, the URL segment.
    pub plural: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// What k8s-openapi does not know.
    pub extra: Extra,
    /// The kind's schema, its references registered in the generator.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
}

/// What kube-apiserver's storage of a kind declares beyond its type.
#[derive(Clone, Copy)]
pub struct Extra {
    /// `kubectl` short names.
    pub short_names: &'static [&'static str],
    /// Categories (`all`, `api-extensions`).
    pub categories: &'static [&'static str],
    /// Whether `/status` is a subresource.
    pub status: bool,
    /// Whether `metadata.generation` moves with the spec.
    pub generation: bool,
    /// The verbs served, when not all of them.
    pub verbs: &'static [&'static str],
    /// Whether `/scale` is a subresource (at `.spec.replicas`).
    pub scale: bool,
}

const PLAIN: Extra =
    Extra { short_names: &[], categories: &[], status: false, generation: false, verbs: ALL_VERBS, scale: false };
const ALL: &[&str] = &["all"];
const REVIEW: Extra = Extra { verbs: &["create"], ..PLAIN };
const API_EXTENSIONS: &[&str] = &["api-extensions"];

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

#[allow(private_bounds)]
const fn builtin<T>(extra: Extra) -> Builtin
where
    T: Resource + JsonSchema,
    T::Scope: Scope,
{
    Builtin {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        plural: T::URL_PATH_SEGMENT,
        namespaced: <T::Scope as Scope>::NAMESPACED,
        extra,
        schema: schema_of::<T>,
    }
}

const fn short(names: &'static [&'static str]) -> Extra {
    Extra { short_names: names, ..PLAIN }
}

const fn with_status(names: &'static [&'static str], categories: &'static [&'static str], generation: bool) -> Extra {
    Extra { short_names: names, categories, status: true, generation, ..PLAIN }
}

const fn workload(names: &'static [&'static str]) -> Extra {
    Extra { scale: true, ..with_status(names, ALL, true) }
}

/// The built-ins served by default (GA versions; beta and alpha groups are off by default in
/// kube-apiserver). The access reviews and SelfSubjectReview are create-only and answered by
/// [`crate::reviews`], never stored, as is TokenReview; SelfSubjectRulesReview and Bindings
/// are absent until they are answered for real.
pub const BUILTINS: &[Builtin] = &[
    builtin::<authentication::SelfSubjectReview>(REVIEW),
    builtin::<authentication::TokenReview>(REVIEW),
    builtin::<authorization::LocalSubjectAccessReview>(REVIEW),
    builtin::<authorization::SelfSubjectAccessReview>(REVIEW),
    builtin::<authorization::SubjectAccessReview>(REVIEW),
    builtin::<core::ComponentStatus>(Extra { short_names: &["cs"], verbs: &["get", "list"], ..PLAIN }),
    builtin::<core::ConfigMap>(short(&["cm"])),
    builtin::<core::Endpoints>(short(&["ep"])),
    builtin::<core::Event>(short(&["ev"])),
    builtin::<core::LimitRange>(short(&["limits"])),
    builtin::<core::Namespace>(with_status(&["ns"], &[], false)),
    builtin::<core::Node>(with_status(&["no"], &[], false)),
    builtin::<core::PersistentVolumeClaim>(with_status(&["pvc"], &[], false)),
    builtin::<core::PersistentVolume>(with_status(&["pv"], &[], false)),
    builtin::<core::Pod>(with_status(&["po"], ALL, false)),
    builtin::<core::PodTemplate>(PLAIN),
    builtin::<core::ReplicationController>(workload(&["rc"])),
    builtin::<core::ResourceQuota>(with_status(&["quota"], &[], false)),
    builtin::<core::Secret>(PLAIN),
    builtin::<core::ServiceAccount>(short(&["sa"])),
    builtin::<core::Service>(with_status(&["svc"], ALL, false)),
    builtin::<admissionregistration::MutatingWebhookConfiguration>(Extra {
        categories: API_EXTENSIONS,
        generation: true,
        ..PLAIN
    }),
    builtin::<admissionregistration::ValidatingWebhookConfiguration>(Extra {
        categories: API_EXTENSIONS,
        generation: true,
        ..PLAIN
    }),
    builtin::<admissionregistration::MutatingAdmissionPolicy>(Extra {
        categories: API_EXTENSIONS,
        generation: true,
        ..PLAIN
    }),
    builtin::<admissionregistration::MutatingAdmissionPolicyBinding>(Extra {
        categories: API_EXTENSIONS,
        generation: true,
        ..PLAIN
    }),
    builtin::<admissionregistration::ValidatingAdmissionPolicy>(with_status(&[], API_EXTENSIONS, true)),
    builtin::<admissionregistration::ValidatingAdmissionPolicyBinding>(Extra {
        categories: API_EXTENSIONS,
        generation: true,
        ..PLAIN
    }),
    builtin::<apiextensions::CustomResourceDefinition>(with_status(&["crd", "crds"], API_EXTENSIONS, true)),
    builtin::<apiregistration::APIService>(with_status(&[], API_EXTENSIONS, false)),
    builtin::<apps::ControllerRevision>(PLAIN),
    builtin::<apps::DaemonSet>(with_status(&["ds"], ALL, true)),
    builtin::<apps::Deployment>(workload(&["deploy"])),
    builtin::<apps::ReplicaSet>(workload(&["rs"])),
    builtin::<apps::StatefulSet>(workload(&["sts"])),
    builtin::<autoscaling::HorizontalPodAutoscaler>(with_status(&["hpa"], ALL, true)),
    builtin::<batch::CronJob>(with_status(&["cj"], ALL, true)),
    builtin::<batch::Job>(with_status(&[], ALL, true)),
    builtin::<certificates::CertificateSigningRequest>(with_status(&["csr"], &[], false)),
    builtin::<coordination::Lease>(PLAIN),
    builtin::<discovery::EndpointSlice>(PLAIN),
    builtin::<events::Event>(short(&["ev"])),
    builtin::<flowcontrol::FlowSchema>(with_status(&[], &[], true)),
    builtin::<flowcontrol::PriorityLevelConfiguration>(with_status(&[], &[], true)),
    builtin::<networking::IngressClass>(PLAIN),
    builtin::<networking::Ingress>(with_status(&["ing"], &[], true)),
    builtin::<networking::IPAddress>(short(&["ip"])),
    builtin::<networking::NetworkPolicy>(Extra { short_names: &["netpol"], generation: true, ..PLAIN }),
    builtin::<networking::ServiceCIDR>(with_status(&[], &[], false)),
    builtin::<node::RuntimeClass>(PLAIN),
    builtin::<policy::PodDisruptionBudget>(with_status(&["pdb"], &[], true)),
    builtin::<rbac::ClusterRoleBinding>(PLAIN),
    builtin::<rbac::ClusterRole>(PLAIN),
    builtin::<rbac::RoleBinding>(PLAIN),
    builtin::<rbac::Role>(PLAIN),
    builtin::<resource::DeviceClass>(Extra { generation: true, ..PLAIN }),
    builtin::<resource::ResourceClaim>(with_status(&[], &[], true)),
    builtin::<resource::ResourceClaimTemplate>(PLAIN),
    builtin::<resource::ResourceSlice>(Extra { generation: true, ..PLAIN }),
    builtin::<scheduling::PriorityClass>(short(&["pc"])),
    builtin::<storage::CSIDriver>(PLAIN),
    builtin::<storage::CSINode>(PLAIN),
    builtin::<storage::CSIStorageCapacity>(PLAIN),
    builtin::<storage::StorageClass>(short(&["sc"])),
    builtin::<storage::VolumeAttachment>(with_status(&[], &[], false)),
    builtin::<storage::VolumeAttributesClass>(short(&["vac"])),
];

/// k8s-openapi's schema of every built-in, and of the kinds requests and answers carry
/// beside them (Status, DeleteOptions, discovery, the subresources' TokenRequest, Scale,
/// Eviction and Binding), by component name (`io.k8s.api.core.v1.Pod`), with what they refer to.
pub fn definitions() -> serde_json::Map<String, serde_json::Value> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    for builtin in BUILTINS {
        (builtin.schema)(&mut generator);
    }
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::ListMeta>();
    generator.subschema_for::<meta::APIGroupList>();
    generator.subschema_for::<meta::APIResourceList>();
    generator.subschema_for::<meta::APIVersions>();
    generator.subschema_for::<authentication::TokenRequest>();
    generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
    generator.subschema_for::<policy::Eviction>();
    generator.subschema_for::<core::Binding>();
    generator.take_definitions(true)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_group_and_plural_is_served_once() {
        let keys: BTreeSet<(&str, &str)> = BUILTINS.iter().map(|b| (b.group, b.plural)).collect();
        assert_eq!(keys.len(), BUILTINS.len());
    }

    #[test]
    fn metadata_comes_from_the_types() {
        let deploy = BUILTINS.iter().find(|b| b.kind == "Deployment").unwrap();
        assert_eq!(
            (deploy.group, deploy.version, deploy.plural, deploy.namespaced),
            ("apps", "v1", "deployments", true)
        );
        let crb = BUILTINS.iter().find(|b| b.kind == "ClusterRoleBinding").unwrap();
        assert!(!crb.namespaced);
        assert_eq!(crb.group, "rbac.authorization.k8s.io");
    }

    #[test]
    fn schemas_name_the_kubernetes_components() {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        let pod = BUILTINS.iter().find(|b| b.kind == "Pod").unwrap();
        let reference = (pod.schema)(&mut generator);
        assert_eq!(reference.get("$ref").and_then(|r| r.as_str()), Some("#/components/schemas/io.k8s.api.core.v1.Pod"));
        assert!(generator.definitions().contains_key("io.k8s.api.core.v1.PodSpec"));
    }
}
