//! Protobuf schemas: a `.proto` text compiled by `protox`, records decoded
//! by `prost-reflect`, and the compatibility rules.
//!
//! Compatibility is wire compatibility, checked on the compiled descriptors:
//! every message the writer defines exists in the reader under the same
//! name (top-level messages also at the same position, since records name
//! their message by index); a field number both define has a kind of the
//! same wire group (`int32 uint32 int64 uint64 bool` and enums; `sint32
//! sint64`; `fixed32 sfixed32`; `fixed64 sfixed64`; `string bytes`;
//! messages of the same name; `float`; `double`) and the same cardinality
//! (singular, repeated, map). Fields added or removed are compatible: a
//! reader skips fields it does not know and defaults those it does not get.

use prost_reflect::{DescriptorPool, FileDescriptor, Kind, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::PROTO_FILE_NAME;
use crate::wire;

pub struct ProtoSchema {
    file: FileDescriptor,
}

struct Source(String);

impl FileResolver for Source {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == PROTO_FILE_NAME {
            File::from_source(name, &self.0)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

impl ProtoSchema {
    pub fn compile(text: &str) -> Result<ProtoSchema, String> {
        let mut resolver = ChainFileResolver::new();
        resolver.add(Source(text.to_string()));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true);
        compiler.open_file(PROTO_FILE_NAME).map_err(|e| e.to_string())?;
        let pool: DescriptorPool = compiler.descriptor_pool();
        let file = pool.get_file_by_name(PROTO_FILE_NAME).ok_or("the compiled pool lacks the schema file")?;
        if file.messages().len() == 0 {
            return Err("the file defines no message".into());
        }
        Ok(ProtoSchema { file })
    }

    /// The message a record's message indexes name.
    pub fn message_at(&self, indexes: &[i32]) -> Result<MessageDescriptor, String> {
        let mut it = indexes.iter();
        let first = *it.next().ok_or("no message index")?;
        let mut m = usize::try_from(first).ok().and_then(|i| self.file.messages().nth(i));
        for &i in it {
            m = m.and_then(|m| usize::try_from(i).ok().and_then(|i| m.child_messages().nth(i)));
        }
        m.ok_or_else(|| format!("message indexes {indexes:?} name no message of the schema"))
    }

    pub fn message_by_name(&self, full_name: &str) -> Option<(MessageDescriptor, Vec<i32>)> {
        fn find(ms: Vec<MessageDescriptor>, name: &str, path: &mut Vec<i32>) -> Option<MessageDescriptor> {
            for (i, m) in ms.into_iter().enumerate() {
                path.push(i as i32);
                if m.full_name() == name {
                    return Some(m);
                }
                if let Some(found) = find(m.child_messages().collect(), name, path) {
                    return Some(found);
                }
                path.pop();
            }
            None
        }
        let mut path = Vec::new();
        find(self.file.messages().collect(), full_name, &mut path).map(|m| (m, path))
    }

    /// The first message, from its JSON mapping, with its message indexes.
    pub fn encode_json_text(&self, text: &str) -> Result<Vec<u8>, String> {
        use prost::Message;
        let desc = self.message_at(&[0])?;
        let mut de = serde_json::Deserializer::from_str(text);
        let m = prost_reflect::DynamicMessage::deserialize(desc.clone(), &mut de)
            .map_err(|e| format!("not a {} in JSON: {e}", desc.full_name()))?;
        let mut out = vec![0];
        m.encode(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    pub fn validate(&self, body: &[u8]) -> Result<(), String> {
        let (indexes, msg) = wire::read_message_indexes(body)?;
        let desc = self.message_at(&indexes)?;
        prost_reflect::DynamicMessage::decode(desc.clone(), msg)
            .map(|_| ())
            .map_err(|e| format!("does not decode as {}: {e}", desc.full_name()))
    }
}

fn all_messages(file: &FileDescriptor) -> Vec<MessageDescriptor> {
    let mut out = Vec::new();
    let mut stack: Vec<MessageDescriptor> = file.messages().collect();
    while let Some(m) = stack.pop() {
        stack.extend(m.child_messages());
        out.push(m);
    }
    out
}

/// The wire group of a kind: kinds in one group read each other's bytes.
fn group(k: &Kind) -> String {
    match k {
        Kind::Int32 | Kind::Uint32 | Kind::Int64 | Kind::Uint64 | Kind::Bool | Kind::Enum(_) => "varint".into(),
        Kind::Sint32 | Kind::Sint64 => "zigzag".into(),
        Kind::Fixed32 | Kind::Sfixed32 => "fixed32".into(),
        Kind::Fixed64 | Kind::Sfixed64 => "fixed64".into(),
        Kind::Float => "float".into(),
        Kind::Double => "double".into(),
        Kind::String | Kind::Bytes => "bytes".into(),
        Kind::Message(m) => format!("message {}", m.full_name()),
    }
}

pub fn reader_accepts(writer: &ProtoSchema, reader: &ProtoSchema) -> Result<(), String> {
    for (i, w) in writer.file.messages().enumerate() {
        match reader.file.messages().nth(i) {
            Some(r) if r.full_name() == w.full_name() => {}
            _ => return Err(format!("top-level message {} is no longer at index {i}", w.full_name())),
        }
    }
    for w in all_messages(&writer.file) {
        let r = reader
            .file
            .parent_pool()
            .get_message_by_name(w.full_name())
            .ok_or_else(|| format!("message {} removed", w.full_name()))?;
        for wf in w.fields() {
            let Some(rf) = r.get_field(wf.number()) else { continue };
            let (wk, rk) = (wf.kind(), rf.kind());
            if group(&wk) != group(&rk) {
                return Err(format!(
                    "field {} = {} of {}: {:?} cannot be read as {:?}",
                    wf.name(),
                    wf.number(),
                    w.full_name(),
                    group(&wk),
                    group(&rk)
                ));
            }
            if wf.is_list() != rf.is_list() || wf.is_map() != rf.is_map() {
                return Err(format!("field {} = {} of {}: cardinality changed", wf.name(), wf.number(), w.full_name()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "syntax = \"proto3\"; package t; message User { int64 id = 1; string name = 2; }";
    const V2: &str =
        "syntax = \"proto3\"; package t; message User { int64 id = 1; string name = 2; string email = 3; }";
    const V3: &str = "syntax = \"proto3\"; package t; message User { int64 id = 1; double name = 2; }";

    #[test]
    fn compiles_validates_and_compares() {
        let (v1, v2, v3) =
            (ProtoSchema::compile(V1).unwrap(), ProtoSchema::compile(V2).unwrap(), ProtoSchema::compile(V3).unwrap());
        reader_accepts(&v1, &v2).unwrap();
        reader_accepts(&v2, &v1).unwrap();
        let e = reader_accepts(&v1, &v3).unwrap_err();
        assert!(e.contains("name = 2"), "{e}");
        assert!(ProtoSchema::compile("message {").is_err());
        assert!(ProtoSchema::compile("syntax = \"proto3\";").is_err());
        // [0] then id=7 (field 1 varint), name="x".
        v1.validate(&[0, 0x08, 7, 0x12, 1, b'x']).unwrap();
        assert!(v1.validate(&[0, 0x12, 9, b'x']).is_err(), "length past the end");
        assert!(v1.validate(&[2, 4, 0x08, 7]).is_err(), "index 2 names nothing");
        assert_eq!(v1.message_by_name("t.User").unwrap().1, vec![0]);
        let body = v1.encode_json_text(r#"{"id":"7","name":"x"}"#).unwrap();
        assert_eq!(body, [0, 0x08, 7, 0x12, 1, b'x']);
        assert!(v1.encode_json_text(r#"{"nope":1}"#).is_err());
    }
}
