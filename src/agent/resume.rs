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
//! (never after the start of a line still open when it was cut), and a
//! resumed stream sends, per stream, the lines it delivered before in the
//! same order, then new ones. Because timestamps never decrease within a
//! stream, the newest delivered line of each stream (its [`Fingerprint`]:
//! timestamp, index among equal timestamps, hash) is all it takes to tell
//! a replay from a new line: at or before it is a replay. Three
//! fingerprints per container, whatever its rate: memory and checkpoints
//! stay the same size when a container floods.
//!
//! Once a connection has passed the newest delivered line of a stream,
//! everything after it on that connection is new, even if the wall clock
//! steps back ([`Replay`]). After such a step the resume point follows the
//! clock back (the newest delivered line, not the latest timestamp), and
//! lines stamped after the newest one but delivered before it (the ones
//! from before the step) are remembered as the stream's `high` mark so a
//! later stream does not take them for new. A connection opened with a
//! `since` may not have been sent the lines stamped from the step until
//! that `since` (dockerd 20.10 filters them out): it stops at the first
//! line that shows the step, and the next one reads from the start of the
//! log ([`Resume::steps_back`], [`Resume::refill`]).
//!
//! A resume point is only as good as the clock that stamped it: one later
//! than dockerd's own clock (a checkpoint written before the clock stepped
//! back, or a forged one) would filter out or drop every new line. See
//! [`Resume::latest`], [`Resume::check_values`] and [`Resume::after_clock_step`].
//!
//! With `tail=K` (cheap for dockerd, see [`tail_for`]) the first complete
//! line of the response proves whether the tail window reached back far
//! enough: see [`Resume::check_first_line`]. A first stream has nothing to
//! check against; if its window was full, lines before it may be missing,
//! and a [`Gap`] makes the next stream read them from the original `since`.

use serde::{Deserialize, Serialize};

use crate::record::Record;

/// How far before the last delivered line a stream resumes. Cross-stream
/// timestamp inversions in dockerd are microseconds to milliseconds; a
/// second leaves a wide safety margin and costs only re-reading (and
/// dropping) one second of lines per reopen.
pub const DEFAULT_MARGIN_NS: i64 = 1_000_000_000;

/// Identifies a delivered line: its timestamp, stream, its index among the
/// lines of that stream with the same timestamp (dockerd's clock can repeat),
/// and a hash of its length and ends ([`message_hash`]: the first three
/// fields already identify the line, the hash guards against a miscount).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(from = "FingerprintRepr")]
pub struct Fingerprint {
    pub ts: i64,
    pub stream: u8,
    pub occ: u32,
    pub hash: u64,
    /// Not always [`message_hash`]: a checkpoint of an earlier agent holds
    /// FNV-1a hashes, which stay until their line is seen again
    /// ([`Resume::convert_fnv1a`]).
    pub hash_fn: HashFn,
}

/// The function behind a fingerprint's hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashFn {
    /// [`message_hash`].
    #[default]
    Words,
    /// [`fnv1a_message_hash`], in checkpoints without `fingerprint_hash`.
    Fnv1a,
}

impl Fingerprint {
    /// Its place in its stream's order.
    fn pos(&self) -> (i64, u32) {
        (self.ts, self.occ)
    }

    fn slot(&self) -> usize {
        usize::from(self.stream).min(2)
    }

    /// Whether the hashes say it is the same text. Hashes of two functions
    /// never match: a line whose FNV-1a matched a stored one was converted
    /// before it was judged, so an FNV-1a hash still stored is another
    /// line's, as FNV-1a itself would have found.
    fn same_text(&self, other: &Fingerprint) -> bool {
        self.hash == other.hash && self.hash_fn == other.hash_fn
    }
}

/// A fingerprint in a checkpoint: `[ts, stream, occ, hash]`, or the object
/// form the first checkpoints used, which is also how a fingerprint that
/// still holds an FNV-1a hash is written (`"fn":"fnv1a"`; agents before
/// `fingerprint_hash` read it and ignore `fn`, and it is right for them).
#[derive(Deserialize)]
#[serde(untagged)]
enum FingerprintRepr {
    Array(i64, u8, u32, u64),
    Object {
        ts: i64,
        stream: u8,
        occ: u32,
        hash: u64,
        #[serde(default, rename = "fn")]
        hash_fn: HashFn,
    },
}

impl From<FingerprintRepr> for Fingerprint {
    fn from(r: FingerprintRepr) -> Self {
        match r {
            FingerprintRepr::Array(ts, stream, occ, hash) => {
                Fingerprint { ts, stream, occ, hash, hash_fn: HashFn::Words }
            }
            FingerprintRepr::Object { ts, stream, occ, hash, hash_fn } => {
                Fingerprint { ts, stream, occ, hash, hash_fn }
            }
        }
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        match self.hash_fn {
            HashFn::Words => (self.ts, self.stream, self.occ, self.hash).serialize(s),
            HashFn::Fnv1a => {
                let mut o = s.serialize_struct("Fingerprint", 5)?;
                o.serialize_field("ts", &self.ts)?;
                o.serialize_field("stream", &self.stream)?;
                o.serialize_field("occ", &self.occ)?;
                o.serialize_field("hash", &self.hash)?;
                o.serialize_field("fn", "fnv1a")?;
                o.end()
            }
        }
    }
}

/// Which hash the fingerprints of a checkpoint hold: `fingerprint_hash` in
/// the file. Files without it (every agent before) hold
/// [`fnv1a_message_hash`]; each of their fingerprints is converted when its
/// line comes again ([`Resume::convert_fnv1a`]). Any change to
/// [`message_hash`] (its values are pinned in the tests) bumps it, and
/// keeps the function it replaces to convert from.
pub const FINGERPRINT_HASH: u32 = 2;

/// The hash in a line's fingerprint: its length, the truncated flag, and
/// its first and last 32 bytes (all of it up to 64 bytes), read 8 bytes at
/// a time, each word folded in by a bijective mixer.
///
/// What the resume logic relies on. Hashes are compared only between
/// lines of one stream stamped in the same nanosecond, never to order
/// lines: at the newest delivered line's place (a match drops the line as
/// its replay, a mismatch delivers it), at a gap's first delivered line
/// (a match ends the gap of that stream there), and at the first line of
/// each stream of a `tail` window (a match proves the window reaches back;
/// a mismatch reads again without `tail`). So:
/// - Equal lines hash alike, in every run and on every machine: the hashes
///   are saved in checkpoints. Nothing but the bytes goes in (no seed,
///   little-endian reads, the length as a u64).
/// - A false mismatch costs a repeated line or a reread; a false match can
///   lose lines: another line of the group dropped as the newest one's
///   replay, or a window or gap taken to be aligned when it is not, and
///   the new lines after it taken for replays.
///
/// Why the length and the ends suffice: the timestamp and index already
/// identify the line, and the hash is compared only where they could be
/// wrong, against another line of the same stream and nanosecond (a
/// coarse clock, or a `tail` window begun inside such a group). Two lines
/// of such a group with the same length, flag and first and last 32 bytes
/// that differ only in between are taken for each other: that is the
/// price of reading 64 bytes of a megabyte line, and FNV-1a over the same
/// bytes paid it too. Otherwise:
/// - Lines whose words read are the same but whose length or flag differ
///   never collide (the last step is a bijection of the length word); nor
///   do lines of one length and flag that differ only within one of the
///   words read (every step is a bijection of the state). Up to 64 bytes
///   every byte is read; from 65 on, bytes 32 to `len - 33` are not.
/// - Other pairs collide with a probability of about 2^-64. Text crafted to
///   collide is easy (the mixer is public and invertible), but it only
///   makes the agent drop lines of the container that writes it, which
///   could as well not write them.
pub fn message_hash(msg: &[u8], truncated: bool) -> u64 {
    let n = msg.len();
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    let mut eat = |w: u64| h = mix(h ^ w);
    // Overlapping reads cover every byte of a short message in a few words
    // (the length, folded in last, tells the overlaps apart).
    if n >= 32 {
        for at in [0, 8, 16, 24, n - 32, n - 24, n - 16, n - 8] {
            eat(word(msg, at));
        }
    } else if n >= 16 {
        for at in [0, 8, n - 16, n - 8] {
            eat(word(msg, at));
        }
    } else if n >= 8 {
        eat(word(msg, 0));
        eat(word(msg, n - 8));
    } else {
        let mut w = [0u8; 8];
        w[..n].copy_from_slice(msg);
        eat(u64::from_le_bytes(w));
    }
    mix(h ^ ((n as u64) << 1 | u64::from(truncated)))
}

/// The 8 bytes of `msg` at `at`, little-endian whatever the machine.
#[inline(always)]
fn word(msg: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&msg[at..at + 8]);
    u64::from_le_bytes(w)
}

/// A bijection of u64 in which every input bit reaches every output bit:
/// xor-shifts and odd multipliers, each invertible (the constants are
/// SplitMix64's finalizer, David Stafford's "Mix13").
#[inline(always)]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The hash of every agent before [`FINGERPRINT_HASH`] 2: FNV-1a, a byte
/// at a time, over the length, the truncated flag and the bytes
/// [`message_hash`] reads. Kept to convert their checkpoints; do not change
/// it (its values are pinned in the tests).
pub fn fnv1a_message_hash(msg: &[u8], truncated: bool) -> u64 {
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

/// What one connection knows about its own lines: the occurrence index of
/// each line among the lines of its stream with the same timestamp (a
/// resumed stream starts at or before the first line of any timestamp it
/// replays, so indices match; in a `tail` window the first timestamp of
/// each stream may be cut, see [`Resume::check_stream_start`]), per stream
/// whether a line was seen and whether it has passed the replayed part, and
/// the first line it delivered.
#[derive(Debug, Default, Clone)]
pub struct Replay {
    last: [(i64, u32); 3],
    seen: [bool; 3],
    past: [bool; 3],
    first: [Option<Fingerprint>; 3],
}

impl Replay {
    pub fn fingerprint(&mut self, rec: &Record<'_>) -> Fingerprint {
        let ts = rec.timestamp.unwrap_or(i64::MIN);
        let slot = &mut self.last[(rec.stream as usize).min(2)];
        let occ = if slot.0 == ts { slot.1 + 1 } else { 0 };
        *slot = (ts, occ);
        Fingerprint {
            ts,
            stream: rec.stream as u8,
            occ,
            hash: message_hash(rec.message, rec.truncated),
            hash_fn: HashFn::Words,
        }
    }

    /// Whether any line was fingerprinted on this connection yet.
    pub fn seen_any(&self) -> bool {
        self.seen.iter().any(|&s| s)
    }

    /// True for the first line of its stream on this connection.
    pub fn opens_stream(&mut self, fp: &Fingerprint) -> bool {
        !std::mem::replace(&mut self.seen[fp.slot()], true)
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

/// Lines a first stream may have missed: it was opened with `tail` and
/// nothing to check the window against, and the window was full. Per
/// stream, lines before the first one that stream delivered may be
/// missing; the next streams start at `from` (the first stream's `since`)
/// until each stream has reached that line again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub from: i64,
    /// Per stream: the first delivered line; None once read up to it (or
    /// if the stream delivered nothing, so it has nothing to protect).
    pub until: [Option<Fingerprint>; 3],
    /// Per stream: the newest line delivered from inside the gap.
    pub done: [Option<Fingerprint>; 3],
}

/// The persistent resume state of one container: a few fixed-size fields.
#[derive(Debug, Clone, Serialize)]
pub struct Resume {
    /// Where the very first stream started (container start, agent start,
    /// or 0 for the whole backlog): no stream asks for earlier lines.
    pub start_since: i64,
    /// Newest timestamp of any delivered line.
    pub last_ts: Option<i64>,
    /// Per stream (stdin, stdout, stderr): the timestamp of a line a cut
    /// stream had begun and not finished. The next stream must start at or
    /// before it so that the line comes again whole; cleared once a line of
    /// that stream at or after it is delivered.
    pub open_lines: [Option<i64>; 3],
    /// Per stream: the line delivered last, outside any [`Gap`].
    pub newest: [Option<Fingerprint>; 3],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap: Option<Gap>,
    /// Per stream: the highest line delivered, when it is not the newest
    /// (the clock stepped back since): a stream that has not yet passed
    /// the newest line takes lines up to this one for replays. None in
    /// the normal case.
    #[serde(skip_serializing_if = "no_fingerprints", default)]
    pub high: [Option<Fingerprint>; 3],
    /// After the clock was found to have stepped back: Docker's time then.
    /// No stream asks for lines later than a margin before it, so lines
    /// stamped from the step on are asked for even while delivered lines
    /// from before it carry later timestamps. Not saved: a restart checks
    /// the saved state against the clock again.
    #[serde(skip)]
    pub floor: Option<i64>,
    /// The next stream reads the whole log (`since` 0): a stream opened
    /// with a later `since` saw the clock step back, and dockerd 20.10
    /// filters every line of a stream by `since`, so lines stamped after
    /// the step but before that `since` never came (see
    /// [`Resume::steps_back`]). One-shot: the plan that reads from 0 clears
    /// it; should that stream be cut before it passes the newest delivered
    /// line, the next one sees the step again and sets it again. Not
    /// saved: a restart vets the checkpoint against Docker's clock, and its
    /// first stream sees the step again if the vet does not.
    #[serde(skip)]
    pub refill: bool,
    /// Read from a checkpoint and not yet checked against the values the
    /// agent writes and Docker's clock (see [`Resume::check_values`]).
    #[serde(skip)]
    pub loaded: bool,
    /// Some fingerprint may still hold an FNV-1a hash: until none does,
    /// each line is checked against them ([`Resume::convert_fnv1a`]).
    /// Not saved: each fingerprint says which hash it holds.
    #[serde(skip)]
    pub fnv1a: bool,
}

fn no_fingerprints(f: &[Option<Fingerprint>; 3]) -> bool {
    f.iter().all(Option::is_none)
}

/// Why a resume state cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untrusted {
    /// A value the agent never writes (a negative time, a fingerprint in
    /// another stream's slot…): a damaged or hand-edited checkpoint.
    Invalid(String),
    /// Later than Docker's clock: the clock stepped back since it was
    /// written, or it was forged. Lines stamped before it would be filtered
    /// out or dropped as replays.
    Future { latest: i64 },
}

/// A checkpoint's resume state, also in the first format (every recent
/// line's fingerprint in `window`: the newest of each stream is kept).
#[derive(Deserialize)]
struct ResumeRepr {
    start_since: i64,
    last_ts: Option<i64>,
    #[serde(default)]
    open_lines: [Option<i64>; 3],
    #[serde(default)]
    newest: Option<[Option<Fingerprint>; 3]>,
    #[serde(default)]
    window: Vec<Fingerprint>,
    #[serde(default)]
    gap: Option<Gap>,
    #[serde(default)]
    high: [Option<Fingerprint>; 3],
}

impl<'de> Deserialize<'de> for Resume {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = ResumeRepr::deserialize(d)?;
        let newest = r.newest.unwrap_or_else(|| {
            let mut newest = [None; 3];
            for fp in r.window {
                let slot: &mut Option<Fingerprint> = &mut newest[fp.slot()];
                if !slot.is_some_and(|n| fp.pos() < n.pos()) {
                    *slot = Some(fp);
                }
            }
            newest
        });
        let mut res = Resume {
            start_since: r.start_since,
            last_ts: r.last_ts,
            open_lines: r.open_lines,
            newest,
            gap: r.gap,
            high: r.high,
            floor: None,
            refill: false,
            loaded: true,
            fnv1a: false,
        };
        let fnv1a = res.fingerprints_mut().any(|fp| fp.hash_fn == HashFn::Fnv1a);
        res.fnv1a = fnv1a;
        Ok(res)
    }
}

impl Resume {
    pub fn new(start_since: i64) -> Self {
        Self {
            start_since,
            last_ts: None,
            open_lines: [None; 3],
            newest: [None; 3],
            gap: None,
            high: [None; 3],
            floor: None,
            refill: false,
            loaded: false,
            fnv1a: false,
        }
    }

    /// Every fingerprint it holds.
    fn fingerprints_mut(&mut self) -> impl Iterator<Item = &mut Fingerprint> {
        let gap = self.gap.iter_mut().flat_map(|g| g.until.iter_mut().chain(g.done.iter_mut()));
        self.newest.iter_mut().chain(self.high.iter_mut()).chain(gap).flatten()
    }

    /// A state read from a checkpoint written before fingerprints said
    /// which hash they hold: every agent until then used FNV-1a.
    pub fn mark_fnv1a(&mut self) {
        let mut any = false;
        for fp in self.fingerprints_mut() {
            fp.hash_fn = HashFn::Fnv1a;
            any = true;
        }
        self.fnv1a = any;
    }

    /// Before a line is judged: a fingerprint still holding an FNV-1a hash
    /// (from an earlier agent's checkpoint) that this line matches (same
    /// stream and timestamp, same FNV-1a) takes this line's hash. Called
    /// for every line, so it costs a test of a flag once none is left.
    ///
    /// Why this keeps every decision FNV-1a would have made, so that an
    /// upgrade repeats and loses no line: hashes are compared only between
    /// lines of the same stream and timestamp, and each is converted by
    /// the first such line whose FNV-1a matches. That line has the same
    /// length, flag and ends as the stored one (up to an FNV-1a collision),
    /// so the lines [`message_hash`] then finds equal to it are those
    /// FNV-1a finds equal. A hash never converted matched no line so far,
    /// and `Fingerprint::same_text` says so. The timestamp alone is
    /// matched, not the index: a gap's first line is recognised by its
    /// hash in a group whose indices the window could not know.
    ///
    /// Fingerprints whose line never comes back (a stopped container, a
    /// line gone from the log) keep their FNV-1a hash, and it is saved with
    /// them.
    #[inline]
    pub fn convert_fnv1a(&mut self, line: &Fingerprint, rec: &Record<'_>) {
        if self.fnv1a {
            self.convert_fnv1a_now(line, rec);
        }
    }

    fn convert_fnv1a_now(&mut self, line: &Fingerprint, rec: &Record<'_>) {
        let mut fnv1a = None;
        let mut left = false;
        for fp in self.fingerprints_mut() {
            if fp.hash_fn != HashFn::Fnv1a {
                continue;
            }
            if fp.slot() == line.slot()
                && fp.ts == line.ts
                && *fnv1a.get_or_insert_with(|| fnv1a_message_hash(rec.message, rec.truncated)) == fp.hash
            {
                fp.hash = line.hash;
                fp.hash_fn = line.hash_fn;
            } else {
                left = true;
            }
        }
        self.fnv1a = left;
    }

    /// What replaces a state that cannot be trusted: the container's whole
    /// retained log, every line delivered again (repeats, never a loss).
    /// `docker_now`: Docker's clock (at most), if known; after a step back
    /// no stream asks for lines later than it (see [`Resume::floor`]).
    ///
    /// Not the container's creation time: after a step back that time is
    /// no lower bound either, and a log holds nothing older than its
    /// container otherwise, so reading from 0 costs the same.
    pub fn after_clock_step(docker_now: Option<i64>) -> Self {
        Self { floor: docker_now, ..Self::new(0) }
    }

    /// The latest time anywhere in the state: no line Docker has stamped
    /// yet can be later than its clock, so neither can this.
    pub fn latest(&self) -> i64 {
        let fps = self.newest.iter().chain(&self.high).flatten().map(|f| f.ts);
        let gap = self.gap.iter().flat_map(|g| {
            std::iter::once(g.from).chain(g.until.iter().chain(&g.done).flatten().map(|f| f.ts))
        });
        let opens = self.open_lines.iter().flatten().copied();
        std::iter::once(self.start_since)
            .chain(self.last_ts)
            .chain(fps)
            .chain(gap)
            .chain(opens)
            .max()
            .unwrap_or(self.start_since)
    }

    /// Values the agent never writes: a damaged or hand-edited checkpoint.
    /// Times before 1970 (a line without a timestamp is fingerprinted at
    /// `i64::MIN`, which is allowed), fingerprints of another stream's
    /// slot, delivered lines without a newest timestamp. Times that are
    /// merely old are allowed: a board without a real-time clock stamps
    /// 1970 until NTP sets its clock. Times in the future need Docker's
    /// clock: see [`Resume::latest`].
    pub fn check_values(&self) -> Result<(), String> {
        let time = |what: &str, t: i64, min_ok: bool| {
            if t < 0 && !(min_ok && t == i64::MIN) {
                Err(format!("{what} {t} is before 1970"))
            } else {
                Ok(())
            }
        };
        time("start_since", self.start_since, false)?;
        if let Some(t) = self.last_ts {
            time("last_ts", t, true)?;
        }
        for (slot, t) in self.open_lines.iter().enumerate() {
            if let Some(t) = *t {
                time(&format!("open_lines[{slot}]"), t, false)?;
            }
        }
        let fps = |what: &'static str, set: &[Option<Fingerprint>; 3]| -> Result<(), String> {
            for (slot, fp) in set.iter().enumerate() {
                let Some(fp) = fp else { continue };
                if usize::from(fp.stream) != slot {
                    return Err(format!("{what}[{slot}] is a line of stream {}", fp.stream));
                }
                time(&format!("{what}[{slot}]"), fp.ts, true)?;
            }
            Ok(())
        };
        fps("newest", &self.newest)?;
        fps("high", &self.high)?;
        if let Some(g) = &self.gap {
            time("gap.from", g.from, false)?;
            fps("gap.until", &g.until)?;
            fps("gap.done", &g.done)?;
        }
        if self.last_ts.is_none() && self.newest.iter().chain(&self.high).any(Option::is_some) {
            return Err("lines are marked delivered but last_ts is null".to_owned());
        }
        Ok(())
    }

    /// Check the state before a stream opens from it. `clock`: the
    /// earliest and the latest Docker's clock can read now, if known.
    ///
    /// A state read from a checkpoint must hold only values the agent
    /// writes, none later than Docker's clock: its lines may be gone from
    /// the log or never have been in it, so nothing in it can be trusted
    /// to be older than a new line. A state this run built holds lines it
    /// saw in the log, in the log's order: after a clock step back only
    /// where the next stream starts must not be in the future.
    pub fn vet(&mut self, clock: Option<(i64, i64)>) -> Result<(), Untrusted> {
        let loaded = std::mem::take(&mut self.loaded);
        if loaded {
            self.check_values().map_err(Untrusted::Invalid)?;
        }
        let Some((_, latest_now)) = clock else {
            return Ok(());
        };
        if let Some(floor) = self.floor.take() {
            // Keep the floor only while the resume point would otherwise
            // still be in the future.
            if self.since() > latest_now {
                self.floor = Some(floor);
            }
        }
        let at = if loaded { self.latest() } else { self.since() };
        if at > latest_now {
            return Err(Untrusted::Future { latest: at });
        }
        Ok(())
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
        if self.refill {
            return 0;
        }
        let since = match self.last_ts {
            None => self.start_since,
            Some(last) => self.start_since.max(last.saturating_sub(DEFAULT_MARGIN_NS)),
        };
        let since = self.open_line_ts().map_or(since, |open| since.min(open));
        let since = self.gap.as_ref().map_or(since, |g| since.min(g.from));
        self.floor.map_or(since, |f| since.min(f.saturating_sub(DEFAULT_MARGIN_NS)))
    }

    /// Lines before the first stream's window may be missing: read again
    /// from `from`. `replay`: the first stream's.
    pub fn open_gap(&mut self, from: i64, replay: &Replay) {
        if replay.first.iter().any(Option::is_some) {
            self.gap = Some(Gap { from, until: replay.first, done: [None; 3] });
        }
    }

    /// Whether a line seen on the connection `replay` is new (deliver it)
    /// rather than one delivered before.
    // Runs once per line, like `delivered`: inlined into the delivery loop
    // it saves 37 instructions a line (benches/callgrind.sh), and the
    // compiler stopped doing it unasked once fingerprints said which hash
    // they hold.
    #[inline]
    pub fn admit(&mut self, fp: &Fingerprint, replay: &mut Replay) -> bool {
        let s = fp.slot();
        if let Some(g) = self.gap.as_mut() {
            // A line stamped a margin after every stream's first delivered
            // line sits after all of the gap in the file (inversions are
            // smaller): the gap was read, even if a stream's first line has
            // since left the log, or that stream wrote nothing more.
            let end = g.until.iter().flatten().map(|u| u.ts).max().unwrap_or(i64::MIN);
            if fp.ts > end.saturating_add(DEFAULT_MARGIN_NS) {
                self.gap = None;
            }
        }
        if let Some(g) = self.gap.as_mut() {
            if let Some(until) = g.until[s] {
                // Lines stamped like the first delivered one but not it
                // came before it in the window's first group (whose indices
                // the window could not know). Only identical text in the
                // same nanosecond before it would be taken for it.
                if fp.ts < until.ts || (fp.ts == until.ts && !fp.same_text(&until)) {
                    // Inside the gap: new unless a stream since the gap
                    // opened delivered it already.
                    return !g.done[s].is_some_and(|d| fp.pos() <= d.pos());
                }
                // This stream has reached its first delivered line again.
                g.until[s] = None;
                g.done[s] = None;
                if g.until.iter().all(Option::is_none) {
                    self.gap = None;
                }
            }
        }
        if replay.past[s] {
            return true;
        }
        let new = match self.newest[s] {
            None => true,
            Some(n) if fp.pos() == n.pos() => {
                // The newest delivered line itself: what follows is new. A
                // different hash means the indices do not match; deliver
                // (a duplicate at worst).
                replay.past[s] = true;
                return !fp.same_text(&n);
            }
            // Until this connection passes the newest line, lines up to
            // the high mark came before it (from before a clock step).
            Some(n) => fp.pos() > n.pos() && self.high[s].map_or(true, |h| fp.pos() > h.pos()),
        };
        replay.past[s] |= new;
        new
    }

    /// Whether a line [`Resume::admit`] let through shows that Docker's
    /// clock stepped back: it is stamped before the newest line delivered
    /// of its stream (or well before the newest of any), outside a gap. Within a stream dockerd's timestamps
    /// never decrease otherwise, so it follows the newest line in the log
    /// and is stamped after a step back.
    ///
    /// Then the stream that sent it may have missed lines: dockerd 20.10
    /// filters every line of a stream by its `since`, also those written
    /// while it is open, so the lines stamped from the step until that
    /// `since` were never sent. Nothing the agent holds says where the
    /// step landed; only a stream from the start of the log reads them
    /// ([`Resume::refill`]): it drops the lines up to the newest delivered
    /// one as replays (they precede the step in the log), and delivers
    /// every line after it, the missed ones included.
    // Runs once per delivered line, like `delivered`.
    #[inline]
    pub fn steps_back(&self, fp: &Fingerprint) -> bool {
        let s = fp.slot();
        let in_gap = self.gap.as_ref().is_some_and(|g| g.until[s].is_some_and(|u| fp.ts <= u.ts));
        if in_gap || fp.ts == i64::MIN {
            return false;
        }
        // Below its own stream's newest line; or, for a stream that has
        // none yet, well below the newest line of any (cross-stream
        // inversions are far smaller than the margin), unless a line
        // that old is expected (as in `delivered`).
        let expected_old = self.open_lines[s].is_some_and(|open| fp.ts >= open) || self.gap.is_some();
        self.newest[s].is_some_and(|n| fp.ts < n.ts)
            || (!expected_old && self.last_ts.is_some_and(|l| fp.ts < l.saturating_sub(DEFAULT_MARGIN_NS)))
    }

    /// Record a delivered line (one [`Resume::admit`] let through).
    // Runs once per line: inlined into the delivery loop it saves ~25
    // instructions a line (benches/callgrind.sh).
    #[inline]
    pub fn delivered(&mut self, fp: Fingerprint, replay: &mut Replay) {
        let s = fp.slot();
        replay.first[s].get_or_insert(fp);
        // (`admit` closed this stream's gap at its first delivered line.)
        let in_gap = self.gap.as_ref().is_some_and(|g| g.until[s].is_some_and(|u| fp.ts <= u.ts));
        if in_gap {
            if let Some(g) = self.gap.as_mut() {
                g.done[s] = Some(fp);
            }
            self.last_ts = Some(self.last_ts.map_or(fp.ts, |l| l.max(fp.ts)));
        } else {
            // The highest mark so far (on a tie the older mark), kept only
            // while this line is below it. Written out: this runs per line.
            let highest = match (self.newest[s], self.high[s]) {
                (Some(n), Some(h)) => Some(if n.pos() > h.pos() { n } else { h }),
                (n, h) => n.or(h),
            };
            self.high[s] = highest.filter(|h| h.pos() > fp.pos());
            self.newest[s] = Some(fp);
            // The line a cut stream had begun comes again with its first
            // piece's time, and a gap is read from before the window.
            let expected_old = self.open_lines[s].is_some_and(|open| fp.ts >= open) || self.gap.is_some();
            self.last_ts = Some(match self.last_ts {
                // Otherwise a line stamped well before the newest delivered
                // one comes after it in the log only if the clock stepped
                // back: the next stream must resume from here, not from the
                // old clock's time (which filters out everything until the
                // clock catches up). Cross-stream inversions are far
                // smaller than the margin.
                Some(l) if fp.ts < l.saturating_sub(DEFAULT_MARGIN_NS) && !expected_old => fp.ts,
                Some(l) => l.max(fp.ts),
                None => fp.ts,
            });
        }
        // Timestamps never decrease within a stream: a line of this stream
        // at or after the open one means the open line was delivered.
        let slot = &mut self.open_lines[s];
        if slot.is_some_and(|open| fp.ts >= open) {
            *slot = None;
        }
    }

    /// Decide on the first complete line of a `tail=K&since=…` response,
    /// before delivering it. `requested_at`: lines stamped before it may be
    /// history (the agent's clock when the request was sent, plus what
    /// dockerd may take to serve it: a window of lines all written while it
    /// waited can be full and start after the resume point). A line stamped
    /// later shows the history part was empty.
    ///
    /// If the tail window reached back to what was delivered, the first line
    /// it returns (the first at or after `since`) is at or before the newest
    /// delivered line of its stream. A history line after it means the
    /// window started later, and lines between may be missing. A line with
    /// the newest one's timestamp proves it only if it is that very line
    /// (the window may have begun among lines of equal timestamps, where
    /// indices do not line up).
    pub fn check_first_line(&self, fp: &Fingerprint, requested_at: i64) -> TailCheck {
        let reaches_back =
            self.newest[fp.slot()].is_some_and(|n| fp.ts < n.ts || (fp.pos() == n.pos() && fp.same_text(&n)));
        if self.last_ts.is_none() || fp.ts >= requested_at || reaches_back {
            TailCheck::Complete
        } else {
            TailCheck::CatchUp
        }
    }

    /// Decide on the first line of each other stream in a `tail` response.
    /// Its index among lines of equal timestamps counts from where the
    /// window began; if that timestamp is the newest delivered one's, the
    /// window may have cut the group, and the indices cannot be compared:
    /// lines after the newest could be taken for replays. Unless it is that
    /// very line, read again without `tail` (groups are whole then).
    pub fn check_stream_start(&self, fp: &Fingerprint) -> TailCheck {
        match self.newest[fp.slot()] {
            Some(n) if fp.ts == n.ts && !(fp.pos() == n.pos() && fp.same_text(&n)) => TailCheck::CatchUp,
            _ => TailCheck::Complete,
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

    fn fp(ts: i64, stream: u8, occ: u32, hash: u64) -> Fingerprint {
        Fingerprint { ts, stream, occ, hash, hash_fn: HashFn::Words }
    }

    #[test]
    fn occurrence_index_counts_repeats_per_stream() {
        let mut r = Replay::default();
        let a = r.fingerprint(&rec(5, StreamId::Stdout, b"x"));
        let b = r.fingerprint(&rec(5, StreamId::Stderr, b"x"));
        let c = r.fingerprint(&rec(5, StreamId::Stdout, b"x"));
        let d = r.fingerprint(&rec(6, StreamId::Stdout, b"x"));
        assert_eq!((a.occ, b.occ, c.occ, d.occ), (0, 0, 1, 0));
        assert_ne!(a, c);
    }

    #[test]
    fn fingerprints_are_written_short_and_read_in_both_forms() {
        let fp = fp(5, 2, 1, u64::MAX);
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
        // The same bytes at every length up to past the ends, with and
        // without the flag: all apart.
        let a = [b'a'; 200];
        let mut seen = std::collections::HashSet::new();
        for n in 0..=a.len() {
            for t in [false, true] {
                assert!(seen.insert(message_hash(&a[..n], t)), "{n} bytes, truncated {t}");
            }
        }
    }

    /// Every message that differs from `msg` in one byte (each value at
    /// each place `at`) hashes apart from it and from each other.
    fn assert_each_byte_counts(msg: &[u8], at: impl Iterator<Item = usize>) {
        let mut seen = std::collections::HashSet::from([message_hash(msg, false)]);
        for i in at {
            for v in [0u8, 1, b'A', 0x80, 0xff] {
                let mut m = msg.to_vec();
                if m[i] == v {
                    continue;
                }
                m[i] = v;
                assert!(seen.insert(message_hash(&m, false)), "{} bytes, byte {i} = {v}", msg.len());
            }
        }
    }

    #[test]
    fn hash_reads_every_byte_up_to_64_and_the_ends_beyond() {
        let text: Vec<u8> = (0..300u32).map(|i| b'a' + (i * 7 % 26) as u8).collect();
        for n in [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64] {
            assert_each_byte_counts(&text[..n], 0..n);
        }
        for n in [65, 100, 300] {
            assert_each_byte_counts(&text[..n], (0..32).chain(n - 32..n));
        }
        // At 65 bytes byte 32 is the first not read; at 64 it is read.
        let mut other = text[..65].to_vec();
        other[32] ^= 1;
        assert_eq!(message_hash(&text[..65], false), message_hash(&other, false));
        assert_ne!(message_hash(&text[..64], false), message_hash(&other[..64], false));
        // As FNV-1a read it.
        assert_eq!(fnv1a_message_hash(&text[..65], false), fnv1a_message_hash(&other, false));
    }

    #[test]
    fn hash_values_are_fixed() {
        // Saved in checkpoints: a change must bump FINGERPRINT_HASH and
        // convert from the old function (as `convert_fnv1a` does).
        let long: Vec<u8> = (0..100u8).collect();
        // (Also computed apart, by a Python model of both functions.)
        let cases: [(&[u8], bool, u64, u64); 7] = [
            (b"", false, 0xa887_1e37_18ca_0053, 0xe604_823a_2490_29bf),
            (b"x", true, 0x1faa_5654_b923_6cdb, 0x5131_14c8_9da9_5145),
            (b"hello, world", false, 0xae13_8c8d_596b_5988, 0xc1e3_88ed_6fe2_68fb),
            (b"2026-12-04T20:53:47Z INFO request done", false, 0x8991_6b77_45da_752f, 0xd7ad_1e13_397c_7a48),
            (&long[..64], false, 0x2740_9ad3_0866_de30, 0x624d_2b00_10b3_097f),
            (&long[..65], false, 0x3dbe_f386_cc0c_c964, 0xcf92_a983_c97b_724c),
            (&long, true, 0x9659_2f04_5df0_d374, 0x10b4_ec7b_a7c6_31e0),
        ];
        for (msg, t, words, fnv1a) in cases {
            assert_eq!(message_hash(msg, t), words, "{msg:?}");
            assert_eq!(fnv1a_message_hash(msg, t), fnv1a, "{msg:?}");
        }
    }

    type Line<'a> = (i64, StreamId, &'a str);

    /// One connection reading `lines` (in file order): what it delivers.
    fn read(resume: &mut Resume, lines: &[Line<'_>]) -> (Vec<String>, Replay) {
        let mut replay = Replay::default();
        let mut out = Vec::new();
        for &(ts, s, m) in lines {
            let r = rec(ts, s, m.as_bytes());
            let fp = replay.fingerprint(&r);
            resume.convert_fnv1a(&fp, &r);
            if resume.admit(&fp, &mut replay) {
                resume.delivered(fp, &mut replay);
                out.push(m.to_string());
            }
        }
        (out, replay)
    }

    /// dockerd's answer to `since`: 20.10 filters every line; 24.0+ stops
    /// filtering at the first match.
    fn answer<'a>(file: &[Line<'a>], since: i64, filter_all: bool) -> Vec<Line<'a>> {
        let mut matched = false;
        file.iter()
            .filter(|l| {
                matched |= l.0 >= since;
                l.0 >= since || (matched && !filter_all)
            })
            .copied()
            .collect()
    }

    /// A stream cut after `cut` lines, then a resumed stream: every line
    /// delivered, in total.
    fn deliver_with_cut(file: &[Line<'_>], cut: usize, filter_all: bool) -> Vec<String> {
        let mut resume = Resume::new(0);
        let (mut out, _) = read(&mut resume, &file[..cut]);
        let since = resume.since();
        let again = answer(file, since, filter_all);
        out.extend(read(&mut resume, &again).0);
        out
    }

    /// stdout and stderr interleaved with small inversions, repeated
    /// timestamps and identical messages.
    fn sample_file() -> Vec<Line<'static>> {
        use StreamId::{Stderr as E, Stdout as O};
        vec![
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
        ]
    }

    #[test]
    fn every_cut_point_delivers_each_line_once_both_since_modes() {
        let file = sample_file();
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
        let r = &mut Replay::default();
        let mut res = Resume::new(0);
        assert_eq!(res.since(), 0);
        res.delivered(fp(100 * S, 1, 0, 1), r);
        assert_eq!(res.since(), 99 * S);
        // A 16 KiB partial line begun at 99.5 s and cut: the margin covers it.
        res.cut([None, Some(99 * S + S / 2), None]);
        assert_eq!(res.since(), 99 * S);
        // One begun at 50 s on stderr: resume at its start, and keep doing so
        // across further cuts until a stderr line at or after it arrives.
        res.cut([None, None, Some(50 * S)]);
        assert_eq!(res.since(), 50 * S);
        res.cut([None; 3]);
        assert_eq!(res.since(), 50 * S);
        res.delivered(fp(101 * S, 1, 0, 2), r);
        assert_eq!(res.since(), 50 * S, "a stdout line does not finish a stderr line");
        res.delivered(fp(50 * S, 2, 0, 3), r);
        assert_eq!(res.since(), 100 * S);
        // Never before the first stream's start.
        let mut res = Resume::new(100 * S);
        res.delivered(fp(100 * S + 1, 1, 0, 1), r);
        assert_eq!(res.since(), 100 * S);
    }

    #[test]
    fn a_flood_costs_no_state_and_its_replay_is_still_recognised() {
        // 100 000 lines within one millisecond (the same timestamp repeats),
        // then a reopen that replays all of them before two new ones.
        let mut res = Resume::new(0);
        let msgs: Vec<String> = (0..100_002).map(|i| format!("line {i}")).collect();
        let file: Vec<Line<'_>> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| (100 * S + i as i64 / 7, StreamId::Stdout, m.as_str()))
            .collect();
        let (out, _) = read(&mut res, &file[..100_000]);
        assert_eq!(out.len(), 100_000);
        let json = serde_json::to_string(&res).unwrap();
        assert!(json.len() < 300, "a checkpoint stays small: {json}");
        let again = answer(&file, res.since(), true);
        let (out, _) = read(&mut res, &again);
        assert_eq!(out, ["line 100000", "line 100001"]);
    }

    #[test]
    fn a_live_stream_delivers_lines_after_the_clock_steps_back() {
        use StreamId::Stdout as O;
        let mut res = Resume::new(0);
        let (out, _) =
            read(&mut res, &[(100 * S, O, "a"), (101 * S, O, "b"), (99 * S, O, "c"), (99 * S, O, "d")]);
        assert_eq!(out, ["a", "b", "c", "d"]);
    }

    #[test]
    fn tail_check() {
        let mut res = Resume::new(0);
        let r = &mut Replay::default();
        let old = fp(100 * S, 1, 0, 7);
        // Nothing delivered yet: nothing can be missing before the window.
        assert_eq!(res.check_first_line(&old, 200 * S), TailCheck::Complete);
        res.delivered(fp(90 * S, 1, 0, 6), r);
        res.delivered(old, r);
        // The first line is the newest we delivered, or older: the window
        // reaches back.
        assert_eq!(res.check_first_line(&old, 200 * S), TailCheck::Complete);
        assert_eq!(res.check_first_line(&fp(90 * S, 1, 0, 6), 200 * S), TailCheck::Complete);
        // A history line we never saw: lines may be missing before it.
        let unseen = fp(150 * S, 1, 0, 8);
        assert_eq!(res.check_first_line(&unseen, 200 * S), TailCheck::CatchUp);
        // Same timestamp as the newest, another line (a window begun among
        // equal timestamps): not proof.
        assert_eq!(res.check_first_line(&fp(100 * S, 1, 0, 9), 200 * S), TailCheck::CatchUp);
        // Another stream with nothing delivered: not proof either.
        assert_eq!(res.check_first_line(&fp(95 * S, 2, 0, 1), 200 * S), TailCheck::CatchUp);
        // A line written after the request: the history part was empty.
        assert_eq!(res.check_first_line(&unseen, 120 * S), TailCheck::Complete);
    }

    #[test]
    fn a_full_first_window_is_filled_from_its_since_exactly_once() {
        use StreamId::{Stderr as E, Stdout as O};
        let msgs: Vec<String> = (0..40).map(|i| format!("l{i}")).collect();
        let file: Vec<Line<'_>> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| (10 * S + (i as i64 / 2) * 1000, if i % 3 == 0 { E } else { O }, m.as_str()))
            .collect();
        let want: Vec<String> = msgs.clone();
        for filter_all in [true, false] {
            // A first stream with `tail` got the last 15 lines; its window
            // was full, so it gives up and opens a gap from its since.
            for delivered in 0..15 {
                let mut res = Resume::new(10 * S);
                let (mut out, replay) = read(&mut res, &file[25..25 + delivered]);
                res.open_gap(10 * S, &replay);
                // The catch-up stream may itself be cut, and resumed.
                for cut in [7, 26, 33, 40] {
                    let mut res = res.clone();
                    let mut out = out.clone();
                    let first = answer(&file, res.since(), filter_all);
                    let cut = cut.min(first.len());
                    out.extend(read(&mut res, &first[..cut]).0);
                    let rest = answer(&file, res.since(), filter_all);
                    out.extend(read(&mut res, &rest).0);
                    let mut got = out.clone();
                    got.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
                    assert_eq!(
                        got, want,
                        "window delivered {delivered}, catch-up cut at {cut}, filter_all {filter_all}"
                    );
                    assert!(res.gap.is_none(), "caught up: the gap is closed");
                }
                out.clear();
            }
        }
    }

    #[test]
    fn a_gap_closes_once_lines_stamped_well_after_it_arrive() {
        let r = &mut Replay::default();
        let mut res = Resume::new(0);
        res.delivered(fp(100 * S, 2, 0, 1), r);
        res.open_gap(50 * S, r);
        assert_eq!(res.since(), 50 * S);
        // A stdout line inside the gap (stdout had no first line: new).
        assert!(res.admit(&fp(60 * S, 1, 0, 2), &mut Replay::default()));
        assert!(res.gap.is_some(), "stderr has not come back to its first line");
        // stderr's first delivered line is gone from the log, and stderr
        // writes nothing more; a stdout line well after ends the gap.
        let r = &mut Replay::default();
        assert!(res.admit(&fp(101 * S + 1, 1, 0, 3), r));
        assert!(res.gap.is_none());
        res.delivered(fp(101 * S + 1, 1, 0, 3), r);
        assert_eq!(res.since(), 100 * S + 1);
    }

    #[test]
    fn a_first_window_that_began_inside_a_group_of_equal_timestamps_is_filled_exactly_once() {
        use StreamId::Stdout as O;
        let file: Vec<Line<'_>> =
            vec![(10 * S, O, "a"), (20 * S, O, "b0"), (20 * S, O, "b1"), (20 * S, O, "b2"), (30 * S, O, "c")];
        let mut res = Resume::new(0);
        // The window began at b1: it counts b1 as the first of its group.
        let (mut out, replay) = read(&mut res, &file[2..]);
        res.open_gap(0, &replay);
        let again = answer(&file, res.since(), true);
        out.extend(read(&mut res, &again).0);
        assert_eq!(out, ["b1", "b2", "c", "a", "b0"]);
        assert!(res.gap.is_none());
    }

    #[test]
    fn a_tail_window_that_cuts_a_group_of_the_newest_timestamp_is_not_trusted() {
        let r = &mut Replay::default();
        let mut res = Resume::new(0);
        res.delivered(fp(50 * S, 2, 0, 1), r);
        res.delivered(fp(50 * S, 2, 1, 2), r);
        // The window's first stderr line has the newest's timestamp and
        // counts from 0: which of the group it is cannot be told.
        assert_eq!(res.check_stream_start(&fp(50 * S, 2, 0, 2)), TailCheck::CatchUp);
        assert_eq!(res.check_stream_start(&fp(50 * S, 2, 0, 1)), TailCheck::CatchUp);
        // Older or newer timestamps compare by time alone.
        assert_eq!(res.check_stream_start(&fp(49 * S, 2, 0, 9)), TailCheck::Complete);
        assert_eq!(res.check_stream_start(&fp(51 * S, 2, 0, 9)), TailCheck::Complete);
        // A stream with nothing delivered has nothing to compare.
        assert_eq!(res.check_stream_start(&fp(50 * S, 1, 0, 9)), TailCheck::Complete);
        // The newest line itself, with its own index: aligned.
        let mut res = Resume::new(0);
        res.delivered(fp(50 * S, 2, 0, 1), r);
        assert_eq!(res.check_stream_start(&fp(50 * S, 2, 0, 1)), TailCheck::Complete);
    }

    #[test]
    fn tail_sizes() {
        assert_eq!(tail_for(0.0, 0, 3600 * S), 1_000);
        assert_eq!(tail_for(100.0, 0, 9 * S), 4_000);
        assert_eq!(tail_for(1e9, 0, 3600 * S), 1_000_000);
    }

    #[test]
    fn checkpoint_round_trip() {
        let mut res = Resume::new(5 * S);
        let last = fp(100 * S, 2, 1, 9);
        res.delivered(last, &mut Replay::default());
        res.cut([None, Some(90 * S), None]);
        let json = serde_json::to_string(&res).unwrap();
        let mut back = serde_json::from_str::<Resume>(&json).unwrap();
        assert!(!back.admit(&last, &mut Replay::default()));
        assert_eq!(back.since(), 90 * S);
        assert_eq!(back.since(), res.since());
    }

    /// `res` as an agent before `fingerprint_hash` would have saved it,
    /// having delivered the same lines of `file` (the same fingerprints,
    /// with FNV-1a hashes), read back as `read_state` reads such a file;
    /// unless `!mark`: the same file taken for one of this version.
    fn as_fnv1a_checkpoint(res: &Resume, file: &[Line<'_>], mark: bool) -> Resume {
        let fnv1a: std::collections::HashMap<(u8, i64, u64), u64> = file
            .iter()
            .map(|&(ts, s, m)| {
                ((s as u8, ts, message_hash(m.as_bytes(), false)), fnv1a_message_hash(m.as_bytes(), false))
            })
            .collect();
        let mut old = res.clone();
        for fp in old.fingerprints_mut() {
            fp.hash = fnv1a[&(fp.stream, fp.ts, fp.hash)];
        }
        let json = serde_json::to_string(&old).unwrap();
        assert!(!json.contains("fnv1a"), "what earlier agents wrote: {json}");
        let mut back: Resume = serde_json::from_str(&json).unwrap();
        assert!(!back.fnv1a);
        if mark {
            back.mark_fnv1a();
        }
        back
    }

    /// `sample_file` with long lines in groups of equal timestamps: their
    /// hashes read the ends only.
    fn sample_file_with_long_lines() -> Vec<(i64, StreamId, String)> {
        use StreamId::{Stderr as E, Stdout as O};
        let long = |tag: &str| format!("{tag} {} {tag}", "x".repeat(80));
        let mut file: Vec<_> = sample_file().into_iter().map(|(t, s, m)| (t, s, m.to_owned())).collect();
        file.extend([
            (16 * S, O, long("o6")),
            (16 * S, O, long("o7")),
            (16 * S, O, long("o7")),
            (16 * S, E, long("e5")),
            (16 * S, O, long("o8")),
            (17 * S, E, long("e6")),
        ]);
        file
    }

    #[test]
    fn a_checkpoint_with_fnv1a_hashes_resumes_without_loss_or_repeats() {
        let owned = sample_file_with_long_lines();
        let file: Vec<Line<'_>> = owned.iter().map(|(t, s, m)| (*t, *s, m.as_str())).collect();
        let want: Vec<String> = file.iter().map(|l| l.2.to_string()).collect();
        let mut repeats_unconverted = 0;
        for filter_all in [true, false] {
            for cut in 0..=file.len() {
                for mark in [true, false] {
                    let mut res = Resume::new(0);
                    let (mut out, _) = read(&mut res, &file[..cut]);
                    let mut res = as_fnv1a_checkpoint(&res, &file, mark);
                    let again = answer(&file, res.since(), filter_all);
                    out.extend(read(&mut res, &again).0);
                    if mark {
                        assert_eq!(out, want, "cut {cut}, filter_all {filter_all}");
                        assert!(!res.fnv1a, "cut {cut}: every fingerprint converted");
                    } else {
                        repeats_unconverted += out.len() - want.len();
                    }
                }
            }
        }
        // What the test would see without the conversion: the newest line
        // of each stream again, on most cuts.
        assert!(repeats_unconverted > 2 * file.len(), "{repeats_unconverted}");
    }

    #[test]
    fn a_gap_saved_with_fnv1a_hashes_is_filled_exactly_once() {
        use StreamId::Stdout as O;
        let file: Vec<Line<'_>> =
            vec![(10 * S, O, "a"), (20 * S, O, "b0"), (20 * S, O, "b1"), (20 * S, O, "b2"), (30 * S, O, "c")];
        for mark in [true, false] {
            let mut res = Resume::new(0);
            // The window began at b1 and counted it as the first of its
            // group: only its hash tells it from b0 when the gap is read.
            let (mut out, replay) = read(&mut res, &file[2..]);
            res.open_gap(0, &replay);
            let mut res = as_fnv1a_checkpoint(&res, &file, mark);
            assert_eq!(
                res.gap.as_ref().unwrap().until[1].unwrap().hash_fn,
                if mark { HashFn::Fnv1a } else { HashFn::Words }
            );
            let again = answer(&file, res.since(), true);
            out.extend(read(&mut res, &again).0);
            if mark {
                assert_eq!(out, ["b1", "b2", "c", "a", "b0"]);
                assert!(res.gap.is_none());
            } else {
                assert!(out.len() > 5, "unconverted, lines come again: {out:?}");
            }
        }
    }

    #[test]
    fn a_tail_window_is_checked_against_fnv1a_hashes_once_converted() {
        let r = &mut Replay::default();
        let msg = b"the newest line";
        let line = rec(100 * S, StreamId::Stdout, msg);
        let mut res = Resume::new(0);
        res.delivered(r.fingerprint(&line), r);
        res.mark_fnv1a();
        res.newest[1].as_mut().unwrap().hash = fnv1a_message_hash(msg, false);
        let first = Replay::default().fingerprint(&line);
        // Unconverted, the hashes of two functions never match: read again.
        assert_eq!(res.check_first_line(&first, 200 * S), TailCheck::CatchUp);
        assert_eq!(res.check_stream_start(&first), TailCheck::CatchUp);
        // Another line of that time and stream converts nothing.
        let other = rec(100 * S, StreamId::Stdout, b"another line");
        res.convert_fnv1a(&Replay::default().fingerprint(&other), &other);
        assert!(res.fnv1a);
        res.convert_fnv1a(&first, &line);
        assert!(!res.fnv1a);
        assert_eq!(res.newest[1], Some(first));
        assert_eq!(res.check_first_line(&first, 200 * S), TailCheck::Complete);
        assert_eq!(res.check_stream_start(&first), TailCheck::Complete);
    }

    #[test]
    fn fingerprints_still_holding_fnv1a_say_so_in_the_checkpoint() {
        let r = &mut Replay::default();
        let mut res = Resume::new(0);
        res.delivered(fp(100 * S, 1, 0, 7), r);
        res.delivered(fp(90 * S, 2, 0, 8), r);
        res.mark_fnv1a();
        // stderr's line comes again, stdout's does not.
        let line = rec(90 * S, StreamId::Stderr, b"e");
        let e = Replay::default().fingerprint(&line);
        res.newest[2].as_mut().unwrap().hash = fnv1a_message_hash(b"e", false);
        res.convert_fnv1a(&e, &line);
        let json = serde_json::to_string(&res).unwrap();
        assert!(
            json.contains(&format!(
                r#""newest":[null,{{"ts":{},"stream":1,"occ":0,"hash":7,"fn":"fnv1a"}},[{},2,0,{}]]"#,
                100 * S,
                90 * S,
                e.hash
            )),
            "{json}"
        );
        let back: Resume = serde_json::from_str(&json).unwrap();
        assert!(back.fnv1a);
        assert_eq!(back.newest, res.newest);
        assert_eq!(back.newest[2], Some(e));
    }

    #[test]
    fn checkpoints_of_the_first_format_are_read() {
        // Every recent line's fingerprint in `window`, delivery order.
        let json = r#"{"start_since":5,"last_ts":300,"floor":-9223372036854775808,
            "open_lines":[null,null,null],
            "window":[[100,1,0,1],[300,1,0,2],[200,2,0,3],[200,2,1,4]]}"#;
        let mut res: Resume = serde_json::from_str(json).unwrap();
        assert_eq!(res.newest, [None, Some(fp(300, 1, 0, 2)), Some(fp(200, 2, 1, 4))]);
        let r = &mut Replay::default();
        assert!(!res.admit(&fp(200, 2, 1, 4), r));
        assert!(res.admit(&fp(201, 2, 0, 5), r));
    }

    #[test]
    fn a_reopen_after_the_clock_stepped_back_asks_from_the_new_clock_and_drops_only_replays() {
        use StreamId::{Stderr as E, Stdout as O};
        // Stamped a day ahead, then NTP steps the clock back: the log holds
        // the later-stamped lines first.
        let day = 86_400 * S;
        let file: Vec<Line<'_>> = vec![
            (day + 10 * S, O, "a"),
            (day + 11 * S, E, "b"),
            (day + 12 * S, O, "c"),
            (20 * S, O, "d"),
            (21 * S, O, "e"),
            (22 * S, E, "f"),
            (23 * S, O, "g"),
        ];
        let want: Vec<String> = file.iter().map(|l| l.2.to_string()).collect();
        for filter_all in [true, false] {
            // (Cut before a line of the new clock was delivered, the resume
            // point is in the future: `vet` rejects it, see below.)
            for cut in 4..=file.len() {
                let mut res = Resume::new(0);
                let (mut out, _) = read(&mut res, &file[..cut]);
                let since = res.since();
                assert!(since < day, "cut {cut}: resumes at {since}, on the old clock");
                out.extend(read(&mut res, &answer(&file, since, filter_all)).0);
                assert_eq!(out, want, "cut {cut}, filter_all {filter_all}");
            }
        }
    }

    #[test]
    fn after_a_rejected_resume_point_the_whole_log_is_read_once_and_then_resumed_exactly() {
        use StreamId::Stdout as O;
        let day = 86_400 * S;
        // Nothing after the step yet: the newest line is a day ahead.
        let mut file: Vec<Line<'_>> = vec![(day + 10 * S, O, "a"), (day + 11 * S, O, "b")];
        let mut res = Resume::after_clock_step(Some(30 * S));
        let again = answer(&file, res.since(), true);
        let (out, _) = read(&mut res, &again);
        assert_eq!(out, ["a", "b"]);
        // Docker's clock reads 31 s: the next stream asks from the floor,
        // not from the day-ahead line, and is not rejected again.
        assert_eq!(res.vet(Some((31 * S, 34 * S))), Ok(()));
        assert_eq!(res.since(), 29 * S);
        file.push((31 * S, O, "c"));
        let again = answer(&file, res.since(), true);
        let (out, _) = read(&mut res, &again);
        assert_eq!(out, ["c"]);
        // Resumed from the new clock's lines: the floor is no longer needed.
        assert_eq!(res.vet(Some((32 * S, 35 * S))), Ok(()));
        assert_eq!(res.floor, None);
        assert_eq!(res.since(), 30 * S);
    }

    #[test]
    fn vetting_a_checkpoint_against_dockers_clock() {
        let clock = Some((100 * S, 103 * S));
        let load = |json: &str| serde_json::from_str::<Resume>(json).unwrap();
        // A checkpoint's newest line after Docker's latest possible now.
        let mut res =
            load(r#"{"start_since":0,"last_ts":99000000000,"newest":[null,[104000000000,1,0,1],null]}"#);
        assert_eq!(res.vet(clock), Err(Untrusted::Future { latest: 104 * S }));
        // Within the slack of `Date`: fine.
        let mut res =
            load(r#"{"start_since":0,"last_ts":102000000000,"newest":[null,[102000000000,1,0,1],null]}"#);
        assert_eq!(res.vet(clock), Ok(()));
        // Docker's clock unknown: only the values are checked.
        let mut res = load(r#"{"start_since":0,"last_ts":900000000000}"#);
        assert_eq!(res.vet(None), Ok(()));
        // A state this run built: only where the next stream starts counts
        // (a high mark from before a step back is expected).
        let mut res = Resume::new(0);
        let r = &mut Replay::default();
        res.delivered(fp(500 * S, 1, 0, 1), r);
        res.delivered(fp(90 * S, 1, 0, 2), r);
        assert_eq!(res.high[1], Some(fp(500 * S, 1, 0, 1)));
        assert_eq!(res.vet(clock), Ok(()));
        res.delivered(fp(104 * S + DEFAULT_MARGIN_NS, 2, 0, 3), r);
        assert!(matches!(res.vet(clock), Err(Untrusted::Future { .. })));
    }

    #[test]
    fn values_the_agent_never_writes_are_rejected() {
        let bad = |json: &str| {
            let mut res: Resume = serde_json::from_str(json).unwrap();
            match res.vet(None) {
                Err(Untrusted::Invalid(why)) => why,
                other => panic!("{json}: {other:?}"),
            }
        };
        assert_eq!(bad(r#"{"start_since":-5,"last_ts":null}"#), "start_since -5 is before 1970");
        assert!(bad(r#"{"start_since":0,"last_ts":-7}"#).contains("last_ts -7"));
        assert!(bad(r#"{"start_since":0,"last_ts":9,"newest":[null,[9,2,0,1],null]}"#).contains("stream 2"));
        assert!(bad(r#"{"start_since":0,"last_ts":null,"newest":[null,[9,1,0,1],null]}"#).contains("null"));
        assert!(bad(r#"{"start_since":0,"last_ts":9,"open_lines":[null,-1,null]}"#).contains("open_lines[1]"));
        assert!(bad(r#"{"start_since":0,"last_ts":9,"gap":{"from":-1,"until":[null,null,null],"done":[null,null,null]}}"#)
            .contains("gap.from"));
        // Old times (a board without a real-time clock stamps 1970 until
        // NTP), lines without a timestamp, the whole backlog: all fine.
        for ok in [
            r#"{"start_since":0,"last_ts":null}"#,
            r#"{"start_since":1000,"last_ts":5000,"newest":[null,[5000,1,3,1],null]}"#,
            r#"{"start_since":0,"last_ts":-9223372036854775808,"newest":[null,[-9223372036854775808,1,0,1],null]}"#,
        ] {
            let mut res: Resume = serde_json::from_str(ok).unwrap();
            assert_eq!(res.vet(None), Ok(()), "{ok}");
        }
        // Checked once, when first used: a state this run built is not.
        let mut res: Resume = serde_json::from_str(r#"{"start_since":-5,"last_ts":null}"#).unwrap();
        assert!(res.vet(None).is_err());
        assert!(!res.loaded);
    }

    #[test]
    fn the_high_mark_is_saved_only_when_there_is_one() {
        let r = &mut Replay::default();
        let mut res = Resume::new(0);
        res.delivered(fp(500 * S, 1, 0, 1), r);
        assert!(!serde_json::to_string(&res).unwrap().contains("high"));
        res.delivered(fp(90 * S, 1, 0, 2), r);
        let json = serde_json::to_string(&res).unwrap();
        let back: Resume = serde_json::from_str(&json).unwrap();
        assert_eq!(back.high, res.high);
        assert_eq!(back.last_ts, Some(90 * S));
    }
}
