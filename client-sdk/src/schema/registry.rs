//! The schema registry's RPCs as methods of [`Client`], and
//! [`SchemaRegistry`]: schemas by id and registrations, cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use replog_proto::codes::ErrorCode;
use replog_proto::pb;
use replog_schema::{Compatibility, Format, Schema};

use crate::client::{Call, Client};
use crate::error::{Error, Result};

/// A version as [`Client::register_schema`] answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RegisteredSchema {
    /// The global schema id records carry.
    pub id: u32,
    pub version: u32,
    /// False when the subject already held this schema.
    pub created: bool,
}

/// A schema as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaInfo {
    pub id: u32,
    #[serde(serialize_with = "format_name")]
    pub format: Format,
    pub schema: String,
    /// Set when looked up by subject.
    pub subject: Option<String>,
    pub version: Option<u32>,
}

/// A subject's versions, oldest first, and its compatibility.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubjectInfo {
    pub subject: String,
    pub compatibility: String,
    /// `(version, id)`.
    pub versions: Vec<(u32, u32)>,
}

/// What [`Client::check_schema`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaCheck {
    pub compatible: bool,
    pub reason: String,
    pub compatibility: String,
}

fn format_name<S: serde::Serializer>(f: &Format, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(f.name())
}

pub(crate) fn schema_type(f: Format) -> pb::SchemaType {
    match f {
        Format::Json => pb::SchemaType::Json,
        Format::Avro => pb::SchemaType::Avro,
        Format::Protobuf => pb::SchemaType::Protobuf,
    }
}

fn format_of(t: i32) -> Result<Format> {
    match pb::SchemaType::try_from(t) {
        Ok(pb::SchemaType::Json) => Ok(Format::Json),
        Ok(pb::SchemaType::Avro) => Ok(Format::Avro),
        Ok(pb::SchemaType::Protobuf) => Ok(Format::Protobuf),
        Err(_) => Err(Error::Corrupt(format!("unknown schema type {t} from the broker"))),
    }
}

impl Client {
    /// Registers `schema` as the next version of `subject`, or finds the
    /// version that already holds it. Refused with INVALID_SCHEMA when it
    /// does not parse and INCOMPATIBLE_SCHEMA when it breaks the subject's
    /// compatibility rule.
    pub async fn register_schema(&self, subject: &str, format: Format, schema: &str) -> Result<RegisteredSchema> {
        let req = pb::RegisterSchemaRequest {
            subject: subject.to_string(),
            schema_type: schema_type(format) as i32,
            schema: schema.to_string(),
        };
        let r = self.any_node(Call::Write, |mut c, _| {
            let req = req.clone();
            async move { c.register_schema(req).await }
        });
        let r = r.await?;
        Ok(RegisteredSchema { id: r.id, version: r.version, created: r.created })
    }

    /// Whether `schema` would be taken as the next version of `subject`.
    pub async fn check_schema(&self, subject: &str, format: Format, schema: &str) -> Result<SchemaCheck> {
        let req = pb::CheckSchemaRequest {
            subject: subject.to_string(),
            schema_type: schema_type(format) as i32,
            schema: schema.to_string(),
        };
        let r = self
            .any_node(Call::Read, |mut c, _| {
                let req = req.clone();
                async move { c.check_schema(req).await }
            })
            .await?;
        Ok(SchemaCheck { compatible: r.compatible, reason: r.reason, compatibility: r.compatibility })
    }

    /// The schema with global id `id` (UNKNOWN_SCHEMA_ID if there is none).
    pub async fn schema_by_id(&self, id: u32) -> Result<SchemaInfo> {
        self.get_schema(pb::GetSchemaRequest { id, ..Default::default() }).await
    }

    /// A version of `subject`; `None`: the latest.
    pub async fn schema_version(&self, subject: &str, version: Option<u32>) -> Result<SchemaInfo> {
        let req = pb::GetSchemaRequest { id: 0, subject: subject.to_string(), version: version.unwrap_or(0) };
        self.get_schema(req).await
    }

    async fn get_schema(&self, req: pb::GetSchemaRequest) -> Result<SchemaInfo> {
        let r = self
            .any_node(Call::Read, |mut c, _| {
                let req = req.clone();
                async move { c.get_schema(req).await }
            })
            .await?;
        let s = r.schema.ok_or_else(|| Error::Corrupt("GetSchema answered without a schema".into()))?;
        Ok(SchemaInfo {
            id: s.id,
            format: format_of(s.schema_type)?,
            schema: s.schema,
            subject: (!s.subject.is_empty()).then_some(s.subject),
            version: (s.version != 0).then_some(s.version),
        })
    }

    /// Every subject, or with `Some` one of them.
    pub async fn list_schemas(&self, subject: Option<&str>) -> Result<Vec<SubjectInfo>> {
        let req = pb::ListSchemasRequest { subject: subject.unwrap_or_default().to_string() };
        let r = self
            .any_node(Call::Read, |mut c, _| {
                let req = req.clone();
                async move { c.list_schemas(req).await }
            })
            .await?;
        Ok(r.subjects
            .into_iter()
            .map(|s| SubjectInfo {
                subject: s.subject,
                compatibility: s.compatibility,
                versions: s.versions.into_iter().map(|v| (v.version, v.id)).collect(),
            })
            .collect())
    }

    /// Deletes one version of `subject`, or with `None` the subject. The
    /// schemas stay readable by id.
    pub async fn delete_schema(&self, subject: &str, version: Option<u32>) -> Result<()> {
        let req = pb::DeleteSchemaRequest { subject: subject.to_string(), version: version.unwrap_or(0) };
        self.any_node(Call::Write, |mut c, _| {
            let req = req.clone();
            async move { c.delete_schema(req).await }
        })
        .await?;
        Ok(())
    }

    /// Sets a subject's compatibility; `None`: back to the default (BACKWARD).
    pub async fn set_schema_compatibility(&self, subject: &str, c: Option<Compatibility>) -> Result<()> {
        let req = pb::SetSchemaCompatibilityRequest {
            subject: subject.to_string(),
            compatibility: c.map(|c| c.name().to_string()).unwrap_or_default(),
        };
        self.any_node(Call::Write, |mut c, _| {
            let req = req.clone();
            async move { c.set_schema_compatibility(req).await }
        })
        .await?;
        Ok(())
    }
}

/// Schemas by id and this client's registrations, cached: an id's schema
/// never changes, so a lookup costs one request per id for the life of the
/// registry handle. Cheap to clone (shared cache).
#[derive(Clone)]
pub struct SchemaRegistry {
    client: Client,
    cache: Arc<Mutex<Cache>>,
}

#[derive(Default)]
struct Cache {
    by_id: HashMap<u32, Arc<Schema>>,
    registered: HashMap<(String, Format, String), u32>,
}

impl SchemaRegistry {
    pub fn new(client: Client) -> SchemaRegistry {
        SchemaRegistry { client, cache: Arc::default() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The id of `schema` in `subject`, registering it if the subject does
    /// not hold it yet (register-or-lookup), with the compiled schema.
    pub async fn register(&self, subject: &str, format: Format, schema: &str) -> Result<(u32, Arc<Schema>)> {
        let key = (subject.to_string(), format, schema.to_string());
        let known = self.cache.lock().expect("schema cache").registered.get(&key).copied();
        let id = match known {
            Some(id) => id,
            None => {
                let compiled = Arc::new(compile(format, schema)?);
                let r = self.client.register_schema(subject, format, schema).await?;
                let mut c = self.cache.lock().expect("schema cache");
                c.registered.insert(key, r.id);
                c.by_id.entry(r.id).or_insert(compiled);
                r.id
            }
        };
        Ok((id, self.schema(id).await?))
    }

    /// The compiled schema of `id`, fetched once.
    pub async fn schema(&self, id: u32) -> Result<Arc<Schema>> {
        if let Some(s) = self.cache.lock().expect("schema cache").by_id.get(&id) {
            return Ok(s.clone());
        }
        let info = self.client.schema_by_id(id).await?;
        let s = Arc::new(compile(info.format, &info.schema)?);
        self.cache.lock().expect("schema cache").by_id.insert(id, s.clone());
        Ok(s)
    }
}

/// Compiles a schema in the SDK; a bad one is INVALID_SCHEMA (or
/// SCHEMA_TOO_LARGE), as the broker would answer.
pub fn compile(format: Format, schema: &str) -> Result<Schema> {
    Schema::parse(format, schema).map_err(|e| Error::Schema {
        code: match e {
            replog_schema::SchemaError::TooLarge { .. } => ErrorCode::SchemaTooLarge,
            _ => ErrorCode::InvalidSchema,
        },
        message: e.to_string(),
    })
}
