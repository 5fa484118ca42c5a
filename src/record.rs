//! A log record, the unit everything downstream of the parsers handles, and
//! its JSON form.

use crate::docker::frame::StreamId;
use crate::docker::timestamp;

/// One log line of one container, as the parsers deliver it. Borrowed: the
/// message points into the parser's input or its line buffer and is valid
/// only during the callback that receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Docker's timestamp in nanoseconds since the epoch, when the stream
    /// was requested with `timestamps=1`. Never the agent's clock.
    pub timestamp: Option<i64>,
    pub stream: StreamId,
    /// The line without its trailing newline (and, for TTY streams, without
    /// the `\r` the terminal added). Bytes, not text: may be invalid UTF-8.
    pub message: &'a [u8],
    /// The line was longer than the line cap; `message` holds its first
    /// `cap` bytes and the rest was discarded.
    pub truncated: bool,
    /// The stream ended before this line's newline (a container's last
    /// output without one). Only ever set by a final flush.
    pub partial: bool,
}

/// Owned copy of a [`Record`], for tests and tools that collect records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub timestamp: Option<i64>,
    pub stream: StreamId,
    pub message: Vec<u8>,
    pub truncated: bool,
    pub partial: bool,
}

impl Record<'_> {
    pub fn to_owned(&self) -> OwnedRecord {
        OwnedRecord {
            timestamp: self.timestamp,
            stream: self.stream,
            message: self.message.to_vec(),
            truncated: self.truncated,
            partial: self.partial,
        }
    }
}

/// Append `{"timestamp":…,"stream":…,"message":…}` (without a newline) to
/// `out`. `extra` is written verbatim before `stream`, for the fields the
/// agent adds (container id, name, image): `"key":value` pairs joined by
/// commas, already escaped, or empty.
///
/// `message` is always valid JSON text. Bytes that are not UTF-8 become
/// U+FFFD there, and then `message_base64` carries the exact bytes, so
/// nothing is lost and strict JSON parsers still accept every line.
pub fn write_json(out: &mut Vec<u8>, rec: &Record<'_>, extra: &[u8]) {
    out.push(b'{');
    if let Some(ts) = rec.timestamp {
        out.extend_from_slice(b"\"timestamp\":\"");
        out.extend_from_slice(&timestamp::format(ts));
        out.extend_from_slice(b"\",");
    }
    if !extra.is_empty() {
        out.extend_from_slice(extra);
        out.push(b',');
    }
    out.extend_from_slice(b"\"stream\":\"");
    out.extend_from_slice(rec.stream.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":\"");
    let valid = escape_json_str(out, rec.message);
    out.push(b'"');
    if !valid {
        out.extend_from_slice(b",\"message_base64\":\"");
        base64(out, rec.message);
        out.push(b'"');
    }
    if rec.truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    out.push(b'}');
}

/// Write `s` escaped for a JSON string body. Returns false if `s` was not
/// valid UTF-8 (each invalid sequence was written as U+FFFD).
pub fn escape_json_str(out: &mut Vec<u8>, mut s: &[u8]) -> bool {
    let mut valid = true;
    loop {
        match std::str::from_utf8(s) {
            Ok(text) => {
                escape_valid(out, text.as_bytes());
                return valid;
            }
            Err(e) => {
                let (good, rest) = s.split_at(e.valid_up_to());
                escape_valid(out, good);
                out.extend_from_slice("\u{fffd}".as_bytes());
                valid = false;
                let skip = e.error_len().unwrap_or(rest.len());
                s = &rest[skip..];
            }
        }
    }
}

/// Escape UTF-8 text: only `"`, `\` and control characters need it.
fn escape_valid(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

/// Standard base64 with padding (RFC 4648 section 4).
pub fn base64(out: &mut Vec<u8>, data: &[u8]) {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(A[(n >> 18) as usize & 63]);
        out.push(A[(n >> 12) as usize & 63]);
        out.push(if c.len() > 1 { A[(n >> 6) as usize & 63] } else { b'=' });
        out.push(if c.len() > 2 { A[n as usize & 63] } else { b'=' });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(rec: &Record<'_>, extra: &[u8]) -> String {
        let mut out = Vec::new();
        write_json(&mut out, rec, extra);
        String::from_utf8(out).unwrap()
    }

    fn rec(message: &[u8]) -> Record<'_> {
        Record { timestamp: None, stream: StreamId::Stdout, message, truncated: false, partial: false }
    }

    #[test]
    fn the_documented_shape() {
        let r = Record { timestamp: Some(1_795_808_902_687_468_145), ..rec(b"hello \"you\"") };
        assert_eq!(
            json(&r, b""),
            r#"{"timestamp":"2026-11-27T19:48:22.687468145Z","stream":"stdout","message":"hello \"you\""}"#
        );
        let r = Record { truncated: true, stream: StreamId::Stderr, ..rec(b"x") };
        assert_eq!(
            json(&r, br#""container_name":"web""#),
            r#"{"container_name":"web","stream":"stderr","message":"x","truncated":true}"#
        );
    }

    #[test]
    fn control_characters_and_unicode() {
        let r = rec("tab\there\r\n\u{1}\u{1f}\u{7f} é ✓ \\".as_bytes());
        let s = json(&r, b"");
        assert_eq!(
            s,
            "{\"stream\":\"stdout\",\"message\":\"tab\\there\\r\\n\\u0001\\u001f\u{7f} é ✓ \\\\\"}"
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["message"].as_str().unwrap().as_bytes(), r.message);
    }

    #[test]
    fn invalid_utf8_survives_as_base64() {
        let bytes = b"ok \xff\xfe caf\xc3\xa9 \xe2\x82";
        let s = json(&rec(bytes), b"");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["message"], "ok \u{fffd}\u{fffd} café \u{fffd}");
        assert_eq!(v["message_base64"], "b2sg//4gY2Fmw6kg4oI=");
    }

    #[test]
    fn base64_vectors() {
        for (input, want) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")]
        {
            let mut out = Vec::new();
            base64(&mut out, input.as_bytes());
            assert_eq!(out, want.as_bytes());
        }
    }
}
