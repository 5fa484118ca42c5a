//! `/metrics` and `/healthz`, served by the same loop: a metrics client is
//! one more connection in the slab, with a deadline like every other.

use crate::message;
use std::io;
use std::time::{Duration, Instant};

use crate::agent::container::Follow;
use crate::agent::event_loop::{Agent, Conn, ConnTimer, Role, Timer, HEALTH_PING_EVERY};
use crate::agent::sock::Sock;
use crate::metrics::Format;

/// Largest request head we read from a scraper.
const MAX_REQUEST: usize = 8 * 1024;
/// A scraper must send its request and take the response within this.
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);
/// More concurrent metrics clients than this wait in the listen backlog:
/// scrapers are few, and each costs an fd (counted in `budget::RESERVE`).
pub(crate) const MAX_CLIENTS: usize = 16;
/// After an accept failed for lack of fds, try again this much later.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Default)]
pub(crate) struct ClientConn {
    req: Vec<u8>,
}

impl Agent {
    /// Accept waiting scraper connections, up to [`MAX_CLIENTS`] at once.
    ///
    /// The listener is edge-triggered: a client left in the backlog brings
    /// no new event, so whoever leaves one there makes sure this runs again
    /// (a client closing, see `after_turn`, or the [`ACCEPT_BACKOFF`] timer).
    pub(crate) fn accept_clients(&mut self) {
        self.accept_pending = false;
        loop {
            if self.clients >= MAX_CLIENTS {
                self.accept_pending = true;
                return;
            }
            let (mut stream, _) = match self.listener.accept() {
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
                    if !self.accept_backoff {
                        self.accept_backoff = true;
                        self.timers.insert(Instant::now() + ACCEPT_BACKOFF, Timer::Accept);
                    }
                    return;
                }
            };
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
                timers: Vec::new(),
                paused: false,
                role: Role::Client(Box::default()),
            });
            self.clients += 1;
            self.add_timer(key, Instant::now() + CLIENT_DEADLINE, ConnTimer::Client);
        }
    }

    pub(crate) fn client_data(&mut self, key: usize, data: &[u8]) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let Role::Client(client) = &mut conn.role else {
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
                    _ => plain(405, "Method Not Allowed", "only GET\n"),
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
        } else if let Some(e) = &d.events_trouble {
            format!("cannot watch Docker events ({e}): containers that start are not followed")
        } else if let Some(e) = &d.list_trouble {
            format!("cannot list containers ({e}): containers already there are not followed")
        } else {
            return plain(200, "OK", "ok\n");
        };
        plain(503, "Service Unavailable", &format!("unhealthy: {why}\n"))
    }
}

fn plain(status: u16, reason: &str, body: &str) -> Vec<u8> {
    response(status, reason, "text/plain; charset=utf-8", body.as_bytes())
}

fn response(status: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}
