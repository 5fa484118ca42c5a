//! HTTP/1.1 as dockerd's Go `net/http` server speaks it: request heads in,
//! response heads and chunks out, with the header sets and orders of the
//! captures in `tests/data/*.http`.

use std::fmt::Write as _;

use crate::time;

/// Largest request head we accept. Go allows 1 MB, but the agent's requests
/// are a few hundred bytes; a head this large means a broken client.
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// The parts of a request the double acts on.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// Percent-decoded path, without the query.
    pub path: String,
    /// Decoded `key=value` pairs in order; lookups take the first, like Go's
    /// `FormValue`.
    pub query: Vec<(String, String)>,
    /// Close after the response: `Connection: close`, HTTP/1.0, or a request
    /// body we do not read.
    pub close: bool,
}

impl Request {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// moby's `httputils.BoolValue`: "", 0, no, false and none (any case,
    /// trimmed) are false, anything else true; absent is false.
    pub fn flag(&self, key: &str) -> bool {
        match self.param(key) {
            None => false,
            Some(v) => {
                let v = v.trim().to_ascii_lowercase();
                !matches!(v.as_str(), "" | "0" | "no" | "false" | "none")
            }
        }
    }
}

pub enum Parsed {
    /// More bytes needed.
    Partial,
    /// A request and the length of its head in the buffer.
    Done(Request, usize),
    /// A request Go's server refuses before routing; the text is Go's
    /// "public error" (`400 Bad Request: missing required Host header`),
    /// sent with [`go_error`] before closing.
    Reject(&'static str),
}

pub fn parse_request(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Parsed::Reject("431 Request Header Fields Too Large")
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Reject("431 Request Header Fields Too Large"),
        Err(_) => return Parsed::Reject("400 Bad Request"),
    };
    if len > MAX_HEAD {
        return Parsed::Reject("431 Request Header Fields Too Large");
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Reject("400 Bad Request");
    };
    let mut host = 0;
    let mut close = version == 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            host += 1;
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.split(',').any(|t| t.trim() == "close") {
                close = true;
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // We never read request bodies (every endpoint is a GET), so a
            // body would desynchronise keep-alive: answer, then close.
            if h.value != b"0" {
                close = true;
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            close = true;
        }
    }
    // Go: HTTP/1.1 requires exactly one Host header.
    if version == 1 && host == 0 {
        return Parsed::Reject("400 Bad Request: missing required Host header");
    }
    if host > 1 {
        return Parsed::Reject("400 Bad Request: too many Host headers");
    }
    let (raw_path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let query = raw_query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k, true), decode(v, true))
        })
        .collect();
    Parsed::Done(Request { method: method.to_owned(), path: decode(raw_path, false), query, close }, len)
}

/// Percent-decoding; `+` is a space in query strings only. Invalid escapes
/// are kept as they are, like Go's lenient path handling.
fn decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// What every response of the daemon carries, whatever the endpoint.
pub struct Server<'a> {
    /// `1.41`: the daemon's maximum API version.
    pub api: &'a str,
    /// `20.10.24+dfsg1`.
    pub version: &'a str,
    /// The daemon's clock, for `Date`.
    pub now_ns: i64,
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

fn status_line(out: &mut Vec<u8>, status: u16) {
    let r = reason(status);
    let mut s = String::with_capacity(32);
    if r.is_empty() {
        // Go's form for codes it has no text for.
        let _ = write!(s, "HTTP/1.1 {status} status code {status}\r\n");
    } else {
        let _ = write!(s, "HTTP/1.1 {status} {r}\r\n");
    }
    out.extend_from_slice(s.as_bytes());
}

fn common(out: &mut Vec<u8>, srv: &Server, content_type: Option<&str>) {
    let mut s = String::with_capacity(192);
    // Go writes handler headers sorted by key, then Date, then the framing.
    let _ = write!(s, "Api-Version: {}\r\n", srv.api);
    if let Some(ct) = content_type {
        let _ = write!(s, "Content-Type: {ct}\r\n");
    }
    let _ = write!(
        s,
        "Docker-Experimental: false\r\nOstype: linux\r\nServer: Docker/{} (linux)\r\nDate: {}\r\n",
        srv.version,
        time::http_date(srv.now_ns)
    );
    out.extend_from_slice(s.as_bytes());
}

/// A JSON response. Go's server sets `Content-Length` when the handler's
/// whole output fits its 2 KiB buffer and chunks it otherwise (one chunk for
/// one big write): `chunk_threshold` reproduces that.
pub fn json(out: &mut Vec<u8>, srv: &Server, status: u16, body: &[u8], chunk_threshold: usize) {
    status_line(out, status);
    common(out, srv, Some("application/json"));
    if body.len() > chunk_threshold {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        chunk(out, body);
        terminator(out);
    } else {
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
    }
}

/// dockerd's error body: `{"message":"..."}` and the encoder's newline.
pub fn error_body(message: &str) -> Vec<u8> {
    let mut b = b"{\"message\":".to_vec();
    b.extend_from_slice(json_str(message).as_bytes());
    b.extend_from_slice(b"}\n");
    b
}

pub fn error(out: &mut Vec<u8>, srv: &Server, status: u16, message: &str) {
    // Error bodies are short; dockerd never chunks them.
    json(out, srv, status, &error_body(message), usize::MAX);
}

/// `GET`/`HEAD /_ping`, header for header as in `ping.http`. HEAD gets
/// `Content-Length: 0` and no body (moby's ping handler).
pub fn ping(out: &mut Vec<u8>, srv: &Server, head: bool) {
    status_line(out, 200);
    let mut s = String::with_capacity(320);
    let _ = write!(
        s,
        "Api-Version: {}\r\nCache-Control: no-cache, no-store, must-revalidate\r\n\
         Docker-Experimental: false\r\nOstype: linux\r\nPragma: no-cache\r\n\
         Server: Docker/{} (linux)\r\nDate: {}\r\n",
        srv.api,
        srv.version,
        time::http_date(srv.now_ns)
    );
    if head {
        s.push_str("Content-Length: 0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    } else {
        s.push_str("Content-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOK");
    }
    out.extend_from_slice(s.as_bytes());
}

/// The head of a streamed 200 response (logs, events): chunked, and nothing
/// after it until the first message.
pub fn stream_head(out: &mut Vec<u8>, srv: &Server, content_type: Option<&str>) {
    status_line(out, 200);
    common(out, srv, content_type);
    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
}

/// Go's reply to a request it cannot route at all (no Host, head too
/// large): written straight to the socket, then the connection is closed.
pub fn go_error(out: &mut Vec<u8>, public: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(public.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n");
    out.extend_from_slice(public.as_bytes());
}

/// The size line of a chunk of `len` bytes (lower-case hex, like Go).
pub fn chunk_head(out: &mut Vec<u8>, len: usize) {
    // Lower-case hex without leading zeros, as Go writes it; no allocation,
    // it runs once per log message.
    let mut buf = [0u8; 2 * std::mem::size_of::<usize>()];
    let mut i = buf.len();
    let mut v = len;
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[v & 15];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
    out.extend_from_slice(b"\r\n");
}

pub fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    chunk_head(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

pub fn terminator(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

/// A JSON string literal, escaped as serde_json does.
pub fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parts() {
        let raw =
            b"GET /v1.41/containers/abc/logs?stdout=1&since=1.5&x=a%20b+c HTTP/1.1\r\nHost: docker\r\n\r\n";
        let Parsed::Done(r, n) = parse_request(raw) else { panic!("not parsed") };
        assert_eq!(n, raw.len());
        assert_eq!(r.path, "/v1.41/containers/abc/logs");
        assert_eq!(r.param("since"), Some("1.5"));
        assert_eq!(r.param("x"), Some("a b c"));
        assert!(r.flag("stdout") && !r.flag("stderr") && !r.close);
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\n\r\n"),
            Parsed::Reject("400 Bad Request: missing required Host header")
        ));
        assert!(matches!(parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial));
        let Parsed::Done(r, _) = parse_request(b"GET / HTTP/1.0\r\n\r\n") else { panic!() };
        assert!(r.close);
    }

    #[test]
    fn decoding() {
        assert_eq!(decode("%7B%22a%22%7D", true), "{\"a\"}");
        assert_eq!(decode("100%", true), "100%");
        assert_eq!(decode("%zz%4", true), "%zz%4");
        assert_eq!(decode("a+b", false), "a+b");
    }

    #[test]
    fn flags_like_moby() {
        for (v, want) in [
            ("", false),
            ("0", false),
            ("no", false),
            ("FALSE", false),
            ("none", false),
            ("1", true),
            ("yes", true),
            ("true", true),
        ] {
            let r = Request {
                method: "GET".into(),
                path: "/".into(),
                query: vec![("f".into(), v.into())],
                close: false,
            };
            assert_eq!(r.flag("f"), want, "{v:?}");
        }
    }
}
