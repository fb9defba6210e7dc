//! Schemas in the SDK: the registry's calls ([`Client::register_schema`]
//! and friends), a caching [`SchemaRegistry`], codecs per format, and
//! typed producers and consumers that register or look up their schema,
//! validate every value before sending it, and decode on receipt.
//!
//! Records carry their schema id in Confluent's wire format: byte 0, the
//! id as 4 bytes big-endian, then (Protobuf only) the message indexes. See
//! docs/schemas.md.
//!
//! [`Client::register_schema`]: crate::Client::register_schema

mod codec;
mod registry;

use std::sync::Arc;

use bytes::Bytes;
pub use codec::{AvroCodec, Codec, JsonCodec, ProtobufCodec};
pub use registry::{RegisteredSchema, SchemaCheck, SchemaInfo, SchemaRegistry, SubjectInfo, compile};
use replog_proto::codes::ErrorCode;
pub use replog_schema::{Compatibility, Format, Schema, wire};
use tokio::sync::OnceCell;

use crate::consumer::ConsumedRecord;
use crate::error::{Error, Result};
use crate::group::GroupConsumer;
use crate::producer::Producer;

/// Values to payloads with the prefix, and back.
pub struct Serializer<C: Codec> {
    registry: SchemaRegistry,
    subject: String,
    codec: C,
    /// This codec's schema, compiled: the reader schema for decoding.
    reader: Arc<Schema>,
    writer: OnceCell<(u32, Arc<Schema>)>,
}

impl<C: Codec> Serializer<C> {
    /// Compiles the codec's schema; registering waits for the first value.
    pub fn new(registry: SchemaRegistry, subject: &str, codec: C) -> Result<Serializer<C>> {
        let reader = Arc::new(compile(codec.format(), codec.schema())?);
        Ok(Serializer { registry, subject: subject.to_string(), codec, reader, writer: OnceCell::new() })
    }

    /// The id values are written with: the codec's schema registered in
    /// the subject (or found there).
    pub async fn schema_id(&self) -> Result<u32> {
        Ok(self.writer().await?.0)
    }

    async fn writer(&self) -> Result<&(u32, Arc<Schema>)> {
        self.writer
            .get_or_try_init(|| self.registry.register(&self.subject, self.codec.format(), self.codec.schema()))
            .await
    }

    /// The record value for `value`: encoded, validated against the schema
    /// (INVALID_RECORD if it does not fit, and nothing is sent), prefixed.
    pub async fn serialize(&self, value: &C::Value) -> Result<Bytes> {
        let (id, schema) = self.writer().await?;
        let body = self.codec.encode(value, schema)?;
        schema.validate(&body).map_err(|message| Error::Schema { code: ErrorCode::InvalidRecord, message })?;
        let mut out = Vec::with_capacity(wire::PREFIX_LEN + body.len());
        out.extend_from_slice(&wire::prefix(*id));
        out.extend_from_slice(&body);
        Ok(out.into())
    }

    /// A record value written under any version (its id is looked up once).
    pub async fn deserialize(&self, value: &[u8]) -> Result<C::Value> {
        let (id, body) =
            wire::split(value).map_err(|message| Error::Schema { code: ErrorCode::InvalidRecord, message })?;
        let writer = self.registry.schema(id).await?;
        self.codec.decode(body, &writer, &self.reader)
    }
}

/// A producer of typed values to schema-bound topics.
///
/// ```no_run
/// # async fn f(client: replog_client::Client) -> replog_client::Result<()> {
/// use replog_client::schema::{JsonCodec, SchemaRegistry, TypedProducer};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order { id: u64 }
/// let schema = r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#;
/// let producer = replog_client::Producer::new(client.clone(), Default::default());
/// let orders = TypedProducer::new(producer, SchemaRegistry::new(client), "orders-value", JsonCodec::<Order>::new(schema))?;
/// orders.send("orders", None, &Order { id: 7 }).await?;
/// # Ok(()) }
/// ```
pub struct TypedProducer<C: Codec> {
    producer: Producer,
    serializer: Serializer<C>,
}

impl<C: Codec> TypedProducer<C> {
    pub fn new(producer: Producer, registry: SchemaRegistry, subject: &str, codec: C) -> Result<TypedProducer<C>> {
        Ok(TypedProducer { producer, serializer: Serializer::new(registry, subject, codec)? })
    }

    /// Validates, sends and waits for the record's partition and offset.
    pub async fn send(&self, topic: &str, key: Option<Bytes>, value: &C::Value) -> Result<(u32, u64)> {
        let v = self.serializer.serialize(value).await?;
        self.producer.send(topic, key, v).await
    }

    pub fn serializer(&self) -> &Serializer<C> {
        &self.serializer
    }

    pub fn producer(&self) -> &Producer {
        &self.producer
    }
}

/// A group consumer whose records come decoded.
pub struct TypedConsumer<C: Codec> {
    consumer: GroupConsumer,
    serializer: Serializer<C>,
}

impl<C: Codec> TypedConsumer<C> {
    pub fn new(consumer: GroupConsumer, registry: SchemaRegistry, subject: &str, codec: C) -> Result<TypedConsumer<C>> {
        Ok(TypedConsumer { consumer, serializer: Serializer::new(registry, subject, codec)? })
    }

    /// The next records, each with its value decoded (or why it was not).
    pub async fn poll(&mut self) -> Result<Vec<(ConsumedRecord, Result<C::Value>)>> {
        let records = self.consumer.poll().await?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let v = self.serializer.deserialize(&r.value).await;
            out.push((r, v));
        }
        Ok(out)
    }

    pub fn serializer(&self) -> &Serializer<C> {
        &self.serializer
    }

    /// The group consumer, to subscribe, commit or close.
    pub fn consumer(&mut self) -> &mut GroupConsumer {
        &mut self.consumer
    }

    pub fn into_inner(self) -> GroupConsumer {
        self.consumer
    }
}
