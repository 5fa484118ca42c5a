//! What a push's answer means for the batch: acknowledged, some entries
//! refused for good, retried, or refused because something must be fixed.
//! No I/O; the loop acts on it.
//!
//! The policy is taken from real Loki's answers (2.8 and 2.9; see the
//! README's "Shipping to Loki"): success is 2xx (Loki's is `204`). A `400`
//! is one of three things, told apart by its message, one refusal per line:
//!
//! - **Entry-level** ("timestamp too old", "too far behind", "timestamp too
//!   new", "Max entry size … exceeded"): Loki refused those entries and
//!   stored the rest of the push. Sending it again cannot help (they would
//!   be refused again): they are counted per reason and not resent.
//! - **Structured metadata refused** (Loki 2.9 by default, 3.x on an old
//!   schema): the driver sends the same batch again without it.
//! - **Request-level** (a label set Loki cannot parse, duplicate label
//!   names, too many labels, a label value too long, a body it cannot
//!   decode) or a message the agent does not recognise: Loki may have
//!   stored nothing. The lines are never dropped: the batch waits, the
//!   operator is told what to fix, and it is tried again slowly (a resend of
//!   what Loki did store is dropped by Loki as a duplicate).
//!
//! 429 and 5xx store nothing the agent can rely on: the same batch goes
//! again with backoff (after a per-stream 429 Loki holds part of the push,
//! and drops those entries of the resend as duplicates). 401, 403, 404 (and
//! other 4xx), redirects and TLS failures are the operator's to fix:
//! resending at full speed cannot help, so the batch waits and is tried
//! slowly. 413 is that too, and the batch is cut in two.

use std::fmt;
use std::time::Duration;

/// Longest wait a `Retry-After` may ask for: a receiver asking for hours
/// is broken, and the backlog's age is what the operator watches.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Retry interval while the configuration is refused: it needs an
/// operator, and once they fixed it the lines flow within this (one
/// request per period against a receiver that refuses it).
pub const REFUSED_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: every line stored.
    Acked,
    /// 400: what Loki says it refused (see [`BadRequest`]).
    BadRequest(BadRequest),
    /// Send the same batch again after the backoff (at least `after`).
    Retry { reason: RetryReason, after: Option<Duration> },
    /// The configuration (URL, credentials, TLS, limits) is wrong: keep
    /// everything, tell the operator what to fix, try again slowly.
    Refused { what: String, split: bool },
}

/// What a `400` refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRequest {
    /// Entries only; the rest of the push was stored. `refused` holds the
    /// number Loki listed per reason (each listed refusal is one entry,
    /// or Loki's own "total ignored: N").
    Entries { refused: Vec<(RejectReason, u64)> },
    /// Structured metadata is not allowed on this Loki (and possibly
    /// entry-level refusals too: those come back on the resend).
    Metadata,
    /// The whole request, or a refusal the agent does not recognise.
    Request,
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
    /// Answered before the whole push was sent: not an acknowledgement.
    EarlyAnswer,
}

impl RetryReason {
    pub const ALL: [RetryReason; 7] = [
        Self::RateLimited,
        Self::ServerError,
        Self::Connection,
        Self::Timeout,
        Self::Dns,
        Self::Refused,
        Self::EarlyAnswer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::Connection => "connection",
            Self::Timeout => "timeout",
            Self::Dns => "dns",
            Self::Refused => "refused",
            Self::EarlyAnswer => "early_answer",
        }
    }
}

/// `reason` of `log_capturer_sink_rejected_lines_total`: why Loki refused
/// entries for good. Only entry-level refusals drop lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    TooOld,
    TooNew,
    LineTooLong,
}

impl RejectReason {
    pub const ALL: [RejectReason; 3] = [Self::TooOld, Self::TooNew, Self::LineTooLong];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooOld => "too_old",
            Self::TooNew => "too_new",
            Self::LineTooLong => "line_too_long",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one line of a 400's message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Entry(RejectReason),
    Metadata,
    /// Loki's "total ignored: N out of M" after the refusals it lists.
    Total(u64),
    Request,
}

/// One line of Loki's message, without its label sets (a label value
/// saying "too old" must not decide anything). Loki's words have been
/// stable across 2.x: "has timestamp too old", "entry too far behind",
/// "has timestamp too new", "Max entry size '…' bytes exceeded".
fn refusal(line: &str) -> Refusal {
    let l = without_label_sets(line).to_ascii_lowercase();
    if l.contains("structured metadata") && (l.contains("disallowed") || l.contains("not allowed")) {
        Refusal::Metadata
    } else if l.contains("timestamp too old") || l.contains("too far behind") {
        Refusal::Entry(RejectReason::TooOld)
    } else if l.contains("timestamp too new") {
        Refusal::Entry(RejectReason::TooNew)
    } else if l.contains("max entry size") && l.contains("exceeded") {
        Refusal::Entry(RejectReason::LineTooLong)
    } else if let Some(n) = total_ignored(&l) {
        Refusal::Total(n)
    } else {
        Refusal::Request
    }
}

/// N of "user 'fake', total ignored: N out of M" (the ingester's summary
/// of the entries it refused from one stream).
fn total_ignored(l: &str) -> Option<u64> {
    let rest = &l[l.find("total ignored: ")? + "total ignored: ".len()..];
    let n = &rest[..rest.find(' ')?];
    rest[n.len()..].starts_with(" out of ").then(|| n.parse().ok()).flatten()
}

/// The refusals of one line of a 400's message, each with how many entries
/// it stands for. Loki 2.9 groups alike refusals on one line:
/// `103 errors like: MSG; 5 errors like: MSG2`; otherwise a line is one.
fn groups(line: &str) -> Vec<(u64, &str)> {
    const LIKE: &str = " errors like: ";
    let count = |s: &str| -> Option<(u64, usize)> {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let n = s[..digits].parse().ok()?;
        s[digits..].starts_with(LIKE).then_some((n, digits + LIKE.len()))
    };
    let Some((mut n, skip)) = count(line) else { return vec![(1, line)] };
    let mut rest = &line[skip..];
    let mut out = Vec::new();
    loop {
        // The next group starts after "; " with its own count, outside any
        // label set (a label value may hold those words).
        let next = outside_label_sets(rest, "; ").find_map(|i| count(&rest[i + 2..]).map(|c| (i, c)));
        match next {
            Some((i, (m, skip))) => {
                out.push((n, &rest[..i]));
                n = m;
                rest = &rest[i + 2 + skip..];
            }
            None => {
                out.push((n, rest));
                return out;
            }
        }
    }
}

/// Sort a 400 by its message.
pub fn bad_request(message: &str) -> BadRequest {
    let mut refused: Vec<(RejectReason, u64)> = Vec::new();
    let mut metadata = false;
    let mut request = false;
    // Listed refusals since the last "total ignored": a total replaces them.
    let mut listed: Vec<(RejectReason, u64)> = Vec::new();
    let add = |refused: &mut Vec<(RejectReason, u64)>, r: RejectReason, n: u64| match refused
        .iter_mut()
        .find(|(x, _)| *x == r)
    {
        Some((_, c)) => *c += n,
        None => refused.push((r, n)),
    };
    for line in message.lines().map(str::trim).filter(|l| !l.is_empty()) {
        for (n, text) in groups(line) {
            match refusal(text) {
                Refusal::Entry(r) => listed.push((r, n)),
                Refusal::Metadata => metadata = true,
                Refusal::Request => request = true,
                Refusal::Total(total) => match listed.first().copied() {
                    Some((r, _)) => {
                        add(&mut refused, r, total);
                        listed.clear();
                    }
                    // A total with nothing listed before it: not Loki's shape.
                    None => request = true,
                },
            }
        }
    }
    for (r, n) in listed {
        add(&mut refused, r, n);
    }
    if metadata {
        BadRequest::Metadata
    } else if request || refused.is_empty() {
        BadRequest::Request
    } else {
        BadRequest::Entries { refused }
    }
}

/// Where `pat` occurs in `m` outside label sets (`{…}`, quoted values
/// skipped whole).
fn outside_label_sets<'a>(m: &'a str, pat: &'a str) -> impl Iterator<Item = usize> + 'a {
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    m.char_indices().filter_map(move |(i, c)| {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            return None;
        }
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            '"' if depth > 0 => quoted = true,
            _ => {}
        }
        (depth == 0 && m[i..].starts_with(pat)).then_some(i)
    })
}

/// `m` without its label sets (`{…}`, quoted values skipped whole: a
/// value may hold braces).
fn without_label_sets(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    let mut depth = 0usize;
    let mut chars = m.chars();
    while let Some(c) = chars.next() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            '"' if depth > 0 => {
                // A quoted label value, with backslash escapes.
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
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
        400 => Outcome::BadRequest(bad_request(message)),
        429 => Outcome::Retry { reason: RetryReason::RateLimited, after },
        408 => Outcome::Retry { reason: RetryReason::Timeout, after },
        // Loki's distributor hands a push to its ingesters over gRPC; one
        // above their message limit fails the same way every time.
        500 if message.contains("received message larger than max") => Outcome::Refused {
            what: format!(
                "500{said}: the push is above Loki's gRPC message limit \
                 (grpc_server_max_recv_msg_size); pushes are cut in two until they fit (raise the \
                 limit, or lower --loki-max-push-bytes and --loki-batch-bytes)"
            ),
            split: true,
        },
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
        // Loki 2.9's answer to a push above its ingesters' gRPC limit.
        let grpc = "rpc error: code = ResourceExhausted desc = grpc: received message larger than max \
                    (6126535 vs. 4194304)";
        assert!(matches!(of_status(500, grpc, None), Outcome::Refused { split: true, .. }));
        for s in [301, 401, 403, 404, 405, 422] {
            assert!(matches!(of_status(s, "", None), Outcome::Refused { split: false, .. }), "{s}");
        }
    }

    fn entries(v: &[(RejectReason, u64)]) -> BadRequest {
        BadRequest::Entries { refused: v.to_vec() }
    }

    #[test]
    fn entry_level_refusals_are_counted_per_reason() {
        use RejectReason::*;
        for (m, want) in [
            ("entry for stream '{a=\"b\"}' has timestamp too old: 2020-01-01T00:00:00Z, oldest acceptable \
              timestamp is: 2020-01-08T00:00:00Z", entries(&[(TooOld, 1)])),
            ("entry for stream '{a=\"b\"}' has timestamp too new: 2099-01-01T00:00:00Z", entries(&[(TooNew, 1)])),
            (
                "Max entry size '262144' bytes exceeded for stream '{container=\"web\"}' while adding an entry \
                 with length '300000' bytes",
                entries(&[(LineTooLong, 1)]),
            ),
            // 2.9's ingester: one line per entry (at most 10), then the total.
            (
                "entry with timestamp 2026-12-04 01:45:41 +0000 UTC ignored, reason: 'entry too far behind, \
                 oldest acceptable timestamp is: 2026-12-04T02:45:41Z',\nentry with timestamp 2026-12-04 \
                 01:45:42 +0000 UTC ignored, reason: 'entry too far behind, oldest acceptable timestamp is: \
                 2026-12-04T02:45:41Z',\nuser 'fake', total ignored: 37 out of 40 for stream: {probe=\"ooo\"}",
                entries(&[(TooOld, 37)]),
            ),
            // 2.8 puts the stream in the first line.
            (
                "entry with timestamp 2026-12-04 01:09:48 +0000 UTC ignored, reason: 'entry too far behind, \
                 oldest acceptable timestamp is: 2026-12-04T02:09:48Z' for stream: {probe=\"ooo\"},\nuser \
                 'fake', total ignored: 1 out of 1",
                entries(&[(TooOld, 1)]),
            ),
            (
                "Max entry size '10' bytes exceeded for stream '{a=\"1\"}' while adding an entry with length \
                 '11' bytes\nentry for stream '{a=\"1\"}' has timestamp too new: 2099-01-01T00:00:00Z\nMax \
                 entry size '10' bytes exceeded for stream '{a=\"2\"}' while adding an entry with length '12' \
                 bytes",
                entries(&[(LineTooLong, 2), (TooNew, 1)]),
            ),
        ] {
            assert_eq!(bad_request(m), want, "{m}");
            assert_eq!(of_status(400, m, None), Outcome::BadRequest(want));
        }
    }

    #[test]
    fn loki_2_9_groups_alike_refusals_with_their_counts() {
        use RejectReason::*;
        let m = "3 errors like: entry for stream '{a=\"1\"}' has timestamp too new: 2099-01-01T00:00:00Z; 2 \
                 errors like: Max entry size '10' bytes exceeded for stream '{a=\"x; 9 errors like: \"}' while \
                 adding an entry with length '11' bytes";
        assert_eq!(bad_request(m), entries(&[(TooNew, 3), (LineTooLong, 2)]));
        assert_eq!(groups("1 error like: x"), vec![(1, "1 error like: x")]);
        let md =
            "103 errors like: stream '{container=\"lk_14\"}' includes structured metadata, but this feature \
                  is disallowed. Please see `limits_config.structured_metadata` or contact your Loki \
                  administrator to enable it.";
        assert_eq!(bad_request(md), BadRequest::Metadata);
        let mixed =
            "3 errors like: entry for stream '{a=\"1\"}' has timestamp too new: 2099; 1 errors like: \
                     stream '{a=\"1\", a=\"2\"}' has duplicate label name: 'a'";
        assert_eq!(bad_request(mixed), BadRequest::Request);
    }

    #[test]
    fn a_stream_refused_whole_beside_refused_entries_is_request_level() {
        // Seen from 2.9.9, on one line, the groups in either order, with
        // a "; " inside the first refusal.
        let whole = "1 errors like: entry for stream '{a=\"1\", b=\"2\"}' has 6 label names; limit 5";
        let entries =
            "10 errors like: Max entry size '2048' bytes exceeded for stream '{a=\"1\"}' while adding \
                       an entry with length '4000' bytes";
        for seen in [format!("{whole}; {entries}"), format!("{entries}; {whole}")] {
            assert_eq!(groups(&seen).len(), 2, "{seen}");
            assert_eq!(bad_request(&seen), BadRequest::Request, "{seen}");
        }
        assert_eq!(
            bad_request(entries),
            BadRequest::Entries { refused: vec![(RejectReason::LineTooLong, 10)] }
        );
    }

    #[test]
    fn request_level_and_unknown_refusals_keep_the_lines() {
        for m in [
            "couldn't parse labels: 1:5: parse error: unexpected character inside braces: '-'",
            "1:11: parse error: unexpected end of input inside braces",
            "error at least one label pair is required per stream",
            "stream '{a=\"1\", a=\"2\"}' has duplicate label name: 'a'",
            "stream '{probe=\"vvv\"}' has label value too long: 'vvv'",
            "entry for stream '{l00=\"v\"}' has 31 label names; limit 30",
            "snappy: corrupt input",
            "proto: illegal wireType 7",
            "mime: no media type",
            "loghttp.PushRequest.Streams: []*loghttp.Stream: unmarshalerDecoder: Value is string, but can't \
             find closing '\"' symbol, error found in #10 byte of ...",
            "something nobody has seen",
            "",
            // Mixed: an entry-level refusal does not make a request-level one harmless.
            "Max entry size '10' bytes exceeded for stream '{a=\"1\"}' while adding an entry with length '11' \
             bytes\nstream '{a=\"1\", a=\"2\"}' has duplicate label name: 'a'",
            // A label value that says "too old" decides nothing.
            "stream '{team=\"timestamp too old\"}' has label value too long: 'x'",
        ] {
            assert_eq!(bad_request(m), BadRequest::Request, "{m}");
        }
    }

    #[test]
    fn metadata_refusals_are_recognised_whatever_else_is_said() {
        let one =
            "stream '{container=\"lk_14\", host=\"vm\"}' includes structured metadata, but this feature \
                   is disallowed. Please see `limits_config.structured_metadata` or contact your Loki \
                   administrator to enable it.";
        assert_eq!(bad_request(one), BadRequest::Metadata);
        let many = format!("{one}\n{one}\nentry for stream '{{a=\"b\"}}' has timestamp too new: 2099");
        assert_eq!(bad_request(&many), BadRequest::Metadata);
    }

    #[test]
    fn label_sets_are_skipped_with_quotes_and_braces_inside_values() {
        assert_eq!(without_label_sets("a '{x=\"}\", y=\"{\\\"\"}' b {c=\"d\"} e"), "a '' b  e");
        assert_eq!(total_ignored("user 'fake', total ignored: 12 out of 30"), Some(12));
        assert_eq!(total_ignored("total ignored: x out of 3"), None);
    }
}
