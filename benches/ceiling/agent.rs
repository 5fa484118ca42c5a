//! The agent as a child process: started against the double, scraped over
//! its metrics listener, stopped with SIGTERM (killed if it will not go).

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `target/release/log-capturer`, built if missing. The bench binary is
/// `target/release/deps/ceiling-*`, so the agent is two levels up.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's own path");
    let release = exe.parent().and_then(Path::parent).expect("target/release").to_path_buf();
    let bin = release.join("log-capturer");
    if !bin.exists() {
        eprintln!("ceiling: {} missing, building it", bin.display());
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let ok = Command::new(cargo)
            .args(["build", "--release", "--locked", "--bin", "log-capturer"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok && bin.exists(), "could not build {}: run `cargo build --release`", bin.display());
    }
    bin
}

/// What the agent wrote on stderr: the last lines, and counts of the kinds
/// of complaint the ceiling scenarios care about.
#[derive(Default)]
pub struct Stderr {
    pub last: VecDeque<String>,
    pub lines: u64,
    /// "Too many open files" (EMFILE).
    pub emfile: u64,
    /// "Resource temporarily unavailable" (EAGAIN on connect: the
    /// listening socket's backlog was full).
    pub eagain: u64,
}

pub struct Agent {
    child: Child,
    pub pid: u32,
    pub metrics: SocketAddr,
    pub stderr: Arc<Mutex<Stderr>>,
}

pub struct Launch {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub output: PathBuf,
    pub extra: Vec<String>,
    /// Run under `prlimit --nofile=N:N`.
    pub nofile: Option<u64>,
}

impl Agent {
    pub fn start(l: &Launch) -> Agent {
        let bin = binary();
        let mut cmd = match l.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("--docker-host")
            .arg(format!("unix://{}", l.socket.display()))
            .arg("--output")
            .arg(&l.output)
            .arg("--state-dir")
            .arg(&l.state_dir)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(&l.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let pid = child.id();
        let stderr = Arc::new(Mutex::new(Stderr::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("stderr pipe");
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("metrics on http://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
                }
                let mut s = log.lock().unwrap_or_else(|e| e.into_inner());
                s.lines += 1;
                s.emfile += u64::from(line.contains("Too many open files"));
                s.eagain += u64::from(line.contains("Resource temporarily unavailable"));
                if s.last.len() == 40 {
                    s.last.pop_front();
                }
                s.last.push_back(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("metrics address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let tail: Vec<String> = stderr.lock().unwrap().last.iter().cloned().collect();
                panic!("the agent did not start within 30 s; its stderr:\n{}", tail.join("\n"));
            }
        };
        Agent { child, pid, metrics: addr, stderr }
    }

    /// The agent's metric samples by full name (with labels). Empty if the
    /// scrape failed (the agent is gone or out of descriptors).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        scrape(self.metrics).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stderr_tail(&self, n: usize) -> String {
        let s = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let skip = s.last.len().saturating_sub(n);
        s.last.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, then SIGKILL after 10 s. Returns the exit status text.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return st.to_string(),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return "killed after 10 s".to_owned();
                }
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn scrape(addr: SocketAddr) -> Option<BTreeMap<String, f64>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let body = resp.split_once("\r\n\r\n")?.1;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect(),
    )
}

/// Sum of every sample whose name starts with `prefix`.
pub fn sum(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
}

/// Lines delivered, both streams.
pub fn lines(m: &BTreeMap<String, f64>) -> u64 {
    sum(m, "log_capturer_lines_total{") as u64
}

/// Whether the agent accepts `flag value` (features landing on main while
/// this benchmark was written; some are hidden from `--help`, so ask clap:
/// it rejects an unknown flag before it prints help).
pub fn supports(flag: &str, value: &str) -> bool {
    Command::new(binary())
        .args([flag, value, "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
