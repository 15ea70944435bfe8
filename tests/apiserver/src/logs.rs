//! `GET …/pods/{name}/log`: a container's output as the kubelet keeps it, for `kubectl
//! logs` with `-c`, `--previous`, `--tail` and `-f`.

use std::{collections::BTreeMap, path::Path, time::Duration};

use axum::{
    body::{Body, Bytes},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::Value;

use crate::{error::ApiError, registry::TypeKey, store::Store};

/// The names in the pod's `containers` or (`field`) `initContainers`.
fn containers(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The container a log or exec request is for, as kube-apiserver picks it: the one asked
/// for (an init container too), else the pod's only app container.
pub fn container_for(pod: &Value, asked: Option<&str>) -> Result<String, ApiError> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let (names, init) = (containers(pod, "containers"), containers(pod, "initContainers"));
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if names.iter().chain(&init).any(|n| n == c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None if names.len() == 1 => Ok(names[0].clone()),
        None => {
            let mut message = format!("a container name must be specified for pod {name}");
            if !names.is_empty() {
                message += &format!(", choose one of: [{}]", names.join(" "));
                if !init.is_empty() {
                    message += &format!(" or one of the init containers: [{}]", init.join(" "));
                }
            }
            Err(ApiError::bad_request(message))
        }
    }
}

fn tail(text: &[u8], lines: usize) -> &[u8] {
    let mut seen = 0;
    let end = if text.ends_with(b"\n") { text.len() - 1 } else { text.len() };
    for (i, b) in text[..end].iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == lines {
                return &text[i + 1..];
            }
        }
    }
    text
}

/// Answers a log request.
pub fn serve(
    store: &Store,
    state_dir: Option<&Path>,
    namespace: &str,
    name: &str,
    query: &BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    let pods = TypeKey { group: String::new(), plural: "pods".into() };
    let pod = store.get(&pods, namespace, name)?;
    let container = container_for(&pod, query.get("container").map(String::as_str))?;
    let previous = query.get("previous").is_some_and(|p| p == "true");
    let reason = crate::kubelet::container_status(&pod, &container)
        .and_then(|s| s.pointer("/state/waiting/reason").and_then(Value::as_str))
        .unwrap_or("ContainerCreating");
    let waiting =
        || ApiError::bad_request(format!("container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"));
    let path =
        state_dir.and_then(|dir| crate::kubelet::log_file(dir, &pod, &container, previous)).ok_or_else(|| {
            if previous {
                ApiError::bad_request(format!(
                    "previous terminated container \"{container}\" in pod \"{name}\" not found"
                ))
            } else {
                waiting()
            }
        })?;
    let text = std::fs::read(&path).map_err(|_| waiting())?;
    let start =
        query.get("tailLines").and_then(|t| t.parse::<usize>().ok()).map_or(text.as_slice(), |n| tail(&text, n));
    let first = Bytes::copy_from_slice(start);
    if query.get("follow").is_none_or(|f| f != "true") || previous {
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], first).into_response());
    }
    // Follow: what is appended, until this run of the container ends.
    let (store, namespace, name, uid) =
        (store.clone(), namespace.to_owned(), name.to_owned(), pod.pointer("/metadata/uid").cloned());
    let offset = text.len();
    let stream = futures::stream::unfold((Some(first), offset, path, false), move |(pending, offset, path, ended)| {
        let (store, pods, namespace, name, uid) =
            (store.clone(), pods.clone(), namespace.clone(), name.clone(), uid.clone());
        async move {
            if let Some(chunk) = pending {
                return Some((Ok::<Bytes, std::io::Error>(chunk), (None, offset, path, ended)));
            }
            if ended {
                return None;
            }
            loop {
                let current = std::fs::read(&path).unwrap_or_default();
                if current.len() > offset {
                    let chunk = Bytes::copy_from_slice(&current[offset..]);
                    return Some((Ok(chunk), (None, current.len(), path, false)));
                }
                let same_pod =
                    store.get(&pods, &namespace, &name).ok().filter(|p| p.pointer("/metadata/uid") == uid.as_ref());
                let running = same_pod.as_ref().is_some_and(|p| {
                    p.pointer("/status/containerStatuses")
                        .and_then(Value::as_array)
                        .is_some_and(|cs| cs.iter().any(|c| c.pointer("/state/running").is_some()))
                });
                if !running {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], Body::from_stream(stream)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail(b"a\n", 5), b"a\n");
    }
}
