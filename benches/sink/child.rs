//! The agent as a child process with whatever sink flags a run needs. The
//! ceiling's `agent::Launch` always passes `--output`, which `--loki`
//! refuses, so this starts the same binary (`agent::binary`) itself. Its
//! stderr goes to a file: read for the metrics address, and for its last
//! lines when something went wrong.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::agent;

pub struct Child {
    child: std::process::Child,
    pub pid: u32,
    metrics: SocketAddr,
    stderr: PathBuf,
}

impl Child {
    /// Start the agent against the Docker API double's `socket`, its state
    /// and stderr in `dir`, with `sink` (`--output …` or `--loki …`).
    pub fn start(socket: &Path, dir: &Path, sink: &[String]) -> Child {
        let bin = agent::binary();
        let stderr = dir.join("agent.stderr");
        let file = std::fs::File::create(&stderr).expect("create the agent's stderr file");
        let child = Command::new(&bin)
            .arg("--docker-host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(sink)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let pid = child.id();
        let mut c = Child { child, pid, metrics: SocketAddr::from(([127, 0, 0, 1], 0)), stderr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&c.stderr).unwrap_or_default();
            let addr = text.split("metrics on http://").nth(1).and_then(|r| r.split('/').next());
            if let Some(addr) = addr.and_then(|a| a.parse().ok()) {
                c.metrics = addr;
                return c;
            }
            let gone = !matches!(c.child.try_wait(), Ok(None));
            assert!(
                !gone && Instant::now() < deadline,
                "the agent did not start (exited: {gone}); {} {}; its stderr:\n{}",
                bin.display(),
                sink.join(" "),
                c.tail(20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Metric samples by full name; empty if the scrape failed.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        agent::scrape(self.metrics).unwrap_or_default()
    }

    /// The last `n` lines of its stderr.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, SIGKILL if still there after 10 s; the exit status as text.
    pub fn stop(mut self) -> String {
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.to_string();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        "killed after 10 s".to_owned()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
