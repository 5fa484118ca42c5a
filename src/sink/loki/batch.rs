//! A batch of log lines on its way to Loki: filled record by record, sent
//! when it is big enough or old enough, and accounted so that the loop can
//! advance checkpoints once Loki acknowledges it.
//!
//! - **Lines are made acceptable, never refused.** Each line becomes UTF-8
//!   text (invalid byte sequences become U+FFFD, as in the file output's
//!   `message`; Docker's `json-file` driver has already done the same to
//!   what it stored), and a line longer than `max_line` (Loki's
//!   `max_line_size`, 256 KiB by default) is cut at a character boundary
//!   and ends with [`TRUNCATION_MARK`], the whole within the limit. A cut
//!   entry also carries the structured metadata `truncated="true"`, which
//!   is also set on lines the agent's own line cap had already cut.
//!   Converting and cutting are deterministic, so a resent line is
//!   byte-identical and Loki's deduplication absorbs it.
//! - **Order.** Entries are grouped into one stream per label set, and each
//!   stream keeps the order of its pushes; lines of one container stream
//!   are therefore never reordered, within a batch or (batches being sent
//!   in order) across batches.
//! - **Bounded.** The batch counts its size as each line's bytes plus its
//!   structured metadata (what Loki's rate limits count) plus
//!   [`ENTRY_OVERHEAD`] per entry (so that a flood of empty lines is bounded
//!   too). A push is refused once that size has reached `max_bytes`, so a
//!   batch never exceeds its cap by more than one record.
//! - **No clock.** Callers pass the time of each push and ask
//!   [`Batch::ready`] with the current time, or arm a timer at
//!   [`Batch::deadline`].
//! - **Acknowledgement tokens.** Each record comes with a token of the
//!   caller's type `T` (for example a container key and the resume position
//!   after the line). [`Batch::finish`] hands them back in push order with
//!   the encoded body: when Loki accepts the body, those positions are
//!   delivered.

use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::encoding::{Body, Encoder, Encoding};
use super::labels::{cut_at_char, LokiStream};
use super::push::PushRequest;

/// Send when the batch holds about this much (as Promtail does).
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// Send a batch at the latest this long after its first line.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(1);
/// Loki's default `max_line_size`, `256KB`, which its size parser reads as
/// KiB.
pub const DEFAULT_MAX_LINE: usize = 256 * 1024;
/// Ends every line the batch cut.
pub const TRUNCATION_MARK: &str = "…[truncated]";
/// Smallest accepted `max_line`: the mark and some text.
pub const MIN_MAX_LINE: usize = 64;
/// Largest accepted `max_bytes` and `max_line`: far above what Loki takes
/// in one push (its default ingestion burst is 6 MB), and what keeps a
/// batch's offsets in 32 bits.
pub const MAX_LIMIT: usize = 64 << 20;
/// Bytes counted per entry on top of its line and metadata: about what its
/// framing and timestamp take in protobuf.
pub const ENTRY_OVERHEAD: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A batch this big is sent (and takes no more records).
    pub max_bytes: usize,
    /// A batch this old is sent.
    pub max_age: Duration,
    /// Longer lines are cut.
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bytes: DEFAULT_MAX_BYTES, max_age: DEFAULT_MAX_AGE, max_line: DEFAULT_MAX_LINE }
    }
}

/// A limit that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitsError {
    ZeroBytes,
    ZeroAge,
    LineTooShort { max_line: usize },
    TooBig { what: &'static str, value: usize },
}

impl fmt::Display for LimitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroBytes => f.write_str("the batch size must be at least 1 byte"),
            Self::ZeroAge => f.write_str("the batch wait must be longer than 0 s"),
            Self::LineTooShort { max_line } => write!(
                f,
                "a line limit of {max_line} bytes leaves no room for the text of a cut line: use at \
                 least {MIN_MAX_LINE} (Loki's default is {DEFAULT_MAX_LINE})"
            ),
            Self::TooBig { what, value } => write!(
                f,
                "a {what} of {value} bytes is more than Loki takes in one push; the most accepted \
                 is {MAX_LIMIT} bytes"
            ),
        }
    }
}

impl std::error::Error for LimitsError {}

impl Limits {
    pub fn check(&self) -> Result<(), LimitsError> {
        if self.max_bytes == 0 {
            return Err(LimitsError::ZeroBytes);
        }
        if self.max_age.is_zero() {
            return Err(LimitsError::ZeroAge);
        }
        if self.max_line < MIN_MAX_LINE {
            return Err(LimitsError::LineTooShort { max_line: self.max_line });
        }
        if self.max_bytes > MAX_LIMIT {
            return Err(LimitsError::TooBig { what: "batch size", value: self.max_bytes });
        }
        if self.max_line > MAX_LIMIT {
            return Err(LimitsError::TooBig { what: "line limit", value: self.max_line });
        }
        Ok(())
    }
}

/// One log line as the batch takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// Docker's timestamp, nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// Bytes, possibly invalid UTF-8.
    pub text: &'a [u8],
    /// Already cut before it got here (the agent's own line cap).
    pub truncated: bool,
}

/// What happened to a pushed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The batch cut the line to `max_line` (count it).
    pub cut: bool,
}

/// The batch is full: send it, then push the record again. Gives the token
/// back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full<T>(pub T);

/// Why a batch should be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    Size,
    Age,
}

/// A finished batch: the body to send and what it holds.
#[derive(Debug)]
pub struct Finished<T> {
    pub body: Body,
    pub lines: usize,
    /// Bytes of the lines as sent (converted and cut).
    pub line_bytes: usize,
    /// Lines this batch cut.
    pub cut: usize,
    /// One per line, in push order.
    pub tokens: Vec<T>,
    /// When the first line was pushed: the age of the oldest line in it.
    pub opened: Instant,
}

pub struct Batch<T> {
    limits: Limits,
    req: PushRequest,
    encoder: Encoder,
    tokens: Vec<T>,
    /// Accounted size (see the module doc).
    size: usize,
    cut: usize,
    opened: Option<Instant>,
}

impl<T> fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("limits", &self.limits)
            .field("lines", &self.req.len())
            .field("size", &self.size)
            .field("opened", &self.opened)
            .finish_non_exhaustive()
    }
}

impl<T> Batch<T> {
    /// `limits` should have passed [`Limits::check`]; limits that fail it
    /// are raised to the smallest that work.
    pub fn new(limits: Limits, encoding: Encoding) -> Self {
        let limits = Limits {
            max_bytes: limits.max_bytes.clamp(1, MAX_LIMIT),
            max_age: limits.max_age,
            max_line: limits.max_line.clamp(MIN_MAX_LINE, MAX_LIMIT),
        };
        Self {
            limits,
            req: PushRequest::new(),
            encoder: Encoder::new(encoding),
            tokens: Vec::new(),
            size: 0,
            cut: 0,
            opened: None,
        }
    }

    /// Send batches of at most this size from now on (a receiver refused
    /// bigger ones).
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.limits.max_bytes = max_bytes.clamp(1, MAX_LIMIT);
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn encoding(&self) -> Encoding {
        self.encoder.encoding()
    }

    /// Whether bodies carry structured metadata, from the next one
    /// [`finish`](Self::finish)ed on (the batch being filled included).
    pub fn set_metadata(&mut self, on: bool) {
        self.req.set_metadata(on);
    }

    pub fn metadata(&self) -> bool {
        self.req.metadata()
    }

    pub fn is_empty(&self) -> bool {
        self.req.is_empty()
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.req.len()
    }

    /// Accounted size (see the module doc).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Takes no more records.
    pub fn is_full(&self) -> bool {
        self.size >= self.limits.max_bytes
    }

    /// Add one line of `source`, at time `now`. Refused, with the token
    /// given back, when the batch [is full](Self::is_full).
    pub fn push(
        &mut self,
        source: &Rc<LokiStream>,
        line: Line<'_>,
        token: T,
        now: Instant,
    ) -> Result<Pushed, Full<T>> {
        if self.is_full() {
            return Err(Full(token));
        }
        let max_line = self.limits.max_line;
        let buf = self.req.line_buf();
        let start = buf.len();
        // Past `max_line + 1` bytes the rest of the text cannot matter: the
        // line is cut below `max_line` whatever follows (the conversion never
        // shortens text, and what a cut character becomes lies beyond the
        // cut).
        let text = &line.text[..line.text.len().min(max_line + 1)];
        match std::str::from_utf8(text) {
            Ok(s) => buf.push_str(s),
            Err(_) => buf.push_str(&String::from_utf8_lossy(text)),
        }
        let cut = buf.len() - start > max_line;
        if cut || line.truncated {
            let room = max_line - TRUNCATION_MARK.len();
            if buf.len() - start > room {
                let kept = cut_at_char(&buf[start..], room).len();
                buf.truncate(start + kept);
            }
            buf.push_str(TRUNCATION_MARK);
        }
        let line_len = buf.len() - start;
        self.req.end_entry(source, line.timestamp_ns, start, cut || line.truncated);
        self.tokens.push(token);
        self.size += line_len + source.metadata_bytes() + ENTRY_OVERHEAD;
        self.cut += usize::from(cut);
        self.opened.get_or_insert(now);
        Ok(Pushed { cut })
    }

    /// When the batch must be sent at the latest; `None` while empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.limits.max_age)
    }

    /// Whether the batch should be sent now, and why.
    pub fn ready(&self, now: Instant) -> Option<Ready> {
        if self.is_full() {
            Some(Ready::Size)
        } else if self.deadline().is_some_and(|d| now >= d) {
            Some(Ready::Age)
        } else {
            None
        }
    }

    /// Encode the batch and empty it for the next one; `None` if empty.
    /// The buffers are kept and reused.
    pub fn finish(&mut self) -> Option<Finished<T>> {
        let opened = self.opened.take()?;
        let body = self.encoder.encode(&self.req);
        let finished = Finished {
            body,
            lines: self.req.len(),
            line_bytes: self.req.line_bytes(),
            cut: self.cut,
            tokens: std::mem::take(&mut self.tokens),
            opened,
        };
        self.req.clear();
        self.size = 0;
        self.cut = 0;
        Some(finished)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::io::Read as _;

    use super::*;
    use crate::docker::frame::StreamId;
    use crate::sink::loki::labels::{Container, LabelConfig};
    use crate::sink::loki::protobuf::decode;

    /// (labels, line, metadata) of every entry of a body, per stream.
    type Decoded = Vec<(String, Vec<(i64, String, Vec<(String, String)>)>)>;

    fn decode_body(body: &Body) -> Decoded {
        match body.content_type {
            "application/x-protobuf" => {
                let plain = snap::raw::Decoder::new().decompress_vec(&body.bytes).unwrap();
                let push = decode::push(&plain).unwrap();
                push.streams
                    .into_iter()
                    .map(|s| {
                        let entries = s
                            .entries
                            .into_iter()
                            .map(|e| (e.seconds * 1_000_000_000 + i64::from(e.nanos), e.line, e.metadata))
                            .collect();
                        (s.labels, entries)
                    })
                    .collect()
            }
            "application/json" => {
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(&body.bytes[..]).read_to_end(&mut plain).unwrap();
                let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
                v["streams"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| {
                        let labels: Vec<(String, String)> = s["stream"]
                            .as_object()
                            .unwrap()
                            .iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                            .collect();
                        let entries = s["values"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|e| {
                                let metadata = e.get(2).map_or(Vec::new(), |m| {
                                    m.as_object()
                                        .unwrap()
                                        .iter()
                                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                                        .collect()
                                });
                                (
                                    e[0].as_str().unwrap().parse().unwrap(),
                                    e[1].as_str().unwrap().to_owned(),
                                    metadata,
                                )
                            })
                            .collect();
                        (LokiStream::new(labels, vec![]).rendered().to_owned(), entries)
                    })
                    .collect()
            }
            other => panic!("content type {other}"),
        }
    }

    fn sources(n: usize) -> Vec<Rc<LokiStream>> {
        let cfg = LabelConfig::new("node-1", vec![], vec![]).unwrap();
        let labels = BTreeMap::new();
        (0..n)
            .map(|i| {
                let id = format!("{i:064x}");
                let name = format!("c{i}");
                let c = Container { id: &id, name: &name, image: "img:1", labels: &labels };
                let stream = if i % 2 == 0 { StreamId::Stdout } else { StreamId::Stderr };
                Rc::new(cfg.stream(&c, stream))
            })
            .collect()
    }

    fn line(text: &[u8]) -> Line<'_> {
        Line { timestamp_ns: 1, text, truncated: false }
    }

    fn small(max_bytes: usize, max_line: usize) -> Limits {
        Limits { max_bytes, max_age: Duration::from_secs(1), max_line }
    }

    /// Push one line into a fresh batch and return what Loki gets.
    fn one(max_line: usize, l: Line<'_>) -> (Pushed, String, Vec<(String, String)>) {
        let src = &sources(1)[0];
        let mut b = Batch::new(small(1 << 20, max_line), Encoding::Protobuf);
        let pushed = b.push(src, l, (), Instant::now()).unwrap();
        let mut d = decode_body(&b.finish().unwrap().body);
        let (_, line, metadata) = d.remove(0).1.remove(0);
        (pushed, line, metadata)
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(Limits::default().check(), Ok(()));
        assert_eq!(small(0, 100).check(), Err(LimitsError::ZeroBytes));
        assert_eq!(
            Limits { max_age: Duration::ZERO, ..Limits::default() }.check(),
            Err(LimitsError::ZeroAge)
        );
        assert_eq!(small(1, 63).check(), Err(LimitsError::LineTooShort { max_line: 63 }));
        assert_eq!(small(1, 64).check(), Ok(()));
        assert_eq!(small(MAX_LIMIT, MAX_LIMIT).check(), Ok(()));
        assert!(matches!(small(MAX_LIMIT + 1, 100).check(), Err(LimitsError::TooBig { .. })));
        assert!(matches!(small(100, MAX_LIMIT + 1).check(), Err(LimitsError::TooBig { .. })));
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_kept_whole_one_more_byte_is_cut() {
        let max = 100;
        let exact = vec![b'a'; max];
        let (p, text, md) = one(max, line(&exact));
        assert!(!p.cut);
        assert_eq!(text.as_bytes(), &exact[..]);
        assert!(!md.iter().any(|(n, _)| n == "truncated"));

        let over = vec![b'a'; max + 1];
        let (p, text, md) = one(max, line(&over));
        assert!(p.cut);
        assert_eq!(text.len(), max);
        assert_eq!(text, format!("{}{TRUNCATION_MARK}", "a".repeat(max - TRUNCATION_MARK.len())));
        assert!(md.contains(&("truncated".to_owned(), "true".to_owned())));

        // Far longer lines too (only a prefix is looked at).
        let huge = vec![b'b'; DEFAULT_MAX_LINE * 3];
        let (p, text, _) = one(DEFAULT_MAX_LINE, line(&huge));
        assert!(p.cut);
        assert_eq!(text.len(), DEFAULT_MAX_LINE);
        assert!(text.ends_with(TRUNCATION_MARK));
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let max = 100;
        let room = max - TRUNCATION_MARK.len();
        // A 3-byte character straddling the cut at every offset.
        for pad in 0..3 {
            let mut text = "x".repeat(room - pad).into_bytes();
            while text.len() <= max {
                text.extend_from_slice("✓".as_bytes());
            }
            let (p, got, _) = one(max, line(&text));
            assert!(p.cut);
            let kept = got.strip_suffix(TRUNCATION_MARK).unwrap();
            assert!(kept.len() <= room && kept.len() > room - 3, "pad {pad}: {}", kept.len());
            assert!(text.starts_with(kept.as_bytes()));
        }
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let (p, text, _) = one(100, line(b"ok \xff\xfe caf\xc3\xa9 \xe2\x82"));
        assert!(!p.cut);
        assert_eq!(text, "ok \u{fffd}\u{fffd} café \u{fffd}");

        // The conversion lengthens the line (1 byte → 3) past the limit: cut.
        let bad = vec![0xffu8; 40];
        let (p, text, _) = one(100, line(&bad));
        assert!(p.cut);
        assert!(text.len() <= 100);
        assert!(text.strip_suffix(TRUNCATION_MARK).unwrap().chars().all(|c| c == '\u{fffd}'));

        // An invalid sequence where the prefix ends does not change the cut.
        let mut long = vec![b'y'; 99];
        long.extend_from_slice(b"\xe2\x82\xac\xe2\x82\xac tail");
        let (_, text, _) = one(100, line(&long));
        assert_eq!(text, format!("{}{TRUNCATION_MARK}", "y".repeat(100 - TRUNCATION_MARK.len())));
    }

    #[test]
    fn lines_cut_upstream_get_the_mark_too() {
        let (p, text, md) = one(100, Line { timestamp_ns: 1, text: b"head of a long line", truncated: true });
        assert!(!p.cut, "not cut by the batch");
        assert_eq!(text, format!("head of a long line{TRUNCATION_MARK}"));
        assert!(md.contains(&("truncated".to_owned(), "true".to_owned())));
        // No room for the mark: text gives way.
        let (p, text, _) = one(100, Line { timestamp_ns: 1, text: &[b'z'; 95], truncated: true });
        assert!(!p.cut);
        assert_eq!(text.len(), 100);
        assert!(text.ends_with(TRUNCATION_MARK));
    }

    #[test]
    fn full_by_size_refuses_the_next_record() {
        let src = &sources(1)[0];
        let per_entry = 10 + src.metadata_bytes() + ENTRY_OVERHEAD;
        // Room for two and a half entries: the third is accepted (the batch
        // was not full yet), the fourth refused.
        let mut b = Batch::new(small(per_entry * 5 / 2, 100), Encoding::Protobuf);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(b.ready(t0), None);
            b.push(src, line(b"0123456789"), i, t0).unwrap();
        }
        assert_eq!(b.size(), per_entry * 3);
        assert!(b.is_full());
        assert_eq!(b.ready(t0), Some(Ready::Size));
        assert_eq!(b.push(src, line(b"0123456789"), 3, t0), Err(Full(3)));
        let f = b.finish().unwrap();
        assert_eq!((f.lines, f.line_bytes, f.cut, f.tokens), (3, 30, 0, vec![0, 1, 2]));
        assert!(b.is_empty() && !b.is_full());
        assert_eq!(b.size(), 0);
        b.push(src, line(b"0123456789"), 3, t0).unwrap();
    }

    #[test]
    fn a_flood_of_empty_lines_is_bounded() {
        let src = &sources(1)[0];
        let mut b = Batch::new(small(1000, 100), Encoding::Protobuf);
        let mut n = 0;
        while b.push(src, line(b""), (), Instant::now()).is_ok() {
            n += 1;
        }
        assert_eq!(n, 1000usize.div_ceil(src.metadata_bytes() + ENTRY_OVERHEAD));
    }

    #[test]
    fn age_counts_from_the_first_line() {
        let src = &sources(1)[0];
        let mut b = Batch::new(Limits::default(), Encoding::Json);
        let t0 = Instant::now();
        assert_eq!(b.deadline(), None);
        assert_eq!(b.ready(t0 + Duration::from_secs(10)), None, "empty: never ready");
        assert!(b.finish().is_none());
        b.push(src, line(b"a"), (), t0).unwrap();
        b.push(src, line(b"b"), (), t0 + Duration::from_millis(900)).unwrap();
        assert_eq!(b.deadline(), Some(t0 + DEFAULT_MAX_AGE));
        assert_eq!(b.ready(t0 + Duration::from_millis(999)), None);
        assert_eq!(b.ready(t0 + DEFAULT_MAX_AGE), Some(Ready::Age));
        let f = b.finish().unwrap();
        assert_eq!(f.opened, t0);
        assert_eq!(f.body.content_encoding, Some("gzip"));
        assert_eq!(b.deadline(), None);
        // The next batch's age starts with its own first line.
        let t1 = t0 + Duration::from_secs(5);
        b.push(src, line(b"c"), (), t1).unwrap();
        assert_eq!(b.deadline(), Some(t1 + DEFAULT_MAX_AGE));
    }

    use crate::agent::container::Rng;

    /// Records from several streams pushed through a run of batches, cut
    /// at size, at age and at random points: every line arrives once, each
    /// stream's in order, with its own metadata, and the tokens come back
    /// in push order. Both encodings, several seeds.
    #[test]
    fn splitting_across_batches_preserves_order_and_count() {
        for encoding in [Encoding::Protobuf, Encoding::Json] {
            for seed in 1..=6u64 {
                let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let srcs = sources(5);
                let max_line = 200;
                let limits = Limits {
                    max_bytes: 300 + rng.below(3000) as usize,
                    max_age: Duration::from_millis(50),
                    max_line,
                };
                let mut b: Batch<(usize, u64)> = Batch::new(limits, encoding);
                let mut now = Instant::now();
                let mut sent: Vec<Finished<(usize, u64)>> = Vec::new();
                // Per source: the (timestamp, line) pushed.
                let mut want: Vec<Vec<(i64, String)>> = vec![Vec::new(); srcs.len()];
                let mut tokens = Vec::new();
                for n in 0..2000u64 {
                    let s = rng.below(srcs.len() as u64) as usize;
                    let len = match rng.below(20) {
                        0 => max_line + rng.below(100) as usize,
                        1 => 0,
                        _ => rng.below(60) as usize,
                    };
                    let text: Vec<u8> = (0..len).map(|i| b'a' + ((n as usize + i) % 26) as u8).collect();
                    let ts = 1_795_808_902_000_000_000 + n as i64 * 1000;
                    let l = Line { timestamp_ns: ts, text: &text, truncated: false };
                    now += Duration::from_millis(rng.below(10));
                    if b.ready(now).is_some() || rng.below(200) == 0 {
                        sent.extend(b.finish());
                    }
                    let pushed = match b.push(&srcs[s], l, (s, n), now) {
                        Ok(p) => p,
                        Err(Full(token)) => {
                            sent.extend(b.finish());
                            b.push(&srcs[s], l, token, now).unwrap()
                        }
                    };
                    assert!(b.size() <= limits.max_bytes + max_line + 200, "bounded");
                    let expect = if pushed.cut {
                        let t = String::from_utf8(text[..max_line - TRUNCATION_MARK.len()].to_vec()).unwrap();
                        t + TRUNCATION_MARK
                    } else {
                        String::from_utf8(text).unwrap()
                    };
                    want[s].push((ts, expect));
                    tokens.push((s, n));
                }
                sent.extend(b.finish());
                assert!(sent.len() > 5, "seed {seed}: {} batches", sent.len());

                let mut got: Vec<Vec<(i64, String)>> = vec![Vec::new(); srcs.len()];
                let by_labels: HashMap<&str, usize> =
                    srcs.iter().enumerate().map(|(i, s)| (s.rendered(), i)).collect();
                let mut lines = 0;
                for f in &sent {
                    assert_eq!(f.body.content_type, encoding.content_type());
                    lines += f.lines;
                    let decoded = decode_body(&f.body);
                    assert_eq!(decoded.iter().map(|s| s.1.len()).sum::<usize>(), f.lines);
                    for (labels, entries) in decoded {
                        let s = by_labels[labels.as_str()];
                        for (ts, line, metadata) in entries {
                            assert_eq!(metadata[0], ("container_id".to_owned(), format!("{s:064x}")));
                            got[s].push((ts, line));
                        }
                    }
                }
                assert_eq!(lines, 2000);
                assert_eq!(got, want, "{encoding} seed {seed}");
                let back: Vec<_> = sent.into_iter().flat_map(|f| f.tokens).collect();
                assert_eq!(back, tokens);
            }
        }
    }
}
