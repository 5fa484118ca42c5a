//! The command line as a new user meets it: flags that would hammer dockerd
//! or that clap would misread, addresses and state directories that cannot
//! be used, and `--version`. Each bad start exits 2 with one message that
//! names the flag and says what to do.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Config, Double, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_log-capturer");

/// Run the agent to its exit (killed after 20 s): (exit code, stderr).
fn run(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status, err)
}

/// The agent with `args`, its state in `dir/state` unless `args` says,
/// Docker at `socket`, the output discarded.
fn agent(socket: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--docker-host").arg(format!("unix://{}", socket.display())).args(["--output", "/dev/null"]);
    if !args.contains(&"--state-dir") {
        cmd.arg("--state-dir").arg(dir.join("state"));
    }
    if !args.contains(&"--metrics-addr") {
        cmd.args(["--metrics-addr", "127.0.0.1:0"]);
    }
    cmd.args(args);
    cmd
}

/// A flag error: exit status 2 and clap's message about `flag`, before the
/// agent tries to reach Docker (whose socket here does not exist).
fn refused(args: &[&str]) -> String {
    let dir = TempDir::new("flags");
    let (code, err) = run(&mut agent(&dir.0.join("no-docker.sock"), &dir.0, args));
    assert_eq!(code, Some(2), "{args:?}: {err}");
    assert!(!err.contains("cannot reach Docker"), "{args:?} was accepted: {err}");
    err
}

#[test]
fn reopen_periods_that_would_hammer_dockerd_are_refused_with_the_range() {
    for flag in ["--rotate-after", "--idle-timeout"] {
        for value in ["0s", "0", "50ms"] {
            let err = refused(&[flag, value]);
            assert!(err.contains(flag) && err.contains("too short") && err.contains("100ms to 7d"), "{err}");
        }
        let err = refused(&[flag, "8d"]);
        assert!(err.contains(flag) && err.contains("100ms to 7d"), "{err}");
    }
}

#[test]
fn negative_durations_reach_the_parser_and_are_called_negative() {
    for flag in ["--rotate-after", "--idle-timeout", "--connect-timeout", "--head-timeout", "--api-timeout"] {
        let err = refused(&[flag, "-5s"]);
        assert!(err.contains(flag) && err.contains("durations cannot be negative"), "{flag}: {err}");
        assert!(!err.contains("unexpected argument"), "{flag}: {err}");
    }
}

#[test]
fn a_metrics_host_name_is_refused_with_what_to_write_instead() {
    let err = refused(&["--metrics-addr", "metrics.example:9641"]);
    assert!(err.contains("--metrics-addr") && err.contains("must be an IP address"), "{err}");
    assert!(err.contains("127.0.0.1:9640") && err.contains("0.0.0.0:9640"), "{err}");
    let err = refused(&["--metrics-addr", ":9641"]);
    assert!(err.contains("127.0.0.1:9641 or 0.0.0.0:9641"), "{err}");
}

#[test]
fn metrics_on_localhost_listen_on_127_0_0_1() {
    let dir = TempDir::new("localhost");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let mut child = agent(d.socket(), &dir.0, &["--metrics-addr", "localhost:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The agent says where it listens once it does; it never exits on its
    // own, so a missing line ends the read when the child is killed.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("metrics on http://") {
                break;
            }
        }
        let _ = tx.send(seen);
    });
    let seen = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let seen = seen.expect("the agent did not say where it serves metrics");
    assert!(seen.contains("metrics on http://127.0.0.1:"), "{seen}");
}

#[test]
fn a_state_directory_that_is_a_file_is_called_a_file() {
    let dir = TempDir::new("statefile");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let file = dir.0.join("state");
    std::fs::write(&file, b"not a directory\n").unwrap();
    let (code, err) = run(&mut agent(d.socket(), &dir.0, &[]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is a file, not a directory") && err.contains("--state-dir"), "{err}");
    assert!(!err.contains("create it"), "{err}");
}

#[test]
fn a_metrics_port_in_use_says_another_process_holds_it() {
    let dir = TempDir::new("inuse");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let (code, err) = run(&mut agent(d.socket(), &dir.0, &["--metrics-addr", &addr]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(err.contains("another process listens there") && err.contains("--metrics-addr"), "{err}");
}

#[test]
fn a_metrics_address_of_another_host_is_called_one() {
    let dir = TempDir::new("notlocal");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    // TEST-NET-1 (RFC 5737): never an address of this host.
    let (code, err) = run(&mut agent(d.socket(), &dir.0, &["--metrics-addr", "192.0.2.1:9640"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("192.0.2.1 is not an address of this host"), "{err}");
    assert!(!err.contains("another agent"), "{err}");
}

/// `cmd` run as an unprivileged user: as `nobody` (through `setpriv`) when
/// the tests run as root, who may write anywhere and bind any port.
fn unprivileged(cmd: Command) -> Command {
    // /proc/self belongs to the process's effective user.
    let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    if euid != 0 {
        return cmd;
    }
    let mut wrapped = Command::new("setpriv");
    wrapped.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(cmd.get_program());
    wrapped.args(cmd.get_args());
    wrapped
}

/// A double whose socket anyone may connect to (an unprivileged agent must
/// get past the Docker check to reach the step under test).
fn open_double() -> Double {
    use std::os::unix::fs::PermissionsExt;
    let d = Double::start(Config::in_temp_dir()).unwrap();
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    d
}

#[test]
fn a_read_only_state_directory_names_the_flag() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("rostate");
    let d = open_double();
    let state = dir.0.join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o555)).unwrap();
    let state = state.to_str().unwrap();
    let (code, err) = run(&mut unprivileged(agent(d.socket(), &dir.0, &["--state-dir", state])));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("state directory {state} is not writable")), "{err}");
    assert!(err.contains(&format!("{state}/lock")) && err.contains("--state-dir"), "{err}");
}

#[test]
fn a_privileged_metrics_port_says_it_needs_privileges() {
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    assert!(start > 1, "net.ipv4.ip_unprivileged_port_start={start}: no port is privileged on this host");
    let dir = TempDir::new("lowport");
    let d = open_double();
    let state = dir.0.join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let addr = format!("127.0.0.1:{}", start - 1);
    let (code, err) = run(&mut unprivileged(agent(d.socket(), &dir.0, &["--metrics-addr", &addr])));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("ports below {start} need root or CAP_NET_BIND_SERVICE")), "{err}");
    assert!(!err.contains("another agent"), "{err}");
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with(&format!("log-capturer {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let head = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match head {
        Some(hash) => assert!(version.contains(&format!("(commit {hash}")), "HEAD is {hash}: {version}"),
        // Built outside a checkout (a tarball): no commit to name.
        None => assert!(version.contains("(commit unknown)"), "{version}"),
    }
}

/// The sink's settings, secrets and TLS files are checked before Docker is
/// asked anything (the socket here does not exist): the error is the typo,
/// not "cannot reach Docker".
#[test]
fn sink_files_that_cannot_be_read_are_reported_before_docker_is_reached() {
    let dir = TempDir::new("sink-files");
    for (args, flag) in [
        (
            &["--loki", "http://127.0.0.1:1", "--loki-username", "u", "--loki-password-file", "/nonexistent"]
                [..],
            "--loki-password-file",
        ),
        (&["--loki", "https://127.0.0.1:1", "--sink-ca-file", "/nonexistent.pem"][..], "--sink-ca-file"),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.arg("--docker-host")
            .arg(format!("unix://{}", dir.0.join("no-docker.sock").display()))
            .arg("--state-dir")
            .arg(dir.0.join("state"))
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args);
        let (code, err) = run(&mut cmd);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(flag) && err.contains("/nonexistent"), "{args:?}: {err}");
        assert!(!err.contains("Docker"), "{args:?}: Docker was asked first: {err}");
    }
}
