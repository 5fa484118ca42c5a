//! An upgrade from agents whose checkpoints hold FNV-1a fingerprints (every
//! one before `fingerprint_hash`): started on such a checkpoint, the agent
//! ships every line after it exactly once and none before it, and so does
//! the next agent started on the checkpoint it writes, including a stopped
//! container's fingerprints, which keep FNV-1a until its lines come again.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);
const MS: i64 = 1_000_000;

/// The fingerprint hash of earlier agents, written out here apart from the
/// agent's copy: FNV-1a over the length, the truncated flag (never set
/// here) and the first and last 32 bytes (all of a message up to 64).
fn fnv1a(msg: &str) -> u64 {
    let msg = msg.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let ends: Vec<u8> =
        if msg.len() <= 64 { msg.to_vec() } else { [&msg[..32], &msg[msg.len() - 32..]].concat() };
    for b in (msg.len() as u64).to_le_bytes().into_iter().chain([0]).chain(ends) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A line of at least 65 bytes: its hash reads its ends only.
fn long(tag: &str) -> String {
    format!("{tag} {} {tag}", "-".repeat(70))
}

/// One stream of a container's log as the test writes it.
struct Lines {
    stream: Stream,
    /// (timestamp, message), in log order.
    lines: Vec<(i64, String)>,
}

impl Lines {
    fn write(&self, d: &Double, id: &str) {
        for (ts, m) in &self.lines {
            d.write_at(id, self.stream, *ts, format!("{m}\n").as_bytes());
        }
    }

    /// The fingerprint an earlier agent saved for the line at `i`, as JSON:
    /// `[ts, stream, index among equal timestamps, FNV-1a]`.
    fn fingerprint(&self, i: usize) -> serde_json::Value {
        let (ts, m) = &self.lines[i];
        let occ = self.lines[..i].iter().filter(|(t, _)| t == ts).count();
        let stream = if self.stream == Stream::Stdout { 1 } else { 2 };
        serde_json::json!([ts, stream, occ, fnv1a(m)])
    }
}

/// `stdout` and `stderr` of one container, whose lines up to `upto` (per
/// stream) an earlier agent shipped: its checkpoint entry.
fn entry(name: &str, out: &Lines, err: &Lines, upto: [usize; 2], drained: bool) -> serde_json::Value {
    let last_ts = out.lines[upto[0]].0.max(err.lines[upto[1]].0);
    serde_json::json!({
        "name": format!("/{name}"),
        "drained": drained,
        "resume": {
            "start_since": out.lines[0].0 - 60_000 * MS,
            "last_ts": last_ts,
            "open_lines": [null, null, null],
            "newest": [null, out.fingerprint(upto[0]), err.fingerprint(upto[1])],
        },
    })
}

/// Lines of `name` around a group of equal timestamps: `before` lines, then
/// `group` stamped alike (long and short, two of them the same text), then
/// `after` lines, from `t0` on.
fn log(name: &str, stream: Stream, t0: i64) -> Lines {
    let g = t0 + 500 * MS;
    let mut lines: Vec<(i64, String)> =
        (0..3).map(|i| (t0 + i * 100 * MS, format!("{name} before {i}"))).collect();
    for m in [
        long(&format!("{name} g0")),
        format!("{name} g1"),
        long(&format!("{name} g2")),
        long(&format!("{name} g2")),
    ] {
        lines.push((g, m));
    }
    lines.push((g, format!("{name} g3")));
    lines.extend((0..3).map(|i| (g + (i + 1) * 100 * MS, format!("{name} after {i}"))));
    Lines { stream, lines }
}

/// How many times each message was shipped.
fn counts(agent: &Agent) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for r in read_output(&agent.output) {
        *n.entry(r.message).or_default() += 1;
    }
    n
}

/// Each message of `want` shipped as many times as it is there (some lines
/// repeat a text), waiting for them, and those of `never` only as often.
fn assert_shipped(agent: &Agent, want: &[String], never: &[String]) {
    let mut expected: BTreeMap<&str, usize> = never.iter().map(|m| (m.as_str(), 0)).collect();
    for m in want {
        *expected.entry(m).or_default() += 1;
    }
    let shipped = |n: &BTreeMap<String, usize>, m: &str| n.get(m).copied().unwrap_or(0);
    let all_there = wait_for(T, || {
        let n = counts(agent);
        expected.iter().all(|(m, k)| shipped(&n, m) >= *k)
    });
    // A repeat would come before the later lines it precedes in the log;
    // leave time for one anyway.
    std::thread::sleep(Duration::from_millis(500));
    let n = counts(agent);
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(m, k)| shipped(&n, m) != **k)
        .map(|(m, k)| format!("{m:?} shipped {} times, not {k}", shipped(&n, m)))
        .collect();
    assert!(all_there && wrong.is_empty(), "{wrong:#?}\n{}", agent.stderr());
}

fn messages(lines: &Lines, range: std::ops::Range<usize>) -> Vec<String> {
    lines.lines[range].iter().map(|(_, m)| m.clone()).collect()
}

#[test]
fn an_fnv1a_checkpoint_resumes_without_loss_or_repeats_and_so_does_the_next() {
    let dir = TempDir::new("upgrade");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let t0 = docker_double::time::now_ns() - 20_000 * MS;
    // `live` runs; `idle` stopped after an earlier agent shipped all of its
    // log, and is started again only after the upgraded agent's restart.
    let live = d.create_and_start(ContainerSpec::new("live"));
    let (live_out, live_err) =
        (log("live", Stream::Stdout, t0), log("live-err", Stream::Stderr, t0 + 7 * MS));
    live_out.write(&d, &live);
    live_err.write(&d, &live);
    let idle = d.create_and_start(ContainerSpec::new("idle"));
    let (idle_out, idle_err) = (log("idle", Stream::Stdout, t0), log("idle-err", Stream::Stderr, t0));
    idle_out.write(&d, &idle);
    idle_err.write(&d, &idle);
    d.stop(&idle);
    let last = idle_out.lines.len() - 1;

    // Shipped before the upgrade: of `live`, stdout up to g1, inside its
    // group of equal timestamps, and stderr up to the first of the two g2
    // (the same text); all of `idle`.
    let state = dir.0.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let file = serde_json::json!({
        "version": 1,
        "first_run_at": t0 - 3_600_000 * MS,
        "containers": {
            &live: entry("live", &live_out, &live_err, [4, 5], false),
            &idle: entry("idle", &idle_out, &idle_err, [last, last], true),
        },
    });
    std::fs::write(state.join("checkpoints.json"), file.to_string()).unwrap();

    let agent = Agent::start(d.socket(), &dir.0, &[]);
    let mut want =
        [messages(&live_out, 5..live_out.lines.len()), messages(&live_err, 6..live_err.lines.len())].concat();
    let never: Vec<String> = [
        messages(&live_out, 0..5),
        messages(&live_err, 0..6),
        messages(&idle_out, 0..idle_out.lines.len()),
        messages(&idle_err, 0..idle_err.lines.len()),
    ]
    .concat();
    assert_shipped(&agent, &want, &never);
    assert!(agent.stop("TERM").success());

    // What it wrote: this version's hash, but FNV-1a still for the stopped
    // container, whose lines did not come again.
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("checkpoints.json")).unwrap()).unwrap();
    assert_eq!(written["fingerprint_hash"], 2, "{written}");
    let newest = |id: &str| written["containers"][id]["resume"]["newest"].to_string();
    assert!(!newest(&live).contains("fnv1a"), "{written}");
    assert!(newest(&idle).matches(r#""fn":"fnv1a""#).count() == 2, "{written}");

    // The next start, from that checkpoint: new lines of `live`, and
    // `idle` started again, its old lines replayed to the agent.
    for i in 0..3 {
        d.write(&live, Stream::Stdout, format!("live next {i}").as_bytes());
        d.write(&live, Stream::Stderr, format!("live-err next {i}").as_bytes());
    }
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    d.start_again(&idle);
    assert!(d.wait_until(T, |s| s.log_streams_open_by_container.get(&idle).copied().unwrap_or(0) == 1));
    for i in 0..3 {
        d.write(&idle, Stream::Stdout, format!("idle next {i}").as_bytes());
        d.write(&idle, Stream::Stderr, format!("idle-err next {i}").as_bytes());
    }
    for n in ["live", "live-err", "idle", "idle-err"] {
        want.extend((0..3).map(|i| format!("{n} next {i}")));
    }
    assert_shipped(&agent, &want, &never);
}
