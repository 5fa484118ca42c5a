//! Result rows: one per scenario and N, written as CSV; the summary table
//! with each target beside the measured value.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The CSV columns, in order. A row leaves blank what its scenario does
/// not measure.
pub const COLUMNS: &[&str] = &[
    "open_s",
    "agent_rss_kib",
    "agent_rss_anon_kib",
    "agent_rss_after_lines_kib",
    "agent_rss_idle_kib",
    "agent_peak_rss_kib",
    "rss_per_stream_b",
    "agent_fds",
    "fds_minus_n",
    "agent_threads",
    "kernel_queued_kib",
    "recv_q_kib",
    "agent_rcvbuf_kib",
    "kernel_slab_delta_kib",
    "idle_window_s",
    "idle_cpu_pct",
    "idle_cpu_pct_per_1000",
    "double_idle_cpu_pct",
    "lines",
    "wall_s",
    "lines_per_s",
    "lines_per_agent_cpu_s",
    "msg_mb_per_s",
    "wire_mb_per_s",
    "output_mb_per_s",
    "agent_cpu_s_per_mlines",
    "agent_cpu_pct",
    "agent_runq_wait_pct",
    "double_cpu_pct",
    "checkpoint_writes",
    "checkpoint_max_mb",
    "rotate_after_ms",
    "reopens",
    "reopen_rate",
    "gap_p50_ms",
    "gap_p99_ms",
    "gap_max_ms",
    "max_fds",
    "max_active_streams",
    "stream_budget",
    "containers_unfollowed",
    "containers_with_lines",
    "containers_complete",
    "emfile_errors",
    "connect_eagain",
    "alive",
    "lost",
    "duplicated",
];

#[derive(Clone, Debug, Default)]
pub struct Row {
    pub scenario: String,
    pub n: usize,
    pub param: String,
    pub v: BTreeMap<&'static str, f64>,
    pub note: String,
}

impl Row {
    pub fn new(scenario: &str, n: usize, param: impl Into<String>) -> Row {
        Row { scenario: scenario.to_owned(), n, param: param.into(), ..Row::default() }
    }

    pub fn set(&mut self, col: &'static str, v: f64) {
        debug_assert!(COLUMNS.contains(&col), "unknown column {col}");
        self.v.insert(col, v);
    }

    pub fn get(&self, col: &str) -> Option<f64> {
        self.v.get(col).copied()
    }

    pub fn note(&mut self, s: impl AsRef<str>) {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(s.as_ref());
    }
}

pub fn write_csv(path: &Path, rows: &[Row]) -> std::io::Result<()> {
    let mut s = String::from("scenario,n,param");
    for c in COLUMNS {
        s.push(',');
        s.push_str(c);
    }
    s.push_str(",note\n");
    for r in rows {
        let _ = write!(s, "{},{},{}", r.scenario, r.n, r.param);
        for c in COLUMNS {
            s.push(',');
            if let Some(v) = r.get(c) {
                if v.fract() == 0.0 && v.abs() < 1e15 {
                    let _ = write!(s, "{}", v as i64);
                } else {
                    let _ = write!(s, "{v:.4}");
                }
            }
        }
        // Notes are free text: quote them, doubling quotes.
        let _ = writeln!(s, ",\"{}\"", r.note.replace('"', "\"\""));
    }
    std::fs::write(path, s)
}

/// One line of the summary: what, target, measured, verdict.
pub struct Check {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub pass: Option<bool>,
}

pub fn table(checks: &[Check]) -> String {
    let mut s = String::from("| what | target | measured | verdict |\n| --- | --- | --- | --- |\n");
    for c in checks {
        let verdict = match c.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a",
        };
        let _ = writeln!(s, "| {} | {} | {} | {verdict} |", c.what, c.target, c.measured);
    }
    s
}

/// Percentile by nearest rank of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
