//! The `FROM scratch` image (deploy/Dockerfile, `make image`) on a real
//! dockerd, run as the README says: the Docker socket mounted, the state
//! directory on a named volume. It must ship every line of its sibling
//! containers exactly once and none of its own (its container carries the
//! same label as the siblings, so only its own-container detection keeps
//! it out), stop cleanly on `docker stop` as PID 1, and keep its
//! checkpoints on the volume across a replaced container.
//!
//! `make image-test` builds the image and runs this with `LC_IMAGE` set;
//! without `LC_IMAGE` it says SKIPPED and passes (`make test` does not
//! build images). The daemon is found as in `docker_e2e.rs`, and every
//! container runs with `--network none`.

mod common;
mod real_docker;

use std::time::{Duration, Instant};

use common::TempDir;
use real_docker::*;

/// Deadline for the output to catch up with what containers wrote.
const CATCH_UP: Duration = Duration::from_secs(60);
/// Deadline for containers to write their fixed number of lines.
const CONTAINERS_DONE: Duration = Duration::from_secs(120);

/// The image under test, or None (after a line on stderr) without `LC_IMAGE`.
fn image(test: &str) -> Option<String> {
    match std::env::var("LC_IMAGE") {
        Ok(i) if !i.is_empty() => Some(i),
        _ => {
            say(&format!(
                "\nSKIPPED: LC_IMAGE is not set (`make image-test` builds the image and runs {test})"
            ));
            None
        }
    }
}

/// A named volume, removed on drop (declare it before the `Group`, so the
/// containers using it are removed first).
struct Volume {
    daemon: Daemon,
    name: String,
}

impl Volume {
    fn new(d: &Daemon, name: String) -> Volume {
        let _ = d.try_docker(&["volume", "rm", "-f", &name]);
        d.docker(&["volume", "create", &name]);
        Volume { daemon: d.clone(), name }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        if let Err(e) = self.daemon.try_docker(&["volume", "rm", "-f", &self.name]) {
            say(&format!("warning: could not remove volume {}: {e}", self.name));
        }
    }
}

/// `docker run -d` of the image as the README's install section does,
/// filtered to the group's label (which its own container carries too);
/// waits until it says Docker is up. Returns (name, container id).
fn run_agent(g: &Group, image: &str, short: &str, volume: &Volume, extra: &[&str]) -> (String, String) {
    let d = &g.daemon;
    let name = g.name(short);
    let label = g.label();
    let sock = format!("{}:/var/run/docker.sock", d.socket.display());
    let state = format!("{}:/var/lib/log-capturer", volume.name);
    let mut args = vec!["run", "-d", "--network", "none", "--label", &label, "--name", &name];
    args.extend_from_slice(&["-v", &sock, "-v", &state]);
    args.extend_from_slice(extra);
    args.extend_from_slice(&[image, "--state-dir", "/var/lib/log-capturer", "--include-label", &label]);
    let id = d.docker(&args).trim().to_owned();
    let up = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        logs_both(d, &name).contains("Docker is up")
    });
    assert!(up, "the agent image did not start: {}", logs_both(d, &name));
    (name, id)
}

/// The records the agent wrote to its stdout so far.
fn records(d: &Daemon, agent: &str, dir: &TempDir) -> Vec<Line> {
    let file = dir.0.join(format!("{agent}.jsonl"));
    std::fs::write(&file, d.docker(&["logs", agent])).unwrap();
    Output::new(&file).refresh().lines.clone()
}

/// `docker stop` (SIGTERM to the agent as PID 1): it must exit 0, within
/// its 2 s promise plus slack, not be killed at docker's 10 s timeout.
fn stop_cleanly(d: &Daemon, agent: &str) {
    let t = Instant::now();
    d.docker(&["stop", "-t", "10", agent]);
    let took = t.elapsed();
    let code = d.docker(&["inspect", "-f", "{{.State.ExitCode}}", agent]).trim().to_owned();
    assert_eq!(code, "0", "the agent did not exit 0 on docker stop; its log:\n{}", logs_both(d, agent));
    assert!(took < Duration::from_secs(8), "docker stop took {took:?}");
}

fn assert_not_own(lines: &[Line], name: &str, id: &str) {
    let own: Vec<&Line> = lines.iter().filter(|l| l.container == name || l.container_id == id).collect();
    assert!(own.is_empty(), "the agent shipped {} lines of its own container, first {:?}", own.len(), own[0]);
}

#[test]
fn image_ships_its_siblings_exactly_once_and_never_itself() {
    let Some(image) = image("image_ships_its_siblings") else { return };
    let Some(d) = daemon("image_ships_its_siblings") else { return };
    let volume = Volume::new(&d, format!("lc-image-state-{}", std::process::id()));
    let g = Group::new(&d, "image");
    let dir = TempDir::new("image");

    let size: u64 = d.docker(&["image", "inspect", "-f", "{{.Size}}", &image]).trim().parse().unwrap();
    say(&format!("\nimage {image}: {size} bytes ({:.1} MiB)", size as f64 / (1 << 20) as f64));
    let shell =
        d.try_docker(&["run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", &image, "-c", "true"]);
    assert!(shell.is_err(), "the image has a shell");

    // A private cgroup namespace hides the container's cgroup path from
    // /proc/self/cgroup (as cgroup v2 does by default): the own-container
    // detection must not depend on it.
    let (agent, agent_id) = run_agent(&g, &image, "agent", &volume, &["--cgroupns", "private"]);
    let sibs: Vec<(String, u64)> = vec![(g.name("plain"), 300), (g.name("tty"), 300), (g.name("fast"), 300)];
    g.run("plain", &[], &numbered(&sibs[0].0, 300, 100));
    g.run("tty", &["-t"], &numbered(&sibs[1].0, 300, 100));
    g.run("fast", &[], &numbered(&sibs[2].0, 300, 0));
    let names: Vec<String> = sibs.iter().map(|(n, _)| n.clone()).collect();
    let exited = wait_exited(&d, &names, CONTAINERS_DONE);
    let complete = wait_until(CATCH_UP, Duration::from_millis(500), || {
        let lines = records(&d, &agent, &dir);
        sibs.iter().all(|(n, total)| distinct(&lines, n) as u64 >= *total)
    });
    assert!(exited && complete, "exited {exited} complete {complete}; agent log:\n{}", logs_both(&d, &agent));
    // Stopped, it can write nothing more: its whole output can be judged.
    stop_cleanly(&d, &agent);
    let lines = records(&d, &agent, &dir);
    for (n, total) in &sibs {
        check_exactly_once(&lines, n, *total).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_not_own(&lines, &agent, &agent_id);

    // While no agent runs, a container logs and exits. The agent is then
    // replaced (`docker rm` + `docker run` on the same volume, as an
    // upgrade does): with its checkpoints it ships that container from its
    // creation and nothing of the three before again; without them it
    // would be a first run, which leaves stopped containers alone.
    let offline = g.name("offline");
    g.run("offline", &[], &numbered(&offline, 100, 0));
    assert!(wait_exited(&d, std::slice::from_ref(&offline), CONTAINERS_DONE));
    d.docker(&["rm", &agent]);
    let (agent2, agent2_id) = run_agent(&g, &image, "agent2", &volume, &[]);
    let later = g.name("later");
    g.run("later", &[], &numbered(&later, 100, 100));
    let exited = wait_exited(&d, std::slice::from_ref(&later), CONTAINERS_DONE);
    let complete = wait_until(CATCH_UP, Duration::from_millis(500), || {
        let lines = records(&d, &agent2, &dir);
        distinct(&lines, &offline) >= 100 && distinct(&lines, &later) >= 100
    });
    assert!(
        exited && complete,
        "exited {exited} complete {complete}; agent log:\n{}",
        logs_both(&d, &agent2)
    );
    stop_cleanly(&d, &agent2);
    let lines = records(&d, &agent2, &dir);
    check_exactly_once(&lines, &offline, 100).unwrap_or_else(|e| panic!("{e}"));
    check_exactly_once(&lines, &later, 100).unwrap_or_else(|e| panic!("{e}"));
    for n in &names {
        let again = lines.iter().filter(|l| &l.container == n).count();
        assert_eq!(again, 0, "the replaced agent shipped {again} lines of {n} again: checkpoints lost?");
    }
    assert_not_own(&lines, &agent2, &agent2_id);
}

/// A static binary resolves names without NSS modules for `files` and
/// `dns` (glibc has both built in); an IP literal needs no lookup at all.
/// In the scratch image both must get as far as connecting: nothing
/// listens on the container's own loopback, so exit 2 with "cannot reach".
#[test]
fn image_resolves_docker_hosts_without_libraries() {
    let Some(image) = image("image_resolves_docker_hosts") else { return };
    let Some(d) = daemon("image_resolves_docker_hosts") else { return };
    for host in ["tcp://127.0.0.1:1", "tcp://localhost:1"] {
        let out = run_with_timeout(
            std::process::Command::new("docker").env("DOCKER_HOST", d.host()).args([
                "run",
                "--rm",
                "--network",
                "none",
                &image,
                "--docker-host",
                host,
            ]),
            Duration::from_secs(60),
        );
        let err = out.expect_err("the agent started without a Docker to talk to");
        assert!(err.contains("exit status: 2"), "{host}: {err}");
        assert!(err.contains("cannot reach Docker") && err.contains("Connection refused"), "{host}: {err}");
    }
}
