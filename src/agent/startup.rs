//! Before the loop: check that Docker can be reached and say plainly what
//! to do if not. These checks block (with timeouts); the loop never does.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use crate::agent::event_loop::Agent;
use crate::agent::exchange::{Exchange, Response};
use crate::agent::sock::Endpoint;
use crate::cli::{AgentArgs, DockerHost};
use crate::docker::request::{self, negotiate, Api};

/// Check Docker, set up, and run until SIGTERM/SIGINT.
pub fn run(args: &AgentArgs) -> anyhow::Result<()> {
    // First, before anything holds an fd: the budget is derived from it.
    let nofile = crate::agent::budget::raise_nofile_limit().context("cannot read the open-files limit")?;
    // The sink's settings, secrets and TLS files are checked before Docker
    // is asked anything: a typo is reported as what it is.
    let sink = crate::agent::sink::SinkSetup::from_args(&args.loki)?;
    let endpoint = resolve(&args.docker_host)?;
    let api = check_docker(&args.docker_host, &endpoint, args.connect_timeout, args.api_timeout)?;
    let mut agent = Agent::new(args, endpoint, api, nofile, sink)?;
    agent.run()
}

fn resolve(host: &DockerHost) -> anyhow::Result<Endpoint> {
    match host {
        DockerHost::Unix(p) => Ok(Endpoint::Unix(p.clone())),
        // Before the loop: blocking is fine, but bounded, and without NSS.
        DockerHost::Tcp(a) => {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let addr = crate::dns::blocking::socket_addr(a, deadline)
                .map_err(|e| anyhow!("cannot resolve Docker host tcp://{a}: {e}"))?;
            Ok(Endpoint::Tcp(addr))
        }
    }
}

/// Why the start-up ping failed.
enum CheckError {
    Io(io::Error),
    /// The deadline of the step passed.
    TimedOut,
    /// Something answered, but not like Docker.
    Protocol(String),
}

impl From<io::Error> for CheckError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            // What a blocking socket's SO_RCVTIMEO/SO_SNDTIMEO (or a unix
            // connect's) reports when it runs out.
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CheckError::TimedOut,
            _ => CheckError::Io(e),
        }
    }
}

/// `GET /_ping`; the version to speak from its `Api-Version`. Connecting
/// has `--connect-timeout`, the ping itself `--api-timeout` in all (one
/// deadline, not one per read: a daemon trickling its answer a byte at a
/// time must not stretch it), as in the loop.
fn check_docker(
    host: &DockerHost,
    ep: &Endpoint,
    connect_timeout: Duration,
    api_timeout: Duration,
) -> anyhow::Result<Api> {
    let fail = |e: CheckError, step: &str, flag: &str, within: Duration| -> anyhow::Error {
        let e = match e {
            CheckError::Io(e) => e,
            CheckError::TimedOut => {
                return anyhow!(
                    "cannot reach Docker at {host}: no answer in time ({step} not done within {flag} \
                     {within:?}); is dockerd overloaded or hung?"
                )
            }
            CheckError::Protocol(m) => {
                return anyhow!("{host} does not answer like Docker: {m}; check --docker-host")
            }
        };
        let hint = match e.kind() {
            io::ErrorKind::NotFound => "no such socket; is dockerd running? set --docker-host or DOCKER_HOST",
            io::ErrorKind::PermissionDenied => {
                "permission denied; run as root or add the user to the docker group"
            }
            io::ErrorKind::ConnectionRefused => "connection refused; is dockerd running and listening there?",
            _ => "check --docker-host",
        };
        anyhow!("cannot reach Docker at {host}: {e}; {hint}")
    };
    let connecting = |e| fail(e, "connecting", "--connect-timeout", connect_timeout);
    let pinging = |e| fail(e, "the ping", "--api-timeout", api_timeout);
    let req = request::get(Api::ping()).context("cannot build the ping request")?;
    let resp = match ep {
        Endpoint::Unix(p) => {
            let mut s = connect_unix(p, connect_timeout).map_err(|e| connecting(e.into()))?;
            let deadline = Instant::now() + api_timeout;
            exchange(&mut s, &req, deadline).map_err(pinging)?
        }
        Endpoint::Tcp(a) => {
            let mut s =
                std::net::TcpStream::connect_timeout(a, connect_timeout).map_err(|e| connecting(e.into()))?;
            let deadline = Instant::now() + api_timeout;
            exchange(&mut s, &req, deadline).map_err(pinging)?
        }
    };
    Ok(Api { version: negotiate(resp.head.api_version) })
}

/// A blocking unix connect that gives up after `timeout`: one to a daemon
/// that stopped accepting waits while its listen backlog is full, and the
/// kernel bounds that wait by the socket's send timeout.
pub(crate) fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    use nix::sys::socket::{
        connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, UnixAddr,
    };
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::SendTimeout, &timeval(timeout))?;
    connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(UnixStream::from(fd))
}

fn timeval(d: Duration) -> nix::sys::time::TimeVal {
    // 0 would mean "no timeout": at least a microsecond.
    let usec = (d.subsec_micros() as i64).max(i64::from(d.as_secs() == 0));
    nix::sys::time::TimeVal::new(d.as_secs() as _, usec as _)
}

/// A blocking std stream whose read and write timeouts can be set.
trait Blocking: Read + Write {
    fn set_timeouts(&self, t: Duration) -> io::Result<()>;
}

impl Blocking for UnixStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

impl Blocking for std::net::TcpStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

/// Send `req` and read the whole response, all before `deadline`: each
/// read or write may wait only for what is left of it.
fn exchange(s: &mut impl Blocking, req: &[u8], deadline: Instant) -> Result<Response, CheckError> {
    let left = || match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(CheckError::TimedOut),
    };
    let mut sent = 0;
    while sent < req.len() {
        s.set_timeouts(left()?)?;
        match s.write(&req[sent..]) {
            Ok(0) => return Err(CheckError::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut ex = Exchange::default();
    let mut buf = [0u8; 4096];
    loop {
        s.set_timeouts(left()?)?;
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return ex.finish().map_err(|e| CheckError::Protocol(e.to_string()));
        }
        if let Some(r) = ex.push(&buf[..n]).map_err(|e| CheckError::Protocol(e.to_string()))? {
            return Ok(r);
        }
    }
}
