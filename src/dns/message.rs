//! The DNS wire format (RFC 1035 §4), as much of it as a stub resolver
//! asking for A and AAAA records needs: build one query, parse a response,
//! follow the CNAME chain inside its answer section, and the 2-byte length
//! prefix of DNS over TCP.
//!
//! Parsing never trusts the packet: every read is bounds-checked, a
//! compression pointer must point before itself (so pointer chasing always
//! ends) and at most [`MAX_POINTERS`] are followed per name, names are at
//! most 255 bytes on the wire, labels at most 63, and a CNAME chain is
//! followed at most [`MAX_CNAME_CHAIN`] links.
//!
//! Not supported: EDNS(0) (queries carry no OPT record, so a UDP answer is
//! at most 512 bytes and a bigger one comes back truncated and is asked
//! again over TCP, as RFC 1035 intends), DNSSEC, record types other than A,
//! AAAA and CNAME (skipped), classes other than IN (skipped).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Header length.
pub const HEADER_LEN: usize = 12;
/// Longest name on the wire, length bytes and terminating zero included.
pub const MAX_NAME_WIRE: usize = 255;
/// Longest label.
pub const MAX_LABEL: usize = 63;
/// Compression pointers followed while reading one name. Real servers use
/// one (a name's suffix points at an earlier name); a few allow for a
/// pointer to a name that itself ends in a pointer.
pub const MAX_POINTERS: usize = 16;
/// CNAME links followed from the question's name to its addresses.
/// Recursive resolvers give up at 8 to 16; chains in the wild are 1 to 3.
pub const MAX_CNAME_CHAIN: usize = 8;
/// The largest message over TCP (the length prefix is 16 bits).
pub const MAX_TCP_MESSAGE: usize = u16::MAX as usize;
/// The largest answer over UDP to a query without EDNS(0).
pub const MAX_UDP_MESSAGE: usize = 512;

const CLASS_IN: u16 = 1;
const TYPE_CNAME: u16 = 5;

/// The record types a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qtype {
    A,
    Aaaa,
}

impl Qtype {
    pub fn code(self) -> u16 {
        match self {
            Self::A => 1,
            Self::Aaaa => 28,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(Self::A),
            28 => Some(Self::Aaaa),
            _ => None,
        }
    }
}

impl fmt::Display for Qtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::A => "A",
            Self::Aaaa => "AAAA",
        })
    }
}

/// The response code of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
    Other(u8),
}

impl Rcode {
    pub fn from_bits(b: u8) -> Self {
        match b & 0x0f {
            0 => Self::NoError,
            1 => Self::FormErr,
            2 => Self::ServFail,
            3 => Self::NxDomain,
            4 => Self::NotImp,
            5 => Self::Refused,
            n => Self::Other(n),
        }
    }
}

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoError => f.write_str("NOERROR"),
            Self::FormErr => f.write_str("FORMERR"),
            Self::ServFail => f.write_str("SERVFAIL"),
            Self::NxDomain => f.write_str("NXDOMAIN"),
            Self::NotImp => f.write_str("NOTIMP"),
            Self::Refused => f.write_str("REFUSED"),
            Self::Other(n) => write!(f, "RCODE {n}"),
        }
    }
}

/// Why a host name given to the resolver cannot be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Empty,
    /// Two dots in a row, or a leading dot.
    EmptyLabel,
    LabelTooLong {
        len: usize,
    },
    TooLong {
        len: usize,
    },
    /// Host names are letters, digits, `-` and `_` (internationalised names
    /// must be given in their `xn--` form).
    BadByte {
        byte: u8,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the name is empty"),
            Self::EmptyLabel => f.write_str("the name has an empty label (two dots in a row?)"),
            Self::LabelTooLong { len } => {
                write!(f, "a label is {len} bytes long; DNS allows at most {MAX_LABEL}")
            }
            Self::TooLong { len } => {
                write!(f, "the name is {len} bytes on the wire; DNS allows at most {MAX_NAME_WIRE}")
            }
            Self::BadByte { byte } => write!(
                f,
                "the name holds {:?}; host names are letters, digits, '-' and '_' \
                 (an internationalised name must be given in its xn-- form)",
                char::from(*byte)
            ),
        }
    }
}

impl std::error::Error for NameError {}

/// A domain name in uncompressed wire form (length-prefixed labels, no
/// terminating zero), ASCII-lowercased so that equality is DNS equality.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Name {
    wire: Vec<u8>,
}

impl Name {
    /// A host name as text: labels of letters, digits, `-` and `_`
    /// separated by dots; one trailing dot is allowed and ignored (whether
    /// the name is absolute is the resolver's business).
    pub fn from_text(text: &str) -> Result<Self, NameError> {
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        let mut wire = Vec::with_capacity(text.len() + 1);
        for label in text.split('.') {
            if label.is_empty() {
                return Err(NameError::EmptyLabel);
            }
            if label.len() > MAX_LABEL {
                return Err(NameError::LabelTooLong { len: label.len() });
            }
            if let Some(&byte) =
                label.as_bytes().iter().find(|b| !(b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_'))
            {
                return Err(NameError::BadByte { byte });
            }
            wire.push(label.len() as u8);
            wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
        if wire.len() + 1 > MAX_NAME_WIRE {
            return Err(NameError::TooLong { len: wire.len() + 1 });
        }
        Ok(Self { wire })
    }

    /// This name with `suffix` appended (a search domain).
    pub fn join(&self, suffix: &Name) -> Result<Self, NameError> {
        let len = self.wire.len() + suffix.wire.len() + 1;
        if len > MAX_NAME_WIRE {
            return Err(NameError::TooLong { len });
        }
        let mut wire = self.wire.clone();
        wire.extend_from_slice(&suffix.wire);
        Ok(Self { wire })
    }

    /// Number of labels.
    pub fn labels(&self) -> usize {
        self.label_iter().count()
    }

    /// The wire form, uncompressed, without the terminating zero.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    fn label_iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.wire[..];
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let (label, tail) = tail.split_at(usize::from(len));
            rest = tail;
            Some(label)
        })
    }
}

/// Dotted text; bytes other than letters, digits, `-` and `_` (possible
/// in names read from a packet) are escaped as `\DDD`.
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, label) in self.label_iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            for &b in label {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                    write!(f, "{}", char::from(b))?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

/// A query for `name`'s `qtype` records: one question, class IN, recursion
/// desired, no EDNS(0). `id` must be unpredictable (it and the UDP source
/// port are all that stands between a stub resolver and a spoofed answer).
pub fn build_query(id: u16, name: &Name, qtype: Qtype) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + name.wire.len() + 5);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00]); // RD
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QD 1, AN NS AR 0
    out.extend_from_slice(&name.wire);
    out.push(0);
    out.extend_from_slice(&qtype.code().to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

/// `message` with the 2-byte length prefix of DNS over TCP (RFC 1035
/// §4.2.2). `None` if it is too long to frame.
pub fn tcp_frame(message: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(message.len()).ok()?;
    let mut out = Vec::with_capacity(2 + message.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Some(out)
}

/// Reassembles one length-prefixed message from a TCP stream, whatever the
/// reads cut it into. Holds at most 2 + 65 535 bytes.
#[derive(Debug, Default, Clone)]
pub struct TcpReader {
    prefix: [u8; 2],
    have_prefix: u8,
    message: Vec<u8>,
}

impl TcpReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Take bytes from `input`, never past the end of the one message;
    /// returns how many were taken.
    pub fn push(&mut self, input: &[u8]) -> usize {
        let mut taken = 0;
        while self.have_prefix < 2 && taken < input.len() {
            self.prefix[usize::from(self.have_prefix)] = input[taken];
            self.have_prefix += 1;
            taken += 1;
        }
        if self.have_prefix < 2 {
            return taken;
        }
        let want = usize::from(u16::from_be_bytes(self.prefix)) - self.message.len();
        let n = want.min(input.len() - taken);
        self.message.extend_from_slice(&input[taken..taken + n]);
        taken + n
    }

    /// The message, once all of it has arrived.
    pub fn message(&self) -> Option<&[u8]> {
        (self.have_prefix == 2 && self.message.len() == usize::from(u16::from_be_bytes(self.prefix)))
            .then_some(&self.message[..])
    }
}

/// Why a packet is not a usable DNS response. Offsets are from the start of
/// the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    /// The message ends before the structure it announces.
    Truncated { at: usize },
    /// The QR bit is clear: a query, not a response.
    NotResponse,
    /// An opcode other than QUERY.
    Opcode(u8),
    /// Not exactly one question, where one is required.
    QuestionCount(u16),
    /// A compression pointer to itself or beyond, or more than
    /// [`MAX_POINTERS`] of them in one name.
    BadPointer { at: usize },
    /// A label type other than a length or a pointer (0x40 and 0x80 are
    /// reserved or obsolete).
    LabelType { at: usize },
    /// A name longer than 255 bytes once uncompressed.
    NameTooLong { at: usize },
    /// An A record whose data is not 4 bytes, AAAA not 16, or a CNAME whose
    /// name does not fill its data exactly.
    BadRdata { at: usize, rtype: u16 },
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { at } => write!(f, "message truncated at byte {at}"),
            Self::NotResponse => f.write_str("a query where a response was expected"),
            Self::Opcode(op) => write!(f, "unexpected opcode {op}"),
            Self::QuestionCount(n) => write!(f, "{n} questions where 1 was expected"),
            Self::BadPointer { at } => write!(f, "bad compression pointer at byte {at}"),
            Self::LabelType { at } => write!(f, "unknown label type at byte {at}"),
            Self::NameTooLong { at } => write!(f, "name longer than 255 bytes at byte {at}"),
            Self::BadRdata { at, rtype } => write!(f, "malformed type {rtype} record data at byte {at}"),
        }
    }
}

impl std::error::Error for MessageError {}

/// The header fields a stub resolver acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    /// Authoritative answer.
    pub aa: bool,
    /// Truncated: the answer did not fit; ask again over TCP.
    pub tc: bool,
    /// Recursion available.
    pub ra: bool,
    pub rcode: Rcode,
}

/// The question a response echoes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
}

/// The data of an answer record this resolver uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(Name),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    /// Seconds; values with the top bit set count as 0 (RFC 2181 §8).
    pub ttl: u32,
    pub data: Rdata,
}

/// A parsed response: header, the echoed question (absent only in the
/// error answers some servers send without one), and the class IN A, AAAA
/// and CNAME records of the answer section. The authority and additional
/// sections are checked for structure and otherwise ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub header: Header,
    pub question: Option<Question>,
    pub answers: Vec<Record>,
}

/// What the answer section says about a question's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The addresses, in the server's order, and the smallest TTL along
    /// the way (CNAME links included).
    Addresses { addrs: Vec<IpAddr>, ttl: u32 },
    /// The name (or the end of its CNAME chain) has no record of that type.
    NoData,
    /// The CNAME chain is longer than [`MAX_CNAME_CHAIN`] or loops.
    CnameChainTooLong,
}

impl Response {
    /// Parse a response. With the TC bit set only the header and question
    /// are read: the rest may be cut anywhere and is asked again over TCP.
    pub fn parse(msg: &[u8]) -> Result<Self, MessageError> {
        if msg.len() < HEADER_LEN {
            return Err(MessageError::Truncated { at: msg.len() });
        }
        let flags = u16::from_be_bytes([msg[2], msg[3]]);
        if flags & 0x8000 == 0 {
            return Err(MessageError::NotResponse);
        }
        let opcode = ((flags >> 11) & 0x0f) as u8;
        if opcode != 0 {
            return Err(MessageError::Opcode(opcode));
        }
        let header = Header {
            id: u16::from_be_bytes([msg[0], msg[1]]),
            aa: flags & 0x0400 != 0,
            tc: flags & 0x0200 != 0,
            ra: flags & 0x0080 != 0,
            rcode: Rcode::from_bits(flags as u8),
        };
        let count = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
        let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
        let mut pos = HEADER_LEN;
        let question = match qd {
            1 => {
                let (name, next) = read_name(msg, pos)?;
                let fixed = slice(msg, next, 4)?;
                pos = next + 4;
                Some(Question {
                    name,
                    qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
                    qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
                })
            }
            // Some servers answer FORMERR, SERVFAIL, NOTIMP or REFUSED
            // without echoing the question.
            0 if !matches!(header.rcode, Rcode::NoError | Rcode::NxDomain) => None,
            n => return Err(MessageError::QuestionCount(n)),
        };
        let mut answers = Vec::new();
        if header.tc {
            return Ok(Self { header, question, answers });
        }
        for i in 0..u32::from(an) + u32::from(ns) + u32::from(ar) {
            let (record, next) = read_record(msg, pos)?;
            pos = next;
            if i < u32::from(an) {
                answers.extend(record);
            }
        }
        Ok(Self { header, question, answers })
    }

    /// Whether this is the answer to the query `id` for `name` and `qtype`:
    /// anything else is stray or spoofed and must be ignored.
    pub fn answers_query(&self, id: u16, name: &Name, qtype: Qtype) -> bool {
        self.header.id == id
            && match &self.question {
                Some(q) => q.name == *name && q.qtype == qtype.code() && q.qclass == CLASS_IN,
                None => !matches!(self.header.rcode, Rcode::NoError | Rcode::NxDomain),
            }
    }

    /// Follow `name`'s CNAME chain through the answer section to its
    /// `qtype` records. Records for names off the chain are ignored.
    pub fn addresses(&self, name: &Name, qtype: Qtype) -> Answer {
        let mut current = name;
        let mut ttl = u32::MAX;
        for _ in 0..=MAX_CNAME_CHAIN {
            let mut addrs = Vec::new();
            let mut min = ttl;
            for r in self.answers.iter().filter(|r| r.name == *current) {
                let addr = match (&r.data, qtype) {
                    (Rdata::A(a), Qtype::A) => IpAddr::V4(*a),
                    (Rdata::Aaaa(a), Qtype::Aaaa) => IpAddr::V6(*a),
                    _ => continue,
                };
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
                min = min.min(r.ttl);
            }
            if !addrs.is_empty() {
                return Answer::Addresses { addrs, ttl: min };
            }
            let next = self.answers.iter().find_map(|r| match &r.data {
                Rdata::Cname(target) if r.name == *current => Some((target, r.ttl)),
                _ => None,
            });
            match next {
                Some((target, t)) => {
                    current = target;
                    ttl = ttl.min(t);
                }
                None => return Answer::NoData,
            }
        }
        Answer::CnameChainTooLong
    }
}

fn slice(msg: &[u8], at: usize, len: usize) -> Result<&[u8], MessageError> {
    msg.get(at..at.checked_add(len).ok_or(MessageError::Truncated { at })?)
        .ok_or(MessageError::Truncated { at: msg.len() })
}

/// Read a possibly compressed name at `start`; returns it and the offset
/// just after it in the original position (after the first pointer, if
/// any).
pub fn read_name(msg: &[u8], start: usize) -> Result<(Name, usize), MessageError> {
    let mut wire = Vec::new();
    let mut pos = start;
    let mut end = None;
    let mut pointers = 0;
    loop {
        let &len = msg.get(pos).ok_or(MessageError::Truncated { at: msg.len() })?;
        match len & 0xc0 {
            0x00 if len == 0 => break,
            0x00 => {
                let label = slice(msg, pos + 1, usize::from(len))?;
                if wire.len() + 1 + label.len() + 1 > MAX_NAME_WIRE {
                    return Err(MessageError::NameTooLong { at: pos });
                }
                wire.push(len);
                wire.extend(label.iter().map(u8::to_ascii_lowercase));
                pos += 1 + label.len();
            }
            0xc0 => {
                let low = *msg.get(pos + 1).ok_or(MessageError::Truncated { at: msg.len() })?;
                let target = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                pointers += 1;
                // Only backwards, so that chasing always ends.
                if target >= pos || pointers > MAX_POINTERS {
                    return Err(MessageError::BadPointer { at: pos });
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return Err(MessageError::LabelType { at: pos }),
        }
    }
    Ok((Name { wire }, end.unwrap_or(pos + 1)))
}

/// Read one resource record at `pos`; returns it if it is a class IN A,
/// AAAA or CNAME record, and the offset after it.
fn read_record(msg: &[u8], pos: usize) -> Result<(Option<Record>, usize), MessageError> {
    let (name, pos) = read_name(msg, pos)?;
    let fixed = slice(msg, pos, 10)?;
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let class = u16::from_be_bytes([fixed[2], fixed[3]]);
    let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let at = pos + 10;
    let rdata = slice(msg, at, rdlen)?;
    let end = at + rdlen;
    let bad = MessageError::BadRdata { at, rtype };
    if class != CLASS_IN {
        return Ok((None, end));
    }
    let data = match rtype {
        1 => Rdata::A(<[u8; 4]>::try_from(rdata).map_err(|_| bad)?.into()),
        28 => Rdata::Aaaa(<[u8; 16]>::try_from(rdata).map_err(|_| bad)?.into()),
        TYPE_CNAME => {
            // The target may point anywhere earlier in the message, but its
            // own bytes must lie inside the record data.
            let (target, next) = read_name(&msg[..end], at).map_err(|e| match e {
                MessageError::Truncated { .. } => bad,
                e => e,
            })?;
            if next != end {
                return Err(bad);
            }
            Rdata::Cname(target)
        }
        _ => return Ok((None, end)),
    };
    Ok((Some(Record { name, ttl, data }), end))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_text(s).unwrap()
    }

    /// Builds responses by hand, compression pointers written explicitly.
    pub(crate) struct Packet(pub Vec<u8>);

    impl Packet {
        /// Header with the given id, flags (QR is added) and counts, then
        /// the question `qname`/`qtype` uncompressed at offset 12.
        pub fn response(id: u16, flags: u16, counts: [u16; 4], qname: &str, qtype: u16) -> Self {
            let mut p = Vec::new();
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&(flags | 0x8000).to_be_bytes());
            for c in counts {
                p.extend_from_slice(&c.to_be_bytes());
            }
            let mut pk = Self(p);
            if counts[0] > 0 {
                pk.name(qname);
                pk.u16(qtype).u16(1);
            }
            pk
        }
        pub fn name(&mut self, s: &str) -> &mut Self {
            for l in s.split('.').filter(|l| !l.is_empty()) {
                self.0.push(l.len() as u8);
                self.0.extend_from_slice(l.as_bytes());
            }
            self.0.push(0);
            self
        }
        /// Labels then a pointer to `to`.
        pub fn name_ptr(&mut self, labels: &str, to: u16) -> &mut Self {
            for l in labels.split('.').filter(|l| !l.is_empty()) {
                self.0.push(l.len() as u8);
                self.0.extend_from_slice(l.as_bytes());
            }
            self.u16(0xc000 | to)
        }
        pub fn u16(&mut self, v: u16) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        pub fn u32(&mut self, v: u32) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        /// Type, class IN, TTL and data after an owner name already written.
        pub fn rr(&mut self, rtype: u16, ttl: u32, data: &[u8]) -> &mut Self {
            self.u16(rtype).u16(1).u32(ttl).u16(data.len() as u16);
            self.0.extend_from_slice(data);
            self
        }
        pub fn a(&mut self, ttl: u32, ip: [u8; 4]) -> &mut Self {
            self.u16(0xc00c).rr(1, ttl, &ip)
        }
        pub fn bytes(&self) -> Vec<u8> {
            self.0.clone()
        }
    }

    #[test]
    fn query_is_byte_exact() {
        let q = build_query(0xbeef, &name("Loki.Example"), Qtype::Aaaa);
        let mut want = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x04loki\x07example\x00\x00\x1c\x00\x01");
        assert_eq!(q, want);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(Name::from_text(""), Err(NameError::Empty));
        assert_eq!(Name::from_text("."), Err(NameError::Empty));
        assert_eq!(Name::from_text("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(Name::from_text(".a"), Err(NameError::EmptyLabel));
        assert_eq!(Name::from_text("a b"), Err(NameError::BadByte { byte: b' ' }));
        assert_eq!(Name::from_text("bücher.de"), Err(NameError::BadByte { byte: 0xc3 }));
        let l63 = "a".repeat(63);
        assert!(Name::from_text(&l63).is_ok());
        assert_eq!(Name::from_text(&"a".repeat(64)), Err(NameError::LabelTooLong { len: 64 }));
        // 4 labels of 63: 4 * 64 + 1 = 257 bytes on the wire.
        let long = [l63.as_str(); 4].join(".");
        assert_eq!(Name::from_text(&long), Err(NameError::TooLong { len: 257 }));
        let fits = format!("{}.{}", [l63.as_str(); 3].join("."), "a".repeat(61));
        assert_eq!(Name::from_text(&fits).unwrap().wire().len() + 1, 255);
        assert_eq!(name("Loki.EXAMPLE.").to_string(), "loki.example");
        assert_eq!(name("_srv-x.a1").labels(), 2);
    }

    #[test]
    fn answer_with_compression_pointers() {
        let mut p = Packet::response(7, 0x0180, [1, 2, 0, 0], "loki.example", 1);
        p.a(300, [10, 0, 0, 1]);
        // Owner "www" + pointer to "example" inside the question.
        p.name_ptr("", 12).rr(1, 60, &[10, 0, 0, 2]);
        let r = Response::parse(&p.bytes()).unwrap();
        assert!(r.answers_query(7, &name("LOKI.example"), Qtype::A));
        assert!(!r.answers_query(8, &name("loki.example"), Qtype::A));
        assert!(!r.answers_query(7, &name("loki.example"), Qtype::Aaaa));
        assert!(!r.answers_query(7, &name("loki.example.org"), Qtype::A));
        assert!(r.header.ra && !r.header.tc && !r.header.aa);
        assert_eq!(
            r.addresses(&name("loki.example"), Qtype::A),
            Answer::Addresses { addrs: vec![[10, 0, 0, 1].into(), [10, 0, 0, 2].into()], ttl: 60 }
        );
        assert_eq!(r.addresses(&name("loki.example"), Qtype::Aaaa), Answer::NoData);
    }

    #[test]
    fn pointer_to_a_suffix() {
        let mut p = Packet::response(1, 0, [1, 1, 0, 0], "loki.example", 1);
        // "www" + pointer to offset 17: the "example" label of the question.
        p.name_ptr("www", 17).rr(1, 5, &[1, 2, 3, 4]);
        let r = Response::parse(&p.bytes()).unwrap();
        assert_eq!(r.answers[0].name, name("www.example"));
    }

    #[test]
    fn pointer_loops_and_forward_pointers_are_rejected() {
        // A name that is a pointer to itself.
        let mut p = Packet::response(1, 0, [1, 1, 0, 0], "a", 1);
        let at = p.0.len() as u16;
        p.u16(0xc000 | at).rr(1, 5, &[1, 2, 3, 4]);
        assert_eq!(Response::parse(&p.bytes()), Err(MessageError::BadPointer { at: usize::from(at) }));
        // Two pointers pointing at each other: the forward one is refused.
        let mut p = Packet::response(1, 0, [1, 1, 0, 0], "a", 1);
        let at = p.0.len() as u16;
        p.u16(0xc000 | (at + 2)).u16(0xc000 | at);
        assert_eq!(Response::parse(&p.bytes()), Err(MessageError::BadPointer { at: usize::from(at) }));
        // A chain of backward pointers: "b" at 12, then pointer k at
        // 15 + 2k to the one before it (the first to "b").
        let mut m = vec![0u8; 12];
        m.extend_from_slice(b"\x01b\x00");
        for k in 0..=MAX_POINTERS {
            let to = if k == 0 { 12 } else { 15 + 2 * (k - 1) } as u16;
            m.extend_from_slice(&(0xc000 | to).to_be_bytes());
        }
        let last = 15 + 2 * MAX_POINTERS;
        assert_eq!(read_name(&m, last - 2), Ok((name("b"), last)), "MAX_POINTERS pointers are fine");
        assert_eq!(read_name(&m, last), Err(MessageError::BadPointer { at: 15 }), "the 17th pointer");
    }

    #[test]
    fn reserved_label_types_and_long_names_are_rejected() {
        let mut p = Packet::response(1, 0, [1, 0, 0, 0], "a", 1);
        p.0[12] = 0x41;
        assert_eq!(Response::parse(&p.bytes()), Err(MessageError::LabelType { at: 12 }));
        // Labels of 63 bytes, all literal: the fourth makes 257 bytes.
        let mut p = Packet(Packet::response(1, 0, [1, 0, 0, 0], "a", 1).0[..12].to_vec());
        for _ in 0..5 {
            p.0.push(63);
            p.0.extend_from_slice(&[b'x'; 63]);
        }
        p.0.push(0);
        p.u16(1).u16(1);
        assert_eq!(Response::parse(&p.bytes()), Err(MessageError::NameTooLong { at: 12 + 3 * 64 }));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut p = Packet::response(9, 0x0180, [1, 2, 1, 1], "loki.example", 1);
        p.a(300, [10, 0, 0, 1]);
        p.u16(0xc00c).rr(5, 10, b"\x03www\xc0\x11");
        p.name("example").rr(2, 10, b"\x02ns\xc0\x11");
        p.name("").rr(41, 0, b"");
        let whole = p.bytes();
        assert!(Response::parse(&whole).is_ok());
        for cut in 0..whole.len() {
            let r = Response::parse(&whole[..cut]);
            assert!(r.is_err(), "cut at {cut} parsed: {r:?}");
        }
    }

    #[test]
    fn bad_rdata_lengths() {
        let mut p = Packet::response(1, 0, [1, 1, 0, 0], "a", 1);
        p.u16(0xc00c).rr(1, 5, &[1, 2, 3]);
        assert!(matches!(Response::parse(&p.bytes()), Err(MessageError::BadRdata { rtype: 1, .. })));
        let mut p = Packet::response(1, 0, [1, 1, 0, 0], "a", 28);
        p.u16(0xc00c).rr(28, 5, &[0; 4]);
        assert!(matches!(Response::parse(&p.bytes()), Err(MessageError::BadRdata { rtype: 28, .. })));
        // A CNAME whose name runs past its data, or stops short of it.
        let mut p = Packet::response(1, 0, [1, 1, 0, 0], "a", 1);
        p.u16(0xc00c).rr(5, 5, b"\x01b");
        p.0.extend_from_slice(b"\x00");
        assert!(matches!(Response::parse(&p.bytes()), Err(MessageError::BadRdata { rtype: 5, .. })));
        let mut p = Packet::response(1, 0, [1, 1, 0, 0], "a", 1);
        p.u16(0xc00c).rr(5, 5, b"\x01b\x00\x00");
        assert!(matches!(Response::parse(&p.bytes()), Err(MessageError::BadRdata { rtype: 5, .. })));
        // Unknown types and other classes are skipped, whatever their data.
        let mut p = Packet::response(1, 0, [1, 2, 0, 0], "a", 1);
        p.u16(0xc00c).rr(16, 5, b"\x03txt");
        p.u16(0xc00c).u16(1).u16(3).u32(5).u16(3).u16(0).0.push(0);
        assert_eq!(Response::parse(&p.bytes()).unwrap().answers, []);
    }

    #[test]
    fn cname_chain_is_followed() {
        let mut p = Packet::response(2, 0x0180, [1, 4, 0, 0], "loki.example", 28);
        let q = 12;
        // loki.example CNAME lb.example (TTL 30); lb CNAME edge.cdn (TTL 600);
        // an unrelated AAAA for "evil" (off the chain, ignored);
        // edge.cdn AAAA 2001:db8::1 (TTL 120).
        let lb = p.0.len() as u16 + 12;
        p.u16(0xc000 | q).rr(5, 30, b"\x02lb\xc0\x11");
        let edge = p.0.len() as u16 + 12;
        p.u16(0xc000 | lb).rr(5, 600, b"\x04edge\x03cdn\x00");
        p.name("evil").rr(28, 1, &[0xfe; 16]);
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[2] = 0x0d;
        v6[3] = 0xb8;
        v6[15] = 1;
        p.u16(0xc000 | edge).rr(28, 120, &v6);
        let r = Response::parse(&p.bytes()).unwrap();
        assert_eq!(r.answers[0].data, Rdata::Cname(name("lb.example")));
        assert_eq!(r.answers[1].data, Rdata::Cname(name("edge.cdn")));
        assert_eq!(
            r.addresses(&name("loki.example"), Qtype::Aaaa),
            Answer::Addresses { addrs: vec!["2001:db8::1".parse().unwrap()], ttl: 30 }
        );
        // A chain that ends without the type asked for.
        assert_eq!(r.addresses(&name("loki.example"), Qtype::A), Answer::NoData);
    }

    #[test]
    fn cname_loop_is_bounded() {
        let mut p = Packet::response(2, 0x0180, [1, 2, 0, 0], "a", 1);
        p.u16(0xc00c).rr(5, 5, b"\x01b\x00");
        p.name("b").rr(5, 5, b"\x01a\x00");
        let r = Response::parse(&p.bytes()).unwrap();
        assert_eq!(r.addresses(&name("a"), Qtype::A), Answer::CnameChainTooLong);
    }

    #[test]
    fn rcodes_flags_and_questionless_errors() {
        let p = Packet::response(3, 0x0183, [1, 0, 0, 0], "nope.example", 1);
        let r = Response::parse(&p.bytes()).unwrap();
        assert_eq!(r.header.rcode, Rcode::NxDomain);
        let p = Packet::response(3, 0x0105, [0, 0, 0, 0], "", 1);
        let r = Response::parse(&p.bytes()).unwrap();
        assert_eq!((r.header.rcode, r.question.as_ref()), (Rcode::Refused, None));
        assert!(r.answers_query(3, &name("x"), Qtype::A));
        assert!(!r.answers_query(4, &name("x"), Qtype::A));
        // A NOERROR or NXDOMAIN answer must echo the question.
        let p = Packet::response(3, 0x0100, [0, 0, 0, 0], "", 1);
        assert_eq!(Response::parse(&p.bytes()), Err(MessageError::QuestionCount(0)));
        let p = Packet::response(3, 0x0100, [2, 0, 0, 0], "a", 1);
        assert_eq!(Response::parse(&p.bytes()), Err(MessageError::QuestionCount(2)));
        // A query is not a response; nor is an IQUERY/STATUS answer.
        let q = build_query(3, &name("a"), Qtype::A);
        assert_eq!(Response::parse(&q), Err(MessageError::NotResponse));
        let p = Packet::response(3, 0x1000, [1, 0, 0, 0], "a", 1);
        assert_eq!(Response::parse(&p.bytes()), Err(MessageError::Opcode(2)));
    }

    #[test]
    fn truncated_answer_keeps_only_header_and_question() {
        // TC set and the answer cut mid-record: still usable, to go to TCP.
        let mut p = Packet::response(4, 0x0380, [1, 5, 0, 0], "big.example", 1);
        p.a(5, [1, 2, 3, 4]);
        p.0.extend_from_slice(&[0xc0, 0x0c, 0, 1]);
        let r = Response::parse(&p.bytes()).unwrap();
        assert!(r.header.tc && r.answers.is_empty());
        assert!(r.answers_query(4, &name("big.example"), Qtype::A));
    }

    #[test]
    fn ttl_with_top_bit_counts_as_zero() {
        let mut p = Packet::response(1, 0, [1, 1, 0, 0], "a", 1);
        p.a(0x8000_0000, [1, 1, 1, 1]);
        let r = Response::parse(&p.bytes()).unwrap();
        assert_eq!(r.answers[0].ttl, 0);
    }

    #[test]
    fn tcp_framing_at_every_split() {
        let msg: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        let framed = tcp_frame(&msg).unwrap();
        assert_eq!(&framed[..2], &[1, 44]);
        let mut next = framed.clone();
        next.extend_from_slice(b"next");
        for cut in 0..=next.len() {
            let mut r = TcpReader::new();
            let n1 = r.push(&next[..cut]);
            let n2 = r.push(&next[n1..]);
            assert_eq!(n1 + n2, framed.len(), "cut {cut}: stops at the message's end");
            assert_eq!(r.message(), Some(&msg[..]), "cut {cut}");
        }
        let mut r = TcpReader::new();
        for b in framed.chunks(1).take(framed.len() - 1) {
            assert_eq!(r.push(b), 1);
            assert_eq!(r.message(), None);
        }
        assert!(tcp_frame(&vec![0; 65536]).is_none());
        let mut r = TcpReader::new();
        assert_eq!(r.push(&[0, 0, 9]), 2);
        assert_eq!(r.message(), Some(&[][..]));
    }
}
