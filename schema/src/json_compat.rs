//! JSON Schema compatibility: a conservative rule set.
//!
//! `reader_accepts(writer, reader)` holds only when every instance valid
//! under `writer` is valid under `reader`. The rules follow the content
//! models of Confluent's JSON Schema compatibility (an *open* model accepts
//! properties it does not name, a *closed* one — `additionalProperties:
//! false` — refuses them), restricted to the keywords compared here:
//!
//! - `type`: the reader allows every type the writer allows (`number`
//!   covers `integer`); a writer without `type` needs a reader without it.
//! - `enum`: a reader enum must contain every value of a writer enum; a
//!   writer without an enum needs a reader without one.
//! - `required`: the reader requires nothing the writer does not.
//! - `properties` / `additionalProperties`: a property the reader names
//!   is compared with the writer's schema for it; if the writer does not
//!   name it, the writer must be closed (its data never has it) or its
//!   `additionalProperties` schema must satisfy the reader's. A property
//!   only the writer names must be accepted by the reader's
//!   `additionalProperties` (absent or `true` accept anything). So adding an
//!   optional property is backward compatible for a closed model and
//!   removing one for an open model, not the other way round.
//! - `items`: compared like a schema.
//! - Annotations (`title`, `description`, `default`, `examples`,
//!   `$comment`, `$schema`, `$id`) are ignored.
//! - Every other keyword (`minimum`, `pattern`, `oneOf`, `$ref`, `$defs`,
//!   …) must be the same on both sides: a change there is refused as
//!   incompatible even when it would not be, never the other way round.

use serde_json::{Map, Value};

const ANNOTATIONS: [&str; 7] = ["title", "description", "default", "examples", "$comment", "$schema", "$id"];
const COMPARED: [&str; 6] = ["type", "enum", "required", "properties", "additionalProperties", "items"];

pub fn reader_accepts(writer: &Value, reader: &Value) -> Result<(), String> {
    accepts(writer, reader, "#")
}

fn is_true(v: &Value) -> bool {
    v == &Value::Bool(true) || v.as_object().is_some_and(|o| o.keys().all(|k| ANNOTATIONS.contains(&k.as_str())))
}

fn accepts(writer: &Value, reader: &Value, at: &str) -> Result<(), String> {
    if writer == reader || is_true(reader) || writer == &Value::Bool(false) {
        return Ok(());
    }
    let empty = Map::new();
    let w = match writer {
        Value::Object(o) => o,
        Value::Bool(true) => &empty,
        _ => return Err(format!("at {at}: the writer schema is not an object")),
    };
    let Value::Object(r) = reader else {
        return Err(format!("at {at}: the reader refuses everything"));
    };
    for key in w.keys().chain(r.keys()) {
        let k = key.as_str();
        if ANNOTATIONS.contains(&k) || COMPARED.contains(&k) {
            continue;
        }
        if w.get(k) != r.get(k) {
            return Err(format!("at {at}: keyword {k:?} differs (only {} are compared)", COMPARED.join(", ")));
        }
    }
    types(w, r, at)?;
    if let Some(re) = r.get("enum") {
        let Some(we) = w.get("enum") else {
            return Err(format!("at {at}: the reader adds an enum"));
        };
        let (Some(we), Some(re)) = (we.as_array(), re.as_array()) else {
            return Err(format!("at {at}: enum is not an array"));
        };
        if let Some(missing) = we.iter().find(|v| !re.contains(v)) {
            return Err(format!("at {at}: enum value {missing} removed"));
        }
    }
    let names = |o: &Map<String, Value>, k: &str| -> Vec<String> {
        o.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let w_required = names(w, "required");
    if let Some(n) = names(r, "required").into_iter().find(|n| !w_required.contains(n)) {
        return Err(format!("at {at}: property {n:?} is newly required"));
    }
    let w_props = w.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let r_props = r.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let t = Value::Bool(true);
    let w_extra = w.get("additionalProperties").unwrap_or(&t);
    let r_extra = r.get("additionalProperties").unwrap_or(&t);
    for (name, rs) in r_props {
        let here = format!("{at}/properties/{name}");
        match w_props.get(name) {
            Some(ws) => accepts(ws, rs, &here)?,
            None => accepts(w_extra, rs, &here).map_err(|e| {
                format!("{e} (property {name:?} is new to the reader and the writer's content model allows it)")
            })?,
        }
    }
    for (name, ws) in w_props {
        if !r_props.contains_key(name) {
            accepts(ws, r_extra, &format!("{at}/properties/{name}"))
                .map_err(|e| format!("{e} (property {name:?} is gone from the reader's closed content model)"))?;
        }
    }
    accepts(w_extra, r_extra, &format!("{at}/additionalProperties"))?;
    if let Some(ri) = r.get("items") {
        accepts(w.get("items").unwrap_or(&t), ri, &format!("{at}/items"))?;
    }
    Ok(())
}

fn type_set(o: &Map<String, Value>) -> Option<Vec<&str>> {
    match o.get("type")? {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(a) => Some(a.iter().filter_map(Value::as_str).collect()),
        _ => Some(vec![]),
    }
}

fn types(w: &Map<String, Value>, r: &Map<String, Value>, at: &str) -> Result<(), String> {
    let Some(rt) = type_set(r) else { return Ok(()) };
    let Some(wt) = type_set(w) else {
        return Err(format!("at {at}: the reader restricts the type to {rt:?}"));
    };
    for t in wt {
        if !(rt.contains(&t) || (t == "integer" && rt.contains(&"number"))) {
            return Err(format!("at {at}: type {t:?} is no longer allowed (reader: {rt:?})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(w: Value, r: Value) -> bool {
        reader_accepts(&w, &r).is_ok()
    }

    #[test]
    fn content_models_decide_added_and_removed_properties() {
        let closed = json!({"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false});
        let closed_b = json!({"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}},"additionalProperties":false});
        let open = json!({"type":"object","properties":{"a":{"type":"string"}}});
        let open_b = json!({"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}}});
        assert!(ok(closed.clone(), closed_b.clone()), "closed: adding is backward");
        assert!(!ok(closed_b.clone(), closed.clone()), "closed: removing is not");
        assert!(!ok(open.clone(), open_b.clone()), "open: adding is not");
        assert!(ok(open_b, open), "open: removing is");
    }

    #[test]
    fn types_enums_required_and_other_keywords() {
        assert!(ok(json!({"type":"integer"}), json!({"type":"number"})));
        assert!(!ok(json!({"type":"number"}), json!({"type":"integer"})));
        assert!(ok(json!({"type":"string"}), json!({"type":["string","null"]})));
        assert!(ok(json!({"enum":["a"]}), json!({"enum":["a","b"]})));
        assert!(!ok(json!({"enum":["a","b"]}), json!({"enum":["a"]})));
        assert!(!ok(json!({"type":"object"}), json!({"type":"object","required":["x"]})));
        assert!(!ok(json!({"type":"string","maxLength":3}), json!({"type":"string","maxLength":4})), "conservative");
        assert!(ok(json!({"type":"string","maxLength":3,"title":"x"}), json!({"type":"string","maxLength":3})));
        assert!(ok(
            json!({"type":"array","items":{"type":"integer"}}),
            json!({"type":"array","items":{"type":"number"}})
        ));
        assert!(!ok(json!(true), json!({"type":"string"})));
        assert!(ok(json!({"type":"string"}), json!(true)));
    }
}
