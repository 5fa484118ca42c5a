//! The loop's invariants, checked after every turn: the states in which
//! the agent would wait forever on something that can never happen (a
//! queue that nothing sends, a container that nothing wakes, a connection
//! nobody owns). Each is a plain reading of the parts' state; none fixes
//! anything.
//!
//! Debug builds (every test of the agent binary) check after every turn
//! and abort on the first violation, naming it and the state: a test that
//! leads the loop there fails there. Release builds check with
//! `--check-invariants`, count violations in
//! `log_capturer_invariant_violations_total{invariant}` and say each at
//! most once a minute.
//!
//! | invariant | holds when |
//! | --- | --- |
//! | `sink_waits_on_one_thing` | lines are queued and exactly one of these will move them: a push on the wire with its deadline, a connect with its deadline, a DNS lookup with its timer, a retry timer due within [`MAX_WAIT`] |
//! | `sink_batch_timed` | the batch being filled has its timer |
//! | `sink_conn_owned` | the sink's connection is in the slab as the sink's, and every sink connection in the slab is the sink's |
//! | `sink_pending_matches_queue` | each container's lines waiting for the sink are the lines its acks and the batch hold for it |
//! | `checkpoint_not_ahead` | a container with lines waiting has an acknowledged resume point (what its checkpoint records) |
//! | `container_waits_on_one_thing` | a followed container has its stream, its inspect, a wake-up timer, a place in the queue for room, or waits for Docker |
//! | `conn_owned` | every connection in the slab is its owner's: a stream its container's, an inspect its container's, the events stream Docker's |
//! | `conn_deadlines_armed` | every armed deadline of a connection is in the wheel, and every connection that can stall has one |

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::agent::conn::{ConnTimer, Role};
use crate::agent::container::Follow;
use crate::agent::discovery::ApiCall;
use crate::agent::event_loop::Agent;
use crate::message;
use crate::messages::Limiter;

/// Longest wait a sink retry timer may have: `Retry-After` is capped at
/// five minutes, the backoff at 30 s, a refused configuration at 30 s.
pub const MAX_WAIT: Duration = Duration::from_secs(301);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvariantLabel {
    invariant: &'static str,
}

/// Whether and how invariants are checked.
pub(crate) struct Invariants {
    enabled: bool,
    abort: bool,
    violations: Family<InvariantLabel, Counter>,
    says: HashMap<&'static str, Limiter>,
}

impl Invariants {
    /// `flag`: `--check-invariants`. Debug builds check (and abort)
    /// whatever it says.
    pub(crate) fn new(flag: bool, registry: &mut Registry) -> Self {
        let abort = cfg!(debug_assertions);
        let enabled = flag || abort;
        let violations = Family::<InvariantLabel, Counter>::default();
        if enabled {
            registry.register(
                "log_capturer_invariant_violations",
                "Turns of the loop after which one of its invariants did not hold, by invariant (see \
                 --check-invariants): a state the agent could wait in forever. Any is a bug: report \
                 it with the agent's stderr",
                violations.clone(),
            );
        }
        Self { enabled, abort, violations, says: HashMap::new() }
    }
}

/// One violated invariant: its name and what the state was.
type Violation = (&'static str, String);

impl Agent {
    /// Check every invariant (after a turn, when the loop is at rest).
    pub(crate) fn check_invariants(&mut self) {
        if !self.invariants.enabled || self.shutdown {
            return;
        }
        let mut found = Vec::new();
        self.sink_invariants(&mut found);
        self.container_invariants(&mut found);
        self.conn_invariants(&mut found);
        for (name, state) in found {
            self.invariant_violated(name, state);
        }
    }

    fn invariant_violated(&mut self, name: &'static str, state: String) {
        let inv = &mut self.invariants;
        inv.violations.get_or_create(&InvariantLabel { invariant: name }).inc();
        if inv.abort {
            message!("invariant violated: {name}: {state}; aborting (a debug build checks every turn)");
            std::process::abort();
        }
        let says = inv.says.entry(name).or_insert_with(|| Limiter::new(Duration::from_secs(60)));
        if let Some(held) = says.allow(Instant::now()) {
            message!(
                "invariant violated: {name}: {state} (a bug: please report it with this message){}",
                crate::messages::held_back(held)
            );
        }
    }

    fn sink_invariants(&self, found: &mut Vec<Violation>) {
        let Some(sink) = self.sink.as_ref() else { return };
        let now = Instant::now();
        let live = |t: Option<crate::timer_wheel::TimerId>| t.and_then(|t| self.timers.deadline(t));
        let conn = sink.conn.and_then(|k| self.conns.get(k).map(|c| (k, c)));
        match (sink.conn, conn) {
            (Some(k), None) => {
                found.push(("sink_conn_owned", format!("the sink's connection {k} is not in the slab")))
            }
            (Some(k), Some((_, c))) if !matches!(c.role, Role::Sink(_)) => found.push((
                "sink_conn_owned",
                format!("the sink's connection {k} is in the slab as another role's"),
            )),
            _ => {}
        }
        if sink.hedge.is_some() && (sink.hedge == sink.conn || sink.conn.is_none()) {
            found.push((
                "sink_conn_owned",
                format!("a hedge {:?} without its first connection {:?}", sink.hedge, sink.conn),
            ));
        }
        for (k, c) in self.conns.iter() {
            if matches!(c.role, Role::Sink(_)) && sink.conn != Some(k) && sink.hedge != Some(k) {
                found.push((
                    "sink_conn_owned",
                    format!("connection {k} is a sink connection the sink does not know"),
                ));
            }
        }
        let sink_conn = conn.and_then(|(k, c)| match &c.role {
            Role::Sink(sc) => Some((k, c, sc)),
            _ => None,
        });
        let on_wire = sink_conn.is_some_and(|(_, c, sc)| {
            c.connected && sc.sent_at.is_some() && live(c.deadlines.get(ConnTimer::Push)).is_some()
        });
        let connecting = sink_conn
            .is_some_and(|(_, c, _)| !c.connected && live(c.deadlines.get(ConnTimer::Connect)).is_some());
        let resolving = sink.addrs.lookup_timer().is_some_and(|t| live(t).is_some());
        let retry = live(sink.retry_timer);
        let waits = [on_wire, connecting, resolving, retry.is_some()].iter().filter(|b| **b).count();
        if !sink.queue.is_empty() && waits != 1 {
            let conn_state = match sink_conn {
                None => "no connection".to_owned(),
                Some((k, c, sc)) => format!(
                    "connection {k} (connected {}, push on the wire {}, deadlines armed {})",
                    c.connected,
                    sc.sent_at.is_some(),
                    c.deadlines.iter().count()
                ),
            };
            found.push((
                "sink_waits_on_one_thing",
                format!(
                    "{} batches queued, {waits} of (push on the wire {on_wire}, connecting {connecting}, \
                     resolving {resolving}, retry timer {}); {conn_state}; retry timer field {}",
                    sink.queue.len(),
                    retry.is_some(),
                    sink.retry_timer.is_some()
                ),
            ));
        }
        if let Some(at) = retry {
            if at > now + MAX_WAIT {
                found.push((
                    "sink_waits_on_one_thing",
                    format!("the sink's retry timer is {:?} away", at - now),
                ));
            }
        }
        if !sink.batch.is_empty() && live(sink.batch_timer).is_none() {
            found.push((
                "sink_batch_timed",
                format!("{} lines in the batch and no batch timer", sink.batch.len()),
            ));
        }
        // What each container has waiting, by the acks and the batch.
        let mut held: HashMap<&str, u64> = HashMap::new();
        for q in sink.queue.batches() {
            for a in &q.acks {
                *held.entry(a.id.as_str()).or_default() += u64::from(a.lines);
            }
        }
        for m in &sink.members {
            *held.entry(m.id.as_str()).or_default() += u64::from(m.lines);
        }
        for c in self.containers.values() {
            let want = held.remove(c.id.as_str()).unwrap_or(0);
            if c.sink.pending != want {
                found.push((
                    "sink_pending_matches_queue",
                    format!(
                        "container {} has {} lines pending, the queue and batch hold {want}",
                        c.id, c.sink.pending
                    ),
                ));
            }
            if c.sink.pending > 0 && c.acked.is_none() {
                found.push((
                    "checkpoint_not_ahead",
                    format!(
                        "container {} has {} lines pending and no acknowledged resume point",
                        c.id, c.sink.pending
                    ),
                ));
            }
        }
    }

    fn container_invariants(&self, found: &mut Vec<Violation>) {
        let parked: std::collections::HashSet<&str> = self
            .sink
            .as_ref()
            .map(|s| s.closed_for_room.iter().map(String::as_str).collect())
            .unwrap_or_default();
        for c in self.containers.values() {
            match c.follow {
                Follow::Streaming(k) => match self.conns.get(k).map(|conn| &conn.role) {
                    Some(Role::Logs(lc)) if lc.id == c.id => {}
                    _ => found.push((
                        "container_waits_on_one_thing",
                        format!("container {} streams on connection {k}, which is not its stream", c.id),
                    )),
                },
                Follow::Inspecting(k) => match self.conns.get(k).map(|conn| &conn.role) {
                    Some(Role::Api { call: ApiCall::Inspect { id }, .. }) if *id == c.id => {}
                    _ => found.push((
                        "container_waits_on_one_thing",
                        format!(
                            "container {} is inspected on connection {k}, which is not its inspect",
                            c.id
                        ),
                    )),
                },
                Follow::Backoff => {
                    let timer = c.wake.and_then(|t| self.timers.deadline(t)).is_some();
                    let room = c.sink.parked && parked.contains(c.id.as_str());
                    if !timer && !room && self.docker.up {
                        found.push((
                            "container_waits_on_one_thing",
                            format!(
                                "container {} waits to retry with no timer armed, not parked for room \
                                 (parked flag {}), with Docker up",
                                c.id, c.sink.parked
                            ),
                        ));
                    }
                }
                Follow::Idle | Follow::Failed | Follow::Waiting => {}
            }
        }
    }

    fn conn_invariants(&self, found: &mut Vec<Violation>) {
        for (k, conn) in self.conns.iter() {
            let owned = match &conn.role {
                Role::Logs(lc) => {
                    self.containers.get(&lc.id).is_some_and(|c| c.follow == Follow::Streaming(k))
                }
                Role::Api { call: ApiCall::Inspect { id }, .. } => {
                    self.containers.get(id).is_some_and(|c| c.follow == Follow::Inspecting(k))
                }
                Role::Api { call: ApiCall::List, .. } => self.docker.discovery.listing(),
                Role::Api { call: ApiCall::Ping, .. } => self.docker.pinging,
                Role::Events(_) => self.docker.events == Some(k),
                // The sink's are checked with the sink; scrapers own themselves.
                Role::Sink(_) | Role::Scraper(_) => true,
            };
            if !owned {
                let what = match &conn.role {
                    Role::Logs(lc) => format!("the log stream of {}", lc.id),
                    Role::Api { call, .. } => format!("the API call {call:?}"),
                    Role::Events(_) => "an events stream".to_owned(),
                    _ => "a connection".to_owned(),
                };
                found.push(("conn_owned", format!("connection {k} ({what}) has no owner that knows it")));
            }
            for t in conn.deadlines.iter() {
                if self.timers.deadline(t).is_none() {
                    found.push((
                        "conn_deadlines_armed",
                        format!("connection {k} holds a deadline the wheel does not"),
                    ));
                }
            }
            // Only a long-lived events stream, and a sink connection
            // between pushes past its idle deadline, may have none.
            let stalls = !matches!(conn.role, Role::Events(_)) && conn.deadlines.iter().next().is_none();
            if stalls {
                found.push((
                    "conn_deadlines_armed",
                    format!("connection {k} has no deadline: it could stall forever"),
                ));
            }
        }
    }
}
