//! The prefix of a record value on a schema-bound topic: magic byte 0 and
//! the schema id as 4 bytes big-endian (Confluent's wire format). Protobuf
//! values then carry the message indexes: a zig-zag varint count and that
//! many zig-zag varint indexes into the file's (nested) message types, with
//! the single byte 0 standing for `[0]`, the file's first message.

/// The first byte of a framed value.
pub const MAGIC: u8 = 0;
/// Magic byte and schema id.
pub const PREFIX_LEN: usize = 5;

/// The 5-byte prefix for schema `id`.
pub fn prefix(id: u32) -> [u8; PREFIX_LEN] {
    let b = id.to_be_bytes();
    [MAGIC, b[0], b[1], b[2], b[3]]
}

/// The schema id and the rest of a framed value.
pub fn split(value: &[u8]) -> Result<(u32, &[u8]), String> {
    if value.len() < PREFIX_LEN {
        return Err(format!("{} bytes: too short for the 5-byte schema prefix", value.len()));
    }
    if value[0] != MAGIC {
        return Err(format!("first byte is {}, not the schema prefix's magic byte 0", value[0]));
    }
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    Ok((id, &value[PREFIX_LEN..]))
}

/// At most this many message indexes (nesting depth) are read.
const MAX_INDEXES: i64 = 64;

fn read_varint(buf: &mut &[u8]) -> Result<i64, String> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let Some((&b, rest)) = buf.split_first() else {
            return Err("message indexes end early".into());
        };
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    Err("message index varint too long".into())
}

fn write_varint(v: i64, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// Protobuf message indexes at the start of `body`, and the message bytes.
pub fn read_message_indexes(body: &[u8]) -> Result<(Vec<i32>, &[u8]), String> {
    let mut buf = body;
    let n = read_varint(&mut buf)?;
    if n == 0 {
        return Ok((vec![0], buf));
    }
    if !(1..=MAX_INDEXES).contains(&n) {
        return Err(format!("{n} message indexes (1 ..= {MAX_INDEXES} expected)"));
    }
    let mut v = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let i = read_varint(&mut buf)?;
        v.push(i32::try_from(i).map_err(|_| format!("message index {i} out of range"))?);
    }
    Ok((v, buf))
}

/// Writes message indexes as [`read_message_indexes`] reads them.
pub fn write_message_indexes(indexes: &[i32], out: &mut Vec<u8>) {
    if indexes == [0] {
        out.push(0);
        return;
    }
    write_varint(indexes.len() as i64, out);
    for &i in indexes {
        write_varint(i64::from(i), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_indexes_round_trip() {
        let mut v = prefix(0x01020304).to_vec();
        write_message_indexes(&[2, 0, 70], &mut v);
        v.extend_from_slice(b"msg");
        let (id, body) = split(&v).unwrap();
        assert_eq!(id, 0x01020304);
        assert_eq!(read_message_indexes(body).unwrap(), (vec![2, 0, 70], &b"msg"[..]));
        let mut first = Vec::new();
        write_message_indexes(&[0], &mut first);
        assert_eq!(first, [0]);
        assert_eq!(read_message_indexes(&[0, 9]).unwrap(), (vec![0], &[9u8][..]));
        assert!(split(&[1, 0, 0, 0, 1]).is_err());
        assert!(split(&[0, 0]).is_err());
        assert!(read_message_indexes(&[0xff; 12]).is_err());
        assert!(read_message_indexes(&[0x7e]).is_err());
    }
}
