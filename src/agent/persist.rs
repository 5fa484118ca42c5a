//! Writing checkpoints from the loop without stalling it, and only for
//! lines already delivered, so a crash can repeat lines but never skip
//! them.
//!
//! A snapshot is written in slices, one per turn: each slice first hands
//! the output everything buffered (`write(2)`: from then on the page cache
//! has those lines), then encodes the entries of as many containers as fit
//! in [`SLICE_BUDGET`] and appends them to the fresh copy's temporary file.
//! An entry encoded at t claims only lines written by t, and resume points
//! only move forward, so a snapshot whose entries come from different
//! turns is never ahead of the output either. The last slice renames it
//! into place: the fresh copy, begun every 800 ms while anything changed
//! and never synced, because a process crash keeps the page cache.
//!
//! Against a power cut, every [`DURABLE_EVERY`] (longer while syncing is
//! slow) a published snapshot is staged as the durable copy and
//! [`STAGE_WAIT`] later committed: the output is synced (`fdatasync`), then
//! the copy, then it is renamed into place and the directory synced. Those
//! syncs still hold the loop (one thread, no sync thread), so their work is
//! started early: the writeback of what the output took is started after
//! every fresh snapshot, the copy's when it is staged.
//! `log_capturer_checkpoint_longest_block_seconds` shows the longest turn.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::agent::event_loop::{wall_ns, Agent, Timer, CHECKPOINT_EVERY};
use crate::checkpoint::{self, CheckpointStore, CheckpointView, ContainerCheckpoint};
use crate::message;
use crate::messages::Limiter;

/// The most one turn of the loop spends encoding a snapshot's entries.
const SLICE_BUDGET: Duration = Duration::from_millis(2);
/// Entries encoded between looks at the clock.
const ENTRIES_PER_LOOK: usize = 32;
/// A snapshot waits for the output to take what is buffered (a slow pipe)
/// without blocking for this long; then it waits up to [`FLUSH_WAIT`].
const PATIENCE: Duration = Duration::from_secs(1);
/// How long a snapshot may block on a slow output before it tries again
/// on the next turn.
const FLUSH_WAIT: Duration = Duration::from_millis(200);
/// How often the durable copy is renewed while anything changed...
const DURABLE_EVERY: Duration = Duration::from_secs(10);
/// ...and at least, however slow the disk (the syncs are kept under 5 % of
/// the loop's time in between).
const MAX_DURABLE_EVERY: Duration = Duration::from_secs(60);
/// From staging a durable copy (its writeback started) to syncing it.
const STAGE_WAIT: Duration = Duration::from_secs(1);

/// The checkpoint files and the snapshot being written.
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
    /// Something changed since the last snapshot began.
    pub dirty: bool,
    /// A checkpoint timer is on the wheel.
    pub armed: bool,
    /// This boot's id, recorded in each snapshot.
    boot_id: Option<String>,
    /// The last snapshot's number.
    seq: u64,
    snapshot: Option<Snapshot>,
    /// When the next snapshot may begin ([`CHECKPOINT_EVERY`] after the last began).
    next_at: Instant,
    /// A durable copy waits for its sync, since then.
    staged: Option<Instant>,
    /// When the durable copy is renewed next, and how often.
    durable_at: Instant,
    durable_every: Duration,
    /// The output file's bytes whose writeback was started, by inode.
    kicked: (u64, u64),
    /// The longest a checkpoint held one turn of the loop.
    longest: Duration,
    /// Rate limit of messages about failed writes and syncs.
    warn: Limiter,
}

/// A snapshot being written, slice by slice.
struct Snapshot {
    /// Since when it waits for the output without blocking (see [`PATIENCE`]).
    patient_since: Instant,
    started_ns: i64,
    /// The containers it covers, as they were when it began; those gone
    /// since are left out.
    ids: Vec<String>,
    next: usize,
    entries: usize,
    file: File,
    buf: Vec<u8>,
    bytes: usize,
}

impl Checkpointer {
    /// Open the state directory (locking it) and read what it holds.
    pub(crate) fn open(dir: &Path, now_ns: i64) -> anyhow::Result<Self> {
        let store = CheckpointStore::open(dir)?;
        let boot_id = checkpoint::boot_id();
        let (first_run, first_run_at, seq, loaded) = match store.load(boot_id.as_deref())? {
            Some(state) => (false, state.first_run_at, state.seq, valid_checkpoints(state.containers)),
            None => (true, now_ns, 0, HashMap::new()),
        };
        let now = Instant::now();
        Ok(Checkpointer {
            store,
            first_run_at,
            first_run,
            loaded,
            dirty: first_run,
            armed: false,
            boot_id,
            seq,
            snapshot: None,
            next_at: now,
            staged: None,
            durable_at: now + DURABLE_EVERY,
            durable_every: DURABLE_EVERY,
            kicked: (0, 0),
            longest: Duration::ZERO,
            warn: Limiter::new(Duration::from_secs(60)),
        })
    }

    /// When the checkpoint timer should fire, now that something changed.
    pub(crate) fn due(&self) -> Instant {
        self.next_at.max(Instant::now())
    }
}

impl Agent {
    /// The checkpoint timer: the durable copy's sync when due, a new
    /// snapshot every 800 ms while anything changed, and the next slice of
    /// the one being written.
    pub(crate) fn checkpoint_tick(&mut self) {
        let turn = Instant::now();
        if self.checkpoints.staged.is_some_and(|at| turn >= at + STAGE_WAIT) {
            self.commit_durable();
        }
        let ck = &self.checkpoints;
        if ck.snapshot.is_none() && ck.dirty && turn >= ck.next_at {
            self.begin_snapshot();
        }
        if self.checkpoints.snapshot.is_some()
            && self.snapshot_slice(Some(turn + SLICE_BUDGET))
            && turn >= self.checkpoints.durable_at
            && self.checkpoints.staged.is_none()
        {
            self.stage_durable();
        }
        self.note_block(turn.elapsed());
        let ck = &self.checkpoints;
        let next = [
            ck.snapshot.as_ref().map(|_| Instant::now()),
            ck.staged.map(|at| at + STAGE_WAIT),
            ck.dirty.then_some(ck.next_at),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(at) = next {
            self.timers.insert(at, Timer::Checkpoint);
            self.checkpoints.armed = true;
        }
    }

    /// Write a whole snapshot now and make it durable, blocking: on the
    /// first run (so the next start knows when it began, even if the
    /// output never drains) and on shutdown.
    pub(crate) fn write_checkpoint(&mut self) {
        if !self.checkpoints.dirty {
            return;
        }
        let turn = Instant::now();
        self.checkpoints.snapshot = None;
        self.begin_snapshot();
        if self.snapshot_slice(None) {
            self.stage_durable();
            if self.checkpoints.staged.is_some() {
                self.commit_durable();
            }
        }
        self.note_block(turn.elapsed());
    }

    fn begin_snapshot(&mut self) {
        let ck = &mut self.checkpoints;
        // Also after a failure: the next try comes [`CHECKPOINT_EVERY`] later.
        ck.next_at = Instant::now() + CHECKPOINT_EVERY;
        let file = match ck.store.begin() {
            Ok(f) => f,
            Err(e) => {
                let what = format!("cannot write checkpoints to {} ({e})", ck.store.fresh_path().display());
                return self.checkpoint_failed(what);
            }
        };
        let mut ids: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, c)| c.checkpoint_resume().is_some())
            .map(|(id, _)| id.clone())
            .collect();
        ids.extend(ck.loaded.keys().filter(|id| !self.containers.contains_key(*id)).cloned());
        ck.seq += 1;
        let mut buf = Vec::with_capacity(64 << 10);
        checkpoint::header(&mut buf, ck.first_run_at, ck.boot_id.as_deref(), ck.seq);
        ck.dirty = false;
        ck.snapshot = Some(Snapshot {
            patient_since: Instant::now(),
            started_ns: wall_ns(),
            ids,
            next: 0,
            entries: 0,
            file,
            buf,
            bytes: 0,
        });
    }

    /// Encode and append entries until `deadline` (None: all of them);
    /// true once the snapshot is complete and published.
    fn snapshot_slice(&mut self, deadline: Option<Instant>) -> bool {
        // Never record a line that did not reach the output.
        self.flush_output();
        if self.output.pending() > 0 {
            let waited =
                self.checkpoints.snapshot.as_ref().map_or(true, |s| s.patient_since.elapsed() >= PATIENCE);
            if deadline.is_some() && !waited {
                return false;
            }
            match self.output.flush_blocking(Instant::now() + FLUSH_WAIT) {
                Ok(true) => {}
                Ok(false) => {
                    // Patient again: blocking at most once a second.
                    if let Some(s) = self.checkpoints.snapshot.as_mut() {
                        s.patient_since = Instant::now();
                    }
                    return false;
                }
                Err(e) => {
                    self.output_failed(e);
                    return false;
                }
            }
        }
        let Some(snap) = self.checkpoints.snapshot.as_mut() else {
            return false;
        };
        let encoded = encode_entries(snap, &self.containers, &self.checkpoints.loaded, deadline);
        let done = snap.next == snap.ids.len();
        if done {
            checkpoint::trailer(&mut snap.buf);
        }
        let written = encoded.and_then(|()| {
            snap.file.write_all(&snap.buf).map_err(|e| {
                anyhow::anyhow!(
                    "cannot write checkpoints to {} ({e})",
                    self.checkpoints.store.fresh_path().display()
                )
            })
        });
        snap.bytes += snap.buf.len();
        snap.buf.clear();
        if let Err(e) = written {
            self.checkpoints.snapshot = None;
            self.checkpoint_failed(format!("{e:#}"));
            return false;
        }
        done && self.publish_snapshot()
    }

    fn publish_snapshot(&mut self) -> bool {
        let Some(snap) = self.checkpoints.snapshot.take() else {
            return false;
        };
        if let Err(e) = self.checkpoints.store.publish() {
            let what = format!(
                "cannot write checkpoints to {} ({e})",
                self.checkpoints.store.fresh_path().display()
            );
            self.checkpoint_failed(what);
            return false;
        }
        self.metrics.checkpoint_writes.inc();
        self.metrics.checkpoint_bytes.set(snap.bytes as i64);
        self.metrics.checkpoint_timestamp.set(snap.started_ns as f64 / 1e9);
        // Its fd is closed first: a checkpoint holds one at a time.
        drop(snap);
        self.start_output_writeback();
        true
    }

    /// Start writing back what the output file took since the last call,
    /// after each snapshot, so that the durable copy's `fdatasync` of it
    /// finds a second's worth to wait for, not ten. `POSIX_FADV_DONTNEED` starts the
    /// writeback of dirty pages without waiting for it, and drops only
    /// clean ones (few: these were just written).
    fn start_output_writeback(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Some(file) = self.output.regular_file() else { return };
        let Ok(meta) = file.metadata() else { return };
        let (ino, from) = self.checkpoints.kicked;
        let from = if ino == meta.ino() && from <= meta.len() { from } else { 0 };
        let (Ok(at), Ok(len)) =
            (nix::libc::off_t::try_from(from), nix::libc::off_t::try_from(meta.len() - from))
        else {
            return;
        };
        if len > 0 {
            let advice = nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED;
            let _ = nix::fcntl::posix_fadvise(file, at, len, advice);
        }
        self.checkpoints.kicked = (meta.ino(), meta.len());
    }

    /// Make the snapshot just published the next durable copy.
    fn stage_durable(&mut self) {
        match self.checkpoints.store.stage() {
            Ok(()) => self.checkpoints.staged = Some(Instant::now()),
            Err(e) => {
                let what = format!("cannot stage {} ({e})", self.checkpoints.store.path().display());
                self.checkpoint_failed(what);
            }
        }
    }

    /// Sync the output, then the staged copy, and rename it into place.
    fn commit_durable(&mut self) {
        if self.checkpoints.staged.take().is_none() {
            return;
        }
        let started = Instant::now();
        // A power cut must not lose lines a durable checkpoint calls delivered.
        if let Err(e) = self.output.sync() {
            self.checkpoints.staged = Some(started);
            let what = format!(
                "cannot sync output {} to disk ({e}); the durable checkpoint is not renewed, retrying",
                self.output.describe()
            );
            return self.checkpoint_failed(what);
        }
        match self.checkpoints.store.commit() {
            Ok(()) => {
                self.metrics.checkpoint_durable_writes.inc();
            }
            Err(e) => {
                let what =
                    format!("cannot write checkpoints to {} ({e})", self.checkpoints.store.path().display());
                self.checkpoint_failed(what);
            }
        }
        let ck = &mut self.checkpoints;
        ck.durable_every = DURABLE_EVERY.max(started.elapsed() * 20).min(MAX_DURABLE_EVERY);
        ck.durable_at = Instant::now() + ck.durable_every;
    }

    /// A write or sync failed: count it, say it (at most once a minute),
    /// and try again with the next snapshot.
    fn checkpoint_failed(&mut self, what: String) {
        self.metrics.checkpoint_errors.inc();
        self.checkpoints.dirty = true;
        if let Some(held) = self.checkpoints.warn.allow(Instant::now()) {
            message!("{what}{}", crate::messages::held_back(held));
        }
    }

    fn note_block(&mut self, took: Duration) {
        if took > self.checkpoints.longest {
            self.checkpoints.longest = took;
            self.metrics.checkpoint_longest_block.set(took.as_secs_f64());
        }
    }
}

/// Append the entries of `snap`'s next containers to its buffer, until
/// `deadline` if any.
fn encode_entries(
    snap: &mut Snapshot,
    containers: &HashMap<String, crate::agent::container::Container>,
    loaded: &HashMap<String, ContainerCheckpoint>,
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    let mut n = 0;
    while let Some(id) = snap.ids.get(snap.next) {
        if n == ENTRIES_PER_LOOK {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            n = 0;
        }
        snap.next += 1;
        n += 1;
        let view = match containers.get(id) {
            Some(c) => c.checkpoint_resume().map(|resume| CheckpointView {
                name: &c.name,
                drained: c.checkpoint_drained(),
                resume,
            }),
            None => loaded.get(id).map(CheckpointView::from),
        };
        if let Some(view) = view {
            if snap.entries > 0 {
                snap.buf.push(b',');
            }
            checkpoint::entry(&mut snap.buf, id, &view)?;
            snap.entries += 1;
        }
    }
    Ok(())
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
