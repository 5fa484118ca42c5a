//! Fault injection and daemon restarts.

mod common;

use std::io::{self, Read};
use std::time::{Duration, Instant};

use common::*;
use docker_double::{Config, ContainerSpec, Double, Fault, Match, Stream, Writer};

const WAIT: Duration = Duration::from_secs(10);

fn double() -> Double {
    Double::start(Config::in_temp_dir()).expect("start the double")
}

/// Nothing arrives on `c` for `d`.
fn silent_for(c: &mut Client, d: Duration) -> bool {
    c.stream().set_read_timeout(Some(d)).unwrap();
    let mut b = [0u8; 1];
    let r = c.r.read(&mut b);
    c.stream().set_read_timeout(Some(TIMEOUT)).unwrap();
    matches!(r, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

fn rest(c: &mut Client) -> Vec<u8> {
    let mut v = Vec::new();
    match c.r.read_to_end(&mut v) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{e}"),
    }
    v
}

fn logs_path(id: &str, extra: &str) -> String {
    format!("/v1.41/containers/{id}/logs?stdout=1&stderr=1{extra}")
}

#[test]
fn stall_after_headers_and_never_answer() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("s"));
    d.write(&id, Stream::Stdout, b"stored");
    d.inject(Match::Logs, Fault::StallAfterHeaders, 1);
    d.inject(Match::Ping, Fault::NeverAnswer, 1);

    let mut stalled = Client::connect(d.socket());
    stalled.send(&logs_path(&id, "&follow=1"));
    let h = stalled.head();
    assert_eq!((h.status, h.chunked()), (200, true));
    d.write(&id, Stream::Stdout, b"more");
    assert!(silent_for(&mut stalled, Duration::from_millis(300)));
    assert!(d.wait_until(WAIT, |s| s.log_streams_open == 1));

    let mut mute = Client::connect(d.socket());
    mute.send("/_ping");
    assert!(silent_for(&mut mute, Duration::from_millis(300)));

    // Used up: the next ones are normal, and the held sockets stay open.
    let mut c = Client::connect(d.socket());
    assert_eq!(c.get("/_ping").1, b"OK");
    c.send(&logs_path(&id, ""));
    c.head();
    assert_eq!(c.chunks().len(), 2);
    assert_eq!(d.stats().connections_open, 3);
    drop(stalled);
    drop(mute);
    assert!(d.wait_until(WAIT, |s| s.connections_open == 1 && s.log_streams_open == 0));
}

#[test]
fn reset_mid_frame() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("r"));
    let tty = d.create_and_start(ContainerSpec::new("t").tty(true));
    d.inject(Match::LogsOf(id.clone()), Fault::ResetMidFrame, 1);
    let mut c = Client::connect(d.socket());
    c.send(&logs_path(&id, "&follow=1"));
    assert_eq!(c.head().status, 200);
    assert_eq!(c.line().unwrap(), "6c", "a chunk for a 100-byte frame");
    assert_eq!(rest(&mut c), [1, 0, 0, 0, 0], "5 of the 8 header bytes, then the end");

    d.inject(Match::Logs, Fault::ResetMidFrame, 1);
    let mut c = Client::connect(d.socket());
    c.send(&logs_path(&tty, ""));
    c.head();
    let n = usize::from_str_radix(&c.line().unwrap(), 16).unwrap();
    let got = rest(&mut c);
    assert!(!got.is_empty() && got.len() < n, "{} of {n}", got.len());

    d.inject(Match::Inspect, Fault::ResetMidFrame, 1);
    let mut c = Client::connect(d.socket());
    c.send(&format!("/containers/{id}/json"));
    let h = c.head();
    let len: usize = h.get("Content-Length").unwrap().parse().unwrap();
    let got = rest(&mut c);
    assert!(!got.is_empty() && got.len() < len);
}

#[test]
fn malformed_chunk() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("m"));
    d.inject(Match::Logs, Fault::MalformedChunk, 1);
    let mut c = Client::connect(d.socket());
    c.send(&logs_path(&id, ""));
    assert_eq!(c.head().status, 200);
    let err = c.chunk().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    // Some bytes that were meant as chunk data, then the connection ends.
    assert_eq!(rest(&mut c), b"0123456789\r\n");
}

#[test]
fn status_faults_and_counts() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("x"));
    d.inject(Match::Inspect, Fault::Status(500, "boom".into()), 2);
    d.inject(Match::List, Fault::Status(503, "busy".into()), 1);
    d.inject(Match::Any, Fault::Status(404, "gone".into()), 1);
    let mut c = Client::connect(d.socket());
    let (h, b) = c.get(&format!("/containers/{id}/json"));
    assert_eq!(h.status_line, "HTTP/1.1 500 Internal Server Error");
    assert_eq!(b, b"{\"message\":\"boom\"}\n");
    assert_eq!(c.get_json(&format!("/containers/{id}/json")).0, 500);
    assert_eq!(c.get_json("/containers/json").0, 503);
    // Match::Any hits the next request whatever it is.
    assert_eq!(c.get_json("/version").0, 404);
    assert_eq!(c.get_json(&format!("/containers/{id}/json")).0, 200);
    assert_eq!(c.get_json("/containers/json").0, 200);

    d.inject(Match::Events, Fault::Status(500, "x".into()), 1);
    d.clear_faults();
    c.send("/events");
    assert_eq!(c.head().status, 200);
}

#[test]
fn system_error_frame_ends_a_follow_stream() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("e"));
    let other = d.create_and_start(ContainerSpec::new("o"));
    d.write(&id, Stream::Stdout, b"one");
    d.write(&id, Stream::Stdout, b"two");
    d.write(&other, Stream::Stdout, b"other");
    let msg = "Error grabbing logs: invalid character 'x' looking for beginning of value\n";
    d.inject(Match::LogsOf(id.clone()), Fault::SystemErr(msg.into()), 1);

    // Another container's logs are not affected.
    let mut c = Client::connect(d.socket());
    c.send(&logs_path(&other, ""));
    c.head();
    assert_eq!(c.chunks().len(), 1);

    c.send(&logs_path(&id, "&follow=1"));
    c.head();
    let chunks = c.chunks();
    let frames: Vec<_> = chunks.iter().map(|ch| one_frame(ch)).collect();
    assert_eq!(frames, [(1, b"one\n".to_vec()), (1, b"two\n".to_vec()), (3, msg.as_bytes().to_vec())]);
    // The container still runs; the next request follows normally.
    c.send(&logs_path(&id, "&follow=1&tail=0"));
    c.head();
    d.write(&id, Stream::Stdout, b"three");
    assert_eq!(one_frame(&c.chunk().unwrap().unwrap()).1, b"three\n");
}

#[test]
fn close_after_ends_streams_while_running() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("c").writer(Writer::new(100.0)));
    d.inject(Match::Logs, Fault::CloseAfter(Duration::from_millis(300)), 1);
    d.inject(Match::Events, Fault::CloseAfter(Duration::from_millis(200)), 1);
    let t = Instant::now();
    let mut c = Client::connect(d.socket());
    c.send(&logs_path(&id, "&follow=1"));
    c.head();
    let mut n = 0;
    while c.chunk().unwrap().is_some() {
        n += 1;
    }
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
    assert!(n > 5, "lines flowed until the cut: {n}");
    assert_eq!(c.get_json(&format!("/containers/{id}/json")).1["State"]["Running"], true);

    let mut e = Client::connect(d.socket());
    e.send("/events");
    e.head();
    d.pause(&id);
    assert!(e.chunk().unwrap().is_some());
    assert_eq!(e.chunk().unwrap(), None, "events stream cut");
}

#[test]
fn daemon_down_and_up() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("dd").writer(Writer::new(200.0)));
    let mut follow = Client::connect(d.socket());
    follow.send(&logs_path(&id, "&follow=1&tail=0&timestamps=1"));
    follow.head();
    let mut events = Client::connect(d.socket());
    events.send("/events");
    events.head();
    let (_, p) = one_frame(&follow.chunk().unwrap().unwrap());
    let (last_ts, _) = split_ts(&p);
    assert!(d.wait_until(WAIT, |s| s.connections_open == 2));

    d.daemon_down();
    assert!(!d.socket().exists(), "socket file removed");
    assert!(Client::try_connect(d.socket()).is_err());
    assert_eq!(d.stats().connections_open, 0);
    // Abrupt: no terminating chunk, just the end of the connection.
    loop {
        match follow.chunk() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a clean end after daemon_down"),
            Err(_) => break,
        }
    }
    assert!(events.chunk().is_err());

    // The container keeps writing while the daemon is away.
    let before = d.logs(&id).len();
    std::thread::sleep(Duration::from_millis(100));
    assert!(d.logs(&id).len() > before);

    d.daemon_up();
    let mut c = Client::connect(d.socket());
    let (_, v) = c.get_json(&format!("/containers/{id}/json"));
    assert_eq!(v["State"]["Running"], true);
    // Resume from the last timestamp seen: nothing lost.
    let since = format!("&since={}.{:09}", last_ts / 1_000_000_000, last_ts % 1_000_000_000);
    c.send(&logs_path(&id, &format!("&follow=1{since}")));
    c.head();
    let mut seqs = Vec::new();
    for _ in 0..40 {
        let (_, p) = one_frame(&c.chunk().unwrap().unwrap());
        let text = String::from_utf8(p).unwrap();
        seqs.push(text.split(' ').nth(1).unwrap().parse::<u64>().unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // daemon_up twice is harmless.
    d.daemon_up();
    assert_eq!(Client::connect(d.socket()).get("/_ping").1, b"OK");
}
