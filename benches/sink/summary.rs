//! What one sink run measured, and the results as a Markdown summary
//! (medians and spread over the rounds, each sink's ratio to `/dev/null`
//! taken within a round) and a CSV of every run.

use std::fmt::Write as _;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sink {
    DevNull,
    Protobuf,
    Json,
}

impl Sink {
    pub fn name(self) -> &'static str {
        match self {
            Sink::DevNull => "/dev/null",
            Sink::Protobuf => "Loki protobuf+snappy",
            Sink::Json => "Loki json+gzip",
        }
    }

    pub fn tag(self) -> &'static str {
        match self {
            Sink::DevNull => "null",
            Sink::Protobuf => "protobuf",
            Sink::Json => "json",
        }
    }

    /// The agent's flags for this sink; `url` is the Loki double's.
    pub fn args(self, url: Option<String>) -> Vec<String> {
        let url = || url.clone().expect("a Loki URL");
        match self {
            Sink::DevNull => vec!["--output".into(), "/dev/null".into()],
            Sink::Protobuf => vec!["--loki".into(), url()],
            Sink::Json => vec!["--loki".into(), url(), "--loki-encoding".into(), "json".into()],
        }
    }
}

/// One throughput run.
#[derive(Clone, Debug)]
pub struct Run {
    pub sink: Sink,
    pub n: usize,
    pub round: usize,
    pub lines: u64,
    /// From the backlog's arrival to the last line delivered.
    pub wall_s: f64,
    /// From the backlog's arrival to the agent having read every line.
    pub read_s: Option<f64>,
    pub per_cpu_s: f64,
    pub per_wall_s: f64,
    pub cpu_pct: f64,
    /// Time runnable but waiting for a CPU, % of the wall time.
    pub runq_pct: f64,
    /// VmHWM: the agent's peak over its life (start, streams, the run).
    pub peak_rss_kib: u64,
    /// Request bytes (heads and bodies) the Loki double received per line.
    pub wire_b_per_line: Option<f64>,
    pub pushes: Option<u64>,
}

impl Run {
    pub fn describe(&self) -> String {
        format!(
            "round {} N={} {}: {} lines in {:.2} s (read in {}) = {:.0} lines/s wall, {:.0} lines per agent CPU s, \
             agent {:.0} % CPU ({:.0} % waiting for a CPU), peak RSS {} KiB{}",
            self.round,
            self.n,
            self.sink.name(),
            self.lines,
            self.wall_s,
            self.read_s.map_or("?".into(), |s| format!("{s:.2} s")),
            self.per_wall_s,
            self.per_cpu_s,
            self.cpu_pct,
            self.runq_pct,
            self.peak_rss_kib,
            match (self.wire_b_per_line, self.pushes) {
                (Some(b), Some(p)) => format!(", {b:.1} B per line on the wire, {p} pushes"),
                _ => String::new(),
            }
        )
    }
}

/// The outage scenario.
#[derive(Clone, Debug, Default)]
pub struct Outage {
    pub n: usize,
    pub secs: f64,
    pub kind: String,
    /// Lines per second written, all containers.
    pub rate: u64,
    pub written: u64,
    pub delivered: u64,
    /// Largest RSS sampled during the warm-up (delivery keeping up).
    pub base_rss_kib: u64,
    /// Largest RSS sampled during the outage, and after it until every
    /// line was stored.
    pub peak_rss_kib: u64,
    pub drain_peak_rss_kib: u64,
    pub hwm_kib: u64,
    pub peak_queue_bytes: u64,
    /// Seconds into the outage when the agent last read a line (reading
    /// stops when the queue is full).
    pub last_read_s: f64,
    /// Lines the agent had read when the double came back.
    pub read_at_end: u64,
    /// Seconds from the double's return to the first line stored, and to
    /// the last.
    pub first_after_s: Option<f64>,
    pub drain_s: f64,
    /// Logs requests after the streams were open: reopens (a stream parked
    /// by the full queue comes back through an inspect, `tail` and `since`).
    pub reopened: u64,
    pub retries: u64,
}

impl Outage {
    pub fn describe(&self) -> String {
        format!(
            "outage N={} {:.0} s ({}): RSS {} KiB before, peak {} KiB during, {} KiB draining (VmHWM {} KiB), \
             queue up to {} KiB, last line read {:.1} s into it, {} streams reopened; read {} of {} lines by the \
             end of it; back: first line stored after {}, all after {:.1} s; {} of {} delivered, {} retries",
            self.n,
            self.secs,
            self.kind,
            self.base_rss_kib,
            self.peak_rss_kib,
            self.drain_peak_rss_kib,
            self.hwm_kib,
            self.peak_queue_bytes / 1024,
            self.last_read_s,
            self.reopened,
            self.read_at_end,
            self.written,
            self.first_after_s.map_or("?".into(), |s| format!("{s:.1} s")),
            self.drain_s,
            self.delivered,
            self.written,
            self.retries
        )
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// "median (min-max)" of `v`, scaled by `unit` and shown with `digits`.
fn spread(v: &[f64], unit: f64, digits: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min) / unit;
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max) / unit;
    format!("{:.digits$} ({lo:.digits$}-{hi:.digits$})", median(v.to_vec()) / unit)
}

pub fn markdown(
    runs: &[Run],
    outage: Option<&Outage>,
    queue: &str,
    took: Duration,
    failures: &[String],
) -> String {
    let mut s = String::new();
    let rounds = runs.iter().map(|r| r.round).max().unwrap_or(0);
    let _ = writeln!(s, "# Sink benchmark results\n");
    let _ = writeln!(s, "`make bench-loki` {}, {:.0} s in all.\n", provenance(), took.as_secs_f64());
    if !runs.is_empty() {
        let lines = runs.first().map_or(0, |r| r.lines);
        let _ = writeln!(
            s,
            "Throughput: a backlog of {lines} lines over N streams, {rounds} rounds; median (min-max) over the \
             rounds. \"vs /dev/null\" is the median of each round's ratio to that round's /dev/null run.\n"
        );
        let _ = writeln!(
            s,
            "| N | sink | lines per agent CPU s (M) | vs /dev/null | wall lines/s (M) | agent CPU % | \
             peak RSS (MiB) | wire B/line | pushes |"
        );
        let _ = writeln!(s, "| --: | --- | --: | --: | --: | --: | --: | --: | --: |");
        let mut ns: Vec<usize> = runs.iter().map(|r| r.n).collect();
        ns.dedup();
        ns.sort_unstable();
        ns.dedup();
        for n in ns {
            for sink in [Sink::DevNull, Sink::Protobuf, Sink::Json] {
                let these: Vec<&Run> = runs.iter().filter(|r| r.n == n && r.sink == sink).collect();
                if these.is_empty() {
                    continue;
                }
                let col = |f: &dyn Fn(&Run) -> f64| these.iter().map(|r| f(r)).collect::<Vec<f64>>();
                let ratios: Vec<f64> = these
                    .iter()
                    .filter_map(|r| {
                        let base = runs
                            .iter()
                            .find(|b| b.n == n && b.round == r.round && b.sink == Sink::DevNull)?;
                        Some(r.per_cpu_s / base.per_cpu_s)
                    })
                    .collect();
                let opt = |v: Vec<f64>, digits: usize| {
                    if v.iter().any(|x| x.is_nan()) {
                        "-".to_owned()
                    } else {
                        spread(&v, 1.0, digits)
                    }
                };
                let _ = writeln!(
                    s,
                    "| {n} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    sink.name(),
                    spread(&col(&|r| r.per_cpu_s), 1e6, 2),
                    if sink == Sink::DevNull { "1".to_owned() } else { opt(ratios, 2) },
                    spread(&col(&|r| r.per_wall_s), 1e6, 2),
                    spread(&col(&|r| r.cpu_pct), 1.0, 0),
                    spread(&col(&|r| r.peak_rss_kib as f64), 1024.0, 1),
                    opt(col(&|r| r.wire_b_per_line.unwrap_or(f64::NAN)), 1),
                    opt(col(&|r| r.pushes.map_or(f64::NAN, |p| p as f64)), 0),
                );
            }
        }
        let mut worst: Option<(usize, f64)> = None;
        for r in runs.iter().filter(|r| r.sink == Sink::Protobuf) {
            let m = median(
                runs.iter().filter(|x| x.n == r.n && x.sink == Sink::Protobuf).map(|x| x.per_cpu_s).collect(),
            );
            if worst.map_or(true, |w| m < w.1) {
                worst = Some((r.n, m));
            }
        }
        if let Some((n, m)) = worst {
            let _ = writeln!(
                s,
                "\nGoal (issue 12): >= 1 M lines per agent CPU second into Loki with protobuf+snappy: lowest \
                 median {:.2} M at N={n}: **{}**.\n",
                m / 1e6,
                if m >= 1e6 { "PASS" } else { "MISS" }
            );
        }
    }
    if let Some(o) = outage {
        let _ = writeln!(
            s,
            "Outage: N={} containers writing {} lines/s in all, the Loki double {} for {:.0} s, \
             `--sink-queue-bytes {queue}`; the writing stops when it is back.\n",
            o.n,
            o.rate,
            if o.kind == "503" { "answering 503" } else { "stopped (connections refused)" },
            o.secs
        );
        let _ = writeln!(s, "| measure | value |\n| --- | --: |");
        let rows = [
            ("agent RSS before (delivery keeping up)", format!("{:.1} MiB", o.base_rss_kib as f64 / 1024.0)),
            ("agent peak RSS during the outage", format!("{:.1} MiB", o.peak_rss_kib as f64 / 1024.0)),
            (
                "growth over the RSS before",
                format!("{:.1} MiB", (o.peak_rss_kib as f64 - o.base_rss_kib as f64) / 1024.0),
            ),
            ("agent peak RSS while draining", format!("{:.1} MiB", o.drain_peak_rss_kib as f64 / 1024.0)),
            ("agent VmHWM at the end", format!("{:.1} MiB", o.hwm_kib as f64 / 1024.0)),
            ("sink queue at its largest", format!("{:.1} MiB", o.peak_queue_bytes as f64 / 1048576.0)),
            ("last line read, into the outage", format!("{:.1} s", o.last_read_s)),
            ("streams reopened from their position", o.reopened.to_string()),
            ("lines written / read when Loki came back", format!("{} / {}", o.written, o.read_at_end)),
            (
                "first line stored after Loki came back",
                o.first_after_s.map_or("-".into(), |v| format!("{v:.1} s")),
            ),
            ("every line stored after", format!("{:.1} s", o.drain_s)),
            ("lines delivered / written", format!("{} / {}", o.delivered, o.written)),
            ("push retries", o.retries.to_string()),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "| {k} | {v} |");
        }
        s.push('\n');
    }
    if failures.is_empty() {
        s.push_str("Every line of every run arrived (the double's stored entries = lines written).\n");
    } else {
        let _ = writeln!(s, "**Failures**:\n");
        for f in failures {
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}

pub fn csv(runs: &[Run]) -> String {
    let mut s = String::from(
        "round,n,sink,lines,wall_s,read_s,lines_per_agent_cpu_s,lines_per_s,agent_cpu_pct,agent_runq_wait_pct,\
         peak_rss_kib,wire_b_per_line,pushes\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    for r in runs {
        let _ = writeln!(
            s,
            "{},{},{},{},{:.3},{},{:.0},{:.0},{:.1},{:.1},{},{},{}",
            r.round,
            r.n,
            r.sink.tag(),
            r.lines,
            r.wall_s,
            opt(r.read_s),
            r.per_cpu_s,
            r.per_wall_s,
            r.cpu_pct,
            r.runq_pct,
            r.peak_rss_kib,
            opt(r.wire_b_per_line),
            r.pushes.map_or(String::new(), |p| p.to_string()),
        );
    }
    s
}

/// The commit measured and how busy the machine was.
fn provenance() -> String {
    let head = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("at {head}, {cpus} CPUs, load average {} at the end", load.join(" "))
}
