//! The agent shipping to a **real Grafana Loki** (2.8.11; 2.9.9 with its
//! default limits, which refuse structured metadata; 2.9.9 with schema v13
//! and metadata allowed), in both encodings, through a `kill -9` of the
//! agent and a restart of Loki itself; then what Loki stored, read back with
//! `query_range`, against what Docker holds: every line once, Docker's
//! nanosecond timestamp, the documented labels, and the metadata where Loki
//! keeps it. The same, with real busybox containers of the private dockerd
//! (2.9.9 in both encodings, 2.8.11 in JSON, v13 with metadata), checked
//! against `docker logs -t`.
//!
//! The agent negotiates structured metadata (`--loki-structured-metadata`,
//! default `auto`): on a refusal it resends the batch without it and keeps
//! it off, which `log_capturer_sink_structured_metadata_enabled` shows
//! (0 once off). Loki 2.8 ignores protobuf metadata silently: the gauge
//! stays 1 there, as on v13.
//!
//! Needs `LC_LOKI_DIR` (see `tests/common/real_loki.rs`); skips without it
//! unless `LC_REQUIRE_LOKI=1`.

mod common;
#[path = "common/loki.rs"]
mod loki;
mod real_docker;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::real_loki::{say, Loki, Stored, Variant};
use common::{wait_until, Agent, ContainerSpec, TempDir};
use loki::*;

/// The metadata names the agent sends (README, "Labels").
const METADATA: [&str; 2] = ["container_id", "image"];

const GAUGE: &str = "log_capturer_sink_structured_metadata_enabled";

/// What Loki holds for one encoding's containers, compared with Docker.
fn compare(truth: &[Want], stored: &[Stored], enc: &str, with_metadata: bool) -> Delivery {
    let host = hostname();
    let mut d = Delivery { wanted: truth.len(), stored: stored.len(), ..Delivery::default() };
    let want: HashMap<Key, &Want> = truth.iter().map(|w| (w.key(), w)).collect();
    let mut seen: HashMap<Key, u32> = HashMap::new();
    for e in stored {
        let (labels, meta) = e.split(&METADATA);
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let k: Key = (get("container"), get("stream"), e.ts_ns, e.line.as_bytes().to_vec());
        *seen.entry(k.clone()).or_default() += 1;
        let Some(w) = want.get(&k) else {
            d.unexpected.push(k);
            continue;
        };
        if d.bad.len() >= 20 {
            continue;
        }
        let mut expect: BTreeMap<String, String> = BTreeMap::new();
        expect.insert("host".into(), host.clone());
        expect.insert("container".into(), w.name.clone());
        expect.insert("stream".into(), w.stream.into());
        expect.insert("enc".into(), enc.into());
        for (docker, lbl) in [
            ("com.docker.compose.project", "compose_project"),
            ("com.docker.compose.service", "compose_service"),
        ] {
            if let Some(v) = w.labels.get(docker) {
                expect.insert(lbl.into(), v.clone());
            }
        }
        if labels != expect {
            d.bad.push(format!("labels {labels:?} for {}, want {expect:?}", w.name));
        }
        let want_meta: BTreeMap<String, String> = if with_metadata {
            [("container_id".to_owned(), w.id.clone()), ("image".to_owned(), w.image.clone())].into()
        } else {
            BTreeMap::new()
        };
        if meta != want_meta {
            d.bad.push(format!("metadata {meta:?} for {}, want {want_meta:?}", w.name));
        }
    }
    for w in truth {
        if !seen.contains_key(&w.key()) {
            d.missing.push(w.key());
        }
    }
    d.missing.sort();
    for (k, n) in seen {
        if n > 1 {
            d.repeated.push((k, n, 0));
        }
    }
    d.repeated.sort();
    d
}

/// What Loki holds for `selector` once it holds `want` entries, or once
/// the agent has had nothing left to send for five seconds in a row (then
/// what is missing is lost), at most 90 s.
fn wait_held(loki: &Loki, selector: &str, want: usize, agent: &Agent) -> Vec<Stored> {
    // Everything acknowledged: the queue empty, no backlog.
    let idle = || {
        let m = agent.metrics();
        sample(&m, "log_capturer_sink_queue_bytes") == 0.0
            && sample(&m, "log_capturer_sink_backlog_age_seconds") == 0.0
    };
    let mut idle_since: Option<Instant> = None;
    let mut stored = Vec::new();
    wait_until(Duration::from_secs(90), Duration::from_millis(500), || {
        stored = loki.entries(selector);
        if stored.len() >= want {
            return true;
        }
        if idle() {
            idle_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(5)
        } else {
            idle_since = None;
            false
        }
    });
    stored
}

/// One encoding's run: a Docker double with three containers and the
/// agent shipping them to the real Loki under the label `enc`.
struct Run {
    enc: &'static str,
    s: Scenario,
    agent: Agent,
    url: String,
}

impl Run {
    fn flags(enc: &'static str) -> [&'static str; 4] {
        let label = if enc == "json" { "enc=json" } else { "enc=protobuf" };
        ["--loki-encoding", enc, "--loki-label", label]
    }

    fn start(enc: &'static str, loki: &Loki, total: u64) -> Run {
        let mut s = Scenario::new(&format!("real-loki-{enc}"));
        let url = loki.url();
        let agent = s.agent_to(&url, &Run::flags(enc), &[]);
        let mut plain = ContainerSpec::new("plain").writer(writer(100.0, total));
        plain.image = "registry.example:5000/team/app:1.2.3".into();
        s.start(vec![
            ContainerSpec::new("web")
                .label("com.docker.compose.project", "shop")
                .label("com.docker.compose.service", "web")
                .writer(writer(100.0, total)),
            plain,
            ContainerSpec::new("tty").tty(true).writer(writer(100.0, total)),
        ]);
        Run { enc, s, agent, url }
    }

    /// Lines the agent has had answered for good since it started.
    fn answered(&self) -> f64 {
        self.agent.metric("log_capturer_sink_lines_total")
    }

    /// SIGKILL, then a new agent on the same state directory.
    fn kill_and_restart(&mut self) {
        let _ = self.agent.child.kill();
        let _ = self.agent.child.wait();
        self.agent = self.s.agent_to(&self.url, &Run::flags(self.enc), &[]);
    }

    fn selector(&self) -> String {
        format!("{{enc=\"{}\"}}", self.enc)
    }
}

fn say_delivery(test: &str, enc: &str, d: &Delivery) {
    say(&format!("{test} {enc}: {}", d.summary()));
}

/// The matrix cell: one Loki `variant`, both encodings at once, the agents
/// killed with SIGKILL a third of the way and Loki restarted two thirds of
/// the way; then every line once, as Docker holds it. `gauge` is what
/// `log_capturer_sink_structured_metadata_enabled` must read at the end for
/// (protobuf, json).
fn through_crashes(test: &str, variant: Variant, gauge: (f64, f64)) {
    let Some(mut loki) = Loki::start(test, variant, &[]) else { return };
    let t0 = Instant::now();
    assert_eq!(loki.version(), variant.version(), "buildinfo");
    // 3 containers × 1500 lines at 100/s: 15 s of writing per encoding.
    let total = 1500;
    let mut runs = [Run::start("protobuf", &loki, total), Run::start("json", &loki, total)];
    let all = runs[0].s.total();

    // A third of the way: kill -9 each agent and start it again on its
    // state directory. Progress is the agent's own count of lines answered,
    // which moves whatever Loki does with them.
    for r in &mut runs {
        let ok = wait_until(T, Duration::from_millis(100), || r.answered() >= (all / 3) as f64);
        assert!(
            ok,
            "{test} {}: the agent had fewer than {} lines answered\n{}",
            r.enc,
            all / 3,
            r.agent.stderr()
        );
        r.kill_and_restart();
    }
    // Two thirds of the way: Loki itself goes down and comes back on the
    // same data directory (the WAL replays); the agents retry meanwhile.
    for r in &runs {
        let ok = wait_until(T, Duration::from_millis(100), || r.s.written() >= all * 2 / 3);
        assert!(ok, "{test} {}: the containers did not write two thirds", r.enc);
    }
    // Loki's counters start again with it: keep what it discarded so far.
    let mut discarded = loki.discarded();
    loki.restart();

    for r in &runs {
        assert!(r.s.wait_written(T), "{test} {}: containers did not finish writing", r.enc);
    }
    let mut results = Vec::new();
    for r in &runs {
        let stored = wait_held(&loki, &r.selector(), r.s.total() as usize, &r.agent);
        let with_metadata = variant.stores_metadata();
        let d = compare(&r.s.truth(), &stored, r.enc, with_metadata);
        say_delivery(test, r.enc, &d);
        results.push(d);
    }
    say(&format!(
        "{test}: {:.0} s; Loki since its restart: {} lines received, discarded {:?}",
        t0.elapsed().as_secs_f64(),
        loki.lines_received(),
        loki.discarded()
    ));
    for (r, d) in runs.iter().zip(&results) {
        // What each side counted, to tell a line the agent never sent from
        // one Loki acknowledged and lost.
        let m = r.agent.metrics();
        let counts: Vec<(String, f64)> = m
            .iter()
            .filter(|(k, _)| {
                k.starts_with("log_capturer_lines_total")
                    || k.starts_with("log_capturer_sink_")
                    || k.starts_with("log_capturer_duplicates")
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert!(
            d.missing.is_empty() && d.unexpected.is_empty() && d.repeated.is_empty() && d.bad.is_empty(),
            "{test} {}: Loki does not hold every line once as Docker does: {}\nthe agent counts {counts:?}\n\
             Loki since its restart: {} lines received, discarded {:?}\nagent stderr:\n{}\nLoki's log:\n{}",
            r.enc,
            d.summary(),
            loki.lines_received(),
            loki.discarded(),
            r.agent.stderr(),
            loki.log_tail(40)
        );
    }
    // Nothing Loki refused but the metadata the agent then left out.
    for (k, v) in loki.discarded() {
        *discarded.entry(k).or_insert(0.0) += v;
    }
    let discarded: BTreeMap<String, f64> =
        discarded.into_iter().filter(|(k, v)| k != "disallowed_structured_metadata" && *v > 0.0).collect();
    assert!(discarded.is_empty(), "{test}: Loki discarded {discarded:?}");
    for (r, want) in runs.iter().zip([gauge.0, gauge.1]) {
        let got = r.agent.metric(GAUGE);
        assert!(
            got == want,
            "{test} {}: {GAUGE} is {got} (NaN: not exported), want {want}\nagent stderr:\n{}",
            r.enc,
            r.agent.stderr()
        );
    }
}

#[test]
fn loki_2_8_11_every_line_once_through_kill_9_and_a_loki_restart() {
    // Protobuf: 2.8 skips the unknown metadata field and says nothing, so
    // the agent has no reason to stop sending it. JSON: 2.8's decoder
    // refuses the third `values` element; the agent must leave it out.
    through_crashes("loki_2_8_11", Variant::V2_8_11, (1.0, 0.0));
}

#[test]
fn loki_2_9_9_default_limits_every_line_once_through_kill_9_and_a_loki_restart() {
    through_crashes("loki_2_9_9", Variant::V2_9_9, (0.0, 0.0));
}

#[test]
fn loki_2_9_9_v13_every_line_once_with_metadata_through_kill_9_and_a_loki_restart() {
    through_crashes("loki_2_9_9_v13", Variant::V2_9_9_V13, (1.0, 1.0));
}

/// On v13 the metadata is not only returned with each entry but can be
/// queried: a label filter on it selects exactly that container's lines.
#[test]
fn loki_2_9_9_v13_structured_metadata_is_queryable() {
    let test = "loki_2_9_9_v13_metadata_query";
    let Some(loki) = Loki::start(test, Variant::V2_9_9_V13, &[]) else { return };
    let mut s = Scenario::new("real-loki-sm");
    let agent = s.agent_to(&loki.url(), &["--loki-label", "enc=protobuf"], &[]);
    let mut a = ContainerSpec::new("sma").writer(writer(500.0, 300));
    a.image = "example/a:1".into();
    let mut b = ContainerSpec::new("smb").writer(writer(500.0, 300));
    b.image = "example/b:2".into();
    s.start(vec![a, b]);
    assert!(s.wait_written(T));
    let (ida, idb) = (s.containers[0].id.clone(), s.containers[1].id.clone());
    let by_id = |id: &str| loki.entries(&format!("{{enc=\"protobuf\"}} | container_id=\"{id}\""));
    let ok =
        wait_until(T, Duration::from_millis(500), || by_id(&ida).len() >= 300 && by_id(&idb).len() >= 300);
    let (ea, eb) = (by_id(&ida), by_id(&idb));
    assert!(
        ok && ea.len() == 300 && eb.len() == 300,
        "by container_id: {} and {} entries, want 300 each\n{}",
        ea.len(),
        eb.len(),
        agent.stderr()
    );
    assert!(ea.iter().all(|e| e.labels.get("container").map(String::as_str) == Some("sma")));
    let by_image = loki.entries("{enc=\"protobuf\"} | image=\"example/b:2\"");
    assert_eq!(by_image.len(), 300, "by image");
    assert!(by_image.iter().all(|e| e.labels.get("container_id") == Some(&idb)));
    // Metadata, not labels: the streams are the agent's label sets alone.
    let series = loki.series("{enc=\"protobuf\"}");
    assert!(
        !series.is_empty()
            && series.iter().all(|s| !s.contains_key("container_id") && !s.contains_key("image")),
        "series carry metadata as labels: {series:?}"
    );
    assert_eq!(agent.metric(GAUGE), 1.0, "{GAUGE} on a Loki that stores metadata\n{}", agent.stderr());
}

/// `2026-12-04T18:23:09.123456789Z` (Docker's RFC 3339 with up to nine
/// fractional digits) in nanoseconds since the epoch.
fn rfc3339_ns(s: &str) -> Option<i64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos: i64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + h) * 60 + mi) * 60 + sec) * 1_000_000_000 + nanos)
}

#[test]
fn rfc3339_parses_dockers_timestamps() {
    assert_eq!(rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(rfc3339_ns("2026-12-04T18:23:09.5Z"), Some(1_796_408_589_500_000_000));
    assert_eq!(rfc3339_ns("2000-03-01T00:00:00.000000001Z"), Some(951_868_800_000_000_001));
}

/// Real busybox containers on the private dockerd into a real Loki,
/// through a `kill -9` of the agent (a third of the way) and a restart of
/// Loki (two thirds): every line `docker logs -t` holds, once, with its
/// timestamp and stream. `gauge`: the structured-metadata gauge wanted at
/// the end (0 where that Loki refuses it).
fn real_dockerd_into(test: &str, short: &str, variant: Variant, enc: &str, gauge: f64) {
    use real_docker::*;
    // One at a time: they share the private dockerd, and four more Lokis at
    // once beside the other tests' slow every Loki's restart.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(d) = daemon(test) else { return };
    let Some(mut loki) = Loki::start(test, variant, &[]) else { return };
    let t0 = Instant::now();
    let g = Group::new(&d, short);
    let dir = TempDir::new("real-loki-dockerd");
    let label = g.label();
    let url = loki.url();
    let args = [
        "--include-label",
        &label,
        "--loki",
        &url,
        "--loki-encoding",
        enc,
        "--loki-batch-wait",
        "200ms",
        "--loki-label",
        "enc=real",
    ];
    let mut agent = Agent::start_sink(&d.socket, &dir.0, &args, &[]);
    wait_docker_up(&agent);
    // 4 containers × 2000 lines at 250/s: 8 s of writing.
    let total = 2000;
    let names: Vec<String> = (0..4)
        .map(|k| g.run(&format!("r{k}"), &[], &numbered(&g.name(&format!("r{k}")), total, 250)))
        .collect();
    let all = (names.len() as u64 * total) as f64;
    let answered = |a: &Agent| a.metric("log_capturer_sink_lines_total");
    let ok = wait_until(T, Duration::from_millis(100), || answered(&agent) >= all / 3.0);
    assert!(ok, "{test}: fewer than a third of the lines answered\n{}", agent.stderr());
    let _ = agent.child.kill();
    let _ = agent.child.wait();
    let before = agent.stderr();
    agent = Agent::start_sink(&d.socket, &dir.0, &args, &[]);
    // Two thirds read by the new agent (it starts from its checkpoint):
    // Loki goes down and comes back on the same data directory.
    let read = |a: &Agent| family_sum(&a.metrics(), "log_capturer_lines_total");
    let ok = wait_until(T, Duration::from_millis(100), || read(&agent) >= all / 3.0);
    assert!(ok, "{test}: the restarted agent read little\n{}", agent.stderr());
    loki.restart();
    assert!(wait_exited(&d, &names, Duration::from_secs(240)), "containers did not finish");
    let want = names.len() * total as usize;
    let stored = wait_held(&loki, "{enc=\"real\"}", want, &agent);
    for n in &names {
        // (number, stream) -> Docker's timestamp.
        let logs = run_with_timeout(
            std::process::Command::new("sh")
                .args(["-c", "docker logs -t \"$0\" 2>/dev/null | sed 's/^/1 /'; docker logs -t \"$0\" 2>&1 >/dev/null | sed 's/^/2 /'", n])
                .env("DOCKER_HOST", d.host()),
            Duration::from_secs(90),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut truth: BTreeMap<u64, (i64, &str)> = BTreeMap::new();
        for l in logs.lines() {
            let mut p = l.split(' ');
            let (Some(fd), Some(ts), Some(_), Some(i)) = (p.next(), p.next(), p.next(), p.next()) else {
                continue;
            };
            let ts = rfc3339_ns(ts).unwrap_or_else(|| panic!("docker logs -t: {l:?}"));
            truth.insert(i.parse().unwrap(), (ts, if fd == "1" { "stdout" } else { "stderr" }));
        }
        assert_eq!(
            truth.keys().copied().collect::<Vec<_>>(),
            (1..=total).collect::<Vec<_>>(),
            "{n}: docker logs"
        );
        let mine: Vec<&Stored> = stored
            .iter()
            .filter(|e| e.labels.get("container").map(String::as_str) == Some(n.as_str()))
            .collect();
        let mut got: BTreeMap<u64, Vec<(i64, String)>> = BTreeMap::new();
        for e in &mine {
            let i = e.line.split(' ').nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
            got.entry(i).or_default().push((e.ts_ns, e.labels.get("stream").cloned().unwrap_or_default()));
        }
        let missing: Vec<u64> = (1..=total).filter(|i| !got.contains_key(i)).take(10).collect();
        let repeated: Vec<u64> = got.iter().filter(|(_, v)| v.len() > 1).map(|(i, _)| *i).take(10).collect();
        let wrong: Vec<String> = got
            .iter()
            .filter_map(|(i, v)| {
                let (ts, s) = truth.get(i)?;
                (v[0] != (*ts, s.to_string())).then(|| format!("{i}: Loki {:?}, Docker ({ts}, {s})", v[0]))
            })
            .take(5)
            .collect();
        assert!(
            missing.is_empty() && repeated.is_empty() && wrong.is_empty() && mine.len() == total as usize,
            "{test} {n}: {} stored of {total}; first missing {missing:?}, repeated {repeated:?}, wrong {wrong:?}\n\
             first agent's stderr:\n{before}\nagent stderr:\n{}\nLoki's log:\n{}",
            mine.len(),
            agent.stderr(),
            loki.log_tail(15)
        );
    }
    assert_eq!(agent.metric(GAUGE), gauge, "{test}: {GAUGE}\n{}", agent.stderr());
    say(&format!(
        "{test}: {want} lines of 4 real containers, every one once, in {:.0} s",
        t0.elapsed().as_secs_f64()
    ));
}

#[test]
fn real_dockerd_containers_into_loki_2_9_9_every_line_once() {
    real_dockerd_into("real_dockerd_into_loki_2_9_9", "rl99p", Variant::V2_9_9, "protobuf", 0.0);
}

#[test]
fn real_dockerd_containers_into_loki_2_9_9_json_every_line_once() {
    real_dockerd_into("real_dockerd_into_loki_2_9_9_json", "rl99j", Variant::V2_9_9, "json", 0.0);
}

/// 2.8's JSON decoder cannot read metadata: refused whole, then sent
/// without it.
#[test]
fn real_dockerd_containers_into_loki_2_8_11_json_every_line_once() {
    real_dockerd_into("real_dockerd_into_loki_2_8_11_json", "rl28j", Variant::V2_8_11, "json", 0.0);
}

#[test]
fn real_dockerd_containers_into_loki_2_9_9_v13_with_metadata_every_line_once() {
    real_dockerd_into("real_dockerd_into_loki_2_9_9_v13", "rl13p", Variant::V2_9_9_V13, "protobuf", 1.0);
}
