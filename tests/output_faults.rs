//! What the agent does when its output misbehaves: a reader that pauses
//! (with stderr on the same pipe), a full filesystem, a reader that goes
//! away, a file deleted under it, a file left torn by a killed run.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(60);

/// A spawned process killed when the test ends, however it ends: a failed
/// assertion must not leave an agent running (or a tmpfs busy).
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills `pid` (a process that is not our child) when dropped.
struct KillPid(String);

impl Drop for KillPid {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.0]).status();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn agent_cmd(socket: &Path, dir: &Path, output: &str, metrics: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_log-capturer"));
    c.arg("--docker-host")
        .arg(format!("unix://{}", socket.display()))
        .args(["--output", output])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .stdin(Stdio::null());
    c
}

/// GET /metrics on `port` and read one sample (NaN if absent or down).
fn metric(port: u16, name: &str) -> f64 {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return f64::NAN;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn sigterm(child: &Child) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
}

/// Records of `text` (JSON lines); panics on a line that is neither a
/// record nor, where stderr shares the stream, a whole message.
fn parse_lines(text: &str, messages_allowed: bool) -> (Vec<Rec>, Vec<String>) {
    let mut recs = Vec::new();
    let mut messages = Vec::new();
    for l in text.lines() {
        if messages_allowed && l.starts_with("log-capturer: ") {
            messages.push(l.to_owned());
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("torn or glued line {l:?}: {e}"));
        recs.push(Rec {
            container: v["container_name"].as_str().unwrap_or_default().to_owned(),
            stream: v["stream"].as_str().unwrap_or_default().to_owned(),
            message: v["message"].as_str().unwrap_or_default().to_owned(),
            timestamp: v["timestamp"].as_str().map(str::to_owned),
            truncated: false,
        });
    }
    (recs, messages)
}

/// `log-capturer … 2>&1 | (sleep; cat)`: the reader pauses for seconds
/// while the agent has far more to write than the pipe holds. The agent
/// waits (it does not exit, nor panic on its own messages), no message cuts
/// into a record, and every line arrives exactly once.
#[test]
fn a_pausing_reader_of_stdout_and_stderr_is_backpressure() {
    let dir = TempDir::new("pause");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let total = 3_000u64;
    let (r, w) = nix::unistd::pipe().unwrap();
    let port = free_port();
    let mut child = Running(
        agent_cmd(d.socket(), &dir.0, "-", port)
            .stdout(Stdio::from(w.try_clone().unwrap()))
            .stderr(Stdio::from(w))
            .spawn()
            .unwrap(),
    );
    // A container started after the agent: all its lines are shipped.
    assert!(wait_for(T, || metric(port, "log_capturer_docker_up") == 1.0));
    // Long lines: records are far larger than a pipe's atomic write, so
    // writes end mid-record all the time.
    d.create_and_start(ContainerSpec::new("p").writer(Writer {
        lines_per_sec: 3_000.0,
        stderr_every: 0,
        line_len: 5_000,
        max_lines: Some(total),
    }));
    // The reader pauses. Wait until the agent is blocked on it.
    assert!(
        wait_for(T, || metric(port, "log_capturer_output_buffer_bytes") >= (4 << 20) as f64),
        "the agent never filled its buffer"
    );
    // Something to say while blocked: a container it cannot follow.
    d.create_and_start(ContainerSpec::new("silent").log_driver("none"));
    // Stay paused a while; the agent must neither exit nor panic.
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_secs(3) {
        assert!(child.try_wait().unwrap().is_none(), "the agent exited while its reader paused");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Read everything.
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let shared = text.clone();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(std::fs::File::from(r));
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            shared.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    let records = || text.lock().unwrap().lines().filter(|l| !l.starts_with("log-capturer: ")).count() as u64;
    if !wait_for(T, || records() >= total) {
        let _ = std::fs::write("/tmp/lc-pause-failure.txt", text.lock().unwrap().as_bytes());
        panic!("{} of {total} lines arrived (what arrived: /tmp/lc-pause-failure.txt)", records());
    }
    sigterm(&child);
    let st = wait_exit(&mut child, Duration::from_secs(10)).expect("agent did not stop on SIGTERM");
    assert!(st.success(), "exit status {st}");
    // The agent has exited: the reader sees the end of the pipe.
    reader.join().unwrap();
    let text = text.lock().unwrap().clone();
    let (recs, messages) = parse_lines(&text, true);
    check_sequence(&recs, "p", total).unwrap();
    assert!(
        messages.iter().any(|m| m.contains("not following container silent")),
        "the message said while blocked is missing: {messages:?}"
    );
}

/// `log-capturer | head -1`: the reader goes away. That is a failure a
/// supervisor must see: non-zero status, and a message saying so.
#[test]
fn a_reader_that_goes_away_is_a_failure() {
    let dir = TempDir::new("epipe");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    d.create_and_start(ContainerSpec::new("e").writer(Writer::new(200.0)));
    let mut child = Running(
        agent_cmd(d.socket(), &dir.0, "-", 0).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("\"container_name\":\"e\""), "{first}");
    drop(out);
    let st = wait_exit(&mut child, T).expect("the agent kept running without a reader");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(st.code(), Some(1), "exit status {st}; stderr:\n{err}");
    assert!(err.contains("went away"), "{err}");
}

/// A tmpfs of `size` mounted for the life of the value (root only).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let p = dir.join("fs");
        std::fs::create_dir_all(&p).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&p)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("LC_REQUIRE_DOCKER").is_none(),
                "cannot mount a tmpfs (needs root); required in CI"
            );
            eprintln!("SKIPPED: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(Tmpfs(p))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill a filesystem up to `leave` bytes free.
fn fill(fs: &Path, leave: u64) -> PathBuf {
    let filler = fs.join("filler");
    let st = nix::sys::statvfs::statvfs(fs).unwrap();
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    std::fs::write(&filler, vec![0u8; free.saturating_sub(leave) as usize]).unwrap();
    filler
}

/// An agent writing to a nearly full tmpfs, and a container `name` that
/// writes `total` lines of 150 bytes at `rate`: run until the agent has
/// found the disk full. `None` where no tmpfs can be mounted.
struct FullDisk {
    dir: TempDir,
    /// Mounted until dropped.
    _fs: Tmpfs,
    filler: PathBuf,
    d: Double,
    out: PathBuf,
    child: Running,
}

impl FullDisk {
    fn start(tag: &str, name: &str, total: u64, rate: f64, stderr: Stdio) -> Option<FullDisk> {
        let dir = TempDir::new(tag);
        let fs = Tmpfs::mount(&dir.0, "8m")?;
        let filler = fill(&fs.0, 64 << 10);
        let d = Double::start(Config::in_temp_dir()).unwrap();
        let out = fs.0.join("out.jsonl");
        let port = free_port();
        let mut child = Running(
            agent_cmd(d.socket(), &dir.0, out.to_str().unwrap(), port)
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap(),
        );
        assert!(wait_for(T, || metric(port, "log_capturer_docker_up") == 1.0));
        let w = Writer { lines_per_sec: rate, stderr_every: 0, line_len: 150, max_lines: Some(total) };
        d.create_and_start(ContainerSpec::new(name).writer(w));
        assert!(wait_for(T, || metric(port, "log_capturer_output_no_space_total") >= 1.0
            || child.try_wait().unwrap().is_some()));
        assert!(child.try_wait().unwrap().is_none(), "the agent exited on a full disk");
        Some(FullDisk { dir, _fs: fs, filler, d, out, child })
    }
}

/// The output's filesystem fills: the agent pauses (no exit, a message, a
/// metric), writes no torn record, and when space returns it goes on with
/// every line exactly once.
#[test]
fn a_full_filesystem_pauses_and_resumes_without_loss_or_tears() {
    let total = 8_000u64;
    let Some(mut disk) = FullDisk::start("enospc", "f", total, 4_000.0, Stdio::piped()) else {
        return;
    };
    let (filler, out) = (disk.filler.clone(), disk.out.clone());
    let child = &mut disk.child;
    // Stays up and paused for a while; the file holds whole records only.
    let full_since = Instant::now();
    while full_since.elapsed() < Duration::from_secs(2) {
        assert!(child.try_wait().unwrap().is_none(), "the agent exited on a full disk");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.ends_with('\n'),
        "a torn record on a full disk: {:?}",
        &text[text.len().saturating_sub(80)..]
    );
    let (recs, _) = parse_lines(&text, false);
    assert!((recs.len() as u64) < total, "everything fit: the test did not fill the disk");
    // Space returns.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_for(T, || std::fs::read_to_string(&out)
            .map(|t| t.lines().count() as u64 >= total)
            .unwrap_or(false)),
        "not every line arrived after space returned"
    );
    sigterm(child);
    let st = wait_exit(child, Duration::from_secs(10)).expect("no exit on SIGTERM");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(st.success(), "exit status {st}; stderr:\n{err}");
    assert!(err.contains("no space left") && err.contains("space is available again"), "{err}");
    let (recs, _) = parse_lines(&std::fs::read_to_string(&out).unwrap(), false);
    check_sequence(&recs, "f", total).unwrap();
}

/// Stopped while the disk is full, restarted once it has space: no torn
/// record, nothing glued, nothing lost (lines written after the last
/// checkpoint may repeat: the checkpoint cannot move while the output is
/// stuck).
#[test]
fn stopped_on_a_full_disk_and_restarted_loses_nothing() {
    let total = 6_000u64;
    let Some(mut disk) = FullDisk::start("enospc2", "g", total, 3_000.0, Stdio::null()) else {
        return;
    };
    let (filler, out) = (disk.filler.clone(), disk.out.clone());
    sigterm(&disk.child);
    let st = wait_exit(&mut disk.child, Duration::from_secs(10)).expect("no exit on SIGTERM");
    assert!(st.success(), "exit status {st}");
    assert!(std::fs::read_to_string(&out).unwrap().ends_with('\n'), "torn record left by the stop");
    let (dir, d) = (&disk.dir, &disk.d);
    std::fs::remove_file(&filler).unwrap();
    let port = free_port();
    let mut child = Running(
        agent_cmd(d.socket(), &dir.0, out.to_str().unwrap(), port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let delivered = || {
        let (recs, _) = parse_lines(&std::fs::read_to_string(&out).unwrap(), false);
        let mut seqs: Vec<u64> =
            recs.iter().filter_map(|r| r.message.split(' ').nth(1).and_then(|s| s.parse().ok())).collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs.len() as u64
    };
    assert!(wait_for(T, || delivered() == total), "lost lines: {} of {total}", delivered());
    sigterm(&child);
    wait_exit(&mut child, Duration::from_secs(10)).expect("no exit on SIGTERM");
}

/// An output file deleted (not renamed) while the agent runs is created
/// again, and the lines after the deletion land in it.
#[test]
fn a_deleted_output_file_is_created_again() {
    let dir = TempDir::new("deleted");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let id = d.create_and_start(ContainerSpec::new("del"));
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    d.write(&id, Stream::Stdout, b"before");
    assert!(wait_for(T, || read_output(&agent.output).len() == 1), "{}", agent.stderr());
    std::fs::remove_file(&agent.output).unwrap();
    // Keep writing until the agent has noticed (its check runs at most
    // once a second, when it has something to write).
    let mut n = 0;
    assert!(
        wait_until(T, Duration::from_millis(200), || {
            n += 1;
            d.write(&id, Stream::Stdout, format!("after {n}").as_bytes());
            agent.output.exists() && read_output(&agent.output).iter().any(|r| r.message.starts_with("after"))
        }),
        "the deleted output was not created again: {}",
        agent.stderr()
    );
    assert!(agent.stderr().contains("was deleted; created it again"), "{}", agent.stderr());
    assert!(agent.metric("log_capturer_output_reopened_total") >= 1.0);
    // Whatever was written to the deleted file between the deletion and
    // the check is gone with it: at most a second of lines.
    let lost = n as usize - read_output(&agent.output).len();
    assert!(lost <= 6, "{lost} lines went to the deleted file");
}

/// A file output is created 0640 (before the umask), not world-readable.
#[test]
fn the_output_file_is_not_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("mode");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let out = dir.0.join("o.jsonl");
    let sh = format!(
        "umask 000; exec {} --docker-host unix://{} --output {} --state-dir {} --metrics-addr 127.0.0.1:0",
        env!("CARGO_BIN_EXE_log-capturer"),
        d.socket().display(),
        out.display(),
        dir.0.join("state").display()
    );
    let mut child = Running(Command::new("sh").args(["-c", &sh]).stderr(Stdio::null()).spawn().unwrap());
    assert!(wait_for(T, || out.exists()));
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    sigterm(&child);
    wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(mode, 0o640, "output created {mode:o}");
}

/// A power cut must not lose lines a checkpoint calls delivered: every
/// durable checkpoint (`checkpoints.json`) is renamed into place only after
/// the output file was synced (`fdatasync`) since the one before it. The
/// fresh copy (`checkpoints.fresh.json`, for a process crash) is not synced.
/// Seen with strace.
#[test]
fn the_output_file_is_synced_before_each_checkpoint() {
    if Command::new("strace").arg("-V").stdout(Stdio::null()).status().is_err() {
        assert!(
            std::env::var_os("LC_REQUIRE_DOCKER").is_none(),
            "strace is missing (apt-get install strace)"
        );
        eprintln!("SKIPPED: strace is not installed (apt-get install strace)");
        return;
    }
    let dir = TempDir::new("sync");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let out = dir.0.join("out.jsonl");
    let trace = dir.0.join("trace.txt");
    let port = free_port();
    let agent = agent_cmd(d.socket(), &dir.0, out.to_str().unwrap(), port);
    let mut strace = Running(
        Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=openat,fdatasync,fsync,rename,renameat,renameat2", "-o"])
            .arg(&trace)
            .arg(agent.get_program())
            .args(agent.get_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for(T, || metric(port, "log_capturer_docker_up") == 1.0));
    // Killing strace would leave its tracee running: the agent is killed
    // itself if the test fails.
    let children =
        std::fs::read_to_string(format!("/proc/{}/task/{}/children", strace.id(), strace.id())).unwrap();
    let agent_pid = KillPid(children.split_whitespace().next().expect("the agent under strace").to_owned());
    d.create_and_start(ContainerSpec::new("s").writer(Writer::new(100.0)));
    // A few fresh checkpoints, each covering new lines; the durable ones
    // are the first run's and the shutdown's (and one every 10 s).
    assert!(wait_for(T, || metric(port, "log_capturer_checkpoint_writes_total") >= 4.0));
    Command::new("kill").args(["-TERM", &agent_pid.0]).status().unwrap();
    wait_exit(&mut strace, Duration::from_secs(10)).expect("the agent did not stop");
    let text = std::fs::read_to_string(&trace).unwrap();
    let out_fd = text
        .lines()
        .find(|l| l.contains("openat(") && l.contains(out.to_str().unwrap()))
        .and_then(|l| l.rsplit("= ").next())
        .and_then(|fd| fd.trim().parse::<i32>().ok())
        .expect("the output's open in the trace");
    let sync = format!("fdatasync({out_fd})");
    let mut synced = false;
    let (mut renames, mut fresh) = (0, 0);
    for l in text.lines() {
        if l.contains(&sync) && l.ends_with("= 0") {
            synced = true;
        } else if l.contains("rename") && l.contains("checkpoints.json") {
            assert!(synced, "a durable checkpoint renamed without the output synced before it:\n{text}");
            synced = false;
            renames += 1;
        } else if l.contains("rename") && l.contains("checkpoints.fresh.json") {
            fresh += 1;
        }
    }
    assert!(renames >= 2, "{renames} durable checkpoints in the trace:\n{text}");
    assert!(fresh >= 4, "{fresh} fresh checkpoints in the trace:\n{text}");
}
