//! `LineAssembler` with arbitrary pieces and a small cap.
//!
//! Input: `[cap, flags, nctl, ctl * nctl, data...]`.
//! - cap = 1 + cap % 24; flags bit 0: strip `\r` (TTY); bit 1: pieces carry
//!   no timestamp; the control bytes give piece lengths (cycled; 0 to 23,
//!   0 = an empty push); `nctl = 0` pushes the data as one piece.
//!
//! Invariants:
//! - the records (before and after `flush`) and the stats equal an
//!   independent model: split the input at `\n`; a line of at most `cap`
//!   bytes is one record (one `\r` stripped for TTY), a longer one is its
//!   first `cap` bytes marked truncated and the rest is counted as
//!   discarded; an unfinished last line longer than `cap` is emitted
//!   truncated at once, a shorter one only by `flush`, marked partial and
//!   not stripped; a line's timestamp is that of the piece holding its first
//!   byte;
//! - every message is at most `cap` bytes; a truncated one is exactly `cap`;
//!   no message contains `\n`; nothing buffered ever exceeds `cap`;
//! - without `\r` stripping and with no line over the cap, the messages
//!   joined with `\n` (the partial one last, without) are exactly the input;
//! - byte at a time gives the same records as the pieces; the whole input
//!   in one push gives the same records up to timestamps.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use log_capturer::docker::frame::StreamId;
use log_capturer::docker::lines::{LineAssembler, LineStats};
use log_capturer::record::OwnedRecord;

/// Records emitted by the pushes, records emitted by `flush`, and stats.
type Outcome = (Vec<OwnedRecord>, Vec<OwnedRecord>, LineStats);

fn run(cap: usize, strip_cr: bool, pieces: &[(Option<i64>, &[u8])]) -> Outcome {
    let mut asm = LineAssembler::new(StreamId::Stderr, cap, strip_cr);
    let mut pushed = Vec::new();
    for (ts, bytes) in pieces {
        asm.push(*ts, bytes, &mut |r| pushed.push(r.to_owned()));
        assert!(asm.buffered() <= cap, "{} bytes buffered", asm.buffered());
    }
    let open_ts = asm.open_line_timestamp();
    let open = asm.has_open_line();
    let mut flushed = Vec::new();
    asm.flush(&mut |r| flushed.push(r.to_owned()));
    assert!(!asm.has_open_line() && asm.buffered() == 0);
    if let Some(r) = flushed.first() {
        assert!(open);
        assert_eq!(open_ts, r.timestamp);
    }
    (pushed, flushed, asm.stats())
}

fn rec(ts: Option<i64>, message: &[u8], truncated: bool, partial: bool) -> OwnedRecord {
    OwnedRecord { timestamp: ts, stream: StreamId::Stderr, message: message.to_vec(), truncated, partial }
}

fn model(cap: usize, strip_cr: bool, data: &[u8], ts_at: &dyn Fn(usize) -> Option<i64>) -> Outcome {
    let mut pushed = Vec::new();
    let mut flushed = Vec::new();
    let mut stats = LineStats::default();
    let mut pos = 0;
    while pos < data.len() {
        let ts = ts_at(pos);
        let (line, complete) = match find_newline(&data[pos..]) {
            Some(i) => (&data[pos..pos + i], true),
            None => (&data[pos..], false),
        };
        pos += line.len() + usize::from(complete);
        if line.len() > cap {
            pushed.push(rec(ts, &line[..cap], true, false));
            stats.truncated += 1;
            stats.discarded_bytes += (line.len() - cap) as u64;
        } else if complete {
            let msg = match line {
                [rest @ .., b'\r'] if strip_cr => rest,
                _ => line,
            };
            pushed.push(rec(ts, msg, false, false));
        } else {
            flushed.push(rec(ts, line, false, true));
        }
    }
    (pushed, flushed, stats)
}

fn find_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

fn strip_ts(recs: &[OwnedRecord]) -> Vec<OwnedRecord> {
    recs.iter().map(|r| OwnedRecord { timestamp: None, ..r.clone() }).collect()
}

fuzz_target!(|input: &[u8]| {
    let mut c = common::Ctrl::new(input);
    let cap = 1 + usize::from(c.u8() % 24);
    let flags = c.u8();
    let strip_cr = flags & 1 != 0;
    let with_ts = flags & 2 == 0;
    let nctl = usize::from(c.u8() % 8);
    let rest = c.rest();
    let (ctl, data) = rest.split_at(nctl.min(rest.len()));

    // Cut the data into pieces; piece k carries timestamp k.
    let mut pieces: Vec<(Option<i64>, &[u8])> = Vec::new();
    let mut owner = vec![0usize; data.len()];
    if ctl.is_empty() {
        pieces.push((with_ts.then_some(0), data));
    } else {
        let mut at = 0;
        let mut k = 0;
        while at < data.len() {
            let len = usize::from(ctl[k % ctl.len()] % 24).min(data.len() - at);
            let ts = with_ts.then_some(pieces.len() as i64);
            owner[at..at + len].fill(pieces.len());
            pieces.push((ts, &data[at..at + len]));
            at += len;
            k += 1;
            if k > 4 * data.len() + 8 {
                // Only empty pieces from here: the control bytes are all 0.
                owner[at..].fill(pieces.len());
                pieces.push((with_ts.then_some(pieces.len() as i64), &data[at..]));
                break;
            }
        }
    }
    let ts_at = |pos: usize| with_ts.then_some(owner[pos] as i64);

    let got = run(cap, strip_cr, &pieces);
    let want = model(cap, strip_cr, data, &ts_at);
    assert_eq!(got, want, "cap {cap}, strip_cr {strip_cr}");

    let (pushed, flushed, _) = &got;
    for r in pushed.iter().chain(flushed) {
        assert!(r.message.len() <= cap, "message over the cap");
        assert!(!r.truncated || r.message.len() == cap, "truncated not at the cap");
        assert!(!r.message.contains(&b'\n'), "newline in a message");
        assert!(!(r.truncated && r.partial));
    }
    assert!(flushed.len() <= 1 && flushed.iter().all(|r| r.partial));
    assert!(pushed.iter().all(|r| !r.partial));

    // The brief's direct check: nothing hit the cap, so nothing was lost.
    let longest = data.split(|&b| b == b'\n').map(<[u8]>::len).max().unwrap_or(0);
    if longest <= cap {
        assert!(pushed.iter().all(|r| !r.truncated));
        if !strip_cr {
            let mut joined = Vec::new();
            for r in pushed {
                joined.extend_from_slice(&r.message);
                joined.push(b'\n');
            }
            for r in flushed {
                joined.extend_from_slice(&r.message);
            }
            assert_eq!(joined, data, "lines do not add up to the input");
        }
    }

    // Byte at a time, each byte with its piece's timestamp.
    let bytes: Vec<(Option<i64>, &[u8])> = data.chunks(1).enumerate().map(|(i, b)| (ts_at(i), b)).collect();
    assert_eq!(run(cap, strip_cr, &bytes), got, "byte-at-a-time differs");

    // One push, no timestamps: same records but for the timestamps.
    let (p1, f1, s1) = run(cap, strip_cr, &[(None, data)]);
    assert_eq!(
        (strip_ts(&p1), strip_ts(&f1), s1),
        (strip_ts(pushed), strip_ts(flushed), got.2),
        "one push differs"
    );
});
