//! File descriptors: the open-files limit, the stream budget derived from
//! it, and recognising fd exhaustion.
//!
//! Every followed container costs at most one fd at any moment (its inspect
//! call or its log stream, never both), so the number of followed
//! containers, not the number of connections, is what the budget caps. The
//! rest of the agent's fds are few and bounded; they are the reserve.

use std::collections::BTreeSet;
use std::io;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::agent::container::Follow;
use crate::agent::event_loop::Agent;
use crate::agent::follow::short;
use crate::message;

/// Fds the loop may need beyond what is open at start and beyond one per
/// followed container: the events stream, a ping, a list (3); metrics
/// clients (`metrics_http::MAX_CLIENTS`, 16) plus one accepted and turned
/// away; a checkpoint write (temp file, directory: 2); reopening the
/// output on SIGHUP (1); reading `/proc/self` for the process metrics (2);
/// the sink: its connection and a hedged push's, a DNS lookup's UDP socket
/// and TCP exchanges (2 + 1 + 4), and reading resolv.conf and hosts (1);
/// and slack for a library or the kernel surprising us (8).
pub const RESERVE: u64 = 3 + 16 + 1 + 2 + 1 + 2 + 8 + 8;

/// The open-files limit before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit: an agent following
/// hundreds of containers needs more than the usual 1024, and the hard
/// limit is what the operator allowed. Failing to raise it is not fatal;
/// the budget is then derived from the soft limit.
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let (soft_64, hard_64) = (widen(soft), widen(hard));
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return Ok(NofileLimit { soft_before: soft_64, soft: hard_64, hard: hard_64 }),
            Err(e) => message!("cannot raise the open-files limit from {soft} to {hard}: {e}"),
        }
    }
    Ok(NofileLimit { soft_before: soft_64, soft: soft_64, hard: hard_64 })
}

/// rlim_t is 32 bits on armv7 (the cast is a no-op on 64-bit targets).
#[allow(clippy::unnecessary_cast)]
fn widen(v: nix::libc::rlim_t) -> u64 {
    v as u64
}

/// How many containers the agent may follow at once, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamBudget {
    pub streams: usize,
    /// `--max-streams` set it (lower than the fds allow).
    pub by_flag: bool,
    /// What the fds alone would allow.
    pub fd_room: u64,
}

/// The budget for `limit` open files with `in_use` open now, capped by
/// `max_streams`. `None` when the limit leaves no room for a single stream.
pub fn stream_budget(limit: u64, in_use: u64, max_streams: Option<usize>) -> Option<StreamBudget> {
    let fd_room = limit.saturating_sub(in_use).saturating_sub(RESERVE);
    if fd_room == 0 {
        return None;
    }
    let room = usize::try_from(fd_room).unwrap_or(usize::MAX);
    Some(match max_streams {
        Some(m) if m < room => StreamBudget { streams: m, by_flag: true, fd_room },
        _ => StreamBudget { streams: room, by_flag: false, fd_room },
    })
}

/// Fds open in this process now (`/proc/self/fd`, not counting the one
/// used to read it).
pub fn open_fds() -> io::Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count().saturating_sub(1) as u64)
}

/// EMFILE (this process) or ENFILE (the whole system): out of fds. Such a
/// failure says nothing about Docker; it is retried with backoff.
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == nix::libc::EMFILE || c == nix::libc::ENFILE)
}

/// The budget's slots and the containers waiting for one. Which containers
/// get them: the oldest-created first (ties by id), so the choice does not
/// depend on the order events arrive in. A followed container keeps its
/// slot until it is drained, fails for good or is removed; none is dropped
/// to make room for another.
#[derive(Debug)]
pub(crate) struct Slots {
    pub budget: StreamBudget,
    used: usize,
    /// (created ns, id), oldest first.
    waiting: BTreeSet<(i64, String)>,
    /// The operator was told the budget is used up.
    warned: bool,
}

/// What [`Slots::take`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    Granted,
    /// Queued; `first_time`: the first container ever left waiting (say so).
    Queued {
        first_time: bool,
    },
}

impl Slots {
    pub(crate) fn new(budget: StreamBudget) -> Self {
        Slots { budget, used: 0, waiting: BTreeSet::new(), warned: false }
    }

    /// A slot for the container created at `created_ns`, or a place in the
    /// queue.
    pub(crate) fn take(&mut self, created_ns: i64, id: &str) -> Take {
        let key = (created_ns, id.to_owned());
        if self.used < self.budget.streams {
            self.used += 1;
            self.waiting.remove(&key);
            return Take::Granted;
        }
        self.waiting.insert(key);
        Take::Queued { first_time: !std::mem::replace(&mut self.warned, true) }
    }

    /// A slot is free again.
    pub(crate) fn give_back(&mut self) {
        self.used -= 1;
    }

    /// The container no longer waits (removed).
    pub(crate) fn unqueue(&mut self, created_ns: i64, id: String) {
        self.waiting.remove(&(created_ns, id));
    }

    /// The oldest waiting container, taken out of the queue, if a slot is
    /// free for it (it still has to [`Slots::take`] it).
    pub(crate) fn next_waiting(&mut self) -> Option<String> {
        if self.used >= self.budget.streams {
            return None;
        }
        self.waiting.pop_first().map(|(_, id)| id)
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

impl Agent {
    /// Take a slot for `id`, or queue it; true if it has one.
    pub(crate) fn take_slot(&mut self, id: &str) -> bool {
        let Some(c) = self.containers.get_mut(id) else {
            return false;
        };
        if c.slot {
            return true;
        }
        match self.slots.take(c.created_ns, &c.id) {
            Take::Granted => c.slot = true,
            Take::Queued { first_time } => {
                c.follow = Follow::Waiting;
                if first_time {
                    let budget = self.slots.budget;
                    let cap = if budget.by_flag {
                        "raise --max-streams".to_owned()
                    } else {
                        format!(
                            "the open-files limit allows no more; raise it (ulimit -n, LimitNOFILE=) or \
                             lower what else runs, {RESERVE} fds are held in reserve"
                        )
                    };
                    let who = if c.name.is_empty() { short(&c.id).to_owned() } else { c.name.clone() };
                    message!(
                        "more containers than the stream budget of {}: not following {who} \
                         and any others beyond it until a slot frees, oldest first \
                         (log_capturer_containers_unfollowed counts them); {cap}",
                        budget.streams,
                    );
                }
            }
        }
        self.metrics.containers_unfollowed.set(self.slots.waiting() as i64);
        c.slot
    }

    /// `id` no longer needs its slot (drained, failed for good); the oldest
    /// waiting container gets it.
    pub(crate) fn release_slot(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        if std::mem::take(&mut c.slot) {
            self.slot_freed();
        }
    }

    /// A slot came free: give it to the oldest waiting container.
    pub(crate) fn slot_freed(&mut self) {
        self.slots.give_back();
        while let Some(id) = self.slots.next_waiting() {
            let start = match self.containers.get_mut(&id) {
                Some(c) if c.follow == Follow::Waiting => {
                    c.follow = Follow::Idle;
                    c.start
                }
                _ => continue,
            };
            self.follow_container(&id, start, false, 0);
        }
        self.metrics.containers_unfollowed.set(self.slots.waiting() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_the_reserve() {
        let b = stream_budget(1024, 10, None).unwrap();
        assert_eq!(b.streams as u64, 1024 - 10 - RESERVE);
        assert!(!b.by_flag);
        assert_eq!(b.fd_room, b.streams as u64);
    }

    #[test]
    fn max_streams_caps_only_downwards() {
        let b = stream_budget(1024, 10, Some(100)).unwrap();
        assert_eq!((b.streams, b.by_flag), (100, true));
        let b = stream_budget(1024, 10, Some(100_000)).unwrap();
        assert_eq!(b.streams as u64, 1024 - 10 - RESERVE);
        assert!(!b.by_flag);
    }

    #[test]
    fn no_room_is_none() {
        assert_eq!(stream_budget(RESERVE + 10, 10, None), None);
        assert_eq!(stream_budget(5, 10, None), None);
        assert_eq!(stream_budget(RESERVE + 11, 10, None).map(|b| b.streams), Some(1));
    }

    #[test]
    fn exhaustion_is_emfile_or_enfile_only() {
        assert!(is_fd_exhaustion(&io::Error::from_raw_os_error(nix::libc::EMFILE)));
        assert!(is_fd_exhaustion(&io::Error::from_raw_os_error(nix::libc::ENFILE)));
        assert!(!is_fd_exhaustion(&io::Error::from_raw_os_error(nix::libc::ECONNREFUSED)));
        assert!(!is_fd_exhaustion(&io::Error::other("x")));
    }

    #[test]
    fn raising_keeps_soft_at_most_hard() {
        let l = raise_nofile_limit().unwrap();
        assert!(l.soft <= l.hard);
        assert!(l.soft >= l.soft_before);
        assert!(open_fds().unwrap() >= 3);
    }
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    fn slots(n: usize) -> Slots {
        Slots::new(StreamBudget { streams: n, by_flag: true, fd_room: 100 })
    }

    #[test]
    fn the_oldest_waiting_gets_a_freed_slot() {
        let mut s = slots(1);
        assert_eq!(s.take(5, "a"), Take::Granted);
        assert_eq!(s.take(9, "young"), Take::Queued { first_time: true });
        assert_eq!(s.take(1, "old"), Take::Queued { first_time: false });
        assert_eq!(s.next_waiting(), None, "no slot is free");
        s.give_back();
        assert_eq!(s.next_waiting().as_deref(), Some("old"));
        assert_eq!(s.take(1, "old"), Take::Granted);
        assert_eq!(s.waiting(), 1);
        // A removed container leaves the queue.
        s.unqueue(9, "young".into());
        s.give_back();
        assert_eq!(s.next_waiting(), None);
    }
}
