//! Loki's protobuf `PushRequest`, read straight off the wire format from
//! the field numbers alone (no `.proto`, no code generator), so that it
//! shares nothing with the agent's encoder:
//!
//! ```text
//! PushRequest { repeated Stream streams = 1; }
//! Stream      { string labels = 1; repeated Entry entries = 2; (hash = 3, ignored) }
//! Entry       { Timestamp timestamp = 1; string line = 2; repeated LabelPair structuredMetadata = 3; }
//! Timestamp   { int64 seconds = 1; int32 nanos = 2; }
//! LabelPair   { string name = 1; string value = 2; }
//! ```
//!
//! Unknown fields are skipped as protobuf requires; a truncated or
//! malformed message is an error, as it is for Go's unmarshaller. Strings
//! are kept as the bytes sent for lines (Go does not check them either)
//! and must be UTF-8 for labels and metadata.

use crate::validate::RawEntry;

/// A stream as sent: labels not yet parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawStream {
    pub labels: String,
    pub entries: Vec<RawEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    VarintTooLong,
    /// Wire types 3 and 4 (groups) and 6, 7: not in this schema.
    BadWireType(u8),
    /// A known field (named as Go's generated code names it) with the
    /// wrong wire type: checked before the wire type's own validity, as
    /// gogo-protobuf's unmarshaller does.
    WrongType {
        field: &'static str,
        wire: u8,
    },
    FieldZero,
    NotUtf8(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("unexpected EOF"),
            DecodeError::VarintTooLong => f.write_str("integer overflow"),
            DecodeError::BadWireType(w) => write!(f, "illegal wireType {w}"),
            DecodeError::WrongType { field, wire } => write!(f, "wrong wireType = {wire} for field {field}"),
            DecodeError::FieldZero => f.write_str("illegal tag 0"),
            DecodeError::NotUtf8(what) => write!(f, "invalid UTF-8 in {what}"),
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
    /// A wire type this schema never uses (groups, 6, 7): an error either
    /// way, worded by whether the field is known.
    Bad,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.b.split_first().ok_or(DecodeError::Truncated)?;
            self.b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintTooLong)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated)?;
        if n > self.b.len() {
            return Err(DecodeError::Truncated);
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(a)
    }

    /// The next field: its number, wire type and value.
    fn field(&mut self) -> Result<Option<(u32, u8, Value<'a>)>, DecodeError> {
        if self.b.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = (key & 7) as u8;
        let field = u32::try_from(key >> 3).map_err(|_| DecodeError::VarintTooLong)?;
        if field == 0 {
            return Err(DecodeError::FieldZero);
        }
        let v = match wire {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let n = self.varint()?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            _ => Value::Bad,
        };
        Ok(Some((field, wire, v)))
    }
}

fn bytes<'a>(field: &'static str, wire: u8, v: Value<'a>) -> Result<&'a [u8], DecodeError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(DecodeError::WrongType { field, wire }),
    }
}

fn varint(field: &'static str, wire: u8, v: Value<'_>) -> Result<u64, DecodeError> {
    match v {
        Value::Varint(x) => Ok(x),
        _ => Err(DecodeError::WrongType { field, wire }),
    }
}

/// An unknown field is skipped, unless its wire type cannot be.
fn skip(wire: u8, v: Value<'_>) -> Result<(), DecodeError> {
    match v {
        Value::Bad => Err(DecodeError::BadWireType(wire)),
        _ => Ok(()),
    }
}

fn utf8(b: &[u8], what: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::NotUtf8(what))
}

/// Decode a `PushRequest` (already snappy-decompressed).
pub fn decode(buf: &[u8]) -> Result<Vec<RawStream>, DecodeError> {
    let mut r = Reader { b: buf };
    let mut streams = Vec::new();
    while let Some((f, w, v)) = r.field()? {
        match f {
            1 => streams.push(stream(bytes("Streams", w, v)?)?),
            _ => skip(w, v)?,
        }
    }
    Ok(streams)
}

fn stream(buf: &[u8]) -> Result<RawStream, DecodeError> {
    let mut r = Reader { b: buf };
    let mut s = RawStream::default();
    while let Some((f, w, v)) = r.field()? {
        match f {
            1 => s.labels = utf8(bytes("Labels", w, v)?, "stream labels")?,
            2 => s.entries.push(entry(bytes("Entries", w, v)?)?),
            _ => skip(w, v)?,
        }
    }
    Ok(s)
}

fn entry(buf: &[u8]) -> Result<RawEntry, DecodeError> {
    let mut r = Reader { b: buf };
    let mut e = RawEntry { ts_ns: 0, line: Vec::new(), metadata: Vec::new() };
    while let Some((f, w, v)) = r.field()? {
        match f {
            1 => e.ts_ns = timestamp(bytes("Timestamp", w, v)?)?,
            2 => e.line = bytes("Line", w, v)?.to_vec(),
            3 => e.metadata.push(pair(bytes("StructuredMetadata", w, v)?)?),
            _ => skip(w, v)?,
        }
    }
    Ok(e)
}

fn timestamp(buf: &[u8]) -> Result<i128, DecodeError> {
    let mut r = Reader { b: buf };
    let (mut secs, mut nanos) = (0i64, 0i32);
    while let Some((f, w, v)) = r.field()? {
        match f {
            // int64 and int32 are plain two's-complement varints (not zigzag).
            1 => secs = varint("Seconds", w, v)? as i64,
            2 => nanos = varint("Nanos", w, v)? as i32,
            _ => skip(w, v)?,
        }
    }
    Ok(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

fn pair(buf: &[u8]) -> Result<(String, String), DecodeError> {
    let mut r = Reader { b: buf };
    let (mut name, mut value) = (String::new(), String::new());
    while let Some((f, w, v)) = r.field()? {
        match f {
            1 => name = utf8(bytes("Name", w, v)?, "structured metadata name")?,
            2 => value = utf8(bytes("Value", w, v)?, "structured metadata value")?,
            _ => skip(w, v)?,
        }
    }
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn ld(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        varint(out, u64::from(field) << 3 | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    fn sample() -> Vec<u8> {
        let mut ts = Vec::new();
        varint(&mut ts, 1 << 3);
        varint(&mut ts, 1_700_000_000);
        varint(&mut ts, 2 << 3);
        varint(&mut ts, 5);
        let mut sm = Vec::new();
        ld(&mut sm, 1, b"id");
        ld(&mut sm, 2, b"abc");
        let mut e = Vec::new();
        ld(&mut e, 1, &ts);
        ld(&mut e, 2, b"hello");
        ld(&mut e, 3, &sm);
        // An unknown fixed64 field, skipped.
        e.extend_from_slice(&[(9 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        let mut s = Vec::new();
        ld(&mut s, 1, b"{a=\"b\"}");
        ld(&mut s, 2, &e);
        varint(&mut s, 3 << 3);
        varint(&mut s, 42);
        let mut req = Vec::new();
        ld(&mut req, 1, &s);
        req
    }

    #[test]
    fn decodes_every_field() {
        let got = decode(&sample()).unwrap();
        assert_eq!(
            got,
            vec![RawStream {
                labels: "{a=\"b\"}".into(),
                entries: vec![RawEntry {
                    ts_ns: 1_700_000_000_000_000_005,
                    line: b"hello".to_vec(),
                    metadata: vec![("id".into(), "abc".into())],
                }],
            }]
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = sample();
        for n in 1..full.len() {
            assert!(decode(&full[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        assert_eq!(decode(&[]).unwrap(), vec![]);
    }

    #[test]
    fn malformed() {
        assert_eq!(decode(&[0x13]), Err(DecodeError::BadWireType(3)));
        assert_eq!(decode(&[0x0b]), Err(DecodeError::WrongType { field: "Streams", wire: 3 }));
        assert_eq!(decode(&[0x0f, 1]).unwrap_err().to_string(), "wrong wireType = 7 for field Streams");
        assert_eq!(decode(&[0x17]).unwrap_err().to_string(), "illegal wireType 7");
        assert_eq!(decode(&[0x08, 1]), Err(DecodeError::WrongType { field: "Streams", wire: 0 }));
        assert_eq!(decode(&[0x02, 0]), Err(DecodeError::FieldZero));
        assert_eq!(decode(&[0x10; 11]).unwrap_err(), DecodeError::Truncated);
        assert_eq!(
            decode(&[0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(DecodeError::VarintTooLong)
        );
    }
}
