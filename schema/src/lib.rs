//! Schemas for replog records, shared by the broker and the SDK.
//!
//! - [`Schema`]: a schema text parsed and compiled once — JSON Schema
//!   (`jsonschema`), Avro (`apache-avro`) or Protobuf (`protox` compiles the
//!   `.proto` text, `prost-reflect` decodes against it) — and
//!   [`Schema::validate`], which checks a record's payload against it.
//! - [`compat`]: whether a new version may follow the versions before it
//!   under a subject's [`Compatibility`].
//! - [`wire`]: the prefix every record of a schema-bound topic carries (magic
//!   byte 0, the 4-byte big-endian schema id; for Protobuf also the message
//!   indexes), as in Confluent's wire format.

pub mod compat;
mod json_compat;
mod protobuf;
pub mod wire;

use std::fmt;
use std::str::FromStr;

pub use apache_avro;
pub use prost_reflect;

/// Longest schema text the registry takes. Schemas are replicated in the
/// controller group and kept in full by every node.
pub const MAX_SCHEMA_BYTES: usize = 256 << 10;

/// Largest single allocation the Avro decoder makes for one length it
/// reads (a string, bytes, or an array's item count). The library's default
/// is 512 MiB, which a hostile record could claim; records are at most a
/// few MiB.
pub const MAX_AVRO_ALLOCATION_BYTES: usize = 16 << 20;

fn avro_limits() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION_BYTES);
    });
}

/// The file name a Protobuf schema's text is compiled under.
pub const PROTO_FILE_NAME: &str = "schema.proto";

/// The language of a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Avro,
    Protobuf,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Json, Format::Avro, Format::Protobuf];

    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Avro => "AVRO",
            Format::Protobuf => "PROTOBUF",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s.to_ascii_uppercase().as_str() {
            "JSON" | "JSONSCHEMA" | "JSON_SCHEMA" => Ok(Format::Json),
            "AVRO" => Ok(Format::Avro),
            "PROTOBUF" | "PROTO" => Ok(Format::Protobuf),
            _ => Err(format!("unknown schema type {s:?}; expected json, avro or protobuf")),
        }
    }
}

/// Which earlier versions of a subject a new version must agree with, and how.
///
/// Backward: the new schema can read data written with the earlier one
/// (upgrade consumers first). Forward: the earlier schema can read data
/// written with the new one (upgrade producers first). Full: both. The
/// plain forms check against the latest version only, the transitive forms
/// against every version still registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compatibility {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Compatibility {
    pub const ALL: [Compatibility; 7] = [
        Compatibility::None,
        Compatibility::Backward,
        Compatibility::BackwardTransitive,
        Compatibility::Forward,
        Compatibility::ForwardTransitive,
        Compatibility::Full,
        Compatibility::FullTransitive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    pub fn transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive | Compatibility::ForwardTransitive | Compatibility::FullTransitive
        )
    }

    /// The new schema must read the old schema's data.
    pub fn backward(self) -> bool {
        matches!(
            self,
            Compatibility::Backward
                | Compatibility::BackwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        )
    }

    /// The old schema must read the new schema's data.
    pub fn forward(self) -> bool {
        matches!(
            self,
            Compatibility::Forward
                | Compatibility::ForwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        )
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compatibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Compatibility, String> {
        let up = s.to_ascii_uppercase().replace('-', "_");
        Compatibility::ALL.into_iter().find(|c| c.name() == up).ok_or_else(|| {
            let names: Vec<&str> = Compatibility::ALL.iter().map(|c| c.name()).collect();
            format!("unknown compatibility {s:?}; expected one of {}", names.join(", "))
        })
    }
}

/// Why a schema text was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("malformed {format} schema: {reason}")]
    Malformed { format: Format, reason: String },
    #[error("schema text of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

/// A schema compiled for validation and compatibility checks. Building one
/// costs far more than using it: callers keep them (by schema id).
pub struct Schema {
    format: Format,
    kind: Kind,
}

enum Kind {
    Json { doc: serde_json::Value, validator: jsonschema::Validator },
    Avro(apache_avro::Schema),
    Protobuf(protobuf::ProtoSchema),
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema").field("format", &self.format).finish_non_exhaustive()
    }
}

impl Schema {
    /// Parses and compiles `text`. JSON Schema `$ref`s are resolved only
    /// within the document: nothing is fetched.
    pub fn parse(format: Format, text: &str) -> Result<Schema, SchemaError> {
        if text.len() > MAX_SCHEMA_BYTES {
            return Err(SchemaError::TooLarge { size: text.len(), limit: MAX_SCHEMA_BYTES });
        }
        let malformed = |reason: String| SchemaError::Malformed { format, reason };
        let kind = match format {
            Format::Json => {
                let doc: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| malformed(format!("not JSON: {e}")))?;
                if !(doc.is_object() || doc.is_boolean()) {
                    return Err(malformed("a JSON Schema is an object or a boolean".into()));
                }
                let validator = jsonschema::validator_for(&doc).map_err(|e| malformed(e.to_string()))?;
                Kind::Json { doc, validator }
            }
            Format::Avro => Kind::Avro(apache_avro::Schema::parse_str(text).map_err(|e| malformed(e.to_string()))?),
            Format::Protobuf => Kind::Protobuf(protobuf::ProtoSchema::compile(text).map_err(malformed)?),
        };
        Ok(Schema { format, kind })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Checks a record payload written under this schema: `body` is the
    /// value after the 5-byte [`wire`] prefix. The error says why it does
    /// not decode or validate.
    pub fn validate(&self, body: &[u8]) -> Result<(), String> {
        match &self.kind {
            Kind::Json { validator, .. } => {
                let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
                validator.validate(&v).map_err(|e| {
                    let at = e.instance_path().to_string();
                    if at.is_empty() { e.to_string() } else { format!("at {at}: {e}") }
                })
            }
            Kind::Avro(schema) => {
                avro_limits();
                let mut cursor = std::io::Cursor::new(body);
                let v = apache_avro::from_avro_datum(schema, &mut cursor, None)
                    .map_err(|e| format!("does not decode as Avro: {e}"))?;
                // The decoder reads a string cut short as null rather than
                // failing: the datum must also fit the schema.
                if !v.validate(schema) {
                    return Err("does not decode as Avro: the datum ends early or does not fit the schema".into());
                }
                let left = body.len() as u64 - cursor.position();
                if left > 0 {
                    return Err(format!("{left} bytes left over after the Avro datum"));
                }
                Ok(())
            }
            Kind::Protobuf(p) => p.validate(body),
        }
    }

    /// The parsed JSON Schema document (JSON schemas only).
    pub fn json(&self) -> Option<&serde_json::Value> {
        match &self.kind {
            Kind::Json { doc, .. } => Some(doc),
            _ => None,
        }
    }

    /// The Avro schema (Avro schemas only), for encoding and for reading
    /// data written under another version.
    pub fn avro(&self) -> Option<&apache_avro::Schema> {
        match &self.kind {
            Kind::Avro(s) => Some(s),
            _ => None,
        }
    }

    /// The Protobuf message named `full_name` (Protobuf schemas only) and
    /// its message indexes, which records of it carry after the schema id.
    pub fn protobuf_message(&self, full_name: &str) -> Option<(prost_reflect::MessageDescriptor, Vec<i32>)> {
        match &self.kind {
            Kind::Protobuf(p) => p.message_by_name(full_name),
            _ => None,
        }
    }

    /// The payload (after the 5-byte prefix) for a value written as JSON
    /// text: JSON as it is; Avro through the schema (JSON numbers, strings,
    /// arrays and objects as the matching Avro types; a union takes the
    /// first branch the value fits); Protobuf in the JSON mapping of the
    /// file's first message. Not validated: [`Schema::validate`] does that.
    pub fn encode_json_text(&self, text: &str) -> Result<Vec<u8>, String> {
        match &self.kind {
            Kind::Json { .. } => Ok(text.as_bytes().to_vec()),
            Kind::Avro(schema) => {
                let json: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
                let v = apache_avro::types::Value::from(json)
                    .resolve(schema)
                    .map_err(|e| format!("does not fit the Avro schema: {e}"))?;
                apache_avro::to_avro_datum(schema, v).map_err(|e| format!("does not encode as Avro: {e}"))
            }
            Kind::Protobuf(p) => p.encode_json_text(text),
        }
    }

    /// Whether this schema can read every datum `writer` accepts; the error
    /// names the first difference that breaks it.
    pub fn can_read(&self, writer: &Schema) -> Result<(), String> {
        match (&self.kind, &writer.kind) {
            (Kind::Json { doc: r, .. }, Kind::Json { doc: w, .. }) => json_compat::reader_accepts(w, r),
            (Kind::Avro(r), Kind::Avro(w)) => {
                apache_avro::schema_compatibility::SchemaCompatibility::can_read(w, r).map_err(|e| e.to_string())
            }
            (Kind::Protobuf(r), Kind::Protobuf(w)) => protobuf::reader_accepts(w, r),
            _ => Err(format!("a {} schema cannot follow a {} schema", self.format, writer.format)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payloads_are_validated() {
        let s = Schema::parse(
            Format::Json,
            r#"{"type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string","minLength":1}},"required":["id","name"],"additionalProperties":false}"#,
        )
        .unwrap();
        s.validate(br#"{"id":7,"name":"x"}"#).unwrap();
        let e = s.validate(br#"{"id":"seven","name":"x"}"#).unwrap_err();
        assert!(e.contains("/id"), "{e}");
        assert!(s.validate(br#"{"id":7,"name":""}"#).is_err());
        assert!(s.validate(b"{").is_err());
    }

    #[test]
    fn avro_payloads_cut_short_or_left_over_are_refused() {
        let s = Schema::parse(
            Format::Avro,
            r#"{"type":"record","name":"U","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"}]}"#,
        )
        .unwrap();
        s.validate(&[0x02, 0x02, b'a']).unwrap();
        assert!(s.validate(&[0x02, 0x10, b'a']).is_err(), "string runs past the end");
        assert!(s.validate(&[0x02, 0x02, b'a', 0]).is_err(), "a byte left over");
        assert!(s.validate(&[0x02, 0xfe, 0xff, 0xff, 0xff, 0x0f]).is_err(), "a length past the allocation limit");
        assert_eq!(s.encode_json_text(r#"{"id":1,"name":"a"}"#).unwrap(), [0x02, 0x02, b'a']);
        assert!(s.encode_json_text(r#"{"id":"x","name":"a"}"#).is_err());
    }
}
