//! Structured metadata taken out of an encoded push, for a Loki that
//! refuses it (2.9 by default, 3.x on a schema older than v13) or cannot
//! read it (2.8's JSON decoder): batches queued before the agent learned
//! that are sent again without it, the same entries otherwise.
//!
//! Like [`super::split`], the body is the agent's own encoding and is
//! rewritten at the level it was built: protobuf at the wire level (each
//! entry's field 3, its metadata, left out; every other byte copied),
//! JSON through a generic value (each `values` element cut to its
//! timestamp and line).

use super::encoding::{Body, Encoding};
use super::split::{gunzip_json, gzip, snappy, unsnappy};
use super::wire;

/// Field of an `Entry` that holds its structured metadata.
const METADATA_FIELD: u64 = 3;

/// `body` without any structured metadata.
pub fn without_metadata(body: &Body, encoding: Encoding) -> Result<Body, String> {
    match encoding {
        Encoding::Protobuf => protobuf(body),
        Encoding::Json => json(body),
    }
}

fn protobuf(body: &Body) -> Result<Body, String> {
    let plain = unsnappy(body)?;
    let mut out = Vec::with_capacity(plain.len());
    let mut stream_buf = Vec::new();
    let mut entry_buf = Vec::new();
    for (field, stream) in wire::fields(&plain)? {
        if field != 1 {
            return Err(format!("PushRequest field {field}"));
        }
        stream_buf.clear();
        for (f, v) in wire::fields(stream)? {
            match f {
                1 => wire::put_bytes(&mut stream_buf, 1, v),
                2 => {
                    entry_buf.clear();
                    for (ef, ev) in wire::fields(v)? {
                        if ef != METADATA_FIELD {
                            wire::put_bytes(&mut entry_buf, ef as u32, ev);
                        }
                    }
                    wire::put_bytes(&mut stream_buf, 2, &entry_buf);
                }
                _ => return Err(format!("Stream field {f}")),
            }
        }
        wire::put_bytes(&mut out, 1, &stream_buf);
    }
    Ok(snappy(out, body))
}

fn json(body: &Body) -> Result<Body, String> {
    let mut v = gunzip_json(body)?;
    let streams = v.get_mut("streams").and_then(|s| s.as_array_mut()).ok_or("no \"streams\" array")?;
    for s in streams.iter_mut() {
        let values =
            s.get_mut("values").and_then(|v| v.as_array_mut()).ok_or("a stream without \"values\"")?;
        for e in values.iter_mut() {
            if let Some(e) = e.as_array_mut() {
                e.truncate(2);
            }
        }
    }
    Ok(gzip(streams, body))
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::sink::loki::encoding::Encoder;
    use crate::sink::loki::labels::LokiStream;
    use crate::sink::loki::push::PushRequest;

    fn request() -> PushRequest {
        let a = Rc::new(LokiStream::new(
            vec![("container".into(), "a".into())],
            vec![("container_id".into(), "0123".into()), ("image".into(), "busybox".into())],
        ));
        let b = Rc::new(LokiStream::new(vec![("container".into(), "b".into())], vec![]));
        let mut req = PushRequest::new();
        for i in 0..7 {
            req.push(
                if i % 3 == 0 { &b } else { &a },
                1_000_000_007 * i,
                &format!("line {i} \u{e9}"),
                i == 4,
            );
        }
        req
    }

    /// The same request, encoded with no metadata at all.
    fn bare() -> PushRequest {
        let mut req = request();
        req.set_metadata(false);
        req
    }

    #[test]
    fn protobuf_without_metadata_is_the_request_encoded_without_it() {
        let mut enc = Encoder::new(Encoding::Protobuf);
        let with = enc.encode(&request());
        let want = enc.encode(&bare());
        let got = without_metadata(&with, Encoding::Protobuf).unwrap();
        assert_eq!(unsnappy(&got).unwrap(), unsnappy(&want).unwrap());
        assert!(unsnappy(&with).unwrap().len() > unsnappy(&got).unwrap().len());
        // Already bare: unchanged.
        let again = without_metadata(&got, Encoding::Protobuf).unwrap();
        assert_eq!(unsnappy(&again).unwrap(), unsnappy(&want).unwrap());
    }

    #[test]
    fn json_without_metadata_is_the_request_encoded_without_it() {
        let mut enc = Encoder::new(Encoding::Json);
        let with = enc.encode(&request());
        let want = enc.encode(&bare());
        let got = without_metadata(&with, Encoding::Json).unwrap();
        assert_eq!(gunzip_json(&got).unwrap(), gunzip_json(&want).unwrap());
        assert_ne!(gunzip_json(&with).unwrap(), gunzip_json(&want).unwrap());
    }

    #[test]
    fn a_body_that_is_not_ours_is_an_error_not_a_panic() {
        let junk = Body {
            bytes: vec![0xff; 40],
            content_type: "application/x-protobuf",
            content_encoding: None,
            uncompressed_len: 40,
        };
        assert!(without_metadata(&junk, Encoding::Protobuf).is_err());
        assert!(without_metadata(&junk, Encoding::Json).is_err());
    }
}
