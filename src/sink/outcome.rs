//! What a push's answer means for the batch: acknowledged, rejected for
//! good, retried, or refused because the configuration is wrong. No I/O;
//! the loop acts on it.
//!
//! Loki's answers (see `sinks-notes.md`): 2xx stores everything. 400 means
//! some entries were refused for good (too old, too new, too long, bad
//! labels) **and the rest were stored**, so the batch is never sent again.
//! 429 and 5xx store nothing: the same batch is sent again, forever, with
//! backoff. 401, 403, 404 (and other 4xx), redirects and TLS failures are
//! the operator's to fix: resending at full speed cannot help, so the
//! batch waits and is tried slowly. 413 is that too, and the batch is cut
//! in two.

use std::fmt;
use std::time::Duration;

/// Longest wait a `Retry-After` may ask for: a receiver asking for hours
/// is broken, and the backlog's age is what the operator watches.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Retry interval while the configuration is refused.
pub const REFUSED_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: every line stored.
    Acked,
    /// 400: stored but for the refused entries; never resend.
    Rejected(RejectReason),
    /// Send the same batch again after the backoff (at least `after`).
    Retry { reason: RetryReason, after: Option<Duration> },
    /// The configuration (URL, credentials, TLS, limits) is wrong: keep
    /// everything, tell the operator what to fix, try again slowly.
    Refused { what: String, split: bool },
}

/// `reason` of `log_capturer_sink_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    RateLimited,
    ServerError,
    Connection,
    Timeout,
    Dns,
    Refused,
}

impl RetryReason {
    pub const ALL: [RetryReason; 6] =
        [Self::RateLimited, Self::ServerError, Self::Connection, Self::Timeout, Self::Dns, Self::Refused];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::Connection => "connection",
            Self::Timeout => "timeout",
            Self::Dns => "dns",
            Self::Refused => "refused",
        }
    }
}

/// `reason` of `log_capturer_sink_rejected_lines_total`: why Loki refused
/// entries of a batch, from its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    TooOld,
    TooNew,
    LineTooLong,
    Labels,
    RateLimited,
    Other,
}

impl RejectReason {
    pub const ALL: [RejectReason; 6] =
        [Self::TooOld, Self::TooNew, Self::LineTooLong, Self::Labels, Self::RateLimited, Self::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooOld => "too_old",
            Self::TooNew => "too_new",
            Self::LineTooLong => "line_too_long",
            Self::Labels => "labels",
            Self::RateLimited => "rate_limited",
            Self::Other => "other",
        }
    }

    /// Loki's 400 messages name the problem in words that have been stable
    /// across 2.x and 3.x ("timestamp too old", "too far behind", "too new",
    /// "line too long", "error at least one label pair is invalid"...).
    pub fn from_message(m: &str) -> Self {
        // Loki echoes the stream's labels ('{name="value", …}'): a label
        // value saying "label" or "too old" must not decide the reason.
        let m = without_label_sets(m).to_ascii_lowercase();
        if m.contains("too old") || m.contains("too far behind") || m.contains("out of order") {
            Self::TooOld
        } else if m.contains("too new") || m.contains("too far in the future") {
            Self::TooNew
        } else if m.contains("line too long")
            || m.contains("max entry size")
            || m.contains("max_line_size")
            || m.contains("line size")
        {
            Self::LineTooLong
        } else if m.contains("label") || m.contains("stream selector") {
            Self::Labels
        } else if m.contains("rate limit") || m.contains("ingestion rate") {
            Self::RateLimited
        } else {
            Self::Other
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `m` without its quoted label sets (`'{…}'`).
fn without_label_sets(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    let mut rest = m;
    while let Some(start) = rest.find("'{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}'") {
            Some(end) => rest = &rest[start + end + 2..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// `": message"`, or nothing for an empty one: how an answer's body is
/// quoted after its status.
pub fn said(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The meaning of an answer with `status`; `message` is the start of its
/// body, `retry_after` its `Retry-After` as a wait.
pub fn of_status(status: u16, message: &str, retry_after: Option<Duration>) -> Outcome {
    let after = retry_after.map(|d| d.min(MAX_RETRY_AFTER));
    let said = said(message);
    match status {
        200..=299 => Outcome::Acked,
        400 => Outcome::Rejected(RejectReason::from_message(message)),
        429 => Outcome::Retry { reason: RetryReason::RateLimited, after },
        408 => Outcome::Retry { reason: RetryReason::Timeout, after },
        500..=599 => Outcome::Retry { reason: RetryReason::ServerError, after },
        401 => Outcome::Refused {
            what: format!(
                "401 Unauthorized{said}: check --loki-username with --loki-password-file (or \
                 LOKI_PASSWORD), or --loki-bearer-token-file (or LOKI_BEARER_TOKEN)"
            ),
            split: false,
        },
        403 => Outcome::Refused {
            what: format!("403 Forbidden{said}: the credentials or --loki-tenant are not allowed to push"),
            split: false,
        },
        404 => Outcome::Refused {
            what: format!("404 Not Found{said}: check the path in --loki (Loki's is /loki/api/v1/push)"),
            split: false,
        },
        413 => Outcome::Refused {
            what: format!(
                "413 Payload Too Large{said}: a proxy or Loki limits request bodies below \
                 --loki-batch-bytes; lower it (the batch is cut in two and sent again)"
            ),
            split: true,
        },
        300..=399 => Outcome::Refused {
            what: format!(
                "{status} redirect{said}: point --loki at the final URL (redirects are not followed)"
            ),
            split: false,
        },
        _ => Outcome::Refused { what: format!("answered {status}{said}"), split: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(of_status(204, "", None), Outcome::Acked);
        assert_eq!(
            of_status(429, "", Some(Duration::from_secs(7))),
            Outcome::Retry { reason: RetryReason::RateLimited, after: Some(Duration::from_secs(7)) }
        );
        assert_eq!(
            of_status(503, "", Some(Duration::from_secs(86_400))),
            Outcome::Retry { reason: RetryReason::ServerError, after: Some(MAX_RETRY_AFTER) }
        );
        assert!(matches!(of_status(413, "", None), Outcome::Refused { split: true, .. }));
        for s in [301, 401, 403, 404, 405, 422] {
            assert!(matches!(of_status(s, "", None), Outcome::Refused { split: false, .. }), "{s}");
        }
    }

    #[test]
    fn reasons_from_loki_messages() {
        for (m, r) in [
            ("entry for stream '{a=\"b\"}' has timestamp too old: 2020-01-01", RejectReason::TooOld),
            ("entry with timestamp 2020 ignored, reason: 'entry too far behind'", RejectReason::TooOld),
            ("entry for stream '{a=\"b\"}' has timestamp too new: 2099", RejectReason::TooNew),
            (
                "Max entry size '262144' bytes exceeded for stream '{container=\"web\"}' while adding an entry \
                 with length '300000' bytes",
                RejectReason::LineTooLong,
            ),
            ("stream '{team=\"label-makers\"}': something unknown", RejectReason::Other),
            ("error at least one label pair is invalid", RejectReason::Labels),
            ("something else", RejectReason::Other),
        ] {
            assert_eq!(RejectReason::from_message(m), r, "{m}");
            assert_eq!(of_status(400, m, None), Outcome::Rejected(r));
        }
    }
}
