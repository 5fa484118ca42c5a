//! Pushes in every format, Loki's rules, partial 400s, dedup, tenancy,
//! auth and keep-alive.

mod common;

use std::time::Duration;

use common::*;
use loki_double::{Auth, Config, Double, Reason};

const HOUR: i64 = 3_600_000_000_000;

fn double() -> Double {
    Double::start(Config::default()).expect("start the double")
}

#[test]
fn protobuf_snappy_push_is_stored_as_sent() {
    let d = double();
    let t = now_ns();
    let mut c = Client::plain(d.addr());
    let r = c.push_pb(&[
        (
            r#"{container="web", host="h1"}"#,
            vec![e_sm(t, "first", &[("container_id", "abc"), ("image", "nginx")]), e(t + 1, "second")],
        ),
        (r#"{stream="stderr",container="db"}"#, vec![e(t - 5, b"\xffnot utf8")]),
    ]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty() && r.get("content-length").is_none());
    let got = d.entries();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].labels, r#"{container="web", host="h1"}"#);
    assert_eq!((got[0].ts_ns, got[0].line_str().as_ref()), (t, "first"));
    assert_eq!(
        got[0].metadata,
        vec![("container_id".into(), "abc".into()), ("image".into(), "nginx".into())]
    );
    assert_eq!(got[0].meta("image"), Some("nginx"));
    assert_eq!(got[1].line, b"second");
    // Labels are named canonically (sorted), lines kept byte for byte.
    assert_eq!(got[2].labels, r#"{container="db", stream="stderr"}"#);
    assert_eq!(got[2].label("stream").as_deref(), Some("stderr"));
    assert_eq!(got[2].line, b"\xffnot utf8");
    assert_eq!(d.streams().len(), 2);
    let s = d.stats();
    assert_eq!((s.entries_stored, s.status(204), s.requests_total), (3, 1, 1));
    assert_eq!(s.pushes_by_format.get("protobuf"), Some(&1));
    let req = &d.requests()[0];
    assert_eq!(
        (req.entries, req.status, req.content_type.as_deref()),
        (3, 204, Some("application/x-protobuf"))
    );
}

#[test]
fn json_gzip_and_chunked_bodies() {
    let d = double();
    let t = now_ns();
    let mut c = Client::plain(d.addr());
    let body = json(&[(
        &[("app", "a"), ("host", "h")],
        vec![e(t, "plain json"), e_sm(t + 1, "with sm", &[("k", "v")])],
    )]);
    let r = c.push(&body, &[("Content-Type", "application/json")]);
    assert_eq!(r.status, 204, "{}", r.text());
    let body = json(&[(&[("app", "a")], vec![e(t + 2, "gzipped json")])]);
    let r = c.push(
        &gzip(&body),
        &[("Content-Type", "application/json; charset=utf-8"), ("Content-Encoding", "gzip")],
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let body = gzip(&snappy(&protobuf(&[(r#"{app="a"}"#, vec![e(t + 3, "gzipped protobuf")])])));
    let r = c.push(&body, &[("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip")]);
    assert_eq!(r.status, 204, "{}", r.text());

    // Chunked, in two chunks, with Expect: 100-continue.
    let body = snappy(&protobuf(&[(r#"{app="a"}"#, vec![e(t + 4, "chunked")])]));
    let (a, b) = body.split_at(body.len() / 2);
    let mut req = b"POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".to_vec();
    c.send_raw(&req).unwrap();
    let (cont, _) = c.head().unwrap();
    assert_eq!(cont, 100);
    req.clear();
    for part in [a, b] {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    c.send_raw(&req).unwrap();
    assert_eq!(c.response().unwrap().status, 204);

    let lines: Vec<String> = d.entries().iter().map(|e| e.line_str().into_owned()).collect();
    assert_eq!(lines, ["plain json", "with sm", "gzipped json", "gzipped protobuf", "chunked"]);
    assert_eq!(d.entries()[0].labels, r#"{app="a", host="h"}"#);
    assert_eq!(d.entries()[1].metadata, vec![("k".into(), "v".into())]);
    let f = d.stats().pushes_by_format;
    assert_eq!((f["json"], f["json+gzip"], f["protobuf+gzip"], f["protobuf"]), (1, 1, 1, 1));
}

#[test]
fn undecodable_bodies_and_unknown_encodings_are_400() {
    let d = double();
    let mut c = Client::plain(d.addr());
    let r = c.push(b"\x05garbage", &[("Content-Type", "application/x-protobuf")]);
    assert_eq!(r.status, 400);
    assert!(r.text().starts_with("snappy"), "{}", r.text());
    assert_eq!(r.get("content-type"), Some("text/plain; charset=utf-8"));
    // Snappy that holds something that is not a PushRequest.
    let r = c.push(&snappy(&[0x0b, 1, 2]), &[("Content-Type", "application/x-protobuf")]);
    assert_eq!((r.status, r.text().starts_with("proto:")), (400, true), "{}", r.text());
    // Plain protobuf without snappy is refused: the block format is required.
    let raw = protobuf(&[(r#"{a="b"}"#, vec![e(now_ns(), "x")])]);
    assert_eq!(c.push(&raw, &[("Content-Type", "application/x-protobuf")]).status, 400);
    let r = c.push(b"{\"streams\":", &[("Content-Type", "application/json")]);
    assert_eq!(r.status, 400);
    let r = c.push(b"x", &[("Content-Type", "application/json"), ("Content-Encoding", "br")]);
    assert_eq!((r.status, r.text().trim_end()), (400, "Content-Encoding \"br\" not supported"));
    let s = d.stats();
    assert_eq!((s.decode_errors, s.entries_stored, s.status(400), s.status(415)), (5, 0, 5, 0));
}

#[test]
fn labels_that_do_not_parse_refuse_the_whole_push() {
    let d = double();
    let t = now_ns();
    let mut c = Client::plain(d.addr());
    for (labels, words) in [
        ("{a=b}", "couldn't parse labels: 1:4: parse error: unexpected character inside braces: 'b'"),
        ("{a-b=\"c\"}", "couldn't parse labels: 1:3: parse error: unexpected character inside braces: '-'"),
        ("{foo=\"bar\"", "couldn't parse labels: 1:11: parse error: unexpected end of input inside braces"),
        (
            "{a=~\"b\"}",
            "couldn't parse labels: 1:3: parse error: unexpected <op:=~> in label set, expected \"=\"",
        ),
    ] {
        let before = d.stats().rejected(Reason::InvalidLabels);
        // The good stream first: Loki refuses it all the same.
        let r = c.push_pb(&[(r#"{ok="1"}"#, vec![e(t, labels)]), (labels, vec![e(t, "x"), e(t + 1, "y")])]);
        assert_eq!((r.status, r.text().trim_end()), (400, words), "{labels}");
        assert_eq!(d.stats().rejected(Reason::InvalidLabels), before + 3, "{labels}");
    }
    assert_eq!(d.stats().entries_stored, 0);
}

#[test]
fn label_rules_refuse_the_whole_stream() {
    let d = double();
    let t = now_ns();
    let mut c = Client::plain(d.addr());
    let cases: Vec<(String, Reason, &str)> = vec![
        ("{}".into(), Reason::MissingLabels, "error at least one label pair is required per stream"),
        ("{a=\"1\", a=\"2\"}".into(), Reason::DuplicateLabelNames, "has duplicate label name: 'a'"),
        (
            format!("{{{}}}", (0..16).map(|i| format!("l{i:02}=\"v\"")).collect::<Vec<_>>().join(",")),
            Reason::MaxLabelNamesPerSeries,
            "has 16 label names; limit 15",
        ),
    ];
    for (labels, reason, words) in &cases {
        let before = d.stats().rejected(*reason);
        let r = c.push_pb(&[
            (labels, vec![e(t, "x"), e(t + 1, "y")]),
            (r#"{ok="1"}"#, vec![e(t, labels.as_str())]),
        ]);
        assert_eq!(r.status, 400, "{labels}");
        assert!(r.text().contains(words), "{labels}: {}", r.text());
        assert_eq!(d.stats().rejected(*reason), before + 2, "{labels}");
    }
    // The good stream of each request was stored, nothing of the bad ones.
    let got = d.entries();
    assert_eq!(got.len(), cases.len());
    assert!(got.iter().all(|e| e.labels == r#"{ok="1"}"#));
    // Fifteen names is the limit, not over it.
    let fifteen = format!("{{{}}}", (0..15).map(|i| format!("l{i:02}=\"v\"")).collect::<Vec<_>>().join(","));
    assert_eq!(c.push_pb(&[(&fifteen, vec![e(t, "x")])]).status, 204);
}

#[test]
fn too_old_too_new_and_too_long_are_400_and_the_rest_is_stored() {
    let d = double();
    let t = now_ns();
    let mut c = Client::plain(d.addr());
    let long = vec![b'x'; 256 * 1024 + 1];
    let limit = vec![b'y'; 256 * 1024];
    let r = c.push_pb(&[(
        r#"{job="x"}"#,
        vec![
            e(t, "good 1"),
            e(t - 169 * HOUR, "too old"),
            e(t + HOUR, "too new"),
            e(t + 1, &long),
            e(t + 2, &limit),
            e(t + 3, "good 2"),
        ],
    )]);
    assert_eq!(r.status, 400);
    // Loki 2.9 answers with every refusal, grouped by message.
    let text = r.text();
    let parts: Vec<&str> = text.trim_end().split("; 1 errors like: ").collect();
    assert_eq!(parts.len(), 3, "{}", r.text());
    assert!(
        parts[0].starts_with("1 errors like: entry for stream '{job=\"x\"}' has timestamp too old"),
        "{}",
        r.text()
    );
    assert!(parts[1].starts_with("entry for stream '{job=\"x\"}' has timestamp too new"), "{}", r.text());
    assert!(
        parts[2].starts_with("Max entry size '262144' bytes exceeded for stream '{job=\"x\"}'"),
        "{}",
        r.text()
    );
    let lines: Vec<Vec<u8>> = d.entries().into_iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![b"good 1".to_vec(), limit, b"good 2".to_vec()]);
    let s = d.stats();
    assert_eq!(s.rejected(Reason::GreaterThanMaxSampleAge), 1);
    assert_eq!(s.rejected(Reason::TooFarInFuture), 1);
    assert_eq!(s.rejected(Reason::LineTooLong), 1);
    assert_eq!((s.entries_received, s.entries_stored, s.rejected_total()), (6, 3, 3));

    let r = c.push_pb(&[(r#"{job="x"}"#, vec![e(t - 169 * HOUR, "old")])]);
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("has timestamp too old") && r.text().contains("oldest acceptable timestamp is")
    );
    let r = c.push_pb(&[(r#"{job="x"}"#, vec![e(t + HOUR, "new")])]);
    assert!(r.text().starts_with("entry for stream '{job=\"x\"}' has timestamp too new: "), "{}", r.text());
}

#[test]
fn limits_are_configurable() {
    let mut cfg = Config::default();
    cfg.limits.reject_old_samples_max_age = Some(Duration::from_secs(60));
    cfg.limits.max_line_size = 10;
    let d = Double::start(cfg).unwrap();
    let t = now_ns();
    let mut c = Client::plain(d.addr());
    let r = c.push_pb(&[(
        r#"{a="b"}"#,
        vec![e(t - 120_000_000_000, "old"), e(t, "0123456789"), e(t, "0123456789+")],
    )]);
    assert_eq!(r.status, 400);
    assert_eq!(d.entries().len(), 1);
    let s = d.stats();
    assert_eq!((s.rejected(Reason::GreaterThanMaxSampleAge), s.rejected(Reason::LineTooLong)), (1, 1));
}

#[test]
fn entries_far_behind_their_stream_are_refused() {
    let d = double();
    let t = now_ns();
    let mut c = Client::plain(d.addr());
    assert_eq!(c.push_pb(&[(r#"{a="b"}"#, vec![e(t, "newest")])]).status, 204);
    let r = c.push_pb(&[
        (r#"{a="b"}"#, vec![e(t - 2 * HOUR, "behind"), e(t - HOUR / 2, "within the window")]),
        (r#"{a="c"}"#, vec![e(t - 2 * HOUR, "another stream")]),
    ]);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("entry too far behind"), "{}", r.text());
    let lines: Vec<String> = d.entries().iter().map(|e| e.line_str().into_owned()).collect();
    assert_eq!(lines, ["newest", "within the window", "another stream"]);
    assert_eq!(d.stats().rejected(Reason::TooFarBehind), 1);
}

#[test]
fn identical_entries_are_stored_once() {
    let d = double();
    let t = now_ns();
    let mut c = Client::plain(d.addr());
    let batch = vec![(r#"{a="b", c="d"}"#, vec![e(t, "one"), e(t + 1, "two")])];
    assert_eq!(c.push_pb(&batch).status, 204);
    // The same batch again (a retry), labels written in another order.
    assert_eq!(c.push_pb(&[(r#"{c="d",a="b"}"#, vec![e(t, "one"), e(t + 1, "two")])]).status, 204);
    // Same timestamp, other line; same line, other stream; same line, other
    // nanosecond; and a duplicate inside one request.
    assert_eq!(
        c.push_pb(&[
            (r#"{a="b", c="d"}"#, vec![e(t, "one!"), e(t + 2, "one"), e(t + 3, "dup"), e(t + 3, "dup")]),
            (r#"{a="b"}"#, vec![e(t, "one")]),
        ])
        .status,
        204
    );
    let s = d.stats();
    assert_eq!((s.entries_stored, s.duplicates_dropped), (6, 3));
    let streams = d.streams();
    let lines: Vec<String> = streams[r#"{a="b", c="d"}"#].iter().map(|e| e.line_str().into_owned()).collect();
    assert_eq!(lines, ["one", "two", "one!", "one", "dup"]);
}

#[test]
fn one_connection_carries_many_pushes() {
    let d = double();
    let t = now_ns();
    let mut c = Client::plain(d.addr());
    for i in 0..5 {
        assert_eq!(c.push_pb(&[(r#"{a="b"}"#, vec![e(t + i, format!("line {i}"))])]).status, 204);
    }
    // Pipelined: two requests in one write, two answers in order.
    let one = snappy(&protobuf(&[(r#"{a="b"}"#, vec![e(t + 10, "p1")])]));
    let two = snappy(&protobuf(&[(r#"{a="b"}"#, vec![e(t - 169 * HOUR, "p2")])]));
    let mut raw = Vec::new();
    for b in [&one, &two] {
        raw.extend_from_slice(
            format!("POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", b.len())
                .as_bytes(),
        );
        raw.extend_from_slice(b);
    }
    c.send_raw(&raw).unwrap();
    assert_eq!(c.response().unwrap().status, 204);
    assert_eq!(c.response().unwrap().status, 400);
    let s = d.stats();
    assert_eq!((s.connections_total, s.connections_open, s.entries_stored), (1, 1, 6));
    assert!(d.requests().iter().all(|r| r.conn == 1));
    drop(c);
    assert!(d.wait_until(WAIT, |s| s.connections_open == 0));
}

#[test]
fn connection_close_and_http10_are_honoured() {
    let d = double();
    let mut c = Client::plain(d.addr());
    let body = snappy(&protobuf(&[(r#"{a="b"}"#, vec![e(now_ns(), "x")])]));
    let r = c.push(&body, &[("Connection", "close")]);
    assert_eq!((r.status, r.get("connection")), (204, Some("close")));
    let (rest, end) = c.rest();
    assert!(rest.is_empty() && end.is_ok());
}

#[test]
fn tenant_is_recorded_and_can_be_required() {
    let d = Double::start(Config { require_tenant: true, ..Config::default() }).unwrap();
    let t = now_ns();
    let mut c = Client::plain(d.addr());
    let body = snappy(&protobuf(&[(r#"{a="b"}"#, vec![e(t, "x")])]));
    let r = c.push(&body, &[]);
    assert_eq!((r.status, r.text().as_str()), (401, "no org id\n"));
    assert_eq!(c.push(&body, &[("X-Scope-OrgID", "team-a")]).status, 204);
    let got = d.entries();
    assert_eq!((got.len(), got[0].tenant.as_deref()), (1, Some("team-a")));
    assert_eq!(d.requests()[1].tenant.as_deref(), Some("team-a"));
}

#[test]
fn authorization_is_checked_when_configured() {
    let body = snappy(&protobuf(&[(r#"{a="b"}"#, vec![e(now_ns(), "x")])]));
    let d = Double::start(Config { auth: Some(Auth::Bearer("s3cret".into())), ..Config::default() }).unwrap();
    let mut c = Client::plain(d.addr());
    assert_eq!(c.push(&body, &[]).status, 401);
    assert_eq!(c.push(&body, &[("Authorization", "Bearer wrong")]).status, 401);
    assert_eq!(c.push(&body, &[("Authorization", "Bearer s3cret")]).status, 204);

    let basic = Auth::Basic { user: "loki".into(), password: "pw".into() };
    let d = Double::start(Config { auth: Some(basic), ..Config::default() }).unwrap();
    let mut c = Client::plain(d.addr());
    // "loki:pw" and "loki:px".
    assert_eq!(c.push(&body, &[("Authorization", "Basic bG9raTpweA==")]).status, 401);
    assert_eq!(c.push(&body, &[("Authorization", "Basic bG9raTpwdw==")]).status, 204);
    assert_eq!(d.stats().entries_stored, 1);
}

#[test]
fn other_paths_methods_and_oversized_bodies() {
    let d = Double::start(Config { max_body: 1000, ..Config::default() }).unwrap();
    let mut c = Client::plain(d.addr());
    c.send_raw(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = c.response().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ready\n"));
    c.send_raw(b"GET /loki/api/v1/push HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(c.response().unwrap().status, 405);
    c.send_raw(b"POST /api/prom/push HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    let r = c.response().unwrap();
    assert_eq!((r.status, r.text().as_str()), (404, "404 page not found\n"));
    c.send_raw(b"POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n").unwrap();
    let r = c.response().unwrap();
    assert_eq!(r.status, 413);
    assert!(r.text().contains("request body too large"));
    // A snappy body that would inflate past the limit.
    let mut c = Client::plain(d.addr());
    let big = snappy(&protobuf(&[(r#"{a="b"}"#, vec![e(now_ns(), vec![b'z'; 5000])])]));
    assert!(big.len() < 1000);
    assert_eq!(c.push(&big, &[]).status, 413);
    assert_eq!(d.stats().entries_stored, 0);
}

#[test]
fn binary_prints_ready_and_stats() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_loki-double"))
        .args(["--listen", "127.0.0.1:0", "--keep-entries"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("ready ").unwrap_or_else(|| panic!("{line:?}")).parse().unwrap();
    let mut c = Client::plain(addr);
    assert_eq!(c.push_pb(&[(r#"{a="b"}"#, vec![e(now_ns(), "x")])]).status, 204);
    drop(c);
    child.stdin.take().unwrap().flush().unwrap(); // dropped: end of stdin
    line.clear();
    out.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["entries_stored"], 1);
    assert_eq!(v["requests_by_status"]["204"], 1);
    assert!(child.wait().unwrap().success());
}
