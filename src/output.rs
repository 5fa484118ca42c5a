//! Where records go: standard output or an append-only file, through one
//! bounded buffer.
//!
//! A pipe or socket on stdout is made nonblocking and polled like any other
//! fd, so a slow reader never stalls the loop: when the buffer passes its
//! high-water mark the loop stops reading log streams (dockerd holds the
//! lines; nothing is lost) until the buffer drains below the low mark.
//! Regular files and /dev/null cannot be polled; writes to them go straight
//! through.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;

use anyhow::Context;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::record::{self, Record};

/// Stop reading streams when this much output is waiting.
pub const HIGH_WATER: usize = 4 << 20;
/// Resume reading when it has drained below this.
pub const LOW_WATER: usize = 1 << 20;
/// Write as soon as this much is buffered, without waiting for the tick.
pub const EAGER_FLUSH: usize = 256 << 10;

enum Target {
    Stdout(io::Stdout),
    File { path: PathBuf, file: File },
}

pub struct Output {
    target: Target,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written.
    written: usize,
}

impl Output {
    /// `-` is standard output; anything else a file opened for appending.
    pub fn open(spec: &str) -> anyhow::Result<Self> {
        let target = if spec == "-" {
            Target::Stdout(io::stdout())
        } else {
            let path = PathBuf::from(spec);
            let file = open_append(&path)?;
            Target::File { path, file }
        };
        Ok(Self { target, buf: Vec::with_capacity(64 << 10), written: 0 })
    }

    /// Make a pipe, socket or terminal on the output nonblocking so it can
    /// be polled. Returns false for regular files and /dev/null, which the
    /// kernel does not poll (they are always writable).
    pub fn make_pollable(&mut self) -> bool {
        let Ok(st) = nix::sys::stat::fstat(self.fd()) else {
            return false;
        };
        let kind = nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT;
        let streamy = kind == nix::sys::stat::SFlag::S_IFIFO || kind == nix::sys::stat::SFlag::S_IFSOCK;
        if !streamy {
            return false;
        }
        let Ok(flags) = fcntl(self.fd(), FcntlArg::F_GETFL) else {
            return false;
        };
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        if fcntl(self.fd(), FcntlArg::F_SETFL(flags)).is_err() {
            return false;
        }
        true
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd().as_raw_fd()
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match &self.target {
            Target::Stdout(s) => s.as_fd(),
            Target::File { file, .. } => file.as_fd(),
        }
    }

    /// Append one record as a JSON line. `extra`: see [`record::write_json`].
    pub fn push(&mut self, rec: &Record<'_>, extra: &[u8]) {
        record::write_json(&mut self.buf, rec, extra);
        self.buf.push(b'\n');
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.written
    }

    /// Past the high-water mark: stop reading streams.
    pub fn is_full(&self) -> bool {
        self.pending() >= HIGH_WATER
    }

    /// Below the low-water mark: streams may be read again.
    pub fn has_room(&self) -> bool {
        self.pending() < LOW_WATER
    }

    /// Write as much as the fd takes now. Ok(true) when everything is out.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.written < self.buf.len() {
            let res = match &mut self.target {
                Target::Stdout(s) => s.write(&self.buf[self.written..]),
                Target::File { file, .. } => file.write(&self.buf[self.written..]),
            };
            match res {
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "output accepts no more bytes"))
                }
                Ok(n) => {
                    self.written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.compact();
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.written = 0;
        if self.buf.capacity() > 4 * HIGH_WATER {
            self.buf = Vec::with_capacity(64 << 10);
        }
        if let Target::Stdout(s) = &mut self.target {
            s.flush()?;
        }
        Ok(true)
    }

    /// Drop written bytes from the front once they are most of the buffer.
    fn compact(&mut self) {
        if self.written > self.buf.len() / 2 {
            self.buf.drain(..self.written);
            self.written = 0;
        }
    }

    /// Flush everything, waiting for a nonblocking fd up to `deadline`.
    /// For shutdown: after this, checkpoints may cover every record.
    pub fn flush_blocking(&mut self, deadline: std::time::Instant) -> io::Result<bool> {
        loop {
            if self.flush()? {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let mut fds = [nix::poll::PollFd::new(self.fd(), nix::poll::PollFlags::POLLOUT)];
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        }
    }

    /// Reopen the file (SIGHUP, after logrotate moved it). Buffered bytes
    /// go to the new file.
    pub fn reopen(&mut self) -> anyhow::Result<bool> {
        if let Target::File { path, file } = &mut self.target {
            *file = open_append(path)?;
            return Ok(true);
        }
        Ok(false)
    }
}

fn open_append(path: &PathBuf) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open output file {} for appending", path.display()))
}
