//! `log-capturer check`: diagnose a node before and after installing the
//! agent: can Docker be reached, can each running container's logs be
//! read, do the open files suffice, is the state directory usable.
//!
//! A one-shot command, so its Docker calls block; each has a deadline
//! (`--connect-timeout` to connect, `--api-timeout` for the whole call), as
//! the agent's own start-up check does. It changes nothing on the node: the
//! state directory is neither created nor written, and its lock is only
//! tried and released at once.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::TcpStream;

use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::budget::{self, RESERVE};
use crate::agent::exchange::{Exchange, Response, MAX_API_BODY, MAX_INSPECT_BODY, MAX_LIST_BODY};
use crate::agent::sock::Endpoint;
use crate::agent::startup::connect_unix;
use crate::checkpoint;
use crate::cli::{AgentArgs, DockerHost};
use crate::config_file::ConfigFileArg;
use crate::docker::api::{self, ContainerInspect, ContainerSummary};
use crate::docker::request::{self, negotiate, Api, FALLBACK_API, NEWEST_KNOWN_API};
use crate::http::head::ApiVersion;

/// The agent's own flags (and `--config`), so that `check` looks at what
/// the agent would run with; and the check's own.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub agent: AgentArgs,

    #[command(flatten)]
    pub file: ConfigFileArg,

    /// Print a JSON array of {check, status, detail, fix} instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Exit 1 on a WARN too, not only on a FAIL.
    #[arg(long)]
    pub strict: bool,
}

/// How a check came out. Only `Fail` makes the exit status 1 (`Warn`
/// too with `--strict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    /// The agent will run, but something will not be shipped or may not be.
    Warn,
    /// The agent will not start, or cannot do its job.
    Fail,
    /// Worth knowing; nothing to fix.
    Info,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
            Self::Info => "INFO",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub check: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it; `None` when there is nothing to do.
    pub fix: Option<String>,
}

impl Row {
    fn new(check: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Self { check: check.into(), status, detail: detail.into(), fix: None }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Run every check and print the report.
pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let rows = check_all(args);
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&rows)?;
        s.push('\n');
        s
    } else {
        render_table(&rows)
    };
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(exit_code(&rows, args.strict))
}

fn check_all(args: &CheckArgs) -> Vec<Row> {
    let mut rows = Vec::new();
    let docker = check_docker(args, &mut rows);
    let running = match &docker {
        Some(d) => Some(check_logging_drivers(d, &mut rows)),
        None => {
            rows.push(Row::new("logging drivers", Status::Info, "not checked: Docker cannot be reached"));
            None
        }
    };
    rows.push(check_open_files(running, args.agent.max_streams));
    check_state_dir(&args.agent.state_dir, &mut rows);
    check_sink(&args.agent, &mut rows);
    rows
}

/// 1 if a row failed (or, with `strict`, warned); 0 otherwise.
pub fn exit_code(rows: &[Row], strict: bool) -> ExitCode {
    let bad = |s: Status| s == Status::Fail || (strict && s == Status::Warn);
    if rows.iter().any(|r| bad(r.status)) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The table for people: one row per check, its fix on the line below,
/// and a last line that sums up.
pub fn render_table(rows: &[Row]) -> String {
    let check_w = rows.iter().map(|r| r.check.chars().count()).chain(["CHECK".len()]).max().unwrap_or(0);
    let status_w = "STATUS".len();
    let mut out = format!("{:<status_w$}  {:<check_w$}  DETAIL\n", "STATUS", "CHECK");
    for r in rows {
        let status = r.status.to_string();
        out.push_str(&format!("{status:<status_w$}  {:<check_w$}  {}\n", r.check, r.detail));
        if let Some(fix) = &r.fix {
            out.push_str(&format!("{:<w$}fix: {fix}\n", "", w = status_w + 2 + check_w + 2));
        }
    }
    let count = |s: Status| rows.iter().filter(|r| r.status == s).count();
    let (fails, warns) = (count(Status::Fail), count(Status::Warn));
    out.push('\n');
    out.push_str(&match (fails, warns) {
        (0, 0) => "No problems found.\n".to_owned(),
        (0, w) => format!("{w} warning(s), no failure: the agent will run; see the fixes above.\n"),
        (f, w) => format!("{f} failure(s), {w} warning(s): see the fixes above.\n"),
    });
    out
}

// ---- Docker --------------------------------------------------------------

/// Blocking calls to dockerd, one connection each, each within deadlines.
struct Docker {
    host: DockerHost,
    endpoint: Endpoint,
    connect_timeout: Duration,
    api_timeout: Duration,
    /// What the daemon's `/_ping` said.
    daemon_api: Option<ApiVersion>,
    api: Api,
}

/// Why a call failed.
#[derive(Debug)]
enum CallError {
    Connect(io::Error),
    ConnectTimedOut,
    /// `--api-timeout` passed before the whole answer.
    TimedOut,
    Io(io::Error),
    Protocol(String),
    Status(u16, String),
}

impl CallError {
    fn from_io(e: io::Error) -> Self {
        match e.kind() {
            // What a blocking socket's SO_RCVTIMEO/SO_SNDTIMEO reports.
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Self::TimedOut,
            _ => Self::Io(e),
        }
    }
}

/// A connection to dockerd, blocking, with per-operation timeouts.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn open(ep: &Endpoint, timeout: Duration) -> Result<Conn, CallError> {
        let timed_out = |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CallError::ConnectTimedOut,
            _ => CallError::Connect(e),
        };
        match ep {
            Endpoint::Unix(p) => connect_unix(p, timeout).map(Conn::Unix).map_err(timed_out),
            Endpoint::Tcp(a) => TcpStream::connect_timeout(a, timeout).map(Conn::Tcp).map_err(timed_out),
        }
    }

    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(Some(t)).and_then(|()| s.set_write_timeout(Some(t))),
            Conn::Tcp(s) => s.set_read_timeout(Some(t)).and_then(|()| s.set_write_timeout(Some(t))),
        }
    }

    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(b),
            Conn::Tcp(s) => s.write(b),
        }
    }

    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(b),
            Conn::Tcp(s) => s.read(b),
        }
    }
}

impl Docker {
    /// `GET target`: the whole answer within `--api-timeout` (one deadline
    /// for the call, not one per read), its body at most `cap` bytes.
    fn get(&self, target: &str, cap: usize) -> Result<Response, CallError> {
        get(&self.endpoint, target, cap, self.connect_timeout, self.api_timeout)
    }

    /// What went wrong with a call, and what to do.
    fn describe(&self, e: &CallError) -> (String, String) {
        let host = &self.host;
        match e {
            CallError::Connect(e) => {
                let fix = match e.kind() {
                    io::ErrorKind::NotFound => "is dockerd running? set --docker-host or DOCKER_HOST",
                    io::ErrorKind::PermissionDenied => "run as root or add the user to the docker group",
                    io::ErrorKind::ConnectionRefused => "is dockerd running and listening there?",
                    _ => "check --docker-host",
                };
                (format!("cannot connect to {host}: {e}"), fix.to_owned())
            }
            CallError::ConnectTimedOut => (
                format!("cannot connect to {host} within --connect-timeout {:?}", self.connect_timeout),
                "is dockerd overloaded or hung? (or raise --connect-timeout)".to_owned(),
            ),
            CallError::TimedOut => (
                format!("no complete answer from {host} within --api-timeout {:?}", self.api_timeout),
                "is dockerd overloaded or hung? (or raise --api-timeout)".to_owned(),
            ),
            CallError::Io(e) => (format!("{host}: {e}"), "check --docker-host".to_owned()),
            CallError::Protocol(m) => {
                (format!("{host} does not answer like Docker: {m}"), "check --docker-host".to_owned())
            }
            CallError::Status(s, m) => (format!("Docker answered {s}: {m}"), "see dockerd's log".to_owned()),
        }
    }
}

fn get(
    ep: &Endpoint,
    target: &str,
    cap: usize,
    connect: Duration,
    call: Duration,
) -> Result<Response, CallError> {
    let req = request::get(target).map_err(|e| CallError::Protocol(e.to_string()))?;
    let mut conn = Conn::open(ep, connect)?;
    let deadline = Instant::now() + call;
    let left = || match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(CallError::TimedOut),
    };
    let mut sent = 0;
    while sent < req.len() {
        conn.set_timeouts(left()?).map_err(CallError::Io)?;
        match conn.write(&req[sent..]) {
            Ok(0) => return Err(CallError::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CallError::from_io(e)),
        }
    }
    let mut ex = Exchange::with_cap(cap);
    let mut buf = [0u8; 8192];
    let resp = loop {
        conn.set_timeouts(left()?).map_err(CallError::Io)?;
        let n = match conn.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CallError::from_io(e)),
        };
        if n == 0 {
            break ex.finish().map_err(|e| CallError::Protocol(e.to_string()))?;
        }
        if let Some(r) = ex.push(&buf[..n]).map_err(|e| CallError::Protocol(e.to_string()))? {
            break r;
        }
    };
    if !resp.head.is_success() {
        return Err(CallError::Status(resp.head.status, api::error_message(&resp.body)));
    }
    Ok(resp)
}

/// Rows `docker` and `docker api`; the client if Docker answered.
fn check_docker(args: &CheckArgs, rows: &mut Vec<Row>) -> Option<Docker> {
    let host = &args.agent.docker_host;
    let endpoint = match host {
        DockerHost::Unix(p) => {
            if let Some(row) = check_socket_file(host, p) {
                rows.push(row);
                return None;
            }
            Endpoint::Unix(p.clone())
        }
        DockerHost::Tcp(a) => {
            match crate::dns::blocking::socket_addr(a, Instant::now() + args.agent.api_timeout) {
                Ok(addr) => Endpoint::Tcp(addr),
                Err(e) => {
                    rows.push(
                        Row::new("docker", Status::Fail, format!("cannot resolve {host}: {e}"))
                            .fix("check --docker-host"),
                    );
                    return None;
                }
            }
        }
    };
    let mut d = Docker {
        host: host.clone(),
        endpoint,
        connect_timeout: args.agent.connect_timeout,
        api_timeout: args.agent.api_timeout,
        daemon_api: None,
        api: Api { version: FALLBACK_API },
    };
    match d.get(Api::ping(), MAX_API_BODY) {
        Ok(resp) => {
            d.daemon_api = resp.head.api_version;
            d.api = Api { version: negotiate(d.daemon_api) };
            rows.push(Row::new("docker", Status::Ok, format!("{host} answers the ping")));
            rows.push(api_row(d.daemon_api));
            Some(d)
        }
        Err(e) => {
            let (detail, fix) = d.describe(&e);
            rows.push(Row::new("docker", Status::Fail, detail).fix(fix));
            None
        }
    }
}

/// A unix socket path that cannot work, said before connecting (a connect
/// says only "No such file or directory").
fn check_socket_file(host: &DockerHost, path: &Path) -> Option<Row> {
    let row = |detail: String, fix: &str| Some(Row::new("docker", Status::Fail, detail).fix(fix));
    match fs::metadata(path) {
        Ok(m) if m.file_type().is_socket() => None,
        Ok(_) => {
            row(format!("{host}: {} is not a socket", path.display()), "check --docker-host or DOCKER_HOST")
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => row(
            format!("{host}: no such socket"),
            "is dockerd running? set --docker-host or DOCKER_HOST to where it listens",
        ),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            row(format!("{host}: {e}"), "run as root or add the user to the docker group")
        }
        Err(e) => row(format!("{host}: {e}"), "check --docker-host"),
    }
}

/// The oldest API the agent is tested against: dockerd 20.10.
const OLDEST_TESTED_API: ApiVersion = FALLBACK_API;

fn api_row(daemon: Option<ApiVersion>) -> Row {
    let speak = negotiate(daemon);
    match daemon {
        None => Row::new(
            "docker api",
            Status::Warn,
            format!("the ping has no Api-Version header; the agent will speak {speak}, which may be refused"),
        )
        .fix("check that --docker-host is dockerd, not a proxy that drops headers"),
        Some(d) if d < OLDEST_TESTED_API => Row::new(
            "docker api",
            Status::Warn,
            format!("daemon API {d}, older than {OLDEST_TESTED_API} (Docker 20.10), the oldest the agent is tested with"),
        )
        .fix("upgrade Docker to 20.10 or later"),
        Some(d) if d > NEWEST_KNOWN_API => Row::new(
            "docker api",
            Status::Ok,
            format!("daemon API {d}; the agent will speak {speak}, the newest it knows"),
        ),
        Some(d) => Row::new("docker api", Status::Ok, format!("daemon API {d}; the agent will speak {speak}")),
    }
}

// ---- Logging drivers -------------------------------------------------------

/// Whether `docker logs` (and so the agent) can read a container's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readable {
    /// The driver keeps the logs where dockerd reads them.
    Yes,
    /// A remote driver whose lines dockerd also keeps in its dual-logging
    /// cache (Docker 20.10 and later, unless `cache-disabled`): readable,
    /// but only as far back as the cache holds.
    ThroughCache,
    /// Not readable, and why.
    No(String),
}

/// Drivers whose logs dockerd itself reads back.
const READ_BACK: &[&str] = &["json-file", "local", "journald"];

/// What `driver` with log-opts `opts` means for the agent, on a daemon
/// speaking `daemon_api`. Assumes, as Docker documents, that dual logging
/// is on for every other driver from Docker 20.10 (API 1.41) unless the
/// container's log-opts say `cache-disabled=true`. Also assumed, not
/// checked against a real dockerd: a daemon-wide `cache-disabled` in
/// daemon.json shows in the log-opts of the containers it applies to; if
/// it does not, such a container is wrongly reported as followable.
pub fn readable(driver: &str, opts: &BTreeMap<String, String>, daemon_api: Option<ApiVersion>) -> Readable {
    if READ_BACK.contains(&driver) {
        return Readable::Yes;
    }
    match driver {
        "none" => return Readable::No("driver none: Docker keeps no logs for it".to_owned()),
        "" => return Readable::No("Docker reports no logging driver".to_owned()),
        _ => {}
    }
    if opts.get("cache-disabled").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Readable::No(format!(
            "driver {driver} with cache-disabled=true: Docker keeps no copy to read"
        ));
    }
    if daemon_api.is_some_and(|d| d >= FALLBACK_API) {
        Readable::ThroughCache
    } else {
        Readable::No(format!("driver {driver} on Docker older than 20.10: no dual-logging cache to read"))
    }
}

/// One summary row, a row per container that cannot be followed or only
/// through the cache; returns how many containers run (for the fd check).
fn check_logging_drivers(d: &Docker, rows: &mut Vec<Row>) -> usize {
    const CHECK: &str = "logging drivers";
    let list = match d.get(&d.api.list(), MAX_LIST_BODY) {
        Ok(r) => r,
        Err(e) => {
            let (detail, fix) = d.describe(&e);
            rows.push(Row::new(CHECK, Status::Fail, format!("cannot list containers: {detail}")).fix(fix));
            return 0;
        }
    };
    let list: Vec<ContainerSummary> = match serde_json::from_slice(&list.body) {
        Ok(l) => l,
        Err(e) => {
            rows.push(Row::new(
                CHECK,
                Status::Fail,
                format!("the container list is not what Docker sends: {e}"),
            ));
            return 0;
        }
    };
    let running: Vec<&ContainerSummary> = list.iter().filter(|c| c.state == "running").collect();
    let mut by_driver: BTreeMap<String, usize> = BTreeMap::new();
    let mut detail_rows = Vec::new();
    let mut unreadable = 0;
    for c in &running {
        if !api::is_container_id(&c.id) {
            continue;
        }
        let who = format!(
            "{} ({})",
            api::shown(c.names.first().map_or("", |n| n.trim_start_matches('/')), 64),
            &c.id[..12]
        );
        let inspect = match d.get(&d.api.inspect(&c.id), MAX_INSPECT_BODY) {
            Ok(r) => r,
            // Removed since the list.
            Err(CallError::Status(404, _)) => continue,
            Err(e) => {
                let stop = matches!(e, CallError::TimedOut | CallError::ConnectTimedOut);
                let (detail, fix) = d.describe(&e);
                detail_rows
                    .push(Row::new(CHECK, Status::Warn, format!("{who}: cannot inspect: {detail}")).fix(fix));
                // A daemon that hangs on one would hang on each.
                if stop {
                    break;
                }
                continue;
            }
        };
        let info: ContainerInspect = match serde_json::from_slice(&inspect.body) {
            Ok(i) => i,
            Err(e) => {
                detail_rows.push(Row::new(
                    CHECK,
                    Status::Warn,
                    format!("{who}: inspect not understood: {e}"),
                ));
                continue;
            }
        };
        let lc = &info.host_config.log_config;
        *by_driver.entry(api::shown(&lc.kind, 32)).or_default() += 1;
        match readable(&lc.kind, &lc.config, d.daemon_api) {
            Readable::Yes => {}
            Readable::ThroughCache => detail_rows.push(Row::new(
                CHECK,
                Status::Info,
                format!(
                    "{who}: driver {}: followable through Docker's dual-logging cache (assumed on: Docker >= 20.10 \
                     and no cache-disabled in its log-opts); lines older than the cache holds are not readable",
                    api::shown(&lc.kind, 32)
                ),
            )),
            Readable::No(why) => {
                unreadable += 1;
                detail_rows.push(Row::new(CHECK, Status::Warn, format!("{who}: cannot be followed: {why}")).fix(
                    "recreate it with --log-driver json-file or local (or without cache-disabled=true); \
                     the default is \"log-driver\" in /etc/docker/daemon.json",
                ));
            }
        }
    }
    let drivers: Vec<String> = by_driver.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let summary = if running.is_empty() {
        Row::new(CHECK, Status::Ok, "no running containers")
    } else if unreadable == 0 {
        Row::new(CHECK, Status::Ok, format!("{} running: {}", running.len(), drivers.join(", ")))
    } else {
        Row::new(
            CHECK,
            Status::Warn,
            format!("{unreadable} of {} running cannot be followed ({})", running.len(), drivers.join(", ")),
        )
    };
    rows.push(summary);
    rows.extend(detail_rows);
    running.len()
}

// ---- Open files ------------------------------------------------------------

fn check_open_files(running: Option<usize>, max_streams: Option<u32>) -> Row {
    let (soft, hard) = match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        #[allow(clippy::unnecessary_cast)] // rlim_t is 32 bits on armv7
        Ok((s, h)) => (s as u64, h as u64),
        Err(e) => {
            return Row::new("open files", Status::Fail, format!("cannot read the open-files limit: {e}"))
        }
    };
    let in_use = budget::open_fds().unwrap_or(3);
    open_files_row(soft, hard, in_use, max_streams.map(|m| m as usize), running)
}

/// The budget the agent would have (it raises the soft limit to the hard
/// one at start) against the containers running now.
pub fn open_files_row(
    soft: u64,
    hard: u64,
    in_use: u64,
    max_streams: Option<usize>,
    running: Option<usize>,
) -> Row {
    const CHECK: &str = "open files";
    let limits = format!("limit soft {soft}, hard {hard} (the agent raises soft to hard)");
    let need = |n: usize| n as u64 + in_use + RESERVE;
    let Some(b) = budget::stream_budget(hard, in_use, max_streams) else {
        return Row::new(
            CHECK,
            Status::Fail,
            format!("{limits}: no room for a single stream (reserve {RESERVE})"),
        )
        .fix(format!(
            "raise the hard limit (ulimit -n, LimitNOFILE=) to at least {}",
            need(running.unwrap_or(1).max(1))
        ));
    };
    let budget = if b.by_flag {
        format!("{} streams (--max-streams; the fds allow {})", b.streams, b.fd_room)
    } else {
        format!("{} streams", b.streams)
    };
    match running {
        None => Row::new(CHECK, Status::Ok, format!("{limits}: budget {budget}")),
        Some(n) if n <= b.streams => {
            Row::new(CHECK, Status::Ok, format!("{limits}: budget {budget} for {n} running containers"))
        }
        Some(n) => {
            let fix = if b.by_flag {
                format!("raise --max-streams to {n} or more")
            } else {
                format!("raise the hard limit (ulimit -n, LimitNOFILE= in the unit) to at least {}", need(n))
            };
            Row::new(
                CHECK,
                Status::Warn,
                format!(
                    "{limits}: budget {budget} for {n} running containers; {} would wait unfollowed",
                    n - b.streams
                ),
            )
            .fix(fix)
        }
    }
}

// ---- State directory -------------------------------------------------------

/// Rows `state directory` and, if it exists, `state lock`. Creates nothing,
/// writes nothing; a lock it takes is released before it returns.
fn check_state_dir(dir: &Path, rows: &mut Vec<Row>) {
    const CHECK: &str = "state directory";
    let d = dir.display();
    let other = "or pass another --state-dir";
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            rows.push(
                Row::new(CHECK, Status::Fail, format!("{d} is a file, not a directory"))
                    .fix(format!("move the file away {other}")),
            );
        }
        Ok(_) => {
            rows.push(match writable(dir) {
                Ok(()) => {
                    let has = dir.join(checkpoint::FILE_NAME).exists();
                    let what = if has {
                        "holds checkpoints: the agent resumes from them"
                    } else {
                        "no checkpoints yet"
                    };
                    Row::new(CHECK, Status::Ok, format!("{d} is writable; {what}"))
                }
                Err(e) => not_writable(dir, e),
            });
            rows.push(check_lock(dir));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let Some(parent) = dir.ancestors().skip(1).find(|p| p.exists()) else {
                rows.push(Row::new(CHECK, Status::Fail, format!("{d}: no part of it exists")).fix(other));
                return;
            };
            let p = parent.display();
            rows.push(if !parent.is_dir() {
                Row::new(CHECK, Status::Fail, format!("{d}: {p} is a file, not a directory"))
                    .fix("pass another --state-dir")
            } else {
                match writable(parent) {
                    Ok(()) => Row::new(CHECK, Status::Ok, format!("{d} does not exist yet; the agent will create it (mode 0700)")),
                    Err(e) => Row::new(CHECK, Status::Fail, format!("{d} does not exist and this user cannot create it in {p} ({e})"))
                        .fix(format!("create it for the agent's user (install -d -m 700 -o USER {d}), run as root, {other}")),
                }
            });
        }
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => rows.push(
            Row::new(CHECK, Status::Fail, format!("{d}: part of its path is a file ({e})"))
                .fix("pass another --state-dir"),
        ),
        Err(e) => rows.push(
            Row::new(CHECK, Status::Fail, format!("{d}: {e}")).fix(format!("fix its permissions {other}")),
        ),
    }
}

fn writable(dir: &Path) -> nix::Result<()> {
    use nix::unistd::{access, AccessFlags};
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
}

fn not_writable(dir: &Path, e: nix::errno::Errno) -> Row {
    let d = dir.display();
    let row = Row::new("state directory", Status::Fail, format!("{d} is not writable by this user ({e})"));
    if e == nix::errno::Errno::EROFS {
        row.fix("put --state-dir on writable, persistent storage")
    } else {
        row.fix("let the agent's user write there (or run it as root), or pass another --state-dir")
    }
}

/// Try the lock the agent takes (the directory, and `<dir>/lock` of earlier
/// versions if it exists), and release it at once.
fn check_lock(dir: &Path) -> Row {
    const CHECK: &str = "state lock";
    let d = dir.display();
    let handle = match OpenOptions::new().read(true).custom_flags(nix::libc::O_DIRECTORY).open(dir) {
        Ok(h) => h,
        Err(e) => {
            return Row::new(CHECK, Status::Fail, format!("cannot open {d}: {e}"))
                .fix("fix its permissions or pass another --state-dir")
        }
    };
    let lock_file = dir.join("lock");
    let mut files = vec![handle];
    // Opened read-only and never created: the check leaves no file behind.
    if let Ok(f) = File::open(&lock_file) {
        files.push(f);
    }
    let mut held = Vec::new();
    for f in files {
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => held.push(l),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Row::new(
                    CHECK,
                    Status::Info,
                    format!("{d} is in use by a running agent (fine after install)"),
                )
                .fix("before install, another agent holds it: give each agent its own --state-dir");
            }
            Err((_, e)) => {
                return Row::new(CHECK, Status::Fail, format!("cannot lock {d} ({e})"))
                    .fix("put --state-dir on a local filesystem");
            }
        }
    }
    drop(held);
    Row::new(CHECK, Status::Ok, format!("{d} is not in use by another agent"))
}

// ---- Sink ------------------------------------------------------------------

/// The sink, if one is configured: its settings, then an empty push
/// (reachable, TLS, credentials, tenant), which stores no log line; then
/// Loki's version and whether it takes structured metadata (a probe that
/// stores nothing either, see [`crate::sink::probe::metadata_probe`]).
fn check_sink(agent: &crate::cli::AgentArgs, rows: &mut Vec<Row>) {
    use crate::sink::loki::config::MetadataMode;
    use crate::sink::outcome::{self, BadRequest, Outcome};
    let cfg = match crate::sink::loki::config::LokiConfig::from_args(&agent.loki, "check", |k| {
        std::env::var(k).ok()
    }) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            return rows.push(Row::new(
                "sink",
                Status::Info,
                "no sink configured: the agent writes JSON lines to --output",
            ))
        }
        Err(e) => {
            return rows.push(
                Row::new("sink", Status::Fail, format!("{e:#}"))
                    .fix("correct the --loki-* / --sink-* settings"),
            )
        }
    };
    let timeout = agent.loki.sink_timeout.min(Duration::from_secs(10));
    let p = match crate::sink::probe::probe(&cfg, timeout) {
        Ok(p) => p,
        Err(e) => {
            let fix = match e {
                crate::sink::probe::ProbeError::Resolve(_) => {
                    "check the host name in --loki and /etc/resolv.conf"
                }
                crate::sink::probe::ProbeError::Tls(_) => {
                    "check --sink-ca-file, --sink-client-cert/--sink-client-key and --sink-server-name"
                }
                _ => "check that Loki runs and listens at the --loki address, and the firewall",
            };
            return rows.push(Row::new("sink", Status::Fail, format!("Loki at {}: {e}", cfg.url)).fix(fix));
        }
    };
    let a = &p.answer;
    let seen =
        format!("Loki at {} ({}) answered {} to an empty push in {:.0?}", cfg.url, p.addr, a.status, p.took);
    let row = match outcome::of_status(a.status, &a.message, None) {
        Outcome::Acked => Row::new("sink", Status::Ok, seen),
        Outcome::BadRequest(_) => Row::new("sink", Status::Warn, format!("{seen}: {}", a.message))
            .fix("the receiver refused an empty push; check that it is Loki's push API"),
        Outcome::Retry { .. } => Row::new("sink", Status::Warn, format!("{seen}: {}", a.message))
            .fix("the receiver is overloaded or failing; the agent retries, but check it"),
        Outcome::Refused { what, .. } => Row::new("sink", Status::Fail, seen).fix(what),
    };
    let reachable = row.status == Status::Ok;
    rows.push(row);
    if !reachable {
        return;
    }
    let version = crate::sink::probe::version(&cfg, timeout).ok().flatten();
    rows.push(match &version {
        Some(v) => {
            Row::new("sink: Loki version", Status::Info, format!("Loki {v} (/loki/api/v1/status/buildinfo)"))
        }
        None => Row::new("sink: Loki version", Status::Info, "not given (no /loki/api/v1/status/buildinfo)"),
    });
    rows.push(check_loki_limits(&cfg, timeout));
    if cfg.metadata == MetadataMode::Never {
        return rows.push(Row::new(
            "sink: structured metadata",
            Status::Info,
            "not sent (--loki-structured-metadata never): container ids and images are not shipped",
        ));
    }
    // Loki 2.8 ignores metadata in protobuf pushes and cannot read it in JSON.
    let before_2_9 = version.as_deref().is_some_and(|v| {
        let mut n = v.trim_start_matches('v').split('.').map(|x| x.parse::<u32>().unwrap_or(0));
        (n.next().unwrap_or(0), n.next().unwrap_or(0)) < (2, 9)
    });
    let auto = cfg.metadata == MetadataMode::Auto;
    let refused = |why: String| {
        let status = if auto { Status::Warn } else { Status::Fail };
        let then = if auto {
            "the agent sends without it (auto): lines are shipped, container ids and images are not"
        } else {
            "with --loki-structured-metadata always, every push waits until it is allowed"
        };
        Row::new("sink: structured metadata", status, format!("{why}; {then}"))
    };
    const CHECK_SM: &str = "sink: structured metadata";
    if before_2_9 {
        return rows.push(match cfg.encoding {
            crate::sink::loki::encoding::Encoding::Json => {
                refused("Loki before 2.9 cannot decode it in JSON pushes".to_owned())
                    .fix("--loki-encoding protobuf (Loki 2.8 ignores it there), or Loki 2.9 or later")
            }
            crate::sink::loki::encoding::Encoding::Protobuf => Row::new(
                CHECK_SM,
                Status::Warn,
                "Loki before 2.9 ignores it: lines are stored, container ids and images are not",
            )
            .fix("Loki 2.9 or later with schema v13 stores it"),
        });
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    rows.push(match crate::sink::probe::metadata_probe(&cfg, host.trim(), timeout) {
        Err(e) => Row::new(CHECK_SM, Status::Info, format!("not checked: {e}")),
        Ok(p) => match outcome::of_status(p.answer.status, &p.answer.message, None) {
            Outcome::BadRequest(BadRequest::Metadata) => refused(format!("refused: {}", p.answer.message))
                .fix("allow it in Loki (limits_config: allow_structured_metadata: true, schema v13 on tsdb)"),
            Outcome::Acked => Row::new(
                CHECK_SM,
                Status::Ok,
                format!(
                    "accepted: container ids and images are stored (the probe stored one line in \
                         {{probe=\"{}\"}})",
                    crate::sink::probe::PROBE_LABEL
                ),
            ),
            _ => Row::new(
                CHECK_SM,
                Status::Info,
                format!("not known: the probe was answered {}: {}", p.answer.status, p.answer.message),
            ),
        },
    });
}

/// The limits Loki applies to what the agent sends (from its `/config`):
/// label names per stream, line size, how old an entry may be.
fn check_loki_limits(cfg: &crate::sink::loki::config::LokiConfig, timeout: Duration) -> Row {
    use crate::sink::probe::limit;
    const CHECK: &str = "sink: Loki limits";
    let config = match crate::sink::probe::loki_config(cfg, timeout) {
        Ok(Some(c)) => c,
        Ok(None) | Err(_) => {
            return Row::new(CHECK, Status::Info, "not checked: Loki does not serve /config here (a proxy?)")
        }
    };
    let mut seen = Vec::new();
    let mut wrong = Vec::new();
    let names = cfg.labels.max_names();
    if let Some(n) = limit(&config, "max_label_names_per_series").and_then(|v| v.parse::<usize>().ok()) {
        seen.push(format!("max_label_names_per_series {n} (the agent's streams have at most {names})"));
        if names > n {
            wrong.push(format!(
                "streams can have {names} labels, Loki takes {n}: every push would be refused; drop \
                 --loki-label/--loki-container-label or raise max_label_names_per_series"
            ));
        }
    }
    if let Some(v) = limit(&config, "max_label_value_length").and_then(|v| v.parse::<usize>().ok()) {
        seen.push(format!("max_label_value_length {v}"));
        if v < crate::sink::loki::labels::MAX_VALUE_LEN {
            wrong.push(format!(
                "label values are cut at {} bytes, Loki takes {v}: a longer container name or label value \
                 would hold its pushes",
                crate::sink::loki::labels::MAX_VALUE_LEN
            ));
        }
    }
    let max_line = cfg.limits.max_line;
    if let Some(v) = limit(&config, "max_line_size") {
        seen.push(format!("max_line_size {v} (--loki-max-line-bytes {max_line})"));
        // Loki reads KB as 1024 bytes, MB as 1024 KB.
        let loki =
            crate::cli::parse_size(&v.replace("KB", "KiB").replace("MB", "MiB").replace("GB", "GiB")).ok();
        if loki.is_some_and(|l| l > 0 && max_line > l) {
            wrong.push(format!(
                "lines are cut at {max_line} bytes but Loki refuses lines over {v}: set --loki-max-line-bytes to \
                 at most it (refused lines are lost)"
            ));
        }
    }
    if let (Some(r), Some(age)) =
        (limit(&config, "reject_old_samples"), limit(&config, "reject_old_samples_max_age"))
    {
        seen.push(if r == "true" {
            format!("entries older than {age} refused (a backlog older than that is lost)")
        } else {
            "entries of any age taken".to_owned()
        });
    }
    if seen.is_empty() {
        return Row::new(CHECK, Status::Info, "not checked: no limits_config in Loki's /config");
    }
    match wrong.is_empty() {
        true => Row::new(CHECK, Status::Ok, seen.join("; ")),
        false => Row::new(CHECK, Status::Warn, seen.join("; ")).fix(wrong.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(check: &str, status: Status, detail: &str, fix: Option<&str>) -> Row {
        Row { check: check.into(), status, detail: detail.into(), fix: fix.map(Into::into) }
    }

    #[test]
    fn table_aligns_columns_and_puts_the_fix_under_the_detail() {
        let rows = [
            row("docker", Status::Ok, "answers", None),
            row("logging drivers", Status::Warn, "web cannot be followed", Some("use json-file")),
        ];
        let t = render_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "STATUS  CHECK            DETAIL");
        assert_eq!(lines[1], "OK      docker           answers");
        assert_eq!(lines[2], "WARN    logging drivers  web cannot be followed");
        assert_eq!(lines[3], "                         fix: use json-file");
        assert_eq!(lines[4], "");
        assert!(lines[5].starts_with("1 warning(s), no failure"), "{t}");
        assert_eq!(lines[1].find("answers"), lines[3].find("fix:"));
    }

    #[test]
    fn table_sums_up() {
        assert!(render_table(&[row("a", Status::Ok, "x", None), row("b", Status::Info, "y", None)])
            .ends_with("\nNo problems found.\n"));
        let t = render_table(&[row("a", Status::Fail, "x", Some("f")), row("b", Status::Warn, "y", None)]);
        assert!(t.ends_with("\n1 failure(s), 1 warning(s): see the fixes above.\n"), "{t}");
    }

    #[test]
    fn table_widens_for_a_long_check_name() {
        let t = render_table(&[row("a check with a long name", Status::Info, "d", None)]);
        assert_eq!(t.lines().next().unwrap(), "STATUS  CHECK                     DETAIL");
        assert_eq!(t.lines().nth(1).unwrap(), "INFO    a check with a long name  d");
    }

    #[test]
    fn only_fail_fails_unless_strict() {
        let warn = [row("a", Status::Warn, "", None), row("b", Status::Info, "", None)];
        assert_eq!(exit_code(&warn, false), ExitCode::SUCCESS);
        assert_eq!(exit_code(&warn, true), ExitCode::from(1));
        assert_eq!(exit_code(&[row("a", Status::Fail, "", None)], false), ExitCode::from(1));
    }

    #[test]
    fn json_has_the_fields() {
        let v = serde_json::to_value([
            row("docker", Status::Fail, "d", Some("f")),
            row("x", Status::Ok, "d", None),
        ])
        .unwrap();
        assert_eq!(v[0], serde_json::json!({"check": "docker", "status": "FAIL", "detail": "d", "fix": "f"}));
        assert_eq!(v[1]["fix"], serde_json::Value::Null);
    }

    #[test]
    fn drivers() {
        let none = BTreeMap::new();
        let v141 = Some(ApiVersion::new(1, 41));
        for d in ["json-file", "local", "journald"] {
            assert_eq!(readable(d, &none, v141), Readable::Yes, "{d}");
        }
        assert!(matches!(readable("none", &none, v141), Readable::No(_)));
        assert!(matches!(readable("", &none, v141), Readable::No(_)));
        assert_eq!(readable("gelf", &none, v141), Readable::ThroughCache);
        assert_eq!(readable("syslog", &none, Some(ApiVersion::new(1, 47))), Readable::ThroughCache);
        let off = BTreeMap::from([("cache-disabled".to_owned(), "true".to_owned())]);
        assert!(matches!(readable("fluentd", &off, v141), Readable::No(m) if m.contains("cache-disabled")));
        let on = BTreeMap::from([("cache-disabled".to_owned(), "false".to_owned())]);
        assert_eq!(readable("awslogs", &on, v141), Readable::ThroughCache);
        assert!(
            matches!(readable("splunk", &none, Some(ApiVersion::new(1, 40))), Readable::No(m) if m.contains("20.10"))
        );
        assert!(matches!(readable("splunk", &none, None), Readable::No(_)));
    }

    #[test]
    fn open_files_against_containers() {
        let r = open_files_row(1024, 4096, 4, None, Some(10));
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert!(r.detail.contains(&format!("budget {} streams", 4096 - 4 - RESERVE)), "{r:?}");
        let r = open_files_row(64, 64, 4, None, Some(100));
        assert_eq!(r.status, Status::Warn, "{r:?}");
        assert!(r.detail.contains(&format!("{} would wait", 100 - (64 - 4 - RESERVE))), "{r:?}");
        assert!(r.fix.unwrap().contains(&format!("at least {}", 100 + 4 + RESERVE)));
        let r = open_files_row(64, 64, 4, Some(5), Some(10));
        assert_eq!(r.status, Status::Warn);
        assert!(r.fix.unwrap().contains("--max-streams"));
        let r = open_files_row(16, 16, 4, None, Some(1));
        assert_eq!(r.status, Status::Fail, "{r:?}");
        assert_eq!(open_files_row(1024, 1024, 4, None, None).status, Status::Ok);
    }

    #[test]
    fn api_versions() {
        assert_eq!(api_row(Some(ApiVersion::new(1, 47))).status, Status::Ok);
        assert!(api_row(Some(ApiVersion::new(1, 99))).detail.contains(&NEWEST_KNOWN_API.to_string()));
        assert_eq!(api_row(None).status, Status::Warn);
        assert_eq!(api_row(Some(ApiVersion::new(1, 40))).status, Status::Warn);
    }
}
