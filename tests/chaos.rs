//! Chaos (issue 18, item 4): a schedule of faults built from a seed, run
//! against the agent with both doubles, then the faults stop and the run
//! is checked.
//!
//! The schedule (`FAULT_SECS`, 40 s by default) mixes:
//! - Docker: random stalls and resets of log requests, queued stalls,
//!   resets, malformed chunks, garbage inspect bodies, events that end or
//!   fail, a daemon restart, clock steps, containers starting, dying and
//!   restarting;
//! - the sink: random answers (429, 500, 503, never, reset without an
//!   answer, late, late past the sink timeout, slow bodies, resets after
//!   storing), early answers (errors before the body was read),
//!   outages (connections refused), every connection dropped, 401 for a
//!   while then fixed;
//! - the agent: kill -9 and SIGTERM at random moments (then restarted),
//!   SIGHUP.
//!
//! Then every fault stops and every container is stopped, and the run must
//! show, within [`DELIVERY_BOUND`] (40 s: the longest wait between tries,
//! once 30 s, plus 10 s; now the backoff caps at 5 s and a refused
//! configuration is tried every 10 s):
//! - every line Docker holds stored in the Loki double;
//! - nothing stored that Docker does not hold;
//! - repeats only of pushes the double stored whose answer the agent
//!   could not have had: answered past the sink timeout (slow body, late),
//!   reset after storing, or answered in the 2 s before a kill or SIGTERM
//!   (the push in flight, and up to one 800 ms checkpoint period of
//!   acknowledged lines) or in the second before an outage or a dropped
//!   connection; and, after Docker's clock steps back, whatever was stored
//!   up to 10 s after the step, a window made longer by every moment
//!   Docker or the sink was away in it, plus 5 s each (the agent reads the
//!   container's whole retained log again when its next stream opens,
//!   within --rotate-after, on purpose: `src/agent/clock.rs`; those lines
//!   reach the sink once both are back);
//! - checkpoints never ahead of acknowledgements: the state file, read
//!   every second while the agent runs, never puts a container past a line
//!   the double had not stored at that moment;
//! - RSS under [`RSS_BOUND_KB`] at every sample;
//! - no invariant violated: no `invariant violated` on any agent's stderr
//!   and `log_capturer_invariant_violations_total` 0 (an absent metric
//!   counts as 0);
//! - no agent exiting on its own.
//!
//! A failure prints the seed, the whole schedule, the timeline and the
//! evidence (kept in `target/tmp/evidence/`). Replay one seed with
//! `make chaos SEED=N`; `make chaos SEEDS=1000` runs seeds 1 to 1000 (or
//! from `LC_CHAOS_BASE`); `make chaos-ci` runs the fixed sequence of
//! seeds from 18000 for a time budget (`LC_CHAOS_BUDGET_SECS`, 480).
//! Every run also measures recovery: from each moment the receiver
//! becomes healthy to the first push it acknowledges; p50/p99 are printed.

#[path = "common/chaos.rs"]
mod chaos_lib;
mod common;
#[path = "common/loki.rs"]
mod loki;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::process::Command;
use std::time::{Duration, Instant};

use chaos_lib::*;
use common::{wait_until, Agent, ContainerSpec, Fault, Match, Writer};
use loki_double as lk;

/// The longest wait between tries when this was written (30 s) plus 10 s.
const DELIVERY_BOUND: Duration = Duration::from_secs(40);
/// The sink queue's 16 MiB, the batch being filled, read buffers, and a
/// debug build's slack.
const RSS_BOUND_KB: u64 = 160 << 10;
/// The agent's `--sink-timeout` here: short, so that answers can come past it.
const SINK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
enum Step {
    DockerRandom { stall: f64, reset: f64 },
    DockerCalm,
    DockerFault(Match, Fault, u32),
    DaemonDown,
    DaemonUp,
    Clock { offset_s: i64 },
    Start { name: String, rate: f64, tty: bool, line_len: usize },
    Die { name: String },
    Restart { name: String },
    SinkRandom { mix: Vec<(f64, lk::Fault)> },
    SinkCalm,
    EarlyAnswers { after_bytes: usize, status: u16, times: u32 },
    Outage,
    Resume,
    DropConnections,
    Unauthorized,
    Authorized,
    Kill9,
    Term,
    Hup,
}

impl Step {
    /// Steps after which the receiver is healthy again (for recovery).
    fn heals_sink(&self) -> bool {
        matches!(self, Step::SinkCalm | Step::Resume | Step::Authorized)
    }

    fn hurts_sink(&self) -> bool {
        matches!(
            self,
            Step::SinkRandom { .. }
                | Step::Outage
                | Step::Unauthorized
                | Step::EarlyAnswers { .. }
                | Step::DropConnections
        )
    }
}

struct Schedule {
    seed: u64,
    fault_secs: f64,
    steps: Vec<(f64, Step)>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "schedule of seed {} ({} s of faults):", self.seed, self.fault_secs)?;
        for (t, s) in &self.steps {
            writeln!(f, "  {t:6.2}s {s:?}")?;
        }
        Ok(())
    }
}

fn sink_mix(rng: &mut Rng) -> Vec<(f64, lk::Fault)> {
    let kinds = [
        lk::Fault::RateLimited { retry_after: Some(1) },
        lk::Fault::RateLimited { retry_after: None },
        lk::Fault::Status(500),
        lk::Fault::Status(502),
        lk::Fault::Status(503),
        lk::Fault::NeverAnswer,
        lk::Fault::ResetNoAnswer,
        lk::Fault::ResetMidResponse { stored: true },
        lk::Fault::ResetMidResponse { stored: false },
        lk::Fault::Late(Duration::from_secs(2)),
        lk::Fault::Late(SINK_TIMEOUT + Duration::from_secs(2)),
        lk::Fault::SlowBody { len: 80, every: Duration::from_millis(100) },
        lk::Fault::SlowResponse { every: Duration::from_millis(20) },
        lk::Fault::EarlyAnswer { after_bytes: 2000, status: 500 },
        lk::Fault::EarlyAnswer { after_bytes: 2000, status: 503 },
    ];
    let n = rng.between(2, 6) as usize;
    (0..n).map(|_| (rng.between(2, 12) as f64 / 100.0, rng.pick(&kinds).clone())).collect()
}

/// The schedule of a seed: what happens when, decided up front so that
/// it can be printed whole.
fn schedule(seed: u64, fault_secs: f64) -> Schedule {
    let mut rng = Rng::new(seed ^ 0xc4a0_5c4a_05c4_a05c);
    let mut steps: Vec<(f64, Step)> = Vec::new();
    let at = |rng: &mut Rng, lo: f64, hi: f64| lo + (rng.next() % 10_000) as f64 / 10_000.0 * (hi - lo);
    let mut names: Vec<String> = Vec::new();
    let initial = rng.between(3, 8);
    for i in 0..initial {
        let name = format!("s{seed}-c{i}");
        names.push(name.clone());
        let line_len = if rng.chance(0.15) {
            rng.between(17_000, 40_000) as usize
        } else {
            rng.between(20, 200) as usize
        };
        steps.push((
            0.0,
            Step::Start { name, rate: rng.between(5, 40) as f64, tty: rng.chance(0.2), line_len },
        ));
    }
    if rng.chance(0.7) {
        let (stall, reset) = (rng.between(0, 8) as f64 / 100.0, rng.between(0, 8) as f64 / 100.0);
        steps.push((0.0, Step::DockerRandom { stall, reset }));
        steps.push((at(&mut rng, fault_secs * 0.5, fault_secs), Step::DockerCalm));
    }
    // Sink phases: random answers, outages, 401, early answers.
    let mut t = at(&mut rng, 0.5, 4.0);
    while t < fault_secs - 2.0 {
        let len = at(&mut rng, 2.0, 9.0).min(fault_secs - t);
        match rng.next() % 6 {
            0 | 1 => {
                steps.push((t, Step::SinkRandom { mix: sink_mix(&mut rng) }));
                steps.push((t + len, Step::SinkCalm));
            }
            2 => {
                steps.push((t, Step::Outage));
                steps.push((t + len, Step::Resume));
            }
            3 => {
                steps.push((t, Step::Unauthorized));
                steps.push((t + len, Step::Authorized));
            }
            4 => {
                // No 2xx: for a push small enough to fit in the sockets'
                // buffers the agent has written it all when the answer
                // comes, and a 2xx is then an acknowledgement as far as
                // any client can tell (what the double did not read is
                // lost). tests/sink_liveness.rs checks an early 2xx on a
                // push larger than the buffers.
                let status = *rng.pick(&[413, 500, 503]);
                let after_bytes = rng.between(500, 8000) as usize;
                steps.push((t, Step::EarlyAnswers { after_bytes, status, times: rng.between(1, 4) as u32 }));
            }
            _ => steps.push((t, Step::DropConnections)),
        }
        t += len + at(&mut rng, 0.5, 6.0);
    }
    // Docker and the agent: a handful of events anywhere in the run.
    let events = rng.between(4, 12);
    let mut next_container = initial;
    for _ in 0..events {
        let t = at(&mut rng, 1.0, fault_secs - 1.0);
        let step = match rng.next() % 13 {
            0 => Step::DockerFault(Match::Logs, Fault::StallAfterHeaders, rng.between(1, 4) as u32),
            1 => Step::DockerFault(Match::Logs, Fault::ResetMidFrame, rng.between(1, 4) as u32),
            2 => Step::DockerFault(Match::Logs, Fault::MalformedChunk, 1),
            3 => Step::DockerFault(Match::Inspect, Fault::Body(b"{\"Id\": [garbage".to_vec()), 1),
            4 => Step::DockerFault(Match::Events, Fault::CloseAfter(Duration::from_millis(500)), 1),
            5 => {
                let down = at(&mut rng, 0.5, 4.0);
                steps.push((t + down, Step::DaemonUp));
                Step::DaemonDown
            }
            // Without clock steps (LC_CHAOS_CLOCK=0) the same draw keeps
            // the rest of the schedule the seed's.
            6 => match (rng.between(0, 41) as i64 - 20, clock_steps()) {
                (offset_s, true) => Step::Clock { offset_s },
                (_, false) => Step::Hup,
            },
            7 => {
                let name = format!("s{seed}-c{next_container}");
                next_container += 1;
                names.push(name.clone());
                Step::Start { name, rate: rng.between(5, 40) as f64, tty: rng.chance(0.2), line_len: 80 }
            }
            8 => Step::Die { name: rng.pick(&names).clone() },
            9 => Step::Restart { name: rng.pick(&names).clone() },
            10 => Step::Kill9,
            11 => Step::Term,
            _ => Step::Hup,
        };
        steps.push((t, step));
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    Schedule { seed, fault_secs, steps }
}

/// A state file as read: its seq and positions.
type StateFile = (u64, Positions);

/// What a stopped agent left: when, its generation, the state file and
/// each container's resume point as JSON.
type Left = (f64, usize, Option<StateFile>, BTreeMap<String, String>);

/// What one seed's run found.
struct RunResult {
    seed: u64,
    failures: Vec<String>,
    /// Seconds from the receiver healing to its first acknowledgement.
    recoveries: Vec<f64>,
    max_rss_kb: u64,
    lines: usize,
    repeats: usize,
    secs: f64,
}

struct Run {
    rig: Rig,
    sampler: Sampler,
    args: Vec<String>,
    agent: Option<Agent>,
    generation: usize,
    stderrs: Vec<String>,
    /// Moments whose stored pushes may come again.
    lossy: Vec<(Instant, Duration)>,
    failures: Vec<String>,
    /// The Docker double's socket is closed: an agent cannot start now (it
    /// exits when Docker is unreachable at start; systemd restarts it), so
    /// a restart waits for the daemon.
    daemon_down: bool,
    /// Docker's clock offset, and the moments it stepped back.
    offset_s: i64,
    steps_back: Vec<Instant>,
    /// When the sink (outage, 401) or Docker (daemon down) was away: a
    /// re-read after a step back waits for both. (start, end); an open
    /// end closes when the faults stop.
    away: Vec<(Instant, Option<Instant>)>,
    /// The state file each stopped agent left: (when, generation, what).
    left: Vec<Left>,
}

impl Run {
    fn start_agent(&mut self) {
        if self.daemon_down {
            return;
        }
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let a = Agent::start_sink(self.rig.docker.socket(), &self.rig.dir.0, &args, &[]);
        self.sampler.follow(self.generation, &a);
        self.agent = Some(a);
    }

    /// An agent that exited though nobody stopped it is a failure.
    fn check_alive(&mut self) {
        if let Some(a) = self.agent.as_mut() {
            if let Ok(Some(st)) = a.child.try_wait() {
                self.failures.push(format!("agent#{} exited on its own: {st}", self.generation));
                self.retire();
                self.start_agent();
            }
        }
    }

    fn retire(&mut self) {
        self.sampler.pause();
        if let Some(a) = self.agent.take() {
            self.stderrs.push(a.stderr());
        }
        self.generation += 1;
    }

    fn signal(&self, sig: &str) {
        if let Some(a) = &self.agent {
            let _ = Command::new("kill").args([&format!("-{sig}"), &a.pid().to_string()]).status();
        }
    }

    fn stop_agent(&mut self, sig: &str) {
        self.lossy.push((Instant::now(), Duration::from_secs(2)));
        self.signal(sig);
        if let Some(a) = self.agent.as_mut() {
            // SIGTERM drains the sink first: give it its deadline.
            let exited = wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
                a.child.try_wait().ok().flatten().is_some()
            });
            if !exited {
                self.failures.push(format!("agent#{} did not exit 30 s after SIG{sig}", self.generation));
                let _ = a.child.kill();
                let _ = a.child.wait();
            }
        }
        let t = self.rig.t(Instant::now());
        let state = self.rig.state_dir();
        self.left.push((t, self.generation, read_checkpoint(&state), read_resumes(&state)));
        self.retire();
        self.start_agent();
    }

    /// The oldest absence still open ends now. (The schedule pairs them:
    /// an outage ends with a resume, a 401 with its fix, a daemon down
    /// with up; which of the open ones ends matters not for the union.)
    fn back(&mut self) {
        if let Some(a) = self.away.iter_mut().find(|(_, end)| end.is_none()) {
            a.1 = Some(Instant::now());
        }
    }

    /// Until when pushes may repeat what was stored before a step back at
    /// `at`: the re-read comes when the next stream opens (within
    /// --rotate-after, 5 s, and a retry or two: 10 s), and every moment
    /// Docker or the sink was away in that window delays it as long, plus
    /// a backoff cap (5 s) to notice the return.
    fn reread_until(&self, at: Instant, calm: Instant) -> Instant {
        let mut end = at + Duration::from_secs(10);
        let mut spans: Vec<(Instant, Instant)> =
            self.away.iter().map(|(a, b)| (*a, b.unwrap_or(calm))).collect();
        spans.sort();
        for (a, b) in spans {
            if a < end && b > at {
                end += b.saturating_duration_since(a.max(at)) + Duration::from_secs(5);
            }
        }
        end
    }

    fn step(&mut self, step: &Step, rng: &mut Rng) {
        let (docker, loki) = (self.rig.docker.clone(), self.rig.loki.clone());
        match step {
            Step::DockerRandom { stall, reset } => docker.random_faults(
                rng.next(),
                vec![
                    (*stall, Match::Logs, Fault::StallAfterHeaders),
                    (*reset, Match::Logs, Fault::ResetMidFrame),
                ],
            ),
            Step::DockerCalm => docker.clear_random_faults(),
            Step::DockerFault(m, f, n) => docker.inject(m.clone(), f.clone(), *n),
            Step::DaemonDown => {
                self.daemon_down = true;
                self.away.push((Instant::now(), None));
                docker.daemon_down()
            }
            Step::DaemonUp => {
                self.back();
                docker.daemon_up();
                self.daemon_down = false;
                if self.agent.is_none() {
                    self.start_agent();
                }
            }
            Step::Clock { offset_s } => {
                if *offset_s < self.offset_s {
                    self.steps_back.push(Instant::now());
                }
                self.offset_s = *offset_s;
                docker.set_clock_offset(offset_s * 1_000_000_000)
            }
            Step::Start { name, rate, tty, line_len } => {
                let w =
                    Writer { lines_per_sec: *rate, stderr_every: 3, line_len: *line_len, max_lines: None };
                self.rig.start(ContainerSpec::new(name.clone()).tty(*tty).writer(w));
            }
            Step::Die { name } => docker.stop_with(name, 137),
            Step::Restart { name } => docker.restart(name),
            Step::SinkRandom { mix } => loki.random_faults(rng.next(), mix.clone()),
            Step::SinkCalm => loki.clear_random_faults(),
            Step::EarlyAnswers { after_bytes, status, times } => loki.inject(
                lk::Match::Push,
                lk::Fault::EarlyAnswer { after_bytes: *after_bytes, status: *status },
                *times,
            ),
            Step::Outage => {
                self.lossy.push((Instant::now(), Duration::from_secs(1)));
                self.away.push((Instant::now(), None));
                loki.outage()
            }
            Step::Resume => {
                self.back();
                loki.resume().unwrap()
            }
            Step::DropConnections => {
                self.lossy.push((Instant::now(), Duration::from_secs(1)));
                loki.drop_connections()
            }
            Step::Unauthorized => {
                self.away.push((Instant::now(), None));
                loki.inject(lk::Match::Push, lk::Fault::Status(401), u32::MAX)
            }
            Step::Authorized => {
                self.back();
                loki.clear_faults()
            }
            Step::Kill9 => self.stop_agent("KILL"),
            Step::Term => self.stop_agent("TERM"),
            Step::Hup => self.signal("HUP"),
        }
    }
}

/// Pushes stored whose answer the agent could not have had in time.
fn answer_lost(r: &lk::RequestRecord) -> bool {
    match &r.fault {
        Some(lk::Fault::SlowBody { .. } | lk::Fault::ResetMidResponse { stored: true }) => true,
        Some(lk::Fault::Late(d)) => *d >= SINK_TIMEOUT,
        // 20 ms a byte over a ~100-byte answer: near the timeout under load.
        Some(lk::Fault::SlowResponse { .. }) => true,
        _ => false,
    }
}

fn run_seed(seed: u64, fault_secs: f64) -> RunResult {
    let sched = schedule(seed, fault_secs);
    let began = Instant::now();
    let mut rng = Rng::new(seed);
    let rig = Rig::new(&format!("chaos-{seed}"));
    let sampler = Sampler::start(&rig);
    let url = rig.loki.url();
    let timeout = format!("{}s", SINK_TIMEOUT.as_secs());
    let args: Vec<String> =
        ["--loki", &url, "--sink-timeout", &timeout, "--rotate-after", "5s", "--idle-timeout", "2s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let mut run = Run {
        rig,
        sampler,
        args,
        agent: None,
        generation: 0,
        stderrs: Vec::new(),
        lossy: Vec::new(),
        failures: Vec::new(),
        daemon_down: false,
        offset_s: 0,
        steps_back: Vec::new(),
        away: Vec::new(),
        left: Vec::new(),
    };
    // The containers of t=0 exist before the agent: it backfills them.
    let mut heals: Vec<Instant> = Vec::new();
    let mut hurts: Vec<Instant> = Vec::new();
    let mut rest = sched.steps.iter().peekable();
    while let Some((_, s)) = rest.next_if(|(t, _)| *t == 0.0) {
        run.step(s, &mut rng);
    }
    run.rig.t0 = Instant::now();
    run.start_agent();
    for (t, s) in rest {
        run.rig.until(*t);
        run.check_alive();
        run.step(s, &mut rng);
        let now = Instant::now();
        if s.heals_sink() {
            heals.push(now);
        }
        if s.hurts_sink() {
            hurts.push(now);
        }
    }
    run.rig.until(fault_secs);
    run.check_alive();
    // The faults stop.
    let calm = Instant::now();
    let (docker, loki) = (run.rig.docker.clone(), run.rig.loki.clone());
    docker.clear_random_faults();
    docker.clear_faults();
    docker.daemon_up();
    run.daemon_down = false;
    if run.agent.is_none() {
        run.start_agent();
    }
    loki.clear_random_faults();
    loki.clear_faults();
    loki.resume().unwrap();
    heals.push(calm);
    for (id, _) in run.rig.containers.clone() {
        docker.stop(&id);
    }
    // The writers run on the double's thread: once stopped, nothing is
    // added. The truth is final.
    let truth = run.rig.truth();
    let want = truth.len() as u64;
    let delivered = wait_until(DELIVERY_BOUND, Duration::from_millis(250), || {
        loki.stats().entries_stored >= want && compare(&run.rig, &truth).missing.is_empty()
    });
    let took = calm.elapsed();
    run.check_alive();
    let c = compare(&run.rig, &truth);
    if !delivered || !c.missing.is_empty() {
        run.failures.push(format!(
            "not every line delivered within {DELIVERY_BOUND:?} of the faults stopping: {}",
            c.summary()
        ));
    }
    if !c.unexpected.is_empty() {
        run.failures.push(format!("stored lines Docker does not hold: {}", c.summary()));
    }
    let reqs = loki.requests();
    let mut allowed: HashSet<u64> = reqs.iter().filter(|r| answer_lost(r)).map(|r| r.seq).collect();
    for (at, w) in &run.lossy {
        allowed.extend(stored_before(&run.rig, *at, *w));
    }
    // After a step back the agent reads a container's whole retained log
    // again, on purpose (src/agent/clock.rs), when its next stream opens.
    for at in &run.steps_back {
        let until = run.reread_until(*at, calm);
        allowed.extend(reqs.iter().filter(|r| r.at <= until).map(|r| r.seq));
    }
    let outside = c.repeats_outside(&allowed);
    if !outside.is_empty() {
        let firsts: BTreeSet<u64> = outside.iter().map(|(_, _, r)| *r).collect();
        let last = run.agent.as_ref().map(|a| a.stderr());
        let said = run.stderrs.iter().chain(last.as_ref());
        let future = said.flat_map(|e| e.lines()).find(|l| l.contains("is later than Docker's clock"));
        let hint = future.map_or(String::new(), |l| format!(" (an agent said: {l})"));
        run.failures.push(format!(
            "{} repeats beyond the stated bounds{hint}, first stored by:\n{}{}",
            outside.len(),
            describe_requests(&run.rig, &firsts),
            c.summary()
        ));
    }
    let samples = run.sampler.samples();
    for bad in checkpoints_ahead(&run.rig, &truth, &samples).into_iter().take(5) {
        run.failures.push(format!("checkpoint ahead of acknowledgements: {bad}"));
    }
    let max_rss_kb = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    if max_rss_kb > RSS_BOUND_KB {
        run.failures.push(format!("RSS {max_rss_kb} kB over its bound of {RSS_BOUND_KB} kB"));
    }
    if let Some(s) = samples.iter().find(|s| s.metrics.as_ref().is_some_and(|m| family(m, INVARIANTS) > 0.0))
    {
        run.failures.push(format!("t={:.1}s agent#{}: {INVARIANTS} > 0", s.t, s.generation));
    }
    let retire_last = run.agent.take().map(|a| a.stderr());
    run.stderrs.extend(retire_last);
    for (i, e) in run.stderrs.iter().enumerate() {
        if let Some(l) = e.lines().find(|l| l.contains("invariant violated")) {
            run.failures.push(format!("agent#{i} said: {l}"));
        }
    }
    // Recovery: from each healing to the first acknowledgement after it,
    // counted only when no new sink fault began before that answer.
    let mut recoveries = Vec::new();
    for h in &heals {
        let next_hurt = hurts.iter().filter(|x| *x > h).min();
        let first_ack = reqs
            .iter()
            .filter(|r| r.at >= *h && r.status / 100 == 2)
            .filter(|r| !matches!(r.fault, Some(lk::Fault::EarlyAnswer { .. })))
            .map(|r| r.at)
            .min();
        if let Some(a) = first_ack {
            if next_hurt.map_or(true, |n| a < *n) {
                recoveries.push(a.duration_since(*h).as_secs_f64());
            }
        }
    }
    let secs = began.elapsed().as_secs_f64();
    let failures = std::mem::take(&mut run.failures);
    if !failures.is_empty() {
        let mut text = format!("chaos: LC_SEED={seed} FAILED:\n");
        for f in &failures {
            text.push_str(&format!("- {f}\n"));
        }
        text.push_str(&sched.to_string());
        if let Some(w) = wedge(&samples) {
            text.push_str(&format!("{w}\n"));
        }
        text.push_str(&format!("timeline (sampled every second):\n{}", timeline(&samples)));
        text.push_str(&format!("the Loki double's last requests:\n{}", last_requests(&run.rig, 25)));
        text.push_str(&format!("the Loki double's stats: {}\n", loki.stats().to_json()));
        text.push_str(&missing_detail(&run.rig, &c, &samples));
        let lost: BTreeSet<&str> = c.missing.iter().map(|k| k.0.as_str()).collect();
        for (t, g, cp, raw) in &run.left {
            for (id, name) in run.rig.containers.iter().filter(|(_, n)| lost.contains(n.as_str())) {
                let pos = cp.as_ref().map(|(seq, m)| (seq, m.get(id)));
                let r = raw.get(id).map_or("", String::as_str);
                text.push_str(&format!("  agent#{g} stopped at t={t:.1}s leaving {name} at {pos:?} {r}\n"));
            }
        }
        let mut full = text.clone();
        for (i, e) in run.stderrs.iter().enumerate() {
            text.push_str(&format!("agent#{i} stderr (last 30 lines):\n{}\n", tail(e, 30)));
            full.push_str(&format!("agent#{i} stderr:\n{e}\n"));
        }
        let path = evidence_file("chaos", seed, &full);
        say(&format!("{text}(kept, with every agent's whole stderr, in {})", path.display()));
    }
    say(&format!(
        "chaos: seed {seed}: {} in {secs:.0} s; {} lines, {} repeats (allowed), delivered {took:.1?} after the \
         faults stopped, max RSS {max_rss_kb} kB, recoveries {recoveries:.2?}",
        if failures.is_empty() { "ok" } else { "FAILED" },
        truth.len(),
        c.repeated.len(),
    ));
    RunResult { seed, failures, recoveries, max_rss_kb, lines: truth.len(), repeats: c.repeated.len(), secs }
}

/// Docker clock steps in the schedules, unless `LC_CHAOS_CLOCK=0`.
fn clock_steps() -> bool {
    env_u64("LC_CHAOS_CLOCK") != Some(0)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

#[test]
#[ignore = "long (a minute a seed): make chaos SEED=N, make chaos SEEDS=N, make chaos-ci"]
fn chaos() {
    let fault_secs = env_u64("LC_CHAOS_SECS").unwrap_or(40) as f64;
    let base = env_u64("LC_CHAOS_BASE").unwrap_or(1);
    let budget = env_u64("LC_CHAOS_BUDGET_SECS").map(Duration::from_secs);
    let seeds: Box<dyn Iterator<Item = u64>> = match (env_u64("LC_SEED"), env_u64("LC_SEEDS")) {
        (Some(s), _) => Box::new(std::iter::once(s)),
        (None, Some(n)) => Box::new(base..base + n),
        (None, None) if budget.is_some() => Box::new(base..),
        (None, None) => Box::new(std::iter::once(base)),
    };
    let began = Instant::now();
    let mut results: Vec<RunResult> = Vec::new();
    for seed in seeds {
        if let Some(b) = budget {
            // Start a seed only if one as long as the longest so far fits.
            let longest = results.iter().map(|r| r.secs).fold(0.0f64, f64::max);
            if !results.is_empty() && began.elapsed().as_secs_f64() + longest > b.as_secs_f64() {
                break;
            }
        }
        say(&format!("chaos: LC_SEED={seed}"));
        results.push(run_seed(seed, fault_secs));
    }
    let mut rec: Vec<f64> = results.iter().flat_map(|r| r.recoveries.iter().copied()).collect();
    rec.sort_by(f64::total_cmp);
    let failed: Vec<u64> = results.iter().filter(|r| !r.failures.is_empty()).map(|r| r.seed).collect();
    say(&format!(
        "chaos: {} seeds ({}..={}) in {:.0} s, {} failed {failed:?}; {} lines, {} repeats; recovery (receiver \
         healthy -> first acknowledgement) over {} heals: p50 {:.2} s, p99 {:.2} s, max {:.2} s; max RSS {} kB",
        results.len(),
        results.first().map_or(0, |r| r.seed),
        results.last().map_or(0, |r| r.seed),
        began.elapsed().as_secs_f64(),
        failed.len(),
        results.iter().map(|r| r.lines).sum::<usize>(),
        results.iter().map(|r| r.repeats).sum::<usize>(),
        rec.len(),
        percentile(&rec, 0.5),
        percentile(&rec, 0.99),
        rec.last().copied().unwrap_or(f64::NAN),
        results.iter().map(|r| r.max_rss_kb).max().unwrap_or(0),
    ));
    assert!(
        failed.is_empty(),
        "chaos: seeds {failed:?} failed (each printed above; replay: make chaos SEED=N)"
    );
}
