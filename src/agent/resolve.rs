//! The sink's host name, resolved on the loop: [`crate::dns`]'s lookup
//! driven by the poll (one UDP socket per lookup, TCP for truncated
//! answers), never `getaddrinfo`, which blocks the thread while a DNS
//! server stays silent and needs NSS libraries a static binary lacks.
//!
//! Addresses are kept for their TTL (clamped to [`MIN_TTL`]..[`MAX_TTL`])
//! and tried in order; once every one of them failed in a row, or the TTL
//! has passed, the next connect resolves the name again. The lookup's
//! sockets have fixed tokens ([`DNS_UDP`], [`DNS_TCP`]): there is at most
//! one lookup at a time.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Token};

use crate::agent::event_loop::{Agent, Timer};
use crate::dns::resolver::{ExchangeId, Family, Lookup, Proto};
use crate::sink::url::{Host, SinkUrl};
use crate::timer_wheel::TimerId;

pub(crate) const DNS_UDP: Token = Token(usize::MAX - 4);
/// Tokens of TCP exchanges: `DNS_TCP - i`, i < [`MAX_TCP`].
const DNS_TCP: usize = usize::MAX - 5;
const MAX_TCP: usize = 4;

/// One of the lookup's sockets.
pub(crate) fn is_dns_token(t: Token) -> bool {
    t == DNS_UDP || (DNS_TCP + 1 - MAX_TCP..=DNS_TCP).contains(&t.0)
}
pub const MIN_TTL: Duration = Duration::from_secs(5);
pub const MAX_TTL: Duration = Duration::from_secs(300);

/// The sink's addresses and the lookup that refreshes them.
pub(crate) struct SinkAddrs {
    host: Host,
    port: u16,
    addrs: Vec<SocketAddr>,
    /// Index of the address to try next.
    next: usize,
    /// Addresses that failed in a row.
    failed_in_row: usize,
    expires: Option<Instant>,
    lookup: Option<Running>,
}

struct Running {
    lookup: Lookup,
    udp: Option<UdpSocket>,
    tcp: Vec<Option<(ExchangeId, TcpStream, Vec<u8>)>>,
    timer: Option<TimerId>,
}

/// What [`SinkAddrs::next`] says.
pub(crate) enum Next {
    Addr(SocketAddr),
    /// A lookup is needed (or under way): wait for it.
    Resolve,
}

impl SinkAddrs {
    pub(crate) fn new(url: &SinkUrl) -> Self {
        let addrs = match &url.host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, url.port)],
            Host::Name(_) => Vec::new(),
        };
        SinkAddrs {
            host: url.host.clone(),
            port: url.port,
            addrs,
            next: 0,
            failed_in_row: 0,
            expires: None,
            lookup: None,
        }
    }

    pub(crate) fn next(&mut self, now: Instant) -> Next {
        let stale = self.expires.is_some_and(|e| now >= e) || self.failed_in_row >= self.addrs.len();
        if matches!(self.host, Host::Name(_)) && (self.addrs.is_empty() || stale) {
            return Next::Resolve;
        }
        let a = self.addrs[self.next % self.addrs.len()];
        Next::Addr(a)
    }

    /// While a lookup runs: its timer (it always has one; `Some(None)`
    /// would be a lookup nothing wakes).
    pub(crate) fn lookup_timer(&self) -> Option<Option<TimerId>> {
        self.lookup.as_ref().map(|r| r.timer)
    }

    /// The connection to the address last given worked.
    pub(crate) fn worked(&mut self) {
        self.failed_in_row = 0;
    }

    /// It failed: the next connect tries the next address.
    pub(crate) fn failed(&mut self) {
        self.failed_in_row += 1;
        self.next = (self.next + 1) % self.addrs.len().max(1);
    }
}

impl Agent {
    /// Start looking up the sink's name (if not already).
    pub(crate) fn resolve_sink(&mut self) {
        let Some(sink) = self.sink.as_ref() else { return };
        if sink.addrs.lookup.is_some() {
            return;
        }
        let Host::Name(name) = &sink.addrs.host else { return };
        let name = name.clone();
        let (conf, hosts) = crate::dns::blocking::system_files();
        let seed = self.rng.next_u64();
        let now = Instant::now();
        let lookup = Lookup::new(&name, Family::Any, &conf, &hosts, seed, now);
        let udp = match UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0).into())
            .or_else(|_| UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0).into()))
        {
            Ok(mut s) => match self.poll.registry().register(&mut s, DNS_UDP, Interest::READABLE) {
                Ok(()) => Some(s),
                Err(_) => None,
            },
            Err(e) => {
                self.note_fd_exhaustion(&e);
                None
            }
        };
        let Some(sink) = self.sink.as_mut() else { return };
        sink.addrs.lookup = Some(Running { lookup, udp, tcp: Vec::new(), timer: None });
        self.drive_lookup();
    }

    /// Send what the lookup wants sent, take its result, arm its timer.
    fn drive_lookup(&mut self) {
        let now = Instant::now();
        let Some(sink) = self.sink.as_mut() else { return };
        let Some(run) = sink.addrs.lookup.as_mut() else { return };
        run.lookup.handle_timeout(now);
        while let Some(t) = run.lookup.poll_transmit() {
            match t.proto {
                Proto::Udp => {
                    if let Some(udp) = &run.udp {
                        // A lost datagram is a silent server: the lookup's
                        // own timeout covers it.
                        let _ = udp.send_to(&t.bytes, t.server);
                    }
                }
                Proto::Tcp => {
                    let slot = run.tcp.iter().position(Option::is_none).unwrap_or(run.tcp.len());
                    if slot >= MAX_TCP {
                        run.lookup.handle_tcp_closed(t.exchange, now);
                        continue;
                    }
                    match TcpStream::connect(t.server) {
                        Ok(mut s) => {
                            let token = Token(DNS_TCP - slot);
                            if self
                                .poll
                                .registry()
                                .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)
                                .is_err()
                            {
                                run.lookup.handle_tcp_closed(t.exchange, now);
                                continue;
                            }
                            if slot == run.tcp.len() {
                                run.tcp.push(None);
                            }
                            run.tcp[slot] = Some((t.exchange, s, t.bytes));
                        }
                        Err(_) => run.lookup.handle_tcp_closed(t.exchange, now),
                    }
                }
            }
        }
        if let Some(result) = run.lookup.poll_result() {
            let mut run = sink.addrs.lookup.take().expect("running");
            if let Some(t) = run.timer.take() {
                self.timers.cancel(t);
            }
            if let Some(mut udp) = run.udp.take() {
                let _ = self.poll.registry().deregister(&mut udp);
            }
            for (_, mut s, _) in run.tcp.into_iter().flatten() {
                let _ = self.poll.registry().deregister(&mut s);
            }
            let sink = self.sink.as_mut().expect("checked above");
            match result {
                Ok(r) => {
                    let port = sink.addrs.port;
                    sink.addrs.addrs = r.addrs.iter().map(|ip: &IpAddr| SocketAddr::new(*ip, port)).collect();
                    sink.addrs.next = 0;
                    sink.addrs.failed_in_row = 0;
                    let ttl = r.ttl.unwrap_or(MAX_TTL).clamp(MIN_TTL, MAX_TTL);
                    sink.addrs.expires = Some(now + ttl);
                    self.pump_sink();
                }
                Err(e) => self.sink_dns_failed(&e.to_string()),
            }
            return;
        }
        if let Some(at) = run.lookup.poll_timeout() {
            if let Some(t) = run.timer.take() {
                self.timers.cancel(t);
            }
            run.timer = Some(self.timers.insert(at, Timer::SinkDns));
        }
    }

    pub(crate) fn sink_dns_timer(&mut self) {
        if let Some(run) = self.sink.as_mut().and_then(|s| s.addrs.lookup.as_mut()) {
            run.timer = None;
        }
        self.drive_lookup();
    }

    /// Readiness of one of the lookup's sockets.
    pub(crate) fn on_dns_event(&mut self, token: Token) {
        let now = Instant::now();
        let Some(run) = self.sink.as_mut().and_then(|s| s.addrs.lookup.as_mut()) else { return };
        let mut buf = [0u8; 4096];
        if token == DNS_UDP {
            if let Some(udp) = &run.udp {
                loop {
                    match udp.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            run.lookup.handle_udp(from, &buf[..n], now);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
        } else {
            let slot = DNS_TCP - token.0;
            let Some(Some((id, s, out))) = run.tcp.get_mut(slot) else { return };
            let id = *id;
            let mut closed = false;
            while !out.is_empty() {
                match s.write(out) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => drop(out.drain(..n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            while !closed {
                match s.read(&mut buf) {
                    Ok(0) => closed = true,
                    Ok(n) => run.lookup.handle_tcp(id, &buf[..n], now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => closed = true,
                }
            }
            if closed || !run.lookup.wants(id) {
                if closed {
                    run.lookup.handle_tcp_closed(id, now);
                }
                if let Some((_, mut s, _)) = run.tcp[slot].take() {
                    let _ = self.poll.registry().deregister(&mut s);
                }
            }
        }
        self.drive_lookup();
    }
}
