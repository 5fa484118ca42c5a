use std::process::ExitCode;

use std::io::{self, Write};

use clap::{Parser, Subcommand};

use log_capturer::check_cmd::{self, CheckArgs};
use log_capturer::cli::AgentArgs;
use log_capturer::config_file::{self, ConfigArgs, ConfigFileArg};
use log_capturer::decode_cmd::{self, DecodeArgs};

/// `--version`: the release and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("LOG_CAPTURER_COMMIT"), ")");

/// Ships the logs of every Docker container on this host as JSON lines,
/// from one thread and one poll loop, losing and duplicating nothing.
///
/// Without a subcommand, runs the agent: follows every running container
/// (and each one that starts later) through the Docker API and writes one
/// JSON object per log line to --output:
///
///   {"timestamp":"2026-11-27T19:48:22.687468145Z","container_id":"<64 hex>",
///    "container_name":"web","image":"busybox:local","stream":"stdout","message":"..."}
///
/// With --loki URL the lines go to Grafana Loki instead, and a container's
/// checkpoint moves only over lines Loki acknowledged.
///
/// Each stream is reopened now and then (--rotate-after, --idle-timeout)
/// and resumes exactly where it was; checkpoints in --state-dir carry that
/// across restarts. Settings can also come from a TOML file (--config).
/// Metrics: http://127.0.0.1:9640/metrics.
#[derive(Debug, Parser)]
#[command(name = "log-capturer", version = VERSION, about, long_about, args_conflicts_with_subcommands = true)]
#[command(verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    agent: AgentArgs,

    #[command(flatten)]
    config: ConfigFileArg,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode a captured logs response (`curl --raw -i`) into JSON lines.
    ///
    /// Prints one JSON object per log line:
    /// {"timestamp":"…Z","stream":"stdout","message":"…"}
    /// (`timestamp` only when the capture has them; `"truncated":true` when a
    /// line was cut; `message_base64` with the exact bytes when the line is
    /// not valid UTF-8). A non-2xx response prints the daemon's message.
    /// Malformed input: everything decoded before the fault is printed, then
    /// a one-line error with the byte offset; exit status 1.
    Decode(DecodeArgs),
    /// Diagnose this node for the agent: Docker reachable (socket
    /// permissions, API version), each running container's logging driver
    /// (followable or not), the open-files limit against the containers,
    /// the state directory (writable, in use), and with --loki the sink
    /// (reachable, TLS, authorised: an empty push, no log line). Changes
    /// nothing.
    ///
    /// Prints a table, or with --json an array of
    /// {"check","status","detail","fix"}. Status OK, INFO (nothing to fix),
    /// WARN (the agent runs, but something will not be shipped) or FAIL
    /// (the agent cannot start or do its job). Exit status 1 if a check
    /// FAILs (or WARNs, with --strict), 0 otherwise, 2 for bad flags.
    Check(CheckArgs),
    /// Print the effective configuration: every setting after --config, the
    /// environment and the flags given here, as a TOML file that --config
    /// accepts, each value followed by where it came from (flag, env, file,
    /// default). Secrets are shown as the files or environment variables
    /// that hold them, never their contents. Reads no secret file and
    /// contacts nothing.
    Config(ConfigArgs),
}

fn main() -> ExitCode {
    let loaded = match config_file::parse::<Cli>(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        Err(e) => {
            log_capturer::message_blocking!("{e:#}");
            return ExitCode::from(2);
        }
    };
    for note in &loaded.notes {
        log_capturer::message_blocking!("{note}");
    }
    let cli = loaded.cli;
    let result = match cli.command {
        Some(Command::Decode(args)) => decode_cmd::run(&args),
        Some(Command::Check(args)) => check_cmd::run(&args),
        Some(Command::Config(_)) => {
            let text = loaded.settings.to_toml(|var| std::env::var(var).ok());
            match io::stdout().lock().write_all(text.as_bytes()) {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        None => match log_capturer::agent::startup::run(&cli.agent) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(code) => code,
        // A run that stopped on a failure is 1; a start that failed
        // (flags, Docker unreachable, state directory) is 2.
        Err(e) if e.is::<log_capturer::agent::writer::OutputFailed>() => ExitCode::from(1),
        Err(e) => {
            log_capturer::message_blocking!("{e:#}");
            ExitCode::from(2)
        }
    }
}
