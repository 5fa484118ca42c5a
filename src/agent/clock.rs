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

/// The latest `Date` and when it arrived.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DockerClock {
    seen: Option<(i64, Instant)>,
}

impl DockerClock {
    /// An answer arrived with this `Date`. The newest answer wins, even if
    /// it is earlier than the one before: that is how a step back shows.
    pub fn observe(&mut self, date: Option<i64>) {
        if let Some(d) = date {
            self.seen = Some((d, Instant::now()));
        }
    }

    /// The earliest and the latest Docker's clock can read now, unless no
    /// answer carried a `Date` yet.
    pub fn now(&self) -> Option<(i64, i64)> {
        let (date, at) = self.seen?;
        let since = at.elapsed().as_nanos().min(i64::MAX as u128) as i64;
        let earliest = date.saturating_add(since);
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
