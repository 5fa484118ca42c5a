//! The double's endpoints and control API: filters, lookups, logs options,
//! follow, keep-alive, lifecycle, events, writers, backpressure, stats.

mod common;

use std::time::{Duration, Instant};

use common::*;
use docker_double::{Config, ContainerSpec, Double, SinceMode, Stream, Writer};

const WAIT: Duration = Duration::from_secs(10);

fn double() -> Double {
    Double::start(Config::in_temp_dir()).expect("start the double")
}

/// Payloads of a finished non-TTY logs response, one frame per chunk.
fn log_payloads(c: &mut Client, path: &str) -> Vec<(u8, Vec<u8>)> {
    c.send(path);
    let h = c.head();
    assert_eq!(h.status, 200, "{path}");
    c.chunks().iter().map(|ch| one_frame(ch)).collect()
}

fn texts(frames: &[(u8, Vec<u8>)]) -> Vec<String> {
    frames.iter().map(|(_, p)| String::from_utf8_lossy(p).into_owned()).collect()
}

#[test]
fn paths_versions_methods_and_host() {
    let mut cfg = Config::in_temp_dir();
    cfg.api_max = (1, 43);
    cfg.api_min = (1, 24);
    let d = Double::start(cfg).unwrap();
    let mut c = Client::connect(d.socket());

    // With and without the version prefix.
    for p in ["/_ping", "/v1.43/_ping", "/v1.24/_ping"] {
        let (h, b) = c.get(p);
        assert_eq!((h.status, b.as_slice()), (200, &b"OK"[..]), "{p}");
        assert_eq!(h.get("Api-Version"), Some("1.43"));
    }
    let (status, v) = c.get_json("/v1.44/_ping");
    assert_eq!(status, 400);
    assert_eq!(v["message"], "client version 1.44 is too new. Maximum supported API version is 1.43");
    let (status, v) = c.get_json("/v1.23/version");
    assert_eq!(status, 400);
    assert!(v["message"].as_str().unwrap().contains("is too old"));
    let (_, v) = c.get_json("/version");
    assert_eq!((v["ApiVersion"].as_str(), v["MinAPIVersion"].as_str()), (Some("1.43"), Some("1.24")));

    // HEAD /_ping: headers only.
    c.send_raw(b"HEAD /_ping HTTP/1.1\r\nHost: docker\r\n\r\n");
    let h = c.head();
    assert_eq!((h.status, h.get("Content-Length")), (200, Some("0")));

    let (status, v) = c.get_json("/v1.43/nothing/here");
    assert_eq!((status, v["message"].as_str()), (404, Some("page not found")));

    // Other methods: 405, counted; the connection stays usable.
    c.send_raw(b"POST /v1.43/containers/x/stop HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n");
    let h = c.head();
    c.body(&h);
    assert_eq!(h.status, 405);
    let (h, _) = c.get("/_ping");
    assert_eq!(h.status, 200);
    assert_eq!(d.stats().non_get_requests, 1);

    // Logs Content-Type from API 1.42 on.
    let id = d.create_and_start(ContainerSpec::new("a"));
    let tty = d.create_and_start(ContainerSpec::new("t").tty(true));
    for (ver, id, want) in [
        ("1.41", &id, None),
        ("1.42", &id, Some("application/vnd.docker.multiplexed-stream")),
        ("1.43", &tty, Some("application/vnd.docker.raw-stream")),
    ] {
        c.send(&format!("/v{ver}/containers/{id}/logs?stdout=1"));
        let h = c.head();
        c.chunks();
        assert_eq!(h.get("Content-Type"), want, "{ver}");
    }

    // No Host header: Go's 400 and close.
    let mut c2 = Client::connect(d.socket());
    c2.send_raw(b"GET /_ping HTTP/1.1\r\n\r\n");
    let h = c2.head();
    assert_eq!(h.status_line, "HTTP/1.1 400 Bad Request: missing required Host header");
    assert_eq!(h.get("Connection"), Some("close"));
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut c2.r, &mut rest).unwrap();
    assert_eq!(rest, b"400 Bad Request: missing required Host header");

    // A head over 16 KiB: 431 and close.
    let mut c3 = Client::connect(d.socket());
    let big = format!("GET /_ping HTTP/1.1\r\nHost: d\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    c3.send_raw(big.as_bytes());
    assert_eq!(c3.head().status, 431);
}

#[test]
fn list_filters_and_inspect_lookups() {
    let d = double();
    let a = d.create_and_start(ContainerSpec::new("web").label("app", "shop").label("tier", "front"));
    let b = d.create_and_start(ContainerSpec::new("db").label("app", "shop").label("tier", "back"));
    let e = d.create_and_start(ContainerSpec::new("exited").label("app", "shop"));
    d.stop(&e);
    let mut c = Client::connect(d.socket());
    let names = |v: &serde_json::Value| -> Vec<String> {
        let mut n: Vec<String> =
            v.as_array().unwrap().iter().map(|x| x["Names"][0].as_str().unwrap().to_owned()).collect();
        n.sort();
        n
    };
    let (_, v) = c.get_json("/containers/json");
    assert_eq!(names(&v), ["/db", "/web"]);
    let (_, v) = c.get_json("/containers/json?all=1");
    assert_eq!(names(&v), ["/db", "/exited", "/web"]);
    // {"label":["app","tier=front"]}
    let (_, v) =
        c.get_json("/v1.41/containers/json?filters=%7B%22label%22%3A%5B%22app%22%2C%22tier%3Dfront%22%5D%7D");
    assert_eq!(names(&v), ["/web"]);
    assert_eq!(v[0]["Id"], a.as_str());
    assert_eq!(v[0]["State"], "running");
    assert_eq!(v[0]["Labels"]["tier"], "front");
    assert!(v[0]["Status"].as_str().unwrap().starts_with("Up "));
    // Legacy map form, with all=1.
    let (_, v) =
        c.get_json("/containers/json?all=1&filters=%7B%22label%22%3A%7B%22app%3Dshop%22%3Atrue%7D%7D");
    assert_eq!(names(&v), ["/db", "/exited", "/web"]);
    let (status, _) = c.get_json("/containers/json?filters=%7Bnot%20json");
    assert_eq!(status, 400);

    // Inspect by full id, unique prefix and name.
    for key in [b.clone(), b[..12].to_owned(), "db".to_owned()] {
        let (status, v) = c.get_json(&format!("/v1.41/containers/{key}/json"));
        assert_eq!(status, 200, "{key}");
        assert_eq!(v["Id"], b.as_str());
        assert_eq!(v["Name"], "/db");
        assert_eq!(v["Config"]["Labels"]["tier"], "back");
        assert_eq!(v["Config"]["Tty"], false);
        assert_eq!(v["State"]["Running"], true);
        assert_eq!(v["HostConfig"]["LogConfig"]["Type"], "json-file");
        let started = v["State"]["StartedAt"].as_str().unwrap();
        assert!(started.starts_with("20") && started.ends_with('Z'), "{started}");
    }
    let (_, v) = c.get_json(&format!("/containers/{e}/json"));
    assert_eq!(
        (v["State"]["Status"].as_str(), v["State"]["Running"].as_bool()),
        (Some("exited"), Some(false))
    );

    d.pause(&a);
    let (_, v) = c.get_json("/containers/web/json");
    assert_eq!(v["State"]["Status"], "paused");
    assert_eq!(v["State"]["Paused"], true);
    d.unpause(&a);

    d.remove(&b);
    let (status, v) = c.get_json(&format!("/containers/{b}/json"));
    assert_eq!(status, 404);
    assert_eq!(v["message"], format!("No such container: {b}"));
    let (status, _) = c.get_json(&format!("/containers/{b}/logs?stdout=1"));
    assert_eq!(status, 404);
    assert_eq!(d.id_of("db"), None);
    assert_eq!(d.id_of("web").as_deref(), Some(a.as_str()));
}

#[test]
fn timestamps_since_tail_and_streams() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("svc"));
    let base = 1_700_000_000_000_000_000i64;
    for i in 0..10i64 {
        let stream = if i % 3 == 0 { Stream::Stderr } else { Stream::Stdout };
        d.write_at(&id, stream, base + i * 1_000, format!("m{i}\n").as_bytes());
    }
    let mut c = Client::connect(d.socket());
    let q = |extra: &str| format!("/v1.41/containers/{id}/logs?stdout=1&stderr=1&timestamps=1{extra}");

    let all = log_payloads(&mut c, &q(""));
    assert_eq!(all.len(), 10);
    for (i, (stream, p)) in all.iter().enumerate() {
        let (ts, msg) = split_ts(p);
        assert_eq!(ts, base + i as i64 * 1_000);
        assert_eq!(msg, format!("m{i}\n").as_bytes());
        assert_eq!(*stream, if i % 3 == 0 { 2 } else { 1 });
    }
    // since is inclusive and takes sec.nanos.
    let since = |ns: i64| format!("&since={}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
    let got = log_payloads(&mut c, &q(&since(base + 7_000)));
    assert_eq!(got.len(), 3);
    assert_eq!(split_ts(&got[0].1).1, b"m7\n");
    // Whole seconds too.
    assert_eq!(log_payloads(&mut c, &q(&format!("&since={}", base / 1_000_000_000))).len(), 10);
    // tail first, then since.
    let got = log_payloads(&mut c, &q(&format!("&tail=4{}", since(base + 8_000))));
    assert_eq!(texts(&got).len(), 2);
    let got = log_payloads(&mut c, &q(&format!("&tail=4{}", since(base + 1_000))));
    assert_eq!(got.len(), 4);
    assert_eq!(split_ts(&got[0].1).1, b"m6\n");
    assert_eq!(log_payloads(&mut c, &q("&tail=0")).len(), 0);
    assert_eq!(log_payloads(&mut c, &q("&tail=all")).len(), 10);
    assert_eq!(log_payloads(&mut c, &q("&tail=100")).len(), 10);
    // until is inclusive too.
    assert_eq!(
        log_payloads(
            &mut c,
            &q(&format!("&until={}.{:09}", base / 1_000_000_000, base % 1_000_000_000 + 2_000))
        )
        .len(),
        3
    );
    // Streams: stderr only, booleans as moby reads them.
    let got = log_payloads(&mut c, &format!("/containers/{id}/logs?stdout=no&stderr=yes"));
    assert_eq!(texts(&got), ["m0\n", "m3\n", "m6\n", "m9\n"]);
    assert!(got.iter().all(|(s, _)| *s == 2));
    let (status, v) = c.get_json(&format!("/containers/{id}/logs?stdout=false&stderr=0"));
    assert_eq!(status, 400);
    assert_eq!(v["message"], "Bad parameters: you must choose at least one stream");
    let (status, _) = c.get_json(&format!("/containers/{id}/logs?stdout=1&since=yesterday"));
    assert_eq!(status, 400);

    // A logging driver that cannot be read.
    let none = d.create_and_start(ContainerSpec::new("quiet").log_driver("none"));
    let (status, v) = c.get_json(&format!("/containers/{none}/logs?stdout=1"));
    assert_eq!(status, 501);
    assert_eq!(v["message"], "configured logging driver does not support reading");
}

#[test]
fn since_modes_with_non_monotonic_timestamps() {
    // Timestamps 10, 30, 20, 40: since=25 gives 30, 40 under 20.10, and
    // 30, 20, 40 under 24.0+ (filtering stops at the first match).
    for (mode, want) in
        [(SinceMode::FilterAll, vec!["b\n", "d\n"]), (SinceMode::StopAfterFirst, vec!["b\n", "c\n", "d\n"])]
    {
        let mut cfg = Config::in_temp_dir();
        cfg.since_mode = mode;
        let d = Double::start(cfg).unwrap();
        let id = d.create_and_start(ContainerSpec::new("x"));
        for (ts, m) in [(10, "a\n"), (30, "b\n"), (20, "c\n"), (40, "d\n")] {
            d.write_at(&id, Stream::Stdout, ts * 1_000_000_000, m.as_bytes());
        }
        let mut c = Client::connect(d.socket());
        let got = log_payloads(&mut c, &format!("/containers/{id}/logs?stdout=1&since=25"));
        assert_eq!(texts(&got), want, "{mode:?}");
    }
}

#[test]
fn partials_and_tty() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("p"));
    let line: Vec<u8> = (0..40_000).map(|i| b'a' + (i % 26) as u8).collect();
    d.write(&id, Stream::Stderr, &line);
    let stored = d.logs(&id);
    assert_eq!(stored.len(), 3);
    assert_eq!(stored.iter().map(|m| m.2.len()).collect::<Vec<_>>(), [16384, 16384, 7233]);
    assert!(stored.iter().all(|m| m.0 == stored[0].0 && m.1 == Stream::Stderr));
    let mut c = Client::connect(d.socket());
    let got = log_payloads(&mut c, &format!("/containers/{id}/logs?stderr=1&tail=1"));
    // A partial counts as one message for tail.
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), 7233);
    let got = log_payloads(&mut c, &format!("/containers/{id}/logs?stderr=1"));
    let joined: Vec<u8> = got.iter().flat_map(|f| f.1.clone()).collect();
    assert_eq!(&joined[..40_000], &line[..]);
    assert_eq!(joined[40_000..], *b"\n");

    // TTY: stderr merged into the raw stream, \r\n line ends, no frames.
    let t = d.create_and_start(ContainerSpec::new("tty").tty(true));
    d.write(&t, Stream::Stdout, b"out");
    d.write(&t, Stream::Stderr, b"err");
    c.send(&format!("/containers/{t}/logs?stdout=1&stderr=1"));
    c.head();
    assert_eq!(c.chunks(), [b"out\r\n".to_vec(), b"err\r\n".to_vec()]);
    c.send(&format!("/containers/{t}/logs?stderr=1"));
    c.head();
    assert!(c.chunks().is_empty(), "a TTY has no separate stderr");
}

#[test]
fn follow_streams_new_lines_and_ends_on_stop_restart_remove() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("f"));
    d.write(&id, Stream::Stdout, b"before");
    let follow = |d: &Double| {
        let mut c = Client::connect(d.socket());
        c.send(&format!("/containers/{id}/logs?stdout=1&stderr=1&follow=1"));
        assert_eq!(c.head().status, 200);
        c
    };

    let mut c = follow(&d);
    assert_eq!(one_frame(&c.chunk().unwrap().unwrap()).1, b"before\n");
    d.write(&id, Stream::Stderr, b"after");
    assert_eq!(one_frame(&c.chunk().unwrap().unwrap()), (2, b"after\n".to_vec()));
    d.write(&id, Stream::Stdout, b"last words");
    d.stop(&id);
    assert_eq!(one_frame(&c.chunk().unwrap().unwrap()).1, b"last words\n");
    assert_eq!(c.chunk().unwrap(), None, "stream ends on stop");
    assert!(d.wait_until(WAIT, |s| s.log_streams_open == 0));
    // Keep-alive: the same connection serves the next request.
    let (h, b) = c.get("/_ping");
    assert_eq!((h.status, b.as_slice()), (200, &b"OK"[..]));

    // Follow on a stopped container: stored messages, then the end.
    let mut c = follow(&d);
    assert_eq!(c.chunks().len(), 3);

    // Restart ends follow streams; the next one sees everything stored.
    d.start_again(&id);
    let mut c = follow(&d);
    for _ in 0..3 {
        c.chunk().unwrap().unwrap();
    }
    d.restart(&id);
    assert_eq!(c.chunk().unwrap(), None, "stream ends on restart");
    let mut c = follow(&d);
    for _ in 0..3 {
        c.chunk().unwrap().unwrap();
    }
    d.remove(&id);
    assert_eq!(c.chunk().unwrap(), None, "stream ends on remove");
    assert!(d.wait_until(WAIT, |s| s.log_streams_open == 0));
}

#[test]
fn client_leaving_ends_the_stream() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("f"));
    let mut c = Client::connect(d.socket());
    c.send(&format!("/containers/{id}/logs?stdout=1&follow=1"));
    c.head();
    assert!(d.wait_until(WAIT, |s| s.log_streams_open == 1));
    // Half-close counts as leaving, as with dockerd.
    c.stream().shutdown(std::net::Shutdown::Write).unwrap();
    assert!(d.wait_until(WAIT, |s| s.log_streams_open == 0 && s.connections_open == 0));
    assert!(c.closed());
}

#[test]
fn pipelined_keep_alive_requests() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("k"));
    d.write(&id, Stream::Stdout, b"x");
    let mut c = Client::connect(d.socket());
    let req = format!(
        "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\nGET /containers/{id}/logs?stdout=1 HTTP/1.1\r\nHost: d\r\n\r\nGET /containers/{id}/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"
    );
    c.send_raw(req.as_bytes());
    let h = c.head();
    assert_eq!(c.body(&h), b"OK");
    let h = c.head();
    assert_eq!(c.chunks().len(), 1);
    assert_eq!(h.status, 200);
    let h = c.head();
    let v: serde_json::Value = serde_json::from_slice(&c.body(&h)).unwrap();
    assert_eq!(v["Id"], id.as_str());
    assert!(c.closed(), "Connection: close honoured");
    assert!(d.wait_until(WAIT, |s| s.requests_total == 3 && s.connections_open == 0));
}

#[test]
fn many_pipelined_requests_beyond_the_head_limit() {
    // 40 KB of requests in one go: more than the 16 KiB the server buffers,
    // so it must come back for the rest on its own (edge-triggered poll).
    let d = double();
    let mut c = Client::connect(d.socket());
    let one = b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n";
    let n = 40_000 / one.len();
    c.send_raw(&one.repeat(n));
    for _ in 0..n {
        let h = c.head();
        assert_eq!(c.body(&h), b"OK");
    }
    assert_eq!(d.stats().requests_total, n as u64);
}

#[test]
fn events_lifecycle_filters_and_since() {
    let d = double();
    let t0 = docker_double::time::now_ns();
    let mut all = Client::connect(d.socket());
    all.send("/v1.41/events");
    assert_eq!(all.head().get("Content-Type"), Some("application/json"));
    let mut only_b = Client::connect(d.socket());
    // {"type":["container"],"container":["bravo"],"event":["die","destroy"]}
    only_b.send("/events?filters=%7B%22type%22%3A%5B%22container%22%5D%2C%22container%22%3A%5B%22bravo%22%5D%2C%22event%22%3A%5B%22die%22%2C%22destroy%22%5D%7D");
    only_b.head();
    assert!(d.wait_until(WAIT, |s| s.events_streams_open == 2));

    let a = d.create_and_start(ContainerSpec::new("alpha").label("team", "x"));
    let b = d.create_and_start(ContainerSpec::new("bravo"));
    d.pause(&a);
    d.unpause(&a);
    d.restart(&a);
    d.stop_with(&b, 3);
    d.remove(&b);

    let next = |c: &mut Client| -> serde_json::Value {
        let chunk = c.chunk().unwrap().unwrap();
        assert_eq!(*chunk.last().unwrap(), b'\n', "one event per line");
        serde_json::from_slice(&chunk).unwrap()
    };
    let want = [
        ("alpha", "create"),
        ("alpha", "start"),
        ("bravo", "create"),
        ("bravo", "start"),
        ("alpha", "pause"),
        ("alpha", "unpause"),
        ("alpha", "kill"),
        ("alpha", "die"),
        ("alpha", "stop"),
        ("alpha", "start"),
        ("alpha", "restart"),
        ("bravo", "kill"),
        ("bravo", "die"),
        ("bravo", "stop"),
        ("bravo", "destroy"),
    ];
    let mut last = 0;
    for (name, action) in want {
        let e = next(&mut all);
        assert_eq!(
            (e["Actor"]["Attributes"]["name"].as_str(), e["Action"].as_str()),
            (Some(name), Some(action))
        );
        assert_eq!(e["Type"], "container");
        assert_eq!(e["status"], action);
        let id = if name == "alpha" { &a } else { &b };
        assert_eq!(e["Actor"]["ID"], id.as_str());
        assert_eq!(e["id"], id.as_str());
        assert_eq!(e["from"], "busybox:local");
        assert_eq!(e["Actor"]["Attributes"]["image"], "busybox:local");
        if name == "alpha" {
            assert_eq!(e["Actor"]["Attributes"]["team"], "x");
        }
        let tn = e["timeNano"].as_i64().unwrap();
        assert!(tn > last);
        assert_eq!(e["time"].as_i64().unwrap(), tn / 1_000_000_000);
        last = tn;
        if action == "die" && name == "bravo" {
            assert_eq!(e["Actor"]["Attributes"]["exitCode"], "3");
        }
    }
    let e = next(&mut only_b);
    assert_eq!(
        (e["Action"].as_str(), e["Actor"]["Attributes"]["exitCode"].as_str()),
        (Some("die"), Some("3"))
    );
    assert_eq!(next(&mut only_b)["Action"], "destroy");

    // since replays; with until in the past the stream ends.
    let mut r = Client::connect(d.socket());
    r.send(&format!(
        "/events?since={}.{:09}&until={}",
        t0 / 1_000_000_000,
        t0 % 1_000_000_000,
        docker_double::time::now_ns() / 1_000_000_000 + 1
    ));
    r.head();
    let replay = r.chunks();
    assert_eq!(replay.len(), want.len());
    // Label filter on a replay.
    let mut r = Client::connect(d.socket());
    r.send(&format!(
        "/events?since={}&until={}&filters=%7B%22label%22%3A%5B%22team%3Dx%22%5D%7D",
        t0 / 1_000_000_000,
        t0 / 1_000_000_000 + 3600
    ));
    r.head();
    let e: serde_json::Value = serde_json::from_slice(&r.chunk().unwrap().unwrap()).unwrap();
    assert_eq!(e["Actor"]["Attributes"]["name"], "alpha");
}

#[test]
fn writers_produce_numbered_lines_in_order() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("w").writer(Writer {
        lines_per_sec: 200.0,
        stderr_every: 3,
        line_len: 40,
        max_lines: Some(50),
    }));
    let mut c = Client::connect(d.socket());
    c.send(&format!("/containers/{id}/logs?stdout=1&stderr=1&follow=1"));
    c.head();
    let start = Instant::now();
    let mut ts_seen = Vec::new();
    for seq in 1..=50u64 {
        let (stream, p) = one_frame(&c.chunk().unwrap().unwrap());
        let text = String::from_utf8(p).unwrap();
        let want_stream = if seq % 3 == 0 { "stderr" } else { "stdout" };
        let prefix = format!("w {seq} {want_stream} ");
        assert!(text.starts_with(&prefix), "{text:?}");
        assert_eq!(text.len(), 41, "padded to 40 + newline: {text:?}");
        assert!(text[prefix.len()..40].bytes().all(|b| b == b'x'));
        assert_eq!(stream, if seq % 3 == 0 { 2 } else { 1 });
        ts_seen.push(seq);
    }
    let took = start.elapsed();
    // 50 lines at 200/s: about 250 ms, not a burst and not a crawl.
    assert!(took > Duration::from_millis(150) && took < Duration::from_secs(3), "{took:?}");
    // max_lines: nothing more comes; the stored log agrees.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.logs(&id).len(), 50);
    let stored = d.logs(&id);
    assert!(stored.windows(2).all(|w| w[0].0 < w[1].0), "timestamps increase");

    // Seq continues across a restart; nothing is written while stopped.
    let id2 = d.create_and_start(ContainerSpec::new("w2").writer(Writer {
        lines_per_sec: 500.0,
        stderr_every: 0,
        line_len: 0,
        max_lines: None,
    }));
    std::thread::sleep(Duration::from_millis(50));
    d.stop(&id2);
    let n = d.logs(&id2).len();
    assert!(n > 0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(d.logs(&id2).len(), n, "stopped containers are quiet");
    d.start_again(&id2);
    std::thread::sleep(Duration::from_millis(50));
    d.stop(&id2);
    let logs = d.logs(&id2);
    for (i, (_, _, line)) in logs.iter().enumerate() {
        assert_eq!(line, format!("w2 {} stdout\n", i + 1).as_bytes());
    }
}

#[test]
fn backpressure_holds_the_stream_without_buffering() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("bp"));
    let mut c = Client::connect(d.socket());
    c.send(&format!("/containers/{id}/logs?stdout=1&follow=1"));
    c.head();
    assert!(d.wait_until(WAIT, |s| s.log_streams_open == 1));
    // 20 MB written while the client reads nothing.
    let line = vec![b'z'; 1000];
    for _ in 0..20_000 {
        d.write(&id, Stream::Stdout, &line);
    }
    std::thread::sleep(Duration::from_millis(300));
    let stalled = d.stats().bytes_sent;
    std::thread::sleep(Duration::from_millis(200));
    let s = d.stats();
    assert_eq!(s.bytes_sent, stalled, "nothing moves while the client is not reading");
    // What left is about what the socket buffers hold, not the backlog.
    assert!(stalled < 4 << 20, "{stalled} bytes sent to a client that reads nothing");
    // Then everything arrives, exactly once and in order.
    for _ in 0..20_000 {
        let (_, p) = one_frame(&c.chunk().unwrap().unwrap());
        assert_eq!(p.len(), 1001);
    }
    d.stop(&id);
    assert_eq!(c.chunk().unwrap(), None);
    assert_eq!(d.stats().messages_sent, 20_000);
}

#[test]
fn stats_count_requests() {
    let d = double();
    let a = d.create_and_start(ContainerSpec::new("a"));
    let b = d.create_and_start(ContainerSpec::new("b"));
    let mut c = Client::connect(d.socket());
    c.get(&format!("/containers/{a}/logs?stdout=1&tail=5"));
    c.get(&format!("/containers/{a}/logs?stdout=1&since=1"));
    c.get(&format!("/containers/{a}/logs?stdout=1&since=1&tail=all"));
    c.get(&format!("/containers/{b}/logs?stdout=1"));
    c.get("/containers/nope/logs?stdout=1");
    let mut f = Client::connect(d.socket());
    f.send(&format!("/containers/{b}/logs?stdout=1&follow=1"));
    f.head();
    assert!(d.wait_until(WAIT, |s| s.log_streams_open == 1));
    let s = d.stats();
    assert_eq!(s.logs_requests_total, 6);
    assert_eq!(s.logs_requests_with_tail, 1);
    assert_eq!(s.logs_requests_since_only, 2);
    assert_eq!(s.logs_requests_by_container[&a], 3);
    assert_eq!(s.logs_requests_by_container[&b], 2);
    assert_eq!(s.log_streams_open_by_container[&b], 1);
    assert!(!s.log_streams_open_by_container.contains_key(&a));
    assert_eq!(s.connections_open, 2);
    assert_eq!(s.requests_total, 6);
    d.write(&b, Stream::Stdout, b"one");
    f.chunk().unwrap().unwrap();
    assert!(d.wait_until(WAIT, |s| s.messages_sent == 1));
    drop(f);
    assert!(d.wait_until(WAIT, |s| s.log_streams_open == 0 && s.connections_open == 1));
    assert!(d.stats().bytes_sent > 0);
}

#[test]
fn retention_drops_the_oldest_messages() {
    let mut cfg = Config::in_temp_dir();
    cfg.retain_messages = 5;
    let d = Double::start(cfg).unwrap();
    let id = d.create_and_start(ContainerSpec::new("r"));
    for i in 0..12 {
        d.write(&id, Stream::Stdout, format!("{i}").as_bytes());
    }
    let mut c = Client::connect(d.socket());
    let got = log_payloads(&mut c, &format!("/containers/{id}/logs?stdout=1"));
    assert_eq!(texts(&got), ["7\n", "8\n", "9\n", "10\n", "11\n"]);
}
