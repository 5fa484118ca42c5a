//! The agent's command line: flags, their defaults, and the small parsers
//! for durations, label selectors and name patterns.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::docker::lines::DEFAULT_MAX_LINE;

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Where dockerd listens: unix:///path/to/docker.sock or tcp://host:port
    /// (plain TCP; TLS is not supported). Empty means the default, as for
    /// the docker CLI.
    #[arg(
        long,
        env = "DOCKER_HOST",
        value_name = "URL",
        default_value = DEFAULT_DOCKER_HOST,
        value_parser = parse_docker_host
    )]
    pub docker_host: DockerHost,

    /// Where to write the JSON lines: `-` for standard output, or a file that
    /// is appended to (and reopened on SIGHUP, for logrotate).
    #[arg(long, value_name = "PATH", default_value = "-")]
    pub output: String,

    /// Directory for checkpoints (where each container's stream resumes).
    /// Created if missing. Keep it on persistent storage: without it, a
    /// restarted agent cannot resume without loss or duplicates.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/log-capturer")]
    pub state_dir: PathBuf,

    /// Close and reopen each log stream after it has been open this long
    /// (with up to 10% random jitter so streams do not reopen together).
    /// A reopen resumes exactly where the stream was: nothing lost or repeated.
    /// From 100ms to 7d; each reopen costs dockerd a request.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30m",
        value_parser = parse_reopen_period,
        allow_hyphen_values = true
    )]
    pub rotate_after: Duration,

    /// Reopen a log stream that has been silent this long. dockerd sends
    /// nothing on a quiet stream, so this is what notices a stream that died
    /// without closing. From 100ms to 7d.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10m",
        value_parser = parse_reopen_period,
        allow_hyphen_values = true
    )]
    pub idle_timeout: Duration,

    /// After a turn of the loop that only read a little from log streams,
    /// wait until this long after its start before looking again: the
    /// lines of many containers arriving milliseconds apart are then read
    /// in one turn instead of one turn each (at real rates the agent's CPU
    /// goes to turns and reads, not to lines: 50ms cut it by 40 % at 65
    /// lines/s per container). Not after a turn that read 64 KiB or more
    /// from a stream, nor at shutdown. Everything else the loop does
    /// (reopening streams, sink answers, scrapes) waits up to this much
    /// too, which is why it is off by default: with 30ms, streams reopened
    /// every 2 s rotated 2.3 % less often. 0s: no wait. From 0s to 1s.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "0s",
        value_parser = parse_read_coalesce,
        allow_hyphen_values = true
    )]
    pub read_coalesce: Duration,

    /// Serve /metrics (Prometheus) and /healthz on this address: an IP
    /// address and port (0.0.0.0:9640 for every interface, [::1]:9640), or
    /// localhost:PORT for 127.0.0.1. Host names are not looked up.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9640", value_parser = parse_metrics_addr)]
    pub metrics_addr: SocketAddr,

    /// Cut lines longer than this many bytes; the record is marked
    /// `"truncated":true` and the rest of the line is dropped.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE, value_parser = parse_size)]
    pub max_line_bytes: usize,

    /// Follow only containers with this label (KEY, or KEY=VALUE). Repeat to
    /// require several (all must match).
    #[arg(long, value_name = "KEY[=VALUE]", value_parser = parse_label)]
    pub include_label: Vec<LabelSelector>,

    /// Do not follow containers with this label (KEY, or KEY=VALUE). Repeat
    /// for several (any one excludes).
    #[arg(long, value_name = "KEY[=VALUE]", value_parser = parse_label)]
    pub exclude_label: Vec<LabelSelector>,

    /// Follow only containers whose name matches: a glob (`web-*`, `db?`)
    /// matched against the whole name, or, if it contains any of ^$()[]{}|+\,
    /// a regular expression (unanchored). Repeat to allow several (any one).
    #[arg(long, value_name = "PATTERN", value_parser = parse_name_pattern)]
    pub include_name: Vec<NamePattern>,

    /// On the very first run (empty state directory), ship each running
    /// container's whole stored log instead of starting from now. Containers
    /// that start later are always followed from their start.
    #[arg(long)]
    pub from_beginning: bool,

    /// Give up on a connection to Docker that is not established after this.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5s",
        value_parser = parse_timeout,
        allow_hyphen_values = true
    )]
    pub connect_timeout: Duration,

    /// Give up on a request whose response head has not arrived after this.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "15s",
        value_parser = parse_timeout,
        allow_hyphen_values = true
    )]
    pub head_timeout: Duration,

    /// Give up on an API call (ping, list, inspect) not complete after this.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        value_parser = parse_timeout,
        allow_hyphen_values = true
    )]
    pub api_timeout: Duration,

    /// Follow at most this many containers at once. Each followed container
    /// costs one file descriptor; by default the budget is what the
    /// open-files limit allows (the agent raises its soft limit to the hard
    /// one at start) minus a small reserve. Containers beyond the budget
    /// wait, oldest first, and are counted in
    /// `log_capturer_containers_unfollowed` until a slot frees.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: Option<u32>,

    /// Set SO_RCVBUF on log-stream sockets to this many bytes (the kernel
    /// doubles it and applies its own minimum). Default: the kernel's. A
    /// tuning knob for thousands of busy streams on a small host.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub stream_rcvbuf: Option<usize>,

    /// Check the loop's invariants after every turn (the sink is either
    /// pushing, connecting, resolving or waiting on a timer; every followed
    /// container has exactly one of a stream, an inspect, a retry timer or
    /// a place in the queue for room; the connections and their owners
    /// agree): a violation is counted in
    /// log_capturer_invariant_violations_total and said once a minute.
    /// Costs a walk over every container and connection per turn. Debug
    /// builds always check, and abort on a violation.
    #[arg(long)]
    pub check_invariants: bool,

    #[command(flatten)]
    pub loki: crate::sink::loki::config::LokiArgs,
}

/// Where dockerd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerHost {
    Unix(PathBuf),
    Tcp(String),
}

impl fmt::Display for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Where dockerd listens when `--docker-host` and `DOCKER_HOST` say nothing.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// A Docker host URL. Empty (or blank) means the default socket: clap hands
/// a set-but-empty `DOCKER_HOST` to this parser as `""`, and the docker CLI
/// treats `DOCKER_HOST=` (and `-H ""`) as unset.
pub fn parse_docker_host(s: &str) -> Result<DockerHost, String> {
    if s.trim().is_empty() {
        return parse_docker_host(DEFAULT_DOCKER_HOST);
    }
    if let Some(path) = s.strip_prefix("unix://") {
        if path.is_empty() {
            return Err("unix:// needs a socket path, e.g. unix:///var/run/docker.sock".into());
        }
        return Ok(DockerHost::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = s.strip_prefix("tcp://") {
        let addr = addr.trim_end_matches('/');
        if !addr.contains(':') {
            return Err(format!("tcp://{addr} needs a port, e.g. tcp://{addr}:2375"));
        }
        return Ok(DockerHost::Tcp(addr.to_owned()));
    }
    if s.starts_with('/') {
        return Ok(DockerHost::Unix(PathBuf::from(s)));
    }
    Err(format!("`{s}` is not unix:///path or tcp://host:port (https and ssh are not supported)"))
}

/// `500ms`, `2s`, `5m`, `1h`, `1h30m`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration: use e.g. 500ms, 2s, 5m, 1h or 1m30s");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    // The duration flags take values starting with `-` (clap would call
    // `-5s` an unknown flag otherwise) so that this can say what is wrong.
    if let Some(rest) = s.strip_prefix('-') {
        if rest.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
            return Err(format!("`{s}`: durations cannot be negative"));
        }
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(n * scale).map_err(|_| bad())?;
    }
    Ok(total)
}

/// Shortest timeout accepted: the loop's deadlines have this resolution
/// (the timer wheel's tick), so a shorter one would not be what it says.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest timeout accepted: longer is a typo (and a deadline that far out
/// could overflow the clock), not a setting.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// A [`parse_duration`] from [`MIN_TIMEOUT`] to [`MAX_TIMEOUT`]: `0s` would
/// make every connection fail at once and blame Docker for it.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&d) {
        return Err(format!("`{s}`: a timeout must be from 10ms to 1h"));
    }
    Ok(d)
}

/// Shortest `--rotate-after` and `--idle-timeout`. Each reopen costs dockerd
/// a request and a read of the container's log file from the resume point;
/// at `0s` every stream is reopened as soon as it opens, hundreds of times a
/// second. 100ms is the fastest the tests drive it; production wants
/// minutes.
pub const MIN_REOPEN_PERIOD: Duration = Duration::from_millis(100);
/// Longest `--rotate-after` and `--idle-timeout`: a week covers a container
/// that logs once a day; longer is a typo (and a deadline that far out
/// could overflow the clock), not a setting.
pub const MAX_REOPEN_PERIOD: Duration = Duration::from_secs(7 * 86_400);

/// A [`parse_duration`] from [`MIN_REOPEN_PERIOD`] to [`MAX_REOPEN_PERIOD`]:
/// how often a stream may be reopened.
pub fn parse_reopen_period(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < MIN_REOPEN_PERIOD {
        return Err(format!(
            "`{s}` is too short: streams would be reopened more than 10 times a second each, and every \
             reopen is a request dockerd answers by reading the log file; use 100ms to 7d (minutes in \
             production)"
        ));
    }
    if d > MAX_REOPEN_PERIOD {
        return Err(format!("`{s}` is too long: use 100ms to 7d"));
    }
    Ok(d)
}

/// `--read-coalesce`: 0 to 1 s (longer only delays lines; the socket
/// buffers of a busy stream fill meanwhile).
pub fn parse_read_coalesce(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > Duration::from_secs(1) {
        return Err(format!("`{s}` is too long: use 0s (read at once, the default) to 1s"));
    }
    Ok(d)
}

/// The metrics listener's address: an IP literal and port, or
/// `localhost:PORT` for 127.0.0.1. Other host names are refused rather than
/// looked up: a listen address names an interface of this host, a name can
/// stand for several addresses (or none, later), and a static binary has no
/// NSS to ask.
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let examples = "e.g. 127.0.0.1:9640 (this host only), 0.0.0.0:9640 (every interface) or [::1]:9640";
    if let Ok(ip) = s.parse::<IpAddr>() {
        let with_port = SocketAddr::new(ip, 9640);
        return Err(format!("`{s}` needs a port, e.g. {with_port}"));
    }
    if s.parse::<u16>().is_ok() {
        return Err(format!("`{s}` needs an address before the port: 127.0.0.1:{s} or 0.0.0.0:{s}"));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("`{s}` is not an address and port: {examples}"));
    };
    let Ok(port) = port.parse::<u16>() else {
        return Err(format!("`{s}`: `{port}` is not a port number (0 to 65535)"));
    };
    if host.is_empty() {
        return Err(format!("`{s}` needs an address before the port: 127.0.0.1:{port} or 0.0.0.0:{port}"));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    Err(format!(
        "`{s}`: the metrics address must be an IP address (host names other than localhost are not \
         looked up): {examples}"
    ))
}

/// Why the metrics listener could not bind `addr`, and what to do about it.
pub fn metrics_listen_error(addr: SocketAddr, e: io::Error) -> anyhow::Error {
    let privileged_below = unprivileged_port_start();
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => {
            "another process listens there (another agent?); stop it or choose another --metrics-addr"
                .to_owned()
        }
        io::ErrorKind::PermissionDenied if addr.port() < privileged_below => format!(
            "ports below {privileged_below} need root or CAP_NET_BIND_SERVICE; choose a higher port in \
             --metrics-addr"
        ),
        io::ErrorKind::PermissionDenied => {
            "a security policy refused it (SELinux, AppArmor, seccomp, systemd's SocketBindDeny=); \
             choose another --metrics-addr or allow it"
                .to_owned()
        }
        io::ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this host; use 127.0.0.1, 0.0.0.0 or one of its addresses in \
             --metrics-addr",
            addr.ip()
        ),
        _ => "choose another --metrics-addr".to_owned(),
    };
    anyhow::anyhow!("cannot listen on {addr} for metrics: {e}; {hint}")
}

/// The lowest port an unprivileged process may bind (Linux's
/// `net.ipv4.ip_unprivileged_port_start`, 1024 unless changed).
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// A byte count: `1048576`, `64KiB`, `1MiB`, `1M` (powers of two).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("`{s}` is not a size: use e.g. 1048576, 64KiB or 1MiB");
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: usize = s[..digits].parse().map_err(|_| bad())?;
    let mult = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    let v = n.checked_mul(mult).ok_or_else(bad)?;
    if v == 0 {
        return Err(format!("`{s}`: the size must be at least 1 byte"));
    }
    Ok(v)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    pub key: String,
    pub value: Option<String>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        match (&self.value, labels.get(&self.key)) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(want), Some(have)) => want == have,
        }
    }
}

pub fn parse_label(s: &str) -> Result<LabelSelector, String> {
    let (key, value) = match s.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (s, None),
    };
    if key.is_empty() {
        return Err(format!("`{s}`: a label selector is KEY or KEY=VALUE"));
    }
    Ok(LabelSelector { key: key.to_owned(), value })
}

/// A container name pattern: glob or regular expression.
#[derive(Debug, Clone)]
pub struct NamePattern {
    pub source: String,
    re: regex::Regex,
}

impl NamePattern {
    pub fn matches(&self, name: &str) -> bool {
        self.re.is_match(name.trim_start_matches('/'))
    }
}

pub fn parse_name_pattern(s: &str) -> Result<NamePattern, String> {
    let is_regex = s.contains(['^', '$', '(', ')', '[', ']', '{', '}', '|', '+', '\\']);
    let pattern = if is_regex {
        s.to_owned()
    } else {
        let mut p = String::from("^");
        for c in s.chars() {
            match c {
                '*' => p.push_str(".*"),
                '?' => p.push('.'),
                c => p.push_str(&regex::escape(&c.to_string())),
            }
        }
        p.push('$');
        p
    };
    let re = regex::Regex::new(&pattern).map_err(|e| format!("`{s}` is not a valid pattern: {e}"))?;
    Ok(NamePattern { source: s.to_owned(), re })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        for bad in ["", "s", "5x", "m5", "-1s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn negative_durations_are_called_negative() {
        for bad in ["-5s", "-1", "-0.5s", " -1m"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("cannot be negative"), "{bad}: {err}");
        }
        // A flag where a value was expected is not a negative duration.
        assert!(parse_duration("--from-beginning").unwrap_err().contains("not a duration"));
        assert!(parse_timeout("-1s").unwrap_err().contains("cannot be negative"));
        assert!(parse_reopen_period("-5s").unwrap_err().contains("cannot be negative"));
    }

    #[test]
    fn reopen_periods() {
        assert_eq!(parse_reopen_period("100ms"), Ok(MIN_REOPEN_PERIOD));
        assert_eq!(parse_reopen_period("7d"), Ok(MAX_REOPEN_PERIOD));
        assert_eq!(parse_reopen_period("30m"), Ok(Duration::from_secs(1800)));
        for short in ["0s", "0", "0ms", "99ms", "0.05s"] {
            let err = parse_reopen_period(short).unwrap_err();
            assert!(err.contains("too short") && err.contains("100ms to 7d"), "{short}: {err}");
        }
        for long in ["7d1s", "8d", "99999999999999h"] {
            let err = parse_reopen_period(long).unwrap_err();
            assert!(err.contains("100ms to 7d"), "{long}: {err}");
        }
    }

    #[test]
    fn read_coalesce_periods() {
        assert_eq!(parse_read_coalesce("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_read_coalesce("30ms"), Ok(Duration::from_millis(30)));
        assert_eq!(parse_read_coalesce("1s"), Ok(Duration::from_secs(1)));
        let err = parse_read_coalesce("1001ms").unwrap_err();
        assert!(err.contains("too long") && err.contains("to 1s"), "{err}");
    }

    #[test]
    fn metrics_addresses() {
        let ok = |s: &str| parse_metrics_addr(s).unwrap_or_else(|e| panic!("{s}: {e}")).to_string();
        assert_eq!(ok("127.0.0.1:9640"), "127.0.0.1:9640");
        assert_eq!(ok("0.0.0.0:0"), "0.0.0.0:0");
        assert_eq!(ok("[::1]:9641"), "[::1]:9641");
        assert_eq!(ok("localhost:9641"), "127.0.0.1:9641");
        assert_eq!(ok("LocalHost:1"), "127.0.0.1:1");
        let cases = [
            ("example.com:9641", "must be an IP address"),
            ("metrics.local:80", "not looked up"),
            ("127.0.0.1", "needs a port, e.g. 127.0.0.1:9640"),
            ("::1", "needs a port, e.g. [::1]:9640"),
            ("9641", "127.0.0.1:9641 or 0.0.0.0:9641"),
            (":9641", "127.0.0.1:9641 or 0.0.0.0:9641"),
            ("localhost:http", "not a port number"),
            ("localhost:65536", "not a port number"),
            ("localhost", "not an address and port"),
            ("", "not an address and port"),
        ];
        for (bad, says) in cases {
            let err = parse_metrics_addr(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn metrics_listen_errors_say_what_to_do_per_cause() {
        use nix::libc::{EACCES, EADDRINUSE, EADDRNOTAVAIL, EINVAL};
        let low: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let high: SocketAddr = "192.0.2.1:9640".parse().unwrap();
        let say = |addr, errno| metrics_listen_error(addr, io::Error::from_raw_os_error(errno)).to_string();
        let cases = [
            (say(high, EADDRINUSE), "another process listens there"),
            (say(low, EACCES), "need root or CAP_NET_BIND_SERVICE"),
            (say(high, EACCES), "security policy"),
            (say(high, EADDRNOTAVAIL), "192.0.2.1 is not an address of this host"),
            (say(high, EINVAL), "choose another --metrics-addr"),
        ];
        for (err, says) in cases {
            assert!(err.contains(says) && err.contains("--metrics-addr"), "{err}");
            assert!(!err.contains("another agent running"), "{err}");
        }
    }

    /// The flags as clap parses them, through the value parsers above.
    fn parse_flags(flags: &[&str]) -> Result<AgentArgs, String> {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            agent: AgentArgs,
        }
        let argv = std::iter::once("log-capturer").chain(flags.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).map(|c| c.agent).map_err(|e| e.to_string())
    }

    #[test]
    fn duration_flags_take_negative_values_to_refuse_them() {
        for flag in
            ["--rotate-after", "--idle-timeout", "--connect-timeout", "--head-timeout", "--api-timeout"]
        {
            let err = parse_flags(&[flag, "-5s"]).unwrap_err();
            assert!(err.contains("durations cannot be negative") && err.contains(flag), "{flag}: {err}");
            assert!(!err.contains("unexpected argument"), "{flag}: {err}");
        }
        let ok = parse_flags(&["--rotate-after", "100ms", "--idle-timeout", "300ms"]).unwrap();
        assert_eq!(
            (ok.rotate_after, ok.idle_timeout),
            (Duration::from_millis(100), Duration::from_millis(300))
        );
        let err = parse_flags(&["--idle-timeout", "0s"]).unwrap_err();
        assert!(err.contains("--idle-timeout") && err.contains("too short"), "{err}");
        let ok = parse_flags(&["--metrics-addr", "localhost:9641"]).unwrap();
        assert_eq!(ok.metrics_addr, "127.0.0.1:9641".parse().unwrap());
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_timeout("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["0s", "0", "0ms", "9ms", "1h1s", "2d", "99999999999999h", "x"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
        assert!(parse_timeout("0s").unwrap_err().contains("from 10ms to 1h"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1T").is_err());
    }

    #[test]
    fn docker_hosts() {
        assert_eq!(
            parse_docker_host("unix:///var/run/docker.sock"),
            Ok(DockerHost::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(parse_docker_host("tcp://10.0.0.1:2375"), Ok(DockerHost::Tcp("10.0.0.1:2375".into())));
        assert!(parse_docker_host("tcp://host").unwrap_err().contains("needs a port"));
        assert!(parse_docker_host("ssh://me@host").is_err());
        // DOCKER_HOST= means unset, as for the docker CLI.
        assert_eq!(parse_docker_host(""), Ok(DockerHost::Unix("/var/run/docker.sock".into())));
        assert_eq!(parse_docker_host(" "), Ok(DockerHost::Unix("/var/run/docker.sock".into())));
    }

    #[test]
    fn labels_and_names() {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("app".to_string(), "web".to_string());
        assert!(parse_label("app").unwrap().matches(&labels));
        assert!(parse_label("app=web").unwrap().matches(&labels));
        assert!(!parse_label("app=db").unwrap().matches(&labels));
        assert!(!parse_label("tier").unwrap().matches(&labels));
        assert!(parse_label("=x").is_err());

        let glob = parse_name_pattern("web-*").unwrap();
        assert!(glob.matches("/web-1") && glob.matches("web-") && !glob.matches("my-web-1"));
        let dot = parse_name_pattern("a.b").unwrap();
        assert!(dot.matches("a.b") && !dot.matches("axb"));
        let re = parse_name_pattern("^(api|web)[0-9]+$").unwrap();
        assert!(re.matches("api12") && !re.matches("api"));
        assert!(parse_name_pattern("(").is_err());
    }
}
