//! Name lookups for the start-up paths that may block (`check`, the
//! `tcp://` Docker host before the loop starts): the same resolver as the
//! loop's, over blocking sockets, with one deadline. Never `getaddrinfo`:
//! a static binary has no NSS modules for it to load.

use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::hosts::Hosts;
use super::resolv_conf::ResolvConf;
use super::resolver::{Family, Lookup, Proto};

/// Environment variables naming other files than /etc/resolv.conf and
/// /etc/hosts (for tests, and for systems that keep them elsewhere).
pub const RESOLV_CONF_ENV: &str = "LOG_CAPTURER_RESOLV_CONF";
pub const HOSTS_ENV: &str = "LOG_CAPTURER_HOSTS";

/// resolv.conf and hosts as they are now (read for every lookup, as glibc
/// does: an edited file applies without a restart).
pub fn system_files() -> (ResolvConf, Hosts) {
    let conf_path = std::env::var_os(RESOLV_CONF_ENV).unwrap_or_else(|| "/etc/resolv.conf".into());
    let hosts_path = std::env::var_os(HOSTS_ENV).unwrap_or_else(|| "/etc/hosts".into());
    (
        ResolvConf::parse(&std::fs::read(conf_path).unwrap_or_default()),
        Hosts::parse(&std::fs::read(hosts_path).unwrap_or_default()),
    )
}

/// `host:port` (a name, an IPv4 address, or `[IPv6]`) to one address.
pub fn socket_addr(host_port: &str, deadline: Instant) -> Result<SocketAddr, String> {
    if let Ok(a) = host_port.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = host_port.rsplit_once(':').ok_or_else(|| format!("`{host_port}` has no port"))?;
    let port: u16 = port.parse().map_err(|_| format!("`{port}` is not a port"))?;
    Ok(SocketAddr::new(first_addr(host, deadline)?, port))
}

/// The first address of `name`, by the agent's resolver over blocking
/// sockets (a static binary has no NSS for `getaddrinfo`).
pub fn first_addr(name: &str, deadline: Instant) -> Result<IpAddr, String> {
    let conf_path = std::env::var_os(RESOLV_CONF_ENV).unwrap_or_else(|| "/etc/resolv.conf".into());
    let hosts_path = std::env::var_os(HOSTS_ENV).unwrap_or_else(|| "/etc/hosts".into());
    let conf = ResolvConf::parse(&std::fs::read(conf_path).unwrap_or_default());
    let hosts = Hosts::parse(&std::fs::read(hosts_path).unwrap_or_default());
    let now = Instant::now();
    let seed = u64::from(std::process::id()) ^ now.elapsed().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut lookup = Lookup::new(name, Family::Any, &conf, &hosts, seed, now);
    lookup.set_deadline(deadline.min(lookup.deadline()));
    let udp =
        UdpSocket::bind("[::]:0").or_else(|_| UdpSocket::bind("0.0.0.0:0")).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        lookup.handle_timeout(now);
        while let Some(t) = lookup.poll_transmit() {
            match t.proto {
                Proto::Udp => {
                    let _ = udp.send_to(&t.bytes, t.server);
                }
                Proto::Tcp => {
                    // Rare (a truncated answer): one blocking exchange.
                    let wait = lookup.deadline().saturating_duration_since(now).max(Duration::from_millis(1));
                    match TcpStream::connect_timeout(&t.server, wait) {
                        Ok(mut s) => {
                            let _ = s.set_read_timeout(Some(wait));
                            if s.write_all(&t.bytes).is_err() {
                                lookup.handle_tcp_closed(t.exchange, Instant::now());
                                continue;
                            }
                            loop {
                                match io::Read::read(&mut s, &mut buf) {
                                    Ok(0) | Err(_) => {
                                        lookup.handle_tcp_closed(t.exchange, Instant::now());
                                        break;
                                    }
                                    Ok(n) => {
                                        lookup.handle_tcp(t.exchange, &buf[..n], Instant::now());
                                        if !lookup.wants(t.exchange) {
                                            break;
                                        }
                                    }
                                }
                            }
                        }
                        Err(_) => lookup.handle_tcp_closed(t.exchange, Instant::now()),
                    }
                }
            }
        }
        if let Some(r) = lookup.poll_result() {
            return r.map(|r| r.addrs[0]).map_err(|e| e.to_string());
        }
        let Some(wake) = lookup.poll_timeout() else { continue };
        let wait = wake.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let _ = udp.set_read_timeout(Some(wait));
        if let Ok((n, from)) = udp.recv_from(&mut buf) {
            lookup.handle_udp(from, &buf[..n], Instant::now());
        }
    }
}
