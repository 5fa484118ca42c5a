//! `log-capturer decode`: decode a captured logs response into JSON lines.
//!
//! For debugging what dockerd sent: capture a response with
//! `curl --raw -i --unix-socket /var/run/docker.sock 'http://d/v1.41/containers/ID/logs?stdout=1&stderr=1&timestamps=1' > capture.http`
//! and run `log-capturer decode capture.http`.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::docker::lines::DEFAULT_MAX_LINE;
use crate::docker::logstream::{Framing, LogEvent, LogStreamConfig};
use crate::message;
use crate::record::{self, Record};
use crate::response::{ResponseConfig, ResponseDecoder};

#[derive(Debug, Clone, clap::Args)]
pub struct DecodeArgs {
    /// The response is from a TTY container: raw bytes, no frame headers.
    /// Without this flag the Content-Type decides, and multiplexed frames
    /// are assumed when there is none (dockerd before API 1.42 sends none).
    #[arg(long)]
    pub tty: bool,

    /// Lines longer than this are cut to this many bytes and marked
    /// `"truncated":true`; the rest of such a line is dropped.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE)]
    pub max_line_bytes: usize,

    /// The captured HTTP response: status line, headers and body exactly as
    /// on the wire (`curl --raw -i`). Standard input if absent or `-`.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Run the command. Records go to stdout as they are decoded, so everything
/// before a fault is printed; the fault is returned as the error.
pub fn run(args: &DecodeArgs) -> anyhow::Result<ExitCode> {
    let mut input: Box<dyn Read> = match &args.file {
        Some(p) if p.as_os_str() != "-" => {
            Box::new(File::open(p).with_context(|| format!("cannot open {}", p.display()))?)
        }
        _ => Box::new(io::stdin().lock()),
    };
    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout);
    match decode(&mut input, &mut out, args) {
        Ok(code) => Ok(code),
        Err(e) if is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

fn decode(input: &mut dyn Read, out: &mut dyn Write, args: &DecodeArgs) -> anyhow::Result<ExitCode> {
    let framing = if args.tty { Framing::Raw } else { Framing::Multiplexed };
    let mut stream = LogStreamConfig::new(framing, true);
    stream.max_line = args.max_line_bytes;
    let mut dec = ResponseDecoder::new(ResponseConfig {
        stream,
        framing_from_content_type: !args.tty,
        detect_timestamps: true,
    });

    let mut line = Vec::with_capacity(1024);
    let mut io_err: Option<io::Error> = None;
    let mut daemon_errors = 0u32;
    let mut emit = |ev: LogEvent<'_>| {
        if io_err.is_some() {
            return;
        }
        match ev {
            LogEvent::Record(r) => {
                line.clear();
                write_record(&mut line, &r);
                if let Err(e) = out.write_all(&line) {
                    io_err = Some(e);
                }
            }
            LogEvent::DaemonError(msg) => {
                daemon_errors += 1;
                message!("Docker reported in the stream: {}", String::from_utf8_lossy(msg));
            }
        }
    };

    let mut buf = vec![0u8; 64 * 1024];
    let result = loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break dec.finish(&mut emit),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(anyhow::Error::new(e).context("cannot read the input")),
        };
        if let Err(e) = dec.push(&buf[..n], &mut emit) {
            break Err(e);
        }
    };
    if let Some(e) = io_err {
        return Err(e.into());
    }
    out.flush()?;
    if let Err(e) = result {
        message!("decode: {e}");
        return Ok(ExitCode::from(1));
    }
    if dec.trailing_bytes() > 0 {
        message!("decode: ignored {} bytes after the end of the response", dec.trailing_bytes());
    }
    Ok(if daemon_errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn write_record(out: &mut Vec<u8>, r: &Record<'_>) {
    record::write_json(out, r, b"");
    out.push(b'\n');
}
