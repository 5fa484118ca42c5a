//! Resume points against Docker's clock (issue 10, item 4): a checkpoint
//! later than the daemon's clock, a clock stepped back under a running
//! agent or while it was stopped, a daemon clock ahead of or behind the
//! agent's, and checkpoint values the agent never writes.
//!
//! The double's clock (`Double::set_clock_offset`) stamps its log lines,
//! its `Date` headers and its container times alike, as one host clock
//! does for dockerd; the agent runs on the host's own clock.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);
const DAY_NS: i64 = 86_400 * 1_000_000_000;
const FUTURE: &str = r#"log_capturer_checkpoints_rejected_total{reason="future"}"#;
const INVALID: &str = r#"log_capturer_checkpoints_rejected_total{reason="invalid"}"#;

fn now_ns() -> i64 {
    docker_double::time::now_ns()
}

/// Write the state directory's checkpoint file by hand: one container.
fn forge_checkpoint(dir: &Path, id: &str, name: &str, resume: serde_json::Value) {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let file = serde_json::json!({
        "version": 1,
        "first_run_at": now_ns() - 3600 * 1_000_000_000,
        "containers": { id: { "name": name, "drained": false, "resume": resume } },
    });
    std::fs::write(state.join("checkpoints.json"), file.to_string()).unwrap();
}

/// How many times each message appears in the output.
fn count(agent: &Agent, message: &str) -> usize {
    read_output(&agent.output).iter().filter(|r| r.message == message).count()
}

fn shipped(agent: &Agent, messages: &[String]) -> bool {
    messages.iter().all(|m| count(agent, m) >= 1)
}

fn lines(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix} {i}")).collect()
}

fn write_all(d: &Double, id: &str, msgs: &[String]) {
    for m in msgs {
        d.write(id, Stream::Stdout, m.as_bytes());
    }
}

fn one_stream_open(d: &Double, id: &str) -> bool {
    d.wait_until(T, |s| s.log_streams_open_by_container.get(id).copied().unwrap_or(0) == 1)
}

#[test]
fn a_checkpoint_a_day_ahead_of_dockers_clock_is_reported_and_its_lines_shipped() {
    let dir = TempDir::new("clock-fwd");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let id = d.create_and_start(ContainerSpec::new("fut"));
    let before = lines("before", 3);
    write_all(&d, &id, &before);
    // Its newest line a day from now: every line stamped before it would
    // be taken for one already shipped, and `since` would filter them all.
    let ahead = now_ns() + DAY_NS;
    forge_checkpoint(
        &dir.0,
        &id,
        "/fut",
        serde_json::json!({
            "start_since": now_ns() - 60 * 1_000_000_000,
            "last_ts": ahead,
            "newest": [null, [ahead, 1, 0, 42], null],
        }),
    );
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    assert!(one_stream_open(&d, &id), "{}", agent.stderr());
    let after = lines("after", 3);
    write_all(&d, &id, &after);
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    assert!(
        wait_for(T, || shipped(&agent, &all)),
        "lines lost: {:?}\nstderr:\n{}",
        read_output(&agent.output).iter().map(|r| &r.message).collect::<Vec<_>>(),
        agent.stderr()
    );
    let err = agent.stderr();
    assert!(err.contains("later than Docker's clock") && err.contains("fut"), "{err}");
    assert!(err.contains("lines already shipped will be repeated"), "{err}");
    assert_eq!(err.matches("later than Docker's clock").count(), 1, "reported once: {err}");
    assert_eq!(agent.metric(FUTURE), 1.0);
    assert_eq!(agent.metric(INVALID), 0.0);
    // Nothing repeated here: none of these lines had been shipped.
    for m in &all {
        assert_eq!(count(&agent, m), 1, "{m}");
    }
}

#[test]
fn a_clock_stepped_back_while_the_agent_was_stopped_loses_nothing() {
    let dir = TempDir::new("clock-back-stopped");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    // The board booted a day ahead; NTP steps it back while the agent is
    // stopped, and the container writes on.
    d.set_clock_offset(DAY_NS);
    let id = d.create_and_start(ContainerSpec::new("boot"));
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    assert!(one_stream_open(&d, &id));
    let early = lines("early", 3);
    write_all(&d, &id, &early);
    assert!(wait_for(T, || shipped(&agent, &early)), "{}", agent.stderr());
    assert!(agent.stop("TERM").success());
    d.set_clock_offset(0);
    let late = lines("late", 3);
    write_all(&d, &id, &late);

    let agent = Agent::start(d.socket(), &dir.0, &[]);
    assert!(one_stream_open(&d, &id));
    let later = lines("later", 3);
    write_all(&d, &id, &later);
    let new: Vec<String> = late.iter().chain(&later).cloned().collect();
    assert!(wait_for(T, || shipped(&agent, &new)), "lines lost after the step:\n{}", agent.stderr());
    let err = agent.stderr();
    assert!(err.contains("later than Docker's clock") && err.contains("boot"), "{err}");
    assert_eq!(agent.metric(FUTURE), 1.0);
    for m in &new {
        assert_eq!(count(&agent, m), 1, "{m}");
    }
    // The lines from before the step were read again: repeated, said so.
    for m in &early {
        assert!(count(&agent, m) <= 2, "{m}");
    }
}

#[test]
fn a_clock_stepped_back_under_a_running_agent_loses_nothing_across_reopens() {
    let dir = TempDir::new("clock-back-live");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    d.set_clock_offset(DAY_NS);
    let id = d.create_and_start(ContainerSpec::new("live"));
    let agent = Agent::start(d.socket(), &dir.0, &["--rotate-after", "700ms"]);
    assert!(one_stream_open(&d, &id));
    let early = lines("early", 5);
    write_all(&d, &id, &early);
    assert!(wait_for(T, || shipped(&agent, &early)), "{}", agent.stderr());
    d.set_clock_offset(0);
    // Written across several rotations: each reopen must still ask for
    // lines stamped by the stepped-back clock.
    let late = lines("late", 12);
    let rotations = || agent.metric(r#"log_capturer_stream_rotations_total{reason="age"}"#);
    for chunk in late.chunks(3) {
        write_all(&d, &id, chunk);
        let seen = rotations();
        assert!(wait_for(T, || rotations() > seen), "no rotation: {}", agent.stderr());
    }
    assert!(
        wait_for(T, || shipped(&agent, &late)),
        "lines lost after the step: {:?}\nstderr:\n{}",
        late.iter().filter(|m| count(&agent, m) == 0).collect::<Vec<_>>(),
        agent.stderr()
    );
    // Repeats are allowed (a reopen that saw only the old clock reads the
    // whole log again), losses are not; the next lines arrive once.
    let more = lines("more", 3);
    write_all(&d, &id, &more);
    assert!(wait_for(T, || shipped(&agent, &more)), "{}", agent.stderr());
    std::thread::sleep(Duration::from_millis(1500));
    for m in &more {
        assert_eq!(count(&agent, m), 1, "{m}\n{}", agent.stderr());
    }
}

#[test]
fn a_daemon_clock_ahead_of_or_behind_the_agents_ships_exactly_once() {
    for offset in [DAY_NS, -DAY_NS] {
        let dir = TempDir::new("clock-skew");
        let d = Double::start(Config::in_temp_dir()).unwrap();
        d.set_clock_offset(offset);
        let id = d.create_and_start(ContainerSpec::new("skew"));
        let agent = Agent::start(d.socket(), &dir.0, &[]);
        assert!(one_stream_open(&d, &id));
        let first = lines("first", 3);
        write_all(&d, &id, &first);
        assert!(wait_for(T, || shipped(&agent, &first)), "offset {offset}: {}", agent.stderr());
        assert!(agent.stop("TERM").success());
        let second = lines("second", 3);
        write_all(&d, &id, &second);
        let agent = Agent::start(d.socket(), &dir.0, &[]);
        assert!(one_stream_open(&d, &id));
        let third = lines("third", 3);
        write_all(&d, &id, &third);
        let all: Vec<String> = first.iter().chain(&second).chain(&third).cloned().collect();
        assert!(wait_for(T, || shipped(&agent, &all)), "offset {offset}: {}", agent.stderr());
        std::thread::sleep(Duration::from_millis(500));
        for m in &all {
            assert_eq!(count(&agent, m), 1, "offset {offset}: {m}\n{}", agent.stderr());
        }
        assert_eq!(agent.metric(FUTURE), 0.0, "offset {offset}: {}", agent.stderr());
        assert!(!agent.stderr().contains("Docker's clock"), "offset {offset}: {}", agent.stderr());
    }
}

#[test]
fn a_negative_start_since_is_rejected_with_a_message() {
    let dir = TempDir::new("clock-neg");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let id = d.create_and_start(ContainerSpec::new("neg"));
    let before = lines("before", 2);
    write_all(&d, &id, &before);
    forge_checkpoint(&dir.0, &id, "/neg", serde_json::json!({ "start_since": -5, "last_ts": null }));
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    assert!(one_stream_open(&d, &id));
    let after = lines("after", 2);
    write_all(&d, &id, &after);
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    assert!(wait_for(T, || shipped(&agent, &all)), "{}", agent.stderr());
    let err = agent.stderr();
    assert!(
        err.contains("checkpoint is invalid: start_since -5 is before 1970") && err.contains("neg"),
        "{err}"
    );
    assert!(err.contains("reading its whole retained log again"), "{err}");
    assert_eq!(agent.metric(INVALID), 1.0);
    assert_eq!(agent.metric(FUTURE), 0.0);
}

#[test]
fn lines_dockerd_filtered_out_of_an_open_stream_after_a_step_back_are_shipped() {
    // dockerd 20.10 filters every line of a stream by its `since`, also
    // the lines written while it is open. A clock step back that lands
    // before the open stream's `since` hides the lines stamped between the
    // two; once the clock passes the `since` again, lines come, stamped
    // before the newest one shipped (chaos seed 18000).
    let dir = TempDir::new("clock-back-filtered");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let id = d.create_and_start(ContainerSpec::new("filt"));
    // No rotation and no idle reopen: the stream open now stays open.
    let agent = Agent::start(d.socket(), &dir.0, &["--rotate-after", "600s", "--idle-timeout", "600s"]);
    assert!(one_stream_open(&d, &id), "{}", agent.stderr());
    // The stream's `since` is no later than this.
    let opened = now_ns();
    let before = lines("before", 3);
    write_all(&d, &id, &before);
    assert!(wait_for(T, || shipped(&agent, &before)), "{}", agent.stderr());
    d.set_clock_offset(-60 * 1_000_000_000);
    let hidden = lines("hidden", 3);
    write_all(&d, &id, &hidden);
    // The stepped-back clock reaches the stream's `since` (stamped as it
    // would stamp them then, without waiting a minute).
    let after = lines("after", 3);
    for (i, m) in after.iter().enumerate() {
        d.write_at(&id, Stream::Stdout, opened + i as i64 + 1, format!("{m}\n").as_bytes());
    }
    let all: Vec<String> = before.iter().chain(&hidden).chain(&after).cloned().collect();
    assert!(
        wait_for(T, || shipped(&agent, &all)),
        "lines lost after the step: {:?}\nstderr:\n{}",
        all.iter().filter(|m| count(&agent, m) == 0).collect::<Vec<_>>(),
        agent.stderr()
    );
    // The stream that saw the step gave way to one from the start of the
    // log, which drops what was shipped and delivers what was not.
    assert_eq!(agent.metric(r#"log_capturer_stream_reconnects_total{reason="catchup"}"#), 1.0);
    let more = lines("more", 2);
    for (i, m) in more.iter().enumerate() {
        d.write_at(&id, Stream::Stdout, opened + 10 + i as i64, format!("{m}\n").as_bytes());
    }
    assert!(wait_for(T, || shipped(&agent, &more)), "{}", agent.stderr());
    for m in all.iter().chain(&more) {
        assert_eq!(count(&agent, m), 1, "{m}\n{}", agent.stderr());
    }
}

#[test]
fn a_forward_step_of_dockers_clock_is_not_taken_for_a_step_back() {
    // The stream's head carried a `Date` before the step; the lines after
    // it are stamped 17 s later. The next stream resumes from them: they
    // show Docker's clock, the old `Date` does not (chaos seed 4).
    let dir = TempDir::new("clock-fwd-step");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let id = d.create_and_start(ContainerSpec::new("fwd"));
    let agent = Agent::start(d.socket(), &dir.0, &["--rotate-after", "1s"]);
    assert!(one_stream_open(&d, &id), "{}", agent.stderr());
    let rotations = || agent.metric(r#"log_capturer_stream_rotations_total{reason="age"}"#);
    let early = lines("early", 3);
    write_all(&d, &id, &early);
    assert!(wait_for(T, || shipped(&agent, &early)), "{}", agent.stderr());
    // Step right after a rotation, so that the stream open now had its
    // head (its `Date`) before the step and rotates after it.
    let seen = rotations();
    assert!(wait_for(T, || rotations() > seen), "no rotation: {}", agent.stderr());
    d.set_clock_offset(17 * 1_000_000_000);
    let late = lines("late", 3);
    write_all(&d, &id, &late);
    assert!(wait_for(T, || shipped(&agent, &late)), "{}", agent.stderr());
    let seen = rotations();
    assert!(wait_for(T, || rotations() > seen + 1.0), "no rotation: {}", agent.stderr());
    let more = lines("more", 3);
    write_all(&d, &id, &more);
    assert!(wait_for(T, || shipped(&agent, &more)), "{}", agent.stderr());
    assert_eq!(agent.metric(FUTURE), 0.0, "{}", agent.stderr());
    for m in early.iter().chain(&late).chain(&more) {
        assert_eq!(count(&agent, m), 1, "{m}\n{}", agent.stderr());
    }
}
