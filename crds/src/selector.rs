//! Label selectors: which pods a ProfileCapture or CachePolicy applies to.
//!
//! Matching is kube's `Selector`; this module adds the checks kube-apiserver makes on a
//! `LabelSelector` (an `In`/`NotIn` needs values, `Exists`/`DoesNotExist` takes none) so a
//! selector that Kubernetes would refuse is never silently read as "match nothing".

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use schemars::{Schema, SchemaGenerator, json_schema};

/// Why a label selector is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// `In`/`NotIn` with no values.
    #[error("matchExpressions[{index}] (key {key:?}): operator {operator} needs at least one value")]
    MissingValues {
        /// Position in `matchExpressions`.
        index: usize,
        /// The requirement's key.
        key: String,
        /// The operator.
        operator: String,
    },
    /// `Exists`/`DoesNotExist` with values.
    #[error("matchExpressions[{index}] (key {key:?}): operator {operator} takes no values")]
    UnexpectedValues {
        /// Position in `matchExpressions`.
        index: usize,
        /// The requirement's key.
        key: String,
        /// The operator.
        operator: String,
    },
    /// An operator other than In, NotIn, Exists, DoesNotExist.
    #[error(
        "matchExpressions[{index}] (key {key:?}): unknown operator {operator:?} (use In, NotIn, Exists or DoesNotExist)"
    )]
    UnknownOperator {
        /// Position in `matchExpressions`.
        index: usize,
        /// The requirement's key.
        key: String,
        /// The operator.
        operator: String,
    },
}

/// A validated label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSelector(Selector);

impl PodSelector {
    /// Checks `selector` as kube-apiserver would and prepares it for matching.
    pub fn new(selector: &LabelSelector) -> Result<Self, SelectorError> {
        for (index, req) in selector.match_expressions.iter().flatten().enumerate() {
            let has_values = req.values.as_ref().is_some_and(|v| !v.is_empty());
            let (key, operator) = (req.key.clone(), req.operator.clone());
            match req.operator.as_str() {
                "In" | "NotIn" if !has_values => return Err(SelectorError::MissingValues { index, key, operator }),
                "Exists" | "DoesNotExist" if has_values => {
                    return Err(SelectorError::UnexpectedValues { index, key, operator });
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                _ => return Err(SelectorError::UnknownOperator { index, key, operator }),
            }
        }
        let mut normalized = selector.clone();
        // `Exists` with `values: []` is valid for Kubernetes; kube's conversion wants None.
        for req in normalized.match_expressions.iter_mut().flatten() {
            if req.values.as_ref().is_some_and(Vec::is_empty) {
                req.values = None;
            }
        }
        let inner = Selector::try_from(normalized).map_err(|e| SelectorError::UnknownOperator {
            index: 0,
            key: String::new(),
            operator: e.0,
        })?;
        Ok(Self(inner))
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.matches(labels)
    }

    /// Whether this selector selects every object (no requirements at all).
    pub fn selects_all(&self) -> bool {
        self.0.selects_all()
    }

    /// The selector in the `labelSelector=` query syntax of the Kubernetes API.
    pub fn to_query(&self) -> String {
        self.0.to_string()
    }
}

/// The `LabelSelector` schema with the operator/values rules of kube-apiserver added as CEL,
/// so a malformed selector is refused at `kubectl apply`.
pub fn label_selector_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<LabelSelector>();
    let rules = json_schema!({
        "x-kubernetes-validations": [
            {
                "rule": "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
                "message": "operators In and NotIn need at least one value"
            },
            {
                "rule": "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",
                "message": "operators Exists and DoesNotExist take no values"
            },
            {
                "rule": "self.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist']",
                "message": "operator must be one of In, NotIn, Exists, DoesNotExist"
            }
        ]
    });
    if let Some(items) = schema.pointer_mut("/properties/matchExpressions/items").and_then(|v| v.as_object_mut())
        && let Some(extra) = rules.as_object()
    {
        items.extend(extra.clone());
    }
    // Bounds that Kubernetes' label syntax implies anyway; declaring them keeps the CEL
    // rules' estimated cost far inside the API server's budget.
    for (pointer, key, bound) in [
        ("/properties/matchExpressions", "maxItems", 32),
        ("/properties/matchExpressions/items/properties/key", "maxLength", 317),
        ("/properties/matchExpressions/items/properties/operator", "maxLength", 16),
        ("/properties/matchExpressions/items/properties/values", "maxItems", 64),
        ("/properties/matchExpressions/items/properties/values/items", "maxLength", 63),
        ("/properties/matchLabels", "maxProperties", 64),
        ("/properties/matchLabels/additionalProperties", "maxLength", 63),
    ] {
        if let Some(obj) = schema.pointer_mut(pointer).and_then(|v| v.as_object_mut()) {
            obj.insert(key.into(), bound.into());
        }
    }
    schema
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn req(key: &str, operator: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn selector(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: Some(exprs),
        }
    }

    #[test]
    fn match_labels_and_expressions_combine_with_and() {
        let s = PodSelector::new(&selector(
            &[("app", "api")],
            vec![req("tier", "In", Some(&["web", "edge"])), req("canary", "DoesNotExist", None)],
        ))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "api"), ("tier", "web")])));
        assert!(!s.matches(&labels(&[("app", "api"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "api"), ("tier", "web"), ("canary", "true")])));
        assert!(!s.matches(&labels(&[("tier", "web")])));
    }

    #[test]
    fn each_operator() {
        let not_in = PodSelector::new(&selector(&[], vec![req("env", "NotIn", Some(&["prod"]))])).unwrap();
        assert!(not_in.matches(&labels(&[("env", "dev")])));
        assert!(not_in.matches(&labels(&[])), "NotIn matches objects without the key");
        assert!(!not_in.matches(&labels(&[("env", "prod")])));
        let exists = PodSelector::new(&selector(&[], vec![req("team", "Exists", None)])).unwrap();
        assert!(exists.matches(&labels(&[("team", "")])));
        assert!(!exists.matches(&labels(&[("other", "x")])));
    }

    #[test]
    fn empty_selector_selects_everything() {
        let s = PodSelector::new(&LabelSelector::default()).unwrap();
        assert!(s.selects_all());
        assert!(s.matches(&labels(&[])));
        let s = PodSelector::new(&selector(&[], vec![])).unwrap();
        assert!(s.selects_all(), "an empty matchExpressions list adds no requirement");
    }

    #[test]
    fn empty_values_are_refused_where_kubernetes_refuses_them() {
        let err = PodSelector::new(&selector(&[], vec![req("env", "In", Some(&[]))])).unwrap_err();
        assert!(matches!(err, SelectorError::MissingValues { .. }), "{err}");
        let err = PodSelector::new(&selector(&[], vec![req("env", "NotIn", None)])).unwrap_err();
        assert!(err.to_string().contains("needs at least one value"), "{err}");
        let err = PodSelector::new(&selector(&[], vec![req("env", "Exists", Some(&["x"]))])).unwrap_err();
        assert!(matches!(err, SelectorError::UnexpectedValues { .. }), "{err}");
        let err = PodSelector::new(&selector(&[], vec![req("env", "Gt", Some(&["1"]))])).unwrap_err();
        assert!(matches!(err, SelectorError::UnknownOperator { .. }), "{err}");
        // `Exists` with an explicitly empty list is fine, as in Kubernetes.
        let s = PodSelector::new(&selector(&[], vec![req("env", "Exists", Some(&[]))])).unwrap();
        assert!(s.matches(&labels(&[("env", "x")])));
    }

    #[test]
    fn query_syntax() {
        let s = PodSelector::new(&selector(&[("app", "api")], vec![req("tier", "NotIn", Some(&["db"]))])).unwrap();
        assert_eq!(s.to_query(), "app=api,tier notin (db)");
    }
}
