//! The sink's transport pieces (TLS configuration from the `--sink-*`
//! files, `Transport`, `ResponseReader`) driven by a small mio loop, as the
//! agent drives them, against the Loki double: plain and TLS pushes,
//! keep-alive, a CA that does not match, mutual TLS, refusals.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log_capturer::http::request::{post, Headers};
use log_capturer::sink::loki::config::{TlsFiles, DEFAULT_PATH};
use log_capturer::sink::response::{PushResponse, ResponseReader, SinkResponseError};
use log_capturer::sink::tls::{client_config, server_name};
use log_capturer::sink::transport::{Received, Transport, TransportError};
use log_capturer::sink::url::SinkUrl;
use loki_double::{Auth, Config, Double, Fault, Match, TlsConfig};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum Failure {
    Transport(TransportError),
    Response(SinkResponseError),
}

/// One connection to the sink, driven the way the agent's loop does: a
/// nonblocking socket, edge-triggered readiness, every call until it would
/// block.
struct Conn {
    sock: TcpStream,
    transport: Transport,
    poll: Poll,
    events: Events,
    url: SinkUrl,
}

impl Conn {
    fn open(d: &Double, files: Option<&TlsFiles>) -> Conn {
        let url = SinkUrl::parse(&d.url(), DEFAULT_PATH).unwrap();
        let transport = match files {
            Some(files) => {
                let cfg = client_config(files).expect("TLS configuration");
                Transport::tls(cfg, server_name(&url.host, files).unwrap()).unwrap()
            }
            None => Transport::Plain,
        };
        Conn::connect(d.addr(), transport, url)
    }

    fn connect(addr: SocketAddr, transport: Transport, url: SinkUrl) -> Conn {
        let poll = Poll::new().unwrap();
        let mut sock = TcpStream::connect(addr).unwrap();
        poll.registry().register(&mut sock, Token(0), Interest::READABLE | Interest::WRITABLE).unwrap();
        let mut c = Conn { sock, transport, poll, events: Events::with_capacity(4), url };
        // A nonblocking connect is done when the socket turns writable.
        let start = Instant::now();
        loop {
            c.wait(start);
            if let Some(e) = c.sock.take_error().unwrap() {
                panic!("connect: {e}");
            }
            if c.sock.peer_addr().is_ok() {
                return c;
            }
        }
    }

    fn wait(&mut self, start: Instant) {
        let left = DEADLINE.checked_sub(start.elapsed()).expect("the exchange took too long");
        self.poll.poll(&mut self.events, Some(left)).unwrap();
    }

    /// Send one JSON push and read its answer.
    fn push(&mut self, line: &str, headers: &Headers) -> Result<PushResponse, Failure> {
        let ns = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let body = format!(r#"{{"streams":[{{"stream":{{"job":"t"}},"values":[["{ns}","{line}"]]}}]}}"#);
        let mut request = post(&self.url.path, &self.url.host_header(), headers, body.len()).unwrap();
        request.extend_from_slice(body.as_bytes());
        self.exchange(&request)
    }

    fn exchange(&mut self, request: &[u8]) -> Result<PushResponse, Failure> {
        let start = Instant::now();
        let mut sent = 0;
        let mut reader = ResponseReader::new();
        let mut buf = [0u8; 4096];
        loop {
            while sent < request.len() {
                let n = self.transport.write(&mut self.sock, &request[sent..]).map_err(Failure::Transport)?;
                if n == 0 {
                    break;
                }
                sent += n;
            }
            self.transport.flush(&mut self.sock).map_err(Failure::Transport)?;
            loop {
                match self.transport.read(&mut self.sock, &mut buf) {
                    Ok(Received::Data(n)) => {
                        if let Some(r) = reader.push(&buf[..n]).map_err(Failure::Response)? {
                            assert_eq!(sent, request.len(), "answered before the request was sent");
                            return Ok(r);
                        }
                    }
                    Ok(Received::WouldBlock) => break,
                    Ok(Received::Eof) => return reader.eof().map_err(Failure::Response),
                    Err(e) => {
                        // As the agent does: tell the server why, then close.
                        let _ = self.transport.flush(&mut self.sock);
                        return Err(Failure::Transport(e));
                    }
                }
            }
            // Reading may have produced handshake records to send.
            if self.transport.wants_write() {
                self.transport.flush(&mut self.sock).map_err(Failure::Transport)?;
            }
            self.wait(start);
        }
    }
}

fn json_headers() -> Headers {
    let mut h = Headers::default();
    h.add("Content-Type", "application/json").unwrap();
    h
}

fn tls_double(wrong_ca: bool, mtls: bool) -> Double {
    let tls = TlsConfig { dir: None, wrong_ca, require_client_cert: mtls };
    Double::start(Config { tls: Some(tls), ..Config::default() }).unwrap()
}

/// The files an operator would pass: `--sink-ca-file` with the test CA.
fn ca_files(d: &Double) -> TlsFiles {
    TlsFiles { ca_file: Some(d.pki().unwrap().ca_file.clone()), ..TlsFiles::default() }
}

fn tls_error(f: Failure) -> TransportError {
    match f {
        Failure::Transport(e) => e,
        Failure::Response(e) => panic!("expected a transport error, got {e}"),
    }
}

#[test]
fn plain_push_is_acknowledged_with_204_and_the_connection_kept() {
    let d = Double::start(Config::default()).unwrap();
    let mut c = Conn::open(&d, None);
    let r = c.push("hello plain", &json_headers()).unwrap();
    assert_eq!((r.status, r.keep_alive, r.message.as_str()), (204, true, ""));
    assert!(r.date.is_some(), "the double sends Date");
    assert_eq!(d.entries()[0].line_str(), "hello plain");
}

#[test]
fn a_keep_alive_connection_carries_three_pushes_over_tls() {
    let d = tls_double(false, false);
    let mut c = Conn::open(&d, Some(&ca_files(&d)));
    for i in 0..3 {
        let r = c.push(&format!("push {i}"), &json_headers()).unwrap();
        assert_eq!((r.status, r.keep_alive), (204, true), "push {i}");
    }
    assert!(!c.transport.is_handshaking());
    let s = d.stats();
    assert_eq!((s.entries_stored, s.connections_total, s.tls_handshake_failures), (3, 1, 0));
}

#[test]
fn a_keep_alive_plain_connection_is_reused_too() {
    let d = Double::start(Config::default()).unwrap();
    let mut c = Conn::open(&d, None);
    for i in 0..3 {
        assert_eq!(c.push(&format!("push {i}"), &json_headers()).unwrap().status, 204);
    }
    assert_eq!((d.stats().entries_stored, d.stats().connections_total), (3, 1));
}

#[test]
fn a_certificate_from_another_ca_is_a_configuration_problem_named_as_such() {
    let d = tls_double(true, false);
    let mut c = Conn::open(&d, Some(&ca_files(&d)));
    let e = tls_error(c.push("x", &json_headers()).unwrap_err());
    assert!(e.is_config_problem(), "{e:?}");
    assert!(
        matches!(
            e,
            TransportError::Tls(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("certificate was refused") && msg.contains("--sink-ca-file"), "{msg}");
    // The double saw the alert we sent (and stored nothing).
    assert!(d.wait_until(DEADLINE, |s| s.tls_handshake_failures == 1));
    assert_eq!(d.stats().requests_total, 0);
}

#[test]
fn a_name_the_certificate_does_not_hold_is_refused() {
    let d = tls_double(false, false);
    let files = TlsFiles { server_name: Some("loki.elsewhere".into()), ..ca_files(&d) };
    let mut c = Conn::open(&d, Some(&files));
    let e = tls_error(c.push("x", &json_headers()).unwrap_err());
    assert!(e.is_config_problem(), "{e:?}");
    assert!(e.to_string().contains("--sink-server-name"), "{e}");
}

#[test]
fn mutual_tls_works_with_the_client_certificate_and_fails_without_or_with_another() {
    let d = tls_double(false, true);
    let pki = d.pki().unwrap().clone();

    let mut c = Conn::open(&d, Some(&ca_files(&d)));
    let e = tls_error(c.push("no certificate", &json_headers()).unwrap_err());
    assert!(e.is_config_problem(), "{e:?}");
    assert!(e.to_string().contains("--sink-client-cert"), "{e}");
    assert!(d.wait_until(DEADLINE, |s| s.tls_handshake_failures == 1));

    let wrong = TlsFiles {
        client_cert: Some(pki.wrong_client.cert_file),
        client_key: Some(pki.wrong_client.key_file),
        ..ca_files(&d)
    };
    let mut c = Conn::open(&d, Some(&wrong));
    let e = tls_error(c.push("a certificate from another CA", &json_headers()).unwrap_err());
    assert!(e.is_config_problem(), "{e:?}");
    assert!(e.to_string().contains("refused our client certificate"), "{e}");
    assert!(d.wait_until(DEADLINE, |s| s.tls_handshake_failures == 2));

    let files = TlsFiles {
        client_cert: Some(pki.client.cert_file),
        client_key: Some(pki.client.key_file),
        ..ca_files(&d)
    };
    let mut c = Conn::open(&d, Some(&files));
    assert_eq!(c.push("with a certificate", &json_headers()).unwrap().status, 204);
    assert_eq!(d.stats().entries_stored, 1);
}

#[test]
fn tls_to_a_plain_http_server_says_to_use_http() {
    let d = Double::start(Config::default()).unwrap();
    let url = SinkUrl::parse(&d.url(), DEFAULT_PATH).unwrap();
    // The files of another double: only their CA matters here.
    let other = tls_double(false, false);
    let files = ca_files(&other);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let transport = Transport::tls(client_config(&files).unwrap(), name).unwrap();
    let mut c = Conn::connect(d.addr(), transport, url);
    let e = tls_error(c.push("x", &json_headers()).unwrap_err());
    assert!(e.is_config_problem() && e.to_string().contains("http://"), "{e:?}: {e}");
}

#[test]
fn refusals_carry_status_message_and_retry_after() {
    let d = Double::start(Config {
        auth: Some(Auth::Basic { user: "u".into(), password: "p".into() }),
        ..Config::default()
    })
    .unwrap();
    let mut c = Conn::open(&d, None);
    let r = c.push("no credentials", &json_headers()).unwrap();
    assert_eq!(r.status, 401);
    assert!(!r.message.is_empty() && r.message.len() <= 1024, "{r:?}");

    let d = Double::start(Config::default()).unwrap();
    d.inject(Match::Push, Fault::RateLimited { retry_after: Some(2) }, 1);
    let mut c = Conn::open(&d, None);
    let r = c.push("slow down", &json_headers()).unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.retry_after.and_then(|ra| ra.wait(r.date)), Some(Duration::from_secs(2)));
    assert!(r.message.contains("rate limit") || r.message.contains("Ingestion"), "{}", r.message);
    // The same connection goes on once the fault is spent.
    assert_eq!(c.push("again", &json_headers()).unwrap().status, 204);
}

#[test]
fn a_connection_reset_mid_answer_is_an_io_or_truncation_error() {
    let d = Double::start(Config::default()).unwrap();
    d.inject(Match::Push, Fault::ResetMidResponse { stored: false }, 1);
    let mut c = Conn::open(&d, None);
    match c.push("x", &json_headers()) {
        Err(Failure::Transport(TransportError::Io(e))) => {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        }
        Err(Failure::Response(SinkResponseError::TruncatedHead)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_client_key_that_is_not_the_certificates_is_refused_at_start() {
    let d = tls_double(false, true);
    let pki = d.pki().unwrap();
    let files = TlsFiles {
        client_cert: Some(pki.client.cert_file.clone()),
        client_key: Some(pki.wrong_client.key_file.clone()),
        ..ca_files(&d)
    };
    let e = format!("{:#}", client_config(&files).unwrap_err());
    assert!(e.contains("--sink-client-cert") && e.contains("--sink-client-key"), "{e}");
    assert!(e.contains("is the key the one the certificate was made for?"), "{e}");
    // A certificate file given as the key names the key flag.
    let files = TlsFiles { client_key: Some(pki.client.cert_file.clone()), ..files };
    let e = format!("{:#}", client_config(&files).unwrap_err());
    assert!(e.contains("--sink-client-key") && e.contains("no private key"), "{e}");
}
