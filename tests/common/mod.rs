//! Running the agent binary against the Docker API test double, and
//! reading what it did: its output, its metrics, its fds and threads.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use docker_double::{Config, ContainerSpec, Double, Fault, Match, SinceMode, Stats, Stream, Writer};

pub mod real_loki;

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("lc-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running agent process.
pub struct Agent {
    pub child: Child,
    pub metrics: SocketAddr,
    pub output: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    /// Start the agent on `socket`, writing to `dir/out.jsonl`, state in
    /// `dir/state`, with `extra` flags. Waits until it serves metrics.
    pub fn start(socket: &Path, dir: &Path, extra: &[&str]) -> Agent {
        Self::spawn(socket, dir, extra, false, None)
    }

    /// Like [`Agent::start`], under an open-files limit of `nofile` (soft
    /// and hard), as `ulimit -n` would set it.
    pub fn start_with_nofile(socket: &Path, dir: &Path, extra: &[&str], nofile: u64) -> Agent {
        Self::spawn(socket, dir, extra, false, Some(nofile))
    }

    /// Like [`Agent::start`], with `--output -` and stdout a pipe the test
    /// reads (or does not) through `child.stdout`.
    pub fn start_piped(socket: &Path, dir: &Path, extra: &[&str]) -> Agent {
        Self::spawn(socket, dir, extra, true, None)
    }

    /// Like [`Agent::start`], on any `--docker-host` URL (e.g. `tcp://`).
    pub fn start_on(host: &str, dir: &Path, extra: &[&str]) -> Agent {
        Self::spawn_on(host, dir, extra, false, None)
    }

    fn spawn(socket: &Path, dir: &Path, extra: &[&str], piped: bool, nofile: Option<u64>) -> Agent {
        Self::spawn_on(&format!("unix://{}", socket.display()), dir, extra, piped, nofile)
    }

    fn spawn_on(host: &str, dir: &Path, extra: &[&str], piped: bool, nofile: Option<u64>) -> Agent {
        let output = dir.join("out.jsonl");
        let bin = env!("CARGO_BIN_EXE_log-capturer");
        // prlimit sets the limit and execs the agent: same pid.
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg("--docker-host")
            .arg(host)
            .arg("--output")
            .arg(if piped { Path::new("-") } else { output.as_path() })
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(if piped { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the agent");
        Self::adopt(child, output)
    }

    /// Like [`Agent::start`] without `--output` (for a sink flag such as
    /// `--loki` in `args`), with these environment variables.
    pub fn start_sink(socket: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let child = Command::new(env!("CARGO_BIN_EXE_log-capturer"))
            .arg("--docker-host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the agent");
        Self::adopt(child, dir.join("out.jsonl"))
    }

    /// Collect a spawned agent's stderr and wait until it serves metrics.
    fn adopt(mut child: Child, output: PathBuf) -> Agent {
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                // Log first, then say the agent is up: a test reading
                // stderr() right after start() must see this line.
                {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                if let Some(rest) = line.split("metrics on http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("metrics address"),
            Err(_) => {
                let _ = child.kill();
                panic!("agent did not start: {}", stderr.lock().unwrap());
            }
        };
        Agent { child, metrics: addr, output, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// GET a path on the metrics listener: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.metrics).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }

    /// Metric samples by their full name with labels, e.g.
    /// `log_capturer_stream_rotations_total{reason="age"}`.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    pub fn metric(&self, name: &str) -> f64 {
        self.metrics().get(name).copied().unwrap_or(f64::NAN)
    }

    /// Change the running agent's soft open-files limit (as root or its
    /// owner can), leaving the hard limit alone.
    pub fn set_soft_nofile(&self, n: u64) {
        let st = Command::new("prlimit")
            .args(["--pid", &self.pid().to_string(), &format!("--nofile={n}:")])
            .status()
            .expect("run prlimit");
        assert!(st.success(), "prlimit --pid failed");
    }

    /// Send a signal and wait for the exit status.
    pub fn stop(mut self, sig: &str) -> std::process::ExitStatus {
        Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "agent did not exit after SIG{sig}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }

    /// What each open fd is (for messages when a count is off).
    pub fn fd_list(&self) -> Vec<String> {
        let dir = format!("/proc/{}/fd", self.pid());
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| {
                        let target = std::fs::read_link(e.path()).map(|t| t.display().to_string());
                        format!("{}->{}", e.file_name().to_string_lossy(), target.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One output record.
#[derive(Debug, Clone)]
pub struct Rec {
    pub container: String,
    pub stream: String,
    pub message: String,
    pub timestamp: Option<String>,
    pub truncated: bool,
}

pub fn read_output(path: &Path) -> Vec<Rec> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // The agent may be in the middle of writing the last line.
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad output line {l:?}: {e}"));
            Rec {
                container: v["container_name"].as_str().unwrap_or_default().to_owned(),
                stream: v["stream"].as_str().unwrap_or_default().to_owned(),
                message: v["message"].as_str().unwrap_or_default().to_owned(),
                timestamp: v["timestamp"].as_str().map(str::to_owned),
                truncated: v["truncated"].as_bool().unwrap_or(false),
            }
        })
        .collect()
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    wait_until(timeout, Duration::from_millis(20), cond)
}

/// Poll `cond` every `every` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
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

/// Check the double's writer lines (`<name> <seq> <stream> x…`) of one
/// container: every seq from 1 to `total` exactly once, in order within
/// each stream. Returns a description of the first problem.
pub fn check_sequence(recs: &[Rec], name: &str, total: u64) -> Result<(), String> {
    let mut by_stream: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut all = Vec::new();
    for r in recs.iter().filter(|r| r.container == name) {
        let mut parts = r.message.split(' ');
        let (Some(n), Some(seq)) = (parts.next(), parts.next()) else {
            continue;
        };
        if n != name {
            continue;
        }
        let seq: u64 = seq.parse().map_err(|_| format!("bad line {:?}", r.message))?;
        by_stream.entry(r.stream.as_str()).or_default().push(seq);
        all.push(seq);
    }
    for (s, seqs) in &by_stream {
        if let Some(w) = seqs.windows(2).find(|w| w[0] >= w[1]) {
            return Err(format!("{name}/{s}: {} then {} (out of order or repeated)", w[0], w[1]));
        }
    }
    all.sort_unstable();
    let dups = all.windows(2).filter(|w| w[0] == w[1]).count();
    all.dedup();
    let missing: Vec<u64> = (1..=total).filter(|s| all.binary_search(s).is_err()).take(10).collect();
    if dups > 0 || !missing.is_empty() || all.len() as u64 != total {
        return Err(format!(
            "{name}: {} distinct of {total}, {dups} duplicated, first missing {missing:?}",
            all.len()
        ));
    }
    Ok(())
}
