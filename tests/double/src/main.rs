//! `docker-double`: the Docker API test double as a process, for benchmarks
//! and manual runs. See `--help`.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use docker_double::{Config, ContainerSpec, Double, SinceMode, Stats, Writer};

const HELP: &str = "\
docker-double: a fake Docker Engine API (dockerd 20.10) on a unix socket

USAGE:
    docker-double --socket PATH [OPTIONS]

Starts N containers named c00001, c00002, ... that each write log lines
'<name> <seq> <stream> xxxx...' at a steady rate, prints 'ready <socket>' on
stdout, and serves until SIGTERM, SIGINT or end of stdin. On exit it prints
one JSON line of statistics.

OPTIONS:
    --socket PATH          where to listen (required; a stale file is removed)
    --containers N         containers to start [default: 0]
    --rate R               lines per second per container [default: 1]
    --line-len BYTES       pad each line to this length [default: 100]
    --stderr-every N       every Nth line goes to stderr, 0 = never [default: 0]
    --tty-every K          every Kth container is a TTY container, 0 = none [default: 0]
    --max-lines N          each container stops writing after N lines
    --label K=V            label every container (repeatable)
    --retain N             messages kept per container, older ones dropped like
                           a rotated log [default: 4096]
    --api X.Y              the daemon's API version [default: 1.41]
    --api-min X.Y          the oldest accepted API version [default: 1.12]
    --since-mode MODE      filter-all (dockerd 20.10) or stop-after-first (24.0+)
                           [default: filter-all]
    --stats-every SECS     also print a JSON statistics line every SECS seconds
    --ignore-stdin         do not stop at end of stdin (needed when started in
                           the background of a script, where stdin is /dev/null)
    -h, --help             this text

The open-files limit is raised to its hard limit at start: every client
connection costs one descriptor.
";

struct Args {
    socket: String,
    containers: usize,
    rate: f64,
    line_len: usize,
    stderr_every: u32,
    tty_every: usize,
    max_lines: Option<u64>,
    labels: Vec<(String, String)>,
    retain: usize,
    api: (u16, u16),
    api_min: (u16, u16),
    since_mode: SinceMode,
    stats_every: Option<Duration>,
    ignore_stdin: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        socket: String::new(),
        containers: 0,
        rate: 1.0,
        line_len: 100,
        stderr_every: 0,
        tty_every: 0,
        max_lines: None,
        labels: Vec::new(),
        retain: 4096,
        api: (1, 41),
        api_min: (1, 12),
        since_mode: SinceMode::FilterAll,
        stats_every: None,
        ignore_stdin: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--socket" => a.socket = value()?,
            "--containers" => a.containers = num(&flag, &value()?)?,
            "--rate" => a.rate = num(&flag, &value()?)?,
            "--line-len" => a.line_len = num(&flag, &value()?)?,
            "--stderr-every" => a.stderr_every = num(&flag, &value()?)?,
            "--tty-every" => a.tty_every = num(&flag, &value()?)?,
            "--max-lines" => a.max_lines = Some(num(&flag, &value()?)?),
            "--retain" => a.retain = num(&flag, &value()?)?,
            "--label" => {
                let v = value()?;
                let (k, val) = v.split_once('=').unwrap_or((v.as_str(), ""));
                a.labels.push((k.to_owned(), val.to_owned()));
            }
            "--api" => a.api = version(&value()?)?,
            "--api-min" => a.api_min = version(&value()?)?,
            "--since-mode" => {
                a.since_mode = match value()?.as_str() {
                    "filter-all" => SinceMode::FilterAll,
                    "stop-after-first" => SinceMode::StopAfterFirst,
                    other => return Err(format!("unknown --since-mode {other:?}")),
                }
            }
            "--stats-every" => {
                let secs: f64 = num(&flag, &value()?)?;
                if !(secs > 0.0 && secs.is_finite()) {
                    return Err("--stats-every must be positive".to_owned());
                }
                a.stats_every = Some(Duration::from_secs_f64(secs));
            }
            "--ignore-stdin" => a.ignore_stdin = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if a.socket.is_empty() {
        return Err("--socket is required (see --help)".to_owned());
    }
    Ok(a)
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

fn version(v: &str) -> Result<(u16, u16), String> {
    let (a, b) = v.split_once('.').ok_or_else(|| format!("API version {v:?} is not X.Y"))?;
    Ok((num("--api", a)?, num("--api", b)?))
}

// Signals without a libc crate: the handler writes a byte to a socket the
// main thread blocks on (write(2) is async-signal-safe).
extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
}
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_sig: i32) {
    let fd = SIGNAL_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: one byte from a static buffer to a descriptor we own.
        unsafe {
            write(fd, b"s".as_ptr(), 1);
        }
    }
}

fn stats_json(s: &Stats, d: &Double, started: Instant) -> String {
    serde_json::json!({
        "elapsed_s": started.elapsed().as_secs_f64(),
        "server_cpu_s": d.server_cpu_time().map(|t| t.as_secs_f64()),
        "connections_open": s.connections_open,
        "log_streams_open": s.log_streams_open,
        "events_streams_open": s.events_streams_open,
        "requests_total": s.requests_total,
        "non_get_requests": s.non_get_requests,
        "logs_requests_total": s.logs_requests_total,
        "logs_requests_with_tail": s.logs_requests_with_tail,
        "logs_requests_since_only": s.logs_requests_since_only,
        "messages_sent": s.messages_sent,
        "bytes_sent": s.bytes_sent,
    })
    .to_string()
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("docker-double: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = docker_double::raise_fd_limit(u64::MAX) {
        eprintln!("docker-double: raising the open-files limit: {e}");
    }
    let (wait_rx, wait_tx) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("docker-double: socketpair: {e}");
            return ExitCode::FAILURE;
        }
    };
    SIGNAL_FD.store(wait_tx.as_raw_fd(), Ordering::Relaxed);
    // SAFETY: installing a handler that only does an async-signal-safe write.
    unsafe {
        signal(SIGINT, on_signal as extern "C" fn(i32) as usize);
        signal(SIGTERM, on_signal as extern "C" fn(i32) as usize);
    }

    let mut cfg = Config::new(&args.socket);
    cfg.api_max = args.api;
    cfg.api_min = args.api_min;
    cfg.since_mode = args.since_mode;
    cfg.retain_messages = args.retain;
    let double = match Double::start(cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("docker-double: listening on {}: {e}", args.socket);
            return ExitCode::FAILURE;
        }
    };
    for i in 1..=args.containers {
        let mut spec = ContainerSpec::new(format!("c{i:05}"))
            .tty(args.tty_every > 0 && i % args.tty_every == 0)
            .writer(Writer {
                lines_per_sec: args.rate,
                stderr_every: args.stderr_every,
                line_len: args.line_len,
                max_lines: args.max_lines,
            });
        for (k, v) in &args.labels {
            spec = spec.label(k, v);
        }
        double.create_and_start(spec);
    }
    let started = Instant::now();
    println!("ready {}", args.socket);
    let _ = io::stdout().flush();

    if !args.ignore_stdin {
        match wait_tx.try_clone() {
            Ok(mut tx) => {
                std::thread::spawn(move || {
                    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
                    let _ = tx.write_all(b"e");
                });
            }
            Err(e) => eprintln!("docker-double: watching stdin: {e}"),
        }
    }
    let mut rx = wait_rx;
    let _ = rx.set_read_timeout(args.stats_every);
    loop {
        match rx.read(&mut [0u8; 1]) {
            Ok(_) => break,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                println!("{}", stats_json(&double.stats(), &double, started));
                let _ = io::stdout().flush();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("docker-double: waiting: {e}");
                break;
            }
        }
    }
    println!("{}", stats_json(&double.stats(), &double, started));
    let _ = io::stdout().flush();
    drop(double);
    ExitCode::SUCCESS
}
