//! A blocking HTTP/1.1 client (plain or rustls) and body builders written
//! here from the wire format, sharing nothing with the double's decoder or
//! the agent's encoder.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use loki_double::Issued;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

pub const TIMEOUT: Duration = Duration::from_secs(10);
pub const WAIT: Duration = Duration::from_secs(10);

pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

// ---- protobuf, from the field numbers -------------------------------

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    varint(out, u64::from(field) << 3 | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn field_varint(out: &mut Vec<u8>, field: u32, v: u64) {
    varint(out, u64::from(field) << 3);
    varint(out, v);
}

#[derive(Clone, Debug)]
pub struct E {
    pub ts_ns: i64,
    pub line: Vec<u8>,
    pub sm: Vec<(String, String)>,
}

pub fn e(ts_ns: i64, line: impl AsRef<[u8]>) -> E {
    E { ts_ns, line: line.as_ref().to_vec(), sm: vec![] }
}

pub fn e_sm(ts_ns: i64, line: &str, sm: &[(&str, &str)]) -> E {
    E {
        ts_ns,
        line: line.as_bytes().to_vec(),
        sm: sm.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

/// `PushRequest` bytes: streams = 1 { labels = 1, entries = 2 { timestamp =
/// 1 { seconds = 1, nanos = 2 }, line = 2, structuredMetadata = 3 { name =
/// 1, value = 2 } } }.
pub fn protobuf(streams: &[(&str, Vec<E>)]) -> Vec<u8> {
    let mut req = Vec::new();
    for (labels, entries) in streams {
        let mut s = Vec::new();
        field_bytes(&mut s, 1, labels.as_bytes());
        for en in entries {
            let mut ts = Vec::new();
            field_varint(&mut ts, 1, en.ts_ns.div_euclid(1_000_000_000) as u64);
            field_varint(&mut ts, 2, en.ts_ns.rem_euclid(1_000_000_000) as u64);
            let mut m = Vec::new();
            field_bytes(&mut m, 1, &ts);
            field_bytes(&mut m, 2, &en.line);
            for (k, v) in &en.sm {
                let mut p = Vec::new();
                field_bytes(&mut p, 1, k.as_bytes());
                field_bytes(&mut p, 2, v.as_bytes());
                field_bytes(&mut m, 3, &p);
            }
            field_bytes(&mut s, 2, &m);
        }
        field_bytes(&mut req, 1, &s);
    }
    req
}

pub fn snappy(b: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(b).unwrap()
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(b).unwrap();
    z.finish().unwrap()
}

/// A stream's label map and its entries, for [`json`].
pub type JsonStream<'a> = (&'a [(&'a str, &'a str)], Vec<E>);

/// Loki's JSON push body.
pub fn json(streams: &[JsonStream]) -> Vec<u8> {
    let streams: Vec<serde_json::Value> = streams
        .iter()
        .map(|(labels, entries)| {
            let stream: serde_json::Map<String, serde_json::Value> =
                labels.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
            let values: Vec<serde_json::Value> = entries
                .iter()
                .map(|en| {
                    let mut v =
                        vec![en.ts_ns.to_string().into(), String::from_utf8(en.line.clone()).unwrap().into()];
                    if !en.sm.is_empty() {
                        let m: serde_json::Map<String, serde_json::Value> =
                            en.sm.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
                        v.push(m.into());
                    }
                    serde_json::Value::Array(v)
                })
                .collect();
            serde_json::json!({"stream": stream, "values": values})
        })
        .collect();
    serde_json::json!({ "streams": streams }).to_string().into_bytes()
}

// ---- the client -----------------------------------------------------

pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub struct Client {
    pub s: Box<dyn Stream>,
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn client_config(ca_der: &[u8], client: Option<&Issued>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec())).unwrap();
    let b = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        None => b.with_no_client_auth(),
        Some(c) => b
            .with_client_auth_cert(
                vec![CertificateDer::from(c.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key_der.clone())),
            )
            .unwrap(),
    };
    Arc::new(cfg)
}

impl Client {
    pub fn plain(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).expect("connect to the double");
        tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(TIMEOUT)).unwrap();
        Client { s: Box::new(tcp.try_clone().unwrap()), tcp, buf: Vec::new() }
    }

    /// Connect and finish the handshake (as far as the client's side goes:
    /// with TLS 1.3 a refused client certificate shows on the first read).
    pub fn tls(addr: SocketAddr, cfg: Arc<ClientConfig>) -> Result<Client, rustls::Error> {
        let mut tcp = TcpStream::connect(addr).expect("connect to the double");
        tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(TIMEOUT)).unwrap();
        let mut conn = ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap();
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut tcp) {
                return Err(e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .cloned()
                    .unwrap_or(rustls::Error::General(e.to_string())));
            }
        }
        let handle = tcp.try_clone().unwrap();
        Ok(Client { s: Box::new(StreamOwned::new(conn, tcp)), tcp: handle, buf: Vec::new() })
    }

    pub fn send_raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.s.write_all(b)?;
        self.s.flush()
    }

    /// POST the body to the push path with these extra headers.
    pub fn post(&mut self, body: &[u8], headers: &[(&str, &str)]) -> io::Result<()> {
        let mut h = format!(
            "POST /loki/api/v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        let mut req = h.into_bytes();
        req.extend_from_slice(body);
        self.send_raw(&req)
    }

    pub fn push(&mut self, body: &[u8], headers: &[(&str, &str)]) -> Response {
        self.post(body, headers).expect("send the push");
        self.response().expect("read the response")
    }

    /// A protobuf+snappy push.
    pub fn push_pb(&mut self, streams: &[(&str, Vec<E>)]) -> Response {
        self.push(&snappy(&protobuf(streams)), &[("Content-Type", "application/x-protobuf")])
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut b = [0u8; 16 * 1024];
        let n = self.s.read(&mut b)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        self.buf.extend_from_slice(&b[..n]);
        Ok(())
    }

    pub fn head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) =
                r.parse(&self.buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                let status = r.code.unwrap();
                let hs = r
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                self.buf.drain(..n);
                return Ok((status, hs));
            }
            self.fill()?;
        }
    }

    pub fn response(&mut self) -> io::Result<Response> {
        let (status, headers) = self.head()?;
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        while self.buf.len() < len {
            self.fill()?;
        }
        let body = self.buf.drain(..len).collect();
        Ok(Response { status, headers, body })
    }

    /// Exactly `n` bytes (after a head read with [`Client::head`]).
    pub fn read_n(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Bytes until the server closes (or resets) the connection, and how
    /// it ended.
    pub fn rest(&mut self) -> (Vec<u8>, io::Result<()>) {
        loop {
            match self.fill() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return (std::mem::take(&mut self.buf), Ok(()))
                }
                Err(e) => return (std::mem::take(&mut self.buf), Err(e)),
            }
        }
    }

    /// Nothing arrives for `d` (and the connection stays open).
    pub fn silent_for(&mut self, d: Duration) -> bool {
        self.tcp.set_read_timeout(Some(d)).unwrap();
        let r = self.fill();
        self.tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
        matches!(r, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}
