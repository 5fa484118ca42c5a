//! The ceiling benchmark: the agent against the Docker API test double at
//! N = 100, 1 000, 5 000 and 10 000 followed containers. Method, knobs and
//! results: `benches/ceiling/README.md`. Run with `make ceiling`.
//!
//! The double runs in this process (one server thread); the agent is a
//! child process (`target/release/log-capturer`), so everything read from
//! `/proc/<pid>` is the agent's alone.

#[path = "ceiling/agent.rs"]
mod agent;
#[path = "ceiling/check.rs"]
mod check;
#[path = "ceiling/proc.rs"]
mod proc;
#[path = "ceiling/report.rs"]
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent::{lines, sum, Agent, Launch};
use docker_double::{Config, ContainerSpec, Double, Writer};
use report::{Check, Row};

/// Lines each container gets in the scale runs, to show its stream works
/// and to measure RSS once every stream has carried data.
const SCALE_LINES: u64 = 3;
/// Short lines: 80 bytes of text plus the newline.
const LINE_LEN: usize = 80;

struct Knobs {
    ns: Vec<usize>,
    /// Idle window at the largest N (the target's figure) and below it.
    idle_big: Duration,
    idle_small: Duration,
    /// Throughput: lines in the backlog, into /dev/null and into a file.
    lines_null: u64,
    lines_file: u64,
    lines_rcvbuf: u64,
    /// Rotation runs: (containers, --rotate-after in ms, state on tmpfs).
    rotation: Vec<(usize, u64, bool)>,
    rotation_window: Duration,
    only: Option<Vec<String>>,
    out: PathBuf,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{key}={v:?} is not valid")),
        Err(_) => default,
    }
}

fn knobs() -> Knobs {
    let ns = std::env::var("CEILING_NS")
        .unwrap_or_else(|_| "100,1000,5000,10000".to_owned())
        .split(',')
        .map(|s| s.trim().parse().expect("CEILING_NS: comma-separated numbers"))
        .collect();
    let rotation = std::env::var("CEILING_ROTATION")
        .unwrap_or_else(|_| "1000:10000,1000:2000,1000:1000,1000:500,10000:5000,10000:5000:tmpfs".to_owned())
        .split(',')
        .map(|s| {
            let mut f = s.split(':');
            let n = f.next().and_then(|v| v.trim().parse().ok()).expect("CEILING_ROTATION: N:MS[:tmpfs],...");
            let ms =
                f.next().and_then(|v| v.trim().parse().ok()).expect("CEILING_ROTATION: N:MS[:tmpfs],...");
            (n, ms, f.next() == Some("tmpfs"))
        })
        .collect();
    Knobs {
        ns,
        idle_big: Duration::from_secs(env_or("CEILING_IDLE_SECS", 60)),
        idle_small: Duration::from_secs(env_or("CEILING_IDLE_SMALL_SECS", 10)),
        lines_null: env_or("CEILING_LINES", 3_000_000),
        lines_file: env_or("CEILING_FILE_LINES", 1_000_000),
        lines_rcvbuf: env_or("CEILING_RCVBUF_LINES", 1_000_000),
        rotation,
        rotation_window: Duration::from_secs(env_or("CEILING_ROTATION_SECS", 10)),
        only: std::env::var("CEILING_ONLY").ok().map(|s| s.split(',').map(str::to_owned).collect()),
        out: std::env::var("CEILING_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ceiling/results")),
    }
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), tag)
    }

    fn new_in(base: &Path, tag: &str) -> TempDir {
        let tag: String = tag.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let p = base.join(format!("lc-ceiling-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Poll `cond` every `every` until it holds or `timeout` passes.
fn wait_for(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

fn start_double() -> Double {
    Double::start(Config::in_temp_dir()).expect("start the Docker API double")
}

/// Containers `c00001`… with a writer that gives the line format; `rate`
/// 0 writes nothing by itself (lines come from `prefill`).
fn containers(d: &Double, n: usize, w: &Writer) -> Vec<String> {
    (1..=n).map(|i| d.create_and_start(ContainerSpec::new(format!("c{i:05}")).writer(w.clone()))).collect()
}

fn quiet_writer() -> Writer {
    Writer { lines_per_sec: 0.0, stderr_every: 10, line_len: LINE_LEN, max_lines: None }
}

fn launch(d: &Double, dir: &TempDir, output: &Path, extra: &[&str]) -> Launch {
    Launch {
        socket: d.socket().to_path_buf(),
        state_dir: dir.0.join("state"),
        output: output.to_path_buf(),
        extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        nofile: None,
    }
}

/// Wait until the agent follows `n` containers with `n` streams open.
fn wait_streams(a: &Agent, d: &Double, n: usize, timeout: Duration) -> bool {
    wait_for(timeout, Duration::from_millis(200), || {
        let m = a.metrics();
        m.get("log_capturer_active_streams") == Some(&(n as f64))
            && m.get("log_capturer_containers_followed") == Some(&(n as f64))
            && d.stats().log_streams_open == n
    })
}

/// Write back what earlier scenarios left dirty (a file run leaves up to a
/// GB): each scenario starts with the same disk, and the agent's fsyncs and
/// output writes are not throttled behind another scenario's writeback.
fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
}

/// Wait until the agent's descriptor count has not moved for a second.
fn settle_fds(pid: u32) {
    let mut last = proc::fds(pid);
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && since.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(100));
        let now = proc::fds(pid);
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

/// What the kernel holds for the agent's unread stream data (see
/// `proc::SockMem`): the truesize charged to the double's sockets (this
/// process) and the payload bytes in the agent's receive queues.
struct Queued {
    truesize: u64,
    recv_q: u64,
    agent_rcvbuf: u64,
}

impl Queued {
    fn record(&self, row: &mut Row) {
        row.set("kernel_queued_kib", self.truesize as f64 / 1024.0);
        row.set("recv_q_kib", self.recv_q as f64 / 1024.0);
        row.set("agent_rcvbuf_kib", self.agent_rcvbuf as f64 / 1024.0);
    }
}

fn queued(agent: u32) -> Option<Queued> {
    let a = proc::sock_mem(agent)?;
    let d = proc::sock_mem(std::process::id())?;
    Some(Queued { truesize: d.wmem + a.rmem, recv_q: a.recv_q, agent_rcvbuf: a.rcvbuf })
}

fn pct(cpu: Duration, wall: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
}

fn log(msg: impl AsRef<str>) {
    eprintln!("ceiling: {}", msg.as_ref());
}

// ---- scale: memory, fds, threads, idle CPU -------------------------------

fn scale(n: usize, idle: Duration) -> Row {
    let mut row = Row::new("scale", n, "");
    let dir = TempDir::new(&format!("scale-{n}"));
    let d = start_double();
    let ids = containers(&d, n, &quiet_writer());
    let out = dir.0.join("out.jsonl");
    let slab0 = proc::slab_kib();
    let t0 = Instant::now();
    let a = Agent::start(&launch(&d, &dir, &out, &[]));
    if !wait_streams(&a, &d, n, Duration::from_secs(180)) {
        row.note(format!(
            "streams did not all open in 180 s: double has {}; agent stderr: {}",
            d.stats().log_streams_open,
            a.stderr_tail(3)
        ));
    }
    row.set("open_s", t0.elapsed().as_secs_f64());
    settle_fds(a.pid);
    let fresh = proc::mem(a.pid);
    let fds = proc::fds(a.pid);
    let slab1 = proc::slab_kib();
    row.set("agent_rss_kib", fresh.rss_kib as f64);
    row.set("agent_rss_anon_kib", fresh.anon_kib as f64);
    row.set("agent_fds", fds as f64);
    row.set("fds_minus_n", fds as f64 - n as f64);
    row.set("agent_threads", fresh.threads as f64);
    row.set("kernel_slab_delta_kib", slab1 as f64 - slab0 as f64);
    if let Some(q) = queued(a.pid) {
        q.record(&mut row);
    }
    if let Some(size) = proc::slab_object_size("sock_inode_cache") {
        row.note(format!("kernel: {size} B sock_inode_cache object per socket, both ends"));
    }

    // Every stream carries a few lines: it works, and buffers it keeps
    // after data has passed show up in RSS.
    for id in &ids {
        d.prefill(id, SCALE_LINES);
    }
    let want = n as u64 * SCALE_LINES;
    if !wait_for(Duration::from_secs(120), Duration::from_millis(100), || lines(&a.metrics()) >= want) {
        row.note(format!("only {} of {want} lines arrived in 120 s", lines(&a.metrics())));
    }
    row.set("agent_rss_after_lines_kib", proc::mem(a.pid).rss_kib as f64);

    // Quiet: every container silent, nothing scraped during the window.
    // The checkpoint covering those lines is written within about a second
    // (at most once a second, after the output is flushed): let it happen
    // before the window, it is part of delivering them, not of idling.
    std::thread::sleep(Duration::from_secs(3));
    let (c0, dc0, w0) = (proc::cpu(a.pid), d.server_cpu_time(), Instant::now());
    std::thread::sleep(idle);
    let (c1, dc1, wall) = (proc::cpu(a.pid), d.server_cpu_time(), w0.elapsed());
    let idle_pct = pct(c1 - c0, wall);
    row.set("idle_window_s", wall.as_secs_f64());
    row.set("idle_cpu_pct", idle_pct);
    row.set("idle_cpu_pct_per_1000", idle_pct / (n as f64 / 1000.0));
    if let (Some(a0), Some(a1)) = (dc0, dc1) {
        row.set("double_idle_cpu_pct", pct(a1 - a0, wall));
    }
    let idle_mem = proc::mem(a.pid);
    row.set("agent_rss_idle_kib", idle_mem.rss_kib as f64);
    row.set("agent_peak_rss_kib", idle_mem.hwm_kib as f64);

    let m = a.metrics();
    let delivered = lines(&m);
    row.set("lines", delivered as f64);
    row.set("connect_eagain", a.stderr.lock().unwrap().eagain as f64);
    let status = a.stop();
    let mut seen = check::read(&out, n);
    let t = check::tally(&mut seen, |_| SCALE_LINES);
    row.set("lost", t.lost as f64);
    row.set("duplicated", t.duplicated as f64);
    if !status.contains("exit status: 0") {
        row.note(format!("agent exit: {status}"));
    }
    log(format!(
        "scale N={n}: opened in {:.1} s, RSS {} KiB ({} KiB after lines, {} KiB idle), {fds} fds, {} threads, \
         idle CPU {idle_pct:.3} % over {:.0} s, lost {} dup {}",
        row.get("open_s").unwrap_or(0.0),
        fresh.rss_kib,
        row.get("agent_rss_after_lines_kib").unwrap_or(0.0),
        idle_mem.rss_kib,
        fresh.threads,
        wall.as_secs_f64(),
        t.lost,
        t.duplicated
    ));
    row
}

// ---- throughput ----------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sink {
    DevNull,
    File,
    /// `/dev/null`, and the state directory (checkpoints) on tmpfs, where
    /// fsync costs nothing: what the checkpoint's disk writes cost.
    DevNullStateOnTmpfs,
}

struct Sample {
    t: Instant,
    lines: u64,
    msg_bytes: f64,
    agent_cpu: Duration,
    agent_wait: Duration,
    double_cpu: Duration,
    wire: u64,
}

fn throughput(n: usize, total: u64, sink: Sink, extra: &[&str], scenario: &str, param: &str) -> Row {
    settle_disk();
    let mut row = Row::new(scenario, n, param);
    let tag = format!("tput-{n}-{param}");
    let dir = match sink {
        Sink::DevNullStateOnTmpfs => TempDir::new_in(Path::new("/dev/shm"), &tag),
        _ => TempDir::new(&tag),
    };
    let d = start_double();
    let per = (total / n as u64).max(1);
    let total = per * n as u64;
    let ids = containers(&d, n, &quiet_writer());
    let out = match sink {
        Sink::DevNull | Sink::DevNullStateOnTmpfs => PathBuf::from("/dev/null"),
        Sink::File => dir.0.join("out.jsonl"),
    };
    let a = Agent::start(&launch(&d, &dir, &out, extra));
    // Every stream open before any line: the run measures lines moving on
    // N streams at once, not the agent opening them.
    if !wait_streams(&a, &d, n, Duration::from_secs(180)) {
        row.note("streams did not all open in 180 s");
    }
    // A first open counts lines stamped up to 1 s after its request as
    // history (`FIRST_TAIL`): lines written sooner than that would be read
    // twice (dropped as duplicates, but sent). Measure the steady state.
    std::thread::sleep(Duration::from_millis(1500));
    let sample = |a: &Agent| {
        let m = a.metrics();
        Sample {
            t: Instant::now(),
            lines: lines(&m),
            msg_bytes: sum(&m, "log_capturer_bytes_total"),
            agent_cpu: proc::sched(a.pid).0,
            agent_wait: proc::sched(a.pid).1,
            double_cpu: d.server_cpu_time().unwrap_or_default(),
            wire: d.stats().bytes_sent,
        }
    };
    // Every backlog stored before the double sends any of it: the clock
    // starts with all N streams about to carry data.
    let f = sample(&a);
    d.prefill_each(&ids, per);
    let mut last = sample(&a);
    let mut progress = Instant::now();
    let mut sock: Option<Queued> = None;
    let mut peak_rss = 0;
    let mut ck_max = 0u64;
    // Sample the queued socket memory once, mid-run, at the largest N
    // only: `ss` over 20 000 sockets takes a good part of a core.
    let sample_sock = scenario == "rcvbuf" || n >= 10_000;
    let began = Instant::now();
    while last.lines < total
        && progress.elapsed() < Duration::from_secs(30)
        && began.elapsed() < Duration::from_secs(120)
    {
        // Fine enough for a run of a second: the wall time is from the
        // prefill to the sample that sees the last line.
        std::thread::sleep(Duration::from_millis(20));
        let s = sample(&a);
        peak_rss = peak_rss.max(proc::mem(a.pid).rss_kib);
        if s.lines > last.lines {
            progress = Instant::now();
        }
        let ck = std::fs::metadata(dir.0.join("state/checkpoints.json")).map_or(0, |m| m.len());
        ck_max = ck_max.max(ck);
        if sample_sock && sock.is_none() && s.lines > total / 3 {
            sock = queued(a.pid);
        }
        last = s;
    }
    if last.lines == 0 {
        row.note(format!("no line delivered; agent stderr: {}", a.stderr_tail(3)));
        return row;
    }
    let dt = (last.t - f.t).as_secs_f64().max(1e-9);
    let dl = last.lines.saturating_sub(f.lines) as f64;
    let cpu = (last.agent_cpu - f.agent_cpu).as_secs_f64();
    row.set("lines", last.lines as f64);
    row.set("wall_s", dt);
    row.set("lines_per_s", dl / dt);
    row.set("lines_per_agent_cpu_s", dl / cpu.max(1e-9));
    row.set("msg_mb_per_s", (last.msg_bytes - f.msg_bytes) / dt / 1e6);
    row.set("wire_mb_per_s", (last.wire - f.wire) as f64 / dt / 1e6);
    row.set("agent_cpu_s_per_mlines", cpu / (dl / 1e6));
    row.set("agent_cpu_pct", 100.0 * cpu / dt);
    row.set("agent_runq_wait_pct", 100.0 * (last.agent_wait - f.agent_wait).as_secs_f64() / dt);
    row.set("double_cpu_pct", 100.0 * (last.double_cpu - f.double_cpu).as_secs_f64() / dt);
    row.set("agent_peak_rss_kib", peak_rss as f64);
    if let Some(q) = sock {
        q.record(&mut row);
    }
    let complete = last.lines >= total;
    if !complete {
        row.note(format!(
            "run cut at {} of {total} lines (no progress for 30 s, or 120 s in all): lost/duplicated not judged",
            last.lines
        ));
    }
    // Nothing more may arrive: more than `total` would be duplicates.
    std::thread::sleep(Duration::from_millis(500));
    let m = a.metrics();
    let delivered = lines(&m);
    row.set("checkpoint_writes", sum(&m, "log_capturer_checkpoint_writes_total"));
    row.set("checkpoint_max_mb", ck_max as f64 / 1e6);
    let sent = d.stats().messages_sent;
    let status = a.stop();
    if !status.contains("exit status: 0") {
        row.note(format!("agent exit: {status}"));
    }
    match sink {
        _ if !complete => {}
        Sink::DevNull | Sink::DevNullStateOnTmpfs => {
            row.set("lost", total.saturating_sub(delivered) as f64);
            row.set("duplicated", delivered.saturating_sub(total) as f64);
        }
        Sink::File => {
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            let mut seen = check::read(&out, n);
            if seen.records > 0 {
                let per_line = size as f64 / seen.records as f64;
                row.set("output_mb_per_s", dl * per_line / dt / 1e6);
            }
            let t = check::tally(&mut seen, |_| per);
            row.set("lost", t.lost as f64);
            row.set("duplicated", t.duplicated as f64);
            if seen.unparsed > 0 {
                row.note(format!("{} output lines not understood", seen.unparsed));
            }
        }
    }
    log(format!(
        "{scenario} N={n} {param}: {} lines in {dt:.2} s = {:.0} lines/s wall, {:.0} lines per agent CPU s, \
         agent {:.0} % CPU ({:.0} % waiting for a CPU), double {:.0} % CPU, peak RSS {peak_rss} KiB, \
         double sent {sent} messages, \
         checkpoints up to {:.1} MB, lost {} dup {}",
        last.lines,
        dl / dt,
        dl / cpu.max(1e-9),
        row.get("agent_cpu_pct").unwrap_or(0.0),
        row.get("agent_runq_wait_pct").unwrap_or(0.0),
        row.get("double_cpu_pct").unwrap_or(0.0),
        ck_max as f64 / 1e6,
        row.get("lost").unwrap_or(-1.0),
        row.get("duplicated").unwrap_or(-1.0),
    ));
    row
}

// ---- rotation capacity ---------------------------------------------------

fn rotation(n: usize, rotate_ms: u64, window: Duration, tmpfs: bool) -> Row {
    settle_disk();
    let rotate = Duration::from_millis(rotate_ms);
    let nominal = n as f64 / rotate.as_secs_f64();
    let suffix = if tmpfs { " state-on-tmpfs" } else { "" };
    let mut row = Row::new("rotation", n, format!("{nominal:.0}/s{suffix}"));
    row.set("rotate_after_ms", rotate_ms as f64);
    let tag = format!("rot-{n}-{rotate_ms}");
    let dir = if tmpfs { TempDir::new_in(Path::new("/dev/shm"), &tag) } else { TempDir::new(&tag) };
    let d = start_double();
    // The first reopens come `rotate` (±10 %) after the streams open; the
    // window starts after them.
    let warmup = rotate.mul_f64(1.1) + Duration::from_millis(500);
    let rate = 2.0;
    let lines_each = (rate * (warmup + window + Duration::from_secs(15)).as_secs_f64()) as u64;
    let w = Writer { lines_per_sec: rate, stderr_every: 5, line_len: 60, max_lines: Some(lines_each) };
    containers(&d, n, &w);
    let out = dir.0.join("out.jsonl");
    let ra = format!("{rotate_ms}ms");
    let a = Agent::start(&launch(&d, &dir, &out, &["--from-beginning", "--rotate-after", &ra]));
    if !wait_streams(&a, &d, n, Duration::from_secs(120)) {
        row.note("streams did not all open in 120 s");
    }
    std::thread::sleep(warmup);
    let _ = d.take_reopen_gaps();
    let rot0 = sum(&a.metrics(), "log_capturer_stream_rotations_total");
    let ((c0, w0), dc0, t0) = (proc::sched(a.pid), d.server_cpu_time().unwrap_or_default(), Instant::now());
    std::thread::sleep(window);
    let mut gaps: Vec<f64> = d.take_reopen_gaps().iter().map(|g| g.as_secs_f64() * 1e3).collect();
    let ((c1, w1), dc1, dt) = (proc::sched(a.pid), d.server_cpu_time().unwrap_or_default(), t0.elapsed());
    row.set("agent_runq_wait_pct", pct(w1 - w0, dt));
    row.set("double_cpu_pct", pct(dc1.saturating_sub(dc0), dt));
    let rot1 = sum(&a.metrics(), "log_capturer_stream_rotations_total");
    gaps.sort_by(f64::total_cmp);
    row.set("reopens", gaps.len() as f64);
    row.set("reopen_rate", gaps.len() as f64 / dt.as_secs_f64());
    row.set("gap_p50_ms", report::percentile(&gaps, 50.0));
    row.set("gap_p99_ms", report::percentile(&gaps, 99.0));
    row.set("gap_max_ms", gaps.last().copied().unwrap_or(f64::NAN));
    row.set("agent_cpu_pct", pct(c1 - c0, dt));
    row.set("connect_eagain", a.stderr.lock().unwrap().eagain as f64);
    row.note(format!("agent rotations in window: {:.0}", rot1 - rot0));
    // How long checkpoints held the loop (state on disk: the writes and
    // syncs of ~3 MB at 10 000 containers).
    let m = a.metrics();
    let ck_block = m.get("log_capturer_checkpoint_longest_block_seconds").map_or(f64::NAN, |s| s * 1e3);
    row.set("checkpoint_block_max_ms", ck_block);

    let want = n as u64 * lines_each;
    let delivered_all =
        wait_for(Duration::from_secs(90), Duration::from_millis(250), || lines(&a.metrics()) >= want);
    if !delivered_all {
        row.note(format!("only {} of {want} lines delivered", lines(&a.metrics())));
    }
    std::thread::sleep(Duration::from_millis(500));
    row.set("lines", lines(&a.metrics()) as f64);
    let status = a.stop();
    if !status.contains("exit status: 0") {
        row.note(format!("agent exit: {status}"));
    }
    let mut seen = check::read(&out, n);
    let t = check::tally(&mut seen, |_| lines_each);
    row.set("lost", t.lost as f64);
    row.set("duplicated", t.duplicated as f64);
    log(format!(
        "rotation N={n} --rotate-after {ra}{suffix}: {} reopens in {:.1} s = {:.0}/s (nominal {nominal:.0}/s), \
         gap p50 {:.2} ms p99 {:.2} ms max {:.2} ms, agent {:.0} % CPU ({:.0} % waiting for a CPU), \
         double {:.0} % CPU, connect EAGAIN {}, checkpoint held the loop up to {ck_block:.1} ms, lost {} dup {}",
        gaps.len(),
        dt.as_secs_f64(),
        gaps.len() as f64 / dt.as_secs_f64(),
        report::percentile(&gaps, 50.0),
        report::percentile(&gaps, 99.0),
        gaps.last().copied().unwrap_or(f64::NAN),
        pct(c1 - c0, dt),
        pct(w1 - w0, dt),
        pct(dc1.saturating_sub(dc0), dt),
        row.get("connect_eagain").unwrap_or(0.0),
        t.lost,
        t.duplicated
    ));
    row
}

// ---- at the ceiling: ulimit -n 1024, 2 000 containers -----------------------

fn ulimit(n: usize, nofile: u64) -> Row {
    let mut row = Row::new("ulimit", n, format!("nofile={nofile}"));
    let dir = TempDir::new("ulimit");
    let d = start_double();
    let lines_each = 40;
    let w = Writer { lines_per_sec: 2.0, stderr_every: 5, line_len: 60, max_lines: Some(lines_each) };
    let ids = containers(&d, n, &w);
    let out = dir.0.join("out.jsonl");
    let mut l = launch(&d, &dir, &out, &["--from-beginning"]);
    l.nofile = Some(nofile);
    let mut a = Agent::start(&l);
    let (mut max_fds, mut max_active, mut budget, mut unfollowed) = (0usize, 0usize, f64::NAN, f64::NAN);
    let mut scrapes_failed = 0u32;
    let mut alive = true;
    // The writers run for 20 s; watch the agent the whole time.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(lines_each / 2 + 5) {
        std::thread::sleep(Duration::from_millis(250));
        if !a.alive() {
            alive = false;
            break;
        }
        max_fds = max_fds.max(proc::fds(a.pid));
        // Streams counted by the double: the metrics listener may be out of
        // descriptors too.
        max_active = max_active.max(d.stats().log_streams_open);
        let m = a.metrics();
        scrapes_failed += u32::from(m.is_empty());
        if let Some(b) = m.get("log_capturer_stream_budget") {
            budget = *b;
        }
        if let Some(u) = m.get("log_capturer_containers_unfollowed") {
            unfollowed = *u;
        }
    }
    // Let what is in flight land: lines stop moving for 3 s.
    let mut last = lines(&a.metrics());
    let mut still = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive && still.elapsed() < Duration::from_secs(3) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = lines(&a.metrics());
        if now != last {
            last = now;
            still = Instant::now();
        }
    }
    let stats = d.stats();
    let streams_at_end =
        ids.iter().filter(|id| stats.log_streams_open_by_container.contains_key(*id)).count();
    row.set("max_fds", max_fds as f64);
    row.set("max_active_streams", max_active as f64);
    if scrapes_failed > 0 {
        row.note(format!("{scrapes_failed} metrics scrapes failed"));
    }
    row.set("stream_budget", budget);
    row.set("containers_unfollowed", unfollowed);
    row.set("alive", f64::from(u8::from(alive && a.alive())));
    {
        let e = a.stderr.lock().unwrap();
        row.set("emfile_errors", e.emfile as f64);
        row.set("connect_eagain", e.eagain as f64);
    }
    row.note(format!("streams open at the double at the end: {streams_at_end}"));
    let tail = a.stderr_tail(2).replace('\n', " | ");
    let status = a.stop();
    row.note(format!("agent exit: {status}"));
    let mut seen = check::read(&out, n);
    // "Followed streams lose nothing": every container the agent delivered
    // anything of must have all its lines exactly once.
    let counts: Vec<usize> = seen.seqs.iter().map(Vec::len).collect();
    let t = check::tally(&mut seen, |i| if counts[i] > 0 { lines_each } else { 0 });
    row.set("containers_with_lines", t.with_lines as f64);
    row.set("containers_complete", t.complete as f64);
    row.set("lost", t.lost as f64);
    row.set("duplicated", t.duplicated as f64);
    row.set("lines", seen.records as f64);
    log(format!(
        "ulimit -n {nofile}, N={n}: alive {alive}, max fds {max_fds}, max active streams {max_active}, \
         budget {budget}, unfollowed {unfollowed}, {} containers with lines, {} complete, lost {} dup {}, \
         EMFILE messages {}; last stderr: {tail}",
        t.with_lines,
        t.complete,
        t.lost,
        t.duplicated,
        row.get("emfile_errors").unwrap_or(0.0)
    ));
    row
}

// ---- main -----------------------------------------------------------------

fn baseline() -> Row {
    let mut row = Row::new("baseline", 0, "no containers");
    let dir = TempDir::new("base");
    let d = start_double();
    let a = Agent::start(&launch(&d, &dir, Path::new("/dev/null"), &[]));
    wait_streams(&a, &d, 0, Duration::from_secs(30));
    settle_fds(a.pid);
    let m = proc::mem(a.pid);
    row.set("agent_rss_kib", m.rss_kib as f64);
    row.set("agent_rss_anon_kib", m.anon_kib as f64);
    row.set("agent_fds", proc::fds(a.pid) as f64);
    row.set("fds_minus_n", proc::fds(a.pid) as f64);
    row.set("agent_threads", m.threads as f64);
    a.stop();
    log(format!("baseline: RSS {} KiB, {} fds", m.rss_kib, row.get("agent_fds").unwrap_or(0.0)));
    row
}

fn want(k: &Knobs, scenario: &str) -> bool {
    k.only.as_ref().map_or(true, |o| o.iter().any(|s| s == scenario))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("ceiling benchmark: see benches/ceiling/README.md (knobs are CEILING_* variables)");
        return;
    }
    let k = knobs();
    // One descriptor per server-side connection in this process.
    let limit = docker_double::raise_fd_limit(u64::MAX).unwrap_or(0);
    let need = *k.ns.iter().max().unwrap_or(&0) as u64 + 256;
    assert!(limit >= need, "open-files limit {limit} < {need}: raise it (ulimit -n)");
    std::fs::create_dir_all(&k.out).expect("create the results directory");
    let started = Instant::now();
    let mut rows = Vec::new();

    let base = baseline();
    rows.push(base.clone());
    if want(&k, "scale") {
        let big = *k.ns.iter().max().unwrap_or(&0);
        for &n in &k.ns {
            rows.push(scale(n, if n == big { k.idle_big } else { k.idle_small }));
        }
    }
    if want(&k, "throughput") {
        for &n in &k.ns {
            rows.push(throughput(n, k.lines_null, Sink::DevNull, &[], "throughput", "/dev/null"));
            rows.push(throughput(n, k.lines_file, Sink::File, &[], "throughput", "file"));
            let tmpfs = Sink::DevNullStateOnTmpfs;
            rows.push(throughput(n, k.lines_null, tmpfs, &[], "throughput", "/dev/null state-on-tmpfs"));
        }
    }
    if want(&k, "rotation") {
        for &(n, ms, tmpfs) in &k.rotation {
            rows.push(rotation(n, ms, k.rotation_window, tmpfs));
        }
    }
    if want(&k, "ulimit") {
        rows.push(ulimit(2000, 1024));
    }
    if want(&k, "rcvbuf") {
        if agent::supports("--stream-rcvbuf", "4096") {
            let n = *k.ns.iter().max().unwrap_or(&10_000);
            // 100 lines (14 KB on the wire) per container at 10 000: more
            // than the smaller buffers hold, so they can fill. Longer
            // backlogs make the agent's checkpoint dominate (see README).
            let total = k.lines_rcvbuf;
            for v in ["default", "4096", "16384"] {
                let extra: Vec<&str> = if v == "default" { vec![] } else { vec!["--stream-rcvbuf", v] };
                let mut r = throughput(n, total, Sink::DevNull, &extra, "rcvbuf", v);
                // Total memory: the agent's peak RSS and what the kernel
                // held queued for it mid-run.
                if let (Some(rss), Some(q)) = (r.get("agent_peak_rss_kib"), r.get("kernel_queued_kib")) {
                    r.note(format!("user+kernel {:.0} KiB", rss + q));
                }
                rows.push(r);
            }
        } else {
            log("rcvbuf: the agent has no --stream-rcvbuf: skipped");
            let mut r = Row::new("rcvbuf", 0, "skipped");
            r.note("agent has no --stream-rcvbuf");
            rows.push(r);
        }
    }

    let base_rss = base.get("agent_rss_kib").unwrap_or(0.0);
    for r in rows.iter_mut().filter(|r| r.scenario == "scale") {
        if let Some(rss) = r.get("agent_rss_after_lines_kib") {
            let per = (rss - base_rss) * 1024.0 / r.n as f64;
            r.set("rss_per_stream_b", per);
        }
    }
    let csv = k.out.join("ceiling.csv");
    report::write_csv(&csv, &rows).expect("write the CSV");
    let scale_rows: Vec<Row> =
        rows.iter().filter(|r| r.scenario == "scale" || r.scenario == "baseline").cloned().collect();
    let scale_csv = k.out.join("scale.csv");
    report::write_csv(&scale_csv, &scale_rows).expect("write the scale CSV");
    plot(&scale_csv, &k.out);

    let checks = checks(&rows, &base);
    let table = report::table(&checks);
    let summary = format!(
        "# Ceiling benchmark results\n\n`make ceiling` ({}), {:.0} s in all, {}.\n\n{table}\n\
         Rows: `ceiling.csv` (one per scenario and N); plots: `rss-vs-n.png`, `fds-vs-n.png`.\n",
        git_describe(),
        started.elapsed().as_secs_f64(),
        machine()
    );
    std::fs::write(k.out.join("summary.md"), &summary).expect("write summary.md");
    println!("{summary}");
    log(format!("wrote {} and {}", csv.display(), k.out.join("summary.md").display()));
}

fn plot(scale_csv: &Path, out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/plot.py");
    for (png, y, y2, title) in [
        (
            "rss-vs-n.png",
            "agent_rss_kib,agent_rss_after_lines_kib,agent_rss_idle_kib",
            "rss_per_stream_b",
            "agent RSS vs followed streams",
        ),
        ("fds-vs-n.png", "agent_fds,fds_minus_n", "", "agent descriptors vs followed streams"),
    ] {
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(&script).arg(scale_csv).arg(out.join(png)).args(["--x", "n", "--y", y, "--markers"]);
        cmd.args(["--title", title, "--xlabel", "followed streams (N)"]);
        if !y2.is_empty() {
            cmd.args(["--y2", y2]);
        }
        match cmd.status() {
            Ok(s) if s.success() => {}
            other => log(format!("plot {png} failed ({other:?}); the CSV is there")),
        }
    }
}

fn git_describe() -> String {
    std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "log", "-1", "--format=%h %s"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cores} cores, load average at the end {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}

/// Targets beside the measured values.
fn checks(rows: &[Row], base: &Row) -> Vec<Check> {
    let mut c = Vec::new();
    let base_rss = base.get("agent_rss_kib").unwrap_or(0.0);
    let base_fds = base.get("agent_fds").unwrap_or(0.0);
    let scale: Vec<&Row> = rows.iter().filter(|r| r.scenario == "scale").collect();
    for r in &scale {
        let n = r.n as f64;
        let worst = ["agent_rss_kib", "agent_rss_after_lines_kib", "agent_rss_idle_kib"]
            .iter()
            .filter_map(|k| r.get(k))
            .fold(0.0, f64::max);
        let per = (worst - base_rss) * 1024.0 / n;
        c.push(Check {
            what: format!("agent RSS per stream, N={}", r.n),
            target: if r.n >= 10_000 { "<= 4096 B".into() } else { "(<= 4096 B at 10 000)".into() },
            measured: format!(
                "{per:.0} B (({worst:.0} - {base_rss:.0} KiB baseline) / N; kernel queued {} KiB, slab delta {} KiB)",
                r.get("kernel_queued_kib").map_or("?".into(), |v| format!("{v:.0}")),
                r.get("kernel_slab_delta_kib").map_or("?".into(), |v| format!("{v:.0}")),
            ),
            pass: (r.n >= 10_000).then_some(per <= 4096.0),
        });
        let fds = r.get("agent_fds").unwrap_or(0.0);
        c.push(Check {
            what: format!("fds, N={}", r.n),
            target: format!("N + constant ({base_fds:.0} with no containers)"),
            measured: format!("{fds:.0} = N + {:.0}", fds - n),
            pass: Some((fds - n - base_fds).abs() < 0.5),
        });
        c.push(Check {
            what: format!("threads, N={}", r.n),
            target: "1".into(),
            measured: format!("{:.0}", r.get("agent_threads").unwrap_or(0.0)),
            pass: Some(r.get("agent_threads") == Some(1.0)),
        });
        let idle = r.get("idle_cpu_pct").unwrap_or(f64::NAN);
        c.push(Check {
            what: format!("idle CPU, N={} ({:.0} s window)", r.n, r.get("idle_window_s").unwrap_or(0.0)),
            target: if r.n >= 10_000 { "< 0.5 % of a core".into() } else { "(< 0.5 % at 10 000)".into() },
            measured: format!(
                "{idle:.3} % ({:.4} % per 1 000 streams)",
                r.get("idle_cpu_pct_per_1000").unwrap_or(f64::NAN)
            ),
            pass: (r.n >= 10_000).then_some(idle < 0.5),
        });
    }
    if scale.len() >= 2 {
        // Least-squares slope of RSS (after lines) over N.
        let pts: Vec<(f64, f64)> = scale
            .iter()
            .filter_map(|r| Some((r.n as f64, r.get("agent_rss_after_lines_kib")? * 1024.0)))
            .collect();
        let k = pts.len() as f64;
        let (sx, sy) = pts.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
        let (mx, my) = (sx / k, sy / k);
        let num: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let den: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let slope = num / den;
        c.push(Check {
            what: "RSS slope over N (least squares, after lines)".into(),
            target: "<= 4096 B per stream".into(),
            measured: format!("{slope:.0} B per stream"),
            pass: Some(slope <= 4096.0),
        });
    }
    for r in rows.iter().filter(|r| r.scenario == "throughput") {
        let per_cpu = r.get("lines_per_agent_cpu_s").unwrap_or(0.0);
        c.push(Check {
            what: format!("throughput into {}, N={}", r.param, r.n),
            target: if r.param.starts_with("/dev/null") {
                ">= 1 000 000 lines/s on one core".into()
            } else {
                "-".into()
            },
            measured: format!(
                "{per_cpu:.0} lines per agent CPU s; wall {:.0} lines/s, {:.0} MB/s messages{}; {:.2} agent CPU s per M lines; \
                 checkpoint file up to {:.0} MB; agent waited for a CPU {:.0} % of the time",
                r.get("lines_per_s").unwrap_or(0.0),
                r.get("msg_mb_per_s").unwrap_or(0.0),
                r.get("output_mb_per_s").map_or(String::new(), |v| format!(", {v:.0} MB/s JSON written")),
                r.get("agent_cpu_s_per_mlines").unwrap_or(0.0),
                r.get("checkpoint_max_mb").unwrap_or(0.0),
                r.get("agent_runq_wait_pct").unwrap_or(0.0),
            ),
            pass: (r.param.starts_with("/dev/null")).then_some(per_cpu >= 1e6),
        });
    }
    c.push(Check {
        what: "decode pipeline".into(),
        target: ">= 1 GB/s".into(),
        measured: "not run here: `cargo bench --bench decode` (README: 1.03 GB/s short lines)".into(),
        pass: None,
    });
    let rot: Vec<&Row> = rows.iter().filter(|r| r.scenario == "rotation").collect();
    for r in &rot {
        let p99 = r.get("gap_p99_ms").unwrap_or(f64::NAN);
        c.push(Check {
            what: format!("reopen downtime p99, N={} at {}", r.n, r.param),
            target: "< 50 ms".into(),
            measured: format!(
                "{p99:.2} ms (p50 {:.2}, max {:.2}; measured {:.0} reopens/s; agent {:.0} % CPU, waited for a CPU {:.0} %; \
                 checkpoints held the loop up to {:.1} ms)",
                r.get("gap_p50_ms").unwrap_or(f64::NAN),
                r.get("gap_max_ms").unwrap_or(f64::NAN),
                r.get("reopen_rate").unwrap_or(0.0),
                r.get("agent_cpu_pct").unwrap_or(0.0),
                r.get("agent_runq_wait_pct").unwrap_or(0.0),
                r.get("checkpoint_block_max_ms").unwrap_or(f64::NAN)
            ),
            pass: Some(p99 < 50.0),
        });
    }
    if let Some(r) = rows.iter().find(|r| r.scenario == "ulimit") {
        let ok = r.get("alive") == Some(1.0)
            && r.get("max_active_streams") <= r.get("stream_budget")
            && r.get("max_fds").is_some_and(|f| f <= 1024.0)
            && r.get("lost") == Some(0.0)
            && r.get("duplicated") == Some(0.0)
            && r.get("emfile_errors") == Some(0.0);
        c.push(Check {
            what: format!("ulimit -n 1024 with {} containers", r.n),
            target: "alive, budget respected (no EMFILE), followed streams lose nothing".into(),
            measured: format!(
                "alive {}, max fds {:.0}, max streams {:.0}, budget {}, EMFILE messages {:.0}, {:.0} containers with lines ({:.0} complete), lost {:.0}",
                r.get("alive") == Some(1.0),
                r.get("max_fds").unwrap_or(0.0),
                r.get("max_active_streams").unwrap_or(0.0),
                r.get("stream_budget").map_or("none".into(), |b| format!("{b}")),
                r.get("emfile_errors").unwrap_or(0.0),
                r.get("containers_with_lines").unwrap_or(0.0),
                r.get("containers_complete").unwrap_or(0.0),
                r.get("lost").unwrap_or(0.0),
            ),
            pass: Some(ok),
        });
    }
    for r in rows.iter().filter(|r| r.scenario == "rcvbuf" && r.n > 0) {
        let rss = r.get("agent_peak_rss_kib").unwrap_or(f64::NAN);
        let q = r.get("kernel_queued_kib").unwrap_or(f64::NAN);
        c.push(Check {
            what: format!("--stream-rcvbuf {}, N={}", r.param, r.n),
            target: "less user+kernel memory, same lines/s".into(),
            measured: format!(
                "{:.0} lines/s wall, {:.0} per agent CPU s; peak RSS {rss:.0} KiB + kernel queued {q:.0} KiB = {:.0} KiB",
                r.get("lines_per_s").unwrap_or(0.0),
                r.get("lines_per_agent_cpu_s").unwrap_or(0.0),
                rss + q
            ),
            pass: None,
        });
    }
    let lossy: Vec<String> = rows
        .iter()
        .filter(|r| r.scenario != "ulimit")
        .filter(|r| r.get("lost").unwrap_or(0.0) > 0.0 || r.get("duplicated").unwrap_or(0.0) > 0.0)
        .map(|r| format!("{} N={} {}", r.scenario, r.n, r.param))
        .collect();
    c.push(Check {
        what: "lines lost or duplicated, every run".into(),
        target: "0".into(),
        measured: if lossy.is_empty() { "0".into() } else { format!("in {}", lossy.join(", ")) },
        pass: Some(lossy.is_empty()),
    });
    c
}
