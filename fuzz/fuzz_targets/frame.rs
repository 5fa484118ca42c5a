//! `FrameDecoder` over arbitrary bytes.
//!
//! Input: `[cap, split_lo, split_hi, stream bytes...]`.
//! - cap byte: `0xff` = the default cap, `0xfe` = `u32::MAX`, else `2 * byte`
//!   (small, so `TooLong` is common).
//!
//! Invariants:
//! - the stream fed whole, cut at the chosen point, and byte at a time gives
//!   the same events (start, merged payload, end) and the same error;
//! - all of those equal an independent whole-buffer reference decoder;
//! - every completed frame's payload is exactly its header's length, no
//!   `Start` exceeds the cap, `None` means all input was consumed, and a
//!   payload slice is the first `n` bytes of the call's input.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use log_capturer::docker::frame::{
    FrameDecoder, FrameError, FrameEvent, StreamId, DEFAULT_MAX_FRAME, HEADER_LEN,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Desc {
    Start {
        stream: StreamId,
        len: u32,
    },
    /// All payload of one frame seen so far, merged across events.
    Payload(Vec<u8>),
    End,
}

type Outcome = (Vec<Desc>, Result<(), FrameError>);

fn run(max: u32, pieces: &[&[u8]]) -> Outcome {
    let mut dec = FrameDecoder::new(max);
    let mut out = Vec::new();
    // (announced length, payload bytes seen) of the open frame.
    let mut open: Option<(u32, u64)> = None;
    for piece in pieces {
        let mut input: &[u8] = piece;
        loop {
            let (n, ev) = match dec.decode(input) {
                Ok(x) => x,
                Err(e) => return (out, Err(e)),
            };
            assert!(n <= input.len(), "consumed {n} of {}", input.len());
            match ev {
                None => {
                    assert_eq!(n, input.len(), "None must mean all input was consumed");
                    break;
                }
                Some(FrameEvent::Start { stream, len }) => {
                    assert!(open.is_none(), "Start inside a frame");
                    assert!(len <= max, "frame of {len} bytes passed the cap {max}");
                    assert_eq!(dec.stream(), stream);
                    open = Some((len, 0));
                    out.push(Desc::Start { stream, len });
                }
                Some(FrameEvent::Payload(p)) => {
                    assert!(n > 0 && p.len() == n, "payload {} for {n} consumed", p.len());
                    assert_eq!(p.as_ptr(), input.as_ptr(), "payload is not the input's start");
                    let (len, seen) = open.as_mut().expect("payload outside a frame");
                    *seen += p.len() as u64;
                    assert!(*seen <= u64::from(*len), "payload beyond the frame length");
                    match out.last_mut() {
                        Some(Desc::Payload(v)) => v.extend_from_slice(p),
                        _ => out.push(Desc::Payload(p.to_vec())),
                    }
                }
                Some(FrameEvent::End) => {
                    assert_eq!(n, 0, "End consumes nothing");
                    let (len, seen) = open.take().expect("End without Start");
                    assert_eq!(seen, u64::from(len), "frame ended with a short payload");
                    out.push(Desc::End);
                }
            }
            input = &input[n..];
        }
    }
    let fin = dec.finish();
    match (open, fin) {
        // Between frames, or inside a header.
        (None, Ok(())) => assert!(dec.at_boundary() || matches!(out.last(), Some(Desc::End))),
        (None, Err(FrameError::Truncated { missing })) => {
            assert!((1..HEADER_LEN as u32).contains(&missing) && !dec.at_boundary())
        }
        // Inside a payload.
        (Some((len, seen)), Err(FrameError::Truncated { missing })) => {
            assert_eq!(u64::from(missing), u64::from(len) - seen)
        }
        _ => panic!("finish {fin:?} disagrees with the open frame {open:?}"),
    }
    (out, fin)
}

/// The format from its description, on the whole buffer.
fn reference(max: u32, data: &[u8]) -> Outcome {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        if rest.is_empty() {
            return (out, Ok(()));
        }
        if rest.len() < HEADER_LEN {
            let missing = (HEADER_LEN - rest.len()) as u32;
            return (out, Err(FrameError::Truncated { missing }));
        }
        let stream = match rest[0] {
            0 => StreamId::Stdin,
            1 => StreamId::Stdout,
            2 => StreamId::Stderr,
            3 => StreamId::SystemErr,
            b => return (out, Err(FrameError::UnknownStream(b))),
        };
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > max {
            return (out, Err(FrameError::TooLong { len, max }));
        }
        out.push(Desc::Start { stream, len });
        let body = &rest[HEADER_LEN..];
        let have = body.len().min(len as usize);
        if have > 0 {
            out.push(Desc::Payload(body[..have].to_vec()));
        }
        if have < len as usize {
            let missing = len - have as u32;
            return (out, Err(FrameError::Truncated { missing }));
        }
        out.push(Desc::End);
        rest = &body[have..];
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = common::Ctrl::new(data);
    let max = match c.u8() {
        0xff => DEFAULT_MAX_FRAME,
        0xfe => u32::MAX,
        b => u32::from(b) * 2,
    };
    let split = c.u16();
    let wire = c.rest();
    let at = common::point(split, wire.len());

    let whole = run(max, &[wire]);
    let want = reference(max, wire);
    assert_eq!(whole, want, "decoder differs from the reference");
    let halves = run(max, &common::cut(wire, &[at]));
    assert_eq!(halves, whole, "split at {at} changed the result");
    let bytes = run(max, &common::bytewise(wire));
    assert_eq!(bytes, whole, "byte-at-a-time changed the result");
});
