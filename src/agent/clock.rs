//! Docker's clock, as the `Date` header of its answers tells it, and the
//! check of each container's resume point against it before a stream
//! opens (issue: a checkpoint ahead of the clock silently dropped every
//! line of its container).
//!
//! Log timestamps come from the clock of the host dockerd runs on, so that
//! clock, not the agent's, says whether a resume point is possible. The
//! `Date` of every answer (ping, inspect, each log stream's head) is that
//! clock to the second; between answers it is extrapolated on the agent's
//! monotonic clock, which a step of the wall clock does not move.

use std::time::{Duration, Instant};

use crate::agent::event_loop::Agent;
use crate::agent::follow::short;
use crate::agent::resume::{Resume, Untrusted};
use crate::docker::timestamp;
use crate::message;
use crate::metrics::CheckpointRejection;

/// How far Docker's clock may be past the last `Date` plus the time since
/// it arrived: `Date` is cut to the second, and the answer may have waited
/// in the socket while the loop was busy. A resume point later than that
/// is impossible; a step back smaller than this goes unnoticed (at most
/// this long of lines dropped as replays).
const DATE_SLACK: Duration = Duration::from_secs(3);

/// The evidence of Docker's clock: the latest `Date` and when it arrived,
/// and the log line read since then that puts the clock latest, with
/// when it was read.
///
/// A line dockerd stamped shows its clock read at least that much when
/// the line was read. Without it, a `Date` from before a forward step of
/// the clock, extrapolated, makes the resume point of lines stamped after
/// the step look like the future (and the whole log is read again).
///
/// Which evidence is newer is decided by when the request was sent, not
/// when its answer arrived: a `Date` answering a request sent after the
/// lines were read was written by dockerd after it stamped them, so it
/// replaces them (that is how a step back shows). A `Date` answering a
/// request sent before (a stream's head, an inspect that waited in its
/// socket) may have been written before the step the lines show: both are
/// kept and the clock is the later of the two. A step back hidden that way
/// shows in the next answer, and each stream's own lines show it too
/// (`resume.rs`, a line below its stream's since).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DockerClock {
    seen: Option<(i64, Instant)>,
    line: Option<LineEvidence>,
}

#[derive(Debug, Clone, Copy)]
struct LineEvidence {
    ts: i64,
    at: Instant,
    /// The generation the next connection gets ([`crate::agent::conn::Conn::gen`]):
    /// a connection of this generation or later sent its request after
    /// the line was read.
    next_gen: u64,
}

/// What a clock reading taken `at` is extrapolated to `now`.
fn extrapolate((t, at): (i64, Instant), now: Instant) -> i64 {
    let since = now.saturating_duration_since(at).as_nanos().min(i64::MAX as u128) as i64;
    t.saturating_add(since)
}

impl DockerClock {
    /// An answer on a connection of generation `gen` arrived with this
    /// `Date`.
    pub fn observe(&mut self, date: Option<i64>, gen: u64) {
        let Some(d) = date else { return };
        self.seen = Some((d, Instant::now()));
        if self.line.is_some_and(|l| gen >= l.next_gen) {
            self.line = None;
        }
    }

    /// Lines were read at `at`, the latest stamped `ts`, while the next
    /// connection would get generation `next_gen`.
    pub fn observe_line(&mut self, ts: i64, at: Instant, next_gen: u64) {
        let later = self.line.map_or(true, |l| ts > extrapolate((l.ts, l.at), at));
        if later {
            self.line = Some(LineEvidence { ts, at, next_gen });
        }
    }

    /// The earliest and the latest Docker's clock can read now, unless no
    /// answer carried a `Date` yet.
    pub fn now(&self) -> Option<(i64, i64)> {
        let now = Instant::now();
        let date = extrapolate(self.seen?, now);
        let earliest = self.line.map_or(date, |l| date.max(extrapolate((l.ts, l.at), now)));
        Some((earliest, earliest.saturating_add(DATE_SLACK.as_nanos() as i64)))
    }
}

fn show(ns: i64) -> String {
    String::from_utf8_lossy(&timestamp::format(ns)).into_owned()
}

impl Agent {
    /// Before a stream opens: if the container's resume point cannot be
    /// trusted, say so once, count it, and read its whole retained log
    /// again (lines repeat; none is lost).
    pub(crate) fn vet_resume(&mut self, id: &str) {
        let clock = self.docker_clock.now();
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        let Some(resume) = c.resume.as_mut() else {
            return;
        };
        let Err(why) = resume.vet(clock) else {
            return;
        };
        let (reason, what) = match why {
            Untrusted::Invalid(w) => {
                (CheckpointRejection::Invalid, format!("its checkpoint is invalid: {w}"))
            }
            Untrusted::Future { latest } => (
                CheckpointRejection::Future,
                format!(
                    "its resume point {} is later than Docker's clock ({}): the clock stepped back \
                     since, or the checkpoint was edited",
                    show(latest),
                    clock.map_or_else(|| "unknown".to_owned(), |(earliest, _)| show(earliest)),
                ),
            ),
        };
        self.metrics.checkpoint_rejected(reason);
        message!(
            "container {} ({}): {what}; reading its whole retained log again, so lines already \
             shipped will be repeated",
            c.name,
            short(id)
        );
        *resume = Resume::after_clock_step(clock.map(|(earliest, _)| earliest));
        self.checkpoints.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn the_newest_evidence_of_dockers_clock_wins() {
        let mut clock = DockerClock::default();
        assert_eq!(clock.now(), None, "no `Date` yet");
        clock.observe(Some(100 * S), 1);
        let (earliest, latest) = clock.now().unwrap();
        assert!((100 * S..101 * S).contains(&earliest) && latest == earliest + DATE_SLACK.as_nanos() as i64);
        // The clock stepped forward 17 s after that `Date`: a line stamped
        // after the step shows it (chaos seed 4). Connections 1 and 2
        // exist; the next is 3.
        clock.observe_line(117 * S, Instant::now(), 3);
        assert!(clock.now().unwrap().0 >= 117 * S);
        // A backlog line read later, stamped long before: no evidence
        // against the newer one.
        clock.observe_line(50 * S, Instant::now(), 3);
        assert!(clock.now().unwrap().0 >= 117 * S);
        // A `Date` from before the step, answering a request sent before
        // the line was read (connection 2), arrives late: the line stands.
        clock.observe(Some(101 * S), 2);
        assert!(clock.now().unwrap().0 >= 117 * S, "an older request's Date hid a forward step");
        // A `Date` after a step back, answering a request sent after the
        // lines were read, shows the step whatever they said.
        clock.observe(Some(80 * S), 3);
        assert!((80 * S..81 * S).contains(&clock.now().unwrap().0));
        clock.observe_line(79 * S, Instant::now(), 4);
        assert!((80 * S..81 * S).contains(&clock.now().unwrap().0));
    }
}
