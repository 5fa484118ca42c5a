//! `/metrics` and `/healthz`, served by the same loop: a metrics client is
//! one more connection in the slab, with a deadline like every other.
//!
//! Anyone who can reach the port can open connections and send nothing (or
//! one byte a second), so clients must not be able to keep others out: a
//! client has [`HEAD_DEADLINE`] to send its whole request head, and at the
//! [`MAX_CLIENTS`] cap a new client evicts the longest-waiting one that has
//! not sent its head yet (it costs nothing to open a connection again, so
//! the newest is the one most likely to be a prober about to ask). Only a
//! client being answered keeps its slot, for at most [`WRITE_DEADLINE`].

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpListener;

use crate::agent::conn::{Conn, ConnTimer, Role};
use crate::agent::container::Follow;
use crate::agent::event_loop::{Agent, Timer, HEALTH_PING_EVERY};
use crate::agent::sock::Sock;
use crate::message;
use crate::metrics::Format;

/// Largest request head we read from a scraper.
const MAX_REQUEST: usize = 8 * 1024;
/// A client must send its whole request head within this of being
/// accepted (not per byte: a byte a second must not keep a slot). A head is
/// one small segment sent right after connecting; this leaves room for a
/// retransmission or two on a lossy link.
const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// A client must take its whole response within this (a big `/metrics`
/// on a slow link).
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// At most this many metrics clients at once: scrapers are few, and each
/// costs an fd (counted in `budget::RESERVE`). At the cap a new client
/// evicts the oldest one still sending its head; only when every client is
/// being answered do new ones wait in the listen backlog.
pub(crate) const MAX_CLIENTS: usize = 16;
/// After an accept failed for lack of fds, try again this much later.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Default)]
pub(crate) struct ScraperConn {
    req: Vec<u8>,
}

/// The listener and what the loop knows of its clients.
pub(crate) struct ScrapeServer {
    pub listener: TcpListener,
    /// Clients connected now.
    pub clients: usize,
    /// Clients by age, (key, gen), oldest first: who is evicted at the cap.
    /// May hold entries of clients gone or answered (skipped).
    pub order: VecDeque<(usize, u64)>,
    /// A client was left in the backlog at the cap: accept again when one
    /// finishes.
    pub accept_pending: bool,
    /// An accept failed for lack of fds; the `Accept` timer retries.
    pub accept_backoff: bool,
}

impl ScrapeServer {
    pub(crate) fn new(listener: TcpListener) -> Self {
        ScrapeServer {
            listener,
            clients: 0,
            order: VecDeque::new(),
            accept_pending: false,
            accept_backoff: false,
        }
    }
}

impl Agent {
    /// Accept waiting scraper connections, up to [`MAX_CLIENTS`] at once,
    /// evicting clients that have not sent their request head to make room.
    ///
    /// The listener is edge-triggered: a client left in the backlog brings
    /// no new event, so whoever leaves one there makes sure this runs again
    /// (a client closing, see `after_turn`, or the [`ACCEPT_BACKOFF`] timer).
    pub(crate) fn accept_clients(&mut self) {
        self.scrape.accept_pending = false;
        loop {
            // Accept before evicting: an eviction for a backlog that turns
            // out empty would cut off a client for nothing. The one fd this
            // briefly takes beyond the cap is in `budget::RESERVE`.
            if self.scrape.clients >= MAX_CLIENTS && self.oldest_unanswered_client().is_none() {
                self.scrape.accept_pending = true;
                return;
            }
            let (mut stream, _) = match self.scrape.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of fds (or stranger): the client waits in the
                    // backlog; nothing else is affected.
                    if crate::agent::budget::is_fd_exhaustion(&e) {
                        self.note_fd_exhaustion(&e);
                    } else {
                        message!("cannot accept a metrics client: {e}");
                    }
                    if !self.scrape.accept_backoff {
                        self.scrape.accept_backoff = true;
                        self.timers.insert(Instant::now() + ACCEPT_BACKOFF, Timer::Accept);
                    }
                    return;
                }
            };
            if self.scrape.clients >= MAX_CLIENTS {
                if let Some(old) = self.oldest_unanswered_client() {
                    self.close_conn(old);
                    self.metrics.clients_evicted.inc();
                }
            }
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if self
                .poll
                .registry()
                .register(&mut stream, mio::Token(key), mio::Interest::READABLE | mio::Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            let gen = self.next_gen;
            self.next_gen += 1;
            entry.insert(Conn {
                gen,
                sock: Sock::Tcp(stream),
                connected: true,
                out: Vec::new(),
                out_pos: 0,
                deadlines: Default::default(),
                paused: false,
                role: Role::Scraper(Box::default()),
            });
            self.scrape.clients += 1;
            self.scrape.order.push_back((key, gen));
            if self.scrape.order.len() > 2 * MAX_CLIENTS {
                // Entries of clients gone or answered are otherwise dropped
                // only by an eviction: keep the queue bounded without one.
                let conns = &self.conns;
                self.scrape.order.retain(|&(k, g)| unanswered(conns.get(k), g));
            }
            self.add_timer(key, Instant::now() + HEAD_DEADLINE, ConnTimer::Scraper);
        }
    }

    /// The client accepted longest ago that has not sent its whole request
    /// head. Entries of clients closed or being answered are dropped on the
    /// way: an answered client never needs a head again.
    fn oldest_unanswered_client(&mut self) -> Option<usize> {
        while let Some(&(key, gen)) = self.scrape.order.front() {
            if unanswered(self.conns.get(key), gen) {
                return Some(key);
            }
            self.scrape.order.pop_front();
        }
        None
    }

    pub(crate) fn scraper_data(&mut self, key: usize, data: &[u8]) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let Role::Scraper(client) = &mut conn.role else {
            return false;
        };
        if !conn.out.is_empty() {
            return true; // already answering; ignore anything more
        }
        // Keep one byte past the cap: enough to know the request is too big.
        let room = (MAX_REQUEST + 1).saturating_sub(client.req.len());
        client.req.extend_from_slice(&data[..data.len().min(room)]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let response = match req.parse(&client.req) {
            Ok(httparse::Status::Partial) if client.req.len() > MAX_REQUEST => {
                plain(431, "Request Header Fields Too Large", "request too large\n")
            }
            Ok(httparse::Status::Partial) => return true,
            Err(_) => plain(400, "Bad Request", "bad request\n"),
            Ok(httparse::Status::Complete(_)) => {
                let accept = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("accept"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(str::to_owned);
                let method = req.method.unwrap_or("");
                let path = req.path.unwrap_or("").split('?').next().unwrap_or("").to_owned();
                let head_only = method == "HEAD";
                let mut resp = match (method, path.as_str()) {
                    ("GET" | "HEAD", "/metrics") => self.scrape(accept.as_deref()),
                    ("GET" | "HEAD", "/healthz") => self.health(),
                    ("GET" | "HEAD", "/") => plain(200, "OK", "log-capturer: see /metrics and /healthz\n"),
                    ("GET" | "HEAD", _) => plain(404, "Not Found", "not found: try /metrics or /healthz\n"),
                    _ => method_not_allowed(),
                };
                if head_only {
                    if let Some(end) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
                        resp.truncate(end + 4);
                    }
                }
                resp
            }
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        conn.out = response;
        conn.out_pos = 0;
        // The head deadline is met; taking the response has its own (it
        // replaces the head's: both are the client's one deadline).
        self.add_timer(key, Instant::now() + WRITE_DEADLINE, ConnTimer::Scraper);
        if self.write_out(key).is_err() {
            self.close_conn(key);
        }
        false
    }

    /// Gauges that mirror the loop's state are set from it at scrape time,
    /// so they cannot drift from the truth.
    fn scrape(&mut self, accept: Option<&str>) -> Vec<u8> {
        let streams = self.conns.iter().filter(|(_, c)| matches!(c.role, Role::Logs(_))).count();
        self.metrics.active_streams.set(streams as i64);
        let followed = self
            .containers
            .values()
            .filter(|c| matches!(c.follow, Follow::Streaming(_) | Follow::Inspecting(_) | Follow::Backoff))
            .count();
        self.metrics.containers_followed.set(followed as i64);
        self.metrics.output_buffer_bytes.set(self.output.pending() as i64);
        if let Some(s) = &self.sink {
            s.update_gauges();
        }
        self.metrics.sync_stderr_dropped();
        let format = Format::from_accept(accept);
        let mut body = String::with_capacity(16 * 1024);
        if self.metrics.encode_as(format, &mut body).is_err() {
            return plain(500, "Internal Server Error", "cannot encode metrics\n");
        }
        response(200, "OK", format.content_type(), body.as_bytes())
    }

    fn health(&self) -> Vec<u8> {
        let fresh = self.docker.last_contact.elapsed() < 3 * HEALTH_PING_EVERY;
        let d = &self.docker.discovery;
        let why = if !(self.docker.up && fresh) {
            "Docker is unreachable".to_owned()
        } else if let Some(e) = &d.events.trouble {
            format!("cannot watch Docker events ({e}): containers that start are not followed")
        } else if let Some(e) = &d.list.trouble {
            format!("cannot list containers ({e}): containers already there are not followed")
        } else if let Some(t) = self.sink.as_ref().and_then(|s| s.trouble()) {
            t
        } else if let Some(why) = self.sink.as_ref().and_then(|s| s.metadata_off.as_deref()) {
            // Healthy, with what an operator may not expect.
            let note = format!(
                "ok\nnote: the sink does not take structured metadata ({why}): container ids and \
                 images are not shipped\n"
            );
            return plain(200, "OK", &note);
        } else {
            return plain(200, "OK", "ok\n");
        };
        plain(503, "Service Unavailable", &format!("unhealthy: {why}\n"))
    }
}

fn plain(status: u16, reason: &str, body: &str) -> Vec<u8> {
    response(status, reason, "text/plain; charset=utf-8", body.as_bytes())
}

/// 405, with the `Allow` header RFC 9110 requires of it.
fn method_not_allowed() -> Vec<u8> {
    response_with(
        405,
        "Method Not Allowed",
        "text/plain; charset=utf-8",
        "Allow: GET, HEAD\r\n",
        b"only GET and HEAD\n",
    )
}

fn response(status: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    response_with(status, reason, content_type, "", body)
}

/// `extra` is whole header lines, each ending with CRLF.
fn response_with(status: u16, reason: &str, content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The slab entry is still the metrics client of generation `gen`, and it
/// has not sent its whole request head (no response queued).
fn unanswered(conn: Option<&Conn>, gen: u64) -> bool {
    conn.is_some_and(|c| c.gen == gen && matches!(c.role, Role::Scraper(_)) && c.out.is_empty())
}
