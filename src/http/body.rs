//! HTTP/1.1 response body framing: chunked, `Content-Length`, or read until
//! the connection closes.
//!
//! A push parser: it walks chunk-size lines and trailers one byte at a time
//! in a small state machine, so it keeps no buffer between calls and hands
//! out body data as slices of the caller's input. Any split of the input,
//! down to single bytes, yields the same data and the same end.

use std::fmt;

/// How the response says its body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Chunked,
    Length(u64),
    /// No length and not chunked: the body is everything until EOF.
    UntilClose,
}

/// Longest chunk-size line (size, extensions) or trailer line we accept.
/// dockerd sends neither extensions nor trailers; the cap stops a hostile
/// peer from making us walk an endless line.
pub const MAX_LINE: usize = 4096;
/// Longest trailer section we accept, all lines together.
pub const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// A byte that cannot stand here in chunked framing; `at` is its offset
    /// in the input passed to `decode`.
    BadChunk { at: usize, byte: u8, expected: &'static str },
    /// A chunk size that does not fit in 64 bits.
    ChunkSizeOverflow { at: usize },
    /// A chunk-size or trailer line longer than [`MAX_LINE`], or trailers
    /// longer than [`MAX_TRAILERS`].
    LineTooLong { at: usize },
    /// EOF before the body's end.
    Truncated,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadChunk { byte, expected, .. } => {
                write!(f, "malformed chunked body: byte 0x{byte:02x} where {expected} was expected")
            }
            Self::ChunkSizeOverflow { .. } => {
                write!(f, "malformed chunked body: chunk size overflows")
            }
            Self::LineTooLong { .. } => {
                write!(f, "malformed chunked body: chunk-size or trailer line too long")
            }
            Self::Truncated => write!(f, "connection closed before the end of the response body"),
        }
    }
}

impl std::error::Error for BodyError {}

impl BodyError {
    /// Offset in the input passed to the failing `decode` call, if any.
    pub fn offset(&self) -> Option<usize> {
        match *self {
            Self::BadChunk { at, .. } | Self::ChunkSizeOverflow { at } | Self::LineTooLong { at } => Some(at),
            Self::Truncated => None,
        }
    }

    fn shift(self, by: usize) -> Self {
        match self {
            Self::BadChunk { at, byte, expected } => Self::BadChunk { at: at + by, byte, expected },
            Self::ChunkSizeOverflow { at } => Self::ChunkSizeOverflow { at: at + by },
            Self::LineTooLong { at } => Self::LineTooLong { at: at + by },
            Self::Truncated => Self::Truncated,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum BodyEvent<'a> {
    Data(&'a [u8]),
    /// The body is complete; bytes after it belong to the next response.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of a chunk size; `digits` seen so far.
    Size {
        size: u64,
        digits: u8,
        line: usize,
    },
    /// After the size: extensions or whitespace up to the line end.
    Ext {
        size: u64,
        line: usize,
    },
    /// Saw CR ending the size line; LF must follow.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    /// After a chunk's data: CRLF (or a bare LF) must follow.
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty line.
    TrailerStart {
        total: usize,
    },
    Trailer {
        total: usize,
    },
    TrailerLf {
        total: usize,
    },
    EndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Chunked(Chunk),
    Length { remaining: u64 },
    UntilClose,
    Done,
}

#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
}

impl BodyDecoder {
    pub fn new(kind: BodyKind) -> Self {
        let state = match kind {
            BodyKind::Chunked => State::Chunked(Chunk::Size { size: 0, digits: 0, line: 0 }),
            BodyKind::Length(0) => State::Done,
            BodyKind::Length(n) => State::Length { remaining: n },
            BodyKind::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consume bytes of `input`. Returns how many were consumed and the event
    /// they completed, if any. `(n, None)` means `n` framing bytes were eaten
    /// and more input is needed; after `End` nothing more is consumed.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<BodyEvent<'a>>), BodyError> {
        match &mut self.state {
            State::Done => Ok((0, Some(BodyEvent::End))),
            State::UntilClose => Ok((input.len(), (!input.is_empty()).then_some(BodyEvent::Data(input)))),
            State::Length { remaining } => {
                if input.is_empty() {
                    return Ok((0, None));
                }
                let take = usize::try_from(*remaining).unwrap_or(usize::MAX).min(input.len());
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.state = State::Done;
                }
                Ok((take, Some(BodyEvent::Data(&input[..take]))))
            }
            State::Chunked(_) => self.decode_chunked(input),
        }
    }

    /// The connection reached EOF. Completes a read-until-close body; any
    /// other unfinished body is [`BodyError::Truncated`].
    pub fn finish(&mut self) -> Result<(), BodyError> {
        match self.state {
            State::Done => Ok(()),
            State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(BodyError::Truncated),
        }
    }

    fn decode_chunked<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<BodyEvent<'a>>), BodyError> {
        let State::Chunked(mut c) = self.state else { unreachable!() };
        let mut i = 0;
        let result = loop {
            if let Chunk::Data { remaining } = c {
                if i == input.len() {
                    break Ok((i, None));
                }
                let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(input.len() - i);
                let left = remaining - take as u64;
                c = if left == 0 { Chunk::DataCr } else { Chunk::Data { remaining: left } };
                break Ok((i + take, Some(BodyEvent::Data(&input[i..i + take]))));
            }
            let Some(&b) = input.get(i) else {
                break Ok((i, None));
            };
            let bad = |expected| Err(BodyError::BadChunk { at: i, byte: b, expected });
            c = match c {
                Chunk::Size { size, digits, line } => match hex(b) {
                    Some(_) if line >= MAX_LINE => break Err(BodyError::LineTooLong { at: i }),
                    Some(v) if size >> 60 == 0 => Chunk::Size {
                        size: size << 4 | u64::from(v),
                        digits: digits.saturating_add(1),
                        line: line + 1,
                    },
                    Some(_) => break Err(BodyError::ChunkSizeOverflow { at: i }),
                    None if digits == 0 => break bad("a hex chunk size"),
                    None => match b {
                        b'\r' => Chunk::SizeLf { size },
                        b'\n' => after_size(size),
                        b';' | b' ' | b'\t' => Chunk::Ext { size, line: line + 1 },
                        _ => break bad("a hex digit, ';' or CRLF"),
                    },
                },
                Chunk::Ext { size, line } => match b {
                    _ if line >= MAX_LINE => break Err(BodyError::LineTooLong { at: i }),
                    b'\r' => Chunk::SizeLf { size },
                    b'\n' => after_size(size),
                    _ => Chunk::Ext { size, line: line + 1 },
                },
                Chunk::SizeLf { size } => match b {
                    b'\n' => after_size(size),
                    _ => break bad("LF after chunk size"),
                },
                Chunk::Data { .. } => unreachable!(),
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    b'\n' => Chunk::Size { size: 0, digits: 0, line: 0 },
                    _ => break bad("CRLF after chunk data"),
                },
                Chunk::DataLf => match b {
                    b'\n' => Chunk::Size { size: 0, digits: 0, line: 0 },
                    _ => break bad("LF after chunk data"),
                },
                Chunk::TrailerStart { total } => match b {
                    b'\r' => Chunk::EndLf,
                    b'\n' => {
                        self.state = State::Done;
                        return Ok((i + 1, Some(BodyEvent::End)));
                    }
                    _ => Chunk::Trailer { total: total + 1 },
                },
                Chunk::Trailer { total } => match b {
                    _ if total >= MAX_TRAILERS => break Err(BodyError::LineTooLong { at: i }),
                    b'\r' => Chunk::TrailerLf { total: total + 1 },
                    b'\n' => Chunk::TrailerStart { total: total + 1 },
                    _ => Chunk::Trailer { total: total + 1 },
                },
                Chunk::TrailerLf { total } => match b {
                    b'\n' => Chunk::TrailerStart { total: total + 1 },
                    _ => break bad("LF after trailer line"),
                },
                Chunk::EndLf => match b {
                    b'\n' => {
                        self.state = State::Done;
                        return Ok((i + 1, Some(BodyEvent::End)));
                    }
                    _ => break bad("LF after the last chunk"),
                },
            };
            i += 1;
        };
        self.state = State::Chunked(c);
        result
    }
}

/// After a complete size line: data follows, or the trailers if size is 0.
fn after_size(size: u64) -> Chunk {
    if size == 0 {
        Chunk::TrailerStart { total: 0 }
    } else {
        Chunk::Data { remaining: size }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decode a whole body held in memory (tests, small API responses).
/// Returns the body bytes and how much of `input` the body occupied.
pub fn decode_all(kind: BodyKind, input: &[u8], out: &mut Vec<u8>) -> Result<usize, BodyError> {
    let mut dec = BodyDecoder::new(kind);
    let mut at = 0;
    loop {
        let (n, ev) = dec.decode(&input[at..]).map_err(|e| e.shift(at))?;
        at += n;
        match ev {
            Some(BodyEvent::Data(d)) => out.extend_from_slice(d),
            Some(BodyEvent::End) => return Ok(at),
            None if at == input.len() => {
                dec.finish()?;
                return Ok(at);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `pieces` in order, collecting data; returns (data, ended, consumed).
    fn feed(kind: BodyKind, pieces: &[&[u8]]) -> Result<(Vec<u8>, bool, usize), BodyError> {
        let mut dec = BodyDecoder::new(kind);
        let mut data = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            let mut input = *piece;
            loop {
                let (n, ev) = dec.decode(input)?;
                consumed += n;
                input = &input[n..];
                match ev {
                    Some(BodyEvent::Data(d)) => data.extend_from_slice(d),
                    Some(BodyEvent::End) => return Ok((data, true, consumed)),
                    None => break,
                }
            }
        }
        dec.finish()?;
        Ok((data, dec.is_done(), consumed))
    }

    const DOCKERD: &[u8] = b"8\r\n\x01\0\0\0\0\0\0\x03\r\n3\r\nhi\n\r\n0\r\n\r\n";

    #[test]
    fn chunked_as_dockerd_sends_it() {
        let (data, ended, used) = feed(BodyKind::Chunked, &[DOCKERD]).unwrap();
        assert_eq!(data, b"\x01\0\0\0\0\0\0\x03hi\n");
        assert!(ended);
        assert_eq!(used, DOCKERD.len());
    }

    #[test]
    fn chunked_any_split_same_result() {
        let whole = feed(BodyKind::Chunked, &[DOCKERD]).unwrap();
        for a in 0..=DOCKERD.len() {
            for b in a..=DOCKERD.len() {
                let got = feed(BodyKind::Chunked, &[&DOCKERD[..a], &DOCKERD[a..b], &DOCKERD[b..]]).unwrap();
                assert_eq!(got, whole, "split at {a},{b}");
            }
        }
        let bytes: Vec<&[u8]> = DOCKERD.chunks(1).collect();
        assert_eq!(feed(BodyKind::Chunked, &bytes).unwrap(), whole);
    }

    #[test]
    fn extensions_trailers_uppercase_hex_and_bare_lf() {
        let wire = b"A;name=value;x\r\nabcdefghij\r\n1 \nk\n0\r\nX-Trailer: yes\r\nMore: 1\n\r\n";
        let (data, ended, used) = feed(BodyKind::Chunked, &[wire]).unwrap();
        assert_eq!(data, b"abcdefghijk");
        assert!(ended);
        assert_eq!(used, wire.len());
    }

    #[test]
    fn stops_at_the_end_and_leaves_the_rest() {
        let mut wire = DOCKERD.to_vec();
        wire.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let (_, ended, used) = feed(BodyKind::Chunked, &[&wire]).unwrap();
        assert!(ended);
        assert_eq!(used, DOCKERD.len());
    }

    #[test]
    fn malformed_chunks() {
        let e = feed(BodyKind::Chunked, &[b"zz\r\n"]).unwrap_err();
        assert_eq!(e, BodyError::BadChunk { at: 0, byte: b'z', expected: "a hex chunk size" });
        // Offsets are relative to the input of the failing call; here the
        // data "ab" was handed out by the call before.
        let e = feed(BodyKind::Chunked, &[b"2\r\nabX"]).unwrap_err();
        assert_eq!(e, BodyError::BadChunk { at: 0, byte: b'X', expected: "CRLF after chunk data" });
        let e = decode_all(BodyKind::Chunked, b"2\r\nabX", &mut Vec::new()).unwrap_err();
        assert_eq!(e.offset(), Some(5));
        let e = feed(BodyKind::Chunked, &[b"2\rX"]).unwrap_err();
        assert!(matches!(e, BodyError::BadChunk { at: 2, .. }));
        let e = feed(BodyKind::Chunked, &[b"10000000000000000\r\n"]).unwrap_err();
        assert_eq!(e, BodyError::ChunkSizeOverflow { at: 16 });
        let long_ext = [b"1;".as_slice(), &[b'x'; MAX_LINE + 10]].concat();
        assert!(matches!(feed(BodyKind::Chunked, &[&long_ext]), Err(BodyError::LineTooLong { .. })));
    }

    #[test]
    fn eof_inside_chunked_body_is_truncation() {
        for cut in 0..DOCKERD.len() {
            assert_eq!(
                feed(BodyKind::Chunked, &[&DOCKERD[..cut]]),
                Err(BodyError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn zero_length_chunk_ends_the_body() {
        // A zero-size chunk is the terminator, even mid-stream: what follows
        // is not body.
        let (data, ended, used) = feed(BodyKind::Chunked, &[b"1\r\na\r\n0\r\n\r\n1\r\nb\r\n"]).unwrap();
        assert_eq!(data, b"a");
        assert!(ended);
        assert_eq!(used, 11);
    }

    #[test]
    fn content_length() {
        let (data, ended, used) = feed(BodyKind::Length(5), &[b"he", b"llo", b"extra"]).unwrap();
        assert_eq!((data.as_slice(), ended, used), (b"hello".as_slice(), true, 5));
        assert_eq!(feed(BodyKind::Length(5), &[b"hel"]), Err(BodyError::Truncated));
        assert_eq!(feed(BodyKind::Length(0), &[b"x"]).unwrap(), (vec![], true, 0));
    }

    #[test]
    fn until_close() {
        let (data, ended, _) = feed(BodyKind::UntilClose, &[b"a", b"", b"bc"]).unwrap();
        assert_eq!((data.as_slice(), ended), (b"abc".as_slice(), true));
    }

    #[test]
    fn decode_all_reports_offsets_in_the_whole_input() {
        let mut out = Vec::new();
        let e = decode_all(BodyKind::Chunked, b"3\r\nabc\r\nQ", &mut out).unwrap_err();
        assert_eq!(e.offset(), Some(8));
    }
}
