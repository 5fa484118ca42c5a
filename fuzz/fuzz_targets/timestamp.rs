//! `timestamp::parse` and `timestamp::format`.
//!
//! Input: any bytes. The whole input is parsed; its first 8 bytes (when
//! there are 8) are also read as a little-endian i64 of nanoseconds; and
//! its `\n`-separated parts are parsed in turn by one `timestamp::Parser`
//! (which caches the last date).
//!
//! Invariants:
//! - `parse` never panics; when it accepts, the text is at most `MAX_LEN`
//!   bytes, `parse(format(ns)) == ns`, chrono's RFC 3339 parser reads the
//!   same instant, and text already in the canonical 30-byte form is what
//!   `format` writes;
//! - for any i64 `ns`: `format(ns)` is 30 bytes shaped
//!   `DDDD-DD-DDTDD:DD:DD.DDDDDDDDDZ`, equals chrono's rendering, and parses
//!   back to `ns`; `format_since` writes `<secs>.<9 digits>` of `max(ns, 0)`.
#![no_main]

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use log_capturer::docker::timestamp::{self, Parser, FORMATTED_LEN, MAX_LEN};

const SHAPE: &[u8; FORMATTED_LEN] = b"DDDD-DD-DDTDD:DD:DD.DDDDDDDDDZ";

fn check_format(ns: i64) {
    let s = timestamp::format(ns);
    assert_eq!(s.len(), FORMATTED_LEN);
    for (i, (&b, &want)) in s.iter().zip(SHAPE.iter()).enumerate() {
        if want == b'D' {
            assert!(b.is_ascii_digit(), "byte {i} of {s:?} is not a digit");
        } else {
            assert_eq!(b, want, "byte {i} of {:?}", s.escape_ascii().to_string());
        }
    }
    assert_eq!(timestamp::parse(&s), Ok(ns), "{}", s.escape_ascii().to_string());
    let theirs = DateTime::from_timestamp_nanos(ns).format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string();
    assert_eq!(std::str::from_utf8(&s).unwrap(), theirs, "format({ns}) differs from chrono");

    let since = timestamp::format_since(ns);
    let clamped = ns.max(0);
    let (secs, frac) = since.split_once('.').expect("since has a dot");
    assert_eq!(frac.len(), 9, "{since}");
    let back = secs.parse::<i64>().unwrap() * 1_000_000_000 + frac.parse::<i64>().unwrap();
    assert_eq!(back, clamped, "format_since({ns}) = {since}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ns) = timestamp::parse(data) {
        let text = data.escape_ascii().to_string();
        assert!(data.len() <= MAX_LEN, "accepted {} bytes: {text}", data.len());
        assert_eq!(timestamp::parse(&timestamp::format(ns)), Ok(ns), "{text}");
        let s = std::str::from_utf8(data).expect("accepted text is ASCII");
        let theirs = DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("chrono rejects {text}, we read {ns}: {e}"));
        assert_eq!(theirs.timestamp_nanos_opt(), Some(ns), "chrono reads {text} otherwise");
        if data.len() == FORMATTED_LEN && data[10] == b'T' && data[29] == b'Z' {
            assert_eq!(&timestamp::format(ns), data, "canonical text not reproduced");
        }
    }
    if let Some(b) = data.first_chunk::<8>() {
        check_format(i64::from_le_bytes(*b));
    }
    let mut parser = Parser::default();
    for (i, part) in data.split(|&b| b == b'\n').enumerate() {
        assert_eq!(
            parser.parse(part),
            timestamp::parse(part),
            "Parser differs from parse on part {i}: {}",
            part.escape_ascii()
        );
    }
});
