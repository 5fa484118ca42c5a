//! `BodyDecoder` for `Transfer-Encoding: chunked`.
//!
//! Input: `[mode, nsplit, s0 s0, s1 s1, s2 s2, rest...]` (split points are
//! little-endian u16s, see `common::point`).
//! - mode even: `rest` is decoded as a chunked body as is;
//! - mode odd: `rest` is `[flags, nctl, ctl * nctl, data...]`: the target
//!   chunk-encodes `data` itself (chunk sizes, extensions, hex case, leading
//!   zeros, bare LF, trailers and trailing garbage chosen by the control
//!   bytes) and decodes that.
//!
//! Invariants:
//! - whole input, 1 to 3 cuts, and byte at a time give the same data, the
//!   same end position and the same error (kind and absolute offset, which
//!   is the failing call's offset plus where that call's input began);
//!   `decode_all` agrees too;
//! - `None` means all input was consumed, `Data` is never empty and ends at
//!   the consumed count, after `End` nothing more is consumed;
//! - a body the target encoded decodes to exactly the original data and ends
//!   exactly at the end of the encoding.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use log_capturer::http::body::{self, BodyDecoder, BodyError, BodyEvent, BodyKind};

#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// `End` after this many bytes of the whole input.
    Ended { consumed: usize },
    /// The error with its offset zeroed, and the absolute offset.
    Failed { err: BodyError, at: Option<usize> },
}

fn zero_offset(e: BodyError) -> BodyError {
    match e {
        BodyError::BadChunk { byte, expected, .. } => BodyError::BadChunk { at: 0, byte, expected },
        BodyError::ChunkSizeOverflow { .. } => BodyError::ChunkSizeOverflow { at: 0 },
        BodyError::LineTooLong { .. } => BodyError::LineTooLong { at: 0 },
        BodyError::Truncated => BodyError::Truncated,
    }
}

fn failed(e: BodyError, base: usize) -> End {
    End::Failed { err: zero_offset(e), at: e.offset().map(|o| base + o) }
}

fn run(pieces: &[&[u8]]) -> (Vec<u8>, End) {
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    let mut data = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        let mut input: &[u8] = piece;
        loop {
            let (n, ev) = match dec.decode(input) {
                Ok(x) => x,
                Err(e) => {
                    if let Some(o) = e.offset() {
                        assert!(o < input.len(), "error offset {o} outside the input");
                    }
                    return (data, failed(e, consumed));
                }
            };
            assert!(n <= input.len(), "consumed {n} of {}", input.len());
            consumed += n;
            match ev {
                None => {
                    assert_eq!(n, input.len(), "None must mean all input was consumed");
                    break;
                }
                Some(BodyEvent::Data(d)) => {
                    assert!(!d.is_empty(), "empty Data event");
                    assert_eq!(
                        d.as_ptr_range().end,
                        input[..n].as_ptr_range().end,
                        "Data does not end at the consumed count"
                    );
                    data.extend_from_slice(d);
                }
                Some(BodyEvent::End) => {
                    assert!(dec.is_done());
                    let rest = &input[n..];
                    assert_eq!(dec.decode(rest), Ok((0, Some(BodyEvent::End))));
                    assert_eq!(dec.finish(), Ok(()));
                    return (data, End::Ended { consumed });
                }
            }
            input = &input[n..];
        }
    }
    match dec.finish() {
        Ok(()) => panic!("chunked body finished without End"),
        Err(e) => {
            assert_eq!(e, BodyError::Truncated);
            (data, failed(e, consumed))
        }
    }
}

fn check_splits(wire: &[u8], points: &[usize]) -> (Vec<u8>, End) {
    let whole = run(&[wire]);
    let cut = run(&common::cut(wire, points));
    assert_eq!(cut, whole, "cutting at {points:?} changed the result");
    let bytes = run(&common::bytewise(wire));
    assert_eq!(bytes, whole, "byte-at-a-time changed the result");

    let mut out = Vec::new();
    let all = match body::decode_all(BodyKind::Chunked, wire, &mut out) {
        Ok(n) => End::Ended { consumed: n },
        Err(e) => failed(e, 0),
    };
    assert_eq!((out, all), whole, "decode_all disagrees");
    whole
}

const EXTENSIONS: [&[u8]; 6] = [b";name=value", b";x", b" ;a=\"b c\"", b"\t;q=1", b";", b"  "];
const TRAILERS: [&[u8]; 3] = [b"X-Trailer: yes", b"Checksum:abc", b"A: \tb"];

/// Chunk-encode `data`; the control bytes choose every detail.
fn encode(flags: u8, ctl: &[u8], data: &[u8]) -> Vec<u8> {
    let mut k = 0usize;
    let mut next = || {
        let b = if ctl.is_empty() { 0x17 } else { ctl[k % ctl.len()] };
        k += 1;
        b
    };
    let upper = flags & 1 != 0;
    let mut wire = Vec::new();
    let eol = |wire: &mut Vec<u8>, b: u8| {
        if b & 0x20 != 0 {
            wire.push(b'\n')
        } else {
            wire.extend_from_slice(b"\r\n")
        }
    };
    let size_line = |wire: &mut Vec<u8>, size: usize, b: u8| {
        wire.extend(std::iter::repeat_n(b'0', usize::from(b >> 6)));
        let hex = if upper { format!("{size:X}") } else { format!("{size:x}") };
        wire.extend_from_slice(hex.as_bytes());
        if b & 0x10 != 0 {
            wire.extend_from_slice(EXTENSIONS[usize::from(b) % EXTENSIONS.len()]);
        }
        eol(wire, b);
    };
    let mut rest = data;
    while !rest.is_empty() {
        let b = next();
        let size =
            if b & 0x08 != 0 { 1 + usize::from(b) * 37 } else { 1 + usize::from(b & 0x07) }.min(rest.len());
        size_line(&mut wire, size, b);
        wire.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        eol(&mut wire, next());
    }
    // The last chunk, trailers, the final empty line.
    size_line(&mut wire, 0, next());
    for i in 0..usize::from((flags >> 1) & 3) {
        wire.extend_from_slice(TRAILERS[i % TRAILERS.len()]);
        eol(&mut wire, next());
    }
    eol(&mut wire, flags);
    wire
}

fuzz_target!(|input: &[u8]| {
    let mut c = common::Ctrl::new(input);
    let mode = c.u8();
    let nsplit = c.u8();
    let raw = [c.u16(), c.u16(), c.u16()];
    if mode & 1 == 0 {
        let wire = c.rest();
        let points = common::split_points(nsplit, &raw, wire.len());
        check_splits(wire, &points);
    } else {
        let flags = c.u8();
        let nctl = usize::from(c.u8() % 16);
        let rest = c.rest();
        let (ctl, data) = rest.split_at(nctl.min(rest.len()));
        let mut wire = encode(flags, ctl, data);
        let len = wire.len();
        if flags & 0x80 != 0 {
            // What follows the body belongs to the next response.
            wire.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        }
        let points = common::split_points(nsplit, &raw, wire.len());
        let (got, end) = check_splits(&wire, &points);
        assert_eq!(end, End::Ended { consumed: len }, "own encoding not accepted: {}", common::show(&wire));
        assert_eq!(got, data, "own encoding decoded to other data");
    }
});
