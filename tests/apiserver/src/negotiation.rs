//! Content negotiation as kube-apiserver does it: the `Accept` clauses in order of
//! preference (`q`), the first one the resource can be written in wins, and none at all is
//! 406. Built-in kinds are served in JSON or protobuf, custom resources in JSON only.

/// What a response is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `application/json` (also for YAML, Table and wildcard clauses).
    Json,
    /// `application/vnd.kubernetes.protobuf`.
    Protobuf,
    /// Nothing the client accepts: 406.
    NotAcceptable,
}

struct Clause<'a> {
    media: String,
    params: Vec<(&'a str, &'a str)>,
    q: f32,
}

fn clauses(accept: &str) -> Vec<Clause<'_>> {
    let mut clauses: Vec<Clause<'_>> = accept
        .split(',')
        .filter_map(|clause| {
            let mut parts = clause.split(';').map(str::trim);
            let media = parts.next().filter(|m| !m.is_empty())?.to_ascii_lowercase();
            let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
            let q = params.iter().find(|(k, _)| *k == "q").and_then(|(_, v)| v.parse().ok()).unwrap_or(1.0);
            Some(Clause { media, params, q })
        })
        .collect();
    // Stable: equally preferred clauses keep the client's order.
    clauses.sort_by(|a, b| b.q.total_cmp(&a.q));
    clauses
}

/// The output for a request with this `Accept` header, for a resource that can (`protobuf`)
/// or cannot be written in protobuf.
pub fn output(accept: &str, protobuf: bool) -> Output {
    if accept.trim().is_empty() {
        return Output::Json;
    }
    for clause in clauses(accept).iter().filter(|c| c.q > 0.0) {
        match clause.media.as_str() {
            "application/json" | "application/yaml" | "application/*" | "*/*" => return Output::Json,
            // Tables are served in JSON only; a protobuf Table clause is passed over.
            crate::protobuf::MEDIA_TYPE if protobuf && !clause.params.iter().any(|(k, _)| *k == "as") => {
                return Output::Protobuf;
            }
            _ => {}
        }
    }
    Output::NotAcceptable
}

/// The media types a resource is served in, as kube-apiserver lists them in a 406 or 415.
pub fn accepted(protobuf: bool) -> &'static str {
    if protobuf {
        "application/json, application/yaml, application/vnd.kubernetes.protobuf"
    } else {
        "application/json, application/yaml"
    }
}

/// Whether a request body's content type is protobuf.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case(crate::protobuf::MEDIA_TYPE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_go_and_kubectl_accept_headers() {
        let typed = "application/vnd.kubernetes.protobuf, application/json";
        assert_eq!(output(typed, true), Output::Protobuf);
        assert_eq!(output(typed, false), Output::Json);
        assert_eq!(output("application/json", true), Output::Json);
        assert_eq!(output("", true), Output::Json);
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(output(table, true), Output::Json);
        assert_eq!(output("application/json;q=0.5, application/vnd.kubernetes.protobuf", true), Output::Protobuf);
        assert_eq!(output("application/vnd.kubernetes.protobuf", false), Output::NotAcceptable);
        assert_eq!(output("text/html", true), Output::NotAcceptable);
        assert_eq!(output("text/html, */*;q=0.8", false), Output::Json);
    }
}
