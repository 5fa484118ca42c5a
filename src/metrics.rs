//! The agent's Prometheus metrics: one [`Metrics`] value owned by the poll
//! loop, no global state, no extra thread.
//!
//! The loop updates typed handles directly (`metrics.bytes.inc_by(n)`,
//! `metrics.active_streams.inc()`) or through the small helpers
//! ([`Metrics::rotation`], [`Metrics::reconnect`], [`Metrics::deadline`],
//! [`Metrics::docker_error`], [`Metrics::line`], …). Every label set is a
//! closed, static set (no container ids: cardinality stays fixed), and every
//! label value is created at start-up so that each series exists at 0 from
//! the first scrape on (`rate()` and `absent()` then behave).
//!
//! The process metrics (`process_open_fds`, `process_cpu_seconds_total`, …,
//! named as the Go client names them) are read from `/proc` only while a
//! scrape is being encoded, by a [`Collector`] registered in the registry.
//!
//! # Exposition format
//!
//! `prometheus-client` writes OpenMetrics text, where a counter family is
//! declared without its `_total` suffix (`# TYPE foo counter`, sample
//! `foo_total`) and the body ends with `# EOF`. A Prometheus-text (0.0.4)
//! parser, such as `promtool check metrics` or a scraper that does not ask for
//! OpenMetrics, reads that `foo_total` as an untyped family without HELP.
//! [`Metrics::encode`] therefore serves the classic Prometheus text format
//! 0.0.4 ([`Metrics::CONTENT_TYPE`]), which every scraper and promtool accept:
//! counter families are declared with their `_total` name, `# EOF` and
//! `# UNIT` are left out. [`Metrics::encode_openmetrics`] gives the library's
//! OpenMetrics text unchanged, to be served with
//! [`Metrics::OPENMETRICS_CONTENT_TYPE`] when the scraper asks for it;
//! [`Format::from_accept`] makes that choice from an `Accept` header.

use std::fmt::{self, Write as _};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use nix::unistd::SysconfVar;

use crate::docker::frame::StreamId;

/// Buckets of `log_capturer_stream_age_seconds`: 1 s to 2 h.
pub const STREAM_AGE_BUCKETS: [f64; 11] =
    [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0];

/// The `kind` values of `log_capturer_docker_errors_total` that exist (at 0)
/// from start-up. [`Metrics::docker_error`] accepts other static kinds too.
pub const DOCKER_ERROR_KINDS: [&str; 7] =
    ["connect", "status_4xx", "status_5xx", "not_found", "driver_unsupported", "protocol", "systemerr"];

/// Implements `as_str`, `ALL` and `EncodeLabelValue` (as the snake_case
/// string, not the Rust identifier the derive would write) for a label enum.
macro_rules! label_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order (`ALL[v as usize] == v`).
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_enum! {
    /// Why a log stream was closed and reopened on purpose.
    RotationReason {
        /// It reached its maximum age.
        Age => "age",
        /// It delivered nothing for the idle timeout.
        Idle => "idle",
    }
}

label_enum! {
    /// Why a log stream had to be reconnected (not a planned rotation).
    ReconnectReason {
        /// The stream ended while the container still runs.
        Eof => "eof",
        /// An I/O or protocol error on the connection.
        Error => "error",
        /// The connect or response-head deadline passed.
        Deadline => "deadline",
        /// The daemon sent an error frame in the stream.
        Daemon => "daemon",
        /// The tail window did not reach the resume point: reopened since-only.
        Catchup => "catchup",
        /// The Docker daemon is unreachable.
        DockerDown => "docker_down",
    }
}

label_enum! {
    /// Which deadline expired.
    DeadlineKind {
        /// Connecting to the Docker socket.
        Connect => "connect",
        /// Receiving a response head.
        Head => "head",
        /// A log stream's idle timeout.
        Idle => "idle",
        /// A log stream's maximum age.
        Age => "age",
        /// A Docker API request (list, inspect, events).
        Api => "api",
        /// A metrics client that did not send its request head or take its
        /// response in time.
        Client => "client",
        /// A push to the sink that was not answered in time.
        Sink => "sink",
    }
}

label_enum! {
    /// The discovery call that failed.
    DiscoveryCall {
        /// The events stream (`GET /events`).
        Events => "events",
        /// The container list (`GET /containers/json`).
        List => "list",
    }
}

label_enum! {
    /// How a discovery call failed.
    DiscoveryFailure {
        /// No connection, or it broke before an answer.
        Connect => "connect",
        /// No answer (connect, head or whole call) within its deadline.
        Deadline => "deadline",
        /// The daemon answered 4xx (e.g. an authorization plugin's 403).
        Status4xx => "status_4xx",
        /// The daemon answered 5xx.
        Status5xx => "status_5xx",
        /// A body that is not HTTP or JSON as Docker writes it.
        Protocol => "protocol",
        /// A list larger than the cap.
        TooLarge => "too_large",
        /// The events stream ended or was closed by the daemon.
        Closed => "closed",
    }
}

label_enum! {
    /// Why a container's resume point was not trusted.
    CheckpointRejection {
        /// A value the agent never writes (damaged or edited checkpoint).
        Invalid => "invalid",
        /// Later than Docker's clock (the clock stepped back, or forged).
        Future => "future",
    }
}

label_enum! {
    /// The container output stream a line came from.
    LogStream {
        Stdout => "stdout",
        Stderr => "stderr",
    }
}

impl LogStream {
    /// The output stream of a frame's stream id: stdout for stdout (and TTY
    /// output, which dockerd reports as stdout), stderr for stderr, `None`
    /// for stdin and the daemon's system-error frames, which are not lines.
    pub fn from_stream_id(id: StreamId) -> Option<Self> {
        match id {
            StreamId::Stdout => Some(Self::Stdout),
            StreamId::Stderr => Some(Self::Stderr),
            StreamId::Stdin | StreamId::SystemErr => None,
        }
    }
}

/// Labels `{reason}` of `log_capturer_stream_rotations_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RotationLabels {
    pub reason: RotationReason,
}

/// Labels `{reason}` of `log_capturer_stream_reconnects_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReconnectLabels {
    pub reason: ReconnectReason,
}

/// Labels `{stream}` of `log_capturer_lines_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StreamLabels {
    pub stream: LogStream,
}

/// Labels `{kind}` of `log_capturer_deadline_expirations_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DeadlineLabels {
    pub kind: DeadlineKind,
}

/// Labels `{call, kind}` of `log_capturer_discovery_failures_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DiscoveryLabels {
    pub call: DiscoveryCall,
    pub kind: DiscoveryFailure,
}

/// Labels `{reason}` of `log_capturer_checkpoints_rejected_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CheckpointRejectionLabels {
    pub reason: CheckpointRejection,
}

/// Labels `{kind}` of `log_capturer_docker_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DockerErrorLabels {
    pub kind: &'static str,
}

/// A counter of seconds, as a float.
pub type SecondsCounter = Counter<f64, AtomicU64>;

/// The exposition format of a scrape response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: [`Metrics::encode`].
    Text,
    /// OpenMetrics 1.0 text: [`Metrics::encode_openmetrics`].
    OpenMetrics,
}

impl Format {
    /// OpenMetrics if the `Accept` header names `application/openmetrics-text`
    /// (Prometheus does, first), the Prometheus text format otherwise.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let wants_om = accept.is_some_and(|a| {
            a.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or("");
                media.eq_ignore_ascii_case("application/openmetrics-text")
                    && !params.any(|p| {
                        p.strip_prefix("q=").and_then(|q| q.parse::<f64>().ok()).is_some_and(|q| q <= 0.0)
                    })
            })
        });
        if wants_om {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => Metrics::CONTENT_TYPE,
            Self::OpenMetrics => Metrics::OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// All metrics of the agent and the registry that encodes them.
///
/// Handles are cheap `Arc`s around atomics: update them from the poll loop
/// directly. Labelled families are best updated through the helper methods,
/// which use handles resolved once at start-up (no hashing, no lock).
#[derive(Debug)]
pub struct Metrics {
    /// `log_capturer_stream_rotations_total{reason}`: see [`Metrics::rotation`].
    pub stream_rotations: Family<RotationLabels, Counter>,
    /// `log_capturer_stream_reconnects_total{reason}`: see [`Metrics::reconnect`].
    pub stream_reconnects: Family<ReconnectLabels, Counter>,
    /// `log_capturer_active_streams`: log connections open right now.
    pub active_streams: Gauge,
    /// `log_capturer_containers_followed`.
    pub containers_followed: Gauge,
    /// `log_capturer_containers_unfollowed`: running but over the stream budget.
    pub containers_unfollowed: Gauge,
    /// `log_capturer_stream_budget`: how many containers may be followed at once.
    pub stream_budget: Gauge,
    /// `log_capturer_fd_exhaustion_total`: connects and accepts that failed for lack of fds.
    pub fd_exhaustion: Counter,
    /// `log_capturer_metrics_clients_evicted_total`: metrics clients closed
    /// before their request head was complete, to make room at the cap.
    pub clients_evicted: Counter,
    /// `log_capturer_lines_total{stream}`: see [`Metrics::line`].
    pub lines: Family<StreamLabels, Counter>,
    /// `log_capturer_bytes_total`: message bytes delivered.
    pub bytes: Counter,
    /// `log_capturer_lines_truncated_total`.
    pub lines_truncated: Counter,
    /// `log_capturer_duplicates_dropped_total`.
    pub duplicates_dropped: Counter,
    /// `log_capturer_deadline_expirations_total{kind}`: see [`Metrics::deadline`].
    pub deadline_expirations: Family<DeadlineLabels, Counter>,
    /// `log_capturer_docker_errors_total{kind}`: see [`Metrics::docker_error`].
    pub docker_errors: Family<DockerErrorLabels, Counter>,
    /// `log_capturer_docker_up`: 1 or 0, see [`Metrics::set_docker_up`].
    pub docker_up: Gauge,
    /// `log_capturer_discovery_failures_total{call,kind}`: see
    /// [`Metrics::discovery_failure`].
    pub discovery_failures: Family<DiscoveryLabels, Counter>,
    /// `log_capturer_stream_age_seconds`, observed by [`Metrics::rotation`].
    pub stream_age_seconds: Histogram,
    /// `log_capturer_output_buffer_bytes`.
    pub output_buffer_bytes: Gauge,
    /// `log_capturer_output_blocked_seconds_total`: see [`Metrics::output_blocked`].
    pub output_blocked_seconds: SecondsCounter,
    /// `log_capturer_checkpoint_writes_total`.
    pub checkpoint_writes: Counter,
    /// `log_capturer_checkpoint_errors_total`.
    pub checkpoint_errors: Counter,
    /// `log_capturer_checkpoint_bytes`: size of the last checkpoint written.
    pub checkpoint_bytes: Gauge,
    /// `log_capturer_checkpoint_durable_writes_total`.
    pub checkpoint_durable_writes: Counter,
    /// `log_capturer_checkpoint_timestamp_seconds`: when the newest
    /// checkpoint began (its resume points are at least that recent).
    pub checkpoint_timestamp: Gauge<f64, AtomicU64>,
    /// `log_capturer_checkpoint_longest_block_seconds`.
    pub checkpoint_longest_block: Gauge<f64, AtomicU64>,
    /// `log_capturer_final_reads_total`: non-follow reads after a container stopped.
    pub final_reads: Counter,
    /// `log_capturer_output_no_space_total`: times the output's filesystem was found full.
    pub output_no_space: Counter,
    /// `log_capturer_output_reopened_total`: file outputs found deleted and created again.
    pub output_reopened: Counter,
    /// `log_capturer_stderr_dropped_total`: set from [`crate::messages::dropped`]
    /// by [`Metrics::sync_stderr_dropped`].
    pub stderr_dropped: Counter,
    /// `log_capturer_checkpoints_rejected_total{reason}`: see [`Metrics::checkpoint_rejected`].
    pub checkpoints_rejected: Family<CheckpointRejectionLabels, Counter>,

    rotation_by: Vec<Counter>,
    reconnect_by: Vec<Counter>,
    lines_by: Vec<Counter>,
    deadline_by: Vec<Counter>,
    rejected_by: Vec<Counter>,
    registry: Registry,
}

/// Register `metric` under `name` and hand it back to be stored.
fn register<M: prometheus_client::registry::Metric + Clone>(
    r: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    r.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// `Content-Type` of [`Metrics::encode`]: Prometheus text format 0.0.4.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
    /// `Content-Type` of [`Metrics::encode_openmetrics`].
    pub const OPENMETRICS_CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// All metrics at zero (every label value present), plus the process
    /// collector.
    pub fn new() -> Self {
        let mut r = Registry::default();
        // Each metric is registered where its field is set: its name and
        // help text once. prometheus-client appends "." to each help text,
        // and "_total" to each counter's name.
        let mut m = Self {
            stream_rotations: register(
                &mut r,
                "log_capturer_stream_rotations",
                "Log streams closed and reopened on purpose, by reason: age = reached the maximum \
                 stream age, idle = nothing received for the idle timeout",
                Family::default(),
            ),
            stream_reconnects: register(
                &mut r,
                "log_capturer_stream_reconnects",
                "Log streams reopened after an unplanned end, by reason: eof = stream ended while the \
                 container runs, error = I/O or protocol error, deadline = connect or response-head \
                 deadline passed, daemon = daemon error frame, catchup = the tail window did not \
                 reach the resume point (reopened since-only), docker_down = Docker unreachable",
                Family::default(),
            ),
            active_streams: register(
                &mut r,
                "log_capturer_active_streams",
                "Log stream connections to the Docker daemon open right now",
                Gauge::default(),
            ),
            containers_followed: register(
                &mut r,
                "log_capturer_containers_followed",
                "Containers whose logs are being followed",
                Gauge::default(),
            ),
            containers_unfollowed: register(
                &mut r,
                "log_capturer_containers_unfollowed",
                "Containers waiting to be followed because the stream budget is used up: their logs \
                 are not being captured yet (they are, oldest first, as slots free)",
                Gauge::default(),
            ),
            stream_budget: register(
                &mut r,
                "log_capturer_stream_budget",
                "Containers the agent may follow at once: the open-files limit minus a reserve, or \
                 --max-streams if lower",
                Gauge::default(),
            ),
            fd_exhaustion: register(
                &mut r,
                "log_capturer_fd_exhaustion",
                "Connects to Docker and accepts of metrics clients that failed for lack of file \
                 descriptors (EMFILE, ENFILE); each is retried with backoff",
                Counter::default(),
            ),
            clients_evicted: register(
                &mut r,
                "log_capturer_metrics_clients_evicted",
                "Clients of /metrics and /healthz closed before they had sent their request head, to \
                 make room for a new one at the client cap; a steady rate means something holds \
                 connections open to the metrics port",
                Counter::default(),
            ),
            lines: register(
                &mut r,
                "log_capturer_lines",
                "Log lines delivered to the output (or, with a sink, handed to it: see \
                 log_capturer_sink_lines_total for those it acknowledged), by container stream",
                Family::default(),
            ),
            bytes: register(
                &mut r,
                "log_capturer_bytes",
                "Message bytes of the log lines delivered to the output",
                Counter::default(),
            ),
            lines_truncated: register(
                &mut r,
                "log_capturer_lines_truncated",
                "Log lines cut at the maximum line length: their tail was dropped",
                Counter::default(),
            ),
            duplicates_dropped: register(
                &mut r,
                "log_capturer_duplicates_dropped",
                "Log lines dropped as already delivered before a reconnect or restart",
                Counter::default(),
            ),
            deadline_expirations: register(
                &mut r,
                "log_capturer_deadline_expirations",
                "Deadlines that expired, by kind: connect, head (response head), idle and age (log \
                 streams), api (Docker API request)",
                Family::default(),
            ),
            docker_errors: register(
                &mut r,
                "log_capturer_docker_errors",
                "Errors talking to the Docker daemon, by kind (connect, status_4xx, status_5xx, \
                 not_found, driver_unsupported = the container's log driver cannot be read, protocol, \
                 systemerr = error frame in a log stream)",
                Family::default(),
            ),
            docker_up: register(
                &mut r,
                "log_capturer_docker_up",
                "1 if the last request to the Docker daemon succeeded, 0 if the daemon is unreachable",
                Gauge::default(),
            ),
            discovery_failures: register(
                &mut r,
                "log_capturer_discovery_failures",
                "Failed attempts to watch Docker events or list containers, by call (events, list) and \
                 kind (connect, deadline, status_4xx, status_5xx, protocol, too_large, closed = the \
                 events stream ended); each is retried with backoff, and /healthz fails meanwhile",
                Family::default(),
            ),
            stream_age_seconds: register(
                &mut r,
                "log_capturer_stream_age_seconds",
                "Age of log streams when they were rotated, in seconds",
                Histogram::new(STREAM_AGE_BUCKETS),
            ),
            output_buffer_bytes: register(
                &mut r,
                "log_capturer_output_buffer_bytes",
                "Bytes buffered for the output and not yet written",
                Gauge::default(),
            ),
            output_blocked_seconds: register(
                &mut r,
                "log_capturer_output_blocked_seconds",
                "Seconds the output was blocked (full) while the agent had lines to write: reading \
                 logs was paused meanwhile",
                SecondsCounter::default(),
            ),
            checkpoint_writes: register(
                &mut r,
                "log_capturer_checkpoint_writes",
                "Checkpoint (resume position) files written",
                Counter::default(),
            ),
            checkpoint_errors: register(
                &mut r,
                "log_capturer_checkpoint_errors",
                "Checkpoint writes that failed: after a restart some lines may be delivered again",
                Counter::default(),
            ),
            checkpoint_bytes: register(
                &mut r,
                "log_capturer_checkpoint_bytes",
                "Size of the last checkpoint file written (~300 bytes per container known, however \
                 busy)",
                Gauge::default(),
            ),
            checkpoint_durable_writes: register(
                &mut r,
                "log_capturer_checkpoint_durable_writes",
                "Checkpoints made durable (output and file synced to disk): what a power cut falls \
                 back to",
                Counter::default(),
            ),
            checkpoint_timestamp: register(
                &mut r,
                "log_capturer_checkpoint_timestamp_seconds",
                "When the newest checkpoint began (Unix time): after a crash of the agent, lines \
                 delivered since are delivered again",
                Gauge::default(),
            ),
            checkpoint_longest_block: register(
                &mut r,
                "log_capturer_checkpoint_longest_block_seconds",
                "The longest one turn of the loop spent on checkpoints (reading streams waits \
                 meanwhile), since the agent started",
                Gauge::default(),
            ),
            final_reads: register(
                &mut r,
                "log_capturer_final_reads",
                "One-off (non-follow) reads of a container's log after it stopped, made once its die \
                 event arrived: dockerd can end a follow stream before it stores the last line",
                Counter::default(),
            ),
            output_no_space: register(
                &mut r,
                "log_capturer_output_no_space",
                "Times the output's filesystem was found full (ENOSPC, EDQUOT): reading log streams \
                 pauses until space returns, nothing is lost",
                Counter::default(),
            ),
            output_reopened: register(
                &mut r,
                "log_capturer_output_reopened",
                "File outputs found deleted while open and created again at their path",
                Counter::default(),
            ),
            stderr_dropped: register(
                &mut r,
                "log_capturer_stderr_dropped",
                "Operator messages not written to stderr because it would have blocked (a stalled \
                 reader, or stderr sharing a full nonblocking pipe with stdout)",
                Counter::default(),
            ),
            checkpoints_rejected: register(
                &mut r,
                "log_capturer_checkpoints_rejected",
                "Containers whose resume point was not trusted, by reason: invalid = a value the agent \
                 never writes (damaged or edited checkpoint), future = later than Docker's clock (the \
                 clock stepped back, or forged); each then had its whole retained log read again \
                 (lines repeated, none lost)",
                Family::default(),
            ),
            rotation_by: Vec::new(),
            reconnect_by: Vec::new(),
            lines_by: Vec::new(),
            deadline_by: Vec::new(),
            rejected_by: Vec::new(),
            registry: Registry::default(),
        };
        r.register_collector(Box::new(ProcessCollector));
        m.registry = r;

        // Every label value exists at 0 from the first scrape on, and the
        // hot paths count through handles resolved here.
        for kind in DOCKER_ERROR_KINDS {
            m.docker_errors.get_or_create_owned(&DockerErrorLabels { kind });
        }
        for &call in DiscoveryCall::ALL {
            for &kind in DiscoveryFailure::ALL {
                m.discovery_failures.get_or_create_owned(&DiscoveryLabels { call, kind });
            }
        }
        m.rotation_by = RotationReason::ALL
            .iter()
            .map(|&reason| m.stream_rotations.get_or_create_owned(&RotationLabels { reason }))
            .collect();
        m.reconnect_by = ReconnectReason::ALL
            .iter()
            .map(|&reason| m.stream_reconnects.get_or_create_owned(&ReconnectLabels { reason }))
            .collect();
        m.lines_by = LogStream::ALL
            .iter()
            .map(|&stream| m.lines.get_or_create_owned(&StreamLabels { stream }))
            .collect();
        m.deadline_by = DeadlineKind::ALL
            .iter()
            .map(|&kind| m.deadline_expirations.get_or_create_owned(&DeadlineLabels { kind }))
            .collect();
        m.rejected_by = CheckpointRejection::ALL
            .iter()
            .map(|&reason| m.checkpoints_rejected.get_or_create_owned(&CheckpointRejectionLabels { reason }))
            .collect();

        m
    }

    /// Bring `log_capturer_stderr_dropped_total` up to the process-wide count.
    pub fn sync_stderr_dropped(&self) {
        let now = crate::messages::dropped();
        self.stderr_dropped.inc_by(now.saturating_sub(self.stderr_dropped.get()));
    }

    /// A stream was rotated at `age`: counts it and observes its age.
    pub fn rotation(&self, reason: RotationReason, age: Duration) {
        self.rotation_by[reason as usize].inc();
        self.stream_age_seconds.observe(age.as_secs_f64());
    }

    /// A stream is being reconnected for `reason`.
    pub fn reconnect(&self, reason: ReconnectReason) {
        self.reconnect_by[reason as usize].inc();
    }

    /// A container's resume point was not trusted for `reason`.
    pub fn checkpoint_rejected(&self, reason: CheckpointRejection) {
        self.rejected_by[reason as usize].inc();
    }

    /// A deadline of `kind` expired.
    pub fn deadline(&self, kind: DeadlineKind) {
        self.deadline_by[kind as usize].inc();
    }

    /// An error talking to Docker. `kind` should be one of
    /// [`DOCKER_ERROR_KINDS`]; another kind is accepted but must stay a fixed
    /// word (never an id or a message), and appears only once it happened.
    pub fn docker_error(&self, kind: &'static str) {
        self.docker_errors.get_or_create(&DockerErrorLabels { kind }).inc();
    }

    /// A discovery call failed.
    pub fn discovery_failure(&self, call: DiscoveryCall, kind: DiscoveryFailure) {
        self.discovery_failures.get_or_create(&DiscoveryLabels { call, kind }).inc();
    }

    /// One line of `message_len` bytes was delivered.
    pub fn line(&self, stream: LogStream, message_len: usize) {
        self.lines_by[stream as usize].inc();
        self.bytes.inc_by(message_len as u64);
    }

    /// Sets `log_capturer_docker_up`.
    pub fn set_docker_up(&self, up: bool) {
        self.docker_up.set(i64::from(up));
    }

    /// The output was blocked for `blocked`.
    pub fn output_blocked(&self, blocked: Duration) {
        self.output_blocked_seconds.inc_by(blocked.as_secs_f64());
    }

    /// Appends the whole exposition in Prometheus text format 0.0.4 (serve
    /// with [`Metrics::CONTENT_TYPE`]) to `out`. Reads `/proc` for the
    /// process metrics.
    pub fn encode(&self, out: &mut String) -> fmt::Result {
        let mut om = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode_registry(&mut om, &self.registry)?;
        openmetrics_to_text(&om, out)
    }

    /// The registry, for the parts registered only when configured (the
    /// sink's metrics).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Appends the whole exposition as OpenMetrics text, `# EOF` included
    /// (serve with [`Metrics::OPENMETRICS_CONTENT_TYPE`]), to `out`.
    pub fn encode_openmetrics(&self, out: &mut String) -> fmt::Result {
        prometheus_client::encoding::text::encode(out, &self.registry)
    }

    /// Appends the exposition in `format` to `out`.
    pub fn encode_as(&self, format: Format, out: &mut String) -> fmt::Result {
        match format {
            Format::Text => self.encode(out),
            Format::OpenMetrics => self.encode_openmetrics(out),
        }
    }
}

/// Rewrites prometheus-client's OpenMetrics text as Prometheus text 0.0.4:
/// counter families are declared under their `_total` sample name (info
/// families under `_info`, as gauges), `# UNIT` and `# EOF` are dropped,
/// types without a 0.0.4 equivalent become `untyped`. Sample lines are the
/// same in both formats (this registry has no exemplars and no timestamps).
fn openmetrics_to_text(om: &str, out: &mut String) -> fmt::Result {
    let mut help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = help.take() {
                writeln!(out, "# HELP {name} {text}")?;
            }
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "gauge" | "histogram" | "summary" => ("", kind),
                _ => ("", "untyped"),
            };
            match help.take() {
                Some((hname, text)) if hname == name => writeln!(out, "# HELP {name}{suffix} {text}")?,
                Some((hname, text)) => writeln!(out, "# HELP {hname} {text}")?,
                None => {}
            }
            writeln!(out, "# TYPE {name}{suffix} {kind}")?;
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            if let Some((name, text)) = help.take() {
                writeln!(out, "# HELP {name} {text}")?;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some((name, text)) = help {
        writeln!(out, "# HELP {name} {text}")?;
    }
    Ok(())
}

/// The standard `process_*` metrics, read from `/proc` when encoded. A value
/// that cannot be read is left out rather than failing the scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let stat = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| ProcStat::parse(&s));
        let ticks = sysconf_or(SysconfVar::CLK_TCK, 100.0);
        let page = sysconf_or(SysconfVar::PAGE_SIZE, 4096.0);

        if let Some(st) = &stat {
            let cpu = ConstCounter::new((st.utime + st.stime) as f64 / ticks);
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                cpu.metric_type(),
            )?;
            cpu.encode(m)?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(&mut encoder, "process_open_fds", "Number of open file descriptors.", fds.count() as i64)?;
        }
        if let Ok((soft, _hard)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors (soft limit).",
                soft as f64,
            )?;
        }
        if let Some(st) = &stat {
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                st.vsize as f64,
            )?;
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                st.rss_pages as f64 * page,
            )?;
            gauge(&mut encoder, "process_threads", "Number of OS threads in the process.", st.num_threads)?;
            if let Some(btime) = boot_time() {
                gauge(
                    &mut encoder,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    btime as f64 + st.starttime as f64 / ticks,
                )?;
            }
        }
        Ok(())
    }
}

fn gauge<N: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> fmt::Result {
    let g = ConstGauge::new(value);
    let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// `sysconf(name)`, or `default` if it has no value.
fn sysconf_or(name: SysconfVar, default: f64) -> f64 {
    match nix::unistd::sysconf(name) {
        Ok(Some(v)) if v > 0 => v as f64,
        _ => default,
    }
}

/// The fields of `/proc/self/stat` the process metrics need.
#[derive(Debug, PartialEq)]
struct ProcStat {
    utime: u64,
    stime: u64,
    num_threads: i64,
    starttime: u64,
    vsize: u64,
    rss_pages: i64,
}

impl ProcStat {
    /// Parses proc(5)'s `stat` line. The command name (field 2) is in
    /// parentheses and may hold spaces and parentheses itself, so fields are
    /// counted from the last `)`.
    fn parse(s: &str) -> Option<Self> {
        let rest = &s[s.rfind(')')? + 1..];
        // rest's first field is field 3 (state).
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).copied();
        Some(Self {
            utime: field(14)?.parse().ok()?,
            stime: field(15)?.parse().ok()?,
            num_threads: field(20)?.parse().ok()?,
            starttime: field(22)?.parse().ok()?,
            vsize: field(23)?.parse().ok()?,
            rss_pages: field(24)?.parse().ok()?,
        })
    }
}

/// Boot time in seconds since the epoch: `btime` of `/proc/stat`.
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        let mut out = String::new();
        m.encode(&mut out).unwrap();
        out
    }

    /// The value of the sample line that starts with `series ` exactly.
    fn value(exposition: &str, series: &str) -> f64 {
        let prefix = format!("{series} ");
        let line = exposition
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no sample {series} in:\n{exposition}"));
        line[prefix.len()..].trim().parse().unwrap()
    }

    /// (name as declared in the text format, type)
    const FAMILIES: &[(&str, &str)] = &[
        ("log_capturer_stream_rotations_total", "counter"),
        ("log_capturer_stream_reconnects_total", "counter"),
        ("log_capturer_active_streams", "gauge"),
        ("log_capturer_containers_followed", "gauge"),
        ("log_capturer_containers_unfollowed", "gauge"),
        ("log_capturer_stream_budget", "gauge"),
        ("log_capturer_fd_exhaustion_total", "counter"),
        ("log_capturer_metrics_clients_evicted_total", "counter"),
        ("log_capturer_lines_total", "counter"),
        ("log_capturer_bytes_total", "counter"),
        ("log_capturer_lines_truncated_total", "counter"),
        ("log_capturer_duplicates_dropped_total", "counter"),
        ("log_capturer_deadline_expirations_total", "counter"),
        ("log_capturer_docker_errors_total", "counter"),
        ("log_capturer_docker_up", "gauge"),
        ("log_capturer_discovery_failures_total", "counter"),
        ("log_capturer_stream_age_seconds", "histogram"),
        ("log_capturer_output_buffer_bytes", "gauge"),
        ("log_capturer_output_blocked_seconds_total", "counter"),
        ("log_capturer_checkpoint_writes_total", "counter"),
        ("log_capturer_checkpoint_errors_total", "counter"),
        ("log_capturer_checkpoint_bytes", "gauge"),
        ("log_capturer_checkpoint_durable_writes_total", "counter"),
        ("log_capturer_checkpoint_timestamp_seconds", "gauge"),
        ("log_capturer_checkpoint_longest_block_seconds", "gauge"),
        ("log_capturer_final_reads_total", "counter"),
        ("log_capturer_output_no_space_total", "counter"),
        ("log_capturer_output_reopened_total", "counter"),
        ("log_capturer_stderr_dropped_total", "counter"),
        ("log_capturer_checkpoints_rejected_total", "counter"),
        ("process_cpu_seconds_total", "counter"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_threads", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ];

    #[test]
    fn counters_move_and_appear() {
        let m = Metrics::new();
        let s = text(&m);
        assert_eq!(value(&s, r#"log_capturer_stream_rotations_total{reason="age"}"#), 0.0);
        assert_eq!(value(&s, r#"log_capturer_docker_errors_total{kind="status_5xx"}"#), 0.0);

        m.rotation(RotationReason::Age, Duration::from_secs(90));
        m.rotation(RotationReason::Idle, Duration::from_millis(500));
        m.reconnect(ReconnectReason::Eof);
        m.reconnect(ReconnectReason::Eof);
        m.reconnect(ReconnectReason::DockerDown);
        m.deadline(DeadlineKind::Head);
        m.docker_error("status_5xx");
        m.docker_error("made_up");
        m.line(LogStream::Stdout, 10);
        m.line(LogStream::Stderr, 5);
        m.line(LogStream::Stdout, 1);
        m.lines_truncated.inc();
        m.duplicates_dropped.inc_by(3);
        m.active_streams.inc();
        m.active_streams.inc();
        m.active_streams.dec();
        m.containers_followed.set(7);
        m.set_docker_up(true);
        m.output_buffer_bytes.set(4096);
        m.output_blocked(Duration::from_millis(1500));
        m.checkpoint_writes.inc();
        m.checkpoint_errors.inc();
        m.checkpoint_rejected(CheckpointRejection::Future);

        let s = text(&m);
        let v = |series: &str| value(&s, series);
        assert_eq!(v(r#"log_capturer_stream_rotations_total{reason="age"}"#), 1.0);
        assert_eq!(v(r#"log_capturer_stream_rotations_total{reason="idle"}"#), 1.0);
        assert_eq!(v(r#"log_capturer_stream_reconnects_total{reason="eof"}"#), 2.0);
        assert_eq!(v(r#"log_capturer_stream_reconnects_total{reason="docker_down"}"#), 1.0);
        assert_eq!(v(r#"log_capturer_stream_reconnects_total{reason="catchup"}"#), 0.0);
        assert_eq!(v(r#"log_capturer_deadline_expirations_total{kind="head"}"#), 1.0);
        assert_eq!(v(r#"log_capturer_deadline_expirations_total{kind="api"}"#), 0.0);
        assert_eq!(v(r#"log_capturer_docker_errors_total{kind="status_5xx"}"#), 1.0);
        assert_eq!(v(r#"log_capturer_docker_errors_total{kind="made_up"}"#), 1.0);
        assert_eq!(v(r#"log_capturer_lines_total{stream="stdout"}"#), 2.0);
        assert_eq!(v(r#"log_capturer_lines_total{stream="stderr"}"#), 1.0);
        assert_eq!(v("log_capturer_bytes_total"), 16.0);
        assert_eq!(v("log_capturer_lines_truncated_total"), 1.0);
        assert_eq!(v("log_capturer_duplicates_dropped_total"), 3.0);
        assert_eq!(v("log_capturer_active_streams"), 1.0);
        assert_eq!(v("log_capturer_containers_followed"), 7.0);
        assert_eq!(v("log_capturer_docker_up"), 1.0);
        assert_eq!(v("log_capturer_output_buffer_bytes"), 4096.0);
        assert_eq!(v("log_capturer_output_blocked_seconds_total"), 1.5);
        assert_eq!(v("log_capturer_checkpoint_writes_total"), 1.0);
        assert_eq!(v("log_capturer_checkpoint_errors_total"), 1.0);
        assert_eq!(v(r#"log_capturer_checkpoints_rejected_total{reason="future"}"#), 1.0);
        assert_eq!(v(r#"log_capturer_checkpoints_rejected_total{reason="invalid"}"#), 0.0);
        assert_eq!(v("log_capturer_stream_age_seconds_count"), 2.0);
        assert_eq!(v("log_capturer_stream_age_seconds_sum"), 90.5);
        assert_eq!(v(r#"log_capturer_stream_age_seconds_bucket{le="1.0"}"#), 1.0);
        assert_eq!(v(r#"log_capturer_stream_age_seconds_bucket{le="60.0"}"#), 1.0);
        assert_eq!(v(r#"log_capturer_stream_age_seconds_bucket{le="120.0"}"#), 2.0);
        assert_eq!(v(r#"log_capturer_stream_age_seconds_bucket{le="7200.0"}"#), 2.0);
        assert_eq!(v(r#"log_capturer_stream_age_seconds_bucket{le="+Inf"}"#), 2.0);

        // The public families and the helpers' cached handles are the same series.
        m.stream_reconnects.get_or_create(&ReconnectLabels { reason: ReconnectReason::Catchup }).inc();
        m.set_docker_up(false);
        let s = text(&m);
        assert_eq!(value(&s, r#"log_capturer_stream_reconnects_total{reason="catchup"}"#), 1.0);
        assert_eq!(value(&s, "log_capturer_docker_up"), 0.0);
    }

    #[test]
    fn every_family_is_declared_with_help_in_both_formats() {
        let m = Metrics::new();
        let s = text(&m);
        let mut om = String::new();
        m.encode_openmetrics(&mut om).unwrap();
        assert!(om.ends_with("# EOF\n"));
        assert!(!s.contains("# EOF"));
        for (name, kind) in FAMILIES {
            assert!(s.contains(&format!("\n# TYPE {name} {kind}\n")), "{name} in:\n{s}");
            assert!(s.contains(&format!("# HELP {name} ")), "help of {name}");
            let om_name = name.strip_suffix("_total").unwrap_or(name);
            assert!(om.contains(&format!("# TYPE {om_name} {kind}\n")), "{om_name} in:\n{om}");
            assert!(om.contains(&format!("# HELP {om_name} ")), "help of {om_name}");
        }
        // Nothing declared twice, no stray "_total_total".
        assert_eq!(s.matches("# TYPE ").count(), FAMILIES.len());
        assert!(!s.contains("_total_total"));
    }

    #[test]
    fn process_metrics_are_plausible() {
        let m = Metrics::new();
        let s = text(&m);
        let v = |series: &str| value(&s, series);
        let open = v("process_open_fds");
        assert!(open > 0.0, "{open}");
        assert!(v("process_max_fds") >= open);
        assert!(v("process_threads") >= 1.0);
        let rss = v("process_resident_memory_bytes");
        assert!(rss > 0.0, "{rss}");
        assert!(v("process_virtual_memory_bytes") >= rss);
        assert!(v("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let start = v("process_start_time_seconds");
        // Started after 2020 and not in the future (btime is rounded to 1 s).
        assert!(start > 1.5e9 && start <= now + 2.0, "start {start}, now {now}");
    }

    #[test]
    fn proc_stat_parses_after_the_last_parenthesis() {
        let line = "4242 (we(ird) c) md) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 50 0 0 20 0 3 0 123456 104857600 2560 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                utime: 250,
                stime: 50,
                num_threads: 3,
                starttime: 123456,
                vsize: 104857600,
                rss_pages: 2560,
            })
        );
        assert_eq!(ProcStat::parse("1 (x) S 1 2"), None);
        assert_eq!(ProcStat::parse(""), None);
    }

    #[test]
    fn openmetrics_is_rewritten_as_prometheus_text() {
        let om = "# HELP a_things Things.\n# TYPE a_things counter\n\
                  a_things_total{k=\"v\"} 1\n\
                  # HELP b_bytes Bytes.\n# TYPE b_bytes gauge\n# UNIT b_bytes bytes\nb_bytes 2\n\
                  # HELP c_build Build.\n# TYPE c_build info\nc_build_info{v=\"1\"} 1\n\
                  # HELP d_x X.\n# TYPE d_x unknown\nd_x 3\n# EOF\n";
        let mut out = String::new();
        openmetrics_to_text(om, &mut out).unwrap();
        assert_eq!(
            out,
            "# HELP a_things_total Things.\n# TYPE a_things_total counter\n\
             a_things_total{k=\"v\"} 1\n\
             # HELP b_bytes Bytes.\n# TYPE b_bytes gauge\nb_bytes 2\n\
             # HELP c_build_info Build.\n# TYPE c_build_info gauge\nc_build_info{v=\"1\"} 1\n\
             # HELP d_x X.\n# TYPE d_x untyped\nd_x 3\n"
        );
    }

    #[test]
    fn format_follows_the_accept_header() {
        // Prometheus 2.x's scrape Accept header.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                    version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Text);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
        assert_eq!(Format::from_accept(Some("application/openmetrics-text; q=0, text/plain")), Format::Text);
        assert_eq!(Format::Text.content_type(), Metrics::CONTENT_TYPE);
        assert_eq!(Format::OpenMetrics.content_type(), Metrics::OPENMETRICS_CONTENT_TYPE);
    }

    /// `promtool check metrics` (Prometheus text format parser and linter)
    /// accepts the exposition, with some of every series moved off zero.
    #[test]
    fn promtool_accepts_the_exposition() {
        let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
            .into_iter()
            .map(std::path::Path::new)
            .find(|p| p.exists());
        let Some(promtool) = promtool else {
            println!("promtool not installed (apt-get install prometheus): check skipped");
            return;
        };
        let m = Metrics::new();
        m.rotation(RotationReason::Age, Duration::from_secs(3600));
        m.reconnect(ReconnectReason::Error);
        m.line(LogStream::Stderr, 42);
        m.output_blocked(Duration::from_micros(1));
        m.docker_error("connect");
        let s = text(&m);
        let path = std::env::temp_dir().join(format!("log-capturer-metrics-{}.prom", std::process::id()));
        std::fs::write(&path, &s).unwrap();
        let output = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            output.status.success(),
            "promtool check metrics failed ({}):\n{}{}\n--- exposition:\n{s}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}
