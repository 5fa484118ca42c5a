//! One connection of the loop's slab: its socket, what it still has to
//! send, what it is for ([`Role`]), its deadlines by kind ([`Deadlines`]),
//! and why it can fail ([`ConnFailure`]).

use std::fmt;
use std::io;

use crate::agent::discovery::{ApiCall, EventsConn};
use crate::agent::exchange::Exchange;
use crate::agent::follow::LogConn;
use crate::agent::metrics_http::ScraperConn;
use crate::agent::sink_conn::SinkConn;
use crate::agent::sock::Sock;
use crate::metrics::DeadlineKind;
use crate::response::ResponseError;
use crate::timer_wheel::TimerId;

/// The kinds of deadline a connection can have, one of each at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnTimer {
    /// The connection must be established by then.
    Connect,
    /// The response head must have arrived by then.
    Head,
    /// A whole API call (ping, list, inspect).
    Api,
    /// A log stream reached `--rotate-after`.
    Age,
    /// A log stream may have been silent for `--idle-timeout`.
    Idle,
    /// A metrics scraper that did not send its request head, or did not
    /// take its response, in time.
    Scraper,
    /// A push to the sink must be answered by then (`--sink-timeout`).
    Push,
}

impl ConnTimer {
    const COUNT: usize = 7;

    pub(crate) fn metric(self) -> DeadlineKind {
        match self {
            ConnTimer::Connect => DeadlineKind::Connect,
            ConnTimer::Head => DeadlineKind::Head,
            ConnTimer::Api => DeadlineKind::Api,
            ConnTimer::Scraper => DeadlineKind::Client,
            ConnTimer::Age => DeadlineKind::Age,
            ConnTimer::Idle => DeadlineKind::Idle,
            ConnTimer::Push => DeadlineKind::Sink,
        }
    }
}

/// A connection's armed deadlines, found by kind (never by the order they
/// were armed in, which every new kind of deadline would silently break).
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    armed: [Option<TimerId>; ConnTimer::COUNT],
}

impl Deadlines {
    /// Arm `kind`; returns the deadline of that kind it replaces, for the
    /// caller to cancel on the wheel.
    pub(crate) fn set(&mut self, kind: ConnTimer, id: TimerId) -> Option<TimerId> {
        self.armed[kind as usize].replace(id)
    }

    /// Disarm `kind`; returns its timer to cancel.
    pub(crate) fn take(&mut self, kind: ConnTimer) -> Option<TimerId> {
        self.armed[kind as usize].take()
    }

    /// The wheel fired `id` as a deadline of `kind`: true if it is the one
    /// armed (now disarmed), false if it was replaced meanwhile (stale).
    pub(crate) fn fired(&mut self, kind: ConnTimer, id: TimerId) -> bool {
        let slot = &mut self.armed[kind as usize];
        if *slot == Some(id) {
            *slot = None;
            true
        } else {
            false
        }
    }

    /// The armed deadline of `kind`.
    pub(crate) fn get(&self, kind: ConnTimer) -> Option<TimerId> {
        self.armed[kind as usize]
    }

    /// Every armed deadline.
    pub(crate) fn iter(&self) -> impl Iterator<Item = TimerId> + '_ {
        self.armed.iter().flatten().copied()
    }

    /// Disarm everything; returns the timers to cancel.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = TimerId> + '_ {
        self.armed.iter_mut().filter_map(Option::take)
    }
}

/// What a connection is for.
pub(crate) enum Role {
    /// A short Docker API call: ping, list, inspect.
    Api { call: ApiCall, ex: Exchange },
    /// One container's log stream.
    Logs(Box<LogConn>),
    /// Docker's events stream.
    Events(Box<EventsConn>),
    /// A scraper of `/metrics` or a `/healthz` probe.
    Scraper(Box<ScraperConn>),
    /// The connection to the sink (Loki).
    Sink(Box<SinkConn>),
}

pub(crate) struct Conn {
    /// Tells a deadline of this connection from one of an earlier
    /// connection that had the same slab key.
    pub gen: u64,
    pub sock: Sock,
    pub connected: bool,
    /// The request (or, for metrics clients, the response) still to send.
    pub out: Vec<u8>,
    pub out_pos: usize,
    pub deadlines: Deadlines,
    /// Readable, but left unread (output full, or its reads for this turn
    /// used up): queued in `Agent::paused`.
    pub paused: bool,
    pub role: Role,
}

/// Why a connection failed.
#[derive(Debug)]
pub(crate) enum ConnFailure {
    Io(io::Error),
    Deadline(ConnTimer),
    /// A log response that is not what dockerd sends.
    Response(ResponseError),
    /// The sink's transport (TLS or the socket under it).
    Transport(crate::sink::transport::TransportError),
}

impl fmt::Display for ConnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnFailure::Io(e) => write!(f, "{e}"),
            ConnFailure::Deadline(k) => write!(f, "{} deadline passed", k.metric().as_str()),
            ConnFailure::Response(e) => write!(f, "{e}"),
            ConnFailure::Transport(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timer_wheel::TimerWheel;
    use std::time::{Duration, Instant};

    #[test]
    fn deadlines_are_found_by_kind_whatever_the_order() {
        let now = Instant::now();
        let mut wheel = TimerWheel::new(Duration::from_millis(10), 64, now);
        let mut d = Deadlines::default();
        let head = wheel.insert(now, ());
        let connect = wheel.insert(now, ());
        assert_eq!(d.set(ConnTimer::Head, head), None);
        assert_eq!(d.set(ConnTimer::Connect, connect), None);
        assert_eq!(d.take(ConnTimer::Connect), Some(connect));
        assert_eq!(d.take(ConnTimer::Connect), None);
        // Re-arming a kind hands back the one it replaces.
        let head2 = wheel.insert(now, ());
        assert_eq!(d.set(ConnTimer::Head, head2), Some(head));
        // The replaced one firing late is stale; the armed one is not.
        assert!(!d.fired(ConnTimer::Head, head));
        assert!(d.fired(ConnTimer::Head, head2));
        assert!(!d.fired(ConnTimer::Head, head2));
        let age = wheel.insert(now, ());
        d.set(ConnTimer::Age, age);
        assert_eq!(d.drain().collect::<Vec<_>>(), vec![age]);
        assert_eq!(d.drain().count(), 0);
    }
}
