//! Checkpoints: where each container's stream resumes, kept in
//! `<state-dir>/checkpoints.json` and replaced atomically (write a
//! temporary file, fsync it, rename it over the old one, fsync the
//! directory), so a crash leaves either the old or the new file, never a
//! torn one. The agent writes it at most once a second, only after the
//! output holding every line it covers has been written, and on shutdown.
//!
//! The state directory itself is held with `flock` while the agent runs, so
//! two agents cannot share (and corrupt) it: a lock on a file in it would
//! be lost with the file (`rm lock`), and a second agent would lock a new
//! one. `<state-dir>/lock` is locked too, for agents of earlier versions,
//! which lock only that.
//!
//! The directory is created 0700 and the files in it 0600, whatever the
//! umask: whoever can write the checkpoints decides what is shipped.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::agent::resume::Resume;

pub const FILE_NAME: &str = "checkpoints.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    /// When the agent first ran with this state directory (ns since epoch).
    /// Containers created before it and never seen are not backfilled.
    pub first_run_at: i64,
    pub containers: BTreeMap<String, ContainerCheckpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerCheckpoint {
    pub name: String,
    /// The stream ended with the container stopped: everything it wrote
    /// was shipped. Cleared when it starts again.
    #[serde(default)]
    pub drained: bool,
    pub resume: Resume,
}

/// What [`CheckpointStore::save`] writes, borrowed from the live state so
/// that a write copies nothing but the bytes it encodes.
#[derive(Serialize)]
pub struct StateView<'a> {
    pub version: u32,
    pub first_run_at: i64,
    pub containers: BTreeMap<&'a str, CheckpointView<'a>>,
}

#[derive(Serialize)]
pub struct CheckpointView<'a> {
    pub name: &'a str,
    pub drained: bool,
    pub resume: &'a Resume,
}

impl<'a> From<&'a ContainerCheckpoint> for CheckpointView<'a> {
    fn from(c: &'a ContainerCheckpoint) -> Self {
        CheckpointView { name: &c.name, drained: c.drained, resume: &c.resume }
    }
}

pub struct CheckpointStore {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    /// The directory, open and locked for the life of the store (released
    /// when it is dropped); also what `save` fsyncs.
    dir_lock: nix::fcntl::Flock<File>,
    /// `<dir>/lock`, locked as earlier versions do.
    _file_lock: nix::fcntl::Flock<File>,
}

/// Take `file`'s flock or say who has it.
fn lock(file: File, dir: &Path) -> anyhow::Result<nix::fcntl::Flock<File>> {
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            anyhow::anyhow!(
                "state directory {} is in use by another log-capturer ({e}); give each agent its own --state-dir",
                dir.display()
            )
        } else {
            anyhow::anyhow!(
                "cannot lock state directory {} ({e}); put --state-dir on a local filesystem",
                dir.display()
            )
        }
    })
}

/// Why the state directory cannot be used (`doing` failed with `e`), worded
/// so the operator knows what is wrong with it; `--state-dir` picks another.
fn unusable(dir: &Path, doing: &str, e: std::io::Error) -> anyhow::Error {
    use nix::libc::{EACCES, ENOTDIR, EPERM, EROFS};
    let d = dir.display();
    if fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return anyhow::anyhow!(
            "state directory {d} is a file, not a directory; move the file away or pass another --state-dir"
        );
    }
    match e.raw_os_error() {
        Some(ENOTDIR) => anyhow::anyhow!(
            "state directory {d}: part of its path is a file, not a directory ({e}); pass another --state-dir"
        ),
        Some(EACCES | EPERM) if !dir.is_dir() => anyhow::anyhow!(
            "this user cannot create state directory {d} ({e}); create it for the agent's user \
             (install -d -m 700 -o USER {d}), run the agent as root, or pass another --state-dir"
        ),
        Some(EACCES | EPERM) => anyhow::anyhow!(
            "state directory {d} is not writable by this user ({doing}: {e}); let the agent's user write \
             there (or run it as root) or pass another --state-dir"
        ),
        Some(EROFS) => anyhow::anyhow!(
            "state directory {d} is on a read-only filesystem ({doing}: {e}); pass a --state-dir on \
             writable, persistent storage"
        ),
        _ => anyhow::anyhow!(
            "cannot use state directory {d} ({doing}: {e}); fix it or pass another --state-dir"
        ),
    }
}

impl CheckpointStore {
    /// Create the directory if needed (0700) and take its lock.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| unusable(dir, "cannot create it", e))?;
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY)
            .open(dir)
            .map_err(|e| unusable(dir, "cannot open it", e))?;
        let dir_lock = lock(handle, dir)?;
        if let Ok(meta) = dir_lock.metadata() {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 {
                crate::message!(
                    "state directory {} is writable by group or others (mode {mode:04o}): they could replace \
                     the checkpoints; chmod 700 it",
                    dir.display()
                );
            }
        }
        let lock_path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| unusable(dir, &format!("cannot open {}", lock_path.display()), e))?;
        let file_lock = lock(file, dir)?;
        let tmp = dir.join(".checkpoints.json.tmp");
        // Left by a crash, maybe by a version that created it 0666: `save`
        // must create it anew to give it its mode.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", tmp.display()))
            }
            _ => {}
        }
        Ok(Self { dir: dir.to_owned(), path: dir.join(FILE_NAME), tmp, dir_lock, _file_lock: file_lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The saved state, or None on the very first run.
    pub fn load(&self) -> anyhow::Result<Option<StateFile>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.path.display())),
        };
        let state: StateFile = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a valid checkpoint file; move it away to start over (streams then restart from now)",
                self.path.display()
            )
        })?;
        if state.version != FORMAT_VERSION {
            bail!(
                "{} has format version {}, this agent reads version {FORMAT_VERSION}",
                self.path.display(),
                state.version
            );
        }
        Ok(Some(state))
    }

    /// Replace the file atomically (a [`StateView`], or a [`StateFile`]);
    /// returns the bytes written.
    pub fn save(&self, state: &impl Serialize) -> anyhow::Result<usize> {
        let bytes = serde_json::to_vec(state).context("cannot encode checkpoints")?;
        let write = || -> std::io::Result<()> {
            let mut f =
                OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&self.tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&self.tmp, &self.path)?;
            self.dir_lock.sync_all()
        };
        write().with_context(|| format!("cannot write checkpoints to {}", self.path.display()))?;
        Ok(bytes.len())
    }
}

pub fn new_state(first_run_at: i64) -> StateFile {
    StateFile { version: FORMAT_VERSION, first_run_at, containers: BTreeMap::new() }
}

pub fn new_view<'a>(first_run_at: i64) -> StateView<'a> {
    StateView { version: FORMAT_VERSION, first_run_at, containers: BTreeMap::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lc-ckpt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_load_round_trip_and_lock() {
        let dir = tmpdir("rt");
        let store = CheckpointStore::open(&dir).unwrap();
        assert!(store.load().unwrap().is_none());
        let mut state = new_state(42);
        state.containers.insert(
            "abc".into(),
            ContainerCheckpoint { name: "web".into(), drained: false, resume: Resume::new(7) },
        );
        store.save(&state).unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.first_run_at, 42);
        assert_eq!(back.containers["abc"].resume.start_since, 7);
        assert!(!dir.join(".checkpoints.json.tmp").exists());

        // A view of live state writes the same file.
        let mut view = new_view(42);
        view.containers.insert("abc", (&state.containers["abc"]).into());
        store.save(&view).unwrap();
        assert_eq!(store.load().unwrap().unwrap().containers["abc"].resume.start_since, 7);

        let err = CheckpointStore::open(&dir).err().expect("second agent must be refused");
        assert!(err.to_string().contains("in use by another log-capturer"), "{err}");
        drop(store);
        CheckpointStore::open(&dir).expect("lock released on drop");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_directory_that_is_a_file_is_called_one() {
        let dir = tmpdir("file");
        fs::write(&dir, b"").unwrap();
        let err = format!("{:#}", CheckpointStore::open(&dir).err().expect("a file is no state directory"));
        assert!(err.contains("is a file, not a directory") && err.contains("--state-dir"), "{err}");
        let below = dir.join("state");
        let err = format!("{:#}", CheckpointStore::open(&below).err().expect("a file is no parent"));
        assert!(err.contains("part of its path is a file") && err.contains("--state-dir"), "{err}");
        fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn unusable_state_directories_name_the_flag_and_the_cause() {
        use std::io::Error;
        let dir = tmpdir("unusable");
        fs::create_dir(&dir).unwrap();
        let lock = format!("cannot open {}/lock", dir.display());
        let cases = [
            (Error::from_raw_os_error(nix::libc::EACCES), "is not writable by this user"),
            (Error::from_raw_os_error(nix::libc::EROFS), "is on a read-only filesystem"),
            (Error::from_raw_os_error(nix::libc::EIO), "cannot use state directory"),
        ];
        for (e, says) in cases {
            let err = unusable(&dir, &lock, e).to_string();
            assert!(err.contains(says) && err.contains(&lock) && err.contains("--state-dir"), "{err}");
        }
        // Permission denied on a directory that is not there yet: creating it.
        let missing = dir.join("state");
        let err =
            unusable(&missing, "cannot create it", Error::from_raw_os_error(nix::libc::EACCES)).to_string();
        assert!(err.contains("cannot create state directory") && err.contains("install -d"), "{err}");
        assert!(err.contains("--state-dir"), "{err}");
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_reported_with_a_remedy() {
        let dir = tmpdir("bad");
        let store = CheckpointStore::open(&dir).unwrap();
        fs::write(dir.join(FILE_NAME), b"{not json").unwrap();
        let err = format!("{:#}", store.load().unwrap_err());
        assert!(err.contains("not a valid checkpoint file") && err.contains("move it away"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
