//! The double against the real dockerd 20.10 captures in `tests/data`:
//! each scenario of `tests/data/README.md` is replayed on the double and the
//! response compared with the capture, header names in order and values
//! (except Date), and bodies byte for byte once timestamps are masked.

mod common;

use common::*;
use docker_double::{Config, ContainerSpec, Double, Stream};

fn double() -> Double {
    Double::start(Config::in_temp_dir()).expect("start the double")
}

/// Re-encode chunks exactly as Go writes them, to compare with the raw
/// capture body.
fn raw_chunked(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut b = Vec::new();
    for c in chunks {
        b.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        b.extend_from_slice(c);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b"0\r\n\r\n");
    b
}

/// GET a logs URL and compare with a capture: same head, and the same body
/// with timestamps masked. Returns the chunks.
fn compare_logs(d: &Double, id: &str, query: &str, capture_name: &str) -> Vec<Vec<u8>> {
    let cap = capture(capture_name);
    let mut c = Client::connect(d.socket());
    c.send(&format!("/v1.41/containers/{id}/logs?{query}"));
    let h = c.head();
    assert_same_head(&h, &cap.head, true, capture_name);
    let chunks = c.chunks();
    let ours = raw_chunked(&chunks);
    assert_eq!(
        String::from_utf8_lossy(&mask_timestamps(&ours)),
        String::from_utf8_lossy(&mask_timestamps(&cap.body)),
        "{capture_name}: body"
    );
    chunks
}

fn interleaved(d: &Double) -> String {
    let id = d.create_and_start(ContainerSpec::new("lc-cap-interleaved").label("lc.test", "capture"));
    for i in 1..=20 {
        let (stream, name) = if i % 2 == 1 { (Stream::Stdout, "stdout") } else { (Stream::Stderr, "stderr") };
        d.write(&id, stream, format!("line {i:02} {name}").as_bytes());
    }
    d.stop(&id);
    id
}

#[test]
fn ping_version_and_errors() {
    let d = double();
    let mut c = Client::connect(d.socket());

    let cap = capture("ping.http");
    let (h, b) = c.get("/v1.41/_ping");
    assert_same_head(&h, &cap.head, true, "ping");
    assert_eq!(b, cap.body);

    let cap = capture("version.http");
    let (h, b) = c.get("/v1.41/version");
    assert_same_head(&h, &cap.head, false, "version");
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let want: serde_json::Value = serde_json::from_slice(&cap.body).unwrap();
    for k in ["Version", "ApiVersion", "MinAPIVersion"] {
        assert_eq!(v[k], want[k], "{k}");
    }

    let zeros = "0".repeat(64);
    for (path, name) in [
        (format!("/v1.41/containers/{zeros}/logs?stdout=1&stderr=1&timestamps=1"), "not-found.http"),
        (format!("/v1.41/containers/{zeros}/json"), "inspect-not-found.http"),
    ] {
        let cap = capture(name);
        let (h, b) = c.get(&path);
        assert_same_head(&h, &cap.head, true, name);
        assert_eq!(b, cap.body, "{name}");
    }

    let id = interleaved(&d);
    let cap = capture("no-streams.http");
    let (h, b) = c.get(&format!("/v1.41/containers/{id}/logs?timestamps=1"));
    assert_same_head(&h, &cap.head, true, "no-streams");
    assert_eq!(b, cap.body);
}

#[test]
fn interleaved_streams_tail_and_stdout_only() {
    let d = double();
    let id = interleaved(&d);
    let chunks = compare_logs(&d, &id, "stdout=1&stderr=1&timestamps=1", "interleaved.http");
    // One frame per chunk, timestamps strictly increasing.
    let ts: Vec<i64> = chunks.iter().map(|c| split_ts(&one_frame(c).1).0).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    compare_logs(&d, &id, "stdout=1&stderr=1", "no-timestamps.http");
    compare_logs(&d, &id, "stdout=1&timestamps=1", "stdout-only.http");
    compare_logs(&d, &id, "stdout=1&stderr=1&timestamps=1&tail=3", "tail-3.http");

    // Without timestamps nothing is masked: byte for byte.
    let cap = capture("no-timestamps.http");
    let mut c = Client::connect(d.socket());
    c.send(&format!("/v1.41/containers/{id}/logs?stdout=1&stderr=1"));
    c.head();
    assert_eq!(raw_chunked(&c.chunks()), cap.body);
}

#[test]
fn long_line_partials() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("lc-cap-long-line"));
    d.write(&id, Stream::Stdout, "0123456789".repeat(4000).as_bytes());
    d.write(&id, Stream::Stdout, b"short line after long");
    d.stop(&id);
    let chunks = compare_logs(&d, &id, "stdout=1&stderr=1&timestamps=1", "long-line.http");
    let ts: Vec<i64> = chunks.iter().map(|c| split_ts(&one_frame(c).1).0).collect();
    assert_eq!(ts.len(), 4);
    assert!(ts[0] == ts[1] && ts[1] == ts[2] && ts[2] < ts[3], "{ts:?}");
}

#[test]
fn tty_lines() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("lc-cap-tty").tty(true));
    for i in 1..=3 {
        d.write(&id, Stream::Stdout, format!("tty line {i}").as_bytes());
    }
    d.stop(&id);
    compare_logs(&d, &id, "stdout=1&stderr=1&timestamps=1", "tty.http");
    compare_logs(&d, &id, "stdout=1&stderr=1", "tty-no-timestamps.http");

    let long = d.create_and_start(ContainerSpec::new("lc-cap-tty-long").tty(true));
    d.write(&long, Stream::Stdout, "0123456789".repeat(4000).as_bytes());
    d.write(&long, Stream::Stdout, b"short line after long");
    d.stop(&long);
    compare_logs(&d, &long, "stdout=1&stderr=1&timestamps=1", "tty-long-line.http");
}

#[test]
fn exited_without_newline_and_empty() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("lc-cap-exited-no-newline"));
    d.write(&id, Stream::Stdout, b"first");
    d.write_at(&id, Stream::Stdout, docker_double::time::now_ns(), b"last");
    d.stop(&id);
    compare_logs(&d, &id, "stdout=1&stderr=1&timestamps=1", "exited-no-newline.http");

    let empty = d.create_and_start(ContainerSpec::new("lc-cap-empty"));
    d.stop(&empty);
    let chunks = compare_logs(&d, &empty, "stdout=1&stderr=1&timestamps=1", "empty.http");
    assert!(chunks.is_empty());
}

#[test]
fn follow_until_exit() {
    let d = double();
    let id = d.create_and_start(ContainerSpec::new("lc-cap-follow"));
    let cap = capture("follow.http");
    let mut c = Client::connect(d.socket());
    c.send(&format!("/v1.41/containers/{id}/logs?stdout=1&stderr=1&timestamps=1&follow=1"));
    // Headers arrive before any log line exists.
    let h = c.head();
    assert_same_head(&h, &cap.head, true, "follow");
    for i in 1..=5 {
        d.write(&id, Stream::Stdout, format!("follow line {i}").as_bytes());
    }
    d.stop(&id);
    let body = raw_chunked(&c.chunks());
    assert_eq!(mask_timestamps(&body), mask_timestamps(&cap.body));
}

#[test]
fn lists_inspect_and_events_look_like_dockerd() {
    let d = double();
    let running = d.create_and_start(
        ContainerSpec::new("lc-cap-running").label("com.example.app", "demo").label("lc.test", "capture"),
    );
    let mut c = Client::connect(d.socket());

    // One container: small body, Content-Length.
    let cap = capture("containers-list.http");
    let (h, b) = c.get("/v1.41/containers/json");
    assert_same_head(&h, &cap.head, false, "list");
    let ours: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let want: serde_json::Value = serde_json::from_slice(&cap.body).unwrap();
    for k in ["Names", "Image", "Labels", "State"] {
        assert_eq!(ours[0][k], want[0][k], "{k}");
    }

    // Nine: over 2 KiB, chunked in one chunk.
    for i in 0..8 {
        let id = d.create_and_start(ContainerSpec::new(format!("lc-cap-exited-{i}")));
        d.stop(&id);
    }
    let cap = capture("containers-list-all.http");
    c.send("/v1.41/containers/json?all=1");
    let h = c.head();
    assert_same_head(&h, &cap.head, true, "list all");
    let chunks = c.chunks();
    assert_eq!(chunks.len(), 1);
    let all: serde_json::Value = serde_json::from_slice(&chunks[0]).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 9);
    // Newest first.
    assert_eq!(all[0]["Names"][0], "/lc-cap-exited-7");

    let cap = capture("inspect.http");
    c.send(&format!("/v1.41/containers/{running}/json"));
    let h = c.head();
    assert_same_head(&h, &cap.head, true, "inspect");
    let chunks = c.chunks();
    assert_eq!(chunks.len(), 1);
    let ours: serde_json::Value = serde_json::from_slice(&chunks[0]).unwrap();
    let want = capture_json_chunked(&cap.body);
    for p in [
        "/Name",
        "/Config/Tty",
        "/Config/Image",
        "/Config/Labels",
        "/State/Status",
        "/State/Running",
        "/HostConfig/LogConfig/Type",
    ] {
        assert_eq!(ours.pointer(p), want.pointer(p), "{p}");
    }
    assert!(ours["LogPath"].as_str().unwrap().ends_with("-json.log"));
}

fn capture_json_chunked(body: &[u8]) -> serde_json::Value {
    let nl = body.windows(2).position(|w| w == b"\r\n").unwrap();
    let n = usize::from_str_radix(std::str::from_utf8(&body[..nl]).unwrap(), 16).unwrap();
    serde_json::from_slice(&body[nl + 2..nl + 2 + n]).unwrap()
}

/// Replace ids and times in an event line so two can be compared as text.
fn mask_event(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    let (t, tn) = (v["time"].to_string(), v["timeNano"].to_string());
    line.replace(&id, "ID")
        .replace(&format!("\"timeNano\":{tn}"), "\"timeNano\":0")
        .replace(&format!("\"time\":{t}"), "\"time\":0")
}

#[test]
fn events_match_the_capture_text() {
    let cap = capture("events.http");
    // The capture is cut by curl's timeout: parse its chunks by hand.
    let mut want = Vec::new();
    let mut b = &cap.body[..];
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap(), 16).unwrap();
        want.push(String::from_utf8(b[nl + 2..nl + 2 + n].to_vec()).unwrap());
        b = &b[nl + 2 + n + 2..];
    }
    let by_action = |action: &str, nth: usize| -> String {
        want.iter()
            .filter(|l| l.contains(&format!("\"Action\":\"{action}\"")))
            .nth(nth)
            .map(|l| mask_event(l.trim_end()))
            .unwrap()
    };

    let d = double();
    let mut c = Client::connect(d.socket());
    c.send("/v1.41/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D");
    let h = c.head();
    assert_same_head(&h, &cap.head, true, "events");
    let id = d.create_and_start(ContainerSpec::new("lc-cap-events").label("lc.test", "capture"));
    d.stop_with(&id, 137);
    d.remove(&id);
    let mut got = Vec::new();
    for _ in 0..6 {
        let chunk = c.chunk().unwrap().unwrap();
        assert!(chunk.ends_with(b"\n"));
        got.push(mask_event(std::str::from_utf8(&chunk).unwrap().trim_end()));
    }
    // dockerd's stop: create start kill(15) kill(9) die stop destroy; ours
    // skips the second kill (the process honours SIGTERM).
    assert_eq!(got[0], by_action("create", 0));
    assert_eq!(got[1], by_action("start", 0));
    assert_eq!(got[2], by_action("kill", 0));
    assert_eq!(got[3], by_action("die", 0));
    assert_eq!(got[4], by_action("stop", 0));
    assert_eq!(got[5], by_action("destroy", 0));
}
