//! The little OS glue the double needs beyond std, declared by hand against
//! the C library std already links (the crate may use only std, mio,
//! httparse and serde_json). Linux only, like the agent.

use std::io;
use std::time::Duration;

#[repr(C)]
struct Rlimit {
    cur: u64,
    max: u64,
}

extern "C" {
    fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
    fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
}

const RLIMIT_NOFILE: i32 = 7;

/// Raise the soft open-files limit towards `want` (never above the hard
/// limit, never lowering it). Returns the soft limit now in force. Ten
/// thousand streams need ten thousand descriptors on each side.
pub fn raise_fd_limit(want: u64) -> io::Result<u64> {
    let mut lim = Rlimit { cur: 0, max: 0 };
    // SAFETY: `lim` is a valid, writable `struct rlimit` (two u64 on Linux).
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.cur >= want {
        return Ok(lim.cur);
    }
    let new = Rlimit { cur: want.min(lim.max), max: lim.max };
    // SAFETY: `new` is a valid `struct rlimit`.
    if unsafe { setrlimit(RLIMIT_NOFILE, &new) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(new.cur)
}

/// The calling thread's kernel thread id, from `/proc/thread-self`
/// (`<pid>/task/<tid>`); -1 if /proc is not mounted.
pub fn current_tid() -> i32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(-1)
}

/// CPU time (user + system) a thread of this process has used so far.
/// Prefers `schedstat` (nanoseconds) and falls back to `stat` (clock ticks,
/// assumed 100 Hz, the value on every Linux architecture we run on).
pub fn thread_cpu_time(tid: i32) -> Option<Duration> {
    if tid < 0 {
        return None;
    }
    let base = format!("/proc/self/task/{tid}");
    if let Ok(s) = std::fs::read_to_string(format!("{base}/schedstat")) {
        if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok()) {
            return Some(Duration::from_nanos(ns));
        }
    }
    let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: count
    // fields after the last ')'. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}
