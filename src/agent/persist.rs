//! Writing checkpoints from the loop: only for lines already written to
//! the output, so a crash can repeat lines but never skip them.

use std::time::{Duration, Instant};

use crate::agent::event_loop::Agent;
use crate::checkpoint::{self, ContainerCheckpoint};

/// How long a checkpoint may wait on a slow output before it is skipped
/// (and tried again a second later).
const FLUSH_WAIT: Duration = Duration::from_millis(200);

impl Agent {
    pub(crate) fn write_checkpoint(&mut self) {
        if !self.checkpoint_dirty {
            return;
        }
        self.flush_output();
        if self.output.pending() > 0 {
            match self.output.flush_blocking(Instant::now() + FLUSH_WAIT) {
                Ok(true) => {}
                Ok(false) | Err(_) => return, // the timer tries again
            }
        }
        let mut state = checkpoint::new_state(self.first_run_at);
        for (id, ck) in &self.loaded {
            state.containers.insert(id.clone(), ck.clone());
        }
        for c in self.containers.values() {
            if let Some(resume) = &c.resume {
                state.containers.insert(
                    c.id.clone(),
                    ContainerCheckpoint { name: c.name.clone(), drained: c.drained, resume: resume.clone() },
                );
            }
        }
        match self.store.save(&state) {
            Ok(()) => {
                self.checkpoint_dirty = false;
                self.metrics.checkpoint_writes.inc();
            }
            Err(e) => {
                self.metrics.checkpoint_errors.inc();
                eprintln!("log-capturer: {e:#}");
            }
        }
    }
}
