//! Compatibility of a new schema version with the versions before it.

use crate::{Compatibility, Schema};

/// Checks `new` against the earlier `versions` of its subject (oldest
/// first, each with its version number) under `mode`: the latest one for
/// the plain modes, all of them for the transitive ones. The error names
/// the version and the first difference that breaks compatibility.
pub fn check(mode: Compatibility, new: &Schema, versions: &[(u32, &Schema)]) -> Result<(), String> {
    if mode == Compatibility::None {
        return Ok(());
    }
    let against: &[(u32, &Schema)] = match (mode.transitive(), versions.last()) {
        (true, _) => versions,
        (false, Some(_)) => &versions[versions.len() - 1..],
        (false, None) => &[],
    };
    for (version, old) in against.iter().rev() {
        if mode.backward() {
            new.can_read(old)
                .map_err(|e| format!("{mode}: the new schema cannot read data written with version {version}: {e}"))?;
        }
        if mode.forward() {
            old.can_read(new)
                .map_err(|e| format!("{mode}: version {version} cannot read data written with the new schema: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;

    fn json(s: &str) -> Schema {
        Schema::parse(Format::Json, s).expect("schema")
    }

    const V1: &str =
        r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"],"additionalProperties":false}"#;
    const V2: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"note":{"type":"string"}},"required":["id"],"additionalProperties":false}"#;
    const V3: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"note":{"type":"string"}},"required":["id","note"],"additionalProperties":false}"#;

    #[test]
    fn modes_pick_directions_and_versions() {
        let (v1, v2, v3) = (json(V1), json(V2), json(V3));
        // An optional property added to a closed model: backward only.
        check(Compatibility::Backward, &v2, &[(1, &v1)]).unwrap();
        assert!(check(Compatibility::Forward, &v2, &[(1, &v1)]).is_err(), "v1 is closed: it refuses note");
        // A new required property: old data lacks it.
        let e = check(Compatibility::Backward, &v3, &[(1, &v1), (2, &v2)]).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
        check(Compatibility::None, &v3, &[(1, &v1)]).unwrap();
        // Transitive forms look at every version.
        check(Compatibility::Forward, &v1, &[(1, &v3)]).unwrap_err();
        check(Compatibility::Backward, &v2, &[(1, &v3), (2, &v1)]).unwrap();
        check(Compatibility::BackwardTransitive, &v2, &[(1, &v3), (2, &v1)]).unwrap();
        check(Compatibility::Full, &v2, &[(1, &v2)]).unwrap();
    }
}
