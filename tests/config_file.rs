//! `--config FILE`, through the binary: the file's settings are used by the
//! agent, `check` and `config`; flags and the environment override them;
//! bad files stop it with file:line:column, the key and what is allowed;
//! `config` prints a file that reads back as the same settings.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{read_output, wait_for, Agent, Config, ContainerSpec, Double, TempDir};
use docker_double::Stream;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_log-capturer");

/// Run the binary with `args` and `env` (DOCKER_HOST and the Loki secrets
/// unset unless given) to its exit; killed after 20 s.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for var in ["DOCKER_HOST", "LOKI_PASSWORD", "LOKI_BEARER_TOKEN"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &TempDir, name: &str, contents: &str) -> PathBuf {
    let p = dir.0.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// `log-capturer config` with `args`: its output, which must succeed.
fn config(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(&[&["config"], args].concat(), env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// The line of `key` in `config`'s output.
fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} = ");
    printed.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {key} in\n{printed}"))
}

#[test]
fn file_values_are_used_and_flags_and_env_override_them() {
    let dir = TempDir::new("cfg-merge");
    let file = write(
        &dir,
        "c.toml",
        "# a comment\n\
         output = \"/var/log/x.jsonl\"\n\
         rotate-after = \"1h\"\n\
         include-label = [\"app=web\", \"tier\"]\n\
         from-beginning = true\n\
         max-streams = 100\n\
         docker-host = \"unix:///from/file.sock\"\n",
    );
    let f = file.to_str().unwrap();
    let printed = config(&["--config", f], &[]);
    assert_eq!(line(&printed, "output"), "output = \"/var/log/x.jsonl\"  # file");
    assert_eq!(line(&printed, "rotate-after"), "rotate-after = \"1h\"  # file");
    assert_eq!(line(&printed, "include-label"), "include-label = [\"app=web\", \"tier\"]  # file");
    assert_eq!(line(&printed, "from-beginning"), "from-beginning = true  # file");
    assert_eq!(line(&printed, "max-streams"), "max-streams = 100  # file");
    assert_eq!(line(&printed, "idle-timeout"), "idle-timeout = \"10m\"  # default");
    assert!(printed.contains("# stream-rcvbuf =   (not set)"), "{printed}");

    // A flag replaces the file's value; for a repeatable flag, the whole
    // list (not merged).
    let printed = config(&["--config", f, "--include-label", "only", "--rotate-after", "5m"], &[]);
    assert_eq!(line(&printed, "include-label"), "include-label = [\"only\"]  # flag");
    assert_eq!(line(&printed, "rotate-after"), "rotate-after = \"5m\"  # flag");
    assert_eq!(line(&printed, "output"), "output = \"/var/log/x.jsonl\"  # file");

    // The environment beats the file; an empty variable counts as unset.
    let printed = config(&["--config", f], &[("DOCKER_HOST", "tcp://10.0.0.1:2375")]);
    assert_eq!(line(&printed, "docker-host"), "docker-host = \"tcp://10.0.0.1:2375\"  # env DOCKER_HOST");
    let printed = config(&["--config", f], &[("DOCKER_HOST", "")]);
    assert_eq!(line(&printed, "docker-host"), "docker-host = \"unix:///from/file.sock\"  # file");
    let printed = config(&["--config", f, "--docker-host", "tcp://h:1"], &[("DOCKER_HOST", "tcp://e:2")]);
    assert_eq!(line(&printed, "docker-host"), "docker-host = \"tcp://h:1\"  # flag");

    // A flag drops the file settings it conflicts with: --loki wins over
    // the file's output.
    let out = run(&["config", "--config", f, "--loki", "http://127.0.0.1:3100"], &[]);
    let printed = text(&out.stdout);
    assert_eq!(line(&printed, "output"), "output = \"-\"  # default");
    assert_eq!(line(&printed, "loki"), "loki = \"http://127.0.0.1:3100\"  # flag");
    let err = text(&out.stderr);
    assert!(
        err.contains("c.toml: `output` is not used: --loki is given and cannot be used with it"),
        "{err}"
    );
}

#[test]
fn a_flag_may_need_one_the_file_gives() {
    let dir = TempDir::new("cfg-requires");
    let file = write(&dir, "c.toml", "loki = \"https://loki.example.com\"\nloki-label = [\"env=prod\"]\n");
    let f = file.to_str().unwrap();
    let printed = config(&["--config", f, "--loki-tenant", "ops"], &[("LOKI_BEARER_TOKEN", "s3cret")]);
    assert_eq!(line(&printed, "loki-tenant"), "loki-tenant = \"ops\"  # flag");
    assert_eq!(line(&printed, "loki-label"), "loki-label = [\"env=prod\"]  # file");
    // Secrets from the environment: named, never shown.
    assert!(printed.contains("# loki-bearer-token: (from LOKI_BEARER_TOKEN)"), "{printed}");
    assert!(!printed.contains("s3cret"), "{printed}");
    // A secret's variable beats the file naming the secret's file, as any
    // variable beats the file.
    let file =
        write(&dir, "p.toml", "loki = \"http://l:1\"\nloki-username = \"u\"\nloki-password-file = \"/pw\"\n");
    let p = file.to_str().unwrap();
    let printed = config(&["--config", p], &[("LOKI_PASSWORD", "pw")]);
    assert!(
        printed.contains("# loki-password-file =   (not set)\n# loki-password: (from LOKI_PASSWORD)\n"),
        "{printed}"
    );
    let printed = config(&["--config", p], &[]);
    assert_eq!(line(&printed, "loki-password-file"), "loki-password-file = \"/pw\"  # file");
    // A credential header given as a flag is shown masked.
    let printed =
        config(&["--config", f, "--loki-header", "X-Api-Key: k3y", "--loki-header", "X-Team: a"], &[]);
    assert_eq!(line(&printed, "loki-header"), "loki-header = [\"X-Api-Key: ***\", \"X-Team: a\"]  # flag");

    // Without `loki` anywhere, a Loki setting is the same error as on the
    // command line, saying the file took part.
    let file = write(&dir, "d.toml", "loki-tenant = \"ops\"\n");
    let out = run(&["config", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("--loki <URL>") && err.contains("d.toml"), "{err}");
}

#[test]
fn errors_name_the_file_line_key_and_what_is_allowed() {
    let dir = TempDir::new("cfg-errors");
    let cases = [
        (
            "output = \"-\"\n\ndocker_host = \"x\"\n",
            "k.toml:3:1: `docker_host`: unknown key; did you mean `docker-host`?",
        ),
        ("output = \"-\"\nidle-timeout = \"0s\"\n", "k.toml:2:16: `idle-timeout`: \"0s\": `0s` is too short"),
        (
            "max-line-bytes = \"lots\"\n",
            "`max-line-bytes`: \"lots\": `lots` is not a size: use e.g. 1048576, 64KiB or 1MiB",
        ),
        (
            "loki-encoding = \"xml\"\n",
            "use `protobuf` (Snappy-compressed protobuf, Loki's native format, the default) or `json`",
        ),
        ("exclude-label = [\"ok\",\n  \"=bad\"]\n", "k.toml:2:3: `exclude-label`: \"=bad\""),
        ("from-beginning = \"yes\"\n", "k.toml:1:18: `from-beginning`: takes true or false, not a string"),
        (
            "[loki]\ntenant = \"a\"\n",
            "k.toml:1:1: `loki`: takes one value (a string, or a number), not a table (keys are not grouped",
        ),
        ("output = \n", "k.toml:1:10: not valid TOML"),
    ];
    for (contents, says) in cases {
        let file = write(&dir, "k.toml", contents);
        for cmd in [&[][..], &["check"], &["config"]] {
            let out = run(&[cmd, &["--config", file.to_str().unwrap()]].concat(), &[]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{contents:?}: {err}");
            assert!(err.starts_with("log-capturer: ") && err.contains(says), "{contents:?} {cmd:?}: {err}");
            assert!(out.stdout.is_empty());
        }
    }
    let out = run(&["--config", dir.0.join("missing.toml").to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.toml: No such file"), "{}", text(&out.stderr));
}

#[test]
fn secrets_in_the_file_are_refused() {
    let dir = TempDir::new("cfg-secret");
    for (key, file_key, env) in [
        ("loki-password", "loki-password-file", "LOKI_PASSWORD"),
        ("password", "loki-password-file", "LOKI_PASSWORD"),
        ("loki-bearer-token", "loki-bearer-token-file", "LOKI_BEARER_TOKEN"),
    ] {
        let file = write(&dir, "s.toml", &format!("loki = \"http://l:3100\"\n{key} = \"hunter2\"\n"));
        let out = run(&["--config", file.to_str().unwrap()], &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("s.toml:2:1: `{key}`: secrets are not written in the config file")),
            "{err}"
        );
        assert!(err.contains(file_key) && err.contains(env), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[test]
fn config_output_reads_back_as_the_same_settings() {
    let dir = TempDir::new("cfg-roundtrip");
    let first = config(
        &[
            "--loki",
            "https://loki.example.com/x",
            "--loki-label",
            "env=prod",
            "--loki-label",
            "quote=\"a\\b\"",
            "--loki-username",
            "u",
            "--loki-password-file",
            "/etc/pw",
            "--include-name",
            "^(api|web)[0-9]+$",
            "--from-beginning",
            "--max-streams",
            "7",
            "--sink-queue-bytes",
            "32MiB",
        ],
        &[],
    );
    let file = write(&dir, "printed.toml", &first);
    let again = config(&["--config", file.to_str().unwrap()], &[]);
    let values = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split("  # ").next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(values(&first), values(&again));
    // Everything is now from the file, defaults restated too.
    assert_eq!(line(&again, "loki-label"), "loki-label = [\"env=prod\", \"quote=\\\"a\\\\b\\\"\"]  # file");
    assert_eq!(line(&again, "loki-password-file"), "loki-password-file = \"/etc/pw\"  # file");
    assert!(
        again.lines().filter(|l| !l.starts_with('#') && l.contains(" = ")).all(|l| l.ends_with("# file")),
        "{again}"
    );
}

#[test]
fn check_runs_with_the_files_settings() {
    let dir = TempDir::new("cfg-check");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    d.create_and_start(ContainerSpec::new("web"));
    let state = dir.0.join("state-from-file");
    std::fs::write(&state, b"a file").unwrap();
    let file = write(
        &dir,
        "c.toml",
        &format!("docker-host = \"unix://{}\"\nstate-dir = \"{}\"\n", d.socket().display(), state.display()),
    );
    let out = run(&["check", "--json", "--config", file.to_str().unwrap()], &[]);
    let rows: Vec<Value> =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    let row =
        |name: &str| rows.iter().find(|r| r["check"] == name).unwrap_or_else(|| panic!("{name}: {rows:?}"));
    // Docker found where the file says; the file's state directory judged.
    assert_eq!(row("docker")["status"], "OK", "{rows:?}");
    assert_eq!(row("logging drivers")["detail"], "1 running: 1 json-file");
    assert_eq!(row("state directory")["status"], "FAIL");
    assert!(row("state directory")["detail"].as_str().unwrap().contains("state-from-file"), "{rows:?}");
    assert_eq!(out.status.code(), Some(1));

    // The command line still wins.
    let good = dir.0.join("state");
    let out = run(
        &["check", "--json", "--config", file.to_str().unwrap(), "--state-dir", good.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn the_agent_follows_the_files_filters() {
    let dir = TempDir::new("cfg-agent");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    // The file's output is overridden by the --output Agent::start gives.
    let file = write(&dir, "c.toml", "include-name = [\"web-*\"]\noutput = \"/nonexistent/out.jsonl\"\n");
    let agent = Agent::start(d.socket(), &dir.0, &["--config", file.to_str().unwrap()]);
    let other = d.create_and_start(ContainerSpec::new("api-1"));
    let web = d.create_and_start(ContainerSpec::new("web-1"));
    d.write(&other, Stream::Stdout, b"api 1 stdout");
    d.write(&web, Stream::Stdout, b"web 1 stdout");
    assert!(
        wait_for(Duration::from_secs(20), || read_output(&agent.output).len() == 1),
        "{}",
        agent.stderr()
    );
    assert_eq!(read_output(&agent.output)[0].container, "web-1");
    assert_eq!(d.stats().logs_requests_by_container.keys().collect::<Vec<_>>(), [&web]);
}

#[test]
fn the_example_file_is_a_valid_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/log-capturer.toml");
    let printed = config(&["--config", example.to_str().unwrap()], &[]);
    // Everything in it is commented out: the defaults.
    let set: Vec<&str> = printed.lines().filter(|l| !l.starts_with('#') && l.contains(" = ")).collect();
    assert!(set.len() > 20 && set.iter().all(|l| l.ends_with("# default")), "{printed}");
}
