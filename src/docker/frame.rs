//! Docker's multiplexed stream framing (`application/vnd.docker.multiplexed-stream`).
//!
//! Every message from a non-TTY container's log is one frame: an 8-byte
//! header `[stream, 0, 0, 0, len as u32 big-endian]` and `len` payload bytes.
//! Frames are independent of the HTTP chunks that carry them: a chunk may hold
//! several frames and a frame may span several chunks, so this is a push
//! parser that keeps at most the 8 header bytes between calls and hands out
//! payload as borrowed slices of the input, never buffering it.
//!
//! Like moby's own reader (`stdcopy`), the three padding bytes are ignored.

use std::fmt;

pub const HEADER_LEN: usize = 8;

/// Default cap on one frame's length. dockerd's json-file frames are at most
/// 16 KiB of message plus a timestamp, but other drivers write larger ones
/// (awslogs 256 KiB, local up to 1 MB), so the cap is generous. It protects
/// against a desynchronised or hostile stream, not against memory use: the
/// payload is never buffered whole.
pub const DEFAULT_MAX_FRAME: u32 = 8 << 20;

/// The `stream` byte of a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamId {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
    /// An error message from the daemon itself ("Error grabbing logs: …"),
    /// never container output.
    SystemErr = 3,
}

impl StreamId {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Stdin),
            1 => Some(Self::Stdout),
            2 => Some(Self::Stderr),
            3 => Some(Self::SystemErr),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdin => "stdin",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::SystemErr => "systemerr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The first header byte is not 0 to 3: the stream is not multiplexed
    /// (a TTY container?) or has lost sync.
    UnknownStream(u8),
    /// The header announces more than the configured cap.
    TooLong { len: u32, max: u32 },
    /// The input ended inside a header or payload.
    Truncated { missing: u32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownStream(b) => write!(
                f,
                "frame header names unknown stream {b} (0x{b:02x}); is this a TTY container's raw stream?"
            ),
            Self::TooLong { len, max } => {
                write!(f, "frame of {len} bytes exceeds the cap of {max} bytes")
            }
            Self::Truncated { missing } => {
                write!(f, "stream ended inside a frame ({missing} bytes missing)")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// What one call to [`FrameDecoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameEvent<'a> {
    /// A header was read; `len` payload bytes follow (possibly none).
    Start { stream: StreamId, len: u32 },
    /// Some of the current frame's payload.
    Payload(&'a [u8]),
    /// The current frame's payload is complete.
    End,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Header {
        buf: [u8; HEADER_LEN],
        have: u8,
    },
    Payload {
        remaining: u32,
    },
    /// Header and payload consumed; `End` still to be reported.
    Ending,
}

#[derive(Debug, Clone)]
pub struct FrameDecoder {
    state: State,
    stream: StreamId,
    max_frame: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    pub fn new(max_frame: u32) -> Self {
        Self { state: State::Header { buf: [0; HEADER_LEN], have: 0 }, stream: StreamId::Stdout, max_frame }
    }

    /// Header bytes held from earlier calls (0 to 7).
    pub fn header_held(&self) -> usize {
        match self.state {
            State::Header { have, .. } => usize::from(have),
            _ => 0,
        }
    }

    /// The stream of the frame being read (meaningful after `Start`).
    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// Consume bytes from `input`; returns how many were consumed and what,
    /// if anything, was completed. `None` means all of `input` was consumed
    /// without completing anything (a partial header). Call again with the
    /// rest of the input until it is empty.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<FrameEvent<'a>>), FrameError> {
        match &mut self.state {
            State::Header { buf, have } => {
                let have_n = usize::from(*have);
                let take = (HEADER_LEN - have_n).min(input.len());
                buf[have_n..have_n + take].copy_from_slice(&input[..take]);
                *have += take as u8;
                if usize::from(*have) < HEADER_LEN {
                    return Ok((take, None));
                }
                let stream = StreamId::from_byte(buf[0]).ok_or(FrameError::UnknownStream(buf[0]))?;
                let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                if len > self.max_frame {
                    return Err(FrameError::TooLong { len, max: self.max_frame });
                }
                self.stream = stream;
                self.state = if len == 0 { State::Ending } else { State::Payload { remaining: len } };
                Ok((take, Some(FrameEvent::Start { stream, len })))
            }
            State::Payload { remaining } => {
                if input.is_empty() {
                    return Ok((0, None));
                }
                let take = (*remaining as usize).min(input.len());
                *remaining -= take as u32;
                if *remaining == 0 {
                    self.state = State::Ending;
                }
                Ok((take, Some(FrameEvent::Payload(&input[..take]))))
            }
            State::Ending => {
                self.state = State::Header { buf: [0; HEADER_LEN], have: 0 };
                Ok((0, Some(FrameEvent::End)))
            }
        }
    }

    /// True between frames: the input may end here cleanly.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// The input has ended: an error unless it ended between frames. A frame
    /// whose payload was all seen but whose `End` was not yet collected counts
    /// as complete.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.state {
            State::Header { have: 0, .. } | State::Ending => Ok(()),
            State::Header { have, .. } => {
                Err(FrameError::Truncated { missing: (HEADER_LEN as u32) - u32::from(have) })
            }
            State::Payload { remaining } => Err(FrameError::Truncated { missing: remaining }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// Run the decoder over `pieces` and describe every event as text.
    fn run(dec: &mut FrameDecoder, pieces: &[&[u8]]) -> Result<Vec<String>, FrameError> {
        let mut out = Vec::new();
        let mut payload = Vec::new();
        for piece in pieces {
            let mut input = *piece;
            loop {
                let (n, ev) = dec.decode(input)?;
                input = &input[n..];
                match ev {
                    Some(FrameEvent::Start { stream, len }) => {
                        out.push(format!("start {} {len}", stream.as_str()))
                    }
                    Some(FrameEvent::Payload(p)) => payload.extend_from_slice(p),
                    Some(FrameEvent::End) => {
                        out.push(format!("end {:?}", String::from_utf8_lossy(&payload)));
                        payload.clear();
                    }
                    None => {}
                }
                if input.is_empty() && ev.is_none() {
                    break;
                }
            }
        }
        dec.finish()?;
        Ok(out)
    }

    #[test]
    fn several_frames_in_one_piece() {
        let mut wire = frame(1, b"hello\n");
        wire.extend(frame(2, b"oops\n"));
        wire.extend(frame(1, b""));
        let got = run(&mut FrameDecoder::default(), &[&wire]).unwrap();
        assert_eq!(
            got,
            [
                "start stdout 6",
                "end \"hello\\n\"",
                "start stderr 5",
                "end \"oops\\n\"",
                "start stdout 0",
                "end \"\""
            ]
        );
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let mut wire = frame(1, b"first line\n");
        wire.extend(frame(3, b"Error grabbing logs: boom"));
        wire.extend(frame(2, &[0xff; 300]));
        let whole = run(&mut FrameDecoder::default(), &[&wire]).unwrap();
        for cut in 0..=wire.len() {
            let got = run(&mut FrameDecoder::default(), &[&wire[..cut], &wire[cut..]]).unwrap();
            assert_eq!(got, whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(run(&mut FrameDecoder::default(), &bytes).unwrap(), whole);
    }

    #[test]
    fn unknown_stream_is_an_error() {
        let err = run(&mut FrameDecoder::default(), &[b"2026-11-27T19:48:22Z hi\r\n"]);
        assert_eq!(err, Err(FrameError::UnknownStream(b'2')));
    }

    #[test]
    fn huge_length_is_refused_without_allocating() {
        let wire = [1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        let err = run(&mut FrameDecoder::new(1 << 20), &[&wire]);
        assert_eq!(err, Err(FrameError::TooLong { len: u32::MAX, max: 1 << 20 }));
    }

    #[test]
    fn truncation_is_reported() {
        let wire = frame(1, b"abcdef");
        assert_eq!(
            run(&mut FrameDecoder::default(), &[&wire[..3]]),
            Err(FrameError::Truncated { missing: 5 })
        );
        assert_eq!(
            run(&mut FrameDecoder::default(), &[&wire[..10]]),
            Err(FrameError::Truncated { missing: 4 })
        );
    }

    #[test]
    fn padding_bytes_are_ignored_like_moby() {
        let wire = [2, 9, 9, 9, 0, 0, 0, 1, b'x'];
        let got = run(&mut FrameDecoder::default(), &[&wire]).unwrap();
        assert_eq!(got, ["start stderr 1", "end \"x\""]);
    }
}
