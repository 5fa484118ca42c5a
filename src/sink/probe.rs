//! `log-capturer check`'s look at the sink: resolve its name (with the
//! agent's own resolver, not NSS), connect, TLS, and push an empty
//! request, which proves the URL, the credentials and the tenant without
//! sending a log line. Blocking, with one deadline for the whole probe:
//! `check` is a command, not the loop.

use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::dns::hosts::Hosts;
use crate::dns::resolv_conf::ResolvConf;
use crate::dns::resolver::{Family, Lookup, Proto};
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
        Host::Name(name) => SocketAddr::new(resolve(name, deadline)?, cfg.url.port),
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

/// The first address of `name`, by the agent's resolver over blocking
/// sockets (a static binary has no NSS for `getaddrinfo`).
fn resolve(name: &str, deadline: Instant) -> Result<std::net::IpAddr, ProbeError> {
    let conf_path =
        std::env::var_os(crate::agent::resolve::RESOLV_CONF_ENV).unwrap_or_else(|| "/etc/resolv.conf".into());
    let hosts_path =
        std::env::var_os(crate::agent::resolve::HOSTS_ENV).unwrap_or_else(|| "/etc/hosts".into());
    let conf = ResolvConf::parse(&std::fs::read(conf_path).unwrap_or_default());
    let hosts = Hosts::parse(&std::fs::read(hosts_path).unwrap_or_default());
    let now = Instant::now();
    let seed = u64::from(std::process::id()) ^ now.elapsed().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut lookup = Lookup::new(name, Family::Any, &conf, &hosts, seed, now);
    lookup.set_deadline(deadline.min(lookup.deadline()));
    let udp = UdpSocket::bind("[::]:0")
        .or_else(|_| UdpSocket::bind("0.0.0.0:0"))
        .map_err(|e| ProbeError::Resolve(e.to_string()))?;
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        lookup.handle_timeout(now);
        while let Some(t) = lookup.poll_transmit() {
            match t.proto {
                Proto::Udp => {
                    let _ = udp.send_to(&t.bytes, t.server);
                }
                Proto::Tcp => {
                    // Rare (a truncated answer): one blocking exchange.
                    let wait = lookup.deadline().saturating_duration_since(now).max(Duration::from_millis(1));
                    match TcpStream::connect_timeout(&t.server, wait) {
                        Ok(mut s) => {
                            let _ = s.set_read_timeout(Some(wait));
                            if s.write_all(&t.bytes).is_err() {
                                lookup.handle_tcp_closed(t.exchange, Instant::now());
                                continue;
                            }
                            loop {
                                match io::Read::read(&mut s, &mut buf) {
                                    Ok(0) | Err(_) => {
                                        lookup.handle_tcp_closed(t.exchange, Instant::now());
                                        break;
                                    }
                                    Ok(n) => {
                                        lookup.handle_tcp(t.exchange, &buf[..n], Instant::now());
                                        if !lookup.wants(t.exchange) {
                                            break;
                                        }
                                    }
                                }
                            }
                        }
                        Err(_) => lookup.handle_tcp_closed(t.exchange, Instant::now()),
                    }
                }
            }
        }
        if let Some(r) = lookup.poll_result() {
            return r.map(|r| r.addrs[0]).map_err(|e| ProbeError::Resolve(e.to_string()));
        }
        let Some(wake) = lookup.poll_timeout() else { continue };
        let wait = wake.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let _ = udp.set_read_timeout(Some(wait));
        if let Ok((n, from)) = udp.recv_from(&mut buf) {
            lookup.handle_udp(from, &buf[..n], Instant::now());
        }
    }
}
