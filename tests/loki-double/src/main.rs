//! `loki-double`: the Loki push API double as a process, for benchmarks and
//! manual runs. See `--help`.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use loki_double::{Auth, Config, Double, TlsConfig};
use nix::sys::signal::{SigSet, Signal};

const HELP: &str = "\
loki-double: a strict fake of Grafana Loki's push API (POST /loki/api/v1/push)

USAGE:
    loki-double [--listen ADDR] [OPTIONS]

Prints 'ready ADDR' on stdout once listening, serves until SIGTERM, SIGINT or
end of stdin, then prints one JSON line of statistics.

OPTIONS:
    --listen ADDR          where to listen [default: 127.0.0.1:0]
    --tls-dir DIR          serve TLS; write ca.pem, server.pem, client.pem,
                           client-key.pem, other-ca.pem... into DIR
    --wrong-ca             with --tls-dir: serve a certificate from other-ca.pem
    --mtls                 with --tls-dir: require a client certificate from ca.pem
    --require-tenant       answer 401 'no org id' without X-Scope-OrgID
    --bearer TOKEN         require 'Authorization: Bearer TOKEN'
    --basic USER:PASSWORD  require basic auth
    --keep-entries         keep every entry in memory and drop duplicates (off:
                           count only, memory stays flat for long benchmarks)
    --max-line-size BYTES  Loki's max_line_size [default: 262144]
    --reject-old-hours H   Loki's reject_old_samples_max_age [default: 168]
    --stats-every SECS     also print a JSON statistics line every SECS seconds
    --ignore-stdin         do not stop at end of stdin (needed when started in
                           the background of a script, where stdin is /dev/null)
    -h, --help             this text
";

struct Args {
    cfg: Config,
    stats_every: Option<Duration>,
    ignore_stdin: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut cfg = Config { keep_entries: false, ..Config::default() };
    let (mut tls_dir, mut wrong_ca, mut mtls) = (None::<PathBuf>, false, false);
    let mut stats_every = None;
    let mut ignore_stdin = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--listen" => {
                let v = value()?;
                cfg.listen =
                    v.parse::<SocketAddr>().map_err(|_| format!("--listen: {v:?} is not IP:PORT"))?;
            }
            "--tls-dir" => tls_dir = Some(PathBuf::from(value()?)),
            "--wrong-ca" => wrong_ca = true,
            "--mtls" => mtls = true,
            "--require-tenant" => cfg.require_tenant = true,
            "--bearer" => cfg.auth = Some(Auth::Bearer(value()?)),
            "--basic" => {
                let v = value()?;
                let (u, p) = v.split_once(':').ok_or("--basic needs USER:PASSWORD")?;
                cfg.auth = Some(Auth::Basic { user: u.to_owned(), password: p.to_owned() });
            }
            "--keep-entries" => cfg.keep_entries = true,
            "--max-line-size" => cfg.limits.max_line_size = num(&flag, &value()?)?,
            "--reject-old-hours" => {
                let h: f64 = num(&flag, &value()?)?;
                cfg.limits.reject_old_samples_max_age = Some(Duration::from_secs_f64(h * 3600.0));
            }
            "--stats-every" => {
                let secs: f64 = num(&flag, &value()?)?;
                if !(secs > 0.0 && secs.is_finite()) {
                    return Err("--stats-every must be positive".to_owned());
                }
                stats_every = Some(Duration::from_secs_f64(secs));
            }
            "--ignore-stdin" => ignore_stdin = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if (wrong_ca || mtls) && tls_dir.is_none() {
        return Err("--wrong-ca and --mtls need --tls-dir".to_owned());
    }
    if let Some(dir) = tls_dir {
        cfg.tls = Some(TlsConfig { dir: Some(dir), wrong_ca, require_client_cert: mtls });
    }
    Ok(Args { cfg, stats_every, ignore_stdin })
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

fn line(d: &Double, started: Instant) -> String {
    let s = d.stats().to_json();
    // Splice the elapsed time into the object.
    format!("{{\"elapsed_s\":{:.3},{}", started.elapsed().as_secs_f64(), &s[1..])
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loki-double: {e}");
            return ExitCode::from(2);
        }
    };
    // Block the stop signals before any thread starts (they inherit the
    // mask), then take them synchronously: no handler, no unsafe.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    if let Err(e) = signals.thread_block() {
        eprintln!("loki-double: blocking signals: {e}");
        return ExitCode::FAILURE;
    }
    let listen = args.cfg.listen;
    let double = match Double::start(args.cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("loki-double: listening on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (tx, rx) = mpsc::channel::<()>();
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = signals.wait();
            let _ = tx.send(());
        });
    }
    if !args.ignore_stdin {
        std::thread::spawn(move || {
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            let _ = tx.send(());
        });
    }
    let started = Instant::now();
    println!("ready {}", double.addr());
    let _ = io::stdout().flush();
    loop {
        let r = match args.stats_every {
            Some(every) => rx.recv_timeout(every),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match r {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                println!("{}", line(&double, started));
                let _ = io::stdout().flush();
            }
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    println!("{}", line(&double, started));
    let _ = io::stdout().flush();
    drop(double);
    ExitCode::SUCCESS
}
