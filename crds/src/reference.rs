//! The CRD reference pages under `docs/reference/`, generated from the CRDs' OpenAPI
//! schema: every field with its type, default, bounds and description, and every CEL rule
//! with its message. The output depends only on the CRD, so a test can compare it with the
//! committed pages.

use std::fmt::Write as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

/// How to regenerate the pages; printed in each page and by the drift test.
pub const REGENERATE: &str = "BIOMETRICS_WRITE_DOCS=1 cargo test -p biometrics-crds --test docs_reference";

/// Patterns longer than this are left to the CRD YAML (the schedule's regex is over 1,000
/// characters and its description says what it accepts).
const MAX_SHOWN_PATTERN: usize = 80;

/// The reference page of every CRD, as `(file name under docs/reference/, Markdown)`.
pub fn pages() -> Vec<(String, String)> {
    crate::crds()
        .into_iter()
        .map(|(_, crd)| {
            let names = &crd.spec.names;
            let name = names.singular.clone().unwrap_or_else(|| names.kind.to_lowercase());
            (format!("{name}.md"), markdown(&crd))
        })
        .collect()
}

/// One field of the schema, flattened.
struct Row {
    path: String,
    type_: String,
    default: String,
    constraints: Vec<String>,
    description: String,
}

/// A CEL rule and where it sits.
struct Rule {
    path: String,
    rule: String,
    message: String,
}

/// The Markdown reference of one CRD (its first served version).
pub fn markdown(crd: &CustomResourceDefinition) -> String {
    let names = &crd.spec.names;
    let mut out = String::new();
    let _ = writeln!(out, "# {} reference", names.kind);
    out.push('\n');
    let _ = writeln!(
        out,
        "<!-- Generated from the CRD schema by biometrics_crds::reference; do not edit. Regenerate: {REGENERATE} -->"
    );
    for version in &crd.spec.versions {
        let schema = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
        out.push('\n');
        let mut facts = vec![
            format!("`apiVersion: {}/{}`", crd.spec.group, version.name),
            format!("`kind: {}`", names.kind),
            crd.spec.scope.to_lowercase(),
            format!("plural `{}`", names.plural),
        ];
        if let Some(short) = names.short_names.as_ref().filter(|s| !s.is_empty()) {
            facts.push(format!("short name{} {}", if short.len() > 1 { "s" } else { "" }, code_list(short)));
        }
        if let Some(categories) = names.categories.as_ref().filter(|c| !c.is_empty()) {
            facts.push(format!("categor{} {}", if categories.len() > 1 { "ies" } else { "y" }, code_list(categories)));
        }
        if version.subresources.as_ref().is_some_and(|s| s.status.is_some()) {
            facts.push("`status` subresource".to_owned());
        }
        let _ = writeln!(out, "{}.", facts.join(", "));
        if let Some(description) = schema.and_then(|s| s.description.as_deref()) {
            out.push('\n');
            let _ = writeln!(out, "{}", one_line(description));
        }
        if let Some(columns) = version.additional_printer_columns.as_ref().filter(|c| !c.is_empty()) {
            out.push('\n');
            let _ = writeln!(out, "## Columns of `kubectl get`\n");
            let _ = writeln!(out, "| Column | Type | JSONPath | Description |");
            let _ = writeln!(out, "| --- | --- | --- | --- |");
            for c in columns {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    cell(&c.name),
                    cell(&c.type_),
                    code(&c.json_path),
                    cell(&one_line(c.description.as_deref().unwrap_or("")))
                );
            }
        }
        let Some(schema) = schema else { continue };
        let mut rules = Vec::new();
        collect_rules("", schema, &mut rules);
        for (name, property) in schema.properties.iter().flatten() {
            let mut rows = Vec::new();
            let required = schema.required.iter().flatten().any(|r| r == name);
            walk(name, property, required, &mut rows);
            out.push('\n');
            let _ = writeln!(out, "## `{name}`\n");
            let _ = writeln!(out, "| Field | Type | Default | Constraints | Description |");
            let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
            for row in rows {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    code(&row.path),
                    cell(&row.type_),
                    row.default,
                    cell(&row.constraints.join("; ")),
                    cell(&row.description)
                );
            }
        }
        if !rules.is_empty() {
            out.push('\n');
            let _ = writeln!(out, "## Validation rules\n");
            let _ = writeln!(
                out,
                "CEL rules (`x-kubernetes-validations`) the API server checks; a manifest that breaks one is \
                 refused with its message.\n"
            );
            let _ = writeln!(out, "| Field | Rule | Message |");
            let _ = writeln!(out, "| --- | --- | --- |");
            for r in rules {
                let _ = writeln!(out, "| {} | {} | {} |", code(&r.path), code(&r.rule), cell(&r.message));
            }
        }
    }
    out
}

/// Rows for `schema` at `path` and everything below it, depth first, fields in name order.
fn walk(path: &str, schema: &JSONSchemaProps, required: bool, rows: &mut Vec<Row>) {
    let mut constraints = Vec::new();
    if required {
        constraints.push("required".to_owned());
    }
    constraints.extend(bounds(schema));
    match item_schema(schema) {
        Some(items) if is_object(items) => {}
        Some(items) => constraints.extend(bounds(items).into_iter().map(|b| format!("each: {b}"))),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties
        && !is_object(values)
    {
        constraints.extend(bounds(values).into_iter().map(|b| format!("each value: {b}")));
    }
    if has_rules(schema) || item_schema(schema).is_some_and(has_rules) {
        constraints.push("CEL (see [rules](#validation-rules))".to_owned());
    }
    rows.push(Row {
        path: path.to_owned(),
        type_: type_name(schema),
        default: schema.default.as_ref().map(|d| code(&canonical_json(&d.0))).unwrap_or_default(),
        constraints,
        description: one_line(schema.description.as_deref().unwrap_or("")),
    });
    let (object, prefix) = match (item_schema(schema), &schema.additional_properties) {
        (Some(items), _) => (items, format!("{path}[]")),
        (None, Some(JSONSchemaPropsOrBool::Schema(values))) => (values.as_ref(), format!("{path}.<key>")),
        _ => (schema, path.to_owned()),
    };
    for (name, property) in object.properties.iter().flatten() {
        let required = object.required.iter().flatten().any(|r| r == name);
        walk(&format!("{prefix}.{name}"), property, required, rows);
    }
}

/// CEL rules of `schema` and everything below it, in the order of [`walk`].
fn collect_rules(path: &str, schema: &JSONSchemaProps, rules: &mut Vec<Rule>) {
    for v in schema.x_kubernetes_validations.iter().flatten() {
        let mut message = v.message.clone().unwrap_or_default();
        if let Some(expression) = &v.message_expression {
            message = format!("{message} (messageExpression `{expression}`)").trim_start().to_owned();
        }
        if let Some(field) = &v.field_path {
            message.push_str(&format!(" (reported at `{field}`)"));
        }
        if let Some(reason) = &v.reason {
            message.push_str(&format!(" (reason `{reason}`)"));
        }
        rules.push(Rule {
            path: if path.is_empty() { "(root)".into() } else { path.to_owned() },
            rule: v.rule.clone(),
            message,
        });
    }
    let join = |name: &str| if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
    if let Some(items) = item_schema(schema) {
        collect_rules(&format!("{path}[]"), items, rules);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties {
        collect_rules(&format!("{path}.<key>"), values, rules);
    }
    for (name, property) in schema.properties.iter().flatten() {
        collect_rules(&join(name), property, rules);
    }
}

fn has_rules(schema: &JSONSchemaProps) -> bool {
    schema.x_kubernetes_validations.as_ref().is_some_and(|v| !v.is_empty())
}

fn item_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) => Some(items),
        _ => None,
    }
}

fn is_object(schema: &JSONSchemaProps) -> bool {
    schema.properties.is_some() || matches!(schema.additional_properties, Some(JSONSchemaPropsOrBool::Schema(_)))
}

/// `string`, `integer (int32)`, `[]string`, `map[string]string`, `int or string`, …
fn type_name(schema: &JSONSchemaProps) -> String {
    if schema.x_kubernetes_int_or_string == Some(true) {
        return "int or string".to_owned();
    }
    match schema.type_.as_deref() {
        Some("array") => format!("[]{}", item_schema(schema).map_or_else(|| "any".to_owned(), type_name)),
        Some("object") => match &schema.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(values)) => format!("map[string]{}", type_name(values)),
            _ => "object".to_owned(),
        },
        Some(t) => match &schema.format {
            Some(format) => format!("{t} ({format})"),
            None => t.to_owned(),
        },
        None => "any".to_owned(),
    }
}

/// The schema's bounds, enum, pattern and list semantics, in a fixed order.
fn bounds(schema: &JSONSchemaProps) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(values) = &schema.enum_ {
        let values: Vec<String> = values.iter().map(|v| code(&scalar(&v.0))).collect();
        out.push(format!("one of {}", values.join(", ")));
    }
    let exclusive = |e: Option<bool>| if e == Some(true) { " (exclusive)" } else { "" };
    if let Some(min) = schema.minimum {
        out.push(format!("min {}{}", number(min), exclusive(schema.exclusive_minimum)));
    }
    if let Some(max) = schema.maximum {
        out.push(format!("max {}{}", number(max), exclusive(schema.exclusive_maximum)));
    }
    if let Some(range) = range("length", schema.min_length, schema.max_length) {
        out.push(range);
    }
    if let Some(pattern) = &schema.pattern {
        if pattern.chars().count() <= MAX_SHOWN_PATTERN {
            out.push(format!("pattern {}", code(pattern)));
        } else {
            out.push(format!("pattern of {} characters (see `crds/yaml/`)", pattern.chars().count()));
        }
    }
    if let Some(range) = range("items", schema.min_items, schema.max_items) {
        out.push(range);
    }
    if let Some(range) = range("entries", schema.min_properties, schema.max_properties) {
        out.push(range);
    }
    match (schema.x_kubernetes_list_type.as_deref(), &schema.x_kubernetes_list_map_keys) {
        (Some("map"), Some(keys)) => out.push(format!("list type `map`, keyed by {}", code_list(keys))),
        (Some(t), _) => out.push(format!("list type `{t}`")),
        (None, _) => {}
    }
    out
}

fn range(what: &str, min: Option<i64>, max: Option<i64>) -> Option<String> {
    match (min, max) {
        (Some(min), Some(max)) => Some(format!("{what} {min}–{max}")),
        (Some(min), None) => Some(format!("{what} ≥ {min}")),
        (None, Some(max)) => Some(format!("{what} ≤ {max}")),
        (None, None) => None,
    }
}

/// `1` for 1.0, `0.5` for 0.5.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { v.to_string() }
}

/// A scalar without JSON quotes; anything else as canonical JSON.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => canonical_json(other),
    }
}

/// Compact JSON with object keys sorted, whatever `serde_json`'s map order is; strings
/// at the top level unquoted.
fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    if let Value::String(s) = v {
        return s.clone();
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// A description on one line, with `<` outside code spans escaped (GitHub would read
/// `<duration>` as an HTML tag).
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.matches('`').count() % 2 != 0 {
        return joined.replace('<', "&lt;");
    }
    joined
        .split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 0 { part.replace('<', "&lt;") } else { part.to_owned() })
        .collect::<Vec<_>>()
        .join("`")
}

/// Text in a table cell: `|` escaped (GitHub unescapes it inside code spans too).
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// A code span that survives backticks in its text, for a table cell.
fn code(text: &str) -> String {
    let fence = if text.contains('`') { "``" } else { "`" };
    let pad = if text.starts_with('`') || text.ends_with('`') { " " } else { "" };
    cell(&format!("{fence}{pad}{text}{pad}{fence}"))
}

fn code_list(items: &[String]) -> String {
    items.iter().map(|i| code(i)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn every_field_and_rule_of_the_schema_is_listed() {
        let page = markdown(&crate::v1alpha1::ProfileCapture::crd());
        for path in
            ["`spec.target.port`", "`spec.triggers[].cooldown`", "`status.lastRun.pods[].profiles[].top[].flat`"]
        {
            assert!(page.contains(path), "{path} missing");
        }
        assert!(page.contains("duration must be between 1s and 5m"));
        assert!(page.contains("| `spec.duration` | string | `30s` |"), "{page}");
    }

    #[test]
    fn cells_and_json_render_stably() {
        assert_eq!(code("a || b"), "`a \\|\\| b`");
        assert_eq!(one_line("run `@every <d>`\n  every <d>"), "run `@every <d>` every &lt;d>");
        assert_eq!(canonical_json(&serde_json::json!({"b": 1, "a": [true, "x"]})), r#"{"a":[true,"x"],"b":1}"#);
        assert_eq!(number(65535.0), "65535");
        assert_eq!(number(0.5), "0.5");
    }
}
