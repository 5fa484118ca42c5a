//! HTTP/1.1 server side, as Loki's Go `net/http` server speaks it: request
//! heads (httparse), bodies with `Content-Length` or chunked, and the
//! responses Loki sends (`204` with no body, errors as `http.Error` writes
//! them: `text/plain; charset=utf-8`, `X-Content-Type-Options: nosniff`,
//! the message and a newline).

use std::fmt::Write as _;

/// Largest request head accepted; Go allows 1 MB, a push head is a few
/// hundred bytes.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// HTTP/1.0, or `Connection: close`.
    pub close: bool,
    pub body: BodyLen,
    pub expect_continue: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    Length(usize),
    Chunked,
}

impl Head {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// 400 and close, like Go's server before routing.
    Bad(&'static str),
    /// 431.
    TooLarge,
}

/// `Ok(None)`: more bytes needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Bad("malformed request")),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Bad("malformed request"));
    };
    let mut close = version == 0;
    let mut hosts = 0;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut list = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_owned();
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "host" => hosts += 1,
            "connection" if value.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) => close = true,
            "content-length" => {
                let n: usize = value.parse().map_err(|_| HeadError::Bad("bad Content-Length"))?;
                if length.is_some_and(|m| m != n) {
                    return Err(HeadError::Bad("conflicting Content-Length"));
                }
                length = Some(n);
            }
            "transfer-encoding" => {
                if !value.eq_ignore_ascii_case("chunked") {
                    return Err(HeadError::Bad("unsupported transfer encoding"));
                }
                chunked = true;
            }
            "expect" if value.eq_ignore_ascii_case("100-continue") => expect_continue = true,
            _ => {}
        }
        list.push((h.name.to_owned(), value));
    }
    if version == 1 && hosts != 1 {
        return Err(HeadError::Bad("missing required Host header"));
    }
    if chunked && length.is_some() {
        // RFC 9112 6.3: a message with both is a smuggling attempt.
        return Err(HeadError::Bad("both Transfer-Encoding and Content-Length"));
    }
    let body = if chunked { BodyLen::Chunked } else { BodyLen::Length(length.unwrap_or(0)) };
    let path = path.split('?').next().unwrap_or("").to_owned();
    Ok(Some((Head { method: method.to_owned(), path, headers: list, close, body, expect_continue }, len)))
}

#[derive(Debug, PartialEq, Eq)]
pub enum ChunkError {
    Malformed,
    TooLarge,
}

/// A chunked body at the start of `buf`: `Ok(Some((body, consumed)))` when
/// complete (trailers skipped), `Ok(None)` when more bytes are needed.
pub fn dechunk(buf: &[u8], max: usize) -> Result<Option<(Vec<u8>, usize)>, ChunkError> {
    let mut body = Vec::new();
    let mut i = 0;
    loop {
        let Some(eol) = find_crlf(&buf[i..]) else {
            return if buf.len() - i > 1024 { Err(ChunkError::Malformed) } else { Ok(None) };
        };
        let line = &buf[i..i + eol];
        let size_part = line.split(|&c| c == b';').next().unwrap_or(b"");
        let size_str = std::str::from_utf8(size_part).map_err(|_| ChunkError::Malformed)?.trim();
        if size_str.is_empty() || size_str.len() > 16 {
            return Err(ChunkError::Malformed);
        }
        let size = usize::from_str_radix(size_str, 16).map_err(|_| ChunkError::Malformed)?;
        i += eol + 2;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let Some(eol) = find_crlf(&buf[i..]) else { return Ok(None) };
                i += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, i)));
                }
            }
        }
        if body.len() + size > max {
            return Err(ChunkError::TooLarge);
        }
        if buf.len() < i + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[i..i + size]);
        if &buf[i + size..i + size + 2] != b"\r\n" {
            return Err(ChunkError::Malformed);
        }
        i += size + 2;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

fn status_line(s: &mut String, status: u16) {
    let r = reason(status);
    if r.is_empty() {
        let _ = write!(s, "HTTP/1.1 {status} status code {status}\r\n");
    } else {
        let _ = write!(s, "HTTP/1.1 {status} {r}\r\n");
    }
}

/// Loki's success: `204 No Content`, no body, no length (Go sends none for
/// 204).
pub fn no_content(date: &str, close: bool) -> Vec<u8> {
    let mut s = String::with_capacity(96);
    status_line(&mut s, 204);
    if close {
        s.push_str("Connection: close\r\n");
    }
    let _ = write!(s, "Date: {date}\r\n\r\n");
    s.into_bytes()
}

/// Go's `http.Error(w, message, status)`, plus extra headers before it.
pub fn error(status: u16, message: &str, extra: &[(&str, String)], date: &str, close: bool) -> Vec<u8> {
    let mut s = String::with_capacity(160 + message.len());
    status_line(&mut s, status);
    for (k, v) in extra {
        let _ = write!(s, "{k}: {v}\r\n");
    }
    if close {
        s.push_str("Connection: close\r\n");
    }
    let _ = write!(
        s,
        "Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nDate: {date}\r\nContent-Length: {}\r\n\r\n{message}\n",
        message.len() + 1
    );
    s.into_bytes()
}

/// A 200 head announcing `len` body bytes (the slow-body fault).
pub fn ok_head(len: usize, date: &str) -> Vec<u8> {
    let mut s = String::with_capacity(128);
    status_line(&mut s, 200);
    let _ =
        write!(s, "Content-Type: text/plain; charset=utf-8\r\nDate: {date}\r\nContent-Length: {len}\r\n\r\n");
    s.into_bytes()
}

pub fn text(status: u16, body: &str, date: &str) -> Vec<u8> {
    let mut s = String::with_capacity(128 + body.len());
    status_line(&mut s, status);
    let _ = write!(
        s,
        "Content-Type: text/plain; charset=utf-8\r\nDate: {date}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.into_bytes()
}

pub fn continue_100() -> &'static [u8] {
    b"HTTP/1.1 100 Continue\r\n\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let raw = b"POST /loki/api/v1/push?x=1 HTTP/1.1\r\nHost: l\r\nContent-Length: 5\r\nX-Scope-OrgID: t\r\n\r\nhello";
        let (h, n) = parse_head(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 5);
        assert_eq!((h.path.as_str(), h.body, h.close), ("/loki/api/v1/push", BodyLen::Length(5), false));
        assert_eq!(h.get("x-scope-orgid"), Some("t"));
        for split in 0..n {
            assert_eq!(parse_head(&raw[..split]).unwrap().map(|x| x.1), None, "{split}");
        }
        assert!(parse_head(b"POST / HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_head(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .is_err());
        let (h, _) = parse_head(b"POST / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(h.close);
    }

    #[test]
    fn chunks_at_every_split() {
        let raw = b"5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (body, n) = dechunk(raw, 100).unwrap().unwrap();
        assert_eq!((body.as_slice(), n), (&b"hello world!"[..], raw.len() - 4));
        for split in 0..n {
            assert_eq!(dechunk(&raw[..split], 100), Ok(None), "{split}");
        }
        assert_eq!(dechunk(raw, 5), Err(ChunkError::TooLarge));
        assert_eq!(dechunk(b"zz\r\n", 100), Err(ChunkError::Malformed));
        assert_eq!(dechunk(b"2\r\nabcd", 100), Err(ChunkError::Malformed));
    }
}
