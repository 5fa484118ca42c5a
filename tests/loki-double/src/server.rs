//! The server: an accept thread and one blocking thread per connection
//! (plain, or TLS through rustls' `StreamOwned`). Simple on purpose: this
//! is a test double, and the threads make slow or silent answers trivial to
//! produce. Every blocking read has a timeout or ends when the double is
//! dropped (it shuts every socket down), so no thread outlives it.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::http::{self, BodyLen, Head, HeadError};
use crate::proto::RawStream;
use crate::store::{Probe, State};
use crate::time::{http_date, now_ns};
use crate::validate::StructuredMetadata;
use crate::{json, proto, Auth, Config, Fault, RequestRecord};

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Once a request has begun, each read must bring bytes within this long
/// (Loki's `http_server_read_timeout`: 30 s).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A TLS handshake must finish within this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an early answer's connection stays half-closed before the
/// reset: the client must be able to read the answer before its writes
/// fail, or the early answer would test nothing.
const EARLY_HOLD: Duration = Duration::from_secs(1);

/// Faults drawn per push from a seeded generator (splitmix64).
pub(crate) struct RandomFaults {
    state: u64,
    mix: Vec<(f64, Fault)>,
}

impl RandomFaults {
    pub fn new(seed: u64, mix: Vec<(f64, Fault)>) -> RandomFaults {
        RandomFaults { state: seed, mix }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn draw(&mut self) -> Option<Fault> {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let mut acc = 0.0;
        for (p, f) in &self.mix {
            acc += p;
            if u < acc {
                return Some(f.clone());
            }
        }
        None
    }
}

pub(crate) struct Shared {
    pub cfg: Config,
    state: Mutex<State>,
    pub cond: Condvar,
    tls: Option<Arc<ServerConfig>>,
    stopping: AtomicBool,
    /// A handle on every open connection's socket, to shut them down.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The accept thread, while listening (none during an outage).
    acceptor: Mutex<Option<JoinHandle<()>>>,
    /// Bumped to make the accept thread drop its listener: an outage.
    listen_gen: AtomicU64,
    next_conn: AtomicU64,
    random: Mutex<Option<RandomFaults>>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on the state and wake every waiter.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut st = self.lock();
        let r = f(&mut st);
        drop(st);
        self.cond.notify_all();
        r
    }

    pub fn drop_connections(&self) {
        for s in self.sockets.lock().unwrap_or_else(|e| e.into_inner()).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn stop(&self, addr: SocketAddr) {
        self.stopping.store(true, Ordering::SeqCst);
        self.with(|st| st.shutdown = true);
        self.join_acceptor(addr);
        self.drop_connections();
        loop {
            let t = self.threads.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match t {
                Some(t) => {
                    let _ = t.join();
                    // A connection accepted just before the stop flag.
                    self.drop_connections();
                }
                None => break,
            }
        }
    }

    /// Wake the accept thread out of `accept` (it then sees why) and wait
    /// until it has dropped its listener.
    fn join_acceptor(&self, addr: SocketAddr) {
        let t = self.acceptor.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
            let _ = t.join();
        }
    }

    /// Stop listening and close every connection: connecting is refused
    /// until [`Shared::listen`] (Loki down, as its clients see it).
    pub fn outage(&self, addr: SocketAddr) {
        self.listen_gen.fetch_add(1, Ordering::SeqCst);
        self.join_acceptor(addr);
        self.drop_connections();
    }

    /// Listen on `addr` again (after an outage). The port may still be held
    /// for a moment by the old socket: retried for up to 5 s.
    pub fn listen(self: &Arc<Self>, addr: SocketAddr) -> io::Result<()> {
        let mut slot = self.acceptor.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        *slot = Some(spawn_acceptor(self.clone(), listener)?);
        Ok(())
    }

    pub fn set_random(&self, r: Option<RandomFaults>) {
        *self.random.lock().unwrap_or_else(|e| e.into_inner()) = r;
    }

    /// The fault a request gets, decided from its head, before its body is
    /// read: a queued [`Fault::EarlyAnswer`] first in line for this head,
    /// else (no queued fault matches the head) a random draw for a push.
    /// `None` leaves the choice to [`handle`], which sees the body. An
    /// early answer applies only to a body longer than its `after_bytes`
    /// (with a `Content-Length`): one it would read whole is not early.
    fn head_fault(&self, head: &Head) -> Option<Fault> {
        let push = head.method == "POST" && head.path == self.cfg.push_path;
        let tenant = head.get("x-scope-orgid");
        let probe = Probe { push, tenant, streams: None };
        let fits = |f: &Fault| match (f, &head.body) {
            (Fault::EarlyAnswer { after_bytes, .. }, BodyLen::Length(n)) => n > after_bytes,
            (Fault::EarlyAnswer { .. }, _) => false,
            _ => true,
        };
        {
            let mut st = self.lock();
            let first = st.faults.iter().position(|(m, f, n)| *n > 0 && m.matches(&probe) && fits(f));
            if let Some(i) = first {
                if !matches!(st.faults[i].1, Fault::EarlyAnswer { .. }) {
                    return None;
                }
                return take(&mut st, i);
            }
        }
        if !push {
            return None;
        }
        let drawn = self.random.lock().unwrap_or_else(|e| e.into_inner()).as_mut()?.draw()?;
        if !fits(&drawn) {
            return None;
        }
        self.with(|st| st.stats.faults_fired += 1);
        Some(drawn)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Sleep, waking early when the double stops. Returns false if it did.
    fn sleep(&self, d: Duration) -> bool {
        let st = self.lock();
        let (st, _) =
            self.cond.wait_timeout_while(st, d, |st| !st.shutdown).unwrap_or_else(|e| e.into_inner());
        !st.shutdown
    }
}

/// Use up one of queued fault `i`.
fn take(st: &mut State, i: usize) -> Option<Fault> {
    let f = st.faults[i].1.clone();
    st.faults[i].2 -= 1;
    if st.faults[i].2 == 0 {
        st.faults.remove(i);
    }
    st.stats.faults_fired += 1;
    Some(f)
}

/// The first queued fault for a request whose body is read, early answers
/// apart (they are decided at the head).
fn take_after_body(st: &mut State, p: &Probe) -> Option<Fault> {
    let first = st.faults.iter().position(|(m, _, n)| *n > 0 && m.matches(p))?;
    if !matches!(st.faults[first].1, Fault::EarlyAnswer { .. }) {
        return st.take_fault(p);
    }
    let i = st
        .faults
        .iter()
        .position(|(m, f, n)| *n > 0 && !matches!(f, Fault::EarlyAnswer { .. }) && m.matches(p))?;
    take(st, i)
}

pub(crate) fn start(cfg: Config, tls: Option<Arc<ServerConfig>>) -> io::Result<(Arc<Shared>, SocketAddr)> {
    let listener = TcpListener::bind(cfg.listen)?;
    let addr = listener.local_addr()?;
    let keep = cfg.keep_entries;
    let shared = Arc::new(Shared {
        cfg,
        state: Mutex::new(State::new(keep)),
        cond: Condvar::new(),
        tls,
        stopping: AtomicBool::new(false),
        sockets: Mutex::new(HashMap::new()),
        threads: Mutex::new(Vec::new()),
        acceptor: Mutex::new(None),
        listen_gen: AtomicU64::new(0),
        next_conn: AtomicU64::new(0),
        random: Mutex::new(None),
    });
    let t = spawn_acceptor(shared.clone(), listener)?;
    *shared.acceptor.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    Ok((shared, addr))
}

fn spawn_acceptor(shared: Arc<Shared>, listener: TcpListener) -> io::Result<JoinHandle<()>> {
    let generation = shared.listen_gen.load(Ordering::SeqCst);
    std::thread::Builder::new()
        .name("loki-double-accept".into())
        .spawn(move || accept(shared, listener, generation))
}

/// Accept until the double stops or an outage begins (the listener is
/// dropped on return, so connecting is refused from then on).
fn accept(shared: Arc<Shared>, listener: TcpListener, generation: u64) {
    for tcp in listener.incoming() {
        if shared.stopping() || shared.listen_gen.load(Ordering::SeqCst) != generation {
            return;
        }
        let tcp = match tcp {
            Ok(t) => t,
            Err(e) => {
                // Out of descriptors and the like: the backlog keeps the
                // clients waiting.
                eprintln!("loki-double: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(handle) = tcp.try_clone() else { continue };
        shared.sockets.lock().unwrap_or_else(|e| e.into_inner()).insert(id, handle);
        shared.with(|st| {
            st.stats.connections_open += 1;
            st.stats.connections_total += 1;
        });
        let s = shared.clone();
        let spawned = std::thread::Builder::new().name(format!("loki-double-conn-{id}")).spawn(move || {
            let _ = tcp.set_nodelay(true);
            serve(&s, tcp, id);
            s.sockets.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            s.with(|st| st.stats.connections_open -= 1);
        });
        match spawned {
            Ok(t) => {
                let mut threads = shared.threads.lock().unwrap_or_else(|e| e.into_inner());
                threads.retain(|t| !t.is_finished());
                threads.push(t);
            }
            Err(e) => {
                eprintln!("loki-double: spawn: {e}");
                shared.sockets.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                shared.with(|st| st.stats.connections_open -= 1);
            }
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => &s.sock,
        }
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
        }
    }
}

/// What to do with the connection after a request.
enum Action {
    Send {
        bytes: Vec<u8>,
        close: bool,
    },
    /// Write `now` at once, then `slowly` one byte every `every`.
    Dribble {
        now: Vec<u8>,
        slowly: Vec<u8>,
        every: Duration,
        close: bool,
    },
    /// Answer nothing; hold the socket until the client leaves.
    Silence,
    /// Write these bytes, then reset the connection.
    Reset(Vec<u8>),
    /// Wait this long, then as [`Action::Send`].
    Later {
        delay: Duration,
        bytes: Vec<u8>,
        close: bool,
    },
}

fn serve(shared: &Shared, mut tcp: TcpStream, id: u64) {
    let mut io = match &shared.tls {
        None => Io::Plain(tcp),
        Some(cfg) => {
            let _ = tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
            let mut conn = match ServerConnection::new(cfg.clone()) {
                Ok(c) => c,
                Err(_) => return,
            };
            while conn.is_handshaking() {
                if conn.complete_io(&mut tcp).is_err() {
                    shared.with(|st| st.stats.tls_handshake_failures += 1);
                    return;
                }
            }
            Io::Tls(Box::new(StreamOwned::new(conn, tcp)))
        }
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let (head, head_len) = loop {
            match http::parse_head(&buf) {
                Ok(Some(x)) => break x,
                Ok(None) => {}
                Err(e) => {
                    let (status, msg) = match e {
                        HeadError::Bad(m) => (400, m),
                        HeadError::TooLarge => (431, "request header fields too large"),
                    };
                    let date = http_date(now_ns());
                    let _ = io.write_all(&http::error(status, msg, &[], &date, true));
                    shared.with(|st| *st.stats.requests_by_status.entry(status).or_default() += 1);
                    return;
                }
            }
            let timeout = if buf.is_empty() { shared.cfg.idle_timeout } else { READ_TIMEOUT };
            let _ = io.tcp().set_read_timeout(Some(timeout));
            match io.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..head_len);
        let _ = io.tcp().set_read_timeout(Some(READ_TIMEOUT));
        let max = shared.cfg.max_body;
        if let BodyLen::Length(n) = head.body {
            if n > max {
                let msg = format!("request body too large: {n} bytes, limit: {max} bytes");
                let date = http_date(now_ns());
                let _ = io.write_all(&http::error(413, &msg, &[], &date, true));
                shared.with(|st| {
                    st.stats.requests_total += 1;
                    *st.stats.requests_by_status.entry(413).or_default() += 1;
                });
                return;
            }
        }
        if head.expect_continue && io.write_all(http::continue_100()).is_err() {
            return;
        }
        let pre = shared.head_fault(&head);
        if let (Some(Fault::EarlyAnswer { after_bytes, status }), BodyLen::Length(n)) = (&pre, &head.body) {
            let (after_bytes, status, n) = (*after_bytes, *status, *n);
            // Never the whole body (`head_fault` saw it is longer than
            // `after_bytes`): the answer is early whatever the reads bring.
            while buf.len() < after_bytes {
                let room = (n - 1 - buf.len()).min(READ_CHUNK);
                match io.read(&mut chunk[..room]) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            let read = buf.len();
            let bytes = early_answer(shared, id, &head, head_len, read, status, after_bytes);
            if io.write_all(&bytes).and_then(|()| io.flush()).is_ok() {
                let _ = io.tcp().shutdown(Shutdown::Write);
                shared.sleep(EARLY_HOLD);
            }
            reset(io.tcp());
            return;
        }
        let body = match head.body {
            BodyLen::Length(n) => {
                while buf.len() < n {
                    match io.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                buf.drain(..n).collect::<Vec<u8>>()
            }
            BodyLen::Chunked => loop {
                match http::dechunk(&buf, max) {
                    Ok(Some((body, used))) => {
                        buf.drain(..used);
                        break body;
                    }
                    Ok(None) => match io.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    },
                    Err(e) => {
                        let (status, msg) = match e {
                            http::ChunkError::TooLarge => (413, "request body too large"),
                            http::ChunkError::Malformed => (400, "malformed chunked encoding"),
                        };
                        let date = http_date(now_ns());
                        let _ = io.write_all(&http::error(status, msg, &[], &date, true));
                        shared.with(|st| *st.stats.requests_by_status.entry(status).or_default() += 1);
                        return;
                    }
                }
            },
        };
        match handle(shared, id, &head, head_len, body, pre) {
            Action::Later { delay, bytes, close } => {
                if !shared.sleep(delay) || io.write_all(&bytes).and_then(|()| io.flush()).is_err() || close {
                    let _ = io.tcp().shutdown(Shutdown::Both);
                    return;
                }
            }
            Action::Send { bytes, close } => {
                if io.write_all(&bytes).and_then(|()| io.flush()).is_err() || close {
                    let _ = io.tcp().shutdown(Shutdown::Both);
                    return;
                }
            }
            Action::Dribble { now, slowly, every, close } => {
                if io.write_all(&now).and_then(|()| io.flush()).is_err() {
                    return;
                }
                for b in slowly {
                    if !shared.sleep(every) || io.write_all(&[b]).and_then(|()| io.flush()).is_err() {
                        return;
                    }
                }
                if close {
                    let _ = io.tcp().shutdown(Shutdown::Both);
                    return;
                }
            }
            Action::Silence => {
                let _ = io.tcp().set_read_timeout(None);
                while let Ok(n) = io.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                }
                return;
            }
            Action::Reset(bytes) => {
                let _ = io.write_all(&bytes).and_then(|()| io.flush());
                reset(io.tcp());
                return;
            }
        }
    }
}

/// Close with RST: `SO_LINGER` of zero, then close.
fn reset(tcp: &TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt::Linger};
    // No shutdown(2) here: it would send a FIN first. The last descriptor
    // (the registry's clone, dropped right after the thread's) closing
    // with a zero linger sends the RST.
    let _ = setsockopt(&tcp.as_fd(), Linger, &nix::libc::linger { l_onoff: 1, l_linger: 0 });
}

struct Decoded {
    streams: Vec<RawStream>,
    format: String,
}

/// Decompress and decode a push body. Errors are (status, Loki-like text).
fn decode(head: &Head, body: &[u8], max: usize, sm: StructuredMetadata) -> Result<Decoded, (u16, String)> {
    let encoding = head.get("content-encoding").unwrap_or("").trim().to_ascii_lowercase();
    let gz;
    let raw: &[u8] = match encoding.as_str() {
        // Loki takes `snappy` as saying what the protobuf body is anyway.
        "" | "identity" | "snappy" => body,
        "gzip" => {
            let mut out = Vec::new();
            let r = flate2::read::GzDecoder::new(body).take(max as u64 + 1).read_to_end(&mut out);
            if let Err(e) = r {
                return Err((400, format!("gzip: {e}")));
            }
            if out.len() > max {
                return Err((413, format!("request body too large: more than {max} bytes decompressed")));
            }
            gz = out;
            &gz
        }
        other => return Err((400, format!("Content-Encoding {other:?} not supported"))),
    };
    let media =
        head.get("content-type").unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let suffix = if encoding == "gzip" { "+gzip" } else { "" };
    if media == "application/json" {
        let streams = json::decode(raw, sm).map_err(|e| (400, e))?;
        return Ok(Decoded { streams, format: format!("json{suffix}") });
    }
    // Loki takes anything that is not JSON as snappy-compressed protobuf.
    // Go's snappy says "corrupt input" for every bad block, an empty one too.
    let corrupt = |_| (400, "snappy: corrupt input".to_owned());
    let len = snap::raw::decompress_len(raw).map_err(corrupt)?;
    if len > max {
        return Err((413, format!("request body too large: {len} bytes, limit: {max} bytes")));
    }
    let plain = snap::raw::Decoder::new().decompress_vec(raw).map_err(corrupt)?;
    let mut streams = proto::decode(&plain).map_err(|e| (400, format!("proto: {e}")))?;
    if sm == StructuredMetadata::Unknown {
        // An unknown field to Loki 2.8: skipped, the entry stored without it.
        streams.iter_mut().flat_map(|s| &mut s.entries).for_each(|e| e.metadata.clear());
    }
    Ok(Decoded { streams, format: format!("protobuf{suffix}") })
}

fn authorized(auth: &Auth, header: Option<&str>) -> bool {
    let Some(h) = header else { return false };
    match auth {
        Auth::Bearer(token) => h.strip_prefix("Bearer ").is_some_and(|t| t.trim() == token),
        Auth::Basic { user, password } => h
            .strip_prefix("Basic ")
            .and_then(|b| base64_decode(b.trim()))
            .is_some_and(|d| d == format!("{user}:{password}").as_bytes()),
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = A.iter().position(|&a| a == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn status_text(status: u16) -> &'static str {
    match status {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "404 page not found",
        413 => "request body too large",
        500 => "rpc error: code = Internal desc = injected failure",
        502 => "bad gateway",
        503 => "rpc error: code = Unavailable desc = injected failure",
        504 => "gateway timeout",
        _ => "injected failure",
    }
}

/// Record a request answered before its body was read (`read` bytes of
/// it), and the answer: `status` and `Connection: close`.
fn early_answer(
    shared: &Shared,
    conn: u64,
    head: &Head,
    head_len: usize,
    read: usize,
    status: u16,
    after_bytes: usize,
) -> Vec<u8> {
    let date = http_date(now_ns());
    let msg = format!("answered after {read} bytes of the body");
    let bytes = match status {
        204 => http::no_content(&date, true),
        s => http::error(s, &msg, &[], &date, true),
    };
    shared.with(|st| {
        st.stats.requests_total += 1;
        st.stats.bytes_received += (head_len + read) as u64;
        *st.stats.requests_by_status.entry(status).or_default() += 1;
        let seq = st.stats.requests_total;
        if st.keep {
            st.requests.push(RequestRecord {
                seq,
                at: std::time::Instant::now(),
                conn,
                method: head.method.clone(),
                path: head.path.clone(),
                status,
                tenant: head.get("x-scope-orgid").map(str::to_owned),
                content_type: head.get("content-type").map(str::to_owned),
                content_encoding: head.get("content-encoding").map(str::to_owned),
                user_agent: head.get("user-agent").map(str::to_owned),
                body_len: read,
                entries: 0,
                message: Some(msg),
                fault: Some(Fault::EarlyAnswer { after_bytes, status }),
            });
        }
    });
    bytes
}

/// `pre`: the fault [`Shared::head_fault`] chose (else one is taken from
/// the queue here, the body known).
fn handle(
    shared: &Shared,
    conn: u64,
    head: &Head,
    head_len: usize,
    body: Vec<u8>,
    pre: Option<Fault>,
) -> Action {
    let cfg = &shared.cfg;
    let push = head.method == "POST" && head.path == cfg.push_path;
    let tenant = head.get("x-scope-orgid").map(str::to_owned);
    let mut decoded =
        if push { Some(decode(head, &body, cfg.max_body, cfg.structured_metadata)) } else { None };
    let date = http_date(now_ns());
    let close = head.close;

    let mut st = shared.lock();
    st.stats.requests_total += 1;
    st.stats.bytes_received += (head_len + body.len()) as u64;
    let seq = st.stats.requests_total;
    let probe = Probe {
        push,
        tenant: tenant.as_deref(),
        streams: match &decoded {
            Some(Ok(d)) => Some(&d.streams[..]),
            _ => None,
        },
    };
    let fault = match pre {
        Some(f) => Some(f),
        None => take_after_body(&mut st, &probe),
    };
    let mut rec = RequestRecord {
        seq,
        at: std::time::Instant::now(),
        conn,
        method: head.method.clone(),
        path: head.path.clone(),
        status: 0,
        tenant: tenant.clone(),
        content_type: head.get("content-type").map(str::to_owned),
        content_encoding: head.get("content-encoding").map(str::to_owned),
        user_agent: head.get("user-agent").map(str::to_owned),
        body_len: body.len(),
        entries: match &decoded {
            Some(Ok(d)) => d.streams.iter().map(|s| s.entries.len()).sum(),
            _ => 0,
        },
        message: None,
        fault: fault.clone(),
    };

    // The answer the request would get without a fault (storing the push
    // if it is accepted), as (status, message).
    let mut normal = |st: &mut State, reject: Option<(&str, crate::Reason)>| -> (u16, Option<String>) {
        if !push {
            return match (head.method.as_str(), head.path.as_str()) {
                ("GET", "/ready") => (200, None),
                (_, p) if p == cfg.push_path => (405, Some("method not allowed".to_owned())),
                _ => (404, Some("404 page not found".to_owned())),
            };
        }
        if let Some(a) = &cfg.auth {
            if !authorized(a, head.get("authorization")) {
                return (401, Some("unauthorized".to_owned()));
            }
        }
        if cfg.require_tenant && tenant.is_none() {
            return (401, Some("no org id".to_owned()));
        }
        match decoded.take() {
            None => (404, Some("404 page not found".to_owned())),
            Some(Err((status, msg))) => {
                if status == 400 {
                    st.stats.decode_errors += 1;
                }
                (status, Some(msg))
            }
            Some(Ok(d)) => {
                *st.stats.pushes_by_format.entry(d.format).or_default() += 1;
                let out = st.push(
                    &cfg.limits,
                    cfg.structured_metadata,
                    d.streams,
                    tenant.as_deref(),
                    seq,
                    reject,
                    now_ns(),
                );
                match out.message() {
                    Some(m) => (400, Some(m)),
                    None => (204, None),
                }
            }
        }
    };
    let render = |status: u16, msg: &Option<String>, extra: &[(&str, String)]| -> Vec<u8> {
        match (status, msg) {
            (204, _) => http::no_content(&date, close),
            (200, _) => http::text(200, "ready\n", &date),
            (s, m) => http::error(s, m.as_deref().unwrap_or(""), extra, &date, close),
        }
    };

    let (action, status, message) = match fault {
        None => {
            let (s, m) = normal(&mut st, None);
            (Action::Send { bytes: render(s, &m, &[]), close }, s, m)
        }
        Some(Fault::RejectLines { marker, reason }) => {
            let (s, m) = normal(&mut st, Some((&marker, reason)));
            (Action::Send { bytes: render(s, &m, &[]), close }, s, m)
        }
        Some(Fault::RateLimited { retry_after }) => {
            let lines = rec.entries;
            let m = format!(
                "Ingestion rate limit exceeded for user {} (limit: 4194304 bytes/sec) while attempting to ingest '{lines}' lines totaling '{}' bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased",
                tenant.as_deref().unwrap_or("fake"),
                body.len()
            );
            let extra: Vec<(&str, String)> =
                retry_after.map(|n| ("Retry-After", n.to_string())).into_iter().collect();
            let m = Some(m);
            (Action::Send { bytes: render(429, &m, &extra), close }, 429, m)
        }
        Some(Fault::Status(s)) => {
            let m = Some(status_text(s).to_owned());
            (Action::Send { bytes: render(s, &m, &[]), close }, s, m)
        }
        Some(Fault::NeverAnswer) => (Action::Silence, 0, None),
        Some(Fault::SlowBody { len, every }) => {
            let (_, m) = normal(&mut st, None);
            let action =
                Action::Dribble { now: http::ok_head(len, &date), slowly: vec![b'.'; len], every, close };
            (action, 200, m)
        }
        Some(Fault::SlowResponse { every }) => {
            let (s, m) = normal(&mut st, None);
            (Action::Dribble { now: Vec::new(), slowly: render(s, &m, &[]), every, close }, s, m)
        }
        Some(Fault::Late(delay)) => {
            let (s, m) = normal(&mut st, None);
            (Action::Later { delay, bytes: render(s, &m, &[]), close }, s, m)
        }
        Some(Fault::ResetNoAnswer) => (Action::Reset(Vec::new()), 0, None),
        // Handled at the head, before the body (see `Shared::head_fault`).
        Some(Fault::EarlyAnswer { .. }) => unreachable!("an early answer after the body"),
        Some(Fault::ResetMidResponse { stored }) => {
            let (s, m) = if stored { normal(&mut st, None) } else { (204, None) };
            let mut bytes = render(s, &m, &[]);
            let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(bytes.len());
            bytes.truncate(head_end / 2);
            (Action::Reset(bytes), 0, m)
        }
    };
    if status != 0 {
        *st.stats.requests_by_status.entry(status).or_default() += 1;
    }
    rec.status = status;
    rec.message = message;
    if st.keep {
        st.requests.push(rec);
    }
    drop(st);
    shared.cond.notify_all();
    action
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth() {
        let a = Auth::Basic { user: "u".into(), password: "p:w".into() };
        assert!(authorized(&a, Some("Basic dTpwOnc=")));
        assert!(!authorized(&a, Some("Basic dTpwOnx=")));
        assert!(!authorized(&a, Some("Bearer dTpwOnc=")));
        assert!(!authorized(&a, None));
        assert!(authorized(&Auth::Bearer("t0k".into()), Some("Bearer t0k")));
        assert!(!authorized(&Auth::Bearer("t0k".into()), Some("Bearer t0")));
    }
}
