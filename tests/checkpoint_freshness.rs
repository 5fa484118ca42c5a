//! Checkpoints stay fresh whatever the disk does: with busy containers and
//! another process keeping the same filesystem busy with synced writes,
//! `kill -9` of the agent repeats at most about a second of lines after
//! the restart, and loses none.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(90);
const CONTAINERS: usize = 10;
/// Lines per second of each container: 2 000 in all.
const RATE: f64 = 200.0;
const LINES_EACH: u64 = 8_000;
/// Kills, spread over the run.
const KILLS: usize = 3;
/// What a kill may repeat: a second of lines (a fresh checkpoint begins
/// every 800 ms, and takes a few turns of the loop to write).
const MAX_REPEATS_PER_KILL: f64 = RATE * CONTAINERS as f64;

/// Three loops writing and syncing 32 MiB files in `dir`, in their own
/// process group so that they are stopped with their `dd`s.
struct DiskLoad(Child);

impl DiskLoad {
    fn start(dir: &std::path::Path) -> DiskLoad {
        let script = "for i in 1 2 3; do \
            (while :; do dd if=/dev/zero of=load$i bs=1M count=32 conv=fsync status=none; done) & \
            done; wait";
        let child = Command::new("sh")
            .args(["-c", script])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the disk load");
        DiskLoad(child)
    }
}

impl Drop for DiskLoad {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

fn seqs(agent_output: &std::path::Path) -> Vec<(String, u64)> {
    read_output(agent_output)
        .into_iter()
        .filter_map(|r| Some((r.container.clone(), r.message.split(' ').nth(1)?.parse().ok()?)))
        .collect()
}

#[test]
fn kill_9_under_disk_load_repeats_at_most_about_a_second() {
    let dir = TempDir::new("fresh");
    let _load = DiskLoad::start(&dir.0);
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let names: Vec<String> = (0..CONTAINERS).map(|i| format!("f{i}")).collect();
    for n in &names {
        let w = Writer { lines_per_sec: RATE, stderr_every: 4, line_len: 60, max_lines: Some(LINES_EACH) };
        d.create_and_start(ContainerSpec::new(n).writer(w));
    }
    let total = LINES_EACH * CONTAINERS as u64;
    let mut agent = Agent::start(d.socket(), &dir.0, &[]);
    let mut repeats = Vec::new();
    for k in 0..KILLS {
        // A moment in the run that is not a multiple of the checkpoint's
        // second.
        let after = Duration::from_millis(2_000 + 1_370 * k as u64);
        let t0 = Instant::now();
        let before = seqs(&agent.output).len();
        assert!(
            wait_until(T, Duration::from_millis(200), || t0.elapsed() >= after
                && seqs(&agent.output).len() > before),
            "{}",
            agent.stderr()
        );
        let output = agent.output.clone();
        let before_kill = seqs(&output).len();
        let st = agent.stop("KILL");
        assert!(!st.success());
        let written = seqs(&output);
        agent = Agent::start(d.socket(), &dir.0, &[]);
        // What the killed agent wrote is read again from the checkpoint on:
        // the repeats are the lines that come twice once the new agent
        // caught up with the killed one's last line of each container.
        let last: std::collections::HashMap<&str, u64> =
            written.iter().fold(Default::default(), |mut m, (c, s)| {
                let e = m.entry(c.as_str()).or_default();
                *e = (*e).max(*s);
                m
            });
        assert!(
            wait_until(T, Duration::from_millis(200), || {
                let now = seqs(&agent.output);
                last.iter().all(|(c, s)| now[written.len()..].iter().any(|(c2, s2)| c2 == c && s2 >= s))
            }),
            "the restarted agent did not catch up: {}",
            agent.stderr()
        );
        let now = seqs(&agent.output);
        let again =
            now[written.len()..].iter().filter(|(c, s)| last.get(c.as_str()).is_some_and(|l| s <= l)).count();
        eprintln!("kill {k}: {before_kill} lines before the kill, {again} repeated after the restart");
        repeats.push(again);
    }
    // Zero loss: every line of every container.
    let distinct =
        |recs: &[(String, u64)]| recs.iter().collect::<std::collections::HashSet<_>>().len() as u64;
    let all = wait_until(Duration::from_secs(120), Duration::from_millis(200), || {
        distinct(&seqs(&agent.output)) >= total
    });
    let recs = seqs(&agent.output);
    for n in &names {
        let mut mine: Vec<u64> = recs.iter().filter(|(c, _)| c == n).map(|(_, s)| *s).collect();
        mine.sort_unstable();
        mine.dedup();
        assert!(mine.iter().copied().eq(1..=LINES_EACH), "{n}: lines lost ({} distinct)", mine.len());
    }
    assert!(all, "{}", agent.stderr());
    let durable = agent.metric("log_capturer_checkpoint_durable_writes_total");
    assert!(durable >= 1.0, "no durable checkpoint written");
    eprintln!(
        "repeats per kill {repeats:?} at {} lines/s; the last agent's checkpoints held its loop up to {:.1} ms",
        RATE * CONTAINERS as f64,
        agent.metric("log_capturer_checkpoint_longest_block_seconds") * 1e3
    );
    for (k, r) in repeats.iter().enumerate() {
        assert!(
            *r as f64 <= MAX_REPEATS_PER_KILL,
            "kill {k} repeated {r} lines, more than {MAX_REPEATS_PER_KILL} (1 s at {} lines/s): {repeats:?}",
            RATE * CONTAINERS as f64
        );
    }
}
