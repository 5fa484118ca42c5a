//! The HTTP/1.1 response head (status line and headers), parsed with
//! `httparse` into just the facts the agent acts on. Nothing is allocated:
//! the result is a small `Copy` struct.

use std::fmt;

use super::body::BodyKind;

/// A head larger than this is refused: dockerd's are a few hundred bytes,
/// so anything near this is a broken or hostile peer.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers we look at; dockerd sends fewer than ten.
pub const MAX_HEADERS: usize = 64;

/// The `Content-Type`, as far as it decides how we read the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// `application/vnd.docker.multiplexed-stream`: 8-byte frame headers.
    Multiplexed,
    /// `application/vnd.docker.raw-stream`: a TTY container's bytes as is.
    Raw,
    Json,
    Other,
}

/// An API version as dockerd writes it in `Api-Version`: `1.41`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u16,
    pub minor: u16,
}

impl ApiVersion {
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    pub fn parse(s: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(s).ok()?.trim();
        let (major, minor) = s.split_once('.')?;
        Some(Self { major: major.parse().ok()?, minor: minor.parse().ok()? })
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// `Some` when the header is present; `None` is common (dockerd 20.10
    /// sends none on log streams).
    pub content_type: Option<ContentType>,
    pub body: BodyKind,
    pub api_version: Option<ApiVersion>,
    /// The server will close the connection after this response.
    pub close: bool,
    /// The server's clock when it answered (`Date`, ns since the epoch,
    /// whole seconds): for dockerd, the clock that stamps log lines.
    pub date: Option<i64>,
    /// `Retry-After` (429, 503): when the server asks to be tried again.
    pub retry_after: Option<RetryAfter>,
}

/// A `Retry-After` value (RFC 9110 10.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `delay-seconds`.
    Seconds(u64),
    /// An HTTP-date, ns since the epoch on the server's clock: compare it
    /// with the same response's `Date`, not with ours.
    At(i64),
}

impl RetryAfter {
    fn parse(v: &[u8]) -> Option<Self> {
        let v = v.trim_ascii();
        if !v.is_empty() && v.iter().all(u8::is_ascii_digit) {
            // A value too long for u64 is "a very long time".
            return Some(Self::Seconds(std::str::from_utf8(v).ok()?.parse().unwrap_or(u64::MAX)));
        }
        crate::docker::timestamp::parse_http_date(v).map(Self::At)
    }

    /// The wait it asks for, given the response's `Date` (`None`: the
    /// HTTP-date form without a `Date` to compare it with).
    pub fn wait(self, date: Option<i64>) -> Option<std::time::Duration> {
        match self {
            Self::Seconds(s) => Some(std::time::Duration::from_secs(s)),
            Self::At(at) => {
                let ns = at.saturating_sub(date?).max(0);
                Some(std::time::Duration::from_nanos(ns as u64))
            }
        }
    }
}

impl ResponseHead {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// The head did not end within [`MAX_HEAD`] bytes.
    TooLarge,
    /// Not a well-formed HTTP/1.x response head.
    Malformed(httparse::Error),
    /// `Content-Length` is not a number, or appears twice with different values.
    BadContentLength,
    /// Not HTTP/1.0 or 1.1.
    BadVersion,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => write!(f, "response head larger than {MAX_HEAD} bytes"),
            Self::Malformed(e) => write!(f, "malformed response head: {e}"),
            Self::BadContentLength => write!(f, "invalid Content-Length header"),
            Self::BadVersion => write!(f, "not an HTTP/1.x response"),
        }
    }
}

impl std::error::Error for HeadError {}

/// Parse a response head from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (unless `buf` already holds
/// [`MAX_HEAD`] bytes, which is `TooLarge`). `Ok(Some((head, n)))`: the head
/// took the first `n` bytes; the body starts at `buf[n]`.
pub fn parse(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HeadError::Malformed(e)),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let status = resp.code.ok_or(HeadError::Malformed(httparse::Error::Status))?;
    let version = resp.version.ok_or(HeadError::BadVersion)?;

    let mut content_type = None;
    let mut api_version = None;
    let mut date = None;
    let mut retry_after = None;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut other_coding = false;
    let mut close = version == 0;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(classify_content_type(h.value));
        } else if name.eq_ignore_ascii_case("api-version") {
            api_version = ApiVersion::parse(h.value);
        } else if name.eq_ignore_ascii_case("date") {
            date = crate::docker::timestamp::parse_http_date(h.value);
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = RetryAfter::parse(h.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(HeadError::BadContentLength)?;
            if content_length.is_some_and(|old| old != v) {
                return Err(HeadError::BadContentLength);
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the final coding decides the framing (RFC 9112 6.3).
            for coding in h.value.split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                if coding.is_empty() {
                    continue;
                }
                chunked = coding.eq_ignore_ascii_case(b"chunked");
                other_coding = !chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
    }

    let body = if status / 100 == 1 || status == 204 || status == 304 {
        BodyKind::Length(0)
    } else if chunked {
        BodyKind::Chunked
    } else if other_coding {
        close = true;
        BodyKind::UntilClose
    } else if let Some(n) = content_length {
        BodyKind::Length(n)
    } else {
        close = true;
        BodyKind::UntilClose
    };
    Ok(Some((ResponseHead { status, content_type, body, api_version, close, date, retry_after }, len)))
}

/// Collects a response head that may arrive in any number of pieces, and
/// never holds more than [`MAX_HEAD`] bytes of it.
#[derive(Debug, Default)]
pub struct HeadReader {
    buf: Vec<u8>,
}

impl HeadReader {
    /// Take bytes of `input`. `Ok(None)`: all of it was head and more is
    /// needed. `Ok(Some((head, used)))`: the head is complete and its last
    /// byte was `input[used - 1]`; the body starts at `input[used]`.
    pub fn push(&mut self, input: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
        let before = self.buf.len();
        let take = input.len().min(MAX_HEAD - before);
        self.buf.extend_from_slice(&input[..take]);
        match parse(&self.buf)? {
            None if take < input.len() => Err(HeadError::TooLarge),
            None => Ok(None),
            Some((head, len)) => {
                self.buf = Vec::new();
                Ok(Some((head, len - before)))
            }
        }
    }
}

fn classify_content_type(v: &[u8]) -> ContentType {
    let essence = v.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    if essence.eq_ignore_ascii_case(b"application/vnd.docker.multiplexed-stream") {
        ContentType::Multiplexed
    } else if essence.eq_ignore_ascii_case(b"application/vnd.docker.raw-stream") {
        ContentType::Raw
    } else if essence.eq_ignore_ascii_case(b"application/json") {
        ContentType::Json
    } else {
        ContentType::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> ResponseHead {
        let (h, n) = parse(s.as_bytes()).unwrap().unwrap();
        assert_eq!(n, s.len());
        h
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_on_the_servers_clock() {
        let h = head("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.retry_after, Some(RetryAfter::Seconds(7)));
        assert_eq!(h.retry_after.unwrap().wait(None), Some(std::time::Duration::from_secs(7)));
        let h = head(
            "HTTP/1.1 503 Service Unavailable\r\nDate: Fri, 27 Nov 2026 19:48:22 GMT\r\n\
             Retry-After: Fri, 27 Nov 2026 19:48:52 GMT\r\nContent-Length: 0\r\n\r\n",
        );
        // 30 s after the server's own Date, whatever our clock says.
        assert_eq!(h.retry_after.unwrap().wait(h.date), Some(std::time::Duration::from_secs(30)));
        // A date in the past is "now"; garbage is ignored; huge is saturated.
        let past = RetryAfter::At(0);
        assert_eq!(past.wait(Some(1_000_000_000)), Some(std::time::Duration::ZERO));
        assert_eq!(RetryAfter::parse(b"soon"), None);
        assert_eq!(RetryAfter::parse(b"-5"), None);
        assert_eq!(RetryAfter::parse(b"99999999999999999999999"), Some(RetryAfter::Seconds(u64::MAX)));
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").retry_after, None);
    }

    #[test]
    fn dockerd_20_10_logs_head() {
        let h = head(
            "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nDocker-Experimental: false\r\nOstype: linux\r\n\
             Server: Docker/20.10.24+dfsg1 (linux)\r\nDate: Fri, 27 Nov 2026 19:48:22 GMT\r\n\
             Transfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(h.status, 200);
        assert_eq!(h.body, BodyKind::Chunked);
        assert_eq!(h.content_type, None);
        assert_eq!(h.api_version, Some(ApiVersion::new(1, 41)));
        assert!(!h.close);
        assert_eq!(h.date, Some(1_795_808_902_000_000_000));
        assert_eq!(head("HTTP/1.1 200 OK\r\nDate: yesterday\r\n\r\n").date, None);
    }

    #[test]
    fn content_types() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n");
        assert_eq!(h.content_type, Some(ContentType::Raw));
        assert_eq!(h.body, BodyKind::UntilClose);
        assert!(h.close);
        let h = head(
            "HTTP/1.1 200 OK\r\ncontent-type: Application/Vnd.Docker.Multiplexed-Stream\r\n\
             Content-Length: 0\r\n\r\n",
        );
        assert_eq!(h.content_type, Some(ContentType::Multiplexed));
        let h = head(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json; charset=utf-8\r\n\
             Content-Length: 29\r\n\r\n",
        );
        assert_eq!((h.status, h.content_type, h.body), (404, Some(ContentType::Json), BodyKind::Length(29)));
        assert!(!h.is_success());
    }

    #[test]
    fn framing_rules() {
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.body, BodyKind::Chunked);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!((h.body, h.close), (BodyKind::UntilClose, true));
        let h = head("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(h.body, BodyKind::Length(0));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(h.body, BodyKind::Length(7));
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(h.close);
        let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n");
        assert!(h.close);
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HeadError::BadContentLength)
        );
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), Err(HeadError::BadContentLength));
        assert!(matches!(parse(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(HeadError::Malformed(_))));
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() < MAX_HEAD {
            big.extend_from_slice(b"X-Filler: ");
            big.extend_from_slice(&[b'a'; 1000]);
            big.extend_from_slice(b"\r\n");
        }
        assert_eq!(parse(&big), Err(HeadError::TooLarge));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"A: b\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Err(HeadError::Malformed(httparse::Error::TooManyHeaders)));
    }

    #[test]
    fn partial_heads_ask_for_more() {
        let full = b"HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\nContent-Length: 2\r\n\r\nOK";
        for cut in 0..full.len() - 2 {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        let (h, n) = parse(full).unwrap().unwrap();
        assert_eq!((n, h.api_version), (full.len() - 2, Some(ApiVersion::new(1, 47))));
    }

    #[test]
    fn head_reader_in_pieces_and_over_the_cap() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK";
        let head_len = wire.len() - 2;
        for cut in 1..head_len {
            let mut r = HeadReader::default();
            assert_eq!(r.push(&wire[..cut]), Ok(None));
            let (h, used) = r.push(&wire[cut..]).unwrap().unwrap();
            assert_eq!((h.status, used), (200, head_len - cut), "cut {cut}");
        }
        let mut r = HeadReader::default();
        let filler = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert_eq!(r.push(&filler), Err(HeadError::TooLarge));
    }

    #[test]
    fn api_version_forms() {
        assert_eq!(ApiVersion::parse(b"1.41"), Some(ApiVersion::new(1, 41)));
        assert_eq!(ApiVersion::parse(b" 1.52 "), Some(ApiVersion::new(1, 52)));
        assert_eq!(ApiVersion::parse(b"1"), None);
        assert_eq!(ApiVersion::parse(b"x.y"), None);
        assert!(ApiVersion::new(1, 9) < ApiVersion::new(1, 41));
    }
}
