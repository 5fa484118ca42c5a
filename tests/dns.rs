//! The sans-IO resolver driven the way the agent will drive it: one
//! `mio::Poll`, nonblocking sockets, the lookup's own deadlines, against
//! tiny DNS servers on 127.0.0.1 that live in the same loop. One server
//! answers, one never reads its socket (a silent resolver), one answers
//! UDP truncated and the rest over TCP.
//!
//! The loop also counts its turns with a 20 ms tick standing in for the
//! agent's other work: a lookup that blocked (as `getaddrinfo` does on a
//! silent server) would stop them.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log_capturer::dns::hosts::Hosts;
use log_capturer::dns::resolv_conf::ResolvConf;
use log_capturer::dns::resolver::{DnsError, Family, Lookup, Proto, Resolved, ServerOutcome, Source};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

const CLIENT_UDP: Token = Token(0);
const SERVER_UDP: Token = Token(1);
const SERVER_TCP: Token = Token(2);
/// Client TCP exchanges are `CLIENT_TCP + exchange index`, accepted
/// server connections `SERVER_CONN + n`.
const CLIENT_TCP: usize = 100;
const SERVER_CONN: usize = 10_000;
const TICK: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answers every query over UDP.
    Answer,
    /// Answers over UDP with TC set and nothing else; answers over TCP.
    Truncate,
}

/// A DNS server on 127.0.0.1 (UDP and TCP on one port): `loki.test` has
/// A 10.1.2.3 (and, over TCP, 40 more), no AAAA; other names do not exist.
struct Server {
    udp: UdpSocket,
    tcp: TcpListener,
    mode: Mode,
    conns: HashMap<Token, (TcpStream, Vec<u8>)>,
    accepted: usize,
    queries: usize,
}

impl Server {
    fn start(poll: &Poll, mode: Mode) -> Server {
        let mut udp = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = udp.local_addr().unwrap().port();
        // The same port over TCP, as a DNS server has; retried if taken.
        let mut tcp = match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))) {
            Ok(t) => t,
            Err(_) => return Server::start(poll, mode),
        };
        poll.registry().register(&mut udp, SERVER_UDP, Interest::READABLE).unwrap();
        poll.registry().register(&mut tcp, SERVER_TCP, Interest::READABLE).unwrap();
        Server { udp, tcp, mode, conns: HashMap::new(), accepted: 0, queries: 0 }
    }

    fn addr(&self) -> SocketAddr {
        self.udp.local_addr().unwrap()
    }

    fn answer(&mut self, query: &[u8], over_tcp: bool) -> Vec<u8> {
        self.queries += 1;
        let question = &query[12..];
        let name_end = question.iter().position(|&b| b == 0).unwrap();
        let qname = &question[..name_end];
        let qtype = u16::from_be_bytes([question[name_end + 1], question[name_end + 2]]);
        let mut flags: u16 = 0x8180;
        let mut addrs: Vec<[u8; 4]> = Vec::new();
        if qname == b"\x04loki\x04test" {
            if self.mode == Mode::Truncate && !over_tcp {
                flags |= 0x0200;
            } else if qtype == 1 {
                addrs.push([10, 1, 2, 3]);
                if over_tcp {
                    addrs.extend((0..40).map(|i| [10, 2, 0, i]));
                }
            }
        } else {
            flags |= 3;
        }
        let mut r = query[..2].to_vec();
        r.extend_from_slice(&flags.to_be_bytes());
        r.extend_from_slice(&[0, 1]);
        r.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0]);
        r.extend_from_slice(question);
        for a in addrs {
            r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            r.extend_from_slice(&a);
        }
        r
    }

    /// Handle an event on one of the server's tokens; false if not its own.
    fn event(&mut self, poll: &Poll, token: Token) -> bool {
        let mut buf = [0u8; 4096];
        match token {
            SERVER_UDP => {
                while let Ok((n, from)) = self.udp.recv_from(&mut buf) {
                    let reply = self.answer(&buf[..n], false);
                    self.udp.send_to(&reply, from).unwrap();
                }
            }
            SERVER_TCP => {
                while let Ok((mut s, _)) = self.tcp.accept() {
                    let t = Token(SERVER_CONN + self.accepted);
                    self.accepted += 1;
                    poll.registry().register(&mut s, t, Interest::READABLE).unwrap();
                    self.conns.insert(t, (s, Vec::new()));
                }
            }
            t if self.conns.contains_key(&t) => {
                let (mut s, mut got) = self.conns.remove(&t).unwrap();
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => return true,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("server read: {e}"),
                    }
                }
                if got.len() >= 2 && got.len() == 2 + usize::from(u16::from_be_bytes([got[0], got[1]])) {
                    let reply = self.answer(&got[2..], true);
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    // A few hundred bytes into an empty socket buffer.
                    s.write_all(&framed).unwrap();
                    got.clear();
                }
                self.conns.insert(t, (s, got));
            }
            _ => return false,
        }
        true
    }
}

/// How a lookup went.
struct Run {
    result: Result<Resolved, DnsError>,
    elapsed: Duration,
    /// Loop turns woken by the tick: the loop's other work went on.
    ticks: u32,
    /// The longest a single `poll` waited.
    longest_wait: Duration,
}

/// Drive one lookup to its end in a `mio` loop, serving `servers` in the
/// same loop.
fn run(poll: &mut Poll, servers: &mut [&mut Server], name: &str, conf: &ResolvConf) -> Run {
    let mut client = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    poll.registry().register(&mut client, CLIENT_UDP, Interest::READABLE).unwrap();
    let mut tcp: HashMap<Token, (log_capturer::dns::resolver::ExchangeId, TcpStream, Vec<u8>)> =
        HashMap::new();
    let seed = std::collections::hash_map::RandomState::new();
    let seed = std::hash::BuildHasher::hash_one(&seed, name);
    let start = Instant::now();
    let mut lookup = Lookup::new(name, Family::Any, conf, &Hosts::default(), seed, start);
    let mut events = Events::with_capacity(64);
    let mut next_tick = start + TICK;
    let (mut ticks, mut longest_wait) = (0, Duration::ZERO);
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        lookup.handle_timeout(now);
        while let Some(t) = lookup.poll_transmit() {
            match t.proto {
                Proto::Udp => {
                    client.send_to(&t.bytes, t.server).unwrap();
                }
                Proto::Tcp => {
                    let token = Token(CLIENT_TCP + tcp.len());
                    let mut s = TcpStream::connect(t.server).unwrap();
                    poll.registry().register(&mut s, token, Interest::READABLE | Interest::WRITABLE).unwrap();
                    tcp.insert(token, (t.exchange, s, t.bytes));
                }
            }
        }
        if let Some(r) = lookup.poll_result() {
            return Run { result: r, elapsed: start.elapsed(), ticks, longest_wait };
        }
        let wake = lookup.poll_timeout().expect("a lookup without a result has a deadline").min(next_tick);
        let wait = wake.saturating_duration_since(Instant::now());
        let before = Instant::now();
        poll.poll(&mut events, Some(wait)).unwrap();
        longest_wait = longest_wait.max(before.elapsed());
        let now = Instant::now();
        if now >= next_tick {
            ticks += 1;
            next_tick = now + TICK;
        }
        for ev in events.iter() {
            let token = ev.token();
            if servers.iter_mut().any(|s| s.event(poll, token)) {
                continue;
            }
            if token == CLIENT_UDP {
                while let Ok((n, from)) = client.recv_from(&mut buf) {
                    lookup.handle_udp(from, &buf[..n], now);
                }
            } else if let Some((id, s, out)) = tcp.get_mut(&token) {
                if ev.is_writable() && !out.is_empty() {
                    match s.write(out) {
                        Ok(n) => drop(out.drain(..n)),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => lookup.handle_tcp_closed(*id, now),
                    }
                }
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            lookup.handle_tcp_closed(*id, now);
                            break;
                        }
                        Ok(n) => lookup.handle_tcp(*id, &buf[..n], now),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            lookup.handle_tcp_closed(*id, now);
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn conf(servers: &[SocketAddr], timeout: Duration, attempts: u8) -> ResolvConf {
    ResolvConf { nameservers: servers.to_vec(), timeout, attempts, ..ResolvConf::default() }
}

/// A UDP socket that is bound and never read: a DNS server that does not
/// answer (the kernel queues the queries; nothing refuses them).
fn silent() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn answered_over_udp() {
    let mut poll = Poll::new().unwrap();
    let mut server = Server::start(&poll, Mode::Answer);
    let c = conf(&[server.addr()], Duration::from_secs(5), 2);
    let run = run(&mut poll, &mut [&mut server], "loki.test", &c);
    let r = run.result.unwrap();
    assert_eq!(r.addrs, [ip("10.1.2.3")]);
    assert_eq!(r.ttl, Some(Duration::from_secs(60)));
    assert!(matches!(r.source, Source::Dns { server: s, .. } if s == server.addr()));
    assert_eq!(server.queries, 2, "A and AAAA");
    assert!(run.elapsed < Duration::from_secs(1), "{:?}", run.elapsed);

    let run = self::run(&mut poll, &mut [&mut server], "nope.test", &c);
    assert_eq!(run.result.unwrap_err().to_string(), "cannot resolve nope.test: no such host");
}

#[test]
fn silent_server_ends_at_the_deadline_and_nothing_blocks() {
    let mut poll = Poll::new().unwrap();
    let hole = silent();
    let timeout = Duration::from_millis(300);
    let c = conf(&[hole.local_addr().unwrap()], timeout, 2);
    let run = run(&mut poll, &mut [], "loki.test", &c);
    let err = run.result.unwrap_err();
    match &err {
        DnsError::Unanswered { servers, .. } => {
            assert_eq!(servers.len(), 1);
            assert_eq!((servers[0].attempts, &servers[0].last), (2, &ServerOutcome::NoAnswer));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "cannot resolve loki.test: no answer from {} within 300ms (2 attempts)",
            hole.local_addr().unwrap()
        )
    );
    // Two tries of 300 ms: not before, and not much after.
    assert!(run.elapsed >= 2 * timeout, "{:?}", run.elapsed);
    assert!(run.elapsed < 2 * timeout + Duration::from_secs(1), "{:?}", run.elapsed);
    // The loop kept turning all along: no wait was much longer than a tick
    // (slack for a loaded machine; a blocked lookup would wait 600 ms).
    assert!(run.longest_wait < TICK + Duration::from_millis(250), "{:?}", run.longest_wait);
    assert!(run.ticks >= 15, "{} ticks in {:?}", run.ticks, run.elapsed);
    // The queries did reach it: A and AAAA, twice.
    hole.set_nonblocking(true).unwrap();
    let mut n = 0;
    while hole.recv_from(&mut [0; 512]).is_ok() {
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn silent_first_server_then_the_second_answers() {
    let mut poll = Poll::new().unwrap();
    let hole = silent();
    let mut server = Server::start(&poll, Mode::Answer);
    let timeout = Duration::from_millis(200);
    let c = conf(&[hole.local_addr().unwrap(), server.addr()], timeout, 2);
    let run = run(&mut poll, &mut [&mut server], "loki.test", &c);
    assert_eq!(run.result.unwrap().addrs, [ip("10.1.2.3")]);
    assert!(run.elapsed >= timeout && run.elapsed < timeout + Duration::from_secs(1), "{:?}", run.elapsed);
}

#[test]
fn truncated_answer_is_asked_again_over_tcp() {
    let mut poll = Poll::new().unwrap();
    let mut server = Server::start(&poll, Mode::Truncate);
    let c = conf(&[server.addr()], Duration::from_secs(5), 2);
    let run = run(&mut poll, &mut [&mut server], "loki.test", &c);
    let r = run.result.unwrap();
    assert_eq!(r.addrs.len(), log_capturer::dns::resolver::MAX_ADDRS, "41 over TCP, capped");
    assert_eq!(r.addrs[..2], [ip("10.1.2.3"), ip("10.2.0.0")]);
    // A and AAAA over UDP (truncated), then both again over TCP.
    assert_eq!(server.queries, 4);
    assert!(run.elapsed < Duration::from_secs(1), "{:?}", run.elapsed);
}
