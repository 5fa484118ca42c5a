//! The stream budget and fd exhaustion, at small scale against the test
//! double: more containers than the budget (from `--max-streams` or from
//! the open-files limit), and the limit pulled out from under a running
//! agent. Followed streams must lose nothing; waiting containers are
//! shipped, oldest first, as slots free.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

fn writer(rate: f64, total: u64) -> Writer {
    Writer { lines_per_sec: rate, stderr_every: 3, line_len: 60, max_lines: Some(total) }
}

fn delivered(agent: &Agent, name: &str) -> usize {
    read_output(&agent.output).iter().filter(|r| r.container == name).count()
}

fn assert_exactly_once(agent: &Agent, names: &[String], total: u64) {
    let recs = read_output(&agent.output);
    for n in names {
        if let Err(e) = check_sequence(&recs, n, total) {
            panic!("{e}\nagent stderr:\n{}", agent.stderr());
        }
    }
}

/// Container names in the order the agent must give out slots: by
/// creation second as Docker lists it, then by id.
fn slot_order(socket: &Path) -> Vec<String> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(b"GET /v1.41/containers/json?all=1 HTTP/1.0\r\nHost: d\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let body = &resp[resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let list: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
    let mut v: Vec<(i64, String, String)> = list
        .iter()
        .map(|c| {
            let name = c["Names"][0].as_str().unwrap().trim_start_matches('/').to_owned();
            (c["Created"].as_i64().unwrap(), c["Id"].as_str().unwrap().to_owned(), name)
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, _, n)| n).collect()
}

/// Wait until the double's writers have written all `total` lines of each
/// container (stopping one stops its writer).
fn wait_written(d: &Double, names: &[String], total: usize) {
    let ids: Vec<String> = names.iter().map(|n| d.id_of(n).unwrap()).collect();
    assert!(wait_for(T, || ids.iter().all(|id| d.logs(id).len() >= total)), "writers did not finish");
}

fn requested(d: &Double, name: &str) -> bool {
    let id = d.id_of(name).unwrap();
    d.stats().logs_requests_by_container.contains_key(&id)
}

#[test]
fn over_budget_follows_the_oldest_and_hands_on_freed_slots() {
    let dir = TempDir::new("budget");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let names: Vec<String> = (0..5).map(|i| format!("b{i}")).collect();
    for n in &names {
        d.create_and_start(ContainerSpec::new(n.clone()).writer(writer(100.0, 400)));
    }
    let order = slot_order(d.socket());
    let agent = Agent::start(d.socket(), &dir.0, &["--max-streams", "3", "--from-beginning"]);
    // The agent counts a stream from its connect; the double, once it has
    // read the request: wait for both before asking the double who.
    assert!(
        wait_for(T, || {
            let m = agent.metrics();
            m["log_capturer_stream_budget"] == 3.0
                && m["log_capturer_containers_followed"] == 3.0
                && m["log_capturer_containers_unfollowed"] == 2.0
                && m["log_capturer_active_streams"] == 3.0
                && d.stats().log_streams_open == 3
        }),
        "{:?}\n{}",
        agent.metrics(),
        agent.stderr()
    );
    for n in &order[..3] {
        assert!(
            requested(&d, n),
            "{n} is among the oldest three and must be followed; order {order:?}, requests {:?}\n{}",
            d.stats().logs_requests_by_container,
            agent.stderr()
        );
    }
    for n in &order[3..] {
        assert!(!requested(&d, n), "{n} must wait: the budget is 3");
    }

    // A followed container stops: once its stream is drained, the oldest
    // waiting one gets the slot and is shipped from its beginning.
    wait_written(&d, &names, 400);
    d.stop(&d.id_of(&order[0]).unwrap());
    assert!(wait_for(T, || requested(&d, &order[3])), "{}", agent.stderr());
    assert!(!requested(&d, &order[4]));
    // A followed container is removed: its slot goes to the last one.
    assert!(wait_for(T, || delivered(&agent, &order[1]) == 400));
    d.remove(&d.id_of(&order[1]).unwrap());
    assert!(wait_for(T, || requested(&d, &order[4])), "{}", agent.stderr());
    assert!(wait_for(T, || agent.metric("log_capturer_containers_unfollowed") == 0.0));

    assert!(wait_for(T, || names.iter().all(|n| delivered(&agent, n) >= 400)), "{}", agent.stderr());
    assert_exactly_once(&agent, &names, 400);
    let err = agent.stderr();
    assert_eq!(err.matches("more containers than the stream budget of 3").count(), 1, "warned once:\n{err}");
    assert!(err.contains("--max-streams"), "{err}");
}

#[test]
fn the_open_files_limit_sets_the_budget_and_is_never_exceeded() {
    const LIMIT: u64 = 64;
    const N: usize = 30;
    let dir = TempDir::new("nofile");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let names: Vec<String> = (0..N).map(|i| format!("n{i:02}")).collect();
    for n in &names {
        d.create_and_start(ContainerSpec::new(n.clone()).writer(writer(50.0, 100)));
    }
    let agent = Agent::start_with_nofile(d.socket(), &dir.0, &["--from-beginning"], LIMIT);
    assert!(
        wait_for(T, || {
            let m = agent.metrics();
            m["log_capturer_active_streams"] == m["log_capturer_stream_budget"]
                && m["log_capturer_containers_unfollowed"] > 0.0
        }),
        "{:?}\n{}",
        agent.metrics(),
        agent.stderr()
    );
    let m = agent.metrics();
    let budget = m["log_capturer_stream_budget"];
    assert_eq!(m["process_max_fds"], LIMIT as f64);
    assert!(budget >= 10.0 && budget < LIMIT as f64, "budget {budget} for {LIMIT} fds");
    assert_eq!(m["log_capturer_containers_followed"], budget);
    assert_eq!(m["log_capturer_containers_unfollowed"], N as f64 - budget);
    assert!(agent.stderr().contains(&format!("open-files limit {LIMIT}")), "{}", agent.stderr());

    // Every container stops: slots pass down the queue until all are
    // shipped, without the agent ever running out of fds.
    let mut max_fds = 0;
    wait_written(&d, &names, 100);
    for n in &names {
        d.stop(&d.id_of(n).unwrap());
    }
    assert!(
        wait_for(T, || {
            max_fds = max_fds.max(agent.fds());
            names.iter().all(|n| delivered(&agent, n) >= 100)
        }),
        "{}",
        agent.stderr()
    );
    assert_exactly_once(&agent, &names, 100);
    assert!(max_fds <= LIMIT as usize, "{max_fds} fds open under a limit of {LIMIT}");
    let m = agent.metrics();
    assert_eq!(m["log_capturer_fd_exhaustion_total"], 0.0, "the budget must keep fds from running out");
    assert_eq!(m["log_capturer_containers_unfollowed"], 0.0);
}

#[test]
fn running_out_of_fds_loses_nothing_and_recovers() {
    let dir = TempDir::new("emfile");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let names: Vec<String> = (0..3).map(|i| format!("e{i}")).collect();
    for n in &names {
        d.create_and_start(ContainerSpec::new(n.clone()).writer(writer(100.0, 1500)));
    }
    let mut agent = Agent::start(d.socket(), &dir.0, &["--from-beginning", "--rotate-after", "200ms"]);
    assert!(wait_for(T, || agent.metric("log_capturer_active_streams") == 3.0));

    // No new fd can be opened now (0, 1 and 2 are taken): every rotation's
    // reopen, every inspect, every scraper and checkpoint fails with EMFILE.
    agent.set_soft_nofile(3);
    assert!(wait_for(T, || agent.stderr().contains("out of file descriptors")), "{}", agent.stderr());
    let late = "late".to_string();
    d.create_and_start(ContainerSpec::new(late.clone()).writer(writer(100.0, 300)));
    // The streams are closed by their rotation and cannot reopen.
    assert!(wait_for(T, || d.stats().log_streams_open == 0));
    let scrape = {
        let addr = agent.metrics;
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut r = String::new();
            let _ = s.read_to_string(&mut r);
            r
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.child.try_wait().unwrap().is_none(), "the agent must survive: {}", agent.stderr());

    agent.set_soft_nofile(1024);
    let healthz = scrape.join().unwrap();
    assert!(healthz.starts_with("HTTP/1.1 200"), "a scraper left waiting is served: {healthz:?}");
    let mut all = names.clone();
    all.push(late.clone());
    assert!(
        wait_for(T, || names.iter().all(|n| delivered(&agent, n) >= 1500) && delivered(&agent, &late) >= 300),
        "{}",
        agent.stderr()
    );
    assert_exactly_once(&agent, &names, 1500);
    assert_exactly_once(&agent, &[late], 300);
    let m: BTreeMap<String, f64> = agent.metrics();
    assert!(m["log_capturer_fd_exhaustion_total"] > 0.0);
    assert_eq!(m["log_capturer_docker_up"], 1.0, "running out of fds is not Docker being down");
    assert_eq!(m[r#"log_capturer_docker_errors_total{kind="connect"}"#], 0.0);
}

#[test]
fn a_limit_too_small_for_one_stream_is_a_clear_error() {
    let dir = TempDir::new("tiny");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let out = std::process::Command::new("prlimit")
        .arg("--nofile=30:30")
        .arg(env!("CARGO_BIN_EXE_log-capturer"))
        .arg("--docker-host")
        .arg(format!("unix://{}", d.socket().display()))
        .arg("--state-dir")
        .arg(dir.0.join("state"))
        .args(["--metrics-addr", "127.0.0.1:0", "--output", "/dev/null"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("open-files limit of 30") && err.contains("ulimit -n"), "{err}");
}
