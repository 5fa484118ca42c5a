//! The whole pipeline: `ResponseDecoder` from the HTTP head to records.
//!
//! Input: 12 control bytes, then the response (or a body, see `head`):
//! - 0 `head`: low 3 bits choose what goes in front of the rest:
//!   0 dockerd 20.10's chunked 200 head (rest must be chunked itself),
//!   1 a `Content-Length` 200 (multiplexed content type),
//!   2 a raw-stream 200 read until close, 3 a 404 JSON error,
//!   4 dockerd's chunked head and 5 a multiplexed chunked head, both with the
//!   rest chunk-encoded by the target, 6 and 7 nothing (the rest is a whole
//!   response, e.g. a real capture). Bits 3-4: the `Content-Length` is the
//!   rest's length, one more (truncated), or half (trailing bytes).
//! - 1 flags: bit 0 detect_timestamps, bit 1 timestamps, bit 2 raw framing,
//!   bit 3 framing_from_content_type, bits 4-5 max_frame (default, 64, 4096,
//!   default).
//! - 2 max_line = 1 + b % 48 (0xff: 100000); 3 raw_partial_len = 1 + b % 64
//!   (0xff: 16384); 4 chunk size for heads 4 and 5 = 1 + b;
//! - 5 number of cuts (1 + b % 3); 6-11 cut points (u16 LE, modulo the
//!   length, or scaled to it over 64 KiB).
//!
//! Invariants: fed whole, cut at 1 to 3 points, and (when short) byte at a
//! time, the response gives the same records, daemon errors, error (kind
//! and absolute offset), head, framing/timestamps decision, trailing byte
//! count and done state. Every record: message at most `max_line` bytes (a
//! truncated one exactly `max_line`), no `\n` in it, not truncated and
//! partial at once, never the systemerr stream, stdout only in raw framing;
//! timestamps on all records or on none, as decided; partial records (from
//! the final flush) come last, at most one per stream. Daemon error
//! messages are at most 4096 bytes.
//!
//! Where src/ says which byte an error offset names (head errors: 0 or the
//! 16 KiB cap; timestamp errors: the space ending the prefix), the offset
//! of the whole run is checked to name it.
//!
//! A known bug in src/ is tolerated unless `FUZZ_STRICT=1` (see
//! `known_bug_relaxations`); it has a reproducer in fuzz/regressions/.
#![no_main]

mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use log_capturer::docker::frame::{StreamId, DEFAULT_MAX_FRAME};
use log_capturer::docker::logstream::{
    self, Framing, LogEvent, LogStreamConfig, LogStreamError, LogStreamErrorKind, DOCKERD_PARTIAL_LEN,
    MAX_DAEMON_ERROR,
};
use log_capturer::http::body::BodyError;
use log_capturer::http::head::{HeadError, ResponseHead, MAX_HEAD};
use log_capturer::record::OwnedRecord;
use log_capturer::response::{ResponseConfig, ResponseDecoder, ResponseError, ResponseErrorKind};

const DOCKERD_CHUNKED: &str = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\n\
    Docker-Experimental: false\r\nOstype: linux\r\nServer: Docker/20.10.24+dfsg1 (linux)\r\n\
    Date: Fri, 27 Nov 2026 20:46:12 GMT\r\nTransfer-Encoding: chunked\r\n\r\n";
const MUX_CHUNKED: &str = "HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\n\
    Content-Type: application/vnd.docker.multiplexed-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
const RAW_UNTIL_CLOSE: &str = "HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\n\
    Content-Type: application/vnd.docker.raw-stream\r\nConnection: close\r\n\r\n";

fn env_flag(name: &str, cell: &'static OnceLock<bool>) -> bool {
    *cell.get_or_init(|| std::env::var_os(name).is_some_and(|v| v == "1"))
}

/// `FUZZ_STRICT=1`: no relaxation for known bugs.
fn strict() -> bool {
    static S: OnceLock<bool> = OnceLock::new();
    env_flag("FUZZ_STRICT", &S)
}

/// `FUZZ_DEBUG=1`: print the response and what it decoded to (for running
/// the target binary on one input by hand).
fn debug() -> bool {
    static S: OnceLock<bool> = OnceLock::new();
    env_flag("FUZZ_DEBUG", &S)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    records: Vec<OwnedRecord>,
    daemon_errors: Vec<Vec<u8>>,
    /// Offsets inside `Body` and `Log` kinds (relative to one call's input)
    /// are zeroed; `offset` is absolute and compared as is.
    result: Result<(), ResponseError>,
    head: Option<ResponseHead>,
    /// Framing and timestamps in force once the log decoder exists.
    decided: Option<(Framing, bool)>,
    trailing: u64,
    done: bool,
}

fn normalize(e: ResponseError) -> ResponseError {
    let kind = match e.kind {
        ResponseErrorKind::Body(b) => ResponseErrorKind::Body(match b {
            BodyError::BadChunk { byte, expected, .. } => BodyError::BadChunk { at: 0, byte, expected },
            BodyError::ChunkSizeOverflow { .. } => BodyError::ChunkSizeOverflow { at: 0 },
            BodyError::LineTooLong { .. } => BodyError::LineTooLong { at: 0 },
            BodyError::Truncated => BodyError::Truncated,
        }),
        ResponseErrorKind::Log(l) => ResponseErrorKind::Log(LogStreamError { at: 0, ..l }),
        k => k,
    };
    ResponseError { kind, ..e }
}

fn run(cfg: ResponseConfig, pieces: &[&[u8]]) -> Outcome {
    let mut dec = ResponseDecoder::new(cfg);
    let mut records = Vec::new();
    let mut daemon_errors = Vec::new();
    let mut emit = |ev: LogEvent<'_>| match ev {
        LogEvent::Record(r) => records.push(r.to_owned()),
        LogEvent::DaemonError(m) => daemon_errors.push(m.to_vec()),
    };
    let mut result = Ok(());
    for piece in pieces {
        result = dec.push(piece, &mut emit);
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = dec.finish(&mut emit);
    }
    if let Err(e) = &result {
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        if let Some(at) = e.offset {
            assert!(at <= total as u64, "error offset {at} beyond the {total} bytes: {e:?}");
        }
    }
    let decided = dec.logs().map(|l| (l.config().framing, l.config().timestamps));
    let out = Outcome {
        records,
        daemon_errors,
        result: result.map_err(normalize),
        head: dec.head().copied(),
        decided,
        trailing: dec.trailing_bytes(),
        done: dec.is_done(),
    };
    check_records(&cfg, &out);
    out
}

fn check_records(cfg: &ResponseConfig, out: &Outcome) {
    let max_line = cfg.stream.max_line;
    let mut partial_streams: Vec<StreamId> = Vec::new();
    for r in &out.records {
        let m = r.message.as_slice();
        assert!(m.len() <= max_line, "message of {} over max_line {max_line}", m.len());
        assert!(!r.truncated || m.len() == max_line, "truncated record not at the cap");
        assert!(!m.contains(&b'\n'), "newline inside a record");
        assert!(!(r.truncated && r.partial), "truncated and partial");
        assert_ne!(r.stream, StreamId::SystemErr, "systemerr as a record");
        if r.partial {
            assert!(!partial_streams.contains(&r.stream), "two partial records on {:?}", r.stream);
            partial_streams.push(r.stream);
        } else {
            assert!(partial_streams.is_empty(), "a whole record after a partial one");
        }
    }
    if let Some(first) = out.records.first() {
        let (framing, timestamps) = out.decided.expect("records without a log decoder");
        if framing == Framing::Raw {
            assert!(out.records.iter().all(|r| r.stream == StreamId::Stdout));
        }
        assert_eq!(first.timestamp.is_some(), timestamps);
        assert!(
            out.records.iter().all(|r| r.timestamp.is_some() == timestamps),
            "timestamps on some records only"
        );
    }
    for m in &out.daemon_errors {
        assert!(m.len() <= MAX_DAEMON_ERROR);
    }
}

/// Where src/ documents the byte an error offset names, check it is that
/// byte: a head error is at 0 (httparse does not say where) or at the
/// 16 KiB cap, a timestamp error at the space that ends the prefix.
fn check_error_offset(wire: &[u8], result: &Result<(), ResponseError>) {
    let Err(e) = result else { return };
    let at = e.offset.map(|o| o as usize);
    match &e.kind {
        ResponseErrorKind::Head(HeadError::TooLarge) => {
            assert!(matches!(at, Some(0 | MAX_HEAD)), "{e:?}")
        }
        ResponseErrorKind::Head(_) => assert_eq!(at, Some(0), "{e:?}"),
        ResponseErrorKind::Log(LogStreamError { kind: LogStreamErrorKind::Timestamp(_), .. }) => {
            let at = at.expect("timestamp error without offset");
            assert_eq!(wire.get(at), Some(&b' '), "{e:?} does not point at the prefix's space");
        }
        _ => {}
    }
}

/// Known bugs in src/ that the target tolerates unless `FUZZ_STRICT=1`:
/// true if the difference between `whole` and `other` is explained by one.
fn known_bug_relaxations(whole: &Outcome, other: &Outcome) -> bool {
    if strict() {
        return false;
    }
    // regressions/response-detect-timestamps-64k: with multiplexed framing
    // and timestamp detection, a body whose first DETECT_LIMIT bytes hold no
    // complete first message prefix (a run of empty frames) is decided from
    // whatever the first reads held, so the decision (and every record)
    // depends on how the input was cut.
    if let (Some((Framing::Multiplexed, ta)), Some((Framing::Multiplexed, tb))) =
        (whole.decided, other.decided)
    {
        if ta != tb {
            return true;
        }
    }
    false
}

/// One line per record, then the rest: short enough to read in a crash log.
fn describe(o: &Outcome) -> String {
    let mut s = String::new();
    for r in &o.records {
        s += &format!(
            "  {:?} {:?}{}{} {:?}\n",
            r.timestamp,
            r.stream,
            if r.truncated { " truncated" } else { "" },
            if r.partial { " partial" } else { "" },
            common::show(&r.message)
        );
    }
    for m in &o.daemon_errors {
        s += &format!("  daemon error {:?}\n", common::show(m));
    }
    s += &format!(
        "  result {:?}\n  head {:?}\n  decided {:?}, trailing {}, done {}\n",
        o.result, o.head, o.decided, o.trailing, o.done
    );
    s
}

fn compare(what: &str, whole: &Outcome, other: &Outcome) {
    if whole != other && !known_bug_relaxations(whole, other) {
        panic!("{what} changed the outcome:\nwhole:\n{}{what}:\n{}", describe(whole), describe(other));
    }
}

fuzz_target!(|input: &[u8]| {
    let mut c = common::Ctrl::new(input);
    let head = c.u8();
    let flags = c.u8();
    let max_line = match c.u8() {
        0xff => 100_000,
        b => 1 + usize::from(b % 48),
    };
    let raw_partial_len = match c.u8() {
        0xff => DOCKERD_PARTIAL_LEN,
        b => 1 + usize::from(b % 64),
    };
    let chunk_size = 1 + usize::from(c.u8());
    let nsplit = c.u8();
    let raw = [c.u16(), c.u16(), c.u16()];
    let rest = c.rest();

    let mut stream = LogStreamConfig::new(
        if flags & 4 != 0 { Framing::Raw } else { Framing::Multiplexed },
        flags & 2 != 0,
    );
    stream.max_line = max_line;
    stream.raw_partial_len = raw_partial_len;
    stream.max_frame = match (flags >> 4) & 3 {
        1 => 64,
        2 => 4096,
        _ => DEFAULT_MAX_FRAME,
    };
    let cfg = ResponseConfig {
        stream,
        framing_from_content_type: flags & 8 != 0,
        detect_timestamps: flags & 1 != 0,
    };

    let content_length = match (head >> 3) & 3 {
        1 => rest.len() + 1,
        2 => rest.len() / 2,
        _ => rest.len(),
    };
    let mut wire = Vec::with_capacity(rest.len() + 256);
    match head % 8 {
        0 => wire.extend_from_slice(DOCKERD_CHUNKED.as_bytes()),
        1 => wire.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\n\
                 Content-Type: application/vnd.docker.multiplexed-stream\r\n\
                 Content-Length: {content_length}\r\n\r\n"
            )
            .as_bytes(),
        ),
        2 => wire.extend_from_slice(RAW_UNTIL_CLOSE.as_bytes()),
        3 => wire.extend_from_slice(
            format!(
                "HTTP/1.1 404 Not Found\r\nApi-Version: 1.41\r\n\
                 Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
            )
            .as_bytes(),
        ),
        4 | 5 => {
            let h = if head % 8 == 4 { DOCKERD_CHUNKED } else { MUX_CHUNKED };
            wire.extend_from_slice(h.as_bytes());
            common::chunk(rest, chunk_size, &mut wire);
        }
        _ => {}
    }
    if !matches!(head % 8, 4 | 5) {
        wire.extend_from_slice(rest);
    }

    let whole = run(cfg, &[&wire]);
    check_error_offset(&wire, &whole.result);
    if debug() {
        eprintln!(
            "config {cfg:?}\nresponse ({} bytes): {}\nwhole:\n{}",
            wire.len(),
            common::show(&wire),
            describe(&whole)
        );
    }
    if matches!(head % 8, 4 | 5) {
        // The target chunked `rest` itself: the log stream decoder on the
        // whole body in one push must agree with the pipeline.
        if let (Some((framing, timestamps)), false) = (whole.decided, rest.is_empty()) {
            let mut cfg = cfg.stream;
            cfg.framing = framing;
            cfg.timestamps = timestamps;
            let direct = logstream::decode_all(cfg, rest);
            let kind = |r: &Result<(), ResponseError>| match r {
                Ok(()) => None,
                Err(ResponseError { kind: ResponseErrorKind::Log(e), .. }) => Some(e.kind),
                Err(e) => panic!("chunked by the target, yet {e:?}"),
            };
            match direct {
                Ok((records, daemon_errors)) => {
                    assert_eq!(kind(&whole.result), None, "only the pipeline fails");
                    assert_eq!(
                        (&records, &daemon_errors),
                        (&whole.records, &whole.daemon_errors),
                        "logstream::decode_all differs from the pipeline"
                    );
                }
                Err(e) => assert_eq!(kind(&whole.result), Some(e.kind), "errors differ"),
            }
        }
    }

    let points = common::split_points(nsplit, &raw, wire.len());
    let cut = run(cfg, &common::cut(&wire, &points));
    if debug() {
        eprintln!("cut at {points:?}:\n{}", describe(&cut));
    }
    compare(&format!("cutting at {points:?}"), &whole, &cut);
    if wire.len() <= 2048 {
        let bytes = run(cfg, &common::bytewise(&wire));
        compare("byte at a time", &whole, &bytes);
    }
});
