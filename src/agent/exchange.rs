//! One short API call's response (ping, list, inspect): the head, then the
//! whole body collected up to a cap. Sans-IO like the parsers it uses.

use std::fmt;

use crate::docker::api;
use crate::http::body::{BodyDecoder, BodyError, BodyEvent};
use crate::http::head::{HeadError, HeadReader, ResponseHead};

/// The largest API body we accept: a list of 10 000 containers is ~15 MB.
pub const MAX_API_BODY: usize = 64 << 20;

#[derive(Debug)]
pub enum ExchangeError {
    Head(HeadError),
    Body(BodyError),
    TooLarge,
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
            Self::TooLarge => write!(f, "response body larger than {MAX_API_BODY} bytes"),
            Self::Status(s, m) => write!(f, "Docker answered {s}: {m}"),
            Self::Conn(m) => f.write_str(m),
        }
    }
}

impl ExchangeError {
    /// The `kind` of `log_capturer_docker_errors_total` it counts as.
    pub fn metric_kind(&self) -> &'static str {
        match self {
            Self::Head(_) | Self::Body(_) | Self::TooLarge => "protocol",
            Self::Status(404, _) => "not_found",
            Self::Status(s, _) if *s >= 500 => "status_5xx",
            Self::Status(..) => "status_4xx",
            Self::Conn(_) => "connect",
        }
    }
}

#[derive(Default)]
pub struct Exchange {
    head_reader: HeadReader,
    head: Option<ResponseHead>,
    body: Option<BodyDecoder>,
    data: Vec<u8>,
}

/// A complete response.
pub struct Response {
    pub head: ResponseHead,
    pub body: Vec<u8>,
}

impl Exchange {
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
        }
        let body = self.body.as_mut().expect("set with the head");
        while !input.is_empty() || body.is_done() {
            let (n, ev) = body.decode(input).map_err(ExchangeError::Body)?;
            input = &input[n..];
            match ev {
                Some(BodyEvent::Data(d)) => {
                    if self.data.len() + d.len() > MAX_API_BODY {
                        return Err(ExchangeError::TooLarge);
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
    fn empty_length_body_completes_with_the_head() {
        let mut ex = Exchange::default();
        assert!(ex.push(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().is_some());
    }
}
