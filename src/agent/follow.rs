//! Following one container's log: opening the stream, delivering its lines
//! exactly once, rotating it, and recovering when it ends or fails.

use std::time::Instant;

use crate::agent::conn::{ConnFailure, ConnTimer, Role};
use crate::agent::container::{Container, Ending, Follow};
use crate::agent::event_loop::{wall_ns, Agent, Timer};
use crate::agent::resume::Resume;
use crate::agent::sink::{ContainerSinkRef, Sink};
use crate::agent::stream::{OpenPlan, Opening, StreamRules, Verdict};
use crate::docker::logstream::{Framing, LogEvent, LogStreamConfig};
use crate::docker::request::LogsQuery;
use crate::message;
use crate::metrics::{LogStream, Metrics, ReconnectReason, RotationReason};
use crate::output::Output;
use crate::response::{ResponseConfig, ResponseDecoder, ResponseError, ResponseErrorKind};

/// The state of one open log stream: its decoder and the rules that judge
/// its lines ([`StreamRules`]).
pub(crate) struct LogConn {
    pub id: String,
    pub dec: ResponseDecoder,
    pub rules: StreamRules,
    pub head_seen: bool,
    pub opened: Instant,
    pub last_data: Instant,
    pub daemon_error: Option<String>,
    /// Opened with `follow=1` on a running container (not a drain of a
    /// stopped one, nor the final read).
    pub live: bool,
}

/// Delivers decoded events of one stream: what [`StreamRules`] says is new
/// goes to the output, replays are dropped and counted.
struct Delivery<'a> {
    rules: &'a mut StreamRules,
    daemon_error: &'a mut Option<String>,
    resume: &'a mut Resume,
    identity_json: &'a [u8],
    output: &'a mut Output,
    /// With a sink, lines go there instead of the output.
    sink: Option<(&'a mut Sink, ContainerSinkRef<'a>)>,
    metrics: &'a Metrics,
    delivered: bool,
    /// When these bytes were read (a batch's age counts from its first
    /// line): one clock read per read, not per line.
    now: Instant,
    /// The latest timestamp among the lines read: evidence of Docker's
    /// clock ([`crate::agent::clock::DockerClock::observe_line`]).
    latest_ts: Option<i64>,
}

impl Delivery<'_> {
    fn on_event(&mut self, ev: LogEvent<'_>) {
        let rec = match ev {
            LogEvent::Record(r) => r,
            LogEvent::DaemonError(m) => {
                *self.daemon_error = Some(String::from_utf8_lossy(m).into_owned());
                return;
            }
        };
        if let Some(ts) = rec.timestamp {
            self.latest_ts = Some(self.latest_ts.map_or(ts, |l| l.max(ts)));
        }
        // The resume point before this line is what a checkpoint records
        // while the sink holds the line (and none before it is pending).
        let before = match &mut self.sink {
            Some((sink, c)) => {
                if sink.batch.is_full() {
                    sink.seal(Some((c.id, self.resume)));
                }
                (c.acked.is_none() && c.sink.pending == 0).then(|| self.resume.clone())
            }
            None => None,
        };
        match self.rules.on_record(self.resume, &rec) {
            Verdict::Deliver => {}
            Verdict::Replay => {
                self.metrics.duplicates_dropped.inc();
                return;
            }
            Verdict::CatchUp => return,
        }
        match &mut self.sink {
            None => self.output.push(&rec, self.identity_json),
            Some((sink, c)) => {
                if c.acked.is_none() {
                    *c.acked = before;
                }
                sink.push(c, &rec, self.now);
            }
        }
        if let Some(s) = LogStream::from_stream_id(rec.stream) {
            self.metrics.line(s, rec.message.len());
        }
        if rec.truncated {
            self.metrics.lines_truncated.inc();
        }
        self.delivered = true;
    }
}

impl Agent {
    /// Open a log stream for a container whose resume point is known.
    pub(crate) fn open_logs(&mut self, id: &str) {
        if self.must_wait_for_room(id) {
            return;
        }
        self.vet_resume(id);
        let now_ns = wall_ns();
        let api = self.docker.api;
        let max_line = self.cfg.max_line;
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        let Some(resume) = c.resume.as_mut() else {
            return;
        };
        let opening = Opening {
            catchup_next: c.catchup_next,
            rate: c.rate,
            final_read: c.ending == Ending::FinalRead,
            running: c.running,
            log_start: c.log_start,
        };
        let plan = OpenPlan::new(resume, opening, now_ns);
        // This plan reads from 0 if a refill was due: done (see `Resume::refill`).
        resume.refill = false;
        c.catchup_next = false;
        let framing = if c.tty { Framing::Raw } else { Framing::Multiplexed };
        let mut stream = LogStreamConfig::new(framing, true);
        stream.max_line = max_line;
        let dec = ResponseDecoder::new(ResponseConfig {
            stream,
            framing_from_content_type: true,
            detect_timestamps: false,
        });
        let path = api.logs(id, &LogsQuery { follow: plan.follow, since: plan.since, tail: plan.tail });
        let lc = LogConn {
            id: id.to_owned(),
            dec,
            rules: StreamRules::new(&plan, now_ns),
            head_seen: false,
            opened: Instant::now(),
            last_data: Instant::now(),
            daemon_error: None,
            live: plan.live,
        };
        match self.open_conn(&path, Role::Logs(Box::new(lc))) {
            Ok(key) => {
                if let Some(c) = self.containers.get_mut(id) {
                    c.follow = Follow::Streaming(key);
                }
            }
            Err(e) => {
                // Nothing is lost while it waits: the next stream resumes
                // where this one would have.
                self.connect_error(&e);
                if !is_transient_connect_error(&e) {
                    self.stream_trouble(id, &format!("cannot connect to Docker: {e}"));
                }
                self.retry_connect(id, &e);
            }
        }
    }

    /// Feed the stream's decoder through a [`Delivery`] that drops replays and
    /// writes the rest. `None` if the connection or container is gone.
    fn deliver<R>(
        &mut self,
        key: usize,
        feed: impl FnOnce(&mut ResponseDecoder, &mut Delivery<'_>) -> R,
    ) -> Option<R> {
        let Agent { conns, containers, output, metrics, checkpoints, sink, docker_clock, next_gen, .. } =
            self;
        let Role::Logs(lc) = &mut conns.get_mut(key)?.role else { return None };
        let c = containers.get_mut(&lc.id)?;
        let Container { id, resume, identity_json, acked, sink: c_sink, .. } = c;
        let resume = resume.as_mut()?;
        let LogConn { dec, rules, daemon_error, .. } = &mut **lc;
        let with_sink = sink.is_some();
        let mut delivery = Delivery {
            rules,
            daemon_error,
            resume,
            identity_json,
            output,
            sink: sink.as_mut().map(|s| (s, ContainerSinkRef { id, sink: c_sink, acked })),
            metrics,
            delivered: false,
            now: Instant::now(),
            latest_ts: None,
        };
        let r = feed(dec, &mut delivery);
        if let Some(ts) = delivery.latest_ts {
            docker_clock.observe_line(ts, delivery.now, *next_gen);
        }
        if delivery.delivered && !with_sink {
            checkpoints.dirty = true;
        }
        if delivery.delivered && with_sink {
            self.after_sink_push();
        }
        Some(r)
    }

    pub(crate) fn logs_data(&mut self, key: usize, data: &[u8]) -> bool {
        let Some(result) = self.deliver(key, |dec, to| dec.push(data, &mut |ev| to.on_event(ev))) else {
            return false;
        };
        let Some(Role::Logs(lc)) = self.conns.get_mut(key).map(|c| &mut c.role) else { return false };
        lc.last_data = Instant::now();
        let head_now = !lc.head_seen && lc.dec.head().is_some();
        let catchup = lc.rules.catchup;
        // dockerd keeps the connection open after the terminating chunk:
        // the response's end, not EOF, is the stream's end.
        let ended = lc.dec.is_done();
        if head_now {
            lc.head_seen = true;
        }
        if let Err(e) = result {
            self.logs_error(key, e);
            return false;
        }
        if head_now {
            self.logs_head(key);
        }
        if catchup {
            self.metrics.reconnect(ReconnectReason::Catchup);
            let id = self.abandon_conn(key);
            if let Some(c) = id.as_deref().and_then(|id| self.containers.get_mut(id)) {
                c.catchup_next = true;
            }
            if let Some(id) = id {
                self.open_logs(&id);
            }
            return false;
        }
        if ended {
            self.logs_ended(key);
            return false;
        }
        self.conns.contains(key)
    }

    /// The response head arrived: arm the rotation deadlines.
    fn logs_head(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Role::Logs(lc) = &conn.role else { return };
        let ok = lc.dec.head().is_some_and(|h| h.is_success());
        self.docker_clock.observe(lc.dec.head().and_then(|h| h.date), conn.gen);
        let id = lc.id.clone();
        self.cancel_timer(key, ConnTimer::Head);
        if !ok {
            // The error body follows; its deadline is the API one.
            let at = Instant::now() + self.cfg.api_timeout;
            self.add_timer(key, at, ConnTimer::Api);
            return;
        }
        let jitter = 1.0 - 0.1 * self.rng.unit();
        let age = self.cfg.rotate_after.mul_f64(jitter);
        let now = Instant::now();
        self.add_timer(key, now + age, ConnTimer::Age);
        self.add_timer(key, now + self.cfg.idle_timeout, ConnTimer::Idle);
        if let Some(c) = self.containers.get_mut(&id) {
            c.backoff.reset();
        }
    }

    /// The idle deadline fired: rotate if the stream really was silent that
    /// long, else look again when it could have been.
    pub(crate) fn idle_check(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let Role::Logs(lc) = &conn.role else { return };
        let due = lc.last_data + self.cfg.idle_timeout;
        if Instant::now() >= due {
            self.metrics.deadline(ConnTimer::Idle.metric());
            self.rotate(key, RotationReason::Idle);
        } else {
            self.add_timer(key, due, ConnTimer::Idle);
        }
    }

    /// Close a healthy stream on purpose and reopen it where it was.
    pub(crate) fn rotate(&mut self, key: usize, reason: RotationReason) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let Role::Logs(lc) = &conn.role else { return };
        if reason == RotationReason::Age {
            self.metrics.deadline(ConnTimer::Age.metric());
        }
        self.metrics.rotation(reason, lc.opened.elapsed());
        if let Some(id) = self.abandon_conn(key) {
            self.open_logs(&id);
        }
    }

    /// Close a connection without finishing it. For a log stream, remember
    /// the lines it had begun (the next stream resumes before them) and its
    /// rate. Returns the container id of a log stream.
    pub(crate) fn abandon_conn(&mut self, key: usize) -> Option<String> {
        let paused = self.conns.get(key).is_some_and(|c| c.paused);
        match self.close_conn(key)? {
            Role::Logs(lc) => {
                let lc = *lc;
                let c = self.containers.get_mut(&lc.id)?;
                if let Some(resume) = c.resume.as_mut() {
                    let head = lc.dec.head();
                    // "Asked" on Docker's clock (its `Date`) if it is behind ours.
                    let asked = head
                        .and_then(|h| h.date)
                        .map_or(lc.rules.requested_at_ns, |d| d.min(lc.rules.requested_at_ns));
                    lc.rules.on_close(
                        resume,
                        lc.dec.logs().map(|l| l.open_lines()),
                        head.is_some_and(|h| h.is_success()),
                        !paused,
                        lc.opened.elapsed().as_nanos() as i64,
                        asked,
                    );
                }
                update_rate(c, &lc);
                c.follow = Follow::Idle;
                Some(lc.id)
            }
            Role::Api { call, .. } => {
                self.api_abandoned(call);
                None
            }
            Role::Events(_) => {
                self.docker.events = None;
                None
            }
            Role::Scraper(_) => None,
            Role::Sink(_) => None,
        }
    }

    /// The stream's connection reached EOF.
    pub(crate) fn logs_eof(&mut self, key: usize) {
        // A clean end (the terminating chunk) flushes a last line that had
        // no newline: the container's final output.
        let Some(result) = self.deliver(key, |dec, to| dec.finish(&mut |ev| to.on_event(ev))) else {
            return;
        };
        match result {
            Ok(()) => self.logs_ended(key),
            Err(e) => self.logs_error(key, e),
        }
    }

    /// The stream ended cleanly: the container stopped or restarted, or
    /// dockerd ended it while the container runs. Check which.
    pub(crate) fn logs_ended(&mut self, key: usize) {
        let daemon_error = match self.conns.get(key).map(|c| &c.role) {
            Some(Role::Logs(lc)) => lc.daemon_error.clone(),
            _ => None,
        };
        let catchup =
            matches!(self.conns.get(key).map(|c| &c.role), Some(Role::Logs(lc)) if lc.rules.catchup);
        let live = matches!(self.conns.get(key).map(|c| &c.role), Some(Role::Logs(lc)) if lc.live);
        let Some(id) = self.abandon_conn(key) else {
            return;
        };
        if catchup {
            if let Some(c) = self.containers.get_mut(&id) {
                c.catchup_next = true;
            }
        }
        if let Some(msg) = daemon_error {
            self.metrics.docker_error("systemerr");
            self.metrics.reconnect(ReconnectReason::Daemon);
            self.stream_trouble(&id, &format!("Docker reported: {msg}"));
            self.schedule_retry(&id);
            return;
        }
        // Running again (restart) or still running (dockerd ended the
        // stream): the inspect reopens it; stopped: it is drained.
        if let Some(c) = self.containers.get_mut(&id) {
            c.reopen_reason = Some(ReconnectReason::Eof);
            c.ended_live = live;
        }
        self.inspect(&id);
    }

    fn logs_error(&mut self, key: usize, e: ResponseError) {
        let id = match self.conns.get(key).map(|c| &c.role) {
            Some(Role::Logs(lc)) => lc.id.clone(),
            _ => return,
        };
        match e.kind {
            ResponseErrorKind::Daemon { status, message } => {
                self.abandon_conn(key);
                self.daemon_refused(&id, status, &message);
            }
            other => {
                self.metrics.docker_error("protocol");
                let e = ResponseError { offset: e.offset, kind: other };
                self.logs_failed(key, ConnFailure::Response(e));
            }
        }
    }

    /// dockerd answered a logs request with an error status.
    fn daemon_refused(&mut self, id: &str, status: u16, message: &str) {
        match status {
            404 | 409 => {
                self.metrics.docker_error("not_found");
                self.forget(id);
            }
            501 => {
                self.metrics.docker_error("driver_unsupported");
                self.permanent_failure(id, &format!("{message} (HTTP 501)"));
            }
            400..=499 => {
                self.metrics.docker_error("status_4xx");
                self.permanent_failure(id, &format!("{message} (HTTP {status})"));
            }
            _ => {
                self.metrics.docker_error("status_5xx");
                self.metrics.reconnect(ReconnectReason::Error);
                self.stream_trouble(id, &format!("Docker answered {status}: {message}"));
                self.schedule_retry(id);
            }
        }
    }

    /// A permanent error: say so once, clearly, and stop retrying until
    /// the container starts again.
    pub(crate) fn permanent_failure(&mut self, id: &str, why: &str) {
        if let Some(c) = self.containers.get_mut(id) {
            if c.follow != Follow::Failed {
                message!("not following container {} ({}): {why}", c.name, short(id));
            }
            c.follow = Follow::Failed;
        }
        self.release_slot(id);
    }

    pub(crate) fn logs_failed(&mut self, key: usize, why: ConnFailure) {
        let reason = match why {
            ConnFailure::Deadline(_) => ReconnectReason::Deadline,
            _ => ReconnectReason::Error,
        };
        let Some(id) = self.abandon_conn(key) else {
            return;
        };
        self.metrics.reconnect(if self.docker.up { reason } else { ReconnectReason::DockerDown });
        self.stream_trouble(&id, &why.to_string());
        self.schedule_retry(&id);
    }

    /// Log a stream problem: the first of a run of failures only, so a
    /// flapping daemon does not flood stderr.
    fn stream_trouble(&mut self, id: &str, what: &str) {
        if let Some(c) = self.containers.get(id) {
            if c.backoff.failures() == 0 {
                message!("stream of {} ({}): {what}; retrying", c.name, short(id));
            }
        }
    }

    /// Retry after the container's backoff.
    pub(crate) fn schedule_retry(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        let wait = c.backoff.next(&mut self.rng);
        c.follow = Follow::Backoff;
        c.wake = Some(self.timers.insert(Instant::now() + wait, Timer::Retry { id: id.to_owned() }));
    }

    /// A connect failed. dockerd's listen backlog full (EAGAIN on a unix
    /// socket, as in a burst of thousands of reopens) clears within
    /// milliseconds: retry soon, without growing the backoff. Anything else
    /// backs off.
    pub(crate) fn retry_connect(&mut self, id: &str, e: &std::io::Error) {
        if !is_backlog_full(e) {
            return self.schedule_retry(id);
        }
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        c.follow = Follow::Backoff;
        let wait = BACKLOG_RETRY.mul_f64(1.0 + self.rng.unit());
        c.wake = Some(self.timers.insert(Instant::now() + wait, Timer::Retry { id: id.to_owned() }));
    }

    pub(crate) fn retry_container(&mut self, id: &str) {
        let Some(c) = self.containers.get(id) else {
            return;
        };
        if c.follow != Follow::Backoff {
            return;
        }
        if !self.docker.up {
            // Docker is away: everything is retried when it is back.
            return;
        }
        self.inspect(id);
    }

    /// Stop following a container for good (destroyed or gone).
    pub(crate) fn forget(&mut self, id: &str) {
        let Some(c) = self.containers.remove(id) else {
            return;
        };
        match c.follow {
            Follow::Streaming(key) | Follow::Inspecting(key) => {
                self.close_conn(key);
            }
            _ => {}
        }
        self.checkpoints.loaded.remove(id);
        self.checkpoints.dirty = true;
        self.slots.unqueue(c.created_ns, c.id);
        if c.slot {
            self.slot_freed();
        }
    }
}

fn update_rate(c: &mut Container, lc: &LogConn) {
    let secs = lc.opened.elapsed().as_secs_f64().max(0.001);
    let rate = lc.rules.messages as f64 / secs;
    c.rate = if c.rate == 0.0 { rate } else { 0.5 * c.rate + 0.5 * rate };
}

/// First wait before connecting again to a daemon whose backlog was full
/// (up to twice this, jittered).
const BACKLOG_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

fn is_backlog_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
}

/// A connect failure that is retried without saying anything: out of fds
/// (counted and reported on its own) or dockerd's backlog full (clears in
/// milliseconds).
pub(crate) fn is_transient_connect_error(e: &std::io::Error) -> bool {
    crate::agent::budget::is_fd_exhaustion(e) || is_backlog_full(e)
}

/// The 12-character id Docker shows.
pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
