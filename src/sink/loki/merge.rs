//! Queued push bodies as one: after an outage the queue holds many
//! small batches (each sealed by age while few lines came), and with one
//! push in flight each costs a round trip and its share of the receiver's
//! faults. Sending them together drains a backlog in far fewer pushes.
//!
//! A `PushRequest` is one repeated field, so the protobuf of two requests
//! one after the other is the request with both lists of streams: the
//! plain bytes are joined and compressed again (Loki takes a label set
//! twice in one push; each stream's entries keep their order). JSON joins
//! the two `streams` arrays.

use super::encoding::{Body, Encoding};
use super::split::{gunzip_json, gzip, snappy, unsnappy};

/// `parts` one after the other, as one body (at least one part).
pub fn merge(parts: &[&Body], encoding: Encoding) -> Result<Body, String> {
    let first = parts.first().ok_or("nothing to merge")?;
    match encoding {
        Encoding::Protobuf => {
            let mut plain = Vec::with_capacity(parts.iter().map(|b| b.uncompressed_len).sum());
            for b in parts {
                plain.extend_from_slice(&unsnappy(b)?);
            }
            Ok(snappy(plain, first))
        }
        Encoding::Json => {
            let mut all = Vec::new();
            for b in parts {
                match gunzip_json(b)? {
                    serde_json::Value::Object(mut m) => match m.remove("streams") {
                        Some(serde_json::Value::Array(s)) => all.extend(s),
                        _ => return Err("no \"streams\" array".to_owned()),
                    },
                    _ => return Err("not a JSON object".to_owned()),
                }
            }
            Ok(gzip(&all, first))
        }
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

    fn source(c: &str) -> Rc<LokiStream> {
        Rc::new(LokiStream::new(vec![("container".into(), c.into())], vec![("image".into(), "x".into())]))
    }

    /// (labels, timestamp, line) of every entry, in order.
    fn flat_protobuf(body: &Body) -> Vec<(String, i64, String)> {
        let push = decode::push(&unsnappy(body).unwrap()).unwrap();
        let mut out = Vec::new();
        for s in push.streams {
            for e in s.entries {
                out.push((s.labels.clone(), e.seconds * 1_000_000_000 + i64::from(e.nanos), e.line));
            }
        }
        out
    }

    #[test]
    fn two_protobuf_pushes_make_one_with_every_entry_in_order() {
        let (a, b) = (source("a"), source("b"));
        let mut one = PushRequest::new();
        one.push(&a, 1, "a1", false);
        one.push(&b, 2, "b1", false);
        let mut two = PushRequest::new();
        two.push(&a, 3, "a2", false);
        let mut enc = Encoder::new(Encoding::Protobuf);
        let (x, y) = (enc.encode(&one), enc.encode(&two));
        let m = merge(&[&x, &y], Encoding::Protobuf).unwrap();
        let mut want = flat_protobuf(&x);
        want.extend(flat_protobuf(&y));
        assert_eq!(flat_protobuf(&m), want);
        assert_eq!(want.len(), 3);
        assert_eq!(m.uncompressed_len, x.uncompressed_len + y.uncompressed_len);
    }

    #[test]
    fn two_json_pushes_make_one_with_every_stream() {
        let a = source("a");
        let mut one = PushRequest::new();
        one.push(&a, 1, "a1", false);
        let mut two = PushRequest::new();
        two.push(&a, 2, "a2", false);
        let mut enc = Encoder::new(Encoding::Json);
        let m = merge(&[&enc.encode(&one), &enc.encode(&two)], Encoding::Json).unwrap();
        let v = gunzip_json(&m).unwrap();
        let streams = v["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0]["values"][0][1], "a1");
        assert_eq!(streams[1]["values"][0][1], "a2");
    }

    #[test]
    fn a_body_that_is_not_ours_is_an_error() {
        let junk =
            Body { bytes: vec![0xff; 9], content_type: "", content_encoding: None, uncompressed_len: 9 };
        let mut enc = Encoder::new(Encoding::Protobuf);
        let good = enc.encode(&PushRequest::new());
        assert!(merge(&[&good, &junk], Encoding::Protobuf).is_err());
        assert!(merge(&[&junk, &junk], Encoding::Json).is_err());
        assert!(merge(&[], Encoding::Json).is_err());
    }
}
