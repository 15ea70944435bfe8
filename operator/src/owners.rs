//! Who owns what the operator writes at run time. The Lease, the signing-key Secret and the
//! `biometrics-trust` ConfigMaps are not the chart's, so `helm uninstall` would leave them
//! (a private key among them). Each carries an ownerReference to a role the chart installs
//! where it lives: the Role in the operator's namespace owns the Lease and the Secret; the
//! ClusterRole, or with `watchNamespace` the Role there, owns the ConfigMaps. Deleting the
//! release deletes the roles, and the garbage collector what they own.

use k8s_openapi::{
    api::rbac::v1::{ClusterRole, Role},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{Api, Client, Resource, ResourceExt};

use crate::error::ConfigError;

/// A role named on the command line as an owner: `Role/NAME` or `ClusterRole/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerRole {
    /// A Role in the namespace of what it owns.
    Role(String),
    /// A ClusterRole, which may own objects in any namespace.
    ClusterRole(String),
}

impl std::str::FromStr for OwnerRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some(("Role", name)) if !name.is_empty() => Ok(Self::Role(name.to_owned())),
            Some(("ClusterRole", name)) if !name.is_empty() => Ok(Self::ClusterRole(name.to_owned())),
            _ => Err(format!("{s:?} is not Role/NAME or ClusterRole/NAME")),
        }
    }
}

/// The ownerReferences to set, resolved once at start.
#[derive(Debug, Clone, Default)]
pub struct Owners {
    /// The owner of the Lease and the signing-key Secret.
    pub runtime: Option<OwnerReference>,
    /// The owner of the trust ConfigMaps.
    pub trust: Option<OwnerReference>,
}

impl Owners {
    /// Reads the uids of the roles: `runtime` is a Role in `namespace`, `trust` a ClusterRole
    /// or a Role in `trust_namespace`. A role that cannot be read is a configuration error:
    /// without it, what the operator writes would outlive the release.
    pub async fn resolve(
        client: &Client,
        namespace: &str,
        runtime: Option<&str>,
        trust: Option<&OwnerRole>,
        trust_namespace: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let runtime = match runtime {
            Some(name) => Some(reference(Api::<Role>::namespaced(client.clone(), namespace), name).await?),
            None => None,
        };
        let trust = match trust {
            Some(OwnerRole::ClusterRole(name)) => Some(reference(Api::<ClusterRole>::all(client.clone()), name).await?),
            Some(OwnerRole::Role(name)) => {
                let namespace = trust_namespace.unwrap_or(namespace);
                Some(reference(Api::<Role>::namespaced(client.clone(), namespace), name).await?)
            }
            None => None,
        };
        Ok(Self { runtime, trust })
    }
}

async fn reference<K>(api: Api<K>, name: &str) -> Result<OwnerReference, ConfigError>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let role = api
        .get(name)
        .await
        .map_err(|source| ConfigError::Owner { owner: format!("{} {name}", K::kind(&())), source })?;
    Ok(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: role.name_any(),
        uid: role.uid().unwrap_or_default(),
        ..OwnerReference::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_roles_parse_from_kind_and_name() {
        assert_eq!("Role/biometrics-reconcile".parse(), Ok(OwnerRole::Role("biometrics-reconcile".into())));
        assert_eq!("ClusterRole/biometrics".parse(), Ok(OwnerRole::ClusterRole("biometrics".into())));
        for bad in ["biometrics", "Role/", "Deployment/biometrics", ""] {
            assert!(bad.parse::<OwnerRole>().is_err(), "{bad}");
        }
    }
}
