//! dockerd itself restarted under the agent. That cannot share a daemon
//! with other tests, so this binary starts its own through
//! `tests/docker/up.sh` (own LC_DOCKER_DIR) with `--live-restore`: the
//! containers keep running while dockerd is down (their output waits in
//! the shim's pipes) and dockerd picks them up again when it is back.
//! `--restart always` would instead end and restart every container,
//! which tests the agent's restart handling, not a daemon outage.
//! The daemon is stopped and purged on drop, also when the test panics.

mod common;
mod real_docker;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::TempDir;
use real_docker::*;

/// A private dockerd of this test process.
struct OwnDaemon {
    dir: PathBuf,
    daemon: Daemon,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/docker").join(name)
}

impl OwnDaemon {
    fn start() -> OwnDaemon {
        // Short: dockerd's containerd sockets live under it (108-byte limit).
        let dir = PathBuf::from(format!("/tmp/lcdr-{}", std::process::id()));
        let d = OwnDaemon { daemon: Daemon { socket: dir.join("docker.sock") }, dir };
        d.up();
        d
    }

    fn up(&self) {
        let r = run_with_timeout(
            Command::new(script("up.sh"))
                .env("LC_DOCKER_DIR", &self.dir)
                .env("LC_DOCKERD_FLAGS", "--live-restore"),
            Duration::from_secs(180),
        );
        if let Err(e) = r {
            panic!("tests/docker/up.sh for {}: {e}", self.dir.display());
        }
    }

    /// Stops dockerd alone; containers keep running (live restore).
    fn stop_daemon(&self) {
        let r = run_with_timeout(
            Command::new(script("down.sh")).env("LC_DOCKER_DIR", &self.dir).arg("--daemon-only"),
            Duration::from_secs(60),
        );
        if let Err(e) = r {
            panic!("tests/docker/down.sh --daemon-only: {e}");
        }
    }
}

impl Drop for OwnDaemon {
    fn drop(&mut self) {
        let r = run_with_timeout(
            Command::new(script("down.sh")).env("LC_DOCKER_DIR", &self.dir).arg("--purge"),
            Duration::from_secs(120),
        );
        if let Err(e) = r {
            say(&format!("warning: tests/docker/down.sh --purge for {}: {e}", self.dir.display()));
        }
    }
}

#[test]
fn dockerd_restarted_under_the_agent_then_every_stream_resumes_with_nothing_lost() {
    // Only where Docker tests run at all (dockerd installed, root...).
    if daemon("dockerd_restarted").is_none() {
        return;
    }
    let own = OwnDaemon::start();
    let d = &own.daemon;
    let g = Group::new(d, "dres");
    let dir = TempDir::new("e2e-dres");
    let agent = g.agent(&dir.0, &["--rotate-after", "1s"]);
    let base = settled_fds(&agent);
    const TOTAL: u64 = 900;
    let names: Vec<(String, u64)> = (0..4).map(|k| (g.name(&format!("d{k}")), TOTAL)).collect();
    for (k, (n, total)) in names.iter().enumerate() {
        g.run(&format!("d{k}"), &[], &numbered(n, *total, 50));
    }
    let mut out = Output::new(&agent.output);
    let some = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        let o = out.refresh();
        names.iter().all(|(n, _)| distinct(&o.lines, n) >= 100)
    });
    assert!(some, "the streams never started; agent stderr:\n{}", agent.stderr());

    let down_at = Instant::now();
    own.stop_daemon();
    let saw_down = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        agent.metric("log_capturer_docker_up") == 0.0
    });
    let (status, _) = agent.get("/healthz");
    assert!(saw_down, "agent never reported docker_up 0; stderr:\n{}", agent.stderr());
    assert_eq!(status, 503, "/healthz while Docker is down");
    // Down long enough for several rotation periods and retries.
    let shipped_while_down = out.refresh().lines.len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(agent.metric("log_capturer_active_streams"), 0.0, "streams open while dockerd is down");
    assert_eq!(agent.threads(), 1);
    own.up();
    let down_for = down_at.elapsed();
    let saw_up = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        agent.metric("log_capturer_docker_up") == 1.0
    });
    assert!(saw_up, "agent never reported docker_up 1 again; stderr:\n{}", agent.stderr());
    for (n, _) in &names {
        assert_eq!(state(d, n), "running", "{n} did not survive the daemon restart (live restore)");
    }

    let just: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let exited = wait_exited(d, &just, Duration::from_secs(240));
    // Once they have exited their logs are final.
    let stored: Vec<Vec<u64>> = names.iter().map(|(n, _)| logged_numbers(d, n)).collect();
    let complete = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        let o = out.refresh();
        names.iter().zip(&stored).all(|((n, _), s)| distinct(&o.lines, n) >= s.len())
    });
    let quiet = wait_quiet(&agent, Duration::from_secs(30));
    out.refresh();
    let m = agent.metrics();
    let report = format!(
        "dockerd down {:.1} s; {shipped_while_down} lines shipped when the agent saw it go, {} in all; \
         reconnects docker_down {}, duplicates {:?}",
        down_for.as_secs_f64(),
        out.lines.len(),
        m["log_capturer_stream_reconnects_total{reason=\"docker_down\"}"],
        names.iter().map(|(n, _)| duplicates(&out.lines, n)).collect::<Vec<_>>(),
    );
    say(&report);
    // The agent can only ship what dockerd stored, and across a
    // live-restore restart dockerd might itself drop a line it had read
    // from the container but not yet written. One run in seven here missed
    // one line (before this check existed): `docker logs` tells whose loss
    // it is.
    for ((n, total), stored) in names.iter().zip(&stored) {
        let dockerd_lost: Vec<u64> = (1..=*total).filter(|i| stored.binary_search(i).is_err()).collect();
        let mut shipped: Vec<u64> = seqs_by_stream(&out.lines, n).into_values().flatten().collect();
        shipped.sort_unstable();
        let agent_lost: Vec<u64> =
            stored.iter().copied().filter(|i| shipped.binary_search(i).is_err()).collect();
        if !dockerd_lost.is_empty() {
            say(&format!("{n}: dockerd itself lost lines {dockerd_lost:?} (not in docker logs)"));
        }
        assert!(
            agent_lost.is_empty(),
            "{n}: the agent lost {agent_lost:?}, which docker logs holds; {report}\nagent stderr:\n{}",
            agent.stderr()
        );
        if dockerd_lost.is_empty() {
            check_none_lost(&out.lines, n, *total)
                .unwrap_or_else(|e| panic!("{e}; {report}\nagent stderr:\n{}", agent.stderr()));
        }
    }
    assert!(quiet, "quiet {quiet}; {report}");
    for (n, _) in &names {
        let d = duplicates(&out.lines, n);
        assert_eq!(d, 0, "{n}: {d} lines repeated; {report}");
        let by = seqs_by_stream(&out.lines, n);
        for (s, seqs) in &by {
            let w = seqs.windows(2).find(|w| w[0] >= w[1]);
            assert!(w.is_none(), "{n}/{s}: out of order {w:?}; {report}");
        }
    }
    assert!(exited && complete, "exited {exited} complete {complete}; {report}");
    // Nothing leaked across the outage: back to the fds it had at start.
    let back = wait_until(Duration::from_secs(15), Duration::from_millis(100), || agent.fds() == base);
    assert!(back, "fds did not return to {base}: {:?}", agent.fd_list());
    assert_eq!(agent.threads(), 1);
}
