//! The schema registry the controller group replicates: subjects, their
//! versions, schemas by global id, and each subject's compatibility.
//!
//! The state machine stores and numbers; it never parses a schema. The
//! controller leader parses a new version and checks its compatibility
//! with the versions it saw, then proposes it together with what it
//! checked against ([`RegisterSchema::checked`]); applying refuses it as
//! stale if the subject changed in between, so two concurrent
//! registrations cannot both pass a check made against the same past.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The language of a schema (the same names as `replog_schema::Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SchemaFormat {
    Json,
    Avro,
    Protobuf,
}

/// How a subject's new versions must relate to the earlier ones (the same
/// names as `replog_schema::Compatibility`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SchemaCompatibility {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaRegistry {
    pub subjects: BTreeMap<String, Subject>,
    /// Every schema ever registered, by global id. Kept after its versions
    /// are deleted, so that records written with it can still be read.
    pub schemas: BTreeMap<u32, StoredSchema>,
    /// The last id handed out (ids start at 1 and are never reused).
    pub last_id: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// Live versions, oldest first.
    pub versions: Vec<SubjectVersion>,
    /// The last version number handed out in this subject (never reused).
    pub last_version: u32,
    /// `None`: the registry default, [`SchemaCompatibility::Backward`].
    pub compatibility: Option<SchemaCompatibility>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectVersion {
    pub version: u32,
    pub id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSchema {
    pub format: SchemaFormat,
    pub text: String,
}

/// A new version, checked by the controller leader before it proposes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterSchema {
    pub subject: String,
    pub format: SchemaFormat,
    pub text: String,
    /// The subject's live versions and compatibility the leader checked
    /// the schema against.
    pub checked: (Vec<SubjectVersion>, SchemaCompatibility),
}

/// What applying a schema command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchemaResult {
    /// The version holding the schema: new, or the one that already held
    /// the same text and format.
    Registered {
        id: u32,
        version: u32,
        new: bool,
    },
    /// The subject changed since the check; check again.
    Stale,
    Done,
    UnknownSubject(String),
    UnknownVersion {
        subject: String,
        version: u32,
    },
}

impl Subject {
    pub fn compatibility(&self) -> SchemaCompatibility {
        self.compatibility.unwrap_or_default()
    }

    pub fn latest(&self) -> Option<SubjectVersion> {
        self.versions.last().copied()
    }

    pub fn version(&self, version: u32) -> Option<SubjectVersion> {
        self.versions.iter().copied().find(|v| v.version == version)
    }

    /// Whether `id` is one of the subject's live versions.
    pub fn holds(&self, id: u32) -> bool {
        self.versions.iter().any(|v| v.id == id)
    }
}

impl SchemaRegistry {
    /// The subject as a registration checks it: its live versions and compatibility.
    pub fn check_point(&self, subject: &str) -> (Vec<SubjectVersion>, SchemaCompatibility) {
        match self.subjects.get(subject) {
            Some(s) => (s.versions.clone(), s.compatibility()),
            None => (Vec::new(), SchemaCompatibility::default()),
        }
    }

    /// The live version of `subject` holding exactly this schema, if any.
    pub fn find(&self, subject: &str, format: SchemaFormat, text: &str) -> Option<SubjectVersion> {
        let s = self.subjects.get(subject)?;
        s.versions
            .iter()
            .copied()
            .find(|v| self.schemas.get(&v.id).is_some_and(|x| x.format == format && x.text == text))
    }

    pub fn register(&mut self, cmd: RegisterSchema) -> SchemaResult {
        if let Some(v) = self.find(&cmd.subject, cmd.format, &cmd.text) {
            return SchemaResult::Registered { id: v.id, version: v.version, new: false };
        }
        if self.check_point(&cmd.subject) != cmd.checked {
            return SchemaResult::Stale;
        }
        // The same schema under another subject keeps its global id.
        let existing =
            self.schemas.iter().find(|(_, s)| s.format == cmd.format && s.text == cmd.text).map(|(id, _)| *id);
        let id = match existing {
            Some(id) => id,
            None => {
                self.last_id += 1;
                self.schemas.insert(self.last_id, StoredSchema { format: cmd.format, text: cmd.text });
                self.last_id
            }
        };
        let s = self.subjects.entry(cmd.subject).or_default();
        s.last_version += 1;
        s.versions.push(SubjectVersion { version: s.last_version, id });
        SchemaResult::Registered { id, version: s.last_version, new: true }
    }

    /// Sets (or with `None` clears) a subject's compatibility; a subject
    /// without versions may be configured before its first one.
    pub fn set_compatibility(&mut self, subject: String, compatibility: Option<SchemaCompatibility>) -> SchemaResult {
        self.subjects.entry(subject).or_default().compatibility = compatibility;
        SchemaResult::Done
    }

    /// Deletes one version, or with `None` the whole subject. The schemas
    /// stay readable by id.
    pub fn delete(&mut self, subject: String, version: Option<u32>) -> SchemaResult {
        let Some(s) = self.subjects.get_mut(&subject) else {
            return SchemaResult::UnknownSubject(subject);
        };
        match version {
            None => {
                self.subjects.remove(&subject);
            }
            Some(v) => {
                let before = s.versions.len();
                s.versions.retain(|x| x.version != v);
                if s.versions.len() == before {
                    return SchemaResult::UnknownVersion { subject, version: v };
                }
            }
        }
        SchemaResult::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(r: &SchemaRegistry, subject: &str, text: &str) -> RegisterSchema {
        RegisterSchema {
            subject: subject.into(),
            format: SchemaFormat::Json,
            text: text.into(),
            checked: r.check_point(subject),
        }
    }

    #[test]
    fn versions_ids_staleness_and_deletes() {
        let mut r = SchemaRegistry::default();
        let c = reg(&r, "a", "{}");
        assert_eq!(r.register(c.clone()), SchemaResult::Registered { id: 1, version: 1, new: true });
        // The same text again: the same version, even with a stale check point.
        assert_eq!(r.register(c.clone()), SchemaResult::Registered { id: 1, version: 1, new: false });
        let stale = RegisterSchema { text: "true".into(), ..c };
        assert_eq!(r.register(stale), SchemaResult::Stale);
        let c2 = reg(&r, "a", "true");
        assert_eq!(r.register(c2), SchemaResult::Registered { id: 2, version: 2, new: true });
        // Another subject with a known schema shares its id.
        let b = reg(&r, "b", "{}");
        assert_eq!(r.register(b), SchemaResult::Registered { id: 1, version: 1, new: true });
        assert_eq!(r.delete("a".into(), Some(1)), SchemaResult::Done);
        assert!(!r.subjects["a"].holds(1) && r.subjects["b"].holds(1) && r.schemas.contains_key(&1));
        assert_eq!(r.delete("a".into(), Some(1)), SchemaResult::UnknownVersion { subject: "a".into(), version: 1 });
        // Version numbers are not reused after a delete.
        let c3 = reg(&r, "a", "{}");
        assert_eq!(r.register(c3), SchemaResult::Registered { id: 1, version: 3, new: true });
        assert_eq!(r.delete("a".into(), None), SchemaResult::Done);
        assert_eq!(r.delete("a".into(), None), SchemaResult::UnknownSubject("a".into()));
        r.set_compatibility("z".into(), Some(SchemaCompatibility::None));
        assert_eq!(r.check_point("z"), (vec![], SchemaCompatibility::None));
    }
}
