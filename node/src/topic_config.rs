//! Topic settings as users write them (`retention.ms=86400000`), checked
//! and turned into the [`TopicConfig`] the controller replicates.

use std::collections::{BTreeMap, HashMap};

use replog_raft_store::controller::{ClusterMeta, TopicConfig};

use crate::error::{NodeError, Result};

pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const RETENTION_CONSUMED: &str = "retention.consumed";
pub const SCHEMA_SUBJECT: &str = "schema.subject";

/// Every setting a topic takes, with what it means, for messages and docs.
pub const KEYS: [(&str, &str); 4] = [
    (RETENTION_MS, "release batches whose newest record is older than this many milliseconds (1 ..= 2^53; -1: keep)"),
    (RETENTION_BYTES, "keep at most this many bytes of batches per partition (1 ..= 2^53; -1: no limit)"),
    (
        RETENTION_CONSUMED,
        "true: release what every consumer group has committed past (nothing while no group reads the topic)",
    ),
    (
        SCHEMA_SUBJECT,
        "a registered schema subject: every record must carry the id of one of its versions and validate against it",
    ),
];

/// Largest time or size a setting takes (2^53, about 285,000 years in ms
/// or 8 PiB in bytes): beyond it a value is a typo, not a wish.
const MAX_VALUE: i64 = 1 << 53;

fn invalid(key: &str, reason: impl Into<String>) -> NodeError {
    NodeError::InvalidConfig { key: key.to_string(), reason: reason.into() }
}

/// A positive count within range, or `None` for -1 (no rule).
fn limit(key: &str, value: &str) -> Result<Option<i64>> {
    let v: i64 = value.trim().parse().map_err(|_| invalid(key, format!("{value:?} is not an integer")))?;
    match v {
        -1 => Ok(None),
        1..=MAX_VALUE => Ok(Some(v)),
        _ => Err(invalid(key, format!("{v} is out of range (1 ..= {MAX_VALUE}, or -1 for none)"))),
    }
}

/// `base` with `set` applied and `delete` removed; unknown keys and values
/// out of range are refused, naming the key.
pub fn apply(base: &TopicConfig, set: &HashMap<String, String>, delete: &[String]) -> Result<TopicConfig> {
    let mut c = base.clone();
    for key in delete {
        match key.as_str() {
            RETENTION_MS => c.retention_ms = None,
            RETENTION_BYTES => c.retention_bytes = None,
            RETENTION_CONSUMED => c.retention_consumed = false,
            SCHEMA_SUBJECT => c.schema_subject = None,
            _ => return Err(unknown(key)),
        }
    }
    // In key order, so that the first bad key reported is always the same.
    let set: BTreeMap<_, _> = set.iter().collect();
    for (key, value) in set {
        match key.as_str() {
            RETENTION_MS => c.retention_ms = limit(key, value)?,
            RETENTION_BYTES => c.retention_bytes = limit(key, value)?.map(|v| v as u64),
            RETENTION_CONSUMED => {
                c.retention_consumed = match value.trim() {
                    "true" => true,
                    "false" => false,
                    other => return Err(invalid(key, format!("{other:?} is not true or false"))),
                }
            }
            SCHEMA_SUBJECT => {
                let v = value.trim();
                if v.is_empty() || v.len() > 255 {
                    return Err(invalid(key, "a subject name has 1 to 255 bytes"));
                }
                c.schema_subject = Some(v.to_string());
            }
            _ => return Err(unknown(key)),
        }
    }
    Ok(c)
}

fn unknown(key: &str) -> NodeError {
    let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    invalid(key, format!("unknown setting; topics take {}", known.join(", ")))
}

/// Refuses a `schema.subject` that names no subject with a live version:
/// every produce to the topic would fail. Checked on the controller leader.
pub fn check_subject(meta: &ClusterMeta, c: &TopicConfig) -> Result<()> {
    match &c.schema_subject {
        Some(s) if meta.schemas.subjects.get(s).is_none_or(|x| x.versions.is_empty()) => {
            Err(invalid(SCHEMA_SUBJECT, format!("subject {s:?} has no registered version")))
        }
        _ => Ok(()),
    }
}

/// The settings that differ from the defaults, as users write them.
pub fn render(c: &TopicConfig) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(ms) = c.retention_ms {
        out.insert(RETENTION_MS.to_string(), ms.to_string());
    }
    if let Some(b) = c.retention_bytes {
        out.insert(RETENTION_BYTES.to_string(), b.to_string());
    }
    if c.retention_consumed {
        out.insert(RETENTION_CONSUMED.to_string(), "true".to_string());
    }
    if let Some(s) = &c.schema_subject {
        out.insert(SCHEMA_SUBJECT.to_string(), s.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn settings_parse_render_and_delete() {
        let c = apply(
            &TopicConfig::default(),
            &set(&[("retention.ms", "60000"), ("retention.bytes", "1048576"), ("retention.consumed", "true")]),
            &[],
        )
        .unwrap();
        assert_eq!(
            c,
            TopicConfig {
                retention_ms: Some(60_000),
                retention_bytes: Some(1 << 20),
                retention_consumed: true,
                ..TopicConfig::default()
            }
        );
        assert_eq!(apply(&TopicConfig::default(), &render(&c), &[]).unwrap(), c);
        let c2 = apply(&c, &set(&[("retention.ms", "-1")]), &["retention.bytes".into()]).unwrap();
        assert_eq!(c2, TopicConfig { retention_consumed: true, ..TopicConfig::default() });
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (k, v) in [
            ("retention.ms", "0"),
            ("retention.ms", "-2"),
            ("retention.ms", "abc"),
            ("retention.bytes", "9007199254740993"),
            ("retention.consumed", "yes"),
            ("retention.hours", "1"),
        ] {
            match apply(&TopicConfig::default(), &set(&[(k, v)]), &[]) {
                Err(NodeError::InvalidConfig { key, .. }) => assert_eq!(key, k),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
        assert!(matches!(
            apply(&TopicConfig::default(), &HashMap::new(), &["nope".into()]),
            Err(NodeError::InvalidConfig { .. })
        ));
    }
}
