//! Every CEL rule in the generated CRDs compiles, uses only what a CRD rule may use, and
//! stays within the API server's cost budget given the schema's bounds — checks a real
//! kube-apiserver makes when the CRD is applied, which no test here can reach otherwise.

use kube_cel::{ScopeContext, WarningKind, analyze_rule, compile_schema};
use serde_json::Value;

/// Every schema node carrying `x-kubernetes-validations`, with its path.
fn nodes_with_rules<'a>(node: &'a Value, path: String, found: &mut Vec<(String, &'a Value)>) {
    if node.get("x-kubernetes-validations").is_some() {
        found.push((path.clone(), node));
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            nodes_with_rules(v, format!("{path}.{k}"), found);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get(key).filter(|c| c.is_object()) {
            nodes_with_rules(child, format!("{path}[]"), found);
        }
    }
}

/// Whether the variable a scope warning names is a comprehension variable of `rule`.
fn bound_by_macro(rule: &str, message: &str) -> bool {
    message
        .split('\'')
        .nth(1)
        .is_some_and(|var| rule.contains(&format!("({var}, ")) || rule.contains(&format!("({var},")))
}

#[test]
fn every_rule_compiles_and_fits_the_cost_budget() {
    let mut checked = 0;
    for (file, crd) in biometrics_crds::crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema serialises");
        let root = &schema["openAPIV3Schema"];
        let mut nodes = Vec::new();
        nodes_with_rules(root, String::new(), &mut nodes);
        for (path, node) in nodes {
            let compiled = compile_schema(node);
            for rule in node["x-kubernetes-validations"].as_array().expect("a list of rules") {
                let text = rule["rule"].as_str().expect("rule text");
                assert!(kube_cel::cel::Program::compile(text).is_ok(), "{file} {path}: rule does not compile: {text}");
                assert!(
                    rule["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{file} {path}: rule without a message: {text}"
                );
                let warnings: Vec<_> = analyze_rule(text, &compiled, ScopeContext::CrdValidation)
                    .into_iter()
                    // The scope check also flags macro variables (`all(r, …)`); those are bound.
                    .filter(|w| !(w.kind == WarningKind::WrongScope && bound_by_macro(text, &w.message)))
                    .collect();
                assert!(warnings.is_empty(), "{file} {path}: {text}: {warnings:#?}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "expected the CRDs' rules, found {checked}");
}
