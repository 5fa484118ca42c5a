//! A whole logs response as it comes off the wire: head, body framing, log
//! stream, lines. This is the pipeline `log-capturer decode` runs and the
//! agent runs per connection; it is still sans-IO.

use std::fmt;

use memchr::memchr;

use crate::docker::api;
use crate::docker::frame::HEADER_LEN;
use crate::docker::logstream::{Framing, LogEvent, LogStreamConfig, LogStreamDecoder, LogStreamError};
use crate::docker::timestamp;
use crate::http::body::{BodyDecoder, BodyError, BodyEvent};
use crate::http::head::{self, ContentType, HeadError, ResponseHead};

/// Most of an error response body we keep for its message.
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// Body bytes we hold, at most, to tell whether messages carry timestamps
/// when the caller does not know (empty frames before the first message
/// count too).
const DETECT_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct ResponseConfig {
    /// Framing, timestamps and caps for the log stream. `framing` is used
    /// unless `framing_from_content_type` is set and the response says
    /// `application/vnd.docker.raw-stream`.
    pub stream: LogStreamConfig,
    pub framing_from_content_type: bool,
    /// Tell from the first message whether the stream has timestamps,
    /// instead of trusting `stream.timestamps`.
    pub detect_timestamps: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseErrorKind {
    Head(HeadError),
    Body(BodyError),
    Log(LogStreamError),
    /// A non-2xx status; `message` is the daemon's.
    Daemon {
        status: u16,
        message: String,
    },
    /// The connection closed before the head was complete.
    NoHead,
    /// A 2xx response whose Content-Type says it is not a log stream (the
    /// JSON of another endpoint, say).
    NotLogs(ContentType),
}

/// An error with the offset of the offending byte in the whole response,
/// where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseError {
    pub offset: Option<u64>,
    pub kind: ResponseErrorKind,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = self.offset {
            write!(f, "at byte {at}: ")?;
        }
        match &self.kind {
            ResponseErrorKind::Head(e) => e.fmt(f),
            ResponseErrorKind::Body(e) => e.fmt(f),
            ResponseErrorKind::Log(e) => e.fmt(f),
            ResponseErrorKind::Daemon { status, message } => {
                write!(f, "Docker answered {status}: {message}")
            }
            ResponseErrorKind::NoHead => write!(f, "connection closed before a response head"),
            ResponseErrorKind::NotLogs(ct) => write!(
                f,
                "not a logs response (Content-Type: {}); expected the response of \
                 GET /containers/{{id}}/logs",
                match ct {
                    ContentType::Json => "application/json",
                    _ => "not a Docker stream type",
                }
            ),
        }
    }
}

impl std::error::Error for ResponseError {}

enum State {
    Head,
    /// Collecting the first body bytes to tell whether there are timestamps.
    Detect,
    Logs,
    ErrorBody,
    Done,
}

pub struct ResponseDecoder {
    cfg: ResponseConfig,
    state: State,
    head_reader: head::HeadReader,
    /// The error body or the body bytes held for detection (both bounded).
    buf: Vec<u8>,
    /// For bytes held in `buf` during detection: (index in buf, offset in
    /// the response) where each contiguous run starts.
    runs: Vec<(usize, u64)>,
    head: Option<ResponseHead>,
    body: Option<BodyDecoder>,
    logs: Option<LogStreamDecoder>,
    /// Bytes of the response consumed so far.
    offset: u64,
    trailing: u64,
}

impl ResponseDecoder {
    pub fn new(cfg: ResponseConfig) -> Self {
        Self {
            cfg,
            state: State::Head,
            head_reader: head::HeadReader::default(),
            buf: Vec::new(),
            runs: Vec::new(),
            head: None,
            body: None,
            logs: None,
            offset: 0,
            trailing: 0,
        }
    }

    pub fn head(&self) -> Option<&ResponseHead> {
        self.head.as_ref()
    }

    /// The log stream decoder, once the head has been read and framing and
    /// timestamps are decided.
    pub fn logs(&self) -> Option<&LogStreamDecoder> {
        self.logs.as_ref()
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Bytes received after the end of the response, ignored.
    pub fn trailing_bytes(&self) -> u64 {
        self.trailing
    }

    /// Decode the next bytes of the response.
    pub fn push<F>(&mut self, mut input: &[u8], emit: &mut F) -> Result<(), ResponseError>
    where
        F: FnMut(LogEvent<'_>),
    {
        while !input.is_empty() {
            match self.state {
                State::Head => match self.head_reader.push(input) {
                    Ok(None) => {
                        self.offset += input.len() as u64;
                        return Ok(());
                    }
                    Ok(Some((h, used))) => {
                        self.offset += used as u64;
                        input = &input[used..];
                        self.start_body(h)?;
                    }
                    // A head too large is found at the cap; httparse does
                    // not say where other faults are, so: where the head
                    // starts.
                    Err(e @ HeadError::TooLarge) => return Err(self.err_at(head::MAX_HEAD as u64, e)),
                    Err(e) => return Err(self.err_at(0, e)),
                },
                State::Done => {
                    self.trailing += input.len() as u64;
                    return Ok(());
                }
                State::Detect | State::Logs | State::ErrorBody => {
                    let body = self.body.as_mut().expect("body decoder set with the head");
                    let (n, ev) = body.decode(input).map_err(|e| ResponseError {
                        offset: e.offset().map(|at| self.offset + at as u64),
                        kind: ResponseErrorKind::Body(e),
                    })?;
                    let data_at = self.offset + n as u64;
                    self.offset += n as u64;
                    input = &input[n..];
                    match ev {
                        Some(BodyEvent::Data(d)) => self.body_data(d, data_at - d.len() as u64, emit)?,
                        Some(BodyEvent::End) => self.end_body(emit)?,
                        None => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// The connection reached EOF.
    pub fn finish<F>(&mut self, emit: &mut F) -> Result<(), ResponseError>
    where
        F: FnMut(LogEvent<'_>),
    {
        match self.state {
            State::Head => Err(ResponseError { offset: Some(self.offset), kind: ResponseErrorKind::NoHead }),
            State::Done => Ok(()),
            _ => {
                let body = self.body.as_mut().expect("body decoder set with the head");
                if let Err(e) = body.finish() {
                    if let State::ErrorBody = self.state {
                        // The status is what matters; report it with
                        // whatever part of the message arrived.
                        return self.end_body(emit);
                    }
                    return Err(ResponseError {
                        offset: Some(self.offset),
                        kind: ResponseErrorKind::Body(e),
                    });
                }
                self.end_body(emit)
            }
        }
    }

    fn err_at(&self, offset: u64, e: HeadError) -> ResponseError {
        ResponseError { offset: Some(offset), kind: ResponseErrorKind::Head(e) }
    }

    fn start_body(&mut self, h: ResponseHead) -> Result<(), ResponseError> {
        self.body = Some(BodyDecoder::new(h.body));
        self.head = Some(h);
        if !h.is_success() {
            self.state = State::ErrorBody;
            return Ok(());
        }
        if let Some(ct @ (ContentType::Json | ContentType::Other)) = h.content_type {
            self.state = State::Done;
            return Err(ResponseError { offset: None, kind: ResponseErrorKind::NotLogs(ct) });
        }
        let mut stream = self.cfg.stream;
        if self.cfg.framing_from_content_type && h.content_type == Some(ContentType::Raw) {
            stream.framing = Framing::Raw;
        }
        self.cfg.stream = stream;
        if self.cfg.detect_timestamps {
            self.state = State::Detect;
        } else {
            self.logs = Some(LogStreamDecoder::new(stream));
            self.state = State::Logs;
        }
        Ok(())
    }

    fn body_data<F>(&mut self, d: &[u8], at: u64, emit: &mut F) -> Result<(), ResponseError>
    where
        F: FnMut(LogEvent<'_>),
    {
        match self.state {
            State::ErrorBody => {
                let room = MAX_ERROR_BODY - self.buf.len();
                self.buf.extend_from_slice(&d[..d.len().min(room)]);
                Ok(())
            }
            State::Detect => {
                self.runs.push((self.buf.len(), at));
                self.buf.extend_from_slice(d);
                // Decide on the first DETECT_LIMIT bytes only, however they
                // arrived: the answer must not depend on how reads cut them.
                let n = self.buf.len().min(DETECT_LIMIT);
                match detect_timestamps(self.cfg.stream.framing, &self.buf[..n], n == DETECT_LIMIT) {
                    Some(ts) => self.start_logs(ts, emit),
                    None => Ok(()),
                }
            }
            State::Logs => {
                let logs = self.logs.as_mut().expect("log decoder set in Logs state");
                logs.push(d, emit).map_err(|e| log_err(e, at))
            }
            State::Head | State::Done => unreachable!("no body data outside a body"),
        }
    }

    /// Timestamps decided: replay the held bytes into a new log decoder.
    fn start_logs<F>(&mut self, timestamps: bool, emit: &mut F) -> Result<(), ResponseError>
    where
        F: FnMut(LogEvent<'_>),
    {
        self.cfg.stream.timestamps = timestamps;
        let mut logs = LogStreamDecoder::new(self.cfg.stream);
        let held = std::mem::take(&mut self.buf);
        let runs = std::mem::take(&mut self.runs);
        self.state = State::Logs;
        let result = logs.push(&held, emit).map_err(|e| {
            // Map the offset in the held bytes back onto the response.
            let (start, wire) =
                runs.iter().rev().find(|(start, _)| *start <= e.at).copied().unwrap_or((0, 0));
            // The run holding the byte began at `start` in the held bytes
            // and at `wire` in the response.
            log_err(e, wire - start as u64)
        });
        self.logs = Some(logs);
        self.buf = held;
        self.buf.clear();
        result
    }

    fn end_body<F>(&mut self, emit: &mut F) -> Result<(), ResponseError>
    where
        F: FnMut(LogEvent<'_>),
    {
        let state = std::mem::replace(&mut self.state, State::Done);
        match state {
            State::ErrorBody => {
                let status = self.head.map_or(0, |h| h.status);
                let message = api::error_message(&self.buf);
                Err(ResponseError { offset: None, kind: ResponseErrorKind::Daemon { status, message } })
            }
            State::Detect => {
                let n = self.buf.len().min(DETECT_LIMIT);
                let ts = detect_timestamps(self.cfg.stream.framing, &self.buf[..n], true).unwrap_or(false);
                self.start_logs(ts, emit)?;
                self.state = State::Done;
                self.finish_logs(emit)
            }
            State::Logs => self.finish_logs(emit),
            State::Head | State::Done => Ok(()),
        }
    }

    fn finish_logs<F>(&mut self, emit: &mut F) -> Result<(), ResponseError>
    where
        F: FnMut(LogEvent<'_>),
    {
        let logs = self.logs.as_mut().expect("log decoder set");
        let at = self.offset;
        logs.finish(emit).map_err(|e| ResponseError { offset: Some(at), kind: ResponseErrorKind::Log(e) })
    }
}

fn log_err(e: LogStreamError, base: u64) -> ResponseError {
    ResponseError { offset: Some(base + e.at as u64), kind: ResponseErrorKind::Log(e) }
}

/// Does the first message of a log body start with a timestamp? `None`:
/// cannot tell yet from `body`; `complete` says no more will be looked at.
pub fn detect_timestamps(framing: Framing, body: &[u8], complete: bool) -> Option<bool> {
    let (msg, msg_complete) = match framing {
        Framing::Raw => (body, false),
        Framing::Multiplexed => {
            let mut b = body;
            loop {
                if b.len() < HEADER_LEN {
                    return complete.then_some(false);
                }
                let len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
                if len == 0 {
                    b = &b[HEADER_LEN..];
                    continue;
                }
                let end = b.len().min(HEADER_LEN + len);
                break (&b[HEADER_LEN..end], end == HEADER_LEN + len);
            }
        }
    };
    let window = &msg[..msg.len().min(timestamp::MAX_LEN + 1)];
    match memchr(b' ', window) {
        Some(i) => Some(timestamp::parse(&window[..i]).is_ok()),
        None if window.len() > timestamp::MAX_LEN || msg_complete || complete => Some(false),
        None => None,
    }
}
