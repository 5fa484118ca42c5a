//! One short API call's response (ping, list, inspect): the head, then the
//! whole body collected up to a cap. Sans-IO like the parsers it uses.

use std::fmt;

use crate::docker::api;
use crate::http::body::{BodyDecoder, BodyError, BodyEvent, BodyKind};
use crate::http::head::{HeadError, HeadReader, ResponseHead};

/// The largest API body accepted by default (ping; the startup check).
pub const MAX_API_BODY: usize = 64 << 10;
/// The largest container list accepted. dockerd writes ~1 KiB per container
/// (more with many labels or networks): 32 MiB is some 10 000 containers,
/// stopped ones included, far beyond what a node runs. A bigger list is a
/// broken or hostile daemon, and is never pulled whole (nor in a loop: the
/// list is retried with backoff).
pub const MAX_LIST_BODY: usize = 32 << 20;
/// The largest inspect answer accepted (a few KiB; environment and labels
/// can make it larger).
pub const MAX_INSPECT_BODY: usize = 4 << 20;
/// The most of an error body kept: the daemon's message is in its first
/// bytes; the rest is not read.
pub const MAX_ERROR_BODY: usize = 4 << 10;

#[derive(Debug)]
pub enum ExchangeError {
    Head(HeadError),
    Body(BodyError),
    /// The body passed this cap.
    TooLarge(usize),
    /// Non-2xx: the status and the daemon's message.
    Status(u16, String),
    /// The connection failed or a deadline passed before an answer.
    Conn(String),
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Head(e) => e.fmt(f),
            Self::Body(e) => e.fmt(f),
            Self::TooLarge(cap) => write!(f, "response body larger than {cap} bytes"),
            Self::Status(s, m) => write!(f, "Docker answered {s}: {m}"),
            Self::Conn(m) => f.write_str(m),
        }
    }
}

impl ExchangeError {
    /// The `kind` of `log_capturer_docker_errors_total` it counts as.
    pub fn metric_kind(&self) -> &'static str {
        match self {
            Self::Head(_) | Self::Body(_) | Self::TooLarge(_) => "protocol",
            Self::Status(404, _) => "not_found",
            Self::Status(s, _) if *s >= 500 => "status_5xx",
            Self::Status(..) => "status_4xx",
            Self::Conn(_) => "connect",
        }
    }
}

pub struct Exchange {
    head_reader: HeadReader,
    head: Option<ResponseHead>,
    body: Option<BodyDecoder>,
    data: Vec<u8>,
    cap: usize,
}

impl Default for Exchange {
    fn default() -> Self {
        Self::with_cap(MAX_API_BODY)
    }
}

/// A complete response.
pub struct Response {
    pub head: ResponseHead,
    pub body: Vec<u8>,
}

impl Exchange {
    /// An exchange whose body may be at most `cap` bytes.
    pub fn with_cap(cap: usize) -> Self {
        Self { head_reader: HeadReader::default(), head: None, body: None, data: Vec::new(), cap }
    }

    pub fn head(&self) -> Option<&ResponseHead> {
        self.head.as_ref()
    }

    /// Feed bytes; Ok(Some) once the response is complete.
    pub fn push(&mut self, mut input: &[u8]) -> Result<Option<Response>, ExchangeError> {
        if self.head.is_none() {
            let Some((h, used)) = self.head_reader.push(input).map_err(ExchangeError::Head)? else {
                return Ok(None);
            };
            input = &input[used..];
            self.head = Some(h);
            self.body = Some(BodyDecoder::new(h.body));
            if let BodyKind::Length(n) = h.body {
                // Refused before a byte of it is read.
                if h.is_success() && n > self.cap as u64 {
                    return Err(ExchangeError::TooLarge(self.cap));
                }
            }
        }
        let error = !self.head.as_ref().expect("set above").is_success();
        let body = self.body.as_mut().expect("set with the head");
        while !input.is_empty() || body.is_done() {
            let (n, ev) = body.decode(input).map_err(ExchangeError::Body)?;
            input = &input[n..];
            match ev {
                Some(BodyEvent::Data(d)) => {
                    if error {
                        let room = MAX_ERROR_BODY.saturating_sub(self.data.len());
                        self.data.extend_from_slice(&d[..d.len().min(room)]);
                        if self.data.len() >= MAX_ERROR_BODY {
                            return self.complete().map(Some);
                        }
                        continue;
                    }
                    if self.data.len() + d.len() > self.cap {
                        return Err(ExchangeError::TooLarge(self.cap));
                    }
                    self.data.extend_from_slice(d);
                }
                Some(BodyEvent::End) => return self.complete().map(Some),
                None => break,
            }
        }
        Ok(None)
    }

    /// The connection reached EOF.
    pub fn finish(&mut self) -> Result<Response, ExchangeError> {
        let Some(body) = self.body.as_mut() else {
            return Err(ExchangeError::Body(BodyError::Truncated));
        };
        body.finish().map_err(ExchangeError::Body)?;
        self.complete()
    }

    fn complete(&mut self) -> Result<Response, ExchangeError> {
        let head = self.head.expect("complete after the head");
        let body = std::mem::take(&mut self.data);
        if !head.is_success() {
            return Err(ExchangeError::Status(head.status, api::error_message(&body)));
        }
        Ok(Response { head, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_length_bodies_in_pieces() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n";
        for piece in 1..wire.len() {
            let mut ex = Exchange::default();
            let mut done = None;
            for p in wire.chunks(piece) {
                if let Some(r) = ex.push(p).unwrap() {
                    done = Some(r);
                }
            }
            assert_eq!(done.expect("complete").body, b"[1,2]", "piece {piece}");
        }
        let mut ex = Exchange::default();
        let r =
            ex.push(b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK").unwrap().unwrap();
        assert_eq!(r.body, b"OK");
        assert_eq!(r.head.api_version.unwrap().to_string(), "1.41");
    }

    #[test]
    fn errors_carry_the_daemon_message() {
        let mut ex = Exchange::default();
        let body = br#"{"message":"No such container: x"}"#;
        let wire =
            [format!("HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(), body]
                .concat();
        match ex.push(&wire) {
            Err(ExchangeError::Status(404, m)) => assert_eq!(m, "No such container: x"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn bodies_over_the_cap_are_refused_without_reading_them_whole() {
        let mut ex = Exchange::with_cap(10);
        let r = ex.push(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n");
        assert!(matches!(r, Err(ExchangeError::TooLarge(10))));
        let mut ex = Exchange::with_cap(10);
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n[     \r\n6\r\n     ]\r\n";
        assert!(matches!(ex.push(wire), Err(ExchangeError::TooLarge(10))));
        // An error body is cut to its first bytes, the message kept.
        let mut ex = Exchange::with_cap(10);
        let msg = format!("{{\"message\":\"{}", "x".repeat(2 * MAX_ERROR_BODY));
        let wire = format!("HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n{msg}", msg.len() + 2);
        match ex.push(wire.as_bytes()) {
            Err(ExchangeError::Status(403, m)) => assert!(m.len() <= MAX_ERROR_BODY, "{}", m.len()),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn empty_length_body_completes_with_the_head() {
        let mut ex = Exchange::default();
        assert!(ex.push(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().is_some());
    }
}
