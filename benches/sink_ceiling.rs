//! The sink benchmark: lines per agent CPU second into the Loki double
//! (protobuf+snappy and json+gzip) beside the same run into `/dev/null`, at
//! N = 100 and 1 000 streams, and the agent's memory through a Loki outage.
//! Method, knobs and results: `benches/sink/README.md`. Run with
//! `make bench-loki`.
//!
//! Both doubles run in this process (the Docker API double on one server
//! thread, the Loki double on a thread per connection); the agent is a
//! child process (`target/release/log-capturer`), so the CPU and memory
//! read from `/proc/<pid>` are the agent's alone.

// The ceiling benchmark's modules; this one uses part of them.
#[allow(dead_code)]
#[path = "ceiling/agent.rs"]
mod agent;
#[allow(dead_code)]
#[path = "ceiling/proc.rs"]
mod proc;

#[path = "sink/child.rs"]
mod child;
#[path = "sink/summary.rs"]
mod summary;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use child::Child;
use summary::{Outage, Run, Sink};

/// Short lines: 80 bytes of text plus the newline, as the ceiling's.
const LINE_LEN: usize = 80;

struct Knobs {
    ns: Vec<usize>,
    /// Lines in the backlog of one throughput run, spread over N.
    lines: u64,
    /// Rounds: each runs every sink at every N back to back.
    rounds: usize,
    /// Which sinks the throughput runs use (`null,protobuf,json`).
    sinks: Vec<Sink>,
    outage_n: usize,
    /// Lines per second written during the outage scenario, all containers.
    outage_rate: u64,
    outage: Duration,
    /// Writing before the outage (delivery at the written rate).
    outage_warm: Duration,
    /// `down` (the double stopped: connections refused) or `503`.
    outage_kind: String,
    queue: String,
    only: Vec<String>,
    /// The real-rate runs: (containers, lines/s each).
    rates: Vec<(usize, f64)>,
    rate_secs: Duration,
    /// Extra agent flags for the real-rate runs (`SINK_RATE_ARGS`, split
    /// on spaces), e.g. to compare `--read-coalesce` values.
    rate_args: Vec<String>,
    out: PathBuf,
}

/// The variable `name`, or `default`, parsed; a bad value stops the bench.
fn knob<T: std::str::FromStr>(name: &str, default: &str) -> T {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    text.parse().unwrap_or_else(|_| panic!("{name}={text:?} is not valid (default {default})"))
}

/// A comma-separated `knob`, each item through `item`.
fn knob_list<T>(name: &str, default: &str, item: impl Fn(&str) -> Option<T>) -> Vec<T> {
    let text: String = knob(name, default);
    text.split(',').map(|s| item(s.trim()).unwrap_or_else(|| panic!("{name}: {s:?} is not valid"))).collect()
}

fn knobs() -> Knobs {
    let outage_kind: String = knob("SINK_OUTAGE_KIND", "down");
    assert!(matches!(outage_kind.as_str(), "down" | "503"), "SINK_OUTAGE_KIND: down or 503");
    let sink = |s: &str| [Sink::DevNull, Sink::Protobuf, Sink::Json].into_iter().find(|k| k.tag() == s);
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/sink/results");
    Knobs {
        ns: knob_list("SINK_NS", "100,1000", |s| s.parse().ok()),
        lines: knob("SINK_LINES", "3000000"),
        rounds: knob("SINK_ROUNDS", "3"),
        sinks: knob_list("SINK_SINKS", "null,protobuf,json", sink),
        outage_n: knob("SINK_OUTAGE_N", "100"),
        outage_rate: knob("SINK_OUTAGE_RATE", "50000"),
        outage: Duration::from_secs(knob("SINK_OUTAGE_SECS", "60")),
        outage_warm: Duration::from_secs(knob("SINK_OUTAGE_WARM_SECS", "10")),
        outage_kind,
        queue: knob("SINK_QUEUE_BYTES", "16MiB"),
        only: knob_list("SINK_ONLY", "throughput,outage,rates", |s| Some(s.to_owned())),
        rates: knob_list("SINK_RATES", "20x20,20x65,20x500,500x20,500x65", |s| {
            let (n, r) = s.split_once('x')?;
            Some((n.parse().ok()?, r.parse().ok()?))
        }),
        rate_secs: Duration::from_secs(knob("SINK_RATE_SECS", "20")),
        rate_args: knob::<String>("SINK_RATE_ARGS", "").split_whitespace().map(str::to_owned).collect(),
        out: std::env::var_os("SINK_OUT").map_or(results, PathBuf::from),
    }
}

/// This process's scratch directory (`lc-sink-PID`), removed at the end;
/// each run takes a subdirectory.
struct Scratch(PathBuf);

impl Scratch {
    fn run(&self, tag: &str) -> PathBuf {
        let p = self.0.join(tag);
        std::fs::create_dir_all(&p).expect("create a scratch directory");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!("sink: {}", msg.as_ref());
}

fn docker() -> docker_double::Double {
    docker_double::Double::start(docker_double::Config::in_temp_dir()).expect("start the Docker API double")
}

/// The Loki double counting only: the runs' volume would not fit kept.
fn loki(listen: SocketAddr) -> std::io::Result<loki_double::Double> {
    loki_double::Double::start(loki_double::Config { listen, keep_entries: false, ..Default::default() })
}

/// N silent containers `c00001`…: their lines come from `prefill`.
fn containers(d: &docker_double::Double, n: usize) -> Vec<String> {
    let w =
        docker_double::Writer { lines_per_sec: 0.0, stderr_every: 10, line_len: LINE_LEN, max_lines: None };
    (1..=n)
        .map(|i| d.create_and_start(docker_double::ContainerSpec::new(format!("c{i:05}")).writer(w.clone())))
        .collect()
}

/// Whether the agent follows `n` containers on `n` open streams within
/// `timeout`.
fn all_streams_open(a: &Child, d: &docker_double::Double, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let m = a.metrics();
        let open = |k: &str| m.get(k).is_some_and(|v| *v as usize == n);
        if open("log_capturer_active_streams")
            && open("log_capturer_containers_followed")
            && d.stats().log_streams_open == n
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Lines the agent read (`log_capturer_lines_total`, both streams).
fn read_lines(m: &BTreeMap<String, f64>) -> u64 {
    agent::lines(m)
}

/// Lines the sink acknowledged to the agent.
fn acked_lines(m: &BTreeMap<String, f64>) -> u64 {
    agent::sum(m, "log_capturer_sink_lines_total") as u64
}

// ---- throughput ----------------------------------------------------------

/// One backlog of `total` lines over `n` streams into `sink`. Problems go
/// to `failures` (the bench fails at the end, after writing its results).
fn throughput(
    tmp: &Scratch,
    n: usize,
    total: u64,
    sink: Sink,
    round: usize,
    failures: &mut Vec<String>,
) -> Option<Run> {
    let what = format!("round {round} N={n} {}", sink.name());
    let dir = tmp.run(&format!("tput-{n}-{round}-{}", sink.tag()));
    let d = docker();
    let l = match sink {
        Sink::DevNull => None,
        _ => Some(loki(SocketAddr::from(([127, 0, 0, 1], 0))).expect("start the Loki double")),
    };
    let per = (total / n as u64).max(1);
    let total = per * n as u64;
    let ids = containers(&d, n);
    let a = Child::start(d.socket(), &dir, &sink.args(l.as_ref().map(|l| l.url())));
    if !all_streams_open(&a, &d, n, Duration::from_secs(180)) {
        failures.push(format!("{what}: streams did not all open in 180 s; agent: {}", a.tail(3)));
        return None;
    }
    // As the ceiling: lines stamped within 1 s of a first open count as
    // history (`FIRST_TAIL`); measure the steady state after it.
    std::thread::sleep(Duration::from_millis(1500));
    let delivered = |m: &BTreeMap<String, f64>| match &l {
        Some(l) => l.stats().entries_stored,
        None => read_lines(m),
    };
    // Scraped every 20 ms in every run, whatever the sink: the scrapes'
    // cost is the same in each.
    let m0 = a.metrics();
    let ((cpu0, wait0), got0, t0) = (proc::sched(a.pid), delivered(&m0), Instant::now());
    d.prefill_each(&ids, per);
    let (mut t_read, mut t_last, mut got, mut peak_rss) = (None, t0, got0, 0);
    let mut progress = Instant::now();
    while got < got0 + total && progress.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
        let m = a.metrics();
        peak_rss = peak_rss.max(proc::mem(a.pid).rss_kib);
        if t_read.is_none() && read_lines(&m) >= total {
            t_read = Some(Instant::now());
        }
        let now = delivered(&m);
        if now > got {
            (got, t_last, progress) = (now, Instant::now(), Instant::now());
        }
    }
    let (cpu1, wait1) = proc::sched(a.pid);
    let cpu = (cpu1 - cpu0).as_secs_f64();
    let wall = (t_last - t0).as_secs_f64().max(1e-9);
    let mem = proc::mem(a.pid);
    // Anything more arriving now would be a duplicate.
    std::thread::sleep(Duration::from_millis(500));
    let m = a.metrics();
    let got = delivered(&m) - got0;
    let mut check = |ok: bool, msg: String| {
        if !ok {
            log(format!("FAIL {what}: {msg}"));
            failures.push(format!("{what}: {msg}"));
        }
    };
    check(got == total, format!("{got} of {total} lines delivered"));
    check(read_lines(&m) == total, format!("the agent read {} of {total} lines", read_lines(&m)));
    let mut run = Run {
        sink,
        n,
        round,
        lines: total,
        wall_s: wall,
        read_s: t_read.map(|t| (t - t0).as_secs_f64()),
        per_cpu_s: got as f64 / cpu.max(1e-9),
        per_wall_s: got as f64 / wall,
        cpu_pct: 100.0 * cpu / wall,
        runq_pct: 100.0 * (wait1 - wait0).as_secs_f64() / wall,
        peak_rss_kib: mem.hwm_kib.max(peak_rss),
        wire_b_per_line: None,
        pushes: None,
    };
    if let Some(l) = &l {
        let s = l.stats();
        check(
            acked_lines(&m) == total,
            format!("the agent counts {} of {total} acknowledged", acked_lines(&m)),
        );
        check(s.decode_errors == 0, format!("{} bodies the double could not decode", s.decode_errors));
        check(
            s.rejected_total() == 0,
            format!("{} entries refused: {:?}", s.rejected_total(), s.entries_rejected),
        );
        let not_2xx: u64 =
            s.requests_by_status.iter().filter(|(c, _)| !(200..300).contains(*c)).map(|x| x.1).sum();
        check(not_2xx == 0, format!("answers other than 2xx: {:?}", s.requests_by_status));
        run.wire_b_per_line = Some(s.bytes_received as f64 / total as f64);
        run.pushes = Some(s.requests_total);
    }
    let status = a.stop();
    check(status.contains("exit status: 0"), format!("agent exit: {status}"));
    log(run.describe());
    Some(run)
}

// ---- outage --------------------------------------------------------------

/// The outage scenario once a second: lines written, read and stored, the
/// sink queue and RSS (`results/outage.csv`).
struct Timeline {
    t0: Instant,
    next: Instant,
    csv: String,
}

impl Timeline {
    fn new() -> Timeline {
        let csv = "t_s,phase,written,read,stored,queue_kib,rss_kib\n".to_owned();
        Timeline { t0: Instant::now(), next: Instant::now(), csv }
    }

    /// A row if a second has passed since the last; `stored` when known.
    fn at(&mut self, phase: &str, written: u64, stored: Option<u64>, a: &Child) {
        if Instant::now() < self.next {
            return;
        }
        self.next += Duration::from_secs(1);
        let m = a.metrics();
        let _ = std::fmt::Write::write_fmt(
            &mut self.csv,
            format_args!(
                "{:.1},{phase},{written},{},{},{},{}\n",
                self.t0.elapsed().as_secs_f64(),
                read_lines(&m),
                stored.map_or(String::new(), |v| v.to_string()),
                agent::sum(&m, "log_capturer_sink_queue_bytes") as u64 / 1024,
                proc::mem(a.pid).rss_kib
            ),
        );
    }
}

/// N busy containers into the Loki double; the double goes away (or
/// answers 503) for `k.outage` while they keep writing; then it is back
/// and the writing stops: every line must arrive. RSS is sampled all along.
fn outage(tmp: &Scratch, k: &Knobs, failures: &mut Vec<String>) -> Option<Outage> {
    let n = k.outage_n;
    let what = format!("outage N={n} {} s {}", k.outage.as_secs(), k.outage_kind);
    let dir = tmp.run("outage");
    let d = docker();
    let first = loki(SocketAddr::from(([127, 0, 0, 1], 0))).expect("start the Loki double");
    let (addr, url) = (first.addr(), first.url());
    let mut l = Some(first);
    let ids = containers(&d, n);
    let sink = ["--loki", &url, "--sink-queue-bytes", &k.queue].map(str::to_owned);
    let a = Child::start(d.socket(), &dir, &sink);
    if !all_streams_open(&a, &d, n, Duration::from_secs(180)) {
        failures.push(format!("{what}: streams did not all open in 180 s; agent: {}", a.tail(3)));
        return None;
    }
    std::thread::sleep(Duration::from_millis(1500));
    // The writing: every 100 ms, the lines due so far (catching up if a
    // tick ran late), spread evenly over the containers.
    let tick = Duration::from_millis(100);
    let mut tl = Timeline::new();
    let began = tl.t0;
    let mut per = 0u64;
    let write = |per: &mut u64| {
        let due = (began.elapsed().as_secs_f64() * k.outage_rate as f64 / n as f64) as u64;
        if due > *per {
            d.prefill_each(&ids, due - *per);
            *per = due;
        }
    };
    let mut o = Outage {
        n,
        secs: k.outage.as_secs_f64(),
        kind: k.outage_kind.clone(),
        rate: k.outage_rate,
        ..Outage::default()
    };
    let mut stored_before = 0;
    // Warm-up: delivery keeps up; its RSS is the baseline.
    while began.elapsed() < k.outage_warm {
        write(&mut per);
        tl.at("before", per * n as u64, l.as_ref().map(|l| l.stats().entries_stored), &a);
        o.base_rss_kib = o.base_rss_kib.max(proc::mem(a.pid).rss_kib);
        std::thread::sleep(tick);
    }
    let down_at = Instant::now();
    // Both kinds start with 503s: a push stored just before the double
    // stops cannot then be answered 2xx after its entries were counted.
    let up = l.as_ref().expect("the Loki double is up");
    up.inject(loki_double::Match::Push, loki_double::Fault::Status(503), u32::MAX);
    if k.outage_kind == "down" {
        std::thread::sleep(Duration::from_millis(300));
        stored_before = up.stats().entries_stored;
        l = None;
    }
    // Every logs request after the streams opened is a reopen: a parked
    // stream comes back through an inspect, with `tail` and `since`.
    let opened0 = d.stats().logs_requests_total;
    let mut read = 0;
    while down_at.elapsed() < k.outage {
        write(&mut per);
        tl.at("outage", per * n as u64, None, &a);
        let m = a.metrics();
        o.peak_rss_kib = o.peak_rss_kib.max(proc::mem(a.pid).rss_kib);
        o.peak_queue_bytes = o.peak_queue_bytes.max(agent::sum(&m, "log_capturer_sink_queue_bytes") as u64);
        if read_lines(&m) > read {
            read = read_lines(&m);
            o.last_read_s = down_at.elapsed().as_secs_f64();
        }
        std::thread::sleep(tick);
    }
    o.read_at_end = read_lines(&a.metrics());
    if let Some(up) = &l {
        up.clear_faults();
    } else {
        // The same port: the agent's URL does not change. Another process
        // could take it meanwhile; retry a little.
        let deadline = Instant::now() + Duration::from_secs(10);
        l = loop {
            match loki(addr) {
                Ok(l) => break Some(l),
                Err(e) if Instant::now() < deadline => {
                    log(format!("{what}: restart on {addr}: {e}; retrying"));
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("{what}: could not restart the Loki double on {addr}: {e}"),
            }
        };
    }
    let up_at = Instant::now();
    let written = per * n as u64;
    o.written = written;
    let l = l.expect("the Loki double is back");
    let stored = |l: &loki_double::Double| stored_before + l.stats().entries_stored;
    let mut progress = Instant::now();
    let mut got = stored(&l);
    // The agent may be in a 30 s backoff when the double comes back.
    while got < written && progress.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_millis(50));
        o.drain_peak_rss_kib = o.drain_peak_rss_kib.max(proc::mem(a.pid).rss_kib);
        let now = stored(&l);
        tl.at("back", written, Some(now), &a);
        if now > got {
            got = now;
            progress = Instant::now();
            o.first_after_s.get_or_insert(up_at.elapsed().as_secs_f64());
        }
    }
    o.drain_s = up_at.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let m = a.metrics();
    let got = stored(&l);
    o.delivered = got;
    o.hwm_kib = proc::mem(a.pid).hwm_kib;
    o.reopened = d.stats().logs_requests_total - opened0;
    o.retries = agent::sum(&m, "log_capturer_sink_retries_total") as u64;
    let mut check = |ok: bool, msg: String| {
        if !ok {
            log(format!("FAIL {what}: {msg}"));
            failures.push(format!("{what}: {msg}"));
        }
    };
    check(got >= written, format!("{} of {written} lines lost", written - got.min(written)));
    check(
        acked_lines(&m) == written,
        format!("the agent counts {} of {written} acknowledged", acked_lines(&m)),
    );
    let status = a.stop();
    check(status.contains("exit status: 0"), format!("agent exit: {status}"));
    log(o.describe());
    std::fs::write(k.out.join("outage.csv"), &tl.csv).expect("write outage.csv");
    Some(o)
}

// ---- real rates ----------------------------------------------------------

/// One real-rate run: what the agent spends per line when containers write
/// at a steady rate (not a backlog), and how late lines reach Loki.
pub struct RateRun {
    pub n: usize,
    pub rate: f64,
    pub lines: u64,
    pub cpu_s_per_m: f64,
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub args: String,
}

/// `n` containers writing `rate` lines/s each (the double's own writers)
/// into the Loki double; after the streams open and 2 s of warm-up, agent
/// CPU and the lines stored over `k.rate_secs`, and the latency from each
/// line's Docker timestamp to its arrival in the double.
fn rates(tmp: &Scratch, k: &Knobs, n: usize, rate: f64, failures: &mut Vec<String>) -> Option<RateRun> {
    let what = format!("rates N={n} {rate}/s {}", k.rate_args.join(" "));
    let dir = tmp.run(&format!("rates-{n}-{rate}"));
    let d = docker();
    let l = loki(SocketAddr::from(([127, 0, 0, 1], 0))).expect("start the Loki double");
    let w =
        docker_double::Writer { lines_per_sec: rate, stderr_every: 10, line_len: LINE_LEN, max_lines: None };
    for i in 1..=n {
        d.create_and_start(docker_double::ContainerSpec::new(format!("c{i:05}")).writer(w.clone()));
    }
    let mut args = vec!["--loki".to_owned(), l.url()];
    args.extend(k.rate_args.iter().cloned());
    let a = Child::start(d.socket(), &dir, &args);
    if !all_streams_open(&a, &d, n, Duration::from_secs(180)) {
        failures.push(format!("{what}: streams did not all open in 180 s; agent: {}", a.tail(3)));
        return None;
    }
    std::thread::sleep(Duration::from_secs(2));
    let (s0, (cpu0, _)) = (l.stats(), proc::sched(a.pid));
    std::thread::sleep(k.rate_secs);
    let (s1, (cpu1, _)) = (l.stats(), proc::sched(a.pid));
    let lines = s1.entries_stored - s0.entries_stored;
    let mut window = s1.clone();
    for (w, b) in window.latency_ms.iter_mut().zip(s0.latency_ms.iter().chain(std::iter::repeat(&0))) {
        *w -= b;
    }
    let expect = (n as f64 * rate * k.rate_secs.as_secs_f64()) as u64;
    if lines < expect * 8 / 10 {
        failures.push(format!("{what}: {lines} lines stored in the window, {expect} written"));
    }
    let status = a.stop();
    if !status.contains("exit status: 0") {
        failures.push(format!("{what}: agent exit: {status}"));
    }
    let r = RateRun {
        n,
        rate,
        lines,
        cpu_s_per_m: (cpu1 - cpu0).as_secs_f64() / (lines.max(1) as f64 / 1e6),
        p50_ms: window.latency_quantile_ms(0.5),
        p99_ms: window.latency_quantile_ms(0.99),
        args: k.rate_args.join(" "),
    };
    log(format!(
        "{what}: {lines} lines in {:?}, {:.1} agent CPU s per million lines, latency p50 {:?} ms, p99 {:?} ms",
        k.rate_secs, r.cpu_s_per_m, r.p50_ms, r.p99_ms
    ));
    Some(r)
}

fn rates_table(runs: &[RateRun]) -> String {
    let mut t = String::from(
        "| containers | lines/s each | agent flags | lines stored | agent CPU s per M lines | latency p50 ms | p99 ms |\n\
         | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n",
    );
    let ms = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    for r in runs {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {} | {} |\n",
            r.n,
            r.rate,
            if r.args.is_empty() { "(defaults)" } else { &r.args },
            r.lines,
            r.cpu_s_per_m,
            ms(r.p50_ms),
            ms(r.p99_ms)
        ));
    }
    t
}

// ---- main ----------------------------------------------------------------

fn main() {
    let k = knobs();
    // The doubles hold a descriptor per connection the agent opens.
    let want_fds =
        k.ns.iter()
            .chain([&k.outage_n])
            .chain(k.rates.iter().map(|(n, _)| n))
            .max()
            .map_or(0, |&n| n as u64 + 256);
    let got_fds = docker_double::raise_fd_limit(u64::MAX).unwrap_or(0);
    assert!(got_fds >= want_fds, "ulimit -n is {got_fds}, the bench needs {want_fds}");
    std::fs::create_dir_all(&k.out).expect("create the results directory");
    let tmp = Scratch(std::env::temp_dir().join(format!("lc-sink-{}", std::process::id())));
    let want = |scenario: &str| k.only.iter().any(|s| s == scenario);
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut runs = Vec::new();
    if want("throughput") {
        for round in 1..=k.rounds {
            for &n in &k.ns {
                for &sink in &k.sinks {
                    runs.extend(throughput(&tmp, n, k.lines, sink, round, &mut failures));
                }
            }
        }
    }
    let out = if want("outage") { outage(&tmp, &k, &mut failures) } else { None };
    let mut rate_runs = Vec::new();
    if want("rates") {
        for &(n, rate) in &k.rates {
            rate_runs.extend(rates(&tmp, &k, n, rate, &mut failures));
        }
    }
    let mut text = summary::markdown(&runs, out.as_ref(), &k.queue, started.elapsed(), &failures);
    if !rate_runs.is_empty() {
        text.push_str(&format!(
            "\n## Real rates ({} s windows)\n\n{}",
            k.rate_secs.as_secs(),
            rates_table(&rate_runs)
        ));
    }
    std::fs::write(k.out.join("summary.md"), &text).expect("write summary.md");
    std::fs::write(k.out.join("runs.csv"), summary::csv(&runs)).expect("write runs.csv");
    println!("{text}");
    log(format!("wrote {}", k.out.join("summary.md").display()));
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
