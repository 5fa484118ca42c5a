//! Helpers for the end-to-end tests against a real dockerd: finding the
//! daemon (or skipping), labelled containers removed on drop, the agent
//! filtered to them, its output read incrementally, numbered-line checks,
//! and a real Prometheus scraping the agent.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::Agent;

/// The default private socket of `tests/docker/up.sh` (see `tests/docker/env.sh`).
pub const DEFAULT_SOCKET: &str = "/tmp/log-capturer-docker/docker.sock";

/// How long any single `docker` CLI call may take before the test fails.
const DOCKER_CLI_TIMEOUT: Duration = Duration::from_secs(90);

/// A reachable dockerd.
#[derive(Clone, Debug)]
pub struct Daemon {
    pub socket: PathBuf,
}

/// Writes straight to the process's stderr: libtest captures `eprintln!`
/// of passing tests, and a skip must be visible in `make test`.
pub fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn require_docker() -> bool {
    std::env::var("LC_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// A tool a test needs is not installed: skip (after one clear line on
/// stderr), or fail under `LC_REQUIRE_DOCKER=1`, where CI installs it.
pub fn tool_missing(test: &str, tool: &str, install: &str) {
    if require_docker() {
        panic!("LC_REQUIRE_DOCKER=1 but {tool} is missing ({install}) for {test}");
    }
    say(&format!("\nSKIPPED: {tool} is not installed ({install}) for {test}"));
}

/// The daemon to test against, found once per process: `DOCKER_HOST`
/// (unix://) if it answers `/_ping`, else the default private socket.
/// None (after one clear line on stderr) when neither answers, unless
/// `LC_REQUIRE_DOCKER=1`, which makes it a failure.
pub fn daemon(test: &str) -> Option<Daemon> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(find_daemon);
    match found {
        Ok(socket) => Some(Daemon { socket: socket.clone() }),
        Err(why) if require_docker() => {
            panic!("LC_REQUIRE_DOCKER=1 but no Docker daemon: {why}; run `eval \"$(tests/docker/up.sh)\"`")
        }
        Err(why) => {
            // On a line of its own: libtest has already printed "test ... ".
            say(&format!("\nSKIPPED: no Docker daemon (run make docker-up) for {test}: {why}"));
            None
        }
    }
}

fn find_daemon() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        match host.strip_prefix("unix://") {
            Some(p) if ping(Path::new(p)) => return Ok(PathBuf::from(p)),
            Some(p) => tried.push(format!("DOCKER_HOST {p} does not answer /_ping")),
            None => tried.push(format!("DOCKER_HOST={host} is not unix://")),
        }
    }
    if ping(Path::new(DEFAULT_SOCKET)) {
        return Ok(PathBuf::from(DEFAULT_SOCKET));
    }
    tried.push(format!("{DEFAULT_SOCKET} does not answer /_ping"));
    if Command::new("docker").arg("--version").output().is_err() {
        tried.push("no docker CLI on PATH".into());
    }
    Err(tried.join("; "))
}

/// True when a dockerd answers `GET /_ping` on `socket` within 5 s.
pub fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let t = Some(Duration::from_secs(5));
    if s.set_read_timeout(t).is_err() || s.set_write_timeout(t).is_err() {
        return false;
    }
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n").is_err() {
        return false;
    }
    let mut resp = Vec::new();
    let _ = s.take(4096).read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp);
    resp.starts_with("HTTP/1.") && resp.contains(" 200 ") && resp.ends_with("\r\n\r\nOK")
}

/// Runs `cmd` to completion within `timeout`: Ok(stdout) on exit 0, else
/// Err with what happened.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    // Drain both pipes on threads so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = t_out.join().unwrap_or_default();
    let err = t_err.join().unwrap_or_default();
    if status.success() {
        Ok(out)
    } else {
        Err(format!("{what} failed ({status}): {}", err.trim()))
    }
}

impl Daemon {
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Runs the docker CLI against this daemon.
    pub fn try_docker(&self, args: &[&str]) -> Result<String, String> {
        run_with_timeout(
            Command::new("docker").env("DOCKER_HOST", self.host()).args(args),
            DOCKER_CLI_TIMEOUT,
        )
    }

    /// Runs the docker CLI against this daemon; a failure fails the test.
    pub fn docker(&self, args: &[&str]) -> String {
        self.try_docker(args).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The containers of one test: a unique label and name prefix, so tests
/// (and concurrent runs) never see each other's containers. Removes every
/// container with the label on drop, also when the test panics.
pub struct Group {
    pub daemon: Daemon,
    /// The label value; the label is `lc.e2e=<tag>`.
    pub tag: String,
}

impl Group {
    pub fn new(daemon: &Daemon, test: &str) -> Group {
        let tag = format!("{test}-{}", std::process::id());
        let g = Group { daemon: daemon.clone(), tag };
        // Leftovers of a crashed run with the same pid.
        g.remove_all();
        g
    }

    pub fn label(&self) -> String {
        format!("lc.e2e={}", self.tag)
    }

    /// The full container name for `short`.
    pub fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.tag)
    }

    /// `docker run -d --network none --label lc.e2e=<tag> --name <tag>-<short>
    /// <opts> busybox:local sh -c <script>`; returns the full name.
    pub fn run(&self, short: &str, opts: &[&str], script: &str) -> String {
        let name = self.name(short);
        let label = self.label();
        let mut args = vec!["run", "-d", "--network", "none", "--label", &label, "--name", &name];
        args.extend_from_slice(opts);
        args.extend_from_slice(&["busybox:local", "sh", "-c", script]);
        self.daemon.docker(&args);
        name
    }

    /// The agent following only this group's containers.
    pub fn agent(&self, dir: &Path, extra: &[&str]) -> Agent {
        let label = self.label();
        let mut args = vec!["--include-label", &label];
        args.extend_from_slice(extra);
        let agent = Agent::start(&self.daemon.socket, dir, &args);
        wait_docker_up(&agent);
        agent
    }

    fn remove_all(&self) {
        let filter = format!("label={}", self.label());
        let Ok(ids) = self.daemon.try_docker(&["ps", "-aq", "--filter", &filter]) else {
            return;
        };
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return;
        }
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        if let Err(e) = self.daemon.try_docker(&args) {
            say(&format!("warning: could not remove the containers of {}: {e}", self.tag));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Waits until the agent says Docker is up (it has pinged and is opening
/// the events stream). Containers created after that are shipped from
/// their start.
pub fn wait_docker_up(agent: &Agent) {
    let ok = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        agent.metric("log_capturer_docker_up") == 1.0
    });
    assert!(ok, "agent never reported docker_up 1; stderr:\n{}", agent.stderr());
}

/// The agent's fd count once it has settled with no container: the same
/// count twice 300 ms apart, no stream, no followed container.
pub fn settled_fds(agent: &Agent) -> usize {
    let mut last = usize::MAX;
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(300), || {
        let m = agent.metrics();
        let fds = agent.fds();
        let same = fds == last;
        last = fds;
        same && m.get("log_capturer_active_streams") == Some(&0.0)
    });
    assert!(ok, "agent fds never settled: {:?}", agent.fd_list());
    last
}

pub use crate::common::wait_until;

/// A shell script writing `<name> <i>` for i in 1..=total, every fifth
/// line to stderr, at about `rate` lines/s (0: as fast as it can). Lines
/// come in bursts ten times a second, paced by /proc/uptime (read by a
/// builtin) so a busy machine slows the loop less: busybox `usleep` is a
/// fork and exec, too dear per line. The counter lives in /tmp/n inside
/// the container, so a restarted container goes on where it stopped;
/// SIGTERM ends the loop only between two bursts, so what the container
/// wrote is always exactly 1..=k.
pub fn numbered(name: &str, total: u64, rate: u64) -> String {
    let (burst, pace) = match rate {
        0 => (total.min(1000), String::new()),
        r => {
            let burst = r.div_ceil(10);
            // Centiseconds per burst; behind schedule, start afresh
            // rather than catch up in one big burst.
            let every = (burst * 100 / r).max(1);
            let pace = format!(
                "t=$((t + {every})); read up x < /proc/uptime; now=${{up%.*}}${{up#*.}}; \
                 if [ $t -gt $now ]; then usleep $(((t - now) * 10000)); else t=$now; fi;"
            );
            (burst, pace)
        }
    };
    format!(
        "trap 'stop=1' TERM; i=$(cat /tmp/n 2>/dev/null || echo 0); \
         read up x < /proc/uptime; t=${{up%.*}}${{up#*.}}; \
         while [ -z \"$stop\" ] && [ $i -lt {total} ]; do j=0; \
         while [ $j -lt {burst} ] && [ $i -lt {total} ]; do i=$((i+1)); j=$((j+1)); \
         if [ $((i % 5)) -eq 0 ]; then echo \"{name} $i\" >&2; else echo \"{name} $i\"; fi; done; \
         echo $i > /tmp/n; {pace} done"
    )
}

/// One record of the agent's output.
#[derive(Clone, Debug)]
pub struct Line {
    pub container_id: String,
    pub container: String,
    pub stream: String,
    pub message: String,
    pub base64: Option<String>,
    pub truncated: bool,
    pub timestamp: String,
}

/// The agent's output file, read incrementally (a one-minute run writes
/// tens of MB; rereading it on every poll would cost the agent its CPU).
pub struct Output {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    pub lines: Vec<Line>,
}

impl Output {
    pub fn new(path: &Path) -> Output {
        Output { path: path.to_owned(), offset: 0, partial: Vec::new(), lines: Vec::new() }
    }

    /// Reads what was appended since the last call; returns self.
    pub fn refresh(&mut self) -> &Self {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return self;
        };
        use std::io::Seek;
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return self;
        }
        let mut buf = Vec::new();
        let n = f.read_to_end(&mut buf).unwrap_or(0);
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf[..n]);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return self;
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for raw in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(raw).unwrap_or_else(|e| {
                panic!("output line is not JSON ({e}): {:?}", String::from_utf8_lossy(raw))
            });
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            self.lines.push(Line {
                container_id: s("container_id"),
                container: s("container_name"),
                stream: s("stream"),
                message: s("message"),
                base64: v["message_base64"].as_str().map(str::to_owned),
                truncated: v["truncated"].as_bool().unwrap_or(false),
                timestamp: s("timestamp"),
            });
        }
        self
    }

    pub fn of<'a>(&'a self, container: &'a str) -> impl Iterator<Item = &'a Line> + 'a {
        self.lines.iter().filter(move |l| l.container == container)
    }
}

/// The numbers of `<name> <i>` lines of one container, by stream.
pub fn seqs_by_stream(lines: &[Line], name: &str) -> BTreeMap<String, Vec<u64>> {
    let mut by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.container == name) {
        let mut parts = l.message.split(' ');
        if let (Some(n), Some(i), None) = (parts.next(), parts.next(), parts.next()) {
            if n == name {
                if let Ok(i) = i.parse() {
                    by.entry(l.stream.clone()).or_default().push(i);
                }
            }
        }
    }
    by
}

/// How many distinct numbers of 1..=total one container's output holds.
pub fn distinct(lines: &[Line], name: &str) -> usize {
    let mut all: Vec<u64> = seqs_by_stream(lines, name).into_values().flatten().collect();
    all.sort_unstable();
    all.dedup();
    all.len()
}

/// Every line 1..=total of `name` exactly once, in order within each
/// stream, and nothing else from it. Err describes the first problem.
pub fn check_exactly_once(lines: &[Line], name: &str, total: u64) -> Result<(), String> {
    let by = seqs_by_stream(lines, name);
    for (s, seqs) in &by {
        if let Some(w) = seqs.windows(2).find(|w| w[0] >= w[1]) {
            return Err(format!("{name}/{s}: {} then {} (repeated or out of order)", w[0], w[1]));
        }
    }
    check_none_lost(lines, name, total)?;
    let n = by.values().map(Vec::len).sum::<usize>() as u64;
    if n != total {
        return Err(format!("{name}: {n} lines for {total} numbers (duplicates)"));
    }
    let other = lines.iter().filter(|l| l.container == name).count() as u64 - n;
    if other != 0 {
        return Err(format!("{name}: {other} lines that are not numbered lines"));
    }
    Ok(())
}

/// Every line 1..=total of `name` at least once (repeats allowed).
pub fn check_none_lost(lines: &[Line], name: &str, total: u64) -> Result<(), String> {
    let mut all: Vec<u64> = seqs_by_stream(lines, name).into_values().flatten().collect();
    all.sort_unstable();
    all.dedup();
    let missing: Vec<u64> = (1..=total).filter(|i| all.binary_search(i).is_err()).collect();
    if !missing.is_empty() {
        let first: Vec<u64> = missing.iter().copied().take(10).collect();
        return Err(format!("{name}: {} of {total} lines lost, first {first:?}", missing.len()));
    }
    if let Some(extra) = all.iter().find(|&&i| i > total || i == 0) {
        return Err(format!("{name}: line {extra} was never written"));
    }
    Ok(())
}

/// Lines delivered more than once for `name`.
pub fn duplicates(lines: &[Line], name: &str) -> usize {
    let mut all: Vec<u64> = seqs_by_stream(lines, name).into_values().flatten().collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    n - all.len()
}

/// Waits until the agent follows no container and holds no log stream:
/// after that it cannot write anything more for the containers that were
/// there, so "exactly once" can be judged.
pub fn wait_quiet(agent: &Agent, timeout: Duration) -> bool {
    wait_until(timeout, Duration::from_millis(100), || {
        let m = agent.metrics();
        m.get("log_capturer_containers_followed") == Some(&0.0)
            && m.get("log_capturer_active_streams") == Some(&0.0)
    })
}

/// The container's state (`running`, `exited`, `paused`...).
pub fn state(d: &Daemon, name: &str) -> String {
    d.docker(&["inspect", "-f", "{{.State.Status}}", name]).trim().to_owned()
}

/// A loopback TCP port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Plain HTTP/1.0 GET on 127.0.0.1:`port`: (status, body).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| format!("read from {addr}: {e}"))?;
    let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real Prometheus (Debian's `prometheus`) scraping one target every
/// second, with its own storage in a temp dir. Killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    dir: crate::common::TempDir,
}

impl Prometheus {
    /// Scraping `target` as job `agent`. None when the `prometheus` binary
    /// is missing.
    pub fn start(target: &str) -> Option<Prometheus> {
        Self::start_job(target, "agent", &[])
    }

    /// Scraping `target` as job `job`, with `rule_files` loaded (evaluated
    /// every second). None when the `prometheus` binary is missing.
    pub fn start_job(target: &str, job: &str, rule_files: &[&Path]) -> Option<Prometheus> {
        Command::new("prometheus").arg("--version").output().ok()?;
        let dir = crate::common::TempDir::new("prom");
        let config = dir.0.join("prometheus.yml");
        let rules: String = rule_files.iter().map(|r| format!("  - '{}'\n", r.display())).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 rule_files:\n{rules}\
                 scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let p = Prometheus { child, addr, dir };
        let ready = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
            matches!(http_get(&p.addr, "/-/ready"), Ok((200, _)))
        });
        assert!(ready, "prometheus not ready within 60 s; its log:\n{}", p.log());
        Some(p)
    }

    /// GET a path of Prometheus's HTTP API: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.addr, path).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: each series' labels (as `k=v,...`) and value.
    pub fn query(&self, expr: &str) -> Vec<(String, f64)> {
        let path = format!("/api/v1/query?query={}", url_encode(expr));
        let (status, body) = http_get(&self.addr, &path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 200, "prometheus query {expr}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "job" | "instance"))
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                let value = r["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }

    /// The single value of `expr`, or None when it has no series yet.
    pub fn value(&self, expr: &str) -> Option<f64> {
        self.query(expr).first().map(|(_, v)| *v)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` on an exposition: Ok, or its complaints.
/// None when promtool is missing.
pub fn promtool_check(exposition: &str) -> Option<Result<(), String>> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some(if out.status.success() && text.trim().is_empty() { Ok(()) } else { Err(text) })
}

/// The highest line number `name` wrote, from `docker logs` (both
/// streams): the ground truth for a container stopped at an unknown line.
pub fn logged_max(d: &Daemon, name: &str) -> u64 {
    let r = run_with_timeout(
        Command::new("sh")
            .args([
                "-c",
                "docker logs \"$0\" 2>&1 | awk '{ if ($2 + 0 > m) m = $2 + 0 } END { print m + 0 }'",
                name,
            ])
            .env("DOCKER_HOST", d.host()),
        DOCKER_CLI_TIMEOUT,
    );
    r.unwrap_or_else(|e| panic!("{e}")).trim().parse().unwrap_or(0)
}

/// Waits until none of `names` is running any more (they write a fixed
/// number of lines and exit; on a busy machine that takes a while).
pub fn wait_exited(d: &Daemon, names: &[String], timeout: Duration) -> bool {
    wait_until(timeout, Duration::from_secs(1), || {
        let mut args = vec!["inspect", "-f", "{{.State.Running}}"];
        args.extend(names.iter().map(String::as_str));
        d.docker(&args).split_whitespace().all(|s| s == "false")
    })
}

/// `docker logs -t` of both streams, merged (for failure messages).
pub fn logs_both(d: &Daemon, name: &str) -> String {
    let r = run_with_timeout(
        Command::new("sh").args(["-c", "docker logs -t \"$0\" 2>&1", name]).env("DOCKER_HOST", d.host()),
        DOCKER_CLI_TIMEOUT,
    );
    r.unwrap_or_else(|e| e)
}

/// The line numbers `docker logs` holds for `name` (both streams), sorted:
/// what dockerd stored, which is all an agent can ship.
pub fn logged_numbers(d: &Daemon, name: &str) -> Vec<u64> {
    let r = run_with_timeout(
        Command::new("sh")
            .args(["-c", "docker logs \"$0\" 2>&1 | awk '{ print $2 }'", name])
            .env("DOCKER_HOST", d.host()),
        DOCKER_CLI_TIMEOUT,
    );
    let mut v: Vec<u64> =
        r.unwrap_or_else(|e| panic!("{e}")).split_whitespace().filter_map(|s| s.parse().ok()).collect();
    v.sort_unstable();
    v
}
