//! Where a container's log stream resumes after it is closed, and how the
//! lines a resumed stream sends again are recognised and dropped.
//!
//! What dockerd gives us to work with (moby's source, checked on 20.10):
//! - `since` takes `<sec>.<9 digits>` and is inclusive.
//! - Timestamps are stamped by one copier per stream before the message
//!   reaches the log file, so within a stream they never decrease, but a
//!   stderr line may sit in the file after a stdout line stamped later.
//! - dockerd 20.10 filters every message by `since`; 24.0+ stops filtering
//!   after the first message at or after `since`.
//! - The 16 KiB partials of one long line all carry the first one's
//!   timestamp, and a stream cut mid-line must send the whole line again.
//!
//! So a stream resumes at `since = last delivered timestamp - margin`
//! (never after the start of a line still open when it was cut), and every
//! delivered line's [`Fingerprint`] is kept for timestamps down to
//! `since - margin`. A line that comes again has the same fingerprint and is
//! dropped; a line with a timestamp older than what the window covers can
//! only be new (an inversion larger than the margin), so it is delivered.
//!
//! With `tail=K` (cheap for dockerd, see [`tail_for`]) the first complete
//! line of the response proves whether the tail window reached back far
//! enough: see [`Resume::check_first_line`].

use std::collections::{HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::record::Record;

/// How far before the last delivered line a stream resumes. Cross-stream
/// timestamp inversions in dockerd are microseconds to milliseconds; a
/// second leaves a wide safety margin and costs only re-reading (and
/// dropping) one second of lines per reopen.
pub const DEFAULT_MARGIN_NS: i64 = 1_000_000_000;

/// Most fingerprints kept per container. At 20 000 lines/s sustained this
/// still covers the two margins; past it the window's floor rises (and the
/// resume point with it), trading a theoretical inversion loss for bounded
/// memory (24 bytes per entry plus the set's overhead).
pub const DEFAULT_MAX_WINDOW: usize = 40_000;

/// Identifies a delivered line: its timestamp, stream, its index among the
/// lines of that stream with the same timestamp (dockerd's clock can repeat),
/// and a hash of its length and ends (cheap on megabyte lines; the first
/// three fields already identify the line, the hash guards against a
/// miscount).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "(i64, u8, u32, u64)", from = "FingerprintRepr")]
pub struct Fingerprint {
    pub ts: i64,
    pub stream: u8,
    pub occ: u32,
    pub hash: u64,
}

/// A fingerprint in a checkpoint: `[ts, stream, occ, hash]` (what is
/// written: a busy container keeps thousands, so the short form counts), or
/// the object form the first checkpoints used.
#[derive(Deserialize)]
#[serde(untagged)]
enum FingerprintRepr {
    Array(i64, u8, u32, u64),
    Object { ts: i64, stream: u8, occ: u32, hash: u64 },
}

impl From<FingerprintRepr> for Fingerprint {
    fn from(r: FingerprintRepr) -> Self {
        match r {
            FingerprintRepr::Array(ts, stream, occ, hash)
            | FingerprintRepr::Object { ts, stream, occ, hash } => Fingerprint { ts, stream, occ, hash },
        }
    }
}

impl From<Fingerprint> for (i64, u8, u32, u64) {
    fn from(f: Fingerprint) -> Self {
        (f.ts, f.stream, f.occ, f.hash)
    }
}

/// FNV-1a over the length and the first and last 32 bytes of a message.
pub fn message_hash(msg: &[u8], truncated: bool) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&(msg.len() as u64).to_le_bytes());
    eat(&[u8::from(truncated)]);
    if msg.len() <= 64 {
        eat(msg);
    } else {
        eat(&msg[..32]);
        eat(&msg[msg.len() - 32..]);
    }
    h
}

/// Counts the occurrence index of each line among the lines of its stream
/// with the same timestamp. One per connection: a resumed stream starts at
/// or before the first line of any timestamp it replays, so indices match.
#[derive(Debug, Default, Clone)]
pub struct Occurrences {
    last: [(i64, u32); 3],
}

impl Occurrences {
    pub fn fingerprint(&mut self, rec: &Record<'_>) -> Fingerprint {
        let ts = rec.timestamp.unwrap_or(i64::MIN);
        let slot = &mut self.last[(rec.stream as usize).min(2)];
        let occ = if slot.0 == ts { slot.1 + 1 } else { 0 };
        *slot = (ts, occ);
        Fingerprint { ts, stream: rec.stream as u8, occ, hash: message_hash(rec.message, rec.truncated) }
    }
}

/// What [`Resume::check_first_line`] concluded about a `tail=K` response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailCheck {
    /// The response reaches back to what was delivered: nothing is missing.
    Complete,
    /// The tail window may start after the resume point: lines could be
    /// missing before it. Reopen with `since` alone before delivering any.
    CatchUp,
}

/// The persistent resume state of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resume {
    /// Where the very first stream started (container start, agent start,
    /// or 0 for the whole backlog): no stream asks for earlier lines.
    pub start_since: i64,
    /// Newest timestamp of any delivered line.
    pub last_ts: Option<i64>,
    /// Every delivered line with a timestamp >= `floor` is in `window`
    /// (`i64::MIN` until the window first forgets a line).
    pub floor: i64,
    /// Per stream (stdin, stdout, stderr): the timestamp of a line a cut
    /// stream had begun and not finished. The next stream must start at or
    /// before it so that the line comes again whole; cleared once a line of
    /// that stream at or after it is delivered.
    #[serde(default)]
    pub open_lines: [Option<i64>; 3],
    /// Fingerprints of delivered lines, in delivery order.
    window: VecDeque<Fingerprint>,
    #[serde(skip)]
    set: HashSet<Fingerprint>,
    #[serde(skip, default = "default_margin")]
    margin: i64,
    #[serde(skip, default = "default_max_window")]
    max_window: usize,
}

fn default_margin() -> i64 {
    DEFAULT_MARGIN_NS
}

fn default_max_window() -> usize {
    DEFAULT_MAX_WINDOW
}

impl Resume {
    pub fn new(start_since: i64) -> Self {
        Self {
            start_since,
            last_ts: None,
            floor: i64::MIN,
            open_lines: [None; 3],
            window: VecDeque::new(),
            set: HashSet::new(),
            margin: DEFAULT_MARGIN_NS,
            max_window: DEFAULT_MAX_WINDOW,
        }
    }

    pub fn with_limits(mut self, margin_ns: i64, max_window: usize) -> Self {
        self.margin = margin_ns.max(0);
        self.max_window = max_window.max(1);
        self
    }

    /// Rebuild the lookup set after loading from a checkpoint.
    pub fn restore(mut self, margin_ns: i64, max_window: usize) -> Self {
        self.set = self.window.iter().copied().collect();
        self.with_limits(margin_ns, max_window)
    }

    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// A stream was cut; `open`: per stream, the timestamp of a line it had
    /// begun and not finished (see [`crate::docker::logstream::LogStreamDecoder::open_lines`]).
    pub fn cut(&mut self, open: [Option<i64>; 3]) {
        for (mine, theirs) in self.open_lines.iter_mut().zip(open) {
            *mine = match (*mine, theirs) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }

    /// The earliest open line's timestamp, if any.
    pub fn open_line_ts(&self) -> Option<i64> {
        self.open_lines.iter().flatten().min().copied()
    }

    /// The `since` for the next stream, in nanoseconds.
    pub fn since(&self) -> i64 {
        let open_line_ts = self.open_line_ts();
        let since = match self.last_ts {
            None => self.start_since,
            Some(last) => {
                let wanted = self.start_since.max(last.saturating_sub(self.margin));
                // If the window's floor rose (the cap), replays below
                // floor + margin could not be recognised: resume later, but
                // never after the last delivered line (duplicates rather
                // than loss).
                wanted.max(self.floor.saturating_add(self.margin).min(last))
            }
        };
        open_line_ts.map_or(since, |open| since.min(open))
    }

    /// True if the line was delivered before (a replay after a reopen).
    pub fn is_duplicate(&self, fp: &Fingerprint) -> bool {
        // Newer than anything delivered, or older than the window covers:
        // new either way.
        match self.last_ts {
            Some(last) if fp.ts <= last && fp.ts >= self.floor => self.set.contains(fp),
            _ => false,
        }
    }

    /// Record a delivered line.
    pub fn delivered(&mut self, fp: Fingerprint) {
        let last = self.last_ts.map_or(fp.ts, |l| l.max(fp.ts));
        self.last_ts = Some(last);
        if self.set.insert(fp) {
            self.window.push_back(fp);
        }
        // Timestamps never decrease within a stream: a line of this stream
        // at or after the open one means the open line was delivered.
        let slot = &mut self.open_lines[usize::from(fp.stream).min(2)];
        if slot.is_some_and(|open| fp.ts >= open) {
            *slot = None;
        }
        // The window keeps fingerprints back to an open line so that its
        // resend, and the lines replayed with it, are recognised.
        let mut keep_from = last.saturating_sub(2 * self.margin);
        if let Some(open) = self.open_line_ts() {
            keep_from = keep_from.min(open.saturating_sub(self.margin));
        }
        self.evict(keep_from);
    }

    fn evict(&mut self, keep_from: i64) {
        while let Some(front) = self.window.front().copied() {
            let over_cap = self.window.len() > self.max_window;
            if front.ts >= keep_from && !over_cap {
                break;
            }
            self.window.pop_front();
            self.set.remove(&front);
            if over_cap {
                // Lines at this timestamp may no longer all be known.
                self.floor = self.floor.max(front.ts.saturating_add(1));
            }
        }
        self.floor = self.floor.max(keep_from);
    }

    /// Decide on the first complete line of a `tail=K&since=…` response,
    /// before delivering it. `requested_at`: the agent's clock when the
    /// request was sent (lines older than that are history).
    ///
    /// If the tail window reached back to the last delivered line, the first
    /// line it returns (the first at or after `since`) was delivered before
    /// and is in the window. A history line we never saw means the window
    /// started later, and lines between may be missing.
    pub fn check_first_line(&self, fp: &Fingerprint, requested_at: i64) -> TailCheck {
        if self.last_ts.is_none() || fp.ts >= requested_at || self.is_duplicate(fp) {
            TailCheck::Complete
        } else {
            TailCheck::CatchUp
        }
    }
}

/// Lines a `tail=K` reopen should ask for: the lines the stream's recent
/// rate predicts since the resume point, times four, and never fewer than
/// 1 000 (10 ms of dockerd's time on a 77 MB log, measured) nor more than a
/// million. `rate` is messages per second (a dockerd partial counts as one).
pub fn tail_for(rate: f64, since_ns: i64, now_ns: i64) -> u64 {
    let gap_s = ((now_ns - since_ns).max(0) as f64) / 1e9;
    let predicted = rate.max(0.0) * (gap_s + 1.0) * 4.0;
    (predicted.ceil() as u64).clamp(1_000, 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::frame::StreamId;

    const S: i64 = 1_000_000_000;

    fn rec(ts: i64, stream: StreamId, msg: &[u8]) -> Record<'_> {
        Record { timestamp: Some(ts), stream, message: msg, truncated: false, partial: false }
    }

    #[test]
    fn occurrence_index_counts_repeats_per_stream() {
        let mut occ = Occurrences::default();
        let a = occ.fingerprint(&rec(5, StreamId::Stdout, b"x"));
        let b = occ.fingerprint(&rec(5, StreamId::Stderr, b"x"));
        let c = occ.fingerprint(&rec(5, StreamId::Stdout, b"x"));
        let d = occ.fingerprint(&rec(6, StreamId::Stdout, b"x"));
        assert_eq!((a.occ, b.occ, c.occ, d.occ), (0, 0, 1, 0));
        assert_ne!(a, c);
    }

    #[test]
    fn fingerprints_are_written_short_and_read_in_both_forms() {
        let fp = Fingerprint { ts: 5, stream: 2, occ: 1, hash: u64::MAX };
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(json, "[5,2,1,18446744073709551615]");
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fp);
        let old = r#"{"ts":5,"stream":2,"occ":1,"hash":18446744073709551615}"#;
        assert_eq!(serde_json::from_str::<Fingerprint>(old).unwrap(), fp);
    }

    #[test]
    fn hash_sees_length_ends_and_truncation() {
        let long_a = [b'a'; 100];
        let mut long_b = long_a;
        long_b[99] = b'b';
        assert_ne!(message_hash(&long_a, false), message_hash(&long_b, false));
        assert_ne!(message_hash(b"x", false), message_hash(b"x", true));
        assert_ne!(message_hash(b"", false), message_hash(b"\0", false));
    }

    /// Simulate a log file (in file order) and a stream cut after `cut`
    /// lines, then a resumed stream; return what is delivered in total.
    fn deliver_with_cut(file: &[(i64, StreamId, &str)], cut: usize, since_filter_all: bool) -> Vec<String> {
        let mut resume = Resume::new(0);
        let mut out = Vec::new();
        let mut occ = Occurrences::default();
        for &(ts, s, m) in &file[..cut] {
            let fp = occ.fingerprint(&rec(ts, s, m.as_bytes()));
            assert!(!resume.is_duplicate(&fp));
            resume.delivered(fp);
            out.push(m.to_string());
        }
        let since = resume.since();
        // dockerd's answer to `since`: 20.10 filters every line; 24.0+
        // stops filtering at the first match.
        let mut replay: Vec<_> = Vec::new();
        let mut matched = false;
        for &(ts, s, m) in file {
            if ts >= since || (matched && !since_filter_all) {
                matched = true;
                replay.push((ts, s, m));
            }
        }
        let mut occ = Occurrences::default();
        for (ts, s, m) in replay {
            let fp = occ.fingerprint(&rec(ts, s, m.as_bytes()));
            if !resume.is_duplicate(&fp) {
                resume.delivered(fp);
                out.push(m.to_string());
            }
        }
        out
    }

    #[test]
    fn every_cut_point_delivers_each_line_once_both_since_modes() {
        // stdout and stderr interleaved with small inversions, repeated
        // timestamps and identical messages.
        use StreamId::{Stderr as E, Stdout as O};
        let file = [
            (10 * S, O, "o1"),
            (10 * S + 5, E, "e1"),
            (10 * S + 3, O, "o2"), // inverted across streams
            (10 * S + 3, O, "o2"), // same ts, same text: a second line
            (11 * S, E, "e2"),
            (11 * S, E, "e3"),
            (12 * S, O, "o3"),
            (12 * S - 200, E, "e4"), // inverted by 200 ns
            (15 * S, O, "o4"),
            (15 * S, O, "o5"),
        ];
        let want: Vec<String> = file.iter().map(|l| l.2.to_string()).collect();
        for filter_all in [true, false] {
            for cut in 0..=file.len() {
                assert_eq!(
                    deliver_with_cut(&file, cut, filter_all),
                    want,
                    "cut {cut}, filter_all {filter_all}"
                );
            }
        }
    }

    #[test]
    fn resume_point_is_a_margin_before_the_last_line_and_before_an_open_line() {
        let mut r = Resume::new(0);
        assert_eq!(r.since(), 0);
        r.delivered(Fingerprint { ts: 100 * S, stream: 1, occ: 0, hash: 1 });
        assert_eq!(r.since(), 99 * S);
        // A 16 KiB partial line begun at 99.5 s and cut: the margin covers it.
        r.cut([None, Some(99 * S + S / 2), None]);
        assert_eq!(r.since(), 99 * S);
        // One begun at 50 s on stderr: resume at its start, and keep doing so
        // across further cuts until a stderr line at or after it arrives.
        r.cut([None, None, Some(50 * S)]);
        assert_eq!(r.since(), 50 * S);
        r.cut([None; 3]);
        assert_eq!(r.since(), 50 * S);
        r.delivered(Fingerprint { ts: 101 * S, stream: 1, occ: 0, hash: 2 });
        assert_eq!(r.since(), 50 * S, "a stdout line does not finish a stderr line");
        r.delivered(Fingerprint { ts: 50 * S, stream: 2, occ: 0, hash: 3 });
        assert_eq!(r.since(), 100 * S);
        // Never before the first stream's start.
        let mut r = Resume::new(100 * S);
        r.delivered(Fingerprint { ts: 100 * S + 1, stream: 1, occ: 0, hash: 1 });
        assert_eq!(r.since(), 100 * S);
    }

    #[test]
    fn window_forgets_old_lines_and_stays_bounded() {
        let mut r = Resume::new(0).with_limits(S, 1000);
        for i in 0..10_000i64 {
            r.delivered(Fingerprint { ts: i * S / 100, stream: 1, occ: 0, hash: i as u64 });
        }
        // 100 lines/s, two margins = 2 s kept: about 200 lines.
        assert!((190..=210).contains(&r.window_len()), "{}", r.window_len());
        assert_eq!(r.floor, 9_999 * S / 100 - 2 * S);
        // A flood: the cap holds, the floor rises.
        for i in 0..5_000i64 {
            r.delivered(Fingerprint { ts: 100 * S, stream: 1, occ: i as u32, hash: 0 });
        }
        assert!(r.window_len() <= 1000);
        assert!(r.floor > 100 * S);
        // Not all lines at 100 s are known any more: resume at 100 s, which
        // may repeat some of them but cannot lose any.
        assert_eq!(r.since(), 100 * S);
    }

    #[test]
    fn tail_check() {
        let mut r = Resume::new(0);
        let old = Fingerprint { ts: 100 * S, stream: 1, occ: 0, hash: 7 };
        // Nothing delivered yet: nothing can be missing before the window.
        assert_eq!(r.check_first_line(&old, 200 * S), TailCheck::Complete);
        r.delivered(old);
        // The first line is one we delivered: the window reaches back.
        assert_eq!(r.check_first_line(&old, 200 * S), TailCheck::Complete);
        // A history line we never saw: lines may be missing before it.
        let unseen = Fingerprint { ts: 150 * S, stream: 1, occ: 0, hash: 8 };
        assert_eq!(r.check_first_line(&unseen, 200 * S), TailCheck::CatchUp);
        // A line written after the request: the history part was empty.
        assert_eq!(r.check_first_line(&unseen, 120 * S), TailCheck::Complete);
    }

    #[test]
    fn tail_sizes() {
        assert_eq!(tail_for(0.0, 0, 3600 * S), 1_000);
        assert_eq!(tail_for(100.0, 0, 9 * S), 4_000);
        assert_eq!(tail_for(1e9, 0, 3600 * S), 1_000_000);
    }

    #[test]
    fn checkpoint_round_trip() {
        let mut r = Resume::new(5 * S);
        let fp = Fingerprint { ts: 100 * S, stream: 2, occ: 1, hash: 9 };
        r.delivered(fp);
        r.cut([None, Some(90 * S), None]);
        let json = serde_json::to_string(&r).unwrap();
        let back = serde_json::from_str::<Resume>(&json).unwrap().restore(DEFAULT_MARGIN_NS, 10);
        assert!(back.is_duplicate(&fp));
        assert_eq!(back.since(), 90 * S);
        assert_eq!(back.since(), r.since());
    }
}
