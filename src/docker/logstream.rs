//! The body of a `GET /containers/{id}/logs` response, decoded into records.
//!
//! Ties together the framing ([`Framing::Multiplexed`] frames or a TTY's
//! [`Framing::Raw`] bytes), the timestamp prefix each message carries with
//! `timestamps=1`, and line reassembly. Pure: body bytes in (already
//! de-chunked), [`LogEvent`]s out.

use std::fmt;

use memchr::memchr;

use crate::docker::frame::{FrameDecoder, FrameError, FrameEvent, StreamId, DEFAULT_MAX_FRAME};
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
            prefix: if cfg.timestamps {
                Prefix::Expect
            } else {
                Prefix::Content
            },
            prefix_buf: [0; timestamp::MAX_LEN],
            prefix_len: 0,
            ts: None,
            raw_msg_len: 0,
            lines: [
                asm(StreamId::Stdin),
                asm(StreamId::Stdout),
                asm(StreamId::Stderr),
            ],
            daemon_error: Vec::new(),
        }
    }

    pub fn config(&self) -> &LogStreamConfig {
        &self.cfg
    }

    /// Truncation counts over all streams.
    pub fn stats(&self) -> LineStats {
        self.lines
            .iter()
            .fold(LineStats::default(), |a, l| LineStats {
                truncated: a.truncated + l.stats().truncated,
                discarded_bytes: a.discarded_bytes + l.stats().discarded_bytes,
            })
    }

    /// Earliest timestamp of a line begun but not finished, on any stream.
    pub fn open_line_timestamp(&self) -> Option<i64> {
        self.lines
            .iter()
            .filter_map(LineAssembler::open_line_timestamp)
            .min()
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
            self.frames.finish().map_err(|e| LogStreamError {
                at: 0,
                kind: LogStreamErrorKind::Frame(e),
            })
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
        self.prefix = if self.cfg.timestamps {
            Prefix::Expect
        } else {
            Prefix::Content
        };
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
            // A header error is found on its last byte; `at` is where this
            // call began, which is the header's first byte when it lies in
            // this input.
            let (n, ev) = self
                .frames
                .decode(&input[at..])
                .map_err(|e| LogStreamError {
                    at,
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
                        return Err(LogStreamError {
                            at,
                            kind: LogStreamErrorKind::FrameEndsInTimestamp,
                        });
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
        let space = p.iter().position(|&b| b == b' ');
        let upto = space.unwrap_or(p.len());
        let room = timestamp::MAX_LEN - self.prefix_len;
        if upto > room {
            if self.prefix == Prefix::Maybe {
                return Ok(Some(0));
            }
            return Err(LogStreamError {
                at: base + room,
                kind: LogStreamErrorKind::MissingTimestamp,
            });
        }
        self.prefix_buf[self.prefix_len..self.prefix_len + upto].copy_from_slice(&p[..upto]);
        self.prefix_len += upto;
        let Some(space) = space else { return Ok(None) };
        match timestamp::parse(&self.prefix_buf[..self.prefix_len]) {
            Err(_) if self.prefix == Prefix::Maybe => {
                // Leave only what earlier calls collected: `p` is not used.
                self.prefix_len -= upto;
                Ok(Some(0))
            }
            Ok(ts) => {
                self.ts = Some(ts);
                self.prefix = Prefix::Content;
                self.prefix_len = 0;
                Ok(Some(space + 1))
            }
            Err(e) => Err(LogStreamError {
                at: (base + space).saturating_sub(self.prefix_len),
                kind: LogStreamErrorKind::Timestamp(e),
            }),
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
