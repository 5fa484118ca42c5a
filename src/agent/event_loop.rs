//! The poll loop: one thread, one `mio::Poll`, one slab of connections, one
//! timer wheel. Everything the agent does happens in [`Agent::run`].
//!
//! Every socket is nonblocking and registered edge-triggered; every
//! connection has deadlines on the wheel, and when one fires the loop closes
//! the fd itself, so no read can be left parked in the kernel. With nothing
//! to do, `poll` sleeps until the next deadline.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::agent::budget::{self, NofileLimit};
use crate::agent::conn::{Conn, ConnFailure, ConnTimer, Role};
use crate::agent::container::{Container, Filters, Rng};
use crate::agent::metrics_http::ScrapeServer;
use crate::agent::persist::Checkpointer;
use crate::agent::signals::Signals;
use crate::agent::sock::{Endpoint, Sock};
use crate::agent::writer::Writer;
use crate::cli::{AgentArgs, DockerHost};
use crate::docker::request::Api;
use crate::message;
use crate::metrics::Metrics;
use crate::output::Output;
use crate::timer_wheel::{TimerId, TimerWheel};

pub(crate) const SIGNALS: Token = Token(usize::MAX - 1);
pub(crate) const LISTENER: Token = Token(usize::MAX - 2);
pub(crate) const OUTPUT: Token = Token(usize::MAX - 3);

/// Output is written at least this often while any is buffered.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A checkpoint snapshot begins at most this often while anything changed
/// (written in slices, see `persist.rs`): a `kill -9` repeats at most this
/// and the time to write one, under a second.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_millis(800);
/// Docker is pinged this often to notice a daemon that went away quietly.
pub(crate) const HEALTH_PING_EVERY: Duration = Duration::from_secs(15);
/// Bytes read from a socket at once, into the loop's one shared buffer.
pub(crate) const READ_BUF: usize = 64 << 10;
/// Reads of one connection per turn of the loop (1 MiB): a stream that
/// always has more cannot starve the others, timers or scrapes. It goes to
/// the back of the queue and is read again after the next (non-blocking)
/// poll.
pub(crate) const READS_PER_TURN: usize = 16;
/// A log stream whose read brought this much is busy: the loop does not
/// rest after that turn (`--read-coalesce`), so no socket buffer fills
/// while it waits.
pub(crate) const BUSY_READ: usize = 64 << 10;

/// The log reads of one turn of the loop.
#[derive(Debug, Default, Clone, Copy)]
struct TurnReads {
    log_reads: usize,
    busy: bool,
}

/// What a timer on the wheel is for.
#[derive(Debug, Clone)]
pub(crate) enum Timer {
    /// A deadline of one connection; stale ones (the connection closed and
    /// its slab slot reused) are recognised by the generation.
    Conn {
        key: usize,
        gen: u64,
        kind: ConnTimer,
    },
    /// A container's backoff has passed: try its stream again.
    Retry {
        id: String,
    },
    /// Ping Docker again (after it went away, or periodically).
    Ping,
    /// The events stream's backoff has passed: open it again.
    EventsRetry,
    /// The list's backoff has passed: take it again.
    ListRetry,
    Flush,
    Checkpoint,
    /// Accepting a metrics client failed for lack of fds: try again.
    Accept,
    /// A stopped container's `die` event did not come in time: read its
    /// last lines anyway.
    FinalRead {
        id: String,
    },
    /// The sink's batch is old enough to send.
    SinkBatch,
    /// The sink's backoff (or Retry-After) has passed: push again.
    SinkRetry,
    /// The push on the wire has had no answer for `--sink-hedge-after`.
    SinkHedge,
    /// The sink's DNS lookup has a deadline or a retry due.
    SinkDns,
    /// Once a second with a sink: gauges, and streams paused too long.
    SinkTick,
}

/// Settings derived from the command line.
pub(crate) struct Settings {
    pub endpoint: Endpoint,
    pub host: DockerHost,
    pub rotate_after: Duration,
    pub idle_timeout: Duration,
    pub read_coalesce: Duration,
    pub connect_timeout: Duration,
    pub head_timeout: Duration,
    pub api_timeout: Duration,
    pub max_line: usize,
    pub from_beginning: bool,
    pub filters: Filters,
    pub stream_rcvbuf: Option<usize>,
}

/// Docker as a whole: reachable or not, which API version, discovery state.
pub(crate) struct DockerState {
    pub up: bool,
    pub api: Api,
    pub backoff: crate::agent::container::Backoff,
    /// The events stream's connection, once open.
    pub events: Option<usize>,
    /// Newest event time seen (ns), to replay missed events on reconnect.
    pub last_event_ns: Option<i64>,
    /// A ping is in flight.
    pub pinging: bool,
    /// Last time Docker answered anything.
    pub last_contact: Instant,
    /// The one pending ping (health check or retry).
    pub ping_timer: Option<TimerId>,
    /// The events stream's and the list's own backoffs and troubles.
    pub discovery: crate::agent::discovery::Discovery,
}

pub struct Agent {
    pub(crate) cfg: Settings,
    pub(crate) poll: Poll,
    pub(crate) conns: Slab<Conn>,
    pub(crate) next_gen: u64,
    pub(crate) timers: TimerWheel<Timer>,
    pub(crate) containers: HashMap<String, Container>,
    pub(crate) docker: DockerState,
    pub(crate) output: Output,
    /// The output as the loop sees it: when it flushes, how long it has
    /// been blocked, whether it failed.
    pub(crate) writer: Writer,
    /// The checkpoint file and when to write it.
    pub(crate) checkpoints: Checkpointer,
    pub(crate) metrics: Metrics,
    pub(crate) read_buf: Vec<u8>,
    pub(crate) rng: Rng,
    pub(crate) own_id: Option<String>,
    /// The `/metrics` and `/healthz` listener and its clients.
    pub(crate) scrape: ScrapeServer,
    pub(crate) signals: Signals,
    pub(crate) shutdown: bool,
    /// Connections left readable, (key, gen): while the output was full
    /// (read again when it drains), or after their reads for one turn (read
    /// again next turn). Edge-triggered polling will not report them again,
    /// so this queue is the only thing that brings them back; no scan of
    /// every connection.
    pub(crate) paused: Vec<(usize, u64)>,
    /// What this turn read from log streams: whether the next turn may
    /// wait (`--read-coalesce`).
    turn: TurnReads,
    pub(crate) nofile: NofileLimit,
    /// The stream budget's slots and who waits for one.
    pub(crate) slots: crate::agent::budget::Slots,
    /// Rate limit of "out of file descriptors" messages.
    pub(crate) fd_says: crate::messages::Limiter,
    /// Docker's clock, from the `Date` of its answers.
    pub(crate) docker_clock: crate::agent::clock::DockerClock,
    /// Where records go instead of the output, when a sink is configured.
    pub(crate) sink: Option<crate::agent::sink::Sink>,
    pub(crate) invariants: crate::agent::invariants::Invariants,
}

/// Wall-clock now in nanoseconds since the epoch: Docker's timestamps are
/// wall-clock, so resume points and "history" are compared on that clock.
pub(crate) fn wall_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

impl Agent {
    /// Set everything up: state directory, output, metrics listener,
    /// signals. Reaching Docker is checked by the caller before this.
    pub fn new(
        args: &AgentArgs,
        endpoint: Endpoint,
        api: Api,
        nofile: NofileLimit,
        sink: Option<crate::agent::sink::SinkSetup>,
    ) -> anyhow::Result<Self> {
        let poll = Poll::new().context("cannot create the poll instance")?;
        let now_ns = wall_ns();
        let checkpoints = Checkpointer::open(&args.state_dir, now_ns)?;
        let mut output = Output::open(&args.output)?;
        let mut listener = TcpListener::bind(args.metrics_addr)
            .map_err(|e| crate::cli::metrics_listen_error(args.metrics_addr, e))?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        if output.make_pollable() {
            poll.registry().register(&mut SourceFd(&output.raw_fd()), OUTPUT, Interest::WRITABLE)?;
        }
        let signals = Signals::new().context("cannot set up signal handling")?;
        poll.registry().register(&mut SourceFd(&signals.as_raw_fd()), SIGNALS, Interest::READABLE)?;
        let mut metrics = Metrics::new();
        let sink = sink.map(|s| crate::agent::sink::Sink::new(s, metrics.registry_mut()));
        let invariants =
            crate::agent::invariants::Invariants::new(args.check_invariants, metrics.registry_mut());
        // Everything the agent keeps open for its whole life is open now.
        let in_use = budget::open_fds().context("cannot count open files in /proc/self/fd")?;
        let max_streams = args.max_streams.map(|m| m as usize);
        let Some(stream_budget) = budget::stream_budget(nofile.soft, in_use, max_streams) else {
            anyhow::bail!(
                "the open-files limit of {} ({} in use, {} reserved) leaves no room for log streams; \
                 raise it (ulimit -n, LimitNOFILE=)",
                nofile.soft,
                in_use,
                budget::RESERVE
            );
        };
        metrics.stream_budget.set(stream_budget.streams as i64);
        let seed = now_ns as u64 ^ u64::from(std::process::id()).rotate_left(32);
        Ok(Self {
            cfg: Settings {
                endpoint,
                host: args.docker_host.clone(),
                rotate_after: args.rotate_after,
                idle_timeout: args.idle_timeout,
                read_coalesce: args.read_coalesce,
                connect_timeout: args.connect_timeout,
                head_timeout: args.head_timeout,
                api_timeout: args.api_timeout,
                max_line: args.max_line_bytes,
                from_beginning: args.from_beginning,
                filters: Filters {
                    include_labels: args.include_label.clone(),
                    exclude_labels: args.exclude_label.clone(),
                    include_names: args.include_name.clone(),
                },
                stream_rcvbuf: args.stream_rcvbuf,
            },
            poll,
            conns: Slab::new(),
            next_gen: 1,
            timers: TimerWheel::new(Duration::from_millis(10), 1024, Instant::now()),
            containers: HashMap::new(),
            docker: DockerState {
                up: false,
                api,
                backoff: Default::default(),
                events: None,
                last_event_ns: None,
                pinging: false,
                last_contact: Instant::now(),
                ping_timer: None,
                discovery: Default::default(),
            },
            output,
            writer: Writer::default(),
            checkpoints,
            metrics,
            read_buf: vec![0; READ_BUF],
            rng: Rng::new(seed),
            own_id: crate::agent::container::own_container_id(),
            scrape: ScrapeServer::new(listener),
            signals,
            shutdown: false,
            paused: Vec::new(),
            turn: TurnReads::default(),
            nofile,
            slots: crate::agent::budget::Slots::new(stream_budget),
            fd_says: crate::messages::Limiter::new(Duration::from_secs(1)),
            docker_clock: Default::default(),
            sink,
            invariants,
        })
    }

    /// Run until SIGTERM or SIGINT; then flush, checkpoint and return.
    pub fn run(&mut self) -> anyhow::Result<()> {
        message!(
            "following containers of {} (API {}), metrics on http://{}/metrics, state in {}{}",
            self.cfg.host,
            self.docker.api.version,
            self.scrape.listener.local_addr()?,
            self.checkpoints.store.dir().display(),
            if self.checkpoints.first_run { " (first run)" } else { "" },
        );
        let n = self.nofile;
        let raised =
            if n.soft_before < n.soft { format!(", raised from {}", n.soft_before) } else { String::new() };
        message!(
            "open-files limit {} (hard {}{raised}): following at most {} containers at once{}",
            n.soft,
            n.hard,
            self.slots.budget.streams,
            if self.slots.budget.by_flag { " (--max-streams)" } else { "" },
        );
        // A first run records when it began at once: if the output never
        // drains (a full disk), the next start must still know which
        // containers started since, or it would begin "from now" again.
        if self.checkpoints.first_run {
            self.write_checkpoint();
        }
        self.docker_connected();
        if self.sink.is_some() {
            self.timers.insert(Instant::now() + crate::agent::sink::TICK, Timer::SinkTick);
        }
        let mut events = Events::with_capacity(1024);
        let mut fired = Vec::new();
        let mut turn_began = Instant::now();
        while !self.shutdown {
            self.rest(turn_began);
            turn_began = Instant::now();
            // Connections still readable are served after a look at what
            // else is ready, not after a sleep.
            let timeout = if !self.paused.is_empty() && self.room_for_lines() {
                Some(Duration::ZERO)
            } else {
                self.timers.next_deadline().map(|d| d.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("poll failed");
            }
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => self.on_signals(),
                    LISTENER => self.accept_clients(),
                    OUTPUT => self.flush_output(),
                    t if crate::agent::resolve::is_dns_token(t) => self.on_dns_event(t),
                    Token(key) => {
                        self.on_conn_event(key, ev.is_readable() || ev.is_read_closed(), ev.is_writable())
                    }
                }
            }
            self.timers.poll_expired(Instant::now(), &mut fired);
            for (id, t) in fired.drain(..) {
                self.on_timer(id, t);
            }
            self.after_turn();
        }
        self.shut_down();
        match self.writer.fatal.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Between turns: after a turn that only read a little from log
    /// streams, wait until `--read-coalesce` after its start (at most
    /// until the next deadline) before polling again, so that the lines
    /// of many streams arriving a few milliseconds apart are read in one
    /// turn rather than one turn each: at real rates the loop's CPU goes
    /// to turns and reads, not lines. Readiness that comes meanwhile is
    /// kept by the kernel; nothing is missed, only read up to that much
    /// later. No rest after a turn with a busy stream (a read of
    /// [`BUSY_READ`] or more), with reads left over, or at shutdown.
    fn rest(&mut self, turn_began: Instant) {
        let turn = std::mem::take(&mut self.turn);
        let delay = self.cfg.read_coalesce;
        if delay.is_zero() || turn.log_reads == 0 || turn.busy || !self.paused.is_empty() || self.shutdown {
            return;
        }
        let mut until = turn_began + delay;
        if let Some(d) = self.timers.next_deadline() {
            until = until.min(d);
        }
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
    }

    /// Housekeeping after each turn: eager flush, resuming paused reads.
    fn after_turn(&mut self) {
        if self.output.pending() >= crate::output::EAGER_FLUSH {
            self.flush_output();
        }
        if self.output.pending() > 0 && !self.writer.flush_armed {
            self.writer.flush_armed = true;
            self.timers.insert(Instant::now() + FLUSH_EVERY, Timer::Flush);
        }
        if self.checkpoints.dirty && !self.checkpoints.armed {
            self.checkpoints.armed = true;
            self.timers.insert(self.checkpoints.due(), Timer::Checkpoint);
        }
        if self.sink.as_mut().is_some_and(|s| !s.note_full() && !s.closed_for_room.is_empty()) {
            self.sink_room_again();
        }
        if !self.paused.is_empty() && self.room_for_lines() {
            self.resume_paused_reads();
        }
        if self.scrape.accept_pending
            && !self.scrape.accept_backoff
            && self.scrape.clients < crate::agent::metrics_http::MAX_CLIENTS
        {
            self.accept_clients();
        }
        self.check_invariants();
    }

    pub(crate) fn on_timer(&mut self, id: TimerId, t: Timer) {
        match t {
            Timer::Conn { key, gen, kind } => {
                let Some(conn) = self.conns.get_mut(key).filter(|c| c.gen == gen) else {
                    return;
                };
                if conn.deadlines.fired(kind, id) {
                    self.on_conn_deadline(key, kind);
                }
            }
            Timer::Retry { id } => self.retry_container(&id),
            Timer::Ping => {
                self.docker.ping_timer = None;
                self.ping();
            }
            Timer::EventsRetry => self.events_retry(),
            Timer::ListRetry => self.list_retry(),
            Timer::Flush => {
                self.writer.flush_armed = false;
                self.flush_tick();
            }
            Timer::Checkpoint => {
                self.checkpoints.armed = false;
                self.checkpoint_tick();
            }
            Timer::FinalRead { id } => self.final_read(&id),
            Timer::SinkBatch => self.sink_batch_due(),
            Timer::SinkRetry => self.sink_retry_due(),
            Timer::SinkHedge => self.sink_hedge_due(),
            Timer::SinkDns => self.sink_dns_timer(),
            Timer::SinkTick => self.sink_tick(),
            Timer::Accept => {
                self.scrape.accept_backoff = false;
                self.accept_clients();
            }
        }
    }

    fn on_conn_deadline(&mut self, key: usize, kind: ConnTimer) {
        if let Some(Role::Sink(_)) = self.conns.get(key).map(|c| &c.role) {
            return self.sink_deadline(key, kind);
        }
        // A stream paused by a full sink queue is neither old nor idle: it
        // waits, closed, for room (see `sink::PAUSED_CLOSE_AFTER`).
        let paused = self.sink.as_ref().is_some_and(|s| s.paused_since.is_some());
        if matches!(kind, ConnTimer::Age | ConnTimer::Idle) && paused {
            if let Some(Role::Logs(lc)) = self.conns.get(key).map(|c| &c.role) {
                let id = lc.id.clone();
                return self.park_stream(&id, key);
            }
        }
        match kind {
            ConnTimer::Age => self.rotate(key, crate::metrics::RotationReason::Age),
            ConnTimer::Idle => self.idle_check(key),
            _ => {
                self.metrics.deadline(kind.metric());
                self.conn_failed(key, ConnFailure::Deadline(kind));
            }
        }
    }

    /// Open a connection to Docker and queue `GET <target>` on it. A target
    /// that could carry anything but one GET is refused (`InvalidInput`).
    pub(crate) fn open_conn(&mut self, target: &str, role: Role) -> io::Result<usize> {
        let request = crate::docker::request::get(target)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let sock = Sock::connect(&self.cfg.endpoint).inspect_err(|e| self.note_fd_exhaustion(e))?;
        if let (Role::Logs(_), Some(bytes)) = (&role, self.cfg.stream_rcvbuf) {
            // A tuning knob: failing to apply it must not fail the stream.
            let _ = sock.set_recv_buffer(bytes);
        }
        self.insert_conn(sock, request, role)
    }

    /// Put a connecting socket in the slab, with `out` to send once
    /// connected and its connect deadline.
    pub(crate) fn insert_conn(&mut self, mut sock: Sock, out: Vec<u8>, role: Role) -> io::Result<usize> {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.poll.registry().register(&mut sock, Token(key), Interest::READABLE | Interest::WRITABLE)?;
        let gen = self.next_gen;
        self.next_gen += 1;
        entry.insert(Conn {
            gen,
            sock,
            connected: false,
            out,
            out_pos: 0,
            deadlines: Default::default(),
            paused: false,
            role,
        });
        let deadline = Instant::now() + self.cfg.connect_timeout;
        self.add_timer(key, deadline, ConnTimer::Connect);
        Ok(key)
    }

    /// Count a failed connect: as fd exhaustion (not Docker's fault) or as a
    /// Docker connect error.
    pub(crate) fn connect_error(&mut self, e: &io::Error) {
        if !budget::is_fd_exhaustion(e) {
            self.metrics.docker_error("connect");
        }
    }

    /// Count an fd exhaustion, and say once per second at most what to do.
    pub(crate) fn note_fd_exhaustion(&mut self, e: &io::Error) {
        if !budget::is_fd_exhaustion(e) {
            return;
        }
        self.metrics.fd_exhaustion.inc();
        if let Some(held) = self.fd_says.allow(Instant::now()) {
            message!(
                "out of file descriptors ({e}); retrying with backoff. Raise the open-files \
                 limit (ulimit -n, LimitNOFILE=) or lower --max-streams{}",
                crate::messages::held_back(held)
            );
        }
    }

    /// (Re)arm the one ping timer.
    pub(crate) fn arm_ping(&mut self, after: Duration) {
        if let Some(t) = self.docker.ping_timer.take() {
            self.timers.cancel(t);
        }
        self.docker.ping_timer = Some(self.timers.insert(Instant::now() + after, Timer::Ping));
    }

    /// Arm the connection's deadline of `kind` (replacing one of that kind).
    pub(crate) fn add_timer(&mut self, key: usize, at: Instant, kind: ConnTimer) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let id = self.timers.insert(at, Timer::Conn { key, gen: conn.gen, kind });
        if let Some(old) = conn.deadlines.set(kind, id) {
            self.timers.cancel(old);
        }
    }

    /// Disarm the connection's deadline of `kind`, if armed.
    pub(crate) fn cancel_timer(&mut self, key: usize, kind: ConnTimer) {
        if let Some(t) = self.conns.get_mut(key).and_then(|c| c.deadlines.take(kind)) {
            self.timers.cancel(t);
        }
    }

    /// Close a connection: deregister, cancel its deadlines, drop the fd.
    /// Returns its role for the caller to act on.
    pub(crate) fn close_conn(&mut self, key: usize) -> Option<Role> {
        let mut conn = self.conns.try_remove(key)?;
        if let Role::Scraper(_) = conn.role {
            self.scrape.clients -= 1;
        }
        let _ = self.poll.registry().deregister(&mut conn.sock);
        for t in conn.deadlines.drain() {
            self.timers.cancel(t);
        }
        Some(conn.role)
    }

    fn on_conn_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Role::Sink(_) = conn.role {
            return self.sink_event(key, readable, writable);
        }
        if writable && !conn.connected {
            match conn.sock.finish_connect() {
                Ok(true) => self.on_connected(key),
                Ok(false) => return,
                Err(e) => return self.conn_failed(key, ConnFailure::Io(e)),
            }
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if writable && conn.out_pos < conn.out.len() {
            if let Err(e) = self.write_out(key) {
                return self.conn_failed(key, ConnFailure::Io(e));
            }
        }
        if readable {
            self.read_conn(key);
        }
    }

    fn on_connected(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.connected = true;
        // The head (or whole-call) deadline takes over from the connect one.
        if let Some(t) = conn.deadlines.take(ConnTimer::Connect) {
            self.timers.cancel(t);
        }
        let (kind, after) = match &conn.role {
            Role::Api { .. } => (ConnTimer::Api, self.cfg.api_timeout),
            // Accepted connections start connected, with their deadline;
            // the sink's connection has its own path.
            Role::Scraper(_) | Role::Sink(_) => return,
            Role::Events(_) => (ConnTimer::Head, self.cfg.head_timeout),
            // A daemon too busy to answer within the head deadline would
            // start the same work over on every retry and never converge:
            // each consecutive failure of the stream doubles it (up to 8x).
            Role::Logs(l) => {
                let failures = self.containers.get(&l.id).map_or(0, |c| c.backoff.failures());
                (ConnTimer::Head, self.cfg.head_timeout * (1 << failures.min(3)))
            }
        };
        if let Role::Logs(l) = &mut conn.role {
            l.rules.requested_at_ns = wall_ns();
        }
        self.add_timer(key, Instant::now() + after, kind);
    }

    /// Write what is left of the connection's output.
    pub(crate) fn write_out(&mut self, key: usize) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        while conn.out_pos < conn.out.len() {
            match conn.sock.write(&conn.out[conn.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => conn.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        conn.out = Vec::new();
        conn.out_pos = 0;
        if let Role::Scraper(_) = conn.role {
            // Response sent: a metrics client is done.
            self.close_conn(key);
        }
        Ok(())
    }

    /// Read a connection until it would block, feeding each read to its
    /// role; queue it in `paused` if the output stays full or its reads for
    /// this turn are used up. Notes what a log stream gave, for
    /// `--read-coalesce`.
    fn read_conn(&mut self, key: usize) {
        let logs = matches!(self.conns.get(key).map(|c| &c.role), Some(Role::Logs(_)));
        let n = self.read_conn_bytes(key);
        if logs {
            self.turn.log_reads += 1;
            self.turn.busy |= n >= BUSY_READ;
        }
    }

    /// [`Agent::read_conn`]; returns the bytes read.
    fn read_conn_bytes(&mut self, key: usize) -> usize {
        let mut total = 0;
        for reads in 0.. {
            if let Some(Role::Logs(_)) = self.conns.get(key).map(|c| &c.role) {
                // A file or /dev/null takes the buffer at once; only a
                // blocked pipe leaves it full.
                if self.output.is_full() {
                    self.flush_output();
                }
            }
            let blocked = self.lines_blocked();
            let limit = match (&self.sink, self.conns.get(key).map(|c| &c.role)) {
                (Some(sink), Some(Role::Logs(_))) => sink.read_limit(),
                _ => READ_BUF,
            };
            let Some(conn) = self.conns.get_mut(key) else {
                return total;
            };
            let out_full = matches!(conn.role, Role::Logs(_)) && blocked;
            if out_full || reads == READS_PER_TURN {
                if !conn.paused {
                    conn.paused = true;
                    self.paused.push((key, conn.gen));
                }
                return total;
            }
            let n = match conn.sock.read(&mut self.read_buf[..limit]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return total,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.conn_failed(key, ConnFailure::Io(e));
                    return total;
                }
            };
            total += n;
            let buf = std::mem::take(&mut self.read_buf);
            let go_on = if n == 0 { self.on_eof(key) } else { self.on_data(key, &buf[..n]) };
            self.read_buf = buf;
            if !go_on {
                return total;
            }
        }
        total
    }

    /// Bytes arrived; false if the connection is gone or must not be read
    /// further now.
    fn on_data(&mut self, key: usize, data: &[u8]) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        match &mut conn.role {
            Role::Api { .. } => self.api_data(key, data),
            Role::Logs(_) => self.logs_data(key, data),
            Role::Events(_) => self.events_data(key, data),
            Role::Scraper(_) => self.scraper_data(key, data),
            Role::Sink(_) => false,
        }
    }

    fn on_eof(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        match &mut conn.role {
            Role::Api { .. } => self.api_eof(key),
            Role::Logs(_) => self.logs_eof(key),
            Role::Events(_) => self.events_eof(key),
            Role::Scraper(_) | Role::Sink(_) => {
                self.close_conn(key);
            }
        }
        false
    }

    /// A connection failed (I/O error, deadline, protocol): close it and let
    /// its role recover.
    pub(crate) fn conn_failed(&mut self, key: usize, why: ConnFailure) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        match conn.role {
            Role::Api { .. } => self.api_failed(key, why),
            Role::Logs(_) => self.logs_failed(key, why),
            Role::Events(_) => self.events_failed(key, why),
            Role::Scraper(_) => {
                self.close_conn(key);
            }
            Role::Sink(_) => self.sink_conn_failed(key, why),
        }
    }

    fn resume_paused_reads(&mut self) {
        let paused = std::mem::take(&mut self.paused);
        let mut rest = paused.into_iter();
        for (key, gen) in rest.by_ref() {
            if let Some(c) = self.conns.get_mut(key).filter(|c| c.gen == gen) {
                c.paused = false;
                self.read_conn(key);
            }
            if !self.room_for_lines() {
                self.flush_output();
                if !self.room_for_lines() {
                    break;
                }
            }
        }
        // Those not reached go first next time, then any queued anew.
        let anew = std::mem::replace(&mut self.paused, rest.collect());
        self.paused.extend(anew);
    }

    /// Lines can be taken: the output is below its low-water mark and the
    /// sink does not pause reading (see `Sink::note_full`).
    pub(crate) fn room_for_lines(&self) -> bool {
        self.output.has_room() && self.sink.as_ref().map_or(true, |s| s.paused_since.is_none())
    }

    /// Lines cannot be taken: stop reading log streams. With a sink, the
    /// pause is timed (see `sink::PAUSED_CLOSE_AFTER`).
    pub(crate) fn lines_blocked(&mut self) -> bool {
        if self.output.is_full() {
            return true;
        }
        match self.sink.as_mut() {
            Some(s) => s.note_full(),
            None => false,
        }
    }

    fn on_signals(&mut self) {
        for sig in self.signals.read() {
            match sig {
                nix::sys::signal::Signal::SIGHUP => match self.output.reopen() {
                    Ok(true) => message!("SIGHUP: output file reopened"),
                    Ok(false) => {}
                    Err(e) => message!("SIGHUP: {e:#}"),
                },
                _ => self.shutdown = true,
            }
        }
    }

    /// Stop reading, flush, checkpoint. Bounded: exits within ~2 s even if
    /// the output is stuck (what was not written is not checkpointed, so it
    /// is read again next time).
    fn shut_down(&mut self) {
        let keys: Vec<usize> =
            self.conns.iter().filter(|(_, c)| !matches!(c.role, Role::Sink(_))).map(|(k, _)| k).collect();
        for key in keys {
            self.abandon_conn(key);
        }
        if self.sink.is_some() {
            self.drain_sink(Instant::now() + Duration::from_millis(1500));
            self.checkpoints.dirty = true;
            self.write_checkpoint();
            return;
        }
        if self.writer.fatal.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(1500);
        match self.output.flush_blocking(deadline) {
            Ok(true) => {
                self.checkpoints.dirty = true;
                self.write_checkpoint();
            }
            Ok(false) => message!(
                "output {} did not take the last {} bytes in time; the last checkpoint is kept (those \
                 lines are read again on the next start)",
                self.output.describe(),
                self.output.pending()
            ),
            Err(e) => self.output_failed(e),
        }
    }
}
