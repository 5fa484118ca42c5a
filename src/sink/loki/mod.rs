//! Grafana Loki's push API, as the agent speaks it: label sets, the two
//! body encodings, and batches. No I/O here; the loop sends the bodies.
//!
//! Facts about Loki this module relies on (Loki 2.x and 3.x defaults; see
//! also `shared/sinks-notes.md`):
//!
//! - `POST /loki/api/v1/push`. The native body is a protobuf `PushRequest`
//!   compressed as one Snappy *raw block* (not the framed format), sent with
//!   `Content-Type: application/x-protobuf` and no `Content-Encoding`. The
//!   alternative is JSON, `Content-Type: application/json`, which Loki
//!   accepts gzip-compressed with `Content-Encoding: gzip`.
//! - The protobuf messages, by field number (written here from this
//!   description; Loki's `.proto` is AGPL and is not copied):
//!   `PushRequest { repeated Stream streams = 1 }`,
//!   `Stream { string labels = 1; repeated Entry entries = 2 }`,
//!   `Entry { Timestamp timestamp = 1; string line = 2;
//!   repeated LabelPair structuredMetadata = 3 }`,
//!   `Timestamp { int64 seconds = 1; int32 nanos = 2 }`,
//!   `LabelPair { string name = 1; string value = 2 }`.
//! - A stream's labels travel as one string in Prometheus' notation,
//!   `{name="value", …}`, with Go string escapes in the values. Names match
//!   `[a-zA-Z_][a-zA-Z0-9_]*`; names starting with `__` are Loki's own.
//!   Limits: 15 label names per stream (`max_label_names_per_series`),
//!   names up to 1024 bytes, values up to 2048.
//! - A line longer than `max_line_size` (default `256KB`, which Loki's
//!   size parser reads as 256 × 1024 bytes) is refused with a 400, and a 400
//!   is final: the rest of the request is stored, the refused entries are
//!   lost. So the agent cuts long lines itself ([`batch`]).
//! - Loki keeps one stream per label set (this encoder sends each label set
//!   once per request). Entries of a stream need not be in time order
//!   (`unordered_writes`, on by default), so push order within each stream
//!   is all a batch preserves; entries far older than the stream's newest
//!   (about an hour) are refused.
//! - An entry identical to one Loki still holds in memory (same stream,
//!   nanosecond timestamp and line) is dropped. Docker's own timestamps and
//!   a deterministic encoding of each line make a resent batch (after a
//!   crash, or a lost answer) invisible.
//! - Structured metadata (schema v13) is per entry and not indexed: the
//!   place for high-cardinality fields like the container id.
//! - The default ingestion burst is 6 MB per tenant; pushes of about 1 MiB
//!   (as Promtail sends) stay well below it.

pub mod batch;
pub mod config;
pub mod encoding;
pub mod json;
pub mod labels;
pub mod merge;
pub mod protobuf;
pub mod push;
pub mod split;
pub mod strip;
pub mod wire;
