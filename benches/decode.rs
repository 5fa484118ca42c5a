//! Throughput of the whole decode pipeline (HTTP head, chunked body, Docker
//! frames, timestamp prefixes, line reassembly) on synthetic logs responses
//! shaped exactly like dockerd's, next to a plain `memchr` newline count over
//! the same bytes measured in the same run. See `benches/README.md`.
//!
//! Run: `cargo bench --bench decode` (all), or e.g.
//! `cargo bench --bench decode -- bytes/short_lines` (one input).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput};

use criterion::measurement::WallTime;
use log_capturer::docker::logstream::{Framing, LogEvent, LogStreamConfig};
use log_capturer::docker::timestamp;
use log_capturer::record;
use log_capturer::response::{ResponseConfig, ResponseDecoder};

/// Size of the agent's shared read buffer: the pipeline is fed in reads of
/// this many bytes.
const READ_SIZE: usize = 64 * 1024;
/// Approximate wire size of each input.
const TARGET_BYTES: usize = 4 << 20;
/// dockerd's log copier buffer: longer lines come as partials of this size.
const PARTIAL: usize = 16 * 1024;

/// The head of a successful logs response, as dockerd 20.10 (API 1.41)
/// sends it (see tests/data/*.http): no Content-Type, always chunked.
const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Api-Version: 1.41\r\n\
Docker-Experimental: false\r\n\
Ostype: linux\r\n\
Server: Docker/20.10.24+dfsg1 (linux)\r\n\
Date: Fri, 27 Nov 2026 19:48:22 GMT\r\n\
Transfer-Encoding: chunked\r\n\
\r\n";

/// First timestamp of every input: 2026-11-27T19:48:22.687468145Z.
const T0: i64 = 1_795_808_902_687_468_145;

// ---------------------------------------------------------------------------
// Deterministic input generation
// ---------------------------------------------------------------------------

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE", "HEAD"];
const PATHS: &[&str] = &[
    "/",
    "/healthz",
    "/api/v1/items",
    "/api/v1/users/me",
    "/static/app.js",
    "/api/v2/orders",
    "/metrics",
    "/login",
];
const AGENTS: &[&str] = &[
    "curl/8.5.0",
    "Go-http-client/1.1",
    "kube-probe/1.29",
    "Mozilla/5.0 (X11; Linux x86_64)",
    "python-requests/2.31",
];
const STATUSES: &[&str] = &["200", "200", "200", "200", "201", "204", "301", "404", "500"];
const LEVELS: &[&str] = &["warn", "error", "info", "debug"];
const MSGS: &[&str] = &[
    "upstream responded slowly",
    "retrying connection to db",
    "cache miss ratio above threshold",
    "request body too large",
    "worker restarted",
    "tls handshake failed: EOF",
];
const WORDS: &[&str] =
    &["alpha", "beta", "gamma", "delta", "node", "shard", "queue", "batch", "ready", "value"];

/// Pad or cut `s` to a length in `lo..=hi`.
fn fit(rng: &mut Rng, mut s: String, lo: usize, hi: usize) -> String {
    while s.len() < lo {
        s.push(' ');
        s.push_str(rng.pick(WORDS));
        s.push('=');
        s.push_str(&rng.below(10_000).to_string());
    }
    s.truncate(hi);
    s
}

/// An nginx-style access log line (stdout), 60..=120 bytes, no newline.
fn access_line(rng: &mut Rng, n: u64) -> String {
    let s = format!(
        "10.0.{}.{} - - [27/Nov/2026:19:48:{:02} +0000] \"{} {}?id={} HTTP/1.1\" {} {} \"-\" \"{}\"",
        rng.below(8),
        rng.range(2, 254),
        n % 60,
        rng.pick(METHODS),
        rng.pick(PATHS),
        rng.below(100_000),
        rng.pick(STATUSES),
        rng.below(50_000),
        rng.pick(AGENTS),
    );
    fit(rng, s, 60, 120)
}

/// A logfmt line (stderr), 60..=120 bytes, no newline.
fn logfmt_line(rng: &mut Rng) -> String {
    let s = format!(
        "level={} caller=server.go:{} msg=\"{}\" dur={}ms",
        rng.pick(LEVELS),
        rng.range(10, 999),
        rng.pick(MSGS),
        rng.below(5_000),
    );
    fit(rng, s, 60, 120)
}

/// One message as dockerd sends it: timestamp, space, content.
fn message(ts: i64, content: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(31 + content.len());
    m.extend_from_slice(&timestamp::format(ts));
    m.push(b' ');
    m.extend_from_slice(content);
    m
}

/// A multiplexed frame: `[stream, 0, 0, 0, len_be32]` + payload.
fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&[stream, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A logs response under construction: wire bytes plus what a correct
/// decoder must find in them.
struct Input {
    name: &'static str,
    framing: Framing,
    wire: Vec<u8>,
    /// The de-chunked body (frames or raw bytes).
    body: Vec<u8>,
    /// Complete lines (= records) in the stream.
    lines: u64,
    /// Sum of the records' message lengths.
    message_bytes: u64,
}

impl Input {
    fn new(name: &'static str, framing: Framing) -> Self {
        Self { name, framing, wire: HEAD.to_vec(), body: Vec::new(), lines: 0, message_bytes: 0 }
    }

    /// One HTTP chunk, as dockerd writes one per frame / TTY message.
    fn chunk(&mut self, data: &[u8]) {
        self.wire.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        self.wire.extend_from_slice(data);
        self.wire.extend_from_slice(b"\r\n");
        self.body.extend_from_slice(data);
    }

    fn end(mut self) -> Self {
        self.wire.extend_from_slice(b"0\r\n\r\n");
        self
    }
}

/// Many short lines, one frame (and one chunk) per line, stdout access log
/// and stderr logfmt interleaved (about 1 in 5 on stderr).
fn short_lines() -> Input {
    let mut rng = Rng(0x5eed_0001);
    let mut inp = Input::new("short_lines", Framing::Multiplexed);
    let mut ts = T0;
    let mut n = 0;
    while inp.wire.len() < TARGET_BYTES {
        let (stream, content) =
            if rng.below(5) == 0 { (2, logfmt_line(&mut rng)) } else { (1, access_line(&mut rng, n)) };
        inp.lines += 1;
        inp.message_bytes += content.len() as u64;
        let mut c = content.into_bytes();
        c.push(b'\n');
        inp.chunk(&frame(stream, &message(ts, &c)));
        ts += rng.range(1_000, 2_000_000) as i64;
        n += 1;
    }
    inp.end()
}

/// A long JSON-ish line (a serialized object, the usual reason for 40 KB
/// log lines), exactly `len` bytes, no newline.
fn long_line(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut s = String::with_capacity(len + 128);
    s.push_str("{\"event\":\"snapshot\",\"items\":[");
    let mut i = 0;
    while s.len() < len {
        s.push_str(&format!(
            "{{\"id\":{},\"name\":\"{}-{:05}\",\"state\":\"{}\",\"score\":{}.{:03}}},",
            i,
            rng.pick(WORDS),
            rng.below(100_000),
            rng.pick(WORDS),
            rng.below(1000),
            rng.below(1000),
        ));
        i += 1;
    }
    s.truncate(len - 2);
    s.push_str("]}");
    s.into_bytes()
}

/// Few long lines of ~40 000 bytes, cut by dockerd into 16 KiB partial
/// messages, each in its own frame with the line's timestamp; only the last
/// ends in `\n`. Lines alternate between stdout and stderr, and short stderr
/// lines sometimes fall between the partials of a stdout line.
fn long_lines() -> Input {
    let mut rng = Rng(0x5eed_0002);
    let mut inp = Input::new("long_lines", Framing::Multiplexed);
    let mut ts = T0;
    let mut k = 0;
    while inp.wire.len() < TARGET_BYTES {
        let stream = if k % 2 == 0 { 1 } else { 2 };
        let len = rng.range(38_000, 42_000) as usize;
        let mut line = long_line(&mut rng, len);
        inp.lines += 1;
        inp.message_bytes += line.len() as u64;
        line.push(b'\n');
        for (j, part) in line.chunks(PARTIAL).enumerate() {
            if j > 0 && stream == 1 && rng.below(4) == 0 {
                let other = logfmt_line(&mut rng);
                inp.lines += 1;
                inp.message_bytes += other.len() as u64;
                let mut c = other.into_bytes();
                c.push(b'\n');
                inp.chunk(&frame(2, &message(ts + 1_000, &c)));
            }
            inp.chunk(&frame(stream, &message(ts, part)));
        }
        ts += rng.range(1_000_000, 50_000_000) as i64;
        k += 1;
    }
    inp.end()
}

const TTY_COLORS: &[&str] = &["\x1b[32mINFO\x1b[0m", "\x1b[33mWARN\x1b[0m", "\x1b[36mDEBUG\x1b[0m"];

/// A TTY container: raw bytes, `\r\n` line ends (the terminal's ONLCR), one
/// timestamped message per line, one chunk per message. Lines are 60..=120
/// bytes of mixed app output, some with ANSI colour codes.
fn tty() -> Input {
    let mut rng = Rng(0x5eed_0003);
    let mut inp = Input::new("tty", Framing::Raw);
    let mut ts = T0;
    let mut n = 0;
    while inp.wire.len() < TARGET_BYTES {
        let content = match rng.below(3) {
            0 => access_line(&mut rng, n),
            1 => logfmt_line(&mut rng),
            _ => {
                let s = format!(
                    "{} [worker-{}] processed batch {} in {}ms",
                    rng.pick(TTY_COLORS),
                    rng.below(16),
                    rng.below(1_000_000),
                    rng.below(900),
                );
                fit(&mut rng, s, 60, 120)
            }
        };
        inp.lines += 1;
        inp.message_bytes += content.len() as u64;
        let mut c = content.into_bytes();
        c.extend_from_slice(b"\r\n");
        inp.chunk(&message(ts, &c));
        ts += rng.range(1_000, 2_000_000) as i64;
        n += 1;
    }
    inp.end()
}

// ---------------------------------------------------------------------------
// What is measured
// ---------------------------------------------------------------------------

fn decoder(framing: Framing) -> ResponseDecoder {
    ResponseDecoder::new(ResponseConfig {
        stream: LogStreamConfig::new(framing, true),
        framing_from_content_type: false,
        detect_timestamps: false,
    })
}

/// The pipeline as the agent runs it: the response fed in 64 KiB reads,
/// each record counted and its message passed to `black_box`. Returns the
/// number of records.
fn parse(framing: Framing, wire: &[u8]) -> u64 {
    let mut dec = decoder(framing);
    let mut n = 0u64;
    let mut emit = |ev: LogEvent<'_>| {
        if let LogEvent::Record(r) = ev {
            black_box(r.message);
            n += 1;
        }
    };
    for read in wire.chunks(READ_SIZE) {
        dec.push(black_box(read), &mut emit).expect("input decodes");
    }
    dec.finish(&mut emit).expect("input ends cleanly");
    n
}

/// `parse`, plus every record written as a JSON line into a reused buffer,
/// as `log-capturer decode` does. Returns (records, JSON bytes).
fn parse_json(framing: Framing, wire: &[u8], out: &mut Vec<u8>) -> (u64, u64) {
    let mut dec = decoder(framing);
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut emit = |ev: LogEvent<'_>| {
        if let LogEvent::Record(r) = ev {
            out.clear();
            record::write_json(out, &r, b"");
            out.push(b'\n');
            black_box(&*out);
            n += 1;
            bytes += out.len() as u64;
        }
    };
    for read in wire.chunks(READ_SIZE) {
        dec.push(black_box(read), &mut emit).expect("input decodes");
    }
    dec.finish(&mut emit).expect("input ends cleanly");
    (n, bytes)
}

/// Baseline: newlines counted with `memchr_iter`, in the same 64 KiB reads.
fn memchr_count(bytes: &[u8]) -> u64 {
    let mut n = 0;
    for read in bytes.chunks(READ_SIZE) {
        n += memchr::memchr_iter(b'\n', black_box(read)).count() as u64;
    }
    n
}

/// Check once, outside the measurements, that the pipeline decodes the
/// input into exactly the lines it was made of.
fn check(inp: &Input) {
    let mut dec = decoder(inp.framing);
    let (mut n, mut bytes, mut ts_ok) = (0u64, 0u64, true);
    let mut json = Vec::new();
    let mut emit = |ev: LogEvent<'_>| match ev {
        LogEvent::Record(r) => {
            assert!(!r.truncated && !r.partial, "{}: bad record {r:?}", inp.name);
            n += 1;
            bytes += r.message.len() as u64;
            ts_ok &= r.timestamp.is_some_and(|t| t >= T0);
            // The JSON the parse_json variant writes is valid and carries
            // the message unchanged.
            json.clear();
            record::write_json(&mut json, &r, b"");
            let v: serde_json::Value = serde_json::from_slice(&json).expect("valid JSON");
            assert_eq!(v["message"].as_str().map(str::as_bytes), Some(r.message));
        }
        LogEvent::DaemonError(m) => panic!("{}: daemon error {m:?}", inp.name),
    };
    for read in inp.wire.chunks(READ_SIZE) {
        dec.push(read, &mut emit).expect("input decodes");
    }
    dec.finish(&mut emit).expect("input ends cleanly");
    assert!(dec.is_done(), "{}: response not complete", inp.name);
    assert_eq!(n, inp.lines, "{}: record count", inp.name);
    assert_eq!(bytes, inp.message_bytes, "{}: message bytes", inp.name);
    assert!(ts_ok, "{}: timestamps", inp.name);
    eprintln!(
        "input {:<11}: {:>8} wire bytes, {:>8} body bytes, {:>6} lines, {:>6.1} wire bytes/line, \
         {:>6} wire newlines",
        inp.name,
        inp.wire.len(),
        inp.body.len(),
        inp.lines,
        inp.wire.len() as f64 / inp.lines as f64,
        memchr_count(&inp.wire),
    );
}

fn configure(g: &mut BenchmarkGroup<'_, WallTime>) {
    // Each iteration is one whole ~4 MB response (0.2 to 30 ms), so a short
    // window still collects enough iterations; flat sampling (the same
    // iteration count in every sample) suits iterations this long. About
    // 75 s for the 18 benchmarks.
    g.sample_size(30)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
}

fn benches(c: &mut Criterion) {
    let inputs = [short_lines(), long_lines(), tty()];
    for inp in &inputs {
        check(inp);
    }

    for inp in &inputs {
        let framing = inp.framing;
        let wire = &inp.wire[..];

        // MB/s of wire bytes (the whole HTTP response), decimal megabytes.
        let mut g = c.benchmark_group(format!("bytes/{}", inp.name));
        configure(&mut g);
        g.throughput(Throughput::BytesDecimal(wire.len() as u64));
        g.bench_function("baseline_memchr_wire", |b| b.iter(|| memchr_count(wire)));
        g.bench_function("parse", |b| b.iter(|| parse(framing, wire)));
        let mut out = Vec::with_capacity(64 * 1024);
        g.bench_function("parse_json", |b| b.iter(|| parse_json(framing, wire, &mut out)));
        // This one scans the de-chunked body, which is smaller: its MB/s
        // are of body bytes.
        g.throughput(Throughput::BytesDecimal(inp.body.len() as u64));
        g.bench_function("baseline_memchr_body", |b| b.iter(|| memchr_count(&inp.body)));
        g.finish();

        // Lines (records) per second over the same input.
        let mut g = c.benchmark_group(format!("lines/{}", inp.name));
        configure(&mut g);
        g.throughput(Throughput::Elements(inp.lines));
        g.bench_function("parse", |b| b.iter(|| parse(framing, wire)));
        g.bench_function("parse_json", |b| b.iter(|| parse_json(framing, wire, &mut out)));
        g.finish();
    }
}

criterion_group!(decode, benches);
criterion_main!(decode);
