//! Cutting an encoded push in two, for a receiver that answered 413: a
//! proxy in front of Loki (nginx's `client_max_body_size` is 1 MiB by
//! default) refuses the body, and sending it again whole can never work.
//!
//! The body is the agent's own encoding, so it is cut at the level it was
//! built: protobuf at the wire level (streams and their entries are copied
//! as bytes, never reinterpreted), JSON through a generic JSON value. Each
//! half keeps the streams' label sets and the entries' order, the first
//! half taking the first entries in stream order.

use std::io::{Read as _, Write as _};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::encoding::{Body, Encoding};
use super::wire;

/// Longest decompressed body accepted (a batch is at most 64 MiB of lines).
const MAX_PLAIN: usize = 256 << 20;

/// The two halves, with their entry counts; `None` if the body holds one
/// entry (or none), which cannot be cut.
pub fn split(body: &Body, encoding: Encoding) -> Result<Option<[(Body, usize); 2]>, String> {
    match encoding {
        Encoding::Protobuf => split_protobuf(body),
        Encoding::Json => split_json(body),
    }
}

/// A stream of a protobuf push: its labels field and its entries, as bytes.
struct RawStream<'a> {
    labels: &'a [u8],
    entries: Vec<&'a [u8]>,
}

fn split_protobuf(body: &Body) -> Result<Option<[(Body, usize); 2]>, String> {
    let plain = unsnappy(body)?;
    let mut streams = Vec::new();
    for (field, stream) in wire::fields(&plain)? {
        if field != 1 {
            return Err(format!("PushRequest field {field}"));
        }
        let mut s = RawStream { labels: &[], entries: Vec::new() };
        for (f, v) in wire::fields(stream)? {
            match f {
                1 => s.labels = v,
                2 => s.entries.push(v),
                _ => return Err(format!("Stream field {f}")),
            }
        }
        streams.push(s);
    }
    let total: usize = streams.iter().map(|s| s.entries.len()).sum();
    if total < 2 {
        return Ok(None);
    }
    let mut halves = [Vec::new(), Vec::new()];
    let mut counts = [0usize; 2];
    let mut seen = 0;
    for s in &streams {
        let mut parts: [Vec<&[u8]>; 2] = [Vec::new(), Vec::new()];
        for e in &s.entries {
            let half = usize::from(seen >= total / 2);
            parts[half].push(e);
            seen += 1;
        }
        for (half, entries) in parts.iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            counts[half] += entries.len();
            let mut msg = Vec::new();
            wire::put_bytes(&mut msg, 1, s.labels);
            for e in entries {
                wire::put_bytes(&mut msg, 2, e);
            }
            wire::put_bytes(&mut halves[half], 1, &msg);
        }
    }
    let [a, b] = halves;
    Ok(Some([(snappy(a, body), counts[0]), (snappy(b, body), counts[1])]))
}

pub(super) fn snappy(plain: Vec<u8>, like: &Body) -> Body {
    let bytes = snap::raw::Encoder::new().compress_vec(&plain).expect("far below Snappy's block limit");
    Body {
        bytes,
        content_type: like.content_type,
        content_encoding: like.content_encoding,
        uncompressed_len: plain.len(),
    }
}

/// The protobuf of a Snappy-compressed body, bounded.
pub(super) fn unsnappy(body: &Body) -> Result<Vec<u8>, String> {
    let len = snap::raw::decompress_len(&body.bytes).map_err(|e| e.to_string())?;
    if len > MAX_PLAIN {
        return Err(format!("a body of {len} bytes decompressed"));
    }
    snap::raw::Decoder::new().decompress_vec(&body.bytes).map_err(|e| e.to_string())
}

/// The JSON value of a gzip-compressed body, bounded.
pub(super) fn gunzip_json(body: &Body) -> Result<serde_json::Value, String> {
    let mut plain = Vec::new();
    GzDecoder::new(&body.bytes[..])
        .take(MAX_PLAIN as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| e.to_string())?;
    if plain.len() > MAX_PLAIN {
        return Err("the body decompresses to more than 256 MiB".into());
    }
    serde_json::from_slice(&plain).map_err(|e| e.to_string())
}

fn split_json(body: &Body) -> Result<Option<[(Body, usize); 2]>, String> {
    let v = gunzip_json(body)?;
    let streams = v.get("streams").and_then(|s| s.as_array()).ok_or("no \"streams\" array")?;
    let total: usize = streams.iter().map(|s| s["values"].as_array().map_or(0, Vec::len)).sum();
    if total < 2 {
        return Ok(None);
    }
    let mut halves = [Vec::new(), Vec::new()];
    let mut counts = [0usize; 2];
    let mut seen = 0;
    for s in streams {
        let values = s["values"].as_array().ok_or("a stream without \"values\"")?;
        let mut parts: [Vec<serde_json::Value>; 2] = [Vec::new(), Vec::new()];
        for e in values {
            parts[usize::from(seen >= total / 2)].push(e.clone());
            seen += 1;
        }
        for (half, entries) in parts.into_iter().enumerate() {
            if !entries.is_empty() {
                counts[half] += entries.len();
                halves[half].push(serde_json::json!({ "stream": s["stream"], "values": entries }));
            }
        }
    }
    let [a, b] = halves;
    Ok(Some([(gzip(&a, body), counts[0]), (gzip(&b, body), counts[1])]))
}

pub(super) fn gzip(streams: &[serde_json::Value], like: &Body) -> Body {
    let plain =
        serde_json::to_vec(&serde_json::json!({ "streams": streams })).expect("a JSON value serializes");
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&plain).expect("writing to a Vec cannot fail");
    let bytes = gz.finish().expect("writing to a Vec cannot fail");
    Body {
        bytes,
        content_type: like.content_type,
        content_encoding: like.content_encoding,
        uncompressed_len: plain.len(),
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::sink::loki::encoding::Encoder;
    use crate::sink::loki::labels::LokiStream;
    use crate::sink::loki::protobuf::decode;
    use crate::sink::loki::push::PushRequest;

    fn request(n: i64) -> PushRequest {
        let a = Rc::new(LokiStream::new(
            vec![("container".into(), "a".into())],
            vec![("image".into(), "x".into())],
        ));
        let b = Rc::new(LokiStream::new(vec![("container".into(), "b".into())], vec![]));
        let mut req = PushRequest::new();
        for i in 0..n {
            req.push(if i % 3 == 0 { &b } else { &a }, 1_000 + i, &format!("line {i}"), i == 4);
        }
        req
    }

    /// (labels, timestamp in ns, line, metadata) of one entry.
    type Flat = (String, i64, String, Vec<(String, String)>);

    /// Every entry, in order.
    fn entries(body: &Body) -> Vec<Flat> {
        let plain = snap::raw::Decoder::new().decompress_vec(&body.bytes).unwrap();
        let push = decode::push(&plain).unwrap();
        let mut out = Vec::new();
        for s in push.streams {
            for e in s.entries {
                out.push((
                    s.labels.clone(),
                    e.seconds * 1_000_000_000 + i64::from(e.nanos),
                    e.line,
                    e.metadata,
                ));
            }
        }
        out
    }

    #[test]
    fn protobuf_halves_hold_every_entry_once_in_order() {
        for n in [2, 3, 10, 101] {
            let body = Encoder::new(Encoding::Protobuf).encode(&request(n));
            let [(a, na), (b, nb)] = split(&body, Encoding::Protobuf).unwrap().unwrap();
            assert_eq!(na + nb, n as usize);
            assert_eq!(na, n as usize / 2);
            let mut both = entries(&a);
            both.extend(entries(&b));
            let mut whole = entries(&body);
            // Per stream order is what matters; compare as sorted sets and
            // check each stream's order separately.
            for labels in ["{container=\"a\"}", "{container=\"b\"}"] {
                let of = |v: &Vec<Flat>| v.iter().filter(|e| e.0 == labels).cloned().collect::<Vec<_>>();
                assert_eq!(of(&both), of(&whole), "n={n} {labels}");
            }
            both.sort();
            whole.sort();
            assert_eq!(both, whole);
        }
    }

    #[test]
    fn one_entry_cannot_be_cut() {
        let body = Encoder::new(Encoding::Protobuf).encode(&request(1));
        assert!(split(&body, Encoding::Protobuf).unwrap().is_none());
        let body = Encoder::new(Encoding::Json).encode(&request(1));
        assert!(split(&body, Encoding::Json).unwrap().is_none());
    }

    #[test]
    fn json_halves_hold_every_entry_once() {
        let body = Encoder::new(Encoding::Json).encode(&request(11));
        let [(a, na), (b, nb)] = split(&body, Encoding::Json).unwrap().unwrap();
        assert_eq!((na, nb), (5, 6));
        let values = |b: &Body| {
            let mut plain = Vec::new();
            GzDecoder::new(&b.bytes[..]).read_to_end(&mut plain).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
            v["streams"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| {
                    s["values"].as_array().unwrap().iter().map(|e| e[1].as_str().unwrap().to_owned())
                })
                .collect::<Vec<_>>()
        };
        let mut both = values(&a);
        both.extend(values(&b));
        both.sort();
        let mut whole = values(&body);
        whole.sort();
        assert_eq!(both, whole);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let junk =
            Body { bytes: vec![1, 2, 3], content_type: "x", content_encoding: None, uncompressed_len: 3 };
        assert!(split(&junk, Encoding::Protobuf).is_err());
        assert!(split(&junk, Encoding::Json).is_err());
    }
}
