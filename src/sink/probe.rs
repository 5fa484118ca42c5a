//! `log-capturer check`'s look at the sink: resolve its name (with the
//! agent's own resolver, not NSS), connect, TLS, and push an empty
//! request, which proves the URL, the credentials and the tenant without
//! sending a log line. Blocking, with one deadline for the whole probe:
//! `check` is a command, not the loop.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::sink::loki::config::LokiConfig;
use crate::sink::loki::encoding::Encoder;
use crate::sink::loki::push::PushRequest;
use crate::sink::response::{PushResponse, ResponseReader};
use crate::sink::transport::{Received, Transport};
use crate::sink::url::Host;

/// What the probe saw.
#[derive(Debug)]
pub struct Probed {
    pub addr: SocketAddr,
    pub answer: PushResponse,
    pub took: Duration,
}

/// Where the probe stopped.
#[derive(Debug)]
pub enum ProbeError {
    Resolve(String),
    Connect(SocketAddr, io::Error),
    Tls(String),
    /// The connection failed after it was made, or the answer was garbled.
    Exchange(String),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Resolve(e) => write!(f, "{e}"),
            Self::Connect(a, e) => write!(f, "cannot connect to {a}: {e}"),
            Self::Tls(e) => write!(f, "TLS: {e}"),
            Self::Exchange(e) => write!(f, "{e}"),
        }
    }
}

pub fn probe(cfg: &LokiConfig, timeout: Duration) -> Result<Probed, ProbeError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let addr = match &cfg.url.host {
        Host::Ip(ip) => SocketAddr::new(*ip, cfg.url.port),
        Host::Name(name) => SocketAddr::new(
            crate::dns::blocking::first_addr(name, deadline).map_err(ProbeError::Resolve)?,
            cfg.url.port,
        ),
    };
    let mut sock = TcpStream::connect_timeout(&addr, left()).map_err(|e| ProbeError::Connect(addr, e))?;
    let mut transport = if cfg.url.tls {
        let config =
            crate::sink::tls::client_config(&cfg.tls).map_err(|e| ProbeError::Tls(format!("{e:#}")))?;
        let name = crate::sink::tls::server_name(&cfg.url.host, &cfg.tls)
            .map_err(|e| ProbeError::Tls(format!("{e:#}")))?;
        Transport::tls(config, name).map_err(|e| ProbeError::Tls(e.to_string()))?
    } else {
        Transport::Plain
    };
    let body = Encoder::new(cfg.encoding).encode(&PushRequest::new());
    let headers =
        crate::agent::sink_conn::request_headers(cfg).map_err(|e| ProbeError::Exchange(format!("{e:#}")))?;
    let head = crate::http::request::post(&cfg.url.path, &cfg.url.host_header(), &headers, body.bytes.len())
        .map_err(|e| ProbeError::Exchange(e.to_string()))?;
    let mut out = head;
    out.extend_from_slice(&body.bytes);
    let fail = |e: crate::sink::transport::TransportError| {
        if e.is_config_problem() {
            ProbeError::Tls(e.to_string())
        } else {
            ProbeError::Exchange(e.to_string())
        }
    };
    let mut sent = 0;
    let mut reader = ResponseReader::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if Instant::now() >= deadline {
            return Err(ProbeError::Exchange(format!("no answer within {timeout:?}")));
        }
        let _ = sock.set_write_timeout(Some(left()));
        let _ = sock.set_read_timeout(Some(left()));
        while sent < out.len() {
            let n = transport.write(&mut sock, &out[sent..]).map_err(fail)?;
            transport.flush(&mut sock).map_err(fail)?;
            if n == 0 {
                break;
            }
            sent += n;
        }
        transport.flush(&mut sock).map_err(fail)?;
        let got = transport.read(&mut sock, &mut buf).map_err(fail)?;
        let answer = match got {
            Received::Data(n) => reader.push(&buf[..n]),
            Received::WouldBlock => continue,
            Received::Eof => reader.eof().map(Some),
        };
        match answer {
            Ok(Some(answer)) => return Ok(Probed { addr, answer, took: started.elapsed() }),
            Ok(None) => {}
            Err(e) => return Err(ProbeError::Exchange(format!("the answer is not HTTP: {e}"))),
        }
    }
}
