//! Reassembling lines from the pieces dockerd sends.
//!
//! dockerd's log copier cuts a line longer than its buffer (16 KiB by
//! default) into several messages; only the last ends with `\n`, and all
//! carry the first piece's timestamp. HTTP chunking and our reads cut the
//! stream again at arbitrary points. A [`LineAssembler`] (one per container
//! stream) takes message content in whatever pieces arrive and emits one
//! record per complete line.
//!
//! Memory is bounded: a line longer than `max_line` is emitted as its first
//! `max_line` bytes marked truncated, and the rest of it is skipped up to
//! its newline, so a container writing 1 GB without a newline costs at most
//! `max_line` bytes here.

use memchr::memchr;

use crate::docker::frame::StreamId;
use crate::record::Record;

/// Default cap on one line: 1 MiB.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// A line buffer grown beyond this is released after use, so one long line
/// does not pin its memory for the life of the stream.
const KEEP_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineStats {
    /// Lines cut at the cap.
    pub truncated: u64,
    /// Bytes skipped after the cap.
    pub discarded_bytes: u64,
}

#[derive(Debug)]
pub struct LineAssembler {
    stream: StreamId,
    max_line: usize,
    /// Remove one `\r` before the `\n` (TTY output).
    strip_cr: bool,
    buf: Vec<u8>,
    /// A line has begun and not ended: `buf` holds its start (maybe empty).
    open: bool,
    /// Timestamp of the open line: its first piece's.
    ts: Option<i64>,
    /// The open line was already emitted truncated; skip to its newline.
    discarding: bool,
    stats: LineStats,
}

impl LineAssembler {
    pub fn new(stream: StreamId, max_line: usize, strip_cr: bool) -> Self {
        Self {
            stream,
            max_line: max_line.max(1),
            strip_cr,
            buf: Vec::new(),
            open: false,
            ts: None,
            discarding: false,
            stats: LineStats::default(),
        }
    }

    pub fn stats(&self) -> LineStats {
        self.stats
    }

    /// Timestamp of a line begun but not finished, if any: where a reopened
    /// stream must resume so that the line comes again whole.
    pub fn open_line_timestamp(&self) -> Option<i64> {
        if self.open {
            self.ts
        } else {
            None
        }
    }

    pub fn has_open_line(&self) -> bool {
        self.open
    }

    /// Bytes held for an unfinished line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feed message content that carried timestamp `ts`, emitting a record
    /// for every line it completes.
    pub fn push<F: FnMut(Record<'_>)>(&mut self, ts: Option<i64>, mut bytes: &[u8], emit: &mut F) {
        while !bytes.is_empty() {
            if !self.open {
                self.open = true;
                self.ts = ts;
            }
            match memchr(b'\n', bytes) {
                Some(i) => {
                    let line = &bytes[..i];
                    bytes = &bytes[i + 1..];
                    if self.discarding {
                        self.stats.discarded_bytes += line.len() as u64;
                    } else if self.buf.is_empty() {
                        // Fast path: the whole line is in this piece; emit it
                        // straight from the input without copying.
                        if line.len() <= self.max_line {
                            let msg = self.trim(line);
                            emit(self.record(msg, false, false));
                        } else {
                            self.emit_truncated(&line[..self.max_line], emit);
                            self.stats.discarded_bytes += (line.len() - self.max_line) as u64;
                        }
                    } else if self.append(line, emit) {
                        let msg = self.trim(&self.buf);
                        emit(self.record(msg, false, false));
                    }
                    self.end_line();
                }
                None => {
                    if self.discarding {
                        self.stats.discarded_bytes += bytes.len() as u64;
                    } else {
                        self.append(bytes, emit);
                    }
                    return;
                }
            }
        }
    }

    /// The stream has ended for good: emit an unfinished line as a partial
    /// record (a container's last output without a newline).
    pub fn flush<F: FnMut(Record<'_>)>(&mut self, emit: &mut F) {
        if self.open && !self.discarding {
            let rec = Record { partial: true, ..self.record(&self.buf, false, false) };
            emit(rec);
        }
        self.end_line();
    }

    /// The stream was cut (rotation, error): forget an unfinished line. The
    /// reopened stream resumes at [`Self::open_line_timestamp`] and sends it
    /// again whole.
    pub fn abandon(&mut self) {
        self.end_line();
    }

    /// Append to the open line. Returns false if that crossed the cap (the
    /// truncated record has then been emitted and the rest will be skipped).
    fn append<F: FnMut(Record<'_>)>(&mut self, bytes: &[u8], emit: &mut F) -> bool {
        let room = self.max_line - self.buf.len();
        if bytes.len() <= room {
            self.buf.extend_from_slice(bytes);
            return true;
        }
        self.buf.extend_from_slice(&bytes[..room]);
        let buf = std::mem::take(&mut self.buf);
        self.emit_truncated(&buf, emit);
        self.buf = buf;
        self.buf.clear();
        self.stats.discarded_bytes += (bytes.len() - room) as u64;
        false
    }

    fn emit_truncated<F: FnMut(Record<'_>)>(&mut self, msg: &[u8], emit: &mut F) {
        self.stats.truncated += 1;
        self.discarding = true;
        emit(self.record(msg, true, false));
    }

    fn end_line(&mut self) {
        self.open = false;
        self.ts = None;
        self.discarding = false;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    fn trim<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        match line {
            [rest @ .., b'\r'] if self.strip_cr => rest,
            _ => line,
        }
    }

    fn record<'a>(&self, message: &'a [u8], truncated: bool, partial: bool) -> Record<'a> {
        Record { timestamp: self.ts, stream: self.stream, message, truncated, partial }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::OwnedRecord;

    fn collect(asm: &mut LineAssembler, pieces: &[(Option<i64>, &[u8])]) -> Vec<OwnedRecord> {
        let mut out = Vec::new();
        for (ts, bytes) in pieces {
            asm.push(*ts, bytes, &mut |r| out.push(r.to_owned()));
        }
        out
    }

    fn msgs(recs: &[OwnedRecord]) -> Vec<String> {
        recs.iter().map(|r| String::from_utf8_lossy(&r.message).into_owned()).collect()
    }

    #[test]
    fn lines_in_one_piece_and_across_pieces() {
        let mut a = LineAssembler::new(StreamId::Stdout, 100, false);
        let recs = collect(&mut a, &[(Some(1), b"one\ntw"), (Some(2), b"o\nthree\n\n")]);
        assert_eq!(msgs(&recs), ["one", "two", "three", ""]);
        // A line keeps the timestamp of its first piece, as dockerd's
        // partial messages do.
        let ts: Vec<_> = recs.iter().map(|r| r.timestamp).collect();
        assert_eq!(ts, [Some(1), Some(1), Some(2), Some(2)]);
        assert!(!a.has_open_line());
    }

    #[test]
    fn sixteen_k_partials_come_out_whole() {
        let mut a = LineAssembler::new(StreamId::Stderr, DEFAULT_MAX_LINE, false);
        let line: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut pieces: Vec<(Option<i64>, &[u8])> = line.chunks(16_384).map(|c| (Some(7), c)).collect();
        pieces.push((Some(7), b"\n"));
        let recs = collect(&mut a, &pieces);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].message, line);
        assert_eq!((recs[0].timestamp, recs[0].stream), (Some(7), StreamId::Stderr));
    }

    #[test]
    fn over_the_cap_is_truncated_once_and_the_rest_skipped() {
        let mut a = LineAssembler::new(StreamId::Stdout, 10, false);
        let recs = collect(&mut a, &[(None, b"0123456"), (None, b"789abcdef"), (None, b"ghi\nnext\n")]);
        assert_eq!(msgs(&recs), ["0123456789", "next"]);
        assert!(recs[0].truncated && !recs[1].truncated);
        assert_eq!(a.stats(), LineStats { truncated: 1, discarded_bytes: 9 });

        // The same via the fast path (whole line in one piece).
        let mut a = LineAssembler::new(StreamId::Stdout, 4, false);
        let recs = collect(&mut a, &[(None, b"abcdefgh\nijkl\n")]);
        assert_eq!(msgs(&recs), ["abcd", "ijkl"]);
        assert_eq!(a.stats(), LineStats { truncated: 1, discarded_bytes: 4 });
    }

    #[test]
    fn a_gigabyte_without_newline_stays_bounded() {
        let mut a = LineAssembler::new(StreamId::Stdout, 1 << 20, false);
        let block = vec![b'x'; 1 << 20];
        let mut n = 0;
        for _ in 0..1024 {
            a.push(None, &block, &mut |r| {
                assert!(r.truncated && r.message.len() == 1 << 20);
                n += 1;
            });
            assert!(a.buffered() <= 1 << 20);
        }
        assert_eq!(n, 1);
        assert_eq!(a.stats().discarded_bytes, 1023 << 20);
    }

    #[test]
    fn crlf_is_stripped_only_for_tty() {
        let mut tty = LineAssembler::new(StreamId::Stdout, 100, true);
        let recs = collect(&mut tty, &[(None, b"a\r\nb\r"), (None, b"\nc\r\r\n\r\n")]);
        assert_eq!(msgs(&recs), ["a", "b", "c\r", ""]);
        let mut plain = LineAssembler::new(StreamId::Stdout, 100, false);
        let recs = collect(&mut plain, &[(None, b"a\r\n")]);
        assert_eq!(msgs(&recs), ["a\r"]);
    }

    #[test]
    fn flush_and_abandon() {
        let mut a = LineAssembler::new(StreamId::Stdout, 100, false);
        collect(&mut a, &[(Some(5), b"done\nlast words")]);
        assert_eq!(a.open_line_timestamp(), Some(5));
        let mut out = Vec::new();
        a.flush(&mut |r| out.push(r.to_owned()));
        assert_eq!(msgs(&out), ["last words"]);
        assert!(out[0].partial);
        assert_eq!(a.open_line_timestamp(), None);

        collect(&mut a, &[(Some(6), b"cut off")]);
        a.abandon();
        let mut out = Vec::new();
        a.flush(&mut |r| out.push(r.to_owned()));
        assert!(out.is_empty());
    }

    #[test]
    fn invalid_utf8_passes_through() {
        let mut a = LineAssembler::new(StreamId::Stdout, 100, false);
        let recs = collect(&mut a, &[(None, b"\xff\xfe\x00\n")]);
        assert_eq!(recs[0].message, b"\xff\xfe\x00");
    }
}
