//! Checkpoints: where each container's stream resumes, kept in two copies
//! in the state directory.
//!
//! - `checkpoints.fresh.json`, rewritten every 800 ms while anything
//!   changes, never fsynced: a process crash (`kill -9`, OOM, panic)
//!   leaves the page cache intact, so it is all the agent needs then, and
//!   writing it costs no wait on the disk. It records the boot it was
//!   written in.
//! - `checkpoints.json`, the durable copy: the same bytes, renamed into
//!   place only after the output and the copy itself were synced
//!   (`fdatasync`), then the directory; every 10 s or more. After a power
//!   cut (a new boot id) only this one is trusted: the fresh one may claim
//!   lines the output file lost, or be torn.
//!
//! Both are replaced atomically (written under a temporary name, renamed
//! over the old one), so a reader sees the old or the new file, never a
//! torn one, as long as the machine stays up. Entries are written in slices
//! by the loop (`persist.rs`), so each file is a series of appends.
//!
//! The state directory itself is held with `flock` while the agent runs, so
//! two agents cannot share (and corrupt) it: a lock on a file in it would
//! be lost with the file (`rm lock`), and a second agent would lock a new
//! one. `<state-dir>/lock` is locked too, for agents of earlier versions,
//! which lock only that.
//!
//! The directory is created 0700 and the files in it 0600, whatever the
//! umask: whoever can write the checkpoints decides what is shipped.
//!
//! Two versions: `version` changes only with a layout older agents cannot
//! read (they refuse such a file, and the operator has to move it away:
//! streams then restart from now). `fingerprint_hash` says which hash the
//! fingerprints hold ([`FINGERPRINT_HASH`]); older agents ignore it and
//! compare their own hash, so after a downgrade the line at each resume
//! point is shipped again (one per stream, a few more in a gap being
//! filled), and nothing is lost. A file without it holds FNV-1a
//! fingerprints, which are converted as their lines come again
//! ([`Resume::convert_fnv1a`]): an upgrade neither repeats nor loses a
//! line.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::agent::resume::{Resume, FINGERPRINT_HASH};

/// The durable copy (the only one agents before the fresh copy read).
pub const FILE_NAME: &str = "checkpoints.json";
/// The fresh copy: valid until the machine restarts.
pub const FRESH_NAME: &str = "checkpoints.fresh.json";
const FORMAT_VERSION: u32 = 1;
/// Where the running kernel says which boot this is.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    /// Absent in files of earlier versions: their fingerprints hold FNV-1a.
    /// A later value (a newer agent's) is read as this one: those hashes
    /// then match no line, which costs repeats, never a loss.
    #[serde(default = "fnv1a_era")]
    pub fingerprint_hash: u32,
    /// When the agent first ran with this state directory (ns since epoch).
    /// Containers created before it and never seen are not backfilled.
    pub first_run_at: i64,
    /// The boot the file was written in (absent in files of earlier
    /// versions, which were all durable).
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Counts the snapshots written by one state directory: the newer of
    /// the two copies has the larger one.
    #[serde(default)]
    pub seq: u64,
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

/// One container's entry as the loop writes it, borrowed from the live
/// state so that a write copies nothing but the bytes it encodes.
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
    /// The durable copy, and the name it is staged under until synced.
    path: PathBuf,
    durable_tmp: PathBuf,
    /// The fresh copy, and the name it is written under until complete.
    fresh: PathBuf,
    fresh_tmp: PathBuf,
    /// The directory, open and locked for the life of the store (released
    /// when it is dropped); also what `commit` fsyncs.
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
        let durable_tmp = dir.join(".checkpoints.json.tmp");
        let fresh_tmp = dir.join(".checkpoints.fresh.json.tmp");
        // Left by a crash, maybe by a version that created it 0666: they
        // must be created anew to get their mode.
        for tmp in [&durable_tmp, &fresh_tmp] {
            match fs::remove_file(tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", tmp.display()))
                }
                _ => {}
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            path: dir.join(FILE_NAME),
            durable_tmp,
            fresh: dir.join(FRESH_NAME),
            fresh_tmp,
            dir_lock,
            _file_lock: file_lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The durable copy's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fresh copy's path, for messages.
    pub fn fresh_path(&self) -> &Path {
        &self.fresh
    }

    /// The saved state, or None on the very first run: the fresh copy if
    /// it was written in this boot (`boot_id`; a process crash keeps the
    /// page cache) and is not older than the durable one, else the durable
    /// copy (after a power cut the fresh one may claim lines the output
    /// lost).
    pub fn load(&self, boot_id: Option<&str>) -> anyhow::Result<Option<StateFile>> {
        let durable = read_state(&self.path)?;
        let fresh = match read_state(&self.fresh) {
            Ok(f) => f,
            // Torn by a power cut, which is what the durable copy is for.
            Err(e) if durable.is_some() => {
                crate::message!("{e:#}; starting from the durable copy {}", self.path.display());
                None
            }
            Err(e) => return Err(e),
        };
        Ok(match (fresh, durable) {
            (Some(f), d)
                if boot_id.is_some()
                    && f.boot_id.as_deref() == boot_id
                    && d.as_ref().map_or(true, |d| f.seq >= d.seq) =>
            {
                Some(f)
            }
            (_, Some(d)) => Some(d),
            (Some(f), None) => {
                crate::message!(
                    "{} is missing and {} was written before the machine restarted: starting from it \
                     (lines the output lost in a power cut are not read again)",
                    self.path.display(),
                    self.fresh.display()
                );
                Some(f)
            }
            (None, None) => None,
        })
    }

    /// Start a snapshot: the fresh copy's temporary file, created anew.
    pub fn begin(&self) -> std::io::Result<File> {
        OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&self.fresh_tmp)
    }

    /// The snapshot written to [`CheckpointStore::begin`]'s file is whole:
    /// make it the fresh copy. Not synced: it is meant to survive the
    /// process, not the machine.
    pub fn publish(&self) -> std::io::Result<()> {
        fs::rename(&self.fresh_tmp, &self.fresh)
    }

    /// Give the fresh copy just published a second name under which it
    /// becomes the durable copy once synced ([`CheckpointStore::commit`]);
    /// the loop never writes a published file again.
    pub fn stage(&self) -> std::io::Result<()> {
        match fs::remove_file(&self.durable_tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // A filesystem without hard links gets a copy.
        if fs::hard_link(&self.fresh, &self.durable_tmp).is_err() {
            fs::copy(&self.fresh, &self.durable_tmp)?;
        }
        // Start writing it back now, so that the sync in `commit` finds
        // little left to do (the page cache needs it no more).
        let staged = File::open(&self.durable_tmp)?;
        let _ = nix::fcntl::posix_fadvise(&staged, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
        Ok(())
    }

    /// Make the staged copy the durable one: sync it, rename it into
    /// place, sync the directory. The caller has synced the output first.
    pub fn commit(&self) -> std::io::Result<()> {
        File::open(&self.durable_tmp)?.sync_data()?;
        fs::rename(&self.durable_tmp, &self.path)?;
        self.dir_lock.sync_all()
    }
}

/// This boot's id, or None where /proc does not tell (then only the
/// durable copy is trusted).
pub fn boot_id() -> Option<String> {
    fs::read_to_string(BOOT_ID).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn fnv1a_era() -> u32 {
    1
}

/// A checkpoint file, or None if there is none.
fn read_state(path: &Path) -> anyhow::Result<Option<StateFile>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut state: StateFile = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a valid checkpoint file; move it away to start over (streams then restart from now)",
            path.display()
        )
    })?;
    if state.version != FORMAT_VERSION {
        bail!(
            "{} has format version {}, this agent reads version {FORMAT_VERSION}",
            path.display(),
            state.version
        );
    }
    if state.fingerprint_hash < FINGERPRINT_HASH {
        for c in state.containers.values_mut() {
            c.resume.mark_fnv1a();
        }
    }
    Ok(Some(state))
}

/// The start of a snapshot, up to its first entry; then come `,`-separated
/// [`entry`]s and [`trailer`].
pub fn header(out: &mut Vec<u8>, first_run_at: i64, boot_id: Option<&str>, seq: u64) {
    out.extend_from_slice(
        format!(
            "{{\"version\":{FORMAT_VERSION},\"fingerprint_hash\":{FINGERPRINT_HASH},\"first_run_at\":{first_run_at},"
        )
        .as_bytes(),
    );
    if let Some(b) = boot_id {
        out.extend_from_slice(b"\"boot_id\":");
        // A string never fails to encode.
        let _ = serde_json::to_writer(&mut *out, b);
        out.push(b',');
    }
    out.extend_from_slice(format!("\"seq\":{seq},\"containers\":{{").as_bytes());
}

/// One container's entry of a snapshot.
pub fn entry(out: &mut Vec<u8>, id: &str, ck: &CheckpointView<'_>) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, id).context("cannot encode a checkpoint")?;
    out.push(b':');
    serde_json::to_writer(&mut *out, ck).context("cannot encode a checkpoint")
}

/// The end of a snapshot.
pub fn trailer(out: &mut Vec<u8>) {
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lc-ckpt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    /// Write a snapshot of one container (resume point `since`) as the
    /// fresh copy, and as the durable one too if `durable`.
    fn save(store: &CheckpointStore, boot: Option<&str>, seq: u64, since: i64, durable: bool) {
        let mut bytes = Vec::new();
        header(&mut bytes, 42, boot, seq);
        let resume = Resume::new(since);
        entry(&mut bytes, "abc", &CheckpointView { name: "web", drained: false, resume: &resume }).unwrap();
        trailer(&mut bytes);
        store.begin().unwrap().write_all(&bytes).unwrap();
        store.publish().unwrap();
        if durable {
            store.stage().unwrap();
            store.commit().unwrap();
        }
    }

    /// Replace a file by a new one (the copies may share an inode).
    fn replace(path: PathBuf, bytes: &[u8]) {
        fs::remove_file(&path).unwrap();
        fs::write(path, bytes).unwrap();
    }

    fn since(store: &CheckpointStore, boot: Option<&str>) -> i64 {
        store.load(boot).unwrap().unwrap().containers["abc"].resume.start_since
    }

    #[test]
    fn save_load_round_trip_and_lock() {
        let dir = tmpdir("rt");
        let store = CheckpointStore::open(&dir).unwrap();
        assert!(store.load(Some("b1")).unwrap().is_none());
        save(&store, Some("b1"), 1, 7, true);
        let back = store.load(Some("b1")).unwrap().unwrap();
        assert_eq!((back.first_run_at, back.seq, back.boot_id.as_deref()), (42, 1, Some("b1")));
        assert_eq!(back.containers["abc"].name, "web");
        assert_eq!(since(&store, Some("b1")), 7);
        assert!(!dir.join(".checkpoints.fresh.json.tmp").exists());
        assert!(!dir.join(".checkpoints.json.tmp").exists());

        let err = CheckpointStore::open(&dir).err().expect("second agent must be refused");
        assert!(err.to_string().contains("in use by another log-capturer"), "{err}");
        drop(store);
        CheckpointStore::open(&dir).expect("lock released on drop");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_fresh_copy_is_trusted_in_its_own_boot_only() {
        let dir = tmpdir("boot");
        let store = CheckpointStore::open(&dir).unwrap();
        save(&store, Some("b1"), 1, 7, true);
        save(&store, Some("b1"), 2, 8, false);
        // A process crash: the page cache holds the fresh copy.
        assert_eq!(since(&store, Some("b1")), 8);
        // A new boot: the fresh copy may be ahead of what reached the disk.
        assert_eq!(since(&store, Some("b2")), 7);
        // No boot id known: only the durable copy.
        assert_eq!(since(&store, None), 7);
        // A durable copy newer than the fresh one (a fresh write failed).
        save(&store, Some("b1"), 3, 10, true);
        replace(
            dir.join(FRESH_NAME),
            br#"{"version":1,"first_run_at":42,"boot_id":"b1","seq":2,"containers":{}}"#,
        );
        assert_eq!(since(&store, Some("b1")), 10);
        // A fresh copy torn by a power cut: the durable copy, said so.
        replace(dir.join(FRESH_NAME), b"");
        assert_eq!(since(&store, Some("b2")), 10);
        // A file of an earlier version: durable, no boot id, no seq.
        fs::remove_file(dir.join(FRESH_NAME)).unwrap();
        replace(dir.join(FILE_NAME), br#"{"version":1,"first_run_at":5,"containers":{}}"#);
        let old = store.load(Some("b1")).unwrap().unwrap();
        assert_eq!((old.first_run_at, old.seq, old.boot_id), (5, 0, None));
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprints_of_files_before_fingerprint_hash_hold_fnv1a() {
        use crate::agent::resume::HashFn;
        let dir = tmpdir("hashfn");
        let store = CheckpointStore::open(&dir).unwrap();
        let resume = r#"{"start_since":0,"last_ts":9,"newest":[null,[9,1,0,5],{"ts":8,"stream":2,"occ":0,"hash":6,"fn":"fnv1a"}]}"#;
        let hash_fns = |file: &str| {
            fs::write(dir.join(FILE_NAME), file.replace("RESUME", resume)).unwrap();
            let state = store.load(None).unwrap().unwrap();
            let r = &state.containers["abc"].resume;
            (r.newest.map(|f| f.map(|f| f.hash_fn)), r.fnv1a)
        };
        let fnv1a = Some(HashFn::Fnv1a);
        let before = r#"{"version":1,"first_run_at":5,"containers":{"abc":{"name":"web","resume":RESUME}}}"#;
        assert_eq!(hash_fns(before), ([None, fnv1a, fnv1a], true));
        let now = r#"{"version":1,"fingerprint_hash":2,"first_run_at":5,"containers":{"abc":{"name":"web","resume":RESUME}}}"#;
        assert_eq!(hash_fns(now), ([None, Some(HashFn::Words), fnv1a], true));
        // What this agent writes says so.
        save(&store, Some("b1"), 1, 7, true);
        let written = fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        assert!(
            written.starts_with(&format!(r#"{{"version":1,"fingerprint_hash":{FINGERPRINT_HASH},"#)),
            "{written}"
        );
        assert_eq!(store.load(None).unwrap().unwrap().fingerprint_hash, FINGERPRINT_HASH);
        drop(store);
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
        let err = format!("{:#}", store.load(Some("b1")).unwrap_err());
        assert!(err.contains("not a valid checkpoint file") && err.contains("move it away"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
