//! Writing checkpoints from the loop: only for lines already written to
//! the output, so a crash can repeat lines but never skip them.

use std::time::{Duration, Instant};

use crate::agent::event_loop::Agent;
use crate::agent::event_loop::CHECKPOINT_EVERY;
use crate::checkpoint::{self, CheckpointView};
use crate::message;

/// How long a checkpoint may wait on a slow output before it is skipped
/// (and tried again a second later).
const FLUSH_WAIT: Duration = Duration::from_millis(200);
/// However slow the disk, a checkpoint at least this often.
const MAX_CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

impl Agent {
    pub(crate) fn write_checkpoint(&mut self) {
        if !self.checkpoint_dirty {
            return;
        }
        self.flush_output();
        if self.output.pending() > 0 {
            match self.output.flush_blocking(Instant::now() + FLUSH_WAIT) {
                Ok(true) => {}
                Ok(false) => return, // the timer tries again
                Err(e) => return self.output_failed(e),
            }
        }
        // A power cut must not lose lines a checkpoint calls delivered.
        if let Err(e) = self.output.sync() {
            self.metrics.checkpoint_errors.inc();
            if let Some(held) = self.sync_warn.allow(Instant::now()) {
                message!(
                    "cannot sync output {} to disk ({e}); checkpoint not written, retrying{}",
                    self.output.describe(),
                    crate::messages::held_back(held)
                );
            }
            return;
        }
        let started = Instant::now();
        let mut state = checkpoint::new_view(self.first_run_at);
        for (id, ck) in &self.loaded {
            state.containers.insert(id, ck.into());
        }
        for c in self.containers.values() {
            if let Some(resume) = &c.resume {
                state.containers.insert(&c.id, CheckpointView { name: &c.name, drained: c.drained, resume });
            }
        }
        match self.store.save(&state) {
            Ok(bytes) => {
                self.checkpoint_dirty = false;
                self.metrics.checkpoint_writes.inc();
                self.metrics.checkpoint_bytes.set(bytes as i64);
                // Writing (and fsyncing) blocks the loop: with many busy
                // containers the file is megabytes, so space the writes to
                // keep them under ~5% of the loop's time. A crash then
                // repeats a little more, and still loses nothing.
                self.checkpoint_every =
                    CHECKPOINT_EVERY.max(started.elapsed() * 20).min(MAX_CHECKPOINT_EVERY);
            }
            Err(e) => {
                self.metrics.checkpoint_errors.inc();
                message!("{e:#}");
            }
        }
    }
}
