//! A [`PushRequest`] as Loki's protobuf `PushRequest` (uncompressed; see
//! [`super::encoding`] for Snappy), written from the field numbers listed
//! in [`super`].
//!
//! Two passes (see [`super::wire`]): each stream's size is computed, then
//! every byte is written once into a buffer reserved to the exact total.
//! Fields holding their default value (a zero, an empty string) are left
//! out, as proto3 encoders do; the `timestamp` message is always written.

use super::push::{Entry, PushRequest, Stream, TRUNCATED_METADATA};
use super::wire::{len_field_len, put_bytes, put_len_header, put_varint_field, varint_field_len};

const PUSH_STREAMS: u32 = 1;
const STREAM_LABELS: u32 = 1;
const STREAM_ENTRIES: u32 = 2;
const ENTRY_TIMESTAMP: u32 = 1;
const ENTRY_LINE: u32 = 2;
const ENTRY_METADATA: u32 = 3;
const TIMESTAMP_SECONDS: u32 = 1;
const TIMESTAMP_NANOS: u32 = 2;
const PAIR_NAME: u32 = 1;
const PAIR_VALUE: u32 = 2;

/// Append the encoded request to `out`.
pub fn encode(req: &PushRequest, out: &mut Vec<u8>) {
    // Pass one: every entry's size, and each stream's.
    let mut entry_lens: Vec<usize> = Vec::with_capacity(req.len());
    let stream_lens: Vec<usize> = req.streams().map(|s| stream_len(&s, &mut entry_lens)).collect();
    out.reserve_exact(stream_lens.iter().map(|&n| len_field_len(PUSH_STREAMS, n)).sum());
    // Pass two: the bytes.
    let mut entry_lens = entry_lens.into_iter();
    for (stream, len) in req.streams().zip(stream_lens) {
        put_len_header(out, PUSH_STREAMS, len);
        put_bytes(out, STREAM_LABELS, stream.labels().rendered().as_bytes());
        for (entry, len) in stream.entries().zip(&mut entry_lens) {
            put_len_header(out, STREAM_ENTRIES, len);
            put_entry(out, &entry);
        }
    }
}

/// Size of a stream's message; its entries' sizes are appended to
/// `entry_lens`.
fn stream_len(stream: &Stream<'_>, entry_lens: &mut Vec<usize>) -> usize {
    let mut n = len_field_len(STREAM_LABELS, stream.labels().rendered().len());
    for e in stream.entries() {
        let len = entry_len(&e);
        entry_lens.push(len);
        n += len_field_len(STREAM_ENTRIES, len);
    }
    n
}

/// Seconds and nanoseconds of `google.protobuf.Timestamp`: nanoseconds are
/// never negative, also before 1970.
fn split(timestamp_ns: i64) -> (i64, i32) {
    (timestamp_ns.div_euclid(1_000_000_000), timestamp_ns.rem_euclid(1_000_000_000) as i32)
}

fn timestamp_len(timestamp_ns: i64) -> usize {
    let (seconds, nanos) = split(timestamp_ns);
    opt_varint_len(TIMESTAMP_SECONDS, seconds as u64) + opt_varint_len(TIMESTAMP_NANOS, nanos as u64)
}

fn opt_varint_len(field: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        varint_field_len(field, v)
    }
}

fn opt_bytes_len(field: u32, b: &[u8]) -> usize {
    if b.is_empty() {
        0
    } else {
        len_field_len(field, b.len())
    }
}

fn pair_len(name: &str, value: &str) -> usize {
    opt_bytes_len(PAIR_NAME, name.as_bytes()) + opt_bytes_len(PAIR_VALUE, value.as_bytes())
}

fn entry_len(e: &Entry<'_>) -> usize {
    let mut n = len_field_len(ENTRY_TIMESTAMP, timestamp_len(e.timestamp_ns))
        + opt_bytes_len(ENTRY_LINE, e.line.as_bytes());
    for (name, value) in e.metadata {
        n += len_field_len(ENTRY_METADATA, pair_len(name, value));
    }
    if e.truncated {
        n += len_field_len(ENTRY_METADATA, pair_len(TRUNCATED_METADATA.0, TRUNCATED_METADATA.1));
    }
    n
}

fn put_opt_varint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_varint_field(out, field, v);
    }
}

fn put_opt_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    if !b.is_empty() {
        put_bytes(out, field, b);
    }
}

fn put_pair(out: &mut Vec<u8>, name: &str, value: &str) {
    put_len_header(out, ENTRY_METADATA, pair_len(name, value));
    put_opt_bytes(out, PAIR_NAME, name.as_bytes());
    put_opt_bytes(out, PAIR_VALUE, value.as_bytes());
}

fn put_entry(out: &mut Vec<u8>, e: &Entry<'_>) {
    let (seconds, nanos) = split(e.timestamp_ns);
    put_len_header(out, ENTRY_TIMESTAMP, timestamp_len(e.timestamp_ns));
    put_opt_varint(out, TIMESTAMP_SECONDS, seconds as u64);
    put_opt_varint(out, TIMESTAMP_NANOS, nanos as u64);
    put_opt_bytes(out, ENTRY_LINE, e.line.as_bytes());
    for (name, value) in e.metadata {
        put_pair(out, name, value);
    }
    if e.truncated {
        put_pair(out, TRUNCATED_METADATA.0, TRUNCATED_METADATA.1);
    }
}

/// A protobuf reader written separately from the encoder above, from the
/// wire format's specification, used to check the encoder's output.
#[cfg(test)]
pub(crate) mod decode {
    /// A decoded `PushRequest`: streams of (labels, entries).
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Push {
        pub streams: Vec<Stream>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Stream {
        pub labels: String,
        pub entries: Vec<Entry>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Entry {
        pub seconds: i64,
        pub nanos: i32,
        pub line: String,
        pub metadata: Vec<(String, String)>,
    }

    /// A field: number and value (a varint, or a length-delimited slice).
    enum Value<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
    }

    /// Every field of one message, in order.
    fn fields(mut buf: &[u8]) -> Result<Vec<(u64, Value<'_>)>, String> {
        let varint = crate::sink::loki::wire::get_varint;
        let mut out = Vec::new();
        while !buf.is_empty() {
            let key = varint(&mut buf)?;
            let value = match key & 7 {
                0 => Value::Varint(varint(&mut buf)?),
                2 => {
                    let n = usize::try_from(varint(&mut buf)?).map_err(|e| e.to_string())?;
                    if n > buf.len() {
                        return Err(format!("length {n} beyond the {} bytes left", buf.len()));
                    }
                    let (v, rest) = buf.split_at(n);
                    buf = rest;
                    Value::Bytes(v)
                }
                t => return Err(format!("unexpected wire type {t}")),
            };
            out.push((key >> 3, value));
        }
        Ok(out)
    }

    fn text(b: &[u8]) -> Result<String, String> {
        String::from_utf8(b.to_vec()).map_err(|e| e.to_string())
    }

    pub fn push(buf: &[u8]) -> Result<Push, String> {
        let mut push = Push::default();
        for (field, value) in fields(buf)? {
            match (field, value) {
                (1, Value::Bytes(b)) => push.streams.push(stream(b)?),
                (f, _) => return Err(format!("PushRequest: unexpected field {f}")),
            }
        }
        Ok(push)
    }

    fn stream(buf: &[u8]) -> Result<Stream, String> {
        let mut s = Stream::default();
        for (field, value) in fields(buf)? {
            match (field, value) {
                (1, Value::Bytes(b)) => s.labels = text(b)?,
                (2, Value::Bytes(b)) => s.entries.push(entry(b)?),
                (f, _) => return Err(format!("Stream: unexpected field {f}")),
            }
        }
        Ok(s)
    }

    fn entry(buf: &[u8]) -> Result<Entry, String> {
        let mut e = Entry::default();
        let mut has_timestamp = false;
        for (field, value) in fields(buf)? {
            match (field, value) {
                (1, Value::Bytes(b)) => {
                    has_timestamp = true;
                    for (field, value) in fields(b)? {
                        match (field, value) {
                            (1, Value::Varint(v)) => e.seconds = v as i64,
                            (2, Value::Varint(v)) => e.nanos = v as i64 as i32,
                            (f, _) => return Err(format!("Timestamp: unexpected field {f}")),
                        }
                    }
                }
                (2, Value::Bytes(b)) => e.line = text(b)?,
                (3, Value::Bytes(b)) => {
                    let (mut name, mut value) = (String::new(), String::new());
                    for (field, v) in fields(b)? {
                        match (field, v) {
                            (1, Value::Bytes(b)) => name = text(b)?,
                            (2, Value::Bytes(b)) => value = text(b)?,
                            (f, _) => return Err(format!("LabelPair: unexpected field {f}")),
                        }
                    }
                    e.metadata.push((name, value));
                }
                (f, _) => return Err(format!("Entry: unexpected field {f}")),
            }
        }
        if !has_timestamp {
            return Err("Entry without a timestamp".into());
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::sink::loki::labels::LokiStream;

    fn source(labels: &[(&str, &str)], metadata: &[(&str, &str)]) -> Rc<LokiStream> {
        let own = |p: &[(&str, &str)]| p.iter().map(|&(n, v)| (n.to_owned(), v.to_owned())).collect();
        Rc::new(LokiStream::new(own(labels), own(metadata)))
    }

    type Metadata = Vec<(String, String)>;

    fn encoded(req: &PushRequest) -> Vec<u8> {
        let mut out = Vec::new();
        encode(req, &mut out);
        // The size pass reserved exactly what was written.
        assert_eq!(out.len(), out.capacity(), "exact reservation");
        out
    }

    #[test]
    fn a_small_request_byte_by_byte() {
        let mut req = PushRequest::new();
        let s = source(&[("a", "b")], &[("k", "v")]);
        // 1.000000002 s after the epoch.
        req.push(&s, 1_000_000_002, "hi", false);
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x0a, 29,                    // PushRequest.streams (1, LEN), 29 bytes
              0x0a, 7,                   //   Stream.labels (1, LEN), 7 bytes
                b'{', b'a', b'=', b'"', b'b', b'"', b'}',
              0x12, 18,                  //   Stream.entries (2, LEN), 18 bytes
                0x0a, 4,                 //     Entry.timestamp (1, LEN), 4 bytes
                  0x08, 1,               //       seconds (1, VARINT) = 1
                  0x10, 2,               //       nanos (2, VARINT) = 2
                0x12, 2, b'h', b'i',     //     Entry.line (2, LEN) "hi"
                0x1a, 6,                 //     Entry.structuredMetadata (3, LEN), 6 bytes
                  0x0a, 1, b'k',         //       name (1, LEN) "k"
                  0x12, 1, b'v',         //       value (2, LEN) "v"
        ];
        assert_eq!(encoded(&req), want);
    }

    #[test]
    fn zero_and_negative_timestamps_and_empty_lines() {
        let mut req = PushRequest::new();
        let s = source(&[("a", "b")], &[]);
        req.push(&s, 0, "", false);
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x0a, 13,
              0x0a, 7, b'{', b'a', b'=', b'"', b'b', b'"', b'}',
              0x12, 2,                   //   an entry: only its (empty) timestamp
                0x0a, 0,
        ];
        assert_eq!(encoded(&req), want);

        req.clear();
        req.push(&s, -1, "x", false);
        let got = decode::push(&encoded(&req)).unwrap();
        let e = &got.streams[0].entries[0];
        assert_eq!((e.seconds, e.nanos), (-1, 999_999_999));
    }

    #[test]
    fn a_larger_request_decodes_back_independently() {
        let web = source(&[("container", "web"), ("stream", "stdout")], &[("container_id", "abc")]);
        let db = source(&[("container", "d\"b\n"), ("stream", "stderr")], &[("image", "pg:16")]);
        let mut req = PushRequest::new();
        let long = "é".repeat(100); // 200 bytes: two-byte length varints
        let t0 = 1_795_808_902_687_468_145;
        for i in 0..300i64 {
            let s = if i % 3 == 0 { &db } else { &web };
            let line = if i % 50 == 0 { long.clone() } else { format!("line {i}") };
            req.push(s, t0 + i, &line, i == 7);
        }
        let got = decode::push(&encoded(&req)).unwrap();
        assert_eq!(got.streams.len(), 2);
        assert_eq!(got.streams[0].labels, r#"{container="d\"b\n", stream="stderr"}"#);
        assert_eq!(got.streams[1].labels, r#"{container="web", stream="stdout"}"#);
        let mut all: Vec<(i64, String, Metadata)> = Vec::new();
        for s in &got.streams {
            let mut last = i64::MIN;
            for e in &s.entries {
                let ns = e.seconds * 1_000_000_000 + i64::from(e.nanos);
                assert!(ns > last, "order kept within a stream");
                last = ns;
                all.push((ns, e.line.clone(), e.metadata.clone()));
            }
        }
        all.sort();
        assert_eq!(all.len(), 300);
        for (i, (ns, line, metadata)) in all.iter().enumerate() {
            let i = i as i64;
            assert_eq!(*ns, t0 + i);
            assert_eq!(line, &if i % 50 == 0 { long.clone() } else { format!("line {i}") });
            let mut want = if i % 3 == 0 {
                vec![("image".to_owned(), "pg:16".to_owned())]
            } else {
                vec![("container_id".to_owned(), "abc".to_owned())]
            };
            if i == 7 {
                want.push(("truncated".to_owned(), "true".to_owned()));
            }
            assert_eq!(metadata, &want, "entry {i}");
        }
    }

    #[test]
    fn an_empty_request_is_empty() {
        assert_eq!(encoded(&PushRequest::new()), b"");
    }
}
