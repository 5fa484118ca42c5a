//! The DNS response parser (`dns::message`) and the lookup state machine
//! (`dns::resolver`) fed what a hostile or broken server could send.
//!
//! Input: `[mode, flags_hi, flags_lo, an, ns, ar, family, cut, bytes...]`.
//! - mode bit 0 clear: `bytes` is the whole message (its id is overwritten
//!   with the lookup's query id when it is fed to the lookup);
//! - mode bit 0 set: the message is a header with the query's id,
//!   `flags_hi | 0x80, flags_lo` and counts `1, an, ns, ar`, then the
//!   query's own question, then `bytes` (so the answer-handling paths are
//!   reached, not only the question check);
//! - mode bit 1: the lookup asks for a name with a search domain
//!   (`loki` + `search example`) instead of `loki.example`;
//! - family: `% 3` = any, IPv4, IPv6; cut: where the TCP answer is split.
//!
//! Invariants:
//! - `Response::parse` never panics; whatever parses has names of at most
//!   255 wire bytes with labels of 1 to 63 lowercase bytes, the header read
//!   back from the bytes, a question unless the answer is an error without
//!   one, no answer records when TC is set;
//! - re-encoded without compression, a parsed response parses to the same
//!   question and records (so every accepted name was read correctly), and
//!   its question is answered by `answers_query` exactly when it is class
//!   IN and type A or AAAA;
//! - `addresses` on the question's name returns only addresses of the
//!   type asked that occur in the records, without duplicates, with a TTL
//!   taken from the records;
//! - `TcpReader` reassembles the framed message whatever the cut;
//! - the lookup accepts the message only if it parses and answers its
//!   query; a truncated answer over UDP makes the next transmit TCP to
//!   the same server; addresses it returns are of the family asked, at
//!   most `MAX_ADDRS`, IPv4 first; and driven by its own timeouts it ends,
//!   within its deadline, in a bounded number of steps and transmits.
#![no_main]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use log_capturer::dns::hosts::Hosts;
use log_capturer::dns::message::{
    tcp_frame, Answer, Name, Qtype, Rcode, Rdata, Response, TcpReader, MAX_LABEL, MAX_NAME_WIRE,
};
use log_capturer::dns::resolv_conf::ResolvConf;
use log_capturer::dns::resolver::{Family, Lookup, Proto, Transmit, MAX_ADDRS};

const S1: &str = "10.0.0.2:53";
const S2: &str = "10.0.0.3:53";

fn check_name(n: &Name) {
    let w = n.wire();
    assert!(w.len() < MAX_NAME_WIRE, "name of {} wire bytes", w.len() + 1);
    let mut i = 0;
    while i < w.len() {
        let len = usize::from(w[i]);
        assert!((1..=MAX_LABEL).contains(&len), "label of {len} bytes");
        let label = &w[i + 1..i + 1 + len];
        assert!(!label.iter().any(u8::is_ascii_uppercase), "name not lowercased: {n}");
        i += 1 + len;
    }
    assert_eq!(i, w.len());
}

/// The response without compression, sections other than the answer
/// dropped.
fn encode(r: &Response, flags: u16) -> Vec<u8> {
    let mut m = r.header.id.to_be_bytes().to_vec();
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&u16::from(r.question.is_some()).to_be_bytes());
    m.extend_from_slice(&(r.answers.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    if let Some(q) = &r.question {
        m.extend_from_slice(q.name.wire());
        m.push(0);
        m.extend_from_slice(&q.qtype.to_be_bytes());
        m.extend_from_slice(&q.qclass.to_be_bytes());
    }
    for rec in &r.answers {
        m.extend_from_slice(rec.name.wire());
        m.push(0);
        let (rtype, data) = match &rec.data {
            Rdata::A(a) => (1u16, a.octets().to_vec()),
            Rdata::Aaaa(a) => (28, a.octets().to_vec()),
            Rdata::Cname(n) => (5, [n.wire(), &[0]].concat()),
        };
        m.extend_from_slice(&rtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&rec.ttl.to_be_bytes());
        m.extend_from_slice(&(data.len() as u16).to_be_bytes());
        m.extend_from_slice(&data);
    }
    m
}

fn check_parse(msg: &[u8]) {
    let Ok(r) = Response::parse(msg) else { return };
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    assert_eq!(r.header.id, u16::from_be_bytes([msg[0], msg[1]]));
    assert_eq!(r.header.tc, flags & 0x0200 != 0);
    assert_eq!(r.header.rcode, Rcode::from_bits(flags as u8));
    assert!(flags & 0x8000 != 0 && flags & 0x7800 == 0, "QR set, opcode QUERY");
    if r.header.tc {
        assert!(r.answers.is_empty(), "records read past TC");
    }
    match &r.question {
        Some(q) => check_name(&q.name),
        None => assert!(!matches!(r.header.rcode, Rcode::NoError | Rcode::NxDomain)),
    }
    for rec in &r.answers {
        check_name(&rec.name);
        if let Rdata::Cname(n) = &rec.data {
            check_name(n);
        }
        assert!(rec.ttl <= i32::MAX as u32);
    }
    let again = Response::parse(&encode(&r, flags)).expect("the re-encoded response parses");
    assert_eq!(again, r, "re-encoded without compression, the response reads otherwise");

    if let Some(q) = &r.question {
        for qtype in [Qtype::A, Qtype::Aaaa] {
            let answers = r.answers_query(r.header.id, &q.name, qtype);
            assert_eq!(answers, q.qtype == qtype.code() && q.qclass == 1);
            assert!(!r.answers_query(r.header.id.wrapping_add(1), &q.name, qtype));
            match r.addresses(&q.name, qtype) {
                Answer::Addresses { addrs, ttl } => {
                    assert!(!addrs.is_empty());
                    for (i, a) in addrs.iter().enumerate() {
                        assert!(!addrs[..i].contains(a), "duplicate {a}");
                        assert_eq!(a.is_ipv4(), qtype == Qtype::A);
                        assert!(r.answers.iter().any(|rec| match rec.data {
                            Rdata::A(x) => IpAddr::V4(x) == *a,
                            Rdata::Aaaa(x) => IpAddr::V6(x) == *a,
                            _ => false,
                        }));
                    }
                    assert!(r.answers.iter().any(|rec| rec.ttl == ttl));
                }
                Answer::NoData | Answer::CnameChainTooLong => {}
            }
        }
    }
}

fn check_tcp_reader(msg: &[u8], cut: usize) {
    let Some(framed) = tcp_frame(msg) else { return };
    let cut = cut.min(framed.len());
    let mut r = TcpReader::new();
    let n = r.push(&framed[..cut]);
    assert_eq!(n, cut);
    let n2 = r.push(&framed[cut..]);
    assert_eq!(n + n2, framed.len());
    assert_eq!(r.message(), Some(msg));
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The server's message with the id (and, in mode 1, header and question)
/// of `query`.
fn message_for(query: &[u8], ctl: &[u8; 8], bytes: &[u8]) -> Vec<u8> {
    if ctl[0] & 1 == 0 {
        let mut m = bytes.to_vec();
        if m.len() >= 2 {
            m[..2].copy_from_slice(&query[..2]);
        }
        return m;
    }
    let mut m = query[..2].to_vec();
    m.extend_from_slice(&[ctl[1] | 0x80, ctl[2], 0, 1, 0, ctl[3], 0, ctl[4], 0, ctl[5]]);
    m.extend_from_slice(&query[12..]);
    m.extend_from_slice(bytes);
    m
}

fn query_of(t: &Transmit) -> &[u8] {
    match t.proto {
        Proto::Udp => &t.bytes,
        Proto::Tcp => &t.bytes[2..],
    }
}

fn check_lookup(ctl: &[u8; 8], bytes: &[u8]) {
    let family = [Family::Any, Family::V4, Family::V6][usize::from(ctl[6] % 3)];
    let conf = ResolvConf {
        nameservers: vec![sa(S1), sa(S2)],
        search: vec![Name::from_text("example").unwrap()],
        timeout: Duration::from_secs(5),
        attempts: 2,
        ..ResolvConf::default()
    };
    let name = if ctl[0] & 2 == 0 { "loki.example" } else { "loki" };
    let t0 = Instant::now();
    let mut l = Lookup::new(name, family, &conf, &Hosts::default(), 7, t0);
    let deadline = l.deadline();
    assert!(deadline <= t0 + Duration::from_secs(20));
    let first: Vec<Transmit> = std::iter::from_fn(|| l.poll_transmit()).collect();
    assert!(!first.is_empty() && first.len() <= 2);
    let t = &first[0];
    let msg = message_for(query_of(t), ctl, bytes);
    let accepted = l.handle_udp(sa(S1), &msg, t0);
    let parsed = Response::parse(&msg);
    if accepted {
        let r = parsed.as_ref().expect("accepted a message that does not parse");
        let q = Response::parse(&[&query_of(t)[..2], &[0x80, 0], &query_of(t)[4..]].concat()).unwrap();
        let q = q.question.unwrap();
        let qtype = Qtype::from_code(q.qtype).unwrap();
        assert!(r.answers_query(r.header.id, &q.name, qtype), "accepted an answer to another question");
    }
    let mut now = t0;
    let mut steps = 0;
    let mut tcp_fed = false;
    let mut sent = first.len();
    loop {
        steps += 1;
        assert!(steps < 200, "lookup did not end");
        let transmits: Vec<Transmit> = std::iter::from_fn(|| l.poll_transmit()).collect();
        // Per candidate (2) and record type (2): 2 servers × 2 attempts,
        // each perhaps UDP then TCP.
        sent += transmits.len();
        assert!(sent <= 32, "{sent} transmits");
        for tr in &transmits {
            if accepted && !tcp_fed && parsed.as_ref().is_ok_and(|r| r.header.tc) {
                assert_eq!((tr.proto, tr.server), (Proto::Tcp, sa(S1)), "TC must go to TCP");
            }
            if tr.proto == Proto::Tcp && !tcp_fed {
                tcp_fed = true;
                let m = message_for(query_of(tr), ctl, bytes);
                if let Some(framed) = tcp_frame(&m) {
                    let cut = usize::from(ctl[7]).min(framed.len());
                    l.handle_tcp(tr.exchange, &framed[..cut], now);
                    l.handle_tcp(tr.exchange, &framed[cut..], now);
                } else {
                    l.handle_tcp_closed(tr.exchange, now);
                }
            }
        }
        if let Some(result) = l.poll_result() {
            if let Ok(r) = result {
                assert!(!r.addrs.is_empty() && r.addrs.len() <= MAX_ADDRS);
                assert!(r.addrs.windows(2).all(|w| !(w[0].is_ipv6() && w[1].is_ipv4())), "IPv4 first");
                match family {
                    Family::V4 => assert!(r.addrs.iter().all(IpAddr::is_ipv4)),
                    Family::V6 => assert!(r.addrs.iter().all(IpAddr::is_ipv6)),
                    Family::Any => {}
                }
            }
            assert!(now <= deadline, "ended after its deadline");
            assert_eq!(l.poll_timeout(), None);
            return;
        }
        let next = l.poll_timeout().expect("no result and no timeout");
        assert!(next <= deadline, "a wait past the deadline");
        now = now.max(next);
        l.handle_timeout(now);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = common::Ctrl::new(data);
    let mut ctl = [0u8; 8];
    for b in &mut ctl {
        *b = c.u8();
    }
    let bytes = c.rest();
    check_parse(bytes);
    check_tcp_reader(bytes, usize::from(ctl[7]));
    if ctl[0] & 1 == 1 {
        // The message as the lookup will see it, with a stand-in query.
        let q = log_capturer::dns::message::build_query(
            0x1234,
            &Name::from_text("loki.example").unwrap(),
            Qtype::A,
        );
        check_parse(&message_for(&q, &ctl, bytes));
    }
    check_lookup(&ctl, bytes);
});
