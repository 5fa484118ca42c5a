//! Operator messages on standard error: one line each, `log-capturer: …`,
//! written so that they can never stall the loop nor panic.
//!
//! `eprintln!` is unfit for a program whose stdout may be a nonblocking
//! pipe: with `2>&1` (or journald's stdout socket under systemd) stderr
//! shares that pipe's open file description, so making stdout nonblocking
//! makes stderr nonblocking too, and `eprintln!` panics on the first
//! `EAGAIN`. If stderr is a separate pipe whose reader stalls, a blocking
//! write would park the whole loop.
//!
//! So [`message!`] formats the line into one buffer of at most `PIPE_BUF`
//! bytes (a pipe write that size is atomic: never torn, never interleaved),
//! asks `poll` with a zero timeout whether stderr has room, and writes it in
//! one `write(2)`. A line that would block is dropped and counted
//! ([`dropped`], `log_capturer_stderr_dropped_total`); nothing waits.
//! [`message_blocking!`] waits up to a second, for the last words of a
//! process that is exiting.
//!
//! When stderr is the very pipe or socket the records go to (`2>&1`), a
//! message written while a record is half written would land inside it:
//! the output tells [`output_mid_record`], and messages wait (up to
//! [`MAX_HELD`], in order) until the record is whole.
//!
//! [`Limiter`] is the one rate limit for messages that can repeat: the
//! first of a run is shown, the rest are counted and summarised with the
//! next one shown.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// Longest line written (Linux `PIPE_BUF`): writes up to this size into a
/// pipe are atomic.
pub const MAX_LINE: usize = 4096;

/// Messages kept while a record is half written to a shared stderr.
pub const MAX_HELD: usize = 64;

static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Stderr is the same pipe or socket as the output.
static SHARED: AtomicBool = AtomicBool::new(false);
/// The output has written part of a record (only tracked when `SHARED`).
static MID_RECORD: AtomicBool = AtomicBool::new(false);
/// Messages waiting for a record to be finished (the agent has one thread:
/// this lock is never contended).
static HELD: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// Whether `fd` (the output) is the same pipe or socket as stderr; from
/// then on messages never cut into a record (see the module doc).
pub fn share_with_output(fd: BorrowedFd<'_>) -> bool {
    let same = match (nix::sys::stat::fstat(fd), nix::sys::stat::fstat(std::io::stderr().as_fd())) {
        (Ok(a), Ok(b)) => {
            let kind = nix::sys::stat::SFlag::from_bits_truncate(a.st_mode) & nix::sys::stat::SFlag::S_IFMT;
            let streamy = kind == nix::sys::stat::SFlag::S_IFIFO || kind == nix::sys::stat::SFlag::S_IFSOCK;
            streamy && a.st_dev == b.st_dev && a.st_ino == b.st_ino
        }
        _ => false,
    };
    SHARED.store(same, Ordering::Relaxed);
    same
}

/// The output is (or is no longer) in the middle of a record. When it is
/// not, held messages are written.
pub fn output_mid_record(mid: bool) {
    if !SHARED.load(Ordering::Relaxed) {
        return;
    }
    MID_RECORD.store(mid, Ordering::Relaxed);
    if !mid {
        release_held();
    }
}

/// Write held messages in order while stderr takes them.
fn release_held() -> bool {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let stderr = std::io::stderr();
    while let Some(line) = held.front() {
        if !write_fd(stderr.as_fd(), line.as_bytes(), Duration::ZERO) {
            return false;
        }
        held.pop_front();
    }
    true
}

fn hold(line: String) {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if held.len() < MAX_HELD {
        held.push_back(line);
    } else {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Messages dropped because stderr would have blocked.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Write `log-capturer: <message>` to stderr if it can be done without
/// waiting; otherwise drop it and count it.
#[macro_export]
macro_rules! message {
    ($($arg:tt)*) => {
        {
            $crate::messages::write(format_args!($($arg)*), std::time::Duration::ZERO);
        }
    };
}

/// Like [`message!`], waiting up to a second for stderr: for the error a
/// process prints as it exits.
#[macro_export]
macro_rules! message_blocking {
    ($($arg:tt)*) => {
        {
            $crate::messages::write(format_args!($($arg)*), std::time::Duration::from_secs(1));
        }
    };
}

/// Write one message line, waiting at most `wait` for stderr to take it.
/// Returns whether it was written.
pub fn write(args: fmt::Arguments<'_>, wait: Duration) -> bool {
    let line = format_line(args);
    // Never inside a record, and never ahead of older messages (waiting
    // for them, if this write may wait).
    let shared = SHARED.load(Ordering::Relaxed);
    if shared && (MID_RECORD.load(Ordering::Relaxed) || (!release_held() && wait.is_zero())) {
        hold(line);
        return true;
    }
    let stderr = std::io::stderr();
    let ok = write_fd(stderr.as_fd(), line.as_bytes(), wait);
    if !ok {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

/// `log-capturer: <args>\n`, cut to [`MAX_LINE`] bytes at a character
/// boundary (ending `…\n` when cut).
pub fn format_line(args: fmt::Arguments<'_>) -> String {
    let mut line = String::with_capacity(128);
    line.push_str("log-capturer: ");
    let _ = line.write_fmt(args);
    // A message is one line: a daemon's text may carry newlines.
    if line.contains(['\n', '\r']) {
        line = line.replace(['\n', '\r'], " ");
    }
    if line.len() + 1 > MAX_LINE {
        let mut cut = MAX_LINE - "…\n".len();
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line.push('\n');
    line
}

/// One whole write of `bytes`, after `fd` polled writable within `wait`.
/// A partial write (only possible on a terminal or a file) is finished
/// under the same rule.
fn write_fd(fd: BorrowedFd<'_>, mut bytes: &[u8], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if !revents.contains(PollFlags::POLLOUT) {
            // POLLERR/POLLHUP: nobody reads stderr.
            return false;
        }
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return false,
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            // Shared with a nonblocking stdout and full right now.
            Err(Errno::EAGAIN) if !left.is_zero() => {}
            Err(_) => return false,
        }
    }
    true
}

/// Shows the first message of a run and at most one per `every` after it;
/// counts the ones held back so the next one shown can say how many.
#[derive(Debug, Clone)]
pub struct Limiter {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Limiter {
    pub const fn new(every: Duration) -> Self {
        Limiter { every, last: None, held: 0 }
    }

    /// `Some(n)` if a message may be shown now, `n` being how many were held
    /// back since the last one shown; `None` to hold this one back.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now.saturating_duration_since(t) < self.every) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }

    /// Start over: the next message is shown at once (the trouble ended).
    pub fn reset(&mut self) {
        self.last = None;
        self.held = 0;
    }
}

/// ` (N similar messages held back)`, or nothing for 0: to append to a
/// message that [`Limiter::allow`] let through.
pub fn held_back(n: u64) -> String {
    match n {
        0 => String::new(),
        1 => " (1 similar message held back)".to_owned(),
        n => format!(" ({n} similar messages held back)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_line_and_capped() {
        assert_eq!(format_line(format_args!("hello {}", 1)), "log-capturer: hello 1\n");
        assert_eq!(format_line(format_args!("a\nb\r\nc")), "log-capturer: a b  c\n");
        let long = "é".repeat(5000);
        let l = format_line(format_args!("{long}"));
        assert!(l.len() <= MAX_LINE, "{}", l.len());
        assert!(l.ends_with("…\n"));
    }

    #[test]
    fn a_full_nonblocking_pipe_drops_instead_of_blocking_or_failing() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let flags = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
        let line = vec![b'x'; 1000];
        let mut written = 0;
        let started = Instant::now();
        while write_fd(w.as_fd(), &line, Duration::ZERO) {
            written += 1;
            assert!(written < 10_000, "a pipe never filled");
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        // Whole lines only: the pipe holds a multiple of the line length.
        let mut got = 0;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let flags = nix::fcntl::OFlag::O_NONBLOCK;
            nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
            match nix::unistd::read(&r, &mut buf) {
                Ok(n) if n > 0 => got += n,
                _ => break,
            }
        }
        assert_eq!(got, written * line.len());
        // Room again: it writes.
        assert!(write_fd(w.as_fd(), &line, Duration::ZERO));
    }

    #[test]
    fn a_closed_reader_is_a_drop_not_a_signal_death() {
        // SIGPIPE is ignored by the Rust runtime: the write gets EPIPE.
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        assert!(!write_fd(w.as_fd(), b"x\n", Duration::ZERO));
    }

    #[test]
    fn limiter_shows_one_per_period_and_counts_the_rest() {
        let mut l = Limiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(61)), Some(2));
        assert_eq!(held_back(2), " (2 similar messages held back)");
        l.reset();
        assert_eq!(l.allow(t0 + Duration::from_secs(62)), Some(0));
    }
}
