//! JSON ↔ protobuf for one message, driven by the field table and the JSON schemas.
//!
//! A field's JSON name is the schema property that equals its snake-case name once case,
//! underscores and punctuation are ignored (`pod_ip` → `podIP`, `ref` → `$ref`). A message
//! field with no such property is embedded inline (Go's `json:",inline"`, as `Volume` embeds
//! `VolumeSource`): its fields are read from and written to the same JSON object. A few
//! types are written in JSON as something other than an object, and are converted here by
//! what they are (times, quantities, int-or-string, raw JSON, the JSON schema unions, and the
//! `items`-only wrappers such as `ExtraValue`).

use std::{collections::HashMap, sync::LazyLock};

use base64::Engine;
use serde_json::{Map, Number, Value};

use super::{
    Field, Message, Scalar, Shape, message,
    wire::{self, FIXED64, Payload, VARINT},
};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Property names of every schema k8s-openapi has, by the message key they correspond to
/// (lower case: `io.k8s.api.core.v1.Pod` → `api.core.v1.pod`).
static PROPERTIES: LazyLock<HashMap<String, Props>> = LazyLock::new(|| {
    crate::builtins::definitions()
        .into_iter()
        .filter_map(|(name, schema)| {
            let names = schema.get("properties")?.as_object()?.keys().cloned().collect();
            let required = crate::strings(schema.get("required"));
            let key = name.strip_prefix("io.k8s.").unwrap_or(&name).replace('-', "_").to_ascii_lowercase();
            Some((key, Props { names, required }))
        })
        .collect()
});

/// What a schema says of an object's fields.
#[derive(Debug)]
struct Props {
    names: Vec<String>,
    /// The fields Go writes even when zero (no `omitempty`).
    required: Vec<String>,
}

fn properties(message: &Message) -> Option<&'static Props> {
    PROPERTIES.get(&message.name.to_ascii_lowercase())
}

/// Whether a value read from the wire is Go's zero value of a scalar.
fn zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// Whether a zero read from the wire is left out of the JSON, as kube-apiserver's JSON of
/// the same object leaves it out. Go writes every non-pointer field to protobuf, zero or
/// not, and a pointer field whenever it is set, so `paused: false` and `replicas: 0` look
/// alike on the wire; the Go types tell them apart (`Field::omit_zero`: non-pointer and
/// `omitempty`). For a message whose Go struct is not in that table (apiextensions',
/// kube-aggregator's), an empty string is dropped unless the schema requires the field,
/// and a `0` or `false` is kept, as it may be a pointer field the client set.
fn omitted(message: &Message, field: &Field, required: bool, value: &Value) -> bool {
    if message.go_types {
        field.omit_zero && zero(value)
    } else {
        !required && value.as_str().is_some_and(str::is_empty)
    }
}

/// The types whose JSON is not an object of their fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    /// RFC 3339 with seconds.
    Time,
    /// RFC 3339 with microseconds.
    MicroTime,
    /// Go's duration text (`1h2m3s`).
    Duration,
    /// A string.
    Quantity,
    /// A number or a string.
    IntOrString,
    /// Embedded JSON (RawExtension, FieldsV1, apiextensions' JSON).
    RawJson,
    /// A schema or a list of schemas.
    SchemaOrArray,
    /// A schema or a boolean.
    SchemaOrBool,
    /// A schema or a list of strings.
    SchemaOrStrings,
    /// A message whose only field is a repeated `items`, which JSON writes as the list.
    Items,
}

fn special(message: &Message) -> Option<Special> {
    let name = message.name;
    let meta = name.strip_prefix("apimachinery.pkg.apis.meta.v1.");
    let extensions = name.strip_prefix("apiextensions_apiserver.pkg.apis.apiextensions.v1.");
    Some(match (meta, extensions, name) {
        (Some("Time"), ..) => Special::Time,
        (Some("MicroTime"), ..) => Special::MicroTime,
        (Some("Duration"), ..) => Special::Duration,
        (Some("FieldsV1"), ..) | (_, Some("Json"), _) | (.., "apimachinery.pkg.runtime.RawExtension") => {
            Special::RawJson
        }
        (_, Some("JsonSchemaPropsOrArray"), _) => Special::SchemaOrArray,
        (_, Some("JsonSchemaPropsOrBool"), _) => Special::SchemaOrBool,
        (_, Some("JsonSchemaPropsOrStringArray"), _) => Special::SchemaOrStrings,
        (.., "apimachinery.pkg.api.resource.Quantity") => Special::Quantity,
        (.., "apimachinery.pkg.util.intstr.IntOrString") => Special::IntOrString,
        _ if matches!(message.fields, [Field { name: "items", shape: Shape::Repeated, .. }])
            && properties(message).is_none() =>
        {
            Special::Items
        }
        _ => return None,
    })
}

/// Where a field's value sits in the JSON object.
enum Binding {
    Named(String),
    Inline(&'static Message),
    Skip,
}

fn normalize(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn bind(field: &Field, props: Option<&Props>) -> Result<Binding, String> {
    let Some(props) = props else {
        // A message without a schema (the lists): its JSON names are its field names.
        return Ok(Binding::Named(lower_camel(field.name)));
    };
    let wanted = normalize(field.name);
    if let Some(name) = props.names.iter().find(|p| normalize(p) == wanted) {
        return Ok(Binding::Named(name.clone()));
    }
    if field.scalar == Scalar::Message {
        let inner = lookup(field.message)?;
        if special(inner).is_none() {
            return Ok(Binding::Inline(inner));
        }
    }
    Ok(Binding::Skip)
}

fn lookup(key: &str) -> Result<&'static Message, String> {
    message(key).ok_or_else(|| format!("no protobuf message {key}"))
}

fn field_at(message: &'static Message, tag: u32) -> Result<&'static Field, String> {
    message.fields.iter().find(|f| f.tag == tag).ok_or_else(|| format!("{} has no field {tag}", message.name))
}

/// A message's wire bytes from its JSON.
pub fn encode_message(message: &'static Message, value: &Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    encode_into(message, properties(message), value, &mut out, "")?;
    Ok(out)
}

fn encode_into(
    message: &'static Message,
    props: Option<&Props>,
    value: &Value,
    out: &mut Vec<u8>,
    path: &str,
) -> Result<(), String> {
    if let Some(special) = special(message) {
        return encode_special(special, message, value, out, path);
    }
    let object = value.as_object().ok_or_else(|| format!("{path}: expected an object, got {value}"))?;
    for field in message.fields {
        match bind(field, props)? {
            Binding::Skip => {}
            Binding::Inline(inner) => {
                let mut body = Vec::new();
                encode_into(inner, props, value, &mut body, path)?;
                if !body.is_empty() {
                    wire::put_bytes(out, field.tag, &body);
                }
            }
            Binding::Named(name) => {
                let Some(v) = object.get(&name).filter(|v| !v.is_null()) else { continue };
                let path = format!("{path}.{name}");
                encode_field(field, v, out, &path)?;
            }
        }
    }
    Ok(())
}

fn encode_field(field: &Field, value: &Value, out: &mut Vec<u8>, path: &str) -> Result<(), String> {
    match field.shape {
        Shape::Single => encode_one(field.scalar, field.message, field.tag, value, out, path),
        Shape::Repeated => {
            let items = value.as_array().ok_or_else(|| format!("{path}: expected a list, got {value}"))?;
            for item in items.iter().filter(|i| !i.is_null()) {
                encode_one(field.scalar, field.message, field.tag, item, out, path)?;
            }
            Ok(())
        }
        Shape::Map => {
            let entries = value.as_object().ok_or_else(|| format!("{path}: expected a map, got {value}"))?;
            for (key, item) in entries {
                let mut entry = Vec::new();
                wire::put_bytes(&mut entry, 1, key.as_bytes());
                if !item.is_null() {
                    encode_one(field.scalar, field.message, 2, item, &mut entry, &format!("{path}[{key}]"))?;
                }
                wire::put_bytes(out, field.tag, &entry);
            }
            Ok(())
        }
    }
}

fn integer(value: &Value, path: &str) -> Result<i64, String> {
    value
        .as_i64()
        .or_else(|| value.as_u64().and_then(|n| i64::try_from(n).ok()))
        .or_else(|| value.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        .ok_or_else(|| format!("{path}: expected an integer, got {value}"))
}

fn encode_one(
    scalar: Scalar,
    message_key: &str,
    tag: u32,
    value: &Value,
    out: &mut Vec<u8>,
    path: &str,
) -> Result<(), String> {
    let text = || value.as_str().ok_or_else(|| format!("{path}: expected a string, got {value}"));
    match scalar {
        Scalar::String => wire::put_bytes(out, tag, text()?.as_bytes()),
        Scalar::Bytes => {
            let bytes = BASE64.decode(text()?).map_err(|e| format!("{path}: not base64: {e}"))?;
            wire::put_bytes(out, tag, &bytes);
        }
        Scalar::Bool => {
            let b = value.as_bool().ok_or_else(|| format!("{path}: expected a boolean, got {value}"))?;
            wire::put_key(out, tag, VARINT);
            wire::put_varint(out, u64::from(b));
        }
        Scalar::Int32 | Scalar::Int64 => {
            let n = integer(value, path)?;
            if scalar == Scalar::Int32 && i32::try_from(n).is_err() {
                return Err(format!("{path}: {n} does not fit in 32 bits"));
            }
            wire::put_key(out, tag, VARINT);
            // Negative numbers are sign-extended to 64 bits, as protobuf writes int32 too.
            wire::put_varint(out, n as u64);
        }
        Scalar::Double => {
            let f = value.as_f64().ok_or_else(|| format!("{path}: expected a number, got {value}"))?;
            wire::put_key(out, tag, FIXED64);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Scalar::Message => {
            let inner = lookup(message_key)?;
            let mut body = Vec::new();
            encode_into(inner, properties(inner), value, &mut body, path)?;
            wire::put_bytes(out, tag, &body);
        }
    }
    Ok(())
}

fn encode_special(
    special: Special,
    message: &'static Message,
    value: &Value,
    out: &mut Vec<u8>,
    path: &str,
) -> Result<(), String> {
    let text = || value.as_str().ok_or_else(|| format!("{path}: expected a string, got {value}"));
    let put = |out: &mut Vec<u8>, tag: u32, v: &Value| {
        let field = field_at(message, tag)?;
        encode_field(field, v, out, path)
    };
    match special {
        Special::Time | Special::MicroTime => {
            let t: jiff::Timestamp = text()?.parse().map_err(|e| format!("{path}: not an RFC 3339 time: {e}"))?;
            put(out, 1, &Value::from(t.as_second()))?;
            put(out, 2, &Value::from(t.subsec_nanosecond()))?;
        }
        Special::Duration => put(out, 1, &Value::from(parse_duration(text()?).map_err(|e| format!("{path}: {e}"))?))?,
        Special::Quantity => match value {
            Value::Number(n) => put(out, 1, &Value::String(n.to_string()))?,
            _ => put(out, 1, &Value::String(text()?.to_owned()))?,
        },
        Special::IntOrString => match value {
            Value::String(_) => {
                put(out, 1, &Value::from(1))?;
                put(out, 3, value)?;
            }
            _ => {
                put(out, 1, &Value::from(0))?;
                put(out, 2, value)?;
            }
        },
        Special::RawJson => {
            let raw = serde_json::to_vec(value).map_err(|e| e.to_string())?;
            put(out, 1, &Value::String(BASE64.encode(raw)))?;
        }
        Special::SchemaOrArray => match value {
            Value::Array(_) => put(out, 2, value)?,
            _ => put(out, 1, value)?,
        },
        Special::SchemaOrBool => match value {
            Value::Bool(_) => put(out, 1, value)?,
            _ => {
                put(out, 1, &Value::Bool(true))?;
                put(out, 2, value)?;
            }
        },
        Special::SchemaOrStrings => match value {
            Value::Array(_) => put(out, 2, value)?,
            _ => put(out, 1, value)?,
        },
        Special::Items => put(out, message.fields[0].tag, value)?,
    }
    Ok(())
}

/// A message's JSON from its wire bytes.
pub fn decode_message(message: &'static Message, bytes: &[u8]) -> Result<Value, String> {
    if let Some(special) = special(message) {
        return decode_special(special, message, bytes);
    }
    let mut object = Map::new();
    decode_into(message, properties(message), bytes, &mut object)?;
    Ok(Value::Object(object))
}

fn decode_into(
    message: &'static Message,
    props: Option<&Props>,
    bytes: &[u8],
    object: &mut Map<String, Value>,
) -> Result<(), String> {
    for (tag, payload) in wire::fields(bytes)? {
        // Fields this version does not know are dropped, as protobuf readers do.
        let Some(field) = message.fields.iter().find(|f| f.tag == tag) else { continue };
        match bind(field, props)? {
            Binding::Skip => {}
            Binding::Inline(inner) => decode_into(inner, props, as_bytes(payload, field)?, object)?,
            Binding::Named(name) if field.shape == Shape::Single && field.scalar != Scalar::Message => {
                let value = decode_one(field.scalar, field.message, payload, field.name)?;
                let required = props.is_some_and(|p| p.required.contains(&name));
                if !omitted(message, field, required, &value) {
                    object.insert(name, value);
                } else {
                    object.remove(&name);
                }
            }
            Binding::Named(name) => decode_field(field, payload, object.entry(name))?,
        }
    }
    Ok(())
}

fn decode_field(field: &Field, payload: Payload<'_>, slot: serde_json::map::Entry<'_>) -> Result<(), String> {
    match field.shape {
        Shape::Single => {
            let value = decode_one(field.scalar, field.message, payload, field.name)?;
            match slot {
                serde_json::map::Entry::Vacant(v) => {
                    v.insert(value);
                }
                serde_json::map::Entry::Occupied(mut o) => {
                    o.insert(value);
                }
            }
        }
        Shape::Repeated => {
            let list = slot.or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(list) = list else { return Err(format!("{}: repeated twice", field.name)) };
            match (field.scalar, payload) {
                // Packed numbers: one length-delimited run of varints.
                (Scalar::Int32 | Scalar::Int64 | Scalar::Bool, Payload::Bytes(run)) => {
                    for n in wire::packed_varints(run)? {
                        list.push(decode_one(field.scalar, "", Payload::Varint(n), field.name)?);
                    }
                }
                _ => list.push(decode_one(field.scalar, field.message, payload, field.name)?),
            }
        }
        Shape::Map => {
            let mut key = String::new();
            let mut value = None;
            for (tag, p) in wire::fields(as_bytes(payload, field)?)? {
                match tag {
                    1 => key = String::from_utf8(as_bytes(p, field)?.to_vec()).map_err(|e| e.to_string())?,
                    2 => value = Some(decode_one(field.scalar, field.message, p, field.name)?),
                    _ => {}
                }
            }
            // An entry without a value holds the type's zero value.
            let value = match value {
                Some(v) => v,
                None => decode_one(field.scalar, field.message, Payload::Bytes(&[]), field.name)?,
            };
            let map = slot.or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = map {
                map.insert(key, value);
            }
        }
    }
    Ok(())
}

fn as_bytes<'a>(payload: Payload<'a>, field: &Field) -> Result<&'a [u8], String> {
    match payload {
        Payload::Bytes(b) => Ok(b),
        other => Err(format!("{}: expected a length-delimited field, got {other:?}", field.name)),
    }
}

fn decode_one(scalar: Scalar, message_key: &str, payload: Payload<'_>, name: &str) -> Result<Value, String> {
    let wrong = || format!("{name}: wire type does not match {scalar:?}");
    Ok(match (scalar, payload) {
        (Scalar::String, Payload::Bytes(b)) => {
            Value::String(String::from_utf8(b.to_vec()).map_err(|e| format!("{name}: {e}"))?)
        }
        (Scalar::Bytes, Payload::Bytes(b)) => Value::String(BASE64.encode(b)),
        (Scalar::Bool, Payload::Varint(v)) => Value::Bool(v != 0),
        (Scalar::Int32, Payload::Varint(v)) => Value::from(i64::from(v as i32)),
        (Scalar::Int64, Payload::Varint(v)) => Value::from(v as i64),
        (Scalar::Double, Payload::Fixed64(v)) => {
            let f = f64::from_bits(v);
            // Go's JSON writes a whole float64 without a fraction (`1`, not `1.0`).
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                Value::from(f as i64)
            } else {
                Number::from_f64(f).map_or(Value::Null, Value::Number)
            }
        }
        (Scalar::Message, Payload::Bytes(b)) => decode_message(lookup(message_key)?, b)?,
        _ => return Err(wrong()),
    })
}

fn decode_special(special: Special, message: &'static Message, bytes: &[u8]) -> Result<Value, String> {
    let mut fields = Map::new();
    for (tag, payload) in wire::fields(bytes)? {
        let field = field_at(message, tag)?;
        decode_field(field, payload, fields.entry(tag.to_string()))?;
    }
    let at = |tag: u32| fields.get(&tag.to_string());
    let number = |tag: u32| at(tag).and_then(Value::as_i64).unwrap_or(0);
    Ok(match special {
        // Go writes a zero time as an empty message, and its JSON as null.
        Special::Time | Special::MicroTime if bytes.is_empty() => Value::Null,
        Special::Time | Special::MicroTime => {
            let nanos = if special == Special::Time { 0 } else { number(2) };
            let t = jiff::Timestamp::new(number(1), i32::try_from(nanos).unwrap_or(0)).map_err(|e| e.to_string())?;
            let format = if special == Special::Time { "%Y-%m-%dT%H:%M:%SZ" } else { "%Y-%m-%dT%H:%M:%S%.6fZ" };
            Value::String(t.strftime(format).to_string())
        }
        Special::Duration => Value::String(format_duration(number(1))),
        Special::Quantity => at(1).cloned().unwrap_or_else(|| Value::String(String::new())),
        Special::IntOrString => {
            if number(1) == 1 {
                at(3).cloned().unwrap_or_else(|| Value::String(String::new()))
            } else {
                Value::from(number(2))
            }
        }
        Special::RawJson => {
            let raw = at(1).and_then(Value::as_str).map(|b| BASE64.decode(b)).transpose().map_err(|e| e.to_string())?;
            match raw.as_deref() {
                None | Some([]) => Value::Null,
                Some(raw) if raw.starts_with(super::MAGIC) => {
                    super::decode_object(raw).map_err(|e| format!("{e:?}"))?
                }
                Some(raw) => serde_json::from_slice(raw).map_err(|e| format!("embedded JSON: {e}"))?,
            }
        }
        Special::SchemaOrArray | Special::SchemaOrStrings => {
            at(2).cloned().or_else(|| at(1).cloned()).unwrap_or(Value::Null)
        }
        Special::SchemaOrBool => at(2).cloned().unwrap_or_else(|| Value::Bool(at(1) == Some(&Value::Bool(true)))),
        Special::Items => at(message.fields[0].tag).cloned().unwrap_or_else(|| Value::Array(Vec::new())),
    })
}

/// Nanoseconds from Go's duration text (`1h2m3.5s`, `300ms`, `-1.5h`).
fn parse_duration(text: &str) -> Result<i64, String> {
    let bad = || format!("invalid duration {text:?}");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    let nanos = total.round() as i64;
    Ok(if negative { -nanos } else { nanos })
}

/// Go's `time.Duration.String()`.
fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let fraction = |value: u64, unit: u64| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            whole.to_string()
        } else {
            let digits = unit.ilog10() as usize;
            format!("{whole}.{:0digits$}", rest).trim_end_matches('0').to_owned()
        }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", fraction(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", fraction(n, 1_000_000));
    }
    let hours = n / 3_600_000_000_000;
    let minutes = n % 3_600_000_000_000 / 60_000_000_000;
    let seconds = fraction(n % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print_as_go_does() {
        for (text, nanos) in
            [("0s", 0), ("1h0m0s", 3_600_000_000_000), ("1m30s", 90_000_000_000), ("1.5s", 1_500_000_000)]
        {
            assert_eq!(parse_duration(text), Ok(nanos), "{text}");
            assert_eq!(format_duration(nanos), text);
        }
        assert_eq!(format_duration(300_000_000), "300ms");
        assert_eq!(parse_duration("2h45m"), Ok(9_900_000_000_000));
        assert!(parse_duration("5 minutes").is_err());
    }
}
