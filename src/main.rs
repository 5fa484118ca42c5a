use std::process::ExitCode;

use clap::{Parser, Subcommand};

use log_capturer::decode_cmd::{self, DecodeArgs};

/// Ships the logs of every Docker container on this host as JSON lines,
/// from one thread and one poll loop, losing and duplicating nothing.
#[derive(Debug, Parser)]
#[command(name = "log-capturer", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Decode(args)) => decode_cmd::run(&args),
        None => {
            eprintln!(
                "log-capturer: the agent is not in this build yet; `log-capturer decode --help` \
                 shows what is"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("log-capturer: {e:#}");
            ExitCode::from(2)
        }
    }
}
