//! What the kernel says about a process and about socket memory: RSS, fds,
//! threads and CPU from `/proc/<pid>`, queued socket memory from `ss`, slab
//! totals from `/proc/meminfo` and `/proc/slabinfo`.

use std::process::Command;
use std::time::Duration;

/// RSS figures of `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub anon_kib: u64,
    /// Peak RSS over the process's life (VmHWM).
    pub hwm_kib: u64,
    pub threads: u64,
}

pub fn mem(pid: u32) -> Mem {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
    }
}

pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// CPU time of every thread of `pid`, from `schedstat` (nanoseconds: the
/// idle figure needs better than the 10 ms of clock ticks).
pub fn cpu(pid: u32) -> Duration {
    sched(pid).0
}

/// (CPU time, time spent runnable but waiting for a CPU) of every thread
/// of `pid`: the second tells a slow agent from a machine too busy to run
/// it (other people's builds share these two cores).
pub fn sched(pid: u32) -> (Duration, Duration) {
    let (mut run, mut wait) = (0u64, 0u64);
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            let mut f = s.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
            run += f.next().unwrap_or(0);
            wait += f.next().unwrap_or(0);
        }
    }
    (Duration::from_nanos(run), Duration::from_nanos(wait))
}

/// Unix socket memory of one process, from `ss -x -m -p`.
///
/// For AF_UNIX stream sockets the kernel charges a queued skb to the
/// *sender's* socket (`skmem` `t`, wmem_alloc) while it waits in the
/// receiver's queue; the receiver's `r` (rmem_alloc) stays 0. So the
/// memory held for data the agent has not read yet is the `t` of the
/// double's sockets, and the bytes of it are the agent sockets' Recv-Q.
#[derive(Clone, Copy, Debug, Default)]
pub struct SockMem {
    pub sockets: u64,
    /// Sum of Recv-Q: payload bytes waiting to be read.
    pub recv_q: u64,
    /// Sum of skmem `r`: skb truesize charged as receive memory.
    pub rmem: u64,
    /// Sum of skmem `t`: skb truesize charged to these sockets as senders.
    pub wmem: u64,
    /// Sum of skmem `rb`: receive buffer limits.
    pub rcvbuf: u64,
}

pub fn sock_mem(pid: u32) -> Option<SockMem> {
    let out = Command::new("ss").args(["-x", "-m", "-p", "-H", "-O"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let tag = format!("pid={pid},");
    let mut m = SockMem::default();
    for line in text.lines().filter(|l| l.contains(&tag)) {
        let Some(sk) = line.split("skmem:(").nth(1).and_then(|r| r.split(')').next()) else {
            continue;
        };
        m.sockets += 1;
        // Netid State Recv-Q Send-Q ...
        m.recv_q += line.split_whitespace().nth(2).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        for f in sk.split(',') {
            let num = |p: &str| f.strip_prefix(p).and_then(|v| v.parse::<u64>().ok());
            // "tb…" and "rb…" do not parse after "t" / "r": no confusion.
            if let Some(v) = num("rb") {
                m.rcvbuf += v;
            } else if let Some(v) = num("r") {
                m.rmem += v;
            } else if let Some(v) = num("t") {
                m.wmem += v;
            }
        }
    }
    Some(m)
}

/// `Slab:` of `/proc/meminfo` in KiB: kernel objects of every process on
/// the machine, so a delta is only as clean as the machine is quiet.
pub fn slab_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("Slab:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Object size of a slab cache (`sock_inode_cache`: the socket inode every
/// socket has), if `/proc/slabinfo` is readable.
pub fn slab_object_size(cache: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let line = s.lines().find(|l| l.split_whitespace().next() == Some(cache))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
