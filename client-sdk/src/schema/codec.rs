//! How values become record payloads and back, per schema format: serde
//! types as JSON ([`JsonCodec`]) or Avro ([`AvroCodec`]), prost messages
//! as Protobuf ([`ProtobufCodec`]).

use std::marker::PhantomData;

use replog_proto::codes::ErrorCode;
use replog_schema::apache_avro;
use replog_schema::{Format, Schema, wire};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

fn invalid(message: String) -> Error {
    Error::Schema { code: ErrorCode::InvalidRecord, message }
}

/// A value type and the schema it is written with.
pub trait Codec: Send + Sync + 'static {
    type Value: Send + Sync;
    fn format(&self) -> Format;
    /// The schema text values are written with (registered under the
    /// producer's subject).
    fn schema(&self) -> &str;
    /// The payload after the 5-byte prefix, written with `schema` (this
    /// codec's schema, compiled).
    fn encode(&self, value: &Self::Value, schema: &Schema) -> Result<Vec<u8>>;
    /// A payload written with `writer` (any version of the subject), read
    /// as this codec's value; `reader` is this codec's schema, compiled.
    fn decode(&self, body: &[u8], writer: &Schema, reader: &Schema) -> Result<Self::Value>;
}

/// Serde types as JSON, checked against a JSON Schema. Reading a value
/// written under an older version relies on serde: fields added later are
/// `Option` or `#[serde(default)]`.
pub struct JsonCodec<T> {
    schema: String,
    _t: PhantomData<fn() -> T>,
}

impl<T> JsonCodec<T> {
    pub fn new(schema: impl Into<String>) -> JsonCodec<T> {
        JsonCodec { schema: schema.into(), _t: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Codec for JsonCodec<T> {
    type Value = T;
    fn format(&self) -> Format {
        Format::Json
    }
    fn schema(&self) -> &str {
        &self.schema
    }
    fn encode(&self, value: &T, _: &Schema) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| invalid(format!("does not serialize as JSON: {e}")))
    }
    fn decode(&self, body: &[u8], _: &Schema, _: &Schema) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| invalid(format!("does not deserialize: {e}")))
    }
}

/// Serde types as Avro. A value written under another version is read
/// through Avro's schema resolution (writer's schema to this codec's).
pub struct AvroCodec<T> {
    schema: String,
    _t: PhantomData<fn() -> T>,
}

impl<T> AvroCodec<T> {
    pub fn new(schema: impl Into<String>) -> AvroCodec<T> {
        AvroCodec { schema: schema.into(), _t: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Codec for AvroCodec<T> {
    type Value = T;
    fn format(&self) -> Format {
        Format::Avro
    }
    fn schema(&self) -> &str {
        &self.schema
    }
    fn encode(&self, value: &T, schema: &Schema) -> Result<Vec<u8>> {
        let s = schema.avro().ok_or_else(|| invalid("not an Avro schema".into()))?;
        let v = apache_avro::to_value(value)
            .and_then(|v| v.resolve(s))
            .map_err(|e| invalid(format!("does not fit the Avro schema: {e}")))?;
        apache_avro::to_avro_datum(s, v).map_err(|e| invalid(format!("does not encode as Avro: {e}")))
    }
    fn decode(&self, body: &[u8], writer: &Schema, reader: &Schema) -> Result<T> {
        let (Some(w), Some(r)) = (writer.avro(), reader.avro()) else {
            return Err(invalid(format!("written with a {} schema, read as Avro", writer.format())));
        };
        let v = apache_avro::from_avro_datum(w, &mut &body[..], Some(r))
            .map_err(|e| invalid(format!("does not decode as Avro: {e}")))?;
        apache_avro::from_value(&v).map_err(|e| invalid(format!("does not deserialize: {e}")))
    }
}

/// prost messages as Protobuf. `message` is the full name of the message
/// type in the schema (`package.Name`); records carry its message indexes.
pub struct ProtobufCodec<M> {
    schema: String,
    message: String,
    _m: PhantomData<fn() -> M>,
}

impl<M> ProtobufCodec<M> {
    pub fn new(schema: impl Into<String>, message: impl Into<String>) -> ProtobufCodec<M> {
        ProtobufCodec { schema: schema.into(), message: message.into(), _m: PhantomData }
    }
}

impl<M: prost::Message + Default + 'static> Codec for ProtobufCodec<M> {
    type Value = M;
    fn format(&self) -> Format {
        Format::Protobuf
    }
    fn schema(&self) -> &str {
        &self.schema
    }
    fn encode(&self, value: &M, schema: &Schema) -> Result<Vec<u8>> {
        let (_, indexes) = schema
            .protobuf_message(&self.message)
            .ok_or_else(|| invalid(format!("the schema has no message {}", self.message)))?;
        let mut out = Vec::with_capacity(value.encoded_len() + 2);
        wire::write_message_indexes(&indexes, &mut out);
        value.encode(&mut out).map_err(|e| invalid(e.to_string()))?;
        Ok(out)
    }
    fn decode(&self, body: &[u8], _: &Schema, _: &Schema) -> Result<M> {
        let (_, msg) = wire::read_message_indexes(body).map_err(invalid)?;
        M::decode(msg).map_err(|e| invalid(format!("does not decode as {}: {e}", self.message)))
    }
}
