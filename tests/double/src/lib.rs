//! A test double of the Docker Engine API, for log-capturer's tests and
//! benchmarks.
//!
//! [`Double::start`] serves the endpoints the agent uses on a unix socket,
//! from one server thread running one `mio` poll loop with nonblocking
//! sockets (like the agent itself). Fake containers are created and driven
//! from the test through the [`Double`] handle; their logs are kept in
//! memory, either written by the test ([`Double::write`], [`Double::write_at`])
//! or generated at a steady rate on the server thread ([`Writer`]).
//!
//! What it reproduces of dockerd 20.10 (see `/work/shared/docker-api-notes.md`
//! and the captures in `tests/data/*.http`):
//!
//! - `GET`/`HEAD /_ping`, `GET /version`, `GET /containers/json` (with
//!   `all` and `filters`), `GET /containers/{id}/json`,
//!   `GET /containers/{id}/logs` and `GET /events`, with or without a
//!   `/vX.Y` prefix; versions outside `[api_min, api_max]` are a 400.
//! - Header sets and orders of the captures; JSON bodies over 2 KiB chunked
//!   like Go's server; error bodies `{"message":"..."}\n`.
//! - Logs: one chunk per message, 8-byte frames (or raw bytes and `\r\n`
//!   for TTY containers), 31-byte timestamp prefixes, 16 KiB partials with
//!   a shared timestamp, `tail` then `since` (inclusive, both since modes),
//!   `until`, follow until the container stops, restarts or is removed.
//! - Backpressure: a follow stream holds a cursor into the container's log
//!   and renders the next messages only when its socket has taken the
//!   previous ones, so a client that stops reading stops its stream and
//!   nothing is buffered per connection beyond one small batch.
//! - Events: container events as dockerd writes them, `since` replay of the
//!   last 256, filters by type, container, event and label.
//!
//! Faults are injected per request with [`Double::inject`]; a daemon
//! restart with [`Double::daemon_down`] / [`Double::daemon_up`].
//!
//! ```no_run
//! use docker_double::{Config, ContainerSpec, Double, Stream};
//! let d = Double::start(Config::in_temp_dir()).unwrap();
//! let id = d.create_and_start(ContainerSpec::new("web").label("app", "demo"));
//! d.write(&id, Stream::Stdout, b"hello");
//! // ... point the agent at d.socket() ...
//! d.stop(&id);
//! ```

mod api;
mod http;
mod server;
mod state;
mod sys;
pub mod time;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use sys::raise_fd_limit;

use state::{Shared, State};

/// How the double is set up. [`Config::new`] gives dockerd 20.10's values.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen. A stale socket file there is removed first.
    pub socket: PathBuf,
    /// The daemon's API version: `Api-Version` on every response, and the
    /// highest accepted in a `/vX.Y/` prefix. Default 1.41 (dockerd 20.10).
    pub api_max: (u16, u16),
    /// The lowest accepted version. Default 1.12 (dockerd 20.10).
    pub api_min: (u16, u16),
    /// How `since` filters logs. Default [`SinceMode::FilterAll`] (20.10).
    pub since_mode: SinceMode,
    /// Lines longer than this are stored as several messages of this size
    /// with the same timestamp; only the last ends with the newline. 16384,
    /// dockerd's copier buffer.
    pub partial_len: usize,
    /// JSON bodies longer than this are sent chunked (in one chunk), shorter
    /// ones with `Content-Length`: Go's 2048-byte rule. 0 chunks every
    /// non-error JSON body, `usize::MAX` none.
    pub chunk_threshold: usize,
    /// Messages kept per container; older ones are dropped like rotated
    /// json-file logs (a cursor behind them skips ahead). Unlimited by
    /// default; benchmarks bound memory with it.
    pub retain_messages: usize,
    /// `Version` in `/version` and the `Server` header.
    pub server_version: String,
}

impl Config {
    pub fn new(socket: impl Into<PathBuf>) -> Config {
        Config {
            socket: socket.into(),
            api_max: (1, 41),
            api_min: (1, 12),
            since_mode: SinceMode::FilterAll,
            partial_len: 16 * 1024,
            chunk_threshold: 2048,
            retain_messages: usize::MAX,
            server_version: "20.10.24+dfsg1".to_owned(),
        }
    }

    /// A fresh socket path in the temporary directory, unique within this
    /// machine for the life of the process (pid and a counter).
    pub fn in_temp_dir() -> Config {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        // Short on purpose: a unix socket path must fit in 108 bytes.
        Config::new(std::env::temp_dir().join(format!("docker-double-{}-{n}.sock", std::process::id())))
    }
}

/// How `since` applies to a logs request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SinceMode {
    /// dockerd 20.10: every message older than `since` is skipped.
    #[default]
    FilterAll,
    /// dockerd 24.0+: messages are skipped only until the first one at or
    /// after `since`; later ones are sent even if older (timestamps are not
    /// monotonic).
    StopAfterFirst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// The frame header's stream byte.
    pub fn byte(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }
}

/// A container to create.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// TTY containers' logs are raw bytes without frame headers, stdout and
    /// stderr merged, lines ending `\r\n`.
    pub tty: bool,
    /// `json-file` (default); `none` makes logs requests a 501.
    pub log_driver: String,
    /// Lines generated on the server thread while the container runs.
    pub writer: Option<Writer>,
}

impl ContainerSpec {
    pub fn new(name: impl Into<String>) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: "busybox:local".to_owned(),
            labels: BTreeMap::new(),
            tty: false,
            log_driver: "json-file".to_owned(),
            writer: None,
        }
    }

    pub fn label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    pub fn tty(mut self, tty: bool) -> Self {
        self.tty = tty;
        self
    }

    pub fn log_driver(mut self, driver: impl Into<String>) -> Self {
        self.log_driver = driver.into();
        self
    }

    pub fn writer(mut self, w: Writer) -> Self {
        self.writer = Some(w);
        self
    }
}

/// A steady log writer. Its lines are `<name> <seq> <stream> xxxx…`: `seq`
/// counts from 1 per container across both streams and across restarts,
/// `<stream>` is `stdout` or `stderr`, and `x` pads the line (without its
/// newline) to `line_len`. A test can so check exactly-once, in-order
/// delivery from the text alone.
#[derive(Clone, Debug)]
pub struct Writer {
    /// Average rate; lines are spread evenly (and written in a burst if the
    /// server thread falls behind). 0 writes nothing.
    pub lines_per_sec: f64,
    /// Every Nth line (by `seq`) goes to stderr; 0 = never.
    pub stderr_every: u32,
    pub line_len: usize,
    /// Stop after this many lines in total.
    pub max_lines: Option<u64>,
}

impl Writer {
    pub fn new(lines_per_sec: f64) -> Writer {
        Writer { lines_per_sec, stderr_every: 0, line_len: 0, max_lines: None }
    }
}

/// Which requests a fault applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    Any,
    Logs,
    /// Logs of one container (full id as returned by `create_and_start`).
    LogsOf(String),
    Events,
    Inspect,
    List,
    Ping,
}

/// A misbehaviour for the next matching request(s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Send a 200 chunked head, then nothing ever; the socket stays open.
    StallAfterHeaders,
    /// Read the request and never send a byte.
    NeverAnswer,
    /// Send the head and 5 bytes of a frame's 8-byte header (half a TTY
    /// line; half the body elsewhere), then close the connection.
    ResetMidFrame,
    /// Send the head and a chunk-size line that is not hex, then close.
    MalformedChunk,
    /// Answer with this status and `{"message": ...}` as dockerd does.
    Status(u16, String),
    /// Logs: send the messages stored when the request arrived, then one
    /// stream-3 (systemerr) frame whose payload is this text verbatim
    /// (dockerd writes `Error grabbing logs: <err>\n`), then end the stream
    /// cleanly. Other endpoints: a 500 with this message.
    SystemErr(String),
    /// Logs and events: end the stream cleanly after this long even though
    /// the container still runs (a decode error inside dockerd). Other
    /// endpoints answer normally.
    CloseAfter(Duration),
    /// Make the whole answer when the request arrives (a list is a snapshot
    /// of that moment, as dockerd's is), send it this long later. Streams
    /// (logs, events) answer normally.
    Delay(Duration),
    /// Answer 200 with `Content-Type: application/json` and exactly these
    /// bytes as the body (`Content-Length`): a garbage or hostile body.
    Body(Vec<u8>),
    /// Answer 200 with a chunked JSON body of this many bytes: `[`, spaces,
    /// `]`, an empty list that is valid JSON and only too big. Built in
    /// memory per request: keep it to what a test can afford.
    HugeBody(usize),
}

/// Counters of what the double has served. Snapshot with [`Double::stats`];
/// wait for a condition with [`Double::wait_until`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub connections_open: usize,
    /// Logs requests whose response is in progress (follow or not, including
    /// stalled ones); ends when the terminating chunk is written or the
    /// connection closes.
    pub log_streams_open: usize,
    /// The same by container id (no entry when zero).
    pub log_streams_open_by_container: BTreeMap<String, usize>,
    /// Logs requests received (including rejected ones).
    pub logs_requests_total: u64,
    /// By container id, for requests naming an existing container.
    pub logs_requests_by_container: BTreeMap<String, u64>,
    /// Logs requests with a numeric `tail`.
    pub logs_requests_with_tail: u64,
    /// Logs requests with a non-empty `since` and no numeric `tail`: a
    /// resume from a position.
    pub logs_requests_since_only: u64,
    pub events_streams_open: usize,
    /// Every request head parsed, whatever the answer.
    pub requests_total: u64,
    /// Requests with a method other than GET (HEAD on `/_ping` excepted),
    /// including each one pipelined behind another on one connection.
    pub non_get_requests: u64,
    /// `GET /events` requests received (including faulted ones).
    pub events_requests_total: u64,
    /// `GET /containers/json` requests received (including faulted ones).
    pub list_requests_total: u64,
    /// Log messages (frames or TTY lines) put on the wire.
    pub messages_sent: u64,
    /// Bytes written to client sockets, all responses.
    pub bytes_sent: u64,
}

/// A running double. Dropping it stops the server thread, closes every
/// connection and removes the socket file.
pub struct Double {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    socket: PathBuf,
    server_tid: i32,
}

impl Double {
    /// Bind the socket and start the server thread.
    pub fn start(cfg: Config) -> io::Result<Double> {
        let socket = cfg.socket.clone();
        let listener = server::bind(&socket)?;
        let (shared, server) = server::Server::new(cfg, listener)?;
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("docker-double".to_owned()).spawn(move || {
            let _ = tid_tx.send(sys::current_tid());
            server.run();
        })?;
        let server_tid = tid_rx.recv().map_err(|_| io::Error::other("server thread died at start"))?;
        Ok(Double { shared, thread: Some(thread), socket, server_tid })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Create a container (event `create`, state `created`) without
    /// starting it. Returns its 64-hex-digit id. Panics if the name is
    /// taken by a container not removed.
    pub fn create(&self, spec: ContainerSpec) -> String {
        self.with(|st| st.create(spec))
    }

    /// Create and start a container: events `create` and `start`, state
    /// `running`. Returns its id.
    pub fn create_and_start(&self, spec: ContainerSpec) -> String {
        self.with(|st| {
            let id = st.create(spec);
            let k = st.key(&id);
            st.start(k);
            id
        })
    }

    /// One log line as the container would print it: the double adds `\n`
    /// (`\r\n` for TTY) and splits it into `partial_len` messages. The
    /// timestamp is now, made strictly increasing per container. `id` may
    /// be an id, unique id prefix or name, here and below; unknown
    /// containers panic.
    pub fn write(&self, id: &str, stream: Stream, line: &[u8]) {
        self.with(|st| {
            let k = st.key(id);
            st.write_line(k, stream, line);
        })
    }

    /// One raw message, stored as given (no newline added, no splitting)
    /// with this timestamp: for non-monotonic timestamps and hand-made
    /// partials.
    pub fn write_at(&self, id: &str, stream: Stream, ts_ns: i64, bytes: &[u8]) {
        self.with(|st| {
            let k = st.key(id);
            st.append(k, stream, ts_ns, bytes.into());
        })
    }

    /// `docker stop`: follow streams get what is left of the logs and end
    /// with `0\r\n\r\n`; events `kill`, `die` (exitCode 0), `stop`; state
    /// `exited`. A container not running is left alone.
    pub fn stop(&self, id: &str) {
        self.stop_with(id, 0)
    }

    /// [`Double::stop`] with another exit code in the `die` event and in
    /// inspect's `State.ExitCode`.
    pub fn stop_with(&self, id: &str, exit_code: i32) {
        self.with(|st| {
            let k = st.key(id);
            st.stop(k, exit_code, true);
        })
    }

    /// Start a created or exited container again: event `start`, state
    /// `running`, logs kept, the writer resumes.
    pub fn start_again(&self, id: &str) {
        self.with(|st| {
            let k = st.key(id);
            st.start(k);
        })
    }

    /// `docker restart`: follow streams end; events `kill`, `die`, `stop`,
    /// `start`, `restart`.
    pub fn restart(&self, id: &str) {
        self.with(|st| {
            let k = st.key(id);
            st.stop(k, 0, true);
            st.start(k);
            st.emit(k, "restart", &[]);
        })
    }

    /// Events `pause`/`unpause` and the state; logs are unaffected (the
    /// writer is frozen while paused, like the container's processes).
    pub fn pause(&self, id: &str) {
        self.with(|st| {
            let k = st.key(id);
            st.pause(k, true);
        })
    }

    pub fn unpause(&self, id: &str) {
        self.with(|st| {
            let k = st.key(id);
            st.pause(k, false);
        })
    }

    /// `docker rm -f`: a running container is killed first (`kill`, `die`);
    /// follow streams end; event `destroy`. Afterwards every endpoint
    /// answers 404 `No such container: <id>`.
    pub fn remove(&self, id: &str) {
        self.with(|st| {
            let k = st.key(id);
            st.remove(k);
        })
    }

    /// The next `times` requests matching `m` get `fault` instead of their
    /// normal answer. Faults queue in the order injected.
    pub fn inject(&self, m: Match, fault: Fault, times: u32) {
        self.with(|st| st.faults.push((m, fault, times)))
    }

    /// An event about a container that need not exist, with any id and
    /// name (a hostile daemon: the id is sent JSON-escaped but otherwise
    /// as given). Attributes are just `name`.
    pub fn emit_event(&self, action: &str, id: &str, name: &str) {
        self.with(|st| st.emit_raw(action, id, name))
    }

    /// Set this daemon's clock `offset_ns` ahead of the host's (negative:
    /// behind), from now on: its log timestamps, its `Date` headers and its
    /// container and event times all follow it. Changing it while running
    /// is a clock step, as NTP makes on a board that booted without a
    /// real-time clock: lines written after a step back are stamped
    /// earlier than lines written before it.
    pub fn set_clock_offset(&self, offset_ns: i64) {
        self.with(|st| st.set_clock_offset(offset_ns))
    }

    /// Random mode: every request that no queued fault takes draws one
    /// fault from the entries of `mix` (probability, matcher, fault) whose
    /// matcher it meets, or none with the probability left over; seeded by
    /// `seed`. Replaces any earlier mix; [`Double::clear_random_faults`]
    /// ends it.
    pub fn random_faults(&self, seed: u64, mix: Vec<(f64, Match, Fault)>) {
        self.with(|st| st.random = Some((seed, mix)))
    }

    pub fn clear_random_faults(&self) {
        self.with(|st| st.random = None)
    }

    /// Forget every queued fault not yet used (the random mode stays).
    pub fn clear_faults(&self) {
        self.with(|st| st.faults.clear())
    }

    /// A dockerd restart, first half: every connection is closed abruptly,
    /// the listening socket is closed and its file removed. Containers,
    /// their logs and writers carry on. Returns once all that is done.
    pub fn daemon_down(&self) {
        let mut st = self.shared.lock();
        st.down_requested += 1;
        let want = st.down_requested;
        self.shared.wake(&mut st);
        while st.down_done < want && !st.server_gone {
            st = self.shared.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Listen again. The socket accepts connections when this returns.
    /// Panics if it cannot bind.
    pub fn daemon_up(&self) {
        let mut st = self.shared.lock();
        if st.listening {
            return;
        }
        let listener = server::bind(&self.socket)
            .unwrap_or_else(|e| panic!("docker-double: bind {}: {e}", self.socket.display()));
        st.new_listener = Some(listener);
        st.listening = true;
        self.shared.wake(&mut st);
    }

    /// Write `lines` generated lines (the container's [`Writer`] format,
    /// continuing its numbering) at once, timestamped now: a backlog that a
    /// `--from-beginning` reader drains as fast as it can, so a throughput
    /// benchmark measures the reader rather than the writer's pacing. A
    /// writer with `lines_per_sec: 0.0` gives the format and writes nothing
    /// else. Panics if the container has no writer.
    pub fn prefill(&self, id: &str, lines: u64) {
        self.with(|st| {
            let k = st.key(id);
            assert!(st.prefill(k, lines), "docker-double: prefill: container {id} has no writer");
        })
    }

    /// [`Double::prefill`] for several containers in one step: the server
    /// sends none of these lines before all are stored, so every stream
    /// starts with its backlog at the same moment.
    pub fn prefill_each(&self, ids: &[String], lines: u64) {
        self.with(|st| {
            for id in ids {
                let k = st.key(id);
                assert!(st.prefill(k, lines), "docker-double: prefill: container {id} has no writer");
            }
        })
    }

    /// Stream downtimes seen since the last call. One entry per logs
    /// request on a container that had a logs response before: the time
    /// from the end of the previous response (the server saw the client
    /// close it, or sent its end) to this request, or zero if the previous
    /// one was still open (the client overlapped them). The head of the new
    /// response is written in the same loop iteration. A container's first
    /// request adds nothing. At most 2^20 entries are kept between calls.
    pub fn take_reopen_gaps(&self) -> Vec<Duration> {
        std::mem::take(&mut self.shared.lock().reopen_gaps)
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// Wait until `pred` holds for the stats (checked now and whenever the
    /// server thread has done something), at most `timeout`. Returns whether
    /// it held.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&Stats) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if pred(&st.stats) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.server_gone {
                return false;
            }
            st = self.shared.cond.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Every stored message of a container (oldest first, as far as
    /// retained): timestamp, stream and bytes as a reader would get them.
    pub fn logs(&self, id: &str) -> Vec<(i64, Stream, Vec<u8>)> {
        self.with(|st| {
            let k = st.key(id);
            st.messages(k)
        })
    }

    /// The id of the container with this name (or id prefix), if any and
    /// not removed.
    pub fn id_of(&self, name: &str) -> Option<String> {
        let st = self.shared.lock();
        st.resolve(name).map(|k| st.id(k).to_owned())
    }

    /// CPU time the server thread has used so far (from /proc).
    pub fn server_cpu_time(&self) -> Option<Duration> {
        sys::thread_cpu_time(self.server_tid)
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut st = self.shared.lock();
        let r = f(&mut st);
        self.shared.wake(&mut st);
        r
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.shutdown = true;
            self.shared.wake(&mut st);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}
