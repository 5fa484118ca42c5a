//! A strict test double of Grafana Loki's push API, for log-capturer's
//! tests and benchmarks.
//!
//! [`Double::start`] listens on TCP (`127.0.0.1:0` by default), plain or
//! TLS (certificates made for the run, see [`Pki`]; optionally requiring a
//! client certificate), and serves `POST /loki/api/v1/push` over HTTP/1.1
//! with keep-alive, one thread per connection.
//!
//! What it reproduces of Loki 3.x (see `/work/shared/sinks-notes.md`):
//!
//! - Bodies: protobuf compressed with snappy's block format (the default,
//!   whatever the `Content-Type` unless it is `application/json`), or JSON;
//!   either may also carry `Content-Encoding: gzip`. Both are decoded here
//!   from the field numbers and the JSON shape, sharing no code with the
//!   agent's encoder. `Content-Length` or chunked request bodies.
//! - Validation as the distributor and ingester do it, with Loki's reasons
//!   and message texts ([`Limits`]), as real Loki 2.8.11 and 2.9.9 were
//!   seen to answer (`tests/loki_parity.rs` runs the same pushes against
//!   both): a label set that does not parse refuses **the whole push**
//!   (nothing stored, good streams neither); `{}`, duplicate names, too
//!   many names, a name or value too long refuse that stream; too old, too
//!   far in the future, line too long, too far behind the stream's newest
//!   entry refuse that entry. Such a push is answered `400` (one refusal's
//!   message, or several grouped as `N errors like: …; …` as 2.9 does) **and
//!   its valid entries are stored**; otherwise `204`. An undecodable body
//!   (bad snappy, protobuf or JSON, an empty one) stores nothing.
//! - Structured metadata ([`StructuredMetadata`]): stored (the default),
//!   refused per entry as 2.9 does by default, or unknown as to 2.8.
//! - Dedup: an entry identical to one held (same stream, nanosecond
//!   timestamp and line) is dropped silently and counted.
//! - `X-Scope-OrgID` recorded (a `401 no org id` without it when
//!   required); `Authorization` checked when configured (`401`).
//!
//! Faults are injected per request with [`Double::inject`]. Everything the
//! double saw is visible through [`Double::entries`], [`Double::requests`]
//! and [`Double::stats`]; [`Double::wait_until`] waits on the counters.
//!
//! ```no_run
//! use loki_double::{Config, Double, Fault, Match};
//! let d = Double::start(Config::default()).unwrap();
//! d.inject(Match::Push, Fault::RateLimited { retry_after: Some(1) }, 1);
//! // ... point the agent at d.url() ...
//! assert!(d.wait_until(std::time::Duration::from_secs(5), |s| s.entries_stored >= 10));
//! ```

mod http;
mod json;
mod labels;
mod proto;
mod server;
mod store;
mod time;
mod tls;
mod validate;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use labels::{canonical as canonical_labels, parse as parse_labels, ParseError as LabelParseError};
pub use proto::{decode as decode_protobuf, DecodeError, RawStream};
pub use tls::{Issued, Pki};
pub use validate::{Limits, RawEntry, Reason, Rejection, StructuredMetadata};

/// How the double is set up. [`Config::default`] gives Loki's defaults,
/// plain HTTP on `127.0.0.1:0`, no auth, tenant optional.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// The push endpoint. Other paths answer `404 page not found`, except
    /// `GET /ready` (`200 ready`).
    pub push_path: String,
    pub limits: Limits,
    /// Structured metadata stored (the default), refused as by Loki 2.9's
    /// defaults, or unknown as to Loki 2.8.
    pub structured_metadata: StructuredMetadata,
    pub tls: Option<TlsConfig>,
    pub auth: Option<Auth>,
    /// Answer `401 no org id` to a push without `X-Scope-OrgID`, as Loki
    /// does with `auth_enabled: true`.
    pub require_tenant: bool,
    /// Largest request body, on the wire and decompressed: Loki's
    /// `max_recv_msg_size`, 100 MiB. Larger is a `413`.
    pub max_body: usize,
    /// Close a keep-alive connection idle this long (Loki's
    /// `http_server_idle_timeout`: 120 s).
    pub idle_timeout: Duration,
    /// Keep every stored entry and dedup against them. Off, only counters
    /// move (and duplicates are stored, uncounted): for long benchmarks
    /// whose volume would not fit in memory.
    pub keep_entries: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            push_path: "/loki/api/v1/push".to_owned(),
            limits: Limits::default(),
            structured_metadata: StructuredMetadata::Allowed,
            tls: None,
            auth: None,
            require_tenant: false,
            max_body: 100 << 20,
            idle_timeout: Duration::from_secs(120),
            keep_entries: true,
        }
    }
}

impl Config {
    /// TLS with certificates generated into a fresh temporary directory
    /// (removed when the double is dropped).
    pub fn tls() -> Config {
        Config { tls: Some(TlsConfig::default()), ..Config::default() }
    }
}

#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    /// Where to write the PEM files; a fresh temporary directory if `None`.
    pub dir: Option<PathBuf>,
    /// Serve a `localhost` certificate from a CA the client was not given.
    pub wrong_ca: bool,
    /// Require a client certificate signed by the test CA (mTLS).
    pub require_client_cert: bool,
}

/// Credentials a push must carry (`Authorization` header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Basic { user: String, password: String },
    Bearer(String),
}

/// Which requests a fault applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// Every request, whatever its path.
    Any,
    /// Every push.
    Push,
    /// Pushes with this `X-Scope-OrgID`.
    Tenant(String),
    /// Pushes with at least one entry whose line contains this text (the
    /// body must decode).
    LineContains(String),
}

/// A misbehaviour for the next matching request(s). Unless said otherwise
/// nothing of the request is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `429` with Loki's rate-limit message and `Retry-After: N` if given.
    RateLimited { retry_after: Option<u64> },
    /// This status with a short text body (401, 403, 404, 413, 500, 503...).
    Status(u16),
    /// Read the request and send nothing, ever; the socket stays open until
    /// the client closes it.
    NeverAnswer,
    /// Store the push as usual, then answer `200` with `Content-Length:
    /// len` and send the body one byte every `every`.
    SlowBody { len: usize, every: Duration },
    /// Store the push as usual, then send the normal answer one byte every
    /// `every`.
    SlowResponse { every: Duration },
    /// Send the first half of the normal answer's head, then reset the
    /// connection (RST). The push is stored first when `stored` (the answer
    /// was lost on its way back) and not otherwise.
    ResetMidResponse { stored: bool },
    /// Entries whose line contains `marker` are refused with `reason`
    /// (Loki's message for it); the rest go through the normal checks and
    /// are stored. `400` when anything was refused.
    RejectLines { marker: String, reason: Reason },
    /// Store the push as usual, then answer normally after this delay (a
    /// slow ingester: the answer may come after the client gave up).
    Late(Duration),
    /// Read the request, store nothing and reset the connection (RST)
    /// without sending a byte.
    ResetNoAnswer,
    /// Read the head and about `after_bytes` of the body (at least that
    /// much, as much as one read brings), then stop reading, answer
    /// `status` with `Connection: close`, half-close, and reset the
    /// connection a second later; nothing is stored. A proxy or a load
    /// balancer that answers before the request is in: whatever the status,
    /// it acknowledges nothing. Decided from the head alone: queued with
    /// [`Double::inject`] it applies to the next request whose head matches
    /// (a [`Match::LineContains`] never does).
    EarlyAnswer { after_bytes: usize, status: u16 },
}

/// One accepted entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The stream, canonically: `{a="1", b="2"}` (names sorted).
    pub labels: String,
    /// Nanoseconds since the epoch.
    pub ts_ns: i64,
    /// The line's bytes as sent.
    pub line: Vec<u8>,
    /// Structured metadata, in the order sent.
    pub metadata: Vec<(String, String)>,
    pub tenant: Option<String>,
    /// The number of the request that stored it (1-based, see
    /// [`RequestRecord::seq`]).
    pub request: u64,
}

impl Entry {
    pub fn line_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.line)
    }

    /// One label's value.
    pub fn label(&self, name: &str) -> Option<String> {
        parse_labels(&self.labels).ok()?.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn meta(&self, name: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One request as the double answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// 1-based, in the order requests were complete.
    pub seq: u64,
    /// When the request was complete (its body read).
    pub at: Instant,
    /// Which connection it came on (1-based, in accept order).
    pub conn: u64,
    pub method: String,
    pub path: String,
    /// The status answered; 0 when no answer was sent (NeverAnswer, a
    /// reset before the status line was complete).
    pub status: u16,
    pub tenant: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub user_agent: Option<String>,
    /// Body bytes on the wire (after de-chunking).
    pub body_len: usize,
    /// Entries in the decoded body (0 if it did not decode).
    pub entries: usize,
    /// The 400 message, or the error text for other failures.
    pub message: Option<String>,
    /// An injected fault was applied.
    pub fault: Option<Fault>,
}

/// An entry's identity for Loki's dedup: stream (canonical labels),
/// nanosecond timestamp, line.
pub type EntryKey = (String, i64, Vec<u8>);

/// Counters of what the double has seen. Snapshot with [`Double::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub connections_open: usize,
    pub connections_total: u64,
    /// Handshakes that failed (the client refused our certificate, sent
    /// none when required, or spoke plain HTTP).
    pub tls_handshake_failures: u64,
    /// Every request read completely, whatever the answer.
    pub requests_total: u64,
    /// Answers by status; requests left unanswered are not counted here.
    pub requests_by_status: BTreeMap<u16, u64>,
    /// Pushes by body format: `protobuf`, `json`, `protobuf+gzip`,
    /// `json+gzip`.
    pub pushes_by_format: BTreeMap<String, u64>,
    /// Request bytes read (heads and bodies, after TLS).
    pub bytes_received: u64,
    /// Entries in decoded pushes that reached validation.
    pub entries_received: u64,
    pub entries_stored: u64,
    /// Line bytes of stored entries.
    pub bytes_stored: u64,
    /// Refused entries by Loki's reason (`greater_than_max_sample_age`,
    /// `line_too_long`, `invalid_labels`...).
    pub entries_rejected: BTreeMap<String, u64>,
    /// Entries identical to one held, not stored again.
    pub duplicates_dropped: u64,
    /// Bodies that did not decompress or decode (answered 400).
    pub decode_errors: u64,
    pub faults_fired: u64,
    /// Stored entries by how long after their timestamp they arrived:
    /// index = whole milliseconds, the last slot everything from
    /// [`LATENCY_SLOTS`] - 1 ms on (and entries stamped ahead of this
    /// clock count as 0).
    pub latency_ms: Vec<u64>,
}

/// Slots of [`Stats::latency_ms`]: 1 ms each up to 10 s.
pub const LATENCY_SLOTS: usize = 10_001;

impl Stats {
    /// The latency at quantile `q` (0..=1) of the stored entries, in ms,
    /// or None before any.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latency_ms.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (ms, n) in self.latency_ms.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(ms as u64);
            }
        }
        None
    }

    pub(crate) fn record_latency(&mut self, ns: i64) {
        if self.latency_ms.is_empty() {
            self.latency_ms = vec![0; LATENCY_SLOTS];
        }
        let ms = usize::try_from(ns.max(0) / 1_000_000).unwrap_or(usize::MAX).min(LATENCY_SLOTS - 1);
        self.latency_ms[ms] += 1;
    }
}

impl Stats {
    pub fn status(&self, status: u16) -> u64 {
        self.requests_by_status.get(&status).copied().unwrap_or(0)
    }

    pub fn rejected(&self, reason: Reason) -> u64 {
        self.entries_rejected.get(reason.as_str()).copied().unwrap_or(0)
    }

    pub fn rejected_total(&self) -> u64 {
        self.entries_rejected.values().sum()
    }

    /// One JSON object, for the binary's output and benchmark logs.
    pub fn to_json(&self) -> String {
        let by_status: serde_json::Map<String, serde_json::Value> =
            self.requests_by_status.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        serde_json::json!({
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
            "tls_handshake_failures": self.tls_handshake_failures,
            "requests_total": self.requests_total,
            "requests_by_status": by_status,
            "pushes_by_format": self.pushes_by_format,
            "bytes_received": self.bytes_received,
            "entries_received": self.entries_received,
            "entries_stored": self.entries_stored,
            "bytes_stored": self.bytes_stored,
            "entries_rejected": self.entries_rejected,
            "duplicates_dropped": self.duplicates_dropped,
            "decode_errors": self.decode_errors,
            "faults_fired": self.faults_fired,
        })
        .to_string()
    }
}

/// A running double. Dropping it closes the listener and every connection
/// and joins every thread.
pub struct Double {
    shared: Arc<server::Shared>,
    addr: SocketAddr,
    pki: Option<Pki>,
    /// A temporary directory we made for the PEM files.
    temp_dir: Option<PathBuf>,
}

impl Double {
    pub fn start(cfg: Config) -> io::Result<Double> {
        let mut temp_dir = None;
        let mut pki = None;
        let mut tls = None;
        if let Some(t) = &cfg.tls {
            let dir = match &t.dir {
                Some(d) => d.clone(),
                None => {
                    static N: AtomicU64 = AtomicU64::new(0);
                    let n = N.fetch_add(1, Ordering::Relaxed);
                    let d = std::env::temp_dir().join(format!("loki-double-{}-{n}", std::process::id()));
                    temp_dir = Some(d.clone());
                    d
                }
            };
            let p = Pki::generate(&dir)?;
            tls = Some(tls::server_config(&p, t.wrong_ca, t.require_client_cert)?);
            pki = Some(p);
        }
        let (shared, addr) = server::start(cfg, tls)?;
        Ok(Double { shared, addr, pki, temp_dir })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/loki/api/v1/push`, or `https://localhost:PORT/...`
    /// with TLS (the certificate names `localhost` and `127.0.0.1`).
    pub fn url(&self) -> String {
        let path = &self.shared.cfg.push_path;
        match self.pki {
            Some(_) => format!("https://localhost:{}{path}", self.addr.port()),
            None => format!("http://{}{path}", self.addr),
        }
    }

    /// The certificates, when serving TLS.
    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_ref()
    }

    /// The next `times` requests matching `m` get `fault`. Faults are
    /// tried in the order injected; each request takes at most one.
    pub fn inject(&self, m: Match, fault: Fault, times: u32) {
        self.shared.with(|st| st.faults.push((m, fault, times)))
    }

    /// Forget the faults queued with [`Double::inject`] (the random mode,
    /// if set, stays).
    pub fn clear_faults(&self) {
        self.shared.with(|st| st.faults.clear())
    }

    /// Random mode: every push whose head matches no queued fault draws
    /// one fault from `mix` (probability, fault), with a generator seeded
    /// by `seed`, or none (a normal answer) with the probability left over.
    /// Replaces any earlier mix. The draws are reproducible for a given
    /// order of pushes.
    pub fn random_faults(&self, seed: u64, mix: Vec<(f64, Fault)>) {
        self.shared.set_random(Some(server::RandomFaults::new(seed, mix)));
    }

    /// Leave the random mode: pushes get queued faults or normal answers.
    pub fn clear_random_faults(&self) {
        self.shared.set_random(None);
    }

    /// Faults not yet used (matcher, fault, times left).
    pub fn pending_faults(&self) -> Vec<(Match, Fault, u32)> {
        self.shared.with(|st| st.faults.clone())
    }

    pub fn stats(&self) -> Stats {
        self.shared.with(|st| st.stats.clone())
    }

    /// Every stored entry, in arrival order (requests in the order their
    /// bodies were complete, entries in body order).
    pub fn entries(&self) -> Vec<Entry> {
        self.shared.with(|st| st.entries.clone())
    }

    /// Stored entries by stream (canonical labels), each in arrival order.
    pub fn streams(&self) -> BTreeMap<String, Vec<Entry>> {
        let mut m: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for e in self.entries() {
            m.entry(e.labels.clone()).or_default().push(e);
        }
        m
    }

    /// Every request read so far, in order (kept only with
    /// [`Config::keep_entries`]).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.with(|st| st.requests.clone())
    }

    /// Wait until `pred` holds for the stats, at most `timeout`; checked
    /// now and after every change. Returns whether it held.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&Stats) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if pred(&st.stats) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.shared.cond.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// How many times each entry reached validation (stored, refused, or
    /// dropped as a duplicate): a count above one is a repeat, whether or
    /// not Loki's dedup absorbed it. Entries of requests answered by a fault
    /// that stores nothing (429, a status, NeverAnswer, a reset before
    /// storing) are not counted. Kept only with [`Config::keep_entries`].
    pub fn arrivals(&self) -> std::collections::HashMap<EntryKey, u32> {
        self.shared.with(|st| st.arrivals.clone())
    }

    /// Close every open connection now (a Loki restart as the client sees
    /// it; the listener stays).
    pub fn drop_connections(&self) {
        self.shared.drop_connections();
    }

    /// Loki goes down: stop listening and close every connection, so
    /// connecting is refused until [`Double::resume`]. What was stored stays.
    pub fn outage(&self) {
        self.shared.outage(self.addr);
    }

    /// Loki comes back, listening on the same address as before.
    pub fn resume(&self) -> io::Result<()> {
        self.shared.listen(self.addr)
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.shared.stop(self.addr);
        if let Some(d) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
