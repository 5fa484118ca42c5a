//! Request heads the agent writes to a sink: `POST` with a body of known
//! length, on a keep-alive connection (and `GET`, for `check`'s questions).
//!
//! Header values come from the operator (a tenant, a token read from a
//! file, `--header` flags): a CR or LF in one would end the head early and
//! let the rest be read as another request, so every name and value is
//! checked when the head is built ([`Headers::add`]), once, at start-up.

use std::fmt;

/// Longest head this writer makes (names, values and the request line).
pub const MAX_HEAD: usize = 16 << 10;

/// A header the writer refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadHeader {
    /// Not an RFC 9110 token (letters, digits, `!#$%&'*+-.^_|~` and backtick).
    Name(String),
    /// A control character (CR, LF, NUL…) in the value of this header.
    Value(String),
    /// Set by the writer itself (`Host`, `Content-Length`, …).
    Reserved(String),
    /// The head would pass [`MAX_HEAD`].
    TooLarge,
}

impl fmt::Display for BadHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => {
                write!(f, "`{n}` is not a valid header name (letters, digits and -._~ and the like)")
            }
            Self::Value(n) => write!(f, "the value of header `{n}` holds a control character (CR, LF, …)"),
            Self::Reserved(n) => write!(f, "header `{n}` is set by the agent itself and cannot be given"),
            Self::TooLarge => write!(f, "headers larger than {MAX_HEAD} bytes in all"),
        }
    }
}

impl std::error::Error for BadHeader {}

/// Headers the writer sets itself, refused from the caller.
const RESERVED: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_field_value(s: &str) -> bool {
    // Visible characters, spaces and tabs; obs-text (>= 0x80) is allowed
    // by RFC 9110 and harmless here.
    s.bytes().all(|b| b == b'\t' || b >= 0x20 && b != 0x7f)
}

/// Checked headers, in the order given, encoded once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    encoded: String,
}

impl Headers {
    /// Add `name: value` after checking both.
    pub fn add(&mut self, name: &str, value: &str) -> Result<(), BadHeader> {
        if !is_token(name) {
            return Err(BadHeader::Name(name.chars().take(80).collect()));
        }
        if RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            return Err(BadHeader::Reserved(name.to_owned()));
        }
        if !is_field_value(value) {
            return Err(BadHeader::Value(name.to_owned()));
        }
        if self.encoded.len() + name.len() + value.len() + 4 > MAX_HEAD / 2 {
            return Err(BadHeader::TooLarge);
        }
        self.encoded.push_str(name);
        self.encoded.push_str(": ");
        self.encoded.push_str(value.trim_matches([' ', '\t']));
        self.encoded.push_str("\r\n");
        Ok(())
    }
}

/// The head of `POST <path> HTTP/1.1` to `host` with a body of
/// `content_length` bytes, the checked `headers`, keep-alive.
///
/// `path` and `host` come from a URL parsed at start-up; they are checked
/// here too, so no caller can put a CR or LF on the wire.
pub fn post(path: &str, host: &str, headers: &Headers, content_length: usize) -> Result<Vec<u8>, BadHeader> {
    head("POST", path, host, headers, Some(content_length))
}

/// A request head with no body (`GET`).
pub fn get(path: &str, host: &str, headers: &Headers) -> Result<Vec<u8>, BadHeader> {
    head("GET", path, host, headers, None)
}

fn head(
    method: &str,
    path: &str,
    host: &str,
    headers: &Headers,
    content_length: Option<usize>,
) -> Result<Vec<u8>, BadHeader> {
    let path_ok = path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic());
    if !path_ok {
        return Err(BadHeader::Value("request target".into()));
    }
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BadHeader::Value("Host".into()));
    }
    let mut out = String::with_capacity(128 + headers.encoded.len());
    out.push_str(method);
    out.push(' ');
    out.push_str(path);
    out.push_str(" HTTP/1.1\r\nHost: ");
    out.push_str(host);
    out.push_str("\r\nUser-Agent: log-capturer/");
    out.push_str(env!("CARGO_PKG_VERSION"));
    out.push_str("\r\n");
    if let Some(n) = content_length {
        out.push_str("Content-Length: ");
        out.push_str(&n.to_string());
        out.push_str("\r\n");
    }
    out.push_str(&headers.encoded);
    out.push_str("\r\n");
    if out.len() > MAX_HEAD {
        return Err(BadHeader::TooLarge);
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_head_parses_back_with_its_headers() {
        let mut h = Headers::default();
        h.add("Content-Type", "application/x-protobuf").unwrap();
        h.add("X-Scope-OrgID", " tenant-1 ").unwrap();
        let head = post("/loki/api/v1/push", "loki.example:3100", &h, 1234).unwrap();
        let mut parsed = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut parsed);
        assert_eq!(req.parse(&head).unwrap(), httparse::Status::Complete(head.len()));
        assert_eq!((req.method, req.path), (Some("POST"), Some("/loki/api/v1/push")));
        let get = |n: &str| req.headers.iter().find(|x| x.name.eq_ignore_ascii_case(n)).map(|x| x.value);
        assert_eq!(get("host"), Some(&b"loki.example:3100"[..]));
        assert_eq!(get("content-length"), Some(&b"1234"[..]));
        assert_eq!(get("x-scope-orgid"), Some(&b"tenant-1"[..]));
    }

    #[test]
    fn nothing_can_smuggle_a_second_request() {
        let mut h = Headers::default();
        assert!(matches!(h.add("X-A", "v\r\n\r\nGET /x HTTP/1.1"), Err(BadHeader::Value(_))));
        assert!(matches!(h.add("X-A", "v\nx"), Err(BadHeader::Value(_))));
        assert!(matches!(h.add("X A", "v"), Err(BadHeader::Name(_))));
        assert!(matches!(h.add("X-A:", "v"), Err(BadHeader::Name(_))));
        assert!(matches!(h.add("", "v"), Err(BadHeader::Name(_))));
        assert!(matches!(h.add("content-length", "0"), Err(BadHeader::Reserved(_))));
        assert!(matches!(h.add("Transfer-Encoding", "chunked"), Err(BadHeader::Reserved(_))));
        assert_eq!(h, Headers::default(), "a refused header leaves nothing behind");
        assert!(post("/p\r\nX: y", "h", &h, 0).is_err());
        assert!(post("p", "h", &h, 0).is_err());
        assert!(post("/p", "h\r\n", &h, 0).is_err());
        assert!(post("/p", "", &h, 0).is_err());
    }

    #[test]
    fn headers_are_bounded() {
        let mut h = Headers::default();
        let big = "x".repeat(1000);
        let mut added = 0;
        while h.add("X-Big", &big).is_ok() {
            added += 1;
            assert!(added < 100);
        }
        assert!(post("/", "h", &h, 0).unwrap().len() <= MAX_HEAD);
    }
}
