//! `log-capturer check` against the Docker API test double: what each
//! check reports, in the table and in `--json`, and the exit status.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agent, Config, ContainerSpec, Double, TempDir};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_log-capturer");

/// Run `check` with `args` to its exit (killed after 20 s): (exit code,
/// stdout, stderr).
fn check(socket: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let child = Command::new(BIN)
        .arg("check")
        .arg("--docker-host")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let pid = child.id();
    // The deadline: a check that hangs must fail the test, not stall it.
    let watchdog = std::thread::spawn(move || {
        while start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    });
    let out = child.wait_with_output().unwrap();
    let _ = watchdog.join();
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// `check --json`: (exit code, the rows).
fn check_json(socket: &Path, args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let mut a = args.to_vec();
    a.push("--json");
    let (code, out, err) = check(socket, &a);
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    for r in &rows {
        for k in ["check", "status", "detail", "fix"] {
            assert!(r.get(k).is_some(), "no {k} in {r}");
        }
        assert!(["OK", "WARN", "FAIL", "INFO"].contains(&r["status"].as_str().unwrap()), "{r}");
    }
    (code, rows)
}

fn rows_of<'a>(rows: &'a [Value], check: &str) -> Vec<&'a Value> {
    rows.iter().filter(|r| r["check"] == check).collect()
}

fn one<'a>(rows: &'a [Value], check: &str) -> &'a Value {
    let v = rows_of(rows, check);
    assert_eq!(v.len(), 1, "{check}: {rows:?}");
    v[0]
}

#[test]
fn all_ok_with_json_file_containers() {
    let dir = TempDir::new("check-ok");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    d.create_and_start(ContainerSpec::new("web"));
    d.create_and_start(ContainerSpec::new("db").log_driver("local"));
    d.create(ContainerSpec::new("stopped").log_driver("none"));
    let state = dir.0.join("state");
    let (code, rows) = check_json(d.socket(), &["--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{rows:?}");
    assert!(rows.iter().all(|r| r["status"] != "FAIL" && r["status"] != "WARN"), "{rows:?}");
    assert_eq!(one(&rows, "docker")["status"], "OK");
    let api = one(&rows, "docker api");
    assert!(api["detail"].as_str().unwrap().contains("daemon API 1.41"), "{api}");
    let drivers = one(&rows, "logging drivers");
    assert_eq!(drivers["status"], "OK");
    // Only running containers count.
    assert_eq!(drivers["detail"], "2 running: 1 json-file, 1 local", "{drivers}");
    assert!(one(&rows, "open files")["detail"].as_str().unwrap().contains("for 2 running containers"));
    let st = one(&rows, "state directory");
    assert!(st["detail"].as_str().unwrap().contains("does not exist yet"), "{st}");
    assert!(!state.exists(), "check created the state directory");
    assert_eq!(one(&rows, "sink")["status"], "INFO");

    // The table: a header, the same checks, and the summing-up.
    let (code, table, _) = check(d.socket(), &["--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(table.starts_with("STATUS  CHECK            DETAIL\nOK      docker "), "{table}");
    assert!(table.contains("\nOK      logging drivers  2 running: 1 json-file, 1 local\n"), "{table}");
    assert!(table.ends_with("\nNo problems found.\n"), "{table}");
}

/// A container whose logs Docker does not keep is a WARN, not a FAIL: the
/// agent runs and ships every other container (and `none` is often chosen
/// on purpose), so the exit status stays 0; `--strict` makes it 1.
#[test]
fn a_none_driver_container_warns() {
    let dir = TempDir::new("check-none");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    d.create_and_start(ContainerSpec::new("web"));
    let id = d.create_and_start(ContainerSpec::new("quiet").log_driver("none"));
    d.create_and_start(ContainerSpec::new("remote").log_driver("gelf"));
    let state = dir.0.join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let (code, rows) = check_json(d.socket(), &args);
    assert_eq!(code, Some(0), "{rows:?}");
    let drivers = rows_of(&rows, "logging drivers");
    assert_eq!(drivers[0]["status"], "WARN", "{drivers:?}");
    assert_eq!(drivers[0]["detail"], "1 of 3 running cannot be followed (1 gelf, 1 json-file, 1 none)");
    let quiet: Vec<_> =
        drivers.iter().filter(|r| r["detail"].as_str().unwrap().starts_with("quiet")).collect();
    assert_eq!(quiet.len(), 1, "{drivers:?}");
    assert_eq!(quiet[0]["status"], "WARN");
    let detail = quiet[0]["detail"].as_str().unwrap();
    assert!(detail.contains(&id[..12]) && detail.contains("driver none"), "{detail}");
    assert!(quiet[0]["fix"].as_str().unwrap().contains("json-file"), "{:?}", quiet[0]);
    // A remote driver is followable through the dual-logging cache.
    let remote: Vec<_> =
        drivers.iter().filter(|r| r["detail"].as_str().unwrap().starts_with("remote")).collect();
    assert_eq!(remote[0]["status"], "INFO", "{remote:?}");
    assert!(remote[0]["detail"].as_str().unwrap().contains("dual-logging cache"), "{remote:?}");

    let (code, table, _) = check(d.socket(), &[&args[..], &["--strict"]].concat());
    assert_eq!(code, Some(1), "{table}");
    assert!(table.contains("\n2 warning(s), no failure"), "{table}");
}

#[test]
fn unreachable_docker_fails_with_the_fix() {
    let dir = TempDir::new("check-nodocker");
    let sock = dir.0.join("no-docker.sock");
    let state = dir.0.join("state");
    let (code, rows) = check_json(&sock, &["--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    let docker = one(&rows, "docker");
    assert_eq!(docker["status"], "FAIL");
    assert!(docker["detail"].as_str().unwrap().contains("no such socket"), "{docker}");
    assert!(docker["fix"].as_str().unwrap().contains("--docker-host or DOCKER_HOST"), "{docker}");
    assert_eq!(one(&rows, "logging drivers")["status"], "INFO");
    // The other checks still run.
    assert_eq!(one(&rows, "open files")["status"], "OK");

    // A socket nobody listens on: refused.
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(listener);
    let (code, table, _) = check(&sock, &["--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{table}");
    assert!(table.contains("FAIL    docker"), "{table}");
    assert!(table.contains("fix: is dockerd running and listening there?"), "{table}");
}

#[test]
fn a_state_dir_that_is_a_file_fails() {
    let dir = TempDir::new("check-statefile");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let file = dir.0.join("state");
    std::fs::write(&file, b"not a directory").unwrap();
    let (code, rows) = check_json(d.socket(), &["--state-dir", file.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{rows:?}");
    let st = one(&rows, "state directory");
    assert_eq!(st["status"], "FAIL");
    assert!(st["detail"].as_str().unwrap().contains("is a file, not a directory"), "{st}");
    assert!(st["fix"].as_str().unwrap().contains("--state-dir"), "{st}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn a_state_dir_of_a_running_agent_is_in_use() {
    let dir = TempDir::new("check-locked");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    d.create_and_start(ContainerSpec::new("web"));
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    let state = dir.0.join("state");
    let (code, rows) = check_json(d.socket(), &["--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{rows:?}");
    assert_eq!(one(&rows, "state directory")["status"], "OK");
    let lock = one(&rows, "state lock");
    assert_eq!(lock["status"], "INFO", "{lock}");
    assert!(
        lock["detail"].as_str().unwrap().contains("in use by a running agent (fine after install)"),
        "{lock}"
    );

    // Once the agent is gone, the lock is free and check does not keep it.
    agent.stop("TERM");
    let (_, rows) = check_json(d.socket(), &["--state-dir", state.to_str().unwrap()]);
    assert_eq!(one(&rows, "state lock")["status"], "OK", "{rows:?}");
}

/// An existing, empty state directory: writable, not in use, and still
/// empty after the check (no `lock` file left behind).
#[test]
fn check_leaves_the_state_dir_as_it_was() {
    let dir = TempDir::new("check-empty");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let state = dir.0.join("state");
    std::fs::create_dir(&state).unwrap();
    let (code, rows) = check_json(d.socket(), &["--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{rows:?}");
    let st = one(&rows, "state directory");
    assert_eq!(st["status"], "OK");
    assert!(st["detail"].as_str().unwrap().contains("is writable; no checkpoints yet"), "{st}");
    assert_eq!(one(&rows, "state lock")["status"], "OK");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0, "check left a file in the state directory");
}
