//! The pod's `/etc/hosts`, which the kubelet writes as a real one does (localhost, the pod's
//! own name) and which here also stands in for cluster DNS: every Service with a selector
//! resolves, under the names cluster DNS gives it, to the ready pods behind it, as a
//! headless Service resolves. There is no ClusterIP and no kube-proxy: a client that wants
//! its requests spread over a Service's pods looks up every address (resolvers sort them by
//! RFC 6724, so taking the first would always pick the same pod).

use std::{borrow::Borrow, collections::BTreeMap, net::Ipv4Addr};

use serde_json::Value;

/// One Service and the addresses of the ready pods it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAddresses {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Ready pods' IPs, in a stable order.
    pub addresses: Vec<Ipv4Addr>,
}

fn labels(object: &Value, pointer: &str) -> BTreeMap<String, String> {
    object
        .pointer(pointer)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

fn ready_ip(pod: &Value) -> Option<Ipv4Addr> {
    if pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
        return None;
    }
    let ready = pod.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Ready")
            && c.get("status").and_then(Value::as_str) == Some("True")
    });
    if !ready {
        return None;
    }
    pod.pointer("/status/podIP").and_then(Value::as_str)?.parse().ok()
}

/// The Services that select pods, each with its ready pods' addresses (what an EndpointSlice
/// would list). Services without a selector, and ExternalName ones, resolve to nothing here.
pub fn service_addresses(services: &[impl Borrow<Value>], pods: &[impl Borrow<Value>]) -> Vec<ServiceAddresses> {
    let meta =
        |o: &Value, f: &str| o.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or("").to_owned();
    services
        .iter()
        .map(Borrow::borrow)
        .filter(|s: &&Value| s.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName"))
        .filter_map(|service| {
            let selector = labels(service, "/spec/selector");
            if selector.is_empty() {
                return None;
            }
            let namespace = meta(service, "namespace");
            let mut addresses: Vec<Ipv4Addr> = pods
                .iter()
                .map(Borrow::borrow)
                .filter(|p: &&Value| meta(p, "namespace") == namespace)
                .filter(|p| {
                    let have = labels(p, "/metadata/labels");
                    selector.iter().all(|(k, v)| have.get(k) == Some(v))
                })
                .filter_map(ready_ip)
                .collect();
            addresses.sort_unstable();
            addresses.dedup();
            Some(ServiceAddresses { namespace, name: meta(service, "name"), addresses })
        })
        .collect()
}

/// The hosts file of a pod in `namespace` named `hostname` at `ip`.
pub fn hosts_file(namespace: &str, hostname: &str, ip: Ipv4Addr, services: &[ServiceAddresses]) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    out.push_str(&format!("{ip}\t{hostname}\n"));
    for service in services.iter().filter(|s| !s.addresses.is_empty()) {
        let (ns, name) = (&service.namespace, &service.name);
        let mut names = format!("{name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}");
        if ns == namespace {
            names.push_str(&format!(" {name}"));
        }
        for address in &service.addresses {
            out.push_str(&format!("{address}\t{names}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, ip: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "namespace": "shop", "labels": {"app": "checkout", "tier": "web"}},
               "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    #[test]
    fn a_service_resolves_to_its_ready_pods_under_every_dns_name() {
        let services = [
            json!({"metadata": {"name": "checkout", "namespace": "shop"}, "spec": {"selector": {"app": "checkout"}}}),
            json!({"metadata": {"name": "other", "namespace": "shop"}, "spec": {"selector": {"app": "other"}}}),
            json!({"metadata": {"name": "manual", "namespace": "shop"}, "spec": {}}),
        ];
        let mut terminating = pod("c", "10.200.0.9", true);
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let pods =
            [pod("b", "10.200.0.5", true), pod("a", "10.200.0.4", true), pod("u", "10.200.0.6", false), terminating];
        let table = service_addresses(&services, &pods);
        assert_eq!(table.len(), 2, "{table:?}");
        assert_eq!(table[0].addresses, ["10.200.0.4".parse::<Ipv4Addr>().unwrap(), "10.200.0.5".parse().unwrap()]);
        assert!(table[1].addresses.is_empty());

        let same = hosts_file("shop", "web-1", "10.200.0.7".parse().unwrap(), &table);
        assert!(same.contains("10.200.0.7\tweb-1\n"), "{same}");
        assert!(
            same.contains("10.200.0.4\tcheckout.shop.svc.cluster.local checkout.shop.svc checkout.shop checkout\n"),
            "{same}"
        );
        assert!(!same.contains("other"), "a service with no ready pod resolves to nothing: {same}");
        assert!(same.contains("10.200.0.5\tcheckout.shop.svc.cluster.local"), "{same}");

        let elsewhere = hosts_file("billing", "job", "10.200.0.8".parse().unwrap(), &table);
        assert!(elsewhere.contains("checkout.shop\n") && !elsewhere.contains(" checkout\n"), "{elsewhere}");
    }
}
