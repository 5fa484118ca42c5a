//! `sink::response::ResponseReader`: the answer to a push, from whatever a
//! broken or hostile sink (or a proxy in front of it) sends.
//!
//! Input: `[head, eof, nsplit, u16 x 3, chunk]` then the rest. `head % 6`
//! puts a head in front of the rest: 0 none (the rest is the whole answer),
//! 1 a `204` (the rest is then bytes after the answer), 2 a chunked `429`
//! whose body the target chunk-encodes from the rest in chunks of
//! `chunk + 1` bytes, 3 a `400` with a `Content-Length` exact, short or long
//! (`head >> 3`), 4 a `100 Continue` then a `500` read until close, 5 an
//! HTTP/1.0 `200` with a length. `eof & 1`: the connection closes after the
//! last byte.
//!
//! Invariants: fed whole, cut at 1 to 3 points, and byte at a time (up to
//! 4 KiB), the outcome (the response, or the error with offsets aside, or
//! "incomplete" with `head_seen`/`started`) is the same. A response is
//! never interim, its message is at most `MAX_MESSAGE` bytes of body turned
//! to text (a prefix of the body's lossy text, trimmed), and a response
//! completed by EOF never keeps the connection. For the heads the target
//! writes, the status, framing and keep-alive are the ones written, and a
//! body over `MAX_BODY` is always refused.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use log_capturer::http::body::BodyError;
use log_capturer::sink::response::{PushResponse, ResponseReader, SinkResponseError, MAX_BODY, MAX_MESSAGE};

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done(PushResponse),
    Failed(SinkResponseError),
    /// Every byte taken, no EOF: (head_seen, started).
    Incomplete(bool, bool),
}

/// Offsets in body errors are relative to the failing call's input, so
/// they depend on the cut; everything else must not.
fn without_offsets(e: SinkResponseError) -> SinkResponseError {
    match e {
        SinkResponseError::Body(BodyError::BadChunk { byte, expected, .. }) => {
            SinkResponseError::Body(BodyError::BadChunk { at: 0, byte, expected })
        }
        SinkResponseError::Body(BodyError::ChunkSizeOverflow { .. }) => {
            SinkResponseError::Body(BodyError::ChunkSizeOverflow { at: 0 })
        }
        SinkResponseError::Body(BodyError::LineTooLong { .. }) => {
            SinkResponseError::Body(BodyError::LineTooLong { at: 0 })
        }
        e => e,
    }
}

/// Feed the pieces as a driver would: stop at the response; bytes after
/// it, in the same piece or a later one, are the server out of step.
fn run(pieces: &[&[u8]], eof: bool) -> Outcome {
    let mut r = ResponseReader::new();
    for (i, piece) in pieces.iter().enumerate() {
        match r.push(piece) {
            Ok(None) => {}
            Ok(Some(resp)) => {
                assert!(r.head_seen());
                if pieces[i + 1..].iter().any(|p| !p.is_empty()) {
                    // What the reader says when fed them anyway.
                    let next = pieces[i + 1..].iter().find(|p| !p.is_empty()).unwrap();
                    assert_eq!(r.push(next), Err(SinkResponseError::AlreadyComplete));
                    return Outcome::Failed(SinkResponseError::TrailingBytes);
                }
                assert_eq!(r.push(b""), Ok(None), "an empty push after the end");
                return Outcome::Done(resp);
            }
            Err(e) => return Outcome::Failed(without_offsets(e)),
        }
    }
    if !eof {
        return Outcome::Incomplete(r.head_seen(), r.started());
    }
    match r.eof() {
        Ok(resp) => {
            assert!(!resp.keep_alive, "completed by EOF yet keep-alive");
            Outcome::Done(resp)
        }
        Err(e) => Outcome::Failed(without_offsets(e)),
    }
}

fuzz_target!(|input: &[u8]| {
    let mut c = common::Ctrl::new(input);
    let head = c.u8();
    let eof = c.u8() & 1 == 1;
    let nsplit = c.u8();
    let raw = [c.u16(), c.u16(), c.u16()];
    let chunk_size = 1 + usize::from(c.u8());
    let rest = c.rest();

    let mode = head % 6;
    let length = match (head >> 3) & 3 {
        1 => rest.len() / 2,
        2 => rest.len() + 1,
        _ => rest.len(),
    };
    let mut wire = Vec::with_capacity(rest.len() + 128);
    match mode {
        1 => wire.extend_from_slice(b"HTTP/1.1 204 No Content\r\nServer: nginx\r\n\r\n"),
        2 => {
            wire.extend_from_slice(
                b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            common::chunk(rest, chunk_size, &mut wire);
        }
        3 => wire.extend_from_slice(
            format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {length}\r\n\r\n").as_bytes(),
        ),
        4 => {
            wire.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Internal Server Error\r\n\r\n")
        }
        5 => wire.extend_from_slice(
            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", rest.len()).as_bytes(),
        ),
        _ => {}
    }
    if mode != 2 {
        wire.extend_from_slice(rest);
    }

    let whole = run(&[&wire], eof);
    if let Outcome::Done(r) = &whole {
        assert!((200..600).contains(&r.status), "an interim or invalid status returned: {r:?}");
        assert!(r.message.len() <= 3 * MAX_MESSAGE, "a message of {} bytes", r.message.len());
        assert_eq!(r.message.trim(), r.message, "untrimmed");
    }

    // What the heads the target wrote must give.
    let body_text = String::from_utf8_lossy(rest);
    let check_message = |r: &PushResponse| {
        assert!(
            body_text.trim_start().starts_with(&r.message),
            "message {:?} is not from the body",
            r.message
        );
        let kept = String::from_utf8_lossy(&rest[..rest.len().min(MAX_MESSAGE)]);
        assert!(r.message.len() <= kept.len(), "more than the first {MAX_MESSAGE} bytes");
    };
    let too_large = Outcome::Failed(SinkResponseError::TooLarge);
    match mode {
        1 if rest.is_empty() => match &whole {
            Outcome::Done(r) => assert_eq!((r.status, r.keep_alive, r.message.as_str()), (204, true, "")),
            o => panic!("204 gave {o:?}"),
        },
        1 => assert_eq!(whole, Outcome::Failed(SinkResponseError::TrailingBytes)),
        2 if rest.len() > MAX_BODY => assert_eq!(whole, too_large),
        2 => match &whole {
            Outcome::Done(r) => {
                assert_eq!((r.status, r.keep_alive), (429, true));
                assert!(r.retry_after.is_some());
                check_message(r);
            }
            o => panic!("a chunked 429 gave {o:?}"),
        },
        3 if length > MAX_BODY => assert_eq!(whole, too_large),
        3 if length < rest.len() => assert_eq!(whole, Outcome::Failed(SinkResponseError::TrailingBytes)),
        3 if length > rest.len() && eof => {
            assert_eq!(whole, Outcome::Failed(SinkResponseError::Body(BodyError::Truncated)))
        }
        3 if length > rest.len() => assert_eq!(whole, Outcome::Incomplete(true, true)),
        3 => match &whole {
            Outcome::Done(r) => {
                assert_eq!((r.status, r.keep_alive), (400, true));
                check_message(r);
            }
            o => panic!("a 400 gave {o:?}"),
        },
        4 if rest.len() > MAX_BODY => assert_eq!(whole, too_large),
        4 if !eof => assert_eq!(whole, Outcome::Incomplete(true, true)),
        4 => match &whole {
            Outcome::Done(r) => {
                assert_eq!((r.status, r.keep_alive), (500, false));
                check_message(r);
            }
            o => panic!("a close-delimited 500 gave {o:?}"),
        },
        5 if rest.len() > MAX_BODY => assert_eq!(whole, too_large),
        5 => match &whole {
            Outcome::Done(r) => {
                assert_eq!((r.status, r.keep_alive), (200, false), "HTTP/1.0");
                check_message(r);
            }
            o => panic!("an HTTP/1.0 200 gave {o:?}"),
        },
        _ => {}
    }

    let points = common::split_points(nsplit, &raw, wire.len());
    assert_eq!(run(&common::cut(&wire, &points), eof), whole, "cut at {points:?}");
    if wire.len() <= 4096 {
        assert_eq!(run(&common::bytewise(&wire), eof), whole, "byte at a time");
    }
});
