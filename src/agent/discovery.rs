//! Knowing Docker and its containers: the ping that tells whether Docker is
//! up, the events stream that announces containers as they start, the list
//! that catches up on everything else, and the inspect that precedes each
//! stream.
//!
//! Order matters: the events stream is opened first and the list taken
//! only once its head has arrived, so no container can start unseen between
//! the two. On every reconnect, events replay from the newest one seen.
//!
//! Discovery has its own backoffs, one for the events stream and one for
//! the list, that a successful ping does not reset: a daemon can answer
//! pings and still refuse events (an authorization plugin's 403) or send a
//! list that cannot be read. The list is retried on its own while the
//! events stream stays up, so containers that start meanwhile are followed.
//!
//! Container ids become request paths, and the Docker socket is
//! root-equivalent: an id that is not 64 lower-case hex digits is refused
//! where it enters (event, list, inspect answer).

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use memchr::memchr;

use crate::agent::budget::is_fd_exhaustion;
use crate::agent::conn::{ConnFailure, ConnTimer, Role};
use crate::agent::container::{Backoff, Container, Ending, Follow, StartPoint};
use crate::agent::event_loop::{Agent, Timer, HEALTH_PING_EVERY};
use crate::agent::exchange::{
    Exchange, ExchangeError, Response, MAX_ERROR_BODY, MAX_INSPECT_BODY, MAX_LIST_BODY,
};
use crate::agent::follow::{is_transient_connect_error, short};
use crate::agent::resume::Resume;
use crate::agent::stream::{after_end, AfterEnd};
use crate::docker::api::{error_message, is_container_id, shown, ContainerInspect, ContainerSummary, Event};
use crate::docker::request::{negotiate, Api};
use crate::docker::timestamp;
use crate::http::body::{BodyDecoder, BodyEvent};
use crate::http::head;
use crate::message;
use crate::messages::{held_back, Limiter};
use crate::metrics::{DiscoveryCall, DiscoveryFailure};
use crate::timer_wheel::TimerId;

/// How long a stopped container's final read waits for its `die` event
/// before reading anyway (the events stream may be down).
const DIE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Longest event line we accept (an event is a few hundred bytes; labels
/// can make it a few KiB).
const MAX_EVENT_LINE: usize = 1 << 20;

#[derive(Debug, Clone)]
pub(crate) enum ApiCall {
    Ping,
    List,
    Inspect { id: String },
}

/// An events stream that stayed up this long was established: when it
/// breaks, its backoff starts over. One that breaks sooner (closed right
/// after its head, say) keeps backing off, however often it opens.
const EVENTS_STABLE: Duration = Duration::from_secs(10);
/// Container ids remembered from events while a list is in flight (a
/// list takes milliseconds; dockerd buffers 1 024 events per subscriber).
const MAX_SEEN_WHILE_LISTING: usize = 4096;
/// While a discovery call keeps failing, at most one message this often.
const SAY_EVERY: Duration = Duration::from_secs(30);
/// Invalid container ids: said once, then at most this often.
const SAY_IDS_EVERY: Duration = Duration::from_secs(300);
/// The most of a daemon's message shown in messages and `/healthz`.
const MAX_SHOWN: usize = 300;

/// The events stream: head, chunked body, newline-delimited JSON.
#[derive(Default)]
pub(crate) struct EventsConn {
    head: head::HeadReader,
    body: Option<BodyDecoder>,
    line: Vec<u8>,
    skipping: bool,
    /// A non-2xx head: its status, and the error body read so far (up to
    /// [`MAX_ERROR_BODY`]), for the daemon's message.
    refused: Option<(u16, Vec<u8>)>,
}

/// Discovery's state besides the events connection (in `DockerState`).
pub(crate) struct Discovery {
    pub events: Retries,
    pub list: Retries,
    /// When the current events stream's 2xx head arrived.
    events_up_since: Option<Instant>,
    /// A list call is in flight.
    listing: bool,
    /// A list is due: the events stream (re)opened, or the last list failed.
    list_wanted: bool,
    /// Containers the events stream named while a list was in flight: the
    /// list is a snapshot from when it was sent, and must not make the
    /// agent forget a container that started after it (it would never be
    /// followed: no other event comes for it). Bounded: past
    /// [`MAX_SEEN_WHILE_LISTING`] the list forgets nothing and another is
    /// taken.
    seen_while_listing: HashSet<String>,
    seen_overflow: bool,
    recovered_says: Limiter,
    ids_says: Limiter,
}

impl Discovery {
    /// A list call is in flight (its connection is in the slab).
    pub(crate) fn listing(&self) -> bool {
        self.listing
    }
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            events: Retries::default(),
            list: Retries::default(),
            events_up_since: None,
            listing: false,
            list_wanted: false,
            seen_while_listing: HashSet::new(),
            seen_overflow: false,
            recovered_says: Limiter::new(SAY_EVERY),
            ids_says: Limiter::new(SAY_IDS_EVERY),
        }
    }
}

/// One discovery call's retries (the events stream's, the list's): its own
/// backoff, which a ping never resets, the timer of its next try, what is
/// wrong (for `/healthz`), and how often that is said.
#[derive(Debug)]
pub(crate) struct Retries {
    backoff: Backoff,
    timer: Option<TimerId>,
    /// Why it is failing, while it is: for `/healthz`.
    pub trouble: Option<String>,
    says: Limiter,
}

impl Default for Retries {
    fn default() -> Self {
        Retries { backoff: Backoff::default(), timer: None, trouble: None, says: Limiter::new(SAY_EVERY) }
    }
}

impl Retries {
    /// It works again: the next failure starts the backoff over and is
    /// said at once. True if it had been failing.
    fn recovered(&mut self) -> bool {
        self.backoff.reset();
        self.says.reset();
        self.trouble.take().is_some()
    }
}

/// Why an events stream or a list failed.
#[derive(Debug)]
pub(crate) enum DiscoveryError {
    /// Non-2xx: the status and the daemon's message.
    Status(u16, String),
    /// The events stream ended or was closed.
    Closed(&'static str),
    /// Not HTTP or JSON as Docker writes it.
    Protocol(String),
    /// A list larger than this cap.
    TooLarge(usize),
    /// No connection, or it broke.
    Conn(String),
    /// A deadline passed.
    Deadline(String),
}

impl DiscoveryError {
    fn kind(&self) -> DiscoveryFailure {
        match self {
            Self::Status(s, _) if *s >= 500 => DiscoveryFailure::Status5xx,
            Self::Status(..) => DiscoveryFailure::Status4xx,
            Self::Closed(_) => DiscoveryFailure::Closed,
            Self::Protocol(_) => DiscoveryFailure::Protocol,
            Self::TooLarge(_) => DiscoveryFailure::TooLarge,
            Self::Conn(_) => DiscoveryFailure::Connect,
            Self::Deadline(_) => DiscoveryFailure::Deadline,
        }
    }

    /// The daemon may be gone: a ping finds out (and reports it).
    fn daemon_maybe_gone(&self) -> bool {
        matches!(self, Self::Closed(_) | Self::Conn(_) | Self::Deadline(_))
    }

    fn from_exchange(e: ExchangeError) -> Self {
        match e {
            ExchangeError::Status(s, m) => Self::Status(s, shown(&m, MAX_SHOWN)),
            ExchangeError::TooLarge(cap) => Self::TooLarge(cap),
            ExchangeError::Conn(m) => Self::Conn(m),
            e @ (ExchangeError::Head(_) | ExchangeError::Body(_)) => Self::Protocol(e.to_string()),
        }
    }

    fn from_conn(why: ConnFailure) -> Self {
        match why {
            ConnFailure::Io(e) => Self::Conn(e.to_string()),
            d @ ConnFailure::Deadline(_) => Self::Deadline(d.to_string()),
            ConnFailure::Response(e) => Self::Protocol(e.to_string()),
            ConnFailure::Transport(e) => Self::Conn(e.to_string()),
        }
    }
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(s, m) => write!(f, "Docker answered {s}: {m}"),
            Self::Closed(m) => f.write_str(m),
            Self::Protocol(m) | Self::Conn(m) | Self::Deadline(m) => f.write_str(m),
            Self::TooLarge(cap) => write!(f, "larger than {} MiB", cap >> 20),
        }
    }
}

/// A wait for a message: `0.3 s`, `12 s`.
fn secs(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} s", d.as_secs())
    }
}

impl Agent {
    // ---- ping -----------------------------------------------------------

    pub(crate) fn ping(&mut self) {
        if self.docker.pinging {
            return;
        }
        let call = ApiCall::Ping;
        match self.open_conn(Api::ping(), Role::Api { call, ex: Exchange::default() }) {
            Ok(_) => self.docker.pinging = true,
            Err(e) if is_fd_exhaustion(&e) => {
                // Not Docker's fault: keep its state, look again later.
                let wait = self.docker.backoff.next(&mut self.rng);
                self.arm_ping(wait);
            }
            Err(e) => {
                self.metrics.docker_error("connect");
                self.docker_down(&format!("cannot connect: {e}"));
            }
        }
    }

    fn ping_done(&mut self, result: Result<Response, ExchangeError>) {
        self.docker.pinging = false;
        match result {
            Ok(resp) => {
                self.docker.last_contact = Instant::now();
                let api = Api { version: negotiate(resp.head.api_version) };
                let changed = api.version != self.docker.api.version;
                self.docker.api = api;
                if !self.docker.up || changed {
                    if self.docker.up {
                        message!("Docker now speaks API {}", api.version);
                    }
                    self.docker_connected();
                } else {
                    self.arm_ping(HEALTH_PING_EVERY);
                }
            }
            Err(e) => self.docker_down(&e.to_string()),
        }
    }

    /// Docker answers: open the events stream (then list) unless discovery
    /// is waiting out its own backoff, and retry every stream that was
    /// waiting for Docker.
    pub(crate) fn docker_connected(&mut self) {
        if !self.docker.up {
            message!("Docker is up (API {})", self.docker.api.version);
        }
        self.docker.up = true;
        self.docker.last_contact = Instant::now();
        self.docker.backoff.reset();
        self.metrics.set_docker_up(true);
        // Open on another API version: reopen it on this one.
        if let Some(key) = self.docker.events.take() {
            self.close_conn(key);
            self.docker.discovery.events_up_since = None;
        }
        if self.docker.discovery.events.timer.is_none() {
            self.open_events();
        }
        let waiting: Vec<String> =
            self.containers.values().filter(|c| c.follow == Follow::Backoff).map(|c| c.id.clone()).collect();
        for id in waiting {
            self.inspect(&id);
        }
        self.arm_ping(HEALTH_PING_EVERY);
    }

    /// Docker does not answer: report unhealthy and keep trying, with
    /// backoff. Streams fail and wait on their own; nothing is lost because
    /// each resumes from its checkpoint.
    pub(crate) fn docker_down(&mut self, why: &str) {
        if self.docker.up {
            message!("Docker at {} is unreachable: {why}; retrying", self.cfg.host);
        }
        self.docker.up = false;
        self.metrics.set_docker_up(false);
        if let Some(key) = self.docker.events.take() {
            self.close_conn(key);
        }
        self.docker.discovery.events_up_since = None;
        let wait = self.docker.backoff.next(&mut self.rng);
        self.arm_ping(wait);
    }

    // ---- events ---------------------------------------------------------

    fn open_events(&mut self) {
        // Replay from just before the newest event seen (the daemon keeps
        // the last 256), so containers started while we reconnected are not
        // missed; a start seen twice is harmless.
        let since = self.docker.last_event_ns.map(|ns| ns - 1_000_000_000);
        let path = self.docker.api.events(since);
        self.docker.discovery.events_up_since = None;
        match self.open_conn(&path, Role::Events(Box::default())) {
            Ok(key) => self.docker.events = Some(key),
            Err(e) => {
                self.connect_error(&e);
                self.events_attempt_failed(DiscoveryError::Conn(format!("cannot connect: {e}")));
            }
        }
    }

    /// The events retry timer fired.
    pub(crate) fn events_retry(&mut self) {
        self.docker.discovery.events.timer = None;
        // Docker down: its ping's success opens the stream.
        if self.docker.up && self.docker.events.is_none() {
            self.open_events();
        }
    }

    pub(crate) fn events_data(&mut self, key: usize, mut data: &[u8]) -> bool {
        let mut events = Vec::new();
        let mut head_ok = None;
        let mut failure = None;
        {
            let Some(conn) = self.conns.get_mut(key) else {
                return false;
            };
            let Role::Events(ev) = &mut conn.role else {
                return false;
            };
            if ev.body.is_none() {
                match ev.head.push(data) {
                    Ok(None) => return true,
                    Ok(Some((h, used))) => {
                        data = &data[used..];
                        ev.body = Some(BodyDecoder::new(h.body));
                        head_ok = Some(h.is_success());
                        if !h.is_success() {
                            ev.refused = Some((h.status, Vec::new()));
                        }
                    }
                    Err(e) => failure = Some(DiscoveryError::Protocol(format!("events: {e}"))),
                }
            }
            if failure.is_none() {
                if let Some(body) = ev.body.as_mut() {
                    while !data.is_empty() || body.is_done() {
                        match body.decode(data) {
                            Ok((n, Some(BodyEvent::Data(d)))) => {
                                data = &data[n..];
                                match ev.refused.as_mut() {
                                    // The daemon's message is in the first
                                    // bytes; the rest is not read.
                                    Some((_, err)) => {
                                        let room = MAX_ERROR_BODY.saturating_sub(err.len());
                                        err.extend_from_slice(&d[..d.len().min(room)]);
                                        if err.len() >= MAX_ERROR_BODY {
                                            break;
                                        }
                                    }
                                    None => split_events(&mut ev.line, &mut ev.skipping, d, &mut events),
                                }
                            }
                            Ok((_, Some(BodyEvent::End))) => {
                                failure = Some(DiscoveryError::Closed("the events stream ended"));
                                break;
                            }
                            Ok((n, None)) => {
                                data = &data[n..];
                                if n == 0 {
                                    break;
                                }
                            }
                            Err(e) => {
                                failure = Some(DiscoveryError::Protocol(format!("events stream: {e}")));
                                break;
                            }
                        }
                    }
                }
                let full = ev.refused.as_ref().is_some_and(|(_, b)| b.len() >= MAX_ERROR_BODY);
                if full || (failure.is_some() && ev.refused.is_some()) {
                    failure = ev.refused.as_ref().map(refusal);
                }
            }
        }
        if head_ok == Some(true) {
            // The stream is established: no deadline on a quiet events
            // stream (the health ping watches the daemon), and now list.
            self.cancel_timer(key, ConnTimer::Head);
            self.docker.last_contact = Instant::now();
            self.events_established();
        }
        for ev in events {
            self.on_event(ev);
        }
        if let Some(why) = failure {
            self.events_broke(key, why);
            return false;
        }
        true
    }

    pub(crate) fn events_eof(&mut self, key: usize) {
        let refused = match self.conns.get(key).map(|c| &c.role) {
            Some(Role::Events(ev)) => ev.refused.as_ref().map(refusal),
            _ => None,
        };
        self.events_broke(key, refused.unwrap_or(DiscoveryError::Closed("the events stream was closed")));
    }

    /// The events connection failed (I/O error, deadline).
    pub(crate) fn events_failed(&mut self, key: usize, why: ConnFailure) {
        self.events_broke(key, DiscoveryError::from_conn(why));
    }

    /// The events stream's 2xx head arrived: list now (see the module doc).
    fn events_established(&mut self) {
        let d = &mut self.docker.discovery;
        d.events_up_since = Some(Instant::now());
        // (Its backoff starts over only once it stayed up: see
        // `events_attempt_failed`.)
        if d.events.trouble.take().is_some() {
            if let Some(held) = d.recovered_says.allow(Instant::now()) {
                message!("watching Docker events again{}", held_back(held));
            }
        }
        d.list_wanted = true;
        self.maybe_list();
    }

    /// The events stream broke or was refused: retry after its backoff.
    fn events_broke(&mut self, key: usize, why: DiscoveryError) {
        self.close_conn(key);
        if self.docker.events != Some(key) {
            return;
        }
        self.docker.events = None;
        self.events_attempt_failed(why);
    }

    fn events_attempt_failed(&mut self, why: DiscoveryError) {
        let now = Instant::now();
        let d = &mut self.docker.discovery;
        if d.events_up_since.take().is_some_and(|t| now.duration_since(t) >= EVENTS_STABLE) {
            d.events.backoff.reset();
            d.events.says.reset();
        }
        if let DiscoveryError::Status(s, _) = why {
            self.metrics.docker_error(if s >= 500 { "status_5xx" } else { "status_4xx" });
        }
        self.retry_discovery(DiscoveryCall::Events, why);
    }

    /// A discovery call failed: count it, say why (rate-limited), and try it
    /// again after its own backoff; ping if the daemon may be gone.
    fn retry_discovery(&mut self, call: DiscoveryCall, why: DiscoveryError) {
        let now = Instant::now();
        let d = &mut self.docker.discovery;
        let (r, what, timer) = match call {
            DiscoveryCall::Events => (&mut d.events, "cannot watch Docker events", Timer::EventsRetry),
            DiscoveryCall::List => (&mut d.list, "cannot read the container list", Timer::ListRetry),
        };
        let wait = r.backoff.next(&mut self.rng);
        self.metrics.discovery_failure(call, why.kind());
        let text = why.to_string();
        if let Some(held) = r.says.allow(now) {
            message!("{what}: {text}; retrying in {}{}", secs(wait), held_back(held));
        }
        r.trouble = Some(text);
        if let Some(t) = r.timer.take() {
            self.timers.cancel(t);
        }
        r.timer = Some(self.timers.insert(now + wait, timer));
        if why.daemon_maybe_gone() {
            self.ping();
        }
    }

    fn on_event(&mut self, ev: Event) {
        if ev.kind != "container" && !ev.kind.is_empty() {
            return;
        }
        if ev.time_nano > 0 {
            self.docker.last_event_ns =
                Some(self.docker.last_event_ns.map_or(ev.time_nano, |t| t.max(ev.time_nano)));
        }
        let id = ev.actor.id.clone();
        if id.is_empty() {
            return;
        }
        if !is_container_id(&id) {
            return self.invalid_id("the events stream", &id);
        }
        let d = &mut self.docker.discovery;
        if d.listing {
            if d.seen_while_listing.len() < MAX_SEEN_WHILE_LISTING {
                d.seen_while_listing.insert(id.clone());
            } else {
                d.seen_overflow = true;
            }
        }
        if ev.action_is("die") {
            self.container_died(&id);
        } else if ev.action_is("start") {
            if let Some(c) = self.containers.get_mut(&id) {
                c.died = false;
                c.ending = Ending::None;
            }
            let name = ev.actor.attributes.get("name").cloned().unwrap_or_default();
            // Attributes carry the labels (plus name, image…): a first
            // filter; the inspect checks again with the real labels.
            if self.cfg.filters.admits(&name, &ev.actor.attributes) {
                self.follow_container(&id, StartPoint::ContainerCreated, true, ev.time_nano);
            }
        } else if ev.action_is("destroy") {
            self.forget(&id);
        }
    }

    /// The `die` event: logging of that run is closed, everything it wrote
    /// is stored. A final read that was waiting for it goes now.
    fn container_died(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        c.died = true;
        if c.ending == Ending::AwaitingDie {
            self.final_read(id);
        }
    }

    /// Open the final, non-follow read of a stopped container (after its
    /// `die` event, or when waiting for it took too long).
    pub(crate) fn final_read(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        if c.ending != Ending::AwaitingDie {
            return;
        }
        c.ending = Ending::FinalRead;
        c.follow = Follow::Idle;
        self.metrics.final_reads.inc();
        self.open_logs(id);
    }

    // ---- list -----------------------------------------------------------

    /// Take the list if one is due, none is in flight or waiting out its
    /// backoff, and the events stream is up (so nothing starts unseen).
    fn maybe_list(&mut self) {
        let d = &self.docker.discovery;
        if !d.list_wanted
            || d.listing
            || d.list.timer.is_some()
            || d.events_up_since.is_none()
            || !self.docker.up
        {
            return;
        }
        self.docker.discovery.list_wanted = false;
        let path = self.docker.api.list();
        let role = Role::Api { call: ApiCall::List, ex: Exchange::with_cap(MAX_LIST_BODY) };
        match self.open_conn(&path, role) {
            Ok(_) => {
                let d = &mut self.docker.discovery;
                d.listing = true;
                d.seen_while_listing.clear();
                d.seen_overflow = false;
            }
            Err(e) => {
                self.connect_error(&e);
                self.list_failed(DiscoveryError::Conn(format!("cannot connect: {e}")));
            }
        }
    }

    /// The list retry timer fired.
    pub(crate) fn list_retry(&mut self) {
        self.docker.discovery.list.timer = None;
        self.maybe_list();
    }

    /// The list failed: take it again after its backoff. The events stream
    /// stays up meanwhile, so containers that start are still followed.
    fn list_failed(&mut self, why: DiscoveryError) {
        let d = &mut self.docker.discovery;
        d.listing = false;
        d.list_wanted = true;
        self.retry_discovery(DiscoveryCall::List, why);
    }

    /// An id that is not a container id came from the daemon: never let it
    /// near a request. Said once in a while, counted as a protocol error.
    fn invalid_id(&mut self, from: &str, id: &str) {
        self.metrics.docker_error("protocol");
        if let Some(held) = self.docker.discovery.ids_says.allow(Instant::now()) {
            message!(
                "ignored an invalid container id from {from} (not 64 hex digits): \"{}\"{}",
                shown(id, 100),
                held_back(held)
            );
        }
    }

    fn list_done(&mut self, body: &[u8]) {
        let mut list: Vec<ContainerSummary> = match serde_json::from_slice(body) {
            Ok(l) => l,
            Err(e) => {
                self.metrics.docker_error("protocol");
                return self.list_failed(DiscoveryError::Protocol(format!("not a JSON container list: {e}")));
            }
        };
        let d = &mut self.docker.discovery;
        d.listing = false;
        if d.list.recovered() {
            if let Some(held) = d.recovered_says.allow(Instant::now()) {
                message!("container list read again{}", held_back(held));
            }
        }
        let invalid: Vec<String> =
            list.iter().filter(|c| !is_container_id(&c.id)).map(|c| c.id.clone()).collect();
        for id in &invalid {
            self.invalid_id("the container list", id);
        }
        list.retain(|c| is_container_id(&c.id));
        self.list_taken(list);
        // The events stream reopened while this list was under way.
        self.maybe_list();
    }

    fn list_taken(&mut self, list: Vec<ContainerSummary>) {
        let first_run = std::mem::replace(&mut self.checkpoints.first_run, false);
        let present: HashSet<&str> = list.iter().map(|c| c.id.as_str()).collect();
        let d = &mut self.docker.discovery;
        let seen = std::mem::take(&mut d.seen_while_listing);
        let overflow = std::mem::replace(&mut d.seen_overflow, false);
        if overflow {
            // Too many events to tell which the list predates: forget
            // nothing now, trust the next list.
            d.list_wanted = true;
        }
        // Checkpoints of containers destroyed while we were away; not
        // those the events stream named after the list was sent.
        let gone: Vec<String> = self
            .checkpoints
            .loaded
            .keys()
            .chain(self.containers.keys())
            .filter(|id| !overflow && !present.contains(id.as_str()) && !seen.contains(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            self.forget(&id);
        }
        // Oldest first: with more containers than the stream budget, the
        // oldest get the slots (see `budget.rs`).
        let mut list = list;
        list.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        for s in &list {
            let created_ns = s.created.saturating_mul(1_000_000_000);
            let name = s.names.first().map(|n| n.trim_start_matches('/')).unwrap_or_default();
            if !self.cfg.filters.admits(name, &s.labels) {
                continue;
            }
            let running = s.state == "running" || s.state == "paused" || s.state == "restarting";
            let start = if first_run {
                StartPoint::At(if self.cfg.from_beginning { 0 } else { self.checkpoints.first_run_at })
            } else {
                StartPoint::ContainerCreated
            };
            if running {
                self.follow_container(&s.id, start, false, created_ns);
                continue;
            }
            // Stopped. Ship what it wrote since our checkpoint, or all of
            // it if it was created since our first run and never seen.
            let undrained = match (self.checkpoints.loaded.get(&s.id), self.containers.get(&s.id)) {
                (Some(ck), _) => !ck.drained,
                (None, Some(c)) => !c.drained && c.follow == Follow::Idle && c.resume.is_some(),
                (None, None) => !first_run && created_ns >= self.checkpoints.first_run_at,
            };
            if undrained {
                self.follow_container(&s.id, start, false, created_ns);
            }
        }
        self.checkpoints.dirty = true;
    }

    // ---- inspect --------------------------------------------------------

    /// Follow a container: create its record (from its checkpoint if there
    /// is one), take a slot of the stream budget (or wait for one) and
    /// inspect it; the inspect opens the stream.
    pub(crate) fn follow_container(&mut self, id: &str, start: StartPoint, started: bool, created_ns: i64) {
        if self.own_id.as_deref() == Some(id) {
            return;
        }
        if let Some(c) = self.containers.get_mut(id) {
            match c.follow {
                Follow::Streaming(_) | Follow::Inspecting(_) | Follow::Backoff => return,
                Follow::Idle | Follow::Failed | Follow::Waiting => {
                    if started {
                        c.drained = false;
                    }
                }
            }
        } else {
            let mut c = Container::new(id, start);
            c.created_ns = created_ns;
            if let Some(ck) = self.checkpoints.loaded.remove(id) {
                c.resume = Some(ck.resume);
                c.drained = ck.drained && !started;
                c.set_identity(&ck.name, "");
            }
            self.containers.insert(id.to_owned(), c);
        }
        if self.take_slot(id) {
            self.inspect(id);
        }
    }

    pub(crate) fn inspect(&mut self, id: &str) {
        let path = self.docker.api.inspect(id);
        let call = ApiCall::Inspect { id: id.to_owned() };
        match self.open_conn(&path, Role::Api { call, ex: Exchange::with_cap(MAX_INSPECT_BODY) }) {
            Ok(key) => {
                if let Some(c) = self.containers.get_mut(id) {
                    c.follow = Follow::Inspecting(key);
                }
            }
            Err(e) => {
                self.connect_error(&e);
                if let Some(c) = self.containers.get(id) {
                    if c.backoff.failures() == 0 && !is_transient_connect_error(&e) {
                        message!("cannot inspect {}: {e}; retrying", short(id));
                    }
                }
                self.retry_connect(id, &e);
            }
        }
    }

    fn inspect_done(&mut self, id: &str, result: Result<Response, ExchangeError>) {
        let body = match result {
            Ok(r) => r.body,
            Err(ExchangeError::Status(404, _)) => return self.forget(id),
            Err(e) => {
                self.metrics.docker_error(e.metric_kind());
                if let Some(c) = self.containers.get(id) {
                    if c.backoff.failures() == 0 {
                        message!("cannot inspect {}: {e}; retrying", short(id));
                    }
                }
                return self.schedule_retry(id);
            }
        };
        let info: ContainerInspect = match serde_json::from_slice(&body) {
            Ok(i) => i,
            Err(e) => {
                self.metrics.docker_error("protocol");
                message!("cannot read inspect of {}: {e}; retrying", short(id));
                return self.schedule_retry(id);
            }
        };
        if info.id != id {
            // Not the container asked about: a broken or hostile daemon.
            self.invalid_id(&format!("the inspect of {}", short(id)), &info.id);
            return self.schedule_retry(id);
        }
        let name = info.name.trim_start_matches('/');
        if !self.cfg.filters.admits(name, &info.config.labels) {
            return self.forget(id);
        }
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        c.set_identity(&info.name, &info.config.image);
        if let Some(sink) = &self.sink {
            c.sink.streams = crate::agent::sink::container_streams(&sink.cfg, c, &info.config.labels);
            let log = &info.host_config.log_config;
            c.sink.retention = crate::sink::retention::of_driver(&log.kind, &log.config);
        }
        c.tty = info.config.tty;
        c.running = info.state.running;
        c.log_start = timestamp::parse(info.created.as_bytes()).ok();
        if c.resume.is_none() {
            let since = match c.start {
                // "From now" on the agent's clock, in Docker's: a daemon
                // whose clock is behind ours has stamped nothing that late.
                // Never before 1970: `--from-beginning` starts at 0, and a
                // daemon clock behind ours (its `Date` has whole seconds)
                // made that negative, which the next start refused as an
                // invalid checkpoint (and read everything again).
                StartPoint::At(t) => self.docker_clock.now().map_or(t, |(docker, _)| {
                    t.min(t.saturating_add(docker.saturating_sub(crate::agent::event_loop::wall_ns()))).max(0)
                }),
                // From the container's creation: dockerd stamps its first
                // lines before it records `StartedAt` (seen: 1.8 ms before),
                // so the start time would lose them. Unreadable: everything.
                StartPoint::ContainerCreated => c.log_start.unwrap_or(0).max(0),
            };
            c.resume = Some(Resume::new(since));
        }
        if info.host_config.log_config.kind == "none" {
            return self.permanent_failure(id, "its logging driver is \"none\": there are no logs to read");
        }
        // Set when its stream just ended cleanly.
        let ended = c.reopen_reason.take();
        let ended_live =
            if c.running || ended.is_some() { std::mem::take(&mut c.ended_live) } else { c.ended_live };
        match after_end(c.running, ended.is_some(), ended_live, c.died, c.drained) {
            AfterEnd::Follow => {
                c.ending = Ending::None;
                if let Some(r) = ended {
                    self.metrics.reconnect(r);
                }
                self.open_logs(id);
            }
            AfterEnd::FinalRead => {
                c.ending = Ending::AwaitingDie;
                self.final_read(id);
            }
            AfterEnd::AwaitDie => {
                c.ending = Ending::AwaitingDie;
                c.follow = Follow::Backoff;
                c.wake = Some(
                    self.timers.insert(Instant::now() + DIE_WAIT, Timer::FinalRead { id: id.to_owned() }),
                );
            }
            AfterEnd::Drained => {
                c.ending = Ending::None;
                c.drained = true;
                c.follow = Follow::Idle;
                self.checkpoints.dirty = true;
                self.release_slot(id);
            }
            AfterEnd::Drain => self.open_logs(id),
        }
    }

    // ---- API call plumbing ------------------------------------------------

    pub(crate) fn api_data(&mut self, key: usize, data: &[u8]) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let Role::Api { ex, .. } = &mut conn.role else {
            return false;
        };
        match ex.push(data) {
            Ok(None) => true,
            Ok(Some(resp)) => {
                self.api_finished(key, Ok(resp));
                false
            }
            Err(e) => {
                self.api_finished(key, Err(e));
                false
            }
        }
    }

    pub(crate) fn api_eof(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Role::Api { ex, .. } = &mut conn.role else {
            return;
        };
        let r = ex.finish();
        self.api_finished(key, r);
    }

    pub(crate) fn api_failed(&mut self, key: usize, why: ConnFailure) {
        let Some(Role::Api { call, .. }) = self.close_conn(key) else {
            return;
        };
        if let ApiCall::List = call {
            return self.list_failed(DiscoveryError::from_conn(why));
        }
        self.api_result(call, Err(ExchangeError::Conn(why.to_string())));
    }

    /// An API call's connection was closed without an answer (shutdown).
    pub(crate) fn api_abandoned(&mut self, call: ApiCall) {
        match call {
            ApiCall::Ping => self.docker.pinging = false,
            ApiCall::List => self.docker.discovery.listing = false,
            ApiCall::Inspect { .. } => {}
        }
    }

    fn api_finished(&mut self, key: usize, result: Result<Response, ExchangeError>) {
        let gen = self.conns.get(key).map_or(0, |c| c.gen);
        let Some(Role::Api { call, .. }) = self.close_conn(key) else {
            return;
        };
        if let Ok(r) = &result {
            self.docker_clock.observe(r.head.date, gen);
        }
        self.api_result(call, result);
    }

    fn api_result(&mut self, call: ApiCall, result: Result<Response, ExchangeError>) {
        match call {
            ApiCall::Ping => self.ping_done(result),
            ApiCall::List => match result {
                Ok(r) => {
                    self.docker.last_contact = Instant::now();
                    self.list_done(&r.body);
                }
                Err(e) => {
                    self.metrics.docker_error(e.metric_kind());
                    if let ExchangeError::Status(..) = e {
                        self.docker.last_contact = Instant::now();
                    }
                    self.list_failed(DiscoveryError::from_exchange(e));
                }
            },
            ApiCall::Inspect { id } => {
                if let Some(c) = self.containers.get_mut(&id) {
                    if matches!(c.follow, Follow::Inspecting(_)) {
                        c.follow = Follow::Idle;
                    }
                }
                if result.is_ok() {
                    self.docker.last_contact = Instant::now();
                }
                self.inspect_done(&id, result);
            }
        }
    }
}

/// A refused events request: its status and the daemon's message.
fn refusal((status, body): &(u16, Vec<u8>)) -> DiscoveryError {
    DiscoveryError::Status(*status, shown(&error_message(body), MAX_SHOWN))
}

/// Split de-chunked event bytes into lines and parse each JSON object.
fn split_events(line: &mut Vec<u8>, skipping: &mut bool, mut data: &[u8], out: &mut Vec<Event>) {
    while !data.is_empty() {
        match memchr(b'\n', data) {
            Some(i) => {
                if !*skipping {
                    line.extend_from_slice(&data[..i]);
                    if let Ok(ev) = serde_json::from_slice::<Event>(line) {
                        out.push(ev);
                    }
                }
                *skipping = false;
                line.clear();
                data = &data[i + 1..];
            }
            None => {
                if !*skipping && line.len() + data.len() <= MAX_EVENT_LINE {
                    line.extend_from_slice(data);
                } else {
                    *skipping = true;
                    line.clear();
                }
                return;
            }
        }
    }
}
