//! The agent shipping to Loki, end to end: containers of the Docker double
//! write numbered lines, the agent runs with `--loki`, and the Loki double
//! (which decodes on its own, enforces Loki's rules and counts every
//! arrival apart from its dedup) says what it got. Every line must arrive,
//! with Docker's timestamp, the right labels and metadata, through every
//! fault, an outage with the agent killed in the middle, and kill -9 at
//! random moments; repeats only of what was in flight.
//!
//! Long variants: `LC_OUTAGE_SECS=60` (the outage, 20 s by default),
//! `LC_KILLS=N` (kill -9 count, 10), `LC_SEED=N` (replay the kill moments).
//! The real-dockerd test runs when a daemon is found (see
//! `tests/real_docker/mod.rs`), and must under `LC_REQUIRE_DOCKER=1`.

mod common;
#[path = "common/loki.rs"]
mod loki;
mod real_docker;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{wait_for, Agent, ContainerSpec, TempDir};
use loki::*;
use loki_double as lk;

/// A failure message: what went wrong, the comparison, the agent's stderr
/// and the metrics that tell where lines wait.
fn fail(what: &str, d: &Delivery, agent: &Agent) -> String {
    let m: Vec<_> = agent
        .metrics()
        .into_iter()
        .filter(|(k, v)| {
            *v != 0.0
                && (k.starts_with("log_capturer_sink_") && !k.contains("duration")
                    || k.starts_with("log_capturer_containers")
                    || k.starts_with("log_capturer_stream")
                    || k.starts_with("log_capturer_lines"))
        })
        .collect();
    format!("{what}: {}\nagent metrics: {m:?}\nagent stderr:\n{}", d.summary(), agent.stderr())
}

fn assert_exactly_once(s: &Scenario, agent: &Agent, static_labels: &[(&str, &str)]) -> Delivery {
    let d = s.delivery(static_labels);
    assert!(
        d.missing.is_empty() && d.unexpected.is_empty() && d.repeated.is_empty() && d.bad.is_empty(),
        "{}",
        fail("not exactly once", &d, agent)
    );
    assert_eq!(s.loki.stats().duplicates_dropped, 0, "{}", fail("dedup absorbed repeats", &d, agent));
    d
}

fn two_writers(s: &mut Scenario, a: &str, b: &str, rate: f64, total: u64) {
    s.start(vec![
        ContainerSpec::new(a).writer(writer(rate, total)),
        ContainerSpec::new(b).writer(writer(rate, total)),
    ]);
}

// ---- 1. end to end ----

fn end_to_end(encoding: &str, format: &str) {
    let mut s = Scenario::new(&format!("loki-e2e-{encoding}"));
    let agent = s.agent(&["--loki-encoding", encoding, "--loki-label", "env=ci"]);
    let compose = |name: &str| {
        ContainerSpec::new(name)
            .label("com.docker.compose.project", "shop")
            .label("com.docker.compose.service", name)
            .label("unrelated.label", "not-a-loki-label")
    };
    let mut special = ContainerSpec::new("plain").writer(writer(400.0, 800));
    special.image = "registry.example:5000/team/app:1.2.3".into();
    s.start(vec![
        compose("web").writer(writer(400.0, 800)),
        compose("db").writer(writer(400.0, 800)),
        special,
        ContainerSpec::new("tty").tty(true).writer(writer(400.0, 800)),
    ]);
    assert!(s.wait_delivered(0, T), "{}", fail("not all delivered", &s.delivery(&[("env", "ci")]), &agent));
    assert_exactly_once(&s, &agent, &[("env", "ci")]);
    let st = s.loki.stats();
    assert_eq!(
        st.pushes_by_format.keys().collect::<Vec<_>>(),
        [format],
        "push formats: {:?}",
        st.pushes_by_format
    );
    // Batches go in order, one at a time: each Loki stream got its
    // entries in Docker's order.
    for (labels, entries) in s.loki.streams() {
        if let Some(w) = entries.windows(2).find(|w| w[0].ts_ns > w[1].ts_ns) {
            panic!("{labels}: {} arrived before {}", w[0].line_str(), w[1].line_str());
        }
    }
}

#[test]
fn protobuf_every_line_once_with_labels_metadata_and_dockers_timestamps() {
    end_to_end("protobuf", "protobuf");
}

#[test]
fn json_every_line_once_with_labels_metadata_and_dockers_timestamps() {
    end_to_end("json", "json+gzip");
}

// ---- 2. faults ----

/// Two containers of 300 lines at 300/s through whatever `inject` sets
/// up; returns once every line (less `refused`) is stored.
fn through(tag: &str, inject: impl FnOnce(&lk::Double), extra: &[&str], refused: u64) -> (Scenario, Agent) {
    let mut s = Scenario::new(tag);
    inject(&s.loki);
    let agent = s.agent(extra);
    two_writers(&mut s, "fa", "fb", 300.0, 300);
    assert!(s.wait_delivered(refused, T), "{}", fail("not all delivered", &s.delivery(&[]), &agent));
    (s, agent)
}

/// The pushes after each push answered `status`: (that push, the next).
fn next_after(loki: &lk::Double, status: u16) -> Vec<(lk::RequestRecord, lk::RequestRecord)> {
    let reqs = loki.requests();
    reqs.iter()
        .enumerate()
        .filter(|(_, r)| r.status == status)
        .filter_map(|(i, r)| reqs.get(i + 1).map(|n| (r.clone(), n.clone())))
        .collect()
}

#[test]
fn rate_limited_429_waits_retry_after_and_loses_nothing() {
    let (s, agent) = through(
        "loki-429",
        |l| l.inject(lk::Match::Push, lk::Fault::RateLimited { retry_after: Some(2) }, 2),
        &[],
        0,
    );
    assert_exactly_once(&s, &agent, &[]);
    let pairs = next_after(&s.loki, 429);
    assert_eq!(pairs.len(), 2, "two 429s, each followed by a push");
    for (r, n) in pairs {
        let waited = n.at.duration_since(r.at);
        assert!(waited >= Duration::from_secs(2), "Retry-After: 2 but the next push came after {waited:?}");
    }
    let m = agent.metrics();
    assert!(sample(&m, "log_capturer_sink_retries_total{reason=\"rate_limited\"}") >= 2.0, "{m:?}");
}

#[test]
fn server_errors_500_and_503_lose_nothing() {
    let (s, agent) = through(
        "loki-5xx",
        |l| {
            l.inject(lk::Match::Push, lk::Fault::Status(500), 2);
            l.inject(lk::Match::Push, lk::Fault::Status(503), 2);
        },
        &[],
        0,
    );
    assert_exactly_once(&s, &agent, &[]);
    assert_eq!(s.loki.stats().status(500) + s.loki.stats().status(503), 4);
    let m = agent.metrics();
    assert!(sample(&m, "log_capturer_sink_retries_total{reason=\"server_error\"}") >= 4.0, "{m:?}");
}

/// A receiver that takes a push and never answers it costs
/// `--sink-hedge-after` (5 s), not `--sink-timeout` (30 s): the push goes
/// again on a second connection, and nothing else waits for the first.
#[test]
fn a_push_held_without_an_answer_is_hedged_on_a_second_connection() {
    let started = Instant::now();
    let (s, agent) = through("loki-hedge", |l| l.inject(lk::Match::Push, lk::Fault::NeverAnswer, 1), &[], 0);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "delivered {:?} after the start: the held push waited for --sink-timeout",
        started.elapsed()
    );
    assert_exactly_once(&s, &agent, &[]);
    let reqs = s.loki.requests();
    let i = reqs.iter().position(|r| r.fault == Some(lk::Fault::NeverAnswer)).unwrap();
    let hedge = &reqs[i + 1];
    assert_ne!(hedge.conn, reqs[i].conn, "the second try is on another connection");
    let waited = hedge.at.duration_since(reqs[i].at);
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(10),
        "sent again {waited:?} after the held push (hedge after 5 s)"
    );
    assert_eq!(agent.metric("log_capturer_sink_hedges_total"), 1.0);
    assert_eq!(agent.metric("log_capturer_sink_retries_total{reason=\"timeout\"}"), 0.0);
}

#[test]
fn a_head_that_never_comes_times_out_and_loses_nothing() {
    let (s, agent) = through(
        "loki-silent",
        |l| l.inject(lk::Match::Push, lk::Fault::NeverAnswer, 1),
        &["--sink-timeout", "2s"],
        0,
    );
    // NeverAnswer stores nothing: no repeat at all is acceptable.
    assert_exactly_once(&s, &agent, &[]);
    let reqs = s.loki.requests();
    let i = reqs.iter().position(|r| r.fault == Some(lk::Fault::NeverAnswer)).unwrap();
    let waited = reqs[i + 1].at.duration_since(reqs[i].at);
    assert!(
        waited >= Duration::from_secs(2),
        "retried {waited:?} after a push left unanswered (timeout 2 s)"
    );
    let m = agent.metrics();
    assert!(sample(&m, "log_capturer_sink_retries_total{reason=\"timeout\"}") >= 1.0, "{m:?}");
}

/// Pushes whose answer a fault lost after the double stored them: their
/// entries may come again (Loki's dedup absorbs them), nothing else may.
fn lost_answers(loki: &lk::Double) -> HashSet<u64> {
    loki.requests()
        .iter()
        .filter(|r| {
            matches!(r.fault, Some(lk::Fault::SlowBody { .. } | lk::Fault::ResetMidResponse { stored: true }))
        })
        .map(|r| r.seq)
        .collect()
}

fn assert_repeats_only_of_lost_answers(s: &Scenario, agent: &Agent) {
    let d = s.delivery(&[]);
    assert!(
        d.missing.is_empty() && d.unexpected.is_empty() && d.bad.is_empty(),
        "{}",
        fail("loss", &d, agent)
    );
    let allowed = lost_answers(&s.loki);
    let outside = d.repeats_outside(&allowed);
    assert!(
        outside.is_empty(),
        "{}",
        fail(&format!("repeats beyond the lost answers {allowed:?}"), &d, agent)
    );
}

#[test]
fn a_slow_body_loses_nothing_and_repeats_only_that_push() {
    let (s, agent) = through(
        "loki-slow",
        |l| l.inject(lk::Match::Push, lk::Fault::SlowBody { len: 40, every: Duration::from_millis(100) }, 1),
        &["--sink-timeout", "2s"],
        0,
    );
    assert_repeats_only_of_lost_answers(&s, &agent);
}

#[test]
fn resets_mid_response_lose_nothing_and_repeat_only_the_stored_push() {
    let (s, agent) = through(
        "loki-reset",
        |l| {
            l.inject(lk::Match::Push, lk::Fault::ResetMidResponse { stored: true }, 1);
            l.inject(lk::Match::Push, lk::Fault::ResetMidResponse { stored: false }, 1);
        },
        &[],
        0,
    );
    assert_repeats_only_of_lost_answers(&s, &agent);
    let m = agent.metrics();
    assert!(sample(&m, "log_capturer_sink_retries_total{reason=\"connection\"}") >= 2.0, "{m:?}");
}

#[test]
fn entries_refused_with_400_are_counted_never_resent_and_the_rest_stored() {
    // Lines "fa 7 …", "fa 70 …" to "fa 79 …": refused as too old.
    const MARK: &str = "fa 7";
    let mut s = Scenario::new("loki-400");
    s.loki.inject(
        lk::Match::LineContains(MARK.into()),
        lk::Fault::RejectLines { marker: MARK.into(), reason: lk::Reason::GreaterThanMaxSampleAge },
        1000,
    );
    let agent = s.agent(&[]);
    two_writers(&mut s, "fa", "fb", 300.0, 300);
    assert!(s.wait_written(T));
    let marked = |line: &[u8]| String::from_utf8_lossy(line).contains(MARK);
    let refused: Vec<Want> = s.truth().into_iter().filter(|w| marked(&w.line)).collect();
    assert_eq!(refused.len(), 11);
    let n = refused.len() as u64;
    assert!(s.wait_delivered(n, T), "{}", fail("not all delivered", &s.delivery(&[]), &agent));
    let d = s.delivery(&[]);
    let missing_unmarked: Vec<_> = d.missing.iter().filter(|k| !marked(&k.3)).collect();
    assert!(missing_unmarked.is_empty() && d.unexpected.is_empty(), "{}", fail("loss", &d, &agent));
    assert_eq!(d.missing.len(), refused.len(), "{}", fail("refused lines stored", &d, &agent));
    // Never resent: each refused entry arrived once, and nothing else twice.
    assert!(d.repeated.is_empty(), "{}", fail("resent", &d, &agent));
    assert_eq!(s.loki.stats().rejected(lk::Reason::GreaterThanMaxSampleAge), n);
    // Loki 2.9 lists every refusal of a push, alike ones grouped with
    // their number ("8 errors like: …; 3 errors like: …"), and so does the
    // double: the metric counts each refused line once.
    let metric = || agent.metric("log_capturer_sink_rejected_lines_total{reason=\"too_old\"}");
    assert!(
        wait_for(T, || metric() == n as f64),
        "rejected lines metric {:?}, want {n} too_old (the refused lines)\n{}",
        agent.metrics().into_iter().filter(|(k, _)| k.contains("rejected")).collect::<Vec<_>>(),
        agent.stderr()
    );
    // Said, and truthfully: Loki stored the others.
    assert!(agent.stderr().contains("it stored the others"), "{}", agent.stderr());
}

/// GET /healthz: (status, body).
fn healthz(agent: &Agent) -> (u16, String) {
    agent.get("/healthz")
}

#[test]
fn unauthorized_401_makes_healthz_unhealthy_then_delivers_everything_once_fixed() {
    let mut s = Scenario::new("loki-401");
    s.loki.inject(lk::Match::Push, lk::Fault::Status(401), 1_000_000);
    let agent = s.agent(&[]);
    two_writers(&mut s, "fa", "fb", 300.0, 300);
    assert!(
        wait_for(T, || healthz(&agent).0 == 503),
        "/healthz {:?} while Loki answers 401\n{}",
        healthz(&agent),
        agent.stderr()
    );
    let (_, body) = healthz(&agent);
    assert!(body.contains("401") || body.to_lowercase().contains("unauthori"), "/healthz says {body:?}");
    assert_eq!(s.loki.stats().entries_stored, 0);
    s.loki.clear_faults();
    // Retried slowly (every 10 s): allow for a period and more.
    assert!(
        s.wait_delivered(0, T + Duration::from_secs(30)),
        "{}",
        fail("not delivered after the 401 cleared", &s.delivery(&[]), &agent)
    );
    assert_exactly_once(&s, &agent, &[]);
    assert!(wait_for(T, || healthz(&agent).0 == 200), "/healthz {:?} after recovery", healthz(&agent));
}

/// A 400 whose message the agent does not know is a whole-request refusal
/// (Loki may have stored nothing of it): not one line is dropped, the
/// operator is told, /healthz fails, and once Loki takes the push every
/// line arrives once.
#[test]
fn a_400_refusing_the_whole_push_drops_nothing_and_says_so() {
    let mut s = Scenario::new("loki-400-request");
    s.loki.inject(lk::Match::Push, lk::Fault::Status(400), 1_000_000);
    let agent = s.agent(&[]);
    two_writers(&mut s, "ra", "rb", 300.0, 300);
    assert!(
        wait_for(T, || healthz(&agent).0 == 503),
        "/healthz {:?} while Loki answers 400 to every push\n{}",
        healthz(&agent),
        agent.stderr()
    );
    assert!(healthz(&agent).1.contains("400 Bad Request"), "/healthz says {:?}", healthz(&agent));
    assert!(agent.stderr().contains("not one of its lines is dropped"), "{}", agent.stderr());
    assert_eq!(agent.metric("log_capturer_sink_rejected_lines_total{reason=\"too_old\"}"), 0.0);
    assert!(agent.metric("log_capturer_sink_requests_total{result=\"refused\"}") >= 1.0);
    assert_eq!(s.loki.stats().entries_stored, 0);
    s.loki.clear_faults();
    assert!(
        s.wait_delivered(0, T + Duration::from_secs(30)),
        "{}",
        fail("not delivered after the 400s stopped", &s.delivery(&[]), &agent)
    );
    assert_exactly_once(&s, &agent, &[]);
    assert!(wait_for(T, || healthz(&agent).0 == 200), "/healthz {:?} after recovery", healthz(&agent));
}

#[test]
fn tls_with_the_test_ca_and_a_client_certificate_delivers_everything_once() {
    let tls = lk::TlsConfig { require_client_cert: true, ..lk::TlsConfig::default() };
    let mut s = Scenario::with_loki("loki-mtls", lk::Config { tls: Some(tls), ..lk::Config::default() });
    let pki = s.loki.pki().unwrap();
    let (ca, cert, key) = (
        pki.ca_file.display().to_string(),
        pki.client.cert_file.display().to_string(),
        pki.client.key_file.display().to_string(),
    );
    let agent = s.agent(&["--sink-ca-file", &ca, "--sink-client-cert", &cert, "--sink-client-key", &key]);
    two_writers(&mut s, "ta", "tb", 300.0, 300);
    assert!(s.wait_delivered(0, T), "{}", fail("not all delivered over mTLS", &s.delivery(&[]), &agent));
    assert_exactly_once(&s, &agent, &[]);
    assert_eq!(s.loki.stats().tls_handshake_failures, 0);
}

#[test]
fn a_certificate_from_another_ca_is_refused_and_healthz_says_so() {
    let tls = lk::TlsConfig { wrong_ca: true, ..lk::TlsConfig::default() };
    let mut s = Scenario::with_loki("loki-wrong-ca", lk::Config { tls: Some(tls), ..lk::Config::default() });
    let ca = s.loki.pki().unwrap().ca_file.display().to_string();
    let agent = s.agent(&["--sink-ca-file", &ca]);
    two_writers(&mut s, "wa", "wb", 300.0, 100);
    assert!(
        wait_for(T, || healthz(&agent).0 == 503),
        "/healthz {:?} while the certificate is not trusted\n{}",
        healthz(&agent),
        agent.stderr()
    );
    let (_, body) = healthz(&agent);
    let b = body.to_lowercase();
    assert!(b.contains("certificate") || b.contains("tls"), "/healthz says {body:?}");
    assert!(s.loki.stats().tls_handshake_failures >= 1);
    assert_eq!(s.loki.stats().entries_stored, 0, "lines sent to an untrusted server");
}

// ---- 3. outage with the agent killed in the middle ----

#[test]
fn outage_with_the_agent_killed_in_the_middle_loses_nothing() {
    let outage = secs_from_env("LC_OUTAGE_SECS", 20);
    let mut s = Scenario::new("loki-outage");
    // A queue that fills within seconds: reading pauses during the outage
    // (and, past a minute, paused streams are closed and reopened).
    let flags = ["--loki-batch-bytes", "8KiB", "--sink-queue-bytes", "32KiB"];
    let mut agent = s.agent(&flags);
    let rate = 50.0;
    let total = (rate as u64) * (outage.as_secs() + 10);
    two_writers(&mut s, "oa", "ob", rate, total);
    assert!(s.wait_stored(100, T), "nothing delivered before the outage\n{}", agent.stderr());
    let down = Instant::now();
    s.loki.outage();
    // Requests complete before the outage began: the last one's answer may
    // have been lost with its connection.
    let last = s.loki.requests().last().map_or(0, |r| r.seq);
    std::thread::sleep(outage / 2);
    let st = agent.stop("KILL");
    assert!(!st.success());
    agent = s.agent(&flags);
    // The restarted agent finds Loki down: connections refused, backlog ages.
    assert!(
        wait_for(T, || {
            let m = agent.metrics();
            sample(&m, "log_capturer_sink_retries_total{reason=\"connection\"}") >= 1.0
                && sample(&m, "log_capturer_sink_up") == 0.0
                && sample(&m, "log_capturer_sink_backlog_age_seconds") >= 1.0
        }),
        "during the outage: {:?}\n{}",
        agent.metrics().into_iter().filter(|(k, _)| k.starts_with("log_capturer_sink")).collect::<Vec<_>>(),
        agent.stderr()
    );
    // Through the rest of the outage the queue stays within its bound: near
    // the cap the agent reads log streams in pieces sized to the room left
    // (at least 2 KiB), so it may pass it by what one such piece becomes in
    // a batch (short lines grow by their metadata), no more.
    let bound = (32 << 10) as f64;
    let (mut max, mut over) = (0.0f64, None);
    while down.elapsed() < outage {
        let q = agent.metric("log_capturer_sink_queue_bytes");
        max = max.max(q);
        if q > bound + 8192.0 && over.is_none() {
            over = Some(down.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(max > 0.0, "nothing queued during the outage");
    assert_eq!(s.loki.requests().last().map_or(0, |r| r.seq), last, "a push arrived during the outage");
    s.loki.resume().unwrap();
    assert!(s.wait_delivered(0, T + outage), "{}", fail("not all delivered", &s.delivery(&[]), &agent));
    let d = s.delivery(&[]);
    assert!(
        d.missing.is_empty() && d.unexpected.is_empty() && d.bad.is_empty(),
        "{}",
        fail("loss", &d, &agent)
    );
    let outside = d.repeats_outside(&HashSet::from([last]));
    assert!(outside.is_empty(), "{}", fail(&format!("repeats beyond push {last}, in flight"), &d, &agent));
    assert!(wait_for(T, || agent.metric("log_capturer_sink_up") == 1.0));
    // Checked last, so that a run shows the delivery result too.
    assert_eq!(
        over, None,
        "queue up to {max} bytes (over 40 KiB this far into the outage), bound 32 KiB + 8 KiB"
    );
}

// ---- 3b. a pause longer than a minute closes the streams ----

/// Reading pauses when the queue is full; a minute later the paused streams
/// are closed (an outage of hours holds no dockerd connection), and they are
/// reopened where they stopped once Loki takes lines again: nothing lost,
/// nothing repeated but the push in flight when Loki went away.
#[test]
fn streams_paused_a_minute_are_closed_then_reopened_where_they_stopped() {
    let mut s = Scenario::new("loki-park");
    let flags = ["--loki-batch-bytes", "8KiB", "--sink-queue-bytes", "32KiB"];
    let agent = s.agent(&flags);
    let rate = 100.0;
    let total = (rate as u64) * 100;
    two_writers(&mut s, "pa", "pb", rate, total);
    assert!(s.wait_stored(100, T), "nothing delivered before the outage\n{}", agent.stderr());
    s.loki.outage();
    let down = Instant::now();
    let last = s.loki.requests().last().map_or(0, |r| r.seq);
    // Streams stay open while paused, until the minute is up.
    assert!(wait_for(T, || agent.metric("log_capturer_sink_queue_bytes") >= (24 << 10) as f64));
    assert_eq!(
        agent.metric("log_capturer_active_streams"),
        2.0,
        "closed before the minute\n{}",
        agent.stderr()
    );
    assert!(
        wait_for(Duration::from_secs(90), || agent.metric("log_capturer_active_streams") == 0.0),
        "paused streams still open after {:?}\n{}",
        down.elapsed(),
        agent.stderr()
    );
    assert!(down.elapsed() >= Duration::from_secs(55), "closed after only {:?}", down.elapsed());
    assert!(agent.stderr().contains("closing 2 log streams"), "{}", agent.stderr());
    s.loki.resume().unwrap();
    assert!(
        wait_for(T, || agent.metric("log_capturer_active_streams") == 2.0),
        "streams not reopened once Loki was back\n{}",
        agent.stderr()
    );
    assert!(
        s.wait_delivered(0, T + Duration::from_secs(60)),
        "{}",
        fail("not all delivered", &s.delivery(&[]), &agent)
    );
    let d = s.delivery(&[]);
    assert!(
        d.missing.is_empty() && d.unexpected.is_empty() && d.bad.is_empty(),
        "{}",
        fail("loss", &d, &agent)
    );
    let outside = d.repeats_outside(&HashSet::from([last]));
    assert!(outside.is_empty(), "{}", fail(&format!("repeats beyond push {last}, in flight"), &d, &agent));
}

// ---- 4. checkpoints never ahead of acknowledgements ----

#[test]
fn kill_9_at_random_moments_loses_nothing() {
    let kills: usize = std::env::var("LC_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let mut rng = Rng::from_env("kill_9_at_random_moments_loses_nothing");
    let mut s = Scenario::new("loki-kill9");
    // Small batches: more pushes, so more kills land with one in flight.
    let flags = ["--loki-batch-bytes", "8KiB", "--sink-queue-bytes", "64KiB"];
    let mut agent = s.agent(&flags);
    let rate = 150.0;
    let total = 3000;
    s.start(["ka", "kb", "kc"].iter().map(|n| ContainerSpec::new(*n).writer(writer(rate, total))).collect());
    // Now and then Loki answers slowly, so that kills find a push open.
    s.loki.inject(lk::Match::Push, lk::Fault::SlowResponse { every: Duration::from_millis(2) }, 30);
    for k in 0..kills {
        let before = s.loki.stats().entries_stored;
        std::thread::sleep(Duration::from_millis(rng.between(200, 1500)));
        let st = agent.stop("KILL");
        assert!(!st.success());
        say(&format!(
            "kill {k}: {} stored so far (+{})",
            s.loki.stats().entries_stored,
            s.loki.stats().entries_stored - before
        ));
        agent = s.agent(&flags);
    }
    assert!(s.wait_delivered(0, T), "{}", fail("not all delivered", &s.delivery(&[]), &agent));
    let d = s.delivery(&[]);
    assert!(
        d.missing.is_empty() && d.unexpected.is_empty() && d.bad.is_empty(),
        "{}",
        fail("loss", &d, &agent)
    );
    // A crash replays what was unacknowledged: at most about a second of
    // lines per kill (here 450 lines/s) and a batch.
    let repeated = d.repeated.len();
    say(&format!("{kills} kills: {repeated} entries arrived more than once"));
    assert!(repeated as f64 <= kills as f64 * (3.0 * rate * 1.5 + 200.0), "{}", d.summary());
}

// ---- 5. a DNS server that never answers ----

/// GET /metrics within `limit`, or why not.
fn metrics_within(agent: &Agent, limit: Duration) -> Result<BTreeMap<String, f64>, String> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&agent.metrics, limit).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(limit)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| format!("read after {:?}: {e}", t.elapsed()))?;
    if t.elapsed() > limit {
        return Err(format!("/metrics took {:?}", t.elapsed()));
    }
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect())
}

/// A UDP socket (and a TCP listener on the same port) on 127.0.0.1 that
/// never answer: a DNS server that is down without saying so.
fn silent_dns() -> (UdpSocket, std::net::TcpListener) {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP");
}

#[test]
fn a_dns_server_that_never_answers_blocks_nothing_and_hosts_file_works() {
    let (udp, _tcp) = silent_dns();
    let mut s = Scenario::new("loki-dns");
    let resolv = write_file(
        &s.dir.0,
        "resolv.conf",
        &format!("nameserver {}\noptions timeout:1 attempts:1\n", udp.local_addr().unwrap()),
    );
    let no_hosts = write_file(&s.dir.0, "hosts", "127.0.0.1 localhost\n");
    let url = format!("http://loki.test:{}/loki/api/v1/push", s.loki.addr().port());
    let env = [("LOG_CAPTURER_RESOLV_CONF", resolv.as_str()), ("LOG_CAPTURER_HOSTS", no_hosts.as_str())];
    let agent = s.agent_to(&url, &[], &env);
    two_writers(&mut s, "da", "db", 200.0, 400);
    let total = s.total() as f64;
    let mut dns_retries = Vec::new();
    let mut slow = None;
    let ok = wait_for(T, || match metrics_within(&agent, Duration::from_secs(1)) {
        Err(e) => {
            slow = Some(e);
            true
        }
        Ok(m) => {
            let r = sample(&m, "log_capturer_sink_retries_total{reason=\"dns\"}");
            if dns_retries.last() != Some(&r) {
                dns_retries.push(r);
            }
            family_sum(&m, "log_capturer_lines_total") >= total
                && sample(&m, "log_capturer_sink_queue_bytes") > 0.0
                && dns_retries.len() >= 3
        }
    });
    assert_eq!(slow, None, "/metrics did not answer within 1 s while DNS hung\n{}", agent.stderr());
    assert!(
        ok,
        "streams not read into the queue, or the name not retried: dns retries {dns_retries:?}, {:?}\n{}",
        agent
            .metrics()
            .into_iter()
            .filter(|(k, _)| k.contains("lines_total") || k.contains("sink"))
            .collect::<Vec<_>>(),
        agent.stderr()
    );
    // The queries did go to the configured server.
    udp.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    let mut queries = 0;
    while udp.recv_from(&mut buf).is_ok() {
        queries += 1;
    }
    assert!(queries >= 1, "no query reached the resolv.conf server");
    assert_eq!(s.loki.stats().connections_total, 0);
    agent.stop("KILL");

    // The same name from a hosts file: everything goes, once (nothing was
    // acknowledged, so the checkpoints had not moved).
    let hosts = write_file(&s.dir.0, "hosts2", "127.0.0.1 localhost\n127.0.0.1 loki.test\n");
    let env = [("LOG_CAPTURER_RESOLV_CONF", resolv.as_str()), ("LOG_CAPTURER_HOSTS", hosts.as_str())];
    let agent = s.agent_to(&url, &[], &env);
    assert!(
        s.wait_delivered(0, T),
        "{}",
        fail("not delivered with the hosts file", &s.delivery(&[]), &agent)
    );
    assert_exactly_once(&s, &agent, &[]);
}

// ---- 6. metrics ----

#[test]
fn sink_metrics_have_the_contracts_names_labels_and_values() {
    const MARK: &str = "ma 5";
    let mut s = Scenario::new("loki-metrics");
    s.loki.inject(lk::Match::Push, lk::Fault::Status(500), 1);
    s.loki.inject(
        lk::Match::LineContains(MARK.into()),
        lk::Fault::RejectLines { marker: MARK.into(), reason: lk::Reason::LineTooLong },
        1000,
    );
    let agent = s.agent(&[]);
    two_writers(&mut s, "ma", "mb", 300.0, 300);
    assert!(s.wait_written(T));
    let refused = s.truth().iter().filter(|w| String::from_utf8_lossy(&w.line).contains(MARK)).count() as u64;
    assert!(s.wait_delivered(refused, T), "{}", fail("not all delivered", &s.delivery(&[]), &agent));
    // Idle once everything is acknowledged.
    assert!(
        wait_for(T, || {
            let m = agent.metrics();
            sample(&m, "log_capturer_sink_queue_bytes") == 0.0
                && sample(&m, "log_capturer_sink_backlog_age_seconds") == 0.0
        }),
        "queue not empty after everything was stored: {:?}",
        agent.metrics()
    );
    let (_, text) = agent.get("/metrics");
    let m = agent.metrics();
    let st = s.loki.stats();
    for (family, kind) in [
        ("log_capturer_sink_up", "gauge"),
        ("log_capturer_sink_requests", "counter"),
        ("log_capturer_sink_lines", "counter"),
        ("log_capturer_sink_bytes", "counter"),
        ("log_capturer_sink_request_duration_seconds", "histogram"),
        ("log_capturer_sink_retries", "counter"),
        ("log_capturer_sink_rejected_lines", "counter"),
        ("log_capturer_sink_queue_bytes", "gauge"),
        ("log_capturer_sink_backlog_age_seconds", "gauge"),
    ] {
        assert!(
            text.contains(&format!(
                "# TYPE {family}{} {kind}\n",
                if kind == "counter" { "_total" } else { "" }
            )),
            "no `# TYPE {family}[_total] {kind}` in:\n{text}"
        );
    }
    let allowed: [(&str, &str, &[&str]); 3] = [
        ("log_capturer_sink_requests_total", "result", &["ok", "rejected", "retry", "refused"]),
        (
            "log_capturer_sink_retries_total",
            "reason",
            &["rate_limited", "server_error", "connection", "timeout", "dns", "refused", "early_answer"],
        ),
        ("log_capturer_sink_rejected_lines_total", "reason", &["too_old", "too_new", "line_too_long"]),
    ];
    for (name, label, values) in allowed {
        for k in m.keys().filter(|k| k.starts_with(&format!("{name}{{"))) {
            let ok = values.iter().any(|v| *k == format!("{name}{{{label}=\"{v}\"}}"));
            assert!(ok, "{k}: not one of {label}={values:?}");
        }
    }
    assert_eq!(sample(&m, "log_capturer_sink_up"), 1.0);
    // Pushes only: whatever else the agent may ask (a readiness probe)
    // is not a push request.
    let pushes = s.loki.requests().iter().filter(|r| r.method == "POST").count() as f64;
    assert_eq!(family_sum(&m, "log_capturer_sink_requests_total"), pushes, "{m:?}");
    assert_eq!(sample(&m, "log_capturer_sink_requests_total{result=\"retry\"}"), 1.0, "one 500");
    assert!(sample(&m, "log_capturer_sink_requests_total{result=\"rejected\"}") >= 1.0);
    assert_eq!(sample(&m, "log_capturer_sink_retries_total{reason=\"server_error\"}"), 1.0);
    assert_eq!(
        sample(&m, "log_capturer_sink_rejected_lines_total{reason=\"line_too_long\"}"),
        refused as f64,
        "every refused line, as Loki lists them (Loki said {:?}): {:?}",
        s.loki.requests().iter().find(|r| r.status == 400).and_then(|r| r.message.clone()),
        m.iter().filter(|(k, _)| k.contains("rejected_lines")).collect::<Vec<_>>()
    );
    let lines = sample(&m, "log_capturer_sink_lines_total");
    assert!(
        lines >= st.entries_stored as f64 && lines <= (st.entries_stored + refused) as f64,
        "sink_lines_total {lines}, stored {}, refused {refused}",
        st.entries_stored
    );
    assert_eq!(sample(&m, "log_capturer_sink_bytes_total"), st.bytes_received as f64, "bytes on the wire");
    assert_eq!(sample(&m, "log_capturer_sink_request_duration_seconds_count"), pushes);
}

// ---- 7. real dockerd ----

#[test]
fn real_dockerd_containers_to_loki_nothing_lost_nothing_repeated() {
    use real_docker::*;
    let Some(d) = daemon("real_dockerd_containers_to_loki") else { return };
    let g = Group::new(&d, "loki");
    let dir = TempDir::new("loki-real");
    let l = lk::Double::start(lk::Config::default()).unwrap();
    let label = g.label();
    let url = l.url();
    let agent = Agent::start_sink(
        &d.socket,
        &dir.0,
        &["--include-label", &label, "--loki", &url, "--loki-batch-wait", "200ms"],
        &[],
    );
    wait_docker_up(&agent);
    let total = 3000;
    let names: Vec<String> = (0..4)
        .map(|k| g.run(&format!("l{k}"), &[], &numbered(&g.name(&format!("l{k}")), total, 1000)))
        .collect();
    assert!(wait_exited(&d, &names, Duration::from_secs(240)), "containers did not finish");
    let numbers = |name: &str| -> Vec<u64> {
        let mut v: Vec<u64> = l
            .entries()
            .iter()
            .filter(|e| e.label("container").as_deref() == Some(name))
            .filter_map(|e| e.line_str().split(' ').nth(1).and_then(|n| n.parse().ok()))
            .collect();
        v.sort_unstable();
        v
    };
    let done = wait_for(T, || names.iter().all(|n| numbers(n).len() as u64 >= total));
    for n in &names {
        assert_eq!(logged_numbers(&d, n), (1..=total).collect::<Vec<_>>(), "{n}: docker logs");
        let got = numbers(n);
        let mut distinct = got.clone();
        distinct.dedup();
        assert!(
            done && distinct == (1..=total).collect::<Vec<_>>(),
            "{n}: {} distinct of {total}\n{}",
            distinct.len(),
            agent.stderr()
        );
        assert_eq!(got.len(), distinct.len(), "{n}: repeated lines stored");
    }
    let repeats = l.arrivals().values().filter(|n| **n > 1).count();
    assert_eq!((repeats, l.stats().duplicates_dropped), (0, 0), "lines sent more than once");
}

// ---- the checker itself ----

/// Push `wants` to the double as a client would (JSON, one request).
fn push_json(loki: &lk::Double, wants: &[&Want], host: &str) {
    let streams: Vec<serde_json::Value> = wants
        .iter()
        .map(|w| {
            let mut labels = serde_json::json!({"host": host, "container": w.name, "stream": w.stream});
            for (d, l) in [("com.docker.compose.project", "compose_project"), ("com.docker.compose.service", "compose_service")] {
                if let Some(v) = w.labels.get(d) {
                    labels[l] = v.clone().into();
                }
            }
            serde_json::json!({
                "stream": labels,
                "values": [[w.ts_ns.to_string(), String::from_utf8_lossy(&w.line), {"container_id": w.id, "image": w.image}]],
            })
        })
        .collect();
    let body = serde_json::json!({ "streams": streams }).to_string();
    let mut s = TcpStream::connect(loki.addr()).unwrap();
    write!(
        s,
        "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 204"), "{resp}");
}

/// The comparison these tests rely on sees loss, repeats and wrong labels
/// (no agent involved: the test plays the client).
#[test]
fn the_checker_sees_loss_repeats_and_wrong_labels() {
    let mut s = Scenario::new("loki-checker");
    s.start(vec![
        ContainerSpec::new("ca").label("com.docker.compose.project", "p").writer(writer(2000.0, 40)),
        ContainerSpec::new("cb").writer(writer(2000.0, 40)),
    ]);
    assert!(s.wait_written(T));
    let truth = s.truth();
    let host = hostname();
    // All but one, and one of them twice.
    let sent: Vec<&Want> = truth.iter().skip(1).collect();
    push_json(&s.loki, &sent, &host);
    push_json(&s.loki, &sent[..1], &host);
    let d = s.delivery(&[]);
    assert_eq!(
        (d.wanted, d.stored, d.missing.len(), d.unexpected.len(), d.bad.len()),
        (80, 79, 1, 0, 0),
        "{}",
        d.summary()
    );
    assert_eq!(d.missing[0], truth[0].key());
    assert_eq!(d.repeated.len(), 1, "{}", d.summary());
    assert_eq!((d.repeated[0].0.clone(), d.repeated[0].1), (sent[0].key(), 2));
    assert_eq!(d.repeats_outside(&HashSet::from([1])).len(), 0);
    // Wrong host label: every entry is flagged.
    push_json(&s.loki, &[&truth[0]], "elsewhere");
    let d = s.delivery(&[]);
    assert_eq!((d.missing.len(), d.bad.len()), (0, 1), "{}", d.summary());
    // The wrong static labels asked for: all flagged.
    assert_eq!(s.delivery(&[("env", "ci")]).bad.len(), 20, "capped at 20 descriptions");
}
