//! The output as the loop sees it: flushed on a tick and whenever much is
//! buffered, the backpressure it puts on reading (a blocked pipe, a full
//! disk), a file deleted under it, and the failures that stop the agent.
//! What each write error means is [`crate::output`]'s.

use std::io;
use std::time::{Duration, Instant};

use crate::agent::event_loop::{Agent, FLUSH_EVERY};
use crate::message;
use crate::output::Flushed;

/// A file output is checked this often for having been deleted.
const DELETED_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The loop's state of the output.
#[derive(Debug)]
pub(crate) struct Writer {
    /// A flush is scheduled on the wheel.
    pub flush_armed: bool,
    /// The output has taken nothing since then (a slow reader or no space).
    pub blocked_since: Option<Instant>,
    /// The output's filesystem has been full since then.
    pub no_space_since: Option<Instant>,
    /// Last look at whether the output file was deleted.
    pub checked_at: Instant,
    /// The output failed for good: stop and return this.
    pub fatal: Option<OutputFailed>,
}

impl Default for Writer {
    fn default() -> Self {
        Writer {
            flush_armed: false,
            blocked_since: None,
            no_space_since: None,
            checked_at: Instant::now(),
            fatal: None,
        }
    }
}

/// The output failed for good: [`Agent::run`] returns it, and the process
/// exits with status 1 (not 0: a supervisor must see a failure).
#[derive(Debug)]
pub struct OutputFailed(pub String);

impl std::fmt::Display for OutputFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OutputFailed {}

impl Agent {
    /// The flush timer: write what waits, after checking (once a second)
    /// that a file output still exists.
    pub(crate) fn flush_tick(&mut self) {
        if self.writer.checked_at.elapsed() >= DELETED_CHECK_EVERY {
            self.writer.checked_at = Instant::now();
            self.check_output_deleted();
        }
        self.flush_output();
    }

    pub(crate) fn flush_output(&mut self) {
        let result = self.output.flush();
        self.metrics.output_buffer_bytes.set(self.output.pending() as i64);
        match result {
            Ok(Flushed::All) => {
                if let Some(since) = self.writer.blocked_since.take() {
                    self.metrics.output_blocked(since.elapsed());
                }
                if let Some(since) = self.writer.no_space_since.take() {
                    message!(
                        "output {}: space is available again; writing resumed after {:.0?} without",
                        self.output.describe(),
                        since.elapsed()
                    );
                }
            }
            Ok(Flushed::Blocked) => {
                self.writer.blocked_since.get_or_insert_with(Instant::now);
            }
            Ok(Flushed::NoSpace) => {
                self.writer.blocked_since.get_or_insert_with(Instant::now);
                if self.writer.no_space_since.is_none() {
                    self.writer.no_space_since = Some(Instant::now());
                    self.metrics.output_no_space.inc();
                    message!(
                        "output {}: no space left; log streams are paused (their lines wait in \
                         dockerd's log files, checkpoints stay where they are) and writing is \
                         retried every {FLUSH_EVERY:?}; free some space",
                        self.output.describe()
                    );
                }
            }
            Err(e) => self.output_failed(e),
        }
    }

    /// The output cannot be written (a reader that went away, an I/O
    /// error): stop with a non-zero status. Checkpoints stay where they
    /// were, so the next run writes the unwritten lines again.
    pub(crate) fn output_failed(&mut self, e: io::Error) {
        if self.writer.fatal.is_some() {
            return;
        }
        let what = self.output.describe();
        let why = if e.raw_os_error() == Some(nix::errno::Errno::EPIPE as i32) {
            format!("the reader of {what} went away ({e})")
        } else {
            format!("cannot write {what}: {e}")
        };
        message!("{why}; stopping (lines not written are read again from the checkpoint on the next start)");
        self.writer.fatal = Some(OutputFailed(why));
        self.shutdown = true;
    }

    /// A file output deleted (not renamed) while open: reopen it by its
    /// path, or everything written from now on would vanish with the fd.
    fn check_output_deleted(&mut self) {
        if !self.output.is_deleted() {
            return;
        }
        self.metrics.output_reopened.inc();
        match self.output.reopen() {
            Ok(_) => message!("output {} was deleted; created it again", self.output.describe()),
            Err(e) => {
                message!("output {} was deleted and cannot be created again: {e:#}", self.output.describe())
            }
        }
    }
}
