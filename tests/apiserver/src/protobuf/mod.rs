//! `application/vnd.kubernetes.protobuf` for built-in kinds: the `k8s\0` magic, the
//! `runtime.Unknown` envelope (typeMeta, raw, contentEncoding, contentType), and the kind's
//! message converted to and from the JSON the store keeps.
//!
//! The messages' fields (tag, wire type, repeated or map, message type) come from a table
//! the build script derives from the `k8s-pb` crate's generated sources; their JSON names
//! come from k8s-openapi's schemas of the same types, so no kind is converted by hand.

mod convert;
pub(crate) mod wire;

use std::{collections::HashMap, sync::LazyLock};

use serde_json::Value;

pub use convert::{decode_message, encode_message};

/// The media type kube-apiserver serves built-in kinds in, besides JSON and YAML.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix of every protobuf-encoded Kubernetes object.
pub const MAGIC: &[u8] = b"k8s\0";

/// How a field's values are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value (optional).
    Single,
    /// Any number of values, one field each (numbers may also come packed).
    Repeated,
    /// `map<string, V>`: entries with the key at 1 and the value at 2.
    Map,
}

/// A field's (or a map value's) wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// UTF-8 text.
    String,
    /// Bytes, base64 in JSON.
    Bytes,
    /// A varint 0 or 1.
    Bool,
    /// A varint, sign-extended when negative.
    Int32,
    /// A varint.
    Int64,
    /// Eight little-endian bytes.
    Double,
    /// Another message, length-delimited.
    Message,
}

/// One field of a message.
#[derive(Debug)]
pub struct Field {
    /// The field's name in snake case, as prost names it.
    pub name: &'static str,
    /// The field number.
    pub tag: u32,
    /// The wire type of a value.
    pub scalar: Scalar,
    /// Single, repeated or map.
    pub shape: Shape,
    /// For messages, the key of the message type (`apimachinery.pkg.apis.meta.v1.ObjectMeta`).
    pub message: &'static str,
    /// Whether Go's JSON leaves out this field's zero value: a non-pointer field tagged
    /// `omitempty`. A pointer field's zero is written, as the client set it.
    pub omit_zero: bool,
}

/// A message of k8s-pb, keyed by its module path and name (`api.core.v1.Pod`).
#[derive(Debug)]
pub struct Message {
    /// `api.core.v1.Pod`.
    pub name: &'static str,
    /// Whether its Go struct is in the omit-zero table (k8s.io/api and apimachinery's
    /// kinds), so `Field::omit_zero` is known for its fields.
    pub go_types: bool,
    /// Its fields, in declaration order.
    pub fields: &'static [Field],
}

include!(concat!(env!("OUT_DIR"), "/messages.rs"));

static BY_LOWER_NAME: LazyLock<HashMap<String, &'static Message>> =
    LazyLock::new(|| MESSAGES.iter().map(|m| (m.name.to_ascii_lowercase(), m)).collect());

/// A message by its key, compared case-insensitively (prost writes `APIService` as
/// `ApiService`).
pub fn message(key: &str) -> Option<&'static Message> {
    BY_LOWER_NAME.get(&key.to_ascii_lowercase()).copied()
}

/// Whether `group` is one of Kubernetes' own, whose kinds have messages: the core group,
/// the dotless groups and `*.k8s.io` (custom resources may use neither without approval).
fn kubernetes_group(group: &str) -> bool {
    group.is_empty() || !group.contains('.') || group.ends_with(".k8s.io")
}

/// The message of a kind, when it is a built-in one.
pub fn message_for(api_version: &str, kind: &str) -> Option<&'static Message> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if !kubernetes_group(group) || kind.is_empty() || version.is_empty() {
        return None;
    }
    let package = if group.is_empty() { "core" } else { group.split('.').next().unwrap_or_default() };
    // Every group version also carries meta's kinds (Status, DeleteOptions, WatchEvent).
    let meta = version == "v1";
    [
        Some(format!("api.{package}.{version}.{kind}")),
        Some(format!("apiextensions_apiserver.pkg.apis.{package}.{version}.{kind}")),
        Some(format!("kube_aggregator.pkg.apis.{package}.{version}.{kind}")),
        meta.then(|| format!("apimachinery.pkg.apis.meta.{version}.{kind}")),
    ]
    .into_iter()
    .flatten()
    .find_map(|key| message(&key))
}

/// Whether an object of this `apiVersion` and `kind` can be sent as protobuf.
pub fn encodable(object: &Value) -> bool {
    let text = |k: &str| object.get(k).and_then(Value::as_str).unwrap_or_default();
    message_for(text("apiVersion"), text("kind")).is_some()
}

/// A Kubernetes object in protobuf: the magic, then `runtime.Unknown` with the object's
/// typeMeta and its message in `raw`. `None` when the kind has no message.
pub fn encode_object(object: &Value) -> Result<Option<Vec<u8>>, String> {
    let text = |k: &str| object.get(k).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let Some(message) = message_for(api_version, kind) else { return Ok(None) };
    let raw = encode_message(message, object)?;
    let mut type_meta = Vec::new();
    wire::put_bytes(&mut type_meta, 1, api_version.as_bytes());
    wire::put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = MAGIC.to_vec();
    wire::put_bytes(&mut out, 1, &type_meta);
    wire::put_bytes(&mut out, 2, &raw);
    // contentEncoding and contentType: empty, as kube-apiserver writes them.
    wire::put_bytes(&mut out, 3, b"");
    wire::put_bytes(&mut out, 4, b"");
    Ok(Some(out))
}

/// Why a protobuf body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The envelope names a kind with no protobuf message (a custom resource).
    UnknownKind {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
    },
    /// The bytes are not a well-formed envelope or message.
    Malformed(String),
}

/// The JSON of a protobuf-encoded object, with `apiVersion` and `kind` from its envelope.
pub fn decode_object(bytes: &[u8]) -> Result<Value, DecodeError> {
    let malformed = DecodeError::Malformed;
    let body = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("the body does not start with the k8s protobuf prefix".into()))?;
    let (mut api_version, mut kind, mut raw, mut content_type) = (String::new(), String::new(), &[][..], "");
    for (tag, payload) in wire::fields(body).map_err(malformed)? {
        let wire::Payload::Bytes(bytes) = payload else { continue };
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|e| malformed(e.to_string()));
        match tag {
            1 => {
                for (tag, payload) in wire::fields(bytes).map_err(malformed)? {
                    match (tag, payload) {
                        (1, wire::Payload::Bytes(b)) => api_version = text(b)?,
                        (2, wire::Payload::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            2 => raw = bytes,
            4 => content_type = std::str::from_utf8(bytes).unwrap_or("?"),
            _ => {}
        }
    }
    if !content_type.is_empty() && !content_type.starts_with(MEDIA_TYPE) {
        return Err(malformed(format!("unsupported content type {content_type:?} inside the protobuf envelope")));
    }
    let Some(message) = message_for(&api_version, &kind) else {
        return Err(DecodeError::UnknownKind { api_version, kind });
    };
    let mut object = decode_message(message, raw).map_err(malformed)?;
    if let Value::Object(map) = &mut object {
        map.insert("apiVersion".into(), Value::String(api_version));
        map.insert("kind".into(), Value::String(kind));
    }
    Ok(object)
}

/// A watch event as kube-apiserver streams it in protobuf: a 4-byte big-endian length, then
/// `WatchEvent` (type, and the object in `raw` as an encoded object of its own).
pub fn watch_frame(event_type: &str, object: &Value) -> Result<Vec<u8>, String> {
    let encoded = encode_object(object)?.ok_or("the object has no protobuf message")?;
    let mut event = Vec::new();
    wire::put_bytes(&mut event, 1, event_type.as_bytes());
    let mut raw_extension = Vec::new();
    wire::put_bytes(&mut raw_extension, 1, &encoded);
    wire::put_bytes(&mut event, 2, &raw_extension);
    let length = u32::try_from(event.len()).map_err(|_| "watch event too large")?;
    let mut frame = length.to_be_bytes().to_vec();
    frame.extend_from_slice(&event);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use crate::registry::Registry;

    #[test]
    fn the_omit_zero_table_covers_every_served_kind_of_kubernetes_own_types() {
        // apiextensions' and kube-aggregator's types live outside k8s.io/api.
        let outside = ["apiextensions.k8s.io", "apiregistration.k8s.io"];
        let registry = Registry::default();
        let uncovered: Vec<String> = registry
            .all()
            .filter(|rt| !outside.contains(&rt.group.as_str()))
            .filter_map(|rt| super::message_for(&rt.api_version(), &rt.kind))
            .filter(|m| !m.go_types)
            .map(|m| m.name.to_owned())
            .collect();
        assert_eq!(uncovered, Vec::<String>::new(), "regenerate src/protobuf/omitzero.txt");
        let spec = super::message("api.apps.v1.DeploymentSpec").unwrap();
        let omits = |name: &str| spec.fields.iter().find(|f| f.name == name).unwrap().omit_zero;
        assert!(omits("paused") && omits("min_ready_seconds") && !omits("replicas"));
    }
}
