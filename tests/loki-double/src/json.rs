//! Loki's JSON push body:
//! `{"streams":[{"stream":{"k":"v"},"values":[["<ns>","line",{"sm":"v"}]]}]}`.
//! Timestamps are decimal strings of nanoseconds; the third element of a
//! value is optional. The label map becomes a selector string that then
//! goes through the same label checks as a protobuf stream's.

use serde_json::Value;

use crate::labels;
use crate::proto::RawStream;
use crate::validate::{RawEntry, StructuredMetadata};

pub fn decode(body: &[u8], sm: StructuredMetadata) -> Result<Vec<RawStream>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("JSON: {e}"))?;
    let streams = v.get("streams").and_then(Value::as_array).ok_or("JSON: no \"streams\" array")?;
    let streams: Vec<RawStream> = streams.iter().map(stream).collect::<Result<_, _>>()?;
    if sm == StructuredMetadata::Unknown {
        if let Some(at) = third_element(body) {
            return Err(unknown_third_element(body, at));
        }
    }
    Ok(streams)
}

/// Where the first `values` entry with a third element starts it (the
/// byte after the line's closing quote), if any.
fn third_element(body: &[u8]) -> Option<usize> {
    // Past the line string of `["ts", "line"`, a `,` instead of `]`.
    let (mut in_str, mut esc, mut depth, mut strings) = (false, false, 0usize, 0usize);
    let mut in_value = false;
    for (i, &b) in body.iter().enumerate() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => {
                    in_str = false;
                    if in_value {
                        strings += 1;
                    }
                }
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' => {
                depth += 1;
                // `values` is the second array level: `[[` opens an entry.
                in_value = depth == 3;
                strings = 0;
            }
            b']' => {
                depth = depth.saturating_sub(1);
                in_value = false;
            }
            b',' if in_value && strings == 2 => return Some(i),
            _ => {}
        }
    }
    None
}

/// Loki 2.8's answer to a `values` entry of three elements: its JSON
/// decoder (jsoniter) reads the entry as a pair and stumbles on what
/// follows the line, in its own words, with a window of the body.
fn unknown_third_element(body: &[u8], at: usize) -> String {
    let window = |from: usize, to: usize| {
        String::from_utf8_lossy(&body[from.min(body.len())..to.min(body.len())]).into_owned()
    };
    format!(
        "loghttp.PushRequest.Streams: []*loghttp.Stream: unmarshalerDecoder: Value is string, but can't find \
         closing '\"' symbol, error found in #10 byte of ...|{}|..., bigger context ...|{}|...",
        window(at.saturating_sub(10), at + 10),
        window(at.saturating_sub(50), at + 50)
    )
}

fn stream(s: &Value) -> Result<RawStream, String> {
    let map = s.get("stream").and_then(Value::as_object).ok_or("JSON: a stream has no \"stream\" object")?;
    let mut sel = String::from("{");
    for (i, (k, v)) in map.iter().enumerate() {
        let v = v.as_str().ok_or_else(|| format!("JSON: label {k:?} is not a string"))?;
        if i > 0 {
            sel.push_str(", ");
        }
        // A name that is not a valid label name stays visible as such in the
        // selector, so the label check refuses it as Loki does.
        sel.push_str(k);
        sel.push('=');
        labels::quote_into(&mut sel, v);
    }
    sel.push('}');
    let values = s.get("values").and_then(Value::as_array).ok_or("JSON: a stream has no \"values\" array")?;
    let entries = values.iter().map(entry).collect::<Result<_, _>>()?;
    Ok(RawStream { labels: sel, entries })
}

fn entry(v: &Value) -> Result<RawEntry, String> {
    let a = v
        .as_array()
        .filter(|a| a.len() == 2 || a.len() == 3)
        .ok_or("JSON: a value is not [ts, line] or [ts, line, {metadata}]")?;
    let ts = a[0].as_str().ok_or("JSON: a timestamp is not a string")?;
    let ts_ns: i128 = ts.parse().map_err(|_| format!("JSON: timestamp {ts:?} is not an integer"))?;
    let line = a[1].as_str().ok_or("JSON: a line is not a string")?.as_bytes().to_vec();
    let mut metadata = Vec::new();
    if let Some(m) = a.get(2) {
        let m = m.as_object().ok_or("JSON: structured metadata is not an object")?;
        for (k, v) in m {
            let v = v.as_str().ok_or_else(|| format!("JSON: structured metadata {k:?} is not a string"))?;
            metadata.push((k.clone(), v.to_owned()));
        }
    }
    Ok(RawEntry { ts_ns, line, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        let got = decode_all(
            br#"{"streams":[{"stream":{"b":"2","a":"x\"y"},"values":[["5","one"],["6","two",{"id":"c1"}]]}]}"#,
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels, r#"{a="x\"y", b="2"}"#);
        assert_eq!(got[0].entries[0], RawEntry { ts_ns: 5, line: b"one".to_vec(), metadata: vec![] });
        assert_eq!(got[0].entries[1].metadata, vec![("id".to_owned(), "c1".to_owned())]);
    }

    #[test]
    fn refuses_bad_shapes() {
        for b in [
            &b"{"[..],
            br#"{}"#,
            br#"{"streams":[{"values":[]}]}"#,
            br#"{"streams":[{"stream":{"a":1},"values":[]}]}"#,
            br#"{"streams":[{"stream":{},"values":[[5,"x"]]}]}"#,
            br#"{"streams":[{"stream":{},"values":[["x","x"]]}]}"#,
            br#"{"streams":[{"stream":{},"values":[["5"]]}]}"#,
            br#"{"streams":[{"stream":{},"values":[["5","x",[]]]}]}"#,
        ] {
            assert!(decode_all(b).is_err(), "{}", String::from_utf8_lossy(b));
        }
    }

    fn decode_all(b: &[u8]) -> Result<Vec<RawStream>, String> {
        decode(b, StructuredMetadata::Allowed)
    }

    #[test]
    fn a_third_element_is_an_error_where_metadata_is_unknown() {
        let with = br#"{"streams":[{"stream":{"a":"b"},"values":[["5","o,n]e"],["6","two",{"id":"c1"}]]}]}"#;
        let without = br#"{"streams":[{"stream":{"a":"[x\"],"},"values":[["5","o,n]e"],["6","t\"wo"]]}]}"#;
        assert_eq!(third_element(without), None);
        let at = third_element(with).unwrap();
        assert_eq!(&with[at - 5..at], br#""two""#);
        let e = decode(with, StructuredMetadata::Unknown).unwrap_err();
        assert!(e.starts_with("loghttp.PushRequest.Streams: []*loghttp.Stream: unmarshalerDecoder:"), "{e}");
        assert!(!e.contains("metadata"), "{e}");
        assert_eq!(decode(without, StructuredMetadata::Unknown).unwrap()[0].entries.len(), 2);
        assert_eq!(decode(with, StructuredMetadata::Disallowed).unwrap()[0].entries[1].metadata.len(), 1);
    }
}
