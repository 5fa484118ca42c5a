//! Where records go: standard output or an append-only file, through one
//! bounded buffer, written with raw `write(2)` calls (never through a std
//! buffer, which would keep a tail of its own and report it written).
//!
//! What each outcome of a write means:
//! - **Would block** (`EAGAIN`, a pipe or socket whose reader pauses):
//!   backpressure. A pipe or socket is made nonblocking and polled like any
//!   other fd; when the buffer passes its high-water mark the loop stops
//!   reading log streams (dockerd holds the lines; nothing is lost) until it
//!   drains below the low mark.
//! - **No space** (`ENOSPC`, `EDQUOT`): backpressure too, retried on the
//!   flush tick until space returns. A file output reserves the space of
//!   each write first (`fallocate`), so a full disk never leaves a torn
//!   record: a record is on disk whole or not at all.
//! - **Anything else** (`EPIPE`: the reader went away; `EIO`, …): fatal.
//!   The agent stops with a non-zero status, and the checkpoint stays where
//!   it was, so the next run writes those lines again.
//!
//! A file that does not end with a newline when it is opened (an earlier
//! run killed in the middle of a write) gets one first, so a new record is
//! never glued onto a torn one. [`Output::sync`] makes a file durable before
//! a checkpoint that covers it is written.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FallocateFlags, FcntlArg, OFlag};

use crate::record::{self, Record};

/// Stop reading streams when this much output is waiting.
pub const HIGH_WATER: usize = 4 << 20;
/// Resume reading when it has drained below this.
pub const LOW_WATER: usize = 1 << 20;
/// Write as soon as this much is buffered, without waiting for the tick.
pub const EAGER_FLUSH: usize = 256 << 10;
/// Permissions of a file output the agent creates (before the umask): the
/// records hold every container's output, not for every local user.
pub const FILE_MODE: u32 = 0o640;

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything buffered is written.
    All,
    /// The reader is slow (`EAGAIN`): wait for the fd to be writable.
    Blocked,
    /// No space on the file's filesystem (`ENOSPC`, `EDQUOT`): try again
    /// later.
    NoSpace,
}

enum Target {
    /// A duplicate of fd 1, written directly.
    Stdout(File),
    File {
        path: PathBuf,
        file: File,
    },
}

pub struct Output {
    target: Target,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written.
    written: usize,
    /// The fd was made nonblocking by us (restored when dropped).
    made_nonblocking: bool,
    /// The output is a regular file (not a pipe, socket or device): it is
    /// synced before checkpoints and checked for a torn last record.
    regular: bool,
    /// A regular file whose filesystem supports `fallocate`: each write's
    /// space is reserved first.
    reserve: bool,
    /// Stderr is this same pipe or socket (`2>&1`): messages must not be
    /// written while a record is half written.
    shares_stderr: bool,
}

impl Output {
    /// `-` is standard output; anything else a file opened for appending.
    pub fn open(spec: &str) -> anyhow::Result<Self> {
        let target = if spec == "-" {
            let fd = io::stdout().as_fd().try_clone_to_owned().context("cannot use standard output")?;
            Target::Stdout(File::from(fd))
        } else {
            let path = PathBuf::from(spec);
            let file = open_append(&path)?;
            Target::File { path, file }
        };
        let mut out = Self {
            target,
            buf: Vec::with_capacity(64 << 10),
            written: 0,
            made_nonblocking: false,
            regular: false,
            reserve: false,
            shares_stderr: false,
        };
        out.regular = out.is_regular_file();
        out.reserve = out.regular;
        out.shares_stderr = crate::messages::share_with_output(out.file().as_fd());
        out.start_on_fresh_line()?;
        Ok(out)
    }

    /// Make a pipe, socket or terminal on the output nonblocking so it can
    /// be polled. Returns false for regular files and /dev/null, which the
    /// kernel does not poll (they are always writable).
    pub fn make_pollable(&mut self) -> bool {
        let Ok(st) = nix::sys::stat::fstat(self.file()) else {
            return false;
        };
        let kind = nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT;
        let streamy = kind == nix::sys::stat::SFlag::S_IFIFO || kind == nix::sys::stat::SFlag::S_IFSOCK;
        if !streamy {
            return false;
        }
        let Ok(flags) = fcntl(self.file(), FcntlArg::F_GETFL) else {
            return false;
        };
        let flags = OFlag::from_bits_truncate(flags);
        if !flags.contains(OFlag::O_NONBLOCK) {
            if fcntl(self.file(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).is_err() {
                return false;
            }
            self.made_nonblocking = true;
        }
        true
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file().as_raw_fd()
    }

    /// The output file, if it is a regular one (for its writeback and
    /// size; pipes and devices have neither).
    pub fn regular_file(&self) -> Option<&File> {
        self.regular.then(|| self.file())
    }

    fn file(&self) -> &File {
        match &self.target {
            Target::Stdout(f) | Target::File { file: f, .. } => f,
        }
    }

    /// What the output is, for messages: `standard output` or the path.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Stdout(_) => "standard output".to_owned(),
            Target::File { path, .. } => path.display().to_string(),
        }
    }

    fn is_regular_file(&self) -> bool {
        self.file().metadata().is_ok_and(|m| m.file_type().is_file())
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

    /// Write as much as the fd takes now. `Err` is fatal (see the module
    /// documentation); `EAGAIN` and no space are not errors.
    pub fn flush(&mut self) -> io::Result<Flushed> {
        let r = self.write_buffered();
        if self.shares_stderr {
            crate::messages::output_mid_record(self.written > 0 && self.buf[self.written - 1] != b'\n');
        }
        r
    }

    fn write_buffered(&mut self) -> io::Result<Flushed> {
        while self.written < self.buf.len() {
            let end = match self.reserve_space() {
                Ok(end) => end,
                Err(e) if is_no_space(&e) => {
                    self.compact();
                    return Ok(Flushed::NoSpace);
                }
                Err(e) => return Err(e),
            };
            match self.file().write(&self.buf[self.written..end]) {
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "output accepts no more bytes"))
                }
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.compact();
                    return Ok(Flushed::Blocked);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_no_space(&e) => {
                    self.compact();
                    return Ok(Flushed::NoSpace);
                }
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.written = 0;
        if self.buf.capacity() > 4 * HIGH_WATER {
            self.buf = Vec::with_capacity(64 << 10);
        }
        Ok(Flushed::All)
    }

    /// For a file: reserve the space of the next write so that it cannot
    /// stop half way for lack of space (a torn record). All that is
    /// buffered if it fits, else the first whole record. Returns where the
    /// next write should end.
    fn reserve_space(&mut self) -> io::Result<usize> {
        let all = self.buf.len();
        if !self.reserve {
            return Ok(all);
        }
        let size = self.file().metadata()?.len();
        let reserve = |len: usize| {
            // off_t is 32 bits on armv7 glibc: past 2 GiB (or for a write
            // that large) it cannot say where; write without reserving.
            let (Ok(at), Ok(len)) = (nix::libc::off_t::try_from(size), nix::libc::off_t::try_from(len))
            else {
                return Err(Errno::EOVERFLOW);
            };
            nix::fcntl::fallocate(self.file(), FallocateFlags::FALLOC_FL_KEEP_SIZE, at, len)
        };
        match reserve(all - self.written) {
            Ok(()) => return Ok(all),
            Err(Errno::ENOSPC | Errno::EDQUOT) => {}
            // Not supported here (some filesystems, e.g. with compression):
            // write without reserving, as a plain append does.
            Err(Errno::EOPNOTSUPP | Errno::EINVAL | Errno::ENOSYS) => {
                self.reserve = false;
                return Ok(all);
            }
            // Only from the off_t conversion above: this write unreserved.
            Err(Errno::EOVERFLOW) => return Ok(all),
            Err(e) => return Err(e.into()),
        }
        let one = memchr::memchr(b'\n', &self.buf[self.written..]).map_or(all, |i| self.written + i + 1);
        reserve(one - self.written).map_err(io::Error::from)?;
        Ok(one)
    }

    /// Drop written records from the front once they are most of the
    /// buffer. The buffer always starts at a record's first byte, so that a
    /// record begun in one file can be written whole to the next
    /// ([`Output::reopen`]).
    fn compact(&mut self) {
        if self.written > self.buf.len() / 2 {
            let whole = self.record_start();
            self.buf.drain(..whole);
            self.written -= whole;
        }
    }

    /// Where the record being written begins: after the last newline
    /// written.
    fn record_start(&self) -> usize {
        memchr::memrchr(b'\n', &self.buf[..self.written]).map_or(0, |i| i + 1)
    }

    /// Flush everything, waiting for a nonblocking fd up to `deadline`.
    /// For shutdown and checkpoints: after `Ok(true)`, checkpoints may cover
    /// every record. No space is not waited for.
    pub fn flush_blocking(&mut self, deadline: std::time::Instant) -> io::Result<bool> {
        loop {
            match self.flush()? {
                Flushed::All => return Ok(true),
                Flushed::NoSpace => return Ok(false),
                Flushed::Blocked => {}
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let mut fds = [nix::poll::PollFd::new(self.file().as_fd(), nix::poll::PollFlags::POLLOUT)];
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        }
    }

    /// Make what was written durable (a file; pipes and sockets have
    /// nothing to sync), before a checkpoint says it was delivered.
    pub fn sync(&self) -> io::Result<()> {
        match &self.target {
            Target::File { file, .. } if self.regular => file.sync_data(),
            _ => Ok(()),
        }
    }

    /// Reopen the file (SIGHUP, after logrotate moved it). Buffered bytes
    /// go to the new file.
    pub fn reopen(&mut self) -> anyhow::Result<bool> {
        if let Target::File { path, file } = &mut self.target {
            *file = open_append(path)?;
            // A record cut by the switch goes to the new file whole (the
            // old one keeps its first part, torn as a killed run leaves it).
            self.written = self.record_start();
            self.regular = self.is_regular_file();
            self.reserve = self.regular;
            self.start_on_fresh_line()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The output file was deleted (not renamed) while open: whatever is
    /// written to it now is lost when it is closed.
    pub fn is_deleted(&self) -> bool {
        match &self.target {
            Target::File { file, .. } => file.metadata().is_ok_and(|m| m.nlink() == 0),
            Target::Stdout(_) => false,
        }
    }

    /// A file that ends in the middle of a record (an earlier run killed
    /// while writing it) gets a newline before the first new record. The
    /// torn record was not covered by any checkpoint: it is written again
    /// whole.
    fn start_on_fresh_line(&mut self) -> anyhow::Result<()> {
        let Target::File { path, file } = &self.target else {
            return Ok(());
        };
        if !self.regular {
            return Ok(());
        }
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len == 0 {
            return Ok(());
        }
        let mut last = [0u8; 1];
        let read = std::os::unix::fs::FileExt::read_at(file, &mut last, len - 1);
        // Opened append-only (no read access): nothing to check.
        if read.is_ok_and(|n| n == 1) && last[0] != b'\n' {
            crate::message!(
                "output {} ends with an incomplete record (an earlier run stopped while writing it); \
                 starting on a new line, the record follows again whole",
                path.display()
            );
            // Before what is still to be written (a reopen may keep
            // records written to the old file at the front).
            self.buf.insert(self.written, b'\n');
        }
        Ok(())
    }
}

impl Drop for Output {
    /// Leave stdout as we found it: a shell or the next program sharing the
    /// pipe does not expect it nonblocking.
    fn drop(&mut self) {
        if !self.made_nonblocking {
            return;
        }
        if let Ok(flags) = fcntl(self.file(), FcntlArg::F_GETFL) {
            let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
            let _ = fcntl(self.file(), FcntlArg::F_SETFL(flags));
        }
    }
}

fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc_errno) if libc_errno == Errno::ENOSPC as i32 || libc_errno == Errno::EDQUOT as i32)
}

fn open_append(path: &Path) -> anyhow::Result<File> {
    // Read access too: to see whether the file ends with a newline.
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(FILE_MODE)
        .open(path)
        .or_else(|_| OpenOptions::new().create(true).append(true).mode(FILE_MODE).open(path))
        .with_context(|| format!("cannot open output file {} for appending", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(msg: &str) -> Record<'_> {
        Record {
            timestamp: Some(1),
            stream: crate::docker::frame::StreamId::Stdout,
            message: msg.as_bytes(),
            truncated: false,
            partial: false,
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("lc-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn a_file_ending_mid_record_gets_a_newline_first() {
        let p = tmp("torn");
        std::fs::write(&p, b"{\"whole\":1}\n{\"torn\":").unwrap();
        let mut out = Output::open(p.to_str().unwrap()).unwrap();
        out.push(&rec("next"), b"");
        assert_eq!(out.flush().unwrap(), Flushed::All);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "{\"torn\":");
        assert!(lines[2].starts_with('{') && lines[2].contains("\"next\""), "{text}");
        // A whole file is left alone.
        drop(out);
        let before = std::fs::read(&p).unwrap();
        let mut out = Output::open(p.to_str().unwrap()).unwrap();
        assert_eq!(out.flush().unwrap(), Flushed::All);
        assert_eq!(std::fs::read(&p).unwrap(), before);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_deleted_file_is_noticed() {
        let p = tmp("deleted");
        let out = Output::open(p.to_str().unwrap()).unwrap();
        assert!(!out.is_deleted());
        std::fs::remove_file(&p).unwrap();
        assert!(out.is_deleted());
    }

    #[test]
    fn a_closed_pipe_is_fatal_and_a_full_one_is_backpressure() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut out = Output {
            target: Target::Stdout(File::from(w)),
            buf: Vec::new(),
            written: 0,
            made_nonblocking: false,
            regular: false,
            reserve: false,
            shares_stderr: false,
        };
        assert!(out.make_pollable());
        let line = "x".repeat(1000);
        let mut blocked = false;
        for _ in 0..1000 {
            out.push(&rec(&line), b"");
            if out.flush().unwrap() == Flushed::Blocked {
                blocked = true;
                break;
            }
        }
        assert!(blocked, "a pipe nobody reads never filled");
        assert!(out.pending() > 0);
        drop(r);
        let e = out.flush().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(Errno::EPIPE as i32));
    }
}
