//! Long randomized runs of the agent against both doubles: the rig (both
//! doubles shared with a sampler thread, the agent restarted at will), the
//! ground truth (Docker's messages joined into lines as the agent joins
//! them), a once-a-second sampler (metrics, RSS, checkpoints), and the
//! evidence a failure prints: the seed, the timeline, what each agent said
//! and what the Loki double saw last.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loki_double as lk;

use crate::common::{Agent, Double, Stream, TempDir};

/// The seed: `LC_SEED`, else the clock. Printed at once, so that a run
/// that hangs or is killed can be replayed too.
pub fn seed_from_env(test: &str) -> u64 {
    let seed = std::env::var("LC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
            % 1_000_000
    });
    say(&format!("{test}: LC_SEED={seed}"));
    seed
}

/// Straight to stderr: libtest captures `eprintln!` of passing tests.
pub fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// splitmix64: the schedule's generator (the doubles get seeds drawn
/// from it, so one number replays everything the test decides).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[(self.next() % v.len() as u64) as usize]
    }
}

/// (container name, stream, timestamp, line), as `common/loki.rs` keys
/// entries.
pub type Key = crate::loki::Key;

/// One line Docker holds, joined from its partials.
#[derive(Clone, Debug)]
pub struct Line {
    pub stream: Stream,
    pub ts: i64,
    /// Its index among the lines of its stream with the same timestamp
    /// (the checkpoint's fingerprint counts them so).
    pub occ: u32,
    pub text: Vec<u8>,
}

/// A container's messages joined into lines as the agent joins dockerd's
/// 16 KiB partials (only the last piece ends with a newline; all carry the
/// first one's timestamp), without their `\n` or `\r\n`. A line still
/// open at the end is left out.
pub fn lines_of(docker: &Double, id: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut open: HashMap<Stream, (i64, Vec<u8>)> = HashMap::new();
    let mut last: HashMap<Stream, (i64, u32)> = HashMap::new();
    for (ts, stream, bytes) in docker.logs(id) {
        let piece = open.entry(stream).or_insert_with(|| (ts, Vec::new()));
        piece.1.extend_from_slice(&bytes);
        if !bytes.ends_with(b"\n") {
            continue;
        }
        let (ts, mut text) = open.remove(&stream).unwrap();
        while text.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            text.pop();
        }
        let occ = match last.get(&stream) {
            Some((t, n)) if *t == ts => n + 1,
            _ => 0,
        };
        last.insert(stream, (ts, occ));
        out.push(Line { stream, ts, occ, text });
    }
    out
}

/// The doubles, shared with the sampler thread, and the state directory.
pub struct Rig {
    pub docker: Arc<Double>,
    pub loki: Arc<lk::Double>,
    pub dir: TempDir,
    /// (id, name) of every container started, in order.
    pub containers: Vec<(String, String)>,
    pub t0: Instant,
}

impl Rig {
    pub fn new(tag: &str) -> Rig {
        Rig {
            docker: Arc::new(Double::start(crate::common::Config::in_temp_dir()).unwrap()),
            loki: Arc::new(lk::Double::start(lk::Config::default()).unwrap()),
            dir: TempDir::new(tag),
            containers: Vec::new(),
            t0: Instant::now(),
        }
    }

    pub fn start(&mut self, spec: crate::common::ContainerSpec) -> String {
        let name = spec.name.clone();
        let id = self.docker.create_and_start(spec);
        self.containers.push((id.clone(), name));
        id
    }

    /// Seconds since the run began, for timelines.
    pub fn t(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.t0).as_secs_f64()
    }

    /// The schedule's clock: wait until `secs` into the run.
    pub fn until(&self, secs: f64) {
        let at = self.t0 + Duration::from_secs_f64(secs);
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }

    /// Every line of every container, by key, with how many lines there are.
    pub fn truth(&self) -> Vec<(Key, Line)> {
        let mut v = Vec::new();
        for (id, name) in &self.containers {
            for l in lines_of(&self.docker, id) {
                let key = (name.clone(), l.stream.as_str().to_owned(), l.ts, l.text.clone());
                v.push((key, l));
            }
        }
        v
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.0.join("state")
    }
}

/// The agent's current process as the sampler sees it.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub generation: usize,
    pub pid: u32,
    pub metrics: SocketAddr,
}

/// One second of the run.
#[derive(Clone, Debug)]
pub struct Sample {
    pub t: f64,
    pub generation: usize,
    /// The sink's and the invariants' samples; `None` when /metrics did not
    /// answer within 2 s.
    pub metrics: Option<BTreeMap<String, f64>>,
    pub rss_kb: u64,
    pub stored: u64,
    /// Entries the double dropped as identical to one held: repeats.
    pub dups: u64,
    /// The checkpoint file's positions (see [`CheckpointSnap`]).
    pub checkpoint: Option<CheckpointSnap>,
}

/// Container id -> per stream (stdin, stdout, stderr) the newest
/// delivered line: (timestamp, occurrence).
pub type Positions = BTreeMap<String, [Option<(i64, u32)>; 3]>;

/// The state file as read at one moment, and how many entries the Loki
/// double had stored right after: each position must be covered by those.
#[derive(Clone, Debug)]
pub struct CheckpointSnap {
    pub seq: u64,
    pub newest: Positions,
    /// Each container's whole resume point, as JSON (for evidence).
    pub raw: BTreeMap<String, String>,
    pub stored_after: u64,
}

/// Read the newer of the two checkpoint copies (`src/checkpoint.rs`).
pub fn read_checkpoint(state: &Path) -> Option<(u64, Positions)> {
    let mut best: Option<(u64, Positions)> = None;
    for name in ["checkpoints.fresh.json", "checkpoints.json"] {
        let Ok(bytes) = std::fs::read(state.join(name)) else { continue };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else { continue };
        let seq = v["seq"].as_u64().unwrap_or(0);
        let mut m = BTreeMap::new();
        if let Some(cs) = v["containers"].as_object() {
            for (id, c) in cs {
                let mut per = [None; 3];
                if let Some(arr) = c["resume"]["newest"].as_array() {
                    for (i, fp) in arr.iter().enumerate().take(3) {
                        // [ts, stream, occ, hash] or the older object form.
                        let (ts, occ) = match fp {
                            serde_json::Value::Array(a) => (a[0].as_i64(), a[2].as_u64()),
                            serde_json::Value::Object(o) => {
                                (o.get("ts").and_then(|x| x.as_i64()), o.get("occ").and_then(|x| x.as_u64()))
                            }
                            _ => (None, None),
                        };
                        if let (Some(ts), Some(occ)) = (ts, occ) {
                            per[i] = Some((ts, occ as u32));
                        }
                    }
                }
                m.insert(id.clone(), per);
            }
        }
        if best.as_ref().map_or(true, |(s, _)| seq > *s) {
            best = Some((seq, m));
        }
    }
    best
}

/// Each container's resume point in the newer checkpoint copy, as JSON.
pub fn read_resumes(state: &Path) -> BTreeMap<String, String> {
    let mut best: (u64, BTreeMap<String, String>) = (0, BTreeMap::new());
    for name in ["checkpoints.fresh.json", "checkpoints.json"] {
        let Ok(bytes) = std::fs::read(state.join(name)) else { continue };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else { continue };
        let seq = v["seq"].as_u64().unwrap_or(0);
        if seq < best.0 && !best.1.is_empty() {
            continue;
        }
        let m = v["containers"]
            .as_object()
            .map(|cs| cs.iter().map(|(id, c)| (id.clone(), c["resume"].to_string())).collect())
            .unwrap_or_default();
        best = (seq, m);
    }
    best.1
}

/// GET /metrics without panicking: a wedged or dying agent is what the
/// sampler is for.
pub fn scrape(addr: SocketAddr) -> Option<BTreeMap<String, f64>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (_, body) = resp.split_once("\r\n\r\n")?;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter(|l| l.starts_with("log_capturer_sink") || l.starts_with("log_capturer_invariant"))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect(),
    )
}

pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A thread that samples the current agent once a second until dropped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub samples: Arc<Mutex<Vec<Sample>>>,
    pub target: Arc<Mutex<Option<Target>>>,
}

impl Sampler {
    pub fn start(rig: &Rig) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let target: Arc<Mutex<Option<Target>>> = Arc::new(Mutex::new(None));
        let (s, out, tgt) = (stop.clone(), samples.clone(), target.clone());
        let (loki, state, t0) = (rig.loki.clone(), rig.state_dir(), rig.t0);
        let thread = std::thread::spawn(move || {
            let mut next = Instant::now();
            while !s.load(Ordering::SeqCst) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(100)));
                    continue;
                }
                next += Duration::from_secs(1);
                let Some(t) = *tgt.lock().unwrap() else { continue };
                // The file first, then the double's count: whatever the
                // file says was acknowledged was stored before the answer.
                let checkpoint = read_checkpoint(&state).map(|(seq, newest)| CheckpointSnap {
                    seq,
                    newest,
                    raw: read_resumes(&state),
                    stored_after: loki.stats().entries_stored,
                });
                let sample = Sample {
                    t: now.saturating_duration_since(t0).as_secs_f64(),
                    generation: t.generation,
                    metrics: scrape(t.metrics),
                    rss_kb: rss_kb(t.pid),
                    stored: loki.stats().entries_stored,
                    dups: loki.stats().duplicates_dropped,
                    checkpoint,
                };
                out.lock().unwrap().push(sample);
            }
        });
        Sampler { stop, thread: Some(thread), samples, target }
    }

    pub fn follow(&self, generation: usize, agent: &Agent) {
        *self.target.lock().unwrap() = Some(Target { generation, pid: agent.pid(), metrics: agent.metrics });
    }

    /// The agent is gone (killed, not yet restarted): sample nothing.
    pub fn pause(&self) {
        *self.target.lock().unwrap() = None;
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Samples of one family (`family` or `family{…}`), summed.
pub fn family(m: &BTreeMap<String, f64>, family: &str) -> f64 {
    crate::loki::family_sum(m, family)
}

const REQ: &str = "log_capturer_sink_requests_total";
const RETRIES: &str = "log_capturer_sink_retries_total";
pub const INVARIANTS: &str = "log_capturer_invariant_violations_total";

/// `{result="ok"}` -> `ok`.
fn label_values(m: &BTreeMap<String, f64>, family: &str) -> String {
    m.iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(family)?.strip_prefix('{')?;
            let val = rest.split('"').nth(1)?;
            Some(format!("{val}={v}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One line per sample: the timeline of a run.
pub fn timeline(samples: &[Sample]) -> String {
    let mut s = String::new();
    for x in samples {
        match &x.metrics {
            None => s.push_str(&format!(
                "  t={:6.1}s agent#{} /metrics did not answer; rss {} kB, stored {}\n",
                x.t, x.generation, x.rss_kb, x.stored
            )),
            Some(m) => s.push_str(&format!(
                "  t={:6.1}s agent#{} requests[{}] up={} queue={}B backlog={}s retries[{}] rss={}kB stored={} dups={}\n",
                x.t,
                x.generation,
                label_values(m, REQ),
                m.get("log_capturer_sink_up").copied().unwrap_or(f64::NAN),
                m.get("log_capturer_sink_queue_bytes").copied().unwrap_or(f64::NAN),
                m.get("log_capturer_sink_backlog_age_seconds").copied().unwrap_or(f64::NAN),
                label_values(m, RETRIES),
                x.rss_kb,
                x.stored,
                x.dups
            )),
        }
    }
    s
}

/// How the last agent ended the run: whether its requests counter stood
/// still with lines queued (the wedge of issue 18), and since when.
pub fn wedge(samples: &[Sample]) -> Option<String> {
    let last_gen = samples.last()?.generation;
    let mine: Vec<&Sample> =
        samples.iter().filter(|s| s.generation == last_gen && s.metrics.is_some()).collect();
    let last = mine.last()?;
    let m = last.metrics.as_ref()?;
    let total = family(m, REQ);
    let since = mine
        .iter()
        .rev()
        .take_while(|s| s.metrics.as_ref().is_some_and(|m| family(m, REQ) == total))
        .last()
        .map_or(last.t, |s| s.t);
    let frozen = last.t - since;
    let queue = m.get("log_capturer_sink_queue_bytes").copied().unwrap_or(0.0);
    (frozen >= 10.0 && queue > 0.0).then(|| {
        format!(
            "WEDGED: agent#{last_gen}'s requests counter stood at [{}] from t={since:.1}s to t={:.1}s ({frozen:.0} s), \
             queue {queue} B, sink_up {}",
            label_values(m, REQ),
            last.t,
            m.get("log_capturer_sink_up").copied().unwrap_or(f64::NAN)
        )
    })
}

/// What the agent's last push is waiting for, as the double saw it: a
/// push left unanswered is held until the agent's `--sink-timeout`, and
/// says nothing meanwhile.
pub fn on_the_wire(rig: &Rig) -> String {
    let reqs = rig.loki.requests();
    let Some(last) = reqs.last() else { return "the Loki double got no request at all".to_owned() };
    let ago = last.at.elapsed().as_secs_f64();
    let what = match &last.fault {
        Some(lk::Fault::NeverAnswer) => {
            "left unanswered (NeverAnswer): the agent holds it until its --sink-timeout".to_owned()
        }
        Some(f) => format!("answered with the fault {f:?}"),
        None => format!("answered {}", last.status),
    };
    format!(
        "the Loki double's last request: #{} at t={:.1}s ({ago:.1} s before the end, on connection {}), {what}; \
         connections open now: {}",
        last.seq,
        rig.t(last.at),
        last.conn,
        rig.loki.stats().connections_open
    )
}

/// The Loki double's last `n` requests, one line each.
pub fn last_requests(rig: &Rig, n: usize) -> String {
    let reqs = rig.loki.requests();
    let mut s = String::new();
    for r in reqs.iter().rev().take(n).rev() {
        s.push_str(&format!(
            "  #{} t={:.2}s conn {} {} body {} B, {} entries, fault {:?}, {}\n",
            r.seq,
            rig.t(r.at),
            r.conn,
            if r.status == 0 { "no answer".to_owned() } else { format!("answered {}", r.status) },
            r.body_len,
            r.entries,
            r.fault,
            r.message.as_deref().unwrap_or("").chars().take(80).collect::<String>()
        ));
    }
    s
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What Loki holds compared with the lines Docker holds.
#[derive(Debug, Default)]
pub struct Compared {
    pub wanted: usize,
    pub stored: usize,
    pub missing: Vec<Key>,
    pub unexpected: Vec<Key>,
    /// (key, arrivals, the request that stored it first).
    pub repeated: Vec<(Key, u32, u64)>,
}

impl Compared {
    pub fn summary(&self) -> String {
        let short = |k: &Key| {
            let t = String::from_utf8_lossy(&k.3);
            format!("{}/{} {} {:?}", k.0, k.1, k.2, t.chars().take(40).collect::<String>())
        };
        let mut by_container: BTreeMap<&str, usize> = BTreeMap::new();
        for k in &self.missing {
            *by_container.entry(&k.0).or_default() += 1;
        }
        format!(
            "wanted {}, stored {}, missing {} {by_container:?} (first: {:?}), unexpected {} (first: {:?}), \
             repeated {} (first: {:?})",
            self.wanted,
            self.stored,
            self.missing.len(),
            self.missing.iter().take(3).map(short).collect::<Vec<_>>(),
            self.unexpected.len(),
            self.unexpected.iter().take(3).map(short).collect::<Vec<_>>(),
            self.repeated.len(),
            self.repeated
                .iter()
                .take(3)
                .map(|(k, n, r)| format!("{} x{n} (req {r})", short(k)))
                .collect::<Vec<_>>(),
        )
    }

    pub fn repeats_outside(&self, allowed: &HashSet<u64>) -> Vec<&(Key, u32, u64)> {
        self.repeated.iter().filter(|(_, _, r)| !allowed.contains(r)).collect()
    }
}

fn key_of(labels: &str, ts: i64, line: &[u8]) -> Key {
    let l: BTreeMap<String, String> = lk::parse_labels(labels).unwrap_or_default().into_iter().collect();
    let get = |k: &str| l.get(k).cloned().unwrap_or_default();
    (get("container"), get("stream"), ts, line.to_vec())
}

pub fn compare(rig: &Rig, truth: &[(Key, Line)]) -> Compared {
    let entries = rig.loki.entries();
    let mut c = Compared { wanted: truth.len(), stored: entries.len(), ..Compared::default() };
    let want: HashSet<&Key> = truth.iter().map(|(k, _)| k).collect();
    let mut got: HashMap<Key, u64> = HashMap::new();
    for e in &entries {
        let k = key_of(&e.labels, e.ts_ns, &e.line);
        if !want.contains(&k) {
            c.unexpected.push(k);
            continue;
        }
        got.entry(k).or_insert(e.request);
    }
    for (k, _) in truth {
        if !got.contains_key(k) {
            c.missing.push(k.clone());
        }
    }
    for ((labels, ts, line), n) in rig.loki.arrivals() {
        if n > 1 {
            let k = key_of(&labels, ts, &line);
            let req = got.get(&k).copied().unwrap_or(0);
            c.repeated.push((k, n, req));
        }
    }
    c.repeated.sort();
    c
}

/// Every checkpoint position the sampler read that was ahead of what
/// the Loki double had stored at that moment: a line of that container's
/// stream, at or before the position in Docker's order, not among the
/// first `stored_after` entries. Docker's order, not timestamps, so that
/// a clock step back does not put later lines "before" the position.
pub fn checkpoints_ahead(rig: &Rig, truth: &[(Key, Line)], samples: &[Sample]) -> Vec<String> {
    let entries = rig.loki.entries();
    let mut first: HashMap<Key, usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        first.entry(key_of(&e.labels, e.ts_ns, &e.line)).or_insert(i);
    }
    let names: HashMap<&str, &str> = rig.containers.iter().map(|(i, n)| (i.as_str(), n.as_str())).collect();
    // Per (name, stream slot): lines in Docker's order with the running
    // maximum of their first storing index (usize::MAX: never stored).
    type Order = Vec<((i64, u32), usize)>;
    let mut order: HashMap<(String, usize), Order> = HashMap::new();
    for (k, l) in truth {
        let slot = match l.stream {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        };
        let v = order.entry((k.0.clone(), slot)).or_default();
        let idx = first.get(k).copied().unwrap_or(usize::MAX);
        let run = v.last().map_or(idx, |(_, m)| (*m).max(idx));
        v.push(((l.ts, l.occ), run));
    }
    let mut bad = Vec::new();
    let mut seen = HashSet::new();
    for s in samples {
        let Some(cp) = &s.checkpoint else { continue };
        for (id, per) in &cp.newest {
            let Some(name) = names.get(id.as_str()) else { continue };
            for (slot, pos) in per.iter().enumerate() {
                let Some(pos) = pos else { continue };
                let Some(v) = order.get(&(name.to_string(), slot)) else { continue };
                // TTY lines are stdout whatever the fingerprint says.
                let Some(i) = v.iter().position(|(p, _)| p == pos) else { continue };
                let need = v[i].1;
                if need >= cp.stored_after as usize && seen.insert((id.clone(), slot, *pos)) {
                    bad.push(format!(
                        "t={:.1}s checkpoint seq {} puts {name} stream {slot} at {pos:?}, but only {} entries \
                         were stored then and a line up to there was {}",
                        s.t,
                        cp.seq,
                        cp.stored_after,
                        if need == usize::MAX { "never stored".to_owned() } else { format!("stored as entry {need}") }
                    ));
                }
            }
        }
    }
    bad
}

/// When the double answered (or meant to answer) a request: a late
/// answer goes out its delay after the body was read.
pub fn answered_at(r: &lk::RequestRecord) -> Instant {
    match &r.fault {
        Some(lk::Fault::Late(d)) => r.at + *d,
        _ => r.at,
    }
}

/// Pushes stored before `at` and answered no earlier than `window` before
/// it (their answer may have been lost with the process or the
/// connection, or not yet made it into a checkpoint): their entries may
/// come again.
pub fn stored_before(rig: &Rig, at: Instant, window: Duration) -> Vec<u64> {
    rig.loki
        .requests()
        .iter()
        .filter(|r| r.entries > 0 && r.at <= at && answered_at(r) + window >= at)
        .map(|r| r.seq)
        .collect()
}

/// The requests that first stored repeats outside the bound, one line each.
pub fn describe_requests(rig: &Rig, seqs: &std::collections::BTreeSet<u64>) -> String {
    let mut s = String::new();
    for r in rig.loki.requests().iter().filter(|r| seqs.contains(&r.seq)) {
        s.push_str(&format!(
            "  #{} t={:.2}s (answer due t={:.2}s) conn {} status {} {} entries fault {:?}\n",
            r.seq,
            rig.t(r.at),
            rig.t(answered_at(r)),
            r.conn,
            r.status,
            r.entries,
            r.fault
        ));
    }
    s
}

/// Where a failed run's evidence is kept (printed too).
pub fn evidence_file(test: &str, seed: u64, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("evidence");
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join(format!("{test}-seed{seed}.txt"));
    let _ = std::fs::write(&p, text);
    p
}

/// For each container with lines missing (at most 4): which lines, how
/// often its logs were asked for, and where its checkpoint stood over the
/// run (each distinct position with when it was first read).
pub fn missing_detail(rig: &Rig, c: &Compared, samples: &[Sample]) -> String {
    let mut by: BTreeMap<&str, Vec<&Key>> = BTreeMap::new();
    for k in &c.missing {
        by.entry(k.0.as_str()).or_default().push(k);
    }
    let stats = rig.docker.stats();
    let mut s = String::new();
    for (name, keys) in by.iter().take(4) {
        let Some((id, _)) = rig.containers.iter().find(|(_, n)| n == name) else { continue };
        let seqs: Vec<String> = keys
            .iter()
            .take(8)
            .map(|k| String::from_utf8_lossy(&k.3).split(' ').take(3).collect::<Vec<_>>().join(" "))
            .collect();
        s.push_str(&format!(
            "container {name} ({}): {} missing, first {seqs:?} (ts {}..); {} logs requests\n",
            &id[..12],
            keys.len(),
            keys.first().map_or(0, |k| k.2),
            stats.logs_requests_by_container.get(id).copied().unwrap_or(0)
        ));
        let mut last = None;
        for x in samples {
            let Some(cp) = &x.checkpoint else { continue };
            let pos = cp.newest.get(id).copied();
            if pos != last {
                let raw = cp.raw.get(id).map_or("", String::as_str);
                s.push_str(&format!("  t={:.1}s agent#{} checkpoint: {pos:?} {raw}\n", x.t, x.generation));
                last = pos;
            }
        }
    }
    s
}

/// Percentile of a sorted list.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
