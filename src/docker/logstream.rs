//! The body of a `GET /containers/{id}/logs` response, decoded into records.
//!
//! Ties together the framing ([`Framing::Multiplexed`] frames or a TTY's
//! [`Framing::Raw`] bytes), the timestamp prefix each message carries with
//! `timestamps=1`, and line reassembly. Pure: body bytes in (already
//! de-chunked), [`LogEvent`]s out.

use std::fmt;

use memchr::memchr;

use crate::docker::frame::{FrameDecoder, FrameError, FrameEvent, StreamId, DEFAULT_MAX_FRAME, HEADER_LEN};
use crate::docker::lines::{LineAssembler, LineStats, DEFAULT_MAX_LINE};
use crate::docker::timestamp::{self, TimestampError};
use crate::record::Record;

/// dockerd's log copier buffer: a line longer than this arrives as several
/// messages of exactly this many bytes, then the rest.
pub const DOCKERD_PARTIAL_LEN: usize = 16 * 1024;

/// The longest daemon error message (stream 3) we keep; the rest is cut.
pub const MAX_DAEMON_ERROR: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// 8-byte frame headers: a container without a TTY.
    Multiplexed,
    /// A TTY container: bytes as the terminal wrote them, stdout and stderr
    /// merged, lines ending in `\r\n`.
    Raw,
}

#[derive(Debug, Clone, Copy)]
pub struct LogStreamConfig {
    pub framing: Framing,
    /// Each message starts with an RFC 3339 timestamp and a space.
    pub timestamps: bool,
    pub max_line: usize,
    pub max_frame: u32,
    /// In a raw stream with timestamps, dockerd's partial messages have no
    /// frame to delimit them: after exactly this many bytes without a
    /// newline, a timestamp prefix may follow, and is removed if it does.
    pub raw_partial_len: usize,
}

impl LogStreamConfig {
    pub fn new(framing: Framing, timestamps: bool) -> Self {
        Self {
            framing,
            timestamps,
            max_line: DEFAULT_MAX_LINE,
            max_frame: DEFAULT_MAX_FRAME,
            raw_partial_len: DOCKERD_PARTIAL_LEN,
        }
    }
}

#[derive(Debug)]
pub enum LogEvent<'a> {
    Record(Record<'a>),
    /// A `systemerr` frame: the daemon reports a problem reading the log
    /// (e.g. "Error grabbing logs: …"). Not container output.
    DaemonError(&'a [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStreamErrorKind {
    Frame(FrameError),
    Timestamp(TimestampError),
    /// No space within the first bytes of a message that should start with
    /// a timestamp.
    MissingTimestamp,
    /// A frame ended inside its timestamp prefix.
    FrameEndsInTimestamp,
}

/// A decoding error; `at` is the offset of the offending byte in the input
/// of the `push` call that failed (or 0 for errors found at `finish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStreamError {
    pub at: usize,
    pub kind: LogStreamErrorKind,
}

impl fmt::Display for LogStreamErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frame(e) => e.fmt(f),
            Self::Timestamp(e) => e.fmt(f),
            Self::MissingTimestamp => write!(f, "message does not start with a timestamp"),
            Self::FrameEndsInTimestamp => write!(f, "frame ends inside its timestamp"),
        }
    }
}

impl fmt::Display for LogStreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for LogStreamError {}

/// Where we are inside the current message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    /// Reading message content.
    Content,
    /// Collecting a timestamp prefix that must be there.
    Expect,
    /// Raw mode after a full partial: a prefix may follow; if what follows
    /// is not one, it is content.
    Maybe,
}

#[derive(Debug)]
pub struct LogStreamDecoder {
    cfg: LogStreamConfig,
    frames: FrameDecoder,
    /// The stream of the current frame (always stdout in raw mode).
    stream: StreamId,
    prefix: Prefix,
    prefix_buf: [u8; timestamp::MAX_LEN],
    prefix_len: usize,
    ts_parser: timestamp::Parser,
    /// Timestamp of the current message.
    ts: Option<i64>,
    /// Raw mode: content bytes of the current message seen so far.
    raw_msg_len: usize,
    lines: [LineAssembler; 3],
    daemon_error: Vec<u8>,
}

impl LogStreamDecoder {
    pub fn new(cfg: LogStreamConfig) -> Self {
        let strip_cr = cfg.framing == Framing::Raw;
        let asm = |s| LineAssembler::new(s, cfg.max_line, strip_cr);
        Self {
            cfg,
            frames: FrameDecoder::new(cfg.max_frame),
            stream: StreamId::Stdout,
            prefix: if cfg.timestamps { Prefix::Expect } else { Prefix::Content },
            prefix_buf: [0; timestamp::MAX_LEN],
            prefix_len: 0,
            ts_parser: timestamp::Parser::default(),
            ts: None,
            raw_msg_len: 0,
            lines: [asm(StreamId::Stdin), asm(StreamId::Stdout), asm(StreamId::Stderr)],
            daemon_error: Vec::new(),
        }
    }

    pub fn config(&self) -> &LogStreamConfig {
        &self.cfg
    }

    /// Truncation counts over all streams.
    pub fn stats(&self) -> LineStats {
        self.lines.iter().fold(LineStats::default(), |a, l| LineStats {
            truncated: a.truncated + l.stats().truncated,
            discarded_bytes: a.discarded_bytes + l.stats().discarded_bytes,
        })
    }

    /// Per stream (stdin, stdout, stderr), the timestamp of a line begun
    /// but not finished: where a reopened stream must resume.
    pub fn open_lines(&self) -> [Option<i64>; 3] {
        [0, 1, 2].map(|i| self.lines[i].open_line_timestamp())
    }

    /// Earliest timestamp of a line begun but not finished, on any stream.
    pub fn open_line_timestamp(&self) -> Option<i64> {
        self.lines.iter().filter_map(LineAssembler::open_line_timestamp).min()
    }

    /// Bytes held in line buffers.
    pub fn buffered(&self) -> usize {
        self.lines.iter().map(LineAssembler::buffered).sum()
    }

    /// Decode de-chunked body bytes, calling `emit` for each event.
    pub fn push<F>(&mut self, input: &[u8], emit: &mut F) -> Result<(), LogStreamError>
    where
        F: FnMut(LogEvent<'_>),
    {
        match self.cfg.framing {
            Framing::Multiplexed => self.push_frames(input, emit),
            Framing::Raw => self.push_raw(input, 0, emit),
        }
    }

    /// The body ended cleanly: emit unfinished lines as partial records.
    /// Fails if it ended inside a frame or a timestamp; the unfinished lines
    /// are then dropped, as for [`Self::abandon`].
    pub fn finish<F>(&mut self, emit: &mut F) -> Result<(), LogStreamError>
    where
        F: FnMut(LogEvent<'_>),
    {
        let err = |kind| Err(LogStreamError { at: 0, kind });
        let result = if self.cfg.framing == Framing::Multiplexed {
            self.frames.finish().map_err(|e| LogStreamError { at: 0, kind: LogStreamErrorKind::Frame(e) })
        } else if self.prefix == Prefix::Expect && self.prefix_len > 0 {
            err(LogStreamErrorKind::MissingTimestamp)
        } else {
            Ok(())
        };
        if result.is_err() {
            self.abandon();
            return result;
        }
        if self.prefix == Prefix::Maybe && self.prefix_len > 0 {
            // A raw stream ended right after a full partial with a few
            // bytes that never became a timestamp: they are content.
            let (buf, len, ts) = (self.prefix_buf, self.prefix_len, self.ts);
            self.lines[1].push(ts, &buf[..len], &mut |r| emit(LogEvent::Record(r)));
        }
        for l in &mut self.lines {
            l.flush(&mut |r| emit(LogEvent::Record(r)));
        }
        self.reset_message();
        Ok(())
    }

    /// The stream was cut short (rotation, error): drop unfinished lines;
    /// the reopened stream sends them again.
    pub fn abandon(&mut self) {
        for l in &mut self.lines {
            l.abandon();
        }
        self.frames = FrameDecoder::new(self.cfg.max_frame);
        self.reset_message();
    }

    fn reset_message(&mut self) {
        self.prefix = if self.cfg.timestamps { Prefix::Expect } else { Prefix::Content };
        self.prefix_len = 0;
        self.ts = None;
        self.raw_msg_len = 0;
        self.daemon_error.clear();
    }

    fn push_frames<F>(&mut self, input: &[u8], emit: &mut F) -> Result<(), LogStreamError>
    where
        F: FnMut(LogEvent<'_>),
    {
        let mut at = 0;
        loop {
            // A header error is found on the header's last byte, and that
            // is the offset reported: it is in this input however the
            // stream was cut into pieces.
            let held = self.frames.header_held();
            let (n, ev) = self.frames.decode(&input[at..]).map_err(|e| LogStreamError {
                at: at + (HEADER_LEN - held).saturating_sub(1),
                kind: LogStreamErrorKind::Frame(e),
            })?;
            let start = at;
            at += n;
            match ev {
                Some(FrameEvent::Start { stream, .. }) => {
                    self.stream = stream;
                    self.prefix = if self.cfg.timestamps && stream != StreamId::SystemErr {
                        Prefix::Expect
                    } else {
                        Prefix::Content
                    };
                    self.prefix_len = 0;
                    self.ts = None;
                }
                Some(FrameEvent::Payload(p)) => {
                    if self.stream == StreamId::SystemErr {
                        let room = MAX_DAEMON_ERROR - self.daemon_error.len();
                        self.daemon_error.extend_from_slice(&p[..p.len().min(room)]);
                    } else {
                        self.content(p, start, emit)?;
                    }
                }
                Some(FrameEvent::End) => {
                    if self.stream == StreamId::SystemErr {
                        emit(LogEvent::DaemonError(&self.daemon_error));
                        self.daemon_error.clear();
                    } else if self.prefix == Prefix::Expect && self.prefix_len > 0 {
                        return Err(LogStreamError { at, kind: LogStreamErrorKind::FrameEndsInTimestamp });
                    }
                }
                None => return Ok(()),
            }
        }
    }

    /// Message content of a frame (multiplexed mode): strip the timestamp
    /// prefix if one is expected, then hand the rest to the stream's lines.
    fn content<F>(&mut self, mut p: &[u8], base: usize, emit: &mut F) -> Result<(), LogStreamError>
    where
        F: FnMut(LogEvent<'_>),
    {
        if self.prefix == Prefix::Expect {
            match self.take_prefix(p, base)? {
                Some(used) => p = &p[used..],
                None => return Ok(()),
            }
        }
        let idx = self.stream as usize;
        self.lines[idx].push(self.ts, p, &mut |r| emit(LogEvent::Record(r)));
        Ok(())
    }

    /// Collect timestamp bytes from `p`. Returns how many bytes of `p` the
    /// prefix (and its space) used once complete, or `None` if all of `p`
    /// was prefix. In [`Prefix::Maybe`] mode a failed parse is not an error:
    /// `Some(0)` with `prefix_len` left for the caller to treat as content.
    fn take_prefix(&mut self, p: &[u8], base: usize) -> Result<Option<usize>, LogStreamError> {
        let room = timestamp::MAX_LEN - self.prefix_len;
        // Fast path: the whole prefix in this piece, parsed in place.
        if self.prefix_len == 0 {
            if let Some(space) = memchr(b' ', &p[..p.len().min(room + 1)]) {
                return self.finish_prefix(&p[..space], space, base);
            }
        }
        let space = memchr(b' ', &p[..p.len().min(room + 1)]);
        let upto = space.unwrap_or(p.len());
        if upto > room {
            if self.prefix == Prefix::Maybe {
                return Ok(Some(0));
            }
            return Err(LogStreamError { at: base + room, kind: LogStreamErrorKind::MissingTimestamp });
        }
        self.prefix_buf[self.prefix_len..self.prefix_len + upto].copy_from_slice(&p[..upto]);
        self.prefix_len += upto;
        let Some(space) = space else { return Ok(None) };
        let (buf, len) = (self.prefix_buf, self.prefix_len);
        match self.finish_prefix(&buf[..len], space, base)? {
            // Leave only what earlier calls collected: `p` is not used.
            Some(0) => {
                self.prefix_len -= upto;
                Ok(Some(0))
            }
            other => Ok(other),
        }
    }

    /// Parse a complete prefix `text` whose space is `p[space]`. Errors
    /// point at that space: where the prefix was found wrong, in this
    /// input whatever the pieces.
    fn finish_prefix(
        &mut self,
        text: &[u8],
        space: usize,
        base: usize,
    ) -> Result<Option<usize>, LogStreamError> {
        match self.ts_parser.parse(text) {
            Ok(ts) => {
                self.ts = Some(ts);
                self.prefix = Prefix::Content;
                self.prefix_len = 0;
                Ok(Some(space + 1))
            }
            Err(_) if self.prefix == Prefix::Maybe => Ok(Some(0)),
            Err(e) => Err(LogStreamError { at: base + space, kind: LogStreamErrorKind::Timestamp(e) }),
        }
    }

    /// A TTY stream: one stream of bytes in which messages end at `\n`, or,
    /// with timestamps, after a full partial of `raw_partial_len` bytes.
    fn push_raw<F>(&mut self, input: &[u8], base: usize, emit: &mut F) -> Result<(), LogStreamError>
    where
        F: FnMut(LogEvent<'_>),
    {
        let mut p = input;
        let mut at = base;
        while !p.is_empty() {
            let used = match self.prefix {
                Prefix::Content => self.raw_content(p, emit),
                Prefix::Expect | Prefix::Maybe => match self.take_prefix(p, at)? {
                    None => return Ok(()),
                    Some(0) => {
                        // After a full partial, what followed was not a
                        // timestamp: the line simply goes on. The bytes
                        // collected so far are content; so is `p`.
                        let (buf, len) = (self.prefix_buf, self.prefix_len);
                        self.prefix = Prefix::Content;
                        self.prefix_len = 0;
                        self.push_raw(&buf[..len], at, emit)?;
                        0
                    }
                    Some(used) => used,
                },
            };
            p = &p[used..];
            at += used;
        }
        Ok(())
    }

    /// Feed raw content up to the end of the current message; returns how
    /// many bytes of `p` that was.
    fn raw_content<F>(&mut self, p: &[u8], emit: &mut F) -> usize
    where
        F: FnMut(LogEvent<'_>),
    {
        let mut sink = |r: Record<'_>| emit(LogEvent::Record(r));
        if !self.cfg.timestamps {
            self.lines[1].push(None, p, &mut sink);
            return p.len();
        }
        let partial = self.cfg.raw_partial_len.max(1);
        let window = &p[..p.len().min(partial - self.raw_msg_len)];
        match memchr(b'\n', window) {
            Some(i) => {
                self.lines[1].push(self.ts, &p[..=i], &mut sink);
                self.raw_msg_len = 0;
                self.prefix = Prefix::Expect;
                i + 1
            }
            None => {
                self.lines[1].push(self.ts, window, &mut sink);
                self.raw_msg_len += window.len();
                if self.raw_msg_len == partial {
                    self.raw_msg_len = 0;
                    self.prefix = Prefix::Maybe;
                }
                window.len()
            }
        }
    }
}

/// Decode a whole log body held in memory; for tests and tools.
pub fn decode_all(
    cfg: LogStreamConfig,
    body: &[u8],
) -> Result<(Vec<crate::record::OwnedRecord>, Vec<Vec<u8>>), LogStreamError> {
    let mut recs = Vec::new();
    let mut errs = Vec::new();
    let mut dec = LogStreamDecoder::new(cfg);
    let mut emit = |ev: LogEvent<'_>| match ev {
        LogEvent::Record(r) => recs.push(r.to_owned()),
        LogEvent::DaemonError(m) => errs.push(m.to_vec()),
    };
    dec.push(body, &mut emit)?;
    dec.finish(&mut emit)?;
    Ok((recs, errs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::OwnedRecord;

    const TS1: &str = "2026-11-27T19:48:22.687468145Z";
    const NS1: i64 = 1_795_808_902_687_468_145;
    const TS2: &str = "2026-11-27T19:48:23.000000001Z";
    const NS2: i64 = 1_795_808_903_000_000_001;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn ts_frame(stream: u8, ts: &str, msg: &[u8]) -> Vec<u8> {
        frame(stream, &[ts.as_bytes(), b" ", msg].concat())
    }

    type Decoded = (Vec<OwnedRecord>, Vec<Vec<u8>>);

    fn decode_pieces(cfg: LogStreamConfig, pieces: &[&[u8]]) -> Result<Decoded, LogStreamError> {
        let mut recs = Vec::new();
        let mut errs = Vec::new();
        let mut dec = LogStreamDecoder::new(cfg);
        let mut emit = |ev: LogEvent<'_>| match ev {
            LogEvent::Record(r) => recs.push(r.to_owned()),
            LogEvent::DaemonError(m) => errs.push(m.to_vec()),
        };
        for p in pieces {
            dec.push(p, &mut emit)?;
        }
        dec.finish(&mut emit)?;
        Ok((recs, errs))
    }

    /// Decoding must not depend on how the input is cut: check whole,
    /// every two-way split, and byte at a time, and return the result.
    fn decode_every_way(cfg: LogStreamConfig, wire: &[u8]) -> Result<Decoded, LogStreamError> {
        let whole = decode_pieces(cfg, &[wire]);
        let strip = |r: &Result<Decoded, LogStreamError>| r.clone().map_err(|e| e.kind);
        for cut in 0..=wire.len() {
            let got = decode_pieces(cfg, &[&wire[..cut], &wire[cut..]]);
            assert_eq!(strip(&got), strip(&whole), "split at {cut}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(strip(&decode_pieces(cfg, &bytes)), strip(&whole), "byte at a time");
        whole
    }

    fn msgs(recs: &[OwnedRecord]) -> Vec<(StreamId, String)> {
        recs.iter().map(|r| (r.stream, String::from_utf8_lossy(&r.message).into_owned())).collect()
    }

    #[test]
    fn interleaved_streams_with_timestamps() {
        let mut wire = ts_frame(1, TS1, b"out 1\n");
        wire.extend(ts_frame(2, TS2, b"err 1\n"));
        wire.extend(ts_frame(1, TS2, b"\n"));
        let cfg = LogStreamConfig::new(Framing::Multiplexed, true);
        let (recs, errs) = decode_every_way(cfg, &wire).unwrap();
        assert!(errs.is_empty());
        assert_eq!(
            msgs(&recs),
            [
                (StreamId::Stdout, "out 1".into()),
                (StreamId::Stderr, "err 1".into()),
                (StreamId::Stdout, "".into())
            ]
        );
        assert_eq!(recs.iter().map(|r| r.timestamp).collect::<Vec<_>>(), [Some(NS1), Some(NS2), Some(NS2)]);
    }

    #[test]
    fn partials_reassemble_across_an_other_stream() {
        // dockerd's copiers for stdout and stderr are independent, so a
        // stderr line can land between two partials of a stdout line.
        let mut wire = ts_frame(1, TS1, b"aaaa");
        wire.extend(ts_frame(2, TS2, b"between\n"));
        wire.extend(ts_frame(1, TS1, b"bbbb"));
        wire.extend(ts_frame(1, TS1, b"cc\n"));
        let cfg = LogStreamConfig::new(Framing::Multiplexed, true);
        let (recs, _) = decode_every_way(cfg, &wire).unwrap();
        assert_eq!(
            msgs(&recs),
            [(StreamId::Stderr, "between".into()), (StreamId::Stdout, "aaaabbbbcc".into())]
        );
        assert_eq!(recs[1].timestamp, Some(NS1));
    }

    #[test]
    fn forty_thousand_byte_line_as_dockerd_sends_it() {
        let line: Vec<u8> = b"0123456789".iter().copied().cycle().take(40_000).collect();
        let mut wire = Vec::new();
        for (i, part) in line.chunks(DOCKERD_PARTIAL_LEN).enumerate() {
            let last = i == 2;
            let msg = if last { [part, b"\n"].concat() } else { part.to_vec() };
            wire.extend(ts_frame(1, TS1, &msg));
        }
        let cfg = LogStreamConfig::new(Framing::Multiplexed, true);
        // Too long to try every split; two-way splits around the frame
        // boundaries and prefixes are where it matters.
        let whole = decode_pieces(cfg, &[&wire]).unwrap();
        for cut in [1, 7, 8, 9, 30, 39, 40, 16_422, 16_423, 16_430, 16_431, 16_460, wire.len() - 1] {
            assert_eq!(decode_pieces(cfg, &[&wire[..cut], &wire[cut..]]).unwrap(), whole, "cut {cut}");
        }
        let (recs, _) = whole;
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].message, line);
        assert!(!recs[0].truncated && !recs[0].partial);
    }

    #[test]
    fn systemerr_is_surfaced_not_logged() {
        let mut wire = ts_frame(1, TS1, b"ok\n");
        wire.extend(frame(3, b"Error grabbing logs: invalid character 'x'"));
        let cfg = LogStreamConfig::new(Framing::Multiplexed, true);
        let (recs, errs) = decode_every_way(cfg, &wire).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(errs, [b"Error grabbing logs: invalid character 'x'".to_vec()]);
    }

    #[test]
    fn empty_frames_are_ignored() {
        let mut wire = frame(1, b"");
        wire.extend(ts_frame(1, TS1, b"x\n"));
        wire.extend(frame(2, b""));
        let cfg = LogStreamConfig::new(Framing::Multiplexed, true);
        let (recs, _) = decode_every_way(cfg, &wire).unwrap();
        assert_eq!(msgs(&recs), [(StreamId::Stdout, "x".into())]);
    }

    #[test]
    fn no_timestamps() {
        let mut wire = frame(1, b"plain\n");
        wire.extend(frame(2, b"two\nlines\n"));
        let cfg = LogStreamConfig::new(Framing::Multiplexed, false);
        let (recs, _) = decode_every_way(cfg, &wire).unwrap();
        assert_eq!(
            msgs(&recs),
            [
                (StreamId::Stdout, "plain".into()),
                (StreamId::Stderr, "two".into()),
                (StreamId::Stderr, "lines".into())
            ]
        );
        assert!(recs.iter().all(|r| r.timestamp.is_none()));
    }

    #[test]
    fn final_line_without_newline_is_flushed_as_partial() {
        let mut wire = ts_frame(1, TS1, b"first\n");
        wire.extend(ts_frame(1, TS2, b"last"));
        let cfg = LogStreamConfig::new(Framing::Multiplexed, true);
        let (recs, _) = decode_every_way(cfg, &wire).unwrap();
        assert_eq!(msgs(&recs), [(StreamId::Stdout, "first".into()), (StreamId::Stdout, "last".into())]);
        assert!(!recs[0].partial && recs[1].partial);
        assert_eq!(recs[1].timestamp, Some(NS2));
    }

    #[test]
    fn abandon_forgets_the_open_line_and_reports_where_to_resume() {
        let cfg = LogStreamConfig::new(Framing::Multiplexed, true);
        let mut dec = LogStreamDecoder::new(cfg);
        let mut n = 0;
        let mut wire = ts_frame(2, TS2, b"done\n");
        wire.extend(ts_frame(1, TS1, b"half a li"));
        dec.push(&wire[..wire.len() - 3], &mut |_| n += 1).unwrap();
        assert_eq!(n, 1);
        assert_eq!(dec.open_line_timestamp(), Some(NS1));
        dec.abandon();
        assert_eq!(dec.open_line_timestamp(), None);
        // A fresh stream after abandon starts at a frame boundary.
        dec.push(&ts_frame(1, TS1, b"whole\n"), &mut |ev| {
            if let LogEvent::Record(r) = ev {
                assert_eq!(r.message, b"whole");
                n += 1;
            }
        })
        .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn malformed_prefixes() {
        let cfg = LogStreamConfig::new(Framing::Multiplexed, true);
        let e = decode_pieces(cfg, &[&frame(1, b"hello world\n")]).unwrap_err();
        assert!(matches!(e.kind, LogStreamErrorKind::Timestamp(_)), "{e:?}");
        // Errors point where they were found: here the space that ends the
        // would-be timestamp, whatever pieces the input came in.
        assert_eq!(e.at, 8 + 5);
        let wire = frame(1, b"hello world\n");
        for cut in 1..wire.len() {
            // `at` is relative to the piece in which the error was found.
            let split = decode_pieces(cfg, &[&wire[..cut], &wire[cut..]]).unwrap_err();
            let absolute = if cut <= 13 { split.at + cut } else { split.at };
            assert_eq!(absolute, 13, "cut {cut}: {split:?}");
        }
        let e = decode_pieces(cfg, &[&frame(1, &[b'9'; 60])]).unwrap_err();
        assert_eq!(e.kind, LogStreamErrorKind::MissingTimestamp);
        let e = decode_pieces(cfg, &[&frame(1, b"2026-11-27")]).unwrap_err();
        assert_eq!(e.kind, LogStreamErrorKind::FrameEndsInTimestamp);
        let e = decode_pieces(cfg, &[&frame(1, b"x\n")[..5]]).unwrap_err();
        assert!(matches!(e.kind, LogStreamErrorKind::Frame(FrameError::Truncated { .. })));
    }

    #[test]
    fn tty_stream_with_timestamps() {
        let wire = format!("{TS1} line 1\r\n{TS2} line 2\r\n{TS2} \r\n");
        let cfg = LogStreamConfig::new(Framing::Raw, true);
        let (recs, _) = decode_every_way(cfg, wire.as_bytes()).unwrap();
        assert_eq!(
            msgs(&recs),
            [
                (StreamId::Stdout, "line 1".into()),
                (StreamId::Stdout, "line 2".into()),
                (StreamId::Stdout, "".into())
            ]
        );
        assert_eq!(recs[1].timestamp, Some(NS2));
    }

    #[test]
    fn tty_partials_lose_their_repeated_prefix() {
        // With no frames, dockerd's partials show only as a timestamp after
        // exactly `raw_partial_len` bytes without a newline.
        let mut cfg = LogStreamConfig::new(Framing::Raw, true);
        cfg.raw_partial_len = 8;
        let wire = format!("{TS1} 01234567{TS1} 89abcdef{TS1} xy\r\n{TS2} next\r\n");
        let (recs, _) = decode_every_way(cfg, wire.as_bytes()).unwrap();
        assert_eq!(
            msgs(&recs),
            [(StreamId::Stdout, "0123456789abcdefxy".into()), (StreamId::Stdout, "next".into())]
        );
        assert_eq!(recs[0].timestamp, Some(NS1));

        // A line exactly one partial long: its line end comes as a message
        // of its own, and the terminal's `\r` is still removed.
        let wire = format!("{TS1} 01234567{TS1} \r\n");
        let (recs, _) = decode_every_way(cfg, wire.as_bytes()).unwrap();
        assert_eq!(msgs(&recs), [(StreamId::Stdout, "01234567".into())]);
    }

    #[test]
    fn tty_text_after_a_full_partial_that_is_not_a_timestamp_is_content() {
        let mut cfg = LogStreamConfig::new(Framing::Raw, true);
        cfg.raw_partial_len = 4;
        // As from a driver with a bigger buffer: no prefix after 4 bytes.
        let wire = format!("{TS1} abcdefgh ij\r\n{TS2} next\r\n");
        let (recs, _) = decode_every_way(cfg, wire.as_bytes()).unwrap();
        assert_eq!(
            msgs(&recs),
            [(StreamId::Stdout, "abcdefgh ij".into()), (StreamId::Stdout, "next".into())]
        );
    }

    #[test]
    fn tty_without_timestamps() {
        let cfg = LogStreamConfig::new(Framing::Raw, false);
        let (recs, _) = decode_every_way(cfg, b"a\r\nb\r\n\r\nlast").unwrap();
        assert_eq!(
            msgs(&recs),
            [
                (StreamId::Stdout, "a".into()),
                (StreamId::Stdout, "b".into()),
                (StreamId::Stdout, "".into()),
                (StreamId::Stdout, "last".into())
            ]
        );
        assert!(recs[3].partial);
    }

    #[test]
    fn line_cap_applies_across_frames() {
        let mut cfg = LogStreamConfig::new(Framing::Multiplexed, true);
        cfg.max_line = 5;
        let mut wire = ts_frame(1, TS1, b"abc");
        wire.extend(ts_frame(1, TS1, b"defgh"));
        wire.extend(ts_frame(1, TS1, b"ij\n"));
        wire.extend(ts_frame(1, TS2, b"ok\n"));
        let mut dec = LogStreamDecoder::new(cfg);
        let mut recs = Vec::new();
        dec.push(&wire, &mut |ev| {
            if let LogEvent::Record(r) = ev {
                recs.push(r.to_owned())
            }
        })
        .unwrap();
        assert_eq!(msgs(&recs), [(StreamId::Stdout, "abcde".into()), (StreamId::Stdout, "ok".into())]);
        assert!(recs[0].truncated);
        assert_eq!(dec.stats().truncated, 1);
        assert_eq!(dec.stats().discarded_bytes, 5);
    }

    #[test]
    fn invalid_utf8_survives() {
        let wire = ts_frame(1, TS1, b"bad \xff\xfe end\n");
        let cfg = LogStreamConfig::new(Framing::Multiplexed, true);
        let (recs, _) = decode_every_way(cfg, &wire).unwrap();
        assert_eq!(recs[0].message, b"bad \xff\xfe end");
    }
}
