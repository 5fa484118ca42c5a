//! The server thread: one `mio::Poll`, a listening unix socket, and every
//! client connection as a small state machine, all edge-triggered and
//! nonblocking.
//!
//! A connection's output buffer holds at most one batch of messages: a log
//! or event stream renders more only when the socket has taken everything
//! before. A stream that is caught up is *parked* on its container (or on
//! the event log) and woken when something is appended; one that is waiting
//! for the socket is woken by the writable edge. So an idle stream costs
//! nothing per loop iteration, and a client that stops reading stops its
//! stream where it is, as with dockerd.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::api::{self, Route};
use crate::http::{self, Parsed, Request};
use crate::state::{EventCursor, LogCursor, LogEnd, Shared, State, Step};
use crate::{time, Config, Fault};

const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// Bytes read from a socket per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// A parked connection's output buffer is released above this capacity.
const KEEP_OUT_CAPACITY: usize = 16 * 1024;
/// After `accept` fails for lack of descriptors, wait this long: the
/// listening socket will not signal again for connections already queued.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

enum Phase {
    /// Waiting for a request (possibly already buffered).
    Idle,
    /// A complete response is in `out`; then the next request.
    Reply,
    Logs(LogCursor),
    Events(EventCursor),
    /// A fault: keep the connection open and send nothing more.
    Hold,
    /// A whole answer, made when the request came, waits in `held` for its
    /// timer (`Fault::Delay`).
    Delayed,
    /// Send what is in `out`, then close.
    CloseAfterFlush,
}

struct Conn {
    /// Distinguishes this connection from a later one in the same slot, for
    /// parked lists and timers that still name the slot.
    serial: u64,
    stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// A delayed answer (`Phase::Delayed`).
    held: Vec<u8>,
    phase: Phase,
    /// The request asked for `Connection: close` (or was HTTP/1.0).
    close_after: bool,
    /// The client closed its side.
    eof: bool,
    /// Reading stopped with `inbuf` full while the socket may hold more:
    /// edge-triggered polling will not say so again, so read once `inbuf`
    /// has room.
    starved: bool,
    /// In a parked list (of a container or of the events).
    parked: bool,
    /// Counted in `log_streams_open` for this container.
    counted_log: Option<usize>,
    /// Counted in `events_streams_open`.
    counted_events: bool,
}

/// What fault handling leaves for the normal handler to do.
#[derive(Default)]
struct Plan {
    sys_err: Option<String>,
    close_after: Option<Duration>,
    /// Hold a whole answer this long before sending it.
    delay: Option<Duration>,
}

pub(crate) struct Server {
    shared: Arc<Shared>,
    poll: Poll,
    events: Events,
    listener: Option<UnixListener>,
    socket: PathBuf,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    next_serial: u64,
    /// Follow streams caught up with their container, by container key.
    parked: Vec<Vec<(usize, u64)>>,
    /// Event streams caught up with the event log.
    event_parked: Vec<(usize, u64)>,
    /// Connections to drive again without waiting for the socket.
    runnable: VecDeque<(usize, u64)>,
    /// Stream deadlines (CloseAfter, `until`).
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    next_writer: Option<Instant>,
    accept_retry: Option<Instant>,
    /// `accept` is failing (out of descriptors): logged once per episode.
    accept_failing: bool,
    rbuf: Box<[u8]>,
    ready: Vec<(usize, bool)>,
    dirty: Vec<usize>,
    spare: Vec<(usize, u64)>,
}

impl Server {
    pub fn new(cfg: Config, mut listener: UnixListener) -> io::Result<(Arc<Shared>, Server)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let socket = cfg.socket.clone();
        let shared = Arc::new(Shared { state: Mutex::new(State::new(cfg)), cond: Condvar::new(), waker });
        let server = Server {
            shared: shared.clone(),
            poll,
            events: Events::with_capacity(1024),
            listener: Some(listener),
            socket,
            conns: Vec::new(),
            free: Vec::new(),
            next_serial: 0,
            parked: Vec::new(),
            event_parked: Vec::new(),
            runnable: VecDeque::new(),
            timers: BinaryHeap::new(),
            next_writer: None,
            accept_retry: None,
            accept_failing: false,
            rbuf: vec![0; READ_CHUNK].into_boxed_slice(),
            ready: Vec::new(),
            dirty: Vec::new(),
            spare: Vec::new(),
        };
        Ok((shared, server))
    }

    /// The loop. Returns when the `Double` is dropped.
    pub fn run(mut self) {
        let shared = self.shared.clone();
        loop {
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(&mut self.events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("docker-double: poll: {e}");
                break;
            }
            self.ready.clear();
            let mut accept = false;
            for ev in self.events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => accept = true,
                    Token(t) => self
                        .ready
                        .push((t - FIRST_CONN, ev.is_readable() || ev.is_read_closed() || ev.is_error())),
                }
            }
            let mut did = !self.events.is_empty();

            let mut st = shared.lock();
            st.wake_pending = false;
            if st.shutdown {
                break;
            }
            if st.down_done < st.down_requested {
                self.go_down(&mut st);
                st.down_done = st.down_requested;
                did = true;
            }
            if let Some(l) = st.new_listener.take() {
                self.go_up(l);
                accept = true;
            }
            if accept || self.accept_retry.is_some_and(|t| t <= Instant::now()) {
                self.accept_retry = None;
                self.accept(&mut st);
            }
            for i in 0..self.ready.len() {
                let (idx, readable) = self.ready[i];
                self.on_event(idx, readable, &mut st);
            }

            let now = Instant::now();
            self.next_writer = st.run_writers(now);
            did |= self.fire_timers(now, &mut st);

            // Logs before events: a follow stream ends (stop) before the
            // `die` event of the same stop reaches subscribers.
            let mut dirty = std::mem::take(&mut self.dirty);
            st.take_dirty(&mut dirty);
            for &k in &dirty {
                self.wake_container(k, &mut st);
            }
            did |= !dirty.is_empty();
            self.dirty = dirty;
            if st.events_dirty {
                st.events_dirty = false;
                let list = std::mem::replace(&mut self.event_parked, std::mem::take(&mut self.spare));
                self.wake_list(&list, &mut st);
                self.spare = list;
                self.spare.clear();
                did = true;
            }
            for _ in 0..self.runnable.len() {
                let Some((idx, serial)) = self.runnable.pop_front() else {
                    break;
                };
                if self.is(idx, serial) {
                    self.drive(idx, &mut st);
                }
                did = true;
            }
            if did {
                shared.cond.notify_all();
            }
        }
        let mut st = shared.lock();
        for idx in 0..self.conns.len() {
            if let Some(c) = self.conns[idx].take() {
                self.close_conn(idx, c, &mut st);
            }
        }
        st.server_gone = true;
        shared.cond.notify_all();
    }

    fn timeout(&self) -> Option<Duration> {
        if !self.runnable.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = [self.next_writer, self.timers.peek().map(|Reverse((t, _, _))| *t), self.accept_retry]
            .into_iter()
            .flatten()
            .min()?;
        Some(next.saturating_duration_since(Instant::now()))
    }

    fn is(&self, idx: usize, serial: u64) -> bool {
        matches!(self.conns.get(idx), Some(Some(c)) if c.serial == serial)
    }

    // ---- listening --------------------------------------------------

    fn accept(&mut self, st: &mut State) {
        loop {
            let Some(l) = self.listener.as_ref() else {
                return;
            };
            match l.accept() {
                Ok((mut stream, _)) => {
                    let idx = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(idx + FIRST_CONN),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        eprintln!("docker-double: register connection: {e}");
                        self.free.push(idx);
                        continue;
                    }
                    self.next_serial += 1;
                    self.conns[idx] = Some(Conn {
                        serial: self.next_serial,
                        stream,
                        inbuf: Vec::new(),
                        out: Vec::new(),
                        out_pos: 0,
                        held: Vec::new(),
                        phase: Phase::Idle,
                        close_after: false,
                        eof: false,
                        starved: false,
                        parked: false,
                        counted_log: None,
                        counted_events: false,
                    });
                    st.stats.connections_open += 1;
                    self.accept_failing = false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // EMFILE and friends: the backlog keeps the clients
                    // waiting; try again shortly instead of spinning.
                    if !self.accept_failing {
                        eprintln!("docker-double: accept: {e} (retrying every {ACCEPT_BACKOFF:?})");
                        self.accept_failing = true;
                    }
                    self.accept_retry = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// A dockerd restart: drop every connection, stop listening.
    fn go_down(&mut self, st: &mut State) {
        for idx in 0..self.conns.len() {
            if let Some(c) = self.conns[idx].take() {
                self.close_conn(idx, c, st);
            }
        }
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let _ = std::fs::remove_file(&self.socket);
        st.listening = false;
        st.new_listener = None;
        self.accept_retry = None;
    }

    fn go_up(&mut self, mut l: UnixListener) {
        if let Err(e) = self.poll.registry().register(&mut l, LISTENER, Interest::READABLE) {
            eprintln!("docker-double: register listener: {e}");
            return;
        }
        self.listener = Some(l);
    }

    // ---- connections ------------------------------------------------

    fn on_event(&mut self, idx: usize, readable: bool, st: &mut State) {
        let Some(Some(mut conn)) = self.conns.get_mut(idx).map(Option::take) else {
            return;
        };
        let mut keep = true;
        if readable {
            keep = self.read(&mut conn);
        }
        if keep && conn.eof {
            match conn.phase {
                // The client left: dockerd ends the stream (it treats even
                // a half-close so).
                Phase::Logs(_) | Phase::Events(_) | Phase::Hold => keep = false,
                Phase::Reply | Phase::Delayed => conn.close_after = true,
                Phase::Idle | Phase::CloseAfterFlush => {}
            }
        }
        if keep {
            keep = self.drive_conn(idx, &mut conn, st);
        }
        self.put_back(idx, conn, keep, st);
    }

    fn drive(&mut self, idx: usize, st: &mut State) {
        let Some(Some(mut conn)) = self.conns.get_mut(idx).map(Option::take) else {
            return;
        };
        let keep = self.drive_conn(idx, &mut conn, st);
        self.put_back(idx, conn, keep, st);
    }

    fn put_back(&mut self, idx: usize, conn: Conn, keep: bool, st: &mut State) {
        if keep {
            self.conns[idx] = Some(conn);
        } else {
            self.close_conn(idx, conn, st);
        }
    }

    /// Read what the client sent. Returns false to close the connection.
    fn read(&mut self, conn: &mut Conn) -> bool {
        loop {
            if conn.inbuf.len() >= http::MAX_HEAD {
                // Enough buffered: pipelined requests wait in the socket
                // until these are answered (back-pressure on the client).
                // Behind a log or event stream, which may never end, that
                // much input means a broken client.
                conn.starved = true;
                return !matches!(conn.phase, Phase::Logs(_) | Phase::Events(_) | Phase::Hold);
            }
            match conn.stream.read(&mut self.rbuf) {
                Ok(0) => {
                    conn.eof = true;
                    return true;
                }
                Ok(n) => conn.inbuf.extend_from_slice(&self.rbuf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Write out, then move the connection on as far as it goes without
    /// blocking. Returns false to close it.
    fn drive_conn(&mut self, idx: usize, conn: &mut Conn, st: &mut State) -> bool {
        loop {
            while conn.out_pos < conn.out.len() {
                match conn.stream.write(&conn.out[conn.out_pos..]) {
                    Ok(0) => return false,
                    Ok(n) => {
                        conn.out_pos += n;
                        st.stats.bytes_sent += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // EPIPE, ECONNRESET: the client is gone.
                    Err(_) => return false,
                }
            }
            conn.out.clear();
            conn.out_pos = 0;

            match &mut conn.phase {
                Phase::Idle => {
                    if conn.starved && conn.inbuf.len() < http::MAX_HEAD {
                        conn.starved = false;
                        if !self.read(conn) {
                            return false;
                        }
                    }
                    if conn.inbuf.is_empty() {
                        if conn.inbuf.capacity() > READ_CHUNK {
                            conn.inbuf = Vec::new();
                        }
                        return !conn.eof;
                    }
                    match http::parse_request(&conn.inbuf) {
                        Parsed::Partial => return !conn.eof,
                        Parsed::Reject(public) => {
                            st.stats.requests_total += 1;
                            // Refused before routing, but still something
                            // the agent put on the wire that is not a GET.
                            if !(conn.inbuf.starts_with(b"GET ") || conn.inbuf.starts_with(b"HEAD ")) {
                                st.stats.non_get_requests += 1;
                            }
                            http::go_error(&mut conn.out, public);
                            conn.phase = Phase::CloseAfterFlush;
                        }
                        Parsed::Done(req, n) => {
                            conn.inbuf.drain(..n);
                            self.handle(idx, conn, req, st);
                        }
                    }
                }
                Phase::Reply => {
                    self.uncount(conn, st);
                    if conn.close_after {
                        return false;
                    }
                    conn.phase = Phase::Idle;
                }
                Phase::CloseAfterFlush => return false,
                Phase::Hold | Phase::Delayed => return true,
                Phase::Logs(cur) => match st.render_logs(cur, &mut conn.out) {
                    Step::Wrote => {}
                    Step::Ended => {
                        self.unpark(idx, conn);
                        conn.phase = Phase::Reply;
                    }
                    Step::Idle => {
                        let k = cur.container;
                        self.park(idx, conn, Some(k));
                        return true;
                    }
                    Step::Yield => {
                        self.runnable.push_back((idx, conn.serial));
                        return true;
                    }
                },
                Phase::Events(cur) => match st.render_events(cur, &mut conn.out) {
                    Step::Wrote | Step::Yield => {}
                    Step::Ended => {
                        self.unpark(idx, conn);
                        conn.phase = Phase::Reply;
                    }
                    Step::Idle => {
                        self.park(idx, conn, None);
                        return true;
                    }
                },
            }
        }
    }

    /// Park a caught-up stream until its container (`Some(k)`) or the event
    /// log (`None`) changes.
    fn park(&mut self, idx: usize, conn: &mut Conn, on: Option<usize>) {
        // An idle stream keeps no big buffer: ten thousand of them wait here.
        if conn.out.capacity() > KEEP_OUT_CAPACITY {
            conn.out = Vec::new();
        }
        if conn.parked {
            return;
        }
        conn.parked = true;
        let list = match on {
            Some(k) => {
                if self.parked.len() <= k {
                    self.parked.resize_with(k + 1, Vec::new);
                }
                &mut self.parked[k]
            }
            None => &mut self.event_parked,
        };
        list.push((idx, conn.serial));
    }

    /// Take a connection out of the parked list it is in, if any.
    fn unpark(&mut self, idx: usize, conn: &mut Conn) {
        if !conn.parked {
            return;
        }
        conn.parked = false;
        let list = match &conn.phase {
            Phase::Logs(cur) => self.parked.get_mut(cur.container),
            Phase::Events(_) => Some(&mut self.event_parked),
            _ => None,
        };
        if let Some(list) = list {
            if let Some(i) = list.iter().position(|&e| e == (idx, conn.serial)) {
                list.swap_remove(i);
            }
        }
    }

    fn wake_container(&mut self, k: usize, st: &mut State) {
        let Some(slot) = self.parked.get_mut(k) else {
            return;
        };
        if slot.is_empty() {
            return;
        }
        let list = std::mem::replace(slot, std::mem::take(&mut self.spare));
        self.wake_list(&list, st);
        self.spare = list;
        self.spare.clear();
    }

    fn wake_list(&mut self, list: &[(usize, u64)], st: &mut State) {
        for &(idx, serial) in list {
            if let Some(Some(c)) = self.conns.get_mut(idx) {
                if c.serial == serial {
                    c.parked = false;
                    self.drive(idx, st);
                }
            }
        }
    }

    fn fire_timers(&mut self, now: Instant, st: &mut State) -> bool {
        let mut fired = false;
        while let Some(&Reverse((t, idx, serial))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(Some(mut conn)) = self.conns.get_mut(idx).map(Option::take) else {
                continue;
            };
            if conn.serial != serial {
                self.conns[idx] = Some(conn);
                continue;
            }
            fired = true;
            self.unpark(idx, &mut conn);
            match &mut conn.phase {
                Phase::Logs(cur) => cur.expired = true,
                Phase::Events(cur) => cur.expired = true,
                Phase::Delayed => {
                    conn.out = std::mem::take(&mut conn.held);
                    conn.phase = Phase::Reply;
                }
                _ => {}
            }
            let keep = self.drive_conn(idx, &mut conn, st);
            self.put_back(idx, conn, keep, st);
        }
        fired
    }

    fn close_conn(&mut self, idx: usize, mut conn: Conn, st: &mut State) {
        self.unpark(idx, &mut conn);
        self.uncount(&mut conn, st);
        if let Err(e) = self.poll.registry().deregister(&mut conn.stream) {
            eprintln!("docker-double: deregister: {e}");
        }
        st.stats.connections_open = st.stats.connections_open.saturating_sub(1);
        self.free.push(idx);
        // Dropping `conn` closes the socket.
    }

    /// The response on this connection is over: take it out of the stream
    /// counts.
    fn uncount(&mut self, conn: &mut Conn, st: &mut State) {
        if let Some(k) = conn.counted_log.take() {
            st.log_stream_closed(k);
        }
        if std::mem::take(&mut conn.counted_events) {
            st.stats.events_streams_open = st.stats.events_streams_open.saturating_sub(1);
        }
    }

    // ---- requests ---------------------------------------------------

    fn handle(&mut self, idx: usize, conn: &mut Conn, req: Request, st: &mut State) {
        st.stats.requests_total += 1;
        conn.close_after |= req.close;
        conn.phase = Phase::Reply;
        let (version, route) = api::route(&req.path);
        match route {
            Route::Events => st.stats.events_requests_total += 1,
            Route::List => st.stats.list_requests_total += 1,
            _ => {}
        }
        let head_ping = req.method == "HEAD" && route == Route::Ping;
        if req.method != "GET" && !head_ping {
            // The agent must never send one; count it for the tests.
            st.stats.non_get_requests += 1;
            let msg = format!("{} {}: method not allowed", req.method, req.path);
            http::error(&mut conn.out, &st.server(), 405, &msg);
            return;
        }
        let api = match version {
            None => st.cfg.api_max,
            Some(v) => match api::check_version(v, st.cfg.api_min, st.cfg.api_max) {
                Ok(p) => p,
                Err(msg) => {
                    http::error(&mut conn.out, &st.server(), 400, &msg);
                    return;
                }
            },
        };
        let logs_of = match &route {
            Route::Logs(x) => {
                st.stats.logs_requests_total += 1;
                let tail = req.param("tail").is_some_and(|t| t.trim().parse::<i64>().is_ok());
                if tail {
                    st.stats.logs_requests_with_tail += 1;
                } else if req.param("since").is_some_and(|s| !s.is_empty()) {
                    st.stats.logs_requests_since_only += 1;
                }
                st.resolve(x).map(|k| {
                    let id = st.id(k).to_owned();
                    *st.stats.logs_requests_by_container.entry(id.clone()).or_insert(0) += 1;
                    id
                })
            }
            _ => None,
        };
        let mut plan = Plan::default();
        if let Some(fault) = st.take_fault(&route, logs_of.as_deref()) {
            match self.apply_fault(conn, &route, api, fault, st) {
                Some(p) => plan = p,
                None => return,
            }
        }
        let delay = plan.delay;
        let srv = st.server();
        match route {
            Route::Ping => http::ping(&mut conn.out, &srv, head_ping),
            Route::Version => {
                let body = api::version(st);
                http::json(&mut conn.out, &st.server(), 200, body.as_bytes(), st.cfg.chunk_threshold);
            }
            Route::List => match api::parse_filters(req.param("filters"))
                .and_then(|f| api::check_filter_keys(&f, &["label", "status", "name", "id"]).map(|()| f))
            {
                Ok(f) => {
                    let body = api::list(st, req.flag("all"), &f);
                    http::json(&mut conn.out, &st.server(), 200, body.as_bytes(), st.cfg.chunk_threshold);
                }
                Err(msg) => http::error(&mut conn.out, &srv, 400, &msg),
            },
            Route::Inspect(x) => match st.resolve(&x) {
                Some(k) => {
                    let body = api::inspect(&st.containers[k]);
                    http::json(&mut conn.out, &st.server(), 200, body.as_bytes(), st.cfg.chunk_threshold);
                }
                None => no_such_container(&mut conn.out, st, &x),
            },
            Route::Logs(x) => self.logs(idx, conn, &req, &x, api, plan, st),
            Route::Events => self.events(idx, conn, &req, api, plan, st),
            Route::NotFound => http::error(&mut conn.out, &srv, 404, "page not found"),
        }
        if let (Some(d), Phase::Reply) = (delay, &conn.phase) {
            conn.held = std::mem::take(&mut conn.out);
            conn.phase = Phase::Delayed;
            self.timers.push(Reverse((Instant::now() + d, idx, conn.serial)));
        }
    }

    /// Apply a fault. Returns what is left for the normal handler, or None
    /// when the fault is the whole answer.
    fn apply_fault(
        &mut self,
        conn: &mut Conn,
        route: &Route,
        api: (u16, u16),
        fault: Fault,
        st: &mut State,
    ) -> Option<Plan> {
        let logs_key = match route {
            Route::Logs(x) => st.resolve(x),
            _ => None,
        };
        let tty = logs_key.is_some_and(|k| st.containers[k].tty);
        let streaming = matches!(route, Route::Logs(_) | Route::Events);
        match fault {
            Fault::Status(code, msg) => http::error(&mut conn.out, &st.server(), code, &msg),
            Fault::SystemErr(msg) => {
                if logs_key.is_some() {
                    return Some(Plan { sys_err: Some(msg), ..Plan::default() });
                }
                http::error(&mut conn.out, &st.server(), 500, &msg);
            }
            Fault::CloseAfter(d) => {
                return Some(Plan { close_after: streaming.then_some(d), ..Plan::default() })
            }
            // Streams are not delayed (their heads go at once).
            Fault::Delay(d) => return Some(Plan { delay: (!streaming).then_some(d), ..Plan::default() }),
            Fault::Body(body) => http::json(&mut conn.out, &st.server(), 200, &body, usize::MAX),
            Fault::HugeBody(n) => {
                let mut body = vec![b' '; n.max(2)];
                body[0] = b'[';
                body[n.max(2) - 1] = b']';
                http::json(&mut conn.out, &st.server(), 200, &body, 0);
            }
            Fault::NeverAnswer => {
                self.count_stream(conn, route, logs_key, st);
                conn.phase = Phase::Hold;
            }
            Fault::StallAfterHeaders => {
                self.fault_head(conn, route, api, tty, st);
                self.count_stream(conn, route, logs_key, st);
                conn.phase = Phase::Hold;
            }
            Fault::MalformedChunk => {
                self.fault_head(conn, route, api, tty, st);
                conn.out.extend_from_slice(b"xyz\r\n0123456789\r\n");
                conn.phase = Phase::CloseAfterFlush;
            }
            Fault::ResetMidFrame => {
                match route {
                    Route::Logs(_) => {
                        self.fault_head(conn, route, api, tty, st);
                        if tty {
                            let line = b"a line cut in the middle\r\n";
                            http::chunk_head(&mut conn.out, line.len());
                            conn.out.extend_from_slice(&line[..line.len() / 2]);
                        } else {
                            // A 100-byte stdout frame, of which only 5 of
                            // the 8 header bytes arrive.
                            http::chunk_head(&mut conn.out, 108);
                            conn.out.extend_from_slice(&[1, 0, 0, 0, 0]);
                        }
                    }
                    _ => {
                        // Any other answer: its head and half its bytes.
                        let mut full = Vec::new();
                        match route {
                            Route::Events => {
                                http::stream_head(&mut full, &st.server(), Some("application/json"));
                                http::chunk(&mut full, b"{\"Type\":\"container\",\"Action\":\"start\"}\n");
                            }
                            _ => {
                                let body = api::version(st);
                                http::json(&mut full, &st.server(), 200, body.as_bytes(), usize::MAX);
                            }
                        }
                        let head_end = full.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |p| p + 4);
                        let cut = head_end + (full.len() - head_end) / 2;
                        conn.out.extend_from_slice(&full[..cut]);
                    }
                }
                conn.phase = Phase::CloseAfterFlush;
            }
        }
        None
    }

    /// The 200 head a streamed answer to this route would have.
    fn fault_head(&self, conn: &mut Conn, route: &Route, api: (u16, u16), tty: bool, st: &State) {
        let ct = match route {
            Route::Logs(_) => logs_content_type(api, tty),
            _ => Some("application/json"),
        };
        http::stream_head(&mut conn.out, &st.server(), ct);
    }

    fn count_stream(&self, conn: &mut Conn, route: &Route, logs_key: Option<usize>, st: &mut State) {
        match route {
            Route::Logs(_) => {
                if let Some(k) = logs_key {
                    st.log_stream_opened(k);
                    conn.counted_log = Some(k);
                }
            }
            Route::Events => {
                st.stats.events_streams_open += 1;
                conn.counted_events = true;
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn logs(
        &mut self,
        idx: usize,
        conn: &mut Conn,
        req: &Request,
        x: &str,
        api: (u16, u16),
        plan: Plan,
        st: &mut State,
    ) {
        let out = &mut conn.out;
        let (stdout, stderr) = (req.flag("stdout"), req.flag("stderr"));
        // moby checks the streams before looking the container up.
        if !stdout && !stderr {
            let msg = "Bad parameters: you must choose at least one stream";
            return http::error(out, &st.server(), 400, msg);
        }
        let Some(k) = st.resolve(x) else {
            return no_such_container(out, st, x);
        };
        if st.containers[k].log_driver == "none" {
            let msg = "configured logging driver does not support reading";
            return http::error(out, &st.server(), 501, msg);
        }
        let mut times = [None, None];
        for (slot, key) in times.iter_mut().zip(["since", "until"]) {
            match req.param(key).filter(|v| !v.is_empty()) {
                None => {}
                Some(v) => match time::parse_unix(v) {
                    Some(ns) => *slot = Some(ns),
                    None => {
                        let msg = format!("invalid value for \"{key}\": {v:?}");
                        return http::error(out, &st.server(), 400, &msg);
                    }
                },
            }
        }
        let [since, until] = times;
        // moby: a tail that is not a number (or negative) means all.
        let tail =
            req.param("tail").and_then(|t| t.trim().parse::<i64>().ok()).and_then(|n| u64::try_from(n).ok());
        let mut cur = st.log_cursor(k, req.flag("follow"), tail);
        cur.stdout = stdout;
        cur.stderr = stderr;
        cur.timestamps = req.flag("timestamps");
        cur.since = since;
        cur.until = until;
        if let Some(msg) = plan.sys_err {
            // The error cuts the stream after what is stored now.
            cur.end = LogEnd::At(st.log_end(k));
            cur.sys_err = Some(msg);
        }
        http::stream_head(out, &st.server(), logs_content_type(api, cur.tty));
        st.log_stream_opened(k);
        conn.counted_log = Some(k);
        self.arm_timers(idx, conn.serial, plan.close_after, until, st.now_ns());
        conn.phase = Phase::Logs(cur);
    }

    fn events(
        &mut self,
        idx: usize,
        conn: &mut Conn,
        req: &Request,
        api: (u16, u16),
        plan: Plan,
        st: &mut State,
    ) {
        let out = &mut conn.out;
        let filters = match api::parse_filters(req.param("filters")).and_then(|f| {
            api::check_filter_keys(
                &f,
                &[
                    "type",
                    "container",
                    "event",
                    "label",
                    "image",
                    "scope",
                    "daemon",
                    "network",
                    "volume",
                    "plugin",
                    "node",
                    "service",
                    "secret",
                    "config",
                ],
            )
            .map(|()| f)
        }) {
            Ok(f) => f,
            Err(msg) => return http::error(out, &st.server(), 400, &msg),
        };
        let mut times = [None, None];
        for (slot, key) in times.iter_mut().zip(["since", "until"]) {
            if let Some(v) = req.param(key).filter(|v| !v.is_empty()) {
                match time::parse_unix(v) {
                    Some(ns) => *slot = Some(ns),
                    None => {
                        let msg = format!("invalid value for \"{key}\": {v:?}");
                        return http::error(out, &st.server(), 400, &msg);
                    }
                }
            }
        }
        let [since, until] = times;
        let cur = st.event_cursor(since, until, filters, api < (1, 52));
        http::stream_head(out, &st.server(), Some("application/json"));
        st.stats.events_streams_open += 1;
        conn.counted_events = true;
        self.arm_timers(idx, conn.serial, plan.close_after, until, st.now_ns());
        conn.phase = Phase::Events(cur);
    }

    /// Deadlines of a stream: a CloseAfter fault, and `until` (a time on
    /// the daemon's clock `now_ns`, turned into a monotonic deadline now).
    fn arm_timers(
        &mut self,
        idx: usize,
        serial: u64,
        after: Option<Duration>,
        until: Option<i64>,
        now_ns: i64,
    ) {
        let now = Instant::now();
        if let Some(d) = after {
            self.timers.push(Reverse((now + d, idx, serial)));
        }
        if let Some(u) = until {
            let wait = u.saturating_sub(now_ns).max(0) as u64;
            self.timers.push(Reverse((now + Duration::from_nanos(wait), idx, serial)));
        }
    }
}

/// moby sends a Content-Type on logs from API 1.42 on.
fn logs_content_type(api: (u16, u16), tty: bool) -> Option<&'static str> {
    if api < (1, 42) {
        None
    } else if tty {
        Some("application/vnd.docker.raw-stream")
    } else {
        Some("application/vnd.docker.multiplexed-stream")
    }
}

fn no_such_container(out: &mut Vec<u8>, st: &State, x: &str) {
    http::error(out, &st.server(), 404, &format!("No such container: {x}"));
}
