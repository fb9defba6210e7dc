//! Byte-level corruption of well-formed inputs, driven by the fuzzer's
//! bytes: what a flipped bit, a cut-off message or a hostile length prefix
//! does to an otherwise valid encoding. Random bytes alone rarely get past
//! a checksum or a type tag; a valid message with a few of these applied
//! reaches the decoder's deeper checks.

use arbitrary::{Result, Unstructured};

/// Values that break length and count handling: zero, one, the edges of
/// each integer width, and sizes far beyond any input.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
];

/// Applies up to eight random edits to `data`.
pub fn mutate(u: &mut Unstructured, data: &mut Vec<u8>) -> Result<()> {
    let edits = u.int_in_range(0..=8)?;
    for _ in 0..edits {
        let at = if data.is_empty() { 0 } else { u.choose_index(data.len())? };
        match u.int_in_range(0..=7)? {
            0 => {
                if let Some(b) = data.get_mut(at) {
                    *b ^= 1 << u.int_in_range(0..=7)?;
                }
            }
            1 => {
                if let Some(b) = data.get_mut(at) {
                    *b = u.arbitrary()?;
                }
            }
            // Length prefixes: bincode writes u64 little-endian, the batch
            // format u32/i32 big-endian.
            2 => overwrite(data, at, &u.choose(INTERESTING)?.to_le_bytes()),
            3 => overwrite(data, at, &(*u.choose(INTERESTING)? as u32).to_be_bytes()),
            4 => data.truncate(at),
            5 => {
                let n = u.int_in_range(1..=16)?;
                let bytes = u.bytes(n)?;
                data.splice(at..at, bytes.iter().copied());
            }
            6 => {
                let end = (at + u.int_in_range(1..=64)?).min(data.len());
                let chunk = data[at..end].to_vec();
                data.splice(at..at, chunk);
            }
            _ => {
                let end = (at + u.int_in_range(1..=64)?).min(data.len());
                data.drain(at..end);
            }
        }
    }
    Ok(())
}

fn overwrite(data: &mut [u8], at: usize, bytes: &[u8]) {
    let end = (at + bytes.len()).min(data.len());
    if at < end {
        data[at..end].copy_from_slice(&bytes[..end - at]);
    }
}
