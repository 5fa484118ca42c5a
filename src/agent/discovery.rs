//! Knowing Docker and its containers: the ping that tells whether Docker is
//! up, the events stream that announces containers as they start, the list
//! that catches up on everything else, and the inspect that precedes each
//! stream.
//!
//! Order matters: the events stream is opened first and the list taken
//! only once its head has arrived, so no container can start unseen between
//! the two. On every reconnect, events replay from the newest one seen.

use crate::message;
use std::collections::HashSet;
use std::time::Instant;

use memchr::memchr;

use crate::agent::budget::is_fd_exhaustion;
use crate::agent::container::{Container, Ending, Follow, StartPoint};
use crate::agent::event_loop::{Agent, ConnFailure, Role, Timer, HEALTH_PING_EVERY};
use crate::agent::exchange::{Exchange, ExchangeError, Response};
use crate::agent::follow::{is_transient_connect_error, short};
use crate::agent::resume::Resume;
use crate::docker::api::{ContainerInspect, ContainerSummary, Event};
use crate::docker::request::{self, negotiate, Api};
use crate::docker::timestamp;
use crate::http::body::{BodyDecoder, BodyEvent};
use crate::http::head;

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

/// The events stream: head, chunked body, newline-delimited JSON.
#[derive(Default)]
pub(crate) struct EventsConn {
    head: head::HeadReader,
    body: Option<BodyDecoder>,
    line: Vec<u8>,
    skipping: bool,
}

impl Agent {
    // ---- ping -----------------------------------------------------------

    pub(crate) fn ping(&mut self) {
        if self.docker.pinging {
            return;
        }
        let call = ApiCall::Ping;
        match self.open_conn(request::get(Api::ping()), Role::Api { call, ex: Exchange::default() }) {
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

    fn ping_done(&mut self, result: Result<Response, String>) {
        self.docker.pinging = false;
        match result {
            Ok(resp) => {
                self.docker.last_contact = Instant::now();
                let api = Api { version: negotiate(resp.head.api_version) };
                let changed = api.version != self.docker.api.version;
                self.docker.api = api;
                if !self.docker.up || changed || self.docker.rediscover {
                    if self.docker.up {
                        message!("Docker now speaks API {}", api.version);
                    }
                    self.docker_connected();
                } else {
                    self.arm_ping(HEALTH_PING_EVERY);
                }
            }
            Err(e) => self.docker_down(&e),
        }
    }

    /// Docker answers: open the events stream (then list), and retry every
    /// stream that was waiting for it.
    pub(crate) fn docker_connected(&mut self) {
        if !self.docker.up {
            message!("Docker is up (API {})", self.docker.api.version);
        }
        self.docker.up = true;
        self.docker.rediscover = false;
        self.docker.last_contact = Instant::now();
        self.docker.backoff.reset();
        self.metrics.set_docker_up(true);
        if let Some(key) = self.docker.events.take() {
            self.close_conn(key);
        }
        self.open_events();
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
        match self.open_conn(request::get(&path), Role::Events(Box::default())) {
            Ok(key) => self.docker.events = Some(key),
            Err(e) => self.discovery_connect_failed(&e, "cannot open the events stream"),
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
                        head_ok = Some(h.is_success().then_some(()).ok_or(h.status));
                    }
                    Err(e) => failure = Some(format!("events: {e}")),
                }
            }
            let refused = matches!(head_ok, Some(Err(_)));
            if failure.is_none() && !refused {
                if let Some(body) = ev.body.as_mut() {
                    while !data.is_empty() {
                        match body.decode(data) {
                            Ok((n, Some(BodyEvent::Data(d)))) => {
                                data = &data[n..];
                                split_events(&mut ev.line, &mut ev.skipping, d, &mut events);
                            }
                            Ok((_, Some(BodyEvent::End))) => {
                                failure = Some("events stream ended".into());
                                break;
                            }
                            Ok((n, None)) => data = &data[n..],
                            Err(e) => {
                                failure = Some(format!("events stream: {e}"));
                                break;
                            }
                        }
                    }
                }
            }
        }
        match head_ok {
            Some(Ok(())) => {
                // The stream is established: no deadline on a quiet events
                // stream (the health ping watches the daemon), and now list.
                if let Some(conn) = self.conns.get_mut(key) {
                    for t in conn.timers.drain(..) {
                        self.timers.cancel(t);
                    }
                }
                self.docker.last_contact = Instant::now();
                self.list();
            }
            Some(Err(status)) => {
                self.metrics.docker_error(if status >= 500 { "status_5xx" } else { "status_4xx" });
                failure = Some(format!("events request answered {status}"));
            }
            None => {}
        }
        for ev in events {
            self.on_event(ev);
        }
        if let Some(why) = failure {
            self.events_failed(key, ConnFailure::Protocol(why));
            return false;
        }
        true
    }

    pub(crate) fn events_eof(&mut self, key: usize) {
        self.events_failed(key, ConnFailure::Protocol("events stream closed".into()));
    }

    /// The events stream broke: check the daemon (the ping reopens it).
    pub(crate) fn events_failed(&mut self, key: usize, why: ConnFailure) {
        self.close_conn(key);
        if self.docker.events == Some(key) {
            self.docker.events = None;
        }
        if self.docker.up {
            message!("events stream: {why}; reconnecting");
        }
        self.docker.up = false;
        self.metrics.set_docker_up(false);
        self.ping();
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
                self.follow_container(&id, StartPoint::ContainerStart, true, ev.time_nano);
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

    fn list(&mut self) {
        let path = self.docker.api.list();
        let call = ApiCall::List;
        if let Err(e) = self.open_conn(request::get(&path), Role::Api { call, ex: Exchange::default() }) {
            self.discovery_connect_failed(&e, "cannot list containers");
        }
    }

    /// The events stream or the list could not connect. Out of fds: Docker
    /// is fine, so redo discovery after the ping backoff without calling it
    /// down. Otherwise Docker is unreachable.
    fn discovery_connect_failed(&mut self, e: &std::io::Error, what: &str) {
        if is_fd_exhaustion(e) {
            self.docker.rediscover = true;
            let wait = self.docker.backoff.next(&mut self.rng);
            self.arm_ping(wait);
        } else {
            self.metrics.docker_error("connect");
            self.docker_down(&format!("{what}: {e}"));
        }
    }

    fn list_done(&mut self, body: &[u8]) {
        let list: Vec<ContainerSummary> = match serde_json::from_slice(body) {
            Ok(l) => l,
            Err(e) => {
                self.metrics.docker_error("protocol");
                message!("cannot read the container list: {e}; retrying");
                return self.docker_down("bad container list");
            }
        };
        let first_run = std::mem::replace(&mut self.first_run, false);
        let present: HashSet<&str> = list.iter().map(|c| c.id.as_str()).collect();
        // Checkpoints of containers destroyed while we were away.
        let gone: Vec<String> = self
            .loaded
            .keys()
            .chain(self.containers.keys())
            .filter(|id| !present.contains(id.as_str()))
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
                StartPoint::At(if self.cfg.from_beginning { 0 } else { self.first_run_at })
            } else {
                StartPoint::ContainerStart
            };
            if running {
                self.follow_container(&s.id, start, false, created_ns);
                continue;
            }
            // Stopped. Ship what it wrote since our checkpoint, or all of
            // it if it was created since our first run and never seen.
            let undrained = match (self.loaded.get(&s.id), self.containers.get(&s.id)) {
                (Some(ck), _) => !ck.drained,
                (None, Some(c)) => !c.drained && c.follow == Follow::Idle && c.resume.is_some(),
                (None, None) => !first_run && created_ns >= self.first_run_at,
            };
            if undrained {
                self.follow_container(&s.id, start, false, created_ns);
            }
        }
        self.checkpoint_dirty = true;
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
            if let Some(ck) = self.loaded.remove(id) {
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
        match self.open_conn(request::get(&path), Role::Api { call, ex: Exchange::default() }) {
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
        if let Ok(r) = &result {
            self.docker_clock.observe(r.head.date);
        }
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
        let name = info.name.trim_start_matches('/');
        if !self.cfg.filters.admits(name, &info.config.labels) {
            return self.forget(id);
        }
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        c.set_identity(&info.name, &info.config.image);
        c.tty = info.config.tty;
        c.running = info.state.running;
        if c.resume.is_none() {
            let since = match c.start {
                // "From now" on the agent's clock, in Docker's: a daemon
                // whose clock is behind ours has stamped nothing that late.
                StartPoint::At(t) => self.docker_clock.now().map_or(t, |(docker, _)| {
                    t.min(t.saturating_add(docker.saturating_sub(crate::agent::event_loop::wall_ns())))
                }),
                // From the container's creation: dockerd stamps its first
                // lines before it records `StartedAt` (seen: 1.8 ms before),
                // so the start time would lose them. Unreadable: everything.
                StartPoint::ContainerStart => timestamp::parse(info.created.as_bytes()).unwrap_or(0).max(0),
            };
            c.resume = Some(Resume::new(since));
        }
        if info.host_config.log_config.kind == "none" {
            return self.permanent_failure(id, "its logging driver is \"none\": there are no logs to read");
        }
        // Set when its stream just ended cleanly.
        let ended = c.reopen_reason.take();
        if c.running {
            // Running again (a restart): its stream follows.
            c.ending = Ending::None;
            c.ended_live = false;
            if let Some(r) = ended {
                self.metrics.reconnect(r);
            }
            self.open_logs(id);
        } else if ended.is_some() && std::mem::take(&mut c.ended_live) {
            // Stopped while followed: its last line may not be in the
            // stream (see `Ending`); read once more after the `die` event.
            c.ending = Ending::AwaitingDie;
            if c.died {
                self.final_read(id);
            } else {
                c.follow = Follow::Backoff;
                self.timers.insert(Instant::now() + DIE_WAIT, Timer::FinalRead { id: id.to_owned() });
            }
        } else if ended.is_some() || c.drained {
            // Stopped, and its stream ran to the end: all shipped.
            c.ending = Ending::None;
            c.drained = true;
            c.follow = Follow::Idle;
            self.checkpoint_dirty = true;
            self.release_slot(id);
        } else {
            // Stopped with lines not yet shipped: read them (the stream
            // ends by itself after the stored lines).
            self.open_logs(id);
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
        self.api_result(call, Err(ExchangeError::Conn(why.to_string())));
    }

    /// An API call's connection was closed without an answer (shutdown).
    pub(crate) fn api_abandoned(&mut self, call: ApiCall) {
        if let ApiCall::Ping = call {
            self.docker.pinging = false;
        }
    }

    fn api_finished(&mut self, key: usize, result: Result<Response, ExchangeError>) {
        let Some(Role::Api { call, .. }) = self.close_conn(key) else {
            return;
        };
        self.api_result(call, result);
    }

    fn api_result(&mut self, call: ApiCall, result: Result<Response, ExchangeError>) {
        match call {
            ApiCall::Ping => self.ping_done(result.map_err(|e| e.to_string())),
            ApiCall::List => match result {
                Ok(r) => {
                    self.docker.last_contact = Instant::now();
                    self.list_done(&r.body);
                }
                Err(e) => {
                    self.metrics.docker_error(e.metric_kind());
                    self.docker_down(&format!("cannot list containers: {e}"));
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
