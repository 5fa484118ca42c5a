//! The answer to one push: an HTTP/1.1 response read from bytes as they
//! arrive, sans-IO.
//!
//! The agent acts on the status, `Retry-After` and the server's message,
//! and wants the connection back for the next push. So the body is read to
//! its end, whatever its framing, but only its first bytes are kept, and a
//! body longer than any push answer has reason to be ends the connection
//! instead of being drained: a push answer is a status and a line of text.

use std::fmt;

use crate::http::body::{BodyDecoder, BodyError, BodyEvent, BodyKind};
use crate::http::head::{HeadError, HeadReader, ResponseHead, RetryAfter};

/// Longest body read to its end; a longer one is an error and the
/// connection is closed (Loki's answers are a line or two).
pub const MAX_BODY: usize = 64 << 10;
/// How much of the body is kept as the message.
pub const MAX_MESSAGE: usize = 1 << 10;
/// Interim (1xx) responses skipped before the final one; a server sending
/// more is broken.
pub const MAX_INTERIM: u32 = 8;

/// A complete answer to a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushResponse {
    pub status: u16,
    pub retry_after: Option<RetryAfter>,
    /// The server's `Date`, ns since the epoch (to read an HTTP-date
    /// `Retry-After` against).
    pub date: Option<i64>,
    /// The first [`MAX_MESSAGE`] bytes of the body, lossy UTF-8, trimmed.
    pub message: String,
    /// The connection may carry the next push.
    pub keep_alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkResponseError {
    Head(HeadError),
    Body(BodyError),
    /// The body is longer than [`MAX_BODY`].
    TooLarge,
    /// Bytes after the end of the response: we never send a second request
    /// before the first is answered, so the server is out of step.
    TrailingBytes,
    /// `101 Switching Protocols`, or more than [`MAX_INTERIM`] interim
    /// responses.
    BadInterim(u16),
    /// A status outside 100 to 599 (RFC 9110 15).
    BadStatus(u16),
    /// The connection closed before a byte of the answer.
    ClosedBeforeAnswer,
    /// The connection closed in the middle of the head.
    TruncatedHead,
    /// Fed after the response was complete and returned.
    AlreadyComplete,
}

impl fmt::Display for SinkResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Head(e) => write!(f, "the sink's answer is not valid HTTP/1.1: {e}"),
            Self::Body(e) => write!(f, "the sink's answer is not valid HTTP/1.1: {e}"),
            Self::TooLarge => write!(f, "the sink's answer has a body larger than {MAX_BODY} bytes"),
            Self::TrailingBytes => write!(f, "the sink sent bytes after its answer"),
            Self::BadInterim(101) => write!(f, "the sink switched protocols (101) without being asked"),
            Self::BadInterim(s) => write!(f, "the sink sent more than {MAX_INTERIM} interim ({s}) answers"),
            Self::BadStatus(s) => write!(f, "the sink answered with status {s}, which HTTP does not have"),
            Self::ClosedBeforeAnswer => write!(f, "the sink closed the connection without answering"),
            Self::TruncatedHead => write!(f, "the sink closed the connection in the middle of its answer"),
            Self::AlreadyComplete => write!(f, "bytes after a complete answer"),
        }
    }
}

impl std::error::Error for SinkResponseError {}

enum State {
    Head { interim: u32 },
    Body { head: ResponseHead, body: BodyDecoder, len: usize, message: Vec<u8> },
    Done,
}

/// Reads one response; make a new one for each push.
pub struct ResponseReader {
    head: HeadReader,
    state: State,
    received: bool,
    /// How much of the body is kept as the message.
    keep: usize,
}

impl Default for ResponseReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseReader {
    pub fn new() -> Self {
        Self::keeping(MAX_MESSAGE)
    }

    /// A reader that keeps up to `keep` bytes of the body (at most
    /// `MAX_BODY`): for `check`, which reads Loki's `/config`.
    pub fn keeping(keep: usize) -> Self {
        Self { head: HeadReader::default(), state: State::Head { interim: 0 }, received: false, keep }
    }

    /// The final response's head is complete (its status is known).
    pub fn head_seen(&self) -> bool {
        !matches!(self.state, State::Head { .. })
    }

    /// Some byte of an answer arrived (an interim one counts). A keep-alive
    /// connection that closes before this was most likely closed by the
    /// server for idleness just as we sent: the push can go again at once.
    pub fn started(&self) -> bool {
        self.received
    }

    /// Feed bytes as they arrive. `Ok(Some)` once the response is complete;
    /// bytes after it in the same call are an error.
    pub fn push(&mut self, mut data: &[u8]) -> Result<Option<PushResponse>, SinkResponseError> {
        self.received |= !data.is_empty();
        loop {
            match &mut self.state {
                State::Done if data.is_empty() => return Ok(None),
                State::Done => return Err(SinkResponseError::AlreadyComplete),
                State::Head { interim } => {
                    let Some((head, used)) = self.head.push(data).map_err(SinkResponseError::Head)? else {
                        return Ok(None);
                    };
                    data = &data[used..];
                    if !(100..600).contains(&head.status) {
                        return Err(SinkResponseError::BadStatus(head.status));
                    }
                    if head.status / 100 == 1 {
                        *interim += 1;
                        if head.status == 101 || *interim > MAX_INTERIM {
                            return Err(SinkResponseError::BadInterim(head.status));
                        }
                        continue;
                    }
                    if let BodyKind::Length(n) = head.body {
                        // Refused before a byte of it is read.
                        if n > MAX_BODY as u64 {
                            return Err(SinkResponseError::TooLarge);
                        }
                    }
                    let body = BodyDecoder::new(head.body);
                    self.state = State::Body { head, body, len: 0, message: Vec::new() };
                }
                State::Body { body, len, message, .. } => {
                    let (n, ev) = body.decode(data).map_err(SinkResponseError::Body)?;
                    data = &data[n..];
                    match ev {
                        Some(BodyEvent::Data(d)) => {
                            *len += d.len();
                            if *len > MAX_BODY {
                                return Err(SinkResponseError::TooLarge);
                            }
                            let room = self.keep.saturating_sub(message.len());
                            message.extend_from_slice(&d[..d.len().min(room)]);
                        }
                        Some(BodyEvent::End) => {
                            let response = self.complete();
                            if !data.is_empty() {
                                return Err(SinkResponseError::TrailingBytes);
                            }
                            return Ok(Some(response));
                        }
                        None => return Ok(None),
                    }
                }
            }
        }
    }

    /// The connection reached EOF: completes a body that runs until close;
    /// anything else unfinished is an error.
    pub fn eof(&mut self) -> Result<PushResponse, SinkResponseError> {
        match &mut self.state {
            State::Head { .. } if self.received => Err(SinkResponseError::TruncatedHead),
            State::Head { .. } => Err(SinkResponseError::ClosedBeforeAnswer),
            State::Body { body, .. } => {
                body.finish().map_err(SinkResponseError::Body)?;
                let mut response = self.complete();
                response.keep_alive = false;
                Ok(response)
            }
            State::Done => Err(SinkResponseError::AlreadyComplete),
        }
    }

    fn complete(&mut self) -> PushResponse {
        let State::Body { head, message, .. } = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("complete is called in the body state")
        };
        PushResponse {
            status: head.status,
            retry_after: head.retry_after,
            date: head.date,
            message: message_text(&message),
            keep_alive: !head.close,
        }
    }
}

/// The kept bytes as text; a character cut by the [`MAX_MESSAGE`] cap is
/// dropped rather than shown as a replacement character.
fn message_text(bytes: &[u8]) -> String {
    // A cut character is the start of a valid sequence, at most 3 bytes
    // from the end, that the bytes end inside of.
    let cut = (bytes.len().saturating_sub(3)..bytes.len()).find(|&i| {
        matches!(std::str::from_utf8(&bytes[i..]), Err(e) if e.valid_up_to() == 0 && e.error_len().is_none())
    });
    String::from_utf8_lossy(&bytes[..cut.unwrap_or(bytes.len())]).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `wire` in pieces of `step` bytes; the response, or the error.
    fn feed(wire: &[u8], step: usize, eof: bool) -> Result<PushResponse, SinkResponseError> {
        let mut r = ResponseReader::new();
        for piece in wire.chunks(step) {
            if let Some(resp) = r.push(piece)? {
                return Ok(resp);
            }
        }
        if eof {
            r.eof()
        } else {
            panic!("incomplete without EOF")
        }
    }

    /// The same result for every piece size, down to single bytes.
    fn every_split(wire: &[u8], eof: bool) -> Result<PushResponse, SinkResponseError> {
        let whole = feed(wire, wire.len().max(1), eof);
        for step in 1..wire.len() {
            assert_eq!(feed(wire, step, eof), whole, "pieces of {step}");
        }
        whole
    }

    #[test]
    fn content_length_and_no_content() {
        let r = every_split(b"HTTP/1.1 204 No Content\r\nDate: Fri, 27 Nov 2026 19:48:22 GMT\r\n\r\n", false)
            .unwrap();
        assert_eq!((r.status, r.keep_alive, r.message.as_str()), (204, true, ""));
        assert_eq!(r.date, Some(1_795_808_902_000_000_000));
        let body = "entry for stream '{a=\"b\"}' has timestamp too old: 2020-01-01\n";
        let wire = format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let r = every_split(wire.as_bytes(), false).unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(r.message, "entry for stream '{a=\"b\"}' has timestamp too old: 2020-01-01");
        assert!(r.keep_alive);
    }

    #[test]
    fn chunked_with_retry_after() {
        let wire = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nTransfer-Encoding: chunked\r\n\r\n\
                     6\r\nslow d\r\n4\r\nown!\r\n0\r\n\r\n";
        let r = every_split(wire, false).unwrap();
        assert_eq!((r.status, r.retry_after), (429, Some(RetryAfter::Seconds(2))));
        assert_eq!((r.message.as_str(), r.keep_alive), ("slow down!", true));
    }

    #[test]
    fn close_delimited_ends_at_eof_and_closes() {
        let r = every_split(b"HTTP/1.1 500 Internal Server Error\r\n\r\n  oops \n", true).unwrap();
        assert_eq!((r.status, r.message.as_str(), r.keep_alive), (500, "oops", false));
        let r = feed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 100, false).unwrap();
        assert!(!r.keep_alive, "HTTP/1.0");
        let r = feed(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", 100, false).unwrap();
        assert!(!r.keep_alive, "Connection: close");
    }

    #[test]
    fn interim_answers_are_skipped() {
        let wire =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let mut r = ResponseReader::new();
        assert_eq!(r.push(&wire[..25]), Ok(None));
        assert!(r.started() && !r.head_seen());
        let resp = r.push(&wire[25..]).unwrap().unwrap();
        assert_eq!(resp.status, 204);
        assert_eq!(every_split(wire, false).unwrap().status, 204);
        let many = "HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM as usize + 1);
        assert_eq!(feed(many.as_bytes(), 7, true), Err(SinkResponseError::BadInterim(100)));
        let switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n";
        assert_eq!(feed(switch, 100, true), Err(SinkResponseError::BadInterim(101)));
        assert_eq!(feed(b"HTTP/1.1 006 Odd\r\n\r\n", 3, true), Err(SinkResponseError::BadStatus(6)));
        assert_eq!(feed(b"HTTP/1.1 600 Odd\r\n\r\n", 3, true), Err(SinkResponseError::BadStatus(600)));
    }

    #[test]
    fn bodies_are_read_to_the_end_but_only_so_far() {
        // Up to the cap: read whole (the connection stays usable), 1 KiB kept.
        let body = "é".repeat(MAX_BODY / 2);
        let wire = format!("HTTP/1.1 500 Oops\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let r = feed(wire.as_bytes(), 4096, false).unwrap();
        assert!(r.keep_alive);
        assert_eq!(r.message, "é".repeat(MAX_MESSAGE / 2));
        let odd = format!("x{body}");
        let wire = format!("HTTP/1.1 500 Oops\r\nContent-Length: {}\r\n\r\n{odd}", MAX_BODY);
        let r = feed(&wire.as_bytes()[..wire.len() - 1], 4096, false).unwrap();
        assert_eq!(r.message.len(), MAX_MESSAGE - 1, "the cut character is dropped");
        assert_eq!(message_text(b"\xff ok \xe2\x82"), "\u{fffd} ok", "also after invalid bytes");
        assert_eq!(message_text(b"ok \xe2\x82\x41"), "ok \u{fffd}A", "invalid, not cut");
        // Over it: refused from the head when the length says so, else as
        // soon as the body passes it.
        let wire = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert_eq!(feed(wire.as_bytes(), 1, true), Err(SinkResponseError::TooLarge));
        let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..=MAX_BODY / 4096 {
            wire.extend_from_slice(b"1000\r\n");
            wire.extend_from_slice(&[b'a'; 4096]);
            wire.extend_from_slice(b"\r\n");
        }
        assert_eq!(feed(&wire, 1000, true), Err(SinkResponseError::TooLarge));
        let mut wire = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        wire.resize(wire.len() + MAX_BODY + 1, b'z');
        assert_eq!(feed(&wire, 5000, true), Err(SinkResponseError::TooLarge));
    }

    #[test]
    fn garbage_truncation_and_trailing_bytes() {
        assert!(matches!(feed(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", 3, true), Err(SinkResponseError::Head(_))));
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(feed(wire, 2, true), Err(SinkResponseError::Body(BodyError::BadChunk { .. }))));
        assert_eq!(ResponseReader::new().eof(), Err(SinkResponseError::ClosedBeforeAnswer));
        assert_eq!(feed(b"HTTP/1.1 204 No", 4, true), Err(SinkResponseError::TruncatedHead));
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab";
        assert_eq!(feed(wire, 4, true), Err(SinkResponseError::Body(BodyError::Truncated)));
        let mut r = ResponseReader::new();
        let wire = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(r.push(wire), Err(SinkResponseError::TrailingBytes));
        let mut r = ResponseReader::new();
        assert!(r.push(&wire[..27]).unwrap().is_some() && r.head_seen());
        assert_eq!(r.push(b""), Ok(None));
        assert_eq!(r.push(b"H"), Err(SinkResponseError::AlreadyComplete));
        assert_eq!(r.eof(), Err(SinkResponseError::AlreadyComplete));
    }
}
