//! A [`PushRequest`] as Loki's JSON push body (uncompressed; see
//! [`super::encoding`] for gzip):
//!
//! ```text
//! {"streams":[{"stream":{"container":"web",…},
//!              "values":[["1795808902687468145","the line",{"container_id":"…"}],…]}]}
//! ```
//!
//! Timestamps are decimal strings of nanoseconds (a JSON number would lose
//! precision in many parsers). The third element of a value, the entry's
//! structured metadata, is left out when there is none.
//!
//! Lines are already valid UTF-8 here: the batch turns each invalid byte
//! sequence into U+FFFD before it stores a line (see [`super::batch`]),
//! the same text for both encodings.

use super::push::{PushRequest, TRUNCATED_METADATA};
use crate::record::escape_json_str;

/// Append the encoded request to `out`.
pub fn encode(req: &PushRequest, out: &mut Vec<u8>) {
    // Lines plus about 40 bytes of framing and timestamp per entry, and
    // metadata: close enough that the buffer rarely grows twice.
    out.reserve(req.line_bytes() + req.len() * 40 + 64);
    out.extend_from_slice(b"{\"streams\":[");
    for (i, stream) in req.streams().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"stream\":");
        object(out, stream.labels().labels().iter().map(|(n, v)| (n.as_str(), v.as_str())));
        out.extend_from_slice(b",\"values\":[");
        for (j, e) in stream.entries().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"[\"");
            decimal(out, e.timestamp_ns);
            out.extend_from_slice(b"\",");
            string(out, e.line);
            if !e.metadata.is_empty() || e.truncated {
                out.push(b',');
                let pairs = e.metadata.iter().map(|(n, v)| (n.as_str(), v.as_str()));
                object(out, pairs.chain(e.truncated.then_some(TRUNCATED_METADATA)));
            }
            out.push(b']');
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
}

/// `{"name":"value",…}`.
fn object<'a>(out: &mut Vec<u8>, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push(b'{');
    for (i, (name, value)) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, name);
        out.push(b':');
        string(out, value);
    }
    out.push(b'}');
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_json_str(out, s.as_bytes());
    out.push(b'"');
}

fn decimal(out: &mut Vec<u8>, v: i64) {
    let mut digits = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use serde_json::{json, Value};

    use super::*;
    use crate::sink::loki::labels::LokiStream;

    fn source(labels: &[(&str, &str)], metadata: &[(&str, &str)]) -> Rc<LokiStream> {
        let own = |p: &[(&str, &str)]| p.iter().map(|&(n, v)| (n.to_owned(), v.to_owned())).collect();
        Rc::new(LokiStream::new(own(labels), own(metadata)))
    }

    fn encoded(req: &PushRequest) -> String {
        let mut out = Vec::new();
        encode(req, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_documented_shape() {
        let web = source(&[("stream", "stdout"), ("container", "web")], &[("container_id", "abc")]);
        let bare = source(&[("container", "bare")], &[]);
        let mut req = PushRequest::new();
        req.push(&web, 1_795_808_902_687_468_145, "hello", false);
        req.push(&bare, 5, "x", false);
        req.push(&web, 1_795_808_902_687_468_146, "cut…[truncated]", true);
        assert_eq!(
            encoded(&req),
            concat!(
                r#"{"streams":[{"stream":{"container":"web","stream":"stdout"},"values":["#,
                r#"["1795808902687468145","hello",{"container_id":"abc"}],"#,
                r#"["1795808902687468146","cut…[truncated]",{"container_id":"abc","truncated":"true"}]]},"#,
                r#"{"stream":{"container":"bare"},"values":[["5","x"]]}]}"#
            )
        );
    }

    #[test]
    fn quotes_and_control_characters_are_escaped() {
        let s = source(&[("container", "we\"b\\\n")], &[("image", "i\u{1}")]);
        let mut req = PushRequest::new();
        let line = "say \"hi\"\\ \t\r\n\u{0}\u{1f}\u{7f} é ✓ \u{fffd}";
        req.push(&s, -12, line, false);
        let text = encoded(&req);
        assert!(text.contains(r#""say \"hi\"\\ \t\r\n\u0000\u001f"#), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"streams": [{
                "stream": {"container": "we\"b\\\n"},
                "values": [["-12", line, {"image": "i\u{1}"}]],
            }]})
        );
    }

    #[test]
    fn decimals() {
        for v in [0, 7, 10, -1, i64::MAX, i64::MIN, 1_795_808_902_687_468_145] {
            let mut out = Vec::new();
            decimal(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }

    #[test]
    fn an_empty_request() {
        assert_eq!(encoded(&PushRequest::new()), r#"{"streams":[]}"#);
    }
}
