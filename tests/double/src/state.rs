//! Everything the test thread and the server thread share, behind one mutex:
//! containers and their logs, the event ring, faults, stats, and the
//! requests the test makes of the server thread (daemon down/up, shutdown).
//!
//! The server thread holds the lock while it handles one batch of poll
//! events, so a test call waits at most one loop iteration, and the
//! renderers below read logs in place: a stream is a cursor, never a copy.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mio::net::UnixListener;
use mio::Waker;

use crate::{http, time, Config, ContainerSpec, Fault, Match, SinceMode, Stats, Stream, Writer};

/// Events kept for `since` replay and for subscribers that fall behind
/// (dockerd buffers 1024 per subscriber and replays the last 256).
const EVENT_RING: usize = 1024;
const EVENT_REPLAY: usize = 256;

/// A stream renders at most this much before it goes back to the socket:
/// small enough that 10 000 connections stay cheap, large enough that a
/// backlog moves in few system calls.
pub const OUT_BATCH: usize = 8 * 1024;
/// Messages a stream may skip (filtered out) in one go before letting other
/// connections run.
const SCAN_BUDGET: usize = 4096;
/// Lines one writer may produce in one tick when the loop fell behind.
const MAX_BURST: u64 = 1000;
/// Reopen downtimes kept until the test takes them.
const MAX_GAPS: usize = 1 << 20;

pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// Signalled by the server thread after each loop iteration that did
    /// something, and when it completes a request of the test.
    pub cond: Condvar,
    pub waker: Waker,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not take the
        // server (and every later assertion) down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake the server thread, once per batch of changes: a test writing
    /// thousands of lines should not cost thousands of eventfd writes.
    pub fn wake(&self, st: &mut State) {
        if !st.wake_pending {
            st.wake_pending = true;
            if let Err(e) = self.waker.wake() {
                eprintln!("docker-double: waking the server thread: {e}");
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Created,
    Running,
    Paused,
    Exited(i32),
}

pub(crate) struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub tty: bool,
    pub log_driver: String,
    pub status: Status,
    pub removed: bool,
    pub created_ns: i64,
    pub started_ns: Option<i64>,
    pub finished_ns: Option<i64>,
    /// Index in `State::containers`, used as a fake pid.
    pub key: usize,
    log: VecDeque<Msg>,
    /// Absolute index of `log[0]`: cursors are absolute, so dropping old
    /// messages (retention) never moves them.
    base: u64,
    last_ts: i64,
    /// `runs_ended[r]` is the log length when run `r` ended (stop, restart,
    /// removal). A follow stream started during run `r` ends there.
    runs_ended: Vec<u64>,
    writer: Option<AutoWriter>,
    dirty: bool,
    /// Logs responses in progress on this container, and when the last one
    /// ended: what a reopen's downtime is measured from.
    streams_open: u32,
    last_close: Option<Instant>,
}

impl Container {
    pub fn running(&self) -> bool {
        matches!(self.status, Status::Running | Status::Paused)
    }

    fn end(&self) -> u64 {
        self.base + self.log.len() as u64
    }

    fn current_run(&self) -> usize {
        self.runs_ended.len()
    }
}

struct Msg {
    ts: i64,
    stream: Stream,
    body: Body,
}

enum Body {
    Bytes(Box<[u8]>),
    /// A generated line, rendered from its number when sent: a benchmark's
    /// millions of lines cost a few words each. `start..end` selects a
    /// partial of the whole line (ending included).
    Auto {
        seq: u64,
        start: u32,
        end: u32,
    },
}

struct AutoWriter {
    spec: Writer,
    /// Lines written so far, all runs: the last `<seq>` used.
    seq: u64,
    /// Lines are due at `run_start + n / rate`; reset when the container
    /// (re)starts or unpauses so a pause is not followed by a burst.
    run_start: Instant,
    run_lines: u64,
    scheduled: bool,
}

impl AutoWriter {
    fn exhausted(&self) -> bool {
        self.spec.max_lines.is_some_and(|m| self.seq >= m)
            || !(self.spec.lines_per_sec > 0.0 && self.spec.lines_per_sec.is_finite())
    }

    fn due(&self) -> Instant {
        self.run_start + Duration::from_secs_f64((self.run_lines + 1) as f64 / self.spec.lines_per_sec)
    }
}

pub(crate) struct Event {
    pub time_ns: i64,
    pub action: String,
    pub id: String,
    pub image: String,
    pub name: String,
    /// Labels, `image`, `name`, and extras (`exitCode`, `signal`): sorted,
    /// as Go marshals a map.
    pub attrs: BTreeMap<String, String>,
}

/// Where a logs response ends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LogEnd {
    /// At this absolute message index (not following, or following a
    /// container that was not running).
    At(u64),
    /// Where run `r` of the container ends (follow).
    Run(usize),
}

/// A logs response in progress: which messages are next and how to render
/// them. Small and fixed-size: this is all a follow stream costs besides its
/// socket.
pub(crate) struct LogCursor {
    pub container: usize,
    pub next: u64,
    pub end: LogEnd,
    pub stdout: bool,
    pub stderr: bool,
    pub timestamps: bool,
    pub tty: bool,
    pub since: Option<i64>,
    /// StopAfterFirst: a message at or after `since` was seen.
    pub since_passed: bool,
    pub until: Option<i64>,
    /// Fault::SystemErr: sent as a stream-3 frame before the end.
    pub sys_err: Option<String>,
    /// A message after `until` was reached: end without sending more.
    pub cut: bool,
    /// A timer fired (CloseAfter, `until` passed): end once what is
    /// available now has been sent.
    pub expired: bool,
}

/// An events response in progress.
pub(crate) struct EventCursor {
    pub next: u64,
    /// Events before this index are the `since` replay and are filtered by
    /// time; later ones are live.
    pub replay_end: u64,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub filter: Filters,
    /// Below API 1.52 events also carry `status`, `id`, `from`.
    pub legacy: bool,
    /// An event after `until` was reached.
    pub cut: bool,
    /// A timer fired (CloseAfter, `until` passed).
    pub expired: bool,
}

/// Outcome of rendering into a connection's output buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Messages were rendered; call again once they are written.
    Wrote,
    /// The end of the response was rendered (terminating chunk).
    Ended,
    /// Nothing to send until the container or event log changes.
    Idle,
    /// Skipped a lot of filtered-out messages; call again soon.
    Yield,
}

/// `filters` of a list or events request: `{"label":["a","b=c"]}` or the
/// older `{"label":{"a":true}}`.
pub(crate) type Filters = BTreeMap<String, Vec<String>>;

/// Random faults: (probability, matcher, fault).
pub(crate) type Mix = Vec<(f64, Match, Fault)>;

pub(crate) struct State {
    pub cfg: Config,
    pub api_max: String,
    pub containers: Vec<Container>,
    by_id: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    pub events: VecDeque<Event>,
    pub events_base: u64,
    last_event_ns: i64,
    pub faults: Vec<(Match, Fault, u32)>,
    /// Random mode: the generator's state and the mix.
    pub random: Option<(u64, Mix)>,
    pub stats: Stats,
    /// Containers with new messages or an ended run since the server last
    /// looked: their parked follow streams are woken.
    pub dirty: Vec<usize>,
    pub events_dirty: bool,
    writers: BinaryHeap<Reverse<(Instant, usize)>>,
    pub wake_pending: bool,
    pub shutdown: bool,
    pub down_requested: u64,
    pub down_done: u64,
    pub listening: bool,
    pub new_listener: Option<UnixListener>,
    /// The server thread has exited: waiters give up.
    pub server_gone: bool,
    id_state: u64,
    /// Reused to render generated lines.
    scratch: Vec<u8>,
    /// Reopen downtimes not yet taken by the test (bounded).
    pub reopen_gaps: Vec<Duration>,
    /// The timestamp prefix of the last second rendered: consecutive
    /// messages mostly share their date and time of day.
    prefix_cache: (i64, [u8; time::PREFIX_LEN]),
    /// Added to the host's clock for everything this daemon stamps (log
    /// lines, `Date`, container and event times): a daemon whose clock is
    /// ahead of or behind the agent's, or stepped while running.
    pub clock_offset_ns: i64,
}

impl State {
    pub fn new(cfg: Config) -> State {
        let api_max = format!("{}.{}", cfg.api_max.0, cfg.api_max.1);
        let seed = time::now_ns() as u64 ^ (u64::from(std::process::id()) << 32);
        State {
            cfg,
            api_max,
            containers: Vec::new(),
            by_id: HashMap::new(),
            by_name: HashMap::new(),
            events: VecDeque::new(),
            events_base: 0,
            last_event_ns: 0,
            faults: Vec::new(),
            random: None,
            stats: Stats::default(),
            dirty: Vec::new(),
            events_dirty: false,
            writers: BinaryHeap::new(),
            wake_pending: false,
            shutdown: false,
            down_requested: 0,
            down_done: 0,
            listening: true,
            new_listener: None,
            server_gone: false,
            id_state: seed,
            scratch: Vec::new(),
            reopen_gaps: Vec::new(),
            prefix_cache: (i64::MIN, [0; time::PREFIX_LEN]),
            clock_offset_ns: 0,
        }
    }

    pub fn server(&self) -> http::Server<'_> {
        http::Server { api: &self.api_max, version: &self.cfg.server_version, now_ns: self.now_ns() }
    }

    /// This daemon's clock: the host's plus [`State::clock_offset_ns`].
    pub fn now_ns(&self) -> i64 {
        time::now_ns().saturating_add(self.clock_offset_ns)
    }

    /// Step this daemon's clock to `offset_ns` from the host's, as NTP
    /// steps a clock: lines written after a step back are stamped earlier
    /// than lines written before it (per-container timestamps stay strictly
    /// increasing only between steps). Event times stay increasing.
    pub fn set_clock_offset(&mut self, offset_ns: i64) {
        self.clock_offset_ns = offset_ns;
        for c in &mut self.containers {
            c.last_ts = 0;
        }
    }

    // ---- containers -------------------------------------------------

    /// dockerd's lookup: full id, then name, then unique id prefix.
    pub fn resolve(&self, s: &str) -> Option<usize> {
        if let Some(&k) = self.by_id.get(s) {
            return Some(k);
        }
        if let Some(&k) = self.by_name.get(s.strip_prefix('/').unwrap_or(s)) {
            return Some(k);
        }
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut found = None;
        for c in self.containers.iter().filter(|c| !c.removed) {
            if c.id.starts_with(s) {
                if found.is_some() {
                    return None; // ambiguous
                }
                found = Some(c.key);
            }
        }
        found
    }

    /// For the test API: a container that must exist.
    pub fn key(&self, s: &str) -> usize {
        self.resolve(s).unwrap_or_else(|| panic!("docker-double: no such container: {s}"))
    }

    pub fn id(&self, k: usize) -> &str {
        &self.containers[k].id
    }

    pub fn create(&mut self, spec: ContainerSpec) -> String {
        let name = spec.name.trim_start_matches('/').to_owned();
        assert!(
            !name.is_empty() && !self.by_name.contains_key(&name),
            "docker-double: container name {name:?} is empty or taken"
        );
        let id = loop {
            let id = self.new_id();
            if !self.containers.iter().any(|c| c.id == id) {
                break id;
            }
        };
        let key = self.containers.len();
        let writer = spec.writer.map(|spec| AutoWriter {
            spec,
            seq: 0,
            run_start: Instant::now(),
            run_lines: 0,
            scheduled: false,
        });
        self.containers.push(Container {
            id: id.clone(),
            name: name.clone(),
            image: spec.image,
            labels: spec.labels,
            tty: spec.tty,
            log_driver: spec.log_driver,
            status: Status::Created,
            removed: false,
            created_ns: self.now_ns(),
            started_ns: None,
            finished_ns: None,
            key,
            log: VecDeque::new(),
            base: 0,
            last_ts: 0,
            runs_ended: Vec::new(),
            writer,
            dirty: false,
            streams_open: 0,
            last_close: None,
        });
        self.by_id.insert(id.clone(), key);
        self.by_name.insert(name, key);
        self.emit(key, "create", &[]);
        id
    }

    /// 64 lower-case hex digits from a splitmix64 stream seeded by the clock
    /// and pid: unique enough, and no dependency for randomness.
    fn new_id(&mut self) -> String {
        let mut s = String::with_capacity(64);
        for _ in 0..4 {
            self.id_state = self.id_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.id_state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            s.push_str(&format!("{z:016x}"));
        }
        s
    }

    pub fn start(&mut self, k: usize) {
        let now = self.now_ns();
        let c = &mut self.containers[k];
        assert!(!c.removed, "docker-double: container {} is removed", c.id);
        if c.running() {
            return;
        }
        c.status = Status::Running;
        c.started_ns = Some(now);
        self.emit(k, "start", &[]);
        self.schedule_writer(k);
    }

    /// Stop a running container (`kill`, `die`, `stop` events). `stop_event`
    /// is false for `docker rm -f`, which kills without a `stop`.
    pub fn stop(&mut self, k: usize, exit_code: i32, stop_event: bool) {
        if !self.containers[k].running() {
            return;
        }
        let signal = if stop_event { "15" } else { "9" };
        self.emit(k, "kill", &[("signal", signal.to_owned())]);
        let now = self.now_ns();
        let c = &mut self.containers[k];
        c.status = Status::Exited(exit_code);
        c.finished_ns = Some(now);
        c.runs_ended.push(c.end());
        self.mark_dirty(k);
        // The follow streams of this run are woken (dirty) before the
        // server writes this event to subscribers, so like dockerd the
        // streams end before `die` is seen.
        self.emit(k, "die", &[("exitCode", exit_code.to_string())]);
        if stop_event {
            self.emit(k, "stop", &[]);
        }
    }

    pub fn pause(&mut self, k: usize, pause: bool) {
        let c = &mut self.containers[k];
        match (c.status, pause) {
            (Status::Running, true) => {
                c.status = Status::Paused;
                self.emit(k, "pause", &[]);
            }
            (Status::Paused, false) => {
                c.status = Status::Running;
                self.emit(k, "unpause", &[]);
                self.schedule_writer(k);
            }
            _ => {}
        }
    }

    pub fn remove(&mut self, k: usize) {
        if self.containers[k].running() {
            self.stop(k, 137, false);
        }
        let c = &mut self.containers[k];
        c.removed = true;
        let (id, name) = (c.id.clone(), c.name.clone());
        self.by_id.remove(&id);
        self.by_name.remove(&name);
        self.mark_dirty(k);
        self.emit(k, "destroy", &[]);
    }

    fn mark_dirty(&mut self, k: usize) {
        let c = &mut self.containers[k];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(k);
        }
    }

    /// Take the dirty list (the server thread, once per iteration).
    pub fn take_dirty(&mut self, into: &mut Vec<usize>) {
        into.clear();
        std::mem::swap(into, &mut self.dirty);
        for &k in into.iter() {
            self.containers[k].dirty = false;
        }
    }

    // ---- logs -------------------------------------------------------

    fn next_ts(&mut self, k: usize) -> i64 {
        let now = self.now_ns();
        let c = &mut self.containers[k];
        let ts = now.max(c.last_ts.saturating_add(1));
        c.last_ts = ts;
        ts
    }

    fn push(&mut self, k: usize, msg: Msg) {
        let retain = self.cfg.retain_messages.max(1);
        let c = &mut self.containers[k];
        c.log.push_back(msg);
        while c.log.len() > retain {
            c.log.pop_front();
            c.base += 1;
        }
        self.mark_dirty(k);
    }

    /// A line as the container prints it: newline added, split into
    /// partials that share one timestamp.
    pub fn write_line(&mut self, k: usize, stream: Stream, line: &[u8]) {
        let tty = self.containers[k].tty;
        let mut full = Vec::with_capacity(line.len() + 2);
        full.extend_from_slice(line);
        full.extend_from_slice(if tty { b"\r\n" } else { b"\n" });
        let ts = self.next_ts(k);
        let stream = if tty { Stream::Stdout } else { stream };
        let pl = self.cfg.partial_len.max(1);
        for piece in full.chunks(pl) {
            self.push(k, Msg { ts, stream, body: Body::Bytes(piece.into()) });
        }
    }

    pub fn append(&mut self, k: usize, stream: Stream, ts: i64, bytes: Box<[u8]>) {
        let c = &mut self.containers[k];
        c.last_ts = c.last_ts.max(ts);
        let stream = if c.tty { Stream::Stdout } else { stream };
        self.push(k, Msg { ts, stream, body: Body::Bytes(bytes) });
    }

    pub fn messages(&mut self, k: usize) -> Vec<(i64, Stream, Vec<u8>)> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let c = &self.containers[k];
        let out =
            c.log.iter().map(|m| (m.ts, m.stream, body_bytes(c, &m.body, &mut scratch).to_vec())).collect();
        self.scratch = scratch;
        out
    }

    /// The absolute index after the last stored message of container `k`.
    pub fn log_end(&self, k: usize) -> u64 {
        self.containers[k].end()
    }

    /// Open a logs response on container `k`.
    pub fn log_cursor(&self, k: usize, follow: bool, tail: Option<u64>) -> LogCursor {
        let c = &self.containers[k];
        let end = c.end();
        let next = match tail {
            Some(n) => end.saturating_sub(n).max(c.base),
            None => c.base,
        };
        LogCursor {
            container: k,
            next,
            end: if follow && c.running() { LogEnd::Run(c.current_run()) } else { LogEnd::At(end) },
            stdout: true,
            stderr: true,
            timestamps: false,
            tty: c.tty,
            since: None,
            since_passed: false,
            until: None,
            sys_err: None,
            cut: false,
            expired: false,
        }
    }

    /// The index where a cursor's response stops, if known yet.
    fn cursor_limit(&self, cur: &LogCursor) -> Option<u64> {
        match cur.end {
            LogEnd::At(n) => Some(n),
            LogEnd::Run(r) => self.containers[cur.container].runs_ended.get(r).copied(),
        }
    }

    /// Render the next messages of `cur` into `out` (one chunk each), or the
    /// end of the response when there is nothing more.
    pub fn render_logs(&mut self, cur: &mut LogCursor, out: &mut Vec<u8>) -> Step {
        let limit = self.cursor_limit(cur);
        let mut scratch = std::mem::take(&mut self.scratch);
        let since_mode = self.cfg.since_mode;
        let c = &self.containers[cur.container];
        // Messages dropped by retention are gone, as after a rotation.
        cur.next = cur.next.max(c.base);
        let stop = limit.unwrap_or(u64::MAX).min(c.end());
        let mut scanned = 0;
        let mut sent = 0u64;
        while !cur.cut && cur.next < stop && out.len() < OUT_BATCH && scanned < SCAN_BUDGET {
            let m = &c.log[(cur.next - c.base) as usize];
            cur.next += 1;
            scanned += 1;
            let wanted = match m.stream {
                Stream::Stdout => cur.stdout,
                Stream::Stderr => cur.stderr,
            };
            if !wanted {
                continue;
            }
            if cur.until.is_some_and(|u| m.ts > u) {
                // dockerd ends the stream at the first message after until.
                cur.cut = true;
                break;
            }
            if let Some(s) = cur.since {
                match since_mode {
                    SinceMode::FilterAll if m.ts < s => continue,
                    SinceMode::StopAfterFirst if !cur.since_passed => {
                        if m.ts < s {
                            continue;
                        }
                        cur.since_passed = true;
                    }
                    _ => {}
                }
            }
            let body = body_bytes(c, &m.body, &mut scratch);
            render_message(out, cur, m.ts, m.stream, body, &mut self.prefix_cache);
            sent += 1;
        }
        self.scratch = scratch;
        self.stats.messages_sent += sent;
        if sent > 0 {
            return Step::Wrote;
        }
        if cur.cut || (cur.expired && cur.next >= stop) || limit.is_some_and(|l| cur.next >= l) {
            if let Some(msg) = cur.sys_err.take() {
                render_system_error(out, cur.tty, msg.as_bytes());
            }
            http::terminator(out);
            return Step::Ended;
        }
        if cur.next < stop {
            Step::Yield
        } else {
            Step::Idle
        }
    }

    // ---- writers ----------------------------------------------------

    fn schedule_writer(&mut self, k: usize) {
        let c = &mut self.containers[k];
        let running = c.status == Status::Running && !c.removed;
        let Some(w) = c.writer.as_mut() else { return };
        if !running || w.exhausted() {
            return;
        }
        // A new run paces from now, even if an entry of the previous run is
        // still in the heap (a quick restart): that entry then finds little
        // due and writes a single line.
        w.run_start = Instant::now();
        w.run_lines = 0;
        if w.scheduled {
            return;
        }
        w.scheduled = true;
        let due = w.due();
        self.writers.push(Reverse((due, k)));
    }

    /// Write the lines that are due; returns when the next one is.
    pub fn run_writers(&mut self, now: Instant) -> Option<Instant> {
        // Lines due within the next millisecond are written now: the poll
        // timeout has millisecond resolution anyway.
        let horizon = now + Duration::from_millis(1);
        while let Some(&Reverse((due, k))) = self.writers.peek() {
            if due > horizon {
                return Some(due);
            }
            self.writers.pop();
            self.writer_tick(k, now);
        }
        None
    }

    fn writer_tick(&mut self, k: usize, now: Instant) {
        let c = &mut self.containers[k];
        let running = c.status == Status::Running && !c.removed;
        let Some(w) = c.writer.as_mut() else { return };
        w.scheduled = false;
        if !running || w.exhausted() {
            return;
        }
        let elapsed = now.saturating_duration_since(w.run_start).as_secs_f64();
        let target = (elapsed * w.spec.lines_per_sec) as u64;
        let mut n = target.saturating_sub(w.run_lines).clamp(1, MAX_BURST);
        if let Some(max) = w.spec.max_lines {
            n = n.min(max.saturating_sub(w.seq));
        }
        for _ in 0..n {
            self.write_auto(k);
        }
        let Some(w) = self.containers[k].writer.as_mut() else {
            return;
        };
        if !w.exhausted() {
            w.scheduled = true;
            let due = w.due();
            self.writers.push(Reverse((due, k)));
        }
    }

    /// `lines` generated lines in the container's writer format, written
    /// now (a backlog). Returns false if the container has no writer.
    pub fn prefill(&mut self, k: usize, lines: u64) -> bool {
        if self.containers[k].writer.is_none() {
            return false;
        }
        let c = &mut self.containers[k];
        c.log.reserve(usize::try_from(lines).unwrap_or(0));
        for _ in 0..lines {
            self.write_auto(k);
        }
        true
    }

    fn write_auto(&mut self, k: usize) {
        let pl = self.cfg.partial_len.max(1);
        let ts = self.next_ts(k);
        let c = &mut self.containers[k];
        let Some(w) = c.writer.as_mut() else { return };
        w.seq += 1;
        w.run_lines += 1;
        let seq = w.seq;
        let Some(w) = c.writer.as_ref() else { return };
        let stream = auto_stream(&w.spec, seq);
        let len = auto_len(c, &w.spec, seq);
        let stream = if c.tty { Stream::Stdout } else { stream };
        let mut start = 0;
        while start < len {
            let end = (start + pl).min(len);
            self.push(k, Msg { ts, stream, body: Body::Auto { seq, start: start as u32, end: end as u32 } });
            start = end;
        }
    }

    // ---- events -----------------------------------------------------

    pub fn emit(&mut self, k: usize, action: &str, extra: &[(&str, String)]) {
        let c = &self.containers[k];
        let mut attrs = c.labels.clone();
        attrs.insert("image".to_owned(), c.image.clone());
        attrs.insert("name".to_owned(), c.name.clone());
        for (key, v) in extra {
            attrs.insert((*key).to_owned(), v.clone());
        }
        let (id, image, name) = (c.id.clone(), c.image.clone(), c.name.clone());
        self.push_event(action, id, image, name, attrs);
    }

    /// An event not tied to a stored container (see `Double::emit_event`).
    pub fn emit_raw(&mut self, action: &str, id: &str, name: &str) {
        let mut attrs = BTreeMap::new();
        attrs.insert("name".to_owned(), name.to_owned());
        self.push_event(action, id.to_owned(), String::new(), name.to_owned(), attrs);
    }

    /// Stamp an event on the daemon's clock and keep it in the ring.
    fn push_event(
        &mut self,
        action: &str,
        id: String,
        image: String,
        name: String,
        attrs: BTreeMap<String, String>,
    ) {
        // Strictly increasing, so `since` replays are exact in tests.
        let time_ns = self.now_ns().max(self.last_event_ns + 1);
        self.last_event_ns = time_ns;
        self.events.push_back(Event { time_ns, action: action.to_owned(), id, image, name, attrs });
        if self.events.len() > EVENT_RING {
            self.events.pop_front();
            self.events_base += 1;
        }
        self.events_dirty = true;
    }

    pub fn events_end(&self) -> u64 {
        self.events_base + self.events.len() as u64
    }

    /// Where a new subscriber starts: with `since`, the oldest of the last
    /// 256 events (filtered by time when rendered); else only new events.
    pub fn event_cursor(
        &self,
        since: Option<i64>,
        until: Option<i64>,
        filter: Filters,
        legacy: bool,
    ) -> EventCursor {
        let end = self.events_end();
        let next =
            if since.is_some() { end.saturating_sub(EVENT_REPLAY as u64).max(self.events_base) } else { end };
        EventCursor { next, replay_end: end, since, until, filter, legacy, cut: false, expired: false }
    }

    pub fn render_events(&mut self, cur: &mut EventCursor, out: &mut Vec<u8>) -> Step {
        // A subscriber that fell more than the ring behind loses events,
        // as with dockerd's per-subscriber buffer.
        cur.next = cur.next.max(self.events_base);
        let end = self.events_end();
        let mut sent = false;
        while !cur.cut && cur.next < end && out.len() < OUT_BATCH {
            let ev = &self.events[(cur.next - self.events_base) as usize];
            cur.next += 1;
            if cur.next <= cur.replay_end && cur.since.is_some_and(|s| ev.time_ns < s) {
                continue;
            }
            if cur.until.is_some_and(|u| ev.time_ns > u) {
                cur.cut = true;
                break;
            }
            if !crate::api::event_matches(ev, &cur.filter) {
                continue;
            }
            let mut line = crate::api::event_json(ev, cur.legacy);
            line.push('\n');
            http::chunk(out, line.as_bytes());
            sent = true;
        }
        if sent {
            Step::Wrote
        } else if cur.cut || (cur.expired && cur.next >= end) {
            http::terminator(out);
            Step::Ended
        } else {
            Step::Idle
        }
    }

    // ---- faults -----------------------------------------------------

    /// The fault for a request, if one is armed for it: the first queued
    /// one that matches, else (random mode) one drawn among the matching
    /// entries of the mix.
    pub fn take_fault(&mut self, route: &crate::api::Route, logs_of: Option<&str>) -> Option<Fault> {
        use crate::api::Route;
        let applies = |m: &Match| match m {
            Match::Any => true,
            Match::Logs => matches!(route, Route::Logs(_)),
            Match::LogsOf(id) => matches!(route, Route::Logs(_)) && logs_of.is_some_and(|l| l == id),
            Match::Events => matches!(route, Route::Events),
            Match::Inspect => matches!(route, Route::Inspect(_)),
            Match::List => matches!(route, Route::List),
            Match::Ping => matches!(route, Route::Ping),
        };
        let Some(i) = self.faults.iter().position(|(m, _, times)| *times > 0 && applies(m)) else {
            let (rng, mix) = self.random.as_mut()?;
            if !mix.iter().any(|(_, m, _)| applies(m)) {
                return None;
            }
            // splitmix64: one draw per matching request, reproducible
            // from the seed for a given order of requests.
            *rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let u = ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64;
            let mut acc = 0.0;
            for (p, m, f) in mix.iter() {
                if applies(m) {
                    acc += p;
                    if u < acc {
                        return Some(f.clone());
                    }
                }
            }
            return None;
        };
        let f = self.faults[i].1.clone();
        self.faults[i].2 -= 1;
        if self.faults[i].2 == 0 {
            self.faults.remove(i);
        }
        Some(f)
    }

    // ---- stats ------------------------------------------------------

    pub fn log_stream_opened(&mut self, k: usize) {
        let c = &mut self.containers[k];
        let last_close = c.last_close.take();
        // A response started while another on the same container is still
        // open had no downtime (the client overlapped them).
        let gap = if c.streams_open > 0 { Some(Duration::ZERO) } else { last_close.map(|t| t.elapsed()) };
        c.streams_open += 1;
        if let Some(g) = gap {
            if self.reopen_gaps.len() < MAX_GAPS {
                self.reopen_gaps.push(g);
            }
        }
        self.stats.log_streams_open += 1;
        let id = self.containers[k].id.clone();
        *self.stats.log_streams_open_by_container.entry(id).or_insert(0) += 1;
    }

    pub fn log_stream_closed(&mut self, k: usize) {
        let c = &mut self.containers[k];
        c.streams_open = c.streams_open.saturating_sub(1);
        if c.streams_open == 0 {
            c.last_close = Some(Instant::now());
        }
        self.stats.log_streams_open = self.stats.log_streams_open.saturating_sub(1);
        let id = &self.containers[k].id;
        if let Some(n) = self.stats.log_streams_open_by_container.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                self.stats.log_streams_open_by_container.remove(id);
            }
        }
    }
}

fn auto_stream(w: &Writer, seq: u64) -> Stream {
    if w.stderr_every > 0 && seq % u64::from(w.stderr_every) == 0 {
        Stream::Stderr
    } else {
        Stream::Stdout
    }
}

/// Length of generated line `seq`, line end included.
fn auto_len(c: &Container, w: &Writer, seq: u64) -> usize {
    let natural = c.name.len() + 1 + decimal_len(seq) + 1 + 6;
    natural.max(w.line_len) + if c.tty { 2 } else { 1 }
}

fn decimal_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

/// `<name> <seq> <stream>`, padded with ` xxx…` to `line_len`, line end.
fn auto_line(c: &Container, w: &Writer, seq: u64, out: &mut Vec<u8>) {
    // By hand rather than `write!`: a throughput benchmark renders millions.
    out.extend_from_slice(c.name.as_bytes());
    out.push(b' ');
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = seq;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.push(b' ');
    out.extend_from_slice(auto_stream(w, seq).as_str().as_bytes());
    if out.len() < w.line_len {
        out.push(b' ');
        out.resize(w.line_len, b'x');
    }
    out.extend_from_slice(if c.tty { b"\r\n" } else { b"\n" });
}

fn body_bytes<'a>(c: &'a Container, body: &'a Body, scratch: &'a mut Vec<u8>) -> &'a [u8] {
    match body {
        Body::Bytes(b) => b,
        Body::Auto { seq, start, end } => {
            scratch.clear();
            if let Some(w) = &c.writer {
                auto_line(c, &w.spec, *seq, scratch);
            }
            let end = (*end as usize).min(scratch.len());
            let start = (*start as usize).min(end);
            &scratch[start..end]
        }
    }
}

/// One message in its own chunk: an 8-byte frame header unless TTY, the
/// timestamp prefix if asked, the bytes.
fn render_message(
    out: &mut Vec<u8>,
    cur: &LogCursor,
    ts: i64,
    stream: Stream,
    body: &[u8],
    cache: &mut (i64, [u8; time::PREFIX_LEN]),
) {
    let payload = body.len() + if cur.timestamps { time::PREFIX_LEN + 1 } else { 0 };
    if cur.tty {
        http::chunk_head(out, payload);
    } else {
        http::chunk_head(out, payload + 8);
        out.extend_from_slice(&[stream.byte(), 0, 0, 0]);
        out.extend_from_slice(&(payload as u32).to_be_bytes());
    }
    if cur.timestamps {
        let sec = ts.div_euclid(1_000_000_000);
        if cache.0 != sec {
            *cache = (sec, time::log_prefix(ts));
        }
        let nanos = ts.rem_euclid(1_000_000_000) as u32;
        let mut prefix = cache.1;
        time::put_nanos(&mut prefix, nanos);
        out.extend_from_slice(&prefix);
        out.push(b' ');
    }
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

/// dockerd's "Error grabbing logs" message: a stream-3 frame, or raw text on
/// a TTY stream (there are no frames to carry a stream id).
pub(crate) fn render_system_error(out: &mut Vec<u8>, tty: bool, msg: &[u8]) {
    if tty {
        http::chunk(out, msg);
    } else {
        http::chunk_head(out, msg.len() + 8);
        out.extend_from_slice(&[3, 0, 0, 0]);
        out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        out.extend_from_slice(msg);
        out.extend_from_slice(b"\r\n");
    }
}
