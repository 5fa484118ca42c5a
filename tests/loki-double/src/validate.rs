//! What Loki refuses, with its reasons and messages: the distributor's
//! per-entry checks (too old, too far in the future, line too long,
//! structured metadata limits) and the ingester's "too far behind" window.
//! Message texts follow Loki's `pkg/validation` formats so that a client
//! which sorts rejections by the words of the message sees what it would
//! see from Loki.

use std::time::Duration;

use crate::time::{go_string, rfc3339_secs};

/// Loki's limits (its defaults in [`Limits::default`]).
#[derive(Clone, Debug)]
pub struct Limits {
    /// `max_line_size`: 256 KB.
    pub max_line_size: usize,
    /// `max_label_names_per_series`: 15.
    pub max_label_names_per_series: usize,
    /// `max_label_name_length`: 1024.
    pub max_label_name_length: usize,
    /// `max_label_value_length`: 2048.
    pub max_label_value_length: usize,
    /// `reject_old_samples_max_age` (with `reject_old_samples: true`):
    /// 168 h. `None` accepts any age.
    pub reject_old_samples_max_age: Option<Duration>,
    /// `creation_grace_period`: 10 min.
    pub creation_grace_period: Duration,
    /// `max_structured_metadata_size`: 64 KB (names and values summed).
    pub max_structured_metadata_size: usize,
    /// `max_structured_metadata_entries_count`: 128.
    pub max_structured_metadata_entries_count: usize,
    /// The ingester's `max_chunk_age` (2 h): with unordered writes an entry
    /// older than its stream's newest minus half of it is refused as "too
    /// far behind". `None` turns the check off.
    pub max_chunk_age: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_line_size: 256 * 1024,
            max_label_names_per_series: 15,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            reject_old_samples_max_age: Some(Duration::from_secs(168 * 3600)),
            creation_grace_period: Duration::from_secs(600),
            max_structured_metadata_size: 64 * 1024,
            max_structured_metadata_entries_count: 128,
            max_chunk_age: Some(Duration::from_secs(2 * 3600)),
        }
    }
}

/// What a Loki does with an entry's structured metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StructuredMetadata {
    /// Stored with the entry (2.9 with schema v13 and
    /// `allow_structured_metadata: true`; 3.x on v13).
    #[default]
    Allowed,
    /// Refused, as by 2.9 with its defaults (and 3.x on a schema before
    /// v13): each entry carrying metadata is refused with reason
    /// `disallowed_structured_metadata`, the other entries are stored, 400.
    Disallowed,
    /// Unknown to it, as to 2.8: in protobuf, field 3 of an entry is skipped
    /// (stored without it, 204); in JSON, a third element in a `values`
    /// entry does not decode (400, nothing of the push stored, and the
    /// answer does not say why in terms of metadata). Its 400s name the
    /// last refusal only, as 2.8's do.
    Unknown,
}

/// Why an entry was not stored: Loki's `reason` label of
/// `loki_discarded_samples_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    InvalidLabels,
    MissingLabels,
    MaxLabelNamesPerSeries,
    LabelNameTooLong,
    LabelValueTooLong,
    DuplicateLabelNames,
    LineTooLong,
    GreaterThanMaxSampleAge,
    TooFarInFuture,
    TooFarBehind,
    StructuredMetadataTooLarge,
    StructuredMetadataTooMany,
    DisallowedStructuredMetadata,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidLabels => "invalid_labels",
            Reason::MissingLabels => "missing_labels",
            Reason::MaxLabelNamesPerSeries => "max_label_names_per_series",
            Reason::LabelNameTooLong => "label_name_too_long",
            Reason::LabelValueTooLong => "label_value_too_long",
            Reason::DuplicateLabelNames => "duplicate_label_names",
            Reason::LineTooLong => "line_too_long",
            Reason::GreaterThanMaxSampleAge => "greater_than_max_sample_age",
            Reason::TooFarInFuture => "too_far_in_future",
            Reason::TooFarBehind => "too_far_behind",
            Reason::StructuredMetadataTooLarge => "structured_metadata_too_large",
            Reason::StructuredMetadataTooMany => "structured_metadata_too_many",
            Reason::DisallowedStructuredMetadata => "disallowed_structured_metadata",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One refusal: its reason and the text Loki puts in the 400's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

/// An entry as decoded from a push, before validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    /// Nanoseconds since the epoch; wide enough for any `seconds`/`nanos`
    /// pair a client can send.
    pub ts_ns: i128,
    pub line: Vec<u8>,
    pub metadata: Vec<(String, String)>,
}

/// The distributor's `ValidateEntry`, in its order: age, future, line
/// size, structured metadata (allowed at all, then its limits).
pub fn entry(
    limits: &Limits,
    sm: StructuredMetadata,
    stream: &str,
    e: &RawEntry,
    now_ns: i128,
) -> Result<(), Rejection> {
    if let Some(age) = limits.reject_old_samples_max_age {
        let oldest = now_ns - age.as_nanos() as i128;
        if e.ts_ns < oldest {
            return Err(Rejection {
                reason: Reason::GreaterThanMaxSampleAge,
                message: format!(
                    "entry for stream '{stream}' has timestamp too old: {}, oldest acceptable timestamp is: {}",
                    rfc3339_secs(e.ts_ns),
                    rfc3339_secs(oldest)
                ),
            });
        }
    }
    if e.ts_ns > now_ns + limits.creation_grace_period.as_nanos() as i128 {
        return Err(Rejection {
            reason: Reason::TooFarInFuture,
            message: format!("entry for stream '{stream}' has timestamp too new: {}", rfc3339_secs(e.ts_ns)),
        });
    }
    if e.line.len() > limits.max_line_size {
        return Err(Rejection {
            reason: Reason::LineTooLong,
            message: format!(
                "Max entry size '{}' bytes exceeded for stream '{stream}' while adding an entry with length '{}' bytes",
                limits.max_line_size,
                e.line.len()
            ),
        });
    }
    if sm == StructuredMetadata::Disallowed && !e.metadata.is_empty() {
        return Err(disallowed(stream));
    }
    let sm_size: usize = e.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if sm_size > limits.max_structured_metadata_size {
        return Err(Rejection {
            reason: Reason::StructuredMetadataTooLarge,
            message: format!(
                "stream '{stream}' has structured metadata too large: '{sm_size}' bytes, limit: '{}' bytes. \
                 Please see `limits_config.max_structured_metadata_size` or contact your Loki administrator to increase it.",
                limits.max_structured_metadata_size
            ),
        });
    }
    if e.metadata.len() > limits.max_structured_metadata_entries_count {
        return Err(Rejection {
            reason: Reason::StructuredMetadataTooMany,
            message: format!(
                "stream '{stream}' has too many structured metadata labels: '{}', limit: '{}'. \
                 Please see `limits_config.max_structured_metadata_entries_count` or contact your Loki administrator to increase it.",
                e.metadata.len(),
                limits.max_structured_metadata_entries_count
            ),
        });
    }
    Ok(())
}

/// Loki 2.9's refusal of an entry with structured metadata when
/// `allow_structured_metadata` is false.
fn disallowed(stream: &str) -> Rejection {
    Rejection {
        reason: Reason::DisallowedStructuredMetadata,
        message: format!(
            "stream '{stream}' includes structured metadata, but this feature is disallowed. Please see \
             `limits_config.structured_metadata` or contact your Loki administrator to enable it."
        ),
    }
}

/// The ingester's unordered-writes window: `None` when the entry may be
/// stored behind a stream whose newest entry is at `newest_ns`. The
/// message is the entry's line of the ingester's answer ([`ingester`]).
pub fn behind(limits: &Limits, stream: &str, ts_ns: i64, newest_ns: Option<i64>) -> Option<Rejection> {
    let _ = stream;
    let (age, newest) = (limits.max_chunk_age?, newest_ns?);
    let oldest = newest as i128 - (age.as_nanos() / 2) as i128;
    if (ts_ns as i128) >= oldest {
        return None;
    }
    Some(Rejection { reason: Reason::TooFarBehind, message: behind_line(ts_ns as i128, oldest) })
}

fn behind_line(ts: i128, oldest: i128) -> String {
    format!(
        "entry with timestamp {} ignored, reason: 'entry too far behind, oldest acceptable timestamp is: {}'",
        go_string(ts),
        rfc3339_secs(oldest)
    )
}

/// The ingester's answer for the entries of one stream it refused: their
/// lines (ten at most), then the count. `of` is how many entries of the
/// stream it was sent. Loki 2.9 names the stream on the last line; 2.8
/// (`v2_8`) on each entry's.
pub fn ingester(lines: &[String], stream: &str, tenant: &str, of: usize, v2_8: bool) -> String {
    let mut out: Vec<String> = lines
        .iter()
        .take(10)
        .map(|l| if v2_8 { format!("{l} for stream: {stream}") } else { l.clone() })
        .collect();
    out.push(if v2_8 {
        format!("user '{tenant}', total ignored: {} out of {of}", lines.len())
    } else {
        format!("user '{tenant}', total ignored: {} out of {of} for stream: {stream}", lines.len())
    });
    out.join(",\n")
}

/// A message for an entry refused by an injected fault, worded as Loki
/// words `reason` so a client classifies it the same way.
pub fn injected(limits: &Limits, reason: Reason, stream: &str, e: &RawEntry) -> Rejection {
    let ts = rfc3339_secs(e.ts_ns);
    let message = match reason {
        Reason::GreaterThanMaxSampleAge => {
            format!("entry for stream '{stream}' has timestamp too old: {ts}, oldest acceptable timestamp is: {ts}")
        }
        Reason::TooFarInFuture => format!("entry for stream '{stream}' has timestamp too new: {ts}"),
        Reason::LineTooLong => format!(
            "Max entry size '{}' bytes exceeded for stream '{stream}' while adding an entry with length '{}' bytes",
            limits.max_line_size,
            e.line.len()
        ),
        Reason::TooFarBehind => behind_line(e.ts_ns, e.ts_ns),
        Reason::InvalidLabels => format!("Error parsing labels '{stream}' with error: injected"),
        Reason::MissingLabels => "error at least one label pair is required per stream".to_owned(),
        Reason::MaxLabelNamesPerSeries => format!(
            "entry for stream '{stream}' has {} label names; limit {}",
            limits.max_label_names_per_series + 1,
            limits.max_label_names_per_series
        ),
        Reason::LabelNameTooLong => format!("stream '{stream}' has label name too long: 'injected'"),
        Reason::LabelValueTooLong => format!("stream '{stream}' has label value too long: 'injected'"),
        Reason::DuplicateLabelNames => format!("stream '{stream}' has duplicate label name: 'injected'"),
        Reason::StructuredMetadataTooLarge => format!(
            "stream '{stream}' has structured metadata too large: '{}' bytes, limit: '{}' bytes.",
            limits.max_structured_metadata_size + 1,
            limits.max_structured_metadata_size
        ),
        Reason::StructuredMetadataTooMany => format!(
            "stream '{stream}' has too many structured metadata labels: '{}', limit: '{}'.",
            limits.max_structured_metadata_entries_count + 1,
            limits.max_structured_metadata_entries_count
        ),
        Reason::DisallowedStructuredMetadata => return disallowed(stream),
    };
    Rejection { reason, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i128 = 1_700_000_000_000_000_000;

    fn e(ts_ns: i128, len: usize) -> RawEntry {
        RawEntry { ts_ns, line: vec![b'x'; len], metadata: vec![] }
    }

    #[test]
    fn boundaries() {
        let l = Limits::default();
        let week = 168 * 3600 * 1_000_000_000i128;
        assert!(entry(&l, StructuredMetadata::Allowed, "{a=\"b\"}", &e(NOW - week, 1), NOW).is_ok());
        let r = entry(&l, StructuredMetadata::Allowed, "{a=\"b\"}", &e(NOW - week - 1, 1), NOW).unwrap_err();
        assert_eq!(r.reason, Reason::GreaterThanMaxSampleAge);
        assert!(r
            .message
            .starts_with("entry for stream '{a=\"b\"}' has timestamp too old: 2023-11-07T22:13:19"));
        let grace = 600 * 1_000_000_000i128;
        assert!(entry(&l, StructuredMetadata::Allowed, "s", &e(NOW + grace, 1), NOW).is_ok());
        assert_eq!(
            entry(&l, StructuredMetadata::Allowed, "s", &e(NOW + grace + 1, 1), NOW).unwrap_err().reason,
            Reason::TooFarInFuture
        );
        assert!(entry(&l, StructuredMetadata::Allowed, "s", &e(NOW, 256 * 1024), NOW).is_ok());
        let r = entry(&l, StructuredMetadata::Allowed, "s", &e(NOW, 256 * 1024 + 1), NOW).unwrap_err();
        assert_eq!(r.reason, Reason::LineTooLong);
        assert!(
            r.message.contains("'262144' bytes exceeded") && r.message.ends_with("length '262145' bytes")
        );
        // Age is checked before size, as Loki does.
        assert_eq!(
            entry(&l, StructuredMetadata::Allowed, "s", &e(0, 300_000), NOW).unwrap_err().reason,
            Reason::GreaterThanMaxSampleAge
        );
        let mut m = e(NOW, 1);
        m.metadata = (0..129).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(
            entry(&l, StructuredMetadata::Allowed, "s", &m, NOW).unwrap_err().reason,
            Reason::StructuredMetadataTooMany
        );
        m.metadata = vec![("k".into(), "v".repeat(64 * 1024))];
        assert_eq!(
            entry(&l, StructuredMetadata::Allowed, "s", &m, NOW).unwrap_err().reason,
            Reason::StructuredMetadataTooLarge
        );
        m.metadata = vec![("k".into(), "v".into())];
        let r = entry(&l, StructuredMetadata::Disallowed, "{a=\"b\"}", &m, NOW).unwrap_err();
        assert_eq!(r.reason, Reason::DisallowedStructuredMetadata);
        assert!(r
            .message
            .starts_with("stream '{a=\"b\"}' includes structured metadata, but this feature is disallowed."));
        assert!(entry(&l, StructuredMetadata::Disallowed, "s", &e(NOW, 1), NOW).is_ok());
        // Unknown metadata never reaches validation: the decoders drop it.
        assert!(entry(&l, StructuredMetadata::Unknown, "s", &m, NOW).is_ok());
    }

    #[test]
    fn too_far_behind_window() {
        let l = Limits::default();
        let hour = 3_600_000_000_000i64;
        let newest = 10 * hour;
        assert!(behind(&l, "s", newest - hour, Some(newest)).is_none());
        assert_eq!(behind(&l, "s", newest - hour - 1, Some(newest)).unwrap().reason, Reason::TooFarBehind);
        assert!(behind(&l, "s", 0, None).is_none());
    }
}
