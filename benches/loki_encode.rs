//! Records per second through a Loki batch: pushed (UTF-8 check, copy,
//! grouping by label set, accounting) and finished (encoded and compressed)
//! with the default limits (1 MiB batches, 256 KiB lines), for
//! protobuf+snappy and json+gzip, from 100 and 1 000 container streams.
//!
//! Lines are 100 bytes of access-log and logfmt text, as `benches/decode.rs`
//! makes them; each entry carries the default structured metadata (a 64-hex
//! container id and an image name), as the agent sends it. Records come in
//! runs of 1 to 20 lines of one stream, as reads of one container deliver
//! them.
//!
//! Run: `cargo bench --bench loki_encode`, or e.g.
//! `cargo bench --bench loki_encode -- protobuf`.
//! Before measuring, each case prints to stderr the sizes of its bodies
//! (bytes on the wire per line) and its lines per CPU second over ten runs
//! (this thread's user + system time, from `getrusage`): the figure the
//! goal of issue #12 is stated in, which wall time on a busy machine
//! understates.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

use nix::sys::resource::{getrusage, UsageWho};

use log_capturer::agent::container::Rng;
use log_capturer::docker::frame::StreamId;
use log_capturer::sink::loki::batch::{Batch, Full, Limits, Line};
use log_capturer::sink::loki::encoding::Encoding;
use log_capturer::sink::loki::labels::{Container, LabelConfig, LokiStream};

/// Records per iteration.
const RECORDS: usize = 200_000;
/// Bytes per line.
const LINE: usize = 100;
/// First timestamp: 2026-11-27T19:48:22.687468145Z.
const T0: i64 = 1_795_808_902_687_468_145;

const PATHS: &[&str] = &["/", "/healthz", "/api/v1/items", "/api/v1/users/me", "/static/app.js", "/login"];
const AGENTS: &[&str] = &["curl/8.5.0", "Go-http-client/1.1", "kube-probe/1.29", "python-requests/2.31"];
const STATUSES: &[&str] = &["200", "200", "200", "201", "204", "301", "404", "500"];
const LEVELS: &[&str] = &["warn", "error", "info", "debug"];
const MSGS: &[&str] =
    &["upstream responded slowly", "retrying connection to db", "worker restarted", "cache miss"];

/// A 100-byte access-log or logfmt line.
fn line(rng: &mut Rng, n: u64) -> Vec<u8> {
    let mut s = if rng.below(5) == 0 {
        format!(
            "level={} caller=server.go:{} msg=\"{}\" dur={}ms",
            rng.pick(LEVELS),
            10 + rng.below(990),
            rng.pick(MSGS),
            rng.below(5_000)
        )
    } else {
        format!(
            "10.0.{}.{} - - [27/Nov/2026:19:48:{:02} +0000] \"GET {}?id={} HTTP/1.1\" {} {} \"{}\"",
            rng.below(8),
            2 + rng.below(250),
            n % 60,
            rng.pick(PATHS),
            rng.below(100_000),
            rng.pick(STATUSES),
            rng.below(50_000),
            rng.pick(AGENTS)
        )
    };
    while s.len() < LINE {
        s.push_str(&format!(" k{}={}", rng.below(10), rng.below(10_000)));
    }
    s.truncate(LINE);
    s.into_bytes()
}

struct Input {
    sources: Vec<Rc<LokiStream>>,
    /// (source, timestamp, line)
    records: Vec<(usize, i64, Vec<u8>)>,
}

fn input(streams: usize) -> Input {
    let cfg = LabelConfig::new("edge-node-07", vec![], vec![]).expect("default labels are valid");
    let mut labels = BTreeMap::new();
    labels.insert("com.docker.compose.project".to_owned(), "shop".to_owned());
    let sources = (0..streams)
        .map(|i| {
            labels.insert("com.docker.compose.service".to_owned(), format!("svc{}", i / 2));
            let id = format!("{:016x}{:048x}", 0x4f9c_1b8e_2d7a_6c5bu64.wrapping_mul(i as u64 + 1), i);
            let name = format!("/shop-svc{}-1", i / 2);
            let c =
                Container { id: &id, name: &name, image: "registry.local/shop/api:2.14.1", labels: &labels };
            let stream = if i % 2 == 0 { StreamId::Stdout } else { StreamId::Stderr };
            Rc::new(cfg.stream(&c, stream))
        })
        .collect();
    let mut rng = Rng::new(0x5eed_1012 + streams as u64);
    let mut records = Vec::with_capacity(RECORDS);
    let mut ts = T0;
    while records.len() < RECORDS {
        let s = rng.below(streams as u64) as usize;
        for _ in 0..1 + rng.below(20) {
            ts += 1_000 + rng.below(100_000) as i64;
            records.push((s, ts, line(&mut rng, records.len() as u64)));
        }
    }
    records.truncate(RECORDS);
    Input { sources, records }
}

/// Push every record, finishing batches as they fill and at the end.
/// Returns (batches, body bytes).
fn run(batch: &mut Batch<u64>, inp: &Input) -> (u64, u64) {
    let now = Instant::now();
    let (mut batches, mut bytes) = (0, 0);
    let mut finish = |batch: &mut Batch<u64>| {
        if let Some(f) = batch.finish() {
            batches += 1;
            bytes += f.body.bytes.len() as u64;
            black_box(f);
        }
    };
    for (n, (s, ts, text)) in inp.records.iter().enumerate() {
        let line = Line { timestamp_ns: *ts, text, truncated: false };
        if let Err(Full(token)) = batch.push(&inp.sources[*s], line, n as u64, now) {
            finish(batch);
            batch.push(&inp.sources[*s], line, token, now).expect("an empty batch takes a line");
        }
    }
    finish(batch);
    (batches, bytes)
}

/// User and system CPU time of this thread so far.
fn thread_cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage(RUSAGE_THREAD)");
    let d = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    d(u.user_time()) + d(u.system_time())
}

fn benches(c: &mut Criterion) {
    for streams in [100, 1000] {
        let inp = input(streams);
        let mut g = c.benchmark_group(format!("loki_encode/{streams}_streams"));
        g.sample_size(20)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(4));
        g.throughput(Throughput::Elements(RECORDS as u64));
        for encoding in [Encoding::Protobuf, Encoding::Json] {
            let mut batch = Batch::new(Limits::default(), encoding);
            let (batches, bytes) = run(&mut batch, &inp);
            eprintln!(
                "{streams} streams, {encoding}: {RECORDS} lines of {LINE} bytes in {batches} batches, \
                 {bytes} body bytes ({:.1} per line)",
                bytes as f64 / RECORDS as f64
            );
            // The goal is stated in lines per CPU second, which wall time on a
            // shared machine overstates: measure this thread's CPU time too.
            let runs = 10;
            let cpu0 = thread_cpu();
            for _ in 0..runs {
                black_box(run(&mut batch, &inp));
            }
            let cpu = thread_cpu() - cpu0;
            eprintln!(
                "{streams} streams, {encoding}: {:.2} M lines per CPU second ({runs} runs, {:.3} s CPU)",
                (runs * RECORDS) as f64 / cpu.as_secs_f64() / 1e6,
                cpu.as_secs_f64()
            );
            g.bench_function(encoding.as_str(), |b| b.iter(|| run(&mut batch, &inp)));
        }
        g.finish();
    }
}

criterion_group!(loki_encode, benches);
criterion_main!(loki_encode);
