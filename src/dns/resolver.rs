//! One name lookup as a state machine that does no I/O (in the manner of
//! quinn-proto): the caller sends what [`Lookup::poll_transmit`] hands out,
//! feeds back what arrives ([`Lookup::handle_udp`], [`Lookup::handle_tcp`],
//! [`Lookup::handle_tcp_closed`]) and the time ([`Lookup::handle_timeout`]
//! at [`Lookup::poll_timeout`]), until [`Lookup::poll_result`] has the
//! answer. Nothing here can block, and every lookup ends by its deadline.
//!
//! What it does, in order:
//! 1. an IP literal is its own answer, no query;
//! 2. `/etc/hosts`, if it has the name for the family asked;
//! 3. `localhost` and `*.localhost` are the loopback addresses (RFC 6761
//!    §6.3), so that a `FROM scratch` image without `/etc/hosts` has them;
//! 4. DNS: the name as given and with each search domain appended, in
//!    glibc's order (as given first when it has at least `ndots` dots, last
//!    otherwise; only as given when it ends in a dot). For each candidate,
//!    A and AAAA are asked at once (only one of them for [`Family::V4`] or
//!    [`Family::V6`]). Each query goes to the servers in turn, `attempts`
//!    rounds, waiting `timeout` for each; SERVFAIL, REFUSED and the like
//!    move on to the next server at once; a truncated answer is asked
//!    again over TCP of the same server. NXDOMAIN or no records move on to
//!    the next candidate; so does a candidate every server failed. A
//!    candidate no server answered ends the lookup (glibc does the same: a
//!    silent server will not answer the next candidate either).
//!
//! Answers are accepted only from the server asked, with the query's id
//! and question (anything else is ignored as stray or spoofed); an answer
//! that comes late, after the query moved on to the next server, still
//! counts. Once one family has addresses, the other gets no more retries.
//! Addresses come IPv4 first, then IPv6: without knowing the host's routes,
//! IPv4 is the family most likely to work on a small edge node, and the
//! caller tries them in order.
//!
//! The query ids come from a generator seeded by the caller, which must
//! seed it from a random source (the ids and the UDP source port are what
//! keep an off-path attacker from forging answers).

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::hosts::Hosts;
use super::message::{
    build_query, tcp_frame, Answer, MessageError, Name, NameError, Qtype, Rcode, Response, TcpReader,
};
use super::resolv_conf::{ResolvConf, DNS_PORT};

/// The longest a lookup may take, whatever resolv.conf says (its worst case
/// is 3 servers × 5 attempts × 30 s).
pub const MAX_DEADLINE: Duration = Duration::from_secs(60);
/// Addresses returned.
pub const MAX_ADDRS: usize = 32;

/// Which addresses the caller can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Both, IPv4 first.
    Any,
    V4,
    V6,
}

impl Family {
    fn qtypes(self) -> &'static [Qtype] {
        match self {
            Self::Any => &[Qtype::A, Qtype::Aaaa],
            Self::V4 => &[Qtype::A],
            Self::V6 => &[Qtype::Aaaa],
        }
    }

    fn admits(self, ip: &IpAddr) -> bool {
        match self {
            Self::Any => true,
            Self::V4 => ip.is_ipv4(),
            Self::V6 => ip.is_ipv6(),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Any => "IPv4 or IPv6",
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    /// Connect, write the bytes (length prefix included), read the answer
    /// into [`Lookup::handle_tcp`].
    Tcp,
}

/// One exchange with one server: a UDP datagram, or a TCP connection that
/// carries one query and one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExchangeId(u32);

/// Something to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub exchange: ExchangeId,
    pub server: SocketAddr,
    pub proto: Proto,
    pub bytes: Vec<u8>,
}

/// Where an answer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Literal,
    Hosts,
    Localhost,
    /// The server that answered and the name it answered for (the name
    /// given, or it with a search domain).
    Dns {
        server: SocketAddr,
        name: Name,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// 1 to [`MAX_ADDRS`] addresses, IPv4 first.
    pub addrs: Vec<IpAddr>,
    /// How long DNS says the answer holds; `None` for the other sources.
    pub ttl: Option<Duration>,
    pub source: Source,
}

/// What a server did last in a failed lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutcome {
    /// Never asked: the deadline came first.
    NotAsked,
    NoAnswer,
    Rcode(Rcode),
    /// Its answer did not parse (over UDP such an answer is ignored, in
    /// case it was forged, and the wait goes on).
    Malformed(MessageError),
    /// Over TCP, the connection failed or closed before the whole answer.
    TcpClosed,
    /// A truncated answer over TCP, where truncation has no excuse.
    TruncatedOverTcp,
    /// A CNAME chain that loops or is too long.
    CnameChain,
    /// Over TCP, an answer to another query.
    OtherQuestion,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReport {
    pub server: SocketAddr,
    /// Queries sent to it for one record type (A and AAAA asked together
    /// count as one).
    pub attempts: u32,
    pub last: ServerOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    InvalidName {
        name: String,
        error: NameError,
    },
    /// NXDOMAIN for every name tried.
    NoSuchHost {
        name: String,
        tried: Vec<Name>,
    },
    /// The name exists but has no address of the family asked.
    NoAddress {
        name: String,
        family: Family,
    },
    /// No server gave a usable answer.
    Unanswered {
        name: String,
        servers: Vec<ServerReport>,
        timeout: Duration,
        /// Set when the lookup's own deadline ended it.
        gave_up_after: Option<Duration>,
    },
}

impl std::error::Error for DnsError {}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn times(n: u32) -> String {
    if n == 1 {
        "1 attempt".into()
    } else {
        format!("{n} attempts")
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName { name, error } => write!(f, "cannot resolve {name:?}: {error}"),
            Self::NoSuchHost { name, tried } => {
                write!(f, "cannot resolve {name}: no such host")?;
                if tried.len() > 1 {
                    let t: Vec<String> = tried.iter().map(Name::to_string).collect();
                    write!(f, " (tried {})", t.join(", "))?;
                }
                Ok(())
            }
            Self::NoAddress { name, family } => {
                write!(f, "cannot resolve {name}: the name has no {family} address")
            }
            Self::Unanswered { name, servers, timeout, gave_up_after } => {
                write!(f, "cannot resolve {name}: ")?;
                if let Some(d) = gave_up_after {
                    write!(f, "gave up after {}: ", secs(*d))?;
                }
                let silent = servers.iter().all(|s| s.last == ServerOutcome::NoAnswer);
                let same = servers.windows(2).all(|w| w[0].attempts == w[1].attempts);
                if silent && same && !servers.is_empty() {
                    let list: Vec<String> = servers.iter().map(|s| s.server.to_string()).collect();
                    let each = if servers.len() > 1 { " each" } else { "" };
                    return write!(
                        f,
                        "no answer from {} within {}{each} ({})",
                        list.join(", "),
                        secs(*timeout),
                        times(servers[0].attempts)
                    );
                }
                for (i, s) in servers.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    let (server, n) = (s.server, times(s.attempts));
                    match &s.last {
                        ServerOutcome::NotAsked => write!(f, "{server} not asked before the deadline"),
                        ServerOutcome::NoAnswer => {
                            write!(f, "no answer from {server} within {} ({n})", secs(*timeout))
                        }
                        ServerOutcome::Rcode(rc) => write!(f, "{server} answered {rc} ({n})"),
                        ServerOutcome::Malformed(e) => {
                            write!(f, "{server} sent a malformed answer: {e} ({n})")
                        }
                        ServerOutcome::TcpClosed => {
                            write!(f, "{server} closed the TCP connection without an answer ({n})")
                        }
                        ServerOutcome::TruncatedOverTcp => {
                            write!(f, "{server} sent a truncated answer over TCP ({n})")
                        }
                        ServerOutcome::OtherQuestion => {
                            write!(f, "{server} answered another question over TCP ({n})")
                        }
                        ServerOutcome::CnameChain => {
                            write!(f, "{server} answered with a CNAME chain that loops or is too long")
                        }
                    }?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug)]
struct Exchange {
    id: ExchangeId,
    dns_id: u16,
    server: usize,
    proto: Proto,
    tcp: TcpReader,
    /// A UDP answer with this exchange's id from its server that did not
    /// parse: reported if nothing better comes.
    malformed: Option<MessageError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Addrs {
        addrs: Vec<IpAddr>,
        ttl: u32,
        server: usize,
    },
    NoData,
    NxDomain,
    /// Every try failed; `silent` if the last one got no answer at all.
    Failed {
        silent: bool,
    },
}

#[derive(Debug)]
struct Query {
    qtype: Qtype,
    /// Tries started; try `k` goes to server `(first + k) % n`.
    tries: u32,
    /// Every exchange of this query, the current one last.
    exchanges: Vec<Exchange>,
    /// `Err(until)` while waiting for the current exchange.
    state: Result<Outcome, Instant>,
}

#[derive(Debug)]
pub struct Lookup {
    name: String,
    family: Family,
    servers: Vec<SocketAddr>,
    /// Per server: queries sent per record type, and the last outcome.
    reports: Vec<([u32; 2], ServerOutcome)>,
    first: usize,
    timeout: Duration,
    attempts: u8,
    use_tcp: bool,
    candidates: Vec<Name>,
    candidate: usize,
    queries: Vec<Query>,
    started: Instant,
    deadline: Instant,
    rng: u64,
    next_exchange: u32,
    transmits: VecDeque<Transmit>,
    saw_nodata: bool,
    saw_failure: bool,
    result: Option<Result<Resolved, DnsError>>,
    /// The result is known (and perhaps already taken).
    done: bool,
}

impl Lookup {
    /// Start looking up `name`. `seed` seeds the query ids and must come
    /// from a random source. The deadline is resolv.conf's worst case for
    /// one name (timeout × attempts × servers), at most [`MAX_DEADLINE`];
    /// [`Lookup::set_deadline`] changes it.
    pub fn new(
        name: &str,
        family: Family,
        conf: &ResolvConf,
        hosts: &Hosts,
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut servers = conf.nameservers.clone();
        if servers.is_empty() {
            servers.push(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), DNS_PORT));
        }
        let n = servers.len();
        let budget = conf.timeout.saturating_mul(u32::from(conf.attempts.max(1)) * n as u32);
        let mut lookup = Self {
            name: name.to_owned(),
            family,
            reports: vec![([0; 2], ServerOutcome::NotAsked); n],
            servers,
            first: 0,
            timeout: conf.timeout.max(Duration::from_millis(1)),
            attempts: conf.attempts.max(1),
            use_tcp: conf.use_tcp,
            candidates: Vec::new(),
            candidate: 0,
            queries: Vec::new(),
            started: now,
            deadline: now + budget.max(conf.timeout).min(MAX_DEADLINE),
            rng: seed,
            next_exchange: 0,
            transmits: VecDeque::new(),
            saw_nodata: false,
            saw_failure: false,
            result: None,
            done: false,
        };
        if conf.rotate {
            lookup.first = usize::from(lookup.next_u16()) % n;
        }
        match lookup.without_dns(hosts, conf) {
            Some(r) => lookup.finish(r),
            None => lookup.start_candidate(now),
        }
        lookup
    }

    /// End the lookup at `deadline` instead.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// When the lookup ends at the latest.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The next datagram or TCP exchange to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`Lookup::handle_timeout`] must be called next; `None` once the
    /// result is ready.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let waits = self.queries.iter().filter_map(|q| q.state.as_ref().err().copied());
        Some(waits.fold(self.deadline, Instant::min))
    }

    /// The answer, once (afterwards `None`).
    pub fn poll_result(&mut self) -> Option<Result<Resolved, DnsError>> {
        self.result.take()
    }

    /// Whether the lookup still wants the answer of this exchange: a TCP
    /// connection for which this is false can be closed.
    pub fn wants(&self, exchange: ExchangeId) -> bool {
        !self.done
            && self
                .queries
                .iter()
                .any(|q| q.state.is_err() && q.exchanges.last().is_some_and(|e| e.id == exchange))
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.done {
            return;
        }
        for qi in 0..self.queries.len() {
            let Err(until) = self.queries[qi].state else { continue };
            if until <= now {
                let e = self.queries[qi].exchanges.last().expect("a waiting query has an exchange");
                let outcome = e.malformed.map_or(ServerOutcome::NoAnswer, ServerOutcome::Malformed);
                let silent = outcome == ServerOutcome::NoAnswer;
                self.reports[e.server].1 = outcome;
                // The next try's wait counts from when this one was due, not
                // from when the loop came round to it, so that the tries of
                // a silent server fit the deadline they were sized for.
                let due = until.max(now.checked_sub(self.timeout / 2).unwrap_or(now));
                self.next_try(qi, silent, due);
            }
        }
        self.check_candidate(now);
        if !self.done && now >= self.deadline {
            self.give_up();
        }
    }

    /// A datagram arrived on the lookup's socket; returns whether it was an
    /// answer to this lookup (everything else is ignored).
    pub fn handle_udp(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) -> bool {
        if self.done || bytes.len() < 2 {
            return false;
        }
        let id = u16::from_be_bytes([bytes[0], bytes[1]]);
        let from = (from.ip().to_canonical(), from.port());
        let servers = &self.servers;
        let found = self.queries.iter().enumerate().find_map(|(qi, q)| {
            q.exchanges
                .iter()
                .position(|e| {
                    let s = servers[e.server];
                    e.proto == Proto::Udp && e.dns_id == id && (s.ip().to_canonical(), s.port()) == from
                })
                .map(|ei| (qi, ei))
        });
        let Some((qi, ei)) = found else { return false };
        let response = match Response::parse(bytes) {
            Ok(r) => r,
            Err(err) => {
                self.queries[qi].exchanges[ei].malformed = Some(err);
                return false;
            }
        };
        let q = &self.queries[qi];
        if !response.answers_query(id, &self.candidates[self.candidate], q.qtype) {
            return false;
        }
        self.answer(qi, ei, &response, now);
        self.check_candidate(now);
        true
    }

    /// Bytes arrived on the TCP connection of `exchange`.
    pub fn handle_tcp(&mut self, exchange: ExchangeId, bytes: &[u8], now: Instant) {
        let Some((qi, ei)) = self.find(exchange, Proto::Tcp) else { return };
        let e = &mut self.queries[qi].exchanges[ei];
        if e.tcp.message().is_some() {
            return;
        }
        e.tcp.push(bytes);
        let Some(msg) = e.tcp.message() else { return };
        let (dns_id, server) = (e.dns_id, e.server);
        // Our own connection: a bad answer is the server's, not a forger's.
        let parsed = Response::parse(msg);
        match parsed {
            Ok(r) if r.answers_query(dns_id, &self.candidates[self.candidate], self.queries[qi].qtype) => {
                self.answer(qi, ei, &r, now)
            }
            Ok(_) => self.fail(qi, ei, server, ServerOutcome::OtherQuestion, now),
            Err(err) => self.fail(qi, ei, server, ServerOutcome::Malformed(err), now),
        }
        self.check_candidate(now);
    }

    /// The TCP connection of `exchange` failed or closed.
    pub fn handle_tcp_closed(&mut self, exchange: ExchangeId, now: Instant) {
        let Some((qi, ei)) = self.find(exchange, Proto::Tcp) else { return };
        let e = &self.queries[qi].exchanges[ei];
        if e.tcp.message().is_none() {
            let server = e.server;
            self.fail(qi, ei, server, ServerOutcome::TcpClosed, now);
            self.check_candidate(now);
        }
    }

    fn find(&self, exchange: ExchangeId, proto: Proto) -> Option<(usize, usize)> {
        if self.done {
            return None;
        }
        self.queries.iter().enumerate().find_map(|(qi, q)| {
            q.exchanges.iter().position(|e| e.id == exchange && e.proto == proto).map(|ei| (qi, ei))
        })
    }

    /// No DNS needed: an IP literal, `/etc/hosts`, `localhost`; or a name
    /// that cannot be asked for.
    fn without_dns(&mut self, hosts: &Hosts, conf: &ResolvConf) -> Option<Result<Resolved, DnsError>> {
        let family = self.family;
        let found = |addrs: Vec<IpAddr>, source| {
            let mut addrs: Vec<IpAddr> = addrs.into_iter().filter(|a| family.admits(a)).collect();
            addrs.sort_by_key(|a| a.is_ipv6());
            (!addrs.is_empty()).then_some(Ok(Resolved { addrs, ttl: None, source }))
        };
        if let Ok(ip) = self.name.parse::<IpAddr>() {
            let no = DnsError::NoAddress { name: self.name.clone(), family };
            return Some(found(vec![ip], Source::Literal).unwrap_or(Err(no)));
        }
        let base = match Name::from_text(&self.name) {
            Ok(n) => n,
            Err(error) => return Some(Err(DnsError::InvalidName { name: self.name.clone(), error })),
        };
        if let Some(r) = found(hosts.lookup(&self.name), Source::Hosts) {
            return Some(r);
        }
        let text = base.to_string();
        if text == "localhost" || text.ends_with(".localhost") {
            let lo = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
            return found(lo, Source::Localhost);
        }
        self.candidates = candidates(&self.name, base, conf);
        None
    }

    fn next_u16(&mut self) -> u16 {
        // SplitMix64.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u16
    }

    fn start_candidate(&mut self, now: Instant) {
        self.queries = self
            .family
            .qtypes()
            .iter()
            .map(|&qtype| Query { qtype, tries: 0, exchanges: Vec::new(), state: Ok(Outcome::NoData) })
            .collect();
        for qi in 0..self.queries.len() {
            self.send(qi, None, now);
        }
    }

    /// Start an exchange for query `qi`: the next try, or (`tcp_to`) the
    /// TCP retry of a truncated answer from that server.
    fn send(&mut self, qi: usize, tcp_to: Option<usize>, now: Instant) {
        let server = match tcp_to {
            Some(s) => s,
            None => {
                let q = &mut self.queries[qi];
                let s = (self.first + q.tries as usize) % self.servers.len();
                q.tries += 1;
                self.reports[s].0[usize::from(q.qtype == Qtype::Aaaa)] += 1;
                s
            }
        };
        let proto = if tcp_to.is_some() || self.use_tcp { Proto::Tcp } else { Proto::Udp };
        // Unique among this lookup's exchanges, so that an answer's id
        // names one query (A and AAAA go to the same server together).
        let mut dns_id = self.next_u16();
        while self.queries.iter().flat_map(|q| &q.exchanges).any(|e| e.dns_id == dns_id) {
            dns_id = self.next_u16();
        }
        let id = ExchangeId(self.next_exchange);
        self.next_exchange += 1;
        let query = build_query(dns_id, &self.candidates[self.candidate], self.queries[qi].qtype);
        let bytes = match proto {
            Proto::Udp => query,
            Proto::Tcp => tcp_frame(&query).expect("a query is far below 64 KiB"),
        };
        let q = &mut self.queries[qi];
        q.exchanges.push(Exchange { id, dns_id, server, proto, tcp: TcpReader::new(), malformed: None });
        q.state = Err(now + self.timeout);
        self.transmits.push_back(Transmit { exchange: id, server: self.servers[server], proto, bytes });
    }

    /// Query `qi`'s current try failed: the next, or the query fails.
    fn next_try(&mut self, qi: usize, silent: bool, now: Instant) {
        let other_has_addrs = self
            .queries
            .iter()
            .enumerate()
            .any(|(i, q)| i != qi && matches!(q.state, Ok(Outcome::Addrs { .. })));
        let q = &self.queries[qi];
        if other_has_addrs || q.tries >= u32::from(self.attempts) * self.servers.len() as u32 {
            self.queries[qi].state = Ok(Outcome::Failed { silent });
        } else {
            self.send(qi, None, now);
        }
    }

    /// Exchange `ei` of query `qi` failed; it matters only if it is the
    /// current one.
    fn fail(&mut self, qi: usize, ei: usize, server: usize, outcome: ServerOutcome, now: Instant) {
        self.reports[server].1 = outcome;
        let q = &self.queries[qi];
        if q.state.is_err() && ei + 1 == q.exchanges.len() {
            self.next_try(qi, false, now);
        }
    }

    /// A response that answers exchange `ei` of query `qi`.
    fn answer(&mut self, qi: usize, ei: usize, r: &Response, now: Instant) {
        let q = &self.queries[qi];
        if q.state.is_ok() {
            return;
        }
        let e = &q.exchanges[ei];
        let (server, proto) = (e.server, e.proto);
        if r.header.tc {
            if proto == Proto::Tcp {
                return self.fail(qi, ei, server, ServerOutcome::TruncatedOverTcp, now);
            }
            if ei + 1 == q.exchanges.len() {
                self.send(qi, Some(server), now);
            }
            return;
        }
        let outcome = match r.header.rcode {
            Rcode::NoError => match r.addresses(&self.candidates[self.candidate], q.qtype) {
                Answer::Addresses { mut addrs, ttl } => {
                    addrs.truncate(MAX_ADDRS);
                    Outcome::Addrs { addrs, ttl, server }
                }
                Answer::NoData => Outcome::NoData,
                Answer::CnameChainTooLong => {
                    return self.fail(qi, ei, server, ServerOutcome::CnameChain, now)
                }
            },
            Rcode::NxDomain => Outcome::NxDomain,
            rcode => return self.fail(qi, ei, server, ServerOutcome::Rcode(rcode), now),
        };
        self.queries[qi].state = Ok(outcome);
    }

    /// Once every query of the candidate is done: the answer, the next
    /// candidate, or the error.
    fn check_candidate(&mut self, now: Instant) {
        if self.done || self.queries.iter().any(|q| q.state.is_err()) {
            return;
        }
        if let Some(r) = self.addresses() {
            self.finish(Ok(r));
            return;
        }
        let outcomes = self.queries.iter().map(|q| q.state.as_ref().ok());
        if outcomes.clone().any(|o| matches!(o, Some(Outcome::Failed { silent: true }))) {
            self.finish(Err(self.unanswered(None)));
            return;
        }
        self.saw_nodata |= outcomes.clone().any(|o| matches!(o, Some(Outcome::NoData)));
        self.saw_failure |= outcomes.clone().any(|o| matches!(o, Some(Outcome::Failed { .. })));
        if self.candidate + 1 < self.candidates.len() {
            self.candidate += 1;
            return self.start_candidate(now);
        }
        let name = self.name.clone();
        self.finish(Err(if self.saw_nodata {
            DnsError::NoAddress { name, family: self.family }
        } else if self.saw_failure {
            self.unanswered(None)
        } else {
            DnsError::NoSuchHost { name, tried: self.candidates.clone() }
        }));
    }

    /// The current candidate's addresses, if any query found some.
    fn addresses(&self) -> Option<Resolved> {
        let mut addrs = Vec::new();
        let mut min_ttl = u32::MAX;
        let mut from = None;
        for q in &self.queries {
            if let Ok(Outcome::Addrs { addrs: a, ttl, server }) = &q.state {
                addrs.extend(a.iter().take(MAX_ADDRS - addrs.len()));
                min_ttl = min_ttl.min(*ttl);
                from.get_or_insert(*server);
            }
        }
        let server = self.servers[from?];
        let name = self.candidates[self.candidate].clone();
        let ttl = Some(Duration::from_secs(u64::from(min_ttl)));
        Some(Resolved { addrs, ttl, source: Source::Dns { server, name } })
    }

    fn finish(&mut self, result: Result<Resolved, DnsError>) {
        self.result = Some(result);
        self.done = true;
        self.transmits.clear();
        self.queries.clear();
    }

    fn give_up(&mut self) {
        // What one family found is better than nothing.
        let found = self.addresses();
        for q in &self.queries {
            if let (Err(_), Some(e)) = (&q.state, q.exchanges.last()) {
                self.reports[e.server].1 =
                    e.malformed.map_or(ServerOutcome::NoAnswer, ServerOutcome::Malformed);
            }
        }
        self.finish(match found {
            Some(r) => Ok(r),
            None => Err(self.unanswered(Some(self.deadline.saturating_duration_since(self.started)))),
        });
    }

    fn unanswered(&self, gave_up_after: Option<Duration>) -> DnsError {
        let servers = self
            .servers
            .iter()
            .zip(&self.reports)
            .map(|(&server, (sent, last))| ServerReport {
                server,
                attempts: sent[0].max(sent[1]),
                last: last.clone(),
            })
            .collect();
        DnsError::Unanswered { name: self.name.clone(), servers, timeout: self.timeout, gave_up_after }
    }
}

/// The names to ask for, in glibc's order.
fn candidates(text: &str, base: Name, conf: &ResolvConf) -> Vec<Name> {
    if text.ends_with('.') {
        return vec![base];
    }
    let searched = conf.search.iter().filter_map(|d| base.join(d).ok());
    let mut out: Vec<Name> = if base.labels() > usize::from(conf.ndots) {
        std::iter::once(base.clone()).chain(searched).collect()
    } else {
        searched.chain(std::iter::once(base.clone())).collect()
    };
    let mut seen = Vec::new();
    out.retain(|n| {
        let new = !seen.contains(n);
        seen.push(n.clone());
        new
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::message::HEADER_LEN;

    const S1: &str = "10.0.0.2:53";
    const S2: &str = "10.0.0.3:53";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn conf(servers: &[&str], timeout_s: u64, attempts: u8) -> ResolvConf {
        ResolvConf {
            nameservers: servers.iter().map(|s| sa(s)).collect(),
            timeout: Duration::from_secs(timeout_s),
            attempts,
            ..ResolvConf::default()
        }
    }

    fn lookup(name: &str, family: Family, conf: &ResolvConf, now: Instant) -> Lookup {
        Lookup::new(name, family, conf, &Hosts::default(), 42, now)
    }

    fn drain(l: &mut Lookup) -> Vec<Transmit> {
        std::iter::from_fn(|| l.poll_transmit()).collect()
    }

    /// The query inside a transmit, without the TCP length prefix.
    fn query_of(t: &Transmit) -> &[u8] {
        match t.proto {
            Proto::Udp => &t.bytes,
            Proto::Tcp => {
                assert_eq!(usize::from(u16::from_be_bytes([t.bytes[0], t.bytes[1]])), t.bytes.len() - 2);
                &t.bytes[2..]
            }
        }
    }

    fn qtype_of(t: &Transmit) -> Qtype {
        let q = query_of(t);
        Qtype::from_code(u16::from_be_bytes([q[q.len() - 4], q[q.len() - 3]])).unwrap()
    }

    fn qname_of(t: &Transmit) -> String {
        let q = query_of(t);
        crate::dns::message::read_name(q, HEADER_LEN).unwrap().0.to_string()
    }

    /// A server's answer to `t`: its question echoed, `flags` (RA, TC,
    /// rcode), and one record per address of the query's type.
    fn reply(t: &Transmit, flags: u16, addrs: &[&str], ttl: u32) -> Vec<u8> {
        let q = query_of(t);
        let mut r = q.to_vec();
        r[2..4].copy_from_slice(&(0x8100 | flags).to_be_bytes());
        r[6..8].copy_from_slice(&(addrs.len() as u16).to_be_bytes());
        for a in addrs {
            let (rtype, data): (u16, Vec<u8>) = match a.parse::<IpAddr>().unwrap() {
                IpAddr::V4(v) => (1, v.octets().to_vec()),
                IpAddr::V6(v) => (28, v.octets().to_vec()),
            };
            r.extend_from_slice(&[0xc0, 0x0c]);
            r.extend_from_slice(&rtype.to_be_bytes());
            r.extend_from_slice(&[0, 1]);
            r.extend_from_slice(&ttl.to_be_bytes());
            r.extend_from_slice(&(data.len() as u16).to_be_bytes());
            r.extend_from_slice(&data);
        }
        r
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn addrs(l: &mut Lookup) -> Vec<IpAddr> {
        l.poll_result().expect("a result").expect("addresses").addrs
    }

    fn error(l: &mut Lookup) -> DnsError {
        l.poll_result().expect("a result").expect_err("an error")
    }

    #[test]
    fn ip_literals_send_nothing() {
        let now = Instant::now();
        let c = conf(&[S1], 5, 2);
        for (name, family, want) in [
            ("192.0.2.7", Family::Any, Some("192.0.2.7")),
            ("2001:db8::7", Family::V6, Some("2001:db8::7")),
            ("192.0.2.7", Family::V6, None),
        ] {
            let mut l = lookup(name, family, &c, now);
            assert_eq!(l.poll_transmit(), None, "{name}");
            assert_eq!(l.poll_timeout(), None);
            match (l.poll_result().unwrap(), want) {
                (Ok(r), Some(w)) => assert_eq!((r.addrs, r.source), (ips(&[w]), Source::Literal)),
                (Err(e), None) => {
                    assert_eq!(e.to_string(), "cannot resolve 192.0.2.7: the name has no IPv6 address")
                }
                (r, w) => panic!("{name}: {r:?}, wanted {w:?}"),
            }
            assert_eq!(l.poll_result(), None, "the result is given once");
        }
    }

    #[test]
    fn hosts_and_localhost_send_nothing() {
        let now = Instant::now();
        let c = conf(&[S1], 5, 2);
        let hosts = Hosts::parse(b"2001:db8::9 loki\n10.1.1.9 loki\n10.1.1.10 LOCALHOST\n");
        let mut l = Lookup::new("Loki.", Family::Any, &c, &hosts, 1, now);
        assert_eq!(l.poll_transmit(), None);
        let r = l.poll_result().unwrap().unwrap();
        assert_eq!((r.addrs, r.source), (ips(&["10.1.1.9", "2001:db8::9"]), Source::Hosts));
        // The operator's hosts entry beats the built-in localhost.
        let mut l = Lookup::new("localhost", Family::V4, &c, &hosts, 1, now);
        assert_eq!(addrs(&mut l), ips(&["10.1.1.10"]));
        let mut l = Lookup::new("api.localhost", Family::Any, &c, &Hosts::default(), 1, now);
        assert_eq!(l.poll_transmit(), None);
        let r = l.poll_result().unwrap().unwrap();
        assert_eq!((r.addrs, r.source), (ips(&["127.0.0.1", "::1"]), Source::Localhost));
        // hosts has only IPv6 for it: IPv4 is asked of DNS.
        let mut l = Lookup::new("loki", Family::V4, &c, &Hosts::parse(b"::9 loki\n"), 1, now);
        let t = drain(&mut l);
        assert_eq!((t.len(), qtype_of(&t[0])), (1, Qtype::A));
    }

    #[test]
    fn invalid_names_send_nothing() {
        let mut l = lookup("loki example", Family::Any, &conf(&[S1], 5, 2), Instant::now());
        assert_eq!(l.poll_transmit(), None);
        let e = error(&mut l);
        assert!(matches!(e, DnsError::InvalidName { error: NameError::BadByte { byte: b' ' }, .. }));
        assert!(e.to_string().starts_with("cannot resolve \"loki example\": the name holds ' '"), "{e}");
    }

    #[test]
    fn a_and_aaaa_together_ipv4_first() {
        let now = Instant::now();
        let mut l = lookup("loki.example", Family::Any, &conf(&[S1], 5, 2), now);
        let t = drain(&mut l);
        assert_eq!(t.iter().map(qtype_of).collect::<Vec<_>>(), [Qtype::A, Qtype::Aaaa]);
        assert!(t.iter().all(|t| t.server == sa(S1) && t.proto == Proto::Udp));
        assert_ne!(t[0].bytes[..2], t[1].bytes[..2], "each query has its own id");
        assert_eq!(l.poll_timeout(), Some(now + Duration::from_secs(5)));
        let at = now + Duration::from_millis(3);
        assert!(l.handle_udp(sa(S1), &reply(&t[1], 0x80, &["2001:db8::1"], 300), at));
        assert!(l.poll_result().is_none(), "waits for the A answer");
        assert!(l.handle_udp(sa(S1), &reply(&t[0], 0x80, &["10.0.0.7", "10.0.0.8"], 60), at));
        let r = l.poll_result().unwrap().unwrap();
        assert_eq!(r.addrs, ips(&["10.0.0.7", "10.0.0.8", "2001:db8::1"]));
        assert_eq!(r.ttl, Some(Duration::from_secs(60)));
        assert_eq!(r.source, Source::Dns { server: sa(S1), name: Name::from_text("loki.example").unwrap() });
        assert_eq!(l.poll_timeout(), None);
        assert!(!l.handle_udp(sa(S1), &reply(&t[0], 0x80, &["10.0.0.9"], 60), at), "done: ignored");
    }

    #[test]
    fn stray_and_spoofed_answers_are_ignored() {
        let now = Instant::now();
        let mut l = lookup("loki.example", Family::V4, &conf(&[S1], 5, 2), now);
        let t = drain(&mut l).remove(0);
        let good = reply(&t, 0x80, &["10.0.0.7"], 60);
        let mut wrong_id = good.clone();
        wrong_id[1] ^= 1;
        assert!(!l.handle_udp(sa(S1), &wrong_id, now));
        assert!(!l.handle_udp(sa("10.0.0.66:53"), &good, now), "not the server asked");
        assert!(!l.handle_udp(sa("10.0.0.2:5353"), &good, now), "not the server's port");
        let mut other_question = good.clone();
        other_question[HEADER_LEN + 1] = b'x';
        assert!(!l.handle_udp(sa(S1), &other_question, now));
        let mut as_aaaa = good.clone();
        as_aaaa[HEADER_LEN + 14] = 28;
        assert!(!l.handle_udp(sa(S1), &as_aaaa, now));
        assert!(!l.handle_udp(sa(S1), &good[..good.len() - 1], now), "malformed");
        assert!(!l.handle_udp(sa(S1), &t.bytes, now), "our own query echoed");
        assert!(l.poll_result().is_none());
        // An IPv4-mapped source (a dual-stack socket) is the same server.
        assert!(l.handle_udp(sa("[::ffff:10.0.0.2]:53"), &good, now));
        assert_eq!(addrs(&mut l), ips(&["10.0.0.7"]));
    }

    #[test]
    fn silent_servers_then_error_within_the_deadline() {
        let t0 = Instant::now();
        let mut l = lookup("loki.example", Family::V4, &conf(&[S1, S2], 5, 2), t0);
        let mut sent = Vec::new();
        let mut now = t0;
        loop {
            for t in drain(&mut l) {
                sent.push((now - t0, t.server));
            }
            let Some(next) = l.poll_timeout() else { break };
            assert!(next > now, "the timeout moves forward");
            now = next;
            l.handle_timeout(now);
        }
        let s = |n| Duration::from_secs(n);
        assert_eq!(sent, [(s(0), sa(S1)), (s(5), sa(S2)), (s(10), sa(S1)), (s(15), sa(S2))]);
        assert_eq!(now - t0, s(20));
        let e = error(&mut l);
        assert_eq!(
            e.to_string(),
            "cannot resolve loki.example: no answer from 10.0.0.2:53, 10.0.0.3:53 within 5s each (2 attempts)"
        );
        // One server, one family, and a loop that comes round late: the
        // second try is due 5 s after the first was, not after the loop woke.
        let mut l = lookup("loki.example", Family::V4, &conf(&[S1], 5, 2), t0);
        l.handle_timeout(t0 + Duration::from_millis(5200));
        assert_eq!(l.poll_timeout(), Some(t0 + s(10)));
        l.handle_timeout(t0 + s(10));
        assert_eq!(
            error(&mut l).to_string(),
            "cannot resolve loki.example: no answer from 10.0.0.2:53 within 5s (2 attempts)"
        );
    }

    #[test]
    fn the_overall_deadline_ends_the_lookup() {
        let t0 = Instant::now();
        let mut l = lookup("loki.example", Family::Any, &conf(&[S1, S2], 5, 2), t0);
        l.set_deadline(t0 + Duration::from_secs(7));
        drain(&mut l);
        l.handle_timeout(t0 + Duration::from_secs(5));
        assert_eq!(drain(&mut l).len(), 2, "A and AAAA to the second server");
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(7)));
        l.handle_timeout(t0 + Duration::from_secs(7));
        assert_eq!(l.poll_transmit(), None);
        let e = error(&mut l);
        assert_eq!(
            e.to_string(),
            "cannot resolve loki.example: gave up after 7s: \
             no answer from 10.0.0.2:53, 10.0.0.3:53 within 5s each (1 attempt)"
        );
        // Never longer than MAX_DEADLINE, whatever resolv.conf says.
        let l = lookup("x.example", Family::Any, &conf(&[S1, S2, "10.0.0.4:53"], 30, 5), t0);
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        assert_eq!(l.deadline(), t0 + MAX_DEADLINE);
    }

    #[test]
    fn servfail_moves_to_the_next_server_at_once() {
        let now = Instant::now();
        let mut l = lookup("loki.example", Family::V4, &conf(&[S1, S2], 5, 2), now);
        let t = drain(&mut l).remove(0);
        assert!(l.handle_udp(sa(S1), &reply(&t, 0x82, &[], 0), now));
        let t2 = drain(&mut l).remove(0);
        assert_eq!(t2.server, sa(S2));
        assert_eq!(qname_of(&t2), "loki.example");
        assert!(l.handle_udp(sa(S2), &reply(&t2, 0x80, &["10.0.0.7"], 60), now));
        let r = l.poll_result().unwrap().unwrap();
        assert_eq!(
            (r.addrs, r.source),
            (
                ips(&["10.0.0.7"]),
                Source::Dns { server: sa(S2), name: Name::from_text("loki.example").unwrap() }
            )
        );
    }

    #[test]
    fn every_server_failing_is_reported_per_server() {
        let now = Instant::now();
        let mut l = lookup("loki.example", Family::V4, &conf(&[S1, S2], 5, 1), now);
        let t = drain(&mut l).remove(0);
        assert!(l.handle_udp(sa(S1), &reply(&t, 0x85, &[], 0), now));
        let t = drain(&mut l).remove(0);
        // A garbled answer is ignored (it could be forged) but remembered.
        let mut bad = reply(&t, 0x80, &["10.0.0.7"], 60);
        bad.truncate(bad.len() - 2);
        assert!(!l.handle_udp(sa(S2), &bad, now));
        l.handle_timeout(now + Duration::from_secs(5));
        assert_eq!(
            error(&mut l).to_string(),
            "cannot resolve loki.example: 10.0.0.2:53 answered REFUSED (1 attempt); \
             10.0.0.3:53 sent a malformed answer: message truncated at byte 44 (1 attempt)"
        );
    }

    #[test]
    fn a_late_answer_from_the_previous_server_counts() {
        let now = Instant::now();
        let mut l = lookup("loki.example", Family::V4, &conf(&[S1, S2], 5, 2), now);
        let first = drain(&mut l).remove(0);
        l.handle_timeout(now + Duration::from_secs(5));
        assert_eq!(drain(&mut l)[0].server, sa(S2));
        assert!(l.handle_udp(sa(S1), &reply(&first, 0x80, &["10.0.0.7"], 60), now + Duration::from_secs(6)));
        assert_eq!(addrs(&mut l), ips(&["10.0.0.7"]));
    }

    #[test]
    fn truncated_answer_goes_to_tcp_at_every_split() {
        let now = Instant::now();
        // 40 records: more than fit in 512 bytes; MAX_ADDRS of them are kept.
        let many: Vec<String> = (0..40).map(|i| format!("10.9.0.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut cut = 0;
        let mut len = usize::MAX;
        while cut <= len {
            let mut l = lookup("big.example", Family::V4, &conf(&[S1, S2], 5, 2), now);
            let t = drain(&mut l).remove(0);
            assert!(l.handle_udp(sa(S1), &reply(&t, 0x280, &[], 0), now));
            assert_eq!(l.poll_result(), None);
            let tcp = drain(&mut l).remove(0);
            assert_eq!((tcp.server, tcp.proto), (sa(S1), Proto::Tcp));
            assert_eq!((qname_of(&tcp), qtype_of(&tcp)), ("big.example".into(), Qtype::A));
            assert!(l.wants(tcp.exchange));
            assert_eq!(l.poll_timeout(), Some(now + Duration::from_secs(5)), "a fresh wait for TCP");
            let framed = tcp_frame(&reply(&tcp, 0x80, &many, 60)).unwrap();
            len = framed.len();
            l.handle_tcp(tcp.exchange, &framed[..cut], now);
            if cut < framed.len() {
                assert_eq!(l.poll_result(), None, "cut {cut}");
                l.handle_tcp(tcp.exchange, &framed[cut..], now);
            }
            let got = addrs(&mut l);
            assert_eq!(got.len(), MAX_ADDRS, "cut {cut}");
            assert_eq!(got[31], "10.9.0.31".parse::<IpAddr>().unwrap());
            assert!(!l.wants(tcp.exchange));
            cut += 1;
        }
    }

    #[test]
    fn tcp_closed_or_truncated_again_moves_on() {
        let now = Instant::now();
        let mut l = lookup("big.example", Family::V4, &conf(&[S1, S2], 5, 1), now);
        let t = drain(&mut l).remove(0);
        l.handle_udp(sa(S1), &reply(&t, 0x280, &[], 0), now);
        let tcp = drain(&mut l).remove(0);
        l.handle_tcp(tcp.exchange, &[0, 40, 1, 2], now);
        l.handle_tcp_closed(tcp.exchange, now);
        let t2 = drain(&mut l).remove(0);
        assert_eq!((t2.server, t2.proto), (sa(S2), Proto::Udp));
        l.handle_udp(sa(S2), &reply(&t2, 0x280, &[], 0), now);
        let tcp2 = drain(&mut l).remove(0);
        l.handle_tcp(tcp2.exchange, &tcp_frame(&reply(&tcp2, 0x280, &[], 0)).unwrap(), now);
        assert_eq!(
            error(&mut l).to_string(),
            "cannot resolve big.example: 10.0.0.2:53 closed the TCP connection without an answer (1 attempt); \
             10.0.0.3:53 sent a truncated answer over TCP (1 attempt)"
        );
    }

    #[test]
    fn use_vc_asks_over_tcp_from_the_start() {
        let now = Instant::now();
        let c = ResolvConf { use_tcp: true, ..conf(&[S1], 5, 2) };
        let mut l = lookup("loki.example", Family::V4, &c, now);
        let t = drain(&mut l).remove(0);
        assert_eq!(t.proto, Proto::Tcp);
        assert!(!l.handle_udp(sa(S1), &reply(&t, 0x80, &["10.0.0.7"], 60), now), "no UDP was sent");
        l.handle_tcp(t.exchange, &tcp_frame(&reply(&t, 0x80, &["10.0.0.7"], 60)).unwrap(), now);
        assert_eq!(addrs(&mut l), ips(&["10.0.0.7"]));
    }

    #[test]
    fn search_list_and_nxdomain() {
        let now = Instant::now();
        let c = ResolvConf::parse(b"nameserver 10.0.0.2\nsearch a.example b.example\n");
        let mut l = lookup("loki", Family::V4, &c, now);
        let mut asked = Vec::new();
        while let Some(t) = l.poll_transmit() {
            asked.push(qname_of(&t));
            l.handle_udp(sa(S1), &reply(&t, 0x83, &[], 0), now);
        }
        assert_eq!(asked, ["loki.a.example", "loki.b.example", "loki"]);
        let e = error(&mut l);
        assert_eq!(
            e.to_string(),
            "cannot resolve loki: no such host (tried loki.a.example, loki.b.example, loki)"
        );

        // A dotted name is asked as given first; a trailing dot means only as given.
        let mut l = lookup("loki.svc", Family::V4, &c, now);
        let t = drain(&mut l).remove(0);
        assert_eq!(qname_of(&t), "loki.svc");
        l.handle_udp(sa(S1), &reply(&t, 0x83, &[], 0), now);
        let t = drain(&mut l).remove(0);
        assert_eq!(qname_of(&t), "loki.svc.a.example");
        l.handle_udp(sa(S1), &reply(&t, 0x80, &["10.0.0.7"], 60), now);
        let r = l.poll_result().unwrap().unwrap();
        assert_eq!(
            r.source,
            Source::Dns { server: sa(S1), name: Name::from_text("loki.svc.a.example").unwrap() }
        );
        let mut l = lookup("loki.", Family::V4, &c, now);
        let t = drain(&mut l).remove(0);
        l.handle_udp(sa(S1), &reply(&t, 0x83, &[], 0), now);
        assert_eq!(error(&mut l).to_string(), "cannot resolve loki.: no such host");
    }

    #[test]
    fn ndots_orders_the_candidates() {
        let c = ResolvConf::parse(b"search s.example\noptions ndots:2\n");
        let names = |n: &str| -> Vec<String> {
            candidates(n, Name::from_text(n).unwrap(), &c).iter().map(Name::to_string).collect()
        };
        assert_eq!(names("a.b"), ["a.b.s.example", "a.b"]);
        assert_eq!(names("a.b.c"), ["a.b.c", "a.b.c.s.example"]);
        assert_eq!(names("a.b.c."), ["a.b.c"]);
        // A candidate too long with the suffix is skipped.
        let long = ["x".repeat(63), "x".repeat(63), "x".repeat(63), "x".repeat(61)].join(".");
        assert_eq!(names(&long).len(), 1);
    }

    #[test]
    fn nodata_and_a_timeout_stops_the_search() {
        let now = Instant::now();
        let c = ResolvConf::parse(b"nameserver 10.0.0.2\nsearch a.example\n");
        // loki.a.example has no A record; loki does not exist: no address.
        let mut l = lookup("loki", Family::V4, &c, now);
        let t = drain(&mut l).remove(0);
        l.handle_udp(sa(S1), &reply(&t, 0x80, &[], 0), now);
        let t = drain(&mut l).remove(0);
        l.handle_udp(sa(S1), &reply(&t, 0x83, &[], 0), now);
        assert_eq!(error(&mut l).to_string(), "cannot resolve loki: the name has no IPv4 address");
        // No answer for the first candidate: the second is not asked.
        let mut l = lookup("loki", Family::V4, &c, now);
        drain(&mut l);
        l.handle_timeout(now + Duration::from_secs(5));
        drain(&mut l);
        l.handle_timeout(now + Duration::from_secs(10));
        assert_eq!(l.poll_transmit(), None);
        assert!(matches!(error(&mut l), DnsError::Unanswered { gave_up_after: None, .. }));
    }

    #[test]
    fn servfail_everywhere_tries_the_next_candidate() {
        let now = Instant::now();
        let c = ResolvConf::parse(b"nameserver 10.0.0.2\nsearch a.example\noptions attempts:1\n");
        let mut l = lookup("loki", Family::V4, &c, now);
        let t = drain(&mut l).remove(0);
        l.handle_udp(sa(S1), &reply(&t, 0x82, &[], 0), now);
        let t = drain(&mut l).remove(0);
        assert_eq!(qname_of(&t), "loki");
        l.handle_udp(sa(S1), &reply(&t, 0x83, &[], 0), now);
        assert_eq!(
            error(&mut l).to_string(),
            "cannot resolve loki: 10.0.0.2:53 answered SERVFAIL (2 attempts)"
        );
    }

    #[test]
    fn once_one_family_answers_the_other_gets_no_retry() {
        let now = Instant::now();
        let mut l = lookup("loki.example", Family::Any, &conf(&[S1, S2], 5, 2), now);
        let t = drain(&mut l);
        l.handle_udp(sa(S1), &reply(&t[0], 0x80, &["10.0.0.7"], 60), now);
        assert_eq!(l.poll_result(), None, "AAAA still has its first try");
        l.handle_timeout(now + Duration::from_secs(5));
        assert_eq!(l.poll_transmit(), None, "no AAAA retry");
        assert_eq!(addrs(&mut l), ips(&["10.0.0.7"]));
        // Likewise when the deadline comes first.
        let mut l = lookup("loki.example", Family::Any, &conf(&[S1, S2], 5, 2), now);
        l.set_deadline(now + Duration::from_secs(2));
        let t = drain(&mut l);
        l.handle_udp(sa(S1), &reply(&t[1], 0x80, &["2001:db8::7"], 60), now);
        l.handle_timeout(now + Duration::from_secs(2));
        assert_eq!(addrs(&mut l), ips(&["2001:db8::7"]));
    }

    #[test]
    fn query_ids_are_unique_within_a_lookup() {
        let t0 = Instant::now();
        let c = conf(&[S1, S2], 5, 2);
        // 28 pairs of ids per lookup: a collision is expected about every
        // 2 300 lookups if nothing prevents it.
        for seed in 0..10_000 {
            let mut l = Lookup::new("loki.example", Family::Any, &c, &Hosts::default(), seed, t0);
            let mut ids = Vec::new();
            for k in 1..=4 {
                ids.extend(drain(&mut l).iter().map(|t| u16::from_be_bytes([t.bytes[0], t.bytes[1]])));
                l.handle_timeout(t0 + Duration::from_secs(5 * k));
            }
            assert_eq!(ids.len(), 8);
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), 8, "seed {seed}: {ids:?}");
        }
    }

    #[test]
    fn rotate_spreads_the_first_server() {
        let now = Instant::now();
        let c = ResolvConf { rotate: true, ..conf(&[S1, S2, "10.0.0.4:53"], 5, 2) };
        let firsts: std::collections::HashSet<SocketAddr> = (0..32)
            .map(|seed| Lookup::new("x.example", Family::V4, &c, &Hosts::default(), seed, now))
            .map(|mut l| l.poll_transmit().unwrap().server)
            .collect();
        assert_eq!(firsts.len(), 3);
    }
}
