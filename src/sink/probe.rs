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

/// An empty push: reachable, TLS, authorised, and no log line stored.
pub fn probe(cfg: &LokiConfig, timeout: Duration) -> Result<Probed, ProbeError> {
    push(cfg, &PushRequest::new(), timeout)
}

/// Whether this Loki takes structured metadata: one entry carrying one
/// metadata pair, in a stream of `check`'s own (`probe="log-capturer-check"`,
/// and `host`). A Loki that refuses metadata refuses it (and stores nothing);
/// one that takes it stores this one line: no way was found to ask without
/// (Loki 2.9 checks an entry's age, time and size before its metadata, and
/// has no metadata limits to trip). Loki 2.8 ignores metadata in protobuf:
/// ask it only from 2.9 on.
pub fn metadata_probe(cfg: &LokiConfig, host: &str, timeout: Duration) -> Result<Probed, ProbeError> {
    let stream = std::rc::Rc::new(crate::sink::loki::labels::LokiStream::new(
        vec![("host".to_owned(), host.to_owned()), ("probe".to_owned(), PROBE_LABEL.to_owned())],
        vec![("probe".to_owned(), "structured-metadata".to_owned())],
    ));
    let mut req = PushRequest::new();
    let now = crate::agent::event_loop::wall_ns();
    req.push(&stream, now, "log-capturer check: does this Loki take structured metadata? (it does)", false);
    push(cfg, &req, timeout)
}

/// The `probe` label of [`metadata_probe`]'s stream.
pub const PROBE_LABEL: &str = "log-capturer-check";

/// Loki's version from `/loki/api/v1/status/buildinfo` (next to the push
/// path), if it answers one.
pub fn version(cfg: &LokiConfig, timeout: Duration) -> Result<Option<String>, ProbeError> {
    let path = match cfg.url.path.strip_suffix("/push") {
        Some(api) => format!("{api}/status/buildinfo"),
        None => "/loki/api/v1/status/buildinfo".to_owned(),
    };
    let headers =
        crate::agent::sink_conn::request_headers(cfg).map_err(|e| ProbeError::Exchange(format!("{e:#}")))?;
    let out = crate::http::request::get(&path, &cfg.url.host_header(), &headers)
        .map_err(|e| ProbeError::Exchange(e.to_string()))?;
    let p = exchange(cfg, out, timeout)?;
    if p.answer.status != 200 {
        return Ok(None);
    }
    let v: serde_json::Value = match serde_json::from_str(&p.answer.message) {
        Ok(v) => v,
        Err(_) => return Ok(None),
    };
    Ok(v.get("version").and_then(|v| v.as_str()).map(str::to_owned))
}

/// Loki's running configuration (`GET /config`, YAML), if it serves it.
pub fn loki_config(cfg: &LokiConfig, timeout: Duration) -> Result<Option<String>, ProbeError> {
    let prefix = cfg.url.path.strip_suffix("/loki/api/v1/push").unwrap_or("");
    let headers =
        crate::agent::sink_conn::request_headers(cfg).map_err(|e| ProbeError::Exchange(format!("{e:#}")))?;
    let out = crate::http::request::get(&format!("{prefix}/config"), &cfg.url.host_header(), &headers)
        .map_err(|e| ProbeError::Exchange(e.to_string()))?;
    let p = exchange_keeping(cfg, out, timeout, crate::sink::response::MAX_BODY)?;
    Ok((p.answer.status == 200).then_some(p.answer.message))
}

/// One setting of `limits_config` in Loki's `/config` YAML.
pub fn limit<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    let start = config.find("\nlimits_config:\n")? + "\nlimits_config:\n".len();
    config[start..]
        .lines()
        // The section ends at the next line that is not indented.
        .take_while(|l| l.is_empty() || l.starts_with(char::is_whitespace))
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

fn push(cfg: &LokiConfig, req: &PushRequest, timeout: Duration) -> Result<Probed, ProbeError> {
    let body = Encoder::new(cfg.encoding).encode(req);
    let headers =
        crate::agent::sink_conn::request_headers(cfg).map_err(|e| ProbeError::Exchange(format!("{e:#}")))?;
    let head = crate::http::request::post(&cfg.url.path, &cfg.url.host_header(), &headers, body.bytes.len())
        .map_err(|e| ProbeError::Exchange(e.to_string()))?;
    let mut out = head;
    out.extend_from_slice(&body.bytes);
    exchange(cfg, out, timeout)
}

/// One request on a new connection and its answer, blocking, within
/// `timeout` in all.
fn exchange(cfg: &LokiConfig, out: Vec<u8>, timeout: Duration) -> Result<Probed, ProbeError> {
    exchange_keeping(cfg, out, timeout, crate::sink::response::MAX_MESSAGE)
}

/// [`exchange`], keeping up to `keep` bytes of the answer's body.
fn exchange_keeping(
    cfg: &LokiConfig,
    out: Vec<u8>,
    timeout: Duration,
    keep: usize,
) -> Result<Probed, ProbeError> {
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
    let fail = |e: crate::sink::transport::TransportError| {
        if e.is_config_problem() {
            ProbeError::Tls(e.to_string())
        } else {
            ProbeError::Exchange(e.to_string())
        }
    };
    let mut sent = 0;
    let mut reader = ResponseReader::keeping(keep);
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

#[cfg(test)]
mod tests {
    #[test]
    fn limits_are_read_from_the_limits_config_section_only() {
        let yaml =
            "server:\n  max_line_size: 1\nlimits_config:\n  ingestion_rate_mb: 4\n  max_line_size: 256KB\n  \
                    max_label_names_per_series: 30\nchunk_store_config:\n  max_label_names_per_series: 99\n";
        assert_eq!(super::limit(yaml, "max_line_size"), Some("256KB"));
        assert_eq!(super::limit(yaml, "max_label_names_per_series"), Some("30"));
        assert_eq!(super::limit(yaml, "ingestion_rate"), None);
        assert_eq!(super::limit("limits_config:\n  a: 1\n", "a"), None, "no newline before: not found");
    }
}
