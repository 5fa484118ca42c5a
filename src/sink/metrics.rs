//! The sink's metrics, registered only when a sink is configured (a
//! `log_capturer_sink_up 0` on an agent writing a file would page someone).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::sink::outcome::{RejectReason, RetryReason};

/// Push durations, seconds: a LAN Loki answers in milliseconds, a loaded
/// one or a far one in seconds; the deadline is 30 s by default.
pub const DURATION_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// `result` of `log_capturer_sink_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestResult {
    Ok,
    Rejected,
    Retry,
    Refused,
}

impl RequestResult {
    pub const ALL: [RequestResult; 4] = [Self::Ok, Self::Rejected, Self::Retry, Self::Refused];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::Retry => "retry",
            Self::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone)]
pub struct SinkMetrics {
    pub up: Gauge,
    requests: Vec<Counter>,
    pub lines: Counter,
    pub bytes: Counter,
    pub duration: Histogram,
    retries: Vec<Counter>,
    rejected: Vec<Counter>,
    pub queue_bytes: Gauge,
    pub backlog_age_seconds: Gauge,
    /// +Inf while no followed container's driver rotates (or its rate is
    /// not known yet).
    pub retention_headroom_seconds: Gauge<f64, AtomicU64>,
    lines_cut: Counter,
    pub structured_metadata_enabled: Gauge,
    pub hedges: Counter,
}

impl SinkMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let up = Gauge::default();
        r.register(
            "log_capturer_sink_up",
            "1 if the sink's last push was answered (accepted, or rejected for good in part), 0 while \
             pushes fail or the configuration is refused",
            up.clone(),
        );
        let requests_family = Family::<ResultLabel, Counter>::default();
        r.register(
            "log_capturer_sink_requests",
            "Pushes to the sink by result: ok = acknowledged, rejected = some lines refused for good \
             (400 naming entries: too old, too new, too long; the rest stored, not sent again), retry \
             = failed and sent again (429, 5xx, connection, deadline, an answer before the push was \
             sent whole), refused = the configuration or the whole request is refused (401, 403, \
             404, 413, TLS, a 400 refusing the whole push): its lines wait, tried again slowly",
            requests_family.clone(),
        );
        let requests = RequestResult::ALL
            .iter()
            .map(|r| requests_family.get_or_create(&ResultLabel { result: r.as_str() }).clone())
            .collect();
        let lines = Counter::default();
        r.register(
            "log_capturer_sink_lines",
            "Log lines the sink answered for good: acknowledged (2xx), or in a push it rejected in \
             part (400; also counted in log_capturer_sink_rejected_lines_total)",
            lines.clone(),
        );
        let bytes = Counter::default();
        r.register(
            "log_capturer_sink_bytes",
            "Bytes of push requests sent to the sink (heads and compressed bodies, retries included)",
            bytes.clone(),
        );
        let duration = Histogram::new(DURATION_BUCKETS);
        r.register(
            "log_capturer_sink_request_duration_seconds",
            "Time from sending a push to its answer, in seconds",
            duration.clone(),
        );
        let retries_family = Family::<ReasonLabel, Counter>::default();
        r.register(
            "log_capturer_sink_retries",
            "Pushes sent again, by reason: rate_limited (429), server_error (5xx), connection, timeout \
             (no answer within --sink-timeout), dns (the sink's name did not resolve), refused (the \
             configuration or the whole request was refused; tried every 10 s), early_answer (answered \
             before the push was sent whole: not an acknowledgement)",
            retries_family.clone(),
        );
        let retries = RetryReason::ALL
            .iter()
            .map(|r| retries_family.get_or_create(&ReasonLabel { reason: r.as_str() }).clone())
            .collect();
        let rejected_family = Family::<ReasonLabel, Counter>::default();
        r.register(
            "log_capturer_sink_rejected_lines",
            "Lines the sink refused for good (400) and that are not sent again, by the reason in its \
             answer: too_old, too_new, line_too_long (Loki stores the other lines of such a push; the \
             count is the refusals its answer lists: at least one per such push). A 400 that refuses a whole push drops nothing: \
             it is counted as refused in log_capturer_sink_requests_total",
            rejected_family.clone(),
        );
        let rejected = RejectReason::ALL
            .iter()
            .map(|r| rejected_family.get_or_create(&ReasonLabel { reason: r.as_str() }).clone())
            .collect();
        let queue_bytes = Gauge::default();
        r.register(
            "log_capturer_sink_queue_bytes",
            "Bytes held for the sink: batches waiting for acknowledgement and the batch being filled; \
             at --sink-queue-bytes, log streams pause",
            queue_bytes.clone(),
        );
        let backlog_age_seconds = Gauge::default();
        r.register(
            "log_capturer_sink_backlog_age_seconds",
            "Age of the oldest line read and not yet acknowledged by the sink, in seconds (0 when \
             everything read is acknowledged)",
            backlog_age_seconds.clone(),
        );
        let retention_headroom_seconds = Gauge::<f64, AtomicU64>::default();
        retention_headroom_seconds.set(f64::INFINITY);
        r.register(
            "log_capturer_sink_retention_headroom_seconds",
            "Shortest log history, in seconds, that dockerd keeps among the followed containers whose \
             logging driver rotates (json-file or local with max-size/max-file), estimated from each \
             one's write rate: a sink outage longer than this starts to lose lines. +Inf when no \
             followed container's driver rotates. Compare with log_capturer_sink_backlog_age_seconds",
            retention_headroom_seconds.clone(),
        );
        let lines_cut = Counter::default();
        r.register(
            "log_capturer_sink_lines_cut",
            "Lines longer than --loki-max-line-bytes, cut and marked truncated=\"true\" (Loki refuses \
             longer lines for good)",
            lines_cut.clone(),
        );
        let structured_metadata_enabled = Gauge::default();
        r.register(
            "log_capturer_sink_structured_metadata_enabled",
            "1 while pushes carry each container's id and image as structured metadata, 0 once the \
             sink refused it and they are left out (--loki-structured-metadata auto), or with never",
            structured_metadata_enabled.clone(),
        );
        let hedges = Counter::default();
        r.register(
            "log_capturer_sink_hedges",
            "Pushes sent a second time on another connection because the first, sent whole, had no \
             answer after --sink-hedge-after (the first answer of the two counts)",
            hedges.clone(),
        );
        Self {
            up,
            hedges,
            structured_metadata_enabled,
            requests,
            lines,
            bytes,
            duration,
            retries,
            rejected,
            queue_bytes,
            backlog_age_seconds,
            retention_headroom_seconds,
            lines_cut,
        }
    }

    /// Lines the batch cut to the line limit.
    pub fn lines_cut(&self, n: usize) {
        self.lines_cut.inc_by(n as u64);
    }

    pub fn request(&self, r: RequestResult) {
        self.requests[r as usize].inc();
    }

    pub fn retry(&self, r: RetryReason) {
        self.retries[r as usize].inc();
    }

    pub fn rejected(&self, r: RejectReason, lines: u64) {
        self.rejected[r as usize].inc_by(lines);
    }
}
