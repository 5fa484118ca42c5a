//! Loki's JSON push body:
//! `{"streams":[{"stream":{"k":"v"},"values":[["<ns>","line",{"sm":"v"}]]}]}`.
//! Timestamps are decimal strings of nanoseconds; the third element of a
//! value is optional. The label map becomes a selector string that then
//! goes through the same label checks as a protobuf stream's.

use serde_json::Value;

use crate::labels;
use crate::proto::RawStream;
use crate::validate::RawEntry;

pub fn decode(body: &[u8]) -> Result<Vec<RawStream>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("JSON: {e}"))?;
    let streams = v.get("streams").and_then(Value::as_array).ok_or("JSON: no \"streams\" array")?;
    streams.iter().map(stream).collect()
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
        let got = decode(
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
            assert!(decode(b).is_err(), "{}", String::from_utf8_lossy(b));
        }
    }
}
