//! The Grafana dashboard and the alert rules against a real Prometheus
//! scraping a running agent (which follows containers of the Docker API
//! double and ships them to the Loki double, so the sink's series exist):
//! every query of deploy/grafana/log-capturer.json returns data, and
//! deploy/prometheus/log-capturer.rules.yml loads and evaluates without
//! error, raising nothing for a healthy agent, and the right alert once
//! Loki rejects lines.
//!
//! Grafana itself is not run: the queries are what can break (a renamed
//! metric or label leaves a panel empty without any error). Needs Debian's
//! `prometheus`; without it the test says SKIPPED, unless
//! `LC_REQUIRE_DOCKER=1` (CI), which makes it a failure.

mod common;
mod real_docker;

use std::path::Path;
use std::time::Duration;

use common::{wait_until, Agent, Config, ContainerSpec, Double, TempDir, Writer};
use loki_double as lk;
use real_docker::{tool_missing, Prometheus};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/log-capturer.json");
const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/log-capturer.rules.yml");
/// The scrape job the rules and the dashboard assume.
const JOB: &str = "log-capturer";

/// Every query of the dashboard, with where it is: each panel target's
/// `expr` (rows' nested panels too), and the series selector inside each
/// `label_values(selector, label)` template variable.
fn dashboard_queries(dash: &serde_json::Value) -> Vec<(String, String)> {
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr =
                    t["expr"].as_str().unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
                out.push((format!("panel {title:?} {}", t["refId"]), expr.to_owned()));
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dash["panels"], &mut out);
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or_default();
        let inner = q.strip_prefix("label_values(").and_then(|r| r.rsplit_once(',')).map(|(sel, _)| sel);
        let sel =
            inner.unwrap_or_else(|| panic!("variable {}: not label_values(selector, label): {q}", v["name"]));
        out.push((format!("variable {}", v["name"]), sel.to_owned()));
    }
    out
}

/// Grafana's substitutions: `$instance` as the node view (one instance)
/// or the fleet view (`.*`, the variable's "All"), `$__rate_interval` as
/// five scrapes of 1 s.
fn substitute(expr: &str, instance: &str) -> String {
    let e =
        expr.replace("$__rate_interval", "5s").replace("$__interval", "1s").replace("$instance", instance);
    assert!(!e.contains('$'), "a variable the test does not know in {expr}");
    e
}

#[test]
fn every_dashboard_query_returns_data_and_the_rules_load() {
    if std::process::Command::new("prometheus").arg("--version").output().is_err() {
        return tool_missing("dashboard", "prometheus", "apt-get install prometheus");
    }
    let d = Double::start(Config::in_temp_dir()).unwrap();
    for name in ["web", "db", "worker"] {
        let w = Writer { lines_per_sec: 40.0, stderr_every: 3, line_len: 40, max_lines: None };
        let spec = ContainerSpec::new(name).writer(w);
        // `local` rotates by default (20m x 5): a finite retention headroom.
        d.create_and_start(if name == "db" { spec.log_driver("local") } else { spec });
    }
    let loki = lk::Double::start(lk::Config::default()).unwrap();
    let url = loki.url();
    let dir = TempDir::new("dashboard");
    // Streams rotate every second: rotations, stream ages, replays.
    let agent = Agent::start_sink(d.socket(), &dir.0, &["--loki", &url, "--rotate-after", "1s"], &[]);
    let instance = agent.metrics.to_string();
    let prom = Prometheus::start_job(&instance, JOB, &[Path::new(RULES)]).expect("prometheus is installed");

    // Enough scrapes for rates over 5 s to hold lines read and shipped and
    // rotations, and a headroom (the agent measures write rates over 10 s).
    let sel = format!("job=\"{JOB}\"");
    let positive = |q: &str| prom.query(q).iter().any(|(_, v)| *v > 0.0);
    let scraped = wait_until(Duration::from_secs(90), Duration::from_millis(250), || {
        positive(&format!("sum(rate(log_capturer_lines_total{{{sel}}}[5s]))"))
            && positive(&format!("sum(increase(log_capturer_stream_rotations_total{{{sel}}}[5s]))"))
            && positive(&format!("sum(rate(log_capturer_sink_lines_total{{{sel}}}[5s]))"))
            && positive(&format!("log_capturer_sink_retention_headroom_seconds{{{sel}}} < +Inf"))
    });
    assert!(
        scraped,
        "prometheus never saw lines read and shipped, rotations and a headroom; its log:\n{}\nagent:\n{}",
        prom.log(),
        agent.stderr()
    );
    assert!(loki.stats().entries_stored > 0, "the Loki double stored nothing: {:?}", loki.stats());

    // The rules: every group loaded, every rule evaluated without error.
    let expected = std::fs::read_to_string(RULES)
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let mut last = String::new();
    let healthy = wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        let (status, body) = prom.get("/api/v1/rules");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let rules: Vec<&serde_json::Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        for r in &rules {
            assert_ne!(r["health"], "err", "rule {} does not evaluate: {}", r["name"], r["lastError"]);
        }
        last = body.clone();
        rules.len() == expected && rules.iter().all(|r| r["health"] == "ok")
    });
    assert!(
        healthy,
        "not all {expected} rules loaded with health ok:\n{last}\nprometheus log:\n{}",
        prom.log()
    );

    // A healthy agent raises nothing, not even pending.
    let alerts = active_alerts(&prom);
    assert!(alerts.is_empty(), "alerts for a healthy agent: {alerts:?}");

    // The sink's fault counters are there at 0 from the start; one push
    // answered 500 and one answered 400 make them count, so that their
    // panels are seen with what they are for.
    loki.inject(lk::Match::Push, lk::Fault::Status(500), 1);
    loki.inject(
        lk::Match::LineContains("web ".into()),
        lk::Fault::RejectLines { marker: "web ".into(), reason: lk::Reason::GreaterThanMaxSampleAge },
        1,
    );
    let faults_seen = wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        positive(&format!("log_capturer_sink_retries_total{{{sel}, reason=\"server_error\"}}"))
            && positive(&format!("log_capturer_sink_rejected_lines_total{{{sel}, reason=\"too_old\"}}"))
    });
    assert!(faults_seen, "a 500 and a 400 not counted; Loki: {:?}\nagent:\n{}", loki.stats(), agent.stderr());

    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 45, "only {} queries found in the dashboard", queries.len());
    let mut empty = Vec::new();
    for (what, expr) in &queries {
        for view in [regex_escape(&instance), ".*".to_owned()] {
            let q = substitute(expr, &view);
            // A rate needs two scrapes in its window: give each query a few.
            let data = wait_until(Duration::from_secs(10), Duration::from_millis(250), || {
                !prom.query(&q).is_empty()
            });
            if !data {
                empty.push(format!("{what}: {q}"));
            }
        }
    }
    assert!(empty.is_empty(), "dashboard queries without data:\n{}", empty.join("\n"));

    // Lines lost for good: that alert (pending: its `for` is a minute), on
    // this node with the reason, and no other. Rules are evaluated every
    // second: wait for one after the rejection was scraped.
    let want = [("LogCapturerSinkRejectingLines".to_owned(), instance.clone(), "too_old".to_owned())];
    let mut raised = Vec::new();
    let alerted = wait_until(Duration::from_secs(10), Duration::from_millis(250), || {
        raised = active_alerts(&prom)
            .iter()
            .map(|a| {
                let label = |k: &str| a["labels"][k].as_str().unwrap_or_default().to_owned();
                (label("alertname"), label("instance"), label("reason"))
            })
            .collect();
        raised == want
    });
    assert!(alerted, "alerts after a rejection: {raised:?}, not {want:?}");
}

/// Alerts pending or firing now.
fn active_alerts(prom: &Prometheus) -> Vec<serde_json::Value> {
    let (status, body) = prom.get("/api/v1/alerts");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["alerts"].as_array().cloned().unwrap_or_default()
}

/// `127.0.0.1:9641` as a regex matching only itself.
fn regex_escape(s: &str) -> String {
    s.chars().fold(String::new(), |mut o, c| {
        if !c.is_ascii_alphanumeric() && c != ':' {
            o.push('\\');
            o.push('\\');
        }
        o.push(c);
        o
    })
}
