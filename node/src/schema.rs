//! Schemas at the node: compiled schemas cached by id, the registry's
//! checks before a version is proposed, and the validation of every record
//! produced to a topic bound to a subject (`schema.subject`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use replog_proto::batch;
use replog_proto::pb::SchemaType;
use replog_raft_store::controller::ClusterMeta;
use replog_raft_store::registry::{SchemaCompatibility, SchemaFormat};
use replog_schema::{Compatibility, Format, Schema, SchemaError, wire};

use crate::controller::Controller;
use crate::error::{NodeError, Result};

/// How long a produce naming a schema id this node has not applied yet
/// waits for the controller's metadata to catch up: a schema registered at
/// the controller leader reaches the other nodes a moment later, and a
/// producer may use it at once.
const CATCH_UP: Duration = Duration::from_secs(2);

pub fn format_of(t: SchemaType) -> SchemaFormat {
    match t {
        SchemaType::Json => SchemaFormat::Json,
        SchemaType::Avro => SchemaFormat::Avro,
        SchemaType::Protobuf => SchemaFormat::Protobuf,
    }
}

pub fn schema_type(f: SchemaFormat) -> SchemaType {
    match f {
        SchemaFormat::Json => SchemaType::Json,
        SchemaFormat::Avro => SchemaType::Avro,
        SchemaFormat::Protobuf => SchemaType::Protobuf,
    }
}

fn format(f: SchemaFormat) -> Format {
    match f {
        SchemaFormat::Json => Format::Json,
        SchemaFormat::Avro => Format::Avro,
        SchemaFormat::Protobuf => Format::Protobuf,
    }
}

pub fn compatibility(c: SchemaCompatibility) -> Compatibility {
    match c {
        SchemaCompatibility::None => Compatibility::None,
        SchemaCompatibility::Backward => Compatibility::Backward,
        SchemaCompatibility::BackwardTransitive => Compatibility::BackwardTransitive,
        SchemaCompatibility::Forward => Compatibility::Forward,
        SchemaCompatibility::ForwardTransitive => Compatibility::ForwardTransitive,
        SchemaCompatibility::Full => Compatibility::Full,
        SchemaCompatibility::FullTransitive => Compatibility::FullTransitive,
    }
}

/// A compatibility name as users write it (`backward`, `FULL_TRANSITIVE`).
pub fn parse_compatibility(s: &str) -> Result<SchemaCompatibility> {
    let c: Compatibility = s.parse().map_err(NodeError::InvalidSchema)?;
    Ok(match c {
        Compatibility::None => SchemaCompatibility::None,
        Compatibility::Backward => SchemaCompatibility::Backward,
        Compatibility::BackwardTransitive => SchemaCompatibility::BackwardTransitive,
        Compatibility::Forward => SchemaCompatibility::Forward,
        Compatibility::ForwardTransitive => SchemaCompatibility::ForwardTransitive,
        Compatibility::Full => SchemaCompatibility::Full,
        Compatibility::FullTransitive => SchemaCompatibility::FullTransitive,
    })
}

/// Parses a schema text as a request brings it.
pub fn parse(f: SchemaFormat, text: &str) -> Result<Schema> {
    Schema::parse(format(f), text).map_err(|e| match e {
        SchemaError::TooLarge { size, limit } => NodeError::SchemaTooLarge { size, limit },
        e @ SchemaError::Malformed { .. } => NodeError::InvalidSchema(e.to_string()),
    })
}

/// Compiled schemas by id. An id's schema never changes, so entries are
/// never stale; there are as many as schemas registered, at most.
#[derive(Default)]
pub struct SchemaCache {
    compiled: Mutex<HashMap<u32, Arc<Schema>>>,
}

impl SchemaCache {
    /// The compiled schema of `id`, compiling it on first use.
    pub fn get(&self, meta: &ClusterMeta, id: u32) -> Result<Option<Arc<Schema>>> {
        if let Some(s) = self.compiled.lock().expect("schema cache lock").get(&id) {
            return Ok(Some(s.clone()));
        }
        let Some(stored) = meta.schemas.schemas.get(&id) else { return Ok(None) };
        // Registered schemas parsed when they were registered; failing now
        // would be a bug (or a library change), not the client's fault.
        let s = Arc::new(
            parse(stored.format, &stored.text)
                .map_err(|e| NodeError::Internal(format!("registered schema {id} no longer parses: {e}")))?,
        );
        self.compiled.lock().expect("schema cache lock").insert(id, s.clone());
        Ok(Some(s))
    }

    /// Checks every record of a produced batch against `subject`: each
    /// value carries the prefix with the id of a live version of the
    /// subject, and its payload validates. The first bad record refuses
    /// the batch, naming its index.
    pub async fn validate_batch(
        &self,
        controller: &Controller,
        subject: &str,
        batch: &Bytes,
        max_uncompressed_bytes: usize,
    ) -> Result<()> {
        let (_, records) =
            batch::decode_with(batch, max_uncompressed_bytes).map_err(|e| NodeError::CorruptBatch(e.to_string()))?;
        let mut meta = controller.meta();
        // Records of a batch mostly share one schema.
        let mut last: Option<(u32, Arc<Schema>)> = None;
        for (index, r) in records.iter().enumerate() {
            let (id, body) = wire::split(&r.value).map_err(|reason| NodeError::InvalidRecord { index, reason })?;
            let schema = match &last {
                Some((i, s)) if *i == id => s.clone(),
                _ => {
                    if !holds(&meta, subject, id) {
                        meta = catch_up(controller, |m| holds(m, subject, id)).await;
                    }
                    if !holds(&meta, subject, id) {
                        return Err(if meta.schemas.schemas.contains_key(&id) {
                            NodeError::SchemaNotInSubject { index, id, subject: subject.to_string() }
                        } else {
                            NodeError::UnknownSchemaId { id, index: Some(index) }
                        });
                    }
                    let s = self.get(&meta, id)?.ok_or(NodeError::UnknownSchemaId { id, index: Some(index) })?;
                    last = Some((id, s.clone()));
                    s
                }
            };
            schema.validate(body).map_err(|reason| NodeError::InvalidRecord { index, reason })?;
        }
        Ok(())
    }
}

fn holds(meta: &ClusterMeta, subject: &str, id: u32) -> bool {
    meta.schemas.subjects.get(subject).is_some_and(|s| s.holds(id))
}

/// The metadata once `ok` holds for it, or as it stands after [`CATCH_UP`].
pub async fn catch_up(controller: &Controller, ok: impl Fn(&ClusterMeta) -> bool) -> Arc<ClusterMeta> {
    let mut watch = controller.watch();
    let _ = tokio::time::timeout(CATCH_UP, watch.wait_for(|m| ok(m))).await;
    controller.meta()
}
