//! A minimal blocking HTTP/1.1 client for the double's tests: enough to
//! read heads, Content-Length and chunked bodies, and Docker frames, with a
//! read timeout so that a broken server fails a test instead of hanging it.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub status_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn names(&self) -> Vec<&str> {
        self.headers.iter().map(|(k, _)| k.as_str()).collect()
    }

    pub fn chunked(&self) -> bool {
        self.get("Transfer-Encoding") == Some("chunked")
    }
}

pub struct Client {
    pub r: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        Self::try_connect(path).expect("connect to the double")
    }

    pub fn try_connect(path: &Path) -> io::Result<Client> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        Ok(Client { r: BufReader::with_capacity(64 * 1024, s) })
    }

    pub fn stream(&self) -> &UnixStream {
        self.r.get_ref()
    }

    pub fn send(&mut self, path: &str) {
        self.send_raw(format!("GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).expect("send request");
    }

    pub fn line(&mut self) -> io::Result<String> {
        let mut l = Vec::new();
        self.r.read_until(b'\n', &mut l)?;
        if l.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if !l.ends_with(b"\r\n") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line without CRLF: {:?}", String::from_utf8_lossy(&l)),
            ));
        }
        l.truncate(l.len() - 2);
        String::from_utf8(l).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    pub fn try_head(&mut self) -> io::Result<Head> {
        let status_line = self.line()?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, status_line.clone()))?;
        let mut headers = Vec::new();
        loop {
            let l = self.line()?;
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(": ").expect("header line");
            headers.push((k.to_owned(), v.to_owned()));
        }
        Ok(Head { status, status_line, headers })
    }

    pub fn head(&mut self) -> Head {
        self.try_head().expect("response head")
    }

    /// The next chunk of a chunked body; `None` after the terminator.
    pub fn chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let size = self.line()?;
        let n = usize::from_str_radix(&size, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("chunk size {size:?}")))?;
        if n == 0 {
            let end = self.line()?;
            assert!(end.is_empty(), "trailer after the last chunk: {end:?}");
            return Ok(None);
        }
        let mut data = vec![0; n];
        self.r.read_exact(&mut data)?;
        let crlf = self.line()?;
        assert!(crlf.is_empty(), "chunk not followed by CRLF");
        Ok(Some(data))
    }

    /// A whole body: Content-Length, or chunked to the terminator.
    pub fn body(&mut self, head: &Head) -> Vec<u8> {
        if head.chunked() {
            let mut b = Vec::new();
            while let Some(c) = self.chunk().expect("chunk") {
                b.extend_from_slice(&c);
            }
            b
        } else {
            let n: usize = head.get("Content-Length").expect("Content-Length or chunked").parse().unwrap();
            let mut b = vec![0; n];
            self.r.read_exact(&mut b).expect("body");
            b
        }
    }

    /// Every chunk of a chunked body, one per element.
    pub fn chunks(&mut self) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        while let Some(c) = self.chunk().expect("chunk") {
            v.push(c);
        }
        v
    }

    pub fn get(&mut self, path: &str) -> (Head, Vec<u8>) {
        self.send(path);
        let h = self.head();
        let b = self.body(&h);
        (h, b)
    }

    pub fn get_json(&mut self, path: &str) -> (u16, serde_json::Value) {
        let (h, b) = self.get(path);
        assert_eq!(h.get("Content-Type"), Some("application/json"), "{path}");
        (h.status, serde_json::from_slice(&b).expect("JSON body"))
    }

    /// True once the server has closed the connection (EOF or reset).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.r.read(&mut b) {
            Ok(0) => true,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
            Ok(_) => false,
            Err(e) => panic!("waiting for close: {e}"),
        }
    }
}

/// Split a non-TTY logs body into frames (stream, payload).
pub fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 8, "truncated frame header");
        assert_eq!(&body[1..4], &[0, 0, 0]);
        let n = u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize;
        out.push((body[0], body[8..8 + n].to_vec()));
        body = &body[8 + n..];
    }
    out
}

/// One chunk that must hold exactly one frame.
pub fn one_frame(chunk: &[u8]) -> (u8, Vec<u8>) {
    let f = frames(chunk);
    assert_eq!(f.len(), 1, "chunk holds {} frames", f.len());
    f.into_iter().next().unwrap()
}

/// Split the 31-byte timestamp prefix off a payload.
pub fn split_ts(payload: &[u8]) -> (i64, &[u8]) {
    assert!(payload.len() >= 31 && payload[30] == b' ', "no timestamp prefix");
    (parse_ts(&payload[..30]), &payload[31..])
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` to nanoseconds (independent of the
/// double's own formatter).
pub fn parse_ts(s: &[u8]) -> i64 {
    let s = std::str::from_utf8(s).unwrap();
    assert_eq!(s.len(), 30, "{s}");
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // days_from_civil
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19);
    secs * 1_000_000_000 + n(20, 29)
}

/// Replace every `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` with a fixed one, so
/// bodies can be compared byte for byte with the captures.
pub fn mask_timestamps(b: &[u8]) -> Vec<u8> {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.dddddddddZ";
    let mut out = b.to_vec();
    let mut i = 0;
    while i + SHAPE.len() <= out.len() {
        let hit =
            SHAPE.iter().zip(&out[i..]).all(|(&p, &c)| if p == b'd' { c.is_ascii_digit() } else { p == c });
        if hit {
            out[i..i + SHAPE.len()].copy_from_slice(b"2000-01-01T00:00:00.000000000Z");
            i += SHAPE.len();
        } else {
            i += 1;
        }
    }
    out
}

/// A capture from `tests/data`: head and raw body bytes.
pub struct Capture {
    pub head: Head,
    pub body: Vec<u8>,
}

pub fn capture(name: &str) -> Capture {
    let path = format!("{}/../data/{name}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let text = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap().to_owned();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    Capture { head: Head { status, status_line, headers }, body: raw[end + 4..].to_vec() }
}

/// Header names in order, and values except `Date` (and `Content-Length`
/// unless `with_length`), must be those of the capture.
pub fn assert_same_head(ours: &Head, cap: &Head, with_length: bool, what: &str) {
    assert_eq!(ours.status_line, cap.status_line, "{what}: status line");
    assert_eq!(ours.names(), cap.names(), "{what}: header names and order");
    for ((k, a), (_, b)) in ours.headers.iter().zip(&cap.headers) {
        if k == "Date" || (k == "Content-Length" && !with_length) {
            continue;
        }
        assert_eq!(a, b, "{what}: header {k}");
    }
}
