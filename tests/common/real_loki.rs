//! A real Grafana Loki for tests, started by the test and stopped on every
//! exit path. Loki is AGPL: nothing of it is in this repository. Its
//! binaries and its single-process configuration are found at run time in
//! the directory `LC_LOKI_DIR` names (`loki-2.8.11.xz`, `loki-2.9.9.xz`,
//! `loki-local.yaml`; `.ci/run` sets it). Without it a test skips with one
//! line, or fails under `LC_REQUIRE_LOKI=1`.
//!
//! A binary is decompressed once into `target/real-loki/`; each instance
//! gets free loopback ports and a fresh data directory, and is ready when
//! `GET /ready` answers 200 (about 11 s). [`Loki::restart`] keeps the data
//! directory: the WAL replays what was stored. Read-back is by
//! `query_range`, paged by time ([`Loki::entries`]).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::TempDir;

/// The line a test prints when it skips for want of a real Loki.
pub const SKIP: &str = "SKIPPED: no real Loki (set LC_LOKI_DIR to a directory with loki-*.xz, see README)";

/// How long Loki may take to answer `/ready` (it takes about 11 s alone,
/// more when several start at once on two shared cores).
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Which Loki, configured how (named after the versions, dots as underscores).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum Variant {
    /// 2.8.11 with `loki-local.yaml`: it knows no structured metadata
    /// (protobuf field 3 skipped; a third JSON `values` element is a 400).
    V2_8_11,
    /// 2.9.9 with `loki-local.yaml` (schema v12): structured metadata is
    /// refused, as by default.
    V2_9_9,
    /// 2.9.9 with schema v13 on tsdb and `allow_structured_metadata: true`:
    /// metadata stored and queryable.
    V2_9_9_V13,
}

impl Variant {
    pub fn binary(self) -> &'static str {
        match self {
            Variant::V2_8_11 => "loki-2.8.11",
            Variant::V2_9_9 | Variant::V2_9_9_V13 => "loki-2.9.9",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            Variant::V2_8_11 => "2.8.11",
            Variant::V2_9_9 | Variant::V2_9_9_V13 => "2.9.9",
        }
    }

    /// Whether Loki stores structured metadata (and returns it on query).
    pub fn stores_metadata(self) -> bool {
        self == Variant::V2_9_9_V13
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Variant::V2_8_11 => "loki-2.8.11",
            Variant::V2_9_9 => "loki-2.9.9",
            Variant::V2_9_9_V13 => "loki-2.9.9-v13",
        })
    }
}

fn require() -> bool {
    std::env::var("LC_REQUIRE_LOKI").is_ok_and(|v| v == "1")
}

/// `LC_LOKI_DIR`, when it holds what the tests need. None (after one
/// clear line on stderr) otherwise, unless `LC_REQUIRE_LOKI=1`, which
/// makes it a failure.
pub fn loki_dir(test: &str) -> Option<PathBuf> {
    let why = match std::env::var_os("LC_LOKI_DIR") {
        None => "LC_LOKI_DIR is not set".to_owned(),
        Some(d) => {
            let d = PathBuf::from(d);
            let missing: Vec<&str> = ["loki-2.8.11.xz", "loki-2.9.9.xz", "loki-local.yaml"]
                .into_iter()
                .filter(|f| !d.join(f).is_file())
                .collect();
            if missing.is_empty() {
                return Some(d);
            }
            format!("{} lacks {missing:?}", d.display())
        }
    };
    if require() {
        panic!("LC_REQUIRE_LOKI=1 but {why} ({test})");
    }
    // On a line of its own: libtest has already printed "test ... ".
    let _ = writeln!(std::io::stderr(), "\n{SKIP} for {test}: {why}");
    None
}

/// `target/real-loki/<name>`, decompressed from `<dir>/<name>.xz` once.
/// Several test processes may race here: each writes a file of its own
/// and renames it into place, so none ever runs a half-written binary.
pub fn binary(dir: &Path, name: &str) -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("real-loki");
    let bin = target.join(name);
    let src = dir.join(format!("{name}.xz"));
    let fresh = |b: &Path| {
        let (Ok(b), Ok(s)) = (std::fs::metadata(b), std::fs::metadata(&src)) else { return false };
        b.len() > 0 && b.modified().ok() >= s.modified().ok()
    };
    if fresh(&bin) {
        return bin;
    }
    std::fs::create_dir_all(&target).unwrap();
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = target.join(format!(".{name}.{}.{n}", std::process::id()));
    let out = std::fs::File::create(&tmp).unwrap();
    let st = Command::new("xz")
        .arg("-dc")
        .arg(&src)
        .stdout(out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run xz for {} (install xz-utils): {e}", src.display()));
    assert!(st.success(), "xz -dc {} failed: {st}", src.display());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &bin).unwrap();
    bin
}

/// A loopback TCP port free right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One entry as Loki returns it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stored {
    /// The stream's labels as the query answered them. Loki 2.9 returns an
    /// entry's structured metadata **merged into these labels** (the query
    /// result splits a stream by metadata values: `{container="a",
    /// container_id="…", image="…", stream="stdout"}`); there is no third
    /// element in `values` (3.x adds one behind a header). So metadata is
    /// told apart from stream labels only by name: [`Stored::split`].
    pub labels: BTreeMap<String, String>,
    pub ts_ns: i64,
    pub line: String,
}

impl Stored {
    /// (stream labels, metadata): the labels named in `metadata` moved out.
    pub fn split(&self, metadata: &[&str]) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let (m, l): (BTreeMap<_, _>, BTreeMap<_, _>) =
            self.labels.clone().into_iter().partition(|(k, _)| metadata.contains(&k.as_str()));
        (l, m)
    }
}

/// A running real Loki. Stopped on drop (SIGTERM, then SIGKILL after 5 s),
/// also when the test panics; a child of the test thread that would
/// outlive a killed test gets SIGKILL from the kernel (`PR_SET_PDEATHSIG`).
pub struct Loki {
    pub variant: Variant,
    child: Option<Child>,
    pub http: u16,
    pub grpc: u16,
    bin: PathBuf,
    config: PathBuf,
    flags: Vec<String>,
    scratch: TempDir,
    /// Starts of this instance, for the log file names.
    starts: u32,
}

impl Loki {
    /// Start `variant` with extra command-line `flags` and wait until it is
    /// ready; None when there is no real Loki to run (see [`loki_dir`]).
    pub fn start(test: &str, variant: Variant, flags: &[&str]) -> Option<Loki> {
        let mut l = Loki::spawn(test, variant, flags)?;
        l.wait_ready();
        Some(l)
    }

    /// Start without waiting (several instances start at once, then
    /// [`Loki::wait_ready`] each); from the thread that will use it.
    pub fn spawn(test: &str, variant: Variant, flags: &[&str]) -> Option<Loki> {
        let dir = loki_dir(test)?;
        let scratch = TempDir::new(&format!("{variant}"));
        let shipped = dir.join("loki-local.yaml");
        let config = match variant {
            Variant::V2_8_11 | Variant::V2_9_9 => shipped,
            Variant::V2_9_9_V13 => {
                let p = scratch.0.join("loki-v13.yaml");
                std::fs::write(&p, v13_config(&std::fs::read_to_string(&shipped).unwrap())).unwrap();
                p
            }
        };
        let mut l = Loki {
            variant,
            child: None,
            http: 0,
            grpc: 0,
            bin: binary(&dir, variant.binary()),
            config,
            flags: flags.iter().map(|s| s.to_string()).collect(),
            scratch,
            starts: 0,
        };
        std::fs::create_dir_all(l.data_dir()).unwrap();
        l.http = free_port();
        l.grpc = free_port();
        l.launch();
        Some(l)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.scratch.0.join("data")
    }

    /// The scratch directory (removed on drop): configs, logs, data.
    pub fn scratch(&self) -> &Path {
        &self.scratch.0
    }

    fn log_path(&self) -> PathBuf {
        self.scratch.0.join(format!("loki-{}.log", self.starts))
    }

    fn launch(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("-config.file={}", self.config.display()))
            .args(["-config.expand-env=true", "-target=all"])
            .args(&self.flags)
            .env("LOKI_HTTP_PORT", self.http.to_string())
            .env("LOKI_GRPC_PORT", self.grpc.to_string())
            .env("LOKI_DATA_DIR", self.data_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display())));
    }

    /// Wait until `/ready` answers 200; fails with Loki's log tail if it
    /// exits or is not ready within 60 s.
    pub fn wait_ready(&mut self) {
        let t = Instant::now();
        let mut rebinds = 0;
        loop {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                // A free port can be taken by another process between our
                // probe and Loki's bind: on a first start, take others.
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                if self.starts - rebinds == 1 && rebinds < 3 && log.contains("address already in use") {
                    rebinds += 1;
                    self.child = None;
                    self.http = free_port();
                    self.grpc = free_port();
                    self.launch();
                    continue;
                }
                panic!("{} exited before it was ready ({st}); its log:\n{}", self.variant, self.log_tail(40));
            }
            if matches!(self.get("/ready"), Ok((200, _))) {
                break;
            }
            assert!(
                t.elapsed() < READY_WITHIN,
                "{} not ready within {READY_WITHIN:?}; its log:\n{}",
                self.variant,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = writeln!(
            std::io::stderr(),
            "{} ready on 127.0.0.1:{} after {:.1} s",
            self.variant,
            self.http,
            t.elapsed().as_secs_f64()
        );
    }

    /// SIGTERM, up to 30 s for it to exit (a loaded machine running
    /// several Lokis slows their shutdown), then SIGKILL, said: a restart
    /// is meant to be Loki's own, WAL and all.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = c.try_wait() {
                say(&format!("{} stopped in {:.1} s", self.variant, t.elapsed().as_secs_f64()));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        say(&format!("{} did not stop within 30 s of SIGTERM: SIGKILL", self.variant));
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Stop and start again on the same ports and data directory (the WAL
    /// replays what it held), then wait until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
        self.wait_ready();
    }

    /// [`Loki::restart`] with other extra command-line flags from now on
    /// (a limit lifted, say): same ports, same data directory.
    pub fn restart_with(&mut self, flags: &[&str]) {
        self.flags = flags.iter().map(|s| s.to_string()).collect();
        self.restart();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http)
    }

    /// The push URL, as `--loki` takes it.
    pub fn url(&self) -> String {
        format!("http://{}/loki/api/v1/push", self.addr())
    }

    /// The last `n` lines of Loki's log (this start and the ones before).
    pub fn log_tail(&self, n: usize) -> String {
        let mut all = String::new();
        for i in 1..=self.starts {
            let p = self.scratch.0.join(format!("loki-{i}.log"));
            all.push_str(&format!("--- start {i}\n{}", std::fs::read_to_string(p).unwrap_or_default()));
        }
        // Every query_range logs a few info lines: they would bury what
        // went wrong with the pushes.
        let lines: Vec<&str> = all
            .lines()
            .filter(|l| {
                ![
                    "caller=metrics.go",
                    "caller=engine.go",
                    "caller=spanlogger.go",
                    "caller=roundtrip.go",
                    "caller=composite_store_entry.go",
                ]
                .iter()
                .any(|q| l.contains(q))
            })
            .collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn get(&self, path_and_query: &str) -> Result<(u16, String), String> {
        http(&self.addr(), "GET", path_and_query, &[], b"")
    }

    /// POST a push body as it is, with these headers: (status, body).
    pub fn push(&self, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        http(&self.addr(), "POST", "/loki/api/v1/push", headers, body).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The streams of `selector` as `/loki/api/v1/series` lists them: stream
    /// labels only (structured metadata is not among them).
    pub fn series(&self, selector: &str) -> Vec<BTreeMap<String, String>> {
        let now = now_ns();
        let path = format!(
            "/loki/api/v1/series?match[]={}&start={}&end={}",
            url_encode(selector),
            now - 2 * 3_600_000_000_000,
            now + 600_000_000_000
        );
        let (st, body) = self.get(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(st, 200, "series {selector}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                s.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .collect()
    }

    /// `/loki/api/v1/status/buildinfo`'s `version`.
    pub fn version(&self) -> String {
        let (st, body) = self.get("/loki/api/v1/status/buildinfo").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(st, 200, "buildinfo: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["version"].as_str().unwrap_or_default().to_owned()
    }

    /// Loki's `/metrics` samples by name with labels.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let (st, body) = self.get("/metrics").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(st, 200, "/metrics: {body}");
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    /// `loki_distributor_lines_received_total` over tenants (since this
    /// start: counters begin again at a restart).
    pub fn lines_received(&self) -> f64 {
        self.metrics()
            .iter()
            .filter(|(k, _)| k.starts_with("loki_distributor_lines_received_total"))
            .map(|(_, v)| v)
            .sum()
    }

    /// `loki_discarded_samples_total` by `reason` (since this start).
    pub fn discarded(&self) -> BTreeMap<String, f64> {
        let mut by = BTreeMap::new();
        for (k, v) in self.metrics() {
            let Some(labels) = k.strip_prefix("loki_discarded_samples_total{") else { continue };
            let reason = labels
                .split(',')
                .find_map(|kv| kv.strip_prefix("reason=\""))
                .map(|r| r.trim_end_matches(['"', '}']).to_owned())
                .unwrap_or_default();
            *by.entry(reason).or_insert(0.0) += v;
        }
        by
    }

    /// One `query_range` page: entries of `selector` with `start <= ts <
    /// end`, the first `limit` of them in time order (all streams merged).
    pub fn query_page(&self, selector: &str, start: i64, end: i64, limit: usize) -> Vec<Stored> {
        let path = format!(
            "/loki/api/v1/query_range?query={}&start={start}&end={end}&limit={limit}&direction=forward",
            url_encode(selector)
        );
        let (st, body) = self.get(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(st, 200, "query_range {selector}: {body}\nLoki's log:\n{}", self.log_tail(20));
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("query_range answer not JSON ({e}): {body}"));
        let mut out = Vec::new();
        for r in v["data"]["result"].as_array().into_iter().flatten() {
            let labels: BTreeMap<String, String> = r["stream"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            for e in r["values"].as_array().into_iter().flatten() {
                let ts = e[0].as_str().and_then(|s| s.parse().ok()).expect("a timestamp string");
                let line = e[1].as_str().unwrap_or_default().to_owned();
                out.push(Stored { labels: labels.clone(), ts_ns: ts, line });
            }
        }
        out.sort_by(|a, b| a.ts_ns.cmp(&b.ts_ns).then_with(|| a.cmp(b)));
        out
    }

    /// Every entry of `selector` with `start <= ts < end`, paged by time
    /// (pages of 5000). Entries may share a timestamp across a
    /// page's end: a full page's last timestamp is left out of it and asked
    /// for again as the next page's start (`start` is inclusive), so none is
    /// skipped or counted twice. A page full of one timestamp is a failure
    /// (more than `limit` entries at one nanosecond), not a silent cut.
    pub fn entries_between(&self, selector: &str, start: i64, end: i64) -> Vec<Stored> {
        self.entries_paged(selector, start, end, 5000)
    }

    /// [`Loki::entries_between`] in pages of `limit` (small ones test the
    /// paging itself).
    pub fn entries_paged(&self, selector: &str, start: i64, end: i64, limit: usize) -> Vec<Stored> {
        let mut all = Vec::new();
        let mut from = start;
        loop {
            let mut page = self.query_page(selector, from, end, limit);
            if page.len() < limit {
                all.append(&mut page);
                return all;
            }
            let last = page.last().unwrap().ts_ns;
            assert!(page[0].ts_ns != last, "{selector}: {limit} entries or more at timestamp {last}");
            page.retain(|e| e.ts_ns < last);
            all.append(&mut page);
            from = last;
        }
    }

    /// Every entry of `selector` from two hours ago to ten minutes ahead
    /// (what Loki accepts here).
    pub fn entries(&self, selector: &str) -> Vec<Stored> {
        let now = now_ns();
        self.entries_between(selector, now - 2 * 3_600_000_000_000, now + 600_000_000_000)
    }
}

impl Drop for Loki {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shipped configuration with schema v13 on tsdb and structured
/// metadata allowed: what 2.9 needs to store it.
pub fn v13_config(shipped: &str) -> String {
    assert!(
        shipped.contains("store: tsdb")
            && shipped.contains("schema: v12")
            && shipped.contains("\nlimits_config:\n"),
        "loki-local.yaml is not the one these tests know (tsdb, schema v12, limits_config)"
    );
    shipped
        .replace("schema: v12", "schema: v13")
        .replace("\nlimits_config:\n", "\nlimits_config:\n  allow_structured_metadata: true\n")
}

/// Straight to stderr: libtest captures `eprintln!` of passing tests.
pub fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.0 exchange (so that Loki answers without chunking and
/// closes): (status, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).map_err(|e| format!("write to {addr}: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| format!("read from {addr}: {e}"))?;
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}
