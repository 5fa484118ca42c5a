//! What a hostile or unlucky neighbour must not be able to do: starve the
//! metrics port, hang start-up, read or write the state directory, or run
//! a second agent on it.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);

/// One request on a fresh connection, all of it (connect, answer) within
/// `within`: (status, whole response), or why not.
fn probe(addr: SocketAddr, request: &str, within: Duration) -> Result<(u16, String), String> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, within).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(within)).unwrap();
    s.write_all(request.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| format!("no answer after {:?}: {e}", start.elapsed()))?;
    if start.elapsed() > within {
        return Err(format!("answered after {:?}", start.elapsed()));
    }
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, resp))
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// A client sending a request head one byte every `every`, reconnecting
/// whenever the agent closes it, until `stop`.
fn slowloris(addr: SocketAddr, every: Duration, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let head = get("/healthz");
        let mut connections = 0;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut s) = TcpStream::connect(addr) else {
                std::thread::sleep(every);
                continue;
            };
            connections += 1;
            for b in head.as_bytes() {
                if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(every);
            }
        }
        connections
    })
}

#[test]
fn idle_and_slow_clients_cannot_starve_healthz_or_metrics() {
    let dir = TempDir::new("starve");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    assert!(wait_for(T, || agent.get("/healthz").0 == 200), "{}", agent.stderr());

    let stop = Arc::new(AtomicBool::new(false));
    let slow = slowloris(agent.metrics, Duration::from_millis(500), stop.clone());
    let mut idle = Vec::new();
    let within = Duration::from_secs(1);
    let mut failures = Vec::new();
    for round in 0..8 {
        // Twenty more idle connections before every probe, as an attacker
        // reconnecting would keep them: more than the agent's client cap.
        for _ in 0..20 {
            idle.push(TcpStream::connect(agent.metrics).unwrap());
        }
        for (path, want) in [("/healthz", "ok\n"), ("/metrics", "log_capturer_docker_up 1")] {
            match probe(agent.metrics, &get(path), within) {
                Ok((200, resp)) if resp.contains(want) => {}
                Ok((status, resp)) => failures.push(format!("round {round} {path}: {status} {resp:.200}")),
                Err(e) => failures.push(format!("round {round} {path}: {e}")),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(failures.is_empty(), "{} of 16 probes failed: {failures:#?}", failures.len());
    assert!(slow.join().unwrap() >= 1);

    // At least the 4 connections over the cap of each round were evicted.
    let evicted = agent.metric("log_capturer_metrics_clients_evicted_total");
    assert!(evicted >= 4.0 * 8.0, "evictions: {evicted}");
    // An idle client alone (no one waiting for its slot) is closed by the
    // head deadline, well before the 10 s a response may take.
    drop(idle);
    let mut lone = TcpStream::connect(agent.metrics).unwrap();
    lone.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    assert!(matches!(lone.read(&mut buf), Ok(0)), "an idle client must be closed");
    assert!(start.elapsed() < Duration::from_secs(4), "closed after {:?}", start.elapsed());
    assert!(
        wait_for(T, || agent.metric(r#"log_capturer_deadline_expirations_total{kind="client"}"#) >= 1.0),
        "head deadlines are counted as kind=client"
    );
}

#[test]
fn method_not_allowed_says_what_is() {
    let dir = TempDir::new("allow");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    let req = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let (status, resp) = probe(agent.metrics, req, Duration::from_secs(5)).unwrap();
    assert_eq!(status, 405, "{resp}");
    let head = resp.split("\r\n\r\n").next().unwrap();
    assert!(head.lines().any(|l| l.eq_ignore_ascii_case("allow: GET, HEAD")), "no Allow header: {head}");
}

/// A fake dockerd on a unix socket: every connection gets `reply`, one
/// byte every `every` (`None`: nothing, ever), until the test ends.
fn fake_daemon(dir: &std::path::Path, reply: &'static [u8], every: Option<Duration>) -> std::path::PathBuf {
    let path = dir.join("docker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let Some(every) = every else {
                    // Hold the connection open, answer nothing.
                    let mut sink = [0u8; 1024];
                    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
                    return;
                };
                for b in reply {
                    if conn.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(every);
                }
            });
        }
    });
    path
}

const PING_REPLY: &[u8] =
    b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOK";

/// Run the agent to its exit (killed after `limit`): (exit code, stderr,
/// how long it ran).
fn run_agent(dir: &std::path::Path, args: &[&str], limit: Duration) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_log-capturer"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--metrics-addr", "127.0.0.1:0", "--output", "/dev/null"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.and_then(|s| s.code()), err, took)
}

#[test]
fn a_daemon_trickling_its_ping_reply_fails_start_up_within_the_api_timeout() {
    let dir = TempDir::new("trickle");
    let sock = fake_daemon(&dir.0, PING_REPLY, Some(Duration::from_secs(1)));
    let host = format!("unix://{}", sock.display());
    let (code, err, took) =
        run_agent(&dir.0, &["--docker-host", &host, "--api-timeout", "2s"], Duration::from_secs(15));
    assert_eq!(code, Some(2), "ran {took:?}: {err}");
    assert!(took < Duration::from_millis(3500), "start-up took {took:?} with --api-timeout 2s: {err}");
    assert!(err.contains("no answer in time") && err.contains("--api-timeout 2s"), "{err}");
}

#[test]
fn a_hung_daemon_is_reported_as_no_answer_in_time() {
    let dir = TempDir::new("hung");
    let sock = fake_daemon(&dir.0, b"", None);
    let host = format!("unix://{}", sock.display());
    let (code, err, took) =
        run_agent(&dir.0, &["--docker-host", &host, "--api-timeout", "1s"], Duration::from_secs(15));
    assert_eq!(code, Some(2), "ran {took:?}: {err}");
    assert!(took < Duration::from_millis(2500), "start-up took {took:?} with --api-timeout 1s: {err}");
    assert!(err.contains("no answer in time") && !err.contains("temporarily unavailable"), "{err}");
}

#[test]
fn a_zero_timeout_is_refused_at_the_flag() {
    let dir = TempDir::new("zero");
    // A daemon that accepts and never answers: only the flag can be at
    // fault, and the agent must not even get as far as asking it.
    let sock = fake_daemon(&dir.0, b"", None);
    let host = format!("unix://{}", sock.display());
    for flag in ["--api-timeout", "--connect-timeout", "--head-timeout"] {
        let (code, err, _) =
            run_agent(&dir.0, &["--docker-host", &host, flag, "0s"], Duration::from_secs(15));
        assert_eq!(code, Some(2), "{flag}: {err}");
        assert!(err.contains(flag) && !err.contains("check --docker-host"), "{flag}: {err}");
    }
}

#[test]
fn an_empty_docker_host_variable_means_the_default_socket() {
    let dir = TempDir::new("emptyhost");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_log-capturer"))
        .env("DOCKER_HOST", "")
        .arg("--state-dir")
        .arg(dir.0.join("state"))
        // Should a real dockerd listen there, the check passes and the
        // agent stops at once on this address, which is never local.
        .args(["--metrics-addr", "192.0.2.1:9", "--output", "/dev/null"])
        .args(["--connect-timeout", "1s", "--api-timeout", "1s"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let default = "unix:///var/run/docker.sock";
    assert!(
        err.contains(&format!("Docker at {default}")) || err.contains("cannot listen on 192.0.2.1:9"),
        "DOCKER_HOST= must mean {default}: {err}"
    );
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
}

#[test]
fn the_state_directory_is_private_whatever_the_umask() {
    let dir = TempDir::new("umask");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let state = dir.0.join("state");
    let mut child = std::process::Command::new("sh")
        .args(["-c", r#"umask 000; exec "$0" "$@""#, env!("CARGO_BIN_EXE_log-capturer")])
        .arg("--docker-host")
        .arg(format!("unix://{}", d.socket().display()))
        .arg("--state-dir")
        .arg(&state)
        .args(["--metrics-addr", "127.0.0.1:0", "--output", "/dev/null"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The first run writes its checkpoint within a second.
    let ckpt = state.join("checkpoints.json");
    let written = wait_for(T, || ckpt.exists());
    let modes =
        written.then(|| [&state, &state.join("lock"), &ckpt].map(|p| format!("{:o}", mode(p))).join(" "));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(modes.as_deref(), Some("700 600 600"), "state dir, lock, checkpoints under umask 000");
}

#[test]
fn deleting_the_lock_file_does_not_let_a_second_agent_in() {
    let dir = TempDir::new("lockdel");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let first = Agent::start(d.socket(), &dir.0, &[]);
    std::fs::remove_file(dir.0.join("state/lock")).unwrap();
    let host = format!("unix://{}", d.socket().display());
    let (code, err, took) = run_agent(&dir.0, &["--docker-host", &host], Duration::from_secs(15));
    assert_eq!(code, Some(2), "a second agent ran {took:?} on the same state directory: {err}");
    assert!(err.contains("in use by another log-capturer"), "{err}");
    assert!(first.stderr().contains("following containers"), "{}", first.stderr());
}
