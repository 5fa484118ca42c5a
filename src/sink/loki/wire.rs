//! The part of the protobuf wire format a Loki push request needs: varints
//! and length-delimited fields, appended to a `Vec<u8>`.
//!
//! A nested message is preceded by its length, so it must be known before
//! the message is written. Encoding children into temporary buffers and
//! copying them into their parent would copy every byte once per level of
//! nesting; instead the encoder computes each message's size first with the
//! `*_len` functions here (pure arithmetic), then writes every byte once, in
//! order, into a buffer reserved to the exact total.

/// Wire type of varint fields (`int32`, `int64`, `uint64`, `bool`, enums).
pub const VARINT: u32 = 0;
/// Wire type of length-delimited fields (strings, bytes, messages).
pub const LEN: u32 = 2;

/// Bytes of `v` as a varint: 1 to 10.
/// Read one varint off the front of `buf`.
pub fn get_varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

pub fn varint_len(v: u64) -> usize {
    // Each byte carries 7 bits; a zero still takes one byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(field: u32, wire_type: u32) -> u64 {
    u64::from(field) << 3 | u64::from(wire_type)
}

/// Bytes of a field's key (field number and wire type).
pub fn key_len(field: u32) -> usize {
    varint_len(key(field, 0))
}

pub fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u32) {
    put_varint(out, key(field, wire_type));
}

/// Bytes of a length-delimited field whose payload is `len` bytes.
pub fn len_field_len(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

/// Key and length of a length-delimited field; the caller writes exactly
/// `len` payload bytes next.
pub fn put_len_header(out: &mut Vec<u8>, field: u32, len: usize) {
    put_key(out, field, LEN);
    put_varint(out, len as u64);
}

/// A whole length-delimited field (a string or bytes).
pub fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_len_header(out, field, bytes.len());
    out.extend_from_slice(bytes);
}

/// Bytes of a varint field. Signed values are cast to `u64` first (two's
/// complement: a negative `int32` or `int64` takes 10 bytes).
pub fn varint_field_len(field: u32, v: u64) -> usize {
    key_len(field) + varint_len(v)
}

pub fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_key(out, field, VARINT);
    put_varint(out, v);
}

/// Fields of one message as (number, length-delimited bytes); the push
/// messages the agent writes have no other kind.
pub fn fields(mut buf: &[u8]) -> Result<Vec<(u64, &[u8])>, String> {
    let varint = get_varint;
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        if key & 7 != 2 {
            return Err(format!("wire type {} where a length-delimited field was expected", key & 7));
        }
        let n = usize::try_from(varint(&mut buf)?).map_err(|e| e.to_string())?;
        if n > buf.len() {
            return Err(format!("length {n} beyond the {} bytes left", buf.len()));
        }
        let (v, rest) = buf.split_at(n);
        buf = rest;
        out.push((key >> 3, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        assert_eq!(out.len(), varint_len(v), "varint_len({v})");
        out
    }

    #[test]
    fn varints_of_the_protobuf_docs() {
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(1), [0x01]);
        assert_eq!(varint(127), [0x7f]);
        assert_eq!(varint(128), [0x80, 0x01]);
        assert_eq!(varint(150), [0x96, 0x01]);
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(u64::MAX), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        // -1 as an int64.
        assert_eq!(varint(-1i64 as u64).len(), 10);
    }

    #[test]
    fn lengths_match_what_is_written_at_every_size_step() {
        for shift in 0..64 {
            for v in [(1u64 << shift) - 1, 1u64 << shift, (1u64 << shift) + 1] {
                varint(v);
            }
        }
        for field in [1, 15, 16, 2047, 2048] {
            for len in [0, 1, 127, 128, 16_383, 16_384] {
                let mut out = Vec::new();
                put_bytes(&mut out, field, &vec![7; len]);
                assert_eq!(out.len(), len_field_len(field, len), "field {field} len {len}");
            }
            let mut out = Vec::new();
            put_varint_field(&mut out, field, 300);
            assert_eq!(out.len(), varint_field_len(field, 300));
        }
    }

    #[test]
    fn keys() {
        let mut out = Vec::new();
        put_key(&mut out, 1, LEN);
        put_key(&mut out, 2, VARINT);
        put_key(&mut out, 16, LEN);
        assert_eq!(out, [0x0a, 0x10, 0x82, 0x01]);
    }
}
