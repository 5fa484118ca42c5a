//! Before the loop: check that Docker can be reached and say plainly what
//! to do if not. These checks block (with timeouts); the loop never does.

use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::agent::event_loop::Agent;
use crate::agent::exchange::{Exchange, Response};
use crate::agent::sock::Endpoint;
use crate::cli::{AgentArgs, DockerHost};
use crate::docker::request::{self, negotiate, Api};

/// Check Docker, set up, and run until SIGTERM/SIGINT.
pub fn run(args: &AgentArgs) -> anyhow::Result<()> {
    // First, before anything holds an fd: the budget is derived from it.
    let nofile = crate::agent::budget::raise_nofile_limit().context("cannot read the open-files limit")?;
    let endpoint = resolve(&args.docker_host)?;
    let api = check_docker(&args.docker_host, &endpoint, args.connect_timeout.max(args.api_timeout))?;
    let mut agent = Agent::new(args, endpoint, api, nofile)?;
    agent.run()
}

fn resolve(host: &DockerHost) -> anyhow::Result<Endpoint> {
    match host {
        DockerHost::Unix(p) => Ok(Endpoint::Unix(p.clone())),
        DockerHost::Tcp(a) => {
            let addr = a
                .to_socket_addrs()
                .map_err(|e| anyhow!("cannot resolve Docker host tcp://{a}: {e}"))?
                .next()
                .ok_or_else(|| anyhow!("Docker host tcp://{a} resolves to no address"))?;
            Ok(Endpoint::Tcp(addr))
        }
    }
}

/// `GET /_ping`; the version to speak from its `Api-Version`.
fn check_docker(host: &DockerHost, ep: &Endpoint, timeout: Duration) -> anyhow::Result<Api> {
    let reach = |e: io::Error| -> anyhow::Error {
        let hint = match e.kind() {
            io::ErrorKind::NotFound => "no such socket; is dockerd running? set --docker-host or DOCKER_HOST",
            io::ErrorKind::PermissionDenied => {
                "permission denied; run as root or add the user to the docker group"
            }
            io::ErrorKind::ConnectionRefused => "connection refused; is dockerd running and listening there?",
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                "no answer in time; is dockerd overloaded or hung?"
            }
            _ => "check --docker-host",
        };
        anyhow!("cannot reach Docker at {host}: {e}; {hint}")
    };
    let req = request::get(Api::ping()).context("cannot build the ping request")?;
    let resp = match ep {
        Endpoint::Unix(p) => {
            let mut s = UnixStream::connect(p).map_err(reach)?;
            s.set_read_timeout(Some(timeout)).map_err(reach)?;
            s.set_write_timeout(Some(timeout)).map_err(reach)?;
            s.write_all(&req).map_err(reach)?;
            read_response_blocking(&mut s)
        }
        Endpoint::Tcp(a) => {
            let mut s = std::net::TcpStream::connect_timeout(a, timeout).map_err(reach)?;
            s.set_read_timeout(Some(timeout)).map_err(reach)?;
            s.write_all(&req).map_err(reach)?;
            read_response_blocking(&mut s)
        }
    };
    match resp {
        Ok(r) => Ok(Api { version: negotiate(r.head.api_version) }),
        Err(e) => bail!("{host} does not answer like Docker: {e}; check --docker-host"),
    }
}

/// Read a whole response from a blocking std stream (startup checks only).
fn read_response_blocking(s: &mut impl Read) -> Result<Response, String> {
    let mut ex = Exchange::default();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return ex.finish().map_err(|e| e.to_string());
        }
        if let Some(r) = ex.push(&buf[..n]).map_err(|e| e.to_string())? {
            return Ok(r);
        }
    }
}
