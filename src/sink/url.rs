//! A sink's address: `http://` or `https://`, a host (a name, an IPv4
//! address or a bracketed IPv6 one), an optional port and a path. Parsed
//! here rather than by a URL crate because the agent needs exactly these
//! parts, checked with messages that say what to write instead.

use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkUrl {
    pub tls: bool,
    pub host: Host,
    pub port: u16,
    /// Starts with `/`; holds the query too, if any.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// Lower case, without a trailing dot.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

impl SinkUrl {
    /// `default_path` replaces an empty path or a bare `/`.
    pub fn parse(s: &str, default_path: &str) -> Result<Self, String> {
        let s = s.trim();
        let (tls, rest) = if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("`{s}` must start with http:// or https://"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!(
                "`{s}`: credentials do not go in the URL (they would show in `ps` and in logs); use \
                 --loki-username with --loki-password-file, or --loki-bearer-token-file"
            ));
        }
        if path.contains('#') {
            return Err(format!("`{s}`: a URL fragment (`#…`) means nothing to a server; remove it"));
        }
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("`{s}`: the path has spaces or control characters; percent-encode them"));
        }
        let (host_part, port) = split_port(authority).map_err(|e| format!("`{s}`: {e}"))?;
        let host = parse_host(host_part).map_err(|e| format!("`{s}`: {e}"))?;
        let port = port.unwrap_or(if tls { 443 } else { 80 });
        let path = match path {
            "" | "/" => default_path.to_owned(),
            p if p.starts_with('?') => format!("{default_path}{p}"),
            p => p.to_owned(),
        };
        Ok(SinkUrl { tls, host, port, path })
    }

    /// The `Host` header's value (the port only when not the scheme's).
    pub fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.to_string()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for SinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
    }
}

fn split_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').ok_or("an IPv6 address needs its closing `]`")?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected `{after}` after the IPv6 address")),
        };
        (&authority[..end + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("`{p}` is not a port number (1 to 65535)"))?,
        ),
    };
    Ok((host, port))
}

fn parse_host(h: &str) -> Result<Host, String> {
    if h.is_empty() {
        return Err("the host is missing".into());
    }
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|a| Host::Ip(IpAddr::V6(a)))
            .map_err(|_| format!("`{inner}` is not an IPv6 address"));
    }
    if let Ok(ip) = h.parse::<std::net::Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    let name = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("`{h}` is not a host name, an IPv4 address or a bracketed IPv6 address"));
    }
    Ok(Host::Name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/loki/api/v1/push";

    #[test]
    fn defaults_fill_port_and_path() {
        let u = SinkUrl::parse("http://loki", P).unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (false, 80, P));
        assert_eq!(u.host, Host::Name("loki".into()));
        assert_eq!(u.host_header(), "loki");
        let u = SinkUrl::parse("https://Loki.Example.com./", P).unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (true, 443, P));
        assert_eq!(u.host, Host::Name("loki.example.com".into()));
        let u = SinkUrl::parse("http://127.0.0.1:3100?tenant=x", P).unwrap();
        assert_eq!(u.path, format!("{P}?tenant=x"));
        assert_eq!(u.host_header(), "127.0.0.1:3100");
    }

    #[test]
    fn ipv6_and_explicit_paths() {
        let u = SinkUrl::parse("http://[::1]:3100/api/prom/push", P).unwrap();
        assert_eq!(u.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(u.port, 3100);
        assert_eq!(u.path, "/api/prom/push");
        assert_eq!(u.host_header(), "[::1]:3100");
        assert_eq!(SinkUrl::parse("https://[::1]", P).unwrap().port, 443);
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        for (bad, says) in [
            ("loki:3100", "http:// or https://"),
            ("ftp://loki", "http:// or https://"),
            ("http://user:pw@loki", "credentials"),
            ("http://loki:0", "port number"),
            ("http://loki:99999", "port number"),
            ("http://:3100", "host is missing"),
            ("http://[::1", "closing"),
            ("http://lo ki", "not a host name"),
            ("http://loki/a b", "spaces"),
            ("http://loki/#x", "fragment"),
            ("http://-loki", "not a host name"),
        ] {
            let e = SinkUrl::parse(bad, P).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
