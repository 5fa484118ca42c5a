//! The sink's connection on the loop: connect (to an address
//! [`super::resolve`] found), TLS, one push at a time, its answer, and what
//! the answer means for the queue ([`crate::sink::outcome`]): acknowledge,
//! drop for good, retry with backoff, or wait for the operator.
//!
//! The connection is kept alive between pushes and closed after
//! [`KEEP_ALIVE_IDLE`] without one (before a server's idle timeout, Loki's
//! is 120 s, can race a push).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::conn::{Conn, ConnFailure, ConnTimer, Role};
use crate::agent::event_loop::{Agent, Timer};
use crate::agent::resolve::Next;
use crate::agent::sink::Metadata;
use crate::agent::sock::{Endpoint, Sock};
use crate::http::request::Headers;
use crate::message;
use crate::sink::loki::config::MetadataMode;
use crate::sink::loki::config::{Auth, LokiConfig};
use crate::sink::loki::encoding::Body;
use crate::sink::metrics::RequestResult;
use crate::sink::outcome::{self, BadRequest, Outcome, RetryReason, REFUSED_RETRY};
use crate::sink::queue::Queued;
use crate::sink::response::{PushResponse, ResponseReader};
use crate::sink::transport::{Received, Transport, TransportError};

/// Smallest batch size a 413 can bring batches down to.
const MIN_BATCH_AFTER_413: usize = 16 << 10;

/// An idle kept-alive connection is closed after this.
pub const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(30);

/// How long a `Connection: close` answer waits, after the server's close,
/// for the reset that tells it had not read the whole push: a server that
/// half-closes first (shutdown, then close) sends its FIN before the reset.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The TLS client configuration, built once at start.
pub(crate) struct TlsSetup {
    pub config: Arc<rustls::ClientConfig>,
    pub name: rustls::pki_types::ServerName<'static>,
}

impl TlsSetup {
    pub(crate) fn new(cfg: &LokiConfig) -> anyhow::Result<Self> {
        Ok(TlsSetup {
            config: crate::sink::tls::client_config(&cfg.tls)?,
            name: crate::sink::tls::server_name(&cfg.url.host, &cfg.tls)?,
        })
    }
}

/// The headers every push carries, checked once.
pub(crate) fn request_headers(cfg: &LokiConfig) -> anyhow::Result<Headers> {
    let mut h = Headers::default();
    let mut add = |name: &str, value: &str| {
        h.add(name, value).map_err(|e| anyhow::anyhow!("the Loki header {name}: {e}"))
    };
    add("Content-Type", cfg.encoding.content_type())?;
    if let Some(enc) = cfg.encoding.content_encoding() {
        add("Content-Encoding", enc)?;
    }
    if let Some(t) = &cfg.tenant {
        add("X-Scope-OrgID", t)?;
    }
    match &cfg.auth {
        Auth::None => {}
        Auth::Basic { user, password } => {
            add("Authorization", &format!("Basic {}", base64(format!("{user}:{password}").as_bytes())))?
        }
        Auth::Bearer(t) => add("Authorization", &format!("Bearer {t}"))?,
    }
    for (n, v) in &cfg.headers {
        add(n, v)?;
    }
    Ok(h)
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One connection to the sink.
pub(crate) struct SinkConn {
    pub transport: Transport,
    pub reader: ResponseReader,
    /// When the push on the wire was sent; `None` between pushes.
    pub sent_at: Option<Instant>,
    /// An answer that closes the connection, held until the server has
    /// closed it: cleanly, the answer stands; with a reset, the server had
    /// not read the whole push (see [`Agent::sink_read`]).
    pub closing: Option<PushResponse>,
    /// The server closed after a `closing` answer: a reset may follow
    /// within [`CLOSE_GRACE`].
    pub closed: bool,
}

impl Agent {
    /// Send the front batch if nothing is in flight and nothing waits.
    pub(crate) fn pump_sink(&mut self) {
        let Some(sink) = self.sink.as_mut() else { return };
        if sink.retry_timer.is_some() || sink.queue.is_empty() {
            return;
        }
        let Some(key) = sink.conn else { return self.connect_sink() };
        // Connected and idle: no push on the wire (one at a time).
        let idle = match self.conns.get(key) {
            Some(c @ Conn { role: Role::Sink(sc), .. }) => c.connected && sc.sent_at.is_none(),
            _ => false,
        };
        if idle {
            self.send_push(key);
        }
    }

    fn connect_sink(&mut self) {
        self.open_sink_conn(false);
    }

    /// Connect to the sink: its connection, or (`hedge`) a second one for
    /// the push the first has no answer to. A hedge that cannot even
    /// connect is no failure of the push: the first connection still has it.
    fn open_sink_conn(&mut self, hedge: bool) {
        let now = Instant::now();
        let Some(sink) = self.sink.as_mut() else { return };
        let addr = match sink.addrs.next(now) {
            Next::Addr(a) => a,
            Next::Resolve if hedge => return,
            Next::Resolve => return self.resolve_sink(),
        };
        let transport = match &sink.tls {
            None => Ok(Transport::Plain),
            Some(t) => Transport::tls(t.config.clone(), t.name.clone()),
        };
        let transport = match transport {
            Ok(t) => t,
            Err(_) if hedge => return,
            Err(e) => return self.push_failed(ConnFailure::Transport(e)),
        };
        let sock = match Sock::connect(&Endpoint::Tcp(addr)) {
            Ok(s) => s,
            Err(e) => {
                self.note_fd_exhaustion(&e);
                if hedge {
                    return;
                }
                if let Some(s) = self.sink.as_mut() {
                    s.addrs.failed();
                }
                return self.push_failed(ConnFailure::Io(e));
            }
        };
        let role = Role::Sink(Box::new(SinkConn {
            transport,
            reader: ResponseReader::new(),
            sent_at: None,
            closing: None,
            closed: false,
        }));
        match self.insert_conn(sock, Vec::new(), role) {
            Ok(key) => {
                if let Some(sink) = self.sink.as_mut() {
                    if hedge {
                        sink.hedge = Some(key);
                        sink.metrics.hedges.inc();
                    } else {
                        sink.conn = Some(key);
                    }
                }
            }
            Err(_) if hedge => {}
            Err(e) => self.push_failed(ConnFailure::Io(e)),
        }
    }

    /// The push on the wire has had no answer for `--sink-hedge-after`:
    /// send it again on a second connection, once it was sent whole (a
    /// slow link is not helped by a second one) and while not a byte of
    /// an answer came.
    pub(crate) fn sink_hedge_due(&mut self) {
        let Some(sink) = self.sink.as_mut() else { return };
        sink.hedge_timer = None;
        let (Some(key), None, Some(after)) = (sink.conn, sink.hedge, sink.cfg.hedge_after) else { return };
        let (sent_at, answering, sent_whole) = match self.conns.get(key) {
            Some(c @ Conn { role: Role::Sink(sc), .. }) => {
                (sc.sent_at, sc.reader.started(), c.out_pos >= c.out.len())
            }
            _ => (None, false, false),
        };
        let Some(sent_at) = sent_at.filter(|_| !answering) else { return };
        // This timer may be an earlier push's: wait out this one's time.
        let due = sent_at + after;
        if !sent_whole || Instant::now() < due {
            let at = if sent_whole { due } else { Instant::now() + after };
            sink.hedge_timer = Some(self.timers.insert(at, Timer::SinkHedge));
            return;
        }
        self.open_sink_conn(true);
    }

    /// The sink's other connection while two carry the same push.
    fn other_sink_conn(&self, key: usize) -> Option<usize> {
        let sink = self.sink.as_ref()?;
        match (sink.conn, sink.hedge) {
            (Some(c), Some(h)) if c == key => Some(h),
            (Some(c), Some(h)) if h == key => Some(c),
            _ => None,
        }
    }

    /// Readiness of the sink's connection.
    pub(crate) fn sink_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if writable && !conn.connected {
            match conn.sock.finish_connect() {
                Ok(true) => {
                    conn.connected = true;
                    self.cancel_timer(key, ConnTimer::Connect);
                    let hedge = self.sink.as_mut().is_some_and(|s| {
                        s.addrs.worked();
                        s.hedge == Some(key)
                    });
                    if hedge {
                        self.send_push(key);
                    } else {
                        self.pump_sink();
                    }
                }
                Ok(false) => return,
                Err(e) => {
                    if let Some(s) = self.sink.as_mut() {
                        s.addrs.failed();
                    }
                    return self.sink_conn_failed(key, ConnFailure::Io(e));
                }
            }
        }
        if let Err(e) = self.sink_write(key) {
            return self.sink_conn_failed(key, ConnFailure::Transport(e));
        }
        if readable || writable {
            self.sink_read(key);
        }
    }

    /// Write what is left of the request, and pending TLS records.
    fn sink_write(&mut self, key: usize) -> Result<(), TransportError> {
        let Some(conn) = self.conns.get_mut(key) else { return Ok(()) };
        if !conn.connected {
            return Ok(());
        }
        let Role::Sink(sc) = &mut conn.role else { return Ok(()) };
        while conn.out_pos < conn.out.len() {
            let n = sc.transport.write(&mut conn.sock, &conn.out[conn.out_pos..])?;
            if n == 0 {
                break;
            }
            conn.out_pos += n;
        }
        sc.transport.flush(&mut conn.sock)?;
        if conn.out_pos == conn.out.len() && !conn.out.is_empty() {
            conn.out = Vec::new();
            conn.out_pos = 0;
        }
        Ok(())
    }

    /// Read the answer. One that says `Connection: close` is acted on only
    /// once the server has closed: a server (or proxy) that answers before
    /// reading the whole push and closes has unread bytes of it, and its
    /// kernel then resets the connection instead of closing it. So a reset
    /// after such an answer means the push was not read whole: it is no
    /// acknowledgement. (A kept-alive answer needs no wait: the server must
    /// have read the whole body to find the next request.)
    fn sink_read(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else { return };
            let Role::Sink(sc) = &mut conn.role else { return };
            let got = sc.transport.read(&mut conn.sock, &mut self.read_buf);
            let answer = match got {
                Ok(Received::Data(n)) => {
                    if sc.sent_at.is_none() || sc.closing.is_some() {
                        // Nothing asked, or already answered: a server that
                        // talks out of turn.
                        let e = io::Error::other("the sink sent bytes without a request");
                        return self.sink_conn_failed(key, ConnFailure::Io(e));
                    }
                    sc.reader.push(&self.read_buf[..n])
                }
                Ok(Received::WouldBlock) => {
                    // A TLS handshake step may have queued records.
                    if let Err(e) = self.sink_write(key) {
                        return self.sink_conn_failed(key, ConnFailure::Transport(e));
                    }
                    return;
                }
                Ok(Received::Eof) => {
                    if sc.closing.is_some() {
                        // Closed after the answer. Once the FIN is in, a
                        // later reset no longer shows to reads (they keep
                        // saying EOF), only as the socket's pending error:
                        // look at it now and at the grace's end.
                        if conn.sock.take_error().ok().flatten().is_some() {
                            let resp = sc.closing.take().expect("checked");
                            return self.sink_answered(key, resp, true);
                        }
                        if !std::mem::replace(&mut sc.closed, true) {
                            self.add_timer(key, Instant::now() + CLOSE_GRACE, ConnTimer::Idle);
                        }
                        return;
                    }
                    if sc.sent_at.is_none() {
                        // The server closed an idle kept-alive connection.
                        self.close_sink_conn(key);
                        return self.pump_sink();
                    }
                    sc.reader.eof().map(Some)
                }
                Err(e) => {
                    if let Some(resp) = sc.closing.take() {
                        return self.sink_answered(key, resp, true);
                    }
                    return self.sink_conn_failed(key, ConnFailure::Transport(e));
                }
            };
            match answer {
                Ok(Some(resp)) if !resp.keep_alive => {
                    let Some(Conn { role: Role::Sink(sc), .. }) = self.conns.get_mut(key) else { return };
                    sc.closing = Some(resp);
                }
                Ok(Some(resp)) => return self.sink_answered(key, resp, false),
                Ok(None) => {}
                Err(e) => {
                    let io = ConnFailure::Io(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
                    return self.sink_conn_failed(key, io);
                }
            }
        }
    }

    /// Put the front batch on the wire (without its structured metadata
    /// if the sink refused it).
    fn send_push(&mut self, key: usize) {
        let Some(sink) = self.sink.as_mut() else { return };
        // A fresh push (not a hedge's copy of the one on the wire): a
        // backlog goes in pushes of up to max_push. One push is in flight
        // at a time, so a sink behind a slow or failing receiver carries
        // one push per round trip: batches of --loki-batch-bytes alone
        // cannot catch up with a node writing near that much per second.
        if sink.hedge != Some(key) {
            let (max, enc) = (sink.max_push, sink.cfg.encoding);
            if let Err(e) =
                sink.queue.coalesce_front(max, |parts| crate::sink::loki::merge::merge(parts, enc))
            {
                message!("cannot merge queued pushes ({e}); they are sent one by one");
            }
        }
        let Some(front) = sink.queue.front() else { return };
        let mut trial: Option<Body> = None;
        if front.metadata && sink.metadata != Metadata::On {
            match crate::sink::loki::strip::without_metadata(&front.body, sink.cfg.encoding) {
                // Off for good: the queue keeps the body as it is sent.
                Ok(b) if sink.metadata == Metadata::Off => sink.queue.set_front_body(b, false),
                Ok(b) => trial = Some(b),
                // The agent's own encoding: cannot happen. Sent as it is,
                // the sink answers for it.
                Err(e) => message!("cannot take the structured metadata out of a push ({e}); sent as it is"),
            }
        }
        let Some(front) = sink.queue.front() else { return };
        let body = trial.as_ref().unwrap_or(&front.body);
        let head = match crate::http::request::post(
            &sink.cfg.url.path,
            &sink.cfg.url.host_header(),
            &sink.headers,
            body.bytes.len(),
        ) {
            Ok(h) => h,
            Err(e) => {
                // Checked at start-up; cannot happen with a checked config.
                message!("cannot build the push request: {e}");
                return;
            }
        };
        let mut out = Vec::with_capacity(head.len() + body.bytes.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&body.bytes);
        sink.metrics.bytes.inc_by(out.len() as u64);
        let timeout = sink.cfg.timeout;
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.out = out;
        conn.out_pos = 0;
        if let Role::Sink(sc) = &mut conn.role {
            sc.sent_at = Some(Instant::now());
            sc.reader = ResponseReader::new();
        }
        self.cancel_timer(key, ConnTimer::Idle);
        self.add_timer(key, Instant::now() + timeout, ConnTimer::Push);
        if let Some(sink) = self.sink.as_mut() {
            if let (Some(after), None, None) = (sink.cfg.hedge_after, sink.hedge, sink.hedge_timer) {
                sink.hedge_timer = Some(self.timers.insert(Instant::now() + after, Timer::SinkHedge));
            }
        }
        if let Err(e) = self.sink_write(key) {
            self.sink_conn_failed(key, ConnFailure::Transport(e));
        }
    }

    /// `reset`: the server reset the connection after this answer (see
    /// [`Agent::sink_read`]).
    fn sink_answered(&mut self, key: usize, resp: PushResponse, reset: bool) {
        let (sent_at, unsent) = match self.conns.get_mut(key) {
            Some(Conn { role: Role::Sink(sc), out, out_pos, .. }) => {
                // Bytes still in our buffer or in TLS records not yet
                // written: the receiver cannot have read the whole push.
                let left = out.len() - *out_pos;
                let unsent = (left > 0 || sc.transport.wants_write()).then_some((*out_pos, out.len()));
                (sc.sent_at.take(), unsent)
            }
            _ => (None, None),
        };
        self.cancel_timer(key, ConnTimer::Push);
        // Answered: the copy on the other connection (hedged) is not
        // needed, whatever this answer says; this one is the connection now.
        if let Some(other) = self.other_sink_conn(key) {
            self.close_sink_conn(other);
        }
        if let Some(sink) = self.sink.as_mut() {
            sink.conn = Some(key);
            sink.hedge = None;
            if let Some(t) = sink.hedge_timer.take() {
                self.timers.cancel(t);
            }
        }
        // An answer before the whole request was sent (a 413 or 401 that
        // did not wait for the body, a proxy) leaves the connection
        // mid-request.
        if resp.keep_alive && unsent.is_none() {
            self.add_timer(key, Instant::now() + KEEP_ALIVE_IDLE, ConnTimer::Idle);
        } else {
            self.close_sink_conn(key);
        }
        let Some(sink) = self.sink.as_mut() else { return };
        if let Some(t) = sent_at {
            sink.metrics.duration.observe(t.elapsed().as_secs_f64());
        }
        let wait = resp.retry_after.and_then(|r| r.wait(resp.date));
        let said = outcome::said(&resp.message);
        match outcome::of_status(resp.status, &resp.message, wait) {
            // Whatever it says, a receiver that has not read the whole push
            // has not stored it.
            Outcome::Acked | Outcome::BadRequest(_) if unsent.is_some() || reset => {
                let how = match unsent {
                    Some((written, total)) => {
                        format!("before the whole push was sent ({written} of {total} bytes written)")
                    }
                    None => "and reset the connection, so it had not read the whole push".to_owned(),
                };
                let what = format!("answered {}{said} {how}: not an acknowledgement", resp.status);
                self.retry_push(RetryReason::EarlyAnswer, wait, what);
            }
            Outcome::Acked => {
                sink.metrics.request(RequestResult::Ok);
                if sink.metadata == Metadata::Trying {
                    self.metadata_off(
                        "it refused a whole push with it and accepted the same push without it",
                    );
                }
                self.sink_recovered();
                self.batch_delivered(None);
            }
            Outcome::BadRequest(BadRequest::Entries { refused }) => {
                sink.metrics.request(RequestResult::Rejected);
                self.sink_recovered();
                self.batch_delivered(Some((&refused, &resp.message)));
            }
            Outcome::BadRequest(BadRequest::Metadata) => {
                let carried =
                    sink.queue.front().is_some_and(|q| q.metadata) && sink.metadata != Metadata::Off;
                if carried && sink.cfg.metadata == MetadataMode::Auto {
                    sink.metrics.request(RequestResult::Retry);
                    self.metadata_off(&format!("400 Bad Request{said}"));
                } else {
                    let what = format!(
                        "400 Bad Request{said}: this Loki refuses structured metadata; allow it \
                         (limits_config: allow_structured_metadata: true, with schema v13 on tsdb) or run \
                         with --loki-structured-metadata auto or never"
                    );
                    self.push_refused(what, false);
                }
            }
            Outcome::BadRequest(BadRequest::Request) => {
                let carried = sink.queue.front().is_some_and(|q| q.metadata);
                if carried && sink.metadata == Metadata::On && sink.cfg.metadata == MetadataMode::Auto {
                    // Loki 2.8's JSON decoder cannot read metadata and says
                    // only that the JSON is wrong: try the same push without.
                    sink.metrics.request(RequestResult::Retry);
                    sink.metadata = Metadata::Trying;
                    message!(
                        "the sink {} refused a whole push{said}; sending it again without structured \
                         metadata (a Loki before 2.9 cannot read it in JSON)",
                        sink.cfg.url
                    );
                } else {
                    if sink.metadata == Metadata::Trying {
                        // Refused without metadata too: it was not that.
                        sink.metadata = Metadata::On;
                    }
                    let what = request_refused(resp.status, &said, &resp.message);
                    self.push_refused(what, false);
                }
            }
            Outcome::Retry { reason, after } => {
                let what = format!("answered {}{said}", resp.status);
                if reason == RetryReason::RateLimited {
                    // Loki charges its rate limits for every entry of a
                    // resend, those it already holds included: a batch
                    // above a stream's (or the tenant's) burst would be
                    // refused forever. A second 429 in a row cuts it.
                    sink.rate_limited += 1;
                    if sink.rate_limited >= 2 && self.split_front(false) {
                        if let Some(sink) = self.sink.as_mut() {
                            sink.rate_limited = 0;
                        }
                    }
                } else {
                    sink.rate_limited = 0;
                }
                self.retry_push(reason, after, what);
            }
            Outcome::Refused { what, split } => self.push_refused(what, split),
        }
        self.pump_sink();
    }

    /// The sink refuses structured metadata: leave it out from now on,
    /// queued batches included, and say so once.
    fn metadata_off(&mut self, why: &str) {
        let Some(sink) = self.sink.as_mut() else { return };
        sink.metadata = Metadata::Off;
        sink.batch.set_metadata(false);
        sink.metrics.structured_metadata_enabled.set(0);
        let how = match sink.cfg.encoding {
            crate::sink::loki::encoding::Encoding::Json => {
                "Loki 2.9 and later store it in JSON pushes when allowed; Loki 2.8 cannot: \
                 --loki-encoding protobuf keeps the lines flowing there (2.8 ignores metadata in \
                 protobuf)"
            }
            crate::sink::loki::encoding::Encoding::Protobuf => {
                "to keep them, allow it in Loki (limits_config: allow_structured_metadata: true, \
                 which needs schema v13 on the tsdb store) and restart the agent"
            }
        };
        message!(
            "the sink {} does not take structured metadata ({why}): pushes go without it from now on, \
             the refused one included, and nothing is lost; container ids and images are not shipped \
             ({how}); --loki-structured-metadata never says this in advance \
             (log_capturer_sink_structured_metadata_enabled 0)",
            sink.cfg.url
        );
        sink.metadata_off = Some(why.to_owned());
    }
    /// A push was answered for good: the sink is up.
    fn sink_recovered(&mut self) {
        let Some(sink) = self.sink.as_mut() else { return };
        sink.metrics.up.set(1);
        sink.backoff.reset();
        if let Some(was) = sink.refused.take() {
            message!("the sink {} accepts pushes again (it had refused: {was})", sink.cfg.url);
        } else if sink.failing.take().is_some() {
            message!("the sink {} accepts pushes again", sink.cfg.url);
        }
        sink.retry_says.reset();
    }

    /// Try the same batch again after the backoff (at least `after`).
    fn retry_push(&mut self, reason: RetryReason, after: Option<Duration>, what: String) {
        let Some(sink) = self.sink.as_mut() else { return };
        sink.metrics.up.set(0);
        sink.metrics.request(RequestResult::Retry);
        sink.metrics.retry(reason);
        let wait = sink.backoff.next(&mut self.rng).max(after.unwrap_or_default());
        if let Some(held) = sink.retry_says.allow(Instant::now()) {
            message!(
                "the sink {} {what}; sending again in {wait:.1?} (and with backoff up to {:?} until it \
                 answers; nothing is dropped, reading pauses when the queue of {} is full){}",
                sink.cfg.url,
                crate::agent::sink::RETRY_CAP,
                crate::sink::loki::config::human_bytes(sink.cfg.queue_bytes),
                crate::messages::held_back(held)
            );
        }
        sink.failing = Some(what);
        self.arm_sink_retry(wait);
    }

    fn push_refused(&mut self, what: String, split: bool) {
        let Some(sink) = self.sink.as_mut() else { return };
        sink.metrics.up.set(0);
        sink.metrics.request(RequestResult::Refused);
        sink.metrics.retry(RetryReason::Refused);
        if sink.refused.as_deref() != Some(what.as_str()) || sink.refused_says.allow(Instant::now()).is_some()
        {
            message!(
                "the sink {} refuses pushes: {what}. Nothing is dropped: lines wait (in the queue, then \
                 in dockerd's log files) and the push is tried again every {}s",
                sink.cfg.url,
                REFUSED_RETRY.as_secs()
            );
        }
        sink.refused = Some(what);
        if split {
            // Later batches would be refused the same way: make them smaller.
            // A merged push was too large: merge less first, then cut
            // batches too.
            let now = sink.batch.limits().max_bytes;
            if sink.max_push > now {
                sink.max_push = (sink.max_push / 2).max(now);
            } else {
                let lower = (now / 2).max(MIN_BATCH_AFTER_413);
                sink.batch.set_max_bytes(lower);
                sink.max_push = lower;
            }
        }
        if split && self.split_front(true) {
            // The halves go at once, with backoff if they fail too.
            let wait = self.sink.as_mut().map_or(REFUSED_RETRY, |s| s.backoff.next(&mut self.rng));
            return self.arm_sink_retry(wait);
        }
        self.arm_sink_retry(REFUSED_RETRY);
    }

    /// Cut the front batch in two (413, or a repeated 429 when not
    /// `too_large`). The acknowledgements go with the second half:
    /// acknowledging the first alone moves no checkpoint, which can only
    /// cost repeats after a crash. The halves are never merged again. False
    /// if it holds one line (too large for the receiver, that line waits
    /// for the operator; rate-limited, its turn comes).
    fn split_front(&mut self, too_large: bool) -> bool {
        let Some(sink) = self.sink.as_mut() else { return false };
        let Some(front) = sink.queue.front() else { return false };
        let halves = match crate::sink::loki::split::split(&front.body, sink.cfg.encoding) {
            Ok(Some(h)) => h,
            // One line under a rate limit: its turn comes.
            Ok(None) if !too_large => return false,
            Ok(None) => {
                message!(
                    "the sink refuses a push of a single line as too large: raise the receiver's body \
                     limit, or lower --loki-max-line-bytes"
                );
                return false;
            }
            Err(e) => {
                message!("cannot cut a push in two ({e}); it is sent again whole");
                return false;
            }
        };
        let whole = sink.queue.pop_front().expect("front checked");
        let [(a, na), (b, nb)] = halves;
        let second = Queued {
            body: b,
            lines: nb,
            oldest: whole.oldest,
            acks: whole.acks,
            metadata: whole.metadata,
            cut: true,
        };
        let first = Queued {
            body: a,
            lines: na,
            oldest: whole.oldest,
            acks: Vec::new(),
            metadata: whole.metadata,
            cut: true,
        };
        sink.queue.push_front(second);
        sink.queue.push_front(first);
        true
    }

    fn arm_sink_retry(&mut self, wait: Duration) {
        let Some(sink) = self.sink.as_mut() else { return };
        if let Some(t) = sink.retry_timer.take() {
            self.timers.cancel(t);
        }
        sink.retry_timer = Some(self.timers.insert(Instant::now() + wait, Timer::SinkRetry));
    }

    pub(crate) fn sink_retry_due(&mut self) {
        if let Some(sink) = self.sink.as_mut() {
            sink.retry_timer = None;
        }
        self.pump_sink();
    }

    /// The name did not resolve: retry like a failed connection.
    pub(crate) fn sink_dns_failed(&mut self, why: &str) {
        self.retry_push(RetryReason::Dns, None, format!("cannot be resolved: {why}"));
    }

    /// The connection failed (I/O, TLS, protocol) or a deadline passed.
    pub(crate) fn sink_conn_failed(&mut self, key: usize, why: ConnFailure) {
        let in_flight = match self.conns.get(key) {
            Some(c @ Conn { role: Role::Sink(sc), .. }) => sc.sent_at.is_some() || !c.connected,
            _ => return,
        };
        if self.other_sink_conn(key).is_some() {
            // The other connection carries (or is about to carry) the same
            // push: it decides.
            return self.close_sink_conn(key);
        }
        self.close_sink_conn(key);
        if in_flight || self.sink.as_ref().is_some_and(|s| !s.queue.is_empty()) {
            self.push_failed(why);
        }
    }

    /// A push could not be made or answered: TLS refusals are the
    /// configuration's, everything else is retried with backoff.
    fn push_failed(&mut self, why: ConnFailure) {
        let reason = match why {
            ConnFailure::Transport(e) if e.is_config_problem() => {
                return self.push_refused(format!("TLS: {e}"), false)
            }
            ConnFailure::Deadline(_) => RetryReason::Timeout,
            _ => RetryReason::Connection,
        };
        self.retry_push(reason, None, format!("failed: {why}"));
    }

    pub(crate) fn sink_deadline(&mut self, key: usize, kind: ConnTimer) {
        let closed = match self.conns.get_mut(key) {
            Some(Conn { role: Role::Sink(sc), sock, .. }) if sc.closed => {
                sc.closing.take().map(|resp| (resp, sock.take_error().ok().flatten().is_some()))
            }
            _ => None,
        };
        if let (ConnTimer::Idle, Some((resp, reset))) = (kind, closed) {
            // The grace is over: closed cleanly, the answer stands; reset
            // meanwhile, the push was not read whole.
            return self.sink_answered(key, resp, reset);
        }
        if kind == ConnTimer::Idle {
            // Idle between pushes: close before the server does.
            self.close_sink_conn(key);
            return;
        }
        self.metrics.deadline(kind.metric());
        self.sink_conn_failed(key, ConnFailure::Deadline(kind));
    }

    /// Close one of the sink's connections; a hedge left alone becomes
    /// the connection.
    pub(crate) fn close_sink_conn(&mut self, key: usize) {
        if self.close_conn(key).is_some() {
            if let Some(sink) = self.sink.as_mut() {
                if sink.conn == Some(key) {
                    sink.conn = sink.hedge.take();
                } else if sink.hedge == Some(key) {
                    sink.hedge = None;
                }
            }
        }
    }
}

/// What to tell the operator about a 400 that refused a whole push: Loki
/// may have stored nothing of it, so it waits, and is sent again slowly.
fn request_refused(status: u16, said: &str, message: &str) -> String {
    let m = message.to_ascii_lowercase();
    let fix = if m.contains("label") {
        "a label set this Loki does not take: check --loki-label and --loki-container-label against \
         its limits_config (max_label_names_per_series, max_label_name_length, max_label_value_length)"
    } else if m.contains("snappy") || m.contains("proto") || m.contains("loghttp") || m.contains("mime") {
        "this Loki cannot decode the agent's push: a bug of the agent or a proxy rewriting bodies; \
         --loki-encoding json (or protobuf) may get through meanwhile; please report it with this \
         message"
    } else {
        "the whole push was refused for a reason the agent does not know: fix what Loki says"
    };
    format!("{status} Bad Request{said}: {fix}. The push is kept (not one of its lines is dropped)")
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_of_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
