//! The agent's answer policy (README, "Shipping to Loki"; `src/sink/outcome.rs`)
//! against a **real Grafana Loki 2.9.9** started with limits that make it
//! refuse, issue 17 item 3: what the agent did is compared with what Loki
//! stored (`query_range`) and what Loki says it discarded (its `/metrics`).
//!
//! - an entry-level 400 (lines over `max_line_size`): the others stored
//!   once, the long ones refused once each and never sent again;
//! - a request-level 400 (more label names than Loki takes): nothing
//!   dropped, `/healthz` 503; once Loki runs without the limit (restarted on
//!   the same data), every line once;
//! - a per-stream 429 that stores part of each push: every line once in
//!   the end (Loki drops the resent part it holds);
//! - structured metadata negotiated again by an agent restarted after
//!   `kill -9`: one message per run, nothing lost;
//! - `log-capturer check` against 2.9.9 (defaults, schema v13) and 2.8.11.
//!
//! Each test starts its own Loki (they run side by side). Needs
//! `LC_LOKI_DIR` (see `tests/common/real_loki.rs`); skips without it unless
//! `LC_REQUIRE_LOKI=1`.

mod common;
#[path = "common/loki.rs"]
mod loki;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::real_loki::{say, Loki, Stored, Variant};
use common::{wait_until, Agent, ContainerSpec, Stream, TempDir, Writer};
use loki::{family_sum, sample, writer, Container, Delivery, Key, Scenario, Want, T};
use serde_json::Value;

const GAUGE: &str = "log_capturer_sink_structured_metadata_enabled";
/// What the agent says when it turns structured metadata off.
const METADATA_OFF: &str = "does not take structured metadata";
const REJECTED: &str = "log_capturer_sink_rejected_lines_total";

/// The agent's stderr and the tail of Loki's log, for a failure message.
fn context(agent: &Agent, loki: &Loki) -> String {
    format!("\n--- agent stderr:\n{}--- Loki's log (tail):\n{}", agent.stderr(), loki.log_tail(20))
}

/// What Loki stored against every line Docker holds: missing, unexpected
/// (not a line of `truth`), repeated (returned more than once by
/// `query_range`: Loki stored it twice).
fn compare(truth: &[Want], stored: &[Stored]) -> Delivery {
    let mut d = Delivery { wanted: truth.len(), stored: stored.len(), ..Delivery::default() };
    let want: HashSet<Key> = truth.iter().map(Want::key).collect();
    let mut seen: HashMap<Key, u32> = HashMap::new();
    for e in stored {
        let get = |k: &str| e.labels.get(k).cloned().unwrap_or_default();
        let k: Key = (get("container"), get("stream"), e.ts_ns, e.line.as_bytes().to_vec());
        *seen.entry(k.clone()).or_default() += 1;
        if !want.contains(&k) {
            d.unexpected.push(k);
        }
    }
    for w in truth {
        if !seen.contains_key(&w.key()) {
            d.missing.push(w.key());
        }
    }
    d.missing.sort();
    d.repeated = seen.into_iter().filter(|(_, n)| *n > 1).map(|(k, n)| (k, n, 0)).collect();
    d.repeated.sort();
    d
}

fn exact(d: &Delivery) -> bool {
    d.missing.is_empty() && d.unexpected.is_empty() && d.repeated.is_empty() && d.stored == d.wanted
}

/// Nothing waits in the agent: the queue empty, no unacknowledged line.
fn idle(agent: &Agent) -> bool {
    let m = agent.metrics();
    sample(&m, "log_capturer_sink_queue_bytes") == 0.0
        && sample(&m, "log_capturer_sink_backlog_age_seconds") == 0.0
}

/// What Loki holds for `selector` once it holds `want` entries, or once
/// the agent has had nothing left to send for five seconds in a row (what
/// is missing then is lost), at most `within`.
fn wait_held(loki: &Loki, selector: &str, want: usize, agent: &Agent, within: Duration) -> Vec<Stored> {
    wait_held_paged(loki, selector, want, agent, within, 5000)
}

/// [`wait_held`] reading `query_range` in pages of `page` entries.
fn wait_held_paged(
    loki: &Loki,
    selector: &str,
    want: usize,
    agent: &Agent,
    within: Duration,
    page: usize,
) -> Vec<Stored> {
    let mut idle_since: Option<Instant> = None;
    let mut stored = Vec::new();
    let now = common::real_loki::now_ns();
    wait_until(within, Duration::from_millis(500), || {
        stored = loki.entries_paged(selector, now - 2 * 3_600_000_000_000, now + 600_000_000_000, page);
        if stored.len() >= want {
            return true;
        }
        if idle(agent) {
            idle_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(5)
        } else {
            idle_since = None;
            false
        }
    });
    stored
}

/// The agent's stderr lines that contain `needle`, each cut to `max`
/// characters.
fn said_with(agent: &Agent, needle: &str, max: usize) -> Vec<String> {
    agent.stderr().lines().filter(|l| l.contains(needle)).map(|l| l.chars().take(max).collect()).collect()
}

/// `/healthz`: (status, body).
fn health(agent: &Agent) -> (u16, String) {
    agent.get("/healthz")
}

/// Create and start a container without a writer (the test writes its
/// lines) and make it part of the scenario's truth.
fn bare_container(s: &mut Scenario, spec: ContainerSpec) -> String {
    let name = spec.name.clone();
    let id = s.docker.create_and_start(spec.clone());
    s.specs.insert(id.clone(), spec);
    s.containers.push(Container { id: id.clone(), name, total: 0 });
    id
}

/// How many times the agent said it turned structured metadata off.
fn metadata_messages(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.contains(METADATA_OFF)).count()
}

/// Loki's limit in `-distributor.max-line-size` (Loki's KB is 1024 bytes).
const LOKI_MAX_LINE: usize = 2048;

/// Entry-level refusals: Loki takes lines of at most 2 KB, the agent cuts
/// at 256 KiB, containers write numbered lines of which every fourth is
/// 3000 bytes. Loki refuses exactly those and stores the rest of each push
/// (ANSWERS.md, "(b') 1 ok line + 1 line of 300 KB in ONE push"): every
/// short line must be stored once, no long one, each long one refused once
/// (Loki's `loki_discarded_samples_total{reason="line_too_long"}` counts
/// every refusal, so a resend would show), the agent counting them as
/// rejected and saying the others were stored, `/healthz` 200 throughout.
#[test]
fn entry_level_refusals_drop_only_the_refused_lines_and_never_resend_them() {
    let test = "answers_entry_level";
    let Some(loki) = Loki::start(test, Variant::V2_9_9, &["-distributor.max-line-size=2KB"]) else { return };
    let t0 = Instant::now();
    let mut s = Scenario::new("answers-entry");
    let agent =
        s.agent_to(&loki.url(), &["--loki-max-line-bytes", "256KiB", "--loki-label", "case=entry"], &[]);
    let sel = "{case=\"entry\"}";
    let names = ["ea", "eb"];
    let ids: Vec<String> = names.iter().map(|n| bare_container(&mut s, ContainerSpec::new(*n))).collect();
    let mut unhealthy: Vec<(u16, String)> = Vec::new();
    let mut watch_health = |agent: &Agent| {
        let h = health(agent);
        if h.0 != 200 && unhealthy.len() < 5 {
            unhealthy.push(h);
        }
    };

    // First a few short lines, until the agent has found out that this Loki
    // refuses structured metadata: a push refused for its metadata is sent
    // again without it, and Loki would count the long lines of both.
    for (id, n) in ids.iter().zip(names) {
        for i in 1..=5 {
            s.docker.write(id, Stream::Stdout, format!("{n} {i} short").as_bytes());
        }
    }
    let ok = wait_until(T, Duration::from_millis(200), || {
        watch_health(&agent);
        agent.metric(GAUGE) == 0.0 && loki.entries(sel).len() >= 10
    });
    assert!(ok, "{test}: metadata not negotiated or the first 10 lines not stored{}", context(&agent, &loki));

    // Then 20 rounds of 10 lines per container, 100 ms apart (so that they
    // go in several pushes), every fourth 3000 bytes.
    let mut long = 0u64;
    for round in 0..20u64 {
        for (id, n) in ids.iter().zip(names) {
            for j in 1..=10u64 {
                let i = 5 + round * 10 + j;
                let line = if i % 4 == 0 {
                    long += 1;
                    let head = format!("{n} {i} long ");
                    format!("{head}{}", "L".repeat(3000 - head.len()))
                } else {
                    format!("{n} {i} short")
                };
                s.docker.write(id, Stream::Stdout, line.as_bytes());
            }
        }
        watch_health(&agent);
        // Pacing the writes, not waiting for anything to happen.
        std::thread::sleep(Duration::from_millis(100));
    }
    let truth = s.truth();
    let (long_lines, short): (Vec<Want>, Vec<Want>) =
        truth.into_iter().partition(|w| w.line.len() > LOKI_MAX_LINE);
    assert_eq!(long_lines.len() as u64, long, "the Docker double holds every long line whole");
    let all = (long_lines.len() + short.len()) as f64;

    // Every line answered for good, nothing waiting in the agent, and Loki
    // has counted a refusal for each long line.
    let ok = wait_until(T, Duration::from_millis(200), || {
        watch_health(&agent);
        agent.metric("log_capturer_sink_lines_total") >= all
            && idle(&agent)
            && loki.discarded().get("line_too_long").copied().unwrap_or(0.0) >= long as f64
    });
    let stored = loki.entries(sel);
    let d = compare(&short, &stored);
    let discarded = loki.discarded();
    let m = agent.metrics();
    let rejected = sample(&m, &format!("{REJECTED}{{reason=\"line_too_long\"}}"));
    say(&format!(
        "{test}: {:.0} s; {} short lines stored of {}, {long} long lines written; Loki discarded {discarded:?}, \
         received {}; the agent counted {rejected} rejected (line_too_long), requests {:?}",
        t0.elapsed().as_secs_f64(),
        stored.len(),
        short.len(),
        loki.lines_received(),
        requests(&m)
    ));
    assert!(
        ok,
        "{test}: the agent did not answer every line, or Loki refused fewer than {long}{}",
        context(&agent, &loki)
    );
    assert!(
        exact(&d),
        "{test}: want every short line once and no long one; {}{}",
        d.summary(),
        context(&agent, &loki)
    );
    let refusals = discarded.get("line_too_long").copied().unwrap_or(0.0);
    assert_eq!(
        refusals,
        long as f64,
        "{test}: Loki refused long lines {refusals} times, {long} were written: each should be sent once{}",
        context(&agent, &loki)
    );
    let other: BTreeMap<&String, &f64> = discarded
        .iter()
        .filter(|(k, v)| *k != "line_too_long" && *k != "disallowed_structured_metadata" && **v > 0.0)
        .collect();
    assert!(
        other.is_empty(),
        "{test}: Loki discarded for other reasons: {other:?}{}",
        context(&agent, &loki)
    );
    assert!(
        rejected > 0.0,
        "{test}: {REJECTED}{{reason=\"line_too_long\"}} is {rejected}{}",
        context(&agent, &loki)
    );
    assert!(
        sample(&m, "log_capturer_sink_requests_total{result=\"rejected\"}") >= 1.0,
        "{test}: no push counted rejected{}",
        context(&agent, &loki)
    );
    let err = agent.stderr();
    let said: Vec<&str> = err.lines().filter(|l| l.contains("refused")).collect();
    say(&format!("{test}: the agent said:\n{}", said.join("\n")));
    assert!(
        said.iter().any(|l| l.contains("line_too_long") && l.contains("it stored the others")),
        "{test}: the agent did not say that Loki stored the other lines{}",
        context(&agent, &loki)
    );
    watch_health(&agent);
    assert!(unhealthy.is_empty(), "{test}: /healthz was not 200: {unhealthy:?}{}", context(&agent, &loki));
}

/// The count of entry-level refusals, against what Loki says: 2.9.9
/// groups equal refusals in one line, `N errors like: <refusal>; M errors
/// like: <refusal>` (one group per stream and line length), and counts
/// each refused entry in `loki_discarded_samples_total`. One push of 10
/// long and 10 short lines over two streams: the agent's
/// `rejected_lines_total{reason="line_too_long"}` must be the 10 Loki
/// refused, and its message must not say fewer.
#[test]
fn entry_level_refusals_are_counted_as_loki_counts_them() {
    let test = "answers_entry_level_count";
    let Some(loki) = Loki::start(test, Variant::V2_9_9, &["-distributor.max-line-size=2KB"]) else { return };
    let mut s = Scenario::new("answers-count");
    let agent = s.agent_to(&loki.url(), &["--loki-label", "case=count"], &[]);
    let sel = "{case=\"count\"}";
    let id = bare_container(&mut s, ContainerSpec::new("ca"));
    // Metadata negotiated first (see the test above).
    s.docker.write(&id, Stream::Stdout, b"ca 0 short");
    let ok = wait_until(T, Duration::from_millis(200), || {
        agent.metric(GAUGE) == 0.0 && loki.entries(sel).len() == 1
    });
    assert!(ok, "{test}: metadata not negotiated or the first line not stored{}", context(&agent, &loki));
    for i in 1..=20 {
        let stream = if i % 2 == 0 { Stream::Stdout } else { Stream::Stderr };
        let line =
            if i % 4 < 2 { format!("ca {i} long {}", "L".repeat(3000)) } else { format!("ca {i} short") };
        s.docker.write(&id, stream, line.as_bytes());
    }
    let ok = wait_until(T, Duration::from_millis(200), || {
        agent.metric("log_capturer_sink_lines_total") >= 21.0
            && idle(&agent)
            && loki.discarded().get("line_too_long").copied().unwrap_or(0.0) >= 10.0
    });
    assert!(ok, "{test}: not every line answered{}", context(&agent, &loki));
    let loki_refused = loki.discarded().get("line_too_long").copied().unwrap_or(0.0);
    let counted = agent.metric(&format!("{REJECTED}{{reason=\"line_too_long\"}}"));
    let err = agent.stderr();
    let said: Vec<&str> = err.lines().filter(|l| l.contains("line_too_long")).collect();
    say(&format!(
        "{test}: Loki refused {loki_refused}, the agent counted {counted}; it said:\n{}",
        said.join("\n")
    ));
    assert_eq!(loki.entries(sel).len(), 11, "{test}: the short lines{}", context(&agent, &loki));
    assert_eq!(
        counted,
        loki_refused,
        "{test}: {REJECTED}{{reason=\"line_too_long\"}} is {counted}, Loki refused (and said it refused) \
         {loki_refused}{}",
        context(&agent, &loki)
    );
}

/// `log_capturer_sink_requests_total` by result.
fn requests(m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter()
        .filter_map(|(k, v)| {
            let r = k.strip_prefix("log_capturer_sink_requests_total{result=\"")?;
            Some((r.trim_end_matches("\"}").to_owned(), *v))
        })
        .collect()
}

/// A request-level 400: Loki takes 3 label names per stream, the agent's
/// streams have 6 (host, container, stream, compose_project,
/// compose_service, case). Every push is refused whole: nothing stored,
/// nothing dropped, `/healthz` 503 naming the 400. Then Loki is restarted
/// on the same data directory without the limit: the agent, trying again
/// every 10 s, delivers every line once.
#[test]
fn request_level_refusal_keeps_every_line_until_loki_takes_them() {
    let test = "answers_request_level";
    let low = ["-validation.max-label-names-per-series=3"];
    let Some(mut loki) = Loki::start(test, Variant::V2_9_9, &low) else { return };
    let t0 = Instant::now();
    // `check` warns of it before any push (item 5).
    let r = check_sink_rows(&loki, &["--loki-label", "case=request"]);
    let what = "check against max_label_names_per_series 3";
    expect_row(
        &r,
        "sink: Loki limits",
        "WARN",
        &["max_label_names_per_series 3", "every push would be refused"],
        what,
    );
    let mut s = Scenario::new("answers-request");
    let agent = s.agent_to(&loki.url(), &["--loki-label", "case=request"], &[]);
    let sel = "{case=\"request\"}";
    s.start(
        ["ra", "rb"]
            .into_iter()
            .map(|n| {
                ContainerSpec::new(n)
                    .label("com.docker.compose.project", "shop")
                    .label("com.docker.compose.service", n)
                    .writer(writer(100.0, 200))
            })
            .collect(),
    );
    let refused = |a: &Agent| a.metric("log_capturer_sink_requests_total{result=\"refused\"}");
    let ok = wait_until(T, Duration::from_millis(200), || {
        refused(&agent) >= 1.0 && s.written() >= s.total() && health(&agent).0 == 503
    });
    let (status, body) = health(&agent);
    let m = agent.metrics();
    say(&format!(
        "{test}: refused after {:.0} s; /healthz {status} {body:?}; requests {:?}; Loki discarded {:?}",
        t0.elapsed().as_secs_f64(),
        requests(&m),
        loki.discarded()
    ));
    assert!(
        ok,
        "{test}: no push counted refused with /healthz 503 within {T:?} (/healthz {status}: {body}){}",
        context(&agent, &loki)
    );
    assert!(
        body.contains("400") && body.contains("label names"),
        "{test}: /healthz does not name the 400: {body}{}",
        context(&agent, &loki)
    );
    let stored = loki.entries(sel);
    assert!(
        stored.is_empty(),
        "{test}: Loki stored {} entries with the low limit{}",
        stored.len(),
        context(&agent, &loki)
    );
    assert_eq!(
        family_sum(&m, REJECTED),
        0.0,
        "{test}: the agent dropped lines of a request-level 400 ({REJECTED}){}",
        context(&agent, &loki)
    );
    assert_eq!(
        sample(&m, "log_capturer_sink_lines_total"),
        0.0,
        "{test}: lines counted answered for good while Loki refused every push{}",
        context(&agent, &loki)
    );
    assert!(
        agent.stderr().contains("Nothing is dropped"),
        "{test}: the agent did not say the lines are kept{}",
        context(&agent, &loki)
    );

    // The limit lifted: same ports, same data directory.
    let t1 = Instant::now();
    loki.restart_with(&[]);
    let stored = wait_held(&loki, sel, s.total() as usize, &agent, Duration::from_secs(120));
    let d = compare(&s.truth(), &stored);
    say(&format!(
        "{test}: {} s after the restart without the limit: {}",
        t1.elapsed().as_secs(),
        d.summary()
    ));
    assert!(exact(&d), "{test}: after the limit was lifted: {}{}", d.summary(), context(&agent, &loki));
    let ok = wait_until(T, Duration::from_millis(200), || health(&agent).0 == 200);
    assert!(
        ok,
        "{test}: /healthz not 200 once Loki took every line: {:?}{}",
        health(&agent),
        context(&agent, &loki)
    );
    assert_eq!(family_sum(&agent.metrics(), REJECTED), 0.0, "{test}: {REJECTED}{}", context(&agent, &loki));
}

/// A request-level refusal beside entry-level ones in the same answer:
/// Loki takes 5 label names and lines of 2 KB; container `ms` has Compose
/// labels (6 label names: its stream is refused whole), `mp` has 4 and
/// writes some long lines, all in one push. Loki stores `mp`'s short lines
/// and nothing of `ms`, and says both in one line (`N errors like: entry
/// for stream … has 6 label names; limit 5; M errors like: Max entry size
/// … exceeded …`). `ms`'s lines were not stored and Loki did not say they
/// were refused for good: they must be kept (the push waits, `/healthz`
/// 503) and arrive once Loki takes them (restarted without the label
/// limit).
#[test]
fn a_stream_refused_whole_beside_refused_entries_is_kept_not_dropped() {
    let test = "answers_mixed";
    let line = "-distributor.max-line-size=2KB";
    let Some(mut loki) =
        Loki::start(test, Variant::V2_9_9, &[line, "-validation.max-label-names-per-series=5"])
    else {
        return;
    };
    let mut s = Scenario::new("answers-mixed");
    let agent = s.agent_to(&loki.url(), &["--loki-label", "case=mixed"], &[]);
    let sel = "{case=\"mixed\"}";
    let plain = bare_container(&mut s, ContainerSpec::new("mp"));
    let shop = bare_container(
        &mut s,
        ContainerSpec::new("ms")
            .label("com.docker.compose.project", "shop")
            .label("com.docker.compose.service", "ms"),
    );
    s.docker.write(&plain, Stream::Stdout, b"mp 0 short");
    let ok = wait_until(T, Duration::from_millis(200), || {
        agent.metric(GAUGE) == 0.0 && loki.entries(sel).len() == 1
    });
    assert!(ok, "{test}: metadata not negotiated or the first line not stored{}", context(&agent, &loki));
    for i in 1..=10 {
        s.docker.write(&shop, Stream::Stdout, format!("ms {i} short").as_bytes());
    }
    for i in 1..=5 {
        let l =
            if i % 2 == 1 { format!("mp {i} long {}", "L".repeat(3000)) } else { format!("mp {i} short") };
        s.docker.write(&plain, Stream::Stdout, l.as_bytes());
    }
    // Either the agent keeps the push (refused) or it counts it answered.
    let refused = |a: &Agent| a.metric("log_capturer_sink_requests_total{result=\"refused\"}");
    let ok = wait_until(T, Duration::from_millis(200), || {
        refused(&agent) >= 1.0 || (agent.metric("log_capturer_sink_lines_total") >= 16.0 && idle(&agent))
    });
    assert!(ok, "{test}: the push was neither kept nor answered{}", context(&agent, &loki));
    let m = agent.metrics();
    let (status, body) = health(&agent);
    let said = said_with(&agent, "refuse", 700);
    say(&format!(
        "{test}: after the mixed answer: requests {:?}, lines answered {}, rejected {}, /healthz {status} {:?}; \
         Loki holds {} of ms, discarded {:?}; the agent said:\n{}",
        requests(&m),
        sample(&m, "log_capturer_sink_lines_total"),
        family_sum(&m, REJECTED),
        body.chars().take(200).collect::<String>(),
        loki.entries("{container=\"ms\"}").len(),
        loki.discarded(),
        said.join("\n")
    ));

    // The label limit lifted: what was kept arrives.
    loki.restart_with(&[line]);
    let short: Vec<Want> = s.truth().into_iter().filter(|w| w.line.len() <= LOKI_MAX_LINE).collect();
    let stored = wait_held(&loki, sel, short.len(), &agent, Duration::from_secs(90));
    let d = compare(&short, &stored);
    say(&format!("{test}: after the restart without the label limit: {}", d.summary()));
    assert!(
        exact(&d),
        "{test}: want every short line once (ms's 10 too: Loki refused their stream whole, the agent must keep \
         them): {}{}",
        d.summary(),
        context(&agent, &loki)
    );
    assert!(
        refused(&agent) >= 1.0,
        "{test}: the push with a stream refused whole was not counted refused{}",
        context(&agent, &loki)
    );
}

/// Loki's own gRPC message limit (4 MB; the shipped config raises it to
/// 100 MB): a push above it is answered 500 `ResourceExhausted … larger
/// than max`, the same every time. The agent, allowed to merge a backlog
/// into pushes of 16 MiB, gets a 12 MB backlog (Loki away while the
/// container writes): it cuts the pushes until they fit and names the
/// limit. Every line once.
#[test]
fn pushes_above_lokis_grpc_limit_are_cut_until_they_fit() {
    let test = "answers_grpc_limit";
    let Some(mut loki) =
        Loki::start(test, Variant::V2_9_9, &["-server.grpc-max-recv-msg-size-bytes=4194304"])
    else {
        return;
    };
    loki.stop();
    let mut s = Scenario::new("answers-grpc");
    let agent =
        s.agent_to(&loki.url(), &["--loki-label", "case=grpc", "--loki-max-push-bytes", "16MiB"], &[]);
    let sel = "{case=\"grpc\"}";
    let w = Writer { lines_per_sec: 6000.0, stderr_every: 0, line_len: 1000, max_lines: Some(12_000) };
    s.start(vec![ContainerSpec::new("grpc").writer(w)]);
    assert!(s.wait_written(T), "{test}: the container did not write its lines");
    let total = s.total() as f64;
    // All read and queued while Loki is away: the backlog is one merge.
    let read = wait_until(T, Duration::from_millis(200), || {
        family_sum(&agent.metrics(), "log_capturer_lines_total") >= total
    });
    assert!(read, "{test}: the agent did not read the backlog{}", context(&agent, &loki));
    loki.restart();
    // Loki's answers to queries cross the same gRPC limit: pages of 1000
    // lines of 1 kB.
    let stored = wait_held_paged(&loki, sel, total as usize, &agent, Duration::from_secs(90), 1000);
    let d = compare(&s.truth(), &stored);
    let m = agent.metrics();
    let said = said_with(&agent, "gRPC", 400);
    say(&format!(
        "{test}: {}; requests {:?}; the agent said:\n{}",
        d.summary(),
        requests(&m),
        said.join("\n")
    ));
    assert!(exact(&d), "{test}: want every line once: {}{}", d.summary(), context(&agent, &loki));
    assert!(
        loki.log_tail(usize::MAX).contains("larger than max") || !said.is_empty(),
        "{test}: no push went above Loki's gRPC limit: the test proves nothing{}",
        context(&agent, &loki)
    );
    assert!(!said.is_empty(), "{test}: the agent did not name Loki's gRPC limit{}", context(&agent, &loki));
}

/// The per-stream rate limit of ANSWERS.md's strict set (100 KB/s, burst
/// 100 KB) and one container writing 600 KB in about 1.2 s into one
/// stream: Loki answers 429 and stores part of a push. The agent sends the
/// same batch again; in the end every line is stored exactly once
/// (`query_range` returns none twice) and the retries are counted
/// `rate_limited`. At 100 KB/s the 600 KB take at least 6 s; the test
/// gives up when Loki has stored nothing new for 25 s while the agent kept
/// retrying (its backoff stops at 5 s: Loki's burst refilled five times
/// over without any use of it).
#[test]
fn per_stream_429_stores_every_line_exactly_once_in_the_end() {
    let test = "answers_per_stream_429";
    let flags = ["-ingester.per-stream-rate-limit=100KB", "-ingester.per-stream-rate-limit-burst=100KB"];
    let Some(loki) = Loki::start(test, Variant::V2_9_9, &flags) else { return };
    let t0 = Instant::now();
    let mut s = Scenario::new("answers-429");
    let agent = s.agent_to(&loki.url(), &["--loki-label", "case=rate"], &[]);
    let sel = "{case=\"rate\"}";
    let w = Writer { lines_per_sec: 2000.0, stderr_every: 0, line_len: 250, max_lines: Some(2400) };
    s.start(vec![ContainerSpec::new("rate").writer(w)]);
    assert!(s.wait_written(T), "{test}: the container did not write its lines");
    let total = s.total() as usize;
    let limited = |a: &Agent| a.metric("log_capturer_sink_retries_total{reason=\"rate_limited\"}");
    let (mut stored, mut best, mut since) = (Vec::new(), 0usize, Instant::now());
    let mut stalled = false;
    wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        stored = loki.entries(sel);
        if stored.len() >= total {
            return true;
        }
        if stored.len() > best {
            (best, since) = (stored.len(), Instant::now());
        }
        stalled = since.elapsed() >= Duration::from_secs(25) && !idle(&agent);
        stalled || (idle(&agent) && since.elapsed() >= Duration::from_secs(5))
    });
    let d = compare(&s.truth(), &stored);
    let m = agent.metrics();
    let retries = limited(&agent);
    let discarded = loki.discarded();
    // Loki's own count of what it ignored in each 429 ("total ignored: N
    // out of M for stream …"), the last few.
    let log = loki.log_tail(usize::MAX);
    let mut ignored: Vec<&str> = log
        .match_indices("total ignored: ")
        .filter_map(|(i, _)| log[i + 15..].split(" for stream").next())
        .collect();
    ignored.dedup();
    let ignored = &ignored[ignored.len().saturating_sub(5)..];
    say(&format!(
        "{test}: {:.0} s; {}; retries rate_limited {retries}, requests {:?}; Loki discarded {discarded:?}, \
         received {}; its last 429s ignored {ignored:?}{}",
        t0.elapsed().as_secs_f64(),
        d.summary(),
        requests(&m),
        loki.lines_received(),
        if stalled { "; STALLED: nothing new stored for 25 s while the agent kept resending" } else { "" }
    ));
    assert!(
        exact(&d),
        "{test}: want every line once: {}; stalled: {stalled}; retries rate_limited {retries}; Loki's last 429s \
         ignored {ignored:?}{}",
        d.summary(),
        context(&agent, &loki)
    );
    assert!(
        discarded.get("per_stream_rate_limit").copied().unwrap_or(0.0) > 0.0,
        "{test}: Loki never rate-limited the stream (discarded {discarded:?}): the test proves nothing{}",
        context(&agent, &loki)
    );
    assert!(retries >= 1.0, "{test}: no retry counted rate_limited{}", context(&agent, &loki));
    assert_eq!(family_sum(&m, REJECTED), 0.0, "{test}: lines dropped on a 429{}", context(&agent, &loki));
}

/// Structured metadata on 2.9.9 with its defaults (refused): the agent
/// turns it off and says so once; killed with `-9` and started again on
/// the same state directory it negotiates again (it keeps no memory of
/// it), says so once more, and no line is lost or stored twice.
#[test]
fn metadata_negotiated_again_after_kill_9_once_per_run_nothing_lost() {
    let test = "answers_metadata_restart";
    let Some(loki) = Loki::start(test, Variant::V2_9_9, &[]) else { return };
    let t0 = Instant::now();
    let mut s = Scenario::new("answers-sm");
    let flags = ["--loki-label", "case=sm"];
    let mut agent = s.agent_to(&loki.url(), &flags, &[]);
    let sel = "{case=\"sm\"}";
    s.start(vec![
        ContainerSpec::new("sa").writer(writer(100.0, 1000)),
        ContainerSpec::new("sb").writer(writer(100.0, 1000)),
    ]);
    let ok = wait_until(T, Duration::from_millis(100), || {
        agent.metric(GAUGE) == 0.0 && agent.metric("log_capturer_sink_lines_total") >= 300.0
    });
    assert!(
        ok,
        "{test}: the first run did not turn metadata off and ship 300 lines{}",
        context(&agent, &loki)
    );
    let first = agent.stderr();
    let _ = agent.child.kill();
    let _ = agent.child.wait();
    let killed_at = s.written();
    agent = s.agent_to(&loki.url(), &flags, &[]);
    assert!(s.wait_written(T), "{test}: the containers did not finish writing");
    let stored = wait_held(&loki, sel, s.total() as usize, &agent, T);
    let d = compare(&s.truth(), &stored);
    let second = agent.stderr();
    let (n1, n2) = (metadata_messages(&first), metadata_messages(&second));
    say(&format!(
        "{test}: {:.0} s; killed after {killed_at} of {} lines written; \"{METADATA_OFF}\" said {n1} then {n2} \
         times; {GAUGE} {}; {}",
        t0.elapsed().as_secs_f64(),
        s.total(),
        agent.metric(GAUGE),
        d.summary()
    ));
    assert!(exact(&d), "{test}: want every line once: {}{}", d.summary(), context(&agent, &loki));
    assert_eq!(n1, 1, "{test}: the first run said \"{METADATA_OFF}\" {n1} times, want once:\n{first}");
    assert_eq!(
        n2,
        1,
        "{test}: the restarted agent said \"{METADATA_OFF}\" {n2} times, want once{}",
        context(&agent, &loki)
    );
    assert_eq!(agent.metric(GAUGE), 0.0, "{test}: {GAUGE} after the restart{}", context(&agent, &loki));
    assert_eq!(family_sum(&agent.metrics(), REJECTED), 0.0, "{test}: {REJECTED}{}", context(&agent, &loki));
}

const BIN: &str = env!("CARGO_BIN_EXE_log-capturer");

/// `log-capturer check` against `loki` with `extra` flags and no Docker
/// (its rows fail, which is fine): (stdout, stderr). Killed after 60 s.
fn run_check(loki: &Loki, extra: &[&str]) -> (String, String) {
    let state = TempDir::new("answers-check");
    let child = Command::new(BIN)
        .args(["check", "--docker-host", "unix:///nonexistent", "--loki"])
        .arg(loki.url())
        .arg("--state-dir")
        .arg(state.0.join("state"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = Instant::now();
    let watchdog = std::thread::spawn(move || {
        while start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(50));
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    });
    let out = child.wait_with_output().unwrap();
    let _ = watchdog.join();
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `check --json`: the rows whose check starts with `sink`, by check.
fn check_sink_rows(loki: &Loki, extra: &[&str]) -> BTreeMap<String, Value> {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let (stdout, stderr) = run_check(loki, &args);
    let rows: Vec<Value> = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("check --json: {e}\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    rows.into_iter()
        .filter(|r| r["check"].as_str().is_some_and(|c| c.starts_with("sink")))
        .map(|r| (r["check"].as_str().unwrap_or_default().to_owned(), r))
        .collect()
}

/// One row's (status, detail + fix) or a failure naming every sink row.
fn row<'a>(rows: &'a BTreeMap<String, Value>, check: &str, what: &str) -> (&'a str, String) {
    let r = rows.get(check).unwrap_or_else(|| panic!("{what}: no row {check:?} in {rows:#?}"));
    let detail =
        format!("{} / fix: {}", r["detail"].as_str().unwrap_or_default(), r["fix"].as_str().unwrap_or("-"));
    (r["status"].as_str().unwrap_or_default(), detail)
}

fn expect_row(rows: &BTreeMap<String, Value>, check: &str, status: &str, words: &[&str], what: &str) {
    let (st, detail) = row(rows, check, what);
    assert!(
        st == status && words.iter().all(|w| detail.contains(w)),
        "{what}: {check:?} is {st} {detail:?}; want {status} with {words:?}\nall sink rows: {rows:#?}"
    );
}

/// `log-capturer check` finds before the first line what the agent will
/// meet: Loki's version, whether it takes structured metadata, the limits
/// that apply (and a `--loki-max-line-bytes` above Loki's `max_line_size`).
#[test]
fn check_reports_version_metadata_and_limits_of_real_lokis() {
    let test = "answers_check";
    // Started together, then each waited for: three Lokis start in about
    // the time of one.
    let Some(mut v299) = Loki::spawn(test, Variant::V2_9_9, &[]) else { return };
    let mut v13 = Loki::spawn(test, Variant::V2_9_9_V13, &[]).expect("spawned once already");
    let mut v28 = Loki::spawn(test, Variant::V2_8_11, &[]).expect("spawned once already");
    for l in [&mut v299, &mut v13, &mut v28] {
        l.wait_ready();
    }
    let t0 = Instant::now();
    let sm = "sink: structured metadata";
    let ver = "sink: Loki version";
    let lim = "sink: Loki limits";

    let what = "2.9.9 defaults";
    let r = check_sink_rows(&v299, &[]);
    say(&format!("{test}: {what}: {r:?}"));
    expect_row(&r, "sink", "OK", &["204"], what);
    expect_row(&r, ver, "INFO", &["2.9.9"], what);
    expect_row(&r, sm, "WARN", &["refused", "allow_structured_metadata"], what);
    expect_row(&r, lim, "OK", &["max_label_names_per_series 30", "max_line_size 256KB"], what);

    // The same rows in the table an operator reads.
    let (table, _) = run_check(&v299, &[]);
    let sink_lines: Vec<&str> =
        table.lines().filter(|l| l.get(8..).is_some_and(|c| c.starts_with("sink"))).collect();
    say(&format!("{test}: {what}, the table's sink rows:\n{}", sink_lines.join("\n")));
    for (status, check, word) in [
        ("OK", "sink ", "answered 204"),
        ("INFO", "sink: Loki version", "Loki 2.9.9"),
        ("OK", "sink: Loki limits", "max_label_names_per_series 30"),
        ("WARN", "sink: structured metadata", "refused"),
    ] {
        assert!(
            sink_lines.iter().any(|l| l.starts_with(status) && l[8..].starts_with(check) && l.contains(word)),
            "{what}: no table row {status} {check:?} with {word:?}:\n{table}"
        );
    }

    let what = "2.9.9 defaults, --loki-max-line-bytes 512KiB";
    let r = check_sink_rows(&v299, &["--loki-max-line-bytes", "512KiB"]);
    expect_row(&r, lim, "WARN", &["max_line_size 256KB", "--loki-max-line-bytes"], what);

    let what = "2.9.9 v13";
    let r = check_sink_rows(&v13, &[]);
    say(&format!("{test}: {what}: {r:?}"));
    expect_row(&r, ver, "INFO", &["2.9.9"], what);
    expect_row(&r, sm, "OK", &["accepted"], what);
    expect_row(&r, lim, "OK", &["max_label_names_per_series"], what);

    let what = "2.8.11 protobuf";
    let r = check_sink_rows(&v28, &[]);
    say(&format!("{test}: {what}: {r:?}"));
    expect_row(&r, ver, "INFO", &["2.8.11"], what);
    expect_row(&r, sm, "WARN", &["ignores"], what);
    expect_row(&r, lim, "OK", &["max_label_names_per_series"], what);

    let what = "2.8.11 json";
    let r = check_sink_rows(&v28, &["--loki-encoding", "json"]);
    say(&format!("{test}: {what}: {r:?}"));
    expect_row(&r, sm, "WARN", &["cannot decode"], what);
    say(&format!("{test}: the checks took {:.1} s", t0.elapsed().as_secs_f64()));
}
