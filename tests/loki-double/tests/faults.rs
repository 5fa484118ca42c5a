//! Every injected fault, its matcher and its count.

mod common;

use std::io;
use std::time::{Duration, Instant};

use common::*;
use loki_double::{Config, Double, Fault, Match, Reason};

fn double() -> Double {
    Double::start(Config::default()).expect("start the double")
}

fn batch(line: &str) -> Vec<(&'static str, Vec<E>)> {
    vec![(r#"{a="b"}"#, vec![e(now_ns(), line)])]
}

#[test]
fn rate_limited_with_retry_after_stores_nothing_then_recovers() {
    let d = double();
    d.inject(Match::Push, Fault::RateLimited { retry_after: Some(7) }, 2);
    d.inject(Match::Push, Fault::RateLimited { retry_after: None }, 1);
    let mut c = Client::plain(d.addr());
    for _ in 0..2 {
        let r = c.push_pb(&batch("x"));
        assert_eq!((r.status, r.get("retry-after")), (429, Some("7")));
        assert!(r.text().starts_with("Ingestion rate limit exceeded"), "{}", r.text());
    }
    let r = c.push_pb(&batch("x"));
    assert_eq!((r.status, r.get("retry-after")), (429, None));
    assert_eq!(d.stats().entries_stored, 0);
    // Used up: the same connection gets a normal answer.
    assert_eq!(c.push_pb(&batch("x")).status, 204);
    let s = d.stats();
    assert_eq!((s.status(429), s.faults_fired, s.entries_stored), (3, 3, 1));
    assert!(d.pending_faults().is_empty());
}

#[test]
fn statuses_store_nothing() {
    let d = double();
    for status in [500, 503, 401, 403, 404, 413] {
        d.inject(Match::Push, Fault::Status(status), 1);
    }
    let mut c = Client::plain(d.addr());
    for status in [500, 503, 401, 403, 404, 413] {
        let r = c.push_pb(&batch("x"));
        assert_eq!(r.status, status);
        assert!(!r.body.is_empty());
    }
    assert_eq!(c.push_pb(&batch("x")).status, 204);
    let s = d.stats();
    assert_eq!((s.entries_stored, s.faults_fired), (1, 6));
    assert_eq!(d.requests().iter().filter(|r| r.fault.is_some()).count(), 6);
}

#[test]
fn never_answer_holds_the_socket() {
    let d = double();
    d.inject(Match::Push, Fault::NeverAnswer, 1);
    let mut mute = Client::plain(d.addr());
    mute.post(&snappy(&protobuf(&batch("lost"))), &[]).unwrap();
    assert!(d.wait_until(WAIT, |s| s.faults_fired == 1));
    assert!(mute.silent_for(Duration::from_millis(300)));
    // Another connection is served meanwhile.
    let mut c = Client::plain(d.addr());
    assert_eq!(c.push_pb(&batch("kept")).status, 204);
    let s = d.stats();
    assert_eq!((s.connections_open, s.entries_stored), (2, 1));
    assert_eq!(d.requests()[0].status, 0);
    // The client giving up closes it.
    drop(mute);
    assert!(d.wait_until(WAIT, |s| s.connections_open == 1));
}

#[test]
fn slow_body_dribbles_after_storing() {
    let d = double();
    let every = Duration::from_millis(40);
    d.inject(Match::Push, Fault::SlowBody { len: 5, every }, 1);
    let mut c = Client::plain(d.addr());
    let t0 = Instant::now();
    c.post(&snappy(&protobuf(&batch("stored"))), &[]).unwrap();
    let (status, _) = c.head().unwrap();
    assert_eq!(status, 200);
    assert!(t0.elapsed() < every * 5);
    // The push was stored before the body began.
    assert_eq!(d.stats().entries_stored, 1);
    assert!(c.silent_for(every / 4));
    let body = c.read_n(5).unwrap();
    assert!(t0.elapsed() >= every * 5, "{:?}", t0.elapsed());
    assert_eq!(body, b".....");
    // The connection stays usable.
    assert_eq!(c.push_pb(&batch("next")).status, 204);
}

#[test]
fn slow_response_dribbles_the_whole_answer() {
    let d = double();
    let every = Duration::from_millis(5);
    d.inject(Match::Push, Fault::SlowResponse { every }, 1);
    let mut c = Client::plain(d.addr());
    let t0 = Instant::now();
    let r = c.push_pb(&batch("x"));
    assert_eq!(r.status, 204);
    // "HTTP/1.1 204 No Content\r\nDate: ...\r\n\r\n" is over 60 bytes.
    assert!(t0.elapsed() >= every * 60, "{:?}", t0.elapsed());
    assert_eq!(d.stats().entries_stored, 1);
}

#[test]
fn reset_mid_response_after_or_before_storing() {
    let d = double();
    d.inject(Match::Push, Fault::ResetMidResponse { stored: true }, 1);
    d.inject(Match::Push, Fault::ResetMidResponse { stored: false }, 1);
    for (line, stored) in [("answer lost", 1), ("never stored", 1)] {
        let mut c = Client::plain(d.addr());
        c.post(&snappy(&protobuf(&batch(line))), &[]).unwrap();
        let (bytes, end) = c.rest();
        // Half a head: a status line, never the blank line that ends it.
        assert!(bytes.starts_with(b"HTTP/1.1 2") && !bytes.windows(4).any(|w| w == b"\r\n\r\n"), "{bytes:?}");
        let err = end.expect_err("the connection is reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(d.stats().entries_stored, stored);
    }
    assert_eq!(d.entries()[0].line, b"answer lost");
    assert!(d.stats().requests_by_status.is_empty());
}

#[test]
fn reject_lines_refuses_marked_entries_and_stores_the_rest() {
    let d = double();
    d.inject(
        Match::Push,
        Fault::RejectLines { marker: "BAD".into(), reason: Reason::GreaterThanMaxSampleAge },
        1,
    );
    let t = now_ns();
    let mut c = Client::plain(d.addr());
    let r = c.push_pb(&[(r#"{a="b"}"#, vec![e(t, "ok 1"), e(t + 1, "a BAD line"), e(t + 2, "ok 2")])]);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("has timestamp too old"), "{}", r.text());
    let lines: Vec<String> = d.entries().iter().map(|e| e.line_str().into_owned()).collect();
    assert_eq!(lines, ["ok 1", "ok 2"]);
    assert_eq!(d.stats().rejected(Reason::GreaterThanMaxSampleAge), 1);
    // Once only: the marker passes now.
    assert_eq!(c.push_pb(&[(r#"{a="b"}"#, vec![e(t + 3, "a BAD line")])]).status, 204);
}

#[test]
fn matchers_pick_their_requests() {
    let d = double();
    d.inject(Match::LineContains("target".into()), Fault::Status(503), 1);
    d.inject(Match::Tenant("t2".into()), Fault::Status(500), 1);
    d.inject(Match::Any, Fault::Status(404), 1);
    let mut c = Client::plain(d.addr());
    let body = |l: &str| snappy(&protobuf(&batch(l)));
    // Any takes the first request whatever it is: a GET /ready.
    c.send_raw(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(c.response().unwrap().status, 404);
    assert_eq!(c.push(&body("other"), &[("X-Scope-OrgID", "t1")]).status, 204);
    assert_eq!(c.push(&body("other"), &[("X-Scope-OrgID", "t2")]).status, 500);
    assert_eq!(c.push(&body("the target line"), &[]).status, 503);
    assert_eq!(c.push(&body("the target line"), &[]).status, 204);
    assert_eq!(d.stats().faults_fired, 3);
}

#[test]
fn drop_connections_closes_every_client() {
    let d = double();
    let mut a = Client::plain(d.addr());
    let mut b = Client::plain(d.addr());
    assert_eq!(a.push_pb(&batch("x")).status, 204);
    assert_eq!(b.push_pb(&batch("y")).status, 204);
    d.drop_connections();
    assert!(d.wait_until(WAIT, |s| s.connections_open == 0));
    assert!(a.rest().0.is_empty());
    let mut c = Client::plain(d.addr());
    assert_eq!(c.push_pb(&batch("z")).status, 204);
}

#[test]
fn an_outage_refuses_connections_then_the_same_port_serves_again() {
    let d = double();
    let mut a = Client::plain(d.addr());
    let ts = now_ns();
    let b1 = vec![(r#"{a="b"}"#, vec![e(ts, "x")])];
    assert_eq!(a.push_pb(&b1).status, 204);
    d.outage();
    assert!(d.wait_until(WAIT, |s| s.connections_open == 0));
    assert!(a.rest().0.is_empty(), "the open connection was closed");
    let refused = std::net::TcpStream::connect(d.addr()).map_err(|e| e.kind());
    assert_eq!(refused.err(), Some(io::ErrorKind::ConnectionRefused));
    d.resume().unwrap();
    let mut c = Client::plain(d.addr());
    // The same entry again: stored once, arrived twice.
    assert_eq!(c.push_pb(&b1).status, 204);
    let s = d.stats();
    assert_eq!((s.entries_stored, s.duplicates_dropped), (1, 1));
    let arrivals = d.arrivals();
    assert_eq!(arrivals.get(&(r#"{a="b"}"#.to_owned(), ts, b"x".to_vec())), Some(&2));
    // A 429 stores nothing and counts no arrival.
    d.inject(Match::Push, Fault::RateLimited { retry_after: None }, 1);
    let b2 = vec![(r#"{a="b"}"#, vec![e(ts + 1, "y")])];
    assert_eq!(c.push_pb(&b2).status, 429);
    assert!(!d.arrivals().contains_key(&(r#"{a="b"}"#.to_owned(), ts + 1, b"y".to_vec())));
    let reqs = d.requests();
    assert!(reqs.windows(2).all(|w| w[0].at <= w[1].at));
}
