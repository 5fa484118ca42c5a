//! The sink on the loop: lines go into a batch, batches into a bounded
//! queue, and a container's checkpoint moves only when the batch holding
//! its lines is acknowledged.
//!
//! - **One push in flight.** The queue's front batch is the only one on
//!   the wire; the next goes when it is answered. Acknowledgements thus
//!   come in order, and each batch carries, per container with lines in
//!   it, the resume point *after* its last line in that batch ([`Ack`]):
//!   applying it is the whole checkpoint update. One push at a time costs
//!   throughput only on a slow link (a ~1 MiB batch per round trip).
//! - **A container's two positions.** `Container::resume` is where its
//!   next stream starts (past every line read, acknowledged or not: the
//!   queue is never read twice); `Container::acked` is what a checkpoint
//!   records while some of its lines wait, and `None` once none do.
//! - **Backpressure.** When the queue is full the loop stops reading log
//!   streams; dockerd's log files hold what follows. Streams left paused
//!   for [`PAUSED_CLOSE_AFTER`] are closed (an outage of hours holds no
//!   connections) and reopened from their resume point once the queue has
//!   room.
//!
//! The connection, its answers and retries are in [`super::sink_conn`]; the
//! sink's host name is resolved on the loop by [`super::resolve`].

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::agent::container::{Backoff, Container, Follow};
use crate::agent::event_loop::{Agent, Timer};
use crate::agent::resolve::SinkAddrs;
use crate::agent::resume::Resume;
use crate::message;
use crate::messages::Limiter;
use crate::record::Record;
use crate::sink::loki::batch::{Batch, Line};
use crate::sink::loki::config::{LokiConfig, MetadataMode};
use crate::sink::loki::labels::{Container as LabelSource, LokiStream};
use crate::sink::metrics::SinkMetrics;
use crate::sink::outcome::RejectReason;
use crate::sink::queue::{Queue, Queued};
use crate::sink::retention::{RateMeter, Retention};
use crate::timer_wheel::TimerId;

/// Streams paused this long by a full queue are closed, and reopened once
/// it drains.
pub const PAUSED_CLOSE_AFTER: Duration = Duration::from_secs(60);

/// Smallest read of a log stream while the queue is nearly full.
pub const MIN_READ: usize = 2 << 10;

/// Longest backoff between pushes that fail (not refused ones, nor a
/// longer `Retry-After`): once the receiver is healthy again, the first
/// acknowledgement comes within this (plus the push itself). A failing
/// push costs a connect and a request: cheap enough to try every few
/// seconds through an outage of hours, with jitter against a fleet's herd.
pub const RETRY_CAP: Duration = Duration::from_secs(5);

/// The sink's housekeeping period.
pub const TICK: Duration = Duration::from_secs(1);

/// What a batch's acknowledgement delivers for one container.
#[derive(Debug)]
pub(crate) struct Ack {
    pub id: String,
    /// The container's resume point after its last line in the batch.
    /// `None` just after a batch is sealed while another container's lines
    /// are being delivered: this container has read nothing since its last
    /// line in the batch, so its resume point as soon as that delivery
    /// ends is the one ([`Agent::fill_acks`]).
    pub resume: Option<Resume>,
    pub lines: u32,
}

/// Whether pushes carry structured metadata (see `--loki-structured-metadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metadata {
    On,
    /// A whole push was refused with a message that does not name the
    /// metadata (Loki 2.8's JSON decoder): the same batch goes once
    /// without it; accepted, metadata stays off; refused again, it was not
    /// the metadata.
    Trying,
    /// Refused by the sink (or `never`): left out of every push.
    Off,
}

/// A container with lines in the batch being filled.
#[derive(Debug)]
pub(crate) struct Member {
    pub id: String,
    pub lines: u32,
}

/// A container's part in the sink.
#[derive(Debug, Default)]
pub struct ContainerSink {
    /// Its Loki streams, by Docker stream id (stdin, stdout, stderr,
    /// systemerr): built when the container is inspected.
    pub streams: [Option<Rc<LokiStream>>; 4],
    /// Lines read and not yet acknowledged (batch, queue, wire).
    pub pending: u64,
    /// Its place in `Sink::members`, for the batch numbered so.
    pub(crate) member: Option<(u64, usize)>,
    /// What its logging driver keeps, if it rotates.
    pub retention: Option<Retention>,
    /// Bytes its driver stored for the lines read (estimated).
    pub stored: u64,
    pub meter: RateMeter,
    /// Its stream waits, closed, for room in the queue (it is in
    /// `Sink::closed_for_room`, once).
    pub parked: bool,
}

pub(crate) struct Sink {
    pub cfg: LokiConfig,
    pub tls: Option<crate::agent::sink_conn::TlsSetup>,
    pub batch: Batch<()>,
    /// Containers with lines in `batch`, in order of their first line.
    pub members: Vec<Member>,
    /// Number of the batch being filled.
    pub batch_seq: u64,
    /// Queued batches at the back have acks to fill.
    pub unfilled: bool,
    pub queue: Queue<Ack>,
    /// The batch timer, while `batch` holds lines.
    pub batch_timer: Option<TimerId>,
    /// The connection's slab key.
    pub conn: Option<usize>,
    /// A second connection carrying the same push, while the first has
    /// had no answer for `--sink-hedge-after` (see `sink_conn`).
    pub hedge: Option<usize>,
    pub hedge_timer: Option<TimerId>,
    /// Waiting before the next try (backoff, Retry-After, refused).
    pub retry_timer: Option<TimerId>,
    pub backoff: Backoff,
    pub addrs: SinkAddrs,
    /// The configuration is refused (401, 403, 404, 413, TLS): what to fix.
    pub refused: Option<String>,
    /// The last failure (for /healthz while pushes fail).
    pub failing: Option<String>,
    pub metrics: SinkMetrics,
    /// At most one "rejected" message per reason per minute.
    pub reject_says: HashMap<RejectReason, Limiter>,
    pub refused_says: Limiter,
    pub headroom_says: Limiter,
    pub retry_says: Limiter,
    /// Since when log streams have been paused: from the moment the queue
    /// was full until it is below its low-water mark again.
    pub paused_since: Option<Instant>,
    /// Streams closed by a long pause wait for room to reopen.
    pub closed_for_room: Vec<String>,
    /// The reusable request head (all but the length-dependent part).
    pub headers: crate::http::request::Headers,
    pub metadata: Metadata,
    /// 429s in a row to the front batch (a second one cuts it in two).
    pub rate_limited: u32,
    /// The largest push a backlog is merged into: `cfg.max_push` until a
    /// receiver says a push was too large.
    pub max_push: usize,
    /// Why metadata is off (for /healthz and `check`), once the sink
    /// refused it.
    pub metadata_off: Option<String>,
}

/// The sink's checked settings, made before the loop exists.
pub struct SinkSetup {
    cfg: LokiConfig,
    tls: Option<crate::agent::sink_conn::TlsSetup>,
    headers: crate::http::request::Headers,
}

impl SinkSetup {
    /// `None` without `--loki`. Reads the secret and TLS files.
    pub fn from_args(args: &crate::sink::loki::config::LokiArgs) -> anyhow::Result<Option<Self>> {
        let Some(cfg) = LokiConfig::from_args(args, &host_name(), |k| std::env::var(k).ok())? else {
            return Ok(None);
        };
        let tls = if cfg.url.tls { Some(crate::agent::sink_conn::TlsSetup::new(&cfg)?) } else { None };
        let headers = crate::agent::sink_conn::request_headers(&cfg)?;
        Ok(Some(SinkSetup { cfg, tls, headers }))
    }
}

/// This machine's name, for the sink's `host` label: the kernel's (in a
/// container, the container's own unless it shares the host's UTS
/// namespace; `--loki-label host=NAME` sets it).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

impl Sink {
    pub(crate) fn new(setup: SinkSetup, registry: &mut prometheus_client::registry::Registry) -> Self {
        let SinkSetup { cfg, tls, headers } = setup;
        let mut batch = Batch::new(cfg.limits, cfg.encoding);
        let metadata = if cfg.metadata == MetadataMode::Never { Metadata::Off } else { Metadata::On };
        batch.set_metadata(metadata == Metadata::On);
        let metrics = SinkMetrics::register(registry);
        metrics.structured_metadata_enabled.set(i64::from(metadata == Metadata::On));
        Sink {
            max_push: cfg.max_push,
            batch,
            members: Vec::new(),
            batch_seq: 0,
            unfilled: false,
            queue: Queue::new(cfg.queue_bytes),
            batch_timer: None,
            conn: None,
            hedge: None,
            hedge_timer: None,
            retry_timer: None,
            backoff: Backoff::with_cap(RETRY_CAP),
            addrs: SinkAddrs::new(&cfg.url),
            refused: None,
            failing: None,
            metrics,
            reject_says: HashMap::new(),
            refused_says: Limiter::new(Duration::from_secs(60)),
            headroom_says: Limiter::new(Duration::from_secs(60)),
            retry_says: Limiter::new(Duration::from_secs(30)),
            paused_since: None,
            closed_for_room: Vec::new(),
            headers,
            tls,
            cfg,
            metadata,
            rate_limited: 0,
            metadata_off: None,
        }
    }

    /// Take one line of `c`. The caller sealed a full batch before (see
    /// [`Sink::seal`]), so the batch takes it.
    pub(crate) fn push(&mut self, c: &mut ContainerSinkRef<'_>, rec: &Record<'_>, now: Instant) {
        let Some(stream) = c.sink.streams[rec.stream as usize].as_ref() else {
            return;
        };
        let line =
            Line { timestamp_ns: rec.timestamp.unwrap_or(0), text: rec.message, truncated: rec.truncated };
        if self.batch.push(stream, line, (), now).is_err() {
            debug_assert!(false, "pushed into a full batch");
            return;
        }
        match c.sink.member {
            Some((seq, i)) if seq == self.batch_seq => self.members[i].lines += 1,
            _ => {
                c.sink.member = Some((self.batch_seq, self.members.len()));
                self.members.push(Member { id: c.id.to_owned(), lines: 1 });
            }
        }
        c.sink.pending += 1;
        if let Some(r) = &c.sink.retention {
            c.sink.stored += rec.message.len() as u64 + r.overhead;
        }
        self.queue.set_filling(self.batch.size());
    }

    /// Move the batch being filled into the queue. `current`: the
    /// container being delivered right now and its resume point before the
    /// line at hand; the others' are filled in when the delivery ends.
    pub(crate) fn seal(&mut self, current: Option<(&str, &Resume)>) -> bool {
        let metadata = self.batch.metadata();
        let Some(done) = self.batch.finish() else { return false };
        self.batch_seq += 1;
        let acks = self
            .members
            .drain(..)
            .map(|m| {
                let resume = current.filter(|(id, _)| *id == m.id).map(|(_, r)| r.clone());
                Ack { id: m.id, resume, lines: m.lines }
            })
            .collect::<Vec<_>>();
        self.unfilled |= acks.iter().any(|a| a.resume.is_none());
        self.metrics.lines_cut(done.cut);
        self.queue.set_filling(0);
        self.queue.push_back(Queued {
            body: done.body,
            lines: done.lines,
            oldest: done.opened,
            acks,
            metadata,
            cut: false,
        });
        true
    }

    /// The queue (with the batch being filled) is at its cap.
    pub(crate) fn is_full(&self) -> bool {
        self.queue.is_full()
    }

    /// Whether log streams must not be read: the queue reached its cap and
    /// has not yet drained below its low-water mark (so reading does not
    /// flap around one threshold, and a pause is one pause).
    pub(crate) fn note_full(&mut self) -> bool {
        if self.is_full() {
            self.paused_since.get_or_insert_with(Instant::now);
        } else if self.has_room() {
            self.paused_since = None;
        }
        self.paused_since.is_some()
    }

    /// How much of a log stream to read at once: near the cap, a read is
    /// sized to the room left, so the queue passes its cap by at most
    /// what [`MIN_READ`] bytes of log become in a batch (short lines grow
    /// by their metadata: about 8 KiB at worst).
    pub(crate) fn read_limit(&self) -> usize {
        let room = self.cfg.queue_bytes.saturating_sub(self.queue.bytes());
        (room / 4).clamp(MIN_READ, crate::agent::event_loop::READ_BUF)
    }

    pub(crate) fn has_room(&self) -> bool {
        self.queue.has_room()
    }

    /// Why /healthz fails because of the sink, if it does.
    pub(crate) fn trouble(&self) -> Option<String> {
        if let Some(r) = &self.refused {
            return Some(format!("the sink refuses the configuration: {r}"));
        }
        let age = self.backlog_age(Instant::now());
        match &self.failing {
            Some(f) if age > Duration::from_secs(60) => {
                Some(format!("the sink's oldest unacknowledged line is {age:.0?} old: {f}"))
            }
            _ => None,
        }
    }

    /// Age of the oldest unacknowledged line.
    pub(crate) fn backlog_age(&self, now: Instant) -> Duration {
        let oldest =
            self.queue.oldest().or_else(|| self.batch.deadline().map(|d| d - self.cfg.limits.max_age));
        oldest.map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// The gauges the loop does not keep current line by line: set at
    /// each scrape and each tick.
    pub(crate) fn update_gauges(&self) {
        self.metrics.queue_bytes.set(self.queue.bytes() as i64);
        self.metrics.backlog_age_seconds.set(self.backlog_age(Instant::now()).as_secs() as i64);
    }
}

/// The parts of a container [`Sink::push`] needs, borrowed apart from its
/// resume point (which the stream rules hold at the same time).
pub(crate) struct ContainerSinkRef<'a> {
    pub id: &'a str,
    pub sink: &'a mut ContainerSink,
    pub acked: &'a mut Option<Resume>,
}

/// The Loki streams of a container, from its inspect.
pub(crate) fn container_streams(
    cfg: &LokiConfig,
    c: &Container,
    labels: &std::collections::BTreeMap<String, String>,
) -> [Option<Rc<LokiStream>>; 4] {
    let src = LabelSource { id: &c.id, name: &c.name, image: &c.image, labels };
    let mut out: [Option<Rc<LokiStream>>; 4] = Default::default();
    for (i, slot) in out.iter_mut().enumerate() {
        if let Some(s) = crate::docker::frame::StreamId::from_byte(i as u8) {
            *slot = Some(Rc::new(cfg.labels.stream(&src, s)));
        }
    }
    out
}

impl Agent {
    /// Seal the batch being filled into the queue (its time has come, or
    /// it is full), with each member's resume point as it is now: every
    /// line it read so far is in this batch or an earlier one.
    pub(crate) fn seal_batch(&mut self) {
        let Some(sink) = self.sink.as_mut() else { return };
        if let Some(t) = sink.batch_timer.take() {
            self.timers.cancel(t);
        }
        sink.seal(None);
        self.fill_acks();
        self.pump_sink();
    }

    /// Give the acks of batches sealed during a delivery the resume points
    /// their containers have now.
    pub(crate) fn fill_acks(&mut self) {
        let Some(sink) = self.sink.as_mut() else { return };
        if !std::mem::take(&mut sink.unfilled) {
            return;
        }
        for q in sink.queue.iter_mut().rev() {
            let mut any = false;
            for a in q.acks.iter_mut().filter(|a| a.resume.is_none()) {
                any = true;
                a.resume = self.containers.get(&a.id).and_then(|c| c.resume.clone());
            }
            if !any {
                break;
            }
        }
    }

    /// After lines went to the sink: fill acks, seal a full batch, arm the
    /// batch timer, send.
    pub(crate) fn after_sink_push(&mut self) {
        self.fill_acks();
        let Some(sink) = self.sink.as_mut() else { return };
        if sink.batch.is_full() {
            return self.seal_batch();
        }
        if sink.batch_timer.is_none() {
            if let Some(d) = sink.batch.deadline() {
                sink.batch_timer = Some(self.timers.insert(d, Timer::SinkBatch));
            }
        }
        self.pump_sink();
    }

    pub(crate) fn sink_batch_due(&mut self) {
        if let Some(sink) = self.sink.as_mut() {
            sink.batch_timer = None;
        }
        self.seal_batch();
    }

    /// The front batch was answered for good (2xx, or a 400 refusing some
    /// of its entries, which Loki lists, and storing the rest): its lines
    /// are delivered; checkpoints move over them.
    pub(crate) fn batch_delivered(&mut self, refused: Option<(&[(RejectReason, u64)], &str)>) {
        let Some(sink) = self.sink.as_mut() else { return };
        let Some(q) = sink.queue.pop_front() else { return };
        sink.rate_limited = 0;
        // Answered for good: the refused lines count too (not sent again).
        sink.metrics.lines.inc_by(q.lines as u64);
        if let Some((refused, said)) = refused {
            let mut n = 0;
            for &(reason, lines) in refused {
                sink.metrics.rejected(reason, lines);
                n += lines;
            }
            let reasons = refused.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(", ");
            // One message a minute for each set of reasons.
            let key = refused.first().map_or(RejectReason::TooOld, |(r, _)| *r);
            let says = sink.reject_says.entry(key).or_insert_with(|| Limiter::new(Duration::from_secs(60)));
            if let Some(held) = says.allow(Instant::now()) {
                message!(
                    "the sink refused {n} lines of a push of {} for good ({reasons}): {}; it stored the \
                     others, and the refused ones are not sent again: they would be refused again \
                     (log_capturer_sink_rejected_lines_total){}",
                    q.lines,
                    said,
                    crate::messages::held_back(held)
                );
            }
        }
        for ack in q.acks {
            let Some(c) = self.containers.get_mut(&ack.id) else { continue };
            c.sink.pending = c.sink.pending.saturating_sub(u64::from(ack.lines));
            if c.sink.pending == 0 {
                c.acked = None;
            } else if let Some(r) = ack.resume {
                c.acked = Some(r);
            }
        }
        self.checkpoints.dirty = true;
    }

    /// Log streams may be read again (the queue has room): reopen those
    /// a long pause closed (through an inspect: the container may have
    /// stopped meanwhile).
    pub(crate) fn sink_room_again(&mut self) {
        let Some(sink) = self.sink.as_mut() else { return };
        let ids = std::mem::take(&mut sink.closed_for_room);
        for id in ids {
            let Some(c) = self.containers.get_mut(&id) else { continue };
            c.sink.parked = false;
            if c.follow == Follow::Backoff {
                self.inspect(&id);
            }
        }
    }

    /// Once a second: gauges, the retention headroom; streams paused too
    /// long are closed.
    pub(crate) fn sink_tick(&mut self) {
        self.retention_headroom();
        let Some(sink) = self.sink.as_mut() else { return };
        sink.update_gauges();
        self.timers.insert(Instant::now() + TICK, Timer::SinkTick);
        sink.note_full();
        let Some(since) = sink.paused_since else { return };
        if since.elapsed() < PAUSED_CLOSE_AFTER {
            return;
        }
        let streaming: Vec<(String, usize)> = self
            .containers
            .values()
            .filter_map(|c| match c.follow {
                Follow::Streaming(key) => Some((c.id.clone(), key)),
                _ => None,
            })
            .collect();
        if streaming.is_empty() {
            return;
        }
        message!(
            "the sink's queue has been full for {:.0?}: closing {} log streams until it drains (their \
             lines wait in dockerd's log files; they are reopened where they stopped)",
            since.elapsed(),
            streaming.len()
        );
        for (id, key) in streaming {
            self.park_stream(&id, key);
        }
    }

    /// At shutdown: send what was read and wait for the answers, until
    /// `deadline` or the first failure. What is not acknowledged by then is
    /// read again on the next start (its checkpoint did not move).
    pub(crate) fn drain_sink(&mut self, deadline: Instant) {
        self.seal_batch();
        let mut events = mio::Events::with_capacity(16);
        let mut fired = Vec::new();
        loop {
            let Some(sink) = self.sink.as_ref() else { return };
            let now = Instant::now();
            if sink.queue.is_empty()
                || sink.retry_timer.is_some()
                || sink.refused.is_some()
                || now >= deadline
            {
                return;
            }
            let wait = deadline.saturating_duration_since(now).min(Duration::from_millis(50));
            if self.poll.poll(&mut events, Some(wait)).is_err() {
                return;
            }
            for ev in events.iter() {
                let t = ev.token();
                if crate::agent::resolve::is_dns_token(t) {
                    self.on_dns_event(t);
                } else if self.sink.as_ref().is_some_and(|s| s.conn == Some(t.0) || s.hedge == Some(t.0)) {
                    self.sink_event(t.0, ev.is_readable() || ev.is_read_closed(), ev.is_writable());
                }
            }
            self.timers.poll_expired(Instant::now(), &mut fired);
            for (id, t) in fired.drain(..) {
                if matches!(t, Timer::Conn { .. } | Timer::SinkDns | Timer::SinkBatch) {
                    self.on_timer(id, t);
                }
            }
        }
    }

    /// Measure write rates, publish the shortest headroom, and warn when
    /// the backlog's age nears it.
    fn retention_headroom(&mut self) {
        let Some(sink) = self.sink.as_mut() else { return };
        let now = Instant::now();
        let flowing = sink.paused_since.is_none();
        let mut shortest: Option<(Duration, &str)> = None;
        for c in self.containers.values_mut() {
            let Some(r) = c.sink.retention else { continue };
            if !matches!(c.follow, Follow::Streaming(_)) {
                continue;
            }
            c.sink.meter.sample(c.sink.stored, flowing, now);
            if let Some(h) = c.sink.meter.headroom(&r) {
                if shortest.map_or(true, |(s, _)| h < s) {
                    shortest = Some((h, &c.name));
                }
            }
        }
        let gauge = shortest.map_or(f64::INFINITY, |(h, _)| h.as_secs_f64());
        sink.metrics.retention_headroom_seconds.set(gauge);
        let age = sink.backlog_age(now);
        if let Some((h, name)) = shortest {
            if age > h / 2 && sink.headroom_says.allow(now).is_some() {
                message!(
                    "the sink's backlog is {:.0?} old, and dockerd keeps only about {:.0?} of container \
                     {name}'s log (its driver rotates): if the sink stays away that long, its oldest \
                     unread lines are deleted before they are shipped",
                    age,
                    h
                );
            }
        }
    }

    /// Close a stream that waits for room in the queue; it is reopened
    /// (through an inspect) when there is. It keeps its slot.
    pub(crate) fn park_stream(&mut self, id: &str, key: usize) {
        self.abandon_conn(key);
        self.park(id);
    }

    /// A stream about to be opened while the queue is full waits instead.
    pub(crate) fn must_wait_for_room(&mut self, id: &str) -> bool {
        if !self.sink.as_mut().is_some_and(Sink::note_full) {
            return false;
        }
        self.park(id);
        true
    }

    /// `id` waits, holding its slot, until the queue has room.
    fn park(&mut self, id: &str) {
        let (Some(sink), Some(c)) = (self.sink.as_mut(), self.containers.get_mut(id)) else { return };
        c.follow = Follow::Backoff;
        if !std::mem::replace(&mut c.sink.parked, true) {
            sink.closed_for_room.push(id.to_owned());
        }
    }
}
