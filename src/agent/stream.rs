//! The rules of one container's log stream, without I/O: how the next
//! stream is opened ([`OpenPlan`]: `since`, `tail`, what to check), what
//! each line it sends is ([`StreamRules::on_record`]: deliver, a replay to
//! drop, or proof that the `tail` window fell short), what a closed stream
//! leaves for the next one ([`StreamRules::on_close`]: rotation resumes
//! there), and what follows a stream's end ([`after_end`]).
//!
//! The loop (`follow.rs`) owns the sockets and calls these; the tests below
//! drive them with records alone. Where a stream resumes and how a replay
//! is recognised is [`crate::agent::resume`].

use crate::agent::resume::{tail_for, Fingerprint, Replay, Resume, TailCheck, DEFAULT_MARGIN_NS as MARGIN};
use crate::docker::logstream::DOCKERD_PARTIAL_LEN;
use crate::record::Record;

/// `tail` of a stream opened before any line was delivered, when its
/// `since` is recent. With no delivered line to check the window against,
/// the check is a count: if this many history lines arrive, lines before
/// the window may be missing, and the stream is read again from `since`
/// without `tail`: those lines come after the window's, each once (see
/// [`crate::agent::resume::Gap`]). A full `since`-only read makes dockerd
/// decode the whole log file (1.2 s of its CPU for a 48 MiB log,
/// measured), on every first open and every reopen of a quiet container:
/// worth it only for lines older than `since`, so not for a log that has
/// none ([`OpenPlan::whole_log`]).
pub(crate) const FIRST_TAIL: u64 = 2_000;
/// How recent `since` must be for a first open to use [`FIRST_TAIL`]
/// (older: a backlog the operator asked for, read whole).
pub(crate) const FIRST_TAIL_RECENT_NS: i64 = 15 * 60 * 1_000_000_000;
/// Lines stamped up to this long after the request count as history:
/// dockerd may read the file a little after we asked (for a first open's
/// count, and for whether a reopen's window starts after its request).
const HISTORY_SLACK_NS: i64 = 1_000_000_000;

/// What the container's state says about its next stream.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Opening {
    /// The last `tail` window fell short: read since-only.
    pub catchup_next: bool,
    /// Messages per second of its last stream, for sizing `tail`.
    pub rate: f64,
    /// The one read after a stopped container's `die`: no `follow`.
    pub final_read: bool,
    pub running: bool,
    /// When its log begins (its creation), if known.
    pub log_start: Option<i64>,
}

/// How to open a stream, and how to check what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenPlan {
    pub since: i64,
    /// `tail` makes the open cheap for dockerd (it reads backwards from the
    /// end of the file and stops).
    pub tail: Option<u64>,
    pub follow: bool,
    /// `follow` on a running container (not a drain, nor the final read).
    pub live: bool,
    /// Lines were delivered before: the window's first line must prove it
    /// reaches back far enough ([`Resume::check_first_line`]).
    pub check_window: bool,
    /// A first open with `tail`: history lines it may see before its window
    /// could have been too short ([`FIRST_TAIL`]).
    pub history_left: Option<u64>,
    /// Nothing delivered yet, and no line of the log is older than `since`
    /// (it is at or before the container's creation): the whole log is
    /// wanted.
    pub whole_log: bool,
}

impl OpenPlan {
    pub(crate) fn new(resume: &Resume, c: Opening, now_ns: i64) -> Self {
        let since = resume.since();
        // Once something was delivered, the window's first line is checked
        // against the resume point; before, a recent `since` is checked by
        // counting. After a short window, or with a gap to fill:
        // since-only until caught up.
        //
        // A first open of a whole log goes without `tail`: dockerd then
        // decodes only lines we want, so `tail` saves it nothing, and a
        // window that comes full (more than FIRST_TAIL lines stored before
        // the request is served: a late open on a loaded machine, a
        // container that writes fast from its start) is delivered before
        // the lines that precede it, out of order.
        let first = resume.last_ts.is_none();
        let whole_log = first && c.log_start.is_some_and(|start| since <= start);
        let tail = if c.catchup_next || resume.gap.is_some() || resume.refill {
            None
        } else if !first {
            Some(tail_for(c.rate, since, now_ns))
        } else if !whole_log && now_ns - since <= FIRST_TAIL_RECENT_NS {
            Some(FIRST_TAIL)
        } else {
            None
        };
        let follow = !c.final_read;
        OpenPlan {
            since,
            tail,
            follow,
            live: follow && c.running,
            check_window: !first && tail.is_some(),
            history_left: (first && tail.is_some()).then_some(FIRST_TAIL),
            whole_log,
        }
    }
}

/// What a line of the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// New: write it. The resume point already counts it delivered.
    Deliver,
    /// Already delivered by an earlier stream: drop it.
    Replay,
    /// The `tail` window fell short (or may have): deliver nothing more
    /// from this stream and reopen it since-only.
    CatchUp,
}

/// One open stream's state for judging its lines.
#[derive(Debug, Clone)]
pub(crate) struct StreamRules {
    pub replay: Replay,
    check_window: bool,
    /// Set once the window fell short; everything after is ignored.
    pub catchup: bool,
    pub history_left: Option<u64>,
    /// Wall clock when the request went out: lines stamped earlier are
    /// history, later ones are new.
    pub requested_at_ns: i64,
    /// Messages received (dockerd partials estimated from bytes), for the
    /// rate that sizes the next `tail`.
    pub messages: u64,
    /// The `since` it was opened with.
    pub since: i64,
    whole_log: bool,
}

impl StreamRules {
    pub(crate) fn new(plan: &OpenPlan, requested_at_ns: i64) -> Self {
        StreamRules {
            replay: Replay::default(),
            check_window: plan.check_window,
            catchup: false,
            history_left: plan.history_left,
            requested_at_ns,
            messages: 0,
            since: plan.since,
            whole_log: plan.whole_log,
        }
    }

    /// Judge one record. `Deliver` has already moved `resume` past it.
    pub(crate) fn on_record(&mut self, resume: &mut Resume, rec: &Record<'_>) -> Verdict {
        let entries = 1 + (rec.message.len() / DOCKERD_PARTIAL_LEN) as u64;
        self.messages += entries;
        if self.catchup {
            return Verdict::CatchUp;
        }
        if let Some(left) = self.history_left.as_mut() {
            if rec.timestamp.is_some_and(|ts| ts < self.requested_at_ns + HISTORY_SLACK_NS) {
                // `tail` counts stored entries: each 16 KiB piece of a long
                // line is one (over-counting is safe: an early catch-up).
                *left = left.saturating_sub(entries);
                if *left == 0 {
                    self.catchup = true;
                    return Verdict::CatchUp;
                }
            }
        }
        let first_line = !self.replay.seen_any();
        let fp = self.replay.fingerprint(rec);
        resume.convert_fnv1a(&fp, rec);
        let opens = self.replay.opens_stream(&fp);
        let check = if !self.check_window {
            TailCheck::Complete
        } else if first_line {
            resume.check_first_line(&fp, self.requested_at_ns + HISTORY_SLACK_NS)
        } else if opens {
            resume.check_stream_start(&fp)
        } else {
            TailCheck::Complete
        };
        if check == TailCheck::CatchUp {
            self.catchup = true;
            return Verdict::CatchUp;
        }
        self.admit(resume, fp)
    }

    fn admit(&mut self, resume: &mut Resume, fp: Fingerprint) -> Verdict {
        if !resume.admit(&fp, &mut self.replay) {
            return Verdict::Replay;
        }
        if self.since > 0 && resume.steps_back(&fp) {
            // Docker's clock stepped back while this stream was open (or
            // before it opened): lines stamped between the step and our
            // `since` were filtered out by dockerd. Deliver nothing more
            // from here, so that the resume point stays before this line,
            // and read the whole log again: its lines up to the newest
            // delivered one are replays, every one after it is new. A
            // stream from 0 filters nothing and delivers on.
            resume.refill = true;
            self.catchup = true;
            return Verdict::CatchUp;
        }
        resume.delivered(fp, &mut self.replay);
        Verdict::Deliver
    }

    /// The stream is closed (rotated, failed or ended): what it leaves for
    /// the next one.
    /// - `open_lines`: per output stream, the timestamp of a line it had
    ///   begun and not finished: the next stream resumes before it.
    /// - A first stream whose `tail` window filled up: what came before
    ///   the window is read again from its `since` (a gap).
    /// - A stream that stayed open `open_for_ns` with a successful head and
    ///   sent nothing proves the log had no line from `since` until shortly
    ///   before it was asked (`asked_ns`, on Docker's clock where known):
    ///   the next one need not ask for that span again, and its `since`
    ///   stays recent, so it can use `tail`. Only if it was read to the end
    ///   (`read_all`): one whose reads were paused for a full output looks
    ///   silent with its lines unread in its socket. Not for a whole log:
    ///   a `since` moved past the container's creation would make the next
    ///   first open use `tail`, which there only risks an out-of-order
    ///   window.
    pub(crate) fn on_close(
        &self,
        resume: &mut Resume,
        open_lines: Option<[Option<i64>; 3]>,
        head_ok: bool,
        read_all: bool,
        open_for_ns: i64,
        asked_ns: i64,
    ) {
        if let Some(open) = open_lines {
            resume.cut(open);
        }
        if self.history_left == Some(0) {
            resume.open_gap(self.since, &self.replay);
        }
        if resume.last_ts.is_none()
            && !self.whole_log
            && head_ok
            && read_all
            && self.messages == 0
            && open_for_ns >= 2 * MARGIN
        {
            resume.start_since = resume.start_since.max(asked_ns - MARGIN);
        }
    }
}

/// What a container's stream that ended cleanly leads to, once an inspect
/// says whether the container runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterEnd {
    /// Running (again, after a restart; or dockerd ended the stream): follow.
    Follow,
    /// Stopped while followed: dockerd can end a follow stream before it
    /// stores a final line without a newline, so read once more after the
    /// `die` event, which comes once logging is closed...
    AwaitDie,
    /// ...or now, the `die` event has come.
    FinalRead,
    /// Stopped, and its stream ran to the end: everything is shipped.
    Drained,
    /// Stopped with lines not shipped yet: read them (the stream ends by
    /// itself after the stored lines).
    Drain,
}

/// The container's facts after its inspect. `ended`: its stream just ended
/// cleanly; `ended_live`: that stream was a live follow; `died`: its `die`
/// event has come; `drained`: its log was shipped to the end before.
pub(crate) fn after_end(running: bool, ended: bool, ended_live: bool, died: bool, drained: bool) -> AfterEnd {
    if running {
        AfterEnd::Follow
    } else if ended && ended_live {
        if died {
            AfterEnd::FinalRead
        } else {
            AfterEnd::AwaitDie
        }
    } else if ended || drained {
        AfterEnd::Drained
    } else {
        AfterEnd::Drain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::frame::StreamId;

    const S: i64 = 1_000_000_000;
    const NOW: i64 = 1_800_000_000 * S;

    fn rec(ts: i64, msg: &str) -> Record<'_> {
        Record {
            timestamp: Some(ts),
            stream: StreamId::Stdout,
            message: msg.as_bytes(),
            truncated: false,
            partial: false,
        }
    }

    /// Feed `lines` (timestamp, text) and return what each became.
    fn feed(rules: &mut StreamRules, resume: &mut Resume, lines: &[(i64, &str)]) -> Vec<Verdict> {
        lines.iter().map(|(ts, m)| rules.on_record(resume, &rec(*ts, m))).collect()
    }

    fn open(resume: &Resume, now: i64) -> (OpenPlan, StreamRules) {
        let plan = OpenPlan::new(resume, Opening { running: true, rate: 10.0, ..Default::default() }, now);
        let rules = StreamRules::new(&plan, now);
        (plan, rules)
    }

    /// dockerd's answer to a plan on the log as it is when dockerd serves
    /// it: the last `tail` lines, then those of them at or after `since`.
    fn answer<'a>(log: &'a [(i64, String)], plan: &OpenPlan) -> Vec<(i64, &'a str)> {
        let skip = plan.tail.map_or(0, |t| log.len().saturating_sub(t as usize));
        log[skip..].iter().filter(|(ts, _)| *ts >= plan.since).map(|(ts, m)| (*ts, m.as_str())).collect()
    }

    /// Streams opened one after the other on `log` as the loop opens them
    /// (a catch-up reopens at once, since-only) until one ends without
    /// asking for a catch-up: what reached the output, in order.
    fn deliver_all(resume: &mut Resume, opening: Opening, log: &[(i64, String)], now: i64) -> Vec<String> {
        let mut out = Vec::new();
        let mut catchup_next = false;
        for _ in 0..3 {
            let plan = OpenPlan::new(resume, Opening { catchup_next, ..opening }, now);
            let mut rules = StreamRules::new(&plan, now);
            for (ts, m) in answer(log, &plan) {
                if rules.on_record(resume, &rec(ts, m)) == Verdict::Deliver {
                    out.push(m.to_owned());
                }
            }
            rules.on_close(resume, Some([None; 3]), true, true, S, now);
            if !rules.catchup {
                return out;
            }
            catchup_next = true;
        }
        panic!("no stream ran to the end");
    }

    #[test]
    fn a_first_open_of_a_whole_log_delivers_it_in_order_however_much_it_holds() {
        // A container created at C writes 5 000 lines before the agent's
        // first request is served (it opened late: a loaded machine, a fast
        // writer). Whether it started from the container's creation or
        // from an earlier agent start, every line of its log is wanted.
        const C: i64 = NOW - 2 * S;
        let log: Vec<(i64, String)> = (1..=5_000).map(|i| (C + i * 100_000, format!("{i}"))).collect();
        let want: Vec<String> = (1..=5_000).map(|i| i.to_string()).collect();
        for since in [C, C - 60 * S] {
            let mut resume = Resume::new(since);
            let opening = Opening { running: true, log_start: Some(C), ..Default::default() };
            let plan = OpenPlan::new(&resume, opening, NOW);
            let got = deliver_all(&mut resume, opening, &log, NOW);
            let jump = got.windows(2).find(|w| w[0].parse::<u32>().ok() >= w[1].parse().ok());
            assert!(got == want, "since {since}: {} lines, {jump:?}", got.len());
            assert_eq!((plan.tail, plan.history_left, plan.whole_log), (None, None, true), "since {since}");
        }
    }

    #[test]
    fn a_first_window_over_older_lines_still_uses_tail() {
        // 3 000 lines from before `since` (a first run over a running
        // container), 3 000 after: `tail` spares dockerd decoding the old
        // ones. The window comes full, so the lines before it follow it:
        // each once, not in order.
        const C: i64 = NOW - 600 * S;
        let since = NOW - 60 * S;
        let old = (0..3_000).map(|i| (C + i * 1_000_000, format!("old {i}")));
        let new = (0..3_000).map(|i| (since + i * 1_000_000, format!("{i}")));
        let log: Vec<(i64, String)> = old.chain(new).collect();
        let mut resume = Resume::new(since);
        let opening = Opening { running: true, log_start: Some(C), ..Default::default() };
        let plan = OpenPlan::new(&resume, opening, NOW);
        assert_eq!((plan.tail, plan.whole_log), (Some(FIRST_TAIL), false));
        let mut got = deliver_all(&mut resume, opening, &log, NOW);
        assert_eq!(got[0], "1000", "the window first");
        got.sort_by_key(|m| m.parse::<u32>().unwrap());
        assert_eq!(got, (0..3_000).map(|i| i.to_string()).collect::<Vec<_>>());
        // Creation unknown: the same.
        let unknown = Opening { running: true, ..Default::default() };
        assert_eq!(OpenPlan::new(&Resume::new(since), unknown, NOW).tail, Some(FIRST_TAIL));
    }

    #[test]
    fn a_reopen_served_late_during_a_burst_loses_nothing() {
        // 100 lines delivered; the stream is rotated at R and a burst
        // begins: 500 lines before the reopen's request, 1 400 in the
        // half second before dockerd serves it. The window (tail 1 000:
        // the rate was a quiet stream's) holds only lines written after
        // the request: it does not reach back to the resume point.
        const R: i64 = NOW;
        let mut log: Vec<(i64, String)> =
            (1..=100).map(|i| (R - 10 * S + i * 1_000, format!("{i}"))).collect();
        let mut resume = Resume::new(R - 60 * S);
        let opening = Opening { running: true, rate: 1.0, log_start: Some(R - 60 * S), ..Default::default() };
        let mut out = deliver_all(&mut resume, opening, &log, R - 5 * S);
        log.extend((101..=600).map(|i| (R - S / 2 + (i - 100) * 1_000, format!("{i}"))));
        log.extend((601..=2_000).map(|i| (R + (i - 600) * 300_000, format!("{i}"))));
        out.extend(deliver_all(&mut resume, opening, &log, R));
        let want: Vec<String> = (1..=2_000).map(|i| i.to_string()).collect();
        let jump = out.windows(2).find(|w| w[0].parse::<u32>().ok() >= w[1].parse().ok());
        assert!(out == want, "{} lines, the reopen's first {:?}, {jump:?}", out.len(), out.get(100));
    }

    #[test]
    fn a_quiet_first_stream_of_a_whole_log_keeps_its_since() {
        // Moving it past the creation would make the next first open use
        // `tail`, and a burst before that open is served come out of order.
        let mut resume = Resume::new(NOW - 60 * S);
        let opening = Opening { running: true, log_start: Some(NOW - 60 * S), ..Default::default() };
        let plan = OpenPlan::new(&resume, opening, NOW);
        StreamRules::new(&plan, NOW).on_close(&mut resume, Some([None; 3]), true, true, 10 * S, NOW);
        assert_eq!(resume.start_since, NOW - 60 * S);
        let again = OpenPlan::new(&resume, opening, NOW + 10 * S);
        assert_eq!((again.tail, again.whole_log), (None, true));
    }

    #[test]
    fn plans_follow_the_resume_point() {
        // A first open with a recent since: the counted tail window.
        let fresh = Resume::new(NOW - 60 * S);
        let (p, _) = open(&fresh, NOW);
        assert_eq!((p.tail, p.check_window, p.history_left), (Some(FIRST_TAIL), false, Some(FIRST_TAIL)));
        assert!(p.follow && p.live);
        // An old backlog: read whole.
        let old = Resume::new(NOW - 2 * FIRST_TAIL_RECENT_NS);
        let (p, _) = open(&old, NOW);
        assert_eq!((p.tail, p.history_left), (None, None));
        // After a catch-up: since-only. The final read: no follow.
        let c = Opening { catchup_next: true, final_read: true, running: false, ..Default::default() };
        let p = OpenPlan::new(&fresh, c, NOW);
        assert_eq!((p.tail, p.follow, p.live), (None, false, false));
        // Once a line was delivered: tail sized by the rate, window checked.
        let mut r = Resume::new(NOW - 60 * S);
        let (_, mut rules) = open(&r, NOW);
        assert_eq!(feed(&mut rules, &mut r, &[(NOW - S, "a")]), [Verdict::Deliver]);
        let (p, _) = open(&r, NOW + S);
        assert!(p.tail.is_some() && p.check_window && p.history_left.is_none());
        assert!(p.since <= NOW - S);
    }

    #[test]
    fn a_rotation_drops_the_replayed_lines_and_delivers_the_rest_once() {
        let mut resume = Resume::new(NOW - 10 * S);
        let (_, mut first) = open(&resume, NOW);
        let lines = [(NOW + S, "1"), (NOW + S, "2"), (NOW + 2 * S, "3")];
        assert_eq!(feed(&mut first, &mut resume, &lines), [Verdict::Deliver; 3]);
        first.on_close(&mut resume, Some([None; 3]), true, true, 5 * S, NOW);
        // The reopen resumes a margin before the newest line and replays it.
        let (plan, mut second) = open(&resume, NOW + 3 * S);
        assert!(plan.since <= NOW + S);
        let again = [(NOW + S, "1"), (NOW + S, "2"), (NOW + 2 * S, "3"), (NOW + 3 * S, "4")];
        assert_eq!(
            feed(&mut second, &mut resume, &again),
            [Verdict::Replay, Verdict::Replay, Verdict::Replay, Verdict::Deliver]
        );
    }

    #[test]
    fn a_full_first_window_catches_up_and_leaves_a_gap() {
        let mut resume = Resume::new(NOW - 60 * S);
        let (plan, mut rules) = open(&resume, NOW);
        let mut lines: Vec<(i64, String)> =
            (0..FIRST_TAIL).map(|i| (NOW - 30 * S + i as i64, format!("h{i}"))).collect();
        lines.push((NOW + S, "new".into()));
        let verdicts: Vec<Verdict> =
            lines.iter().map(|(t, m)| rules.on_record(&mut resume, &rec(*t, m))).collect();
        // All but the last history line delivered; the window's end proves
        // nothing about what was before it: catch up.
        assert!(verdicts[..FIRST_TAIL as usize - 1].iter().all(|v| *v == Verdict::Deliver));
        assert_eq!(verdicts[FIRST_TAIL as usize - 1], Verdict::CatchUp);
        assert_eq!(*verdicts.last().unwrap(), Verdict::CatchUp, "nothing after a catch-up");
        rules.on_close(&mut resume, None, true, true, S, NOW);
        assert!(resume.gap.is_some(), "the lines before the window are owed");
        // The next stream reads from the first open's since, without tail.
        let c = Opening { catchup_next: true, running: true, ..Default::default() };
        let next = OpenPlan::new(&resume, c, NOW + 2 * S);
        assert_eq!((next.tail, next.since), (None, plan.since));
    }

    #[test]
    fn a_tail_window_that_starts_after_the_resume_point_catches_up() {
        let mut resume = Resume::new(NOW - 60 * S);
        let (_, mut rules) = open(&resume, NOW);
        assert_eq!(feed(&mut rules, &mut resume, &[(NOW - 10 * S, "a")]), [Verdict::Deliver]);
        rules.on_close(&mut resume, None, true, true, 20 * S, NOW);
        // The reopen's window begins with a line never delivered, stamped
        // after the newest delivered one: lines in between may be missing.
        let (plan, mut again) = open(&resume, NOW + 20 * S);
        assert!(plan.check_window);
        assert_eq!(feed(&mut again, &mut resume, &[(NOW - 5 * S, "b")]), [Verdict::CatchUp]);
    }

    #[test]
    fn an_equal_timestamp_group_cut_by_the_window_catches_up() {
        // Three lines with one timestamp delivered; a window that starts at
        // the group's second line would count it as the first of its
        // timestamp: misaligned, read again since-only.
        let mut resume = Resume::new(NOW - 60 * S);
        let (_, mut rules) = open(&resume, NOW);
        let t = NOW - 10 * S;
        feed(&mut rules, &mut resume, &[(t - S, "x"), (t, "a"), (t, "b"), (t, "c")]);
        rules.on_close(&mut resume, None, true, true, 20 * S, NOW);
        let (_, mut again) = open(&resume, NOW + 20 * S);
        assert_eq!(feed(&mut again, &mut resume, &[(t, "b")]), [Verdict::CatchUp]);
    }

    #[test]
    fn a_clock_step_back_on_a_live_stream_loses_nothing() {
        // A stream from the start of the log: dockerd filtered nothing.
        // Once past the newest delivered line, everything on the same
        // connection is new, even stamped earlier.
        let mut resume = Resume::new(0);
        let (_, mut rules) = open(&resume, NOW);
        let lines = [(NOW, "1"), (NOW + S, "2"), (NOW - 100 * S, "3 after the step"), (NOW - 99 * S, "4")];
        assert_eq!(feed(&mut rules, &mut resume, &lines), [Verdict::Deliver; 4]);
    }

    /// The log of a container whose clock stepped back 19 s at NOW + 5 s:
    /// lines every 100 ms, stderr every third, stamped NOW.. before the
    /// step and NOW - 14 s.. after it.
    fn stepped_log() -> (Vec<(i64, StreamId, String)>, usize) {
        let before = (0..50).map(|i| (NOW + i * S / 10, format!("before {i}")));
        let after = (0..250).map(|i| (NOW + 5 * S - 19 * S + i * S / 10, format!("after {i}")));
        let log: Vec<(i64, StreamId, String)> = before
            .chain(after)
            .enumerate()
            .map(|(i, (t, m))| (t, if i % 3 == 2 { StreamId::Stderr } else { StreamId::Stdout }, m))
            .collect();
        (log, 50)
    }

    /// Streams as the loop opens them on `log` as dockerd 20.10 serves it
    /// (every line, also those written while the stream is open, filtered
    /// by `since`): until one runs to the end without a catch-up.
    fn follow(resume: &mut Resume, log: &[(i64, StreamId, String)], now: i64) -> Vec<String> {
        let mut out = Vec::new();
        let mut catchup_next = false;
        for _ in 0..3 {
            let opening = Opening { running: true, rate: 10.0, catchup_next, ..Default::default() };
            let plan = OpenPlan::new(resume, opening, now);
            let mut rules = StreamRules::new(&plan, now);
            let skip = plan.tail.map_or(0, |t| log.len().saturating_sub(t as usize));
            for (ts, stream, m) in log[skip..].iter().filter(|l| l.0 >= plan.since) {
                let r = Record {
                    timestamp: Some(*ts),
                    stream: *stream,
                    message: m.as_bytes(),
                    truncated: false,
                    partial: false,
                };
                if rules.on_record(resume, &r) == Verdict::Deliver {
                    out.push(m.clone());
                }
            }
            rules.on_close(resume, Some([None; 3]), true, true, S, now);
            if !rules.catchup {
                return out;
            }
            catchup_next = true;
        }
        panic!("no stream ran to the end");
    }

    fn each_once(mut got: Vec<String>, log: &[(i64, StreamId, String)]) {
        let mut want: Vec<String> = log.iter().map(|l| l.2.clone()).collect();
        got.sort();
        want.sort();
        let missing: Vec<&String> = want.iter().filter(|m| !got.contains(m)).collect();
        assert!(missing.is_empty(), "never delivered: {missing:?}");
        assert_eq!(got, want, "each line once");
    }

    #[test]
    fn lines_dockerd_filtered_out_after_a_step_back_under_an_open_stream_are_read_again() {
        // Seed 18000 of the chaos driver. A stream opened at NOW + 3.9 s
        // (a rotation), `since` NOW + 2.9 s: after the step dockerd sends
        // it only the lines stamped from NOW + 2.9 s on, and the lines from
        // NOW - 14 s until then are never sent. The next stream (another
        // rotation) resumes from the newest line, on the new clock: it
        // does not ask for them either.
        let (log, step) = stepped_log();
        let mut resume = Resume::new(NOW - S);
        let mut out = follow(&mut resume, &log[..40], NOW + 4 * S);
        assert_eq!(resume.since(), NOW + 29 * S / 10);
        out.extend(follow(&mut resume, &log, NOW + 12 * S));
        out.extend(follow(&mut resume, &log, NOW + 15 * S));
        each_once(out, &log);
        assert!(log[step].0 < NOW, "(the step is back past the since)");
    }

    #[test]
    fn a_step_back_shown_first_by_a_stream_with_nothing_delivered_yet_is_read_again() {
        // Only stdout wrote before the step; the first line the stream is
        // sent after it (stamped NOW + 2.9 s) is stderr's first: below the
        // newest stdout line, it shows the step.
        let (log, step) = stepped_log();
        let log: Vec<(i64, StreamId, String)> = log
            .into_iter()
            .enumerate()
            .map(|(i, (t, _, m))| {
                let stream =
                    if i >= step && (i - step) % 3 == 1 { StreamId::Stderr } else { StreamId::Stdout };
                (t, stream, m)
            })
            .collect();
        let mut resume = Resume::new(NOW - S);
        let mut out = follow(&mut resume, &log[..40], NOW + 4 * S);
        out.extend(follow(&mut resume, &log, NOW + 12 * S));
        out.extend(follow(&mut resume, &log, NOW + 15 * S));
        each_once(out, &log);
    }

    #[test]
    fn lines_stamped_after_a_step_back_that_followed_a_restart_are_read_again() {
        // The agent was killed before the step; the restart vetted its
        // checkpoint (newest line NOW + 1 s) against Docker's clock read
        // before the step, and opened its stream at NOW + 1 s - margin
        // after it.
        let (log, _) = stepped_log();
        let mut resume = Resume::new(NOW - S);
        let first = follow(&mut resume, &log[..11], NOW + 2 * S);
        let json = serde_json::to_string(&resume).unwrap();
        let mut resume: Resume = serde_json::from_str(&json).unwrap();
        assert_eq!(resume.vet(Some((NOW + 4 * S, NOW + 7 * S))), Ok(()));
        let mut out = first;
        out.extend(follow(&mut resume, &log, NOW + 12 * S));
        out.extend(follow(&mut resume, &log, NOW + 15 * S));
        each_once(out, &log);
    }

    #[test]
    fn a_quiet_stream_moves_a_first_since_forward() {
        let mut resume = Resume::new(NOW - 600 * S);
        let (_, rules) = open(&resume, NOW);
        rules.on_close(&mut resume, None, true, true, 10 * S, NOW);
        assert_eq!(resume.start_since, NOW - MARGIN);
        // Not if it was open too briefly to prove anything, or had failed,
        // or was not read: paused for a full output, its lines from
        // before it was asked wait unread in its socket.
        let mut r2 = Resume::new(NOW - 600 * S);
        rules.on_close(&mut r2, None, true, true, MARGIN, NOW);
        rules.on_close(&mut r2, None, false, true, 10 * S, NOW);
        rules.on_close(&mut r2, None, true, false, 10 * S, NOW);
        assert_eq!(r2.start_since, NOW - 600 * S);
    }

    #[test]
    fn what_follows_a_streams_end() {
        // Running: follow again.
        assert_eq!(after_end(true, true, true, false, false), AfterEnd::Follow);
        // Stopped while followed: a final line without newline may not be
        // in the stream yet: wait for `die`, or read now if it came.
        assert_eq!(after_end(false, true, true, false, false), AfterEnd::AwaitDie);
        assert_eq!(after_end(false, true, true, true, false), AfterEnd::FinalRead);
        // A drain or the final read ran to the end: drained.
        assert_eq!(after_end(false, true, false, true, false), AfterEnd::Drained);
        assert_eq!(after_end(false, false, false, false, true), AfterEnd::Drained);
        // Stopped with lines not shipped: drain.
        assert_eq!(after_end(false, false, false, false, false), AfterEnd::Drain);
    }

    #[test]
    fn a_final_line_without_newline_is_delivered_once_by_the_final_read() {
        // The live stream delivered "a"; the final read (no follow) sends
        // the stored log again from the resume point, now with the last
        // line dockerd stored after the stream ended.
        let mut resume = Resume::new(NOW - 60 * S);
        let (_, mut live) = open(&resume, NOW);
        feed(&mut live, &mut resume, &[(NOW, "a")]);
        live.on_close(&mut resume, None, true, true, 5 * S, NOW);
        let c = Opening { final_read: true, running: false, rate: 1.0, ..Default::default() };
        let plan = OpenPlan::new(&resume, c, NOW + 5 * S);
        assert!(!plan.follow && !plan.live);
        let mut last = StreamRules::new(&plan, NOW + 5 * S);
        assert_eq!(
            feed(&mut last, &mut resume, &[(NOW, "a"), (NOW + S, "bye, no newline")]),
            [Verdict::Replay, Verdict::Deliver]
        );
    }
}
