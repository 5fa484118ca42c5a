//! The agent against the Docker API test double: exactly-once delivery
//! across rotations and injected faults, deadlines that free fds, restarts
//! of the agent and of the daemon, and metrics that match what happened.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

fn writer(rate: f64, total: u64) -> Writer {
    Writer { lines_per_sec: rate, stderr_every: 3, line_len: 60, max_lines: Some(total) }
}

fn all_delivered(agent: &Agent, names: &[(&str, u64)]) -> bool {
    let recs = read_output(&agent.output);
    names.iter().all(|(n, total)| recs.iter().filter(|r| r.container == *n).count() as u64 >= *total)
}

fn assert_exactly_once(agent: &Agent, names: &[(&str, u64)]) {
    let recs = read_output(&agent.output);
    for (n, total) in names {
        if let Err(e) = check_sequence(&recs, n, *total) {
            panic!("{e}\nagent stderr:\n{}", agent.stderr());
        }
    }
}

#[test]
fn exactly_once_across_a_hundred_rotations_with_faults() {
    let dir = TempDir::new("rot");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let agent = Agent::start(
        d.socket(),
        &dir.0,
        &["--rotate-after", "100ms", "--idle-timeout", "1s", "--head-timeout", "1s"],
    );
    // The baseline once the agent has settled: it has pinged, opened the
    // events stream and listed (3 requests) and closed all but the events
    // stream.
    assert!(
        d.wait_until(T, |s| s.requests_total >= 3 && s.events_streams_open == 1 && s.connections_open == 1)
    );
    let base_fds = agent.fds();
    let base_list = agent.fd_list();
    let mut names = Vec::new();
    for i in 0..3 {
        names.push((format!("plain{i}"), 1200u64));
    }
    names.push(("tty".to_string(), 1200));
    names.push(("long".to_string(), 150));
    let mut ids = Vec::new();
    for (n, total) in &names {
        let mut spec = ContainerSpec::new(n.clone()).tty(n == "tty");
        spec = spec.writer(if n == "long" {
            Writer { lines_per_sec: 12.0, stderr_every: 2, line_len: 40_000, max_lines: Some(*total) }
        } else {
            writer(100.0, *total)
        });
        ids.push(d.create_and_start(spec));
    }
    // Faults on the next logs requests, whichever containers they hit.
    d.inject(Match::Logs, Fault::ResetMidFrame, 3);
    d.inject(Match::Logs, Fault::MalformedChunk, 2);
    d.inject(Match::Logs, Fault::StallAfterHeaders, 2);
    d.inject(Match::Logs, Fault::NeverAnswer, 2);

    let expect: Vec<(&str, u64)> = names.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    assert!(wait_for(T, || all_delivered(&agent, &expect)), "not all lines arrived:\n{}", agent.stderr());
    assert_exactly_once(&agent, &expect);

    // Streams rotate every 100 ms whether or not lines flow: wait for a
    // hundred reopens each (how many fit while the writers run depends on
    // the machine's load) and check again that nothing was repeated.
    let reqs = |s: &Stats, id: &String| s.logs_requests_by_container.get(id).copied().unwrap_or(0);
    assert!(
        d.wait_until(T, |s| ids[..4].iter().all(|id| reqs(s, id) >= 100)),
        "fewer than 100 streams per container: {:?}",
        d.stats().logs_requests_by_container
    );
    assert_exactly_once(&agent, &expect);
    let stats = d.stats();
    assert!(stats.logs_requests_with_tail > 0, "reopens should use tail");
    assert_eq!(stats.non_get_requests, 0);

    // One thread, and one fd per stream on top of the baseline.
    assert_eq!(agent.threads(), 1);
    assert!(
        wait_for(Duration::from_secs(5), || agent.fds() <= base_fds + names.len()),
        "fds grew: {} -> {}",
        base_fds,
        agent.fds()
    );

    // Stop every container: the streams end, no request is in flight when
    // the counters are compared, and the fds go back to the baseline.
    for id in &ids {
        d.stop(id);
    }
    assert!(d.wait_until(T, |s| s.log_streams_open == 0));
    assert!(wait_for(T, || agent.metric("log_capturer_containers_followed") == 0.0));
    assert!(wait_for(T, || agent.fds() == base_fds), "fds {:?} != baseline {base_list:?}", agent.fd_list());
    let m = agent.metrics();
    let sum = |prefix: &str| -> f64 { m.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum() };
    // Every logs request is a first open, a rotation, a reconnect or the
    // final read after a container stopped: the counters tell exactly what
    // happened.
    let opens = names.len() as f64;
    let rotations = sum("log_capturer_stream_rotations_total");
    let reconnects = sum("log_capturer_stream_reconnects_total");
    let finals = m["log_capturer_final_reads_total"];
    let requests = d.stats().logs_requests_total as f64;
    assert_eq!(finals, opens, "one final read per stopped container");
    assert_eq!(
        opens + rotations + reconnects + finals,
        requests,
        "opens {opens} + rotations {rotations} + reconnects {reconnects} + final reads {finals} != requests {requests}"
    );
    assert_eq!(m["log_capturer_active_streams"], 0.0);
    assert!(
        m["log_capturer_deadline_expirations_total{kind=\"head\"}"] >= 2.0,
        "NeverAnswer must hit the head deadline"
    );
    assert!(m["log_capturer_duplicates_dropped_total"] > 0.0);
    assert_eq!(
        m["log_capturer_lines_total{stream=\"stdout\"}"] + m["log_capturer_lines_total{stream=\"stderr\"}"],
        names.iter().map(|(_, t)| *t as f64).sum::<f64>()
    );
}

#[test]
fn active_streams_matches_the_server_side_count() {
    let dir = TempDir::new("active");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    for i in 0..7 {
        d.create_and_start(ContainerSpec::new(format!("c{i}")));
    }
    assert!(d.wait_until(T, |s| s.log_streams_open == 7));
    assert!(wait_for(T, || agent.metric("log_capturer_active_streams") == 7.0));
    assert_eq!(agent.metric("log_capturer_containers_followed"), 7.0);
    let fds = agent.fds();
    let id = d.id_of("c3").unwrap();
    d.stop(&id);
    assert!(d.wait_until(T, |s| s.log_streams_open == 6));
    assert!(wait_for(T, || agent.metric("log_capturer_active_streams") == 6.0));
    assert!(wait_for(T, || agent.fds() == fds - 1), "a stopped container's fd must be closed");
    assert_eq!(agent.threads(), 1);
}

#[test]
fn a_stream_stalled_after_its_headers_costs_one_fd_until_the_idle_deadline() {
    let dir = TempDir::new("stall");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let id = d.create_and_start(ContainerSpec::new("web"));
    d.inject(Match::LogsOf(id.clone()), Fault::StallAfterHeaders, 5);
    let agent = Agent::start(d.socket(), &dir.0, &["--idle-timeout", "300ms", "--from-beginning"]);
    // Five stalled streams in a row, each cut by the idle deadline.
    assert!(d.wait_until(T, |s| s.logs_requests_total >= 6));
    let fds = agent.fds();
    d.write(&id, Stream::Stdout, b"web 1 stdout after the stall");
    assert!(wait_for(T, || read_output(&agent.output).len() == 1), "{}", agent.stderr());
    assert!(agent.metric("log_capturer_stream_rotations_total{reason=\"idle\"}") >= 5.0);
    assert!(agent.fds() <= fds, "stalled streams leaked fds");
    assert_eq!(d.stats().log_streams_open, 1);
}

#[test]
fn agent_killed_and_restarted_loses_nothing() {
    let dir = TempDir::new("kill");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let agent = Agent::start(d.socket(), &dir.0, &["--rotate-after", "500ms"]);
    d.create_and_start(ContainerSpec::new("k").writer(writer(200.0, 2000)));
    assert!(wait_for(T, || read_output(&agent.output).len() > 300));
    let st = agent.stop("KILL");
    assert!(!st.success());
    std::thread::sleep(Duration::from_millis(500));
    let agent = Agent::start(d.socket(), &dir.0, &["--rotate-after", "500ms"]);
    let distinct = |agent: &Agent| {
        let recs = read_output(&agent.output);
        let mut seqs: Vec<u64> =
            recs.iter().filter_map(|r| r.message.split(' ').nth(1)?.parse().ok()).collect();
        let n = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        (seqs, n)
    };
    assert!(wait_for(T, || distinct(&agent).0.len() == 2000), "{}", agent.stderr());
    let (seqs, n) = distinct(&agent);
    // Nothing lost; at most about a second (200 lines) repeated.
    assert!(seqs.iter().copied().eq(1..=2000), "lines lost");
    assert!(n - seqs.len() <= 250, "{} lines repeated after kill -9", n - seqs.len());
}

#[test]
fn agent_stopped_with_sigterm_and_restarted_loses_and_repeats_nothing() {
    let dir = TempDir::new("term");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    d.create_and_start(ContainerSpec::new("t").writer(writer(200.0, 1500)));
    assert!(wait_for(T, || read_output(&agent.output).len() > 200));
    let started = std::time::Instant::now();
    let st = agent.stop("TERM");
    assert!(st.success(), "{st:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "SIGTERM took {:?}", started.elapsed());
    std::thread::sleep(Duration::from_millis(300));
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    assert!(wait_for(T, || all_delivered(&agent, &[("t", 1500)])));
    assert_exactly_once(&agent, &[("t", 1500)]);
}

#[test]
fn docker_restart_under_the_agent() {
    let dir = TempDir::new("dockerd");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    d.create_and_start(ContainerSpec::new("r").writer(writer(100.0, 1000)));
    assert!(wait_for(T, || read_output(&agent.output).len() > 100));
    assert_eq!(agent.get("/healthz").0, 200);
    d.daemon_down();
    assert!(wait_for(T, || agent.metric("log_capturer_docker_up") == 0.0));
    assert_eq!(agent.get("/healthz").0, 503);
    std::thread::sleep(Duration::from_secs(1));
    d.daemon_up();
    assert!(wait_for(T, || agent.metric("log_capturer_docker_up") == 1.0));
    assert!(wait_for(T, || all_delivered(&agent, &[("r", 1000)])), "{}", agent.stderr());
    assert_exactly_once(&agent, &[("r", 1000)]);
    assert_eq!(agent.get("/healthz").0, 200);
}

#[test]
fn short_tail_window_falls_back_to_one_since_only_catch_up() {
    let dir = TempDir::new("tail");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    let id = d.create_and_start(ContainerSpec::new("burst"));
    for i in 1..=10 {
        d.write(&id, Stream::Stdout, format!("burst {i} stdout").as_bytes());
    }
    assert!(wait_for(T, || read_output(&agent.output).len() == 10));
    assert!(agent.stop("TERM").success());
    // More lines than the reopen's tail window (1 000) while it is away.
    for i in 11..=3000 {
        d.write(&id, Stream::Stdout, format!("burst {i} stdout").as_bytes());
    }
    let before = d.stats();
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    assert!(wait_for(T, || all_delivered(&agent, &[("burst", 3000)])), "{}", agent.stderr());
    assert_exactly_once(&agent, &[("burst", 3000)]);
    let after = d.stats();
    assert!(after.logs_requests_with_tail > before.logs_requests_with_tail, "the reopen tries tail first");
    assert_eq!(
        after.logs_requests_since_only,
        before.logs_requests_since_only + 1,
        "then one since-only catch-up"
    );
    assert_eq!(agent.metric("log_capturer_stream_reconnects_total{reason=\"catchup\"}"), 1.0);
}

#[test]
fn non_monotonic_timestamps_with_either_since_semantics() {
    for mode in [SinceMode::FilterAll, SinceMode::StopAfterFirst] {
        let dir = TempDir::new("inv");
        let mut cfg = Config::in_temp_dir();
        cfg.since_mode = mode;
        let d = Double::start(cfg).unwrap();
        let agent = Agent::start(d.socket(), &dir.0, &["--rotate-after", "100ms"]);
        let id = d.create_and_start(ContainerSpec::new("inv"));
        // stderr lines land in the file after stdout lines stamped later,
        // as dockerd's two copiers can do.
        // After the container's creation, as every real line is.
        let base = docker_double::time::now_ns() + 10_000_000;
        let mut seq = 0;
        for i in 0..400i64 {
            let ts = base + i * 5_000_000;
            seq += 1;
            d.write_at(&id, Stream::Stdout, ts, format!("inv {seq} stdout\n").as_bytes());
            seq += 1;
            d.write_at(&id, Stream::Stderr, ts - 300_000, format!("inv {seq} stderr\n").as_bytes());
            if i % 40 == 0 {
                std::thread::sleep(Duration::from_millis(60));
            }
        }
        assert!(wait_for(T, || all_delivered(&agent, &[("inv", 800)])), "{mode:?}: {}", agent.stderr());
        assert_exactly_once(&agent, &[("inv", 800)]);
    }
}

#[test]
fn permanent_errors_are_reported_once_and_not_retried() {
    let dir = TempDir::new("perm");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let none = d.create_and_start(ContainerSpec::new("quiet").log_driver("none"));
    let ok = d.create_and_start(ContainerSpec::new("fine"));
    let agent = Agent::start(d.socket(), &dir.0, &["--from-beginning"]);
    d.write(&ok, Stream::Stdout, b"fine 1 stdout");
    assert!(wait_for(T, || read_output(&agent.output).len() == 1));
    std::thread::sleep(Duration::from_millis(500));
    let stats = d.stats();
    assert_eq!(stats.logs_requests_by_container.get(&none).copied().unwrap_or(0), 0);
    let err = agent.stderr();
    assert_eq!(err.matches("not following container quiet").count(), 1, "{err}");
    assert!(err.contains("logging driver"), "{err}");
}

#[test]
fn removed_container_is_forgotten() {
    let dir = TempDir::new("rm");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    let id = d.create_and_start(ContainerSpec::new("gone"));
    d.write(&id, Stream::Stdout, b"gone 1 stdout");
    assert!(wait_for(T, || read_output(&agent.output).len() == 1));
    d.remove(&id);
    assert!(wait_for(T, || agent.metric("log_capturer_containers_followed") == 0.0));
    assert!(wait_for(T, || agent.metric("log_capturer_active_streams") == 0.0));
    // Its checkpoint goes too (written within a second).
    assert!(wait_for(T, || {
        let ck = std::fs::read_to_string(dir.0.join("state/checkpoints.json")).unwrap_or_default();
        !ck.is_empty() && !ck.contains(&id)
    }));
}

#[test]
fn bad_flags_and_unreachable_docker_exit_2_with_advice() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_log-capturer"))
        .args(["--rotate-after", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));

    let dir = TempDir::new("unreach");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_log-capturer"))
        .arg("--docker-host")
        .arg(format!("unix://{}/nothing.sock", dir.0.display()))
        .arg("--state-dir")
        .arg(dir.0.join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach Docker") && err.contains("is dockerd running"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn output_file_is_reopened_on_sighup_for_logrotate() {
    let dir = TempDir::new("hup");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    let id = d.create_and_start(ContainerSpec::new("h"));
    d.write(&id, Stream::Stdout, b"h 1 stdout");
    assert!(wait_for(T, || read_output(&agent.output).len() == 1));
    let rotated = dir.0.join("out.jsonl.1");
    std::fs::rename(&agent.output, &rotated).unwrap();
    std::process::Command::new("kill").args(["-HUP", &agent.pid().to_string()]).status().unwrap();
    assert!(wait_for(T, || agent.output.exists()), "SIGHUP must reopen the output");
    d.write(&id, Stream::Stdout, b"h 2 stdout");
    assert!(wait_for(T, || read_output(&agent.output).len() == 1));
    assert_eq!(read_output(&agent.output)[0].message, "h 2 stdout");
    assert_eq!(read_output(&rotated).len(), 1);
    assert!(wait_for(T, || agent.stderr().contains("output file reopened")), "{}", agent.stderr());
}

#[test]
fn a_stalled_output_stops_reading_and_loses_nothing() {
    use std::io::BufRead;
    let dir = TempDir::new("bp");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    // A head deadline of 1 s: a stream reopened while the output is stuck
    // is not read, so its head deadline fires, and it is reopened again.
    let mut agent =
        Agent::start_piped(d.socket(), &dir.0, &["--rotate-after", "300ms", "--head-timeout", "1s"]);
    // The events stream is open: the agent sees the start below.
    assert!(d.wait_until(T, |s| s.events_streams_open == 1));
    let total = 30_000u64;
    let id = d.create(ContainerSpec::new("bp").writer(Writer {
        lines_per_sec: 20_000.0,
        stderr_every: 0,
        line_len: 300,
        max_lines: Some(total),
    }));
    // More lines than a first open's `tail` window (2 000) are stored
    // before the agent asks for any: what a first open that comes late
    // sees (on a loaded machine, 100 ms of this writer), every time.
    d.prefill(&id, 5_000);
    d.start_again(&id);
    // Nobody reads stdout: 9 MB of lines cannot fit in the pipe plus the
    // agent's 4 MiB buffer, so the agent must stop reading the stream.
    assert!(wait_for(T, || agent.metric("log_capturer_output_buffer_bytes") >= (4 << 20) as f64));
    let delivered = || agent.metric(r#"log_capturer_lines_total{stream="stdout"}"#);
    let before = delivered();
    // Delivery stays stopped while the stream is reopened (by its age or
    // its head deadline: neither stream is read) and the double writes on.
    // (What the double sent is no measure: each reopen refills a new
    // socket's buffer.)
    let logs_requests = || d.stats().logs_requests_total;
    let reopens = logs_requests() + 2;
    assert!(wait_for(T, || logs_requests() >= reopens), "not reopened while stuck:\n{}", agent.stderr());
    assert!(wait_for(T, || d.logs(&id).len() as u64 == total), "the double writes regardless");
    assert_eq!(delivered(), before, "the agent kept delivering with its output stuck");
    assert!(before < total as f64, "all {total} lines cannot fit in the pipe and the buffer");
    assert!(agent.metric("log_capturer_output_buffer_bytes") <= (5 << 20) as f64);
    // Now read everything: every line arrives exactly once, in order. On a
    // thread, so that lines that never come fail the test, not hang it.
    let out = agent.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut recs = Vec::new();
    while (recs.len() as u64) < total {
        let Ok(line) = rx.recv_timeout(T) else {
            panic!("{} of {total} lines arrived:\n{}", recs.len(), agent.stderr());
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        recs.push(Rec {
            container: v["container_name"].as_str().unwrap().to_owned(),
            stream: v["stream"].as_str().unwrap().to_owned(),
            message: v["message"].as_str().unwrap().to_owned(),
            timestamp: None,
            truncated: false,
        });
    }
    if let Err(e) = check_sequence(&recs, "bp", total) {
        panic!("{e}\n{}", agent.stderr());
    }
    // Counted once the output takes everything again.
    assert!(wait_for(T, || agent.metric("log_capturer_output_blocked_seconds_total") > 0.0));
}

#[test]
fn a_stream_ended_by_dockerd_while_the_container_runs_is_reopened() {
    let dir = TempDir::new("eof");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    let id = d.create_and_start(ContainerSpec::new("e").writer(writer(100.0, 600)));
    // dockerd can end a follow stream cleanly (a decode error) while the
    // container runs: the agent must notice and resume.
    d.inject(Match::LogsOf(id), Fault::CloseAfter(Duration::from_millis(700)), 3);
    assert!(wait_for(T, || all_delivered(&agent, &[("e", 600)])), "{}", agent.stderr());
    assert_exactly_once(&agent, &[("e", 600)]);
    assert!(agent.metric("log_capturer_stream_reconnects_total{reason=\"eof\"}") >= 3.0);
}

#[test]
fn label_and_name_filters_choose_the_containers() {
    let dir = TempDir::new("filter");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let agent = Agent::start(
        d.socket(),
        &dir.0,
        &["--include-label", "app=web", "--exclude-label", "skip", "--include-name", "web-*"],
    );
    let yes = d.create_and_start(ContainerSpec::new("web-1").label("app", "web"));
    let wrong_label = d.create_and_start(ContainerSpec::new("web-2").label("app", "db"));
    let excluded = d.create_and_start(ContainerSpec::new("web-3").label("app", "web").label("skip", "1"));
    let wrong_name = d.create_and_start(ContainerSpec::new("api-1").label("app", "web"));
    for id in [&yes, &wrong_label, &excluded, &wrong_name] {
        d.write(id, Stream::Stdout, b"x 1 stdout");
    }
    assert!(wait_for(T, || read_output(&agent.output).len() == 1));
    std::thread::sleep(Duration::from_millis(300));
    let recs = read_output(&agent.output);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].container, "web-1");
    let stats = d.stats();
    assert_eq!(stats.logs_requests_by_container.keys().collect::<Vec<_>>(), [&yes]);
}

#[test]
fn speaks_the_daemons_version_when_old_ones_are_refused() {
    // dockerd 29.x: API 1.44 to 1.52; a request for /v1.41/ would be a 400.
    let dir = TempDir::new("api");
    let mut cfg = Config::in_temp_dir();
    cfg.api_min = (1, 44);
    cfg.api_max = (1, 52);
    let d = Double::start(cfg).unwrap();
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    // stderr is collected by a thread: wait for the line rather than race it.
    assert!(wait_for(T, || agent.stderr().contains("(API 1.52)")), "{}", agent.stderr());
    let id = d.create_and_start(ContainerSpec::new("new"));
    d.write(&id, Stream::Stdout, b"new 1 stdout");
    assert!(wait_for(T, || read_output(&agent.output).len() == 1), "{}", agent.stderr());
}

#[test]
fn first_opens_use_tail_over_older_lines_and_a_short_window_is_read_again_whole() {
    let dir = TempDir::new("firsttail");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    // Running a minute before the agent's first run, which starts from
    // now: lines from before are not wanted, and `tail` spares dockerd
    // decoding them. (The double's clock a minute behind, then back.)
    // "old": 3 000 lines from before, none of them sent.
    d.set_clock_offset(-60_000_000_000);
    let old = d.create_and_start(ContainerSpec::new("old").writer(Writer::new(0.0)));
    d.prefill(&old, 3_000);
    // "many": its first request never answers; by the retry 5 000 new
    // lines are stored, more than the first open's tail window of 2 000.
    let many = d.create_and_start(ContainerSpec::new("many").writer(Writer::new(0.0)));
    d.inject(Match::LogsOf(many.clone()), Fault::NeverAnswer, 1);
    d.set_clock_offset(0);
    let agent = Agent::start(d.socket(), &dir.0, &["--head-timeout", "1s"]);
    assert!(d.wait_until(T, |s| s.logs_requests_by_container.contains_key(&many)));
    d.prefill(&many, 5_000);
    for i in 3_001..=3_003 {
        d.write(&old, Stream::Stdout, format!("old {i} stdout").as_bytes());
    }
    // "few": started after the agent, its whole log is wanted: read
    // without `tail`, in one stream, in order.
    let few = d.create_and_start(ContainerSpec::new("few").writer(writer(200.0, 400)));
    assert!(
        wait_for(T, || all_delivered(&agent, &[("few", 400), ("many", 5_000), ("old", 3)])),
        "{:?}\n{}",
        d.stats(),
        agent.stderr()
    );
    assert_exactly_once(&agent, &[("few", 400)]);
    let recs = read_output(&agent.output);
    let old_lines: Vec<&str> =
        recs.iter().filter(|r| r.container == "old").map(|r| r.message.as_str()).collect();
    assert_eq!(old_lines, ["old 3001 stdout", "old 3002 stdout", "old 3003 stdout"]);
    // The lines before the short window are read again (after the window's,
    // so out of order), and those of the window are recognised: nothing
    // lost, nothing twice.
    let mut seen: Vec<u64> = recs
        .iter()
        .filter(|r| r.container == "many")
        .map(|r| r.message.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=5_000).collect::<Vec<u64>>());
    let s = d.stats();
    assert_eq!(s.logs_requests_by_container[&few], 1, "one stream for a container that needed one");
    assert_eq!(s.logs_requests_by_container[&old], 1, "{s:?}");
    assert!(s.logs_requests_with_tail >= 3, "first opens over older lines use tail: {s:?}");
    assert_eq!(s.logs_requests_since_only, 2, "\"few\"'s whole log and \"many\"'s catch-up: {s:?}");
    assert_eq!(agent.metric("log_capturer_stream_reconnects_total{reason=\"catchup\"}"), 1.0);
}
