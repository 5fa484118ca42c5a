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
