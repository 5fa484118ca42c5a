//! Writing checkpoints from the loop: only for lines already written to
//! the output, so a crash can repeat lines but never skip them.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::agent::event_loop::Agent;
use crate::agent::event_loop::CHECKPOINT_EVERY;
use crate::checkpoint::{self, CheckpointStore, CheckpointView, ContainerCheckpoint};
use crate::message;
use crate::messages::Limiter;

/// How long a checkpoint may wait on a slow output before it is skipped
/// (and tried again a second later).
const FLUSH_WAIT: Duration = Duration::from_millis(200);
/// However slow the disk, a checkpoint at least this often.
const MAX_CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

/// The checkpoint file and when to write it next.
pub(crate) struct Checkpointer {
    pub store: CheckpointStore,
    /// When the agent first ran with this state directory (ns): containers
    /// created before it and never seen are not backfilled.
    pub first_run_at: i64,
    /// No checkpoint file existed at start.
    pub first_run: bool,
    /// Checkpoints of containers read at start, consumed as the containers
    /// are seen (kept in the file until then).
    pub loaded: HashMap<String, ContainerCheckpoint>,
    /// Something changed since the last write.
    pub dirty: bool,
    /// A write is scheduled on the wheel.
    pub armed: bool,
    /// How long after a change the next write comes (longer when writes
    /// are slow, see `write_checkpoint`).
    pub every: Duration,
    /// Rate limit of "cannot sync the output" messages.
    pub sync_warn: Limiter,
}

impl Checkpointer {
    /// Open the state directory (locking it) and read what it holds.
    pub(crate) fn open(dir: &Path, now_ns: i64) -> anyhow::Result<Self> {
        let store = CheckpointStore::open(dir)?;
        let (first_run, first_run_at, loaded) = match store.load()? {
            Some(state) => (false, state.first_run_at, valid_checkpoints(state.containers)),
            None => (true, now_ns, HashMap::new()),
        };
        Ok(Checkpointer {
            store,
            first_run_at,
            first_run,
            loaded,
            dirty: first_run,
            armed: false,
            every: CHECKPOINT_EVERY,
            sync_warn: Limiter::new(Duration::from_secs(60)),
        })
    }
}

impl Agent {
    pub(crate) fn write_checkpoint(&mut self) {
        if !self.checkpoints.dirty {
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
            if let Some(held) = self.checkpoints.sync_warn.allow(Instant::now()) {
                message!(
                    "cannot sync output {} to disk ({e}); checkpoint not written, retrying{}",
                    self.output.describe(),
                    crate::messages::held_back(held)
                );
            }
            return;
        }
        let started = Instant::now();
        let mut state = checkpoint::new_view(self.checkpoints.first_run_at);
        for (id, ck) in &self.checkpoints.loaded {
            state.containers.insert(id, ck.into());
        }
        for c in self.containers.values() {
            if let Some(resume) = c.checkpoint_resume() {
                let drained = c.checkpoint_drained();
                state.containers.insert(&c.id, CheckpointView { name: &c.name, drained, resume });
            }
        }
        match self.checkpoints.store.save(&state) {
            Ok(bytes) => {
                self.checkpoints.dirty = false;
                self.metrics.checkpoint_writes.inc();
                self.metrics.checkpoint_bytes.set(bytes as i64);
                // Writing (and fsyncing) blocks the loop: with many busy
                // containers the file is megabytes, so space the writes to
                // keep them under ~5% of the loop's time. A crash then
                // repeats a little more, and still loses nothing.
                self.checkpoints.every =
                    CHECKPOINT_EVERY.max(started.elapsed() * 20).min(MAX_CHECKPOINT_EVERY);
            }
            Err(e) => {
                self.metrics.checkpoint_errors.inc();
                message!("{e:#}");
            }
        }
    }
}

/// Checkpoints by container id, without those whose id is not one: ids
/// become request paths, and the file may have been edited by hand (or by
/// someone hostile).
fn valid_checkpoints(
    loaded: std::collections::BTreeMap<String, crate::checkpoint::ContainerCheckpoint>,
) -> HashMap<String, crate::checkpoint::ContainerCheckpoint> {
    let before = loaded.len();
    let valid: HashMap<_, _> =
        loaded.into_iter().filter(|(id, _)| crate::docker::api::is_container_id(id)).collect();
    if valid.len() < before {
        message!("ignored {} checkpoint(s) whose container id is not 64 hex digits", before - valid.len());
    }
    valid
}
