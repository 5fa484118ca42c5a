//! `/etc/resolv.conf` (resolv.conf(5)): which servers to ask, how to
//! complete short names, how long to wait.
//!
//! Read the way glibc reads it, defaults included: no `nameserver` line
//! means `127.0.0.1`, `timeout` 5 s, `attempts` 2, `ndots` 1, at most 3
//! servers (more are ignored), the last `search` or `domain` line wins, and
//! a line that cannot be used is skipped rather than failing the file
//! (it is listed in [`ResolvConf::ignored`] so that an operator can be
//! told). `options` as in glibc: `ndots:N` (at most 15), `timeout:N` (1 to
//! 30 s), `attempts:N` (1 to 5), `rotate`, `use-vc` (TCP only); other
//! options are accepted and have no effect. The same options can come from
//! the `RES_OPTIONS` environment variable through [`ResolvConf::apply_options`].
//!
//! Two differences from glibc: a `nameserver` may carry a port
//! (`10.0.0.2:5353`, `[fd00::2]:5353`; glibc ignores such lines), and
//! without a `search` or `domain` line no domain is taken from the host
//! name (there is no I/O here to learn it).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use super::message::Name;

/// Servers used (glibc's `MAXNS`).
pub const MAX_NAMESERVERS: usize = 3;
/// Search domains used (glibc's historical `MAXDNSRCH`): each is one more
/// round of queries for a short name that does not exist.
pub const MAX_SEARCH: usize = 6;
pub const MAX_NDOTS: u8 = 15;
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_ATTEMPTS: u8 = 5;
/// Bytes of the file read; the rest is ignored.
pub const MAX_FILE: usize = 64 * 1024;
/// Skipped lines remembered in [`ResolvConf::ignored`].
pub const MAX_IGNORED: usize = 16;

pub const DNS_PORT: u16 = 53;

/// A line (1-based) of the file that was not used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// 0 for `RES_OPTIONS`.
    pub line: usize,
    pub reason: IgnoredReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoredReason {
    /// More than [`MAX_NAMESERVERS`] servers.
    ExtraNameserver(String),
    BadNameserver(String),
    BadSearchDomain(String),
    /// More than [`MAX_SEARCH`] search domains.
    ExtraSearchDomain(String),
    BadOption(String),
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str("RES_OPTIONS: ")?;
        } else {
            write!(f, "line {}: ", self.line)?;
        }
        match &self.reason {
            IgnoredReason::ExtraNameserver(s) => {
                write!(f, "nameserver {s:?} ignored: only the first {MAX_NAMESERVERS} are used")
            }
            IgnoredReason::BadNameserver(s) => write!(f, "nameserver {s:?} is not an IP address"),
            IgnoredReason::BadSearchDomain(s) => write!(f, "search domain {s:?} is not a valid name"),
            IgnoredReason::ExtraSearchDomain(s) => {
                write!(f, "search domain {s:?} ignored: only the first {MAX_SEARCH} are used")
            }
            IgnoredReason::BadOption(s) => write!(f, "option {s:?} has a value that is not a number"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// 1 to [`MAX_NAMESERVERS`] servers.
    pub nameservers: Vec<SocketAddr>,
    /// Domains appended to a name with fewer than `ndots` dots.
    pub search: Vec<Name>,
    pub ndots: u8,
    /// Wait for one answer from one server.
    pub timeout: Duration,
    /// Rounds over all the servers.
    pub attempts: u8,
    /// Start each lookup at a different server.
    pub rotate: bool,
    /// Ask over TCP from the start.
    pub use_tcp: bool,
    pub ignored: Vec<Ignored>,
}

impl Default for ResolvConf {
    fn default() -> Self {
        Self {
            nameservers: vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), DNS_PORT)],
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
            rotate: false,
            use_tcp: false,
            ignored: Vec::new(),
        }
    }
}

impl ResolvConf {
    /// The file's contents (an absent file is `ResolvConf::default()`).
    pub fn parse(bytes: &[u8]) -> Self {
        let mut conf = Self { nameservers: Vec::new(), ..Self::default() };
        let bytes = &bytes[..bytes.len().min(MAX_FILE)];
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = String::from_utf8_lossy(line);
            // glibc: comments start a line; a trailing one is harmless too.
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut fields = line.split_ascii_whitespace();
            let Some(keyword) = fields.next() else { continue };
            let n = i + 1;
            match keyword {
                "nameserver" => {
                    let Some(text) = fields.next() else { continue };
                    match parse_nameserver(text) {
                        Some(_) if conf.nameservers.len() == MAX_NAMESERVERS => {
                            conf.note(n, IgnoredReason::ExtraNameserver(text.into()))
                        }
                        Some(addr) => conf.nameservers.push(addr),
                        None => conf.note(n, IgnoredReason::BadNameserver(text.into())),
                    }
                }
                "domain" => {
                    conf.search.clear();
                    conf.add_search(n, fields.next());
                }
                "search" => {
                    conf.search.clear();
                    for d in fields {
                        conf.add_search(n, Some(d));
                    }
                }
                "options" => conf.options(n, fields),
                _ => {}
            }
        }
        if conf.nameservers.is_empty() {
            conf.nameservers = Self::default().nameservers;
        }
        conf
    }

    /// Options from elsewhere than the file (`RES_OPTIONS`), over the
    /// file's.
    pub fn apply_options(&mut self, text: &str) {
        self.options(0, text.split_ascii_whitespace());
    }

    fn options<'a>(&mut self, line: usize, fields: impl Iterator<Item = &'a str>) {
        for opt in fields {
            let (key, value) = match opt.split_once(':') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            let number = || value.and_then(|v| v.parse::<u32>().ok());
            match key {
                "ndots" | "timeout" | "attempts" => {
                    let Some(v) = number() else {
                        self.note(line, IgnoredReason::BadOption(opt.into()));
                        continue;
                    };
                    match key {
                        "ndots" => self.ndots = v.min(u32::from(MAX_NDOTS)) as u8,
                        "timeout" => {
                            self.timeout =
                                Duration::from_secs(u64::from(v)).clamp(Duration::from_secs(1), MAX_TIMEOUT)
                        }
                        _ => self.attempts = v.clamp(1, u32::from(MAX_ATTEMPTS)) as u8,
                    }
                }
                "rotate" => self.rotate = true,
                "use-vc" => self.use_tcp = true,
                _ => {}
            }
        }
    }

    fn add_search(&mut self, line: usize, domain: Option<&str>) {
        let Some(d) = domain else { return };
        if d == "." {
            return;
        }
        match Name::from_text(d) {
            Ok(_) if self.search.len() == MAX_SEARCH => {
                self.note(line, IgnoredReason::ExtraSearchDomain(d.into()))
            }
            Ok(name) => {
                if !self.search.contains(&name) {
                    self.search.push(name)
                }
            }
            Err(_) => self.note(line, IgnoredReason::BadSearchDomain(d.into())),
        }
    }

    fn note(&mut self, line: usize, reason: IgnoredReason) {
        if self.ignored.len() < MAX_IGNORED {
            self.ignored.push(Ignored { line, reason });
        }
    }
}

/// `1.2.3.4`, `fd00::1`, `fe80::1%2` (numeric zone only: a zone name needs
/// an interface lookup), `1.2.3.4:5353`, `[fd00::1]:5353`.
fn parse_nameserver(text: &str) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return (sa.port() != 0).then_some(sa);
    }
    let (ip, zone) = text.split_once('%')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    Some(SocketAddrV6::new(ip, DNS_PORT, 0, zone.parse().ok()?).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn names(v: &[&str]) -> Vec<Name> {
        v.iter().map(|s| Name::from_text(s).unwrap()).collect()
    }

    #[test]
    fn empty_or_absent_file_gives_glibc_defaults() {
        for text in ["", "\n\n# nothing\n", "nameserver\n", "nameserver not-an-ip\n"] {
            let c = ResolvConf::parse(text.as_bytes());
            assert_eq!(c.nameservers, [sa("127.0.0.1:53")], "{text:?}");
            assert_eq!(c.ndots, 1);
            assert_eq!(c.timeout, Duration::from_secs(5));
            assert_eq!(c.attempts, 2);
            assert!(!c.rotate && !c.use_tcp && c.search.is_empty());
        }
        assert_eq!(ResolvConf::parse(b""), ResolvConf::default());
    }

    #[test]
    fn a_typical_file() {
        let c = ResolvConf::parse(
            b"# Generated by NetworkManager\n\
              search corp.example lab.corp.example.\n\
              nameserver 10.0.0.2\n\
              nameserver\tfd00::53 # v6\n\
              nameserver 10.0.0.3\n\
              nameserver 10.0.0.4\n\
              ; comment\n\
              options edns0 trust-ad ndots:2 timeout:3 attempts:4 rotate\n",
        );
        assert_eq!(c.nameservers, [sa("10.0.0.2:53"), sa("[fd00::53]:53"), sa("10.0.0.3:53")]);
        assert_eq!(c.search, names(&["corp.example", "lab.corp.example"]));
        assert_eq!((c.ndots, c.timeout, c.attempts, c.rotate), (2, Duration::from_secs(3), 4, true));
        assert_eq!(
            c.ignored,
            [Ignored { line: 6, reason: IgnoredReason::ExtraNameserver("10.0.0.4".into()) }]
        );
        assert_eq!(
            c.ignored[0].to_string(),
            "line 6: nameserver \"10.0.0.4\" ignored: only the first 3 are used"
        );
    }

    #[test]
    fn nameserver_forms() {
        let c = ResolvConf::parse(b"nameserver 127.0.0.53:5353\nnameserver [::1]:54\nnameserver fe80::1%2\n");
        assert_eq!(c.nameservers[0], sa("127.0.0.53:5353"));
        assert_eq!(c.nameservers[1], sa("[::1]:54"));
        assert_eq!(c.nameservers[2], sa("[fe80::1%2]:53"));
        let c = ResolvConf::parse(b"nameserver fe80::1%eth0\nnameserver 1.2.3.4:0\nnameserver 1.2.3\n");
        assert_eq!(c.nameservers, [sa("127.0.0.1:53")]);
        assert_eq!(c.ignored.len(), 3);
        assert!(c.ignored.iter().all(|i| matches!(i.reason, IgnoredReason::BadNameserver(_))));
    }

    #[test]
    fn last_search_or_domain_wins() {
        let c = ResolvConf::parse(b"search a.example b.example\ndomain c.example\n");
        assert_eq!(c.search, names(&["c.example"]));
        let c = ResolvConf::parse(b"domain c.example\nsearch a.example b.example a.example\n");
        assert_eq!(c.search, names(&["a.example", "b.example"]));
        let c = ResolvConf::parse(b"search .\n");
        assert!(c.search.is_empty());
        let c = ResolvConf::parse(b"search ok.example bad..example x1 x2 x3 x4 x5 x6\n");
        assert_eq!(c.search, names(&["ok.example", "x1", "x2", "x3", "x4", "x5"]));
        assert_eq!(
            c.ignored.iter().map(|i| i.reason.clone()).collect::<Vec<_>>(),
            [
                IgnoredReason::BadSearchDomain("bad..example".into()),
                IgnoredReason::ExtraSearchDomain("x6".into())
            ]
        );
    }

    #[test]
    fn options_are_clamped_like_glibc() {
        let c = ResolvConf::parse(b"options ndots:99 timeout:0 attempts:0 use-vc\n");
        assert_eq!((c.ndots, c.timeout, c.attempts, c.use_tcp), (15, Duration::from_secs(1), 1, true));
        let c = ResolvConf::parse(b"options ndots:0 timeout:999 attempts:99\n");
        assert_eq!((c.ndots, c.timeout, c.attempts), (0, MAX_TIMEOUT, MAX_ATTEMPTS));
        let c = ResolvConf::parse(b"options ndots:x timeout: attempts:-1 ndots\n");
        assert_eq!((c.ndots, c.timeout, c.attempts), (1, Duration::from_secs(5), 2));
        assert_eq!(c.ignored.len(), 4);
        // Keywords are whole words, case and all.
        let c = ResolvConf::parse(b"nameservers 10.0.0.9\nNAMESERVER 10.0.0.9\noptions:ndots:4\n");
        assert_eq!((c.nameservers[0], c.ndots), (sa("127.0.0.1:53"), 1));
    }

    #[test]
    fn res_options_override_the_file() {
        let mut c = ResolvConf::parse(b"options ndots:3 timeout:2\n");
        c.apply_options("ndots:1 rotate attempts:nope");
        assert_eq!((c.ndots, c.timeout, c.rotate), (1, Duration::from_secs(2), true));
        assert_eq!(
            c.ignored[0].to_string(),
            "RES_OPTIONS: option \"attempts:nope\" has a value that is not a number"
        );
    }

    #[test]
    fn bounded() {
        let mut text = Vec::new();
        for _ in 0..10_000 {
            text.extend_from_slice(b"nameserver junk\n");
        }
        text.extend_from_slice(b"nameserver 10.9.9.9\n");
        let c = ResolvConf::parse(&text);
        assert_eq!(c.ignored.len(), MAX_IGNORED);
        assert_eq!(c.nameservers, [sa("127.0.0.1:53")], "lines past MAX_FILE are not read");
    }
}
