//! Records the commit the binary is built from, for `--version`, as
//! `LOG_CAPTURER_COMMIT`: the first 12 hex digits of HEAD, with `-dirty`
//! when tracked files differ from it, or `unknown` outside a git checkout
//! (a source tarball, a Docker build context without `.git`, no `git`).
//! A build that knows better (an image built from a tarball) sets
//! `LOG_CAPTURER_COMMIT` in the environment, and that wins.

use std::path::{Path, PathBuf};
use std::process::Command;

const VAR: &str = "LOG_CAPTURER_COMMIT";

fn main() {
    println!("cargo:rerun-if-env-changed={VAR}");
    let commit = match std::env::var(VAR) {
        Ok(given) if !given.trim().is_empty() => given.trim().to_owned(),
        _ => from_git().unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo:rustc-env={VAR}={commit}");
}

/// `git` run in the package's directory; its stdout, trimmed, if it succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    // No optional locks: `git status` must not rewrite the index under a
    // git command the developer is running.
    let out =
        Command::new("git").env("GIT_OPTIONAL_LOCKS", "0").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn from_git() -> Option<String> {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    // Only a checkout of this package: a tarball unpacked inside some other
    // repository must not take that repository's commit.
    let top = git(&dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    // Rerun when HEAD moves: HEAD itself (a checkout), the branch it points
    // to (a commit; loose or packed), and the sources (a change makes the
    // tree dirty, and undoing it clean again). In a worktree HEAD is in
    // its own git dir and the branches in the common one.
    let git_dir = dir.join(git(&dir, &["rev-parse", "--git-dir"])?);
    let common_dir = dir.join(git(&dir, &["rev-parse", "--git-common-dir"])?);
    // A path that does not exist would rerun this on every build.
    let watch = |p: PathBuf| {
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    };
    watch(git_dir.join("HEAD"));
    watch(common_dir.join("packed-refs"));
    if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch(common_dir.join(branch));
    }
    for source in ["src", "build.rs", "Cargo.toml", "Cargo.lock"] {
        watch(dir.join(source));
    }
    let hash = git(&dir, &["rev-parse", "--short=12", "HEAD"])?;
    // Tracked files only: a stray untracked file is not a different build.
    let dirty = git(&dir, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}
